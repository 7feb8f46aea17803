//! The flags of `wss-sidecar proxy`, and their translation into [`ProxyConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches};

use super::ConfigError;
use super::acme::AcmeArgs;
use super::cli::LogArgs;
use super::client::ClientArgs;
use super::keepalive::KeepaliveArgs;
use super::parse::{parse_duration, parse_optional_duration};
use super::websocket::WebSocketArgs;
use crate::forward::Upstream;
use crate::k8s::ObjectRef;
use crate::proxy::ProxyConfig;
use crate::tls::tickets::{self, TicketKeySource, TicketsConfig};

/// Flags of `wss-sidecar proxy`.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// TLS (wss) listen address. `[::]` takes IPv4 and IPv6 (IPV6_V6ONLY off), and falls back
    /// to 0.0.0.0 where the host has no IPv6.
    #[arg(long, env = "WSS_SIDECAR_LISTEN", default_value = "[::]:8443")]
    pub listen: SocketAddr,

    /// Accept queue of the --listen socket: connections the kernel completes before the
    /// sidecar accepts them (a reconnect storm). The kernel caps it at net.core.somaxconn,
    /// 4096 by default; in a pod that sysctl is not on kubelet's safe list
    /// (pkg/kubelet/sysctl/safe_sysctls.go).
    #[arg(long, env = "WSS_SIDECAR_LISTEN_BACKLOG", default_value_t = crate::listen::DEFAULT_BACKLOG, value_parser = clap::value_parser!(i32).range(1..))]
    pub listen_backlog: i32,

    /// The port the plain HTTP port's redirects to https:// point at (the public port, e.g. 443
    /// behind a Service). Default: the --listen port.
    #[arg(long, env = "WSS_SIDECAR_REDIRECT_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub redirect_port: Option<u16>,

    /// Where the application listens: HOST:PORT or unix:/path.
    #[arg(long, env = "WSS_SIDECAR_UPSTREAM", default_value = "127.0.0.1:8080", value_parser = Upstream::parse)]
    pub upstream: Upstream,

    /// Directory with tls.crt (leaf + chain) and tls.key, as a mounted kubernetes.io/tls Secret
    /// lays them out. Repeatable: one per certificate; SNI picks, the first is the fallback.
    /// Without any certificate source a self-signed certificate is generated (development only).
    #[arg(long = "cert-dir", env = "WSS_SIDECAR_CERT_DIR", value_delimiter = ',')]
    pub cert_dirs: Vec<PathBuf>,

    /// `[namespace/]name` of a kubernetes.io/tls Secret to serve, watched through the
    /// Kubernetes API (no volume, no kubelet sync delay). Repeatable, ranked after --cert-dir.
    /// The namespace defaults to the pod's own.
    #[arg(
        long = "cert-secret",
        env = "WSS_SIDECAR_CERT_SECRET",
        value_name = "[NAMESPACE/]NAME",
        value_delimiter = ',',
        value_parser = ObjectRef::parse
    )]
    pub cert_secrets: Vec<ObjectRef>,

    /// How often certificate directories are re-read even when no change event arrived
    /// (a backstop for volumes whose events are lost).
    #[arg(long, env = "WSS_SIDECAR_CERT_POLL_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub cert_poll_interval: Duration,

    /// Admin listen address for /healthz, /readyz and /metrics, or `off` (`[::]` as for --listen).
    #[arg(long, env = "WSS_SIDECAR_ADMIN_LISTEN", default_value = "[::]:9090", value_parser = parse_admin_listen)]
    pub admin_listen: AdminListen,

    /// Longest a client may take to complete the TLS handshake.
    #[arg(long, env = "WSS_SIDECAR_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Longest opening a connection to the upstream may take.
    #[arg(long, env = "WSS_SIDECAR_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Close a connection with no bytes either way for this long (`off`: never; WebSockets are
    /// often silent for long stretches).
    #[arg(long, env = "WSS_SIDECAR_IDLE_TIMEOUT", default_value = "off", value_parser = parse_off_or_duration)]
    pub idle_timeout: OptionalDuration,

    /// Once one side has closed its half of a connection, close the rest when no byte moved
    /// for this long (a client that never closes its half cannot hold a slot forever).
    #[arg(long, env = "WSS_SIDECAR_HALF_CLOSE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub half_close_timeout: Duration,

    /// Most client connections served at once; more are refused.
    #[arg(long, env = "WSS_SIDECAR_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// After the lame duck, how long live connections may finish before they are closed.
    #[arg(long, env = "WSS_SIDECAR_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// On SIGTERM/SIGINT or `POST /lame-duck` (loopback only), how long to stay not ready
    /// while still accepting connections (endpoint removal is asynchronous), before the drain.
    #[arg(long, env = "WSS_SIDECAR_LAME_DUCK", default_value = "0s", value_parser = parse_duration)]
    pub lame_duck: Duration,

    /// TLS 1.3 session-ticket keys: `memory` (random, rotated in memory: resumption on this
    /// process only), `secret:[NAMESPACE/]NAME` (a Secret shared by the replicas, which resume
    /// each other's sessions; the holder of the Lease of the same name rotates it), `file:PATH`
    /// (1 to 3 lines of base64 keys, oldest first, re-read on change, rotated by the operator)
    /// or `off`. TLS 1.2 never gets tickets (they are not forward secret).
    #[arg(long, env = "WSS_SIDECAR_TICKET_KEYS", default_value = "memory", value_name = "memory|secret:[NAMESPACE/]NAME|file:PATH|off", value_parser = TicketKeySource::parse)]
    pub ticket_keys: TicketKeySource,

    /// How often session-ticket keys rotate (memory and secret:), and so how long a ticket
    /// lives. 12h, the ticket lifetime rustls' own ticketer announces: a client back within
    /// half a day resumes, and a leaked key opens at most the sessions of its last three
    /// periods. At least 1m (every replica must see a key before it encrypts), at most 7d
    /// (RFC 8446's longest ticket lifetime).
    #[arg(long, env = "WSS_SIDECAR_TICKET_KEY_ROTATION", default_value = tickets::DEFAULT_ROTATION, value_parser = parse_duration)]
    pub ticket_key_rotation: Duration,

    /// Automatic certificates from an ACME CA.
    #[command(flatten)]
    pub acme: AcmeArgs,
    /// Who the client is: PROXY protocol, forwarded headers, client certificates.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Closing and pinging WebSockets: drain spread, maximum age, Pings.
    #[command(flatten)]
    pub websocket: WebSocketArgs,
    /// TCP keepalive and user timeout on client sockets.
    #[command(flatten)]
    pub keepalive: KeepaliveArgs,
    /// Before TLS: the client's address from a load balancer's PROXY header, per-client limits.
    #[command(flatten)]
    pub inbound: super::inbound::InboundArgs,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// A duration flag where `off` (or `0`) means "never".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalDuration(pub Option<Duration>);

pub(super) fn parse_off_or_duration(value: &str) -> Result<OptionalDuration, String> {
    parse_optional_duration(value).map(OptionalDuration)
}

/// `--admin-listen`: an address or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminListen(pub Option<SocketAddr>);

pub(super) fn parse_admin_listen(value: &str) -> Result<AdminListen, String> {
    if value == "off" {
        return Ok(AdminListen(None));
    }
    value
        .parse()
        .map(|addr| AdminListen(Some(addr)))
        .map_err(|_| format!("expected IP:PORT or off, got {value:?}"))
}

/// The proxy's flags as a command of their own, without a binary name, `--help` or
/// environment variables: for parsing words that are not this process's command line (the
/// demo's, a pod's annotations), which this process's environment must not change.
pub fn proxy_command() -> clap::Command {
    ProxyArgs::augment_args(clap::Command::new("proxy"))
        .no_binary_name(true)
        .disable_help_flag(true)
        .mut_args(|arg| arg.env(None))
}

impl ProxyArgs {
    /// Parses `words` (flags only) as `wss-sidecar proxy` would, ignoring the environment.
    pub fn parse_words<I, T>(words: I) -> Result<ProxyArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = proxy_command().try_get_matches_from(words)?;
        ProxyArgs::from_arg_matches(&matches)
    }

    /// Checks what clap cannot (files exist, limits are sane) and builds the typed config.
    pub fn into_config(self) -> Result<ProxyConfig, ConfigError> {
        for dir in &self.cert_dirs {
            check_cert_dir(dir)?;
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new("--max-connections", "must be at least 1"));
        }
        for (flag, value) in [
            ("--handshake-timeout", self.handshake_timeout),
            ("--connect-timeout", self.connect_timeout),
            ("--cert-poll-interval", self.cert_poll_interval),
            ("--half-close-timeout", self.half_close_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(flag, "must be longer than zero"));
            }
        }
        let tickets = self.tickets_config()?;
        let http_listen = self.acme.http_listen;
        let acme = self.acme.into_config()?;
        Ok(ProxyConfig {
            acme,
            http_listen,
            listen: self.listen,
            listen_backlog: self.listen_backlog,
            redirect_port: self.redirect_port,
            upstream: self.upstream,
            cert_dirs: self.cert_dirs,
            cert_secrets: self.cert_secrets,
            cert_poll_interval: self.cert_poll_interval,
            admin_listen: self.admin_listen.0,
            handshake_timeout: self.handshake_timeout,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout.0,
            half_close_timeout: self.half_close_timeout,
            max_connections: self.max_connections,
            drain_timeout: self.drain_timeout,
            lame_duck: self.lame_duck,
            tickets,
            client: self.client.into_config()?,
            websocket: self.websocket.into_config(self.drain_timeout)?,
            keepalive: self.keepalive.into_config()?,
            inbound: self.inbound.into_config()?,
        })
    }
}

impl ProxyArgs {
    /// `--ticket-keys` and `--ticket-key-rotation`, checked.
    fn tickets_config(&self) -> Result<TicketsConfig, ConfigError> {
        let rotation = self.ticket_key_rotation;
        if rotation < tickets::MIN_ROTATION || rotation > tickets::MAX_LIFETIME {
            return Err(ConfigError::new(
                "--ticket-key-rotation",
                format!(
                    "{} is outside 1m to 7d (every replica must see a key before it is used; \
                     RFC 8446 caps ticket lifetimes at 7 days)",
                    humantime::format_duration(rotation)
                ),
            ));
        }
        if let TicketKeySource::File(path) = &self.ticket_keys
            && !path.is_file()
        {
            return Err(ConfigError::new(
                "--ticket-keys",
                format!("file:{} is not a file", path.display()),
            ));
        }
        Ok(TicketsConfig {
            source: self.ticket_keys.clone(),
            rotation,
        })
    }
}

/// A certificate directory must exist and hold both files at start-up; whether their content is
/// good is the certificate source's business (it may become good later).
fn check_cert_dir(dir: &std::path::Path) -> Result<(), ConfigError> {
    if !dir.is_dir() {
        return Err(ConfigError::new(
            "--cert-dir",
            format!(
                "{} is not a directory (mount the TLS Secret there)",
                dir.display()
            ),
        ));
    }
    for file in ["tls.crt", "tls.key"] {
        if !dir.join(file).is_file() {
            return Err(ConfigError::new(
                "--cert-dir",
                format!(
                    "{} has no {file} (expected tls.crt and tls.key)",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::{Cli, Command};

    fn proxy(args: &[&str]) -> Result<ProxyArgs, clap::Error> {
        let argv = ["wss-sidecar", "proxy"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv)?.command {
            Command::Proxy(p) => Ok(p),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_design() {
        let cfg = proxy(&[]).unwrap().into_config().unwrap();
        assert_eq!(cfg.listen, "[::]:8443".parse().unwrap());
        assert_eq!(cfg.admin_listen, Some("[::]:9090".parse().unwrap()));
        assert_eq!(
            cfg.redirect_port, None,
            "outside Kubernetes: the listen port"
        );
        assert_eq!(cfg.handshake_timeout, Duration::from_secs(10));
        assert_eq!(cfg.idle_timeout, None);
        assert_eq!(cfg.max_connections, 10_000);
        assert_eq!(cfg.drain_timeout, Duration::from_secs(30));
        assert_eq!(cfg.tickets.source, TicketKeySource::Memory);
        assert_eq!(cfg.tickets.rotation, Duration::from_secs(12 * 3600));
        assert_eq!(
            cfg.lame_duck,
            Duration::ZERO,
            "Ctrl-C stays immediate outside Kubernetes"
        );
    }

    #[test]
    fn redirect_port_is_the_public_port_when_given() {
        let cfg = proxy(&["--listen", "[::]:9443", "--redirect-port", "443"]).unwrap();
        assert_eq!(cfg.into_config().unwrap().redirect_port, Some(443));
        let err = proxy(&["--redirect-port", "0"]).unwrap_err().to_string();
        assert!(err.contains("--redirect-port"), "{err}");
    }

    #[test]
    fn errors_name_the_flag() {
        let err = proxy(&["--handshake-timeout", "soon"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--handshake-timeout"), "{err}");
        let err = proxy(&["--upstream", "nowhere"]).unwrap_err().to_string();
        assert!(err.contains("--upstream"), "{err}");
        let err = proxy(&["--cert-dir", "/nonexistent/dir"])
            .unwrap()
            .into_config();
        assert_eq!(err.unwrap_err().flag, "--cert-dir");
        let err = proxy(&["--max-connections", "0"]).unwrap().into_config();
        assert_eq!(err.unwrap_err().flag, "--max-connections");
        let err = proxy(&["--ticket-keys", "vault:x"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--ticket-keys") && err.contains("secret:"),
            "{err}"
        );
        for (args, flag) in [
            (["--ticket-keys", "file:/nonexistent/keys"], "--ticket-keys"),
            (["--ticket-key-rotation", "30s"], "--ticket-key-rotation"),
            (["--ticket-key-rotation", "8d"], "--ticket-key-rotation"),
        ] {
            let err = proxy(&args).unwrap().into_config().unwrap_err();
            assert_eq!(err.flag, flag, "{args:?}: {err:?}");
        }
    }
}
