//! Clients that talk to the sidecar as a browser would: TLS with rustls, then WebSocket.
//!
//! Every wait is bounded by [`IO_TIMEOUT`] so a broken sidecar fails a test instead of hanging
//! it. Do not combine these with `tokio::time::pause()`: with real sockets the paused clock
//! jumps straight to the timeout whenever the runtime idles.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// How long any single connect, handshake or reply may take before a test gives up.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Message and frame limits for test WebSockets: well above the 16 MiB messages tests send,
/// so a failure points at the sidecar, not at the test's own client.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// A client config trusting only `roots`, offering `alpn`. Resumption is off so every
/// connection makes a full handshake and sees the certificate the server holds right now.
pub fn client_config(roots: &[CertificateDer<'static>], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .expect("test root certificate is acceptable");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client config that accepts whatever certificate the server presents, for any name, as a
/// person clicking through the browser's warning does, or so a test can see which certificate
/// the server picked even when it does not cover the name asked for. Handshake signatures are
/// still checked, so the server must hold the key of what it presents. Resumption is off and
/// `http/1.1` is offered, as in [`client_config`].
pub fn any_certificate_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The verifier behind [`any_certificate_config`].
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TCP connect then TLS handshake, sending `server_name` as SNI (an IP literal sends none).
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    with_timeout(async {
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(config).connect(name, tcp).await
    })
    .await
}

/// The leaf certificate the server presented.
pub fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    let (_, connection) = stream.get_ref();
    let chain = connection
        .peer_certificates()
        .expect("server presented certificates");
    chain
        .first()
        .expect("server chain has a leaf")
        .clone()
        .into_owned()
}

/// The DNS subject alternative names of a certificate (IP SANs are left out).
pub fn leaf_names(der: &CertificateDer) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("certificate parses");
    let Some(san) = cert
        .subject_alternative_name()
        .expect("SAN extension parses")
    else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .collect()
}

/// TLS then a WebSocket upgrade to `wss://{server_name}:{port}/ws`.
pub async fn ws_connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<WebSocketStream<TlsStream<TcpStream>>, String> {
    let url = format!("wss://{server_name}:{}/ws", addr.port());
    ws_connect_with(addr, server_name, config, url).await
}

/// Like [`ws_connect`] with a caller-built request, e.g. one carrying extra headers.
pub async fn ws_connect_with<R>(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
    request: R,
) -> Result<WebSocketStream<TlsStream<TcpStream>>, String>
where
    R: IntoClientRequest + Unpin,
{
    let tls = tls_connect(addr, server_name, config)
        .await
        .map_err(|e| format!("tls connect to {addr} as {server_name}: {e}"))?;
    ws_upgrade(tls, request)
        .await
        .map_err(|e| format!("websocket upgrade via {addr}: {e}"))
}

/// The WebSocket upgrade over an already open stream, bounded by [`IO_TIMEOUT`]: a timeout is
/// an I/O error. The error is tungstenite's own, so a test can look at a refused upgrade's
/// HTTP response.
pub async fn ws_upgrade<S, R>(stream: S, request: R) -> Result<WebSocketStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: IntoClientRequest + Unpin,
{
    let upgrade = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()));
    match tokio::time::timeout(IO_TIMEOUT, upgrade).await {
        Ok(upgraded) => upgraded.map(|(ws, _response)| ws),
        Err(_) => Err(WsError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no upgrade within {IO_TIMEOUT:?}"),
        ))),
    }
}

/// Sends `msg` and returns the next data message (pings and pongs are skipped), or why not.
pub async fn try_echo_once<S>(ws: &mut WebSocketStream<S>, msg: Message) -> Result<Message, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        ws.send(msg).await.map_err(|e| format!("send: {e}"))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
                Some(Ok(reply)) => return Ok(reply),
                Some(Err(e)) => return Err(format!("receive: {e}")),
                None => return Err("stream ended".to_string()),
            }
        }
    };
    tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no reply within {IO_TIMEOUT:?}")))
}

/// Sends `msg` and returns the reply; panics naming what went wrong.
pub async fn echo_once<S>(ws: &mut WebSocketStream<S>, msg: Message) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    try_echo_once(ws, msg)
        .await
        .unwrap_or_else(|e| panic!("echo_once: {e}"))
}

/// Sends `msg` and asserts the reply is identical to it.
pub async fn assert_echo<S>(ws: &mut WebSocketStream<S>, msg: Message)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reply = echo_once(ws, msg.clone()).await;
    assert!(
        reply == msg,
        "echo differs: sent {} bytes, got {} bytes",
        msg.len(),
        reply.len()
    );
}

async fn with_timeout<T>(f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(IO_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no progress within {IO_TIMEOUT:?}"),
            ))
        })
}
