//! Proves the shared test helpers do what they claim, over real sockets and files.
//!
//! # Layout
//! - `certs_and_clients`: the test CA's pairs and the TLS / WebSocket clients.
//! - `upstreams`: the echo server (TCP and unix socket) and the raw TCP upstream.
//! - `dirs_and_waits`: kubelet-style and plain certificate directories, `wait_until`, and
//!   crypto provider set-up.

mod certs_and_clients;
mod dirs_and_waits;
mod upstreams;
