//! One ACME order with instant-acme: account, challenges published to the store before the CA
//! is told they are ready, finalize, download.

use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Error as AcmeError,
    ExternalAccountKey, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

use super::store::{AcmeStore, ChallengeAnswer, StoreError, StoredCert};
use crate::config::acme::{AcmeConfig, ChallengeKind};

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

/// Orders a certificate for the configured names. `replaces` names the certificate this one
/// renews (RFC 9773), when the CA offers renewal information.
pub async fn order(
    account: &Account,
    config: &AcmeConfig,
    store: &dyn AcmeStore,
    replaces: Option<instant_acme::CertificateIdentifier<'_>>,
) -> Result<StoredCert, OrderError> {
    let identifiers: Vec<Identifier> = config
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut new_order = NewOrder::new(&identifiers);
    if let Some(replaces) = replaces {
        new_order = new_order.replaces(replaces);
    }
    let mut order = account.new_order(&new_order).await?;
    let kind = match config.challenge {
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        ChallengeKind::Http01 => ChallengeType::Http01,
    };

    // Publish every answer before telling the CA: its validation may reach any replica.
    let mut answers = Vec::new();
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
        answers.push(ChallengeAnswer {
            name,
            token: challenge.token.clone(),
            key_authorization: challenge.key_authorization().as_str().to_string(),
        });
    }
    store.save_challenges(&answers).await?;

    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        if let Some(mut challenge) = authz.challenge(kind.clone()) {
            challenge.set_ready().await?;
        }
    }

    let retries = RetryPolicy::new().timeout(POLL_TIMEOUT);
    if order.poll_ready(&retries).await? != OrderStatus::Ready {
        return Err(OrderError::Validation(validation_errors(&mut order).await));
    }
    let key_pem = order.finalize().await?;
    let cert_pem = order.poll_certificate(&retries).await?;
    Ok(StoredCert { cert_pem, key_pem })
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
