//! Standalone mode end to end: `blixt run --config DIR` on the lab's load-balancer node with
//! the manifests of examples/standalone, real traffic from the client, edits on disk while
//! connections stay open, a broken file refused, and `blixt status` / `blixt inspect` checked
//! against what was configured and sent.

use std::net::SocketAddr;
use std::time::Duration;

use blixt_lab::traffic::{self, UdpOptions};
use blixt_lab::EchoServer;

#[path = "common/lab.rs"]
mod lab_support;
#[path = "common/standalone.rs"]
mod standalone_support;
use lab_support::{
    assert_none_on, assert_some_on, echo_servers, start_long_lived, stop_unbroken, tcp_burst,
    tcp_burst_ok,
};

/// `blixt run` with the TCP and UDP examples, echo servers on the backends.
type Standalone = standalone_support::StandaloneRun<Vec<EchoServer>>;

fn start() -> Standalone {
    Standalone::start(
        "blixt-standalone",
        &["gateway.yaml", "routes.yaml", "backends.yaml", "node.yaml"],
        echo_servers,
    )
}

fn within(counts: &std::collections::BTreeMap<String, usize>, weights: &[(&str, f64)]) {
    let total: usize = counts.values().sum();
    for (name, share) in weights {
        let got = *counts.get(*name).unwrap_or(&0) as f64 / total as f64;
        assert!(
            (got - share).abs() <= 0.05,
            "{name}: {got:.3} vs {share:.3} ({counts:?})"
        );
    }
}

#[test]
fn manifests_in_balanced_traffic_statuses_and_inspect_out() {
    let s = start();
    for v6 in [false, true] {
        let (tcp, udp) = (
            SocketAddr::new(s.vip(v6), 80),
            SocketAddr::new(s.vip(v6), 53),
        );
        let (t, u) = s.lab.client.ns.run_in(|| {
            (
                traffic::tcp_burst(tcp, 1000, 32, Duration::from_secs(5)).unwrap(),
                traffic::udp_flows(udp, 1000, &UdpOptions::default()).unwrap(),
            )
        });
        assert_eq!((t.ok, t.wrong_source), (1000, 0), "{}", t.summary());
        assert_eq!((u.ok, u.wrong_source), (1000, 0), "{}", u.summary());
        within(&t.backends, &[("be0", 0.5), ("be1", 0.25), ("be2", 0.25)]);
        within(
            &u.backends,
            &[("be0", 1.0 / 3.0), ("be1", 1.0 / 3.0), ("be2", 1.0 / 3.0)],
        );
    }

    let table = s.status("table");
    assert!(table.contains("at generation 1"), "{table}");
    // the dataplane section: kernel, attach mode, each interface's hook
    let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        table.contains(&format!("dataplane: kernel {}, attach auto", uname.trim())),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.trim_start().starts_with("interface ") && l.ends_with(": xdp-native")),
        "{table}"
    );
    let gw_line = table
        .lines()
        .find(|l| l.starts_with("default/demo "))
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(
        gw_line.split_whitespace().collect::<Vec<_>>(),
        [
            "default/demo",
            "blixt",
            "10.99.100.1,fd99:100::1",
            "True",
            "True"
        ],
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&s.status("json")).unwrap();
    let gw = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "Gateway")
        .unwrap();
    let listeners = gw["status"]["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 2);
    assert!(
        listeners.iter().all(|l| l["attachedRoutes"] == 1),
        "{listeners:?}"
    );

    let v = s.inspect_json(false);
    let fes = v["frontends"].as_array().unwrap();
    assert_eq!(fes.len(), 4, "TCP and UDP on both families: {v:#}");
    for fe in fes {
        assert_eq!(fe["new_flows"], 1000, "{fe:#}");
        let mut shares: Vec<f64> = fe["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["share_percent"].as_f64().unwrap())
            .collect();
        shares.sort_by(f64::total_cmp);
        let want: &[f64] = if fe["protocol"] == "TCP" {
            &[25.0, 25.0, 50.0]
        } else {
            &[33.3, 33.3, 33.3]
        };
        for (g, w) in shares.iter().zip(want) {
            assert!(
                (g - w).abs() < 1.0,
                "{} Maglev shares {shares:?}",
                fe["protocol"]
            );
        }
    }
}

#[test]
fn edits_on_disk_apply_without_breaking_connections_and_bad_files_are_refused() {
    let mut s = start();
    let tcp4 = SocketAddr::new(s.vip(false), 80);
    let tcp6 = SocketAddr::new(s.vip(true), 80);
    let long = start_long_lived(&s.lab, &[tcp4, tcp6]);

    // 1. weights 2:1:1 -> 0:1:1 (be0 drained of new connections)
    let routes = s.read("routes.yaml");
    let drained = routes.replacen(
        "name: be0\n      port: 8080\n      weight: 2",
        "name: be0\n      port: 8080\n      weight: 0",
        1,
    );
    assert_ne!(drained, routes);
    s.write("routes.yaml", &drained);
    s.wait_next_generation();
    let burst = tcp_burst_ok(&s.lab, tcp4, 300);
    assert_none_on(&burst, "be0", "weight 0 gets no new connection");

    // 2. a new listener and route: port 8081 to be2 only
    let gateway = s.read("gateway.yaml");
    s.write(
        "gateway.yaml",
        &(gateway.clone() + "  - name: extra\n    protocol: TCP\n    port: 8081\n"),
    );
    s.write(
        "extra.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {name: extra, namespace: default}\nspec:\n  parentRefs: [{name: demo, sectionName: extra}]\n  rules:\n  - backendRefs: [{name: be2, port: 8080}]\n",
    );
    s.wait_next_generation();
    // the two files may land in one generation or two
    let extra = SocketAddr::new(s.vip(false), 8081);
    let mut r = tcp_burst(&s.lab, extra, 50, 8, Duration::from_secs(2));
    if r.ok != 50 {
        s.wait_next_generation();
        r = tcp_burst(&s.lab, extra, 50, 8, Duration::from_secs(2));
    } else {
        // served already, yet the route may have come in a second generation (during the
        // burst, whose SYNs are retried): count it, or step 3 would wait for it
        s.catch_up_generation(Duration::from_millis(500));
    }
    assert_eq!(r.ok, 50, "{}", r.summary());
    assert_eq!(
        r.backends.keys().collect::<Vec<_>>(),
        ["be2"],
        "{:?}",
        r.backends
    );

    // 3. the route deleted: its listener has nothing to serve
    s.remove("extra.yaml");
    s.wait_next_generation();
    let r = tcp_burst(&s.lab, extra, 5, 5, Duration::from_millis(500));
    assert_eq!(r.ok, 0, "no route, no service: {}", r.summary());
    let table = s.status("table");
    let extra_line = table
        .lines()
        .find(|l| l.starts_with("default/demo/extra"))
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(
        extra_line.split_whitespace().nth(3),
        Some("0"),
        "attachedRoutes 0: {extra_line}"
    );

    // 4. a broken file: refused with file, line and field; the previous config keeps serving
    let generation = s.generation;
    s.write(
        "routes.yaml",
        &drained.replacen("port: 8080", "port: eighty", 1),
    );
    let refused = |table: &str| {
        table.contains("routes.yaml:")
            && table.contains("spec.rules[0].backendRefs[0].port")
            && table.contains("eighty")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut table = s.status("table");
    while !refused(&table) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        table = s.status("table");
    }
    assert!(
        refused(&table),
        "the refusal names file, field and value:\n{table}"
    );
    assert!(
        table.contains(&format!("at generation {generation}")),
        "{table}"
    );
    let burst = tcp_burst_ok(&s.lab, tcp6, 200);
    assert_none_on(&burst, "be0", "still the drained config");

    for r in stop_unbroken(long) {
        assert_some_on(&r, "be0");
    }
}

#[test]
fn vips_on_the_clients_link_are_answered_by_arp_and_ndp() {
    let s = start();
    // the client now treats the VIP block as on-link: it must resolve each VIP itself
    let (v4, v6) = (s.lab.vip_v4.to_string(), s.lab.vip_v6.to_string());
    s.lab
        .client
        .ns
        .ip_batch(&[
            format!("route replace {v4} dev eth0"),
            format!("route replace {v6} dev eth0"),
        ])
        .unwrap();
    for v6 in [false, true] {
        let t = SocketAddr::new(s.vip(v6), 80);
        let r = tcp_burst(&s.lab, t, 100, 8, Duration::from_secs(5));
        assert_eq!(r.ok, 100, "v6={v6}: {}", r.summary());
    }
    let neigh = s
        .lab
        .client
        .ns
        .ip(&["neigh", "show", "dev", "eth0"])
        .unwrap();
    let lb_mac = s.lab.client.link.lb_mac.to_string();
    for vip in [s.vip(false).to_string(), s.vip(true).to_string()] {
        let line = neigh
            .lines()
            .find(|l| l.starts_with(&format!("{vip} ")))
            .unwrap_or_else(|| panic!("{vip} not resolved:\n{neigh}"));
        assert!(
            line.contains(&lb_mac),
            "{vip} resolves to the node's MAC {lb_mac}: {line}"
        );
    }
    let v = s.inspect_json(false);
    assert!(
        v["events"]["arp_reply"].as_u64().unwrap() >= 1,
        "{}",
        v["events"]
    );
    assert!(
        v["events"]["ndp_reply"].as_u64().unwrap() >= 1,
        "{}",
        v["events"]
    );
}
