//! Address delegation to a Service of type LoadBalancer: the Gateways of a class whose
//! AddressPool delegates take their addresses from the controller-provided
//! `ObjectIndex::delegated_addresses` and are listed in `Translation::delegations`; no API server.

use super::*;

const LB_CLASS: &str = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: blixt, generation: 1}\nspec:\n  controllerName: blixt.dev/gateway-controller\n  parametersRef: {group: blixt.dev, kind: AddressPool, name: lb}\n";

const LISTENERS: &str = "  - {name: tcp, protocol: TCP, port: 80}\n  - {name: dns, protocol: UDP, port: 53}\n  - {name: tls, protocol: TLS, port: 443, tls: {mode: Passthrough}}\n  - {name: web, protocol: HTTP, port: 8080}";

/// The objects of `yaml`, with the delegating AddressPool `lb` observed.
fn delegating(yaml: &str) -> ObjectIndex {
    let mut o = objects(yaml);
    o.address_pools.insert(
        "lb".into(),
        ExpandedAddressPool {
            addresses: Vec::new(),
            delegate_to_load_balancer: true,
            ..Default::default()
        },
    );
    o
}

#[test]
fn without_an_address_from_the_load_balancer_the_gateway_is_not_assigned_one() {
    let yaml = [LB_CLASS.to_string(), gateway("ns", "gw", LISTENERS)].concat();
    let t = run_index(&delegating(&yaml), &config_v4());
    let conds = gateway_conds(&t, "ns", "gw");
    // Accepted (the HTTP listener is not valid, and its port is not delegated).
    assert_eq!(
        (conds[0].0.as_str(), conds[0].1.as_str()),
        ("Accepted", "True")
    );
    assert_eq!(
        conds[1],
        (
            "Programmed".into(),
            "False".into(),
            "AddressNotAssigned".into()
        )
    );
    let programmed = &t.statuses.gateways[&ObjectKey::new("ns", "gw")]
        .conditions
        .as_ref()
        .unwrap()[1];
    assert!(
        programmed.message.contains("Service ns/blixt-gw"),
        "{}",
        programmed.message
    );
    // Not from Blixt's own pool, although config_v4 has one.
    assert!(t.statuses.gateways[&ObjectKey::new("ns", "gw")]
        .addresses
        .is_none());
    assert!(t.snapshot.frontends.is_empty() && t.tls.is_empty());
    assert_eq!(
        t.delegations,
        [Delegation {
            gateway: ObjectKey::new("ns", "gw"),
            service: "blixt-gw".into(),
            ports: vec![
                (Protocol::Tcp, 80),
                (Protocol::Tcp, 443),
                (Protocol::Udp, 53)
            ],
            addresses: vec![],
        }]
    );
}

#[test]
fn the_load_balancers_address_becomes_the_gateways() {
    let mut delegated = BTreeMap::new();
    delegated.insert(
        ObjectKey::new("ns", "gw"),
        vec![
            "203.0.113.7".parse().unwrap(),
            "203.0.113.7".parse().unwrap(),
        ],
    );
    let yaml = [
        LB_CLASS.to_string(),
        gateway("ns", "gw", LISTENERS),
        service("ns", "app", 8080, "TCP", 8080, &["10.0.0.1"]),
        route(
            "TCPRoute",
            "ns",
            "r",
            "{name: gw, sectionName: tcp}",
            &["{name: app, port: 8080}"],
        ),
    ]
    .concat();
    let t = run_index(
        &ObjectIndex {
            delegated_addresses: delegated,
            ..delegating(&yaml)
        },
        &config_v4(),
    );
    assert_eq!(
        gateway_conds(&t, "ns", "gw")[1],
        ("Programmed".into(), "True".into(), "Programmed".into())
    );
    let status = &t.statuses.gateways[&ObjectKey::new("ns", "gw")];
    let addrs: Vec<&str> = status
        .addresses
        .iter()
        .flatten()
        .map(|a| a.value.as_str())
        .collect();
    assert_eq!(addrs, ["203.0.113.7"]);
    let vips: BTreeSet<IpAddr> = t.snapshot.frontends.iter().map(|f| f.key.vip).collect();
    assert_eq!(vips, BTreeSet::from(["203.0.113.7".parse().unwrap()]));
    assert_eq!(
        t.delegations[0].addresses,
        ["203.0.113.7".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn static_addresses_and_addresses_held_by_other_gateways_are_not_usable() {
    let mut delegated = BTreeMap::new();
    delegated.insert(
        ObjectKey::new("ns", "gw"),
        vec!["192.0.2.99".parse().unwrap()],
    );
    // Another class allocating from Blixt's pool, with a static address the load balancer also
    // handed out.
    let other_class = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: own, generation: 1}\nspec:\n  controllerName: blixt.dev/gateway-controller\n";
    let own = gateway("ns", "own", "  - {name: tcp, protocol: TCP, port: 9000}")
        .replace("gatewayClassName: blixt", "gatewayClassName: own")
        .replace(
            "spec:\n",
            "spec:\n  addresses: [{type: IPAddress, value: 192.0.2.99}]\n",
        );
    let fixed = gateway("ns", "fixed", "  - {name: tcp, protocol: TCP, port: 9000}").replace(
        "spec:\n",
        "spec:\n  addresses: [{type: IPAddress, value: 192.0.2.50}]\n",
    );
    let yaml = [
        LB_CLASS.to_string(),
        other_class.to_string(),
        own,
        gateway("ns", "gw", LISTENERS),
        fixed,
    ]
    .concat();
    let t = run_index(
        &ObjectIndex {
            delegated_addresses: delegated,
            ..delegating(&yaml)
        },
        &TranslatorConfig {
            static_address_ranges: vec!["192.0.2.0/24".parse().unwrap()],
            ..config_v4()
        },
    );
    assert_eq!(
        gateway_conds(&t, "ns", "own")[1],
        ("Programmed".into(), "True".into(), "Programmed".into())
    );
    for gw in ["gw", "fixed"] {
        assert_eq!(
            gateway_conds(&t, "ns", gw)[1],
            (
                "Programmed".into(),
                "False".into(),
                "AddressNotUsable".into()
            ),
            "{gw}"
        );
    }
    let vips: BTreeSet<IpAddr> = t.snapshot.frontends.iter().map(|f| f.key.vip).collect();
    assert_eq!(vips, BTreeSet::from(["192.0.2.99".parse().unwrap()]));
}
