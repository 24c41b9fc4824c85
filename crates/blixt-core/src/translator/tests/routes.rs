//! Route attachment: parentRef matching, allowedRoutes, attachedRoutes, oldest-route-wins and
//! the route status entries.

use super::*;

const TWO_TCP_ONE_UDP: &str = "  - {name: one, protocol: TCP, port: 9001}
  - {name: two, protocol: TCP, port: 9002}
  - {name: dns, protocol: UDP, port: 9001}";

fn base() -> String {
    [
        CLASS.to_string(),
        gateway("infra", "gw", TWO_TCP_ONE_UDP),
        service("infra", "svc", 80, "TCP", 8080, &["10.0.0.1"]),
        service("infra", "dns", 53, "UDP", 5353, &["10.0.0.2"]),
    ]
    .concat()
}

fn parent(section: &str, port: &str) -> String {
    format!("group/kind infra/gw {section} {port}")
        .replace("group/kind", "gateway.networking.k8s.io/Gateway")
}

#[test]
fn parent_ref_defaults_are_filled_in() {
    let t = run(&(base()
        + &route(
            "TCPRoute",
            "infra",
            "r",
            "{name: gw, sectionName: one}",
            &["{name: svc, port: 80}"],
        )));
    assert_eq!(
        route_parents(&t, "TCPRoute", "infra", "r"),
        vec![Parent {
            parent_ref: parent("one", "-"),
            controller: CONTROLLER_NAME.to_string(),
            conditions: expect(&[ACCEPTED_TRUE, RESOLVED_TRUE]),
        }]
    );
    let status = &t.statuses.tcp_routes[&ObjectKey::new("infra", "r")];
    let c = &status.parents[0].conditions[0];
    assert_eq!(
        (c.observed_generation, c.last_transition_time.clone()),
        (Some(2), now())
    );
}

#[test]
fn section_name_port_both_and_neither() {
    // tcproute-parentref-port-and-section-name and tcproute-parentref-attach-all.
    let yaml = base()
        + &route(
            "TCPRoute",
            "infra",
            "by-name",
            "{name: gw, sectionName: two}",
            &["{name: svc, port: 80}"],
        )
        + &route(
            "TCPRoute",
            "infra",
            "by-port",
            "{name: gw, port: 9001}",
            &["{name: svc, port: 80}"],
        )
        + &route(
            "TCPRoute",
            "infra",
            "by-both",
            "{name: gw, sectionName: one, port: 9001}",
            &["{name: svc, port: 80}"],
        )
        + &route(
            "TCPRoute",
            "infra",
            "mismatch",
            "{name: gw, sectionName: one, port: 9002}",
            &["{name: svc, port: 80}"],
        )
        + &route(
            "TCPRoute",
            "infra",
            "no-name",
            "{name: gw, sectionName: three}",
            &["{name: svc, port: 80}"],
        )
        + &route(
            "TCPRoute",
            "infra",
            "no-port",
            "{name: gw, port: 9999}",
            &["{name: svc, port: 80}"],
        )
        + &route(
            "UDPRoute",
            "infra",
            "all",
            "{name: gw}",
            &["{name: dns, port: 53}"],
        );
    let t = run(&yaml);
    for r in ["by-name", "by-port", "by-both"] {
        assert_eq!(
            route_conds(&t, "TCPRoute", "infra", r),
            expect(&[ACCEPTED_TRUE, RESOLVED_TRUE]),
            "{r}"
        );
    }
    for r in ["mismatch", "no-name", "no-port"] {
        assert_eq!(
            route_conds(&t, "TCPRoute", "infra", r),
            expect(&[("Accepted", "False", "NoMatchingParent"), RESOLVED_TRUE]),
            "{r}"
        );
    }
    // Neither: every listener that takes the kind (the UDP one only, for a UDPRoute).
    assert_eq!(
        route_conds(&t, "UDPRoute", "infra", "all"),
        expect(&[ACCEPTED_TRUE, RESOLVED_TRUE])
    );
    assert_eq!(
        attached(&t, "infra", "gw", "one"),
        2,
        "by-port and by-both (by-port matches `one` only: `dns` is UDP)"
    );
    assert_eq!(attached(&t, "infra", "gw", "two"), 1);
    assert_eq!(attached(&t, "infra", "gw", "dns"), 1);
    let names: Vec<_> = t
        .snapshot
        .frontends
        .iter()
        .map(|f| (f.name.as_str(), f.backends.len()))
        .collect();
    assert_eq!(
        names,
        [
            ("infra/gw/one", 1),
            ("infra/gw/dns", 1),
            ("infra/gw/two", 1)
        ]
    );
}

#[test]
fn attach_all_reaches_every_tcp_listener() {
    let t = run(&(base()
        + &route(
            "TCPRoute",
            "infra",
            "r",
            "{name: gw}",
            &["{name: svc, port: 80}"],
        )));
    assert_eq!(attached(&t, "infra", "gw", "one"), 1);
    assert_eq!(attached(&t, "infra", "gw", "two"), 1);
    assert_eq!(attached(&t, "infra", "gw", "dns"), 0);
    let b = vec![be("10.0.0.1", 8080, 1)];
    assert_eq!(
        t.snapshot.frontends,
        vec![
            fe(
                "infra/gw/one",
                "192.0.2.10",
                9001,
                Protocol::Tcp,
                b.clone(),
                0
            ),
            fe("infra/gw/dns", "192.0.2.10", 9001, Protocol::Udp, vec![], 0),
            fe("infra/gw/two", "192.0.2.10", 9002, Protocol::Tcp, b, 0),
        ]
    );
}

#[test]
fn route_to_a_listener_of_another_protocol_is_not_allowed() {
    // tcproute-invalid-non-tcp-listener / udproute-not-allowed-by-listeners.
    let yaml = [
        CLASS.to_string(),
        gateway(
            "infra",
            "gw",
            "  - {name: only-allow-http-routes, protocol: HTTP, port: 5300, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}
  - {name: tls, protocol: TLS, port: 443, tls: {mode: Passthrough}}",
        ),
        route("TCPRoute", "infra", "tcp", "{name: gw, sectionName: only-allow-http-routes}", &["{name: x, port: 1}"]),
        route("UDPRoute", "infra", "udp", "{name: gw, sectionName: tls}", &["{name: x, port: 1}"]),
    ]
    .concat();
    let t = run(&yaml);
    for (kind, r) in [("TCPRoute", "tcp"), ("UDPRoute", "udp")] {
        assert_eq!(
            route_conds(&t, kind, "infra", r),
            expect(&[
                ("Accepted", "False", "NotAllowedByListeners"),
                ("ResolvedRefs", "False", "BackendNotFound")
            ])
        );
    }
    assert_eq!(attached(&t, "infra", "gw", "only-allow-http-routes"), 0);
    assert_eq!(attached(&t, "infra", "gw", "tls"), 0);
}

#[test]
fn allowed_routes_namespaces_same_all_selector() {
    let yaml = [
        CLASS.to_string(),
        gateway(
            "infra",
            "gw",
            "  - {name: same, protocol: TCP, port: 1}
  - {name: all, protocol: TCP, port: 2, allowedRoutes: {namespaces: {from: All}}}
  - name: team-a
    protocol: TCP
    port: 3
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels: {team: a}
          matchExpressions: [{key: env, operator: NotIn, values: [test]}]
  - name: by-name
    protocol: TCP
    port: 4
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {kubernetes.io/metadata.name: apps}}}}
  - {name: no-selector, protocol: TCP, port: 5, allowedRoutes: {namespaces: {from: Selector}}}",
        ),
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: apps, labels: {team: a}}\n".to_string(),
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: apps-test, labels: {team: a, env: test}}\n".to_string(),
    ]
    .concat();
    let mut yaml = yaml;
    for (ns, name) in [
        ("infra", "r"),
        ("apps", "r"),
        ("apps-test", "r"),
        ("other", "r"),
    ] {
        for l in ["same", "all", "team-a", "by-name", "no-selector"] {
            yaml += &route(
                "TCPRoute",
                ns,
                &format!("{name}-{l}"),
                &format!("{{name: gw, namespace: infra, sectionName: {l}}}"),
                &["{name: svc, port: 80}"],
            );
        }
    }
    let t = run(&yaml);
    let verdict = |ns: &str, l: &str| {
        route_conds(&t, "TCPRoute", ns, &format!("r-{l}"))[0]
            .2
            .clone()
    };
    let table = [
        // namespace,  same,  all,  team-a, by-name, no-selector
        ("infra", [true, true, false, false, false]),
        ("apps", [false, true, true, true, false]),
        ("apps-test", [false, true, false, false, false]),
        ("other", [false, true, false, false, false]),
    ];
    for (ns, row) in table {
        for (l, ok) in ["same", "all", "team-a", "by-name", "no-selector"]
            .into_iter()
            .zip(row)
        {
            let want = if ok {
                "Accepted"
            } else {
                "NotAllowedByListeners"
            };
            assert_eq!(verdict(ns, l), want, "route in {ns} to listener {l}");
        }
    }
    // attachedRoutes counts accepted routes whatever their backends (none exists here).
    assert_eq!(attached(&t, "infra", "gw", "all"), 4);
    assert_eq!(attached(&t, "infra", "gw", "team-a"), 1);
}

#[test]
fn oldest_route_wins_and_both_count() {
    // tcproute-multiple-routes-attachment / udproute-multiple-routes-attachment.
    let older = route(
        "TCPRoute",
        "infra",
        "tcproute-attach-older",
        "{name: gw, sectionName: one}",
        &["{name: svc, port: 80}"],
    )
    .replace(
        "generation: 2}",
        "generation: 2, creationTimestamp: \"2024-01-01T00:00:00Z\"}",
    );
    let newer = route(
        "TCPRoute",
        "infra",
        "tcproute-attach-newer",
        "{name: gw, sectionName: one}",
        &["{name: svc2, port: 80}"],
    )
    .replace(
        "generation: 2}",
        "generation: 2, creationTimestamp: \"2024-01-01T00:00:01Z\"}",
    );
    let yaml = base() + &newer + &older + &service("infra", "svc2", 80, "TCP", 8080, &["10.0.9.9"]);
    let t = run(&yaml);
    for r in ["tcproute-attach-older", "tcproute-attach-newer"] {
        assert_eq!(
            route_conds(&t, "TCPRoute", "infra", r),
            expect(&[ACCEPTED_TRUE, RESOLVED_TRUE])
        );
    }
    assert_eq!(attached(&t, "infra", "gw", "one"), 2);
    assert_eq!(
        listener_conds(&t, "infra", "gw", "one"),
        expect(&LISTENER_OK)
    );
    let one = t
        .snapshot
        .frontends
        .iter()
        .find(|f| f.name == "infra/gw/one")
        .unwrap();
    assert_eq!(
        one.backends,
        vec![be("10.0.0.1", 8080, 1)],
        "only the older route's backend"
    );
}

#[test]
fn same_age_routes_are_ordered_by_namespace_then_name() {
    let yaml = [
        CLASS.to_string(),
        gateway(
            "infra",
            "gw",
            "  - {name: tcp, protocol: TCP, port: 1, allowedRoutes: {namespaces: {from: All}}}",
        ),
        route(
            "TCPRoute",
            "b",
            "a",
            "{name: gw, namespace: infra}",
            &["{name: s, port: 80}"],
        ),
        route(
            "TCPRoute",
            "a",
            "z",
            "{name: gw, namespace: infra}",
            &["{name: s, port: 80}"],
        ),
        service("a", "s", 80, "TCP", 80, &["10.0.0.1"]),
        service("b", "s", 80, "TCP", 80, &["10.0.0.2"]),
    ]
    .concat();
    let t = run(&yaml);
    assert_eq!(
        t.snapshot.frontends[0].backends,
        vec![be("10.0.0.1", 80, 1)]
    );
}

#[test]
fn parents_of_other_controllers_are_left_alone() {
    let yaml = base()
        + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: other}\nspec: {controllerName: example.net/gw}\n"
        + &gateway("infra", "foreign", "  - {name: tcp, protocol: TCP, port: 1}").replace("gatewayClassName: blixt", "gatewayClassName: other")
        + &route(
            "TCPRoute",
            "infra",
            "r",
            "{name: foreign}, {name: missing}, {kind: Service, group: \"\", name: svc}, {name: gw, sectionName: two}",
            &["{name: svc, port: 80}"],
        );
    let t = run(&yaml);
    let p = route_parents(&t, "TCPRoute", "infra", "r");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].parent_ref, parent("two", "-"));
}

#[test]
fn stale_blixt_entries_are_cleared() {
    // The route's only parent is gone; its old Blixt entry must be removed, the other
    // controller's entry is not Blixt's to write.
    let yaml = base()
        + &route(
            "TCPRoute",
            "infra",
            "r",
            "{name: gone}",
            &["{name: svc, port: 80}"],
        )
        + r#"status:
  parents:
  - parentRef: {name: gone}
    controllerName: blixt.dev/gateway-controller
    conditions: []
  - parentRef: {name: theirs}
    controllerName: example.net/gw
    conditions: []
"# + &route(
        "TCPRoute",
        "infra",
        "untouched",
        "{name: gone}",
        &["{name: svc, port: 80}"],
    );
    let t = run(&yaml);
    assert_eq!(route_parents(&t, "TCPRoute", "infra", "r"), vec![]);
    assert!(!t
        .statuses
        .tcp_routes
        .contains_key(&ObjectKey::new("infra", "untouched")));
}

#[test]
fn invalid_route_shape_is_unsupported_value() {
    let two_rules = route(
        "TCPRoute",
        "infra",
        "two-rules",
        "{name: gw, sectionName: one}",
        &["{name: svc, port: 80}"],
    ) + "  - backendRefs: [{name: svc, port: 80}]\n";
    let many: Vec<String> = (0..17)
        .map(|i| format!("{{name: svc, port: 80, weight: {i}}}"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let yaml = base()
        + &two_rules
        + &route(
            "TCPRoute",
            "infra",
            "seventeen",
            "{name: gw, sectionName: one}",
            &many,
        );
    let t = run(&yaml);
    for r in ["two-rules", "seventeen"] {
        assert_eq!(
            route_conds(&t, "TCPRoute", "infra", r),
            expect(&[("Accepted", "False", "UnsupportedValue"), RESOLVED_TRUE]),
            "{r}"
        );
    }
    assert_eq!(attached(&t, "infra", "gw", "one"), 0);
}

#[test]
fn route_transition_times_are_kept_per_parent() {
    let yaml = base()
        + &route(
            "TCPRoute",
            "infra",
            "r",
            "{name: gw, sectionName: one}, {name: gw, sectionName: nope}",
            &["{name: svc, port: 80}"],
        )
        + r#"status:
  parents:
  - parentRef: {group: gateway.networking.k8s.io, kind: Gateway, namespace: infra, name: gw, sectionName: one}
    controllerName: blixt.dev/gateway-controller
    conditions:
    - {type: Accepted, status: "True", reason: Accepted, message: "", lastTransitionTime: "2021-05-05T00:00:00Z"}
    - {type: ResolvedRefs, status: "False", reason: BackendNotFound, message: "", lastTransitionTime: "2021-05-05T00:00:00Z"}
  - parentRef: {name: gw, sectionName: nope}
    controllerName: blixt.dev/gateway-controller
    conditions:
    - {type: Accepted, status: "False", reason: NoMatchingParent, message: "", lastTransitionTime: "2022-02-02T00:00:00Z"}
"#;
    let t = run(&yaml);
    let s = &t.statuses.tcp_routes[&ObjectKey::new("infra", "r")];
    let times: Vec<Vec<String>> = s
        .parents
        .iter()
        .map(|p| {
            p.conditions
                .iter()
                .map(|c| c.last_transition_time.0.to_string())
                .collect()
        })
        .collect();
    assert_eq!(
        times,
        vec![
            // Accepted unchanged; ResolvedRefs turned True now.
            vec!["2021-05-05T00:00:00Z".to_string(), now().0.to_string()],
            // The defaults-free parentRef in the old status still matches its entry.
            vec!["2022-02-02T00:00:00Z".to_string(), now().0.to_string()],
        ]
    );
}

#[test]
fn routes_on_a_conflicted_listener_count_but_carry_nothing() {
    let yaml = [
        CLASS.to_string(),
        gateway(
            "infra",
            "gw",
            "  - {name: a, protocol: TCP, port: 9000}\n  - {name: b, protocol: TCP, port: 9000}",
        ),
        service("infra", "svc", 80, "TCP", 8080, &["10.0.0.1"]),
        route(
            "TCPRoute",
            "infra",
            "r",
            "{name: gw, port: 9000}",
            &["{name: svc, port: 80}"],
        ),
    ]
    .concat();
    let t = run(&yaml);
    assert_eq!(
        route_conds(&t, "TCPRoute", "infra", "r"),
        expect(&[ACCEPTED_TRUE, RESOLVED_TRUE])
    );
    assert_eq!(
        (
            attached(&t, "infra", "gw", "a"),
            attached(&t, "infra", "gw", "b")
        ),
        (1, 1)
    );
    assert_eq!(
        gateway_conds(&t, "infra", "gw"),
        expect(&[
            ("Accepted", "False", "ListenersNotValid"),
            ("Programmed", "False", "Invalid")
        ])
    );
    assert!(t.snapshot.frontends.is_empty());
}

#[test]
fn a_route_counts_once_per_listener() {
    let yaml = base()
        + &route(
            "TCPRoute",
            "infra",
            "r",
            "{name: gw, sectionName: one}, {name: gw, port: 9001}",
            &["{name: svc, port: 80}"],
        );
    let t = run(&yaml);
    assert_eq!(route_parents(&t, "TCPRoute", "infra", "r").len(), 2);
    assert_eq!(attached(&t, "infra", "gw", "one"), 1);
}
