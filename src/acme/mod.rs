//! Automatic certificates from an ACME CA (Let's Encrypt): ordered once for all replicas that
//! share a store, renewed on schedule, published into the certificate store like any source.
//!
//! - `config`: what the manager is told (names, CA, store, challenge, timing).
//! - [`store`]: what is kept and shared, behind the [`AcmeStore`] trait; `dir_store` keeps
//!   it in a directory, `secret_store` in a Kubernetes Secret with a Lease as the lock (the
//!   account in a Secret of its own, `secret_account`; all three made beforehand).
//! - `manager`: the renewal loop (lock, order, back-off); `schedule` its timing;
//!   `lock` keeps the ordering lock while an order runs.
//! - `order`: one order with instant-acme; `cert_info`: what renewal reads from a cert.
//! - `self_check`: before the CA is asked to validate, our own names dialled as the CA will.
//! - `challenge`: answering the CA's validation from the store (TLS-ALPN-01 here, HTTP-01
//!   through `crate::http::plain`).

pub(crate) mod cert_info;
pub(crate) mod challenge;
pub(crate) mod config;
pub(crate) mod dir_store;
pub(crate) mod lock;
pub(crate) mod manager;
pub(crate) mod order;
pub(crate) mod schedule;
pub(crate) mod secret_store;
pub(crate) mod self_check;
pub mod store;

pub use challenge::ChallengeResponder;
pub use config::{AcmeConfig, ChallengeKind, SelfCheckConfig, StoreLocation};
pub use dir_store::DirStore;
pub use manager::Manager;
pub use secret_store::{SecretStore, account_secret_name};
pub use store::{AcmeStore, StoreError};
