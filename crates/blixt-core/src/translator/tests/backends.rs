//! Backend resolution: ResolvedRefs reasons, ReferenceGrants, EndpointSlices, weights and
//! rejection shares.

use super::*;

fn gw() -> String {
    [
        CLASS.to_string(),
        gateway(
            "infra",
            "gw",
            "  - {name: tcp, protocol: TCP, port: 9000}\n  - {name: udp, protocol: UDP, port: 9000}",
        ),
    ]
    .concat()
}

fn tcp(backends: &[&str]) -> String {
    route(
        "TCPRoute",
        "infra",
        "r",
        "{name: gw, sectionName: tcp}",
        backends,
    )
}

fn frontend<'t>(t: &'t Translation, name: &str) -> &'t Frontend {
    t.snapshot
        .frontends
        .iter()
        .find(|f| f.name == name && f.key.vip.is_ipv4())
        .unwrap_or_else(|| panic!("no IPv4 frontend {name}: {:?}", t.snapshot.frontends))
}

const GRANT_TCP: &str = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: allow-infra, namespace: web}
spec:
  from: [{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: infra}]
  to: [{group: "", kind: Service}]
"#;

#[test]
fn nonexistent_service_is_backend_not_found_and_rejects_everything() {
    // tcproute-invalid-backendref-nonexistent.
    let t = run(&(gw() + &tcp(&["{name: nonexistent-service, port: 8080}"])));
    assert_eq!(
        route_conds(&t, "TCPRoute", "infra", "r"),
        expect(&[ACCEPTED_TRUE, ("ResolvedRefs", "False", "BackendNotFound")])
    );
    assert_eq!(
        frontend(&t, "infra/gw/tcp"),
        &fe("infra/gw/tcp", "192.0.2.10", 9000, Protocol::Tcp, vec![], 1)
    );
    assert_eq!(attached(&t, "infra", "gw", "tcp"), 1);
}

#[test]
fn missing_port_and_unknown_service_port_are_backend_not_found() {
    let yaml = gw()
        + &service("infra", "svc", 80, "TCP", 8080, &["10.0.0.1"])
        + &tcp(&["{name: svc}"])
        + &route(
            "TCPRoute",
            "infra",
            "r2",
            "{name: gw, sectionName: tcp}",
            &["{name: svc, port: 81}"],
        );
    let t = run(&yaml);
    for r in ["r", "r2"] {
        assert_eq!(
            route_conds(&t, "TCPRoute", "infra", r)[1].2,
            "BackendNotFound",
            "{r}"
        );
    }
}

#[test]
fn cross_namespace_without_grant_is_ref_not_permitted() {
    // tcproute-invalid-cross-namespace-backend-ref.
    let yaml =
        gw() + &service(
            "web",
            "tcp-invalid-xns-backend",
            3000,
            "TCP",
            3000,
            &["10.1.0.1"],
        ) + &tcp(&["{name: tcp-invalid-xns-backend, namespace: web, port: 3000}"]);
    let t = run(&yaml);
    assert_eq!(
        route_conds(&t, "TCPRoute", "infra", "r"),
        expect(&[ACCEPTED_TRUE, ("ResolvedRefs", "False", "RefNotPermitted")])
    );
    assert_eq!(frontend(&t, "infra/gw/tcp").backends, vec![]);
    assert_eq!(frontend(&t, "infra/gw/tcp").reject_weight, 1);
}

#[test]
fn reference_grant_permits_and_its_removal_revokes() {
    // tcproute-reference-grant / udproute-reference-grant.
    let without = gw()
        + &service("web", "backend", 3000, "TCP", 3000, &["10.1.0.1"])
        + &tcp(&["{name: backend, namespace: web, port: 3000}"]);
    let with = without.clone() + GRANT_TCP;
    let t = run(&with);
    assert_eq!(
        route_conds(&t, "TCPRoute", "infra", "r"),
        expect(&[ACCEPTED_TRUE, RESOLVED_TRUE])
    );
    assert_eq!(
        frontend(&t, "infra/gw/tcp").backends,
        vec![be("10.1.0.1", 3000, 1)]
    );
    let t = run(&without);
    assert_eq!(
        route_conds(&t, "TCPRoute", "infra", "r")[1].2,
        "RefNotPermitted"
    );
    assert_eq!(
        frontend(&t, "infra/gw/tcp").backends,
        vec![],
        "traffic stops with the grant"
    );
}

#[test]
fn grant_must_match_kind_namespace_and_name() {
    let base = gw()
        + &service("web", "backend", 3000, "TCP", 3000, &["10.1.0.1"])
        + &tcp(&["{name: backend, namespace: web, port: 3000}"]);
    let cases = [
        // (grant variation, permitted)
        (GRANT_TCP.replace("kind: TCPRoute", "kind: UDPRoute"), false),
        (
            GRANT_TCP.replace("namespace: infra}", "namespace: elsewhere}"),
            false,
        ),
        (
            GRANT_TCP.replace("namespace: web}", "namespace: infra}"),
            false,
        ),
        (
            GRANT_TCP.replace("kind: Service}", "kind: Service, name: other}"),
            false,
        ),
        (
            GRANT_TCP.replace("kind: Service}", "kind: Service, name: backend}"),
            true,
        ),
        (
            GRANT_TCP.replace(
                "from: [",
                "from: [{group: gateway.networking.k8s.io, kind: UDPRoute, namespace: infra}, ",
            ),
            true,
        ),
        (
            GRANT_TCP.replace("group: \"\", kind: Service", "group: \"\", kind: Secret"),
            false,
        ),
    ];
    for (grant, ok) in cases {
        let t = run(&(base.clone() + &grant));
        let want = if ok {
            "ResolvedRefs"
        } else {
            "RefNotPermitted"
        };
        assert_eq!(
            route_conds(&t, "TCPRoute", "infra", "r")[1].2,
            want,
            "{grant}"
        );
    }
}

#[test]
fn unknown_kind_is_invalid_kind() {
    // tlsroute-invalid-backendref-unknown-kind, on a TCPRoute.
    let t = run(&(gw() + &tcp(&["{group: unknown.io, kind: Unknown, name: x, port: 80}"])));
    assert_eq!(
        route_conds(&t, "TCPRoute", "infra", "r"),
        expect(&[ACCEPTED_TRUE, ("ResolvedRefs", "False", "InvalidKind")])
    );
}

#[test]
fn service_port_of_the_wrong_protocol_is_unsupported_protocol() {
    let yaml = gw()
        + &service("infra", "dns", 53, "UDP", 53, &["10.0.0.1"])
        + &tcp(&["{name: dns, port: 53}"])
        + &route(
            "UDPRoute",
            "infra",
            "u",
            "{name: gw, sectionName: udp}",
            &["{name: dns, port: 53}"],
        );
    let t = run(&yaml);
    assert_eq!(
        route_conds(&t, "TCPRoute", "infra", "r"),
        expect(&[
            ACCEPTED_TRUE,
            ("ResolvedRefs", "False", "UnsupportedProtocol")
        ])
    );
    assert_eq!(
        route_conds(&t, "UDPRoute", "infra", "u"),
        expect(&[ACCEPTED_TRUE, RESOLVED_TRUE])
    );
    assert_eq!(
        frontend(&t, "infra/gw/udp").backends,
        vec![be("10.0.0.1", 53, 1)]
    );
}

#[test]
fn same_port_number_for_tcp_and_udp_resolves_each_route_to_its_protocol() {
    // like kube-dns: port 53 twice, TCP and UDP, with differently named slice ports
    let svc = "---\napiVersion: v1\nkind: Service\nmetadata: {name: dns, namespace: infra}\nspec:\n  ports:\n  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 5353}\n  - {name: dns, port: 53, protocol: UDP, targetPort: 5354}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: dns-1\n  namespace: infra\n  labels: {kubernetes.io/service-name: dns}\naddressType: IPv4\nports:\n- {name: dns-tcp, port: 5353, protocol: TCP}\n- {name: dns, port: 5354, protocol: UDP}\nendpoints:\n- addresses: [\"10.0.0.1\"]\n  conditions: {ready: true}\n";
    let yaml = gw()
        + svc
        + &tcp(&["{name: dns, port: 53}"])
        + &route(
            "UDPRoute",
            "infra",
            "u",
            "{name: gw, sectionName: udp}",
            &["{name: dns, port: 53}"],
        );
    let t = run(&yaml);
    assert_eq!(
        route_conds(&t, "TCPRoute", "infra", "r"),
        expect(&[ACCEPTED_TRUE, RESOLVED_TRUE])
    );
    assert_eq!(
        route_conds(&t, "UDPRoute", "infra", "u"),
        expect(&[ACCEPTED_TRUE, RESOLVED_TRUE])
    );
    assert_eq!(
        frontend(&t, "infra/gw/tcp").backends,
        vec![be("10.0.0.1", 5353, 1)]
    );
    assert_eq!(
        frontend(&t, "infra/gw/udp").backends,
        vec![be("10.0.0.1", 5354, 1)]
    );
}

#[test]
fn first_invalid_ref_gives_the_reason() {
    let t = run(&(gw() + &tcp(&["{name: a, namespace: web, port: 1}", "{name: b, port: 1}"])));
    let s = &t.statuses.tcp_routes[&ObjectKey::new("infra", "r")].parents[0].conditions[1];
    assert_eq!(s.reason, "RefNotPermitted");
    assert!(
        s.message.contains("web/a") && s.message.contains("infra/b not found"),
        "{}",
        s.message
    );
}

#[test]
fn weighted_70_30_0() {
    // tcproute-weighted-routing / udproute-weighted-routing.
    let yaml = gw()
        + &service("infra", "v1", 3000, "TCP", 3000, &["10.0.1.1", "10.0.1.2"])
        + &service("infra", "v2", 3000, "TCP", 3000, &["10.0.2.1"])
        + &service("infra", "v3", 3000, "TCP", 3000, &["10.0.3.1"])
        + &tcp(&[
            "{name: v1, port: 3000, weight: 70}",
            "{name: v2, port: 3000, weight: 30}",
            "{name: v3, port: 3000, weight: 0}",
        ]);
    let t = run(&yaml);
    assert_eq!(
        frontend(&t, "infra/gw/tcp").backends,
        vec![
            be("10.0.1.1", 3000, 7),
            be("10.0.1.2", 3000, 7),
            be("10.0.2.1", 3000, 6),
            be("10.0.3.1", 3000, 0),
        ]
    );
    assert_eq!(frontend(&t, "infra/gw/tcp").reject_weight, 0);
}

#[test]
fn invalid_share_is_rejected_by_weight() {
    let yaml = gw()
        + &service("infra", "ok", 80, "TCP", 8080, &["10.0.0.1"])
        + &tcp(&[
            "{name: ok, port: 80, weight: 80}",
            "{name: gone, port: 80, weight: 20}",
        ]);
    let t = run(&yaml);
    assert_eq!(
        route_conds(&t, "TCPRoute", "infra", "r"),
        expect(&[ACCEPTED_TRUE, ("ResolvedRefs", "False", "BackendNotFound")])
    );
    let f = frontend(&t, "infra/gw/tcp");
    assert_eq!(
        (f.backends.clone(), f.reject_weight),
        (vec![be("10.0.0.1", 8080, 4)], 1)
    );
}

#[test]
fn service_without_endpoints_is_resolved_but_rejected() {
    let yaml = gw()
        + "---\napiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: infra}\nspec: {ports: [{port: 80}]}\n"
        + &service("infra", "ok", 80, "TCP", 8080, &["10.0.0.1"])
        + &tcp(&["{name: ok, port: 80}", "{name: empty, port: 80, weight: 3}"]);
    let t = run(&yaml);
    assert_eq!(
        route_conds(&t, "TCPRoute", "infra", "r"),
        expect(&[ACCEPTED_TRUE, RESOLVED_TRUE])
    );
    let f = frontend(&t, "infra/gw/tcp");
    assert_eq!(
        (f.backends.clone(), f.reject_weight),
        (vec![be("10.0.0.1", 8080, 1)], 3)
    );
}

#[test]
fn endpoint_conditions_and_port_names() {
    let yaml = gw()
        + r#"---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: infra}
spec:
  ports:
  - {name: metrics, port: 9090, targetPort: 9090}
  - {name: data, port: 80, targetPort: http}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-1, namespace: infra, labels: {kubernetes.io/service-name: svc}}
addressType: IPv4
ports: [{name: metrics, port: 9090}, {name: data, port: 8080}]
endpoints:
- {addresses: [10.0.0.1], conditions: {ready: true}}
- {addresses: [10.0.0.2]}
- {addresses: [10.0.0.3], conditions: {ready: false, serving: true, terminating: true}}
- {addresses: [10.0.0.4], conditions: {ready: false, serving: false, terminating: true}}
- {addresses: [10.0.0.5], conditions: {ready: false}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-2, namespace: infra, labels: {kubernetes.io/service-name: svc}}
addressType: IPv4
ports: [{name: data, port: 8081}]
endpoints:
- {addresses: [10.0.0.6]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-3, namespace: infra, labels: {kubernetes.io/service-name: svc}}
addressType: IPv4
ports: [{name: metrics, port: 9090}]
endpoints:
- {addresses: [10.0.0.7]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-fqdn, namespace: infra, labels: {kubernetes.io/service-name: svc}}
addressType: FQDN
ports: [{name: data, port: 8080}]
endpoints:
- {addresses: [backend.example.com]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: unrelated, namespace: infra, labels: {kubernetes.io/service-name: other}}
addressType: IPv4
ports: [{name: data, port: 8080}]
endpoints:
- {addresses: [10.0.0.8]}
"# + &tcp(&["{name: svc, port: 80}"]);
    let t = run(&yaml);
    let terminating = Backend {
        state: BackendState::Terminating,
        ..be("10.0.0.3", 8080, 0)
    };
    assert_eq!(
        frontend(&t, "infra/gw/tcp").backends,
        vec![
            be("10.0.0.1", 8080, 1),
            be("10.0.0.2", 8080, 1),
            terminating,
            be("10.0.0.6", 8081, 1)
        ]
    );
}

#[test]
fn slice_without_ports_uses_target_port() {
    let yaml = gw()
        + r#"---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: infra}
spec: {ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-1, namespace: infra, labels: {kubernetes.io/service-name: svc}}
addressType: IPv4
endpoints:
- {addresses: [10.0.0.1]}
"# + &tcp(&["{name: svc, port: 80}"]);
    let t = run(&yaml);
    assert_eq!(
        frontend(&t, "infra/gw/tcp").backends,
        vec![be("10.0.0.1", 8080, 1)]
    );
}

#[test]
fn each_family_gets_its_own_backends() {
    let yaml = gw()
        + &service("infra", "v4only", 80, "TCP", 80, &["10.0.0.1"])
        + &service("infra", "dual", 80, "TCP", 80, &["10.0.0.2", "fd00::2"])
        + &tcp(&["{name: v4only, port: 80}", "{name: dual, port: 80}"]);
    let t = run_with(&yaml, &config());
    let tcp: Vec<_> = t
        .snapshot
        .frontends
        .iter()
        .filter(|f| f.key.protocol == Protocol::Tcp)
        .cloned()
        .collect();
    assert_eq!(
        tcp,
        vec![
            fe(
                "infra/gw/tcp",
                "192.0.2.10",
                9000,
                Protocol::Tcp,
                vec![be("10.0.0.1", 80, 1), be("10.0.0.2", 80, 1)],
                0
            ),
            // v4only has no IPv6 endpoint: its share is rejected on the IPv6 frontend.
            fe(
                "infra/gw/tcp",
                "2001:db8::10",
                9000,
                Protocol::Tcp,
                vec![be("fd00::2", 80, 1)],
                1
            ),
        ]
    );
}

#[test]
fn udp_route_reference_grant_uses_the_udp_kind() {
    let yaml = gw()
        + &service("web", "dns", 53, "UDP", 53, &["10.1.0.53"])
        + &route(
            "UDPRoute",
            "infra",
            "u",
            "{name: gw}",
            &["{name: dns, namespace: web, port: 53}"],
        )
        + &GRANT_TCP.replace("kind: TCPRoute", "kind: UDPRoute");
    let t = run(&yaml);
    assert_eq!(
        route_conds(&t, "UDPRoute", "infra", "u"),
        expect(&[ACCEPTED_TRUE, RESOLVED_TRUE])
    );
    assert_eq!(
        frontend(&t, "infra/gw/udp").backends,
        vec![be("10.1.0.53", 53, 1)]
    );
}

#[test]
fn udp_echo_backend_and_invalid_udp_backend_refs() {
    // v1.7.0 UDPRoute conformance, no longer provisional: udproute-simple (an echo-basic
    // backend on UDP 8080 instead of CoreDNS on 53), udproute-invalid-backendref-nonexistent and
    // udproute-invalid-cross-namespace-backend-ref, one Gateway each with a UDP listener on 5300.
    let udp_gateway = |name: &str| {
        gateway(
            "infra",
            name,
            "  - {name: udp, protocol: UDP, port: 5300, allowedRoutes: {kinds: [{kind: UDPRoute}]}}",
        )
    };
    let yaml = [
        CLASS.to_string(),
        udp_gateway("udp-gateway"),
        udp_gateway("udp-gateway-invalid-backend"),
        udp_gateway("udp-gateway-invalid-cross-namespace-backend-ref"),
        service("infra", "udp-echo", 8080, "UDP", 8080, &["10.0.0.8"]),
        service(
            "app",
            "udp-echo-no-reference-grant",
            8080,
            "UDP",
            8080,
            &["10.2.0.8"],
        ),
        route(
            "UDPRoute",
            "infra",
            "udp-route",
            "{name: udp-gateway, sectionName: udp}",
            &["{name: udp-echo, port: 8080}"],
        ),
        route(
            "UDPRoute",
            "infra",
            "udp-route-invalid-backend-ref-nonexistent",
            "{name: udp-gateway-invalid-backend, sectionName: udp}",
            &["{name: nonexistent-service, port: 8080}"],
        ),
        route(
            "UDPRoute",
            "infra",
            "udp-route-invalid-cross-namespace-backend-ref",
            "{name: udp-gateway-invalid-cross-namespace-backend-ref, sectionName: udp}",
            &["{name: udp-echo-no-reference-grant, namespace: app, port: 8080}"],
        ),
    ]
    .concat();
    let t = run(&yaml);
    for (r, resolved) in [
        ("udp-route", RESOLVED_TRUE),
        (
            "udp-route-invalid-backend-ref-nonexistent",
            ("ResolvedRefs", "False", "BackendNotFound"),
        ),
        (
            "udp-route-invalid-cross-namespace-backend-ref",
            ("ResolvedRefs", "False", "RefNotPermitted"),
        ),
    ] {
        assert_eq!(
            route_conds(&t, "UDPRoute", "infra", r),
            expect(&[ACCEPTED_TRUE, resolved]),
            "{r}"
        );
    }
    let udp = |gw: &str| {
        t.snapshot
            .frontends
            .iter()
            .find(|f| f.name == format!("infra/{gw}/udp"))
            .unwrap_or_else(|| panic!("no frontend for {gw}: {:?}", t.snapshot.frontends))
    };
    let echo = udp("udp-gateway");
    assert_eq!(
        (
            echo.key.port,
            echo.key.protocol,
            &echo.backends,
            echo.reject_weight
        ),
        (5300, Protocol::Udp, &vec![be("10.0.0.8", 8080, 1)], 0)
    );
    // Every flow of the invalid routes is dropped.
    for gw in [
        "udp-gateway-invalid-backend",
        "udp-gateway-invalid-cross-namespace-backend-ref",
    ] {
        let f = udp(gw);
        assert_eq!((f.backends.len(), f.reject_weight), (0, 1), "{gw}");
        assert_eq!(attached(&t, "infra", gw, "udp"), 1, "{gw}");
    }
}
