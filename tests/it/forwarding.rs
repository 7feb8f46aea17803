//! Forwarding: WebSocket messages and close codes pass through unchanged over TCP and unix
//! upstreams, half-closes pass through at the byte level, and many clients are served at once.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::support::*;

/// Clients in the concurrency test.
const CONCURRENT_CLIENTS: usize = 50;
const CLOSED: &str = "wss_sidecar_connections_closed_total";

/// `len` bytes that no run-length or repeating pattern reproduces (xorshift64).
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect()
}

/// One frame of a fragmented message, sent as is.
fn fragment(data: impl Into<Bytes>, kind: Data, is_final: bool) -> Message {
    Message::Frame(Frame::message(data.into(), OpCode::Data(kind), is_final))
}

/// The next message, bounded by [`IO_TIMEOUT`].
async fn next_message<S>(ws: &mut WebSocketStream<S>) -> Option<Result<Message, String>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    timeout(IO_TIMEOUT, ws.next())
        .await
        .expect("no message or end within IO_TIMEOUT")
        .map(|r| r.map_err(|e| e.to_string()))
}

/// Text, binary, a 1 MiB binary, fragmented messages and a close with a code, through `served`.
async fn assert_messages_pass_through(served: &Served) {
    let mut ws = served.ws().await.expect("websocket through the proxy");

    assert_echo(&mut ws, Message::text("héllo, wss ✓")).await;
    assert_echo(&mut ws, Message::binary(vec![0u8, 1, 2, 0xfe, 0xff])).await;
    let big = noise(1 << 20);
    let reply = echo_once(&mut ws, Message::binary(big.clone())).await;
    let Message::Binary(reply) = reply else {
        panic!("1 MiB binary came back as another kind: {reply:?}");
    };
    assert!(reply[..] == big[..], "1 MiB message differs after the echo");

    // Fragmented text: three frames in, one whole message back.
    ws.feed(fragment("frag", Data::Text, false))
        .await
        .expect("feed");
    ws.feed(fragment("ment", Data::Continue, false))
        .await
        .expect("feed");
    let reply = echo_once(&mut ws, fragment("ed ✓", Data::Continue, true)).await;
    assert_eq!(reply, Message::text("fragmented ✓"));

    // Fragmented binary, fragments larger than a TLS record and than the proxy's buffers.
    let parts = [noise(40_000), noise(70_001), noise(3)];
    ws.feed(fragment(parts[0].clone(), Data::Binary, false))
        .await
        .expect("feed");
    ws.feed(fragment(parts[1].clone(), Data::Continue, false))
        .await
        .expect("feed");
    let reply = echo_once(&mut ws, fragment(parts[2].clone(), Data::Continue, true)).await;
    assert!(
        reply == Message::binary(parts.concat()),
        "fragmented binary differs: got {} bytes",
        reply.len()
    );

    // The app echoes the close frame; its code and reason come back through the proxy.
    let bye = CloseFrame {
        code: CloseCode::from(4001),
        reason: "bye".into(),
    };
    ws.close(Some(bye.clone())).await.expect("send close");
    match next_message(&mut ws).await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!("expected the close frame back, got {other:?}"),
    }
    // After the closing handshake the app closes its socket, and the proxy passes that on.
    assert!(
        next_message(&mut ws).await.is_none(),
        "stream ends after the close"
    );
    drop(ws);

    let proxy = &served.proxy;
    proxy
        .wait_for_metric(CLOSED, &[("reason", "closed")], 1.0)
        .await;
    let m = proxy.metrics().await;
    assert_eq!(m.value("wss_sidecar_connections_open", &[]), 0.0);
    for direction in ["client_to_upstream", "upstream_to_client"] {
        let bytes = m.value("wss_sidecar_bytes_total", &[("direction", direction)]);
        assert!(bytes > (1 << 20) as f64, "{direction}: {bytes} bytes");
    }
}

#[tokio::test]
async fn messages_and_close_codes_pass_through_a_tcp_upstream() {
    let app = EchoServer::start_tcp().await;
    let served = Served::start(&app.addr().to_string(), &[]).await;
    assert_messages_pass_through(&served).await;
    assert_eq!(app.connections_accepted(), 1);
}

#[tokio::test]
async fn messages_and_close_codes_pass_through_a_unix_socket_upstream() {
    let sockets = tempfile::tempdir().expect("tempdir");
    let path = sockets.path().join("app.sock");
    let app = EchoServer::start_unix(&path).await;
    let served = Served::start(&format!("unix:{}", path.display()), &[]).await;
    assert_messages_pass_through(&served).await;
    assert_eq!(app.connections_accepted(), 1);
}

/// A proxy in front of a raw TCP upstream, a TLS client through it, and the upstream's end of
/// that client's connection, for byte-level tests.
async fn raw_connection() -> (Served, TlsStream<TcpStream>, TcpStream) {
    let (upstream_addr, mut accepted) = raw_upstream_tcp().await;
    let served = Served::start(&upstream_addr.to_string(), &[]).await;
    let client = served.tls().await.expect("tls through the proxy");
    let upstream = timeout(IO_TIMEOUT, accepted.recv())
        .await
        .expect("the proxy connects upstream in time")
        .expect("raw upstream still accepting");
    (served, client, upstream)
}

/// Reads to the end, bounded by [`IO_TIMEOUT`].
async fn read_all<R: AsyncRead + Unpin>(reader: &mut R, what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    timeout(IO_TIMEOUT, reader.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("{what}: no end within {IO_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    out
}

/// Writes `len` bytes of noise into `from` and half-closes it (FIN, or close_notify over TLS),
/// then asserts that `to` reads exactly those bytes and then the end.
async fn send_and_half_close<W, R>(from: &mut W, to: &mut R, len: usize, what: &str)
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let sent = noise(len);
    from.write_all(&sent)
        .await
        .unwrap_or_else(|e| panic!("{what}: write: {e}"));
    from.shutdown()
        .await
        .unwrap_or_else(|e| panic!("{what}: half-close: {e}"));
    let got = read_all(to, what).await;
    assert!(got == sent, "{what}: got {} of {len} bytes", got.len());
}

#[tokio::test]
async fn a_client_half_close_reaches_the_upstream_and_the_reply_still_arrives() {
    let (served, mut client, mut upstream) = raw_connection().await;

    // More than the proxy's buffers, so the half-close must wait for the data ahead of it.
    send_and_half_close(&mut client, &mut upstream, 300_000, "the request").await;
    send_and_half_close(&mut upstream, &mut client, 200_000, "the reply").await;
    drop((client, upstream));
    served
        .proxy
        .wait_for_metric(CLOSED, &[("reason", "closed")], 1.0)
        .await;
}

#[tokio::test]
async fn an_upstream_half_close_reaches_the_client_and_the_client_can_still_send() {
    let (served, mut client, mut upstream) = raw_connection().await;

    send_and_half_close(&mut upstream, &mut client, 100_000, "the greeting").await;
    // The client's direction is still open after the upstream's half-close.
    send_and_half_close(&mut client, &mut upstream, 50_000, "the late bytes").await;
    drop((client, upstream));
    served
        .proxy
        .wait_for_metric(CLOSED, &[("reason", "closed")], 1.0)
        .await;
}

#[tokio::test]
async fn many_concurrent_clients_are_all_served() {
    let app = EchoServer::start_tcp().await;
    let served = Served::start(&app.addr().to_string(), &[]).await;
    // Every client holds its connection open until all have echoed and the test has looked.
    let all_open = Arc::new(Barrier::new(CONCURRENT_CLIENTS + 1));
    let may_close = Arc::new(Barrier::new(CONCURRENT_CLIENTS + 1));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CONCURRENT_CLIENTS {
        let (addr, config) = (served.proxy.addr, served.client.clone());
        let (all_open, may_close) = (all_open.clone(), may_close.clone());
        clients.spawn(async move {
            let mut ws = ws_connect(addr, APP_NAME, config)
                .await
                .unwrap_or_else(|e| panic!("client {i}: {e}"));
            for round in 0..3 {
                assert_echo(&mut ws, Message::text(format!("client {i} round {round}"))).await;
            }
            assert_echo(&mut ws, Message::binary(noise(10_000 + i))).await;
            all_open.wait().await;
            may_close.wait().await;
            ws.close(None).await.expect("close");
            while let Some(Ok(_)) = next_message(&mut ws).await {}
        });
    }
    timeout(Duration::from_secs(30), all_open.wait())
        .await
        .expect("all clients connected and echoed within 30 s");
    let m = served.proxy.metrics().await;
    assert_eq!(
        m.value("wss_sidecar_connections_open", &[]),
        CONCURRENT_CLIENTS as f64
    );
    assert_eq!(
        m.value("wss_sidecar_connections_total", &[]),
        CONCURRENT_CLIENTS as f64
    );
    assert_eq!(app.live_connections(), CONCURRENT_CLIENTS);
    may_close.wait().await;
    while let Some(joined) = clients.join_next().await {
        joined.expect("client task");
    }

    let proxy = &served.proxy;
    proxy
        .wait_for_metric("wss_sidecar_connections_open", &[], 0.0)
        .await;
    let m = proxy.metrics().await;
    assert_eq!(
        m.value("wss_sidecar_connections_total", &[]),
        CONCURRENT_CLIENTS as f64
    );
    assert_eq!(
        m.value(CLOSED, &[("reason", "closed")]),
        CONCURRENT_CLIENTS as f64
    );
}

#[tokio::test]
async fn tls12_and_tls13_clients_are_both_served() {
    let app = EchoServer::start_tcp().await;
    let served = Served::start(&app.addr().to_string(), &[]).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(served.ca.cert_der()).expect("root");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .expect("version")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut ws = ws_connect(served.proxy.addr, APP_NAME, Arc::new(config))
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", version.version));
        let negotiated = ws.get_ref().get_ref().1.protocol_version();
        assert_eq!(negotiated, Some(version.version));
        assert_echo(&mut ws, Message::text(format!("{:?}", version.version))).await;
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_pushes_back_on_the_upstream() {
    let (served, mut client, mut upstream) = raw_connection().await;
    let chunk = vec![0x5a_u8; 1 << 20];
    let mut sent = 0usize;
    // The client reads nothing: once the sockets' buffers are full the proxy must stop reading
    // from the upstream, not hold the flood in memory.
    let flooded = timeout(Duration::from_secs(3), async {
        for _ in 0..256 {
            upstream.write_all(&chunk).await.expect("upstream writes");
            sent += chunk.len();
        }
    })
    .await;
    assert!(
        flooded.is_err(),
        "256 MiB went to a client that reads nothing: nothing pushed back"
    );
    assert!(
        sent < 64 << 20,
        "{sent} bytes went out before the upstream was held back"
    );

    // Nothing was lost: once the client reads, everything arrives.
    upstream.shutdown().await.expect("upstream FIN");
    let mut got = Vec::new();
    timeout(Duration::from_secs(30), client.read_to_end(&mut got))
        .await
        .expect("the backlog drains")
        .expect("client reads");
    assert!(
        got.len() >= sent && got.len() <= sent + chunk.len(),
        "{} of {sent}",
        got.len()
    );
    assert!(got.iter().all(|b| *b == 0x5a), "the bytes arrive intact");
    drop((client, upstream, served));
}
