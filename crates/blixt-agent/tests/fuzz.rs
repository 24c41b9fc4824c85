//! The dataplane fuzzer (issue 17, item 4): seeds for every path the load balancer has, mutated
//! by a seeded deterministic PRNG, each packet run through BPF_PROG_TEST_RUN on a programmed
//! dataplane (XDP as this kernel offers it, and TC), and every verdict checked by an oracle that
//! decides from the bytes alone, with rules written from the RFCs and the "Packet validation"
//! table of docs/dataplane.md, never from the C code (see docs/reliability.md).
//!
//! * `fuzz_quick` (in `make test`): [`QUICK_PACKETS`] packets per mode.
//! * `fuzz_long` (ignored; `make fuzz`): `BLIXT_FUZZ_PACKETS` packets per mode (default 5M, so
//!   10M in all), `BLIXT_FUZZ_SEED` picks the PRNG seed, the report goes to stdout and to
//!   `target/fuzz-report.txt`.
//!
//! The network is the packet fixtures' (tests/fixtures.rs): a namespace with a veth pair, `fx0`
//! facing clients (10.0.0.0/24, fd00::/64) and `fx1` facing backends (10.1.0.0/24, fd01::/64),
//! with permanent neighbour entries.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use blixt_agent::{NodeConfig, Reconciler};
use blixt_bpf::shared::{self, CtEntry, FlowKey};
use blixt_bpf::testing::{ChecksumKind, Packet, ParsedPacket, TcpFlags};
use blixt_bpf::{AttachMode, Dataplane, DataplaneOptions, Hook, Verdict};
use blixt_core::snapshot::{
    Backend, BackendAddr, BackendState, Frontend, FrontendKey, Protocol, Snapshot,
};
use blixt_lab::netns::NetNs;

#[path = "common/addressing.rs"]
mod addressing;
use addressing::*;

/// Packets per mode in `make test`'s run (two modes: 100k in all).
const QUICK_PACKETS: u64 = 55_000;
/// Packets per mode of `make fuzz` unless BLIXT_FUZZ_PACKETS says otherwise.
const LONG_PACKETS: u64 = 5_000_000;
/// Mutants of one seed between two state resets and counter checks.
const BATCH: u64 = 1_000;

const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 9, 9];
const PORT_MIN: u16 = 1024;
const PORT_MAX: u16 = 65535;
const BACKEND_PORT: u16 = 8080;

// ---------------------------------------------------------------------------------------------
// The model: what the snapshot says, in the oracle's own terms.

/// What a (VIP, port, protocol) serves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Serve {
    /// Backends 1..=3 on port 8080.
    Backends,
    /// No valid backend: TCP is reset, UDP dropped.
    Reject,
}

fn frontend_of(dst: IpAddr, port: u16, proto: u8) -> Option<Serve> {
    if !is_vip(dst) {
        return None;
    }
    match (port, proto) {
        (80, 6) | (53, 17) => Some(Serve::Backends),
        (81, 6) | (54, 17) => Some(Serve::Reject),
        _ => None,
    }
}

fn is_vip(a: IpAddr) -> bool {
    a == IpAddr::V4(vip4()) || a == IpAddr::V6(vip6())
}

fn is_snat(a: IpAddr) -> bool {
    a == IpAddr::V4(snat4()) || a == IpAddr::V6(snat6())
}

/// The backend index of an address, if it is one.
fn backend_index(a: IpAddr) -> Option<u8> {
    (1..=3).find(|&i| a == IpAddr::V4(be4(i)) || a == IpAddr::V6(be6(i)))
}

fn snat_of(v6: bool) -> IpAddr {
    if v6 {
        snat6().into()
    } else {
        snat4().into()
    }
}

fn snapshot() -> Snapshot {
    let fe = |name: &str, vip: IpAddr, port: u16, protocol: Protocol, serve: Serve| Frontend {
        name: name.into(),
        key: FrontendKey {
            vip,
            port,
            protocol,
        },
        backends: if serve == Serve::Reject {
            vec![]
        } else {
            (1..=3)
                .map(|i| Backend {
                    addr: BackendAddr {
                        addr: match vip {
                            IpAddr::V4(_) => be4(i).into(),
                            IpAddr::V6(_) => be6(i).into(),
                        },
                        port: BACKEND_PORT,
                    },
                    weight: 1,
                    state: BackendState::Active,
                })
                .collect()
        },
        reject_weight: u32::from(serve == Serve::Reject),
    };
    let mut frontends = Vec::new();
    for (vip, sfx) in [(IpAddr::from(vip4()), "4"), (IpAddr::from(vip6()), "6")] {
        frontends.push(fe(
            &format!("t{sfx}"),
            vip,
            80,
            Protocol::Tcp,
            Serve::Backends,
        ));
        frontends.push(fe(
            &format!("u{sfx}"),
            vip,
            53,
            Protocol::Udp,
            Serve::Backends,
        ));
        frontends.push(fe(
            &format!("rt{sfx}"),
            vip,
            81,
            Protocol::Tcp,
            Serve::Reject,
        ));
        frontends.push(fe(
            &format!("ru{sfx}"),
            vip,
            54,
            Protocol::Udp,
            Serve::Reject,
        ));
    }
    Snapshot {
        generation: 1,
        frontends,
    }
}

// ---------------------------------------------------------------------------------------------
// A small deterministic PRNG (xorshift64*).

#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle's decoder: offsets and a class for any byte string, from the RFCs and the policy
// table alone.

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if at + 2 <= b.len() {
        b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

fn ip_at(b: &[u8], at: usize, v6: bool) -> IpAddr {
    if v6 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[at..at + 16]);
        IpAddr::V6(a.into())
    } else {
        IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Runt, non-IP EtherType, a second VLAN tag: not the load balancer's.
    NotIp,
    /// The frame is shorter than the IP header or its length field says.
    Truncated,
    /// IP that is neither TCP, UDP, an ICMP error nor a solicitation (echo, other protocols).
    OtherIp,
    /// Lengths contradict each other (the policy table's rows).
    Malformed(&'static str),
    /// An ICMP message shorter than its 8-byte header within the IP length: how it is read
    /// depends on bytes past the IP packet, so it may pass or be dropped as malformed.
    ShortIcmp,
    /// A fragment (first or later).
    Fragment,
    Tcp,
    Udp,
    IcmpError,
    Arp,
    Solicitation,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::NotIp => "not IP",
            Class::Truncated => "truncated",
            Class::OtherIp => "other IP",
            Class::Malformed(_) => "malformed",
            Class::ShortIcmp => "short ICMP",
            Class::Fragment => "fragment",
            Class::Tcp => "TCP",
            Class::Udp => "UDP",
            Class::IcmpError => "ICMP error",
            Class::Arp => "ARP",
            Class::Solicitation => "NDP NS",
        }
    }
}

/// A decoded frame: the class and the offsets the checks and mutations use.
#[derive(Clone, Debug)]
struct Dec {
    class: Class,
    l3: usize,
    v6: bool,
    /// The IP header was read (addresses, lengths).
    ip: bool,
    /// End of the IP packet per its length field.
    end: usize,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    l4: usize,
    proto: u8,
    /// Offsets of IPv6 extension headers.
    exts: Vec<usize>,
    /// ICMP errors: the quoted IP header and its L4 header.
    q: usize,
    ql4: usize,
    /// TCP/UDP: the tuple; ICMP errors: the quoted tuple.
    key: Option<FlowKey>,
    /// ICMP errors: the quoted destination, once the quoted IP header is known whole.
    qdst: Option<IpAddr>,
    tcp_flags: u8,
}

const QUOTED_L4_CUT: &str = "quoted L4 header beyond the IP length";
const QUOTED_UDP_LENGTH: &str = "quoted UDP length below 8";

fn decode(b: &[u8]) -> Dec {
    let mut d = Dec {
        class: Class::NotIp,
        l3: 14,
        v6: false,
        ip: false,
        end: b.len(),
        src: None,
        dst: None,
        l4: 0,
        proto: 0,
        exts: Vec::new(),
        q: 0,
        ql4: 0,
        key: None,
        qdst: None,
        tcp_flags: 0,
    };
    if b.len() < 14 {
        return d;
    }
    let mut et = be16(b, 12);
    if et == 0x8100 || et == 0x88a8 {
        if b.len() < 18 {
            return d;
        }
        et = be16(b, 16);
        d.l3 = 18;
    }
    let l3 = d.l3;
    match et {
        0x0806 => {
            d.class = Class::Arp;
            return d;
        }
        0x0800 => {
            if b.len() < l3 + 20 {
                d.class = Class::Truncated;
                return d;
            }
            if b[l3] >> 4 != 4 {
                d.class = Class::OtherIp;
                return d;
            }
            let tot = usize::from(be16(b, l3 + 2));
            if l3 + tot > b.len() {
                d.class = Class::Truncated;
                return d;
            }
            d.ip = true;
            d.src = Some(ip_at(b, l3 + 12, false));
            d.dst = Some(ip_at(b, l3 + 16, false));
            d.end = l3 + tot;
            let ihl = usize::from(b[l3] & 0xf) * 4;
            if ihl < 20 || ihl > tot {
                d.class = Class::Malformed("IHL below 5 or beyond the total length");
                return d;
            }
            d.proto = b[l3 + 9];
            if be16(b, l3 + 6) & 0x3fff != 0 {
                d.class = Class::Fragment;
                return d;
            }
            d.l4 = l3 + ihl;
        }
        0x86dd => {
            if b.len() < l3 + 40 {
                d.class = Class::Truncated;
                return d;
            }
            if b[l3] >> 4 != 6 {
                d.class = Class::OtherIp;
                return d;
            }
            let payload = usize::from(be16(b, l3 + 4));
            if l3 + 40 + payload > b.len() {
                d.class = Class::Truncated;
                return d;
            }
            d.ip = true;
            d.v6 = true;
            d.src = Some(ip_at(b, l3 + 8, true));
            d.dst = Some(ip_at(b, l3 + 24, true));
            d.end = l3 + 40 + payload;
            if payload == 0 {
                d.class = Class::Malformed("IPv6 payload length 0");
                return d;
            }
            let mut nh = b[l3 + 6];
            let mut off = l3 + 40;
            let mut fragment = false;
            // RFC 8200 4: hop-by-hop, routing, fragment, destination options; the policy
            // walks four
            while matches!(nh, 0 | 43 | 44 | 60) {
                if d.exts.len() == 4 {
                    d.class = Class::Malformed("a fifth extension header");
                    return d;
                }
                if off + 8 > d.end {
                    d.class = Class::Malformed("extension header beyond the payload length");
                    return d;
                }
                d.exts.push(off);
                let this = nh;
                nh = b[off];
                if this == 44 {
                    let fo = be16(b, off + 2);
                    off += 8;
                    if fo & 0xfff8 != 0 {
                        // a later fragment: what follows is data, not headers
                        d.proto = nh;
                        d.class = Class::Fragment;
                        return d;
                    }
                    fragment |= fo & 1 != 0;
                } else {
                    off += (usize::from(b[off + 1]) + 1) * 8;
                    if off > d.end {
                        d.class = Class::Malformed("extension header beyond the payload length");
                        return d;
                    }
                }
            }
            d.proto = nh;
            if fragment {
                d.class = Class::Fragment;
                return d;
            }
            d.l4 = off;
        }
        _ => return d,
    }
    let (l4, end, v6) = (d.l4, d.end, d.v6);
    let (src, dst) = (d.src.unwrap(), d.dst.unwrap());
    match d.proto {
        6 | 17 => {
            let tcp = d.proto == 6;
            if l4 + if tcp { 20 } else { 8 } > end {
                d.class = Class::Malformed("L4 header beyond the IP length");
                return d;
            }
            if tcp {
                let doff = usize::from(b[l4 + 12] >> 4) * 4;
                if doff < 20 || l4 + doff > end {
                    d.class = Class::Malformed("TCP data offset");
                    return d;
                }
                d.tcp_flags = b[l4 + 13];
            } else {
                let ulen = usize::from(be16(b, l4 + 4));
                if ulen < 8 || l4 + ulen > end {
                    d.class = Class::Malformed("UDP length");
                    return d;
                }
            }
            d.class = if tcp { Class::Tcp } else { Class::Udp };
            d.key = Some(FlowKey::new(
                src,
                be16(b, l4),
                dst,
                be16(b, l4 + 2),
                d.proto,
            ));
        }
        1 | 58 if (d.proto == 58) == v6 => {
            if l4 + 8 > end {
                d.class = Class::ShortIcmp;
                return d;
            }
            let t = b[l4];
            let error = if v6 {
                matches!(t, 1..=4)
            } else {
                matches!(t, 3 | 11 | 12)
            };
            if v6 && t == 135 {
                d.class = Class::Solicitation;
                return d;
            }
            if !error {
                d.class = Class::OtherIp;
                return d;
            }
            // RFC 792 / 4443: the quote holds the offending IP header and at least 8 bytes
            let q = l4 + 8;
            d.q = q;
            if q + if v6 { 40 } else { 20 } > end {
                d.class = Class::Malformed("ICMP quote beyond the IP length");
                return d;
            }
            let (qproto, ql4) = if v6 {
                if b[q] >> 4 != 6 {
                    d.class = Class::Malformed("ICMP quote is not IPv6");
                    return d;
                }
                (b[q + 6], q + 40)
            } else {
                let ihl = usize::from(b[q] & 0xf) * 4;
                if b[q] >> 4 != 4 || ihl < 20 {
                    d.class = Class::Malformed("ICMP quote is not IPv4");
                    return d;
                }
                (b[q + 9], q + ihl)
            };
            let qoff = if v6 { (8, 24) } else { (12, 16) };
            d.qdst = Some(ip_at(b, q + qoff.1, v6));
            if qproto != 6 && qproto != 17 {
                d.class = Class::OtherIp;
                return d;
            }
            if ql4 + 8 > end {
                d.class = Class::Malformed(QUOTED_L4_CUT);
                return d;
            }
            if qproto == 17 && be16(b, ql4 + 4) < 8 {
                d.class = Class::Malformed(QUOTED_UDP_LENGTH);
                return d;
            }
            d.ql4 = ql4;
            d.key = Some(FlowKey::new(
                ip_at(b, q + qoff.0, v6),
                be16(b, ql4),
                ip_at(b, q + qoff.1, v6),
                be16(b, ql4 + 2),
                qproto,
            ));
            d.class = Class::IcmpError;
        }
        _ => d.class = Class::OtherIp,
    }
    d
}

fn reversed(k: &FlowKey) -> FlowKey {
    FlowKey {
        src: k.dst,
        dst: k.src,
        sport: k.dport,
        dport: k.sport,
        ..*k
    }
}

// ---------------------------------------------------------------------------------------------
// Checksums, the oracle's own (one's-complement sum, RFC 1071).

fn sum16(data: &[u8]) -> u32 {
    let mut s = 0u32;
    for (i, byte) in data.iter().enumerate() {
        s += if i % 2 == 0 {
            u32::from(*byte) << 8
        } else {
            u32::from(*byte)
        };
    }
    s
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Recomputes the outer IPv4 header and L4 checksums in place (as far as the bytes allow), so
/// that a mutant differs from a valid packet in its lengths only.
fn fix_checksums(b: &mut [u8]) {
    let d = decode(b);
    if !d.ip {
        return;
    }
    let l3 = d.l3;
    if !d.v6 {
        let ihl = usize::from(b[l3] & 0xf) * 4;
        if ihl >= 20 && l3 + ihl <= b.len() {
            put16(b, l3 + 10, 0);
            let c = !fold(sum16(&b[l3..l3 + ihl]));
            put16(b, l3 + 10, c);
        }
    }
    let at = match d.class {
        Class::Tcp => 16,
        Class::Udp => 6,
        Class::IcmpError | Class::Solicitation | Class::OtherIp if matches!(d.proto, 1 | 58) => 2,
        _ => return,
    };
    if d.l4 + at + 2 > d.end {
        return;
    }
    put16(b, d.l4 + at, 0);
    let seg = &b[d.l4..d.end];
    let mut s = sum16(seg);
    if d.proto != 1 {
        s += sum16(&b[l3 + if d.v6 { 8 } else { 12 }..l3 + if d.v6 { 40 } else { 20 }]);
        s += u32::from(d.proto) + seg.len() as u32;
    }
    let mut c = !fold(s);
    if d.proto == 17 && c == 0 {
        c = 0xffff;
    }
    put16(b, d.l4 + at, c);
}

/// A checksum's residue: the one's-complement sum of what it covers, field included (0 when it
/// verifies, either encoding of zero). Incremental updates (RFC 1624) keep it: a packet that
/// came with a wrong checksum leaves with one wrong by the same amount.
fn residue(found: u16, expected: u16) -> u16 {
    let r = fold(u32::from(found) + u32::from(!expected));
    if r == 0xffff {
        0
    } else {
        r
    }
}

/// The residues of the outer IPv4 header and L4 checksums and, in an ICMP error, of the quoted
/// IPv4 header, computed by the oracle ([`residue`]: 0 when a checksum verifies).
fn own_residues(b: &[u8]) -> Vec<(&'static str, u16)> {
    let d = decode(b);
    let mut out = Vec::new();
    let r = |s: u32| {
        let f = fold(s);
        if f == 0xffff {
            0
        } else {
            !f
        }
    };
    if d.ip && !d.v6 {
        let ihl = usize::from(b[d.l3] & 0xf) * 4;
        out.push(("IPv4 header", r(sum16(&b[d.l3..d.l3 + ihl]))));
    }
    let (l3, l4, end) = (d.l3, d.l4, d.end);
    let pseudo = |len: usize| {
        sum16(&b[l3 + if d.v6 { 8 } else { 12 }..l3 + if d.v6 { 40 } else { 20 }])
            + u32::from(d.proto)
            + len as u32
    };
    match d.class {
        Class::Tcp => out.push(("TCP", r(pseudo(end - l4) + sum16(&b[l4..end])))),
        Class::Udp if d.v6 || be16(b, l4 + 6) != 0 => {
            let len = usize::from(be16(b, l4 + 4));
            out.push(("UDP", r(pseudo(len) + sum16(&b[l4..l4 + len]))));
        }
        Class::IcmpError => {
            let pre = if d.v6 { pseudo(end - l4) } else { 0 };
            out.push(("ICMP", r(pre + sum16(&b[l4..end]))));
            if !d.v6 {
                let ihl = usize::from(b[d.q] & 0xf) * 4;
                out.push(("quoted IPv4 header", r(sum16(&b[d.q..d.q + ihl]))));
            }
        }
        _ => {}
    }
    out
}

fn residues(p: &ParsedPacket) -> Vec<(String, u16, bool)> {
    p.checksum_checks()
        .iter()
        .map(|c| {
            (
                format!("{}{:?}", if c.inner { "inner " } else { "" }, c.kind),
                residue(c.found, c.expected),
                c.ok,
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Seeds.

/// A flow set up before every batch, so that mutants of its packets hit a tracked flow.
#[derive(Clone, Copy, Debug, Default)]
struct Flow {
    port: u16,
    backend: u8,
}

#[derive(Clone, Copy, Debug, Default)]
struct Established {
    t4: Flow,
    u4: Flow,
    t6: Flow,
    u6: Flow,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Client,
    Backend,
}

struct Seed {
    name: &'static str,
    side: Side,
    frame: Vec<u8>,
}

fn seeds(e: &Established, rng: &mut Rng) -> Vec<Seed> {
    let c = |name, frame| Seed {
        name,
        side: Side::Client,
        frame,
    };
    let b = |name, frame| Seed {
        name,
        side: Side::Backend,
        frame,
    };
    let cl4 = || Packet::eth(CLIENT_MAC, FX0_MAC).ipv4(client4(), vip4());
    let cl6 = || Packet::eth(CLIENT_MAC, FX0_MAC).ipv6(client6(), vip6());
    let mss = [2, 4, 5, 0xb4, 1, 1, 4, 2];
    let (t4, u4, t6, u6) = (e.t4, e.u4, e.t6, e.u6);
    let tcp_quote4 = Packet::ipv4(snat4(), be4(t4.backend))
        .tcp(t4.port, BACKEND_PORT)
        .flags(TcpFlags::ACK)
        .seq(2)
        .payload(&[0; 100])
        .build();
    let udp_quote4 = Packet::ipv4(vip4(), client4())
        .udp(53, 5353)
        .payload(b"answer")
        .build();
    let tcp_quote6 = Packet::ipv6(snat6(), be6(t6.backend))
        .tcp(t6.port, BACKEND_PORT)
        .flags(TcpFlags::ACK)
        .payload(&[0; 100])
        .build();
    let udp_quote6 = Packet::ipv6(vip6(), client6())
        .udp(53, 5354)
        .payload(&[1; 64])
        .build();
    let unknown4 = Packet::ipv4(snat4(), be4(3))
        .udp(9999, BACKEND_PORT)
        .payload(b"zz")
        .build();
    let ns = |src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr, slla: bool| {
        let mut body = target.octets().to_vec();
        if slla {
            body.extend_from_slice(&[1, 1]);
            body.extend_from_slice(&CLIENT_MAC);
        }
        Packet::eth(CLIENT_MAC, [0x33, 0x33, 0xff, 0, 0, 0x10])
            .ipv6(src, dst)
            .hop_limit(255)
            .icmpv6(135, 0, [0; 4])
            .payload(&body)
            .build()
    };
    // a router on either side
    let router_mac = |side| {
        if side == Side::Client {
            FX0_MAC
        } else {
            FX1_MAC
        }
    };
    let r4 = |side, dst| {
        let src = if side == Side::Client {
            Ipv4Addr::new(10, 0, 0, 9)
        } else {
            be4(9)
        };
        Packet::eth(ROUTER_MAC, router_mac(side)).ipv4(src, dst)
    };
    let r6 = |side, dst| {
        let src: Ipv6Addr = if side == Side::Client {
            "fd00::9".parse().unwrap()
        } else {
            be6(9)
        };
        Packet::eth(ROUTER_MAC, router_mac(side)).ipv6(src, dst)
    };
    let snm: Ipv6Addr = "ff02::1:ff00:10".parse().unwrap();
    let arp = |op: u16, tpa: Ipv4Addr| {
        let mut a = vec![0, 1, 8, 0, 6, 4];
        a.extend_from_slice(&op.to_be_bytes());
        a.extend_from_slice(&CLIENT_MAC);
        a.extend_from_slice(&client4().octets());
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&tpa.octets());
        Packet::eth(CLIENT_MAC, [0xff; 6]).build_raw(0x0806, &a)
    };
    let frag4 = cl4()
        .id(77)
        .udp(41002, 53)
        .payload(&[7; 40])
        .build_fragments(24);
    let frag6 = cl6()
        .fragment_id(78)
        .tcp(41003, 80)
        .flags(TcpFlags::SYN)
        .payload(&[8; 40])
        .build_fragments(32);
    let mut garbage = Packet::eth(CLIENT_MAC, FX0_MAC).build_raw(0x0800, &rng.bytes(60));
    garbage[14] = 0x45;
    let mut garbage6 = Packet::eth(CLIENT_MAC, FX0_MAC).build_raw(0x86dd, &rng.bytes(80));
    garbage6[14] = 0x60;
    vec![
        // TCP and UDP, v4 and v6: new, established, replies from backends to the SNAT address
        c(
            "tcp4 SYN",
            cl4()
                .tcp(41000, 80)
                .flags(TcpFlags::SYN)
                .options(&mss)
                .payload(b"hi")
                .build(),
        ),
        c(
            "tcp4 established",
            cl4()
                .tcp(40000, 80)
                .flags(TcpFlags::ACK | TcpFlags::PSH)
                .seq(1001)
                .ack(5001)
                .payload(b"GET / HTTP/1.0\r\n\r\n")
                .build(),
        ),
        c(
            "tcp4 FIN",
            cl4()
                .tcp(40000, 80)
                .flags(TcpFlags::ACK | TcpFlags::FIN)
                .seq(1019)
                .ack(5001)
                .build(),
        ),
        b(
            "tcp4 reply",
            Packet::eth(backend_mac(t4.backend), FX1_MAC)
                .ipv4(be4(t4.backend), snat4())
                .tcp(BACKEND_PORT, t4.port)
                .flags(TcpFlags::ACK)
                .seq(5001)
                .ack(1019)
                .payload(b"HTTP/1.0 200 OK\r\n")
                .build(),
        ),
        c("udp4 new", cl4().udp(41001, 53).payload(b"query").build()),
        c(
            "udp4 established",
            cl4().udp(5353, 53).payload(b"query-2").build(),
        ),
        c(
            "udp4 no checksum",
            cl4().udp(41004, 53).zero_checksum().payload(b"x").build(),
        ),
        b(
            "udp4 reply",
            Packet::eth(backend_mac(u4.backend), FX1_MAC)
                .ipv4(be4(u4.backend), snat4())
                .udp(BACKEND_PORT, u4.port)
                .payload(b"answer")
                .build(),
        ),
        c(
            "tcp6 SYN",
            cl6()
                .tcp(41010, 80)
                .flags(TcpFlags::SYN)
                .options(&mss)
                .build(),
        ),
        c(
            "tcp6 established",
            cl6()
                .tcp(40001, 80)
                .flags(TcpFlags::ACK)
                .seq(8)
                .ack(10)
                .payload(b"data")
                .build(),
        ),
        b(
            "tcp6 reply",
            Packet::eth(backend_mac(t6.backend), FX1_MAC)
                .ipv6(be6(t6.backend), snat6())
                .tcp(BACKEND_PORT, t6.port)
                .flags(TcpFlags::ACK | TcpFlags::PSH)
                .seq(10)
                .ack(12)
                .payload(b"reply")
                .build(),
        ),
        c("udp6 new", cl6().udp(41011, 53).payload(b"q6").build()),
        c(
            "udp6 established",
            cl6().udp(5354, 53).payload(b"q6-2").build(),
        ),
        b(
            "udp6 reply",
            Packet::eth(backend_mac(u6.backend), FX1_MAC)
                .ipv6(be6(u6.backend), snat6())
                .udp(BACKEND_PORT, u6.port)
                .payload(b"a6")
                .build(),
        ),
        // VLAN, IPv4 options, IPv6 extension headers
        c(
            "vlan tcp4 SYN",
            Packet::eth(CLIENT_MAC, FX0_MAC)
                .vlan(100)
                .ipv4(client4(), vip4())
                .tcp(41020, 80)
                .flags(TcpFlags::SYN)
                .build(),
        ),
        c(
            "vlan udp6 established",
            Packet::eth(CLIENT_MAC, FX0_MAC)
                .vlan(100)
                .ipv6(client6(), vip6())
                .udp(5354, 53)
                .payload(b"v")
                .build(),
        ),
        c(
            "qinq tcp4",
            Packet::eth(CLIENT_MAC, FX0_MAC)
                .vlan_tag(0x88a8, 0, false, 10)
                .vlan(100)
                .ipv4(client4(), vip4())
                .tcp(41021, 80)
                .flags(TcpFlags::SYN)
                .build(),
        ),
        c(
            "ipv4 options SYN",
            cl4()
                .options(&[0x94, 4, 0, 0, 1, 1, 1, 0])
                .tcp(41030, 80)
                .flags(TcpFlags::SYN)
                .build(),
        ),
        c(
            "ipv6 3 ext tcp SYN",
            cl6()
                .ext_hop_by_hop()
                .ext_routing()
                .ext_dest_opts()
                .tcp(41031, 80)
                .flags(TcpFlags::SYN)
                .build(),
        ),
        c(
            "ipv6 4 ext udp",
            cl6()
                .ext_hop_by_hop()
                .ext_routing()
                .ext_dest_opts()
                .ext_dest_opts()
                .udp(41032, 53)
                .payload(b"e")
                .build(),
        ),
        // ICMP and ICMPv6 errors: tracked flows (both sides), unknown, misdirected
        b(
            "icmp4 frag-needed to SNAT",
            r4(Side::Backend, snat4())
                .icmp_frag_needed(1400, &tcp_quote4, 48)
                .build(),
        ),
        c(
            "icmp4 unreachable to VIP",
            r4(Side::Client, vip4())
                .icmp_dest_unreachable(3, &udp_quote4, 1000)
                .build(),
        ),
        b(
            "icmp4 time-exceeded to SNAT",
            r4(Side::Backend, snat4())
                .icmp_time_exceeded(0, &tcp_quote4, 1000)
                .build(),
        ),
        b(
            "icmp4 unknown flow",
            r4(Side::Backend, snat4())
                .icmp_dest_unreachable(3, &unknown4, 1000)
                .build(),
        ),
        c(
            "icmp4 misdirected to VIP",
            r4(Side::Client, vip4())
                .icmp_dest_unreachable(1, &tcp_quote4, 48)
                .build(),
        ),
        c(
            "icmp6 too-big to VIP",
            r6(Side::Client, vip6())
                .icmpv6_packet_too_big(1280, &udp_quote6, 1000)
                .build(),
        ),
        b(
            "icmp6 unreachable to SNAT",
            r6(Side::Backend, snat6())
                .icmpv6_dest_unreachable(4, &tcp_quote6, 68)
                .build(),
        ),
        b(
            "icmp6 time-exceeded to SNAT",
            r6(Side::Backend, snat6())
                .icmpv6_time_exceeded(0, &tcp_quote6, 1000)
                .build(),
        ),
        c(
            "icmp4 echo to VIP",
            cl4().icmp_echo_request(1, 1).payload(b"ping").build(),
        ),
        c(
            "icmp6 echo to VIP",
            cl6().icmpv6_echo_request(1, 1).payload(b"ping").build(),
        ),
        // neighbours
        c("arp request VIP", arp(1, vip4())),
        c("arp request other", arp(1, Ipv4Addr::new(10, 0, 0, 1))),
        c("arp reply", arp(2, vip4())),
        c("ndp NS VIP", ns(client6(), snm, vip6(), true)),
        c("ndp NS DAD", ns(Ipv6Addr::UNSPECIFIED, snm, vip6(), false)),
        c(
            "ndp NS other",
            ns(client6(), snm, "fd00::1".parse().unwrap(), true),
        ),
        // not for a VIP
        c(
            "non-VIP tcp4",
            Packet::eth(CLIENT_MAC, FX0_MAC)
                .ipv4(client4(), Ipv4Addr::new(10, 0, 0, 1))
                .tcp(40000, 22)
                .flags(TcpFlags::SYN)
                .build(),
        ),
        c(
            "non-VIP udp6",
            Packet::eth(CLIENT_MAC, FX0_MAC)
                .ipv6(client6(), "fd00::1".parse().unwrap())
                .udp(1, 2)
                .payload(b"x")
                .build(),
        ),
        c(
            "VIP other port",
            cl4().tcp(41040, 8443).flags(TcpFlags::SYN).build(),
        ),
        b(
            "backend to SNAT untracked",
            Packet::eth(backend_mac(1), FX1_MAC)
                .ipv4(be4(1), snat4())
                .tcp(BACKEND_PORT, 999)
                .flags(TcpFlags::ACK)
                .build(),
        ),
        // refused flows, stray resets, fragments
        c(
            "reject tcp4 SYN",
            cl4()
                .tcp(41050, 81)
                .flags(TcpFlags::SYN)
                .seq(100)
                .options(&[2, 4, 5, 0xb4])
                .payload(b"data")
                .build(),
        ),
        c(
            "reject tcp6 ACK",
            cl6()
                .ext_dest_opts()
                .tcp(41051, 81)
                .flags(TcpFlags::ACK | TcpFlags::PSH)
                .seq(9)
                .ack(77)
                .payload(b"data")
                .build(),
        ),
        c("reject udp4", cl4().udp(41052, 54).payload(b"q").build()),
        c(
            "stray RST tcp4",
            cl4().tcp(41060, 80).flags(TcpFlags::RST).seq(5).build(),
        ),
        c(
            "stray RST tcp6",
            cl6()
                .tcp(41061, 80)
                .flags(TcpFlags::RST | TcpFlags::ACK)
                .build(),
        ),
        c("frag4 first", frag4[0].clone()),
        c("frag4 later", frag4[1].clone()),
        c("frag6 first", frag6[0].clone()),
        c("frag6 later", frag6[1].clone()),
        c("garbage ipv4", garbage),
        c("garbage ipv6", garbage6),
    ]
}

// ---------------------------------------------------------------------------------------------
// Mutations.

fn edge_lengths(actual: usize, hdr: usize) -> Vec<u16> {
    let a = actual as i64;
    let h = hdr as i64;
    [
        0,
        1,
        7,
        8,
        19,
        20,
        39,
        40,
        h - 1,
        h,
        h + 1,
        h + 7,
        h + 8,
        h + 19,
        h + 20,
        a - 8,
        a - 1,
        a + 1,
        a + 8,
        0xffff,
    ]
    .iter()
    .map(|&v| v.clamp(0, 0xffff) as u16)
    .collect()
}

/// Sets a length or header field of the packet to an edge value.
fn mutate_field(rng: &mut Rng, p: &mut [u8], d: &Dec) -> &'static str {
    let l3 = d.l3;
    if !d.ip || p.len() < l3 + 20 {
        return mutate_bits(rng, p);
    }
    let l4 = d.l4;
    let end = d.end.min(p.len());
    for _ in 0..8 {
        match rng.below(12) {
            0 if !d.v6 => {
                p[l3] = 0x40 | rng.pick(&[0u8, 1, 4, 5, 6, 7, 15]);
                return "IHL";
            }
            1 if !d.v6 => {
                let ihl = usize::from(p[l3] & 0xf) * 4;
                let v = rng.pick(&edge_lengths(end - l3, ihl + 8));
                put16(p, l3 + 2, v);
                return "IPv4 total length";
            }
            1 if d.v6 => {
                let v = rng.pick(&edge_lengths(end - l3 - 40, l4.saturating_sub(l3 + 40) + 8));
                put16(p, l3 + 4, v);
                return "IPv6 payload length";
            }
            2 => {
                let v = rng.pick(&[0x3f_u8, 0, 6, 17, 1, 58, 43, 44, 60, 59, 51, 255]);
                if d.v6 {
                    p[l3 + 6] = v;
                } else {
                    p[l3 + 9] = v;
                }
                return "protocol";
            }
            3 if !d.v6 => {
                let v = rng.pick(&[0x2000_u16, 0x0001, 0x4000, 0x3fff, 0x8000, 0x1fff, 0x6000]);
                put16(p, l3 + 6, v);
                return "IPv4 fragment field";
            }
            4 if !d.exts.is_empty() => {
                let at = d.exts[rng.below(d.exts.len())];
                if at + 2 <= p.len() {
                    if rng.one_in(2) {
                        p[at + 1] = rng.pick(&[0, 1, 2, 3, 255]);
                    } else {
                        p[at] = rng.pick(&[0, 6, 17, 43, 44, 58, 60, 59]);
                    }
                    return "extension header";
                }
            }
            5 if d.proto == 6 && l4 + 14 <= p.len() && l4 > 0 => {
                p[l4 + 12] = (rng.below(16) as u8) << 4 | (p[l4 + 12] & 0xf);
                return "TCP data offset";
            }
            6 if d.proto == 6 && l4 + 14 <= p.len() && l4 > 0 => {
                p[l4 + 13] = rng.pick(&[0x02, 0x04, 0x14, 0x10, 0x01, 0x11, 0x12, 0x00, 0xff]);
                return "TCP flags";
            }
            7 if d.proto == 17 && l4 + 8 <= p.len() && l4 > 0 => {
                let v = rng.pick(&edge_lengths(end - l4, 8));
                put16(p, l4 + 4, v);
                return "UDP length";
            }
            8 if matches!(d.proto, 1 | 58) && l4 + 8 <= p.len() && l4 > 0 => {
                p[l4] = rng.pick(&[3, 11, 12, 0, 8, 1, 2, 4, 128, 135, 136]);
                return "ICMP type";
            }
            9 if d.q > 0 && d.q + 20 <= p.len() => {
                let q = d.q;
                match rng.below(4) {
                    0 => p[q] = rng.pick(&[0x45, 0x44, 0x4f, 0x60, 0x46, 0x40, 0x65]),
                    1 => put16(p, q + 2, rng.pick(&[0, 20, 28, 0xffff])),
                    2 => p[q + if d.v6 { 6 } else { 9 }] = rng.pick(&[6, 17, 1, 0, 58]),
                    _ if d.ql4 + 8 <= p.len() && d.ql4 > 0 => {
                        put16(p, d.ql4 + 4, rng.pick(&[0, 7, 8, 0xffff]))
                    }
                    _ => p[q] ^= 0x10,
                }
                return "ICMP quote field";
            }
            10 if l4 > 0 && l4 + 4 <= p.len() && matches!(d.proto, 6 | 17) => {
                let port = rng.pick(&[80u16, 53, 81, 54, 0, 8080, 443]);
                put16(p, l4 + 2, port);
                put16(p, l4, rng.next() as u16);
                return "ports";
            }
            11 => {
                let (s, t) = if d.v6 { (8, 24) } else { (12, 16) };
                let pick: [IpAddr; 5] = if d.v6 {
                    [
                        vip6().into(),
                        snat6().into(),
                        be6(1).into(),
                        client6().into(),
                        "ff02::1".parse::<Ipv6Addr>().unwrap().into(),
                    ]
                } else {
                    [
                        vip4().into(),
                        snat4().into(),
                        be4(1).into(),
                        client4().into(),
                        Ipv4Addr::BROADCAST.into(),
                    ]
                };
                let a = rng.pick(&pick);
                let bytes = match a {
                    IpAddr::V4(a) => a.octets().to_vec(),
                    IpAddr::V6(a) => a.octets().to_vec(),
                };
                let at = l3 + if rng.one_in(2) { s } else { t };
                p[at..at + bytes.len()].copy_from_slice(&bytes);
                return "addresses";
            }
            _ => {}
        }
    }
    mutate_bits(rng, p)
}

fn mutate_bits(rng: &mut Rng, p: &mut [u8]) -> &'static str {
    if p.is_empty() {
        return "bit flip";
    }
    for _ in 0..1 + rng.below(4) {
        let bit = rng.below(p.len() * 8);
        p[bit / 8] ^= 0x80 >> (bit % 8);
    }
    "bit flip"
}

/// Inserts an IPv6 fragment header, or makes an IPv4 packet a fragment.
fn fragment(rng: &mut Rng, p: &mut Vec<u8>, d: &Dec) -> &'static str {
    if !d.ip {
        return mutate_bits(rng, p);
    }
    let l3 = d.l3;
    let offset_more: u16 = rng.pick(&[1, 0, 8, 9, 0xfff9]);
    if d.v6 {
        let at = l3 + 40;
        let hdr = [
            p[l3 + 6],
            0,
            (offset_more >> 8) as u8,
            offset_more as u8,
            0,
            0,
            0,
            9,
        ];
        p.splice(at..at, hdr);
        p[l3 + 6] = 44;
        let pl = be16(p, l3 + 4).wrapping_add(8);
        put16(p, l3 + 4, pl);
    } else {
        let v = (offset_more >> 3) | if offset_more & 1 != 0 { 0x2000 } else { 0 };
        put16(p, l3 + 6, v);
    }
    "fragment"
}

/// One mutant of `seed`: one to three mutations, then sometimes the IP length made to cover
/// the frame again and the checksums recomputed.
fn mutate(rng: &mut Rng, seed: &[u8]) -> (Vec<u8>, String) {
    let mut p = seed.to_vec();
    let mut what = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let d = decode(&p);
        let m = match rng.below(10) {
            0 => {
                let len = rng.below(p.len() + 1);
                p.truncate(len);
                "truncate"
            }
            1..=3 => mutate_field(rng, &mut p, &d),
            4 => mutate_bits(rng, &mut p),
            5 if !p.is_empty() => {
                let at = rng.below(p.len());
                p[at] = rng.byte();
                "random byte"
            }
            6 => {
                let at = rng.below(p.len() + 1);
                let n = 1 + rng.below(8);
                let ins = rng.bytes(n);
                p.splice(at..at, ins);
                "insert"
            }
            7 if !p.is_empty() => {
                let at = rng.below(p.len());
                let n = (1 + rng.below(8)).min(p.len() - at);
                p.drain(at..at + n);
                "delete"
            }
            8 => fragment(rng, &mut p, &d),
            _ => {
                let from = 14 + rng.below(p.len().saturating_sub(13));
                p.truncate(from.min(p.len()));
                let n = rng.below(64);
                p.extend(rng.bytes(n));
                "garbage tail"
            }
        };
        what.push(m);
    }
    if rng.one_in(2) {
        let d = decode(&p);
        if d.ip || matches!(d.class, Class::Truncated) {
            let l3 = d.l3;
            if p.len() >= l3 + 40 && p[l3] >> 4 == 6 {
                let v = (p.len() - l3 - 40).min(0xffff) as u16;
                put16(&mut p, l3 + 4, v);
                what.push("length fixed");
            } else if p.len() >= l3 + 20 && p[l3] >> 4 == 4 {
                let v = (p.len() - l3).min(0xffff) as u16;
                put16(&mut p, l3 + 2, v);
                what.push("length fixed");
            }
        }
    }
    if rng.one_in(2) {
        fix_checksums(&mut p);
        what.push("checksums fixed");
    }
    (p, what.join("+"))
}

// ---------------------------------------------------------------------------------------------
// The run: dataplane, per-packet checks, batches, report.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Xdp,
    Tc,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
enum Seen {
    Pass,
    Drop,
    Sent,
    Refused,
}

#[derive(Default)]
struct Report {
    packets: u64,
    /// (class, verdict) -> packets
    verdicts: BTreeMap<(&'static str, String), u64>,
    /// seed -> packets
    per_seed: BTreeMap<&'static str, u64>,
    /// counter name -> total movement
    counters: BTreeMap<&'static str, u64>,
    violations: u64,
    examples: Vec<String>,
}

impl Report {
    fn merge(&mut self, o: Report) {
        self.packets += o.packets;
        for (k, v) in o.verdicts {
            *self.verdicts.entry(k).or_default() += v;
        }
        for (k, v) in o.per_seed {
            *self.per_seed.entry(k).or_default() += v;
        }
        for (k, v) in o.counters {
            *self.counters.entry(k).or_default() += v;
        }
        self.violations += o.violations;
        self.examples.extend(o.examples);
    }

    fn text(&self, title: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "== {title}: {} packets", self.packets);
        let mut classes: BTreeMap<&str, u64> = BTreeMap::new();
        for ((c, _), n) in &self.verdicts {
            *classes.entry(c).or_default() += n;
        }
        let _ = writeln!(s, "class / verdict:");
        for (c, total) in &classes {
            let parts: Vec<String> = self
                .verdicts
                .iter()
                .filter(|((cc, _), _)| cc == c)
                .map(|((_, v), n)| format!("{v} {n}"))
                .collect();
            let _ = writeln!(s, "  {c:<12} {total:>10}  ({})", parts.join(", "));
        }
        let _ = writeln!(s, "counters moved:");
        for (c, n) in &self.counters {
            let _ = writeln!(s, "  {c:<18} {n}");
        }
        let _ = writeln!(s, "violations: {}", self.violations);
        for e in self.examples.iter().take(20) {
            let _ = writeln!(s, "  {e}");
        }
        s
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Counters whose every movement the oracle predicts. Malformed and fragment drops share one
/// bucket: a later IPv6 fragment may be told malformed first (either is a named drop reason).
const PREDICTED: &[&[u32]] = &[
    &[shared::STAT_MALFORMED, shared::STAT_FRAGMENT_DROP],
    &[shared::STAT_STRAY_RST],
    &[shared::STAT_ICMP_TRANSLATED],
    &[shared::STAT_ICMP_UNKNOWN],
    &[shared::STAT_ICMP_MISDIRECTED],
    &[shared::STAT_ARP_REPLY],
    &[shared::STAT_NDP_REPLY],
    &[shared::STAT_REJECT_NO_BACKEND],
    // never expected to move here
    &[shared::STAT_REJECT_SHARE],
    &[shared::STAT_CT_INSERT_FAILED],
    &[shared::STAT_BACKEND_GONE],
    &[shared::STAT_FIB_NO_NEIGH],
    &[shared::STAT_FIB_DROP],
    &[shared::STAT_NO_SNAT_ADDR],
    &[shared::STAT_TX_ERROR],
    &[shared::STAT_SNAT_PORT_REUSED],
];

struct Fuzzer {
    rec: Reconciler,
    mode: Mode,
    fx0: u32,
    fx1: u32,
    /// Counter movements predicted in this batch, by stat index.
    pred: Vec<u64>,
    /// Conntrack keys that may exist: the batch's baseline plus keys of flows valid packets
    /// opened.
    allowed: HashSet<FlowKey>,
    /// Check counters and conntrack after every packet (to pinpoint a batch's violation).
    slow: bool,
    report: Report,
    /// Violations seen in this batch.
    batch_violations: u64,
}

fn counters(rec: &Reconciler) -> Vec<u64> {
    rec.global_counters().expect("global counters")
}

impl Fuzzer {
    fn ct(&self, k: &FlowKey) -> Option<CtEntry> {
        self.rec.dataplane_ref().maps.conntrack.get(k, 0).ok()
    }

    fn ct_keys(&self) -> Vec<FlowKey> {
        self.rec
            .dataplane_ref()
            .maps
            .conntrack
            .keys()
            .filter_map(Result::ok)
            .collect()
    }

    fn violation(&mut self, seed: &str, what: &str, pkt: &[u8], detail: String) {
        self.report.violations += 1;
        self.batch_violations += 1;
        if self.report.examples.len() < 50 {
            self.report.examples.push(format!(
                "[{:?}] {seed} ({what}): {detail}; packet {}",
                self.mode,
                hex(pkt)
            ));
        }
    }

    fn run(&mut self, pkt: &[u8], side: Side) -> Result<(Seen, Vec<u8>), String> {
        let ifindex = if side == Side::Client {
            self.fx0
        } else {
            self.fx1
        };
        match self.rec.dataplane().test_run(pkt, ifindex) {
            Ok((v, out)) => Ok((
                match v {
                    Verdict::Pass => Seen::Pass,
                    Verdict::Drop => Seen::Drop,
                    Verdict::Tx | Verdict::Redirect => Seen::Sent,
                    Verdict::Other(v) => return Err(format!("verdict {v}")),
                },
                out,
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Deletes every conntrack entry and sets up the four tracked flows again.
    fn reset(&mut self) -> Established {
        for k in self.ct_keys() {
            let _ = self.rec.dataplane().maps.conntrack.remove(&k);
        }
        let mut e = Established::default();
        let open = |f: &mut Fuzzer, v6: bool, tcp: bool, cport: u16| -> Flow {
            let (c, vip): (IpAddr, IpAddr) = if v6 {
                (client6().into(), vip6().into())
            } else {
                (client4().into(), vip4().into())
            };
            let ip = |src: IpAddr, dst: IpAddr, smac, dmac| match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => Packet::eth(smac, dmac).ipv4(s, d),
                _ => unreachable!(),
            };
            let ip6 = |src: IpAddr, dst: IpAddr, smac, dmac| match (src, dst) {
                (IpAddr::V6(s), IpAddr::V6(d)) => Packet::eth(smac, dmac).ipv6(s, d),
                _ => unreachable!(),
            };
            let tcp_pkt = |src, dst, smac, dmac, sp, dp, flags| {
                if v6 {
                    ip6(src, dst, smac, dmac).tcp(sp, dp).flags(flags).build()
                } else {
                    ip(src, dst, smac, dmac).tcp(sp, dp).flags(flags).build()
                }
            };
            let first = if tcp {
                tcp_pkt(c, vip, CLIENT_MAC, FX0_MAC, cport, 80, TcpFlags::SYN)
            } else if v6 {
                ip6(c, vip, CLIENT_MAC, FX0_MAC)
                    .udp(cport, 53)
                    .payload(b"setup")
                    .build()
            } else {
                ip(c, vip, CLIENT_MAC, FX0_MAC)
                    .udp(cport, 53)
                    .payload(b"setup")
                    .build()
            };
            let (v, out) = f.run(&first, Side::Client).expect("setup packet");
            assert_eq!(v, Seen::Sent, "{:?}: setting up a flow", f.mode);
            let p = ParsedPacket::parse(&out).expect("setup output");
            let flow = Flow {
                port: p.src_port().unwrap(),
                backend: backend_index(p.dst_ip().unwrap()).expect("a backend"),
            };
            if tcp {
                let be: IpAddr = if v6 {
                    be6(flow.backend).into()
                } else {
                    be4(flow.backend).into()
                };
                let synack = tcp_pkt(
                    be,
                    snat_of(v6),
                    backend_mac(flow.backend),
                    FX1_MAC,
                    BACKEND_PORT,
                    flow.port,
                    TcpFlags::SYN | TcpFlags::ACK,
                );
                assert_eq!(f.run(&synack, Side::Backend).unwrap().0, Seen::Sent);
                let ack = tcp_pkt(c, vip, CLIENT_MAC, FX0_MAC, cport, 80, TcpFlags::ACK);
                assert_eq!(f.run(&ack, Side::Client).unwrap().0, Seen::Sent);
            }
            flow
        };
        e.t4 = open(self, false, true, 40000);
        e.u4 = open(self, false, false, 5353);
        e.t6 = open(self, true, true, 40001);
        e.u6 = open(self, true, false, 5354);
        e
    }

    /// The expected answer to an ARP request, or None when it must pass (RFC 826: a request
    /// for an address we announce, on an interface that announces).
    fn arp_answer(&self, p: &[u8], d: &Dec, side: Side) -> Option<Vec<u8>> {
        let a = d.l3;
        if side != Side::Client || p.len() < a + 28 {
            return None;
        }
        let arp = &p[a..a + 28];
        if arp[..8] != [0, 1, 8, 0, 6, 4, 0, 1] || arp[24..28] != vip4().octets() {
            return None;
        }
        let mut out = p.to_vec();
        let (sha, spa) = (arp[8..14].to_vec(), arp[14..18].to_vec());
        out[..6].copy_from_slice(&sha);
        out[6..12].copy_from_slice(&FX0_MAC);
        out[a + 7] = 2;
        out[a + 8..a + 14].copy_from_slice(&FX0_MAC);
        out[a + 14..a + 18].copy_from_slice(&vip4().octets());
        out[a + 18..a + 24].copy_from_slice(&sha);
        out[a + 24..a + 28].copy_from_slice(&spa);
        Some(out)
    }

    /// A solicitation: (the expected advertisement when the policy answers it, the RFC 4861
    /// 7.1.1 rule it breaks that the policy table does not list). The checksum field of the
    /// advertisement is zero; the caller verifies the one sent.
    fn ns_answer(&self, p: &[u8], d: &Dec, side: Side) -> (Option<Vec<u8>>, Option<&'static str>) {
        let (l3, l4) = (d.l3, d.l4);
        let len = d.end - l4;
        // the policy: no extension headers, 24..=128 bytes in 8-byte units, hop limit 255,
        // code 0, a valid checksum, from :: only to a solicited-node address; a VIP target, on
        // an interface that announces
        let src = ip_at(p, l3 + 8, true);
        let dst = &p[l3 + 24..l3 + 40];
        let unspecified = src == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let mut s = sum16(&p[l4..d.end]) + sum16(&p[l3 + 8..l3 + 40]) + 58 + len as u32;
        s = u32::from(fold(s));
        if side != Side::Client
            || !d.exts.is_empty()
            || !(24..=128).contains(&len)
            || !len.is_multiple_of(8)
            || p[l3 + 7] != 255
            || p[l4 + 1] != 0
            || s != 0xffff
            || p[l4 + 8..l4 + 24] != vip6().octets()
        {
            return (None, None);
        }
        let solicited_node = dst[..13] == [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff];
        // the rest of RFC 4861 7.1.1: every option longer than zero; from :: no source
        // link-layer address option, and only to a solicited-node address
        let mut finding = None;
        let mut o = l4 + 24;
        while o + 2 <= d.end {
            if p[o + 1] == 0 {
                finding = Some("NS with an option of length 0 answered (RFC 4861 7.1.1)");
                break;
            }
            if unspecified && p[o] == 1 {
                finding =
                    Some("NS from :: with a source link-layer option answered (RFC 4861 7.1.1)");
            }
            o += usize::from(p[o + 1]) * 8;
        }
        if unspecified && !solicited_node {
            if dst[..2] == [0xff, 2] && dst[11] == 1 && dst[12] == 0xff {
                finding = Some("NS from :: to a multicast address that is not solicited-node answered (RFC 4861 7.1.1)");
            } else {
                return (None, None);
            }
        }
        let mut out = p[..l4].to_vec();
        out.resize(l4 + 32, 0);
        let (dmac, daddr, flags): ([u8; 6], Ipv6Addr, u8) = if unspecified {
            ([0x33, 0x33, 0, 0, 0, 1], "ff02::1".parse().unwrap(), 0x20)
        } else {
            let mut m = [0; 6];
            m.copy_from_slice(&p[6..12]);
            (m, ip_to6(src), 0x60)
        };
        out[..6].copy_from_slice(&dmac);
        out[6..12].copy_from_slice(&FX0_MAC);
        put16(&mut out, l3 + 4, 32);
        out[l3 + 7] = 255;
        out[l3 + 8..l3 + 24].copy_from_slice(&vip6().octets());
        out[l3 + 24..l3 + 40].copy_from_slice(&daddr.octets());
        out[l4..l4 + 8].copy_from_slice(&[136, 0, 0, 0, flags, 0, 0, 0]);
        out[l4 + 8..l4 + 24].copy_from_slice(&vip6().octets());
        out[l4 + 24..l4 + 26].copy_from_slice(&[2, 1]);
        out[l4 + 26..l4 + 32].copy_from_slice(&FX0_MAC);
        (Some(out), finding)
    }

    /// The reset the policy answers a TCP segment with (RFC 9293 3.10.7.1), checksums zeroed.
    fn rst_answer(&self, p: &[u8], d: &Dec, side: Side) -> Vec<u8> {
        let (l3, l4) = (d.l3, d.l4);
        let mut out = p[..l4 + 20].to_vec();
        out[..6].copy_from_slice(&p[6..12]);
        // from the interface's MAC: fx0's entry (it announces); fx1 has none, so the unicast
        // address the segment came to
        out[6..12].copy_from_slice(if side == Side::Client {
            &FX0_MAC
        } else {
            &p[..6]
        });
        let (s, t, n) = if d.v6 { (8, 24, 16) } else { (12, 16, 4) };
        out[l3 + s..l3 + s + n].copy_from_slice(&p[l3 + t..l3 + t + n]);
        out[l3 + t..l3 + t + n].copy_from_slice(&p[l3 + s..l3 + s + n]);
        if d.v6 {
            put16(&mut out, l3 + 4, (l4 - l3 - 40 + 20) as u16);
            out[l3 + 7] = 64;
        } else {
            put16(&mut out, l3 + 2, (l4 - l3 + 20) as u16);
            out[l3 + 8] = 64;
            put16(&mut out, l3 + 10, 0);
        }
        let flags = d.tcp_flags;
        let doff = usize::from(p[l4 + 12] >> 4) * 4;
        let seg_len =
            (d.end - l4 - doff) as u32 + u32::from(flags & 2 != 0) + u32::from(flags & 1 != 0);
        out[l4..l4 + 2].copy_from_slice(&p[l4 + 2..l4 + 4]);
        out[l4 + 2..l4 + 4].copy_from_slice(&p[l4..l4 + 2]);
        let seq = u32::from_be_bytes(p[l4 + 4..l4 + 8].try_into().unwrap());
        if flags & 0x10 != 0 {
            out[l4 + 4..l4 + 8].copy_from_slice(&p[l4 + 8..l4 + 12]);
            out[l4 + 8..l4 + 12].copy_from_slice(&[0; 4]);
            out[l4 + 13] = 0x04;
        } else {
            out[l4 + 4..l4 + 8].copy_from_slice(&[0; 4]);
            out[l4 + 8..l4 + 12].copy_from_slice(&seq.wrapping_add(seg_len).to_be_bytes());
            out[l4 + 13] = 0x14;
        }
        out[l4 + 12] = 0x50;
        out[l4 + 14..l4 + 20].copy_from_slice(&[0; 6]);
        out
    }

    /// Runs one packet and checks every invariant.
    fn check(&mut self, seed: &'static str, what: &str, pkt: &[u8], side: Side) {
        let d = decode(pkt);
        let pre = match d.class {
            Class::Tcp | Class::Udp => d.key.and_then(|k| self.ct(&k)),
            Class::IcmpError => d.key.and_then(|k| self.ct(&reversed(&k))),
            _ => None,
        };
        let (seen, out) = match self.run(pkt, side) {
            Ok(r) => r,
            Err(e) => {
                // an skb (TC) or xdp_buff test run refuses a frame without a whole Ethernet
                // (TC: IP) header before the program runs; such a frame never reaches it
                let refused_ok = pkt.len() < 14
                    || (self.mode == Mode::Tc
                        && (d.class == Class::Truncated || pkt.len() < d.l3 + 40));
                if !refused_ok {
                    self.violation(seed, what, pkt, format!("test run failed: {e}"));
                }
                self.count(d.class, Seen::Refused, seed);
                return;
            }
        };
        self.count(d.class, seen, seed);
        if seen == Seen::Pass && out != pkt {
            self.violation(seed, what, pkt, format!("passed modified: {}", hex(&out)));
            return;
        }
        let to_vip = d.dst.is_some_and(is_vip);
        let bad = |f: &mut Fuzzer, detail: String| f.violation(seed, what, pkt, detail);
        match d.class {
            Class::NotIp | Class::Truncated | Class::OtherIp => {
                if seen != Seen::Pass {
                    bad(self, format!("{seen:?}, expected to pass untouched"));
                }
            }
            Class::Malformed(_) | Class::Fragment | Class::ShortIcmp => {
                let stat = if d.class == Class::Fragment {
                    shared::STAT_FRAGMENT_DROP
                } else {
                    shared::STAT_MALFORMED
                };
                // a malformed ICMP error is judged by its own destination, never the quoted
                // packet's (once a finding of this fuzzer, fixed in parse.h)
                match seen {
                    Seen::Drop if to_vip => self.pred[stat as usize] += 1,
                    Seen::Pass if !to_vip || d.class == Class::ShortIcmp => {}
                    _ => bad(
                        self,
                        format!(
                            "{} ({:?}) to {:?}: {seen:?} {}",
                            d.class.name(),
                            d.class,
                            d.dst,
                            hex(&out)
                        ),
                    ),
                }
            }
            Class::Arp => match (self.arp_answer(pkt, &d, side), seen) {
                (None, Seen::Pass) => {}
                (Some(want), Seen::Sent) if want == out => {
                    self.pred[shared::STAT_ARP_REPLY as usize] += 1;
                }
                (want, _) => bad(
                    self,
                    format!(
                        "ARP {seen:?} {}, expected {}",
                        hex(&out),
                        want.map_or("to pass".into(), |w| hex(&w))
                    ),
                ),
            },
            Class::Solicitation => {
                let (want, finding) = self.ns_answer(pkt, &d, side);
                match (want, seen) {
                    (None, Seen::Pass) => {}
                    // RFC 4861 7.1.1 says to discard it: left to the stack
                    (Some(_), Seen::Pass) if finding.is_some() => {}
                    (Some(want), Seen::Sent) => {
                        let mut got = out.clone();
                        let l4 = d.l4;
                        if got.len() == want.len() {
                            put16(&mut got, l4 + 2, 0);
                        }
                        let sums = ParsedPacket::parse(&out)
                            .map_err(|e| e.to_string())
                            .and_then(|p| p.verify_checksums().map_err(|e| e.to_string()));
                        if got != want || sums.is_err() {
                            bad(
                                self,
                                format!("NA {} ({sums:?}), expected {}", hex(&out), hex(&want)),
                            );
                        } else if let Some(f) = finding {
                            // answered although RFC 4861 7.1.1 says to discard it (once a
                            // finding of this fuzzer, fixed in announce.h)
                            bad(self, format!("{f}: {}", hex(&out)));
                        } else {
                            self.pred[shared::STAT_NDP_REPLY as usize] += 1;
                        }
                    }
                    (want, _) => bad(
                        self,
                        format!(
                            "NS {seen:?} {}, expected {}",
                            hex(&out),
                            want.map_or("to pass".into(), |w| hex(&w))
                        ),
                    ),
                }
            }
            Class::Tcp | Class::Udp => self.check_l4(seed, what, pkt, side, &d, pre, seen, &out),
            Class::IcmpError => self.check_icmp(seed, what, pkt, &d, pre, seen, &out),
        }
    }

    fn count(&mut self, class: Class, seen: Seen, seed: &'static str) {
        self.report.packets += 1;
        *self
            .report
            .verdicts
            .entry((class.name(), format!("{seen:?}")))
            .or_default() += 1;
        *self.report.per_seed.entry(seed).or_default() += 1;
    }

    #[allow(clippy::too_many_arguments)]
    fn check_l4(
        &mut self,
        seed: &'static str,
        what: &str,
        pkt: &[u8],
        side: Side,
        d: &Dec,
        pre: Option<CtEntry>,
        seen: Seen,
        out: &[u8],
    ) {
        let key = d.key.unwrap();
        let (src, dst) = (d.src.unwrap(), d.dst.unwrap());
        let (sport, dport) = (u16::from_be(key.sport), u16::from_be(key.dport));
        let tcp = d.class == Class::Tcp;
        let rst = tcp && d.tcp_flags & 0x04 != 0;
        let fe = frontend_of(dst, dport, d.proto);
        // a SYN (without ACK) on a closing flow opens a new one (docs/dataplane.md)
        let pre = pre.filter(|e| {
            !(tcp
                && e.dir == shared::CT_DIR_FORWARD
                && e.state == shared::CT_CLOSING
                && d.tcp_flags & 0x12 == 0x02)
        });
        let bad = |f: &mut Fuzzer, detail: String| f.violation(seed, what, pkt, detail);
        if pre.is_none() {
            match fe {
                None => {
                    if seen != Seen::Pass {
                        bad(self, format!("no flow, no frontend: {seen:?} {}", hex(out)));
                    }
                    return;
                }
                Some(_) if rst => {
                    if seen == Seen::Drop {
                        self.pred[shared::STAT_STRAY_RST as usize] += 1;
                    } else {
                        bad(self, format!("stray RST: {seen:?}"));
                    }
                    return;
                }
                Some(Serve::Reject) => {
                    self.pred[shared::STAT_REJECT_NO_BACKEND as usize] += 1;
                    if !tcp {
                        if seen != Seen::Drop {
                            bad(self, format!("UDP to a refusing frontend: {seen:?}"));
                        }
                        return;
                    }
                    if side == Side::Backend && pkt[0] & 1 == 1 {
                        // no interface MAC to answer a group address from
                        if seen != Seen::Drop {
                            bad(self, format!("reset to a group address: {seen:?}"));
                        }
                        return;
                    }
                    let mut want = self.rst_answer(pkt, d, side);
                    let mut got = out.to_vec();
                    // the TCP checksum is computed afresh; the IPv4 header's is updated
                    for at in [d.l4 + 16, d.l3 + 10] {
                        if got.len() == want.len() && (at == d.l4 + 16 || !d.v6) {
                            put16(&mut got, at, 0);
                            put16(&mut want, at, 0);
                        }
                    }
                    let sums = ParsedPacket::parse(out)
                        .map_err(|e| e.to_string())
                        .map(|p| p.checksum_errors());
                    let sums_ok = sums
                        .as_ref()
                        .is_ok_and(|errs| errs.iter().all(|e| e.kind == ChecksumKind::Ipv4Header))
                        && (d.v6 || own_residues(pkt).first() == own_residues(out).first());
                    if seen != Seen::Sent || got != want || !sums_ok {
                        bad(
                            self,
                            format!(
                                "reset {seen:?} {} ({sums:?}), expected {}",
                                hex(out),
                                hex(&want)
                            ),
                        );
                    }
                    return;
                }
                Some(Serve::Backends) => {}
            }
        }
        // forwarded: to a backend of the frontend (client side), or back to the flow's client
        if seen != Seen::Sent {
            bad(
                self,
                format!(
                    "{} {seen:?}, expected forwarded (tracked {})",
                    d.class.name(),
                    pre.is_some()
                ),
            );
            return;
        }
        let o = decode(out);
        let reply = pre.is_some_and(|e| e.dir == shared::CT_DIR_REPLY);
        let Some(ok) = o.key.filter(|_| matches!(o.class, Class::Tcp | Class::Udp)) else {
            bad(
                self,
                format!("forwarded output does not decode: {}", hex(out)),
            );
            return;
        };
        let (osrc, odst) = (o.src.unwrap(), o.dst.unwrap());
        let (osport, odport) = (u16::from_be(ok.sport), u16::from_be(ok.dport));
        let mut problems = Vec::new();
        if reply {
            // backend -> SNAT:port becomes VIP:port -> the client of that flow
            if !is_vip(osrc) || frontend_of(osrc, osport, d.proto) != Some(Serve::Backends) {
                problems.push(format!("source {osrc}:{osport} is not a frontend"));
            }
            let fwd = FlowKey::new(odst, odport, osrc, osport, d.proto);
            match self.ct(&fwd) {
                Some(e)
                    if e.dir == shared::CT_DIR_FORWARD
                        && shared::addr_bytes(dst) == e.nsrc
                        && shared::addr_bytes(src) == e.ndst
                        && u16::from_be(e.nsport) == dport
                        && u16::from_be(e.ndport) == sport => {}
                other => problems.push(format!(
                    "destination {odst}:{odport} is not this flow's client ({other:?})"
                )),
            }
            let known_client = odst == IpAddr::V4(client4()) || odst == IpAddr::V6(client6());
            if known_client && out[..12] != [CLIENT_MAC, FX0_MAC].concat() {
                problems.push("MACs".into());
            }
        } else {
            // client -> VIP:port becomes SNAT:port -> a backend of the frontend
            if !is_snat(osrc) || osrc.is_ipv6() != src.is_ipv6() {
                problems.push(format!("source {osrc} is not the SNAT address"));
            }
            match backend_index(odst) {
                Some(i) if odport == BACKEND_PORT && odst.is_ipv6() == dst.is_ipv6() => {
                    if out[..12] != [backend_mac(i), FX1_MAC].concat() {
                        problems.push("MACs".into());
                    }
                }
                _ => problems.push(format!("destination {odst}:{odport} is not a backend")),
            }
            if !(PORT_MIN..=PORT_MAX).contains(&osport) {
                problems.push(format!("source port {osport} outside the range"));
            }
            let rkey = FlowKey::new(odst, odport, osrc, osport, d.proto);
            match self.ct(&rkey) {
                Some(e)
                    if e.dir == shared::CT_DIR_REPLY
                        && e.ndst == shared::addr_bytes(src)
                        && u16::from_be(e.ndport) == sport
                        && e.nsrc == shared::addr_bytes(dst) => {}
                other => problems.push(format!("no reply entry back to this client ({other:?})")),
            }
            self.allowed.insert(key);
            self.allowed.insert(rkey);
        }
        // nothing but MACs, addresses, ports and checksums may change
        let mut may = rewritable(d, d.l3);
        may.push(d.l4..d.l4 + 4);
        let c = d.l4 + if tcp { 16 } else { 6 };
        may.push(c..c + 2);
        self.same_but(pkt, out, &may, &mut problems);
        self.same_residues(pkt, out, &mut problems);
        if !problems.is_empty() {
            bad(
                self,
                format!("forwarded {}: {}", hex(out), problems.join("; ")),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_icmp(
        &mut self,
        seed: &'static str,
        what: &str,
        pkt: &[u8],
        d: &Dec,
        pre: Option<CtEntry>,
        seen: Seen,
        out: &[u8],
    ) {
        let q = d.key.unwrap();
        let outer_dst = d.dst.unwrap();
        let bad = |f: &mut Fuzzer, detail: String| f.violation(seed, what, pkt, detail);
        let Some(e) = pre else {
            self.pred[shared::STAT_ICMP_UNKNOWN as usize] += 1;
            if seen != Seen::Pass {
                bad(self, format!("ICMP error about no flow: {seen:?}"));
            }
            return;
        };
        // only an error sent to the quoted packet's source is about a packet Blixt sent
        if shared::addr_bytes(outer_dst) != q.src {
            self.pred[shared::STAT_ICMP_MISDIRECTED as usize] += 1;
            if seen != Seen::Pass {
                bad(
                    self,
                    format!("misdirected ICMP error: {seen:?} {}", hex(out)),
                );
            }
            return;
        }
        self.pred[shared::STAT_ICMP_TRANSLATED as usize] += 1;
        if seen != Seen::Sent {
            bad(self, format!("ICMP error about a flow: {seen:?}"));
            return;
        }
        let o = decode(out);
        let mut problems = Vec::new();
        match (o.class, o.key, o.src, o.dst) {
            (Class::IcmpError, Some(ok), Some(osrc), Some(odst)) => {
                if shared::addr_bytes(osrc) != e.nsrc || shared::addr_bytes(odst) != e.ndst {
                    problems.push("outer addresses are not the flow's".into());
                }
                if !(is_vip(osrc) || is_snat(osrc)) {
                    problems.push(format!("source {osrc} is neither VIP nor SNAT"));
                }
                let to_backend = backend_index(odst).is_some();
                let to_client = self
                    .ct(&ok)
                    .is_some_and(|c| c.dir == shared::CT_DIR_FORWARD);
                if !(to_backend && is_snat(osrc) || to_client && is_vip(osrc)) {
                    problems.push(format!("destination {odst} is neither backend nor client"));
                }
                // the quote is of the packet the destination sent
                if ok.src != shared::addr_bytes(odst) || ok.dst != shared::addr_bytes(osrc) {
                    problems.push("quote not from the destination to the source".into());
                }
                if self.ct(&ok).is_none() {
                    problems.push("quoted tuple is not tracked".into());
                }
            }
            _ => problems.push("output does not decode as an ICMP error".into()),
        }
        let mut may = rewritable(d, d.l3);
        may.extend(rewritable(d, d.q));
        may.push(d.l4 + 2..d.l4 + 4);
        may.push(d.ql4..d.ql4 + 4);
        let c = d.ql4 + if q.proto == 6 { 16 } else { 6 };
        may.push(c..c + 2);
        self.same_but(pkt, out, &may, &mut problems);
        self.same_residues(pkt, out, &mut problems);
        if !problems.is_empty() {
            bad(
                self,
                format!("ICMP translated {}: {}", hex(out), problems.join("; ")),
            );
        }
    }

    fn same_but(
        &self,
        a: &[u8],
        b: &[u8],
        may: &[std::ops::Range<usize>],
        problems: &mut Vec<String>,
    ) {
        if a.len() != b.len() {
            problems.push(format!("length {} became {}", a.len(), b.len()));
            return;
        }
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i] && !may.iter().any(|r| r.contains(&i)))
        {
            problems.push(format!("byte {i} changed"));
        }
    }

    /// Checksums that verified still verify; wrong ones stay wrong by the same amount (by the
    /// oracle's own sums, and by the test parser's when the input parses).
    fn same_residues(&self, a: &[u8], b: &[u8], problems: &mut Vec<String>) {
        let (ra, rb) = (own_residues(a), own_residues(b));
        if ra != rb {
            problems.push(format!("checksum residues {ra:?} became {rb:?}"));
        }
        let Ok(pa) = ParsedPacket::parse(a) else {
            return;
        };
        let Ok(pb) = ParsedPacket::parse(b) else {
            problems.push("does not parse".into());
            return;
        };
        for (x, y) in residues(&pa).iter().zip(residues(&pb).iter()) {
            if x.0 == y.0 && x.2 && !y.2 {
                problems.push(format!("{} checksum broken", y.0));
            }
        }
    }

    /// One batch: state reset, the seed itself, then mutants (first the truncation sweep when
    /// asked), then counters and conntrack compared with what the oracle predicted.
    fn batch(&mut self, seed_idx: usize, rng: &mut Rng, n: u64, sweep: bool) {
        let est = self.reset();
        let mut srng = Rng::new(seed_idx as u64);
        let seeds = seeds(&est, &mut srng);
        let seed = &seeds[seed_idx];
        let (name, side, frame) = (seed.name, seed.side, seed.frame.clone());
        let before = counters(&self.rec);
        self.pred = vec![0; shared::STAT_MAX as usize];
        self.allowed = self.ct_keys().into_iter().collect();
        self.batch_violations = 0;
        let mut sent = 0u64;
        let step = |f: &mut Fuzzer, pkt: &[u8], what: &str| {
            let c0 = if f.slow { Some(counters(&f.rec)) } else { None };
            let p0 = f.pred.clone();
            f.check(name, what, pkt, side);
            if let Some(c0) = c0 {
                let c1 = counters(&f.rec);
                let got: Vec<u64> = c1.iter().zip(&c0).map(|(a, b)| a - b).collect();
                let want: Vec<u64> = f.pred.iter().zip(&p0).map(|(a, b)| a - b).collect();
                if let Some(detail) = counter_mismatch(&got, &want) {
                    f.violation(name, what, pkt, format!("counters: {detail}"));
                }
                if let Some(k) = f.ct_keys().into_iter().find(|k| !f.allowed.contains(k)) {
                    f.violation(name, what, pkt, format!("conntrack entry created: {k:?}"));
                    let _ = f.rec.dataplane().maps.conntrack.remove(&k);
                }
            }
        };
        step(self, &frame, "seed");
        sent += 1;
        if sweep {
            for len in 0..frame.len() {
                step(self, &frame[..len], "truncated");
                sent += 1;
            }
        }
        while sent < n {
            let (m, what) = mutate(rng, &frame);
            step(self, &m, &what);
            sent += 1;
        }
        let after = counters(&self.rec);
        let got: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        for (i, g) in got.iter().enumerate() {
            if *g > 0 {
                *self
                    .report
                    .counters
                    .entry(shared::STAT_NAMES[i])
                    .or_default() += g;
            }
        }
        if !self.slow {
            if let Some(detail) = counter_mismatch(&got, &self.pred) {
                self.violation(name, "batch", &frame, format!("counters: {detail}"));
            }
            let extra: Vec<FlowKey> = self
                .ct_keys()
                .into_iter()
                .filter(|k| !self.allowed.contains(k))
                .collect();
            if !extra.is_empty() {
                self.violation(
                    name,
                    "batch",
                    &frame,
                    format!("{} conntrack entries no valid packet opened", extra.len()),
                );
            }
        }
    }
}

/// The bytes a rewrite may change in the IP header at `l3`: the MACs, the addresses and the
/// IPv4 header checksum.
fn rewritable(d: &Dec, l3: usize) -> Vec<std::ops::Range<usize>> {
    let (s, n) = if d.v6 { (8, 32) } else { (10, 10) };
    vec![0..12, l3 + s..l3 + s + n]
}

fn ip_to6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

fn counter_mismatch(got: &[u64], want: &[u64]) -> Option<String> {
    let mut diffs = Vec::new();
    for group in PREDICTED {
        let g: u64 = group.iter().map(|&i| got[i as usize]).sum();
        let w: u64 = group.iter().map(|&i| want[i as usize]).sum();
        if g != w {
            let names: Vec<&str> = group
                .iter()
                .map(|&i| shared::STAT_NAMES[i as usize])
                .collect();
            diffs.push(format!("{} moved {g}, expected {w}", names.join("+")));
        }
    }
    (!diffs.is_empty()).then(|| diffs.join("; "))
}

fn setup(mode: Mode, f: &(impl Fn(Fuzzer) -> Report + Sync)) -> Report {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("needs root (BPF, network namespaces): run as root, as `make test` does");
    }
    let ns = NetNs::new("blxfz").expect("fuzz netns");
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
    ns.ip_batch(&lines).expect("fuzz network");
    ns.sysctl_set("net.ipv4.ip_forward", "1").unwrap();
    ns.sysctl_set("net.ipv6.conf.all.forwarding", "1").unwrap();
    ns.run_in(move || {
        let attach = match mode {
            Mode::Xdp => AttachMode::Auto,
            Mode::Tc => AttachMode::Tc,
        };
        let dp = Dataplane::load(DataplaneOptions {
            max_frontends: 16,
            max_backends: 64,
            ring_size: 1021,
            conntrack_entries: 65536,
            pin_dir: None,
            attach,
            force_off: vec![],
        })
        .unwrap_or_else(|e| panic!("loading the dataplane ({mode:?}): {e}"));
        let want = if mode == Mode::Tc {
            Hook::Tc
        } else {
            Hook::Xdp
        };
        assert_eq!(dp.plan().hook, want, "{mode:?}: {:?}", dp.plan());
        let mut rec = Reconciler::new(dp).expect("reconciler");
        rec.set_node_config(&NodeConfig {
            snat_v4: Some(snat4().into()),
            snat_v6: Some(snat6().into()),
            port_min: PORT_MIN,
            port_max: PORT_MAX,
            ..NodeConfig::default()
        })
        .expect("node config");
        rec.apply(&snapshot()).expect("apply snapshot");
        rec.dataplane()
            .announce_on("fx0", true)
            .expect("announce on fx0");
        let idx = |n: &str| {
            let c = std::ffi::CString::new(n).unwrap();
            // SAFETY: valid C string.
            unsafe { libc::if_nametoindex(c.as_ptr()) }
        };
        let fz = Fuzzer {
            rec,
            mode,
            fx0: idx("fx0"),
            fx1: idx("fx1"),
            pred: vec![0; shared::STAT_MAX as usize],
            allowed: HashSet::new(),
            slow: false,
            report: Report::default(),
            batch_violations: 0,
        };
        assert!(fz.fx0 != 0 && fz.fx1 != 0, "fuzz interfaces");
        f(fz)
    })
}

/// Fuzzes `packets` packets in `mode`: rounds over every seed, a batch each, the first round
/// with every truncation of the seed.
fn fuzz(mode: Mode, packets: u64, prng_seed: u64) -> Report {
    setup(mode, &|mut fz: Fuzzer| {
        let mut probe = Rng::new(0);
        let n_seeds = seeds(&Established::default(), &mut probe).len();
        // the same packets through both hooks
        let mut rng = Rng::new(prng_seed);
        let per_round = packets.div_ceil(BATCH * n_seeds as u64).max(1);
        let batch = packets.div_ceil(per_round * n_seeds as u64);
        for round in 0..per_round {
            for s in 0..n_seeds {
                let saved = rng.clone();
                fz.batch(s, &mut rng, batch, round == 0);
                if fz.batch_violations > 0 && !fz.slow {
                    // replay the batch packet by packet to name the packets at fault
                    let mut again = saved;
                    fz.slow = true;
                    fz.batch(s, &mut again, batch, round == 0);
                    fz.slow = false;
                }
            }
        }
        fz.report
    })
}

fn run_and_report(packets: u64, title: &str) {
    let seed = std::env::var("BLIXT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_b11c);
    let mut all = Report::default();
    let mut text = String::new();
    for mode in [Mode::Xdp, Mode::Tc] {
        let t = std::time::Instant::now();
        let r = fuzz(mode, packets, seed);
        let _ = writeln!(
            text,
            "{}(in {:.1} s)\n",
            r.text(&format!("{title} {mode:?}, PRNG seed {seed:#x}")),
            t.elapsed().as_secs_f64()
        );
        all.merge(r);
    }
    let _ = writeln!(text, "{}", all.text(&format!("{title} total")));
    print!("{text}");
    let _ = std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target"));
    let _ = std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/fuzz-report.txt"),
        &text,
    );
    assert_eq!(all.violations, 0, "dataplane invariants violated:\n{text}");
}

#[test]
fn fuzz_quick() {
    run_and_report(QUICK_PACKETS, "quick");
}

#[test]
#[ignore = "long run (make fuzz)"]
fn fuzz_long() {
    let packets = std::env::var("BLIXT_FUZZ_PACKETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(LONG_PACKETS);
    run_and_report(packets, "long");
}
