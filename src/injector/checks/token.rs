//! Flags that need the Kubernetes API (`cert-secret`, an `acme-store` Secret) need a service
//! account token in the sidecar.
//!
//! Whether the token is mounted is decided by the ServiceAccount admission plugin: the pod's
//! `automountServiceAccountToken` wins over the ServiceAccount's, and both unset means yes
//! (k8s.io/kubernetes plugin/pkg/admission/serviceaccount/admission.go, `shouldAutomount`).
//! The injector sees only the pod: reading the ServiceAccount would need RBAC to read every
//! namespace's ServiceAccounts and an API call inside the webhook's 10 s. So only the pod's own
//! `false` is refused here; a pod that leaves it unset under a ServiceAccount that says `false`
//! is admitted, and its sidecar exits at start-up with an error naming the flag.

use k8s_openapi::api::core::v1::PodSpec;

use crate::injector::annotations::{Denial, SidecarArgs};
use crate::injector::mounts::{MOUNTS, MountSource, is_under};

/// Where the kubelet mounts the token, and where kube's in-cluster config reads it.
pub const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

pub(super) fn check(spec: &PodSpec, args: &SidecarArgs) -> Result<(), Denial> {
    let Some(flag) = args.api_flag else {
        return Ok(());
    };
    if spec.automount_service_account_token != Some(false) {
        return Ok(());
    }
    // A token the pod projects itself, mounted into the sidecar, serves as well.
    let own_token = args
        .mounts
        .iter()
        .any(|m| matches!(m.source, MountSource::Volume(_)) && is_under(TOKEN_DIR, &m.path));
    if own_token {
        return Ok(());
    }
    Err(Denial(format!(
        "{}: needs the Kubernetes API, but the pod sets automountServiceAccountToken: false, so \
         the sidecar has no token: drop that, or mount a projected token volume with {MOUNTS} \
         (volume:NAME:{TOKEN_DIR})",
        args.label(flag)
    )))
}
