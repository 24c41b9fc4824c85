//! A small builder for test packets: Ethernet (+802.1Q), IPv4 (+options, fragments) or IPv6
//! (+extension headers), then TCP, UDP, ICMP or ICMPv6, with every length and checksum filled in.
//!
//! ```
//! use std::net::Ipv6Addr;
//! use blixt_bpf::testing::{Packet, TcpFlags};
//!
//! let frame: Vec<u8> = Packet::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
//!     .vlan(100)
//!     .ipv6("2001:db8::1".parse().unwrap(), "2001:db8::2".parse::<Ipv6Addr>().unwrap())
//!     .hop_limit(64)
//!     .tcp(40000, 443)
//!     .flags(TcpFlags::SYN)
//!     .seq(1)
//!     .build();
//! assert_eq!(frame.len(), 14 + 4 + 40 + 20);
//! ```
//!
//! Starting with [`Packet::ipv4`] or [`Packet::ipv6`] instead of [`Packet::eth`] yields a bare IP
//! packet, which is what the `icmp_*` error constructors quote.
//!
//! The checksum code here is deliberately not shared with [`super::parse`]: the parser
//! recomputes everything from scratch with its own arithmetic.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::TcpFlags;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// TPID of an 802.1Q VLAN tag (what [`EthBuilder::vlan`] uses).
pub const TPID_8021Q: u16 = 0x8100;
/// TPID of an 802.1ad service tag (outer tag of a QinQ stack).
pub const TPID_8021AD: u16 = 0x88a8;

const PROTO_HOPOPTS: u8 = 0;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ROUTING: u8 = 43;
const PROTO_FRAGMENT: u8 = 44;
const PROTO_ICMPV6: u8 = 58;
const PROTO_DSTOPTS: u8 = 60;

/// Entry point of the builder. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct Packet;

impl Packet {
    /// An Ethernet frame from `src` to `dst`.
    pub fn eth(src: [u8; 6], dst: [u8; 6]) -> EthBuilder {
        EthBuilder {
            eth: EthSpec {
                src,
                dst,
                tags: Vec::new(),
            },
        }
    }

    /// A bare IPv4 packet (no Ethernet header), e.g. to quote inside an ICMP error.
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Ipv4Builder {
        Ipv4Builder {
            eth: None,
            ip: V4Spec::new(src, dst),
        }
    }

    /// A bare IPv6 packet (no Ethernet header), e.g. to quote inside an ICMPv6 error.
    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Ipv6Builder {
        Ipv6Builder {
            eth: None,
            ip: V6Spec::new(src, dst),
        }
    }
}

#[derive(Debug, Clone)]
struct EthSpec {
    src: [u8; 6],
    dst: [u8; 6],
    /// (TPID, TCI), outermost first.
    tags: Vec<(u16, u16)>,
}

/// Ethernet header under construction.
#[derive(Debug, Clone)]
pub struct EthBuilder {
    eth: EthSpec,
}

impl EthBuilder {
    /// Adds an 802.1Q tag (TPID 0x8100, PCP 0, DEI 0) with VLAN id `vid`. Calling it again stacks
    /// another tag inside the previous one.
    ///
    /// # Panics
    /// If `vid` does not fit in 12 bits.
    pub fn vlan(self, vid: u16) -> Self {
        self.vlan_tag(TPID_8021Q, 0, false, vid)
    }

    /// Adds a VLAN tag with every field given (e.g. [`TPID_8021AD`] for the outer tag of QinQ).
    ///
    /// # Panics
    /// If `vid` does not fit in 12 bits or `pcp` in 3 bits.
    pub fn vlan_tag(mut self, tpid: u16, pcp: u8, dei: bool, vid: u16) -> Self {
        assert!(vid <= 0x0fff, "VLAN id {vid} does not fit in 12 bits");
        assert!(pcp <= 7, "VLAN PCP {pcp} does not fit in 3 bits");
        let tci = (u16::from(pcp) << 13) | (u16::from(dei) << 12) | vid;
        self.eth.tags.push((tpid, tci));
        self
    }

    /// Continues with an IPv4 header.
    pub fn ipv4(self, src: Ipv4Addr, dst: Ipv4Addr) -> Ipv4Builder {
        Ipv4Builder {
            eth: Some(self.eth),
            ip: V4Spec::new(src, dst),
        }
    }

    /// Continues with an IPv6 header.
    pub fn ipv6(self, src: Ipv6Addr, dst: Ipv6Addr) -> Ipv6Builder {
        Ipv6Builder {
            eth: Some(self.eth),
            ip: V6Spec::new(src, dst),
        }
    }

    /// Finishes the frame with an arbitrary EtherType and payload (ARP, LLDP, garbage, ...).
    pub fn build_raw(&self, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        frame(Some(&self.eth), ethertype, payload)
    }
}

#[derive(Debug, Clone)]
struct V4Spec {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    tos: u8,
    id: u16,
    dont_fragment: bool,
    more_fragments: bool,
    frag_offset: u16,
    options: Vec<u8>,
    checksum: Option<u16>,
}

impl V4Spec {
    fn new(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        V4Spec {
            src,
            dst,
            ttl: 64,
            tos: 0,
            id: 0,
            dont_fragment: false,
            more_fragments: false,
            frag_offset: 0,
            options: Vec::new(),
            checksum: None,
        }
    }
}

/// IPv4 header under construction. Defaults: TTL 64, TOS 0, id 0, no flags, no options.
#[derive(Debug, Clone)]
pub struct Ipv4Builder {
    eth: Option<EthSpec>,
    ip: V4Spec,
}

impl Ipv4Builder {
    /// Time to live (default 64).
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ip.ttl = ttl;
        self
    }

    /// The whole TOS byte (DSCP << 2 | ECN).
    pub fn tos(mut self, tos: u8) -> Self {
        self.ip.tos = tos;
        self
    }

    /// Identification field (default 0).
    pub fn id(mut self, id: u16) -> Self {
        self.ip.id = id;
        self
    }

    /// Sets the DF flag.
    pub fn dont_fragment(mut self) -> Self {
        self.ip.dont_fragment = true;
        self
    }

    /// Makes this packet a fragment: `offset` is the fragment offset field, in 8-byte units;
    /// `more` is the MF flag. The transport header and checksum that follow are computed over
    /// what this packet carries; for a non-first fragment use [`Ipv4Builder::raw`], or build the
    /// whole datagram and split it with `build_fragments`.
    ///
    /// # Panics
    /// If `offset` does not fit in 13 bits.
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        assert!(
            offset <= 0x1fff,
            "fragment offset {offset} does not fit in 13 bits"
        );
        self.ip.frag_offset = offset;
        self.ip.more_fragments = more;
        self
    }

    /// IPv4 options, padded with zeros (End of Options List) to a multiple of 4 bytes; IHL grows
    /// accordingly.
    ///
    /// # Panics
    /// If the padded options exceed 40 bytes.
    pub fn options(mut self, options: &[u8]) -> Self {
        let mut padded = options.to_vec();
        padded.resize(options.len().div_ceil(4) * 4, 0);
        assert!(
            padded.len() <= 40,
            "IPv4 options are {} bytes, at most 40 fit",
            padded.len()
        );
        self.ip.options = padded;
        self
    }

    /// Forces the header checksum field to `value` instead of the correct one (negative tests).
    pub fn header_checksum(mut self, value: u16) -> Self {
        self.ip.checksum = Some(value);
        self
    }

    fn finish(self, l4: L4Spec, payload: Vec<u8>) -> Upper {
        Upper {
            eth: self.eth,
            ip: IpSpec::V4(self.ip),
            l4,
            payload,
            checksum: None,
        }
    }

    /// Continues with a TCP header.
    pub fn tcp(self, src_port: u16, dst_port: u16) -> TcpBuilder {
        TcpBuilder(self.finish(L4Spec::tcp(src_port, dst_port), Vec::new()))
    }

    /// Continues with a UDP header.
    pub fn udp(self, src_port: u16, dst_port: u16) -> UdpBuilder {
        UdpBuilder(self.finish(
            L4Spec::Udp {
                src_port,
                dst_port,
                zero_checksum: false,
            },
            Vec::new(),
        ))
    }

    /// An ICMP message with any type, code and "rest of header" (bytes 4..8).
    pub fn icmp(self, icmp_type: u8, code: u8, rest: [u8; 4]) -> IcmpBuilder {
        IcmpBuilder(self.finish(
            L4Spec::Icmp {
                v6: false,
                icmp_type,
                code,
                rest,
            },
            Vec::new(),
        ))
    }

    /// ICMP echo request (type 8).
    pub fn icmp_echo_request(self, id: u16, seq: u16) -> IcmpBuilder {
        self.icmp(8, 0, id_seq(id, seq))
    }

    /// ICMP echo reply (type 0).
    pub fn icmp_echo_reply(self, id: u16, seq: u16) -> IcmpBuilder {
        self.icmp(0, 0, id_seq(id, seq))
    }

    /// ICMP destination unreachable (type 3) with `code` (0 net, 1 host, 2 protocol, 3 port,
    /// 4 fragmentation needed — prefer [`Ipv4Builder::icmp_frag_needed`], 13 administratively
    /// prohibited, ...), quoting the first `quote_len` bytes of the bare IP packet `quoted`.
    pub fn icmp_dest_unreachable(self, code: u8, quoted: &[u8], quote_len: usize) -> IcmpBuilder {
        self.icmp(3, code, [0; 4]).payload(quote(quoted, quote_len))
    }

    /// ICMP fragmentation needed (type 3, code 4) advertising next-hop `mtu`.
    pub fn icmp_frag_needed(self, mtu: u16, quoted: &[u8], quote_len: usize) -> IcmpBuilder {
        let [hi, lo] = mtu.to_be_bytes();
        self.icmp(3, 4, [0, 0, hi, lo])
            .payload(quote(quoted, quote_len))
    }

    /// ICMP time exceeded (type 11), code 0 (TTL exceeded in transit) or 1 (reassembly).
    pub fn icmp_time_exceeded(self, code: u8, quoted: &[u8], quote_len: usize) -> IcmpBuilder {
        self.icmp(11, code, [0; 4])
            .payload(quote(quoted, quote_len))
    }

    /// Any other protocol number with an opaque payload; no checksum is computed for it.
    pub fn raw(self, protocol: u8, payload: &[u8]) -> RawBuilder {
        RawBuilder(self.finish(L4Spec::Raw { protocol }, payload.to_vec()))
    }
}

#[derive(Debug, Clone, Copy)]
enum Ext {
    HopByHop,
    DestOpts,
    Routing,
    Fragment { offset: u16, more: bool, id: u32 },
}

#[derive(Debug, Clone)]
struct V6Spec {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    traffic_class: u8,
    flow_label: u32,
    exts: Vec<Ext>,
    fragment_id: u32,
}

impl V6Spec {
    fn new(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        V6Spec {
            src,
            dst,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
            exts: Vec::new(),
            fragment_id: 0,
        }
    }
}

/// IPv6 header under construction. Defaults: hop limit 64, traffic class 0, flow label 0, no
/// extension headers. Extension headers appear in the order the `ext_*` calls are made.
#[derive(Debug, Clone)]
pub struct Ipv6Builder {
    eth: Option<EthSpec>,
    ip: V6Spec,
}

impl Ipv6Builder {
    /// Hop limit (default 64).
    pub fn hop_limit(mut self, hop_limit: u8) -> Self {
        self.ip.hop_limit = hop_limit;
        self
    }

    /// Traffic class byte.
    pub fn traffic_class(mut self, traffic_class: u8) -> Self {
        self.ip.traffic_class = traffic_class;
        self
    }

    /// Flow label.
    ///
    /// # Panics
    /// If `flow_label` does not fit in 20 bits.
    pub fn flow_label(mut self, flow_label: u32) -> Self {
        assert!(
            flow_label <= 0x000f_ffff,
            "flow label {flow_label:#x} does not fit in 20 bits"
        );
        self.ip.flow_label = flow_label;
        self
    }

    /// Appends an 8-byte Hop-by-Hop Options header (one PadN option).
    pub fn ext_hop_by_hop(mut self) -> Self {
        self.ip.exts.push(Ext::HopByHop);
        self
    }

    /// Appends an 8-byte Destination Options header (one PadN option).
    pub fn ext_dest_opts(mut self) -> Self {
        self.ip.exts.push(Ext::DestOpts);
        self
    }

    /// Appends an 8-byte Routing header: routing type 253 (experimental), segments left 0, so
    /// the IPv6 destination stays the final destination.
    pub fn ext_routing(mut self) -> Self {
        self.ip.exts.push(Ext::Routing);
        self
    }

    /// Appends a Fragment header: `offset` in 8-byte units, `more` is the M flag. As for IPv4
    /// fragments, a following transport header is computed over what this packet carries.
    ///
    /// # Panics
    /// If `offset` does not fit in 13 bits.
    pub fn ext_fragment(mut self, offset: u16, more: bool, id: u32) -> Self {
        assert!(
            offset <= 0x1fff,
            "fragment offset {offset} does not fit in 13 bits"
        );
        self.ip.exts.push(Ext::Fragment { offset, more, id });
        self
    }

    /// Identification used by `build_fragments` (default 0).
    pub fn fragment_id(mut self, id: u32) -> Self {
        self.ip.fragment_id = id;
        self
    }

    fn finish(self, l4: L4Spec, payload: Vec<u8>) -> Upper {
        Upper {
            eth: self.eth,
            ip: IpSpec::V6(self.ip),
            l4,
            payload,
            checksum: None,
        }
    }

    /// Continues with a TCP header.
    pub fn tcp(self, src_port: u16, dst_port: u16) -> TcpBuilder {
        TcpBuilder(self.finish(L4Spec::tcp(src_port, dst_port), Vec::new()))
    }

    /// Continues with a UDP header.
    pub fn udp(self, src_port: u16, dst_port: u16) -> UdpBuilder {
        UdpBuilder(self.finish(
            L4Spec::Udp {
                src_port,
                dst_port,
                zero_checksum: false,
            },
            Vec::new(),
        ))
    }

    /// An ICMPv6 message with any type, code and "rest of header" (bytes 4..8).
    pub fn icmpv6(self, icmp_type: u8, code: u8, rest: [u8; 4]) -> IcmpBuilder {
        IcmpBuilder(self.finish(
            L4Spec::Icmp {
                v6: true,
                icmp_type,
                code,
                rest,
            },
            Vec::new(),
        ))
    }

    /// ICMPv6 echo request (type 128).
    pub fn icmpv6_echo_request(self, id: u16, seq: u16) -> IcmpBuilder {
        self.icmpv6(128, 0, id_seq(id, seq))
    }

    /// ICMPv6 echo reply (type 129).
    pub fn icmpv6_echo_reply(self, id: u16, seq: u16) -> IcmpBuilder {
        self.icmpv6(129, 0, id_seq(id, seq))
    }

    /// ICMPv6 destination unreachable (type 1) with `code` (0 no route, 1 administratively
    /// prohibited, 3 address unreachable, 4 port unreachable, ...), quoting the first
    /// `quote_len` bytes of the bare IPv6 packet `quoted`.
    pub fn icmpv6_dest_unreachable(self, code: u8, quoted: &[u8], quote_len: usize) -> IcmpBuilder {
        self.icmpv6(1, code, [0; 4])
            .payload(quote(quoted, quote_len))
    }

    /// ICMPv6 packet too big (type 2, code 0) advertising `mtu`.
    pub fn icmpv6_packet_too_big(self, mtu: u32, quoted: &[u8], quote_len: usize) -> IcmpBuilder {
        self.icmpv6(2, 0, mtu.to_be_bytes())
            .payload(quote(quoted, quote_len))
    }

    /// ICMPv6 time exceeded (type 3), code 0 (hop limit exceeded) or 1 (reassembly).
    pub fn icmpv6_time_exceeded(self, code: u8, quoted: &[u8], quote_len: usize) -> IcmpBuilder {
        self.icmpv6(3, code, [0; 4])
            .payload(quote(quoted, quote_len))
    }

    /// Any other next-header value with an opaque payload; no checksum is computed for it.
    pub fn raw(self, protocol: u8, payload: &[u8]) -> RawBuilder {
        RawBuilder(self.finish(L4Spec::Raw { protocol }, payload.to_vec()))
    }
}

#[derive(Debug, Clone)]
enum IpSpec {
    V4(V4Spec),
    V6(V6Spec),
}

#[derive(Debug, Clone)]
struct TcpSpec {
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    window: u16,
    urgent: u16,
    options: Vec<u8>,
}

#[derive(Debug, Clone)]
enum L4Spec {
    Tcp(TcpSpec),
    Udp {
        src_port: u16,
        dst_port: u16,
        zero_checksum: bool,
    },
    Icmp {
        v6: bool,
        icmp_type: u8,
        code: u8,
        rest: [u8; 4],
    },
    Raw {
        protocol: u8,
    },
}

impl L4Spec {
    fn tcp(src_port: u16, dst_port: u16) -> Self {
        L4Spec::Tcp(TcpSpec {
            src_port,
            dst_port,
            seq: 0,
            ack: 0,
            flags: TcpFlags::empty(),
            window: 65535,
            urgent: 0,
            options: Vec::new(),
        })
    }
}

/// Everything below the Ethernet header; shared by the final builders.
#[derive(Debug, Clone)]
struct Upper {
    eth: Option<EthSpec>,
    ip: IpSpec,
    l4: L4Spec,
    payload: Vec<u8>,
    checksum: Option<u16>,
}

macro_rules! final_builder_methods {
    () => {
        /// Bytes after the transport header (for ICMP: after the 8-byte header, replacing any
        /// quote given to an error constructor).
        pub fn payload(mut self, payload: &[u8]) -> Self {
            self.0.payload = payload.to_vec();
            self
        }

        /// Forces the transport checksum field to `value` instead of the correct one (negative
        /// tests). No effect for `raw`.
        pub fn checksum(mut self, value: u16) -> Self {
            self.0.checksum = Some(value);
            self
        }

        /// The finished packet: an Ethernet frame if it started with [`Packet::eth`], else a bare
        /// IP packet.
        pub fn build(&self) -> Vec<u8> {
            self.0.build()
        }

        /// Builds the whole datagram (so the transport checksum covers all of it), then splits
        /// everything after the IP header (IPv4) or after the configured extension headers plus
        /// a new Fragment header (IPv6) into pieces of `chunk` bytes, one packet per piece.
        ///
        /// # Panics
        /// If `chunk` is zero or not a multiple of 8.
        pub fn build_fragments(&self, chunk: usize) -> Vec<Vec<u8>> {
            self.0.build_fragments(chunk)
        }
    };
}

/// TCP header under construction. Defaults: no flags, seq 0, ack 0, window 65535, urgent 0, no
/// options, no payload.
#[derive(Debug, Clone)]
pub struct TcpBuilder(Upper);

impl TcpBuilder {
    fn tcp(&mut self) -> &mut TcpSpec {
        match &mut self.0.l4 {
            L4Spec::Tcp(tcp) => tcp,
            _ => unreachable!("TcpBuilder always holds a TCP header"),
        }
    }

    /// TCP flags, e.g. `TcpFlags::SYN | TcpFlags::ACK`.
    pub fn flags(mut self, value: TcpFlags) -> Self {
        self.tcp().flags = value;
        self
    }

    /// Sequence number.
    pub fn seq(mut self, value: u32) -> Self {
        self.tcp().seq = value;
        self
    }

    /// Acknowledgment number.
    pub fn ack(mut self, value: u32) -> Self {
        self.tcp().ack = value;
        self
    }

    /// Receive window.
    pub fn window(mut self, value: u16) -> Self {
        self.tcp().window = value;
        self
    }

    /// Urgent pointer.
    pub fn urgent(mut self, value: u16) -> Self {
        self.tcp().urgent = value;
        self
    }

    /// TCP options, padded with zeros (End of Option List) to a multiple of 4 bytes; the data
    /// offset grows accordingly.
    ///
    /// # Panics
    /// If the padded options exceed 40 bytes.
    pub fn options(mut self, options: &[u8]) -> Self {
        let mut padded = options.to_vec();
        padded.resize(options.len().div_ceil(4) * 4, 0);
        assert!(
            padded.len() <= 40,
            "TCP options are {} bytes, at most 40 fit",
            padded.len()
        );
        self.tcp().options = padded;
        self
    }

    final_builder_methods!();
}

/// UDP header under construction.
#[derive(Debug, Clone)]
pub struct UdpBuilder(Upper);

impl UdpBuilder {
    /// Sends checksum 0 ("no checksum"), legal over IPv4 only; over IPv6 it makes an invalid
    /// packet, which is sometimes what a test wants.
    pub fn zero_checksum(mut self) -> Self {
        if let L4Spec::Udp { zero_checksum, .. } = &mut self.0.l4 {
            *zero_checksum = true;
        }
        self
    }

    final_builder_methods!();
}

/// ICMP or ICMPv6 message under construction.
#[derive(Debug, Clone)]
pub struct IcmpBuilder(Upper);

impl IcmpBuilder {
    final_builder_methods!();
}

/// A packet with an opaque transport payload.
#[derive(Debug, Clone)]
pub struct RawBuilder(Upper);

impl RawBuilder {
    final_builder_methods!();
}

impl Upper {
    fn protocol(&self) -> u8 {
        match &self.l4 {
            L4Spec::Tcp(_) => PROTO_TCP,
            L4Spec::Udp { .. } => PROTO_UDP,
            L4Spec::Icmp { v6: false, .. } => PROTO_ICMP,
            L4Spec::Icmp { v6: true, .. } => PROTO_ICMPV6,
            L4Spec::Raw { protocol } => *protocol,
        }
    }

    /// Transport header + payload with the checksum filled in.
    fn transport(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let checksum_at = match &self.l4 {
            L4Spec::Tcp(TcpSpec {
                src_port,
                dst_port,
                seq,
                ack,
                flags,
                window,
                urgent,
                options,
            }) => {
                let data_offset = (20 + options.len()) / 4;
                out.extend_from_slice(&src_port.to_be_bytes());
                out.extend_from_slice(&dst_port.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&ack.to_be_bytes());
                out.push((data_offset as u8) << 4);
                out.push(flags.bits());
                out.extend_from_slice(&window.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&urgent.to_be_bytes());
                out.extend_from_slice(options);
                Some(16)
            }
            L4Spec::Udp {
                src_port, dst_port, ..
            } => {
                let len = u16::try_from(8 + self.payload.len()).expect("UDP datagram too long");
                out.extend_from_slice(&src_port.to_be_bytes());
                out.extend_from_slice(&dst_port.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                Some(6)
            }
            L4Spec::Icmp {
                icmp_type,
                code,
                rest,
                ..
            } => {
                out.extend_from_slice(&[*icmp_type, *code, 0, 0]);
                out.extend_from_slice(rest);
                Some(2)
            }
            L4Spec::Raw { .. } => None,
        };
        out.extend_from_slice(&self.payload);
        let Some(at) = checksum_at else {
            return out;
        };

        let protocol = self.protocol();
        let mut sum = if protocol == PROTO_ICMP {
            0
        } else {
            self.pseudo_header_sum(protocol, out.len())
        };
        sum += word_sum(&out);
        let mut checksum = fold_complement(sum);
        if let L4Spec::Udp { zero_checksum, .. } = &self.l4 {
            if *zero_checksum {
                checksum = 0;
            } else if checksum == 0 {
                // 0 means "no checksum" for UDP; a computed 0 is sent as its other form.
                checksum = 0xffff;
            }
        }
        let checksum = self.checksum.unwrap_or(checksum);
        out[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
        out
    }

    fn pseudo_header_sum(&self, protocol: u8, len: usize) -> u32 {
        let mut pseudo = Vec::with_capacity(40);
        match &self.ip {
            IpSpec::V4(ip) => {
                pseudo.extend_from_slice(&ip.src.octets());
                pseudo.extend_from_slice(&ip.dst.octets());
                pseudo.push(0);
                pseudo.push(protocol);
                let len = u16::try_from(len).expect("IPv4 payload too long");
                pseudo.extend_from_slice(&len.to_be_bytes());
            }
            IpSpec::V6(ip) => {
                pseudo.extend_from_slice(&ip.src.octets());
                pseudo.extend_from_slice(&ip.dst.octets());
                let len = u32::try_from(len).expect("IPv6 payload too long");
                pseudo.extend_from_slice(&len.to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, protocol]);
            }
        }
        word_sum(&pseudo)
    }

    fn build(&self) -> Vec<u8> {
        let transport = self.transport();
        let protocol = self.protocol();
        let ip = match &self.ip {
            IpSpec::V4(ip) => {
                ipv4_packet(ip, protocol, &transport, ip.frag_offset, ip.more_fragments)
            }
            IpSpec::V6(ip) => ipv6_packet(ip, &ip.exts, protocol, &transport),
        };
        self.wrap(ip)
    }

    fn build_fragments(&self, chunk: usize) -> Vec<Vec<u8>> {
        assert!(
            chunk > 0 && chunk & 7 == 0,
            "fragment size {chunk} must be a positive multiple of 8"
        );
        let transport = self.transport();
        let protocol = self.protocol();
        let pieces: Vec<&[u8]> = if transport.is_empty() {
            vec![&[]]
        } else {
            transport.chunks(chunk).collect()
        };
        let last = pieces.len() - 1;
        pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let units = u16::try_from(i * chunk / 8).expect("fragment offset too large");
                let ip = match &self.ip {
                    IpSpec::V4(ip) => ipv4_packet(
                        ip,
                        protocol,
                        piece,
                        ip.frag_offset + units,
                        i != last || ip.more_fragments,
                    ),
                    IpSpec::V6(ip) => {
                        let mut exts = ip.exts.clone();
                        exts.push(Ext::Fragment {
                            offset: units,
                            more: i != last,
                            id: ip.fragment_id,
                        });
                        ipv6_packet(ip, &exts, protocol, piece)
                    }
                };
                self.wrap(ip)
            })
            .collect()
    }

    fn wrap(&self, ip: Vec<u8>) -> Vec<u8> {
        let ethertype = match self.ip {
            IpSpec::V4(_) => ETHERTYPE_IPV4,
            IpSpec::V6(_) => ETHERTYPE_IPV6,
        };
        match &self.eth {
            Some(eth) => frame(Some(eth), ethertype, &ip),
            None => ip,
        }
    }
}

fn frame(eth: Option<&EthSpec>, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + payload.len());
    if let Some(eth) = eth {
        out.extend_from_slice(&eth.dst);
        out.extend_from_slice(&eth.src);
        for (tpid, tci) in &eth.tags {
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&tci.to_be_bytes());
        }
        out.extend_from_slice(&ethertype.to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

fn ipv4_packet(ip: &V4Spec, protocol: u8, payload: &[u8], frag_offset: u16, more: bool) -> Vec<u8> {
    let header_len = 20 + ip.options.len();
    let total = u16::try_from(header_len + payload.len()).expect("IPv4 packet too long");
    let flags_offset =
        (u16::from(ip.dont_fragment) << 14) | (u16::from(more) << 13) | (frag_offset & 0x1fff);
    let mut out = Vec::with_capacity(usize::from(total));
    out.push(0x40 | (header_len / 4) as u8);
    out.push(ip.tos);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&ip.id.to_be_bytes());
    out.extend_from_slice(&flags_offset.to_be_bytes());
    out.push(ip.ttl);
    out.push(protocol);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&ip.src.octets());
    out.extend_from_slice(&ip.dst.octets());
    out.extend_from_slice(&ip.options);
    let checksum = ip
        .checksum
        .unwrap_or_else(|| fold_complement(word_sum(&out)));
    out[10..12].copy_from_slice(&checksum.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn ipv6_packet(ip: &V6Spec, exts: &[Ext], protocol: u8, payload: &[u8]) -> Vec<u8> {
    let ext_code = |ext: &Ext| match ext {
        Ext::HopByHop => PROTO_HOPOPTS,
        Ext::DestOpts => PROTO_DSTOPTS,
        Ext::Routing => PROTO_ROUTING,
        Ext::Fragment { .. } => PROTO_FRAGMENT,
    };
    let mut chain = Vec::new();
    for (i, ext) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(protocol, ext_code);
        match ext {
            // Next header, length 0 (8 bytes), PadN option covering the remaining 4 bytes.
            Ext::HopByHop | Ext::DestOpts => chain.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]),
            Ext::Routing => chain.extend_from_slice(&[next, 0, 253, 0, 0, 0, 0, 0]),
            Ext::Fragment { offset, more, id } => {
                chain.extend_from_slice(&[next, 0]);
                chain.extend_from_slice(&((offset << 3) | u16::from(*more)).to_be_bytes());
                chain.extend_from_slice(&id.to_be_bytes());
            }
        }
    }
    let first = exts.first().map_or(protocol, ext_code);
    let payload_len =
        u16::try_from(chain.len() + payload.len()).expect("IPv6 payload too long (no jumbograms)");
    let vtf = (6u32 << 28) | (u32::from(ip.traffic_class) << 20) | ip.flow_label;
    let mut out = Vec::with_capacity(40 + usize::from(payload_len));
    out.extend_from_slice(&vtf.to_be_bytes());
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.push(first);
    out.push(ip.hop_limit);
    out.extend_from_slice(&ip.src.octets());
    out.extend_from_slice(&ip.dst.octets());
    out.extend_from_slice(&chain);
    out.extend_from_slice(payload);
    out
}

fn id_seq(id: u16, seq: u16) -> [u8; 4] {
    let [a, b] = id.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    [a, b, c, d]
}

fn quote(packet: &[u8], len: usize) -> &[u8] {
    &packet[..len.min(packet.len())]
}

/// Sum of big-endian 16-bit words (an odd trailing byte is padded with zero), not yet folded.
fn word_sum(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Folds the carries back in and complements.
fn fold_complement(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// RFC 1071 section 3 example: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    #[test]
    fn rfc1071_sum_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold_complement(word_sum(&data)), !0xddf2);
    }

    /// The widely reproduced IPv4 header example (Wikipedia, "Internet checksum"):
    /// 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
    #[test]
    fn known_ipv4_header_checksum() {
        let packet = Packet::ipv4(v4("192.168.0.1"), v4("192.168.0.199"))
            .dont_fragment()
            .raw(17, &[0; 95])
            .build();
        let expected_header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(packet[..20], expected_header);
    }

    /// Hand-computed: 10.0.0.1:1000 -> 10.0.0.2:2000 UDP "hi".
    /// IP: 4500+001e+4011+0a00+0001+0a00+0002 = 9932 -> checksum 66cd.
    /// UDP: pseudo 0a00+0001+0a00+0002+0011+000a = 141e, header 03e8+07d0+000a = 0bc2,
    /// data 6869; total 8849 -> checksum 77b6.
    #[test]
    fn known_udp_v4_packet() {
        let packet = Packet::ipv4(v4("10.0.0.1"), v4("10.0.0.2"))
            .udp(1000, 2000)
            .payload(b"hi")
            .build();
        let expected = [
            0x45, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x66, 0xcd, 0x0a, 0x00,
            0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, // IPv4
            0x03, 0xe8, 0x07, 0xd0, 0x00, 0x0a, 0x77, 0xb6, // UDP
            0x68, 0x69,
        ];
        assert_eq!(packet, expected);
    }

    /// Hand-computed: ICMP echo request id 1 seq 1, no data: 0800+0001+0001 = 0802 -> f7fd.
    #[test]
    fn known_icmp_echo_checksum() {
        let packet = Packet::ipv4(v4("10.0.0.1"), v4("10.0.0.2"))
            .icmp_echo_request(1, 1)
            .build();
        assert_eq!(
            packet[20..],
            [0x08, 0x00, 0xf7, 0xfd, 0x00, 0x01, 0x00, 0x01]
        );
    }

    /// Hand-computed: ICMPv6 echo request ::1 -> ::1, id 0 seq 0, no data.
    /// Pseudo 0001+0001+0008+003a, message 8000 -> 8044 -> checksum 7fbb.
    #[test]
    fn known_icmpv6_echo_checksum() {
        let packet = Packet::ipv6(v6("::1"), v6("::1"))
            .icmpv6_echo_request(0, 0)
            .build();
        assert_eq!(packet[..8], [0x60, 0, 0, 0, 0, 8, 58, 64]);
        assert_eq!(packet[40..], [0x80, 0x00, 0x7f, 0xbb, 0, 0, 0, 0]);
    }

    #[test]
    fn ethernet_and_vlan_layout() {
        let frame = Packet::eth([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
            .vlan_tag(TPID_8021AD, 0, false, 10)
            .vlan_tag(TPID_8021Q, 5, true, 100)
            .ipv4(v4("1.1.1.1"), v4("2.2.2.2"))
            .udp(1, 2)
            .build();
        assert_eq!(frame[..6], [7, 8, 9, 10, 11, 12]);
        assert_eq!(frame[6..12], [1, 2, 3, 4, 5, 6]);
        assert_eq!(frame[12..16], [0x88, 0xa8, 0x00, 10]);
        assert_eq!(frame[16..20], [0x81, 0x00, 0xb0, 100]);
        assert_eq!(frame[20..22], [0x08, 0x00]);
        assert_eq!(frame.len(), 22 + 20 + 8);
    }

    #[test]
    fn ipv4_options_and_fragment_fields() {
        let packet = Packet::ipv4(v4("1.1.1.1"), v4("2.2.2.2"))
            .options(&[0x94, 0x04, 0, 0, 1])
            .id(0x1234)
            .fragment(3, true)
            .raw(6, &[0; 16])
            .build();
        assert_eq!(packet[0], 0x47);
        assert_eq!(u16::from_be_bytes([packet[2], packet[3]]), 28 + 16);
        assert_eq!(packet[6..8], [0x20, 0x03]);
        assert_eq!(packet[20..28], [0x94, 0x04, 0, 0, 1, 0, 0, 0]);
        assert_eq!(fold_complement(word_sum(&packet[..28])), 0);
    }

    #[test]
    fn ipv6_extension_chain() {
        let packet = Packet::ipv6(v6("2001:db8::1"), v6("2001:db8::2"))
            .ext_hop_by_hop()
            .ext_routing()
            .ext_fragment(0, true, 7)
            .ext_dest_opts()
            .udp(53, 53)
            .build();
        assert_eq!(packet[6], 0);
        assert_eq!(packet[40], 43);
        assert_eq!(packet[48], 44);
        assert_eq!(packet[56..64], [60, 0, 0, 1, 0, 0, 0, 7]);
        assert_eq!(packet[64], 17);
        assert_eq!(u16::from_be_bytes([packet[4], packet[5]]), 32 + 8);
    }

    #[test]
    fn icmp_quote_is_truncated() {
        let inner = Packet::ipv4(v4("10.0.0.2"), v4("10.0.0.1"))
            .tcp(80, 1234)
            .payload(&[9; 100])
            .build();
        let packet = Packet::ipv4(v4("10.0.0.254"), v4("10.0.0.2"))
            .icmp_frag_needed(1400, &inner, 28)
            .build();
        assert_eq!(packet.len(), 20 + 8 + 28);
        assert_eq!(packet[20..22], [3, 4]);
        assert_eq!(packet[24..28], [0, 0, 0x05, 0x78]);
        assert_eq!(packet[28..], inner[..28]);
        assert_eq!(fold_complement(word_sum(&packet[20..])), 0);

        let whole = Packet::ipv4(v4("10.0.0.254"), v4("10.0.0.2"))
            .icmp_dest_unreachable(3, &inner, 10_000)
            .build();
        assert_eq!(whole[28..], inner[..]);
    }

    #[test]
    fn fragments_reassemble_to_whole() {
        let builder = Packet::ipv4(v4("10.0.0.1"), v4("10.0.0.2"))
            .id(99)
            .udp(1, 2)
            .payload(&[0xab; 50]);
        let whole = builder.build();
        let fragments = builder.build_fragments(24);
        assert_eq!(fragments.len(), 3);
        let mut joined = Vec::new();
        for (i, fragment) in fragments.iter().enumerate() {
            let flags_offset = u16::from_be_bytes([fragment[6], fragment[7]]);
            assert_eq!(flags_offset & 0x1fff, (i * 3) as u16);
            assert_eq!(flags_offset & 0x2000 != 0, i < 2);
            assert_eq!(fold_complement(word_sum(&fragment[..20])), 0);
            joined.extend_from_slice(&fragment[20..]);
        }
        assert_eq!(joined, whole[20..]);
    }
}
