//! Closing WebSockets on purpose: on drain (spread over a window), at a maximum age, or when
//! the client stops answering our Pings, each with a proper closing handshake on both sides.
//!
//! - `drain`: the pace of the drain's closes, shared by every connection.
//! - `follow`: the per-connection [`Watch`](super::watch::Watch) that follows the HTTP
//!   exchange and then the frames both ways, and sends the Close and Ping frames.
//!
//! A connection follows its frames only when one of these features is on; otherwise the data
//! path is the plain byte copy ([`Raw`](super::watch::Raw)), and none of this costs a byte.

mod drain;
mod follow;

use std::sync::Arc;
use std::time::Duration;

pub use drain::DrainSpread;
pub use follow::Follow;

use crate::metrics::Metrics;

/// The Close code sent by default: 1012 "service restart" (RFC 6455 section 7.4.1 and the
/// IANA registry). Not 1001 "going away": some clients take that as "do not reconnect".
pub const DEFAULT_CLOSE_CODE: u16 = 1012;
/// The reason sent with it.
pub const DEFAULT_CLOSE_REASON: &str = "service restart";
/// The code the app is sent for a client that stopped answering Pings: the client went away.
const PING_TIMEOUT_CODE: u16 = 1001;

/// `--max-connection-age` and its jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxAge {
    /// The age.
    pub age: Duration,
    /// Up to this much more, uniformly, so connections opened together do not close together.
    pub jitter: Duration,
}

/// `--ws-ping-interval` and `--ws-ping-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pings {
    /// How often a Ping goes to the client.
    pub interval: Duration,
    /// How long after a Ping some Pong must arrive.
    pub timeout: Duration,
}

/// What the sidecar does to WebSockets on its own, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `--drain-close-spread`: on drain, close WebSockets with Close frames over this window.
    pub drain_spread: Option<Duration>,
    /// `--max-connection-age`.
    pub max_age: Option<MaxAge>,
    /// `--ws-ping-interval` / `--ws-ping-timeout`.
    pub pings: Option<Pings>,
    /// `--drain-close-code`: the code of our Close frames (drain and maximum age).
    pub close_code: u16,
    /// `--drain-close-reason`: their reason text (at most 123 bytes).
    pub close_reason: String,
    /// `--ws-close-timeout`: the longest wait for a message boundary, and for a peer to answer
    /// our Close.
    pub close_timeout: Duration,
}

impl Settings {
    /// Whether any feature needs the frames followed.
    pub fn follows(&self) -> bool {
        self.drain_spread.is_some() || self.max_age.is_some() || self.pings.is_some()
    }
}

/// What followed connections share: the settings, the drain's pace, the metrics.
pub struct WebSockets {
    /// The settings.
    pub settings: Settings,
    /// The drain's pace.
    pub drain: DrainSpread,
    metrics: Arc<Metrics>,
}

impl WebSockets {
    /// The shared state for `settings`, when they follow frames at all.
    pub fn new(settings: Settings, metrics: &Arc<Metrics>) -> Option<Self> {
        settings.follows().then(|| Self {
            settings,
            drain: DrainSpread::default(),
            metrics: Arc::clone(metrics),
        })
    }

    /// Starts the drain's closes (after the lame duck), when `--drain-close-spread` is set.
    pub fn begin_drain(&self) {
        if let Some(spread) = self.settings.drain_spread {
            let plan = self.drain.begin(spread);
            let metrics = &self.metrics.websocket;
            metrics.drain_close_rate.set(plan.rate());
            metrics
                .drain_close_planned
                .set(i64::try_from(plan.count).unwrap_or(i64::MAX));
        }
    }
}

impl std::fmt::Debug for WebSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSockets")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
