//! Upstream down: the client's connection closes, a metric counts it, and the next client
//! succeeds once the upstream is back; one dead upstream connection ends only its own client.

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::support::*;

const OPEN: &str = "wss_sidecar_connections_open";
const CLOSED: &str = "wss_sidecar_connections_closed_total";

/// `wss_sidecar_connections_closed_total{reason}`.
async fn closed(served: &Served, reason: &str) -> f64 {
    served.proxy.metric(CLOSED, &[("reason", reason)]).await
}

/// `wss_sidecar_upstream_connect_failures_total{reason="refused"}`.
async fn refused_connects(served: &Served) -> f64 {
    served
        .proxy
        .metric(
            "wss_sidecar_upstream_connect_failures_total",
            &[("reason", "refused")],
        )
        .await
}

/// Completes TLS through the proxy (it needs no upstream), then asserts that the WebSocket
/// upgrade to `url` is answered with an HTTP 502, in time.
async fn assert_upgrade_gets_502(served: &Served, url: String) {
    let tls = served
        .tls()
        .await
        .expect("the handshake completes even while the upstream is down");
    match ws_upgrade(tls, url).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 502),
        Err(other) => panic!("expected an HTTP 502, got the error {other}"),
        Ok(_) => panic!("the upgrade succeeded with no upstream"),
    }
}

/// Asserts that a new client gets a working WebSocket now that the upstream is back.
async fn assert_served_again(served: &Served, text: &str) {
    let mut ws = served
        .ws()
        .await
        .unwrap_or_else(|e| panic!("websocket once the upstream is back: {e}"));
    assert_echo(&mut ws, Message::text(text)).await;
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
    let served = Served::start(&addr.to_string(), &[]).await;

    let url = format!("wss://{APP_NAME}:{}/ws", served.proxy.addr.port());
    assert_upgrade_gets_502(&served, url).await;
    assert_eq!(refused_connects(&served).await, 1.0);
    served.proxy.wait_for_metric(OPEN, &[], 0.0).await;

    let app = EchoServer::start_tcp_on(addr).await;
    assert_served_again(&served, "back").await;
    assert_eq!(app.connections_accepted(), 1);
    assert_eq!(
        refused_connects(&served).await,
        1.0,
        "the successful connect is not counted as a failure"
    );
}

/// `--upstream` keeps its name: the sidecar starts while the name does not resolve (DNS not
/// ready yet), each client that arrives then gets a 502 counted as `dns`, and a name that does
/// resolve is looked up when a client connects.
#[tokio::test]
async fn an_upstream_name_that_does_not_resolve_fails_each_connect_not_the_start() {
    let served = Served::start("app.no-such-namespace.invalid:8080", &[]).await;
    let url = format!("wss://{APP_NAME}:{}/ws", served.proxy.addr.port());
    for attempt in 1..=2 {
        assert_upgrade_gets_502(&served, url.clone()).await;
        served
            .proxy
            .wait_for_metric(
                "wss_sidecar_upstream_connect_failures_total",
                &[("reason", "dns")],
                f64::from(attempt),
            )
            .await;
    }
    served.proxy.wait_for_metric(OPEN, &[], 0.0).await;

    let app = EchoServer::start_tcp().await;
    let by_name = Served::start(&format!("localhost:{}", app.addr().port()), &[]).await;
    assert_served_again(&by_name, "by name").await;
    assert_eq!(app.connections_accepted(), 1);
}

#[tokio::test]
async fn an_unreachable_unix_socket_upstream_gets_a_502() {
    let sockets = tempfile::tempdir().expect("tempdir");
    let path = sockets.path().join("app.sock");
    let served = Served::start(&format!("unix:{}", path.display()), &[]).await;

    assert_upgrade_gets_502(&served, format!("wss://{APP_NAME}/ws")).await;
    assert_eq!(
        refused_connects(&served).await,
        1.0,
        "a missing socket file counts as refused"
    );

    let _app = EchoServer::start_unix(&path).await;
    assert_served_again(&served, "back").await;
}

#[tokio::test]
async fn an_upstream_dying_mid_connection_ends_the_client_and_a_restart_serves_the_next() {
    let app = EchoServer::start_tcp().await;
    let addr = app.addr();
    let served = Served::start(&addr.to_string(), &[]).await;
    let mut ws = served.ws().await.expect("websocket");
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
    wait_until(
        "the proxy counts the ended connection",
        METRIC_WAIT,
        || async {
            closed(&served, "upstream_error").await + closed(&served, "closed").await == 1.0
        },
    )
    .await;
    served.proxy.wait_for_metric(OPEN, &[], 0.0).await;

    let app = EchoServer::start_tcp_on(addr).await;
    assert_served_again(&served, "again").await;
    assert_eq!(app.connections_accepted(), 1);
}

#[tokio::test]
async fn a_reset_upstream_connection_ends_only_its_own_client() {
    let (upstream_addr, mut accepted) = raw_upstream_tcp().await;
    let served = Served::start(&upstream_addr.to_string(), &[]).await;
    let mut next_upstream = async || -> TcpStream {
        timeout(IO_TIMEOUT, accepted.recv())
            .await
            .expect("the proxy connects upstream in time")
            .expect("raw upstream still accepting")
    };
    // Connect one at a time so each upstream socket is known to belong to its client.
    let mut doomed = served.tls().await.expect("tls");
    let doomed_upstream = next_upstream().await;
    let mut survivor = served.tls().await.expect("tls");
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
    served
        .proxy
        .wait_for_metric(CLOSED, &[("reason", "upstream_error")], 1.0)
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
    served
        .proxy
        .wait_for_metric(CLOSED, &[("reason", "closed")], 1.0)
        .await;
    assert_eq!(closed(&served, "upstream_error").await, 1.0);
}

#[tokio::test]
async fn an_upstream_that_never_answers_the_connect_times_out_with_a_502() {
    // A listener that never accepts, with its accept queue full: further SYNs are dropped, so
    // a connect hangs exactly as it does to an app that is wedged.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let _wedged = socket.listen(1).expect("listen");
    let mut fillers = Vec::new();
    while fillers.len() < 8 {
        match timeout(
            std::time::Duration::from_millis(200),
            TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    assert!(fillers.len() < 8, "the accept queue never filled up");

    let served = Served::start(&addr.to_string(), &["--connect-timeout", "300ms"]).await;
    let started = std::time::Instant::now();
    let url = format!("wss://{APP_NAME}:{}/ws", served.proxy.addr.port());
    assert_upgrade_gets_502(&served, url).await;
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(250),
        "502 after {took:?}: no wait?"
    );
    let timeouts = served
        .proxy
        .metric(
            "wss_sidecar_upstream_connect_failures_total",
            &[("reason", "timeout")],
        )
        .await;
    assert_eq!(timeouts, 1.0);
}
