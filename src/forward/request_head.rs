//! The client's first request head rewritten for the upstream: who the client is, in
//! `X-Forwarded-*`, RFC 7239 `Forwarded` and `X-Client-Cert-*` headers.
//!
//! [`rewrite`] is a pure function over the bytes received so far, so it can be fuzzed alone:
//! this file uses only `std`, `httparse` and `thiserror` (the fuzz target in `fuzz/` compiles
//! it by path).

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Most header lines a head may carry; more is answered like an oversized head (431). A
/// WebSocket upgrade from a browser carries about 15.
pub const MAX_HEADERS: usize = 100;

/// Room reserved for the headers we add, so the output rarely reallocates.
const ADDED_HEADERS_ROOM: usize = 256;

/// What the upstream should be told about the connection the head arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ClientFacts<'a> {
    /// The client's address as the sidecar sees it (TCP peer).
    pub addr: SocketAddr,
    /// The port the client connected to (the sidecar's listener), for `X-Forwarded-Port`.
    pub local_port: u16,
    /// The TLS SNI, used as `X-Forwarded-Host` when the head has no `Host`.
    pub sni: Option<&'a str>,
    /// `--trust-forwarded` matched the client: its `X-Forwarded-For` and `Forwarded` values
    /// are kept and ours appended; otherwise they are replaced.
    pub trusted: bool,
    /// The verified client certificate as `(header name, value)` pairs
    /// (`X-Client-Cert-Subject`, …); empty without one. Values are escaped on the way out.
    pub cert_headers: &'a [(&'a str, &'a str)],
}

/// Why a head cannot be forwarded. Each ends only its own connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not an HTTP/1.x request head: answered `400 Bad Request`.
    #[error("malformed request head: {0}")]
    Malformed(httparse::Error),
    /// More than [`MAX_HEADERS`] header lines (or, decided by the reader, more bytes than the
    /// cap): answered `431 Request Header Fields Too Large`.
    #[error("request head too large")]
    TooLarge,
}

/// Given the bytes received so far, returns `Ok(None)` while the head is incomplete, or the
/// bytes to send upstream instead: the rewritten head followed by whatever came after it
/// (a body or the first WebSocket frames), unchanged.
pub fn rewrite(received: &[u8], client: &ClientFacts<'_>) -> Result<Option<Vec<u8>>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(received) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(len)) => len,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(err) => return Err(HeadError::Malformed(err)),
    };
    // A complete parse always fills these; a head without them is not a request.
    let (Some(method), Some(path), Some(version)) = (request.method, request.path, request.version)
    else {
        return Err(HeadError::Malformed(httparse::Error::Token));
    };

    let mut out = Vec::with_capacity(received.len() + ADDED_HEADERS_ROOM);
    // Writing into a Vec cannot fail; `let _` keeps that visible.
    let _ = write!(out, "{method} {path} HTTP/1.{version}\r\n");
    let mut host: Option<&[u8]> = None;
    let mut prior_xff: Vec<&[u8]> = Vec::new();
    let mut prior_forwarded: Vec<&[u8]> = Vec::new();
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            if client.trusted {
                prior_xff.push(header.value);
            }
            continue;
        }
        if name.eq_ignore_ascii_case("forwarded") {
            if client.trusted {
                prior_forwarded.push(header.value);
            }
            continue;
        }
        // These describe this hop, so ours replace the client's; a client never vouches for
        // its own certificate.
        if ["x-forwarded-proto", "x-forwarded-host", "x-forwarded-port"]
            .iter()
            .any(|own| name.eq_ignore_ascii_case(own))
            || starts_with_ignore_case(name, "x-client-cert-")
        {
            continue;
        }
        if name.eq_ignore_ascii_case("host") && host.is_none() {
            host = Some(header.value);
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value);
        out.extend_from_slice(b"\r\n");
    }
    let host = host.or(client.sni.map(str::as_bytes));

    out.extend_from_slice(b"X-Forwarded-For: ");
    for value in &prior_xff {
        out.extend_from_slice(value);
        out.extend_from_slice(b", ");
    }
    let _ = write!(out, "{}\r\n", client.addr.ip());
    out.extend_from_slice(b"X-Forwarded-Proto: https\r\n");
    if let Some(host) = host {
        out.extend_from_slice(b"X-Forwarded-Host: ");
        out.extend_from_slice(host);
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(out, "X-Forwarded-Port: {}\r\n", client.local_port);
    write_forwarded(&mut out, &prior_forwarded, client.addr, host);
    for (name, value) in client.cert_headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        escape_value(&mut out, value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&received[head_len..]);
    Ok(Some(out))
}

/// `Forwarded: [prior, ]for="ip:port";proto=https[;host="…"]` (RFC 7239). A node with a port
/// is not a token, so it is always quoted; IPv6 goes in brackets (`for="[::1]:443"`).
fn write_forwarded(out: &mut Vec<u8>, prior: &[&[u8]], addr: SocketAddr, host: Option<&[u8]>) {
    out.extend_from_slice(b"Forwarded: ");
    for value in prior {
        out.extend_from_slice(value);
        out.extend_from_slice(b", ");
    }
    let _ = match addr.ip() {
        IpAddr::V4(ip) => write!(out, "for=\"{ip}:{}\"", addr.port()),
        IpAddr::V6(ip) => write!(out, "for=\"[{ip}]:{}\"", addr.port()),
    };
    out.extend_from_slice(b";proto=https");
    if let Some(host) = host {
        out.extend_from_slice(b";host=\"");
        for &byte in host {
            if byte == b'"' || byte == b'\\' {
                out.push(b'\\');
            }
            out.push(byte);
        }
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
}

/// Copies a value we generated (from a certificate) into a header, percent-encoding anything
/// outside visible ASCII and space, and `%` itself, so no certificate can inject a header.
fn escape_value(out: &mut Vec<u8>, value: &[u8]) {
    for &byte in value {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

fn starts_with_ignore_case(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(trusted: bool) -> ClientFacts<'static> {
        ClientFacts {
            addr: "192.0.2.7:50123".parse().unwrap(),
            local_port: 8443,
            sni: Some("app.test"),
            trusted,
            cert_headers: &[],
        }
    }

    fn text(bytes: Option<Vec<u8>>) -> String {
        String::from_utf8_lossy(&bytes.expect("complete head")).into_owned()
    }

    const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: app.test:8443\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\
X-Client-Cert-Subject: CN=admin\r\nX-Forwarded-Proto: http\r\n\r\n\x81\x05hello";

    #[test]
    fn untrusted_client_values_are_replaced_and_the_rest_kept_raw() {
        let out = text(rewrite(UPGRADE, &facts(false)).unwrap());
        assert!(
            out.starts_with("GET /ws HTTP/1.1\r\nHost: app.test:8443\r\n"),
            "{out}"
        );
        assert!(out.contains("\r\nX-Forwarded-For: 192.0.2.7\r\n"), "{out}");
        assert!(out.contains("\r\nX-Forwarded-Proto: https\r\n"), "{out}");
        assert!(
            out.contains("\r\nX-Forwarded-Host: app.test:8443\r\n"),
            "{out}"
        );
        assert!(out.contains("\r\nX-Forwarded-Port: 8443\r\n"), "{out}");
        assert!(
            out.contains(
                "\r\nForwarded: for=\"192.0.2.7:50123\";proto=https;host=\"app.test:8443\"\r\n"
            ),
            "{out}"
        );
        assert!(
            !out.contains("6.6.6.6") && !out.contains("CN=admin"),
            "{out}"
        );
        assert!(!out.contains("Proto: http\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n\u{FFFD}\u{5}hello"), "{out}");
    }

    #[test]
    fn trusted_client_values_are_appended_to() {
        let out = text(rewrite(UPGRADE, &facts(true)).unwrap());
        assert!(
            out.contains("\r\nX-Forwarded-For: 6.6.6.6, 192.0.2.7\r\n"),
            "{out}"
        );
        assert!(
            out.contains("\r\nForwarded: for=6.6.6.6, for=\"192.0.2.7:50123\""),
            "{out}"
        );
        assert!(!out.contains("CN=admin"), "{out}");
    }

    #[test]
    fn ipv6_is_bracketed_and_quoted_and_sni_stands_in_for_host() {
        let mut f = facts(false);
        f.addr = "[::1]:4000".parse().unwrap();
        let out = text(rewrite(b"GET / HTTP/1.1\r\n\r\n", &f).unwrap());
        assert!(out.contains("X-Forwarded-For: ::1\r\n"), "{out}");
        assert!(
            out.contains("Forwarded: for=\"[::1]:4000\";proto=https;host=\"app.test\"\r\n"),
            "{out}"
        );
        assert!(out.contains("X-Forwarded-Host: app.test\r\n"), "{out}");
    }

    #[test]
    fn certificate_headers_are_escaped() {
        let mut f = facts(false);
        let cert = [("X-Client-Cert-Subject", "CN=a\r\nEvil: 1 100%")];
        f.cert_headers = &cert;
        let out = text(rewrite(b"GET / HTTP/1.1\r\n\r\n", &f).unwrap());
        assert!(
            out.contains("X-Client-Cert-Subject: CN=a%0D%0AEvil: 1 100%25\r\n"),
            "{out}"
        );
    }

    #[test]
    fn partial_malformed_and_crowded_heads() {
        assert_eq!(
            rewrite(b"GET / HTTP/1.1\r\nHost: a", &facts(false)),
            Ok(None)
        );
        assert!(matches!(
            rewrite(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", &facts(false)),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            rewrite(b"\x16\x03\x01\x00\r\n\r\n", &facts(false)),
            Err(HeadError::Malformed(_))
        ));
        let mut crowded = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            crowded.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        crowded.extend_from_slice(b"\r\n");
        assert_eq!(rewrite(&crowded, &facts(false)), Err(HeadError::TooLarge));
    }
}
