//! `--ticket-keys memory`: random keys made at start and rotated in memory, so tickets resume
//! on this process only.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::keys::{KeyError, KeyText, TicketKeys};
use super::ticketer::Ticketer;

/// Publishes three random keys to `ticketer` now, then rotates them every `rotation` until
/// `stop`.
pub fn spawn_memory_rotation(
    ticketer: Arc<Ticketer>,
    rotation: Duration,
    rotations: Counter,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, KeyError> {
    let mut keys = KeyText::random()?;
    ticketer.publish(TicketKeys::new(&keys));
    Ok(tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + rotation, rotation);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match keys.rotated() {
                Ok(next) => {
                    keys = next;
                    ticketer.publish(TicketKeys::new(&keys));
                    rotations.inc();
                    debug!("rotated the in-memory session-ticket keys");
                }
                // The old keys keep serving; tickets stay valid a little longer.
                Err(err) => warn!(error = %err, "cannot rotate the session-ticket keys"),
            }
        }
    }))
}
