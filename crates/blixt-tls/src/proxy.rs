//! The TLS passthrough proxy: accept, read the ClientHello within limits, choose a backend,
//! forward the buffered bytes, then copy both ways until either side is done or idle.
//!
//! Rejections (no SNI, no match, not TLS, too large, timeouts, invalid-backend share, backend
//! unreachable) reset the client: `SO_LINGER` 0 then close sends a RST, which the Gateway API
//! conformance tests count as a rejection during the handshake.
//!
//! A new SNI table ([`TlsProxy::apply`]) is swapped in atomically: a connection is routed by
//! the table current when its ClientHello completes; established connections keep their
//! backend socket and are never touched by a table change.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use blixt_core::tls::TlsFrontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::client_hello::{ClientHelloParser, ParseError, Progress, DEFAULT_MAX_HELLO_SIZE};
use crate::routing::{normalize, ConnTuple, Decision, RejectReason, SniTable};
use crate::stats::{BackendCounters, ListenerCounters, LogLimiter, ProxyStats, Registry};

/// Copy buffers kept for reuse at most (with the default size, 16 MiB).
const POOLED_BUFFERS: usize = 256;

/// Default [`ProxyConfig::copy_buffer_size`]; see docs/tls-passthrough.md for the measurement.
pub const DEFAULT_COPY_BUFFER: usize = 64 * 1024;

/// Limits and timeouts of the proxy. The defaults suit an internet-facing node.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Largest ClientHello accepted, TLS record headers included.
    pub max_hello_size: usize,
    /// Time from accept to a complete ClientHello.
    pub handshake_timeout: Duration,
    /// Connections waiting for their ClientHello at once; more are reset on accept. This is
    /// what bounds the memory a slow-loris client can pin (each holds up to
    /// `max_hello_size`).
    pub max_pending_handshakes: usize,
    /// A forwarded connection with no byte in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Time to establish the TCP connection to the backend.
    pub connect_timeout: Duration,
    /// At most one log line per rejection reason and interval.
    pub log_interval: Duration,
    /// Copy buffer per direction of a forwarded connection; larger buffers mean fewer
    /// syscalls per byte. Buffers are pooled between connections.
    pub copy_buffer_size: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_hello_size: DEFAULT_MAX_HELLO_SIZE,
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 4096,
            idle_timeout: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(5),
            log_interval: Duration::from_secs(10),
            copy_buffer_size: DEFAULT_COPY_BUFFER,
        }
    }
}

/// A handle on the proxy; clones share the table, the limits and the counters.
#[derive(Debug, Clone)]
pub struct TlsProxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ProxyConfig,
    table: RwLock<Arc<SniTable>>,
    pending: Arc<Semaphore>,
    stats: Registry,
    logs: LogLimiter,
    buffers: BufferPool,
    epoch: Instant,
}

impl TlsProxy {
    pub fn new(config: ProxyConfig) -> Self {
        TlsProxy {
            inner: Arc::new(Inner {
                pending: Arc::new(Semaphore::new(config.max_pending_handshakes)),
                logs: LogLimiter::new(config.log_interval),
                buffers: BufferPool::new(config.copy_buffer_size, POOLED_BUFFERS),
                config,
                table: RwLock::new(Arc::new(SniTable::default())),
                stats: Registry::default(),
                epoch: Instant::now(),
            }),
        }
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.inner.config
    }

    /// Replaces the SNI tables (the translator's `Translation::tls`) for new connections.
    pub fn apply(&self, frontends: &[TlsFrontend]) {
        let table = Arc::new(SniTable::new(frontends));
        for fe in table.frontends() {
            // register so that listeners show in the stats before their first connection
            self.inner.stats.listener(fe.addr, &fe.name);
        }
        *self
            .inner
            .table
            .write()
            .unwrap_or_else(PoisonError::into_inner) = table;
        self.inner.stats.table_updates.fetch_add(1, Relaxed);
    }

    /// The table new connections are routed by.
    pub fn table(&self) -> Arc<SniTable> {
        self.inner
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A copy of every counter.
    pub fn stats(&self) -> ProxyStats {
        self.inner.stats.snapshot()
    }

    /// Forwarded connections of frontend `addr` (VIP:port) open now; cheaper than
    /// [`stats`](Self::stats) for one listener.
    pub fn active_connections(&self, addr: SocketAddr) -> u64 {
        self.inner.stats.active(normalize(addr))
    }

    /// Accepts connections on `listener` until the task is dropped or aborted; each one is
    /// served on its own task. The frontend of a connection is its local address (the
    /// VIP:port the client connected to, also when sk_lookup steered it to a socket bound
    /// elsewhere).
    pub async fn serve(&self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let inner = self.inner.clone();
                    tokio::spawn(async move { inner.handle(stream, peer).await });
                }
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: back off instead of spinning; the backlog waits.
                    warn!(error = %e, "tls proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Closes with a reset: SO_LINGER 0 makes close() send RST and drop unsent data.
fn reset(stream: &TcpStream) {
    if let Err(e) = stream.set_zero_linger() {
        debug!(error = %e, "tls proxy: SO_LINGER 0 failed");
    }
}

fn reason_of(e: &ParseError) -> RejectReason {
    match e {
        ParseError::NotTls(_) | ParseError::Ssl2 => RejectReason::NotTls,
        ParseError::TooLarge { .. } => RejectReason::TooLarge,
        _ => RejectReason::Malformed,
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn log_reject(
        &self,
        reason: RejectReason,
        frontend: SocketAddr,
        peer: SocketAddr,
        detail: &str,
    ) {
        if let Some(suppressed) = self.logs.allow(Some(reason)) {
            info!(
                %frontend, %peer, reason = reason.label(), detail, suppressed,
                "tls proxy: connection reset"
            );
        }
    }

    async fn handle(self: Arc<Self>, client: TcpStream, peer: SocketAddr) {
        let peer = normalize(peer);
        let local = match client.local_addr() {
            Ok(a) => normalize(a),
            Err(_) => return,
        };
        let table = self
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(fe) = table.frontend(&local).cloned() else {
            self.stats
                .listener(local, "")
                .reject(RejectReason::UnknownFrontend);
            self.log_reject(RejectReason::UnknownFrontend, local, peer, "");
            reset(&client);
            return;
        };
        let lc = self.stats.listener(local, &fe.name);
        lc.accepted.fetch_add(1, Relaxed);

        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
            lc.reject(RejectReason::PendingLimit);
            self.log_reject(RejectReason::PendingLimit, local, peer, "");
            reset(&client);
            return;
        };
        self.stats.pending.fetch_add(1, Relaxed);
        let mut client = client;
        let mut parser = ClientHelloParser::new(self.config.max_hello_size);
        let outcome = tokio::time::timeout(
            self.config.handshake_timeout,
            read_hello(&mut client, &mut parser),
        )
        .await;
        self.stats.pending.fetch_sub(1, Relaxed);
        drop(permit);
        let sni = match outcome {
            Err(_) => Err((RejectReason::HandshakeTimeout, String::new())),
            Ok(Err(e)) => Err((RejectReason::ClientClosed, e.to_string())),
            Ok(Ok(Progress::Done(info))) => Ok(info.sni),
            Ok(Ok(Progress::Error(e))) => Err((reason_of(&e), e.to_string())),
            Ok(Ok(Progress::NeedMore)) => Err((RejectReason::ClientClosed, "eof".to_string())),
        };
        let sni = match sni {
            Ok(sni) => sni,
            Err((reason, detail)) => {
                lc.reject(reason);
                self.log_reject(reason, local, peer, &detail);
                reset(&client);
                return;
            }
        };

        // Route by the table current now: a change during the handshake applies already.
        let table = self
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(fe) = table.frontend(&local) else {
            lc.reject(RejectReason::UnknownFrontend);
            self.log_reject(RejectReason::UnknownFrontend, local, peer, "");
            reset(&client);
            return;
        };
        let tuple = ConnTuple {
            client: peer,
            local,
        };
        let (route, backend) = match fe.decide(sni.as_deref(), &tuple) {
            Decision::Forward { route, backend } => (route, backend),
            Decision::Reject { route, reason } => {
                lc.reject(reason);
                if let Some(r) = route {
                    self.stats.route(local, &r.label).reject(reason);
                }
                self.log_reject(reason, local, peer, sni.as_deref().unwrap_or(""));
                reset(&client);
                return;
            }
        };
        let rc = self.stats.route(local, &route.label);
        let bc = self.stats.backend(local, backend);
        let route_label = route.label.clone();
        drop(table);

        let upstream =
            match tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(backend))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return self.connect_failed(&client, &lc, &rc, &bc, peer, local, &e.to_string())
                }
                Err(_) => {
                    return self.connect_failed(&client, &lc, &rc, &bc, peer, local, "timeout")
                }
            };
        let _ = upstream.set_nodelay(true);
        let _ = client.set_nodelay(true);
        lc.forwarded.fetch_add(1, Relaxed);
        rc.connections.fetch_add(1, Relaxed);
        bc.connections.fetch_add(1, Relaxed);
        lc.active.fetch_add(1, Relaxed);
        bc.active.fetch_add(1, Relaxed);
        debug!(%local, %peer, %backend, route = %route_label, sni = sni.as_deref().unwrap_or(""), "tls proxy: forwarding");

        self.splice(
            client,
            upstream,
            parser.into_buffered(),
            &lc,
            &bc,
            local,
            peer,
        )
        .await;
        lc.active.fetch_sub(1, Relaxed);
        bc.active.fetch_sub(1, Relaxed);
    }

    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
    fn connect_failed(
        &self,
        client: &TcpStream,
        lc: &ListenerCounters,
        rc: &crate::stats::RouteCounters,
        bc: &BackendCounters,
        peer: SocketAddr,
        local: SocketAddr,
        detail: &str,
    ) {
        bc.connect_errors.fetch_add(1, Relaxed);
        lc.reject(RejectReason::ConnectFailed);
        rc.reject(RejectReason::ConnectFailed);
        self.log_reject(RejectReason::ConnectFailed, local, peer, detail);
        reset(client);
    }

    /// Forwards the buffered hello, then copies both ways with an idle watchdog.
    #[allow(clippy::too_many_arguments)]
    async fn splice(
        &self,
        client: TcpStream,
        mut upstream: TcpStream,
        hello: Vec<u8>,
        lc: &Arc<ListenerCounters>,
        bc: &Arc<BackendCounters>,
        local: SocketAddr,
        peer: SocketAddr,
    ) {
        let activity = Arc::new(AtomicU64::new(self.now_ms()));
        if let Err(e) = upstream.write_all(&hello).await {
            debug!(error = %e, "tls proxy: writing the ClientHello to the backend");
            reset(&client);
            return;
        }
        lc.bytes_from_clients.fetch_add(hello.len() as u64, Relaxed);
        bc.bytes_sent.fetch_add(hello.len() as u64, Relaxed);
        let (mut client, mut upstream) = (client, upstream);
        let mut up_buf = self.buffers.take();
        let mut down_buf = self.buffers.take();
        let outcome = {
            let (cr, cw) = client.split();
            let (ur, uw) = upstream.split();
            let note = || activity.store(self.now_ms(), Relaxed);
            let one_done = AtomicBool::new(false);
            let up = pump(cr, uw, &mut up_buf, &one_done, |n| {
                lc.bytes_from_clients.fetch_add(n, Relaxed);
                bc.bytes_sent.fetch_add(n, Relaxed);
                note();
            });
            let down = pump(ur, cw, &mut down_buf, &one_done, |n| {
                lc.bytes_to_clients.fetch_add(n, Relaxed);
                bc.bytes_received.fetch_add(n, Relaxed);
                note();
            });
            let idle = self.config.idle_timeout;
            let watchdog = async {
                loop {
                    let last = activity.load(Relaxed);
                    let since = Duration::from_millis(self.now_ms().saturating_sub(last));
                    if since >= idle {
                        return;
                    }
                    tokio::time::sleep(idle - since).await;
                }
            };
            tokio::select! {
                // Both directions until each has seen EOF (half-close is passed on); the first
                // error ends both.
                r = async { tokio::try_join!(up, down) } => r.map(|_| ()).map_err(Some),
                () = watchdog => Err(None),
            }
        };
        self.buffers.give(up_buf);
        self.buffers.give(down_buf);
        match outcome {
            Ok(()) => {}
            Err(Some(e)) => {
                // One side reset or failed: tell the other side the same way.
                debug!(error = %e, %local, %peer, "tls proxy: connection ended with an error");
                reset(&client);
                reset(&upstream);
            }
            Err(None) => {
                lc.idle_timeouts.fetch_add(1, Relaxed);
                if let Some(suppressed) = self.logs.allow(None) {
                    info!(%local, %peer, suppressed, "tls proxy: idle timeout, connection closed");
                }
                reset(&client);
                reset(&upstream);
            }
        }
    }
}

/// Copies one direction until EOF, then half-closes the other side (FIN), so that protocols
/// that close one way first keep working. `count` sees the size of every read.
///
/// `one_done` is shared by both directions: the first to see EOF sets it and shuts down; the
/// second leaves its FIN to the close that follows at once (both sockets are dropped when both
/// directions are done), which saves a system call per connection.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    buf: &mut [u8],
    one_done: &AtomicBool,
    count: impl Fn(u64),
) -> io::Result<()> {
    loop {
        let n = from.read(buf).await?;
        if n == 0 {
            if one_done.swap(true, Relaxed) {
                return Ok(());
            }
            return to.shutdown().await;
        }
        count(n as u64);
        to.write_all(&buf[..n]).await?;
    }
}

/// Copy buffers kept between connections: a fresh zeroed buffer per connection showed as the
/// top item (memset, ~15% of the proxy thread) in a connection-rate profile.
#[derive(Debug)]
struct BufferPool {
    size: usize,
    max: usize,
    free: Mutex<Vec<Box<[u8]>>>,
}

impl BufferPool {
    fn new(size: usize, max: usize) -> Self {
        BufferPool {
            size: size.max(1),
            max,
            free: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Box<[u8]> {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| vec![0u8; self.size].into_boxed_slice())
    }

    fn give(&self, b: Box<[u8]>) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < self.max {
            free.push(b);
        }
    }
}

/// Reads until the parser has a verdict or the peer closes. Each read is bounded by the
/// parser's remaining capacity so a peer can never make it buffer past the limit.
async fn read_hello(
    client: &mut TcpStream,
    parser: &mut ClientHelloParser,
) -> io::Result<Progress> {
    let mut buf = vec![0u8; 4096];
    loop {
        let want = parser.remaining_capacity().min(buf.len());
        let n = client.read(&mut buf[..want]).await?;
        if n == 0 {
            return Ok(Progress::NeedMore);
        }
        match parser.feed(&buf[..n]) {
            Progress::NeedMore => continue,
            p => return Ok(p),
        }
    }
}

#[cfg(test)]
mod tests;
