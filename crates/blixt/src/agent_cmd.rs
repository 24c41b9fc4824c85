//! `blixt agent`: the dataplane agent fed by a snapshot file.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use std::sync::{Arc, Mutex};

use blixt_agent::metrics::{self, AgentMetrics};
use blixt_agent::runner::{self, AgentOptions, SnapshotSource};
use blixt_agent::NodeConfig;
use blixt_bpf::DataplaneOptions;
use blixt_core::snapshot::Snapshot;

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Snapshot file (JSON, the blixt_core::snapshot::Snapshot shape).
    #[arg(long)]
    snapshot: PathBuf,
    /// Interface to attach the XDP program to (repeat for several).
    #[arg(long = "interface", short = 'i', required = true)]
    interfaces: Vec<String>,
    /// Node address used as source towards IPv4 backends.
    #[arg(long)]
    snat_v4: Option<IpAddr>,
    /// Node address used as source towards IPv6 backends.
    #[arg(long)]
    snat_v6: Option<IpAddr>,
    /// Source ports allocated for full-NAT, `MIN-MAX`.
    #[arg(long, default_value = "1024-32767")]
    port_range: String,
    /// bpffs directory for pinned maps and links; "none" keeps nothing pinned.
    #[arg(long, default_value = "/sys/fs/bpf/blixt")]
    pin_dir: String,
    /// Slots per Maglev table (a prime).
    #[arg(long, default_value_t = blixt_core::maglev::DEFAULT_TABLE_SIZE)]
    ring_size: u32,
    #[arg(long, default_value_t = 256)]
    max_frontends: u32,
    #[arg(long, default_value_t = 16384)]
    max_backends: u32,
    #[arg(long, default_value_t = 262_144)]
    conntrack_entries: u32,
    /// Seconds between conntrack sweeps.
    #[arg(long, default_value_t = 10)]
    sweep_interval: u64,
    /// Remove the pinned dataplane when the agent exits (traffic stops with it).
    #[arg(long)]
    remove_on_exit: bool,
    /// Address for Prometheus metrics (`/metrics`) and `/healthz`; "none" to disable.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_address: String,
    /// Do not answer ARP/NDP for VIPs (when the VIPs are routed to the node instead).
    #[arg(long)]
    no_announce: bool,
}

pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

pub fn parse_port_range(s: &str) -> Result<(u16, u16)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("--port-range {s:?}: expected MIN-MAX"))?;
    let (a, b): (u16, u16) = (
        a.trim()
            .parse()
            .with_context(|| format!("--port-range {s:?}: bad MIN"))?,
        b.trim()
            .parse()
            .with_context(|| format!("--port-range {s:?}: bad MAX"))?,
    );
    if a == 0 || a > b {
        bail!("--port-range {s:?}: MIN must be at least 1 and not above MAX");
    }
    Ok((a, b))
}

/// Re-reads the snapshot file whenever its modification time changes.
struct FileSource {
    path: PathBuf,
    seen: Option<SystemTime>,
}

impl SnapshotSource for FileSource {
    fn poll(&mut self) -> Option<Result<Snapshot>> {
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
                }),
        )
    }
}

pub fn run(args: AgentArgs) -> Result<()> {
    let (port_min, port_max) = parse_port_range(&args.port_range)?;
    let opts = AgentOptions {
        dataplane: DataplaneOptions {
            max_frontends: args.max_frontends,
            max_backends: args.max_backends,
            ring_size: args.ring_size,
            conntrack_entries: args.conntrack_entries,
            pin_dir: (args.pin_dir != "none").then(|| PathBuf::from(&args.pin_dir)),
        },
        interfaces: args.interfaces,
        node: NodeConfig {
            snat_v4: args.snat_v4,
            snat_v6: args.snat_v6,
            port_min,
            port_max,
            ..NodeConfig::default()
        },
        poll_interval: Duration::from_millis(100),
        sweep_interval: Duration::from_secs(args.sweep_interval),
        remove_on_exit: args.remove_on_exit,
        announce: !args.no_announce,
    };
    install_signal_handlers();
    let rec = Arc::new(Mutex::new(runner::start(&opts)?));
    let metrics = Arc::new(AgentMetrics::default());
    if args.metrics_address != "none" {
        let addr = args
            .metrics_address
            .parse()
            .with_context(|| format!("--metrics-address {:?}", args.metrics_address))?;
        metrics::serve(addr, rec.clone(), metrics.clone()).context("serving metrics")?;
    }
    let mut source = FileSource {
        path: args.snapshot,
        seen: None,
    };
    runner::run(&opts, &rec, &metrics, &mut source, &STOP, |snap| {
        // A line on stdout per applied generation, for scripts and tests to wait on.
        println!(
            "{{\"event\":\"applied\",\"generation\":{}}}",
            snap.generation
        );
    })
}
