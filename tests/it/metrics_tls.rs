//! The per-connection histograms (TLS handshake, upstream connect, connection lifetime) and
//! the count of completed handshakes by version, cipher suite and key exchange group
//! (X25519MLKEM768 included) move as real rustls clients connect.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const NAME: &str = "app.test";
const HANDSHAKES: &str = "wss_sidecar_handshakes_total";
const HANDSHAKE_FAILURES: &str = "wss_sidecar_handshake_failures_total";
const HANDSHAKE_SECONDS: &str = "wss_sidecar_handshake_duration_seconds";
const CONNECT_SECONDS: &str = "wss_sidecar_upstream_connect_duration_seconds";
const LIFETIME_SECONDS: &str = "wss_sidecar_connection_duration_seconds";

/// An echo app, and a proxy in front of it.
async fn serve() -> (EchoServer, Served) {
    let app = EchoServer::start_tcp().await;
    let served = Served::start(&app.addr().to_string(), &[]).await;
    (app, served)
}

/// The labels of one completed handshake as the server should report them, read from what
/// the client negotiated.
fn negotiated(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> [(&'static str, String); 3] {
    let conn = tls.get_ref().1;
    let name = |n: Option<&'static str>| n.expect("a known name").to_string();
    [
        (
            "version",
            name(conn.protocol_version().and_then(|v| v.as_str())),
        ),
        (
            "cipher_suite",
            name(
                conn.negotiated_cipher_suite()
                    .and_then(|s| s.suite().as_str()),
            ),
        ),
        (
            "group",
            name(
                conn.negotiated_key_exchange_group()
                    .and_then(|g| g.name().as_str()),
            ),
        ),
    ]
}

fn labels<'a>(pairs: &'a [(&'static str, String); 3]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A client trusting `served`'s CA that can only negotiate `version`, `group` and cipher
/// suites whose name contains `suite`.
fn client_negotiating(
    served: &Served,
    version: &'static rustls::SupportedProtocolVersion,
    group: &'static dyn rustls::crypto::SupportedKxGroup,
    suite: &str,
) -> Arc<rustls::ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![group];
    provider
        .cipher_suites
        .retain(|s| s.suite().as_str().is_some_and(|n| n.contains(suite)));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(served.ca.cert_der()).expect("the test CA");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .expect("aws-lc-rs has the version")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn timings_and_the_negotiated_tls_follow_a_websocket() {
    let (_app, s) = serve().await;
    let proxy = &s.proxy;
    let before = proxy.metrics().await;
    for histogram in [HANDSHAKE_SECONDS, CONNECT_SECONDS, LIFETIME_SECONDS] {
        assert!(
            before.buckets(histogram).iter().all(|(_, n)| *n == 0.0),
            "{histogram} before any connection"
        );
    }
    assert!(
        !before.scrape.samples.iter().any(|s| s.metric == HANDSHAKES),
        "no handshake counted before any connection"
    );

    // Post-quantum hybrid key exchange, the default of rustls' aws-lc-rs provider.
    let pq = client_negotiating(
        &s,
        &rustls::version::TLS13,
        rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768,
        "TLS13_",
    );
    let opened = std::time::Instant::now();
    let mut ws = ws_connect(proxy.addr, NAME, pq).await.expect("websocket");
    assert_echo(&mut ws, Message::binary(vec![7u8; 10_000])).await;
    let open = proxy.metrics().await;
    assert_eq!(open.value(&format!("{HANDSHAKE_SECONDS}_count"), &[]), 1.0);
    assert_eq!(open.value(&format!("{CONNECT_SECONDS}_count"), &[]), 1.0);
    assert_eq!(
        open.value(&format!("{LIFETIME_SECONDS}_count"), &[]),
        0.0,
        "the lifetime is observed when the connection ends"
    );
    let handshake = open.value(&format!("{HANDSHAKE_SECONDS}_sum"), &[]);
    assert!(
        handshake > 0.0 && handshake < opened.elapsed().as_secs_f64(),
        "the handshake took {handshake} s, within the {:?} the client has been connected",
        opened.elapsed()
    );
    // A loopback connect to the app: well inside the lowest buckets' range, counted once.
    let connect = open.buckets(CONNECT_SECONDS);
    assert_eq!(connect.last().map(|b| b.1), Some(1.0));
    assert!(
        connect.iter().any(|(le, n)| *le <= 0.1 && *n == 1.0),
        "a loopback connect under 100 ms: {connect:?}"
    );
    let expected = [
        ("version", "TLSv1_3"),
        ("group", "X25519MLKEM768"),
        (
            "cipher_suite",
            ws.get_ref()
                .get_ref()
                .1
                .negotiated_cipher_suite()
                .and_then(|c| c.suite().as_str())
                .expect("a suite"),
        ),
    ];
    assert_eq!(open.value(HANDSHAKES, &expected), 1.0, "{expected:?}");

    ws.close(None).await.expect("send close");
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    let held = opened.elapsed().as_secs_f64();
    proxy
        .wait_for_metric(&format!("{LIFETIME_SECONDS}_count"), &[], 1.0)
        .await;
    let closed = proxy.metrics().await;
    let lifetime = closed.value(&format!("{LIFETIME_SECONDS}_sum"), &[]);
    assert!(
        lifetime >= handshake && lifetime <= held + 1.0,
        "lifetime {lifetime} s: at least the handshake ({handshake} s), about the {held} s the client held it"
    );
    assert_eq!(
        closed.buckets(LIFETIME_SECONDS).last().map(|b| b.1),
        Some(1.0)
    );
}

#[tokio::test]
async fn handshakes_are_counted_by_version_cipher_suite_and_group() {
    let (_app, s) = serve().await;
    let proxy = &s.proxy;
    use rustls::crypto::aws_lc_rs::kx_group;
    let clients = [
        (&rustls::version::TLS12, kx_group::X25519, "AES_128_GCM"),
        (
            &rustls::version::TLS13,
            kx_group::SECP256R1,
            "TLS13_AES_256_GCM",
        ),
        (
            &rustls::version::TLS13,
            kx_group::X25519MLKEM768,
            "TLS13_CHACHA20",
        ),
    ];
    let mut seen = Vec::new();
    for (version, group, suite) in clients {
        let config = client_negotiating(&s, version, group, suite);
        let tls = tls_connect(proxy.addr, NAME, config)
            .await
            .unwrap_or_else(|e| panic!("handshake with {suite}: {e}"));
        let got = negotiated(&tls);
        assert!(got[1].1.contains(suite), "{got:?}");
        seen.push(got);
    }
    assert_eq!(seen[0][0].1, "TLSv1_2");
    assert!(seen[0][1].1.starts_with("TLS_ECDHE_"), "{:?}", seen[0]);
    assert_eq!(seen[0][2].1, "X25519");
    assert_eq!(seen[1][2].1, "secp256r1");
    assert_eq!(seen[2][2].1, "X25519MLKEM768");
    for labels in seen.iter().map(labels) {
        proxy.wait_for_metric(HANDSHAKES, &labels, 1.0).await;
    }
    // A failed handshake is not a completed one.
    let stranger = TestCa::new("someone else's CA");
    let config = client_config(&[stranger.cert_der()], &[b"http/1.1"]);
    tls_connect(proxy.addr, NAME, config)
        .await
        .expect_err("an untrusting client");
    proxy
        .wait_for_metric(HANDSHAKE_FAILURES, &[("reason", "tls")], 1.0)
        .await;
    let m = proxy.metrics().await;
    let total: f64 = m
        .scrape
        .samples
        .iter()
        .filter(|s| s.metric == HANDSHAKES)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{HANDSHAKES} is a counter"),
        })
        .sum();
    assert_eq!(total, 3.0, "three completed handshakes, three label sets");
    assert_eq!(m.value(&format!("{HANDSHAKE_SECONDS}_count"), &[]), 3.0);
}
