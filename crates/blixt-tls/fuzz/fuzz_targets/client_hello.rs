//! Feeds arbitrary bytes to the ClientHello parser, whole and in chunks chosen by the input,
//! and checks that both ways agree and that the buffer stays within the limit.
//!
//! Input: one control byte, then the stream. Control bit 0 selects the mode: raw (the bytes
//! are the stream as received) or framed (the bytes are a ClientHello body, wrapped here in a
//! handshake header and records, so that most inputs reach the extension parser). The other
//! bits choose the read size and the record fragment size.
#![no_main]

#[path = "../../src/client_hello.rs"]
mod client_hello;

use client_hello::{ClientHelloParser, Progress};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 4096;

fn framed(body: &[u8], frag: usize) -> Vec<u8> {
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(body);
    let mut out = Vec::new();
    for chunk in hs.chunks(frag) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&ctl, rest)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(ctl >> 1).max(1);
    let owned;
    let data: &[u8] = if ctl & 1 == 0 {
        rest
    } else {
        owned = framed(rest, usize::from(ctl >> 4) * 97 + 1);
        &owned
    };

    let whole = ClientHelloParser::new(LIMIT).feed(data);

    let mut p = ClientHelloParser::new(LIMIT);
    let mut last = Progress::NeedMore;
    let mut rest = data;
    while !rest.is_empty() {
        let n = chunk.min(rest.len()).min(p.remaining_capacity());
        last = p.feed(&rest[..n]);
        rest = &rest[n..];
        if last != Progress::NeedMore {
            break;
        }
    }
    // reads bounded by remaining_capacity keep the buffer within the limit plus one byte
    assert!(p.buffered().len() <= LIMIT + 1);
    match (&whole, &last) {
        (Progress::Done(a), Progress::Done(b)) => assert_eq!(a, b),
        (Progress::Done(_), _) | (_, Progress::Done(_)) => {
            panic!("whole {whole:?} vs chunked {last:?}")
        }
        _ => {}
    }
    if let Progress::Done(info) = whole {
        if let Some(sni) = info.sni {
            assert!(!sni.is_empty() && sni.len() <= 253);
            assert!(sni.bytes().all(|b| b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'-' | b'_' | b'.')));
        }
    }
});
