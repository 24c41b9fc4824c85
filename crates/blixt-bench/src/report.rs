//! docs/benchmarks.md and its plots, generated from a [`Results`] alone (so `--report-only`
//! can redo them from results.json).

use std::fmt::Write as _;
use std::path::{Path as FsPath, PathBuf};

use anyhow::{Context, Result};

use crate::packet_cost::{
    self, Path, GOAL_ESTABLISHED_ABOVE_FLOOR, GOAL_NEW_FLOW, GOAL_TC_OVER_XDP,
};
use plotters::chart::SeriesLabelPosition;

use crate::plot::{BarChart, Marker, Series, StackedChart, BLUE, GREY, ORANGE, PALETTE, RED};
use crate::profile::{self, CATEGORIES};
use crate::results::{Metric, Results, Value, BLIXT};
use crate::suite::{PlotDir, Section, Suite};
use crate::EXTRA_SUITES;

const PLOT_HOT: &str = "packet_cost_hot_loop.png";
const PLOT_ABOVE_FLOOR: &str = "packet_cost_above_floor.png";
const PLOT_MAGLEV: &str = "maglev_disruption.png";
const PLOT_PROFILE: &str = "packet_cost_profile.png";
const PLOT_TC: &str = "packet_cost_tc_vs_xdp.png";

/// Blixt's ns per packet on `path` by profile category: the load balancer wrapper's time in
/// each category minus the empty wrapper's (which removes the wrapper's own share).
pub fn breakdown(r: &Results, path: &str) -> Option<Vec<(&'static str, f64)>> {
    breakdown_of(r, path, BLIXT, "empty")
}

/// TC mode's [`breakdown`]: `blixt_lb_tc`'s wrapper minus the empty TC wrapper.
pub fn breakdown_tc(r: &Results, path: &str) -> Option<Vec<(&'static str, f64)>> {
    breakdown_of(r, path, "tc_blixt", "tc_empty")
}

fn breakdown_of(
    r: &Results,
    path: &str,
    lb: &str,
    empty: &str,
) -> Option<Vec<(&'static str, f64)>> {
    let lb = r
        .profiles
        .iter()
        .find(|p| p.path == path && p.target == lb)?;
    let em = r
        .profiles
        .iter()
        .find(|p| p.path == path && p.target == empty)?;
    Some(
        CATEGORIES
            .iter()
            .filter(|c| **c != profile::CAT_WRAPPER)
            .map(|c| (*c, (lb.ns(c) - em.ns(c)).max(0.0)))
            .collect(),
    )
}

fn profiled_paths(r: &Results) -> Vec<(Path, Vec<(&'static str, f64)>)> {
    Path::ALL
        .into_iter()
        .filter_map(|p| breakdown(r, p.id()).map(|b| (p, b)))
        .collect()
}

/// Writes the report to `doc` and its plots into `plots` (linked relative to the report).
pub fn write(r: &Results, doc: &FsPath, plots: &FsPath) -> Result<()> {
    std::fs::create_dir_all(plots).with_context(|| format!("creating {}", plots.display()))?;
    let drawn = draw_plots(r, plots)?;
    let doc_dir = doc.parent().unwrap_or(FsPath::new("."));
    let rel = |p: &PathBuf| -> String {
        let plots_rel = relative(plots, doc_dir);
        format!(
            "{}/{}",
            plots_rel.trim_end_matches('/'),
            p.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        )
    };
    let links: Vec<(String, String)> = drawn.iter().map(|(k, p)| (k.clone(), rel(p))).collect();
    let plots_rel = relative(plots, doc_dir);
    let plot_dir = PlotDir {
        dir: plots,
        link_prefix: &plots_rel,
    };
    let mut extras = Vec::new();
    for suite in &EXTRA_SUITES {
        let section = (suite.section)(r, &plot_dir)
            .with_context(|| format!("report of suite {}", suite.number))?;
        extras.push((suite, section));
    }
    let md = markdown(r, &links, &extras);
    if let Some(d) = doc.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(doc, md).with_context(|| format!("writing {}", doc.display()))
}

/// `target` relative to `from` when both are relative paths under the same root (the usual
/// docs/bench from docs); otherwise `target` as given.
fn relative(target: &FsPath, from: &FsPath) -> String {
    match target.strip_prefix(from) {
        Ok(p) if !from.as_os_str().is_empty() => p.to_string_lossy().into_owned(),
        _ => target.to_string_lossy().into_owned(),
    }
}

fn med(m: Option<&Metric>, system: &str) -> Option<Value> {
    m.and_then(|m| m.system(system)).copied()
}

fn ns(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn ns_range(v: &Value) -> String {
    if v.runs > 1 {
        format!("{} ({}–{})", ns(v.median), ns(v.min), ns(v.max))
    } else {
        ns(v.median)
    }
}

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

fn yes_no(met: bool) -> &'static str {
    if met {
        "**yes**"
    } else {
        "**no**"
    }
}

/// Name of the TC-against-XDP metric of `p` (hot loop).
fn tc_name(p: &Path) -> String {
    format!("{}.tc.hot_loop.ns_per_packet", p.id())
}

/// `(path, TC / XDP)` of every path with TC figures, and whether all are within the goal.
fn tc_ratios(r: &Results) -> (Vec<(Path, f64)>, bool) {
    let rows: Vec<(Path, f64)> = Path::ALL
        .into_iter()
        .filter_map(|p| {
            let m = r.metric(&tc_name(&p))?;
            m.ratios.get("blixt/xdp").map(|x| (p, *x))
        })
        .collect();
    let met = rows.iter().all(|(_, x)| *x <= GOAL_TC_OVER_XDP);
    (rows, met)
}

fn paths_measured(r: &Results) -> Vec<Path> {
    Path::ALL
        .into_iter()
        .filter(|p| {
            r.metric(&format!("{}.hot_loop.ns_per_packet", p.id()))
                .is_some()
        })
        .collect()
}

fn draw_plots(r: &Results, dir: &FsPath) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let paths = paths_measured(r);
    if !paths.is_empty() {
        let get = |p: &Path, name: &str, sys: &str| {
            med(r.metric(&format!("{}.{name}", p.id())), sys).map(|v| (v.median, v.min, v.max))
        };
        let cats: Vec<String> = paths.iter().map(|p| p.short().to_string()).collect();
        let chart = BarChart {
            title: "Per-packet cost, hot loop (ns above an empty program; lower is better)".into(),
            x_label: "ns per packet (bar: median of rounds; whisker: min to max)".into(),
            categories: cats.clone(),
            series: vec![
                Series {
                    label: "floor: parse only, then XDP_TX".into(),
                    color: GREY,
                    values: paths
                        .iter()
                        .map(|p| get(p, "hot_loop.ns_per_packet", "floor"))
                        .collect(),
                },
                Series {
                    label: "Blixt load balancer".into(),
                    color: BLUE,
                    values: paths
                        .iter()
                        .map(|p| get(p, "hot_loop.ns_per_packet", BLIXT))
                        .collect(),
                },
            ],
            markers: vec![],
            decimals: 0,
            legend: SeriesLabelPosition::UpperRight,
        };
        out.push(("hot".into(), chart.draw(&dir.join(PLOT_HOT))?));
        let chart = BarChart {
            title: "Blixt's cost above the parse-only floor (lower is better)".into(),
            x_label: "ns per packet above the floor, measured in the same run".into(),
            categories: cats,
            series: vec![
                Series {
                    label: "hot loop (restoring wrapper)".into(),
                    color: BLUE,
                    values: paths
                        .iter()
                        .map(|p| get(p, "hot_loop.above_floor", BLIXT))
                        .collect(),
                },
                Series {
                    label: "per call (repeat = 1, syscall each)".into(),
                    color: ORANGE,
                    values: paths
                        .iter()
                        .map(|p| get(p, "per_call.above_floor", BLIXT))
                        .collect(),
                },
            ],
            markers: vec![Marker {
                label: format!(
                    "goal for established TCP: {GOAL_ESTABLISHED_ABOVE_FLOOR:.0} ns (hot loop)"
                ),
                x: GOAL_ESTABLISHED_ABOVE_FLOOR,
                color: RED,
            }],
            decimals: 0,
            legend: SeriesLabelPosition::UpperRight,
        };
        out.push((
            "above_floor".into(),
            chart.draw(&dir.join(PLOT_ABOVE_FLOOR))?,
        ));
        let tc_paths: Vec<&Path> = paths
            .iter()
            .filter(|p| r.metric(&tc_name(p)).is_some())
            .collect();
        if !tc_paths.is_empty() {
            let chart = BarChart {
                title: "XDP mode against TC mode, per packet, hot loop (lower is better)".into(),
                x_label: "ns per packet above an empty program of the same hook".into(),
                categories: tc_paths.iter().map(|p| p.short().to_string()).collect(),
                series: vec![
                    Series {
                        label: "XDP mode (unresolved next hop: XDP pass + TC pass)".into(),
                        color: BLUE,
                        values: tc_paths
                            .iter()
                            .map(|p| get(p, "tc.hot_loop.ns_per_packet", "xdp"))
                            .collect(),
                    },
                    Series {
                        label: "TC mode (blixt_lb_tc)".into(),
                        color: ORANGE,
                        values: tc_paths
                            .iter()
                            .map(|p| get(p, "tc.hot_loop.ns_per_packet", BLIXT))
                            .collect(),
                    },
                ],
                markers: vec![],
                decimals: 0,
                legend: SeriesLabelPosition::UpperRight,
            };
            out.push(("tc".into(), chart.draw(&dir.join(PLOT_TC))?));
        }
    }
    let prof = profiled_paths(r);
    if !prof.is_empty() {
        let chart = StackedChart {
            title: "Where Blixt's time goes per packet (perf, hot loop, wrapper removed)".into(),
            x_label: "ns per packet, by what the program was doing when sampled".into(),
            categories: prof.iter().map(|(p, _)| p.short().to_string()).collect(),
            segments: prof[0]
                .1
                .iter()
                .enumerate()
                .map(|(i, (c, _))| {
                    (
                        (*c).to_string(),
                        PALETTE[i % PALETTE.len()],
                        prof.iter().map(|(_, b)| b[i].1).collect(),
                    )
                })
                .collect(),
        };
        out.push(("profile".into(), chart.draw(&dir.join(PLOT_PROFILE))?));
    }
    let ns_maglev: Vec<usize> = [3usize, 10, 100]
        .into_iter()
        .filter(|n| r.metric(&format!("maglev.leave.n{n}")).is_some())
        .collect();
    if !ns_maglev.is_empty() {
        let mut cats = Vec::new();
        let mut ideal = Vec::new();
        let mut measured = Vec::new();
        for n in &ns_maglev {
            for (what, label) in [
                ("leave", format!("N = {n}: one leaves")),
                ("join", format!("N = {n}: one joins")),
            ] {
                let m = r.metric(&format!("maglev.{what}.n{n}"));
                cats.push(label);
                ideal.push(
                    med(m, "ideal").map(|v| (v.median * 100.0, v.min * 100.0, v.max * 100.0)),
                );
                measured
                    .push(med(m, BLIXT).map(|v| (v.median * 100.0, v.min * 100.0, v.max * 100.0)));
            }
        }
        let chart = BarChart {
            title: "Maglev: flows that change backend when the backend set changes".into(),
            x_label: "% of flows moved (bar: median; whisker: best to worst choice of backend)"
                .into(),
            categories: cats,
            series: vec![
                Series {
                    label: "ideal (only the leaving / joining backend's share)".into(),
                    color: GREY,
                    values: ideal,
                },
                Series {
                    label: "Blixt (blixt_core::maglev, 16381 slots)".into(),
                    color: BLUE,
                    values: measured,
                },
            ],
            markers: vec![],
            decimals: 2,
            legend: SeriesLabelPosition::LowerRight,
        };
        out.push(("maglev".into(), chart.draw(&dir.join(PLOT_MAGLEV))?));
    }
    Ok(out)
}

fn link<'a>(links: &'a [(String, String)], key: &str) -> Option<&'a str> {
    links
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A suite after 1 and 5 and its report section (`None`: not measured in this run).
type Extra<'a> = (&'a Suite, Option<Section>);

fn markdown(r: &Results, links: &[(String, String)], extras: &[Extra<'_>]) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "<!-- Generated by `blixt-bench` (`make bench`) from target/bench/results.json. Do not \
         edit by hand: change crates/blixt-bench/src/report.rs and rerun \
         `blixt-bench --report-only`. -->\n"
    );
    let _ = writeln!(
        w,
        "Blixt's claim is speed; this page holds the measurements. Every figure is the median \
         of several rounds taken in **one run on one machine**, next to its peers measured the \
         same way in the same run, because the machines this project runs on are shared and \
         noisy: compare the ratios, and read absolute numbers together with the machine below. \
         Only numbers this run measured appear here; what this run did not measure is listed at the \
         end.\n"
    );
    let _ = writeln!(
        w,
        "Reproduce: `make bench` (as root; installs what it needs) or `make bench QUICK=1` \
         (same suites and files, smaller sizes, well under 5 minutes). Both run \
         `blixt-bench`, which writes `target/bench/results.json` and regenerates this page and \
         the plots in `docs/bench/`.\n"
    );

    machine_section(w, r);
    goals_section(w, r, extras);
    if !paths_measured(r).is_empty() {
        packet_cost_section(w, r, links);
    }
    extra_sections(w, extras, 2..=4);
    if r.metric("maglev.leave.n3").is_some() {
        maglev_section(w, r, links);
    }
    extra_sections(w, extras, 6..=6);
    not_measured_section(w, extras);
    files_section(w);
    s
}

/// The sections of the extra suites numbered within `range`, in order.
fn extra_sections(w: &mut String, extras: &[Extra<'_>], range: std::ops::RangeInclusive<u32>) {
    for (suite, section) in extras {
        if let Some(sec) = section.as_ref().filter(|_| range.contains(&suite.number)) {
            w.push_str(sec.markdown.trim_end());
            w.push_str("\n\n");
        }
    }
}

fn machine_section(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## Machine and run\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| cores | {} |", r.machine.cores);
    let _ = writeln!(w, "| kernel | {} |", r.machine.kernel);
    let _ = writeln!(w, "| CPU | {} |", r.machine.cpu);
    let _ = writeln!(
        w,
        "| mode | {} (`blixt-bench{}`) |",
        r.mode,
        match r.mode.as_str() {
            "quick" => " --quick",
            "tiny" => " --tiny",
            _ => "",
        }
    );
    let _ = writeln!(w, "| run took | {:.0} s |", r.elapsed_s);
    let _ = writeln!(w, "| finished | {} |", utc(r.finished_unix));
    for e in &r.earlier {
        let suites: Vec<String> = e.suites.iter().map(u32::to_string).collect();
        let _ = writeln!(
            w,
            "| suites {} from | an earlier {} run, finished {} (kernel {}) |",
            suites.join(", "),
            e.mode,
            utc(e.finished_unix),
            e.kernel
        );
    }
    let sizes: Vec<String> = r.sizes.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    let _ = writeln!(w, "| sizes | {} |", sizes.join(", "));
    let _ = writeln!(
        w,
        "\nThe machine is shared (other builds run at the same time), so absolute numbers move \
         from run to run by more than the differences between rounds of one run suggest; the \
         ranges in the tables are min–max over the rounds of this run.\n"
    );
}

/// `YYYY-MM-DD HH:MM UTC` without a date library (civil-from-days, proleptic Gregorian).
fn utc(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

fn goals_section(w: &mut String, r: &Results, extras: &[Extra<'_>]) {
    let _ = writeln!(w, "## Goals (issue 6)\n");
    let _ = writeln!(w, "| goal | measured here | met |\n|---|---|---|");
    if let Some(m) = r.metric("tcp_established.hot_loop.above_floor") {
        let _ = writeln!(
            w,
            "| established TCP packet ≤ {GOAL_ESTABLISHED_ABOVE_FLOOR:.0} ns above the floor \
             (hot loop) | {} ns | {} |",
            ns_range(&m.systems[BLIXT]),
            yes_no(m.goal.as_ref().is_some_and(|g| g.met))
        );
    }
    if let Some(m) = r.metric("tcp_new_flow.hot_loop.ns_per_packet") {
        let _ = writeln!(
            w,
            "| new TCP flow ≤ {GOAL_NEW_FLOW:.0} ns with an empty conntrack (hot loop, above an \
             empty program) | {} ns | {} |",
            ns_range(&m.systems[BLIXT]),
            yes_no(m.goal.as_ref().is_some_and(|g| g.met))
        );
    }
    let (tc, tc_met) = tc_ratios(r);
    if let Some((p, x)) = tc.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
        let m = r.metric(&tc_name(p));
        let over: Vec<String> = tc
            .iter()
            .filter(|(_, x)| *x > GOAL_TC_OVER_XDP)
            .map(|(p, x)| format!("{} {x:.2}x", p.short()))
            .collect();
        let _ = writeln!(
            w,
            "| TC mode ≤ {GOAL_TC_OVER_XDP}x XDP mode per packet (hot loop, above an empty \
             program of each hook; every path) | worst: {} {x:.2}x ({} against {} ns){} | {} |",
            p.short(),
            m.map_or("—".into(), |m| ns(m.median)),
            med(m, "xdp").map_or("—".into(), |v| ns(v.median)),
            if over.is_empty() {
                String::new()
            } else {
                format!("; over {GOAL_TC_OVER_XDP}x: {}", over.join(", "))
            },
            yes_no(tc_met)
        );
    }
    let mut worst = Vec::new();
    let mut all_met = true;
    for n in [3, 10, 100] {
        for what in ["leave", "join"] {
            if let Some(m) = r.metric(&format!("maglev.{what}.n{n}")) {
                all_met &= m.goal.as_ref().is_some_and(|g| g.met);
                if what == "leave" {
                    worst.push(format!(
                        "N={n}: {} (bound {})",
                        pct(m.max),
                        pct(1.0 / n as f64 + 0.02)
                    ));
                }
            }
        }
    }
    if !worst.is_empty() {
        let _ = writeln!(
            w,
            "| Maglev flows moved ≤ 1/N + 2% when one of N backends leaves or joins | worst \
             leave: {} | {} |",
            worst.join("; "),
            yes_no(all_met)
        );
    }
    for (suite, section) in extras {
        match section {
            Some(sec) if !sec.goals.is_empty() => {
                for g in &sec.goals {
                    let met = g.met.map_or("undecided", yes_no);
                    let _ = writeln!(w, "| {} | {} | {met} |", g.goal, g.measured);
                }
            }
            _ => {
                let _ = writeln!(
                    w,
                    "| {} (suite {}) | not yet measured | — |",
                    suite.goal, suite.number
                );
            }
        }
    }
    let _ = writeln!(w);
}

fn packet_cost_section(w: &mut String, r: &Results, links: &[(String, String)]) {
    let paths = paths_measured(r);
    let size = |k: &str| {
        r.sizes
            .get(&format!("packet_cost.{k}"))
            .copied()
            .unwrap_or(0)
    };
    let _ = writeln!(w, "## Suite 1: per-packet cost in the kernel\n");
    let _ = writeln!(w, "### Method\n");
    let _ = writeln!(
        w,
        "The load balancer (`blixt_lb`, lb.bpf.c) runs under `BPF_PROG_TEST_RUN` in a \
         network namespace of its own (`bn0` facing clients, `bn1` facing {} backends, \
         permanent neighbour entries), programmed by the agent's reconciler exactly as in \
         production: TCP and UDP frontends on an IPv4 and an IPv6 VIP, Maglev rings of 16381 \
         slots, full-NAT to the node's address with the default source-port range \
         (1024–32767), conntrack of {} entries. The test run's context names the ingress \
         interface, so the FIB lookup succeeds and forwarded packets end in `XDP_REDIRECT`, \
         as on a real interface.\n",
        size("backends"),
        size("conntrack_entries")
    );
    let _ = writeln!(
        w,
        "Each path is measured against two peers, on the same packets, interleaved round by \
         round ({} rounds, the order rotated each round):\n\n\
         - **empty**: a program that returns `XDP_PASS` (bench_empty.bpf.c): the fixed cost of \
         a run;\n\
         - **floor**: a program that parses Ethernet / VLAN / IPv4 (options) / IPv6 (extension \
         headers) / TCP / UDP with the load balancer's own `parse_packet()` and returns \
         `XDP_TX` (bench_floor.bpf.c): what any XDP load balancer must spend to read the \
         headers. *Above the floor* is therefore Blixt's own work: lookups, backend choice, \
         conntrack, rewrite, FIB lookup and redirect.\n",
        size("rounds")
    );
    let _ = writeln!(
        w,
        "Two methods, both reported:\n\n\
         - **hot loop**: one test run with a repeat count ({} iterations on paths with fixed \
         flows, {} on new-flow paths), timed by the kernel itself (`bpf_test_run` pauses its \
         timer while it reschedules, so other processes on the shared cores mostly stay out of \
         the figure). The programs run inside the wrappers described below; Blixt's figure is \
         `wrapped(Blixt) − wrapped(empty)` and the floor's `wrapped(floor) − wrapped(empty)`, so \
         the wrapper's own cost cancels out; differences are taken per round, then the median.\n\
         - **per call**: repeat = 1, {} separate syscalls per round ({} on new-flow paths), on \
         the real attached program (`blixt_lb` as the dataplane loads it, not the wrapper), \
         timed from user space around chunks of 50 calls, the programs (of both hooks) taking turns \
         chunk by chunk; a round's figure is its median chunk (a chunk that shared its core \
         with another process's burst is an outlier, not a slower program). It includes the \
         syscall and the test run's set-up (copying the packet in and out, looking up the \
         ingress device), which is why the empty program already costs over a microsecond, \
         and it is far noisier than the hot loop on a shared machine. The kernel's own \
         per-call run time is listed too.\n",
        size("hot_repeat"),
        size("new_flow_repeat"),
        size("calls"),
        size("new_flow_calls")
    );
    let _ = writeln!(
        w,
        "**TC mode** (`attach: tc`: the same load balancer, `blixt_lb_tc`, as a TC ingress \
         classifier) is measured beside XDP on every path, the same two ways, on the same \
         dataplane and maps, interleaved in the same rounds: a TC wrapper (below) around \
         `blixt_lb_tc` against an empty TC wrapper in the hot loop, and per call the real \
         `blixt_lb_tc` (lb.o loaded a second time on the dataplane's pinned maps) against an \
         empty classifier. The test run's skb sits on the ingress device (`__sk_buff.ifindex`), \
         so the FIB lookups are the same and forwarded packets end in `TC_ACT_REDIRECT`. TC \
         mode's figure is `wrapped_tc(blixt_lb_tc) − wrapped_tc(empty)`, comparable with XDP's \
         `wrapped(blixt_lb) − wrapped(empty)`: each empty wrapper does its hook's restore and \
         stamp. Per call, building the skb is part of every TC call (the empty classifier's \
         too).\n\n\
         **Unresolved next hop**: the *unresolved* paths go to a frontend whose backends sit \
         behind a gateway with no neighbour entry, so the FIB lookup answers `NO_NEIGH`. In XDP \
         mode without metadata (`neigh_via_meta` = 0, what this kernel allows; the benchmark \
         sets it on every kernel) `blixt_lb` passes such a packet up untouched and \
         `blixt_lb_tc` on TC ingress forwards it with `bpf_redirect_neigh`: two passes, both \
         measured — the TC pass on exactly the packets (flows) the XDP pass handed up — and \
         XDP mode's figure is their sum. What the kernel does between the two hooks (building \
         the skb, the receive path up to TC ingress) is not in a test run, so that sum is a \
         lower bound. In TC mode it is one pass.\n"
    );
    let _ = writeln!(w, "### The trap, and how the wrapper avoids it\n");
    let _ = writeln!(
        w,
        "With a repeat count the kernel runs the program again and again on **one** packet \
         buffer and never resets it. After the first iteration rewrites a packet to a VIP \
         (full NAT: the node to a backend), every later iteration sees a packet that is no \
         longer addressed to a VIP, and the figure silently measures pass-through instead of \
         the path named.\n\n\
         `bench_wrap.bpf.c` compiles the load balancer into itself — `#include \"lb.bpf.c\"` \
         after a `static __always_inline` declaration of `blixt_lb` (a later definition without \
         a storage class keeps the earlier internal linkage, C11 6.2.2) and with `SEC()` \
         redefined without `used`, so `blixt_lb` becomes an inlined static function and no \
         second entry point exists; lb.bpf.c is not modified. The wrapper shares every map \
         with the dataplane (loaded from the dataplane's pins), and on every iteration:\n\n\
         1. restores the packet's length (undoing a tail cut, as resets do) and bytes \
         (`bpf_xdp_store_bytes` from the copy kept in its `bench_state` map);\n\
         2. on new-flow paths, stamps the iteration number into the source port and the last \
         two bytes of the source address, so **every iteration is a flow never seen before** \
         (with a fixed packet, iteration 2 would hit the conntrack entry iteration 1 created \
         and measure the established path; deleting entries inside the loop would add the \
         delete's cost to the figure instead);\n\
         3. runs the program under test (load balancer, floor, or nothing);\n\
         4. counts the verdict.\n\n\
         Steps 1, 2 and 4 are identical in the three XDP wrappers, so they cancel in the \
         differences. The TC wrappers (`SEC(\"classifier\")`, `blixt_lb_tc` compiled in the \
         same way) do the same on the skb: `bpf_skb_change_tail` and `bpf_skb_store_bytes` \
         restore it, the same stamp, then `blixt_lb_tc` whole (its pull of the headers into \
         the linear part, `lb_main(skb, HOOK_TC)`, `tc_verdict()`) or nothing. Every run is checked, not just timed: all iterations returned the path's \
         verdict; the dataplane's counters moved by exactly one packet (and one new flow on \
         new-flow paths) per iteration, with no drop or error counter moving; conntrack grew \
         by exactly two entries per new flow; the output of the wrapped load balancer's last \
         iteration is byte-for-byte what the real `blixt_lb` produces for the same input, with \
         valid checksums, addressed to a backend (or to the client for replies). New-flow \
         paths with a nearly empty conntrack start each run from an empty table (it holds at \
         most {} entries by the end of a run); the full-table path first fills conntrack to \
         capacity with real flows, so every measured new flow evicts.\n",
        2 * size("new_flow_repeat")
    );

    let _ = writeln!(w, "### Hot loop\n");
    let _ = writeln!(
        w,
        "ns per packet above an empty program, median of rounds (min–max):\n"
    );
    let _ = writeln!(
        w,
        "| path | Blixt | floor | Blixt above floor | Blixt / floor | wrapper's own cost |\n\
         |---|---|---|---|---|---|"
    );
    for p in &paths {
        let m = r.metric(&format!("{}.hot_loop.ns_per_packet", p.id()));
        let af = r.metric(&format!("{}.hot_loop.above_floor", p.id()));
        let wr = r.metric(&format!("{}.hot_loop.wrapped", p.id()));
        let (Some(m), Some(af), Some(wr)) = (m, af, wr) else {
            continue;
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {:.2} | {} |",
            p.title(),
            ns_range(&m.systems[BLIXT]),
            ns_range(&m.systems["floor"]),
            ns_range(&af.systems[BLIXT]),
            m.ratios.get("blixt/floor").copied().unwrap_or(f64::NAN),
            ns(wr.systems["empty"].median),
        );
    }
    if let Some(l) = link(links, "hot") {
        let _ = writeln!(w, "\n![Per-packet cost, hot loop]({l})\n");
    }
    if let Some(l) = link(links, "above_floor") {
        let _ = writeln!(w, "![Cost above the floor, both methods]({l})\n");
    }

    let _ = writeln!(w, "### Per call\n");
    let _ = writeln!(
        w,
        "ns per call, wall clock in user space (syscall included), median of rounds \
         (min–max); the last column is the kernel's own run time for Blixt's calls:\n"
    );
    let _ = writeln!(
        w,
        "| path | Blixt | floor | empty | Blixt above empty | Blixt above floor | Blixt, \
         kernel-timed |\n|---|---|---|---|---|---|---|"
    );
    for p in &paths {
        let c = r.metric(&format!("{}.per_call.ns_per_call", p.id()));
        let ae = r.metric(&format!("{}.per_call.above_empty", p.id()));
        let af = r.metric(&format!("{}.per_call.above_floor", p.id()));
        let k = r.metric(&format!("{}.per_call.kernel", p.id()));
        let (Some(c), Some(ae), Some(af), Some(k)) = (c, ae, af, k) else {
            continue;
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} |",
            p.title(),
            ns_range(&c.systems[BLIXT]),
            ns_range(&c.systems["floor"]),
            ns_range(&c.systems["empty"]),
            ns_range(&ae.systems[BLIXT]),
            ns_range(&af.systems[BLIXT]),
            ns_range(&k.systems[BLIXT]),
        );
    }
    let _ = writeln!(w);

    tc_section(w, r, links);
    profile_section(w, r, links);
    tc_profile_section(w, r);
    new_flow_paragraph(w, r);
    map_cost_paragraph(w, r);
    programs_section(w, r);
    findings_section(w, r);
}

fn tc_section(w: &mut String, r: &Results, links: &[(String, String)]) {
    let (ratios, met) = tc_ratios(r);
    if ratios.is_empty() {
        return;
    }
    let _ = writeln!(w, "### TC mode beside XDP mode\n");
    let _ = writeln!(
        w,
        "ns per packet above an empty program of the same hook, median of rounds (min–max). \
         *XDP mode* is `blixt_lb`; on the unresolved paths it is XDP's pass plus the TC pass \
         that forwards what XDP passed up (shown in brackets). *TC mode* is `blixt_lb_tc` \
         alone. The goal: TC mode at most {GOAL_TC_OVER_XDP}x XDP mode's cost per packet.\n"
    );
    let _ = writeln!(
        w,
        "| path | XDP mode | TC mode | TC / XDP | per call: XDP mode | per call: TC mode | TC \
         wrapper's own cost |\n|---|---|---|---|---|---|---|"
    );
    for (p, x) in &ratios {
        let m = r.metric(&tc_name(p));
        let two = r.metric(&format!("{}.xdp_then_tc.hot_loop.ns_per_packet", p.id()));
        let pc = r.metric(&format!("{}.tc.per_call.above_empty", p.id()));
        let wr = r.metric(&format!("{}.tc.hot_loop.wrapped", p.id()));
        let (Some(m), Some(xdp)) = (m, med(m, "xdp")) else {
            continue;
        };
        let xdp_cell = match (med(two, "xdp_pass"), med(two, "tc_pass")) {
            (Some(a), Some(b)) => format!(
                "{} (XDP {} + TC {})",
                ns_range(&xdp),
                ns(a.median),
                ns(b.median)
            ),
            _ => ns_range(&xdp),
        };
        let _ = writeln!(
            w,
            "| {} | {xdp_cell} | {} | {x:.2} | {} | {} | {} |",
            p.title(),
            ns_range(&m.systems[BLIXT]),
            med(pc, "xdp").map_or("—".into(), |v| ns_range(&v)),
            pc.map_or("—".into(), |m| ns_range(&m.systems[BLIXT])),
            wr.and_then(|m| m.system("empty"))
                .map_or("—".into(), |v| ns(v.median)),
        );
    }
    let over: Vec<String> = ratios
        .iter()
        .filter(|(_, x)| *x > GOAL_TC_OVER_XDP)
        .map(|(p, x)| format!("{} ({x:.2}x)", p.short()))
        .collect();
    let _ = writeln!(
        w,
        "\n**Goal, TC mode ≤ {GOAL_TC_OVER_XDP}x XDP mode per packet: {}.** {}\n",
        if met { "met" } else { "not met" },
        if over.is_empty() {
            format!("Every path is within {GOAL_TC_OVER_XDP}x.")
        } else {
            format!("Over it: {}.", over.join(", "))
        }
    );
    if let Some(l) = link(links, "tc") {
        let _ = writeln!(w, "![XDP mode against TC mode]({l})\n");
    }
}

/// Where TC mode's time goes, next to XDP mode's, from the same kind of profile.
fn tc_profile_section(w: &mut String, r: &Results) {
    let rows: Vec<(Path, Vec<(&'static str, f64)>)> = Path::ALL
        .into_iter()
        .filter_map(|p| breakdown_tc(r, p.id()).map(|b| (p, b)))
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(w, "### Where TC mode's time goes\n");
    let _ = writeln!(
        w,
        "The same profile of `blixt_lb_tc`'s wrapper, the empty TC wrapper's time per category \
         subtracted (ns per packet, the profile's own estimate; share of its total):\n"
    );
    let cats: Vec<&str> = rows[0].1.iter().map(|(c, _)| *c).collect();
    let _ = write!(w, "| path |");
    for c in &cats {
        let _ = write!(w, " {c} |");
    }
    let _ = writeln!(w, " total |");
    let _ = writeln!(w, "|---|{}---|", "---|".repeat(cats.len()));
    for (p, b) in &rows {
        let total: f64 = b.iter().map(|(_, v)| v).sum();
        let _ = write!(w, "| {} |", p.title());
        for (_, v) in b {
            let _ = write!(w, " {} ({:.0}%) |", ns(*v), 100.0 * v / total.max(1e-9));
        }
        let _ = writeln!(w, " {} |", ns(total));
    }
    let _ = writeln!(w);
}

fn profile_section(w: &mut String, r: &Results, links: &[(String, String)]) {
    let _ = writeln!(w, "### Where the time goes\n");
    let prof = profiled_paths(r);
    if prof.is_empty() {
        let _ = writeln!(
            w,
            "Not profiled in this run (`perf` was not available, or the run was too small).\n"
        );
        return;
    }
    let _ = writeln!(
        w,
        "`perf record -g` sampled the benchmark's thread while the load balancer's wrapper, and \
         then the empty wrapper, ran their hot loops on each path. A sample inside the BPF \
         program is charged to the helper (or inlined map operation) the program was in, or to \
         the program's own instructions; shares times the wrapper's measured ns per iteration \
         give ns, and the empty wrapper's ns per category are subtracted, which removes the \
         wrapper's own work. The total is the profile's own estimate of ns per packet above \
         an empty program; it runs above the hot loop's figure in the table above (the loops \
         run slower while perf samples them), so the text below quotes each part as its share \
         of this total times the hot loop's figure.\n"
    );
    let cats: Vec<&str> = prof[0].1.iter().map(|(c, _)| *c).collect();
    let _ = write!(w, "| path |");
    for c in &cats {
        let _ = write!(w, " {c} |");
    }
    let _ = writeln!(w, " total |");
    let _ = writeln!(w, "|---|{}---|", "---|".repeat(cats.len()));
    for (p, b) in &prof {
        let total: f64 = b.iter().map(|(_, v)| v).sum();
        let _ = write!(w, "| {} |", p.title());
        for (_, v) in b {
            let _ = write!(w, " {} ({:.0}%) |", ns(*v), 100.0 * v / total.max(1e-9));
        }
        let _ = writeln!(w, " {} |", ns(total));
    }
    if let Some(l) = link(links, "profile") {
        let _ = writeln!(w, "\n![Where the time goes]({l})\n");
    }
    let samples: Vec<String> = r
        .profiles
        .iter()
        .filter(|p| p.target == BLIXT)
        .map(|p| format!("{} {}", p.path, p.samples))
        .collect();
    let _ = writeln!(
        w,
        "Samples inside Blixt's wrapper per path: {}.\n",
        samples.join(", ")
    );
}

fn new_flow_paragraph(w: &mut String, r: &Results) {
    let empty = r.metric("tcp_new_flow.hot_loop.ns_per_packet");
    let full = r.metric("tcp_new_flow_ct_full.hot_loop.ns_per_packet");
    let est = r.metric("tcp_established.hot_loop.ns_per_packet");
    let (Some(empty), Some(full)) = (empty, full) else {
        return;
    };
    let _ = writeln!(w, "### New flows: empty against full conntrack\n");
    let cap = r
        .sizes
        .get("packet_cost.conntrack_entries")
        .copied()
        .unwrap_or(0);
    let at_start = r
        .sizes
        .get("packet_cost.conntrack_at_start_full")
        .copied()
        .unwrap_or(0);
    let backends = r
        .sizes
        .get("packet_cost.backends")
        .copied()
        .unwrap_or(1)
        .max(1);
    let _ = writeln!(
        w,
        "A new TCP flow costs {} ns with a nearly empty conntrack and {} ns with conntrack full \
         ({at_start} of {cap} entries in use when the measurement started; every new flow then \
         makes the LRU map evict), {:.2}x.{} With conntrack full, {} flows hold source ports \
         spread over {backends} backends × 31744 ports (the default range), about {} of the \
         port space, so the source-port search rarely needs a second probe.\n",
        ns(empty.median),
        ns(full.median),
        full.median / empty.median,
        est.map(|e| format!(
            " An established packet costs {} ns: a new flow is {:.1}x that.",
            ns(e.median),
            empty.median / e.median
        ))
        .unwrap_or_default(),
        cap / 2,
        pct((cap / 2) as f64 / (backends as f64 * 31744.0)),
    );
}

/// How much of a new flow is the conntrack map: its operations measured alone
/// ([`crate::map_cost`]) next to the new flow's whole cost.
fn map_cost_paragraph(w: &mut String, r: &Results) {
    use crate::map_cost::{metric_name, Op};
    let ops: Vec<(Op, &Metric)> = Op::ALL
        .into_iter()
        .filter_map(|op| r.metric(&metric_name(op)).map(|m| (op, m)))
        .collect();
    if ops.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "### New flows: what the conntrack map costs by itself
"
    );
    let entries = r
        .sizes
        .get("packet_cost.conntrack_entries")
        .copied()
        .unwrap_or(0);
    let _ = writeln!(
        w,
        "The map operations a new flow makes, alone, on maps of the dataplane's own key (40 \
         bytes), value (88 bytes) and size ({entries} entries), each iteration a key never seen \
         before, starting empty (bench_maps.bpf.c; ns per operation above the loop that builds \
         the keys):\n"
    );
    let _ = writeln!(w, "| operation | ns |\n|---|---|");
    for (op, m) in &ops {
        let _ = writeln!(w, "| {} | {} |", op.title(), ns_range(&m.systems[BLIXT]));
    }
    let whole = r.metric("tcp_new_flow.hot_loop.ns_per_packet");
    let maps = r.metric(&metric_name(Op::LruNewFlow));
    if let (Some(whole), Some(maps)) = (whole, maps) {
        let share = maps.median / whole.median.max(1e-9);
        let _ = writeln!(
            w,
            "\nA new TCP flow costs {} ns in the hot loop; the map work alone (one miss and two \
             inserts, the minimum for full-NAT, which must find a flow from both directions) \
             is {} ns of it ({:.0}%), against the goal of {GOAL_NEW_FLOW:.0} ns for the whole \
             flow. {}\n",
            ns(whole.median),
            ns(maps.median),
            100.0 * share,
            if maps.median >= GOAL_NEW_FLOW {
                "On this machine the map operations alone exceed the goal: each touches \
                 cache lines nobody else has touched (a random bucket of a multi-megabyte \
                 bucket array, a free element, the LRU lists)."
            } else {
                "On a map fresh from creation, the map work alone would fit in the goal."
            }
        );
        let in_program = cat_ns(r, "tcp_new_flow", profile::CAT_MAPS);
        let own = cat_ns(r, "tcp_new_flow", profile::CAT_SELF);
        let used = r.metric(&metric_name(Op::LruNewFlowUsed));
        if let (Some(in_program), Some(own), Some(used)) = (in_program, own, used) {
            let _ = writeln!(
                w,
                "Inside the program, the profile puts about {} ns of a new flow in the hash maps \
                 and {} ns in the program's own instructions, in line with the {} ns the map \
                 work costs on its own on a map fresh from creation, which hands out its free \
                 nodes in address order, so the CPU's prefetcher streams them; a map \
                 that has been used and emptied (as any conntrack is after its flows come and \
                 go) hands them out in the order the flows ended, each a cache miss, and the \
                 same map work on it costs {} ns. {}\n",
                ns(in_program),
                ns(own),
                ns(maps.median),
                ns(used.median),
                if used.median >= GOAL_NEW_FLOW {
                    "The map operations of one new flow, on a conntrack in use, take more than \
                     the goal by themselves: that is the limit that stands in the way (the \
                     kernel's LRU hash at this entry size on this machine's memory), not the \
                     program's own work. Smaller entries or per-CPU lists move it only a little (next \
                     paragraph)."
                } else {
                    "The program's own instructions are the part to trim."
                }
            );
        }
    }
    if let (Some(used), Some(cpu), Some(small)) = (
        r.metric(&metric_name(Op::LruNewFlowUsed)),
        r.metric(&metric_name(Op::LruCpuNewFlowUsed)),
        r.metric(&metric_name(Op::LruSmallNewFlowUsed)),
    ) {
        let _ = writeln!(
            w,
            "On maps emptied after use, per-CPU LRU lists (`BPF_F_NO_COMMON_LRU`) take a new \
             flow's map work from {} to {} ns ({:.2}x), and a 16-byte value (what Katran keeps: \
             it forwards with direct server return, so it needs no reply entry and no addresses \
             to rewrite to) to {} ns ({:.2}x). {}\n",
            ns(used.median),
            ns(cpu.median),
            cpu.median / used.median.max(1e-9),
            ns(small.median),
            small.median / used.median.max(1e-9),
            if cpu.median.min(small.median) < 0.8 * used.median {
                "That is a real saving, worth its price."
            } else {
                "Neither is a step that changes the picture: most of the cost is the cache \
                 misses of a random bucket and a cold node per insert, which any entry size \
                 pays. Per-CPU lists would also halve the conntrack of a node whose traffic \
                 lands on one CPU (each CPU may use only its share of the entries), and a \
                 full-NAT entry cannot be 16 bytes, so the conntrack keeps its shape."
            }
        );
    }
    if let (Some(lru), Some(hash)) = (
        r.metric(&metric_name(Op::LruInsert)),
        r.metric(&metric_name(Op::HashInsert)),
    ) {
        let _ = writeln!(
            w,
            "A preallocated plain hash instead of the LRU (inserts fail when full, so it needs \
             a sweeper to make room) costs {} ns per insert against the LRU's {} ({:.2}x): {}\n",
            ns(hash.median),
            ns(lru.median),
            hash.median / lru.median.max(1e-9),
            if hash.median < 0.8 * lru.median {
                "a real saving, at the price of losing eviction under pressure."
            } else {
                "no saving worth giving up eviction under pressure for, so the conntrack stays \
                 an LRU."
            }
        );
    }
}

fn programs_section(w: &mut String, r: &Results) {
    if r.programs.is_empty() {
        return;
    }
    let _ = writeln!(w, "### Verifier: instructions per program\n");
    let _ = writeln!(
        w,
        "`verified` is the number of instructions the verifier processed (every path it \
         walked, the kernel's `verified_insns`); `xlated` the program's length after the \
         verifier's rewrites; `jited` the native code size.\n"
    );
    let _ = writeln!(
        w,
        "| program | what | verified | xlated | jited bytes |\n|---|---|---|---|---|"
    );
    for p in &r.programs {
        let opt = |v: Option<u32>| v.map_or("—".to_string(), |v| v.to_string());
        let _ = writeln!(
            w,
            "| `{}` | {} | {} | {} | {} |",
            p.name,
            p.role,
            opt(p.verified_insns),
            opt(p.xlated_insns),
            p.jited_bytes
        );
    }
    let _ = writeln!(w);
}

/// One category's part of a path's cost, in ns per packet: its share of the profile's total
/// times the hot loop's figure for the path (the profile's own ns run high, since the loops
/// run slower while perf samples them; shares are what it measures well).
fn cat_ns(r: &Results, path: &str, cat: &str) -> Option<f64> {
    let parts = breakdown(r, path)?;
    let total: f64 = parts.iter().map(|(_, v)| v).sum();
    let part = parts.iter().find(|(c, _)| *c == cat).map(|(_, v)| *v)?;
    let whole = r.metric(&format!("{path}.hot_loop.ns_per_packet"))?.median;
    (total > 0.0).then(|| part / total * whole)
}

/// TC mode's part of a path's cost in category `cat`, ns per packet: as [`cat_ns`], with TC
/// mode's profile and hot-loop figure.
fn tc_cat_ns(r: &Results, path: &str, cat: &str) -> Option<f64> {
    let parts = breakdown_tc(r, path)?;
    let total: f64 = parts.iter().map(|(_, v)| v).sum();
    let part = parts.iter().find(|(c, _)| *c == cat).map(|(_, v)| *v)?;
    let whole = r
        .metric(&format!("{path}.tc.hot_loop.ns_per_packet"))?
        .median;
    (total > 0.0).then(|| part / total * whole)
}

/// Where TC mode's extra cost per established TCP packet goes (from the profiles).
fn tc_finding(r: &Results) -> Option<String> {
    let path = "tcp_established";
    let m = r.metric(&format!("{path}.tc.hot_loop.ns_per_packet"))?;
    let xdp = m.system("xdp")?.median;
    let tc = m.median;
    let ratio = tc / xdp;
    let mut s = format!(
        "**TC mode costs {} ns per established TCP packet against XDP mode's {} ns ({ratio:.2}x; \
         the goal is ≤ {GOAL_TC_OVER_XDP}x, {}).**",
        ns(tc),
        ns(xdp),
        if ratio <= GOAL_TC_OVER_XDP {
            "met"
        } else {
            "not met"
        }
    );
    let diff = |cat: &str| -> Option<f64> {
        Some(tc_cat_ns(r, path, cat)? - cat_ns(r, path, cat).unwrap_or(0.0))
    };
    if let (Some(csum), Some(own)) = (diff(profile::CAT_CSUM), diff(profile::CAT_SELF)) {
        s += &format!(
            " By the profiles, about {} ns of the difference is `bpf_l4_csum_replace`: at TC the \
             rewrite reads the packet's checksum state (`skb->ip_summed`, through the kfunc \
             `bpf_cast_to_kern_ctx` where the kernel has it) and updates the L4 checksum in \
             place as XDP does when the field holds the full checksum, as in a test run; only \
             a checksum left for offload (`CHECKSUM_PARTIAL`) or a `CHECKSUM_COMPLETE` packet \
             goes through that helper, twice (the addresses as a pseudo-header change, then the \
             ports). About {} ns more is spent in the program's own instructions, and {} ns in \
             everything else together (map lookups, clock, redirect).",
            ns(csum),
            ns(own),
            ns(tc - xdp - csum - own)
        );
    }
    Some(s)
}

fn findings_section(w: &mut String, r: &Results) {
    // suites 2 and 3 show their own findings as the proof under their results
    let mut items: Vec<String> = r
        .findings
        .iter()
        .filter(|f| {
            !f.starts_with(crate::forwarding::FINDING) && !f.starts_with(crate::end_to_end::FINDING)
        })
        .cloned()
        .collect();
    let above = |id: &str| {
        r.metric(&format!("{id}.hot_loop.above_floor"))
            .map(|m| m.median)
    };
    let per_pkt = |id: &str| {
        r.metric(&format!("{id}.hot_loop.ns_per_packet"))
            .map(|m| m.median)
    };
    let fib = |id: &str| cat_ns(r, id, profile::CAT_FIB);
    let maps = |id: &str| cat_ns(r, id, profile::CAT_MAPS);
    if let (Some(est), Some(f)) = (above("tcp_established"), fib("tcp_established")) {
        let met = est <= GOAL_ESTABLISHED_ABOVE_FLOOR;
        let fib_note = if f >= 1.0 {
            format!(
                "The largest single cost is `bpf_fib_lookup`, about {} ns per packet (the route \
                 lookup, the MTU check on the result, the neighbour lookup). An established \
                 flow's next hop does not change from one packet to the next: keeping it in the \
                 conntrack entry would take about {} ns off, to roughly {} ns above the floor.",
                ns(f),
                ns(f),
                ns((est - f).max(0.0)),
            )
        } else {
            "`bpf_fib_lookup` is not on this path: the next hop (egress ifindex, both MACs) \
             is cached in the conntrack entry and looked up again only when `last_seen` is \
             refreshed, at most once a second."
                .to_string()
        };
        items.push(format!(
            "**Established TCP is {} ns above the floor; the goal is {GOAL_ESTABLISHED_ABOVE_FLOOR:.0} \
             ns ({}).** The conntrack lookup (hashing the 40-byte key, walking the bucket) takes \
             about {} ns and `bpf_ktime_get_coarse_ns` about {} ns. {fib_note}",
            ns(est),
            if met { "met" } else { "not met" },
            ns(maps("tcp_established").unwrap_or(0.0)),
            ns(cat_ns(r, "tcp_established", profile::CAT_CLOCK).unwrap_or(0.0)),
        ));
    }
    if let (Some(v4), Some(v6)) = (per_pkt("tcp_established"), per_pkt("tcp6_established")) {
        let f6 = fib("tcp6_established")
            .filter(|f| *f >= 1.0)
            .map(|f| format!(", of which `bpf_fib_lookup` takes about {} ns (the IPv6 FIB lookup is the dearer one)", ns(f)))
            .unwrap_or_default();
        items.push(format!(
            "IPv6 established costs {} ns per packet against {} ns for IPv4{f6}.",
            ns(v6),
            ns(v4),
        ));
    }
    if let (Some(new), Some(m)) = (per_pkt("tcp_new_flow"), maps("tcp_new_flow")) {
        let met = new <= GOAL_NEW_FLOW;
        let full = per_pkt("tcp_new_flow_ct_full")
            .zip(maps("tcp_new_flow_ct_full"))
            .map(|(f, fm)| {
                format!(
                    " With conntrack full a new flow costs {} ns, {} ns of it in the maps.",
                    ns(f),
                    ns(fm)
                )
            })
            .unwrap_or_default();
        items.push(format!(
            "**A new TCP flow costs {} ns with a nearly empty conntrack; the goal is \
             {GOAL_NEW_FLOW:.0} ns ({}).** About {} ns of it is spent in the conntrack map: a new \
             flow makes a lookup that misses, a frontend lookup, then two inserts into the LRU \
             hash (the reply entry with `BPF_NOEXIST`, then the forward entry). Each insert pops \
             a preallocated node from the LRU's free lists (`bpf_lru_pop_free`, which refills a \
             per-CPU cache in batches by rotating and shrinking the shared LRU lists, touching \
             cold nodes), copies key and value into it and walks the bucket.{full} The FIB lookup \
             is about {} ns here. The ways to cut the map's part (a preallocated plain hash, \
             per-CPU LRU lists, a smaller entry) are measured on their own under \
             \"New flows: what the conntrack map costs by itself\".",
            ns(new),
            if met { "met" } else { "not met" },
            ns(m),
            ns(fib("tcp_new_flow").unwrap_or(0.0)),
        ));
    }
    if let (Some(pass), Some(m)) = (above("non_vip_pass"), maps("non_vip_pass")) {
        items.push(format!(
            "Non-VIP traffic costs {} ns above the floor before `XDP_PASS`, about {} ns of it in \
             two hash lookups that both miss: conntrack (40-byte key) and frontends. A first \
             test on the destination address alone (VIPs and the node's SNAT addresses, which \
             replies are sent to) would pass such traffic after one smaller lookup.",
            ns(pass),
            ns(m)
        ));
    }
    if let Some(item) = tc_finding(r) {
        items.push(item);
    }
    if r.metric("tcp_established_unresolved.xdp_then_tc.hot_loop.ns_per_packet")
        .is_some()
    {
        items.push(
            "In XDP mode without metadata, a packet to an unresolved next hop is counted twice in \
             its backend's `packets` and `bytes` counters: `blixt_lb` counts it once it has \
             chosen the backend, before it passes the packet up, and `blixt_lb_tc` counts it \
             again when it forwards it (the benchmark's counter checks expect one count per \
             pass; a new flow is counted once)."
                .to_string(),
        );
    }
    if items.is_empty() {
        return;
    }
    let _ = writeln!(w, "### What the numbers say\n");
    for i in items {
        let _ = writeln!(w, "- {i}");
    }
    let _ = writeln!(w);
}

fn maglev_section(w: &mut String, r: &Results, links: &[(String, String)]) {
    let flows = r.sizes.get("maglev.flows").copied().unwrap_or(0);
    let _ = writeln!(w, "## Suite 5: Maglev disruption\n");
    let _ = writeln!(
        w,
        "{flows} sampled client flows (random IPv4 sources and ports to one VIP), each hashed \
         with the dataplane's own flow hash (`FlowKey::hash`, the twin of `flow_hash()` in \
         lb.bpf.c) onto a table of 16381 slots built by `blixt_core::maglev::build`, \
         exactly as the agent builds it. A flow *moves* when its backend differs between the \
         table before and after the change. *Leave*: one of N backends leaves; its own flows \
         (1/N) must move, ideally nothing else. *Join*: an (N+1)-th backend joins; ideally only \
         its share, 1/(N+1), moves (a join from N−1 to N is the same change as a leave run \
         backwards and moves the same flows). Repeated for every backend (N ≤ 10) or ten of \
         them (N = 100); the goal, at most 1/N + 2 percentage points, is judged on the worst \
         run.\n"
    );
    let _ = writeln!(
        w,
        "| N | one leaves: median (worst) | ideal 1/N | one joins: median (worst) | ideal \
         1/(N+1) | bound 1/N + 2% | met |\n|---|---|---|---|---|---|---|"
    );
    let mut over_own_bound = Vec::new();
    for n in [3usize, 10, 100] {
        let (Some(l), Some(j)) = (
            r.metric(&format!("maglev.leave.n{n}")),
            r.metric(&format!("maglev.join.n{n}")),
        ) else {
            continue;
        };
        let met = l.goal.as_ref().is_some_and(|g| g.met) && j.goal.as_ref().is_some_and(|g| g.met);
        let _ = writeln!(
            w,
            "| {n} | {} ({}) | {} | {} ({}) | {} | {} | {} |",
            pct(l.median),
            pct(l.max),
            pct(l.systems["ideal"].median),
            pct(j.median),
            pct(j.max),
            pct(j.systems["ideal"].median),
            pct(1.0 / n as f64 + 0.02),
            yes_no(met)
        );
        over_own_bound.extend(
            (j.max > j.systems["ideal"].median + 0.02)
                .then(|| (n, j.median, j.max, j.systems["ideal"].median)),
        );
    }
    if !over_own_bound.is_empty() {
        let _ = writeln!(
            w,
            "\nThe goal is judged as the issue puts it, one of N backends leaving or joining \
             (a join from N−1 to N moves the flows of the leave column)."
        );
    }
    for (n, median, worst, ideal) in over_own_bound {
        let _ = writeln!(
            w,
            "Against its own ideal, a backend joining {n} others moved up to {} in its worst run, {:.1} points \
             above 1/{} + 2%: besides the newcomer's share, Maglev moves some flows \
             between the old backends, since the newcomer's claims shift the order in which \
             they fill the table. By the same token one of {} backends leaving can move that \
             much; the median run ({}) stays near the ideal.",
            pct(worst),
            100.0 * (worst - ideal - 0.02),
            n + 1,
            n + 1,
            pct(median),
        );
    }
    if let (Some(big), Some(small)) = (
        r.metric("maglev.leave.n100.m65537"),
        r.metric("maglev.leave.n100"),
    ) {
        let _ = writeln!(
            w,
            "\nWith 100 backends the default table of 16381 slots (about 164 per backend) moves \
             {} of flows when one leaves, {:.1}x the ideal 1%; a table of 65537 slots moves {} \
             (worst {}). Frontends with many backends want the larger table.",
            pct(small.median),
            small.median / 0.01,
            pct(big.median),
            pct(big.max)
        );
    }
    if let Some(l) = link(links, "maglev") {
        let _ = writeln!(w, "\n![Maglev disruption]({l})\n");
    }
    let builds: Vec<&Metric> = r
        .metrics
        .iter()
        .filter(|m| m.name.starts_with("maglev.build_ms."))
        .collect();
    if !builds.is_empty() {
        let _ = writeln!(w, "### Table build time (also part of suite 4)\n");
        let _ = writeln!(
            w,
            "| backends | slots | ms per build, median (min–max) |\n|---|---|---|"
        );
        for m in builds {
            let mut parts = m.name.trim_start_matches("maglev.build_ms.").split('.');
            let b = parts.next().unwrap_or("").trim_start_matches('b');
            let t = parts.next().unwrap_or("").trim_start_matches('m');
            let v = &m.systems[BLIXT];
            let _ = writeln!(
                w,
                "| {b} | {t} | {:.2} ({:.2}–{:.2}) |",
                v.median, v.min, v.max
            );
        }
        let _ = writeln!(
            w,
            "\nOne thread, release build, weights equal. The default table (16381 slots) gives \
             each of 1,000 backends about 16 slots; frontends with that many backends should \
             use a larger prime: 65537 gives each about 65 slots, and the Maglev paper keeps M \
             above 100·N (a prime above 100,000 for 1,000 backends) to hold the backends' \
             shares within about 1% of each other.\n"
        );
    }
}

fn not_measured_section(w: &mut String, extras: &[Extra<'_>]) {
    let _ = writeln!(w, "## Not measured\n");
    let missing: Vec<&Suite> = extras
        .iter()
        .filter(|(_, sec)| sec.is_none())
        .map(|(s, _)| *s)
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(
            w,
            "These suites of issue 6 have no numbers in this run (not run, or not measured \
             yet); no number is quoted for them until a run measures it:\n"
        );
        for s in &missing {
            let _ = writeln!(w, "- {}", s.what);
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(
        w,
        "**IPVS** cannot be measured on this machine: its kernel is built without \
         `CONFIG_IP_VS`, so the report says so rather than quoting numbers from elsewhere.\n"
    );
}

fn files_section(w: &mut String) {
    let _ = writeln!(w, "## Files\n");
    let _ = writeln!(
        w,
        "- `target/bench/results.json`: every metric of the run as one entry: `name`, \
         `unit`, `systems` (the value of Blixt and of each peer: `median`, `min`, `max`, \
         `runs`), `ratios` (Blixt's median over each peer's), Blixt's `median` / `min` / \
         `max` / `runs` again at the top level, the `goal` where the issue sets one, a `note` \
         saying what was measured, and the `machine` (cores, kernel, CPU); plus the sizes \
         used and the verifier's instruction counts.\n\
         - `docs/bench/*.png`: the plots above, drawn by `blixt-bench` with the \
         [plotters](https://crates.io/crates/plotters) crate (bitmap backend, text from the \
         DejaVu font of Debian's fonts-dejavu-core).\n\
         - Sources: `crates/blixt-bench/` (harness), \
         `crates/blixt-bpf/bpf/bench_{{empty,floor,wrap}}.bpf.c` (the peers and the wrapper).\n"
    );
    let _ = packet_cost::SUITE;
}
