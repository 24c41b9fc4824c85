//! Suite 4, control plane (issue 6): route change → new state programmed in the BPF maps,
//! p50/p99 over many changes at 10, 1,000 and 10,000 routes, with where the time goes, and the
//! memory of `blixt run` holding them. Standalone only so far: see [`standalone`] for the
//! method and [`manifests`] for the configuration. The Maglev build time for 1,000 backends is
//! measured by suite 5 ([`crate::maglev`]) and quoted here.

pub mod kubernetes;
pub mod manifests;
pub mod standalone;

use std::fmt::Write as _;

use anyhow::Result;

use crate::plot::{BarChart, Marker, Series, StackedChart, BLUE, ORANGE, PALETTE, RED};
use crate::results::{Machine, Metric, Results};
use crate::stats::Summary;
use crate::suite::{GoalRow, PlotDir, Section, SuiteOutput};
use crate::Mode;

/// Suite name in results.json.
pub const SUITE: &str = "4 control plane";
/// The goal of issue 6 on change latency, judged at [`GOAL_ROUTES`].
pub const GOAL_P99_MS: f64 = 100.0;
pub const GOAL_ROUTES: usize = 1000;

/// Sizes of the suite.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sizes {
    /// Route counts measured.
    pub routes: Vec<usize>,
    /// Changes per route count.
    pub changes: usize,
    /// Ready endpoints per Service (10,000 routes x 10 = 100,000 endpoints).
    pub endpoints: usize,
    /// Route counts measured through the Kubernetes path, and changes at each.
    pub kubernetes_routes: Vec<usize>,
    pub kubernetes_changes: usize,
}

impl Sizes {
    pub fn for_mode(mode: Mode) -> Sizes {
        match mode {
            Mode::Full => Sizes {
                routes: vec![10, 1000, 10_000],
                changes: 200,
                endpoints: 10,
                kubernetes_routes: vec![10, 1000],
                kubernetes_changes: 200,
            },
            Mode::Quick => Sizes {
                routes: vec![10, 1000, 10_000],
                changes: 50,
                endpoints: 10,
                // 1,000 routes through Kubernetes (11,000 objects created through the API
                // server) are for full runs: QUICK=1 must stay under five minutes
                kubernetes_routes: vec![10],
                kubernetes_changes: 20,
            },
            Mode::Tiny => Sizes {
                routes: vec![10],
                changes: 3,
                endpoints: 2,
                kubernetes_routes: vec![10],
                kubernetes_changes: 3,
            },
        }
    }
}

/// Changes taken at 10,000 routes in Quick mode (each reloads 30,000 objects).
const QUICK_CHANGES_10K: usize = 20;

fn name(routes: usize, what: &str) -> String {
    format!("control_plane.standalone.r{routes}.{what}")
}

fn kubernetes_name(routes: usize, what: &str) -> String {
    format!("control_plane.kubernetes.r{routes}.{what}")
}

/// Metrics of the Kubernetes path at one size.
fn kubernetes_metrics(
    run: &kubernetes::ChangeRun,
    endpoints: usize,
    machine: &Machine,
) -> Vec<Metric> {
    let n = run.routes;
    let name = |what: &str| kubernetes_name(n, what);
    let setup = format!(
        "{n} TCPRoutes and {} endpoints in a real kube-apiserver, a real `blixt controller` \
         and one `blixt agent` subscribed to its snapshot stream",
        n * endpoints
    );
    let mut m = change_metrics(
        &name,
        n,
        &run.changes_ms,
        "route change (a merge patch of one TCPRoute's backendRef sent to the API server) → \
         the route's frontend flipped to its new Maglev ring in the agent's pinned maps",
        &setup,
        " (Kubernetes path)",
        machine,
    );
    m.push(Metric::new(
        SUITE,
        &name("first_programmed_s"),
        "s",
        Summary::exact(run.first_programmed_s),
        &[],
        &format!(
            "controller and agent started → the last route's frontend in the agent's maps; \
             {setup}"
        ),
        machine,
    ));
    m.push(rss_metric(
        &name("agent_rss_mib"),
        &run.agent_rss,
        &format!("resident memory of `blixt agent` after the changes; {setup}"),
        machine,
    ));
    m
}

/// `change_ms` (median = p50) and `change_p99_ms` (with the goal at [`GOAL_ROUTES`]) of one
/// size's changes; `goal_path` names the path in the goal's text.
fn change_metrics(
    name: &dyn Fn(&str) -> String,
    routes: usize,
    samples: &[f64],
    what: &str,
    setup: &str,
    goal_path: &str,
    machine: &Machine,
) -> Vec<Metric> {
    let p99 = percentile(samples, 99.0);
    let p99_metric = Metric::new(
        SUITE,
        &name("change_p99_ms"),
        "ms",
        Summary::exact(p99),
        &[],
        &format!("p99 of the same {} changes; {setup}", samples.len()),
        machine,
    );
    vec![
        Metric::new(
            SUITE,
            &name("change_ms"),
            "ms",
            Summary::of(samples),
            &[],
            &format!(
                "{what}; median = p50 over {} changes; {setup}",
                samples.len()
            ),
            machine,
        ),
        if routes == GOAL_ROUTES {
            p99_metric.with_goal(
                &format!("p99 < {GOAL_P99_MS} ms at {GOAL_ROUTES} routes{goal_path}"),
                p99 < GOAL_P99_MS,
            )
        } else {
            p99_metric
        },
    ]
}

/// A process's memory (VmRSS, with peak = VmHWM and anon = RssAnon beside it).
fn rss_metric(name: &str, rss: &standalone::Rss, note: &str, machine: &Machine) -> Metric {
    Metric::new(
        SUITE,
        name,
        "MiB",
        Summary::exact(rss.rss),
        &[
            ("peak", Summary::exact(rss.peak)),
            ("anon", Summary::exact(rss.anon)),
        ],
        note,
        machine,
    )
}

/// A table cell for an [`rss_metric`]: `RSS (own / peak)`.
fn rss_cell(m: Option<&Metric>) -> String {
    m.map_or("-".into(), |m| {
        format!(
            "{:.0} ({:.0} / {:.0})",
            m.median,
            m.system("anon").map_or(f64::NAN, |p| p.median),
            m.system("peak").map_or(f64::NAN, |p| p.median)
        )
    })
}

/// The `p`-th percentile (nearest rank) of `samples`.
fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// The stages of a change as reported by `blixt run`, in plot order.
const STAGES: [(&str, &str); 5] = [
    ("detect", "file replaced → change noticed"),
    ("load", "read and parse the files"),
    ("translate", "translate into a snapshot"),
    ("apply", "apply (plan, write maps, flip)"),
    ("other", "rest: announcing, seeing the flip"),
];

fn stage_value(c: &standalone::Change, stage: &str) -> f64 {
    match stage {
        "detect" => c.detect,
        "load" => c.load,
        "translate" => c.translate,
        "apply" => c.apply,
        _ => (c.total - c.detect - c.load - c.translate - c.apply).max(0.0),
    }
}

/// Measures suite 4.
pub fn run(mode: Mode, machine: &Machine) -> Result<SuiteOutput> {
    crate::require_root();
    let sizes = Sizes::for_mode(mode);
    let blixt = standalone::blixt_binary()?;
    let mut out = SuiteOutput::default();
    out.sizes.insert("changes".into(), sizes.changes as u64);
    out.sizes
        .insert("endpoints_per_service".into(), sizes.endpoints as u64);
    for &routes in &sizes.routes {
        let changes = if mode == Mode::Quick && routes >= 10_000 {
            QUICK_CHANGES_10K
        } else {
            sizes.changes
        };
        out.sizes
            .insert(format!("r{routes}.changes"), changes as u64);
        let run = standalone::run(&blixt, routes, sizes.endpoints, changes)?;
        out.metrics.extend(metrics(&run, sizes.endpoints, machine));
    }
    if mode == Mode::Full {
        let k = kubernetes::run(&blixt, CONTROLLER_ROUTES, sizes.endpoints)?;
        out.metrics
            .push(controller_metric(&k, sizes.endpoints, machine));
    } else {
        out.findings.push(format!(
            "Suite 4 ({} run): the controller's memory at 10k routes / 100k endpoints is \
             measured in full runs only (creating 30,000 objects in the API server takes \
             minutes).",
            mode.name()
        ));
    }
    out.sizes
        .insert("kubernetes.changes".into(), sizes.kubernetes_changes as u64);
    for &routes in &sizes.kubernetes_routes {
        let populated = kubernetes::Populated::create(routes, sizes.endpoints)?;
        let run = populated.route_changes(&blixt, sizes.kubernetes_changes)?;
        out.metrics
            .extend(kubernetes_metrics(&run, sizes.endpoints, machine));
    }
    Ok(out)
}

/// Routes of the controller-memory run (x endpoints per Service: 100,000 endpoints).
const CONTROLLER_ROUTES: usize = 10_000;
/// The goal of issue 6 on controller memory, in MB (10^6 bytes).
const GOAL_CONTROLLER_MB: f64 = 500.0;
const CONTROLLER_RSS: &str = "control_plane.kubernetes.controller_rss_mib";

fn controller_metric(k: &kubernetes::ControllerRun, endpoints: usize, machine: &Machine) -> Metric {
    let mb = k.rss.rss * 1.048_576;
    Metric::new(
        SUITE,
        CONTROLLER_RSS,
        "MiB",
        Summary::exact(k.rss.rss),
        &[
            ("peak", Summary::exact(k.rss.peak)),
            ("anon", Summary::exact(k.rss.anon)),
        ],
        &format!(
            "`blixt controller` (VmRSS; peak = VmHWM) once it has written the statuses of \
             {} routes / {} endpoints ({} objects created by server-side apply in {:.0} s, \
             statuses after {:.0} s) in a real kube-apiserver",
            k.routes,
            k.routes * endpoints,
            k.objects,
            k.create_s,
            k.settle_s
        ),
        machine,
    )
    .with_goal(
        &format!("< {GOAL_CONTROLLER_MB} MB at 10k routes / 100k endpoints"),
        mb < GOAL_CONTROLLER_MB,
    )
}

fn metrics(run: &standalone::SizeRun, endpoints: usize, machine: &Machine) -> Vec<Metric> {
    let n = run.routes;
    let totals: Vec<f64> = run.changes.iter().map(|c| c.total).collect();
    let setup = format!(
        "{n} TCPRoutes (one frontend each, {} Gateways of up to 64 listeners), {} endpoints \
         per Service ({} in all)",
        n.div_ceil(manifests::LISTENERS_PER_GATEWAY),
        endpoints,
        n * endpoints
    );
    let mut m = change_metrics(
        &|what| name(n, what),
        n,
        &totals,
        "route change (a routes file replaced) → the route's frontend flipped to its new \
         Maglev ring in the pinned maps",
        &setup,
        "",
        machine,
    );
    m.push(Metric::new(
        SUITE,
        &name(n, "first_apply_s"),
        "s",
        Summary::exact(run.first_apply_s),
        &[],
        &format!("start of `blixt run` → the whole configuration applied; {setup}"),
        machine,
    ));
    m.push(rss_metric(
        &name(n, "agent_rss_mib"),
        &run.rss,
        &format!(
            "resident memory of `blixt run` after the changes (VmRSS; peak = VmHWM, anon = \
             RssAnon); {setup}"
        ),
        machine,
    ));
    for (stage, what) in STAGES {
        let v: Vec<f64> = run.changes.iter().map(|c| stage_value(c, stage)).collect();
        m.push(Metric::new(
            SUITE,
            &name(n, &format!("stage.{stage}_ms")),
            "ms",
            Summary::of(&v),
            &[],
            &format!("{what}, per change; {setup}"),
            machine,
        ));
    }
    m
}

/// Route counts present in the results, ascending.
fn route_counts(r: &Results) -> Vec<usize> {
    counts_of(r, "control_plane.standalone.r")
}

/// Route counts of the metrics `{prefix}{N}.change_ms`, ascending.
fn counts_of(r: &Results, prefix: &str) -> Vec<usize> {
    let mut v: Vec<usize> = r
        .metrics
        .iter()
        .filter_map(|m| {
            m.name
                .strip_prefix(prefix)?
                .strip_suffix(".change_ms")?
                .parse()
                .ok()
        })
        .collect();
    v.sort_unstable();
    v
}

/// The report's section for suite 4, or `None` when the run has no metric of it.
pub fn section(r: &Results, plots: &PlotDir<'_>) -> Result<Option<Section>> {
    let counts = route_counts(r);
    if counts.is_empty() {
        return Ok(None);
    }
    let get = |n: usize, what: &str| r.metric(&name(n, what));
    let mut md = String::from("## Suite 4: control plane\n\n");
    md.push_str(
        "A real `blixt run --config DIR` (in a network namespace of its own, no interface \
         attached) serves N TCPRoutes, each the only route of its own listener and so its own \
         frontend (Gateways of 64 listeners with static addresses), each sending to a Service \
         whose EndpointSlice has E ready endpoints; Services and routes are kept 100 to a file. \
         One change switches one route's backendRef to another Service by replacing its file \
         (write a dot-file, rename, as editors save). The clock runs from just before the \
         rename until the route's entry in the pinned `blixt_frontends` map points at a new \
         Maglev ring, read by the harness through the pins; the new ring's first slot is then \
         checked to be an endpoint of the new Service. `blixt run` reports each change's \
         stages with its `applied` event.\n\n",
    );
    md.push_str(
        "| routes | endpoints | changes | p50 ms | p99 ms | max ms | detect | load | translate | apply | first apply s | agent RSS MiB (own / peak) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let endpoints = r
        .sizes
        .get("control_plane.endpoints_per_service")
        .copied()
        .unwrap_or(0) as usize;
    let stage = |n: usize, s: &str| get(n, &format!("stage.{s}_ms")).map_or(f64::NAN, |m| m.median);
    for &n in &counts {
        let (Some(c), Some(p99)) = (get(n, "change_ms"), get(n, "change_p99_ms")) else {
            continue;
        };
        let rss = get(n, "agent_rss_mib");
        let _ = writeln!(
            md,
            "| {n} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            n * endpoints,
            c.runs,
            c.median,
            p99.median,
            c.max,
            stage(n, "detect"),
            stage(n, "load"),
            stage(n, "translate"),
            stage(n, "apply"),
            get(n, "first_apply_s").map_or(f64::NAN, |m| m.median),
            rss_cell(rss),
        );
    }
    md.push_str(
        "\nStage columns are medians in ms (detect: rename → `blixt run` noticed it; load: read \
         and parse every file; translate: objects → snapshot and statuses; apply: the \
         reconciler's plan and map writes). Agent RSS is `blixt run`'s VmRSS after the \
         changes; it includes the pages of the Maglev rings it has touched, which are the BPF \
         map's memory mapped into the process (two rings of 16381 slots per frontend the maps \
         are sized for: 1.3 GB at 10,000 frontends, allocated once by the kernel). Its own \
         memory is `own` (RssAnon): the parsed objects, statuses and applied state.\n\n",
    );

    let cats: Vec<String> = counts.iter().map(|n| format!("{n} routes")).collect();
    let values = |f: &dyn Fn(usize) -> Option<(f64, f64, f64)>| -> Vec<Option<(f64, f64, f64)>> {
        counts.iter().map(|&n| f(n)).collect()
    };
    let chart = BarChart {
        title: "Route change → programmed in the BPF maps (standalone)".into(),
        x_label: "ms".into(),
        categories: cats.clone(),
        series: vec![
            Series {
                label: "p50 (whisker: min–max)".into(),
                color: BLUE,
                values: values(&|n| get(n, "change_ms").map(|m| (m.median, m.min, m.max))),
            },
            Series {
                label: "p99".into(),
                color: ORANGE,
                values: values(&|n| {
                    get(n, "change_p99_ms").map(|m| (m.median, m.median, m.median))
                }),
            },
        ],
        markers: vec![Marker {
            label: format!("goal: p99 < {GOAL_P99_MS} ms at {GOAL_ROUTES} routes"),
            x: GOAL_P99_MS,
            color: RED,
        }],
        decimals: 1,
        legend: plotters::prelude::SeriesLabelPosition::LowerRight,
    };
    let file = "control_plane_change.png";
    chart.draw(&plots.dir.join(file))?;
    let _ = writeln!(md, "![route change latency]({})\n", plots.link(file));
    let stages = StackedChart {
        title: "Where a change's time goes (medians)".into(),
        x_label: "ms".into(),
        categories: cats,
        segments: STAGES
            .iter()
            .zip(PALETTE)
            .map(|((s, what), color)| {
                (
                    (*what).to_string(),
                    color,
                    counts.iter().map(|&n| stage(n, s).max(0.0)).collect(),
                )
            })
            .collect(),
    };
    let file = "control_plane_stages.png";
    stages.draw(&plots.dir.join(file))?;
    let _ = writeln!(md, "![stages of a route change]({})\n", plots.link(file));

    if let Some(b) = r
        .metrics
        .iter()
        .find(|m| m.name.starts_with("maglev.build_ms.b1000."))
    {
        let _ = writeln!(
            md,
            "Maglev table build for 1,000 backends (suite 5, `{}`): {:.2} ms median. A change \
             builds a table only for the frontends whose backends or weights changed.\n",
            b.name, b.median
        );
    }
    let controller = r.metric(CONTROLLER_RSS);
    if let Some(c) = controller {
        let _ = writeln!(
            md,
            "Controller memory: {:.0} MiB resident ({:.0} MiB peak). {}.\n",
            c.median,
            c.system("peak").map_or(f64::NAN, |p| p.median),
            c.note
        );
    }
    let k8s_counts: Vec<usize> = counts_of(r, "control_plane.kubernetes.r");
    if !k8s_counts.is_empty() {
        md.push_str(
            "**Through Kubernetes.** The same objects created by server-side apply in a real \
             kube-apiserver (blixt-k8s-harness), a real `blixt controller` serving its snapshot \
             stream (gRPC, service-account token checked by TokenReview) and one `blixt agent` \
             in a network namespace of its own, subscribed to it, with XDP attached to a veth \
             there. One change is a JSON merge patch of one TCPRoute's backendRef sent to the \
             API server; the clock runs from just before the request until the agent's pinned \
             `blixt_frontends` entry points at a new ring, whose first slot is checked as \
             above. The path: the API server stores the patch and notifies the controller's \
             watch, the controller translates and publishes a snapshot, the agent receives it \
             over the stream and applies it. The changes start once the agent has programmed \
             every route and no Gateway or TCPRoute has been written for 2 s (the statuses \
             the controller writes after its first pass, and their watch echoes, are over), \
             one at a time, 250 ms apart. A Gateway already `Programmed` stays so while an \
             agent applies a change of its routes (for up to 1 s), so a change writes the \
             route's status but not the Gateway's.\n\n\
             | routes | endpoints | changes | p50 ms | p99 ms | max ms | first programmed s | agent RSS MiB (own / peak) |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for &n in &k8s_counts {
            let k = |what: &str| r.metric(&kubernetes_name(n, what));
            let (Some(c), Some(p99)) = (k("change_ms"), k("change_p99_ms")) else {
                continue;
            };
            let _ = writeln!(
                md,
                "| {n} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
                n * endpoints,
                c.runs,
                c.median,
                p99.median,
                c.max,
                k("first_programmed_s").map_or(f64::NAN, |m| m.median),
                rss_cell(k("agent_rss_mib")),
            );
        }
        md.push('\n');
    }

    let mut goals = Vec::new();
    if let Some(p) = get(GOAL_ROUTES, "change_p99_ms") {
        goals.push(GoalRow {
            goal: format!("route change → programmed p99 < {GOAL_P99_MS} ms at {GOAL_ROUTES} routes (standalone)"),
            measured: format!("{:.1} ms", p.median),
            met: Some(p.median < GOAL_P99_MS),
        });
    }
    if let Some(p) = r.metric(&kubernetes_name(GOAL_ROUTES, "change_p99_ms")) {
        goals.push(GoalRow {
            goal: format!(
                "route change → programmed p99 < {GOAL_P99_MS} ms at {GOAL_ROUTES} routes \
                 (Kubernetes: API server → controller → stream → agent)"
            ),
            measured: format!("{:.1} ms", p.median),
            met: Some(p.median < GOAL_P99_MS),
        });
    }
    goals.push(match controller {
        Some(c) => GoalRow {
            goal: format!(
                "controller RSS < {GOAL_CONTROLLER_MB} MB at 10k routes / 100k endpoints"
            ),
            measured: format!("{:.0} MB ({:.0} MiB)", c.median * 1.048_576, c.median),
            met: Some(c.median * 1.048_576 < GOAL_CONTROLLER_MB),
        },
        None => GoalRow {
            goal: format!(
                "controller RSS < {GOAL_CONTROLLER_MB} MB at 10k routes / 100k endpoints"
            ),
            measured: "not measured in this run (full runs only)".into(),
            met: None,
        },
    });
    Ok(Some(Section {
        markdown: md,
        goals,
    }))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 100.0);
        assert_eq!(percentile(&v, 99.0), 198.0);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
    }
}
