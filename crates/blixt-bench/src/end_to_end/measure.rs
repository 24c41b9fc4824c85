//! One round of suite 3 for one system: the measurements, and the checks that the traffic
//! really went through the system under test.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use blixt_lab::{udp_flows, UdpOptions};

use super::cpu::{CpuDelta, CpuTimes};
use super::lab::E2eLab;
use super::peers::{Evidence, Installed, System};
use super::tcp_counters::TcpCounters;
use super::wrk::{Wrk, WrkOptions, WrkResult};

/// Sizes of one round.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sizes {
    /// Rounds per system (each round measures every system once, in a rotating order).
    pub rounds: usize,
    /// wrk duration with `Connection: close`, s.
    pub short_s: u64,
    /// wrk duration with keep-alive, s.
    pub keepalive_s: u64,
    /// wrk connections and threads.
    pub connections: u32,
    pub threads: u32,
    /// One-stream bulk transfer, ms.
    pub bulk_ms: u64,
    /// UDP flows in flight and datagrams each sends (one after the other).
    pub udp_flows: usize,
    pub udp_datagrams_per_flow: u32,
    /// Backends.
    pub backends: usize,
}

impl Sizes {
    pub fn for_mode(mode: crate::Mode) -> Sizes {
        let base = Sizes {
            rounds: 3,
            short_s: 2,
            keepalive_s: 1,
            connections: 32,
            threads: 2,
            bulk_ms: 1000,
            udp_flows: 32,
            udp_datagrams_per_flow: 400,
            backends: 3,
        };
        match mode {
            crate::Mode::Full => Sizes {
                rounds: 5,
                short_s: 5,
                keepalive_s: 4,
                bulk_ms: 3000,
                udp_datagrams_per_flow: 1500,
                ..base
            },
            crate::Mode::Quick => base,
            crate::Mode::Tiny => Sizes {
                rounds: 1,
                short_s: 1,
                keepalive_s: 1,
                bulk_ms: 200,
                udp_datagrams_per_flow: 5,
                ..base
            },
        }
    }
}

/// What one round measured for one system.
#[derive(Debug, Clone)]
pub struct Round {
    pub system: System,
    pub short: WrkResult,
    /// CPU of the whole machine during the short-connection run.
    pub short_cpu: CpuDelta,
    /// What the TCP counters of the client, the lb and the backends (summed) did during the
    /// short-connection run.
    pub short_tcp: BTreeMap<String, TcpCounters>,
    pub keepalive: WrkResult,
    /// Connections the keep-alive run opened.
    pub keepalive_conns: u32,
    /// Packets the lb's kernel forwarded during the short-connection run.
    pub short_kernel_forwarded: u64,
    /// One TCP stream through the lb, Gbit/s of payload at the sink.
    pub bulk_gbit: f64,
    /// Answered UDP request/response pairs per second (`None`: the system has no UDP).
    pub udp_rate: Option<f64>,
    /// UDP flows that did not complete.
    pub udp_failed: usize,
    /// The mechanism's own counters over the round.
    pub evidence: Evidence,
    /// HTTP requests per backend over the round.
    pub backend_requests: Vec<u64>,
}

impl Round {
    /// Short connections per second.
    pub fn conn_rate(&self) -> f64 {
        self.short.rate()
    }

    /// How much TCP counter `key` of `node` (`client`, `lb`, `backends`) moved during the
    /// short-connection run.
    pub fn short_tcp(&self, node: &str, key: &str) -> u64 {
        self.short_tcp.get(node).map_or(0, |c| c.get(key))
    }

    /// The short run's telling TCP counters, one line: SYNs the client sent again, connection
    /// attempts that failed, SYNs refused by PAWS (a TIME_WAIT of the same four-tuple with a
    /// newer timestamp) and TIME_WAIT sockets dropped for lack of room, where they happened.
    pub fn short_tcp_summary(&self) -> String {
        let get = |node: &str, key: &str| self.short_tcp(node, key);
        format!(
            "client SYN retransmits {}, failed attempts {}; PAWS-refused SYNs: backends {}, lb {}; \
             TIME_WAIT overflow: backends {}, lb {}",
            get("client", "TcpExt:TCPSynRetrans"),
            get("client", "Tcp:AttemptFails"),
            get("backends", "TcpExt:PAWSTimewait") + get("backends", "TcpExt:PAWSEstab"),
            get("lb", "TcpExt:PAWSTimewait") + get("lb", "TcpExt:PAWSEstab"),
            get("backends", "TcpExt:TCPTimeWaitOverflow"),
            get("lb", "TcpExt:TCPTimeWaitOverflow"),
        )
    }

    /// CPU seconds per 10k short connections.
    pub fn cpu_per_10k(&self, part: impl Fn(&CpuDelta) -> f64) -> f64 {
        part(&self.short_cpu) / self.short.requests.max(1) as f64 * 1e4
    }

    /// Connections the lb's own counters saw for HTTP over those the client completed.
    pub fn counted_share(&self, http_backends: &[String]) -> f64 {
        let counted: u64 = http_backends
            .iter()
            .map(|b| self.evidence.per_backend.get(b).copied().unwrap_or(0))
            .sum();
        counted as f64 / (self.short.requests + u64::from(self.keepalive_conns)).max(1) as f64
    }

    /// The smallest backend's share of the HTTP requests.
    pub fn min_backend_share(&self) -> f64 {
        let total: u64 = self.backend_requests.iter().sum();
        let min = self.backend_requests.iter().copied().min().unwrap_or(0);
        min as f64 / total.max(1) as f64
    }

    /// Packets the lb's kernel forwarded per short connection.
    pub fn kernel_forwarded_per_conn(&self) -> f64 {
        self.short_kernel_forwarded as f64 / self.short.requests.max(1) as f64
    }
}

/// Runs every measurement against the installed system and checks the path.
pub fn round(lab: &E2eLab, sys: &mut Installed, wrk: &Wrk, s: &Sizes) -> Result<Round> {
    let system = sys.system();
    let ev0 = sys.evidence(&lab.lab)?;
    let http0 = lab.http_stats();
    let client = &lab.lab.client.ns;

    let mut o = WrkOptions::new(Duration::from_secs(s.short_s)).closing();
    o.connections = s.connections;
    o.threads = s.threads;
    let tcp0 = lab_tcp_counters(lab)?;
    let c0 = CpuTimes::now()?;
    let short = wrk.run(client, lab.http_target(), &o)?;
    let short_cpu = CpuTimes::now()?.since(&c0);
    let short_tcp = lab_tcp_counters(lab)?
        .into_iter()
        .zip(tcp0)
        .map(|((node, after), (_, before))| (node, after.since(&before)))
        .collect();
    let short_kernel_forwarded = sys.evidence(&lab.lab)?.since(&ev0).kernel_forwarded;

    let mut o = WrkOptions::new(Duration::from_secs(s.keepalive_s));
    o.connections = s.connections;
    o.threads = s.threads;
    let keepalive = wrk.run(client, lab.http_target(), &o)?;

    let bulk_gbit = bulk(lab, Duration::from_millis(s.bulk_ms))
        .with_context(|| format!("bulk transfer through {}", system.id()))?;

    let (udp_rate, udp_failed) = if system.supports_udp() {
        let (rate, failed) = udp(lab, s)?;
        (Some(rate), failed)
    } else {
        (None, 0)
    };

    let evidence = sys.evidence(&lab.lab)?.since(&ev0);
    let http = lab.http_stats();
    let deltas: Vec<_> = http.iter().zip(&http0).map(|(a, b)| a.since(b)).collect();
    let r = Round {
        system,
        short,
        short_cpu,
        short_tcp,
        keepalive,
        keepalive_conns: s.connections,
        short_kernel_forwarded,
        bulk_gbit,
        udp_rate,
        udp_failed,
        evidence,
        backend_requests: deltas.iter().map(|d| d.requests).collect(),
    };
    check(lab, &r, &deltas)
        .with_context(|| format!("checking that {} carried the traffic", system.id()))?;
    Ok(r)
}

/// TCP counters of the client, the lb and the backends (summed, as `backends`), in that order.
fn lab_tcp_counters(lab: &E2eLab) -> Result<Vec<(String, TcpCounters)>> {
    let mut backends = TcpCounters::default();
    for b in &lab.lab.backends {
        backends.add(&TcpCounters::read(&b.ns)?);
    }
    Ok(vec![
        ("client".into(), TcpCounters::read(&lab.lab.client.ns)?),
        ("lb".into(), TcpCounters::read(&lab.lab.lb)?),
        ("backends".into(), backends),
    ])
}

/// The checks: every backend served, nobody saw the client's own address (the lb NATed),
/// the lb's counters saw the connections, and the kernel forwarded them exactly when the
/// system is a netfilter one.
fn check(lab: &E2eLab, r: &Round, deltas: &[super::backend_http::HttpStats]) -> Result<()> {
    ensure!(
        r.short.requests > 0 && r.keepalive.requests > 0,
        "wrk completed no request (short {}, keep-alive {}); errors: {} / {}",
        r.short.requests,
        r.keepalive.requests,
        r.short.error_summary(),
        r.keepalive.error_summary()
    );
    for (i, d) in deltas.iter().enumerate() {
        ensure!(d.requests > 0, "backend be{i} served no HTTP request");
        let client: IpAddr = lab.client_addr().into();
        ensure!(
            !d.peers.contains_key(&client),
            "backend be{i} saw the client's own address {client}: the lb did not NAT"
        );
    }
    let http = lab.http_backends();
    for b in &http {
        let n = r.evidence.per_backend.get(b).copied().unwrap_or(0);
        ensure!(
            n > 0,
            "{}'s own counters show nothing for backend {b} ({}): {:?}",
            r.system.id(),
            r.system.counter_meaning(),
            r.evidence.per_backend
        );
    }
    let share = r.counted_share(&http);
    ensure!(
        share > 0.9,
        "{}'s counters saw {:.0}% of the connections the client completed ({:?})",
        r.system.id(),
        share * 100.0,
        r.evidence.per_backend
    );
    let conns = r.short.requests;
    match r.system {
        System::Iptables | System::Nftables => ensure!(
            r.short_kernel_forwarded >= conns,
            "the lb's kernel forwarded only {} packets for {conns} connections",
            r.short_kernel_forwarded
        ),
        System::Blixt | System::BlixtTc | System::Haproxy => ensure!(
            r.short_kernel_forwarded * 10 < conns,
            "the lb's kernel forwarded {} packets for {conns} connections: traffic bypassed {}",
            r.short_kernel_forwarded,
            r.system.id()
        ),
    }
    if r.system == System::Haproxy {
        ensure!(
            r.evidence.kernel_delivered >= conns,
            "the lb's kernel delivered only {} packets locally for {conns} connections through \
             HAProxy",
            r.evidence.kernel_delivered
        );
    }
    if r.bulk_gbit <= 0.0 {
        bail!("the bulk stream moved no byte");
    }
    Ok(())
}

/// One TCP stream from the client through the lb to a backend's sink for `dur`: payload
/// Gbit/s as counted by the sinks while the client was writing.
pub fn bulk(lab: &E2eLab, dur: Duration) -> Result<f64> {
    let target = lab.sink_target();
    let sink_bytes = || -> u64 { lab.http_stats().iter().map(|s| s.sink_bytes).sum() };
    lab.lab.client.ns.run_in(|| -> Result<f64> {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .with_context(|| format!("connecting to {target}"))?;
        let buf = vec![0x5au8; 256 * 1024];
        // the first buffer opens the window; counting starts after it
        s.write_all(&buf).context("writing")?;
        let b0 = sink_bytes();
        let t0 = Instant::now();
        let deadline = t0 + dur;
        while Instant::now() < deadline {
            s.write_all(&buf).context("writing")?;
        }
        let b1 = sink_bytes();
        let secs = t0.elapsed().as_secs_f64();
        let _ = s.shutdown(std::net::Shutdown::Both);
        Ok((b1 - b0) as f64 * 8.0 / secs / 1e9)
    })
}

/// `udp_flows` flows of ping-pong datagrams to the UDP echo service: answered pairs per
/// second, and the flows that failed.
pub fn udp(lab: &E2eLab, s: &Sizes) -> Result<(f64, usize)> {
    let opts = UdpOptions {
        concurrency: s.udp_flows,
        timeout: Duration::from_millis(500),
        retries: 3,
        datagrams_per_flow: s.udp_datagrams_per_flow,
    };
    let target = lab.udp_target();
    let report = lab
        .lab
        .client
        .ns
        .run_in(|| udp_flows(target, s.udp_flows, &opts))?;
    ensure!(
        report.ok > 0,
        "no UDP flow was answered: {}",
        report.summary()
    );
    let answered = report.ok as f64 * f64::from(s.udp_datagrams_per_flow);
    let secs = (report.elapsed_ms.max(1)) as f64 / 1e3;
    Ok((answered / secs, report.failed))
}

/// Per-system medians over rounds of `f`.
pub fn by_system(
    rounds: &[Round],
    f: impl Fn(&Round) -> Option<f64>,
) -> BTreeMap<System, Vec<f64>> {
    let mut m: BTreeMap<System, Vec<f64>> = BTreeMap::new();
    for r in rounds {
        if let Some(v) = f(r) {
            m.entry(r.system).or_default().push(v);
        }
    }
    m
}
