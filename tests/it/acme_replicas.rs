//! Three sidecar processes sharing one ACME store (acceptance 4): one order between them, all
//! serve the result, and replicas that did not order answer the CA's validation.

use std::time::Duration;

use wss_sidecar::acme::{AcmeStore, DirStore};

use crate::support::acme::{
    IPS, NAMES, ORDERS, acme_args, assert_each_answered_its_name, echo_as, pebble_for_replicas,
    scrape, wait_ready,
};
use crate::support::*;

#[tokio::test]
async fn three_replicas_sharing_a_store_order_once_and_all_answer_validation() {
    let app = EchoServer::start_tcp().await;
    let (pebble, port) = pebble_for_replicas().await;
    let store = tempfile::tempdir().unwrap();
    let mut args = vec!["--upstream".to_string(), app.addr().to_string()];
    args.extend(acme_args(&pebble, &store, &NAMES, &[]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // Hold the ordering lock until all three listen, so that no validation can reach a
    // replica that has not started yet; then let them race for it.
    let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    let shared = DirStore::open(store.path(), &pebble.directory, &names).unwrap();
    assert!(
        shared
            .try_lock("test", Duration::from_secs(60))
            .await
            .unwrap()
    );
    let mut replicas = Vec::new();
    for ip in IPS {
        replicas.push(Sidecar::spawn_listening(&format!("{ip}:{port}"), &args).await);
    }
    shared.unlock("test").await.unwrap();
    for replica in &replicas {
        wait_ready(replica).await;
    }

    let mut orders = Vec::new();
    for replica in &replicas {
        orders.push(
            scrape(replica.admin)
                .await
                .value(ORDERS, &[("result", "success")]),
        );
        let failed = scrape(replica.admin)
            .await
            .value(ORDERS, &[("result", "failure")]);
        assert_eq!(failed, 0.0, "no replica saw a failed order");
    }
    assert_eq!(
        orders.iter().sum::<f64>(),
        1.0,
        "exactly one order in all: {orders:?}"
    );

    let mut leaves = Vec::new();
    for (replica, name) in replicas.iter().zip(NAMES) {
        leaves.push(echo_as(&pebble, replica.addr, name).await);
    }
    assert!(
        leaves.iter().all(|l| *l == leaves[0]),
        "all replicas serve the issued certificate"
    );

    // Each name was validated at its own replica: the two that did not order answered too.
    assert_each_answered_its_name(&replicas);
}
