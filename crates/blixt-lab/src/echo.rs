//! Echo servers that say who they are.
//!
//! # Protocol
//! - **TCP**: the client sends lines; for every line the server answers one line of JSON, an
//!   [`EchoReply`]. Connections may stay open for any number of lines.
//! - **UDP**: every datagram is answered with one datagram holding an [`EchoReply`].
//!
//! The reply names the backend and the peer address the server saw: behind a full-NAT load
//! balancer that is the load balancer's address, not the client's.
//!
//! Servers bind the wildcard address of both families: one `[::]` socket, plus a `0.0.0.0`
//! socket when the namespace has `net.ipv6.bindv6only=1`. A UDP reply leaves from the address
//! the kernel picks for the route back, which is the backend's (only) address in the lab.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::netns::NetNs;

/// Longest request line (TCP) or datagram (UDP) the server answers.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Stack size of connection threads: they only hold a small buffer, and there may be thousands.
const CONN_STACK: usize = 128 * 1024;

/// One answer of an echo server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoReply {
    /// The server's name (the backend).
    pub backend: String,
    /// `tcp` or `udp`.
    pub proto: String,
    /// The peer address the server saw (after any NAT).
    pub peer: SocketAddr,
    /// The server's local address of the connection (TCP) or listening socket (UDP).
    pub local: SocketAddr,
    /// 1-based number of this message on its connection (TCP) or socket (UDP).
    pub seq: u64,
    /// The request, without its line end.
    pub echo: String,
}

/// What to serve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoConfig {
    /// Name reported in every reply.
    pub name: String,
    /// TCP port (0: any free port), or `None` for no TCP.
    pub tcp_port: Option<u16>,
    /// UDP port (0: any free port), or `None` for no UDP.
    pub udp_port: Option<u16>,
}

impl EchoConfig {
    /// TCP and UDP on the same `port`.
    pub fn new(name: impl Into<String>, port: u16) -> Self {
        EchoConfig {
            name: name.into(),
            tcp_port: Some(port),
            udp_port: Some(port),
        }
    }
}

/// Counters of a running server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoStats {
    /// TCP connections accepted so far.
    pub tcp_accepted: u64,
    /// TCP connections open now.
    pub tcp_open: u64,
    /// TCP request lines answered.
    pub tcp_requests: u64,
    /// UDP datagrams answered.
    pub udp_datagrams: u64,
}

#[derive(Debug, Default)]
struct Counters {
    tcp_accepted: AtomicU64,
    tcp_requests: AtomicU64,
    udp_datagrams: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    name: String,
    stop: AtomicBool,
    counters: Counters,
    conns: Mutex<HashMap<u64, TcpStream>>,
}

/// A running TCP and/or UDP echo server. Sockets are bound in the network namespace of the
/// thread that calls [`EchoServer::start`] (use [`EchoServer::start_in`] for a lab node).
/// Dropping it (or [`EchoServer::stop`]) closes the listeners and every open connection.
#[derive(Debug)]
pub struct EchoServer {
    shared: Arc<Shared>,
    tcp_port: Option<u16>,
    udp_port: Option<u16>,
    tcp_listeners: Vec<TcpListener>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    /// Binds and starts serving in the calling thread's network namespace.
    pub fn start(cfg: EchoConfig) -> Result<Self> {
        let shared = Arc::new(Shared {
            name: cfg.name.clone(),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            conns: Mutex::new(HashMap::new()),
        });
        let mut server = EchoServer {
            shared,
            tcp_port: None,
            udp_port: None,
            tcp_listeners: Vec::new(),
            threads: Vec::new(),
        };
        if let Some(port) = cfg.tcp_port {
            let listeners = bind_dual(port, TcpListener::bind, |l| l.local_addr())
                .with_context(|| format!("binding TCP port {port} for {}", cfg.name))?;
            server.tcp_port = Some(listeners[0].local_addr()?.port());
            for l in &listeners {
                let l = l.try_clone().context("cloning TCP listener")?;
                let shared = server.shared.clone();
                server.threads.push(
                    thread::Builder::new()
                        .name(format!("echo-accept-{}", cfg.name))
                        .spawn(move || accept_loop(l, shared))
                        .context("spawning accept thread")?,
                );
            }
            server.tcp_listeners = listeners;
        }
        if let Some(port) = cfg.udp_port {
            let sockets = bind_dual(port, UdpSocket::bind, |s| s.local_addr())
                .with_context(|| format!("binding UDP port {port} for {}", cfg.name))?;
            server.udp_port = Some(sockets[0].local_addr()?.port());
            for s in sockets {
                // A short timeout lets the loop notice `stop` without any wake-up trick.
                s.set_read_timeout(Some(Duration::from_millis(100)))?;
                let shared = server.shared.clone();
                server.threads.push(
                    thread::Builder::new()
                        .name(format!("echo-udp-{}", cfg.name))
                        .spawn(move || udp_loop(s, shared))
                        .context("spawning UDP thread")?,
                );
            }
        }
        Ok(server)
    }

    /// Starts the server with its sockets in `ns`.
    pub fn start_in(ns: &NetNs, cfg: EchoConfig) -> Result<Self> {
        let name = ns.name().to_string();
        ns.run_in(move || Self::start(cfg))
            .with_context(|| format!("starting echo server in {name}"))
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The bound TCP port, if serving TCP.
    pub fn tcp_port(&self) -> Option<u16> {
        self.tcp_port
    }

    /// The bound UDP port, if serving UDP.
    pub fn udp_port(&self) -> Option<u16> {
        self.udp_port
    }

    /// Current counters.
    pub fn stats(&self) -> EchoStats {
        let c = &self.shared.counters;
        EchoStats {
            tcp_accepted: c.tcp_accepted.load(Ordering::Relaxed),
            tcp_open: self
                .shared
                .conns
                .lock()
                .map(|m| m.len() as u64)
                .unwrap_or(0),
            tcp_requests: c.tcp_requests.load(Ordering::Relaxed),
            udp_datagrams: c.udp_datagrams.load(Ordering::Relaxed),
        }
    }

    /// Stops serving: closes the listeners and shuts every open connection down (peers see
    /// EOF), then waits for the server threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.shared.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        for l in &self.tcp_listeners {
            // shutdown(2) on a listening socket wakes a blocked accept(2) with EINVAL.
            // SAFETY: the descriptor is owned by `l`, alive for the call.
            unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
        }
        if let Ok(conns) = self.shared.conns.lock() {
            for c in conns.values() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.tcp_listeners.clear();
        // Connection threads unregister themselves once their socket is shut down.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline
            && self
                .shared
                .conns
                .lock()
                .map(|m| !m.is_empty())
                .unwrap_or(false)
        {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds `[::]:port` and, unless that socket turned out dual-stack, `0.0.0.0` on the same
/// port. Falls back to IPv4 alone where IPv6 is disabled.
fn bind_dual<S>(
    port: u16,
    bind: impl Fn(SocketAddr) -> io::Result<S>,
    local: impl Fn(&S) -> io::Result<SocketAddr>,
) -> Result<Vec<S>> {
    let v6 = bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port));
    let port = match &v6 {
        Ok(s) => local(s)?.port(),
        Err(_) => port,
    };
    let v4 = bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port));
    match (v6, v4) {
        (Ok(s6), Ok(s4)) => Ok(vec![s6, s4]),
        // The IPv6 socket already covers IPv4 (bindv6only=0).
        (Ok(s6), Err(e)) if e.kind() == io::ErrorKind::AddrInUse => Ok(vec![s6]),
        (Ok(_), Err(e)) => Err(e).context("binding 0.0.0.0"),
        (Err(_), Ok(s4)) => Ok(vec![s4]),
        (Err(e6), Err(e4)) => bail!("binding [::]: {e6}; binding 0.0.0.0: {e4}"),
    }
}

/// Maps `::ffff:a.b.c.d` back to `a.b.c.d`, as seen by dual-stack sockets.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                next_id += 1;
                let id = next_id;
                shared.counters.tcp_accepted.fetch_add(1, Ordering::Relaxed);
                let Ok(registered) = stream.try_clone() else {
                    continue;
                };
                if let Ok(mut conns) = shared.conns.lock() {
                    conns.insert(id, registered);
                }
                let conn_shared = shared.clone();
                let spawned = thread::Builder::new()
                    .name("echo-conn".into())
                    .stack_size(CONN_STACK)
                    .spawn(move || {
                        let _ = serve_conn(stream, peer, &conn_shared);
                        if let Ok(mut conns) = conn_shared.conns.lock() {
                            conns.remove(&id);
                        }
                    });
                if spawned.is_err() {
                    if let Ok(mut conns) = shared.conns.lock() {
                        conns.remove(&id);
                    }
                }
            }
            Err(_) if shared.stop.load(Ordering::SeqCst) => return,
            // EMFILE and the like: back off instead of spinning.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn serve_conn(stream: TcpStream, peer: SocketAddr, shared: &Shared) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let local = canonical(stream.local_addr()?);
    let peer = canonical(peer);
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut seq = 0u64;
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_MESSAGE as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 || shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        seq += 1;
        let reply = EchoReply {
            backend: shared.name.clone(),
            proto: "tcp".into(),
            peer,
            local,
            seq,
            echo: trim_line(&line),
        };
        let mut out = serde_json::to_vec(&reply).map_err(io::Error::other)?;
        out.push(b'\n');
        writer.write_all(&out)?;
        shared.counters.tcp_requests.fetch_add(1, Ordering::Relaxed);
    }
}

fn udp_loop(socket: UdpSocket, shared: Arc<Shared>) {
    let local = socket.local_addr().map(canonical);
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        seq += 1;
        let reply = EchoReply {
            backend: shared.name.clone(),
            proto: "udp".into(),
            peer: canonical(from),
            local: local
                .as_ref()
                .copied()
                .unwrap_or_else(|_| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
            seq,
            echo: trim_line(&buf[..n]),
        };
        if let Ok(out) = serde_json::to_vec(&reply) {
            if socket.send_to(&out, from).is_ok() {
                shared
                    .counters
                    .udp_datagrams
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn trim_line(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    s.trim_end_matches(['\n', '\r']).to_string()
}

/// Line the `blixt-lab echo` command prints on stdout once its sockets are bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoReady {
    /// Always `ready`.
    pub event: String,
    /// The server's name.
    pub name: String,
    /// Bound TCP port.
    pub tcp_port: Option<u16>,
    /// Bound UDP port.
    pub udp_port: Option<u16>,
}

/// Path of the `blixt-lab` binary: `$BLIXT_LAB_BIN` if set, else next to the running
/// executable or one directory up (test binaries live in `target/<profile>/deps`). Other
/// crates' tests need it built first (`cargo build -p blixt-lab`, or any `cargo test
/// --workspace`, which builds every binary before running tests).
pub fn lab_binary() -> Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("BLIXT_LAB_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join("blixt-lab");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    bail!(
        "blixt-lab binary not found near {} (build it with `cargo build -p blixt-lab` or set \
         BLIXT_LAB_BIN)",
        exe.display()
    )
}

/// Spawns `blixt-lab echo` in `ns` and waits until it reports its sockets bound. The process
/// is killed when the returned guard drops.
pub fn spawn_echo_process(
    ns: &NetNs,
    cfg: &EchoConfig,
    timeout: Duration,
) -> Result<(crate::LabProcess, EchoReady)> {
    let bin = lab_binary()?;
    let mut args = vec![
        bin.to_string_lossy().into_owned(),
        "echo".into(),
        "--name".into(),
        cfg.name.clone(),
    ];
    match cfg.tcp_port {
        Some(p) => args.extend(["--tcp-port".into(), p.to_string()]),
        None => args.push("--no-tcp".into()),
    }
    match cfg.udp_port {
        Some(p) => args.extend(["--udp-port".into(), p.to_string()]),
        None => args.push("--no-udp".into()),
    }
    let mut proc = ns.spawn(&args)?;
    let line = proc
        .wait_for_line(timeout, |l| l.contains("\"ready\""))
        .with_context(|| format!("waiting for echo server {} to be ready", cfg.name))?;
    let ready: EchoReady = serde_json::from_str(&line).context("parsing the ready line")?;
    Ok((proc, ready))
}
