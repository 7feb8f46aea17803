//! The benchmark's WebSocket client: TCP, then TLS (rustls; resumption off unless a client
//! asks for its own session store), then the upgrade.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// One connected WebSocket over TLS.
pub type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// No single step of a benchmark connection may take longer than this; a stuck proxy shows
/// up as failures instead of a hung run.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Which key-exchange groups the client offers.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Kx {
    /// X25519 only: what every proxy here can negotiate, so handshakes compare like with like.
    X25519,
    /// X25519MLKEM768 first, then X25519, as browsers offer today.
    Pq,
}

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub url: String,
    pub name: ServerName<'static>,
    pub connector: TlsConnector,
    /// The configuration behind `connector`, to derive clients with their own session store.
    config: Arc<ClientConfig>,
}

/// What a completed TLS handshake negotiated.
pub struct Handshake {
    /// Key-exchange group and cipher suite, e.g. `X25519,TLS13_AES_128_GCM_SHA256`.
    pub group: String,
    /// The end of the server's certificate (its signature: unique per certificate).
    pub cert_tail: Vec<u8>,
    /// The server accepted a ticket or session id from an earlier connection.
    pub resumed: bool,
}

/// Session tickets one client keeps: TLS 1.3 servers send two per handshake and each is used
/// once, so a few are enough for a client that reconnects one connection at a time.
const SESSIONS_PER_CLIENT: usize = 4;

impl Target {
    /// A target at `addr` presenting a certificate for `localhost` issued by the CA in `ca`.
    pub fn new(addr: SocketAddr, ca: &Path, kx: Kx) -> anyhow::Result<Self> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).context("reading the CA file")? {
            roots.add(cert?)?;
        }
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        use rustls::crypto::aws_lc_rs::kx_group::{X25519, X25519MLKEM768};
        // Browsers' order (AES-128-GCM first), not rustls' (AES-256-GCM-SHA384 first): what a
        // proxy meets in production, and all three follow the client's order.
        provider.cipher_suites = vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ];
        provider.kx_groups = match kx {
            Kx::X25519 => vec![X25519],
            Kx::Pq => vec![X25519MLKEM768, X25519],
        };
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every connection pays for a full handshake, as a new visitor does.
        config.resumption = Resumption::disabled();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        Ok(Self {
            addr,
            url: format!("wss://localhost:{}/ws", addr.port()),
            name: ServerName::try_from("localhost")?,
            connector: TlsConnector::from(config.clone()),
            config,
        })
    }

    /// The same target for one client that keeps its own session tickets and offers them
    /// when it reconnects, as a browser does; clients never share tickets. Sessions are kept
    /// per server name, so a ticket from one address is offered to another of the same name.
    pub fn with_own_sessions(&self) -> Self {
        let mut config = (*self.config).clone();
        config.resumption = Resumption::in_memory_sessions(SESSIONS_PER_CLIENT);
        let config = Arc::new(config);
        Self {
            connector: TlsConnector::from(config.clone()),
            config,
            ..self.clone()
        }
    }

    /// The same client (and session store) at another address.
    pub fn at(&self, addr: SocketAddr) -> Self {
        Self {
            addr,
            url: format!("wss://localhost:{}/ws", addr.port()),
            ..self.clone()
        }
    }

    /// Connects, completes TLS and the WebSocket upgrade. Returns the socket and the name of
    /// the key-exchange group negotiated.
    pub async fn connect(&self) -> anyhow::Result<(Ws, String)> {
        let (ws, handshake) = self.connect_detailed().await?;
        Ok((ws, handshake.group))
    }

    /// [`Target::connect`], returning all the handshake says (the certificate, to see a reload
    /// take effect; whether it was resumed).
    pub async fn connect_detailed(&self) -> anyhow::Result<(Ws, Handshake)> {
        tokio::time::timeout(STEP_TIMEOUT, async {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let tls = self.connector.connect(self.name.clone(), tcp).await?;
            let group = tls
                .get_ref()
                .1
                .negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name()))
                .unwrap_or_default();
            let suite = tls
                .get_ref()
                .1
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default();
            let group = format!("{group},{suite}");
            let cert_tail = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|leaf| leaf[leaf.len().saturating_sub(16)..].to_vec())
                .unwrap_or_default();
            let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
            let (ws, _) = tokio_tungstenite::client_async_with_config(
                self.url.as_str(),
                tls,
                Some(ws_config()),
            )
            .await?;
            let handshake = Handshake {
                group,
                cert_tail,
                resumed,
            };
            Ok((ws, handshake))
        })
        .await
        .context("connect timed out")?
    }
}

/// Large enough for the 64 KiB messages of the throughput figure.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

/// Sends `payload` and waits for it to come back unchanged.
pub async fn round_trip(ws: &mut Ws, payload: &[u8]) -> anyhow::Result<()> {
    tokio::time::timeout(STEP_TIMEOUT, async {
        ws.send(Message::binary(payload.to_vec())).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(got))) if got.len() == payload.len() => return Ok(()),
                Some(Ok(Message::Binary(_))) => bail!("echo came back with a different length"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => bail!("unexpected message {other:?}"),
                Some(Err(e)) => return Err(e.into()),
                None => bail!("connection closed during an echo"),
            }
        }
    })
    .await
    .context("echo timed out")?
}

/// Closes the WebSocket: our close frame, then whatever the peer sends until the end. How the
/// peer ends the TCP/TLS connection afterwards (close_notify or not) is not a failure.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(STEP_TIMEOUT, async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}
