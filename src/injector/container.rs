//! The injected container and its volumes: locked down, probed, sized from the injector's flags.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::annotations::{SidecarArgs, TLS_MOUNT_PATH};
use super::flags::ProxyFlags;
use super::mounts::MountSource;
use super::skew::SidecarRelease;

/// How the sidecar joins the pod (`--sidecar-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SidecarMode {
    /// A native sidecar (Kubernetes 1.29+): the first init container, `restartPolicy: Always`,
    /// with a startup probe, so the app starts after TLS is ready and Jobs still complete.
    Native,
    /// A plain container appended to `containers`, for clusters older than 1.29.
    Plain,
}

/// The injected container's name; a pod holding a container of this name is already injected.
pub const CONTAINER_NAME: &str = "wss-sidecar";
/// The volume `cert-secret-volume` adds.
pub const TLS_VOLUME: &str = "wss-sidecar-tls";
/// The volumes `wss-sidecar.io/mounts` adds for its Secrets and ConfigMaps: this and the
/// entry's index. (A per-pod ACME state volume is gone: each pod would order on its own, see
/// `checks::paths`.)
pub const MOUNT_VOLUME_PREFIX: &str = "wss-sidecar-mount-";
/// The name of the TLS port, for the app's Service `targetPort`.
pub const PORT_NAME: &str = "wss";
/// The name of the admin port the probes use.
pub const ADMIN_PORT_NAME: &str = "wss-admin";
/// The name of the `--http-listen` port (HTTP-01, redirects), for a Service on port 80.
/// Prefixed like the others so it never clashes with an app's own `http` port.
pub const HTTP_PORT_NAME: &str = "wss-http";

/// The startup probe (`/startupz`: listeners bound, certificate sources started; `/healthz` on
/// a 0.1.0 sidecar, see `skew`) waits for a start, never for a CA: probed every second, so the
/// app starts within about a second of the sidecar, and restarted after 30 s without binding
/// its ports. (An ACME order runs while the pod is started; `/readyz` says when it has a
/// certificate.)
const STARTUP_PERIOD_SECONDS: i32 = 1;
const STARTUP_FAILURE_THRESHOLD: i32 = 30;

/// Where the image keeps the binary (Dockerfile), for the preStop `exec` (no shell in the image).
pub const BINARY: &str = "/usr/local/bin/wss-sidecar";

/// Proxy flags every injected sidecar gets unless `--sidecar-default` or an annotation sets them:
/// a lame duck long enough for kube-proxy, load balancers and Ingress controllers to drop the
/// endpoint, a drain inside the default 30 s grace period together with it, and redirects to
/// the Service's public port.
pub const INJECTED_DEFAULTS: [(&str, &str); 3] = [
    ("drain-timeout", "15s"),
    ("lame-duck", "10s"),
    ("redirect-port", "443"),
];

/// What every injected container shares, from the injector's flags.
#[derive(Debug, Clone)]
pub struct SidecarTemplate {
    /// The image.
    pub image: String,
    /// Its pull policy.
    pub pull_policy: String,
    /// Native sidecar or plain container.
    pub mode: SidecarMode,
    /// User and group ID; `None` leaves both out (the image's USER, OpenShift's assigned UID).
    pub uid: Option<i64>,
    /// Requests, by resource name; empty values are left out.
    pub requests: BTreeMap<String, String>,
    /// Limits, by resource name; empty values are left out.
    pub limits: BTreeMap<String, String>,
    /// Proxy flags every sidecar gets unless an annotation says otherwise.
    pub defaults: Vec<(String, String)>,
    /// The proxy's flags, which annotations are checked against.
    pub flags: &'static ProxyFlags,
    /// The API server knows the `preStop: sleep` action (1.30+): app containers get one.
    pub prestop_sleep: bool,
    /// The sidecar image's release: the flags, startup probe and preStop hook it understands.
    pub release: SidecarRelease,
}

impl SidecarTemplate {
    /// The container for one pod.
    pub fn container(&self, args: &SidecarArgs) -> Container {
        let probe = |path: &str| {
            args.admin_port.map(|_| Probe {
                http_get: Some(HTTPGetAction {
                    path: Some(path.into()),
                    port: IntOrString::String(ADMIN_PORT_NAME.into()),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let mut ports = vec![port(PORT_NAME, args.listen_port)];
        ports.extend(args.admin_port.map(|p| port(ADMIN_PORT_NAME, p)));
        ports.extend(args.http_port.map(|p| port(HTTP_PORT_NAME, p)));
        let native = self.mode == SidecarMode::Native;
        Container {
            name: CONTAINER_NAME.into(),
            image: Some(self.image.clone()),
            image_pull_policy: Some(self.pull_policy.clone()),
            args: Some(args.args.clone()),
            env: Some(vec![
                field_env("POD_NAMESPACE", "metadata.namespace"),
                field_env("POD_NAME", "metadata.name"),
                // Events name the pod by uid too: `kubectl describe pod` lists only events whose
                // `regarding.uid` is the pod's.
                field_env("POD_UID", "metadata.uid"),
            ]),
            ports: Some(ports),
            restart_policy: native.then(|| "Always".into()),
            // In native mode every container's preStop starts at once when the pod is deleted,
            // and the sidecar gets SIGTERM only after the app has exited (`killContainer` runs
            // the preStop, then `waitForTurn`: pkg/kubelet/kuberuntime/kuberuntime_container.go,
            // kuberuntime_termination_order.go): the hook starts the lame duck at deletion. Without an admin port, SIGTERM starts it. `exec`: no shell needed.
            // A release without the `lame-duck` command gets no hook (`skew`).
            lifecycle: args
                .admin_port
                .filter(|_| self.release.lame_duck_hook())
                .map(|port| Lifecycle {
                    pre_stop: Some(LifecycleHandler {
                        exec: Some(ExecAction {
                            command: Some(vec![
                                BINARY.into(),
                                "lame-duck".into(),
                                format!("--admin=127.0.0.1:{port}"),
                            ]),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            startup_probe: native
                .then(|| probe(self.release.startup_path()))
                .flatten()
                .map(|p| Probe {
                    period_seconds: Some(STARTUP_PERIOD_SECONDS),
                    failure_threshold: Some(STARTUP_FAILURE_THRESHOLD),
                    ..p
                }),
            readiness_probe: probe("/readyz"),
            liveness_probe: probe("/healthz"),
            resources: Some(ResourceRequirements {
                requests: quantities(&self.requests),
                limits: quantities(&self.limits),
                ..Default::default()
            }),
            security_context: Some(self.security_context()),
            volume_mounts: mounts(args),
            ..Default::default()
        }
    }

    fn security_context(&self) -> SecurityContext {
        SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: self.uid,
            run_as_group: self.uid,
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The volumes the container mounts.
pub fn volumes(args: &SidecarArgs) -> Vec<Volume> {
    let mut volumes = Vec::new();
    if let Some(secret) = &args.cert_secret_volume {
        volumes.push(Volume {
            name: TLS_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    for (i, entry) in args.mounts.iter().enumerate() {
        let name = format!("{MOUNT_VOLUME_PREFIX}{i}");
        match &entry.source {
            MountSource::Secret(secret) => volumes.push(Volume {
                name,
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            MountSource::ConfigMap(map) => volumes.push(Volume {
                name,
                config_map: Some(ConfigMapVolumeSource {
                    name: map.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            // The pod's own: already declared.
            MountSource::Volume(_) => {}
        }
    }
    volumes
}

/// Whole-directory mounts only: a subPath mount never sees a Secret's updates.
fn mounts(args: &SidecarArgs) -> Option<Vec<VolumeMount>> {
    let mut mounts = Vec::new();
    if args.cert_secret_volume.is_some() {
        mounts.push(mount(TLS_VOLUME, TLS_MOUNT_PATH, true));
    }
    for (i, entry) in args.mounts.iter().enumerate() {
        mounts.push(match &entry.source {
            MountSource::Volume(volume) => mount(volume, &entry.path, false),
            _ => mount(&format!("{MOUNT_VOLUME_PREFIX}{i}"), &entry.path, true),
        });
    }
    (!mounts.is_empty()).then_some(mounts)
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(number),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn field_env(name: &str, field: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn quantities(values: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!values.is_empty()).then(|| {
        values
            .iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}
