//! SNI routing: the translator's SNI tables compiled for lookup, and the backend choice.
//!
//! The translator ([`blixt_core::translator`]) already resolved the Gateway API semantics —
//! listener/route hostname intersection, listener isolation, oldest route per hostname,
//! invalid backends turned into a reject weight. What is left for the node is:
//!
//! - **Matching** a server name against the patterns of one VIP:port: an exact name beats any
//!   wildcard; among wildcards the one with more labels after the `*` wins; `*.example.com`
//!   matches `a.example.com` and `a.b.example.com`, never `example.com`. The order does not
//!   rely on how the input was sorted.
//! - **Choosing** a backend by weight, consistently for one client tuple: weighted rendezvous
//!   hashing (highest random weight) over the eligible backends plus one pseudo-backend for
//!   the reject share. The same tuple and table give the same answer on every node and run;
//!   removing a backend moves only the connections that were on it.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use blixt_core::tls::{hostname_matches, precedence, SniRoute, TlsFrontend};

/// Why a connection was not forwarded. Stable labels for metrics via [`RejectReason::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The ClientHello has no server name.
    NoSni,
    /// The server name matches no entry of the frontend.
    NoMatch,
    /// The name belongs to a listener hostname that has no route (listener isolation).
    NoRoute,
    /// The route has no eligible backend and no reject weight: nothing to send to.
    NoBackend,
    /// The weighted choice fell on the share of invalid backendRefs (Gateway API).
    InvalidBackend,
    /// The first bytes are not a TLS handshake.
    NotTls,
    /// A TLS record or ClientHello that does not parse.
    Malformed,
    /// The ClientHello is larger than the limit.
    TooLarge,
    /// The ClientHello did not arrive within the handshake timeout.
    HandshakeTimeout,
    /// The client closed or reset the connection before its ClientHello was complete (port
    /// scanners, TCP health checks).
    ClientClosed,
    /// Too many connections were waiting for their ClientHello.
    PendingLimit,
    /// The backend refused or did not answer in time.
    ConnectFailed,
    /// The connection arrived for a VIP:port with no SNI table (removed listener).
    UnknownFrontend,
}

impl RejectReason {
    /// Every reason, for exhaustive metric exports.
    pub const ALL: [RejectReason; 13] = [
        RejectReason::NoSni,
        RejectReason::NoMatch,
        RejectReason::NoRoute,
        RejectReason::NoBackend,
        RejectReason::InvalidBackend,
        RejectReason::NotTls,
        RejectReason::Malformed,
        RejectReason::TooLarge,
        RejectReason::HandshakeTimeout,
        RejectReason::ClientClosed,
        RejectReason::PendingLimit,
        RejectReason::ConnectFailed,
        RejectReason::UnknownFrontend,
    ];

    /// Snake-case label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::NoSni => "no_sni",
            RejectReason::NoMatch => "no_match",
            RejectReason::NoRoute => "no_route",
            RejectReason::NoBackend => "no_backend",
            RejectReason::InvalidBackend => "invalid_backend",
            RejectReason::NotTls => "not_tls",
            RejectReason::Malformed => "malformed",
            RejectReason::TooLarge => "too_large",
            RejectReason::HandshakeTimeout => "handshake_timeout",
            RejectReason::ClientClosed => "client_closed",
            RejectReason::PendingLimit => "pending_limit",
            RejectReason::ConnectFailed => "connect_failed",
            RejectReason::UnknownFrontend => "unknown_frontend",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Where one weighted share goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Backend(SocketAddr),
    Reject,
}

#[derive(Debug, Clone)]
struct Candidate {
    target: Target,
    weight: f64,
    /// Per-candidate hash seed, from its identity (so it survives table rebuilds).
    seed: u64,
}

/// One SNI entry ready for lookup.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    /// The pattern as the translator wrote it, lower-cased.
    pub hostname: String,
    pub listener: String,
    /// `namespace/name` of the TLSRoute, `None` for a listener-isolation entry.
    pub route: Option<String>,
    /// Stable label for per-route counters: the route name, or `listener:<hostname>`.
    pub label: String,
    candidates: Vec<Candidate>,
}

impl CompiledRoute {
    fn compile(r: &SniRoute) -> Self {
        let mut candidates: Vec<Candidate> = r
            .eligible_backends()
            .map(|b| {
                let addr = SocketAddr::new(b.addr.addr, b.addr.port);
                Candidate {
                    target: Target::Backend(addr),
                    weight: f64::from(b.weight),
                    seed: hash_addr(FNV_OFFSET, &addr),
                }
            })
            .collect();
        if r.reject_weight > 0 {
            candidates.push(Candidate {
                target: Target::Reject,
                weight: f64::from(r.reject_weight),
                seed: mix(FNV_OFFSET ^ 0x7e7e_c7ed),
            });
        }
        let hostname = r.hostname.to_ascii_lowercase();
        CompiledRoute {
            label: r
                .route
                .clone()
                .unwrap_or_else(|| format!("listener:{}", hostname)),
            hostname,
            listener: r.listener.clone(),
            route: r.route.clone(),
            candidates,
        }
    }

    /// Backends that may receive new connections, with their weights.
    pub fn backends(&self) -> impl Iterator<Item = (SocketAddr, u32)> + '_ {
        self.candidates.iter().filter_map(|c| match c.target {
            Target::Backend(a) => Some((a, c.weight as u32)),
            Target::Reject => None,
        })
    }

    /// Weighted rendezvous choice for one connection.
    fn choose(&self, tuple: &ConnTuple) -> Result<SocketAddr, RejectReason> {
        if self.route.is_none() {
            return Err(RejectReason::NoRoute);
        }
        let h = tuple.hash();
        let mut best: Option<(f64, Target)> = None;
        for c in &self.candidates {
            let x = mix(h ^ c.seed);
            // uniform in (0, 1]
            let u = ((x >> 11) + 1) as f64 / (1u64 << 53) as f64;
            let score = -u.ln() / c.weight;
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, c.target));
            }
        }
        match best {
            None => Err(RejectReason::NoBackend),
            Some((_, Target::Reject)) => Err(RejectReason::InvalidBackend),
            Some((_, Target::Backend(a))) => Ok(a),
        }
    }
}

/// The client side of a connection as the proxy accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnTuple {
    pub client: SocketAddr,
    /// The address the client connected to (the VIP:port).
    pub local: SocketAddr,
}

impl ConnTuple {
    fn hash(&self) -> u64 {
        mix(hash_addr(hash_addr(FNV_OFFSET, &self.client), &self.local))
    }
}

/// The SNI table of one VIP:port.
#[derive(Debug, Clone)]
pub struct FrontendTable {
    pub name: String,
    pub addr: SocketAddr,
    /// Entries in precedence order (exact first, then longer wildcards).
    routes: Vec<CompiledRoute>,
    exact: HashMap<String, usize>,
    /// Indexes of wildcard entries, most specific first.
    wildcards: Vec<usize>,
}

/// What to do with one connection.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'a> {
    Forward {
        route: &'a CompiledRoute,
        backend: SocketAddr,
    },
    Reject {
        /// The matched entry, when the rejection comes from its weights or isolation.
        route: Option<&'a CompiledRoute>,
        reason: RejectReason,
    },
}

impl FrontendTable {
    pub fn compile(fe: &TlsFrontend) -> Self {
        let mut routes: Vec<CompiledRoute> = fe.routes.iter().map(CompiledRoute::compile).collect();
        // Do not trust the input order: precedence is what Gateway API defines.
        routes.sort_by(|a, b| precedence(&a.hostname, &b.hostname));
        let mut exact = HashMap::new();
        let mut wildcards = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            if r.hostname.starts_with("*.") {
                wildcards.push(i);
            } else {
                exact.entry(r.hostname.clone()).or_insert(i);
            }
        }
        FrontendTable {
            name: fe.name.clone(),
            addr: SocketAddr::new(fe.vip, fe.port),
            routes,
            exact,
            wildcards,
        }
    }

    /// Entries in precedence order.
    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }

    /// The most specific entry matching `sni` (already normalized: lower case, no trailing
    /// dot, as the parser returns it).
    pub fn lookup(&self, sni: &str) -> Option<&CompiledRoute> {
        if let Some(&i) = self.exact.get(sni) {
            return Some(&self.routes[i]);
        }
        self.wildcards
            .iter()
            .map(|&i| &self.routes[i])
            .find(|r| hostname_matches(&r.hostname, sni))
    }

    /// Routing decision for a connection with server name `sni`.
    pub fn decide(&self, sni: Option<&str>, tuple: &ConnTuple) -> Decision<'_> {
        let Some(sni) = sni else {
            return Decision::Reject {
                route: None,
                reason: RejectReason::NoSni,
            };
        };
        let Some(route) = self.lookup(sni) else {
            return Decision::Reject {
                route: None,
                reason: RejectReason::NoMatch,
            };
        };
        match route.choose(tuple) {
            Ok(backend) => Decision::Forward { route, backend },
            Err(reason) => Decision::Reject {
                route: Some(route),
                reason,
            },
        }
    }
}

/// Every TLS frontend of a snapshot, by VIP:port.
#[derive(Debug, Clone, Default)]
pub struct SniTable {
    frontends: HashMap<SocketAddr, Arc<FrontendTable>>,
}

impl SniTable {
    /// Compiles the translator's output. When two entries share a VIP:port (the translator
    /// never produces that), the first one wins.
    pub fn new(frontends: &[TlsFrontend]) -> Self {
        let mut map = HashMap::new();
        for fe in frontends {
            let t = FrontendTable::compile(fe);
            map.entry(t.addr).or_insert_with(|| Arc::new(t));
        }
        SniTable { frontends: map }
    }

    pub fn frontend(&self, addr: &SocketAddr) -> Option<&Arc<FrontendTable>> {
        self.frontends.get(&normalize(*addr))
    }

    pub fn frontends(&self) -> impl Iterator<Item = &Arc<FrontendTable>> {
        self.frontends.values()
    }
}

/// An IPv4 address seen on a dual-stack socket (`::ffff:a.b.c.d`) is the IPv4 address.
pub(crate) fn normalize(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over the address bytes: a fixed, documented hash so that the choice is the same
/// on every node and every build (std's `DefaultHasher` promises neither).
fn hash_addr(mut h: u64, a: &SocketAddr) -> u64 {
    let a = normalize(*a);
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    };
    match a.ip() {
        IpAddr::V4(v4) => eat(&v4.octets()),
        IpAddr::V6(v6) => eat(&v6.octets()),
    }
    eat(&a.port().to_be_bytes());
    h
}

/// splitmix64's finalizer: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use blixt_core::snapshot::{Backend, BackendAddr, BackendState};

    fn be(addr: &str, weight: u32) -> Backend {
        let a: SocketAddr = addr.parse().unwrap();
        Backend {
            addr: BackendAddr {
                addr: a.ip(),
                port: a.port(),
            },
            weight,
            state: BackendState::Active,
        }
    }

    fn entry(h: &str, backends: Vec<Backend>, reject_weight: u32) -> SniRoute {
        SniRoute {
            hostname: h.into(),
            listener: "tls".into(),
            route: Some(format!("ns/{h}")),
            backends,
            reject_weight,
        }
    }

    fn frontend(routes: Vec<SniRoute>) -> TlsFrontend {
        TlsFrontend {
            name: "ns/gw/tls".into(),
            vip: "192.0.2.1".parse().unwrap(),
            port: 443,
            routes,
        }
    }

    fn tuple(i: u32) -> ConnTuple {
        ConnTuple {
            client: SocketAddr::new(
                IpAddr::V4((0x0a00_0000 + i / 50_000).into()),
                (1024 + i % 50_000) as u16,
            ),
            local: "192.0.2.1:443".parse().unwrap(),
        }
    }

    #[test]
    fn precedence_does_not_depend_on_input_order() {
        // deliberately least specific first
        let t = FrontendTable::compile(&frontend(vec![
            entry("*.com", vec![be("10.0.0.1:1", 1)], 0),
            entry("*.example.com", vec![be("10.0.0.2:1", 1)], 0),
            entry("*.wild.example.com", vec![be("10.0.0.3:1", 1)], 0),
            entry("a.example.com", vec![be("10.0.0.4:1", 1)], 0),
            entry("A.Wild.example.com", vec![be("10.0.0.5:1", 1)], 0),
        ]));
        let hit = |s: &str| t.lookup(s).map(|r| r.hostname.as_str());
        assert_eq!(hit("a.example.com"), Some("a.example.com"));
        assert_eq!(hit("b.example.com"), Some("*.example.com"));
        assert_eq!(hit("x.y.example.com"), Some("*.example.com"));
        assert_eq!(hit("x.wild.example.com"), Some("*.wild.example.com"));
        assert_eq!(hit("a.wild.example.com"), Some("a.wild.example.com"));
        assert_eq!(hit("a.b.wild.example.com"), Some("*.wild.example.com"));
        assert_eq!(hit("wild.example.com"), Some("*.example.com"));
        assert_eq!(hit("example.com"), Some("*.com"));
        assert_eq!(hit("com"), None);
        assert_eq!(hit("example.org"), None);
    }

    #[test]
    fn wildcard_never_matches_its_apex() {
        let t = FrontendTable::compile(&frontend(vec![entry(
            "*.example.com",
            vec![be("10.0.0.1:1", 1)],
            0,
        )]));
        let d = t.decide(Some("example.com"), &tuple(1));
        assert!(matches!(
            d,
            Decision::Reject {
                reason: RejectReason::NoMatch,
                ..
            }
        ));
        assert!(matches!(
            t.decide(None, &tuple(1)),
            Decision::Reject {
                reason: RejectReason::NoSni,
                ..
            }
        ));
    }

    #[test]
    fn isolation_entries_and_empty_routes_reject() {
        let mut iso = entry("*.internal.example.com", vec![], 0);
        iso.route = None;
        let t = FrontendTable::compile(&frontend(vec![
            iso,
            entry("*.example.com", vec![be("10.0.0.1:1", 1)], 0),
            entry("zero.example.com", vec![be("10.0.0.2:1", 0)], 0),
            entry(
                "term.example.com",
                vec![Backend {
                    state: BackendState::Terminating,
                    ..be("10.0.0.3:1", 5)
                }],
                0,
            ),
            entry("invalid.example.com", vec![], 3),
        ]));
        let reason = |s| match t.decide(Some(s), &tuple(7)) {
            Decision::Reject { reason, .. } => Some(reason),
            Decision::Forward { .. } => None,
        };
        assert_eq!(
            reason("a.internal.example.com"),
            Some(RejectReason::NoRoute)
        );
        assert_eq!(reason("zero.example.com"), Some(RejectReason::NoBackend));
        assert_eq!(reason("term.example.com"), Some(RejectReason::NoBackend));
        assert_eq!(
            reason("invalid.example.com"),
            Some(RejectReason::InvalidBackend)
        );
        assert_eq!(reason("other.example.com"), None);
    }

    #[test]
    fn weights_and_reject_share() {
        let t = FrontendTable::compile(&frontend(vec![entry(
            "a.example.com",
            vec![
                be("10.0.0.1:443", 50),
                be("10.0.0.2:443", 30),
                be("10.0.0.3:443", 0),
            ],
            20,
        )]));
        let n = 100_000;
        let mut counts: HashMap<Option<SocketAddr>, u32> = HashMap::new();
        for i in 0..n {
            let d = t.decide(Some("a.example.com"), &tuple(i));
            let k = match d {
                Decision::Forward { backend, .. } => Some(backend),
                Decision::Reject { reason, .. } => {
                    assert_eq!(reason, RejectReason::InvalidBackend);
                    None
                }
            };
            *counts.entry(k).or_default() += 1;
        }
        let share = |k: Option<&str>| {
            f64::from(*counts.get(&k.map(|s| s.parse().unwrap())).unwrap_or(&0)) * 100.0
                / f64::from(n)
        };
        assert!(
            (share(Some("10.0.0.1:443")) - 50.0).abs() < 1.0,
            "{counts:?}"
        );
        assert!(
            (share(Some("10.0.0.2:443")) - 30.0).abs() < 1.0,
            "{counts:?}"
        );
        assert!((share(None) - 20.0).abs() < 1.0, "{counts:?}");
        assert_eq!(share(Some("10.0.0.3:443")), 0.0);
    }

    #[test]
    fn choice_is_consistent_and_minimally_disruptive() {
        let three = FrontendTable::compile(&frontend(vec![entry(
            "a.example.com",
            vec![
                be("10.0.0.1:443", 1),
                be("10.0.0.2:443", 1),
                be("10.0.0.3:443", 1),
            ],
            0,
        )]));
        let two = FrontendTable::compile(&frontend(vec![entry(
            "a.example.com",
            vec![be("10.0.0.1:443", 1), be("10.0.0.2:443", 1)],
            0,
        )]));
        let pick = |t: &FrontendTable, i| match t.decide(Some("a.example.com"), &tuple(i)) {
            Decision::Forward { backend, .. } => backend,
            d => panic!("{d:?}"),
        };
        let removed: SocketAddr = "10.0.0.3:443".parse().unwrap();
        for i in 0..10_000 {
            let a = pick(&three, i);
            assert_eq!(a, pick(&three, i), "same tuple, same table");
            if a != removed {
                assert_eq!(
                    pick(&two, i),
                    a,
                    "connections off the removed backend stay put"
                );
            }
        }
    }

    #[test]
    fn table_by_address_with_mapped_v4() {
        let table = SniTable::new(&[frontend(vec![entry(
            "a.example.com",
            vec![be("10.0.0.1:1", 1)],
            0,
        )])]);
        assert!(table.frontend(&"192.0.2.1:443".parse().unwrap()).is_some());
        assert!(table
            .frontend(&"[::ffff:192.0.2.1]:443".parse().unwrap())
            .is_some());
        assert!(table.frontend(&"192.0.2.1:444".parse().unwrap()).is_none());
    }
}
