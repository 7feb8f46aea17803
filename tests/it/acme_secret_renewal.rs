//! A renewal through the Secret store: the new certificate is served under a live WebSocket,
//! the store Secret holds it, and the pod gets a `CertificateRenewed` event. A store written
//! before the account had its own Secret renews with the same account, moved.

use tokio_tungstenite::tungstenite::Message;

use serde_json::Value;

use crate::support::acme::{
    ACCOUNT_SECRET, ALWAYS_RENEW, EVENTS, IPS, ISSUE_TIMEOUT, NAMES, SECRET, SecretStoreCluster,
    wait_for_new_leaf, wait_ready,
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

/// What Pebble logs for each new account.
const NEW_ACCOUNT: &str = "POST /sign-me-up";

/// A store from before the split (the account in the store Secret, an empty account Secret):
/// the sidecar moves the account (account Secret written, key removed from the store) and
/// renews with it: Pebble sees no second account.
#[tokio::test]
async fn a_store_with_the_account_inside_is_migrated_and_renews_without_a_new_account() {
    let cluster = SecretStoreCluster::start().await;
    for name in &NAMES[1..] {
        cluster.pebble.set_a(name, IPS[0]).await;
    }
    let first = cluster.replica(0, &[]).await;
    wait_ready(&first).await;
    drop(first);
    assert_eq!(cluster.pebble.requests_logged(NEW_ACCOUNT), 1);
    let account = cluster.api.get(ACCOUNT_SECRET).expect("the account Secret");
    let credentials = account["data"]["acme-account.json"].clone();
    assert!(
        credentials.as_str().is_some_and(|c| !c.is_empty()),
        "{account}"
    );
    assert!(
        cluster.api.get(SECRET).unwrap()["data"]["acme-account.json"].is_null(),
        "the account is not in the store Secret"
    );

    // Back to the layout of an older sidecar.
    let mut legacy = cluster.api.get(SECRET).unwrap();
    legacy["data"]["acme-account.json"] = credentials.clone();
    cluster.api.seed(SECRET, legacy);
    let mut emptied = account.clone();
    emptied["data"] = serde_json::json!({});
    cluster.api.seed(ACCOUNT_SECRET, emptied);

    let replica = cluster
        .replica(0, &["--acme-renew-before", ALWAYS_RENEW])
        .await;
    wait_ready(&replica).await;
    let roots = cluster.pebble.issuer_roots().await;
    let config = client_config(&roots, &[b"http/1.1"]);
    let served = peer_leaf(
        &tls_connect(replica.addr, NAMES[0], config.clone())
            .await
            .expect("tls"),
    );
    wait_for_new_leaf(replica.addr, NAMES[0], &config, &served).await;
    assert_eq!(
        cluster.pebble.requests_logged(NEW_ACCOUNT),
        1,
        "renewed with the moved account, no new one"
    );
    let moved = cluster.api.get(ACCOUNT_SECRET).unwrap();
    assert_eq!(moved["data"]["acme-account.json"], credentials);
    let store: Value = cluster.api.get(SECRET).unwrap();
    assert!(
        store["data"]["acme-account.json"].is_null(),
        "the old key is removed: {}",
        store["data"]
    );
    assert_eq!(cluster.api.denied(), Vec::new());
}
