//! What ACME keeps between runs and shares between replicas, behind a trait a directory or a
//! Kubernetes Secret + Lease can implement.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why the store could not be read or written. Never fatal: the manager retries and keeps
/// serving what it has.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on `what`.
    #[error("acme store: cannot access {what}: {source}")]
    Io {
        /// The file or object.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The Kubernetes API refused or failed a read or write of the store's Secret or Lease.
    #[error("acme store: {what}: {source}")]
    Api {
        /// The object.
        what: String,
        /// The error.
        source: crate::k8s::ApiError,
    },
    /// The store's Secret or Lease does not exist. The sidecar never creates them (creating
    /// Secrets cannot be limited to a name, so a Role allowing it would let the app create
    /// any Secret): they are made beforehand, by the chart's `sidecarAccess` or by hand.
    #[error(
        "acme store: {kind} {what} does not exist; the sidecar does not create it: create it \
         beforehand (the chart's sidecarAccess acmeStores does), e.g. `{create}`"
    )]
    Missing {
        /// `Secret` or `Lease`.
        kind: &'static str,
        /// `namespace/name`.
        what: String,
        /// A command that creates it.
        create: String,
    },
    /// Stored data did not parse (hand-edited, or written by an incompatible version).
    #[error("acme store: {what} is damaged: {message}")]
    Corrupt {
        /// The file or object.
        what: String,
        /// What is wrong.
        message: String,
    },
}

/// A certificate chain and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCert {
    /// Leaf first, then the chain.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// Renewal and failure state, shared so that every replica (and a restarted one) backs off
/// the same way and a crash loop cannot cause a burst of orders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalState {
    /// No order before this time (seconds since the epoch), after a failure.
    pub next_attempt: Option<i64>,
    /// Failed orders since the last success.
    pub failures: u32,
    /// The certificate id (RFC 9773) the last `replaces` order named, so it is sent only once.
    pub replaced: Option<String>,
    /// The latest attempts, newest last (bounded by [`HISTORY_LEN`]).
    pub history: Vec<Attempt>,
    /// The order in progress, so that a replica taking over from one that died mid-order
    /// (or a restarted one) resumes it instead of placing another.
    #[serde(default)]
    pub pending: Option<PendingOrder>,
}

/// An order placed and not yet finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOrder {
    /// The order's URL at the CA.
    pub url: String,
    /// When it was placed, seconds since the epoch.
    pub placed_at: i64,
    /// The private key (PEM) of the CSR, saved before finalizing: an order finalized by a
    /// replica that then died can still be downloaded and used.
    pub key_pem: Option<String>,
}

/// How many attempts [`RenewalState::history`] keeps.
pub const HISTORY_LEN: usize = 10;

/// One order attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it ended, seconds since the epoch.
    pub at: i64,
    /// `None` on success, else the error class and message.
    pub error: Option<(String, String)>,
}

/// A challenge answer any replica can serve while the CA validates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeAnswer {
    /// The DNS name being validated (TLS-ALPN-01 is looked up by it).
    pub name: String,
    /// The challenge token (HTTP-01 is looked up by it).
    pub token: String,
    /// The key authorization: the HTTP-01 body, and hashed into the TLS-ALPN-01 certificate.
    pub key_authorization: String,
}

/// The state of one certificate (one directory URL and set of names). Implementations write
/// atomically, keep secrets owner-only, and must never mix the state of two directory URLs.
#[async_trait::async_trait]
pub trait AcmeStore: Send + Sync + 'static {
    /// The serialized account credentials (opaque JSON), if an account was created.
    async fn load_account(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Keeps the account credentials.
    async fn save_account(&self, credentials: &[u8]) -> Result<(), StoreError>;
    /// The last issued certificate, if any.
    async fn load_cert(&self) -> Result<Option<StoredCert>, StoreError>;
    /// Keeps a newly issued certificate.
    async fn save_cert(&self, cert: &StoredCert) -> Result<(), StoreError>;
    /// The renewal state (default when none was saved).
    async fn load_state(&self) -> Result<RenewalState, StoreError>;
    /// Keeps the renewal state.
    async fn save_state(&self, state: &RenewalState) -> Result<(), StoreError>;
    /// The challenge answers pending now.
    async fn load_challenges(&self) -> Result<Vec<ChallengeAnswer>, StoreError>;
    /// Replaces the pending challenge answers (empty when the order is done).
    async fn save_challenges(&self, answers: &[ChallengeAnswer]) -> Result<(), StoreError>;
    /// Takes the ordering lock for `holder` until `ttl` from now, or extends it if `holder`
    /// has it. True when `holder` holds it afterwards; an expired lock is taken over.
    async fn try_lock(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Releases the lock if `holder` has it.
    async fn unlock(&self, holder: &str) -> Result<(), StoreError>;
    /// Resolves when the stored state may have changed (another replica wrote it), so that a
    /// waiting replica loads a new certificate at once. A store that cannot tell never
    /// resolves, and the manager polls it.
    async fn changed(&self) {
        std::future::pending::<()>().await
    }
    /// The pending challenge answers read afresh from the source of truth, for a validation
    /// the answers at hand miss (the ordering replica may have just published them).
    async fn refresh_challenges(&self) -> Result<Vec<ChallengeAnswer>, StoreError> {
        self.load_challenges().await
    }
}
