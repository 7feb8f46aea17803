//! `--forwarded-headers`: the upgrade request reaches the app with X-Forwarded-* and
//! `Forwarded` added, a client's own values replaced unless `--trust-forwarded` covers it, and
//! bad heads answered (400, 431) or timed out without touching the app or other clients.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::*;

const REJECTED: &str = "wss_sidecar_connections_rejected_total";

/// The value of header `name` the app saw, if exactly one.
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

/// A WebSocket through the proxy carrying the given extra request headers; asserts it echoes.
async fn ws_with_headers(served: &Served, extra: &[(&'static str, &str)]) -> u16 {
    let url = format!("wss://{APP_NAME}:{}/ws", served.proxy.addr.port());
    let mut request = url.into_client_request().unwrap();
    for (name, value) in extra {
        request.headers_mut().append(*name, value.parse().unwrap());
    }
    let mut ws = ws_connect_with(served.proxy.addr, APP_NAME, served.client.clone(), request)
        .await
        .expect("upgrade through --forwarded-headers");
    assert_echo(&mut ws, Message::text("hello through the rewritten head")).await;
    ws.get_ref().get_ref().0.local_addr().unwrap().port()
}

#[tokio::test]
async fn the_app_sees_who_the_client_is_and_the_echo_still_works() {
    let echo = EchoServer::start_tcp().await;
    let served = Served::start(&echo.addr().to_string(), &["--forwarded-headers"]).await;
    let client_port = ws_with_headers(&served, &[]).await;
    let port = served.proxy.addr.port();
    let authority = format!("{APP_NAME}:{port}");
    assert_eq!(
        header(&echo, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(header(&echo, "x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(header(&echo, "x-forwarded-host"), Some(authority.clone()));
    assert_eq!(header(&echo, "x-forwarded-port"), Some(port.to_string()));
    assert_eq!(
        header(&echo, "forwarded"),
        Some(format!(
            "for=\"127.0.0.1:{client_port}\";proto=https;host=\"{authority}\""
        ))
    );
}

#[tokio::test]
async fn spoofed_values_from_an_untrusted_client_are_replaced() {
    let echo = EchoServer::start_tcp().await;
    let served = Served::start(&echo.addr().to_string(), &["--forwarded-headers"]).await;
    ws_with_headers(
        &served,
        &[
            ("X-Forwarded-For", "6.6.6.6"),
            ("Forwarded", "for=6.6.6.6"),
            ("X-Forwarded-Proto", "http"),
            ("X-Client-Cert-Subject", "CN=admin"),
        ],
    )
    .await;
    assert_eq!(
        header(&echo, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(header(&echo, "x-forwarded-proto").as_deref(), Some("https"));
    let forwarded = header(&echo, "forwarded").unwrap();
    assert!(forwarded.starts_with("for=\"127.0.0.1:"), "{forwarded}");
    assert_eq!(header(&echo, "x-client-cert-subject"), None);
}

#[tokio::test]
async fn a_trusted_client_is_appended_to() {
    let echo = EchoServer::start_tcp().await;
    let served = Served::start(
        &echo.addr().to_string(),
        &[
            "--forwarded-headers",
            "--trust-forwarded",
            "10.0.0.0/8,127.0.0.0/8",
        ],
    )
    .await;
    ws_with_headers(
        &served,
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("Forwarded", "for=203.0.113.9"),
        ],
    )
    .await;
    assert_eq!(
        header(&echo, "x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    let forwarded = header(&echo, "forwarded").unwrap();
    assert!(
        forwarded.starts_with("for=203.0.113.9, for=\"127.0.0.1:"),
        "{forwarded}"
    );
}

#[tokio::test]
async fn only_the_first_request_of_a_keep_alive_connection_is_rewritten() {
    let (upstream_addr, mut accepted) = raw_upstream_tcp().await;
    let served = Served::start(&upstream_addr.to_string(), &["--forwarded-headers"]).await;
    let mut tls = served.tls().await.unwrap();
    tls.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut upstream = accepted.recv().await.unwrap();
    let first = read_until(&mut upstream, |b| b.ends_with(b"\r\n\r\n")).await;
    assert!(String::from_utf8_lossy(&first).contains("X-Forwarded-For: 127.0.0.1\r\n"));
    let second: &[u8] = b"GET /b HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
    tls.write_all(second).await.unwrap();
    let got = read_until(&mut upstream, |b| b.ends_with(b"\r\n\r\n")).await;
    assert_eq!(got, second, "later requests pass unchanged");
}

/// Sends `bytes` on a fresh TLS connection and returns everything the proxy answers until it
/// closes.
async fn answer_to(served: &Served, bytes: &[u8]) -> String {
    let mut tls = served.tls().await.unwrap();
    tls.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(IO_TIMEOUT, tls.read_to_end(&mut answer))
        .await
        .expect("the proxy closes after answering");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn malformed_and_oversized_heads_are_answered_without_reaching_the_app() {
    let echo = EchoServer::start_tcp().await;
    let served = Served::start(
        &echo.addr().to_string(),
        &["--forwarded-headers", "--max-request-head", "1024"],
    )
    .await;
    let answer = answer_to(&served, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let answer = answer_to(&served, b"\x00\x01binary\n").await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");

    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    while big.len() < 2000 {
        big.extend_from_slice(b"X-Padding: 0123456789abcdef\r\n");
    }
    let answer = answer_to(&served, &big).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

    let proxy = &served.proxy;
    proxy
        .wait_for_metric(REJECTED, &[("reason", "malformed_head")], 2.0)
        .await;
    proxy
        .wait_for_metric(REJECTED, &[("reason", "head_too_large")], 1.0)
        .await;
    assert_eq!(
        echo.connections_accepted(),
        0,
        "a bad head never reaches the app"
    );
}

#[tokio::test]
async fn a_head_that_never_finishes_is_closed_at_the_timeout_and_others_carry_on() {
    let echo = EchoServer::start_tcp().await;
    let served = Served::start(
        &echo.addr().to_string(),
        &["--forwarded-headers", "--request-head-timeout", "700ms"],
    )
    .await;
    let mut slow = served.tls().await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: app.test\r\n")
        .await
        .unwrap();

    // Meanwhile another client is served normally.
    ws_with_headers(&served, &[]).await;
    assert_eq!(echo.connections_accepted(), 1);

    let mut rest = Vec::new();
    let ended = tokio::time::timeout(IO_TIMEOUT, slow.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the slow client was never closed");
    assert!(rest.is_empty(), "no answer on a timeout: {rest:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "closed after {:?}, before the timeout",
        started.elapsed()
    );
    served
        .proxy
        .wait_for_metric(REJECTED, &[("reason", "head_timeout")], 1.0)
        .await;
    assert_eq!(
        echo.connections_accepted(),
        1,
        "the slow head never reached the app"
    );
}

#[tokio::test]
async fn an_ipv6_client_is_bracketed_and_quoted_in_forwarded() {
    let echo = EchoServer::start_tcp().await;
    let served = Served::start_on(
        "[::1]:0",
        &echo.addr().to_string(),
        &["--forwarded-headers"],
    )
    .await;
    let mut ws = served.ws().await.unwrap();
    assert_echo(&mut ws, Message::text("over IPv6")).await;
    let client_port = ws.get_ref().get_ref().0.local_addr().unwrap().port();
    assert_eq!(header(&echo, "x-forwarded-for").as_deref(), Some("::1"));
    let forwarded = header(&echo, "forwarded").unwrap();
    assert!(
        forwarded.starts_with(&format!("for=\"[::1]:{client_port}\";proto=https;")),
        "{forwarded}"
    );
}
