//! The rustls server configuration: provider, protocol versions, ALPN and the resolver.

use std::sync::{Arc, OnceLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use super::Resolver;

/// The only application protocol offered: the upstream speaks HTTP/1.1 + WebSocket, and raw
/// byte forwarding cannot carry h2.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Resumption cache entries; each holds one session's secrets (~100 bytes), so a few thousand
/// cost little and let reconnecting clients skip the full handshake.
const SESSION_CACHE_ENTRIES: usize = 4096;

/// The crypto provider: aws-lc-rs, for its speed and post-quantum hybrid key exchange
/// (X25519MLKEM768) offered by default.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// Builds the server configuration: TLS 1.3 and 1.2, ALPN `http/1.1`, certificates from
/// `resolver`; client certificates checked by `client_auth` when given (`--client-ca`).
pub fn server_config(
    resolver: Arc<Resolver>,
    client_auth: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(client_auth.unwrap_or_else(WebPkiClientVerifier::no_client_auth))
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok(Arc::new(config))
}
