//! Suite 1: per-packet cost of the load balancer in the kernel, through BPF_PROG_TEST_RUN.
//!
//! Every path is measured two ways, each against an empty program and a parse-only floor on
//! the same packets, interleaved round by round so that noise from the shared machine hits all
//! three alike:
//!
//! - **hot loop**: one BPF_PROG_TEST_RUN with a large repeat count through the wrappers of
//!   bench_wrap.bpf.c, which restore the packet on every iteration (the repeat loop reuses one
//!   buffer: without the restore, iteration 2 onwards would see the already rewritten packet)
//!   and, for new-flow paths, stamp a never-seen flow into it. The kernel times the loop itself.
//!   Blixt's cost is `wrapped(lb) - wrapped(empty)`, the floor's `wrapped(floor) -
//!   wrapped(empty)`, so the wrapper's own work cancels out.
//! - **per call**: repeat = 1, many syscalls, timed from user space (so including the syscall
//!   and the test run's set-up), on the real `blixt_lb` as attached to interfaces.
//!
//! Every run is checked: each iteration's verdict (the wrappers count them), the dataplane's
//! counters (packets, new flows, drop reasons) and the conntrack size move exactly as the path
//! named implies, and the wrapped program's last output equals the real program's output for
//! the same input.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};
use blixt_bpf::shared::{STAT_CT_INSERT_FAILED, STAT_NAMES};
use blixt_bpf::testing::{Packet, ParsedPacket, TcpFlags};

use crate::env::{
    self, backend_mac, client4, client6, node4, snat4, snat6, verdict_name, vip4, vip6, Counts,
    Env, Target, BACKEND_PORT, CLIENT_IF_MAC, CLIENT_MAC, TCP_PORT, UDP_PORT, XDP_PASS,
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
    TcpNew,
    UdpNew,
    NewTcpFull,
}

impl Path {
    /// In the order they run: paths on a few fixed flows first, new flows after, the full
    /// table last (it leaves conntrack full).
    pub const ALL: [Path; 8] = [
        Path::NonVip,
        Path::TcpEstablished,
        Path::TcpReply,
        Path::UdpEstablished,
        Path::Tcp6Established,
        Path::TcpNew,
        Path::UdpNew,
        Path::NewTcpFull,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Path::NonVip => "non_vip_pass",
            Path::TcpEstablished => "tcp_established",
            Path::TcpReply => "tcp_reply",
            Path::UdpEstablished => "udp_established",
            Path::Tcp6Established => "tcp6_established",
            Path::TcpNew => "tcp_new_flow",
            Path::UdpNew => "udp_new_flow",
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
            Path::TcpNew => "new TCP flow (SYN), conntrack nearly empty",
            Path::UdpNew => "new UDP flow, conntrack nearly empty",
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
            Path::TcpNew => "TCP new flow (SYN)",
            Path::UdpNew => "UDP new flow",
            Path::NewTcpFull => "TCP new flow, conntrack full",
        }
    }

    pub fn from_id(id: &str) -> Option<Path> {
        Path::ALL.into_iter().find(|p| p.id() == id)
    }

    pub fn is_new_flow(self) -> bool {
        matches!(self, Path::TcpNew | Path::UdpNew | Path::NewTcpFull)
    }

    /// New-flow paths that start every run from an empty conntrack.
    fn clears_conntrack(self) -> bool {
        matches!(self, Path::TcpNew | Path::UdpNew)
    }
}

/// Calls of one program in a row before the next program's turn (per-call method).
const PER_CALL_CHUNK: usize = 50;

/// What one path's runs must show.
#[derive(Debug, Clone)]
struct Case {
    path: Path,
    packet: Vec<u8>,
    ifindex: u32,
    vary: Option<Vary>,
    /// Verdict of the load balancer on every iteration.
    verdict: u32,
}

/// One path's measurements, per round.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PathSamples {
    /// Hot loop: kernel ns per iteration of each wrapper, by target name.
    pub hot: BTreeMap<String, Vec<f64>>,
    /// Per call: user-space wall ns per call, by target name.
    pub wall: BTreeMap<String, Vec<f64>>,
    /// Per call: the kernel's reported ns per call, by target name.
    pub kernel: BTreeMap<String, Vec<f64>>,
    /// Conntrack insert failures during the measured Blixt runs (flows forwarded statelessly).
    pub ct_insert_failures: u64,
    /// Conntrack entries when the measurement started.
    pub conntrack_at_start: usize,
    /// Where the time goes, for Blixt's wrapper and the empty one (when `perf` is there).
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

/// Runs a SYN / ACK / SYN-ACK exchange through the real program so that both directions of
/// the flow are established; returns (backend address, SNAT port, backend index).
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
    let (v, _) = env.call(Target::Lb, &ack, env.client_if)?;
    ensure!(v == XDP_REDIRECT, "ACK: {}", verdict_name(v));
    let synack = reply_packet(be, port, idx, TcpFlags::SYN | TcpFlags::ACK, &[]);
    let (v, _) = env.call(Target::Lb, &synack, env.backend_if)?;
    ensure!(v == XDP_REDIRECT, "SYN-ACK: {}", verdict_name(v));
    Ok((be, port, idx))
}

fn backend_index(be: std::net::IpAddr) -> Result<u8> {
    match be {
        std::net::IpAddr::V4(a) if a.octets()[..3] == [10, 1, 0] => Ok(a.octets()[3]),
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

/// Checks the counters moved as `n` packets of `case` should have moved them.
fn check_counts(case: &Case, n: u64, before: &Counts, after: &Counts) -> Result<u64> {
    let new_flow = case.path.is_new_flow();
    let forwarded = case.verdict == XDP_REDIRECT;
    let packets = after.packets - before.packets;
    let new_flows = after.new_flows - before.new_flows;
    ensure!(
        packets == if forwarded { n } else { 0 },
        "{n} packets moved the backends' packet counters by {packets}"
    );
    ensure!(
        new_flows == if new_flow { n } else { 0 },
        "{n} packets made {new_flows} new flows"
    );
    let mut insert_failed = 0;
    for (i, (a, b)) in after.stats.iter().zip(&before.stats).enumerate() {
        let d = a - b;
        if d == 0 {
            continue;
        }
        if i as u32 == STAT_CT_INSERT_FAILED && case.path == Path::NewTcpFull {
            // reported, not fatal: a full table is where stateless forwarding is allowed
            insert_failed = d;
            continue;
        }
        bail!(
            "counter {} moved by {d} during {n} packets",
            STAT_NAMES.get(i).copied().unwrap_or("?")
        );
    }
    Ok(insert_failed)
}

fn check_verdicts(what: &str, counts: &[u64; 8], want: u32, n: u64) -> Result<()> {
    ensure!(
        counts[want as usize] == n,
        "{what}: {} of {n} iterations returned {} (verdicts {counts:?})",
        counts[want as usize],
        verdict_name(want)
    );
    Ok(())
}

fn expected_verdict(case: &Case, t: Target) -> u32 {
    match t {
        Target::Empty => XDP_PASS,
        Target::Floor => XDP_TX,
        Target::Lb => case.verdict,
    }
}

/// Checks the real program's output on `input`: verdict, and for forwarded packets that the
/// output parses with correct checksums and went where the path says.
fn check_output(env: &mut Env, case: &Case, input: &[u8]) -> Result<Vec<u8>> {
    let (v, out) = env.call(Target::Lb, input, case.ifindex)?;
    ensure!(
        v == case.verdict,
        "blixt_lb: {} instead of {}",
        verdict_name(v),
        verdict_name(case.verdict)
    );
    if v == XDP_PASS {
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
        check_output(env, &case, &case.packet)?;
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
        let pkts: Vec<Vec<u8>> = (0..calls.min(100) as u64)
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
            *seq += pkts.len() as u64;
        }
        env.call_batch(t, &pkts, case.ifindex)?;
    }
    for round in 0..sizes.rounds {
        // rotate the order so that no target always runs first (cold) or last
        let mut order = Target::ALL;
        order.rotate_left(round % Target::ALL.len());
        for t in order {
            let ct_before = if path.clears_conntrack() && t == Target::Lb {
                env.clear_conntrack()?;
                Some(0)
            } else {
                None
            };
            let before = env.counts()?;
            let r = env.hot_loop(t, &case.packet, case.vary, *seq, case.ifindex, repeat)?;
            let after = env.counts()?;
            let what = format!("hot loop of {}", t.name());
            ensure!(
                r.state.errors == 0,
                "{what}: {} iterations could not restore the packet",
                r.state.errors
            );
            check_verdicts(
                &what,
                &r.state.verdicts,
                expected_verdict(&case, t),
                repeat.into(),
            )?;
            if case.vary.is_some() {
                ensure!(
                    r.state.seq == *seq + u64::from(repeat),
                    "{what}: the wrapper stamped {} flows, not {repeat}",
                    r.state.seq - *seq
                );
                *seq = r.state.seq;
            }
            if t == Target::Lb {
                s.ct_insert_failures += check_counts(&case, repeat.into(), &before, &after)
                    .with_context(|| what.clone())?;
                if let Some(ct0) = ct_before {
                    let len = env.conntrack_len();
                    ensure!(
                        len == ct0 + 2 * repeat as usize,
                        "{what}: {repeat} new flows left {len} conntrack entries, not {}",
                        ct0 + 2 * repeat as usize
                    );
                }
                if round == 0 {
                    // the wrapped load balancer's last output must be what the real program
                    // makes of the same input
                    let mut last = case.packet.clone();
                    if let Some(v) = case.vary {
                        v.stamp(&mut last, *seq - 1);
                        // the stamp leaves checksums stale (the program does not care); check
                        // the rewrite on the same flow with valid ones
                        check_output(env, &case, &with_valid_checksums(&last))?;
                    }
                    let (v, want) = env.call(Target::Lb, &last, case.ifindex)?;
                    ensure!(
                        r.out == want && r.verdict == v && v == case.verdict,
                        "{what}: the wrapped program's output differs from blixt_lb's"
                    );
                }
            } else {
                ensure!(after == before, "{what}: the dataplane's counters moved");
            }
            s.hot.entry(t.name().into()).or_default().push(r.kernel_ns);
        }
        // Per call: the three programs take turns in small chunks, so that the shared
        // machine's noise (other processes, frequency changes) falls on all three alike.
        let pkts: Vec<Vec<u8>> = match case.vary {
            Some(v) => (0..calls as u64)
                .map(|i| {
                    let mut p = case.packet.clone();
                    v.stamp(&mut p, *seq + i);
                    with_valid_checksums(&p)
                })
                .collect(),
            None => vec![case.packet.clone(); calls],
        };
        if case.vary.is_some() {
            *seq += calls as u64;
        }
        if path.clears_conntrack() {
            env.clear_conntrack()?;
        }
        let before = env.counts()?;
        let mut wall: [Vec<f64>; 3] = Default::default();
        let mut kernel: [Vec<f64>; 3] = Default::default();
        let mut verdicts = [[0u64; 8]; 3];
        for chunk in pkts.chunks(PER_CALL_CHUNK) {
            for t in order {
                let b = env.call_batch(t, chunk, case.ifindex)?;
                wall[t as usize].push(b.wall_ns);
                kernel[t as usize].push(b.kernel_ns);
                for (acc, v) in verdicts[t as usize].iter_mut().zip(b.verdicts) {
                    *acc += v;
                }
            }
        }
        let after = env.counts()?;
        for t in order {
            let what = format!("per-call runs of {}", t.name());
            let v = &verdicts[t as usize];
            check_verdicts(&what, v, expected_verdict(&case, t), calls as u64)?;
            // the median chunk: a chunk that shared its core with someone else's burst of
            // work is an outlier, not a slower load balancer
            s.wall
                .entry(t.name().into())
                .or_default()
                .push(Summary::of(&wall[t as usize]).median);
            s.kernel
                .entry(t.name().into())
                .or_default()
                .push(Summary::of(&kernel[t as usize]).median);
        }
        s.ct_insert_failures +=
            check_counts(&case, calls as u64, &before, &after).context("per-call runs of blixt")?;
        if path.clears_conntrack() {
            let len = env.conntrack_len();
            ensure!(
                len == 2 * calls,
                "per-call runs: {calls} new flows left {len} conntrack entries"
            );
        }
    }
    if sizes.profile_ms > 0 {
        for t in [Target::Lb, Target::Empty] {
            s.profiles.push(
                profile(env, sizes, &case, t, seq)
                    .with_context(|| format!("profiling the {} wrapper", t.name()))?,
            );
        }
    }
    Ok(s)
}

/// Runs `t`'s wrapper on `case` for about `sizes.profile_ms` of kernel time under
/// `perf record`, and attributes the samples.
fn profile(
    env: &mut Env,
    sizes: &Sizes,
    case: &Case,
    t: Target,
    seq: &mut u64,
) -> Result<crate::profile::Profile> {
    let repeat = if case.path.is_new_flow() {
        sizes.new_flow_repeat
    } else {
        sizes.hot_repeat
    };
    let prog = match t {
        Target::Lb => "bench_wrap_lb",
        Target::Floor => "bench_wrap_floor",
        Target::Empty => "bench_wrap_empty",
    };
    let budget = sizes.profile_ms as f64 * 1e6;
    let rec = crate::profile::Recorder::start(&format!("{}-{}", case.path.id(), t.name()))?;
    let (mut spent, mut iters) = (0.0, 0.0);
    while spent < budget {
        if case.path.clears_conntrack() && t == Target::Lb {
            env.clear_conntrack()?;
        }
        let r = env.hot_loop(t, &case.packet, case.vary, *seq, case.ifindex, repeat)?;
        if case.vary.is_some() {
            *seq = r.state.seq;
        }
        ensure!(r.state.errors == 0, "restore errors while profiling");
        check_verdicts(
            "profiled run",
            &r.state.verdicts,
            expected_verdict(case, t),
            repeat.into(),
        )?;
        spent += r.kernel_ns * f64::from(repeat);
        iters += f64::from(repeat);
    }
    let stacks = rec.finish()?;
    let (samples, shares) = crate::profile::attribute(&stacks, prog)
        .with_context(|| format!("perf recorded no sample inside {prog}"))?;
    Ok(crate::profile::Profile {
        path: case.path.id().into(),
        target: t.name().into(),
        samples,
        shares,
        ns_per_iteration: spent / iters,
    })
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
}

/// Suite name in results.json.
pub const SUITE: &str = "1 per-packet cost";

/// The goal for established TCP, ns above the floor (hot loop).
pub const GOAL_ESTABLISHED_ABOVE_FLOOR: f64 = 120.0;
/// The goal for a new TCP flow with an empty conntrack, ns per packet.
pub const GOAL_NEW_FLOW: f64 = 600.0;

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
        }
        out
    }
}
