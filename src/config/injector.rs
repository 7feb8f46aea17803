//! Flags of `wss-sidecar injector`: where it serves, and what sidecar it injects.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::LogArgs;

/// How the sidecar joins the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SidecarMode {
    /// A native sidecar (Kubernetes 1.29+): the first init container, `restartPolicy: Always`,
    /// with a startup probe, so the app starts after TLS is ready and Jobs still complete.
    Native,
    /// A plain container appended to `containers`, for clusters older than 1.29.
    Plain,
}

/// Flags of `wss-sidecar injector`.
#[derive(Debug, Clone, Args)]
pub struct InjectorArgs {
    /// HTTPS listen address; `POST /mutate` takes an AdmissionReview v1.
    #[arg(long, env = "WSS_SIDECAR_LISTEN", default_value = "0.0.0.0:8443")]
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

    /// Admin listen address for /healthz, /readyz and /metrics.
    #[arg(long, env = "WSS_SIDECAR_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// Image of the injected container (normally the injector's own image).
    #[arg(long, env = "WSS_SIDECAR_SIDECAR_IMAGE", default_value = concat!("wss-sidecar:", env!("CARGO_PKG_VERSION")))]
    pub sidecar_image: String,

    /// imagePullPolicy of the injected container.
    #[arg(long, env = "WSS_SIDECAR_SIDECAR_IMAGE_PULL_POLICY", default_value = "IfNotPresent", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub sidecar_image_pull_policy: String,

    /// `native` (an init container with restartPolicy Always, Kubernetes 1.29+) or `plain`.
    #[arg(
        long,
        env = "WSS_SIDECAR_SIDECAR_MODE",
        value_enum,
        default_value = "native"
    )]
    pub sidecar_mode: SidecarMode,

    /// User and group ID the sidecar runs as (never root).
    #[arg(long, env = "WSS_SIDECAR_SIDECAR_UID", default_value_t = 65532, value_parser = clap::value_parser!(i64).range(1..))]
    pub sidecar_uid: i64,

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
    fn defaults_are_flag_value_pairs() {
        assert_eq!(
            parse_default("--acme-email=a@b.c"),
            Ok(("acme-email".into(), "a@b.c".into()))
        );
        assert!(parse_default("acme-email").is_err());
        assert!(parse_default("=x").is_err());
    }
}
