//! Suite 6, TLS passthrough (issue 6): Blixt's SNI-routing proxy against HAProxy's SNI
//! passthrough, in the same namespace lab, in the same run.
//!
//! - Lab: client, lb node and three backends ([`blixt_lab::Lab`]); each backend runs a rustls
//!   server with a certificate of its own for its own name (`a.example.com` → be0, ...; see
//!   [`servers`]).
//! - Systems on the lb node, one at a time, a fresh process per round ([`systems`]): Blixt's
//!   proxy served the way `blixt run` serves a TLSRoute (sk_lookup steering, no VIP configured
//!   by hand), and HAProxy 2.6 in TCP mode routing on `req_ssl_sni` with its VIP on the lb's
//!   loopback.
//! - Client: our own load generator ([`load`]): N concurrent loops of connect, full TLS 1.3
//!   handshake with SNI (no resumption), read the backend's one-line answer, close. Every
//!   connection is checked by the certificate received and the answer; a connection that
//!   reached the wrong backend fails the run.
//!
//! Rounds alternate the systems (Blixt first in even rounds, HAProxy first in odd ones), so
//! slow drifts of a shared machine hit both alike; each figure is the median over rounds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use blixt_lab::{Lab, LabSpec};

use crate::plot::{BarChart, Series, BLUE, GREY, ORANGE};
use crate::results::{Machine, Metric, Results, BLIXT};
use crate::stats::Summary;
use crate::suite::{GoalRow, PlotDir, Section, SuiteOutput};
use crate::Mode;

pub mod cpu;
pub mod load;
pub mod profile;
pub mod servers;
pub mod systems;

use systems::System;

/// Suite name in results.json.
pub const SUITE: &str = "6 TLS passthrough";

/// The goal: connections/s at least this multiple of HAProxy's...
pub const GOAL_RATIO: f64 = 1.2;

/// Backends (and server names) in the lab.
pub const BACKENDS: usize = 3;

/// Sizes of the suite.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sizes {
    /// Concurrent connections of the load generator, one measurement each.
    pub concurrency: Vec<usize>,
    /// Rounds per system and concurrency (systems alternate within a round).
    pub rounds: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

impl Sizes {
    pub fn for_mode(mode: Mode) -> Sizes {
        match mode {
            Mode::Full => Sizes {
                concurrency: vec![16, 64],
                rounds: 5,
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs(8),
            },
            Mode::Quick => Sizes {
                concurrency: vec![16, 64],
                rounds: 3,
                warmup: Duration::from_millis(500),
                duration: Duration::from_millis(2000),
            },
            Mode::Tiny => Sizes {
                concurrency: vec![4],
                rounds: 1,
                warmup: Duration::ZERO,
                duration: Duration::from_millis(400),
            },
        }
    }
}

/// One round of one system at one concurrency.
#[derive(Debug, Clone)]
pub struct Round {
    pub system: System,
    pub concurrency: usize,
    pub load: load::LoadResult,
    /// CPU seconds of the lb process per 10,000 verified connections (warm-up included).
    pub cpu_per_10k: f64,
    /// The whole machine's CPU over the round (warm-up included), split between the lab's
    /// parts, per verified connection, in microseconds (busy share: of all cores).
    pub cpu_us: cpu::Split,
    /// Blixt's own counters at the end of the round.
    pub counters: Option<systems::BlixtCounters>,
    /// Where the lb process's CPU went: (samples, share per [`profile`] category), for the
    /// profiled round (an extra round per system at the highest concurrency, when perf is
    /// installed).
    pub profile: Option<(u64, Vec<(&'static str, f64)>)>,
}

impl Round {
    /// The profiling round: only its profile is reported (measured rounds have none).
    pub fn profile_only(&self) -> bool {
        self.profile.is_some()
    }
}

/// Removes the suite's scratch directory on drop.
struct WorkDir(std::path::PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs every round; fails on a connection routed to the wrong backend, and (at tiny size,
/// where it proves the path) on any failed connection.
pub fn measure(mode: Mode, sizes: &Sizes) -> Result<(Vec<Round>, Vec<String>)> {
    let mut findings = Vec::new();
    let haproxy = systems::haproxy_available();
    if !haproxy {
        findings.push(
            "TLS passthrough: haproxy is not installed (`make deps` installs it): Blixt was \
             measured alone and the goal is undecided"
                .to_string(),
        );
    }
    let lab = Lab::build(LabSpec {
        backends: BACKENDS,
        prefix: "tlsb".into(),
        ..LabSpec::default()
    })
    .context("building the namespace lab")?;
    // Client ports: a long run opens hundreds of thousands of connections.
    for ns in [&lab.client.ns, &lab.lb] {
        ns.sysctl_set("net.ipv4.ip_local_port_range", "1024 65000")?;
        ns.sysctl_set("net.ipv4.tcp_tw_reuse", "1")?;
    }
    let haproxy_vip = SocketAddr::new(lab.vip4(systems::HAPROXY_VIP_N).into(), systems::TLS_PORT);
    lab.lb
        .ip(&[
            "addr",
            "add",
            &format!("{}/32", haproxy_vip.ip()),
            "dev",
            "lo",
        ])
        .context("HAProxy's VIP on the lb's loopback")?;
    let work =
        WorkDir(std::env::temp_dir().join(format!("blixt-bench-tls-{}", std::process::id())));
    std::fs::create_dir_all(&work.0).with_context(|| format!("creating {}", work.0.display()))?;

    let nodes: Vec<_> = (0..BACKENDS)
        .map(|i| (&lab.backend(i).ns, lab.backend(i).v4().into()))
        .collect();
    let servers = servers::start(&nodes)?;
    let backends = servers.backends.clone();

    let mut rounds = Vec::new();
    let top = sizes.concurrency.iter().copied().max().unwrap_or(0);
    let perf = mode != Mode::Tiny && crate::profile::available();
    for r in 0..sizes.rounds {
        for &concurrency in &sizes.concurrency {
            let mut order: Vec<System> = System::ALL
                .into_iter()
                .filter(|s| *s != System::Haproxy || haproxy)
                .collect();
            let n = order.len();
            order.rotate_left(r % n);
            for system in order {
                eprintln!(
                    "blixt-bench: tls: round {}/{}, {} concurrent, {} ...",
                    r + 1,
                    sizes.rounds,
                    concurrency,
                    system.label()
                );
                let round = one_round(&lab, system, &backends, &work.0, concurrency, sizes, false)?;
                check_round(mode, &round, &backends, &mut findings)?;
                rounds.push(round);
            }
        }
    }
    // Profiling costs the profiled process CPU (sampling, unwinding) and perf's own CPU
    // competes for the cores, so the profile comes from an extra round per system whose
    // figures are kept out of every median.
    if perf {
        for system in [System::Blixt, System::Haproxy] {
            if system == System::Haproxy && !haproxy {
                continue;
            }
            eprintln!(
                "blixt-bench: tls: profiling round, {top} concurrent, {} ...",
                system.label()
            );
            let round = one_round(&lab, system, &backends, &work.0, top, sizes, true)?;
            check_round(mode, &round, &backends, &mut findings)?;
            rounds.push(round);
        }
    }
    drop(servers);
    Ok((rounds, findings))
}

fn one_round(
    lab: &Lab,
    system: System,
    backends: &[servers::Backend],
    work: &std::path::Path,
    concurrency: usize,
    sizes: &Sizes,
    profiled: bool,
) -> Result<Round> {
    let running = systems::start(system, lab, backends, work)?;
    let recorder = match &running {
        Some(r) if profiled => Some(profile::Recorder::start(r.pid())?),
        _ => None,
    };
    let targets = system.targets(lab, backends);
    let spec = load::LoadSpec {
        concurrency,
        warmup: sizes.warmup,
        duration: sizes.duration,
    };
    let lb_pid = running.as_ref().map(systems::Running::pid);
    let cpu0 = running.as_ref().map(|r| r.cpu_seconds()).transpose()?;
    let machine0 = cpu::Snapshot::take(lb_pid)?;
    let t0 = std::time::Instant::now();
    let result = lab
        .client
        .ns
        .run_in(|| load::run(&targets, backends, spec))
        .with_context(|| format!("load against {} on {targets:?}", system.label()))?;
    let wall = t0.elapsed().as_secs_f64();
    let machine1 = cpu::Snapshot::take(lb_pid)?;
    let cpu = match (&running, cpu0) {
        (Some(r), Some(c0)) => r.cpu_seconds()? - c0,
        _ => f64::NAN,
    };
    let counters = running.map(systems::Running::stop).transpose()?.flatten();
    let profile = recorder.map(profile::Recorder::finish).transpose()?;
    let verified: u64 = result.per_backend.iter().sum();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let split = machine0.until(&machine1, wall, cpus);
    Ok(Round {
        system,
        concurrency,
        cpu_us: split.per_connection_us(verified),
        cpu_per_10k: if verified > 0 {
            cpu / verified as f64 * 10_000.0
        } else {
            f64::NAN
        },
        load: result,
        counters,
        profile,
    })
}

fn check_round(
    mode: Mode,
    round: &Round,
    backends: &[servers::Backend],
    findings: &mut Vec<String>,
) -> Result<()> {
    let l = &round.load;
    let who = format!(
        "{} at {} concurrent",
        round.system.label(),
        round.concurrency
    );
    if l.wrong_backend > 0 {
        bail!(
            "{who}: {} connection(s) reached a backend other than the one their server name \
             routes to",
            l.wrong_backend
        );
    }
    if l.completed == 0 {
        bail!(
            "{who}: no connection completed in the measurement window ({} errors; first: {:?})",
            l.errors,
            l.error_samples
        );
    }
    if let Some(c) = &round.counters {
        // Blixt's own counters must account for every verified connection of the client
        let verified: u64 = l.per_backend.iter().sum();
        if c.forwarded < verified {
            bail!(
                "{who}: the client verified {verified} connections but Blixt's proxy counted \
                 only {} forwarded",
                c.forwarded
            );
        }
        for b in backends {
            let n = c
                .backends
                .iter()
                .find(|(a, _)| *a == b.addr)
                .map_or(0, |(_, n)| *n);
            if n == 0 {
                bail!(
                    "{who}: Blixt's proxy counted no connection to {} ({})",
                    b.name,
                    b.addr
                );
            }
        }
    }
    if l.per_backend.contains(&0) {
        bail!("{who}: a backend got no connection: {:?}", l.per_backend);
    }
    if l.errors > 0 {
        if mode == Mode::Tiny {
            bail!(
                "{who}: {} failed connection(s): {:?}",
                l.errors,
                l.error_samples
            );
        }
        findings.push(format!(
            "TLS passthrough, {who}: {} of {} connections failed (first: {})",
            l.errors,
            l.errors + l.per_backend.iter().sum::<u64>(),
            l.error_samples.first().map_or("", String::as_str)
        ));
    }
    Ok(())
}

/// Measures suite 6.
pub fn run(mode: Mode, machine: &Machine) -> Result<SuiteOutput> {
    let sizes = Sizes::for_mode(mode);
    let (rounds, findings) = measure(mode, &sizes)?;
    let mut out = SuiteOutput {
        metrics: metrics(&rounds, &sizes, machine),
        findings,
        sizes: BTreeMap::new(),
    };
    out.sizes.insert("rounds".into(), sizes.rounds as u64);
    out.sizes
        .insert("warmup_ms".into(), sizes.warmup.as_millis() as u64);
    out.sizes
        .insert("duration_ms".into(), sizes.duration.as_millis() as u64);
    for c in &sizes.concurrency {
        out.sizes.insert(format!("concurrency.c{c}"), *c as u64);
    }
    let total: u64 = rounds
        .iter()
        .map(|r| r.load.per_backend.iter().sum::<u64>())
        .sum();
    out.sizes.insert("verified_connections".into(), total);
    Ok(out)
}

fn summary_of(rounds: &[&Round], f: impl Fn(&Round) -> f64) -> Option<Summary> {
    let v: Vec<f64> = rounds
        .iter()
        .map(|r| f(r))
        .filter(|x| x.is_finite())
        .collect();
    (!v.is_empty()).then(|| Summary::of(&v))
}

/// The suite's metrics, one set per concurrency.
pub fn metrics(rounds: &[Round], sizes: &Sizes, machine: &Machine) -> Vec<Metric> {
    let mut out = Vec::new();
    for &c in &sizes.concurrency {
        let of = |s: System| -> Vec<&Round> {
            rounds
                .iter()
                .filter(|r| r.system == s && r.concurrency == c && !r.profile_only())
                .collect()
        };
        let b = of(System::Blixt);
        let metric = |name: &str, unit: &str, bs, peers: &[(&str, Summary)], note: &str| {
            Metric::new(
                SUITE,
                &format!("tls.{name}.c{c}"),
                unit,
                bs,
                peers,
                note,
                machine,
            )
        };
        let peer_rounds = [System::Haproxy, System::Direct].map(|s| (s, of(s)));
        type Getter = fn(&Round) -> f64;
        let kinds: [(&str, &str, Getter, String); 4] = [
            (
                "conn_per_s",
                "conn/s",
                |r| r.load.conn_per_s(),
                format!(
                    "TLS connections/s through the lb node: {c} concurrent loops of connect, full \
                     TLS 1.3 handshake with SNI, one-line answer, close"
                ),
            ),
            (
                "handshake_p50_ms",
                "ms",
                |r| r.load.handshake_ms(50.0),
                format!(
                    "median handshake latency (TCP connect to TLS handshake done), {c} concurrent"
                ),
            ),
            (
                "handshake_p99_ms",
                "ms",
                |r| r.load.handshake_ms(99.0),
                format!("99th percentile handshake latency, {c} concurrent"),
            ),
            (
                "lb_cpu_s_per_10k",
                "CPU s / 10k conn",
                |r| r.cpu_per_10k,
                format!(
                    "CPU seconds (user + system) of the lb node's proxy process per 10,000 \
                     connections, {c} concurrent"
                ),
            ),
        ];
        let mut blixt_vals = BTreeMap::new();
        let mut peer_vals = BTreeMap::new();
        for (name, unit, get, note) in kinds {
            let Some(bs) = summary_of(&b, get) else {
                continue;
            };
            blixt_vals.insert(name, bs.median);
            let mut peers: Vec<(&str, Summary)> = Vec::new();
            for (sys, rs) in &peer_rounds {
                if let Some(ps) = summary_of(rs, get) {
                    if *sys == System::Haproxy {
                        peer_vals.insert(name, ps.median);
                    }
                    peers.push((sys.key(), ps));
                }
            }
            out.push(metric(name, unit, bs, &peers, &note));
        }
        // the machine's CPU per connection, split between the lab's parts
        let parts = cpu::PARTS
            .iter()
            .map(|(id, label)| {
                (
                    format!("cpu_us_per_conn.{id}"),
                    "µs CPU / conn",
                    format!(
                        "CPU microseconds per verified connection used by: {label}, {c} \
                         concurrent (see the suite's CPU table)"
                    ),
                )
            })
            .chain(std::iter::once((
                "machine_busy_share".to_string(),
                "share of all cores",
                format!("busy share of all cores during the load, {c} concurrent"),
            )));
        for (i, (name, unit, note)) in parts.enumerate() {
            let get = |r: &Round| match cpu::PARTS.get(i) {
                Some((id, _)) => r.cpu_us.part(id),
                None => r.cpu_us.busy_share,
            };
            let Some(bs) = summary_of(&b, get) else {
                continue;
            };
            let peers: Vec<(&str, Summary)> = peer_rounds
                .iter()
                .filter_map(|(sys, rs)| Some((sys.key(), summary_of(rs, get)?)))
                .collect();
            out.push(metric(&name, unit, bs, &peers, &note));
        }
        let profiled = |s: System| {
            rounds
                .iter()
                .filter(|r| r.system == s && r.concurrency == c)
                .find_map(|r| r.profile.as_ref())
        };
        if let Some((n, shares)) = profiled(System::Blixt) {
            let peer = profiled(System::Haproxy);
            for (id, share) in shares {
                let peers: Vec<(&str, Summary)> = peer
                    .and_then(|(_, p)| p.iter().find(|(i, _)| i == id))
                    .map(|(_, v)| (System::Haproxy.key(), Summary::exact(*v)))
                    .into_iter()
                    .collect();
                out.push(Metric::new(
                    SUITE,
                    &format!("tls.lb_cpu_share.{id}.c{c}"),
                    "share of CPU samples",
                    Summary::exact(*share),
                    &peers,
                    &format!(
                        "share of the lb process's perf samples (Blixt: {n}{}) in: {}; an extra \
                         round at {c} concurrent, kept out of the medians",
                        peer.map_or(String::new(), |(m, _)| format!(", HAProxy: {m}")),
                        profile::describe(id)
                    ),
                    machine,
                ));
            }
        }
        // the goal sits on the conn/s metric of this concurrency
        if let (Some(bc), Some(hc), Some(bp), Some(hp)) = (
            blixt_vals.get("conn_per_s"),
            peer_vals.get("conn_per_s"),
            blixt_vals.get("handshake_p99_ms"),
            peer_vals.get("handshake_p99_ms"),
        ) {
            let met = *bc >= GOAL_RATIO * hc && bp <= hp;
            if let Some(m) = out
                .iter_mut()
                .find(|m| m.name == format!("tls.conn_per_s.c{c}"))
            {
                *m = m.clone().with_goal(
                    &format!("≥ {GOAL_RATIO}x HAProxy's conn/s at equal or lower p99"),
                    met,
                );
            }
        }
    }
    out
}

/// Concurrency levels present in the results.
fn levels(r: &Results) -> Vec<usize> {
    let mut v: Vec<usize> = r
        .metrics
        .iter()
        .filter_map(|m| m.name.strip_prefix("tls.conn_per_s.c")?.parse().ok())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn range(s: &Summary, decimals: usize) -> String {
    if s.runs > 1 {
        format!(
            "{:.*} ({:.*}–{:.*})",
            decimals, s.median, decimals, s.min, decimals, s.max
        )
    } else {
        format!("{:.*}", decimals, s.median)
    }
}

fn triple(s: &Summary) -> Option<(f64, f64, f64)> {
    Some((s.median, s.min, s.max))
}

/// The report's section for suite 6, or `None` when the run has no metric of it.
pub fn section(r: &Results, plots: &PlotDir<'_>) -> Result<Option<Section>> {
    let levels = levels(r);
    if levels.is_empty() {
        return Ok(None);
    }
    let hp = System::Haproxy.key();
    let direct = System::Direct.key();
    let mut w = String::new();
    let _ = writeln!(w, "## Suite 6: TLS passthrough\n");
    let _ = writeln!(
        w,
        "Blixt's TLS passthrough proxy against HAProxy's SNI passthrough, in the same namespace \
         lab and the same run. Three backends run rustls servers, each with a certificate of its \
         own for its own name (a/b/c.example.com). On the lb node runs one system at a time, a \
         fresh process per round: **Blixt** as `blixt run` serves a TLSRoute (tokio runtime with \
         the default workers, default limits, sk_lookup steering: the VIP is on no interface) \
         or **HAProxy** 2.6 in TCP mode (`nbthread 2`, `tcp-request inspect-delay` until \
         `req_ssl_hello_type 1`, then `use_backend` on `req_ssl_sni`; it binds its VIP, so that \
         VIP is an address on the lb's loopback). The client is the suite's own load generator \
         (tokio + rustls): N concurrent loops of TCP connect, full TLS 1.3 handshake with SNI \
         (no resumption), read the backend's one-line answer, close. Every connection is \
         checked by the certificate it received and the answer; one that reaches the wrong \
         backend fails the run. Handshake latency runs from the start of the TCP connect to the \
         completed TLS handshake; percentiles are exact over all connections of a round. Rounds \
         rotate the order of the systems; figures are medians over rounds (min–max in parentheses). \
         Client, backends and proxy share the machine's cores, so TLS crypto on the client and \
         backends takes most of the CPU. **Direct** is the same load without a proxy (each client \
         connects to its backend's own address through the lb node's kernel forwarding): the \
         ceiling any proxy can reach in this lab.\n"
    );
    let _ = writeln!(
        w,
        "| concurrent | system | conn/s | handshake p50 (ms) | handshake p99 (ms) | lb process CPU s per 10k conn |\n|---|---|---|---|---|---|"
    );
    let mut goals = Vec::new();
    let mut conn_series = (Vec::new(), Vec::new(), Vec::new());
    let mut lat_series = (Vec::new(), Vec::new(), Vec::new());
    let mut lat_categories = Vec::new();
    for &c in &levels {
        let get = |kind: &str| r.metric(&format!("tls.{kind}.c{c}"));
        for (sys, key) in [("Blixt", BLIXT), ("HAProxy", hp), ("direct", direct)] {
            let cell = |kind: &str, d: usize| {
                get(kind)
                    .and_then(|m| m.system(key))
                    .map_or("—".to_string(), |s| range(s, d))
            };
            let _ = writeln!(
                w,
                "| {c} | {sys} | {} | {} | {} | {} |",
                cell("conn_per_s", 0),
                cell("handshake_p50_ms", 2),
                cell("handshake_p99_ms", 2),
                cell("lb_cpu_s_per_10k", 2)
            );
        }
        let conn = get("conn_per_s");
        conn_series
            .0
            .push(conn.and_then(|m| m.system(BLIXT)).and_then(triple));
        conn_series
            .1
            .push(conn.and_then(|m| m.system(hp)).and_then(triple));
        conn_series
            .2
            .push(conn.and_then(|m| m.system(direct)).and_then(triple));
        for p in ["p50", "p99"] {
            let m = get(&format!("handshake_{p}_ms"));
            lat_categories.push(format!("{p}, {c} concurrent"));
            lat_series
                .0
                .push(m.and_then(|m| m.system(BLIXT)).and_then(triple));
            lat_series
                .1
                .push(m.and_then(|m| m.system(hp)).and_then(triple));
        }
        let ratio = conn.and_then(|m| m.ratios.get(&format!("{BLIXT}/{hp}")).copied());
        let p99 = get("handshake_p99_ms");
        let p99s = p99.and_then(|m| Some((m.system(BLIXT)?.median, m.system(hp)?.median)));
        let ceiling = conn
            .and_then(|m| Some(m.system(direct)?.median / m.system(hp)?.median))
            .map_or(String::new(), |x| format!(" (no proxy at all: {x:.2}x)"));
        let measured = match (ratio, p99s) {
            (Some(x), Some((b, h))) => {
                format!(
                    "{c} concurrent: {x:.2}x HAProxy's conn/s{ceiling}; p99 {b:.2} ms vs {h:.2} ms"
                )
            }
            _ => format!("{c} concurrent: no HAProxy figure in this run"),
        };
        goals.push(GoalRow {
            goal: format!(
                "TLS passthrough conn/s ≥ {GOAL_RATIO}x HAProxy at equal or lower p99 ({c} \
                 concurrent)"
            ),
            measured,
            met: conn.and_then(|m| m.goal.as_ref()).map(|g| g.met),
        });
    }
    let _ = writeln!(w);
    for g in &goals {
        let verdict = match g.met {
            Some(true) => "goal met",
            Some(false) => "**goal not met**",
            None => "goal undecided",
        };
        let _ = writeln!(w, "- {}: {verdict}.", g.measured);
    }
    for &c in &levels {
        let Some(m) = r.metric(&format!("tls.conn_per_s.c{c}")) else {
            continue;
        };
        let (Some(d), Some(h), Some(b)) = (m.system(direct), m.system(hp), m.system(BLIXT)) else {
            continue;
        };
        if d.median < GOAL_RATIO * h.median {
            let _ = writeln!(
                w,
                "- {c} concurrent: with **no proxy at all** the lab reaches only {:.2}x \
                 HAProxy's rate (Blixt: {:.2}x of that ceiling). The client's and backends' TLS \
                 handshakes and TCP stacks take the CPU that bounds the rate, so in this lab no \
                 proxy can show {GOAL_RATIO}x HAProxy; the lb process's CPU per 10k connections \
                 is the proxy's own cost.",
                d.median / h.median,
                b.median / d.median
            );
        }
        budget_lines(&mut w, r, c, h.median);
    }
    let _ = writeln!(w);

    cpu_table(&mut w, r, &levels);
    profile_table(&mut w, r, &levels);
    for &c in &levels {
        limit_paragraph(&mut w, r, c);
    }

    let categories: Vec<String> = levels.iter().map(|c| format!("{c} concurrent")).collect();
    let series = |vals: (Vec<_>, Vec<_>, Vec<_>)| {
        vec![
            Series {
                label: "Blixt".into(),
                color: BLUE,
                values: vals.0,
            },
            Series {
                label: "HAProxy".into(),
                color: ORANGE,
                values: vals.1,
            },
            Series {
                label: "direct (no proxy)".into(),
                color: GREY,
                values: vals.2,
            },
        ]
    };
    let charts = [
        (
            "tls_conn_per_s.png",
            "TLS passthrough: connections per second (higher is better)",
            "connections/s",
            categories,
            series(conn_series),
            0,
            "connections per second",
        ),
        (
            "tls_handshake_latency.png",
            "TLS passthrough: handshake latency (lower is better)",
            "ms from TCP connect to TLS handshake done",
            lat_categories,
            series(lat_series),
            2,
            "handshake latency",
        ),
    ];
    for (file, title, x_label, categories, series, decimals, what) in charts {
        let chart = BarChart {
            title: title.into(),
            x_label: x_label.into(),
            categories,
            series,
            markers: Vec::new(),
            decimals,
            legend: plotters::prelude::SeriesLabelPosition::LowerRight,
        };
        chart.draw(&plots.dir.join(file))?;
        let _ = writeln!(w, "![TLS passthrough {what}]({})\n", plots.link(file));
    }
    Ok(Some(Section { markdown: w, goals }))
}

/// The median of `system` in the metric `tls.{name}.c{c}`.
fn median_at(r: &Results, name: &str, c: usize, system: &str) -> Option<f64> {
    r.metric(&format!("tls.{name}.c{c}"))
        .and_then(|m| m.system(system))
        .map(|s| s.median)
}

/// The machine's CPU per connection (µs) at `GOAL_RATIO` times HAProxy's rate `haproxy_rate`,
/// on the cores as busy as in Blixt's rounds at concurrency `c`; and the cores.
fn machine_budget(r: &Results, c: usize, haproxy_rate: f64) -> Option<(f64, f64, f64)> {
    let busy = median_at(r, "machine_busy_share", c, BLIXT)?;
    let cores = r.metric(&format!("tls.conn_per_s.c{c}"))?.machine.cores as f64;
    (haproxy_rate > 0.0).then(|| {
        (
            busy * cores / (GOAL_RATIO * haproxy_rate) * 1e6,
            busy,
            cores,
        )
    })
}

/// What the goal leaves the proxy, from the whole machine's CPU per connection: at
/// `GOAL_RATIO` times HAProxy's rate `haproxy_rate` on the cores busy as measured, and what
/// each connection costs with no proxy at all. Also what a proxy-bound machine would show:
/// connections per core of the lb process, Blixt against HAProxy.
fn budget_lines(w: &mut String, r: &Results, c: usize, haproxy_rate: f64) {
    let hp = System::Haproxy.key();
    let get = |name: &str, key: &str| median_at(r, name, c, key);
    if let (Some((budget, busy, cores)), Some(none), Some(blixt)) = (
        machine_budget(r, c, haproxy_rate),
        get("cpu_us_per_conn.total", System::Direct.key()),
        get("cpu_us_per_conn.total", BLIXT),
    ) {
        let _ = writeln!(
            w,
            "- {c} concurrent: {GOAL_RATIO}x HAProxy's rate on {:.0}% of {cores:.0} cores leaves \
             {budget:.0} µs of CPU per connection for the whole machine; with no proxy at all a \
             connection takes {none:.0} µs, so {}; Blixt adds {:.0} µs.",
            busy * 100.0,
            if budget > none {
                format!("a proxy may add {:.0} µs", budget - none)
            } else {
                "not even no proxy at all fits".to_string()
            },
            blixt - none
        );
    }
    if let (Some(b), Some(h)) = (get("lb_cpu_s_per_10k", BLIXT), get("lb_cpu_s_per_10k", hp)) {
        if b > 0.0 {
            let _ = writeln!(
                w,
                "- {c} concurrent: Blixt's proxy process uses {:.2} of HAProxy's CPU per \
                 connection: {:.2}x HAProxy's connections per proxy core, what a machine \
                 where the proxy is the bottleneck would show.",
                b / h,
                h / b
            );
        }
    }
}

/// The system calls of the second TCP connection a proxy that terminates TCP opens per client
/// connection: its setup and teardown, which no user-space proxy avoids.
const SETUP_TEARDOWN: [&str; 4] = ["connect", "accept", "shutdown", "close"];

/// What the goal leaves a proxy per connection, split into what the second connection's setup
/// and teardown take and what is left to relay the bytes. All in µs per connection.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProxyLimit {
    /// What the goal lets a proxy add to the machine's CPU per connection.
    budget: f64,
    /// The proxy process's CPU per connection.
    process: f64,
    /// Of `process`, the setup and teardown system calls.
    setup: f64,
}

impl ProxyLimit {
    /// From the budget, the process CPU and the setup-and-teardown share of its samples.
    fn of(budget: f64, process: f64, setup_share: f64) -> ProxyLimit {
        ProxyLimit {
            budget,
            process,
            setup: process * setup_share,
        }
    }

    /// What the budget leaves for relaying once the setup and teardown are paid.
    fn left_for_relay(&self) -> f64 {
        self.budget - self.setup
    }

    /// What the process spends beyond setup and teardown: relaying, event loop, its own code.
    fn relay(&self) -> f64 {
        self.process - self.setup
    }
}

/// The paragraph that says what stands between the measured ratio and the goal, for the
/// concurrency that was profiled.
fn limit_paragraph(w: &mut String, r: &Results, c: usize) {
    let hp = System::Haproxy.key();
    let median = |name: &str, key: &str| median_at(r, name, c, key);
    let share = |key: &str| -> Option<f64> {
        SETUP_TEARDOWN
            .iter()
            .map(|id| median(&format!("lb_cpu_share.{id}"), key))
            .sum()
    };
    let (Some((machine, _, _)), Some(none), Some(bp), Some(hproc), Some(bs), Some(hs)) = (
        median("conn_per_s", hp).and_then(|rate| machine_budget(r, c, rate)),
        median("cpu_us_per_conn.total", System::Direct.key()),
        median("lb_cpu_s_per_10k", BLIXT),
        median("lb_cpu_s_per_10k", hp),
        share(BLIXT),
        share(hp),
    ) else {
        return;
    };
    let io_share = ["send", "recv"]
        .iter()
        .filter_map(|id| median(&format!("lb_cpu_share.{id}"), BLIXT))
        .sum::<f64>();
    let budget = machine - none;
    // CPU s per 10k connections → µs per connection
    let b = ProxyLimit::of(budget, bp * 100.0, bs);
    let h = ProxyLimit::of(budget, hproc * 100.0, hs);
    let _ = writeln!(
        w,
        "**What limits the ratio to HAProxy ({c} concurrent).** The goal lets a proxy add \
         {:.0} µs of CPU per connection to this machine. A proxy that terminates TCP on both \
         sides, as Blixt's and HAProxy's do, opens, accepts and closes a second connection for \
         every client connection: those system calls alone (connect, accept, shutdown, close) \
         take {:.0} µs of Blixt's {:.0} µs per connection and {:.0} µs of HAProxy's {:.0} µs, \
         {:.0}% of the budget for work no user-space proxy avoids. That leaves {:.0} µs to \
         relay the handshake's flights (each a wake-up, a recv and a send); Blixt's relay, \
         event loop and own code take {:.0} µs, HAProxy's {:.0} µs; with its event loop and \
         own code free, Blixt's send and recv alone would still take {:.0} µs. The goal needs \
         the relay at {:.0}% of what Blixt's costs now: that takes moving the bytes out of user space (a \
         sockmap splice once the ClientHello has chosen the backend) or not terminating TCP at \
         all, not a faster event loop.\n",
        b.budget,
        b.setup,
        b.process,
        h.setup,
        h.process,
        100.0 * b.setup / b.budget,
        b.left_for_relay(),
        b.relay(),
        h.relay(),
        b.process * io_share,
        100.0 * b.left_for_relay().max(0.0) / b.relay()
    );
}

/// The table of where the whole machine's CPU went per connection.
fn cpu_table(w: &mut String, r: &Results, levels: &[usize]) {
    let systems = [
        ("Blixt", BLIXT),
        ("HAProxy", System::Haproxy.key()),
        ("direct", System::Direct.key()),
    ];
    for &c in levels {
        let total = r.metric(&format!("tls.cpu_us_per_conn.total.c{c}"));
        if total.is_none() {
            continue;
        }
        let _ = writeln!(
            w,
            "CPU per connection, whole machine ({c} concurrent; µs per verified connection, \
             medians over rounds; the load generator and the servers run in the bench process, \
             softirq work is charged to the task it ran in, which on veth is mostly the \
             sender):\n"
        );
        let mut head = String::from("| system |");
        let mut rule = String::from("|---|");
        for (_, label) in cpu::PARTS {
            let _ = write!(head, " {label} |");
            rule.push_str("---|");
        }
        let _ = writeln!(w, "{head} cores busy |\n{rule}---|");
        for (name, key) in systems {
            let mut row = format!("| {name} |");
            for (id, _) in cpu::PARTS {
                let v = r
                    .metric(&format!("tls.cpu_us_per_conn.{id}.c{c}"))
                    .and_then(|m| m.system(key));
                let _ = write!(
                    row,
                    " {} |",
                    v.map_or("—".to_string(), |s| format!("{:.0}", s.median))
                );
            }
            let busy = r
                .metric(&format!("tls.machine_busy_share.c{c}"))
                .and_then(|m| m.system(key))
                .map_or("—".to_string(), |s| format!("{:.0}%", s.median * 100.0));
            let _ = writeln!(w, "{row} {busy} |");
        }
        let _ = writeln!(w);
    }
}

/// The table of where the lb process's CPU went, when the run profiled it.
fn profile_table(w: &mut String, r: &Results, levels: &[usize]) {
    for &c in levels {
        let rows: Vec<&Metric> = r
            .metrics
            .iter()
            .filter(|m| {
                m.name.starts_with("tls.lb_cpu_share.") && m.name.ends_with(&format!(".c{c}"))
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            w,
            "Where the lb process's CPU goes ({c} concurrent; `perf record -g` of the proxy \
             process in an extra round per system whose figures are in no median, each sample \
             charged to the system call on its stack):\n"
        );
        let _ = writeln!(w, "| | Blixt | HAProxy |\n|---|---|---|");
        for m in rows {
            let id = m
                .name
                .trim_start_matches("tls.lb_cpu_share.")
                .trim_end_matches(&format!(".c{c}"));
            let pct = |k: &str| {
                m.system(k)
                    .map_or("—".to_string(), |s| format!("{:.1}%", s.median * 100.0))
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} |",
                profile::describe(id),
                pct(BLIXT),
                pct(System::Haproxy.key())
            );
        }
        let _ = writeln!(w);
    }
}

#[cfg(test)]
mod tests {
    use super::ProxyLimit;

    #[test]
    fn the_proxy_limit_splits_the_budget_into_setup_and_relay() {
        let l = ProxyLimit::of(110.0, 200.0, 0.35);
        assert!((l.setup - 70.0).abs() < 1e-9);
        assert!((l.left_for_relay() - 40.0).abs() < 1e-9);
        assert!((l.relay() - 130.0).abs() < 1e-9);
    }
}
