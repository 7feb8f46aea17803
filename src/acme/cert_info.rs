//! What renewal needs from an issued certificate: its validity and its RFC 9773 identifier.

use instant_acme::CertificateIdentifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, Der};
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::schedule::Validity;
use crate::certs::CertError;

/// The served certificate, as the renewal schedule sees it.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The chain as stored, to recognise it when the store is re-read.
    pub pem: String,
    /// notBefore and notAfter of the leaf.
    pub validity: Validity,
    /// Authority key id and serial (RFC 9773 §4.1); `None` when the leaf has no AKI.
    pub id: Option<CertificateIdentifier<'static>>,
}

impl CertInfo {
    /// Reads the leaf of `pem`.
    pub fn parse(pem: &str) -> Result<Self, CertError> {
        let leaf = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .ok_or(CertError::NoCertificate)?
            .map_err(|e| CertError::CertPem(e.to_string()))?;
        let (_, cert) = X509Certificate::from_der(&leaf)
            .map_err(|e| CertError::BadCertificate(e.to_string()))?;
        let aki = cert
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|k| k.0)
                }
                _ => None,
            });
        let id = aki.map(|aki| {
            CertificateIdentifier::new(
                Der::from_slice(aki),
                Der::from_slice(cert.tbs_certificate.raw_serial()),
            )
            .into_owned()
        });
        Ok(Self {
            pem: pem.to_string(),
            validity: Validity {
                not_before: cert.validity().not_before.timestamp(),
                not_after: cert.validity().not_after.timestamp(),
            },
            id,
        })
    }
}
