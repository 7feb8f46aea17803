//! The traits of `super::api` over the real Kubernetes API (kube's client and watcher), and
//! the one client constructor: in-cluster service account or kubeconfig, as kube infers them.

use std::future::{Future, ready};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use super::api::{
    ApiError, LeaseApi, LeaseState, SecretApi, SecretData, SecretEvent, Versioned, WebhookApi,
    WebhookBundles,
};

/// Longest one get, create, patch or replace may take. kube's client has no read timeout by
/// default (kube-client config/mod.rs: `read_timeout: None`), so without this a call to an API
/// server that stopped answering hangs forever, and a Lease renewal that hangs lets a holder
/// believe it still holds a Lease that expired. 10 s is well under every Lease duration we use
/// and far above an apiserver's normal latency (its own request timeout is 60 s, for all verbs).
pub const API_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Opening the TCP + TLS connection to the API server.
pub const API_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `timeoutSeconds` of every watch: the API server ends a watch after this long
/// (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/watch.go, `timeout`), and kube's
/// watcher treats a watch silent for this plus 5 s as dead and re-opens it (kube-runtime
/// watcher.rs, `next_with_idle_timeout`). kube's default is 290 s; at 50 s a stalled watch is
/// re-opened within 55 s.
pub const WATCH_TIMEOUT_SECONDS: u32 = 50;

/// A client from the pod's service account, or from `KUBECONFIG` / `~/.kube/config`.
pub async fn connect() -> Result<kube::Client, ApiError> {
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| ApiError::Other(format!("no Kubernetes API configuration found: {e}")))?;
    config.connect_timeout = Some(API_CONNECT_TIMEOUT);
    kube::Client::try_from(config)
        .map_err(|e| ApiError::Other(format!("cannot build a Kubernetes API client: {e}")))
}

/// `call`, bounded by [`API_CALL_TIMEOUT`]; its errors mapped by [`api_error`].
async fn bounded<T>(
    what: &str,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(API_CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(api_error),
        Err(_) => Err(ApiError::Other(format!(
            "{what} got no answer within {API_CALL_TIMEOUT:?}"
        ))),
    }
}

/// Maps kube's errors onto the few cases callers act on.
fn api_error(err: kube::Error) -> ApiError {
    match err {
        kube::Error::Api(status) if status.code == 409 => ApiError::Conflict,
        kube::Error::Api(status) if status.code == 404 => ApiError::NotFound(status.message),
        kube::Error::Api(status) if status.code == 403 => ApiError::Forbidden(status.message),
        other => ApiError::Other(other.to_string()),
    }
}

/// Metadata for an object we write: its name, the version it replaces, our label, and its
/// owner if it has one.
fn meta(name: &str, based_on: Option<String>, owner: Option<&OwnerReference>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        resource_version: based_on,
        owner_references: owner.map(|o| vec![o.clone()]),
        labels: Some(
            [(
                "app.kubernetes.io/part-of".to_string(),
                "wss-sidecar".to_string(),
            )]
            .into(),
        ),
        ..Default::default()
    }
}

/// One Secret through kube.
#[derive(Clone)]
pub struct KubeSecret {
    api: Api<Secret>,
    namespace: String,
    name: String,
    owner: Option<OwnerReference>,
}

impl KubeSecret {
    /// The Secret `name` in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            name: name.into(),
            owner: None,
        }
    }

    /// The same Secret, created and updated with `owner` as its one ownerReference (so it
    /// is deleted with the owner), when there is one.
    pub fn owned_by(mut self, owner: Option<OwnerReference>) -> Self {
        self.owner = owner;
        self
    }
}

fn versioned(secret: Secret) -> Versioned<SecretData> {
    Versioned {
        resource_version: secret.metadata.resource_version.unwrap_or_default(),
        value: secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
    }
}

impl SecretApi for KubeSecret {
    fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    async fn get(&self) -> Result<Option<Versioned<SecretData>>, ApiError> {
        let secret = bounded("get Secret", self.api.get_opt(&self.name)).await?;
        Ok(secret.map(versioned))
    }

    async fn create(
        &self,
        type_: &str,
        data: SecretData,
    ) -> Result<Versioned<SecretData>, ApiError> {
        let secret = Secret {
            metadata: meta(&self.name, None, self.owner.as_ref()),
            type_: Some(type_.into()),
            data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
            ..Default::default()
        };
        let pp = PostParams::default();
        let created = bounded("create Secret", self.api.create(&pp, &secret)).await;
        created.map(versioned)
    }

    async fn patch(
        &self,
        data: SecretData,
        remove: Vec<String>,
        based_on: &str,
    ) -> Result<Versioned<SecretData>, ApiError> {
        // A resourceVersion in a merge patch is a precondition: the API server answers 409
        // unless the stored object is still at that version. A `null` removes a key (RFC 7386).
        let data: serde_json::Map<String, serde_json::Value> = data
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(BASE64.encode(v))))
            .chain(remove.into_iter().map(|k| (k, serde_json::Value::Null)))
            .collect();
        let mut patch = serde_json::json!({
            "metadata": { "resourceVersion": based_on },
            "data": data,
        });
        // A Secret created before it had an owner gets it with its next write.
        if let Some(owner) = &self.owner {
            patch["metadata"]["ownerReferences"] = serde_json::json!([owner]);
        }
        let pp = PatchParams::default();
        let patched = bounded(
            "patch Secret",
            self.api.patch(&self.name, &pp, &Patch::Merge(&patch)),
        )
        .await;
        patched.map(versioned)
    }

    fn watch(&self) -> BoxStream<'static, SecretEvent> {
        // List + watch of this one name; kube's watcher re-lists after `410 Gone` and resumes
        // from the last version after a dropped stream. The back-off spaces out retries.
        let config = watcher::Config::default()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(WATCH_TIMEOUT_SECONDS);
        let mut seen_since_list = false;
        watcher(self.api.clone(), config)
            .default_backoff()
            .filter_map(move |event| {
                let mapped = match event {
                    Ok(watcher::Event::Init) => {
                        seen_since_list = false;
                        None
                    }
                    Ok(watcher::Event::InitApply(secret) | watcher::Event::Apply(secret)) => {
                        seen_since_list = true;
                        Some(SecretEvent::Applied(versioned(secret)))
                    }
                    Ok(watcher::Event::InitDone) => {
                        (!seen_since_list).then_some(SecretEvent::Absent)
                    }
                    Ok(watcher::Event::Delete(_)) => Some(SecretEvent::Absent),
                    Err(err) => Some(SecretEvent::Interrupted(err.to_string())),
                };
                ready(mapped)
            })
            .boxed()
    }
}

/// One Lease through kube.
#[derive(Clone)]
pub struct KubeLease {
    api: Api<Lease>,
    name: String,
    owner: Option<OwnerReference>,
    /// The metadata of the last read: a replace (a PUT, the whole object) carries its labels,
    /// annotations and owners, so that it does not drop those whoever made the Lease set
    /// (helm's ownership annotations and `helm.sh/resource-policy` on a pre-created Lease).
    read_meta: Arc<Mutex<Option<ObjectMeta>>>,
}

impl KubeLease {
    /// The Lease `name` in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            owner: None,
            read_meta: Arc::default(),
        }
    }

    /// The same Lease, written with `owner` as its one ownerReference, when there is one.
    pub fn owned_by(mut self, owner: Option<OwnerReference>) -> Self {
        self.owner = owner;
        self
    }
}

impl LeaseApi for KubeLease {
    async fn get(&self) -> Result<Option<Versioned<LeaseState>>, ApiError> {
        let lease = bounded("get Lease", self.api.get_opt(&self.name)).await?;
        *self.read_meta.lock().unwrap_or_else(|p| p.into_inner()) =
            lease.as_ref().map(|l| l.metadata.clone());
        Ok(lease.map(|l| {
            let spec = l.spec.unwrap_or_default();
            Versioned {
                resource_version: l.metadata.resource_version.unwrap_or_default(),
                value: LeaseState {
                    holder: spec.holder_identity,
                    renewed_at: spec.renew_time.map_or(0, |t| t.0.as_second()),
                    duration_seconds: spec.lease_duration_seconds.map_or(0, i64::from),
                },
            }
        }))
    }

    async fn put(&self, lease: LeaseState, based_on: Option<String>) -> Result<(), ApiError> {
        let replace = based_on.is_some();
        let renewed = Timestamp::from_second(lease.renewed_at)
            .map_err(|e| ApiError::Other(format!("lease time: {e}")))?;
        let mut metadata = meta(&self.name, based_on, self.owner.as_ref());
        let read = self
            .read_meta
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let (true, Some(read)) = (replace, read) {
            metadata.labels = read.labels.or(metadata.labels);
            metadata.annotations = read.annotations;
            metadata.owner_references = metadata.owner_references.or(read.owner_references);
        }
        let object = Lease {
            metadata,
            spec: Some(LeaseSpec {
                holder_identity: lease.holder,
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: i32::try_from(lease.duration_seconds).ok(),
                ..Default::default()
            }),
        };
        let pp = PostParams::default();
        let written = if replace {
            bounded("replace Lease", self.api.replace(&self.name, &pp, &object)).await
        } else {
            bounded("create Lease", self.api.create(&pp, &object)).await
        };
        written.map(drop)
    }
}

/// One cluster-scoped MutatingWebhookConfiguration through kube.
#[derive(Clone)]
pub struct KubeWebhook {
    api: Api<MutatingWebhookConfiguration>,
    name: String,
}

impl KubeWebhook {
    /// The configuration `name`.
    pub fn new(client: kube::Client, name: &str) -> Self {
        Self {
            api: Api::all(client),
            name: name.into(),
        }
    }
}

impl KubeWebhook {
    /// An ownerReference to the configuration as `read`, for the objects the injector creates
    /// at run time: the garbage collector deletes them when the configuration goes (with
    /// `helm uninstall`). A cluster-scoped owner may own namespaced dependents, never the
    /// reverse (k8s.io/apimachinery pkg/apis/meta/v1/types.go, `OwnerReferences`: "Cluster-scoped
    /// dependents can only specify cluster-scoped owners"). `None` without a uid.
    pub fn owner_reference(&self, read: &Versioned<WebhookBundles>) -> Option<OwnerReference> {
        (!read.value.uid.is_empty()).then(|| OwnerReference {
            api_version: "admissionregistration.k8s.io/v1".into(),
            kind: "MutatingWebhookConfiguration".into(),
            name: self.name.clone(),
            uid: read.value.uid.clone(),
            // Not a controller, and no foreground-deletion blocking: the Secret and Lease
            // simply go with the configuration.
            controller: None,
            block_owner_deletion: None,
        })
    }
}

impl WebhookApi for KubeWebhook {
    async fn get(&self) -> Result<Versioned<WebhookBundles>, ApiError> {
        let config = bounded("get webhook configuration", self.api.get(&self.name)).await?;
        Ok(Versioned {
            resource_version: config.metadata.resource_version.unwrap_or_default(),
            value: WebhookBundles {
                uid: config.metadata.uid.unwrap_or_default(),
                webhooks: config
                    .webhooks
                    .unwrap_or_default()
                    .into_iter()
                    .map(|w| (w.name, w.client_config.ca_bundle.map(|b| b.0)))
                    .collect(),
            },
        })
    }

    async fn set_ca_bundle(
        &self,
        read: &Versioned<WebhookBundles>,
        pem: Vec<u8>,
    ) -> Result<(), ApiError> {
        // A JSON Patch (RFC 6902) of the caBundle fields alone: a typed PUT would drop every
        // field k8s-openapi does not know. `test` pins each index to the webhook read there,
        // and replacing resourceVersion with the one read makes the update conditional (the
        // apiserver answers 409 when the stored object moved on). A failed `test` is a 422
        // (apiserver pkg/endpoints/handlers/patch.go, `applyJSPatch`): a conflict here too.
        let bundle = BASE64.encode(&pem);
        let mut ops = vec![serde_json::json!(
            {"op": "replace", "path": "/metadata/resourceVersion", "value": read.resource_version}
        )];
        for (i, (name, _)) in read.value.webhooks.iter().enumerate() {
            ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": name}));
            ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle}));
        }
        let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
            .map_err(|e| ApiError::Other(format!("webhook caBundle patch: {e}")))?;
        let pp = PatchParams::default();
        let patched = tokio::time::timeout(
            API_CALL_TIMEOUT,
            self.api.patch(&self.name, &pp, &Patch::<()>::Json(patch)),
        )
        .await;
        match patched {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(kube::Error::Api(status))) if status.code == 422 => Err(ApiError::Conflict),
            Ok(Err(err)) => Err(api_error(err)),
            Err(_) => Err(ApiError::Other(format!(
                "patch webhook configuration got no answer within {API_CALL_TIMEOUT:?}"
            ))),
        }
    }
}
