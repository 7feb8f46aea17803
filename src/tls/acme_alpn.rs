//! ACME TLS-ALPN-01: a ClientHello offering only `acme-tls/1` gets a one-off configuration
//! with the challenge certificate ([`super::accept`] asks [`AlpnChallenges`] for it); every
//! other hello the normal one.

use std::sync::Arc;

use rustls::ServerConfig;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737). Never offered to ordinary clients.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Where challenge configurations come from (the ACME store, so that any replica answers).
#[async_trait::async_trait]
pub trait AlpnChallenges: Send + Sync {
    /// A configuration serving the challenge certificate for `server_name`, if one is pending.
    async fn config_for(&self, server_name: &str) -> Option<Arc<ServerConfig>>;
}
