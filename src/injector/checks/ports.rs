//! The sidecar's ports in the pod's one network namespace: the probes must reach the admin
//! port, no other container may declare the sidecar's port names or numbers, and a privileged
//! port gets a warning.

use k8s_openapi::api::core::v1::PodSpec;

use crate::injector::annotations::{Denial, PREFIX, SidecarArgs};
use crate::injector::container::{ADMIN_PORT_NAME, HTTP_PORT_NAME, PORT_NAME};

/// Below this a port is privileged: the non-root sidecar, with every capability dropped, binds
/// it only where the runtime lowers `net.ipv4.ip_unprivileged_port_start`.
const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

pub(super) fn check(spec: &PodSpec, args: &SidecarArgs) -> Result<Vec<String>, Denial> {
    // The kubelet sends an httpGet probe without `host` to the pod's IP, never to loopback
    // (k8s.io/kubernetes pkg/kubelet/prober/prober.go: `host = status.PodIP`).
    if args.admin_loopback && args.admin_port.is_some() {
        return Err(Denial(format!(
            "{}: a loopback address cannot be probed: the kubelet probes the pod's IP; listen \
             on [::] (or 0.0.0.0), or set it to off for no probes",
            args.label("admin-listen")
        )));
    }
    let ours: Vec<(&str, u16, &str)> = [
        (PORT_NAME, Some(args.listen_port), "listen"),
        (ADMIN_PORT_NAME, args.admin_port, "admin-listen"),
        (HTTP_PORT_NAME, args.http_port, "http-listen"),
    ]
    .into_iter()
    .filter_map(|(name, port, flag)| Some((name, port?, flag)))
    .collect();
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for container in containers {
        for port in container.ports.iter().flatten() {
            let shown = port
                .name
                .as_deref()
                .map_or(String::new(), |n| format!(" ({n})"));
            if let Some(name) = port.name.as_deref()
                && [PORT_NAME, ADMIN_PORT_NAME, HTTP_PORT_NAME].contains(&name)
            {
                return Err(Denial(format!(
                    "{PREFIX}inject: container {:?} declares a port named {name:?}, a name of the \
                     sidecar's ports ({PORT_NAME}, {ADMIN_PORT_NAME}, {HTTP_PORT_NAME}): rename it",
                    container.name
                )));
            }
            // Only TCP ports clash with the sidecar's TCP listeners.
            let tcp = port.protocol.as_deref().unwrap_or("TCP") == "TCP";
            if let Some((_, number, flag)) = ours
                .iter()
                .find(|(_, n, _)| tcp && i32::from(*n) == port.container_port)
            {
                return Err(Denial(format!(
                    "{}: port {number} is also declared by container {:?}{shown}, and the pod's \
                     containers share one network: pick another port",
                    args.label(flag),
                    container.name
                )));
            }
        }
    }
    Ok(ours
        .iter()
        .filter(|(_, n, _)| *n < FIRST_UNPRIVILEGED_PORT)
        .map(|(_, n, flag)| {
            format!(
                "{}: port {n} is privileged: the non-root sidecar binds it only if \
                 net.ipv4.ip_unprivileged_port_start <= {n}",
                args.label(flag)
            )
        })
        .collect())
}
