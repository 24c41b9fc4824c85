//! The agent's main loop: load (or re-adopt) the dataplane, attach it, then hand every
//! generation a source produces to the [`Node`] and sweep conntrack, until asked to stop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use blixt_bpf::{Dataplane, DataplaneOptions};
use blixt_core::generation::Generation;
use tracing::{error, info, warn};

use crate::node::Node;
use crate::reconciler::{NodeConfig, Reconciler};

/// Where generations come from when the loop asks for them: a [`SnapshotFile`], the
/// translator over manifests (`blixt_standalone::StandaloneSource`). (The controller's stream
/// pushes its generations to [`Node::apply`] itself, so that each ack says whether the apply
/// worked: see [`crate::controller`].)
pub trait GenerationSource {
    /// A new generation when there is one, an error (reported, the last good one keeps
    /// serving) when the source has something it cannot turn into one, `None` when nothing
    /// changed.
    fn poll(&mut self) -> Option<Result<Generation>>;

    /// Waits up to `timeout` before the next [`GenerationSource::poll`]. A source that can
    /// tell when it changed (a file watcher) returns as soon as it did, so a change is applied
    /// without waiting out the poll interval; the default just sleeps.
    fn wait(&mut self, timeout: Duration) {
        std::thread::sleep(timeout);
    }

    /// Called once the node applied `generation` (statuses, readiness lines); the default
    /// prints the `applied` line.
    fn applied(&mut self, generation: &Generation) {
        print_applied(generation.number(), "");
    }
}

/// A snapshot file (JSON, the [`blixt_core::snapshot::Snapshot`] shape), re-read whenever its
/// modification time changes; every VIP is announced and there is no TLS listener.
#[derive(Debug)]
pub struct SnapshotFile {
    path: PathBuf,
    seen: Option<SystemTime>,
}

impl SnapshotFile {
    pub fn new(path: PathBuf) -> Self {
        SnapshotFile { path, seen: None }
    }
}

impl GenerationSource for SnapshotFile {
    fn poll(&mut self) -> Option<Result<Generation>> {
        let mtime = std::fs::metadata(&self.path).and_then(|m| m.modified());
        let mtime = match mtime {
            Ok(t) => t,
            Err(e) => return Some(Err(anyhow::anyhow!("{}: {e}", self.path.display()))),
        };
        if self.seen == Some(mtime) {
            return None;
        }
        self.seen = Some(mtime);
        Some(
            std::fs::read(&self.path)
                .with_context(|| format!("reading {}", self.path.display()))
                .and_then(|b| {
                    serde_json::from_slice(&b)
                        .with_context(|| format!("{}: not a snapshot", self.path.display()))
                })
                .map(Generation::of),
        )
    }
}

/// Prints `{"event":"applied",<fields>"generation":N}` on stdout, the line scripts, tests and
/// the benchmark wait on; `fields` are more `"key":value,` pairs. `generation` stays last:
/// readers match `"generation":N}`.
pub fn print_applied(generation: u64, fields: &str) {
    println!("{{\"event\":\"applied\",{fields}\"generation\":{generation}}}");
}

/// Everything the agent needs besides its snapshot source.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub dataplane: DataplaneOptions,
    pub interfaces: Vec<String>,
    pub node: NodeConfig,
    /// How often the source is polled (at the latest: a source may wake the loop sooner, see
    /// [`GenerationSource::wait`]).
    pub poll_interval: Duration,
    /// How often conntrack is swept for expired flows.
    pub sweep_interval: Duration,
    /// Answer ARP and NDP for the VIPs on the attached interfaces.
    pub announce: bool,
    /// Remove pinned programs and maps on exit (the dataplane stops with the agent). Off by
    /// default: pinned, the dataplane keeps forwarding while the agent restarts or upgrades.
    pub remove_on_exit: bool,
}

/// Writes a `net` sysctl of the calling thread's network namespace, given by its path
/// components under /proc/sys/net (so an interface name with a dot, such as a VLAN `eth0.100`,
/// stays one component). In a container `/proc/sys` is read-only: the deployment mounts the
/// host's `/proc/sys/net` elsewhere and names it in `BLIXT_PROC_SYS_NET`.
fn sysctl_net(path: &[&str], value: &str) -> std::io::Result<()> {
    let mut file = std::env::var_os("BLIXT_PROC_SYS_NET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc/sys/net"));
    file.extend(path);
    std::fs::write(&file, value)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", file.display())))
}

/// `bpf_fib_lookup()` reports FWD_DISABLED unless forwarding is on for the ingress device.
fn enable_forwarding(iface: &str) -> Result<()> {
    sysctl_net(&["ipv4", "conf", iface, "forwarding"], "1")
        .with_context(|| format!("enabling IPv4 forwarding on {iface}"))?;
    if let Err(e) = sysctl_net(&["ipv6", "conf", iface, "forwarding"], "1") {
        warn!(%iface, "enabling IPv6 forwarding: {e}");
    }
    Ok(())
}

/// Loads, attaches, and returns a reconciler ready for snapshots (the one [`Node::start`]
/// wraps). Printed once ready: the attach mode per interface and how many frontends were
/// re-adopted from pins.
pub fn start(opts: &AgentOptions) -> Result<Reconciler> {
    let mut dp = Dataplane::load(opts.dataplane.clone()).context("loading the dataplane")?;
    log_dataplane(&dp);
    for iface in &opts.interfaces {
        enable_forwarding(iface)?;
        let mode = dp
            .attach(iface)
            .with_context(|| format!("attaching to {iface}"))?;
        dp.announce_on(iface, opts.announce)
            .with_context(|| format!("announcing VIPs on {iface}"))?;
        info!(%iface, ?mode, announce = opts.announce, "attached");
    }
    let mut rec = Reconciler::new(dp).context("reading the dataplane state")?;
    if rec.adopted_frontends() > 0 {
        info!(
            frontends = rec.adopted_frontends(),
            "re-adopted pinned state"
        );
    }
    rec.set_node_config(&opts.node)?;
    Ok(rec)
}

/// Logs, once at start, what the kernel offers and what the dataplane made of it.
fn log_dataplane(dp: &Dataplane) {
    let caps = dp.capabilities();
    let plan = dp.plan();
    info!(
        kernel = %caps.kernel_release,
        attach = %plan.requested,
        hook = plan.hook.as_str(),
        neigh = ?plan.neigh,
        "dataplane loaded"
    );
    for line in caps.report_lines() {
        info!("capability {line}");
    }
    for line in plan.fallback_lines() {
        warn!("fallback {line}");
    }
}

/// Runs until `stop` is set: each generation of `source` is applied by `node` whole or refused
/// whole, and conntrack is swept every [`AgentOptions::sweep_interval`].
pub fn run(
    opts: &AgentOptions,
    node: &Node,
    source: &mut dyn GenerationSource,
    stop: &AtomicBool,
) -> Result<()> {
    let mut last_sweep = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match source.poll() {
            Some(Ok(generation)) => {
                // a refused generation is logged and counted by the node
                let applied = node.apply(&generation).is_ok();
                if applied {
                    source.applied(&generation);
                }
            }
            Some(Err(e)) => {
                node.metrics().refused.inc();
                error!("configuration refused, previous one keeps serving: {e:#}")
            }
            None => {}
        }
        if last_sweep.elapsed() >= opts.sweep_interval {
            node.sweep();
            last_sweep = Instant::now();
        }
        source.wait(opts.poll_interval);
    }
    if opts.remove_on_exit {
        if let Some(dir) = &opts.dataplane.pin_dir {
            Dataplane::remove_pinned(dir)?;
        }
    }
    Ok(())
}
