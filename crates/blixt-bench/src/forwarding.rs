//! Suite 2, LB forwarding capacity with the LB as the bottleneck (issue 6).
//!
//! A packet generator of the project's own ([`gen`]: an XDP program run through
//! BPF_PROG_TEST_RUN in live-frame mode on the client's veth end, or where the kernel refuses
//! live frames an XDP program turning a loop of frames on a veth pair of the client's own; one
//! CPU either way) pushes 64-byte UDP or established-TCP packets toward a VIP faster than the
//! lb node can forward them; the three backends count and drop what arrives with an XDP sink.
//! Packets/s forwarded is the sinks' count of packets rewritten to the backend port over the
//! generator's wall time. Blixt runs twice: at XDP (the default) and in TC mode.
//!
//! Each system runs in a lab of its own ([`systems`]), all built before the first round;
//! rounds alternate between systems so that a noisy moment on the shared machine hits all of
//! them alike. CPU placement (2 cores): the generator thread is pinned to CPU 0, the lb's
//! receiving veth NAPI runs as a kthread pinned to CPU 1, so the LB's work (receive, the
//! forwarding decision, transmit into the backend veth, and the sinks' NAPI it schedules on
//! its CPU) has CPU 1 to itself, the same for every system.
//!
//! Established TCP: the lb sees only the client's direction (the backends are sinks), so no
//! system ever sees a SYN-ACK. State is made by a warm-up of the same ACK stream before the
//! rounds: Blixt tracks mid-stream flows (`ct_miss_midstream`; NEW until a backend answers,
//! forwarded the same), conntrack picks them up as ESTABLISHED (`nf_conntrack_tcp_loose`, on by
//! default). A SYN first would not do:
//! conntrack treats a client ACK after a SYN without a SYN-ACK as invalid and never NATs it.

pub mod gen;
pub mod systems;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::plot::{BarChart, Series, BLUE, GREEN, GREY, ORANGE, RED};
use crate::results::{Machine, Metric, Results};
use crate::stats::Summary;
use crate::suite::{GoalRow, PlotDir, Section, SuiteOutput};
use crate::Mode;
use gen::{Generator, LoopGenerator, Method, Proto, Template};
use systems::{Bed, System};

/// Suite name in results.json.
pub const SUITE: &str = "2 forwarding capacity";
/// CPU of the generator thread.
const GEN_CPU: usize = 0;
/// CPU of the lb's receive NAPI kthread.
const LB_CPU: usize = 1;
/// Flows one new-flows round may create and still fit every system's tables with room: Blixt's
/// SNAT port space (31,744 ports × 3 backends, about 95k flows, probed 16 ports at a time: the
/// fuller, the likelier all 16 are taken), its conntrack (131,072 flows), `nf_conntrack_max`.
const NEW_FLOWS_FIT: u64 = 60_000;
/// Prefix of this suite's findings (its own section shows them).
pub(crate) const FINDING: &str = "forwarding: ";

/// Sizes of the suite.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sizes {
    pub rounds: usize,
    /// Length of one measured round.
    pub round_ms: u64,
    /// Untimed run before a scenario's rounds (creates the flows' state).
    pub warmup_ms: u64,
    /// Frames per BPF_PROG_TEST_RUN call of the generator. Large on purpose: every live-frame
    /// call adds the generator to the kernel's XDP dispatcher and removes it again, each
    /// change waiting in `synchronize_rcu()` (milliseconds) with nothing offered to the LB.
    /// At 32k frames per call (about 5 ms of frames) the generator idled about 3/4 of each
    /// round (perf: CPU 0 62% idle, the LB's CPU about 80% idle), so every system was measured
    /// at a fraction of its capacity, the more so the costlier its packets.
    pub chunk: u32,
    /// "Every packet a new flow": frames of its warm-up and of each round, one generator call
    /// each, the same for every system (instead of `round_ms`/`warmup_ms`). Bounds the flows
    /// one round can create: a round creates about `frames × LB rate / offered rate`, and that
    /// ratio held steady from a busy to a quiet machine (measured: Blixt about 0.07, about 39k
    /// flows per round of 2^19 frames, in ~0.1 s of generator time), inside every system's
    /// tables ([`NEW_FLOWS_FIT`]). Each round starts from an empty table (see [`run`]); the
    /// flows a round created are counted, reported, and flagged past [`NEW_FLOWS_FIT`].
    pub new_flows_frames: u32,
}

impl Sizes {
    pub fn for_mode(mode: Mode) -> Sizes {
        match mode {
            Mode::Full => Sizes {
                rounds: 5,
                round_ms: 2000,
                warmup_ms: 500,
                chunk: 1 << 21,
                new_flows_frames: 1 << 19,
            },
            Mode::Quick => Sizes {
                rounds: 3,
                round_ms: 300,
                warmup_ms: 100,
                chunk: 1 << 20,
                new_flows_frames: 1 << 19,
            },
            Mode::Tiny => Sizes {
                rounds: 1,
                round_ms: 40,
                warmup_ms: 20,
                chunk: 1 << 12,
                new_flows_frames: 1 << 12,
            },
        }
    }
}

/// A traffic pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// Metric name without the suite prefix and unit, e.g. "udp.flows10k".
    pub id: &'static str,
    pub label: &'static str,
    pub proto: Proto,
    /// Flows cycled through; 0: every packet a new flow.
    pub flows: u32,
}

pub const SCENARIOS: [Scenario; 5] = [
    Scenario {
        id: "udp.flows1",
        label: "UDP, 1 flow",
        proto: Proto::Udp,
        flows: 1,
    },
    Scenario {
        id: "udp.flows10k",
        label: "UDP, 10k flows",
        proto: Proto::Udp,
        flows: 10_000,
    },
    Scenario {
        id: "tcp_established.flows1",
        label: "TCP established, 1 flow",
        proto: Proto::TcpAck,
        flows: 1,
    },
    Scenario {
        id: "tcp_established.flows10k",
        label: "TCP established, 10k flows",
        proto: Proto::TcpAck,
        flows: 10_000,
    },
    // last: it fills conntrack tables, which would slow the lookups of later scenarios
    Scenario {
        id: "new_flows",
        label: "UDP, every packet a new flow",
        proto: Proto::Udp,
        flows: 0,
    },
];

/// Scenario on which the generator's own rate and the rx-drop ceiling are measured.
const GEN_SCENARIO: &str = "udp.flows10k";

/// Samples of one system in one scenario.
#[derive(Debug, Default, Clone)]
struct Samples {
    forwarded_pps: Vec<f64>,
    offered_pps: Vec<f64>,
    /// Per-backend totals over the rounds (to backend port).
    per_backend: Vec<u64>,
    /// Per round (new flows only): packets forwarded, as the sinks count them.
    forwarded: Vec<u64>,
    /// Per round (new flows only): flows the system's own counters say it created.
    created: Vec<u64>,
    /// Over the measured rounds (new flows only): Blixt's `ct_insert_failed`.
    ct_insert_failed: u64,
}

/// Measures suite 2.
pub fn run(mode: Mode, machine: &Machine) -> Result<SuiteOutput> {
    crate::require_root();
    ensure!(
        machine.cores >= 2,
        "suite 2 pins the generator and the LB to different CPUs: needs 2 cores, have {}",
        machine.cores
    );
    let mut sizes = Sizes::for_mode(mode);
    let mut findings = Vec::new();
    let mut systems = vec![
        System::Blixt,
        System::BlixtTc,
        System::Nftables,
        System::Iptables,
    ];
    if systems::iptables_legacy_works() {
        systems.push(System::IptablesLegacy);
    } else {
        findings.push(format!(
            "{FINDING}iptables-legacy cannot install NAT rules on this kernel (no ip_tables \
             modules); iptables is measured with its nf_tables backend only"
        ));
    }
    systems.push(System::RxDrop);
    eprintln!(
        "blixt-bench: forwarding: building labs for {} ...",
        systems
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut beds = systems
        .iter()
        .map(|&s| Bed::new(s, LB_CPU).with_context(|| format!("setting up {}", s.name())))
        .collect::<Result<Vec<_>>>()?;
    let method = detect_method(&beds[0])?;
    let mut loops = Vec::new();
    if let Method::VethLoop(why) = &method {
        eprintln!("blixt-bench: forwarding: live frames refused ({why}): the veth-loop generator");
        findings.push(format!(
            "{FINDING}generator: this kernel refuses BPF_F_TEST_XDP_LIVE_FRAMES ({why}); the \
             veth-loop generator offered the frames"
        ));
        // The loop offers about half the live generator's rate, so each LB takes about twice
        // the share of a round's frames: half the frames keep the flows a new-flows round
        // creates inside every table, as with live frames (see `Sizes::new_flows_frames`).
        sizes.new_flows_frames /= 2;
        for bed in &beds {
            loops.push(
                gen::Loop::set_up(&bed.lab.client.ns, GEN_CPU, systems::thread_napi)
                    .with_context(|| format!("the generator's loop for {}", bed.system.name()))?,
            );
        }
    }

    let mut samples: BTreeMap<(&'static str, System), Samples> = BTreeMap::new();
    for sc in SCENARIOS {
        eprintln!("blixt-bench: forwarding: {} ...", sc.label);
        // every packet a new flow: each warm-up and round starts from an empty connection table
        // and is one generator call of a fixed size (see `Sizes::new_flows_frames`)
        let new_flows = sc.flows == 0;
        let (warmup, round, chunk) = if new_flows {
            (Duration::ZERO, Duration::ZERO, sizes.new_flows_frames)
        } else {
            (
                Duration::from_millis(sizes.warmup_ms),
                Duration::from_millis(sizes.round_ms),
                sizes.chunk,
            )
        };
        let mut gens = Vec::new();
        for bed in &mut beds {
            if !bed.system.forwards() && sc.id != GEN_SCENARIO {
                gens.push(None);
                continue;
            }
            let link = &bed.lab.client.link;
            let port = match sc.proto {
                Proto::Udp => systems::UDP_PORT,
                Proto::TcpAck => systems::TCP_PORT,
            };
            let t = Template::new(
                sc.proto,
                link.peer_mac.0,
                link.lb_mac.0,
                bed.lab.vip4(1),
                port,
            );
            let mut g = match method {
                Method::LiveFrames => Gen::Live(Generator::load(&t, sc.flows)?),
                Method::VethLoop(_) => Gen::Loop(LoopGenerator::load(
                    &bed.lab.client.ns,
                    &t,
                    sc.flows,
                    bed.lab.client.link.peer_ifindex,
                )?),
            };
            if new_flows {
                bed.clear_flows()?;
            }
            generate(bed, &mut g, warmup, chunk)?;
            gens.push(Some(g));
        }
        for _ in 0..sizes.rounds {
            for (bed, g) in beds.iter_mut().zip(&mut gens) {
                let Some(g) = g else { continue };
                if new_flows {
                    // outside the timed window
                    bed.clear_flows()?;
                }
                let own_before = bed.flow_counters()?;
                let before = bed.counts()?;
                let sent = generate(bed, g, round, chunk)?;
                // frames still in the rings (at most a few hundred) land before the read
                std::thread::sleep(Duration::from_millis(5));
                let delta = bed.counts()?.since(&before);
                let own = bed.flow_counters()?.since(&own_before);
                let s = samples.entry((sc.id, bed.system)).or_default();
                if new_flows {
                    s.forwarded.push(delta.forwarded(bed.system));
                    s.created.push(own.created);
                    s.ct_insert_failed += own.ct_insert_failed();
                }
                s.forwarded_pps
                    .push(delta.forwarded(bed.system) as f64 / sent.elapsed.as_secs_f64());
                s.offered_pps.push(sent.pps());
                if s.per_backend.is_empty() {
                    s.per_backend = vec![0; delta.0.len()];
                }
                for (t, c) in s.per_backend.iter_mut().zip(&delta.0) {
                    *t += c[usize::from(bed.system.forwards())];
                }
            }
        }
        check_paths(sc, &beds, &samples)?;
    }
    for bed in &mut beds {
        findings.push(format!(
            "{FINDING}{}: {}",
            bed.system.name(),
            bed.own_counters()?
        ));
    }
    for ((id, sys), s) in &samples {
        if !s.created.is_empty() && sys.forwards() {
            findings.push(new_flows_finding(*sys, s));
        }
        if sys.forwards() {
            findings.push(format!(
                "{FINDING}{}: {id}: packets per backend over all rounds {:?}; the generator \
                 offered {:.3} Mpps (median), {:.3} Mpps forwarded",
                sys.name(),
                s.per_backend,
                Summary::of(&s.offered_pps).median / 1e6,
                Summary::of(&s.forwarded_pps).median / 1e6,
            ));
        }
    }
    drop(beds);

    let metrics = metrics(&samples, &systems, machine);
    let mut sz = BTreeMap::new();
    sz.insert("rounds".into(), sizes.rounds as u64);
    sz.insert("round_ms".into(), sizes.round_ms);
    sz.insert("warmup_ms".into(), sizes.warmup_ms);
    sz.insert("new_flows_frames".into(), u64::from(sizes.new_flows_frames));
    sz.insert("flows_many".into(), 10_000);
    sz.insert("backends".into(), systems::BACKENDS as u64);
    sz.insert(
        "generator_veth_loop".into(),
        u64::from(matches!(method, Method::VethLoop(_))),
    );
    Ok(SuiteOutput {
        metrics,
        findings,
        sizes: sz,
    })
}

/// What the counters say about the new-flow rounds of `sys`: the flows each round created
/// (the system's own counter) against the packets the sinks got (every packet is a new flow,
/// so the two should match), and for Blixt the flows it could not track.
fn new_flows_finding(sys: System, s: &Samples) -> String {
    let created: u64 = s.created.iter().sum();
    let forwarded: u64 = s.forwarded.iter().sum();
    let what = if sys.is_blixt() {
        "Blixt's backend new_flows"
    } else {
        "DNAT rule hits"
    };
    let mut f = format!(
        "{FINDING}{}: new_flows: each round from an empty connection table; flows created per \
         round ({what}) {:?}, packets forwarded per round (sinks) {:?}",
        sys.name(),
        s.created,
        s.forwarded
    );
    if sys.is_blixt() {
        f += &format!(
            "; ct_insert_failed + snat_exhausted in the measured rounds: {}",
            s.ct_insert_failed
        );
        if s.ct_insert_failed * 100 > created {
            f += " — MORE THAN 1% of the new flows found no free conntrack entry or SNAT port: \
                  the rate is not a pure new-flow cost";
        }
    }
    if s.created.iter().any(|&c| c > NEW_FLOWS_FIT) {
        f += &format!(
            " — a round created more than {NEW_FLOWS_FIT} flows: it may have filled a table \
             (fewer `new_flows_frames` would keep it inside)"
        );
    }
    if created.abs_diff(forwarded) * 20 > forwarded {
        f += " — the flows created and the packets forwarded differ by more than 5%";
    }
    f
}

/// A generator of either [`Method`].
enum Gen {
    Live(Generator),
    Loop(LoopGenerator),
}

/// Which generator this kernel allows: one live frame from `bed`'s client.
fn detect_method(bed: &Bed) -> Result<Method> {
    let link = &bed.lab.client.link;
    let t = Template::new(
        Proto::Udp,
        link.peer_mac.0,
        link.lb_mac.0,
        bed.lab.vip4(1),
        systems::UDP_PORT,
    );
    let g = Generator::load(&t, 1)?;
    let ifindex = link.peer_ifindex;
    Ok(bed.lab.client.ns.run_in(|| Method::detect(&g, ifindex)))
}

/// Runs `g` against `bed` for `duration` (zero: `chunk` frames) on a thread in the client
/// namespace pinned to the generator's CPU: the live generator itself, or the loop's control
/// thread, above the loop's NAPI kthread so that it starts and stops on time.
fn generate(bed: &Bed, g: &mut Gen, duration: Duration, chunk: u32) -> Result<gen::Sent> {
    let ifindex = bed.lab.client.link.peer_ifindex;
    bed.lab.client.ns.run_in(|| match g {
        Gen::Live(g) => {
            gen::pin_current_thread(GEN_CPU)?;
            g.run(ifindex, duration, chunk)
        }
        Gen::Loop(g) => {
            gen::pin_current_thread_at(GEN_CPU, gen::RT_PRIORITY + 10)?;
            g.run(duration, chunk)
        }
    })
}

/// Fails unless every forwarding system's sinks got rewritten packets, and (with many flows)
/// every backend got some: the path measured is the path named.
fn check_paths(
    sc: Scenario,
    beds: &[Bed],
    samples: &BTreeMap<(&'static str, System), Samples>,
) -> Result<()> {
    for bed in beds {
        let Some(s) = samples.get(&(sc.id, bed.system)) else {
            continue;
        };
        let total: u64 = s.per_backend.iter().sum();
        if total == 0 {
            bail!(
                "{}: {}: no packet reached a backend rewritten to port {} (for rx_xdp_drop: \
                 no frame reached the lb at all)",
                bed.system.name(),
                sc.label,
                systems::BACKEND_PORT,
            );
        }
        if bed.system.forwards() && sc.flows != 1 && s.per_backend.contains(&0) {
            bail!(
                "{}: {}: a backend got nothing ({:?} packets per backend)",
                bed.system.name(),
                sc.label,
                s.per_backend
            );
        }
    }
    Ok(())
}

fn metrics(
    samples: &BTreeMap<(&'static str, System), Samples>,
    systems: &[System],
    machine: &Machine,
) -> Vec<Metric> {
    let mut out = Vec::new();
    for sc in SCENARIOS {
        let Some(blixt) = samples.get(&(sc.id, System::Blixt)) else {
            continue;
        };
        let peers: Vec<(&str, Summary)> = systems
            .iter()
            .filter(|s| s.forwards() && **s != System::Blixt)
            .filter_map(|s| {
                samples
                    .get(&(sc.id, *s))
                    .map(|v| (s.name(), Summary::of(&v.forwarded_pps)))
            })
            .collect();
        let note = format!(
            "{}: packets/s the lb node forwarded to the backends (64-byte frames, counted by \
             XDP sinks on 3 backends as rewritten to the backend port), LB on one CPU; \
             nftables/iptables DNAT + masquerade as kube-proxy sets them up",
            sc.label
        );
        let mut m = Metric::new(
            SUITE,
            &format!("forwarding.{}.pps", sc.id),
            "packets/s",
            Summary::of(&blixt.forwarded_pps),
            &peers,
            &note,
            machine,
        );
        if let Some(r) = m.ratios.get("blixt/nftables").copied() {
            match sc.id {
                "udp.flows10k" => m = m.with_goal(">= 3x nftables", r >= 3.0),
                "new_flows" => m = m.with_goal(">= 2x nftables", r >= 2.0),
                _ => {}
            }
        }
        out.push(m);
    }
    if let Some(b) = samples.get(&(GEN_SCENARIO, System::Blixt)) {
        let mut peers = Vec::new();
        if let Some(d) = samples.get(&(GEN_SCENARIO, System::RxDrop)) {
            peers.push(("rx_xdp_drop", Summary::of(&d.forwarded_pps)));
            peers.push(("offered_to_rx_xdp_drop", Summary::of(&d.offered_pps)));
        }
        out.push(Metric::new(
            SUITE,
            "forwarding.generator.pps",
            "packets/s",
            Summary::of(&b.offered_pps),
            &peers,
            "The generator: frames/s it handed to the veth (one CPU) while Blixt was under test \
             (UDP, 10k flows); rx_xdp_drop: frames/s an XDP_DROP program on the lb's receiving \
             veth end took from it (the lab's receive ceiling, nothing forwarded), \
             offered_to_rx_xdp_drop: the generator's rate in that run",
            machine,
        ));
    }
    out
}

/// What limits Blixt's new-flow rate (printed when the goal is not met). Only what the code
/// and the counters show: the cost was not re-profiled since the per-round table clearing.
const NEW_FLOWS_SHORTFALL: &str = "**Why new flows/s falls short of 2x nftables.** The \
    new-flows rounds start from empty tables and stay well inside them (the counters above: \
    flows created per round, `ct_insert_failed` in the measured rounds), so the rate is \
    Blixt's cost of creating a flow, not SNAT port or conntrack exhaustion (earlier runs \
    without the clearing measured mostly that). Per new flow `blixt_lb` does a conntrack \
    lookup that misses, picks a backend, inserts the reply entry under the first probed SNAT \
    port (`BPF_NOEXIST`; in an empty table the first port is free, one map operation) and \
    inserts the forward entry: two updates of the LRU hash `blixt_conntrack` (262,144 entries), \
    each taking a node from the LRU free lists, where an established packet does one lookup. \
    The older explanation (16 evicting `BPF_NOEXIST` probes per packet on a full port space) \
    no longer applies: `lb.bpf.c` looks probed ports up before inserting. Where the \
    remaining time goes needs a profile of this scenario (`perf record -a -g` on the LB's CPU \
    during the new-flows rounds).\n\n";

fn mpps(v: f64) -> String {
    format!("{:.2}", v / 1e6)
}

/// The report's section for suite 2, or `None` when the run has no metric of it.
pub fn section(r: &Results, plots: &PlotDir<'_>) -> Result<Option<Section>> {
    let rows: Vec<(&Scenario, &Metric)> = SCENARIOS
        .iter()
        .filter_map(|sc| {
            r.metric(&format!("forwarding.{}.pps", sc.id))
                .map(|m| (sc, m))
        })
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let mut peers: Vec<String> = rows
        .iter()
        .flat_map(|(_, m)| m.systems.keys().cloned())
        .filter(|k| k != "blixt")
        .collect();
    peers.sort();
    peers.dedup();
    let mut w = String::new();
    w += "## Suite 2: LB forwarding capacity (LB as the bottleneck)\n\n";
    w += "A packet generator of the project's own pushes 64-byte packets toward the VIP faster \
          than the lb node can forward them; three backends count and drop what arrives. \
          Packets/s is what reached the backends rewritten to the backend port, per second of \
          generator time. Higher is better.\n\n";
    let veth_loop = r.sizes.get("forwarding.generator_veth_loop").copied() == Some(1);
    w += "**Setup.** One namespace lab per system (client, lb node, 3 backends on veth pairs; \
          `blixt-lab`), all built first; rounds alternate between systems. ";
    if veth_loop {
        w += "*Generator*: this kernel refuses `BPF_F_TEST_XDP_LIVE_FRAMES` (the live-frame \
              generator's way), so the frames come from a loop: `bench_gen_loop.bpf.c`, an XDP \
              program on `gen1` of a veth pair `gen0 ↔ gen1` in the client namespace whose \
              NAPI runs as a kthread pinned to CPU 0. A control thread (CPU 0, above the \
              kthread's real-time priority) sends 128 frames into `gen1` once; for each frame \
              it receives the program writes the template frame with the next flow (source \
              port and, past 60,000 ports, source address from a counter, IPv4 and L4 \
              checksums fixed incrementally) and redirects it with `BPF_F_BROADCAST` to the \
              client's veth end — a copy into the lb's receive queue, as an `xdp_frame`, as a \
              live frame sent with `XDP_TX` would be — and to `gen0`, which hands it back to \
              `gen1`. So the frames keep the loop turning, each turn offers the lb one frame, \
              and the control thread stops it after the round's time (or frame count). ";
    } else {
        w += "*Generator*: `bench_gen.bpf.c` run by `BPF_PROG_TEST_RUN` with \
              `BPF_F_TEST_XDP_LIVE_FRAMES` on the client's veth end from a thread in the client \
              namespace pinned to CPU 0; it stamps the source port (and, past 60,000 ports, the \
              source address) from a counter with incrementally fixed IPv4 and L4 checksums \
              (live-frame pages are recycled without being re-initialised, so every varying \
              field is written from constants each time) and returns `XDP_TX`, which sends the \
              frame into the lb's receive queue. ";
    }
    w += "*LB*: the lb's receiving veth end runs its NAPI as a \
          kthread (`/sys/class/net/lb-client/threaded`) pinned to CPU 1, so everything the LB \
          does — receive, the forwarding decision, transmit into a backend veth, and the \
          backends' sink NAPI it schedules on its own CPU — runs on CPU 1. *Sinks*: \
          `bench_sink.bpf.c` (XDP, per-CPU counters, `XDP_DROP`) on each backend's veth end. \
          *Same for every system*: an XDP program on the lb's receiving veth end — Blixt's own \
          (`blixt_lb`, attached to every lb-side veth as the agent does), an `XDP_PASS` program \
          for the others (a veth accepts frames from a peer's `XDP_TX` only when it has one), \
          so all get the same NAPI receive path.\n\n";
    w += "**Systems.** *blixt*: the real dataplane programmed by the agent's reconciler (UDP and \
          TCP frontends on one VIP, 3 backends, full NAT), at XDP. *blixt_tc*: the same in TC \
          mode (`attach: tc`): `blixt_lb_tc` at TC ingress of every lb-side veth (tcx), behind \
          the same `XDP_PASS` program as the netfilter peers, so each frame becomes an skb \
          before the load balancer sees it. *nftables*: kube-proxy's nftables \
          mode in miniature: a `vmap` of services, `numgen random mod 3` to endpoint chains \
          that `dnat`, `masquerade fully-random` of marked packets (full NAT like Blixt), a \
          forward chain dropping `ct state invalid`. *iptables*: kube-proxy's iptables mode in \
          miniature (KUBE-SERVICES → KUBE-SVC with `statistic --mode random --probability` → \
          KUBE-SEP DNAT, KUBE-MARK-MASQ/KUBE-POSTROUTING masquerade, KUBE-FORWARD), through \
          the machine's `iptables` (nf_tables backend); *iptables_legacy* when the \
          legacy xtables backend works on this kernel. All rules live only in the lb \
          namespace. **Established TCP**: the backends are sinks and never answer, so no \
          system sees a SYN-ACK; state comes from an untimed warm-up of the same ACK stream \
          (Blixt tracks mid-stream flows, counted as `ct_miss_midstream`, as NEW until a backend answers and forwards them the same; \
          conntrack picks them up as ESTABLISHED with `nf_conntrack_tcp_loose`, the default). \
          A SYN first would not work for conntrack: a client ACK after a SYN without a SYN-ACK \
          is invalid and never NATed. **New flows**: UDP, every packet a new source \
          port/address, so packets/s forwarded is new flows/s: what creating a flow costs each \
          system (a conntrack miss, a backend pick, the NAT state inserted). To measure that \
          and not the exhaustion of a table, every system's connection table is emptied \
          before the scenario's warm-up and before each of its rounds, outside the timed \
          window (Blixt: every key of its conntrack map deleted; nftables/iptables: \
          `conntrack -F` in the lb namespace), and each warm-up and round is one generator \
          call of the same number of frames for every system (below), short enough that the \
          flows a round creates fit every table: Blixt's full-NAT port space (the agent's \
          default range 1024–32767: 31,744 ports per backend, about 95k flows to 3 backends), \
          its conntrack (the agent's default 262,144 entries, LRU, two per flow) and the \
          kernel's `nf_conntrack_max`. The counters below show the flows each round created \
          (Blixt's `new_flows`, the peers' DNAT rule hits: conntrack sends only a connection's \
          first packet through the nat chains) against the packets forwarded, and Blixt's \
          `ct_insert_failed` and `snat_exhausted` in the measured rounds (flows that found no entry, or no free port and were refused).\n\n";
    let sizes = |k: &str| {
        r.sizes
            .get(&format!("forwarding.{k}"))
            .copied()
            .unwrap_or(0)
    };
    w += &format!(
        "Sizes: {} rounds of {} ms per system and scenario after a {} ms warm-up; new flows: \
         {} rounds of {} frames offered each (one generator call, each from an empty table) \
         after a warm-up of as many.\n\n",
        sizes("rounds"),
        sizes("round_ms"),
        sizes("warmup_ms"),
        sizes("rounds"),
        sizes("new_flows_frames"),
    );

    w += "| traffic | blixt (Mpps) |";
    for p in &peers {
        w += &format!(" {p} (Mpps) |");
    }
    for p in &peers {
        w += &format!(" blixt/{p} |");
    }
    w += "\n|---|---|";
    for _ in 0..2 * peers.len() {
        w += "---|";
    }
    w += "\n";
    for (sc, m) in &rows {
        w += &format!(
            "| {} | {} ({}–{}) |",
            sc.label,
            mpps(m.median),
            mpps(m.min),
            mpps(m.max)
        );
        for p in &peers {
            w += &match m.system(p) {
                Some(v) => format!(" {} ({}–{}) |", mpps(v.median), mpps(v.min), mpps(v.max)),
                None => " — |".into(),
            };
        }
        for p in &peers {
            w += &match m.ratios.get(&format!("blixt/{p}")) {
                Some(x) => format!(" {x:.2}x |"),
                None => " — |".into(),
            };
        }
        w += "\n";
    }
    w += "\nMedian (min–max) over the rounds, million packets/s.\n\n";
    let tc_rows: Vec<(&Scenario, f64, f64, f64)> = rows
        .iter()
        .filter_map(|(sc, m)| {
            let tc = m.system("blixt_tc")?.median;
            (tc > 0.0).then(|| (*sc, m.median / tc, m.median, tc))
        })
        .collect();
    if !tc_rows.is_empty() {
        let parts: Vec<String> = tc_rows
            .iter()
            .map(|(sc, x, xdp, tc)| {
                format!(
                    "{}: {x:.2}x ({} against {} Mpps)",
                    sc.label,
                    mpps(*tc),
                    mpps(*xdp)
                )
            })
            .collect();
        w += &format!(
            "**TC mode against XDP mode**, per packet (XDP mode's packets/s over TC mode's): {}. \
             TC mode pays for the skb every frame becomes before TC ingress (built from the \
             frame, freed after the redirect), which XDP never allocates; suite 1 measures the \
             load balancer's own instructions alone.\n\n",
            parts.join("; ")
        );
    }
    if let Some(g) = r.metric("forwarding.generator.pps") {
        let blixt = r
            .metric("forwarding.udp.flows10k.pps")
            .map_or(0.0, |m| m.median);
        w += &format!(
            "{}: it offered {} Mpps (median) while Blixt was under test (UDP, 10k flows) and \
             Blixt forwarded {}",
            if g.median > 1.1 * blixt {
                "**The generator outruns the LB**"
            } else {
                "**The generator does not clearly outrun the LB** (Blixt forwarded within 10% \
                 of what it offered, so Blixt's figure may be the generator's)"
            },
            mpps(g.median),
            mpps(blixt)
        );
        if let (Some(d), Some(o)) = (g.system("rx_xdp_drop"), g.system("offered_to_rx_xdp_drop")) {
            w += &format!(
                "; an `XDP_DROP` program on the lb's receiving veth end (nothing forwarded) took \
                 {} Mpps of the {} Mpps offered — {}",
                mpps(d.median),
                mpps(o.median),
                if d.median >= 0.95 * o.median {
                    "nearly all of it: there the generator is the limit, and the ceiling of this \
                     lab's receive path on one CPU lies above it"
                } else {
                    "the ceiling of this lab's receive path on one CPU"
                }
            );
        }
        w += ".\n\n";
    }

    let file = "forwarding_pps.png";
    let colors = [BLUE, ORANGE, RED, GREEN, GREY];
    let mut series = vec![Series {
        label: "blixt".into(),
        color: colors[0],
        values: rows
            .iter()
            .map(|(_, m)| Some((m.median / 1e6, m.min / 1e6, m.max / 1e6)))
            .collect(),
    }];
    for (i, p) in peers.iter().enumerate() {
        series.push(Series {
            label: p.clone(),
            color: colors[(i + 1) % colors.len()],
            values: rows
                .iter()
                .map(|(_, m)| {
                    m.system(p)
                        .map(|v| (v.median / 1e6, v.min / 1e6, v.max / 1e6))
                })
                .collect(),
        });
    }
    BarChart {
        title: "Suite 2: packets/s forwarded by the lb node (one CPU), higher is better".into(),
        x_label: "million packets/s (median, whiskers min–max)".into(),
        categories: rows.iter().map(|(sc, _)| sc.label.to_string()).collect(),
        series,
        markers: Vec::new(),
        decimals: 2,
        legend: plotters::prelude::SeriesLabelPosition::LowerRight,
    }
    .draw(&plots.dir.join(file))?;
    w += &format!(
        "![packets/s forwarded per system]({})\n\n",
        plots.link(file)
    );

    let proofs: Vec<&String> = r
        .findings
        .iter()
        .filter(|f| f.starts_with(FINDING))
        .collect();
    if !proofs.is_empty() {
        w += "**The counters prove the path** (totals over the whole run):\n\n";
        for f in proofs {
            w += &format!("- {}\n", f.trim_start_matches(FINDING));
        }
        w += "\n";
    }

    let new_ratio = r
        .metric("forwarding.new_flows.pps")
        .and_then(|m| m.ratios.get("blixt/nftables").copied());
    if new_ratio.is_some_and(|x| x < 2.0) {
        w += NEW_FLOWS_SHORTFALL;
    }

    let mut goals = Vec::new();
    if let Some((sc, x, xdp, tc)) = tc_rows.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
        goals.push(GoalRow {
            goal: format!(
                "TC mode ≤ {}x XDP mode per packet, forwarding (every traffic pattern)",
                crate::packet_cost::GOAL_TC_OVER_XDP
            ),
            measured: format!(
                "worst: {}, {x:.2}x ({} against {} Mpps)",
                sc.label,
                mpps(*tc),
                mpps(*xdp)
            ),
            met: Some(
                tc_rows
                    .iter()
                    .all(|r| r.1 <= crate::packet_cost::GOAL_TC_OVER_XDP),
            ),
        });
    }
    for (id, text, want) in [
        (
            "udp.flows10k",
            "LB forwarding capacity ≥ 3x nftables (UDP, 10k flows)",
            3.0,
        ),
        ("new_flows", "new flows/s ≥ 2x nftables", 2.0),
    ] {
        let m = r.metric(&format!("forwarding.{id}.pps"));
        let ratio = m.and_then(|m| m.ratios.get("blixt/nftables").copied());
        goals.push(GoalRow {
            goal: text.into(),
            measured: match (m, ratio) {
                (Some(m), Some(x)) => format!(
                    "{x:.2}x ({} vs {} Mpps)",
                    mpps(m.median),
                    mpps(m.system("nftables").map_or(0.0, |v| v.median))
                ),
                _ => "not measured".into(),
            },
            met: ratio.map(|x| x >= want),
        });
    }
    Ok(Some(Section { markdown: w, goals }))
}
