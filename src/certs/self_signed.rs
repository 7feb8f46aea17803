//! The development fallback: a self-signed certificate for localhost and this host's names.

use std::time::SystemTime;

use rustls::crypto::CryptoProvider;

use super::pair::{CertError, LoadedCert, load_pair};

/// Generates a fresh ECDSA P-256 self-signed certificate for `localhost`, the loopback
/// addresses and the host's name. For development only: no client trusts it.
pub fn generate(provider: &CryptoProvider) -> Result<LoadedCert, CertError> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Some(host) = host_name() {
        names.push(host);
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| CertError::BadCertificate(e.to_string()))?;
    load_pair(
        generated.cert.pem().as_bytes(),
        generated.signing_key.serialize_pem().as_bytes(),
        provider,
        SystemTime::now(),
    )
}

/// The host's name, as the kernel knows it (a pod's name in Kubernetes).
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let name = name.trim().to_ascii_lowercase();
    (!name.is_empty() && name != "localhost").then_some(name)
}
