//! The `wss-sidecar.io/mounts` annotation: Secrets, ConfigMaps and the pod's own volumes
//! mounted into the sidecar, which sees nothing but its image and the mounts the injector adds.
//!
//! `secret:NAME:/path,configMap:NAME:/path,volume:PODVOLUME:/path`. Whole-directory mounts only
//! (a `subPath` mount never sees a Secret's updates); Secrets and ConfigMaps read-only, a pod
//! volume read-write (an `acme-store` directory is written).

use super::annotations::{Denial, TLS_MOUNT_PATH};

/// The annotation.
pub const MOUNTS: &str = "wss-sidecar.io/mounts";

/// Where the image keeps the binary: no mount may cover it.
const BINARY_DIR: &str = "/usr/local/bin";

/// What a mount shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A Secret of the pod's namespace, read-only.
    Secret(String),
    /// A ConfigMap of the pod's namespace, read-only.
    ConfigMap(String),
    /// One of the pod's own volumes, by name, read-write.
    Volume(String),
}

/// One entry of the annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// What is mounted.
    pub source: MountSource,
    /// Where, in the sidecar: absolute, normalised.
    pub path: String,
}

/// Parses the annotation's value; every problem names [`MOUNTS`].
pub fn parse(value: &str) -> Result<Vec<Mount>, Denial> {
    let deny = |why: String| Denial(format!("{MOUNTS}: {why}"));
    let mut mounts: Vec<Mount> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mut parts = entry.splitn(3, ':');
        let (Some(kind), Some(name), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(deny(format!(
                "{entry:?} is not KIND:NAME:/path (KIND is secret, configMap or volume)"
            )));
        };
        let source = match kind {
            // Secret and ConfigMap names are DNS-1123 subdomains, volume names DNS-1123 labels
            // (k8s.io/kubernetes pkg/apis/core/validation/validation.go: ValidateSecretName,
            // ValidateConfigMapName, validateVolumes).
            "secret" => MountSource::Secret(check_name(name, 253, true).map_err(&deny)?),
            "configMap" => MountSource::ConfigMap(check_name(name, 253, true).map_err(&deny)?),
            "volume" => MountSource::Volume(check_name(name, 63, false).map_err(&deny)?),
            other => {
                return Err(deny(format!(
                    "{other:?} in {entry:?} is not secret, configMap or volume"
                )));
            }
        };
        let path = check_path(path).map_err(&deny)?;
        // The image's binary (Dockerfile: COPY … /usr/local/bin/wss-sidecar).
        if overlaps(&path, BINARY_DIR) {
            return Err(deny(format!(
                "{path} would hide {BINARY_DIR}, where the sidecar's binary is"
            )));
        }
        if overlaps(&path, TLS_MOUNT_PATH) {
            return Err(deny(format!(
                "{path} clashes with {TLS_MOUNT_PATH}, where the injector mounts \
                 wss-sidecar.io/cert-secret-volume"
            )));
        }
        if let Some(other) = mounts.iter().find(|m| m.path == path) {
            return Err(deny(format!(
                "{path} is mounted twice ({:?} and {entry:?})",
                other.source
            )));
        }
        mounts.push(Mount { source, path });
    }
    Ok(mounts)
}

/// Whether `path` is `dir` or inside it (by whole components).
pub fn is_under(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
        || dir.is_empty()
}

/// Whether one of `a` and `b` contains the other.
fn overlaps(a: &str, b: &str) -> bool {
    is_under(a, b) || is_under(b, a)
}

/// A DNS-1123 subdomain (`dots`) or label of at most `max` characters.
fn check_name(name: &str, max: usize, dots: bool) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
        })
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(name.to_string())
    } else {
        Err(format!(
            "{name:?} is not a valid name (at most {max} lower-case letters, digits, '-'{})",
            if dots { " and '.'" } else { "" }
        ))
    }
}

/// An absolute path without `.`/`..` components, not `/`, written without a trailing `/`.
fn check_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Err("cannot mount over / (the sidecar's image)".into());
    }
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(format!("{path:?} has a . or .. component"));
    }
    Ok(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_in_order() {
        let got =
            parse("secret:ca:/etc/wss/ca, configMap:roots:/etc/wss/roots/,volume:state:/data")
                .unwrap();
        assert_eq!(
            got,
            [
                Mount {
                    source: MountSource::Secret("ca".into()),
                    path: "/etc/wss/ca".into()
                },
                Mount {
                    source: MountSource::ConfigMap("roots".into()),
                    path: "/etc/wss/roots".into()
                },
                Mount {
                    source: MountSource::Volume("state".into()),
                    path: "/data".into()
                },
            ]
        );
    }

    #[test]
    fn bad_entries_are_denied_naming_the_annotation() {
        for bad in [
            "secret:ca",
            "file:ca:/x",
            "secret:Bad_Name:/x",
            "volume:a.b:/x",
            "secret:ca:relative",
            "secret:ca:/",
            "secret:ca:/a/../b",
            "secret:ca:/var/run/wss-sidecar",
            "secret:ca:/var/run/wss-sidecar/tls/x",
            "secret:a:/x,configMap:b:/x/",
            "configMap:a:/usr",
        ] {
            let err = parse(bad).unwrap_err().0;
            assert!(err.starts_with(MOUNTS), "{bad}: {err}");
        }
    }

    #[test]
    fn under_is_by_whole_components() {
        assert!(is_under("/a/b", "/a"));
        assert!(is_under("/a", "/a"));
        assert!(is_under("/a", "/a/"));
        assert!(!is_under("/ab", "/a"));
        assert!(!is_under("/a", "/a/b"));
    }
}
