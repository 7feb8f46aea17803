//! The benchmark's certificates: one CA, and two ECDSA P-256 leaves for `localhost` (A and B,
//! so the reload figure has something to swap between).

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256};

/// Writes `ca.pem` and `a/`, `b/` each holding `tls.crt`, `tls.key` and `combined.pem`
/// (certificate then key, as HAProxy's `ssl crt` wants).
pub fn write(dir: &Path) -> anyhow::Result<()> {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wss-bench CA");
    let ca = ca_params.self_signed(&ca_key)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    let issuer = Issuer::new(ca_params, ca_key);
    for name in ["a", "b"] {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        let cert = params.signed_by(&key, &issuer)?;
        let leaf = dir.join(name);
        std::fs::create_dir_all(&leaf)?;
        std::fs::write(leaf.join("tls.crt"), cert.pem())?;
        std::fs::write(leaf.join("tls.key"), key.serialize_pem())?;
        std::fs::write(
            leaf.join("combined.pem"),
            format!("{}{}", cert.pem(), key.serialize_pem()),
        )?;
    }
    Ok(())
}
