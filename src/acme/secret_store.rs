//! The ACME store as a Kubernetes Secret, the account in a Secret of its own, and a Lease of
//! the store's name as the ordering lock: the replicas of a Deployment share one account, one
//! certificate and one back-off, and every replica answers the CA's validation from the
//! Secret's pending answers.
//!
//! The store Secret is of type `kubernetes.io/tls`: `tls.crt` / `tls.key` hold the issued pair
//! (other workloads, an Ingress, may mount it), beside `acme-scope.json` (the directory URL and
//! names: state kept for another CA or name set is never used), `acme-state.json` and
//! `acme-challenges.json`. The account key is never in it: it is in `NAME-account`
//! ([`account_secret_name`]), with the directory it belongs to, so that sharing the TLS pair
//! never shares the account. A store written before the split still has `acme-account.json`:
//! the first read of the account moves it (writes the account Secret, then removes the key),
//! so no new account is created.
//!
//! The three objects are made beforehand (the chart's `sidecarAccess`, or by hand): creating
//! Secrets cannot be limited to a name in RBAC, and the app container holds the sidecar's
//! token, so a Role allowing `create` would let the app create any Secret (a service-account
//! token Secret the token controller fills, pkg/controller/serviceaccount/tokens_controller.go)
//! and read it. A missing one is [`StoreError::Missing`], naming it and how to create it. Every
//! write goes through the crate's one Secret write ([`crate::k8s::modify_existing`]): a
//! read-modify-write naming the version it read, retried on a 409.
//!
//! A watch keeps a local copy for reads, so handshakes look challenge answers up without an API
//! call, and a miss reads afresh only while an order is pending. The manager's polls read the
//! API (a stalled watch cannot hide a new certificate), and while this replica holds the lock
//! every read does: a decision to order never rests on a copy the watch has not brought up to
//! date.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::account::Object;
pub use self::account::account_secret_name;
use super::store::{AcmeStore, ChallengeAnswer, RenewalState, StoreError, StoredCert};
use crate::clock::epoch_seconds;
use crate::k8s::{
    self, ApiError, LeaseApi, SecretApi, SecretData, SecretEvent, SecretWrite, Versioned, Written,
    lease,
};

const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const SCOPE: &str = "acme-scope.json";
/// The account credentials: in the account Secret (and, before the split, in the store's).
const ACCOUNT: &str = "acme-account.json";
const STATE: &str = "acme-state.json";
const CHALLENGES: &str = "acme-challenges.json";

/// At most one fresh read of the challenges per this interval, however many handshakes miss:
/// bounds the API calls a client sending `acme-tls/1` for our names can cause.
const REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// The manager's reads of the account, certificate and state (once per poll, and after each
/// watch event) go to the API, so a watch that stalled cannot hide another replica's
/// certificate; reads within this long of the last one share it (one pass reads several keys).
const READ_REUSE: Duration = Duration::from_secs(1);

/// Which certificate the Secret's state is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Scope {
    directory: String,
    /// Sorted.
    names: Vec<String>,
}

/// The store's content, decoded.
#[derive(Debug, Clone, Default)]
struct Doc {
    /// `acme-account.json` of a store written before the account had its own Secret.
    legacy_account: Option<Vec<u8>>,
    cert: Option<StoredCert>,
    state: RenewalState,
    challenges: Vec<ChallengeAnswer>,
}

/// What the watch (or the last read or write) says the Secret holds.
#[derive(Debug, Clone)]
enum Cache {
    /// Nothing read yet.
    Unknown,
    /// The Secret as last seen; `None` when it does not exist.
    Known(Option<Versioned<SecretData>>),
}

/// The state of one certificate in a Secret, its account in another, and its Lease.
pub struct SecretStore<S: SecretApi, L: LeaseApi> {
    secret: S,
    /// The account Secret ([`account_secret_name`]).
    account: S,
    lease: L,
    scope: Scope,
    cache: Mutex<Cache>,
    changed: Notify,
    /// True while this replica holds the lock: reads then bypass the cache.
    held: AtomicBool,
    /// When the last fresh read of the challenges started; the lock makes them single-flight.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    /// When the last read from the API started.
    fetched: Mutex<Option<Instant>>,
    /// Set once state for another CA or name set was found, so that it is reported once.
    foreign_reported: AtomicBool,
}

impl<S: SecretApi, L: LeaseApi> SecretStore<S, L> {
    /// The store for `names` from `directory_url` in the Secret behind `secret`, its account
    /// in the Secret behind `account`, locked by the Lease behind `lease`. Call
    /// [`SecretStore::spawn_watch`] to follow other replicas' writes.
    pub fn new(
        secret: S,
        account: S,
        lease: L,
        directory_url: &str,
        names: &[String],
    ) -> Arc<Self> {
        let mut names = names.to_vec();
        names.sort();
        Arc::new(Self {
            secret,
            account,
            lease,
            scope: Scope {
                directory: directory_url.to_string(),
                names,
            },
            cache: Mutex::new(Cache::Unknown),
            changed: Notify::new(),
            held: AtomicBool::new(false),
            refreshed: tokio::sync::Mutex::new(None),
            fetched: Mutex::new(None),
            foreign_reported: AtomicBool::new(false),
        })
    }

    /// Follows the Secret until `stop`, keeping the local copy current and waking
    /// [`AcmeStore::changed`] on every change.
    pub fn spawn_watch(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            let mut events = store.secret.watch();
            loop {
                let event = tokio::select! {
                    () = stop.cancelled() => return,
                    event = events.next() => event,
                };
                match event {
                    Some(SecretEvent::Applied(secret)) => store.remember(Some(secret)),
                    Some(SecretEvent::Absent) => store.remember(None),
                    Some(SecretEvent::Interrupted(why)) => {
                        warn!(acme.store = %store.secret.describe(), error = %why,
                              "the watch of the ACME store Secret broke; reconnecting");
                        continue;
                    }
                    None => return,
                }
                store.changed.notify_one();
            }
        })
    }

    fn what(&self) -> String {
        format!("Secret {}", self.secret.describe())
    }

    fn api_error(&self, source: ApiError) -> StoreError {
        StoreError::Api {
            what: self.what(),
            source,
        }
    }

    fn remember(&self, secret: Option<Versioned<SecretData>>) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Cache::Known(secret);
    }

    /// Reads the Secret from the API (and keeps what it read).
    async fn fetch(&self) -> Result<Option<Versioned<SecretData>>, StoreError> {
        *self.fetched.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let secret = self.secret.get().await.map_err(|e| self.api_error(e))?;
        self.remember(secret.clone());
        Ok(secret)
    }

    /// The Secret as the manager's reads should see it: from the API while holding the lock,
    /// else from the API unless the last read is under [`READ_REUSE`] old. Handshakes never
    /// come here (they use [`Self::cached`]).
    async fn current(&self) -> Result<Option<Versioned<SecretData>>, StoreError> {
        let last = *self.fetched.lock().unwrap_or_else(|p| p.into_inner());
        let recent = last.is_some_and(|at| at.elapsed() < READ_REUSE);
        if self.held.load(Ordering::Acquire) || !recent {
            return self.fetch().await;
        }
        self.cached().await
    }

    /// The local copy; from the API only before the first read.
    async fn cached(&self) -> Result<Option<Versioned<SecretData>>, StoreError> {
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match cached {
            Cache::Known(secret) => Ok(secret),
            Cache::Unknown => self.fetch().await,
        }
    }

    /// The store's content; [`StoreError::Missing`] when its Secret does not exist.
    async fn load(&self) -> Result<Doc, StoreError> {
        match self.current().await? {
            Some(secret) => self.decode(&secret.value, true),
            None => Err(self.missing(Object::Store)),
        }
    }

    fn decoded(&self, secret: Option<Versioned<SecretData>>) -> Result<Doc, StoreError> {
        match secret {
            Some(secret) => self.decode(&secret.value, true),
            None => Ok(Doc::default()),
        }
    }

    /// The content of `data` if it is for our scope; empty if it is another's. `strict`: a
    /// damaged key is an error (reads), else it is dropped (a write replaces it).
    fn decode(&self, data: &SecretData, strict: bool) -> Result<Doc, StoreError> {
        let scope = data
            .get(SCOPE)
            .filter(|b| !b.is_empty())
            .and_then(|b| serde_json::from_slice::<Scope>(b).ok());
        match scope {
            Some(scope) if scope == self.scope => {}
            None if !data.contains_key(SCOPE) => return Ok(Doc::default()),
            _ => {
                if !self.foreign_reported.swap(true, Ordering::Relaxed) {
                    warn!(acme.store = %self.secret.describe(),
                          "the ACME store Secret holds state for another directory or names; \
                           starting afresh, and the next write replaces it");
                }
                return Ok(Doc::default());
            }
        }
        let text = |key: &str| {
            data.get(key)
                .filter(|b| !b.is_empty())
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        let cert = match (text(TLS_CRT), text(TLS_KEY)) {
            (Some(cert_pem), Some(key_pem)) => Some(StoredCert { cert_pem, key_pem }),
            _ => None,
        };
        Ok(Doc {
            legacy_account: data.get(ACCOUNT).filter(|b| !b.is_empty()).cloned(),
            cert,
            state: self.parse(data, STATE, strict)?.unwrap_or_default(),
            challenges: self.parse(data, CHALLENGES, strict)?.unwrap_or_default(),
        })
    }

    /// The JSON under `key`, if present. Damaged: an error when `strict`, else dropped.
    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        data: &SecretData,
        key: &str,
        strict: bool,
    ) -> Result<Option<T>, StoreError> {
        let Some(bytes) = data.get(key).filter(|b| !b.is_empty()) else {
            return Ok(None);
        };
        match serde_json::from_slice(bytes) {
            Ok(value) => Ok(Some(value)),
            Err(e) if strict => Err(StoreError::Corrupt {
                what: format!("{} key {key}", self.what()),
                message: e.to_string(),
            }),
            Err(e) => {
                warn!(acme.store = %self.secret.describe(), error = %e,
                      "a damaged key of the ACME store Secret is replaced: {key}");
                Ok(None)
            }
        }
    }

    fn json<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
            what: self.what(),
            message: e.to_string(),
        })
    }

    fn encode(&self, doc: &Doc) -> Result<SecretData, StoreError> {
        let (cert, key) = doc
            .cert
            .as_ref()
            .map(|c| {
                (
                    c.cert_pem.clone().into_bytes(),
                    c.key_pem.clone().into_bytes(),
                )
            })
            .unwrap_or_default();
        Ok([
            (SCOPE.to_string(), self.json(&self.scope)?),
            (STATE.to_string(), self.json(&doc.state)?),
            (CHALLENGES.to_string(), self.json(&doc.challenges)?),
            (TLS_CRT.to_string(), cert),
            (TLS_KEY.to_string(), key),
        ]
        .into())
    }

    /// Applies `change` to the Secret's current content and writes it through the shared
    /// read-modify-write ([`crate::k8s::modify_existing`]): on a 409 it reads again and
    /// re-applies `change`, so no other writer's update is lost. Never creates the Secret.
    /// An account key left from before the split stays until [`Self::load_account`] moved it
    /// (`change` clearing `legacy_account` removes it), unless it belongs to another scope.
    async fn modify(&self, change: impl Fn(&mut Doc)) -> Result<(), StoreError> {
        let current = self.current().await?;
        let apply = |data: &SecretData| {
            let mut doc = self.decode(data, false)?;
            change(&mut doc);
            let mut write = SecretWrite::from(self.encode(&doc)?);
            if doc.legacy_account.is_none() && data.contains_key(ACCOUNT) {
                write.remove.push(ACCOUNT.to_string());
            }
            Ok(Some(write))
        };
        match k8s::modify_existing(&self.secret, current, apply).await {
            Ok(Written::Changed(secret)) => {
                self.remember(Some(secret));
                Ok(())
            }
            Ok(Written::Unchanged(_)) => Ok(()),
            Err(err) => Err(self.write_error(Object::Store, err)),
        }
    }
}

#[async_trait::async_trait]
impl<S: SecretApi, L: LeaseApi> AcmeStore for SecretStore<S, L> {
    async fn load_account(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.account_moving_old().await
    }

    async fn save_account(&self, credentials: &[u8]) -> Result<(), StoreError> {
        self.write_account_dropping_old(credentials).await
    }

    async fn load_cert(&self) -> Result<Option<StoredCert>, StoreError> {
        Ok(self.load().await?.cert)
    }

    async fn save_cert(&self, cert: &StoredCert) -> Result<(), StoreError> {
        self.modify(|doc| doc.cert = Some(cert.clone())).await
    }

    async fn load_state(&self) -> Result<RenewalState, StoreError> {
        Ok(self.load().await?.state)
    }

    async fn save_state(&self, state: &RenewalState) -> Result<(), StoreError> {
        self.modify(|doc| doc.state = state.clone()).await
    }

    async fn load_challenges(&self) -> Result<Vec<ChallengeAnswer>, StoreError> {
        // Looked up per handshake: always the local copy, never an API call (the lock holder
        // wrote the answers itself, so its copy has them). A miss may ask for a fresh read.
        Ok(self.decoded(self.cached().await?)?.challenges)
    }

    async fn save_challenges(&self, answers: &[ChallengeAnswer]) -> Result<(), StoreError> {
        self.modify(|doc| doc.challenges = answers.to_vec()).await
    }

    async fn try_lock(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        // The Lease counts whole seconds; round up so it never lasts less than asked.
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let secs = i64::try_from(secs.max(1)).unwrap_or(i64::MAX);
        let now = epoch_seconds(SystemTime::now());
        let what = || format!("Lease {}", self.secret.describe());
        // A renewal must end, answered or not, well before the Lease can lapse: the holder
        // renews every third of `ttl` and stops ordering once two thirds passed without a
        // renewal (acme/lock.rs), so a renewal bounded by a third of `ttl` always lets it stop
        // before another replica may take the Lease (each API call is bounded as well).
        let acquire = lease::try_acquire_existing(&self.lease, holder, secs, now);
        let acquired = match tokio::time::timeout(ttl / 3, acquire).await {
            Ok(Err(ApiError::NotFound(_))) => return Err(self.missing(Object::Lease)),
            Ok(result) => result.map_err(|source| StoreError::Api {
                what: what(),
                source,
            })?,
            Err(_) => {
                return Err(StoreError::Api {
                    what: what(),
                    source: ApiError::Other(format!(
                        "the Lease call got no answer within {:?}",
                        ttl / 3
                    )),
                });
            }
        };
        let was_held = self.held.swap(acquired, Ordering::AcqRel);
        if acquired && !was_held {
            info!(acme.store = %self.secret.describe(), acme.holder = holder, "took the ACME ordering Lease");
            // From now on reads go to the API, starting with this one.
            self.fetch().await?;
        }
        Ok(acquired)
    }

    async fn unlock(&self, holder: &str) -> Result<(), StoreError> {
        self.held.store(false, Ordering::Release);
        let now = epoch_seconds(SystemTime::now());
        lease::release(&self.lease, holder, now)
            .await
            .map_err(|source| StoreError::Api {
                what: format!("Lease {}", self.secret.describe()),
                source,
            })
    }

    async fn changed(&self) {
        self.changed.notified().await
    }

    async fn refresh_challenges(&self) -> Result<Vec<ChallengeAnswer>, StoreError> {
        // Anyone can send an `acme-tls/1` hello with our name or a token-shaped HTTP-01 path:
        // without an order pending (the ordering replica records it before it publishes any
        // answer, and the watch brings that here) there is nothing a fresh read could find,
        // so a stranger's request costs no API call.
        let local = self.decoded(self.cached().await?)?;
        if local.state.pending.is_none() {
            return Ok(local.challenges);
        }
        let arrived = Instant::now();
        let mut last = self.refreshed.lock().await;
        // A read that started after we arrived has seen everything written before we asked.
        if last.is_some_and(|started| started >= arrived) {
            drop(last);
            return self.load_challenges().await;
        }
        if let Some(started) = *last {
            tokio::time::sleep_until(started + REFRESH_INTERVAL).await;
        }
        *last = Some(Instant::now());
        let secret = self.fetch().await?;
        drop(last);
        Ok(self.decoded(secret)?.challenges)
    }
}

#[path = "secret_account.rs"]
mod account;

#[cfg(test)]
#[path = "secret_store_tests.rs"]
mod tests;
