//! Pod annotations `wss-sidecar.io/<flag>` → the sidecar's `proxy` arguments, checked by the
//! proxy's own clap parser.
//!
//! There is no hand-written list of flags: the valid annotations are the long flags of
//! [`ProxyArgs`] as clap defines them, so a flag added to the proxy is an annotation at once,
//! and a value clap would refuse at start-up is refused here, at `kubectl apply` time.
//!
//! Values: a switch takes `"true"` or `"false"`; a repeatable flag takes a comma-separated list
//! (`wss-sidecar.io/cert-dir: "/a,/b"` → `--cert-dir=/a --cert-dir=/b`); any other flag takes
//! its value as written.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use clap::{ArgAction, Args, FromArgMatches};

use crate::config::ProxyArgs;

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

/// Keys the injector reads itself; everything else under [`PREFIX`] must be a proxy flag.
const INJECTOR_KEYS: [&str; 4] = [INJECT, STATUS, CERT_SECRET_VOLUME, UPSTREAM_PORT];

/// Where `cert-secret-volume` mounts the Secret (and so the `--cert-dir` it adds).
pub const TLS_MOUNT_PATH: &str = "/var/run/wss-sidecar/tls";

/// How a proxy flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    /// `--flag` or nothing.
    Switch,
    /// One value.
    Single,
    /// Any number of values.
    Repeatable,
}

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
    /// Whether the sidecar keeps ACME state in a directory (some `acme-*` flag is set and
    /// `acme-store` is not a `secret:`): it then needs a writable volume there.
    pub acme: bool,
}

/// A pod the injector refuses, with a message naming the annotation at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denial(pub String);

/// The proxy's command line as clap defines it, without environment variables: the injector's
/// own environment must not leak into a pod's check.
fn proxy_command() -> &'static clap::Command {
    static COMMAND: OnceLock<clap::Command> = OnceLock::new();
    COMMAND.get_or_init(|| {
        ProxyArgs::augment_args(clap::Command::new("proxy"))
            .no_binary_name(true)
            .disable_help_flag(true)
            .mut_args(|arg| arg.env(None))
    })
}

/// Every proxy long flag and how it takes values.
fn flags() -> &'static BTreeMap<String, FlagKind> {
    static FLAGS: OnceLock<BTreeMap<String, FlagKind>> = OnceLock::new();
    FLAGS.get_or_init(|| {
        proxy_command()
            .get_arguments()
            .filter_map(|arg| {
                let kind = match arg.get_action() {
                    ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count => FlagKind::Switch,
                    ArgAction::Append => FlagKind::Repeatable,
                    ArgAction::Set => FlagKind::Single,
                    _ => return None,
                };
                Some((arg.get_long()?.to_string(), kind))
            })
            .collect()
    })
}

/// The names of every flag that may be set through an annotation (without `--`).
pub fn flag_names() -> impl Iterator<Item = &'static str> {
    flags().keys().map(String::as_str)
}

/// Turns `FLAG` = `value` into command-line words, checked by clap on their own so that an
/// error is pinned on `label` (the annotation, or `--sidecar-default FLAG`).
fn flag_words(label: &str, flag: &str, value: &str) -> Result<Vec<String>, Denial> {
    let Some(kind) = flags().get(flag) else {
        return Err(Denial(format!(
            "{label}: `wss-sidecar proxy` has no flag --{flag}"
        )));
    };
    let words = match kind {
        FlagKind::Switch => match value {
            "true" => vec![format!("--{flag}")],
            "false" => vec![],
            _ => {
                return Err(Denial(format!(
                    "{label}: expected \"true\" or \"false\", got {value:?}"
                )));
            }
        },
        FlagKind::Single => vec![format!("--{flag}={value}")],
        FlagKind::Repeatable => value
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| format!("--{flag}={v}"))
            .collect(),
    };
    proxy_command()
        .clone()
        .try_get_matches_from(&words)
        .map_err(|err| Denial(format!("{label}: {}", first_line(&err))))?;
    Ok(words)
}

/// clap's message without its `error: ` prefix, usage and help hint.
fn first_line(err: &clap::Error) -> String {
    let text = err.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// Checks `--sidecar-default FLAG=VALUE` pairs at start-up, the way annotations are checked.
pub fn check_defaults(defaults: &[(String, String)]) -> Result<(), Denial> {
    for (flag, value) in defaults {
        flag_words(&format!("--sidecar-default {flag}"), flag, value)?;
    }
    Ok(())
}

/// Builds and checks the sidecar's arguments from a pod's annotations over the injector's
/// `defaults` (an annotation replaces the default for its flag).
pub fn sidecar_args(
    annotations: &BTreeMap<String, String>,
    defaults: &[(String, String)],
) -> Result<SidecarArgs, Denial> {
    let ours: BTreeMap<&str, &str> = annotations
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?, v.as_str())))
        .collect();
    let unknown: Vec<String> = ours
        .keys()
        .filter(|k| !flags().contains_key(**k) && !INJECTOR_KEYS.contains(&key(k).as_str()))
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
    for (flag, value) in ours.iter().filter(|(k, _)| flags().contains_key(**k)) {
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

    let mut args = vec!["proxy".to_string()];
    if cert_secret_volume.is_some() {
        args.push(format!("--cert-dir={TLS_MOUNT_PATH}"));
    }
    for (flag, (label, value)) in &values {
        args.extend(flag_words(label, flag, value)?);
    }
    // Each flag passed alone; now together, for what only the whole line can show.
    let parsed = proxy_command()
        .clone()
        .try_get_matches_from(&args[1..])
        .and_then(|m| ProxyArgs::from_arg_matches(&m))
        .map_err(|err| {
            Denial(format!(
                "the {PREFIX}* annotations do not combine: {}",
                first_line(&err)
            ))
        })?;
    Ok(SidecarArgs {
        args,
        listen_port: parsed.listen.port(),
        admin_port: parsed.admin_listen.0.map(|a| a.port()),
        http_port: parsed.acme.http_listen.map(|a| a.port()),
        cert_secret_volume,
        acme: values.keys().any(|f| f.starts_with("acme-"))
            && !parsed.acme.acme_store.starts_with("secret:"),
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

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect()
    }

    fn args(pairs: &[(&str, &str)]) -> Result<SidecarArgs, Denial> {
        sidecar_args(&annotations(pairs), &[])
    }

    #[test]
    fn every_proxy_flag_is_an_annotation() {
        let names: Vec<&str> = flag_names().collect();
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
        let got = sidecar_args(&annotations(&[("log-format", "text")]), &defaults).unwrap();
        assert_eq!(got.args, ["proxy", "--log-format=text"]);
        let got = sidecar_args(&BTreeMap::new(), &defaults).unwrap();
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
    fn unknown_keys_are_denied_by_name() {
        let err = args(&[("upstrem", "x"), ("listen", "0.0.0.0:1")])
            .unwrap_err()
            .0;
        assert!(err.contains("wss-sidecar.io/upstrem"), "{err}");
        // Annotations of other tools are none of our business.
        let mut other = annotations(&[]);
        other.insert("example.com/upstrem".into(), "x".into());
        assert!(sidecar_args(&other, &[]).is_ok());
    }

    #[test]
    fn bad_defaults_are_named() {
        let err = check_defaults(&[("no-such-flag".into(), "1".into())]).unwrap_err();
        assert!(err.0.contains("--sidecar-default no-such-flag"), "{err}");
    }
}
