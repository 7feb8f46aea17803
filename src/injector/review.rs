//! `AdmissionReview` v1 in, `AdmissionReview` v1 out, with the patch base64-encoded on the wire.
//!
//! kube's `AdmissionResponse` holds the patch as bytes, and serde writes bytes as a JSON array
//! of numbers (kube-rs issue 1781); the API server expects a base64 string, so the patch is
//! re-encoded after serialisation.

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;
use tracing::{debug, info};

use super::annotations::{Denial, sidecar_args};
use super::checks;
use super::container::SidecarTemplate;
use super::inject::{Outcome, inject, stop_warnings};
use crate::metrics::Decision;

/// Answers one `AdmissionReview` request body with a response body, and says what was decided
/// (for the `injector_admissions_total` metric).
pub fn review(body: &[u8], template: &SidecarTemplate) -> (Vec<u8>, Decision) {
    let invalid = Decision::DENIED_INVALID_REVIEW;
    let (response, decision) = match serde_json::from_slice::<AdmissionReview<Pod>>(body) {
        Err(err) => (
            AdmissionResponse::invalid(format!("not an AdmissionReview of a Pod: {err}")),
            invalid,
        ),
        Ok(review) => match TryInto::<AdmissionRequest<Pod>>::try_into(review) {
            Err(_) => (
                AdmissionResponse::invalid("the AdmissionReview has no request"),
                invalid,
            ),
            Ok(request) => respond(&request, template),
        },
    };
    (encode(response.into_review()), decision)
}

fn respond(
    request: &AdmissionRequest<Pod>,
    template: &SidecarTemplate,
) -> (AdmissionResponse, Decision) {
    let allowed = AdmissionResponse::from(request);
    let Some(pod) = request
        .object
        .as_ref()
        .filter(|_| request.operation == Operation::Create)
    else {
        return (allowed, Decision::ALLOWED);
    };
    let namespace = request
        .namespace
        .as_deref()
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or("default");
    let name = pod
        .metadata
        .name
        .as_deref()
        .or(pod.metadata.generate_name.as_deref())
        .unwrap_or("");
    match inject(pod, namespace, template) {
        Ok(Outcome::Skipped(why)) => {
            debug!(
                pod.namespace = namespace,
                pod.name = name,
                reason = why,
                "not injected"
            );
            (allowed, Decision::ALLOWED)
        }
        Ok(Outcome::Patched(patch)) => match pod_checks(pod, template) {
            Err(denial) => {
                info!(pod.namespace = namespace, pod.name = name, reason = %denial, "denied");
                (allowed.deny(denial), Decision::DENIED_POD_CHECK)
            }
            Ok(warnings) => match allowed.clone().with_patch(patch) {
                Ok(mut patched) => {
                    info!(
                        pod.namespace = namespace,
                        pod.name = name,
                        warnings = warnings.len(),
                        "injected the sidecar"
                    );
                    // Shown by kubectl as `Warning: …` (AdmissionResponse.warnings).
                    patched.warnings = (!warnings.is_empty()).then_some(warnings);
                    (patched, Decision::PATCHED)
                }
                Err(err) => (
                    allowed.deny(format!("wss-sidecar injector: {err}")),
                    Decision::DENIED_INTERNAL,
                ),
            },
        },
        // The annotations do not make a sidecar (or, never seen, the sidecar does not encode).
        Err(denial) => {
            info!(pod.namespace = namespace, pod.name = name, reason = %denial, "denied");
            (allowed.deny(denial), Decision::DENIED_ANNOTATION)
        }
    }
}

/// What the pod as a whole must be for the sidecar `inject` adds to run, and how it will stop:
/// warnings, or a refusal. (The annotations were checked by `inject` already; they parse again
/// here.)
fn pod_checks(pod: &Pod, template: &SidecarTemplate) -> Result<Vec<String>, Denial> {
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let args = sidecar_args(&annotations, &template.defaults, template.flags)?;
    let mut warnings = checks::check(pod, &args)?;
    warnings.extend(stop_warnings(pod, template));
    Ok(warnings)
}

/// Serialises the review with `response.patch` as base64, as the API server reads it.
fn encode(review: AdmissionReview<DynamicObject>) -> Vec<u8> {
    let patch = review.response.as_ref().and_then(|r| r.patch.clone());
    let mut value = serde_json::to_value(&review).unwrap_or(Value::Null);
    if let (Some(patch), Some(response)) = (patch, value.get_mut("response")) {
        response["patch"] = Value::String(base64::engine::general_purpose::STANDARD.encode(patch));
    }
    serde_json::to_vec(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_is_base64_on_the_wire() {
        let mut response = AdmissionResponse::invalid("x");
        response.allowed = true;
        let response = response.with_patch(json_patch::Patch(vec![])).unwrap();
        let bytes = encode(response.into_review());
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["response"]["patch"], "W10=", "{value}"); // base64 of "[]"
        assert_eq!(value["response"]["patchType"], "JSONPatch");
        assert_eq!(value["apiVersion"], "admission.k8s.io/v1");
    }

    #[test]
    fn garbage_gets_an_invalid_response() {
        let template = crate::injector::default_config().template;
        let (body, decision) = review(b"{nope", &template);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["response"]["allowed"], false);
        assert_eq!(decision, Decision::DENIED_INVALID_REVIEW);
        assert_eq!(value["kind"], "AdmissionReview");
    }
}
