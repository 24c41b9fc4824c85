//! The lab topology: a client, a load-balancer node and backends, each in its own namespace,
//! joined to the load-balancer node by one veth pair per link.
//!
//! ```text
//!   client ns                 lb ns                      backend ns (be0 .. beN-1)
//!  ┌──────────┐ veth  ┌──────────────────┐  veth  ┌──────────┐
//!  │ eth0 .2  ├───────┤ lb-client .1     │        │          │
//!  └──────────┘       │          lb-be0 .1├───────┤ eth0 .2  │  be0
//!   route VIP block   │          lb-be1 .1├───────┤ eth0 .2  │  be1
//!   via lb            └──────────────────┘        └──────────┘
//! ```
//!
//! # Addressing plan (dual stack)
//!
//! | link | IPv4 | IPv6 | peer end | lb end |
//! |---|---|---|---|---|
//! | client | `10.99.0.0/24` | `fd99::/64` | `.2` / `::2` | `.1` / `::1` |
//! | backend `i` | `10.99.(10+i).0/24` | `fd99:(10+i)::/64` | `.2` / `::2` | `.1` / `::1` |
//! | VIPs | `10.99.100.0/24` | `fd99:100::/64` | — | — |
//!
//! The IPv6 group is the IPv4 octet written with the same digits (`10.99.15.0/24` ↔
//! `fd99:15::/64`), so up to [`MAX_BACKENDS`] backends fit below the VIP block. The VIP block is
//! on no interface: the client routes it via the lb end of its link. The client and backends
//! have default routes (v4 and v6) via the lb; the lb has no default route, so nothing can leave
//! the lab. The lb forwards (`ip_forward`, IPv6 `forwarding`), so without a load balancer the
//! client reaches backend addresses through plain kernel forwarding.
//!
//! # XDP on veth: what the lab sets up, and why
//!
//! The lb end of every link is where the dataplane attaches XDP (native mode works on veth).
//! Two veth rules matter, both checked on Linux 6.18 with a throwaway DNAT program that
//! redirects between `lb-client` and `lb-be0`:
//! - **XDP_REDIRECT/XDP_TX into a veth** hands the frame to the *peer's* receive queue, and
//!   veth only accepts it (advertises `ndo_xdp_xmit`) when that peer has NAPI, i.e. an XDP
//!   program of its own or GRO enabled. With GRO off on the client and backend ends, every
//!   redirected frame was dropped silently. The lab enables GRO on the non-lb ends
//!   ([`LabSpec::peer_gro`]) through the ethtool ioctl, the same as `ethtool -K eth0 gro on`
//!   but without needing the ethtool binary.
//! - **TX checksum offload**: a socket sending through a veth leaves only the pseudo-header
//!   sum in the L4 checksum field (`CHECKSUM_PARTIAL`). After an XDP redirect that metadata is
//!   gone, so the receiver verifies a checksum that was never finished: with TX checksum
//!   offload on, the backend counted every datagram in `UdpInCsumErrors`. The lab turns TX
//!   checksum offload off on the non-lb ends ([`LabSpec::peer_tx_checksum`]), so packets reach
//!   the lb with full checksums that a NAT can update incrementally. (TSO goes off with it,
//!   so XDP sees MTU-sized frames.)
//!
//! Neighbours are static by default ([`LabSpec::static_neighbors`]), with fixed MACs, so a
//! `bpf_fib_lookup` from XDP finds them from the first packet on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::addr::{Mac, Prefix};
use crate::netns::{self, NetNs, DEFAULT_PREFIX};
use crate::sys;
use crate::veth::Veth;

/// Most backends a lab can have (backend links use `10.99.10.0/24` to `10.99.89.0/24`).
pub const MAX_BACKENDS: usize = 80;

/// Name of the non-lb end of every link, inside the client and backend namespaces.
pub const PEER_IFNAME: &str = "eth0";

/// Name of the lb end of the client link.
pub const LB_CLIENT_IFNAME: &str = "lb-client";

/// How long [`Lab::build`] waits for links to come up.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// What to build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LabSpec {
    /// Number of backend namespaces (0 to [`MAX_BACKENDS`]).
    pub backends: usize,
    /// Prefix of the namespace names (1 to 6 lowercase letters).
    pub prefix: String,
    /// Enable GRO on the non-lb ends, which XDP_REDIRECT into a veth needs (default on).
    pub peer_gro: bool,
    /// Keep TX checksum offload on the non-lb ends (default off, see the module docs).
    pub peer_tx_checksum: bool,
    /// Install permanent neighbour entries on both ends of every link (default on).
    pub static_neighbors: bool,
}

impl Default for LabSpec {
    fn default() -> Self {
        LabSpec {
            backends: 2,
            prefix: DEFAULT_PREFIX.to_string(),
            peer_gro: true,
            peer_tx_checksum: false,
            static_neighbors: true,
        }
    }
}

impl LabSpec {
    /// The default spec with `n` backends.
    pub fn with_backends(n: usize) -> Self {
        LabSpec {
            backends: n,
            ..LabSpec::default()
        }
    }
}

/// One veth link between the lb and a peer (client or backend), with everything about both
/// ends. Interface indexes are those inside each end's own namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Interface name of the lb end (where XDP attaches).
    pub lb_ifname: String,
    /// Interface index of the lb end inside the lb namespace.
    pub lb_ifindex: u32,
    /// MAC of the lb end.
    pub lb_mac: Mac,
    /// IPv4 address of the lb end (`.1`).
    pub lb_v4: Ipv4Addr,
    /// IPv6 address of the lb end (`::1`).
    pub lb_v6: Ipv6Addr,
    /// Interface name of the peer end ([`PEER_IFNAME`]).
    pub peer_ifname: String,
    /// Interface index of the peer end inside the peer's namespace.
    pub peer_ifindex: u32,
    /// MAC of the peer end.
    pub peer_mac: Mac,
    /// IPv4 address of the peer end (`.2`).
    pub peer_v4: Ipv4Addr,
    /// IPv6 address of the peer end (`::2`).
    pub peer_v6: Ipv6Addr,
    /// The link's IPv4 subnet.
    pub net_v4: Prefix,
    /// The link's IPv6 subnet.
    pub net_v6: Prefix,
    /// GRO state of the peer end as the kernel reports it (`None`: could not be read).
    pub peer_gro: Option<bool>,
    /// TX checksum offload state of the peer end (`None`: could not be read).
    pub peer_tx_checksum: Option<bool>,
}

/// A client or backend: its namespace and its link to the lb.
#[derive(Debug)]
pub struct Node {
    /// Role name: `client`, or `be0`, `be1`, … for backends.
    pub name: String,
    /// The node's namespace.
    pub ns: NetNs,
    /// The node's link to the lb.
    pub link: Link,
}

impl Node {
    /// The node's IPv4 address.
    pub fn v4(&self) -> Ipv4Addr {
        self.link.peer_v4
    }

    /// The node's IPv6 address.
    pub fn v6(&self) -> Ipv6Addr {
        self.link.peer_v6
    }

    /// The node's address of the same family as `like`.
    pub fn addr_like(&self, like: IpAddr) -> IpAddr {
        match like {
            IpAddr::V4(_) => self.v4().into(),
            IpAddr::V6(_) => self.v6().into(),
        }
    }

    fn info(&self) -> NodeInfo {
        NodeInfo {
            name: self.name.clone(),
            netns: self.ns.name().to_string(),
            link: self.link.clone(),
        }
    }
}

/// A running lab. Dropping it deletes the veths and namespaces (stop servers and processes
/// that live in them first; locals drop in reverse order, so create those after the lab).
#[derive(Debug)]
pub struct Lab {
    // Declared first so they drop first, while their namespaces still exist.
    veths: Vec<Veth>,
    /// The client.
    pub client: Node,
    /// The backends, `be0` first.
    pub backends: Vec<Node>,
    /// The load-balancer node.
    pub lb: NetNs,
    /// The IPv4 VIP block, routed by the client via the lb.
    pub vip_v4: Prefix,
    /// The IPv6 VIP block, routed by the client via the lb.
    pub vip_v6: Prefix,
}

/// A serialisable description of a lab (what `blixt-lab up` prints).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabInfo {
    /// The client node.
    pub client: NodeInfo,
    /// Name of the lb namespace.
    pub lb_netns: String,
    /// The backend nodes.
    pub backends: Vec<NodeInfo>,
    /// The IPv4 VIP block.
    pub vip_v4: Prefix,
    /// The IPv6 VIP block.
    pub vip_v6: Prefix,
}

/// A serialisable description of a [`Node`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Role name.
    pub name: String,
    /// Namespace name.
    pub netns: String,
    /// Link to the lb.
    pub link: Link,
}

/// Addresses of one link before it exists.
struct LinkPlan {
    lb_ifname: String,
    net_v4: Prefix,
    net_v6: Prefix,
    lb_mac: Mac,
    peer_mac: Mac,
}

impl LinkPlan {
    /// `third` is the third IPv4 octet of the link; `index` numbers links for MACs.
    fn new(lb_ifname: String, third: u8, index: u8) -> Self {
        let v6_group =
            u16::from_str_radix(&third.to_string(), 16).expect("decimal digits are hex digits");
        LinkPlan {
            lb_ifname,
            net_v4: Prefix::new(Ipv4Addr::new(10, 99, third, 0).into(), 24).expect("valid"),
            net_v6: Prefix::new(Ipv6Addr::new(0xfd99, v6_group, 0, 0, 0, 0, 0, 0).into(), 64)
                .expect("valid"),
            lb_mac: Mac([0x02, 0xb1, 0, 0, index, 0x01]),
            peer_mac: Mac([0x02, 0xb1, 0, 0, index, 0x02]),
        }
    }

    fn lb_v4(&self) -> Ipv4Addr {
        v4(self.net_v4.host(1))
    }
    fn lb_v6(&self) -> Ipv6Addr {
        v6(self.net_v6.host(1))
    }
    fn peer_v4(&self) -> Ipv4Addr {
        v4(self.net_v4.host(2))
    }
    fn peer_v6(&self) -> Ipv6Addr {
        v6(self.net_v6.host(2))
    }
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!("IPv4 prefix yields IPv4 hosts"),
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(a) => a,
        IpAddr::V4(_) => unreachable!("IPv6 prefix yields IPv6 hosts"),
    }
}

/// The IPv4 VIP block.
pub fn vip_block_v4() -> Prefix {
    Prefix::new(Ipv4Addr::new(10, 99, 100, 0).into(), 24).expect("valid")
}

/// The IPv6 VIP block.
pub fn vip_block_v6() -> Prefix {
    Prefix::new(Ipv6Addr::new(0xfd99, 0x100, 0, 0, 0, 0, 0, 0).into(), 64).expect("valid")
}

impl Lab {
    /// Builds the topology described in the [module docs](self): namespaces, veths,
    /// addresses, routes, sysctls and offloads, and waits until every link is up. Stale
    /// namespaces of dead earlier runs under the same prefix are removed first.
    ///
    /// Needs root (`CAP_SYS_ADMIN` and `CAP_NET_ADMIN`) and iproute2's `ip`.
    pub fn build(spec: LabSpec) -> Result<Lab> {
        ensure!(
            sys::euid() == 0,
            "the network-namespace lab needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
        );
        ensure!(
            spec.backends <= MAX_BACKENDS,
            "at most {MAX_BACKENDS} backends, not {}",
            spec.backends
        );
        if let Err(e) = netns::cleanup_stale(&spec.prefix) {
            eprintln!("blixt-lab: cleaning stale namespaces: {e:#}");
        }

        let lb = NetNs::new(&spec.prefix).context("creating the lb namespace")?;
        let client_ns = NetNs::new(&spec.prefix).context("creating the client namespace")?;
        let backend_ns = (0..spec.backends)
            .map(|i| NetNs::new(&spec.prefix).with_context(|| format!("creating be{i}")))
            .collect::<Result<Vec<_>>>()?;

        // Before any interface exists, so new interfaces inherit `default`.
        let no_dad = [
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ];
        set_sysctls(
            &lb,
            &[
                no_dad[0],
                no_dad[1],
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
            ],
        )?;
        for ns in std::iter::once(&client_ns).chain(&backend_ns) {
            set_sysctls(ns, &no_dad)?;
        }

        let client_plan = LinkPlan::new(LB_CLIENT_IFNAME.to_string(), 0, 0);
        let backend_plans: Vec<LinkPlan> = (0..spec.backends)
            .map(|i| LinkPlan::new(format!("lb-be{i}"), 10 + i as u8, 1 + i as u8))
            .collect();
        let vip_v4 = vip_block_v4();
        let vip_v6 = vip_block_v6();

        let mut veths = Vec::with_capacity(1 + spec.backends);
        let mut lb_script = Vec::new();
        let peers = std::iter::once((&client_ns, &client_plan, true)).chain(
            backend_ns
                .iter()
                .zip(&backend_plans)
                .map(|(n, p)| (n, p, false)),
        );
        for (ns, plan, is_client) in peers {
            veths.push(Veth::create(&lb, &plan.lb_ifname, ns, PEER_IFNAME)?);
            ns.ip_batch(&peer_script(
                plan,
                is_client.then_some((vip_v4, vip_v6)),
                &spec,
            ))
            .with_context(|| format!("configuring {}", ns.name()))?;
            lb_script.extend(lb_script_for(plan, &spec));
        }
        lb.ip_batch(&lb_script).context("configuring the lb")?;

        let mut offloads = Vec::new();
        for ns in std::iter::once(&client_ns).chain(&backend_ns) {
            offloads.push(set_offloads(ns, &spec));
        }

        let mut ns_to_check: Vec<(&NetNs, Vec<&str>)> = vec![(
            &lb,
            std::iter::once(&client_plan)
                .chain(&backend_plans)
                .map(|p| p.lb_ifname.as_str())
                .collect(),
        )];
        for ns in std::iter::once(&client_ns).chain(&backend_ns) {
            ns_to_check.push((ns, vec![PEER_IFNAME]));
        }
        let indexes = wait_links_up(&ns_to_check, LINK_UP_TIMEOUT)?;
        let lb_indexes = &indexes[0];

        let mut links = std::iter::once(&client_plan)
            .chain(&backend_plans)
            .zip(offloads)
            .zip(&indexes[1..])
            .enumerate()
            .map(|(k, ((plan, (gro, csum)), peer_idx))| Link {
                lb_ifname: plan.lb_ifname.clone(),
                lb_ifindex: lb_indexes[k],
                lb_mac: plan.lb_mac,
                lb_v4: plan.lb_v4(),
                lb_v6: plan.lb_v6(),
                peer_ifname: PEER_IFNAME.to_string(),
                peer_ifindex: peer_idx[0],
                peer_mac: plan.peer_mac,
                peer_v4: plan.peer_v4(),
                peer_v6: plan.peer_v6(),
                net_v4: plan.net_v4,
                net_v6: plan.net_v6,
                peer_gro: gro,
                peer_tx_checksum: csum,
            })
            .collect::<Vec<_>>();
        let backend_links = links.split_off(1);
        let client_link = links.pop().expect("client link");

        Ok(Lab {
            veths,
            client: Node {
                name: "client".to_string(),
                ns: client_ns,
                link: client_link,
            },
            backends: backend_ns
                .into_iter()
                .zip(backend_links)
                .enumerate()
                .map(|(i, (ns, link))| Node {
                    name: format!("be{i}"),
                    ns,
                    link,
                })
                .collect(),
            lb,
            vip_v4,
            vip_v6,
        })
    }

    /// Removes leftovers of crashed earlier runs under `prefix`; see [`netns::cleanup_stale`].
    pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>> {
        netns::cleanup_stale(prefix)
    }

    /// The `n`th IPv4 VIP (`vip4(1)` is `10.99.100.1`).
    pub fn vip4(&self, n: u8) -> Ipv4Addr {
        v4(self.vip_v4.host(u32::from(n)))
    }

    /// The `n`th IPv6 VIP (`vip6(1)` is `fd99:100::1`).
    pub fn vip6(&self, n: u8) -> Ipv6Addr {
        v6(self.vip_v6.host(u32::from(n)))
    }

    /// Backend `i`.
    ///
    /// # Panics
    /// If there is no such backend.
    pub fn backend(&self, i: usize) -> &Node {
        &self.backends[i]
    }

    /// Every link, client link first: the lb ends are where XDP attaches.
    pub fn links(&self) -> impl Iterator<Item = &Link> {
        std::iter::once(&self.client.link).chain(self.backends.iter().map(|b| &b.link))
    }

    /// Attaches the XDP program in the object file `obj` (section `xdp`, native mode) to the
    /// far end of every link (client and backends). A load balancer that bounces frames back
    /// with XDP_TX on a veth needs the receiving end to have an XDP program: the veth driver
    /// only schedules the receiver after an XDP_TX when it has one.
    pub fn attach_peer_xdp(&self, obj: &std::path::Path) -> Result<()> {
        let obj = obj.to_str().context("object path is not UTF-8")?;
        for node in std::iter::once(&self.client).chain(&self.backends) {
            node.ns.ip(&[
                "link",
                "set",
                "dev",
                &node.link.peer_ifname,
                "xdpdrv",
                "obj",
                obj,
                "sec",
                "xdp",
            ])?;
        }
        Ok(())
    }

    /// `(name, ifindex)` of every lb-side interface, client link first.
    pub fn lb_interfaces(&self) -> Vec<(String, u32)> {
        self.links()
            .map(|l| (l.lb_ifname.clone(), l.lb_ifindex))
            .collect()
    }

    /// A serialisable description of the lab.
    pub fn info(&self) -> LabInfo {
        LabInfo {
            client: self.client.info(),
            lb_netns: self.lb.name().to_string(),
            backends: self.backends.iter().map(Node::info).collect(),
            vip_v4: self.vip_v4,
            vip_v6: self.vip_v6,
        }
    }

    /// Names of all namespaces of the lab: client, lb, then backends.
    pub fn netns_names(&self) -> Vec<String> {
        let mut v = vec![
            self.client.ns.name().to_string(),
            self.lb.name().to_string(),
        ];
        v.extend(self.backends.iter().map(|b| b.ns.name().to_string()));
        v
    }

    /// The veth guards, for inspection.
    pub fn veths(&self) -> &[Veth] {
        &self.veths
    }
}

fn set_sysctls(ns: &NetNs, kv: &[(&str, &str)]) -> Result<()> {
    for (k, v) in kv {
        ns.sysctl_set(k, v)?;
    }
    Ok(())
}

fn peer_script(plan: &LinkPlan, vips: Option<(Prefix, Prefix)>, spec: &LabSpec) -> Vec<String> {
    let dev = PEER_IFNAME;
    let (lb4, lb6) = (plan.lb_v4(), plan.lb_v6());
    let mut s = vec![
        format!("link set dev {dev} address {}", plan.peer_mac),
        format!("link set dev {dev} up"),
        format!("addr add {}/24 dev {dev}", plan.peer_v4()),
        format!("addr add {}/64 dev {dev} nodad", plan.peer_v6()),
        format!("route add default via {lb4} dev {dev}"),
        format!("route add default via {lb6} dev {dev}"),
    ];
    if let Some((vip4, vip6)) = vips {
        s.push(format!("route add {vip4} via {lb4} dev {dev}"));
        s.push(format!("route add {vip6} via {lb6} dev {dev}"));
    }
    if spec.static_neighbors {
        for ip in [IpAddr::from(lb4), IpAddr::from(lb6)] {
            s.push(format!(
                "neigh replace {ip} lladdr {} dev {dev} nud permanent",
                plan.lb_mac
            ));
        }
    }
    s
}

fn lb_script_for(plan: &LinkPlan, spec: &LabSpec) -> Vec<String> {
    let dev = &plan.lb_ifname;
    let mut s = vec![
        format!("link set dev {dev} address {}", plan.lb_mac),
        format!("link set dev {dev} up"),
        format!("addr add {}/24 dev {dev}", plan.lb_v4()),
        format!("addr add {}/64 dev {dev} nodad", plan.lb_v6()),
    ];
    if spec.static_neighbors {
        for ip in [IpAddr::from(plan.peer_v4()), IpAddr::from(plan.peer_v6())] {
            s.push(format!(
                "neigh replace {ip} lladdr {} dev {dev} nud permanent",
                plan.peer_mac
            ));
        }
    }
    s
}

/// Applies GRO and TX checksum settings to the peer end in `ns`; failures are reported and
/// leave the state unknown rather than failing the lab.
fn set_offloads(ns: &NetNs, spec: &LabSpec) -> (Option<bool>, Option<bool>) {
    let (gro, csum) = ns.run_in(|| {
        (
            sys::set_gro(PEER_IFNAME, spec.peer_gro),
            sys::set_tx_checksum(PEER_IFNAME, spec.peer_tx_checksum),
        )
    });
    let gro = gro
        .map_err(|e| eprintln!("blixt-lab: GRO on {PEER_IFNAME} in {}: {e}", ns.name()))
        .ok();
    let csum = csum
        .map_err(|e| {
            eprintln!(
                "blixt-lab: tx checksum on {PEER_IFNAME} in {}: {e}",
                ns.name()
            )
        })
        .ok();
    (gro, csum)
}

/// Waits until every listed interface reports operstate UP and no IPv6 address is tentative;
/// returns the interface indexes, in the order given.
fn wait_links_up(checks: &[(&NetNs, Vec<&str>)], timeout: Duration) -> Result<Vec<Vec<u32>>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut all = Vec::with_capacity(checks.len());
        let mut pending = Vec::new();
        for (ns, ifnames) in checks {
            let links: serde_json::Value = serde_json::from_str(&ns.ip(&["-j", "link", "show"])?)
                .context("parsing `ip -j link show`")?;
            let addrs: serde_json::Value =
                serde_json::from_str(&ns.ip(&["-j", "-6", "addr", "show"])?)
                    .context("parsing `ip -j addr show`")?;
            let mut idx = Vec::with_capacity(ifnames.len());
            for ifname in ifnames {
                let link = links
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|l| l["ifname"] == *ifname)
                    .with_context(|| format!("{ifname} missing in {}", ns.name()))?;
                if link["operstate"] != "UP" {
                    pending.push(format!("{}:{ifname} is {}", ns.name(), link["operstate"]));
                }
                let tentative = addrs
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| a["ifname"] == *ifname)
                    .flat_map(|a| a["addr_info"].as_array().into_iter().flatten())
                    .any(|ai| ai["tentative"] == true);
                if tentative {
                    pending.push(format!("{}:{ifname} has a tentative address", ns.name()));
                }
                let index = link["ifindex"]
                    .as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .with_context(|| format!("no ifindex for {ifname}"))?;
                idx.push(index);
            }
            all.push(idx);
        }
        if pending.is_empty() {
            return Ok(all);
        }
        if Instant::now() >= deadline {
            bail!("links not ready after {timeout:?}: {}", pending.join(", "));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_plan_addresses() {
        let p = LinkPlan::new("lb-be5".into(), 15, 6);
        assert_eq!(p.net_v4.to_string(), "10.99.15.0/24");
        assert_eq!(p.net_v6.to_string(), "fd99:15::/64");
        assert_eq!(p.lb_v4(), Ipv4Addr::new(10, 99, 15, 1));
        assert_eq!(p.peer_v6(), "fd99:15::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.lb_mac.to_string(), "02:b1:00:00:06:01");
        let c = LinkPlan::new(LB_CLIENT_IFNAME.into(), 0, 0);
        assert_eq!(c.net_v6.to_string(), "fd99::/64");
        assert_eq!(c.peer_v4(), Ipv4Addr::new(10, 99, 0, 2));
        let last = LinkPlan::new("lb-be79".into(), 10 + 79, 80);
        assert_eq!(last.net_v4.to_string(), "10.99.89.0/24");
        assert!(!vip_block_v4().contains(last.net_v4.network()));
    }

    #[test]
    fn vip_blocks() {
        assert_eq!(vip_block_v4().to_string(), "10.99.100.0/24");
        assert_eq!(vip_block_v6().to_string(), "fd99:100::/64");
    }
}
