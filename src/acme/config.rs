//! What the ACME manager is told to do: the names, the CA, the store, the challenge, the
//! timing. Built from the `--acme-*` flags by [`crate::config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Which ACME challenge proves control of the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChallengeKind {
    /// A TLS handshake with ALPN `acme-tls/1` on the --listen port.
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
    /// A plain HTTP request on --http-listen (port 80 as the CA sees it).
    #[value(name = "http-01")]
    Http01,
}

/// Where ACME state is kept (`--acme-store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A directory.
    Dir(PathBuf),
    /// A Secret (and a Lease of the same name) through the Kubernetes API.
    Secret(crate::k8s::ObjectRef),
}

/// Validated ACME settings.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The names, lower-case, in flag order.
    pub domains: Vec<String>,
    /// The account contact, as `mailto:` URLs.
    pub contacts: Vec<String>,
    /// The directory URL.
    pub directory: String,
    /// The ACME server's private root, if any.
    pub ca_root: Option<PathBuf>,
    /// Where the state is kept.
    pub store: StoreLocation,
    /// How long the ordering lock lasts without renewal.
    pub lease_duration: Duration,
    /// The challenge to use.
    pub challenge: ChallengeKind,
    /// External account binding: key id and decoded HMAC key.
    pub eab: Option<(String, Vec<u8>)>,
    /// Test knob: renew when less than this remains.
    pub renew_before: Option<Duration>,
    /// How often the store is re-read while waiting.
    pub poll_interval: Duration,
    /// The first retry delay after a failure.
    pub backoff_base: Duration,
    /// The self-check before the CA is asked to validate.
    pub self_check: SelfCheckConfig,
}

/// How the self-check dials our own names as the CA will, before the CA is asked to validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfCheckConfig {
    /// Off (`--acme-skip-self-check`): submit at once.
    pub skip: bool,
    /// After failing this long, submit anyway (some load balancers cannot hairpin).
    pub timeout: Duration,
    /// The DNS server to resolve the names with; `None`: the system resolver.
    pub resolver: Option<SocketAddr>,
    /// The port the CA dials for TLS-ALPN-01 (443, RFC 8737 §3).
    pub tls_port: u16,
    /// The port the CA dials for HTTP-01 (80, RFC 8555 §8.3).
    pub http_port: u16,
}
