//! The TLS passthrough service as the agent runs it: one proxy, one listening socket per TLS
//! frontend (VIP:port), steering, and whole-table updates.
//!
//! ```no_run
//! # async fn run(tables: Vec<blixt_core::tls::TlsFrontend>) -> Result<(), blixt_tls::service::ServiceError> {
//! use blixt_tls::service::{Steering, TlsPassthrough};
//! use blixt_tls::ProxyConfig;
//!
//! // inside a tokio runtime, on a thread in the node's network namespace
//! let mut tls = TlsPassthrough::new(ProxyConfig::default(), Steering::SkLookup { manage_local_routes: true })?;
//! tls.apply(&tables)?;        // Translation::tls of each new snapshot
//! let stats = tls.stats();    // for metrics and `blixt inspect`
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use blixt_core::tls::TlsFrontend;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::proxy::{ProxyConfig, TlsProxy};
use crate::routing::normalize;
use crate::stats::ProxyStats;
use crate::steer::{SkLookupSteering, SteerError, SteerStats};

/// Listen backlog of each frontend socket.
const BACKLOG: u32 = 4096;

/// `TCP_DEFER_ACCEPT` of each frontend socket: a connection that has sent nothing is accepted
/// anyway after this (the kernel rounds it to its SYN-ACK retransmissions: the first one, 1 s
/// after the SYN), and the proxy's handshake timeout runs from there.
const DEFER_ACCEPT: Duration = Duration::from_secs(1);

/// How often a removed frontend's open connections are counted, until none is left and the
/// VIP's local route can go.
const DRAIN_POLL: Duration = Duration::from_secs(1);

/// How connections to a TLS VIP:port reach the proxy's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steering {
    /// A BPF sk_lookup program assigns them to a socket bound on loopback; the VIP is not
    /// configured on any interface. With `manage_local_routes`, a `local` route per VIP makes
    /// the stack deliver them locally (see docs/tls-passthrough.md).
    SkLookup { manage_local_routes: bool },
    /// The socket binds the VIP:port itself: the VIP must already be a local address (tests,
    /// or nodes where something else configures it).
    BindVip,
}

/// Errors of [`TlsPassthrough`].
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("steering")]
    Steer(#[from] SteerError),
    #[error("listening socket for {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug)]
struct Listener {
    /// Where the socket is bound (a loopback ephemeral port under sk_lookup).
    bound: SocketAddr,
    task: JoinHandle<()>,
}

/// The proxy plus its listeners and steering. Methods that open listeners must run inside a
/// tokio runtime, on a thread in the namespace the sockets belong to.
#[derive(Debug)]
pub struct TlsPassthrough {
    proxy: TlsProxy,
    steering: Option<Arc<Mutex<SkLookupSteering>>>,
    listeners: BTreeMap<SocketAddr, Listener>,
    /// Removed frontends whose accepted connections still need the VIP's local route: each
    /// task releases the route once the frontend has no open connection left.
    draining: Vec<JoinHandle<()>>,
}

fn lock(s: &Mutex<SkLookupSteering>) -> MutexGuard<'_, SkLookupSteering> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TlsPassthrough {
    /// With [`Steering::SkLookup`], loads and attaches the sk_lookup program to the calling
    /// thread's network namespace (needs CAP_BPF and CAP_NET_ADMIN).
    pub fn new(config: ProxyConfig, steering: Steering) -> Result<Self, ServiceError> {
        let steering = match steering {
            Steering::SkLookup {
                manage_local_routes,
            } => Some(Arc::new(Mutex::new(SkLookupSteering::attach_here(
                manage_local_routes,
            )?))),
            Steering::BindVip => None,
        };
        Ok(TlsPassthrough {
            proxy: TlsProxy::new(config),
            steering,
            listeners: BTreeMap::new(),
            draining: Vec::new(),
        })
    }

    pub fn proxy(&self) -> &TlsProxy {
        &self.proxy
    }

    pub fn stats(&self) -> ProxyStats {
        self.proxy.stats()
    }

    /// The sk_lookup program's counters (`None` under [`Steering::BindVip`]).
    pub fn steer_stats(&self) -> Option<Result<SteerStats, SteerError>> {
        self.steering.as_ref().map(|s| lock(s).stats())
    }

    /// Where the socket of frontend `vip` is bound.
    pub fn bound_addr(&self, vip: SocketAddr) -> Option<SocketAddr> {
        self.listeners.get(&normalize(vip)).map(|l| l.bound)
    }

    /// Applies the SNI tables of a snapshot (the translator's `Translation::tls`): opens and
    /// steers sockets for new frontends, swaps the routing table for new connections, and
    /// stops accepting on frontends that are gone. Connections already forwarded are never
    /// touched: a removed frontend's VIP keeps its local route (which delivers their packets)
    /// until the last of them has closed. On error the table is still applied for the
    /// frontends that have a socket.
    pub fn apply(&mut self, frontends: &[TlsFrontend]) -> Result<(), ServiceError> {
        let wanted: BTreeMap<SocketAddr, &TlsFrontend> = frontends
            .iter()
            .map(|f| (normalize(SocketAddr::new(f.vip, f.port)), f))
            .collect();
        // New table first: a socket that starts accepting finds its frontend; a frontend that
        // goes away resets the SYNs still arriving until its socket is gone.
        self.proxy.apply(frontends);

        let mut first_err = None;
        for (&addr, fe) in &wanted {
            if self.listeners.contains_key(&addr) {
                continue;
            }
            match self.open(addr) {
                Ok(l) => {
                    info!(%addr, name = %fe.name, bound = %l.bound, "tls passthrough: listening");
                    self.listeners.insert(addr, l);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let gone: Vec<SocketAddr> = self
            .listeners
            .keys()
            .filter(|a| !wanted.contains_key(a))
            .copied()
            .collect();
        self.draining.retain(|t| !t.is_finished());
        for addr in gone {
            if let Some(s) = &self.steering {
                if lock(s).unsteer_keep_route(addr) {
                    self.draining.push(self.drain(addr, Arc::downgrade(s)));
                }
            }
            if let Some(l) = self.listeners.remove(&addr) {
                l.task.abort();
                info!(%addr, "tls passthrough: listener removed");
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Releases the local route hold of removed frontend `addr` once it has no open
    /// connection. Waits a connect timeout first: a connection routed just before the table
    /// change may still be connecting to its backend, not yet counted as open.
    fn drain(&self, addr: SocketAddr, steering: Weak<Mutex<SkLookupSteering>>) -> JoinHandle<()> {
        let proxy = self.proxy.clone();
        let grace = proxy.config().connect_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            loop {
                let open = proxy.active_connections(addr);
                if open == 0 {
                    break;
                }
                tokio::time::sleep(DRAIN_POLL).await;
            }
            if let Some(s) = steering.upgrade() {
                if let Err(e) = lock(&s).release_route(addr.ip()) {
                    warn!(%addr, error = %e, "tls passthrough: removing the local route of a drained frontend");
                }
            }
            info!(%addr, "tls passthrough: removed frontend drained");
        })
    }

    fn open(&mut self, addr: SocketAddr) -> Result<Listener, ServiceError> {
        let err = |source| ServiceError::Listen { addr, source };
        let bind_to = match (&self.steering, addr) {
            (None, a) => a,
            (Some(_), SocketAddr::V4(_)) => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0),
            (Some(_), SocketAddr::V6(_)) => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 0),
        };
        let socket = match bind_to {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(err)?;
        socket.set_reuseaddr(true).map_err(err)?;
        // Accept a connection only once its first bytes are there: one wake-up per
        // connection fewer, and silent connections wait in the kernel's SYN queue (a request
        // sock) instead of holding a pending-handshake slot.
        crate::sockopt::set_defer_accept(&socket, DEFER_ACCEPT).map_err(err)?;
        socket.bind(bind_to).map_err(err)?;
        let listener: TcpListener = socket.listen(BACKLOG).map_err(err)?;
        let bound = listener.local_addr().map_err(err)?;
        if let Some(s) = &self.steering {
            lock(s).steer(addr, &listener)?;
        }
        let proxy = self.proxy.clone();
        let task = tokio::spawn(async move { proxy.serve(listener).await });
        Ok(Listener { bound, task })
    }
}

impl Drop for TlsPassthrough {
    fn drop(&mut self) {
        for l in self.listeners.values() {
            l.task.abort();
        }
        // The drain tasks hold the steering weakly: dropping it (after this) removes every
        // local route, drained or not.
        for t in &self.draining {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blixt_core::tls::SniRoute;

    fn fe(port: u16) -> TlsFrontend {
        TlsFrontend {
            name: format!("default/gw/tls-{port}"),
            vip: "127.0.0.1".parse().unwrap(),
            port,
            routes: vec![SniRoute {
                hostname: "a.example.com".into(),
                listener: "tls".into(),
                route: Some("default/a".into()),
                backends: vec![],
                reject_weight: 1,
            }],
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn bind_vip_opens_and_closes_listeners() {
        let (p1, p2) = (free_port(), free_port());
        let mut svc = TlsPassthrough::new(ProxyConfig::default(), Steering::BindVip).unwrap();
        svc.apply(&[fe(p1), fe(p2)]).unwrap();
        let a1: SocketAddr = ([127, 0, 0, 1], p1).into();
        let a2: SocketAddr = ([127, 0, 0, 1], p2).into();
        assert_eq!(svc.bound_addr(a1), Some(a1));
        tokio::net::TcpStream::connect(a2).await.unwrap();
        svc.apply(&[fe(p1)]).unwrap();
        assert_eq!(svc.bound_addr(a2), None);
        // the aborted accept task drops its socket
        let mut refused = false;
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(a2).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(refused, "listener of a removed frontend still accepts");
        assert!(svc.stats().listener(a1).is_some());
    }

    #[tokio::test]
    async fn a_connection_is_accepted_once_its_first_bytes_arrive() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let port = free_port();
        let mut svc = TlsPassthrough::new(ProxyConfig::default(), Steering::BindVip).unwrap();
        svc.apply(&[fe(port)]).unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let accepted = |svc: &TlsPassthrough| svc.stats().listener(addr).unwrap().accepted;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // TCP_DEFER_ACCEPT (1 s): a silent connection stays in the kernel's queue
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(accepted(&svc), 0, "a connection without data was accepted");
        // not TLS: accepted as soon as the bytes are there, then reset
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("no reset within 5 s");
        assert!(r.is_err(), "expected a reset, got {r:?}");
        assert_eq!(accepted(&svc), 1);
        let l = svc.stats();
        let l = l.listener(addr).unwrap();
        assert_eq!(l.rejects[&crate::RejectReason::NotTls], 1);
    }
}
