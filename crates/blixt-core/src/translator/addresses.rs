//! Gateway addresses: the address policy of each GatewayClass, static `spec.addresses`, and
//! allocation from the class's pool.
//!
//! Policy: a static address must lie in the class's pool or in the ranges an admin added
//! (`staticAddressRanges`), and is never an address that cannot be a VIP (loopback,
//! link-local, multicast, unspecified, broadcast) nor one the providers observed as taken by
//! the network (a node's, the router's, the API server's: [`ObjectIndex::reserved_addresses`]).
//!
//! Contention: a Gateway keeps what its status already shows; otherwise the older Gateway
//! (creation time, then namespace/name) wins. So neither a static claim nor a newer Gateway
//! can take an address another Gateway holds.
//!
//! Allocation is deterministic and sticky: Gateways are served in namespace/name order, and
//! each first gets back the pool addresses its status already shows (so adding a Gateway never
//! moves another one's VIP), then free pool addresses in pool order.
//!
//! [`ObjectIndex::reserved_addresses`]: super::ObjectIndex::reserved_addresses

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use blixt_gateway_api::Gateway;

use super::config::IpNet;
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

/// Why `ip` can be neither a Gateway address nor a backend, whatever the configuration says:
/// loopback, link-local, unspecified, multicast or the IPv4 broadcast address (an
/// IPv4-mapped IPv6 address is judged as its IPv4 address). `None` for a unicast address.
pub(crate) fn special_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => {
            if a.is_unspecified() {
                Some("unspecified")
            } else if a.is_loopback() {
                Some("loopback")
            } else if a.is_link_local() {
                Some("link-local")
            } else if a.is_multicast() {
                Some("multicast")
            } else if a.is_broadcast() {
                Some("broadcast")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                special_address(IpAddr::V4(v4))
            } else if a.is_unspecified() {
                Some("unspecified")
            } else if a.is_loopback() {
                Some("loopback")
            } else if a.is_unicast_link_local() {
                Some("link-local")
            } else if a.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

/// Which addresses the Gateways of one GatewayClass may have.
#[derive(Debug)]
pub(crate) struct AddressPolicy<'a> {
    /// Where their addresses are allocated from, in order.
    pub pool: &'a [IpAddr],
    /// The pool as a set, built when first asked (a pool may hold a million addresses and
    /// most passes ask nothing of it).
    members: OnceCell<HashSet<IpAddr>>,
    /// Where static addresses may lie besides the pool.
    pub static_ranges: &'a [IpNet],
    /// The pool, for messages: `AddressPool "edge"`, `the default address pool`.
    pub source: String,
}

impl<'a> AddressPolicy<'a> {
    pub fn new(pool: &'a [IpAddr], static_ranges: &'a [IpNet], source: String) -> Self {
        AddressPolicy {
            pool,
            members: OnceCell::new(),
            static_ranges,
            source,
        }
    }

    pub fn in_pool(&self, ip: IpAddr) -> bool {
        self.members
            .get_or_init(|| self.pool.iter().copied().collect())
            .contains(&ip)
    }

    /// Why the static address `ip` may not be used, if it may not.
    fn refuse_static(&self, ip: IpAddr, reserved: &BTreeMap<IpAddr, String>) -> Option<String> {
        if let Some(kind) = special_address(ip) {
            return Some(format!(
                "address {ip} is {kind}: it cannot be a Gateway address"
            ));
        }
        if let Some(what) = reserved.get(&ip) {
            return Some(format!("address {ip} is {what}: a Gateway may not take it"));
        }
        if self.in_pool(ip) || self.static_ranges.iter().any(|n| n.contains(ip)) {
            return None;
        }
        let ranges = if self.static_ranges.is_empty() {
            "none".to_string()
        } else {
            self.static_ranges
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        Some(format!(
            "address {ip} is not allowed for this GatewayClass: static addresses must be in {} \
             or its staticAddressRanges ({ranges})",
            self.source
        ))
    }
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
    /// The address policy of its GatewayClass.
    pub policy: &'a AddressPolicy<'a>,
    /// Addresses in the Gateway's current status (for sticky allocation, and to keep what it
    /// holds).
    pub previous: Vec<IpAddr>,
}

/// One address a Gateway wants: a static one, or a pool address its status shows.
#[derive(Debug)]
struct Claim {
    ip: IpAddr,
    /// Index of the claimant (oldest first).
    claimant: usize,
    /// The claimant's status already shows the address.
    holds: bool,
    /// `Some(i)`: slot `i` of a pool request; `None`: a static address.
    slot: Option<usize>,
}

/// Assigns addresses. `claimants` must be in age order (oldest first): with whether a Gateway
/// already holds an address, that order settles two Gateways wanting the same one. Addresses
/// in `reserved` are never assigned. Pool allocation runs in namespace/name order.
pub(crate) fn assign(
    claimants: &[Claimant<'_>],
    reserved: &BTreeMap<IpAddr, String>,
) -> BTreeMap<ObjectKey, AddressOutcome> {
    let mut out: BTreeMap<ObjectKey, AddressOutcome> = BTreeMap::new();
    let mut claims: Vec<Claim> = Vec::new();
    let mut filled: Vec<Vec<Option<IpAddr>>> = Vec::with_capacity(claimants.len());

    for (i, c) in claimants.iter().enumerate() {
        let o = out.entry(c.key.clone()).or_default();
        let holds = |ip: &IpAddr| c.previous.contains(ip);
        for &ip in &c.request.statics {
            match c.policy.refuse_static(ip, reserved) {
                Some(why) => o.unusable.push(why),
                None => claims.push(Claim {
                    ip,
                    claimant: i,
                    holds: holds(&ip),
                    slot: None,
                }),
            }
        }
        filled.push(vec![None; c.request.slots.len()]);
        if !o.unusable.is_empty() {
            continue;
        }
        // Sticky: each slot asks for a pool address the status already shows.
        let mut wanted: Vec<IpAddr> = Vec::new();
        for (s, slot) in c.request.slots.iter().enumerate() {
            let keep = c.previous.iter().copied().find(|ip| {
                slot.fits(*ip)
                    && c.policy.in_pool(*ip)
                    && !reserved.contains_key(ip)
                    && special_address(*ip).is_none()
                    && !wanted.contains(ip)
                    && !c.request.statics.contains(ip)
            });
            if let Some(ip) = keep {
                wanted.push(ip);
                claims.push(Claim {
                    ip,
                    claimant: i,
                    holds: true,
                    slot: Some(s),
                });
            }
        }
    }

    // Who gets each claimed address: its holder, else the oldest Gateway.
    claims.sort_by_key(|c| (c.ip, !c.holds, c.claimant));
    let mut taken: BTreeMap<IpAddr, usize> = BTreeMap::new();
    let mut statics: Vec<Vec<(IpAddr, Result<(), usize>)>> = vec![Vec::new(); claimants.len()];
    for claim in &claims {
        let winner = *taken.entry(claim.ip).or_insert(claim.claimant);
        match claim.slot {
            None => statics[claim.claimant].push((
                claim.ip,
                if winner == claim.claimant {
                    Ok(())
                } else {
                    Err(winner)
                },
            )),
            Some(s) if winner == claim.claimant => filled[claim.claimant][s] = Some(claim.ip),
            Some(_) => {}
        }
    }
    for (i, c) in claimants.iter().enumerate() {
        let o = out.get_mut(&c.key).expect("claimant has an outcome");
        // spec order
        for &ip in &c.request.statics {
            match statics[i].iter().find(|(s, _)| *s == ip).map(|(_, r)| r) {
                Some(Ok(())) => o.assigned.push(ip),
                Some(Err(w)) => o.unusable.push(format!(
                    "address {ip} is already used by Gateway {} (the older claim keeps it)",
                    claimants[*w].key
                )),
                None => {} // refused by the policy above
            }
        }
    }

    // Pass 2: fill the remaining slots from the pool, in namespace/name then pool order.
    let mut by_name: Vec<usize> = (0..claimants.len())
        .filter(|&i| {
            !claimants[i].request.slots.is_empty() && out[&claimants[i].key].unusable.is_empty()
        })
        .collect();
    by_name.sort_by(|&a, &b| claimants[a].key.cmp(&claimants[b].key));
    for &i in &by_name {
        let c = &claimants[i];
        for (s, slot) in c.request.slots.iter().enumerate() {
            if filled[i][s].is_some() {
                continue;
            }
            if let Some(&ip) = c.policy.pool.iter().find(|ip| {
                slot.fits(**ip)
                    && !taken.contains_key(ip)
                    && !reserved.contains_key(ip)
                    && special_address(**ip).is_none()
            }) {
                taken.insert(ip, i);
                filled[i][s] = Some(ip);
            }
        }
    }
    for &i in &by_name {
        let c = &claimants[i];
        let o = out.get_mut(&c.key).expect("claimant has an outcome");
        for (slot, ip) in c.request.slots.iter().zip(&filled[i]) {
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
