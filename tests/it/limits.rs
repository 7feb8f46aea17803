//! Limits and protocol gates: the handshake timeout, plain HTTP on the TLS port,
//! `--max-connections`, `--idle-timeout` and ALPN.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// How long the proxy's metrics may take to reflect what just happened.
const SETTLE: Duration = Duration::from_secs(10);
/// The `--handshake-timeout` under test: short, since these are real sockets on a real clock.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(300);
/// The `--idle-timeout` under test.
const IDLE_TIMEOUT: Duration = Duration::from_millis(500);
/// How late after its deadline a timeout may fire before the test calls it broken.
const TIMER_SLACK: Duration = Duration::from_secs(3);

/// A proxy with a certificate for `app.test`, and the CA a client must trust.
struct Setup {
    proxy: TestProxy,
    ca_der: CertificateDer<'static>,
    _cert_dir: TempDir,
}

impl Setup {
    async fn start(upstream: &str, flags: &[&str]) -> Setup {
        let ca = TestCa::new("limits CA");
        let cert_dir = tempfile::tempdir().expect("tempdir");
        write_plain_pair(cert_dir.path(), &ca.issue(LeafSpec::new(&["app.test"])));
        let mut args = vec![
            "--upstream",
            upstream,
            "--cert-dir",
            cert_dir.path().to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(flags);
        Setup {
            proxy: TestProxy::start(&args).await,
            ca_der: ca.cert_der(),
            _cert_dir: cert_dir,
        }
    }

    fn client(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        client_config(std::slice::from_ref(&self.ca_der), alpn)
    }

    async fn ws(&self) -> WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>> {
        ws_connect(self.proxy.addr, "app.test", self.client(&[b"http/1.1"]))
            .await
            .expect("websocket through the proxy")
    }

    async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let proxy = &self.proxy;
        wait_until(&format!("{name}{labels:?} is {value}"), SETTLE, || async {
            proxy.metric(name, labels).await == value
        })
        .await;
    }
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
    let app = EchoServer::start_tcp().await;
    let setup = Setup::start(&app.addr().to_string(), &["--handshake-timeout", "300ms"]).await;
    let mut tcp = TcpStream::connect(setup.proxy.addr).await.expect("connect");
    let (got, took) = read_until_closed(&mut tcp, HANDSHAKE_TIMEOUT + TIMER_SLACK).await;
    assert!(got.is_empty(), "a silent client is sent nothing: {got:?}");
    assert!(
        took >= HANDSHAKE_TIMEOUT - Duration::from_millis(20),
        "closed after {took:?}, before the handshake timeout"
    );
    setup
        .wait_metric(
            "wss_sidecar_handshake_failures_total",
            &[("reason", "timeout")],
            1.0,
        )
        .await;
    assert_eq!(
        app.connections_accepted(),
        0,
        "no upstream connection without a handshake"
    );
}

#[tokio::test]
async fn a_client_stalling_mid_client_hello_is_dropped_after_the_handshake_timeout() {
    let app = EchoServer::start_tcp().await;
    let setup = Setup::start(&app.addr().to_string(), &["--handshake-timeout", "300ms"]).await;
    // A real ClientHello, cut in half: the proxy sees a TLS record start, then nothing more.
    let name = ServerName::try_from("app.test".to_string()).expect("server name");
    let mut hello_conn =
        rustls::ClientConnection::new(setup.client(&[b"http/1.1"]), name).expect("client");
    let mut hello = Vec::new();
    hello_conn.write_tls(&mut hello).expect("client hello");
    assert_eq!(hello[0], 0x16, "a TLS handshake record");

    let mut tcp = TcpStream::connect(setup.proxy.addr).await.expect("connect");
    tcp.write_all(&hello[..hello.len() / 2])
        .await
        .expect("write half a client hello");
    let (got, took) = read_until_closed(&mut tcp, HANDSHAKE_TIMEOUT + TIMER_SLACK).await;
    assert!(got.is_empty(), "no server hello for half a client hello");
    assert!(
        took >= HANDSHAKE_TIMEOUT - Duration::from_millis(20),
        "closed after {took:?}, before the handshake timeout"
    );
    setup
        .wait_metric(
            "wss_sidecar_handshake_failures_total",
            &[("reason", "timeout")],
            1.0,
        )
        .await;
    assert_eq!(app.connections_accepted(), 0);
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_400_and_other_connections_carry_on() {
    let app = EchoServer::start_tcp().await;
    let setup = Setup::start(&app.addr().to_string(), &[]).await;
    let mut ws = setup.ws().await;
    assert_echo(&mut ws, Message::text("before")).await;

    let mut plain = TcpStream::connect(setup.proxy.addr).await.expect("connect");
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
    let m = setup.proxy.metrics().await;
    assert_eq!(
        m.value(
            "wss_sidecar_handshake_failures_total",
            &[("reason", "not_tls")]
        ),
        1.0
    );
    assert_eq!(m.value("wss_sidecar_connections_open", &[]), 1.0);
    assert_eq!(
        app.connections_accepted(),
        1,
        "the plain request went nowhere"
    );
}

#[tokio::test]
async fn max_connections_refuses_the_extra_client_and_admits_one_after_a_close() {
    let app = EchoServer::start_tcp().await;
    let setup = Setup::start(&app.addr().to_string(), &["--max-connections", "2"]).await;
    let mut first = setup.ws().await;
    let mut second = setup.ws().await;
    assert_echo(&mut first, Message::text("first")).await;
    assert_echo(&mut second, Message::text("second")).await;

    let refused = tls_connect(setup.proxy.addr, "app.test", setup.client(&[b"http/1.1"])).await;
    assert!(
        refused.is_err(),
        "a third connection must not complete a handshake"
    );
    setup
        .wait_metric(
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
        let (addr, config) = (setup.proxy.addr, setup.client(&[b"http/1.1"]));
        async move {
            match ws_connect(addr, "app.test", config).await {
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
        setup
            .proxy
            .metric("wss_sidecar_connections_open", &[])
            .await,
        2.0
    );
}

#[tokio::test]
async fn idle_timeout_closes_silent_websockets_but_not_busy_ones() {
    let app = EchoServer::start_tcp().await;
    let setup = Setup::start(&app.addr().to_string(), &["--idle-timeout", "500ms"]).await;
    let mut silent = setup.ws().await;
    let mut busy = setup.ws().await;

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
    setup
        .wait_metric(
            "wss_sidecar_connections_closed_total",
            &[("reason", "idle_timeout")],
            1.0,
        )
        .await;

    let mut busy = busy_task.await.expect("busy client kept echoing for 1.5 s");
    assert_echo(&mut busy, Message::text("still here")).await;
    let m = setup.proxy.metrics().await;
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
async fn negotiate_and_echo(setup: &Setup, alpn: &[&[u8]]) -> Option<Vec<u8>> {
    let tls = tls_connect(setup.proxy.addr, "app.test", setup.client(alpn))
        .await
        .unwrap_or_else(|e| panic!("handshake offering {alpn:?}: {e}"));
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let (mut ws, _) = timeout(
        IO_TIMEOUT,
        tokio_tungstenite::client_async_with_config(
            format!("wss://app.test:{}/ws", setup.proxy.addr.port()),
            tls,
            Some(ws_config()),
        ),
    )
    .await
    .expect("upgrade in time")
    .expect("websocket upgrade");
    assert_echo(&mut ws, Message::text("alpn")).await;
    negotiated
}

#[tokio::test]
async fn alpn_offers_only_http11() {
    let app = EchoServer::start_tcp().await;
    let setup = Setup::start(&app.addr().to_string(), &[]).await;

    let h2_only = tls_connect(setup.proxy.addr, "app.test", setup.client(&[b"h2"])).await;
    assert!(
        h2_only.is_err(),
        "raw forwarding cannot carry h2: the handshake must fail"
    );
    setup
        .wait_metric(
            "wss_sidecar_handshake_failures_total",
            &[("reason", "tls")],
            1.0,
        )
        .await;

    assert_eq!(
        negotiate_and_echo(&setup, &[b"http/1.1"]).await.as_deref(),
        Some(&b"http/1.1"[..])
    );
    assert_eq!(
        negotiate_and_echo(&setup, &[b"h2", b"http/1.1"])
            .await
            .as_deref(),
        Some(&b"http/1.1"[..]),
        "a browser-like offer settles on http/1.1"
    );
    assert_eq!(negotiate_and_echo(&setup, &[]).await, None);
    assert_eq!(app.connections_accepted(), 3);
}
