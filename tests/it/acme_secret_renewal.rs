//! A renewal through the Secret store: the new certificate is served under a live WebSocket,
//! the store Secret holds it, and the pod gets a `CertificateRenewed` event.

use tokio_tungstenite::tungstenite::Message;

use crate::support::acme::{
    ALWAYS_RENEW, EVENTS, IPS, ISSUE_TIMEOUT, NAMES, SecretStoreCluster, wait_for_new_leaf,
    wait_ready,
};
use crate::support::*;

#[tokio::test]
async fn a_renewal_is_served_under_a_live_websocket_and_reported_as_an_event() {
    let cluster = SecretStoreCluster::start().await;
    // One replica, answering for every name.
    for name in &NAMES[1..] {
        cluster.pebble.set_a(name, IPS[0]).await;
    }
    let replica = cluster
        .replica(0, &["--acme-renew-before", ALWAYS_RENEW])
        .await;
    wait_ready(&replica).await;
    let roots = cluster.pebble.issuer_roots().await;
    let config = client_config(&roots, &[b"http/1.1"]);
    let mut ws = ws_connect(replica.addr, NAMES[0], config.clone())
        .await
        .expect("websocket");
    let first = peer_leaf(ws.get_ref());
    assert_echo(&mut ws, Message::text("before the renewal")).await;

    wait_for_new_leaf(replica.addr, NAMES[0], &config, &first).await;
    assert_echo(&mut ws, Message::text("after the renewal")).await;
    let reasons = |api: &crate::support::fake_api::FakeApi| -> Vec<String> {
        api.list(EVENTS)
            .iter()
            .filter(|e| e["regarding"]["name"] == "chat-0")
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    };
    wait_until("a CertificateRenewed event", ISSUE_TIMEOUT, || async {
        reasons(&cluster.api)
            .iter()
            .any(|r| r == "CertificateRenewed")
    })
    .await;
    assert!(
        reasons(&cluster.api)
            .iter()
            .any(|r| r == "CertificateObtained")
    );
    assert_eq!(cluster.api.denied(), Vec::new());
}
