//! The two systems on the lab's lb node, one process each, started for a round and stopped
//! after it:
//!
//! - **Blixt**: `blixt-bench-tls-proxy` (Blixt's proxy served as `blixt run` serves a
//!   TLSRoute: sk_lookup steering with a managed local route, no VIP configured by hand) on
//!   [`BLIXT_VIP_N`].
//! - **HAProxy** (Debian's 2.6) in TCP mode with SNI routing, configured the way its users run
//!   SNI passthrough: `tcp-request inspect-delay` until `req_ssl_hello_type 1`, then
//!   `use_backend ... if { req_ssl_sni -i NAME }`; `nbthread 2` for the 2 cores. HAProxy binds
//!   the VIP itself, so its VIP ([`HAPROXY_VIP_N`]) is a local address on the lb's loopback.
//!
//! The two use different VIPs of the lab's VIP block (both routed by the client via the lb),
//! so that Blixt's managed local route and HAProxy's address never meet.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use blixt_core::snapshot::{Backend as SnapBackend, BackendAddr, BackendState};
use blixt_core::tls::{SniRoute, TlsFrontend};
use blixt_lab::{Lab, LabProcess};

use super::servers::Backend;

/// The TLS port of both systems.
pub const TLS_PORT: u16 = 443;
/// Blixt serves `lab.vip4(BLIXT_VIP_N)`.
pub const BLIXT_VIP_N: u8 = 1;
/// HAProxy serves `lab.vip4(HAPROXY_VIP_N)`.
pub const HAPROXY_VIP_N: u8 = 2;

/// How long a system may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Which system runs on the lb node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Blixt,
    Haproxy,
    /// No proxy: each client connects straight to the backend its server name belongs to,
    /// through the lb node's kernel forwarding. The ceiling of any proxy in this lab.
    Direct,
}

impl System {
    pub const ALL: [System; 3] = [System::Blixt, System::Haproxy, System::Direct];

    /// Its key in results.json.
    pub fn key(self) -> &'static str {
        match self {
            System::Blixt => crate::results::BLIXT,
            System::Haproxy => "haproxy",
            System::Direct => "direct",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            System::Blixt => "Blixt",
            System::Haproxy => "HAProxy",
            System::Direct => "direct (no proxy)",
        }
    }

    /// Where clients connect for the server name of each of `backends`: the system's
    /// VIP:port, or (direct) the backend itself.
    pub fn targets(self, lab: &Lab, backends: &[Backend]) -> Vec<SocketAddr> {
        let vip = |n: u8| SocketAddr::new(lab.vip4(n).into(), TLS_PORT);
        backends
            .iter()
            .map(|b| match self {
                System::Blixt => vip(BLIXT_VIP_N),
                System::Haproxy => vip(HAPROXY_VIP_N),
                System::Direct => b.addr,
            })
            .collect()
    }
}

/// Whether HAProxy is installed.
pub fn haproxy_available() -> bool {
    Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The proxy binary: next to the running executable (or one directory up, for test
/// binaries in `deps/`), or `$BLIXT_BENCH_TLS_PROXY`.
pub fn proxy_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BLIXT_BENCH_TLS_PROXY") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join("blixt-bench-tls-proxy");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    bail!(
        "blixt-bench-tls-proxy not found near {} (build it with `cargo build -p blixt-bench`, \
         or set BLIXT_BENCH_TLS_PROXY)",
        exe.display()
    )
}

/// The TLS frontend `blixt run` would get from tls.yaml-like routes: one exact hostname per
/// backend, one backend each.
pub fn frontends(vip: SocketAddr, backends: &[Backend]) -> Vec<TlsFrontend> {
    vec![TlsFrontend {
        name: "default/bench-tls/tls".into(),
        vip: vip.ip(),
        port: vip.port(),
        routes: backends
            .iter()
            .map(|b| SniRoute {
                hostname: b.sni.clone(),
                listener: "tls".into(),
                route: Some(format!("default/tls-{}", b.name)),
                backends: vec![SnapBackend {
                    addr: BackendAddr {
                        addr: b.addr.ip(),
                        port: b.addr.port(),
                    },
                    weight: 1,
                    state: BackendState::Active,
                }],
                reject_weight: 0,
            })
            .collect(),
    }]
}

/// HAProxy's configuration for SNI passthrough of `backends` on `vip`.
pub fn haproxy_config(vip: SocketAddr, backends: &[Backend]) -> String {
    let mut c = format!(
        "global\n\
         \x20   nbthread 2\n\
         \x20   maxconn 8000\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 1h\n\
         \x20   timeout server 1h\n\
         frontend tls_passthrough\n\
         \x20   bind {vip}\n\
         \x20   tcp-request inspect-delay 10s\n\
         \x20   tcp-request content accept if {{ req_ssl_hello_type 1 }}\n"
    );
    for b in backends {
        c.push_str(&format!(
            "    use_backend {} if {{ req_ssl_sni -i {} }}\n",
            b.name, b.sni
        ));
    }
    for b in backends {
        c.push_str(&format!(
            "backend {}\n    server {} {}\n",
            b.name, b.name, b.addr
        ));
    }
    c
}

/// A running system.
#[derive(Debug)]
pub struct Running {
    pub system: System,
    process: LabProcess,
}

/// Counters Blixt's proxy printed when it stopped.
#[derive(Debug, Clone, Default)]
pub struct BlixtCounters {
    pub accepted: u64,
    pub forwarded: u64,
    pub rejects: u64,
    /// (backend address, connections)
    pub backends: Vec<(SocketAddr, u64)>,
}

/// Starts `system` on the lb node and waits until it serves (`None` for [`System::Direct`],
/// which has no process). `work` is a directory for HAProxy's configuration.
pub fn start(
    system: System,
    lab: &Lab,
    backends: &[Backend],
    work: &Path,
) -> Result<Option<Running>> {
    let Some(&vip) = system.targets(lab, backends).first() else {
        bail!("no backend to route to");
    };
    let mut process = match system {
        System::Direct => return Ok(None),
        System::Blixt => {
            let json = serde_json::to_string(&frontends(vip, backends))?;
            let mut cmd = Command::new(proxy_binary()?);
            cmd.arg(json);
            // netns only: the BPF loader keeps the host's /sys
            lab.lb.spawn_netns_only("blixt-bench-tls-proxy", cmd)?
        }
        System::Haproxy => {
            let cfg = work.join("haproxy.cfg");
            std::fs::write(&cfg, haproxy_config(vip, backends))
                .with_context(|| format!("writing {}", cfg.display()))?;
            let cfg = cfg.to_string_lossy().into_owned();
            lab.lb.spawn(&["haproxy", "-db", "-f", cfg.as_str()])?
        }
    };
    match system {
        System::Blixt => {
            process
                .wait_for_line(START_TIMEOUT, |l| l == "ready")
                .context("waiting for Blixt's proxy to report ready")?;
        }
        System::Haproxy | System::Direct => wait_listening(lab, vip, &mut process)?,
    }
    Ok(Some(Running { system, process }))
}

/// Polls until `vip` is listening in the lb namespace (`ss`), so no probe connection reaches
/// the system.
fn wait_listening(lab: &Lab, vip: SocketAddr, process: &mut LabProcess) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let want = vip.to_string();
    loop {
        let out = lab.lb.exec(&["ss", "-Hltn"])?;
        if out.lines().any(|l| l.split_whitespace().any(|f| f == want)) {
            return Ok(());
        }
        if let Some(status) = process.try_wait()? {
            bail!("{} exited during start: {status}", process.label());
        }
        if Instant::now() > deadline {
            bail!(
                "{} is not listening on {vip} after {START_TIMEOUT:?}",
                process.label()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// CPU seconds (user + system, all threads) the process has used so far.
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(self.pid())
    }

    /// Stops the system; Blixt's proxy hands back its counters.
    pub fn stop(mut self) -> Result<Option<BlixtCounters>> {
        let status = self.process.terminate(Duration::from_secs(5))?;
        if self.system == System::Haproxy {
            return Ok(None);
        }
        let label = self.process.label().to_string();
        let mut c = BlixtCounters::default();
        let mut ended = false;
        while let Ok(line) = self.process.next_line(Duration::from_millis(500)) {
            if line == "stats end" {
                ended = true;
                break;
            }
            parse_stats_line(&line, &mut c);
        }
        if !ended {
            bail!("{label} did not print its counters on SIGTERM (exit: {status})");
        }
        Ok(Some(c))
    }
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn parse_stats_line(line: &str, c: &mut BlixtCounters) {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("stats"), Some("listener"), Some(_)) => {
            c.accepted += field(line, "accepted");
            c.forwarded += field(line, "forwarded");
            c.rejects += field(line, "rejects");
        }
        (Some("stats"), Some("backend"), Some(addr)) => {
            if let Ok(a) = addr.parse() {
                c.backends.push((a, field(line, "connections")));
            }
        }
        _ => {}
    }
}

/// USER_HZ: the unit of /proc/<pid>/stat's times, 100 on every Linux ABI.
const USER_HZ: f64 = 100.0;

/// CPU seconds (utime + stime, every thread, dead threads included) of process `pid`.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    stat_seconds(&text, &path)
}

/// utime + stime of `text`, the contents of a process's or thread's `stat` file at `path`.
pub fn stat_seconds(text: &str, path: &Path) -> Result<f64> {
    let path = path.display();
    // fields after the command name, which is in parentheses and may hold spaces
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: no command name"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15
    let ticks = |i: usize| -> Result<f64> {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("{path}: field {i}"))
    };
    Ok((ticks(14)? + ticks(15)?) / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_lines_parse() {
        let mut c = BlixtCounters::default();
        parse_stats_line(
            "stats listener 10.99.100.1:443 accepted=12 forwarded=11 rejects=1",
            &mut c,
        );
        parse_stats_line(
            "stats backend 10.99.10.2:8443 connections=11 connect_errors=0",
            &mut c,
        );
        assert_eq!((c.accepted, c.forwarded, c.rejects), (12, 11, 1));
        assert_eq!(c.backends, vec![("10.99.10.2:8443".parse().unwrap(), 11)]);
    }

    #[test]
    fn own_cpu_time_reads() {
        let s = cpu_seconds(std::process::id()).unwrap();
        assert!(s >= 0.0);
    }

    #[test]
    fn haproxy_config_routes_every_name() {
        let be = |i: usize| Backend {
            name: format!("be{i}"),
            sni: super::super::servers::sni(i),
            addr: SocketAddr::new([10, 99, 10 + i as u8, 2].into(), 8443),
            cert: rustls::pki_types::CertificateDer::from(vec![]),
        };
        let c = haproxy_config("10.99.100.2:443".parse().unwrap(), &[be(0), be(1)]);
        assert!(c.contains("use_backend be1 if { req_ssl_sni -i b.example.com }"));
        assert!(c.contains("server be0 10.99.10.2:8443"));
        assert!(c.contains("bind 10.99.100.2:443"));
    }
}
