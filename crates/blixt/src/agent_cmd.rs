//! `blixt agent`: the dataplane agent fed by a snapshot file, or by the controller's snapshot
//! stream. With the controller, each generation's TLS passthrough SNI tables come along with
//! its snapshot and are served by [`TlsService`] once the snapshot itself was applied.

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

use crate::tls_service::{serve_metrics, TlsGuard, TlsService};

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
    let rec = Arc::new(Mutex::new(runner::start(&opts)?));
    let metrics = Arc::new(AgentMetrics::default());
    // With a controller, TLS passthrough listeners come with the snapshots: remove local routes
    // of TLS VIPs a killed earlier agent left behind, and stop it however this returns.
    let tls = args.controller.is_some().then(|| {
        if let Err(e) = blixt_tls::steer::flush_stale_routes() {
            tracing::warn!("removing stale local routes of TLS VIPs: {e:#}");
        }
        TlsGuard(Arc::new(TlsService::default()))
    });
    if args.metrics_address != "none" {
        let addr = args
            .metrics_address
            .parse()
            .with_context(|| format!("--metrics-address {:?}", args.metrics_address))?;
        match &tls {
            Some(tls) => serve_metrics(addr, rec.clone(), metrics.clone(), tls.0.clone()),
            None => metrics::serve(addr, rec.clone(), metrics.clone()),
        }
        .context("serving metrics")?;
    }
    let Some(path) = args.snapshot else {
        return from_controller(
            &opts,
            rec,
            &metrics,
            tls.expect("TLS service exists with --controller"),
            ControllerSource {
                endpoint: args.controller.expect("clap: --snapshot or --controller"),
                node_name: args
                    .node_name
                    .context("--node-name (or $NODE_NAME) is required with --controller")?,
                ca: args.controller_ca,
                client_cert: args.client_cert.zip(args.client_key),
                token_file: args.token_file,
            },
        );
    };
    let mut source = FileSource { path, seen: None };
    runner::run(&opts, &rec, &metrics, &mut source, &STOP, |snap| {
        // A line on stdout per applied generation, for scripts and tests to wait on.
        println!(
            "{{\"event\":\"applied\",\"generation\":{}}}",
            snap.generation
        );
    })
}

/// Sends gratuitous ARP / unsolicited NA for `vips` on `ifaces`; a failure is logged (the
/// neighbours then learn the new owner when their entries go stale).
fn gratuitous(ifaces: &[String], vips: &[IpAddr]) {
    match blixt_agent::garp::announce(ifaces, vips) {
        Ok(0) => {}
        Ok(frames) => tracing::info!(?vips, frames, "announced VIPs now owned by this node"),
        Err(e) => tracing::warn!(?vips, "gratuitous ARP / unsolicited NA: {e}"),
    }
}

/// Where and how to subscribe to the controller's snapshots.
struct ControllerSource {
    endpoint: String,
    node_name: String,
    ca: Option<PathBuf>,
    /// Client certificate and key, for mutual TLS.
    client_cert: Option<(PathBuf, PathBuf)>,
    token_file: Option<PathBuf>,
}

/// Produces nothing: with a controller, snapshots are applied by the stream client as they
/// arrive (so each ack tells whether the apply worked); the runner only sweeps.
struct NoFileSource;

impl SnapshotSource for NoFileSource {
    fn poll(&mut self) -> Option<Result<Snapshot>> {
        None
    }
}

fn from_controller(
    opts: &AgentOptions,
    rec: Arc<Mutex<blixt_agent::Reconciler>>,
    metrics: &Arc<AgentMetrics>,
    tls: TlsGuard,
    src: ControllerSource,
) -> Result<()> {
    let mut config = blixt_stream::ClientConfig::new(src.endpoint, src.node_name);
    {
        let mut rec = rec.lock().expect("reconciler");
        config.last_generation = rec.generation().unwrap_or(0);
        // VIPs re-adopted from pinned maps may have moved to another node while this agent
        // was away: answer ARP/NDP for none until the controller says which are ours.
        rec.set_announced(Some(Default::default()))
            .context("clearing announcements of re-adopted VIPs")?;
    }
    config.token = src.token_file.map(blixt_stream::Token::File);
    config.tls = src.ca.map(|ca| blixt_stream::ClientTls {
        ca: blixt_stream::Pem::File(ca),
        domain_name: None,
        identity: src
            .client_cert
            .map(|(cert, key)| (blixt_stream::Pem::File(cert), blixt_stream::Pem::File(key))),
    });
    let client = blixt_stream::SnapshotClient::new(config).context("snapshot client")?;
    let applier = rec.clone();
    let stream_metrics = metrics.clone();
    // TLS passthrough starts with the first generation that has a TLS listener
    let stream_tls = tls.0.clone();
    // Interfaces to send gratuitous ARP / unsolicited NA on when VIPs move here.
    let garp_ifaces = if opts.announce {
        opts.interfaces.clone()
    } else {
        Vec::new()
    };
    let stream = std::thread::Builder::new()
        .name("snapshots".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(client.run(
                |update: blixt_stream::Generation| {
                    let (generation, snap, tls_frontends) =
                        (update.number(), update.snapshot, update.tls);
                    let t = std::time::Instant::now();
                    let result = {
                        let mut rec = applier.lock().expect("reconciler");
                        // The controller's share of VIPs for this node (ARP/NDP answers),
                        // then the snapshot: VIPs that start being announced by either.
                        // The VIPs of TLS listeners are answered like the frontends'.
                        let proxied = tls_frontends.iter().map(|t| t.vip).collect();
                        rec.set_announced(update.announce).and_then(|mut started| {
                            let report = rec.apply(&snap)?;
                            started.extend(&report.announced);
                            started.extend(rec.set_proxied_vips(proxied)?);
                            Ok((report, started))
                        })
                    };
                    match result {
                        Ok((report, started)) => {
                            // VIPs that moved here: tell the neighbours now.
                            gratuitous(&garp_ifaces, &started);
                            // The XDP part is applied; now the TLS part of the same
                            // generation, before the ack. A TLS failure is logged and shown
                            // by the service; TCP and UDP listeners keep serving.
                            stream_tls.apply(generation, tls_frontends);
                            stream_metrics
                                .apply_seconds
                                .observe(t.elapsed().as_secs_f64());
                            stream_metrics.applies.inc();
                            stream_metrics.generation.set(generation as i64);
                            tracing::info!(
                                ?report,
                                elapsed_us = t.elapsed().as_micros() as u64,
                                "applied from the controller"
                            );
                            println!("{{\"event\":\"applied\",\"generation\":{generation}}}");
                            Ok(())
                        }
                        Err(e) => {
                            stream_metrics.refused.inc();
                            tracing::error!(
                                generation,
                                "snapshot refused, previous one keeps serving: {e}"
                            );
                            Err(e.to_string())
                        }
                    }
                },
                async {
                    while !STOP.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            ));
            anyhow::Ok(())
        })?;
    let result = runner::run(opts, &rec, metrics, &mut NoFileSource, &STOP, |_| {});
    if result.is_err() {
        // Let the snapshot thread end too.
        STOP.store(true, Ordering::Relaxed);
    }
    let joined = stream
        .join()
        .map_err(|_| anyhow::anyhow!("snapshot thread panicked"));
    // Leaving (the stream has ended): the controller hands this node's VIPs to other agents
    // as the stream closes; a pinned dataplane that stays behind must not answer for them too.
    if let Err(e) = rec
        .lock()
        .expect("reconciler")
        .set_announced(Some(Default::default()))
    {
        tracing::warn!("withdrawing VIP announcements at exit: {e}");
    }
    drop(tls);
    result?;
    joined??;
    Ok(())
}
