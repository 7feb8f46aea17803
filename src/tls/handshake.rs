//! One TLS handshake under a deadline; a plain-HTTP request on the TLS port gets a 400.
//! TLS-ALPN-01 validation hellos get their challenge certificate (see `acme_alpn`).

use std::io;

use hyper::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::stream::{TlsStream, read_hello};
use super::{AlpnChallenges, ServerConfigs};
use crate::http::canned::{self, Close};

/// What NGINX answers (400) when plain HTTP reaches a TLS port; a person testing with
/// `curl http://` learns what went wrong instead of seeing a reset.
const PLAIN_HTTP: &str = "The plain HTTP request was sent to an HTTPS port\n";

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why a handshake failed. Each ends only its own connection.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client did not finish within `--handshake-timeout`.
    #[error("handshake timed out")]
    Timeout,
    /// The first bytes were not a TLS ClientHello (plain HTTP, a port scanner).
    #[error("not a TLS client hello (plain HTTP on the TLS port?)")]
    NotTls,
    /// The client left before the handshake completed.
    #[error("client closed during handshake: {0}")]
    Eof(io::Error),
    /// TLS negotiation failed (no common version, cipher or protocol; bad certificate).
    #[error("tls handshake failed: {0}")]
    Tls(io::Error),
    /// An ACME TLS-ALPN-01 validation was answered (not a failure; the connection is done).
    #[error("answered an acme-tls/1 validation for {0:?}")]
    AcmeChallenge(String),
    /// An `acme-tls/1` hello for a name with no pending challenge.
    #[error("acme-tls/1 hello for {0:?}, which has no pending challenge")]
    NoChallenge(String),
}

impl HandshakeError {
    /// Every word [`reason`](Self::reason) gives a failure (an answered `AcmeChallenge` is not
    /// one): the metric's series are created at zero from these.
    pub const FAILURE_REASONS: [&'static str; 6] = [
        "timeout",
        "not_tls",
        "eof",
        "client_cert",
        "tls",
        "acme_no_challenge",
    ];

    /// A short word for the `handshake_failures_total{reason}` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::Timeout => Self::FAILURE_REASONS[0],
            HandshakeError::NotTls => Self::FAILURE_REASONS[1],
            HandshakeError::Eof(_) => Self::FAILURE_REASONS[2],
            HandshakeError::Tls(e) if super::is_client_cert_error(e) => Self::FAILURE_REASONS[3],
            HandshakeError::Tls(_) => Self::FAILURE_REASONS[4],
            HandshakeError::NoChallenge(_) => Self::FAILURE_REASONS[5],
            HandshakeError::AcmeChallenge(_) => "acme_challenge",
        }
    }
}

/// Runs the server side of a TLS handshake on `tcp`, all of it before `deadline`: reads the
/// ClientHello, then completes the handshake with the configuration `configs` chooses for it.
/// With `challenges` (ACME TLS-ALPN-01 on), a validation hello is answered with its challenge
/// certificate instead and ends with [`HandshakeError::AcmeChallenge`].
pub async fn accept(
    tcp: TcpStream,
    configs: &ServerConfigs,
    challenges: Option<&dyn AlpnChallenges>,
    deadline: Instant,
) -> Result<TlsStream<TcpStream>, HandshakeError> {
    let mut tcp = expect_tls(tcp, deadline).await?;
    let hello = match tokio::time::timeout_at(deadline, read_hello(&mut tcp, configs)).await {
        Err(_) => return Err(HandshakeError::Timeout),
        Ok(Err(err)) => return Err(map_tls_error(err)),
        Ok(Ok(hello)) => hello,
    };
    let (config, validation) = match challenges {
        Some(challenges) if hello.acme_validation => {
            let name = hello.sni.as_deref().unwrap_or_default().to_owned();
            match challenges.config_for(&name).await {
                Some(config) => (config, Some(name)),
                None => return Err(HandshakeError::NoChallenge(name)),
            }
        }
        _ => (hello.config, None),
    };
    let mut stream = TlsStream::new(tcp, config, hello.bytes, hello.sni)
        .map_err(|err| HandshakeError::Tls(io::Error::new(io::ErrorKind::InvalidData, err)))?;
    match tokio::time::timeout_at(deadline, stream.handshake()).await {
        Err(_) => return Err(HandshakeError::Timeout),
        Ok(Err(err)) => return Err(map_tls_error(err)),
        Ok(Ok(())) => {}
    }
    if let Some(name) = validation {
        // The validator only needs the handshake; say goodbye properly and close.
        let _ = tokio::time::timeout_at(deadline, stream.shutdown()).await;
        return Err(HandshakeError::AcmeChallenge(name));
    }
    Ok(stream)
}

/// Passes `tcp` on when it opens like TLS; else answers plain HTTP with a 400 and fails.
async fn expect_tls(tcp: TcpStream, deadline: Instant) -> Result<TcpStream, HandshakeError> {
    // A TLS connection opens with a handshake record (content type 22); anything else is
    // plain text (usually HTTP) and gets a readable answer instead of a binary alert.
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
        Err(_) => return Err(HandshakeError::Timeout),
        Ok(Err(err)) => return Err(HandshakeError::Eof(err)),
        Ok(Ok(0)) => return Err(HandshakeError::Eof(io::ErrorKind::UnexpectedEof.into())),
        Ok(Ok(_)) if first[0] != TLS_HANDSHAKE_RECORD => {
            let mut tcp = tcp;
            let answer = canned::answer(StatusCode::BAD_REQUEST, PLAIN_HTTP);
            // Bounded by the handshake deadline too; the connection closes either way.
            let goodbye = canned::goodbye(&mut tcp, &answer, Close::Now);
            let _ = tokio::time::timeout_at(deadline, goodbye).await;
            return Err(HandshakeError::NotTls);
        }
        Ok(Ok(_)) => {}
    }
    Ok(tcp)
}

/// Sorts a failed negotiation into the client leaving or TLS refusing.
fn map_tls_error(err: io::Error) -> HandshakeError {
    if is_eof(&err) {
        HandshakeError::Eof(err)
    } else {
        HandshakeError::Tls(err)
    }
}

fn is_eof(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}
