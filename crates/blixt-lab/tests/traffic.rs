//! Real traffic through the lab without a load balancer: the client reaches backend addresses
//! through the lb node's plain kernel forwarding. Needs root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use blixt_lab::{
    require_root, spawn_echo_process, tcp_burst, udp_flows, EchoConfig, EchoServer, Lab, LabSpec,
    LongLived, LongLivedReport, Report, UdpOptions,
};

const PORT: u16 = 8080;
const TIMEOUT: Duration = Duration::from_secs(3);

fn lab(backends: usize) -> Lab {
    require_root();
    Lab::build(LabSpec::with_backends(backends)).expect("building the lab")
}

/// One in-process echo server per backend, named after the backend.
fn echo_servers(lab: &Lab) -> Vec<EchoServer> {
    lab.backends
        .iter()
        .map(|b| {
            EchoServer::start_in(&b.ns, EchoConfig::new(b.name.clone(), PORT))
                .unwrap_or_else(|e| panic!("echo server in {}: {e:#}", b.name))
        })
        .collect()
}

fn udp_opts() -> UdpOptions {
    UdpOptions {
        concurrency: 8,
        timeout: Duration::from_millis(500),
        retries: 3,
        datagrams_per_flow: 3,
    }
}

fn rx_packets(lab: &Lab, ifname: &str) -> u64 {
    let out = lab
        .lb
        .ip(&["-j", "-s", "link", "show", "dev", ifname])
        .expect("ip -s link");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .expect("rx packets")
}

#[test]
fn lab_has_the_planned_addresses_routes_and_settings() {
    let lab = lab(3);
    let info = lab.info();
    assert_eq!(info.backends.len(), 3);
    assert_eq!(lab.client.v4(), Ipv4Addr::new(10, 99, 0, 2));
    assert_eq!(lab.client.v6(), "fd99::2".parse::<Ipv6Addr>().unwrap());
    assert_eq!(lab.client.link.lb_v4, Ipv4Addr::new(10, 99, 0, 1));
    for (i, b) in lab.backends.iter().enumerate() {
        assert_eq!(b.name, format!("be{i}"));
        assert_eq!(b.v4(), Ipv4Addr::new(10, 99, 10 + i as u8, 2));
        assert_eq!(b.link.lb_v4, Ipv4Addr::new(10, 99, 10 + i as u8, 1));
        assert_eq!(b.v6().to_string(), format!("fd99:{}::2", 10 + i));
        assert_eq!(b.link.lb_ifname, format!("lb-be{i}"));
    }
    assert_eq!(lab.vip4(7), Ipv4Addr::new(10, 99, 100, 7));
    assert_eq!(lab.vip6(7).to_string(), "fd99:100::7");

    // lb-side interfaces: distinct ifindexes that match the kernel's.
    let ifaces = lab.lb_interfaces();
    assert_eq!(ifaces.len(), 4);
    for (name, index) in &ifaces {
        let out = lab
            .lb
            .ip(&["-j", "link", "show", "dev", name])
            .expect("ip link");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["ifindex"].as_u64(), Some(u64::from(*index)), "{name}");
        assert_eq!(v[0]["operstate"], "UP", "{name}");
    }

    // The client routes the VIP blocks via the lb.
    let r4 = lab.client.ns.ip(&["route", "get", "10.99.100.7"]).unwrap();
    assert!(r4.contains("via 10.99.0.1"), "{r4}");
    let r6 = lab.client.ns.ip(&["route", "get", "fd99:100::7"]).unwrap();
    assert!(r6.contains("via fd99::1"), "{r6}");
    // ... and the VIPs are on no interface anywhere.
    for ns in lab.netns_names() {
        let out = std::process::Command::new("ip")
            .args(["-n", &ns, "addr"])
            .output()
            .unwrap();
        let addrs = String::from_utf8(out.stdout).unwrap();
        assert!(!addrs.contains("10.99.100."), "VIP assigned in {ns}");
        assert!(!addrs.contains("fd99:100:"), "VIP assigned in {ns}");
    }
    // Backends default-route via the lb.
    let d = lab
        .backend(1)
        .ns
        .ip(&["route", "get", "10.99.0.2"])
        .unwrap();
    assert!(d.contains("via 10.99.11.1"), "{d}");

    assert_eq!(lab.lb.sysctl_get("net.ipv4.ip_forward").unwrap(), "1");
    assert_eq!(
        lab.lb.sysctl_get("net.ipv6.conf.all.forwarding").unwrap(),
        "1"
    );
    for link in lab.links() {
        assert_eq!(
            link.peer_gro,
            Some(true),
            "GRO on the peer of {}",
            link.lb_ifname
        );
        assert_eq!(
            link.peer_tx_checksum,
            Some(false),
            "tx csum of {}",
            link.lb_ifname
        );
        let neigh = lab
            .lb
            .ip(&["neigh", "show", "dev", &link.lb_ifname])
            .unwrap();
        assert!(neigh.contains("PERMANENT"), "{neigh}");
        assert!(neigh.contains(&link.peer_mac.to_string()), "{neigh}");
    }
    let v6 = lab
        .backend(0)
        .ns
        .ip(&["-6", "addr", "show", "tentative"])
        .unwrap();
    assert!(v6.trim().is_empty(), "tentative addresses: {v6}");
    assert_eq!(
        lab.backend(0)
            .ns
            .sysctl_get("net.ipv6.conf.eth0.accept_dad")
            .unwrap(),
        "0"
    );

    let json = serde_json::to_string(&info).unwrap();
    let back: blixt_lab::LabInfo = serde_json::from_str(&json).unwrap();
    assert_eq!(back, info);
}

fn assert_direct(report: &Report, backend: &str, client: IpAddr) {
    assert!(report.all_ok(), "{}", report.summary());
    assert_eq!(report.backends.len(), 1, "{}", report.summary());
    assert_eq!(report.backends[backend], report.attempted);
    // No NAT in between: the backend sees the client's own address.
    assert_eq!(report.peers_seen.len(), 1, "{}", report.summary());
    assert_eq!(report.peers_seen[&client], report.attempted);
    assert_eq!(report.wrong_source, 0);
}

#[test]
fn tcp_and_udp_reach_every_backend_through_kernel_forwarding() {
    let lab = lab(2);
    let _servers = echo_servers(&lab);
    for b in &lab.backends {
        for (ip, client) in [
            (IpAddr::from(b.v4()), IpAddr::from(lab.client.v4())),
            (IpAddr::from(b.v6()), IpAddr::from(lab.client.v6())),
        ] {
            let target = SocketAddr::new(ip, PORT);
            let (tcp, udp) = lab.client.ns.run_in(|| {
                (
                    tcp_burst(target, 200, 16, TIMEOUT).expect("tcp burst"),
                    udp_flows(target, 100, &udp_opts()).expect("udp flows"),
                )
            });
            assert_direct(&tcp, &b.name, client);
            assert_direct(&udp, &b.name, client);
            // Every flow used its own source port.
            let mut ports: Vec<u16> = udp
                .flows
                .iter()
                .filter_map(|f| f.local)
                .map(|l| l.port())
                .collect();
            ports.sort_unstable();
            ports.dedup();
            assert_eq!(ports.len(), 100);
        }
    }
}

#[test]
fn many_concurrent_tcp_connections() {
    let lab = lab(1);
    let servers = echo_servers(&lab);
    let target = SocketAddr::new(lab.backend(0).v4().into(), PORT);
    let ll = lab
        .client
        .ns
        .run_in(|| LongLived::start(target, 300, Duration::from_millis(50), TIMEOUT))
        .expect("long-lived");
    ll.wait_rounds(2, Duration::from_secs(20))
        .expect("all 300 exchange");
    assert_eq!(servers[0].stats().tcp_open, 300);
    let report = ll.stop();
    assert_eq!(report.broken, 0, "{}", report.summary());
    assert_eq!(report.backends["be0"], 300);
}

fn wait_broken(ll: &LongLived, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ll.broken() < n {
        assert!(
            Instant::now() < deadline,
            "only {} broke, expected {n}",
            ll.broken()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn long_lived_connections_survive_and_breaks_are_detected() {
    let lab = lab(2);
    let mut servers = echo_servers(&lab);
    let t0 = SocketAddr::new(lab.backend(0).v6().into(), PORT);
    let t1 = SocketAddr::new(lab.backend(1).v4().into(), PORT);
    let interval = Duration::from_millis(20);
    let (ll0, ll1) = lab.client.ns.run_in(|| {
        (
            LongLived::start(t0, 10, interval, TIMEOUT).expect("long-lived to be0"),
            LongLived::start(t1, 10, interval, TIMEOUT).expect("long-lived to be1"),
        )
    });
    ll0.wait_rounds(3, TIMEOUT)
        .expect("be0 connections exchange");
    ll1.wait_rounds(3, TIMEOUT)
        .expect("be1 connections exchange");

    // Stopping be1's server must show up as 10 broken connections, and only there.
    servers.pop().expect("be1 server").stop();
    wait_broken(&ll1, 10);
    ll0.wait_rounds(3, TIMEOUT)
        .expect("be0 connections still exchange");

    let r0: LongLivedReport = ll0.stop();
    let r1 = ll1.stop();
    assert_eq!(r0.broken, 0, "{}", r0.summary());
    assert_eq!(r0.backends["be0"], 10);
    assert!(r0.results.iter().all(|r| r.messages >= 6));
    assert!(r0
        .results
        .iter()
        .all(|r| r.peer_seen.map(|p| p.ip()) == Some(lab.client.v6().into())));
    assert_eq!(r1.broken, 10, "{}", r1.summary());
    assert!(r1
        .results
        .iter()
        .all(|r| r.backend.as_deref() == Some("be1")));
    assert!(r1.results.iter().all(|r| r.error.is_some()));
}

#[test]
fn udp_answers_from_another_address_count_as_wrong_source() {
    let lab = lab(1);
    let _servers = echo_servers(&lab);
    // A secondary address: the wildcard-bound UDP server answers from the primary one, which
    // is what a NAT that forgets to translate replies back looks like to the client.
    lab.backend(0)
        .ns
        .ip(&["addr", "add", "10.99.10.3/24", "dev", "eth0"])
        .expect("secondary address");
    let target: SocketAddr = "10.99.10.3:8080".parse().unwrap();
    let (udp, tcp) = lab.client.ns.run_in(|| {
        (
            udp_flows(target, 20, &udp_opts()).expect("udp flows"),
            tcp_burst(target, 20, 4, TIMEOUT).expect("tcp burst"),
        )
    });
    assert_eq!(udp.wrong_source, 20, "{}", udp.summary());
    assert_eq!(udp.failed, 20);
    assert_eq!(udp.errors["recv: wrong source"], 20);
    assert!(udp
        .flows
        .iter()
        .all(|f| f.wrong_source == Some("10.99.10.2:8080".parse().unwrap())));
    // TCP answers always come from the connected address.
    assert!(tcp.all_ok(), "{}", tcp.summary());
}

#[test]
fn vip_traffic_goes_to_the_lb_and_dies_there_without_a_load_balancer() {
    let lab = lab(1);
    let _servers = echo_servers(&lab);
    let before = rx_packets(&lab, "lb-client");
    let opts = UdpOptions {
        concurrency: 5,
        timeout: Duration::from_millis(100),
        retries: 0,
        datagrams_per_flow: 1,
    };
    let v4 = SocketAddr::new(lab.vip4(1).into(), PORT);
    let v6 = SocketAddr::new(lab.vip6(1).into(), PORT);
    let (r4, r6) = lab.client.ns.run_in(|| {
        (
            udp_flows(v4, 5, &opts).unwrap(),
            udp_flows(v6, 5, &opts).unwrap(),
        )
    });
    assert_eq!(r4.ok + r6.ok, 0, "nothing serves the VIPs yet");
    let after = rx_packets(&lab, "lb-client");
    assert!(
        after >= before + 10,
        "the lb saw {} packets",
        after - before
    );
}

#[test]
fn binary_servers_and_clients() {
    let lab = lab(2);
    let bin = env!("CARGO_BIN_EXE_blixt-lab");
    let mut procs = Vec::new();
    for b in &lab.backends {
        let (proc, ready) =
            spawn_echo_process(&b.ns, &EchoConfig::new(b.name.clone(), PORT), TIMEOUT)
                .expect("echo process");
        assert_eq!(ready.tcp_port, Some(PORT));
        assert_eq!(ready.udp_port, Some(PORT));
        procs.push(proc);
    }
    let be1 = format!("{}:{PORT}", lab.backend(1).v4());
    let out = lab
        .client
        .ns
        .exec(&[
            bin,
            "tcp-burst",
            "--target",
            &be1,
            "--conns",
            "50",
            "--strict",
        ])
        .expect("tcp-burst");
    let tcp: Report = serde_json::from_str(out.trim()).expect("tcp report");
    assert_direct(&tcp, "be1", lab.client.v4().into());
    assert!(tcp.flows.is_empty(), "flows only with --per-flow");

    let be0 = format!("[{}]:{PORT}", lab.backend(0).v6());
    let out = lab
        .client
        .ns
        .exec(&[
            bin,
            "udp-flows",
            "--target",
            &be0,
            "--flows",
            "30",
            "--datagrams-per-flow",
            "2",
            "--per-flow",
            "--strict",
        ])
        .expect("udp-flows");
    let udp: Report = serde_json::from_str(out.trim()).expect("udp report");
    assert_direct(&udp, "be0", lab.client.v6().into());
    assert_eq!(udp.flows.len(), 30);

    let ll = lab
        .client
        .ns
        .spawn(&[
            bin,
            "long-lived",
            "--target",
            &be1,
            "--conns",
            "5",
            "--interval-ms",
            "20",
            "--duration-ms",
            "500",
        ])
        .expect("long-lived");
    let (status, lines) = ll
        .wait_output(Duration::from_secs(10))
        .expect("long-lived ends");
    assert!(status.success());
    let report: LongLivedReport =
        serde_json::from_str(lines.last().expect("report line")).expect("long-lived report");
    assert_eq!(report.conns, 5);
    assert_eq!(report.broken, 0, "{}", report.summary());

    // Strict mode fails when nothing answers.
    let dead = format!("{}:9", lab.backend(0).v4());
    let out = lab
        .client
        .ns
        .exec_output(&[
            bin,
            "tcp-burst",
            "--target",
            &dead,
            "--conns",
            "3",
            "--strict",
        ])
        .expect("tcp-burst to a closed port");
    assert_eq!(out.status.code(), Some(1));
    let refused: Report = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(refused.errors["connect: refused"], 3);

    // The echo command exits cleanly on SIGTERM.
    for mut p in procs {
        let status = p.terminate(TIMEOUT).expect("terminate");
        assert!(status.success(), "echo exited with {status}");
    }
}

#[test]
fn parallel_labs_do_not_collide() {
    require_root();
    let reports: Vec<Report> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let lab = Lab::build(LabSpec::with_backends(1)).expect("lab");
                    let _servers = echo_servers(&lab);
                    let target = SocketAddr::new(lab.backend(0).v4().into(), PORT);
                    lab.client
                        .ns
                        .run_in(|| tcp_burst(target, 50, 8, TIMEOUT).expect("burst"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in reports {
        assert!(r.all_ok(), "{}", r.summary());
    }
}
