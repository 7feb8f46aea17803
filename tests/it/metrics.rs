//! `/metrics`, `/healthz` and `/readyz` (acceptance 9): the scrape parses as Prometheus text,
//! and every counter moves as traffic, failures and certificate loads happen. The histograms
//! and the negotiated TLS: `metrics_tls`; the injector's: `injector_metrics`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const NAME: &str = "app.test";
/// Bound for waits whose duration is not itself under test.
const WAIT: Duration = Duration::from_secs(10);

const OPEN: &str = "wss_sidecar_connections_open";
const ACCEPTED: &str = "wss_sidecar_connections_total";
const CLOSED: &str = "wss_sidecar_connections_closed_total";
const BYTES: &str = "wss_sidecar_bytes_total";
const HANDSHAKE_FAILURES: &str = "wss_sidecar_handshake_failures_total";
const UPSTREAM_FAILURES: &str = "wss_sidecar_upstream_connect_failures_total";
const RELOADS: &str = "wss_sidecar_cert_reloads_total";
const NOT_AFTER: &str = "wss_sidecar_cert_not_after_seconds";
const LAST_RELOAD: &str = "wss_sidecar_cert_last_reload_success_timestamp_seconds";

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// The leaf's notAfter in seconds since the epoch, read from the certificate itself.
fn not_after_of(pair: &TestPair) -> f64 {
    let (_, cert) = x509_parser::parse_x509_certificate(&pair.leaf_der).expect("leaf parses");
    cert.validity().not_after.timestamp() as f64
}

/// An echo app, and a proxy in front of it with `extra` flags.
async fn serve(extra: &[&str]) -> (EchoServer, Served) {
    let app = EchoServer::start_tcp().await;
    let served = Served::start(&app.addr().to_string(), extra).await;
    (app, served)
}

#[tokio::test]
async fn connection_and_byte_counters_follow_a_websocket() {
    let (_app, s) = serve(&[]).await;
    let proxy = &s.proxy;
    let before = proxy.metrics().await;
    assert_eq!(before.value(ACCEPTED, &[]), 0.0);
    assert_eq!(before.value(OPEN, &[]), 0.0);

    let mut ws = s.ws().await.expect("websocket");
    let open = proxy.metrics().await;
    assert_eq!(open.value(ACCEPTED, &[]), 1.0, "one connection accepted");
    assert_eq!(open.value(OPEN, &[]), 1.0, "one connection open");

    const N: usize = 200_000;
    let payload = Message::binary(vec![0x5a; N]);
    assert_echo(&mut ws, payload).await;
    let moved = proxy.metrics().await;
    let up = moved.value(BYTES, &[("direction", "client_to_upstream")]);
    let down = moved.value(BYTES, &[("direction", "upstream_to_client")]);
    assert!(
        up >= N as f64,
        "client_to_upstream counted {up} bytes for a {N}-byte message"
    );
    assert!(
        down >= N as f64,
        "upstream_to_client counted {down} bytes for a {N}-byte echo"
    );
    assert_eq!(moved.value(OPEN, &[]), 1.0, "still open after the echo");

    // A clean WebSocket close: close handshake, then both sides finish.
    ws.close(None).await.expect("send close");
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    proxy.wait_for_metric(OPEN, &[], 0.0).await;
    proxy
        .wait_for_metric(CLOSED, &[("reason", "closed")], 1.0)
        .await;
    let after = proxy.metrics().await;
    assert_eq!(after.value(ACCEPTED, &[]), 1.0);
    assert!(after.value(BYTES, &[("direction", "client_to_upstream")]) >= up);

    // A second connection counts again, and its bytes add to the same counters.
    let mut ws = s.ws().await.expect("websocket");
    assert_echo(&mut ws, Message::binary(vec![1u8; N])).await;
    let again = proxy.metrics().await;
    assert_eq!(again.value(ACCEPTED, &[]), 2.0);
    assert_eq!(again.value(OPEN, &[]), 1.0);
    assert!(again.value(BYTES, &[("direction", "client_to_upstream")]) >= up + N as f64);
    assert!(again.value(BYTES, &[("direction", "upstream_to_client")]) >= down + N as f64);
    ws.send(Message::Close(None)).await.expect("send close");
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    proxy.wait_for_metric(OPEN, &[], 0.0).await;
    proxy
        .wait_for_metric(CLOSED, &[("reason", "closed")], 2.0)
        .await;
}

#[tokio::test]
async fn handshake_failures_are_counted_by_reason() {
    let (_app, s) = serve(&["--handshake-timeout", "1s"]).await;
    let proxy = &s.proxy;
    let addr = proxy.addr;

    // A client that does not trust the CA aborts after seeing the certificate.
    let stranger = TestCa::new("someone else's CA");
    let config = client_config(&[stranger.cert_der()], &[b"http/1.1"]);
    let err = tls_connect(addr, NAME, config)
        .await
        .expect_err("a client that does not trust the CA refuses the handshake");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "client side: {err}"
    );
    proxy
        .wait_for_metric(HANDSHAKE_FAILURES, &[("reason", "tls")], 1.0)
        .await;

    // Plain HTTP on the TLS port gets a readable 400.
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("the proxy answers plain HTTP")
        .expect("read");
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    proxy
        .wait_for_metric(HANDSHAKE_FAILURES, &[("reason", "not_tls")], 1.0)
        .await;

    // A client that connects and leaves without a word.
    drop(TcpStream::connect(addr).await.expect("connect"));
    proxy
        .wait_for_metric(HANDSHAKE_FAILURES, &[("reason", "eof")], 1.0)
        .await;

    // A client that connects and says nothing until --handshake-timeout.
    let silent = TcpStream::connect(addr).await.expect("connect");
    proxy
        .wait_for_metric(HANDSHAKE_FAILURES, &[("reason", "timeout")], 1.0)
        .await;
    drop(silent);

    let m = proxy.metrics().await;
    assert_eq!(
        m.value(ACCEPTED, &[]),
        4.0,
        "every failed client was accepted first"
    );
    proxy.wait_for_metric(OPEN, &[], 0.0).await;
    for reason in ["tls", "not_tls", "eof", "timeout"] {
        assert_eq!(
            m.value(HANDSHAKE_FAILURES, &[("reason", reason)]),
            1.0,
            "{reason} counted once"
        );
    }
    assert_eq!(m.value(UPSTREAM_FAILURES, &[("reason", "refused")]), 0.0);
}

#[tokio::test]
async fn upstream_connect_failures_are_counted_and_answered_with_502() {
    // A port that was just free: nothing listens there.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .to_string();
    let served = Served::start(&closed, &[]).await;
    let proxy = &served.proxy;
    let err = served.ws().await.expect_err("no upstream, no WebSocket");
    assert!(err.contains("502"), "the client is told 502: {err}");
    let m = proxy.metrics().await;
    assert_eq!(m.value(UPSTREAM_FAILURES, &[("reason", "refused")]), 1.0);
    assert_eq!(m.value(HANDSHAKE_FAILURES, &[("reason", "tls")]), 0.0);
    assert_eq!(m.value(ACCEPTED, &[]), 1.0);
    proxy.wait_for_metric(OPEN, &[], 0.0).await;
}

#[tokio::test]
async fn certificate_metrics_describe_what_each_source_serves() {
    let started = now_secs();
    let ca = TestCa::new("cert metrics CA");
    let first = ca.issue(LeafSpec::new(&[NAME]));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kubelet = KubeletDir::new(dir.path());
    kubelet.publish_pair(&first);
    let app = EchoServer::start_tcp().await;
    let served = Served::start_in(&ca, dir, &app.addr().to_string(), &[]).await;
    let proxy = &served.proxy;
    let source = served.source();
    let src = [("source", source.as_str())];
    let success = [("source", source.as_str()), ("result", "success")];
    let failure = [("source", source.as_str()), ("result", "failure")];

    let m = proxy.metrics().await;
    assert_eq!(m.value(NOT_AFTER, &src), not_after_of(&first));
    assert_eq!(m.value(RELOADS, &success), 1.0);
    assert_eq!(m.value(RELOADS, &failure), 0.0);
    let loaded_at = m.value(LAST_RELOAD, &src);
    assert!(
        loaded_at >= started.floor() && loaded_at <= now_secs() + 1.0,
        "last reload {loaded_at} is not between the test's start {started} and now"
    );

    // A later certificate with a different notAfter: the gauge follows it.
    let mut spec = LeafSpec::new(&[NAME, "second.test"]);
    spec.validity.not_after = SystemTime::now() + Duration::from_secs(90 * 24 * 60 * 60);
    let second = ca.issue(spec);
    assert_ne!(not_after_of(&first), not_after_of(&second));
    kubelet.publish_pair(&second);
    proxy.wait_for_metric_at_least(RELOADS, &success, 2.0).await;
    let m = proxy.metrics().await;
    assert_eq!(m.value(NOT_AFTER, &src), not_after_of(&second));
    let reloaded_at = m.value(LAST_RELOAD, &src);
    assert!(reloaded_at >= loaded_at && reloaded_at <= now_secs() + 1.0);

    // A refused pair counts as a failure and changes neither gauge.
    kubelet.publish_pair(&ca.issue(LeafSpec::new(&[NAME]).expired()));
    proxy.wait_for_metric_at_least(RELOADS, &failure, 1.0).await;
    let m = proxy.metrics().await;
    assert_eq!(m.value(NOT_AFTER, &src), not_after_of(&second));
    assert_eq!(m.value(LAST_RELOAD, &src), reloaded_at);
    assert_eq!(m.value(RELOADS, &success), 2.0);
}

#[tokio::test]
async fn health_and_readiness_while_serving() {
    let ca = TestCa::new("metrics CA");
    let pair = ca.issue(LeafSpec::new(&[NAME]));
    let app = EchoServer::start_tcp().await;
    let s = Served::start_with(&ca, &pair, &app.addr().to_string(), &[]).await;
    let (status, body) = s.proxy.admin_get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.proxy.admin_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.proxy.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for family in [OPEN, ACCEPTED, BYTES, NOT_AFTER, RELOADS, LAST_RELOAD] {
        assert!(body.contains(family), "/metrics has no {family}:\n{body}");
    }
    let source = s.source();
    assert_eq!(
        s.proxy.metric(NOT_AFTER, &[("source", &source)]).await,
        not_after_of(&pair)
    );
}

// A proxy whose only certificate is bad from the start runs but is not ready, and says why;
// once a valid pair is written it becomes ready and serves it.
#[tokio::test]
async fn readiness_waits_for_a_valid_certificate() {
    let ca = TestCa::new("readiness CA");
    let expired = ca.issue(LeafSpec::new(&[NAME]).expired());
    let dir = tempfile::tempdir().expect("tempdir");
    write_plain_pair(dir.path(), &expired);
    let app = EchoServer::start_tcp().await;
    let upstream = app.addr().to_string();
    let proxy = TestProxy::start_unready(&serving_args(&upstream, dir.path(), &[])).await;
    let admin = proxy.admin;
    wait_until(
        "/readyz says no valid certificate is loaded",
        WAIT,
        || async move {
            matches!(
                http_get(admin, "/readyz").await,
                Ok((503, body)) if body.contains("no valid certificate")
            )
        },
    )
    .await;
    let (status, body) = proxy.admin_get("/healthz").await;
    assert_eq!(status, 200, "alive while not ready: {body}");
    let source = format!("dir:{}", dir.path().display());
    let m = proxy.metrics().await;
    assert_eq!(
        m.value(RELOADS, &[("source", &source), ("result", "failure")]),
        1.0
    );
    assert_eq!(
        m.value(RELOADS, &[("source", &source), ("result", "success")]),
        0.0
    );
    assert!(
        !m.scrape.samples.iter().any(|s| s.metric == NOT_AFTER),
        "no notAfter gauge before any certificate is served"
    );
    let config = client_config(&[ca.cert_der()], &[b"http/1.1"]);
    assert!(
        tls_connect(proxy.addr, NAME, Arc::clone(&config))
            .await
            .is_err(),
        "no certificate, no handshake"
    );

    let good = ca.issue(LeafSpec::new(&[NAME]));
    write_plain_pair(dir.path(), &good);
    proxy.wait_ready().await;
    let tls = tls_connect(proxy.addr, NAME, Arc::clone(&config))
        .await
        .expect("handshake once a valid pair is written");
    assert!(peer_leaf(&tls) == good.leaf_der);
    let (status, body) = proxy.admin_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        proxy.metric(NOT_AFTER, &[("source", &source)]).await,
        not_after_of(&good)
    );
}
