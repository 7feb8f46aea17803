//! The injector over real HTTPS: AdmissionReview JSON as the API server sends it, the response
//! bytes as it reads them (the patch is base64 of a JSON Patch).

use base64::Engine;
use serde_json::{Value, json};

use crate::support::injector::{TestInjector, admission_review};

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "echo-7d9c-",
            "namespace": "apps",
            "labels": {"app": "echo", "wss-sidecar.io/inject": "true"},
            "annotations": annotations
        },
        "spec": {
            "containers": [{"name": "app", "image": "registry.example/echo:1.0"}],
            "restartPolicy": "Always"
        }
    })
}

async fn post_review(injector: &TestInjector, review: &Value) -> Value {
    let body = serde_json::to_vec(review).unwrap();
    let (status, body) = injector.request("POST", "/mutate", &body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("the response is JSON")
}

#[tokio::test]
async fn a_labelled_pod_gets_a_base64_patch_adding_the_native_sidecar_first() {
    let injector = TestInjector::start(&[]).await;
    let pod = pod(json!({"wss-sidecar.io/upstream-port": "8080"}));
    let review = admission_review("705ab4f5-6393-11e8-b7cc-42010a800002", "apps", &pod);
    let answer = post_review(&injector, &review).await;

    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    assert_eq!(
        response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002",
        "{answer}"
    );
    assert_eq!(response["allowed"], true, "{answer}");
    assert_eq!(response["patchType"], "JSONPatch");
    let encoded = response["patch"]
        .as_str()
        .unwrap_or_else(|| panic!("patch must be a base64 string, got {}", response["patch"]));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("the patch is standard base64");
    let patch: json_patch::Patch =
        serde_json::from_slice(&decoded).expect("the decoded patch is a JSON Patch");

    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).expect("the patch applies to the pod");
    let sidecar = &patched["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "wss-sidecar");
    assert_eq!(sidecar["restartPolicy"], "Always");
    // Started, not ready: a CA never holds the app back.
    assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/startupz");
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(
        sidecar["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--upstream=127.0.0.1:8080")),
        "{sidecar}"
    );
    assert_eq!(
        patched["metadata"]["annotations"]["wss-sidecar.io/status"],
        "injected"
    );
    // The app outlives the sidecar's lame duck (10 s) and drain (15 s).
    assert_eq!(
        patched["spec"]["containers"][0]["lifecycle"],
        json!({"preStop": {"sleep": {"seconds": 25}}})
    );
    injector.stop().await;
}

#[tokio::test]
async fn an_invalid_annotation_is_denied_naming_it() {
    let injector = TestInjector::start(&[]).await;
    for (key, value) in [
        ("wss-sidecar.io/idle-timeout", "forever"),
        ("wss-sidecar.io/listen", "8443"),
        ("wss-sidecar.io/upstrem", "127.0.0.1:8080"),
    ] {
        let pod = pod(json!({key: value}));
        let answer = post_review(&injector, &admission_review("u-1", "apps", &pod)).await;
        let response = &answer["response"];
        assert_eq!(response["uid"], "u-1");
        assert_eq!(response["allowed"], false, "{key}: {answer}");
        assert!(response.get("patch").is_none(), "{answer}");
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(key),
            "{key}: the message must name it: {message}"
        );
    }
    injector.stop().await;
}

#[tokio::test]
async fn skipped_pods_and_other_operations_are_allowed_without_a_patch() {
    let injector = TestInjector::start(&[]).await;
    let mut system = admission_review("u-2", "kube-system", &pod(json!({})));
    system["request"]["object"]["metadata"]["namespace"] = json!("kube-system");
    let mut update = admission_review("u-3", "apps", &pod(json!({})));
    update["request"]["operation"] = json!("UPDATE");
    for review in [system, update] {
        let answer = post_review(&injector, &review).await;
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        assert!(answer["response"].get("patch").is_none(), "{answer}");
        assert!(answer["response"].get("patchType").is_none(), "{answer}");
    }
    injector.stop().await;
}

#[tokio::test]
async fn garbage_and_other_paths_get_clear_errors() {
    let injector = TestInjector::start(&[]).await;
    let (status, body) = injector.request("POST", "/mutate", b"{not json").await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], false);
    let (status, _) = injector.request("GET", "/nowhere", b"").await;
    assert_eq!(status, 404);
    let (status, body) = injector.request("GET", "/readyz", b"").await;
    assert_eq!((status, body.as_slice()), (200, &b"ready\n"[..]));
    let (status, _) = injector.request("GET", "/healthz", b"").await;
    assert_eq!(status, 200);
    injector.stop().await;
}

#[tokio::test]
async fn an_oversized_review_is_refused() {
    let injector = TestInjector::start(&[]).await;
    let huge = vec![b' '; 4 * 1024 * 1024];
    let (status, _) = injector.request("POST", "/mutate", &huge).await;
    assert_eq!(status, 400);
    injector.stop().await;
}

/// Decodes the patch of an allowed review and applies it to `pod`.
fn apply(answer: &Value, pod: &Value) -> Value {
    let encoded = answer["response"]["patch"].as_str().expect("a patch");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&decoded).unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    patched
}

/// The real binary against a fake API server reporting `minor` in `GET /version`: what it
/// injects follows the server (native sidecars 1.29+, app `preStop: sleep` 1.30+).
async fn injected_on(minor: &str, extra: &[&str]) -> Value {
    use std::process::Stdio;

    use crate::support::child::{Process, spawn_collector};
    use crate::support::fake_api::FakeApi;
    use crate::support::injector::{SERVICE_NAME, https_request};
    use crate::support::process::binary;
    use crate::support::{LeafSpec, TestCa, client_config, install_crypto_provider};

    install_crypto_provider();
    let api = FakeApi::start().await;
    api.seed(
        "/version",
        json!({"major": "1", "minor": minor, "gitVersion": format!("v1.{minor}.0")}),
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path(), "default");
    let ca = TestCa::new("injector CA");
    crate::support::write_plain_pair(dir.path(), &ca.issue(LeafSpec::new(&[SERVICE_NAME])));
    let mut child = tokio::process::Command::new(binary())
        .arg("injector")
        .arg("--cert-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .args(extra)
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("WSS_SIDECAR_SIDECAR_MODE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wss-sidecar injector");
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let serving = spawn_collector(child.stderr.take(), &output, "injector serving");
    spawn_collector(child.stdout.take(), &output, "");
    let injector = Process {
        name: "wss-sidecar injector",
        child,
        output,
    };
    let line = injector
        .wait_for_line(serving, std::time::Duration::from_secs(20))
        .await;
    assert_eq!(api.requests_matching("/version"), 1, "{:?}", api.requests());
    let log: Value = serde_json::from_str(&line).expect("a JSON log line");
    let addr: std::net::SocketAddr = log["listen"].as_str().unwrap().parse().unwrap();
    let client = client_config(&[ca.cert_der()], &[b"http/1.1"]);
    let pod = pod(json!({}));
    let review = serde_json::to_vec(&admission_review("u-v", "apps", &pod)).unwrap();
    let (status, body) = https_request(addr, client, "POST", "/mutate", &review).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    apply(&answer, &pod)
}

fn sidecar_place(patched: &Value) -> (&'static str, bool) {
    let native = patched["spec"]["initContainers"][0]["name"] == "wss-sidecar";
    let plain = patched["spec"]["containers"][1]["name"] == "wss-sidecar";
    assert!(native != plain, "one sidecar: {patched}");
    let sleeps = !patched["spec"]["containers"][0]["lifecycle"]["preStop"]["sleep"].is_null();
    (if native { "native" } else { "plain" }, sleeps)
}

#[tokio::test]
async fn the_server_version_picks_native_or_plain_and_the_app_prestop() {
    assert_eq!(
        sidecar_place(&injected_on("37", &[]).await),
        ("native", true)
    );
    assert_eq!(
        sidecar_place(&injected_on("29", &[]).await),
        ("native", false)
    );
    assert_eq!(
        sidecar_place(&injected_on("28+", &[]).await),
        ("plain", false)
    );
    // The user's choice wins over the server's.
    let plain = injected_on("37", &["--sidecar-mode", "plain"]).await;
    assert_eq!(sidecar_place(&plain), ("plain", true));
    let native = injected_on("28", &["--sidecar-mode", "native"]).await;
    assert_eq!(sidecar_place(&native), ("native", false));
}
