//! The proxy's command line as the injector reads it: every long flag and how it takes values,
//! each value checked by the proxy's own clap parser, and what a whole line sets that the
//! injected container must know (its ports). [`crate::config::proxy_flags`] builds it from the
//! proxy's clap definition: that is what makes annotations equal flags.

use std::collections::BTreeMap;

use clap::{ArgAction, ArgMatches, ValueHint};

use super::annotations::Denial;

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

/// What a whole proxy command line sets that the injected container must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyLine {
    /// The port of `--listen`.
    pub listen_port: u16,
    /// The port of `--admin-listen`, unless it is `off`.
    pub admin_port: Option<u16>,
    /// The port of `--http-listen`, when set.
    pub http_port: Option<u16>,
    /// `--acme-store` names a Secret (`secret:…`), not a directory.
    pub acme_store_is_secret: bool,
    /// `--admin-listen` is a loopback address (the kubelet's probes cannot reach it).
    pub admin_loopback: bool,
    /// `--acme-domain` is set: ACME is on.
    pub acme: bool,
    /// `--acme-store` as written (a directory, or `secret:…`).
    pub acme_store: String,
    /// The flag that makes the sidecar call the Kubernetes API, as the proxy decides it
    /// (`ProxyConfig::kubernetes_flag`), without its `--`.
    pub api_flag: Option<&'static str>,
    /// `--lame-duck`: how long the sidecar stays not ready but accepting once told to stop.
    pub lame_duck: std::time::Duration,
    /// `--drain-timeout`: how long, after the lame duck, live connections may finish.
    pub drain_timeout: std::time::Duration,
}

/// Reads a [`ProxyLine`] from a line clap has parsed.
pub type ReadLine = fn(&ArgMatches) -> Result<ProxyLine, clap::Error>;

/// The proxy's flags, for checking annotations and `--sidecar-default`s.
#[derive(Debug)]
pub struct ProxyFlags {
    command: clap::Command,
    kinds: BTreeMap<String, FlagKind>,
    read: ReadLine,
}

impl ProxyFlags {
    /// The flags of `command` (the proxy's, without a binary name or environment variables: the
    /// injector's own environment must not leak into a pod's check); `read` takes what the
    /// injector needs from a parsed line.
    pub fn new(command: clap::Command, read: ReadLine) -> Self {
        let kinds = command
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
            .collect();
        Self {
            command,
            kinds,
            read,
        }
    }

    /// The names of every flag that may be set through an annotation (without `--`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// Whether `flag` (without `--`) is a proxy flag.
    pub fn has(&self, flag: &str) -> bool {
        self.kinds.contains_key(flag)
    }

    /// Turns `FLAG` = `value` into command-line words, checked by clap on their own so that an
    /// error is pinned on `label` (the annotation, or `--sidecar-default FLAG`).
    pub fn words(&self, label: &str, flag: &str, value: &str) -> Result<Vec<String>, Denial> {
        let Some(kind) = self.kinds.get(flag) else {
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
        self.command
            .clone()
            .try_get_matches_from(&words)
            .map_err(|err| Denial(format!("{label}: {}", first_line(&err))))?;
        Ok(words)
    }

    /// The value of every path flag in `words` (flags whose clap value hint is a path: every
    /// `PathBuf` flag), as `(flag, path)` in the line's order; `words` are already checked.
    pub fn paths(&self, words: &[String]) -> Vec<(String, String)> {
        let Ok(matches) = self.command.clone().try_get_matches_from(words) else {
            return Vec::new();
        };
        let path_hints = [
            ValueHint::AnyPath,
            ValueHint::FilePath,
            ValueHint::DirPath,
            ValueHint::ExecutablePath,
        ];
        let mut paths = Vec::new();
        for arg in self.command.get_arguments() {
            let (Some(long), true) = (arg.get_long(), path_hints.contains(&arg.get_value_hint()))
            else {
                continue;
            };
            let values = matches.get_raw(arg.get_id().as_str()).into_iter().flatten();
            paths.extend(values.map(|v| (long.to_string(), v.to_string_lossy().into_owned())));
        }
        paths
    }

    /// Parses a whole line of flags (each already checked alone, for what only the whole line
    /// can show) and reads what the container needs; the error is clap's, in one line.
    pub fn read_line(&self, words: &[String]) -> Result<ProxyLine, String> {
        self.command
            .clone()
            .try_get_matches_from(words)
            .and_then(|matches| (self.read)(&matches))
            .map_err(|err| first_line(&err))
    }
}

/// clap's message without its `error: ` prefix, usage and help hint.
fn first_line(err: &clap::Error) -> String {
    let text = err.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}
