//! The verified client certificate as the app sees it (subject, common name, SANs), and the
//! `--allow-san` / `--allow-cn` allow-list checked against it after the handshake.

use std::net::IpAddr;

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Who a verified client certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject distinguished name, RFC 4514 style (`CN=alice, O=Example`).
    pub subject: String,
    /// The subject's first common name.
    pub common_name: Option<String>,
    /// DNS, URI, email and IP subject alternative names, as text.
    pub sans: Vec<String>,
}

impl ClientIdentity {
    /// Reads the leaf a TLS handshake verified. `None` if it cannot be parsed (rustls has
    /// already parsed it, so this does not happen in practice).
    pub fn from_leaf(der: &CertificateDer<'_>) -> Option<ClientIdentity> {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut sans = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                        sans.push((*s).to_owned())
                    }
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            sans.push(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        Some(ClientIdentity {
            subject: cert.subject().to_string(),
            common_name,
            sans,
        })
    }

    /// The `X-Client-Cert-*` headers for this identity (values escaped by the rewriter).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("X-Client-Cert-Subject", self.subject.clone())];
        if let Some(cn) = &self.common_name {
            headers.push(("X-Client-Cert-Cn", cn.clone()));
        }
        if !self.sans.is_empty() {
            headers.push(("X-Client-Cert-San", self.sans.join(", ")));
        }
        headers
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// `--allow-san` and `--allow-cn`: when either is given, only certificates naming one of
/// these are let through (names compare case-insensitively, as DNS names do).
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    sans: Vec<String>,
    cns: Vec<String>,
}

impl AllowList {
    /// The allow-list of the given SANs and common names; empty lists allow everyone.
    pub fn new(sans: Vec<String>, cns: Vec<String>) -> Self {
        Self { sans, cns }
    }

    /// Whether the list restricts anything.
    pub fn is_empty(&self) -> bool {
        self.sans.is_empty() && self.cns.is_empty()
    }

    /// Whether `identity` may pass. A client without a certificate passes only an empty list.
    pub fn allows(&self, identity: Option<&ClientIdentity>) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(id) = identity else {
            return false;
        };
        let listed =
            |list: &[String], name: &str| list.iter().any(|a| a.eq_ignore_ascii_case(name));
        id.sans.iter().any(|san| listed(&self.sans, san))
            || id
                .common_name
                .as_deref()
                .is_some_and(|cn| listed(&self.cns, cn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(cn: &str, sans: &[&str]) -> ClientIdentity {
        ClientIdentity {
            subject: format!("CN={cn}"),
            common_name: Some(cn.into()),
            sans: sans.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn allow_list_matches_san_or_cn() {
        let list = AllowList::new(vec!["spiffe://ns/caller".into()], vec!["Billing".into()]);
        assert!(list.allows(Some(&id("x", &["spiffe://ns/caller"]))));
        assert!(list.allows(Some(&id("billing", &[]))));
        assert!(!list.allows(Some(&id("other", &["other.test"]))));
        assert!(!list.allows(None));
        assert!(AllowList::default().allows(None));
    }

    #[test]
    fn reads_a_generated_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["caller.test".into(), "10.0.0.1".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "caller");
        let cert = params.self_signed(&key).unwrap();
        let identity = ClientIdentity::from_leaf(cert.der()).unwrap();
        assert_eq!(identity.common_name.as_deref(), Some("caller"));
        assert_eq!(identity.sans, vec!["caller.test", "10.0.0.1"]);
        assert!(
            identity.subject.contains("CN=caller"),
            "{}",
            identity.subject
        );
    }
}
