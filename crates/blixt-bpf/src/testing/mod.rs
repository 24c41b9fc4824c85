//! Test helpers for packet fixtures.
//!
//! * [`packet`]: a builder for input and expected packets ([`Packet`]).
//! * [`parse`]: an independent parser and checksum verifier ([`ParsedPacket`]) for what a BPF
//!   program emits.
//! * [`diff`]: a field-level difference of two frames, for assertion messages.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use blixt_bpf::testing::{diff, mac, Packet, ParsedPacket, TcpFlags};
//!
//! let frame = Packet::eth(mac("02:00:00:00:00:01"), mac("02:00:00:00:00:02"))
//!     .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
//!     .tcp(1234, 80)
//!     .flags(TcpFlags::SYN)
//!     .build();
//! let parsed = ParsedPacket::parse(&frame).unwrap();
//! assert_eq!(parsed.tcp_flags(), Some(TcpFlags::SYN));
//! parsed.verify_checksums().unwrap();
//! assert_eq!(diff(&frame, &frame), "packets are identical (54 bytes)");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign};

pub mod packet;
pub mod parse;

pub use packet::{
    EthBuilder, IcmpBuilder, Ipv4Builder, Ipv6Builder, Packet, RawBuilder, TcpBuilder, UdpBuilder,
};
pub use parse::{
    ChecksumCheck, ChecksumError, ChecksumKind, EthHeader, IcmpHeader, IpHeader, Ipv4Header,
    Ipv6ExtHeader, Ipv6Fragment, Ipv6Header, ParseError, ParsedPacket, TcpHeader, Transport,
    UdpHeader, VlanTag,
};

/// The eight TCP flag bits (byte 13 of the header).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    /// FIN.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// SYN.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// RST.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// PSH.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// ACK.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// URG.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECE.
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// CWR.
    pub const CWR: TcpFlags = TcpFlags(0x80);

    const NAMES: [(TcpFlags, &'static str); 8] = [
        (TcpFlags::FIN, "FIN"),
        (TcpFlags::SYN, "SYN"),
        (TcpFlags::RST, "RST"),
        (TcpFlags::PSH, "PSH"),
        (TcpFlags::ACK, "ACK"),
        (TcpFlags::URG, "URG"),
        (TcpFlags::ECE, "ECE"),
        (TcpFlags::CWR, "CWR"),
    ];

    /// No flag set.
    pub const fn empty() -> TcpFlags {
        TcpFlags(0)
    }

    /// From the raw flags byte.
    pub const fn from_bits(bits: u8) -> TcpFlags {
        TcpFlags(bits)
    }

    /// The raw flags byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

/// `SYN|ACK`, or `-` when empty.
impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("-");
        }
        let names: Vec<&str> = TcpFlags::NAMES
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, name)| *name)
            .collect();
        f.write_str(&names.join("|"))
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TcpFlags({self})")
    }
}

/// Parses `"02:00:00:00:00:01"` (also with `-` separators).
///
/// # Panics
/// If `s` is not six hex bytes.
pub fn mac(s: &str) -> [u8; 6] {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    assert_eq!(parts.len(), 6, "MAC address {s:?} does not have six bytes");
    let mut out = [0; 6];
    for (byte, part) in out.iter_mut().zip(parts) {
        assert!(
            part.len() == 2,
            "MAC address {s:?}: {part:?} is not two hex digits"
        );
        *byte = u8::from_str_radix(part, 16)
            .unwrap_or_else(|_| panic!("MAC address {s:?}: {part:?} is not hex"));
    }
    out
}

/// A readable difference between two Ethernet frames for assertion messages: a summary of each,
/// the fields that differ (by [`ParsedPacket::fields`], checksums annotated with whether they
/// verify), any checksum errors, and the byte rows that differ. Falls back to bytes alone for a
/// frame that does not parse.
///
/// ```
/// # use std::net::Ipv4Addr;
/// # use blixt_bpf::testing::{diff, Packet};
/// let ip = Packet::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
///     .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
/// let expected = ip.clone().ttl(63).udp(1, 2).build();
/// let output = ip.ttl(64).udp(1, 2).build();
/// let text = diff(&expected, &output);
/// assert!(text.contains("ipv4.ttl:\n      expected 63\n      actual   64"), "{text}");
/// // In a fixture: assert!(output == expected, "{}", diff(&expected, &output));
/// ```
pub fn diff(expected: &[u8], actual: &[u8]) -> String {
    use fmt::Write;

    if expected == actual {
        return format!("packets are identical ({} bytes)", expected.len());
    }
    let mut out = String::new();
    let parsed_expected = ParsedPacket::parse(expected);
    let parsed_actual = ParsedPacket::parse(actual);
    for (name, bytes, parsed) in [
        ("expected", expected, &parsed_expected),
        ("actual", actual, &parsed_actual),
    ] {
        let _ = match parsed {
            Ok(p) => writeln!(out, "{name:>8} ({} bytes): {}", bytes.len(), p.summary()),
            Err(e) => writeln!(
                out,
                "{name:>8} ({} bytes): does not parse: {e}",
                bytes.len()
            ),
        };
    }

    if let (Ok(e), Ok(a)) = (&parsed_expected, &parsed_actual) {
        let expected_fields = e.fields();
        let actual_fields = a.fields();
        let actual_map: HashMap<&str, &str> = actual_fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let expected_map: HashMap<&str, &str> = expected_fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut lines = Vec::new();
        for (key, value) in &expected_fields {
            match actual_map.get(key.as_str()) {
                Some(other) if *other == value => {}
                Some(other) => lines.push(format!(
                    "  {key}:\n      expected {value}\n      actual   {other}"
                )),
                None => lines.push(format!(
                    "  {key}:\n      expected {value}\n      actual   <absent>"
                )),
            }
        }
        for (key, value) in &actual_fields {
            if !expected_map.contains_key(key.as_str()) {
                lines.push(format!(
                    "  {key}:\n      expected <absent>\n      actual   {value}"
                ));
            }
        }
        if lines.is_empty() {
            out.push_str("no field differs\n");
        } else {
            out.push_str("fields that differ:\n");
            for line in lines {
                out.push_str(&line);
                out.push('\n');
            }
        }
        for (name, p) in [("expected", e), ("actual", a)] {
            for error in p.checksum_errors() {
                let _ = writeln!(out, "{name} packet: {error}");
            }
        }
    }

    out.push_str(&byte_diff(expected, actual));
    out
}

/// The 16-byte rows where the two differ (at most 16 of them), `..` marking equal bytes in the
/// actual row.
fn byte_diff(expected: &[u8], actual: &[u8]) -> String {
    use fmt::Write;

    let mut out = String::new();
    let len = expected.len().max(actual.len());
    let first = (0..len).find(|&i| expected.get(i) != actual.get(i));
    let Some(first) = first else {
        return out;
    };
    let _ = writeln!(
        out,
        "first differing byte at offset {first}; differing rows:"
    );
    let row = |bytes: &[u8], start: usize, other: Option<&[u8]>| {
        (start..start + 16)
            .map(|i| match (bytes.get(i), other.map(|o| o.get(i))) {
                (None, _) => "  ".to_string(),
                (Some(b), Some(o)) if o == Some(b) => "..".to_string(),
                (Some(b), _) => format!("{b:02x}"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut shown = 0;
    for start in (0..len).step_by(16) {
        let end = (start + 16).min(len);
        if (start..end).all(|i| expected.get(i) == actual.get(i)) {
            continue;
        }
        if shown == 16 {
            out.push_str("  ...\n");
            break;
        }
        shown += 1;
        let _ = writeln!(out, "  {start:04x} expected {}", row(expected, start, None));
        let _ = writeln!(
            out,
            "  {start:04x} actual   {}",
            row(actual, start, Some(expected))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn mac_parses() {
        assert_eq!(mac("02:00:0a:ff:00:01"), [2, 0, 0x0a, 0xff, 0, 1]);
        assert_eq!(mac("02-00-0A-FF-00-01"), [2, 0, 0x0a, 0xff, 0, 1]);
    }

    #[test]
    #[should_panic(expected = "six bytes")]
    fn mac_rejects_short() {
        mac("02:00:00");
    }

    #[test]
    fn flags_display() {
        assert_eq!((TcpFlags::SYN | TcpFlags::ACK).to_string(), "SYN|ACK");
        assert_eq!(TcpFlags::empty().to_string(), "-");
        assert!((TcpFlags::SYN | TcpFlags::ACK).contains(TcpFlags::ACK));
        assert!(!TcpFlags::SYN.contains(TcpFlags::ACK));
        assert_eq!(format!("{:?}", TcpFlags::RST), "TcpFlags(RST)");
    }

    fn base() -> Ipv4Builder {
        Packet::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
    }

    #[test]
    fn diff_names_fields_and_checksums() {
        let expected = base().ttl(63).tcp(1000, 80).seq(5).build();
        let mut actual = base().ttl(64).tcp(1000, 80).seq(5).build();
        // Break the TCP checksum on top of the TTL change.
        actual[14 + 20 + 16] ^= 0x01;
        let text = diff(&expected, &actual);
        assert!(
            text.contains("ipv4.ttl:\n      expected 63\n      actual   64"),
            "{text}"
        );
        assert!(text.contains("ipv4.checksum"), "{text}");
        assert!(text.contains("tcp.checksum"), "{text}");
        assert!(text.contains("WRONG"), "{text}");
        assert!(
            text.contains("actual packet: TCP checksum is wrong"),
            "{text}"
        );
        assert!(text.contains("first differing byte at offset 22"), "{text}");
        assert!(!text.contains("tcp.seq"), "{text}");
    }

    #[test]
    fn diff_identical_and_unparseable() {
        let frame = base().udp(1, 2).build();
        assert_eq!(diff(&frame, &frame), "packets are identical (42 bytes)");
        let text = diff(&frame, &frame[..30]);
        assert!(text.contains("actual (30 bytes): does not parse"), "{text}");
        assert!(text.contains("first differing byte at offset 30"), "{text}");
    }

    #[test]
    fn diff_inner_packet_fields() {
        let inner = |port| {
            Packet::ipv6(
                "2001:db8::2".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            )
            .udp(port, 53)
            .build()
        };
        let outer = |port| {
            Packet::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv6(Ipv6Addr::LOCALHOST, "2001:db8::2".parse().unwrap())
                .icmpv6_packet_too_big(1280, &inner(port), 1000)
                .build()
        };
        let text = diff(&outer(1000), &outer(1001));
        assert!(text.contains("icmpv6.inner.udp.src_port"), "{text}");
        // The port and UDP checksum changes cancel out in the ICMPv6 checksum.
        assert!(!text.contains("icmpv6.checksum"), "{text}");
        // The quote is shown as inner fields, not as an opaque payload.
        assert!(!text.contains("  payload:"), "{text}");
    }
}
