//! The renewal loop: load what the store holds, publish it, and when a renewal is due take the
//! store's lock and order; back off on failure, with the state kept in the store. The lock is
//! renewed while the order runs, and the order stops if the lock is lost; waiting replicas
//! wake when the store changes. What an outcome does (store, metrics, Events) is in `outcome`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{Account, CertificateIdentifier};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod outcome;

use super::cert_info::CertInfo;
use super::config::AcmeConfig;
use super::lock;
use super::order::{self, OrderError, Validation};
use super::schedule;
use super::self_check::SelfCheck;
use super::store::{AcmeStore, RenewalState, StoreError, StoredCert};
use crate::certs::{Publisher, load_pair};
use crate::clock::epoch_seconds;
use crate::http::health::AcmeAnswering;
use crate::metrics::Metrics;
use crate::tls;

/// Upper bound on one order, from account to downloaded certificate, besides the self-check
/// (bounded by `--acme-self-check-timeout`).
const ORDER_TIMEOUT: Duration = Duration::from_secs(240);

/// Keeps one ACME certificate valid and published.
pub struct Manager {
    config: AcmeConfig,
    store: Arc<dyn AcmeStore>,
    publisher: Publisher,
    metrics: Arc<Metrics>,
    /// This replica's name in the lock.
    holder: String,
    account: Option<Account>,
    /// The certificate being served.
    current: Option<CertInfo>,
    /// Renewal information for the current certificate: (renew at, ask again at).
    ari: Option<(i64, i64)>,
    /// Set while the store holds the answers of an order in flight (readiness without a
    /// certificate).
    answering: Arc<AcmeAnswering>,
    /// Dials our names before the CA is asked to validate them.
    self_check: SelfCheck,
}

impl Manager {
    /// A manager publishing through `publisher`.
    pub fn new(
        config: AcmeConfig,
        store: Arc<dyn AcmeStore>,
        publisher: Publisher,
        metrics: Arc<Metrics>,
    ) -> Self {
        let holder = crate::k8s::lease::holder_identity();
        let self_check = SelfCheck::new(
            config.self_check.clone(),
            config.challenge,
            Arc::clone(&metrics),
        );
        Self {
            config,
            store,
            publisher,
            metrics,
            holder,
            account: None,
            current: None,
            ari: None,
            answering: Arc::default(),
            self_check,
        }
    }

    /// Reports through `answering` whether the store holds the answers of an order in flight.
    pub fn with_answering(mut self, answering: Arc<AcmeAnswering>) -> Self {
        self.answering = answering;
        self
    }

    /// Notes whether `err` says the store's Secret or Lease is missing (for readiness).
    fn store_failed(&self, err: &StoreError) {
        self.answering
            .set_store_missing(matches!(err, StoreError::Missing { .. }));
    }

    /// Runs until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let store = Arc::clone(&self.store);
        loop {
            let wait = self.step().await;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // Another replica wrote: a new certificate to load, or the lock to race for.
                () = store.changed() => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// One pass; returns how long to wait before the next.
    async fn step(&mut self) -> Duration {
        let poll = self.config.poll_interval;
        if let Err(err) = self.load_stored().await {
            warn!(error = %err, "cannot read the ACME store; retrying");
            self.store_failed(&err);
            return poll;
        }
        let state = match self.store.load_state().await {
            Ok(state) => state,
            Err(err) => {
                warn!(error = %err, "cannot read the ACME renewal state; retrying");
                self.store_failed(&err);
                return poll;
            }
        };
        self.note_answering(&state).await;
        let now = epoch_seconds(SystemTime::now());
        let due = self.due(&state, now).await;
        self.metrics.acme.next_renewal.set(due as f64);
        self.metrics
            .acme
            .consecutive_failures
            .set(i64::from(state.failures));
        if due > now {
            return poll.min(Duration::from_secs(u64::try_from(due - now).unwrap_or(0)));
        }
        let ttl = self.config.lease_duration;
        let locked = self.store.try_lock(&self.holder, ttl).await;
        // The Secret is there (read above); the Lease is known once tried.
        self.answering
            .set_store_missing(matches!(&locked, Err(StoreError::Missing { .. })));
        match locked {
            Ok(true) => {}
            Ok(false) => {
                debug!("another replica is ordering the certificate; waiting for it");
                return poll;
            }
            Err(err) => {
                warn!(error = %err, "cannot take the ACME lock; retrying");
                return poll;
            }
        }
        let (store, holder) = (Arc::clone(&self.store), self.holder.clone());
        let lost = tokio::select! {
            () = self.order_locked() => false,
            () = lock::keep(store, holder, ttl) => true,
        };
        if lost {
            warn!("lost the ACME ordering lock mid-order; stopping, another replica takes over");
            return poll;
        }
        if let Err(err) = self.store.unlock(&self.holder).await {
            warn!(error = %err, "cannot release the ACME lock; it expires by itself");
        }
        Duration::ZERO
    }

    /// Whether another replica's order in flight has its answers in the store, which this
    /// replica's responder serves: then it is ready without a certificate.
    async fn note_answering(&self, state: &RenewalState) {
        let answering = state.pending.is_some()
            && self
                .store
                .load_challenges()
                .await
                .is_ok_and(|answers| !answers.is_empty());
        self.answering.set(answering);
    }

    /// Holding the lock: re-check (another replica may just have finished), then order.
    async fn order_locked(&mut self) {
        let state = match (self.load_stored().await, self.store.load_state().await) {
            (Ok(()), Ok(state)) => state,
            (Err(err), _) | (_, Err(err)) => {
                warn!(error = %err, "cannot read the ACME store; retrying");
                return;
            }
        };
        let now = epoch_seconds(SystemTime::now());
        if self.due(&state, now).await > now {
            return;
        }
        // A missing account Secret is the store's problem, not a failed order: no back-off.
        if self.account.is_none()
            && let Err(err) = self.store.load_account().await
        {
            warn!(error = %err, "cannot read the ACME account; retrying");
            self.store_failed(&err);
            return;
        }
        let mut state = state;
        let replaces = self.replaces(&state);
        if let Some(id) = &replaces {
            // Sent once: a failed order must not name the same certificate again.
            state.replaced = Some(id.to_string());
        }
        info!(acme.names = ?self.config.domains, renewal = self.current.is_some(), "ordering a certificate");
        let limit = ORDER_TIMEOUT.saturating_add(self.config.self_check.timeout);
        let ordered = self.order(replaces, &mut state);
        let result = match tokio::time::timeout(limit, ordered).await {
            Ok(result) => result,
            Err(_) => Err(OrderError::Timeout { retry_after: None }),
        };
        let now = epoch_seconds(SystemTime::now());
        match result {
            Ok(cert) => self.succeeded(cert, state, now).await,
            Err(err) => self.failed(&err, state, now).await,
        }
        // Last, so that a replica woken by any of these writes already sees the certificate.
        if let Err(err) = self.store.save_challenges(&[]).await {
            debug!(error = %err, "cannot clear the pending challenges");
        }
        self.answering.set(false);
    }

    async fn order(
        &mut self,
        replaces: Option<CertificateIdentifier<'static>>,
        state: &mut RenewalState,
    ) -> Result<StoredCert, OrderError> {
        let account = self.account().await?;
        let store = Arc::clone(&self.store);
        let validation = Validation {
            answering: &self.answering,
            self_check: &self.self_check,
        };
        match order::order(
            &account,
            &self.config,
            store.as_ref(),
            state,
            replaces.clone(),
            &validation,
        )
        .await
        {
            Err(err) if err.is_unknown_account() => {
                warn!("the ACME server does not know our account any more; creating a new one");
                self.account = None;
                state.pending = None;
                self.store.save_account(b"").await?;
                let account = self.account().await?;
                let validation = Validation {
                    answering: &self.answering,
                    self_check: &self.self_check,
                };
                order::order(
                    &account,
                    &self.config,
                    store.as_ref(),
                    state,
                    replaces,
                    &validation,
                )
                .await
            }
            other => other,
        }
    }

    async fn account(&mut self) -> Result<Account, OrderError> {
        if let Some(account) = &self.account {
            return Ok(account.clone());
        }
        let account = order::account(&self.config, self.store.as_ref()).await?;
        self.account = Some(account.clone());
        Ok(account)
    }

    /// Publishes the stored certificate if it differs from the one being served and is valid.
    async fn load_stored(&mut self) -> Result<(), super::store::StoreError> {
        let Some(stored) = self.store.load_cert().await? else {
            return Ok(());
        };
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.pem == stored.cert_pem)
        {
            return Ok(());
        }
        if let Err(err) = self.publish(&stored)
            && self.current.is_none()
        {
            warn!(error = %err, "the stored ACME certificate is not usable; ordering a new one");
        }
        Ok(())
    }

    fn publish(&mut self, cert: &StoredCert) -> Result<(), crate::certs::CertError> {
        let loaded = load_pair(
            cert.cert_pem.as_bytes(),
            cert.key_pem.as_bytes(),
            &tls::provider(),
            SystemTime::now(),
        )?;
        let info = CertInfo::parse(&cert.cert_pem)?;
        self.publisher.publish(loaded);
        self.current = Some(info);
        self.ari = None;
        Ok(())
    }

    /// When the next order is due: now without a certificate; else the renewal time, but not
    /// before a failure's back-off ends.
    async fn due(&mut self, state: &RenewalState, now: i64) -> i64 {
        let Some(info) = &self.current else {
            return now.max(state.next_attempt.unwrap_or(i64::MIN));
        };
        let by_rule = schedule::renewal_time(
            info.validity,
            self.config.renew_before,
            schedule::unit_from(info.pem.as_bytes()),
        );
        // The test knob wins over the CA's window.
        let renew_at = match self.config.renew_before {
            Some(_) => by_rule,
            None => self.ari_time(now).await.unwrap_or(by_rule),
        };
        renew_at.max(state.next_attempt.unwrap_or(i64::MIN))
    }

    /// The renewal time the CA suggests (RFC 9773), cached until its Retry-After; `None` when
    /// the CA offers no renewal information or we have no account yet.
    async fn ari_time(&mut self, now: i64) -> Option<i64> {
        if let Some((at, recheck)) = self.ari
            && now < recheck
        {
            return Some(at);
        }
        let (account, info) = (self.account.as_ref()?, self.current.as_ref()?);
        let id = info.id.as_ref()?;
        match account.renewal_info(id).await {
            Ok((renewal, retry_after)) => {
                let window = renewal.suggested_window;
                let at = schedule::ari_time(
                    window.start.unix_timestamp(),
                    window.end.unix_timestamp(),
                    schedule::unit_from(info.pem.as_bytes()),
                    now,
                );
                let recheck =
                    i64::try_from(schedule::ari_recheck(retry_after).as_secs()).unwrap_or(i64::MAX);
                self.ari = Some((at, now.saturating_add(recheck)));
                Some(at)
            }
            Err(instant_acme::Error::Unsupported(_)) => None,
            Err(err) => {
                debug!(error = %err, "cannot fetch ACME renewal information");
                self.ari.map(|(at, _)| at)
            }
        }
    }

    /// The certificate to name in `replaces`, when the CA offers renewal information and no
    /// earlier order named it.
    fn replaces(&self, state: &RenewalState) -> Option<CertificateIdentifier<'static>> {
        self.ari?;
        let id = self.current.as_ref()?.id.clone()?;
        (state.replaced.as_deref() != Some(id.to_string().as_str())).then_some(id)
    }
}

#[cfg(test)]
mod tests;
