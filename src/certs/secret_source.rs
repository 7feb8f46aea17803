//! Certificates from a `kubernetes.io/tls` Secret watched through the Kubernetes API: a change
//! is served as soon as the watch reports it, with no volume and no kubelet sync delay.
//!
//! The pair goes through the same validation as files (`tls.crt` with its chain, `tls.key` in
//! PKCS#1, SEC1 or PKCS#8; `ca.crt` is not needed). A deleted or invalid Secret leaves the
//! last good pair serving, and is logged and counted.

use std::sync::Arc;
use std::time::SystemTime;

use futures_util::StreamExt;
use rustls::crypto::CryptoProvider;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::pair::{CertError, fingerprint, load_pair};
use super::store::Publisher;
use crate::k8s::{SecretApi, SecretData, SecretEvent};

/// The Secret keys a `kubernetes.io/tls` Secret holds its pair in.
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";

/// One watched Secret.
pub struct SecretSource<S: SecretApi> {
    api: S,
    publisher: Publisher,
    provider: Arc<CryptoProvider>,
    /// What was last seen: a pair's fingerprint, or 0 for "nothing usable".
    last_fingerprint: Option<u64>,
}

impl<S: SecretApi> SecretSource<S> {
    /// A source for the Secret behind `api`, publishing through `publisher`.
    pub fn new(api: S, publisher: Publisher, provider: Arc<CryptoProvider>) -> Self {
        Self {
            api,
            publisher,
            provider,
            last_fingerprint: None,
        }
    }

    /// Follows the Secret until `stop`.
    pub fn spawn_watch(mut self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut events = self.api.watch();
            info!(cert.source = %self.publisher.label(), "watching the certificate Secret");
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    event = events.next() => match event {
                        Some(event) => self.apply(event),
                        None => return,
                    },
                }
            }
        })
    }

    /// Publishes what the watch reported, if it is new and valid.
    pub fn apply(&mut self, event: SecretEvent) {
        match event {
            SecretEvent::Applied(secret) => self.load(&secret.value),
            SecretEvent::Absent => self.missing(format!(
                "the Secret {} does not exist; the previous certificate keeps serving",
                self.api.describe()
            )),
            SecretEvent::Interrupted(why) => warn!(
                cert.source = %self.publisher.label(),
                error = %why,
                "the watch of the certificate Secret broke; reconnecting"
            ),
        }
    }

    fn load(&mut self, data: &SecretData) {
        let (Some(cert), Some(key)) = (data.get(TLS_CRT), data.get(TLS_KEY)) else {
            return self.missing(format!(
                "the Secret {} has no {TLS_CRT} and {TLS_KEY}",
                self.api.describe()
            ));
        };
        let fingerprint = fingerprint(cert, key);
        if self.last_fingerprint == Some(fingerprint) {
            return;
        }
        self.last_fingerprint = Some(fingerprint);
        match load_pair(cert, key, &self.provider, SystemTime::now()) {
            Ok(pair) => self.publisher.publish(pair),
            Err(err) => self.publisher.reject(&err),
        }
    }

    /// Reports that nothing can be loaded, once until something loadable appears again.
    fn missing(&mut self, why: String) {
        if self.last_fingerprint != Some(0) {
            self.last_fingerprint = Some(0);
            self.publisher.reject(&CertError::Missing(why));
        }
    }
}
