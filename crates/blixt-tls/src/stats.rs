//! Counters of the proxy, per listener (VIP:port), route and backend, and the rate limiter
//! for the logs of limits and rejections.
//!
//! Counters are atomics updated on the connection path; [`ProxyStats`] is a plain copy for
//! metrics exporters and `blixt inspect`. Counters are monotonic and are kept after a route
//! or backend disappears from the table, as Prometheus counters expect.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::routing::RejectReason;

const REASONS: usize = RejectReason::ALL.len();

fn slot(r: RejectReason) -> usize {
    RejectReason::ALL
        .iter()
        .position(|&x| x == r)
        .expect("every reason is in ALL")
}

fn reasons_snapshot(a: &[AtomicU64; REASONS]) -> BTreeMap<RejectReason, u64> {
    RejectReason::ALL
        .iter()
        .zip(a)
        .map(|(&r, v)| (r, v.load(Relaxed)))
        .filter(|&(_, v)| v > 0)
        .collect()
}

#[derive(Debug, Default)]
pub(crate) struct ListenerCounters {
    pub accepted: AtomicU64,
    pub forwarded: AtomicU64,
    pub active: AtomicU64,
    pub idle_timeouts: AtomicU64,
    pub bytes_from_clients: AtomicU64,
    pub bytes_to_clients: AtomicU64,
    rejects: [AtomicU64; REASONS],
}

impl ListenerCounters {
    pub fn reject(&self, r: RejectReason) {
        self.rejects[slot(r)].fetch_add(1, Relaxed);
    }
}

#[derive(Debug, Default)]
pub(crate) struct RouteCounters {
    pub connections: AtomicU64,
    rejects: [AtomicU64; REASONS],
}

impl RouteCounters {
    pub fn reject(&self, r: RejectReason) {
        self.rejects[slot(r)].fetch_add(1, Relaxed);
    }
}

#[derive(Debug, Default)]
pub(crate) struct BackendCounters {
    pub connections: AtomicU64,
    pub active: AtomicU64,
    pub connect_errors: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
}

type RouteKey = (SocketAddr, String);
type BackendKey = (SocketAddr, SocketAddr);

/// Where the counters live; shared by all connections of a proxy.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    listeners: Mutex<BTreeMap<SocketAddr, (String, Arc<ListenerCounters>)>>,
    routes: Mutex<BTreeMap<RouteKey, Arc<RouteCounters>>>,
    backends: Mutex<BTreeMap<BackendKey, Arc<BackendCounters>>>,
    pub pending: AtomicU64,
    pub table_updates: AtomicU64,
}

impl Registry {
    pub fn listener(&self, addr: SocketAddr, name: &str) -> Arc<ListenerCounters> {
        let mut m = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let e = m
            .entry(addr)
            .or_insert_with(|| (name.to_string(), Arc::default()));
        if e.0 != name && !name.is_empty() {
            e.0 = name.to_string();
        }
        e.1.clone()
    }

    /// Forwarded connections of listener `addr` open now (0 for an unknown listener).
    pub fn active(&self, addr: SocketAddr) -> u64 {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&addr)
            .map_or(0, |(_, c)| c.active.load(Relaxed))
    }

    pub fn route(&self, frontend: SocketAddr, label: &str) -> Arc<RouteCounters> {
        let mut m = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        m.entry((frontend, label.to_string())).or_default().clone()
    }

    pub fn backend(&self, frontend: SocketAddr, backend: SocketAddr) -> Arc<BackendCounters> {
        let mut m = self.backends.lock().unwrap_or_else(PoisonError::into_inner);
        m.entry((frontend, backend)).or_default().clone()
    }

    pub fn snapshot(&self) -> ProxyStats {
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&addr, (name, c))| ListenerStats {
                addr,
                name: name.clone(),
                accepted: c.accepted.load(Relaxed),
                forwarded: c.forwarded.load(Relaxed),
                active: c.active.load(Relaxed),
                idle_timeouts: c.idle_timeouts.load(Relaxed),
                bytes_from_clients: c.bytes_from_clients.load(Relaxed),
                bytes_to_clients: c.bytes_to_clients.load(Relaxed),
                rejects: reasons_snapshot(&c.rejects),
            })
            .collect();
        let routes = self
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((frontend, route), c)| RouteStats {
                frontend: *frontend,
                route: route.clone(),
                connections: c.connections.load(Relaxed),
                rejects: reasons_snapshot(&c.rejects),
            })
            .collect();
        let backends = self
            .backends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&(frontend, backend), c)| BackendStats {
                frontend,
                backend,
                connections: c.connections.load(Relaxed),
                active: c.active.load(Relaxed),
                connect_errors: c.connect_errors.load(Relaxed),
                bytes_sent: c.bytes_sent.load(Relaxed),
                bytes_received: c.bytes_received.load(Relaxed),
            })
            .collect();
        ProxyStats {
            listeners,
            routes,
            backends,
            pending_handshakes: self.pending.load(Relaxed),
            table_updates: self.table_updates.load(Relaxed),
        }
    }
}

/// A copy of every counter of a proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub listeners: Vec<ListenerStats>,
    pub routes: Vec<RouteStats>,
    pub backends: Vec<BackendStats>,
    /// Connections accepted whose ClientHello has not arrived yet (a gauge).
    pub pending_handshakes: u64,
    /// How many SNI tables were applied.
    pub table_updates: u64,
}

impl ProxyStats {
    pub fn listener(&self, addr: SocketAddr) -> Option<&ListenerStats> {
        self.listeners.iter().find(|l| l.addr == addr)
    }

    pub fn route(&self, frontend: SocketAddr, route: &str) -> Option<&RouteStats> {
        self.routes
            .iter()
            .find(|r| r.frontend == frontend && r.route == route)
    }

    pub fn backend(&self, frontend: SocketAddr, backend: SocketAddr) -> Option<&BackendStats> {
        self.backends
            .iter()
            .find(|b| b.frontend == frontend && b.backend == backend)
    }

    /// Rejections of one reason summed over listeners.
    pub fn rejects(&self, reason: RejectReason) -> u64 {
        self.listeners
            .iter()
            .map(|l| l.rejects.get(&reason).copied().unwrap_or(0))
            .sum()
    }
}

impl ProxyStats {
    /// Registers every counter as Prometheus families (prefix from `registry`, e.g.
    /// `blixt_tls_rejects_total{frontend,vip,port,reason}`); the agent calls this at scrape
    /// time with the registry it encodes.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        use prometheus_client::metrics::counter::Counter;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::Gauge;

        type Labels = Vec<(String, String)>;
        let tls = registry.sub_registry_with_prefix("tls");
        let counter = |r: &mut prometheus_client::registry::Registry, name: &str, help: &str| {
            let f = Family::<Labels, Counter>::default();
            r.register(name, help, f.clone());
            f
        };
        let gauge = |r: &mut prometheus_client::registry::Registry, name: &str, help: &str| {
            let f = Family::<Labels, Gauge>::default();
            r.register(name, help, f.clone());
            f
        };
        let accepted = counter(
            tls,
            "connections_accepted",
            "TCP connections accepted per TLS frontend",
        );
        let forwarded = counter(
            tls,
            "connections_forwarded",
            "Connections forwarded to a backend per TLS frontend",
        );
        let active = gauge(
            tls,
            "connections_active",
            "Forwarded connections open now per TLS frontend",
        );
        let rejects = counter(
            tls,
            "rejects",
            "Connections reset per TLS frontend and reason",
        );
        let idle = counter(
            tls,
            "idle_timeouts",
            "Forwarded connections closed by the idle timeout",
        );
        let bytes = counter(tls, "bytes", "Bytes per TLS frontend and direction");
        let route_conns = counter(
            tls,
            "route_connections",
            "Connections forwarded per SNI route",
        );
        let route_rejects = counter(
            tls,
            "route_rejects",
            "Connections reset per SNI route and reason",
        );
        let be_conns = counter(
            tls,
            "backend_connections",
            "Connections forwarded per backend",
        );
        let be_active = gauge(
            tls,
            "backend_connections_active",
            "Open connections per backend",
        );
        let be_errors = counter(tls, "backend_connect_errors", "Failed connects per backend");
        let be_bytes = counter(tls, "backend_bytes", "Bytes per backend and direction");
        let pending = Gauge::<i64>::default();
        tls.register(
            "pending_handshakes",
            "Connections waiting for their ClientHello",
            pending.clone(),
        );
        let updates = Counter::<u64>::default();
        tls.register("table_updates", "SNI tables applied", updates.clone());

        let fe_labels = |name: &str, addr: SocketAddr| -> Labels {
            vec![
                ("frontend".into(), name.to_string()),
                ("vip".into(), addr.ip().to_string()),
                ("port".into(), addr.port().to_string()),
            ]
        };
        let with = |mut l: Labels, k: &str, v: String| {
            l.push((k.to_string(), v));
            l
        };
        let names: BTreeMap<SocketAddr, &str> = self
            .listeners
            .iter()
            .map(|l| (l.addr, l.name.as_str()))
            .collect();
        for l in &self.listeners {
            let base = fe_labels(&l.name, l.addr);
            accepted.get_or_create(&base).inc_by(l.accepted);
            forwarded.get_or_create(&base).inc_by(l.forwarded);
            active.get_or_create(&base).set(l.active as i64);
            idle.get_or_create(&base).inc_by(l.idle_timeouts);
            bytes
                .get_or_create(&with(base.clone(), "direction", "from_client".into()))
                .inc_by(l.bytes_from_clients);
            bytes
                .get_or_create(&with(base.clone(), "direction", "to_client".into()))
                .inc_by(l.bytes_to_clients);
            for (reason, n) in &l.rejects {
                rejects
                    .get_or_create(&with(base.clone(), "reason", reason.label().into()))
                    .inc_by(*n);
            }
        }
        for r in &self.routes {
            let name = names.get(&r.frontend).copied().unwrap_or("");
            let base = with(fe_labels(name, r.frontend), "route", r.route.clone());
            route_conns.get_or_create(&base).inc_by(r.connections);
            for (reason, n) in &r.rejects {
                route_rejects
                    .get_or_create(&with(base.clone(), "reason", reason.label().into()))
                    .inc_by(*n);
            }
        }
        for b in &self.backends {
            let name = names.get(&b.frontend).copied().unwrap_or("");
            let base = with(
                fe_labels(name, b.frontend),
                "backend",
                b.backend.to_string(),
            );
            be_conns.get_or_create(&base).inc_by(b.connections);
            be_active.get_or_create(&base).set(b.active as i64);
            be_errors.get_or_create(&base).inc_by(b.connect_errors);
            be_bytes
                .get_or_create(&with(base.clone(), "direction", "to_backend".into()))
                .inc_by(b.bytes_sent);
            be_bytes
                .get_or_create(&with(base.clone(), "direction", "from_backend".into()))
                .inc_by(b.bytes_received);
        }
        pending.set(self.pending_handshakes as i64);
        updates.inc_by(self.table_updates);
    }
}

/// Counters of one TLS frontend (VIP:port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerStats {
    pub addr: SocketAddr,
    /// The frontend's name from the SNI table (`namespace/gateway/listener[+...]`).
    pub name: String,
    pub accepted: u64,
    pub forwarded: u64,
    /// Connections forwarded and still open (a gauge).
    pub active: u64,
    pub idle_timeouts: u64,
    pub bytes_from_clients: u64,
    pub bytes_to_clients: u64,
    /// Reset connections by reason (reasons with a zero count are left out).
    pub rejects: BTreeMap<RejectReason, u64>,
}

/// Counters of one SNI entry of a frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteStats {
    pub frontend: SocketAddr,
    /// `namespace/name` of the TLSRoute, or `listener:<hostname>` for isolation entries.
    pub route: String,
    /// Connections forwarded to one of its backends.
    pub connections: u64,
    /// Rejections decided by this entry (invalid-backend share, no backend, connect failures).
    pub rejects: BTreeMap<RejectReason, u64>,
}

/// Counters of one backend of a frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStats {
    pub frontend: SocketAddr,
    pub backend: SocketAddr,
    pub connections: u64,
    pub active: u64,
    pub connect_errors: u64,
    /// Client → backend, the buffered ClientHello included.
    pub bytes_sent: u64,
    /// Backend → client.
    pub bytes_received: u64,
}

/// At most one log line per reason and interval; the lines say how many were left out.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    interval: Duration,
    slots: Vec<Mutex<(Option<Instant>, u64)>>,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            slots: (0..REASONS + 1).map(|_| Mutex::new((None, 0))).collect(),
        }
    }

    /// Whether to log now for `reason` (`None`: idle timeouts), and how many lines were
    /// suppressed since the last one.
    pub fn allow(&self, reason: Option<RejectReason>) -> Option<u64> {
        let i = reason.map_or(REASONS, slot);
        let mut s = self.slots[i].lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match s.0 {
            Some(last) if now.duration_since(last) < self.interval => {
                s.1 += 1;
                None
            }
            _ => {
                let suppressed = s.1;
                *s = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_families() {
        let r = Registry::default();
        let a: SocketAddr = "192.0.2.1:443".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:8443".parse().unwrap();
        let l = r.listener(a, "ns/gw/tls");
        l.accepted.fetch_add(5, Relaxed);
        l.reject(RejectReason::NoSni);
        r.route(a, "ns/r").connections.fetch_add(4, Relaxed);
        r.backend(a, b).bytes_sent.fetch_add(1000, Relaxed);
        let mut reg = prometheus_client::registry::Registry::with_prefix("blixt");
        r.snapshot().register(&mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        for want in [
            r#"blixt_tls_connections_accepted_total{frontend="ns/gw/tls",vip="192.0.2.1",port="443"} 5"#,
            r#"blixt_tls_rejects_total{frontend="ns/gw/tls",vip="192.0.2.1",port="443",reason="no_sni"} 1"#,
            r#"blixt_tls_route_connections_total{frontend="ns/gw/tls",vip="192.0.2.1",port="443",route="ns/r"} 4"#,
            r#"blixt_tls_backend_bytes_total{frontend="ns/gw/tls",vip="192.0.2.1",port="443",backend="10.0.0.1:8443",direction="to_backend"} 1000"#,
            "blixt_tls_pending_handshakes 0",
        ] {
            assert!(out.contains(want), "missing {want} in\n{out}");
        }
    }

    #[test]
    fn limiter_lets_one_line_per_interval() {
        let l = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(l.allow(Some(RejectReason::NoSni)), Some(0));
        assert_eq!(l.allow(Some(RejectReason::NoSni)), None);
        assert_eq!(l.allow(Some(RejectReason::NoSni)), None);
        assert_eq!(l.allow(Some(RejectReason::NoMatch)), Some(0));
        assert_eq!(l.allow(None), Some(0));
        let l = LogLimiter::new(Duration::ZERO);
        assert_eq!(l.allow(Some(RejectReason::NoSni)), Some(0));
        assert_eq!(l.allow(Some(RejectReason::NoSni)), Some(0));
    }

    #[test]
    fn snapshot_keeps_nonzero_reasons() {
        let r = Registry::default();
        let a: SocketAddr = "192.0.2.1:443".parse().unwrap();
        let l = r.listener(a, "ns/gw/tls");
        l.reject(RejectReason::NoSni);
        l.reject(RejectReason::NoSni);
        l.accepted.fetch_add(3, Relaxed);
        r.route(a, "ns/r").reject(RejectReason::InvalidBackend);
        let s = r.snapshot();
        let ls = s.listener(a).unwrap();
        assert_eq!(ls.accepted, 3);
        assert_eq!(ls.rejects.len(), 1);
        assert_eq!(s.rejects(RejectReason::NoSni), 2);
        assert_eq!(
            s.route(a, "ns/r").unwrap().rejects[&RejectReason::InvalidBackend],
            1
        );
    }
}
