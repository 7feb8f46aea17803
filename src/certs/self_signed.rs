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
    let fail = |e: rcgen::Error| CertError::BadCertificate(e.to_string());
    let mut params = rcgen::CertificateParams::new(names).map_err(fail)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wss-sidecar self-signed");
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks behind ours; a year is plenty for a development certificate.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    load_pair(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_localhost_for_a_year() {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let cert = generate(&provider).unwrap();
        assert!(
            cert.names.contains(&"localhost".to_string()),
            "{:?}",
            cert.names
        );
        let now = crate::clock::epoch_seconds(SystemTime::now());
        let days_left = (cert.not_after - now) / 86_400;
        assert!((364..=365).contains(&days_left), "{days_left} days");
    }
}
