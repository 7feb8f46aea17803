//! What the renewal loop does with an order's outcome: the certificate stored and published,
//! or the failure counted and backed off from; either way the metrics, the shared renewal
//! state and a Kubernetes Event on the pod say so.

use std::time::{Duration, SystemTime};

use tracing::{error, warn};

use super::Manager;
use crate::acme::order::OrderError;
use crate::acme::schedule;
use crate::acme::store::{Attempt, HISTORY_LEN, RenewalState, StoredCert};
use crate::k8s::Reason;
use crate::metrics::{ErrorClass, Outcome};

impl Manager {
    pub(super) async fn succeeded(&mut self, cert: StoredCert, mut state: RenewalState, now: i64) {
        self.metrics
            .acme
            .orders
            .get_or_create(&Outcome { result: "success" })
            .inc();
        self.metrics.acme.retry_delay.set(0.0);
        self.metrics.acme.last_error.clear();
        if let Err(err) = self.store.save_cert(&cert).await {
            // Still serve it: this process has it, and the next renewal stores it again.
            error!(error = %err, "cannot store the new certificate");
        }
        state.failures = 0;
        state.next_attempt = None;
        state.pending = None;
        push_history(
            &mut state,
            Attempt {
                at: now,
                error: None,
            },
        );
        if let Err(err) = self.store.save_state(&state).await {
            warn!(error = %err, "cannot store the ACME renewal state");
        }
        let renewal = self.current.is_some();
        match self.publish(&cert) {
            Ok(()) => {
                let (reason, verb) = if renewal {
                    (Reason::CertificateRenewed, "renewed")
                } else {
                    (Reason::CertificateObtained, "obtained")
                };
                let not_after = self.current.as_ref().map_or(0, |c| c.validity.not_after);
                self.publisher.event(
                    reason,
                    format!(
                        "certificate for {} {verb} from {}; valid until {}",
                        self.config.domains.join(", "),
                        self.config.directory,
                        humantime::format_rfc3339_seconds(
                            SystemTime::UNIX_EPOCH
                                + Duration::from_secs(u64::try_from(not_after).unwrap_or(0))
                        )
                    ),
                );
            }
            Err(err) => error!(error = %err, "the CA issued a certificate that does not load"),
        }
    }

    pub(super) async fn failed(&mut self, err: &OrderError, mut state: RenewalState, now: i64) {
        self.metrics
            .acme
            .orders
            .get_or_create(&Outcome { result: "failure" })
            .inc();
        self.metrics.acme.last_error.clear();
        self.metrics
            .acme
            .last_error
            .get_or_create(&ErrorClass { class: err.class() })
            .set(1);
        state.failures = state.failures.saturating_add(1);
        let delay = schedule::backoff(state.failures, self.config.backoff_base, err.retry_after());
        self.metrics.acme.retry_delay.set(delay.as_secs_f64());
        // Whole seconds, rounded up, so that the stored time is never earlier than the delay.
        let delay_secs = i64::try_from(delay.as_secs() + u64::from(delay.subsec_nanos() > 0))
            .unwrap_or(i64::MAX);
        state.next_attempt = Some(now.saturating_add(delay_secs));
        push_history(
            &mut state,
            Attempt {
                at: now,
                error: Some((err.class().into(), err.to_string())),
            },
        );
        if let Err(store_err) = self.store.save_state(&state).await {
            warn!(error = %store_err, "cannot store the ACME failure state");
        }
        let serving = if self.current.is_some() {
            "the current certificate keeps serving"
        } else {
            "no certificate yet: not ready"
        };
        warn!(
            error.class = err.class(),
            error = %err,
            acme.failures = state.failures,
            acme.retry_in = ?delay,
            "ACME order failed; {serving}"
        );
        self.publisher.event(
            Reason::AcmeOrderFailed,
            format!(
                "ACME order for {} failed ({}): {err}; retrying in {}; {serving}",
                self.config.domains.join(", "),
                err.class(),
                humantime::format_duration(Duration::from_secs(delay.as_secs()))
            ),
        );
    }
}

fn push_history(state: &mut RenewalState, attempt: Attempt) {
    state.history.push(attempt);
    let excess = state.history.len().saturating_sub(HISTORY_LEN);
    state.history.drain(..excess);
}
