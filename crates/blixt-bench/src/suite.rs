//! What a suite added after 1 and 5 hands back to the harness: its metrics, findings and sizes
//! from a run ([`SuiteOutput`]), and its part of the report ([`Section`]): markdown, rows for
//! the goals table and plots it drew itself. Suites 2, 3, 4 and 6 ([`crate::forwarding`],
//! [`crate::end_to_end`], [`crate::control_plane`], [`crate::tls`]) each own one module with a
//! `run` and a `section` of these shapes, so the harness and the report only call them.

use std::collections::BTreeMap;
use std::path::Path;

use crate::results::{Machine, Metric, Results};
use crate::Mode;

/// The results of one suite's run.
#[derive(Debug, Default)]
pub struct SuiteOutput {
    pub metrics: Vec<Metric>,
    /// Observations worth reading next to the numbers (e.g. a peer that could not run).
    pub findings: Vec<String>,
    /// Sizes used, by name without the suite's prefix (the harness adds it).
    pub sizes: BTreeMap<String, u64>,
}

/// One row of the report's goals table.
#[derive(Debug, Clone)]
pub struct GoalRow {
    pub goal: String,
    pub measured: String,
    /// `None` when this run could not decide (e.g. a peer missing).
    pub met: Option<bool>,
}

/// Where a suite draws its plots: `dir` on disk, linked as `link_prefix/<file>` from the report.
#[derive(Debug, Clone)]
pub struct PlotDir<'a> {
    pub dir: &'a Path,
    pub link_prefix: &'a str,
}

impl PlotDir<'_> {
    /// The markdown link of a plot file drawn into [`PlotDir::dir`].
    pub fn link(&self, file: &str) -> String {
        format!("{}/{file}", self.link_prefix.trim_end_matches('/'))
    }
}

/// A suite's part of the report; `None` from `section` when the run has none of its metrics.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// Markdown starting with its `## Suite N: ...` heading.
    pub markdown: String,
    pub goals: Vec<GoalRow>,
}

/// Signature of a suite's run function.
pub type RunFn = fn(Mode, &Machine) -> anyhow::Result<SuiteOutput>;
/// Signature of a suite's report function.
pub type SectionFn = fn(&Results, &PlotDir<'_>) -> anyhow::Result<Option<Section>>;

/// A suite after 1 and 5: its number, name, and functions.
#[derive(Debug)]
pub struct Suite {
    pub number: u32,
    /// Prefix of its metric and size names, e.g. "forwarding".
    pub prefix: &'static str,
    pub run: RunFn,
    pub section: SectionFn,
    /// The goal of issue 6 it is judged against, shown as "not yet measured" without numbers.
    pub goal: &'static str,
    /// What it measures, for the report's "Not measured" list.
    pub what: &'static str,
}
