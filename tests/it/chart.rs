//! The Helm chart, checked with the real tools of the one-node cluster (`scripts/check-chart`):
//! `helm lint --strict`, `helm template` and `kubectl apply --dry-run=server` against its
//! apiserver for the default values and every file in `helm/wss-sidecar/ci/` (cert-manager's
//! CRDs installed for the cert-manager values), every object also validated offline against the
//! Kubernetes schemas of the oldest supported version, and `manifests/` equal to the default
//! render.

use std::time::Duration;

use tokio::process::Command;

use crate::support::cluster::Cluster;

/// How long the whole script may take (it takes well under a minute once the cluster is up and
/// cert-manager's module is in the Go module cache).
const CHECK_TIMEOUT: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread")]
async fn chart_lints_renders_validates_and_matches_manifests() {
    let cluster = Cluster::shared().await;
    let root = cluster.root();
    let python = root.join("target/test-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-python-deps (scripts/test does) to install the \
         pinned kubernetes-validate",
        python.display()
    );
    let kubeconfig = cluster.kubeconfig();
    let cluster_dir = kubeconfig
        .parent()
        .expect("the kubeconfig is in the cluster's directory");
    let mut command = Command::new(&python);
    command
        .arg(root.join("scripts/check-chart"))
        .arg("--cluster-dir")
        .arg(cluster_dir)
        .current_dir(root)
        .kill_on_drop(true);
    let output = tokio::time::timeout(CHECK_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("scripts/check-chart did not finish within {CHECK_TIMEOUT:?}"))
        .expect("scripts/check-chart runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scripts/check-chart failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
