//! A first end-to-end check: a WebSocket echo through the proxy with a directory certificate.

use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn echo_through_the_proxy() {
    let app = EchoServer::start_tcp().await;
    let served = Served::start(&app.addr().to_string(), &[]).await;
    let mut ws = served.ws().await.unwrap();
    let reply = echo_once(&mut ws, Message::text("hello")).await;
    assert_eq!(reply, Message::text("hello"));
    drop(ws);
    let m = served.proxy.metrics().await;
    assert_eq!(m.value("wss_sidecar_connections_total", &[]), 1.0);
    served.proxy.shutdown().await.unwrap();
}
