//! The injector's self-managed serving certificate: the replica holding a Lease keeps a CA and
//! a serving certificate in a Secret (made with rcgen, renewed before expiry) and the
//! webhook's `caBundle` equal to that CA (and the previous one during a CA rotation); every
//! replica serves what the Secret holds and picks up a renewal on its next pass (hot reload:
//! new handshakes only). The Secret and the Lease are owned by the webhook configuration, so
//! they go with it.

pub mod issue;

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::issue::{CA_CRT, IssueError, TLS_CRT};
use crate::certs::Publisher;
use crate::clock::epoch_seconds;
use crate::k8s::client::{KubeLease, KubeSecret, KubeWebhook};
use crate::k8s::{
    ApiError, LeaseApi, SecretApi, SecretData, SecretWrite, Versioned, WebhookApi, WebhookBundles,
    WriteError, Written, lease, modify_existing,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// Where the Secret and the Lease come from when they are missing: the injector never creates
/// them (see `reconcile`).
const MISSING_HINT: &str = "the chart makes the injector's Secret and Lease \
    (templates/injector-objects.yaml, certificate.source=self); without the chart create them: \
    kubectl create secret generic NAME -n NAMESPACE, and a coordination.k8s.io/v1 Lease NAME-cert";

/// How often each replica reconciles: renews its Lease (if it leads), checks the Secret and
/// the `caBundle`, and reloads a renewed certificate.
pub const TICK: Duration = Duration::from_secs(10);
/// A leader that stops renewing for this long is replaced (three missed ticks).
pub const LEASE_DURATION: Duration = Duration::from_secs(30);

/// Why a pass failed; the next pass tries again.
#[derive(Debug, thiserror::Error)]
pub enum SelfCertError {
    /// The Kubernetes API refused or failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// rcgen failed.
    #[error(transparent)]
    Issue(#[from] IssueError),
}

/// True when every webhook's `caBundle` holds the CA stored in `current`.
fn trusts(bundles: &WebhookBundles, current: Option<&SecretData>) -> bool {
    let Some(ca) = current
        .and_then(|data| data.get(CA_CRT))
        .filter(|ca| !ca.is_empty())
    else {
        return false;
    };
    !bundles.webhooks.is_empty()
        && bundles.webhooks.iter().all(|(_, bundle)| {
            bundle
                .as_deref()
                .is_some_and(|b| b.windows(ca.len()).any(|w| w == &ca[..]))
        })
}

/// What one replica is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the Lease: writes the Secret and the `caBundle`.
    Leader,
    /// Only reads the Secret.
    Follower,
}

impl From<WriteError<IssueError>> for SelfCertError {
    fn from(err: WriteError<IssueError>) -> Self {
        match err {
            WriteError::Api(err) => Self::Api(err),
            WriteError::Change(err) => Self::Issue(err),
        }
    }
}

/// The objects the injector's certificate lives in: the Secret and the Lease in its namespace,
/// and its cluster-scoped MutatingWebhookConfiguration.
pub struct Objects<S = KubeSecret, L = KubeLease, W = KubeWebhook> {
    /// The Secret holding the CA and the serving pair.
    pub secret: S,
    /// The Lease deciding which replica writes.
    pub lease: L,
    /// The webhook configuration whose `caBundle` is kept equal to the CA.
    pub webhook: W,
}

impl Objects {
    /// The Secret `secret` and Lease `lease` in `namespace`, written with `owner` as their
    /// ownerReference, and the configuration `webhook`.
    pub fn kube(
        client: kube::Client,
        namespace: &str,
        secret: &str,
        lease: &str,
        webhook: &str,
        owner: Option<OwnerReference>,
    ) -> Self {
        Self {
            secret: KubeSecret::new(client.clone(), namespace, secret).owned_by(owner.clone()),
            lease: KubeLease::new(client.clone(), namespace, lease).owned_by(owner),
            webhook: KubeWebhook::new(client, webhook),
        }
    }

    /// [`Objects::kube`], owned by the configuration `webhook`: waits (retrying every
    /// [`TICK`], until `stop`) for it to exist, since an ownerReference must name its uid and
    /// the garbage collector deletes an object whose owner's uid does not exist. `None` when
    /// stopped first.
    pub async fn kube_owned(
        client: kube::Client,
        namespace: &str,
        secret: &str,
        lease: &str,
        webhook: &str,
        stop: &CancellationToken,
    ) -> Option<Self> {
        let configuration = KubeWebhook::new(client.clone(), webhook);
        loop {
            match configuration.get().await {
                Ok(read) => {
                    let owner = configuration.owner_reference(&read);
                    return Some(Self::kube(client, namespace, secret, lease, webhook, owner));
                }
                Err(err) => warn!(webhook = %webhook, error = %err,
                    "cannot read the webhook configuration (the owner of the injector's Secret \
                     and Lease); retrying"),
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }
}

/// One replica's certificate manager.
pub struct Manager<S = KubeSecret, L = KubeLease, W = KubeWebhook> {
    objects: Objects<S, L, W>,
    identity: String,
    names: Vec<String>,
    publisher: Publisher,
    served: Option<Vec<u8>>,
}

impl<S: SecretApi, L: LeaseApi, W: WebhookApi> Manager<S, L, W> {
    /// A manager for the replica `identity` (its pod name), serving a certificate for `names`
    /// (the webhook Service's DNS names) through `publisher`.
    pub fn new(
        objects: Objects<S, L, W>,
        identity: String,
        names: Vec<String>,
        publisher: Publisher,
    ) -> Self {
        Self {
            objects,
            identity,
            names,
            publisher,
            served: None,
        }
    }

    /// One pass as of `now`.
    pub async fn reconcile(&mut self, now: SystemTime) -> Result<Role, SelfCertError> {
        let role = self.lead(now).await?;
        let mut stored = self.objects.secret.get().await?;
        let mut webhook = None;
        if role == Role::Leader {
            // Without the configuration nothing trusts a new CA yet: plan as untrusted, serve,
            // and report the failure after.
            let read = self.objects.webhook.get().await;
            let bundles = read.as_ref().ok().map(|r| r.value.clone());
            webhook = Some(read);
            // The shared read-modify-write: a Secret someone else wrote meanwhile (a leader
            // that has not noticed it lost the Lease) is read again and planned afresh, so a
            // good certificate stored by another is kept, not replaced.
            let names = &self.names;
            let plan = |current: Option<&SecretData>| {
                let trusted = bundles.as_ref().is_some_and(|b| trusts(b, current));
                issue::plan(current, names, now, trusted)
            };
            // The Secret is made beforehand (the chart renders it), so the Role needs no
            // unscoped `create`: an app able to create Secrets in this namespace could make one
            // of type service-account-token under this name and read a token.
            let plan = |current: &SecretData| Ok(plan(Some(current))?.map(SecretWrite::from));
            stored = match modify_existing(&self.objects.secret, stored, plan).await? {
                Written::Changed(secret) => {
                    info!("stored a new serving certificate for the injector");
                    Some(secret)
                }
                Written::Unchanged(secret) => secret,
            };
        }
        // Serve first, then advertise: once the API server trusts the CA, we answer with it.
        if let Some(stored) = &stored {
            self.serve(&stored.value, now);
        }
        if let Some(read) = webhook {
            let read = read?;
            if let Some(bundle) = stored.as_ref().and_then(|s| issue::ca_bundle(&s.value)) {
                self.sync_ca_bundle(&read, bundle).await?;
            }
        }
        Ok(role)
    }

    /// Takes the Lease when it is free or expired, renews it when ours.
    async fn lead(&self, now: SystemTime) -> Result<Role, ApiError> {
        let duration = i64::try_from(LEASE_DURATION.as_secs()).unwrap_or(i64::MAX);
        let held = lease::try_acquire_existing(
            &self.objects.lease,
            &self.identity,
            duration,
            epoch_seconds(now),
        )
        .await?;
        Ok(if held { Role::Leader } else { Role::Follower })
    }

    /// Puts `bundle` in every webhook of the configuration `read` that holds another. Run
    /// every pass, so a `caBundle` wiped by someone else (`kubectl replace`, `helm upgrade
    /// --force` of a render without it) is back within a [`TICK`].
    async fn sync_ca_bundle(
        &self,
        read: &Versioned<WebhookBundles>,
        bundle: Vec<u8>,
    ) -> Result<(), ApiError> {
        let stale = read
            .value
            .webhooks
            .iter()
            .any(|(_, b)| b.as_deref() != Some(&bundle[..]));
        if stale {
            let cas = bundle.windows(5).filter(|w| w == b"BEGIN").count();
            self.objects.webhook.set_ca_bundle(read, bundle).await?;
            info!(
                ca.count = cas,
                "set the webhook's caBundle to the injector's CA"
            );
        }
        Ok(())
    }

    /// Publishes the stored pair if it changed since the last pass.
    fn serve(&mut self, data: &SecretData, now: SystemTime) {
        let Some(cert) = data.get(TLS_CRT) else {
            return;
        };
        if self.served.as_ref() == Some(cert) {
            return;
        }
        self.served = Some(cert.clone());
        match issue::serving_pair(data, now) {
            Ok(pair) => self.publisher.publish(pair),
            Err(err) => self.publisher.reject(&err),
        }
    }

    /// Reconciles every [`TICK`] until `stop`.
    pub fn spawn(mut self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut last_role = None;
            loop {
                match self.reconcile(SystemTime::now()).await {
                    Ok(role) => {
                        if last_role != Some(role) {
                            info!(identity = %self.identity, role = ?role, "injector certificate role");
                            last_role = Some(role);
                        }
                    }
                    Err(SelfCertError::Api(ApiError::NotFound(what))) => warn!(
                        missing = %what,
                        hint = MISSING_HINT,
                        "injector certificate pass failed: an object it needs does not exist; retrying"
                    ),
                    Err(err) => warn!(error = %err, "injector certificate pass failed; retrying"),
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(TICK) => {}
                }
            }
        })
    }
}
