//! `wss-sidecar injector`: the mutating admission webhook that adds the sidecar to labelled pods.
//!
//! - `config`: what the injector is told to do (built from its flags by [`crate::config`]).
//! - `flags`: the proxy's command line, handed over by [`crate::config`], that annotations
//!   are checked against.
//! - [`annotations`]: pod annotations → checked `proxy` arguments; `mounts`: the
//!   `wss-sidecar.io/mounts` annotation.
//! - `checks`: what the pod as a whole must be for the sidecar to run (refusals, warnings).
//! - `container`: the injected container and its volumes.
//! - `patch`, `inject`: the JSON Patch for one pod, or why it is skipped or denied.
//! - `review`: `AdmissionReview` JSON in and out (patch base64 on the wire).
//! - `webhook`: the webhook's HTTPS handler, on the crate's one small-HTTP server.
//! - [`selfcert`]: the self-managed serving certificate (Secret + Lease + `caBundle`).
//! - [`version`]: the API server's version → native or plain sidecars, app `preStop: sleep`.
//! - [`skew`]: the sidecar image's release → the flags, probes and hooks it understands.

pub mod annotations;
pub(crate) mod checks;
pub(crate) mod config;
pub(crate) mod container;
pub(crate) mod flags;
pub(crate) mod inject;
pub(crate) mod mounts;
pub(crate) mod patch;
pub(crate) mod review;
pub mod selfcert;
pub mod skew;
pub mod version;
pub(crate) mod webhook;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{Config, SelfManaged, ServingCert};
pub use container::{SidecarMode, SidecarTemplate};
pub use flags::{ProxyFlags, ProxyLine};
pub use inject::{Outcome, inject, stop_warnings};

use crate::certs::{CertStore, DirSource};
use crate::http::Readiness;
use crate::http::admin;
use crate::k8s::ApiError;
use crate::metrics::Metrics;
use crate::tls::{self, Resolver};
use selfcert::{Manager, Objects};

/// The serving certificate is re-read this often even without a change event (as the proxy's
/// `--cert-poll-interval` default).
const CERT_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The listeners `run` serves on, bound by the caller (tests bind port 0).
pub struct Listeners {
    /// The HTTPS (webhook) listener.
    pub https: TcpListener,
    /// The admin listener.
    pub admin: Option<TcpListener>,
}

/// Why the injector could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The TLS configuration could not be built.
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// Without `--cert-dir` the certificate is managed through the Kubernetes API, and there is
    /// no configuration to reach it.
    #[error("--cert-dir: not given, and no Kubernetes API to manage a certificate through: {0}")]
    NoKubernetes(ApiError),
}

impl RunError {
    /// The flag at fault, when the failure is the user's configuration to fix.
    pub fn flag(&self) -> Option<&'static str> {
        match self {
            Self::NoKubernetes(_) => Some("--cert-dir"),
            Self::Tls(_) => None,
        }
    }

    /// The process exit code: [`crate::EXIT_CONFIG`] when a flag is at fault, else 1.
    pub fn exit_code(&self) -> u8 {
        crate::exit_code(self.flag())
    }
}

/// Runs the webhook until `shutdown` resolves (or `POST /lame-duck` from loopback), then stays
/// not ready but serving for `--lame-duck`, then finishes the requests in flight.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let store = CertStore::new(Arc::clone(&metrics));
    let stop = CancellationToken::new();
    let _stop_all = stop.clone().drop_guard();
    match &config.serving_cert {
        ServingCert::Dir(dir) => {
            let (poll, stop) = (CERT_POLL_INTERVAL, stop.child_token());
            DirSource::start(&store, dir, tls::provider(), poll, stop).await;
        }
        ServingCert::SelfManaged(managed) => {
            spawn_self_managed(managed, &store, stop.child_token()).await?
        }
    }
    let tls_config = tls::server_config(Arc::new(Resolver::new(Arc::clone(&store))), None)?;
    let readiness = Arc::new(Readiness::new(Arc::clone(&store)));
    let lame_duck = CancellationToken::new();
    admin::spawn(
        listeners.admin,
        &readiness,
        &metrics,
        Some(&lame_duck),
        stop.child_token(),
    );
    let image = config.template.image.clone();
    let release = &config.template.release;
    if let Some(why) = release.assumed() {
        warn!(image = %image, "sidecar release: {why}");
    }
    if let Some(changes) = release.warning() {
        warn!(image = %image, sidecar.version = %release.version(), "{changes}");
    }
    let mut template = config.template;
    version::adapt(&mut template, config.sidecar_mode).await;
    let state = Arc::new(webhook::WebhookState {
        template: Arc::new(template),
        readiness: Arc::clone(&readiness),
        metrics: Arc::clone(&metrics),
    });
    let serve_stop = stop.child_token();
    let https_addr = listeners.https.local_addr().ok();
    let serving = tokio::spawn(webhook::serve(
        listeners.https,
        tokio_rustls::TlsAcceptor::from(tls_config),
        state,
        serve_stop.clone(),
    ));
    readiness.set_listening(true);
    let listen = https_addr.unwrap_or(config.listen);
    info!(listen = %listen, image = %image, "injector serving");
    tokio::select! {
        () = shutdown => {}
        () = lame_duck.cancelled() => {}
    }
    // With `failurePolicy: Fail` a webhook that refuses connections fails pod creations, and
    // the Service's endpoints go away asynchronously: stay not ready, still serving, first.
    readiness.set_draining();
    if !config.lame_duck.is_zero() {
        info!(lame_duck = ?config.lame_duck, "lame duck: not ready, still serving admissions");
        tokio::time::sleep(config.lame_duck).await;
    }
    serve_stop.cancel();
    let _ = serving.await;
    info!("injector stopped");
    Ok(())
}

/// Starts the self-managed certificate: needs the Kubernetes API (in-cluster or kubeconfig).
async fn spawn_self_managed(
    managed: &SelfManaged,
    store: &Arc<CertStore>,
    stop: CancellationToken,
) -> Result<(), RunError> {
    let client = crate::k8s::client::connect()
        .await
        .map_err(RunError::NoKubernetes)?;
    let namespace = managed.namespace.clone();
    let service = &managed.service_name;
    let names = vec![
        service.clone(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    let identity = managed.pod_name.clone().unwrap_or_else(host_name);
    let publisher = store.register("self-managed");
    info!(secret = %managed.secret, lease = %managed.lease, identity = %identity,
          "managing the injector's own serving certificate");
    let managed = managed.clone();
    tokio::spawn(async move {
        let (secret, lease, webhook) = (&managed.secret, &managed.lease, &managed.webhook_name);
        let owned = Objects::kube_owned(client, &namespace, secret, lease, webhook, &stop).await;
        if let Some(objects) = owned {
            let _ = Manager::new(objects, identity, names, publisher)
                .spawn(stop)
                .await;
        }
    });
    Ok(())
}

/// This host's name (a pod's name in Kubernetes), for the Lease when --pod-name is not set.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|n| n.trim().to_string())
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("injector-{}", std::process::id()))
}

/// The injector's configuration with every default (and `--cert-dir /`), for tests.
#[cfg(test)]
pub(crate) fn default_config() -> Config {
    use clap::Parser;
    match crate::config::Cli::try_parse_from(["wss-sidecar", "injector", "--cert-dir", "/"]) {
        Ok(crate::config::Cli {
            command: crate::config::Command::Injector(args),
        }) => args.into_config().expect("the defaults are valid"),
        other => panic!("injector defaults do not parse: {other:?}"),
    }
}
