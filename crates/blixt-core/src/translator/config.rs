//! What the translator needs to know besides the objects: who Blixt is and what the node (or
//! cluster) offers.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::snapshot::Protocol;

/// Blixt's `controllerName`: GatewayClasses naming it are Blixt's, and it is the
/// `controllerName` of every route parent status Blixt writes.
pub const CONTROLLER_NAME: &str = "blixt.dev/gateway-controller";

/// Group of Blixt's own kinds (GatewayClass parameters).
pub const PARAMETERS_GROUP: &str = "blixt.dev";
/// The kind a GatewayClass `parametersRef` may name: a pool of Gateway addresses.
pub const ADDRESS_POOL_KIND: &str = "AddressPool";

/// Finalizer put on a GatewayClass while Gateways use it (Gateway API's well-known name).
pub const GATEWAY_EXISTS_FINALIZER: &str = "gateway-exists-finalizer.gateway.networking.k8s.io";

/// Features Blixt claims in `GatewayClass.status.supportedFeatures` (Gateway API feature names,
/// kept sorted). TLS listeners in Terminate mode are not supported, so neither is
/// `TLSRouteModeTerminate` (nor `TLSRouteModeMixed`); HTTP and gRPC are out of scope for an L4
/// load balancer. `GatewayRouteHostnameIntersectionPrecedence`: TLSRoutes competing for one
/// name are ranked by their own hostnames, not the listener/route intersection.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "Gateway",
    "GatewayAddressEmpty",
    "GatewayRouteHostnameIntersectionPrecedence",
    "GatewayStaticAddresses",
    "ReferenceGrant",
    "TCPRoute",
    "TLSRoute",
    "UDPRoute",
];

/// Translator settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranslatorConfig {
    /// GatewayClasses whose `spec.controllerName` equals this are handled; everything else is
    /// left alone.
    pub controller_name: String,
    /// Addresses Gateways get when they request none (`spec.addresses` empty, or an
    /// `IPAddress` entry without a value), unless their GatewayClass names an AddressPool
    /// ([`ObjectIndex::address_pools`](super::ObjectIndex::address_pools)). A Gateway without `spec.addresses` gets one
    /// address of each family present in the pool (dual stack when the pool has both).
    pub address_pool: Vec<IpAddr>,
    /// Where static `spec.addresses` of Gateways whose class names no AddressPool may lie,
    /// besides the addresses of `address_pool`. Empty (the default): in the pool only. An
    /// address outside both makes the Gateway `Programmed=False/AddressNotUsable`; so does
    /// one in [`ObjectIndex::reserved_addresses`](super::ObjectIndex::reserved_addresses), or
    /// a loopback, link-local, multicast or unspecified one, whatever the ranges say.
    pub static_address_ranges: Vec<IpNet>,
    /// Ports a listener may not use on this node (e.g. the agent's own); such a listener is
    /// `Accepted=False/PortUnavailable`. TLS listeners are checked as TCP.
    pub reserved_ports: BTreeSet<(Protocol, u16)>,
    /// Most frontends (TCP/UDP plus TLS) the dataplane holds; Gateways that would exceed it,
    /// newest first, are `Programmed=False/NoResources`. `None`: no limit.
    pub max_frontends: Option<usize>,
    /// When set, only GatewayClasses with these names are accepted; other classes naming
    /// Blixt's controller are `Accepted=False/Unsupported`.
    pub gateway_class_names: Option<BTreeSet<String>>,
    /// `status.supportedFeatures` of accepted GatewayClasses (sorted on output).
    pub supported_features: Vec<String>,
}

impl Default for TranslatorConfig {
    fn default() -> Self {
        TranslatorConfig {
            controller_name: CONTROLLER_NAME.to_string(),
            address_pool: Vec::new(),
            static_address_ranges: Vec::new(),
            reserved_ports: BTreeSet::new(),
            max_frontends: None,
            gateway_class_names: None,
            supported_features: SUPPORTED_FEATURES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// An IP prefix, `192.0.2.0/24` or `2001:db8::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl IpNet {
    /// Whether `ip` lies in this prefix (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A prefix that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IP prefix {0:?}: expected ADDRESS/LENGTH, e.g. 192.0.2.0/24")]
pub struct IpNetParseError(String);

impl FromStr for IpNet {
    type Err = IpNetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || IpNetParseError(s.to_string());
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a.parse::<IpAddr>().map_err(|_| err())?, Some(l)),
            None => (s.parse::<IpAddr>().map_err(|_| err())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(err)?,
            None => max,
        };
        Ok(IpNet { addr, prefix_len })
    }
}

impl TryFrom<String> for IpNet {
    type Error = IpNetParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<IpNet> for String {
    fn from(n: IpNet) -> String {
        n.to_string()
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipnet_contains() {
        let n: IpNet = "192.0.2.0/24".parse().unwrap();
        assert!(n.contains("192.0.2.200".parse().unwrap()));
        assert!(!n.contains("192.0.3.1".parse().unwrap()));
        assert!(!n.contains("2001:db8::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let v6: IpNet = "2001:db8::/64".parse().unwrap();
        assert!(v6.contains("2001:db8::abcd".parse().unwrap()));
        assert!(!v6.contains("2001:db8:0:1::1".parse().unwrap()));
        let host: IpNet = "2001:db8::1".parse().unwrap();
        assert_eq!(host.prefix_len, 128);
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nonsense/8".parse::<IpNet>().is_err());
    }
}

/// One entry of an address pool (standalone NodeConfig `addressPool`, AddressPool objects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AddressBlock {
    /// `192.0.2.10`
    Single(IpAddr),
    /// `192.0.2.16/28`: every address of the prefix, the first and last included (as
    /// MetalLB does by default; VIPs are host addresses, no subnet broadcast applies).
    Prefix(IpNet),
    /// `192.0.2.20-192.0.2.29`, both ends included.
    Range(IpAddr, IpAddr),
}

/// An address as a number (IPv4 in the low 32 bits), for ranges.
pub fn ip_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => a.into(),
    }
}

fn same_family(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4((n as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(n.into()),
    }
}

impl AddressBlock {
    /// First and last address, same family.
    pub fn bounds(&self) -> (IpAddr, IpAddr) {
        match *self {
            AddressBlock::Single(a) => (a, a),
            AddressBlock::Range(a, b) => (a, b),
            AddressBlock::Prefix(net) => {
                let bits = if net.addr.is_ipv4() { 32 } else { 128 };
                let host_bits = bits - u32::from(net.prefix_len);
                let size_mask = if host_bits >= 128 {
                    u128::MAX
                } else {
                    (1u128 << host_bits) - 1
                };
                let first = ip_u128(net.addr) & !size_mask;
                (
                    same_family(net.addr, first),
                    same_family(net.addr, first | size_mask),
                )
            }
        }
    }

    /// How many addresses the block holds.
    pub fn len(&self) -> u128 {
        let (a, b) = self.bounds();
        (ip_u128(b) - ip_u128(a)).saturating_add(1)
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Every address, in order. Callers check [`AddressBlock::len`] first.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let (a, b) = self.bounds();
        (ip_u128(a)..=ip_u128(b)).map(move |n| same_family(a, n))
    }
}

impl FromStr for AddressBlock {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some((a, b)) = s.split_once('-') {
            let parse = |x: &str| {
                x.trim().parse::<IpAddr>().map_err(|_| {
                    format!("invalid address range {s:?}: expected FIRST-LAST, e.g. 192.0.2.20-192.0.2.29")
                })
            };
            let (a, b) = (parse(a)?, parse(b)?);
            if a.is_ipv4() != b.is_ipv4() {
                return Err(format!("address range {s:?} mixes IPv4 and IPv6"));
            }
            if ip_u128(a) > ip_u128(b) {
                return Err(format!("address range {s:?} ends before it starts"));
            }
            return Ok(AddressBlock::Range(a, b));
        }
        if s.contains('/') {
            return s
                .parse::<IpNet>()
                .map(AddressBlock::Prefix)
                .map_err(|e| e.to_string());
        }
        s.parse::<IpAddr>().map(AddressBlock::Single).map_err(|_| {
            format!("invalid pool entry {s:?}: expected an address, ADDRESS/LENGTH or FIRST-LAST")
        })
    }
}

impl TryFrom<String> for AddressBlock {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<AddressBlock> for String {
    fn from(b: AddressBlock) -> String {
        b.to_string()
    }
}

impl fmt::Display for AddressBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressBlock::Single(a) => write!(f, "{a}"),
            AddressBlock::Prefix(n) => write!(f, "{n}"),
            AddressBlock::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}
