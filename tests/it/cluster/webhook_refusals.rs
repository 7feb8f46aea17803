//! The real apiserver relays the injector's refusals and warnings to `kubectl`: a pod whose
//! sidecar cannot run is refused with the annotation named, and a privileged port is admitted
//! with a `Warning:` line. Server-side dry runs: the webhook is `sideEffects: None`, so the
//! apiserver calls it and creates nothing.

use crate::support::cluster::{ChartRelease, Cluster};

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
    let _release = ChartRelease::install(&cluster, "wss-refusals", &[]).await;
    let apps = cluster.namespace("refusals").await;

    let refused = cluster
        .create_dry_run(
            &apps.name,
            &pod("    wss-sidecar.io/acme-domain: echo.example.com\n"),
        )
        .await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("denied the request"), "{stderr}");
    assert!(stderr.contains("wss-sidecar.io/acme-store"), "{stderr}");

    let warned = cluster
        .create_dry_run(
            &apps.name,
            &pod("    wss-sidecar.io/listen: \"[::]:443\"\n"),
        )
        .await;
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(warned.status.success(), "{stderr}");
    assert!(
        stderr.contains("Warning: wss-sidecar.io/listen: port 443 is privileged"),
        "{stderr}"
    );
}
