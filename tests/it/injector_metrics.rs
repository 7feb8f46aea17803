//! The injector's `/metrics`: admission decisions by decision and reason, and the review
//! latency histogram, move as the webhook answers reviews over HTTPS.

use crate::support::http_get;
use crate::support::injector::{TestInjector, admission_review};
use crate::support::proxy::Metrics;

const ADMISSIONS: &str = "wss_sidecar_injector_admissions_total";
const REVIEW_SECONDS: &str = "wss_sidecar_injector_review_duration_seconds";

#[tokio::test]
async fn admission_decisions_and_review_latency_are_counted() {
    let injector = TestInjector::start(&[]).await;
    let scrape = || async {
        let (status, body) = http_get(injector.admin, "/metrics")
            .await
            .expect("the injector's /metrics");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    };
    let before = scrape().await;
    assert_eq!(before.value(&format!("{REVIEW_SECONDS}_count"), &[]), 0.0);
    for decision in ["allowed", "patched", "denied"] {
        assert_eq!(
            before.value(ADMISSIONS, &[("decision", decision)]),
            0.0,
            "{decision} at zero"
        );
    }

    let pod = |labelled: bool, annotations: serde_json::Value| {
        let labels = if labelled {
            serde_json::json!({"app": "echo", "wss-sidecar.io/inject": "true"})
        } else {
            serde_json::json!({"app": "echo"})
        };
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "echo-", "namespace": "apps",
                         "labels": labels, "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "registry.example/echo:1.0"}]}
        })
    };
    let cases = [
        (pod(false, serde_json::json!({})), true, ("allowed", "none")),
        (
            pod(
                true,
                serde_json::json!({"wss-sidecar.io/upstream-port": "8080"}),
            ),
            true,
            ("patched", "none"),
        ),
        (
            pod(
                true,
                serde_json::json!({"wss-sidecar.io/no-such-flag": "1"}),
            ),
            false,
            ("denied", "annotation"),
        ),
        // ACME with no shared store: the annotations parse, the pod cannot run it.
        (
            pod(
                true,
                serde_json::json!({"wss-sidecar.io/acme-domain": "echo.example.com"}),
            ),
            false,
            ("denied", "pod_check"),
        ),
    ];
    for (i, (pod, allowed, _)) in cases.iter().enumerate() {
        let review = admission_review(&format!("u-{i}"), "apps", pod);
        let body = serde_json::to_vec(&review).expect("JSON");
        let (status, answer) = injector.request("POST", "/mutate", &body).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        let answer: serde_json::Value = serde_json::from_slice(&answer).expect("JSON");
        assert_eq!(
            answer["response"]["allowed"], *allowed,
            "case {i}: {answer}"
        );
    }
    let (status, _) = injector.request("POST", "/mutate", b"{not json").await;
    assert_eq!(status, 200, "a bad review is answered with allowed: false");

    let m = scrape().await;
    let expected = cases
        .iter()
        .map(|(_, _, decision)| *decision)
        .chain([("denied", "invalid_review")]);
    for (decision, reason) in expected {
        assert_eq!(
            m.value(ADMISSIONS, &[("decision", decision), ("reason", reason)]),
            1.0,
            "{decision}/{reason}"
        );
    }
    assert_eq!(m.value(&format!("{REVIEW_SECONDS}_count"), &[]), 5.0);
    assert!(m.value(&format!("{REVIEW_SECONDS}_sum"), &[]) > 0.0);
    assert_eq!(m.buckets(REVIEW_SECONDS).last().map(|b| b.1), Some(5.0));
    injector.stop().await;
}
