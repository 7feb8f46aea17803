//! [`ClusterApi`] over the real Kubernetes API (kube's client): the Secret and the Lease in
//! the injector's namespace, and the cluster-scoped MutatingWebhookConfiguration.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use crate::k8s::LeaseApi;
use crate::k8s::client::{KubeLease, api_error, meta};

use super::api::{ApiError, ClusterApi, LeaseState, SecretData, Versioned};

/// The objects the injector's certificate lives in.
#[derive(Clone)]
pub struct KubeApi {
    secrets: Api<Secret>,
    lease: KubeLease,
    webhooks: Api<MutatingWebhookConfiguration>,
    secret_name: String,
    webhook_name: String,
}

impl KubeApi {
    /// The Secret and Lease `secret_name`/`lease_name` in `namespace`, and the webhook
    /// configuration `webhook_name`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        secret_name: &str,
        lease_name: &str,
        webhook_name: &str,
    ) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            lease: KubeLease::new(client.clone(), namespace, lease_name),
            webhooks: Api::all(client),
            secret_name: secret_name.into(),
            webhook_name: webhook_name.into(),
        }
    }
}

/// Creates `object`, or replaces it (the `resourceVersion` in its metadata must still be
/// current, else [`ApiError::Conflict`]).
async fn create_or_replace<K>(
    api: &Api<K>,
    name: &str,
    object: &K,
    replace: bool,
) -> Result<(), ApiError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let pp = PostParams::default();
    let result = if replace {
        api.replace(name, &pp, object).await
    } else {
        api.create(&pp, object).await
    };
    result.map(drop).map_err(api_error)
}

impl ClusterApi for KubeApi {
    async fn get_secret(&self) -> Result<Option<Versioned<SecretData>>, ApiError> {
        let secret = self
            .secrets
            .get_opt(&self.secret_name)
            .await
            .map_err(api_error)?;
        Ok(secret.map(|s| Versioned {
            resource_version: s.metadata.resource_version.unwrap_or_default(),
            value: s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
        }))
    }

    async fn put_secret(&self, data: SecretData, based_on: Option<String>) -> Result<(), ApiError> {
        let replace = based_on.is_some();
        let secret = Secret {
            metadata: meta(&self.secret_name, based_on),
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
            ..Default::default()
        };
        create_or_replace(&self.secrets, &self.secret_name, &secret, replace).await
    }

    async fn get_lease(&self) -> Result<Option<Versioned<LeaseState>>, ApiError> {
        self.lease.get().await
    }

    async fn put_lease(&self, lease: LeaseState, based_on: Option<String>) -> Result<(), ApiError> {
        self.lease.put(lease, based_on).await
    }

    async fn ca_bundles(&self) -> Result<Vec<Option<Vec<u8>>>, ApiError> {
        let config = self
            .webhooks
            .get(&self.webhook_name)
            .await
            .map_err(api_error)?;
        Ok(config
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .map(|w| w.client_config.ca_bundle.map(|b| b.0))
            .collect())
    }

    async fn set_ca_bundle(&self, pem: Vec<u8>) -> Result<(), ApiError> {
        // Read, change, replace with the version read: a concurrent edit is a conflict, not
        // a lost update.
        let mut config = self
            .webhooks
            .get(&self.webhook_name)
            .await
            .map_err(api_error)?;
        for webhook in config.webhooks.iter_mut().flatten() {
            webhook.client_config.ca_bundle = Some(ByteString(pem.clone()));
        }
        self.webhooks
            .replace(&self.webhook_name, &PostParams::default(), &config)
            .await
            .map(drop)
            .map_err(api_error)
    }
}
