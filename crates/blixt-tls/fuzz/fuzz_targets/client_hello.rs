//! Feeds arbitrary bytes to the ClientHello parser, whole and in chunks chosen by the input,
//! and checks that both ways agree and that the buffer stays within the limit.
#![no_main]

#[path = "../../src/client_hello.rs"]
mod client_hello;

use client_hello::{ClientHelloParser, Progress};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 4096;

fuzz_target!(|input: &[u8]| {
    // First byte: chunk size for the incremental run; the rest is the stream.
    let Some((&chunk, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);

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
