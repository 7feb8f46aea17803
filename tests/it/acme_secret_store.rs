//! `--acme-store secret:…`: three sidecar processes sharing one ACME Secret and its Lease
//! through the in-process API server, ordering from the real Pebble. One Lease holder and one
//! order, every replica serves the certificate and answers validation (acceptance 2); a leader
//! killed mid-order is replaced once its Lease expires, and the order is resumed (acceptance 3);
//! the wake-up after a `410 Gone` re-list (acceptance 5); a failure reported as an Event, its
//! back-off kept in the Secret across a restart; store objects not made beforehand named in the
//! log and `/readyz` and never created (issue 15). The API server enforces the example
//! Role (`manifests/examples/sidecar-rbac.yaml`) throughout: the sidecar needs nothing more.

use std::time::Duration;

use base64::Engine;
use hyper::Method;
use serde_json::Value;

use crate::support::acme::{
    ACCOUNT_SECRET, EVENTS, IPS, ISSUE_TIMEOUT, LEASE, NAMES, NS, ORDERS, SECRET, STORE,
    SecretStoreCluster, assert_each_answered_its_name, echo_as, scrape, seed_acme_store,
    wait_ready,
};
use crate::support::fake_api::{FakeApi, example_role};
use crate::support::pebble::free_addr;
use crate::support::*;

/// The pending challenges a write to the store Secret carries (a merge patch or a create).
fn challenges_written(body: &Value) -> usize {
    let Some(encoded) = body["data"]["acme-challenges.json"].as_str() else {
        return 0;
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_default();
    serde_json::from_slice::<Vec<Value>>(&decoded).map_or(0, |v| v.len())
}

fn holder_of(replica: &Sidecar) -> String {
    format!("-{}-", replica.child.id().expect("running"))
}

#[tokio::test]
async fn three_replicas_one_lease_holder_one_order_and_every_replica_answers() {
    let cluster = SecretStoreCluster::start().await;
    // Polling once an hour: everything the replicas learn from each other comes by the watch.
    let replicas = cluster.replicas("1h", "6s").await;

    // The replicas tried the Lease once and now wait for the store to change. Compacting the
    // history ends their watches; resuming gets 410 Gone, and the re-list is what wakes them.
    let store_list =
        |r: &String| r.starts_with("GET /api/v1/namespaces/team/secrets?") && r.contains(STORE);
    wait_until("every replica watches the store", WAIT, || async {
        cluster
            .api
            .requests()
            .iter()
            .filter(|r| store_list(r) && r.contains("watch=true"))
            .count()
            >= replicas.len()
    })
    .await;
    let lists = |api: &FakeApi| {
        api.requests()
            .iter()
            .filter(|r| store_list(r) && !r.contains("watch=true"))
            .count()
    };
    let lists_before = lists(&cluster.api);
    cluster.api.compact();
    for replica in &replicas {
        wait_ready(replica).await;
    }
    // The orderer may be ready before its own re-list (kube's watcher backs off first).
    wait_until("each replica lists again after 410 Gone", WAIT, || async {
        lists(&cluster.api) >= lists_before + replicas.len()
    })
    .await;

    assert_eq!(cluster.orders_placed(), 1, "one order at the CA");
    let mut successes = 0.0;
    for replica in &replicas {
        let metrics = scrape(replica.admin).await;
        successes += metrics.value(ORDERS, &[("result", "success")]);
        assert_eq!(metrics.value(ORDERS, &[("result", "failure")]), 0.0);
    }
    assert_eq!(successes, 1.0);
    let holders = cluster.lease_holders();
    assert_eq!(holders.len(), 1, "one Lease holder: {holders:?}");
    let holder = holders.first().unwrap();
    let leader = replicas
        .iter()
        .position(|r| holder.contains(&holder_of(r)))
        .expect("the holder is one of the replicas");

    let all: Vec<(usize, &Sidecar)> = replicas.iter().enumerate().collect();
    cluster.assert_all_serve(&all).await;
    // Each name was validated at its own replica: the two that did not order answered too.
    assert_each_answered_its_name(&replicas);

    // The store is an ordinary TLS Secret holding the served pair.
    let secret = cluster.api.get(SECRET).expect("the store Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(cluster.api.unconditional_writes_to(SECRET), 0);
    // The leader's pod got a CertificateObtained event.
    wait_until("a CertificateObtained event", WAIT, || async {
        cluster.api.list(EVENTS).iter().any(|e| {
            e["reason"] == "CertificateObtained"
                && e["regarding"]["name"] == format!("chat-{leader}").as_str()
        })
    })
    .await;
    // No order pending now: strangers' `acme-tls/1` hellos for our names cost no API reads
    // (before issue 14, each missed hello could read the Secret, 10 a second per replica).
    let secret_gets = || cluster.api.requests_matching(&format!("GET {SECRET}"));
    let gets_before = secret_gets();
    let mut stranger = (*any_certificate_config()).clone();
    stranger.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let stranger = std::sync::Arc::new(stranger);
    for replica in &replicas {
        for name in NAMES {
            for _ in 0..5 {
                let _ = tls_connect(replica.addr, name, stranger.clone()).await;
            }
        }
    }
    assert_eq!(
        secret_gets(),
        gets_before,
        "acme-tls/1 hellos with no order pending read the store Secret"
    );

    // Everything was allowed by the example Role, and its store rules were all needed.
    assert_eq!(cluster.api.denied(), Vec::new());
    let unused = cluster.api.unused_rules();
    assert_eq!(
        unused,
        vec![0],
        "only the --cert-secret rule is unused here"
    );
}

#[tokio::test]
async fn a_leader_killed_mid_order_is_replaced_after_its_lease_and_the_order_is_resumed() {
    let cluster = SecretStoreCluster::start().await;
    // The leader dies while it publishes the challenge answers: hold that write unanswered.
    cluster
        .api
        .stall(Method::PATCH, SECRET, |body| challenges_written(body) > 0);
    let lease = Duration::from_secs(4);
    let mut replicas = cluster.replicas("500ms", "4s").await;
    wait_until(
        "the leader publishes its answers",
        ISSUE_TIMEOUT,
        || async { cluster.api.stalled() == 1 },
    )
    .await;
    let holders = cluster.lease_holders();
    assert_eq!(holders.len(), 1, "{holders:?}");
    let dead_holder = holders.first().unwrap().clone();
    let dead = replicas
        .iter()
        .position(|r| dead_holder.contains(&holder_of(r)))
        .expect("the holder is a replica");
    replicas[dead].child.start_kill().unwrap();
    let _ = replicas[dead].child.wait().await;
    cluster.api.release_stalled();
    // As a Service would, the dead pod's name now reaches a live replica.
    let live: Vec<usize> = (0..IPS.len()).filter(|i| *i != dead).collect();
    cluster.pebble.set_a(NAMES[dead], IPS[live[0]]).await;

    for i in &live {
        wait_ready(&replicas[*i]).await;
    }
    let placed = cluster.orders_placed();
    assert!(placed <= 2, "at most one extra order: {placed}");
    assert_eq!(
        placed, 1,
        "the dead leader's order was resumed, not replaced"
    );

    // The new holder took the Lease only once the dead one's had expired.
    let history = cluster.api.history(LEASE);
    let renewed = |l: &Value| {
        let at = l["spec"]["renewTime"].as_str().expect("renewTime");
        humantime::parse_rfc3339(at).expect("RFC 3339")
    };
    let holder = |l: &Value| l["spec"]["holderIdentity"].as_str().map(str::to_string);
    let taken = history
        .iter()
        .position(|l| holder(l).is_some_and(|h| h != dead_holder))
        .expect("another replica took the Lease");
    let last_renewal = renewed(&history[taken - 1]);
    assert_eq!(holder(&history[taken - 1]).as_deref(), Some(&*dead_holder));
    let gap = renewed(&history[taken])
        .duration_since(last_renewal)
        .unwrap_or_default();
    assert!(gap >= lease, "taken over {gap:?} after the last renewal");
    let new_holder = holder(&history[taken]).unwrap();
    let successor = live
        .iter()
        .find(|i| new_holder.contains(&holder_of(&replicas[**i])))
        .expect("the new holder is a live replica");
    assert!(
        replicas[*successor]
            .logs()
            .iter()
            .any(|l| l.contains("resuming the order placed earlier")),
        "the successor resumed the order"
    );

    let serving: Vec<(usize, &Sidecar)> = live.iter().map(|i| (*i, &replicas[*i])).collect();
    cluster.assert_all_serve(&serving).await;
    let dead_name = (live[0], &replicas[live[0]]);
    let leaf = echo_as(&cluster.pebble, dead_name.1.addr, NAMES[dead]).await;
    assert!(leaf_names(&leaf).contains(&NAMES[dead].to_string()));
    assert_eq!(cluster.api.denied(), Vec::new());
}

/// Bound for waits whose duration is not itself under test.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_failed_order_is_an_event_and_its_back_off_outlives_a_restart() {
    let api = FakeApi::start().await;
    let (namespace, rules) = example_role();
    api.enforce_role(&namespace, rules);
    seed_acme_store(&api, NS, STORE);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path(), NS);
    // A CA that cannot be reached.
    let directory = format!("https://{}/dir", free_addr().await);
    let store = format!("secret:{STORE}");
    let args = [
        "--acme-domain",
        NAMES[0],
        "--acme-directory",
        &directory,
        "--acme-store",
        &store,
        "--acme-backoff-base",
        "1h",
    ];
    let env = [
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("POD_NAME", "chat-0"),
        ("POD_NAMESPACE", NS),
    ];
    let stored_failures = || {
        let secret = api.get(SECRET)?;
        let state = secret["data"]["acme-state.json"].as_str()?;
        let state = base64::engine::general_purpose::STANDARD
            .decode(state)
            .ok()?;
        let state: Value = serde_json::from_slice(&state).ok()?;
        Some((state["failures"].as_u64()?, state["next_attempt"].as_i64()?))
    };

    let first = Sidecar::spawn_with_env("127.0.0.1:0", &args, &env).await;
    wait_until("the failure is kept in the Secret", WAIT, || async {
        stored_failures().is_some()
    })
    .await;
    let (failures, next_attempt) = stored_failures().unwrap();
    assert_eq!(failures, 1);
    wait_until("an AcmeOrderFailed event on the pod", WAIT, || async {
        api.list(EVENTS)
            .iter()
            .any(|e| e["reason"] == "AcmeOrderFailed" && e["regarding"]["name"] == "chat-0")
    })
    .await;
    drop(first);

    // A crash loop must not become an order loop: the next pod reads the back-off and waits.
    let restarted = Sidecar::spawn_with_env("127.0.0.1:0", &args, &env).await;
    let next_renewal = "wss_sidecar_acme_next_renewal_timestamp_seconds";
    wait_until("the restart reads the stored back-off", WAIT, || async {
        let metrics = scrape(restarted.admin).await;
        metrics.value(next_renewal, &[]) == next_attempt as f64
    })
    .await;
    let metrics = scrape(restarted.admin).await;
    assert_eq!(metrics.value(ORDERS, &[]), 0.0, "no order before it ends");
    assert_eq!(
        metrics.value("wss_sidecar_acme_consecutive_failures", &[]),
        1.0
    );
    assert_eq!(http_get(restarted.admin, "/readyz").await.unwrap().0, 503);
    assert_eq!(api.denied(), Vec::new());
}

/// Under the example Role (no create), a store whose objects were not made beforehand: the
/// sidecar never tries to create them, says which one is missing and how to make it, in its
/// log and in `/readyz`, and once they exist it orders without a restart.
#[tokio::test]
async fn missing_store_objects_are_named_never_created_and_picked_up_once_made() {
    let cluster = SecretStoreCluster::start().await;
    for path in [SECRET, ACCOUNT_SECRET, LEASE] {
        cluster.api.delete(path);
    }
    for name in &NAMES[1..] {
        cluster.pebble.set_a(name, IPS[0]).await;
    }
    let replica = cluster.replica(0, &["--acme-poll-interval", "200ms"]).await;
    let missing = "Secret team/chat-acme does not exist";
    wait_until("the log names the missing Secret", WAIT, || async {
        replica.logs().iter().any(|l| {
            l.contains(missing)
                && l.contains(
                    "kubectl -n team create secret generic chat-acme --type=kubernetes.io/tls",
                )
        })
    })
    .await;
    let (status, body) = http_get(replica.admin, "/readyz").await.unwrap();
    assert_eq!(status, 503);
    assert!(
        body.contains("ACME store's Secret or Lease does not exist"),
        "{body}"
    );

    // The store Secret alone: the account Secret, then the Lease, are named next.
    crate::support::acme::seed_acme_store(&cluster.api, NS, STORE);
    cluster.api.delete(ACCOUNT_SECRET);
    cluster.api.delete(LEASE);
    wait_until("the log names the missing Lease", WAIT, || async {
        replica
            .logs()
            .iter()
            .any(|l| l.contains("Lease team/chat-acme does not exist"))
    })
    .await;
    assert_eq!(cluster.orders_placed(), 0);
    seed_acme_store(&cluster.api, NS, STORE);
    cluster.api.delete(ACCOUNT_SECRET);
    wait_until("the log names the missing account Secret", WAIT, || async {
        replica
            .logs()
            .iter()
            .any(|l| l.contains("Secret team/chat-acme-account does not exist"))
    })
    .await;
    assert_eq!(
        cluster.orders_placed(),
        0,
        "no order without the account Secret"
    );
    assert_eq!(
        scrape(replica.admin)
            .await
            .value("wss_sidecar_acme_consecutive_failures", &[]),
        0.0,
        "a missing object is no failed order: no back-off"
    );

    seed_acme_store(&cluster.api, NS, STORE);
    wait_ready(&replica).await;
    assert_eq!(cluster.orders_placed(), 1);
    let creates = cluster
        .api
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST ") && !r.contains("/events"))
        .count();
    assert_eq!(
        creates,
        0,
        "no create but of Events: {:?}",
        cluster.api.requests()
    );
    assert_eq!(cluster.api.denied(), Vec::new(), "nothing was refused");
}
