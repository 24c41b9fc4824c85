//! The one Blixt-specific kind: `blixt.dev/v1alpha1` `NodeConfig`, what the node offers.
//!
//! Everything in it is optional. Its fields map one to one onto the agent's settings
//! (`blixt_agent::NodeConfig`, `blixt_bpf::DataplaneOptions`, `AgentOptions`) and the
//! translator's (`TranslatorConfig`); this crate does not depend on the agent so it builds
//! without the BPF toolchain, and the `blixt` binary does the (field-for-field) conversion.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use blixt_core::translator::IpNet;
use serde::{Deserialize, Serialize};

use super::path::FieldPath;

/// Where the dataplane pins its maps and links by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/blixt";
/// Where the agent serves Prometheus metrics by default (as `blixt agent`).
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9464";
/// Where `blixt run` answers `blixt status` by default.
pub const DEFAULT_STATUS_SOCKET: &str = "/run/blixt/status.sock";
/// Most addresses one `addressPool` entry may expand to: pools are listed in full in the
/// translator's config, so a /64 by mistake must not eat the node's memory.
pub const MAX_POOL_ENTRY_ADDRESSES: u128 = 65_536;

/// `spec` of a NodeConfig. Every field is optional; `NodeConfigSpec::default()` is what a
/// configuration without a NodeConfig gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeConfigSpec {
    /// Interfaces the XDP program attaches to (where clients' packets arrive). Empty: the
    /// caller supplies them (`blixt run --interface`).
    pub interfaces: Vec<String>,
    /// Where the load balancer runs on those interfaces: `auto` (XDP where the kernel and the
    /// driver support it, TC ingress elsewhere), `xdp` (refuse to start without it) or `tc`.
    pub attach: AttachSetting,
    /// The node's IPv4 address, the source of full-NATed packets towards IPv4 backends.
    /// IPv4 frontends need it.
    pub snat_v4: Option<IpAddr>,
    /// The node's IPv6 address, for IPv6 backends.
    pub snat_v6: Option<IpAddr>,
    /// VIPs for Gateways without `spec.addresses`: addresses (`192.0.2.10`), prefixes
    /// (`192.0.2.16/28`, every address of it) or ranges (`192.0.2.20-192.0.2.29`).
    pub address_pool: Vec<AddressBlock>,
    /// Where static `spec.addresses` may lie besides the `addressPool`; empty (the default):
    /// in the pool only.
    pub static_address_ranges: Vec<IpNet>,
    /// Addresses no Gateway may take besides the node's own (`snatV4`, `snatV6`, which are
    /// always reserved): the router's, a DNS server's, the API server's... A Gateway asking
    /// for one is `Programmed=False/AddressNotUsable`.
    pub reserved_addresses: Vec<IpAddr>,
    /// Source ports full-NAT allocates on the node addresses, `MIN-MAX`.
    pub port_range: PortRange,
    /// Answer ARP and NDP for the VIPs on the attached interfaces. Off when the VIPs are
    /// routed to the node instead.
    pub announce: bool,
    pub timeouts: Timeouts,
    pub maps: MapSizes,
    /// bpffs directory for pinned maps and links, so the dataplane outlives an agent restart.
    /// `null`: nothing pinned (the dataplane goes away with the process).
    pub pin_dir: Option<PathBuf>,
    /// Prometheus endpoint; `null`: none.
    pub metrics_address: Option<SocketAddr>,
    /// Unix socket `blixt status` reads from; `null`: none.
    pub status_socket: Option<PathBuf>,
}

impl Default for NodeConfigSpec {
    fn default() -> Self {
        NodeConfigSpec {
            interfaces: Vec::new(),
            attach: AttachSetting::Auto,
            snat_v4: None,
            snat_v6: None,
            address_pool: Vec::new(),
            static_address_ranges: Vec::new(),
            reserved_addresses: Vec::new(),
            port_range: PortRange::default(),
            announce: true,
            timeouts: Timeouts::default(),
            maps: MapSizes::default(),
            pin_dir: Some(PathBuf::from(DEFAULT_PIN_DIR)),
            metrics_address: Some(DEFAULT_METRICS_ADDRESS.parse().expect("valid default")),
            status_socket: Some(PathBuf::from(DEFAULT_STATUS_SOCKET)),
        }
    }
}

/// `attach` of a NodeConfig (`blixt_bpf::AttachMode`, field for field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachSetting {
    #[default]
    Auto,
    Xdp,
    Tc,
}

/// Conntrack timeouts: seconds (`60`) or a duration (`90s`, `5m`, `6h`, `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Timeouts {
    /// A TCP flow that has seen a SYN but no reply.
    pub tcp_syn: Seconds,
    pub tcp_established: Seconds,
    /// After a FIN or RST; at least the backends' TIME_WAIT (see
    /// `blixt_agent::NodeConfig::tcp_closing_timeout_s`).
    pub tcp_closing: Seconds,
    pub udp: Seconds,
}

impl Default for Timeouts {
    /// The agent's defaults.
    fn default() -> Self {
        Timeouts {
            tcp_syn: Seconds(60),
            tcp_established: Seconds(6 * 3600),
            tcp_closing: Seconds(120),
            udp: Seconds(60),
        }
    }
}

/// Sizes of the dataplane's maps, fixed when the dataplane is first loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MapSizes {
    /// Most frontends; Gateways beyond it are `Programmed=False/NoResources`.
    pub max_frontends: u32,
    pub max_backends: u32,
    pub conntrack_entries: u32,
    /// Slots per Maglev table, a prime.
    pub maglev_table_size: u32,
}

impl Default for MapSizes {
    /// The dataplane's defaults.
    fn default() -> Self {
        MapSizes {
            max_frontends: 256,
            max_backends: 16384,
            conntrack_entries: 262_144,
            maglev_table_size: blixt_core::maglev::DEFAULT_TABLE_SIZE,
        }
    }
}

/// A number of seconds, written as an integer or a duration string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub u32);

impl Seconds {
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.0.into())
    }
}

impl FromStr for Seconds {
    type Err = String;

    /// `90`, `90s`, `5m`, `6h`, `1d`, `1h30m`.
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("invalid duration {s:?}: expected seconds or e.g. 90s, 5m, 1h30m");
        let s = s.trim();
        if let Ok(n) = s.parse::<u32>() {
            return Ok(Seconds(n));
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                _ => return Err(err()),
            };
            let n: u64 = digits.parse().map_err(|_| err())?;
            digits.clear();
            total = total.saturating_add(n.saturating_mul(unit));
        }
        if !digits.is_empty() || s.is_empty() {
            return Err(err());
        }
        u32::try_from(total)
            .map(Seconds)
            .map_err(|_| format!("duration {s:?} is too long"))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

impl Serialize for Seconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("seconds, or a duration such as 90s, 5m, 1h30m")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Seconds, E> {
                u32::try_from(v)
                    .map(Seconds)
                    .map_err(|_| E::custom(format!("{v} seconds is too long")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v} seconds is negative")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Seconds, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Inclusive port range, written `MIN-MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl Default for PortRange {
    /// Below the kernel's default ephemeral range (32768-60999), so the node's own
    /// connections never share a tuple with a NATed flow.
    fn default() -> Self {
        PortRange {
            min: 1024,
            max: 32767,
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("invalid port range {s:?}: expected MIN-MAX, e.g. 1024-32767");
        let (a, b) = s.split_once('-').ok_or_else(err)?;
        let min: u16 = a.trim().parse().map_err(|_| err())?;
        let max: u16 = b.trim().parse().map_err(|_| err())?;
        if min == 0 || min > max {
            return Err(format!(
                "port range {s:?} is empty or starts at 0: MIN must be 1 or more and at most MAX"
            ));
        }
        Ok(PortRange { min, max })
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

use blixt_core::translator::config::ip_u128;
pub use blixt_core::translator::config::AddressBlock;

impl NodeConfigSpec {
    /// The address pool, expanded, in the order written. Valid after [`NodeConfigSpec::check`].
    pub fn pool_addresses(&self) -> Vec<IpAddr> {
        self.address_pool
            .iter()
            .filter(|b| b.len() <= MAX_POOL_ENTRY_ADDRESSES)
            .flat_map(|b| b.addresses())
            .collect()
    }

    /// What the types cannot say: address families, sizes, names. Each problem comes with the
    /// field it is in (relative to the document root).
    pub(crate) fn check(&self) -> Vec<(FieldPath, String)> {
        let spec = FieldPath::keys(&["spec"]);
        let mut out = Vec::new();

        let mut seen = BTreeMap::new();
        for (i, name) in self.interfaces.iter().enumerate() {
            let f = spec.key("interfaces").index(i);
            // Linux: at most IFNAMSIZ-1 bytes, no '/', no whitespace, not "." or "..".
            if name.is_empty()
                || name.len() > 15
                || name.contains(['/', ':'])
                || name.chars().any(char::is_whitespace)
                || name == "."
                || name == ".."
            {
                out.push((f, format!("{name:?} is not a valid interface name")));
            } else if let Some(first) = seen.insert(name.as_str(), i) {
                out.push((
                    f,
                    format!("{name:?} is listed twice (also interfaces[{first}])"),
                ));
            }
        }

        if let Some(a) = self.snat_v4.filter(|a| !a.is_ipv4()) {
            out.push((spec.key("snatV4"), format!("{a} is not an IPv4 address")));
        }
        if let Some(a) = self.snat_v6.filter(|a| !a.is_ipv6()) {
            out.push((spec.key("snatV6"), format!("{a} is not an IPv6 address")));
        }

        // Pool: bounded, no address twice, never a node address (answering ARP for it would
        // take the node's own address away from it) nor a reserved one.
        let mut not_vips: Vec<(IpAddr, String)> = Vec::new();
        for (name, node) in [("snatV4", self.snat_v4), ("snatV6", self.snat_v6)] {
            if let Some(node) = node {
                not_vips.push((node, format!("the node address {node} ({name})")));
            }
        }
        for &r in &self.reserved_addresses {
            not_vips.push((r, format!("the reserved address {r} (reservedAddresses)")));
        }
        let mut spans: Vec<(u128, u128, bool, usize)> = Vec::new();
        for (i, block) in self.address_pool.iter().enumerate() {
            let f = spec.key("addressPool").index(i);
            if block.len() > MAX_POOL_ENTRY_ADDRESSES {
                out.push((
                    f,
                    format!(
                        "{block} holds {} addresses, more than the {MAX_POOL_ENTRY_ADDRESSES} \
                         one entry may; list a smaller range",
                        block.len()
                    ),
                ));
                continue;
            }
            let (a, b) = block.bounds();
            let (lo, hi, v4) = (ip_u128(a), ip_u128(b), a.is_ipv4());
            if let Some((_, _, _, j)) = spans
                .iter()
                .find(|(l, h, fam, _)| *fam == v4 && lo <= *h && *l <= hi)
            {
                out.push((f.clone(), format!("{block} overlaps addressPool[{j}]")));
            }
            spans.push((lo, hi, v4, i));
            for (ip, what) in &not_vips {
                let n = ip_u128(*ip);
                if ip.is_ipv4() == v4 && lo <= n && n <= hi {
                    out.push((f.clone(), format!("{block} contains {what}")));
                }
            }
        }

        let t = spec.key("timeouts");
        for (name, v) in [
            ("tcpSyn", self.timeouts.tcp_syn),
            ("tcpEstablished", self.timeouts.tcp_established),
            ("tcpClosing", self.timeouts.tcp_closing),
            ("udp", self.timeouts.udp),
        ] {
            if v.0 == 0 {
                out.push((t.key(name), "must be at least 1s".to_string()));
            }
        }

        let m = spec.key("maps");
        let sizes = &self.maps;
        if sizes.max_frontends == 0 {
            out.push((m.key("maxFrontends"), "must be at least 1".to_string()));
        }
        if sizes.max_backends == 0 {
            out.push((m.key("maxBackends"), "must be at least 1".to_string()));
        }
        if sizes.conntrack_entries < 16 {
            out.push((m.key("conntrackEntries"), "must be at least 16".to_string()));
        }
        let ring = sizes.maglev_table_size;
        if ring < blixt_core::maglev::MIN_TABLE_SIZE || !blixt_core::maglev::is_prime(ring) {
            out.push((
                m.key("maglevTableSize"),
                format!(
                    "{ring} is not a prime of at least {} (e.g. 16381, 65537)",
                    blixt_core::maglev::MIN_TABLE_SIZE
                ),
            ));
        } else if u64::from(ring) * 2 * u64::from(sizes.max_frontends) > u64::from(u32::MAX / 4) {
            // Two tables per frontend live in one BPF array.
            out.push((
                m.key("maglevTableSize"),
                format!(
                    "{ring} slots times 2 times maxFrontends {} is more than a BPF array holds",
                    sizes.max_frontends
                ),
            ));
        }

        for (name, path) in [
            ("pinDir", &self.pin_dir),
            ("statusSocket", &self.status_socket),
        ] {
            match path {
                Some(p) if p.as_os_str().is_empty() => out.push((
                    spec.key(name),
                    "empty path (write null to turn it off)".to_string(),
                )),
                Some(p) if !p.is_absolute() => out.push((
                    spec.key(name),
                    format!("{} is not an absolute path", p.display()),
                )),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let s = |x: &str| x.parse::<Seconds>().map(|s| s.0);
        assert_eq!(s("90"), Ok(90));
        assert_eq!(s("90s"), Ok(90));
        assert_eq!(s("5m"), Ok(300));
        assert_eq!(s("1h30m"), Ok(5400));
        assert_eq!(s("1d"), Ok(86400));
        assert!(s("5x").is_err());
        assert!(s("m").is_err());
        assert!(s("10m5").is_err());
        assert!(s("").is_err());
    }

    #[test]
    fn address_blocks() {
        let b: AddressBlock = "192.0.2.16/30".parse().unwrap();
        assert_eq!(b.len(), 4);
        let v: Vec<String> = b.addresses().map(|a| a.to_string()).collect();
        assert_eq!(v, ["192.0.2.16", "192.0.2.17", "192.0.2.18", "192.0.2.19"]);
        let r: AddressBlock = "2001:db8::fe-2001:db8::101".parse().unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r.addresses().last().unwrap().to_string(), "2001:db8::101");
        let unaligned: AddressBlock = "192.0.2.17/30".parse().unwrap();
        assert_eq!(unaligned.bounds().0.to_string(), "192.0.2.16");
        let all: AddressBlock = "::/0".parse().unwrap();
        assert_eq!(all.len(), u128::MAX);
        assert!("192.0.2.9-192.0.2.1".parse::<AddressBlock>().is_err());
        assert!("192.0.2.1-2001:db8::1".parse::<AddressBlock>().is_err());
        assert!("nope".parse::<AddressBlock>().is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(
            "2000-3000".parse::<PortRange>(),
            Ok(PortRange {
                min: 2000,
                max: 3000
            })
        );
        assert!("0-10".parse::<PortRange>().is_err());
        assert!("10-9".parse::<PortRange>().is_err());
        assert!("10".parse::<PortRange>().is_err());
    }
}
