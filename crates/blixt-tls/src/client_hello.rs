//! An incremental TLS ClientHello parser: feed bytes as they arrive, get the server name.
//!
//! The proxy must choose a backend before it has seen more than the first flight of the
//! client, and it must forward every byte it read unchanged. So the parser keeps the raw bytes
//! ([`ClientHelloParser::buffered`]) and only looks at them: it reassembles the handshake
//! message from TLS records (a ClientHello may be fragmented across several records, RFC 8446
//! §5.1, and each record across several TCP segments), and when the whole ClientHello is there
//! it reads the fields it needs. It never allocates more than the configured limit.
//!
//! Why a parser of our own rather than a crate: the routing decision needs about 60 lines of
//! wire format (record header, handshake header, the ClientHello skeleton, two extensions),
//! and the properties that matter here — incremental input across records, a hard size
//! limit checked before buffering, no panics on hostile input, and keeping the bytes to forward
//! — are exactly what general TLS parsers do not promise together. `rustls` does not expose
//! its parser; `tls-parser` (nom) parses one record at a time and leaves reassembly to the
//! caller. This module is fuzzed (`fuzz/`) and property-tested.
//!
//! What counts as a server name (RFC 6066 §3): the `host_name` entry of the `server_name`
//! extension. With Encrypted Client Hello (draft-ietf-tls-esni) the outer ClientHello carries
//! the public name of the client-facing server there; that is the name we route on, and the
//! encrypted inner hello is passed through untouched (the backend is the client-facing server).

use std::fmt;

/// TLS record content type `handshake` (RFC 8446 §5.1).
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type `client_hello` (RFC 8446 §4).
const HS_CLIENT_HELLO: u8 = 1;
const RECORD_HEADER: usize = 5;
const HANDSHAKE_HEADER: usize = 4;
/// Largest TLSPlaintext fragment (RFC 8446 §5.1: 2^14).
const MAX_FRAGMENT: usize = 1 << 14;

const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
/// `encrypted_client_hello` (draft-ietf-tls-esni-22 §11.1).
const EXT_ECH: u16 = 0xfe0d;
/// RFC 6066 §3: `NameType host_name(0)`.
const SNI_HOST_NAME: u8 = 0;

/// Default limit on the bytes buffered before the ClientHello is complete. Real hellos are
/// 200–600 bytes, ~1.8 KiB with a post-quantum key share, a few KiB with ECH or many
/// session tickets; 16 KiB is one full record.
pub const DEFAULT_MAX_HELLO_SIZE: usize = 16 * 1024;

/// What the parser learned from a complete ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The server name, lower-cased, without a trailing dot. `None` when the hello has no
    /// `server_name` extension or no `host_name` entry in it.
    pub sni: Option<String>,
    /// `legacy_version` of the ClientHello (0x0303 for TLS 1.2 and 1.3).
    pub legacy_version: u16,
    /// Highest non-GREASE version in `supported_versions`, or `legacy_version` when the
    /// extension is absent (TLS 1.2 and earlier clients).
    pub max_version: u16,
    /// ALPN protocol names offered, in order.
    pub alpn: Vec<Vec<u8>>,
    /// The Encrypted Client Hello extension, when present.
    pub ech: Option<EchKind>,
    /// Length of the ClientHello handshake message, header included.
    pub hello_len: usize,
    /// Number of TLS records the ClientHello was spread over.
    pub records: usize,
}

/// Which ECH variant a ClientHello carries (draft-ietf-tls-esni §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchKind {
    /// `ECHClientHelloType outer(0)`: the SNI is the public name; the real one is encrypted.
    Outer,
    /// `inner(1)`: only valid inside the encrypted hello; seen in clear it is a client bug,
    /// but routing still uses the visible server name.
    Inner,
    /// Any other type byte.
    Unknown(u8),
}

/// Why the bytes are not a ClientHello we can route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The first byte is not a TLS handshake record (plain HTTP, SSH, ...).
    #[error("not TLS: first byte {0:#04x}")]
    NotTls(u8),
    /// An SSL 2.0-compatible ClientHello (first byte has the high bit set). It has no
    /// extensions, so no SNI.
    #[error("SSL 2.0 ClientHello")]
    Ssl2,
    /// A record other than `handshake` before the ClientHello was complete.
    #[error("record content type {0} before the ClientHello was complete")]
    UnexpectedRecord(u8),
    /// The record's major version is not 3.
    #[error("bad record version {0:#06x}")]
    RecordVersion(u16),
    /// A record of length 0 or above 2^14 (RFC 8446 §5.1).
    #[error("bad record length {0}")]
    RecordLength(usize),
    /// The first handshake message is not a ClientHello.
    #[error("handshake message type {0} instead of ClientHello")]
    NotClientHello(u8),
    /// The ClientHello is (or would be) larger than the limit.
    #[error("ClientHello larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// A length field points outside its container, or a field violates its bounds.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    /// The same extension twice (RFC 8446 §4.2).
    #[error("duplicate extension {0:#06x}")]
    DuplicateExtension(u16),
    /// The `host_name` is not a valid DNS name.
    #[error("invalid server name")]
    InvalidServerName,
}

impl ParseError {
    /// A short stable label for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            ParseError::NotTls(_) | ParseError::Ssl2 => "not_tls",
            ParseError::TooLarge { .. } => "too_large",
            _ => "malformed",
        }
    }
}

/// Result of feeding bytes to the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The ClientHello is not complete yet: read more.
    NeedMore,
    /// The whole ClientHello arrived.
    Done(ClientHelloInfo),
    /// The bytes cannot be a ClientHello we accept; reset the connection.
    Error(ParseError),
}

/// Incremental ClientHello parser. Once it returned [`Progress::Done`] or
/// [`Progress::Error`], further input is ignored and the same answer is returned.
#[derive(Clone)]
pub struct ClientHelloParser {
    max_size: usize,
    /// Every byte fed so far (to be forwarded to the backend).
    raw: Vec<u8>,
    /// Offset in `raw` of the next record header not yet consumed.
    next_record: usize,
    /// Handshake bytes reassembled from the record fragments seen so far.
    handshake: Vec<u8>,
    records: usize,
    outcome: Option<Progress>,
}

impl fmt::Debug for ClientHelloParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHelloParser")
            .field("max_size", &self.max_size)
            .field("buffered", &self.raw.len())
            .field("records", &self.records)
            .field("outcome", &self.outcome)
            .finish()
    }
}

impl Default for ClientHelloParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_HELLO_SIZE)
    }
}

impl ClientHelloParser {
    /// A parser that gives up with [`ParseError::TooLarge`] once more than `max_size` bytes
    /// (record headers included) would be needed to hold the ClientHello.
    pub fn new(max_size: usize) -> Self {
        ClientHelloParser {
            max_size,
            raw: Vec::new(),
            next_record: 0,
            handshake: Vec::new(),
            records: 0,
            outcome: None,
        }
    }

    /// Every byte fed so far, unchanged: what must be forwarded to the backend.
    pub fn buffered(&self) -> &[u8] {
        &self.raw
    }

    /// The buffered bytes, consuming the parser.
    pub fn into_buffered(self) -> Vec<u8> {
        self.raw
    }

    /// How many more bytes the parser can take before the size limit is passed: reading at
    /// most this much (and at least one byte) per call keeps the buffer within
    /// `max_size + 1` bytes and still lets the parser see that the limit was passed.
    pub fn remaining_capacity(&self) -> usize {
        (self.max_size + 1).saturating_sub(self.raw.len()).max(1)
    }

    /// Appends `data` and reports whether the ClientHello is complete.
    pub fn feed(&mut self, data: &[u8]) -> Progress {
        if let Some(done) = &self.outcome {
            return done.clone();
        }
        // Everything is kept, also bytes after the ClientHello (TLS 1.3 early data): they
        // must reach the backend. The caller bounds each read by `remaining_capacity`.
        self.raw.extend_from_slice(data);
        let mut p = self.step();
        if p == Progress::NeedMore && self.raw.len() > self.max_size {
            p = Progress::Error(ParseError::TooLarge {
                limit: self.max_size,
            });
        }
        if p != Progress::NeedMore {
            self.outcome = Some(p.clone());
        }
        p
    }

    fn step(&mut self) -> Progress {
        // An early verdict on the first byte: a non-TLS client is reset without waiting.
        match self.raw.first() {
            None => return Progress::NeedMore,
            Some(&CONTENT_HANDSHAKE) => {}
            Some(&b) if b & 0x80 != 0 => return Progress::Error(ParseError::Ssl2),
            Some(&b) => return Progress::Error(ParseError::NotTls(b)),
        }
        loop {
            let rest = &self.raw[self.next_record..];
            if rest.is_empty() {
                return Progress::NeedMore;
            }
            if rest[0] != CONTENT_HANDSHAKE {
                return Progress::Error(ParseError::UnexpectedRecord(rest[0]));
            }
            if rest.len() >= 3 && rest[1] != 3 {
                return Progress::Error(ParseError::RecordVersion(u16::from_be_bytes([
                    rest[1], rest[2],
                ])));
            }
            if rest.len() < RECORD_HEADER {
                return Progress::NeedMore;
            }
            // The first handshake byte decides: anything but a ClientHello is rejected before
            // its record is complete.
            if self.next_record == 0 && rest.len() > RECORD_HEADER && rest[5] != HS_CLIENT_HELLO {
                return Progress::Error(ParseError::NotClientHello(rest[5]));
            }
            let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            if len == 0 || len > MAX_FRAGMENT {
                return Progress::Error(ParseError::RecordLength(len));
            }
            if self.next_record + RECORD_HEADER + len > self.max_size {
                return Progress::Error(ParseError::TooLarge {
                    limit: self.max_size,
                });
            }
            if rest.len() < RECORD_HEADER + len {
                return Progress::NeedMore;
            }
            self.handshake
                .extend_from_slice(&rest[RECORD_HEADER..RECORD_HEADER + len]);
            self.next_record += RECORD_HEADER + len;
            self.records += 1;

            if self.handshake[0] != HS_CLIENT_HELLO {
                return Progress::Error(ParseError::NotClientHello(self.handshake[0]));
            }
            if self.handshake.len() < HANDSHAKE_HEADER {
                continue;
            }
            let body_len =
                u32::from_be_bytes([0, self.handshake[1], self.handshake[2], self.handshake[3]])
                    as usize;
            let msg_len = HANDSHAKE_HEADER + body_len;
            // Cheapest possible lower bound on the record bytes still needed: one more header
            // for every fragment still to come is not counted, so this never rejects a hello
            // that would fit.
            let needed = self.next_record + (msg_len - self.handshake.len().min(msg_len));
            if needed > self.max_size {
                return Progress::Error(ParseError::TooLarge {
                    limit: self.max_size,
                });
            }
            if self.handshake.len() < msg_len {
                continue;
            }
            return match parse_client_hello(&self.handshake[HANDSHAKE_HEADER..msg_len]) {
                Ok(mut info) => {
                    info.hello_len = msg_len;
                    info.records = self.records;
                    Progress::Done(info)
                }
                Err(e) => Progress::Error(e),
            };
        }
    }
}

/// Parses a whole input at once (convenience for tests and tools).
pub fn parse(data: &[u8], max_size: usize) -> Progress {
    ClientHelloParser::new(max_size).feed(data)
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        if self.data.len() < n {
            return Err(ParseError::Malformed(what));
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], ParseError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], ParseError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
}

/// GREASE values (RFC 8701 §2): 0x?a?a with both bytes equal.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

/// Parses the body of a ClientHello (RFC 8446 §4.1.2; RFC 5246 §7.4.1.2 for TLS 1.2).
fn parse_client_hello(body: &[u8]) -> Result<ClientHelloInfo, ParseError> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16("legacy_version")?;
    if legacy_version >> 8 != 3 {
        return Err(ParseError::Malformed("legacy_version"));
    }
    r.take(32, "random")?;
    let session_id = r.vec8("legacy_session_id")?;
    if session_id.len() > 32 {
        return Err(ParseError::Malformed("legacy_session_id"));
    }
    let suites = r.vec16("cipher_suites")?;
    if suites.len() < 2 || suites.len() % 2 != 0 {
        return Err(ParseError::Malformed("cipher_suites"));
    }
    let compression = r.vec8("legacy_compression_methods")?;
    if compression.is_empty() {
        return Err(ParseError::Malformed("legacy_compression_methods"));
    }
    let mut info = ClientHelloInfo {
        sni: None,
        legacy_version,
        max_version: legacy_version,
        alpn: Vec::new(),
        ech: None,
        hello_len: 0,
        records: 0,
    };
    // TLS 1.2 and earlier may omit the extensions block altogether (RFC 5246 §7.4.1.2).
    if r.is_empty() {
        return Ok(info);
    }
    let exts = r.vec16("extensions")?;
    if !r.is_empty() {
        return Err(ParseError::Malformed("trailing bytes after extensions"));
    }
    let mut seen: Vec<u16> = Vec::new();
    let mut r = Reader::new(exts);
    while !r.is_empty() {
        let ty = r.u16("extension type")?;
        let data = r.vec16("extension data")?;
        if seen.contains(&ty) {
            return Err(ParseError::DuplicateExtension(ty));
        }
        seen.push(ty);
        match ty {
            EXT_SERVER_NAME => info.sni = parse_server_name(data)?,
            EXT_SUPPORTED_VERSIONS => {
                let mut v = Reader::new(data);
                let list = v.vec8("supported_versions")?;
                if list.len() < 2 || list.len() % 2 != 0 || !v.is_empty() {
                    return Err(ParseError::Malformed("supported_versions"));
                }
                if let Some(max) = list
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .filter(|&v| !is_grease(v))
                    .max()
                {
                    info.max_version = max;
                }
            }
            EXT_ALPN => {
                let mut a = Reader::new(data);
                let list = a.vec16("alpn")?;
                if !a.is_empty() {
                    return Err(ParseError::Malformed("alpn"));
                }
                let mut l = Reader::new(list);
                while !l.is_empty() {
                    let name = l.vec8("alpn protocol")?;
                    if name.is_empty() {
                        return Err(ParseError::Malformed("empty alpn protocol"));
                    }
                    info.alpn.push(name.to_vec());
                }
            }
            EXT_ECH => {
                let kind = match data.first() {
                    None => return Err(ParseError::Malformed("encrypted_client_hello")),
                    Some(0) => EchKind::Outer,
                    Some(1) => EchKind::Inner,
                    Some(&b) => EchKind::Unknown(b),
                };
                info.ech = Some(kind);
            }
            _ => {} // GREASE and everything else: not needed to route.
        }
    }
    Ok(info)
}

/// The `host_name` of a `server_name` extension (RFC 6066 §3).
fn parse_server_name(data: &[u8]) -> Result<Option<String>, ParseError> {
    let mut r = Reader::new(data);
    let list = r.vec16("server_name_list")?;
    if !r.is_empty() || list.is_empty() {
        return Err(ParseError::Malformed("server_name_list"));
    }
    let mut l = Reader::new(list);
    let mut host = None;
    while !l.is_empty() {
        let ty = l.u8("server_name type")?;
        let name = l.vec16("server_name")?;
        if ty == SNI_HOST_NAME {
            // "The ServerNameList MUST NOT contain more than one name of the same name_type."
            if host.is_some() {
                return Err(ParseError::Malformed("two host_name entries"));
            }
            host = Some(normalize_host_name(name)?);
        }
    }
    Ok(host)
}

/// Validates a DNS host name (letters, digits, `-`, `_`, dots between non-empty labels of at
/// most 63 bytes, 253 bytes in all) and lower-cases it. One trailing dot is tolerated and
/// removed; RFC 6066 forbids it but some clients send it.
fn normalize_host_name(name: &[u8]) -> Result<String, ParseError> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(ParseError::InvalidServerName);
    }
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() || label.len() > 63 {
            return Err(ParseError::InvalidServerName);
        }
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ParseError::InvalidServerName);
        }
    }
    Ok(name
        .iter()
        .map(|b| b.to_ascii_lowercase() as char)
        .collect())
}

#[cfg(test)]
mod tests;
