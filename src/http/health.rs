//! Health: `/healthz` (the process answers), `/startupz` (the listeners are bound and the
//! certificate sources run: "started", never "has a certificate") and `/readyz` (a certificate
//! is loaded, or an ACME order this replica can answer is in flight; and we are not draining),
//! the same on the admin port and the webhook's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::{Method, Request, Response, StatusCode};

use super::reply::{Body, text};
use crate::certs::CertStore;

/// The answer to `GET /healthz` (or `/livez`), `/startupz` and `/readyz`; `None` for other
/// requests.
pub fn answer<B>(req: &Request<B>, readiness: &Readiness) -> Option<Response<Body>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let verdict = |result: Result<&'static str, &'static str>| match result {
        Ok(body) => text(StatusCode::OK, body),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    };
    match req.uri().path() {
        "/healthz" | "/livez" => Some(text(StatusCode::OK, "ok\n")),
        "/startupz" => Some(verdict(readiness.startup())),
        "/readyz" => Some(verdict(readiness.status())),
        _ => None,
    }
}

/// Set by the ACME manager while the answers to an order in flight are in its store, where
/// this replica's challenge responder finds them; and while the store's Secret or Lease does
/// not exist (the readiness reason says so).
#[derive(Debug, Default)]
pub struct AcmeAnswering(AtomicBool, AtomicBool);

/// `/readyz`'s reason while the ACME store's objects are missing (the log names them and the
/// command that makes them).
pub const NOT_READY_STORE_MISSING: &str =
    "the ACME store's Secret or Lease does not exist: create it (the log says how)";

impl AcmeAnswering {
    /// Records whether the ACME store's Secret or Lease is missing.
    pub fn set_store_missing(&self, missing: bool) {
        self.1.store(missing, Ordering::SeqCst);
    }

    /// Whether the ACME store's Secret or Lease is missing.
    pub fn store_missing(&self) -> bool {
        self.1.load(Ordering::SeqCst)
    }

    /// Whether this replica can answer the CA's validation now.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Records whether the store holds answers for an order in flight.
    pub fn set(&self, answering: bool) {
        self.0.store(answering, Ordering::SeqCst);
    }
}

/// The body of `/readyz` while no certificate is loaded and a challenge is being answered
/// (tests tell it from a loaded certificate's `ready`).
pub const READY_SOLVING: &str = "ready: answering an ACME challenge, no certificate yet\n";

/// The state `/startupz` and `/readyz` report.
pub struct Readiness {
    store: Arc<CertStore>,
    listening: AtomicBool,
    started: AtomicBool,
    draining: AtomicBool,
    acme: Arc<AcmeAnswering>,
}

impl Readiness {
    /// Not started, nor ready, until the listener is bound; not ready until a certificate is
    /// loaded (or an ACME challenge is being answered).
    pub fn new(store: Arc<CertStore>) -> Self {
        Self {
            store,
            listening: AtomicBool::new(false),
            started: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            acme: Arc::default(),
        }
    }

    /// The flag the ACME manager sets while its challenge answers are in the store.
    pub fn acme_answering(&self) -> Arc<AcmeAnswering> {
        Arc::clone(&self.acme)
    }

    /// The TLS listener is accepting (the certificate sources were started before it). The
    /// first call marks the process started, for good.
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::SeqCst);
        if listening {
            self.started.store(true, Ordering::SeqCst);
        }
    }

    /// Shutdown has begun: from now on, never ready again.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// `Ok` once started (the listeners bound, the sources running), else why not. It never
    /// waits for a certificate: a native sidecar's startupProbe holds back the app containers
    /// (kubelet: pkg/kubelet/kuberuntime/kuberuntime_container.go, computeInitContainerActions
    /// starts the next container only once a restartable init container's startup probe
    /// succeeded), and a CA must never hold back the app.
    pub fn startup(&self) -> Result<&'static str, &'static str> {
        if self.started.load(Ordering::SeqCst) {
            Ok("started\n")
        } else {
            Err("listeners not bound yet")
        }
    }

    /// `Ok` with the `/readyz` body when ready, else why not. Without a certificate, an ACME
    /// order this replica can answer keeps it ready: Services send traffic only to Ready
    /// endpoints (kube-proxy: pkg/proxy/topology.go, CategorizeEndpoints; the EndpointSlice's
    /// `ready` is the pod's Ready condition: k8s.io/endpointslice utils.go, podToEndpoint), so
    /// the CA's validation could never reach a pod that waits for its certificate to be ready.
    pub fn status(&self) -> Result<&'static str, &'static str> {
        if self.draining.load(Ordering::SeqCst) {
            return Err("draining");
        }
        if !self.listening.load(Ordering::SeqCst) {
            return Err("listener not bound");
        }
        if !self.store.snapshot().is_empty() {
            return Ok("ready\n");
        }
        if self.acme.get() {
            return Ok(READY_SOLVING);
        }
        if self.acme.store_missing() {
            return Err(NOT_READY_STORE_MISSING);
        }
        Err("no valid certificate loaded")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn readiness() -> Readiness {
        Readiness::new(CertStore::new(Arc::new(Metrics::new())))
    }

    #[test]
    fn started_once_listening_and_never_waits_for_a_certificate() {
        let r = readiness();
        assert!(r.startup().is_err());
        r.set_listening(true);
        assert_eq!(r.startup(), Ok("started\n"));
        assert_eq!(r.status(), Err("no valid certificate loaded"));
        // Started for good: the drain does not restart the container.
        r.set_draining();
        r.set_listening(false);
        assert!(r.startup().is_ok());
    }

    #[test]
    fn ready_without_a_certificate_only_while_answering_and_never_while_draining() {
        let r = readiness();
        let answering = r.acme_answering();
        answering.set(true);
        assert_eq!(r.status(), Err("listener not bound"));
        r.set_listening(true);
        assert_eq!(r.status(), Ok(READY_SOLVING));
        answering.set(false);
        assert_eq!(r.status(), Err("no valid certificate loaded"));
        answering.set(true);
        r.set_draining();
        assert_eq!(r.status(), Err("draining"));
    }
}
