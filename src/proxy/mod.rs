//! `wss-sidecar proxy`: the data path and its assembly. [`run`] starts the certificate
//! sources, TLS, the accept loop and the admin endpoint, and drains on shutdown.
//!
//! - `config`: what the proxy is told to do ([`ProxyConfig`]).
//! - `listener`: the accept loop, bounded by `--max-connections`.
//! - `proxy_header`: the inbound PROXY header of a load balancer (`--accept-proxy-protocol`).
//! - `per_ip`: live connections per client (`--max-connections-per-ip`).
//! - `connection`: one client: PROXY header, per-client limit, handshake, upstream connect,
//!   forwarding, accounting.
//! - `keepalive`: TCP keepalive and user timeout on client sockets.
//! - `workers`: the data path's threads, one single-threaded runtime per CPU.

pub(crate) mod config;
pub(crate) mod connection;
pub(crate) mod keepalive;
pub(crate) mod listener;
pub(crate) mod per_ip;
pub(crate) mod proxy_header;
pub(crate) mod workers;

pub use config::ProxyConfig;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::acme::{
    AcmeStore, ChallengeKind, ChallengeResponder, DirStore, Manager, SecretStore, StoreLocation,
};
use crate::certs::{CertStore, DirSource, SecretSource, self_signed};
use crate::forward::Preamble;
use crate::forward::websocket::WebSockets;
use crate::forward::{Counters, Timeouts};
use crate::http::Readiness;
use crate::http::admin;
use crate::http::plain::{self, Http01Answers, PlainState};
use crate::k8s::client::{KubeLease, KubeSecret};
use crate::k8s::{self, Events, ObjectRef};
use crate::metrics::Metrics;
use crate::tls::{self, ClientCaVerifier, Resolver};
use connection::ConnectionContext;
use workers::Workers;

/// After the drain deadline, how long cancelled connections get to finish closing.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// The listeners `run` serves on, bound by the caller (tests bind port 0).
pub struct Listeners {
    /// The TLS (wss) listener.
    pub tls: TcpListener,
    /// The admin listener, if enabled.
    pub admin: Option<TcpListener>,
    /// The plain HTTP listener (`--http-listen`), if enabled.
    pub http: Option<TcpListener>,
}

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The TLS configuration could not be built.
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// No certificate source was configured and no self-signed certificate could be made.
    #[error("cannot generate the self-signed development certificate: {0}")]
    SelfSigned(crate::certs::CertError),
    /// The ACME store (`--acme-store`) cannot be opened.
    #[error("--acme-store: {0}")]
    AcmeStore(#[from] crate::acme::StoreError),
    /// The `--client-ca` bundle could not be loaded.
    #[error("--client-ca: {0}")]
    ClientCa(#[from] crate::tls::ClientCaError),
    /// The session-ticket keys (`--ticket-keys`) cannot be set up.
    #[error("--ticket-keys: {0}")]
    TicketKeys(#[from] crate::tls::tickets::StartError),
    /// A source needs the Kubernetes API (`flag`), and there is no configuration to reach it.
    #[error("{flag}: {source}")]
    Kubernetes {
        /// The flag that needs the API.
        flag: &'static str,
        /// Why no client could be made.
        source: crate::k8s::ApiError,
    },
    /// `TOKIO_WORKER_THREADS` is not a number of data-path threads.
    #[error("TOKIO_WORKER_THREADS: {0}")]
    Threads(String),
    /// A data-path thread could not be started.
    #[error("cannot start the data-path threads: {0}")]
    Workers(std::io::Error),
}

impl RunError {
    /// The flag at fault, when the failure is the user's configuration to fix: a store
    /// directory or CA bundle the user named that cannot be used, like a bad flag. TLS set-up
    /// and the self-signed fallback failing are not.
    pub fn flag(&self) -> Option<&'static str> {
        match self {
            Self::AcmeStore(_) => Some("--acme-store"),
            Self::ClientCa(_) => Some("--client-ca"),
            Self::TicketKeys(_) => Some("--ticket-keys"),
            Self::Kubernetes { flag, .. } => Some(flag),
            Self::Threads(_) => Some(workers::THREADS_VAR),
            Self::Tls(_) | Self::SelfSigned(_) | Self::Workers(_) => None,
        }
    }

    /// The process exit code: [`crate::EXIT_CONFIG`] when a flag is at fault, else 1.
    pub fn exit_code(&self) -> u8 {
        crate::exit_code(self.flag())
    }
}

/// Runs the proxy until `shutdown` resolves (or `POST /lame-duck` arrives from loopback), then
/// shuts down: readiness turns false at once while the listener keeps accepting for the lame
/// duck, then the listener closes, live connections get `drain_timeout` to finish, and the rest
/// are closed (with close_notify and a FIN, see `forward`).
pub async fn run(
    config: ProxyConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let store = CertStore::new(Arc::clone(&metrics));
    let sources_stop = CancellationToken::new();
    let _stop_sources = sources_stop.clone().drop_guard();

    let cluster = connect_kubernetes(&config, &store).await?;
    if config.cert_dirs.is_empty() && config.cert_secrets.is_empty() && config.acme.is_none() {
        warn!(
            "NO CERTIFICATE CONFIGURED: serving a freshly generated SELF-SIGNED certificate for \
             localhost. Clients will not trust it. For development only: give --cert-dir."
        );
        let cert = self_signed::generate(&tls::provider()).map_err(RunError::SelfSigned)?;
        store.register("self-signed").publish(cert);
    }
    for dir in &config.cert_dirs {
        let stop = sources_stop.child_token();
        DirSource::start(
            &store,
            dir,
            tls::provider(),
            config.cert_poll_interval,
            stop,
        )
        .await;
    }

    if let Some(client) = &cluster {
        for secret in &config.cert_secrets {
            let namespace = namespace_of(secret, client);
            let api = KubeSecret::new(client.clone(), &namespace, &secret.name);
            let publisher = store.register(format!("secret:{namespace}/{}", secret.name));
            SecretSource::new(api, publisher, tls::provider())
                .spawn_watch(sources_stop.child_token());
        }
    }

    let readiness = Arc::new(Readiness::new(Arc::clone(&store)));
    let acme = spawn_acme(&config, &store, &metrics, &sources_stop, cluster.as_ref())?.map(
        |(responder, manager)| {
            tokio::spawn(
                manager
                    .with_answering(readiness.acme_answering())
                    .run(sources_stop.child_token()),
            );
            responder
        },
    );

    let client_auth = ClientCaVerifier::spawn_for(
        config.client.client_ca.as_ref(),
        config.cert_poll_interval,
        &sources_stop,
        &metrics,
    )?;
    let ticketer = start_tickets(&config, &metrics, &sources_stop, cluster.as_ref()).await?;
    let tls_configs = tls::ServerConfigs::build(
        Arc::new(Resolver::new(Arc::clone(&store))),
        client_auth,
        ticketer.map(|t| t as Arc<dyn rustls::server::ProducesTickets>),
    )?;

    let admin_stop = CancellationToken::new();
    let _stop_admin = admin_stop.clone().drop_guard();
    let admin_addr = listeners.admin.as_ref().and_then(|l| l.local_addr().ok());
    let lame_duck = CancellationToken::new();
    admin::spawn(
        listeners.admin,
        &readiness,
        &metrics,
        Some(&lame_duck),
        admin_stop.clone(),
    );
    if let Some(http_listener) = listeners.http {
        let state = Arc::new(PlainState {
            answers: acme
                .clone()
                .map(|responder| responder as Arc<dyn Http01Answers>),
            https_port: config
                .redirect_port
                .unwrap_or_else(|| listeners.tls.local_addr().map_or(443, |a| a.port())),
        });
        tokio::spawn(plain::serve(http_listener, state, admin_stop.clone()));
    }

    let ctx = Arc::new(ConnectionContext {
        tls: tls_configs,
        upstream: config.upstream.clone(),
        handshake_timeout: config.handshake_timeout,
        connect_timeout: config.connect_timeout,
        timeouts: Timeouts {
            idle: config.idle_timeout,
            half_close: config.half_close_timeout,
        },
        counters: Counters {
            client_to_upstream: metrics.bytes_client_to_upstream.clone(),
            upstream_to_client: metrics.bytes_upstream_to_client.clone(),
        },
        metrics: Arc::clone(&metrics),
        alpn_challenges: match &config.acme {
            Some(acme_config) if acme_config.challenge == ChallengeKind::TlsAlpn01 => acme
                .clone()
                .map(|responder| responder as Arc<dyn tls::AlpnChallenges>),
            _ => None,
        },
        preamble: Preamble::new(&config.client),
        keepalive: config.keepalive,
        websockets: WebSockets::new(config.websocket.clone(), &metrics),
        inbound_proxy: config.inbound.proxy.clone(),
        per_ip: config.inbound.max_per_ip.map(per_ip::PerIp::new),
    });
    let tracker = TaskTracker::new();
    let conn_cancel = CancellationToken::new();
    let data_threads =
        std::env::var_os(workers::THREADS_VAR).map(|value| value.to_string_lossy().into_owned());
    let data_threads = workers::thread_count(data_threads.as_deref()).map_err(RunError::Threads)?;
    let workers = Workers::start(data_threads, &conn_cancel).map_err(RunError::Workers)?;
    let accept_stop = CancellationToken::new();
    let listen_addr = listeners.tls.local_addr().ok();
    // One copy of the listening socket per data thread, each accepting for itself.
    let copies = listener::share(listeners.tls, workers.len()).map_err(RunError::Workers)?;
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let mut copies = copies.into_iter();
    let accepting = workers.run_on_each(|_, cancel| {
        let copy = copies.next();
        let (ctx, limit, tracker, stop) = (
            Arc::clone(&ctx),
            Arc::clone(&limit),
            tracker.clone(),
            accept_stop.clone(),
        );
        async move {
            if let Some(copy) = copy {
                listener::accept_loop(copy, ctx, limit, tracker, stop, cancel).await;
            }
        }
    });
    readiness.set_listening(true);
    info!(
        listen = %OrNone(listen_addr),
        admin = %OrNone(admin_addr),
        upstream = %config.upstream,
        data_threads = workers.len(),
        "accepting connections"
    );

    // The first of a signal and `POST /lame-duck` starts it; a later one changes nothing (the
    // second signal exits at once, in `main`).
    tokio::select! {
        () = shutdown => {}
        () = lame_duck.cancelled() => {}
    }

    // Endpoint removal is asynchronous (kube-proxy, load balancers and Ingress controllers
    // keep sending new connections for seconds after the pod is deleted; kubelet
    // pkg/kubelet/kuberuntime/kuberuntime_termination_order.go), so stop being ready but
    // keep accepting for the lame duck.
    readiness.set_draining();
    if !config.lame_duck.is_zero() {
        info!(lame_duck = ?config.lame_duck, "lame duck: not ready, still accepting");
        tokio::time::sleep(config.lame_duck).await;
    }
    accept_stop.cancel();
    // Wait for the loops to drop the listener, so new connections are refused from here on.
    for accept_loop in accepting {
        let _ = accept_loop.await;
    }
    readiness.set_listening(false);
    tracker.close();
    let live = tracker.len();
    info!(connections.live = live, drain_timeout = ?config.drain_timeout, "draining");
    if let Some(websockets) = &ctx.websockets {
        websockets.begin_drain();
    }
    if tokio::time::timeout(config.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            connections.live = tracker.len(),
            "drain timeout reached; closing the rest"
        );
        conn_cancel.cancel();
        let _ = tokio::time::timeout(CANCEL_GRACE, tracker.wait()).await;
    }
    info!("drained; exiting");
    Ok(())
}

/// A Kubernetes client (in-cluster or kubeconfig) when a source needs one; it also sends the
/// pod's Events.
async fn connect_kubernetes(
    config: &ProxyConfig,
    store: &Arc<CertStore>,
) -> Result<Option<kube::Client>, RunError> {
    let Some(flag) = config.kubernetes_flag() else {
        return Ok(None);
    };
    let client = k8s::client::connect()
        .await
        .map_err(|source| RunError::Kubernetes { flag, source })?;
    store.set_events(Events::from_env(client.clone()));
    Ok(Some(client))
}

/// The session-ticket ticketer of `--ticket-keys`, its key source started (`None`: `off`).
async fn start_tickets(
    config: &ProxyConfig,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
    cluster: Option<&kube::Client>,
) -> Result<Option<Arc<tls::tickets::Ticketer>>, RunError> {
    let secret = match (config.tickets.secret(), cluster) {
        (Some(secret), Some(client)) => {
            let namespace = namespace_of(secret, client);
            let api = KubeSecret::new(client.clone(), &namespace, &secret.name);
            let lease = KubeLease::new(client.clone(), &namespace, &secret.name);
            Some((api, lease))
        }
        _ => None,
    };
    let poll = config.cert_poll_interval;
    Ok(tls::tickets::start(&config.tickets, secret, metrics, poll, stop).await?)
}

/// The namespace of `object`: as given, else the pod's own, else the kubeconfig context's.
fn namespace_of(object: &ObjectRef, client: &kube::Client) -> String {
    object
        .namespace
        .clone()
        .or_else(k8s::target::own_namespace)
        .unwrap_or_else(|| client.default_namespace().to_string())
}

/// The ACME manager (to be run) and its challenge responder, when `--acme-domain` is given.
fn spawn_acme(
    config: &ProxyConfig,
    store: &Arc<CertStore>,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
    cluster: Option<&kube::Client>,
) -> Result<Option<(Arc<ChallengeResponder>, Manager)>, RunError> {
    let Some(acme_config) = &config.acme else {
        return Ok(None);
    };
    let (directory, names) = (&acme_config.directory, &acme_config.domains);
    let acme_store: Arc<dyn AcmeStore> = match (&acme_config.store, cluster) {
        (StoreLocation::Dir(dir), _) => Arc::new(DirStore::open(dir, directory, names)?),
        (StoreLocation::Secret(secret), Some(client)) => {
            let namespace = namespace_of(secret, client);
            let account = crate::acme::account_secret_name(&secret.name);
            let store = SecretStore::new(
                KubeSecret::new(client.clone(), &namespace, &secret.name),
                KubeSecret::new(client.clone(), &namespace, &account),
                KubeLease::new(client.clone(), &namespace, &secret.name),
                directory,
                names,
            );
            store.spawn_watch(stop.child_token());
            store
        }
        // `connect_kubernetes` makes a client whenever a Secret store is configured.
        (StoreLocation::Secret(_), None) => {
            return Err(RunError::Kubernetes {
                flag: "--acme-store",
                source: crate::k8s::ApiError::Other("no Kubernetes client".into()),
            });
        }
    };
    let publisher = store.register(format!("acme:{}", acme_config.domains.join(",")));
    let manager = Manager::new(
        acme_config.clone(),
        Arc::clone(&acme_store),
        publisher,
        Arc::clone(metrics),
    );
    let responder = ChallengeResponder::new(acme_store, acme_config.domains.clone());
    Ok(Some((Arc::new(responder), manager)))
}

/// Displays an optional address as the address or `none`.
struct OrNone(Option<std::net::SocketAddr>);

impl std::fmt::Display for OrNone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("none"),
        }
    }
}
