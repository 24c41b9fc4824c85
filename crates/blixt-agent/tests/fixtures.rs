//! Packet fixtures through BPF_PROG_TEST_RUN: the load balancer as the reconciler programs it,
//! fed packets built by `blixt_bpf::testing`, checked for verdict and exact output bytes (with
//! every checksum recomputed independently by the test parser).
//!
//! Every fixture runs once per dataplane variant ([`MODES`]): the kernel's best (`auto`), XDP
//! with `bpf_xdp_adjust_meta` forced off, and the load balancer at TC. A variant that cannot
//! load fails the test; none is skipped.
//!
//! Each test runs in a network namespace of its own with two veths and permanent neighbour
//! entries, so the program's FIB lookups resolve to known MACs and interfaces:
//! `fx0` faces clients (10.0.0.0/24, fd00::/64), `fx1` faces backends (10.1.0.0/24, fd01::/64).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use blixt_agent::{NodeConfig, Reconciler};
use blixt_bpf::shared::{self, FlowKey, CT_CLOSING, CT_ESTABLISHED};
use blixt_bpf::testing::{diff, Packet, ParsedPacket, TcpFlags};
use blixt_bpf::{AttachMode, Capability, Dataplane, DataplaneOptions, Hook, NeighPath, Verdict};
use blixt_core::snapshot::{
    Backend, BackendAddr, BackendState, Frontend, FrontendKey, Protocol, Snapshot,
};
use blixt_lab::netns::NetNs;

#[path = "common/addressing.rs"]
mod addressing;
use addressing::*;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const RING: u32 = 1021; // small prime: fixtures stay fast

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("needs root (BPF, network namespaces): run as root, as `make test` does");
    }
}

/// A dataplane variant the fixtures run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Whatever this kernel offers best.
    Auto,
    /// XDP, with unresolved next hops handed to the TC load balancer (no metadata).
    XdpWithoutMeta,
    /// The load balancer at TC ingress.
    Tc,
    /// At TC ingress without reading skb->ip_summed: every L4 checksum through
    /// bpf_l4_csum_replace() (kernels before 6.3).
    TcWithoutKernCtx,
}

const MODES: [Mode; 4] = [
    Mode::Auto,
    Mode::XdpWithoutMeta,
    Mode::Tc,
    Mode::TcWithoutKernCtx,
];

impl Mode {
    fn options(self) -> (AttachMode, Vec<Capability>) {
        match self {
            Mode::Auto => (AttachMode::Auto, vec![]),
            Mode::XdpWithoutMeta => (AttachMode::Xdp, vec![Capability::XdpAdjustMeta]),
            Mode::Tc => (AttachMode::Tc, vec![]),
            Mode::TcWithoutKernCtx => (AttachMode::Tc, vec![Capability::TcKernCtx]),
        }
    }

    fn is_tc(self) -> bool {
        matches!(self, Mode::Tc | Mode::TcWithoutKernCtx)
    }
}

struct Fx {
    rec: Reconciler,
    mode: Mode,
    fx0: u32,
    fx1: u32,
}

fn node(port_min: u16, port_max: u16) -> NodeConfig {
    NodeConfig {
        snat_v4: Some(snat4().into()),
        snat_v6: Some(snat6().into()),
        port_min,
        port_max,
        ..NodeConfig::default()
    }
}

fn frontend(
    name: &str,
    vip: IpAddr,
    port: u16,
    protocol: Protocol,
    backends: &[(u8, u32)],
) -> Frontend {
    Frontend {
        name: name.into(),
        key: FrontendKey {
            vip,
            port,
            protocol,
        },
        backends: backends
            .iter()
            .map(|&(i, weight)| Backend {
                addr: BackendAddr {
                    addr: match vip {
                        IpAddr::V4(_) => be4(i).into(),
                        IpAddr::V6(_) => be6(i).into(),
                    },
                    port: 8080,
                },
                weight,
                state: BackendState::Active,
            })
            .collect(),
        reject_weight: 0,
    }
}

/// The usual snapshot: TCP and UDP on both families, backend 1 only.
fn one_backend() -> Snapshot {
    Snapshot {
        generation: 1,
        frontends: vec![
            frontend("t4", vip4().into(), 80, Protocol::Tcp, &[(1, 1)]),
            frontend("u4", vip4().into(), 53, Protocol::Udp, &[(1, 1)]),
            frontend("t6", vip6().into(), 80, Protocol::Tcp, &[(1, 1)]),
            frontend("u6", vip6().into(), 53, Protocol::Udp, &[(1, 1)]),
        ],
    }
}

/// Runs `f` once per dataplane variant, each in a fresh namespace with the fixture network and
/// a dataplane programmed with `snap` and `node`.
fn with_fixture(snap: &Snapshot, node: NodeConfig, f: impl Fn(&mut Fx) + Sync) {
    for mode in MODES {
        with_fixture_in(mode, snap, node.clone(), &f);
    }
}

fn with_fixture_in(mode: Mode, snap: &Snapshot, node: NodeConfig, f: &(impl Fn(&mut Fx) + Sync)) {
    require_root();
    let ns = NetNs::new("blxfx").expect("fixture netns");
    let mut lines: Vec<String> = vec![
        "link set lo up".into(),
        "link add fx0 address 02:00:00:00:0a:00 type veth peer name fx1 address 02:00:00:00:0b:00"
            .into(),
        "link set fx0 up".into(),
        "link set fx1 up".into(),
        "addr add 10.0.0.1/24 dev fx0".into(),
        "addr add fd00::1/64 dev fx0 nodad".into(),
        "addr add 10.1.0.254/24 dev fx1".into(),
        "addr add fd01::fe/64 dev fx1 nodad".into(),
        "neigh add 10.0.0.2 lladdr 02:00:00:00:00:02 dev fx0 nud permanent".into(),
        "neigh add fd00::2 lladdr 02:00:00:00:00:02 dev fx0 nud permanent".into(),
    ];
    for i in 1..=3 {
        lines.push(format!(
            "neigh add 10.1.0.{i} lladdr 02:00:00:00:01:0{i} dev fx1 nud permanent"
        ));
        lines.push(format!(
            "neigh add fd01::{i} lladdr 02:00:00:00:01:0{i} dev fx1 nud permanent"
        ));
    }
    ns.ip_batch(&lines).expect("fixture network");
    ns.sysctl_set("net.ipv4.ip_forward", "1").unwrap();
    ns.sysctl_set("net.ipv6.conf.all.forwarding", "1").unwrap();
    ns.run_in(move || {
        let (attach, force_off) = mode.options();
        let dp = Dataplane::load(DataplaneOptions {
            max_frontends: 16,
            max_backends: 64,
            ring_size: RING,
            conntrack_entries: 1024,
            pin_dir: None,
            attach,
            force_off,
        })
        .unwrap_or_else(|e| panic!("loading the dataplane ({mode:?}): {e}"));
        let want = if mode.is_tc() { Hook::Tc } else { Hook::Xdp };
        assert_eq!(dp.plan().hook, want, "{mode:?}: {:?}", dp.plan());
        if mode.is_tc() {
            assert_eq!(
                dp.plan().kern_ctx,
                mode == Mode::Tc,
                "{mode:?}: {:?}",
                dp.plan()
            );
        }
        let mut rec = Reconciler::new(dp).expect("reconciler");
        rec.set_node_config(&node).expect("node config");
        rec.apply(snap).expect("apply snapshot");
        rec.dataplane()
            .announce_on("fx0", true)
            .expect("announce on fx0");
        let idx = |n: &str| {
            let c = std::ffi::CString::new(n).unwrap();
            // SAFETY: valid C string.
            unsafe { libc::if_nametoindex(c.as_ptr()) }
        };
        let mut fx = Fx {
            rec,
            mode,
            fx0: idx("fx0"),
            fx1: idx("fx1"),
        };
        assert!(fx.fx0 != 0 && fx.fx1 != 0, "fixture interfaces");
        f(&mut fx);
    });
}

impl Fx {
    /// One BPF_PROG_TEST_RUN of the load balancer on `pkt` arriving on `ifindex`, with the
    /// verdict in XDP's terms. TC has no XDP_TX: it redirects to the same device, which a
    /// fixture tells from a redirect elsewhere by the frame going back to its sender's MAC.
    fn run(&mut self, pkt: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
        let (v, out) = self
            .rec
            .dataplane()
            .test_run(pkt, ifindex)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN ({:?}): {e}", self.mode));
        // back to the sender's MAC, or to a multicast one (an answer to a DAD probe)
        let back_to_sender =
            out.len() >= 6 && pkt.len() >= 12 && (out[..6] == pkt[6..12] || out[0] & 1 == 1);
        let code = match v {
            Verdict::Pass => XDP_PASS,
            Verdict::Drop => XDP_DROP,
            Verdict::Tx => XDP_TX,
            Verdict::Redirect if self.mode.is_tc() && back_to_sender => XDP_TX,
            Verdict::Redirect => XDP_REDIRECT,
            Verdict::Other(v) => panic!("{:?}: unexpected verdict {v}", self.mode),
        };
        (code, out)
    }

    fn ct(&mut self, key: &FlowKey) -> Option<shared::CtEntry> {
        self.rec.dataplane().maps.conntrack.get(key, 0).ok()
    }

    fn stat(&self, idx: u32) -> u64 {
        self.rec.global_counters().unwrap()[idx as usize]
    }

    /// Runs and asserts verdict and exact output, with checksums verified independently.
    fn expect(&mut self, what: &str, pkt: &[u8], ifindex: u32, verdict: u32, expected: &[u8]) {
        let (v, out) = self.run(pkt, ifindex);
        let mode = self.mode;
        assert_eq!(
            v,
            verdict,
            "{what} ({mode:?}): verdict (output: {})",
            diff(expected, &out)
        );
        assert_eq!(
            out,
            expected,
            "{what} ({mode:?}): output differs:\n{}",
            diff(expected, &out)
        );
        if verdict != XDP_DROP {
            ParsedPacket::parse(&out)
                .unwrap_or_else(|e| panic!("{what}: output does not parse: {e}"))
                .verify_checksums()
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
}

/// The SNAT source port the program picks first for a flow (`snat_port()`, bpf/include/snat.h).
fn first_port(key: &FlowKey, be_id: u32, pmin: u16, pmax: u16) -> u16 {
    let range = u32::from(pmax - pmin) + 1;
    let start = (key.hash().wrapping_mul(0x9e37_79b1) ^ be_id) % range;
    pmin + start as u16
}

fn backend_id(fx: &Fx, name: &str, i: u8) -> u32 {
    let view = fx.rec.view();
    let f = view.iter().find(|f| f.name == name).expect("frontend");
    f.backends
        .iter()
        .find(|b| match b.0.addr {
            IpAddr::V4(a) => a == be4(i),
            IpAddr::V6(a) => a == be6(i),
        })
        .map(|b| b.1)
        .expect("backend")
}

#[test]
fn tcp_v4_flow_lifecycle() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        let syn = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .tcp(40000, 80)
            .flags(TcpFlags::SYN)
            .seq(1000)
            .window(64240)
            .options(&[2, 4, 5, 0xb4, 1, 1, 4, 2])
            .build();
        let key = FlowKey::new(client4().into(), 40000, vip4().into(), 80, 6);
        let id = backend_id(fx, "t4", 1);
        let port = first_port(&key, id, 1024, 32767);
        let want = Packet::eth(FX1_MAC, backend_mac(1))
            .ipv4(snat4(), be4(1))
            .tcp(port, 8080)
            .flags(TcpFlags::SYN)
            .seq(1000)
            .window(64240)
            .options(&[2, 4, 5, 0xb4, 1, 1, 4, 2])
            .build();
        fx.expect(
            "SYN to VIP: full-NAT to the backend",
            &syn,
            fx.fx0,
            XDP_REDIRECT,
            &want,
        );
        let fwd = fx.ct(&key).expect("forward conntrack entry");
        assert_eq!(u16::from_be(fwd.nsport), port);
        let rkey = FlowKey::new(be4(1).into(), 8080, snat4().into(), port, 6);
        assert!(fx.ct(&rkey).is_some(), "reply conntrack entry");

        // reply from the backend: reverse NAT to VIP -> client, out of the client side
        let synack = Packet::eth(backend_mac(1), FX1_MAC)
            .ipv4(be4(1), snat4())
            .tcp(8080, port)
            .flags(TcpFlags::SYN | TcpFlags::ACK)
            .seq(5000)
            .ack(1001)
            .build();
        let want = Packet::eth(FX0_MAC, CLIENT_MAC)
            .ipv4(vip4(), client4())
            .tcp(80, 40000)
            .flags(TcpFlags::SYN | TcpFlags::ACK)
            .seq(5000)
            .ack(1001)
            .build();
        fx.expect(
            "SYN-ACK reply: reverse NAT",
            &synack,
            fx.fx1,
            XDP_REDIRECT,
            &want,
        );

        // established data segment
        let data = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .tcp(40000, 80)
            .flags(TcpFlags::ACK | TcpFlags::PSH)
            .seq(1001)
            .ack(5001)
            .payload(b"GET / HTTP/1.0\r\n\r\n")
            .build();
        let want = Packet::eth(FX1_MAC, backend_mac(1))
            .ipv4(snat4(), be4(1))
            .tcp(port, 8080)
            .flags(TcpFlags::ACK | TcpFlags::PSH)
            .seq(1001)
            .ack(5001)
            .payload(b"GET / HTTP/1.0\r\n\r\n")
            .build();
        fx.expect("established data", &data, fx.fx0, XDP_REDIRECT, &want);
        assert_eq!(fx.ct(&key).unwrap().state, CT_ESTABLISHED);

        // FIN moves the flow to closing, still forwarded
        let fin = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .tcp(40000, 80)
            .flags(TcpFlags::ACK | TcpFlags::FIN)
            .seq(1019)
            .ack(5001)
            .build();
        let want = Packet::eth(FX1_MAC, backend_mac(1))
            .ipv4(snat4(), be4(1))
            .tcp(port, 8080)
            .flags(TcpFlags::ACK | TcpFlags::FIN)
            .seq(1019)
            .ack(5001)
            .build();
        fx.expect("FIN", &fin, fx.fx0, XDP_REDIRECT, &want);
        assert_eq!(fx.ct(&key).unwrap().state, CT_CLOSING);

        // RST from the backend: forwarded, its entry closing
        let rst = Packet::eth(backend_mac(1), FX1_MAC)
            .ipv4(be4(1), snat4())
            .tcp(8080, port)
            .flags(TcpFlags::RST)
            .seq(5001)
            .build();
        let want = Packet::eth(FX0_MAC, CLIENT_MAC)
            .ipv4(vip4(), client4())
            .tcp(80, 40000)
            .flags(TcpFlags::RST)
            .seq(5001)
            .build();
        fx.expect("RST reply", &rst, fx.fx1, XDP_REDIRECT, &want);
        assert_eq!(fx.ct(&rkey).unwrap().state, CT_CLOSING);

        // a new SYN on the closed tuple is a new connection (fresh entry, state NEW)
        let (v, _) = fx.run(&syn, fx.fx0);
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!(fx.ct(&key).unwrap().state, shared::CT_NEW);

        let c = fx.rec.backend_counters(id).unwrap();
        assert_eq!(c.new_flows, 2, "{c:?}");
        assert_eq!(c.packets, 6, "{c:?}");
    });
}

#[test]
fn tcp_v6_with_extension_headers_and_reply() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        let syn = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv6(client6(), vip6())
            .ext_hop_by_hop()
            .ext_dest_opts()
            .tcp(40001, 80)
            .flags(TcpFlags::SYN)
            .seq(7)
            .build();
        let key = FlowKey::new(client6().into(), 40001, vip6().into(), 80, 6);
        let id = backend_id(fx, "t6", 1);
        let port = first_port(&key, id, 1024, 32767);
        let want = Packet::eth(FX1_MAC, backend_mac(1))
            .ipv6(snat6(), be6(1))
            .ext_hop_by_hop()
            .ext_dest_opts()
            .tcp(port, 8080)
            .flags(TcpFlags::SYN)
            .seq(7)
            .build();
        fx.expect("v6 SYN with ext headers", &syn, fx.fx0, XDP_REDIRECT, &want);
        let reply = Packet::eth(backend_mac(1), FX1_MAC)
            .ipv6(be6(1), snat6())
            .tcp(8080, port)
            .flags(TcpFlags::SYN | TcpFlags::ACK)
            .seq(9)
            .ack(8)
            .build();
        let want = Packet::eth(FX0_MAC, CLIENT_MAC)
            .ipv6(vip6(), client6())
            .tcp(80, 40001)
            .flags(TcpFlags::SYN | TcpFlags::ACK)
            .seq(9)
            .ack(8)
            .build();
        fx.expect("v6 reply", &reply, fx.fx1, XDP_REDIRECT, &want);
    });
}

#[test]
fn udp_v4_and_v6_new_established_reply() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        for v6 in [false, true] {
            let (c, vip, snat, be): (IpAddr, IpAddr, IpAddr, IpAddr) = if v6 {
                (
                    client6().into(),
                    vip6().into(),
                    snat6().into(),
                    be6(1).into(),
                )
            } else {
                (
                    client4().into(),
                    vip4().into(),
                    snat4().into(),
                    be4(1).into(),
                )
            };
            let name = if v6 { "u6" } else { "u4" };
            let key = FlowKey::new(c, 5353, vip, 53, 17);
            let port = first_port(&key, backend_id(fx, name, 1), 1024, 32767);
            let build =
                |src: IpAddr, dst: IpAddr, sp, dp, smac, dmac, payload: &[u8]| match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => Packet::eth(smac, dmac)
                        .ipv4(s, d)
                        .udp(sp, dp)
                        .payload(payload)
                        .build(),
                    (IpAddr::V6(s), IpAddr::V6(d)) => Packet::eth(smac, dmac)
                        .ipv6(s, d)
                        .udp(sp, dp)
                        .payload(payload)
                        .build(),
                    _ => unreachable!(),
                };
            for (what, payload) in [
                ("UDP new", &b"query-1"[..]),
                ("UDP established", &b"query-2"[..]),
            ] {
                let pkt = build(c, vip, 5353, 53, CLIENT_MAC, FX0_MAC, payload);
                let want = build(snat, be, port, 8080, FX1_MAC, backend_mac(1), payload);
                fx.expect(
                    &format!("{what} v6={v6}"),
                    &pkt,
                    fx.fx0,
                    XDP_REDIRECT,
                    &want,
                );
            }
            let reply = build(be, snat, 8080, port, backend_mac(1), FX1_MAC, b"answer");
            let want = build(vip, c, 53, 5353, FX0_MAC, CLIENT_MAC, b"answer");
            fx.expect(
                &format!("UDP reply v6={v6}"),
                &reply,
                fx.fx1,
                XDP_REDIRECT,
                &want,
            );
            assert_eq!(fx.ct(&key).unwrap().state, shared::CT_NEW, "forward entry");
        }
        // IPv4 UDP without checksum keeps none
        let key = FlowKey::new(client4().into(), 6000, vip4().into(), 53, 17);
        let port = first_port(&key, backend_id(fx, "u4", 1), 1024, 32767);
        let pkt = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .udp(6000, 53)
            .zero_checksum()
            .payload(b"x")
            .build();
        let want = Packet::eth(FX1_MAC, backend_mac(1))
            .ipv4(snat4(), be4(1))
            .udp(port, 8080)
            .zero_checksum()
            .payload(b"x")
            .build();
        fx.expect("UDP v4 zero checksum", &pkt, fx.fx0, XDP_REDIRECT, &want);
    });
}

#[test]
fn vlan_tagged_and_ipv4_options() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        let id = backend_id(fx, "t4", 1);
        let key = FlowKey::new(client4().into(), 41000, vip4().into(), 80, 6);
        let port = first_port(&key, id, 1024, 32767);
        let syn = Packet::eth(CLIENT_MAC, FX0_MAC)
            .vlan(100)
            .ipv4(client4(), vip4())
            .tcp(41000, 80)
            .flags(TcpFlags::SYN)
            .build();
        let want = Packet::eth(FX1_MAC, backend_mac(1))
            .vlan(100)
            .ipv4(snat4(), be4(1))
            .tcp(port, 8080)
            .flags(TcpFlags::SYN)
            .build();
        fx.expect(
            "VLAN-tagged SYN keeps its tag",
            &syn,
            fx.fx0,
            XDP_REDIRECT,
            &want,
        );

        let key = FlowKey::new(client4().into(), 41001, vip4().into(), 80, 6);
        let port = first_port(&key, id, 1024, 32767);
        let opts = [0x94, 4, 0, 0, 1, 1, 1, 0]; // router alert, NOP, NOP, NOP, EOL
        let syn = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .options(&opts)
            .tcp(41001, 80)
            .flags(TcpFlags::SYN)
            .build();
        let want = Packet::eth(FX1_MAC, backend_mac(1))
            .ipv4(snat4(), be4(1))
            .options(&opts)
            .tcp(port, 8080)
            .flags(TcpFlags::SYN)
            .build();
        fx.expect("IPv4 with options", &syn, fx.fx0, XDP_REDIRECT, &want);
    });
}

#[test]
fn non_vip_traffic_passes_unchanged() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        let other_port = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .tcp(40000, 81)
            .flags(TcpFlags::SYN)
            .build();
        let other_addr = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), Ipv4Addr::new(10, 0, 0, 1))
            .tcp(40000, 22)
            .flags(TcpFlags::SYN)
            .build();
        let v6 = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv6(client6(), "fd00::1".parse().unwrap())
            .udp(1, 2)
            .payload(b"x")
            .build();
        let ping = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .icmp_echo_request(1, 1)
            .build();
        let arp = Packet::eth(CLIENT_MAC, [0xff; 6]).build_raw(0x0806, &[0u8; 28]);
        for (what, p) in [
            ("other port", other_port),
            ("other address", other_addr),
            ("v6 non-VIP", v6),
            ("ICMP echo", ping),
            ("ARP", arp),
        ] {
            fx.expect(what, &p, fx.fx0, XDP_PASS, &p);
        }
    });
}

#[test]
fn truncated_packets_pass_untouched_and_create_no_state() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        let tcp = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .tcp(42000, 80)
            .flags(TcpFlags::SYN)
            .payload(b"hello")
            .build();
        let udp = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv6(client6(), vip6())
            .udp(42001, 53)
            .payload(b"hello")
            .build();
        let tcp6 = Packet::eth(CLIENT_MAC, FX0_MAC)
            .vlan(7)
            .ipv6(client6(), vip6())
            .ext_routing()
            .tcp(42002, 80)
            .flags(TcpFlags::SYN)
            .build();
        // an skb test run refuses a frame of a bare Ethernet header (EINVAL)
        // (end of the outer IP header, packet)
        for (l3_end, full) in [(34, tcp), (54, udp), (58, tcp6)] {
            for len in 14..full.len() {
                let cut = &full[..len];
                if fx.mode.is_tc() && len < l3_end {
                    // an skb test run refuses a frame whose IP header is cut (EINVAL) before
                    // the program runs: such an skb never reaches TC (the driver drops it)
                    if fx.rec.dataplane().test_run(cut, fx.fx0).is_err() {
                        continue;
                    }
                }
                let (v, out) = fx.run(cut, fx.fx0);
                assert_eq!(v, XDP_PASS, "truncated to {len} of {}", full.len());
                assert_eq!(out, cut, "truncated to {len}: modified");
            }
        }
        assert_eq!(
            fx.rec.dataplane().maps.conntrack.keys().count(),
            0,
            "no state for truncated packets"
        );
    });
}

#[test]
fn icmp_errors_for_tracked_and_unknown_flows() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        // establish a v4 TCP flow
        let syn = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .tcp(43000, 80)
            .flags(TcpFlags::SYN)
            .seq(1)
            .build();
        let (v, out) = fx.run(&syn, fx.fx0);
        assert_eq!(v, XDP_REDIRECT);
        let port = ParsedPacket::parse(&out).unwrap().src_port().unwrap();

        // a router on the backend side says the forwarded packet was too big
        let quoted = Packet::ipv4(snat4(), be4(1))
            .tcp(port, 8080)
            .flags(TcpFlags::ACK)
            .seq(2)
            .payload(&[0u8; 100])
            .build();
        let err = Packet::eth(backend_mac(2), FX1_MAC)
            .ipv4(be4(2), snat4())
            .icmp_frag_needed(1400, &quoted, 28 + 20)
            .build();
        let quoted_client = Packet::ipv4(client4(), vip4())
            .tcp(43000, 80)
            .flags(TcpFlags::ACK)
            .seq(2)
            .payload(&[0u8; 100])
            .build();
        let want = Packet::eth(FX0_MAC, CLIENT_MAC)
            .ipv4(vip4(), client4())
            .icmp_frag_needed(1400, &quoted_client, 28 + 20)
            .build();
        fx.expect(
            "ICMP frag-needed translated to the client",
            &err,
            fx.fx1,
            XDP_REDIRECT,
            &want,
        );
        assert_eq!(fx.stat(shared::STAT_ICMP_TRANSLATED), 1);

        // v6: packet too big about a reply we sent to the client, from a client-side router
        let syn6 = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv6(client6(), vip6())
            .udp(43001, 53)
            .payload(b"q")
            .build();
        let (v, out) = fx.run(&syn6, fx.fx0);
        assert_eq!(v, XDP_REDIRECT);
        let port6 = ParsedPacket::parse(&out).unwrap().src_port().unwrap();
        let quoted = Packet::ipv6(vip6(), client6())
            .udp(53, 43001)
            .payload(&[1u8; 64])
            .build();
        let err = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv6("fd00::9".parse().unwrap(), vip6())
            .icmpv6_packet_too_big(1280, &quoted, quoted.len())
            .build();
        let quoted_be = Packet::ipv6(be6(1), snat6())
            .udp(8080, port6)
            .payload(&[1u8; 64])
            .build();
        let want = Packet::eth(FX1_MAC, backend_mac(1))
            .ipv6(snat6(), be6(1))
            .icmpv6_packet_too_big(1280, &quoted_be, quoted_be.len())
            .build();
        fx.expect(
            "ICMPv6 packet-too-big translated to the backend",
            &err,
            fx.fx0,
            XDP_REDIRECT,
            &want,
        );

        // an error about a flow nobody tracks passes untouched
        let quoted = Packet::ipv4(snat4(), be4(3))
            .udp(9999, 8080)
            .payload(b"zz")
            .build();
        let err = Packet::eth(backend_mac(3), FX1_MAC)
            .ipv4(be4(3), snat4())
            .icmp_dest_unreachable(3, &quoted, quoted.len())
            .build();
        fx.expect(
            "ICMP error for an unknown flow",
            &err,
            fx.fx1,
            XDP_PASS,
            &err,
        );
        assert_eq!(fx.stat(shared::STAT_ICMP_UNKNOWN), 1);
    });
}

#[test]
fn all_invalid_frontend_resets_tcp_and_drops_udp() {
    let mut snap = one_backend();
    for f in &mut snap.frontends {
        f.backends.clear();
        f.reject_weight = 1;
    }
    with_fixture(&snap, node(1024, 32767), |fx| {
        let syn = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .ttl(50)
            .tcp(44000, 80)
            .flags(TcpFlags::SYN)
            .seq(100)
            .options(&[2, 4, 5, 0xb4])
            .payload(b"data")
            .build();
        let rst = Packet::eth(FX0_MAC, CLIENT_MAC)
            .ipv4(vip4(), client4())
            .ttl(64)
            .tcp(80, 44000)
            .flags(TcpFlags::RST | TcpFlags::ACK)
            .seq(0)
            .ack(100 + 1 + 4)
            .window(0)
            .build();
        fx.expect(
            "SYN to an all-invalid frontend gets a RST",
            &syn,
            fx.fx0,
            XDP_TX,
            &rst,
        );
        let syn6 = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv6(client6(), vip6())
            .tcp(44001, 80)
            .flags(TcpFlags::SYN)
            .seq(5)
            .build();
        let rst6 = Packet::eth(FX0_MAC, CLIENT_MAC)
            .ipv6(vip6(), client6())
            .hop_limit(64)
            .tcp(80, 44001)
            .flags(TcpFlags::RST | TcpFlags::ACK)
            .seq(0)
            .ack(6)
            .window(0)
            .build();
        fx.expect("v6 SYN gets a RST", &syn6, fx.fx0, XDP_TX, &rst6);
        let udp = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .udp(44002, 53)
            .payload(b"q")
            .build();
        let (v, _) = fx.run(&udp, fx.fx0);
        assert_eq!(v, XDP_DROP, "UDP to an all-invalid frontend is dropped");
        assert_eq!(fx.stat(shared::STAT_REJECT_NO_BACKEND), 3);
        assert_eq!(fx.rec.dataplane().maps.conntrack.keys().count(), 0);
    });
}

fn syn_from(sport: u16) -> Vec<u8> {
    Packet::eth(CLIENT_MAC, FX0_MAC)
        .ipv4(client4(), vip4())
        .tcp(sport, 80)
        .flags(TcpFlags::SYN)
        .build()
}

fn dst_of(out: &[u8]) -> IpAddr {
    ParsedPacket::parse(out).unwrap().dst_ip().unwrap()
}

#[test]
fn weights_zero_weight_and_reject_share() {
    let mut snap = Snapshot {
        generation: 1,
        frontends: vec![frontend(
            "t4",
            vip4().into(),
            80,
            Protocol::Tcp,
            &[(1, 3), (2, 1), (3, 0)],
        )],
    };
    snap.frontends[0].reject_weight = 1;
    with_fixture(&snap, node(1024, 32767), |fx| {
        let mut counts = std::collections::BTreeMap::new();
        let n = 2000u16;
        for sport in 10000..10000 + n {
            let (v, out) = fx.run(&syn_from(sport), fx.fx0);
            let k = match v {
                XDP_REDIRECT => dst_of(&out).to_string(),
                XDP_TX => "reset".to_string(),
                other => panic!("unexpected verdict {other}"),
            };
            *counts.entry(k).or_insert(0u32) += 1;
        }
        assert!(
            !counts.contains_key(&be4(3).to_string()),
            "weight-0 backend picked: {counts:?}"
        );
        let share = |k: &str| f64::from(counts.get(k).copied().unwrap_or(0)) / f64::from(n);
        for (k, w) in [
            (be4(1).to_string(), 0.6),
            (be4(2).to_string(), 0.2),
            ("reset".to_string(), 0.2),
        ] {
            assert!(
                (share(&k) - w).abs() < 0.05,
                "{k}: {} vs {w} ({counts:?})",
                share(&k)
            );
        }
    });
}

#[test]
fn no_free_source_port_refuses_the_flow() {
    // one SNAT port: the second flow to the backend finds no free source port, and is refused
    // rather than forwarded on the port the first flow owns
    with_fixture(&one_backend(), node(2000, 2000), |fx| {
        let (v, out) = fx.run(&syn_from(45000), fx.fx0);
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!(ParsedPacket::parse(&out).unwrap().src_port(), Some(2000));
        let (v, out) = fx.run(&syn_from(45001), fx.fx0);
        assert_eq!(v, XDP_TX, "reset");
        let p = ParsedPacket::parse(&out).unwrap();
        assert_eq!(p.dst_ip(), Some(IpAddr::from(client4())));
        assert!(p.tcp_flags().unwrap().contains(TcpFlags::RST));
        assert_eq!(fx.stat(shared::STAT_SNAT_EXHAUSTED), 1);
        let key = FlowKey::new(client4().into(), 45001, vip4().into(), 80, 6);
        assert!(fx.ct(&key).is_none(), "no state for the refused flow");
        // UDP is dropped
        let udp = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .udp(45002, 53)
            .payload(b"q")
            .build();
        let (v, _) = fx.run(&udp, fx.fx0);
        assert_eq!(v, XDP_REDIRECT, "UDP has its own port space");
        let udp2 = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .udp(45003, 53)
            .payload(b"q")
            .build();
        assert_eq!(fx.run(&udp2, fx.fx0).0, XDP_DROP);
        assert_eq!(fx.stat(shared::STAT_SNAT_EXHAUSTED), 2);
    });
}

#[test]
fn fragments_to_a_vip_are_dropped_others_pass() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        let frags = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .id(9)
            .udp(46000, 53)
            .payload(&[7u8; 64])
            .build_fragments(32);
        assert!(frags.len() >= 2);
        for f in &frags {
            let (v, _) = fx.run(f, fx.fx0);
            assert_eq!(v, XDP_DROP, "v4 fragment to a VIP");
        }
        let frag6 = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv6(client6(), vip6())
            .ext_fragment(0, true, 77)
            .udp(46001, 53)
            .payload(&[1u8; 16])
            .build();
        assert_eq!(fx.run(&frag6, fx.fx0).0, XDP_DROP, "v6 fragment to a VIP");
        let other = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), Ipv4Addr::new(10, 0, 0, 1))
            .id(3)
            .udp(1, 2)
            .payload(&[0u8; 64])
            .build_fragments(32);
        for f in &other {
            fx.expect("fragment to a non-VIP", f, fx.fx0, XDP_PASS, f);
        }
        assert_eq!(fx.stat(shared::STAT_FRAGMENT_DROP), frags.len() as u64 + 1);
        // an atomic fragment (offset 0, no more fragments) is an ordinary packet
        let atomic = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv6(client6(), vip6())
            .ext_fragment(0, false, 78)
            .tcp(46002, 80)
            .flags(TcpFlags::SYN)
            .build();
        assert_eq!(fx.run(&atomic, fx.fx0).0, XDP_REDIRECT, "atomic fragment");
    });
}

#[test]
fn removed_backend_resets_terminating_keeps_flows() {
    let snap = Snapshot {
        generation: 1,
        frontends: vec![frontend(
            "t4",
            vip4().into(),
            80,
            Protocol::Tcp,
            &[(1, 1), (2, 1)],
        )],
    };
    with_fixture(&snap, node(1024, 32767), |fx| {
        // find one flow on each backend
        let mut on = std::collections::BTreeMap::new();
        for sport in 20000..20100u16 {
            let (v, out) = fx.run(&syn_from(sport), fx.fx0);
            assert_eq!(v, XDP_REDIRECT);
            on.entry(dst_of(&out)).or_insert(sport);
        }
        let s1 = on[&IpAddr::from(be4(1))];
        let s2 = on[&IpAddr::from(be4(2))];
        let ack = |sport: u16| {
            Packet::eth(CLIENT_MAC, FX0_MAC)
                .ipv4(client4(), vip4())
                .tcp(sport, 80)
                .flags(TcpFlags::ACK)
                .seq(50)
                .ack(60)
                .build()
        };

        // backend 1 terminating, backend 2 removed
        let mut next = snap.clone();
        next.generation = 2;
        next.frontends[0].backends[0].state = BackendState::Terminating;
        next.frontends[0].backends.remove(1);
        fx.rec.apply(&next).unwrap();

        let (v, out) = fx.run(&ack(s1), fx.fx0);
        assert_eq!(
            (v, dst_of(&out)),
            (XDP_REDIRECT, be4(1).into()),
            "terminating backend keeps its flow"
        );
        let want = Packet::eth(FX0_MAC, CLIENT_MAC)
            .ipv4(vip4(), client4())
            .ttl(64)
            .tcp(80, s2)
            .flags(TcpFlags::RST)
            .seq(60)
            .window(0)
            .build();
        fx.expect(
            "flow of a removed backend is reset",
            &ack(s2),
            fx.fx0,
            XDP_TX,
            &want,
        );
        assert_eq!(fx.stat(shared::STAT_BACKEND_GONE), 1);
        // no active backend left: new flows are rejected
        let (v, _) = fx.run(&syn_from(30000), fx.fx0);
        assert_eq!(v, XDP_TX, "no new flow to the terminating backend");
    });
}

#[test]
fn refused_snapshot_keeps_previous_state() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        let before = fx.rec.view().len();
        let mut bad = one_backend();
        bad.generation = 2;
        bad.frontends.push(bad.frontends[0].clone());
        bad.frontends[4].name = "dup".into();
        let err = fx.rec.apply(&bad).unwrap_err().to_string();
        assert!(err.contains("\"dup\"") && err.contains("\"t4\""), "{err}");
        let mut big = one_backend();
        big.frontends[0].backends = (1..=70)
            .map(|i| Backend {
                addr: BackendAddr {
                    addr: Ipv4Addr::new(10, 1, 1, i).into(),
                    port: 80,
                },
                weight: 1,
                state: BackendState::Active,
            })
            .collect();
        let err = fx.rec.apply(&big).unwrap_err().to_string();
        assert!(
            err.contains("\"t4\"") && err.contains("max_backends"),
            "{err}"
        );
        assert_eq!(fx.rec.view().len(), before);
        assert_eq!(fx.rec.generation(), Some(1));
        let (v, _) = fx.run(&syn_from(47000), fx.fx0);
        assert_eq!(v, XDP_REDIRECT, "still serving the previous snapshot");
    });
}

fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    a
}

#[test]
fn arp_requests_for_a_vip_are_answered_others_pass() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        let req = Packet::eth(CLIENT_MAC, [0xff; 6])
            .build_raw(0x0806, &arp(1, CLIENT_MAC, client4(), [0; 6], vip4()));
        let want = Packet::eth(FX0_MAC, CLIENT_MAC)
            .build_raw(0x0806, &arp(2, FX0_MAC, vip4(), CLIENT_MAC, client4()));
        fx.expect("ARP request for the VIP", &req, fx.fx0, XDP_TX, &want);
        let other = Packet::eth(CLIENT_MAC, [0xff; 6]).build_raw(
            0x0806,
            &arp(1, CLIENT_MAC, client4(), [0; 6], Ipv4Addr::new(10, 0, 0, 1)),
        );
        fx.expect(
            "ARP request for a node address",
            &other,
            fx.fx0,
            XDP_PASS,
            &other,
        );
        // not announced on fx1
        fx.expect(
            "ARP request on an interface that does not announce",
            &req,
            fx.fx1,
            XDP_PASS,
            &req,
        );
        assert_eq!(fx.stat(shared::STAT_ARP_REPLY), 1);
    });
}

#[test]
fn neighbour_solicitations_for_a_vip_are_answered() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        let mut body = vip6().octets().to_vec();
        body.extend_from_slice(&[1, 1]);
        body.extend_from_slice(&CLIENT_MAC);
        let snm: Ipv6Addr = "ff02::1:ff00:10".parse().unwrap();
        let ns = Packet::eth(CLIENT_MAC, [0x33, 0x33, 0xff, 0, 0, 0x10])
            .ipv6(client6(), snm)
            .hop_limit(255)
            .icmpv6(135, 0, [0; 4])
            .payload(&body)
            .build();
        let mut na_body = vip6().octets().to_vec();
        na_body.extend_from_slice(&[2, 1]);
        na_body.extend_from_slice(&FX0_MAC);
        let want = Packet::eth(FX0_MAC, CLIENT_MAC)
            .ipv6(vip6(), client6())
            .hop_limit(255)
            .icmpv6(136, 0, [0x60, 0, 0, 0])
            .payload(&na_body)
            .build();
        fx.expect("NS for the VIP", &ns, fx.fx0, XDP_TX, &want);

        // duplicate address detection (from ::, no source option): answered to all nodes
        let dad = Packet::eth(CLIENT_MAC, [0x33, 0x33, 0xff, 0, 0, 0x10])
            .ipv6(Ipv6Addr::UNSPECIFIED, snm)
            .hop_limit(255)
            .icmpv6(135, 0, [0; 4])
            .payload(&vip6().octets())
            .build();
        let want = Packet::eth(FX0_MAC, [0x33, 0x33, 0, 0, 0, 1])
            .ipv6(vip6(), "ff02::1".parse().unwrap())
            .hop_limit(255)
            .icmpv6(136, 0, [0x20, 0, 0, 0])
            .payload(&na_body)
            .build();
        fx.expect("DAD probe for the VIP", &dad, fx.fx0, XDP_TX, &want);

        let mut other = "fd00::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        other.extend_from_slice(&[1, 1]);
        other.extend_from_slice(&CLIENT_MAC);
        let ns_other = Packet::eth(CLIENT_MAC, [0x33, 0x33, 0xff, 0, 0, 1])
            .ipv6(client6(), snm)
            .hop_limit(255)
            .icmpv6(135, 0, [0; 4])
            .payload(&other)
            .build();
        fx.expect(
            "NS for a node address",
            &ns_other,
            fx.fx0,
            XDP_PASS,
            &ns_other,
        );
        assert_eq!(fx.stat(shared::STAT_NDP_REPLY), 2);
    });
}

#[test]
fn sweeper_expires_pairs_by_state_timeout() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        let now = blixt_agent::reconciler::monotonic_ns();
        let s = 1_000_000_000u64;
        // a half-open TCP flow (SYN only), a closing one (FIN seen), a UDP flow
        assert_eq!(fx.run(&syn_from(50000), fx.fx0).0, XDP_REDIRECT);
        assert_eq!(fx.run(&syn_from(50001), fx.fx0).0, XDP_REDIRECT);
        let fin = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .tcp(50001, 80)
            .flags(TcpFlags::ACK | TcpFlags::FIN)
            .build();
        assert_eq!(fx.run(&fin, fx.fx0).0, XDP_REDIRECT);
        let udp = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .udp(50002, 53)
            .payload(b"q")
            .build();
        assert_eq!(fx.run(&udp, fx.fx0).0, XDP_REDIRECT);
        let count = |fx: &mut Fx| fx.rec.dataplane().maps.conntrack.keys().count();
        assert_eq!(count(fx), 6, "two entries per flow");

        let r = fx.rec.sweep(now + 5 * s).unwrap();
        assert_eq!((r.scanned, r.expired), (6, 0), "nothing idle long enough");
        let syn_key = FlowKey::new(client4().into(), 50000, vip4().into(), 80, 6);
        assert!(fx.ct(&syn_key).is_some());
        let r = fx.rec.sweep(now + 62 * s).unwrap();
        assert_eq!(
            r.expired, 4,
            "the SYN-only TCP flow (60 s) and the UDP flow (60 s)"
        );
        assert!(fx.ct(&syn_key).is_none());
        // a closing flow keeps its entries (and source port) past the backends' TIME_WAIT
        let r = fx.rec.sweep(now + 122 * s).unwrap();
        assert_eq!(r.expired, 2, "the closing flow (120 s)");
        assert_eq!(count(fx), 0);
    });
}

/// Keeps the calling thread on CPU 0, so per-CPU caches written by one test run are the ones
/// the next run reads.
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "pinning the test thread to CPU 0"
        );
    }
}

#[test]
fn new_flows_take_the_backends_cached_next_hop() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        pin_to_cpu0();
        let key = |sport| FlowKey::new(client4().into(), sport, vip4().into(), 80, 6);
        let dst_mac = |out: &[u8]| -> [u8; 6] { out[..6].try_into().unwrap() };

        // the first flow to the backend looks the next hop up and leaves it for the next ones
        let (v, out) = fx.run(&syn_from(51000), fx.fx0);
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!(dst_mac(&out), backend_mac(1));
        assert_eq!(
            fx.ct(&key(51000)).unwrap().fib_ifindex,
            0,
            "first flow: its entry learns the hop from its next packet"
        );
        let (v, out) = fx.run(&syn_from(51001), fx.fx0);
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!(dst_mac(&out), backend_mac(1));
        let e = fx.ct(&key(51001)).unwrap();
        assert_eq!(
            (e.fib_ifindex, e.fib_smac, e.fib_dmac),
            (fx.fx1, FX1_MAC, backend_mac(1)),
            "second flow: recorded with the backend's cached hop"
        );

        // the backend's neighbour moves: new flows follow once the cached hop is a second old
        let moved = [2, 0, 0, 0, 1, 0x77];
        let st = std::process::Command::new("ip")
            .args([
                "neigh",
                "replace",
                "10.1.0.1",
                "lladdr",
                "02:00:00:00:01:77",
            ])
            .args(["dev", "fx1", "nud", "permanent"])
            .status()
            .expect("ip neigh replace");
        assert!(st.success());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let (v, out) = fx.run(&syn_from(51002), fx.fx0);
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!(dst_mac(&out), moved, "a stale hop is looked up again");
        let (_, out) = fx.run(&syn_from(51003), fx.fx0);
        assert_eq!(dst_mac(&out), moved);
        assert_eq!(fx.ct(&key(51003)).unwrap().fib_dmac, moved);
    });
}

#[test]
fn a_closed_or_expired_flows_source_port_is_taken_over_when_all_are_in_use() {
    // four source ports: four flows take them all
    with_fixture(&one_backend(), node(2000, 2003), |fx| {
        let key = |sport| FlowKey::new(client4().into(), sport, vip4().into(), 80, 6);
        let rkey = |port| FlowKey::new(be4(1).into(), 8080, snat4().into(), port, 6);
        let mut ports = Vec::new();
        for sport in 53000..53004 {
            assert_eq!(fx.run(&syn_from(sport), fx.fx0).0, XDP_REDIRECT);
            ports.push(u16::from_be(fx.ct(&key(sport)).unwrap().nsport));
        }
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [2000, 2001, 2002, 2003], "each flow its own port");

        // every port in use by a live flow: the fifth flow is refused
        assert_eq!(fx.run(&syn_from(53010), fx.fx0).0, XDP_TX);
        assert!(fx.ct(&key(53010)).is_none());
        assert_eq!(fx.stat(shared::STAT_SNAT_EXHAUSTED), 1);
        assert_eq!(fx.stat(shared::STAT_SNAT_PORT_REUSED), 0);

        // the first flow's backend closes (FIN): closing, but still within its last second
        let fin = Packet::eth(backend_mac(1), FX1_MAC)
            .ipv4(be4(1), snat4())
            .tcp(8080, ports[0])
            .flags(TcpFlags::ACK | TcpFlags::FIN)
            .build();
        assert_eq!(fx.run(&fin, fx.fx1).0, XDP_REDIRECT);
        assert_eq!(fx.ct(&rkey(ports[0])).unwrap().state, CT_CLOSING);
        assert_eq!(fx.run(&syn_from(53011), fx.fx0).0, XDP_TX);
        assert!(
            fx.ct(&key(53011)).is_none(),
            "a just-closed port is not reused"
        );
        assert_eq!(fx.stat(shared::STAT_SNAT_PORT_REUSED), 0);

        // three seconds later (written into the entry: last_seen is all the program reads)
        let now = blixt_agent::reconciler::monotonic_ns();
        let age = |fx: &mut Fx, k: &FlowKey, by: u64| {
            let mut e = fx.ct(k).unwrap();
            e.last_seen_ns = now - by;
            fx.rec.dataplane().maps.conntrack.insert(k, e, 0).unwrap();
        };
        age(fx, &rkey(ports[0]), 3_000_000_000);
        assert_eq!(fx.run(&syn_from(53012), fx.fx0).0, XDP_REDIRECT);
        let e = fx.ct(&key(53012)).expect("the new flow is tracked");
        assert_eq!(
            u16::from_be(e.nsport),
            ports[0],
            "on the closed flow's port"
        );
        let r = fx.ct(&rkey(ports[0])).unwrap();
        assert_eq!(
            u16::from_be(r.ndport),
            53012,
            "replies on that port go to the new client"
        );
        assert!(
            fx.ct(&key(53000)).is_none(),
            "the old flow's client side is gone"
        );
        assert_eq!(fx.stat(shared::STAT_SNAT_PORT_REUSED), 1);

        // a flow idle past its state's timeout (SYN seen only: 60 s) is over too
        age(fx, &key(53001), 61_000_000_000);
        age(fx, &rkey(ports[1]), 61_000_000_000);
        assert_eq!(fx.run(&syn_from(53013), fx.fx0).0, XDP_REDIRECT);
        let e = fx.ct(&key(53013)).expect("tracked");
        assert_eq!(u16::from_be(e.nsport), ports[1]);
        assert!(fx.ct(&key(53001)).is_none());
        assert_eq!(fx.stat(shared::STAT_SNAT_PORT_REUSED), 2);
        // live flows kept theirs
        for (sport, port) in [(53002, ports[2]), (53003, ports[3])] {
            assert_eq!(u16::from_be(fx.ct(&key(sport)).unwrap().nsport), port);
        }
    });
}

#[test]
fn unresolved_next_hops_leave_by_the_variants_path() {
    // backend 9 is on fx1's subnet but has no neighbour entry: the FIB answers NO_NEIGH
    let snap = Snapshot {
        generation: 1,
        frontends: vec![
            frontend("t4", vip4().into(), 80, Protocol::Tcp, &[(9, 1)]),
            frontend("t6", vip6().into(), 80, Protocol::Tcp, &[(9, 1)]),
        ],
    };
    with_fixture(&snap, node(1024, 32767), |fx| {
        let plan = fx.rec.dataplane().plan().clone();
        for v6 in [false, true] {
            let (client, vip, snat, be): (IpAddr, IpAddr, IpAddr, IpAddr) = if v6 {
                (
                    client6().into(),
                    vip6().into(),
                    snat6().into(),
                    be6(9).into(),
                )
            } else {
                (
                    client4().into(),
                    vip4().into(),
                    snat4().into(),
                    be4(9).into(),
                )
            };
            let build = |src: IpAddr, dst: IpAddr, sport: u16, dport: u16| {
                let eth = Packet::eth(CLIENT_MAC, FX0_MAC);
                match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s, d).tcp(sport, dport),
                    (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s, d).tcp(sport, dport),
                    _ => unreachable!("one family"),
                }
                .flags(TcpFlags::SYN)
                .seq(7)
                .build()
            };
            let syn = build(client, vip, 41000, 80);
            let key = FlowKey::new(client, 41000, vip, 80, 6);
            let id = backend_id(fx, if v6 { "t6" } else { "t4" }, 9);
            let port = first_port(&key, id, 1024, 32767);
            // rewritten, MACs left for the kernel's neighbour resolution to fill in
            let want = build(snat, be, port, 8080);
            let before = fx.stat(shared::STAT_FIB_NO_NEIGH);
            let (v, out) = fx.run(&syn, fx.fx0);
            let what = format!("{:?} v6={v6}", fx.mode);
            match (plan.hook, plan.neigh) {
                (Hook::Tc, _) => {
                    assert_eq!(v, XDP_REDIRECT, "{what}: bpf_redirect_neigh");
                    assert_eq!(out, want, "{what}:\n{}", diff(&want, &out));
                }
                (Hook::Xdp, NeighPath::XdpMeta) => {
                    assert_eq!(v, XDP_PASS, "{what}: up to the TC companion");
                    assert!(
                        out.ends_with(&want),
                        "{what}: rewritten behind the metadata"
                    );
                    let magic = u32::from_ne_bytes(out[..4].try_into().unwrap());
                    assert_eq!(magic, shared::META_MAGIC, "{what}: metadata");
                }
                (Hook::Xdp, NeighPath::TcLoadBalancer) => {
                    assert_eq!(v, XDP_PASS, "{what}: up to blixt_lb_tc");
                    assert_eq!(out, syn, "{what}: passed up untouched");
                    // TC ingress sees it next: the tracked flow, rewritten and redirected
                    let (v, out) = fx
                        .rec
                        .dataplane()
                        .test_run_at(Hook::Tc, &out, fx.fx0)
                        .expect("BPF_PROG_TEST_RUN of blixt_lb_tc");
                    assert_eq!(v, Verdict::Redirect, "{what}: blixt_lb_tc redirects");
                    assert_eq!(out, want, "{what}:\n{}", diff(&want, &out));
                }
            }
            assert!(fx.ct(&key).is_some(), "{what}: the flow is tracked");
            assert!(
                fx.stat(shared::STAT_FIB_NO_NEIGH) > before,
                "{what}: counted as an unresolved next hop"
            );
        }
    });
}

fn put16(frame: &mut [u8], at: usize, v: u16) {
    frame[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Packets whose lengths contradict each other (issue 17's fuzzer findings): to a VIP they are
/// dropped and counted and create no state; to any other address they pass untouched, to a
/// stack that validates them. Offsets: Ethernet 14, IPv4 header at 14 (no options), L4 at 34;
/// IPv6 header at 14, L4 at 54.
#[test]
fn malformed_packets_are_never_forwarded_and_create_no_state() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        // each builder makes the packet to a VIP (true) or to another address (false)
        let syn4 = |vip: bool| {
            let dst = if vip {
                vip4()
            } else {
                Ipv4Addr::new(10, 0, 0, 1)
            };
            Packet::eth(CLIENT_MAC, FX0_MAC)
                .ipv4(client4(), dst)
                .tcp(47000, 80)
                .flags(TcpFlags::SYN)
                .payload(b"data")
                .build()
        };
        let udp4 = |vip: bool| {
            let dst = if vip {
                vip4()
            } else {
                Ipv4Addr::new(10, 0, 0, 1)
            };
            Packet::eth(CLIENT_MAC, FX0_MAC)
                .ipv4(client4(), dst)
                .udp(47001, 53)
                .payload(b"query")
                .build()
        };
        let udp6 = |vip: bool| {
            let dst = if vip {
                vip6()
            } else {
                "fd00::1".parse().unwrap()
            };
            Packet::eth(CLIENT_MAC, FX0_MAC)
                .ipv6(client6(), dst)
                .udp(47002, 53)
                .payload(b"query")
                .build()
        };
        type Mutation = (&'static str, fn(&mut Vec<u8>));
        let v4_tcp: &[Mutation] = &[
            ("IP length covers 10 bytes of the TCP header", |f| {
                put16(f, 16, 30)
            }),
            ("IHL·4 beyond the IP length", |f| {
                f[14] = 0x4f;
                put16(f, 16, 40);
            }),
            ("TCP data offset 4", |f| f[46] = 0x40),
            ("TCP data offset beyond the IP length", |f| f[46] = 0xf0),
        ];
        let v4_udp: &[Mutation] = &[
            ("UDP length 7", |f| put16(f, 38, 7)),
            ("UDP length beyond the IP length", |f| put16(f, 38, 200)),
            ("IP length covers 4 bytes of the UDP header", |f| {
                put16(f, 16, 24)
            }),
        ];
        let v6_udp: &[Mutation] = &[
            ("IPv6 payload length 0", |f| put16(f, 18, 0)),
            ("IPv6 payload covers 6 bytes of the UDP header", |f| {
                put16(f, 18, 6)
            }),
        ];
        type Build<'a> = &'a dyn Fn(bool) -> Vec<u8>;
        let tables: [(Build, &[Mutation]); 3] = [(&syn4, v4_tcp), (&udp4, v4_udp), (&udp6, v6_udp)];
        let mut tried = 0u64;
        for (build, mutations) in tables {
            for (what, mutate) in mutations {
                let (mut to_vip, mut other) = (build(true), build(false));
                mutate(&mut to_vip);
                mutate(&mut other);
                let (v, _) = fx.run(&to_vip, fx.fx0);
                assert_eq!(v, XDP_DROP, "{what}, to a VIP ({:?})", fx.mode);
                let (v, out) = fx.run(&other, fx.fx0);
                assert_eq!((v, &out), (XDP_PASS, &other), "{what}, to a non-VIP");
                tried += 1;
            }
        }
        // an ICMP error with a quote cut inside its TCP header is judged by its own destination,
        // not by the quoted packet's
        let quoted_to_vip = Packet::ipv4(client4(), vip4())
            .tcp(47003, 80)
            .flags(TcpFlags::ACK)
            .build();
        let cut_quote = |dst: Ipv4Addr| {
            let mut e = Packet::eth(CLIENT_MAC, FX0_MAC)
                .ipv4(Ipv4Addr::new(192, 0, 2, 9), dst)
                .icmp_dest_unreachable(1, &quoted_to_vip, 28)
                .build();
            // outer IP length: 20 + ICMP 8 + quoted IP 20 + 4 bytes of the quoted TCP header
            put16(&mut e, 16, 52);
            e
        };
        let (to_vip, to_node) = (cut_quote(vip4()), cut_quote(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            fx.run(&to_vip, fx.fx0).0,
            XDP_DROP,
            "malformed error to a VIP"
        );
        let (v, out) = fx.run(&to_node, fx.fx0);
        assert_eq!(
            (v, &out),
            (XDP_PASS, &to_node),
            "malformed error to the node"
        );
        tried += 1;
        assert_eq!(fx.stat(shared::STAT_MALFORMED), tried);
        assert_eq!(
            fx.rec.dataplane().maps.conntrack.keys().count(),
            0,
            "no state from malformed packets"
        );
    });
}

/// Four extension headers are walked (docs/dataplane.md), so a fragment header among them meets
/// the fragment policy; a fifth is more than the parser walks and is dropped when to a VIP.
#[test]
fn ipv6_four_extension_headers_are_walked_and_five_are_dropped() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        let four = || {
            Packet::eth(CLIENT_MAC, FX0_MAC)
                .ipv6(client6(), vip6())
                .ext_hop_by_hop()
                .ext_dest_opts()
                .ext_routing()
                .ext_dest_opts()
        };
        let syn = four().tcp(47100, 80).flags(TcpFlags::SYN).build();
        assert_eq!(
            fx.run(&syn, fx.fx0).0,
            XDP_REDIRECT,
            "four extension headers"
        );
        // a fragment header as the fourth: the fragment policy
        let frag = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv6(client6(), vip6())
            .ext_hop_by_hop()
            .ext_dest_opts()
            .ext_routing()
            .ext_fragment(0, true, 5)
            .udp(47101, 53)
            .payload(b"q")
            .build();
        assert_eq!(
            fx.run(&frag, fx.fx0).0,
            XDP_DROP,
            "a fragment as the fourth"
        );
        assert_eq!(fx.stat(shared::STAT_FRAGMENT_DROP), 1);
        // as the fifth, or any fifth header: more than the parser walks
        let frag5 = four()
            .ext_fragment(0, true, 6)
            .udp(47103, 53)
            .payload(b"q")
            .build();
        let five = four()
            .ext_dest_opts()
            .tcp(47102, 80)
            .flags(TcpFlags::SYN)
            .build();
        for (what, pkt) in [("a fragment as the fifth", &frag5), ("five", &five)] {
            assert_eq!(fx.run(pkt, fx.fx0).0, XDP_DROP, "{what}");
        }
        assert_eq!(fx.stat(shared::STAT_MALFORMED), 2);
        assert_eq!(fx.stat(shared::STAT_FRAGMENT_DROP), 1);
    });
}

/// ICMP errors are translated only when sent to the source of the packet they quote (the VIP
/// for a reply to a client, the SNAT address for a packet to a backend), and their checksum
/// stays right when bytes trail the IP packet.
#[test]
fn icmp_errors_cannot_be_aimed_across_flows() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        let syn = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .tcp(47200, 80)
            .flags(TcpFlags::SYN)
            .build();
        let (v, out) = fx.run(&syn, fx.fx0);
        assert_eq!(v, XDP_REDIRECT);
        let port = ParsedPacket::parse(&out).unwrap().src_port().unwrap();
        // the backend side of the flow, quoted in errors below
        let quoted_be = Packet::ipv4(snat4(), be4(1))
            .tcp(port, 8080)
            .flags(TcpFlags::ACK)
            .build();
        // sent to the VIP, quoting the backend side: it would reach the flow's client
        let to_vip = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(Ipv4Addr::new(192, 0, 2, 66), vip4())
            .icmp_dest_unreachable(1, &quoted_be, quoted_be.len())
            .build();
        fx.expect(
            "error to the VIP about the backend side",
            &to_vip,
            fx.fx0,
            XDP_PASS,
            &to_vip,
        );
        // sent to an address that is neither VIP nor SNAT
        let elsewhere = Packet::eth(backend_mac(1), FX1_MAC)
            .ipv4(be4(1), Ipv4Addr::new(10, 0, 0, 1))
            .icmp_dest_unreachable(1, &quoted_be, quoted_be.len())
            .build();
        fx.expect(
            "error to a third address",
            &elsewhere,
            fx.fx1,
            XDP_PASS,
            &elsewhere,
        );
        assert_eq!(fx.stat(shared::STAT_ICMP_MISDIRECTED), 2);
        assert_eq!(fx.stat(shared::STAT_ICMP_TRANSLATED), 0);

        // the right error, with a quote cut after the ports (the quoted TCP checksum is not in
        // the IP packet) and 8 bytes of trailer after it in the frame
        let err = Packet::eth(backend_mac(1), FX1_MAC)
            .ipv4(be4(1), snat4())
            .icmp_dest_unreachable(1, &quoted_be, 28)
            .build();
        let mut trailed = err.clone();
        trailed.extend_from_slice(&[0xab; 8]);
        let (v, out) = fx.run(&trailed, fx.fx1);
        assert_eq!(v, XDP_REDIRECT, "translated");
        assert_eq!(
            &out[out.len() - 8..],
            &[0xab; 8],
            "the trailer is left alone"
        );
        ParsedPacket::parse(&out[..out.len() - 8])
            .unwrap()
            .verify_checksums()
            .unwrap_or_else(|e| panic!("translated error with a trailer: {e}"));
        assert_eq!(fx.stat(shared::STAT_ICMP_TRANSLATED), 1);
    });
}

/// A reset to a VIP without a flow is dropped and counted; a reset Blixt sends for a segment
/// that came to a group MAC leaves from the interface's own MAC.
#[test]
fn stray_resets_are_counted_and_resets_leave_from_the_interface() {
    let mut snap = one_backend();
    with_fixture(&snap, node(1024, 32767), |fx| {
        let rst = Packet::eth(CLIENT_MAC, FX0_MAC)
            .ipv4(client4(), vip4())
            .tcp(47300, 80)
            .flags(TcpFlags::RST)
            .build();
        assert_eq!(fx.run(&rst, fx.fx0).0, XDP_DROP);
        assert_eq!(fx.stat(shared::STAT_STRAY_RST), 1);
    });
    for f in &mut snap.frontends {
        f.backends.clear();
        f.reject_weight = 1;
    }
    with_fixture(&snap, node(1024, 32767), |fx| {
        let group = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
        let syn = Packet::eth(CLIENT_MAC, group)
            .ipv4(client4(), vip4())
            .tcp(47301, 80)
            .flags(TcpFlags::SYN)
            .build();
        let (v, out) = fx.run(&syn, fx.fx0);
        assert_eq!(v, XDP_TX, "reset");
        let p = ParsedPacket::parse(&out).unwrap();
        assert_eq!(p.src_mac(), Some(FX0_MAC), "from the interface's MAC");
        assert_eq!(p.dst_mac(), Some(CLIENT_MAC));
    });
}

/// Solicitations RFC 4861 7.1.1 says to discard are left to the stack, not answered.
#[test]
fn invalid_neighbour_solicitations_are_not_answered() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        let snm: Ipv6Addr = "ff02::1:ff00:10".parse().unwrap();
        let mut body = vip6().octets().to_vec();
        body.extend_from_slice(&[1, 1]);
        body.extend_from_slice(&CLIENT_MAC);
        let ns = |body: &[u8]| {
            Packet::eth(CLIENT_MAC, [0x33, 0x33, 0xff, 0, 0, 0x10])
                .ipv6(client6(), snm)
                .hop_limit(255)
                .icmpv6(135, 0, [0; 4])
                .payload(body)
                .build()
        };
        let mut bad_sum = ns(&body);
        bad_sum[56] ^= 0x01; // ICMPv6 checksum at 54 + 2
        let truncated = ns(&body[..12]); // 20 bytes of message: the target is cut
        let mut odd_options = ns(&body);
        odd_options.truncate(odd_options.len() - 2);
        put16(&mut odd_options, 18, 30);
        let dad_to_vip = Packet::eth(CLIENT_MAC, [0x33, 0x33, 0, 0, 0, 0x10])
            .ipv6(Ipv6Addr::UNSPECIFIED, vip6())
            .hop_limit(255)
            .icmpv6(135, 0, [0; 4])
            .payload(&vip6().octets())
            .build();
        let mut zero_option = vip6().octets().to_vec();
        zero_option.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        let zero_option = ns(&zero_option);
        let dad_to_group = Packet::eth(CLIENT_MAC, [0x33, 0x33, 0xff, 0, 0, 0x10])
            .ipv6(Ipv6Addr::UNSPECIFIED, "ff02::2:ff00:10".parse().unwrap())
            .hop_limit(255)
            .icmpv6(135, 0, [0; 4])
            .payload(&vip6().octets())
            .build();
        let dad_with_source = Packet::eth(CLIENT_MAC, [0x33, 0x33, 0xff, 0, 0, 0x10])
            .ipv6(Ipv6Addr::UNSPECIFIED, snm)
            .hop_limit(255)
            .icmpv6(135, 0, [0; 4])
            .payload(&body)
            .build();
        for (what, pkt) in [
            ("bad checksum", &bad_sum),
            ("truncated", &truncated),
            ("options not in 8-byte units", &odd_options),
            ("from :: not to a solicited-node address", &dad_to_vip),
            ("an option of length 0", &zero_option),
            (
                "from :: to a group that is not solicited-node",
                &dad_to_group,
            ),
            ("from :: with a source link-layer address", &dad_with_source),
        ] {
            let (v, out) = fx.run(pkt, fx.fx0);
            assert_eq!((v, &out), (XDP_PASS, pkt), "{what}");
        }
        assert_eq!(fx.stat(shared::STAT_NDP_REPLY), 0);
        // and the valid one still is
        assert_eq!(fx.run(&ns(&body), fx.fx0).0, XDP_TX);
    });
}

/// Conntrack state follows the TCP handshake: a flow is ESTABLISHED (hours of idle timeout)
/// only once the client acknowledged the backend's answer, so SYN floods whose SYN-ACKs are
/// never acknowledged and floods of bare ACKs leave only NEW entries (the short timeout). A
/// mid-stream segment (state lost) still recovers its flow once the backend answers.
#[test]
fn tcp_state_follows_the_handshake() {
    with_fixture(&one_backend(), node(1024, 32767), |fx| {
        let from_client = |sport: u16, flags: TcpFlags| {
            Packet::eth(CLIENT_MAC, FX0_MAC)
                .ipv4(client4(), vip4())
                .tcp(sport, 80)
                .flags(flags)
                .build()
        };
        let from_backend = |port: u16, flags: TcpFlags| {
            Packet::eth(backend_mac(1), FX1_MAC)
                .ipv4(be4(1), snat4())
                .tcp(8080, port)
                .flags(flags)
                .build()
        };
        let keys = |fx: &mut Fx, sport: u16, port: u16| {
            let fwd = FlowKey::new(client4().into(), sport, vip4().into(), 80, 6);
            let rev = FlowKey::new(be4(1).into(), 8080, snat4().into(), port, 6);
            (fx.ct(&fwd).unwrap().state, fx.ct(&rev).unwrap().state)
        };
        let open = |fx: &mut Fx, sport: u16| {
            let (v, out) = fx.run(&from_client(sport, TcpFlags::SYN), fx.fx0);
            assert_eq!(v, XDP_REDIRECT);
            ParsedPacket::parse(&out).unwrap().src_port().unwrap()
        };
        let new = shared::CT_NEW;

        // the whole handshake
        let p = open(fx, 48000);
        fx.run(&from_backend(p, TcpFlags::SYN | TcpFlags::ACK), fx.fx1);
        assert_eq!(
            keys(fx, 48000, p),
            (new, new),
            "answered, not yet acknowledged"
        );
        fx.run(&from_client(48000, TcpFlags::ACK), fx.fx0);
        assert_eq!(keys(fx, 48000, p).0, CT_ESTABLISHED, "client acknowledged");
        fx.run(&from_backend(p, TcpFlags::ACK), fx.fx1);
        assert_eq!(keys(fx, 48000, p), (CT_ESTABLISHED, CT_ESTABLISHED));

        // a blind ACK after a SYN nobody answered establishes nothing
        let p = open(fx, 48001);
        fx.run(&from_client(48001, TcpFlags::ACK), fx.fx0);
        assert_eq!(
            keys(fx, 48001, p),
            (new, new),
            "SYN, then ACK without an answer"
        );

        // a SYN-ACK nobody acknowledges: still NEW on both sides
        let p = open(fx, 48002);
        fx.run(&from_backend(p, TcpFlags::SYN | TcpFlags::ACK), fx.fx1);
        assert_eq!(keys(fx, 48002, p), (new, new), "SYN-ACK unacknowledged");

        // a bare ACK without state: tracked as NEW, established once the backend answers
        let (v, out) = fx.run(&from_client(48003, TcpFlags::ACK), fx.fx0);
        assert_eq!(v, XDP_REDIRECT, "mid-stream segment forwarded");
        let p = ParsedPacket::parse(&out).unwrap().src_port().unwrap();
        assert_eq!(fx.stat(shared::STAT_CT_MISS_MIDSTREAM), 1);
        assert_eq!(
            keys(fx, 48003, p),
            (new, new),
            "one ACK establishes nothing"
        );
        fx.run(&from_client(48003, TcpFlags::ACK), fx.fx0);
        assert_eq!(keys(fx, 48003, p), (new, new), "nor do more");
        fx.run(&from_backend(p, TcpFlags::ACK), fx.fx1);
        fx.run(&from_client(48003, TcpFlags::ACK), fx.fx0);
        assert_eq!(
            keys(fx, 48003, p),
            (CT_ESTABLISHED, CT_ESTABLISHED),
            "the backend answered: the flow is recovered"
        );
    });
}
