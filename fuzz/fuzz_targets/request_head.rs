//! Fuzzes the request-head rewriter: any bytes, any client facts; it must never panic, and a
//! rewritten head must itself parse, carry our headers once, and end with the input's tail.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;

#[path = "../../src/forward/request_head.rs"]
mod request_head;

use request_head::{ClientFacts, rewrite};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the facts, so both trust modes and address families are covered.
    let Some((&switches, received)) = data.split_first() else {
        return;
    };
    let ip = if switches & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))
    } else {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    };
    let cert = [("X-Client-Cert-Subject", "CN=fuzz\r\n\u{7f}%")];
    let facts = ClientFacts {
        addr: SocketAddr::new(ip, 50123),
        local_port: 8443,
        sni: (switches & 2 != 0).then_some("app.test"),
        trusted: switches & 4 != 0,
        cert_headers: if switches & 8 != 0 { &cert } else { &[] },
    };
    let Ok(Some(out)) = rewrite(received, &facts) else {
        return;
    };
    // What we send upstream must parse as a complete head with our headers exactly once.
    let mut headers = [httparse::EMPTY_HEADER; request_head::MAX_HEADERS + 16];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = request.parse(&out) else {
        panic!(
            "rewritten head does not parse: {:?}",
            String::from_utf8_lossy(&out)
        );
    };
    for ours in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "forwarded",
        "x-client-cert-subject",
    ] {
        let count = request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(ours))
            .count();
        let expected = usize::from(ours != "x-client-cert-subject" || switches & 8 != 0);
        assert_eq!(count, expected, "{ours} appears {count} times");
    }
    // The bytes after the head pass through untouched.
    let mut original = [httparse::EMPTY_HEADER; request_head::MAX_HEADERS];
    let Ok(httparse::Status::Complete(original_len)) =
        httparse::Request::new(&mut original).parse(received)
    else {
        panic!("rewrite accepted a head httparse rejects");
    };
    assert_eq!(&out[len..], &received[original_len..]);
});
