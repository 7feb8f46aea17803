//! Prometheus metrics: one registry, handles cloned into the components that move them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

mod connection;
mod injector;
mod tickets;
mod websocket;

use crate::forward::{CloseReason, ConnectError, HeadFailure, Refusal};
use crate::proxy::proxy_header::HeaderError;
use crate::tls::HandshakeError;

pub use connection::{ConnectionMetrics, Negotiated};
pub use injector::{Decision, InjectorMetrics};
pub use tickets::TicketMetrics;
pub use websocket::{CloseCode, WebSocketMetrics};

/// The `reason` of `connections_refused_total` when `--max-connections` are open.
pub const REFUSED_AT_LIMIT: &str = "limit";
/// The `reason` of `connections_refused_total` when a client holds `--max-connections-per-ip`.
/// The PROXY header's refusals have theirs in [`HeaderError::REASONS`].
pub const REFUSED_PER_IP: &str = "per_ip_limit";

/// A label set with one `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Why it happened, from a small fixed set of words.
    pub reason: &'static str,
}

/// A label set naming a certificate source (`dir:/etc/tls`, `self-signed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Source {
    /// The source's label.
    pub source: String,
}

/// A certificate reload outcome per source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reload {
    /// The source's label.
    pub source: String,
    /// `success` or `failure`.
    pub result: &'static str,
}

/// A label set with one `class` label: the kind of an ACME failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorClass {
    /// `network`, `rate_limited`, `rejected`, `validation`, `timeout`, `store`, `internal`.
    pub class: &'static str,
}

/// A label set with one `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// The ACME certificate manager's state.
pub struct AcmeMetrics {
    /// ACME orders placed by this process, by result.
    pub orders: Family<Outcome, Counter>,
    /// When the next order is due (renewal, or retry after a failure), seconds since the epoch.
    pub next_renewal: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// The wait before the next retry after the last failure, in seconds (0 after a success).
    pub retry_delay: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Failed orders in a row (shared by the replicas through the store).
    pub consecutive_failures: Gauge,
    /// 1 for the class of the last failure; empty after a success.
    pub last_error: Family<ErrorClass, Gauge>,
    /// Self-checks of our own names that did not answer with our key authorization, by
    /// reason (`dns`, `connect`, `tls`, `http`, `wrong_answer`); nothing is submitted then.
    pub self_check_failures: Family<Reason, Counter>,
}

/// The `reason` words of `acme_self_check_failures_total` (`CheckError::reason` in
/// `acme::self_check`), created at zero.
const SELF_CHECK_REASONS: [&str; 5] = ["dns", "connect", "tls", "http", "wrong_answer"];

impl AcmeMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            orders: register(registry, "acme_orders", "ACME orders placed, by result"),
            next_renewal: register(
                registry,
                "acme_next_renewal_timestamp_seconds",
                "When the next ACME order is due, in seconds since the epoch",
            ),
            retry_delay: register(
                registry,
                "acme_retry_delay_seconds",
                "Back-off before the next ACME attempt after the last failure (0 after a success)",
            ),
            consecutive_failures: register(
                registry,
                "acme_consecutive_failures",
                "Failed ACME orders in a row",
            ),
            last_error: register(
                registry,
                "acme_last_error",
                "1 for the class of the last ACME failure; absent after a success",
            ),
            self_check_failures: register(
                registry,
                "acme_self_check_failures",
                "Self-checks of our names that failed before asking the CA to validate, by reason",
            ),
        };
        for result in ["success", "failure"] {
            let _ = metrics.orders.get_or_create(&Outcome { result });
        }
        zeroed(&metrics.self_check_failures, &SELF_CHECK_REASONS);
        metrics
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: &'static str,
}

/// Every metric the proxy and the injector export, under the `wss_sidecar_` prefix.
pub struct Metrics {
    registry: Registry,
    /// Client connections currently open.
    pub connections_open: Gauge,
    /// Client connections accepted.
    pub connections: Counter,
    /// Client connections refused before the handshake, by reason (`limit`, `per_ip_limit`,
    /// and the PROXY header's refusals).
    pub connections_refused: Family<Reason, Counter>,
    /// Failed TLS handshakes by reason (`timeout`, `not_tls`, `eof`, `tls`, `client_cert`).
    pub handshake_failures: Family<Reason, Counter>,
    /// Failed connects to the upstream by reason (`refused`, `timeout`, `io`).
    pub upstream_connect_failures: Family<Reason, Counter>,
    /// Connections that ended, by reason (`closed`, `idle_timeout`, `drain`, `client_error`,
    /// `upstream_error`).
    pub connections_closed: Family<Reason, Counter>,
    /// Connections closed after the handshake before reaching the upstream, by reason
    /// (`not_allowed`, `malformed_head`, `head_too_large`, `head_timeout`, `head_eof`, `head_io`).
    pub connections_rejected: Family<Reason, Counter>,
    /// Bytes from clients to the upstream.
    pub bytes_client_to_upstream: Counter,
    /// Bytes from the upstream to clients.
    pub bytes_upstream_to_client: Counter,
    /// The serving certificate's notAfter, seconds since the epoch, per source.
    pub cert_not_after: Family<Source, Gauge>,
    /// Certificate loads per source and result.
    pub cert_reloads: Family<Reload, Counter>,
    /// When a source last published a certificate, seconds since the epoch.
    pub cert_last_reload: Family<Source, Gauge>,
    /// ACME certificate management.
    pub acme: AcmeMetrics,
    /// Handshake, connect and lifetime histograms; handshakes by what they negotiated.
    pub connection: ConnectionMetrics,
    /// The injector's admission decisions and latency (zero in the proxy).
    pub injector: InjectorMetrics,
    /// TLS 1.3 session tickets and their keys (`--ticket-keys`).
    pub tickets: TicketMetrics,
    /// WebSocket close codes and the drain's close rate.
    pub websocket: WebSocketMetrics,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wss_sidecar");
        let connections_open: Gauge =
            register(&mut registry, "connections_open", "Client connections open");
        let connections: Counter =
            register(&mut registry, "connections", "Client connections accepted");
        let connections_refused: Family<Reason, Counter> = register(
            &mut registry,
            "connections_refused",
            "Client connections refused before the handshake",
        );
        let handshake_failures: Family<Reason, Counter> = register(
            &mut registry,
            "handshake_failures",
            "TLS handshakes that failed",
        );
        let upstream_connect_failures: Family<Reason, Counter> = register(
            &mut registry,
            "upstream_connect_failures",
            "Connects to the upstream that failed",
        );
        let connections_closed: Family<Reason, Counter> = register(
            &mut registry,
            "connections_closed",
            "Client connections that ended, by reason",
        );
        let connections_rejected: Family<Reason, Counter> = register(
            &mut registry,
            "connections_rejected",
            "Client connections closed after the handshake before reaching the upstream",
        );
        let bytes: Family<Direction, Counter> = register(&mut registry, "bytes", "Bytes forwarded");
        let bytes_client_to_upstream = bytes
            .get_or_create(&Direction {
                direction: "client_to_upstream",
            })
            .clone();
        let bytes_upstream_to_client = bytes
            .get_or_create(&Direction {
                direction: "upstream_to_client",
            })
            .clone();
        let cert_not_after: Family<Source, Gauge> = register(
            &mut registry,
            "cert_not_after_seconds",
            "notAfter of the certificate each source serves, in seconds since the epoch",
        );
        let cert_reloads: Family<Reload, Counter> =
            register(&mut registry, "cert_reloads", "Certificate loads by result");
        let cert_last_reload: Family<Source, Gauge> = register(
            &mut registry,
            "cert_last_reload_success_timestamp_seconds",
            "When each source last published a certificate, in seconds since the epoch",
        );
        zeroed(&connections_refused, &[REFUSED_AT_LIMIT, REFUSED_PER_IP]);
        zeroed(&connections_refused, &HeaderError::REASONS);
        zeroed(&handshake_failures, &HandshakeError::FAILURE_REASONS);
        zeroed(&upstream_connect_failures, &ConnectError::REASONS);
        zeroed(&connections_closed, &CloseReason::REASONS);
        zeroed(&connections_rejected, &[Refusal::NOT_ALLOWED]);
        zeroed(&connections_rejected, &HeadFailure::REASONS);
        let acme = AcmeMetrics::register(&mut registry);
        let connection = ConnectionMetrics::register(&mut registry);
        let injector = InjectorMetrics::register(&mut registry);
        let tickets = TicketMetrics::register(&mut registry);
        let websocket = WebSocketMetrics::register(&mut registry);
        Self {
            registry,
            websocket,
            tickets,
            acme,
            connection,
            injector,
            connections_open,
            connections,
            connections_refused,
            handshake_failures,
            upstream_connect_failures,
            connections_closed,
            connections_rejected,
            bytes_client_to_upstream,
            bytes_upstream_to_client,
            cert_not_after,
            cert_reloads,
            cert_last_reload,
        }
    }

    /// Counts one event of `family` with `reason`.
    pub fn count(family: &Family<Reason, Counter>, reason: &'static str) {
        family.get_or_create(&Reason { reason }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Creates the series of every fixed `reason` of `family` at zero, so that they exist before the
/// first event and `rate()`/`increase()` see that event (a series born at 1 shows no increase):
/// "Avoid missing metrics", Prometheus' instrumentation practices.
fn zeroed(family: &Family<Reason, Counter>, reasons: &[&'static str]) {
    for &reason in reasons {
        let _ = family.get_or_create(&Reason { reason });
    }
}

/// Registers a fresh metric under `name` and returns a handle to it.
fn register<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_prefixed_names() {
        let m = Metrics::new();
        m.connections.inc();
        Metrics::count(&m.handshake_failures, "timeout");
        let text = m.encode();
        assert!(text.contains("wss_sidecar_connections_total 1"), "{text}");
        assert!(
            text.contains("wss_sidecar_handshake_failures_total{reason=\"timeout\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wss_sidecar_bytes_total{direction=\"client_to_upstream\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn fixed_label_values_and_histograms_exist_before_any_event() {
        let text = Metrics::new().encode();
        for sample in [
            "wss_sidecar_handshake_failures_total{reason=\"acme_no_challenge\"} 0",
            "wss_sidecar_upstream_connect_failures_total{reason=\"dns\"} 0",
            "wss_sidecar_connections_refused_total{reason=\"limit\"} 0",
            "wss_sidecar_connections_refused_total{reason=\"per_ip_limit\"} 0",
            "wss_sidecar_connections_refused_total{reason=\"proxy_untrusted\"} 0",
            "wss_sidecar_connections_refused_total{reason=\"proxy_malformed\"} 0",
            "wss_sidecar_connections_rejected_total{reason=\"not_allowed\"} 0",
            "wss_sidecar_connections_rejected_total{reason=\"head_io\"} 0",
            "wss_sidecar_connections_closed_total{reason=\"upstream_error\"} 0",
            "wss_sidecar_acme_orders_total{result=\"failure\"} 0",
            "wss_sidecar_acme_self_check_failures_total{reason=\"wrong_answer\"} 0",
            "wss_sidecar_injector_admissions_total{decision=\"denied\",reason=\"pod_check\"} 0",
            "wss_sidecar_handshake_duration_seconds_count 0",
            "wss_sidecar_upstream_connect_duration_seconds_bucket{le=\"0.0001\"} 0",
            "wss_sidecar_connection_duration_seconds_bucket{le=\"86400.0\"} 0",
            "wss_sidecar_injector_review_duration_seconds_bucket{le=\"+Inf\"} 0",
        ] {
            assert!(text.contains(sample), "no {sample}:\n{text}");
        }
        // Negotiated TLS parameters are open-ended: no series until a handshake.
        assert!(!text.contains("wss_sidecar_handshakes_total"), "{text}");
    }
}
