//! The ordering lock while an order runs: renewed every third of its duration, and given up
//! (the order stops) when another holder has it or it cannot be renewed in time.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use super::store::AcmeStore;

/// Renews the ordering lock every third of `ttl` while an order runs; returns when the lock is
/// lost: another holder has it, or it could not be renewed for two thirds of `ttl` (before it
/// can lapse, so that two replicas never order at once).
pub async fn keep(store: Arc<dyn AcmeStore>, holder: String, ttl: Duration) {
    let every = ttl / 3;
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match store.try_lock(&holder, ttl).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => return,
            Err(err) => {
                warn!(error = %err, "cannot renew the ACME ordering lock");
                if renewed.elapsed() >= ttl - every {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::acme::SecretStore;
    use crate::clock::epoch_seconds;
    use crate::k8s::memory::{MemLease, MemSecret};

    const TTL: Duration = Duration::from_secs(30);

    fn store(lease: &Arc<MemLease>) -> Arc<dyn AcmeStore> {
        SecretStore::new(
            MemSecret::existing(),
            MemSecret::existing(),
            Arc::clone(lease),
            "https://ca/dir",
            &["a.test".into()],
        )
    }

    fn now() -> i64 {
        epoch_seconds(std::time::SystemTime::now())
    }

    #[tokio::test(start_paused = true)]
    async fn renews_while_held_and_stops_when_another_holder_took_it() {
        let lease = MemLease::existing();
        let store = store(&lease);
        assert!(store.try_lock("a", TTL).await.unwrap());
        let keeping = tokio::spawn(keep(Arc::clone(&store), "a".into(), TTL));
        tokio::time::sleep(TTL * 2).await;
        assert!(!keeping.is_finished(), "renewed, so still held");
        let version = |l: &MemLease| l.slot.lock().unwrap().clone().unwrap().resource_version;
        assert_ne!(version(&lease), "1", "renewed");

        // Another replica took the Lease (its clock ran ahead, say): stop at the next renewal.
        lease.take("b", now() + 60, 30);
        let stopped = tokio::time::timeout(TTL / 3 + Duration::from_secs(1), keeping).await;
        assert!(stopped.is_ok(), "gave the lock up");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_before_the_lock_could_lapse_when_it_cannot_renew() {
        let lease = MemLease::existing();
        let store = store(&lease);
        assert!(store.try_lock("a", TTL).await.unwrap());
        lease.down.store(true, Ordering::SeqCst);
        let started = Instant::now();
        keep(store, "a".into(), TTL).await;
        let held_on = started.elapsed();
        assert!(held_on >= TTL * 2 / 3, "kept trying: {held_on:?}");
        assert!(
            held_on < TTL,
            "stopped before the lock could lapse: {held_on:?}"
        );
    }
}
