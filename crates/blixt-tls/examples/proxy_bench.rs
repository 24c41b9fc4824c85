//! A quick loopback measurement of the passthrough proxy: connections per second (a crafted
//! ClientHello, one byte back, close) and bulk throughput of one connection, for a direct
//! connection, Blixt's proxy, and HAProxy in TCP mode with SNI routing when `haproxy` is
//! installed. Not a substitute for the benchmark harness; it tells whether the copy loop is
//! worth replacing by splice/sockmap.
//!
//! `cargo run --release -p blixt-tls --example proxy_bench [SECONDS]`
//!
//! Each proxy gets one thread (Blixt: a one-worker runtime; HAProxy: nbthread 1); the load
//! generator and the backend share another runtime.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blixt_core::snapshot::{Backend, BackendAddr, BackendState};
use blixt_core::tls::{SniRoute, TlsFrontend};
use blixt_tls::{ProxyConfig, TlsProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A ClientHello for `sni` in one record (enough for both proxies to route on).
fn hello(sni: &str) -> Vec<u8> {
    let mut ext = Vec::new();
    let name = sni.as_bytes();
    let list_len = name.len() + 3;
    ext.extend_from_slice(&[0, 0]);
    ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(list_len as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// Backend: reads the hello, answers one byte, then counts everything until EOF and answers
/// the count as 8 bytes.
async fn backend(l: TcpListener, hello_len: usize) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while got < hello_len {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
            }
            if s.write_all(b"x").await.is_err() {
                return;
            }
            let mut total = (got - hello_len) as u64;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(_) => return,
                }
            }
            let _ = s.write_all(&total.to_be_bytes()).await;
        });
    }
}

async fn one_conn(target: SocketAddr, hello: &[u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    s.write_all(hello).await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    Ok(())
}

/// Connections per second with `conc` concurrent loops for `secs`, and latency percentiles.
async fn cps(
    target: SocketAddr,
    hello: Arc<Vec<u8>>,
    conc: usize,
    secs: f64,
) -> (f64, Duration, Duration, u64) {
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let hello = hello.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < stop {
                let t = Instant::now();
                match one_conn(target, &hello).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(_) => {
                        errors.fetch_add(1, Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    lat.sort_unstable();
    let n = lat.len();
    assert!(n > 0, "no connection succeeded through {target}");
    let p = |q: f64| lat[((n as f64 * q) as usize).min(n - 1)];
    (n as f64 / secs, p(0.5), p(0.99), errors.load(Relaxed))
}

/// Gbit/s of one connection pushing `bytes` to the backend.
async fn throughput(target: SocketAddr, hello: &[u8], bytes: u64) -> f64 {
    let mut s = TcpStream::connect(target).await.expect("connect");
    s.write_all(hello).await.expect("hello");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.expect("answer");
    let chunk = vec![0x5au8; 256 * 1024];
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        s.write_all(&chunk).await.expect("write");
        sent += chunk.len() as u64;
    }
    s.shutdown().await.expect("shutdown");
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await.expect("count");
    assert_eq!(u64::from_be_bytes(count), sent, "all bytes arrived");
    sent as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e9
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_haproxy(port: u16, backend: SocketAddr) -> Option<Haproxy> {
    let ok = Command::new("haproxy")
        .arg("-v")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("haproxy not installed (apt-get install haproxy): skipped");
        return None;
    }
    let cfg = format!(
        "global\n  nbthread 1\n  maxconn 4000\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
         frontend tls\n  bind 127.0.0.1:{port}\n  tcp-request inspect-delay 5s\n\
         \x20 tcp-request content accept if {{ req_ssl_hello_type 1 }}\n\
         \x20 use_backend be0 if {{ req_ssl_sni -i a.example.com }}\n\
         backend be0\n  server s0 {backend}\n"
    );
    let path = std::env::temp_dir().join(format!("blixt-bench-haproxy-{port}.cfg"));
    std::fs::write(&path, cfg).expect("haproxy config");
    let child = Command::new("haproxy")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .spawn()
        .expect("haproxy");
    std::thread::sleep(Duration::from_millis(500));
    Some(Haproxy(child))
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("seconds"))
        .unwrap_or(5.0);
    // optional second argument: only this target (direct, blixt, haproxy)
    let only = std::env::args().nth(2);
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let proxy_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("blixt-proxy")
        .enable_all()
        .build()
        .expect("runtime");
    let hello = Arc::new(hello("a.example.com"));

    let backend_addr = load.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a = l.local_addr().expect("addr");
        tokio::spawn(backend(l, hello.len()));
        a
    });
    let blixt_addr = proxy_rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a = l.local_addr().expect("addr");
        let mut config = ProxyConfig::default();
        if let Some(kib) = std::env::var("BENCH_COPY_KIB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            config.copy_buffer_size = kib * 1024;
        }
        let proxy = TlsProxy::new(config);
        proxy.apply(&[TlsFrontend {
            name: "bench".into(),
            vip: a.ip(),
            port: a.port(),
            routes: vec![SniRoute {
                hostname: "a.example.com".into(),
                listener: "tls".into(),
                route: Some("bench/a".into()),
                backends: vec![Backend {
                    addr: BackendAddr {
                        addr: backend_addr.ip(),
                        port: backend_addr.port(),
                    },
                    weight: 1,
                    state: BackendState::Active,
                }],
                reject_weight: 0,
            }],
        }]);
        tokio::spawn(async move { proxy.serve(l).await });
        a
    });
    let hp_port = free_port();
    let haproxy = start_haproxy(hp_port, backend_addr);

    let mut targets = vec![("direct", backend_addr), ("blixt", blixt_addr)];
    if haproxy.is_some() {
        targets.push(("haproxy", ([127, 0, 0, 1], hp_port).into()));
    }
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>7} {:>10}",
        "target", "conn/s", "p50", "p99", "errors", "Gbit/s"
    );
    for (name, target) in targets {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let (rate, p50, p99, errors) = load.block_on(cps(target, hello.clone(), 32, secs));
        let gbps = if std::env::var_os("BENCH_NO_STREAM").is_some() {
            0.0
        } else {
            load.block_on(throughput(target, &hello, 4 << 30))
        };
        println!(
            "{name:<8} {rate:>10.0} {:>10.1?} {:>10.1?} {errors:>7} {gbps:>10.2}",
            p50, p99
        );
    }
    drop(haproxy);
}
