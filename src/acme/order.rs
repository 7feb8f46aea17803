//! One ACME order with instant-acme: account, challenges published to the store before the CA
//! is told they are ready, finalize, download. The order's URL and then its key are saved in
//! the renewal state as it goes, so that a replica taking over from one that died mid-order
//! (or a restarted one) resumes that order instead of placing another.

use std::time::Duration;

use std::time::SystemTime;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeStatus, ChallengeType,
    Error as AcmeError, ExternalAccountKey, Identifier, NewAccount, NewOrder, Order, OrderStatus,
    RetryPolicy,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use tracing::info;

use super::config::{AcmeConfig, ChallengeKind};
use super::self_check::{SelfCheck, Verdict};
use super::store::{
    AcmeStore, ChallengeAnswer, PendingOrder, RenewalState, StoreError, StoredCert,
};
use crate::clock::epoch_seconds;
use crate::http::health::AcmeAnswering;

/// What happens between publishing the answers and telling the CA they are ready: readiness
/// turns on (the CA reaches a Service's Ready endpoints only), then the self-check.
pub struct Validation<'a> {
    /// Set once the answers are in the store.
    pub answering: &'a AcmeAnswering,
    /// Dials our names as the CA will before it is asked to.
    pub self_check: &'a SelfCheck,
}

/// How long validation and issuance may take once the challenges are ready.
const POLL_TIMEOUT: Duration = Duration::from_secs(90);

/// Why an order failed. None is fatal: the manager backs off and keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The CA answered with a problem document.
    #[error("the ACME server refused: {0}")]
    Api(instant_acme::Problem),
    /// The CA could not be reached or the exchange broke.
    #[error("cannot talk to the ACME server: {0}")]
    Network(AcmeError),
    /// Validation or issuance did not finish in time; `retry_after` is the CA's hint.
    #[error("the ACME server did not finish in time")]
    Timeout {
        /// When the CA suggests polling again.
        retry_after: Option<Duration>,
    },
    /// A challenge failed: the CA could not validate the names.
    #[error("validation failed: {0}")]
    Validation(String),
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else from the ACME client.
    #[error("acme client error: {0}")]
    Other(String),
}

impl OrderError {
    /// A short word for logs and the `acme_last_error{class}` metric.
    pub fn class(&self) -> &'static str {
        match self {
            OrderError::Api(p) if is_problem(p, "rateLimited") => "rate_limited",
            OrderError::Api(_) => "rejected",
            OrderError::Network(_) => "network",
            OrderError::Timeout { .. } => "timeout",
            OrderError::Validation(_) => "validation",
            OrderError::Store(_) => "store",
            OrderError::Other(_) => "internal",
        }
    }

    /// How long the CA asked us to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            OrderError::Timeout { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The CA no longer knows our account (it was reset, or the account was deactivated).
    pub fn is_unknown_account(&self) -> bool {
        matches!(self, OrderError::Api(p) if is_problem(p, "accountDoesNotExist"))
    }
}

fn is_problem(problem: &instant_acme::Problem, kind: &str) -> bool {
    problem
        .r#type
        .as_deref()
        .is_some_and(|t| t.strip_prefix("urn:ietf:params:acme:error:") == Some(kind))
}

impl From<AcmeError> for OrderError {
    fn from(err: AcmeError) -> Self {
        match err {
            AcmeError::Api(problem) => OrderError::Api(problem),
            AcmeError::Timeout(when) => OrderError::Timeout {
                retry_after: when.map(|t| t.saturating_duration_since(std::time::Instant::now())),
            },
            err @ (AcmeError::Http(_) | AcmeError::Hyper(_) | AcmeError::InvalidUri(_)) => {
                OrderError::Network(err)
            }
            // The default client reports connection failures as `Other`.
            AcmeError::Other(inner) => OrderError::Network(AcmeError::Other(inner)),
            other => OrderError::Other(other.to_string()),
        }
    }
}

/// The account from the store, or a new one (kept in the store).
pub async fn account(config: &AcmeConfig, store: &dyn AcmeStore) -> Result<Account, OrderError> {
    if let Some(saved) = store.load_account().await?.filter(|b| !b.is_empty()) {
        match serde_json::from_slice::<AccountCredentials>(&saved) {
            Ok(credentials) => return Ok(builder(config)?.from_credentials(credentials).await?),
            Err(err) => {
                tracing::warn!(error = %err, "stored ACME account is damaged; creating a new one")
            }
        }
    }
    let contacts: Vec<&str> = config.contacts.iter().map(String::as_str).collect();
    let eab = config
        .eab
        .as_ref()
        .map(|(kid, key)| ExternalAccountKey::new(kid.clone(), key));
    let (account, credentials) = builder(config)?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            config.directory.clone(),
            eab.as_ref(),
        )
        .await?;
    let bytes = serde_json::to_vec(&credentials).map_err(|e| OrderError::Other(e.to_string()))?;
    store.save_account(&bytes).await?;
    tracing::info!(acme.account = account.id(), "created an ACME account");
    Ok(account)
}

fn builder(config: &AcmeConfig) -> Result<instant_acme::AccountBuilder, OrderError> {
    Ok(match &config.ca_root {
        Some(root) => Account::builder_with_root(root)?,
        None => Account::builder()?,
    })
}

/// Orders a certificate for the configured names, or resumes the order `state` records.
/// `state.pending` is saved to the store as the order advances and cleared when the order can
/// no longer be used; the caller saves `state` once more at the end. `replaces` names the
/// certificate this one renews (RFC 9773), when the CA offers renewal information.
pub async fn order(
    account: &Account,
    config: &AcmeConfig,
    store: &dyn AcmeStore,
    state: &mut RenewalState,
    replaces: Option<instant_acme::CertificateIdentifier<'_>>,
    validation: &Validation<'_>,
) -> Result<StoredCert, OrderError> {
    let mut order = match resume(account, state).await? {
        Some(order) => order,
        None => {
            let identifiers: Vec<Identifier> = config
                .domains
                .iter()
                .map(|d| Identifier::Dns(d.clone()))
                .collect();
            let mut new_order = NewOrder::new(&identifiers);
            if let Some(replaces) = replaces {
                new_order = new_order.replaces(replaces);
            }
            let order = account.new_order(&new_order).await?;
            // Recorded before anything else happens, for whoever has to take over.
            state.pending = Some(PendingOrder {
                url: order.url().to_string(),
                placed_at: epoch_seconds(SystemTime::now()),
                key_pem: None,
            });
            store.save_state(state).await?;
            order
        }
    };

    let retries = RetryPolicy::new().timeout(POLL_TIMEOUT);
    if order.state().status == OrderStatus::Pending {
        answer_challenges(&mut order, config, store, validation).await?;
        if order.poll_ready(&retries).await? != OrderStatus::Ready {
            // An invalid order is over: the next attempt places a new one.
            state.pending = None;
            return Err(OrderError::Validation(validation_errors(&mut order).await));
        }
    }
    let saved_key = state.pending.as_ref().and_then(|p| p.key_pem.clone());
    let key_pem = match (order.state().status, saved_key) {
        (OrderStatus::Ready, _) => finalize(&mut order, config, store, state).await?,
        // Finalized already (by the replica that placed it): its key was saved first.
        (_, Some(key_pem)) => key_pem,
        (status, None) => {
            state.pending = None;
            return Err(OrderError::Other(format!(
                "the order is {status:?} and its key was not saved"
            )));
        }
    };
    let cert_pem = order.poll_certificate(&retries).await?;
    Ok(StoredCert { cert_pem, key_pem })
}

/// The order `state` records, if it can still lead to a certificate; else clears it. A CA that
/// cannot be reached is an error (the order is kept for the next attempt), not a reason to
/// place another.
async fn resume(account: &Account, state: &mut RenewalState) -> Result<Option<Order>, OrderError> {
    let Some(pending) = state.pending.clone() else {
        return Ok(None);
    };
    match account
        .order(pending.url.clone())
        .await
        .map_err(OrderError::from)
    {
        Ok(mut order) => {
            let status = order.state().status;
            let usable = match status {
                OrderStatus::Pending | OrderStatus::Ready => true,
                OrderStatus::Processing | OrderStatus::Valid => pending.key_pem.is_some(),
                OrderStatus::Invalid => false,
            };
            if usable {
                info!(acme.order = %pending.url, acme.order_status = ?status,
                      "resuming the order placed earlier (by this or another replica)");
                return Ok(Some(order));
            }
            info!(acme.order = %pending.url, acme.order_status = ?status,
                  "the earlier order cannot be resumed; placing a new one");
        }
        Err(OrderError::Api(problem)) => {
            info!(acme.order = %pending.url, error = %problem,
                  "the CA refused the earlier order; placing a new one");
        }
        Err(err) => return Err(err),
    }
    state.pending = None;
    Ok(None)
}

/// Publishes every pending authorization's answer to the store, waits for the self-check, then
/// tells the CA the challenges are ready: its validation may reach any replica.
async fn answer_challenges(
    order: &mut Order,
    config: &AcmeConfig,
    store: &dyn AcmeStore,
    validation: &Validation<'_>,
) -> Result<(), OrderError> {
    let kind = match config.challenge {
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        ChallengeKind::Http01 => ChallengeType::Http01,
    };
    let mut answers = Vec::new();
    // The answers the CA has not been told about yet: only those need the self-check.
    let mut unsubmitted = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let name = authz.identifier().to_string();
        let challenge = authz.challenge(kind.clone()).ok_or_else(|| {
            OrderError::Other(format!("the CA offers no {kind:?} challenge for {name}"))
        })?;
        let answer = ChallengeAnswer {
            name,
            token: challenge.token.clone(),
            key_authorization: challenge.key_authorization().as_str().to_string(),
        };
        if challenge.status == ChallengeStatus::Pending {
            unsubmitted.push(answer.clone());
        }
        answers.push(answer);
    }
    store.save_challenges(&answers).await?;
    validation.answering.set(true);
    if validation.self_check.wait_answered(&unsubmitted).await == Verdict::TimedOut {
        info!("submitting the challenges although the self-check failed");
    }

    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        // A resumed order's challenge may be under validation already.
        if let Some(mut challenge) = authz.challenge(kind.clone())
            && challenge.status == ChallengeStatus::Pending
        {
            challenge.set_ready().await?;
        }
    }
    Ok(())
}

/// Finalizes with a new key, saved (in `state.pending`) before the CA sees the CSR.
async fn finalize(
    order: &mut Order,
    config: &AcmeConfig,
    store: &dyn AcmeStore,
    state: &mut RenewalState,
) -> Result<String, OrderError> {
    let rcgen_error = |e: rcgen::Error| OrderError::Other(format!("cannot make the CSR: {e}"));
    let key = KeyPair::generate().map_err(rcgen_error)?;
    let key_pem = key.serialize_pem();
    if let Some(pending) = state.pending.as_mut() {
        pending.key_pem = Some(key_pem.clone());
        store.save_state(state).await?;
    }
    let mut params = CertificateParams::new(config.domains.clone()).map_err(rcgen_error)?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(rcgen_error)?;
    order.finalize_csr(csr.der()).await?;
    Ok(key_pem)
}

/// What the CA said about each failed authorization.
async fn validation_errors(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for challenge in &authz.challenges {
            if let Some(error) = &challenge.error {
                reasons.push(format!("{}: {error}", authz.identifier()));
            }
        }
    }
    if reasons.is_empty() {
        "the order became invalid".into()
    } else {
        reasons.join("; ")
    }
}
