//! TLSRoute passthrough: hostname intersection, precedence, listener isolation and the SNI
//! tables.

use super::*;
use crate::tls::TlsFrontend;

fn tls_listener(name: &str, hostname: Option<&str>) -> String {
    let host = hostname.map_or(String::new(), |h| format!(", hostname: \"{h}\""));
    format!("  - {{name: {name}, protocol: TLS, port: 443{host}, tls: {{mode: Passthrough}}}}")
}

fn backends() -> String {
    service("infra", "tls-backend", 443, "TCP", 8443, &["10.0.0.1"])
        + &service("infra", "tls-backend-2", 443, "TCP", 8443, &["10.0.0.2"])
}

/// (hostname, route, backend addresses) of each SNI entry, in table order.
fn table(fe: &TlsFrontend) -> Vec<(String, Option<String>, Vec<String>)> {
    fe.routes
        .iter()
        .map(|r| {
            (
                r.hostname.clone(),
                r.route.clone(),
                r.backends.iter().map(|b| b.addr.to_string()).collect(),
            )
        })
        .collect()
}

fn row(h: &str, route: Option<&str>, backends: &[&str]) -> (String, Option<String>, Vec<String>) {
    (
        h.to_string(),
        route.map(str::to_string),
        backends.iter().map(|b| b.to_string()).collect(),
    )
}

fn only_tls(t: &Translation) -> &TlsFrontend {
    assert_eq!(t.tls.len(), 1, "{:?}", t.tls);
    &t.tls[0]
}

#[test]
fn simple_same_namespace() {
    // tlsroute-simple-same-namespace.
    let yaml = [
        CLASS.to_string(),
        gateway("infra", "gw", &tls_listener("tls", None)),
        backends(),
        tls_route(
            "infra",
            "r",
            "{name: gw}",
            &["abc.example.com"],
            &["{name: tls-backend, port: 443}"],
        ),
    ]
    .concat();
    let t = run(&yaml);
    assert_eq!(
        route_conds(&t, "TLSRoute", "infra", "r"),
        expect(&[ACCEPTED_TRUE, RESOLVED_TRUE])
    );
    assert_eq!(attached(&t, "infra", "gw", "tls"), 1);
    let fe = only_tls(&t);
    assert_eq!(
        (fe.vip.to_string(), fe.port, fe.name.as_str()),
        ("192.0.2.10".to_string(), 443, "infra/gw/tls")
    );
    assert_eq!(fe.routes[0].backends, vec![be("10.0.0.1", 8443, 1)]);
    assert_eq!(fe.routes[0].listener, "tls");
    assert_eq!(
        table(fe),
        vec![row("abc.example.com", Some("infra/r"), &["10.0.0.1:8443"])]
    );
    assert!(
        t.snapshot.frontends.is_empty(),
        "TLS listeners are served by the proxy, not XDP"
    );
    assert!(fe.lookup("abc.example.com").is_some());
    assert!(fe.lookup("non.matching.com").is_none());
}

/// Listener hostname, routes (name, hostname, backend Service), probes (SNI, backend reached).
type IntersectionCase<'a> = (
    Option<&'a str>,
    Vec<(&'a str, &'a str, &'a str)>,
    Vec<(&'a str, Option<&'a str>)>,
);

#[test]
fn hostname_intersection_cases() {
    // tlsroute-hostname-intersection: four Gateways, the effective hostnames and which
    // backend each SNI reaches.
    let cases: [IntersectionCase; 4] = [
        (
            Some("abc.example.com"),
            vec![("r1", "*.example.com", "tls-backend")],
            vec![
                ("abc.example.com", Some("10.0.0.1:8443")),
                ("non.matching.com", None),
            ],
        ),
        (
            Some("*.example.com"),
            vec![
                ("r1", "abc.example.com", "tls-backend"),
                ("r2", "*.com", "tls-backend-2"),
            ],
            vec![
                ("abc.example.com", Some("10.0.0.1:8443")),
                ("other.example.com", Some("10.0.0.2:8443")),
                ("non.matching.com", None),
            ],
        ),
        (
            Some("*.com"),
            vec![
                ("r1", "abc.example.com", "tls-backend"),
                ("r2", "*.example.com", "tls-backend-2"),
            ],
            vec![
                ("abc.example.com", Some("10.0.0.1:8443")),
                ("other.example.com", Some("10.0.0.2:8443")),
                ("non.matching.com", None),
            ],
        ),
        (
            None,
            vec![
                ("r1", "abc.example.com", "tls-backend"),
                ("r2", "*.com", "tls-backend-2"),
            ],
            vec![
                ("abc.example.com", Some("10.0.0.1:8443")),
                ("other.example.com", Some("10.0.0.2:8443")),
                ("non.matching.org", None),
            ],
        ),
    ];
    for (listener_host, routes, probes) in cases {
        let mut yaml = [
            CLASS.to_string(),
            gateway("infra", "gw", &tls_listener("l", listener_host)),
            backends(),
        ]
        .concat();
        for (name, host, backend) in &routes {
            yaml += &tls_route(
                "infra",
                name,
                "{name: gw, namespace: infra}",
                &[host],
                &[&format!("{{name: {backend}, port: 443}}")],
            );
        }
        let t = run(&yaml);
        for (name, ..) in &routes {
            assert_eq!(
                route_conds(&t, "TLSRoute", "infra", name),
                expect(&[ACCEPTED_TRUE, RESOLVED_TRUE]),
                "listener {listener_host:?} route {name}"
            );
        }
        let fe = only_tls(&t);
        for (sni, want) in probes {
            let got = fe
                .lookup(sni)
                .and_then(|r| r.backends.first())
                .map(|b| b.addr.to_string());
            assert_eq!(
                got.as_deref(),
                want,
                "listener {listener_host:?} SNI {sni}: table {:?}",
                table(fe)
            );
        }
    }
}

#[test]
fn effective_hostname_is_the_more_specific_side() {
    let yaml = [
        CLASS.to_string(),
        gateway("infra", "gw", &tls_listener("l", Some("*.example.com"))),
        backends(),
        tls_route(
            "infra",
            "r",
            "{name: gw}",
            &["*.com", "abc.example.com", "test.example.net"],
            &["{name: tls-backend, port: 443}"],
        ),
    ]
    .concat();
    let t = run(&yaml);
    assert_eq!(
        table(only_tls(&t)),
        vec![
            row("abc.example.com", Some("infra/r"), &["10.0.0.1:8443"]),
            row("*.example.com", Some("infra/r"), &["10.0.0.1:8443"]),
        ]
    );
}

#[test]
fn no_matching_listener_hostname() {
    // tlsroute-invalid-no-matching-listener-hostname.
    let yaml = [
        CLASS.to_string(),
        gateway(
            "infra",
            "exact",
            &tls_listener("l", Some("foo.example.com")),
        ),
        gateway("infra", "wild", &tls_listener("l", Some("*.example.com"))),
        backends(),
        tls_route(
            "infra",
            "r1",
            "{name: exact}",
            &["bar.example.com"],
            &["{name: tls-backend, port: 443}"],
        ),
        tls_route(
            "infra",
            "r2",
            "{name: wild}",
            &["example.com", "foo.example.org"],
            &["{name: tls-backend, port: 443}"],
        ),
    ]
    .concat();
    let t = run(&yaml);
    for r in ["r1", "r2"] {
        assert_eq!(
            route_conds(&t, "TLSRoute", "infra", r),
            expect(&[
                ("Accepted", "False", "NoMatchingListenerHostname"),
                RESOLVED_TRUE
            ]),
            "{r}"
        );
    }
    assert_eq!(attached(&t, "infra", "exact", "l"), 0);
    assert_eq!(attached(&t, "infra", "wild", "l"), 0);
    // Each listener keeps a rejecting entry for its own hostname only.
    assert!(t
        .tls
        .iter()
        .all(|f| f.routes.iter().all(|r| r.route.is_none())));
}

#[test]
fn no_matching_listener() {
    // tlsroute-invalid-no-matching-listener: HTTP-only and HTTPS-only Gateways, and a
    // sectionName that names nothing.
    let yaml = [
        CLASS.to_string(),
        gateway("infra", "http-only", "  - {name: http, protocol: HTTP, port: 80}"),
        gateway(
            "infra",
            "https-only",
            "  - {name: https, protocol: HTTPS, port: 443, tls: {mode: Terminate, certificateRefs: [{name: c}]}}",
        ),
        gateway("infra", "passthrough", &tls_listener("tls", None)),
        backends(),
        tls_route("infra", "to-http", "{name: http-only}", &["abc.example.com"], &["{name: tls-backend, port: 443}"]),
        tls_route("infra", "to-https", "{name: https-only}", &["abc.example.com"], &["{name: tls-backend, port: 443}"]),
        tls_route(
            "infra",
            "no-section",
            "{name: passthrough, sectionName: nonexistent}",
            &["abc.example.com"],
            &["{name: tls-backend, port: 443}"],
        ),
    ]
    .concat();
    let t = run(&yaml);
    for r in ["to-http", "to-https"] {
        assert_eq!(
            route_conds(&t, "TLSRoute", "infra", r)[0].2,
            "NotAllowedByListeners",
            "{r}"
        );
    }
    assert_eq!(
        route_conds(&t, "TLSRoute", "infra", "no-section")[0].2,
        "NoMatchingParent"
    );
    for (gw, l) in [
        ("http-only", "http"),
        ("https-only", "https"),
        ("passthrough", "tls"),
    ] {
        assert_eq!(attached(&t, "infra", gw, l), 0);
    }
}

#[test]
fn exact_beats_wildcard_across_routes_and_oldest_wins_a_tie() {
    let yaml = [
        CLASS.to_string(),
        gateway("infra", "gw", &tls_listener("tls", None)),
        backends(),
        tls_route(
            "infra",
            "a-wild",
            "{name: gw}",
            &["*.example.com"],
            &["{name: tls-backend, port: 443}"],
        ),
        tls_route(
            "infra",
            "b-exact",
            "{name: gw}",
            &["abc.example.com"],
            &["{name: tls-backend-2, port: 443}"],
        ),
        tls_route(
            "infra",
            "c-dup",
            "{name: gw}",
            &["abc.example.com", "x.example.com"],
            &["{name: tls-backend, port: 443}"],
        ),
    ]
    .concat();
    let t = run(&yaml);
    for r in ["a-wild", "b-exact", "c-dup"] {
        assert_eq!(
            route_conds(&t, "TLSRoute", "infra", r),
            expect(&[ACCEPTED_TRUE, RESOLVED_TRUE]),
            "{r}"
        );
    }
    assert_eq!(attached(&t, "infra", "gw", "tls"), 3);
    assert_eq!(
        table(only_tls(&t)),
        vec![
            row("abc.example.com", Some("infra/b-exact"), &["10.0.0.2:8443"]),
            row("x.example.com", Some("infra/c-dup"), &["10.0.0.1:8443"]),
            row("*.example.com", Some("infra/a-wild"), &["10.0.0.1:8443"]),
        ]
    );
}

/// A TLSRoute created at `created` (RFC 3339).
fn tls_route_at(
    name: &str,
    parent: &str,
    hostnames: &[&str],
    backend: &str,
    created: &str,
) -> String {
    tls_route(
        "infra",
        name,
        parent,
        hostnames,
        &[&format!("{{name: {backend}, port: 443}}")],
    )
    .replace(
        "generation: 2}",
        &format!("generation: 2, creationTimestamp: \"{created}\"}}"),
    )
}

#[test]
fn same_intersection_goes_to_the_more_specific_route_hostname_not_the_oldest() {
    // tlsroute-multiple-routes-attachment-same-hostname-intersection (v1.7.0): two routes
    // whose hostnames intersect the listener's to the same name; the route with the more
    // specific hostname of its own wins although it is newer.
    let yaml = [
        CLASS.to_string(),
        gateway(
            "infra",
            "gw-tlsroute-exact-hostname-x",
            &tls_listener("listener-exact-hostname", Some("abc.example.com")),
        ),
        gateway(
            "infra",
            "gw-tlsroute-wc-hostname-x",
            &tls_listener("listener-wc-hostname", Some("*.example.com")),
        ),
        backends(),
        // Exact listener: `*.example.com` (older) and `abc.example.com` (newer) both give
        // `abc.example.com`; the exact route hostname wins.
        tls_route_at(
            "tlsroute-wc-hostname-x-older",
            "{name: gw-tlsroute-exact-hostname-x, namespace: infra}",
            &["*.example.com"],
            "tls-backend",
            "2024-01-01T00:00:00Z",
        ),
        tls_route_at(
            "tlsroute-exact-hostname-x-newer",
            "{name: gw-tlsroute-exact-hostname-x}",
            &["abc.example.com"],
            "tls-backend-2",
            "2024-01-01T00:00:01Z",
        ),
        // Wildcard listener: `*.com` (older) and `*.example.com` (newer) both give
        // `*.example.com`; the longer wildcard wins.
        tls_route_at(
            "tlsroute-less-specific-wc-hostname-x-older",
            "{name: gw-tlsroute-wc-hostname-x, namespace: infra}",
            &["*.com"],
            "tls-backend",
            "2024-01-01T00:00:00Z",
        ),
        tls_route_at(
            "tlsroute-more-specific-wc-hostname-x-newer",
            "{name: gw-tlsroute-wc-hostname-x}",
            &["*.example.com"],
            "tls-backend-2",
            "2024-01-01T00:00:01Z",
        ),
    ]
    .concat();
    let t = run(&yaml);
    for r in [
        "tlsroute-wc-hostname-x-older",
        "tlsroute-exact-hostname-x-newer",
        "tlsroute-less-specific-wc-hostname-x-older",
        "tlsroute-more-specific-wc-hostname-x-newer",
    ] {
        assert_eq!(
            route_conds(&t, "TLSRoute", "infra", r),
            expect(&[ACCEPTED_TRUE, RESOLVED_TRUE]),
            "{r}"
        );
    }
    assert_eq!(
        attached(
            &t,
            "infra",
            "gw-tlsroute-exact-hostname-x",
            "listener-exact-hostname"
        ),
        2
    );
    assert_eq!(
        attached(
            &t,
            "infra",
            "gw-tlsroute-wc-hostname-x",
            "listener-wc-hostname"
        ),
        2
    );
    let by_name = |n: &str| {
        t.tls
            .iter()
            .find(|f| f.name == n)
            .unwrap_or_else(|| panic!("no TLS frontend {n}: {:?}", t.tls))
    };
    let exact = by_name("infra/gw-tlsroute-exact-hostname-x/listener-exact-hostname");
    assert_eq!(
        table(exact),
        vec![row(
            "abc.example.com",
            Some("infra/tlsroute-exact-hostname-x-newer"),
            &["10.0.0.2:8443"]
        )]
    );
    let wild = by_name("infra/gw-tlsroute-wc-hostname-x/listener-wc-hostname");
    assert_eq!(
        table(wild),
        vec![row(
            "*.example.com",
            Some("infra/tlsroute-more-specific-wc-hostname-x-newer"),
            &["10.0.0.2:8443"]
        )]
    );
    // The test's probe: SNI abc.example.com reaches tls-backend-2 on both Gateways.
    for fe in [exact, wild] {
        let got = fe
            .lookup("abc.example.com")
            .and_then(|r| r.backends.first())
            .map(|b| b.addr.to_string());
        assert_eq!(got.as_deref(), Some("10.0.0.2:8443"), "{}", fe.name);
    }
}

#[test]
fn own_hostname_rank_is_the_routes_best_and_age_breaks_ties() {
    // A route with several hostnames giving one name competes with its most specific one;
    // equally specific own hostnames fall back to the oldest route.
    let yaml = [
        CLASS.to_string(),
        gateway("infra", "gw", &tls_listener("l", Some("abc.example.com"))),
        backends(),
        // Oldest, but only a wildcard of its own.
        tls_route_at(
            "a-wild",
            "{name: gw}",
            &["*.com"],
            "tls-backend",
            "2024-01-01T00:00:00Z",
        ),
        // `*.com` and `abc.example.com` both give `abc.example.com`: ranks as exact.
        tls_route_at(
            "b-both",
            "{name: gw}",
            &["*.com", "abc.example.com"],
            "tls-backend-2",
            "2024-01-01T00:00:01Z",
        ),
        // Also exact, but newer than b-both.
        tls_route_at(
            "c-exact-newer",
            "{name: gw}",
            &["abc.example.com"],
            "tls-backend",
            "2024-01-01T00:00:02Z",
        ),
    ]
    .concat();
    let t = run(&yaml);
    assert_eq!(attached(&t, "infra", "gw", "l"), 3);
    assert_eq!(
        table(only_tls(&t)),
        vec![row(
            "abc.example.com",
            Some("infra/b-both"),
            &["10.0.0.2:8443"]
        )]
    );
}

#[test]
fn listener_isolation_on_one_port() {
    // Names under `foo.example.com` belong to that listener even when it has no route for them.
    let yaml = [
        CLASS.to_string(),
        gateway(
            "infra",
            "gw",
            &[
                tls_listener("foo", Some("foo.example.com")),
                tls_listener("bar", Some("*.bar.example.com")),
                tls_listener("wild", Some("*.example.com")),
            ]
            .join("\n"),
        ),
        backends(),
        tls_route(
            "infra",
            "catch-all",
            "{name: gw, sectionName: wild}",
            &["*.example.com", "x.bar.example.com"],
            &["{name: tls-backend, port: 443}"],
        ),
        tls_route(
            "infra",
            "bar",
            "{name: gw, sectionName: bar}",
            &["y.bar.example.com"],
            &["{name: tls-backend-2, port: 443}"],
        ),
    ]
    .concat();
    let t = run(&yaml);
    let fe = only_tls(&t);
    assert_eq!(fe.name, "infra/gw/foo+bar+wild");
    assert_eq!(
        table(fe),
        vec![
            row("foo.example.com", None, &[]),
            row("y.bar.example.com", Some("infra/bar"), &["10.0.0.2:8443"]),
            row("*.bar.example.com", None, &[]),
            row("*.example.com", Some("infra/catch-all"), &["10.0.0.1:8443"]),
        ]
    );
    let hit = |sni| fe.lookup(sni).map(|r| r.listener.as_str());
    assert_eq!(hit("foo.example.com"), Some("foo"));
    assert_eq!(
        hit("x.bar.example.com"),
        Some("bar"),
        "not the catch-all's x.bar entry"
    );
    assert_eq!(hit("z.example.com"), Some("wild"));
}

#[test]
fn invalid_tls_route_hostnames_are_unsupported_value() {
    let yaml = [
        CLASS.to_string(),
        gateway("infra", "gw", &tls_listener("tls", None)),
        backends(),
        tls_route(
            "infra",
            "ip",
            "{name: gw}",
            &["192.0.2.1"],
            &["{name: tls-backend, port: 443}"],
        ),
        tls_route(
            "infra",
            "mid-wildcard",
            "{name: gw}",
            &["a.*.com"],
            &["{name: tls-backend, port: 443}"],
        ),
        tls_route(
            "infra",
            "none",
            "{name: gw}",
            &[],
            &["{name: tls-backend, port: 443}"],
        ),
    ]
    .concat();
    let t = run(&yaml);
    for r in ["ip", "mid-wildcard", "none"] {
        assert_eq!(
            route_conds(&t, "TLSRoute", "infra", r),
            expect(&[("Accepted", "False", "UnsupportedValue"), RESOLVED_TRUE]),
            "{r}"
        );
    }
}

#[test]
fn tls_backend_problems() {
    // tlsroute-invalid-backendref-nonexistent / -unknown-kind / tlsroute-invalid-reference-grant.
    let yaml = [
        CLASS.to_string(),
        gateway("infra", "gw", &tls_listener("tls", None)),
        service("web", "tls-backend", 443, "TCP", 443, &["10.9.0.1"]),
        tls_route("infra", "missing", "{name: gw}", &["a.example.com"], &["{name: nope, port: 443}"]),
        tls_route("infra", "kind", "{name: gw}", &["b.example.com"], &["{group: x.io, kind: Unknown, name: u, port: 443}"]),
        tls_route("infra", "grant", "{name: gw}", &["c.example.com"], &["{name: tls-backend, namespace: web, port: 443}"]),
        // A grant for TCPRoutes does not cover TLSRoutes.
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: web}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: infra}]\n  to: [{group: \"\", kind: Service}]\n".to_string(),
    ]
    .concat();
    let t = run(&yaml);
    for (r, reason) in [
        ("missing", "BackendNotFound"),
        ("kind", "InvalidKind"),
        ("grant", "RefNotPermitted"),
    ] {
        assert_eq!(
            route_conds(&t, "TLSRoute", "infra", r),
            expect(&[ACCEPTED_TRUE, ("ResolvedRefs", "False", reason)]),
            "{r}"
        );
    }
    let fe = only_tls(&t);
    assert!(
        fe.routes
            .iter()
            .all(|r| r.backends.is_empty() && r.reject_weight == 1),
        "{fe:?}"
    );
}

#[test]
fn dual_stack_tls_listener_has_a_table_per_address() {
    let yaml = [
        CLASS.to_string(),
        gateway("infra", "gw", &tls_listener("tls", None)),
        service(
            "infra",
            "tls-backend",
            443,
            "TCP",
            8443,
            &["10.0.0.1", "fd00::1"],
        ),
        tls_route(
            "infra",
            "r",
            "{name: gw}",
            &["abc.example.com"],
            &["{name: tls-backend, port: 443}"],
        ),
    ]
    .concat();
    let t = run_with(&yaml, &config());
    let got: Vec<_> = t
        .tls
        .iter()
        .map(|f| (f.vip.to_string(), table(f)))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "192.0.2.10".to_string(),
                vec![row("abc.example.com", Some("infra/r"), &["10.0.0.1:8443"])]
            ),
            (
                "2001:db8::10".to_string(),
                vec![row("abc.example.com", Some("infra/r"), &["[fd00::1]:8443"])]
            ),
        ]
    );
}
