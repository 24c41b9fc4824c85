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
}

impl Results {
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
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
