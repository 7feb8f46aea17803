//! ACME renewal and failure against the real Pebble: a forced renewal swaps the certificate
//! under a live WebSocket (acceptance 5); with Pebble down the sidecar keeps serving, backs
//! off with growing delays and recovers, and with an empty store stays unready saying why (6).

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::support::acme::{
    ALWAYS_RENEW, ISSUE_TIMEOUT, NAMES, ORDERS, acme_args, echo_as, wait_for_new_leaf, wait_issued,
};
use crate::support::pebble::{Pebble, PebbleOptions, free_addr};
use crate::support::*;

/// A proxy ordering from a fresh Pebble with `extra` flags, ready with its first certificate.
async fn issued_proxy(extra: &[&str]) -> (Pebble, TestProxy, EchoServer, tempfile::TempDir) {
    let app = EchoServer::start_tcp().await;
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pebble = Pebble::start(PebbleOptions {
        tls_port: tls.local_addr().unwrap().port(),
        http_port: free_addr().await.port(),
        eab: None,
    })
    .await;
    let store = tempfile::tempdir().unwrap();
    let mut args = vec!["--upstream".to_string(), app.addr().to_string()];
    args.extend(acme_args(&pebble, &store, &NAMES, extra));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = TestProxy::start_unready_on(tls, None, &args).await;
    wait_issued(&proxy).await;
    (pebble, proxy, app, store)
}

#[tokio::test]
async fn a_forced_renewal_swaps_the_certificate_under_a_live_websocket() {
    let (pebble, proxy, _app, _store) = issued_proxy(&["--acme-renew-before", ALWAYS_RENEW]).await;
    let roots = pebble.issuer_roots().await;
    let config = client_config(&roots, &[b"http/1.1"]);
    let mut ws = ws_connect(proxy.addr, NAMES[0], config.clone())
        .await
        .expect("websocket");
    let first = peer_leaf(ws.get_ref());
    assert_echo(&mut ws, Message::text("before renewal")).await;

    wait_for_new_leaf(proxy.addr, NAMES[0], &config, &first).await;
    assert!(proxy.metric(ORDERS, &[("result", "success")]).await >= 2.0);
    // The connection opened before the swap is untouched.
    assert_echo(&mut ws, Message::text("after renewal")).await;
    echo_as(&pebble, proxy.addr, NAMES[1]).await;
}

#[tokio::test]
async fn with_pebble_down_it_keeps_serving_backs_off_and_recovers() {
    let extra = [
        "--acme-renew-before",
        ALWAYS_RENEW,
        "--acme-backoff-base",
        "1s",
    ];
    let (mut pebble, proxy, _app, _store) = issued_proxy(&extra).await;
    let roots = pebble.issuer_roots().await;
    let config = client_config(&roots, &[b"http/1.1"]);
    pebble.stop().await;

    let failures = "wss_sidecar_acme_consecutive_failures";
    let delay = "wss_sidecar_acme_retry_delay_seconds";
    proxy.wait_for_metric_at_least(failures, &[], 1.0).await;
    let first_delay = proxy.metric(delay, &[]).await;
    proxy.wait_for_metric_at_least(failures, &[], 2.0).await;
    let second_delay = proxy.metric(delay, &[]).await;
    assert_eq!(
        (first_delay, second_delay),
        (1.0, 10.0),
        "back-off grows 10x"
    );
    assert_eq!(
        proxy
            .metric("wss_sidecar_acme_last_error", &[("class", "network")])
            .await,
        1.0
    );

    // Still serving the certificate it has, and still ready.
    assert_eq!(proxy.admin_get("/readyz").await.0, 200);
    let mut ws = ws_connect(proxy.addr, NAMES[0], config)
        .await
        .expect("served during the outage");
    assert_echo(&mut ws, Message::text("still here")).await;

    pebble.restart().await;
    let failures_ref = failures;
    let proxy_ref = &proxy;
    wait_until(
        "the sidecar recovers once Pebble is back",
        ISSUE_TIMEOUT,
        || async move { proxy_ref.metric(failures_ref, &[]).await == 0.0 },
    )
    .await;
    assert_eq!(proxy.metric(delay, &[]).await, 0.0);
    // Issued by the restarted Pebble (a new root): only a fresh certificate passes this.
    echo_as(&pebble, proxy.addr, NAMES[1]).await;
}

#[tokio::test]
async fn with_an_empty_store_and_no_ca_it_stays_unready_and_says_why() {
    let store = tempfile::tempdir().unwrap();
    let directory = format!("https://{}/dir", free_addr().await);
    let sidecar = Sidecar::spawn(&[
        "--acme-domain",
        NAMES[0],
        "--acme-directory",
        &directory,
        "--acme-store",
        store.path().to_str().unwrap(),
    ])
    .await;
    wait_until("the failure is logged", Duration::from_secs(20), || async {
        sidecar.logs().iter().any(|l| {
            l.contains("ACME order failed; no certificate yet: not ready")
                && l.contains("\"error.class\":\"network\"")
        })
    })
    .await;
    let (status, body) = http_get(sidecar.admin, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no valid certificate"), "{body}");
    // Started all the same: the startup probe must never wait for a CA.
    let (status, body) = http_get(sidecar.admin, "/startupz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "started\n"));
}

#[tokio::test]
async fn a_restart_after_a_failure_waits_out_the_persisted_back_off() {
    let store = tempfile::tempdir().unwrap();
    let directory = format!("https://{}/dir", free_addr().await);
    let store_path = store.path().to_str().unwrap();
    let args = [
        "--acme-domain",
        NAMES[0],
        "--acme-directory",
        &directory,
        "--acme-store",
        store_path,
        "--acme-poll-interval",
        "100ms",
        "--acme-backoff-base",
        "1h",
    ];
    let next_renewal = "wss_sidecar_acme_next_renewal_timestamp_seconds";
    let later = |proxy: &TestProxy| {
        let proxy = proxy.admin;
        async move {
            let (_, body) = http_get(proxy, "/metrics").await.unwrap();
            let value = crate::support::proxy::Metrics::parse(&body).value(next_renewal, &[]);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            value > now + 3000.0
        }
    };
    let first = TestProxy::start_unready(&args).await;
    wait_until(
        "the first failure schedules a retry in an hour",
        ISSUE_TIMEOUT,
        || later(&first),
    )
    .await;
    assert_eq!(first.metric(ORDERS, &[("result", "failure")]).await, 1.0);
    first.shutdown().await.expect("clean shutdown");

    // A crash loop must not become an order loop: the restart reads the back-off and waits.
    let restarted = TestProxy::start_unready(&args).await;
    wait_until(
        "the restart reads the persisted back-off",
        ISSUE_TIMEOUT,
        || later(&restarted),
    )
    .await;
    assert_eq!(
        restarted.metric(ORDERS, &[]).await,
        0.0,
        "no order before the back-off ends"
    );
    assert_eq!(
        restarted
            .metric("wss_sidecar_acme_consecutive_failures", &[])
            .await,
        1.0
    );
    assert_eq!(restarted.admin_get("/readyz").await.0, 503);
}
