//! The rustls server configuration: provider, protocol versions, ALPN and the resolver.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ProducesTickets, WebPkiClientVerifier};
use rustls::{CipherSuite, ServerConfig};

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
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    build(&versions, resolver, client_auth, None).map(Arc::new)
}

/// A configuration for `versions`; resumption by session ticket when `ticketer` is given (it
/// issues TLS 1.3 tickets only when `versions` is TLS 1.3 alone), else by this process's
/// stateful cache.
fn build(
    versions: &[&'static rustls::SupportedProtocolVersion],
    resolver: Arc<Resolver>,
    client_auth: Option<Arc<dyn ClientCertVerifier>>,
    ticketer: Option<Arc<dyn ProducesTickets>>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(client_auth.unwrap_or_else(WebPkiClientVerifier::no_client_auth))
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    if let Some(ticketer) = ticketer {
        config.ticketer = ticketer;
    }
    Ok(config)
}

/// The server configurations a connection chooses from once its ClientHello is read: one for
/// every client; or, with session tickets (`--ticket-keys`), a TLS 1.3-only one that issues
/// tickets and a TLS 1.2-only one without. A TLS 1.2 ticket holds the master secret under the
/// ticket key alone, so a leaked key would expose every session it resumed; TLS 1.3 resumes
/// with a fresh (EC)DHE exchange (`psk_dhe_ke`, RFC 8446 §2.2; rustls server/tls13.rs refuses
/// to resume without it), so traffic keys stay forward secret.
#[derive(Clone)]
pub struct ServerConfigs {
    default: Arc<ServerConfig>,
    tickets: Option<TicketConfigs>,
}

#[derive(Clone)]
struct TicketConfigs {
    tls13: Arc<ServerConfig>,
    tls12: Arc<ServerConfig>,
}

impl ServerConfigs {
    /// One configuration for every client.
    pub fn new(default: Arc<ServerConfig>) -> Self {
        Self {
            default,
            tickets: None,
        }
    }

    /// The proxy's configurations: as [`server_config`], and, when `ticketer` is given, the
    /// TLS 1.3 one issuing its tickets and the ticketless TLS 1.2 one that [`Self::choose`]
    /// picks from.
    pub fn build(
        resolver: Arc<Resolver>,
        client_auth: Option<Arc<dyn ClientCertVerifier>>,
        ticketer: Option<Arc<dyn ProducesTickets>>,
    ) -> Result<Self, rustls::Error> {
        let default = server_config(Arc::clone(&resolver), client_auth.clone())?;
        let Some(ticketer) = ticketer else {
            return Ok(Self::new(default));
        };
        let tls13 = build(
            &[&rustls::version::TLS13],
            Arc::clone(&resolver),
            client_auth.clone(),
            Some(ticketer),
        )?;
        let tls12 = build(&[&rustls::version::TLS12], resolver, client_auth, None)?;
        Ok(Self {
            default,
            tickets: Some(TicketConfigs {
                tls13: Arc::new(tls13),
                tls12: Arc::new(tls12),
            }),
        })
    }

    /// The configuration for the client whose ClientHello is `hello`, read from `bytes` (the
    /// TLS records as they came off the socket): with tickets on, the TLS 1.3 one when the
    /// hello offers TLS 1.3 (its `supported_versions`), the TLS 1.2 one when it does not, and
    /// the default one when the bytes cannot tell.
    pub fn choose_for(
        &self,
        hello: &rustls::server::ClientHello<'_>,
        bytes: &[u8],
    ) -> Arc<ServerConfig> {
        let Some(tickets) = &self.tickets else {
            return Arc::clone(&self.default);
        };
        match super::tickets::offers_tls13(bytes) {
            Some(true) => Arc::clone(&tickets.tls13),
            Some(false) => Arc::clone(&tickets.tls12),
            None => self.choose(hello),
        }
    }

    /// As [`Self::choose_for`] without the hello's bytes: the cipher suites cannot show that a
    /// client offers TLS 1.3 (a rustls client limited to TLS 1.2 lists TLS 1.3 suites too), so
    /// a hello listing one gets the default configuration (no ticket), and one listing none the
    /// TLS 1.2 one.
    pub fn choose(&self, hello: &rustls::server::ClientHello<'_>) -> Arc<ServerConfig> {
        match &self.tickets {
            Some(tickets) if !lists_tls13_suite(hello.cipher_suites()) => {
                Arc::clone(&tickets.tls12)
            }
            _ => Arc::clone(&self.default),
        }
    }

    /// The configuration used when no ClientHello has been inspected: TLS 1.3 and 1.2,
    /// resumption by this process's stateful cache only.
    pub fn default_config(&self) -> &Arc<ServerConfig> {
        &self.default
    }

    /// Whether TLS 1.3 connections get session tickets.
    pub fn issues_tickets(&self) -> bool {
        self.tickets.is_some()
    }
}

/// Whether `suites` holds a TLS 1.3 cipher suite (RFC 8446 §B.4: 0x13xx).
fn lists_tls13_suite(suites: &[CipherSuite]) -> bool {
    suites.iter().any(|suite| u16::from(*suite) >> 8 == 0x13)
}
