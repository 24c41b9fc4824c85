//! Gateway addresses: static `spec.addresses`, and allocation from the configured pool.
//!
//! Allocation is deterministic and sticky: Gateways are served in namespace/name order, and
//! each first gets back the pool addresses its status already shows (so adding a Gateway never
//! moves another one's VIP), then free pool addresses in pool order.

use std::collections::BTreeMap;
use std::net::IpAddr;

use blixt_gateway_api::Gateway;

use super::config::TranslatorConfig;
use super::objects::ObjectKey;

/// `spec.addresses` type for IP addresses (the default).
pub(crate) const IP_ADDRESS_TYPE: &str = "IPAddress";

/// What a Gateway asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct AddressRequest {
    /// Static addresses, in spec order, deduplicated.
    pub statics: Vec<IpAddr>,
    /// Pool addresses wanted.
    pub slots: Vec<Slot>,
    /// Entries Blixt cannot honour (type Hostname or unknown, unparseable values).
    pub unsupported: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// One address of this family, when the pool has the family at all (no `spec.addresses`).
    V4,
    V6,
    /// One address of any family (an `IPAddress` entry without a value).
    Any,
}

impl Slot {
    fn fits(self, ip: IpAddr) -> bool {
        match self {
            Slot::V4 => ip.is_ipv4(),
            Slot::V6 => ip.is_ipv6(),
            Slot::Any => true,
        }
    }
}

/// Reads a Gateway's `spec.addresses`.
pub(crate) fn request(gw: &Gateway, pool: &[IpAddr]) -> AddressRequest {
    let mut req = AddressRequest::default();
    let spec = gw.spec.addresses.as_deref().unwrap_or_default();
    if spec.is_empty() {
        if pool.iter().any(IpAddr::is_ipv4) {
            req.slots.push(Slot::V4);
        }
        if pool.iter().any(IpAddr::is_ipv6) {
            req.slots.push(Slot::V6);
        }
        return req;
    }
    for a in spec {
        let ty = a.r#type.as_deref().unwrap_or(IP_ADDRESS_TYPE);
        let value = a.value.as_deref().unwrap_or("");
        if ty != IP_ADDRESS_TYPE {
            req.unsupported.push(format!(
                "address type {ty:?} ({value:?}) is not supported: Blixt binds IPAddress addresses only"
            ));
        } else if value.is_empty() {
            req.slots.push(Slot::Any);
        } else {
            match value.parse::<IpAddr>() {
                Ok(ip) if !req.statics.contains(&ip) => req.statics.push(ip),
                Ok(_) => {}
                Err(_) => req
                    .unsupported
                    .push(format!("address {value:?} is not a valid IP address")),
            }
        }
    }
    req
}

/// Addresses given to one Gateway, or why not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AddressOutcome {
    pub assigned: Vec<IpAddr>,
    /// Static addresses that cannot be used, with the reason.
    pub unusable: Vec<String>,
    /// Pool slots that could not be filled.
    pub missing: Vec<String>,
    /// Whether an explicitly requested address (an `IPAddress` entry without a value) is among
    /// the missing: unlike the per-family defaults, the Gateway cannot do without it.
    pub missing_requested: bool,
}

/// One Gateway taking part in allocation.
#[derive(Debug)]
pub(crate) struct Claimant<'a> {
    pub key: ObjectKey,
    pub request: &'a AddressRequest,
    /// The pool of its GatewayClass.
    pub pool: &'a [IpAddr],
    /// Addresses in the Gateway's current status (for sticky allocation).
    pub previous: Vec<IpAddr>,
}

/// Assigns addresses. `claimants` must be in age order (oldest first): that order settles two
/// Gateways asking for the same static address. Pool allocation runs in namespace/name order.
pub(crate) fn assign(
    claimants: &[Claimant<'_>],
    config: &TranslatorConfig,
) -> BTreeMap<ObjectKey, AddressOutcome> {
    let mut out: BTreeMap<ObjectKey, AddressOutcome> = BTreeMap::new();
    let mut taken: BTreeMap<IpAddr, ObjectKey> = BTreeMap::new();

    for c in claimants {
        let o = out.entry(c.key.clone()).or_default();
        for &ip in &c.request.statics {
            if !config.static_address_ranges.is_empty()
                && !config.static_address_ranges.iter().any(|n| n.contains(ip))
            {
                o.unusable.push(format!(
                    "address {ip} is outside the ranges this node can announce ({})",
                    config
                        .static_address_ranges
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            } else if let Some(owner) = taken.get(&ip) {
                o.unusable
                    .push(format!("address {ip} is already used by Gateway {owner}"));
            } else {
                taken.insert(ip, c.key.clone());
                o.assigned.push(ip);
            }
        }
    }

    let mut by_name: Vec<&Claimant<'_>> = claimants
        .iter()
        .filter(|c| !c.request.slots.is_empty() && out[&c.key].unusable.is_empty())
        .collect();
    by_name.sort_by(|a, b| a.key.cmp(&b.key));
    let mut filled: BTreeMap<&ObjectKey, Vec<Option<IpAddr>>> = by_name
        .iter()
        .map(|c| (&c.key, vec![None; c.request.slots.len()]))
        .collect();

    // Pass 1: keep what the status already shows.
    for c in &by_name {
        let slots = filled.get_mut(&c.key).expect("claimant has slots");
        for (i, slot) in c.request.slots.iter().enumerate() {
            let keep = c.previous.iter().copied().find(|ip| {
                slot.fits(*ip)
                    && c.pool.contains(ip)
                    && !taken.contains_key(ip)
                    && !slots.contains(&Some(*ip))
            });
            if let Some(ip) = keep {
                taken.insert(ip, c.key.clone());
                slots[i] = Some(ip);
            }
        }
    }
    // Pass 2: fill the rest from the pool, in pool order.
    for c in &by_name {
        let slots = filled.get_mut(&c.key).expect("claimant has slots");
        for (i, slot) in c.request.slots.iter().enumerate() {
            if slots[i].is_some() {
                continue;
            }
            if let Some(&ip) = c
                .pool
                .iter()
                .find(|ip| slot.fits(**ip) && !taken.contains_key(ip))
            {
                taken.insert(ip, c.key.clone());
                slots[i] = Some(ip);
            }
        }
    }
    for c in &by_name {
        let o = out.get_mut(&c.key).expect("claimant has an outcome");
        for (slot, ip) in c.request.slots.iter().zip(&filled[&c.key]) {
            match ip {
                Some(ip) => o.assigned.push(*ip),
                None => o.missing.push(match slot {
                    Slot::V4 => "the address pool has no free IPv4 address".to_string(),
                    Slot::V6 => "the address pool has no free IPv6 address".to_string(),
                    Slot::Any => {
                        o.missing_requested = true;
                        "the address pool has no free address".to_string()
                    }
                }),
            }
        }
    }
    out
}
