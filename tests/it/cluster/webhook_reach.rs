//! The apiserver reaches the injector where private and overlay-network clusters allow it
//! (issue 15, acceptance 1): on port 443, which the non-root injector binds thanks to the pod
//! sysctl `net.ipv4.ip_unprivileged_port_start`, and with `hostNetwork: true` on high ports of
//! the node's own address, with the injector pod and the sidecar leaving their UIDs to the
//! image (OpenShift's `restricted-v2`). Each labelled pod goes through the apiserver's call
//! of the webhook via its Service (server-side dry run: `sideEffects: None`, so the webhook
//! is called and nothing is created); `failurePolicy: Fail` means an unreachable injector
//! would refuse it.

use serde_json::Value;

use crate::support::cluster::{ChartRelease, Cluster, NODE_IP, items, str_at};

/// Creates a labelled pod in `ns` as a server-side dry run; returns the pod as admitted.
async fn admitted_pod(cluster: &Cluster, ns: &str) -> Value {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: reach\n  labels:\n    \
               wss-sidecar.io/inject: \"true\"\n  annotations:\n    \
               wss-sidecar.io/upstream-port: \"8080\"\nspec:\n  containers:\n    \
               - name: app\n      image: registry.example/echo:1.0\n";
    let out = cluster.create_dry_run(ns, pod).await;
    assert!(
        out.status.success(),
        "the apiserver refused the labelled pod (webhook unreachable?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kubectl prints the pod as JSON")
}

/// The injected sidecar of an admitted pod; panics when the pod was not injected.
fn sidecar(pod: &Value) -> &Value {
    assert_eq!(
        pod.pointer("/metadata/annotations/wss-sidecar.io~1status")
            .and_then(Value::as_str),
        Some("injected"),
        "not injected: {pod:#}"
    );
    pod.pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["name"] == "wss-sidecar"))
        .unwrap_or_else(|| panic!("no wss-sidecar init container: {pod:#}"))
}

/// The release's one or more injector pods.
async fn injector_pods(cluster: &Cluster, ns: &str) -> Vec<Value> {
    let list = cluster
        .get_json(Some(ns), &["pods", "-l", "wss-sidecar.io/injector=true"])
        .await
        .expect("injector pods");
    items(&list).to_vec()
}

/// The (address, port) pairs of the injector Service's `https` endpoints.
async fn https_endpoints(cluster: &Cluster, ns: &str) -> Vec<(String, i64)> {
    let slices = cluster
        .get_json(Some(ns), &["endpointslices"])
        .await
        .expect("EndpointSlices");
    let mut found = Vec::new();
    for slice in items(&slices) {
        let port = slice["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "https")
            .and_then(|p| p["port"].as_i64());
        for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
            for address in endpoint["addresses"].as_array().into_iter().flatten() {
                if let (Some(a), Some(p)) = (address.as_str(), port) {
                    found.push((a.to_string(), p));
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn webhook_reach_on_port_443() {
    let cluster = Cluster::shared().await;
    let release =
        ChartRelease::install(&cluster, "wss-reach443", &["--set", "ports.webhook=443"]).await;
    let ns = &release.ns.name;

    for pod in injector_pods(&cluster, ns).await {
        let sysctls = &pod["spec"]["securityContext"]["sysctls"];
        assert_eq!(
            sysctls,
            &serde_json::json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": "443"}]),
            "{pod:#}"
        );
        assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 65532);
        assert_eq!(
            pod["spec"]["containers"][0]["ports"][0]["containerPort"],
            443
        );
    }
    // The Service still listens on 443 and leads to the pods' port 443.
    let endpoints = https_endpoints(&cluster, ns).await;
    assert!(
        !endpoints.is_empty() && endpoints.iter().all(|(_, p)| *p == 443),
        "{endpoints:?}"
    );
    let app = cluster.namespace("reach443-app").await;
    let pod = admitted_pod(&cluster, &app.name).await;
    let sc = &sidecar(&pod)["securityContext"];
    assert_eq!(sc["runAsUser"], 65532, "{sc}");
}

#[tokio::test]
async fn webhook_reach_with_host_network() {
    let cluster = Cluster::shared().await;
    let release = ChartRelease::install(
        &cluster,
        "wss-reachhost",
        &[
            "--set",
            "hostNetwork=true,ports.webhook=19443,ports.admin=19090,replicaCount=1",
            "--set",
            "podSecurityContext.runAsUser=null,podSecurityContext.runAsGroup=null,sidecar.uid=null",
        ],
    )
    .await;
    let ns = &release.ns.name;

    let pods = injector_pods(&cluster, ns).await;
    assert_eq!(pods.len(), 1, "one injector pod per node");
    let pod = &pods[0];
    assert_eq!(pod["spec"]["hostNetwork"], true);
    assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirstWithHostNet");
    // The kubelet reports the node's addresses as a hostNetwork pod's IPs
    // (pkg/kubelet/kubelet_pods.go generateAPIPodStatus).
    assert_eq!(str_at(pod, "/status/podIP"), NODE_IP, "{pod:#}");
    let sc = &pod["spec"]["securityContext"];
    assert!(
        sc.get("runAsUser").is_none()
            && sc.get("runAsGroup").is_none()
            && sc["runAsNonRoot"] == true,
        "the injector pod must leave its UID to the image: {sc}"
    );
    // The Service's endpoint is the node's address, on the webhook port.
    assert_eq!(
        https_endpoints(&cluster, ns).await,
        vec![(NODE_IP.to_string(), 19443)]
    );

    let app = cluster.namespace("reachhost-app").await;
    let pod = admitted_pod(&cluster, &app.name).await;
    let sc = &sidecar(&pod)["securityContext"];
    assert!(
        sc.get("runAsUser").is_none()
            && sc.get("runAsGroup").is_none()
            && sc["runAsNonRoot"] == true,
        "sidecar.uid null: the injected container must leave its UID to the image: {sc}"
    );
}
