//! The injector's own CA and serving certificate, made with rcgen, and when to make new ones.
//!
//! A long-lived CA goes into the webhook's `caBundle`; a short-lived leaf signed by it is
//! served. Renewing the leaf leaves the `caBundle` alone, so the API server never sees a
//! certificate it does not trust yet.

use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::certs::{CertError, LoadedCert, load_pair};
use crate::k8s::SecretData;
use crate::tls;

const DAY: Duration = Duration::from_secs(86_400);
/// The CA lives long: replacing it means a new `caBundle`.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// A new CA once the old one has less than this left.
const CA_RENEW_BEFORE: Duration = Duration::from_secs(365 * 86_400);
/// The served certificate: 90 days, renewed when 30 are left (every replica reloads it).
const LEAF_VALIDITY: Duration = Duration::from_secs(90 * 86_400);
const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// The CA's subject; the leaf's issuer name must equal it.
const CA_NAME: &str = "wss-sidecar injector CA";

/// Keys of the stored Secret.
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot generate the injector's certificate: {0}")]
pub struct IssueError(String);

/// What the Secret should hold as of `now`: `None` when `current` is still good for `names`.
pub fn plan(
    current: Option<&SecretData>,
    names: &[String],
    now: SystemTime,
) -> Result<Option<SecretData>, IssueError> {
    let current_ca = current.and_then(|data| usable_ca(data, now));
    let leaf_ok = current_ca.is_some()
        && current
            .and_then(|data| serving_pair(data, now).ok())
            .is_some_and(|leaf| {
                remaining(leaf.not_after, now) > LEAF_RENEW_BEFORE
                    && names
                        .iter()
                        .all(|n| leaf.names.contains(&n.to_ascii_lowercase()))
            });
    if leaf_ok {
        return Ok(None);
    }
    let (ca_pem, ca_key) = match current_ca {
        Some(ca) => ca,
        None => new_ca(now)?,
    };
    let (leaf_pem, leaf_key) = new_leaf(&ca_key, names, now)?;
    let mut data = SecretData::new();
    data.insert(TLS_CRT.into(), format!("{leaf_pem}{ca_pem}").into_bytes());
    data.insert(TLS_KEY.into(), leaf_key.into_bytes());
    data.insert(CA_CRT.into(), ca_pem.into_bytes());
    data.insert(CA_KEY.into(), ca_key.serialize_pem().into_bytes());
    Ok(Some(data))
}

/// The pair to serve from a stored Secret, validated like any certificate source's.
pub fn serving_pair(data: &SecretData, now: SystemTime) -> Result<LoadedCert, CertError> {
    let cert = data.get(TLS_CRT).ok_or(CertError::NoCertificate)?;
    let key = data.get(TLS_KEY).ok_or(CertError::NoKey)?;
    load_pair(cert, key, &tls::provider(), now)
}

/// The stored CA (PEM and key) if it parses, matches, and has more than a year left.
fn usable_ca(data: &SecretData, now: SystemTime) -> Option<(String, KeyPair)> {
    let (cert, key) = (data.get(CA_CRT)?, data.get(CA_KEY)?);
    let loaded = load_pair(cert, key, &tls::provider(), now).ok()?;
    if remaining(loaded.not_after, now) <= CA_RENEW_BEFORE {
        return None;
    }
    let key = KeyPair::from_pem(std::str::from_utf8(key).ok()?).ok()?;
    Some((String::from_utf8(cert.clone()).ok()?, key))
}

fn remaining(not_after: i64, now: SystemTime) -> Duration {
    let now = crate::clock::epoch_seconds(now);
    Duration::from_secs(u64::try_from(not_after - now).unwrap_or(0))
}

fn ca_params(now: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = (now - DAY).into();
    params.not_after = (now + CA_VALIDITY).into();
    params
}

fn new_ca(now: SystemTime) -> Result<(String, KeyPair), IssueError> {
    let key = KeyPair::generate().map_err(fail)?;
    let cert = ca_params(now).self_signed(&key).map_err(fail)?;
    Ok((cert.pem(), key))
}

/// A leaf for `names` signed by the CA key. The issuer is rebuilt from the CA's subject and
/// key: the same name and key identifier as the stored CA certificate.
fn new_leaf(
    ca_key: &KeyPair,
    names: &[String],
    now: SystemTime,
) -> Result<(String, String), IssueError> {
    let ca = ca_params(now);
    let issuer = Issuer::from_params(&ca, ca_key);
    let mut params = CertificateParams::new(names.to_vec()).map_err(fail)?;
    if let Some(first) = names.first() {
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    params.not_before = (now - DAY).into();
    params.not_after = (now + LEAF_VALIDITY).into();
    let key = KeyPair::generate().map_err(fail)?;
    let cert = params.signed_by(&key, &issuer).map_err(fail)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn fail(err: rcgen::Error) -> IssueError {
    IssueError(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;

    fn names() -> Vec<String> {
        vec!["injector.ns.svc".to_string()]
    }

    #[test]
    fn a_fresh_secret_then_nothing_until_renewal() {
        let now = SystemTime::now();
        let data = plan(None, &names(), now).unwrap().unwrap();
        let leaf = serving_pair(&data, now).expect("the leaf serves");
        assert!(leaf.names.contains(&"injector.ns.svc".to_string()));
        assert!(plan(Some(&data), &names(), now).unwrap().is_none());
        assert!(
            plan(Some(&data), &names(), now + 59 * DAY)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_leaf_is_renewed_under_the_same_ca() {
        let now = SystemTime::now();
        let first = plan(None, &names(), now).unwrap().unwrap();
        let later = now + 61 * DAY;
        let second = plan(Some(&first), &names(), later).unwrap().unwrap();
        assert_eq!(second[CA_CRT], first[CA_CRT], "the caBundle stays");
        assert_ne!(second[TLS_CRT], first[TLS_CRT]);
        let leaf = serving_pair(&second, later).unwrap();
        assert!(crate::clock::epoch_seconds(later) + 80 * 86_400 < leaf.not_after);
        // The renewed leaf still chains to the stored CA: verify with a real rustls verifier.
        let mut roots = rustls::RootCertStore::empty();
        let ca = rustls_pki_types::CertificateDer::from_pem_slice(&second[CA_CRT]).unwrap();
        roots.add(ca).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            tls::provider(),
        )
        .build()
        .unwrap();
        let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&second[TLS_CRT])
            .collect::<Result<_, _>>()
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("injector.ns.svc").unwrap();
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &chain[0],
            &chain[1..],
            &name,
            &[],
            rustls_pki_types::UnixTime::since_unix_epoch(
                later.duration_since(std::time::UNIX_EPOCH).unwrap(),
            ),
        )
        .expect("the renewed leaf chains to the stored CA");
    }

    #[test]
    fn new_names_or_a_damaged_secret_mean_new_certificates() {
        let now = SystemTime::now();
        let data = plan(None, &names(), now).unwrap().unwrap();
        let more = vec!["injector.ns.svc".to_string(), "injector.ns".to_string()];
        assert!(plan(Some(&data), &more, now).unwrap().is_some());
        let mut broken = data.clone();
        broken.insert(CA_KEY.into(), b"junk".to_vec());
        let fixed = plan(Some(&broken), &names(), now).unwrap().unwrap();
        assert_ne!(fixed[CA_CRT], data[CA_CRT]);
    }
}
