//! The decision for one pod: skip it, deny it, or the patch that adds the sidecar.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::annotations::{self, Denial, INJECT, STATUS};
use super::container::{CONTAINER_NAME, SidecarMode, SidecarTemplate, volumes};
use super::patch::PatchBuilder;

/// Namespaces the injector never touches, whatever their pods say: the cluster's own.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The value of [`STATUS`] on an injected pod.
pub const INJECTED: &str = "injected";

/// What to do with a pod.
#[derive(Debug)]
pub enum Outcome {
    /// Admit unchanged, for this reason.
    Skipped(&'static str),
    /// Admit with this patch.
    Patched(json_patch::Patch),
}

/// Decides for `pod`, created in `namespace`.
pub fn inject(pod: &Pod, namespace: &str, template: &SidecarTemplate) -> Result<Outcome, Denial> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(INJECT))
        .is_some_and(|v| v == "true");
    if !labelled {
        return Ok(Outcome::Skipped("not labelled wss-sidecar.io/inject=true"));
    }
    if SYSTEM_NAMESPACES.contains(&namespace) {
        return Ok(Outcome::Skipped("system namespace"));
    }
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return Ok(Outcome::Skipped("hostNetwork pod"));
    }
    let annotations = meta.annotations.clone().unwrap_or_default();
    let has_container = spec.is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == CONTAINER_NAME)
    });
    if annotations.contains_key(STATUS) || has_container {
        return Ok(Outcome::Skipped("already injected"));
    }

    let args = annotations::sidecar_args(&annotations, &template.defaults, template.flags)?;
    let container = to_value(&template.container(&args))?;
    let mut patch = PatchBuilder::default();
    match template.mode {
        SidecarMode::Native => {
            let exists = spec.is_some_and(|s| s.init_containers.is_some());
            patch.add_to_list(&["spec", "initContainers"], exists, true, vec![container]);
        }
        // Last, so `kubectl logs` and `exec` still default to the app.
        SidecarMode::Plain => {
            patch.add_to_list(&["spec", "containers"], true, false, vec![container]);
        }
    }
    let volumes = volumes(&args)
        .iter()
        .map(to_value)
        .collect::<Result<Vec<_>, _>>()?;
    let exists = spec.is_some_and(|s| s.volumes.is_some());
    patch.add_to_list(&["spec", "volumes"], exists, false, volumes);
    patch.add_to_map(
        &["metadata", "annotations"],
        meta.annotations.is_some(),
        STATUS,
        Value::String(INJECTED.into()),
    );
    Ok(match patch.finish() {
        Some(patch) => Outcome::Patched(patch),
        None => Outcome::Skipped("nothing to add"),
    })
}

fn to_value<T: serde::Serialize>(object: &T) -> Result<Value, Denial> {
    serde_json::to_value(object).map_err(|e| Denial(format!("cannot encode the sidecar: {e}")))
}
