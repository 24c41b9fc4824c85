//! The proxy on loopback (no root, no BPF): listeners bound to the frontend address itself.

use std::net::SocketAddr;
use std::time::Duration;

use blixt_core::snapshot::{Backend, BackendAddr, BackendState};
use blixt_core::tls::{SniRoute, TlsFrontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;
use crate::testutil::Hello;

/// A backend that answers every connection with its name and the bytes it received first
/// (everything the proxy forwarded up to the ClientHello's length), then echoes.
struct TestBackend {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn backend(name: &'static str) -> TestBackend {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    TestBackend { addr, task }
}

fn be(addr: SocketAddr, weight: u32) -> Backend {
    Backend {
        addr: BackendAddr {
            addr: addr.ip(),
            port: addr.port(),
        },
        weight,
        state: BackendState::Active,
    }
}

fn route(h: &str, backends: Vec<Backend>, reject_weight: u32) -> SniRoute {
    SniRoute {
        hostname: h.into(),
        listener: "tls".into(),
        route: Some(format!("default/{}", h.replace('*', "star"))),
        backends,
        reject_weight,
    }
}

struct Running {
    proxy: TlsProxy,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(config: ProxyConfig, routes: Vec<SniRoute>) -> Running {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let proxy = TlsProxy::new(config);
    proxy.apply(&[frontend(addr, routes)]);
    let p = proxy.clone();
    let task = tokio::spawn(async move { p.serve(l).await });
    Running { proxy, addr, task }
}

fn frontend(addr: SocketAddr, routes: Vec<SniRoute>) -> TlsFrontend {
    TlsFrontend {
        name: "default/gw/tls".into(),
        vip: addr.ip(),
        port: addr.port(),
        routes,
    }
}

async fn read_line(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("backend answer in time")
            .expect("read");
        assert!(n > 0, "eof before a line");
        if b[0] == b'\n' {
            return String::from_utf8(out).unwrap();
        }
        out.push(b[0]);
    }
}

/// Sends `first` and returns the backend's name and the stream.
async fn through(addr: SocketAddr, first: &[u8]) -> (String, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(first).await.unwrap();
    let name = read_line(&mut s).await;
    let mut echo = vec![0u8; first.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(echo, first, "the backend got the client's bytes unchanged");
    (name, s)
}

async fn expect_reset(mut s: TcpStream) {
    let mut b = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
        .await
        .expect("a verdict in time");
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected a reset, got {other:?}"),
    }
}

async fn rejected(addr: SocketAddr, first: &[u8]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(first).await.unwrap();
    expect_reset(s).await;
}

fn hello(sni: &str) -> Vec<u8> {
    Hello::with_sni(sni).flight(16384)
}

#[tokio::test]
async fn routes_by_sni_and_resets_the_rest() {
    let b0 = backend("be0").await;
    let b1 = backend("be1").await;
    let p = start(
        ProxyConfig::default(),
        vec![
            route("*.example.com", vec![be(b1.addr, 1)], 0),
            route("a.example.com", vec![be(b0.addr, 1)], 0),
        ],
    )
    .await;
    assert_eq!(through(p.addr, &hello("a.example.com")).await.0, "be0");
    assert_eq!(through(p.addr, &hello("x.y.example.com")).await.0, "be1");
    // the hello in one-byte records, written in small pieces
    let frag = crate::testutil::records(&Hello::with_sni("A.example.com").handshake(), 1);
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    for chunk in frag.chunks(50) {
        s.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(read_line(&mut s).await, "be0");
    drop(s);

    rejected(p.addr, &hello("example.com")).await;
    rejected(p.addr, &hello("unknown.example.org")).await;
    rejected(p.addr, &Hello::default().flight(16384)).await;
    rejected(p.addr, b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n").await;
    // a client that gives up in the middle of its hello
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&hello("a.example.com")[..30]).await.unwrap();
    drop(s);

    for _ in 0..100 {
        if p.proxy.stats().rejects(RejectReason::ClientClosed) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = p.proxy.stats();
    let l = st.listener(p.addr).unwrap();
    assert_eq!(l.rejects[&RejectReason::ClientClosed], 1);
    assert_eq!(l.accepted, 8);
    assert_eq!(l.forwarded, 3);
    assert_eq!(l.rejects[&RejectReason::NoMatch], 2);
    assert_eq!(l.rejects[&RejectReason::NoSni], 1);
    assert_eq!(l.rejects[&RejectReason::NotTls], 1);
    assert_eq!(
        st.route(p.addr, "default/a.example.com")
            .unwrap()
            .connections,
        2
    );
    let bs = st.backend(p.addr, b0.addr).unwrap();
    assert_eq!(bs.connections, 2);
    assert!(bs.bytes_sent >= 2 * hello("a.example.com").len() as u64);
    assert!(bs.bytes_received > 0);
}

#[tokio::test]
async fn limits_are_enforced_and_counted() {
    let b0 = backend("be0").await;
    let config = ProxyConfig {
        max_hello_size: 512,
        handshake_timeout: Duration::from_millis(300),
        max_pending_handshakes: 2,
        idle_timeout: Duration::from_millis(400),
        ..ProxyConfig::default()
    };
    let p = start(
        config,
        vec![route("a.example.com", vec![be(b0.addr, 1)], 0)],
    )
    .await;

    // too large: a padding extension pushes the hello over 512 bytes
    let mut big = Hello::with_sni("a.example.com");
    big.extensions.as_mut().unwrap().push((21, vec![0; 1000]));
    rejected(p.addr, &big.flight(16384)).await;

    // handshake timeout: half a hello, then silence
    let h = hello("a.example.com");
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&h[..20]).await.unwrap();
    let started = std::time::Instant::now();
    expect_reset(s).await;
    assert!(started.elapsed() >= Duration::from_millis(250));

    // pending limit: two silent connections hold both slots, the third is reset at once
    let q1 = TcpStream::connect(p.addr).await.unwrap();
    let q2 = TcpStream::connect(p.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let q3 = TcpStream::connect(p.addr).await.unwrap();
    expect_reset(q3).await;
    expect_reset(q1).await; // and the two silent ones time out
    expect_reset(q2).await;

    // idle timeout on a forwarded connection
    let (name, s) = through(p.addr, &h).await;
    assert_eq!(name, "be0");
    expect_reset(s).await;

    let st = p.proxy.stats();
    let l = st.listener(p.addr).unwrap();
    assert_eq!(l.rejects[&RejectReason::TooLarge], 1);
    assert_eq!(l.rejects[&RejectReason::HandshakeTimeout], 3);
    assert_eq!(l.rejects[&RejectReason::PendingLimit], 1);
    assert_eq!(l.idle_timeouts, 1);
    assert_eq!(st.pending_handshakes, 0);
}

#[tokio::test]
async fn table_change_keeps_established_connections() {
    let b0 = backend("be0").await;
    let b1 = backend("be1").await;
    let p = start(
        ProxyConfig::default(),
        vec![route("a.example.com", vec![be(b0.addr, 1)], 0)],
    )
    .await;
    let mut open = Vec::new();
    for _ in 0..20 {
        open.push(through(p.addr, &hello("a.example.com")).await.1);
    }
    // the route moves to be1, and a.example.com disappears for new connections
    p.proxy.apply(&[frontend(
        p.addr,
        vec![route("b.example.com", vec![be(b1.addr, 1)], 0)],
    )]);
    rejected(p.addr, &hello("a.example.com")).await;
    assert_eq!(through(p.addr, &hello("b.example.com")).await.0, "be1");
    for s in &mut open {
        s.write_all(b"still here").await.unwrap();
        let mut b = [0u8; 10];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"still here");
    }
    let st = p.proxy.stats();
    assert_eq!(st.backend(p.addr, b0.addr).unwrap().active, 20);
    assert_eq!(st.table_updates, 2);
    drop(open);
    // removing the whole frontend: new connections on that address are reset
    p.proxy.apply(&[]);
    rejected(p.addr, &hello("b.example.com")).await;
    assert_eq!(p.proxy.stats().rejects(RejectReason::UnknownFrontend), 1);
}

#[tokio::test]
async fn reject_share_and_unreachable_backends() {
    // a port nobody listens on
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let p = start(
        ProxyConfig::default(),
        vec![
            route("invalid.example.com", vec![], 1),
            route("dead.example.com", vec![be(dead, 1)], 0),
            route("zero.example.com", vec![be(dead, 0)], 0),
        ],
    )
    .await;
    rejected(p.addr, &hello("invalid.example.com")).await;
    rejected(p.addr, &hello("dead.example.com")).await;
    rejected(p.addr, &hello("zero.example.com")).await;
    let st = p.proxy.stats();
    let l = st.listener(p.addr).unwrap();
    assert_eq!(l.rejects[&RejectReason::InvalidBackend], 1);
    assert_eq!(l.rejects[&RejectReason::ConnectFailed], 1);
    assert_eq!(l.rejects[&RejectReason::NoBackend], 1);
    assert_eq!(st.backend(p.addr, dead).unwrap().connect_errors, 1);
    assert_eq!(
        st.route(p.addr, "default/invalid.example.com")
            .unwrap()
            .rejects[&RejectReason::InvalidBackend],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_over_many_connections() {
    let b0 = backend("be0").await;
    let b1 = backend("be1").await;
    let p = start(
        ProxyConfig::default(),
        vec![route(
            "w.example.com",
            vec![be(b0.addr, 80), be(b1.addr, 20)],
            0,
        )],
    )
    .await;
    let mut n0 = 0;
    let n = 500;
    for _ in 0..n {
        if through(p.addr, &hello("w.example.com")).await.0 == "be0" {
            n0 += 1;
        }
    }
    let share = f64::from(n0) * 100.0 / f64::from(n);
    assert!((share - 80.0).abs() < 6.0, "be0 got {share}%");
}

#[tokio::test]
async fn half_close_is_passed_on() {
    let b0 = backend("be0").await;
    let p = start(
        ProxyConfig {
            copy_buffer_size: 1024, // many reads per transfer
            ..ProxyConfig::default()
        },
        vec![route("a.example.com", vec![be(b0.addr, 1)], 0)],
    )
    .await;
    let h = hello("a.example.com");
    let (_, mut s) = through(p.addr, &h).await;
    let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    s.write_all(&payload).await.unwrap();
    // FIN from the client: the backend sees EOF after the payload, echoes it all, closes.
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut back))
        .await
        .expect("in time")
        .expect("a clean EOF, not a reset");
    assert_eq!(back, payload);
    let st = p.proxy.stats();
    let bs = st.backend(p.addr, b0.addr).unwrap();
    assert_eq!(bs.bytes_sent, (h.len() + payload.len()) as u64);
    assert_eq!(bs.bytes_received, (4 + h.len() + payload.len()) as u64);
}
