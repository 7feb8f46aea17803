//! `--proxy-protocol v1|v2`: the upstream learns the client's real address (IPv4 and IPv6)
//! and, with v2, the ALPN, SNI and TLS facts, parsed here by the `ppp` crate. A PROXY header
//! sent by the client is forwarded as data, never believed.

use std::net::SocketAddr;

use ppp::{HeaderResult, v1, v2};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

/// The client's own bytes, starting with a forged PROXY header.
const SPOOF: &[u8] = b"PROXY TCP4 6.6.6.6 6.6.6.6 1 2\r\nhello";

/// What one connection through a proxy with `--proxy-protocol VERSION`, listening on `bind`,
/// delivers to the upstream: the parsed source and destination, the header's bytes, and the
/// bytes after it; plus the client's and the listener's real addresses.
struct Seen {
    bytes: Vec<u8>,
    client: SocketAddr,
    listener: SocketAddr,
}

async fn through_proxy(version: &str, bind: &str) -> Seen {
    let (upstream_addr, mut accepted) = raw_upstream_tcp().await;
    let served = Served::start_on(
        bind,
        &upstream_addr.to_string(),
        &["--proxy-protocol", version],
    )
    .await;
    let mut tls = served.tls().await.expect("tls through the proxy");
    let client = tls.get_ref().0.local_addr().unwrap();
    tls.write_all(SPOOF).await.unwrap();
    tls.flush().await.unwrap();
    let mut upstream: TcpStream = accepted.recv().await.expect("the proxy connects upstream");
    let bytes = read_until(&mut upstream, |b| b.ends_with(SPOOF)).await;
    Seen {
        bytes,
        client,
        listener: served.proxy.addr,
    }
}

fn v1_addresses(a: v1::Addresses) -> (SocketAddr, SocketAddr) {
    match a {
        v1::Addresses::Tcp4(a) => (
            (a.source_address, a.source_port).into(),
            (a.destination_address, a.destination_port).into(),
        ),
        v1::Addresses::Tcp6(a) => (
            (a.source_address, a.source_port).into(),
            (a.destination_address, a.destination_port).into(),
        ),
        v1::Addresses::Unknown => panic!("PROXY UNKNOWN"),
    }
}

fn v2_addresses(a: v2::Addresses) -> (SocketAddr, SocketAddr) {
    match a {
        v2::Addresses::IPv4(a) => (
            (a.source_address, a.source_port).into(),
            (a.destination_address, a.destination_port).into(),
        ),
        v2::Addresses::IPv6(a) => (
            (a.source_address, a.source_port).into(),
            (a.destination_address, a.destination_port).into(),
        ),
        other => panic!("unexpected v2 addresses {other:?}"),
    }
}

async fn assert_v1(bind: &str) {
    let seen = through_proxy("v1", bind).await;
    let HeaderResult::V1(Ok(header)) = HeaderResult::parse(&seen.bytes) else {
        panic!(
            "not a v1 header: {:?}",
            String::from_utf8_lossy(&seen.bytes)
        );
    };
    assert_eq!(v1_addresses(header.addresses), (seen.client, seen.listener));
    // The client's forged header arrives after ours, as plain data.
    assert_eq!(&seen.bytes[header.header.len()..], SPOOF);
}

/// The value of the v2 header's TLV of type `kind`.
fn tlv(header: &v2::Header<'_>, kind: v2::Type) -> Option<Vec<u8>> {
    header
        .tlvs()
        .map(|t| t.expect("well-formed TLV"))
        .find(|t| t.kind == kind as u8)
        .map(|t| t.value.to_vec())
}

async fn assert_v2(bind: &str) {
    let seen = through_proxy("v2", bind).await;
    let HeaderResult::V2(Ok(header)) = HeaderResult::parse(&seen.bytes) else {
        panic!("not a v2 header: {:?}", seen.bytes);
    };
    assert_eq!(header.command, v2::Command::Proxy);
    assert_eq!(v2_addresses(header.addresses), (seen.client, seen.listener));
    assert_eq!(
        tlv(&header, v2::Type::ALPN).as_deref(),
        Some(&b"http/1.1"[..])
    );
    assert_eq!(
        tlv(&header, v2::Type::Authority).as_deref(),
        Some(APP_NAME.as_bytes())
    );
    let ssl = tlv(&header, v2::Type::SSL).expect("PP2_TYPE_SSL");
    assert_eq!(ssl[0], 0x01, "PP2_CLIENT_SSL only: no client certificate");
    assert!(ssl.windows(7).any(|w| w == b"TLSv1.3"), "{ssl:?}");
    assert_eq!(&seen.bytes[header.len()..], SPOOF);
}

#[tokio::test]
async fn v1_carries_the_ipv4_client() {
    assert_v1("127.0.0.1:0").await;
}

#[tokio::test]
async fn v1_carries_the_ipv6_client() {
    assert_v1("[::1]:0").await;
}

#[tokio::test]
async fn v2_carries_the_ipv4_client_and_tls_tlvs() {
    assert_v2("127.0.0.1:0").await;
}

#[tokio::test]
async fn v2_carries_the_ipv6_client_and_tls_tlvs() {
    assert_v2("[::1]:0").await;
}
