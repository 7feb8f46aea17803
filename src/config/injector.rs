//! Flags of `wss-sidecar injector` (where it serves, and what sidecar it injects), their
//! translation into the injector's [`Config`], and the proxy's flags the injector checks
//! annotations against ([`proxy_flags`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use clap::{Args, FromArgMatches};

use super::ConfigError;
use super::cli::LogArgs;
use super::proxy::{ProxyArgs, proxy_command};
use crate::injector::annotations::check_defaults;
use crate::injector::container::INJECTED_DEFAULTS;
use crate::injector::skew::SidecarRelease;
use crate::injector::version::RequestedMode;
use crate::injector::{
    Config, ProxyFlags, ProxyLine, SelfManaged, ServingCert, SidecarMode, SidecarTemplate,
};
use crate::tls::tickets::TicketKeySource;

/// Flags of `wss-sidecar injector`.
#[derive(Debug, Clone, Args)]
pub struct InjectorArgs {
    /// HTTPS listen address; `POST /mutate` takes an AdmissionReview v1. `[::]` takes IPv4 and
    /// IPv6, and falls back to 0.0.0.0 where the host has no IPv6.
    #[arg(long, env = "WSS_SIDECAR_LISTEN", default_value = "[::]:8443")]
    pub listen: SocketAddr,

    /// Directory with the serving certificate (tls.crt + tls.key), reloaded when it changes.
    /// Without it, in a cluster, the injector manages its own: a CA and certificate in the
    /// Secret --self-cert-secret, written by the holder of the Lease --self-cert-lease, and
    /// the caBundle of --webhook-name kept equal to that CA.
    #[arg(long, env = "WSS_SIDECAR_CERT_DIR")]
    pub cert_dir: Option<PathBuf>,

    /// Namespace of the injector (its Service, Secret and Lease); needed without --cert-dir.
    #[arg(long, env = "WSS_SIDECAR_NAMESPACE")]
    pub namespace: Option<String>,

    /// This replica's name in the Lease (the pod name); defaults to the host name.
    #[arg(long, env = "WSS_SIDECAR_POD_NAME")]
    pub pod_name: Option<String>,

    /// The injector's Service: the self-managed certificate is issued for its DNS names.
    #[arg(
        long,
        env = "WSS_SIDECAR_SERVICE_NAME",
        default_value = "wss-sidecar-injector"
    )]
    pub service_name: String,

    /// The MutatingWebhookConfiguration whose caBundle the self-managed certificate keeps.
    #[arg(
        long,
        env = "WSS_SIDECAR_WEBHOOK_NAME",
        default_value = "wss-sidecar-injector"
    )]
    pub webhook_name: String,

    /// The Secret holding the self-managed CA and certificate.
    #[arg(
        long,
        env = "WSS_SIDECAR_SELF_CERT_SECRET",
        default_value = "wss-sidecar-injector-tls"
    )]
    pub self_cert_secret: String,

    /// The Lease deciding which replica writes the self-managed certificate.
    #[arg(
        long,
        env = "WSS_SIDECAR_SELF_CERT_LEASE",
        default_value = "wss-sidecar-injector-cert"
    )]
    pub self_cert_lease: String,

    /// On SIGTERM/SIGINT (or `POST /lame-duck` from loopback), how long to stay not ready while
    /// still answering admissions (the Service's endpoints go away asynchronously), before the
    /// requests in flight are finished and it exits.
    #[arg(long, env = "WSS_SIDECAR_LAME_DUCK", default_value = "0s", value_parser = super::parse_duration)]
    pub lame_duck: std::time::Duration,

    /// Admin listen address for /healthz, /readyz and /metrics (`[::]` as for --listen).
    #[arg(long, env = "WSS_SIDECAR_ADMIN_LISTEN", default_value = "[::]:9090")]
    pub admin_listen: SocketAddr,

    /// Image of the injected container (normally the injector's own image), fully qualified:
    /// a short name means docker.io/library/…, and CRI-O may refuse short names.
    #[arg(long, env = "WSS_SIDECAR_SIDECAR_IMAGE", default_value = concat!("ghcr.io/wss-sidecar/wss-sidecar:", env!("CARGO_PKG_VERSION")))]
    pub sidecar_image: String,

    /// The wss-sidecar release the sidecar image runs (e.g. 0.1.0), for an image whose tag is
    /// not its version (a digest, a custom tag). Default: the tag when it is a version, else
    /// the injector's own (with a warning). Flags, probes and hooks the release lacks are left
    /// out, or refused when a pod's annotation or a --sidecar-default asks for them.
    #[arg(long, env = "WSS_SIDECAR_SIDECAR_VERSION")]
    pub sidecar_version: Option<String>,

    /// imagePullPolicy of the injected container.
    #[arg(long, env = "WSS_SIDECAR_SIDECAR_IMAGE_PULL_POLICY", default_value = "IfNotPresent", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub sidecar_image_pull_policy: String,

    /// `native` (an init container with restartPolicy Always, Kubernetes 1.29+), `plain` (a
    /// regular container), or `auto`: native when the API server (GET /version at start-up) is
    /// 1.29+ or cannot be asked, plain on older ones. `native` on an older server is obeyed,
    /// with a warning.
    #[arg(
        long,
        env = "WSS_SIDECAR_SIDECAR_MODE",
        value_enum,
        default_value = "auto"
    )]
    pub sidecar_mode: RequestedMode,

    /// User and group ID the sidecar runs as (never root); `none` leaves
    /// runAsUser/runAsGroup out, so the image's USER applies under `runAsNonRoot: true`
    /// (OpenShift's restricted-v2 SCC assigns its own UID and rejects a fixed one).
    #[arg(long, env = "WSS_SIDECAR_SIDECAR_UID", default_value = "65532", value_parser = parse_sidecar_uid)]
    pub sidecar_uid: SidecarUid,

    /// CPU request of the injected container (a Kubernetes quantity; empty: none).
    #[arg(long, env = "WSS_SIDECAR_SIDECAR_CPU_REQUEST", default_value = "10m", value_parser = parse_quantity)]
    pub sidecar_cpu_request: String,

    /// Memory request of the injected container (empty: none).
    #[arg(long, env = "WSS_SIDECAR_SIDECAR_MEMORY_REQUEST", default_value = "32Mi", value_parser = parse_quantity)]
    pub sidecar_memory_request: String,

    /// CPU limit of the injected container (empty: none; CPU limits throttle TLS handshakes).
    #[arg(long, env = "WSS_SIDECAR_SIDECAR_CPU_LIMIT", default_value = "", value_parser = parse_quantity)]
    pub sidecar_cpu_limit: String,

    /// Memory limit of the injected container (empty: none).
    #[arg(long, env = "WSS_SIDECAR_SIDECAR_MEMORY_LIMIT", default_value = "128Mi", value_parser = parse_quantity)]
    pub sidecar_memory_limit: String,

    /// A proxy flag every injected sidecar gets unless the pod's annotation says otherwise,
    /// as FLAG=VALUE (e.g. `acme-email=ops@example.com`). Repeatable; comma-separated in the
    /// variable.
    #[arg(long = "sidecar-default", env = "WSS_SIDECAR_SIDECAR_DEFAULT", value_delimiter = ',', value_parser = parse_default)]
    pub sidecar_defaults: Vec<(String, String)>,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl InjectorArgs {
    /// Checks what clap cannot (the certificate directory, that every `--sidecar-default`
    /// names a proxy flag with a valid value) and builds the injector's configuration.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let serving_cert = match (self.cert_dir, self.namespace) {
            (None, None) => {
                return Err(ConfigError::new(
                    "--namespace",
                    "required without --cert-dir: the self-managed certificate lives in the \
                     injector's namespace (the chart sets it from the downward API)",
                ));
            }
            (Some(dir), _) if !dir.is_dir() => {
                return Err(ConfigError::new(
                    "--cert-dir",
                    format!("{} is not a directory", dir.display()),
                ));
            }
            (Some(dir), _) => ServingCert::Dir(dir),
            (None, Some(namespace)) => ServingCert::SelfManaged(SelfManaged {
                namespace,
                pod_name: self.pod_name,
                service_name: self.service_name,
                webhook_name: self.webhook_name,
                secret: self.self_cert_secret,
                lease: self.self_cert_lease,
            }),
        };
        let flags = proxy_flags();
        check_defaults(&self.sidecar_defaults, flags)
            .map_err(|denial| ConfigError::new("--sidecar-default", denial.0))?;
        let pick = |pairs: [(&str, String); 2]| {
            pairs
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_string(), v))
                .collect()
        };
        let mut release =
            SidecarRelease::resolve(&self.sidecar_image, self.sidecar_version.as_deref())
                .map_err(|e| ConfigError::new(e.flag, e.message))?;
        let defaults = release
            .defaults(&INJECTED_DEFAULTS, self.sidecar_defaults)
            .map_err(|e| ConfigError::new(e.flag, e.message))?;
        let template = SidecarTemplate {
            image: self.sidecar_image,
            pull_policy: self.sidecar_image_pull_policy,
            // Until the server's version is read (`injector::version::adapt`).
            mode: match self.sidecar_mode {
                RequestedMode::Plain => SidecarMode::Plain,
                RequestedMode::Auto | RequestedMode::Native => SidecarMode::Native,
            },
            uid: self.sidecar_uid.0,
            requests: pick([
                ("cpu", self.sidecar_cpu_request),
                ("memory", self.sidecar_memory_request),
            ]),
            limits: pick([
                ("cpu", self.sidecar_cpu_limit),
                ("memory", self.sidecar_memory_limit),
            ]),
            // The injector's own defaults first: a `--sidecar-default` of the same flag, then an
            // annotation, replaces them (later entries win in `sidecar_args`).
            defaults,
            flags,
            // Until the server's version says otherwise (`injector::version`).
            prestop_sleep: true,
            release,
        };
        Ok(Config {
            listen: self.listen,
            lame_duck: self.lame_duck,
            serving_cert,
            template,
            sidecar_mode: self.sidecar_mode,
        })
    }
}

/// The proxy's flags as the injector checks annotations against them: the proxy's own clap
/// definition, so a flag added to the proxy is an annotation at once.
pub fn proxy_flags() -> &'static ProxyFlags {
    static FLAGS: OnceLock<ProxyFlags> = OnceLock::new();
    FLAGS.get_or_init(|| {
        ProxyFlags::new(proxy_command(), |matches| {
            let parsed = ProxyArgs::from_arg_matches(matches)?;
            Ok(ProxyLine {
                listen_port: parsed.listen.port(),
                admin_port: parsed.admin_listen.0.map(|a| a.port()),
                http_port: parsed.acme.http_listen.map(|a| a.port()),
                acme_store_is_secret: parsed.acme.acme_store.starts_with("secret:"),
                admin_loopback: parsed.admin_listen.0.is_some_and(|a| a.ip().is_loopback()),
                acme: !parsed.acme.acme_domains.is_empty(),
                // As `ProxyConfig::kubernetes_flag` decides it, from the unchecked flags.
                api_flag: if !parsed.cert_secrets.is_empty() {
                    Some("cert-secret")
                } else if !parsed.acme.acme_domains.is_empty()
                    && parsed.acme.acme_store.starts_with("secret:")
                {
                    Some("acme-store")
                } else if matches!(parsed.ticket_keys, TicketKeySource::Secret(_)) {
                    Some("ticket-keys")
                } else {
                    None
                },
                acme_store: parsed.acme.acme_store,
                lame_duck: parsed.lame_duck,
                drain_timeout: parsed.drain_timeout,
            })
        })
    })
}

/// Accepts a Kubernetes resource quantity (`100m`, `64Mi`, `1.5`, `2e3`) or the empty string.
fn parse_quantity(value: &str) -> Result<String, String> {
    const SUFFIXES: [&str; 13] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T",
    ];
    if value.is_empty() {
        return Ok(String::new());
    }
    let number = SUFFIXES
        .iter()
        .find_map(|s| value.strip_suffix(s))
        .unwrap_or(value);
    let number = number.split_once(['e', 'E']).map_or(number, |(m, _)| m);
    let ok = !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.chars().filter(|c| *c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "expected a Kubernetes quantity such as 100m, 64Mi or 1, got {value:?}"
        ))
    }
}

/// The `--sidecar-uid` value: a UID, or none (the image's USER).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SidecarUid(pub Option<i64>);

/// `--sidecar-uid`: an ID of 1 or more, or `none`/empty for none.
fn parse_sidecar_uid(value: &str) -> Result<SidecarUid, String> {
    if value.is_empty() || value == "none" {
        return Ok(SidecarUid(None));
    }
    match value.parse::<i64>() {
        Ok(uid) if uid >= 1 => Ok(SidecarUid(Some(uid))),
        _ => Err(format!(
            "expected a user ID of 1 or more (never root), or none for the image's USER, got {value:?}"
        )),
    }
}

/// `FLAG=VALUE`, the flag without its leading dashes.
fn parse_default(value: &str) -> Result<(String, String), String> {
    let (flag, val) = value
        .split_once('=')
        .ok_or_else(|| format!("expected FLAG=VALUE, got {value:?}"))?;
    let flag = flag.trim_start_matches('-');
    if flag.is_empty() {
        return Err(format!(
            "expected FLAG=VALUE, the flag is empty in {value:?}"
        ));
    }
    Ok((flag.to_string(), val.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for good in ["", "100m", "64Mi", "1", "0.5", "2e3", "1Gi"] {
            assert!(parse_quantity(good).is_ok(), "{good}");
        }
        for bad in ["lots", "Mi", "1.2.3", "-1", "64MB"] {
            assert!(parse_quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sidecar_uids_are_positive_or_none() {
        assert_eq!(parse_sidecar_uid("65532"), Ok(SidecarUid(Some(65532))));
        assert_eq!(parse_sidecar_uid("none"), Ok(SidecarUid(None)));
        assert_eq!(parse_sidecar_uid(""), Ok(SidecarUid(None)));
        for bad in ["0", "-1", "root", "1.5"] {
            assert!(parse_sidecar_uid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_are_flag_value_pairs() {
        assert_eq!(
            parse_default("--acme-email=a@b.c"),
            Ok(("acme-email".into(), "a@b.c".into()))
        );
        assert!(parse_default("acme-email").is_err());
        assert!(parse_default("=x").is_err());
    }
}
