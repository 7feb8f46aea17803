//! Limits and protocol gates: the handshake timeout, plain HTTP on the TLS port,
//! `--max-connections`, `--idle-timeout`, ALPN, and a client whose TLS records are corrupt.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// How long a freed connection slot may take to admit a new client.
const SETTLE: Duration = Duration::from_secs(10);
/// The `--handshake-timeout` under test: short, since these are real sockets on a real clock.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(300);
/// The `--idle-timeout` under test.
const IDLE_TIMEOUT: Duration = Duration::from_millis(500);
/// How late after its deadline a timeout may fire before the test calls it broken.
const TIMER_SLACK: Duration = Duration::from_secs(3);

const HANDSHAKE_FAILURES: &str = "wss_sidecar_handshake_failures_total";

/// An echo app, and a proxy in front of it with `flags`.
async fn serve(flags: &[&str]) -> (EchoServer, Served) {
    let app = EchoServer::start_tcp().await;
    let served = Served::start(&app.addr().to_string(), flags).await;
    (app, served)
}

/// A WebSocket through the proxy.
async fn ws(served: &Served) -> WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>> {
    served.ws().await.expect("websocket through the proxy")
}

/// Reads until the peer closes (EOF or reset) and returns what arrived and how long it took;
/// panics if the connection is still open after `limit`.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let ended = timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("unexpected read error: {e}"),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "connection still open after {limit:?}");
    (got, start.elapsed())
}

/// Reads until the proxy drops `tcp`, asserting that it waited for the handshake timeout
/// first; returns what arrived.
async fn read_until_handshake_timeout(tcp: &mut TcpStream) -> Vec<u8> {
    let (got, took) = read_until_closed(tcp, HANDSHAKE_TIMEOUT + TIMER_SLACK).await;
    assert!(
        took >= HANDSHAKE_TIMEOUT - Duration::from_millis(20),
        "closed after {took:?}, before the handshake timeout"
    );
    got
}

/// Waits for the WebSocket to end and asserts no data arrived first.
async fn assert_stream_ends<S>(ws: &mut WebSocketStream<S>, limit: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let next = timeout(limit, ws.next())
        .await
        .unwrap_or_else(|_| panic!("websocket still open after {limit:?}"));
    assert!(
        matches!(next, None | Some(Err(_))),
        "expected the stream to end, got {next:?}"
    );
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let (app, served) = serve(&["--handshake-timeout", "300ms"]).await;
    let mut tcp = TcpStream::connect(served.proxy.addr)
        .await
        .expect("connect");
    let got = read_until_handshake_timeout(&mut tcp).await;
    assert!(got.is_empty(), "a silent client is sent nothing: {got:?}");
    served
        .proxy
        .wait_for_metric(HANDSHAKE_FAILURES, &[("reason", "timeout")], 1.0)
        .await;
    assert_eq!(
        app.connections_accepted(),
        0,
        "no upstream connection without a handshake"
    );
}

#[tokio::test]
async fn a_client_stalling_mid_client_hello_is_dropped_after_the_handshake_timeout() {
    let (app, served) = serve(&["--handshake-timeout", "300ms"]).await;
    // A real ClientHello, cut in half: the proxy sees a TLS record start, then nothing more.
    let name = ServerName::try_from(APP_NAME.to_string()).expect("server name");
    let mut hello_conn =
        rustls::ClientConnection::new(served.client.clone(), name).expect("client");
    let mut hello = Vec::new();
    hello_conn.write_tls(&mut hello).expect("client hello");
    assert_eq!(hello[0], 0x16, "a TLS handshake record");

    let mut tcp = TcpStream::connect(served.proxy.addr)
        .await
        .expect("connect");
    tcp.write_all(&hello[..hello.len() / 2])
        .await
        .expect("write half a client hello");
    let got = read_until_handshake_timeout(&mut tcp).await;
    assert!(got.is_empty(), "no server hello for half a client hello");
    served
        .proxy
        .wait_for_metric(HANDSHAKE_FAILURES, &[("reason", "timeout")], 1.0)
        .await;
    assert_eq!(app.connections_accepted(), 0);
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_400_and_other_connections_carry_on() {
    let (app, served) = serve(&[]).await;
    let mut ws = ws(&served).await;
    assert_echo(&mut ws, Message::text("before")).await;

    let mut plain = TcpStream::connect(served.proxy.addr)
        .await
        .expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("write plain request");
    let (got, _) = read_until_closed(&mut plain, IO_TIMEOUT).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 400 "),
        "expected a 400 response, got {text:?}"
    );
    assert!(text.contains("\r\n\r\n"), "a complete response: {text:?}");

    assert_echo(&mut ws, Message::text("after")).await;
    let m = served.proxy.metrics().await;
    assert_eq!(m.value(HANDSHAKE_FAILURES, &[("reason", "not_tls")]), 1.0);
    assert_eq!(m.value("wss_sidecar_connections_open", &[]), 1.0);
    assert_eq!(
        app.connections_accepted(),
        1,
        "the plain request went nowhere"
    );
}

#[tokio::test]
async fn max_connections_refuses_the_extra_client_and_admits_one_after_a_close() {
    let (app, served) = serve(&["--max-connections", "2"]).await;
    let mut first = ws(&served).await;
    let mut second = ws(&served).await;
    assert_echo(&mut first, Message::text("first")).await;
    assert_echo(&mut second, Message::text("second")).await;

    let refused = served.tls().await;
    assert!(
        refused.is_err(),
        "a third connection must not complete a handshake"
    );
    served
        .proxy
        .wait_for_metric(
            "wss_sidecar_connections_refused_total",
            &[("reason", "limit")],
            1.0,
        )
        .await;
    assert_echo(&mut first, Message::text("first, still")).await;
    assert_echo(&mut second, Message::text("second, still")).await;
    assert_eq!(app.connections_accepted(), 2);

    // Close one cleanly; its slot frees once the proxy sees both sides end.
    first.close(None).await.expect("close");
    while let Some(Ok(_)) = timeout(IO_TIMEOUT, first.next())
        .await
        .expect("close completes")
    {}
    drop(first);
    let admitted = Arc::new(Mutex::new(None));
    wait_until("a new client is admitted", SETTLE, || {
        let admitted = admitted.clone();
        let (addr, config) = (served.proxy.addr, served.client.clone());
        async move {
            match ws_connect(addr, APP_NAME, config).await {
                Ok(ws) => {
                    *admitted.lock().expect("lock") = Some(ws);
                    true
                }
                Err(_) => false,
            }
        }
    })
    .await;
    let mut third = admitted.lock().expect("lock").take().expect("admitted");
    assert_echo(&mut third, Message::text("third")).await;
    assert_echo(&mut second, Message::text("second, again")).await;
    assert_eq!(
        served
            .proxy
            .metric("wss_sidecar_connections_open", &[])
            .await,
        2.0
    );
}

#[tokio::test]
async fn idle_timeout_closes_silent_websockets_but_not_busy_ones() {
    let (_app, served) = serve(&["--idle-timeout", "500ms"]).await;
    let mut silent = ws(&served).await;
    let mut busy = ws(&served).await;

    let busy_task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        let start = Instant::now();
        let mut sent = 0;
        while start.elapsed() < Duration::from_millis(1500) {
            ticks.tick().await;
            assert_echo(&mut busy, Message::text(format!("tick {sent}"))).await;
            sent += 1;
        }
        busy
    });

    let start = Instant::now();
    assert_stream_ends(&mut silent, IDLE_TIMEOUT + TIMER_SLACK).await;
    let took = start.elapsed();
    assert!(
        took >= IDLE_TIMEOUT - Duration::from_millis(100),
        "closed after {took:?}, before the idle timeout"
    );
    served
        .proxy
        .wait_for_metric(
            "wss_sidecar_connections_closed_total",
            &[("reason", "idle_timeout")],
            1.0,
        )
        .await;

    let mut busy = busy_task.await.expect("busy client kept echoing for 1.5 s");
    assert_echo(&mut busy, Message::text("still here")).await;
    let m = served.proxy.metrics().await;
    assert_eq!(
        m.value(
            "wss_sidecar_connections_closed_total",
            &[("reason", "idle_timeout")]
        ),
        1.0,
        "only the silent connection timed out"
    );
    assert_eq!(m.value("wss_sidecar_connections_open", &[]), 1.0);
}

/// TLS through the proxy offering `alpn`, then a WebSocket echo over that stream.
async fn negotiate_and_echo(served: &Served, alpn: &[&[u8]]) -> Option<Vec<u8>> {
    let tls = tls_connect(served.proxy.addr, APP_NAME, served.client_offering(alpn))
        .await
        .unwrap_or_else(|e| panic!("handshake offering {alpn:?}: {e}"));
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let url = format!("wss://{APP_NAME}:{}/ws", served.proxy.addr.port());
    let mut ws = ws_upgrade(tls, url)
        .await
        .expect("websocket upgrade in time");
    assert_echo(&mut ws, Message::text("alpn")).await;
    negotiated
}

#[tokio::test]
async fn alpn_offers_only_http11() {
    let (app, served) = serve(&[]).await;

    let h2_only = tls_connect(
        served.proxy.addr,
        APP_NAME,
        served.client_offering(&[b"h2"]),
    )
    .await;
    assert!(
        h2_only.is_err(),
        "raw forwarding cannot carry h2: the handshake must fail"
    );
    served
        .proxy
        .wait_for_metric(HANDSHAKE_FAILURES, &[("reason", "tls")], 1.0)
        .await;

    assert_eq!(
        negotiate_and_echo(&served, &[b"http/1.1"]).await.as_deref(),
        Some(&b"http/1.1"[..])
    );
    assert_eq!(
        negotiate_and_echo(&served, &[b"h2", b"http/1.1"])
            .await
            .as_deref(),
        Some(&b"http/1.1"[..]),
        "a browser-like offer settles on http/1.1"
    );
    assert_eq!(negotiate_and_echo(&served, &[]).await, None);
    assert_eq!(app.connections_accepted(), 3);
}

#[tokio::test]
async fn a_corrupt_tls_record_ends_only_that_connection() {
    let (_app, served) = serve(&[]).await;
    let mut bystander = ws(&served).await;
    assert_echo(&mut bystander, Message::text("before")).await;

    let mut hostile = served.tls().await.expect("handshake");
    // An application-data record whose ciphertext is garbage: decryption must fail.
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x40];
    record.extend((0..0x40u8).map(|i| i.wrapping_mul(37)));
    hostile
        .get_mut()
        .0
        .write_all(&record)
        .await
        .expect("write the corrupt record");
    let mut buf = Vec::new();
    let ended = timeout(IO_TIMEOUT, hostile.read_to_end(&mut buf)).await;
    assert!(
        ended.is_ok(),
        "the proxy kept a connection whose records do not decrypt"
    );

    served
        .proxy
        .wait_for_metric(
            "wss_sidecar_connections_closed_total",
            &[("reason", "client_error")],
            1.0,
        )
        .await;
    assert_echo(&mut bystander, Message::text("after")).await;
}
