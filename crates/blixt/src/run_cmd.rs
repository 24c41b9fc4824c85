//! `blixt run --config PATH`: standalone mode. Manifests from files (Gateway API objects,
//! Services, EndpointSlices, a NodeConfig) go through the translator into snapshots that the
//! in-process agent applies; the config path is watched and every change becomes a new
//! snapshot; statuses are served on a unix socket for `blixt status`.
//!
//! TLS passthrough listeners (TLSRoute) are not in the XDP snapshot: the translator puts their
//! SNI tables in `Translation::tls`, and [`TlsService`] serves them with `blixt-tls` (a tokio
//! proxy steered by sk_lookup) on a runtime owned by this process. A generation's SNI tables
//! are applied right after the agent applied its snapshot, before the generation is announced
//! (`{"event":"applied",...}`) and its statuses are published; see docs/tls-passthrough.md.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use blixt_agent::metrics::{self, AgentMetrics};
use blixt_agent::reconciler::Reconciler;
use blixt_agent::runner::{self, AgentOptions, SnapshotSource};
use blixt_agent::NodeConfig;
use blixt_bpf::DataplaneOptions;
use blixt_core::snapshot::Snapshot;
use blixt_core::tls::TlsFrontend;
use blixt_core::translator::Statuses;
use blixt_standalone::config::{config_files, LoadedConfig, NodeConfigSpec};
use blixt_standalone::status::{report, StatusReport};
use blixt_tls::{ProxyConfig, ProxyStats, Steering, TlsPassthrough};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::agent_cmd::{install_signal_handlers, STOP};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A manifest file, or a directory of them (*.yaml, *.yml; multi-document).
    #[arg(long, short = 'c')]
    config: PathBuf,
}

/// What `blixt status --socket` receives.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusMessage {
    /// Generation of the snapshot the statuses belong to (the one the dataplane serves).
    pub generation: u64,
    /// The config path being served.
    pub config: PathBuf,
    /// Why the newest version of the files was refused, if it was (the previous one serves).
    pub refused: Option<String>,
    pub report: Option<StatusReport>,
    /// TLS passthrough: the SNI tables served and the proxy's counters, read when the socket
    /// is asked (`None`: no TLS listener was ever configured). For `blixt inspect --socket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
}

/// What a translation hands on once the agent has applied its snapshot.
#[derive(Debug)]
struct Pending {
    generation: u64,
    report: StatusReport,
    statuses: Statuses,
    tls: Vec<TlsFrontend>,
}

#[derive(Debug, Default)]
struct Shared {
    current: StatusMessage,
    /// Statuses and SNI tables of a snapshot handed to the agent, published and applied once
    /// the agent has applied it.
    pending: Option<Pending>,
    /// Statuses of the last applied snapshot: carried into the next translation so addresses
    /// and condition transition times stay put.
    applied: Statuses,
}

/// Watches the config path and turns each new version of the files into a snapshot.
struct StandaloneSource {
    path: PathBuf,
    fingerprint: Vec<(PathBuf, Option<SystemTime>, u64)>,
    generation: u64,
    node: NodeConfigSpec,
    shared: Arc<Mutex<Shared>>,
    first: Option<LoadedConfig>,
}

fn fingerprint(path: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut files = config_files(path).unwrap_or_default();
    files.push(path.to_path_buf());
    files
        .into_iter()
        .map(|f| {
            let m = std::fs::metadata(&f).ok();
            let mtime = m.as_ref().and_then(|m| m.modified().ok());
            let len = m.map_or(0, |m| m.len());
            (f, mtime, len)
        })
        .collect()
}

impl StandaloneSource {
    fn translate(&mut self, mut loaded: LoadedConfig) -> Snapshot {
        if loaded.node != self.node {
            warn!(
                "the NodeConfig changed; interfaces, addresses, ports, timeouts and map sizes \
                 take effect at the next start of `blixt run` (routes and backends apply now)"
            );
        }
        let mut shared = self.shared.lock().expect("status lock");
        loaded.carry_over(&shared.applied);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let translation = loaded.translate(&now);
        self.generation += 1;
        let mut snapshot = translation.snapshot;
        snapshot.generation = self.generation;
        shared.pending = Some(Pending {
            generation: self.generation,
            report: report(&loaded.objects, &translation.statuses),
            statuses: translation.statuses,
            tls: translation.tls,
        });
        shared.current.refused = None;
        snapshot
    }
}

impl SnapshotSource for StandaloneSource {
    fn poll(&mut self) -> Option<Result<Snapshot>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(self.translate(first)));
        }
        let fp = fingerprint(&self.path);
        if fp == self.fingerprint {
            return None;
        }
        self.fingerprint = fp;
        match blixt_standalone::load(&self.path) {
            Ok(loaded) => Some(Ok(self.translate(loaded))),
            Err(e) => {
                let msg = e.to_string();
                self.shared.lock().expect("status lock").current.refused = Some(msg.clone());
                Some(Err(anyhow!("{}:\n{msg}", self.path.display())))
            }
        }
    }
}

fn serve_status(path: &Path, shared: Arc<Mutex<Shared>>, tls: Arc<TlsService>) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("status socket {}", path.display()))?;
    info!(socket = %path.display(), "statuses for `blixt status --socket`");
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut msg = shared.lock().map(|s| s.current.clone()).unwrap_or_default();
                msg.tls = tls.status();
                if let Ok(body) = serde_json::to_vec(&msg) {
                    let _ = conn.write_all(&body);
                }
            }
        })?;
    Ok(())
}

/// The agent's settings from a NodeConfig.
pub fn agent_options(spec: &NodeConfigSpec) -> AgentOptions {
    AgentOptions {
        dataplane: DataplaneOptions {
            max_frontends: spec.maps.max_frontends,
            max_backends: spec.maps.max_backends,
            ring_size: spec.maps.maglev_table_size,
            conntrack_entries: spec.maps.conntrack_entries,
            pin_dir: spec.pin_dir.clone(),
        },
        interfaces: spec.interfaces.clone(),
        node: NodeConfig {
            snat_v4: spec.snat_v4,
            snat_v6: spec.snat_v6,
            port_min: spec.port_range.min,
            port_max: spec.port_range.max,
            tcp_syn_timeout_s: spec.timeouts.tcp_syn.0,
            tcp_established_timeout_s: spec.timeouts.tcp_established.0,
            tcp_closing_timeout_s: spec.timeouts.tcp_closing.0,
            udp_timeout_s: spec.timeouts.udp.0,
        },
        poll_interval: Duration::from_millis(100),
        sweep_interval: Duration::from_secs(10),
        remove_on_exit: false,
        announce: spec.announce,
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let loaded = blixt_standalone::load(&args.config)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("loading {}", args.config.display()))?;
    let spec = loaded.node.clone();
    if spec.interfaces.is_empty() {
        warn!("the NodeConfig names no interfaces: nothing will be load-balanced");
    }
    let opts = agent_options(&spec);
    install_signal_handlers();
    let rec = Arc::new(Mutex::new(runner::start(&opts)?));
    let metrics = Arc::new(AgentMetrics::default());
    // Local routes of TLS VIPs that a killed `blixt run` left behind; TLS passthrough itself
    // starts with the first TLS listener.
    if let Err(e) = blixt_tls::steer::flush_stale_routes() {
        warn!("removing stale local routes of TLS VIPs: {e:#}");
    }
    // Stops TLS passthrough (steering, local routes, listeners) however `run` ends.
    let tls = TlsGuard(Arc::new(TlsService::default()));
    if let Some(addr) = spec.metrics_address {
        serve_metrics(addr, rec.clone(), metrics.clone(), tls.0.clone())
            .context("serving metrics")?;
    }
    let shared = Arc::new(Mutex::new(Shared {
        current: StatusMessage {
            config: args.config.clone(),
            ..StatusMessage::default()
        },
        ..Shared::default()
    }));
    if let Some(sock) = &spec.status_socket {
        serve_status(sock, shared.clone(), tls.0.clone())?;
    }
    let mut source = StandaloneSource {
        fingerprint: fingerprint(&args.config),
        path: args.config.clone(),
        generation: 0,
        node: spec.clone(),
        shared: shared.clone(),
        first: Some(loaded),
    };
    let result = runner::run(&opts, &rec, &metrics, &mut source, &STOP, |snap| {
        let pending = shared.lock().expect("status lock").pending.take();
        if let Some(p) = pending.filter(|p| p.generation == snap.generation) {
            // The agent applied the XDP part; now the TLS part of the same generation, then
            // the statuses of both.
            tls.0.apply(p.generation, p.tls);
            let mut s = shared.lock().expect("status lock");
            s.current.generation = p.generation;
            s.current.report = Some(p.report);
            s.applied = p.statuses;
        }
        println!(
            "{{\"event\":\"applied\",\"generation\":{}}}",
            snap.generation
        );
    });
    drop(tls);
    if let Some(sock) = &spec.status_socket {
        let _ = std::fs::remove_file(sock);
    }
    result
}

/// TLS passthrough as `blixt inspect --socket` shows it: the SNI tables served and the
/// proxy's counters at the moment the status socket was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsStatus {
    /// Generation whose SNI tables the proxy serves (0: none yet).
    pub generation: u64,
    /// Why starting TLS passthrough or applying the newest SNI tables failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
    /// The SNI tables served, one per TLS VIP:port (`Translation::tls`).
    pub frontends: Vec<TlsFrontend>,
    pub listeners: Vec<TlsListenerCounters>,
    pub routes: Vec<TlsRouteCounters>,
    pub backends: Vec<TlsBackendCounters>,
    /// Connections waiting for their ClientHello now.
    pub pending_handshakes: u64,
    /// SNI tables applied since start.
    pub table_updates: u64,
    /// The sk_lookup program's counters (`None` when it could not be read).
    #[serde(default)]
    pub steering: Option<TlsSteerCounters>,
}

/// Counters of one TLS frontend (VIP:port); see `blixt_tls::stats::ListenerStats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsListenerCounters {
    pub addr: SocketAddr,
    pub name: String,
    pub accepted: u64,
    pub forwarded: u64,
    pub active: u64,
    pub idle_timeouts: u64,
    pub bytes_from_clients: u64,
    pub bytes_to_clients: u64,
    /// Reset connections by reason (`no_sni`, `no_match`, ...); zero counts left out.
    pub rejects: BTreeMap<String, u64>,
}

/// Counters of one route of a TLS frontend (`namespace/name`, or `listener:<hostname>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsRouteCounters {
    pub frontend: SocketAddr,
    pub route: String,
    pub connections: u64,
    pub rejects: BTreeMap<String, u64>,
}

/// Counters of one backend of a TLS frontend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsBackendCounters {
    pub frontend: SocketAddr,
    pub backend: SocketAddr,
    pub connections: u64,
    pub active: u64,
    pub connect_errors: u64,
    /// Client → backend (the ClientHello included).
    pub bytes_sent: u64,
    /// Backend → client.
    pub bytes_received: u64,
}

/// Counters of the sk_lookup steering program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSteerCounters {
    pub steered: u64,
    pub assign_failed: u64,
}

impl TlsStatus {
    fn counters(&mut self, stats: &ProxyStats) {
        let reasons = |r: &BTreeMap<blixt_tls::RejectReason, u64>| {
            r.iter()
                .map(|(k, v)| (k.label().to_string(), *v))
                .collect::<BTreeMap<_, _>>()
        };
        self.listeners = stats
            .listeners
            .iter()
            .map(|l| TlsListenerCounters {
                addr: l.addr,
                name: l.name.clone(),
                accepted: l.accepted,
                forwarded: l.forwarded,
                active: l.active,
                idle_timeouts: l.idle_timeouts,
                bytes_from_clients: l.bytes_from_clients,
                bytes_to_clients: l.bytes_to_clients,
                rejects: reasons(&l.rejects),
            })
            .collect();
        self.routes = stats
            .routes
            .iter()
            .map(|r| TlsRouteCounters {
                frontend: r.frontend,
                route: r.route.clone(),
                connections: r.connections,
                rejects: reasons(&r.rejects),
            })
            .collect();
        self.backends = stats
            .backends
            .iter()
            .map(|b| TlsBackendCounters {
                frontend: b.frontend,
                backend: b.backend,
                connections: b.connections,
                active: b.active,
                connect_errors: b.connect_errors,
                bytes_sent: b.bytes_sent,
                bytes_received: b.bytes_received,
            })
            .collect();
        self.pending_handshakes = stats.pending_handshakes;
        self.table_updates = stats.table_updates;
    }
}

/// TLS passthrough in `blixt run`: a tokio runtime of its own and the `blixt-tls` service,
/// both started with the first configuration that has a TLS listener (a host without one
/// runs no proxy and gets no sk_lookup program), then fed the SNI tables of every generation.
/// Shared by the main loop (apply), the status socket and the metrics endpoint (read).
#[derive(Debug, Default)]
struct TlsService {
    state: Mutex<TlsState>,
}

#[derive(Debug, Default)]
struct TlsState {
    /// Declared before `runtime`: dropped first, with the runtime still there.
    service: Option<TlsPassthrough>,
    runtime: Option<tokio::runtime::Runtime>,
    generation: u64,
    frontends: Vec<TlsFrontend>,
    error: Option<String>,
}

impl TlsService {
    fn state(&self) -> std::sync::MutexGuard<'_, TlsState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves `frontends` (the SNI tables of `generation`) for new connections; established
    /// connections are not touched. A failure is logged and kept for the status socket; TCP
    /// and UDP listeners are not affected by it.
    fn apply(&self, generation: u64, frontends: Vec<TlsFrontend>) {
        let mut st = self.state();
        if st.service.is_none() {
            if frontends.is_empty() {
                st.generation = generation;
                return;
            }
            match start_tls() {
                Ok((runtime, service)) => {
                    st.runtime = Some(runtime);
                    st.service = Some(service);
                }
                Err(e) => {
                    error!(
                        "TLS passthrough could not start, TLS listeners are not served \
                         (retried with the next configuration): {e:#}"
                    );
                    st.error = Some(format!("starting TLS passthrough: {e:#}"));
                    return;
                }
            }
        }
        let TlsState {
            service: Some(service),
            runtime: Some(runtime),
            ..
        } = &mut *st
        else {
            return;
        };
        let guard = runtime.enter();
        let result = service.apply(&frontends);
        drop(guard);
        st.error = match result {
            Ok(()) => None,
            Err(e) => {
                let e = anyhow::Error::from(e);
                error!(
                    generation,
                    "TLS passthrough: applying the SNI tables: {e:#}"
                );
                Some(format!("generation {generation}: {e:#}"))
            }
        };
        info!(
            generation,
            frontends = frontends.len(),
            "TLS SNI tables applied"
        );
        st.generation = generation;
        st.frontends = frontends;
    }

    /// The SNI tables and counters; `None` while TLS passthrough never had anything to do.
    fn status(&self) -> Option<TlsStatus> {
        let st = self.state();
        if st.service.is_none() && st.error.is_none() {
            return None;
        }
        let mut status = TlsStatus {
            generation: st.generation,
            error: st.error.clone(),
            frontends: st.frontends.clone(),
            ..TlsStatus::default()
        };
        if let Some(service) = &st.service {
            status.counters(&service.stats());
            status.steering = match service.steer_stats() {
                Some(Ok(s)) => Some(TlsSteerCounters {
                    steered: s.steered,
                    assign_failed: s.assign_failed,
                }),
                Some(Err(e)) => {
                    warn!("reading the sk_lookup counters: {e}");
                    None
                }
                None => None,
            };
        }
        Some(status)
    }

    /// The `blixt_tls_*` families, encoded (OpenMetrics text, ending in `# EOF`).
    fn render_metrics(&self) -> String {
        use prometheus_client::metrics::counter::Counter;
        let mut registry = prometheus_client::registry::Registry::with_prefix("blixt");
        let st = self.state();
        if let Some(service) = &st.service {
            service.stats().register(&mut registry);
            if let Some(Ok(s)) = service.steer_stats() {
                let tls = registry.sub_registry_with_prefix("tls");
                let steered = Counter::<u64>::default();
                steered.inc_by(s.steered);
                tls.register(
                    "steered_connections",
                    "Connections the sk_lookup program assigned to a TLS listener",
                    steered,
                );
                let failed = Counter::<u64>::default();
                failed.inc_by(s.assign_failed);
                tls.register(
                    "steer_assign_failed",
                    "Connections whose sk_lookup assignment the kernel refused",
                    failed,
                );
            }
        }
        drop(st);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Stops accepting, removes the sk_lookup steering and the local routes of the VIPs, and
    /// shuts the runtime down (open TLS connections end with the process).
    fn shutdown(&self) {
        let mut st = self.state();
        let service = st.service.take();
        let runtime = st.runtime.take();
        drop(st);
        if let Some(runtime) = runtime {
            {
                let _in_runtime = runtime.enter();
                drop(service);
            }
            runtime.shutdown_timeout(Duration::from_secs(2));
            info!("TLS passthrough stopped: steering and local routes removed");
        }
    }
}

/// The runtime (its worker threads are the proxy's; they run in this process's network
/// namespace, the node's) and the service with sk_lookup steering and local routes.
fn start_tls() -> Result<(tokio::runtime::Runtime, TlsPassthrough)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("blixt-tls")
        .enable_all()
        .build()
        .context("starting the TLS runtime")?;
    let service = {
        let _in_runtime = runtime.enter();
        TlsPassthrough::new(
            ProxyConfig::default(),
            Steering::SkLookup {
                manage_local_routes: true,
            },
        )
        .context("loading the sk_lookup steering (needs CAP_BPF, CAP_NET_ADMIN, kernel >= 5.9)")?
    };
    info!("TLS passthrough started (sk_lookup steering)");
    Ok((runtime, service))
}

/// Shuts TLS passthrough down when `run` returns, also on an error.
struct TlsGuard(Arc<TlsService>);

impl Drop for TlsGuard {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// The whole exposition: the agent's (dataplane counters and its own metrics) followed by
/// TLS passthrough's, as one OpenMetrics document.
fn render_metrics(rec: &Reconciler, agent: &AgentMetrics, tls: &TlsService) -> String {
    let mut out = metrics::render(rec, agent);
    if let Some(stripped) = out.strip_suffix("# EOF\n") {
        out.truncate(stripped.len());
    }
    out.push_str(&tls.render_metrics());
    out
}

/// `GET /metrics` and `GET /healthz` on `addr`: the agent's endpoint with the TLS passthrough
/// families added.
fn serve_metrics(
    addr: SocketAddr,
    rec: Arc<Mutex<Reconciler>>,
    agent: Arc<AgentMetrics>,
    tls: Arc<TlsService>,
) -> std::io::Result<SocketAddr> {
    metrics::serve_with(addr, move || match rec.lock() {
        Ok(r) => render_metrics(&r, &agent, &tls),
        Err(_) => String::from("# agent state unavailable\n"),
    })
}
