//! SNI selection among several `--cert-dir`s (acceptance 4): exact names, one-label wildcards,
//! case-insensitive matching, and the first directory as the fallback for unknown or absent SNI.

use std::net::SocketAddr;
use std::sync::Arc;

use tempfile::TempDir;

use crate::support::*;

/// Certificate directories, one pair each, and a proxy serving them in the given order.
struct ServedDirs {
    proxy: TestProxy,
    _dirs: Vec<TempDir>,
    _app: EchoServer,
}

async fn serve(pairs: &[&TestPair]) -> ServedDirs {
    let app = EchoServer::start_tcp().await;
    let upstream = app.addr().to_string();
    let dirs: Vec<TempDir> = pairs
        .iter()
        .map(|pair| {
            let dir = tempfile::tempdir().expect("tempdir");
            write_plain_pair(dir.path(), pair);
            dir
        })
        .collect();
    let mut args = vec!["--upstream".to_string(), upstream];
    for dir in &dirs {
        args.push("--cert-dir".to_string());
        args.push(dir.path().to_str().expect("utf-8 path").to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = TestProxy::start(&args).await;
    ServedDirs {
        proxy,
        _dirs: dirs,
        _app: app,
    }
}

/// Handshakes with `server_name` as SNI (an IP literal sends none) and asserts that `want`'s
/// leaf is presented.
async fn assert_selects(addr: SocketAddr, server_name: &str, want: &TestPair, want_label: &str) {
    // The client takes any certificate, so it sees which one the fallback picked even when
    // it does not cover the name asked for.
    let tls = tls_connect(addr, server_name, any_certificate_config())
        .await
        .unwrap_or_else(|e| panic!("handshake as {server_name:?}: {e}"));
    let leaf = peer_leaf(&tls);
    assert!(
        leaf == want.leaf_der,
        "SNI {server_name:?} was presented {:?}, expected {want_label} {:?}",
        leaf_names(&leaf),
        leaf_names(&want.leaf_der)
    );
}

#[tokio::test]
async fn sni_selects_the_matching_directory_and_unknown_names_get_the_first() {
    let ca = TestCa::new("sni CA");
    let a = ca.issue(LeafSpec::new(&["a.test"]));
    let b = ca.issue(LeafSpec::new(&["b.test"]));

    let ab = serve(&[&a, &b]).await;
    let addr = ab.proxy.addr;
    assert_selects(addr, "a.test", &a, "A").await;
    assert_selects(addr, "b.test", &b, "B").await;
    assert_selects(addr, "unknown.test", &a, "the first (A)").await;
    assert_selects(addr, "127.0.0.1", &a, "the first (A), no SNI").await;

    // A normal client trusting the CA completes a WebSocket to each name.
    let config = client_config(&[ca.cert_der()], &[b"http/1.1"]);
    for name in ["a.test", "b.test"] {
        let mut ws = ws_connect(addr, name, Arc::clone(&config))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_echo(&mut ws, tokio_tungstenite::tungstenite::Message::text(name)).await;
    }

    let ba = serve(&[&b, &a]).await;
    let addr = ba.proxy.addr;
    assert_selects(addr, "a.test", &a, "A").await;
    assert_selects(addr, "b.test", &b, "B").await;
    assert_selects(addr, "unknown.test", &b, "the first (B)").await;
    assert_selects(addr, "127.0.0.1", &b, "the first (B), no SNI").await;
}

#[tokio::test]
async fn sni_matching_ignores_case_in_the_request_and_in_the_certificate() {
    let ca = TestCa::new("case CA");
    let a = ca.issue(LeafSpec::new(&["a.test"]));
    // Names in a certificate may be written in any case.
    let upper = ca.issue(LeafSpec::new(&["Mixed.CASE.Test"]));
    let served = serve(&[&a, &upper]).await;
    let addr = served.proxy.addr;
    assert_selects(
        addr,
        "mixed.case.test",
        &upper,
        "the mixed-case certificate",
    )
    .await;
    assert_selects(
        addr,
        "MIXED.Case.TEST",
        &upper,
        "the mixed-case certificate",
    )
    .await;
    assert_selects(addr, "A.TEST", &a, "A").await;
}

#[tokio::test]
async fn a_wildcard_covers_exactly_one_label() {
    let ca = TestCa::new("wildcard CA");
    let a = ca.issue(LeafSpec::new(&["a.test"]));
    let wild = ca.issue(LeafSpec::new(&["*.wild.test"]));
    let exact = ca.issue(LeafSpec::new(&["exact.wild.test"]));
    let served = serve(&[&a, &wild, &exact]).await;
    let addr = served.proxy.addr;
    assert_selects(addr, "x.wild.test", &wild, "the wildcard").await;
    assert_selects(addr, "X.Wild.TEST", &wild, "the wildcard").await;
    assert_selects(addr, "wild.test", &a, "the first (not the wildcard)").await;
    assert_selects(addr, "a.b.wild.test", &a, "the first (not the wildcard)").await;
    // An exact name wins over a wildcard listed before it.
    assert_selects(addr, "exact.wild.test", &exact, "the exact name").await;

    // A client that checks names accepts what the wildcard serves.
    let config = client_config(&[ca.cert_der()], &[b"http/1.1"]);
    let tls = tls_connect(addr, "x.wild.test", config)
        .await
        .expect("a verifying client accepts the wildcard for x.wild.test");
    assert!(peer_leaf(&tls) == wild.leaf_der);
}
