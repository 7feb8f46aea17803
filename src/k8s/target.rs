//! `[namespace/]name` references to Kubernetes objects, and the pod's own namespace they
//! default to.

use std::fmt;
use std::path::Path;

/// Where a pod finds its own namespace when `POD_NAMESPACE` is not set.
pub const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// A namespaced object's name; without a namespace, the pod's own is meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// The namespace, when given.
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
}

impl ObjectRef {
    /// Parses `[namespace/]name`; both parts must be DNS-1123 names (what the API accepts for
    /// namespaces and Secret names).
    pub fn parse(value: &str) -> Result<Self, String> {
        let (namespace, name) = match value.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, value),
        };
        if let Some(ns) = namespace {
            check_label(ns).map_err(|why| format!("namespace {ns:?} {why}"))?;
        }
        check_subdomain(name).map_err(|why| format!("name {name:?} {why}"))?;
        Ok(Self {
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        })
    }

    /// The namespace: the one given, else `default_namespace`.
    pub fn namespace_or<'a>(&'a self, default_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(default_namespace)
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The pod's own namespace: `POD_NAMESPACE` (the injector sets it from the downward API),
/// else the service account's namespace file; `None` outside a pod.
pub fn own_namespace() -> Option<String> {
    own_namespace_from(
        std::env::var("POD_NAMESPACE").ok(),
        Path::new(SERVICE_ACCOUNT_NAMESPACE),
    )
}

fn own_namespace_from(env: Option<String>, file: &Path) -> Option<String> {
    let from_env = env
        .map(|ns| ns.trim().to_string())
        .filter(|ns| !ns.is_empty());
    from_env.or_else(|| {
        std::fs::read_to_string(file)
            .ok()
            .map(|ns| ns.trim().to_string())
            .filter(|ns| !ns.is_empty())
    })
}

/// A DNS-1123 label: 1–63 lower-case alphanumerics or `-`, alphanumeric at both ends.
fn check_label(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.len() > 63 {
        return Err("must be 1 to 63 characters");
    }
    let bytes = value.as_bytes();
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let ends_ok = [bytes[0], bytes[bytes.len() - 1]]
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if inner_ok && ends_ok {
        Ok(())
    } else {
        Err("must be lower-case letters, digits and '-', starting and ending alphanumeric")
    }
}

/// A DNS-1123 subdomain: labels joined by `.`, at most 253 characters.
fn check_subdomain(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.len() > 253 {
        return Err("must be 1 to 253 characters");
    }
    value.split('.').try_for_each(check_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_namespace() {
        let plain = ObjectRef::parse("web-tls").unwrap();
        assert_eq!(plain.namespace, None);
        assert_eq!(plain.namespace_or("team"), "team");
        let full = ObjectRef::parse("team/web.tls").unwrap();
        assert_eq!(full.namespace.as_deref(), Some("team"));
        assert_eq!(full.name, "web.tls");
        assert_eq!(full.to_string(), "team/web.tls");
    }

    #[test]
    fn refuses_what_the_api_would() {
        for bad in [
            "",
            "Web",
            "a/b/c",
            "team/",
            "/name",
            "-x",
            "x-",
            "a_b",
            "ns.x/name",
        ] {
            assert!(ObjectRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn own_namespace_prefers_the_variable_then_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("namespace");
        assert_eq!(own_namespace_from(None, &file), None);
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(
            own_namespace_from(None, &file).as_deref(),
            Some("from-file")
        );
        let env = Some("from-env".to_string());
        assert_eq!(own_namespace_from(env, &file).as_deref(), Some("from-env"));
        assert_eq!(
            own_namespace_from(Some(" ".into()), &file).as_deref(),
            Some("from-file")
        );
    }
}
