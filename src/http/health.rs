//! Health: `/healthz` (the process answers) and `/readyz` (a certificate is loaded, the
//! listener is bound, and we are not draining), the same on the admin port and the webhook's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::{Method, Request, Response, StatusCode};

use super::reply::{Body, text};
use crate::certs::CertStore;

/// The answer to `GET /healthz` (or `/livez`) and `GET /readyz`; `None` for other requests.
pub fn answer<B>(req: &Request<B>, readiness: &Readiness) -> Option<Response<Body>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    match req.uri().path() {
        "/healthz" | "/livez" => Some(text(StatusCode::OK, "ok\n")),
        "/readyz" => Some(match readiness.check() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        }),
        _ => None,
    }
}

/// The state `/readyz` reports.
pub struct Readiness {
    store: Arc<CertStore>,
    listening: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    /// Not ready until the listener is bound and a certificate loaded.
    pub fn new(store: Arc<CertStore>) -> Self {
        Self {
            store,
            listening: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }

    /// The TLS listener is accepting.
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::SeqCst);
    }

    /// Shutdown has begun: from now on, never ready again.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::SeqCst) {
            return Err("draining");
        }
        if !self.listening.load(Ordering::SeqCst) {
            return Err("listener not bound");
        }
        if self.store.snapshot().is_empty() {
            return Err("no valid certificate loaded");
        }
        Ok(())
    }
}
