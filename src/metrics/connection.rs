//! Per-connection timings (handshake, upstream connect, lifetime) and what each TLS handshake
//! negotiated.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rustls::CommonState;

/// A TLS 1.3 handshake on a LAN takes about a millisecond; across the internet a few round
/// trips (10–300 ms); `--handshake-timeout` (10 s by default) ends the slowest.
const HANDSHAKE_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The app is on the same pod: a connect over loopback or a unix socket takes well under a
/// millisecond, so the low buckets are fine; the top ones catch an app that is stalling (the
/// `--connect-timeout` ends it).
const CONNECT_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 5.0,
];
/// WebSockets live from a second (a page that is left) to days (a dashboard left open):
/// 100 ms to a day.
const LIFETIME_BUCKETS: [f64; 12] = [
    0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0, 21600.0, 43200.0, 86400.0,
];

/// What a completed handshake negotiated: rustls' own names (`TLSv1_3`,
/// `TLS13_AES_128_GCM_SHA256`, `X25519MLKEM768`), a fixed set that keeps the series few.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Negotiated {
    /// The protocol version.
    pub version: &'static str,
    /// The cipher suite.
    pub cipher_suite: &'static str,
    /// The key exchange group; `none` when there was no key exchange (TLS 1.2 resumption).
    pub group: &'static str,
}

impl Negotiated {
    /// Reads what `conn` negotiated; every name is a `&'static str`, nothing is allocated.
    pub fn of(conn: &CommonState) -> Self {
        Self {
            version: conn
                .protocol_version()
                .map_or("none", |v| v.as_str().unwrap_or("unknown")),
            cipher_suite: conn
                .negotiated_cipher_suite()
                .map_or("none", |s| s.suite().as_str().unwrap_or("unknown")),
            group: conn
                .negotiated_key_exchange_group()
                .map_or("none", |g| g.name().as_str().unwrap_or("unknown")),
        }
    }
}

/// How long each stage of a connection took, and what TLS it negotiated.
pub struct ConnectionMetrics {
    /// Seconds from accept to a completed TLS handshake (completed handshakes only; failures
    /// are counted by reason in `handshake_failures`).
    pub handshake_duration: Histogram,
    /// Seconds to connect to the upstream (successful connects only).
    pub upstream_connect_duration: Histogram,
    /// Seconds from accept to close, for connections that reached the upstream.
    pub connection_duration: Histogram,
    /// Completed handshakes by version, cipher suite and key exchange group.
    pub handshakes: Family<Negotiated, Counter>,
}

impl ConnectionMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            handshake_duration: Histogram::new(HANDSHAKE_BUCKETS),
            upstream_connect_duration: Histogram::new(CONNECT_BUCKETS),
            connection_duration: Histogram::new(LIFETIME_BUCKETS),
            handshakes: Family::default(),
        };
        registry.register(
            "handshake_duration_seconds",
            "Seconds from accept to a completed TLS handshake",
            metrics.handshake_duration.clone(),
        );
        registry.register(
            "upstream_connect_duration_seconds",
            "Seconds to connect to the upstream, successful connects",
            metrics.upstream_connect_duration.clone(),
        );
        registry.register(
            "connection_duration_seconds",
            "Seconds from accept to close of connections that reached the upstream",
            metrics.connection_duration.clone(),
        );
        registry.register(
            "handshakes",
            "Completed TLS handshakes by version, cipher suite and key exchange group",
            metrics.handshakes.clone(),
        );
        metrics
    }

    /// Counts one completed handshake on `conn`: one label lookup per connection.
    pub fn count_handshake(&self, conn: &CommonState) {
        self.handshakes.get_or_create(&Negotiated::of(conn)).inc();
    }
}
