//! What the upstream is told about the client before the client's own bytes: the allow-list
//! check on its certificate, then a PROXY header and/or the rewritten first request head.
//! With all of it off, nothing is read, allocated or sent.

use std::net::SocketAddr;

use hyper::StatusCode;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::head_reader::{HeadFailure, read_head};
use super::proxy_protocol::ProxyProtocol;
use super::proxy_protocol::{self, TlsFacts};
use super::request_head::ClientFacts;
use crate::http::canned::{self, Close};
use crate::tls::{AllowList, ClientCa, ClientIdentity, TlsStream};

/// `--forwarded-headers` and its limits.
#[derive(Debug, Clone)]
pub struct ForwardedHeaders {
    /// `--trust-forwarded`.
    pub trusted: Vec<ipnet::IpNet>,
    /// `--max-request-head`.
    pub max_head: usize,
    /// `--request-head-timeout`.
    pub timeout: std::time::Duration,
}

/// Who the client is and what the upstream is told, validated.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// `--proxy-protocol`; `None` = off.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// `--forwarded-headers`; `None` = off.
    pub forwarded_headers: Option<ForwardedHeaders>,
    /// `--client-ca`; `None` = no client certificates.
    pub client_ca: Option<ClientCa>,
}

/// What a client outside `--allow-san`/`--allow-cn` is told (403) before the close.
const FORBIDDEN: &str = "This client certificate is not allowed.\n";

/// The version as HAProxy's `ssl_fc_protocol` spells it.
fn version_name(version: rustls::ProtocolVersion) -> Option<&'static str> {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
        rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
        _ => None,
    }
}

/// Why a client was turned away after its handshake, before the upstream saw a byte.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Its certificate (or lack of one) is not on the allow-list (answered 403).
    #[error("client certificate not on the allow-list")]
    NotAllowed,
    /// Its request head could not be forwarded.
    #[error(transparent)]
    Head(#[from] HeadFailure),
}

impl Refusal {
    /// The word for [`Refusal::NotAllowed`]; the others are [`HeadFailure::REASONS`].
    pub const NOT_ALLOWED: &'static str = "not_allowed";

    /// A short word for the `connections_rejected_total{reason}` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotAllowed => Self::NOT_ALLOWED,
            Refusal::Head(failure) => failure.reason(),
        }
    }
}

/// What goes upstream before the client's own bytes.
#[derive(Debug)]
pub struct Prepared {
    /// A PROXY header and/or the rewritten first request head.
    pub bytes: Vec<u8>,
    /// Where the request head starts in `bytes` (after a PROXY header); `bytes.len()` when
    /// there is none.
    pub head_at: usize,
}

impl Prepared {
    /// The request head sent, if any.
    pub fn head(&self) -> &[u8] {
        self.bytes.get(self.head_at..).unwrap_or_default()
    }
}

/// The per-proxy settings, from [`ClientConfig`].
#[derive(Debug, Default)]
pub struct Preamble {
    proxy_protocol: Option<ProxyProtocol>,
    forwarded: Option<ForwardedHeaders>,
    allow: AllowList,
    /// A client certificate can be present (`--client-ca`).
    mtls: bool,
}

impl Preamble {
    /// The settings for `config`.
    pub fn new(config: &ClientConfig) -> Self {
        let ca = config.client_ca.as_ref();
        Self {
            proxy_protocol: config.proxy_protocol,
            forwarded: config.forwarded_headers.clone(),
            allow: ca
                .map(|ca| AllowList::new(ca.allow_san.clone(), ca.allow_cn.clone()))
                .unwrap_or_default(),
            mtls: ca.is_some(),
        }
    }

    /// True when there is nothing to check or send: the data path skips [`Preamble::prepare`].
    pub fn is_off(&self) -> bool {
        self.proxy_protocol.is_none() && self.forwarded.is_none() && self.allow.is_empty()
    }

    /// Checks the client and returns the bytes to send upstream before the rest of its
    /// stream (`None` when there are none), or why it was turned away (already answered).
    pub async fn prepare(
        &self,
        client: &mut TlsStream<TcpStream>,
        peer: SocketAddr,
    ) -> Result<Option<Prepared>, Refusal> {
        let identity = self
            .mtls
            .then(|| client.tls().peer_certificates())
            .flatten()
            .and_then(|chain| chain.first())
            .and_then(ClientIdentity::from_leaf);
        if !self.allow.allows(identity.as_ref()) {
            let answer = canned::answer(StatusCode::FORBIDDEN, FORBIDDEN);
            canned::goodbye(client, &answer, Close::Lingering).await;
            return Err(Refusal::NotAllowed);
        }
        // The listener's address: only looked up when a header needs it.
        let local = client.io().local_addr().unwrap_or(peer);
        let sni = client.server_name().map(str::to_owned);
        let tls = client.tls();
        let mut out = Vec::new();
        if let Some(version) = self.proxy_protocol {
            let tls_facts = TlsFacts {
                alpn: tls.alpn_protocol(),
                sni: sni.as_deref(),
                version: tls.protocol_version().and_then(version_name),
                cipher: tls
                    .negotiated_cipher_suite()
                    .and_then(|s| s.suite().as_str()),
                client_cert: identity.is_some(),
                client_cn: identity.as_ref().and_then(|id| id.common_name.as_deref()),
            };
            out = proxy_protocol::header(version, peer, local, &tls_facts);
        }
        let head_at = out.len();
        if let Some(forwarded) = &self.forwarded {
            let cert = identity
                .as_ref()
                .map(ClientIdentity::headers)
                .unwrap_or_default();
            let cert: Vec<(&str, &str)> = cert.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let facts = ClientFacts {
                // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; the app should not.
                addr: SocketAddr::new(peer.ip().to_canonical(), peer.port()),
                local_port: local.port(),
                sni: sni.as_deref(),
                trusted: forwarded
                    .trusted
                    .iter()
                    .any(|net| net.contains(&peer.ip().to_canonical())),
                cert_headers: &cert,
            };
            let deadline = Instant::now() + forwarded.timeout;
            let head = read_head(client, &facts, forwarded.max_head, deadline).await?;
            if out.is_empty() {
                out = head;
            } else {
                out.extend_from_slice(&head);
            }
        }
        Ok((!out.is_empty()).then_some(Prepared {
            bytes: out,
            head_at,
        }))
    }
}
