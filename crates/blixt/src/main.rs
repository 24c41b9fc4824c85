//! The blixt command.

mod agent_cmd;
mod demo;
mod inspect_cmd;

use clap::{Parser, Subcommand};

/// Blixt: a layer-4 load balancer for the Kubernetes Gateway API, on an eBPF dataplane.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node agent: program the dataplane from a snapshot file (JSON), re-applied
    /// whenever the file changes.
    Agent(agent_cmd::AgentArgs),
    /// Build a namespace lab, run the agent in it, send real traffic and show how it was
    /// balanced; cleans up after itself. Needs root.
    Demo(demo::DemoArgs),
    /// Show the live dataplane from the pinned maps: frontends, backends, Maglev shares,
    /// counters, conntrack entries, drop reasons.
    Inspect(inspect_cmd::InspectArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Agent(args) => agent_cmd::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Inspect(args) => inspect_cmd::run(args),
    }
}
