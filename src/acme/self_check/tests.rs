//! The self-check's verdicts against in-process servers: the right answer passes, every other
//! answer fails with its reason, and the retry loop gives up (submits) only at its timeout.

use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::probe::{http, tls_alpn};
use super::*;
use crate::tls::{self, ACME_TLS_ALPN};

const NAME: &str = "chat.acme.test";
const KEY_AUTH: &str = "token-0123456789abcdefghij.thumbprint";

fn answer(key_authorization: &str) -> ChallengeAnswer {
    ChallengeAnswer {
        name: NAME.into(),
        token: "token-0123456789abcdefghij".into(),
        key_authorization: key_authorization.into(),
    }
}

/// What a TLS test server presents.
enum Served {
    /// The RFC 8737 certificate for `KEY_AUTH`, with ALPN `acme-tls/1`.
    Challenge,
    /// An ordinary certificate for the name, with ALPN `acme-tls/1`.
    Ordinary,
    /// The challenge certificate, but no ALPN (a server that ignores acme-tls/1).
    NoAlpn,
}

/// A TLS server on loopback presenting `served` for `name` to every connection.
async fn tls_server_for(served: Served, name: &str) -> SocketAddr {
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    if !matches!(served, Served::Ordinary) {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, KEY_AUTH.as_bytes());
        params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest.as_ref())];
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = tls::provider().key_provider.load_private_key(der).unwrap();
    let key = Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing));
    // Not `with_single_cert`: it refuses the critical acmeIdentifier extension.
    let mut config = ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(key)));
    if !matches!(served, Served::NoAlpn) {
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

async fn tls_server(served: Served) -> SocketAddr {
    tls_server_for(served, NAME).await
}

/// An HTTP server on loopback answering every request with `status` and `body`.
async fn http_server(status: u16, body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 1024];
                let _ = tcp.read(&mut head).await;
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

async fn dial_tls(addr: SocketAddr, key_authorization: &str) -> Result<(), CheckError> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tls_alpn(tcp, addr, &answer(key_authorization)).await
}

async fn dial_http(addr: SocketAddr, key_authorization: &str) -> Result<(), CheckError> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    http(tcp, addr, &answer(key_authorization)).await
}

fn reason(result: Result<(), CheckError>) -> &'static str {
    result.map_or_else(|e| e.reason(), |()| "passed")
}

#[tokio::test]
async fn tls_alpn_01_passes_only_with_our_key_authorization() {
    let challenge = tls_server(Served::Challenge).await;
    dial_tls(challenge, KEY_AUTH).await.expect("our answer");
    assert_eq!(
        reason(dial_tls(challenge, "other.thumbprint").await),
        "wrong_answer"
    );
    let ordinary = tls_server(Served::Ordinary).await;
    assert_eq!(reason(dial_tls(ordinary, KEY_AUTH).await), "wrong_answer");
    let no_alpn = tls_server(Served::NoAlpn).await;
    assert_eq!(reason(dial_tls(no_alpn, KEY_AUTH).await), "wrong_answer");
    // Plain HTTP where TLS was expected: the handshake fails.
    let plain = http_server(200, KEY_AUTH).await;
    assert_eq!(reason(dial_tls(plain, KEY_AUTH).await), "tls");
}

#[tokio::test]
async fn http_01_passes_only_with_our_key_authorization_and_a_200() {
    dial_http(http_server(200, KEY_AUTH).await, KEY_AUTH)
        .await
        .expect("our answer");
    let other = http_server(200, "another.key-authorization").await;
    assert_eq!(reason(dial_http(other, KEY_AUTH).await), "wrong_answer");
    let missing = http_server(404, "not found").await;
    assert_eq!(reason(dial_http(missing, KEY_AUTH).await), "http");
    let redirect = http_server(308, "").await;
    assert_eq!(reason(dial_http(redirect, KEY_AUTH).await), "http");
}

fn config(tls_port: u16, timeout: Duration, skip: bool) -> SelfCheckConfig {
    SelfCheckConfig {
        skip,
        timeout,
        resolver: None,
        tls_port,
        http_port: 80,
    }
}

fn failures(metrics: &Metrics, reason: &'static str) -> u64 {
    metrics
        .acme
        .self_check_failures
        .get_or_create(&Reason { reason })
        .get()
}

/// A loopback port where nothing listens.
async fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_failing_check_retries_until_the_timeout_then_submits_and_counts_why() {
    let metrics = Arc::new(Metrics::new());
    let timeout = Duration::from_millis(2500);
    let check = SelfCheck::new(
        config(dead_port().await, timeout, false),
        ChallengeKind::TlsAlpn01,
        Arc::clone(&metrics),
    );
    let mut refused = answer(KEY_AUTH);
    refused.name = "localhost".into();
    let started = std::time::Instant::now();
    assert_eq!(check.wait_answered(&[refused]).await, Verdict::TimedOut);
    let took = started.elapsed();
    assert!(
        took >= timeout,
        "gave up after {took:?}, before the timeout"
    );
    assert!(took < timeout + DIAL_TIMEOUT, "took {took:?}");
    // Checked at 0 s, 2 s and at the deadline: a few seconds apart, not in a busy loop.
    assert_eq!(failures(&metrics, "connect"), 3);
}

#[tokio::test]
async fn a_passing_check_returns_at_once_and_skip_checks_nothing() {
    let metrics = Arc::new(Metrics::new());
    let mut ours = answer(KEY_AUTH);
    ours.name = "localhost".into();
    let port = tls_server_for(Served::Challenge, "localhost").await.port();
    let check = SelfCheck::new(
        config(port, Duration::from_secs(60), false),
        ChallengeKind::TlsAlpn01,
        Arc::clone(&metrics),
    );
    let started = std::time::Instant::now();
    assert_eq!(
        check.wait_answered(std::slice::from_ref(&ours)).await,
        Verdict::Answered
    );
    assert!(started.elapsed() < FIRST_RETRY, "no retry when it passes");
    // A certificate for another name is not ours.
    let other = tls_server(Served::Challenge).await.port();
    let check = SelfCheck::new(
        config(other, Duration::from_secs(60), false),
        ChallengeKind::TlsAlpn01,
        Arc::clone(&metrics),
    );
    assert_eq!(reason(check.check(&ours).await), "wrong_answer");

    let skip = SelfCheck::new(
        config(dead_port().await, Duration::from_secs(60), true),
        ChallengeKind::TlsAlpn01,
        Arc::clone(&metrics),
    );
    assert_eq!(skip.wait_answered(&[ours]).await, Verdict::Skipped);
    assert_eq!(failures(&metrics, "connect"), 0, "skip dials nothing");
}

#[tokio::test]
async fn an_unresolvable_name_is_a_dns_failure() {
    let check = SelfCheck::new(
        config(443, Duration::from_secs(60), false),
        ChallengeKind::TlsAlpn01,
        Arc::new(Metrics::new()),
    );
    let mut nowhere = answer(KEY_AUTH);
    nowhere.name = "no-such-name.invalid".into();
    assert_eq!(reason(check.check(&nowhere).await), "dns");
}
