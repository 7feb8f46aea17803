//! The webhook refuses pods whose sidecar cannot run, each with a message naming the annotation
//! to change, and warns about what only the runtime decides; driven through the real handler
//! over HTTPS, as the API server calls it.

use base64::Engine;
use serde_json::{Value, json};

use crate::support::injector::{TestInjector, admission_review};

fn pod(annotations: Value, spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "echo-7d9c-",
            "namespace": "apps",
            "labels": {"app": "echo", "wss-sidecar.io/inject": "true"},
            "annotations": annotations
        },
        "spec": spec
    })
}

fn app_spec() -> Value {
    json!({"containers": [{"name": "app", "image": "registry.example/echo:1.0"}]})
}

/// The `response` of the review of `pod`.
async fn review(injector: &TestInjector, pod: &Value) -> Value {
    let body = serde_json::to_vec(&admission_review("u-9", "apps", pod)).unwrap();
    let (status, body) = injector.request("POST", "/mutate", &body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).expect("JSON");
    answer["response"].clone()
}

/// Asserts a refusal whose message names `annotation`; returns the message.
async fn refused(injector: &TestInjector, pod: &Value, annotation: &str) -> String {
    let response = review(injector, pod).await;
    assert_eq!(response["allowed"], false, "expected a refusal: {response}");
    assert!(response.get("patch").is_none(), "{response}");
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(annotation),
        "the message must name {annotation}: {message}"
    );
    message.to_string()
}

/// Asserts an admission; returns the patched pod and the response.
async fn admitted(injector: &TestInjector, pod: &Value) -> (Value, Value) {
    let response = review(injector, pod).await;
    assert_eq!(
        response["allowed"], true,
        "expected an admission: {response}"
    );
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&decoded).unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).expect("the patch applies");
    (patched, response)
}

fn sidecar(patched: &Value) -> &Value {
    let sidecar = &patched["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "wss-sidecar", "{patched}");
    sidecar
}

#[tokio::test]
async fn acme_without_a_shared_store_is_refused_naming_acme_store() {
    let injector = TestInjector::start(&[]).await;
    let acme = ("wss-sidecar.io/acme-domain", "echo.example.com");
    // No store at all: today's per-pod emptyDir would order once per pod.
    let message = refused(
        &injector,
        &pod(json!({acme.0: acme.1}), app_spec()),
        "wss-sidecar.io/acme-store",
    )
    .await;
    assert!(message.contains("secret:"), "{message}");
    // A directory that is not on a pod volume.
    refused(
        &injector,
        &pod(
            json!({acme.0: acme.1, "wss-sidecar.io/acme-store": "/var/lib/wss-sidecar"}),
            app_spec(),
        ),
        "wss-sidecar.io/acme-store",
    )
    .await;
    // A directory under a read-only Secret mount is not a store either.
    refused(
        &injector,
        &pod(
            json!({acme.0: acme.1, "wss-sidecar.io/acme-store": "/etc/wss/acme",
                   "wss-sidecar.io/mounts": "secret:acme:/etc/wss"}),
            app_spec(),
        ),
        "wss-sidecar.io/acme-store",
    )
    .await;
    // A directory on an emptyDir: still one store per pod.
    let mut spec = app_spec();
    spec["volumes"] = json!([{"name": "state", "emptyDir": {}}]);
    let message = refused(
        &injector,
        &pod(
            json!({acme.0: acme.1, "wss-sidecar.io/acme-store": "/var/lib/acme",
                   "wss-sidecar.io/mounts": "volume:state:/var/lib/acme"}),
            spec,
        ),
        "wss-sidecar.io/acme-store",
    )
    .await;
    assert!(message.contains("emptyDir"), "{message}");
    injector.stop().await;
}

#[tokio::test]
async fn a_shared_acme_store_is_admitted_without_a_per_pod_volume() {
    let injector = TestInjector::start(&[]).await;
    let (patched, _) = admitted(
        &injector,
        &pod(
            json!({"wss-sidecar.io/acme-domain": "echo.example.com",
                   "wss-sidecar.io/acme-store": "secret:echo-acme"}),
            app_spec(),
        ),
    )
    .await;
    assert!(patched["spec"].get("volumes").is_none(), "{patched}");
    assert!(sidecar(&patched).get("volumeMounts").is_none(), "{patched}");

    let mut spec = app_spec();
    spec["volumes"] = json!([{"name": "acme", "persistentVolumeClaim": {"claimName": "acme"}}]);
    let (patched, _) = admitted(
        &injector,
        &pod(
            json!({"wss-sidecar.io/acme-domain": "echo.example.com",
                   "wss-sidecar.io/acme-store": "/var/lib/acme/echo",
                   "wss-sidecar.io/mounts": "volume:acme:/var/lib/acme"}),
            spec.clone(),
        ),
    )
    .await;
    assert_eq!(
        patched["spec"]["volumes"], spec["volumes"],
        "no volume added"
    );
    assert_eq!(
        sidecar(&patched)["volumeMounts"],
        json!([{"name": "acme", "mountPath": "/var/lib/acme", "readOnly": false}])
    );
    injector.stop().await;
}

#[tokio::test]
async fn a_file_outside_the_image_and_the_mounts_is_refused_naming_its_annotation() {
    let injector = TestInjector::start(&[]).await;
    for (annotation, path) in [
        ("wss-sidecar.io/client-ca", "/etc/app/ca.pem"),
        ("wss-sidecar.io/acme-ca-root", "/etc/pebble/root.pem"),
        ("wss-sidecar.io/acme-eab-hmac-key-file", "/etc/eab/key"),
        ("wss-sidecar.io/cert-dir", "/etc/tls"),
    ] {
        let mut annotations = json!({annotation: path});
        if annotation.contains("acme") {
            annotations["wss-sidecar.io/acme-domain"] = json!("echo.example.com");
            annotations["wss-sidecar.io/acme-store"] = json!("secret:echo-acme");
            annotations["wss-sidecar.io/acme-eab-kid"] = json!("kid");
        }
        let message = refused(&injector, &pod(annotations, app_spec()), annotation).await;
        assert!(message.contains("wss-sidecar.io/mounts"), "{message}");
    }
    // In the image, or under a mount: admitted, the Secret mounted read-only.
    admitted(
        &injector,
        &pod(
            json!({"wss-sidecar.io/client-ca": "/etc/ssl/certs/ca-certificates.crt"}),
            app_spec(),
        ),
    )
    .await;
    let (patched, _) = admitted(
        &injector,
        &pod(
            json!({"wss-sidecar.io/client-ca": "/etc/wss/client-ca/ca.crt",
                   "wss-sidecar.io/mounts": "secret:client-ca:/etc/wss/client-ca,configMap:roots:/etc/wss/roots"}),
            app_spec(),
        ),
    )
    .await;
    assert_eq!(
        patched["spec"]["volumes"],
        json!([
            {"name": "wss-sidecar-mount-0", "secret": {"secretName": "client-ca"}},
            {"name": "wss-sidecar-mount-1", "configMap": {"name": "roots"}}
        ])
    );
    assert_eq!(
        sidecar(&patched)["volumeMounts"],
        json!([
            {"name": "wss-sidecar-mount-0", "mountPath": "/etc/wss/client-ca", "readOnly": true},
            {"name": "wss-sidecar-mount-1", "mountPath": "/etc/wss/roots", "readOnly": true}
        ])
    );
    injector.stop().await;
}

#[tokio::test]
async fn bad_mounts_are_refused_naming_the_annotation() {
    let injector = TestInjector::start(&[]).await;
    for value in [
        "volume:undeclared:/data",
        "secret:Not_A_Name:/etc/x",
        "secret:x:relative/path",
        "secret:x:/var/run/wss-sidecar/tls",
        "bucket:x:/etc/x",
    ] {
        refused(
            &injector,
            &pod(json!({"wss-sidecar.io/mounts": value}), app_spec()),
            "wss-sidecar.io/mounts",
        )
        .await;
    }
    injector.stop().await;
}

#[tokio::test]
async fn a_loopback_admin_listen_with_probes_is_refused() {
    let injector = TestInjector::start(&[]).await;
    for address in ["127.0.0.1:9090", "[::1]:9090"] {
        let message = refused(
            &injector,
            &pod(json!({"wss-sidecar.io/admin-listen": address}), app_spec()),
            "wss-sidecar.io/admin-listen",
        )
        .await;
        assert!(message.contains("pod's IP"), "{message}");
    }
    // Without an admin port there are no probes.
    admitted(
        &injector,
        &pod(json!({"wss-sidecar.io/admin-listen": "off"}), app_spec()),
    )
    .await;
    injector.stop().await;
}

#[tokio::test]
async fn app_ports_that_clash_with_the_sidecars_are_refused() {
    let injector = TestInjector::start(&[]).await;
    let with_ports = |init: bool, ports: Value| {
        let mut spec = app_spec();
        let list = if init { "initContainers" } else { "containers" };
        spec[list] = json!([{"name": "other", "image": "x", "ports": ports}]);
        if init {
            spec["containers"] = app_spec()["containers"].clone();
        }
        spec
    };
    let annotations = json!({"wss-sidecar.io/http-listen": "[::]:8080"});
    for (init, ports, annotation) in [
        (
            false,
            json!([{"containerPort": 8443}]),
            "wss-sidecar.io/listen",
        ),
        (
            true,
            json!([{"containerPort": 9090, "name": "metrics"}]),
            "wss-sidecar.io/admin-listen",
        ),
        (
            false,
            json!([{"containerPort": 8080}]),
            "wss-sidecar.io/http-listen",
        ),
        (
            false,
            json!([{"containerPort": 3000, "name": "wss"}]),
            "wss-sidecar.io/inject",
        ),
        (
            true,
            json!([{"containerPort": 3000, "name": "wss-http"}]),
            "wss-sidecar.io/inject",
        ),
        (
            false,
            json!([{"containerPort": 3000, "name": "wss-admin"}]),
            "wss-sidecar.io/inject",
        ),
    ] {
        let message = refused(
            &injector,
            &pod(annotations.clone(), with_ports(init, ports.clone())),
            annotation,
        )
        .await;
        assert!(message.contains("\"other\""), "{ports}: {message}");
    }
    // UDP on the same number does not clash with the sidecar's TCP listener.
    let udp = json!([{"containerPort": 8443, "protocol": "UDP", "name": "quic"}]);
    admitted(&injector, &pod(json!({}), with_ports(false, udp))).await;
    injector.stop().await;
}

#[tokio::test]
async fn api_flags_without_a_token_are_refused() {
    let injector = TestInjector::start(&[]).await;
    let mut spec = app_spec();
    spec["automountServiceAccountToken"] = json!(false);
    refused(
        &injector,
        &pod(
            json!({"wss-sidecar.io/cert-secret": "echo-tls"}),
            spec.clone(),
        ),
        "wss-sidecar.io/cert-secret",
    )
    .await;
    refused(
        &injector,
        &pod(
            json!({"wss-sidecar.io/acme-domain": "echo.example.com",
                   "wss-sidecar.io/acme-store": "secret:echo-acme"}),
            spec.clone(),
        ),
        "wss-sidecar.io/acme-store",
    )
    .await;
    // Nothing that needs the API: the pod's choice stands.
    admitted(&injector, &pod(json!({}), spec.clone())).await;
    // A projected token the pod mounts into the sidecar itself serves as well.
    spec["volumes"] = json!([{"name": "token", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token"}}]}}]);
    admitted(
        &injector,
        &pod(
            json!({"wss-sidecar.io/cert-secret": "echo-tls",
                   "wss-sidecar.io/mounts": "volume:token:/var/run/secrets/kubernetes.io/serviceaccount"}),
            spec,
        ),
    )
    .await;
    // Unset on the pod: the ServiceAccount decides, which admission cannot see.
    admitted(
        &injector,
        &pod(
            json!({"wss-sidecar.io/cert-secret": "echo-tls"}),
            app_spec(),
        ),
    )
    .await;
    injector.stop().await;
}

#[tokio::test]
async fn a_privileged_port_is_admitted_with_a_warning() {
    let injector = TestInjector::start(&[]).await;
    let (_, response) = admitted(
        &injector,
        &pod(json!({"wss-sidecar.io/listen": "[::]:443"}), app_spec()),
    )
    .await;
    let warnings = response["warnings"].as_array().expect("warnings").clone();
    assert_eq!(warnings.len(), 1, "{response}");
    let warning = warnings[0].as_str().unwrap();
    assert!(
        warning.starts_with("wss-sidecar.io/listen: port 443"),
        "{warning}"
    );
    assert!(warning.contains("ip_unprivileged_port_start"), "{warning}");
    let (_, response) = admitted(&injector, &pod(json!({}), app_spec())).await;
    assert!(response.get("warnings").is_none(), "{response}");
    injector.stop().await;
}

#[tokio::test]
async fn upstream_is_checked_for_syntax_only() {
    let injector = TestInjector::start(&[]).await;
    // No DNS inside the webhook's 10 s: a name that resolves nowhere is the sidecar's business.
    let (patched, _) = admitted(
        &injector,
        &pod(
            json!({"wss-sidecar.io/upstream": "app.nowhere.invalid:8080"}),
            app_spec(),
        ),
    )
    .await;
    let args = sidecar(&patched)["args"].as_array().unwrap().clone();
    assert!(
        args.contains(&json!("--upstream=app.nowhere.invalid:8080")),
        "{args:?}"
    );
    for bad in ["nowhere", "app:0", "http://app:8080", "unix:"] {
        refused(
            &injector,
            &pod(json!({"wss-sidecar.io/upstream": bad}), app_spec()),
            "wss-sidecar.io/upstream",
        )
        .await;
    }
    injector.stop().await;
}

#[tokio::test]
async fn the_labelled_examples_pass_every_check() {
    let injector = TestInjector::start(&[]).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("manifests/examples") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let object: Value = serde::Deserialize::deserialize(doc).expect("example YAML");
            let template = &object["spec"]["template"];
            if object["kind"] != "Deployment"
                || template["metadata"]["labels"]["wss-sidecar.io/inject"] != "true"
            {
                continue;
            }
            let mut example = pod(json!({}), template["spec"].clone());
            example["metadata"]["labels"] = template["metadata"]["labels"].clone();
            example["metadata"]["annotations"] = template["metadata"]["annotations"].clone();
            let response = review(&injector, &example).await;
            assert_eq!(response["allowed"], true, "{}: {response}", path.display());
            assert!(
                response.get("warnings").is_none(),
                "{}: {response}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} labelled examples");
    injector.stop().await;
}

#[tokio::test]
async fn a_grace_period_shorter_than_lame_duck_and_drain_is_a_warning() {
    let injector = TestInjector::start(&[]).await;
    let mut spec = app_spec();
    spec["terminationGracePeriodSeconds"] = json!(20);
    let (_, response) = admitted(&injector, &pod(json!({}), spec)).await;
    let warnings = response["warnings"].as_array().expect("warnings").clone();
    assert_eq!(warnings.len(), 1, "{response}");
    let warning = warnings[0].as_str().unwrap();
    assert!(
        warning.starts_with("terminationGracePeriodSeconds is 20"),
        "{warning}"
    );
    assert!(warning.contains("wss-sidecar.io/lame-duck"), "{warning}");
    // Lowering the lame duck and drain to fit silences it.
    let mut spec = app_spec();
    spec["terminationGracePeriodSeconds"] = json!(20);
    let (_, response) = admitted(
        &injector,
        &pod(
            json!({"wss-sidecar.io/lame-duck": "5s", "wss-sidecar.io/drain-timeout": "10s"}),
            spec,
        ),
    )
    .await;
    assert!(response.get("warnings").is_none(), "{response}");
    injector.stop().await;
}
