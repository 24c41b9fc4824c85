//! Suite 1: per-packet cost of the load balancer in the kernel, through BPF_PROG_TEST_RUN,
//! at both hooks: XDP (`blixt_lb`) and TC ingress (`blixt_lb_tc`, TC mode).
//!
//! Every path is measured two ways, each against an empty program of the same hook (and, at
//! XDP, a parse-only floor) on the same packets, interleaved round by round so that noise from
//! the shared machine hits all of them alike:
//!
//! - **hot loop**: one BPF_PROG_TEST_RUN with a large repeat count through the wrappers of
//!   bench_wrap.bpf.c, which restore the packet on every iteration (the repeat loop reuses one
//!   buffer: without the restore, iteration 2 onwards would see the already rewritten packet)
//!   and, for new-flow paths, stamp a never-seen flow into it. The kernel times the loop itself.
//!   Blixt's cost is `wrapped(lb) - wrapped(empty)` of its hook, the floor's `wrapped(floor) -
//!   wrapped(empty)`, so the wrapper's own work cancels out.
//! - **per call**: repeat = 1, many syscalls, timed from user space (so including the syscall
//!   and the test run's set-up), on the real `blixt_lb` and `blixt_lb_tc`.
//!
//! The unresolved-neighbour paths (a backend without a neighbour entry) cost two passes in XDP
//! mode without metadata (`neigh_via_meta` = 0): XDP passes the packet up untouched, and
//! `blixt_lb_tc` on TC ingress forwards it with `bpf_redirect_neigh`. Both passes are measured,
//! the TC one on exactly the packets (flows) the XDP one passed up; in TC mode it is one pass.
//!
//! Every run is checked: each iteration's verdict (the wrappers count them), the dataplane's
//! counters (packets, new flows, drop reasons) and the conntrack size move exactly as the path
//! named implies, and the wrapped program's last output equals the real program's output for
//! the same input.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};
use blixt_bpf::shared::{STAT_CT_INSERT_FAILED, STAT_NAMES, STAT_SNAT_EXHAUSTED};
use blixt_bpf::testing::{Packet, ParsedPacket, TcpFlags};

use blixt_bpf::shared::STAT_FIB_NO_NEIGH;

use crate::env::{
    self, backend_mac, client4, client6, hook_verdict_name, node4, snat4, snat6, tc_verdict,
    verdict_name, vip4, vip4_unresolved, vip6, Counts, Env, Hook, Target, BACKEND_PORT,
    CLIENT_IF_MAC, CLIENT_MAC, TCP_PORT, TC_ACT_OK, TC_ACT_REDIRECT, UDP_PORT, XDP_PASS,
    XDP_REDIRECT, XDP_TX,
};
use crate::stats::Summary;
use crate::wrap::Vary;

/// Sizes of the suite.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sizes {
    /// Rounds per path; each round measures empty, floor and Blixt once per method.
    pub rounds: usize,
    /// Iterations of one hot-loop run on a path with state (established, reply, pass).
    pub hot_repeat: u32,
    /// Iterations of one hot-loop run on a new-flow path (each creates a flow).
    pub new_flow_repeat: u32,
    /// Calls of one per-call batch.
    pub calls: usize,
    /// Calls of one per-call batch on a new-flow path.
    pub new_flow_calls: usize,
    /// Conntrack capacity (entries; a flow takes two). The dataplane's default is 262144.
    pub conntrack_entries: u32,
    /// Backends per frontend. Full-NAT allocates source ports per backend, so this sets how
    /// crowded the port space is when conntrack is full; see [`Path::NewTcpFull`].
    pub backends: u8,
    /// Milliseconds of hot loop to profile with `perf` per path and wrapper (0: no profile).
    pub profile_ms: u64,
}

impl Sizes {
    pub fn for_mode(mode: crate::Mode) -> Sizes {
        match mode {
            crate::Mode::Full => Sizes {
                rounds: 9,
                hot_repeat: 1_000_000,
                new_flow_repeat: 16_384,
                calls: 20_000,
                new_flow_calls: 16_384,
                conntrack_entries: 262_144,
                backends: 32,
                profile_ms: 800,
            },
            crate::Mode::Quick => Sizes {
                rounds: 3,
                hot_repeat: 200_000,
                new_flow_repeat: 8_192,
                calls: 5_000,
                new_flow_calls: 8_192,
                conntrack_entries: 262_144,
                backends: 32,
                profile_ms: 200,
            },
            crate::Mode::Tiny => Sizes {
                rounds: 1,
                hot_repeat: 300,
                new_flow_repeat: 64,
                calls: 40,
                new_flow_calls: 40,
                conntrack_entries: 4_096,
                backends: 4,
                profile_ms: 0,
            },
        }
    }
}

/// The paths of the load balancer the suite measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    NonVip,
    TcpEstablished,
    TcpReply,
    UdpEstablished,
    Tcp6Established,
    TcpEstablishedUnresolved,
    TcpNew,
    UdpNew,
    TcpNewUnresolved,
    NewTcpFull,
}

impl Path {
    /// In the order they run: paths on a few fixed flows first, new flows after, the full
    /// table last (it leaves conntrack full).
    pub const ALL: [Path; 10] = [
        Path::NonVip,
        Path::TcpEstablished,
        Path::TcpReply,
        Path::UdpEstablished,
        Path::Tcp6Established,
        Path::TcpEstablishedUnresolved,
        Path::TcpNew,
        Path::UdpNew,
        Path::TcpNewUnresolved,
        Path::NewTcpFull,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Path::NonVip => "non_vip_pass",
            Path::TcpEstablished => "tcp_established",
            Path::TcpReply => "tcp_reply",
            Path::UdpEstablished => "udp_established",
            Path::Tcp6Established => "tcp6_established",
            Path::TcpEstablishedUnresolved => "tcp_established_unresolved",
            Path::TcpNew => "tcp_new_flow",
            Path::UdpNew => "udp_new_flow",
            Path::TcpNewUnresolved => "tcp_new_flow_unresolved",
            Path::NewTcpFull => "tcp_new_flow_ct_full",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Path::NonVip => "non-VIP traffic, passed to the stack",
            Path::TcpEstablished => "established TCP, client to backend",
            Path::TcpReply => "TCP reply, backend to client (reverse NAT)",
            Path::UdpEstablished => "established UDP flow",
            Path::Tcp6Established => "established TCP over IPv6",
            Path::TcpEstablishedUnresolved => {
                "established TCP, backend's next hop unresolved (XDP: passes it up)"
            }
            Path::TcpNew => "new TCP flow (SYN), conntrack nearly empty",
            Path::UdpNew => "new UDP flow, conntrack nearly empty",
            Path::TcpNewUnresolved => {
                "new TCP flow (SYN), backend's next hop unresolved (XDP: passes it up)"
            }
            Path::NewTcpFull => "new TCP flow (SYN), conntrack full (every flow evicts)",
        }
    }

    /// A label for plots.
    pub fn short(self) -> &'static str {
        match self {
            Path::NonVip => "non-VIP pass",
            Path::TcpEstablished => "TCP established",
            Path::TcpReply => "TCP reply (reverse NAT)",
            Path::UdpEstablished => "UDP established",
            Path::Tcp6Established => "TCP/IPv6 established",
            Path::TcpEstablishedUnresolved => "TCP established, next hop unresolved",
            Path::TcpNew => "TCP new flow (SYN)",
            Path::UdpNew => "UDP new flow",
            Path::TcpNewUnresolved => "TCP new flow, next hop unresolved",
            Path::NewTcpFull => "TCP new flow, conntrack full",
        }
    }

    pub fn from_id(id: &str) -> Option<Path> {
        Path::ALL.into_iter().find(|p| p.id() == id)
    }

    pub fn is_new_flow(self) -> bool {
        matches!(
            self,
            Path::TcpNew | Path::UdpNew | Path::TcpNewUnresolved | Path::NewTcpFull
        )
    }

    /// Paths to a backend whose next hop the kernel has not resolved: XDP (without metadata)
    /// passes the packet up and `blixt_lb_tc` forwards it in a second pass.
    pub fn is_unresolved(self) -> bool {
        matches!(
            self,
            Path::TcpEstablishedUnresolved | Path::TcpNewUnresolved
        )
    }

    /// New-flow paths that start every run from an empty conntrack.
    fn clears_conntrack(self) -> bool {
        matches!(self, Path::TcpNew | Path::UdpNew | Path::TcpNewUnresolved)
    }
}

/// Series name of the TC pass that follows XDP's on unresolved-neighbour paths: `blixt_lb_tc`
/// (its wrapper, per call the real program) on the very packets XDP passed up.
pub const TC_AFTER_XDP: &str = "tc_after_xdp";

/// One measured series: a target, or the TC pass after XDP's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Target(Target),
    TcAfterXdp,
}

impl Run {
    fn name(self) -> &'static str {
        match self {
            Run::Target(t) => t.name(),
            Run::TcAfterXdp => TC_AFTER_XDP,
        }
    }

    /// The program that runs.
    fn target(self) -> Target {
        match self {
            Run::Target(t) => t,
            Run::TcAfterXdp => Target::TcLb,
        }
    }

    /// Index into per-series arrays.
    fn slot(self) -> usize {
        match self {
            Run::Target(t) => t as usize,
            Run::TcAfterXdp => Target::ALL.len(),
        }
    }
}

/// Number of [`Run::slot`]s.
const RUN_SLOTS: usize = Target::ALL.len() + 1;

/// Calls of one program in a row before the next program's turn (per-call method).
const PER_CALL_CHUNK: usize = 50;

/// What one path's runs must show.
#[derive(Debug, Clone)]
struct Case {
    path: Path,
    packet: Vec<u8>,
    ifindex: u32,
    vary: Option<Vary>,
    /// Verdict of the XDP load balancer on every iteration.
    verdict: u32,
    /// Verdict of the TC load balancer on every iteration (TC mode, and the second pass).
    tc_verdict: u32,
}

/// How the dataplane's counters must move during `n` packets of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Expect {
    /// Packets counted for backends.
    packets: u64,
    new_flows: u64,
    /// `fib_no_neigh`: FIB lookups that found no neighbour entry.
    no_neigh: u64,
    /// Conntrack entries added.
    conntrack: u64,
}

impl std::ops::Add for Expect {
    type Output = Expect;
    fn add(self, o: Expect) -> Expect {
        Expect {
            packets: self.packets + o.packets,
            new_flows: self.new_flows + o.new_flows,
            no_neigh: self.no_neigh + o.no_neigh,
            conntrack: self.conntrack + o.conntrack,
        }
    }
}

/// What `n` packets of `case` through `run` do to the counters. A load balancer counts a
/// packet for its backend once it has chosen it, even when XDP then passes the packet up for
/// the TC pass (which counts it again).
fn expect(case: &Case, run: Run, n: u64) -> Expect {
    let t = run.target();
    if !t.is_lb() {
        return Expect::default();
    }
    let forwarded = case.verdict == XDP_REDIRECT || case.path.is_unresolved();
    let new_flow = case.path.is_new_flow() && run != Run::TcAfterXdp;
    Expect {
        packets: if forwarded { n } else { 0 },
        new_flows: if new_flow { n } else { 0 },
        no_neigh: if case.path.is_unresolved() { n } else { 0 },
        conntrack: if new_flow { 2 * n } else { 0 },
    }
}

/// One path's measurements, per round.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PathSamples {
    /// Hot loop: kernel ns per iteration of each wrapper, by target name (and
    /// [`TC_AFTER_XDP`] on unresolved-neighbour paths).
    pub hot: BTreeMap<String, Vec<f64>>,
    /// Per call: user-space wall ns per call, by target name.
    pub wall: BTreeMap<String, Vec<f64>>,
    /// Per call: the kernel's reported ns per call, by target name.
    pub kernel: BTreeMap<String, Vec<f64>>,
    /// Conntrack insert failures during the measured Blixt runs (flows forwarded statelessly).
    pub ct_insert_failures: u64,
    /// Conntrack entries when the measurement started.
    pub conntrack_at_start: usize,
    /// Where the time goes, for Blixt's wrappers and the empty ones, at both hooks (when
    /// `perf` is there).
    pub profiles: Vec<crate::profile::Profile>,
}

/// Suite 1's results.
#[derive(Debug, Clone, Default)]
pub struct PacketCost {
    pub paths: Vec<(Path, PathSamples)>,
    pub programs: Vec<crate::results::ProgramStats>,
}

/// Runs suite 1 at `sizes`, printing progress to stderr.
pub fn run(sizes: Sizes, only: &[Path]) -> Result<PacketCost> {
    let mut sizes = sizes;
    if sizes.profile_ms > 0 && !crate::profile::available() {
        eprintln!("blixt-bench: perf not found: no profiles (apt-get install linux-perf)");
        sizes.profile_ms = 0;
    }
    let opts = env::EnvOptions {
        conntrack_entries: sizes.conntrack_entries,
        backends: sizes.backends,
        ring_size: blixt_core::maglev::DEFAULT_TABLE_SIZE,
    };
    env::with_env(opts, |env| {
        let mut out = PacketCost {
            programs: env.program_stats()?,
            ..PacketCost::default()
        };
        // New flows are stamped from 10.0.1.0 upwards (counter's high half in the address's
        // last two bytes), well away from the fixed flows' client 10.0.0.2.
        let mut seq: u64 = 1 << 24;
        for path in Path::ALL {
            if !only.is_empty() && !only.contains(&path) {
                continue;
            }
            eprintln!("blixt-bench: packet cost: {} ...", path.id());
            let samples = measure(env, &sizes, path, &mut seq)
                .with_context(|| format!("packet cost of {}", path.id()))?;
            out.paths.push((path, samples));
        }
        Ok(out)
    })
}

fn tcp4(src: std::net::Ipv4Addr, sport: u16, dst: std::net::Ipv4Addr, dport: u16) -> Packet4 {
    Packet4 {
        src,
        sport,
        dst,
        dport,
    }
}

/// Shorthand for the IPv4 packets of the suite.
struct Packet4 {
    src: std::net::Ipv4Addr,
    sport: u16,
    dst: std::net::Ipv4Addr,
    dport: u16,
}

impl Packet4 {
    fn tcp(&self, smac: [u8; 6], dmac: [u8; 6], flags: TcpFlags, payload: &[u8]) -> Vec<u8> {
        Packet::eth(smac, dmac)
            .ipv4(self.src, self.dst)
            .tcp(self.sport, self.dport)
            .flags(flags)
            .seq(1000)
            .ack(if flags.contains(TcpFlags::ACK) {
                5000
            } else {
                0
            })
            .window(64240)
            .payload(payload)
            .build()
    }
}

const PAYLOAD: &[u8] = &[0x61; 64];
/// A SYN's usual options: MSS, SACK permitted, timestamps, window scale.
const SYN_OPTIONS: &[u8] = &[
    2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
];

/// Where the wrapper stamps new flows in an untagged IPv4 frame without options: source port
/// (offset 34) and the last two bytes of the source address (offset 28).
fn vary_v4(pkt: &[u8]) -> Vary {
    assert!(
        pkt[12..14] == [0x08, 0x00] && pkt[14] == 0x45,
        "new-flow packets are untagged IPv4 without options"
    );
    Vary { lo: 34, hi: 28 }
}

fn ones_sum(mut sum: u32, bytes: &[u8]) -> u32 {
    for c in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `pkt` (untagged IPv4 without options, TCP or UDP) with its IPv4 and L4 checksums
/// recomputed: a stamped flow as a client would really send it. The load balancer updates
/// checksums incrementally, so it neither needs nor checks this; the output checks do.
fn with_valid_checksums(pkt: &[u8]) -> Vec<u8> {
    let mut p = pkt.to_vec();
    p[24..26].copy_from_slice(&[0, 0]);
    let c = fold(ones_sum(0, &p[14..34]));
    p[24..26].copy_from_slice(&c.to_be_bytes());
    let proto = p[23];
    let csum_at = 34 + if proto == 6 { 16 } else { 6 };
    p[csum_at..csum_at + 2].copy_from_slice(&[0, 0]);
    let l4_len = (p.len() - 34) as u32;
    let mut sum = ones_sum(0, &p[26..34]);
    sum += u32::from(proto) + l4_len;
    let c = fold(ones_sum(sum, &p[34..]));
    p[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    p
}

/// Runs a handshake (SYN, SYN-ACK, ACK) and the backend's first ACK through the real program so
/// that both directions of the flow are established; returns (backend address, SNAT port,
/// backend index).
fn establish(env: &mut Env, v6: bool, sport: u16) -> Result<(std::net::IpAddr, u16, u8)> {
    let (syn, ack) = if v6 {
        let b = |flags| {
            Packet::eth(CLIENT_MAC, CLIENT_IF_MAC)
                .ipv6(client6(), vip6())
                .tcp(sport, TCP_PORT)
                .flags(flags)
                .seq(999)
                .build()
        };
        (b(TcpFlags::SYN), b(TcpFlags::ACK))
    } else {
        let p = tcp4(client4(), sport, vip4(), TCP_PORT);
        (
            p.tcp(CLIENT_MAC, CLIENT_IF_MAC, TcpFlags::SYN, &[]),
            p.tcp(CLIENT_MAC, CLIENT_IF_MAC, TcpFlags::ACK, &[]),
        )
    };
    let (v, out) = env.call(Target::Lb, &syn, env.client_if)?;
    ensure!(
        v == XDP_REDIRECT,
        "SYN to the VIP: {} instead of XDP_REDIRECT",
        verdict_name(v)
    );
    let parsed = ParsedPacket::parse(&out).map_err(|e| anyhow::anyhow!("SYN output: {e:?}"))?;
    let be = parsed.dst_ip().context("SYN output has no IP")?;
    let port = parsed.src_port().context("SYN output has no port")?;
    let idx = backend_index(be)?;
    let synack = reply_packet(be, port, idx, TcpFlags::SYN | TcpFlags::ACK, &[]);
    let (v, _) = env.call(Target::Lb, &synack, env.backend_if)?;
    ensure!(v == XDP_REDIRECT, "SYN-ACK: {}", verdict_name(v));
    let (v, _) = env.call(Target::Lb, &ack, env.client_if)?;
    ensure!(v == XDP_REDIRECT, "ACK: {}", verdict_name(v));
    let backend_ack = reply_packet(be, port, idx, TcpFlags::ACK, &[]);
    let (v, _) = env.call(Target::Lb, &backend_ack, env.backend_if)?;
    ensure!(v == XDP_REDIRECT, "the backend's ACK: {}", verdict_name(v));
    Ok((be, port, idx))
}

fn backend_index(be: std::net::IpAddr) -> Result<u8> {
    match be {
        // 10.1.1.0/24: the unresolved frontend's backends
        std::net::IpAddr::V4(a)
            if a.octets()[..3] == [10, 1, 0] || a.octets()[..3] == [10, 1, 1] =>
        {
            Ok(a.octets()[3])
        }
        std::net::IpAddr::V6(a) if a.segments()[..7] == [0xfd01, 0, 0, 0, 0, 0, 0] => {
            Ok(a.segments()[7] as u8)
        }
        other => bail!("forwarded to {other}, not a benchmark backend"),
    }
}

/// A packet from backend `idx` back to the node's SNAT address and port.
fn reply_packet(
    be: std::net::IpAddr,
    port: u16,
    idx: u8,
    flags: TcpFlags,
    payload: &[u8],
) -> Vec<u8> {
    let eth = Packet::eth(backend_mac(idx), env::BACKEND_IF_MAC);
    match be {
        std::net::IpAddr::V4(b) => eth
            .ipv4(b, snat4())
            .tcp(BACKEND_PORT, port)
            .flags(flags)
            .seq(5000)
            .ack(1000)
            .payload(payload)
            .build(),
        std::net::IpAddr::V6(b) => eth
            .ipv6(b, snat6())
            .tcp(BACKEND_PORT, port)
            .flags(flags)
            .seq(5000)
            .ack(1000)
            .payload(payload)
            .build(),
    }
}

/// Sets the dataplane up for `path` and returns what to run.
fn prepare(env: &mut Env, sizes: &Sizes, path: Path, seq: &mut u64) -> Result<Case> {
    env.clear_conntrack()?;
    let fwd = TcpFlags::ACK | TcpFlags::PSH;
    let case = |packet: Vec<u8>, ifindex, vary, verdict| Case {
        path,
        packet,
        ifindex,
        vary,
        verdict,
        tc_verdict: tc_verdict(verdict),
    };
    // XDP passes these up; blixt_lb_tc forwards them with bpf_redirect_neigh
    let client_if = env.client_if;
    let unresolved = |packet: Vec<u8>, vary| Case {
        path,
        packet,
        ifindex: client_if,
        vary,
        verdict: XDP_PASS,
        tc_verdict: TC_ACT_REDIRECT,
    };
    Ok(match path {
        Path::NonVip => case(
            tcp4(client4(), 40000, node4(), 22).tcp(CLIENT_MAC, CLIENT_IF_MAC, fwd, PAYLOAD),
            env.client_if,
            None,
            XDP_PASS,
        ),
        Path::TcpEstablished | Path::TcpReply => {
            let (be, port, idx) = establish(env, false, 40000)?;
            if path == Path::TcpReply {
                case(
                    reply_packet(be, port, idx, fwd, PAYLOAD),
                    env.backend_if,
                    None,
                    XDP_REDIRECT,
                )
            } else {
                case(
                    tcp4(client4(), 40000, vip4(), TCP_PORT).tcp(
                        CLIENT_MAC,
                        CLIENT_IF_MAC,
                        fwd,
                        PAYLOAD,
                    ),
                    env.client_if,
                    None,
                    XDP_REDIRECT,
                )
            }
        }
        Path::Tcp6Established => {
            establish(env, true, 40001)?;
            let pkt = Packet::eth(CLIENT_MAC, CLIENT_IF_MAC)
                .ipv6(client6(), vip6())
                .tcp(40001, TCP_PORT)
                .flags(fwd)
                .seq(1000)
                .ack(5000)
                .window(64240)
                .payload(PAYLOAD)
                .build();
            case(pkt, env.client_if, None, XDP_REDIRECT)
        }
        Path::TcpEstablishedUnresolved => {
            let p = tcp4(client4(), 40002, vip4_unresolved(), TCP_PORT);
            // SYN, then ACK: XDP tracks the flow (to its backend), then passes each packet up
            for flags in [TcpFlags::SYN, TcpFlags::ACK] {
                let pkt = p.tcp(CLIENT_MAC, CLIENT_IF_MAC, flags, &[]);
                let (v, _) = env.call(Target::Lb, &pkt, env.client_if)?;
                ensure!(
                    v == XDP_PASS,
                    "{flags:?} to the unresolved backend's VIP: {} instead of XDP_PASS",
                    verdict_name(v)
                );
            }
            unresolved(p.tcp(CLIENT_MAC, CLIENT_IF_MAC, fwd, PAYLOAD), None)
        }
        Path::UdpEstablished => {
            let pkt = Packet::eth(CLIENT_MAC, CLIENT_IF_MAC)
                .ipv4(client4(), vip4())
                .udp(5353, UDP_PORT)
                .payload(PAYLOAD)
                .build();
            let (v, _) = env.call(Target::Lb, &pkt, env.client_if)?;
            ensure!(v == XDP_REDIRECT, "first UDP packet: {}", verdict_name(v));
            case(pkt, env.client_if, None, XDP_REDIRECT)
        }
        Path::TcpNew | Path::NewTcpFull => {
            let pkt = Packet::eth(CLIENT_MAC, CLIENT_IF_MAC)
                .ipv4(client4(), vip4())
                .tcp(40000, TCP_PORT)
                .flags(TcpFlags::SYN)
                .seq(1000)
                .window(64240)
                .options(SYN_OPTIONS)
                .build();
            let vary = vary_v4(&pkt);
            if path == Path::NewTcpFull {
                fill_conntrack(env, sizes, &pkt, vary, seq)?;
            }
            case(pkt, env.client_if, Some(vary), XDP_REDIRECT)
        }
        Path::UdpNew => {
            let pkt = Packet::eth(CLIENT_MAC, CLIENT_IF_MAC)
                .ipv4(client4(), vip4())
                .udp(5353, UDP_PORT)
                .payload(&PAYLOAD[..32])
                .build();
            let vary = vary_v4(&pkt);
            case(pkt, env.client_if, Some(vary), XDP_REDIRECT)
        }
        Path::TcpNewUnresolved => {
            let pkt = Packet::eth(CLIENT_MAC, CLIENT_IF_MAC)
                .ipv4(client4(), vip4_unresolved())
                .tcp(40000, TCP_PORT)
                .flags(TcpFlags::SYN)
                .seq(1000)
                .window(64240)
                .options(SYN_OPTIONS)
                .build();
            let vary = vary_v4(&pkt);
            unresolved(pkt, Some(vary))
        }
    })
}

/// Fills conntrack to capacity with real flows (the wrapped load balancer creating them), so
/// that every measured new flow has to evict.
fn fill_conntrack(
    env: &mut Env,
    sizes: &Sizes,
    pkt: &[u8],
    vary: Vary,
    seq: &mut u64,
) -> Result<()> {
    let cap = sizes.conntrack_entries;
    // two entries per flow, and a quarter more to be sure the LRU has cycled
    let flows = cap / 2 + cap / 8;
    let r = env.hot_loop(Target::Lb, pkt, Some(vary), *seq, env.client_if, flows)?;
    *seq = r.state.seq;
    ensure!(
        r.state.verdicts[XDP_REDIRECT as usize] == u64::from(flows),
        "filling conntrack: verdicts {:?}",
        r.state.verdicts
    );
    let len = env.conntrack_len();
    ensure!(
        len as f64 >= 0.9 * f64::from(cap),
        "conntrack holds {len} entries after {flows} new flows, capacity {cap}: not full"
    );
    Ok(())
}

/// Checks the counters moved as `want` says; returns the conntrack insert failures (allowed
/// on the full-table path only).
fn check_counts(case: &Case, want: Expect, before: &Counts, after: &Counts) -> Result<u64> {
    let packets = after.packets - before.packets;
    let new_flows = after.new_flows - before.new_flows;
    // a full table may leave a new flow without a free source port among those it probes: it
    // is refused (a reset, no backend packet) and counted, allowed on that path only
    let stat = |c: &Counts, i: u32| c.stats.get(i as usize).copied().unwrap_or(0);
    let refused = if case.path == Path::NewTcpFull {
        stat(after, STAT_SNAT_EXHAUSTED) - stat(before, STAT_SNAT_EXHAUSTED)
    } else {
        0
    };
    ensure!(
        packets + refused == want.packets,
        "the backends' packet counters moved by {packets} (and {refused} flows refused), not {}",
        want.packets
    );
    ensure!(
        new_flows + refused == want.new_flows,
        "{new_flows} new flows counted (and {refused} refused), not {}",
        want.new_flows
    );
    let mut insert_failed = 0;
    for (i, (a, b)) in after.stats.iter().zip(&before.stats).enumerate() {
        let d = a - b;
        if i as u32 == STAT_FIB_NO_NEIGH {
            ensure!(
                d == want.no_neigh,
                "fib_no_neigh moved by {d}, not {}",
                want.no_neigh
            );
            continue;
        }
        if d == 0 {
            continue;
        }
        if (i as u32 == STAT_CT_INSERT_FAILED || i as u32 == STAT_SNAT_EXHAUSTED)
            && case.path == Path::NewTcpFull
        {
            // reported, not fatal: a full table is where flows may go without state
            insert_failed += d;
            continue;
        }
        bail!(
            "counter {} moved by {d}",
            STAT_NAMES.get(i).copied().unwrap_or("?")
        );
    }
    Ok(insert_failed)
}

fn check_verdicts(what: &str, hook: Hook, counts: &[u64; 8], want: u32, n: u64) -> Result<()> {
    ensure!(
        counts[(want & 7) as usize] == n,
        "{what}: {} of {n} iterations returned {} (verdicts {counts:?})",
        counts[(want & 7) as usize],
        hook_verdict_name(hook, want)
    );
    Ok(())
}

/// The verdict counts of `case` at `t` as [`check_verdicts`] should see them: on the full-table
/// path a new flow may find no free source port and be refused with a reset, which XDP sends
/// with XDP_TX (TC redirects it, the same verdict as a forward); those count as the path's
/// verdict here, and the counters check them (`snat_exhausted`, see `check_counts`).
fn case_verdicts(case: &Case, t: Target, counts: &[u64; 8]) -> [u64; 8] {
    let mut c = *counts;
    if case.path == Path::NewTcpFull && t.hook() == Hook::Xdp {
        let want = (expected_verdict(case, t) & 7) as usize;
        c[want] += std::mem::take(&mut c[XDP_TX as usize]);
    }
    c
}

fn expected_verdict(case: &Case, t: Target) -> u32 {
    match t {
        Target::Empty => XDP_PASS,
        Target::Floor => XDP_TX,
        Target::Lb => case.verdict,
        Target::TcEmpty => TC_ACT_OK,
        Target::TcLb => case.tc_verdict,
    }
}

/// Checks the real program's output on `input` at `t`'s hook (`t` a load balancer): verdict,
/// and for forwarded packets that the output parses with correct checksums and went where the
/// path says.
fn check_output(env: &mut Env, case: &Case, t: Target, input: &[u8]) -> Result<Vec<u8>> {
    let want = expected_verdict(case, t);
    let (v, out) = env.call(t, input, case.ifindex)?;
    ensure!(
        v == want,
        "{}: {} instead of {}",
        t.name(),
        hook_verdict_name(t.hook(), v),
        hook_verdict_name(t.hook(), want)
    );
    if (t.hook() == Hook::Xdp && v == XDP_PASS) || (t.hook() == Hook::Tc && v == TC_ACT_OK) {
        ensure!(out == input, "passed packet was modified");
        return Ok(out);
    }
    let p = ParsedPacket::parse(&out).map_err(|e| anyhow::anyhow!("output: {e:?}"))?;
    p.verify_checksums()
        .map_err(|e| anyhow::anyhow!("output checksums: {e:?}"))?;
    let dst = p.dst_ip().context("output without IP")?;
    if case.ifindex == env.backend_if {
        ensure!(
            dst == std::net::IpAddr::from(client4()) || dst == std::net::IpAddr::from(client6()),
            "reply forwarded to {dst}, not the client"
        );
    } else {
        backend_index(dst)?;
    }
    Ok(out)
}

fn measure(env: &mut Env, sizes: &Sizes, path: Path, seq: &mut u64) -> Result<PathSamples> {
    let case = prepare(env, sizes, path, seq)?;
    if case.vary.is_none() {
        check_output(env, &case, Target::Lb, &case.packet)?;
        check_output(env, &case, Target::TcLb, &case.packet)?;
    }
    let mut s = PathSamples {
        conntrack_at_start: env.conntrack_len(),
        ..PathSamples::default()
    };
    let (repeat, calls) = if path.is_new_flow() {
        (sizes.new_flow_repeat, sizes.new_flow_calls)
    } else {
        (sizes.hot_repeat, sizes.calls)
    };
    // `n` packets of the case, stamped with flows seq.. (with valid checksums) when it varies
    let packets = |seq: &mut u64, n: usize| -> Vec<Vec<u8>> {
        let pkts: Vec<Vec<u8>> = (0..n as u64)
            .map(|i| {
                let mut p = case.packet.clone();
                if let Some(v) = case.vary {
                    v.stamp(&mut p, *seq + i);
                    p = with_valid_checksums(&p);
                }
                p
            })
            .collect();
        if case.vary.is_some() {
            *seq += n as u64;
        }
        pkts
    };
    // warm up every program, map and cache line once, unrecorded (a first run pays page
    // faults and cold instruction caches that no later run sees)
    for t in Target::ALL {
        if path.clears_conntrack() {
            env.clear_conntrack()?;
        }
        let r = env.hot_loop(
            t,
            &case.packet,
            case.vary,
            *seq,
            case.ifindex,
            repeat.min(1000),
        )?;
        *seq = r.state.seq;
        let pkts = packets(seq, calls.min(100));
        env.call_batch(t, &pkts, case.ifindex)?;
    }
    for round in 0..sizes.rounds {
        // rotate the order so that no target always runs first (cold) or last
        let mut order = Target::ALL;
        order.rotate_left(round % Target::ALL.len());
        for t in order {
            let first = *seq;
            hot_run(env, &case, Run::Target(t), repeat, first, round, &mut s)?;
            if case.vary.is_some() {
                *seq += u64::from(repeat);
            }
            if t == Target::Lb && path.is_unresolved() {
                // the TC pass of what XDP just passed up: the same packets, the same flows
                hot_run(env, &case, Run::TcAfterXdp, repeat, first, round, &mut s)?;
            }
        }
        // Per call: the programs take turns in small chunks, so that the shared machine's
        // noise (other processes, frequency changes) falls on all of them alike. The two load
        // balancers each get flows of their own (on new-flow paths the second would otherwise
        // find the first's); the empty programs and the floor run on the XDP one's packets.
        let xdp_pkts = packets(seq, calls);
        let tc_pkts = if case.vary.is_some() {
            packets(seq, calls)
        } else {
            xdp_pkts.clone()
        };
        let pkts_of = |t: Target| match t {
            Target::TcLb => &tc_pkts,
            _ => &xdp_pkts,
        };
        if path.clears_conntrack() {
            env.clear_conntrack()?;
        }
        let ct0 = if path.clears_conntrack() {
            env.conntrack_len() as u64
        } else {
            0
        };
        let before = env.counts()?;
        let mut wall: [Vec<f64>; RUN_SLOTS] = Default::default();
        let mut kernel: [Vec<f64>; RUN_SLOTS] = Default::default();
        let mut verdicts = [[0u64; 8]; RUN_SLOTS];
        let mut runs = vec![];
        for t in order {
            runs.push(Run::Target(t));
            if t == Target::Lb && path.is_unresolved() {
                runs.push(Run::TcAfterXdp);
            }
        }
        for c in 0..calls.div_ceil(PER_CALL_CHUNK) {
            let range = c * PER_CALL_CHUNK..((c + 1) * PER_CALL_CHUNK).min(calls);
            for &run in &runs {
                let t = run.target();
                let chunk = match run {
                    Run::TcAfterXdp => &xdp_pkts[range.clone()],
                    Run::Target(t) => &pkts_of(t)[range.clone()],
                };
                let b = env.call_batch(t, chunk, case.ifindex)?;
                wall[run.slot()].push(b.wall_ns);
                kernel[run.slot()].push(b.kernel_ns);
                for (acc, v) in verdicts[run.slot()].iter_mut().zip(b.verdicts) {
                    *acc += v;
                }
            }
        }
        let after = env.counts()?;
        let mut want = Expect::default();
        for &run in &runs {
            let t = run.target();
            let what = format!("per-call runs of {}", run.name());
            let v = &verdicts[run.slot()];
            let v = case_verdicts(&case, t, v);
            check_verdicts(
                &what,
                t.hook(),
                &v,
                expected_verdict(&case, t),
                calls as u64,
            )?;
            want = want + expect(&case, run, calls as u64);
            // the median chunk: a chunk that shared its core with someone else's burst of
            // work is an outlier, not a slower load balancer
            s.wall
                .entry(run.name().into())
                .or_default()
                .push(Summary::of(&wall[run.slot()]).median);
            s.kernel
                .entry(run.name().into())
                .or_default()
                .push(Summary::of(&kernel[run.slot()]).median);
        }
        s.ct_insert_failures += check_counts(&case, want, &before, &after)
            .context("per-call runs of the load balancers")?;
        if path.clears_conntrack() {
            let len = env.conntrack_len() as u64;
            ensure!(
                len == ct0 + want.conntrack,
                "per-call runs: {} new flows left {len} conntrack entries",
                want.new_flows
            );
        }
    }
    if sizes.profile_ms > 0 {
        // perf, now and then, records nothing at all (it attaches late on a busy machine): one
        // more try, then the path goes without profiles
        let targets = [Target::Lb, Target::Empty, Target::TcLb, Target::TcEmpty];
        let mut got = None;
        for _ in 0..2 {
            got = profile(env, sizes, &case, &targets, seq).context("profiling the wrappers")?;
            if got.is_some() {
                break;
            }
        }
        match got {
            Some(p) => s.profiles.extend(p),
            None => eprintln!(
                "blixt-bench: packet cost: {}: perf recorded nothing, twice; no profile",
                path.id()
            ),
        }
    }
    Ok(s)
}

/// One hot-loop run of `run` on `case`, flows stamped from `first`, checked and recorded.
fn hot_run(
    env: &mut Env,
    case: &Case,
    run: Run,
    repeat: u32,
    first: u64,
    round: usize,
    s: &mut PathSamples,
) -> Result<()> {
    let t = run.target();
    let path = case.path;
    // a new-flow run starts from an empty table; the TC pass after XDP's needs XDP's flows
    let clear = path.clears_conntrack() && run == Run::Target(t) && t.is_lb();
    if clear {
        env.clear_conntrack()?;
    }
    // (counting walks the map: only where it is small and checked)
    let ct0 = if path.clears_conntrack() && t.is_lb() {
        env.conntrack_len() as u64
    } else {
        0
    };
    let before = env.counts()?;
    let r = env.hot_loop(t, &case.packet, case.vary, first, case.ifindex, repeat)?;
    let after = env.counts()?;
    let what = format!("hot loop of {}", run.name());
    ensure!(
        r.state.errors == 0,
        "{what}: {} iterations could not restore the packet",
        r.state.errors
    );
    let want_verdict = expected_verdict(case, t);
    check_verdicts(
        &what,
        t.hook(),
        &case_verdicts(case, t, &r.state.verdicts),
        want_verdict,
        repeat.into(),
    )?;
    if case.vary.is_some() {
        ensure!(
            r.state.seq == first + u64::from(repeat),
            "{what}: the wrapper stamped {} flows, not {repeat}",
            r.state.seq - first
        );
    }
    if t.is_lb() {
        let want = expect(case, run, repeat.into());
        s.ct_insert_failures +=
            check_counts(case, want, &before, &after).with_context(|| what.clone())?;
        if path.clears_conntrack() {
            let len = env.conntrack_len() as u64;
            ensure!(
                len == ct0 + want.conntrack,
                "{what}: {repeat} packets left {len} conntrack entries, not {}",
                ct0 + want.conntrack
            );
        }
        if round == 0 {
            // the wrapped load balancer's last output must be what the real program makes of
            // the same input
            let mut last = case.packet.clone();
            if let Some(v) = case.vary {
                v.stamp(&mut last, first + u64::from(repeat) - 1);
                // the stamp leaves checksums stale (the program does not care); check the
                // rewrite on the same flow with valid ones
                check_output(env, case, t, &with_valid_checksums(&last))?;
            }
            let (v, want) = env.call(t, &last, case.ifindex)?;
            ensure!(
                r.out == want && r.verdict == v && v == want_verdict,
                "{what}: the wrapped program's output differs from {}'s",
                match t.hook() {
                    Hook::Xdp => blixt_bpf::loader::LB_PROGRAM,
                    Hook::Tc => blixt_bpf::loader::LB_TC_PROGRAM,
                }
            );
        }
    } else {
        ensure!(after == before, "{what}: the dataplane's counters moved");
    }
    s.hot
        .entry(run.name().into())
        .or_default()
        .push(r.kernel_ns);
    Ok(())
}

/// Runs each target's wrapper on `case`, one after the other, for about `sizes.profile_ms` of
/// kernel time each, under one `perf record`, and attributes each wrapper's samples (perf
/// names the BPF program a sample is in); `None` when perf recorded no sample at all.
fn profile(
    env: &mut Env,
    sizes: &Sizes,
    case: &Case,
    targets: &[Target],
    seq: &mut u64,
) -> Result<Option<Vec<crate::profile::Profile>>> {
    let budget = sizes.profile_ms as f64 * 1e6;
    let rec = crate::profile::Recorder::start(case.path.id())?;
    let mut ns = Vec::new();
    for &t in targets {
        // Few long runs: every XDP run with a repeat count swaps the program into the kernel's
        // XDP dispatcher and out again, each swap waiting for an RCU grace period
        // (milliseconds of wall time, none of it in the figures). A load balancer that starts
        // each run from an empty table keeps the new-flow repeat count (the table stays nearly
        // empty); on the full table a run of new flows only evicts.
        let repeat = match (t.is_lb(), case.path) {
            (true, p) if p.clears_conntrack() => sizes.new_flow_repeat,
            (true, p) if p.is_new_flow() => sizes.new_flow_repeat.saturating_mul(8),
            _ => sizes.hot_repeat,
        };
        let (mut spent, mut iters) = (0.0, 0.0);
        while spent < budget {
            if case.path.clears_conntrack() && t.is_lb() {
                env.clear_conntrack()?;
            }
            let r = env.hot_loop(t, &case.packet, case.vary, *seq, case.ifindex, repeat)?;
            if case.vary.is_some() {
                *seq = r.state.seq;
            }
            ensure!(r.state.errors == 0, "restore errors while profiling");
            check_verdicts(
                "profiled run",
                t.hook(),
                &case_verdicts(case, t, &r.state.verdicts),
                expected_verdict(case, t),
                repeat.into(),
            )?;
            spent += r.kernel_ns * f64::from(repeat);
            iters += f64::from(repeat);
        }
        ns.push(spent / iters);
    }
    let stacks = rec.finish()?;
    if stacks.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for (&t, ns_per_iteration) in targets.iter().zip(ns) {
        let prog = t.wrapper_name();
        let (samples, shares) = crate::profile::attribute(&stacks, prog).with_context(|| {
            let mut progs: BTreeMap<&str, usize> = BTreeMap::new();
            for f in stacks
                .iter()
                .flatten()
                .filter(|f| f.starts_with("bpf_prog_"))
            {
                *progs.entry(f.as_str()).or_default() += 1;
            }
            format!(
                "perf recorded no sample inside {prog} ({} samples; BPF programs seen: \
                 {progs:?})",
                stacks.len()
            )
        })?;
        out.push(crate::profile::Profile {
            path: case.path.id().into(),
            target: t.name().into(),
            samples,
            shares,
            ns_per_iteration,
        });
    }
    Ok(Some(out))
}

/// Paired per-round differences `a - b` of two series.
pub fn diff(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

impl PathSamples {
    fn series(m: &BTreeMap<String, Vec<f64>>, t: Target) -> &[f64] {
        m.get(t.name()).map_or(&[], Vec::as_slice)
    }

    pub fn hot(&self, t: Target) -> &[f64] {
        Self::series(&self.hot, t)
    }

    pub fn wall(&self, t: Target) -> &[f64] {
        Self::series(&self.wall, t)
    }

    pub fn kernel(&self, t: Target) -> &[f64] {
        Self::series(&self.kernel, t)
    }

    /// Hot loop, ns per packet above the empty wrapper: (Blixt, floor).
    pub fn hot_above_empty(&self) -> (Summary, Summary) {
        (
            Summary::of(&diff(self.hot(Target::Lb), self.hot(Target::Empty))),
            Summary::of(&diff(self.hot(Target::Floor), self.hot(Target::Empty))),
        )
    }

    pub fn hot_above_floor(&self) -> Summary {
        Summary::of(&diff(self.hot(Target::Lb), self.hot(Target::Floor)))
    }

    /// The TC pass after XDP's (unresolved-neighbour paths), hot loop, per round.
    pub fn hot_tc_after_xdp(&self) -> &[f64] {
        self.hot.get(TC_AFTER_XDP).map_or(&[], Vec::as_slice)
    }

    /// Per call, the TC pass after XDP's, per round.
    pub fn wall_tc_after_xdp(&self) -> &[f64] {
        self.wall.get(TC_AFTER_XDP).map_or(&[], Vec::as_slice)
    }

    /// Hot loop, TC mode: ns per packet of `blixt_lb_tc` above the empty TC wrapper, per round.
    pub fn tc_hot_rounds(&self) -> Vec<f64> {
        Self::tc_mode_rounds(&self.hot)
    }

    /// Hot loop, XDP mode: ns per packet above the empty XDP wrapper, per round; on
    /// unresolved-neighbour paths plus the TC pass above the empty TC wrapper.
    pub fn xdp_mode_hot_rounds(&self, path: Path) -> Vec<f64> {
        Self::xdp_mode_rounds(&self.hot, path)
    }

    /// Per call above the empty program of the hook, TC mode, per round.
    pub fn tc_wall_rounds(&self) -> Vec<f64> {
        Self::tc_mode_rounds(&self.wall)
    }

    /// Per call above the empty program, XDP mode (with the TC pass where there is one).
    pub fn xdp_mode_wall_rounds(&self, path: Path) -> Vec<f64> {
        Self::xdp_mode_rounds(&self.wall, path)
    }

    fn tc_mode_rounds(m: &BTreeMap<String, Vec<f64>>) -> Vec<f64> {
        diff(
            Self::series(m, Target::TcLb),
            Self::series(m, Target::TcEmpty),
        )
    }

    fn xdp_mode_rounds(m: &BTreeMap<String, Vec<f64>>, path: Path) -> Vec<f64> {
        let xdp = diff(Self::series(m, Target::Lb), Self::series(m, Target::Empty));
        if !path.is_unresolved() {
            return xdp;
        }
        let after = m.get(TC_AFTER_XDP).map_or(&[][..], Vec::as_slice);
        let tc = diff(after, Self::series(m, Target::TcEmpty));
        xdp.iter().zip(&tc).map(|(a, b)| a + b).collect()
    }
}

/// Suite name in results.json.
pub const SUITE: &str = "1 per-packet cost";

/// The goal for established TCP, ns above the floor (hot loop).
pub const GOAL_ESTABLISHED_ABOVE_FLOOR: f64 = 120.0;
/// The goal for a new TCP flow with an empty conntrack, ns per packet.
pub const GOAL_NEW_FLOW: f64 = 600.0;
/// The goal for TC mode ("kernel support"): at most this many times XDP mode's cost per packet.
pub const GOAL_TC_OVER_XDP: f64 = 1.5;

impl PacketCost {
    /// The suite's metrics, named `<path>.<method>.<quantity>`.
    pub fn metrics(&self, machine: &crate::results::Machine) -> Vec<crate::results::Metric> {
        use crate::results::Metric;
        let mut out = Vec::new();
        for (path, s) in &self.paths {
            let id = path.id();
            let title = path.title();
            let (lb, floor) = s.hot_above_empty();
            let mut m = Metric::new(
                SUITE,
                &format!("{id}.hot_loop.ns_per_packet"),
                "ns/packet",
                lb,
                &[("floor", floor)],
                &format!(
                    "{title}: hot loop (one test run, many iterations, packet restored by the \
                     wrapper each time), kernel-timed; the empty wrapper's time subtracted, so \
                     this is the cost above an empty program"
                ),
                machine,
            );
            if *path == Path::TcpNew {
                m = m.with_goal(
                    &format!("new TCP flow, empty conntrack: <= {GOAL_NEW_FLOW} ns"),
                    lb.median <= GOAL_NEW_FLOW,
                );
            }
            out.push(m);
            let above = s.hot_above_floor();
            let mut m = Metric::new(
                SUITE,
                &format!("{id}.hot_loop.above_floor"),
                "ns/packet",
                above,
                &[],
                &format!("{title}: hot loop, Blixt minus the parse-only floor (paired per round)"),
                machine,
            );
            if *path == Path::TcpEstablished {
                m = m.with_goal(
                    &format!(
                        "established TCP: <= {GOAL_ESTABLISHED_ABOVE_FLOOR} ns above the floor"
                    ),
                    above.median <= GOAL_ESTABLISHED_ABOVE_FLOOR,
                );
            }
            out.push(m);
            out.push(Metric::new(
                SUITE,
                &format!("{id}.hot_loop.wrapped"),
                "ns/iteration",
                Summary::of(s.hot(Target::Lb)),
                &[
                    ("floor", Summary::of(s.hot(Target::Floor))),
                    ("empty", Summary::of(s.hot(Target::Empty))),
                ],
                &format!(
                    "{title}: hot loop as the kernel reports it, wrapper included (restore the \
                     packet, stamp a flow, count the verdict); 'empty' is the wrapper's own cost"
                ),
                machine,
            ));
            out.push(Metric::new(
                SUITE,
                &format!("{id}.per_call.ns_per_call"),
                "ns/call",
                Summary::of(s.wall(Target::Lb)),
                &[
                    ("floor", Summary::of(s.wall(Target::Floor))),
                    ("empty", Summary::of(s.wall(Target::Empty))),
                ],
                &format!(
                    "{title}: one BPF_PROG_TEST_RUN per packet (repeat = 1), wall clock in user \
                     space, syscall included"
                ),
                machine,
            ));
            out.push(Metric::new(
                SUITE,
                &format!("{id}.per_call.above_empty"),
                "ns/packet",
                Summary::of(&diff(s.wall(Target::Lb), s.wall(Target::Empty))),
                &[(
                    "floor",
                    Summary::of(&diff(s.wall(Target::Floor), s.wall(Target::Empty))),
                )],
                &format!("{title}: per call, minus the empty program's per-call time"),
                machine,
            ));
            out.push(Metric::new(
                SUITE,
                &format!("{id}.per_call.above_floor"),
                "ns/packet",
                Summary::of(&diff(s.wall(Target::Lb), s.wall(Target::Floor))),
                &[],
                &format!("{title}: per call, minus the floor's per-call time"),
                machine,
            ));
            out.push(Metric::new(
                SUITE,
                &format!("{id}.per_call.kernel"),
                "ns/call",
                Summary::of(s.kernel(Target::Lb)),
                &[
                    ("floor", Summary::of(s.kernel(Target::Floor))),
                    ("empty", Summary::of(s.kernel(Target::Empty))),
                ],
                &format!(
                    "{title}: per call, the run time the kernel reports for each call (whole \
                     ns, program only), averaged"
                ),
                machine,
            ));
            if s.hot(Target::TcLb).is_empty() {
                continue;
            }
            out.extend(tc_metrics(*path, s, machine));
        }
        out
    }
}

/// TC mode's metrics on one path, next to XDP mode's (names `<path>.tc.*`, and
/// `<path>.xdp_then_tc.*` for XDP's two passes on unresolved-neighbour paths).
fn tc_metrics(
    path: Path,
    s: &PathSamples,
    machine: &crate::results::Machine,
) -> Vec<crate::results::Metric> {
    use crate::results::Metric;
    let id = path.id();
    let title = path.title();
    let mut out = Vec::new();
    let tc = Summary::of(&s.tc_hot_rounds());
    let xdp = Summary::of(&s.xdp_mode_hot_rounds(path));
    let xdp_what = if path.is_unresolved() {
        "XDP mode's two passes (XDP passes the packet up, blixt_lb_tc forwards it)"
    } else {
        "XDP mode"
    };
    let ratio = tc.median / xdp.median;
    out.push(
        Metric::new(
            SUITE,
            &format!("{id}.tc.hot_loop.ns_per_packet"),
            "ns/packet",
            tc,
            &[("xdp", xdp)],
            &format!(
                "{title}: TC mode, blixt_lb_tc in a hot loop (skb restored by the TC wrapper each \
                 time), the empty TC wrapper's time subtracted; 'xdp' is {xdp_what}, measured the \
                 same way in the same rounds"
            ),
            machine,
        )
        .with_goal(
            &format!("TC mode ≤ {GOAL_TC_OVER_XDP}x XDP mode per packet"),
            ratio <= GOAL_TC_OVER_XDP,
        ),
    );
    out.push(Metric::new(
        SUITE,
        &format!("{id}.tc.hot_loop.wrapped"),
        "ns/iteration",
        Summary::of(s.hot(Target::TcLb)),
        &[("empty", Summary::of(s.hot(Target::TcEmpty)))],
        &format!(
            "{title}: TC hot loop as the kernel reports it, wrapper included (restore the skb, \
             stamp a flow, count the verdict); 'empty' is the TC wrapper's own cost"
        ),
        machine,
    ));
    out.push(Metric::new(
        SUITE,
        &format!("{id}.tc.per_call.ns_per_call"),
        "ns/call",
        Summary::of(s.wall(Target::TcLb)),
        &[
            ("empty", Summary::of(s.wall(Target::TcEmpty))),
            ("xdp", Summary::of(s.wall(Target::Lb))),
        ],
        &format!(
            "{title}: one BPF_PROG_TEST_RUN of blixt_lb_tc per packet, wall clock in user space \
             (syscall and the test run's skb included); 'empty' an empty TC classifier, 'xdp' \
             blixt_lb per call"
        ),
        machine,
    ));
    out.push(Metric::new(
        SUITE,
        &format!("{id}.tc.per_call.above_empty"),
        "ns/packet",
        Summary::of(&s.tc_wall_rounds()),
        &[("xdp", Summary::of(&s.xdp_mode_wall_rounds(path)))],
        &format!(
            "{title}: per call, TC mode minus the empty TC classifier's per-call time; 'xdp' is \
             {xdp_what} minus the empty program(s) of its hook(s)"
        ),
        machine,
    ));
    out.push(Metric::new(
        SUITE,
        &format!("{id}.tc.per_call.kernel"),
        "ns/call",
        Summary::of(s.kernel(Target::TcLb)),
        &[("empty", Summary::of(s.kernel(Target::TcEmpty)))],
        &format!(
            "{title}: per call, TC mode, the run time the kernel reports for each call (whole \
             ns, program only), averaged"
        ),
        machine,
    ));
    if path.is_unresolved() && !s.hot_tc_after_xdp().is_empty() {
        out.push(Metric::new(
            SUITE,
            &format!("{id}.xdp_then_tc.hot_loop.ns_per_packet"),
            "ns/packet",
            xdp,
            &[
                (
                    "xdp_pass",
                    Summary::of(&diff(s.hot(Target::Lb), s.hot(Target::Empty))),
                ),
                (
                    "tc_pass",
                    Summary::of(&diff(s.hot_tc_after_xdp(), s.hot(Target::TcEmpty))),
                ),
            ],
            &format!(
                "{title}: XDP mode without metadata, hot loop: blixt_lb passes the packet up \
                 ('xdp_pass', above the empty XDP wrapper), blixt_lb_tc forwards it on the same \
                 packets ('tc_pass', above the empty TC wrapper); per round the sum. The kernel's \
                 own work between the two hooks (building the skb) is not in it"
            ),
            machine,
        ));
        out.push(Metric::new(
            SUITE,
            &format!("{id}.xdp_then_tc.per_call.above_empty"),
            "ns/packet",
            Summary::of(&s.xdp_mode_wall_rounds(path)),
            &[
                (
                    "xdp_pass",
                    Summary::of(&diff(s.wall(Target::Lb), s.wall(Target::Empty))),
                ),
                (
                    "tc_pass",
                    Summary::of(&diff(s.wall_tc_after_xdp(), s.wall(Target::TcEmpty))),
                ),
            ],
            &format!(
                "{title}: XDP mode without metadata, per call: both passes, each minus the empty \
                 program of its hook"
            ),
            machine,
        ));
    }
    out
}
