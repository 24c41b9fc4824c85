//! The address policy (issue 19, item 1) and the endpoint filter (item 7): which addresses a
//! Gateway may have, who keeps a contested one, and which endpoint addresses are never
//! backends. Hostile inputs, each refused with `Programmed=False/AddressNotUsable` and
//! nothing of it in the dataplane.

use super::*;

const L: &str = "  - {name: tcp, protocol: TCP, port: 9000}";

/// A Gateway of class `class` created at `created` (seconds after 2024-01-01), with static
/// addresses (`value` list; empty: none) and the addresses its status already shows.
fn gw_at(
    ns: &str,
    name: &str,
    class: &str,
    created: i64,
    statics: &[&str],
    held: &[&str],
) -> String {
    let created = Timestamp::from_second(1_704_067_200 + created).unwrap();
    let mut y = format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}, generation: 1, creationTimestamp: \"{created}\"}}\nspec:\n  gatewayClassName: {class}\n"
    );
    if !statics.is_empty() {
        y.push_str("  addresses:\n");
        for a in statics {
            y.push_str(&format!("  - {{type: IPAddress, value: \"{a}\"}}\n"));
        }
    }
    y.push_str(&format!("  listeners:\n{L}\n"));
    if !held.is_empty() {
        y.push_str("status:\n  addresses:\n");
        for a in held {
            y.push_str(&format!("  - {{type: IPAddress, value: \"{a}\"}}\n"));
        }
    }
    y
}

/// A GatewayClass naming the AddressPool `pool`.
fn pool_class(name: &str, pool: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {name}, generation: 1}}\nspec:\n  controllerName: {CONTROLLER_NAME}\n  parametersRef: {{group: blixt.dev, kind: AddressPool, name: {pool}}}\n"
    )
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn assigned(t: &Translation, ns: &str, name: &str) -> Vec<String> {
    t.statuses.gateways[&ObjectKey::new(ns, name)]
        .addresses
        .iter()
        .flatten()
        .map(|a| a.value.clone())
        .collect()
}

/// Every address the dataplane gets: frontend VIPs and SNI table VIPs (what agents program
/// and announce by ARP/NDP).
fn dataplane_vips(t: &Translation) -> BTreeSet<IpAddr> {
    t.snapshot
        .frontends
        .iter()
        .map(|f| f.key.vip)
        .chain(t.tls.iter().map(|f| f.vip))
        .collect()
}

fn programmed(t: &Translation, ns: &str, name: &str) -> Condition {
    t.statuses.gateways[&ObjectKey::new(ns, name)]
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Programmed")
        .cloned()
        .expect("a Programmed condition")
}

/// An older tenant's Gateway holds a pool address; tenants then try, each with a Gateway of
/// their own, every kind of address they must not get. None is assigned, each gets
/// `Programmed=False/AddressNotUsable` naming the address, and no VIP of theirs reaches the
/// dataplane. Today's code gave the newer static claim the older Gateway's address, and took
/// any address anywhere (the node's, the router's, loopback).
#[test]
fn hostile_static_addresses_are_refused_and_the_older_claim_keeps_its_address() {
    let node = "192.0.2.1";
    let router = "192.0.2.254";
    let hostile = [
        ("another-gateways", "192.0.2.10"),
        ("outside-the-pool", "203.0.113.7"),
        ("the-node", node),
        ("the-router", router),
        ("loopback", "127.0.0.1"),
        ("link-local", "169.254.169.254"),
        ("multicast", "224.0.0.1"),
        ("unspecified", "0.0.0.0"),
        ("v6-loopback", "::1"),
        ("v6-link-local", "fe80::1"),
        ("v4-mapped-loopback", "::ffff:127.0.0.1"),
    ];
    let mut yaml = vec![
        CLASS.to_string(),
        gw_at("victim", "gw", "blixt", 0, &[], &["192.0.2.10"]),
    ];
    for (i, (name, ip)) in hostile.iter().enumerate() {
        yaml.push(gw_at("tenant", name, "blixt", 10 + i as i64, &[ip], &[]));
    }
    let mut objects = objects(&yaml.concat());
    objects.reserved_addresses = BTreeMap::from([
        (node.parse().unwrap(), "the address of node n1".to_string()),
        (router.parse().unwrap(), "the node's router".to_string()),
    ]);
    // The default pool holds the contested address; the admin allowed the node's subnet for
    // static addresses (so the node and router are refused as reserved, not as outside).
    let cfg = TranslatorConfig {
        address_pool: ips(&["192.0.2.10", "192.0.2.11"]),
        static_address_ranges: vec!["192.0.2.0/24".parse().unwrap()],
        ..TranslatorConfig::default()
    };
    let t = run_index(&objects, &cfg);

    assert_eq!(assigned(&t, "victim", "gw"), ["192.0.2.10"]);
    assert_eq!(programmed(&t, "victim", "gw").status, "True");
    let mut refused = 0;
    for (name, ip) in hostile {
        let c = programmed(&t, "tenant", name);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "AddressNotUsable"),
            "{name}: {c:?}"
        );
        assert!(c.message.contains(ip), "{name}: {}", c.message);
        assert!(assigned(&t, "tenant", name).is_empty(), "{name}");
        refused += 1;
    }
    let vips = dataplane_vips(&t);
    let taken: Vec<&str> = hostile
        .iter()
        .map(|(_, ip)| *ip)
        .filter(|ip| vips.contains(&ip.parse().unwrap()) && *ip != "192.0.2.10")
        .collect();
    println!(
        "hostile static addresses tried: {}, assigned: {}",
        hostile.len(),
        hostile.len() - refused + taken.len()
    );
    assert_eq!(refused, hostile.len());
    assert!(taken.is_empty(), "{taken:?}");
    assert_eq!(vips, BTreeSet::from(["192.0.2.10".parse().unwrap()]));
    // the messages say why
    let why = |name| programmed(&t, "tenant", name).message;
    assert!(why("another-gateways").contains("already used by Gateway victim/gw"));
    assert!(why("the-node").contains("the address of node n1"));
    assert!(why("loopback").contains("loopback"));
    assert!(why("v4-mapped-loopback").contains("loopback"));
    assert!(why("link-local").contains("link-local"));
}

/// The holder keeps its address even against an older Gateway's new static claim; between
/// two new claims, the older Gateway wins, then namespace/name.
#[test]
fn a_held_address_stays_and_the_older_new_claim_wins() {
    let cfg = TranslatorConfig {
        static_address_ranges: vec!["198.51.100.0/24".parse().unwrap()],
        ..config_v4()
    };
    // young holds .10 from the pool; old (created earlier) now asks for it statically
    let yaml = [
        CLASS.to_string(),
        gw_at("a", "old", "blixt", 0, &["192.0.2.10"], &[]),
        gw_at("b", "young", "blixt", 50, &[], &["192.0.2.10"]),
    ]
    .concat();
    let t = run_with(&yaml, &cfg);
    assert_eq!(assigned(&t, "b", "young"), ["192.0.2.10"]);
    assert_eq!(programmed(&t, "a", "old").reason, "AddressNotUsable");

    // nobody holds 198.51.100.7: the older of two claims gets it, whatever the names
    let yaml = [
        CLASS.to_string(),
        gw_at("a", "first-by-name", "blixt", 20, &["198.51.100.7"], &[]),
        gw_at("z", "older", "blixt", 10, &["198.51.100.7"], &[]),
    ]
    .concat();
    let t = run_with(&yaml, &cfg);
    assert_eq!(assigned(&t, "z", "older"), ["198.51.100.7"]);
    assert_eq!(
        programmed(&t, "a", "first-by-name").reason,
        "AddressNotUsable"
    );
    // same creation time: namespace/name decides
    let yaml = [
        CLASS.to_string(),
        gw_at("b", "gw", "blixt", 10, &["198.51.100.7"], &[]),
        gw_at("a", "gw", "blixt", 10, &["198.51.100.7"], &[]),
    ]
    .concat();
    let t = run_with(&yaml, &cfg);
    assert_eq!(assigned(&t, "a", "gw"), ["198.51.100.7"]);
    assert!(assigned(&t, "b", "gw").is_empty());
}

/// By default a class's static addresses must be in its pool; the AddressPool's
/// `staticAddressRanges` widens that, for that pool's classes only.
#[test]
fn static_addresses_are_limited_to_the_pool_unless_the_pool_widens_them() {
    let yaml = [
        pool_class("strict", "strict"),
        pool_class("wide", "wide"),
        gw_at("t", "in-pool", "strict", 0, &["198.51.100.5"], &[]),
        gw_at("t", "outside", "strict", 1, &["198.51.100.77"], &[]),
        gw_at("t", "widened", "wide", 2, &["198.51.100.77"], &[]),
        gw_at("t", "beyond", "wide", 3, &["203.0.113.1"], &[]),
    ]
    .concat();
    let mut objects = objects(&yaml);
    objects.address_pools.insert(
        "strict".into(),
        ExpandedAddressPool {
            addresses: ips(&["198.51.100.5"]),
            ..Default::default()
        },
    );
    objects.address_pools.insert(
        "wide".into(),
        ExpandedAddressPool {
            addresses: ips(&["198.51.100.6"]),
            static_address_ranges: vec!["198.51.100.64/26".parse().unwrap()],
            ..Default::default()
        },
    );
    let t = run_index(&objects, &TranslatorConfig::default());
    assert_eq!(assigned(&t, "t", "in-pool"), ["198.51.100.5"]);
    assert_eq!(assigned(&t, "t", "widened"), ["198.51.100.77"]);
    for name in ["outside", "beyond"] {
        let c = programmed(&t, "t", name);
        assert_eq!(c.reason, "AddressNotUsable", "{name}");
        assert!(c.message.contains("staticAddressRanges"), "{}", c.message);
    }
    assert_eq!(
        programmed(&t, "t", "outside").message,
        "address 198.51.100.77 is not allowed for this GatewayClass: static addresses must be in \
         AddressPool \"strict\" or its staticAddressRanges (none)"
    );
    // the default class: the default pool only, until static_address_ranges says more
    let yaml = [
        CLASS.to_string(),
        gw_at("t", "gw", "blixt", 0, &["198.51.100.9"], &[]),
    ]
    .concat();
    assert_eq!(
        programmed(&run(&yaml), "t", "gw").reason,
        "AddressNotUsable"
    );
    let t = run_with(&yaml, &static_ranges(&["198.51.100.0/24"]));
    assert_eq!(assigned(&t, "t", "gw"), ["198.51.100.9"]);
}

/// A reserved address in the pool (an admin's mistake) is skipped by allocation.
#[test]
fn reserved_addresses_are_never_allocated_from_the_pool() {
    let yaml = [CLASS.to_string(), gw_at("t", "gw", "blixt", 0, &[], &[])].concat();
    let mut objects = objects(&yaml);
    objects.reserved_addresses =
        BTreeMap::from([("192.0.2.10".parse().unwrap(), "node n1".to_string())]);
    let t = run_index(&objects, &config_v4());
    assert_eq!(assigned(&t, "t", "gw"), ["192.0.2.11"]);
    // nor kept when the status shows it from before
    let yaml = [
        CLASS.to_string(),
        gw_at("t", "gw", "blixt", 0, &[], &["192.0.2.10"]),
    ]
    .concat();
    let t = run_index(
        &ObjectIndex {
            reserved_addresses: objects.reserved_addresses.clone(),
            ..super::objects(&yaml)
        },
        &config_v4(),
    );
    assert_eq!(assigned(&t, "t", "gw"), ["192.0.2.11"]);
}

/// Endpoint addresses that can never be backends are left out; the ref still resolves
/// (`ResolvedRefs=True`, the message names them), and a ref with nothing else left has its
/// share rejected, as a Service without endpoints.
#[test]
fn endpoints_that_cannot_be_backends_are_ignored() {
    let bad = [
        "127.0.0.1",
        "169.254.1.1",
        "0.0.0.0",
        "224.0.0.5",
        "192.0.2.11", // the other Gateway's VIP
        "::1",
        "fe80::1",
        "ff02::1",
    ];
    let mut addrs: Vec<&str> = bad.to_vec();
    addrs.push("10.0.0.1");
    let yaml = [
        CLASS.to_string(),
        gw_at("t", "a", "blixt", 0, &[], &[]),
        gw_at("t", "b", "blixt", 1, &[], &[]),
        service("t", "svc", 80, "TCP", 8080, &addrs),
        service("t", "loop", 80, "TCP", 8080, &["127.0.0.2"]),
        route(
            "TCPRoute",
            "t",
            "r",
            "{name: a}",
            &["{name: svc, port: 80}", "{name: loop, port: 80}"],
        ),
    ]
    .concat();
    let t = run(&yaml);
    assert_eq!(assigned(&t, "t", "a"), ["192.0.2.10"]);
    assert_eq!(assigned(&t, "t", "b"), ["192.0.2.11"]);
    let f = t
        .snapshot
        .frontends
        .iter()
        .find(|f| f.name == "t/a/tcp")
        .unwrap();
    // svc keeps 10.0.0.1 (weight 1); loop has nothing left: its share (1) is rejected
    assert_eq!(f.backends, vec![be("10.0.0.1", 8080, 1)]);
    assert_eq!(f.reject_weight, 1);
    let used: usize = t.snapshot.frontends.iter().map(|f| f.backends.len()).sum();
    println!(
        "unusable endpoint addresses offered: {}, used as backends: {}",
        bad.len() + 1,
        used - 1
    );
    assert_eq!(used, 1);
    let parent = &t.statuses.tcp_routes[&ObjectKey::new("t", "r")].parents[0];
    let resolved = parent
        .conditions
        .iter()
        .find(|c| c.type_ == "ResolvedRefs")
        .unwrap();
    assert_eq!(
        (resolved.status.as_str(), resolved.reason.as_str()),
        ("True", "ResolvedRefs")
    );
    for (ip, why) in [
        ("127.0.0.1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.5", "multicast"),
        ("192.0.2.11", "a Gateway address"),
    ] {
        assert!(
            resolved.message.contains(&format!("{ip} ({why})")),
            "{}",
            resolved.message
        );
    }
    assert!(
        resolved.message.contains("and 1 more"),
        "{}",
        resolved.message
    );
}

/// A TLS backend equal to its own VIP would make the proxy connect to itself: it never
/// reaches the SNI table.
#[test]
fn a_tls_backend_on_its_own_vip_never_reaches_the_proxy() {
    let listener = "  - {name: tls, protocol: TLS, port: 443, tls: {mode: Passthrough}}";
    let yaml = [
        CLASS.to_string(),
        gateway("t", "gw", listener),
        service("t", "self", 443, "TCP", 443, &["192.0.2.10", "10.0.0.9"]),
        tls_route(
            "t",
            "r",
            "{name: gw}",
            &["a.example.com"],
            &["{name: self, port: 443}"],
        ),
    ]
    .concat();
    let t = run(&yaml);
    assert_eq!(t.tls.len(), 1);
    assert_eq!(t.tls[0].vip.to_string(), "192.0.2.10");
    let backends: Vec<String> = t.tls[0]
        .routes
        .iter()
        .flat_map(|r| r.backends.iter().map(|b| b.addr.addr.to_string()))
        .collect();
    assert_eq!(backends, ["10.0.0.9"]);
}
