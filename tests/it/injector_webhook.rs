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
    assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/readyz");
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
    assert_eq!(patched["spec"]["containers"], pod["spec"]["containers"]);
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
