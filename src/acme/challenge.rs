//! Answering the CA's validation from the store's pending answers, so any replica can answer:
//! TLS-ALPN-01 (RFC 8737) on the wss port, HTTP-01 on `--http-listen`.

use std::sync::Arc;

use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tracing::{debug, info};

use super::store::{AcmeStore, ChallengeAnswer};
use crate::http::plain::Http01Answers;
use crate::tls::{self, ACME_TLS_ALPN, AlpnChallenges};

/// Looks pending answers up in the store.
pub struct ChallengeResponder {
    store: Arc<dyn AcmeStore>,
    /// The names being ordered: only a validation of one of them is worth a fresh read.
    names: Vec<String>,
}

/// ACME tokens are base64url, at least 128 bits of entropy (RFC 8555 §8.1): 22 characters.
const MIN_TOKEN_LEN: usize = 22;
const MAX_TOKEN_LEN: usize = 256;

impl ChallengeResponder {
    /// A responder over `store`, for the certificate of `names`.
    pub fn new(store: Arc<dyn AcmeStore>, names: Vec<String>) -> Self {
        Self { store, names }
    }

    /// The pending answer `matches` picks: from the answers at hand, else (when `worth_it`)
    /// read afresh, as the ordering replica may have published it a moment ago.
    async fn find(
        &self,
        matches: impl Fn(&ChallengeAnswer) -> bool,
        worth_it: bool,
    ) -> Option<ChallengeAnswer> {
        match self.store.load_challenges().await {
            Ok(answers) => {
                if let Some(answer) = answers.into_iter().find(&matches) {
                    return Some(answer);
                }
            }
            Err(err) => debug!(error = %err, "cannot read pending challenges"),
        }
        if !worth_it {
            return None;
        }
        match self.store.refresh_challenges().await {
            Ok(answers) => answers.into_iter().find(matches),
            Err(err) => {
                debug!(error = %err, "cannot read pending challenges");
                None
            }
        }
    }
}

#[async_trait::async_trait]
impl Http01Answers for ChallengeResponder {
    async fn http_answer(&self, token: &str) -> Option<String> {
        let plausible = (MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len())
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let answer = self.find(|a| a.token == token, plausible).await?;
        info!(acme.name = %answer.name, "answering an http-01 challenge");
        Some(answer.key_authorization)
    }
}

#[async_trait::async_trait]
impl AlpnChallenges for ChallengeResponder {
    async fn config_for(&self, server_name: &str) -> Option<Arc<ServerConfig>> {
        let ours = self
            .names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(server_name));
        let answer = self
            .find(|a| a.name.eq_ignore_ascii_case(server_name), ours)
            .await?;
        let key = match challenge_key(&answer.name, &answer.key_authorization) {
            Ok(key) => key,
            Err(err) => {
                debug!(error = %err, "cannot build the tls-alpn-01 certificate");
                return None;
            }
        };
        let mut config = ServerConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .ok()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(key)));
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        info!(acme.name = %answer.name, "answering a tls-alpn-01 challenge");
        Some(Arc::new(config))
    }
}

/// The self-signed certificate RFC 8737 asks for: `name` as its only SAN, and the critical
/// acmeIdentifier extension holding SHA-256 of the key authorization.
fn challenge_key(name: &str, key_authorization: &str) -> Result<Arc<CertifiedKey>, rcgen::Error> {
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes());
    let mut params = CertificateParams::new(vec![name.to_string()])?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = tls::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|_| rcgen::Error::CouldNotParseKeyPair)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signing,
    )))
}

/// Serves one certificate whatever the hello says.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_certificate_carries_the_digest() {
        let key = challenge_key("a.test", "token.thumbprint").unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&key.cert[0]).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"token.thumbprint");
        // The extension value is an OCTET STRING (04 20) around the 32-byte digest.
        assert_eq!(&ext.value[2..], digest.as_ref());
    }
}
