//! The `--acme-*` and `--http-listen` flags, translated into the ACME manager's [`AcmeConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use clap::Args;

use super::ConfigError;
use super::parse::parse_duration;
use crate::acme::{AcmeConfig, ChallengeKind, SelfCheckConfig, StoreLocation};

/// Let's Encrypt's production directory, the default.
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// ACME flags of `wss-sidecar proxy`.
#[derive(Debug, Clone, Args)]
pub struct AcmeArgs {
    /// Domain to obtain a certificate for from an ACME CA (repeatable: one certificate for all
    /// the names). Enables ACME.
    #[arg(
        long = "acme-domain",
        env = "WSS_SIDECAR_ACME_DOMAIN",
        value_name = "DOMAIN",
        value_delimiter = ','
    )]
    pub acme_domains: Vec<String>,

    /// Contact email for the ACME account.
    #[arg(long, env = "WSS_SIDECAR_ACME_EMAIL")]
    pub acme_email: Option<String>,

    /// ACME directory URL, or `letsencrypt` / `letsencrypt-staging`.
    #[arg(
        long,
        env = "WSS_SIDECAR_ACME_DIRECTORY",
        default_value = "letsencrypt"
    )]
    pub acme_directory: String,

    /// PEM file of a private CA to trust for the ACME server's HTTPS (testing, internal CAs).
    #[arg(long, env = "WSS_SIDECAR_ACME_CA_ROOT")]
    pub acme_ca_root: Option<PathBuf>,

    /// Where ACME state (account, key, certificate, renewal state, pending challenges) is kept:
    /// a directory (shared by replicas through a volume), or `secret:[NAMESPACE/]NAME`, a
    /// Secret read and written through the Kubernetes API, the account in the Secret
    /// NAME-account, with a Lease NAME deciding which replica orders; all three must exist (the
    /// sidecar creates none). Replicas sharing a store order once between them.
    #[arg(
        long,
        env = "WSS_SIDECAR_ACME_STORE",
        value_name = "DIR|secret:[NAMESPACE/]NAME",
        default_value = "/var/lib/wss-sidecar"
    )]
    pub acme_store: String,

    /// How long the ordering lock (the Lease, or the store directory's lock file) lasts
    /// without renewal. The ordering replica renews it every third of this; if it dies
    /// mid-order, another takes over this long after its last renewal and resumes the order.
    #[arg(long, env = "WSS_SIDECAR_ACME_LEASE_DURATION", default_value = "30s", value_parser = parse_duration)]
    pub acme_lease_duration: Duration,

    /// Plain HTTP listen address: answers HTTP-01 challenges and redirects everything else to
    /// https:// on the --listen port.
    #[arg(long, env = "WSS_SIDECAR_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,

    /// Challenge type; default http-01 when --http-listen is set, else tls-alpn-01.
    #[arg(long, env = "WSS_SIDECAR_ACME_CHALLENGE", value_enum)]
    pub acme_challenge: Option<ChallengeKind>,

    /// External account binding key id (ZeroSSL, commercial CAs); needs --acme-eab-hmac-key.
    #[arg(long, env = "WSS_SIDECAR_ACME_EAB_KID")]
    pub acme_eab_kid: Option<String>,

    /// External account binding HMAC key, base64url as the CA shows it. A secret: prefer
    /// --acme-eab-hmac-key-file, or this variable from a Kubernetes Secret.
    #[arg(long, env = "WSS_SIDECAR_ACME_EAB_HMAC_KEY", hide_env_values = true)]
    pub acme_eab_hmac_key: Option<String>,

    /// File holding the external account binding HMAC key (base64url; surrounding whitespace
    /// ignored), e.g. from a mounted Secret: unlike --acme-eab-hmac-key, it stays out of the
    /// process list and pod metadata.
    #[arg(
        long,
        env = "WSS_SIDECAR_ACME_EAB_HMAC_KEY_FILE",
        value_name = "PATH",
        conflicts_with = "acme_eab_hmac_key"
    )]
    pub acme_eab_hmac_key_file: Option<PathBuf>,

    /// For testing: renew once less than this much validity remains (e.g. a value longer than
    /// the certificate's lifetime forces a renewal right after each issuance). Default: the
    /// CA's renewal window, or when a third of the lifetime remains.
    #[arg(long, env = "WSS_SIDECAR_ACME_RENEW_BEFORE", value_parser = parse_duration)]
    pub acme_renew_before: Option<Duration>,

    /// How often a replica re-reads the store for a certificate another replica obtained.
    #[arg(long, env = "WSS_SIDECAR_ACME_POLL_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub acme_poll_interval: Duration,

    /// For testing: the first retry delay after a failed order; later ones are 10x, 100x,
    /// then daily (1m, 10m, 100m, 1 day with the default).
    #[arg(long, env = "WSS_SIDECAR_ACME_BACKOFF_BASE", default_value = "1m", value_parser = parse_duration)]
    pub acme_backoff_base: Duration,

    /// Before asking the CA to validate, the sidecar dials its own names as the CA will and
    /// submits only once they answer with our key authorization; after failing this long, it
    /// submits anyway (for load balancers that cannot hairpin).
    #[arg(long, env = "WSS_SIDECAR_ACME_SELF_CHECK_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub acme_self_check_timeout: Duration,

    /// Skip the self-check: ask the CA to validate at once.
    #[arg(long, env = "WSS_SIDECAR_ACME_SKIP_SELF_CHECK")]
    pub acme_skip_self_check: bool,

    /// DNS server (IP:PORT) the self-check resolves the names with. Default: the system
    /// resolver.
    #[arg(long, env = "WSS_SIDECAR_ACME_RESOLVER", value_name = "ADDR:PORT")]
    pub acme_resolver: Option<SocketAddr>,

    /// For testing: the port the self-check dials for TLS-ALPN-01, as the CA does (443).
    #[arg(
        long,
        env = "WSS_SIDECAR_ACME_SELF_CHECK_TLS_PORT",
        default_value_t = 443
    )]
    pub acme_self_check_tls_port: u16,

    /// For testing: the port the self-check dials for HTTP-01, as the CA does (80).
    #[arg(
        long,
        env = "WSS_SIDECAR_ACME_SELF_CHECK_HTTP_PORT",
        default_value_t = 80
    )]
    pub acme_self_check_http_port: u16,
}

impl AcmeArgs {
    /// `None` when ACME is off (no `--acme-domain`); else the checked settings.
    pub fn into_config(self) -> Result<Option<AcmeConfig>, ConfigError> {
        if self.acme_domains.is_empty() {
            return Ok(None);
        }
        let mut domains = Vec::new();
        for domain in &self.acme_domains {
            let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            if rustls_pki_types::DnsName::try_from(domain.as_str()).is_err() || domain.is_empty() {
                return Err(ConfigError::new(
                    "--acme-domain",
                    format!("{domain:?} is not a DNS name"),
                ));
            }
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        let directory = match self.acme_directory.as_str() {
            "letsencrypt" => LETSENCRYPT.to_string(),
            "letsencrypt-staging" => LETSENCRYPT_STAGING.to_string(),
            url if url.starts_with("https://") || url.starts_with("http://") => url.to_string(),
            other => {
                return Err(ConfigError::new(
                    "--acme-directory",
                    format!("expected a URL, letsencrypt or letsencrypt-staging, got {other:?}"),
                ));
            }
        };
        if let Some(root) = &self.acme_ca_root
            && !root.is_file()
        {
            return Err(ConfigError::new(
                "--acme-ca-root",
                format!(
                    "{} is not a file (expected a PEM certificate)",
                    root.display()
                ),
            ));
        }
        let store = store_location(&self.acme_store)?;
        let challenge = match (self.acme_challenge, self.http_listen) {
            (Some(ChallengeKind::Http01), None) => {
                return Err(ConfigError::new(
                    "--acme-challenge",
                    "http-01 needs --http-listen (where the CA's request arrives)",
                ));
            }
            (Some(kind), _) => kind,
            (None, Some(_)) => ChallengeKind::Http01,
            (None, None) => ChallengeKind::TlsAlpn01,
        };
        let eab = eab(
            self.acme_eab_kid,
            self.acme_eab_hmac_key,
            self.acme_eab_hmac_key_file,
        )?;
        for (flag, value) in [
            ("--acme-poll-interval", self.acme_poll_interval),
            ("--acme-backoff-base", self.acme_backoff_base),
            ("--acme-lease-duration", self.acme_lease_duration),
            ("--acme-self-check-timeout", self.acme_self_check_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(flag, "must be longer than zero"));
            }
        }
        Ok(Some(AcmeConfig {
            domains,
            contacts: self
                .acme_email
                .iter()
                .map(|email| format!("mailto:{email}"))
                .collect(),
            directory,
            ca_root: self.acme_ca_root,
            store,
            lease_duration: self.acme_lease_duration,
            challenge,
            eab,
            renew_before: self.acme_renew_before,
            poll_interval: self.acme_poll_interval,
            backoff_base: self.acme_backoff_base,
            self_check: SelfCheckConfig {
                skip: self.acme_skip_self_check,
                timeout: self.acme_self_check_timeout,
                resolver: self.acme_resolver,
                tls_port: self.acme_self_check_tls_port,
                http_port: self.acme_self_check_http_port,
            },
        }))
    }
}

/// `DIR` or `secret:[NAMESPACE/]NAME`.
fn store_location(value: &str) -> Result<StoreLocation, ConfigError> {
    const FLAG: &str = "--acme-store";
    if let Some(secret) = value.strip_prefix("secret:") {
        let store = crate::k8s::ObjectRef::parse(secret)
            .map_err(|why| ConfigError::new(FLAG, format!("secret:{secret}: {why}")))?;
        // The account lives in NAME-account, which must be a valid name too.
        let account = crate::acme::account_secret_name(&store.name);
        crate::k8s::ObjectRef::parse(&account).map_err(|why| {
            ConfigError::new(
                FLAG,
                format!("secret:{secret}: the account Secret {why}; use a shorter name"),
            )
        })?;
        return Ok(StoreLocation::Secret(store));
    }
    let dir = PathBuf::from(value);
    if value.is_empty() {
        return Err(ConfigError::new(
            FLAG,
            "give a directory or secret:[NAMESPACE/]NAME",
        ));
    }
    if dir.exists() && !dir.is_dir() {
        return Err(ConfigError::new(
            FLAG,
            format!("{} exists and is not a directory", dir.display()),
        ));
    }
    Ok(StoreLocation::Dir(dir))
}

/// The external account binding from the key id and the key, given inline or in a file.
fn eab(
    kid: Option<String>,
    key: Option<String>,
    key_file: Option<PathBuf>,
) -> Result<Option<(String, Vec<u8>)>, ConfigError> {
    const KEY: &str = "--acme-eab-hmac-key";
    const KEY_FILE: &str = "--acme-eab-hmac-key-file";
    let (flag, key) = match (key, key_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                KEY,
                format!("give {KEY} or {KEY_FILE}, not both"),
            ));
        }
        (Some(key), None) => (KEY, Some(key)),
        (None, Some(path)) => {
            let key = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(KEY_FILE, format!("cannot read {}: {e}", path.display()))
            })?;
            (KEY_FILE, Some(key))
        }
        (None, None) => (KEY, None),
    };
    match (kid, key) {
        (None, None) => Ok(None),
        (Some(kid), Some(key)) => {
            let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(key.trim().trim_end_matches('='))
                .map_err(|e| ConfigError::new(flag, format!("not base64url: {e}")))?;
            if key.is_empty() {
                return Err(ConfigError::new(flag, "the key is empty"));
            }
            Ok(Some((kid, key)))
        }
        (Some(_), None) => Err(ConfigError::new(
            KEY,
            format!("missing: --acme-eab-kid needs it (or {KEY_FILE})"),
        )),
        (None, Some(_)) => Err(ConfigError::new(
            "--acme-eab-kid",
            format!("missing: {flag} needs it"),
        )),
    }
}

#[cfg(test)]
#[path = "acme_tests.rs"]
mod tests;
