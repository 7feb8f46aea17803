//! Three sidecar processes sharing one ACME store (acceptance 4): one order between them, all
//! serve the result, and replicas that did not order answer the CA's validation.

use std::net::SocketAddr;

use std::time::Duration;

use tokio::net::TcpListener;
use wss_sidecar::acme::{AcmeStore, DirStore};

use crate::acme::{ISSUE_TIMEOUT, ORDERS, acme_args, echo_as};
use crate::support::pebble::{Pebble, PebbleOptions, free_addr};
use crate::support::proxy::Metrics;
use crate::support::*;

/// One name per replica; replica i listens on 127.0.0.(i+1) and the CA's DNS sends name i
/// there, so whichever replica orders, the other two must answer a validation each.
pub const NAMES: [&str; 3] = ["r1.acme.test", "r2.acme.test", "r3.acme.test"];
pub const IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];

/// A port free on all three loopback addresses.
pub async fn port_free_on_all() -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind((IPS[0], 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut others = Vec::new();
        for ip in &IPS[1..] {
            match TcpListener::bind((*ip, port)).await {
                Ok(listener) => others.push(listener),
                Err(_) => break,
            }
        }
        if others.len() == IPS.len() - 1 {
            return port;
        }
    }
    panic!("no port free on all of {IPS:?}");
}

pub async fn scrape(admin: SocketAddr) -> Metrics {
    let (status, body) = http_get(admin, "/metrics").await.expect("scrape");
    assert_eq!(status, 200);
    Metrics::parse(&body)
}

/// Pebble validating on a port free on all of [`IPS`], with name i resolving to address i;
/// returns it and the port.
pub async fn pebble_for_replicas() -> (Pebble, u16) {
    let port = port_free_on_all().await;
    let pebble = Pebble::start(PebbleOptions {
        tls_port: port,
        http_port: free_addr().await.port(),
        eab: None,
    })
    .await;
    for (name, ip) in NAMES.iter().zip(IPS) {
        pebble.add_a(name, ip).await;
    }
    (pebble, port)
}

/// Replica i logged answering the TLS-ALPN-01 validation of name i.
pub fn assert_each_answered_its_name(replicas: &[Sidecar]) {
    for (i, replica) in replicas.iter().enumerate() {
        let answered = replica
            .logs()
            .iter()
            .any(|l| l.contains("answering a tls-alpn-01 challenge") && l.contains(NAMES[i]));
        assert!(
            answered,
            "replica {i} answered the validation of {}",
            NAMES[i]
        );
    }
}

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
        let admin = replica.admin;
        wait_until("every replica is ready", ISSUE_TIMEOUT, || async move {
            http_get(admin, "/readyz")
                .await
                .is_ok_and(|(s, _)| s == 200)
        })
        .await;
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
