//! TLS termination: the crypto provider, the server configuration, the certificate resolver
//! and the handshake itself.

mod handshake;
mod resolver;
mod server_config;

pub use handshake::{HandshakeError, accept};
pub use resolver::Resolver;
pub use server_config::{ALPN_HTTP11, provider, server_config};
