//! What `wss-sidecar proxy` is told to do, validated: each part in its owner's type (the
//! upstream and client settings of [`crate::forward`], the ACME settings of [`crate::acme`]).
//! [`crate::config`] builds it from the flags.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use crate::acme::{AcmeConfig, StoreLocation};
use crate::forward::websocket::Settings as WebSocketSettings;
use crate::forward::{ClientConfig, Upstream};
use crate::k8s::ObjectRef;
use crate::proxy::keepalive::Keepalive;
use crate::proxy::proxy_header::InboundProxy;
use crate::tls::tickets::TicketsConfig;

/// Everything `wss-sidecar proxy` needs, validated.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Automatic certificates from an ACME CA; `None` when no `--acme-domain` is given.
    pub acme: Option<AcmeConfig>,
    /// Plain HTTP listener for HTTP-01 answers and redirects to https://; `None` = off.
    pub http_listen: Option<SocketAddr>,
    /// The TLS (wss) listen address.
    pub listen: SocketAddr,
    /// The TLS listener's accept queue (`--listen-backlog`; the kernel caps it at
    /// `net.core.somaxconn`).
    pub listen_backlog: i32,
    /// The port the plain HTTP port's redirects point at (`--redirect-port`); `None`: the
    /// bound listen port.
    pub redirect_port: Option<u16>,
    /// Where the application listens.
    pub upstream: Upstream,
    /// Directories holding `tls.crt` + `tls.key`, in flag order (the first is the SNI fallback).
    pub cert_dirs: Vec<PathBuf>,
    /// kubernetes.io/tls Secrets watched through the API, ranked after the directories.
    pub cert_secrets: Vec<ObjectRef>,
    /// How often certificate directories are re-read even without a change event.
    pub cert_poll_interval: Duration,
    /// Admin endpoint (`/healthz`, `/readyz`, `/metrics`); `None` disables it.
    pub admin_listen: Option<SocketAddr>,
    /// Longest a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Longest a connection to the upstream may take to open.
    pub connect_timeout: Duration,
    /// Close a connection with no bytes either way for this long; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Once one side has closed, close when no byte moved for this long.
    pub half_close_timeout: Duration,
    /// Most client connections served at once; more are refused.
    pub max_connections: usize,
    /// After the lame duck, how long live connections may finish.
    pub drain_timeout: Duration,
    /// After SIGTERM/SIGINT or `POST /lame-duck`: not ready, still accepting, this long.
    pub lame_duck: Duration,
    /// TLS 1.3 session tickets: where their keys come from, how often they rotate.
    pub tickets: TicketsConfig,
    /// Who the client is and what the upstream is told about it.
    pub client: ClientConfig,
    /// The closes and Pings the sidecar sends WebSockets on its own.
    pub websocket: WebSocketSettings,
    /// TCP keepalive and user timeout on client sockets.
    pub keepalive: Keepalive,
    /// The client's address from a load balancer's PROXY header, and per-client limits.
    pub inbound: InboundConfig,
}

/// What arrives before the TLS handshake: who the client is behind a load balancer, and how
/// many connections each client may hold. Both off by default.
#[derive(Debug, Clone, Default)]
pub struct InboundConfig {
    /// `--accept-proxy-protocol` with `--trust-proxy-from`; `None`: the TCP peer is the client.
    pub proxy: Option<InboundProxy>,
    /// `--max-connections-per-ip`; `None`: no limit but `--max-connections`.
    pub max_per_ip: Option<NonZeroU32>,
}

impl ProxyConfig {
    /// The flag that needs the Kubernetes API, if any does (a client is made at start-up).
    pub fn kubernetes_flag(&self) -> Option<&'static str> {
        let secret_store = self
            .acme
            .as_ref()
            .is_some_and(|a| matches!(a.store, StoreLocation::Secret(_)));
        if !self.cert_secrets.is_empty() {
            Some("--cert-secret")
        } else if secret_store {
            Some("--acme-store")
        } else if self.tickets.secret().is_some() {
            Some("--ticket-keys")
        } else {
            None
        }
    }
}
