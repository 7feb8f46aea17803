//! Version skew between the injector and the sidecar image: which release the sidecar runs, and
//! what of the injector's command line, probes and hooks that release understands.
//!
//! The annotations are the proxy flags of the injector's own build, but the sidecar image may be
//! an older release (`--sidecar-image …:0.1.0` under a 0.2.0 injector): passing it a flag it
//! does not know makes clap exit and every injected pod crash-loop. So the injector knows the
//! sidecar's version — the image tag when it is a semver, `--sidecar-version` for digests and
//! custom tags, else its own version (with a start-up warning) — and the recorded flag list of
//! each released version (`releases/VERSION.flags`, one long flag per line). Against an older
//! sidecar, what the injector adds by itself (its default flags, the `/startupz` startup probe,
//! the `lame-duck` preStop hook) is left out or replaced by the old equivalent, and said in an
//! admission warning; a flag a pod's annotation or a `--sidecar-default` asks for is refused,
//! naming it and the sidecar's version.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::annotations::{Denial, PREFIX};
use super::flags::ProxyFlags;

/// A release's version: `MAJOR.MINOR.PATCH`. A pre-release or build suffix (`0.2.0-rc1`) is
/// read as its release: a release candidate carries the release's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// This build's own version (Cargo.toml).
    pub fn own() -> Self {
        Self::parse(env!("CARGO_PKG_VERSION")).unwrap_or(Self(0, 0, 0))
    }

    /// `1.2.3`, `v1.2.3`, `1.2.3-rc.1`, `1.2.3+build`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.strip_prefix('v').unwrap_or(text);
        let core = text.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u32>().ok())
                .flatten()
        });
        let version = Self(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The released versions whose `wss-sidecar proxy` flags are recorded, oldest first. This
/// build's own version is the last (a test keeps its list equal to the clap definition).
const RECORDED: [(Version, &str); 2] = [
    (Version(0, 1, 0), include_str!("releases/0.1.0.flags")),
    (Version(0, 2, 0), include_str!("releases/0.2.0.flags")),
];

/// The first release whose admin port serves `/startupz` (0.1.0's startup probe was `/readyz`,
/// which waits for a certificate).
const STARTUPZ_SINCE: Version = Version(0, 2, 0);
/// The first release with the `wss-sidecar lame-duck` command the preStop hook runs.
const LAME_DUCK_COMMAND_SINCE: Version = Version(0, 2, 0);

/// The flags of a recorded list: one per line, `#` comments and blank lines ignored.
fn parse_flags(list: &str) -> BTreeSet<&str> {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The sidecar's version cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {message}")]
pub struct SkewError {
    /// The injector flag at fault.
    pub flag: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// The release the injected sidecar runs, and what this injector changes for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarRelease {
    version: Version,
    /// The recorded flags of an older release; `None`: the injector's own release (or newer),
    /// which has every flag the injector knows.
    flags: Option<BTreeSet<&'static str>>,
    /// Why the version was assumed rather than known: a start-up warning.
    assumed: Option<String>,
    /// What is left out or replaced for this release: the admission warning.
    changes: Vec<String>,
}

impl SidecarRelease {
    /// The injector's own release: every flag, probe and hook.
    pub fn own() -> Self {
        Self {
            version: Version::own(),
            flags: None,
            assumed: None,
            changes: Vec::new(),
        }
    }

    /// The release of `image` (`--sidecar-image`), unless `version` (`--sidecar-version`) says
    /// it; an image whose tag is no semver (`latest`, a digest) is taken to be the injector's
    /// own release, noted in [`Self::assumed`].
    pub fn resolve(image: &str, version: Option<&str>) -> Result<Self, SkewError> {
        let explicit = version.is_some();
        let (version, assumed) = match version {
            Some(text) => {
                let version = Version::parse(text).ok_or_else(|| SkewError {
                    flag: "--sidecar-version",
                    message: format!("expected a release version such as 0.1.0, got {text:?}"),
                })?;
                (version, None)
            }
            None => match image_tag(image).and_then(Version::parse) {
                Some(version) => (version, None),
                None => {
                    let own = Version::own();
                    let why = format!(
                        "cannot tell the sidecar's release from --sidecar-image {image} (its tag \
                         is no version): taking it to be {own}, the injector's own; if it is \
                         another, set --sidecar-version (chart: sidecar.image.version), or \
                         injected pods may pass it flags it does not know"
                    );
                    (own, Some(why))
                }
            },
        };
        let from = if explicit {
            "--sidecar-version"
        } else {
            "--sidecar-image"
        };
        let mut release = Self::of(version).map_err(|e| SkewError { flag: from, ..e })?;
        release.assumed = assumed;
        Ok(release)
    }

    /// The release `version`: its recorded flags (the newest recorded release not newer than
    /// it), or every flag when it is the injector's own release or newer.
    fn of(version: Version) -> Result<Self, SkewError> {
        let own = Version::own();
        if version >= own {
            return Ok(Self {
                version,
                ..Self::own()
            });
        }
        let Some((recorded, list)) = RECORDED.iter().rev().find(|(v, _)| *v <= version) else {
            return Err(SkewError {
                flag: "--sidecar-version",
                message: format!(
                    "the sidecar's release {version} is older than every release this injector \
                     knows (the oldest is {}): use a newer sidecar image",
                    RECORDED[0].0
                ),
            });
        };
        let mut changes = Vec::new();
        let shown = recorded_name(version, *recorded);
        // 0.1.0's /healthz means "started": main binds every listener before `proxy::run`,
        // which spawns the admin server after the certificate sources (src/main.rs and
        // src/proxy/mod.rs at 09eaae1); its /readyz, 0.1.0's own startup probe, waits for a
        // certificate, which a startup probe must not.
        if version < STARTUPZ_SINCE {
            changes.push(format!(
                "the startup probe is GET /healthz ({shown} serves no /startupz; its /healthz \
                 answers once the listeners are bound)"
            ));
        }
        if version < LAME_DUCK_COMMAND_SINCE {
            changes.push(format!(
                "no preStop hook ({shown} has no `wss-sidecar lame-duck`: it stops accepting at \
                 SIGTERM, so connections still in flight may be refused)"
            ));
        }
        Ok(Self {
            version,
            flags: Some(parse_flags(list)),
            assumed: None,
            changes,
        })
    }

    /// The sidecar's version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Why the version is assumed (a start-up warning), when it is.
    pub fn assumed(&self) -> Option<&str> {
        self.assumed.as_deref()
    }

    /// Whether the sidecar has the proxy flag `flag` (without `--`).
    pub fn has(&self, flag: &str) -> bool {
        self.flags.as_ref().is_none_or(|f| f.contains(flag))
    }

    /// The startup probe's path: `/startupz`, or `/healthz` on a release without it.
    pub fn startup_path(&self) -> &'static str {
        if self.version >= STARTUPZ_SINCE {
            "/startupz"
        } else {
            "/healthz"
        }
    }

    /// Whether the sidecar has the `lame-duck` command the preStop hook runs.
    pub fn lame_duck_hook(&self) -> bool {
        self.version >= LAME_DUCK_COMMAND_SINCE
    }

    /// The proxy flags every sidecar gets: the injector's own `injected` defaults this release
    /// has (the others are left out, and said in [`Self::warning`]), then the user's
    /// `--sidecar-default`s, each of which this release must have.
    pub fn defaults(
        &mut self,
        injected: &[(&str, &str)],
        user: Vec<(String, String)>,
    ) -> Result<Vec<(String, String)>, SkewError> {
        if let Some((flag, _)) = user.iter().find(|(flag, _)| !self.has(flag)) {
            return Err(SkewError {
                flag: "--sidecar-default",
                message: format!("{flag}: {}", self.lacks(flag)),
            });
        }
        let (kept, left_out): (Vec<_>, Vec<_>) =
            injected.iter().partition(|(flag, _)| self.has(flag));
        if !left_out.is_empty() {
            let words: Vec<String> = left_out.iter().map(|(f, v)| format!("--{f}={v}")).collect();
            self.changes.insert(
                0,
                format!(
                    "left out {} ({} has no such flag)",
                    words.join(" "),
                    self.version
                ),
            );
        }
        Ok(kept
            .into_iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .chain(user)
            .collect())
    }

    /// Refuses a pod whose annotations set a proxy flag (one of `flags`) this release lacks.
    pub fn check_annotations(
        &self,
        annotations: &BTreeMap<String, String>,
        flags: &ProxyFlags,
    ) -> Result<(), Denial> {
        let lacking: Vec<String> = annotations
            .keys()
            .filter_map(|key| key.strip_prefix(PREFIX))
            .filter(|flag| flags.has(flag) && !self.has(flag))
            .map(|flag| format!("{PREFIX}{flag}: {}", self.lacks(flag)))
            .collect();
        if lacking.is_empty() {
            Ok(())
        } else {
            Err(Denial(lacking.join("; ")))
        }
    }

    /// The admission warning for every pod injected with this release, when the injector
    /// leaves anything out for it.
    pub fn warning(&self) -> Option<String> {
        (!self.changes.is_empty()).then(|| {
            format!(
                "the sidecar image is wss-sidecar {}, older than this injector ({}): {}; use a \
                 {} sidecar image for them",
                self.version,
                Version::own(),
                self.changes.join("; "),
                Version::own()
            )
        })
    }

    fn lacks(&self, flag: &str) -> String {
        format!(
            "the sidecar image is wss-sidecar {}, which has no --{flag} (this injector is {}): \
             remove it, or use a sidecar image of {} or later",
            self.version,
            Version::own(),
            Version::own()
        )
    }
}

/// `0.1.0`, or `0.1.5 (as 0.1.0)` when a version between releases is read by the last one.
fn recorded_name(version: Version, recorded: Version) -> String {
    if version == recorded {
        version.to_string()
    } else {
        format!("{version} (as {recorded})")
    }
}

/// The tag of an image reference (`registry:5000/name:tag@sha256:…` → `tag`): the part after
/// the last `:` of the last path component, the digest left aside.
fn image_tag(image: &str) -> Option<&str> {
    let name = image.split('@').next()?;
    let last = name.rsplit('/').next()?;
    last.rsplit_once(':').map(|(_, tag)| tag)
}

#[cfg(test)]
#[path = "skew_tests.rs"]
mod tests;
