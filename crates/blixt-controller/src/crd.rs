//! Blixt's own kind: `AddressPool` (group blixt.dev, v1alpha1, cluster-scoped), the pool of
//! Gateway addresses a GatewayClass selects with `spec.parametersRef`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use blixt_core::translator::config::AddressBlock;
use blixt_core::translator::{ExpandedAddressPool, IpNet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// Addresses a single pool entry may expand to (a /16 of IPv4); larger entries are skipped.
pub const MAX_ENTRY_ADDRESSES: u128 = 65_536;

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "blixt.dev",
    version = "v1alpha1",
    kind = "AddressPool",
    plural = "addresspools",
    status = "AddressPoolStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct AddressPoolSpec {
    /// Addresses, prefixes (`192.0.2.16/28`) or ranges (`192.0.2.20-192.0.2.29`).
    pub addresses: Vec<String>,
    /// Give Gateways of this pool's classes a Service of type LoadBalancer instead (for
    /// clusters that already run MetalLB or a cloud load balancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate_to_load_balancer: Option<bool>,
    /// Where static `spec.addresses` of Gateways of this pool's classes may lie besides the
    /// pool's own addresses (CIDRs). Unset or empty: in the pool only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_address_ranges: Option<Vec<String>>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct AddressPoolStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

/// Names of the pools with `delegateToLoadBalancer: true`.
pub fn delegating(pools: &[AddressPool]) -> std::collections::BTreeSet<String> {
    pools
        .iter()
        .filter(|p| p.spec.delegate_to_load_balancer == Some(true))
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// Expands every pool's entries; entries that do not parse or are too large are reported.
pub fn expand(pools: &[AddressPool]) -> (BTreeMap<String, Vec<IpAddr>>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for p in pools {
        let name = p.metadata.name.clone().unwrap_or_default();
        let mut addrs = Vec::new();
        for (i, entry) in p.spec.addresses.iter().enumerate() {
            match entry.parse::<AddressBlock>() {
                Ok(b) if b.len() <= MAX_ENTRY_ADDRESSES => addrs.extend(b.addresses()),
                Ok(b) => problems.push(format!(
                    "AddressPool {name}: spec.addresses[{i}] {entry:?} has {} addresses, more than {MAX_ENTRY_ADDRESSES}",
                    b.len()
                )),
                Err(e) => problems.push(format!("AddressPool {name}: spec.addresses[{i}]: {e}")),
            }
        }
        out.insert(name, addrs);
    }
    (out, problems)
}

/// A pool's `staticAddressRanges`, parsed; entries that do not parse are put in `problems`
/// (and widen nothing).
pub fn static_ranges(pool: &AddressPool, problems: &mut Vec<String>) -> Vec<IpNet> {
    let name = pool.metadata.name.as_deref().unwrap_or_default();
    let entries = pool.spec.static_address_ranges.iter().flatten();
    entries
        .enumerate()
        .filter_map(|(i, entry)| {
            entry
                .parse::<IpNet>()
                .map_err(|e| {
                    problems.push(format!(
                        "AddressPool {name}: spec.staticAddressRanges[{i}]: {e}"
                    ))
                })
                .ok()
        })
        .collect()
}

/// The pools as the translator reads them ([`ObjectIndex::address_pools`]): [`expand`]ed,
/// with [`delegating`] and their [`static_ranges`]; and the problems of their entries.
///
/// [`ObjectIndex::address_pools`]: blixt_core::translator::ObjectIndex::address_pools
pub fn observe(pools: &[AddressPool]) -> (BTreeMap<String, ExpandedAddressPool>, Vec<String>) {
    let delegating = delegating(pools);
    let (expanded, mut problems) = expand(pools);
    let mut ranges: BTreeMap<String, Vec<IpNet>> = pools
        .iter()
        .map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            (name, static_ranges(p, &mut problems))
        })
        .collect();
    let observed = expanded
        .into_iter()
        .map(|(name, addresses)| {
            let delegate_to_load_balancer = delegating.contains(&name);
            let pool = ExpandedAddressPool {
                addresses,
                delegate_to_load_balancer,
                static_address_ranges: ranges.remove(&name).unwrap_or_default(),
            };
            (name, pool)
        })
        .collect();
    (observed, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_addresses_prefixes_and_ranges_and_names_bad_entries() {
        let mut p = AddressPool::new(
            "edge",
            AddressPoolSpec {
                addresses: vec![
                    "192.0.2.1".into(),
                    "192.0.2.8/30".into(),
                    "2001:db8::1-2001:db8::2".into(),
                    "nonsense".into(),
                    "10.0.0.0/8".into(),
                ],
                delegate_to_load_balancer: None,
                static_address_ranges: Some(vec!["198.51.100.0/24".into(), "bad/99".into()]),
            },
        );
        p.metadata.name = Some("edge".into());
        let (observed, problems) = observe(std::slice::from_ref(&p));
        assert_eq!(
            observed["edge"].static_address_ranges,
            vec!["198.51.100.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[2].contains("spec.staticAddressRanges[1]"),
            "{problems:?}"
        );
        let (pools, problems) = expand(&[p]);
        let got: Vec<String> = pools["edge"].iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "192.0.2.1",
                "192.0.2.8",
                "192.0.2.9",
                "192.0.2.10",
                "192.0.2.11",
                "2001:db8::1",
                "2001:db8::2"
            ]
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("spec.addresses[3]"), "{problems:?}");
        assert!(
            problems[1].contains("spec.addresses[4]") && problems[1].contains("16777216"),
            "{problems:?}"
        );
    }
}
