//! wss-sidecar: terminate TLS for WebSocket traffic (`wss://`) and forward the raw bytes to
//! the application on localhost, with certificates that reload themselves.
//!
//! # Layout
//!
//! The data path, in the order a connection meets it:
//! - [`listener`]: the accept loop, bounded by `--max-connections`.
//! - [`connection`]: one client: handshake, upstream connect, forwarding, accounting.
//! - [`tls`]: the rustls configuration, the handshake, and the SNI [`tls::Resolver`].
//! - [`forward`]: connecting to the upstream (TCP or unix socket) and the two-way copy.
//!
//! The certificate path, feeding the resolver from the side:
//! - [`certs`]: sources (a watched directory, the self-signed fallback) publish validated
//!   pairs into the [`certs::CertStore`], whose snapshot the resolver reads per handshake.
//!
//! Around them:
//! - [`config`]: flags and environment variables, parsed into one typed config.
//! - [`proxy`]: `run`, which assembles everything and drains on shutdown.
//! - [`admin`], [`health`], [`metrics`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`shutdown`], [`telemetry`]: signals and logging, for `main`.
//! - [`demo`], [`quickstart`]: the demo echo app and `wss-sidecar demo`.
//! - [`injector`]: `wss-sidecar injector`, the admission webhook that adds the sidecar to pods.
#![forbid(unsafe_code)]

pub mod admin;
pub mod certs;
pub mod config;
pub mod connection;
pub mod demo;
pub mod forward;
pub mod health;
pub mod injector;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod quickstart;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

/// The exit code for bad configuration (`EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;
