//! One dial of the self-check, as the CA dials: the TLS-ALPN-01 handshake and its certificate,
//! or the HTTP-01 request and its body.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::CheckError;
use crate::acme::store::ChallengeAnswer;
use crate::tls::{self, ACME_TLS_ALPN};

/// The most of an HTTP-01 response read: a key authorization is under 200 bytes.
const MAX_RESPONSE: u64 = 16 * 1024;

/// TLS-ALPN-01 as the CA dials it (RFC 8737 §3): SNI the name, ALPN `acme-tls/1` only; the
/// certificate must name exactly the name and carry the critical acmeIdentifier extension
/// with SHA-256 of our key authorization.
pub(super) async fn tls_alpn(
    tcp: TcpStream,
    addr: SocketAddr,
    answer: &ChallengeAnswer,
) -> Result<(), CheckError> {
    let fail = |message: String| CheckError::Tls {
        name: answer.name.clone(),
        addr,
        message,
    };
    let wrong = |message: String| CheckError::WrongAnswer {
        name: answer.name.clone(),
        addr,
        message,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| fail(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    let server_name = ServerName::try_from(answer.name.clone()).map_err(|e| fail(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let (_, session) = stream.get_ref();
    if session.alpn_protocol() != Some(ACME_TLS_ALPN) {
        return Err(wrong("the server did not negotiate acme-tls/1".into()));
    }
    let leaf = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| fail("no certificate".into()))?;
    check_challenge_certificate(leaf, &answer.name, &answer.key_authorization).map_err(wrong)
}

/// Whether `leaf` is the TLS-ALPN-01 certificate for `name` and `key_authorization`.
fn check_challenge_certificate(
    leaf: &CertificateDer<'_>,
    name: &str,
    key_authorization: &str,
) -> Result<(), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(dns) => {
                        Some(dns.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names != [name.to_ascii_lowercase()] {
        return Err(format!("the certificate names {names:?}, not only {name}"));
    }
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
        .ok_or("the certificate has no acmeIdentifier extension (a normal certificate?)")?;
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes());
    // The extension's value is an OCTET STRING (04 20) around the 32-byte digest.
    let expected: Vec<u8> = [0x04, 0x20]
        .iter()
        .chain(digest.as_ref())
        .copied()
        .collect();
    if !ext.critical || ext.value != expected.as_slice() {
        return Err("the acmeIdentifier extension holds another key authorization".into());
    }
    Ok(())
}

/// HTTP-01 as the CA dials it (RFC 8555 §8.3): `GET /.well-known/acme-challenge/TOKEN` with
/// the name as Host; a 200 whose body (surrounding whitespace ignored) is our key
/// authorization. Redirects are not followed: ours never redirects that path.
pub(super) async fn http(
    mut tcp: TcpStream,
    addr: SocketAddr,
    answer: &ChallengeAnswer,
) -> Result<(), CheckError> {
    let fail = |message: String| CheckError::Http {
        name: answer.name.clone(),
        addr,
        message,
    };
    let request = format!(
        "GET /.well-known/acme-challenge/{} HTTP/1.1\r\nHost: {}\r\n\
         User-Agent: wss-sidecar-self-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        answer.token, answer.name
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut response = Vec::new();
    (&mut tcp)
        .take(MAX_RESPONSE)
        .read_to_end(&mut response)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(&response) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(fail("incomplete response".into())),
        Err(e) => return Err(fail(format!("not HTTP: {e}"))),
    };
    match parsed.code {
        Some(200) => {}
        code => {
            return Err(fail(format!(
                "status {}",
                code.map_or("none".into(), |c| c.to_string())
            )));
        }
    }
    let body = String::from_utf8_lossy(&response[head_len..]);
    if body.trim() != answer.key_authorization {
        return Err(CheckError::WrongAnswer {
            name: answer.name.clone(),
            addr,
            message: "the body is not our key authorization".into(),
        });
    }
    Ok(())
}

/// Accepts any certificate and any handshake signature: like the CA, the self-check judges the
/// challenge certificate by its contents, not by who issued it; and webpki, which checks the
/// signatures, refuses the critical acmeIdentifier extension. A forged answer could only make
/// us ask the CA early, which then validates on its own.
#[derive(Debug)]
struct AnyCertificate;

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
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
