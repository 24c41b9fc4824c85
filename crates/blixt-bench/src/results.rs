//! `target/bench/results.json`: one entry per metric, each with its unit, the value of every
//! system measured (median, min, max, runs), ratios of Blixt to its peers and the machine.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// Version of the file's layout; bump on incompatible changes.
pub const SCHEMA: u32 = 1;

/// Name under which Blixt's own value is stored in [`Metric::systems`].
pub const BLIXT: &str = "blixt";

/// The machine a run was taken on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub cpu: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine { cores, kernel, cpu }
    }
}

/// A goal from the issue, and whether this run met it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    pub text: String,
    pub met: bool,
}

/// `(median, min, max, runs)` of one system.
pub type Value = Summary;

/// One measured quantity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Suite number and name, e.g. "1 per-packet cost".
    pub suite: String,
    /// Dotted name, e.g. "tcp_established.hot_loop.above_floor".
    pub name: String,
    pub unit: String,
    /// Value per system: "blixt" and its peers in this suite (e.g. "floor", "empty", "ideal").
    pub systems: BTreeMap<String, Value>,
    /// Blixt's median over each peer's median, keyed "blixt/<peer>".
    pub ratios: BTreeMap<String, f64>,
    /// Blixt's value, repeated at the top level for readers of the file.
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub goal: Option<Goal>,
    /// What the number means, in a sentence.
    pub note: String,
    pub machine: Machine,
}

impl Metric {
    /// A metric whose Blixt value is `blixt`, with `peers` beside it (ratios are computed).
    pub fn new(
        suite: &str,
        name: &str,
        unit: &str,
        blixt: Value,
        peers: &[(&str, Value)],
        note: &str,
        machine: &Machine,
    ) -> Metric {
        let mut systems = BTreeMap::new();
        systems.insert(BLIXT.to_string(), blixt);
        let mut ratios = BTreeMap::new();
        for (peer, v) in peers {
            systems.insert((*peer).to_string(), *v);
            if v.median != 0.0 {
                ratios.insert(format!("{BLIXT}/{peer}"), blixt.median / v.median);
            }
        }
        Metric {
            suite: suite.into(),
            name: name.into(),
            unit: unit.into(),
            systems,
            ratios,
            median: blixt.median,
            min: blixt.min,
            max: blixt.max,
            runs: blixt.runs,
            goal: None,
            note: note.into(),
            machine: machine.clone(),
        }
    }

    pub fn with_goal(mut self, text: &str, met: bool) -> Metric {
        self.goal = Some(Goal {
            text: text.into(),
            met,
        });
        self
    }

    pub fn system(&self, name: &str) -> Option<&Value> {
        self.systems.get(name)
    }
}

/// What the verifier and the kernel say about one loaded program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramStats {
    pub name: String,
    pub role: String,
    /// Instructions the verifier processed (all paths walked; `verified_insns`).
    pub verified_insns: Option<u32>,
    /// Instructions after the verifier's rewrites (`xlated_prog_len / 8`).
    pub xlated_insns: Option<u32>,
    /// Bytes of native code.
    pub jited_bytes: u32,
}

/// Everything one `blixt-bench` run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub schema: u32,
    pub mode: String,
    /// Seconds since the Unix epoch when the run ended.
    pub finished_unix: u64,
    /// Wall-clock seconds the run took.
    pub elapsed_s: f64,
    pub machine: Machine,
    /// Sizes used (iterations, rounds, table sizes), by name.
    pub sizes: BTreeMap<String, u64>,
    pub metrics: Vec<Metric>,
    pub programs: Vec<ProgramStats>,
    /// perf profiles of the hot loops (empty when perf was not available).
    #[serde(default)]
    pub profiles: Vec<crate::profile::Profile>,
    /// Observations of the run worth reading next to the numbers (e.g. a path much slower
    /// than expected and why).
    pub findings: Vec<String>,
    /// Suites kept from earlier runs when this run measured only some ([`Results::merge`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<EarlierRun>,
}

/// Suites whose figures come from an earlier run than the file's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlierRun {
    pub suites: Vec<u32>,
    pub mode: String,
    pub finished_unix: u64,
    pub kernel: String,
}

/// The suite a metric belongs to: the number its `suite` field starts with.
fn metric_suite(m: &Metric) -> Option<u32> {
    m.suite.split_whitespace().next()?.parse().ok()
}

/// The suite a size belongs to, by its name's prefix.
fn size_suite(name: &str) -> Option<u32> {
    if let Some(n) = name.strip_prefix("took_s.suite") {
        return n.parse().ok();
    }
    let prefix = name.split('.').next()?;
    match prefix {
        "packet_cost" => Some(1),
        "maglev" => Some(5),
        p => crate::EXTRA_SUITES
            .iter()
            .find(|s| s.prefix == p)
            .map(|s| s.number),
    }
}

impl Results {
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// Suites this file has figures of.
    pub fn suites(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.metrics.iter().filter_map(metric_suite).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Keeps from `old` every suite this run did not measure (`ran`): its metrics, sizes,
    /// findings, and for suite 1 its programs and profiles, so that a run of some suites
    /// regenerates the whole report. What came from where is recorded in
    /// [`Results::earlier`]. Returns the suites kept.
    pub fn merge(&mut self, old: Results, ran: &[u32]) -> Vec<u32> {
        let keep = |s: Option<u32>| s.is_some_and(|s| !ran.contains(&s));
        let kept: Vec<u32> = old
            .suites()
            .into_iter()
            .filter(|s| !ran.contains(s))
            .collect();
        if kept.is_empty() {
            return kept;
        }
        self.metrics.extend(
            old.metrics
                .iter()
                .filter(|m| keep(metric_suite(m)))
                .cloned(),
        );
        self.metrics.sort_by_key(|m| metric_suite(m).unwrap_or(0));
        for (k, v) in &old.sizes {
            if keep(size_suite(k)) {
                self.sizes.entry(k.clone()).or_insert(*v);
            }
        }
        self.findings.extend(
            old.findings
                .iter()
                .filter(|f| keep(crate::finding_suite(f)))
                .cloned(),
        );
        if !ran.contains(&1) {
            self.programs = old.programs.clone();
            self.profiles = old.profiles.clone();
        }
        // suites the old file itself had kept from still older runs stay attributed to those
        let mut own = kept.clone();
        for e in &old.earlier {
            let suites: Vec<u32> = e
                .suites
                .iter()
                .copied()
                .filter(|s| kept.contains(s))
                .collect();
            own.retain(|s| !suites.contains(s));
            if !suites.is_empty() {
                self.earlier.push(EarlierRun {
                    suites,
                    ..e.clone()
                });
            }
        }
        if !own.is_empty() {
            self.earlier.push(EarlierRun {
                suites: own,
                mode: old.mode.clone(),
                finished_unix: old.finished_unix,
                kernel: old.machine.kernel.clone(),
            });
        }
        kept
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }

    pub fn read(path: &Path) -> Result<Results> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: &str, t: u64, suites: &[(u32, &str)]) -> Results {
        let machine = Machine {
            cores: 2,
            kernel: format!("k{t}"),
            cpu: "c".into(),
        };
        let v = Summary::exact(1.0);
        Results {
            schema: SCHEMA,
            mode: mode.into(),
            finished_unix: t,
            elapsed_s: 1.0,
            machine: machine.clone(),
            sizes: suites
                .iter()
                .map(|(n, p)| (format!("{p}.x"), u64::from(*n)))
                .chain(suites.iter().map(|(n, _)| (format!("took_s.suite{n}"), t)))
                .collect(),
            metrics: suites
                .iter()
                .map(|(n, p)| {
                    Metric::new(
                        &format!("{n} s"),
                        &format!("{p}.m"),
                        "u",
                        v,
                        &[],
                        "",
                        &machine,
                    )
                })
                .collect(),
            programs: Vec::new(),
            profiles: Vec::new(),
            findings: vec!["forwarding: f".into(), "e2e: g".into()],
            earlier: Vec::new(),
        }
    }

    #[test]
    fn merge_keeps_the_suites_not_run() {
        let old = run("full", 1, &[(2, "forwarding"), (3, "e2e"), (5, "maglev")]);
        let mut new = run("quick", 2, &[(3, "e2e")]);
        new.findings = vec!["e2e: new".into()];
        let kept = new.merge(old, &[3]);
        assert_eq!(kept, vec![2, 5]);
        assert_eq!(new.suites(), vec![2, 3, 5]);
        assert_eq!(new.sizes.get("took_s.suite3"), Some(&2));
        assert_eq!(new.sizes.get("took_s.suite2"), Some(&1));
        assert_eq!(new.sizes.get("maglev.x"), Some(&5));
        assert_eq!(new.findings, vec!["e2e: new", "forwarding: f"]);
        assert_eq!(new.earlier.len(), 1);
        assert_eq!(new.earlier[0].suites, vec![2, 5]);
        assert_eq!(new.earlier[0].mode, "full");
        // merged again: what came from the first run stays attributed to it
        let mut third = run("quick", 3, &[(5, "maglev")]);
        third.findings.clear();
        assert_eq!(third.merge(new, &[5]), vec![2, 3]);
        let by: Vec<(Vec<u32>, u64)> = third
            .earlier
            .iter()
            .map(|e| (e.suites.clone(), e.finished_unix))
            .collect();
        assert_eq!(by, vec![(vec![2], 1), (vec![3], 2)]);
    }
}
