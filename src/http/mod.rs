//! Small HTTP: one bounded, gracefully stopping HTTP/1.1 server and what is served over it,
//! and the canned answers the data path writes itself.
//!
//! - [`server`]: the server (plain or TLS), its limits and its drain.
//! - [`reply`]: the response helpers every handler uses.
//! - [`health`]: readiness, and `/healthz` and `/readyz` for the admin port and the webhook.
//! - [`admin`]: the admin endpoint (`/healthz`, `/readyz`, `/metrics`).
//! - [`plain`]: the plain HTTP port (`--http-listen`): HTTP-01 answers and redirects.
//! - [`canned`]: raw `Connection: close` answers and the goodbye, for connections hyper
//!   does not serve.

pub mod admin;
pub mod canned;
pub mod health;
pub mod plain;
pub mod reply;
pub mod server;

pub use health::Readiness;
pub use server::{Conn, Limits, Slot, serve};
