//! A first end-to-end check: a WebSocket echo through the proxy with a directory certificate.

use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn echo_through_the_proxy() {
    let ca = TestCa::new("smoke CA");
    let pair = ca.issue(LeafSpec::new(&["app.test"]));
    let dir = tempfile::tempdir().unwrap();
    write_plain_pair(dir.path(), &pair);
    let app = EchoServer::start_tcp().await;
    let upstream = app.addr().to_string();
    let proxy = TestProxy::start(&[
        "--upstream",
        &upstream,
        "--cert-dir",
        dir.path().to_str().unwrap(),
    ])
    .await;
    let config = client_config(&[ca.cert_der()], &[b"http/1.1"]);
    let mut ws = ws_connect(proxy.addr, "app.test", config).await.unwrap();
    let reply = echo_once(&mut ws, Message::text("hello")).await;
    assert_eq!(reply, Message::text("hello"));
    drop(ws);
    let m = proxy.metrics().await;
    assert_eq!(m.value("wss_sidecar_connections_total", &[]), 1.0);
    proxy.shutdown().await.unwrap();
}
