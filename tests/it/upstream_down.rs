//! Upstream down: the client's connection closes, a metric counts it, and the next client
//! succeeds once the upstream is back; one dead upstream connection ends only its own client.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rustls::ClientConfig;
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::support::*;

/// How long the proxy's metrics may take to reflect what just happened.
const SETTLE: Duration = Duration::from_secs(10);

/// A proxy with a certificate for `app.test`, and a client configuration that trusts it.
struct Setup {
    proxy: TestProxy,
    client: Arc<ClientConfig>,
    _cert_dir: TempDir,
}

impl Setup {
    async fn start(upstream: &str) -> Setup {
        let ca = TestCa::new("upstream-down CA");
        let cert_dir = tempfile::tempdir().expect("tempdir");
        write_plain_pair(cert_dir.path(), &ca.issue(LeafSpec::new(&["app.test"])));
        let proxy = TestProxy::start(&[
            "--upstream",
            upstream,
            "--cert-dir",
            cert_dir.path().to_str().expect("utf-8 path"),
        ])
        .await;
        Setup {
            proxy,
            client: client_config(&[ca.cert_der()], &[b"http/1.1"]),
            _cert_dir: cert_dir,
        }
    }

    async fn closed(&self, reason: &str) -> f64 {
        self.proxy
            .metric(
                "wss_sidecar_connections_closed_total",
                &[("reason", reason)],
            )
            .await
    }
}

/// Reads to the end (EOF, or an error such as a reset) within [`IO_TIMEOUT`]; returns the
/// bytes that arrived first.
async fn read_until_closed<R: AsyncRead + Unpin>(reader: &mut R, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let read = timeout(IO_TIMEOUT, reader.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "{what}: still open after {IO_TIMEOUT:?}");
    got
}

#[tokio::test]
async fn an_unreachable_upstream_gets_a_502_and_the_next_client_succeeds_once_it_is_back() {
    let app = EchoServer::start_tcp().await;
    let addr = app.addr();
    app.stop().await;
    let setup = Setup::start(&addr.to_string()).await;

    let tls = tls_connect(setup.proxy.addr, "app.test", setup.client.clone())
        .await
        .expect("the handshake completes even while the upstream is down");
    let attempt = timeout(
        IO_TIMEOUT,
        tokio_tungstenite::client_async_with_config(
            format!("wss://app.test:{}/ws", setup.proxy.addr.port()),
            tls,
            Some(ws_config()),
        ),
    )
    .await
    .expect("an answer, not a hang");
    match attempt {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 502),
        Err(other) => panic!("expected an HTTP 502, got the error {other}"),
        Ok(_) => panic!("the upgrade succeeded with no upstream"),
    }
    assert_eq!(
        setup
            .proxy
            .metric(
                "wss_sidecar_upstream_connect_failures_total",
                &[("reason", "refused")]
            )
            .await,
        1.0
    );
    wait_until("the failed connection is closed", SETTLE, || async {
        setup
            .proxy
            .metric("wss_sidecar_connections_open", &[])
            .await
            == 0.0
    })
    .await;

    let app = EchoServer::start_tcp_on(addr).await;
    let mut ws = ws_connect(setup.proxy.addr, "app.test", setup.client.clone())
        .await
        .expect("websocket once the upstream is back");
    assert_echo(&mut ws, Message::text("back")).await;
    assert_eq!(app.connections_accepted(), 1);
    assert_eq!(
        setup
            .proxy
            .metric(
                "wss_sidecar_upstream_connect_failures_total",
                &[("reason", "refused")]
            )
            .await,
        1.0,
        "the successful connect is not counted as a failure"
    );
}

#[tokio::test]
async fn an_unreachable_unix_socket_upstream_gets_a_502() {
    let sockets = tempfile::tempdir().expect("tempdir");
    let path = sockets.path().join("app.sock");
    let setup = Setup::start(&format!("unix:{}", path.display())).await;

    let tls = tls_connect(setup.proxy.addr, "app.test", setup.client.clone())
        .await
        .expect("handshake");
    let attempt = timeout(
        IO_TIMEOUT,
        tokio_tungstenite::client_async("wss://app.test/ws", tls),
    )
    .await
    .expect("an answer, not a hang");
    match attempt {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 502),
        Err(other) => panic!("expected an HTTP 502, got the error {other}"),
        Ok(_) => panic!("the upgrade succeeded with no upstream"),
    }
    assert_eq!(
        setup
            .proxy
            .metric(
                "wss_sidecar_upstream_connect_failures_total",
                &[("reason", "refused")]
            )
            .await,
        1.0,
        "a missing socket file counts as refused"
    );

    let _app = EchoServer::start_unix(&path).await;
    let mut ws = ws_connect(setup.proxy.addr, "app.test", setup.client.clone())
        .await
        .expect("websocket once the upstream is back");
    assert_echo(&mut ws, Message::text("back")).await;
}

#[tokio::test]
async fn an_upstream_dying_mid_connection_ends_the_client_and_a_restart_serves_the_next() {
    let app = EchoServer::start_tcp().await;
    let addr = app.addr();
    let setup = Setup::start(&addr.to_string()).await;
    let mut ws = ws_connect(setup.proxy.addr, "app.test", setup.client.clone())
        .await
        .expect("websocket");
    assert_echo(&mut ws, Message::text("alive")).await;

    app.stop().await;
    let next = timeout(IO_TIMEOUT, ws.next())
        .await
        .expect("the client sees the end within IO_TIMEOUT");
    assert!(
        matches!(next, None | Some(Err(_))),
        "expected the stream to end, got {next:?}"
    );
    drop(ws);
    wait_until("the proxy counts the ended connection", SETTLE, || async {
        setup.closed("upstream_error").await + setup.closed("closed").await == 1.0
    })
    .await;
    wait_until("the connection is no longer open", SETTLE, || async {
        setup
            .proxy
            .metric("wss_sidecar_connections_open", &[])
            .await
            == 0.0
    })
    .await;

    let app = EchoServer::start_tcp_on(addr).await;
    let mut ws = ws_connect(setup.proxy.addr, "app.test", setup.client.clone())
        .await
        .expect("websocket after the upstream restarted");
    assert_echo(&mut ws, Message::text("again")).await;
    assert_eq!(app.connections_accepted(), 1);
}

#[tokio::test]
async fn a_reset_upstream_connection_ends_only_its_own_client() {
    let (upstream_addr, mut accepted) = raw_upstream_tcp().await;
    let setup = Setup::start(&upstream_addr.to_string()).await;
    let mut next_upstream = async || -> TcpStream {
        timeout(IO_TIMEOUT, accepted.recv())
            .await
            .expect("the proxy connects upstream in time")
            .expect("raw upstream still accepting")
    };
    // Connect one at a time so each upstream socket is known to belong to its client.
    let mut doomed = tls_connect(setup.proxy.addr, "app.test", setup.client.clone())
        .await
        .expect("tls");
    let doomed_upstream = next_upstream().await;
    let mut survivor = tls_connect(setup.proxy.addr, "app.test", setup.client.clone())
        .await
        .expect("tls");
    let mut survivor_upstream = next_upstream().await;

    // The app crashes on one connection: a reset, not an orderly close.
    doomed_upstream.set_zero_linger().expect("SO_LINGER 0");
    drop(doomed_upstream);
    // The proxy says goodbye with close_notify rather than vanishing: a clean end for the client.
    let mut rest = Vec::new();
    timeout(IO_TIMEOUT, doomed.read_to_end(&mut rest))
        .await
        .expect("the client of the reset upstream sees the end in time")
        .expect("a clean TLS end (close_notify), not a truncation");
    assert!(rest.is_empty(), "nothing arrives after the reset: {rest:?}");
    wait_until("the proxy counts an upstream error", SETTLE, || async {
        setup.closed("upstream_error").await == 1.0
    })
    .await;

    // The other connection through the same proxy still carries bytes both ways.
    let mut buf = [0u8; 5];
    survivor.write_all(b"hello").await.expect("client writes");
    timeout(IO_TIMEOUT, survivor_upstream.read_exact(&mut buf))
        .await
        .expect("in time")
        .expect("upstream reads");
    assert_eq!(&buf, b"hello");
    survivor_upstream
        .write_all(b"world")
        .await
        .expect("upstream writes");
    timeout(IO_TIMEOUT, survivor.read_exact(&mut buf))
        .await
        .expect("in time")
        .expect("client reads");
    assert_eq!(&buf, b"world");

    survivor.shutdown().await.expect("client close_notify");
    assert!(
        read_until_closed(&mut survivor_upstream, "upstream")
            .await
            .is_empty()
    );
    drop(survivor_upstream);
    assert!(read_until_closed(&mut survivor, "client").await.is_empty());
    wait_until("the proxy counts the clean close", SETTLE, || async {
        setup.closed("closed").await == 1.0
    })
    .await;
    assert_eq!(setup.closed("upstream_error").await, 1.0);
}
