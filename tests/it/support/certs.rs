//! Test certificates: a private CA that issues leaf pairs in every key type and PEM key format.
//!
//! Everything is made fresh with rcgen, so no certificate in the repository can expire.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SignatureAlgorithm,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::key_formats::{pkcs8_to_pkcs1_pem, pkcs8_to_sec1_pem};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The key algorithm of an issued leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa2048,
}

impl KeyKind {
    /// Every kind, for tests that sweep them all.
    pub const ALL: [KeyKind; 4] = [
        KeyKind::EcdsaP256,
        KeyKind::EcdsaP384,
        KeyKind::Ed25519,
        KeyKind::Rsa2048,
    ];

    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
            KeyKind::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// The PEM formats a key of this kind can be written in.
    pub fn formats(self) -> &'static [KeyFormat] {
        match self {
            KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => &[KeyFormat::Pkcs8, KeyFormat::Sec1],
            KeyKind::Ed25519 => &[KeyFormat::Pkcs8],
            KeyKind::Rsa2048 => &[KeyFormat::Pkcs8, KeyFormat::Pkcs1],
        }
    }
}

/// How the private key is written: `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    Pkcs8,
    /// RSA only.
    Pkcs1,
    /// ECDSA only.
    Sec1,
}

/// When a leaf is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// Subject alternative names; IP literals become IP SANs, the rest DNS SANs.
    pub names: Vec<String>,
    pub key: KeyKind,
    pub key_format: KeyFormat,
    pub validity: Validity,
    /// Issued for TLS clients (extended key usage clientAuth) instead of servers.
    pub client: bool,
}

impl LeafSpec {
    /// An ECDSA P-256 leaf, PKCS#8 key, valid from a day ago for 30 days.
    pub fn new(names: &[&str]) -> Self {
        let now = SystemTime::now();
        LeafSpec {
            names: names.iter().map(|n| n.to_string()).collect(),
            key: KeyKind::EcdsaP256,
            key_format: KeyFormat::Pkcs8,
            validity: Validity {
                not_before: now - DAY,
                not_after: now + 30 * DAY,
            },
            client: false,
        }
    }

    /// A client certificate (mTLS): extended key usage clientAuth.
    pub fn for_clients(mut self) -> Self {
        self.client = true;
        self
    }

    pub fn key(mut self, key: KeyKind) -> Self {
        self.key = key;
        self
    }

    pub fn key_format(mut self, key_format: KeyFormat) -> Self {
        self.key_format = key_format;
        self
    }

    /// Valid from 60 days ago until yesterday.
    pub fn expired(mut self) -> Self {
        let now = SystemTime::now();
        self.validity = Validity {
            not_before: now - 60 * DAY,
            not_after: now - DAY,
        };
        self
    }

    /// Valid from tomorrow for 30 days.
    pub fn not_yet_valid(mut self) -> Self {
        let now = SystemTime::now();
        self.validity = Validity {
            not_before: now + DAY,
            not_after: now + 31 * DAY,
        };
        self
    }
}

/// A certificate chain and key as PEM, the way they sit in a Secret's `tls.crt` / `tls.key`.
#[derive(Debug, Clone)]
pub struct TestPair {
    /// Leaf then CA.
    pub cert_pem: String,
    pub key_pem: String,
    pub leaf_der: CertificateDer<'static>,
}

impl TestPair {
    /// This certificate with `other`'s key: a pair whose halves do not match.
    pub fn with_key_of(&self, other: &TestPair) -> TestPair {
        TestPair {
            key_pem: other.key_pem.clone(),
            ..self.clone()
        }
    }

    /// The certificate PEM cut off halfway through the leaf's base64, as a half-written file
    /// would read.
    pub fn truncated(&self) -> TestPair {
        let body_start = self.cert_pem.find('\n').expect("PEM has a BEGIN line") + 1;
        let body_end = self.cert_pem.find("-----END").expect("PEM has an END line");
        let cut = body_start + (body_end - body_start) / 2;
        TestPair {
            cert_pem: self.cert_pem[..cut].to_string(),
            ..self.clone()
        }
    }

    /// The chain as DER, leaf first. Panics if the PEM does not parse (e.g. after `truncated`).
    pub fn cert_chain_der(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("test pair certificate PEM parses")
    }

    /// The key as DER, in whichever format it was written. Panics if the PEM does not parse.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("test pair key PEM parses")
    }
}

fn ca_params(common_name: &str) -> CertificateParams {
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    // Wider than any leaf so only the leaf's own dates decide whether it is valid.
    params.not_before = (now - 365 * DAY).into();
    params.not_after = (now + 365 * DAY).into();
    params
}

/// A private certificate authority (ECDSA P-256) that issues leaves for tests. Clones are
/// handles to the same CA, so a proxy fixture can keep one while the test issues more leaves.
#[derive(Debug, Clone)]
pub struct TestCa {
    issuer: Arc<CertifiedIssuer<'static, KeyPair>>,
}

impl TestCa {
    pub fn new(common_name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let issuer =
            CertifiedIssuer::self_signed(ca_params(common_name), key).expect("self-sign CA");
        TestCa {
            issuer: Arc::new(issuer),
        }
    }

    /// An intermediate CA signed by this one. Leaves it issues carry it as their chain
    /// (leaf, then intermediate), as Let's Encrypt and most private PKIs lay out `tls.crt`;
    /// clients trust only the root.
    pub fn intermediate(&self, common_name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate intermediate key");
        let issuer = CertifiedIssuer::signed_by(ca_params(common_name), key, &self.issuer)
            .expect("sign intermediate");
        TestCa {
            issuer: Arc::new(issuer),
        }
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Issues a leaf for TLS servers. Panics on a key format the key kind cannot be written in.
    pub fn issue(&self, spec: LeafSpec) -> TestPair {
        assert!(
            spec.key.formats().contains(&spec.key_format),
            "{:?} keys cannot be written as {:?}",
            spec.key,
            spec.key_format
        );
        let key = KeyPair::generate_for(spec.key.algorithm()).expect("generate leaf key");
        let mut params = CertificateParams::new(spec.names.clone()).expect("valid leaf names");
        if let Some(first) = spec.names.first() {
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if spec.client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        params.use_authority_key_identifier_extension = true;
        params.not_before = spec.validity.not_before.into();
        params.not_after = spec.validity.not_after.into();
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");

        let key_pem = match spec.key_format {
            KeyFormat::Pkcs8 => key.serialize_pem(),
            KeyFormat::Pkcs1 => pkcs8_to_pkcs1_pem(key.serialized_der()),
            KeyFormat::Sec1 => pkcs8_to_sec1_pem(key.serialized_der()),
        };
        TestPair {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem()),
            key_pem,
            leaf_der: cert.der().clone(),
        }
    }
}
