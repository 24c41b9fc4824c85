//! Listeners: protocols, TLS modes, kinds, conflicts, ports, and the Gateway's Accepted
//! reasons that follow from them.

use super::*;

fn gw(listeners: &str) -> String {
    [CLASS.to_string(), gateway("infra", "gw", listeners)].concat()
}

#[test]
fn tcp_udp_tls_listeners_are_accepted_with_inferred_kinds() {
    let t = run(&gw("  - {name: tcp, protocol: TCP, port: 9000}
  - {name: udp, protocol: UDP, port: 9000}
  - {name: tls, protocol: TLS, port: 443, tls: {mode: Passthrough}}"));
    assert_eq!(
        gateway_conds(&t, "infra", "gw"),
        expect(&[ACCEPTED_TRUE, PROGRAMMED_TRUE])
    );
    for (l, kind) in [
        ("tcp", "TCPRoute"),
        ("udp", "UDPRoute"),
        ("tls", "TLSRoute"),
    ] {
        assert_eq!(
            listener_conds(&t, "infra", "gw", l),
            expect(&LISTENER_OK),
            "{l}"
        );
        assert_eq!(supported_kinds(&t, "infra", "gw", l), [kind], "{l}");
        assert_eq!(attached(&t, "infra", "gw", l), 0, "{l}");
    }
    // A listener without routes is programmed and rejects everything.
    assert_eq!(
        t.snapshot.frontends,
        vec![
            fe("infra/gw/tcp", "192.0.2.10", 9000, Protocol::Tcp, vec![], 0),
            fe("infra/gw/udp", "192.0.2.10", 9000, Protocol::Udp, vec![], 0),
        ]
    );
    assert_eq!(t.tls.len(), 1);
    assert_eq!(
        (t.tls[0].name.as_str(), t.tls[0].port),
        ("infra/gw/tls", 443)
    );
    assert!(t.tls[0].routes.is_empty());
    let conds = &t.statuses.gateways[&ObjectKey::new("infra", "gw")]
        .conditions
        .as_ref()
        .unwrap()[0];
    assert_eq!(conds.observed_generation, Some(3));
}

#[test]
fn unsupported_protocol_only_gateway_is_not_accepted() {
    // gateway-invalid-listeners-unsupported-protocol: every listener invalid.
    let t = run(&gw("  - {name: invalid, protocol: INVALID, port: 1111}
  - {name: http, protocol: HTTP, port: 80}"));
    assert_eq!(
        gateway_conds(&t, "infra", "gw"),
        expect(&[
            ("Accepted", "False", "ListenersNotValid"),
            ("Programmed", "False", "Invalid")
        ])
    );
    for l in ["invalid", "http"] {
        assert_eq!(
            listener_conds(&t, "infra", "gw", l),
            expect(&[
                ("Accepted", "False", "UnsupportedProtocol"),
                ("Programmed", "False", "Invalid"),
                RESOLVED_TRUE,
                NO_CONFLICTS
            ])
        );
        assert!(supported_kinds(&t, "infra", "gw", l).is_empty());
    }
    assert!(t.snapshot.frontends.is_empty());
    assert_eq!(
        t.statuses.gateways[&ObjectKey::new("infra", "gw")].addresses,
        None,
        "no address is spent"
    );
}

#[test]
fn some_invalid_listeners_keep_the_gateway_accepted() {
    let t = run(&gw("  - {name: tcp, protocol: TCP, port: 9000}
  - {name: invalid, protocol: INVALID, port: 1111}"));
    assert_eq!(
        gateway_conds(&t, "infra", "gw"),
        expect(&[("Accepted", "True", "ListenersNotValid"), PROGRAMMED_TRUE])
    );
    assert_eq!(
        listener_conds(&t, "infra", "gw", "tcp"),
        expect(&LISTENER_OK)
    );
    assert_eq!(t.snapshot.frontends.len(), 1);
}

#[test]
fn tls_terminate_is_unsupported_value_with_no_kinds() {
    // tlsroute-listener-terminate-not-supported.
    let t = run(&gw("  - name: tls-terminate
    port: 8443
    protocol: TLS
    hostname: terminate.example.com
    allowedRoutes:
      namespaces: {from: Same}
      kinds: [{kind: TLSRoute}]
    tls:
      mode: Terminate
      certificateRefs: [{name: tls-terminate-checks-certificate}]"));
    assert_eq!(
        listener_conds(&t, "infra", "gw", "tls-terminate"),
        expect(&[
            ("Accepted", "False", "UnsupportedValue"),
            ("Programmed", "False", "Invalid"),
            RESOLVED_TRUE,
            NO_CONFLICTS
        ])
    );
    assert!(supported_kinds(&t, "infra", "gw", "tls-terminate").is_empty());
    assert_eq!(attached(&t, "infra", "gw", "tls-terminate"), 0);
}

#[test]
fn passthrough_listener_reports_tcproute_kind_as_invalid() {
    // tlsroute-listener-passthrough-supported-kinds.
    let t = run(&gw("  - name: tls-passthrough
    port: 443
    protocol: TLS
    allowedRoutes:
      namespaces: {from: Same}
      kinds: [{kind: TCPRoute}, {kind: TLSRoute}]
    tls: {mode: Passthrough}"));
    assert_eq!(
        supported_kinds(&t, "infra", "gw", "tls-passthrough"),
        ["TLSRoute"]
    );
    assert_eq!(
        listener_conds(&t, "infra", "gw", "tls-passthrough"),
        expect(&[
            ACCEPTED_TRUE,
            PROGRAMMED_TRUE,
            ("ResolvedRefs", "False", "InvalidRouteKinds"),
            NO_CONFLICTS
        ])
    );
}

#[test]
fn only_invalid_kinds_leave_supported_kinds_empty() {
    // gateway-invalid-route-kind, on a TCP listener; a foreign group counts as invalid too.
    let t = run(&gw("  - name: tcp
    port: 9000
    protocol: TCP
    allowedRoutes:
      kinds: [{kind: InvalidRoute}, {group: example.net, kind: TCPRoute}]"));
    assert!(supported_kinds(&t, "infra", "gw", "tcp").is_empty());
    assert_eq!(
        listener_conds(&t, "infra", "gw", "tcp"),
        expect(&[
            ACCEPTED_TRUE,
            PROGRAMMED_TRUE,
            ("ResolvedRefs", "False", "InvalidRouteKinds"),
            NO_CONFLICTS
        ])
    );
}

#[test]
fn two_tcp_listeners_on_one_port_both_conflict() {
    let t = run(&gw("  - {name: a, protocol: TCP, port: 9000}
  - {name: b, protocol: TCP, port: 9000}
  - {name: c, protocol: TCP, port: 9001}"));
    for l in ["a", "b"] {
        assert_eq!(
            listener_conds(&t, "infra", "gw", l),
            expect(&[
                ("Accepted", "False", "ProtocolConflict"),
                ("Programmed", "False", "Invalid"),
                RESOLVED_TRUE,
                ("Conflicted", "True", "ProtocolConflict")
            ]),
            "{l}"
        );
    }
    assert_eq!(listener_conds(&t, "infra", "gw", "c"), expect(&LISTENER_OK));
    assert_eq!(
        gateway_conds(&t, "infra", "gw"),
        expect(&[("Accepted", "True", "ListenersNotValid"), PROGRAMMED_TRUE])
    );
    // No winner is picked: only the distinct listener is in the dataplane.
    assert_eq!(
        t.snapshot.frontends,
        vec![fe(
            "infra/gw/c",
            "192.0.2.10",
            9001,
            Protocol::Tcp,
            vec![],
            0
        )]
    );
}

#[test]
fn tcp_and_tls_on_one_port_conflict_tcp_and_udp_do_not() {
    let t = run(&gw("  - {name: tcp, protocol: TCP, port: 443}
  - {name: tls, protocol: TLS, port: 443, hostname: a.example.com, tls: {mode: Passthrough}}
  - {name: tcp53, protocol: TCP, port: 53}
  - {name: udp53, protocol: UDP, port: 53}"));
    for l in ["tcp", "tls"] {
        assert_eq!(
            listener_conds(&t, "infra", "gw", l)[3],
            (
                "Conflicted".to_string(),
                "True".to_string(),
                "ProtocolConflict".to_string()
            ),
            "{l}"
        );
    }
    assert_eq!(
        listener_conds(&t, "infra", "gw", "tcp53"),
        expect(&LISTENER_OK)
    );
    assert_eq!(
        listener_conds(&t, "infra", "gw", "udp53"),
        expect(&LISTENER_OK)
    );
    assert!(t.tls.is_empty());
}

#[test]
fn tls_listeners_are_distinct_by_hostname() {
    let t = run(&gw(
        "  - {name: a, protocol: TLS, port: 443, hostname: a.example.com, tls: {mode: Passthrough}}
  - {name: b, protocol: TLS, port: 443, hostname: \"*.example.com\", tls: {mode: Passthrough}}
  - {name: c, protocol: TLS, port: 443, hostname: A.example.com, tls: {mode: Passthrough}}
  - {name: d, protocol: TLS, port: 8443, tls: {mode: Passthrough}}
  - {name: e, protocol: TLS, port: 8443, tls: {mode: Passthrough}}",
    ));
    assert_eq!(listener_conds(&t, "infra", "gw", "b"), expect(&LISTENER_OK));
    // Hostnames compare case-insensitively.
    for l in ["a", "c", "d", "e"] {
        assert_eq!(
            listener_conds(&t, "infra", "gw", l),
            expect(&[
                ("Accepted", "False", "HostnameConflict"),
                ("Programmed", "False", "Invalid"),
                RESOLVED_TRUE,
                ("Conflicted", "True", "HostnameConflict")
            ]),
            "{l}"
        );
    }
    assert_eq!(t.tls.len(), 1);
    assert_eq!(t.tls[0].name, "infra/gw/b");
}

#[test]
fn reserved_port_is_unavailable() {
    let mut cfg = config_v4();
    cfg.reserved_ports = [(Protocol::Tcp, 22)].into();
    let t = run_with(
        &gw("  - {name: ssh, protocol: TCP, port: 22}
  - {name: dns, protocol: UDP, port: 22}
  - {name: tls, protocol: TLS, port: 22, tls: {mode: Passthrough}}"),
        &cfg,
    );
    for l in ["ssh", "tls"] {
        assert_eq!(
            listener_conds(&t, "infra", "gw", l),
            expect(&[
                ("Accepted", "False", "PortUnavailable"),
                ("Programmed", "False", "Invalid"),
                RESOLVED_TRUE,
                NO_CONFLICTS
            ]),
            "{l}"
        );
    }
    assert_eq!(supported_kinds(&t, "infra", "gw", "ssh"), ["TCPRoute"]);
    assert_eq!(
        listener_conds(&t, "infra", "gw", "dns"),
        expect(&LISTENER_OK)
    );
}

#[test]
fn invalid_values_on_listeners() {
    let t = run(&gw(
        "  - {name: port0, protocol: TCP, port: 0}
  - {name: host-on-tcp, protocol: TCP, port: 1, hostname: a.example.com}
  - {name: tls-on-udp, protocol: UDP, port: 2, tls: {mode: Passthrough}}
  - {name: tls-no-mode, protocol: TLS, port: 3}
  - {name: ip-host, protocol: TLS, port: 4, hostname: 192.0.2.1, tls: {mode: Passthrough}}",
    ));
    for l in [
        "port0",
        "host-on-tcp",
        "tls-on-udp",
        "tls-no-mode",
        "ip-host",
    ] {
        assert_eq!(
            listener_conds(&t, "infra", "gw", l)[0],
            (
                "Accepted".to_string(),
                "False".to_string(),
                "UnsupportedValue".to_string()
            ),
            "{l}"
        );
    }
    assert_eq!(
        gateway_conds(&t, "infra", "gw")[0],
        (
            "Accepted".to_string(),
            "False".to_string(),
            "ListenersNotValid".to_string()
        )
    );
}

#[test]
fn terminate_certificate_refs_are_checked() {
    let yaml = [
        gw("  - name: bad-kind
    protocol: TLS
    port: 443
    hostname: a.example.com
    tls: {mode: Terminate, certificateRefs: [{group: example.net, kind: Cert, name: c}]}
  - name: other-ns
    protocol: TLS
    port: 443
    hostname: b.example.com
    tls: {mode: Terminate, certificateRefs: [{name: c, namespace: certs}]}
  - name: granted
    protocol: TLS
    port: 443
    hostname: c.example.com
    tls: {mode: Terminate, certificateRefs: [{name: c, namespace: granted}]}"),
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: g, namespace: granted}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: "", kind: Secret}]
"#
        .to_string(),
    ]
    .concat();
    let t = run(&yaml);
    let resolved = |l| listener_conds(&t, "infra", "gw", l)[2].clone();
    assert_eq!(
        resolved("bad-kind"),
        expect(&[("ResolvedRefs", "False", "InvalidCertificateRef")])[0]
    );
    assert_eq!(
        resolved("other-ns"),
        expect(&[("ResolvedRefs", "False", "RefNotPermitted")])[0]
    );
    assert_eq!(resolved("granted"), expect(&[RESOLVED_TRUE])[0]);
    for l in ["bad-kind", "other-ns", "granted"] {
        assert_eq!(
            listener_conds(&t, "infra", "gw", l)[0].2,
            "UnsupportedValue",
            "{l}"
        );
    }
}

#[test]
fn gateway_and_listener_transition_times_are_kept() {
    let yaml = gw("  - {name: tcp, protocol: TCP, port: 9000}")
        + r#"status:
  conditions:
  - {type: Accepted, status: "True", reason: Accepted, message: "", lastTransitionTime: "2023-03-03T00:00:00Z"}
  - {type: Programmed, status: "False", reason: AddressNotAssigned, message: "", lastTransitionTime: "2023-03-03T00:00:00Z"}
  listeners:
  - name: tcp
    attachedRoutes: 0
    conditions:
    - {type: Accepted, status: "True", reason: Accepted, message: "", lastTransitionTime: "2023-04-04T00:00:00Z"}
    - {type: Conflicted, status: "False", reason: NoConflicts, message: "", lastTransitionTime: "2023-04-04T00:00:00Z"}
"#;
    let t = run(&yaml);
    let s = &t.statuses.gateways[&ObjectKey::new("infra", "gw")];
    let times = |c: &[Condition]| {
        c.iter()
            .map(|c| (c.type_.clone(), c.last_transition_time.0.to_string()))
            .collect::<Vec<_>>()
    };
    let n = now().0.to_string();
    assert_eq!(
        times(s.conditions.as_ref().unwrap()),
        vec![
            ("Accepted".to_string(), "2023-03-03T00:00:00Z".to_string()),
            ("Programmed".to_string(), n.clone())
        ]
    );
    assert_eq!(
        times(&s.listeners.as_ref().unwrap()[0].conditions),
        vec![
            ("Accepted".to_string(), "2023-04-04T00:00:00Z".to_string()),
            ("Programmed".to_string(), n.clone()),
            ("ResolvedRefs".to_string(), n),
            ("Conflicted".to_string(), "2023-04-04T00:00:00Z".to_string()),
        ]
    );
}

#[test]
fn gateway_name_of_maximum_length_is_reconciled() {
    // gateway-name-maximum-length (v1.7.0): a 253-character Gateway name gets conditions of
    // the latest generation. The test's HTTP listener is refused; an L4 listener on a Gateway
    // of that name (and a route naming it) works as any other.
    let prefix = "gateway-name-maximum-length-";
    let name = format!("{prefix}{}", "a".repeat(253 - prefix.len()));
    assert_eq!(name.len(), 253);
    let yaml = [
        CLASS.to_string(),
        gateway("infra", &name, "  - {name: http, protocol: HTTP, port: 80}"),
        gateway("web", &name, "  - {name: tcp, protocol: TCP, port: 9000}"),
        route(
            "TCPRoute",
            "web",
            "r",
            &format!("{{name: {name}}}"),
            &["{name: svc, port: 80}"],
        ),
        service("web", "svc", 80, "TCP", 8080, &["10.0.0.1"]),
    ]
    .concat();
    let t = run(&yaml);
    for ns in ["infra", "web"] {
        let s = &t.statuses.gateways[&ObjectKey::new(ns, &name)];
        let listener_conds = s.listeners.iter().flatten().flat_map(|l| &l.conditions);
        for c in s.conditions.iter().flatten().chain(listener_conds) {
            assert_eq!(c.observed_generation, Some(3), "{ns}: {c:?}");
        }
    }
    assert_eq!(
        gateway_conds(&t, "infra", &name),
        expect(&[
            ("Accepted", "False", "ListenersNotValid"),
            ("Programmed", "False", "Invalid")
        ])
    );
    assert_eq!(
        gateway_conds(&t, "web", &name),
        expect(&[ACCEPTED_TRUE, PROGRAMMED_TRUE])
    );
    assert_eq!(
        route_conds(&t, "TCPRoute", "web", "r"),
        expect(&[ACCEPTED_TRUE, RESOLVED_TRUE])
    );
    assert_eq!(attached(&t, "web", &name, "tcp"), 1);
    assert_eq!(
        t.snapshot.frontends,
        vec![fe(
            &format!("web/{name}/tcp"),
            "192.0.2.10",
            9000,
            Protocol::Tcp,
            vec![be("10.0.0.1", 8080, 1)],
            0
        )]
    );
}
