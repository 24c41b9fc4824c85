//! The backends of the end-to-end lab: a small HTTP/1.1 server and a TCP sink, the same for
//! every system measured, run in-process with their sockets in a backend namespace.
//!
//! - **HTTP**: answers every request (any method or path) with `200 OK` and a fixed small body
//!   naming the backend ([`BODY_LEN`] bytes). Keep-alive by default as HTTP/1.1 says;
//!   `Connection: close` (or HTTP/1.0 without `keep-alive`) gets the answer and then a FIN
//!   right behind it, as nginx does. Request bodies announced by `Content-Length` are read and
//!   ignored; pipelined requests are answered in order.
//! - **Sink**: reads and discards whatever a connection sends, counting bytes (bulk throughput).
//!
//! Each backend has its own tokio runtime with [`BackendOptions::workers`] threads (nginx's
//! `worker_processes auto` on this 2-core machine would be 2). Listeners are created from a
//! thread inside the backend's namespace, so every accepted connection belongs to it; the
//! runtime's threads themselves need not be there.
//!
//! Counters ([`HttpStats`]) prove which backends served and which source addresses they saw:
//! behind a NATing load balancer that is the balancer's address, never the client's.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use blixt_lab::NetNs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Runtime;

/// Bytes of every response body.
pub const BODY_LEN: usize = 128;
/// Listen backlog (nginx's default on Linux is 511).
const BACKLOG: u32 = 1024;
/// Largest request head accepted before the connection is dropped.
const MAX_HEAD: usize = 16 * 1024;

/// What a backend serves.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Name written into every response body.
    pub name: String,
    /// HTTP port.
    pub http_port: u16,
    /// Port of the byte sink, if any.
    pub sink_port: Option<u16>,
    /// Runtime worker threads.
    pub workers: usize,
}

impl BackendOptions {
    /// HTTP on `http_port`, no sink, 2 workers.
    pub fn new(name: impl Into<String>, http_port: u16) -> BackendOptions {
        BackendOptions {
            name: name.into(),
            http_port,
            sink_port: None,
            workers: 2,
        }
    }
}

/// Counters of a running backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// HTTP connections accepted.
    pub connections: u64,
    /// HTTP requests answered.
    pub requests: u64,
    /// Bytes received by the sink.
    pub sink_bytes: u64,
    /// Sink connections accepted.
    pub sink_connections: u64,
    /// Accepted connections (HTTP and sink) per source address.
    pub peers: BTreeMap<IpAddr, u64>,
}

impl HttpStats {
    /// What happened between `earlier` and `self` (peers: connections in between).
    pub fn since(&self, earlier: &HttpStats) -> HttpStats {
        let mut peers = BTreeMap::new();
        for (ip, n) in &self.peers {
            let d = n - earlier.peers.get(ip).copied().unwrap_or(0);
            if d > 0 {
                peers.insert(*ip, d);
            }
        }
        HttpStats {
            connections: self.connections - earlier.connections,
            requests: self.requests - earlier.requests,
            sink_bytes: self.sink_bytes - earlier.sink_bytes,
            sink_connections: self.sink_connections - earlier.sink_connections,
            peers,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    sink_bytes: AtomicU64,
    sink_connections: AtomicU64,
    peers: Mutex<BTreeMap<IpAddr, u64>>,
}

impl Counters {
    fn peer(&self, addr: SocketAddr) {
        if let Ok(mut p) = self.peers.lock() {
            *p.entry(addr.ip()).or_default() += 1;
        }
    }
}

/// A running backend; dropping it stops the runtime and closes every socket.
#[derive(Debug)]
pub struct HttpBackend {
    opts: BackendOptions,
    counters: Arc<Counters>,
    runtime: Option<Runtime>,
}

impl HttpBackend {
    /// Starts serving on the wildcard IPv4 address of `ns`.
    pub fn start_in(ns: &NetNs, opts: BackendOptions) -> Result<HttpBackend> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.workers.max(1))
            .thread_name(format!("http-{}", opts.name))
            .enable_all()
            .build()
            .context("building the backend's runtime")?;
        let counters = Arc::new(Counters::default());
        let body = Arc::new(body_for(&opts.name));
        let handle = runtime.handle().clone();
        let (http, sink) = ns
            .run_in(|| -> Result<(TcpListener, Option<TcpListener>)> {
                let _rt = handle.enter();
                let http = listen(opts.http_port)?;
                let sink = opts.sink_port.map(listen).transpose()?;
                Ok((http, sink))
            })
            .with_context(|| format!("backend {} in netns {}", opts.name, ns.name()))?;
        let c = counters.clone();
        runtime.spawn(accept_loop(http, counters.clone(), move |s| {
            c.connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve_http(s, c.clone(), body.clone()));
        }));
        if let Some(sink) = sink {
            let c = counters.clone();
            runtime.spawn(accept_loop(sink, counters.clone(), move |s| {
                c.sink_connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve_sink(s, c.clone()));
            }));
        }
        Ok(HttpBackend {
            opts,
            counters,
            runtime: Some(runtime),
        })
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.opts.name
    }

    /// What it serves.
    pub fn options(&self) -> &BackendOptions {
        &self.opts
    }

    /// Counters now.
    pub fn stats(&self) -> HttpStats {
        let c = &self.counters;
        HttpStats {
            connections: c.connections.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            sink_bytes: c.sink_bytes.load(Ordering::Relaxed),
            sink_connections: c.sink_connections.load(Ordering::Relaxed),
            peers: c.peers.lock().map(|p| p.clone()).unwrap_or_default(),
        }
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Accepts forever, recording each peer, and hands every connection to `serve`. An accept
/// error (e.g. out of descriptors) is waited out briefly rather than spun on.
async fn accept_loop(l: TcpListener, c: Arc<Counters>, serve: impl Fn(TcpStream)) {
    loop {
        match l.accept().await {
            Ok((s, peer)) => {
                c.peer(peer);
                serve(s);
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
        }
    }
}

fn listen(port: u16) -> Result<TcpListener> {
    let s = TcpSocket::new_v4().context("TCP socket")?;
    s.set_reuseaddr(true).context("SO_REUSEADDR")?;
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    s.bind(addr).with_context(|| format!("binding {addr}"))?;
    s.listen(BACKLOG)
        .with_context(|| format!("listening on {addr}"))
}

/// The fixed body: the backend's name, padded to [`BODY_LEN`] bytes.
fn body_for(name: &str) -> Vec<u8> {
    let mut b = format!("blixt-bench backend {name}\n").into_bytes();
    b.resize(BODY_LEN - 1, b'.');
    b.push(b'\n');
    b
}

fn response(body: &[u8], close: bool) -> Vec<u8> {
    let conn = if close { "close" } else { "keep-alive" };
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nServer: blixt-bench\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: {conn}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// What the server needs from a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    /// Bytes of the head, up to and including the blank line.
    len: usize,
    /// Whether the connection closes after the answer.
    close: bool,
    /// Body bytes that follow the head.
    body: usize,
}

/// Parses a complete request head at the start of `buf`; `Ok(None)` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, &'static str> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err("request head too long")
        } else {
            Ok(None)
        };
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "request head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().ok_or("empty request")?;
    let http10 = request_line.ends_with("HTTP/1.0");
    let mut close = http10;
    let mut body = 0;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && http10 {
                    close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            body = value.parse().map_err(|_| "bad Content-Length")?;
        }
    }
    Ok(Some(Head {
        len: end + 4,
        close,
        body,
    }))
}

async fn serve_http(mut s: TcpStream, c: Arc<Counters>, body: Arc<Vec<u8>>) {
    let _ = s.set_nodelay(true);
    let keep = response(&body, false);
    let close = response(&body, true);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let head = loop {
            match parse_head(&buf) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(_) => return,
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        // the request's body, if any, is read and dropped
        let mut need = head.len + head.body;
        while buf.len() < need {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        need = need.min(buf.len());
        buf.drain(..need);
        let answer = if head.close { &close } else { &keep };
        if s.write_all(answer).await.is_err() {
            return;
        }
        c.requests.fetch_add(1, Ordering::Relaxed);
        if head.close {
            let _ = s.shutdown().await;
            return;
        }
    }
}

async fn serve_sink(mut s: TcpStream, c: Arc<Counters>) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                c.sink_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let h = parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET")
            .unwrap()
            .unwrap();
        assert_eq!((h.len, h.close, h.body), (27, false, 0));
        let h = parse_head(b"GET / HTTP/1.1\r\nconnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.close);
        let h = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(h.close);
        let h = parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.close);
        let h = parse_head(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, 5);
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost"), Ok(None));
        assert!(parse_head(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }

    #[test]
    fn body_has_fixed_length() {
        assert_eq!(body_for("be0").len(), BODY_LEN);
        assert!(String::from_utf8(response(&body_for("be1"), true))
            .unwrap()
            .contains("Content-Length: 128\r\nConnection: close\r\n"));
    }
}
