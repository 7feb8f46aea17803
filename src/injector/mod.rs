//! `wss-sidecar injector`: the mutating admission webhook that adds the sidecar to labelled pods.
//!
//! - [`annotations`]: pod annotations → checked `proxy` arguments, derived from the proxy's
//!   clap definition.
//! - [`container`]: the injected container and its volumes.
//! - [`patch`], [`inject`]: the JSON Patch for one pod, or why it is skipped or denied.
//! - [`review`]: `AdmissionReview` JSON in and out (patch base64 on the wire).
//! - [`server`]: the HTTPS server.
//! - [`selfcert`]: the self-managed serving certificate (Secret + Lease + `caBundle`).

pub mod annotations;
pub mod container;
pub mod inject;
pub mod patch;
pub mod review;
pub mod selfcert;
pub mod server;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use container::SidecarTemplate;
pub use inject::{Outcome, inject};

use crate::admin::{self, AdminState};
use crate::certs::{CertStore, DirSource};
use crate::config::{ConfigError, InjectorArgs};
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::tls::{self, Resolver};
use selfcert::Manager;
use selfcert::kube_api::KubeApi;

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
    /// A flag is wrong (exit code 64).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS configuration could not be built.
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Checks what clap cannot: the certificate directory, and that every `--sidecar-default`
/// names a proxy flag with a valid value.
pub fn template(args: &InjectorArgs) -> Result<SidecarTemplate, ConfigError> {
    match &args.cert_dir {
        None if args.namespace.is_none() => {
            return Err(ConfigError::new(
                "--namespace",
                "required without --cert-dir: the self-managed certificate lives in the \
                 injector's namespace (the chart sets it from the downward API)",
            ));
        }
        Some(dir) if !dir.is_dir() => {
            return Err(ConfigError::new(
                "--cert-dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        _ => {}
    }
    annotations::check_defaults(&args.sidecar_defaults)
        .map_err(|denial| ConfigError::new("--sidecar-default", denial.0))?;
    Ok(SidecarTemplate::from_args(args))
}

/// Runs the webhook until `shutdown` resolves, then finishes the requests in flight.
pub async fn run(
    args: InjectorArgs,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let template = template(&args)?;
    let metrics = Arc::new(Metrics::new());
    let store = CertStore::new(Arc::clone(&metrics));
    let stop = CancellationToken::new();
    let _stop_all = stop.clone().drop_guard();
    match &args.cert_dir {
        Some(dir) => {
            let publisher = store.register(format!("dir:{}", dir.display()));
            let mut source = DirSource::new(dir.clone(), publisher, tls::provider());
            if !source.reload().await {
                warn!(
                    cert.source = source.label(),
                    "no valid serving certificate yet; waiting"
                );
            }
            source.spawn_watch(CERT_POLL_INTERVAL, stop.child_token());
        }
        None => spawn_self_managed(&args, &store, stop.child_token()).await?,
    }
    let tls_config = tls::server_config(Arc::new(Resolver::new(Arc::clone(&store))), None)?;
    let readiness = Arc::new(Readiness::new(Arc::clone(&store)));
    if let Some(admin_listener) = listeners.admin {
        let state = Arc::new(AdminState {
            readiness: Arc::clone(&readiness),
            metrics,
        });
        tokio::spawn(admin::serve(admin_listener, state, stop.child_token()));
    }
    let state = Arc::new(server::WebhookState {
        template: Arc::new(template),
        readiness: Arc::clone(&readiness),
    });
    let serve_stop = stop.child_token();
    let https_addr = listeners.https.local_addr().ok();
    let serving = tokio::spawn(server::serve(
        listeners.https,
        tokio_rustls::TlsAcceptor::from(tls_config),
        state,
        serve_stop.clone(),
    ));
    readiness.set_listening(true);
    let listen = https_addr.map_or_else(|| args.listen.to_string(), |a| a.to_string());
    info!(listen = %listen, image = %args.sidecar_image, "injector serving");
    shutdown.await;
    readiness.set_draining();
    serve_stop.cancel();
    let _ = serving.await;
    info!("injector stopped");
    Ok(())
}

/// Starts the self-managed certificate: needs the Kubernetes API (in-cluster or kubeconfig).
async fn spawn_self_managed(
    args: &InjectorArgs,
    store: &Arc<CertStore>,
    stop: CancellationToken,
) -> Result<(), ConfigError> {
    let namespace = args.namespace.clone().unwrap_or_default();
    let client = kube::Client::try_default().await.map_err(|e| {
        ConfigError::new(
            "--cert-dir",
            format!("not given, and no Kubernetes API to manage a certificate through: {e}"),
        )
    })?;
    let api = KubeApi::new(
        client,
        &namespace,
        &args.self_cert_secret,
        &args.self_cert_lease,
        &args.webhook_name,
    );
    let service = &args.service_name;
    let names = vec![
        service.clone(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    let identity = args.pod_name.clone().unwrap_or_else(host_name);
    let publisher = store.register("self-managed");
    info!(secret = %args.self_cert_secret, lease = %args.self_cert_lease, identity = %identity,
          "managing the injector's own serving certificate");
    Manager::new(api, identity, names, publisher).spawn(stop);
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

/// The injector's flags with every default, for tests.
#[cfg(test)]
pub(crate) fn default_args() -> InjectorArgs {
    use clap::Parser;
    match crate::config::Cli::try_parse_from(["wss-sidecar", "injector"]) {
        Ok(crate::config::Cli {
            command: crate::config::Command::Injector(args),
        }) => args,
        other => panic!("injector defaults do not parse: {other:?}"),
    }
}
