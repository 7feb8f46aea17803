//! WebSocket closes: the status codes either side sent, and the pace of the drain's closes.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The codes RFC 6455 (section 7.4.1) and the IANA registry define, each its own series.
const DEFINED: [&str; 16] = [
    "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1007", "1008", "1009", "1010", "1011",
    "1012", "1013", "1014", "1015",
];

/// Who sent a Close frame.
pub const FROM: [&str; 2] = ["client", "app"];

/// A Close frame's sender and its code's bucket.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseCode {
    /// `client` or `app`.
    pub from: &'static str,
    /// `1000`..`1015`, `3000-3999` (registered by libraries and frameworks), `4000-4999`
    /// (private use), `none` (a Close without a code), or `other`.
    pub code: &'static str,
}

impl CloseCode {
    /// The bucket of `code` (`None`: the frame had no code).
    pub fn bucket(code: Option<u16>) -> &'static str {
        match code {
            None => "none",
            Some(c @ 1000..=1015) => DEFINED[usize::from(c - 1000)],
            Some(3000..=3999) => "3000-3999",
            Some(4000..=4999) => "4000-4999",
            Some(_) => "other",
        }
    }
}

/// The WebSocket close metrics.
pub struct WebSocketMetrics {
    /// Close frames seen from either side (ours are not counted), by sender and code.
    pub close_codes: Family<CloseCode, Counter>,
    /// While draining with `--drain-close-spread`: the Close frames planned per second.
    pub drain_close_rate: Gauge<f64, AtomicU64>,
    /// While draining with `--drain-close-spread`: the WebSockets the drain is closing.
    pub drain_close_planned: Gauge,
}

impl WebSocketMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            close_codes: Family::default(),
            drain_close_rate: Gauge::default(),
            drain_close_planned: Gauge::default(),
        };
        registry.register(
            "websocket_close_codes",
            "WebSocket Close frames seen from the client or the app, by code",
            metrics.close_codes.clone(),
        );
        registry.register(
            "drain_close_rate",
            "Close frames per second the drain spreads (--drain-close-spread), 0 until it starts",
            metrics.drain_close_rate.clone(),
        );
        registry.register(
            "drain_close_planned",
            "Followed connections the drain is closing (--drain-close-spread)",
            metrics.drain_close_planned.clone(),
        );
        for from in FROM {
            for code in ["1000", "1001", "1012"] {
                let _ = metrics.close_codes.get_or_create(&CloseCode { from, code });
            }
        }
        metrics
    }

    /// Counts a Close frame from `from` with `code`.
    pub fn count_close(&self, from: &'static str, code: Option<u16>) {
        let code = CloseCode::bucket(code);
        self.close_codes
            .get_or_create(&CloseCode { from, code })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_fall_in_their_buckets() {
        assert_eq!(CloseCode::bucket(Some(1000)), "1000");
        assert_eq!(CloseCode::bucket(Some(1012)), "1012");
        assert_eq!(CloseCode::bucket(Some(1015)), "1015");
        assert_eq!(CloseCode::bucket(Some(1016)), "other");
        assert_eq!(CloseCode::bucket(Some(3000)), "3000-3999");
        assert_eq!(CloseCode::bucket(Some(4999)), "4000-4999");
        assert_eq!(CloseCode::bucket(Some(5000)), "other");
        assert_eq!(CloseCode::bucket(None), "none");
    }
}
