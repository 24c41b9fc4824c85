//! Readiness, liveness and startup probes, run as the kubelet runs them: TCP and HTTP from the
//! node agent (whose namespace routes to every pod IP), exec in the container's namespaces.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// While a readiness or startup probe has never succeeded it runs at least every second
/// (the kubelet waits `periodSeconds`, 10 s by default): tests should not wait for that.
const EAGER_PERIOD: Duration = Duration::from_secs(1);

/// What a probe does.
#[derive(Debug, Clone)]
pub(crate) enum Check {
    Tcp(SocketAddr),
    Http {
        addr: SocketAddr,
        path: String,
        host: String,
        headers: Vec<(String, String)>,
        /// HTTPS: only the TCP connection is checked (no TLS client here).
        tls: bool,
    },
    Exec(Vec<String>),
    Unsupported(String),
}

/// A probe of one container and its consecutive results.
#[derive(Debug)]
pub(crate) struct ProbeState {
    pub(crate) check: Check,
    period: Duration,
    pub(crate) timeout: Duration,
    success_threshold: i32,
    failure_threshold: i32,
    successes: i32,
    failures: i32,
    next: Instant,
    eager: bool,
    /// The probe's verdict: readiness and startup start failing, liveness passing.
    pub(crate) passing: bool,
    ever_passed: bool,
}

impl ProbeState {
    /// `kind` is "readiness", "liveness" or "startup".
    pub(crate) fn new(kind: &str, probe: &Probe, container: &Container, ip: IpAddr) -> Self {
        let seconds =
            |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
        Self {
            check: check(probe, container, ip),
            period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: probe.success_threshold.unwrap_or(1).max(1),
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1),
            successes: 0,
            failures: 0,
            next: Instant::now() + seconds(probe.initial_delay_seconds, 0),
            eager: kind != "liveness",
            passing: kind == "liveness",
            ever_passed: false,
        }
    }

    pub(crate) fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Records one result and schedules the next run.
    pub(crate) fn record(&mut self, ok: bool, now: Instant) {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= self.success_threshold {
                self.passing = true;
                self.ever_passed = true;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= self.failure_threshold {
                self.passing = false;
            }
        }
        let period = if self.eager && !self.ever_passed {
            self.period.min(EAGER_PERIOD)
        } else {
            self.period
        };
        self.next = now + period;
    }
}

fn check(probe: &Probe, container: &Container, ip: IpAddr) -> Check {
    let port = |port: &IntOrString| -> Result<u16, String> {
        match port {
            IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("bad port {p}")),
            IntOrString::String(name) => name.parse().or_else(|_| {
                container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok())
                    .ok_or_else(|| format!("no container port named {name:?}"))
            }),
        }
    };
    let resolved = || -> Result<Check, String> {
        if let Some(tcp) = &probe.tcp_socket {
            let host = tcp
                .host
                .as_deref()
                .and_then(|h| h.parse().ok())
                .unwrap_or(ip);
            return Ok(Check::Tcp(SocketAddr::new(host, port(&tcp.port)?)));
        }
        if let Some(http) = &probe.http_get {
            let host = http
                .host
                .as_deref()
                .and_then(|h| h.parse().ok())
                .unwrap_or(ip);
            let addr = SocketAddr::new(host, port(&http.port)?);
            let headers: Vec<(String, String)> = http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            let host_header = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("host"))
                .map_or_else(|| addr.to_string(), |(_, v)| v.clone());
            return Ok(Check::Http {
                addr,
                path: http.path.clone().unwrap_or_else(|| "/".to_owned()),
                host: host_header,
                headers: headers
                    .into_iter()
                    .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
                    .collect(),
                tls: http.scheme.as_deref() == Some("HTTPS"),
            });
        }
        if let Some(exec) = &probe.exec {
            return Ok(Check::Exec(exec.command.clone().unwrap_or_default()));
        }
        Err("only tcpSocket, httpGet and exec probes are emulated by the node agent".to_owned())
    };
    resolved().unwrap_or_else(Check::Unsupported)
}

/// Runs a TCP or HTTP check (exec checks are run by the caller); `true` on success.
pub(crate) async fn run_network(check: &Check, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, async {
        match check {
            Check::Tcp(addr) => TcpStream::connect(addr).await.is_ok(),
            Check::Http {
                addr, tls: true, ..
            } => TcpStream::connect(addr).await.is_ok(),
            Check::Http {
                addr,
                path,
                host,
                headers,
                tls: false,
            } => http_get(*addr, path, host, headers)
                .await
                .is_some_and(|code| (200..400).contains(&code)),
            Check::Exec(_) | Check::Unsupported(_) => false,
        }
    })
    .await
    .unwrap_or(false)
}

/// The status code of `GET path`.
async fn http_get(
    addr: SocketAddr,
    path: &str,
    host: &str,
    headers: &[(String, String)],
) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kube-probe/{}\r\nAccept: */*\r\nConnection: close\r\n",
        crate::kubernetes_version().trim_start_matches('v')
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    while !response.windows(2).any(|w| w == b"\r\n") && response.len() < 8192 {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&response);
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(json: serde_json::Value) -> (Probe, Container) {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{ "name": "http", "containerPort": 3000 }],
        }))
        .unwrap();
        (serde_json::from_value(json).unwrap(), container)
    }

    #[test]
    fn named_ports_and_thresholds() {
        let ip: IpAddr = "10.244.0.2".parse().unwrap();
        let (p, c) = probe(serde_json::json!({
            "httpGet": { "path": "/healthz", "port": "http" }, "failureThreshold": 2,
        }));
        let mut state = ProbeState::new("readiness", &p, &c, ip);
        assert!(matches!(&state.check, Check::Http { addr, path, .. }
            if addr.port() == 3000 && path == "/healthz"));
        assert!(!state.passing, "readiness starts failing");
        let now = Instant::now();
        state.record(true, now);
        assert!(state.passing);
        state.record(false, now);
        assert!(state.passing, "one failure is below the threshold");
        state.record(false, now);
        assert!(!state.passing);

        let (p, c) = probe(serde_json::json!({ "tcpSocket": { "port": "nope" } }));
        assert!(matches!(
            ProbeState::new("liveness", &p, &c, ip).check,
            Check::Unsupported(_)
        ));
        let (p, c) = probe(serde_json::json!({ "grpc": { "port": 1 } }));
        let state = ProbeState::new("liveness", &p, &c, ip);
        assert!(state.passing, "liveness starts passing");
    }

    #[tokio::test]
    async fn http_probe_reads_the_status_code() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for code in [200, 503] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {code} X\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let check = |path: &str| Check::Http {
            addr,
            path: path.into(),
            host: "h".into(),
            headers: vec![],
            tls: false,
        };
        assert!(run_network(&check("/"), Duration::from_secs(2)).await);
        assert!(!run_network(&check("/"), Duration::from_secs(2)).await);
    }
}
