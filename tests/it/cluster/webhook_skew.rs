//! Version skew on the cluster: the chart with `sidecar.image.tag=0.1.0` under this injector
//! injects only 0.1.0's flags, probes and hooks (the pod runs and becomes Ready on them), the
//! apiserver relays the warning saying what was left out, and a pod annotated with a newer flag
//! is refused naming it. (The cluster runs this build's binary for every `wss-sidecar` image,
//! so what is checked is the injected spec, not a 0.1.0 binary.)

use serde_json::Value;

use crate::support::cluster::{ChartRelease, Cluster, SIDECAR_IMAGE, str_at};

/// The recorded flags of 0.1.0 (`src/injector/releases/0.1.0.flags`).
fn old_flags() -> Vec<String> {
    include_str!("../../../src/injector/releases/0.1.0.flags")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

fn pod(name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    \
         wss-sidecar.io/inject: \"true\"\n  annotations:\n    \
         wss-sidecar.io/upstream-port: \"8080\"\n{annotations}spec:\n  \
         terminationGracePeriodSeconds: 30\n  containers:\n    - name: app\n      \
         image: {SIDECAR_IMAGE}\n      args: [\"echo\", \"--listen\", \"127.0.0.1:8080\"]\n"
    )
}

#[tokio::test]
async fn webhook_skew_an_older_sidecar_image_gets_only_its_flags() {
    let cluster = Cluster::shared().await;
    let _release =
        ChartRelease::install(&cluster, "wss-skew", &["--set", "sidecar.image.tag=0.1.0"]).await;
    let apps = cluster.namespace("skew").await;

    let created = cluster
        .kubectl_stdin(&["create", "-n", &apps.name, "-f", "-"], &pod("old", ""))
        .await;
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert!(created.status.success(), "{stderr}");
    assert!(
        stderr.contains("Warning: the sidecar image is wss-sidecar 0.1.0")
            && stderr.contains("left out --lame-duck=10s --redirect-port=443"),
        "{stderr}"
    );
    let ready = cluster
        .wait_ready_pods(&apps.name, "wss-sidecar.io/inject=true", 1)
        .await;
    let sidecar = ready[0]["spec"]["initContainers"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["name"] == "wss-sidecar"))
        .unwrap_or_else(|| panic!("no injected sidecar: {:#}", ready[0]));
    assert!(
        str_at(sidecar, "/image").ends_with("/wss-sidecar:0.1.0"),
        "{sidecar}"
    );
    let old = old_flags();
    for arg in sidecar["args"].as_array().expect("args").iter().skip(1) {
        let flag = arg.as_str().unwrap_or("").trim_start_matches("--");
        let flag = flag.split('=').next().unwrap_or(flag);
        assert!(
            old.iter().any(|f| f == flag),
            "--{flag} is not a 0.1.0 flag: {sidecar}"
        );
    }
    assert_eq!(str_at(sidecar, "/startupProbe/httpGet/path"), "/healthz");
    assert!(
        sidecar.get("lifecycle").is_none_or(Value::is_null),
        "{sidecar}"
    );

    let refused = cluster
        .create_dry_run(
            &apps.name,
            &pod("newer", "    wss-sidecar.io/lame-duck: 5s\n"),
        )
        .await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("denied the request")
            && stderr.contains("wss-sidecar.io/lame-duck")
            && stderr.contains("wss-sidecar 0.1.0"),
        "{stderr}"
    );
}
