//! The injector's self-managed serving certificate: the replica holding a Lease keeps a CA and
//! a serving certificate in a Secret (made with rcgen, renewed before expiry) and the
//! webhook's `caBundle` equal to that CA; every replica serves what the Secret holds and picks
//! up a renewal on its next pass (hot reload: new handshakes only).

pub mod issue;

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::issue::{CA_CRT, IssueError, TLS_CRT};
use crate::certs::Publisher;
use crate::clock::epoch_seconds;
use crate::k8s::client::{KubeLease, KubeSecret, KubeWebhook};
use crate::k8s::{
    ApiError, LeaseApi, SecretApi, SecretData, WebhookApi, WriteError, Written, lease, modify,
};

/// The Secret's type: the pair is an ordinary TLS Secret's (with the CA beside it).
const SECRET_TYPE: &str = "kubernetes.io/tls";

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
    /// The Secret `secret` and Lease `lease` in `namespace`, and the configuration `webhook`.
    pub fn kube(
        client: kube::Client,
        namespace: &str,
        secret: &str,
        lease: &str,
        webhook: &str,
    ) -> Self {
        Self {
            secret: KubeSecret::new(client.clone(), namespace, secret),
            lease: KubeLease::new(client.clone(), namespace, lease),
            webhook: KubeWebhook::new(client, webhook),
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
        if role == Role::Leader {
            // The shared read-modify-write: a Secret someone else wrote meanwhile (a leader
            // that has not noticed it lost the Lease) is read again and planned afresh, so a
            // good certificate stored by another is kept, not replaced.
            let names = &self.names;
            let plan = |current: Option<&SecretData>| issue::plan(current, names, now);
            stored = match modify(&self.objects.secret, SECRET_TYPE, stored, plan).await? {
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
        if role == Role::Leader
            && let Some(ca) = stored.as_ref().and_then(|s| s.value.get(CA_CRT))
        {
            self.sync_ca_bundle(ca).await?;
        }
        Ok(role)
    }

    /// Takes the Lease when it is free or expired, renews it when ours.
    async fn lead(&self, now: SystemTime) -> Result<Role, ApiError> {
        let duration = i64::try_from(LEASE_DURATION.as_secs()).unwrap_or(i64::MAX);
        let held = lease::try_acquire(
            &self.objects.lease,
            &self.identity,
            duration,
            epoch_seconds(now),
        )
        .await?;
        Ok(if held { Role::Leader } else { Role::Follower })
    }

    async fn sync_ca_bundle(&self, ca: &[u8]) -> Result<(), ApiError> {
        let bundles = self.objects.webhook.ca_bundles().await?;
        if bundles.iter().any(|b| b.as_deref() != Some(ca)) {
            self.objects.webhook.set_ca_bundle(ca.to_vec()).await?;
            info!("set the webhook's caBundle to the injector's CA");
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
