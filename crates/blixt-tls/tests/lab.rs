//! TLS passthrough in the namespace lab, with real TLS on both ends: rustls servers with
//! distinct self-signed certificates in the backend namespaces, rustls clients in the client
//! namespace, and the proxy in the lb namespace steered by the sk_lookup program. The VIP is
//! configured on no interface; the client routes the VIP block via the lb.
//!
//! Needs root (namespaces, BPF).

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use blixt_core::snapshot::{Backend, BackendAddr, BackendState};
use blixt_core::tls::{SniRoute, TlsFrontend};
use blixt_lab::tls::{connect, expect_reset, ping, CertificateDer, Tls, TlsBackend, BACKEND_PORT};
use blixt_lab::{require_root, Lab, LabSpec};
use blixt_tls::steer::SteerStats;
use blixt_tls::{ProxyConfig, ProxyStats, RejectReason, Steering, TlsPassthrough};

const TLS_PORT: u16 = 443;

fn be(lab: &Lab, i: usize, weight: u32) -> Backend {
    Backend {
        addr: BackendAddr {
            addr: lab.backend(i).v4().into(),
            port: BACKEND_PORT,
        },
        weight,
        state: BackendState::Active,
    }
}

fn route(h: &str, backends: Vec<Backend>) -> SniRoute {
    SniRoute {
        hostname: h.into(),
        listener: "tls".into(),
        route: Some(format!("default/{}", h.trim_start_matches("*."))),
        backends,
        reject_weight: 0,
    }
}

enum Cmd {
    Apply(Vec<TlsFrontend>, mpsc::Sender<Result<(), String>>),
    Stats(mpsc::Sender<(ProxyStats, Option<SteerStats>)>),
}

/// The TLS passthrough service on its own runtime, on a thread in the lb namespace.
struct LbProxy {
    tx: Option<tokio::sync::mpsc::UnboundedSender<Cmd>>,
    thread: Option<JoinHandle<()>>,
}

impl LbProxy {
    fn start(lab: &Lab, manage_local_routes: bool) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Cmd>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = lab.lb.run_in(move || {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let config = ProxyConfig {
                        handshake_timeout: Duration::from_secs(5),
                        ..ProxyConfig::default()
                    };
                    let mut svc = match TlsPassthrough::new(
                        config,
                        Steering::SkLookup {
                            manage_local_routes,
                        },
                    ) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("{e}: {:?}", e)));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    while let Some(cmd) = rx.recv().await {
                        match cmd {
                            Cmd::Apply(t, reply) => {
                                let _ = reply.send(svc.apply(&t).map_err(|e| format!("{e:?}")));
                            }
                            Cmd::Stats(reply) => {
                                let steer = svc.steer_stats().map(|r| r.expect("steer stats"));
                                let _ = reply.send((svc.stats(), steer));
                            }
                        }
                    }
                });
            })
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("proxy thread started")
            .unwrap_or_else(|e| panic!("starting the TLS passthrough service: {e}"));
        LbProxy {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn apply(&self, t: Vec<TlsFrontend>) {
        let (reply, rx) = mpsc::channel();
        self.tx
            .as_ref()
            .unwrap()
            .send(Cmd::Apply(t, reply))
            .expect("proxy alive");
        rx.recv_timeout(Duration::from_secs(10))
            .expect("apply answered")
            .unwrap_or_else(|e| panic!("apply: {e}"));
    }

    fn stats(&self) -> (ProxyStats, Option<SteerStats>) {
        let (reply, rx) = mpsc::channel();
        self.tx
            .as_ref()
            .unwrap()
            .send(Cmd::Stats(reply))
            .expect("proxy alive");
        rx.recv_timeout(Duration::from_secs(10)).expect("stats")
    }
}

impl Drop for LbProxy {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The lab tests build namespaces with the same prefix: one at a time.
static LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn tls_passthrough_in_the_lab() {
    require_root();
    let _one = LAB
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = Lab::build(LabSpec::with_backends(3)).expect("lab");
    let backends: Vec<TlsBackend> = (0..3)
        .map(|i| TlsBackend::start(&lab, i).expect("TLS backend"))
        .collect();
    let certs: Vec<CertificateDer<'static>> = backends.iter().map(|b| b.cert.clone()).collect();
    let vip = SocketAddr::new(lab.vip4(1).into(), TLS_PORT);

    let vip6 = SocketAddr::new(lab.vip6(1).into(), TLS_PORT);
    // The same routes on an IPv4 and an IPv6 VIP (one Gateway with two addresses).
    let table = |routes: Vec<SniRoute>| {
        [vip, vip6]
            .into_iter()
            .map(|v| TlsFrontend {
                name: "default/gw/tls".into(),
                vip: v.ip(),
                port: v.port(),
                routes: routes.clone(),
            })
            .collect::<Vec<_>>()
    };
    let proxy = LbProxy::start(&lab, true);
    proxy.apply(table(vec![
        route("a.example.com", vec![be(&lab, 0, 1)]),
        route("b.example.com", vec![be(&lab, 1, 1)]),
        route("*.wild.example.com", vec![be(&lab, 2, 1)]),
        route("w.example.com", vec![be(&lab, 0, 70), be(&lab, 1, 30)]),
    ]));

    // The VIP is on no interface of the lb: only the local route and sk_lookup bring it in.
    let addrs = lab.lb.ip(&["-o", "addr"]).expect("ip addr");
    assert!(
        !addrs.contains(&vip.ip().to_string()),
        "VIP configured: {addrs}"
    );
    let routes = lab
        .lb
        .ip(&["route", "show", "table", "local"])
        .expect("ip route");
    assert!(
        routes.contains(&format!("local {} dev lo", vip.ip())),
        "{routes}"
    );

    // Each name lands on its backend, proved by the certificate; the rest is reset.
    lab.client.ns.run_in(|| {
        for (sni, want) in [
            ("a.example.com", 0),
            ("b.example.com", 1),
            ("x.wild.example.com", 2),
            ("deep.x.wild.example.com", 2),
        ] {
            let (got, mut tls) =
                connect(vip, Some(sni), &certs).unwrap_or_else(|e| panic!("{sni}: {e}"));
            assert_eq!(got, want, "{sni} landed on be{got}");
            assert_eq!(
                ping(&mut tls, "hello").expect("answer"),
                format!("be{want}: hello")
            );
        }
        let (got, mut tls) = connect(vip6, Some("b.example.com"), &certs).expect("IPv6 VIP");
        assert_eq!(got, 1, "b.example.com over IPv6");
        assert_eq!(ping(&mut tls, "v6").expect("answer"), "be1: v6");
        expect_reset(connect(vip6, None, &certs), "no SNI over IPv6");
        expect_reset(connect(vip, Some("unknown.example.org"), &certs), "unknown");
        expect_reset(connect(vip, Some("wild.example.com"), &certs), "apex");
        expect_reset(connect(vip, None, &certs), "no SNI");
    });
    let (stats, steer) = proxy.stats();
    let l = stats.listener(vip).expect("listener stats");
    assert_eq!(l.forwarded, 4);
    assert_eq!(l.rejects[&RejectReason::NoMatch], 2);
    assert_eq!(l.rejects[&RejectReason::NoSni], 1);
    assert!(steer.expect("sk_lookup").steered >= 9, "{steer:?}");
    let l6 = stats.listener(vip6).expect("IPv6 listener stats");
    assert_eq!((l6.forwarded, l6.rejects[&RejectReason::NoSni]), (1, 1));

    // Weights 70/30 over 1,000 connections, within ±5 points.
    let n = 1000;
    let on_be0: usize = lab.client.ns.run_in(|| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let certs = certs.clone();
                std::thread::spawn(move || {
                    (0..n / 4)
                        .filter(|_| {
                            let (i, _) = connect(vip, Some("w.example.com"), &certs)
                                .expect("weighted connection");
                            i == 0
                        })
                        .count()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("client")).sum()
    });
    let share = on_be0 as f64 * 100.0 / n as f64;
    eprintln!("w.example.com: be0 {share:.1}% of {n} (want 70)");
    assert!((share - 70.0).abs() <= 5.0, "be0 got {share}%");

    // 200 open connections, then a table change: a.example.com moves to be1 and the wildcard
    // route goes away. The open ones keep working on their backend; new ones follow the table.
    let mut open: Vec<(usize, Tls)> = lab.client.ns.run_in(|| {
        (0..200)
            .map(|k| {
                let sni = if k % 2 == 0 {
                    "a.example.com"
                } else {
                    "x.wild.example.com"
                };
                connect(vip, Some(sni), &certs).expect("open connection")
            })
            .collect()
    });
    for (i, tls) in &mut open {
        assert_eq!(
            ping(tls, "before").expect("answer"),
            format!("be{i}: before")
        );
    }
    proxy.apply(table(vec![
        route("a.example.com", vec![be(&lab, 1, 1)]),
        route("b.example.com", vec![be(&lab, 1, 1)]),
    ]));
    lab.client.ns.run_in(|| {
        let (got, _) = connect(vip, Some("a.example.com"), &certs).expect("after the change");
        assert_eq!(got, 1, "new a.example.com connections follow the new table");
        expect_reset(
            connect(vip, Some("x.wild.example.com"), &certs),
            "removed route",
        );
    });
    for (k, (i, tls)) in open.iter_mut().enumerate() {
        assert_eq!(
            ping(tls, "after").expect("answer"),
            format!("be{i}: after"),
            "open connection {k} broken by the table change"
        );
    }
    let (stats, _) = proxy.stats();
    let l = stats.listener(vip).expect("listener stats");
    assert_eq!(l.active, 200, "{l:?}");
    assert!(l.bytes_to_clients > 0 && l.bytes_from_clients > 0);
    drop(open);

    // The IPv6 frontend removed while one connection on it is open: the connection carries
    // on (its packets still need the VIP's local route), and the route goes once it closes.
    let (got, mut on_v6) = lab
        .client
        .ns
        .run_in(|| connect(vip6, Some("b.example.com"), &certs))
        .expect("IPv6 connection");
    assert_eq!(got, 1);
    let v4_only: Vec<TlsFrontend> = table(vec![route("b.example.com", vec![be(&lab, 1, 1)])])
        .into_iter()
        .filter(|f| f.vip == vip.ip())
        .collect();
    proxy.apply(v4_only);
    assert_eq!(ping(&mut on_v6, "removed").expect("answer"), "be1: removed");
    let local6 = || {
        lab.lb
            .ip(&["-6", "route", "show", "table", "local"])
            .expect("ip route")
            .contains(&format!("local {} ", vip6.ip()))
    };
    assert!(
        local6(),
        "the local route of a frontend with open connections stays"
    );
    lab.client.ns.run_in(|| {
        let r = connect(vip6, Some("b.example.com"), &certs).map(|(i, _)| i);
        assert!(
            r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
            "a removed frontend takes no new connection: {r:?}"
        );
    });
    drop(on_v6);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while local6() {
        assert!(
            std::time::Instant::now() < deadline,
            "the local route of a drained frontend is still there"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Dropping the service removes the local route it added.
    drop(proxy);
    let routes = lab
        .lb
        .ip(&["route", "show", "table", "local"])
        .expect("ip route");
    assert!(
        !routes.contains(&format!("local {} dev lo", vip.ip())),
        "{routes}"
    );
    drop(backends);
}

/// What docs/tls-passthrough.md claims: sk_lookup runs only for packets routed as local, so
/// without the `local` route the lb does not deliver the VIP to any socket (it has no route
/// for it and answers unreachable); with the route, the same program steers it.
#[test]
fn sk_lookup_needs_a_local_route_for_the_vip() {
    require_root();
    let _one = LAB
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = Lab::build(LabSpec::with_backends(1)).expect("lab");
    let backend = TlsBackend::start(&lab, 0).expect("TLS backend");
    let certs = vec![backend.cert.clone()];
    let vip = SocketAddr::new(lab.vip4(2).into(), TLS_PORT);
    let proxy = LbProxy::start(&lab, false);
    proxy.apply(vec![TlsFrontend {
        name: "default/gw/tls".into(),
        vip: vip.ip(),
        port: vip.port(),
        routes: vec![route("a.example.com", vec![be(&lab, 0, 1)])],
    }]);
    let err = lab
        .client
        .ns
        .run_in(|| connect(vip, Some("a.example.com"), &certs).map(|(i, _)| i))
        .expect_err("no local route: the VIP must not reach the proxy");
    eprintln!("without a local route: {err}");
    let (_, steer) = proxy.stats();
    assert_eq!(steer.expect("sk_lookup").steered, 0);

    lab.lb
        .ip(&[
            "route",
            "add",
            "local",
            &format!("{}/32", vip.ip()),
            "dev",
            "lo",
            "table",
            "local",
        ])
        .expect("ip route add local");
    let (got, _) = lab
        .client
        .ns
        .run_in(|| connect(vip, Some("a.example.com"), &certs))
        .expect("with the local route the program steers the VIP");
    assert_eq!(got, 0);
    assert_eq!(proxy.stats().1.expect("sk_lookup").steered, 1);
    drop(proxy);
    drop(backend);
}

/// The local route that brings a TLS VIP to the proxy must not bring it to the node's other
/// sockets: host services bound to a wildcard address (here TCP on 2222 and 9464, UDP on 5353,
/// standing for sshd, the metrics port and a DNS server) are not reachable on the VIP, while its
/// listener is. A port scan of the VIP then finds exactly the listener.
#[test]
fn only_the_listeners_answer_on_a_tls_vip() {
    require_root();
    let _one = LAB
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = Lab::build(LabSpec::with_backends(1)).expect("lab");
    let backend = TlsBackend::start(&lab, 0).expect("TLS backend");
    let certs = vec![backend.cert.clone()];
    let vip = SocketAddr::new(lab.vip4(3).into(), TLS_PORT);
    // the node's own services, on every address
    let (host_tcp, host_udp) = lab.lb.run_in(|| {
        let tcp: Vec<std::net::TcpListener> = [2222u16, 9464]
            .iter()
            .map(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).expect("host listener"))
            .collect();
        let udp = std::net::UdpSocket::bind(("0.0.0.0", 5353)).expect("host UDP socket");
        (tcp, udp)
    });
    let proxy = LbProxy::start(&lab, true);
    proxy.apply(vec![TlsFrontend {
        name: "default/gw/tls".into(),
        vip: vip.ip(),
        port: vip.port(),
        routes: vec![route("a.example.com", vec![be(&lab, 0, 1)])],
    }]);

    let (got, _) = lab
        .client
        .ns
        .run_in(|| connect(vip, Some("a.example.com"), &certs))
        .expect("the listener answers");
    assert_eq!(got, 0);

    // every TCP port of the VIP from 1 to 10000 (the host's own among them): only the listener
    // connects, the others are reset at once
    let open: Vec<u16> = lab.client.ns.run_in(|| {
        (1..=10_000u16)
            .filter(|&p| {
                std::net::TcpStream::connect_timeout(
                    &SocketAddr::new(vip.ip(), p),
                    Duration::from_millis(200),
                )
                .is_ok()
            })
            .collect()
    });
    assert_eq!(open, vec![TLS_PORT], "TCP ports answering on the VIP");
    // UDP to the host's socket on the VIP gets no answer, and never reaches it
    lab.client.ns.run_in(|| {
        let s = std::net::UdpSocket::bind(("0.0.0.0", 0)).unwrap();
        s.send_to(b"ping", SocketAddr::new(vip.ip(), 5353)).unwrap();
    });
    host_udp
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        host_udp.recv_from(&mut buf).is_err(),
        "a datagram to the VIP reached the node's wildcard socket"
    );
    let refused = proxy.stats().1.expect("sk_lookup").refused;
    assert!(refused >= 10_000, "refused lookups counted: {refused}");
    eprintln!("ports answering on the TLS VIP other than its listener: 0 of 9999 TCP, 0 of 1 UDP; refused {refused}");
    drop(host_tcp);
    drop(proxy);
    drop(backend);
}
