//! `--ticket-keys secret:[NAMESPACE/]NAME`: every replica watches the key Secret and serves
//! what it holds; the holder of the Lease of the same name writes the first keys and the
//! rotations. A Secret that fails to parse keeps the last good keys. Nothing secret is logged.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::keys::{KeyText, TicketKeys};
use super::rotation::{self, KEYS};
use super::ticketer::Ticketer;
use crate::clock::epoch_seconds;
use crate::k8s::{
    ApiError, LeaseApi, SecretApi, SecretData, SecretEvent, WriteError, Written, lease,
    modify_existing,
};
use crate::metrics::Metrics;

/// The longest wait between two checks of whether the keys are due to rotate; shorter periods
/// are checked ten times a period, so a rotation is at most a tenth late.
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// What a key source last saw, so each change is loaded (and each problem logged) once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Keys(u64),
    Unusable(u64),
    Absent,
}

/// The key Secret, its Lease, and the ticketer they feed.
pub struct SecretKeys<S, L> {
    secret: S,
    lease: L,
    ticketer: Arc<Ticketer>,
    metrics: Arc<Metrics>,
    rotation: Duration,
    holder: String,
    seen: Option<Seen>,
    lease_missing_logged: bool,
}

impl<S: SecretApi, L: LeaseApi> SecretKeys<S, L> {
    /// Keys from `secret`, rotated every `rotation` by whoever holds `lease`.
    pub fn new(
        secret: S,
        lease: L,
        ticketer: Arc<Ticketer>,
        metrics: Arc<Metrics>,
        rotation: Duration,
    ) -> Self {
        let holder = crate::k8s::lease::holder_identity();
        Self {
            secret,
            lease,
            ticketer,
            metrics,
            rotation,
            holder,
            seen: None,
            lease_missing_logged: false,
        }
    }

    /// How often the Lease is taken or renewed and the keys' age checked.
    fn check_interval(&self) -> Duration {
        (self.rotation / 10).clamp(Duration::from_secs(1), MAX_CHECK_INTERVAL)
    }

    /// Follows the Secret and, while holding the Lease, rotates it, until `stop`.
    pub fn spawn(mut self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut events = self.secret.watch();
            let mut checks = tokio::time::interval(self.check_interval());
            checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            info!(tickets.secret = %self.secret.describe(), "watching the session-ticket key Secret");
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    event = events.next() => match event {
                        Some(event) => self.apply(event),
                        None => break,
                    },
                    _ = checks.tick() => self.check(SystemTime::now()).await,
                }
            }
            let now = epoch_seconds(SystemTime::now());
            let _ = tokio::time::timeout(
                self.check_interval(),
                lease::release(&self.lease, &self.holder, now),
            )
            .await;
        })
    }

    /// Serves what the watch reported, if it is new and parses.
    pub fn apply(&mut self, event: SecretEvent) {
        match event {
            SecretEvent::Applied(secret) => self.load(&secret.value),
            SecretEvent::Absent => {
                if self.seen != Some(Seen::Absent) {
                    self.seen = Some(Seen::Absent);
                    self.metrics.tickets.count_load(false);
                    warn!(
                        tickets.secret = %self.secret.describe(),
                        "the session-ticket key Secret does not exist; the last good keys keep serving"
                    );
                }
            }
            SecretEvent::Interrupted(why) => debug!(
                tickets.secret = %self.secret.describe(),
                error = %why,
                "the watch of the session-ticket key Secret broke; reconnecting"
            ),
        }
    }

    fn load(&mut self, data: &SecretData) {
        let Some(text) = data
            .get(KEYS)
            .filter(|t| !t.iter().all(u8::is_ascii_whitespace))
        else {
            // Empty: the Lease holder fills it; nothing to load, nothing wrong.
            return;
        };
        let mut hasher = DefaultHasher::new();
        text.hash(&mut hasher);
        let hash = hasher.finish();
        if matches!(self.seen, Some(Seen::Keys(h) | Seen::Unusable(h)) if h == hash) {
            return;
        }
        match KeyText::parse(text) {
            Ok(keys) => {
                self.seen = Some(Seen::Keys(hash));
                self.ticketer.publish(TicketKeys::new(&keys));
                self.metrics.tickets.count_load(true);
                info!(tickets.secret = %self.secret.describe(), tickets.keys = keys.len(), "loaded the session-ticket keys");
            }
            Err(err) => {
                self.seen = Some(Seen::Unusable(hash));
                self.metrics.tickets.count_load(false);
                warn!(
                    tickets.secret = %self.secret.describe(),
                    error = %err,
                    "the session-ticket key Secret's {KEYS} is unusable; the last good keys keep serving"
                );
            }
        }
    }

    /// Takes or renews the Lease; while it is ours, fills or rotates the keys when due.
    pub async fn check(&mut self, now: SystemTime) {
        let interval = self.check_interval();
        // The Lease outlives three checks, so a holder that missed one or two keeps it.
        let seconds = i64::try_from(interval.as_secs().max(1) * 3).unwrap_or(i64::MAX);
        let acquire =
            lease::try_acquire_existing(&self.lease, &self.holder, seconds, epoch_seconds(now));
        match tokio::time::timeout(interval, acquire).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return,
            Ok(Err(ApiError::NotFound(_))) => {
                if !self.lease_missing_logged {
                    self.lease_missing_logged = true;
                    warn!(
                        tickets.secret = %self.secret.describe(),
                        "the Lease of the session-ticket key Secret (same name) does not exist: \
                         this replica never rotates the keys (the chart makes it; or kubectl create)"
                    );
                }
                return;
            }
            Ok(Err(err)) => {
                warn!(tickets.secret = %self.secret.describe(), error = %err, "cannot take the session-ticket key Lease");
                return;
            }
            Err(_) => {
                warn!(tickets.secret = %self.secret.describe(), "the session-ticket key Lease got no answer in time");
                return;
            }
        }
        let current = match self.secret.get().await {
            Ok(current) => current,
            Err(err) => {
                warn!(tickets.secret = %self.secret.describe(), error = %err, "cannot read the session-ticket key Secret");
                return;
            }
        };
        let period = self.rotation;
        let written = modify_existing(&self.secret, current, |data| {
            rotation::change(data, now, period)
        })
        .await;
        match written {
            Ok(Written::Changed(secret)) => {
                self.metrics.tickets.key_rotations.inc();
                info!(tickets.secret = %self.secret.describe(), "rotated the session-ticket keys");
                self.load(&secret.value);
            }
            Ok(Written::Unchanged(_)) => {}
            // Already counted and logged by `load` when the watch delivered it.
            Err(WriteError::Change(err)) => {
                debug!(error = %err, "not rotating unusable session-ticket keys")
            }
            Err(WriteError::Api(err)) => {
                warn!(tickets.secret = %self.secret.describe(), error = %err, "cannot write the session-ticket key Secret");
            }
        }
    }
}
