//! The phases of `translate`, one at a time: each run on what the earlier phases produce,
//! its output checked directly rather than through the statuses.

use super::*;

/// A GatewayClass named `name` of `controller`, with a `parametersRef` to the AddressPool
/// `pool` when given.
fn class(name: &str, controller: &str, pool: Option<&str>) -> String {
    let params = pool.map_or(String::new(), |p| {
        format!("\n  parametersRef: {{group: blixt.dev, kind: AddressPool, name: {p}}}")
    });
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {name}, generation: 1}}\nspec:\n  controllerName: {controller}{params}\n"
    )
}

/// A Gateway of class `class`, created at `created` (seconds after 2020-01-01).
fn gw(ns: &str, name: &str, class: &str, created: i64, listeners: &str) -> String {
    let created = Timestamp::from_second(1_577_836_800 + created).unwrap();
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}, generation: 3, creationTimestamp: \"{created}\"}}\nspec:\n  gatewayClassName: {class}\n  listeners:\n{listeners}\n"
    )
}

fn pool(addresses: &[&str], delegate_to_load_balancer: bool) -> ExpandedAddressPool {
    ExpandedAddressPool {
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        delegate_to_load_balancer,
        static_address_ranges: Vec::new(),
    }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

const TCP_9000: &str = "  - {name: tcp, protocol: TCP, port: 9000}";
const TCP_1_2: &str =
    "  - {name: a, protocol: TCP, port: 1}\n  - {name: b, protocol: TCP, port: 2}";
const HTTP_80: &str = "  - {name: web, protocol: HTTP, port: 80}";
const TCP_9000_9001: &str =
    "  - {name: tcp, protocol: TCP, port: 9000}\n  - {name: other, protocol: TCP, port: 9001}";
const TCP_9000_TLS_443: &str = "  - {name: tcp, protocol: TCP, port: 9000}\n  - {name: tls, protocol: TLS, port: 443, hostname: a.example.com, tls: {mode: Passthrough}}";

/// Phases 1 and 2 (classes, Gateways): what the later phases start from.
fn classes_and_gateways<'a>(
    objects: &'a ObjectIndex,
    config: &'a TranslatorConfig,
) -> (Classes<'a>, Vec<GatewayEval<'a>>) {
    let classes = evaluate_classes(objects, config);
    let gateways = evaluate_gateways(objects, &classes, config, &Lookup::new(objects));
    (classes, gateways)
}

/// Phases 1 to 4 (no delegated addresses): what the last three phases start from.
fn through_routes<'a>(
    objects: &'a ObjectIndex,
    config: &'a TranslatorConfig,
) -> (Classes<'a>, Vec<GatewayEval<'a>>, Vec<RouteEval<'a>>) {
    let (classes, mut gateways) = classes_and_gateways(objects, config);
    assign_addresses(&mut gateways, objects, config);
    let routes = evaluate_routes(objects, &gateways, &Lookup::new(objects));
    (classes, gateways, routes)
}

#[test]
fn classes_phase_keeps_the_first_class_of_each_name_of_blixts_controller_with_its_pool() {
    let yaml = [
        CLASS.to_string(),
        class("blixt", CONTROLLER_NAME, Some("edge")), // same name: the first counts
        class("other", "example.com/other", None),
        class("edge", CONTROLLER_NAME, Some("edge")),
        class("lb", CONTROLLER_NAME, Some("lb")),
        class("missing", CONTROLLER_NAME, Some("nope")),
    ]
    .concat();
    let mut objects = objects(&yaml);
    objects
        .address_pools
        .insert("edge".into(), pool(&["198.51.100.7"], false));
    objects.address_pools.insert("lb".into(), pool(&[], true));
    let config = config_v4();

    let classes = evaluate_classes(&objects, &config);
    assert_eq!(
        classes.keys().copied().collect::<Vec<_>>(),
        ["blixt", "edge", "lb", "missing"]
    );
    let blixt = &classes["blixt"];
    assert!(blixt.obj.spec.parameters_ref.is_none());
    assert!(blixt.accepted.is_true() && !blixt.delegates);
    assert_eq!(blixt.policy.pool, &config.address_pool[..]);
    assert_eq!(classes["edge"].policy.pool, &ips(&["198.51.100.7"])[..]);
    assert!(!classes["edge"].delegates);
    assert!(classes["lb"].accepted.is_true() && classes["lb"].delegates);
    assert!(classes["lb"].policy.pool.is_empty());
    let missing = &classes["missing"];
    assert_eq!(
        (missing.accepted.status, missing.accepted.reason),
        ("False", reason::INVALID_PARAMETERS)
    );
    assert!(!missing.delegates);
}

#[test]
fn gateways_phase_takes_the_first_gateway_of_each_key_of_blixts_classes_oldest_first() {
    let yaml = [
        CLASS.to_string(),
        class("other", "example.com/other", None),
        class("missing", CONTROLLER_NAME, Some("nope")),
        gw("ns", "young", "blixt", 20, TCP_9000),
        gw("ns", "old", "blixt", 10, TCP_9000),
        gw("ns", "old", "blixt", 5, TCP_1_2),
        gw("ns", "foreign", "other", 1, TCP_9000),
        gw("ns", "waiting", "missing", 30, TCP_9000),
    ]
    .concat();
    let objects = objects(&yaml);
    let config = config_v4();
    let classes = evaluate_classes(&objects, &config);

    let gateways = evaluate_gateways(&objects, &classes, &config, &Lookup::new(&objects));
    let keys: Vec<String> = gateways.iter().map(|g| g.key.to_string()).collect();
    assert_eq!(keys, ["ns/old", "ns/young", "ns/waiting"]);
    let old = &gateways[0];
    assert_eq!(old.listeners.len(), 1, "the first ns/old counts");
    assert_eq!(old.generation, 3);
    assert!(old.class_accepted && old.accepted.is_true());
    assert_eq!(old.policy.pool, &config.address_pool[..]);
    // no spec.addresses: one IPv4 slot from the IPv4-only pool
    assert_eq!(old.request.slots.len(), 1);
    assert!(old.request.statics.is_empty());
    // addresses and Programmed are the next phase's
    assert!(old.addresses.assigned.is_empty());
    assert_eq!(
        (old.programmed.status, old.programmed.reason),
        ("False", reason::PENDING)
    );
    let waiting = &gateways[2];
    assert!(!waiting.class_accepted);
    assert_eq!(
        (waiting.accepted.status, waiting.accepted.reason),
        ("Unknown", reason::PENDING)
    );
}

#[test]
fn addresses_phase_assigns_pool_and_delegated_addresses_and_decides_programmed() {
    let yaml = [
        CLASS.to_string(),
        class("lb", CONTROLLER_NAME, Some("lb")),
        gw("ns", "a", "blixt", 1, TCP_9000),
        gw("ns", "b", "blixt", 2, TCP_9000),
        gw("ns", "d", "lb", 3, TCP_9000),
        gw("ns", "bad", "blixt", 4, HTTP_80),
    ]
    .concat();
    let mut objects = objects(&yaml);
    objects.address_pools.insert("lb".into(), pool(&[], true));
    let config = TranslatorConfig {
        max_frontends: Some(1),
        ..config_v4()
    };
    let (_, mut gateways) = classes_and_gateways(&objects, &config);
    let delegated = BTreeMap::from([(ObjectKey::new("ns", "d"), ips(&["203.0.113.7"]))]);
    let objects = ObjectIndex {
        delegated_addresses: delegated,
        ..objects.clone()
    };

    let delegations = assign_addresses(&mut gateways, &objects, &config);
    let by_name = |n: &str| gateways.iter().find(|g| g.key.name == n).unwrap();
    assert_eq!(by_name("a").addresses.assigned, ips(&["192.0.2.10"]));
    assert_eq!(by_name("b").addresses.assigned, ips(&["192.0.2.11"]));
    assert_eq!(by_name("d").addresses.assigned, ips(&["203.0.113.7"]));
    assert!(
        by_name("bad").addresses.assigned.is_empty(),
        "a rejected Gateway holds no pool address"
    );
    // one frontend fits: the oldest Gateway gets it
    let programmed = |n: &str| {
        let c = &by_name(n).programmed;
        (c.status, c.reason)
    };
    assert_eq!(programmed("a"), ("True", reason::PROGRAMMED));
    assert_eq!(programmed("b"), ("False", reason::NO_RESOURCES));
    assert_eq!(programmed("d"), ("False", reason::NO_RESOURCES));
    assert_eq!(programmed("bad"), ("False", reason::INVALID));
    assert_eq!(
        delegations,
        [Delegation {
            gateway: ObjectKey::new("ns", "d"),
            service: "blixt-d".into(),
            ports: vec![(Protocol::Tcp, 9000)],
            addresses: ips(&["203.0.113.7"]),
        }]
    );
}

#[test]
fn routes_phase_attaches_parent_refs_to_blixt_gateways_only_once_per_route() {
    let yaml = [
        CLASS.to_string(),
        class("other", "example.com/other", None),
        gw("ns", "gw", "blixt", 1, TCP_9000),
        gw("ns", "foreign", "other", 2, TCP_9000),
        route(
            "TCPRoute",
            "ns",
            "r",
            "{name: foreign}, {name: gw}, {name: gw, namespace: ns}",
            &["{name: svc, port: 80}"],
        ),
        route("TCPRoute", "ns", "r", "{name: gw}", &[]), // same key: the first counts
        route("UDPRoute", "ns", "r", "{name: foreign}", &[]),
        service("ns", "svc", 80, "TCP", 8080, &["10.0.0.1"]),
    ]
    .concat();
    let objects = objects(&yaml);
    let config = config_v4();
    let (_, gateways) = classes_and_gateways(&objects, &config);

    let routes = evaluate_routes(&objects, &gateways, &Lookup::new(&objects));
    let keys: Vec<(RouteKind, String)> = routes
        .iter()
        .map(|r| (r.view.kind, r.view.key.to_string()))
        .collect();
    assert_eq!(
        keys,
        [
            (RouteKind::Tcp, "ns/r".to_string()),
            (RouteKind::Udp, "ns/r".to_string())
        ]
    );
    let tcp = &routes[0];
    assert_eq!(tcp.rules.len(), 1);
    assert_eq!(tcp.rules[0].len(), 1, "one backendRef, resolved");
    // the foreign Gateway is not Blixt's, and both refs to gw are one parent
    assert_eq!(tcp.parents.len(), 1);
    let p = &tcp.parents[0];
    assert_eq!((p.parent_ref.name.as_str(), p.gateway), ("gw", 0));
    assert!(p.accepted.is_true());
    assert_eq!(p.attachments.len(), 1);
    assert!(routes[1].parents.is_empty());
}

#[test]
fn attached_routes_phase_counts_a_route_once_per_listener() {
    let yaml = [
        CLASS.to_string(),
        gw("ns", "gw", "blixt", 1, TCP_9000_9001),
        // both parentRefs reach listener tcp; the second reaches listener other too
        route(
            "TCPRoute",
            "ns",
            "twice",
            "{name: gw, sectionName: tcp}, {name: gw, port: 9000}",
            &[],
        ),
        route("TCPRoute", "ns", "all", "{name: gw}", &[]),
    ]
    .concat();
    let objects = objects(&yaml);
    let config = config_v4();
    let (_, mut gateways, routes) = through_routes(&objects, &config);
    assert!(gateways[0].listeners.iter().all(|l| l.attached_routes == 0));

    count_attached_routes(&mut gateways, &routes);
    let counts: Vec<(&str, i32)> = gateways[0]
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.attached_routes))
        .collect();
    assert_eq!(counts, [("tcp", 2), ("other", 1)]);
}

#[test]
fn dataplane_phase_builds_frontends_of_programmed_gateways_with_their_owners() {
    let yaml = [
        CLASS.to_string(),
        gw("ns", "gw", "blixt", 1, TCP_9000_TLS_443),
        gw("ns", "second", "blixt", 2, TCP_9000),
        gw("ns", "unprogrammed", "blixt", 3, TCP_9000),
        route(
            "TCPRoute",
            "ns",
            "r",
            "{name: gw}",
            &["{name: svc, port: 80}"],
        ),
        service("ns", "svc", 80, "TCP", 8080, &["10.0.0.1"]),
    ]
    .concat();
    let objects = objects(&yaml);
    let config = TranslatorConfig {
        max_frontends: Some(3),
        ..config_v4()
    };
    let (_, gateways, routes) = through_routes(&objects, &config);

    let d = build_dataplane(&gateways, &routes);
    let names: Vec<&str> = d.frontends.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["ns/gw/tcp", "ns/second/tcp"]);
    assert_eq!(d.frontends[0].backends, [be("10.0.0.1", 8080, 1)]);
    assert!(d.frontends[1].backends.is_empty());
    assert_eq!(d.tls.len(), 1);
    assert_eq!((d.tls[0].name.as_str(), d.tls[0].port), ("ns/gw/tls", 443));
    let gw = ObjectKey::new("ns", "gw");
    let second = ObjectKey::new("ns", "second");
    let vip = |s: &str| s.parse::<IpAddr>().unwrap();
    let key = |v: &str| FrontendKey {
        vip: vip(v),
        port: 9000,
        protocol: Protocol::Tcp,
    };
    assert_eq!(
        d.owners,
        Owners {
            frontends: BTreeMap::from([
                (key("192.0.2.10"), gw.clone()),
                (key("192.0.2.11"), second.clone())
            ]),
            tls: BTreeMap::from([((vip("192.0.2.10"), 443), gw.clone())]),
        }
    );
    assert_eq!(d.owners.of_frontend(&d.frontends[1]), Some(&second));
    assert_eq!(d.owners.of_tls(&d.tls[0]), Some(&gw));
}

#[test]
fn statuses_phase_writes_classes_gateways_and_routes_with_a_blixt_parent_or_entry() {
    let yaml = [
        CLASS.to_string(),
        class("unused", CONTROLLER_NAME, None),
        gw("ns", "gw", "blixt", 1, TCP_9000),
        route("TCPRoute", "ns", "attached", "{name: gw}", &[]),
        route("TCPRoute", "ns", "elsewhere", "{name: foreign}", &[]),
        route("UDPRoute", "ns", "stale", "{name: foreign}", &[]),
    ]
    .concat();
    let mut objects = objects(&yaml);
    // The UDPRoute still shows an entry of Blixt's, to be cleared.
    let stale = std::sync::Arc::make_mut(&mut objects.udp_routes[0]);
    stale.status = Some(UdpRouteStatus {
        parents: vec![UdpRouteStatusParents {
            conditions: Vec::new(),
            controller_name: CONTROLLER_NAME.into(),
            parent_ref: UdpRouteStatusParentsParentRef {
                name: "gw".into(),
                ..Default::default()
            },
        }],
    });
    let config = config_v4();
    let (classes, mut gateways, routes) = through_routes(&objects, &config);
    count_attached_routes(&mut gateways, &routes);

    let s = build_statuses(&objects, &classes, &gateways, &routes, &config, &now());
    assert_eq!(
        s.gateway_classes.keys().collect::<Vec<_>>(),
        ["blixt", "unused"]
    );
    assert!(s.gateway_classes["blixt"].finalizer);
    assert!(!s.gateway_classes["unused"].finalizer);
    let features = s.gateway_classes["blixt"]
        .status
        .supported_features
        .as_ref()
        .unwrap();
    assert_eq!(features.len(), SUPPORTED_FEATURES.len());
    let gw = &s.gateways[&ObjectKey::new("ns", "gw")];
    assert_eq!(
        summary(gw.conditions.as_deref().unwrap()),
        expect(&[ACCEPTED_TRUE, PROGRAMMED_TRUE])
    );
    assert_eq!(gw.listeners.as_ref().unwrap()[0].attached_routes, 1);
    assert_eq!(
        s.tcp_routes.keys().collect::<Vec<_>>(),
        [&ObjectKey::new("ns", "attached")]
    );
    let stale = &s.udp_routes[&ObjectKey::new("ns", "stale")];
    assert!(stale.parents.is_empty(), "the stale entry is cleared");
    assert!(s.tls_routes.is_empty());
}
