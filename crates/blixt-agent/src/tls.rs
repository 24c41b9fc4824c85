//! TLS passthrough served by the node: [`TlsService`] owns a tokio runtime and the `blixt-tls`
//! service (a proxy steered by sk_lookup), started with the first generation that has a TLS
//! listener and fed the SNI tables ([`Generation::tls`]) of every generation after the XDP part
//! of the same generation was applied, by the [`Node`](crate::node::Node). Generations with TLS
//! listeners come from `blixt run` (its own translation) and `blixt agent --controller` (the
//! snapshot stream); see docs/tls-passthrough.md.
//!
//! [`Generation::tls`]: blixt_core::generation::Generation::tls

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use blixt_core::tls::TlsFrontend;
use blixt_tls::{ProxyConfig, ProxyStats, Steering, TlsPassthrough};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

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

/// TLS passthrough of a node: a tokio runtime of its own and the `blixt-tls` service, both
/// started with the first configuration that has a TLS listener (a host without one runs no
/// proxy and gets no sk_lookup program), then fed the SNI tables of every generation. Read by
/// the status socket and the metrics endpoint.
#[derive(Debug, Default)]
pub struct TlsService {
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
    pub fn apply(&self, generation: u64, frontends: Vec<TlsFrontend>) {
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
    pub fn status(&self) -> Option<TlsStatus> {
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
    pub(crate) fn render_metrics(&self) -> String {
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
    pub fn shutdown(&self) {
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
