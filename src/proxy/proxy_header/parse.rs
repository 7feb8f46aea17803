//! What the first bytes of a connection from a load balancer are: a whole PROXY protocol
//! header (v1 text or v2 binary), the start of one, or not one. Pure, so it is fuzzed
//! (`fuzz/fuzz_targets/proxy_header.rs` includes this file alone); `ppp` parses the header,
//! this file only finds where it ends.
//!
//! The protocol: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::net::{IpAddr, SocketAddr};

use ppp::v2::{Addresses, Command};

/// Longest header accepted, in bytes. A v2 header may declare up to 65535 + 16, but what a
/// load balancer adds after the addresses (AWS's VPC endpoint ID, GCP's PSC ID, HAProxy's
/// unique ID and SSL facts) is a few hundred bytes at most, and the reader holds this much
/// per connection while it arrives. A v1 header is at most 107 bytes by definition.
pub const MAX_HEADER: usize = 4096;

/// Longest v1 header, CRLF included (the protocol's own limit).
const V1_MAX: usize = 107;
/// What every v1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The v2 header's fixed part: the 12-byte signature, version and command, family and
/// protocol, and the length of the rest (bytes 14..16, big-endian).
const V2_FIXED: usize = 16;
/// The v2 version-and-command byte of a LOCAL header (the load balancer's own connection,
/// such as a health check).
const V2_LOCAL: u8 = 0x20;

/// Which header versions `--accept-proxy-protocol` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptProxy {
    /// The text header only.
    V1,
    /// The binary header only.
    V2,
    /// Either (the first byte tells them apart: `P` or `\r`).
    Any,
}

/// Why a connection's PROXY header was refused. Every one is fatal to the connection (it is
/// closed and counted under [`HeaderError::reason`]); none affects another connection.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The peer is not in `--trust-proxy-from`; nothing was read from it.
    #[error("{0} is not in --trust-proxy-from")]
    Untrusted(IpAddr),
    /// The first bytes are not a PROXY header of an accepted version (a client that skipped
    /// the load balancer sends a TLS ClientHello straight away).
    #[error("no PROXY protocol header of an accepted version")]
    Missing,
    /// A PROXY header that `ppp` rejects, or one longer than the protocol or [`MAX_HEADER`]
    /// allows.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    /// The whole header did not arrive before the deadline.
    #[error("no complete PROXY protocol header before the deadline")]
    Timeout,
    /// The peer closed the connection before the whole header arrived.
    #[error("the connection closed before the PROXY protocol header was complete")]
    Closed,
    /// Reading the socket failed.
    #[error("cannot read the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

impl HeaderError {
    /// Every [`HeaderError::reason`], for metrics to register up front.
    pub const REASONS: [&'static str; 6] = [
        "proxy_untrusted",
        "proxy_missing",
        "proxy_malformed",
        "proxy_timeout",
        "proxy_closed",
        "proxy_io",
    ];

    /// The metric label of this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Untrusted(_) => "proxy_untrusted",
            Self::Missing => "proxy_missing",
            Self::Malformed(_) => "proxy_malformed",
            Self::Timeout => "proxy_timeout",
            Self::Closed => "proxy_closed",
            Self::Io(_) => "proxy_io",
        }
    }
}

/// What a header said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// A v1 `TCP4`/`TCP6` or v2 PROXY header over IPv4 or IPv6: the client's address and
    /// port. An IPv4-mapped IPv6 address is given as IPv4, as the sidecar compares them.
    Client(SocketAddr),
    /// A v2 LOCAL header (the load balancer's health checks), a v1 `UNKNOWN` one, or a v2
    /// PROXY header over AF_UNIX or AF_UNSPEC: there is no client address to use, so the
    /// TCP peer stays the client.
    Local,
}

/// What the first bytes of a connection are.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed: at least this many in all before a decision (always more than
    /// given, and at most [`MAX_HEADER`]).
    Incomplete(usize),
    /// A whole header: its first `len` bytes. The decision rests on those bytes alone, so
    /// more bytes after them do not change it.
    Header {
        /// The header's length, at most [`MAX_HEADER`].
        len: usize,
        /// What it said.
        announced: Announced,
    },
    /// Not a header this listener takes ([`HeaderError::Missing`] or
    /// [`HeaderError::Malformed`]).
    Invalid(HeaderError),
}

/// What `buf`, the first bytes of a connection, are for a listener that takes `accept`.
///
/// Never reads past the header: every prefix of a header shorter than it is `Incomplete`, so
/// a reader that consumes only the bytes of an `Incomplete` buffer never takes a byte of what
/// follows the header (the TLS ClientHello).
pub fn parse(buf: &[u8], accept: AcceptProxy) -> Parsed {
    if accept != AcceptProxy::V2 && starts_like(buf, V1_PREFIX) {
        parse_v1(buf)
    } else if accept != AcceptProxy::V1 && starts_like(buf, ppp::v2::PROTOCOL_PREFIX) {
        parse_v2(buf)
    } else {
        Parsed::Invalid(HeaderError::Missing)
    }
}

/// Whether `buf` and `signature` agree as far as both go. One byte in, a TLS ClientHello
/// (0x16) already disagrees with both signatures, so a direct client is refused at once.
fn starts_like(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

/// A v1 header ends at the first CRLF, within [`V1_MAX`] bytes.
fn parse_v1(buf: &[u8]) -> Parsed {
    // The CR must leave room for its LF within the limit.
    let window = &buf[..buf.len().min(V1_MAX - 1)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if buf.len() >= V1_MAX - 1 {
            malformed(format!("no CRLF within {V1_MAX} bytes"))
        } else {
            // Any next byte might be the CR; the decision needs at least one more.
            Parsed::Incomplete(buf.len() + 1)
        };
    };
    let len = cr + 2;
    match buf.get(cr + 1) {
        None => return Parsed::Incomplete(len),
        Some(b'\n') => {}
        // A bare CR is no end of line, and v1 has no other use for one.
        Some(_) => return malformed("a CR not followed by LF".into()),
    }
    let announced = match ppp::v1::Header::try_from(&buf[..len]) {
        Ok(header) => match header.addresses {
            ppp::v1::Addresses::Tcp4(a) => client(a.source_address.into(), a.source_port),
            ppp::v1::Addresses::Tcp6(a) => client(a.source_address.into(), a.source_port),
            ppp::v1::Addresses::Unknown => Announced::Local,
        },
        Err(err) => return malformed(err.to_string()),
    };
    Parsed::Header { len, announced }
}

/// A v2 header is its fixed part plus the length that part declares.
fn parse_v2(buf: &[u8]) -> Parsed {
    let Some(fixed) = buf.get(..V2_FIXED) else {
        // Each byte of the fixed part may be the one that decides (a wrong signature byte, a
        // bad version), so the lower bound is one more.
        return Parsed::Incomplete(buf.len() + 1);
    };
    let len = V2_FIXED + usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_HEADER {
        return malformed(format!(
            "a {len}-byte header is over the {MAX_HEADER}-byte limit"
        ));
    }
    let Some(header) = buf.get(..len) else {
        return Parsed::Incomplete(len);
    };
    let announced = match ppp::v2::Header::try_from(header) {
        Ok(parsed) if parsed.command == Command::Local => Announced::Local,
        Ok(parsed) => {
            // The addresses are all we use, but broken TLVs mean a broken sender.
            if let Some(Err(err)) = parsed.tlvs().find(Result::is_err) {
                return malformed(err.to_string());
            }
            match parsed.addresses {
                Addresses::IPv4(a) => client(a.source_address.into(), a.source_port),
                Addresses::IPv6(a) => client(a.source_address.into(), a.source_port),
                Addresses::Unix(_) | Addresses::Unspecified => Announced::Local,
            }
        }
        // The protocol has the receiver of a LOCAL header discard its address block,
        // family included, so one ppp finds inconsistent (AF_INET in fewer than 12 bytes) is
        // still a health check to accept.
        Err(_) if fixed[12] == V2_LOCAL => Announced::Local,
        Err(err) => return malformed(err.to_string()),
    };
    Parsed::Header { len, announced }
}

fn client(ip: IpAddr, port: u16) -> Announced {
    Announced::Client(SocketAddr::new(ip.to_canonical(), port))
}

fn malformed(why: String) -> Parsed {
    Parsed::Invalid(HeaderError::Malformed(why))
}

#[cfg(test)]
mod tests {
    use ppp::v2::{Builder, Protocol, Type, Version};

    use super::*;

    const TCP4: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
    const TCP6: &[u8] = b"PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n";
    const UNKNOWN: &[u8] = b"PROXY UNKNOWN\r\n";
    const CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];

    fn v2(command: Command, addresses: Addresses, tlvs: &[(Type, &[u8])]) -> Vec<u8> {
        let builder = Builder::with_addresses(Version::Two | command, Protocol::Stream, addresses);
        tlvs.iter()
            .try_fold(builder, |b, (kind, value)| b.write_tlv(*kind, value))
            .unwrap()
            .build()
            .unwrap()
    }

    fn v2_proxy(client: &str, server: &str) -> Vec<u8> {
        let addresses = Addresses::from((client.parse().unwrap(), server.parse().unwrap()));
        let tlvs: [(Type, &[u8]); 3] = [
            (Type::ALPN, b"http/1.1"),
            (Type::Authority, b"app.example"),
            (Type::UniqueId, b"lb-conn-0042"),
        ];
        v2(Command::Proxy, addresses, &tlvs)
    }

    /// The whole header's decision, after checking that every shorter prefix is
    /// `Incomplete` and that bytes after it change nothing.
    fn whole(header: &[u8], accept: AcceptProxy) -> Announced {
        for cut in 0..header.len() {
            match parse(&header[..cut], accept) {
                Parsed::Incomplete(n) => assert!(n > cut && n <= header.len(), "{cut}: {n}"),
                other => panic!("prefix of {cut} bytes: {other:?}"),
            }
        }
        let mut followed = header.to_vec();
        followed.extend_from_slice(CLIENT_HELLO);
        let Parsed::Header { len, announced } = parse(&followed, accept) else {
            panic!("not a header: {:?}", parse(&followed, accept));
        };
        assert_eq!(len, header.len());
        announced
    }

    fn addr(s: &str) -> Announced {
        Announced::Client(s.parse().unwrap())
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        for accept in [AcceptProxy::V1, AcceptProxy::Any] {
            assert_eq!(whole(TCP4, accept), addr("192.0.2.1:56324"));
            assert_eq!(whole(TCP6, accept), addr("[2001:db8::1]:56324"));
            assert_eq!(whole(UNKNOWN, accept), Announced::Local);
        }
        let mapped = b"PROXY TCP6 ::ffff:192.0.2.9 ::1 1 2\r\n";
        assert_eq!(whole(mapped, AcceptProxy::V1), addr("192.0.2.9:1"));
    }

    #[test]
    fn v2_proxy_over_ipv4_and_ipv6_with_tlvs() {
        for accept in [AcceptProxy::V2, AcceptProxy::Any] {
            let v4 = v2_proxy("192.0.2.1:56324", "198.51.100.2:443");
            assert_eq!(whole(&v4, accept), addr("192.0.2.1:56324"));
            let v6 = v2_proxy("[2001:db8::1]:56324", "[2001:db8::2]:443");
            assert_eq!(whole(&v6, accept), addr("[2001:db8::1]:56324"));
        }
    }

    #[test]
    fn v2_local_unix_and_unspec_keep_the_peer() {
        let local = v2(Command::Local, Addresses::Unspecified, &[]);
        assert_eq!(local.len(), 16);
        assert_eq!(whole(&local, AcceptProxy::V2), Announced::Local);
        let addresses =
            Addresses::from(("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap()));
        let local_v4 = v2(Command::Local, addresses, &[(Type::NoOp, b"x")]);
        assert_eq!(whole(&local_v4, AcceptProxy::Any), Announced::Local);
        // AF_INET with no room for addresses: ppp refuses it, but LOCAL discards the block.
        let mut short = local.clone();
        short[13] = 0x11;
        assert_eq!(whole(&short, AcceptProxy::Any), Announced::Local);
        let unix = Addresses::Unix(ppp::v2::Unix::new([0; 108], [0; 108]));
        assert_eq!(
            whole(&v2(Command::Proxy, unix, &[]), AcceptProxy::V2),
            Announced::Local
        );
        let unspec = v2(Command::Proxy, Addresses::Unspecified, &[]);
        assert_eq!(whole(&unspec, AcceptProxy::V2), Announced::Local);
    }

    #[test]
    fn the_wrong_version_is_missing_and_any_takes_both() {
        let v2 = v2_proxy("192.0.2.1:1", "192.0.2.2:2");
        assert!(matches!(
            parse(&v2, AcceptProxy::V1),
            Parsed::Invalid(HeaderError::Missing)
        ));
        assert!(matches!(
            parse(TCP4, AcceptProxy::V2),
            Parsed::Invalid(HeaderError::Missing)
        ));
        // Decided on the first byte, without waiting for the rest.
        assert!(matches!(
            parse(&v2[..1], AcceptProxy::V1),
            Parsed::Invalid(HeaderError::Missing)
        ));
        assert!(matches!(
            parse(b"P", AcceptProxy::V2),
            Parsed::Invalid(HeaderError::Missing)
        ));
        assert!(matches!(
            parse(TCP4, AcceptProxy::Any),
            Parsed::Header { .. }
        ));
        assert!(matches!(
            parse(&v2, AcceptProxy::Any),
            Parsed::Header { .. }
        ));
    }

    #[test]
    fn a_client_hello_is_missing_on_its_first_byte() {
        for accept in [AcceptProxy::V1, AcceptProxy::V2, AcceptProxy::Any] {
            assert!(matches!(
                parse(&CLIENT_HELLO[..1], accept),
                Parsed::Invalid(HeaderError::Missing)
            ));
            assert!(matches!(
                parse(CLIENT_HELLO, accept),
                Parsed::Invalid(HeaderError::Missing)
            ));
        }
    }

    #[test]
    fn garbage_is_missing_or_malformed() {
        let missing: [&[u8]; 4] = [
            b"GET / HTTP/1.1\r\n\r\n",
            b"proxy TCP4",
            b"PROXYTCP4",
            b"\r\n\r\n\0\r\nQUIX\n",
        ];
        for bytes in missing {
            assert!(
                matches!(
                    parse(bytes, AcceptProxy::Any),
                    Parsed::Invalid(HeaderError::Missing)
                ),
                "{bytes:?}"
            );
        }
        let malformed: [&[u8]; 6] = [
            b"PROXY \r\n",
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 99999\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 \xff 2\r\n",
        ];
        for bytes in malformed {
            assert!(
                matches!(
                    parse(bytes, AcceptProxy::Any),
                    Parsed::Invalid(HeaderError::Malformed(_))
                ),
                "{bytes:?}"
            );
        }
        let mut bad_version = v2_proxy("192.0.2.1:1", "192.0.2.2:2");
        bad_version[12] = 0x11;
        assert!(matches!(
            parse(&bad_version, AcceptProxy::V2),
            Parsed::Invalid(HeaderError::Malformed(_))
        ));
        let mut bad_tlv = v2_proxy("192.0.2.1:1", "192.0.2.2:2");
        let last = bad_tlv.len() - 1;
        bad_tlv.truncate(last);
        bad_tlv[15] -= 1;
        assert!(matches!(
            parse(&bad_tlv, AcceptProxy::V2),
            Parsed::Invalid(HeaderError::Malformed(_))
        ));
    }

    #[test]
    fn an_over_long_v1_line_is_malformed() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX - 2, b'x');
        assert!(matches!(
            parse(&line, AcceptProxy::V1),
            Parsed::Incomplete(_)
        ));
        line.push(b'x');
        assert!(matches!(
            parse(&line, AcceptProxy::V1),
            Parsed::Invalid(HeaderError::Malformed(_))
        ));
        // A CRLF just past the limit does not save it.
        line.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(&line, AcceptProxy::V1),
            Parsed::Invalid(HeaderError::Malformed(_))
        ));
    }

    #[test]
    fn a_v2_header_over_the_cap_is_malformed_from_its_fixed_part() {
        let mut fixed = v2(Command::Proxy, Addresses::Unspecified, &[]);
        let over = u16::try_from(MAX_HEADER - V2_FIXED + 1).unwrap();
        fixed[14..16].copy_from_slice(&over.to_be_bytes());
        assert!(matches!(
            parse(&fixed, AcceptProxy::V2),
            Parsed::Invalid(HeaderError::Malformed(_))
        ));
        fixed[14..16].copy_from_slice(&(over - 1).to_be_bytes());
        assert!(matches!(
            parse(&fixed, AcceptProxy::V2),
            Parsed::Incomplete(MAX_HEADER)
        ));
        fixed[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(
            parse(&fixed, AcceptProxy::V2),
            Parsed::Invalid(HeaderError::Malformed(_))
        ));
    }

    #[test]
    fn every_reason_is_listed() {
        let all = [
            HeaderError::Untrusted(IpAddr::from([127, 0, 0, 1])),
            HeaderError::Missing,
            HeaderError::Malformed(String::new()),
            HeaderError::Timeout,
            HeaderError::Closed,
            HeaderError::Io(std::io::ErrorKind::ConnectionReset.into()),
        ];
        let reasons: Vec<_> = all.iter().map(HeaderError::reason).collect();
        assert_eq!(reasons, HeaderError::REASONS);
    }
}
