//! What certificate sources, the ACME store and the injector's own certificate need from the
//! Kubernetes API, as narrow traits over one named Secret, one named Lease and one webhook
//! configuration. Writes name the `resourceVersion` they were based on, so a writer that raced
//! another gets [`ApiError::Conflict`], never a silent overwrite.

use std::collections::BTreeMap;
use std::future::Future;

use futures_util::stream::BoxStream;

/// A stored object and the `resourceVersion` a replace must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The object's `metadata.resourceVersion`.
    pub resource_version: String,
    /// Its content.
    pub value: T,
}

/// A Secret's `data`, decoded: key → bytes.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// Who holds a Lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// `spec.holderIdentity`.
    pub holder: Option<String>,
    /// `spec.renewTime`, seconds since the epoch.
    pub renewed_at: i64,
    /// `spec.leaseDurationSeconds`.
    pub duration_seconds: i64,
}

impl LeaseState {
    /// True when the holder stopped renewing more than a lease duration before `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.renewed_at.saturating_add(self.duration_seconds) < now
    }
}

/// Why an API call failed. None is fatal: callers retry, and keep serving what they have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Another writer got there first (HTTP 409): read again and retry.
    #[error("conflict: the object changed since it was read")]
    Conflict,
    /// The named object does not exist (HTTP 404).
    #[error("{0} not found")]
    NotFound(String),
    /// RBAC refused the call (HTTP 403): the Role is missing a verb or a name.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Anything else: network, a server error, a malformed answer.
    #[error("kubernetes API: {0}")]
    Other(String),
}

/// What a watch of one Secret reports. The stream retries on its own (with back-off, re-listing
/// after `410 Gone`), so it only ends when its owner drops it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretEvent {
    /// The Secret as it is now: when the watch starts or re-lists, and on every change.
    Applied(Versioned<SecretData>),
    /// The Secret does not exist: when the watch starts or re-lists, or it was deleted.
    Absent,
    /// The watch broke; it reconnects by itself. For logs.
    Interrupted(String),
}

/// One named Secret; [`super::client::KubeSecret`] is the real one.
pub trait SecretApi: Send + Sync + 'static {
    /// `namespace/name`, for logs and errors.
    fn describe(&self) -> String;
    /// The Secret, if it exists.
    fn get(&self) -> impl Future<Output = Result<Option<Versioned<SecretData>>, ApiError>> + Send;
    /// Creates the Secret with `data` (type `type_`); [`ApiError::Conflict`] if it exists.
    fn create(
        &self,
        type_: &str,
        data: SecretData,
    ) -> impl Future<Output = Result<Versioned<SecretData>, ApiError>> + Send;
    /// Sets the keys in `data` if the Secret is still at version `based_on` (a merge patch
    /// with a `resourceVersion` precondition: other keys, the type, labels and annotations are
    /// kept); [`ApiError::Conflict`] if it is not current.
    fn update(
        &self,
        data: SecretData,
        based_on: &str,
    ) -> impl Future<Output = Result<Versioned<SecretData>, ApiError>> + Send {
        self.patch(data, Vec::new(), based_on)
    }
    /// As [`SecretApi::update`], and removes the keys in `remove` (`null` in the merge patch,
    /// RFC 7386).
    fn patch(
        &self,
        data: SecretData,
        remove: Vec<String>,
        based_on: &str,
    ) -> impl Future<Output = Result<Versioned<SecretData>, ApiError>> + Send;
    /// Follows the Secret: its state first, then every change, across reconnects.
    fn watch(&self) -> BoxStream<'static, SecretEvent>;
}

/// One named Lease (`coordination.k8s.io/v1`); [`super::client::KubeLease`] is the real one.
pub trait LeaseApi: Send + Sync + 'static {
    /// The Lease, if it exists.
    fn get(&self) -> impl Future<Output = Result<Option<Versioned<LeaseState>>, ApiError>> + Send;
    /// Creates the Lease (`based_on` None) or replaces the version `based_on`.
    fn put(
        &self,
        lease: LeaseState,
        based_on: Option<String>,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// A MutatingWebhookConfiguration as far as its `caBundle`s go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookBundles {
    /// `metadata.uid`: what an ownerReference to the configuration names ("" when unknown).
    pub uid: String,
    /// Each webhook's `name` and `clientConfig.caBundle` (base64-decoded PEM), in order.
    pub webhooks: Vec<(String, Option<Vec<u8>>)>,
}

/// One MutatingWebhookConfiguration's `caBundle`s; [`super::client::KubeWebhook`] is the real
/// one.
pub trait WebhookApi: Send + Sync + 'static {
    /// The configuration's `caBundle`s, with the version a patch must name.
    fn get(&self) -> impl Future<Output = Result<Versioned<WebhookBundles>, ApiError>> + Send;
    /// Sets the `caBundle` of every webhook of `read` to `pem`, touching nothing else, if the
    /// configuration is still at `read`'s version with the same webhooks in the same places;
    /// [`ApiError::Conflict`] if not.
    fn set_ca_bundle(
        &self,
        read: &Versioned<WebhookBundles>,
        pem: Vec<u8>,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}
