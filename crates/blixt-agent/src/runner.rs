//! The agent's main loop: load (or re-adopt) the dataplane, attach it, then apply every snapshot
//! a source produces and sweep conntrack, until asked to stop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use blixt_bpf::{Dataplane, DataplaneOptions};
use blixt_core::snapshot::Snapshot;
use tracing::{error, info, warn};

use crate::metrics::AgentMetrics;
use crate::reconciler::{monotonic_ns, NodeConfig, Reconciler};

/// Where snapshots come from: a file, the translator over manifests, the controller's stream.
pub trait SnapshotSource {
    /// A new snapshot when there is one, an error (reported, the last good one keeps serving)
    /// when the source has something it cannot turn into a snapshot, `None` when nothing changed.
    fn poll(&mut self) -> Option<Result<Snapshot>>;

    /// Waits up to `timeout` before the next [`SnapshotSource::poll`]. A source that can tell
    /// when it changed (a file watcher) returns as soon as it did, so a change is applied
    /// without waiting out the poll interval; the default just sleeps.
    fn wait(&mut self, timeout: Duration) {
        std::thread::sleep(timeout);
    }
}

/// Everything the agent needs besides its snapshot source.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub dataplane: DataplaneOptions,
    pub interfaces: Vec<String>,
    pub node: NodeConfig,
    /// How often the source is polled (at the latest: a source may wake the loop sooner, see
    /// [`SnapshotSource::wait`]).
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

/// Loads, attaches, and returns a reconciler ready for snapshots. Printed once ready:
/// the attach mode per interface and how many frontends were re-adopted from pins.
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

/// Runs until `stop` is set. Each snapshot is applied whole or refused whole; `on_applied`
/// is called after every successful apply (statuses, readiness lines).
pub fn run(
    opts: &AgentOptions,
    rec: &Arc<Mutex<Reconciler>>,
    metrics: &AgentMetrics,
    source: &mut dyn SnapshotSource,
    stop: &AtomicBool,
    mut on_applied: impl FnMut(&Snapshot),
) -> Result<()> {
    let mut last_sweep = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match source.poll() {
            Some(Ok(snap)) => {
                let t = Instant::now();
                let result = rec.lock().expect("reconciler lock").apply(&snap);
                match result {
                    Ok(report) => {
                        let elapsed = t.elapsed();
                        metrics.apply_seconds.observe(elapsed.as_secs_f64());
                        metrics.applies.inc();
                        metrics.generation.set(snap.generation as i64);
                        info!(?report, elapsed_us = elapsed.as_micros() as u64, "applied");
                        on_applied(&snap);
                    }
                    Err(e) => {
                        metrics.refused.inc();
                        error!(
                            generation = snap.generation,
                            "snapshot refused, previous one keeps serving: {e}"
                        )
                    }
                }
            }
            Some(Err(e)) => {
                metrics.refused.inc();
                error!("configuration refused, previous one keeps serving: {e:#}")
            }
            None => {}
        }
        if last_sweep.elapsed() >= opts.sweep_interval {
            let swept = rec.lock().expect("reconciler lock").sweep(monotonic_ns());
            match swept {
                Ok(r) => {
                    metrics
                        .conntrack_entries
                        .set((r.scanned - r.expired) as i64);
                    if r.expired > 0 {
                        info!(scanned = r.scanned, expired = r.expired, "conntrack sweep");
                    }
                }
                Err(e) => warn!("conntrack sweep: {e}"),
            }
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
