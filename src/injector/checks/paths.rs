//! Files and directories the sidecar uses must exist for it: in its image, or under a mount
//! the injector adds; the ACME store must be one every replica shares.

use k8s_openapi::api::core::v1::{PodSpec, Volume};

use crate::injector::annotations::{CERT_SECRET_VOLUME, Denial, SidecarArgs, TLS_MOUNT_PATH};
use crate::injector::container::MOUNT_VOLUME_PREFIX;
use crate::injector::mounts::{MOUNTS, MountSource, is_under};

/// What the image holds that a flag may point at. The image is distroless/static (see the
/// Dockerfile): its CA certificates are in `/etc/ssl/certs` (`ca-certificates.crt`); the rest is
/// the binary, `/etc/passwd`, `/etc/group` and tzdata, none of them a sidecar input.
pub const IMAGE_DIRS: [&str; 1] = ["/etc/ssl/certs"];

/// The annotation that sets the ACME store.
const ACME_STORE: &str = "wss-sidecar.io/acme-store";

pub(super) fn check(spec: &PodSpec, args: &SidecarArgs) -> Result<(), Denial> {
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    for entry in &args.mounts {
        if let MountSource::Volume(name) = &entry.source
            && !volumes.iter().any(|v| &v.name == name)
        {
            return Err(Denial(format!(
                "{MOUNTS}: volume:{name}:{} names no volume of the pod (declare it in \
                 spec.volumes)",
                entry.path
            )));
        }
    }
    if let Some(clash) = volumes
        .iter()
        .find(|v| v.name.starts_with(MOUNT_VOLUME_PREFIX))
    {
        return Err(Denial(format!(
            "{MOUNTS}: the pod's volume {:?} has a name the injector uses for its mounts \
             ({MOUNT_VOLUME_PREFIX}N): rename it",
            clash.name
        )));
    }

    let mut mounted: Vec<&str> = args.mounts.iter().map(|m| m.path.as_str()).collect();
    if args.cert_secret_volume.is_some() {
        mounted.push(TLS_MOUNT_PATH);
    }
    for (flag, path) in &args.paths {
        let label = args.label(flag);
        let dotted = path.split('/').any(|p| p == "..");
        if !path.starts_with('/') || dotted {
            return Err(Denial(format!(
                "{label}: {path:?} must be an absolute path without .. components"
            )));
        }
        let inside = |dirs: &[&str]| dirs.iter().any(|d| is_under(path, d));
        if !inside(&mounted) && !inside(&IMAGE_DIRS) {
            return Err(Denial(format!(
                "{label}: {path} is not in the sidecar, which sees only its image ({}) and \
                 its mounts ({}): mount the file's Secret or ConfigMap with {MOUNTS} (e.g. \
                 \"secret:NAME:/etc/wss\") or {CERT_SECRET_VOLUME}",
                IMAGE_DIRS.join(", "),
                if mounted.is_empty() {
                    "none".to_string()
                } else {
                    mounted.join(", ")
                },
            )));
        }
    }
    check_store(volumes, args)
}

/// Every replica must share one ACME store: a per-pod directory means an account and an order
/// per pod, and Let's Encrypt allows 5 duplicate certificates per week.
fn check_store(volumes: &[Volume], args: &SidecarArgs) -> Result<(), Denial> {
    let Some(store) = &args.acme_store else {
        return Ok(());
    };
    let shared = "ACME state must be shared by the pod's replicas, or each pod orders its own \
                  certificate: set wss-sidecar.io/acme-store to secret:NAME (a Secret read \
                  through the API) or to a directory under a volume:NAME:/path entry of \
                  wss-sidecar.io/mounts, on a volume every replica shares";
    let label = args.label("acme-store");
    let Some(dir) = store else {
        return Err(Denial(format!("{ACME_STORE} is not set: {shared}")));
    };
    if dir.starts_with("secret:") {
        return Ok(());
    }
    let on_volume = args.mounts.iter().find_map(|m| match &m.source {
        MountSource::Volume(name) if is_under(dir, &m.path) => Some(name),
        _ => None,
    });
    let Some(name) = on_volume else {
        return Err(Denial(format!(
            "{label}: {dir} is not under a volume: mount of {MOUNTS}: {shared}"
        )));
    };
    let volume = volumes.iter().find(|v| &v.name == name);
    let per_pod = volume.and_then(|v| {
        let kinds = [
            ("an emptyDir, which is per pod", v.empty_dir.is_some()),
            (
                "an ephemeral volume, which is per pod",
                v.ephemeral.is_some(),
            ),
            ("a Secret volume, which is read-only", v.secret.is_some()),
            (
                "a ConfigMap volume, which is read-only",
                v.config_map.is_some(),
            ),
            (
                "a projected volume, which is read-only",
                v.projected.is_some(),
            ),
            (
                "a downwardAPI volume, which is read-only",
                v.downward_api.is_some(),
            ),
        ];
        kinds.into_iter().find_map(|(what, is)| is.then_some(what))
    });
    match per_pod {
        Some(what) => Err(Denial(format!(
            "{label}: {dir} is on the pod's volume {name:?}, {what}: {shared}"
        ))),
        None => Ok(()),
    }
}
