//! `wss-sidecar demo`: the demo app behind the proxy with a self-signed certificate, for the
//! README's quick start.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{DemoArgs, ProxyArgs};
use crate::proxy::{self, Listeners, ProxyConfig, RunError};

/// How long the demo's connections may finish after Ctrl-C: a person is waiting.
const DRAIN_TIMEOUT: &str = "5s";

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The proxy's flags the demo builds were refused (a bug: they are fixed but for the
    /// addresses, which are already bound).
    #[error("the demo's proxy flags: {0}")]
    Flags(String),
    /// The proxy failed.
    #[error(transparent)]
    Proxy(#[from] RunError),
}

impl DemoError {
    /// The process exit code, as the proxy's own failures map to one.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Flags(_) => 1,
            Self::Proxy(err) => err.exit_code(),
        }
    }
}

/// Runs the demo app on `app` and the proxy on `tls`/`admin` until `shutdown`.
pub async fn run(
    args: &DemoArgs,
    tls: TcpListener,
    admin: Option<TcpListener>,
    app: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DemoError> {
    let app_addr = app.local_addr().unwrap_or(args.app_listen);
    let listen = tls.local_addr().unwrap_or(args.listen);
    let config = demo_config(listen, args.admin_listen.0, app_addr)?;
    let stop_app = CancellationToken::new();
    let app_task = tokio::spawn(super::serve(app, stop_app.clone().cancelled_owned()));
    announce(&config, app_addr);
    let result = proxy::run(
        config,
        Listeners {
            tls,
            admin,
            http: None,
        },
        shutdown,
    )
    .await;
    stop_app.cancel();
    let _ = app_task.await;
    Ok(result?)
}

/// The proxy's configuration for the demo: `wss-sidecar proxy` with its own defaults, in front
/// of the app, with no certificate source (so the self-signed fallback) and a short drain.
fn demo_config(
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    app: SocketAddr,
) -> Result<ProxyConfig, DemoError> {
    let admin = admin.map_or_else(|| "off".to_string(), |a| a.to_string());
    let words = [
        "--listen".to_string(),
        listen.to_string(),
        "--upstream".into(),
        app.to_string(),
        "--admin-listen".into(),
        admin,
        "--drain-timeout".into(),
        DRAIN_TIMEOUT.into(),
    ];
    let args = ProxyArgs::parse_words(words).map_err(|e| DemoError::Flags(e.to_string()))?;
    args.into_config()
        .map_err(|e| DemoError::Flags(e.to_string()))
}

/// `HOST:PORT` for the printed URLs: `localhost` when that reaches the listener (the
/// certificate names it), else the address itself, with IPv6 in brackets as URLs need.
fn url_authority(listen: SocketAddr) -> String {
    let ip = listen.ip();
    let localhost_reaches_it = ip.is_unspecified()
        || ip == std::net::IpAddr::from([127, 0, 0, 1])
        || ip == std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
    if localhost_reaches_it {
        format!("localhost:{}", listen.port())
    } else {
        listen.to_string()
    }
}

fn announce(config: &ProxyConfig, app: SocketAddr) {
    let authority = url_authority(config.listen);
    println!(
        "wss-sidecar demo: the echo app listens on ws://{app}/ws, the sidecar terminates TLS in front of it."
    );
    println!();
    println!(
        "  open   https://{authority}/     (a page whose script talks to the wss:// URL below)"
    );
    println!("  or     wss://{authority}/ws");
    if let Some(admin) = config.admin_listen {
        println!("  admin  http://{admin}/metrics  /readyz  /healthz");
    }
    println!();
    println!("The certificate is self-signed: accept the browser's warning once. Ctrl-C stops.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_urls_use_localhost_or_a_bracketed_address() {
        let cases = [
            ("127.0.0.1:8443", "localhost:8443"),
            ("0.0.0.0:8443", "localhost:8443"),
            ("[::]:8443", "localhost:8443"),
            ("[::1]:8443", "localhost:8443"),
            ("127.0.0.2:8443", "127.0.0.2:8443"),
            ("192.0.2.7:8443", "192.0.2.7:8443"),
            ("[2001:db8::7]:8443", "[2001:db8::7]:8443"),
        ];
        for (listen, expected) in cases {
            assert_eq!(url_authority(listen.parse().unwrap()), expected, "{listen}");
        }
    }

    #[test]
    fn the_demo_runs_the_proxy_with_its_defaults_in_front_of_the_app() {
        let app: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let config = demo_config("127.0.0.1:8443".parse().unwrap(), None, app).unwrap();
        assert_eq!(config.upstream.to_string(), "127.0.0.1:4000");
        assert_eq!(config.admin_listen, None);
        assert_eq!(config.drain_timeout, std::time::Duration::from_secs(5));
        let defaults = ProxyArgs::parse_words(["--upstream", "127.0.0.1:4000"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(config.max_connections, defaults.max_connections);
        assert_eq!(config.handshake_timeout, defaults.handshake_timeout);
        assert!(config.cert_dirs.is_empty() && config.acme.is_none());
    }
}
