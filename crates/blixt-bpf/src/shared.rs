//! Rust mirror of `bpf/include/blixt_shared.h`. The C header is the source of truth; every struct
//! here is `#[repr(C)]` with explicit padding and no bool/enum fields, and
//! `tests/layout.rs` checks sizes and field offsets against the compiled object's BTF.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;
pub const SLOT_REJECT: u32 = u32::MAX;

pub const FE_F_ALL_REJECT: u32 = 1 << 0;
pub const VIP_F_ANNOUNCE: u32 = 1 << 0;
pub const IFACE_F_ANNOUNCE: u8 = 1 << 0;
pub const BE_F_ACTIVE: u8 = 1 << 0;
pub const BE_F_TERMINATING: u8 = 1 << 1;

pub const CT_NEW: u8 = 0;
pub const CT_ESTABLISHED: u8 = 1;
pub const CT_CLOSING: u8 = 2;
pub const CT_DIR_FORWARD: u8 = 0;
pub const CT_DIR_REPLY: u8 = 1;

/// Global counters (`enum blixt_stat`), in index order, with their metric names.
pub const STAT_NAMES: &[&str] = &[
    "reject_no_backend",
    "reject_share",
    "ct_insert_failed",
    "ct_miss_midstream",
    "backend_gone",
    "fragment_drop",
    "fib_no_neigh",
    "fib_drop",
    "icmp_translated",
    "icmp_unknown",
    "no_snat_addr",
    "tx_error",
    "arp_reply",
    "ndp_reply",
    "snat_port_reused",
    "malformed",
    "icmp_misdirected",
    "stray_rst",
    "snat_exhausted",
];

pub const STAT_REJECT_NO_BACKEND: u32 = 0;
pub const STAT_REJECT_SHARE: u32 = 1;
pub const STAT_CT_INSERT_FAILED: u32 = 2;
pub const STAT_CT_MISS_MIDSTREAM: u32 = 3;
pub const STAT_BACKEND_GONE: u32 = 4;
pub const STAT_FRAGMENT_DROP: u32 = 5;
pub const STAT_FIB_NO_NEIGH: u32 = 6;
pub const STAT_FIB_DROP: u32 = 7;
pub const STAT_ICMP_TRANSLATED: u32 = 8;
pub const STAT_ICMP_UNKNOWN: u32 = 9;
pub const STAT_NO_SNAT_ADDR: u32 = 10;
pub const STAT_TX_ERROR: u32 = 11;
pub const STAT_ARP_REPLY: u32 = 12;
pub const STAT_NDP_REPLY: u32 = 13;
pub const STAT_SNAT_PORT_REUSED: u32 = 14;
pub const STAT_MALFORMED: u32 = 15;
pub const STAT_ICMP_MISDIRECTED: u32 = 16;
pub const STAT_STRAY_RST: u32 = 17;
pub const STAT_SNAT_EXHAUSTED: u32 = 18;
pub const STAT_MAX: u32 = 19;

/// `magic` of the metadata XDP leaves for the TC companion (BLIXT_META_MAGIC).
pub const META_MAGIC: u32 = 0xb1c7_a11d;

/// A 16-byte address as the dataplane stores it (IPv4 in the first four bytes).
pub fn addr_bytes(addr: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

pub fn family_of(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        FAMILY_V4
    } else {
        FAMILY_V6
    }
}

/// The inverse of [`addr_bytes`].
pub fn addr_from(bytes: &[u8; 16], family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

macro_rules! pod {
    ($($t:ty),*) => {$(
        // SAFETY: #[repr(C)], only integer and byte-array fields, every padding byte is an
        // explicit field, so any bit pattern is valid and no byte is uninitialised.
        unsafe impl aya::Pod for $t {}
    )*};
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FrontendKey {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrontendValue {
    pub id: u32,
    pub ring: u32,
    pub flags: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendValue {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub family: u8,
    pub flags: u8,
    pub gen: u32,
    pub frontend_id: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub pad: [u8; 2],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtEntry {
    pub nsrc: [u8; 16],
    pub ndst: [u8; 16],
    pub nsport: u16,
    pub ndport: u16,
    pub backend_id: u32,
    pub backend_gen: u32,
    pub frontend_id: u32,
    pub state: u8,
    pub dir: u8,
    pub flags: u8,
    pub pad0: u8,
    pub pad1: u32,
    pub last_seen_ns: u64,
    pub created_ns: u64,
    /// Next hop cached from bpf_fib_lookup (0: none yet).
    pub fib_ifindex: u32,
    pub fib_smac: [u8; 6],
    pub fib_dmac: [u8; 6],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    pub snat_v4: [u8; 16],
    pub snat_v6: [u8; 16],
    /// Host byte order, inclusive.
    pub port_min: u16,
    pub port_max: u16,
    pub flags: u32,
    pub tcp_syn_timeout_s: u32,
    pub tcp_established_timeout_s: u32,
    pub tcp_closing_timeout_s: u32,
    pub udp_timeout_s: u32,
    /// Slots per Maglev ring (the program's load-time constant), for readers of the maps.
    pub ring_size: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub rejects: u64,
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, o: Self) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.new_flows += o.new_flows;
        self.rejects += o.rejects;
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub addr: [u8; 16],
    pub family: u8,
    pub pad: [u8; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Iface {
    pub mac: [u8; 6],
    pub flags: u8,
    pub pad: u8,
}

pod!(
    FrontendKey,
    FrontendValue,
    BackendValue,
    FlowKey,
    CtEntry,
    Config,
    Counters,
    VipKey,
    Iface
);

impl FlowKey {
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, proto: u8) -> Self {
        FlowKey {
            src: addr_bytes(src),
            dst: addr_bytes(dst),
            sport: sport.to_be(),
            dport: dport.to_be(),
            proto,
            family: family_of(src),
            pad: [0; 2],
        }
    }

    pub fn src_addr(&self) -> IpAddr {
        addr_from(&self.src, self.family)
    }

    pub fn dst_addr(&self) -> IpAddr {
        addr_from(&self.dst, self.family)
    }

    fn words(&self) -> [u32; 10] {
        let mut b = [0u8; 40];
        b[..16].copy_from_slice(&self.src);
        b[16..32].copy_from_slice(&self.dst);
        b[32..34].copy_from_slice(&self.sport.to_ne_bytes());
        b[34..36].copy_from_slice(&self.dport.to_ne_bytes());
        b[36] = self.proto;
        b[37] = self.family;
        std::array::from_fn(|i| {
            u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
        })
    }

    /// The dataplane's flow hash (`flow_hash()` in lb.bpf.c): MurmurHash3 x86_32 over the
    /// key's ten native-endian words. Tests use it to predict which ring slot a flow lands on.
    pub fn hash(&self) -> u32 {
        let mut h: u32 = 0x3b1a_7e11;
        for w in self.words() {
            let c = w
                .wrapping_mul(0xcc9e_2d51)
                .rotate_left(15)
                .wrapping_mul(0x1b87_3593);
            h ^= c;
            h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
        }
        h ^= 40;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
        h
    }
}
