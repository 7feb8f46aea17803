//! The injector's admission decisions and how long the webhook takes to answer.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The API server waits `timeoutSeconds` (10 s by default, 30 at most) for an answer; a review
/// is JSON parsing and a patch, a millisecond or so.
const REVIEW_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 10.0,
];

/// One admission decision: a fixed, small set of label values.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Decision {
    /// `allowed` (admitted unchanged: not labelled, not a create, already injected…),
    /// `patched` (the sidecar added) or `denied`.
    pub decision: &'static str,
    /// Why a pod was denied: `annotation` (the `wss-sidecar.io/*` annotations do not make a
    /// valid sidecar), `pod_check` (the pod cannot run the sidecar), `invalid_review` (the
    /// request is not an AdmissionReview of a Pod), `internal` (the injector failed);
    /// `none` for the other decisions.
    pub reason: &'static str,
}

impl Decision {
    /// Admitted unchanged.
    pub const ALLOWED: Self = Self::new("allowed", "none");
    /// Admitted with the sidecar.
    pub const PATCHED: Self = Self::new("patched", "none");
    /// Denied: the annotations do not make a valid sidecar.
    pub const DENIED_ANNOTATION: Self = Self::new("denied", "annotation");
    /// Denied: the pod cannot run the sidecar.
    pub const DENIED_POD_CHECK: Self = Self::new("denied", "pod_check");
    /// Denied: not an AdmissionReview of a Pod.
    pub const DENIED_INVALID_REVIEW: Self = Self::new("denied", "invalid_review");
    /// Denied: the injector failed.
    pub const DENIED_INTERNAL: Self = Self::new("denied", "internal");
    /// Every decision: each series exists, at zero, from the start.
    pub const ALL: [Self; 6] = [
        Self::ALLOWED,
        Self::PATCHED,
        Self::DENIED_ANNOTATION,
        Self::DENIED_POD_CHECK,
        Self::DENIED_INVALID_REVIEW,
        Self::DENIED_INTERNAL,
    ];

    const fn new(decision: &'static str, reason: &'static str) -> Self {
        Self { decision, reason }
    }
}

/// What the webhook decided and how fast.
pub struct InjectorMetrics {
    /// Admission reviews answered, by decision and (for denials) reason.
    pub admissions: Family<Decision, Counter>,
    /// Seconds from a `POST /mutate` request to its answer (body read, review, encode).
    pub review_duration: Histogram,
}

impl InjectorMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            admissions: Family::default(),
            review_duration: Histogram::new(REVIEW_BUCKETS),
        };
        for decision in Decision::ALL {
            let _ = metrics.admissions.get_or_create(&decision);
        }
        registry.register(
            "injector_admissions",
            "Admission reviews answered by the injector, by decision and reason",
            metrics.admissions.clone(),
        );
        registry.register(
            "injector_review_duration_seconds",
            "Seconds the injector took to answer a POST /mutate",
            metrics.review_duration.clone(),
        );
        metrics
    }

    /// Counts one decision.
    pub fn count(&self, decision: Decision) {
        self.admissions.get_or_create(&decision).inc();
    }
}
