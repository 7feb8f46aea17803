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
/// The CA being replaced, still in the `caBundle` while a rotation is under way (empty: none).
/// A merge patch cannot remove a key, so an empty value means absent.
pub const CA_PREVIOUS: &str = "ca-previous.crt";
/// When the previous CA leaves the `caBundle`: seconds since the epoch (empty: not yet set).
pub const PREVIOUS_UNTIL: &str = "ca-previous-until";
/// Set to anything to rotate the CA now (a compromised key, or a test): the same safe
/// rotation as at expiry. Cleared when the rotation starts.
pub const ROTATE: &str = "rotate-ca";
/// How long the previous CA stays trusted after the leaf under the new one is stored: every
/// replica re-reads the Secret each `super::TICK` (10 s), so six passes to pick it up.
pub const OVERLAP: Duration = Duration::from_secs(60);

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot generate the injector's certificate: {0}")]
pub struct IssueError(String);

/// The PEM the webhook's `caBundle` should hold for a stored Secret: its CA, and the previous
/// one while a rotation is under way.
pub fn ca_bundle(data: &SecretData) -> Option<Vec<u8>> {
    let mut bundle = data.get(CA_CRT).filter(|ca| !ca.is_empty())?.clone();
    if let Some(previous) = data.get(CA_PREVIOUS).filter(|p| !p.is_empty()) {
        if !bundle.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        bundle.extend_from_slice(previous);
    }
    Some(bundle)
}

/// What the Secret should hold as of `now`: `None` when `current` is still good for `names`.
/// `trusted`: the webhook's `caBundle` already holds the stored CA, so a leaf under it may be
/// served.
///
/// A CA near its end (or asked to rotate, key [`ROTATE`]) is replaced in three steps, so that
/// the API server trusts whatever any replica serves at every moment: (1) the new CA is
/// stored with the old one as [`CA_PREVIOUS`] while the old leaf is still served, and the
/// leader puts both in the `caBundle`; (2) once the `caBundle` holds the new CA, a leaf under
/// it is stored (every replica picks it up); (3) [`OVERLAP`] later the old CA is dropped.
pub fn plan(
    current: Option<&SecretData>,
    names: &[String],
    now: SystemTime,
    trusted: bool,
) -> Result<Option<SecretData>, IssueError> {
    let Some((data, (ca_pem, ca_key, ca_not_after))) =
        current.and_then(|data| Some((data, stored_ca(data, now)?)))
    else {
        // Nothing usable: a fresh CA and leaf (nothing can have trusted a CA we cannot read).
        let (ca_pem, ca_key) = new_ca(now)?;
        let mut fresh = leaf_keys(&ca_key, &ca_pem, names, now)?;
        fresh.insert(CA_CRT.into(), ca_pem.into_bytes());
        fresh.insert(CA_KEY.into(), ca_key.serialize_pem().into_bytes());
        fresh.insert(CA_PREVIOUS.into(), Vec::new());
        fresh.insert(PREVIOUS_UNTIL.into(), Vec::new());
        return Ok(Some(fresh));
    };
    let set = |key: &str| data.get(key).is_some_and(|v| !v.is_empty());
    let rotating = set(CA_PREVIOUS);
    let asked = set(ROTATE);
    if !rotating && (asked || remaining(ca_not_after, now) <= CA_RENEW_BEFORE) {
        // Step 1: the new CA beside the old; the old leaf keeps serving.
        let (new_pem, new_key) = new_ca(now)?;
        let mut next = SecretData::new();
        next.insert(CA_PREVIOUS.into(), ca_pem.into_bytes());
        next.insert(CA_CRT.into(), new_pem.into_bytes());
        next.insert(CA_KEY.into(), new_key.serialize_pem().into_bytes());
        next.insert(PREVIOUS_UNTIL.into(), Vec::new());
        next.insert(ROTATE.into(), Vec::new());
        return Ok(Some(next));
    }
    // The stored chain is leaf + CA: a leaf under the current CA ends with it.
    let under_current = data
        .get(TLS_CRT)
        .is_some_and(|chain| chain.ends_with(ca_pem.as_bytes()));
    let leaf_ok = under_current
        && serving_pair(data, now).ok().is_some_and(|leaf| {
            remaining(leaf.not_after, now) > LEAF_RENEW_BEFORE
                && names
                    .iter()
                    .all(|n| leaf.names.contains(&n.to_ascii_lowercase()))
        });
    if !under_current {
        // Step 2, once the API server trusts the new CA.
        if !trusted {
            return Ok(None);
        }
        let mut next = leaf_keys(&ca_key, &ca_pem, names, now)?;
        let until = crate::clock::epoch_seconds(now + OVERLAP);
        next.insert(PREVIOUS_UNTIL.into(), until.to_string().into_bytes());
        return Ok(Some(next));
    }
    if !leaf_ok {
        return leaf_keys(&ca_key, &ca_pem, names, now).map(Some);
    }
    let until = data
        .get(PREVIOUS_UNTIL)
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok());
    if rotating && until.is_none_or(|until| until <= crate::clock::epoch_seconds(now)) {
        // Step 3: every replica serves the new leaf by now.
        let mut next = SecretData::new();
        next.insert(CA_PREVIOUS.into(), Vec::new());
        next.insert(PREVIOUS_UNTIL.into(), Vec::new());
        return Ok(Some(next));
    }
    if asked {
        // A rotation is already under way: one at a time.
        return Ok(Some(SecretData::from([(ROTATE.to_string(), Vec::new())])));
    }
    Ok(None)
}

/// A new leaf under the CA, as the Secret's `tls.crt` (leaf + CA) and `tls.key`.
fn leaf_keys(
    ca_key: &KeyPair,
    ca_pem: &str,
    names: &[String],
    now: SystemTime,
) -> Result<SecretData, IssueError> {
    let (leaf_pem, leaf_key) = new_leaf(ca_key, names, now)?;
    let mut data = SecretData::new();
    data.insert(TLS_CRT.into(), format!("{leaf_pem}{ca_pem}").into_bytes());
    data.insert(TLS_KEY.into(), leaf_key.into_bytes());
    Ok(data)
}

/// The pair to serve from a stored Secret, validated like any certificate source's.
pub fn serving_pair(data: &SecretData, now: SystemTime) -> Result<LoadedCert, CertError> {
    let cert = data.get(TLS_CRT).ok_or(CertError::NoCertificate)?;
    let key = data.get(TLS_KEY).ok_or(CertError::NoKey)?;
    load_pair(cert, key, &tls::provider(), now)
}

/// The stored CA (PEM, key and notAfter) if it parses and matches its key.
fn stored_ca(data: &SecretData, now: SystemTime) -> Option<(String, KeyPair, i64)> {
    let (cert, key) = (data.get(CA_CRT)?, data.get(CA_KEY)?);
    let loaded = load_pair(cert, key, &tls::provider(), now).ok()?;
    let key = KeyPair::from_pem(std::str::from_utf8(key).ok()?).ok()?;
    Some((String::from_utf8(cert.clone()).ok()?, key, loaded.not_after))
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

    /// `data` after the merge patch of `plan`'s keys (as `SecretApi::update` writes them).
    fn merged(data: &SecretData, plan: Option<SecretData>) -> SecretData {
        let mut next = data.clone();
        next.extend(plan.expect("a change"));
        next
    }

    #[test]
    fn a_fresh_secret_then_nothing_until_renewal() {
        let now = SystemTime::now();
        let data = plan(None, &names(), now, false).unwrap().unwrap();
        let leaf = serving_pair(&data, now).expect("the leaf serves");
        assert!(leaf.names.contains(&"injector.ns.svc".to_string()));
        assert!(plan(Some(&data), &names(), now, true).unwrap().is_none());
        assert!(
            plan(Some(&data), &names(), now + 59 * DAY, true)
                .unwrap()
                .is_none()
        );
        assert_eq!(ca_bundle(&data).unwrap(), data[CA_CRT], "no previous CA");
    }

    #[test]
    fn the_leaf_is_renewed_under_the_same_ca() {
        let now = SystemTime::now();
        let first = plan(None, &names(), now, false).unwrap().unwrap();
        let later = now + 61 * DAY;
        let second = merged(&first, plan(Some(&first), &names(), later, true).unwrap());
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
        let data = plan(None, &names(), now, false).unwrap().unwrap();
        let more = vec!["injector.ns.svc".to_string(), "injector.ns".to_string()];
        assert!(plan(Some(&data), &more, now, true).unwrap().is_some());
        let mut broken = data.clone();
        broken.insert(CA_KEY.into(), b"junk".to_vec());
        let fixed = plan(Some(&broken), &names(), now, true).unwrap().unwrap();
        assert_ne!(fixed[CA_CRT], data[CA_CRT]);
    }

    /// A rotation (asked for with `rotate-ca`, or a CA near its end): at every step the
    /// caBundle holds the CA of the leaf being served.
    #[test]
    fn a_ca_rotation_keeps_the_served_leaf_trusted_at_every_step() {
        let now = SystemTime::now();
        let first = plan(None, &names(), now, false).unwrap().unwrap();
        let mut asked = first.clone();
        asked.insert(ROTATE.into(), b"now".to_vec());
        // Step 1: a new CA beside the old one; the old leaf still served, the knob cleared.
        let step1 = merged(&asked, plan(Some(&asked), &names(), now, true).unwrap());
        assert_ne!(step1[CA_CRT], first[CA_CRT]);
        assert_eq!(step1[CA_PREVIOUS], first[CA_CRT]);
        assert_eq!(step1[TLS_CRT], first[TLS_CRT], "the old leaf keeps serving");
        assert!(step1[ROTATE].is_empty());
        let bundle = ca_bundle(&step1).unwrap();
        let has = |ca: &[u8]| bundle.windows(ca.len()).any(|w| w == ca);
        assert!(
            has(&first[CA_CRT]) && has(&step1[CA_CRT]),
            "both CAs trusted"
        );
        // Step 2 waits until the caBundle holds the new CA.
        assert!(plan(Some(&step1), &names(), now, false).unwrap().is_none());
        let step2 = merged(&step1, plan(Some(&step1), &names(), now, true).unwrap());
        assert!(
            step2[TLS_CRT].ends_with(&step2[CA_CRT]),
            "the new leaf is under the new CA"
        );
        assert_eq!(ca_bundle(&step2), ca_bundle(&step1), "both still trusted");
        serving_pair(&step2, now).expect("the new leaf serves");
        // Step 3, OVERLAP later: only the new CA.
        let soon = now + OVERLAP / 2;
        assert!(plan(Some(&step2), &names(), soon, true).unwrap().is_none());
        let later = now + OVERLAP + Duration::from_secs(1);
        let step3 = merged(&step2, plan(Some(&step2), &names(), later, true).unwrap());
        assert_eq!(ca_bundle(&step3).unwrap(), step2[CA_CRT]);
        assert!(plan(Some(&step3), &names(), later, true).unwrap().is_none());
    }

    #[test]
    fn a_ca_near_its_end_starts_a_rotation_by_itself() {
        let now = SystemTime::now();
        let first = plan(None, &names(), now, false).unwrap().unwrap();
        let late = now + CA_VALIDITY - CA_RENEW_BEFORE + DAY;
        let next = merged(&first, plan(Some(&first), &names(), late, true).unwrap());
        assert_eq!(next[CA_PREVIOUS], first[CA_CRT]);
        assert_ne!(next[CA_CRT], first[CA_CRT]);
    }
}
