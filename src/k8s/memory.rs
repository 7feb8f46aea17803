//! In-memory Secret and Lease that check `resourceVersion` like the API server, for unit
//! tests of what is built on [`super::api`] (the HTTP path is tested against the fake API
//! server in `tests/it`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::api::{ApiError, LeaseApi, LeaseState, SecretApi, SecretData, SecretEvent, Versioned};

/// One Secret in memory; `gets` counts reads.
#[derive(Default)]
pub struct MemSecret {
    pub object: Mutex<Option<Versioned<SecretData>>>,
    pub version: Mutex<u64>,
    pub gets: Mutex<usize>,
}

impl MemSecret {
    /// A Secret made beforehand, empty (as the chart or `kubectl create` makes a store's).
    pub fn existing() -> Arc<Self> {
        let secret = Self::default();
        *secret.object.lock().unwrap() = Some(Versioned {
            resource_version: secret.bump(),
            value: SecretData::new(),
        });
        Arc::new(secret)
    }

    /// Sets `key` as another writer would (no version check).
    pub fn poke(&self, key: &str, value: &[u8]) {
        let mut object = self.object.lock().unwrap();
        let secret = object.as_mut().expect("the Secret exists");
        secret.value.insert(key.into(), value.to_vec());
    }

    fn bump(&self) -> String {
        let mut v = self.version.lock().unwrap();
        *v += 1;
        v.to_string()
    }
}

impl SecretApi for Arc<MemSecret> {
    fn describe(&self) -> String {
        "team/store".into()
    }
    async fn get(&self) -> Result<Option<Versioned<SecretData>>, ApiError> {
        *self.gets.lock().unwrap() += 1;
        Ok(self.object.lock().unwrap().clone())
    }
    async fn create(&self, _: &str, data: SecretData) -> Result<Versioned<SecretData>, ApiError> {
        let mut object = self.object.lock().unwrap();
        if object.is_some() {
            return Err(ApiError::Conflict);
        }
        let created = Versioned {
            resource_version: self.bump(),
            value: data,
        };
        *object = Some(created.clone());
        Ok(created)
    }
    async fn patch(
        &self,
        data: SecretData,
        remove: Vec<String>,
        based_on: &str,
    ) -> Result<Versioned<SecretData>, ApiError> {
        let mut object = self.object.lock().unwrap();
        let Some(current) = object.as_mut() else {
            return Err(ApiError::NotFound("store".into()));
        };
        if current.resource_version != based_on {
            return Err(ApiError::Conflict);
        }
        current.value.extend(data);
        for key in remove {
            current.value.remove(&key);
        }
        current.resource_version = self.bump();
        Ok(current.clone())
    }
    fn watch(&self) -> BoxStream<'static, SecretEvent> {
        futures_util::stream::pending().boxed()
    }
}

/// One Lease in memory; while `down`, every call fails as an unreachable API server would.
#[derive(Default)]
pub struct MemLease {
    pub slot: Mutex<Option<Versioned<LeaseState>>>,
    pub down: AtomicBool,
}

impl MemLease {
    /// A Lease made beforehand, with an empty spec: nobody holds it.
    pub fn existing() -> Arc<Self> {
        let lease = Self::default();
        *lease.slot.lock().unwrap() = Some(Versioned {
            resource_version: "1".into(),
            value: LeaseState {
                holder: None,
                renewed_at: 0,
                duration_seconds: 0,
            },
        });
        Arc::new(lease)
    }

    /// Another candidate writes the Lease (no version check).
    pub fn take(&self, holder: &str, renewed_at: i64, duration_seconds: i64) {
        let mut slot = self.slot.lock().unwrap();
        let next = slot
            .as_ref()
            .map_or(1, |l| l.resource_version.parse::<u64>().unwrap() + 1);
        *slot = Some(Versioned {
            resource_version: next.to_string(),
            value: LeaseState {
                holder: Some(holder.into()),
                renewed_at,
                duration_seconds,
            },
        });
    }

    fn check_up(&self) -> Result<(), ApiError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ApiError::Other("connection refused".into()));
        }
        Ok(())
    }
}

impl LeaseApi for Arc<MemLease> {
    async fn get(&self) -> Result<Option<Versioned<LeaseState>>, ApiError> {
        self.check_up()?;
        Ok(self.slot.lock().unwrap().clone())
    }
    async fn put(&self, lease: LeaseState, based_on: Option<String>) -> Result<(), ApiError> {
        self.check_up()?;
        let mut slot = self.slot.lock().unwrap();
        let current = slot.as_ref().map(|l| l.resource_version.clone());
        if current != based_on {
            return Err(ApiError::Conflict);
        }
        let next = current.map_or(1, |v| v.parse::<u64>().unwrap() + 1);
        *slot = Some(Versioned {
            resource_version: next.to_string(),
            value: lease,
        });
        Ok(())
    }
}
