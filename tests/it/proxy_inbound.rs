//! `--accept-proxy-protocol` with `--trust-proxy-from`, and `--max-connections-per-ip`: the
//! client address a trusted load balancer's PROXY header announces (v1 or v2) is the one the
//! app sees in X-Forwarded-For, `--trust-forwarded` checks and the outgoing PROXY v2 header
//! carries; untrusted peers, malformed and missing headers close that connection only; the
//! per-client limit counts the announced address. Refusals show in `/metrics` by reason.

use std::io;
use std::net::{IpAddr, SocketAddr};

use ppp::{HeaderResult, v2};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::*;

const REFUSED: &str = "wss_sidecar_connections_refused_total";

/// What an AWS NLB or HAProxy sends for a client at 192.0.2.1.
const V1_TCP4: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
/// A header `ppp` (and the protocol) rejects: addresses without ports.
const MALFORMED: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.2\r\n";

/// A v2 PROXY header (TCP over the addresses' family) for `client`, with a TLV as load
/// balancers add them.
fn v2_proxy(client: &str, server: &str) -> Vec<u8> {
    let addresses = v2::Addresses::from((client.parse().unwrap(), server.parse().unwrap()));
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        addresses,
    )
    .write_tlv(v2::Type::UniqueId, b"lb-conn-0042")
    .unwrap()
    .build()
    .unwrap()
}

/// A v2 LOCAL header, as a load balancer's health check sends it.
fn v2_local() -> Vec<u8> {
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Local,
        v2::Protocol::Unspecified,
        v2::Addresses::Unspecified,
    )
    .build()
    .unwrap()
}

/// A proxy taking PROXY headers of `version` from 127.0.0.1 only, then `extra`.
async fn behind_lb(upstream: &str, version: &str, extra: &[&str]) -> Served {
    let flags = [
        &[
            "--accept-proxy-protocol",
            version,
            "--trust-proxy-from",
            "127.0.0.1",
        ][..],
        extra,
    ]
    .concat();
    Served::start(upstream, &flags).await
}

/// A TCP connection to the proxy from `source` (any 127/8 address reaches it).
async fn tcp_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.expect("tcp connect to the proxy")
}

/// TLS through the proxy from `source`, after `header` (the load balancer's part).
async fn tls_after(
    served: &Served,
    source: &str,
    header: &[u8],
) -> io::Result<TlsStream<TcpStream>> {
    let mut tcp = tcp_from(source, served.proxy.addr).await;
    tcp.write_all(header).await?;
    let name = ServerName::try_from(APP_NAME).unwrap();
    let connector = TlsConnector::from(served.client.clone());
    tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out"))?
}

/// A WebSocket through the proxy from 127.0.0.1 after `header`, with extra request headers.
async fn ws_after(
    served: &Served,
    header: &[u8],
    extra: &[(&'static str, &str)],
) -> Result<WebSocketStream<TlsStream<TcpStream>>, String> {
    let tls = tls_after(served, "127.0.0.1", header)
        .await
        .map_err(|e| format!("tls after the PROXY header: {e}"))?;
    let url = format!("wss://{APP_NAME}:{}/ws", served.proxy.addr.port());
    let mut request = url.into_client_request().unwrap();
    for (name, value) in extra {
        request.headers_mut().append(*name, value.parse().unwrap());
    }
    ws_upgrade(tls, request)
        .await
        .map_err(|e| format!("websocket upgrade: {e}"))
}

/// The one value of header `name` the app saw last.
fn header(echo: &EchoServer, name: &str) -> Option<String> {
    let values: Vec<String> = echo
        .last_request_headers()
        .into_iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect();
    assert!(
        values.len() <= 1,
        "{name} sent {} times: {values:?}",
        values.len()
    );
    values.into_iter().next()
}

/// Asserts that a connection the proxy refuses before TLS fails its handshake.
fn assert_closed(result: io::Result<TlsStream<TcpStream>>, what: &str) {
    assert!(result.is_err(), "{what}: the handshake should fail");
}

#[tokio::test]
async fn v1_and_v2_clients_reach_the_app_in_x_forwarded_for() {
    let echo = EchoServer::start_tcp().await;
    let served = behind_lb(&echo.addr().to_string(), "any", &["--forwarded-headers"]).await;

    let mut ws = ws_after(&served, V1_TCP4, &[]).await.unwrap();
    assert_echo(&mut ws, Message::text("through a v1 balancer")).await;
    assert_eq!(
        header(&echo, "x-forwarded-for").as_deref(),
        Some("192.0.2.1")
    );
    let forwarded = header(&echo, "forwarded").unwrap();
    assert!(
        forwarded.starts_with("for=\"192.0.2.1:56324\""),
        "{forwarded}"
    );

    let v2 = v2_proxy("[2001:db8::7]:40000", "[2001:db8::1]:443");
    let mut ws = ws_after(&served, &v2, &[]).await.unwrap();
    assert_echo(&mut ws, Message::text("through a v2 balancer")).await;
    assert_eq!(
        header(&echo, "x-forwarded-for").as_deref(),
        Some("2001:db8::7")
    );
    let forwarded = header(&echo, "forwarded").unwrap();
    assert!(
        forwarded.starts_with("for=\"[2001:db8::7]:40000\""),
        "{forwarded}"
    );

    // A health check's LOCAL header keeps the TCP peer as the client.
    let mut ws = ws_after(&served, &v2_local(), &[]).await.unwrap();
    assert_echo(&mut ws, Message::text("a health check")).await;
    assert_eq!(
        header(&echo, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
}

#[tokio::test]
async fn trust_forwarded_judges_the_announced_client() {
    let echo = EchoServer::start_tcp().await;
    let upstream = echo.addr().to_string();
    // The balancer itself (127.0.0.1) is not trusted for X-Forwarded-For; the client it
    // announces is.
    let extra = ["--forwarded-headers", "--trust-forwarded", "192.0.2.0/24"];
    let served = behind_lb(&upstream, "v1", &extra).await;
    let spoof = [("X-Forwarded-For", "203.0.113.9")];
    let mut ws = ws_after(&served, V1_TCP4, &spoof).await.unwrap();
    assert_echo(&mut ws, Message::text("a trusted client")).await;
    assert_eq!(
        header(&echo, "x-forwarded-for").as_deref(),
        Some("203.0.113.9, 192.0.2.1")
    );
    let other = b"PROXY TCP4 198.51.100.77 198.51.100.2 1000 443\r\n";
    let mut ws = ws_after(&served, other, &spoof).await.unwrap();
    assert_echo(&mut ws, Message::text("an untrusted client")).await;
    assert_eq!(
        header(&echo, "x-forwarded-for").as_deref(),
        Some("198.51.100.77")
    );
}

/// What the upstream's PROXY v2 header says the client is, for a connection that came with
/// `inbound`.
async fn outgoing_source(inbound: &[u8], version: &str) -> SocketAddr {
    let (upstream_addr, mut accepted) = raw_upstream_tcp().await;
    let upstream = upstream_addr.to_string();
    let served = behind_lb(&upstream, version, &["--proxy-protocol", "v2"]).await;
    let mut tls = tls_after(&served, "127.0.0.1", inbound).await.unwrap();
    tls.write_all(b"hello").await.unwrap();
    tls.flush().await.unwrap();
    let mut upstream: TcpStream = accepted.recv().await.expect("the proxy connects upstream");
    let bytes = read_until(&mut upstream, |b| b.ends_with(b"hello")).await;
    let HeaderResult::V2(Ok(header)) = HeaderResult::parse(&bytes) else {
        panic!("not a v2 header: {bytes:?}");
    };
    assert_eq!(header.command, v2::Command::Proxy);
    assert_eq!(
        &bytes[header.len()..],
        b"hello",
        "the inbound header is not forwarded"
    );
    match header.addresses {
        v2::Addresses::IPv4(a) => (a.source_address, a.source_port).into(),
        v2::Addresses::IPv6(a) => (a.source_address, a.source_port).into(),
        other => panic!("unexpected addresses {other:?}"),
    }
}

#[tokio::test]
async fn the_outgoing_proxy_header_carries_the_announced_client() {
    let from_v1 = outgoing_source(V1_TCP4, "v1").await;
    assert_eq!(from_v1, "192.0.2.1:56324".parse().unwrap());
    let v2 = v2_proxy("[2001:db8::7]:40000", "[2001:db8::1]:443");
    let from_v2 = outgoing_source(&v2, "v2").await;
    assert_eq!(from_v2, "[2001:db8::7]:40000".parse().unwrap());
}

#[tokio::test]
async fn untrusted_malformed_and_missing_headers_close_only_their_connection() {
    let echo = EchoServer::start_tcp().await;
    let served = behind_lb(&echo.addr().to_string(), "any", &[]).await;
    let mut good = ws_after(&served, V1_TCP4, &[]).await.unwrap();
    assert_echo(&mut good, Message::text("before")).await;

    // A well-formed header from a peer outside --trust-proxy-from.
    assert_closed(tls_after(&served, "127.0.0.2", V1_TCP4).await, "untrusted");
    assert_closed(
        tls_after(&served, "127.0.0.1", MALFORMED).await,
        "malformed",
    );
    // A client that skipped the balancer: its ClientHello comes first.
    let direct = tls_connect(served.proxy.addr, APP_NAME, served.client.clone()).await;
    assert_closed(direct, "missing");
    // A peer that closes halfway through its header is closed, not waited for.
    let mut half = tcp_from("127.0.0.1", served.proxy.addr).await;
    half.write_all(&V1_TCP4[..20]).await.unwrap();
    half.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(IO_TIMEOUT, half.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");

    assert_echo(&mut good, Message::text("after")).await;
    assert_eq!(
        echo.connections_accepted(),
        1,
        "no refused connection reached the app"
    );
    for reason in [
        "proxy_untrusted",
        "proxy_malformed",
        "proxy_missing",
        "proxy_closed",
    ] {
        served
            .proxy
            .wait_for_metric(REFUSED, &[("reason", reason)], 1.0)
            .await;
    }
    let metrics = served.proxy.metrics().await;
    assert_eq!(metrics.value(REFUSED, &[("reason", "limit")]), 0.0);
    assert_eq!(metrics.value(REFUSED, &[("reason", "proxy_timeout")]), 0.0);
}

#[tokio::test]
async fn a_header_that_never_completes_is_closed_at_the_handshake_timeout() {
    let echo = EchoServer::start_tcp().await;
    let served = behind_lb(
        &echo.addr().to_string(),
        "v2",
        &["--handshake-timeout", "300ms"],
    )
    .await;
    let mut stalled = tcp_from("127.0.0.1", served.proxy.addr).await;
    stalled
        .write_all(&v2_proxy("192.0.2.1:1", "192.0.2.2:2")[..10])
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(IO_TIMEOUT, stalled.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed by the proxy: {read:?}"
    );
    served
        .proxy
        .wait_for_metric(REFUSED, &[("reason", "proxy_timeout")], 1.0)
        .await;
    // A v1 header on a v2-only listener is missing.
    assert_closed(tls_after(&served, "127.0.0.1", V1_TCP4).await, "v1 on v2");
    served
        .proxy
        .wait_for_metric(REFUSED, &[("reason", "proxy_missing")], 1.0)
        .await;
}

#[tokio::test]
async fn the_per_ip_limit_counts_the_announced_client() {
    let echo = EchoServer::start_tcp().await;
    let extra = ["--max-connections-per-ip", "2"];
    let served = behind_lb(&echo.addr().to_string(), "v2", &extra).await;
    let one = v2_proxy("192.0.2.9:1000", "198.51.100.2:443");
    let mut first = ws_after(&served, &one, &[]).await.unwrap();
    let mut second = ws_after(&served, &one, &[]).await.unwrap();
    assert!(
        ws_after(&served, &one, &[]).await.is_err(),
        "a third from 192.0.2.9"
    );
    served
        .proxy
        .wait_for_metric(REFUSED, &[("reason", "per_ip_limit")], 1.0)
        .await;
    // Another client behind the same balancer has places of its own, and so does an IPv6
    // client in another /64 (one in the same /64 shares them).
    let other = v2_proxy("192.0.2.10:1000", "198.51.100.2:443");
    let mut third = ws_after(&served, &other, &[]).await.unwrap();
    for ws in [&mut first, &mut second, &mut third] {
        assert_echo(ws, Message::text("within the limit")).await;
    }
    let v6 = |addr: &str| v2_proxy(addr, "[2001:db8::1]:443");
    let _a = ws_after(&served, &v6("[2001:db8:0:1::1]:1"), &[])
        .await
        .unwrap();
    let _b = ws_after(&served, &v6("[2001:db8:0:1::2]:1"), &[])
        .await
        .unwrap();
    assert!(
        ws_after(&served, &v6("[2001:db8:0:1::3]:1"), &[])
            .await
            .is_err(),
        "same /64"
    );
    let _c = ws_after(&served, &v6("[2001:db8:0:2::1]:1"), &[])
        .await
        .unwrap();
    served
        .proxy
        .wait_for_metric(REFUSED, &[("reason", "per_ip_limit")], 2.0)
        .await;

    // A closed connection gives its place back.
    drop(first);
    wait_until("192.0.2.9 has a place again", METRIC_WAIT, || {
        let one = one.clone();
        let served = &served;
        async move {
            match ws_after(served, &one, &[]).await {
                Ok(mut ws) => {
                    assert_echo(&mut ws, Message::text("again")).await;
                    true
                }
                Err(_) => false,
            }
        }
    })
    .await;
}

#[tokio::test]
async fn without_proxy_headers_the_per_ip_limit_counts_the_tcp_peer() {
    let echo = EchoServer::start_tcp().await;
    let extra = ["--max-connections-per-ip", "2"];
    let served = Served::start(&echo.addr().to_string(), &extra).await;
    let mut first = served.ws().await.unwrap();
    let mut second = served.ws().await.unwrap();
    assert!(served.ws().await.is_err(), "a third from 127.0.0.1");
    assert_echo(&mut first, Message::text("still here")).await;
    assert_echo(&mut second, Message::text("still here")).await;
    served
        .proxy
        .wait_for_metric(REFUSED, &[("reason", "per_ip_limit")], 1.0)
        .await;
}
