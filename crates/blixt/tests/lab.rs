//! The network-namespace lab with real traffic: a client, the load-balancer node running
//! `blixt agent` (on every lb-side veth), and three backends with TCP and UDP echo servers.
//! No IPVS, no iptables: the dataplane's own counters prove the load balancer carried the
//! traffic. The main scenarios run in each attach mode ([`Mode`]): XDP as this kernel offers
//! it, and the load balancer at TC ingress; a mode that cannot load fails, never skips.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use blixt_bpf::shared::{self, Counters};
use blixt_bpf::PinnedDataplane;
use blixt_core::snapshot::{
    Backend, BackendAddr, BackendState, Frontend, FrontendKey, Protocol, Snapshot,
};
use blixt_lab::capture::{check_l4, Capture};
use blixt_lab::process::LabProcess;
use blixt_lab::topology::{Lab, LabSpec, PEER_IFNAME};
use blixt_lab::traffic::{self, UdpOptions};
use blixt_lab::EchoServer;

#[path = "common/lab.rs"]
mod lab_support;
use lab_support::{
    assert_no_backend_change, assert_none_on, assert_some_on, build_lab, echo_servers,
    start_long_lived, stop_unbroken, tcp_burst, tcp_burst_ok, unique_id, wait_generation,
    wait_rounds, DirGuard, ECHO_PORT as BACKEND_PORT,
};

/// How the agent runs the dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `--attach xdp`, with whatever this kernel offers.
    Xdp,
    /// `--attach xdp` with bpf_xdp_adjust_meta forced off: unresolved next hops through
    /// blixt_lb_tc.
    XdpWithoutMeta,
    /// `--attach tc`.
    Tc,
    /// `--attach tc` with tcx forced off: the classifier attaches through netlink (clsact),
    /// unpinned, as on kernels before 6.6.
    TcNetlink,
    /// `--attach tc` with tc_kern_ctx forced off: every L4 checksum through
    /// bpf_l4_csum_replace(), as on kernels before 6.3.
    TcWithoutKernCtx,
}

const TCP_PORT: u16 = 80;
const UDP_PORT: u16 = 53;

/// A lab with echo servers on every backend and an agent on the lb node. Fields drop in
/// order: agent, pins (after the agent is gone), servers, then the namespaces.
struct Harness {
    mode: Mode,
    agent: Option<LabProcess>,
    pins: DirGuard,
    _servers: Vec<EchoServer>,
    snapshot_path: PathBuf,
    _tmp: DirGuard,
    generation: u64,
    lab: Lab,
}

impl Harness {
    fn new(spec: LabSpec) -> Harness {
        Harness::in_mode(Mode::Xdp, spec)
    }

    fn in_mode(mode: Mode, spec: LabSpec) -> Harness {
        let lab = build_lab(spec);
        let servers = echo_servers(&lab);
        let id = unique_id();
        let tmp = std::env::temp_dir().join(format!("blixt-lab-{id}"));
        std::fs::create_dir_all(&tmp).unwrap();
        Harness {
            mode,
            agent: None,
            pins: DirGuard(PathBuf::from(format!("/sys/fs/bpf/blixt-lab-{id}"))),
            _servers: servers,
            snapshot_path: tmp.join("snapshot.json"),
            _tmp: DirGuard(tmp),
            generation: 0,
            lab,
        }
    }

    /// A snapshot with TCP and UDP frontends on the first VIP of both families, backends by
    /// index with their weights and states.
    fn snapshot(&mut self, backends: &[(usize, u32, BackendState)]) -> Snapshot {
        self.generation += 1;
        let mut frontends = Vec::new();
        for vip in [
            IpAddr::from(self.lab.vip4(1)),
            IpAddr::from(self.lab.vip6(1)),
        ] {
            for (protocol, port) in [(Protocol::Tcp, TCP_PORT), (Protocol::Udp, UDP_PORT)] {
                frontends.push(Frontend {
                    name: format!("{protocol}-{vip}"),
                    key: FrontendKey {
                        vip,
                        port,
                        protocol,
                    },
                    backends: backends
                        .iter()
                        .map(|&(i, weight, state)| Backend {
                            addr: BackendAddr {
                                addr: self.lab.backends[i].addr_like(vip),
                                port: BACKEND_PORT,
                            },
                            weight,
                            state,
                        })
                        .collect(),
                    reject_weight: 0,
                });
            }
        }
        Snapshot {
            generation: self.generation,
            frontends,
        }
    }

    /// Writes the snapshot file atomically (rename) and waits for the agent to apply it.
    fn apply(&mut self, snap: &Snapshot) {
        let tmp = self.snapshot_path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(snap).unwrap()).unwrap();
        std::fs::rename(&tmp, &self.snapshot_path).unwrap();
        if let Some(agent) = self.agent.as_mut() {
            wait_generation(agent, snap.generation);
        }
    }

    fn start_agent(&mut self) {
        self.start_agent_under(&[]);
    }

    /// Starts the agent through `wrapper` (a command and its arguments that end by running the
    /// rest, e.g. `setpriv ... --`); none: directly.
    fn start_agent_under(&mut self, wrapper: &[String]) {
        let mut args: Vec<String> = wrapper.to_vec();
        args.extend([
            env!("CARGO_BIN_EXE_blixt").into(),
            "agent".into(),
            "--snapshot".into(),
            self.snapshot_path.display().to_string(),
            "--snat-v4".into(),
            self.lab.client.link.lb_v4.to_string(),
            "--snat-v6".into(),
            self.lab.client.link.lb_v6.to_string(),
            "--pin-dir".into(),
            self.pins.0.display().to_string(),
            "--max-frontends".into(),
            "16".into(),
            "--max-backends".into(),
            "256".into(),
            "--attach".into(),
            match self.mode {
                Mode::Xdp | Mode::XdpWithoutMeta => "xdp".into(),
                Mode::Tc | Mode::TcNetlink | Mode::TcWithoutKernCtx => "tc".into(),
            },
        ]);
        for (name, _) in self.lab.lb_interfaces() {
            args.push("-i".into());
            args.push(name);
        }
        let mut cmd = std::process::Command::new(&args[0]);
        cmd.args(&args[1..]);
        match self.mode {
            Mode::XdpWithoutMeta => {
                cmd.env("BLIXT_FORCE_FALLBACK", "xdp_adjust_meta");
            }
            Mode::TcNetlink => {
                cmd.env("BLIXT_FORCE_FALLBACK", "tcx");
            }
            Mode::TcWithoutKernCtx => {
                cmd.env("BLIXT_FORCE_FALLBACK", "tc_kern_ctx");
            }
            Mode::Xdp | Mode::Tc => {}
        }
        // netns only: `ip netns exec` would hide the host's bpffs, and the pins with it
        let mut agent = self
            .lab
            .lb
            .spawn_netns_only("blixt agent", cmd)
            .expect("starting blixt agent");
        wait_generation(&mut agent, self.generation);
        self.agent = Some(agent);
        // the hook in use, as the pinned links (or the netlink filters) show it
        let tc_only = matches!(
            self.mode,
            Mode::Tc | Mode::TcNetlink | Mode::TcWithoutKernCtx
        );
        for (name, _) in self.lab.lb_interfaces() {
            let xdp = self.pins.0.join(format!("link_xdp_{name}")).exists();
            let tc = self.pins.0.join(format!("link_tc_{name}")).exists();
            assert_eq!(xdp, !tc_only, "{:?}: XDP link on {name}", self.mode);
            assert_eq!(
                tc,
                self.mode != Mode::TcNetlink,
                "{:?}: TC link on {name}",
                self.mode
            );
            if self.mode == Mode::TcNetlink {
                let filters = self
                    .lab
                    .lb
                    .exec(&["tc", "filter", "show", "dev", &name, "ingress"])
                    .unwrap();
                assert_eq!(
                    filters.matches("name blixt_lb_tc").count(),
                    1,
                    "one netlink filter on {name}: {filters}"
                );
            }
        }
    }

    fn kill_agent(&mut self) {
        let mut agent = self.agent.take().expect("agent running");
        agent.kill().expect("killing the agent");
    }

    fn tcp_target(&self, v6: bool) -> SocketAddr {
        SocketAddr::new(self.vip(v6), TCP_PORT)
    }

    fn udp_target(&self, v6: bool) -> SocketAddr {
        SocketAddr::new(self.vip(v6), UDP_PORT)
    }

    /// `flows` TCP connections (`concurrency` at once) and `flows` UDP flows from the client
    /// to the VIP of the family.
    fn tcp_and_udp_flows(
        &self,
        v6: bool,
        flows: usize,
        concurrency: usize,
    ) -> (traffic::Report, traffic::Report) {
        let (tcp, udp) = (self.tcp_target(v6), self.udp_target(v6));
        self.lab.client.ns.run_in(|| {
            let t = traffic::tcp_burst(tcp, flows, concurrency, Duration::from_secs(5)).unwrap();
            let u = traffic::udp_flows(udp, flows, &UdpOptions::default()).unwrap();
            (t, u)
        })
    }

    fn vip(&self, v6: bool) -> IpAddr {
        lab_support::vip(&self.lab, v6)
    }

    fn pinned(&self) -> PinnedDataplane {
        PinnedDataplane::open(&self.pins.0).expect("pinned dataplane")
    }

    /// Counters of every active backend id, summed.
    fn backend_totals(&self) -> Counters {
        let p = self.pinned();
        let mut total = Counters::default();
        for id in 0..256u32 {
            if p.backends
                .get(&id, 0)
                .is_ok_and(|b| b.flags & shared::BE_F_ACTIVE != 0)
            {
                total += p.backend_counters(id).unwrap();
            }
        }
        total
    }
}

fn assert_shares(what: &str, counts: &BTreeMap<String, usize>, weights: &[(&str, u32)]) {
    let total: usize = counts.values().sum();
    let wsum: u32 = weights.iter().map(|w| w.1).sum();
    for (name, w) in weights {
        let got = *counts.get(*name).unwrap_or(&0) as f64 / total as f64;
        let want = f64::from(*w) / f64::from(wsum);
        assert!(
            (got - want).abs() <= 0.05,
            "{what}: {name} got {:.1}% of {total}, weight share {:.1}% ({counts:?})",
            got * 100.0,
            want * 100.0
        );
    }
}

const W: [(&str, u32); 3] = [("be0", 2), ("be1", 1), ("be2", 1)];

fn weighted(h: &mut Harness) -> Snapshot {
    h.snapshot(&[
        (0, 2, BackendState::Active),
        (1, 1, BackendState::Active),
        (2, 1, BackendState::Active),
    ])
}

#[test]
fn thousand_tcp_and_udp_flows_follow_weights_v4_and_v6() {
    thousand_flows(Mode::Xdp);
}

#[test]
fn tc_thousand_tcp_and_udp_flows_follow_weights_v4_and_v6() {
    thousand_flows(Mode::Tc);
}

fn thousand_flows(mode: Mode) {
    let mut h = Harness::in_mode(mode, LabSpec::with_backends(3));
    let snap = weighted(&mut h);
    h.apply(&snap);
    h.start_agent();
    let snat: Vec<IpAddr> = vec![
        h.lab.client.link.lb_v4.into(),
        h.lab.client.link.lb_v6.into(),
    ];
    let mut flows = 0u64;
    for v6 in [false, true] {
        let (t, u) = h.tcp_and_udp_flows(v6, 1000, 32);
        for r in [&t, &u] {
            assert_eq!(r.ok, 1000, "{} v6={v6}: {}", r.proto, r.summary());
            assert_eq!(
                r.wrong_source,
                0,
                "replies must come from the VIP: {}",
                r.summary()
            );
            assert_shares(&format!("{} v6={v6}", r.proto), &r.backends, &W);
            // full-NAT: backends only ever see the node's address
            assert!(
                r.peers_seen.keys().all(|p| snat.contains(p)),
                "backends saw {:?}",
                r.peers_seen
            );
        }
        flows += 2000;
    }
    // the agent's metrics say how the dataplane runs
    let metrics = h.lab.lb.run_in(|| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("127.0.0.1:9464").expect("agent metrics");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    });
    let (attach, iface_mode) = match mode {
        Mode::Tc | Mode::TcNetlink | Mode::TcWithoutKernCtx => ("tc", "tc"),
        Mode::Xdp | Mode::XdpWithoutMeta => ("xdp", "xdp-native"),
    };
    let info = metrics
        .lines()
        .find(|l| l.starts_with("blixt_dataplane_info{"))
        .unwrap_or_else(|| panic!("no blixt_dataplane_info:\n{metrics}"));
    assert!(
        info.contains(&format!("attach=\"{attach}\"")) && info.ends_with(" 1"),
        "{info}"
    );
    for (name, _) in h.lab.lb_interfaces() {
        let want =
            format!("blixt_dataplane_interface{{interface=\"{name}\",mode=\"{iface_mode}\"}} 1");
        assert!(metrics.contains(&want), "{want} in:\n{metrics}");
    }
    assert!(
        metrics.contains("blixt_dataplane_capability{capability=\"lru_hash\"} 1"),
        "{metrics}"
    );
    let c = h.backend_totals();
    assert!(
        c.new_flows >= flows,
        "{mode:?}: the dataplane counted {} new flows for {flows}",
        c.new_flows
    );
    assert!(
        c.packets >= 4 * flows,
        "{mode:?}: the dataplane forwarded only {} packets",
        c.packets
    );
}

#[test]
fn backend_added_and_terminating_break_no_connection() {
    backend_changes(Mode::Xdp);
}

#[test]
fn tc_backend_added_and_terminating_break_no_connection() {
    backend_changes(Mode::Tc);
}

fn backend_changes(mode: Mode) {
    let mut h = Harness::in_mode(mode, LabSpec::with_backends(3));
    let snap = h.snapshot(&[(0, 1, BackendState::Active), (1, 1, BackendState::Active)]);
    h.apply(&snap);
    h.start_agent();
    let (t4, t6) = (h.tcp_target(false), h.tcp_target(true));
    let long = start_long_lived(&h.lab, &[t4, t6]);

    // a third backend joins while 200 connections are open
    let snap = h.snapshot(&[
        (0, 1, BackendState::Active),
        (1, 1, BackendState::Active),
        (2, 1, BackendState::Active),
    ]);
    h.apply(&snap);
    wait_rounds(&long, 5);
    let burst = tcp_burst_ok(&h.lab, t4, 300);
    assert!(
        burst.backends.get("be2").copied().unwrap_or(0) > 50,
        "new backend gets new flows: {:?}",
        burst.backends
    );

    // be0 terminating: its connections go on, it gets nothing new
    let snap = h.snapshot(&[
        (0, 1, BackendState::Terminating),
        (1, 1, BackendState::Active),
        (2, 1, BackendState::Active),
    ]);
    h.apply(&snap);
    wait_rounds(&long, 5);
    let burst = tcp_burst_ok(&h.lab, t6, 300);
    assert_none_on(&burst, "be0", "terminating backend got new flows");

    for r in stop_unbroken(long) {
        assert_some_on(&r, "be0");
        assert_no_backend_change(&r);
    }
}

#[test]
fn agent_killed_and_restarted_breaks_no_connection() {
    agent_restart(Mode::Xdp);
}

#[test]
fn tc_agent_killed_and_restarted_breaks_no_connection() {
    agent_restart(Mode::Tc);
}

#[test]
fn tc_through_netlink_agent_killed_and_restarted_breaks_no_connection() {
    agent_restart(Mode::TcNetlink);
}

fn agent_restart(mode: Mode) {
    let mut h = Harness::in_mode(mode, LabSpec::with_backends(3));
    let snap = weighted(&mut h);
    h.apply(&snap);
    h.start_agent();
    let (t4, t6) = (h.tcp_target(false), h.tcp_target(true));
    let long = start_long_lived(&h.lab, &[t4, t6]);
    h.kill_agent();
    // the pinned program keeps forwarding with no agent at all
    wait_rounds(&long, 5);
    h.start_agent(); // re-adopts pinned maps, swaps the program through the pinned links
    wait_rounds(&long, 5);
    // new connections after the restart
    tcp_burst_ok(&h.lab, t4, 200);
    for r in stop_unbroken(long) {
        assert_no_backend_change(&r);
    }
}

#[test]
fn unresolved_neighbours_go_through_the_tc_companion() {
    unresolved_neighbours(Mode::Xdp);
}

#[test]
fn unresolved_neighbours_go_through_the_tc_load_balancer_without_xdp_metadata() {
    unresolved_neighbours(Mode::XdpWithoutMeta);
}

#[test]
fn tc_unresolved_neighbours_are_resolved_by_redirect_neigh() {
    unresolved_neighbours(Mode::Tc);
}

fn unresolved_neighbours(mode: Mode) {
    let mut h = Harness::in_mode(
        mode,
        LabSpec {
            static_neighbors: false,
            ..LabSpec::with_backends(3)
        },
    );
    let snap = weighted(&mut h);
    h.apply(&snap);
    h.start_agent();
    for v6 in [false, true] {
        let t = h.tcp_target(v6);
        let r = tcp_burst(&h.lab, t, 200, 8, Duration::from_secs(5));
        assert_eq!(r.ok, 200, "{mode:?} v6={v6}: {}", r.summary());
    }
    let g = h.pinned().global_counters().unwrap();
    assert!(
        g[shared::STAT_FIB_NO_NEIGH as usize] > 0,
        "{mode:?}: the first packets to unknown neighbours took the TC path: {g:?}"
    );
}

/// TC mode updates the L4 checksum in place when its field holds the full checksum (the lab's
/// default: senders without TX checksum offload) and through bpf_l4_csum_replace() when the
/// sender left it to offload (`CHECKSUM_PARTIAL`, the default of a veth in a container), or
/// always through the helper without tc_kern_ctx. The receivers over veth trust partial and
/// verified checksums, so an AF_PACKET oracle on the client and on every backend holds each TCP
/// and UDP packet to what its checksum state promises.
#[test]
fn tc_checksums_are_right_with_and_without_sender_offload() {
    for (mode, offload) in [
        (Mode::Tc, false),
        (Mode::Tc, true),
        (Mode::TcWithoutKernCtx, false),
        (Mode::TcWithoutKernCtx, true),
    ] {
        let mut h = Harness::in_mode(
            mode,
            LabSpec {
                peer_tx_checksum: offload,
                ..LabSpec::with_backends(2)
            },
        );
        let snap = h.snapshot(&[(0, 1, BackendState::Active), (1, 1, BackendState::Active)]);
        h.apply(&snap);
        h.start_agent();
        let mut nodes = vec![&h.lab.client];
        nodes.extend(h.lab.backends.iter());
        let captures: Vec<(String, Capture)> = nodes
            .iter()
            .map(|n| {
                let c = n.ns.run_in(|| Capture::open(PEER_IFNAME)).unwrap();
                (n.name.clone(), c)
            })
            .collect();
        for v6 in [false, true] {
            let (t, u) = h.tcp_and_udp_flows(v6, 200, 16);
            for r in [&t, &u] {
                assert_eq!(
                    r.ok,
                    200,
                    "{mode:?} offload={offload} v6={v6}: {}",
                    r.summary()
                );
            }
        }
        let vips = [h.vip(false), h.vip(true)];
        let (mut full, mut partial) = (0usize, 0usize);
        for (name, capture) in &captures {
            for frame in capture.drain().unwrap() {
                let Some(c) = check_l4(&frame) else { continue };
                // what the load balancer rewrote: replies from a VIP at the client, every
                // request at the backends
                if name == "client" && !vips.contains(&c.src) {
                    continue;
                }
                assert!(
                    c.ok,
                    "{mode:?} offload={offload}: bad checksum at {name}: {c:?}"
                );
                if c.partial {
                    partial += 1;
                } else {
                    full += 1;
                }
            }
        }
        assert!(
            full + partial > 1000,
            "{mode:?} offload={offload}: {full} + {partial} packets checked"
        );
        if offload {
            assert!(
                partial > 0,
                "offload on: no CHECKSUM_PARTIAL packet seen ({full} full)"
            );
        } else {
            assert_eq!(
                partial, 0,
                "offload off: {partial} CHECKSUM_PARTIAL packets"
            );
        }
        eprintln!("{mode:?} offload={offload}: {full} full and {partial} partial checksums right");
    }
}

/// A backend address that comes back with a new MAC (a pod deleted and its IP given at once to
/// a new pod) while the node still holds a learnt neighbour entry with the old one: the agent
/// deletes that entry when the address becomes a backend again, so `bpf_fib_lookup` misses and
/// the kernel resolves the address afresh. Without it, UDP that only Blixt forwards would go
/// to the old MAC for as long as the entry lives.
#[test]
fn backend_back_with_a_new_mac_is_resolved_afresh() {
    let mut h = Harness::new(LabSpec {
        static_neighbors: false,
        ..LabSpec::with_backends(1)
    });
    let snap = h.snapshot(&[(0, 1, BackendState::Active)]);
    h.apply(&snap);
    h.start_agent();
    let opts = UdpOptions {
        concurrency: 4,
        timeout: Duration::from_millis(300),
        retries: 10,
        ..UdpOptions::default()
    };
    let udp = |h: &Harness| {
        let targets = [h.udp_target(false), h.udp_target(true)];
        h.lab
            .client
            .ns
            .run_in(|| targets.map(|t| traffic::udp_flows(t, 8, &opts).unwrap()))
    };
    for r in udp(&h) {
        assert_eq!(r.ok, 8, "before: {}", r.summary());
    }

    // out of the configuration, then the same addresses behind a new MAC
    h.generation += 1;
    let empty = Snapshot {
        generation: h.generation,
        frontends: Vec::new(),
    };
    h.apply(&empty);
    let be = &h.lab.backends[0];
    let addrs = [IpAddr::from(be.v4()), IpAddr::from(be.v6())];
    let old_mac = be.link.peer_mac;
    let mut new_mac = old_mac;
    new_mac.0[5] ^= 0x55;
    let ifname = be.link.peer_ifname.clone();
    be.ns
        .ip(&[
            "link",
            "set",
            "dev",
            &ifname,
            "address",
            &new_mac.to_string(),
        ])
        .unwrap();
    for addr in addrs {
        let neigh = h.lab.lb.ip(&["neigh", "show", &addr.to_string()]).unwrap();
        assert!(
            neigh.contains(&old_mac.to_string()) && !neigh.contains("PERMANENT"),
            "the node still holds a learnt entry with the old MAC for {addr}: {neigh:?}"
        );
    }

    let snap = h.snapshot(&[(0, 1, BackendState::Active)]);
    h.apply(&snap);
    for r in udp(&h) {
        assert_eq!(r.ok, 8, "back with a new MAC: {}", r.summary());
    }
    for addr in addrs {
        let neigh = h.lab.lb.ip(&["neigh", "show", &addr.to_string()]).unwrap();
        assert!(
            neigh.contains(&new_mac.to_string()),
            "resolved to the new MAC for {addr}: {neigh:?}"
        );
    }
}

#[test]
fn invalid_backends_are_rejected_live_tcp_reset_udp_drop() {
    let mut h = Harness::new(LabSpec::with_backends(3));
    let mut snap = h.snapshot(&[(0, 1, BackendState::Active)]);
    for f in &mut snap.frontends {
        f.backends.clear(); // every backendRef invalid
        f.reject_weight = 1;
    }
    h.apply(&snap);
    h.start_agent();
    for v6 in [false, true] {
        let (tcp, udp) = (h.tcp_target(v6), h.udp_target(v6));
        let (t, u) = h.lab.client.ns.run_in(|| {
            let opts = UdpOptions {
                timeout: Duration::from_millis(200),
                retries: 0,
                ..UdpOptions::default()
            };
            (
                traffic::tcp_burst(tcp, 20, 4, Duration::from_secs(3)).unwrap(),
                traffic::udp_flows(udp, 20, &opts).unwrap(),
            )
        });
        assert_eq!(t.ok, 0, "{}", t.summary());
        // the reset arrives at once: refused, not timed out
        assert_eq!(
            t.errors.get("connect: refused"),
            Some(&20),
            "v6={v6}: {}",
            t.summary()
        );
        assert_eq!(u.ok, 0, "{}", u.summary());
    }
    let g = h.pinned().global_counters().unwrap();
    assert!(g[shared::STAT_REJECT_NO_BACKEND as usize] >= 80, "{g:?}");
}

/// The agent's capabilities in the Helm chart (`agent.capabilities` in values.yaml, which the
/// render test checks the DaemonSet adds after dropping ALL).
fn chart_agent_capabilities() -> Vec<String> {
    let values = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/helm/blixt/values.yaml"
    );
    let text = std::fs::read_to_string(values).expect("reading the chart's values.yaml");
    let mut in_agent = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.is_empty() {
            in_agent = line.trim_end() == "agent:";
        }
        if let Some(list) = in_agent
            .then(|| line.trim().strip_prefix("capabilities: ["))
            .flatten()
        {
            return list
                .trim_end_matches(']')
                .split(',')
                .map(|c| c.trim().to_string())
                .collect();
        }
    }
    panic!("no agent.capabilities list in {values}");
}

/// Capability numbers (linux/capability.h) of the names the chart uses.
fn cap_bit(name: &str) -> u32 {
    match name {
        "NET_ADMIN" => 12,
        "NET_RAW" => 13,
        "SYS_ADMIN" => 21,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("capability {other} is not known to this test"),
    }
}

#[test]
fn agent_forwards_with_only_the_charts_capabilities() {
    // uid 0 whose bounding set holds only the chart's capabilities, with no_new_privs: what a
    // container with `drop: [ALL]`, `add: [...]`, runAsUser 0 and allowPrivilegeEscalation
    // false gets
    let caps = chart_agent_capabilities();
    assert!(!caps.is_empty());
    let list: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect();
    let wrapper: Vec<String> = [
        "setpriv".to_string(),
        format!("--bounding-set=-all,{}", list.join(",")),
        "--inh-caps=-all".into(),
        "--no-new-privs".into(),
        "--".into(),
    ]
    .into();
    let mut h = Harness::new(LabSpec::with_backends(3));
    let snap = weighted(&mut h);
    h.apply(&snap);
    h.start_agent_under(&wrapper);

    // the kernel's view of the running agent: exactly those capabilities
    let pid = h.agent.as_ref().expect("agent running").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    let want = caps.iter().fold(0u64, |m, c| m | 1 << cap_bit(c));
    assert_eq!(
        field("CapEff:"),
        want,
        "effective capabilities of the agent"
    );
    assert_eq!(field("CapBnd:"), want, "bounding set of the agent");
    assert_eq!(field("NoNewPrivs:"), 1);

    // and with them it programs the dataplane and forwards over both families
    for v6 in [false, true] {
        let (tcp, udp) = (h.tcp_target(v6), h.udp_target(v6));
        let (t, u) = h.lab.client.ns.run_in(|| {
            let t = traffic::tcp_burst(tcp, 200, 16, Duration::from_secs(5)).unwrap();
            let u = traffic::udp_flows(udp, 200, &UdpOptions::default()).unwrap();
            (t, u)
        });
        assert_eq!(t.ok, 200, "TCP v6={v6}: {}", t.summary());
        assert_eq!(u.ok, 200, "UDP v6={v6}: {}", u.summary());
    }
    assert!(
        h.backend_totals().new_flows >= 800,
        "the XDP path carried them"
    );
}
