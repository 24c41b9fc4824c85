//! Blixt's benchmark harness: the suites of `make bench` (issue 6), their results file and the
//! report.
//!
//! - [`packet_cost`]: suite 1, the load balancer's per-packet cost through BPF_PROG_TEST_RUN,
//!   measured as a hot loop through a restoring wrapper ([`wrap`]) and call by call, against
//!   an empty program and a parse-only floor in the same run.
//! - [`maglev`]: suite 5, flows moved when a backend leaves or joins, and table build time.
//! - [`results`]: `target/bench/results.json`; [`report`]: `docs/benchmarks.md` and its plots.
//!
//! Every figure is a median of several runs taken in one process on one machine; the report
//! prints the machine next to the numbers. Nothing here asserts a timing: tests run the suites
//! at tiny sizes and check only that each run took the path it names.
#![forbid(unsafe_code)]

pub mod control_plane;
pub mod end_to_end;
pub mod env;
pub mod forwarding;
pub mod maglev;
pub mod map_cost;
pub mod packet_cost;
pub mod plot;
pub mod profile;
pub mod report;
pub mod results;
pub mod stats;
pub mod suite;
pub mod tls;
pub mod wrap;

/// How big a benchmark run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `make bench`: the sizes the report is quoted at.
    Full,
    /// `make bench QUICK=1`: same suites and files, smaller sizes (well under 5 minutes).
    Quick,
    /// Test sizes: a few hundred iterations; numbers are meaningless, paths are checked.
    Tiny,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Quick => "quick",
            Mode::Tiny => "tiny",
        }
    }
}

/// Panics with a clear message unless the process runs as root (effective uid 0): BPF program
/// loading, BPF_PROG_TEST_RUN and network namespaces all need it.
pub fn require_root() {
    // Read from /proc rather than geteuid(2): keeps this crate free of `unsafe`.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok());
    if euid != Some(0) {
        panic!(
            "blixt-bench needs root (loading BPF programs, BPF_PROG_TEST_RUN, network \
             namespaces): run it as root, e.g. `sudo make bench` (effective uid: {euid:?})"
        );
    }
}

/// Suites this harness knows.
pub const SUITES: [u32; 6] = [1, 2, 3, 4, 5, 6];

/// Suites 2, 3, 4 and 6: each a module with its own run and report section.
pub const EXTRA_SUITES: [suite::Suite; 4] = [
    suite::Suite {
        number: 2,
        prefix: "forwarding",
        run: forwarding::run,
        section: forwarding::section,
        goal: "LB forwarding capacity ≥ 3x nftables (UDP, 10k flows); new flows/s ≥ 2x nftables",
        what: "**Suite 2, LB forwarding capacity** with the LB as the bottleneck (own packet \
               generator toward the VIP, backends sinking with an XDP drop-and-count program): \
               packets/s for UDP and established TCP with 1 and 10,000 flows, the new-flow \
               rate, against nftables and iptables forwarding the same stream.",
    },
    suite::Suite {
        number: 3,
        prefix: "e2e",
        run: end_to_end::run,
        section: end_to_end::section,
        goal: "end-to-end short connections/s ≥ 1.1x nftables and ≥ 1.6x HAProxy",
        what: "**Suite 3, end to end** in the namespace lab (same topology for every system): \
               short TCP connections/s, keep-alive request rate and p50/p99 latency, bulk \
               throughput, UDP request/response rate, CPU seconds per 10k connections — \
               against kube-proxy's iptables and nftables modes and HAProxy.",
    },
    suite::Suite {
        number: 4,
        prefix: "control_plane",
        run: control_plane::run,
        section: control_plane::section,
        goal: "route change → programmed p99 < 100 ms at 1,000 routes; controller RSS < 500 MB \
               at 10k routes / 100k endpoints",
        what: "**Suite 4, control plane**: route change → snapshot programmed, p50/p99 over 200 \
               changes at 10 / 1,000 / 10,000 routes; controller and agent RSS at 10k routes / \
               100k endpoints.",
    },
    suite::Suite {
        number: 6,
        prefix: "tls",
        run: tls::run,
        section: tls::section,
        goal: "TLS passthrough conn/s ≥ 1.2x HAProxy at equal or lower p99",
        what: "**Suite 6, TLS passthrough**: connections/s and p99 handshake latency against \
               HAProxy SNI passthrough.",
    },
];

/// The suite a finding belongs to, by how each suite words its findings (`None`: unknown).
pub fn finding_suite(f: &str) -> Option<u32> {
    if f.starts_with(forwarding::FINDING) {
        Some(2)
    } else if f.starts_with(end_to_end::FINDING) {
        Some(3)
    } else if f.starts_with("Suite 4") {
        Some(4)
    } else if f.starts_with("TLS passthrough") {
        Some(6)
    } else if f
        .split_once(':')
        .is_some_and(|(id, _)| packet_cost::Path::from_id(id).is_some())
    {
        Some(1)
    } else {
        None
    }
}

/// Logs how long `suite` took since `since` and records it in the run's sizes.
fn took(
    sizes: &mut std::collections::BTreeMap<String, u64>,
    suite: u32,
    since: std::time::Instant,
) {
    let secs = since.elapsed().as_secs();
    eprintln!("blixt-bench: suite {suite} took {secs} s");
    sizes.insert(format!("took_s.suite{suite}"), secs);
}

/// Runs the selected suites (`suites` empty: all; `paths` empty: every packet-cost path) and
/// gathers their metrics.
pub fn run(
    mode: Mode,
    suites: &[u32],
    paths: &[packet_cost::Path],
) -> anyhow::Result<results::Results> {
    let started = std::time::Instant::now();
    let machine = results::Machine::detect();
    let want = |s: u32| suites.is_empty() || suites.contains(&s);
    let mut metrics = Vec::new();
    let mut programs = Vec::new();
    let mut profiles = Vec::new();
    let mut findings = Vec::new();
    let mut sizes = std::collections::BTreeMap::new();
    if want(4) {
        use anyhow::Context as _;
        // Suite 4 starts a kube-apiserver after half an hour of other suites; a missing
        // binary must stop the run now, not then.
        blixt_k8s_harness::check_artifacts()
            .context("suite 4 (control_plane) needs the Kubernetes test binaries")?;
    }
    if want(1) {
        let t = std::time::Instant::now();
        let pc_sizes = packet_cost::Sizes::for_mode(mode);
        let v = serde_json::to_value(pc_sizes)?;
        for (k, v) in v.as_object().into_iter().flatten() {
            sizes.insert(format!("packet_cost.{k}"), v.as_u64().unwrap_or(0));
        }
        let pc = packet_cost::run(pc_sizes, paths)?;
        for (path, s) in &pc.paths {
            if s.ct_insert_failures > 0 {
                findings.push(format!(
                    "{}: {} new flow(s) could not be tracked (conntrack insert failed) and were \
                     forwarded statelessly",
                    path.id(),
                    s.ct_insert_failures
                ));
            }
            profiles.extend(s.profiles.iter().cloned());
            if *path == packet_cost::Path::NewTcpFull {
                sizes.insert(
                    "packet_cost.conntrack_at_start_full".into(),
                    s.conntrack_at_start as u64,
                );
            }
        }
        metrics.extend(pc.metrics(&machine));
        programs = pc.programs;
        if paths.is_empty() || paths.iter().any(|p| p.is_new_flow()) {
            eprintln!("blixt-bench: packet cost: the conntrack map's own operations ...");
            metrics.extend(map_cost::run(
                pc_sizes.conntrack_entries,
                pc_sizes.new_flow_repeat,
                pc_sizes.rounds,
                &machine,
            )?);
        }
        took(&mut sizes, 1, t);
    }
    if want(5) {
        let t = std::time::Instant::now();
        let mg_sizes = maglev::Sizes::for_mode(mode);
        sizes.insert("maglev.flows".into(), mg_sizes.flows as u64);
        sizes.insert("maglev.build_reps".into(), mg_sizes.build_reps as u64);
        sizes.insert(
            "maglev.build_backends".into(),
            mg_sizes.build_backends as u64,
        );
        let mg = maglev::run(mg_sizes)?;
        metrics.extend(mg.metrics(&machine));
        took(&mut sizes, 5, t);
    }
    for extra in &EXTRA_SUITES {
        if !want(extra.number) {
            continue;
        }
        let t = std::time::Instant::now();
        let out = (extra.run)(mode, &machine)
            .map_err(|e| e.context(format!("suite {} ({})", extra.number, extra.prefix)))?;
        for (k, v) in out.sizes {
            sizes.insert(format!("{}.{k}", extra.prefix), v);
        }
        metrics.extend(out.metrics);
        findings.extend(out.findings);
        took(&mut sizes, extra.number, t);
    }
    let finished_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(results::Results {
        schema: results::SCHEMA,
        mode: mode.name().into(),
        finished_unix,
        elapsed_s: started.elapsed().as_secs_f64(),
        machine,
        sizes,
        metrics,
        programs,
        profiles,
        findings,
        earlier: Vec::new(),
    })
}
