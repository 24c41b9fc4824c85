//! backendRef resolution (Service port → EndpointSlice endpoints) and weights.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use blixt_gateway_api::GROUP;
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::addresses::special_address;
use super::conditions::{condition_type as ct, reason, Cond};
use super::objects::{BackendRefView, Lookup, RouteView};
use crate::snapshot::{Backend, BackendAddr, BackendState, MAX_WEIGHT};

/// One endpoint of a resolved backendRef.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub addr: BackendAddr,
    pub state: BackendState,
}

/// Why a backendRef is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefError {
    pub reason: &'static str,
    pub message: String,
}

/// A backendRef with its weight and either its endpoints or why it is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedRef {
    pub weight: u32,
    pub target: Result<Vec<Endpoint>, RefError>,
    /// Endpoint addresses left out because they can never be backends (see
    /// [`unusable_backend`]), each with why: `127.0.0.1 (loopback)`.
    pub ignored: Vec<String>,
}

/// Resolves every backendRef of one rule. Endpoints that cannot be backends ([`unusable_backend`]
/// with `vips`, every Gateway address) are left out and listed in [`ResolvedRef::ignored`].
pub(crate) fn resolve_rule(
    route: &RouteView<'_>,
    rule: &[BackendRefView],
    lookup: &Lookup<'_>,
    vips: &BTreeSet<IpAddr>,
) -> Vec<ResolvedRef> {
    rule.iter()
        .map(|b| {
            let mut ignored = Vec::new();
            let target = resolve_one(route, b, lookup).map(|mut eps| {
                eps.retain(|e| match unusable_backend(e.addr.addr, vips) {
                    Some(why) => {
                        ignored.push(format!("{} ({why})", e.addr.addr));
                        false
                    }
                    None => true,
                });
                eps
            });
            ResolvedRef {
                weight: b.weight.unwrap_or(1).clamp(0, MAX_WEIGHT as i32) as u32,
                target,
                ignored,
            }
        })
        .collect()
}

/// Why an endpoint address can never be a backend: loopback, link-local, unspecified or
/// multicast (addresses the Kubernetes API refuses in Endpoints, but not in EndpointSlices
/// nor in standalone files), or the address of a Gateway (a backend equal to a VIP sends the
/// load balancer's traffic back to itself: a TLS backend on its own VIP would make the proxy
/// connect to itself). `None` for a usable one.
pub(crate) fn unusable_backend(ip: IpAddr, vips: &BTreeSet<IpAddr>) -> Option<&'static str> {
    special_address(ip).or_else(|| vips.contains(&ip).then_some("a Gateway address"))
}

/// Most ignored endpoint addresses a `ResolvedRefs` message names.
const MAX_IGNORED_LISTED: usize = 8;

fn resolve_one(
    route: &RouteView<'_>,
    b: &BackendRefView,
    lookup: &Lookup<'_>,
) -> Result<Vec<Endpoint>, RefError> {
    let err = |reason, message: String| Err(RefError { reason, message });
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        let gk = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        return err(
            reason::INVALID_KIND,
            format!(
                "backendRef {:?} is a {gk}: only core Services are supported",
                b.name
            ),
        );
    }
    let route_ns = route.key.namespace.as_str();
    let ns = b.namespace.as_deref().unwrap_or(route_ns);
    if ns != route_ns
        && !lookup.grant_permits(
            (GROUP, route.kind.kind(), route_ns),
            ("", "Service", ns, &b.name),
        )
    {
        return err(
            reason::REF_NOT_PERMITTED,
            format!(
                "backendRef to Service {ns}/{} is not permitted: no ReferenceGrant in {ns} allows {} from {route_ns}",
                b.name,
                route.kind.kind()
            ),
        );
    }
    let Some(svc) = lookup.service(ns, &b.name) else {
        return err(
            reason::BACKEND_NOT_FOUND,
            format!("Service {ns}/{} not found", b.name),
        );
    };
    let Some(port) = b.port else {
        return err(
            reason::BACKEND_NOT_FOUND,
            format!(
                "backendRef to Service {ns}/{} has no port (required for Services)",
                b.name
            ),
        );
    };
    // A Service may carry the same port number for TCP and UDP (DNS does): prefer the port
    // of the route's transport, and only report a protocol mismatch when there is none.
    let transport = route.kind.transport().to_string();
    let ports = || svc.spec.iter().flat_map(|s| s.ports.iter().flatten());
    let Some(svc_port) = ports()
        .find(|p| p.port == port && p.protocol.as_deref().unwrap_or("TCP") == transport)
        .or_else(|| ports().find(|p| p.port == port))
    else {
        return err(
            reason::BACKEND_NOT_FOUND,
            format!("Service {ns}/{} has no port {port}", b.name),
        );
    };
    let protocol = svc_port.protocol.as_deref().unwrap_or("TCP");
    if protocol != transport {
        return err(
            reason::UNSUPPORTED_PROTOCOL,
            format!(
                "Service {ns}/{} port {port} is {protocol}, a {} needs {transport}",
                b.name,
                route.kind.kind()
            ),
        );
    }
    Ok(endpoints(svc_port, lookup.endpoint_slices(ns, &b.name)))
}

/// Endpoints of one Service port. The slice port is matched to the Service port by name (and
/// protocol); its number is the resolved targetPort. A slice port without a number means "all
/// ports", and a slice without a ports list (hand-written slices in standalone mode) is read
/// the same way: the Service's numeric targetPort, else its port, is used.
///
/// Ready endpoints are active; serving and terminating ones keep their flows
/// ([`BackendState::Terminating`]); the rest are left out. Per the EndpointSlice API, a missing
/// `ready` or `serving` means true and a missing `terminating` means false.
fn endpoints(svc_port: &ServicePort, slices: &[&EndpointSlice]) -> Vec<Endpoint> {
    let name = svc_port.name.as_deref().unwrap_or("");
    let protocol = svc_port.protocol.as_deref().unwrap_or("TCP");
    let fallback_port = match &svc_port.target_port {
        Some(IntOrString::Int(p)) => *p,
        _ => svc_port.port,
    };
    let mut out: Vec<Endpoint> = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            continue; // FQDN slices name hosts, not addresses.
        }
        let port = match slice.ports.as_deref() {
            None => Some(fallback_port),
            Some(ports) => ports
                .iter()
                .find(|p| {
                    p.name.as_deref().unwrap_or("") == name
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.port.unwrap_or(fallback_port)),
        };
        let Some(port) = port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0) else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            let c = ep.conditions.clone().unwrap_or_default();
            let ready = c.ready.unwrap_or(true);
            let serving = c.serving.unwrap_or(true);
            let terminating = c.terminating.unwrap_or(false);
            let state = if ready {
                BackendState::Active
            } else if serving && terminating {
                BackendState::Terminating
            } else {
                continue;
            };
            for a in &ep.addresses {
                let Ok(ip) = a.parse::<IpAddr>() else {
                    continue;
                };
                let addr = BackendAddr { addr: ip, port };
                match out.iter_mut().find(|e| e.addr == addr) {
                    Some(e) if state == BackendState::Active => e.state = state,
                    Some(_) => {}
                    None => out.push(Endpoint { addr, state }),
                }
            }
        }
    }
    out
}

/// The route's `ResolvedRefs` condition: true when every backendRef resolved, else the reason
/// of the first invalid one, with every problem in the message.
///
/// Endpoints left out ([`ResolvedRef::ignored`]) do not make a ref invalid (its Service
/// resolved; it just has fewer endpoints, as with endpoints that are not ready): they are
/// named in the message.
pub(crate) fn resolved_refs_condition(refs: &[ResolvedRef]) -> Cond {
    let mut cond = refs_condition(refs);
    let ignored: BTreeSet<&str> = refs
        .iter()
        .flat_map(|r| r.ignored.iter().map(String::as_str))
        .collect();
    if !ignored.is_empty() {
        let mut listed: Vec<&str> = ignored.iter().copied().take(MAX_IGNORED_LISTED).collect();
        let more = format!(
            "and {} more",
            ignored.len().saturating_sub(MAX_IGNORED_LISTED)
        );
        if ignored.len() > MAX_IGNORED_LISTED {
            listed.push(&more);
        }
        cond.message = format!(
            "{}; endpoint addresses ignored, never used as backends: {}",
            cond.message,
            listed.join(", ")
        );
    }
    cond
}

fn refs_condition(refs: &[ResolvedRef]) -> Cond {
    let errors: Vec<&RefError> = refs
        .iter()
        .filter_map(|r| r.target.as_ref().err())
        .collect();
    match errors.first() {
        None => Cond::new(
            ct::RESOLVED_REFS,
            true,
            reason::RESOLVED_REFS,
            "all backendRefs resolved",
        ),
        Some(first) => Cond::new(
            ct::RESOLVED_REFS,
            false,
            first.reason,
            errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// Largest multiplier used to turn per-ref weights into per-endpoint weights exactly; past it
/// the shares are rounded.
const MAX_SCALE: u128 = 1_000_000_000;

/// Dataplane backends of one rule for one address family, and the weight to reject.
///
/// A backendRef's weight is its share of new flows, split evenly over its active endpoints of
/// the family. The share of an invalid ref, and of a valid ref with no active endpoint of the
/// family ("a Service with no endpoints"), is rejected. Weights are scaled by the least common
/// multiple of the endpoint counts so the split is exact, then reduced by their common divisor
/// and, if still above [`MAX_WEIGHT`], scaled down (a non-zero weight never rounds to zero).
/// Terminating endpoints are listed with weight 0: they keep their flows and take no new ones.
pub(crate) fn weigh(refs: &[ResolvedRef], ipv4: bool) -> (Vec<Backend>, u32) {
    let mut reject: u128 = 0;
    let mut groups: Vec<(u128, Vec<BackendAddr>)> = Vec::new();
    let mut terminating: Vec<BackendAddr> = Vec::new();
    for r in refs {
        let w = u128::from(r.weight);
        let Ok(eps) = &r.target else {
            reject += w;
            continue;
        };
        let fam = eps.iter().filter(|e| e.addr.addr.is_ipv4() == ipv4);
        let active: Vec<BackendAddr> = fam
            .clone()
            .filter(|e| e.state == BackendState::Active)
            .map(|e| e.addr)
            .collect();
        terminating.extend(
            fam.filter(|e| e.state == BackendState::Terminating)
                .map(|e| e.addr),
        );
        if active.is_empty() {
            reject += w;
        } else {
            groups.push((w, active));
        }
    }
    let scale = groups
        .iter()
        .filter(|(w, _)| *w > 0)
        .map(|(_, a)| a.len() as u128)
        .fold(1u128, |acc, n| lcm(acc, n).min(MAX_SCALE));

    let mut weights: BTreeMap<BackendAddr, (u128, BackendState)> = BTreeMap::new();
    for (w, active) in &groups {
        let each = w * scale / active.len() as u128;
        for a in active {
            let e = weights.entry(*a).or_insert((0, BackendState::Active));
            e.0 += each;
            e.1 = BackendState::Active;
        }
    }
    for a in terminating {
        weights.entry(a).or_insert((0, BackendState::Terminating));
    }
    let mut reject = reject * scale;

    // Reduce, then fit into the dataplane's range.
    let g = weights
        .values()
        .map(|(w, _)| *w)
        .chain([reject])
        .fold(0u128, gcd);
    if g > 1 {
        weights.values_mut().for_each(|(w, _)| *w /= g);
        reject /= g;
    }
    let max = weights
        .values()
        .map(|(w, _)| *w)
        .chain([reject])
        .max()
        .unwrap_or(0);
    let fit = |v: u128| -> u32 {
        let v = if max > u128::from(MAX_WEIGHT) && v > 0 {
            (v * u128::from(MAX_WEIGHT) / max).max(1)
        } else {
            v
        };
        v as u32
    };
    let backends = weights
        .into_iter()
        .map(|(addr, (w, state))| Backend {
            addr,
            weight: fit(w),
            state,
        })
        .collect();
    (backends, fit(reject))
}

fn gcd(a: u128, b: u128) -> u128 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: u128, b: u128) -> u128 {
    if a == 0 || b == 0 {
        a.max(b)
    } else {
        a / gcd(a, b) * b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(a: &str, port: u16, state: BackendState) -> Endpoint {
        Endpoint {
            addr: BackendAddr {
                addr: a.parse().unwrap(),
                port,
            },
            state,
        }
    }

    fn ok(weight: u32, eps: Vec<Endpoint>) -> ResolvedRef {
        ResolvedRef {
            weight,
            target: Ok(eps),
            ignored: Vec::new(),
        }
    }

    fn bad(weight: u32) -> ResolvedRef {
        ResolvedRef {
            weight,
            target: Err(RefError {
                reason: reason::BACKEND_NOT_FOUND,
                message: "gone".into(),
            }),
            ignored: Vec::new(),
        }
    }

    fn weights(b: &[Backend]) -> Vec<(String, u32, BackendState)> {
        b.iter()
            .map(|b| (b.addr.to_string(), b.weight, b.state))
            .collect()
    }

    #[test]
    fn shares_split_exactly_over_endpoints() {
        use BackendState::Active;
        // 70/30 over 2 and 3 endpoints: 35 per A endpoint, 10 per B endpoint, i.e. 7 : 2.
        let refs = [
            ok(
                70,
                vec![ep("10.0.0.1", 80, Active), ep("10.0.0.2", 80, Active)],
            ),
            ok(
                30,
                vec![
                    ep("10.0.1.1", 80, Active),
                    ep("10.0.1.2", 80, Active),
                    ep("10.0.1.3", 80, Active),
                ],
            ),
            ok(0, vec![ep("10.0.2.1", 80, Active)]),
        ];
        let (b, reject) = weigh(&refs, true);
        assert_eq!(reject, 0);
        assert_eq!(
            weights(&b),
            vec![
                ("10.0.0.1:80".into(), 7, Active),
                ("10.0.0.2:80".into(), 7, Active),
                ("10.0.1.1:80".into(), 2, Active),
                ("10.0.1.2:80".into(), 2, Active),
                ("10.0.1.3:80".into(), 2, Active),
                ("10.0.2.1:80".into(), 0, Active),
            ]
        );
    }

    #[test]
    fn invalid_and_empty_refs_are_rejected_by_weight() {
        use BackendState::{Active, Terminating};
        let refs = [
            ok(2, vec![ep("10.0.0.1", 80, Active)]),
            bad(1),
            ok(1, vec![ep("10.0.0.9", 80, Terminating)]),
            ok(5, vec![ep("fd00::1", 80, Active)]),
        ];
        let (b, reject) = weigh(&refs, true);
        assert_eq!(
            weights(&b),
            vec![
                ("10.0.0.1:80".into(), 2, Active),
                ("10.0.0.9:80".into(), 0, Terminating)
            ]
        );
        // Rejected: invalid (1) + terminating only (1) + no IPv4 endpoint (5).
        assert_eq!(reject, 7);
    }

    #[test]
    fn weights_fit_the_dataplane_range() {
        use BackendState::Active;
        let refs = [
            ok(
                MAX_WEIGHT,
                vec![
                    ep("10.0.0.1", 80, Active),
                    ep("10.0.0.2", 80, Active),
                    ep("10.0.0.3", 80, Active),
                ],
            ),
            ok(1, vec![ep("10.0.0.4", 80, Active)]),
            bad(MAX_WEIGHT),
        ];
        let (b, reject) = weigh(&refs, true);
        assert!(
            b.iter().all(|b| b.weight <= MAX_WEIGHT && b.weight > 0),
            "{b:?}"
        );
        assert!(reject <= MAX_WEIGHT);
        assert_eq!(reject, MAX_WEIGHT);
        assert_eq!(b[0].weight, 333_333);
    }
}
