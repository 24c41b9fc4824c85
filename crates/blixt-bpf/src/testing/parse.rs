//! An independent packet parser and checksum verifier for checking what a BPF program emitted.
//!
//! [`ParsedPacket::parse`] decodes Ethernet (+ any number of 802.1Q/802.1ad tags), IPv4 (+options,
//! fragments) or IPv6 (+Hop-by-Hop, Routing, Fragment, Destination Options, AH), then TCP, UDP,
//! ICMP or ICMPv6, including the packet quoted by an ICMP error. [`ParsedPacket::verify_checksums`]
//! recomputes every checksum from the bytes alone.
//!
//! Nothing here uses the builder in [`super::packet`]: this module has its own one's-complement
//! sum (computed differently, byte lane by byte lane) so that a mistake in one cannot hide a
//! mistake in the other or in the BPF program's incremental updates.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::TcpFlags;

/// Why a byte string is not a well-formed packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A header or a length field needs more bytes than there are.
    #[error("{what}: needs {needed} bytes at offset {offset}, only {available} available")]
    Truncated {
        /// The header or field being read.
        what: &'static str,
        /// Offset (within the current layer's bytes) where it starts.
        offset: usize,
        /// Bytes it needs from there.
        needed: usize,
        /// Bytes there are from there.
        available: usize,
    },
    /// A field holds a value that makes the packet unparseable or inconsistent.
    #[error("{what}: {detail}")]
    Malformed {
        /// The header or field at fault.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The packet quoted by an ICMP error does not parse.
    #[error("packet quoted by ICMP error: {0}")]
    Inner(Box<ParseError>),
}

/// Which checksum [`ChecksumError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumKind {
    /// IPv4 header checksum.
    Ipv4Header,
    /// TCP checksum (with the IPv4 or IPv6 pseudo-header).
    Tcp,
    /// UDP checksum (with the IPv4 or IPv6 pseudo-header).
    Udp,
    /// ICMPv4 checksum over the whole message.
    Icmp,
    /// ICMPv6 checksum (with the IPv6 pseudo-header).
    Icmpv6,
}

impl fmt::Display for ChecksumKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChecksumKind::Ipv4Header => "IPv4 header",
            ChecksumKind::Tcp => "TCP",
            ChecksumKind::Udp => "UDP",
            ChecksumKind::Icmp => "ICMP",
            ChecksumKind::Icmpv6 => "ICMPv6",
        })
    }
}

/// One checksum that was recomputed, right or wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumCheck {
    /// Which checksum.
    pub kind: ChecksumKind,
    /// Whether it belongs to the packet quoted inside an ICMP error.
    pub inner: bool,
    /// The value the field should hold.
    pub expected: u16,
    /// The value the field holds.
    pub found: u16,
    /// Whether a receiver accepts it. This is a sum over the covered bytes *including* the
    /// field, so 0x0000 and 0xffff (the two encodings of one's-complement zero) are both
    /// accepted where they are equivalent; for UDP a computed 0 must be sent as 0xffff.
    pub ok: bool,
}

/// A wrong checksum, naming which one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}{kind} checksum is wrong: expected {expected:#06x}, found {found:#06x}{}",
    if *inner { "quoted inner " } else { "" },
    if *kind == ChecksumKind::Udp && *found == 0 { " (zero UDP checksum is not allowed over IPv6)" } else { "" }
)]
pub struct ChecksumError {
    /// Which checksum.
    pub kind: ChecksumKind,
    /// Whether it belongs to the packet quoted inside an ICMP error.
    pub inner: bool,
    /// The value the field should hold.
    pub expected: u16,
    /// The value the field holds.
    pub found: u16,
}

/// Ethernet header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthHeader {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// VLAN tags, outermost first.
    pub vlans: Vec<VlanTag>,
    /// The EtherType after the tags.
    pub ethertype: u16,
}

/// One VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    /// 0x8100 (802.1Q), 0x88a8 (802.1ad) or 0x9100.
    pub tpid: u16,
    /// Priority code point.
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN id.
    pub vid: u16,
}

/// IPv4 or IPv6 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpHeader {
    /// IPv4.
    V4(Ipv4Header),
    /// IPv6 with its extension headers.
    V6(Ipv6Header),
}

/// IPv4 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Header length in 32-bit words.
    pub ihl: u8,
    /// TOS byte (DSCP << 2 | ECN).
    pub tos: u8,
    /// Total length field.
    pub total_len: u16,
    /// Identification.
    pub id: u16,
    /// The reserved ("evil") flag bit.
    pub reserved_flag: bool,
    /// DF flag.
    pub dont_fragment: bool,
    /// MF flag.
    pub more_fragments: bool,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
    /// Time to live.
    pub ttl: u8,
    /// Protocol.
    pub protocol: u8,
    /// Header checksum field as found.
    pub checksum: u16,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Option bytes (IHL > 5).
    pub options: Vec<u8>,
}

/// IPv6 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Header {
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label.
    pub flow_label: u32,
    /// Payload length field.
    pub payload_len: u16,
    /// Next header field of the fixed header.
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Extension headers in order.
    pub ext_headers: Vec<Ipv6ExtHeader>,
}

/// One IPv6 extension header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6ExtHeader {
    /// Its own type (0 Hop-by-Hop, 43 Routing, 44 Fragment, 60 Destination Options, 51 AH).
    pub header_type: u8,
    /// Its next header field.
    pub next_header: u8,
    /// All its bytes.
    pub bytes: Vec<u8>,
    /// Decoded fields when it is a Fragment header.
    pub fragment: Option<Ipv6Fragment>,
}

/// Fields of an IPv6 Fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Fragment {
    /// Offset in 8-byte units.
    pub offset: u16,
    /// M flag.
    pub more: bool,
    /// Identification.
    pub id: u32,
}

/// What follows the IP header(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp(TcpHeader),
    /// UDP.
    Udp(UdpHeader),
    /// ICMP (over IPv4).
    Icmp(IcmpHeader),
    /// ICMPv6 (over IPv6).
    Icmpv6(IcmpHeader),
    /// A TCP/UDP/ICMP header cut short, in an ICMP quote or a tiny first fragment; its bytes
    /// are in [`ParsedPacket::payload`].
    Truncated {
        /// Protocol number.
        protocol: u8,
    },
    /// A non-first fragment; its bytes are in [`ParsedPacket::payload`].
    Fragment {
        /// Protocol number.
        protocol: u8,
    },
    /// Any other protocol; its bytes are in [`ParsedPacket::payload`].
    Other {
        /// Protocol number.
        protocol: u8,
    },
}

/// TCP header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpHeader {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Header length in 32-bit words.
    pub data_offset: u8,
    /// The 4 bits between data offset and flags.
    pub reserved: u8,
    /// Flags.
    pub flags: TcpFlags,
    /// Window.
    pub window: u16,
    /// Checksum field as found.
    pub checksum: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// Option bytes.
    pub options: Vec<u8>,
}

/// UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpHeader {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Length field.
    pub length: u16,
    /// Checksum field as found.
    pub checksum: u16,
}

/// ICMP or ICMPv6 header; the data after its 8 bytes is [`ParsedPacket::payload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpHeader {
    /// Type.
    pub icmp_type: u8,
    /// Code.
    pub code: u8,
    /// Checksum field as found.
    pub checksum: u16,
    /// Bytes 4..8 (echo id/seq, MTU, pointer, unused).
    pub rest: [u8; 4],
    /// For error messages (ICMP 3, 4, 5, 11, 12; ICMPv6 1, 2, 3, 4) outside a quote: the quoted
    /// packet, parsed without an Ethernet header.
    pub inner: Option<Box<ParsedPacket>>,
}

impl IcmpHeader {
    /// Echo identifier (bytes 4..6).
    pub fn echo_id(&self) -> u16 {
        u16::from_be_bytes([self.rest[0], self.rest[1]])
    }

    /// Echo sequence number (bytes 6..8).
    pub fn echo_seq(&self) -> u16 {
        u16::from_be_bytes([self.rest[2], self.rest[3]])
    }

    /// Next-hop MTU of an ICMPv4 fragmentation-needed message (bytes 6..8).
    pub fn next_hop_mtu(&self) -> u16 {
        u16::from_be_bytes([self.rest[2], self.rest[3]])
    }

    /// MTU of an ICMPv6 packet-too-big message (bytes 4..8).
    pub fn mtu(&self) -> u32 {
        u32::from_be_bytes(self.rest)
    }
}

/// A decoded packet. Build one with [`ParsedPacket::parse`] (Ethernet frame) or
/// [`ParsedPacket::parse_ip`] (bare IP packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPacket {
    /// Ethernet header, absent for bare IP packets and quoted inner packets.
    pub eth: Option<EthHeader>,
    /// IP header, absent when the EtherType is neither IPv4 nor IPv6.
    pub ip: Option<IpHeader>,
    /// What follows the IP header(s), absent when there is no IP header.
    pub transport: Option<Transport>,
    /// Bytes after the transport header (after the 8-byte header for ICMP; all of them for
    /// [`Transport::Truncated`], [`Transport::Fragment`] and [`Transport::Other`]; everything
    /// after the EtherType for non-IP frames).
    pub payload: Vec<u8>,
    /// Bytes after the end given by the IP length field (e.g. Ethernet padding).
    pub trailer: Vec<u8>,
    /// Only for quoted inner packets: the quote stops before the IP length field says the
    /// packet ends.
    pub truncated: bool,
    /// Raw pieces kept for checksum verification.
    raw: Raw,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Raw {
    /// IPv4 header bytes, options included.
    ipv4_header: Vec<u8>,
    /// The transport bytes as present (header + payload).
    transport: Vec<u8>,
    /// Whether `transport` is the whole transport message (not a fragment, not cut short).
    transport_complete: bool,
    /// Quoted inside an ICMP error.
    quoted: bool,
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const VLAN_TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

const IP_ICMP: u8 = 1;
const IP_TCP: u8 = 6;
const IP_UDP: u8 = 17;
const IP_ICMPV6: u8 = 58;

fn take<'a>(
    bytes: &'a [u8],
    offset: usize,
    needed: usize,
    what: &'static str,
) -> Result<&'a [u8], ParseError> {
    offset
        .checked_add(needed)
        .and_then(|end| bytes.get(offset..end))
        .ok_or(ParseError::Truncated {
            what,
            offset,
            needed,
            available: bytes.len().saturating_sub(offset),
        })
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn malformed(what: &'static str, detail: String) -> ParseError {
    ParseError::Malformed { what, detail }
}

/// What the transport parser needs to know about its context.
#[derive(Clone, Copy)]
struct Context {
    v6: bool,
    /// Inside an ICMP quote.
    quoted: bool,
    /// The bytes may be fewer than the transport message (quote cut short or first fragment),
    /// so short headers and length fields are tolerated.
    partial: bool,
}

impl ParsedPacket {
    /// Parses an Ethernet frame.
    pub fn parse(frame: &[u8]) -> Result<ParsedPacket, ParseError> {
        let macs = take(frame, 0, 12, "Ethernet header")?;
        let mut dst = [0; 6];
        let mut src = [0; 6];
        dst.copy_from_slice(&macs[..6]);
        src.copy_from_slice(&macs[6..]);
        let mut offset = 12;
        let mut vlans = Vec::new();
        let ethertype = loop {
            let ethertype = be16(take(frame, offset, 2, "EtherType")?, 0);
            offset += 2;
            if !VLAN_TPIDS.contains(&ethertype) {
                break ethertype;
            }
            let tci = be16(take(frame, offset, 2, "VLAN tag")?, 0);
            offset += 2;
            vlans.push(VlanTag {
                tpid: ethertype,
                pcp: (tci >> 13) as u8,
                dei: tci & 0x1000 != 0,
                vid: tci & 0x0fff,
            });
        };
        let eth = EthHeader {
            dst,
            src,
            vlans,
            ethertype,
        };
        let rest = &frame[offset..];
        let mut packet = match ethertype {
            ETH_IPV4 => parse_ipv4(rest, false)?,
            ETH_IPV6 => parse_ipv6(rest, false)?,
            _ => ParsedPacket {
                eth: None,
                ip: None,
                transport: None,
                payload: rest.to_vec(),
                trailer: Vec::new(),
                truncated: false,
                raw: Raw::default(),
            },
        };
        packet.eth = Some(eth);
        Ok(packet)
    }

    /// Parses a bare IPv4 or IPv6 packet (chosen by the version nibble).
    pub fn parse_ip(packet: &[u8]) -> Result<ParsedPacket, ParseError> {
        let first = take(packet, 0, 1, "IP version")?[0];
        match first >> 4 {
            4 => parse_ipv4(packet, false),
            6 => parse_ipv6(packet, false),
            v => Err(malformed("IP version", format!("{v} is neither 4 nor 6"))),
        }
    }

    /// Outermost VLAN id, if tagged.
    pub fn vlan(&self) -> Option<u16> {
        self.eth.as_ref()?.vlans.first().map(|tag| tag.vid)
    }

    /// Source MAC.
    pub fn src_mac(&self) -> Option<[u8; 6]> {
        self.eth.as_ref().map(|eth| eth.src)
    }

    /// Destination MAC.
    pub fn dst_mac(&self) -> Option<[u8; 6]> {
        self.eth.as_ref().map(|eth| eth.dst)
    }

    /// The IPv4 header.
    pub fn ipv4(&self) -> Option<&Ipv4Header> {
        match &self.ip {
            Some(IpHeader::V4(ip)) => Some(ip),
            _ => None,
        }
    }

    /// The IPv6 header.
    pub fn ipv6(&self) -> Option<&Ipv6Header> {
        match &self.ip {
            Some(IpHeader::V6(ip)) => Some(ip),
            _ => None,
        }
    }

    /// Source IP address.
    pub fn src_ip(&self) -> Option<IpAddr> {
        match self.ip.as_ref()? {
            IpHeader::V4(ip) => Some(ip.src.into()),
            IpHeader::V6(ip) => Some(ip.src.into()),
        }
    }

    /// Destination IP address.
    pub fn dst_ip(&self) -> Option<IpAddr> {
        match self.ip.as_ref()? {
            IpHeader::V4(ip) => Some(ip.dst.into()),
            IpHeader::V6(ip) => Some(ip.dst.into()),
        }
    }

    /// IPv4 TTL or IPv6 hop limit.
    pub fn ttl(&self) -> Option<u8> {
        match self.ip.as_ref()? {
            IpHeader::V4(ip) => Some(ip.ttl),
            IpHeader::V6(ip) => Some(ip.hop_limit),
        }
    }

    /// The transport protocol number (for IPv6: after the extension headers).
    pub fn protocol(&self) -> Option<u8> {
        match self.ip.as_ref()? {
            IpHeader::V4(ip) => Some(ip.protocol),
            IpHeader::V6(ip) => Some(
                ip.ext_headers
                    .last()
                    .map_or(ip.next_header, |ext| ext.next_header),
            ),
        }
    }

    /// Whether this is an IPv4 or IPv6 fragment (first or not).
    pub fn is_fragment(&self) -> bool {
        match &self.ip {
            Some(IpHeader::V4(ip)) => ip.more_fragments || ip.frag_offset != 0,
            Some(IpHeader::V6(ip)) => ip.ext_headers.iter().any(|ext| ext.fragment.is_some()),
            None => false,
        }
    }

    /// The TCP header.
    pub fn tcp(&self) -> Option<&TcpHeader> {
        match &self.transport {
            Some(Transport::Tcp(tcp)) => Some(tcp),
            _ => None,
        }
    }

    /// The UDP header.
    pub fn udp(&self) -> Option<&UdpHeader> {
        match &self.transport {
            Some(Transport::Udp(udp)) => Some(udp),
            _ => None,
        }
    }

    /// The ICMP or ICMPv6 header.
    pub fn icmp(&self) -> Option<&IcmpHeader> {
        match &self.transport {
            Some(Transport::Icmp(icmp) | Transport::Icmpv6(icmp)) => Some(icmp),
            _ => None,
        }
    }

    /// The packet quoted by an ICMP/ICMPv6 error.
    pub fn inner(&self) -> Option<&ParsedPacket> {
        self.icmp()?.inner.as_deref()
    }

    /// TCP flags.
    pub fn tcp_flags(&self) -> Option<TcpFlags> {
        self.tcp().map(|tcp| tcp.flags)
    }

    /// (source, destination) ports of TCP or UDP, also from a header cut short in an ICMP quote
    /// as long as its first 4 bytes are there.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.transport.as_ref()? {
            Transport::Tcp(tcp) => Some((tcp.src_port, tcp.dst_port)),
            Transport::Udp(udp) => Some((udp.src_port, udp.dst_port)),
            Transport::Truncated {
                protocol: IP_TCP | IP_UDP,
            } if self.payload.len() >= 4 => Some((be16(&self.payload, 0), be16(&self.payload, 2))),
            _ => None,
        }
    }

    /// Source port (see [`ParsedPacket::ports`]).
    pub fn src_port(&self) -> Option<u16> {
        self.ports().map(|p| p.0)
    }

    /// Destination port (see [`ParsedPacket::ports`]).
    pub fn dst_port(&self) -> Option<u16> {
        self.ports().map(|p| p.1)
    }

    /// Recomputes every checksum from scratch and returns the first wrong one (outer before
    /// inner, IP before transport). Skipped: UDP-over-IPv4 checksum 0 (means "none"); the
    /// transport checksum of fragments; the inner transport checksum when the quote is cut
    /// short. A zero UDP checksum over IPv6 is an error.
    pub fn verify_checksums(&self) -> Result<(), ChecksumError> {
        match self.checksum_errors().into_iter().next() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// All wrong checksums (see [`ParsedPacket::verify_checksums`]).
    pub fn checksum_errors(&self) -> Vec<ChecksumError> {
        self.checksum_checks()
            .into_iter()
            .filter(|check| !check.ok)
            .map(|check| ChecksumError {
                kind: check.kind,
                inner: check.inner,
                expected: check.expected,
                found: check.found,
            })
            .collect()
    }

    /// Every checksum that was recomputed, right or wrong.
    pub fn checksum_checks(&self) -> Vec<ChecksumCheck> {
        let mut checks = Vec::new();
        self.collect_checks(&mut checks);
        checks
    }

    fn collect_checks(&self, checks: &mut Vec<ChecksumCheck>) {
        let inner = self.raw.quoted;
        if let Some(IpHeader::V4(_)) = &self.ip {
            checks.push(check(
                ChecksumKind::Ipv4Header,
                inner,
                &self.raw.ipv4_header,
                10,
                false,
            ));
        }
        if self.raw.transport_complete {
            let segment = &self.raw.transport;
            match &self.transport {
                Some(Transport::Tcp(_)) => {
                    let data = self.with_pseudo_header(IP_TCP, segment);
                    let at = data.len() - segment.len() + 16;
                    checks.push(check(ChecksumKind::Tcp, inner, &data, at, false));
                }
                Some(Transport::Udp(udp)) => {
                    let data = self.with_pseudo_header(IP_UDP, segment);
                    let at = data.len() - segment.len() + 6;
                    let zero_allowed = matches!(self.ip, Some(IpHeader::V4(_)));
                    if !(udp.checksum == 0 && zero_allowed) {
                        checks.push(check(ChecksumKind::Udp, inner, &data, at, true));
                    }
                }
                Some(Transport::Icmp(_)) => {
                    checks.push(check(ChecksumKind::Icmp, inner, segment, 2, false));
                }
                Some(Transport::Icmpv6(_)) => {
                    let data = self.with_pseudo_header(IP_ICMPV6, segment);
                    let at = data.len() - segment.len() + 2;
                    checks.push(check(ChecksumKind::Icmpv6, inner, &data, at, false));
                }
                _ => {}
            }
        }
        if let Some(inner) = self.inner() {
            inner.collect_checks(checks);
        }
    }

    /// The pseudo-header of RFC 768/793 (IPv4) or RFC 8200 section 8.1 (IPv6) followed by the
    /// transport bytes.
    fn with_pseudo_header(&self, protocol: u8, segment: &[u8]) -> Vec<u8> {
        let mut data = Vec::with_capacity(40 + segment.len());
        match &self.ip {
            Some(IpHeader::V4(ip)) => {
                data.extend_from_slice(&ip.src.octets());
                data.extend_from_slice(&ip.dst.octets());
                data.push(0);
                data.push(protocol);
                data.extend_from_slice(&(segment.len() as u16).to_be_bytes());
            }
            Some(IpHeader::V6(ip)) => {
                data.extend_from_slice(&ip.src.octets());
                data.extend_from_slice(&ip.dst.octets());
                data.extend_from_slice(&(segment.len() as u32).to_be_bytes());
                data.extend_from_slice(&[0, 0, 0, protocol]);
            }
            None => {}
        }
        data.extend_from_slice(segment);
        data
    }

    /// A one-line description, e.g. `02:..:01 > 02:..:02 vlan 100 | 10.0.0.1:1234 > 10.0.0.2:80
    /// TCP [SYN] seq 1 ack 0 len 0`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if let Some(eth) = &self.eth {
            out += &format!("{} > {}", fmt_mac(&eth.src), fmt_mac(&eth.dst));
            for tag in &eth.vlans {
                out += &format!(" vlan {}", tag.vid);
            }
            if self.ip.is_none() {
                out += &format!(
                    " ethertype {:#06x} len {}",
                    eth.ethertype,
                    self.payload.len()
                );
                return out;
            }
            out += " | ";
        }
        let (Some(src), Some(dst)) = (self.src_ip(), self.dst_ip()) else {
            return out;
        };
        let addr = |ip: IpAddr, port: Option<u16>| match (ip, port) {
            (IpAddr::V6(ip), Some(port)) => format!("[{ip}]:{port}"),
            (ip, Some(port)) => format!("{ip}:{port}"),
            (ip, None) => ip.to_string(),
        };
        out += &format!(
            "{} > {} ttl {}",
            addr(src, self.src_port()),
            addr(dst, self.dst_port()),
            self.ttl().unwrap_or(0)
        );
        match &self.transport {
            Some(Transport::Tcp(tcp)) => {
                out += &format!(
                    " TCP [{}] seq {} ack {} len {}",
                    tcp.flags,
                    tcp.seq,
                    tcp.ack,
                    self.payload.len()
                );
            }
            Some(Transport::Udp(_)) => out += &format!(" UDP len {}", self.payload.len()),
            Some(Transport::Icmp(icmp) | Transport::Icmpv6(icmp)) => {
                let name = if matches!(self.transport, Some(Transport::Icmp(_))) {
                    "ICMP"
                } else {
                    "ICMPv6"
                };
                out += &format!(" {name} type {} code {}", icmp.icmp_type, icmp.code);
                if let Some(inner) = &icmp.inner {
                    out += &format!(" quoting ({})", inner.summary());
                }
            }
            Some(Transport::Truncated { protocol }) => {
                out += &format!(
                    " proto {protocol} (cut short, {} bytes)",
                    self.payload.len()
                );
            }
            Some(Transport::Fragment { protocol }) => {
                out += &format!(" proto {protocol} fragment len {}", self.payload.len());
            }
            Some(Transport::Other { protocol }) => {
                out += &format!(" proto {protocol} len {}", self.payload.len());
            }
            None => {}
        }
        out
    }

    /// Every decoded field as `(name, value)`, in header order, e.g. `("ipv4.ttl", "64")`.
    /// Checksum values are annotated with whether they verify. Fields of a quoted inner packet
    /// are prefixed with `icmp.inner.` / `icmpv6.inner.`. This is what [`super::diff`] compares.
    pub fn fields(&self) -> Vec<(String, String)> {
        let checks = self.checksum_checks();
        let mut out = Vec::new();
        self.push_fields("", &checks, &mut out);
        out
    }

    fn push_fields(&self, prefix: &str, checks: &[ChecksumCheck], out: &mut Vec<(String, String)>) {
        let mut put = |name: &str, value: String| out.push((format!("{prefix}{name}"), value));
        let inner = self.raw.quoted;
        let annotate = |kind: ChecksumKind, value: u16| match checks
            .iter()
            .find(|c| c.kind == kind && c.inner == inner)
        {
            Some(c) if c.ok => format!("{value:#06x} (ok)"),
            Some(c) => format!("{value:#06x} (WRONG, should be {:#06x})", c.expected),
            None => format!("{value:#06x} (not verified)"),
        };
        if let Some(eth) = &self.eth {
            put("eth.dst", fmt_mac(&eth.dst));
            put("eth.src", fmt_mac(&eth.src));
            for (i, tag) in eth.vlans.iter().enumerate() {
                put(
                    &format!("eth.vlan[{i}]"),
                    format!(
                        "tpid {:#06x} pcp {} dei {} vid {}",
                        tag.tpid,
                        tag.pcp,
                        u8::from(tag.dei),
                        tag.vid
                    ),
                );
            }
            put("eth.ethertype", format!("{:#06x}", eth.ethertype));
        }
        match &self.ip {
            Some(IpHeader::V4(ip)) => {
                put("ipv4.ihl", ip.ihl.to_string());
                put("ipv4.tos", format!("{:#04x}", ip.tos));
                put("ipv4.total_len", ip.total_len.to_string());
                put("ipv4.id", format!("{:#06x}", ip.id));
                let mut flags = Vec::new();
                if ip.reserved_flag {
                    flags.push("RESERVED");
                }
                if ip.dont_fragment {
                    flags.push("DF");
                }
                if ip.more_fragments {
                    flags.push("MF");
                }
                if flags.is_empty() {
                    flags.push("-");
                }
                put("ipv4.flags", flags.join("|"));
                put("ipv4.frag_offset", ip.frag_offset.to_string());
                put("ipv4.ttl", ip.ttl.to_string());
                put("ipv4.protocol", ip.protocol.to_string());
                put(
                    "ipv4.checksum",
                    annotate(ChecksumKind::Ipv4Header, ip.checksum),
                );
                put("ipv4.src", ip.src.to_string());
                put("ipv4.dst", ip.dst.to_string());
                if !ip.options.is_empty() {
                    put("ipv4.options", hex(&ip.options));
                }
            }
            Some(IpHeader::V6(ip)) => {
                put("ipv6.traffic_class", format!("{:#04x}", ip.traffic_class));
                put("ipv6.flow_label", format!("{:#07x}", ip.flow_label));
                put("ipv6.payload_len", ip.payload_len.to_string());
                put("ipv6.next_header", ip.next_header.to_string());
                put("ipv6.hop_limit", ip.hop_limit.to_string());
                put("ipv6.src", ip.src.to_string());
                put("ipv6.dst", ip.dst.to_string());
                for (i, ext) in ip.ext_headers.iter().enumerate() {
                    let value = match ext.fragment {
                        Some(frag) => format!(
                            "fragment next {} offset {} more {} id {:#x}",
                            ext.next_header,
                            frag.offset,
                            u8::from(frag.more),
                            frag.id
                        ),
                        None => format!(
                            "type {} next {} bytes {}",
                            ext.header_type,
                            ext.next_header,
                            hex(&ext.bytes)
                        ),
                    };
                    put(&format!("ipv6.ext[{i}]"), value);
                }
            }
            None => {}
        }
        match &self.transport {
            Some(Transport::Tcp(tcp)) => {
                put("tcp.src_port", tcp.src_port.to_string());
                put("tcp.dst_port", tcp.dst_port.to_string());
                put("tcp.seq", tcp.seq.to_string());
                put("tcp.ack", tcp.ack.to_string());
                put("tcp.data_offset", tcp.data_offset.to_string());
                if tcp.reserved != 0 {
                    put("tcp.reserved", format!("{:#x}", tcp.reserved));
                }
                put("tcp.flags", tcp.flags.to_string());
                put("tcp.window", tcp.window.to_string());
                put("tcp.checksum", annotate(ChecksumKind::Tcp, tcp.checksum));
                put("tcp.urgent", tcp.urgent.to_string());
                if !tcp.options.is_empty() {
                    put("tcp.options", hex(&tcp.options));
                }
            }
            Some(Transport::Udp(udp)) => {
                put("udp.src_port", udp.src_port.to_string());
                put("udp.dst_port", udp.dst_port.to_string());
                put("udp.length", udp.length.to_string());
                put("udp.checksum", annotate(ChecksumKind::Udp, udp.checksum));
            }
            Some(Transport::Icmp(icmp) | Transport::Icmpv6(icmp)) => {
                let (name, kind) = if matches!(self.transport, Some(Transport::Icmp(_))) {
                    ("icmp", ChecksumKind::Icmp)
                } else {
                    ("icmpv6", ChecksumKind::Icmpv6)
                };
                put(&format!("{name}.type"), icmp.icmp_type.to_string());
                put(&format!("{name}.code"), icmp.code.to_string());
                put(&format!("{name}.checksum"), annotate(kind, icmp.checksum));
                put(&format!("{name}.rest"), hex(&icmp.rest));
            }
            Some(Transport::Truncated { protocol }) => {
                put("l4.cut_short", format!("protocol {protocol}"));
                if let Some((src, dst)) = self.ports() {
                    put("l4.src_port", src.to_string());
                    put("l4.dst_port", dst.to_string());
                }
            }
            Some(Transport::Fragment { protocol }) => {
                put("l4.fragment", format!("protocol {protocol}"));
            }
            Some(Transport::Other { protocol }) => {
                put("l4.other", format!("protocol {protocol}"));
            }
            None => {}
        }
        if self.inner().is_none() {
            // An ICMP error's quote shows up as the inner packet's fields instead.
            put("payload", describe_bytes(&self.payload));
        }
        if !self.trailer.is_empty() {
            put("trailer", describe_bytes(&self.trailer));
        }
        if self.truncated {
            put("truncated", "true".to_string());
        }
        if let Some(Transport::Icmp(icmp) | Transport::Icmpv6(icmp)) = &self.transport {
            if let Some(inner) = &icmp.inner {
                let name = if matches!(self.transport, Some(Transport::Icmp(_))) {
                    "icmp"
                } else {
                    "icmpv6"
                };
                inner.push_fields(&format!("{prefix}{name}.inner."), checks, out);
            }
        }
    }
}

/// One check: `data` covers everything the checksum covers, the field being at `at`.
fn check(kind: ChecksumKind, inner: bool, data: &[u8], at: usize, udp: bool) -> ChecksumCheck {
    let found = be16(data, at);
    let mut zeroed = data.to_vec();
    zeroed[at] = 0;
    zeroed[at + 1] = 0;
    let mut expected = !ones_complement_sum(&zeroed);
    if udp && expected == 0 {
        expected = 0xffff;
    }
    let ok = ones_complement_sum(data) == 0xffff && !(udp && found == 0);
    ChecksumCheck {
        kind,
        inner,
        expected,
        found,
        ok,
    }
}

/// The 16-bit one's-complement sum of `data` as big-endian words, an odd last byte padded
/// with zero. Computed per byte lane: high bytes and low bytes are summed separately, then
/// combined and folded.
fn ones_complement_sum(data: &[u8]) -> u16 {
    let (mut high, mut low) = (0u64, 0u64);
    for (i, byte) in data.iter().enumerate() {
        if i % 2 == 0 {
            high += u64::from(*byte);
        } else {
            low += u64::from(*byte);
        }
    }
    let mut total = (high << 8) + low;
    while total >> 16 != 0 {
        total = (total >> 16) + (total & 0xffff);
    }
    total as u16
}

fn parse_ipv4(bytes: &[u8], quoted: bool) -> Result<ParsedPacket, ParseError> {
    let fixed = take(bytes, 0, 20, "IPv4 header")?;
    let version = fixed[0] >> 4;
    if version != 4 {
        return Err(malformed(
            "IPv4 version",
            format!("{version} in an IPv4 packet"),
        ));
    }
    let ihl = fixed[0] & 0x0f;
    if ihl < 5 {
        return Err(malformed("IPv4 IHL", format!("{ihl} is below 5")));
    }
    let header_len = usize::from(ihl) * 4;
    let header = take(bytes, 0, header_len, "IPv4 header with options")?;
    let total_len = be16(header, 2);
    if usize::from(total_len) < header_len {
        return Err(malformed(
            "IPv4 total length",
            format!("{total_len} is less than the {header_len}-byte header"),
        ));
    }
    let (end, truncated) = if usize::from(total_len) <= bytes.len() {
        (usize::from(total_len), false)
    } else if quoted {
        (bytes.len(), true)
    } else {
        return Err(ParseError::Truncated {
            what: "IPv4 total length",
            offset: 0,
            needed: usize::from(total_len),
            available: bytes.len(),
        });
    };
    let flags_offset = be16(header, 6);
    let ip = Ipv4Header {
        ihl,
        tos: header[1],
        total_len,
        id: be16(header, 4),
        reserved_flag: flags_offset & 0x8000 != 0,
        dont_fragment: flags_offset & 0x4000 != 0,
        more_fragments: flags_offset & 0x2000 != 0,
        frag_offset: flags_offset & 0x1fff,
        ttl: header[8],
        protocol: header[9],
        checksum: be16(header, 10),
        src: Ipv4Addr::new(header[12], header[13], header[14], header[15]),
        dst: Ipv4Addr::new(header[16], header[17], header[18], header[19]),
        options: header[20..].to_vec(),
    };
    let data = &bytes[header_len..end];
    let context = Context {
        v6: false,
        quoted,
        partial: truncated || ip.more_fragments,
    };
    let (transport, payload) = if ip.frag_offset != 0 {
        (
            Transport::Fragment {
                protocol: ip.protocol,
            },
            data.to_vec(),
        )
    } else {
        parse_transport(ip.protocol, data, context)?
    };
    Ok(ParsedPacket {
        eth: None,
        raw: Raw {
            ipv4_header: header.to_vec(),
            transport: data.to_vec(),
            transport_complete: !truncated && !ip.more_fragments && ip.frag_offset == 0,
            quoted,
        },
        ip: Some(IpHeader::V4(ip)),
        transport: Some(transport),
        payload,
        trailer: bytes[end..].to_vec(),
        truncated,
    })
}

fn parse_ipv6(bytes: &[u8], quoted: bool) -> Result<ParsedPacket, ParseError> {
    let fixed = take(bytes, 0, 40, "IPv6 header")?;
    let version = fixed[0] >> 4;
    if version != 6 {
        return Err(malformed(
            "IPv6 version",
            format!("{version} in an IPv6 packet"),
        ));
    }
    let payload_len = be16(fixed, 4);
    let wanted = 40 + usize::from(payload_len);
    let (end, truncated) = if wanted <= bytes.len() {
        (wanted, false)
    } else if quoted {
        (bytes.len(), true)
    } else {
        return Err(ParseError::Truncated {
            what: "IPv6 payload length",
            offset: 0,
            needed: wanted,
            available: bytes.len(),
        });
    };
    let mut src = [0; 16];
    let mut dst = [0; 16];
    src.copy_from_slice(&fixed[8..24]);
    dst.copy_from_slice(&fixed[24..40]);
    let mut ip = Ipv6Header {
        traffic_class: ((fixed[0] & 0x0f) << 4) | (fixed[1] >> 4),
        flow_label: be32(fixed, 0) & 0x000f_ffff,
        payload_len,
        next_header: fixed[6],
        hop_limit: fixed[7],
        src: src.into(),
        dst: dst.into(),
        ext_headers: Vec::new(),
    };

    let body = &bytes[40..end];
    let mut offset = 0;
    let mut next = ip.next_header;
    let mut fragment: Option<Ipv6Fragment> = None;
    loop {
        if fragment.is_some_and(|f| f.offset != 0) {
            // Past a non-first fragment's Fragment header everything is fragment data.
            break;
        }
        let len = match next {
            0 | 43 | 60 => {
                let start = take(body, offset, 2, "IPv6 extension header")?;
                (usize::from(start[1]) + 1) * 8
            }
            51 => {
                let start = take(body, offset, 2, "IPv6 authentication header")?;
                (usize::from(start[1]) + 2) * 4
            }
            44 => 8,
            _ => break,
        };
        let ext = take(body, offset, len, "IPv6 extension header")?;
        let frag = (next == 44).then(|| Ipv6Fragment {
            offset: be16(ext, 2) >> 3,
            more: ext[3] & 1 != 0,
            id: be32(ext, 4),
        });
        if frag.is_some() {
            fragment = frag;
        }
        ip.ext_headers.push(Ipv6ExtHeader {
            header_type: next,
            next_header: ext[0],
            bytes: ext.to_vec(),
            fragment: frag,
        });
        next = ext[0];
        offset += len;
    }
    let data = &body[offset..];
    let fragmented = fragment.is_some_and(|f| f.more || f.offset != 0);
    let context = Context {
        v6: true,
        quoted,
        partial: truncated || fragmented,
    };
    let (transport, payload) = match fragment {
        Some(f) if f.offset != 0 => (Transport::Fragment { protocol: next }, data.to_vec()),
        _ => parse_transport(next, data, context)?,
    };
    Ok(ParsedPacket {
        eth: None,
        ip: Some(IpHeader::V6(ip)),
        transport: Some(transport),
        payload,
        trailer: bytes[end..].to_vec(),
        truncated,
        raw: Raw {
            ipv4_header: Vec::new(),
            transport: data.to_vec(),
            transport_complete: !truncated && !fragmented,
            quoted,
        },
    })
}

fn parse_transport(
    protocol: u8,
    data: &[u8],
    context: Context,
) -> Result<(Transport, Vec<u8>), ParseError> {
    let cut_short = |what: &'static str, needed: usize| {
        if context.partial {
            Ok((Transport::Truncated { protocol }, data.to_vec()))
        } else {
            Err(ParseError::Truncated {
                what,
                offset: 0,
                needed,
                available: data.len(),
            })
        }
    };
    match protocol {
        IP_TCP => {
            if data.len() < 20 {
                return cut_short("TCP header", 20);
            }
            let data_offset = data[12] >> 4;
            if data_offset < 5 {
                return Err(malformed(
                    "TCP data offset",
                    format!("{data_offset} is below 5"),
                ));
            }
            let header_len = usize::from(data_offset) * 4;
            if data.len() < header_len {
                return cut_short("TCP header with options", header_len);
            }
            let tcp = TcpHeader {
                src_port: be16(data, 0),
                dst_port: be16(data, 2),
                seq: be32(data, 4),
                ack: be32(data, 8),
                data_offset,
                reserved: data[12] & 0x0f,
                flags: TcpFlags::from_bits(data[13]),
                window: be16(data, 14),
                checksum: be16(data, 16),
                urgent: be16(data, 18),
                options: data[20..header_len].to_vec(),
            };
            Ok((Transport::Tcp(tcp), data[header_len..].to_vec()))
        }
        IP_UDP => {
            if data.len() < 8 {
                return cut_short("UDP header", 8);
            }
            let udp = UdpHeader {
                src_port: be16(data, 0),
                dst_port: be16(data, 2),
                length: be16(data, 4),
                checksum: be16(data, 6),
            };
            let length = usize::from(udp.length);
            if length < 8 {
                return Err(malformed("UDP length", format!("{length} is below 8")));
            }
            if !context.partial && length != data.len() {
                return Err(malformed(
                    "UDP length",
                    format!(
                        "field says {length} but the IP packet carries {} bytes",
                        data.len()
                    ),
                ));
            }
            Ok((Transport::Udp(udp), data[8..].to_vec()))
        }
        IP_ICMP if !context.v6 => parse_icmp(data, context),
        IP_ICMPV6 if context.v6 => parse_icmp(data, context),
        _ => Ok((Transport::Other { protocol }, data.to_vec())),
    }
}

/// Parses an ICMP/ICMPv6 message and, for errors outside a quote, the packet it quotes.
fn parse_icmp(data: &[u8], context: Context) -> Result<(Transport, Vec<u8>), ParseError> {
    if data.len() < 8 {
        let (protocol, what) = if context.v6 {
            (IP_ICMPV6, "ICMPv6 header")
        } else {
            (IP_ICMP, "ICMP header")
        };
        if context.partial {
            return Ok((Transport::Truncated { protocol }, data.to_vec()));
        }
        return Err(ParseError::Truncated {
            what,
            offset: 0,
            needed: 8,
            available: data.len(),
        });
    }
    let icmp_type = data[0];
    let is_error = if context.v6 {
        matches!(icmp_type, 1..=4)
    } else {
        matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
    };
    let quote = &data[8..];
    let inner = if is_error && !context.quoted {
        let parsed = if context.v6 {
            parse_ipv6(quote, true)
        } else {
            parse_ipv4(quote, true)
        };
        Some(Box::new(
            parsed.map_err(|e| ParseError::Inner(Box::new(e)))?,
        ))
    } else {
        None
    };
    let header = IcmpHeader {
        icmp_type,
        code: data[1],
        checksum: be16(data, 2),
        rest: [data[4], data[5], data[6], data[7]],
        inner,
    };
    let transport = if context.v6 {
        Transport::Icmpv6(header)
    } else {
        Transport::Icmp(header)
    };
    Ok((transport, quote.to_vec()))
}

pub(super) fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Length plus hex, abbreviated past 48 bytes (with an FNV-1a digest so different long
/// payloads still print differently).
fn describe_bytes(bytes: &[u8]) -> String {
    if bytes.len() <= 48 {
        return format!("{} bytes {}", bytes.len(), hex(bytes));
    }
    let digest = bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    format!(
        "{} bytes {}... (fnv1a {digest:08x})",
        bytes.len(),
        hex(&bytes[..48])
    )
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;
    use crate::testing::Packet;

    const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn parse_ok(frame: &[u8]) -> ParsedPacket {
        let parsed = ParsedPacket::parse(frame).unwrap_or_else(|e| panic!("{e}"));
        parsed.verify_checksums().unwrap_or_else(|e| panic!("{e}"));
        parsed
    }

    #[test]
    fn lane_sum_matches_rfc1071_example() {
        assert_eq!(
            ones_complement_sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        // Odd length: the last byte is the high half of a zero-padded word.
        assert_eq!(ones_complement_sum(&[0x12, 0x34, 0x56]), 0x6834);
        assert_eq!(ones_complement_sum(&[0xff; 1000]), 0xffff);
        assert_eq!(ones_complement_sum(&[]), 0);
    }

    /// Wikipedia's IPv4 header example, as bytes typed in by hand.
    #[test]
    fn known_ipv4_header_vector() {
        let mut packet = vec![
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        // A UDP header (length 95, no checksum) and zeros.
        packet.extend_from_slice(&[0, 0, 0, 0, 0, 95, 0, 0]);
        packet.extend_from_slice(&[0; 87]);
        let parsed = ParsedPacket::parse_ip(&packet).unwrap();
        let ip = parsed.ipv4().unwrap();
        assert!(ip.dont_fragment);
        assert_eq!(ip.src, v4("192.168.0.1"));
        assert_eq!(ip.dst, v4("192.168.0.199"));
        assert_eq!(ip.protocol, 17);
        let checks = parsed.checksum_checks();
        assert_eq!(checks[0].kind, ChecksumKind::Ipv4Header);
        assert!(checks[0].ok);
        assert_eq!(checks[0].expected, 0xb861);

        packet[10] = 0xb8;
        packet[11] = 0x62;
        let parsed = ParsedPacket::parse_ip(&packet).unwrap();
        let error = parsed.checksum_errors()[0];
        assert_eq!(
            error,
            ChecksumError {
                kind: ChecksumKind::Ipv4Header,
                inner: false,
                expected: 0xb861,
                found: 0xb862
            }
        );
        assert_eq!(
            error.to_string(),
            "IPv4 header checksum is wrong: expected 0xb861, found 0xb862"
        );
    }

    /// Hand-computed UDP datagram (see the builder's test of the same name for the arithmetic).
    #[test]
    fn known_udp_v4_vector() {
        let packet = [
            0x45, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x66, 0xcd, 0x0a, 0x00,
            0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x03, 0xe8, 0x07, 0xd0, 0x00, 0x0a, 0x77, 0xb6,
            0x68, 0x69,
        ];
        let parsed = ParsedPacket::parse_ip(&packet).unwrap();
        parsed.verify_checksums().unwrap();
        assert_eq!(parsed.ports(), Some((1000, 2000)));
        assert_eq!(parsed.payload, b"hi");
        assert_eq!(parsed.checksum_checks().len(), 2);

        let mut bad = packet;
        bad[27] = 0xb7;
        let error = ParsedPacket::parse_ip(&bad)
            .unwrap()
            .verify_checksums()
            .unwrap_err();
        assert_eq!(
            (error.kind, error.expected, error.found),
            (ChecksumKind::Udp, 0x77b6, 0x77b7)
        );
    }

    /// Hand-computed ICMPv6 echo request ::1 -> ::1 (checksum 7fbb).
    #[test]
    fn known_icmpv6_vector() {
        let mut packet = vec![0x60, 0, 0, 0, 0, 8, 58, 64];
        packet.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        packet.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        packet.extend_from_slice(&[0x80, 0x00, 0x7f, 0xbb, 0, 0, 0, 0]);
        let parsed = ParsedPacket::parse_ip(&packet).unwrap();
        parsed.verify_checksums().unwrap();
        assert_eq!(parsed.icmp().unwrap().icmp_type, 128);
        packet[42] = 0;
        let error = ParsedPacket::parse_ip(&packet)
            .unwrap()
            .verify_checksums()
            .unwrap_err();
        assert_eq!(
            (error.kind, error.expected, error.found),
            (ChecksumKind::Icmpv6, 0x7fbb, 0x00bb)
        );
    }

    #[test]
    fn tcp_v6_vlan_round_trip() {
        let frame = Packet::eth(SRC_MAC, DST_MAC)
            .vlan(100)
            .ipv6(v6("2001:db8::1"), v6("2001:db8::2"))
            .hop_limit(17)
            .traffic_class(0xb8)
            .flow_label(0x12345)
            .tcp(40000, 443)
            .flags(TcpFlags::SYN | TcpFlags::ECE | TcpFlags::CWR)
            .seq(1)
            .ack(2)
            .window(29200)
            .urgent(3)
            .options(&[2, 4, 0x05, 0xb4, 1, 3, 3, 7])
            .payload(b"hello")
            .build();
        let p = parse_ok(&frame);
        assert_eq!(p.src_mac(), Some(SRC_MAC));
        assert_eq!(p.dst_mac(), Some(DST_MAC));
        assert_eq!(p.vlan(), Some(100));
        assert_eq!(p.eth.as_ref().unwrap().ethertype, 0x86dd);
        assert_eq!(p.src_ip(), Some(IpAddr::V6(v6("2001:db8::1"))));
        assert_eq!(p.dst_ip(), Some(IpAddr::V6(v6("2001:db8::2"))));
        assert_eq!(p.ttl(), Some(17));
        assert_eq!(p.protocol(), Some(6));
        let ip = p.ipv6().unwrap();
        assert_eq!((ip.traffic_class, ip.flow_label), (0xb8, 0x12345));
        assert_eq!(ip.payload_len, 28 + 5);
        let tcp = p.tcp().unwrap();
        assert_eq!(p.ports(), Some((40000, 443)));
        assert_eq!(tcp.flags, TcpFlags::SYN | TcpFlags::ECE | TcpFlags::CWR);
        assert_eq!((tcp.seq, tcp.ack, tcp.window, tcp.urgent), (1, 2, 29200, 3));
        assert_eq!(tcp.data_offset, 7);
        assert_eq!(tcp.options, [2, 4, 0x05, 0xb4, 1, 3, 3, 7]);
        assert_eq!(p.payload, b"hello");
        assert!(p.trailer.is_empty());
        assert!(!p.is_fragment());
        assert_eq!(
            p.summary(),
            "02:00:00:00:00:01 > 02:00:00:00:00:02 vlan 100 | [2001:db8::1]:40000 > \
             [2001:db8::2]:443 ttl 17 TCP [SYN|ECE|CWR] seq 1 ack 2 len 5"
        );
    }

    #[test]
    fn udp_v4_with_options_round_trip() {
        let frame = Packet::eth(SRC_MAC, DST_MAC)
            .ipv4(v4("10.1.2.3"), v4("192.0.2.9"))
            .ttl(5)
            .tos(0x2e)
            .id(0xbeef)
            .dont_fragment()
            .options(&[0x94, 0x04, 0x00, 0x00, 0x01, 0x01])
            .udp(5353, 53)
            .payload(&[1, 2, 3])
            .build();
        let p = parse_ok(&frame);
        let ip = p.ipv4().unwrap();
        assert_eq!((ip.ihl, ip.tos, ip.id, ip.ttl), (7, 0x2e, 0xbeef, 5));
        assert!(ip.dont_fragment && !ip.more_fragments && !ip.reserved_flag);
        assert_eq!(ip.options, [0x94, 0x04, 0, 0, 1, 1, 0, 0]);
        assert_eq!(ip.total_len, 28 + 8 + 3);
        assert_eq!(p.udp().unwrap().length, 11);
        assert_eq!(p.ports(), Some((5353, 53)));
        assert_eq!(p.payload, [1, 2, 3]);
        assert_eq!(p.checksum_checks().len(), 2);
    }

    #[test]
    fn udp_zero_checksum() {
        let v4_frame = Packet::eth(SRC_MAC, DST_MAC)
            .ipv4(v4("10.0.0.1"), v4("10.0.0.2"))
            .udp(1, 2)
            .zero_checksum()
            .payload(b"x")
            .build();
        let p = parse_ok(&v4_frame);
        assert_eq!(p.udp().unwrap().checksum, 0);
        assert_eq!(
            p.checksum_checks().len(),
            1,
            "only the IPv4 header is checked"
        );

        let v6_frame = Packet::eth(SRC_MAC, DST_MAC)
            .ipv6(v6("fd00::1"), v6("fd00::2"))
            .udp(1, 2)
            .zero_checksum()
            .payload(b"x")
            .build();
        let error = ParsedPacket::parse(&v6_frame)
            .unwrap()
            .verify_checksums()
            .unwrap_err();
        assert_eq!((error.kind, error.found), (ChecksumKind::Udp, 0));
        assert_ne!(error.expected, 0);
        assert!(
            error.to_string().contains("not allowed over IPv6"),
            "{error}"
        );
    }

    /// 0xffff and 0x0000 are both one's-complement zero; TCP receivers accept either, and UDP
    /// must send a computed zero as 0xffff.
    #[test]
    fn negative_zero_checksums() {
        // Find a TCP segment whose correct checksum is 0x0000 by searching the urgent pointer.
        let build = |urgent| {
            Packet::ipv4(v4("10.0.0.1"), v4("10.0.0.2"))
                .tcp(1, 2)
                .urgent(urgent)
                .build()
        };
        let urgent = (0..=u16::MAX)
            .find(|&u| build(u)[36..38] == [0, 0])
            .expect("some urgent pointer gives checksum 0");
        let mut packet = build(urgent);
        ParsedPacket::parse_ip(&packet)
            .unwrap()
            .verify_checksums()
            .unwrap();
        packet[36] = 0xff;
        packet[37] = 0xff;
        ParsedPacket::parse_ip(&packet)
            .unwrap()
            .verify_checksums()
            .unwrap();

        // The same for UDP: the builder must emit 0xffff, and it verifies.
        let build = |port| {
            Packet::ipv6(v6("fd00::1"), v6("fd00::2"))
                .udp(port, 2)
                .build()
        };
        let port = (0..=u16::MAX)
            .find(|&p| build(p)[46..48] == [0xff, 0xff])
            .expect("some port gives a computed UDP checksum of 0");
        ParsedPacket::parse_ip(&build(port))
            .unwrap()
            .verify_checksums()
            .unwrap();
    }

    #[test]
    fn icmpv4_errors_quote_inner_packets() {
        let inner = Packet::ipv4(v4("10.0.0.2"), v4("198.51.100.7"))
            .ttl(1)
            .tcp(33000, 443)
            .flags(TcpFlags::ACK)
            .seq(77)
            .payload(&[0x55; 64])
            .build();

        // Classic RFC 792 quote: IP header + 8 bytes.
        let frame = Packet::eth(SRC_MAC, DST_MAC)
            .ipv4(v4("192.0.2.1"), v4("10.0.0.2"))
            .icmp_frag_needed(1400, &inner, 28)
            .build();
        let p = parse_ok(&frame);
        let icmp = p.icmp().unwrap();
        assert_eq!(
            (icmp.icmp_type, icmp.code, icmp.next_hop_mtu()),
            (3, 4, 1400)
        );
        let q = p.inner().unwrap();
        assert!(q.truncated);
        assert!(q.eth.is_none());
        assert_eq!(q.src_ip(), Some(IpAddr::V4(v4("10.0.0.2"))));
        assert_eq!(q.ttl(), Some(1));
        assert_eq!(q.transport, Some(Transport::Truncated { protocol: 6 }));
        assert_eq!(q.ports(), Some((33000, 443)));
        let kinds: Vec<_> = p
            .checksum_checks()
            .iter()
            .map(|c| (c.kind, c.inner))
            .collect();
        assert_eq!(
            kinds,
            [
                (ChecksumKind::Ipv4Header, false),
                (ChecksumKind::Icmp, false),
                (ChecksumKind::Ipv4Header, true)
            ]
        );

        // A complete quote: the inner TCP checksum is verified too.
        let frame = Packet::eth(SRC_MAC, DST_MAC)
            .ipv4(v4("192.0.2.1"), v4("10.0.0.2"))
            .icmp_time_exceeded(0, &inner, 576)
            .build();
        let p = parse_ok(&frame);
        let q = p.inner().unwrap();
        assert!(!q.truncated);
        assert_eq!(q.tcp().unwrap().seq, 77);
        assert_eq!(q.payload, [0x55; 64]);
        assert_eq!(p.checksum_checks().len(), 4);

        // Corrupt the inner TCP checksum and fix up the outer ICMP checksum by hand: only the
        // inner one is reported.
        let mut bad_inner = inner.clone();
        bad_inner[36] ^= 0x10;
        let frame = Packet::eth(SRC_MAC, DST_MAC)
            .ipv4(v4("192.0.2.1"), v4("10.0.0.2"))
            .icmp_dest_unreachable(3, &bad_inner, 1000)
            .build();
        let p = ParsedPacket::parse(&frame).unwrap();
        let errors = p.checksum_errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!((errors[0].kind, errors[0].inner), (ChecksumKind::Tcp, true));
        assert_eq!(errors[0].expected ^ errors[0].found, 0x1000);
        assert!(errors[0]
            .to_string()
            .starts_with("quoted inner TCP checksum"));

        // A broken inner IPv4 header checksum is caught even when the quote is short.
        let mut bad_inner = inner.clone();
        bad_inner[8] = 0;
        let frame = Packet::eth(SRC_MAC, DST_MAC)
            .ipv4(v4("192.0.2.1"), v4("10.0.0.2"))
            .icmp_dest_unreachable(3, &bad_inner, 28)
            .build();
        let error = ParsedPacket::parse(&frame)
            .unwrap()
            .verify_checksums()
            .unwrap_err();
        assert_eq!((error.kind, error.inner), (ChecksumKind::Ipv4Header, true));
    }

    #[test]
    fn icmpv6_errors_quote_inner_packets() {
        let inner = Packet::ipv6(v6("2001:db8::2"), v6("2001:db8:ffff::7"))
            .ext_dest_opts()
            .udp(4500, 4500)
            .payload(&[1; 30])
            .build();
        for (builder, ty, code) in [
            (
                Packet::ipv6(v6("2001:db8::1"), v6("2001:db8::2"))
                    .icmpv6_packet_too_big(1280, &inner, 1232),
                2,
                0,
            ),
            (
                Packet::ipv6(v6("2001:db8::1"), v6("2001:db8::2"))
                    .icmpv6_dest_unreachable(4, &inner, 1232),
                1,
                4,
            ),
            (
                Packet::ipv6(v6("2001:db8::1"), v6("2001:db8::2"))
                    .icmpv6_time_exceeded(0, &inner, 1232),
                3,
                0,
            ),
        ] {
            let p = ParsedPacket::parse_ip(&builder.build()).unwrap();
            p.verify_checksums().unwrap();
            let icmp = p.icmp().unwrap();
            assert_eq!((icmp.icmp_type, icmp.code), (ty, code));
            let q = p.inner().unwrap();
            assert!(!q.truncated);
            assert_eq!(q.ipv6().unwrap().ext_headers[0].header_type, 60);
            assert_eq!(q.udp().unwrap().length, 38);
            let kinds: Vec<_> = p.checksum_checks().iter().map(|c| c.kind).collect();
            assert_eq!(kinds, [ChecksumKind::Icmpv6, ChecksumKind::Udp]);
        }
        let short = Packet::ipv6(v6("2001:db8::1"), v6("2001:db8::2"))
            .icmpv6_packet_too_big(1400, &inner, 52)
            .build();
        let p = ParsedPacket::parse_ip(&short).unwrap();
        assert_eq!(p.icmp().unwrap().mtu(), 1400);
        let q = p.inner().unwrap();
        assert!(q.truncated);
        assert_eq!(q.transport, Some(Transport::Truncated { protocol: 17 }));
        assert_eq!(q.ports(), Some((4500, 4500)));
        assert_eq!(p.checksum_checks().len(), 1);
    }

    #[test]
    fn icmp_echo() {
        let p = parse_ok(
            &Packet::eth(SRC_MAC, DST_MAC)
                .ipv4(v4("10.0.0.1"), v4("10.0.0.2"))
                .icmp_echo_reply(0x1234, 7)
                .payload(b"ping")
                .build(),
        );
        let icmp = p.icmp().unwrap();
        assert_eq!(
            (icmp.icmp_type, icmp.echo_id(), icmp.echo_seq()),
            (0, 0x1234, 7)
        );
        assert!(icmp.inner.is_none());
        assert_eq!(p.payload, b"ping");
        assert_eq!(p.ports(), None);
    }

    #[test]
    fn ipv4_fragments() {
        let builder = Packet::eth(SRC_MAC, DST_MAC)
            .ipv4(v4("10.0.0.1"), v4("10.0.0.2"))
            .id(7)
            .tcp(1, 2)
            .payload(&[3; 100]);
        let fragments = builder.build_fragments(32);
        assert_eq!(fragments.len(), 4);
        let first = parse_ok(&fragments[0]);
        assert!(first.is_fragment());
        assert_eq!(first.tcp().unwrap().src_port, 1);
        assert_eq!(
            first.checksum_checks().len(),
            1,
            "no TCP check on a fragment"
        );
        let second = parse_ok(&fragments[1]);
        assert_eq!(second.transport, Some(Transport::Fragment { protocol: 6 }));
        assert_eq!(second.ipv4().unwrap().frag_offset, 4);
        assert!(second.ipv4().unwrap().more_fragments);
        let last = parse_ok(&fragments[3]);
        assert!(!last.ipv4().unwrap().more_fragments);
        assert_eq!(last.payload.len(), 120 - 96);

        // A tiny first fragment with less than a TCP header.
        let tiny = Packet::eth(SRC_MAC, DST_MAC)
            .ipv4(v4("10.0.0.1"), v4("10.0.0.2"))
            .fragment(0, true)
            .raw(6, &[0, 80, 0, 81, 0, 0, 0, 0])
            .build();
        let p = parse_ok(&tiny);
        assert_eq!(p.transport, Some(Transport::Truncated { protocol: 6 }));
        assert_eq!(p.ports(), Some((80, 81)));
    }

    #[test]
    fn ipv6_extension_headers_and_fragments() {
        let frame = Packet::eth(SRC_MAC, DST_MAC)
            .ipv6(v6("fd00::1"), v6("fd00::2"))
            .ext_hop_by_hop()
            .ext_routing()
            .ext_dest_opts()
            .tcp(1, 2)
            .flags(TcpFlags::RST)
            .build();
        let p = parse_ok(&frame);
        let ip = p.ipv6().unwrap();
        let types: Vec<_> = ip.ext_headers.iter().map(|e| e.header_type).collect();
        assert_eq!(types, [0, 43, 60]);
        assert_eq!(ip.next_header, 0);
        assert_eq!(p.protocol(), Some(6));
        assert_eq!(p.tcp_flags(), Some(TcpFlags::RST));
        assert_eq!(p.checksum_checks().len(), 1);

        let builder = Packet::eth(SRC_MAC, DST_MAC)
            .ipv6(v6("fd00::1"), v6("fd00::2"))
            .ext_hop_by_hop()
            .fragment_id(0xdead)
            .udp(1, 2)
            .payload(&[9; 40]);
        let fragments = builder.build_fragments(24);
        assert_eq!(fragments.len(), 2);
        let first = parse_ok(&fragments[0]);
        let frag = first.ipv6().unwrap().ext_headers[1].fragment.unwrap();
        assert_eq!(
            frag,
            Ipv6Fragment {
                offset: 0,
                more: true,
                id: 0xdead
            }
        );
        assert_eq!(first.udp().unwrap().length, 48);
        assert!(first.checksum_checks().is_empty());
        let second = parse_ok(&fragments[1]);
        assert_eq!(second.transport, Some(Transport::Fragment { protocol: 17 }));
        assert_eq!(second.payload.len(), 24);

        let explicit = Packet::ipv6(v6("fd00::1"), v6("fd00::2"))
            .ext_fragment(100, false, 5)
            .raw(60, &[1])
            .build();
        let p = ParsedPacket::parse_ip(&explicit).unwrap();
        assert!(p.is_fragment());
        // Fragment data that would look like a (cut short) extension header stays data.
        assert_eq!(p.transport, Some(Transport::Fragment { protocol: 60 }));
        assert_eq!(p.payload, [1]);
    }

    #[test]
    fn qinq_non_ip_and_trailer() {
        let arp = Packet::eth(SRC_MAC, [0xff; 6])
            .vlan_tag(0x88a8, 3, true, 20)
            .vlan(30)
            .build_raw(0x0806, &[0; 28]);
        let p = ParsedPacket::parse(&arp).unwrap();
        let eth = p.eth.as_ref().unwrap();
        assert_eq!(
            eth.vlans,
            [
                VlanTag {
                    tpid: 0x88a8,
                    pcp: 3,
                    dei: true,
                    vid: 20
                },
                VlanTag {
                    tpid: 0x8100,
                    pcp: 0,
                    dei: false,
                    vid: 30
                }
            ]
        );
        assert_eq!(eth.ethertype, 0x0806);
        assert!(p.ip.is_none());
        assert_eq!(p.payload.len(), 28);
        assert!(p.checksum_checks().is_empty());

        // Ethernet padding after a short IPv4 packet is a trailer, not an error.
        let mut frame = Packet::eth(SRC_MAC, DST_MAC)
            .ipv4(v4("10.0.0.1"), v4("10.0.0.2"))
            .udp(1, 2)
            .build();
        frame.resize(60, 0);
        let p = parse_ok(&frame);
        assert_eq!(p.trailer, [0; 18]);
        assert!(p.payload.is_empty());
    }

    #[test]
    fn malformed_headers_are_errors() {
        let frame = Packet::eth(SRC_MAC, DST_MAC)
            .ipv4(v4("10.0.0.1"), v4("10.0.0.2"))
            .udp(1, 2)
            .payload(b"abc")
            .build();
        let mut bad = frame.clone();
        bad[14] = 0x44; // IHL 4
        assert!(matches!(
            ParsedPacket::parse(&bad),
            Err(ParseError::Malformed {
                what: "IPv4 IHL",
                ..
            })
        ));
        let mut bad = frame.clone();
        bad[14] = 0x65; // version 6 under EtherType IPv4
        assert!(ParsedPacket::parse(&bad).is_err());
        let mut bad = frame.clone();
        bad[14 + 20 + 5] = 12; // UDP length disagrees with the IP length
        let error = ParsedPacket::parse(&bad).unwrap_err();
        assert!(error.to_string().contains("UDP length"), "{error}");

        let tcp = Packet::eth(SRC_MAC, DST_MAC)
            .ipv6(v6("fd00::1"), v6("fd00::2"))
            .tcp(1, 2)
            .build();
        let mut bad = tcp.clone();
        bad[14 + 40 + 12] = 0x40; // data offset 4
        assert!(ParsedPacket::parse(&bad).is_err());
        let mut bad = tcp.clone();
        bad[14 + 40 + 12] = 0xf0; // data offset 15 > segment
        assert!(ParsedPacket::parse(&bad).is_err());

        // An ICMP error whose quote is not an IP packet.
        let garbage = Packet::ipv4(v4("10.0.0.1"), v4("10.0.0.2"))
            .icmp(3, 1, [0; 4])
            .payload(&[0x45, 0, 1])
            .build();
        assert!(matches!(
            ParsedPacket::parse_ip(&garbage),
            Err(ParseError::Inner(_))
        ));
    }

    fn sample_frames() -> Vec<Vec<u8>> {
        let inner4 = Packet::ipv4(v4("10.0.0.2"), v4("10.0.0.9"))
            .options(&[1, 1, 1, 0])
            .tcp(80, 1234)
            .options(&[2, 4, 5, 0xb4])
            .payload(b"abcdef")
            .build();
        let inner6 = Packet::ipv6(v6("fd00::2"), v6("fd00::9"))
            .ext_hop_by_hop()
            .tcp(80, 1234)
            .build();
        vec![
            Packet::eth(SRC_MAC, DST_MAC)
                .vlan(7)
                .ipv4(v4("1.2.3.4"), v4("5.6.7.8"))
                .options(&[0x94, 4, 0, 0])
                .tcp(1, 2)
                .options(&[1, 1, 4, 2])
                .payload(b"payload")
                .build(),
            Packet::eth(SRC_MAC, DST_MAC)
                .ipv4(v4("1.2.3.4"), v4("5.6.7.8"))
                .udp(1, 2)
                .payload(b"x")
                .build(),
            Packet::eth(SRC_MAC, DST_MAC)
                .vlan(7)
                .vlan(8)
                .ipv6(v6("fd00::1"), v6("fd00::2"))
                .ext_hop_by_hop()
                .ext_routing()
                .ext_fragment(0, false, 1)
                .ext_dest_opts()
                .udp(1, 2)
                .payload(b"yz")
                .build(),
            Packet::eth(SRC_MAC, DST_MAC)
                .ipv4(v4("9.9.9.9"), v4("10.0.0.2"))
                .icmp_frag_needed(1200, &inner4, 40)
                .build(),
            Packet::eth(SRC_MAC, DST_MAC)
                .ipv4(v4("9.9.9.9"), v4("10.0.0.2"))
                .icmp_dest_unreachable(3, &inner4, 1000)
                .build(),
            Packet::eth(SRC_MAC, DST_MAC)
                .ipv6(v6("fd00::ff"), v6("fd00::2"))
                .icmpv6_packet_too_big(1280, &inner6, 70)
                .build(),
            Packet::eth(SRC_MAC, DST_MAC)
                .ipv6(v6("fd00::ff"), v6("fd00::2"))
                .icmpv6_echo_request(1, 2)
                .payload(b"echo")
                .build(),
        ]
    }

    #[test]
    fn every_truncation_is_an_error() {
        for frame in sample_frames() {
            parse_ok(&frame);
            for len in 0..frame.len() {
                assert!(
                    ParsedPacket::parse(&frame[..len]).is_err(),
                    "{len}-byte prefix of {} parsed",
                    hex(&frame)
                );
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip_v4(
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            sport in any::<u16>(),
            dport in any::<u16>(),
            ttl in any::<u8>(),
            seq in any::<u32>(),
            flags in any::<u8>(),
            vlan in proptest::option::of(0u16..4096),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            tcp in any::<bool>(),
        ) {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let mut eth = Packet::eth(SRC_MAC, DST_MAC);
            if let Some(vid) = vlan {
                eth = eth.vlan(vid);
            }
            let ip = eth.ipv4(src, dst).ttl(ttl);
            let frame = if tcp {
                ip.tcp(sport, dport).seq(seq).flags(TcpFlags::from_bits(flags)).payload(&payload).build()
            } else {
                ip.udp(sport, dport).payload(&payload).build()
            };
            let p = ParsedPacket::parse(&frame).unwrap();
            prop_assert_eq!(p.verify_checksums(), Ok(()));
            prop_assert_eq!(p.checksum_checks().len(), 2);
            prop_assert_eq!(p.vlan(), vlan);
            prop_assert_eq!(p.src_ip(), Some(IpAddr::V4(src)));
            prop_assert_eq!(p.dst_ip(), Some(IpAddr::V4(dst)));
            prop_assert_eq!(p.ttl(), Some(ttl));
            prop_assert_eq!(p.ports(), Some((sport, dport)));
            prop_assert_eq!(&p.payload, &payload);
            if tcp {
                prop_assert_eq!(p.tcp().unwrap().seq, seq);
                prop_assert_eq!(p.tcp_flags(), Some(TcpFlags::from_bits(flags)));
            }
        }

        #[test]
        fn round_trip_v6(
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
            sport in any::<u16>(),
            dport in any::<u16>(),
            hop_limit in any::<u8>(),
            ack in any::<u32>(),
            vlan in proptest::option::of(0u16..4096),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            tcp in any::<bool>(),
            hop_by_hop in any::<bool>(),
        ) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let mut eth = Packet::eth(SRC_MAC, DST_MAC);
            if let Some(vid) = vlan {
                eth = eth.vlan(vid);
            }
            let mut ip = eth.ipv6(src, dst).hop_limit(hop_limit);
            if hop_by_hop {
                ip = ip.ext_hop_by_hop();
            }
            let frame = if tcp {
                ip.tcp(sport, dport).ack(ack).flags(TcpFlags::ACK).payload(&payload).build()
            } else {
                ip.udp(sport, dport).payload(&payload).build()
            };
            let p = ParsedPacket::parse(&frame).unwrap();
            prop_assert_eq!(p.verify_checksums(), Ok(()));
            prop_assert_eq!(p.checksum_checks().len(), 1);
            prop_assert_eq!(p.vlan(), vlan);
            prop_assert_eq!(p.src_ip(), Some(IpAddr::V6(src)));
            prop_assert_eq!(p.dst_ip(), Some(IpAddr::V6(dst)));
            prop_assert_eq!(p.ttl(), Some(hop_limit));
            prop_assert_eq!(p.protocol(), Some(if tcp { 6 } else { 17 }));
            prop_assert_eq!(p.ports(), Some((sport, dport)));
            prop_assert_eq!(&p.payload, &payload);
            if tcp {
                prop_assert_eq!(p.tcp().unwrap().ack, ack);
            }
        }

        /// Any single bit flip in what the checksums cover is caught, as a parse error or a
        /// checksum error.
        #[test]
        fn bit_flips_are_caught(
            which in 0usize..7,
            bit in any::<proptest::sample::Index>(),
        ) {
            let frame = &sample_frames()[which];
            // Checksums cover the whole IPv4 packet; for IPv6 only the addresses and the
            // transport message (not the version/class/flow/length/next/hop fields nor the
            // extension headers).
            let parsed = ParsedPacket::parse(frame).unwrap();
            let ip_start = 14 + 4 * parsed.eth.as_ref().unwrap().vlans.len();
            let covered: Vec<usize> = if parsed.ipv6().is_some() {
                let l4_start = frame.len() - parsed.raw.transport.len();
                (ip_start + 8..ip_start + 40).chain(l4_start..frame.len()).collect()
            } else {
                (ip_start..frame.len()).collect()
            };
            let bit = bit.index(covered.len() * 8);
            let byte = covered[bit / 8];
            let bit = byte * 8 + bit % 8;
            let mut flipped = frame.clone();
            flipped[bit / 8] ^= 0x80 >> (bit % 8);
            if let Ok(p) = ParsedPacket::parse(&flipped) {
                prop_assert!(
                    p.verify_checksums().is_err(),
                    "flipping bit {} of frame {} went unnoticed", bit, which
                );
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ParsedPacket::parse(&bytes);
            let _ = ParsedPacket::parse_ip(&bytes);
            if let Ok(p) = ParsedPacket::parse(&bytes) {
                let _ = p.fields();
                let _ = p.summary();
            }
        }

        #[test]
        fn mutated_packets_never_panic(
            which in 0usize..7,
            edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut frame = sample_frames()[which].clone();
            for (at, value) in edits {
                let i = at.index(frame.len());
                frame[i] = value;
            }
            let len = frame.len();
            frame.truncate(len - cut.index(len / 4 + 1));
            if let Ok(p) = ParsedPacket::parse(&frame) {
                let _ = p.checksum_checks();
                let _ = p.fields();
                let _ = p.summary();
            }
            let _ = crate::testing::diff(&sample_frames()[which], &frame);
        }
    }
}
