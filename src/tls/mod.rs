//! TLS termination: the crypto provider, the server configuration, the certificate resolver
//! and the handshake itself.

mod acme_alpn;
mod handshake;
mod resolver;
mod server_config;

pub use acme_alpn::{ACME_TLS_ALPN, AlpnChallenges, accept_answering};
pub use handshake::{HandshakeError, accept};
pub use resolver::Resolver;
pub use server_config::{ALPN_HTTP11, provider, server_config};
