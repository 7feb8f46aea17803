//! The Secret store against in-memory Secret and Lease that check versions like the API
//! server: scoping, damaged keys, and the lock's fresh reads. The HTTP path (kube against the
//! fake API server, racing writers, watches) is in the integration tests.

use super::account::ACCOUNT_DIRECTORY;
use super::*;
use crate::k8s::memory::{MemLease, MemSecret};

type Store = SecretStore<Arc<MemSecret>, Arc<MemLease>>;

fn names() -> Vec<String> {
    vec!["b.test".into(), "a.test".into()]
}

/// The store Secret, the account Secret and the Lease, made beforehand as the chart does.
struct Objects {
    secret: Arc<MemSecret>,
    account: Arc<MemSecret>,
    lease: Arc<MemLease>,
}

impl Objects {
    fn new() -> Self {
        Self {
            secret: MemSecret::existing(),
            account: MemSecret::existing(),
            lease: MemLease::existing(),
        }
    }

    fn store(&self, directory: &str) -> Arc<Store> {
        SecretStore::new(
            Arc::clone(&self.secret),
            Arc::clone(&self.account),
            Arc::clone(&self.lease),
            directory,
            &names(),
        )
    }
}

fn cert() -> StoredCert {
    StoredCert {
        cert_pem: "CERT".into(),
        key_pem: "KEY".into(),
    }
}

#[tokio::test]
async fn round_trips_as_a_tls_secret_and_keeps_foreign_keys() {
    let objects = Objects::new();
    let secret = &objects.secret;
    let store = objects.store("https://ca/dir");
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

    let reader = objects.store("https://ca/dir");
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
    // The account is in its own Secret, never beside the pair an Ingress may share.
    assert!(!data.contains_key(ACCOUNT), "{:?}", data.keys());
    let account = objects
        .account
        .object
        .lock()
        .unwrap()
        .clone()
        .unwrap()
        .value;
    assert_eq!(account[ACCOUNT], b"{\"id\":1}");
    assert_eq!(account[ACCOUNT_DIRECTORY], b"https://ca/dir");
}

/// A store written before the split (the account beside the pair) is migrated on the first
/// read of the account: the account Secret is written first, then the key is removed, and
/// the account read is the old one (no new account at the CA).
#[tokio::test]
async fn an_account_in_the_store_secret_moves_to_its_own_secret() {
    let objects = Objects::new();
    let old = objects.store("https://ca/dir");
    old.save_cert(&cert()).await.unwrap();
    objects.secret.poke(ACCOUNT, b"{\"id\":\"old\"}");

    let store = objects.store("https://ca/dir");
    assert_eq!(
        store.load_account().await.unwrap().as_deref(),
        Some(&b"{\"id\":\"old\"}"[..])
    );
    let account = objects.account.object.lock().unwrap().clone().unwrap();
    assert_eq!(account.value[ACCOUNT], b"{\"id\":\"old\"}");
    assert_eq!(account.value[ACCOUNT_DIRECTORY], b"https://ca/dir");
    let data = objects.secret.object.lock().unwrap().clone().unwrap().value;
    assert!(!data.contains_key(ACCOUNT), "removed: {:?}", data.keys());
    assert_eq!(data["tls.crt"], b"CERT", "the rest kept");
    // Moved once: the next replica reads it from the account Secret and writes nothing.
    let version = account.resource_version;
    let other = objects.store("https://ca/dir");
    assert_eq!(
        other.load_account().await.unwrap().as_deref(),
        Some(&b"{\"id\":\"old\"}"[..])
    );
    let after = objects.account.object.lock().unwrap().clone().unwrap();
    assert_eq!(after.resource_version, version);
}

/// A crash between the two writes of the migration: the account Secret has it and the store
/// still has the key. The next read keeps the account Secret's and removes the old key.
#[tokio::test]
async fn a_half_done_migration_is_finished_without_changing_the_account() {
    let objects = Objects::new();
    objects
        .store("https://ca/dir")
        .save_cert(&cert())
        .await
        .unwrap();
    objects.secret.poke(ACCOUNT, b"old");
    objects.account.poke(ACCOUNT, b"old");
    objects.account.poke(ACCOUNT_DIRECTORY, b"https://ca/dir");
    let store = objects.store("https://ca/dir");
    assert_eq!(
        store.load_account().await.unwrap().as_deref(),
        Some(&b"old"[..])
    );
    let data = objects.secret.object.lock().unwrap().clone().unwrap().value;
    assert!(!data.contains_key(ACCOUNT));
}

/// An account for another directory is never used (staging's account at production), and a
/// save for ours replaces it.
#[tokio::test]
async fn an_account_for_another_directory_is_not_used() {
    let objects = Objects::new();
    let staging = objects.store("https://staging/dir");
    staging.save_account(b"staging").await.unwrap();
    let production = objects.store("https://production/dir");
    assert_eq!(production.load_account().await.unwrap(), None);
    production.save_account(b"production").await.unwrap();
    assert_eq!(
        production.load_account().await.unwrap().as_deref(),
        Some(&b"production"[..])
    );
    assert_eq!(staging.load_account().await.unwrap(), None);
}

/// The sidecar creates none of its objects (its Role cannot allow `create`): each missing one
/// is an error naming it and how to create it, and no write creates it.
#[tokio::test]
async fn missing_objects_are_named_and_never_created() {
    let absent = || Arc::new(MemSecret::default());
    let store = |secret: Arc<MemSecret>, account: Arc<MemSecret>, lease: Arc<MemLease>| {
        SecretStore::new(secret, account, lease, "https://ca/dir", &names())
    };

    let secret = absent();
    let no_secret = store(
        Arc::clone(&secret),
        MemSecret::existing(),
        MemLease::existing(),
    );
    for err in [
        no_secret.load_cert().await.unwrap_err(),
        no_secret.load_state().await.unwrap_err(),
        no_secret.save_cert(&cert()).await.unwrap_err(),
        no_secret
            .save_state(&RenewalState::default())
            .await
            .unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            matches!(err, StoreError::Missing { kind: "Secret", .. }),
            "{text}"
        );
        assert!(text.contains("Secret team/store does not exist"), "{text}");
        assert!(
            text.contains(
                "kubectl -n team create secret generic store --type=kubernetes.io/tls \
                 --from-literal=tls.crt= --from-literal=tls.key="
            ),
            "{text}"
        );
    }
    assert!(secret.object.lock().unwrap().is_none(), "not created");
    // Handshakes still get an answer: no challenges.
    assert_eq!(no_secret.load_challenges().await.unwrap(), vec![]);

    let account = absent();
    let no_account = store(
        MemSecret::existing(),
        Arc::clone(&account),
        MemLease::existing(),
    );
    for err in [
        no_account.load_account().await.unwrap_err(),
        no_account.save_account(b"x").await.unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            matches!(err, StoreError::Missing { kind: "Secret", .. }),
            "{text}"
        );
        assert!(
            text.contains("kubectl -n team create secret generic store\u{60}"),
            "{text}"
        );
    }
    assert!(account.object.lock().unwrap().is_none(), "not created");

    let lease = Arc::new(MemLease::default());
    let no_lease = store(
        MemSecret::existing(),
        MemSecret::existing(),
        Arc::clone(&lease),
    );
    let err = no_lease
        .try_lock("a", Duration::from_secs(30))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::Missing { kind: "Lease", .. }),
        "{text}"
    );
    assert!(text.contains("Lease team/store does not exist"), "{text}");
    assert!(text.contains("\"kind\":\"Lease\""), "{text}");
    assert!(lease.slot.lock().unwrap().is_none(), "not created");
}

#[tokio::test]
async fn state_for_another_directory_is_never_used_and_is_replaced_on_write() {
    let objects = Objects::new();
    let staging = objects.store("https://staging/dir");
    staging.save_account(b"staging account").await.unwrap();
    staging.save_cert(&cert()).await.unwrap();

    let production = objects.store("https://production/dir");
    assert_eq!(production.load_cert().await.unwrap(), None);
    assert_eq!(production.load_account().await.unwrap(), None);
    production
        .save_account(b"production account")
        .await
        .unwrap();
    // The write replaced the staging certificate rather than keeping it beside ours.
    assert_eq!(production.load_cert().await.unwrap(), None);
    let fresh = objects.store("https://production/dir");
    assert_eq!(
        fresh.load_account().await.unwrap().as_deref(),
        Some(&b"production account"[..])
    );
}

#[tokio::test]
async fn a_damaged_key_is_an_error_to_read_and_replaced_by_a_write() {
    let objects = Objects::new();
    let secret = &objects.secret;
    let store = objects.store("https://ca/dir");
    store.save_cert(&cert()).await.unwrap();
    secret.poke(STATE, b"{not json");
    let reader = objects.store("https://ca/dir");
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
    let objects = Objects::new();
    let secret = &objects.secret;
    let a = objects.store("https://ca/dir");
    let b = objects.store("https://ca/dir");
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
    let objects = Objects::new();
    let secret = &objects.secret;
    let writer = objects.store("https://ca/dir");
    let reader = objects.store("https://ca/dir");
    // The ordering replica records its order before it publishes answers (acme/order.rs).
    writer.save_state(&pending_order()).await.unwrap();
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

fn pending_order() -> RenewalState {
    RenewalState {
        pending: Some(super::super::store::PendingOrder {
            url: "https://ca/order/1".into(),
            placed_at: 1,
            key_pem: None,
        }),
        ..RenewalState::default()
    }
}

/// Strangers cost no API reads: with no order pending in the local copy, `acme-tls/1` hellos
/// for our names and token-shaped HTTP-01 paths (both end in `refresh_challenges`) are answered
/// from the copy; once an order is pending, a miss reads afresh.
#[tokio::test(start_paused = true)]
async fn misses_read_the_api_only_while_an_order_is_pending() {
    let objects = Objects::new();
    let secret = &objects.secret;
    let writer = objects.store("https://ca/dir");
    let reader = objects.store("https://ca/dir");
    writer.save_cert(&cert()).await.unwrap();
    assert_eq!(reader.load_challenges().await.unwrap(), vec![]);
    let gets = *secret.gets.lock().unwrap();
    for _ in 0..50 {
        assert_eq!(reader.refresh_challenges().await.unwrap(), vec![]);
        tokio::time::advance(REFRESH_INTERVAL).await;
    }
    assert_eq!(
        *secret.gets.lock().unwrap() - gets,
        0,
        "no order pending: no reads"
    );

    writer.save_state(&pending_order()).await.unwrap();
    // The watch brings the pending order to the reader's copy (here: a read of it).
    reader.fetch().await.unwrap();
    let gets = *secret.gets.lock().unwrap();
    assert_eq!(reader.refresh_challenges().await.unwrap(), vec![]);
    assert_eq!(
        *secret.gets.lock().unwrap() - gets,
        1,
        "an order is pending: a fresh read"
    );
}

/// The manager's poll is a real read: a change another replica made reaches a replica whose
/// copy is stale (a watch that stalled, here no watch at all) at the next poll.
#[tokio::test(start_paused = true)]
async fn a_poll_reads_the_api_not_the_local_copy() {
    let objects = Objects::new();
    let secret = &objects.secret;
    let writer = objects.store("https://ca/dir");
    let reader = objects.store("https://ca/dir");
    assert_eq!(reader.load_cert().await.unwrap(), None);
    writer.save_cert(&cert()).await.unwrap();
    tokio::time::advance(READ_REUSE).await;
    assert_eq!(reader.load_cert().await.unwrap(), Some(cert()));
    // One pass reads several keys: they share one read.
    let gets = *secret.gets.lock().unwrap();
    reader.load_state().await.unwrap();
    assert_eq!(*secret.gets.lock().unwrap(), gets);
}

/// A Lease whose API never answers.
struct HungLease;

impl LeaseApi for HungLease {
    async fn get(&self) -> Result<Option<Versioned<crate::k8s::LeaseState>>, ApiError> {
        std::future::pending().await
    }
    async fn put(&self, _: crate::k8s::LeaseState, _: Option<String>) -> Result<(), ApiError> {
        std::future::pending().await
    }
}

/// A hung Lease renewal never lets the holder keep ordering after its Lease could have
/// expired: the renewal gives up within a third of the duration, and the lock keeper stops
/// before the Lease lapses.
#[tokio::test(start_paused = true)]
async fn a_hung_lease_renewal_stops_the_holder_before_the_lease_expires() {
    const TTL: Duration = Duration::from_secs(30);
    let store = SecretStore::new(
        MemSecret::existing(),
        MemSecret::existing(),
        HungLease,
        "https://ca/dir",
        &names(),
    );
    let started = tokio::time::Instant::now();
    let err = store.try_lock("a", TTL).await.unwrap_err();
    assert!(err.to_string().contains("no answer"), "{err}");
    assert!(started.elapsed() <= TTL / 3);

    let started = tokio::time::Instant::now();
    let store: Arc<dyn AcmeStore> = store;
    super::super::lock::keep(store, "a".into(), TTL).await;
    assert!(
        started.elapsed() < TTL,
        "kept ordering for {:?} on a Lease of {TTL:?}",
        started.elapsed()
    );
}
