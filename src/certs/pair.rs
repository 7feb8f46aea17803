//! Turning PEM bytes into a validated key pair: parsed, key matching certificate, in date.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::clock::epoch_seconds;

/// Why a key pair was refused. None of these is fatal to the process: the previous pair keeps
/// serving. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file holds no `CERTIFICATE` PEM block.
    #[error("no PEM certificate found in tls.crt")]
    NoCertificate,
    /// The certificate PEM is damaged (truncated, bad base64).
    #[error("tls.crt is not valid PEM: {0}")]
    CertPem(String),
    /// The key file holds no usable private key.
    #[error("no private key found in tls.key (expected PKCS#1, SEC1 or PKCS#8 PEM)")]
    NoKey,
    /// The private key is of a type rustls cannot sign with.
    #[error("tls.key is not a supported key (RSA, ECDSA P-256/P-384 or Ed25519): {0}")]
    UnsupportedKey(String),
    /// The private key belongs to another certificate.
    #[error("the private key in tls.key does not match the certificate in tls.crt")]
    KeyMismatch,
    /// The leaf certificate's DER does not parse.
    #[error("the certificate does not parse: {0}")]
    BadCertificate(String),
    /// notAfter is in the past.
    #[error("the certificate expired at {0}")]
    Expired(String),
    /// notBefore is in the future.
    #[error("the certificate is not valid before {0}")]
    NotYetValid(String),
    /// A Kubernetes Secret source has nothing to load: the Secret is missing or lacks a key.
    #[error("{0}")]
    Missing(String),
}

impl CertError {
    /// A short word for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            CertError::Read { .. } => "read",
            CertError::Missing(_) => "missing",
            CertError::NoCertificate | CertError::CertPem(_) | CertError::BadCertificate(_) => {
                "bad_certificate"
            }
            CertError::NoKey | CertError::UnsupportedKey(_) => "bad_key",
            CertError::KeyMismatch => "key_mismatch",
            CertError::Expired(_) => "expired",
            CertError::NotYetValid(_) => "not_yet_valid",
        }
    }
}

/// A validated certificate chain and key, ready to serve.
#[derive(Debug)]
pub struct LoadedCert {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// Lower-case DNS names the leaf is valid for (SANs; the CN only when there are none),
    /// wildcards as `*.example.com`.
    pub names: Vec<String>,
    /// The leaf's notAfter, seconds since the epoch.
    pub not_after: i64,
}

/// A cheap content hash of a pair, so a source can skip re-validating (and re-reporting) what
/// it already saw. Never 0: sources use 0 for "nothing could be read".
pub(crate) fn fingerprint(cert: &[u8], key: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    cert.hash(&mut h);
    key.hash(&mut h);
    h.finish().max(1)
}

/// Parses and validates a PEM chain and key as of `now`.
pub fn load_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<LoadedCert, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::CertPem(e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate);
    };
    let (not_before, not_after, names) = inspect_leaf(leaf)?;

    let now_secs = epoch_seconds(now);
    if now_secs < not_before {
        return Err(CertError::NotYetValid(format_epoch(not_before)));
    }
    if now_secs > not_after {
        return Err(CertError::Expired(format_epoch(not_after)));
    }

    // The pki-types error names the PEM section, never its content, so it is safe to show.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| CertError::NoKey)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::UnsupportedKey(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err(CertError::KeyMismatch),
    }
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
        not_after,
    })
}

/// The leaf's validity window and DNS names.
fn inspect_leaf(leaf: &CertificateDer<'_>) -> Result<(i64, i64, Vec<String>), CertError> {
    let (_, cert) =
        X509Certificate::from_der(leaf).map_err(|e| CertError::BadCertificate(e.to_string()))?;
    let validity = cert.validity();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        // Clients ignore the CN these days, but SNI selection may still use it as a label.
        if let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
        {
            names.push(cn.to_ascii_lowercase());
        }
    }
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
        names,
    ))
}

fn format_epoch(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        rustls::crypto::aws_lc_rs::default_provider()
    }

    fn self_signed(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    #[test]
    fn loads_a_good_pair_with_its_names() {
        let (cert, key) = self_signed(&["Example.COM", "*.example.com"]);
        let loaded = load_pair(
            cert.as_bytes(),
            key.as_bytes(),
            &provider(),
            SystemTime::now(),
        );
        let loaded = loaded.unwrap();
        assert_eq!(loaded.names, vec!["example.com", "*.example.com"]);
        assert!(loaded.not_after > epoch_seconds(SystemTime::now()));
    }

    #[test]
    fn refuses_a_foreign_key() {
        let (cert, _) = self_signed(&["a.test"]);
        let (_, other_key) = self_signed(&["b.test"]);
        let err = load_pair(
            cert.as_bytes(),
            other_key.as_bytes(),
            &provider(),
            SystemTime::now(),
        );
        assert!(matches!(err, Err(CertError::KeyMismatch)), "{err:?}");
    }

    #[test]
    fn refuses_truncated_and_empty_pem() {
        let (cert, key) = self_signed(&["a.test"]);
        let cut = &cert.as_bytes()[..cert.len() / 2];
        let err = load_pair(cut, key.as_bytes(), &provider(), SystemTime::now());
        assert!(matches!(err, Err(CertError::CertPem(_))), "{err:?}");
        let err = load_pair(b"", key.as_bytes(), &provider(), SystemTime::now());
        assert!(matches!(err, Err(CertError::NoCertificate)), "{err:?}");
        let err = load_pair(cert.as_bytes(), b"junk", &provider(), SystemTime::now());
        assert!(matches!(err, Err(CertError::NoKey)), "{err:?}");
    }

    #[test]
    fn refuses_out_of_date_certificates() {
        let (cert, key) = self_signed(&["a.test"]);
        // rcgen's default validity ends in 4096; judge it from a later "now".
        let far_future = UNIX_EPOCH + Duration::from_secs(80_000_000_000);
        let err = load_pair(cert.as_bytes(), key.as_bytes(), &provider(), far_future);
        assert!(matches!(err, Err(CertError::Expired(_))), "{err:?}");
        let err = load_pair(cert.as_bytes(), key.as_bytes(), &provider(), UNIX_EPOCH);
        assert!(matches!(err, Err(CertError::NotYetValid(_))), "{err:?}");
    }
}
