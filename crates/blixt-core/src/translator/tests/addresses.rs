//! Gateway addresses and the Gateway's Programmed reasons.

use super::*;

const L: &str = "  - {name: tcp, protocol: TCP, port: 9000}";

fn status_addresses(t: &Translation, ns: &str, name: &str) -> Vec<String> {
    t.statuses.gateways[&ObjectKey::new(ns, name)]
        .addresses
        .iter()
        .flatten()
        .map(|a| {
            assert_eq!(a.r#type.as_deref(), Some("IPAddress"));
            a.value.clone()
        })
        .collect()
}

fn with_addresses(ns: &str, name: &str, addresses: &str) -> String {
    gateway(ns, name, L).replace("spec:\n", &format!("spec:\n  addresses:\n{addresses}\n"))
}

#[test]
fn pool_allocation_is_dual_stack_and_ordered_by_name() {
    let yaml = [
        CLASS.to_string(),
        gateway("b", "gw", L),
        gateway("a", "gw", L),
    ]
    .concat();
    let mut cfg = config();
    cfg.address_pool.extend([
        "192.0.2.11".parse::<IpAddr>().unwrap(),
        "2001:db8::11".parse().unwrap(),
    ]);
    let t = run_with(&yaml, &cfg);
    assert_eq!(
        status_addresses(&t, "a", "gw"),
        ["192.0.2.10", "2001:db8::10"]
    );
    assert_eq!(
        status_addresses(&t, "b", "gw"),
        ["192.0.2.11", "2001:db8::11"]
    );
    // A listener on a dual-stack Gateway: one frontend per address.
    let keys: Vec<_> = t
        .snapshot
        .frontends
        .iter()
        .map(|f| (f.name.as_str(), f.key.vip.to_string()))
        .collect();
    assert_eq!(
        keys,
        [
            ("a/gw/tcp", "192.0.2.10".to_string()),
            ("b/gw/tcp", "192.0.2.11".to_string()),
            ("a/gw/tcp", "2001:db8::10".to_string()),
            ("b/gw/tcp", "2001:db8::11".to_string()),
        ]
    );
}

#[test]
fn allocation_is_sticky() {
    // b/gw already holds .10; a new Gateway a/gw sorts first but must not take it.
    let b =
        gateway("b", "gw", L) + "status:\n  addresses: [{type: IPAddress, value: 192.0.2.10}]\n";
    let yaml = [CLASS.to_string(), b, gateway("a", "gw", L)].concat();
    let t = run(&yaml);
    assert_eq!(status_addresses(&t, "b", "gw"), ["192.0.2.10"]);
    assert_eq!(status_addresses(&t, "a", "gw"), ["192.0.2.11"]);
}

#[test]
fn pool_exhausted_is_address_not_assigned() {
    let mut cfg = config_v4();
    cfg.address_pool.truncate(1);
    let yaml = [
        CLASS.to_string(),
        gateway("a", "gw", L),
        gateway("b", "gw", L),
    ]
    .concat();
    let t = run_with(&yaml, &cfg);
    assert_eq!(
        gateway_conds(&t, "a", "gw"),
        expect(&[ACCEPTED_TRUE, PROGRAMMED_TRUE])
    );
    assert_eq!(
        gateway_conds(&t, "b", "gw"),
        expect(&[ACCEPTED_TRUE, ("Programmed", "False", "AddressNotAssigned")])
    );
    assert_eq!(
        listener_conds(&t, "b", "gw", "tcp"),
        expect(&[
            ACCEPTED_TRUE,
            ("Programmed", "False", "Pending"),
            RESOLVED_TRUE,
            NO_CONFLICTS
        ])
    );
    assert!(status_addresses(&t, "b", "gw").is_empty());
    assert_eq!(t.snapshot.frontends.len(), 1);
}

#[test]
fn static_address_is_used_as_given() {
    let yaml = [
        CLASS.to_string(),
        with_addresses("infra", "gw", "  - {type: IPAddress, value: 198.51.100.7}"),
    ]
    .concat();
    let t = run_with(&yaml, &static_ranges(&["198.51.100.0/24"]));
    assert_eq!(
        gateway_conds(&t, "infra", "gw"),
        expect(&[ACCEPTED_TRUE, PROGRAMMED_TRUE])
    );
    assert_eq!(status_addresses(&t, "infra", "gw"), ["198.51.100.7"]);
    assert_eq!(t.snapshot.frontends[0].key.vip.to_string(), "198.51.100.7");
}

#[test]
fn empty_address_value_is_allocated_from_the_pool() {
    // GatewayAddressEmpty: `type: IPAddress` without a value.
    let yaml = [
        CLASS.to_string(),
        with_addresses("infra", "gw", "  - {type: IPAddress}"),
    ]
    .concat();
    let t = run_with(&yaml, &config());
    assert_eq!(status_addresses(&t, "infra", "gw"), ["192.0.2.10"]);
    let mut cfg = config();
    cfg.address_pool.clear();
    let t = run_with(&yaml, &cfg);
    assert_eq!(gateway_conds(&t, "infra", "gw")[1].2, "AddressNotAssigned");
}

#[test]
fn hostname_address_is_unsupported() {
    // gateway-static-addresses, step 1: an address type Blixt does not support.
    let yaml = [
        CLASS.to_string(),
        with_addresses(
            "infra",
            "gw",
            "  - {type: test/fake-invalid-type, value: \"fake address teehee!\"}\n  - {value: 198.51.100.7}",
        ),
        with_addresses("infra", "gw2", "  - {type: Hostname, value: lb.example.com}"),
        with_addresses("infra", "gw3", "  - {type: IPAddress, value: not-an-ip}"),
    ]
    .concat();
    let t = run(&yaml);
    for gw in ["gw", "gw2", "gw3"] {
        assert_eq!(
            gateway_conds(&t, "infra", gw),
            expect(&[
                ("Accepted", "False", "UnsupportedAddress"),
                ("Programmed", "False", "Invalid")
            ]),
            "{gw}"
        );
        assert!(status_addresses(&t, "infra", gw).is_empty());
    }
    assert!(t.snapshot.frontends.is_empty());
}

#[test]
fn unusable_static_address_blocks_programming() {
    // gateway-static-addresses, step 2: one usable and one unusable address.
    let mut cfg = config_v4();
    cfg.static_address_ranges = vec!["198.51.100.0/24".parse().unwrap()];
    let yaml = [
        CLASS.to_string(),
        with_addresses(
            "infra",
            "gw",
            "  - {value: 203.0.113.1}\n  - {value: 198.51.100.7}",
        ),
    ]
    .concat();
    let t = run_with(&yaml, &cfg);
    assert_eq!(
        gateway_conds(&t, "infra", "gw"),
        expect(&[ACCEPTED_TRUE, ("Programmed", "False", "AddressNotUsable")])
    );
    assert_eq!(
        status_addresses(&t, "infra", "gw"),
        ["198.51.100.7"],
        "only usable addresses are reported"
    );
    assert!(t.snapshot.frontends.is_empty());

    // Step 3: the unusable address removed.
    let yaml = [
        CLASS.to_string(),
        with_addresses("infra", "gw", "  - {value: 198.51.100.7}"),
    ]
    .concat();
    let t = run_with(&yaml, &cfg);
    assert_eq!(
        gateway_conds(&t, "infra", "gw"),
        expect(&[ACCEPTED_TRUE, PROGRAMMED_TRUE])
    );
    assert_eq!(
        listener_conds(&t, "infra", "gw", "tcp"),
        expect(&LISTENER_OK)
    );
}

#[test]
fn static_address_in_use_by_an_older_gateway_is_not_usable() {
    let older = with_addresses("infra", "old", "  - {value: 198.51.100.7}").replace(
        "generation: 3}",
        "generation: 3, creationTimestamp: \"2024-01-01T00:00:00Z\"}",
    );
    let newer = with_addresses("infra", "a-new", "  - {value: 198.51.100.7}").replace(
        "generation: 3}",
        "generation: 3, creationTimestamp: \"2024-06-01T00:00:00Z\"}",
    );
    let t = run_with(
        &[CLASS.to_string(), newer, older].concat(),
        &static_ranges(&["198.51.100.0/24"]),
    );
    assert_eq!(
        gateway_conds(&t, "infra", "old"),
        expect(&[ACCEPTED_TRUE, PROGRAMMED_TRUE])
    );
    assert_eq!(
        gateway_conds(&t, "infra", "a-new"),
        expect(&[ACCEPTED_TRUE, ("Programmed", "False", "AddressNotUsable")])
    );
}

#[test]
fn infrastructure_parameters_ref_is_invalid_parameters() {
    // gateway-invalid-parameters-ref.
    let yaml = [
        CLASS.to_string(),
        gateway("infra", "gw", L)
            + "  infrastructure:\n    parametersRef: {group: invalid.io, kind: InvalidParameters, name: invalid}\n",
    ]
    .concat();
    let t = run(&yaml);
    assert_eq!(
        gateway_conds(&t, "infra", "gw"),
        expect(&[
            ("Accepted", "False", "InvalidParameters"),
            ("Programmed", "False", "Invalid")
        ])
    );
}

#[test]
fn frontend_limit_is_no_resources_for_the_newest() {
    let mut cfg = config_v4();
    cfg.max_frontends = Some(2);
    let two =
        "  - {name: tcp, protocol: TCP, port: 9000}\n  - {name: udp, protocol: UDP, port: 9000}";
    let old = gateway("z", "old", two).replace(
        "generation: 3}",
        "generation: 3, creationTimestamp: \"2024-01-01T00:00:00Z\"}",
    );
    let new = gateway("a", "new", L).replace(
        "generation: 3}",
        "generation: 3, creationTimestamp: \"2024-02-01T00:00:00Z\"}",
    );
    let t = run_with(&[CLASS.to_string(), new, old].concat(), &cfg);
    assert_eq!(
        gateway_conds(&t, "z", "old"),
        expect(&[ACCEPTED_TRUE, PROGRAMMED_TRUE])
    );
    assert_eq!(
        gateway_conds(&t, "a", "new"),
        expect(&[ACCEPTED_TRUE, ("Programmed", "False", "NoResources")])
    );
    assert_eq!(t.snapshot.frontends.len(), 2);
}
