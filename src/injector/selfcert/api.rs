//! What the self-managed certificate needs from the Kubernetes API, as a narrow trait: one
//! Secret, one Lease, one webhook's `caBundle`. Writes carry the `resourceVersion` they were
//! based on, so two replicas can never overwrite each other's work.

use std::collections::BTreeMap;
use std::future::Future;

/// A stored object and the `resourceVersion` a replace must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The object's `metadata.resourceVersion`.
    pub resource_version: String,
    /// Its content.
    pub value: T,
}

/// The Secret's data: `tls.crt`, `tls.key`, `ca.crt`, `ca.key` as bytes.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// Who holds the Lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// `spec.holderIdentity`.
    pub holder: Option<String>,
    /// `spec.renewTime`, seconds since the epoch.
    pub renewed_at: i64,
    /// `spec.leaseDurationSeconds`.
    pub duration_seconds: i64,
}

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Another writer got there first (HTTP 409): read again and retry.
    #[error("conflict: the object changed since it was read")]
    Conflict,
    /// The named object does not exist (HTTP 404) where it must (the webhook configuration).
    #[error("{0} not found")]
    NotFound(String),
    /// Anything else: network, authorisation, a malformed answer.
    #[error("kubernetes API: {0}")]
    Other(String),
}

/// The calls the certificate manager makes; [`super::kube_api::KubeApi`] is the real one.
pub trait ClusterApi: Send + Sync + 'static {
    /// The certificate Secret, if it exists.
    fn get_secret(
        &self,
    ) -> impl Future<Output = Result<Option<Versioned<SecretData>>, ApiError>> + Send;
    /// Creates the Secret (`based_on` None) or replaces the version `based_on`.
    fn put_secret(
        &self,
        data: SecretData,
        based_on: Option<String>,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// The Lease, if it exists.
    fn get_lease(
        &self,
    ) -> impl Future<Output = Result<Option<Versioned<LeaseState>>, ApiError>> + Send;
    /// Creates the Lease (`based_on` None) or replaces the version `based_on`.
    fn put_lease(
        &self,
        lease: LeaseState,
        based_on: Option<String>,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// The `caBundle` of every webhook in the configuration (base64-decoded PEM).
    fn ca_bundles(&self) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, ApiError>> + Send;
    /// Sets the `caBundle` of every webhook in the configuration to `pem`.
    fn set_ca_bundle(&self, pem: Vec<u8>) -> impl Future<Output = Result<(), ApiError>> + Send;
}
