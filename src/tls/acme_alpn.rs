//! The handshake when ACME TLS-ALPN-01 is on: a ClientHello offering only `acme-tls/1` gets a
//! one-off configuration with the challenge certificate; every other hello the normal one.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::Acceptor;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};

use super::handshake::{HandshakeError, expect_tls, map_tls_error};

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737). Never offered to ordinary clients.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Where challenge configurations come from (the ACME store, so that any replica answers).
#[async_trait::async_trait]
pub trait AlpnChallenges: Send + Sync {
    /// A configuration serving the challenge certificate for `server_name`, if one is pending.
    async fn config_for(&self, server_name: &str) -> Option<Arc<ServerConfig>>;
}

/// Like [`super::accept`], but answers TLS-ALPN-01 validation hellos from `challenges`. A
/// validation handshake ends with [`HandshakeError::AcmeChallenge`] once answered.
pub async fn accept_answering(
    tcp: TcpStream,
    acceptor: &TlsAcceptor,
    challenges: &dyn AlpnChallenges,
    deadline: Instant,
) -> Result<TlsStream<TcpStream>, HandshakeError> {
    let tcp = expect_tls(tcp, deadline).await?;
    let start =
        match tokio::time::timeout_at(deadline, LazyConfigAcceptor::new(Acceptor::default(), tcp))
            .await
        {
            Err(_) => return Err(HandshakeError::Timeout),
            Ok(Err(err)) => return Err(map_tls_error(err)),
            Ok(Ok(start)) => start,
        };
    let hello = start.client_hello();
    let validation = hello
        .alpn()
        .map(|mut protocols| protocols.next() == Some(ACME_TLS_ALPN) && protocols.next().is_none())
        .unwrap_or(false);
    if !validation {
        let config = Arc::clone(acceptor.config());
        return match tokio::time::timeout_at(deadline, start.into_stream(config)).await {
            Err(_) => Err(HandshakeError::Timeout),
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(err)) => Err(map_tls_error(err)),
        };
    }
    let name = hello.server_name().map(str::to_owned).unwrap_or_default();
    let Some(config) = challenges.config_for(&name).await else {
        return Err(HandshakeError::NoChallenge(name));
    };
    let mut stream = match tokio::time::timeout_at(deadline, start.into_stream(config)).await {
        Err(_) => return Err(HandshakeError::Timeout),
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err(map_tls_error(err)),
    };
    // The validator only needs the handshake; say goodbye properly and close.
    let _ = tokio::time::timeout_at(deadline, stream.shutdown()).await;
    Err(HandshakeError::AcmeChallenge(name))
}
