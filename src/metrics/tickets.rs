//! TLS 1.3 session tickets: issued, opened (a resumption) or refused, and the key source's
//! loads and rotations.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::Outcome;

/// What happened to tickets clients presented: `resumed`, `unknown_key` (rotated out, or from
/// a replica with other keys: a full handshake follows), `invalid` (tampered or truncated).
const OPEN_RESULTS: [&str; 3] = ["resumed", "unknown_key", "invalid"];

/// Session tickets and their keys (`--ticket-keys`).
pub struct TicketMetrics {
    /// Tickets issued.
    pub tickets_issued: Counter,
    /// Tickets presented by clients, by result.
    pub ticket_opens: Family<Outcome, Counter>,
    /// Key loads from the key source (file or Secret), by result; a failure keeps the last good
    /// keys.
    pub key_loads: Family<Outcome, Counter>,
    /// Key rotations this process made (in memory, or written to the Secret as Lease holder,
    /// the first keys of an empty Secret included).
    pub key_rotations: Counter,
}

impl TicketMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            tickets_issued: Counter::default(),
            ticket_opens: Family::default(),
            key_loads: Family::default(),
            key_rotations: Counter::default(),
        };
        registry.register(
            "tls_tickets_issued",
            "TLS 1.3 session tickets issued",
            metrics.tickets_issued.clone(),
        );
        registry.register(
            "tls_ticket_opens",
            "TLS 1.3 session tickets presented by clients, by result",
            metrics.ticket_opens.clone(),
        );
        registry.register(
            "tls_ticket_key_loads",
            "Session-ticket key loads from --ticket-keys, by result (a failure keeps the last good keys)",
            metrics.key_loads.clone(),
        );
        registry.register(
            "tls_ticket_key_rotations",
            "Session-ticket key rotations made by this process (first keys of an empty Secret included)",
            metrics.key_rotations.clone(),
        );
        for result in OPEN_RESULTS {
            let _ = metrics.ticket_opens.get_or_create(&Outcome { result });
        }
        for result in ["success", "failure"] {
            let _ = metrics.key_loads.get_or_create(&Outcome { result });
        }
        metrics
    }

    /// The counter of tickets presented with `result` (one of the fixed results).
    pub fn ticket_opens(&self, result: &'static str) -> Counter {
        self.ticket_opens.get_or_create(&Outcome { result }).clone()
    }

    /// Counts one key load.
    pub fn count_load(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.key_loads.get_or_create(&Outcome { result }).inc();
    }
}
