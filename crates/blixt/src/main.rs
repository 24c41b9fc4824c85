//! The blixt command.

mod agent_cmd;
mod controller_cmd;
mod demo;
mod inspect_cmd;
mod run_cmd;
mod status_cmd;
mod status_socket;

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
    /// Standalone mode: load balance on this host from Gateway API manifests (a file or a
    /// directory), re-applied whenever they change.
    Run(run_cmd::RunArgs),
    /// Show Gateways, listeners and routes with their conditions.
    Status(status_cmd::StatusArgs),
    /// Run the Kubernetes controller: watch Gateway API objects, write statuses (as the elected
    /// leader) and publish dataplane snapshots.
    Controller(controller_cmd::ControllerArgs),
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

/// mimalloc rather than glibc's malloc: a route change re-translates and re-applies the whole
/// config, allocation-heavy work that ran 1.3–1.5x faster with it at 1,000–10,000 routes in
/// `blixt-bench --quick --suites 4`, and the agent's own memory at 10,000 routes fell from
/// 783 to 256 MiB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => run_cmd::run(args),
        Command::Status(args) => status_cmd::run(args),
        Command::Agent(args) => agent_cmd::run(args),
        Command::Controller(args) => controller_cmd::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Inspect(args) => inspect_cmd::run(args),
    }
}
