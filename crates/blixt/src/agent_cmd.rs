//! `blixt agent`: the node agent fed by a snapshot file, or by the controller's snapshot
//! stream. Either way, each generation is applied by the [`Node`]; with the controller, its TLS
//! passthrough SNI tables and this node's share of the VIPs come along with its snapshot.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use blixt_agent::runner::{self, AgentOptions, SnapshotFile};
use blixt_agent::{Node, NodeConfig, NodeServices};
use blixt_bpf::DataplaneOptions;

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Snapshot file (JSON, the blixt_core::snapshot::Snapshot shape), re-applied when it
    /// changes. Either this or --controller.
    #[arg(
        long,
        required_unless_present = "controller",
        conflicts_with = "controller"
    )]
    snapshot: Option<PathBuf>,
    /// The controller's snapshot stream, e.g. https://blixt-controller.blixt-system.svc:9443.
    #[arg(long)]
    controller: Option<String>,
    /// This node's name (with --controller).
    #[arg(long, env = "NODE_NAME", requires = "controller")]
    node_name: Option<String>,
    /// CA of the controller's serving certificate (PEM), for https endpoints.
    #[arg(long, requires = "controller")]
    controller_ca: Option<PathBuf>,
    /// Client certificate (PEM) presented to the controller, for controllers that require
    /// mutual TLS (`blixt controller --client-ca`); its subject CN must be this node's name.
    /// Re-read on every connection (rotated in place).
    #[arg(long, requires_all = ["controller_ca", "client_key"])]
    client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Service-account token presented to the controller (re-read on every connection).
    #[arg(long, requires = "controller")]
    token_file: Option<PathBuf>,
    /// Interface to attach the load balancer to (repeat for several).
    #[arg(long = "interface", short = 'i', required = true)]
    interfaces: Vec<String>,
    /// Where the load balancer runs: auto (XDP where the kernel and driver support it, TC
    /// ingress elsewhere), xdp (refuse to start without it) or tc.
    #[arg(long, default_value = "auto")]
    attach: blixt_bpf::AttachMode,
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

pub fn run(args: AgentArgs) -> Result<()> {
    let (port_min, port_max) = parse_port_range(&args.port_range)?;
    let opts = AgentOptions {
        dataplane: DataplaneOptions {
            max_frontends: args.max_frontends,
            max_backends: args.max_backends,
            ring_size: args.ring_size,
            conntrack_entries: args.conntrack_entries,
            pin_dir: (args.pin_dir != "none").then(|| PathBuf::from(&args.pin_dir)),
            attach: args.attach,
            force_off: Vec::new(),
        }
        .force_off_from_env()?,
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
    // With a controller, TLS passthrough listeners come with the snapshots, and VIPs move
    // between nodes.
    let services = NodeServices {
        tls_passthrough: args.controller.is_some(),
        gratuitous_arp: args.controller.is_some(),
    };
    let node = Arc::new(Node::start(&opts, services)?);
    if args.metrics_address != "none" {
        let addr = args
            .metrics_address
            .parse()
            .with_context(|| format!("--metrics-address {:?}", args.metrics_address))?;
        node.serve_metrics(addr).context("serving metrics")?;
    }
    let Some(path) = args.snapshot else {
        let endpoint = args.controller.expect("clap: --snapshot or --controller");
        let node_name = args
            .node_name
            .context("--node-name (or $NODE_NAME) is required with --controller")?;
        let mut config = blixt_stream::ClientConfig::new(endpoint, node_name);
        config.token = args.token_file.map(blixt_stream::Token::File);
        config.tls = args.controller_ca.map(|ca| blixt_stream::ClientTls {
            ca: blixt_stream::Pem::File(ca),
            domain_name: None,
            identity: args
                .client_cert
                .zip(args.client_key)
                .map(|(cert, key)| (blixt_stream::Pem::File(cert), blixt_stream::Pem::File(key))),
        });
        let result = blixt_agent::controller::follow(&opts, &node, config, &STOP);
        node.shutdown();
        return result;
    };
    runner::run(&opts, &node, &mut SnapshotFile::new(path), &STOP)
}
