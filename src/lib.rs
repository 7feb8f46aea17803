//! wss-sidecar: terminate TLS for WebSocket traffic (`wss://`) and forward the raw bytes to
//! the application on localhost, with certificates that reload themselves.
//!
//! # Layout
//!
//! The data path, in the order a connection meets it:
//! - [`listener`]: the accept loop, bounded by `--max-connections`.
//! - [`connection`]: one client: handshake, upstream connect, forwarding, accounting.
//! - [`tls`]: the rustls configuration, the handshake, the SNI [`tls::Resolver`], and client
//!   certificates (a reloading CA verifier, the identity and its allow-list).
//! - [`forward`]: what the upstream is told about the client first (a PROXY header, the
//!   rewritten request head), connecting to the upstream (TCP or unix socket), the two-way copy.
//!
//! The certificate path, feeding the resolver from the side:
//! - [`certs`]: sources (a watched directory, the self-signed fallback) publish validated
//!   pairs into the [`certs::CertStore`], whose snapshot the resolver reads per handshake.
//! - [`acme`]: certificates ordered from an ACME CA, shared by replicas through a store, and
//!   the TLS-ALPN-01 / HTTP-01 answers.
//! - [`k8s`]: the Kubernetes API behind narrow traits: a watched TLS Secret, the ACME store's
//!   Secret and Lease, Events on the pod.
//!
//! Around them:
//! - [`config`]: flags and environment variables, parsed into one typed config.
//! - [`proxy`]: `run`, which assembles everything and drains on shutdown.
//! - [`admin`], [`health`], [`metrics`]: `/healthz`, `/readyz`, `/metrics`; [`http_serve`]
//!   the bounded HTTP loop the admin endpoint and `--http-listen` share.
//! - [`shutdown`], [`telemetry`]: signals and logging, for `main`.
//! - [`demo`], [`quickstart`]: the demo echo app and `wss-sidecar demo`.
//! - [`injector`]: `wss-sidecar injector`, the admission webhook that adds the sidecar to pods.
#![forbid(unsafe_code)]

pub mod acme;
pub mod certs;
pub(crate) mod clock;
pub mod config;
pub mod demo;
pub(crate) mod file_watch;
pub(crate) mod forward;
pub(crate) mod http;
pub mod injector;
pub mod k8s;
pub mod metrics;
pub mod proxy;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

/// The exit code for bad configuration (`EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;

/// The exit code of a failed run: [`EXIT_CONFIG`] when `flag` is at fault, else 1.
pub fn exit_code(flag: Option<&str>) -> u8 {
    if flag.is_some() { EXIT_CONFIG } else { 1 }
}
