//! TLS 1.3 session tickets whose keys replicas can share, so a client that reconnects to
//! another replica resumes: the key text format (`keys`), our `ProducesTickets` (`ticketer`),
//! whether a ClientHello offers TLS 1.3 (`hello`, so TLS 1.2 gets no ticket),
//! and where keys come from: random and rotated in memory (`memory`), a file the operator
//! rotates (`file`), or a Secret that every replica watches and one Lease holder rotates
//! (`secret`, rotation decided in `rotation`).

mod file;
mod hello;
mod keys;
mod memory;
mod rotation;
mod secret;
mod ticketer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use file::{FileKeys, FileKeysError};
pub use hello::offers_tls13;
pub use keys::{KeyError, KeyText, TicketKeys};
pub use memory::spawn_memory_rotation;
pub use secret::SecretKeys;
pub use ticketer::{MAX_LIFETIME, Ticketer};

use crate::k8s::{LeaseApi, ObjectRef, SecretApi};
use crate::metrics::Metrics;

/// The shortest `--ticket-key-rotation`: every replica must see a new key (Secret watch,
/// file events) well before it starts encrypting, a rotation later.
pub const MIN_ROTATION: Duration = Duration::from_secs(60);
/// The default `--ticket-key-rotation` (see the flag's help for why).
pub const DEFAULT_ROTATION: &str = "12h";

/// Where session-ticket keys come from (`--ticket-keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketKeySource {
    /// Random keys rotated in memory: resumption on this process only (NGINX's default per
    /// worker).
    Memory,
    /// A Secret every replica watches; the holder of its Lease rotates it.
    Secret(ObjectRef),
    /// A file the operator writes and rotates (re-read when it changes).
    File(PathBuf),
    /// No tickets: TLS 1.3 resumption by the stateful cache of this process only.
    Off,
}

impl TicketKeySource {
    /// Parses `memory`, `secret:[NAMESPACE/]NAME`, `file:PATH` or `off`.
    pub fn parse(value: &str) -> Result<Self, String> {
        if let Some(secret) = value.strip_prefix("secret:") {
            return ObjectRef::parse(secret)
                .map(Self::Secret)
                .map_err(|why| format!("secret:{secret}: {why}"));
        }
        if let Some(path) = value.strip_prefix("file:") {
            if path.is_empty() {
                return Err("file: needs a path (file:/etc/wss-sidecar/ticket-keys)".into());
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        match value {
            "memory" => Ok(Self::Memory),
            "off" => Ok(Self::Off),
            _ => Err(format!(
                "expected memory, secret:[NAMESPACE/]NAME, file:PATH or off, got {value:?}"
            )),
        }
    }
}

/// Session tickets, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketsConfig {
    /// Where the keys come from.
    pub source: TicketKeySource,
    /// How often keys rotate (`memory`, `secret:`); also the tickets' lifetime.
    pub rotation: Duration,
}

impl TicketsConfig {
    /// The Secret holding the keys, when they come from one (it needs the Kubernetes API).
    pub fn secret(&self) -> Option<&ObjectRef> {
        match &self.source {
            TicketKeySource::Secret(secret) => Some(secret),
            _ => None,
        }
    }
}

/// Why the ticket keys cannot be set up at start-up (`--ticket-keys` is at fault).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Random keys cannot be made.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The key file is unusable.
    #[error(transparent)]
    File(#[from] FileKeysError),
    /// `secret:` was given but there is no Kubernetes API client.
    #[error("secret: needs the Kubernetes API, and no client could be made")]
    NoKubernetes,
}

/// The ticketer `config` asks for, with its key source running until `stop`: `None` for
/// `off`. `secret` is the key Secret and its Lease, for `secret:`. A key file is loaded before
/// this returns (start-up fails if it is unusable); a Secret is loaded when its watch reports
/// it (until then no ticket is issued).
pub async fn start<S: SecretApi, L: LeaseApi>(
    config: &TicketsConfig,
    secret: Option<(S, L)>,
    metrics: &Arc<Metrics>,
    poll_interval: Duration,
    stop: &CancellationToken,
) -> Result<Option<Arc<Ticketer>>, StartError> {
    let ticketer = Ticketer::new(config.rotation, &metrics.tickets);
    match &config.source {
        TicketKeySource::Off => return Ok(None),
        TicketKeySource::Memory => {
            let rotations = metrics.tickets.key_rotations.clone();
            spawn_memory_rotation(
                Arc::clone(&ticketer),
                config.rotation,
                rotations,
                stop.child_token(),
            )?;
        }
        TicketKeySource::File(path) => {
            let (ticketer, metrics) = (Arc::clone(&ticketer), Arc::clone(metrics));
            FileKeys::start(path, ticketer, metrics, poll_interval, stop.child_token()).await?;
        }
        TicketKeySource::Secret(_) => {
            let (secret, lease) = secret.ok_or(StartError::NoKubernetes)?;
            let keys = SecretKeys::new(
                secret,
                lease,
                Arc::clone(&ticketer),
                Arc::clone(metrics),
                config.rotation,
            );
            keys.spawn(stop.child_token());
        }
    }
    Ok(Some(ticketer))
}

#[cfg(test)]
mod tests;
