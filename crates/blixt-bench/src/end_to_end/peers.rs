//! The load-balancer node's mechanism, one at a time: Blixt, kube-proxy's iptables and
//! nftables modes, or HAProxy in TCP mode, each configured for the same [`Service`]s and each
//! living only in the lab's lb namespace. Everything else in the lab stays as it is.
//!
//! - [`System::Blixt`]: the agent's own loop (`blixt_agent::runner`, the code `blixt run`
//!   and `blixt agent` run) in this process: the dataplane loaded without pins, XDP attached
//!   natively on every lb-side veth, the snapshot applied, conntrack swept every 10 s as the
//!   agent does by default. Full-NAT to the lb's client-link address. Dropping it detaches
//!   XDP (nothing is pinned).
//! - [`System::BlixtTc`]: the same in TC mode (`attach: tc`, as `blixt agent --attach tc`):
//!   `blixt_lb_tc` at TC ingress of every lb-side veth, no XDP on the lb.
//! - [`System::Iptables`]: the NAT rules kube-proxy's iptables mode writes for a ClusterIP
//!   service (`KUBE-SERVICES` → `KUBE-SVC-*` with `statistic --mode random --probability`
//!   → `KUBE-SEP-*` DNAT; `KUBE-MARK-MASQ` and `KUBE-POSTROUTING` masquerade with
//!   `--random-fully`; `KUBE-FORWARD` accepting marked and established traffic), loaded with
//!   `iptables-restore` (Debian's iptables, nf_tables backend). Conntrack does the rest.
//! - [`System::Nftables`]: what kube-proxy's nftables mode writes: a `service-ips` verdict map
//!   on `daddr . l4proto . dport`, a chain per service choosing its endpoint with
//!   `numgen random mod N vmap`, an endpoint chain per backend with `dnat to`, and the same
//!   mark-and-masquerade. Endpoint rules carry a `counter` so the run can prove each backend
//!   got connections (per-CPU, a few ns).
//! - [`System::Haproxy`]: `haproxy` (Debian's 2.6) in `mode tcp`, `balance roundrobin`, one
//!   server line per backend, `nbthread 2` for this 2-core machine, `maxconn 8000`, bound on
//!   the VIP (added to the lb's `lo` for the run). HAProxy has no UDP, so UDP services are
//!   skipped for it. Its sessions per server come from the stats socket.
//!
//! For the netfilter peers the packets are routed by the lb's kernel (ip_forward); [`Installed`]
//! checks that no XDP program is on the lb's interfaces then (nor in TC mode, where the
//! dataplane must report TC on every one), and that Blixt's is on all of them when Blixt runs
//! at XDP. [`Installed::evidence`] reads the mechanism's own counters.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use blixt_agent::runner::{self, AgentOptions, GenerationSource};
use blixt_agent::{Node, NodeConfig, NodeServices, Reconciler};
use blixt_bpf::{AttachMode, AttachedMode, DataplaneOptions};
use blixt_core::generation::Generation;
use blixt_core::snapshot::{
    Backend, BackendAddr, BackendState, Frontend, FrontendKey, Protocol, Snapshot,
};
use blixt_lab::process::LabProcess;
use blixt_lab::{Lab, NetNs};

/// The pod network kube-proxy would be told about (`--cluster-cidr`): traffic from outside it
/// is masqueraded. It covers the lab's backend links (10.99.10.0/24 upward), not the client.
pub const CLUSTER_CIDR: &str = "10.99.8.0/21";

/// One load-balanced service: a VIP and port, and its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Short name (letters, digits, `-`), used in chain and proxy names.
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: Protocol,
    pub backends: Vec<SocketAddrV4>,
}

impl Service {
    fn proto_name(&self) -> &'static str {
        match self.proto {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A mechanism the lb node can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum System {
    Blixt,
    /// Blixt with `attach: tc`.
    BlixtTc,
    Iptables,
    Nftables,
    Haproxy,
}

impl System {
    pub const ALL: [System; 5] = [
        System::Blixt,
        System::BlixtTc,
        System::Iptables,
        System::Nftables,
        System::Haproxy,
    ];

    /// Name in results.json (`blixt` is [`crate::results::BLIXT`]).
    pub fn id(self) -> &'static str {
        match self {
            System::Blixt => crate::results::BLIXT,
            System::BlixtTc => "blixt_tc",
            System::Iptables => "iptables",
            System::Nftables => "nftables",
            System::Haproxy => "haproxy",
        }
    }

    /// Name for readers.
    pub fn label(self) -> &'static str {
        match self {
            System::Blixt => "Blixt (XDP, full-NAT)",
            System::BlixtTc => "Blixt (TC mode, full-NAT)",
            System::Iptables => "kube-proxy iptables mode",
            System::Nftables => "kube-proxy nftables mode",
            System::Haproxy => "HAProxy 2.6, mode tcp",
        }
    }

    /// Whether it balances UDP.
    pub fn supports_udp(self) -> bool {
        self != System::Haproxy
    }

    /// What [`Evidence::per_backend`] counts for it.
    pub fn counter_meaning(self) -> &'static str {
        match self {
            System::Blixt | System::BlixtTc => "new flows in Blixt's per-backend counters",
            System::Iptables => {
                "packets through the KUBE-SEP DNAT rules (first packet of each connection)"
            }
            System::Nftables => {
                "packets through the endpoint chains' dnat rules (first packet of each connection)"
            }
            System::Haproxy => "sessions per server (stot on the stats socket)",
        }
    }
}

/// What the mechanism's own counters say, and how the lb's kernel saw the traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Backend address → count (see [`System::counter_meaning`]).
    pub per_backend: BTreeMap<String, u64>,
    /// Datagrams the lb's kernel forwarded (`Ip: ForwDatagrams` of the lb namespace).
    pub kernel_forwarded: u64,
    /// Datagrams the lb's kernel delivered locally (`Ip: InDelivers`).
    pub kernel_delivered: u64,
    /// Blixt's global drop and error counters that are not zero, by name.
    pub blixt_stats: BTreeMap<String, u64>,
}

impl Evidence {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Evidence) -> Evidence {
        let sub = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
            a.iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(b.get(k).copied().unwrap_or(0))))
                .collect()
        };
        Evidence {
            per_backend: sub(&self.per_backend, &earlier.per_backend),
            kernel_forwarded: self.kernel_forwarded
                - earlier.kernel_forwarded.min(self.kernel_forwarded),
            kernel_delivered: self.kernel_delivered
                - earlier.kernel_delivered.min(self.kernel_delivered),
            blixt_stats: sub(&self.blixt_stats, &earlier.blixt_stats)
                .into_iter()
                .filter(|(_, v)| *v > 0)
                .collect(),
        }
    }

    /// Sum over backends.
    pub fn total(&self) -> u64 {
        self.per_backend.values().sum()
    }
}

/// A mechanism running on the lab's lb node; dropping it removes it.
#[derive(Debug)]
pub struct Installed {
    system: System,
    lb: PathBuf,
    lb_name: String,
    ifaces: Vec<String>,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Blixt(BlixtLb),
    Netfilter(Netfilter),
    Haproxy(Haproxy),
}

/// Sets up `system` on `lab`'s lb node for `services` and checks the lb's XDP state fits it.
pub fn install(system: System, lab: &Lab, services: &[Service]) -> Result<Installed> {
    let ifaces: Vec<String> = lab.lb_interfaces().into_iter().map(|(n, _)| n).collect();
    let attached = xdp_attached(&lab.lb, &ifaces)?;
    ensure!(
        attached.is_empty(),
        "XDP is still attached on {attached:?} of the lb before starting {}",
        system.id()
    );
    let inner = match system {
        System::Blixt => Inner::Blixt(BlixtLb::start(lab, services, AttachMode::Xdp)?),
        System::BlixtTc => Inner::Blixt(BlixtLb::start(lab, services, AttachMode::Tc)?),
        System::Iptables => Inner::Netfilter(Netfilter::iptables(&lab.lb, services)?),
        System::Nftables => Inner::Netfilter(Netfilter::nftables(&lab.lb, services)?),
        System::Haproxy => Inner::Haproxy(Haproxy::start(&lab.lb, services)?),
    };
    let attached = xdp_attached(&lab.lb, &ifaces)?;
    if system == System::Blixt {
        ensure!(
            attached.len() == ifaces.len(),
            "Blixt's XDP is on {attached:?}, not on every lb interface {ifaces:?}"
        );
    } else if let Inner::Blixt(b) = &inner {
        ensure!(
            attached.is_empty(),
            "XDP attached on {attached:?} while Blixt runs in TC mode"
        );
        let modes = b.attached_modes()?;
        ensure!(
            ifaces
                .iter()
                .all(|i| modes.get(i.as_str()) == Some(&AttachedMode::Tc)),
            "Blixt in TC mode attached as {modes:?}, not at TC on every lb interface {ifaces:?}"
        );
    } else {
        ensure!(
            attached.is_empty(),
            "XDP attached on {attached:?} while {} runs",
            system.id()
        );
    }
    Ok(Installed {
        system,
        lb: lab.lb.path().to_path_buf(),
        lb_name: lab.lb.name().to_string(),
        ifaces,
        inner,
    })
}

impl Installed {
    pub fn system(&self) -> System {
        self.system
    }

    /// The mechanism's counters and the lb kernel's, now.
    pub fn evidence(&mut self, lab: &Lab) -> Result<Evidence> {
        let mut e = match &mut self.inner {
            Inner::Blixt(b) => b.evidence()?,
            Inner::Netfilter(n) => n.evidence(&lab.lb)?,
            Inner::Haproxy(h) => h.evidence()?,
        };
        let (fwd, deliv) = kernel_ip_counters(&lab.lb)?;
        e.kernel_forwarded = fwd;
        e.kernel_delivered = deliv;
        Ok(e)
    }

    /// Removes the mechanism now and checks nothing of it is left on the lb's interfaces.
    pub fn remove(self, lab: &Lab) -> Result<()> {
        let system = self.system;
        let ifaces = self.ifaces.clone();
        drop(self);
        let attached = xdp_attached(&lab.lb, &ifaces)?;
        ensure!(
            attached.is_empty(),
            "XDP still attached on {attached:?} after {} was removed",
            system.id()
        );
        Ok(())
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = (&self.lb, &self.lb_name);
        match &mut self.inner {
            Inner::Blixt(b) => b.stop(),
            Inner::Netfilter(n) => n.flush(),
            Inner::Haproxy(h) => h.stop(),
        }
    }
}

/// lb interfaces (among `ifaces`) that have an XDP program attached.
pub fn xdp_attached(lb: &NetNs, ifaces: &[String]) -> Result<Vec<String>> {
    let out = lb.ip(&["-j", "-d", "link", "show"])?;
    let links: serde_json::Value =
        serde_json::from_str(&out).context("parsing `ip -j -d link show`")?;
    Ok(links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| {
            l["ifname"]
                .as_str()
                .is_some_and(|n| ifaces.iter().any(|i| i == n))
                && l.get("xdp").is_some()
        })
        .filter_map(|l| l["ifname"].as_str().map(String::from))
        .collect())
}

/// `Ip: ForwDatagrams` and `Ip: InDelivers` of `ns` (from /proc/thread-self/net/snmp read
/// by a thread inside it: /proc/self would show the process's namespace).
pub fn kernel_ip_counters(ns: &NetNs) -> Result<(u64, u64)> {
    let text = ns
        .run_in(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))
        .with_context(|| format!("reading /proc/net/snmp of {}", ns.name()))?;
    let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
    let (Some(names), Some(values)) = (ip.next(), ip.next()) else {
        bail!("no Ip: lines in /proc/net/snmp");
    };
    let get = |field: &str| -> Result<u64> {
        let i = names
            .split_whitespace()
            .position(|n| n == field)
            .with_context(|| format!("no {field} in /proc/net/snmp"))?;
        values
            .split_whitespace()
            .nth(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no value for {field} in /proc/net/snmp"))
    };
    Ok((get("ForwDatagrams")?, get("InDelivers")?))
}

// ---------------------------------------------------------------------------------------------
// Blixt

/// Hands the agent loop one snapshot, then nothing.
struct Once(Option<Snapshot>);

impl GenerationSource for Once {
    fn poll(&mut self) -> Option<Result<Generation>> {
        self.0.take().map(|s| Ok(Generation::of(s)))
    }

    fn applied(&mut self, _: &Generation) {}
}

/// The snapshot serving `services` (generation 1).
pub fn blixt_snapshot(services: &[Service]) -> Snapshot {
    Snapshot {
        generation: 1,
        frontends: services
            .iter()
            .map(|s| Frontend {
                name: s.name.clone(),
                key: FrontendKey {
                    vip: s.vip.into(),
                    port: s.port,
                    protocol: s.proto,
                },
                backends: s
                    .backends
                    .iter()
                    .map(|b| Backend {
                        addr: BackendAddr {
                            addr: (*b.ip()).into(),
                            port: b.port(),
                        },
                        weight: 1,
                        state: BackendState::Active,
                    })
                    .collect(),
                reject_weight: 0,
            })
            .collect(),
    }
}

/// Blixt's agent loop on the lb node, in this process.
pub struct BlixtLb {
    rec: Arc<Mutex<Reconciler>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl std::fmt::Debug for BlixtLb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlixtLb").finish_non_exhaustive()
    }
}

impl BlixtLb {
    /// Loads, attaches (`attach`: XDP or TC mode) to every lb interface and applies
    /// `services`; SNAT to the lb's address on the client link.
    pub fn start(lab: &Lab, services: &[Service], attach: AttachMode) -> Result<BlixtLb> {
        let opts = AgentOptions {
            dataplane: DataplaneOptions {
                attach,
                ..DataplaneOptions::default()
            },
            interfaces: lab.lb_interfaces().into_iter().map(|(n, _)| n).collect(),
            node: NodeConfig {
                snat_v4: Some(lab.client.link.lb_v4.into()),
                snat_v6: Some(lab.client.link.lb_v6.into()),
                ..NodeConfig::default()
            },
            poll_interval: Duration::from_millis(100),
            sweep_interval: Duration::from_secs(10),
            // the client routes the VIP block via the lb: no ARP answers needed
            announce: false,
            remove_on_exit: false,
        };
        let node = lab
            .lb
            .run_in(|| Node::start(&opts, NodeServices::default()))
            .context("starting Blixt on the lb node")?;
        let node = Arc::new(node);
        let rec = node.shared_reconciler();
        let stop = Arc::new(AtomicBool::new(false));
        let snapshot = blixt_snapshot(services);
        let generation = snapshot.generation;
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("blixt-agent".into())
                .spawn(move || {
                    let mut source = Once(Some(snapshot));
                    runner::run(&opts, &node, &mut source, &stop)
                })
                .context("spawning the agent loop")?
        };
        let mut lb = BlixtLb {
            rec,
            stop,
            thread: Some(thread),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if lb.lock()?.generation() == Some(generation) {
                return Ok(lb);
            }
            if lb.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let r = lb.thread.take().map(|t| t.join());
                bail!("Blixt's agent loop ended before applying the snapshot: {r:?}");
            }
            ensure!(
                Instant::now() < deadline,
                "Blixt did not apply generation {generation} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Reconciler>> {
        self.rec
            .lock()
            .map_err(|_| anyhow::anyhow!("reconciler lock poisoned"))
    }

    /// The reconciler, for readers of its counters.
    pub fn reconciler(&self) -> &Arc<Mutex<Reconciler>> {
        &self.rec
    }

    /// How the dataplane attached to each interface.
    pub fn attached_modes(&self) -> Result<BTreeMap<String, AttachedMode>> {
        Ok(self.lock()?.dataplane().attached().clone())
    }

    /// New flows per backend address, and the global counters that are not zero.
    pub fn evidence(&self) -> Result<Evidence> {
        let rec = self.lock()?;
        let mut e = Evidence::default();
        for f in rec.view() {
            for (addr, id, _, _) in f.backends {
                let c = rec.backend_counters(id)?;
                *e.per_backend
                    .entry(format!("{}:{}", addr.addr, addr.port))
                    .or_default() += c.new_flows;
            }
        }
        let global = rec.global_counters()?;
        for (name, v) in blixt_bpf::shared::STAT_NAMES.iter().zip(global) {
            if v > 0 {
                e.blixt_stats.insert((*name).to_string(), v);
            }
        }
        Ok(e)
    }

    /// Stops the loop and drops the dataplane (XDP detached: nothing is pinned).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("blixt-bench: Blixt's agent loop: {e:#}"),
                Err(_) => eprintln!("blixt-bench: Blixt's agent loop panicked"),
            }
        }
        // The last Arc goes with self; replace the reconciler's links now by dropping ours
        // after the thread's clone is gone.
    }
}

// ---------------------------------------------------------------------------------------------
// iptables / nftables

/// kube-proxy's rules in the lb namespace (iptables or nftables flavour).
#[derive(Debug)]
pub struct Netfilter {
    nft: bool,
    lb: String,
}

/// kube-proxy's iptables-mode rules for `services`, as `iptables-restore` input.
pub fn iptables_rules(services: &[Service]) -> String {
    let mut chains = vec![
        ":KUBE-SERVICES - [0:0]".to_string(),
        ":KUBE-POSTROUTING - [0:0]".into(),
        ":KUBE-MARK-MASQ - [0:0]".into(),
    ];
    let mut rules = vec![
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
            .to_string(),
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES".into(),
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING"
            .into(),
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".into(),
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000".into(),
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" \
         -j MASQUERADE --random-fully"
            .into(),
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000".into(),
    ];
    for s in services {
        let p = s.proto_name();
        let svc = format!("KUBE-SVC-{}", s.name.to_uppercase());
        chains.push(format!(":{svc} - [0:0]"));
        rules.push(format!(
            "-A KUBE-SERVICES -d {}/32 -p {p} -m comment --comment \"e2e/{} cluster IP\" \
             -m {p} --dport {} -j {svc}",
            s.vip, s.name, s.port
        ));
        rules.push(format!(
            "-A {svc} ! -s {CLUSTER_CIDR} -d {}/32 -p {p} -m {p} --dport {} -j KUBE-MARK-MASQ",
            s.vip, s.port
        ));
        let n = s.backends.len();
        for (i, b) in s.backends.iter().enumerate() {
            let sep = format!("KUBE-SEP-{}-{i}", s.name.to_uppercase());
            chains.push(format!(":{sep} - [0:0]"));
            if i + 1 < n {
                // kube-proxy's probabilities: 1/n, 1/(n-1), ..., the last one unconditional
                let prob = 1.0 / (n - i) as f64;
                rules.push(format!(
                    "-A {svc} -m statistic --mode random --probability {prob:.11} -j {sep}"
                ));
            } else {
                rules.push(format!("-A {svc} -j {sep}"));
            }
            rules.push(format!("-A {sep} -s {}/32 -j KUBE-MARK-MASQ", b.ip()));
            rules.push(format!(
                "-A {sep} -p {p} -m {p} -j DNAT --to-destination {b}"
            ));
        }
    }
    let mut out = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n",
    );
    for c in chains {
        out += &c;
        out.push('\n');
    }
    for r in rules {
        out += &r;
        out.push('\n');
    }
    out += "COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
            :KUBE-FORWARD - [0:0]\n\
            -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
            -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
            -A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT\n\
            -A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
            COMMIT\n";
    out
}

/// kube-proxy's nftables-mode table for `services`, as `nft -f` input.
pub fn nftables_rules(services: &[Service]) -> String {
    let mut elements = Vec::new();
    let mut chains = String::new();
    for s in services {
        let p = s.proto_name();
        let svc = format!("service-e2e/{}/{p}/p{}", s.name, s.port);
        elements.push(format!("{} . {p} . {} : goto {svc}", s.vip, s.port));
        let n = s.backends.len();
        let mut vmap = Vec::new();
        for (i, b) in s.backends.iter().enumerate() {
            let ep = format!(
                "endpoint-e2e/{}/{p}/p{}__{}/{}",
                s.name,
                s.port,
                b.ip(),
                b.port()
            );
            vmap.push(format!("{i} : goto {ep}"));
            chains += &format!(
                "  chain {ep} {{\n    ip saddr {} jump mark-for-masquerade\n    \
                 meta l4proto {p} counter dnat to {b}\n  }}\n",
                b.ip()
            );
        }
        chains += &format!(
            "  chain {svc} {{\n    ip daddr {} {p} dport {} ip saddr != {CLUSTER_CIDR} jump \
             mark-for-masquerade\n    numgen random mod {n} vmap {{ {} }}\n  }}\n",
            s.vip,
            s.port,
            vmap.join(", ")
        );
    }
    format!(
        "table ip kube-proxy {{\n\
         \x20 map service-ips {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n    \
         elements = {{ {} }}\n  }}\n\
         \x20 chain mark-for-masquerade {{\n    meta mark set meta mark or 0x4000\n  }}\n\
         \x20 chain masquerading {{\n    meta mark & 0x4000 == 0 return\n    \
         meta mark set meta mark xor 0x4000\n    masquerade fully-random\n  }}\n\
         \x20 chain services {{\n    ip daddr . meta l4proto . th dport vmap @service-ips\n  }}\n\
         \x20 chain nat-prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    \
         jump services\n  }}\n\
         \x20 chain nat-output {{\n    type nat hook output priority -100; policy accept;\n    \
         jump services\n  }}\n\
         \x20 chain nat-postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         jump masquerading\n  }}\n\
         \x20 chain filter-forward {{\n    type filter hook forward priority filter; policy accept;\n    \
         ct state invalid drop\n  }}\n\
         {chains}}}\n",
        elements.join(", ")
    )
}

impl Netfilter {
    fn iptables(lb: &NetNs, services: &[Service]) -> Result<Netfilter> {
        let nf = Netfilter {
            nft: false,
            lb: lb.name().to_string(),
        };
        nf.flush_checked(lb)?;
        load_stdin(lb, &["iptables-restore"], &iptables_rules(services))?;
        Ok(nf)
    }

    fn nftables(lb: &NetNs, services: &[Service]) -> Result<Netfilter> {
        let nf = Netfilter {
            nft: true,
            lb: lb.name().to_string(),
        };
        nf.flush_checked(lb)?;
        load_stdin(lb, &["nft", "-f", "-"], &nftables_rules(services))?;
        Ok(nf)
    }

    /// Empties the lb's ruleset and its conntrack table, so every run starts as Blixt's does,
    /// from empty state (entries in TIME_WAIT would otherwise linger for 120 s and fill the
    /// table across rounds).
    fn flush_checked(&self, lb: &NetNs) -> Result<()> {
        lb.exec(&["nft", "flush", "ruleset"]).context(
            "nft flush ruleset in the lb namespace (is nftables installed? `make deps`)",
        )?;
        lb.exec(&["conntrack", "-F"])
            .context("conntrack -F in the lb namespace (is conntrack installed? `make deps`)")?;
        Ok(())
    }

    /// Packets through each backend's DNAT rule.
    fn evidence(&self, lb: &NetNs) -> Result<Evidence> {
        let mut e = Evidence::default();
        if self.nft {
            let out = lb.exec(&["nft", "list", "table", "ip", "kube-proxy"])?;
            for line in out.lines().filter(|l| l.contains("dnat to")) {
                let packets = word_after(line, "packets").unwrap_or(0);
                let to = line.rsplit("dnat to ").next().unwrap_or("").trim();
                *e.per_backend.entry(to.to_string()).or_default() += packets;
            }
        } else {
            let out = lb.exec(&["iptables-save", "-c", "-t", "nat"])?;
            for line in out.lines().filter(|l| l.contains("-j DNAT")) {
                // "[packets:bytes] -A KUBE-SEP-... --to-destination 10.99.10.2:8080"
                let packets = line
                    .strip_prefix('[')
                    .and_then(|l| l.split(':').next())
                    .and_then(|p| p.parse::<u64>().ok())
                    .unwrap_or(0);
                let to = word_after_str(line, "--to-destination").unwrap_or_default();
                *e.per_backend.entry(to).or_default() += packets;
            }
        }
        Ok(e)
    }

    fn flush(&mut self) {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.lb, "nft", "flush", "ruleset"])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &self.lb, "conntrack", "-F"])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "blixt-bench: flushing the lb's ruleset: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("blixt-bench: flushing the lb's ruleset: {e}"),
        }
    }
}

fn word_after(line: &str, key: &str) -> Option<u64> {
    word_after_str(line, key).and_then(|w| w.parse().ok())
}

fn word_after_str(line: &str, key: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == key)?;
    words.next().map(String::from)
}

/// Runs `args` in `ns` with `input` on stdin; a failure carries stderr and the input.
fn load_stdin(ns: &NetNs, args: &[&str], input: &str) -> Result<()> {
    let mut child = ns
        .command(args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} (is it installed? `make deps`)", args[0]))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "`{}` in netns {} failed ({}): {}\ninput:\n{input}",
        args.join(" "),
        ns.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// HAProxy

/// `haproxy -db` in the lb namespace with a config of ours and a stats socket.
#[derive(Debug)]
pub struct Haproxy {
    process: Option<LabProcess>,
    dir: PathBuf,
    lb: String,
    vips: Vec<Ipv4Addr>,
    backend_names: BTreeMap<String, String>,
}

/// The HAProxy configuration serving the TCP `services` (UDP ones are skipped).
pub fn haproxy_config(services: &[Service], stats_socket: &std::path::Path) -> String {
    let mut c = format!(
        "global\n    maxconn 8000\n    nbthread 2\n    \
         stats socket {} mode 600 level admin\n\n\
         defaults\n    mode tcp\n    maxconn 8000\n    timeout connect 5s\n    \
         timeout client 30s\n    timeout server 30s\n",
        stats_socket.display()
    );
    for s in services.iter().filter(|s| s.proto == Protocol::Tcp) {
        c += &format!(
            "\nfrontend fe-{n}\n    bind {}:{}\n    default_backend be-{n}\n\n\
             backend be-{n}\n    balance roundrobin\n",
            s.vip,
            s.port,
            n = s.name
        );
        for (i, b) in s.backends.iter().enumerate() {
            c += &format!("    server s{i} {b}\n");
        }
    }
    c
}

impl Haproxy {
    /// Starts HAProxy for the TCP `services` on the lb node and waits for its stats socket.
    pub fn start(lb: &NetNs, services: &[Service]) -> Result<Haproxy> {
        let dir = std::env::temp_dir().join(format!(
            "blixt-bench-haproxy-{}-{}",
            std::process::id(),
            lb.name()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let sock = dir.join("stats.sock");
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, haproxy_config(services, &sock))
            .with_context(|| format!("writing {}", cfg.display()))?;
        let mut vips: Vec<Ipv4Addr> = services.iter().map(|s| s.vip).collect();
        vips.sort();
        vips.dedup();
        let mut backend_names = BTreeMap::new();
        for s in services.iter().filter(|s| s.proto == Protocol::Tcp) {
            for (i, b) in s.backends.iter().enumerate() {
                backend_names.insert(format!("be-{}/s{i}", s.name), b.to_string());
            }
        }
        let mut h = Haproxy {
            process: None,
            dir,
            lb: lb.name().to_string(),
            vips: Vec::new(),
            backend_names,
        };
        lb.ip(&["link", "set", "lo", "up"])?;
        for v in &vips {
            lb.ip(&["addr", "add", &format!("{v}/32"), "dev", "lo"])?;
            h.vips.push(*v);
        }
        let cfg_s = cfg.display().to_string();
        h.process = Some(
            lb.spawn(&["haproxy", "-db", "-f", &cfg_s])
                .context("starting haproxy (is it installed? `make deps`)")?,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(stat) = h.show_stat() {
                if stat.len() >= h.backend_names.len() {
                    return Ok(h);
                }
            }
            if let Some(p) = h.process.as_mut() {
                if let Some(status) = p.try_wait()? {
                    bail!(
                        "haproxy exited at start ({status}); config:\n{}",
                        haproxy_config(services, &sock)
                    );
                }
            }
            ensure!(
                Instant::now() < deadline,
                "haproxy's stats socket {} did not answer within 10 s",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `stot` (sessions) per `backend/server` from `show stat`.
    pub fn show_stat(&self) -> Result<BTreeMap<String, u64>> {
        let sock = self.dir.join("stats.sock");
        let mut s = UnixStream::connect(&sock)
            .with_context(|| format!("connecting to {}", sock.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"show stat\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let mut lines = text.lines();
        let header = lines
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .context("show stat: no header")?;
        let col = |name: &str| header.split(',').position(|c| c == name);
        let stot = col("stot").context("show stat: no stot column")?;
        let mut out = BTreeMap::new();
        for l in lines {
            let f: Vec<&str> = l.split(',').collect();
            if f.len() <= stot || f[1] == "FRONTEND" || f[1] == "BACKEND" {
                continue;
            }
            out.insert(format!("{}/{}", f[0], f[1]), f[stot].parse().unwrap_or(0));
        }
        Ok(out)
    }

    fn evidence(&self) -> Result<Evidence> {
        let mut e = Evidence::default();
        for (server, n) in self.show_stat()? {
            let addr = self.backend_names.get(&server).cloned().unwrap_or(server);
            *e.per_backend.entry(addr).or_default() += n;
        }
        Ok(e)
    }

    /// Stops HAProxy and removes the VIPs and its files.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.terminate(Duration::from_secs(2));
        }
        for v in self.vips.drain(..) {
            let _ = std::process::Command::new("ip")
                .args([
                    "-n",
                    &self.lb,
                    "addr",
                    "del",
                    &format!("{v}/32"),
                    "dev",
                    "lo",
                ])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services() -> Vec<Service> {
        let backends: Vec<SocketAddrV4> = (0..3)
            .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 99, 10 + i, 2), 8080))
            .collect();
        vec![
            Service {
                name: "http".into(),
                vip: Ipv4Addr::new(10, 99, 100, 1),
                port: 80,
                proto: Protocol::Tcp,
                backends: backends.clone(),
            },
            Service {
                name: "dns".into(),
                vip: Ipv4Addr::new(10, 99, 100, 1),
                port: 53,
                proto: Protocol::Udp,
                backends,
            },
        ]
    }

    #[test]
    fn iptables_probabilities_follow_kube_proxy() {
        let r = iptables_rules(&services());
        assert!(r.contains("--probability 0.33333333333 -j KUBE-SEP-HTTP-0"));
        assert!(r.contains("--probability 0.50000000000 -j KUBE-SEP-HTTP-1"));
        assert!(r.contains("-A KUBE-SVC-HTTP -j KUBE-SEP-HTTP-2"));
        assert!(r.contains("-p udp -m udp -j DNAT --to-destination 10.99.12.2:8080"));
        assert!(r.ends_with("COMMIT\n"));
    }

    #[test]
    fn nftables_map_and_numgen() {
        let r = nftables_rules(&services());
        assert!(r.contains("10.99.100.1 . tcp . 80 : goto service-e2e/http/tcp/p80"));
        assert!(r.contains(
            "numgen random mod 3 vmap { 0 : goto endpoint-e2e/http/tcp/p80__10.99.10.2/8080"
        ));
        assert!(r.contains("meta l4proto udp counter dnat to 10.99.11.2:8080"));
    }

    #[test]
    fn haproxy_skips_udp() {
        let c = haproxy_config(&services(), std::path::Path::new("/tmp/s.sock"));
        assert!(c.contains("frontend fe-http\n    bind 10.99.100.1:80"));
        assert!(c.contains("    server s2 10.99.12.2:8080\n"));
        assert!(!c.contains("fe-dns"));
    }
}
