//! wss-sidecar: terminate TLS for WebSocket traffic (`wss://`) and forward the raw bytes to
//! the application on localhost, with certificates that reload themselves.
//!
//! # Layout
//!
//! The data path, in the order a connection meets it:
//! - [`proxy`]: `wss-sidecar proxy`: `run` assembles everything and drains on shutdown; its
//!   [`proxy::ProxyConfig`]; the accept loop, bounded by `--max-connections`; one client
//!   (handshake, upstream connect, forwarding, accounting).
//! - [`tls`]: the rustls configuration, the handshake, the SNI [`tls::Resolver`], and client
//!   certificates (a reloading CA verifier, the identity and its allow-list).
//! - `forward`: the upstream and its connect (TCP or unix socket), what the upstream is told
//!   about the client first (a PROXY header, the rewritten request head), the two-way copy.
//!
//! The certificate path, feeding the resolver from the side:
//! - [`certs`]: the sources (a watched directory, a watched Secret, the self-signed fallback)
//!   publish validated pairs into the [`certs::CertStore`], whose snapshot the resolver reads
//!   per handshake.
//! - [`acme`]: certificates ordered from an ACME CA, shared by replicas through a store, and
//!   the TLS-ALPN-01 / HTTP-01 answers.
//! - [`k8s`]: the Kubernetes API behind narrow traits (one Secret, one Lease, one webhook
//!   configuration), the one client constructor, the one Secret write, leader election,
//!   Events on the pod.
//!
//! Around them:
//! - [`config`]: the command line, checked and translated into the types above; only `main`
//!   and the demo use it.
//! - `http`: the one small HTTP/1.1 server (plain or TLS, bounded, draining) with its reply
//!   helpers, `/healthz` and `/readyz`, the admin endpoint, the plain HTTP port
//!   (`--http-listen`), and the canned answers the data path writes itself.
//! - [`injector`]: `wss-sidecar injector`, the admission webhook that adds the sidecar to pods.
//! - [`demo`]: the demo echo app, and `wss-sidecar demo` in front of it.
//! - [`metrics`], `clock`, `file_watch`: Prometheus metrics, seconds since the epoch, the
//!   directory watcher certificate sources and the client CA share.
//! - [`shutdown`], [`telemetry`]: signals and logging, for `main`.
//! - [`listen`]: the one bind function every listener goes through (`[::]`, dual-stack).
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
pub mod listen;
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
