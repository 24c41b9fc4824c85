//! The Gateway API translator: objects in, dataplane [`Snapshot`] and statuses out.
//!
//! A pure function ([`translate`]) holds all of Blixt's Gateway API semantics: GatewayClass
//! acceptance, listener validity and conflicts, Gateway addresses, route attachment
//! (parentRef sectionName/port, allowedRoutes, hostname intersection), ReferenceGrants,
//! backend resolution through Service and EndpointSlice, weights, the oldest-route-wins rule,
//! and every condition. `docs/translator.md` describes the rules and the choices made.
//!
//! Statuses are returned in the generated Gateway API status types, holding only what Blixt
//! owns (its conditions; its own `status.parents` entries), ready for a server-side apply with
//! Blixt's field manager. Conditions keep their `lastTransitionTime` while type, status and
//! reason are unchanged, so translating the same objects twice yields identical statuses.

pub mod conditions;
pub mod config;

mod addresses;
mod backends;
mod delegation;
mod hostname;
mod listeners;
mod objects;
mod routes;
mod selector;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::rc::Rc;

use blixt_gateway_api::gatewayclasses::GatewayClassStatusSupportedFeatures;
use blixt_gateway_api::gateways::{
    GatewayStatusAddresses, GatewayStatusListeners, GatewayStatusListenersSupportedKinds,
};
use blixt_gateway_api::tcproutes::{TcpRouteStatusParents, TcpRouteStatusParentsParentRef};
use blixt_gateway_api::tlsroutes::{TlsRouteStatusParents, TlsRouteStatusParentsParentRef};
use blixt_gateway_api::udproutes::{UdpRouteStatusParents, UdpRouteStatusParentsParentRef};
use blixt_gateway_api::{
    Gateway, GatewayClass, GatewayClassStatus, GatewayStatus, TcpRouteStatus, TlsRouteStatus,
    UdpRouteStatus, GROUP,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::snapshot::{Frontend, FrontendKey, Protocol, Snapshot};
use crate::tls::{precedence, SniRoute, TlsFrontend};

use self::addresses::{AddressOutcome, AddressPolicy, AddressRequest, Claimant, IP_ADDRESS_TYPE};
use self::backends::ResolvedRef;
use self::conditions::{condition_type as ct, reason, stamp, Cond};
use self::listeners::{ListenerEval, ListenerProtocol};
use self::objects::{age_key, refs, Lookup, RouteKind, RouteView};
use self::routes::{FullParentRef, ParentOutcome, SniHostname};

pub use self::config::{
    IpNet, TranslatorConfig, ADDRESS_POOL_KIND, CONTROLLER_NAME, GATEWAY_EXISTS_FINALIZER,
    PARAMETERS_GROUP, SUPPORTED_FEATURES,
};
pub use self::delegation::{
    service_name as delegated_service_name, Delegation, GATEWAY_NAME_LABEL,
};
pub use self::objects::{ExpandedAddressPool, ObjectIndex, ObjectKey};

/// What [`translate`] produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// TCP and UDP frontends. `generation` is 0: the caller numbers snapshots.
    pub snapshot: Snapshot,
    /// SNI tables of TLS passthrough listeners, one per Gateway address and port.
    pub tls: Vec<TlsFrontend>,
    /// The Gateway each frontend and SNI table belongs to.
    pub owners: Owners,
    pub statuses: Statuses,
    /// The LoadBalancer Services accepted Gateways of delegating classes need (their
    /// addresses are not Blixt's to announce).
    pub delegations: Vec<Delegation>,
}

/// The Gateway each frontend and SNI table of a [`Translation`] belongs to. (Frontend keys are
/// unique in a valid snapshot, and so are the VIP and port of SNI tables.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owners {
    /// Owner of each frontend of [`Translation::snapshot`], by its key.
    pub frontends: BTreeMap<FrontendKey, ObjectKey>,
    /// Owner of each SNI table of [`Translation::tls`], by its VIP and port.
    pub tls: BTreeMap<(IpAddr, u16), ObjectKey>,
}

impl Owners {
    /// The Gateway `frontend` belongs to.
    pub fn of_frontend(&self, frontend: &Frontend) -> Option<&ObjectKey> {
        self.frontends.get(&frontend.key)
    }

    /// The Gateway the SNI table `tls` belongs to.
    pub fn of_tls(&self, tls: &TlsFrontend) -> Option<&ObjectKey> {
        self.tls.get(&(tls.vip, tls.port))
    }
}

/// The status Blixt writes for every object it owns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Statuses {
    /// Every GatewayClass naming Blixt's controller, by name.
    pub gateway_classes: BTreeMap<String, GatewayClassOutcome>,
    /// Every Gateway of those classes.
    pub gateways: BTreeMap<ObjectKey, GatewayStatus>,
    /// Routes with a parentRef to a Blixt Gateway, or with a stale Blixt entry to clear.
    /// `parents` holds Blixt's entries only; entries of other controllers must be kept by the
    /// writer.
    pub tcp_routes: BTreeMap<ObjectKey, TcpRouteStatus>,
    pub udp_routes: BTreeMap<ObjectKey, UdpRouteStatus>,
    pub tls_routes: BTreeMap<ObjectKey, TlsRouteStatus>,
}

/// A GatewayClass's status, and whether it must carry [`GATEWAY_EXISTS_FINALIZER`] (some
/// Gateway uses it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayClassOutcome {
    pub status: GatewayClassStatus,
    pub finalizer: bool,
}

/// One GatewayClass naming Blixt's controller, through the rules.
#[derive(Debug)]
struct ClassEval<'a> {
    obj: &'a GatewayClass,
    accepted: Cond,
    /// Which addresses its Gateways may have: its AddressPool's, or the default pool's and
    /// static ranges. (Shared with the Gateways, which outlive no class but are kept beside
    /// them.)
    policy: Rc<AddressPolicy<'a>>,
    /// Whether its Gateways get their addresses from a LoadBalancer Service instead.
    delegates: bool,
}

/// Blixt's GatewayClasses, by name.
type Classes<'a> = BTreeMap<&'a str, ClassEval<'a>>;

/// One Gateway of a Blixt GatewayClass, through the rules.
#[derive(Debug)]
struct GatewayEval<'a> {
    obj: &'a Gateway,
    key: ObjectKey,
    generation: i64,
    class_accepted: bool,
    /// Its class's address policy (see [`ClassEval::policy`]).
    policy: Rc<AddressPolicy<'a>>,
    /// Its class delegates addresses (see [`ClassEval::delegates`]).
    delegates: bool,
    listeners: Vec<ListenerEval>,
    request: AddressRequest,
    accepted: Cond,
    addresses: AddressOutcome,
    programmed: Cond,
}

/// One route, resolved.
#[derive(Debug)]
struct RouteEval<'a> {
    view: RouteView<'a>,
    /// Resolved backendRefs, per rule.
    rules: Vec<Vec<ResolvedRef>>,
    parents: Vec<ParentOutcome>,
}

/// What the dataplane phase produces.
#[derive(Debug, Default)]
struct Dataplane {
    /// Sorted by key.
    frontends: Vec<Frontend>,
    /// Sorted by VIP and port.
    tls: Vec<TlsFrontend>,
    owners: Owners,
}

/// Builds one kind's `status.parents` from (parentRef, conditions) pairs.
macro_rules! route_parents {
    ($parents:expr, $controller:expr, $entry:ident, $pref:ident) => {
        $parents
            .iter()
            .map(|(p, conditions)| $entry {
                conditions: conditions.clone(),
                controller_name: $controller.to_string(),
                parent_ref: $pref {
                    group: Some(p.group.clone()),
                    kind: Some(p.kind.clone()),
                    namespace: Some(p.namespace.clone()),
                    name: p.name.clone(),
                    section_name: p.section_name.clone(),
                    port: p.port,
                },
            })
            .collect()
    };
}

/// Translates `objects` into the dataplane state and statuses. `now` stamps conditions whose
/// status or reason changed.
///
/// The phases run in order, each a function of what the earlier ones produced: classes,
/// Gateways (listeners, address requests, `Accepted`), addresses (and `Programmed`), routes,
/// attached-route counts, the dataplane, and the statuses.
pub fn translate(objects: &ObjectIndex, config: &TranslatorConfig, now: &Time) -> Translation {
    let lookup = Lookup::new(objects);
    let classes = evaluate_classes(objects, config);
    let mut gateways = evaluate_gateways(objects, &classes, config, &lookup);
    let delegations = assign_addresses(&mut gateways, objects, config);
    let routes = evaluate_routes(objects, &gateways, &lookup);
    count_attached_routes(&mut gateways, &routes);
    let dataplane = build_dataplane(&gateways, &routes);
    let statuses = build_statuses(objects, &classes, &gateways, &routes, config, now);
    Translation {
        snapshot: Snapshot {
            generation: 0,
            frontends: dataplane.frontends,
        },
        tls: dataplane.tls,
        owners: dataplane.owners,
        statuses,
        delegations,
    }
}

/// Phase 1: the GatewayClasses naming Blixt's controller (the first of each name), with their
/// `Accepted` condition, pool and delegation.
fn evaluate_classes<'a>(objects: &'a ObjectIndex, config: &'a TranslatorConfig) -> Classes<'a> {
    let mut classes = Classes::new();
    for gc in refs(&objects.gateway_classes) {
        let name = gc.metadata.name.as_deref().unwrap_or("");
        if gc.spec.controller_name != config.controller_name || classes.contains_key(name) {
            continue;
        }
        let eval = ClassEval {
            obj: gc,
            accepted: class_condition(gc, name, &objects.address_pools, config),
            policy: Rc::new(class_policy(gc, &objects.address_pools, config)),
            delegates: delegation::delegates(gc, &objects.address_pools),
        };
        classes.insert(name, eval);
    }
    classes
}

/// Phase 2: the Gateways of Blixt's classes (the first of each key), oldest first, with their
/// listeners, address requests and `Accepted` condition. Addresses and `Programmed` are
/// pending.
fn evaluate_gateways<'a>(
    objects: &'a ObjectIndex,
    classes: &Classes<'a>,
    config: &TranslatorConfig,
    lookup: &Lookup<'_>,
) -> Vec<GatewayEval<'a>> {
    let mut seen = BTreeSet::new();
    let mut gws: Vec<(&Gateway, &ClassEval<'a>)> = refs(&objects.gateways)
        .filter_map(|g| Some((g, classes.get(g.spec.gateway_class_name.as_str())?)))
        .filter(|(g, _)| seen.insert(ObjectKey::of(&g.metadata)))
        .collect();
    gws.sort_by_key(|(g, _)| age_key(&g.metadata));
    gws.into_iter()
        .map(|(g, class)| {
            let class_accepted = class.accepted.is_true();
            let listeners = listeners::evaluate(g, config, lookup);
            let request = addresses::request(g, class.policy.pool);
            let accepted = gateway_accepted(g, class_accepted, &listeners, &request);
            GatewayEval {
                obj: g,
                key: ObjectKey::of(&g.metadata),
                generation: g.metadata.generation.unwrap_or(0),
                class_accepted,
                policy: class.policy.clone(),
                delegates: class.delegates,
                listeners,
                request,
                accepted,
                addresses: AddressOutcome::default(),
                programmed: Cond::new(ct::PROGRAMMED, false, reason::PENDING, ""),
            }
        })
        .collect()
}

/// Phase 3: the addresses of accepted Gateways (a rejected one must not hold pool addresses),
/// within their classes' address policies and never one of `objects.reserved_addresses`,
/// from their pools or, for delegating classes, from the load balancer
/// (`objects.delegated_addresses`); then each Gateway's `Programmed` condition, frontends
/// reserved oldest first. Returns the LoadBalancer Services the delegating Gateways need.
fn assign_addresses(
    gateways: &mut [GatewayEval<'_>],
    objects: &ObjectIndex,
    config: &TranslatorConfig,
) -> Vec<Delegation> {
    let claimants: Vec<Claimant<'_>> = gateways
        .iter()
        .filter(|g| g.accepted.is_true() && !g.delegates)
        .map(|g| Claimant {
            key: g.key.clone(),
            request: &g.request,
            policy: &g.policy,
            previous: g
                .obj
                .status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter_map(|a| a.value.parse::<IpAddr>().ok())
                .collect(),
        })
        .collect();
    let mut assigned = addresses::assign(&claimants, &objects.reserved_addresses);
    let taken: BTreeSet<IpAddr> = assigned.values().flat_map(|o| o.assigned.clone()).collect();
    let mut delegations = Vec::new();
    let mut frontends_used = 0usize;
    for g in gateways.iter_mut() {
        g.addresses = assigned.remove(&g.key).unwrap_or_default();
        if g.accepted.is_true() && g.delegates {
            g.addresses = delegation::outcome(
                g.obj,
                &g.key,
                &g.request,
                &objects.delegated_addresses,
                &taken,
            );
            delegations.push(delegation::delegation(&g.key, &g.listeners, &g.addresses));
        }
        g.programmed = gateway_programmed(g, config, &mut frontends_used);
    }
    delegations
}

/// Phase 4: every route (the first of each kind and key), its backends resolved (endpoints
/// that cannot be backends, Gateway addresses among them, left out) and its parentRefs to
/// Blixt Gateways attached (or not) to their listeners.
fn evaluate_routes<'a>(
    objects: &'a ObjectIndex,
    gateways: &[GatewayEval<'_>],
    lookup: &Lookup<'_>,
) -> Vec<RouteEval<'a>> {
    // every Gateway address: never a backend
    let vips: BTreeSet<IpAddr> = gateways
        .iter()
        .flat_map(|g| g.addresses.assigned.iter().copied())
        .collect();
    let gateway_index: BTreeMap<&ObjectKey, usize> = gateways
        .iter()
        .enumerate()
        .map(|(i, g)| (&g.key, i))
        .collect();
    let mut routes: Vec<RouteEval<'_>> = Vec::new();
    let mut route_keys = BTreeSet::new();
    let views = refs(&objects.tcp_routes)
        .map(RouteView::tcp)
        .chain(refs(&objects.udp_routes).map(RouteView::udp))
        .chain(refs(&objects.tls_routes).map(RouteView::tls));
    for view in views {
        if !route_keys.insert((view.kind, view.key.clone())) {
            continue;
        }
        let rules = view
            .rules
            .iter()
            .map(|r| backends::resolve_rule(&view, r, lookup, &vips))
            .collect();
        let problem = routes::route_problem(&view);
        let mut parents: Vec<ParentOutcome> = Vec::new();
        for p in &view.parent_refs {
            let full = FullParentRef::new(p, &view.key.namespace);
            let Some(&gi) = full
                .is_gateway()
                .then(|| {
                    gateway_index.get(&ObjectKey::new(full.namespace.clone(), full.name.clone()))
                })
                .flatten()
            else {
                continue; // Not a Blixt Gateway: another controller's business.
            };
            if parents.iter().any(|o| o.parent_ref == full) {
                continue;
            }
            let g = &gateways[gi];
            parents.push(routes::attach(
                &view,
                full,
                gi,
                &g.key.namespace,
                &g.listeners,
                problem.as_deref(),
                lookup,
            ));
        }
        routes.push(RouteEval {
            view,
            rules,
            parents,
        });
    }
    routes
}

/// Phase 5: each listener's `attachedRoutes`. A route counts once per listener, however many
/// parentRefs lead there.
fn count_attached_routes(gateways: &mut [GatewayEval<'_>], routes: &[RouteEval<'_>]) {
    let mut attached: BTreeSet<(usize, usize, usize)> = BTreeSet::new();
    for (ri, r) in routes.iter().enumerate() {
        for p in &r.parents {
            for a in &p.attachments {
                attached.insert((p.gateway, a.listener, ri));
            }
        }
    }
    for &(gi, li, _) in &attached {
        gateways[gi].listeners[li].attached_routes += 1;
    }
}

/// Phase 6: the frontends and SNI tables of programmed Gateways, one per address and usable
/// listener (TLS listeners: per address and port), with their owners.
fn build_dataplane(gateways: &[GatewayEval<'_>], routes: &[RouteEval<'_>]) -> Dataplane {
    let by_listener = routes_by_listener(routes);
    let mut out = Dataplane::default();
    for (gi, g) in gateways.iter().enumerate() {
        if !g.programmed.is_true() {
            continue;
        }
        let on_listener = |li: usize| routes_on(&by_listener, gi, li);
        for &vip in &g.addresses.assigned {
            let mut tls_ports: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
            for (li, l) in g.listeners.iter().enumerate() {
                let (true, Some(port)) = (l.usable(), l.port) else {
                    continue;
                };
                let protocol = match l.protocol {
                    ListenerProtocol::Tcp => Protocol::Tcp,
                    ListenerProtocol::Udp => Protocol::Udp,
                    ListenerProtocol::Tls => {
                        tls_ports.entry(port).or_default().push(li);
                        continue;
                    }
                    ListenerProtocol::Unsupported => continue,
                };
                // Several routes on one TCP/UDP listener: only the oldest carries traffic.
                let (backends, reject_weight) = on_listener(li)
                    .first()
                    .and_then(|(r, _)| r.rules.first())
                    .map(|refs| backends::weigh(refs, vip.is_ipv4()))
                    .unwrap_or_default();
                let key = FrontendKey {
                    vip,
                    port,
                    protocol,
                };
                out.owners
                    .frontends
                    .entry(key)
                    .or_insert_with(|| g.key.clone());
                out.frontends.push(Frontend {
                    name: format!("{}/{}", g.key, l.name),
                    key,
                    backends,
                    reject_weight,
                });
            }
            for (port, lis) in tls_ports {
                out.owners
                    .tls
                    .entry((vip, port))
                    .or_insert_with(|| g.key.clone());
                out.tls
                    .push(tls_frontend(g, gi, vip, port, &lis, &by_listener));
            }
        }
    }
    out.frontends.sort_by_key(|f| f.key);
    out.tls.sort_by_key(|t| (t.vip, t.port));
    out
}

/// Phase 7: the status of every GatewayClass, Gateway and route Blixt owns.
fn build_statuses(
    objects: &ObjectIndex,
    classes: &Classes<'_>,
    gateways: &[GatewayEval<'_>],
    routes: &[RouteEval<'_>],
    config: &TranslatorConfig,
    now: &Time,
) -> Statuses {
    let mut statuses = Statuses::default();
    for (name, class) in classes {
        let outcome = class_outcome(objects, name, class, config, now);
        statuses.gateway_classes.insert(name.to_string(), outcome);
    }
    for g in gateways {
        statuses
            .gateways
            .insert(g.key.clone(), gateway_status(g, now));
    }
    for r in routes {
        insert_route_status(&mut statuses, r, &config.controller_name, now);
    }
    statuses
}

/// A GatewayClass's status, and whether a Gateway uses it.
fn class_outcome(
    objects: &ObjectIndex,
    name: &str,
    class: &ClassEval<'_>,
    config: &TranslatorConfig,
    now: &Time,
) -> GatewayClassOutcome {
    let gc = class.obj;
    let mut features: Vec<String> = config.supported_features.clone();
    features.sort();
    features.dedup();
    GatewayClassOutcome {
        status: GatewayClassStatus {
            conditions: Some(stamp(
                vec![class.accepted.clone()],
                gc.metadata.generation.unwrap_or(0),
                gc.status.as_ref().and_then(|s| s.conditions.as_deref()),
                now,
            )),
            supported_features: class.accepted.is_true().then(|| {
                features
                    .into_iter()
                    .map(|name| GatewayClassStatusSupportedFeatures { name })
                    .collect()
            }),
        },
        finalizer: objects
            .gateways
            .iter()
            .any(|g| g.spec.gateway_class_name == *name),
    }
}

/// Puts a route's `status.parents` (Blixt's entries) into `statuses`, unless it has no
/// Blixt parent and no stale Blixt entry to clear.
fn insert_route_status(statuses: &mut Statuses, r: &RouteEval<'_>, controller: &str, now: &Time) {
    let had_entry = r
        .view
        .previous
        .iter()
        .any(|p| p.controller_name == controller);
    if r.parents.is_empty() && !had_entry {
        return;
    }
    let resolved = backends::resolved_refs_condition(&r.rules.concat());
    let parents: Vec<(FullParentRef, Vec<Condition>)> = r
        .parents
        .iter()
        .map(|p| {
            let previous = r
                .view
                .previous
                .iter()
                .find(|prev| {
                    prev.controller_name == controller
                        && FullParentRef::new(&prev.parent_ref, &r.view.key.namespace)
                            == p.parent_ref
                })
                .map(|prev| prev.conditions.as_slice());
            let conds = vec![p.accepted.clone(), resolved.clone()];
            (
                p.parent_ref.clone(),
                stamp(conds, r.view.generation, previous, now),
            )
        })
        .collect();
    let key = r.view.key.clone();
    match r.view.kind {
        RouteKind::Tcp => {
            statuses.tcp_routes.insert(
                key,
                TcpRouteStatus {
                    parents: route_parents!(
                        parents,
                        controller,
                        TcpRouteStatusParents,
                        TcpRouteStatusParentsParentRef
                    ),
                },
            );
        }
        RouteKind::Udp => {
            statuses.udp_routes.insert(
                key,
                UdpRouteStatus {
                    parents: route_parents!(
                        parents,
                        controller,
                        UdpRouteStatusParents,
                        UdpRouteStatusParentsParentRef
                    ),
                },
            );
        }
        RouteKind::Tls => {
            statuses.tls_routes.insert(
                key,
                TlsRouteStatus {
                    parents: route_parents!(
                        parents,
                        controller,
                        TlsRouteStatusParents,
                        TlsRouteStatusParentsParentRef
                    ),
                },
            );
        }
    }
}

/// Which addresses a class's Gateways may have: its AddressPool's addresses and static
/// ranges, or the default pool and the configured static ranges.
fn class_policy<'a>(
    gc: &GatewayClass,
    pools: &'a BTreeMap<String, ExpandedAddressPool>,
    config: &'a TranslatorConfig,
) -> AddressPolicy<'a> {
    match gc
        .spec
        .parameters_ref
        .as_ref()
        .and_then(|p| Some((&p.name, pools.get(&p.name)?)))
    {
        Some((name, p)) => AddressPolicy::new(
            &p.addresses,
            &p.static_address_ranges,
            format!("{ADDRESS_POOL_KIND} {name:?}"),
        ),
        None => AddressPolicy::new(
            &config.address_pool,
            &config.static_address_ranges,
            "the default address pool".to_string(),
        ),
    }
}

fn class_condition(
    gc: &GatewayClass,
    name: &str,
    pools: &BTreeMap<String, ExpandedAddressPool>,
    config: &TranslatorConfig,
) -> Cond {
    if let Some(allowed) = &config.gateway_class_names {
        if !allowed.contains(name) {
            return Cond::new(
                ct::ACCEPTED,
                false,
                reason::UNSUPPORTED,
                format!(
                    "GatewayClass {name:?} is not one this controller serves ({})",
                    allowed.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }
    if let Some(p) = &gc.spec.parameters_ref {
        if p.group != PARAMETERS_GROUP || p.kind != ADDRESS_POOL_KIND {
            return Cond::new(
                ct::ACCEPTED,
                false,
                reason::INVALID_PARAMETERS,
                format!(
                    "parametersRef {}/{} {:?}: Blixt's GatewayClass parameters are {PARAMETERS_GROUP}/{ADDRESS_POOL_KIND}",
                    p.group, p.kind, p.name
                ),
            );
        }
        if !pools.contains_key(&p.name) {
            return Cond::new(
                ct::ACCEPTED,
                false,
                reason::INVALID_PARAMETERS,
                format!("parametersRef: {ADDRESS_POOL_KIND} {:?} not found", p.name),
            );
        }
    }
    Cond::new(
        ct::ACCEPTED,
        true,
        reason::ACCEPTED,
        "GatewayClass accepted by Blixt",
    )
}

fn gateway_accepted(
    g: &Gateway,
    class_accepted: bool,
    listeners: &[ListenerEval],
    request: &AddressRequest,
) -> Cond {
    if !class_accepted {
        return Cond::unknown(
            ct::ACCEPTED,
            reason::PENDING,
            format!(
                "waiting for GatewayClass {:?} to be accepted",
                g.spec.gateway_class_name
            ),
        );
    }
    if let Some(p) = g
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref())
    {
        return Cond::new(
            ct::ACCEPTED,
            false,
            reason::INVALID_PARAMETERS,
            format!(
                "infrastructure.parametersRef {}/{} {:?}: Blixt defines no Gateway parameters kind",
                p.group, p.kind, p.name
            ),
        );
    }
    if !request.unsupported.is_empty() {
        return Cond::new(
            ct::ACCEPTED,
            false,
            reason::UNSUPPORTED_ADDRESS,
            request.unsupported.join("; "),
        );
    }
    let invalid: Vec<&str> = listeners
        .iter()
        .filter(|l| !l.usable())
        .map(|l| l.name.as_str())
        .collect();
    if listeners.is_empty() {
        Cond::new(
            ct::ACCEPTED,
            false,
            reason::LISTENERS_NOT_VALID,
            "the Gateway has no listeners",
        )
    } else if invalid.len() == listeners.len() {
        Cond::new(
            ct::ACCEPTED,
            false,
            reason::LISTENERS_NOT_VALID,
            format!("no valid listener: {} are invalid", invalid.join(", ")),
        )
    } else if !invalid.is_empty() {
        Cond::new(
            ct::ACCEPTED,
            true,
            reason::LISTENERS_NOT_VALID,
            format!(
                "listener(s) {} are invalid; the others are served",
                invalid.join(", ")
            ),
        )
    } else {
        Cond::new(ct::ACCEPTED, true, reason::ACCEPTED, "Gateway accepted")
    }
}

/// The Gateway's Programmed condition; reserves its frontends in `used` when it fits.
fn gateway_programmed(g: &GatewayEval<'_>, config: &TranslatorConfig, used: &mut usize) -> Cond {
    let not = |r, m: String| Cond::new(ct::PROGRAMMED, false, r, m);
    if !g.class_accepted {
        return not(
            reason::PENDING,
            "waiting for the GatewayClass to be accepted".into(),
        );
    }
    if !g.accepted.is_true() {
        return not(reason::INVALID, "the Gateway is not accepted".into());
    }
    let a = &g.addresses;
    if !a.unusable.is_empty() {
        return not(reason::ADDRESS_NOT_USABLE, a.unusable.join("; "));
    }
    if a.assigned.is_empty() || a.missing_requested {
        let why = if a.missing.is_empty() {
            "no address requested and the address pool is empty".to_string()
        } else {
            a.missing.join("; ")
        };
        return not(reason::ADDRESS_NOT_ASSIGNED, why);
    }
    let per_address = g
        .listeners
        .iter()
        .filter(|l| {
            l.usable() && matches!(l.protocol, ListenerProtocol::Tcp | ListenerProtocol::Udp)
        })
        .count()
        + g.listeners
            .iter()
            .filter(|l| l.usable() && l.protocol == ListenerProtocol::Tls)
            .filter_map(|l| l.port)
            .collect::<BTreeSet<_>>()
            .len();
    let needed = per_address * a.assigned.len();
    if let Some(max) = config.max_frontends {
        if *used + needed > max {
            return not(
                reason::NO_RESOURCES,
                format!(
                    "the Gateway needs {needed} frontends, {} of {max} are free",
                    max.saturating_sub(*used)
                ),
            );
        }
    }
    *used += needed;
    let mut msg = format!(
        "programmed on {}",
        a.assigned
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !a.missing.is_empty() {
        msg.push_str(&format!(" ({})", a.missing.join("; ")));
    }
    Cond::new(ct::PROGRAMMED, true, reason::PROGRAMMED, msg)
}

/// The SNI table of one Gateway's TLS listeners on `vip:port`.
///
/// Listener isolation: a name belongs to the most specific listener hostname matching it. So a
/// route entry of a listener is dropped when a more specific listener's hostname covers it,
/// and every listener hostname gets an entry (rejecting, when no route provides one) so its
/// names cannot fall through to a less specific listener. For one hostname on one listener,
/// the route whose own hostname is the most specific wins (exact before wildcard, longer
/// wildcard before shorter; not the listener/route intersection, which is the same for all of
/// them), then the oldest.
fn tls_frontend(
    g: &GatewayEval<'_>,
    gi: usize,
    vip: IpAddr,
    port: u16,
    lis: &[usize],
    routes: &ByListener<'_, '_>,
) -> TlsFrontend {
    let more_specific = |a: Option<&str>, b: Option<&str>| match (a, b) {
        (Some(a), Some(b)) => precedence(a, b).is_lt(),
        (Some(_), None) => true,
        (None, _) => false,
    };
    let mut entries: Vec<SniRoute> = Vec::new();
    for &li in lis {
        let l = &g.listeners[li];
        // (route, hostname) candidates, oldest route first; the stable sort ranks them by the
        // route's own hostname, so among equally specific ones the oldest stays first.
        let mut candidates: Vec<(&RouteEval<'_>, &SniHostname)> = routes_on(routes, gi, li)
            .iter()
            .flat_map(|&(r, hostnames)| hostnames.iter().map(move |h| (r, h)))
            .collect();
        candidates.sort_by(|(_, a), (_, b)| precedence(&a.own, &b.own));
        for (r, h) in candidates {
            let Some(refs) = r.rules.first() else {
                continue;
            };
            let h = &h.effective;
            let stolen = lis.iter().any(|&m| {
                let hm = g.listeners[m].hostname.as_deref();
                m != li
                    && more_specific(hm, l.hostname.as_deref())
                    && hm.is_some_and(|hm| hostname::covers(hm, h))
            });
            if stolen || entries.iter().any(|e| e.hostname == *h) {
                continue;
            }
            let (backends, reject_weight) = backends::weigh(refs, vip.is_ipv4());
            entries.push(SniRoute {
                hostname: h.clone(),
                listener: l.name.clone(),
                route: Some(r.view.key.to_string()),
                backends,
                reject_weight,
            });
        }
    }
    for &li in lis {
        let l = &g.listeners[li];
        if let Some(h) = &l.hostname {
            if !entries.iter().any(|e| e.hostname == *h) {
                entries.push(SniRoute {
                    hostname: h.clone(),
                    listener: l.name.clone(),
                    route: None,
                    backends: Vec::new(),
                    reject_weight: 0,
                });
            }
        }
    }
    entries.sort_by(|a, b| precedence(&a.hostname, &b.hostname));
    TlsFrontend {
        name: format!(
            "{}/{}",
            g.key,
            lis.iter()
                .map(|&i| g.listeners[i].name.as_str())
                .collect::<Vec<_>>()
                .join("+")
        ),
        vip,
        port,
        routes: entries,
    }
}

/// The routes attached to each listener, keyed by (Gateway index, listener index), oldest
/// first, with their hostnames there.
type ByListener<'r, 'a> = BTreeMap<(usize, usize), Vec<(&'r RouteEval<'a>, &'r [SniHostname])>>;

/// Indexes the routes by listener once. (Scanning every route for each listener made the
/// translation quadratic: 10,000 single-route listeners took 1.5 s.)
fn routes_by_listener<'r, 'a>(routes: &'r [RouteEval<'a>]) -> ByListener<'r, 'a> {
    let mut by: ByListener<'r, 'a> = BTreeMap::new();
    for r in routes {
        for p in &r.parents {
            for a in &p.attachments {
                by.entry((p.gateway, a.listener))
                    .or_default()
                    .push((r, a.hostnames.as_slice()));
            }
        }
    }
    // stable: routes of the same age keep their order
    for v in by.values_mut() {
        v.sort_by_key(|(r, _)| age_key(r.view.meta));
    }
    by
}

/// Routes attached to listener `li` of Gateway `gi`, oldest first, with their hostnames there.
fn routes_on<'m, 'r, 'a>(
    by: &'m ByListener<'r, 'a>,
    gi: usize,
    li: usize,
) -> &'m [(&'r RouteEval<'a>, &'r [SniHostname])] {
    by.get(&(gi, li)).map_or(&[], Vec::as_slice)
}

fn gateway_status(g: &GatewayEval<'_>, now: &Time) -> GatewayStatus {
    let prev = g.obj.status.as_ref();
    let listeners = g
        .listeners
        .iter()
        .map(|l| {
            let programmed = if !l.usable() {
                Cond::new(
                    ct::PROGRAMMED,
                    false,
                    reason::INVALID,
                    "the listener is not accepted",
                )
            } else if g.programmed.is_true() {
                Cond::new(
                    ct::PROGRAMMED,
                    true,
                    reason::PROGRAMMED,
                    "listener programmed",
                )
            } else {
                Cond::new(
                    ct::PROGRAMMED,
                    false,
                    reason::PENDING,
                    format!("the Gateway is not programmed ({})", g.programmed.reason),
                )
            };
            let previous = prev
                .and_then(|s| s.listeners.as_ref())
                .and_then(|ls| ls.iter().find(|p| p.name == l.name))
                .map(|p| p.conditions.as_slice());
            GatewayStatusListeners {
                name: l.name.clone(),
                attached_routes: l.attached_routes,
                supported_kinds: Some(
                    l.supported_kinds
                        .iter()
                        .map(|k| GatewayStatusListenersSupportedKinds {
                            group: Some(GROUP.to_string()),
                            kind: k.kind().to_string(),
                        })
                        .collect(),
                ),
                conditions: stamp(
                    vec![
                        l.accepted.clone(),
                        programmed,
                        l.resolved_refs.clone(),
                        l.conflicted.clone(),
                    ],
                    g.generation,
                    previous,
                    now,
                ),
            }
        })
        .collect();
    let addresses: Vec<GatewayStatusAddresses> = g
        .addresses
        .assigned
        .iter()
        .map(|ip| GatewayStatusAddresses {
            r#type: Some(IP_ADDRESS_TYPE.to_string()),
            value: ip.to_string(),
        })
        .collect();
    GatewayStatus {
        addresses: (!addresses.is_empty()).then_some(addresses),
        attached_listener_sets: None,
        conditions: Some(stamp(
            vec![g.accepted.clone(), g.programmed.clone()],
            g.generation,
            prev.and_then(|s| s.conditions.as_deref()),
            now,
        )),
        listeners: Some(listeners),
    }
}
