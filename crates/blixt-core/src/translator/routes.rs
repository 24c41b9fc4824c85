//! Route attachment: parentRef defaults and matching, allowedRoutes, hostname intersection.

use blixt_gateway_api::GROUP;

use super::conditions::{condition_type as ct, reason, Cond};
use super::hostname;
use super::listeners::ListenerEval;
use super::objects::{Lookup, ParentRefView, RouteKind, RouteView};
use crate::tls::precedence;

/// Most backendRefs a rule may hold (Gateway API v1).
pub(crate) const MAX_BACKEND_REFS: usize = 16;
/// Most hostnames a TLSRoute may hold.
pub(crate) const MAX_HOSTNAMES: usize = 1024;

/// A parentRef with Gateway API's defaults filled in: group `gateway.networking.k8s.io`,
/// kind `Gateway`, the route's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FullParentRef {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<i32>,
}

impl FullParentRef {
    pub fn new(p: &ParentRefView, route_ns: &str) -> Self {
        FullParentRef {
            group: p.group.clone().unwrap_or_else(|| GROUP.to_string()),
            kind: p.kind.clone().unwrap_or_else(|| "Gateway".to_string()),
            namespace: p.namespace.clone().unwrap_or_else(|| route_ns.to_string()),
            name: p.name.clone(),
            section_name: p.section_name.clone().filter(|s| !s.is_empty()),
            port: p.port,
        }
    }

    pub fn is_gateway(&self) -> bool {
        self.group == GROUP && self.kind == "Gateway"
    }
}

/// A route attached to one listener, with the hostnames it serves there (TLS only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attachment {
    pub listener: usize,
    /// One entry per distinct effective hostname, sorted by it.
    pub hostnames: Vec<SniHostname>,
}

/// A hostname a TLSRoute serves on one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SniHostname {
    /// The listener/route intersection: the names this entry takes.
    pub effective: String,
    /// The route's own hostname that produced it (the most specific one, when several
    /// intersect to the same name). Routes competing for one effective hostname are ranked by
    /// this, not by the intersection (Gateway API v1.7 `TLSRouteSpec.hostnames`,
    /// `GatewayRouteHostnameIntersectionPrecedence`).
    pub own: String,
}

/// Verdict for one parentRef that names a Blixt Gateway.
#[derive(Debug, Clone)]
pub(crate) struct ParentOutcome {
    pub parent_ref: FullParentRef,
    pub gateway: usize,
    pub accepted: Cond,
    pub attachments: Vec<Attachment>,
}

/// Problems with the route itself that make every parent reject it
/// (`Accepted=False/UnsupportedValue`). The CRD's validation forbids these, but manifests read
/// from files in standalone mode are not validated by an API server.
pub(crate) fn route_problem(route: &RouteView<'_>) -> Option<String> {
    if route.rules.len() != 1 {
        return Some(format!(
            "a {} must have exactly one rule, it has {}",
            route.kind.kind(),
            route.rules.len()
        ));
    }
    let n = route.rules[0].len();
    if n > MAX_BACKEND_REFS {
        return Some(format!(
            "a rule may have at most {MAX_BACKEND_REFS} backendRefs, it has {n}"
        ));
    }
    if route.kind == RouteKind::Tls {
        if route.hostnames.is_empty() {
            return Some("a TLSRoute needs at least one hostname".to_string());
        }
        if route.hostnames.len() > MAX_HOSTNAMES {
            return Some(format!(
                "a TLSRoute may have at most {MAX_HOSTNAMES} hostnames"
            ));
        }
        if let Some(e) = route
            .hostnames
            .iter()
            .find_map(|h| hostname::validate(h).err())
        {
            return Some(e);
        }
    }
    None
}

/// Matches one parentRef against the listeners of the Gateway it names.
///
/// sectionName picks the listener of that name, port every listener on that port; with both,
/// both must match; with neither, every listener is a candidate. No candidate:
/// NoMatchingParent. Candidates whose supportedKinds lack the route's kind or whose
/// allowedRoutes exclude the route's namespace: NotAllowedByListeners. For TLSRoutes, allowed
/// listeners whose hostname intersects none of the route's: NoMatchingListenerHostname.
/// Otherwise the route is accepted and attached to every remaining listener (listeners that
/// are not themselves accepted included: attachedRoutes counts them, they carry no traffic).
pub(crate) fn attach(
    route: &RouteView<'_>,
    parent_ref: FullParentRef,
    gateway: usize,
    gateway_ns: &str,
    listeners: &[ListenerEval],
    problem: Option<&str>,
    lookup: &Lookup<'_>,
) -> ParentOutcome {
    let outcome = |accepted, attachments| ParentOutcome {
        parent_ref: parent_ref.clone(),
        gateway,
        accepted,
        attachments,
    };
    if let Some(p) = problem {
        return outcome(
            Cond::new(ct::ACCEPTED, false, reason::UNSUPPORTED_VALUE, p),
            vec![],
        );
    }
    let candidates: Vec<usize> = listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            parent_ref
                .section_name
                .as_ref()
                .is_none_or(|s| *s == l.name)
                && parent_ref
                    .port
                    .is_none_or(|p| l.port.is_some_and(|lp| i32::from(lp) == p))
        })
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        let what = match (&parent_ref.section_name, parent_ref.port) {
            (Some(s), Some(p)) => format!("no listener named {s:?} on port {p}"),
            (Some(s), None) => format!("no listener named {s:?}"),
            (None, Some(p)) => format!("no listener on port {p}"),
            (None, None) => "the Gateway has no listeners".to_string(),
        };
        return outcome(
            Cond::new(
                ct::ACCEPTED,
                false,
                reason::NO_MATCHING_PARENT,
                format!(
                    "Gateway {}/{}: {what}",
                    parent_ref.namespace, parent_ref.name
                ),
            ),
            vec![],
        );
    }
    let route_ns = route.key.namespace.as_str();
    let allowed: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| {
            let l = &listeners[i];
            l.supported_kinds.contains(&route.kind)
                && l.namespaces.allows(gateway_ns, route_ns, lookup)
        })
        .collect();
    if allowed.is_empty() {
        let names: Vec<&str> = candidates
            .iter()
            .map(|&i| listeners[i].name.as_str())
            .collect();
        return outcome(
            Cond::new(
                ct::ACCEPTED,
                false,
                reason::NOT_ALLOWED_BY_LISTENERS,
                format!(
                    "listener(s) {} do not allow a {} from namespace {route_ns}",
                    names.join(", "),
                    route.kind.kind()
                ),
            ),
            vec![],
        );
    }
    let mut attachments = Vec::new();
    for i in allowed {
        let l = &listeners[i];
        let hostnames = if route.kind == RouteKind::Tls {
            let mut hs: Vec<SniHostname> = route
                .hostnames
                .iter()
                .filter_map(|h| {
                    let own = h.to_ascii_lowercase();
                    hostname::intersect(l.hostname.as_deref(), &own)
                        .map(|effective| SniHostname { effective, own })
                })
                .collect();
            // Per effective hostname, the most specific own hostname first; keep that one.
            hs.sort_by(|a, b| {
                a.effective
                    .cmp(&b.effective)
                    .then_with(|| precedence(&a.own, &b.own))
            });
            hs.dedup_by(|later, first| later.effective == first.effective);
            if hs.is_empty() {
                continue;
            }
            hs
        } else {
            Vec::new()
        };
        attachments.push(Attachment {
            listener: i,
            hostnames,
        });
    }
    if attachments.is_empty() {
        return outcome(
            Cond::new(
                ct::ACCEPTED,
                false,
                reason::NO_MATCHING_LISTENER_HOSTNAME,
                format!(
                    "no listener hostname intersects the route's hostnames {}",
                    route.hostnames.join(", ")
                ),
            ),
            vec![],
        );
    }
    outcome(
        Cond::new(ct::ACCEPTED, true, reason::ACCEPTED, "route accepted"),
        attachments,
    )
}
