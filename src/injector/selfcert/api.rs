//! What the self-managed certificate needs from the Kubernetes API, as a narrow trait: one
//! Secret, one Lease, one webhook's `caBundle`. Writes carry the `resourceVersion` they were
//! based on, so two replicas can never overwrite each other's work.

use std::future::Future;

pub use crate::k8s::api::{ApiError, LeaseState, SecretData, Versioned};

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
