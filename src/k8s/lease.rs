//! Leader election on a `coordination.k8s.io/v1` Lease: take it when free or expired, renew it
//! while held, hand it back when done. Every write names the version it read, so two
//! candidates can never both believe they won. [`try_acquire`] creates a missing Lease;
//! [`try_acquire_existing`] needs it made beforehand (no Role then needs an unscoped `create`).

use super::api::{ApiError, LeaseApi, LeaseState};

/// This process's name as a Lease holder: the pod's hostname (`HOSTNAME`, which container
/// runtimes set), the process id and the start time, so a restarted container is a new holder.
pub fn holder_identity() -> String {
    format!(
        "{}-{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
        std::process::id(),
        crate::clock::epoch_seconds(std::time::SystemTime::now())
    )
}

/// Takes the Lease for `holder` for `duration_seconds` from `now`, or renews it if `holder`
/// has it. True when `holder` holds it afterwards; false when another holder's lease is live
/// or another candidate won the race (a 409).
pub async fn try_acquire<L: LeaseApi>(
    api: &L,
    holder: &str,
    duration_seconds: i64,
    now: i64,
) -> Result<bool, ApiError> {
    acquire(api, holder, duration_seconds, now, true).await
}

/// As [`try_acquire`] for a Lease that must exist already: [`ApiError::NotFound`] when it does
/// not. A Lease made with an empty spec is free (coordination validation,
/// pkg/apis/coordination/validation/validation.go, ValidateLeaseSpec, requires no field).
pub async fn try_acquire_existing<L: LeaseApi>(
    api: &L,
    holder: &str,
    duration_seconds: i64,
    now: i64,
) -> Result<bool, ApiError> {
    acquire(api, holder, duration_seconds, now, false).await
}

async fn acquire<L: LeaseApi>(
    api: &L,
    holder: &str,
    duration_seconds: i64,
    now: i64,
    create: bool,
) -> Result<bool, ApiError> {
    let based_on = match api.get().await? {
        None if !create => return Err(ApiError::NotFound("the Lease".into())),
        None => None,
        Some(lease) => {
            let mine = lease.value.holder.as_deref() == Some(holder);
            let free = lease.value.holder.as_deref().is_none_or(str::is_empty);
            if !mine && !free && !lease.value.expired(now) {
                return Ok(false);
            }
            Some(lease.resource_version)
        }
    };
    let ours = LeaseState {
        holder: Some(holder.to_string()),
        renewed_at: now,
        duration_seconds,
    };
    match api.put(ours, based_on).await {
        Ok(()) => Ok(true),
        Err(ApiError::Conflict) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Gives the Lease up if `holder` has it, so the next candidate need not wait for it to
/// expire. A Lease someone else took meanwhile is left alone.
pub async fn release<L: LeaseApi>(api: &L, holder: &str, now: i64) -> Result<(), ApiError> {
    let Some(lease) = api.get().await? else {
        return Ok(());
    };
    if lease.value.holder.as_deref() != Some(holder) {
        return Ok(());
    }
    let free = LeaseState {
        holder: None,
        renewed_at: now,
        duration_seconds: lease.value.duration_seconds,
    };
    match api.put(free, Some(lease.resource_version)).await {
        Ok(()) | Err(ApiError::Conflict) => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::k8s::memory::MemLease;

    #[tokio::test]
    async fn one_holder_until_it_expires_or_releases() {
        let api = Arc::new(MemLease::default());
        assert!(try_acquire(&api, "a", 10, 100).await.unwrap());
        assert!(!try_acquire(&api, "b", 10, 105).await.unwrap());
        assert!(try_acquire(&api, "a", 10, 108).await.unwrap(), "renewal");
        assert!(
            !try_acquire(&api, "b", 10, 118).await.unwrap(),
            "renewed at 108"
        );
        assert!(try_acquire(&api, "b", 10, 119).await.unwrap(), "expired");
        assert!(!try_acquire(&api, "a", 10, 120).await.unwrap());
        release(&api, "a", 121).await.unwrap();
        assert!(
            !try_acquire(&api, "a", 10, 121).await.unwrap(),
            "not a's to release"
        );
        release(&api, "b", 122).await.unwrap();
        assert!(try_acquire(&api, "a", 10, 122).await.unwrap(), "released");
    }

    #[tokio::test]
    async fn a_stale_read_loses_the_race() {
        let api = Arc::new(MemLease::default());
        assert!(try_acquire(&api, "a", 10, 100).await.unwrap());
        // b read the expired lease, then a renewed it before b wrote.
        let stale = api.get().await.unwrap().unwrap().resource_version;
        assert!(try_acquire(&api, "a", 10, 111).await.unwrap());
        let taken = LeaseState {
            holder: Some("b".into()),
            renewed_at: 112,
            duration_seconds: 10,
        };
        assert_eq!(api.put(taken, Some(stale)).await, Err(ApiError::Conflict));
    }
}
