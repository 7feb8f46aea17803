//! The one way this crate writes a Secret: read-modify-write. A change is applied to the
//! Secret as read and written with a merge patch naming the `resourceVersion` it was based on
//! ([`SecretApi::patch`]), or, for [`modify`], created when there is none ([`modify_existing`]
//! never creates: its Secret is made beforehand, so no Role needs an unscoped `create`). On a
//! 409 the Secret is read again and the change applied afresh, after a random pause, so
//! concurrent writers never lose each other's updates and writers that collided do not collide
//! again at once.

use std::time::Duration;

use tracing::debug;

use super::api::{ApiError, SecretApi, SecretData, Versioned};

/// A write that keeps meeting newer versions gives up after this many tries (each 409 means
/// another writer made progress, so this only trips under a storm of writers).
pub const WRITE_ATTEMPTS: u32 = 10;
/// After a conflict, wait a random time up to this, doubled per retry (capped at
/// [`RETRY_MAX`]).
const RETRY_BASE: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_millis(500);

/// Why a read-modify-write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    /// The API refused or failed (including `WRITE_ATTEMPTS` conflicts in a row).
    #[error(transparent)]
    Api(ApiError),
    /// The change could not be computed from what the Secret holds.
    #[error(transparent)]
    Change(E),
}

/// What a read-modify-write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// The change was written: the Secret as it now is.
    Changed(Versioned<SecretData>),
    /// The change asked for nothing: the Secret as last read (`None`: it does not exist).
    Unchanged(Option<Versioned<SecretData>>),
}

/// What a change writes: keys to set, and keys to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretWrite {
    /// Keys set to these values; other keys are kept.
    pub set: SecretData,
    /// Keys removed.
    pub remove: Vec<String>,
}

impl From<SecretData> for SecretWrite {
    fn from(set: SecretData) -> Self {
        Self {
            set,
            remove: Vec::new(),
        }
    }
}

/// Applies `change` to `current` (the Secret as the caller last read it, `None` when it does
/// not exist) and writes the keys it returns; `Ok(None)` from `change` means nothing to write.
/// A new Secret is created with type `type_`. On a conflict the Secret is read again and
/// `change` called again with what it now holds.
pub async fn modify<S, E, F>(
    secret: &S,
    type_: &str,
    current: Option<Versioned<SecretData>>,
    mut change: F,
) -> Result<Written, WriteError<E>>
where
    S: SecretApi,
    F: FnMut(Option<&SecretData>) -> Result<Option<SecretData>, E>,
{
    let change = |data: Option<&SecretData>| Ok(change(data)?.map(SecretWrite::from));
    write(secret, Some(type_), current, change).await
}

/// As [`modify`] for a Secret that must exist already: never creates it, and answers
/// [`ApiError::NotFound`] (naming `namespace/name`) when it is missing. `change` is only ever
/// called with the Secret's content.
pub async fn modify_existing<S, E, F>(
    secret: &S,
    current: Option<Versioned<SecretData>>,
    mut change: F,
) -> Result<Written, WriteError<E>>
where
    S: SecretApi,
    F: FnMut(&SecretData) -> Result<Option<SecretWrite>, E>,
{
    let missing = || WriteError::Api(ApiError::NotFound(format!("Secret {}", secret.describe())));
    let Some(current) = current else {
        return Err(missing());
    };
    let mut absent = false;
    let written = write(secret, None, Some(current), |data| match data {
        Some(data) => change(data),
        None => {
            absent = true;
            Ok(None)
        }
    })
    .await?;
    match written {
        Written::Unchanged(None) => Err(missing()),
        _ if absent => Err(missing()),
        written => Ok(written),
    }
}

/// The loop behind [`modify`] and [`modify_existing`]: creates with type `create` when the
/// Secret is missing, or (`None`) hands `change` the missing Secret and writes nothing.
async fn write<S, E, F>(
    secret: &S,
    create: Option<&str>,
    mut current: Option<Versioned<SecretData>>,
    mut change: F,
) -> Result<Written, WriteError<E>>
where
    S: SecretApi,
    F: FnMut(Option<&SecretData>) -> Result<Option<SecretWrite>, E>,
{
    for attempt in 0..WRITE_ATTEMPTS {
        let Some(data) = change(current.as_ref().map(|s| &s.value)).map_err(WriteError::Change)?
        else {
            return Ok(Written::Unchanged(current));
        };
        let written = match (&current, create) {
            (Some(stored), _) => {
                secret
                    .patch(data.set, data.remove, &stored.resource_version)
                    .await
            }
            (None, Some(type_)) => secret.create(type_, data.set).await,
            // Unreachable: without `create`, `change` answers `None` for a missing Secret.
            (None, None) => return Ok(Written::Unchanged(None)),
        };
        match written {
            Ok(stored) => return Ok(Written::Changed(stored)),
            // Changed (or created) since it was read: read again and redo the change.
            Err(ApiError::Conflict) => {
                debug!(k8s.secret = %secret.describe(), "the Secret changed; retrying the write");
                tokio::time::sleep(retry_delay(attempt)).await;
                current = secret.get().await.map_err(WriteError::Api)?;
            }
            // Deleted since it was read: create it.
            Err(ApiError::NotFound(_)) => current = None,
            Err(err) => return Err(WriteError::Api(err)),
        }
    }
    Err(WriteError::Api(ApiError::Other(format!(
        "gave up after {WRITE_ATTEMPTS} writes that each met a newer version"
    ))))
}

/// A random delay in the upper half of `RETRY_BASE × 2^attempt` (capped at [`RETRY_MAX`]).
fn retry_delay(attempt: u32) -> Duration {
    let ceiling = RETRY_BASE
        .saturating_mul(1 << attempt.min(16))
        .min(RETRY_MAX);
    let half = ceiling / 2;
    let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rand::random_range(0..=spread))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::k8s::memory::MemSecret;

    fn data(key: &str, value: &str) -> SecretData {
        [(key.to_string(), value.as_bytes().to_vec())].into()
    }

    /// Adds `key` = `value` to whatever the Secret holds.
    fn add(
        key: &'static str,
        value: &'static str,
    ) -> impl FnMut(Option<&SecretData>) -> Result<Option<SecretData>, ApiError> {
        move |current| {
            let mut next = current.cloned().unwrap_or_default();
            next.insert(key.into(), value.as_bytes().to_vec());
            Ok(Some(next))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_read_is_redone_and_no_update_is_lost() {
        let secret = Arc::new(MemSecret::default());
        let first = modify(&secret, "Opaque", None, add("a", "1"))
            .await
            .unwrap();
        let Written::Changed(stale) = first else {
            panic!("created: {first:?}");
        };
        // Another writer changes it after our read.
        modify(&secret, "Opaque", Some(stale.clone()), add("b", "2"))
            .await
            .unwrap();
        let mut seen = Vec::new();
        let written = modify(&secret, "Opaque", Some(stale), |current| {
            seen.push(current.cloned());
            add("c", "3")(current)
        })
        .await
        .unwrap();
        assert_eq!(
            seen.len(),
            2,
            "applied to the stale copy, then to a fresh read"
        );
        let Written::Changed(now) = written else {
            panic!("written: {written:?}");
        };
        for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
            assert_eq!(now.value[key], value.as_bytes(), "{key} kept");
        }
    }

    #[tokio::test]
    async fn nothing_to_change_writes_nothing() {
        let secret = Arc::new(MemSecret::default());
        let written = modify(&secret, "Opaque", None, |_| Ok::<_, ApiError>(None)).await;
        assert_eq!(written.unwrap(), Written::Unchanged(None));
        assert!(secret.object.lock().unwrap().is_none(), "not created");
    }

    #[tokio::test(start_paused = true)]
    async fn a_create_that_lost_the_race_becomes_an_update() {
        let secret = Arc::new(MemSecret::default());
        modify(&secret, "Opaque", None, add("theirs", "x"))
            .await
            .unwrap();
        // We still believe there is no Secret: the create conflicts, the update keeps theirs.
        let written = modify(&secret, "Opaque", None, add("ours", "y"))
            .await
            .unwrap();
        let Written::Changed(now) = written else {
            panic!("written: {written:?}");
        };
        assert_eq!(now.value, {
            let mut both = data("theirs", "x");
            both.extend(data("ours", "y"));
            both
        });
    }

    #[tokio::test]
    async fn a_failed_change_is_returned_unwritten() {
        let secret = Arc::new(MemSecret::default());
        let written = modify(&secret, "Opaque", None, |_| {
            Err::<Option<SecretData>, _>("no")
        });
        assert!(matches!(written.await, Err(WriteError::Change("no"))));
        assert!(secret.object.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn modify_existing_never_creates_and_removes_keys() {
        let secret = Arc::new(MemSecret::default());
        let set = |_: &SecretData| Ok::<_, ApiError>(Some(SecretWrite::from(data("a", "1"))));
        let missing = modify_existing(&secret, None, set).await;
        assert!(
            matches!(&missing, Err(WriteError::Api(ApiError::NotFound(what))) if what == "Secret team/store"),
            "{missing:?}"
        );
        assert!(secret.object.lock().unwrap().is_none(), "not created");

        let secret = MemSecret::existing();
        let current = secret.get().await.unwrap();
        modify_existing(&secret, current.clone(), set)
            .await
            .unwrap();
        // Deleted since it was read: not created again.
        *secret.object.lock().unwrap() = None;
        let gone = modify_existing(&secret, current, set).await;
        assert!(
            matches!(gone, Err(WriteError::Api(ApiError::NotFound(_)))),
            "{gone:?}"
        );
        assert!(secret.object.lock().unwrap().is_none(), "not created");

        let secret = MemSecret::existing();
        secret.poke("old", b"x");
        let current = secret.get().await.unwrap();
        let swap = |_: &SecretData| {
            Ok::<_, ApiError>(Some(SecretWrite {
                set: data("new", "y"),
                remove: vec!["old".into()],
            }))
        };
        let written = modify_existing(&secret, current, swap).await.unwrap();
        let Written::Changed(now) = written else {
            panic!("written: {written:?}");
        };
        assert_eq!(now.value, data("new", "y"));
    }

    #[test]
    fn retry_delays_are_random_in_the_upper_half_and_capped() {
        for attempt in [0, 3, 20] {
            let ceiling = RETRY_BASE
                .saturating_mul(1 << attempt.min(16))
                .min(RETRY_MAX);
            let delays: Vec<Duration> = (0..50).map(|_| retry_delay(attempt)).collect();
            assert!(
                delays.iter().all(|d| *d >= ceiling / 2 && *d <= ceiling),
                "{attempt}: {delays:?}"
            );
            let first = delays[0];
            assert!(
                delays.iter().any(|d| *d != first),
                "{attempt}: not random: {delays:?}"
            );
        }
    }
}
