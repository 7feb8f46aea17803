//! Client certificates (mTLS): a verifier built from the `--client-ca` bundle that reloads
//! when the bundle changes, without touching live connections.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::file_watch::{self, Refresh};
use crate::metrics::{Metrics, Reload};

/// `--client-ca` and what goes with it: the bundle, and which certificates may pass.
#[derive(Debug, Clone)]
pub struct ClientCa {
    /// The CA file or directory.
    pub path: PathBuf,
    /// `--client-auth required`.
    pub required: bool,
    /// `--allow-san`.
    pub allow_san: Vec<String>,
    /// `--allow-cn`.
    pub allow_cn: Vec<String>,
}

/// Why the CA bundle cannot be used. At start-up this stops the proxy; on reload the last
/// good bundle stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ClientCaError {
    /// A file or the directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM block was not a usable CA certificate.
    #[error("{path}: {message}")]
    Bad {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// No certificate was found at all.
    #[error("{0} holds no PEM CERTIFICATE (give the CA that issues client certificates)")]
    Empty(PathBuf),
}

/// Reads every PEM certificate of `path` (a file, or every visible file of a directory) into
/// a root store. Names starting with `.` are skipped: kubelet keeps its `..data` links there.
pub fn load_client_roots(path: &Path) -> Result<(RootCertStore, u64), ClientCaError> {
    let read_err = |path: &Path, source| ClientCaError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| read_err(path, e))? {
            let entry = entry.map_err(|e| read_err(path, e))?;
            let file = entry.path();
            if !entry.file_name().to_string_lossy().starts_with('.') && file.is_file() {
                files.push(file);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut roots = RootCertStore::empty();
    let mut hasher = DefaultHasher::new();
    for file in &files {
        let pem = std::fs::read(file).map_err(|e| read_err(file, e))?;
        pem.hash(&mut hasher);
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let bad = |message: String| ClientCaError::Bad {
                path: file.clone(),
                message,
            };
            let cert = cert.map_err(|e| bad(format!("unreadable PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
        }
    }
    if roots.is_empty() {
        return Err(ClientCaError::Empty(path.to_path_buf()));
    }
    Ok((roots, hasher.finish()))
}

/// The verifier in force, swapped whole on reload.
#[derive(Debug)]
struct Current(Arc<dyn ClientCertVerifier>);

/// A client-certificate verifier over the `--client-ca` bundle that reloads it on change.
#[derive(Debug)]
pub struct ClientCaVerifier {
    path: PathBuf,
    required: bool,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Current>,
}

impl ClientCaVerifier {
    /// Loads the bundle at `path`; `required` refuses handshakes without a certificate.
    pub fn new(
        path: PathBuf,
        required: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<Self>, ClientCaError> {
        let (roots, _) = load_client_roots(&path)?;
        let verifier = build(roots, required, &provider, &path)?;
        Ok(Arc::new(Self {
            path,
            required,
            provider,
            current: ArcSwap::from_pointee(Current(verifier)),
        }))
    }

    /// The verifier for `--client-ca` (`None` without one), reloading until `stop`.
    pub fn spawn_for(
        client_ca: Option<&ClientCa>,
        poll_interval: Duration,
        stop: &CancellationToken,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<Arc<dyn ClientCertVerifier>>, ClientCaError> {
        let Some(ca) = client_ca else {
            return Ok(None);
        };
        let verifier = Self::new(ca.path.clone(), ca.required, super::provider())?;
        verifier.spawn_watch(poll_interval, stop.child_token(), Arc::clone(metrics));
        Ok(Some(verifier))
    }

    /// Re-reads the bundle on change and every `poll_interval` until `stop`; a bad bundle is
    /// logged and the last good one stays in force.
    /// Reloads are counted in `cert_reloads_total{source="client-ca:PATH"}`.
    fn spawn_watch(
        self: &Arc<Self>,
        poll_interval: Duration,
        stop: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> tokio::task::JoinHandle<()> {
        // A file is watched through its directory: kubelet swaps a symlink beside it.
        let dir = if self.path.is_dir() {
            self.path.clone()
        } else {
            match self.path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => PathBuf::from("."),
            }
        };
        let reloader = Reloader {
            verifier: Arc::clone(self),
            fingerprint: load_client_roots(&self.path).ok().map(|(_, f)| f),
            source: format!("client-ca:{}", self.path.display()),
            metrics,
        };
        file_watch::spawn_watch(dir, reloader, poll_interval, stop)
    }

    fn now(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.current.load().0)
    }
}

fn build(
    roots: RootCertStore,
    required: bool,
    provider: &Arc<CryptoProvider>,
    path: &Path,
) -> Result<Arc<dyn ClientCertVerifier>, ClientCaError> {
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map_err(|e| ClientCaError::Bad {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The watch side: re-reads the bundle and swaps the verifier when its content changed.
struct Reloader {
    verifier: Arc<ClientCaVerifier>,
    /// The content last loaded or refused, so an unchanged bundle is not re-reported.
    fingerprint: Option<u64>,
    /// The `source` label of the reload metric.
    source: String,
    metrics: Arc<Metrics>,
}

impl Reloader {
    fn count(&self, result: &'static str) {
        let labels = Reload {
            source: self.source.clone(),
            result,
        };
        self.metrics.cert_reloads.get_or_create(&labels).inc();
    }
}

impl Refresh for Reloader {
    async fn refresh(&mut self) {
        let v = Arc::clone(&self.verifier);
        let (roots, fingerprint) = match load_client_roots(&v.path) {
            Ok(loaded) => loaded,
            Err(err) => return self.refuse(&err, None),
        };
        if self.fingerprint == Some(fingerprint) {
            return;
        }
        match build(roots, v.required, &v.provider, &v.path) {
            Ok(verifier) => {
                v.current.store(Arc::new(Current(verifier)));
                self.fingerprint = Some(fingerprint);
                self.count("success");
                info!(client_ca = %v.path.display(), "client CA bundle reloaded");
            }
            Err(err) => self.refuse(&err, Some(fingerprint)),
        }
    }
}

impl Reloader {
    /// Logs and counts a bundle that cannot be used, once per content (`None`: unreadable).
    fn refuse(&mut self, err: &ClientCaError, fingerprint: Option<u64>) {
        // 0 stands for "unreadable", so a file that stays broken is reported once.
        let seen = fingerprint.unwrap_or(0);
        if self.fingerprint == Some(seen) {
            return;
        }
        self.fingerprint = Some(seen);
        self.count("failure");
        warn!(client_ca = %self.verifier.path.display(), error = %err, "client CA bundle not reloaded; keeping the last good one");
    }
}

impl ClientCertVerifier for ClientCaVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    /// No hints: they would have to outlive a reload. Clients then offer any certificate
    /// they have, which the verifier still checks.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.now()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.now().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.now().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.now().supported_verify_schemes()
    }
}

/// Whether a failed handshake was the client's certificate (missing, untrusted, expired), for
/// the `handshake_failures_total{reason="client_cert"}` metric.
pub fn is_client_cert_error(err: &std::io::Error) -> bool {
    matches!(
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(
            rustls::Error::NoCertificatesPresented
                | rustls::Error::InvalidCertificate(_)
                | rustls::Error::InvalidCertRevocationList(_)
        )
    )
}
