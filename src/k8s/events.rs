//! Kubernetes Events on the sidecar's own pod (`kubectl describe pod` shows them): certificate
//! obtained, renewed, reload failed, ACME failure. Best effort: a Role without
//! `create events` is logged once as a warning and events stop; nothing else changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::{debug, warn};

/// The API limits an event's note to 1 kB.
const NOTE_LIMIT: usize = 1024;

/// Why an event is emitted; the variant name is the event's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// ACME issued the first certificate.
    CertificateObtained,
    /// ACME issued a renewal.
    CertificateRenewed,
    /// A certificate source offered a pair that was refused; the previous one keeps serving.
    CertificateReloadFailed,
    /// An ACME order failed; it is retried with back-off.
    AcmeOrderFailed,
}

impl Reason {
    fn name(self) -> &'static str {
        match self {
            Reason::CertificateObtained => "CertificateObtained",
            Reason::CertificateRenewed => "CertificateRenewed",
            Reason::CertificateReloadFailed => "CertificateReloadFailed",
            Reason::AcmeOrderFailed => "AcmeOrderFailed",
        }
    }

    fn warning(self) -> bool {
        matches!(
            self,
            Reason::CertificateReloadFailed | Reason::AcmeOrderFailed
        )
    }
}

/// Emits events about one pod; a no-op when built with [`Events::disabled`]. Cheap to clone.
#[derive(Clone, Default)]
pub struct Events {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    recorder: Recorder,
    pod: ObjectReference,
    /// Set after a 403: the Role does not allow events, so stop asking.
    forbidden: AtomicBool,
}

impl Events {
    /// Emits nothing (outside a cluster, or no pod name known).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Events about the pod `name` in `namespace`, sent through `client`.
    pub fn for_pod(client: kube::Client, namespace: &str, name: &str) -> Self {
        let reporter = Reporter {
            controller: "wss-sidecar".into(),
            instance: Some(name.into()),
        };
        let pod = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            uid: std::env::var("POD_UID").ok().filter(|u| !u.is_empty()),
            ..Default::default()
        };
        Self {
            inner: Some(Arc::new(Inner {
                recorder: Recorder::new(client, reporter),
                pod,
                forbidden: AtomicBool::new(false),
            })),
        }
    }

    /// Events about this pod when `POD_NAME` and the namespace are known, else disabled.
    pub fn from_env(client: kube::Client) -> Self {
        let name = std::env::var("POD_NAME").ok().filter(|n| !n.is_empty());
        match (name, super::target::own_namespace()) {
            (Some(name), Some(namespace)) => Self::for_pod(client, &namespace, &name),
            _ => {
                debug!("POD_NAME or the namespace unknown: no Kubernetes events");
                Self::disabled()
            }
        }
    }

    /// Sends an event in the background; failures are logged, never returned.
    pub fn emit(&self, reason: Reason, note: impl Into<String>) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.forbidden.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut note = note.into();
        if note.len() > NOTE_LIMIT {
            let mut cut = NOTE_LIMIT;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let inner = Arc::clone(inner);
        runtime.spawn(async move {
            let event = Event {
                type_: if reason.warning() {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: reason.name().into(),
                note: Some(note),
                action: "Certificate".into(),
                secondary: None,
            };
            let publish = inner.recorder.publish(&event, &inner.pod);
            let Ok(published) = tokio::time::timeout(super::client::API_CALL_TIMEOUT, publish).await
            else {
                warn!(event.reason = reason.name(), "cannot send a kubernetes event: the API did not answer in time");
                return;
            };
            match published {
                Ok(()) => debug!(event.reason = reason.name(), "kubernetes event sent"),
                Err(kube::Error::Api(status)) if status.code == 403 => {
                    if !inner.forbidden.swap(true, Ordering::Relaxed) {
                        warn!(error = %status.message,
                              "the Role does not allow creating events (events.k8s.io); events are off");
                    }
                }
                Err(err) => warn!(error = %err, event.reason = reason.name(), "cannot send a kubernetes event"),
            }
        });
    }
}
