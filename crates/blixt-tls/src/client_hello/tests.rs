use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::testutil::{ensure_openssl, Hello};

const LIMIT: usize = DEFAULT_MAX_HELLO_SIZE;

fn done(p: Progress) -> ClientHelloInfo {
    match p {
        Progress::Done(info) => info,
        other => panic!("expected a complete ClientHello, got {other:?}"),
    }
}

fn error(p: Progress) -> ParseError {
    match p {
        Progress::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The first flight of a rustls client, written into a buffer.
fn rustls_hello(
    versions: &[&'static rustls::SupportedProtocolVersion],
    name: &str,
    alpn: &[&[u8]],
    sni: bool,
) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = sni;
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls");
    }
    out
}

/// The first flight of `openssl s_client`, captured on a loopback listener.
fn openssl_hello(extra: &[&str]) -> Vec<u8> {
    let openssl = ensure_openssl();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut child = Command::new(openssl)
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdin(Stdio::piped()) // kept open: s_client quits on stdin EOF
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning openssl s_client");
    let (mut sock, _) = listener.accept().expect("accept");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut parser = ClientHelloParser::new(LIMIT);
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "openssl sent no full hello");
        let n = sock.read(&mut buf).expect("read");
        assert!(n > 0, "openssl closed before a full ClientHello");
        match parser.feed(&buf[..n]) {
            Progress::NeedMore => continue,
            Progress::Done(_) => break,
            Progress::Error(e) => panic!("openssl hello rejected: {e}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    parser.into_buffered()
}

/// Re-frames the handshake bytes of `flight` (one ClientHello) into records of `frag` bytes.
fn refragment(flight: &[u8], frag: usize) -> Vec<u8> {
    let mut hs = Vec::new();
    let mut rest = flight;
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        hs.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
    crate::testutil::records(&hs, frag)
}

/// Every property that holds for any valid hello: every strict prefix needs more, any split
/// in two gives the same answer, byte-at-a-time too, and refragmented records as well.
fn check_all_ways(flight: &[u8]) -> ClientHelloInfo {
    let whole = done(parse(flight, LIMIT));
    for k in 0..flight.len() {
        assert_eq!(
            parse(&flight[..k], LIMIT),
            Progress::NeedMore,
            "prefix of {k} bytes"
        );
        let mut p = ClientHelloParser::new(LIMIT);
        assert_eq!(p.feed(&flight[..k]), Progress::NeedMore);
        assert_eq!(done(p.feed(&flight[k..])), whole, "split at {k}");
        assert_eq!(p.buffered(), flight);
    }
    let mut p = ClientHelloParser::new(LIMIT);
    let mut last = Progress::NeedMore;
    for (i, b) in flight.iter().enumerate() {
        assert_eq!(last, Progress::NeedMore, "done early at byte {i}");
        last = p.feed(std::slice::from_ref(b));
    }
    assert_eq!(done(last), whole);
    for frag in [1, 2, 3, 7, 64, 500] {
        let re = refragment(flight, frag);
        let info = done(parse(&re, LIMIT));
        assert_eq!(info.sni, whole.sni, "fragments of {frag}");
        assert_eq!(info.max_version, whole.max_version);
        assert_eq!(info.records, whole.hello_len.div_ceil(frag));
        // and the fragmented form split across reads
        for k in (0..re.len()).step_by(re.len() / 13 + 1) {
            let mut p = ClientHelloParser::new(LIMIT);
            assert_eq!(p.feed(&re[..k]), Progress::NeedMore);
            assert_eq!(done(p.feed(&re[k..])).sni, whole.sni);
        }
    }
    whole
}

#[test]
fn rustls_tls13_hello() {
    let flight = rustls_hello(
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        "A.Example.com",
        &[b"h2", b"http/1.1"],
        true,
    );
    let info = check_all_ways(&flight);
    assert_eq!(info.sni.as_deref(), Some("a.example.com"));
    assert_eq!(info.legacy_version, 0x0303);
    assert_eq!(info.max_version, 0x0304);
    assert_eq!(info.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    assert_eq!(info.ech, None);
    assert_eq!(info.records, 1);
    assert_eq!(info.hello_len, flight.len() - 5);
}

#[test]
fn rustls_tls12_only_hello() {
    let flight = rustls_hello(&[&rustls::version::TLS12], "b.example.com", &[], true);
    let info = check_all_ways(&flight);
    assert_eq!(info.sni.as_deref(), Some("b.example.com"));
    assert_eq!(info.max_version, 0x0303);
}

#[test]
fn rustls_without_sni() {
    // rustls never sends an IP address as SNI, and can be told to send none at all.
    let by_ip = rustls_hello(&[&rustls::version::TLS13], "192.0.2.1", &[], true);
    assert_eq!(check_all_ways(&by_ip).sni, None);
    let disabled = rustls_hello(&[&rustls::version::TLS13], "a.example.com", &[], false);
    assert_eq!(check_all_ways(&disabled).sni, None);
}

#[test]
fn openssl_s_client_hellos() {
    for (args, version) in [
        (
            &["-servername", "x.wild.example.com", "-tls1_3"][..],
            0x0304,
        ),
        (
            &["-servername", "x.wild.example.com", "-tls1_2"][..],
            0x0303,
        ),
        (
            &["-servername", "x.wild.example.com", "-alpn", "h2,http/1.1"][..],
            0x0304,
        ),
    ] {
        let flight = openssl_hello(args);
        let info = check_all_ways(&flight);
        assert_eq!(info.sni.as_deref(), Some("x.wild.example.com"), "{args:?}");
        assert_eq!(info.max_version, version, "{args:?}");
    }
    let none = openssl_hello(&["-noservername"]);
    assert_eq!(check_all_ways(&none).sni, None);
}

#[test]
fn crafted_tls12_without_extensions() {
    let h = Hello {
        extensions: None,
        ..Hello::default()
    };
    let info = check_all_ways(&h.flight(16384));
    assert_eq!(info.sni, None);
    assert_eq!(info.max_version, 0x0303);
}

#[test]
fn grease_everywhere_is_ignored() {
    let mut h = Hello::with_sni("g.example.com");
    h.suites.insert(0, 0x2a2a);
    h.extensions.as_mut().unwrap().insert(0, (0x0a0a, vec![]));
    h.extensions.as_mut().unwrap().push((0xfafa, vec![0]));
    // supported_versions with GREASE first: 0x7a7a is numerically above TLS 1.3.
    h.extensions.as_mut().unwrap().push((
        EXT_SUPPORTED_VERSIONS,
        vec![6, 0x7a, 0x7a, 0x03, 0x04, 0x03, 0x03],
    ));
    let info = check_all_ways(&h.flight(16384));
    assert_eq!(info.sni.as_deref(), Some("g.example.com"));
    assert_eq!(info.max_version, 0x0304);
    assert!(is_grease(0x0a0a) && is_grease(0xfafa) && !is_grease(0x0a1a));
}

#[test]
fn ech_outer_takes_the_public_name() {
    let mut h = Hello::with_sni("public.example.com");
    // ECHClientHello outer: type, cipher suite, config id, enc, payload (opaque here).
    let mut ech = vec![0, 0x00, 0x01, 0x00, 0x01, 7];
    ech.extend_from_slice(&[0, 32]);
    ech.extend_from_slice(&[0x42; 32]);
    ech.extend_from_slice(&[0, 200]);
    ech.extend_from_slice(&[0x17; 200]);
    h.extensions.as_mut().unwrap().push((EXT_ECH, ech));
    let info = check_all_ways(&h.flight(16384));
    assert_eq!(info.sni.as_deref(), Some("public.example.com"));
    assert_eq!(info.ech, Some(EchKind::Outer));
}

#[test]
fn server_name_without_host_name_entry() {
    let mut h = Hello::default();
    // a name_type other than host_name(0) is skipped
    h.extensions
        .as_mut()
        .unwrap()
        .push((EXT_SERVER_NAME, Hello::sni_ext_raw(&[(7, b"opaque")])));
    assert_eq!(done(parse(&h.flight(16384), LIMIT)).sni, None);
}

#[test]
fn trailing_dot_and_case_are_normalized() {
    let info = done(parse(
        &Hello::with_sni("WWW.Example.COM.").flight(100),
        LIMIT,
    ));
    assert_eq!(info.sni.as_deref(), Some("www.example.com"));
}

#[test]
fn invalid_server_names_are_rejected() {
    for bad in [
        &b""[..],
        b".",
        b"a..b",
        b".a.b",
        b"a b.com",
        b"a\0.com",
        b"caf\xc3\xa9.com",
        b"a/b",
        b"1.2.3.4:443",
    ] {
        let mut h = Hello::default();
        h.extensions
            .as_mut()
            .unwrap()
            .push((EXT_SERVER_NAME, Hello::sni_ext_raw(&[(0, bad)])));
        assert_eq!(
            error(parse(&h.flight(16384), LIMIT)),
            ParseError::InvalidServerName,
            "{bad:?}"
        );
    }
    let long_label = format!("{}.com", "a".repeat(64));
    let long_name = vec!["abcdefghi"; 26].join(".");
    for bad in [long_label, long_name] {
        assert_eq!(
            error(parse(&Hello::with_sni(&bad).flight(16384), LIMIT)),
            ParseError::InvalidServerName
        );
    }
    let ok = format!("{}.com", "a".repeat(63));
    assert!(matches!(
        parse(&Hello::with_sni(&ok).flight(16384), LIMIT),
        Progress::Done(_)
    ));
}

#[test]
fn non_tls_is_rejected_on_the_first_byte() {
    for (input, want) in [
        (&b"GET / HTTP/1.1\r\n"[..], ParseError::NotTls(b'G')),
        (b"SSH-2.0-OpenSSH", ParseError::NotTls(b'S')),
        (b"\x15\x03\x01\x00\x02\x02\x28", ParseError::NotTls(0x15)),
        (b"\x80\x2e\x01\x00\x02", ParseError::Ssl2),
    ] {
        let mut p = ClientHelloParser::new(LIMIT);
        assert_eq!(error(p.feed(&input[..1])), want);
        // final: more bytes do not change the verdict
        assert_eq!(error(p.feed(&input[1..])), want);
    }
    assert_eq!(parse(b"", LIMIT), Progress::NeedMore);
}

#[test]
fn record_layer_errors() {
    let flight = Hello::with_sni("a.example.com").flight(16384);
    let mut bad_version = flight.clone();
    bad_version[1] = 2;
    assert_eq!(
        error(parse(&bad_version[..3], LIMIT)),
        ParseError::RecordVersion(0x0201)
    );
    assert_eq!(
        error(parse(b"\x16\x03\x01\x00\x00", LIMIT)),
        ParseError::RecordLength(0)
    );
    assert_eq!(
        error(parse(b"\x16\x03\x01\x40\x01", LIMIT)),
        ParseError::RecordLength(16385)
    );
    // a ServerHello where a ClientHello belongs
    let mut server_hello = flight.clone();
    server_hello[5] = 2;
    assert_eq!(
        error(parse(&server_hello[..6], LIMIT)),
        ParseError::NotClientHello(2)
    );
    // an alert between two fragments of the hello
    let two = refragment(&flight, 40);
    let mut mixed = two[..45].to_vec();
    mixed.extend_from_slice(b"\x15\x03\x03\x00\x02\x02\x28");
    assert_eq!(
        error(parse(&mixed, LIMIT)),
        ParseError::UnexpectedRecord(0x15)
    );
}

#[test]
fn malformed_hellos() {
    let mut dup = Hello::with_sni("a.example.com");
    dup.extensions.as_mut().unwrap().push((
        EXT_SERVER_NAME,
        Hello::sni_ext_raw(&[(0, b"b.example.com")]),
    ));
    assert_eq!(
        error(parse(&dup.flight(16384), LIMIT)),
        ParseError::DuplicateExtension(0)
    );
    let mut two_names = Hello::default();
    two_names.extensions.as_mut().unwrap().push((
        EXT_SERVER_NAME,
        Hello::sni_ext_raw(&[(0, b"a.example.com"), (0, b"b.example.com")]),
    ));
    assert!(matches!(
        error(parse(&two_names.flight(16384), LIMIT)),
        ParseError::Malformed(_)
    ));
    let no_suites = Hello {
        suites: vec![],
        ..Hello::default()
    };
    assert!(matches!(
        error(parse(&no_suites.flight(16384), LIMIT)),
        ParseError::Malformed("cipher_suites")
    ));
    let no_compression = Hello {
        compression: vec![],
        ..Hello::default()
    };
    assert!(matches!(
        error(parse(&no_compression.flight(16384), LIMIT)),
        ParseError::Malformed(_)
    ));
    // inner lengths that point past the message
    let good = Hello::with_sni("a.example.com").handshake();
    let without_extensions = Hello {
        extensions: None,
        ..Hello::default()
    }
    .handshake()
    .len();
    for cut in 1..good.len() - 4 {
        if good.len() - cut == without_extensions {
            continue; // a valid hello without an extensions block
        }
        let mut hs = good[..good.len() - cut].to_vec();
        let body = (hs.len() - 4) as u32;
        hs[1..4].copy_from_slice(&body.to_be_bytes()[1..]);
        let e = error(parse(&crate::testutil::records(&hs, 16384), LIMIT));
        assert!(
            matches!(e, ParseError::Malformed(_)),
            "cut {cut} gave {e:?}"
        );
    }
}

#[test]
fn size_limit() {
    let mut big = Hello::with_sni("a.example.com");
    // padding extension (RFC 7685) of 20 KiB
    big.extensions
        .as_mut()
        .unwrap()
        .push((21, vec![0; 20 * 1024]));
    let flight = big.flight(16384);
    // the handshake header already announces more than the limit: rejected after 9 bytes
    assert_eq!(
        error(parse(&flight[..9], LIMIT)),
        ParseError::TooLarge { limit: LIMIT }
    );
    assert!(matches!(parse(&flight, 64 * 1024), Progress::Done(_)));

    // exactly at the limit is accepted, one byte less is not
    let h = Hello::with_sni("a.example.com").flight(16384);
    assert!(matches!(parse(&h, h.len()), Progress::Done(_)));
    assert_eq!(
        error(parse(&h, h.len() - 1)),
        ParseError::TooLarge { limit: h.len() - 1 }
    );
    // tiny records: the header overhead counts too
    let tiny = refragment(&h, 1);
    assert!(matches!(parse(&tiny, tiny.len()), Progress::Done(_)));
    assert!(matches!(
        parse(&tiny, tiny.len() - 1),
        Progress::Error(ParseError::TooLarge { .. })
    ));
    // a peer that never finishes: fed in small reads, stops at the limit
    let mut p = ClientHelloParser::new(1000);
    let endless = refragment(&flight, 100);
    let mut verdict = Progress::NeedMore;
    for chunk in endless.chunks(7) {
        let take = chunk.len().min(p.remaining_capacity());
        verdict = p.feed(&chunk[..take]);
        if verdict != Progress::NeedMore {
            break;
        }
    }
    assert_eq!(error(verdict), ParseError::TooLarge { limit: 1000 });
    assert!(p.buffered().len() <= 1001);
}

#[test]
fn bytes_after_the_hello_are_kept() {
    let mut flight = Hello::with_sni("a.example.com").flight(16384);
    let n = flight.len();
    flight.extend_from_slice(b"\x17\x03\x03\x00\x05early");
    let mut p = ClientHelloParser::new(LIMIT);
    let info = done(p.feed(&flight));
    assert_eq!(info.hello_len, n - 5);
    assert_eq!(p.buffered(), &flight[..]);
}

fn feed_chunked(data: &[u8], cuts: &[usize]) -> Progress {
    let mut p = ClientHelloParser::new(4096);
    let mut last = Progress::NeedMore;
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&data.len())) {
        let c = c.clamp(at, data.len());
        last = p.feed(&data[at..c]);
        at = c;
        if last != Progress::NeedMore {
            break;
        }
    }
    last
}

fn same_verdict(a: &Progress, b: &Progress) -> bool {
    match (a, b) {
        (Progress::Done(x), Progress::Done(y)) => x == y,
        (Progress::Error(_), Progress::Error(_)) | (Progress::NeedMore, Progress::NeedMore) => true,
        _ => false,
    }
}

proptest! {
    // A fixed budget so that `cargo test` stays fast; the fuzz target goes further.
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048),
                                cuts in proptest::collection::vec(0usize..2048, 0..6)) {
        let whole = parse(&data, 4096);
        let mut cuts = cuts;
        cuts.sort_unstable();
        prop_assert!(same_verdict(&whole, &feed_chunked(&data, &cuts)));
    }

    #[test]
    fn random_records_never_panic(body in proptest::collection::vec(any::<u8>(), 0..1500),
                                  frag in 1usize..600,
                                  cuts in proptest::collection::vec(0usize..2048, 0..6)) {
        // Valid record and handshake framing around random content reaches the inner parser.
        let mut hs = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        hs.extend_from_slice(&body);
        let data = crate::testutil::records(&hs, frag);
        let whole = parse(&data, 4096);
        let mut cuts = cuts;
        cuts.sort_unstable();
        prop_assert!(same_verdict(&whole, &feed_chunked(&data, &cuts)));
    }

    #[test]
    fn mutated_real_hellos_never_panic(flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8),
                                       cut in 0usize..4096) {
        let mut data = rustls_hello(&[&rustls::version::TLS13], "a.example.com", &[b"h2"], true);
        for (at, v) in flips {
            let at = at % data.len();
            data[at] = v;
        }
        let whole = parse(&data, 4096);
        prop_assert!(same_verdict(&whole, &feed_chunked(&data, &[cut])));
        if let Progress::Done(info) = whole {
            prop_assert!(info.hello_len + 5 <= data.len() + 5 * info.records);
        }
    }
}
