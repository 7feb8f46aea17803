//! The Kubernetes API, for certificates kept in Secrets: narrow traits over one Secret, one
//! Lease and one webhook configuration (`api`) with kube behind them and the one client
//! constructor ([`client`]), the one way to write a Secret (`write`), leader election on a
//! Lease ([`lease`]), object references and the pod's namespace (`target`), and Events on the
//! pod (`events`).

pub(crate) mod api;
pub mod client;
pub(crate) mod events;
pub mod lease;
#[cfg(test)]
pub(crate) mod memory;
pub(crate) mod target;
pub(crate) mod write;

pub use api::{
    ApiError, LeaseApi, LeaseState, SecretApi, SecretData, SecretEvent, Versioned, WebhookApi,
    WebhookBundles,
};
pub use events::{Events, Reason};
pub use target::ObjectRef;
pub use write::{SecretWrite, WriteError, Written, modify, modify_existing};
