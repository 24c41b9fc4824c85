//! Traffic clients that talk to [echo servers](crate::echo) and report what happened.
//!
//! All of them open their sockets in the calling thread's network namespace (and their worker
//! threads inherit it), so call them inside [`NetNs::run_in`](crate::NetNs::run_in). As a
//! guard against test traffic leaving the machine, they refuse any non-loopback target unless
//! called from inside a named (`ip netns`) namespace.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::echo::{canonical, EchoReply, MAX_MESSAGE};
use crate::sys;

/// Stack size of client worker threads.
const WORKER_STACK: usize = 256 * 1024;

/// Fails unless traffic to `ip` stays on this machine: loopback targets are always fine,
/// anything else only from a thread inside a named network namespace (`/run/netns/*`, which
/// is where the lab's namespaces live), never from the host's own namespace.
pub fn check_lab_target(ip: IpAddr) -> Result<()> {
    if ip.to_canonical().is_loopback() {
        return Ok(());
    }
    if !sys::in_named_netns() {
        bail!(
            "refusing to send test traffic to {ip} from outside a lab namespace: lab traffic \
             must stay inside the lab (use NetNs::run_in or `ip netns exec`)"
        );
    }
    Ok(())
}

/// The outcome of one connection or flow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowResult {
    /// Our local address (the flow's source as sent).
    pub local: Option<SocketAddr>,
    /// Whether a correct answer came back from the target address.
    pub ok: bool,
    /// The backend named in the (last) answer.
    pub backend: Option<String>,
    /// The peer address the backend saw.
    pub peer_seen: Option<SocketAddr>,
    /// Where the answer came from, when that was not the target.
    pub wrong_source: Option<SocketAddr>,
    /// Datagrams sent (UDP, retries included) or 1 (TCP).
    pub attempts: u32,
    /// Datagrams re-sent after a timeout (UDP).
    pub retries: u32,
    /// Whether answers within the flow named different backends.
    pub backend_changed: bool,
    /// Round-trip time of the first answered request, in microseconds.
    pub rtt_us: Option<u64>,
    /// What went wrong, in the form `stage: reason`.
    pub error: Option<String>,
}

/// What a batch of connections or flows did. `ok + failed == attempted`; `wrong_source`
/// counts the failed ones whose answer came from an address other than the target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The address connected or sent to.
    pub target: Option<SocketAddr>,
    /// Connections or flows tried.
    pub attempted: usize,
    /// Connections or flows answered correctly.
    pub ok: usize,
    /// Connections or flows that were not.
    pub failed: usize,
    /// Answers from an address other than the target (a NAT that forgot to translate back).
    pub wrong_source: usize,
    /// Flows whose answers named different backends (UDP flows with several datagrams).
    pub backend_changed: usize,
    /// Datagrams re-sent after a timeout (UDP).
    pub retries: usize,
    /// Successful flows per backend name.
    pub backends: BTreeMap<String, usize>,
    /// Source addresses the backends saw (without ports), with counts.
    pub peers_seen: BTreeMap<IpAddr, usize>,
    /// Failures by `stage: reason`.
    pub errors: BTreeMap<String, usize>,
    /// Wall time of the whole batch.
    pub elapsed_ms: u64,
    /// Each flow in order, when kept (the library always keeps them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<FlowResult>,
}

impl Report {
    fn from_flows(proto: &str, target: SocketAddr, flows: Vec<FlowResult>, t0: Instant) -> Self {
        let mut r = Report {
            proto: proto.to_string(),
            target: Some(target),
            attempted: flows.len(),
            elapsed_ms: t0.elapsed().as_millis() as u64,
            ..Report::default()
        };
        for f in &flows {
            r.retries += f.retries as usize;
            if f.wrong_source.is_some() {
                r.wrong_source += 1;
            }
            if f.backend_changed {
                r.backend_changed += 1;
            }
            if let Some(peer) = f.peer_seen {
                *r.peers_seen.entry(peer.ip()).or_default() += 1;
            }
            if f.ok {
                r.ok += 1;
                if let Some(b) = &f.backend {
                    *r.backends.entry(b.clone()).or_default() += 1;
                }
            } else {
                r.failed += 1;
                let e = f.error.clone().unwrap_or_else(|| "unknown".into());
                *r.errors.entry(e).or_default() += 1;
            }
        }
        r.flows = flows;
        r
    }

    /// Whether every flow succeeded with the right source.
    pub fn all_ok(&self) -> bool {
        self.attempted > 0 && self.ok == self.attempted && self.wrong_source == 0
    }

    /// A one-line summary for assertion messages.
    pub fn summary(&self) -> String {
        format!(
            "{} {:?}: {}/{} ok, wrong_source {}, backends {:?}, peers {:?}, errors {:?}",
            self.proto,
            self.target,
            self.ok,
            self.attempted,
            self.wrong_source,
            self.backends,
            self.peers_seen,
            self.errors
        )
    }
}

fn err_kind(stage: &str, e: &io::Error) -> String {
    let reason = match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timeout".to_string(),
        io::ErrorKind::ConnectionRefused => "refused".to_string(),
        io::ErrorKind::ConnectionReset => "reset".to_string(),
        io::ErrorKind::UnexpectedEof => "eof".to_string(),
        io::ErrorKind::BrokenPipe => "broken pipe".to_string(),
        _ => match e.raw_os_error() {
            Some(libc::ENETUNREACH) => "network unreachable".to_string(),
            Some(libc::EHOSTUNREACH) => "host unreachable".to_string(),
            _ => format!("{:?}", e.kind()),
        },
    };
    format!("{stage}: {reason}")
}

/// Runs `n` jobs on up to `concurrency` worker threads and returns their results in order.
fn run_pool<T: Send>(n: usize, concurrency: usize, job: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let workers = concurrency.clamp(1, n.max(1));
    let mut results: Vec<(usize, T)> = thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                thread::Builder::new()
                    .stack_size(WORKER_STACK)
                    .spawn_scoped(s, || {
                        let mut out = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= n {
                                return out;
                            }
                            out.push((i, job(i)));
                        }
                    })
                    .expect("spawning a traffic worker")
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, t)| t).collect()
}

/// Opens `conns` TCP connections to `target`, at most `concurrency` at a time. Each one
/// connects, sends one line, reads the answer and closes; every step is bounded by `timeout`.
pub fn tcp_burst(
    target: SocketAddr,
    conns: usize,
    concurrency: usize,
    timeout: Duration,
) -> Result<Report> {
    check_lab_target(target.ip())?;
    sys::raise_nofile_limit();
    let t0 = Instant::now();
    let flows = run_pool(conns, concurrency, |i| tcp_once(target, i, timeout));
    Ok(Report::from_flows("tcp", target, flows, t0))
}

fn tcp_once(target: SocketAddr, i: usize, timeout: Duration) -> FlowResult {
    let mut f = FlowResult {
        attempts: 1,
        ..FlowResult::default()
    };
    let stream = match TcpStream::connect_timeout(&target, timeout) {
        Ok(s) => s,
        Err(e) => {
            f.error = Some(err_kind("connect", &e));
            return f;
        }
    };
    f.local = stream.local_addr().ok().map(canonical);
    // A connected socket only takes segments from its peer, so this can only differ if the
    // stack itself got confused; checked anyway for symmetry with UDP.
    match stream.peer_addr().map(canonical) {
        Ok(p) if p == canonical(target) => {}
        Ok(p) => {
            f.wrong_source = Some(p);
            f.error = Some("connect: wrong peer".into());
            return f;
        }
        Err(e) => {
            f.error = Some(err_kind("connect", &e));
            return f;
        }
    }
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = format!("burst {i}");
    let mut conn = LineConn::new(stream);
    let t = Instant::now();
    match conn.exchange(&request) {
        Ok(reply) => {
            f.rtt_us = Some(t.elapsed().as_micros() as u64);
            f.backend = Some(reply.backend);
            f.peer_seen = Some(reply.peer);
            f.ok = true;
        }
        Err(e) => f.error = Some(e),
    }
    f
}

/// A TCP connection speaking the echo line protocol.
struct LineConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: String,
}

impl LineConn {
    fn new(stream: TcpStream) -> Self {
        let writer = stream.try_clone().expect("cloning a TCP stream");
        LineConn {
            reader: BufReader::new(stream),
            writer,
            line: String::new(),
        }
    }

    /// Sends `request` and reads one reply; errors are `stage: reason` strings.
    fn exchange(&mut self, request: &str) -> Result<EchoReply, String> {
        let mut out = request.as_bytes().to_vec();
        out.push(b'\n');
        self.writer
            .write_all(&out)
            .map_err(|e| err_kind("write", &e))?;
        self.line.clear();
        let n = self
            .reader
            .read_line(&mut self.line)
            .map_err(|e| err_kind("read", &e))?;
        if n == 0 {
            return Err("read: eof".into());
        }
        let reply: EchoReply = serde_json::from_str(self.line.trim_end())
            .map_err(|_| "reply: not json".to_string())?;
        if reply.echo != request {
            return Err("reply: wrong echo".into());
        }
        Ok(reply)
    }
}

/// Options of [`udp_flows`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UdpOptions {
    /// Flows in flight at once.
    pub concurrency: usize,
    /// How long to wait for each answer before re-sending.
    pub timeout: Duration,
    /// Re-sends per datagram after a timeout.
    pub retries: u32,
    /// Datagrams per flow (each must be answered, by the same backend).
    pub datagrams_per_flow: u32,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            concurrency: 16,
            timeout: Duration::from_millis(500),
            retries: 3,
            datagrams_per_flow: 1,
        }
    }
}

/// Runs `flows` UDP flows to `target`, each from its own socket. Every socket stays open until
/// the whole batch is done, so all flows have distinct source ports (distinct 5-tuples for a
/// load balancer's conntrack) even when run one after another. Each flow sends `datagrams_per_flow` datagrams one after the other and waits for each answer,
/// re-sending on timeout. An answer whose source (from `recv_from`) is not `target` counts
/// as `wrong_source` and fails the flow.
pub fn udp_flows(target: SocketAddr, flows: usize, opts: &UdpOptions) -> Result<Report> {
    check_lab_target(target.ip())?;
    sys::raise_nofile_limit();
    let t0 = Instant::now();
    let (results, sockets): (Vec<FlowResult>, Vec<Option<UdpSocket>>) =
        run_pool(flows, opts.concurrency, |i| udp_flow(target, i, opts))
            .into_iter()
            .unzip();
    let report = Report::from_flows("udp", target, results, t0);
    drop(sockets);
    Ok(report)
}

fn unspecified_like(target: SocketAddr) -> SocketAddr {
    match target {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// One flow; returns its socket too, to be closed only when the batch ends.
fn udp_flow(target: SocketAddr, i: usize, opts: &UdpOptions) -> (FlowResult, Option<UdpSocket>) {
    let mut f = FlowResult::default();
    let socket = match UdpSocket::bind(unspecified_like(target)) {
        Ok(s) => s,
        Err(e) => {
            f.error = Some(err_kind("bind", &e));
            return (f, None);
        }
    };
    udp_flow_on(&socket, &mut f, target, i, opts);
    (f, Some(socket))
}

fn udp_flow_on(
    socket: &UdpSocket,
    f: &mut FlowResult,
    target: SocketAddr,
    i: usize,
    opts: &UdpOptions,
) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    for d in 0..opts.datagrams_per_flow.max(1) {
        let request = format!("flow {i} datagram {d}");
        let mut answered = None;
        let t = Instant::now();
        for attempt in 0..=opts.retries {
            f.attempts += 1;
            if attempt > 0 {
                f.retries += 1;
            }
            if let Err(e) = socket.send_to(request.as_bytes(), target) {
                f.error = Some(err_kind("send", &e));
                // ICMP errors surface on the next call; give the network a moment.
                thread::sleep(opts.timeout.min(Duration::from_millis(50)));
                continue;
            }
            if f.local.is_none() {
                f.local = socket.local_addr().ok().map(canonical);
            }
            match recv_answer(socket, &mut buf, &request, opts.timeout) {
                Ok((from, reply)) => {
                    if canonical(from) != canonical(target) {
                        f.wrong_source = Some(canonical(from));
                        f.backend = Some(reply.backend);
                        f.peer_seen = Some(reply.peer);
                        f.error = Some("recv: wrong source".into());
                        return;
                    }
                    answered = Some(reply);
                    break;
                }
                Err(e) => f.error = Some(e),
            }
        }
        let Some(reply) = answered else {
            return;
        };
        if f.rtt_us.is_none() {
            f.rtt_us = Some(t.elapsed().as_micros() as u64);
        }
        match &f.backend {
            Some(b) if *b != reply.backend => f.backend_changed = true,
            _ => {}
        }
        f.backend = Some(reply.backend);
        f.peer_seen = Some(reply.peer);
        f.error = None;
    }
    if f.backend_changed {
        f.error = Some("reply: backend changed".into());
    } else {
        f.ok = true;
    }
}

/// Waits up to `timeout` for the answer to `request`, skipping late answers to earlier
/// requests of the same flow.
fn recv_answer(
    socket: &UdpSocket,
    buf: &mut [u8],
    request: &str,
    timeout: Duration,
) -> Result<(SocketAddr, EchoReply), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("recv: timeout".into());
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| err_kind("recv", &e))?;
        let (n, from) = socket.recv_from(buf).map_err(|e| err_kind("recv", &e))?;
        let Ok(reply) = serde_json::from_slice::<EchoReply>(&buf[..n]) else {
            return Err("reply: not json".into());
        };
        if reply.echo == request {
            return Ok((from, reply));
        }
    }
}

/// Result of one long-lived connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnResult {
    /// Index of the connection (0-based, in opening order).
    pub index: usize,
    /// Our local address.
    pub local: Option<SocketAddr>,
    /// The backend named in the first answer.
    pub backend: Option<String>,
    /// The peer address the backend saw.
    pub peer_seen: Option<SocketAddr>,
    /// Messages exchanged successfully.
    pub messages: u64,
    /// Whether the connection failed before [`LongLived::stop`].
    pub broken: bool,
    /// Whether an answer named a different backend than the first.
    pub backend_changed: bool,
    /// Why it broke, as `stage: reason`.
    pub error: Option<String>,
}

/// Result of [`LongLived::stop`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LongLivedReport {
    /// The address connected to.
    pub target: Option<SocketAddr>,
    /// Connections opened (or tried).
    pub conns: usize,
    /// Connections that broke (including those that never connected).
    pub broken: usize,
    /// Connections per backend (by first answer).
    pub backends: BTreeMap<String, usize>,
    /// Messages exchanged over all connections.
    pub messages: u64,
    /// How long the connections ran.
    pub elapsed_ms: u64,
    /// Each connection.
    pub results: Vec<ConnResult>,
}

impl LongLivedReport {
    /// A one-line summary for assertion messages.
    pub fn summary(&self) -> String {
        let errors: BTreeMap<&str, usize> = self
            .results
            .iter()
            .filter_map(|r| r.error.as_deref())
            .fold(BTreeMap::new(), |mut m, e| {
                *m.entry(e).or_default() += 1;
                m
            });
        format!(
            "{:?}: {} conns, {} broken, {} messages, backends {:?}, errors {:?}",
            self.target, self.conns, self.broken, self.messages, self.backends, errors
        )
    }
}

#[derive(Debug)]
struct LongShared {
    stop: Mutex<bool>,
    wake: Condvar,
    stopped: AtomicBool,
    progress: Vec<AtomicU64>,
    broken: Vec<AtomicBool>,
}

/// N TCP connections that each exchange a message every `interval` in a background thread
/// until [`LongLived::stop`]; used to prove that no connection breaks while backends change
/// or the agent restarts.
///
/// Create it inside [`NetNs::run_in`](crate::NetNs::run_in): the sockets are opened by the
/// calling thread; the value can then be moved out and stopped from anywhere.
#[derive(Debug)]
pub struct LongLived {
    target: SocketAddr,
    shared: Arc<LongShared>,
    threads: Vec<JoinHandle<ConnResult>>,
    started: Instant,
}

impl LongLived {
    /// Opens `conns` connections to `target` (each connect bounded by `timeout`), does one
    /// exchange on each, then keeps them exchanging every `interval`; an answer that takes
    /// longer than `timeout` breaks the connection. Connections that fail to open count as
    /// broken in the report.
    pub fn start(
        target: SocketAddr,
        conns: usize,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Self> {
        check_lab_target(target.ip())?;
        sys::raise_nofile_limit();
        let shared = Arc::new(LongShared {
            stop: Mutex::new(false),
            wake: Condvar::new(),
            stopped: AtomicBool::new(false),
            progress: (0..conns).map(|_| AtomicU64::new(0)).collect(),
            broken: (0..conns).map(|_| AtomicBool::new(false)).collect(),
        });
        let mut threads = Vec::with_capacity(conns);
        for index in 0..conns {
            let connected = TcpStream::connect_timeout(&target, timeout);
            let shared = shared.clone();
            let handle = thread::Builder::new()
                .name(format!("long-lived-{index}"))
                .stack_size(WORKER_STACK)
                .spawn(move || long_lived_conn(index, connected, &shared, interval, timeout))
                .context("spawning a long-lived connection thread")?;
            threads.push(handle);
        }
        Ok(LongLived {
            target,
            shared,
            threads,
            started: Instant::now(),
        })
    }

    /// Messages exchanged so far over all connections.
    pub fn messages(&self) -> u64 {
        self.shared
            .progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum()
    }

    /// Connections broken so far.
    pub fn broken(&self) -> usize {
        self.shared
            .broken
            .iter()
            .filter(|b| b.load(Ordering::Relaxed))
            .count()
    }

    /// Waits until every connection that is not broken has done at least `rounds` more
    /// exchanges than when called; fails after `timeout`. Use it to prove that traffic flows
    /// after an event (a backend change, an agent restart).
    pub fn wait_rounds(&self, rounds: u64, timeout: Duration) -> Result<()> {
        let start: Vec<u64> = self
            .shared
            .progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .collect();
        let deadline = Instant::now() + timeout;
        loop {
            let behind = self
                .shared
                .progress
                .iter()
                .zip(&self.shared.broken)
                .zip(&start)
                .filter(|((p, b), s)| {
                    !b.load(Ordering::Relaxed) && p.load(Ordering::Relaxed) < *s + rounds
                })
                .count();
            if behind == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{behind} connections did not do {rounds} more exchanges within {timeout:?} \
                     ({} broken)",
                    self.broken()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops all connections (closing them cleanly) and returns what each one did.
    pub fn stop(mut self) -> LongLivedReport {
        self.signal_stop();
        let results: Vec<ConnResult> = self
            .threads
            .drain(..)
            .enumerate()
            .map(|(index, h)| {
                h.join().unwrap_or_else(|_| ConnResult {
                    index,
                    broken: true,
                    error: Some("client: thread panicked".into()),
                    ..ConnResult::default()
                })
            })
            .collect();
        let mut report = LongLivedReport {
            target: Some(self.target),
            conns: results.len(),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            ..LongLivedReport::default()
        };
        for r in &results {
            report.messages += r.messages;
            if r.broken {
                report.broken += 1;
            }
            if let Some(b) = &r.backend {
                *report.backends.entry(b.clone()).or_default() += 1;
            }
        }
        report.results = results;
        report
    }

    fn signal_stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        if let Ok(mut stop) = self.shared.stop.lock() {
            *stop = true;
        }
        self.shared.wake.notify_all();
    }
}

impl Drop for LongLived {
    fn drop(&mut self) {
        self.signal_stop();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

fn long_lived_conn(
    index: usize,
    connected: io::Result<TcpStream>,
    shared: &LongShared,
    interval: Duration,
    timeout: Duration,
) -> ConnResult {
    let mut r = ConnResult {
        index,
        ..ConnResult::default()
    };
    let fail = |r: &mut ConnResult, e: String| {
        r.broken = true;
        r.error = Some(e);
        shared.broken[index].store(true, Ordering::Relaxed);
    };
    let stream = match connected {
        Ok(s) => s,
        Err(e) => {
            fail(&mut r, err_kind("connect", &e));
            return r;
        }
    };
    r.local = stream.local_addr().ok().map(canonical);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let mut conn = LineConn::new(stream);
    let mut seq = 0u64;
    loop {
        if shared.stopped.load(Ordering::SeqCst) {
            return r;
        }
        seq += 1;
        match conn.exchange(&format!("conn {index} msg {seq}")) {
            Ok(reply) => {
                match &r.backend {
                    None => {
                        r.backend = Some(reply.backend);
                        r.peer_seen = Some(reply.peer);
                    }
                    Some(b) if *b != reply.backend => {
                        r.backend_changed = true;
                        fail(
                            &mut r,
                            format!("reply: backend changed to {}", reply.backend),
                        );
                        return r;
                    }
                    Some(_) => {}
                }
                r.messages += 1;
                shared.progress[index].fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // A stop that raced with the exchange is not a break.
                if !shared.stopped.load(Ordering::SeqCst) {
                    fail(&mut r, e);
                }
                return r;
            }
        }
        let Ok(guard) = shared.stop.lock() else {
            return r;
        };
        let _unused = shared
            .wake
            .wait_timeout_while(guard, interval, |stop| !*stop)
            .map(|(g, _)| g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_add_up() {
        let target: SocketAddr = "10.99.100.1:80".parse().unwrap();
        let ok = |b: &str| FlowResult {
            ok: true,
            backend: Some(b.into()),
            peer_seen: Some("10.99.10.1:4000".parse().unwrap()),
            attempts: 1,
            ..FlowResult::default()
        };
        let flows = vec![
            ok("be0"),
            ok("be1"),
            ok("be0"),
            FlowResult {
                attempts: 4,
                retries: 3,
                error: Some("recv: timeout".into()),
                ..FlowResult::default()
            },
            FlowResult {
                attempts: 1,
                wrong_source: Some("10.99.10.2:80".parse().unwrap()),
                error: Some("recv: wrong source".into()),
                ..FlowResult::default()
            },
        ];
        let r = Report::from_flows("udp", target, flows, Instant::now());
        assert_eq!((r.attempted, r.ok, r.failed, r.wrong_source), (5, 3, 2, 1));
        assert_eq!(r.retries, 3);
        assert_eq!(r.backends["be0"], 2);
        assert_eq!(r.peers_seen[&"10.99.10.1".parse::<IpAddr>().unwrap()], 3);
        assert_eq!(r.errors["recv: timeout"], 1);
        assert!(!r.all_ok());
        let json = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn pool_keeps_order() {
        let out = run_pool(100, 7, |i| i * 2);
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        assert!(run_pool(0, 4, |i| i).is_empty());
    }

    #[test]
    fn host_namespace_targets_are_refused() {
        // Unit tests run in the host namespace (or wherever cargo runs): loopback is fine.
        assert!(check_lab_target("127.0.0.1".parse().unwrap()).is_ok());
        assert!(check_lab_target("::1".parse().unwrap()).is_ok());
        if !sys::in_named_netns() {
            assert!(check_lab_target("10.99.0.1".parse().unwrap()).is_err());
        }
    }
}
