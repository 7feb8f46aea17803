//! Tests against the one-node cluster (`scripts/cluster`): the real apiserver, controllers,
//! scheduler, kubectl and helm, with the process kubelet and Service proxy, and real WebSocket
//! clients. Each test works in namespaces of its own.
//!
//! - `install`: `helm install` of the chart, injection by the real apiserver, the echo example
//!   through its LoadBalancer, `helm test`, and what `helm uninstall` leaves.
//! - `rotation`: a mounted TLS Secret updated while a WebSocket stays open.
//! - `api_access`: `--cert-secret` and `--acme-store secret:` under the chart's Role.
//! - `contract`: `scripts/cluster` without a usable Go says how to install it.
//! - `dual_stack`: the echo over the pod's IPv6 address (acceptance 4).
//! - `events`: `kubectl describe pod` shows the sidecar's CertificateObtained (acceptance 5).
//! - `realness`: the cluster refuses, routes, isolates and terminates as Kubernetes does.
//! - `webhook_acme`: the ACME example's first certificate behind its LoadBalancer (issue 14).
//! - `webhook_monitoring`: the chart's PodMonitor and ServiceMonitor select and scrape the
//!   injected pods and the injector (issue 15).
//! - `webhook_reach`: injection with the webhook on port 443, and with hostNetwork (issue 15).
//! - `webhook_refusals`: the apiserver relays the injector's refusals and warnings (issue 14).
//! - `webhook_rollout`: a rollout restart under load fails no connection (acceptance 3).
//! - `webhook_rotation`: the webhook's certificate changes (helm upgrade, self-managed CA
//!   rotation, upgrades and applies in self mode) while pods are created: none refused.

mod api_access;
mod contract;
mod dual_stack;
mod install;
mod realness;
mod rotation;
mod webhook_acme;
mod webhook_monitoring;
mod webhook_reach;
mod webhook_refusals;
mod webhook_rollout;
mod webhook_rotation;
mod webhook_skew;
mod webhook_store_objects;

use crate::support::cluster::{Cluster, NODE_IP, SIDECAR_IMAGE, yaml_string};
use crate::support::pebble::{Pebble, PebbleOptions};

/// Pebble on the Node's bridge address, where pods reach it, validating on `tls_port` and
/// `http_port`; its root goes into ConfigMap `pebble-root` in `ns`, for `--acme-ca-root`.
pub async fn pebble_for_pods(cluster: &Cluster, ns: &str, tls_port: u16, http_port: u16) -> Pebble {
    let options = PebbleOptions {
        tls_port,
        http_port,
        eab: None,
    };
    let pebble = Pebble::start_on(NODE_IP, options).await;
    let root = std::fs::read_to_string(&pebble.ca_root).expect("pebble root");
    let config_map = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "pebble-root" },
        "data": { "root.pem": root },
    });
    cluster.apply(ns, &config_map.to_string()).await;
    pebble
}

/// A pod running the sidecar (a native sidecar, as the injector writes it) in front of the
/// demo echo app, with `args` after `proxy --upstream 127.0.0.1:8080`. Its readiness is the
/// sidecar's `/readyz`.
pub fn sidecar_pod(name: &str, labels: &str, service_account: &str, args: &[&str]) -> String {
    SidecarPod::default().yaml(name, labels, service_account, args)
}

/// What a [`sidecar_pod`] may carry besides: YAML list items, indented as in a pod spec.
#[derive(Default)]
pub struct SidecarPod<'a> {
    /// Init containers that run before the sidecar starts.
    pub init_before: &'a str,
    /// The sidecar's volumeMounts.
    pub mounts: &'a str,
    /// The pod's volumes.
    pub volumes: &'a str,
}

impl SidecarPod<'_> {
    /// The pod's YAML; see [`sidecar_pod`].
    pub fn yaml(&self, name: &str, labels: &str, service_account: &str, args: &[&str]) -> String {
        self.render(name, labels, service_account, args, false)
    }

    /// [`SidecarPod::yaml`] with `POD_NAME` and `POD_UID` (downward API) in the sidecar's env,
    /// as the injector writes them, so its Events name the pod by uid and
    /// `kubectl describe pod` shows them.
    pub fn yaml_with_identity(
        &self,
        name: &str,
        labels: &str,
        service_account: &str,
        args: &[&str],
    ) -> String {
        self.render(name, labels, service_account, args, true)
    }

    fn render(
        &self,
        name: &str,
        labels: &str,
        service_account: &str,
        args: &[&str],
        pod_identity: bool,
    ) -> String {
        let args: Vec<String> = ["proxy", "--upstream=127.0.0.1:8080"]
            .iter()
            .chain(args)
            .map(|a| yaml_string(a))
            .collect();
        let mounts = if self.mounts.is_empty() {
            String::new()
        } else {
            format!("      volumeMounts:\n{}", self.mounts)
        };
        let identity = if pod_identity {
            "        - name: POD_NAME\n          valueFrom: { fieldRef: { fieldPath: metadata.name } }\n        - name: POD_UID\n          valueFrom: { fieldRef: { fieldPath: metadata.uid } }\n"
        } else {
            ""
        };
        let volumes = if self.volumes.is_empty() {
            String::new()
        } else {
            format!("  volumes:\n{}", self.volumes)
        };
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{ {labels} }}
spec:
  serviceAccountName: {service_account}
  terminationGracePeriodSeconds: 5
  initContainers:
{init_before}    - name: wss-sidecar
      image: {SIDECAR_IMAGE}
      restartPolicy: Always
      args: [{args}]
      env:
        - name: POD_NAMESPACE
          valueFrom: {{ fieldRef: {{ fieldPath: metadata.namespace }} }}
{identity}      ports:
        - {{ name: wss, containerPort: 8443 }}
        - {{ name: wss-admin, containerPort: 9090 }}
      readinessProbe:
        httpGet: {{ path: /readyz, port: wss-admin }}
        periodSeconds: 1
      securityContext: {{ runAsUser: 65532, runAsGroup: 65532, readOnlyRootFilesystem: true }}
{mounts}  containers:
    - name: app
      image: {SIDECAR_IMAGE}
      args: ["echo", "--listen", "127.0.0.1:8080"]
{volumes}"#,
            init_before = self.init_before,
            args = args.join(", ")
        )
    }
}
