//! What the pod as a whole must be for the injected sidecar to run, beyond its own flags: the
//! refusals (each naming the annotation to change) and the admission warnings.
//!
//! - `paths`: every file the sidecar reads is in its image or under a mount it gets, and the
//!   ACME store is shared between the replicas.
//! - `ports`: the probes can reach the admin port, no app container declares the sidecar's
//!   ports, and a privileged port gets a warning.
//! - `token`: flags that need the Kubernetes API get a service account token.

mod paths;
mod ports;
mod token;

use k8s_openapi::api::core::v1::{Pod, PodSpec};

use super::annotations::{Denial, SidecarArgs};

/// Checks `pod` for the sidecar `args` describe: the warnings to send with the admission, or
/// the first reason to refuse it.
pub fn check(pod: &Pod, args: &SidecarArgs) -> Result<Vec<String>, Denial> {
    let empty = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&empty);
    paths::check(spec, args)?;
    token::check(spec, args)?;
    ports::check(spec, args)
}

#[cfg(test)]
mod tests;
