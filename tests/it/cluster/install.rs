//! `helm install` of the chart with default values on the real apiserver: the injector runs,
//! its self-managed certificate lands in its Secret and in the webhook's `caBundle`, the real
//! apiserver then calls the webhook for the echo example, whose pods start with the native
//! sidecar, become Ready through the real probes and echo through their LoadBalancer;
//! `helm test` passes; `helm uninstall` leaves exactly what the README says it keeps: the
//! injector's run-time Secret and Lease are owned by the webhook configuration, and the real
//! garbage collector of kube-controller-manager deletes them with it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::cluster::{Cluster, POD_START, items, str_at, ws_connect_retrying};
use crate::support::{LeafSpec, TestCa, assert_echo, client_config, install_crypto_provider};

/// What `helm uninstall` leaves in the release's namespace (README, "Uninstalling"): nothing.
/// The self-managed certificate's Secret and Lease, which the injector creates at run time,
/// go with the MutatingWebhookConfiguration that owns them.
const KEPT_AFTER_UNINSTALL: [&str; 0] = [];

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_injects_the_echo_example_and_uninstall_keeps_what_the_readme_says() {
    install_crypto_provider();
    let cluster = Cluster::shared().await;
    let system = cluster.namespace("wss-system").await;
    let ns = system.name.as_str();
    let chart = cluster.root().join("helm/wss-sidecar");
    let chart = chart.to_str().expect("utf-8 path");
    cluster
        .helm_ok(&[
            "install",
            "wss-sidecar",
            chart,
            "-n",
            ns,
            "--wait",
            "--timeout",
            "5m",
        ])
        .await;
    cluster
        .wait_ready_pods(ns, "wss-sidecar.io/injector=true", 2)
        .await;

    // The self-managed certificate: its CA in the Secret and in the webhook's caBundle.
    let secret = cluster
        .wait_json(
            Some(ns),
            &["secret", "wss-sidecar-injector-tls"],
            POD_START,
            |s| !str_at(s, "/data/ca.crt").is_empty(),
        )
        .await;
    let ca = str_at(&secret, "/data/ca.crt").to_string();
    let webhook = cluster
        .get_json(
            None,
            &["mutatingwebhookconfiguration", "wss-sidecar-injector"],
        )
        .await
        .expect("the webhook configuration");
    let uid = str_at(&webhook, "/metadata/uid");
    for object in [
        "secret/wss-sidecar-injector-tls",
        "lease/wss-sidecar-injector-cert",
    ] {
        let found = cluster
            .get_json(Some(ns), &[object])
            .await
            .unwrap_or_else(|| panic!("{object} exists"));
        let owners = &found["metadata"]["ownerReferences"];
        assert_eq!(
            owners[0]["kind"], "MutatingWebhookConfiguration",
            "{object}: {found:#}"
        );
        assert_eq!(owners[0]["uid"], uid, "{object}: {found:#}");
    }
    cluster
        .wait_json(
            None,
            &[
                "mutatingwebhookconfigurations",
                "-l",
                "app.kubernetes.io/instance=wss-sidecar",
            ],
            POD_START,
            |list| {
                items(list).len() == 1
                    && str_at(&items(list)[0], "/webhooks/0/clientConfig/caBundle") == ca
            },
        )
        .await;

    // The echo example: the real apiserver calls the webhook for its pods.
    let echo = cluster.namespace("echo").await;
    let test_ca = TestCa::new("echo test CA");
    let pair = test_ca.issue(LeafSpec::new(&["echo.test"]));
    cluster.put_tls_secret(&echo.name, "echo-tls", &pair).await;
    cluster
        .apply_file_in(&echo.name, "manifests/examples/echo.yaml")
        .await;
    let pods = cluster.wait_ready_pods(&echo.name, "app=echo", 2).await;
    for pod in &pods {
        let first = &pod["spec"]["initContainers"][0];
        assert_eq!(first["name"], "wss-sidecar", "{pod:#}");
        assert_eq!(first["restartPolicy"], "Always", "{pod:#}");
        assert_eq!(
            str_at(pod, "/metadata/annotations/wss-sidecar.io~1status"),
            "injected"
        );
    }
    let ip = cluster.load_balancer_ip(&echo.name, "echo").await;
    let config = client_config(&[test_ca.cert_der()], &[]);
    let mut ws = ws_connect_retrying(
        SocketAddr::new(ip, 443),
        "echo.test",
        config,
        Duration::from_secs(30),
    )
    .await;
    assert_echo(&mut ws, Message::text("hello through the load balancer")).await;
    drop(ws);

    cluster
        .helm_ok(&["test", "wss-sidecar", "-n", ns, "--timeout", "3m"])
        .await;

    cluster
        .helm_ok(&[
            "uninstall",
            "wss-sidecar",
            "-n",
            ns,
            "--wait",
            "--timeout",
            "3m",
        ])
        .await;
    let kept: BTreeSet<String> = KEPT_AFTER_UNINSTALL.iter().map(|s| s.to_string()).collect();
    let resources = namespaced_resources(&cluster).await;
    let mut left = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + POD_START;
    while tokio::time::Instant::now() < deadline {
        left = objects_in(&cluster, ns, &resources).await;
        if left == kept {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(left, kept, "objects left in {ns} after helm uninstall");
    let cluster_scoped = cluster
        .kubectl_ok(&[
            "get",
            "mutatingwebhookconfigurations,clusterroles,clusterrolebindings",
            "-l",
            "app.kubernetes.io/instance=wss-sidecar",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(cluster_scoped.trim(), "", "cluster-scoped objects left");
}

/// Every namespaced resource that can be listed, but events (which record what happened).
async fn namespaced_resources(cluster: &Cluster) -> String {
    let names = cluster
        .kubectl_ok(&[
            "api-resources",
            "--namespaced",
            "--verbs=list",
            "-o",
            "name",
        ])
        .await;
    names
        .lines()
        .filter(|r| !r.is_empty() && !r.starts_with("events"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `Kind/name` of every object in `ns`, but what Kubernetes puts in every namespace.
async fn objects_in(cluster: &Cluster, ns: &str, resources: &str) -> BTreeSet<String> {
    let Some(list) = cluster.get_json(Some(ns), &[resources]).await else {
        return BTreeSet::new();
    };
    items(&list)
        .iter()
        .map(|o: &Value| format!("{}/{}", str_at(o, "/kind"), str_at(o, "/metadata/name")))
        .filter(|o| o != "ServiceAccount/default" && o != "ConfigMap/kube-root-ca.crt")
        .collect()
}
