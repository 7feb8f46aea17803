//! The real apiserver relays the injector's refusals and warnings to `kubectl`: a pod whose
//! sidecar cannot run is refused with the annotation named, and a privileged port is admitted
//! with a `Warning:` line. Server-side dry runs: the webhook is `sideEffects: None`, so the
//! apiserver calls it and creates nothing.

use std::time::Duration;

use crate::support::cluster::{Cluster, Namespace};

/// `helm install --wait` of the chart on a busy two-core machine.
const INSTALL: Duration = Duration::from_secs(300);

/// A labelled pod with `annotations` (YAML lines, indented for `metadata.annotations`).
fn pod(annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: refusals\n  labels:\n    \
         wss-sidecar.io/inject: \"true\"\n  annotations:\n{annotations}spec:\n  containers:\n    \
         - name: app\n      image: registry.example/echo:1.0\n"
    )
}

#[tokio::test]
async fn the_apiserver_relays_refusals_and_warnings() {
    let cluster = Cluster::shared().await;
    let _release = Release::install(&cluster).await;
    let apps = cluster.namespace("refusals").await;
    let dry_run = ["create", "--dry-run=server", "-n", &apps.name, "-f", "-"];

    let refused = cluster
        .kubectl_stdin(
            &dry_run,
            &pod("    wss-sidecar.io/acme-domain: echo.example.com\n"),
        )
        .await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("denied the request"), "{stderr}");
    assert!(stderr.contains("wss-sidecar.io/acme-store"), "{stderr}");

    let warned = cluster
        .kubectl_stdin(&dry_run, &pod("    wss-sidecar.io/listen: \"[::]:443\"\n"))
        .await;
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(warned.status.success(), "{stderr}");
    assert!(
        stderr.contains("Warning: wss-sidecar.io/listen: port 443 is privileged"),
        "{stderr}"
    );
}

/// The chart installed in a namespace of its own, uninstalled on drop (the webhook is
/// cluster-wide: the `cluster-webhook` test group runs one such test at a time).
struct Release {
    helm: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
    ns: Namespace,
}

impl Release {
    async fn install(cluster: &Cluster) -> Release {
        let release = Release {
            helm: cluster.root().join("target/cluster/bin/helm"),
            kubeconfig: cluster.kubeconfig(),
            ns: cluster.namespace("wss-refusals").await,
        };
        let chart = cluster.root().join("helm/wss-sidecar");
        let timeout = format!("{}s", INSTALL.as_secs());
        cluster
            .helm_ok(&[
                "install",
                "wss-sidecar",
                chart.to_str().expect("utf-8 path"),
                "-n",
                &release.ns.name,
                "--wait",
                "--timeout",
                &timeout,
            ])
            .await;
        cluster
            .wait_ready_pods(&release.ns.name, "wss-sidecar.io/injector=true", 2)
            .await;
        release
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let status = std::process::Command::new(&self.helm)
            .args(["uninstall", "wss-sidecar", "-n", &self.ns.name, "--wait"])
            .env("KUBECONFIG", &self.kubeconfig)
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            eprintln!(
                "helm uninstall wss-sidecar -n {} failed: {status:?}",
                self.ns.name
            );
        }
    }
}
