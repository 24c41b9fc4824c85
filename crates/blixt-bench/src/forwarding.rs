//! Suite 2, LB forwarding capacity (issue 6). Not measured yet: the run records no metric and the report
//! lists the suite under "Not yet measured".

use anyhow::Result;

use crate::results::{Machine, Results};
use crate::suite::{PlotDir, Section, SuiteOutput};
use crate::Mode;

/// Measures suite 2.
pub fn run(_mode: Mode, _machine: &Machine) -> Result<SuiteOutput> {
    Ok(SuiteOutput::default())
}

/// The report's section for suite 2, or `None` when the run has no metric of it.
pub fn section(_r: &Results, _plots: &PlotDir<'_>) -> Result<Option<Section>> {
    Ok(None)
}
