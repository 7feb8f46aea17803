//! Answering the CA's validation from the store's pending answers, so any replica can answer:
//! TLS-ALPN-01 (RFC 8737) on the wss port, HTTP-01 on `--http-listen`.

use std::sync::Arc;

use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tracing::{debug, info};

use super::store::AcmeStore;
use crate::tls::{self, ACME_TLS_ALPN, AlpnChallenges};

/// Looks pending answers up in the store.
pub struct ChallengeResponder {
    store: Arc<dyn AcmeStore>,
}

impl ChallengeResponder {
    /// A responder over `store`.
    pub fn new(store: Arc<dyn AcmeStore>) -> Self {
        Self { store }
    }

    /// The HTTP-01 body for `token`, if an answer for it is pending.
    pub async fn http_answer(&self, token: &str) -> Option<String> {
        let answers = self.store.load_challenges().await.ok()?;
        let answer = answers.into_iter().find(|a| a.token == token)?;
        info!(acme.name = %answer.name, "answering an http-01 challenge");
        Some(answer.key_authorization)
    }
}

#[async_trait::async_trait]
impl AlpnChallenges for ChallengeResponder {
    async fn config_for(&self, server_name: &str) -> Option<Arc<ServerConfig>> {
        let answers = match self.store.load_challenges().await {
            Ok(answers) => answers,
            Err(err) => {
                debug!(error = %err, "cannot read pending challenges");
                return None;
            }
        };
        let answer = answers
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(server_name))?;
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
