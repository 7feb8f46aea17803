//! The injector's self-managed serving certificate: the replica holding a Lease keeps a CA and
//! a serving certificate in a Secret (made with rcgen, renewed before expiry) and the
//! webhook's `caBundle` equal to that CA; every replica serves what the Secret holds and picks
//! up a renewal on its next pass (hot reload: new handshakes only).

pub mod api;
pub mod issue;
pub mod kube_api;

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::api::{ApiError, ClusterApi, LeaseState, SecretData};
use self::issue::{CA_CRT, IssueError, TLS_CRT};
use crate::certs::Publisher;
use crate::certs::pair::epoch_seconds;

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

/// One replica's certificate manager.
pub struct Manager<A: ClusterApi> {
    api: A,
    identity: String,
    names: Vec<String>,
    publisher: Publisher,
    served: Option<Vec<u8>>,
}

impl<A: ClusterApi> Manager<A> {
    /// A manager for the replica `identity` (its pod name), serving a certificate for `names`
    /// (the webhook Service's DNS names) through `publisher`.
    pub fn new(api: A, identity: String, names: Vec<String>, publisher: Publisher) -> Self {
        Self {
            api,
            identity,
            names,
            publisher,
            served: None,
        }
    }

    /// One pass as of `now`.
    pub async fn reconcile(&mut self, now: SystemTime) -> Result<Role, SelfCertError> {
        let role = self.lead(now).await?;
        let mut stored = self.api.get_secret().await?;
        if role == Role::Leader {
            let current = stored.as_ref().map(|s| &s.value);
            if let Some(data) = issue::plan(current, &self.names, now)? {
                let based_on = stored.as_ref().map(|s| s.resource_version.clone());
                match self.api.put_secret(data, based_on).await {
                    Ok(()) => info!("stored a new serving certificate for the injector"),
                    // Someone else wrote it (a leader that has not noticed it lost the Lease):
                    // serve theirs, decide again next pass.
                    Err(ApiError::Conflict) => {}
                    Err(err) => return Err(err.into()),
                }
                stored = self.api.get_secret().await?;
            }
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
        let now = epoch_seconds(now);
        let ours = LeaseState {
            holder: Some(self.identity.clone()),
            renewed_at: now,
            duration_seconds: LEASE_DURATION.as_secs() as i64,
        };
        let based_on = match self.api.get_lease().await? {
            None => None,
            Some(lease) => {
                let mine = lease.value.holder.as_deref() == Some(self.identity.as_str());
                let expired = lease.value.renewed_at + lease.value.duration_seconds < now;
                if !mine && !expired {
                    return Ok(Role::Follower);
                }
                Some(lease.resource_version)
            }
        };
        match self.api.put_lease(ours, based_on).await {
            Ok(()) => Ok(Role::Leader),
            Err(ApiError::Conflict) => Ok(Role::Follower),
            Err(err) => Err(err),
        }
    }

    async fn sync_ca_bundle(&self, ca: &[u8]) -> Result<(), ApiError> {
        let bundles = self.api.ca_bundles().await?;
        if bundles.iter().any(|b| b.as_deref() != Some(ca)) {
            self.api.set_ca_bundle(ca.to_vec()).await?;
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
