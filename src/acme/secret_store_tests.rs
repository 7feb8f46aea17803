//! The Secret store against in-memory Secret and Lease that check versions like the API
//! server: scoping, damaged keys, and the lock's fresh reads. The HTTP path (kube against the
//! fake API server, racing writers, watches) is in the integration tests.

use super::*;
use crate::k8s::memory::{MemLease, MemSecret};

type Store = SecretStore<Arc<MemSecret>, Arc<MemLease>>;

fn names() -> Vec<String> {
    vec!["b.test".into(), "a.test".into()]
}

fn store_for(secret: &Arc<MemSecret>, lease: &Arc<MemLease>, directory: &str) -> Arc<Store> {
    SecretStore::new(Arc::clone(secret), Arc::clone(lease), directory, &names())
}

fn cert() -> StoredCert {
    StoredCert {
        cert_pem: "CERT".into(),
        key_pem: "KEY".into(),
    }
}

#[tokio::test]
async fn round_trips_as_a_tls_secret_and_keeps_foreign_keys() {
    let (secret, lease) = (Arc::new(MemSecret::default()), Arc::default());
    let store = store_for(&secret, &lease, "https://ca/dir");
    assert_eq!(store.load_cert().await.unwrap(), None);
    store.save_account(b"{\"id\":1}").await.unwrap();
    store.save_cert(&cert()).await.unwrap();
    let state = RenewalState {
        failures: 3,
        ..RenewalState::default()
    };
    store.save_state(&state).await.unwrap();
    secret.poke("user-key", b"kept");
    store.save_challenges(&[]).await.unwrap();

    let reader = store_for(&secret, &lease, "https://ca/dir");
    assert_eq!(reader.load_cert().await.unwrap(), Some(cert()));
    assert_eq!(
        reader.load_account().await.unwrap().as_deref(),
        Some(&b"{\"id\":1}"[..])
    );
    assert_eq!(reader.load_state().await.unwrap(), state);
    let data = secret.object.lock().unwrap().clone().unwrap().value;
    assert_eq!(data["tls.crt"], b"CERT");
    assert_eq!(data["tls.key"], b"KEY");
    assert_eq!(data["user-key"], b"kept");
}

#[tokio::test]
async fn state_for_another_directory_is_never_used_and_is_replaced_on_write() {
    let (secret, lease) = (Arc::new(MemSecret::default()), Arc::default());
    let staging = store_for(&secret, &lease, "https://staging/dir");
    staging.save_account(b"staging account").await.unwrap();
    staging.save_cert(&cert()).await.unwrap();

    let production = store_for(&secret, &lease, "https://production/dir");
    assert_eq!(production.load_cert().await.unwrap(), None);
    assert_eq!(production.load_account().await.unwrap(), None);
    production
        .save_account(b"production account")
        .await
        .unwrap();
    // The write replaced the staging certificate rather than keeping it beside ours.
    assert_eq!(production.load_cert().await.unwrap(), None);
    let fresh = store_for(&secret, &lease, "https://production/dir");
    assert_eq!(
        fresh.load_account().await.unwrap().as_deref(),
        Some(&b"production account"[..])
    );
}

#[tokio::test]
async fn a_damaged_key_is_an_error_to_read_and_replaced_by_a_write() {
    let (secret, lease) = (Arc::new(MemSecret::default()), Arc::default());
    let store = store_for(&secret, &lease, "https://ca/dir");
    store.save_cert(&cert()).await.unwrap();
    secret.poke(STATE, b"{not json");
    let reader = store_for(&secret, &lease, "https://ca/dir");
    assert!(matches!(
        reader.load_state().await,
        Err(StoreError::Corrupt { .. })
    ));
    reader.save_challenges(&[]).await.unwrap();
    assert_eq!(reader.load_state().await.unwrap(), RenewalState::default());
    assert_eq!(reader.load_cert().await.unwrap(), Some(cert()), "kept");
}

#[tokio::test]
async fn the_lock_holder_reads_from_the_api_and_others_from_their_copy() {
    let (secret, lease) = (Arc::new(MemSecret::default()), Arc::default());
    let a = store_for(&secret, &lease, "https://ca/dir");
    let b = store_for(&secret, &lease, "https://ca/dir");
    assert_eq!(
        b.load_cert().await.unwrap(),
        None,
        "b's copy: no certificate"
    );

    let ttl = Duration::from_secs(30);
    assert!(a.try_lock("a", ttl).await.unwrap());
    assert!(!b.try_lock("b", ttl).await.unwrap());
    a.save_cert(&cert()).await.unwrap();
    a.unlock("a").await.unwrap();

    // b's copy is stale (its watch is not running here), but once b holds the lock it reads
    // the API: it sees a's certificate and does not order again.
    assert_eq!(b.load_cert().await.unwrap(), None);
    assert!(b.try_lock("b", ttl).await.unwrap());
    let gets = *secret.gets.lock().unwrap();
    assert_eq!(b.load_cert().await.unwrap(), Some(cert()));
    assert!(*secret.gets.lock().unwrap() > gets, "read from the API");
    // Challenge lookups (one per acme-tls/1 handshake) never are, not even for the holder.
    let gets = *secret.gets.lock().unwrap();
    assert_eq!(b.load_challenges().await.unwrap(), vec![]);
    assert_eq!(*secret.gets.lock().unwrap(), gets);
}

#[tokio::test(start_paused = true)]
async fn fresh_reads_for_missed_challenges_are_shared_and_spaced() {
    let (secret, lease) = (Arc::new(MemSecret::default()), Arc::default());
    let writer = store_for(&secret, &lease, "https://ca/dir");
    let reader = store_for(&secret, &lease, "https://ca/dir");
    writer.save_challenges(&[]).await.unwrap();
    assert_eq!(reader.load_challenges().await.unwrap(), vec![]);

    // The ordering replica publishes an answer; the reader's copy (no watch here) lacks it,
    // but a fresh read finds it.
    let answer = ChallengeAnswer {
        name: "a.test".into(),
        token: "t".repeat(43),
        key_authorization: "ka".into(),
    };
    writer
        .save_challenges(std::slice::from_ref(&answer))
        .await
        .unwrap();
    assert_eq!(reader.load_challenges().await.unwrap(), vec![]);
    assert_eq!(reader.refresh_challenges().await.unwrap(), vec![answer]);

    // A burst of misses (a client sending acme-tls/1 for our name over and over) costs one read
    // per interval, not one per handshake.
    tokio::time::advance(Duration::from_millis(1)).await;
    let gets = *secret.gets.lock().unwrap();
    let started = tokio::time::Instant::now();
    let burst: Vec<_> = (0..50)
        .map(|_| {
            let reader = Arc::clone(&reader);
            tokio::spawn(async move { reader.refresh_challenges().await.unwrap() })
        })
        .collect();
    for handshake in burst {
        assert_eq!(handshake.await.unwrap().len(), 1);
    }
    let reads = *secret.gets.lock().unwrap() - gets;
    assert_eq!(reads, 1, "{reads} reads for 50 misses");
    assert!(started.elapsed() <= REFRESH_INTERVAL * 2);
}
