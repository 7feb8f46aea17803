//! The self-check: before the CA is asked to validate, each name is resolved and dialled as the
//! CA will dial it (TLS with ALPN `acme-tls/1` on port 443, or `GET` of the token on port 80),
//! and the challenge is submitted only once the answer carries our key authorization. Let's
//! Encrypt allows 5 failed validations per name per account per hour, and a first deployment
//! always races DNS and the load balancer: a failing self-check costs nothing at the CA.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{info, warn};

use super::config::{ChallengeKind, SelfCheckConfig};
use super::store::ChallengeAnswer;
use crate::metrics::{Metrics, Reason};

mod probe;

use probe::{http, tls_alpn};

/// The first wait after a failed self-check; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// The longest wait between self-checks: a name fixed in DNS is noticed within this.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// One lookup, connect, handshake or request: a CA gives up on a silent peer about as soon.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a self-check failed. None is fatal: it is retried, and after the timeout the challenge
/// is submitted anyway.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The name did not resolve (or resolved to nothing).
    #[error("cannot resolve {name}: {message}")]
    Dns {
        /// The name.
        name: String,
        /// What the resolver said.
        message: String,
    },
    /// No address of the name accepted a connection.
    #[error("cannot connect to {name} at {addr}: {message}")]
    Connect {
        /// The name.
        name: String,
        /// The last address tried.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
    /// The `acme-tls/1` handshake failed, or negotiated another protocol.
    #[error("tls-alpn-01 handshake with {name} at {addr} failed: {message}")]
    Tls {
        /// The name.
        name: String,
        /// The address.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
    /// The HTTP-01 request failed or did not get a 200.
    #[error("http-01 request to {name} at {addr} failed: {message}")]
    Http {
        /// The name.
        name: String,
        /// The address.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
    /// Something answered, but not with our key authorization (another pod, an old order,
    /// a different service behind the address).
    #[error("{name} at {addr} answers, but not with our key authorization: {message}")]
    WrongAnswer {
        /// The name.
        name: String,
        /// The address.
        addr: SocketAddr,
        /// What was wrong.
        message: String,
    },
}

impl CheckError {
    /// The `reason` label of `acme_self_check_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Dns { .. } => "dns",
            Self::Connect { .. } => "connect",
            Self::Tls { .. } => "tls",
            Self::Http { .. } => "http",
            Self::WrongAnswer { .. } => "wrong_answer",
        }
    }
}

/// How the self-check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every name answered with our key authorization.
    Answered,
    /// Off (`--acme-skip-self-check`).
    Skipped,
    /// Still failing after `--acme-self-check-timeout`: submitted anyway.
    TimedOut,
}

/// Dials our names as the CA will.
pub struct SelfCheck {
    config: SelfCheckConfig,
    kind: ChallengeKind,
    metrics: Arc<Metrics>,
}

impl SelfCheck {
    /// A self-check for `kind` challenges.
    pub fn new(config: SelfCheckConfig, kind: ChallengeKind, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            kind,
            metrics,
        }
    }

    /// Returns once every answer is served as the CA will see it, retrying every few seconds
    /// (at most every 30 s) while any is not, or once the timeout has passed.
    pub async fn wait_answered(&self, answers: &[ChallengeAnswer]) -> Verdict {
        if self.config.skip || answers.is_empty() {
            return Verdict::Skipped;
        }
        let started = Instant::now();
        let deadline = started + self.config.timeout;
        let mut retry = FIRST_RETRY;
        loop {
            let failure = self.check_all(answers).await;
            let Some(err) = failure else {
                info!(
                    acme.names = ?names(answers),
                    acme.self_check_took = ?started.elapsed(),
                    "self-check passed: our names answer with our key authorization; \
                     asking the CA to validate"
                );
                return Verdict::Answered;
            };
            self.metrics
                .acme
                .self_check_failures
                .get_or_create(&Reason {
                    reason: err.reason(),
                })
                .inc();
            let now = Instant::now();
            if now >= deadline {
                warn!(
                    reason = err.reason(),
                    error = %err,
                    acme.self_check_timeout = ?self.config.timeout,
                    "self-check still failing after --acme-self-check-timeout; asking the CA \
                     to validate anyway"
                );
                return Verdict::TimedOut;
            }
            let wait = retry.min(deadline - now);
            warn!(
                reason = err.reason(),
                error = %err,
                acme.retry_in = ?wait,
                "self-check failed: not asking the CA to validate yet"
            );
            tokio::time::sleep(wait).await;
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    /// The first failure among `answers`, if any.
    async fn check_all(&self, answers: &[ChallengeAnswer]) -> Option<CheckError> {
        for answer in answers {
            if let Err(err) = self.check(answer).await {
                return Some(err);
            }
        }
        None
    }

    /// Resolves the name, then dials its addresses in turn (IPv6 first, as Let's Encrypt
    /// does), moving on only when one refuses the connection; the first that connects must
    /// answer right.
    pub async fn check(&self, answer: &ChallengeAnswer) -> Result<(), CheckError> {
        let port = match self.kind {
            ChallengeKind::TlsAlpn01 => self.config.tls_port,
            ChallengeKind::Http01 => self.config.http_port,
        };
        let mut last = None;
        for ip in self.resolve(&answer.name).await? {
            let addr = SocketAddr::new(ip, port);
            let connect = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await;
            let tcp = match connect {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(err)) => {
                    last = Some((addr, err.to_string()));
                    continue;
                }
                Err(_) => {
                    last = Some((addr, format!("no answer in {DIAL_TIMEOUT:?}")));
                    continue;
                }
            };
            let probe = async {
                match self.kind {
                    ChallengeKind::TlsAlpn01 => tls_alpn(tcp, addr, answer).await,
                    ChallengeKind::Http01 => http(tcp, addr, answer).await,
                }
            };
            return match tokio::time::timeout(DIAL_TIMEOUT, probe).await {
                Ok(result) => result,
                Err(_) => Err(CheckError::Connect {
                    name: answer.name.clone(),
                    addr,
                    message: format!("connected, but no answer in {DIAL_TIMEOUT:?}"),
                }),
            };
        }
        // `resolve` returns at least one address, so `last` is set.
        let (addr, message) = last.unwrap_or_else(|| {
            let nowhere = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port);
            (nowhere, "no address".into())
        });
        Err(CheckError::Connect {
            name: answer.name.clone(),
            addr,
            message,
        })
    }

    /// The name's addresses, IPv6 first, through `--acme-resolver` when set.
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, CheckError> {
        let dns = |message: String| CheckError::Dns {
            name: name.to_string(),
            message,
        };
        // Fully qualified for our DNS client, so that no search domain is appended; the system
        // resolver gets the name as given, since /etc/hosts entries do not match a trailing dot.
        let fqdn = format!("{name}.");
        let lookup = async {
            match self.config.resolver {
                Some(server) => {
                    let resolver = resolver_at(server).map_err(|e| dns(e.to_string()))?;
                    let found = resolver
                        .lookup_ip(fqdn.as_str())
                        .await
                        .map_err(|e| dns(e.to_string()))?;
                    Ok(found.iter().collect::<Vec<_>>())
                }
                None => tokio::net::lookup_host((name, 0))
                    .await
                    .map(|addrs| addrs.map(|a| a.ip()).collect())
                    .map_err(|e| dns(e.to_string())),
            }
        };
        let mut ips: Vec<IpAddr> = tokio::time::timeout(DIAL_TIMEOUT, lookup)
            .await
            .map_err(|_| dns(format!("no answer in {DIAL_TIMEOUT:?}")))??;
        ips.sort_by_key(|ip| ip.is_ipv4());
        ips.dedup();
        if ips.is_empty() {
            return Err(dns("no address".into()));
        }
        Ok(ips)
    }
}

fn names(answers: &[ChallengeAnswer]) -> Vec<&str> {
    answers.iter().map(|a| a.name.as_str()).collect()
}

/// A resolver asking only `server`, made afresh for each check so that no answer is cached
/// across a DNS change.
fn resolver_at(
    server: SocketAddr,
) -> Result<Resolver<TokioRuntimeProvider>, hickory_resolver::net::NetError> {
    let connection = |mut config: ConnectionConfig| {
        config.port = server.port();
        config
    };
    let name_server = NameServerConfig::new(
        server.ip(),
        true,
        vec![
            connection(ConnectionConfig::udp()),
            connection(ConnectionConfig::tcp()),
        ],
    );
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![name_server]),
        TokioRuntimeProvider::default(),
    );
    let options = builder.options_mut();
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.timeout = Duration::from_secs(3);
    options.attempts = 2;
    builder.build()
}

#[cfg(test)]
mod tests;
