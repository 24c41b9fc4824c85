//! `blixt-bench-controller-rss [--routes N] [--endpoints E] BINARY[,KEY=VALUE...]...`: the
//! controller-memory part of suite 4 alone, for comparing builds (or allocator settings given
//! as environment variables) against one populated API server instead of recreating 30,000
//! objects for each. Every BINARY is a `blixt` executable; it is measured once, in the order
//! given, and one line per measurement is printed (VmRSS, VmHWM, RssAnon in MiB and MB).
//! The first measurement is the suite's own (a fresh controller on objects without status);
//! the later ones start on objects that carry the statuses of the earlier runs, as a restarted
//! controller would.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::{Context, Result};
use blixt_bench::control_plane::kubernetes::Populated;
use clap::Parser;

#[derive(Parser, Debug)]
struct Cli {
    /// Routes (one Service of `endpoints` endpoints each).
    #[arg(long, default_value_t = 10_000)]
    routes: usize,
    /// Ready endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// `blixt` binaries to measure, each optionally followed by `,KEY=VALUE` environment
    /// variables (e.g. `target/release/blixt,MALLOC_ARENA_MAX=2`).
    #[arg(required = true)]
    binaries: Vec<String>,
}

/// One `BINARY[,KEY=VALUE...]` argument.
fn parse(spec: &str) -> Result<(PathBuf, Vec<(String, String)>)> {
    let mut parts = spec.split(',');
    let binary = PathBuf::from(parts.next().unwrap_or_default());
    let env = parts
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{spec}: {kv:?} is not KEY=VALUE"))
        })
        .collect::<Result<_>>()?;
    Ok((binary, env))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runs = cli
        .binaries
        .iter()
        .map(|s| parse(s))
        .collect::<Result<Vec<_>>>()?;
    let populated = Populated::create(cli.routes, cli.endpoints)?;
    println!(
        "{} routes x {} endpoints: {} objects created in {:.0} s",
        cli.routes, cli.endpoints, populated.objects, populated.create_s
    );
    for (spec, (binary, env)) in cli.binaries.iter().zip(runs) {
        let (settle_s, rss) = populated
            .measure(&binary, &env)
            .with_context(|| format!("measuring {spec}"))?;
        let mb = |mib: f64| mib * 1.048_576;
        println!(
            "{spec}: VmRSS {:.0} MiB ({:.0} MB), VmHWM {:.0} MiB ({:.0} MB), RssAnon {:.0} MiB, \
             statuses after {settle_s:.0} s",
            rss.rss,
            mb(rss.rss),
            rss.peak,
            mb(rss.peak),
            rss.anon
        );
    }
    Ok(())
}
