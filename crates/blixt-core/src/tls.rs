//! TLS passthrough: the SNI tables the translator produces for TLS listeners.
//!
//! A TLS passthrough listener cannot be served by the XDP program alone: the backend depends on
//! the server name in the ClientHello, which arrives after the TCP handshake. The agent's TLS
//! proxy accepts the connection, reads the SNI, looks it up in the [`TlsFrontend`] of the
//! VIP:port it accepted on and splices bytes to a backend chosen by weight. A name that matches
//! no entry (or a ClientHello without SNI) is rejected by closing the connection during the
//! handshake (Gateway API: "SNI matching nothing is rejected by a reset or EOF").
//!
//! Entries are ordered by [hostname precedence](precedence): exact names first, then wildcards
//! with more labels after the `*`, so [`TlsFrontend::lookup`] returns the first match.

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::snapshot::{Backend, BackendState};

/// One TLS passthrough service point: every TLS listener of one Gateway on one address and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFrontend {
    /// Human name, `namespace/gateway/listener[+listener...]`.
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    /// SNI entries, most specific first (see [`precedence`]).
    pub routes: Vec<SniRoute>,
}

/// One SNI pattern of a TLS frontend and where its connections go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SniRoute {
    /// Exact name (`abc.example.com`) or wildcard (`*.example.com`, matching any name with
    /// at least one more label, `a.b.example.com` included, `example.com` excluded).
    pub hostname: String,
    /// Listener this entry belongs to.
    pub listener: String,
    /// `namespace/name` of the TLSRoute; `None` for an entry that only keeps names of a more
    /// specific listener from falling through to a less specific one (listener isolation): it
    /// has no backends and rejects everything.
    pub route: Option<String>,
    /// Weighted backends, as in [`crate::snapshot::Frontend::backends`].
    pub backends: Vec<Backend>,
    /// Weight share of new connections to reject (invalid backendRefs).
    pub reject_weight: u32,
}

impl SniRoute {
    /// Backends that take new connections: active with a non-zero weight.
    pub fn eligible_backends(&self) -> impl Iterator<Item = &Backend> {
        self.backends
            .iter()
            .filter(|b| b.state == BackendState::Active && b.weight > 0)
    }
}

impl TlsFrontend {
    /// The entry serving `sni`, if any. Entries are kept in precedence order, so the first
    /// match is the most specific one.
    pub fn lookup(&self, sni: &str) -> Option<&SniRoute> {
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        self.routes
            .iter()
            .find(|r| hostname_matches(&r.hostname, &sni))
    }
}

impl fmt::Display for TlsFrontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.vip {
            IpAddr::V4(a) => write!(f, "TLS/{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "TLS/[{a}]:{}", self.port),
        }
    }
}

/// Whether the server name `name` matches `pattern` (exact, or `*.suffix` with at least one
/// label in place of the `*`). Both are compared case-insensitively.
pub fn hostname_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            name.len() > suffix.len() + 1
                && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
        }
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// Orders hostname patterns from most to least specific, as Gateway API requires for both
/// listeners and routes: an exact name before any wildcard; among wildcards, more labels to the
/// right of the `*` first (`*.foo.example.com` before `*.example.com`). Ties are broken by
/// the text, so the order is total and deterministic.
pub fn precedence(a: &str, b: &str) -> Ordering {
    fn rank(h: &str) -> (u8, std::cmp::Reverse<usize>) {
        match h.strip_prefix("*.") {
            None => (0, std::cmp::Reverse(0)),
            Some(suffix) => (1, std::cmp::Reverse(suffix.split('.').count())),
        }
    }
    rank(a).cmp(&rank(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(h: &str) -> SniRoute {
        SniRoute {
            hostname: h.into(),
            listener: "tls".into(),
            route: Some(format!("ns/{h}")),
            backends: vec![],
            reject_weight: 0,
        }
    }

    #[test]
    fn wildcard_matches_one_or_more_labels_not_the_apex() {
        assert!(hostname_matches("*.example.com", "a.example.com"));
        assert!(hostname_matches("*.example.com", "a.b.example.com"));
        assert!(!hostname_matches("*.example.com", "example.com"));
        assert!(!hostname_matches("*.example.com", "aexample.com"));
        assert!(!hostname_matches("*.example.com", ".example.com"));
        assert!(hostname_matches("ABC.example.com", "abc.EXAMPLE.com"));
        assert!(!hostname_matches("abc.example.com", "x.abc.example.com"));
    }

    #[test]
    fn precedence_exact_then_longer_wildcards() {
        let mut v = vec![
            "*.com",
            "*.example.com",
            "b.example.com",
            "*.a.example.com",
            "a.com",
        ];
        v.sort_by(|a, b| precedence(a, b));
        assert_eq!(
            v,
            [
                "a.com",
                "b.example.com",
                "*.a.example.com",
                "*.example.com",
                "*.com"
            ]
        );
    }

    #[test]
    fn lookup_picks_most_specific() {
        let mut routes = vec![
            entry("*.com"),
            entry("abc.example.com"),
            entry("*.example.com"),
        ];
        routes.sort_by(|a, b| precedence(&a.hostname, &b.hostname));
        let fe = TlsFrontend {
            name: "ns/gw/tls".into(),
            vip: "192.0.2.1".parse().unwrap(),
            port: 443,
            routes,
        };
        let hit = |sni| fe.lookup(sni).map(|r| r.hostname.as_str());
        assert_eq!(hit("abc.example.com"), Some("abc.example.com"));
        assert_eq!(hit("ABC.example.com."), Some("abc.example.com"));
        assert_eq!(hit("other.example.com"), Some("*.example.com"));
        assert_eq!(hit("x.y.example.com"), Some("*.example.com"));
        assert_eq!(hit("foo.com"), Some("*.com"));
        assert_eq!(hit("example.org"), None);
        assert_eq!(hit(""), None);
    }
}
