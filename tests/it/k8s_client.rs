//! The kube-backed Secret and Lease against the in-process API server: versioned writes (a
//! stale one is a conflict, never an overwrite), and a watch that survives a closed stream and
//! `410 Gone` without being restarted.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::json;
use wss_sidecar::k8s::client::{KubeLease, KubeSecret};
use wss_sidecar::k8s::{ApiError, LeaseApi, LeaseState, SecretApi, SecretData, SecretEvent};

use crate::support::fake_api::FakeApi;

const NS: &str = "team";
const SECRETS: &str = "/api/v1/namespaces/team/secrets";
const SECRET: &str = "/api/v1/namespaces/team/secrets/web-tls";

fn data(value: &str) -> SecretData {
    [("k".to_string(), value.as_bytes().to_vec())].into()
}

/// Someone else (kubectl, cert-manager) writing the Secret.
fn seed(api: &FakeApi, value: &str) {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
    api.seed(
        SECRET,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-tls", "namespace": NS},
               "type": "Opaque", "data": {"k": encoded}}),
    );
}

/// The next event that is not an interruption (those are expected while reconnecting).
async fn next_state(events: &mut BoxStream<'static, SecretEvent>) -> SecretEvent {
    let wait = async {
        loop {
            match events.next().await.expect("the watch never ends") {
                SecretEvent::Interrupted(_) => {}
                other => return other,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("a watch event within 10 s")
}

fn value_of(event: SecretEvent) -> String {
    match event {
        SecretEvent::Applied(v) => String::from_utf8(v.value["k"].clone()).unwrap(),
        other => panic!("expected the Secret, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stale_replace_is_a_conflict_and_nothing_is_overwritten() {
    let api = FakeApi::start().await;
    let secret = KubeSecret::new(api.client(), NS, "web-tls");
    assert_eq!(secret.get().await.unwrap(), None);
    let first = secret.create("Opaque", data("one")).await.unwrap();
    assert_eq!(
        secret.create("Opaque", data("again")).await,
        Err(ApiError::Conflict),
        "create of an existing Secret"
    );
    let second = secret
        .update(data("two"), &first.resource_version)
        .await
        .unwrap();
    assert_ne!(second.resource_version, first.resource_version);
    assert_eq!(
        secret.update(data("lost"), &first.resource_version).await,
        Err(ApiError::Conflict)
    );
    assert_eq!(secret.get().await.unwrap().unwrap().value, data("two"));
    assert_eq!(api.conflicts(SECRET), 1);
    assert_eq!(api.unconditional_writes(), 0);
    assert_eq!(secret.describe(), "team/web-tls");
}

#[tokio::test]
async fn an_update_keeps_the_type_the_other_keys_and_the_metadata() {
    use base64::Engine;
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let api = FakeApi::start().await;
    api.seed(
        SECRET,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "web-tls", "namespace": NS,
                            "labels": {"team": "chat"}, "annotations": {"note": "mine"}},
               "type": "kubernetes.io/tls",
               "data": {"tls.crt": b64("C"), "tls.key": b64("K"), "k": b64("old")}}),
    );
    let secret = KubeSecret::new(api.client(), NS, "web-tls");
    let current = secret.get().await.unwrap().unwrap();
    let updated = secret
        .update(data("new"), &current.resource_version)
        .await
        .unwrap();
    assert_eq!(updated.value["k"], b"new");
    assert_eq!(updated.value["tls.crt"], b"C", "keys not written are kept");
    let stored = api.get(SECRET).unwrap();
    assert_eq!(stored["type"], "kubernetes.io/tls");
    assert_eq!(stored["metadata"]["labels"]["team"], "chat");
    assert_eq!(stored["metadata"]["annotations"]["note"], "mine");
    assert_eq!(api.unconditional_writes_to(SECRET), 0);
}

#[tokio::test]
async fn forbidden_and_missing_are_told_apart() {
    let api = FakeApi::start().await;
    api.fail(hyper::Method::GET, SECRET, 403, None);
    let secret = KubeSecret::new(api.client(), NS, "web-tls");
    assert!(matches!(secret.get().await, Err(ApiError::Forbidden(_))));
    api.clear_faults();
    assert_eq!(secret.get().await.unwrap(), None);
    let missing = secret.update(data("x"), "1").await;
    assert!(matches!(missing, Err(ApiError::NotFound(_))), "{missing:?}");
}

#[tokio::test]
async fn the_watch_follows_changes_across_a_closed_stream_and_410_gone() {
    let api = FakeApi::start().await;
    seed(&api, "one");
    // Another Secret in the namespace must not show up.
    api.seed(
        &format!("{SECRETS}/other"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other"}, "data": {}}),
    );
    let secret = KubeSecret::new(api.client(), NS, "web-tls");
    let mut events = secret.watch();
    assert_eq!(value_of(next_state(&mut events).await), "one");

    seed(&api, "two");
    assert_eq!(value_of(next_state(&mut events).await), "two");

    // The stream ends (an API server restart): the watch resumes where it was.
    let lists_before =
        api.requests_matching(&format!("GET {SECRETS}?")) - api.requests_matching("watch=true");
    api.close_watches();
    seed(&api, "three");
    assert_eq!(value_of(next_state(&mut events).await), "three");

    // History compacted: resuming gets 410 Gone, and the watcher lists again.
    api.compact();
    seed(&api, "four");
    let mut latest = value_of(next_state(&mut events).await);
    if latest == "three" {
        latest = value_of(next_state(&mut events).await);
    }
    assert_eq!(latest, "four");
    let lists_after =
        api.requests_matching(&format!("GET {SECRETS}?")) - api.requests_matching("watch=true");
    assert!(
        lists_after > lists_before,
        "no re-list after 410 Gone: {lists_before} {lists_after} {:?}",
        api.requests()
    );

    api.delete(SECRET);
    assert_eq!(next_state(&mut events).await, SecretEvent::Absent);
    seed(&api, "five");
    assert_eq!(value_of(next_state(&mut events).await), "five");
}

#[tokio::test]
async fn a_missing_secret_is_reported_absent_then_appears() {
    let api = FakeApi::start().await;
    let secret = KubeSecret::new(api.client(), NS, "web-tls");
    let mut events = secret.watch();
    assert_eq!(next_state(&mut events).await, SecretEvent::Absent);
    seed(&api, "one");
    assert_eq!(value_of(next_state(&mut events).await), "one");
}

#[tokio::test]
async fn the_lease_is_versioned_too() {
    let api = FakeApi::start().await;
    let lease = KubeLease::new(api.client(), NS, "store");
    assert_eq!(lease.get().await.unwrap(), None);
    let held = LeaseState {
        holder: Some("a".into()),
        renewed_at: 1_000,
        duration_seconds: 15,
    };
    lease.put(held.clone(), None).await.unwrap();
    let read = lease.get().await.unwrap().unwrap();
    assert_eq!(read.value, held);
    let taken = LeaseState {
        holder: Some("b".into()),
        ..held
    };
    lease
        .put(taken.clone(), Some(read.resource_version.clone()))
        .await
        .unwrap();
    assert_eq!(
        lease.put(taken, Some(read.resource_version)).await,
        Err(ApiError::Conflict)
    );
    assert!(
        wss_sidecar::k8s::lease::try_acquire(&lease, "c", 15, 1_010)
            .await
            .is_ok()
    );
}

/// Every call is bounded: an API server that accepts a request and never answers (a hung
/// Lease renewal, a stuck get or patch) yields an error after `API_CALL_TIMEOUT`, so a Lease
/// holder learns it could not renew instead of waiting forever.
#[tokio::test]
async fn a_call_the_api_never_answers_fails_after_the_call_timeout() {
    use wss_sidecar::k8s::client::API_CALL_TIMEOUT;
    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/team/leases/store";
    let api = FakeApi::start().await;
    let lease = KubeLease::new(api.client(), NS, "store");
    let secret = KubeSecret::new(api.client(), NS, "web-tls");
    seed(&api, "one");
    let stored = secret.get().await.unwrap().unwrap();
    api.stall(hyper::Method::GET, LEASE, |_| true);
    api.stall(hyper::Method::PATCH, SECRET, |_| true);
    let bound = API_CALL_TIMEOUT + Duration::from_secs(5);

    let started = tokio::time::Instant::now();
    let got = tokio::time::timeout(bound, lease.get()).await;
    let err = got.expect("the Lease get is bounded").unwrap_err();
    assert!(err.to_string().contains("no answer"), "{err}");
    assert!(
        started.elapsed() >= API_CALL_TIMEOUT,
        "it waited for the answer first"
    );

    let patch = secret.update(data("two"), &stored.resource_version);
    let err = tokio::time::timeout(bound, patch)
        .await
        .expect("the Secret patch is bounded")
        .unwrap_err();
    assert!(err.to_string().contains("no answer"), "{err}");
    api.release_stalled();
}

/// Watches ask the API server to end them after `WATCH_TIMEOUT_SECONDS` (kube's watcher
/// re-opens a watch silent for that plus 5 s), instead of kube's default 290 s.
#[tokio::test]
async fn watches_carry_a_server_side_timeout_well_under_295_s() {
    use wss_sidecar::k8s::client::WATCH_TIMEOUT_SECONDS;
    const { assert!(WATCH_TIMEOUT_SECONDS + 5 < 120) };
    let api = FakeApi::start().await;
    let secret = KubeSecret::new(api.client(), NS, "web-tls");
    let mut events = secret.watch();
    assert_eq!(next_state(&mut events).await, SecretEvent::Absent);
    seed(&api, "one");
    assert_eq!(value_of(next_state(&mut events).await), "one");
    let wanted = format!("timeoutSeconds={WATCH_TIMEOUT_SECONDS}");
    assert!(
        api.requests_matching(&wanted) >= 1,
        "no request with {wanted}: {:?}",
        api.requests()
    );
}
