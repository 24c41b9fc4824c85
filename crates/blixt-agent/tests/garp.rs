//! `blixt_agent::garp` against real kernels' neighbour tables: a namespace holding stale
//! entries for an IPv4 and an IPv6 VIP (another node's MAC) switches both to the sender's MAC
//! on one gratuitous ARP and one unsolicited NA, with no traffic of its own.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use blixt_lab::{NetNs, Veth};

fn lladdr(ns: &NetNs, addr: &str) -> Option<String> {
    let out = ns.ip(&["neigh", "show", addr, "dev", "eth0"]).ok()?;
    Some(
        out.split("lladdr ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .to_owned(),
    )
}

#[test]
fn gratuitous_arp_and_unsolicited_na_move_existing_neighbour_entries() {
    if !blixt_lab::is_root() {
        panic!("needs root (network namespaces, AF_PACKET): run as root, as `make test` does");
    }
    let neighbour = NetNs::new("bgarpn").unwrap();
    let node = NetNs::new("bgarpa").unwrap();
    let _veth = Veth::create(&neighbour, "eth0", &node, "eth0").unwrap();
    for ns in [&neighbour, &node] {
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    }
    let node_mac = node
        .ip(&["-o", "link", "show", "dev", "eth0"])
        .unwrap()
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("the node's MAC")
        .to_owned();
    let (v4, v6) = ("192.0.2.7", "2001:db8::7");
    neighbour
        .ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"])
        .unwrap();
    neighbour
        .ip(&["addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad"])
        .unwrap();
    // What the neighbour learned from the VIPs' previous owner.
    let old = "02:00:00:00:0b:0b";
    for vip in [v4, v6] {
        neighbour
            .ip(&[
                "neigh", "replace", vip, "lladdr", old, "dev", "eth0", "nud", "stale",
            ])
            .unwrap();
        assert_eq!(lladdr(&neighbour, vip).as_deref(), Some(old));
    }

    let vips: Vec<IpAddr> = vec![v4.parse().unwrap(), v6.parse().unwrap()];
    let sent = node
        .run_in(|| blixt_agent::garp::announce(&["eth0".to_string()], &vips))
        .expect("announcing");
    assert_eq!(sent, 2);

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = (lladdr(&neighbour, v4), lladdr(&neighbour, v6));
        if now.0.as_deref() == Some(node_mac.as_str())
            && now.1.as_deref() == Some(node_mac.as_str())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "neighbour entries did not move to {node_mac}: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A missing interface is named.
    let err = node
        .run_in(|| blixt_agent::garp::announce(&["nosuch0".to_string()], &vips))
        .unwrap_err();
    assert!(err.to_string().contains("nosuch0"), "{err}");
}
