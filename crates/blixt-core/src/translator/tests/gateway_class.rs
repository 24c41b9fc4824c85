//! GatewayClass: controllerName matching, Accepted reasons, supportedFeatures, finalizer.

use super::*;

const OTHER_CLASS: &str = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.net/gateway-controller}
"#;

#[test]
fn own_class_is_accepted_with_sorted_features_and_others_are_ignored() {
    let mut cfg = config_v4();
    cfg.supported_features = vec![
        "UDPRoute".into(),
        "Gateway".into(),
        "TCPRoute".into(),
        "Gateway".into(),
    ];
    let t = run_with(&[CLASS, OTHER_CLASS].concat(), &cfg);
    assert_eq!(
        t.statuses.gateway_classes.keys().collect::<Vec<_>>(),
        ["blixt"]
    );
    let gc = &t.statuses.gateway_classes["blixt"];
    let conds = gc.status.conditions.as_ref().unwrap();
    assert_eq!(summary(conds), expect(&[ACCEPTED_TRUE]));
    assert_eq!(conds[0].observed_generation, Some(1));
    assert_eq!(conds[0].last_transition_time, now());
    let features: Vec<_> = gc
        .status
        .supported_features
        .iter()
        .flatten()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(features, ["Gateway", "TCPRoute", "UDPRoute"]);
    assert!(!gc.finalizer, "no Gateway uses the class");
}

#[test]
fn default_supported_features() {
    let t = run(CLASS);
    let features: Vec<_> = t.statuses.gateway_classes["blixt"]
        .status
        .supported_features
        .iter()
        .flatten()
        .map(|f| f.name.clone())
        .collect();
    assert_eq!(
        features,
        [
            "Gateway",
            "GatewayAddressEmpty",
            "GatewayRouteHostnameIntersectionPrecedence",
            "GatewayStaticAddresses",
            "ReferenceGrant",
            "TCPRoute",
            "TLSRoute",
            "UDPRoute"
        ]
    );
}

#[test]
fn parameters_ref_is_invalid_parameters() {
    let t = run(r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: blixt}
spec:
  controllerName: blixt.dev/gateway-controller
  parametersRef: {group: example.net, kind: Params, name: p}
"#);
    let gc = &t.statuses.gateway_classes["blixt"];
    assert_eq!(
        summary(gc.status.conditions.as_ref().unwrap()),
        expect(&[("Accepted", "False", "InvalidParameters")])
    );
    assert_eq!(gc.status.supported_features, None);
}

fn pool_class(pool: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: blixt}}\nspec:\n  controllerName: blixt.dev/gateway-controller\n  parametersRef: {{group: blixt.dev, kind: AddressPool, name: {pool}}}\n"
    )
}

#[test]
fn address_pool_parameters_select_the_pool() {
    let yaml = pool_class("edge")
        + &gateway("infra", "gw", "  - {name: tcp, protocol: TCP, port: 9000}")
        + &gateway("infra", "gw2", "  - {name: tcp, protocol: TCP, port: 9000}");
    let mut objects = objects(&yaml);
    objects.address_pools.insert(
        "edge".into(),
        ExpandedAddressPool {
            addresses: vec!["198.51.100.7".parse().unwrap()],
            delegate_to_load_balancer: false,
            ..Default::default()
        },
    );
    let t = run_index(&objects, &config_v4());
    assert_eq!(
        summary(
            t.statuses.gateway_classes["blixt"]
                .status
                .conditions
                .as_ref()
                .unwrap()
        ),
        expect(&[("Accepted", "True", "Accepted")])
    );
    let gw = &t.statuses.gateways[&ObjectKey::new("infra", "gw")];
    let addrs: Vec<&str> = gw
        .addresses
        .iter()
        .flatten()
        .map(|a| a.value.as_str())
        .collect();
    assert_eq!(
        addrs,
        ["198.51.100.7"],
        "from the class's pool, not the default one"
    );
    // the pool has one address: the second Gateway gets none
    assert_eq!(
        gateway_conds(&t, "infra", "gw2")[1],
        (
            "Programmed".into(),
            "False".into(),
            "AddressNotAssigned".into()
        )
    );
}

#[test]
fn missing_address_pool_is_invalid_parameters() {
    let t = run(&pool_class("nope"));
    let c = &t.statuses.gateway_classes["blixt"]
        .status
        .conditions
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "InvalidParameters")
    );
    assert!(c.message.contains("\"nope\" not found"), "{}", c.message);
}

#[test]
fn class_not_in_configured_names_is_unsupported() {
    let mut cfg = config_v4();
    cfg.gateway_class_names = Some(["blixt-internal".to_string()].into());
    let t = run_with(CLASS, &cfg);
    assert_eq!(
        summary(
            t.statuses.gateway_classes["blixt"]
                .status
                .conditions
                .as_ref()
                .unwrap()
        ),
        expect(&[("Accepted", "False", "Unsupported")])
    );
}

#[test]
fn finalizer_while_a_gateway_uses_the_class() {
    let t = run(&[
        CLASS.to_string(),
        gateway("infra", "gw", "  - {name: tcp, protocol: TCP, port: 9000}"),
    ]
    .concat());
    assert!(t.statuses.gateway_classes["blixt"].finalizer);
}

#[test]
fn gateway_of_unaccepted_class_is_pending_and_not_programmed() {
    let yaml = [
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: blixt}
spec:
  controllerName: blixt.dev/gateway-controller
  parametersRef: {group: example.net, kind: Params, name: p}
"#
        .to_string(),
        gateway("infra", "gw", "  - {name: tcp, protocol: TCP, port: 9000}"),
    ]
    .concat();
    let t = run(&yaml);
    assert_eq!(
        gateway_conds(&t, "infra", "gw"),
        expect(&[
            ("Accepted", "Unknown", "Pending"),
            ("Programmed", "False", "Pending")
        ])
    );
    assert_eq!(
        listener_conds(&t, "infra", "gw", "tcp"),
        expect(&[
            ACCEPTED_TRUE,
            ("Programmed", "False", "Pending"),
            RESOLVED_TRUE,
            NO_CONFLICTS
        ])
    );
    assert!(t.snapshot.frontends.is_empty());
    assert_eq!(
        t.statuses.gateways[&ObjectKey::new("infra", "gw")].addresses,
        None
    );
}

#[test]
fn gateways_of_other_classes_get_no_status() {
    let yaml = [
        OTHER_CLASS.to_string(),
        gateway("infra", "gw", "  - {name: tcp, protocol: TCP, port: 9000}"),
    ]
    .concat()
    .replace("gatewayClassName: blixt", "gatewayClassName: other");
    let t = run(&yaml);
    assert!(t.statuses.gateways.is_empty());
    assert!(t.statuses.gateway_classes.is_empty());
    assert!(t.snapshot.frontends.is_empty());
}

#[test]
fn unchanged_condition_keeps_its_transition_time_and_a_changed_one_gets_now() {
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: blixt, generation: 4}
spec: {controllerName: blixt.dev/gateway-controller}
status:
  conditions:
  - {type: Accepted, status: "True", reason: Accepted, message: old, observedGeneration: 3, lastTransitionTime: "2020-01-01T00:00:00Z"}
"#;
    let t = run(yaml);
    let c = &t.statuses.gateway_classes["blixt"]
        .status
        .conditions
        .as_ref()
        .unwrap()[0];
    assert_eq!(c.last_transition_time.0.to_string(), "2020-01-01T00:00:00Z");
    assert_eq!(
        c.observed_generation,
        Some(4),
        "observedGeneration follows the object"
    );

    let changed = yaml
        .replace("reason: Accepted, message", "reason: Pending, message")
        .replace(
            "status: \"True\", reason: Pending",
            "status: \"Unknown\", reason: Pending",
        );
    let t = run(&changed);
    let c = &t.statuses.gateway_classes["blixt"]
        .status
        .conditions
        .as_ref()
        .unwrap()[0];
    assert_eq!(c.last_transition_time, now());
}
