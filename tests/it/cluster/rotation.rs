//! A mounted TLS Secret (`manifests/examples/sidecar-by-hand.yaml`) is updated: new handshakes
//! present the new certificate within the kubelet's volume refresh period plus 5 s, while a
//! WebSocket opened before keeps echoing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Message;

use crate::support::cluster::{Cluster, ws_connect_retrying};
use crate::support::{
    LeafSpec, TestCa, assert_echo, client_config, install_crypto_provider, peer_leaf, tls_connect,
};

/// What the test allows beyond the refresh period: the sidecar's reload after the kubelet's
/// atomic swap, and the poll below.
const SLACK: Duration = Duration::from_secs(5);

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: echo-by-hand
spec:
  type: LoadBalancer
  selector: { app: echo-by-hand }
  ports:
    - { name: wss, port: 443, targetPort: wss, protocol: TCP }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn an_updated_secret_is_served_within_the_refresh_period_and_open_websockets_stay() {
    install_crypto_provider();
    let cluster = Cluster::shared().await;
    let ns = cluster.namespace("rotation").await;
    let ca = TestCa::new("rotation test CA");
    let first = ca.issue(LeafSpec::new(&["echo.test"]));
    cluster.put_tls_secret(&ns.name, "echo-tls", &first).await;
    cluster
        .apply_file_in(&ns.name, "manifests/examples/sidecar-by-hand.yaml")
        .await;
    cluster.apply(&ns.name, SERVICE).await;
    cluster
        .wait_ready_pods(&ns.name, "app=echo-by-hand", 1)
        .await;
    let addr = SocketAddr::new(
        cluster.load_balancer_ip(&ns.name, "echo-by-hand").await,
        443,
    );
    let config = client_config(&[ca.cert_der()], &[]);
    let mut open =
        ws_connect_retrying(addr, "echo.test", config.clone(), Duration::from_secs(30)).await;
    assert_echo(&mut open, Message::text("before")).await;
    let served = tls_connect(addr, "echo.test", config.clone())
        .await
        .expect("handshake");
    assert_eq!(
        peer_leaf(&served),
        first.cert_chain_der()[0],
        "the first certificate"
    );

    let period = cluster.volume_refresh_period().await;
    let second = ca.issue(LeafSpec::new(&["echo.test"]));
    let updated = Instant::now();
    cluster.put_tls_secret(&ns.name, "echo-tls", &second).await;
    let new_leaf = second.cert_chain_der()[0].clone();
    loop {
        let stream = tls_connect(addr, "echo.test", config.clone()).await;
        if stream.is_ok_and(|s| peer_leaf(&s) == new_leaf) {
            break;
        }
        assert!(
            updated.elapsed() <= period + SLACK,
            "the new certificate was not served within the refresh period {period:?} + {SLACK:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "new certificate served {:?} after the update",
        updated.elapsed()
    );
    assert_echo(&mut open, Message::text("after the rotation")).await;
}
