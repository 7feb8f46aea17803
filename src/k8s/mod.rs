//! The Kubernetes API, for certificates kept in Secrets: narrow traits over one Secret and one
//! Lease ([`api`]) with kube behind them ([`client`]), leader election ([`lease`]), object
//! references and the pod's namespace ([`target`]), and Events on the pod ([`events`]).

pub mod api;
pub mod client;
pub mod events;
pub mod lease;
#[cfg(test)]
pub(crate) mod memory;
pub mod target;

pub use api::{ApiError, LeaseApi, LeaseState, SecretApi, SecretData, SecretEvent, Versioned};
pub use events::{Events, Reason};
pub use target::ObjectRef;
