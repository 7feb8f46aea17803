//! Picks the certificate for each handshake from the store's current snapshot by SNI.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::certs::CertStore;

/// Reads the certificate store on every handshake, so a reload takes effect for the next
/// handshake without touching established connections.
#[derive(Debug)]
pub struct Resolver {
    store: Arc<CertStore>,
}

impl Resolver {
    /// A resolver over `store`.
    pub fn new(store: Arc<CertStore>) -> Self {
        Self { store }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.store.snapshot();
        snapshot
            .select(hello.server_name(), hello.signature_schemes())
            .map(|cert| Arc::clone(&cert.key))
    }
}
