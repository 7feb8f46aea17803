//! Fuzzes the inbound PROXY protocol header parser: any bytes, with each accepted version; it
//! must never panic, and its answers must be those the reader relies on to take no byte of
//! the TLS ClientHello after a header (haproxy's proxy-protocol.txt: the receiver reads the
//! header, and only the header, before the proxied stream).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/proxy/proxy_header/parse.rs"]
mod parse;

use parse::{AcceptProxy, Announced, HeaderError, MAX_HEADER, Parsed, parse};

/// A decision, comparable: where the header ends and what it said, or why it was refused.
#[derive(Debug, PartialEq)]
enum Decision {
    Header(usize, Announced),
    Missing,
    Malformed,
}

/// What `buf` is, checking the promises each answer makes about `buf` alone.
fn decide(buf: &[u8], accept: AcceptProxy) -> Option<Decision> {
    match parse(buf, accept) {
        Parsed::Incomplete(needed) => {
            assert!(
                needed > buf.len(),
                "Incomplete({needed}) with {} bytes",
                buf.len()
            );
            assert!(needed <= MAX_HEADER, "Incomplete({needed}) over the cap");
            None
        }
        Parsed::Header { len, announced } => {
            assert!(
                len > 0 && len <= buf.len() && len <= MAX_HEADER,
                "len {len} of {}",
                buf.len()
            );
            Some(Decision::Header(len, announced))
        }
        Parsed::Invalid(HeaderError::Missing) => Some(Decision::Missing),
        Parsed::Invalid(HeaderError::Malformed(_)) => Some(Decision::Malformed),
        Parsed::Invalid(other) => panic!("parse gave a reader's error: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut by_accept = Vec::with_capacity(3);
    for accept in [AcceptProxy::V1, AcceptProxy::V2, AcceptProxy::Any] {
        let whole = decide(data, accept);
        match &whole {
            // The decision rests on the header's bytes alone: they decide the same way, and
            // every shorter prefix is incomplete (so the reader, which consumes only
            // incomplete prefixes, never takes a byte past the header).
            Some(Decision::Header(len, _)) => {
                assert_eq!(decide(&data[..*len], accept), whole, "the header alone");
                let cuts: Vec<usize> = if *len <= 128 {
                    (0..*len).collect()
                } else {
                    vec![0, 1, 15, 16, len / 2, len - 1]
                };
                for cut in cuts {
                    assert_eq!(
                        decide(&data[..cut], accept),
                        None,
                        "prefix {cut} of a {len}-byte header"
                    );
                }
            }
            // A prefix that decides must decide as the whole does (bytes after a decision
            // change nothing); an incomplete buffer has only incomplete prefixes.
            _ => {
                for cut in [0, 1, data.len() / 2, data.len().saturating_sub(1)] {
                    let cut = cut.min(data.len());
                    match decide(&data[..cut], accept) {
                        None => {}
                        Some(Decision::Header(len, announced)) => {
                            panic!(
                                "prefix {cut} is a {len}-byte header ({announced:?}) but the whole is {whole:?}"
                            )
                        }
                        prefix => assert_eq!(prefix, whole, "prefix {cut}"),
                    }
                }
            }
        }
        by_accept.push(whole);
    }
    // `any` takes whatever one version takes, the same way.
    let (v1, v2, any) = (&by_accept[0], &by_accept[1], &by_accept[2]);
    for one in [v1, v2] {
        if let Some(Decision::Header(..) | Decision::Malformed) = one {
            assert_eq!(any, one, "any against one version");
        }
    }
});
