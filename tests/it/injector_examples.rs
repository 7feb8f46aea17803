//! The example apps in `manifests/examples/` go through the injector as their pods would.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use wss_sidecar::injector::{Outcome, inject};

use crate::support::injector::template;

/// The pod each labelled Deployment in the examples would create: (file, pod).
fn example_pods() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples");
    let mut pods = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("manifests/examples exists") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let object: Value = serde::Deserialize::deserialize(doc).expect("example YAML");
            if object["kind"] != "Deployment" {
                continue;
            }
            let template = &object["spec"]["template"];
            let pod = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": template["metadata"],
                "spec": template["spec"],
            });
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            pods.push((file, pod));
        }
    }
    assert!(pods.len() >= 4, "{pods:?}");
    pods
}

#[test]
fn labelled_examples_are_injected_and_the_hand_written_one_is_left_alone() {
    let acme_flags = wss_sidecar::config::proxy_flags()
        .names()
        .any(|f| f == "acme-domain");
    for (file, pod) in example_pods() {
        let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
        let outcome = inject(&typed, "default", &template(&[]));
        match (file.as_str(), outcome) {
            ("sidecar-by-hand.yaml", Ok(Outcome::Skipped(_))) => {}
            // Until the proxy has its ACME flags, their annotations are (rightly) unknown.
            ("echo-acme.yaml", Err(denial)) if !acme_flags => {
                assert!(denial.0.contains("wss-sidecar.io/acme-domain"), "{denial}");
            }
            (_, Ok(Outcome::Patched(patch))) if file != "sidecar-by-hand.yaml" => {
                let mut patched = pod.clone();
                json_patch::patch(&mut patched, &patch).unwrap();
                assert_eq!(patched["spec"]["initContainers"][0]["name"], "wss-sidecar");
                if file == "echo-acme.yaml" {
                    // Its replicas share a Secret store: no state volume per pod.
                    assert_eq!(patched["spec"]["volumes"], Value::Null, "{file}");
                    let annotations = &patched["metadata"]["annotations"];
                    assert_eq!(
                        annotations["wss-sidecar.io/acme-store"],
                        "secret:echo-acme-acme"
                    );
                }
            }
            (_, other) => panic!("{file}: unexpected {other:?}"),
        }
    }
}

/// The hand-written sidecar locks itself down exactly as the injector would.
#[test]
fn the_hand_written_sidecar_matches_the_injected_security_settings() {
    let (_, by_hand) = example_pods()
        .into_iter()
        .find(|(f, _)| f == "sidecar-by-hand.yaml")
        .unwrap();
    let (_, injected) = example_pods()
        .into_iter()
        .find(|(f, _)| f == "echo-cert-manager.yaml")
        .unwrap();
    let typed: Pod = serde_json::from_value(injected.clone()).unwrap();
    let Ok(Outcome::Patched(patch)) = inject(&typed, "default", &template(&[])) else {
        panic!("echo-cert-manager.yaml is not injected");
    };
    let mut injected = injected;
    json_patch::patch(&mut injected, &patch).unwrap();
    let (mine, theirs) = (
        &by_hand["spec"]["initContainers"][0],
        &injected["spec"]["initContainers"][0],
    );
    for field in [
        "securityContext",
        "restartPolicy",
        "ports",
        "startupProbe",
        "readinessProbe",
        "livenessProbe",
        "lifecycle",
        "env",
        "volumeMounts",
    ] {
        let strip = |v: &Value| {
            let mut v = v.clone();
            // `protocol` and `privileged` are defaults the hand-written pod may leave out.
            if let Some(items) = v.as_array_mut() {
                items.iter_mut().for_each(|p| {
                    p.as_object_mut().map(|o| o.remove("protocol"));
                });
            }
            v.as_object_mut().map(|o| o.remove("privileged"));
            v
        };
        assert_eq!(
            strip(&mine[field]),
            strip(&theirs[field]),
            "{field} differs"
        );
    }
    // The injected stop and redirect flags, and the app's preStop sleep sized to them.
    for flag in [
        "--lame-duck=10s",
        "--drain-timeout=15s",
        "--redirect-port=443",
    ] {
        assert!(
            theirs["args"].as_array().unwrap().contains(&json!(flag)),
            "{theirs}"
        );
        assert!(
            mine["args"].as_array().unwrap().contains(&json!(flag)),
            "{flag}"
        );
    }
    assert_eq!(
        by_hand["spec"]["containers"][0]["lifecycle"],
        injected["spec"]["containers"][0]["lifecycle"],
        "the app's preStop"
    );
}
