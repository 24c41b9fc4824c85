//! Listener validity, supported kinds and conflicts (Gateway API `GatewaySpec.listeners`).

use std::collections::BTreeMap;

use blixt_gateway_api::gateways::{
    GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From, GatewayListenersTlsMode,
};
use blixt_gateway_api::{Gateway, GROUP};

use super::conditions::{condition_type as ct, reason, Cond};
use super::config::TranslatorConfig;
use super::hostname;
use super::objects::{namespace_of, Lookup, RouteKind};
use crate::snapshot::Protocol;

/// What a listener carries, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerProtocol {
    Tcp,
    Udp,
    /// TLS passthrough, the only TLS mode Blixt implements.
    Tls,
    /// Anything Blixt does not serve (HTTP, HTTPS, TLS Terminate, custom protocols).
    Unsupported,
}

impl ListenerProtocol {
    /// The transport the listener's port is bound on, for conflict and port checks.
    fn transport(self) -> Option<Protocol> {
        match self {
            ListenerProtocol::Tcp | ListenerProtocol::Tls => Some(Protocol::Tcp),
            ListenerProtocol::Udp => Some(Protocol::Udp),
            ListenerProtocol::Unsupported => None,
        }
    }

    /// The one route kind a listener of this protocol serves.
    fn route_kind(self) -> Option<RouteKind> {
        match self {
            ListenerProtocol::Tcp => Some(RouteKind::Tcp),
            ListenerProtocol::Udp => Some(RouteKind::Udp),
            ListenerProtocol::Tls => Some(RouteKind::Tls),
            ListenerProtocol::Unsupported => None,
        }
    }
}

/// One listener with its verdicts.
#[derive(Debug, Clone)]
pub(crate) struct ListenerEval {
    pub name: String,
    pub protocol: ListenerProtocol,
    /// The port, when it is in range.
    pub port: Option<u16>,
    /// Lower-cased hostname (TLS listeners only).
    pub hostname: Option<String>,
    pub supported_kinds: Vec<RouteKind>,
    pub namespaces: AllowedNamespaces,
    pub accepted: Cond,
    pub resolved_refs: Cond,
    pub conflicted: Cond,
    /// Routes attached (filled in by route attachment).
    pub attached_routes: i32,
}

/// `allowedRoutes.namespaces` of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AllowedNamespaces {
    /// The Gateway's namespace only (the default).
    Same,
    All,
    /// Namespaces whose labels match; `None` when `from: Selector` comes without a selector,
    /// which selects nothing.
    Selector(Option<NamespaceSelector>),
}

/// A label selector, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamespaceSelector {
    pub match_labels: Option<BTreeMap<String, String>>,
    /// (key, operator, values)
    pub expressions: Vec<(String, String, Vec<String>)>,
}

impl AllowedNamespaces {
    fn of(l: &GatewayListeners) -> Self {
        let ns = l
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref());
        match ns.and_then(|n| n.from.clone()) {
            None | Some(From::Same) => AllowedNamespaces::Same,
            Some(From::All) => AllowedNamespaces::All,
            Some(From::Selector) => {
                AllowedNamespaces::Selector(ns.and_then(|n| n.selector.as_ref()).map(|s| {
                    NamespaceSelector {
                        match_labels: s.match_labels.clone(),
                        expressions: s
                            .match_expressions
                            .iter()
                            .flatten()
                            .map(|e| {
                                (
                                    e.key.clone(),
                                    e.operator.clone(),
                                    e.values.clone().unwrap_or_default(),
                                )
                            })
                            .collect(),
                    }
                }))
            }
        }
    }

    /// Whether a route in `route_ns` may attach to a listener of a Gateway in `gateway_ns`.
    pub fn allows(&self, gateway_ns: &str, route_ns: &str, lookup: &Lookup<'_>) -> bool {
        match self {
            AllowedNamespaces::Same => gateway_ns == route_ns,
            AllowedNamespaces::All => true,
            AllowedNamespaces::Selector(None) => false,
            AllowedNamespaces::Selector(Some(sel)) => {
                let reqs: Vec<_> = sel
                    .expressions
                    .iter()
                    .map(|(key, operator, values)| super::selector::Requirement {
                        key,
                        operator,
                        values,
                    })
                    .collect();
                super::selector::matches(
                    sel.match_labels.as_ref(),
                    &reqs,
                    &lookup.namespace_labels(route_ns),
                )
            }
        }
    }
}

impl ListenerEval {
    /// Accepted and not conflicted: the listener can be programmed.
    pub fn usable(&self) -> bool {
        self.accepted.is_true()
    }
}

/// Evaluates every listener of `gw` in spec order.
pub(crate) fn evaluate(
    gw: &Gateway,
    config: &TranslatorConfig,
    lookup: &Lookup<'_>,
) -> Vec<ListenerEval> {
    let mut out: Vec<ListenerEval> = gw
        .spec
        .listeners
        .iter()
        .map(|l| evaluate_one(gw, l, config, lookup))
        .collect();
    mark_conflicts(&mut out);
    out
}

fn evaluate_one(
    gw: &Gateway,
    l: &GatewayListeners,
    config: &TranslatorConfig,
    lookup: &Lookup<'_>,
) -> ListenerEval {
    let tls_mode = l.tls.as_ref().and_then(|t| t.mode.clone());
    let (protocol, mut problem): (ListenerProtocol, Option<(&'static str, String)>) =
        match l.protocol.as_str() {
            "TCP" => (ListenerProtocol::Tcp, None),
            "UDP" => (ListenerProtocol::Udp, None),
            "TLS" => match tls_mode {
                Some(GatewayListenersTlsMode::Passthrough) => (ListenerProtocol::Tls, None),
                Some(GatewayListenersTlsMode::Terminate) => (
                    ListenerProtocol::Unsupported,
                    Some((
                        reason::UNSUPPORTED_VALUE,
                        "tls.mode Terminate is not supported: Blixt passes TLS through (use mode Passthrough)".into(),
                    )),
                ),
                None => (
                    ListenerProtocol::Unsupported,
                    Some((reason::UNSUPPORTED_VALUE, "protocol TLS requires tls.mode (Passthrough)".into())),
                ),
            },
            other => (
                ListenerProtocol::Unsupported,
                Some((
                    reason::UNSUPPORTED_PROTOCOL,
                    format!("protocol {other:?} is not supported: Blixt serves TCP, UDP and TLS (Passthrough)"),
                )),
            ),
        };

    let port = u16::try_from(l.port).ok().filter(|p| *p != 0);
    if problem.is_none() && port.is_none() {
        problem = Some((
            reason::UNSUPPORTED_VALUE,
            format!("port {} is out of range 1-65535", l.port),
        ));
    }
    let hostname = l
        .hostname
        .as_deref()
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase);
    if problem.is_none() {
        match protocol {
            ListenerProtocol::Tcp | ListenerProtocol::Udp if hostname.is_some() => {
                problem = Some((
                    reason::UNSUPPORTED_VALUE,
                    format!("hostname is not allowed on a {} listener", l.protocol),
                ));
            }
            ListenerProtocol::Tcp | ListenerProtocol::Udp if l.tls.is_some() => {
                problem = Some((
                    reason::UNSUPPORTED_VALUE,
                    format!("tls is not allowed on a {} listener", l.protocol),
                ));
            }
            ListenerProtocol::Tls => {
                if let Some(Err(e)) = hostname.as_deref().map(hostname::validate) {
                    problem = Some((reason::UNSUPPORTED_VALUE, e));
                }
            }
            _ => {}
        }
    }
    if problem.is_none() {
        if let (Some(p), Some(t)) = (port, protocol.transport()) {
            if config.reserved_ports.contains(&(t, p)) {
                problem = Some((
                    reason::PORT_UNAVAILABLE,
                    format!("{t} port {p} is reserved on this node"),
                ));
            }
        }
    }

    // Kinds: only the one kind matching the protocol is served; other kinds are reported and
    // left out. A TLS listener in Terminate mode names the right kind but serves none.
    let serveable = protocol.route_kind();
    let compatible = match l.protocol.as_str() {
        "TCP" => Some(RouteKind::Tcp),
        "UDP" => Some(RouteKind::Udp),
        "TLS" => Some(RouteKind::Tls),
        _ => None,
    };
    let mut supported_kinds = Vec::new();
    let mut invalid_kinds = Vec::new();
    match l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
        Some(kinds) if !kinds.is_empty() => {
            for k in kinds {
                let group = k.group.as_deref().unwrap_or(GROUP);
                match RouteKind::from_kind(&k.kind)
                    .filter(|rk| group == GROUP && Some(*rk) == compatible)
                {
                    Some(rk) if Some(rk) == serveable && !supported_kinds.contains(&rk) => {
                        supported_kinds.push(rk)
                    }
                    Some(_) => {}
                    None => invalid_kinds.push(if group.is_empty() || group == GROUP {
                        k.kind.clone()
                    } else {
                        format!("{group}/{}", k.kind)
                    }),
                }
            }
        }
        _ => supported_kinds.extend(serveable),
    }
    let resolved_refs = if !invalid_kinds.is_empty() {
        Cond::new(
            ct::RESOLVED_REFS,
            false,
            reason::INVALID_ROUTE_KINDS,
            format!(
                "route kinds not supported on a {} listener: {}",
                l.protocol,
                invalid_kinds.join(", ")
            ),
        )
    } else if let Some(c) = certificate_refs_problem(gw, l, lookup) {
        c
    } else {
        Cond::new(
            ct::RESOLVED_REFS,
            true,
            reason::RESOLVED_REFS,
            "all references resolved",
        )
    };

    let accepted = match problem {
        Some((r, msg)) => Cond::new(ct::ACCEPTED, false, r, msg),
        None => Cond::new(ct::ACCEPTED, true, reason::ACCEPTED, "listener accepted"),
    };
    ListenerEval {
        name: l.name.clone(),
        protocol,
        port,
        hostname,
        supported_kinds,
        namespaces: AllowedNamespaces::of(l),
        accepted,
        resolved_refs,
        conflicted: Cond::new(ct::CONFLICTED, false, reason::NO_CONFLICTS, "no conflicts"),
        attached_routes: 0,
    }
}

/// Checks `tls.certificateRefs` of a TLS listener in Terminate mode (Passthrough ignores them):
/// they must name core Secrets, and one in another namespace needs a ReferenceGrant. Secrets
/// are not in the object index, so existence is not checked; the listener is rejected for
/// its mode anyway, this only makes the status say everything that is wrong.
fn certificate_refs_problem(
    gw: &Gateway,
    l: &GatewayListeners,
    lookup: &Lookup<'_>,
) -> Option<Cond> {
    let tls = l.tls.as_ref()?;
    if tls.mode != Some(GatewayListenersTlsMode::Terminate) {
        return None;
    }
    let gw_ns = namespace_of(&gw.metadata);
    for c in tls.certificate_refs.iter().flatten() {
        let group = c.group.as_deref().unwrap_or("");
        let kind = c.kind.as_deref().unwrap_or("Secret");
        if !group.is_empty() || kind != "Secret" {
            return Some(Cond::new(
                ct::RESOLVED_REFS,
                false,
                reason::INVALID_CERTIFICATE_REF,
                format!(
                    "certificateRef {:?} is a {group}/{kind}, not a core Secret",
                    c.name
                ),
            ));
        }
        let ns = c.namespace.as_deref().unwrap_or(gw_ns);
        if ns != gw_ns
            && !lookup.grant_permits((GROUP, "Gateway", gw_ns), ("", "Secret", ns, &c.name))
        {
            return Some(Cond::new(
                ct::RESOLVED_REFS,
                false,
                reason::REF_NOT_PERMITTED,
                format!(
                    "certificateRef to Secret {ns}/{} is not permitted by any ReferenceGrant",
                    c.name
                ),
            ));
        }
    }
    None
}

/// Marks indistinct listeners (Gateway API "Distinct Listeners"): on one port, TCP listeners
/// conflict with every other TCP or TLS listener (ProtocolConflict), UDP listeners with other
/// UDP listeners (ProtocolConflict), and TLS listeners with TLS listeners of the same hostname
/// (HostnameConflict). TCP and UDP on one port are distinct. Conflicted listeners are all
/// rejected; none is picked as a winner. Listeners already rejected for another reason serve
/// nothing and so conflict with nothing.
fn mark_conflicts(listeners: &mut [ListenerEval]) {
    let mut by_port: BTreeMap<(Protocol, u16), Vec<usize>> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate() {
        if let (true, Some(t), Some(p)) = (l.usable(), l.protocol.transport(), l.port) {
            by_port.entry((t, p)).or_default().push(i);
        }
    }
    for ((transport, port), idx) in by_port {
        if idx.len() < 2 {
            continue;
        }
        let any_plain = idx
            .iter()
            .any(|&i| listeners[i].protocol != ListenerProtocol::Tls);
        if any_plain {
            let names: Vec<_> = idx.iter().map(|&i| listeners[i].name.clone()).collect();
            for &i in &idx {
                set_conflict(
                    &mut listeners[i],
                    reason::PROTOCOL_CONFLICT,
                    format!(
                        "{transport} port {port} is shared by listeners {}",
                        names.join(", ")
                    ),
                );
            }
            continue;
        }
        let mut by_host: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
        for &i in &idx {
            by_host
                .entry(listeners[i].hostname.clone())
                .or_default()
                .push(i);
        }
        for (host, same) in by_host {
            if same.len() < 2 {
                continue;
            }
            let names: Vec<_> = same.iter().map(|&i| listeners[i].name.clone()).collect();
            for &i in &same {
                set_conflict(
                    &mut listeners[i],
                    reason::HOSTNAME_CONFLICT,
                    format!(
                        "port {port} hostname {:?} is shared by listeners {}",
                        host.as_deref().unwrap_or(""),
                        names.join(", ")
                    ),
                );
            }
        }
    }
}

fn set_conflict(l: &mut ListenerEval, r: &'static str, message: String) {
    l.conflicted = Cond::new(ct::CONFLICTED, true, r, message.clone());
    l.accepted = Cond::new(ct::ACCEPTED, false, r, message);
}
