//! The node's network: a "node" network namespace joined to the root namespace by a veth, a
//! bridge there for the pods, and one network namespace per pod (`blixt_lab`'s [`NetNs`] and
//! [`Veth`] guards, so everything is deleted when dropped).
//!
//! Addressing, for the node index `N` (the lowest that no live node on the machine uses):
//!
//! | what | IPv4 | IPv6 |
//! |---|---|---|
//! | root end of the root <-> node veth (`knr<pid>-<N>`) | 10.243.N.1/24 | fd00:10:243:N::1/64 |
//! | node end (`eth0` in the node namespace): the Node's InternalIP and hostNetwork pods' IP | 10.243.N.2/24 | fd00:10:243:N::2/64 |
//! | pod CIDRs (`spec.podCIDRs`) | 10.244.N.0/24 | fd00:10:244:N::/64 |
//! | bridge `cbr0` in the node namespace, the pods' gateway | 10.244.N.1 | fd00:10:244:N::1 |
//! | pods (`eth0` in their namespace, peer `vp<k>` on the bridge) | 10.244.N.k, k = 2..=254 | fd00:10:244:N::k |
//!
//! The root namespace routes both pod CIDRs via the node namespace, which forwards: the test
//! process reaches every pod IP (and the node's addresses) directly. The node namespace's
//! default routes point back at the root end, so pods reach the root namespace's 10.243.N.1,
//! where the API server and the cluster DNS server listen when pods run. Bridged traffic on
//! `cbr0` passes the node namespace's iptables (`bridge-nf-call-ip(6)tables`, a per-namespace
//! sysctl), so kube-proxy's DNAT is undone for replies between pods on the bridge. Routes, the
//! root veth and kube-proxy's rules vanish with the node namespace.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _, Result};
use blixt_lab::{NetNs, Veth};

use crate::sys;

/// Prefixes of the namespaces the node agent creates (`<prefix><pid>-<n>`, see `blixt_lab`);
/// those of dead processes are removed at the next start.
pub(crate) const NODE_NS_PREFIX: &str = "knode";
pub(crate) const POD_NS_PREFIX: &str = "kpod";
/// Serialises picking a node index (and sweeping leftovers) between processes.
const LOCK_FILE: &str = "/run/blixt-k8s-harness-node.lock";
const BRIDGE: &str = "cbr0";

/// The node namespace, its link to the root namespace and the pod address pool.
#[derive(Debug)]
pub(crate) struct NodeNetwork {
    index: u8,
    // Deleting the namespace deletes the veth pair, and with the root end its routes.
    ns: NetNs,
    root_link: String,
    used: Arc<Mutex<BTreeSet<u8>>>,
    bridge_netfilter: bool,
}

impl NodeNetwork {
    /// Sweeps namespaces of dead test processes, then builds the node's network.
    pub(crate) fn create() -> Result<Self> {
        anyhow::ensure!(
            blixt_lab::is_root(),
            "the node agent needs root (it creates network namespaces, veths and mounts)"
        );
        let lock = File::create(LOCK_FILE).with_context(|| format!("creating {LOCK_FILE}"))?;
        sys::lock_exclusive(&lock).with_context(|| format!("locking {LOCK_FILE}"))?;
        for prefix in [POD_NS_PREFIX, NODE_NS_PREFIX] {
            let removed = blixt_lab::cleanup_stale(prefix)?;
            if !removed.is_empty() {
                tracing::info!(
                    ?removed,
                    "removed network namespaces of dead test processes"
                );
            }
        }
        let index = free_index()?;
        let ns = NetNs::new(NODE_NS_PREFIX)?;
        let root_link = format!("knr{}-{index}", std::process::id());
        ip(&[
            "link",
            "add",
            &root_link,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])?;
        let mut network = Self {
            index,
            ns,
            root_link,
            used: Arc::default(),
            bridge_netfilter: false,
        };
        network.configure()?;
        Ok(network)
    }

    fn configure(&mut self) -> Result<()> {
        let n = self.index;
        let link = self.root_link.as_str();
        for sysctl in [
            "net.ipv4.ip_forward",
            "net.ipv6.conf.all.forwarding",
            "net.ipv4.conf.all.rp_filter",
        ] {
            let value = if sysctl.ends_with("rp_filter") {
                "0"
            } else {
                "1"
            };
            self.ns.sysctl_set(sysctl, value)?;
        }
        // Only where br_netfilter is loaded (the sysctls then exist in every namespace).
        self.bridge_netfilter = self
            .ns
            .sysctl_get("net.bridge.bridge-nf-call-iptables")
            .is_ok();
        if self.bridge_netfilter {
            for sysctl in [
                "net.bridge.bridge-nf-call-iptables",
                "net.bridge.bridge-nf-call-ip6tables",
            ] {
                self.ns.sysctl_set(sysctl, "1")?;
            }
        }
        let (v4, v6) = self.host_ips();
        let lines = [
            format!("addr add {v4}/24 dev eth0"),
            format!("addr add {v6}/64 dev eth0 nodad"),
            "link set eth0 up".to_owned(),
            format!("link add name {BRIDGE} address 02:42:0a:f4:{n:02x}:01 type bridge"),
            format!("addr add 10.244.{n}.1/24 dev {BRIDGE}"),
            format!("addr add fd00:10:244:{n:x}::1/64 dev {BRIDGE} nodad"),
            format!("link set {BRIDGE} up"),
        ];
        self.ns.ip_batch(&lines)?;
        let (root_v4, root_v6) = self.root_ips();
        ip(&["addr", "add", &format!("{root_v4}/24"), "dev", link])?;
        ip(&[
            "addr",
            "add",
            &format!("{root_v6}/64"),
            "dev",
            link,
            "nodad",
        ])?;
        ip(&["link", "set", link, "up"])?;
        ip(&[
            "route",
            "add",
            &self.pod_cidrs()[0],
            "via",
            &v4.to_string(),
            "dev",
            link,
        ])?;
        ip(&[
            "route",
            "add",
            &self.pod_cidrs()[1],
            "via",
            &v6.to_string(),
            "dev",
            link,
        ])?;
        self.ns.ip_batch(&[
            format!("route add default via {root_v4}"),
            format!("route add default via {root_v6}"),
        ])
    }

    /// `[IPv4, IPv6]` pod CIDRs, for `spec.podCIDRs`.
    pub(crate) fn pod_cidrs(&self) -> [String; 2] {
        let n = self.index;
        [
            format!("10.244.{n}.0/24"),
            format!("fd00:10:244:{n:x}::/64"),
        ]
    }

    /// The node namespace's addresses: the Node's InternalIPs.
    pub(crate) fn host_ips(&self) -> (Ipv4Addr, Ipv6Addr) {
        let n = self.index;
        (
            Ipv4Addr::new(10, 243, n, 2),
            Ipv6Addr::new(0xfd00, 0x10, 0x243, n.into(), 0, 0, 0, 2),
        )
    }

    /// The root namespace's end of the veth: where pods and the node namespace reach the root
    /// namespace (the API server, the DNS server).
    pub(crate) fn root_ips(&self) -> (Ipv4Addr, Ipv6Addr) {
        let n = self.index;
        (
            Ipv4Addr::new(10, 243, n, 1),
            Ipv6Addr::new(0xfd00, 0x10, 0x243, n.into(), 0, 0, 0, 1),
        )
    }

    /// Whether bridged pod traffic passes iptables (`br_netfilter`). Without it, kube-proxy
    /// must masquerade all Service traffic for replies between pods on the bridge to be
    /// un-NATed.
    pub(crate) fn bridge_netfilter(&self) -> bool {
        self.bridge_netfilter
    }

    pub(crate) fn ns(&self) -> &NetNs {
        &self.ns
    }

    pub(crate) fn root_link(&self) -> &str {
        &self.root_link
    }

    /// A pod namespace with the next free address, on the bridge.
    pub(crate) fn attach_pod(&self) -> Result<PodNetwork> {
        let host = {
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            let host = (2..=254u8)
                .find(|h| !used.contains(h))
                .context("the node's pod CIDR is exhausted (253 pods)")?;
            used.insert(host);
            host
        };
        let n = self.index;
        let mut pod = PodNetwork {
            veth: None,
            ns: None,
            host,
            used: self.used.clone(),
            ipv4: Ipv4Addr::new(10, 244, n, host),
            ipv6: Ipv6Addr::new(0xfd00, 0x10, 0x244, n.into(), 0, 0, 0, host.into()),
        };
        let ns = pod.ns.insert(NetNs::new(POD_NS_PREFIX)?);
        let node_end = format!("vp{host}");
        pod.veth = Some(Veth::create(&self.ns, &node_end, ns, "eth0")?);
        self.ns.ip_batch(&[
            format!("link set {node_end} master {BRIDGE}"),
            format!("link set {node_end} up"),
        ])?;
        ns.ip_batch(&[
            format!("addr add {}/24 dev eth0", pod.ipv4),
            format!("addr add {}/64 dev eth0 nodad", pod.ipv6),
            "link set eth0 up".to_owned(),
            format!("route add default via 10.244.{n}.1"),
            format!("route add default via fd00:10:244:{n:x}::1"),
        ])?;
        // The address may have belonged to a pod deleted moments ago: the node still maps it to
        // that pod's MAC (REACHABLE or STALE), and what forwards by the neighbour table
        // without revalidating it (a BPF FIB lookup) would send to a MAC nobody has. CNI
        // plugins announce a new pod's addresses (the bridge plugin sends a gratuitous ARP);
        // forgetting the old entries has the same effect on the node.
        self.ns.ip_batch(&[
            format!("neigh flush to {} dev {BRIDGE}", pod.ipv4),
            format!("neigh flush to {} dev {BRIDGE}", pod.ipv6),
        ])?;
        Ok(pod)
    }
}

/// A pod's network namespace and addresses; dropping it deletes the namespace (and its veth)
/// and returns the address to the pool.
#[derive(Debug)]
pub(crate) struct PodNetwork {
    veth: Option<Veth>,
    ns: Option<NetNs>,
    host: u8,
    used: Arc<Mutex<BTreeSet<u8>>>,
    pub(crate) ipv4: Ipv4Addr,
    pub(crate) ipv6: Ipv6Addr,
}

impl PodNetwork {
    pub(crate) fn ns(&self) -> &NetNs {
        self.ns
            .as_ref()
            .expect("a pod network has its namespace until dropped")
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        // The veth's name derives from the address: free the address only once both are gone.
        drop(self.veth.take());
        drop(self.ns.take());
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.host);
    }
}

/// The lowest node index whose addresses no interface or route of the root namespace uses.
fn free_index() -> Result<u8> {
    let taken = format!(
        "{}\n{}",
        ip(&["-4", "route", "show"])?,
        ip(&["-o", "-4", "addr", "show"])?
    );
    (0..=254u8)
        .find(|n| {
            !taken.contains(&format!("10.244.{n}.")) && !taken.contains(&format!("10.243.{n}."))
        })
        .context("no free node index: 10.243.0-254.x and 10.244.0-254.x are all in use")
}

/// Runs `ip <args>` in the root namespace.
fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip` (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
