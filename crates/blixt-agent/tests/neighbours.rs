//! `blixt_agent::neighbours::forget` against a real kernel's neighbour table: the learnt
//! entries of the given addresses go, on every interface and in both families; PERMANENT and
//! NOARP entries and the entries of other addresses stay.

use std::collections::BTreeSet;
use std::net::IpAddr;

use blixt_agent::neighbours;
use blixt_lab::{NetNs, Veth};

#[test]
fn forget_deletes_only_learnt_entries_of_the_addresses() {
    assert!(
        blixt_lab::is_root(),
        "needs root (network namespaces): run as root, as `make test` does"
    );
    let node = NetNs::new("bnbra").unwrap();
    let peer = NetNs::new("bnbrb").unwrap();
    let _a = Veth::create(&node, "eth0", &peer, "eth0").unwrap();
    let _b = Veth::create(&node, "eth1", &peer, "eth1").unwrap();
    let lines: Vec<String> = [
        "link set eth0 up",
        "link set eth1 up",
        "addr add 192.0.2.1/24 dev eth0",
        "addr add 198.51.100.1/24 dev eth1",
        "addr add 2001:db8::1/64 dev eth0 nodad",
        // the backend, learnt on two interfaces and in both families
        "neigh add 192.0.2.7 lladdr 02:00:00:00:00:07 dev eth0 nud reachable",
        "neigh add 192.0.2.7 lladdr 02:00:00:00:00:17 dev eth1 nud stale",
        "neigh add 2001:db8::7 lladdr 02:00:00:00:00:07 dev eth0 nud stale",
        // a configured backend entry and another address (a gateway)
        "neigh add 198.51.100.8 lladdr 02:00:00:00:00:08 dev eth1 nud permanent",
        "neigh add 192.0.2.9 lladdr 02:00:00:00:00:09 dev eth0 nud reachable",
    ]
    .map(String::from)
    .to_vec();
    node.ip_batch(&lines).unwrap();

    let addrs: BTreeSet<IpAddr> = ["192.0.2.7", "2001:db8::7", "198.51.100.8", "203.0.113.1"]
        .map(|a| a.parse().unwrap())
        .into();
    let deleted = node.run_in(|| neighbours::forget(&addrs));
    assert_eq!(
        deleted, 3,
        "two IPv4 entries and one IPv6 entry of 192.0.2.7/2001:db8::7"
    );

    let show = |family: &str| node.ip(&[family, "neigh", "show"]).unwrap();
    let (v4, v6) = (show("-4"), show("-6"));
    assert!(!v4.contains("192.0.2.7 "), "{v4}");
    assert!(!v6.contains("2001:db8::7 "), "{v6}");
    assert!(
        v4.contains("198.51.100.8 ") && v4.contains("PERMANENT"),
        "{v4}"
    );
    assert!(v4.contains("192.0.2.9 "), "another address stays: {v4}");

    // nothing left to delete: not an error
    assert_eq!(node.run_in(|| neighbours::forget(&addrs)), 0);
}
