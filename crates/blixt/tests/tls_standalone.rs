//! TLS passthrough in standalone mode, end to end: `blixt run --config DIR` with the manifests
//! of examples/standalone (tls.yaml: Gateway `demo-tls` on 10.99.100.2 and fd99:100::2, port
//! 443, TLSRoutes for a.example.com, b.example.com and *.wild.example.com) on the lab's
//! load-balancer node; rustls servers with distinct self-signed certificates on port 8443 of
//! the three backends; rustls clients in the client namespace. Which backend a connection
//! reached is proved by the certificate it got. Also: `blixt status`, `blixt inspect
//! --socket`, the metrics endpoint, a route edit on disk under 100 open TLS connections, and
//! the steering removed on shutdown.
//!
//! Needs root (namespaces, BPF).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

#[path = "common/lab.rs"]
mod lab_support;
#[path = "common/standalone.rs"]
mod standalone_support;
#[path = "common/tls.rs"]
mod tls_support;
use tls_support::{connect, expect_reset, ping, CertificateDer, Tls, TlsBackend};

/// `blixt run` with the examples and tls.yaml, TLS servers on the backends.
type Standalone = standalone_support::StandaloneRun<Vec<TlsBackend>>;

fn start() -> Standalone {
    Standalone::start(
        "blixt-tls-standalone",
        &[
            "gateway.yaml",
            "routes.yaml",
            "backends.yaml",
            "node.yaml",
            "tls.yaml",
        ],
        |lab| (0..3).map(|i| TlsBackend::start(lab, i)).collect(),
    )
}

/// What only the TLS tests ask of the run.
impl Standalone {
    fn certs(&self) -> Vec<CertificateDer<'static>> {
        self.servers.iter().map(|b| b.cert.clone()).collect()
    }

    fn vips(&self) -> [SocketAddr; 2] {
        [
            SocketAddr::new(IpAddr::from(self.lab.vip4(2)), 443),
            SocketAddr::new(IpAddr::from(self.lab.vip6(2)), 443),
        ]
    }

    fn inspect_tls(&self) -> serde_json::Value {
        self.inspect_json(true)["tls"].clone()
    }

    /// `ip [-6] route show table local` on the lb.
    fn local_routes(&self) -> String {
        let v4 = self
            .lab
            .lb
            .ip(&["route", "show", "table", "local"])
            .unwrap();
        let v6 = self
            .lab
            .lb
            .ip(&["-6", "route", "show", "table", "local"])
            .unwrap();
        v4 + &v6
    }

    fn metrics(&self) -> String {
        self.lab.lb.run_in(|| {
            let mut c = TcpStream::connect("127.0.0.1:9464").expect("metrics endpoint");
            c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut body = String::new();
            c.read_to_string(&mut body).unwrap();
            body
        })
    }
}

fn listener(tls: &serde_json::Value, vip: SocketAddr) -> &serde_json::Value {
    tls["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["addr"] == vip.to_string())
        .unwrap_or_else(|| panic!("no listener {vip} in {tls:#}"))
}

#[test]
fn tls_listener_from_manifests_routes_by_sni_on_both_families() {
    let mut s = start();
    let certs = s.certs();
    let vips = s.vips();

    // The VIPs are on no interface: local routes and the sk_lookup program bring them in.
    let addrs = s.lab.lb.ip(&["-o", "addr"]).unwrap();
    let routes = s.local_routes();
    for vip in vips {
        assert!(!addrs.contains(&vip.ip().to_string()), "{addrs}");
        assert!(
            routes.contains(&format!("local {} dev lo", vip.ip())),
            "{routes}"
        );
    }

    s.lab.client.ns.run_in(|| {
        for vip in vips {
            for (sni, want) in [
                ("a.example.com", 0),
                ("b.example.com", 1),
                ("x.wild.example.com", 2),
            ] {
                let (got, mut tls) = connect(vip, Some(sni), &certs)
                    .unwrap_or_else(|e| panic!("{sni} via {vip}: {e}"));
                assert_eq!(got, want, "{sni} via {vip} landed on be{got}");
                assert_eq!(ping(&mut tls, sni).unwrap(), format!("be{want}: {sni}"));
            }
            expect_reset(
                connect(vip, Some("unknown.example.org"), &certs),
                &format!("unknown.example.org via {vip}"),
            );
            expect_reset(connect(vip, None, &certs), &format!("no SNI via {vip}"));
        }
    });

    // blixt status: the TLS Gateway programmed on its static addresses, every route Accepted.
    let table = s.status("table");
    let words = |prefix: &str| {
        table
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{table}"))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        words("default/demo-tls "),
        [
            "default/demo-tls",
            "blixt",
            "10.99.100.2,fd99:100::2",
            "True",
            "True"
        ]
    );
    assert_eq!(
        words("default/demo-tls/tls "),
        [
            "default/demo-tls/tls",
            "TLS",
            "443",
            "3",
            "True",
            "True",
            "True",
            "False"
        ]
    );
    for route in ["tls-a", "tls-b", "tls-wild"] {
        assert_eq!(
            words(&format!("TLSRoute default/{route} ")),
            [
                "TLSRoute",
                &format!("default/{route}"),
                "default/demo-tls/tls",
                "True",
                "True"
            ]
        );
    }

    // blixt inspect --socket: the SNI tables and the counters of what was just sent.
    let tls = s.inspect_tls();
    assert_eq!(tls["generation"], 1, "{tls:#}");
    assert!(tls["error"].is_null(), "{tls:#}");
    assert_eq!(tls["frontends"].as_array().unwrap().len(), 2, "{tls:#}");
    for vip in vips {
        let l = listener(&tls, vip);
        assert_eq!(l["name"], "default/demo-tls/tls");
        assert_eq!((&l["accepted"], &l["forwarded"]), (&5.into(), &3.into()));
        assert_eq!(
            l["rejects"],
            serde_json::json!({"no_match": 1, "no_sni": 1})
        );
    }
    let route_conns = |route: &str| -> u64 {
        tls["routes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["route"] == route)
            .map(|r| r["connections"].as_u64().unwrap())
            .sum()
    };
    for route in ["default/tls-a", "default/tls-b", "default/tls-wild"] {
        assert_eq!(route_conns(route), 2, "{route}: {tls:#}");
    }
    for be in ["10.99.10.2:8443", "[fd99:10::2]:8443", "10.99.12.2:8443"] {
        let b = tls["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["backend"] == be)
            .unwrap_or_else(|| panic!("no backend {be}: {tls:#}"));
        assert_eq!(b["connections"], 1, "{be}");
        assert!(b["bytes_received"].as_u64().unwrap() > 0, "{be}");
    }
    assert!(
        tls["steering"]["steered"].as_u64().unwrap() >= 10,
        "{tls:#}"
    );
    let table = s.inspect("table", true);
    for want in [
        "10.99.100.2:443",
        "[fd99:100::2]:443",
        "SNI *.wild.example.com",
        "TLSRoute default/tls-wild",
        "10.99.12.2:8443",
        "no_match=1 no_sni=1",
    ] {
        assert!(table.contains(want), "{want:?} missing in\n{table}");
    }

    // The same counters on the agent's metrics endpoint, in one OpenMetrics document.
    let m = s.metrics();
    for want in [
        "blixt_snapshot_generation 1",
        r#"blixt_tls_connections_forwarded_total{frontend="default/demo-tls/tls",vip="10.99.100.2",port="443"} 3"#,
        r#"blixt_tls_rejects_total{frontend="default/demo-tls/tls",vip="fd99:100::2",port="443",reason="no_sni"} 1"#,
        r#"blixt_tls_route_connections_total{frontend="default/demo-tls/tls",vip="10.99.100.2",port="443",route="default/tls-wild"} 1"#,
        "blixt_tls_steered_connections_total ",
    ] {
        assert!(m.contains(want), "{want:?} missing in\n{m}");
    }
    assert_eq!(m.matches("# EOF").count(), 1, "{m}");
    assert!(m.ends_with("# EOF\n"), "{m}");

    // Shutdown: the local routes of the VIPs go away with the steering.
    let status = s
        .run
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(10))
        .unwrap();
    assert!(status.success(), "blixt run exited with {status}");
    let routes = s.local_routes();
    for vip in vips {
        assert!(
            !routes.contains(&format!("local {} ", vip.ip())),
            "{vip} still routed locally after shutdown:\n{routes}"
        );
    }
    s.run = None;
    s.lab.client.ns.run_in(|| {
        assert!(
            connect(vips[0], Some("a.example.com"), &certs).is_err(),
            "nothing serves the TLS VIP after shutdown"
        );
    });
}

#[test]
fn route_edit_on_disk_breaks_none_of_100_open_tls_connections() {
    let mut s = start();
    let certs = s.certs();
    let vips = s.vips();

    // 100 open connections: a.example.com (be0) and x.wild.example.com (be2), both families.
    let mut open: Vec<(usize, Tls)> = s.lab.client.ns.run_in(|| {
        (0..100)
            .map(|k| {
                let sni = if k % 2 == 0 {
                    "a.example.com"
                } else {
                    "x.wild.example.com"
                };
                connect(vips[(k / 2) % 2], Some(sni), &certs)
                    .unwrap_or_else(|e| panic!("open connection {k}: {e}"))
            })
            .collect()
    });
    for (k, (i, tls)) in open.iter_mut().enumerate() {
        assert_eq!(*i, if k % 2 == 0 { 0 } else { 2 });
        assert_eq!(ping(tls, "before").unwrap(), format!("be{i}: before"));
    }

    // The edit: a.example.com moves to be1, the wildcard route is deleted.
    let text = s.read("tls.yaml");
    let (kept, wild) = text
        .split_once("---\n# Any name under wild.example.com")
        .expect("the wildcard route is the last document of tls.yaml");
    assert!(wild.contains("name: tls-wild"));
    let edited = kept.replacen(
        "name: be0\n      port: 8443",
        "name: be1\n      port: 8443",
        1,
    );
    assert_ne!(edited, kept);
    s.write("tls.yaml", &edited);
    s.wait_next_generation();

    s.lab.client.ns.run_in(|| {
        for vip in vips {
            let (got, mut tls) = connect(vip, Some("a.example.com"), &certs)
                .unwrap_or_else(|e| panic!("a.example.com via {vip} after the edit: {e}"));
            assert_eq!(got, 1, "new a.example.com connections follow the edit");
            assert_eq!(ping(&mut tls, "new").unwrap(), "be1: new");
            expect_reset(
                connect(vip, Some("x.wild.example.com"), &certs),
                "x.wild.example.com after its route was deleted",
            );
        }
    });
    let tls = s.inspect_tls();
    assert_eq!(tls["generation"], 2, "{tls:#}");
    let active: u64 = vips
        .iter()
        .map(|v| listener(&tls, *v)["active"].as_u64().unwrap())
        .sum();
    assert_eq!(
        active, 100,
        "the open connections are still forwarded: {tls:#}"
    );
    let table = s.status("table");
    assert!(!table.contains("tls-wild"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(4).collect::<Vec<_>>()
                == ["default/demo-tls/tls", "TLS", "443", "2"]),
        "{table}"
    );

    for (k, (i, tls)) in open.iter_mut().enumerate() {
        let answer = ping(tls, "after")
            .unwrap_or_else(|e| panic!("open connection {k} (be{i}) broken by the edit: {e}"));
        assert_eq!(answer, format!("be{i}: after"), "connection {k}");
    }

    // tls.yaml deleted: the TLS listener is gone, nothing new gets in (the stack resets SYNs
    // to the VIPs), the open connections carry on. Their packets arrive through the VIPs'
    // local routes, which stay until the last of them has closed.
    s.remove("tls.yaml");
    s.wait_next_generation();
    for vip in vips {
        s.lab.client.ns.run_in(|| {
            let r = connect(vip, Some("a.example.com"), &certs).map(|(i, _)| i);
            assert!(
                r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
                "{vip} without a listener: {r:?}"
            );
        });
    }
    for (k, (i, tls)) in open.iter_mut().enumerate() {
        let answer = ping(tls, "gone")
            .unwrap_or_else(|e| panic!("open connection {k} (be{i}) broken by the removal: {e}"));
        assert_eq!(answer, format!("be{i}: gone"), "connection {k}");
    }
    let routes = s.local_routes();
    for vip in vips {
        assert!(
            routes.contains(&format!("local {} ", vip.ip())),
            "{vip}: the local route went before its connections: {routes}"
        );
    }
    drop(open);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let routes = s.local_routes();
        if vips
            .iter()
            .all(|v| !routes.contains(&format!("local {} ", v.ip())))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "local routes still there 20 s after the last connection closed: {routes}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    s.write("tls.yaml", &edited);
    s.wait_next_generation();
    s.lab.client.ns.run_in(|| {
        for vip in vips {
            let (got, _) = connect(vip, Some("a.example.com"), &certs)
                .unwrap_or_else(|e| panic!("{vip} after tls.yaml came back: {e}"));
            assert_eq!(got, 1);
        }
    });

    // A crash (SIGKILL: no cleanup) leaves the local routes behind; the next `blixt run`
    // flushes them (they are tagged `proto 177`), here with no TLS listener left to serve.
    s.run.take().unwrap().kill().unwrap();
    let routes = s.local_routes();
    assert!(
        vips.iter()
            .all(|v| routes.contains(&format!("local {} dev lo proto 177", v.ip()))),
        "{routes}"
    );
    s.remove("tls.yaml");
    s.spawn();
    let routes = s.local_routes();
    for vip in vips {
        assert!(
            !routes.contains(&format!("local {} ", vip.ip())),
            "{vip}: stale local route not flushed at start:\n{routes}"
        );
    }
}

#[test]
fn tls_only_vips_on_the_clients_link_are_answered_by_arp_and_ndp() {
    let s = start();
    let certs = s.certs();
    let vips = s.vips();
    // The client treats the TLS-only VIPs as on-link: it must resolve them itself. IPv6 needs
    // the agent's NDP answers (the kernel answers solicitations only for configured addresses;
    // the VIP has just a local route), IPv4 gets the agent's ARP answer before the kernel's.
    let client = &s.lab.client.ns;
    for vip in vips {
        client
            .ip_batch(&[format!("route replace {} dev eth0", vip.ip())])
            .unwrap();
    }
    client.run_in(|| {
        for vip in vips {
            let (got, mut tls) = connect(vip, Some("a.example.com"), &certs)
                .unwrap_or_else(|e| panic!("a.example.com via on-link {vip}: {e}"));
            assert_eq!(got, 0);
            assert_eq!(
                ping(&mut tls, "a.example.com").unwrap(),
                "be0: a.example.com"
            );
        }
    });
    let neigh = client.ip(&["neigh", "show", "dev", "eth0"]).unwrap();
    let lb_mac = s.lab.client.link.lb_mac.to_string();
    for vip in vips {
        let ip = vip.ip().to_string();
        let line = neigh
            .lines()
            .find(|l| l.starts_with(&format!("{ip} ")))
            .unwrap_or_else(|| panic!("{ip} not resolved:\n{neigh}"));
        assert!(line.contains(&lb_mac), "{ip} resolves to {lb_mac}: {line}");
    }
    let v = s.inspect_json(true);
    assert!(
        v["events"]["ndp_reply"].as_u64().unwrap_or(0) >= 1,
        "the agent answered the IPv6 VIP's solicitation: {}",
        v["events"]
    );
}
