//! `blixt-bench`: runs Blixt's benchmark suites (`make bench`), writes
//! `target/bench/results.json` and regenerates `docs/benchmarks.md` with its plots.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::{bail, Result};
use blixt_bench::packet_cost::Path;
use blixt_bench::results::Results;
use blixt_bench::{report, Mode};
use clap::Parser;

/// Blixt's benchmarks (issue 6): per-packet cost (suite 1), forwarding capacity (2), end to
/// end (3), control plane (4), Maglev disruption (5) and TLS passthrough (6). Needs root. Every figure is a median over rounds taken in this one
/// run, next to its peers (empty program, parse-only floor, ideal) measured the same way.
#[derive(Debug, Parser)]
#[command(name = "blixt-bench", version)]
struct Cli {
    /// Smaller sizes (`make bench QUICK=1`): the same suites and files, well under 5 minutes.
    #[arg(long)]
    quick: bool,
    /// Test sizes: checks every path in seconds; the numbers mean nothing.
    #[arg(long, conflicts_with = "quick")]
    tiny: bool,
    /// Where results.json is written.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// The report to (re)generate.
    #[arg(long, default_value = "docs/benchmarks.md")]
    doc: PathBuf,
    /// Directory for the report's PNG plots (linked relative to the report).
    #[arg(long, default_value = "docs/bench")]
    plots: PathBuf,
    /// Do not measure: regenerate the report and plots from an existing results.json.
    #[arg(long)]
    report_only: bool,
    /// Run only these suites (comma-separated numbers; default: all of 1-6). The other suites'
    /// figures are kept from the results.json already there, so the report stays whole.
    #[arg(long, value_delimiter = ',')]
    suites: Vec<u32>,
    /// With --suites: write only this run's suites, dropping the others' earlier figures.
    #[arg(long)]
    no_merge: bool,
    /// Run only these per-packet paths (comma-separated ids, e.g. tcp_established).
    #[arg(long, value_delimiter = ',')]
    paths: Vec<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let results_path = cli.out_dir.join("results.json");
    let results = if cli.report_only {
        Results::read(&results_path)?
    } else {
        for s in &cli.suites {
            if !blixt_bench::SUITES.contains(s) {
                bail!(
                    "suite {s} is not measured yet (have {:?}); see docs/benchmarks.md",
                    blixt_bench::SUITES
                );
            }
        }
        let paths = cli
            .paths
            .iter()
            .map(|p| {
                Path::from_id(p).ok_or_else(|| {
                    let ids: Vec<_> = Path::ALL.iter().map(|p| p.id()).collect();
                    anyhow::anyhow!("unknown path {p}; one of {}", ids.join(", "))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mode = if cli.tiny {
            Mode::Tiny
        } else if cli.quick {
            Mode::Quick
        } else {
            Mode::Full
        };
        blixt_bench::require_root();
        let mut r = blixt_bench::run(mode, &cli.suites, &paths)?;
        if !cli.suites.is_empty() && !cli.no_merge && results_path.exists() {
            match Results::read(&results_path) {
                Ok(old) => {
                    let kept = r.merge(old, &cli.suites);
                    if !kept.is_empty() {
                        eprintln!(
                            "blixt-bench: kept suites {kept:?} from the earlier {} (--no-merge \
                             drops them)",
                            results_path.display()
                        );
                    }
                }
                Err(e) => eprintln!(
                    "blixt-bench: not merging with {}: {e:#}",
                    results_path.display()
                ),
            }
        }
        r.write(&results_path)?;
        eprintln!("blixt-bench: wrote {}", results_path.display());
        r
    };
    report::write(&results, &cli.doc, &cli.plots)?;
    eprintln!(
        "blixt-bench: wrote {} and plots in {}",
        cli.doc.display(),
        cli.plots.display()
    );
    Ok(())
}
