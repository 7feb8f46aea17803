//! The ACME store objects the chart's `sidecarAccess` makes (issue 15: the sidecar's Role has no
//! `create`): the store Secret, its account Secret and its Lease, made by `helm install` only
//! where they do not exist (an existing store, made by an older sidecar, is left as it is),
//! never rendered again, so a `helm upgrade` cannot overwrite what the sidecar stored, and left
//! by `helm uninstall` (`helm.sh/resource-policy: keep`): they belong to the app.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

use crate::support::cluster::{ChartRelease, Cluster, str_at};

/// The object `kind/name` in `ns`, if it exists.
async fn object(cluster: &Cluster, ns: &str, kind: &str, name: &str) -> Option<Value> {
    let out = cluster
        .kubectl(&["-n", ns, "get", kind, name, "-o", "json"])
        .await;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("JSON"))
}

fn decoded(secret: &Value, key: &str) -> String {
    let encoded = str_at(secret, &format!("/data/{key}"));
    String::from_utf8(BASE64.decode(encoded).expect("base64")).expect("UTF-8")
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_store_objects_are_made_once_and_kept_on_upgrade_and_uninstall() {
    let cluster = Cluster::shared().await;
    let app = cluster.namespace("store-app").await;
    let ns = app.name.as_str();
    // A store an older sidecar created (no helm ownership): the chart must leave it alone,
    // or helm would refuse to install ("invalid ownership metadata") or empty it.
    let old_pair = BASE64.encode("OLD-CERT");
    cluster
        .apply(
            ns,
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{ name: old-acme }}\n\
                 type: kubernetes.io/tls\ndata: {{ tls.crt: {old_pair}, tls.key: {old_pair} }}\n"
            ),
        )
        .await;
    let access = serde_json::json!([{
        "namespace": ns, "serviceAccount": "chat", "acmeStores": ["chat-acme", "old-acme"],
    }]);
    let set = format!("sidecarAccess={access}");
    let release = ChartRelease::install(&cluster, "wss-store", &["--set-json", &set]).await;

    let made = [
        ("secret", "chat-acme"),
        ("secret", "chat-acme-account"),
        ("lease", "chat-acme"),
        ("secret", "old-acme-account"),
        ("lease", "old-acme"),
    ];
    for (kind, name) in made {
        let found = object(&cluster, ns, kind, name).await;
        let found = found.unwrap_or_else(|| panic!("{kind} {name} was not made"));
        assert_eq!(
            str_at(&found, "/metadata/annotations/helm.sh~1resource-policy"),
            "keep",
            "{found}"
        );
    }
    let store = object(&cluster, ns, "secret", "chat-acme").await.unwrap();
    assert_eq!(str_at(&store, "/type"), "kubernetes.io/tls");
    assert_eq!(decoded(&store, "tls.crt"), "");
    let old = object(&cluster, ns, "secret", "old-acme").await.unwrap();
    assert_eq!(
        decoded(&old, "tls.crt"),
        "OLD-CERT",
        "the existing store was changed"
    );
    assert_eq!(
        str_at(&old, "/metadata/annotations/meta.helm.sh~1release-name"),
        "",
        "the existing store was adopted"
    );

    // What a sidecar stores (its merge patch), then an upgrade: nothing is overwritten.
    let stored = BASE64.encode("STORED-CERT");
    let patch = format!(r#"{{"data":{{"tls.crt":"{stored}","acme-state.json":"e30="}}}}"#);
    cluster
        .kubectl_ok(&[
            "-n",
            ns,
            "patch",
            "secret",
            "chat-acme",
            "--type=merge",
            "-p",
            &patch,
        ])
        .await;
    let chart = cluster.root().join("helm/wss-sidecar");
    cluster
        .helm_ok(&[
            "upgrade",
            "wss-sidecar",
            chart.to_str().expect("utf-8 path"),
            "-n",
            &release.ns.name,
            "--reuse-values",
            "--wait",
        ])
        .await;
    let store = object(&cluster, ns, "secret", "chat-acme").await;
    let store = store.expect("the store Secret survives the upgrade");
    assert_eq!(
        decoded(&store, "tls.crt"),
        "STORED-CERT",
        "the upgrade emptied the store"
    );
    assert_eq!(decoded(&store, "acme-state.json"), "{}");
    for (kind, name) in made {
        assert!(
            object(&cluster, ns, kind, name).await.is_some(),
            "{kind} {name} deleted by the upgrade"
        );
    }

    // Uninstall: the RBAC goes, the stores stay.
    drop(release);
    for (kind, name) in made.iter().chain([&("secret", "old-acme")]) {
        assert!(
            object(&cluster, ns, kind, name).await.is_some(),
            "{kind} {name} deleted by helm uninstall"
        );
    }
    let store = object(&cluster, ns, "secret", "chat-acme").await.unwrap();
    assert_eq!(decoded(&store, "tls.crt"), "STORED-CERT");
    let roles = cluster
        .kubectl_ok(&["-n", ns, "get", "roles", "-o", "name"])
        .await;
    assert!(
        roles.trim().is_empty(),
        "the sidecar Role outlived the release: {roles}"
    );
}
