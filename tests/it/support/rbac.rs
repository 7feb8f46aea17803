//! RBAC as the API server's authorizer applies it, for the fake API server: a Role's rules,
//! what a request asks for (verb, API group, resource, name), and the example Role the
//! sidecar's documentation gives (`manifests/examples/sidecar-rbac.yaml`).

use std::collections::BTreeMap;
use std::path::Path;

use hyper::{Method, Response, StatusCode};
use serde_json::Value;

use super::fake_api::Body;
use super::fake_api_objects::{selected_name, status};

/// One rule of a Role: what it allows.
#[derive(Debug, Clone)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub verbs: Vec<String>,
}

impl Rule {
    /// The rules of a Role object (`rules:` as the API takes them).
    pub fn from_role(role: &Value) -> Vec<Rule> {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        role["rules"]
            .as_array()
            .expect("a Role with rules")
            .iter()
            .map(|r| Rule {
                api_groups: strings(&r["apiGroups"]),
                resources: strings(&r["resources"]),
                resource_names: strings(&r["resourceNames"]),
                verbs: strings(&r["verbs"]),
            })
            .collect()
    }

    pub(super) fn allows(&self, request: &Access) -> bool {
        let has = |list: &[String], item: &str| list.iter().any(|x| x == item || x == "*");
        has(&self.verbs, request.verb)
            && has(&self.api_groups, &request.group)
            && has(&self.resources, &request.resource)
            && (self.resource_names.is_empty()
                || request
                    .name
                    .as_ref()
                    .is_some_and(|n| self.resource_names.contains(n)))
    }
}

/// What a request asks to do, as the RBAC authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub verb: &'static str,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// A Role in force: its namespace and rules, which rules were used, what was refused.
pub(super) struct Rbac {
    pub(super) namespace: String,
    pub(super) rules: Vec<Rule>,
    /// A bound ClusterRole's rules: for any namespace, and cluster-scoped objects.
    pub(super) cluster_rules: Vec<Rule>,
    pub(super) used: Vec<bool>,
    pub(super) denied: Vec<Access>,
}

/// The namespace and rules of the Role in `manifests/examples/sidecar-rbac.yaml`.
pub fn example_role() -> (String, Vec<Rule>) {
    let role = manifest_object("manifests/examples/sidecar-rbac.yaml", "Role");
    let namespace = role["metadata"]["namespace"].as_str().expect("namespace");
    (namespace.to_string(), Rule::from_role(&role))
}

/// The injector's RBAC as the chart installs it (`manifests/wss-sidecar.yaml`, its default
/// render): the Role's namespace and rules, and the ClusterRole's rules.
pub fn injector_roles() -> (String, Vec<Rule>, Vec<Rule>) {
    const MANIFEST: &str = "manifests/wss-sidecar.yaml";
    let role = manifest_object(MANIFEST, "Role");
    let namespace = role["metadata"]["namespace"].as_str().expect("namespace");
    let cluster_role = manifest_object(MANIFEST, "ClusterRole");
    (
        namespace.to_string(),
        Rule::from_role(&role),
        Rule::from_role(&cluster_role),
    )
}

/// The first object of `kind` in the YAML file `path` (relative to the repository).
fn manifest_object(path: &str, kind: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&path).expect("the manifest");
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let object: Value = serde::Deserialize::deserialize(doc).expect("YAML");
        if object["kind"] == kind {
            return object;
        }
    }
    panic!("no {kind} in {}", path.display());
}

/// What `method` on `path` asks for, in RBAC terms; `None` for paths outside the API.
pub(super) fn access(
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
) -> Option<Access> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let (resource, object) = match rest {
        [resource] => (resource.to_string(), None),
        [resource, name] => (resource.to_string(), Some(name.to_string())),
        _ => return None,
    };
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match (method.as_str(), &object) {
        ("GET", Some(_)) => "get",
        ("GET", None) if watching => "watch",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => "unknown",
    };
    let name = object.or_else(|| {
        matches!(verb, "list" | "watch")
            .then(|| selected_name(query))
            .flatten()
    });
    Some(Access {
        verb,
        group,
        resource,
        namespace,
        name,
    })
}

/// The 403 `rbac` gives a request its rules do not allow (recorded); `None` when allowed
/// (the rule used is recorded).
pub(super) fn authorize(
    rbac: &mut Rbac,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
) -> Option<Response<Body>> {
    let request = access(method, path, query)?;
    if request.namespace.as_deref() == Some(rbac.namespace.as_str())
        && let Some(i) = rbac.rules.iter().position(|r| r.allows(&request))
    {
        rbac.used[i] = true;
        return None;
    }
    if let Some(i) = rbac.cluster_rules.iter().position(|r| r.allows(&request)) {
        rbac.used[rbac.rules.len() + i] = true;
        return None;
    }
    let message = format!(
        "{} {:?} is forbidden: User \"system:serviceaccount:{}:test\" cannot {} resource {:?} \
         in API group {:?} in the namespace {:?}",
        request.resource,
        request.name.clone().unwrap_or_default(),
        rbac.namespace,
        request.verb,
        request.resource,
        request.group,
        request.namespace.clone().unwrap_or_default()
    );
    rbac.denied.push(request);
    Some(status(StatusCode::FORBIDDEN, "Forbidden", message))
}
