//! The ACME account's own Secret (`NAME-account`) beside the store Secret: reading and writing
//! it, moving the account out of a store written before the split (the account Secret first,
//! then the old key removed, so no new ACME account is made), and what to tell the user when
//! one of the store's objects does not exist.

use super::{ACCOUNT, SecretStore};
use crate::acme::store::StoreError;
use crate::k8s::{
    self, ApiError, LeaseApi, SecretApi, SecretData, SecretWrite, Versioned, WriteError,
};
use tracing::info;

/// The account Secret's directory URL: an account is the CA's, whatever the names.
pub(super) const ACCOUNT_DIRECTORY: &str = "acme-directory";
/// The account Secret's name is the store's with this suffix.
const ACCOUNT_SUFFIX: &str = "-account";

/// The account Secret's name for the store Secret `store`.
pub fn account_secret_name(store: &str) -> String {
    format!("{store}{ACCOUNT_SUFFIX}")
}

/// One of the objects a Secret store needs made beforehand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Object {
    /// The store Secret `NAME` (`kubernetes.io/tls`).
    Store,
    /// The account Secret `NAME-account`.
    Account,
    /// The Lease `NAME`.
    Lease,
}

impl<S: SecretApi, L: LeaseApi> SecretStore<S, L> {
    /// [`StoreError::Missing`] for `object`, with the `kubectl` line that makes it.
    pub(super) fn missing(&self, object: Object) -> StoreError {
        let what = match object {
            Object::Account => self.account.describe(),
            Object::Store | Object::Lease => self.secret.describe(),
        };
        let (namespace, name) = what.split_once('/').unwrap_or(("default", &what));
        let create = match object {
            // A kubernetes.io/tls Secret needs both keys; empty values are valid
            // (pkg/apis/core/validation/validation.go, ValidateSecret, SecretTypeTLS).
            Object::Store => format!(
                "kubectl -n {namespace} create secret generic {name} --type=kubernetes.io/tls \
                 --from-literal=tls.crt= --from-literal=tls.key="
            ),
            Object::Account => format!("kubectl -n {namespace} create secret generic {name}"),
            // kubectl has no `create lease`; an empty spec is valid.
            Object::Lease => format!(
                "kubectl -n {namespace} create -f - <<< '{{\"apiVersion\":\"coordination.k8s.io/v1\",\
                 \"kind\":\"Lease\",\"metadata\":{{\"name\":\"{name}\"}}}}'"
            ),
        };
        let kind = if object == Object::Lease {
            "Lease"
        } else {
            "Secret"
        };
        StoreError::Missing { kind, what, create }
    }

    /// A write's error as the store reports it: a missing Secret is [`StoreError::Missing`].
    pub(super) fn write_error(&self, object: Object, err: WriteError<StoreError>) -> StoreError {
        match err {
            WriteError::Api(ApiError::NotFound(_)) => self.missing(object),
            WriteError::Api(source) => StoreError::Api {
                what: match object {
                    Object::Account => format!("Secret {}", self.account.describe()),
                    _ => format!("Secret {}", self.secret.describe()),
                },
                source,
            },
            WriteError::Change(err) => err,
        }
    }

    /// The account Secret's credentials, if they are for our directory; `None` for another
    /// directory's (the next save replaces them). [`StoreError::Missing`] without the Secret.
    async fn read_account(&self) -> Result<(Versioned<SecretData>, Option<Vec<u8>>), StoreError> {
        let Some(secret) = self.account.get().await.map_err(|source| StoreError::Api {
            what: format!("Secret {}", self.account.describe()),
            source,
        })?
        else {
            return Err(self.missing(Object::Account));
        };
        let ours = secret.value.get(ACCOUNT_DIRECTORY).map(Vec::as_slice)
            == Some(self.scope.directory.as_bytes());
        let credentials = secret
            .value
            .get(ACCOUNT)
            .filter(|b| ours && !b.is_empty())
            .cloned();
        Ok((secret, credentials))
    }

    /// Writes `credentials` (empty: none) for our directory to the account Secret.
    async fn write_account(
        &self,
        current: Versioned<SecretData>,
        credentials: &[u8],
    ) -> Result<(), StoreError> {
        let directory = self.scope.directory.as_bytes().to_vec();
        let change = |_: &SecretData| {
            Ok::<_, StoreError>(Some(SecretWrite::from(SecretData::from([
                (ACCOUNT_DIRECTORY.to_string(), directory.clone()),
                (ACCOUNT.to_string(), credentials.to_vec()),
            ]))))
        };
        match k8s::modify_existing(&self.account, Some(current), change).await {
            Ok(_) => Ok(()),
            Err(err) => Err(self.write_error(Object::Account, err)),
        }
    }
    /// The account credentials; a store from before the split has them moved first.
    pub(super) async fn account_moving_old(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let (account, credentials) = self.read_account().await?;
        let legacy = self.load().await?.legacy_account;
        match (credentials, legacy) {
            (Some(credentials), None) => Ok(Some(credentials)),
            // Moved by a replica that then stopped short of removing the old key.
            (Some(credentials), Some(_)) => {
                self.modify(|doc| doc.legacy_account = None).await?;
                Ok(Some(credentials))
            }
            // A store from before the split: move the account (the account Secret first, so a
            // crash between the two writes loses nothing), then drop the key from the store.
            (None, Some(legacy)) => {
                self.write_account(account, &legacy).await?;
                self.modify(|doc| doc.legacy_account = None).await?;
                info!(acme.store = %self.secret.describe(), acme.account = %self.account.describe(),
                      "moved the ACME account out of the store Secret into its own");
                Ok(Some(legacy))
            }
            (None, None) => Ok(None),
        }
    }

    /// Keeps `credentials` in the account Secret, and drops an old copy in the store Secret.
    pub(super) async fn write_account_dropping_old(
        &self,
        credentials: &[u8],
    ) -> Result<(), StoreError> {
        let (account, _) = self.read_account().await?;
        self.write_account(account, credentials).await?;
        // A replaced (or dropped) account must not come back from an old key.
        if self.load().await?.legacy_account.is_some() {
            self.modify(|doc| doc.legacy_account = None).await?;
        }
        Ok(())
    }
}
