//! The set of serving certificates: sources publish into slots, handshakes read a snapshot.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tracing::{info, warn};

use super::pair::{CertError, LoadedCert};
use crate::clock::epoch_seconds;
use crate::k8s::{Events, Reason};
use crate::metrics::{Metrics, Reload, Source};

/// The certificates being served, in source order. Swapped whole on every publish, so a
/// handshake sees either the old set or the new one, and live connections are never touched.
#[derive(Debug, Default)]
pub struct Snapshot {
    certs: Vec<Arc<LoadedCert>>,
}

impl Snapshot {
    /// True when at least one certificate can be served.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The certificate for `server_name`: an exact name first, then a wildcard, then the first
    /// certificate. Among equal matches, the first whose key can sign with one of `schemes`.
    pub fn select(
        &self,
        server_name: Option<&str>,
        schemes: &[rustls::SignatureScheme],
    ) -> Option<&Arc<LoadedCert>> {
        let usable = |c: &&Arc<LoadedCert>| c.key.key.choose_scheme(schemes).is_some();
        if let Some(name) = server_name.map(str::to_ascii_lowercase) {
            let exact = |c: &&Arc<LoadedCert>| c.names.contains(&name);
            let wild = |c: &&Arc<LoadedCert>| c.names.iter().any(|n| wildcard_matches(n, &name));
            for matches in [&exact as &dyn Fn(&&Arc<LoadedCert>) -> bool, &wild] {
                let mut candidates = self.certs.iter().filter(|c| matches(c)).peekable();
                if let Some(first) = candidates.peek().copied() {
                    return Some(candidates.find(usable).unwrap_or(first));
                }
            }
        }
        self.certs.iter().find(usable).or(self.certs.first())
    }
}

/// `*.example.com` covers exactly one label: `a.example.com`, not `example.com` or
/// `a.b.example.com` (RFC 6125 §6.4.3).
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    match name.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest == suffix,
        None => false,
    }
}

/// Holds one slot per certificate source and the snapshot built from them.
pub struct CertStore {
    slots: Mutex<Vec<Option<Arc<LoadedCert>>>>,
    snapshot: ArcSwap<Snapshot>,
    metrics: Arc<Metrics>,
    /// Kubernetes Events about the pod, once a Kubernetes client exists.
    events: OnceLock<Events>,
}

/// Only the type's name: the key material must never reach a log line.
impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl CertStore {
    /// An empty store.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            slots: Mutex::new(Vec::new()),
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            metrics,
            events: OnceLock::new(),
        })
    }

    /// Reports refused pairs as Kubernetes Events too (set once; later calls are ignored).
    pub fn set_events(&self, events: Events) {
        let _ = self.events.set(events);
    }

    /// Adds a source; its certificates rank after those of sources registered before it.
    pub fn register(self: &Arc<Self>, label: impl Into<String>) -> Publisher {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.push(None);
        Publisher {
            store: Arc::clone(self),
            slot: slots.len() - 1,
            label: label.into(),
        }
    }

    /// The current certificates; cheap enough to call on every handshake.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    fn set(&self, slot: usize, cert: Arc<LoadedCert>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = slots.get_mut(slot) {
            *entry = Some(cert);
        }
        let certs = slots.iter().flatten().cloned().collect();
        self.snapshot.store(Arc::new(Snapshot { certs }));
    }
}

/// A source's handle for publishing validated pairs and reporting refused ones.
pub struct Publisher {
    store: Arc<CertStore>,
    slot: usize,
    label: String,
}

impl Publisher {
    /// The source's label in logs and metrics (`dir:/etc/tls`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Serves `cert` from now on for this source.
    pub fn publish(&self, cert: LoadedCert) {
        let metrics = &self.store.metrics;
        let source = Source {
            source: self.label.clone(),
        };
        metrics
            .cert_not_after
            .get_or_create(&source)
            .set(cert.not_after);
        metrics
            .cert_last_reload
            .get_or_create(&source)
            .set(epoch_seconds(SystemTime::now()));
        metrics
            .cert_reloads
            .get_or_create(&self.reload_label("success"))
            .inc();
        info!(
            cert.source = %self.label,
            cert.names = ?cert.names,
            cert.not_after = cert.not_after,
            "certificate loaded"
        );
        self.store.set(self.slot, Arc::new(cert));
    }

    /// Records a refused pair; whatever this source served before keeps serving.
    pub fn reject(&self, err: &CertError) {
        self.store
            .metrics
            .cert_reloads
            .get_or_create(&self.reload_label("failure"))
            .inc();
        warn!(
            cert.source = %self.label,
            error.reason = err.reason(),
            error = %err,
            "certificate refused; the previous certificate keeps serving"
        );
        self.event(
            Reason::CertificateReloadFailed,
            format!(
                "{}: {err}; the previous certificate keeps serving",
                self.label
            ),
        );
    }

    /// Reports `reason` as a Kubernetes Event on the pod, when events are on.
    pub fn event(&self, reason: Reason, note: String) {
        if let Some(events) = self.store.events.get() {
            events.emit(reason, note);
        }
    }

    fn reload_label(&self, result: &'static str) -> Reload {
        Reload {
            source: self.label.clone(),
            result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(wildcard_matches("*.example.com", "a.example.com"));
        assert!(!wildcard_matches("*.example.com", "example.com"));
        assert!(!wildcard_matches("*.example.com", "a.b.example.com"));
        assert!(!wildcard_matches("*.example.com", ".example.com"));
        assert!(!wildcard_matches("example.com", "example.com"));
    }
}
