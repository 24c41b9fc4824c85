//! Runs [wrk](https://github.com/wg/wrk) (Debian's package) in a namespace and reads its
//! results from a small Lua `done()` hook that prints one JSON line, so nothing depends on the
//! layout of wrk's human-readable report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use blixt_lab::NetNs;
use serde::Deserialize;

/// Marker in front of the JSON line the Lua hook prints.
const MARK: &str = "BLIXT-BENCH-WRK ";

/// wrk's `done()` hook: requests, duration, errors and latency percentiles (all times in µs).
const SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BLIXT-BENCH-WRK {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"#;

/// One wrk run's settings.
#[derive(Debug, Clone)]
pub struct WrkOptions {
    /// Client threads (`-t`).
    pub threads: u32,
    /// Connections kept open (`-c`).
    pub connections: u32,
    /// How long (`-d`, whole seconds, at least 1).
    pub duration: Duration,
    /// Send `Connection: close`: one request per connection.
    pub close: bool,
    /// Socket/request timeout (`--timeout`).
    pub timeout: Duration,
}

impl WrkOptions {
    /// 2 threads, 32 connections, for `duration`, keep-alive.
    pub fn new(duration: Duration) -> WrkOptions {
        WrkOptions {
            threads: 2,
            connections: 32,
            duration,
            close: false,
            timeout: Duration::from_secs(5),
        }
    }

    /// The same with `Connection: close`.
    pub fn closing(mut self) -> WrkOptions {
        self.close = true;
        self
    }
}

/// What one wrk run reports.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct WrkResult {
    /// Responses read (any status).
    pub requests: u64,
    /// Wall time of the run, µs.
    pub duration_us: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Socket errors by kind.
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    /// Responses that were not 2xx/3xx.
    pub status: u64,
    pub timeout: u64,
    /// Latency percentiles of the requests, µs.
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl WrkResult {
    /// Responses per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    /// Errors of every kind.
    pub fn errors(&self) -> u64 {
        self.connect + self.read + self.write + self.status + self.timeout
    }

    /// `connect 0, read 0, ...`, for messages.
    pub fn error_summary(&self) -> String {
        format!(
            "connect {}, read {}, write {}, status {}, timeout {}",
            self.connect, self.read, self.write, self.status, self.timeout
        )
    }
}

/// The Lua hook written once to a temporary file, removed on drop.
#[derive(Debug)]
pub struct Wrk {
    script: PathBuf,
}

impl Wrk {
    /// Checks that wrk is installed and writes the hook.
    pub fn new() -> Result<Wrk> {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("wrk").is_file()))
            .unwrap_or(false);
        if !found {
            bail!("wrk is not installed: run `make deps` (Debian package wrk)");
        }
        let script =
            std::env::temp_dir().join(format!("blixt-bench-wrk-{}.lua", std::process::id()));
        std::fs::write(&script, SCRIPT).with_context(|| format!("writing {}", script.display()))?;
        Ok(Wrk { script })
    }

    /// Runs wrk in `ns` against `http://target/`.
    pub fn run(&self, ns: &NetNs, target: SocketAddr, o: &WrkOptions) -> Result<WrkResult> {
        let secs = o.duration.as_secs().max(1).to_string();
        let timeout = format!("{}s", o.timeout.as_secs().max(1));
        let url = format!("http://{target}/");
        let mut args: Vec<String> = vec![
            "wrk".into(),
            "-t".into(),
            o.threads.to_string(),
            "-c".into(),
            o.connections.to_string(),
            "-d".into(),
            format!("{secs}s"),
            "--timeout".into(),
            timeout,
            "-s".into(),
            self.script.display().to_string(),
        ];
        if o.close {
            args.extend(["-H".into(), "Connection: close".into()]);
        }
        args.push(url.clone());
        let out = ns.exec_output(&args)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "wrk against {url} in netns {} failed ({}): {}{}",
                ns.name(),
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        parse(&stdout).with_context(|| format!("wrk against {url}: output {stdout}"))
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.script);
    }
}

/// The hook's JSON line out of wrk's whole stdout.
pub fn parse(stdout: &str) -> Result<WrkResult> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(MARK))
        .context("no result line from the Lua hook")?;
    serde_json::from_str(line).context("parsing the hook's JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_hook_line() {
        let out = "Running 1s test @ http://10.99.100.1:80/\n  2 threads and 32 connections\n\
                   BLIXT-BENCH-WRK {\"requests\":1000,\"duration_us\":2000000,\"bytes\":5,\
                   \"connect\":0,\"read\":1,\"write\":0,\"status\":2,\"timeout\":0,\
                   \"p50_us\":100,\"p90_us\":200,\"p99_us\":300,\"max_us\":900,\
                   \"mean_us\":120.5}\n";
        let r = parse(out).unwrap();
        assert_eq!(r.requests, 1000);
        assert_eq!(r.rate(), 500.0);
        assert_eq!(r.errors(), 3);
        assert_eq!(r.p99_us, 300);
        assert!(parse("Running 1s test").is_err());
    }
}
