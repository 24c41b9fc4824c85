//! The systems under test, each in a lab of its own (client, lb node, three backends, from
//! [`blixt_lab::Lab`]), set up identically except for the lb node's forwarding mechanism:
//!
//! - Blixt: the real dataplane (XDP on every lb-side veth), programmed by the agent's
//!   reconciler with a UDP and a TCP frontend on one VIP and three backends, full NAT.
//! - Blixt in TC mode (`attach: tc`): the same, the load balancer (`blixt_lb_tc`) at TC ingress
//!   of every lb-side veth, behind an XDP_PASS program like the netfilter peers.
//! - nftables: kube-proxy's nftables mode in miniature: a `vmap` of services, `numgen random
//!   mod 3` to endpoint chains that DNAT, masquerade of marked packets (full NAT like Blixt),
//!   and a filter forward chain dropping conntrack-invalid packets.
//! - iptables (and iptables-legacy when it works): kube-proxy's iptables mode in miniature:
//!   KUBE-SERVICES → KUBE-SVC (`statistic --mode random --probability`) → KUBE-SEP (DNAT),
//!   KUBE-MARK-MASQ / KUBE-POSTROUTING masquerade, KUBE-FORWARD dropping invalid packets.
//! - rx-drop: an XDP_DROP counter on the lb's receiving veth end, nothing forwarded: the
//!   ceiling of the lab's receive path, to show the generator outruns every LB.
//!
//! Every system has an XDP program on the lb's client-facing veth end (Blixt its own, the
//! others an XDP_PASS program): a veth only accepts XDP_TX/XDP_REDIRECT frames from its peer
//! (the generator's) when it has one, and it gives every system the same NAPI receive path.
//! The receiving veth's NAPI runs threaded (`/sys/class/net/<dev>/threaded`), its kthread
//! pinned to the LB CPU; the backends' veth ends run the sink (bench_sink.bpf.c).

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use aya::maps::{MapData, MapError, PerCpuArray};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use blixt_agent::{NodeConfig, Reconciler};
use blixt_bpf::live::BENCH_SINK_OBJ;
use blixt_bpf::shared::{FlowKey, STAT_CT_INSERT_FAILED, STAT_SNAT_EXHAUSTED};
use blixt_bpf::{AttachMode, Dataplane, DataplaneOptions};
use blixt_core::snapshot::{
    Backend, BackendAddr, BackendState, Frontend, FrontendKey, Protocol, Snapshot,
};
use blixt_lab::{Lab, LabSpec, NetNs};

use super::gen::{pin_task, RT_PRIORITY};

/// Namespace prefix of this suite's labs.
const PREFIX: &str = "blxfw";
pub const BACKENDS: usize = 3;
pub const BACKEND_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 53;
pub const TCP_PORT: u16 = 80;
/// Blixt's conntrack size: the agent's default.
const CONNTRACK_ENTRIES: u32 = 262_144;

/// A forwarding mechanism on the lb node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum System {
    Blixt,
    /// Blixt with `attach: tc`.
    BlixtTc,
    Nftables,
    Iptables,
    IptablesLegacy,
    RxDrop,
}

impl System {
    /// Name in results.json.
    pub fn name(self) -> &'static str {
        match self {
            System::Blixt => "blixt",
            System::BlixtTc => "blixt_tc",
            System::Nftables => "nftables",
            System::Iptables => "iptables",
            System::IptablesLegacy => "iptables_legacy",
            System::RxDrop => "rx_xdp_drop",
        }
    }

    /// Whether it forwards to the backends (rx-drop does not).
    pub fn forwards(self) -> bool {
        self != System::RxDrop
    }

    /// Blixt, in either mode.
    pub fn is_blixt(self) -> bool {
        matches!(self, System::Blixt | System::BlixtTc)
    }
}

/// One CPU-bound per-CPU counter set of a sink.
struct Sink {
    _ebpf: Ebpf,
    counts: PerCpuArray<MapData, u64>,
}

impl Sink {
    /// Loads bench_sink and attaches it (native XDP) to `ifname` inside `ns`.
    fn attach(ns: &NetNs, ifname: &str) -> Result<Sink> {
        ns.run_in(|| {
            let mut ebpf = EbpfLoader::new()
                .override_global("sink_port", &u32::from(BACKEND_PORT), true)
                .load(BENCH_SINK_OBJ)
                .context("loading bench_sink.o")?;
            let prog: &mut Xdp = ebpf
                .program_mut("bench_sink")
                .context("bench_sink not in its object")?
                .try_into()
                .context("bench_sink is not XDP")?;
            prog.load().context("loading bench_sink")?;
            prog.attach(ifname, XdpMode::Driver)
                .with_context(|| format!("attaching the sink to {ifname} in {}", ns.name()))?;
            let counts =
                PerCpuArray::try_from(ebpf.take_map("sink_counts").context("sink_counts")?)
                    .context("sink_counts map")?;
            Ok(Sink {
                _ebpf: ebpf,
                counts,
            })
        })
    }

    /// `[all frames, frames to the backend port]`, summed over CPUs.
    fn read(&self) -> Result<[u64; 2]> {
        let mut out = [0u64; 2];
        for (k, o) in out.iter_mut().enumerate() {
            *o = self
                .counts
                .get(&(k as u32), 0)
                .context("reading sink_counts")?
                .iter()
                .sum();
        }
        Ok(out)
    }
}

enum Installed {
    Blixt(Box<Reconciler>),
    Rules,
    RxDrop(Box<Sink>),
}

/// A lab running one system, with sinks on the backends. Fields drop in order: the system
/// (detaching its programs), the sinks, then the namespaces.
pub struct Bed {
    pub system: System,
    installed: Installed,
    sinks: Vec<Sink>,
    /// `napi/<dev>-<id>` kthread of the lb's receiving veth end.
    pub napi_pid: String,
    pub lab: Lab,
}

impl std::fmt::Debug for Bed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bed")
            .field("system", &self.system)
            .field("napi_pid", &self.napi_pid)
            .finish_non_exhaustive()
    }
}

/// Sink counters of one bed at one moment: per backend, `[all, to backend port]`; for
/// rx-drop the single counter of the lb's receive side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts(pub Vec<[u64; 2]>);

impl Counts {
    /// Per-backend difference `self - earlier`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts(
            self.0
                .iter()
                .zip(&earlier.0)
                .map(|(a, b)| [a[0] - b[0], a[1] - b[1]])
                .collect(),
        )
    }

    /// Frames that reached a sink addressed to the backend port (for rx-drop: every frame).
    pub fn forwarded(&self, system: System) -> u64 {
        let k = usize::from(system.forwards());
        self.0.iter().map(|c| c[k]).sum()
    }
}

impl Bed {
    /// Builds a lab, installs `system` on its lb node, sinks on its backends, and the
    /// threaded NAPI of the lb's receiving veth end pinned to `lb_cpu`.
    pub fn new(system: System, lb_cpu: usize) -> Result<Bed> {
        let lab = Lab::build(LabSpec {
            backends: BACKENDS,
            prefix: PREFIX.into(),
            ..LabSpec::default()
        })
        .context("building the forwarding lab")?;
        // the generator's source addresses (10.98/16) are not on the client link
        for key in [
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.default.rp_filter",
            "net.ipv4.conf.lb-client.rp_filter",
        ] {
            lab.lb.sysctl_set(key, "0")?;
        }
        let sinks = if system.forwards() {
            lab.backends
                .iter()
                .map(|b| Sink::attach(&b.ns, &b.link.peer_ifname))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let installed = match system {
            System::Blixt => Installed::Blixt(Box::new(install_blixt(&lab, AttachMode::Xdp)?)),
            System::BlixtTc => {
                // the XDP_PASS program first, as for the netfilter peers (see the module docs);
                // the TC attach leaves an XDP program it did not pin alone
                attach_pass(&lab)?;
                Installed::Blixt(Box::new(install_blixt(&lab, AttachMode::Tc)?))
            }
            System::Nftables => {
                attach_pass(&lab)?;
                let rules = nft_rules(&lab);
                load_rules(&lab.lb, &["nft", "-f"], &rules)?;
                Installed::Rules
            }
            System::Iptables | System::IptablesLegacy => {
                attach_pass(&lab)?;
                let cmd = if system == System::Iptables {
                    "iptables-restore"
                } else {
                    "iptables-legacy-restore"
                };
                load_rules(&lab.lb, &[cmd], &iptables_rules(&lab))?;
                Installed::Rules
            }
            System::RxDrop => {
                Installed::RxDrop(Box::new(Sink::attach(&lab.lb, &lab.client.link.lb_ifname)?))
            }
        };
        let napi_pid = thread_napi(&lab.lb, &lab.client.link.lb_ifname)?;
        pin_task(&napi_pid, lb_cpu, RT_PRIORITY)?;
        // The sinks' NAPI, scheduled by the LB's transmit, would otherwise be a softirq raised
        // from the LB's kthread and, on this kernel, left to ksoftirqd (measured: every system
        // capped near 20k packets/s). As kthreads on the LB's CPU above its priority they run
        // as soon as the LB hands them frames, like the softirq they replace.
        if system.forwards() {
            for b in &lab.backends {
                let pid = thread_napi(&b.ns, &b.link.peer_ifname)?;
                pin_task(&pid, lb_cpu, RT_PRIORITY + 10)?;
            }
        }
        Ok(Bed {
            system,
            installed,
            sinks,
            napi_pid,
            lab,
        })
    }

    /// The sinks' counters now.
    pub fn counts(&self) -> Result<Counts> {
        match &self.installed {
            Installed::RxDrop(s) => Ok(Counts(vec![s.read()?])),
            _ => Ok(Counts(
                self.sinks.iter().map(Sink::read).collect::<Result<_>>()?,
            )),
        }
    }

    /// Empties the system's connection table: Blixt's conntrack map (every key deleted), the
    /// kernel's conntrack of the lb namespace (`conntrack -F`) for nftables/iptables. Run
    /// between rounds, never inside a timed window.
    pub fn clear_flows(&mut self) -> Result<()> {
        match &mut self.installed {
            Installed::Blixt(rec) => {
                let ct = &mut rec.dataplane().maps.conntrack;
                // deleting while iterating would restart the walk: collect, delete, check
                for _ in 0..4 {
                    let keys: Vec<FlowKey> = ct.keys().filter_map(Result::ok).collect();
                    if keys.is_empty() {
                        return Ok(());
                    }
                    for k in &keys {
                        match ct.remove(k) {
                            Ok(()) | Err(MapError::KeyNotFound) => {}
                            Err(e) => return Err(e).context("deleting a blixt_conntrack entry"),
                        }
                    }
                }
                bail!("blixt_conntrack still has entries after 4 passes of deleting every key")
            }
            Installed::Rules => {
                self.lab.lb.exec(&["conntrack", "-F"]).context(
                    "conntrack -F in the lb namespace (is conntrack installed? `make deps`)",
                )?;
                Ok(())
            }
            Installed::RxDrop(_) => Ok(()),
        }
    }

    /// The system's own count of the flows it created: Blixt's per-backend `new_flows` and its
    /// global counters, the DNAT rule hits of nftables/iptables (conntrack sends only the first
    /// packet of a connection through the nat chains: one hit per new conntrack entry).
    pub fn flow_counters(&mut self) -> Result<FlowCounters> {
        match (&mut self.installed, self.system) {
            (Installed::Blixt(rec), _) => {
                let mut c = FlowCounters::default();
                for f in rec.view() {
                    for (_, id, _, _) in f.backends {
                        let b = rec.backend_counters(id)?;
                        c.packets += b.packets;
                        c.created += b.new_flows;
                    }
                }
                c.stats = rec.global_counters()?;
                Ok(c)
            }
            (Installed::Rules, System::Nftables) => {
                let out = self
                    .lab
                    .lb
                    .exec(&["nft", "list", "table", "ip", "blixt_bench"])?;
                let mut c = FlowCounters::default();
                for l in out.lines() {
                    let n = counter_packets(l);
                    if l.contains("dnat to") {
                        c.created += n;
                    } else if l.contains("ct status dnat") {
                        c.packets += n;
                    } else if l.contains("invalid") {
                        c.invalid += n;
                    }
                }
                Ok(c)
            }
            (Installed::Rules, s) => {
                let out = self.lab.lb.exec(&[iptables_save(s), "-c"])?;
                let mut c = FlowCounters::default();
                for l in out.lines() {
                    let n = l
                        .strip_prefix('[')
                        .and_then(|r| r.split(':').next())
                        .and_then(|p| p.parse::<u64>().ok())
                        .unwrap_or(0);
                    if l.contains("-j DNAT") {
                        c.created += n;
                    } else if l.contains("INVALID") {
                        c.invalid += n;
                    }
                }
                Ok(c)
            }
            (Installed::RxDrop(_), _) => Ok(FlowCounters::default()),
        }
    }

    /// What the system's own counters say: Blixt's per-backend and global counters, the
    /// nftables/iptables rule counters. One line for the report.
    pub fn own_counters(&mut self) -> Result<String> {
        let c = self.flow_counters()?;
        Ok(match self.system {
            System::Blixt | System::BlixtTc => {
                let nonzero: Vec<String> = blixt_bpf::shared::STAT_NAMES
                    .iter()
                    .zip(&c.stats)
                    .filter(|(_, v)| **v > 0)
                    .map(|(n, v)| format!("{n} {v}"))
                    .collect();
                format!(
                    "Blixt's backend counters: {} packets forwarded, {} new flows; global \
                     counters: {}",
                    c.packets,
                    c.created,
                    if nonzero.is_empty() {
                        "all zero".to_string()
                    } else {
                        nonzero.join(", ")
                    }
                )
            }
            System::Nftables => format!(
                "nftables counters: {} DNAT rule hits (one per new conntrack entry), {} DNATed \
                 packets forwarded, {} dropped as conntrack-invalid",
                c.created, c.packets, c.invalid
            ),
            s @ (System::Iptables | System::IptablesLegacy) => format!(
                "{} counters: {} DNAT rule hits (one per new conntrack entry), {} dropped as \
                 conntrack-invalid",
                iptables_save(s),
                c.created,
                c.invalid
            ),
            System::RxDrop => "the reference, not a load balancer: an XDP program on the lb's \
                               receiving veth end drops every frame, the most any XDP program \
                               there can take in (no counters of its own; the rates above are \
                               its frames/s)"
                .into(),
        })
    }
}

/// `iptables-save` of an iptables system.
fn iptables_save(s: System) -> &'static str {
    if s == System::IptablesLegacy {
        "iptables-legacy-save"
    } else {
        "iptables-save"
    }
}

/// A system's own flow counters at one moment (see [`Bed::flow_counters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Flows created: Blixt's backend `new_flows`, the DNAT rule hits of the others.
    pub created: u64,
    /// Packets forwarded as the system counts them (Blixt, nftables; 0 for iptables).
    pub packets: u64,
    /// Packets dropped as conntrack-invalid (nftables/iptables).
    pub invalid: u64,
    /// Blixt's global counters, in `STAT_NAMES` order (empty for the others).
    pub stats: Vec<u64>,
}

impl FlowCounters {
    /// Blixt's new flows left without state: `ct_insert_failed` (no conntrack entry could be
    /// made: forwarded statelessly) plus `snat_exhausted` (no free SNAT port: refused); 0 for
    /// the others.
    pub fn ct_insert_failed(&self) -> u64 {
        [STAT_CT_INSERT_FAILED, STAT_SNAT_EXHAUSTED]
            .iter()
            .map(|&i| self.stats.get(i as usize).copied().unwrap_or(0))
            .sum()
    }

    /// Counter differences `self - earlier`.
    pub fn since(&self, earlier: &FlowCounters) -> FlowCounters {
        FlowCounters {
            created: self.created - earlier.created,
            packets: self.packets - earlier.packets,
            invalid: self.invalid - earlier.invalid,
            stats: self
                .stats
                .iter()
                .zip(&earlier.stats)
                .map(|(a, b)| a - b)
                .collect(),
        }
    }
}

/// Packets of an nft `counter packets N bytes M` statement in `line` (0 if none).
fn counter_packets(line: &str) -> u64 {
    line.split_once("counter packets ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn install_blixt(lab: &Lab, attach: AttachMode) -> Result<Reconciler> {
    let vip = lab.vip4(1);
    let frontend = |name: &str, port, protocol| Frontend {
        name: name.into(),
        key: FrontendKey {
            vip: vip.into(),
            port,
            protocol,
        },
        backends: lab
            .backends
            .iter()
            .map(|b| Backend {
                addr: BackendAddr {
                    addr: b.v4().into(),
                    port: BACKEND_PORT,
                },
                weight: 1,
                state: BackendState::Active,
            })
            .collect(),
        reject_weight: 0,
    };
    let snapshot = Snapshot {
        generation: 1,
        frontends: vec![
            frontend("udp", UDP_PORT, Protocol::Udp),
            frontend("tcp", TCP_PORT, Protocol::Tcp),
        ],
    };
    let node = NodeConfig {
        snat_v4: Some(lab.client.link.lb_v4.into()),
        snat_v6: Some(lab.client.link.lb_v6.into()),
        ..NodeConfig::default()
    };
    let ifaces = lab.lb_interfaces();
    lab.lb.run_in(|| {
        let dp = Dataplane::load(DataplaneOptions {
            max_frontends: 16,
            max_backends: 64,
            conntrack_entries: CONNTRACK_ENTRIES,
            attach,
            ..DataplaneOptions::default()
        })
        .context("loading the dataplane")?;
        let mut rec = Reconciler::new(dp).context("reconciler")?;
        rec.set_node_config(&node).context("node config")?;
        rec.apply(&snapshot).context("applying the snapshot")?;
        for (name, _) in &ifaces {
            let mode = rec
                .dataplane()
                .attach(name)
                .with_context(|| format!("attaching Blixt to {name}"))?;
            let want = match attach {
                AttachMode::Tc => blixt_bpf::AttachedMode::Tc,
                _ => blixt_bpf::AttachedMode::Native,
            };
            ensure!(
                mode == want,
                "Blixt attached to {name} as {}, not {}",
                mode.as_str(),
                want.as_str()
            );
        }
        Ok(rec)
    })
}

/// XDP_PASS on every lb-side veth end (see the module docs).
fn attach_pass(lab: &Lab) -> Result<()> {
    let obj = blixt_bpf::loader::peer_pass_object().context("writing peer_pass.o")?;
    let path = obj.to_str().context("temp path is not UTF-8")?.to_string();
    for (name, _) in lab.lb_interfaces() {
        lab.lb
            .ip(&[
                "link", "set", "dev", &name, "xdpdrv", "obj", &path, "sec", "xdp",
            ])
            .with_context(|| format!("XDP_PASS on {name}"))?;
    }
    let _ = std::fs::remove_file(&obj);
    Ok(())
}

/// Runs `cmd <file>` in `ns` with `rules` written to a temporary file.
fn load_rules(ns: &NetNs, cmd: &[&str], rules: &str) -> Result<()> {
    let path = std::env::temp_dir().join(format!(
        "blixt-bench-fwd-{}-{}.rules",
        std::process::id(),
        ns.name()
    ));
    std::fs::write(&path, rules).with_context(|| format!("writing {}", path.display()))?;
    let mut args: Vec<&str> = cmd.to_vec();
    let p = path.to_str().context("temp path is not UTF-8")?;
    args.push(p);
    let res = ns.exec(&args);
    let _ = std::fs::remove_file(&path);
    res.with_context(|| format!("loading rules:\n{rules}"))?;
    Ok(())
}

fn nft_rules(lab: &Lab) -> String {
    let vip = lab.vip4(1);
    let mut s = String::from("table ip blixt_bench {\n");
    s += &format!(
        "  map service_ips {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n    \
         elements = {{ {vip} . udp . {UDP_PORT} : goto svc_udp, {vip} . tcp . {TCP_PORT} : \
         goto svc_tcp }}\n  }}\n"
    );
    s += "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    \
          ip daddr . meta l4proto . th dport vmap @service_ips\n  }\n";
    s += "  chain mark_for_masquerade {\n    meta mark set meta mark | 0x4000\n  }\n";
    for (proto, _) in [("udp", UDP_PORT), ("tcp", TCP_PORT)] {
        let eps: Vec<String> = (0..BACKENDS)
            .map(|i| format!("{i} : goto ep_{proto}_{i}"))
            .collect();
        s += &format!(
            "  chain svc_{proto} {{\n    jump mark_for_masquerade\n    numgen random mod \
             {BACKENDS} vmap {{ {} }}\n  }}\n",
            eps.join(", ")
        );
        for (i, b) in lab.backends.iter().enumerate() {
            s += &format!(
                "  chain ep_{proto}_{i} {{\n    meta l4proto {proto} counter dnat to {}:{BACKEND_PORT}\n  }}\n",
                b.v4()
            );
        }
    }
    s += "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    \
          meta mark & 0x4000 == 0 return\n    meta mark set meta mark ^ 0x4000\n    \
          masquerade fully-random\n  }\n";
    s += "  chain forward {\n    type filter hook forward priority filter; policy accept;\n    \
          ct state invalid counter drop\n    ct status dnat counter accept\n  }\n";
    s += "}\n";
    s
}

fn iptables_rules(lab: &Lab) -> String {
    let vip = lab.vip4(1);
    let mut chains = vec![
        "KUBE-SERVICES".to_string(),
        "KUBE-POSTROUTING".into(),
        "KUBE-MARK-MASQ".into(),
    ];
    let mut rules = vec![
        "-A PREROUTING -j KUBE-SERVICES".to_string(),
        "-A POSTROUTING -j KUBE-POSTROUTING".into(),
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000".into(),
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".into(),
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0".into(),
        "-A KUBE-POSTROUTING -j MASQUERADE --random-fully".into(),
    ];
    for (proto, port) in [("udp", UDP_PORT), ("tcp", TCP_PORT)] {
        let svc = format!("KUBE-SVC-{}", proto.to_uppercase());
        chains.push(svc.clone());
        rules.push(format!(
            "-A KUBE-SERVICES -d {vip}/32 -p {proto} -m {proto} --dport {port} -j {svc}"
        ));
        rules.push(format!(
            "-A {svc} -d {vip}/32 -p {proto} -m {proto} --dport {port} -j KUBE-MARK-MASQ"
        ));
        for (i, b) in lab.backends.iter().enumerate() {
            let sep = format!("KUBE-SEP-{}{i}", proto.to_uppercase());
            chains.push(sep.clone());
            let left = BACKENDS - i;
            if left > 1 {
                rules.push(format!(
                    "-A {svc} -m statistic --mode random --probability {:.11} -j {sep}",
                    1.0 / left as f64
                ));
            } else {
                rules.push(format!("-A {svc} -j {sep}"));
            }
            rules.push(format!("-A {sep} -s {}/32 -j KUBE-MARK-MASQ", b.v4()));
            rules.push(format!(
                "-A {sep} -p {proto} -m {proto} -j DNAT --to-destination {}:{BACKEND_PORT}",
                b.v4()
            ));
        }
    }
    let mut s = String::from("*nat\n");
    for c in ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"] {
        s += &format!(":{c} ACCEPT [0:0]\n");
    }
    for c in &chains {
        s += &format!(":{c} - [0:0]\n");
    }
    for r in &rules {
        s += r;
        s.push('\n');
    }
    s += "COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
          :KUBE-FORWARD - [0:0]\n-A FORWARD -j KUBE-FORWARD\n\
          -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
          -A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT\n\
          -A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n";
    s
}

/// Whether iptables-legacy can install NAT rules here (it needs the ip_tables modules):
/// tried in a throwaway namespace.
pub fn iptables_legacy_works() -> bool {
    let Ok(ns) = NetNs::new(PREFIX) else {
        return false;
    };
    ns.exec(&["iptables-legacy", "-t", "nat", "-L", "-n"])
        .is_ok()
}

/// Turns on threaded NAPI for `dev` in `ns` and returns the pid of its new kthread.
pub fn thread_napi(ns: &NetNs, dev: &str) -> Result<String> {
    let before = napi_threads();
    ns.exec(&[
        "sh",
        "-c",
        &format!("echo 1 > /sys/class/net/{dev}/threaded"),
    ])
    .with_context(|| format!("threaded NAPI on {dev}"))?;
    for _ in 0..50 {
        let new: Vec<String> = napi_threads()
            .into_iter()
            .filter(|(pid, comm)| {
                comm.starts_with(&format!("napi/{dev}-")) && !before.iter().any(|(p, _)| p == pid)
            })
            .map(|(pid, _)| pid)
            .collect();
        match new.len() {
            0 => std::thread::sleep(Duration::from_millis(10)),
            1 => return Ok(new[0].clone()),
            n => bail!("{n} new NAPI threads for {dev}: cannot tell which is this lab's"),
        }
    }
    bail!("no NAPI kthread appeared for {dev} after `threaded` was set")
}

/// `(pid, comm)` of every `napi/...` kthread.
fn napi_threads() -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.to_string();
            pid.parse::<u32>().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            comm.starts_with("napi/")
                .then(|| (pid, comm.trim().to_string()))
        })
        .collect()
}
