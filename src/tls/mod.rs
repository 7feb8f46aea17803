//! TLS termination: the crypto provider, the server configuration, the certificate resolver,
//! client certificates (mTLS), the handshake and the stream it yields, and session tickets shared by replicas
//! (`tickets`).

mod acme_alpn;
mod client_auth;
mod client_identity;
mod handshake;
mod resolver;
mod server_config;
mod stream;
pub mod tickets;

pub use acme_alpn::{ACME_TLS_ALPN, AlpnChallenges};
pub use client_auth::{
    ClientCa, ClientCaError, ClientCaVerifier, is_client_cert_error, load_client_roots,
};
pub use client_identity::{AllowList, ClientIdentity};
pub use handshake::{HandshakeError, accept};
pub use resolver::Resolver;
pub use server_config::{ALPN_HTTP11, ServerConfigs, provider, server_config};
pub use stream::TlsStream;
