//! Certificate sources (a watched directory, a watched Kubernetes Secret, the self-signed
//! fallback) and the store they publish into; the TLS resolver reads the store.
//!
//! Sources only ever publish complete, validated pairs ([`pair::load_pair`]); a refused pair
//! leaves the previous one serving and is counted and logged.

pub(crate) mod dir_source;
pub(crate) mod pair;
pub(crate) mod secret_source;
pub(crate) mod self_signed;
pub(crate) mod store;

pub use dir_source::DirSource;
pub use pair::{CertError, LoadedCert, load_pair};
pub use secret_source::SecretSource;
pub use store::{CertStore, Publisher, Snapshot};
