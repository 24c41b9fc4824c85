//! Hostname validation and listener/route hostname intersection (TLSRoute, Gateway API
//! `TLSRouteSpec.hostnames`).

use std::net::IpAddr;

/// Why a hostname is not acceptable.
pub(crate) fn validate(h: &str) -> Result<(), String> {
    if h.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "hostname {h:?} is an IP address (RFC 6066 forbids IPs in SNI)"
        ));
    }
    let rest = h.strip_prefix("*.").unwrap_or(h);
    if rest.is_empty() || rest.len() > 253 {
        return Err(format!("hostname {h:?} is not a valid DNS name"));
    }
    for label in rest.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(if label.contains('*') {
                format!("hostname {h:?}: a wildcard may only be the whole first label (\"*.\")")
            } else {
                format!("hostname {h:?} is not a valid lowercase RFC 1123 DNS name")
            });
        }
    }
    Ok(())
}

/// The names both `listener` and `route` match, as one pattern: the more specific side, or
/// `None` when they are disjoint. A listener without a hostname matches everything.
///
/// Examples (listener, route → effective): (`abc.example.com`, `*.example.com`) →
/// `abc.example.com`; (`*.example.com`, `*.com`) → `*.example.com`; (`*.com`,
/// `abc.example.com`) → `abc.example.com`; (`abc.example.com`, `example.org`) → none.
pub(crate) fn intersect(listener: Option<&str>, route: &str) -> Option<String> {
    let Some(listener) = listener else {
        return Some(route.to_string());
    };
    if covers(listener, route) {
        Some(route.to_string())
    } else if covers(route, listener) {
        Some(listener.to_string())
    } else {
        None
    }
}

/// Whether every name matched by `inner` is also matched by `outer`.
pub(crate) fn covers(outer: &str, inner: &str) -> bool {
    if outer.eq_ignore_ascii_case(inner) {
        return true;
    }
    // `*.s` covers `x.s`, `a.b.s` and `*.t.s` (whose names all end in `.t.s`); an exact name
    // covers only itself.
    outer.starts_with("*.")
        && crate::tls::hostname_matches(outer, inner.strip_prefix("*.").unwrap_or(inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersections_from_the_conformance_suite() {
        // tlsroute-hostname-intersection: listener, route, effective.
        let cases = [
            (
                Some("abc.example.com"),
                "*.example.com",
                Some("abc.example.com"),
            ),
            (
                Some("*.example.com"),
                "abc.example.com",
                Some("abc.example.com"),
            ),
            (Some("*.example.com"), "*.com", Some("*.example.com")),
            (Some("*.com"), "abc.example.com", Some("abc.example.com")),
            (Some("*.com"), "*.example.com", Some("*.example.com")),
            (None, "*.com", Some("*.com")),
            (
                Some("abc.example.com"),
                "abc.example.com",
                Some("abc.example.com"),
            ),
            (Some("abc.example.com"), "def.example.com", None),
            (Some("*.example.com"), "example.com", None),
            (Some("*.example.com"), "*.example.org", None),
            (Some("*.a.example.com"), "*.b.example.com", None),
            (
                Some("*.example.com"),
                "*.example.com",
                Some("*.example.com"),
            ),
        ];
        for (l, r, want) in cases {
            assert_eq!(
                intersect(l, r).as_deref(),
                want,
                "listener {l:?} route {r:?}"
            );
        }
    }

    #[test]
    fn validation() {
        for ok in ["example.com", "*.example.com", "a-b.c0", "x"] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in [
            "192.0.2.1",
            "::1",
            "*",
            "a.*.com",
            "foo*.com",
            "Upper.com",
            "-a.com",
            "a..b",
            "",
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}
