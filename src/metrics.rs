//! Prometheus metrics: one registry, handles cloned into the components that move them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

impl AcmeMetrics {
    fn register(registry: &mut Registry) -> Self {
        Self {
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
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: &'static str,
}

/// Every metric the proxy exports, under the `wss_sidecar_` prefix.
pub struct Metrics {
    registry: Registry,
    /// Client connections currently open.
    pub connections_open: Gauge,
    /// Client connections accepted.
    pub connections: Counter,
    /// Client connections refused before the handshake, by reason (`limit`).
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
        let acme = AcmeMetrics::register(&mut registry);
        Self {
            registry,
            acme,
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
}
