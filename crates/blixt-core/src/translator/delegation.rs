//! Address delegation: Gateways of a class whose AddressPool has `delegateToLoadBalancer` get
//! their addresses from a Service of type LoadBalancer (MetalLB, a cloud load balancer) rather
//! than from Blixt. The translator stays pure: it names the Service each such Gateway needs
//! and its ports ([`Delegation`]), and takes the addresses the load balancer gave it from
//! [`ObjectIndex::delegated_addresses`], which the controller fills from those Services'
//! `status.loadBalancer.ingress`. Blixt's agents still load-balance the traffic that reaches
//! them for these addresses; they do not announce them (the load balancer does).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use blixt_gateway_api::{Gateway, GatewayClass};

use super::addresses::{AddressOutcome, AddressRequest};
use super::listeners::{ListenerEval, ListenerProtocol};
#[cfg(doc)]
use super::objects::ObjectIndex;
use super::objects::{ExpandedAddressPool, ObjectKey};
use crate::snapshot::Protocol;

/// Label on a delegated Service naming its Gateway (the Gateway API's well-known label; the
/// controller's admission policy lets it write only Services carrying it).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// Longest label value (and so Gateway name) a delegated Service can carry.
const MAX_LABEL_VALUE: usize = 63;

/// The Service of type LoadBalancer one delegating Gateway needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    pub gateway: ObjectKey,
    /// Name of the Service, in the Gateway's namespace ([`service_name`]).
    pub service: String,
    /// Ports of the Gateway's usable listeners (TLS listeners as TCP), sorted, no duplicates.
    pub ports: Vec<(Protocol, u16)>,
    /// The addresses taken from the Service's status and used in the snapshot (empty until
    /// the load balancer assigned some).
    pub addresses: Vec<IpAddr>,
}

/// Name of the delegated Service of Gateway `gateway`: `blixt-<name>`, dots turned into dashes
/// (a Service name is a DNS-1035 label); names that would exceed 63 characters are cut and get
/// a hash of the whole name, so two long names never share a Service.
pub fn service_name(gateway: &str) -> String {
    let name = format!("blixt-{}", gateway.replace('.', "-"));
    if name.len() <= MAX_LABEL_VALUE {
        return name;
    }
    // FNV-1a: stable across releases and processes, unlike std's hasher.
    let hash = gateway.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let cut = name[..54].trim_end_matches('-');
    format!("{cut}-{:08x}", hash as u32)
}

/// Whether `class`'s Gateways delegate their addresses (its AddressPool says so).
pub(crate) fn delegates(
    class: &GatewayClass,
    pools: &BTreeMap<String, ExpandedAddressPool>,
) -> bool {
    class
        .spec
        .parameters_ref
        .as_ref()
        .and_then(|p| pools.get(&p.name))
        .is_some_and(|p| p.delegate_to_load_balancer)
}

/// The addresses of a delegating Gateway: what its Service's status shows, minus those
/// another Gateway already holds (`taken`).
pub(crate) fn outcome(
    gw: &Gateway,
    key: &ObjectKey,
    request: &AddressRequest,
    delegated_addresses: &BTreeMap<ObjectKey, Vec<IpAddr>>,
    taken: &BTreeSet<IpAddr>,
) -> AddressOutcome {
    let mut o = AddressOutcome::default();
    let service = service_name(&key.name);
    if !request.statics.is_empty() {
        o.unusable.push(format!(
            "spec.addresses cannot be honoured: GatewayClass {:?} delegates addresses to the \
             LoadBalancer Service {service}, which gets them from the load balancer",
            gw.spec.gateway_class_name
        ));
        return o;
    }
    if key.name.len() > MAX_LABEL_VALUE {
        o.unusable.push(format!(
            "the Gateway name is longer than {MAX_LABEL_VALUE} characters, so its LoadBalancer \
             Service cannot carry the {GATEWAY_NAME_LABEL} label"
        ));
        return o;
    }
    let mut seen = BTreeSet::new();
    for &ip in delegated_addresses.get(key).into_iter().flatten() {
        if !seen.insert(ip) {
            continue;
        }
        if taken.contains(&ip) {
            o.unusable.push(format!(
                "address {ip} of the LoadBalancer Service {service} is already used by another Gateway"
            ));
        } else {
            o.assigned.push(ip);
        }
    }
    if o.assigned.is_empty() && o.unusable.is_empty() {
        o.missing.push(format!(
            "waiting for the load balancer to assign an address to Service {}/{service} \
             (status.loadBalancer.ingress)",
            key.namespace
        ));
    }
    o
}

/// The Service one delegating Gateway needs.
pub(crate) fn delegation(
    key: &ObjectKey,
    listeners: &[ListenerEval],
    addresses: &AddressOutcome,
) -> Delegation {
    let ports: BTreeSet<(Protocol, u16)> = listeners
        .iter()
        .filter(|l| l.usable())
        .filter_map(|l| {
            let protocol = match l.protocol {
                ListenerProtocol::Tcp | ListenerProtocol::Tls => Protocol::Tcp,
                ListenerProtocol::Udp => Protocol::Udp,
                ListenerProtocol::Unsupported => return None,
            };
            Some((protocol, l.port?))
        })
        .collect();
    Delegation {
        gateway: key.clone(),
        service: service_name(&key.name),
        ports: ports.into_iter().collect(),
        addresses: addresses.assigned.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_dns_labels_and_long_ones_stay_distinct() {
        assert_eq!(service_name("gw"), "blixt-gw");
        assert_eq!(service_name("web.example"), "blixt-web-example");
        let a = service_name(&format!("{}a", "x".repeat(70)));
        let b = service_name(&format!("{}b", "x".repeat(70)));
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.starts_with("blixt-xxx"));
    }
}
