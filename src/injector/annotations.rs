//! Pod annotations `wss-sidecar.io/<flag>` → the sidecar's `proxy` arguments, checked by the
//! proxy's own clap parser.
//!
//! There is no hand-written list of flags: the valid annotations are the long flags of the
//! proxy's clap definition ([`ProxyFlags`]), so a flag added to the proxy is an annotation at
//! once, and a value clap would refuse at start-up is refused here, at `kubectl apply` time.
//! When the sidecar image is an older release, [`super::skew`] first refuses the flags that
//! release lacks, from its recorded list.
//!
//! Values: a switch takes `"true"` or `"false"`; a repeatable flag takes a comma-separated list
//! (`wss-sidecar.io/cert-dir: "/a,/b"` → `--cert-dir=/a --cert-dir=/b`); any other flag takes
//! its value as written.

use std::collections::BTreeMap;

use super::flags::ProxyFlags;
use super::mounts::{self, MOUNTS, Mount};

/// The prefix of every annotation the injector reads.
pub const PREFIX: &str = "wss-sidecar.io/";
/// The pod label (also accepted as an annotation) that asks for injection.
pub const INJECT: &str = "wss-sidecar.io/inject";
/// The annotation that marks a pod as injected.
pub const STATUS: &str = "wss-sidecar.io/status";
/// Mounts the named TLS Secret and points `--cert-dir` at it.
pub const CERT_SECRET_VOLUME: &str = "wss-sidecar.io/cert-secret-volume";
/// Sugar for `wss-sidecar.io/upstream: 127.0.0.1:PORT`.
pub const UPSTREAM_PORT: &str = "wss-sidecar.io/upstream-port";

/// `"false"`: app containers without a preStop get no `preStop: sleep` (see `inject`).
pub const APP_PRESTOP: &str = "wss-sidecar.io/app-prestop";

/// Keys the injector reads itself; everything else under [`PREFIX`] must be a proxy flag.
const INJECTOR_KEYS: [&str; 6] = [
    INJECT,
    STATUS,
    CERT_SECRET_VOLUME,
    UPSTREAM_PORT,
    MOUNTS,
    APP_PRESTOP,
];

/// Where `cert-secret-volume` mounts the Secret (and so the `--cert-dir` it adds).
pub const TLS_MOUNT_PATH: &str = "/var/run/wss-sidecar/tls";

/// What the annotations ask for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarArgs {
    /// The container's arguments, starting with `proxy`.
    pub args: Vec<String>,
    /// The port of `--listen`, exposed as the container's `wss` port.
    pub listen_port: u16,
    /// The port of `--admin-listen`, unless it is `off`.
    pub admin_port: Option<u16>,
    /// The port of `--http-listen` (HTTP-01 answers, redirects), when set.
    pub http_port: Option<u16>,
    /// The TLS Secret to mount, from `cert-secret-volume`.
    pub cert_secret_volume: Option<String>,
    /// What `wss-sidecar.io/mounts` mounts into the sidecar.
    pub mounts: Vec<Mount>,
    /// Every path flag's value, as `(flag, path)`: each must be in the image or under a mount.
    pub paths: Vec<(String, String)>,
    /// The ACME store, when ACME is on (`acme-domain`) or `acme-store` is set: `None` inside
    /// means it was left at the proxy's default.
    pub acme_store: Option<Option<String>>,
    /// `--admin-listen` is a loopback address.
    pub admin_loopback: bool,
    /// The flag that makes the sidecar call the Kubernetes API, if any.
    pub api_flag: Option<&'static str>,
    /// Who set each flag: the annotation, or `--sidecar-default FLAG`.
    labels: BTreeMap<String, String>,
}

impl SidecarArgs {
    /// Who set `flag` (without `--`), for messages: its annotation unless a
    /// `--sidecar-default` did.
    pub fn label(&self, flag: &str) -> String {
        self.labels.get(flag).cloned().unwrap_or_else(|| key(flag))
    }
}

/// A pod the injector refuses, with a message naming the annotation at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denial(pub String);

/// Checks `--sidecar-default FLAG=VALUE` pairs at start-up, the way annotations are checked.
pub fn check_defaults(defaults: &[(String, String)], flags: &ProxyFlags) -> Result<(), Denial> {
    for (flag, value) in defaults {
        flags.words(&format!("--sidecar-default {flag}"), flag, value)?;
    }
    Ok(())
}

/// Builds and checks the sidecar's arguments from a pod's annotations over the injector's
/// `defaults` (an annotation replaces the default for its flag).
pub fn sidecar_args(
    annotations: &BTreeMap<String, String>,
    defaults: &[(String, String)],
    flags: &ProxyFlags,
) -> Result<SidecarArgs, Denial> {
    let ours: BTreeMap<&str, &str> = annotations
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?, v.as_str())))
        .collect();
    let unknown: Vec<String> = ours
        .keys()
        .filter(|k| !flags.has(k) && !INJECTOR_KEYS.contains(&key(k).as_str()))
        .map(|k| key(k))
        .collect();
    if !unknown.is_empty() {
        return Err(Denial(format!(
            "unknown annotation {}: not a flag of `wss-sidecar proxy` nor one of {}",
            unknown.join(", "),
            INJECTOR_KEYS.join(", ")
        )));
    }

    let mut values: BTreeMap<String, (String, String)> = defaults
        .iter()
        .map(|(f, v)| (f.clone(), (format!("--sidecar-default {f}"), v.clone())))
        .collect();
    for (flag, value) in ours.iter().filter(|(k, _)| flags.has(k)) {
        values.insert(flag.to_string(), (key(flag), value.to_string()));
    }
    if let Some(port) = ours.get("upstream-port") {
        if ours.contains_key("upstream") {
            return Err(Denial(format!(
                "{UPSTREAM_PORT} and {PREFIX}upstream both set the upstream: keep one"
            )));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                Denial(format!(
                    "{UPSTREAM_PORT}: expected a port from 1 to 65535, got {port:?}"
                ))
            })?;
        values.insert(
            "upstream".into(),
            (UPSTREAM_PORT.into(), format!("127.0.0.1:{port}")),
        );
    }
    let cert_secret_volume = match ours.get("cert-secret-volume") {
        Some(name) => Some(check_secret_name(name)?),
        None => None,
    };
    let mounts = match ours.get("mounts") {
        Some(value) => mounts::parse(value)?,
        None => Vec::new(),
    };

    let mut args = vec!["proxy".to_string()];
    if cert_secret_volume.is_some() {
        args.push(format!("--cert-dir={TLS_MOUNT_PATH}"));
    }
    for (flag, (label, value)) in &values {
        args.extend(flags.words(label, flag, value)?);
    }
    // Each flag passed alone; now together, for what only the whole line can show.
    let line = flags
        .read_line(&args[1..])
        .map_err(|why| Denial(format!("the {PREFIX}* annotations do not combine: {why}")))?;
    let store_set = values.contains_key("acme-store");
    Ok(SidecarArgs {
        listen_port: line.listen_port,
        admin_port: line.admin_port,
        http_port: line.http_port,
        cert_secret_volume,
        mounts,
        paths: flags.paths(&args[1..]),
        acme_store: (line.acme || store_set).then(|| store_set.then_some(line.acme_store)),
        admin_loopback: line.admin_loopback,
        api_flag: line.api_flag,
        labels: values
            .into_iter()
            .map(|(f, (label, _))| (f, label))
            .collect(),
        args,
    })
}

fn key(flag: &str) -> String {
    format!("{PREFIX}{flag}")
}

/// A Secret name is a DNS-1123 subdomain: lower-case alphanumerics, `-` and `.`, at most 253.
fn check_secret_name(name: &str) -> Result<String, Denial> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(name.to_string())
    } else {
        Err(Denial(format!(
            "{CERT_SECRET_VOLUME}: {name:?} is not a Secret name (lower-case letters, digits, '-' and '.')"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> &'static ProxyFlags {
        crate::config::proxy_flags()
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect()
    }

    fn args(pairs: &[(&str, &str)]) -> Result<SidecarArgs, Denial> {
        sidecar_args(&annotations(pairs), &[], flags())
    }

    #[test]
    fn every_proxy_flag_is_an_annotation() {
        let names: Vec<&str> = flags().names().collect();
        for flag in [
            "listen",
            "upstream",
            "cert-dir",
            "idle-timeout",
            "log-format",
        ] {
            assert!(names.contains(&flag), "{flag} missing from {names:?}");
        }
        assert!(!names.contains(&"help"));
    }

    #[test]
    fn flags_become_arguments_in_a_stable_order() {
        let got = args(&[
            ("upstream-port", "3000"),
            ("idle-timeout", "5m"),
            ("cert-dir", "/a, /b"),
            ("listen", "0.0.0.0:9443"),
        ])
        .unwrap();
        assert_eq!(
            got.args,
            [
                "proxy",
                "--cert-dir=/a",
                "--cert-dir=/b",
                "--idle-timeout=5m",
                "--listen=0.0.0.0:9443",
                "--upstream=127.0.0.1:3000"
            ]
        );
        assert_eq!(got.listen_port, 9443);
        assert_eq!(got.admin_port, Some(9090));
        assert_eq!(got.http_port, None);
        let got = args(&[("http-listen", "0.0.0.0:8081")]).unwrap();
        assert_eq!(got.http_port, Some(8081));
    }

    #[test]
    fn annotations_override_defaults() {
        let defaults = [("log-format".to_string(), "json".to_string())];
        let got =
            sidecar_args(&annotations(&[("log-format", "text")]), &defaults, flags()).unwrap();
        assert_eq!(got.args, ["proxy", "--log-format=text"]);
        let got = sidecar_args(&BTreeMap::new(), &defaults, flags()).unwrap();
        assert_eq!(got.args, ["proxy", "--log-format=json"]);
    }

    #[test]
    fn bad_values_are_denied_naming_the_annotation() {
        let err = args(&[("handshake-timeout", "soon")]).unwrap_err().0;
        assert!(
            err.starts_with("wss-sidecar.io/handshake-timeout: "),
            "{err}"
        );
        assert!(err.contains("soon"), "{err}");
        let err = args(&[("upstream-port", "http")]).unwrap_err().0;
        assert!(err.starts_with(UPSTREAM_PORT), "{err}");
        let err = args(&[("cert-secret-volume", "Bad_Name")]).unwrap_err().0;
        assert!(err.starts_with(CERT_SECRET_VOLUME), "{err}");
        let err = args(&[("upstream", "127.0.0.1:1"), ("upstream-port", "2")])
            .unwrap_err()
            .0;
        assert!(err.contains(UPSTREAM_PORT), "{err}");
        // Flags that exclude each other are refused together, at admission.
        let err = args(&[
            ("acme-eab-hmac-key", "aGVsbG8"),
            ("acme-eab-hmac-key-file", "/k"),
        ])
        .unwrap_err()
        .0;
        assert!(err.contains("do not combine"), "{err}");
        assert!(err.contains("--acme-eab-hmac-key-file"), "{err}");
    }

    #[test]
    fn ticket_keys_from_a_secret_are_accepted_and_need_the_api() {
        let got = args(&[("ticket-keys", "secret:ws-tickets")]).unwrap();
        assert_eq!(got.args, ["proxy", "--ticket-keys=secret:ws-tickets"]);
        assert_eq!(got.api_flag, Some("ticket-keys"), "needs a token");
        assert_eq!(args(&[("ticket-keys", "memory")]).unwrap().api_flag, None);
        for bad in ["secret:Bad_Name", "vault:x", "file:"] {
            let err = args(&[("ticket-keys", bad)]).unwrap_err().0;
            assert!(
                err.starts_with("wss-sidecar.io/ticket-keys: "),
                "{bad}: {err}"
            );
        }
        let err = args(&[("ticket-key-rotation", "soon")]).unwrap_err().0;
        assert!(
            err.starts_with("wss-sidecar.io/ticket-key-rotation: "),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_denied_by_name() {
        let err = args(&[("upstrem", "x"), ("listen", "0.0.0.0:1")])
            .unwrap_err()
            .0;
        assert!(err.contains("wss-sidecar.io/upstrem"), "{err}");
        // Annotations of other tools are none of our business.
        let mut other = annotations(&[]);
        other.insert("example.com/upstrem".into(), "x".into());
        assert!(sidecar_args(&other, &[], flags()).is_ok());
    }

    #[test]
    fn bad_defaults_are_named() {
        let err = check_defaults(&[("no-such-flag".into(), "1".into())], flags()).unwrap_err();
        assert!(err.0.contains("--sidecar-default no-such-flag"), "{err}");
    }
}
