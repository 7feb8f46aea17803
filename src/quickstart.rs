//! `wss-sidecar demo`: the demo app behind the proxy with a self-signed certificate, for the
//! README's quick start.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{DemoArgs, ProxyConfig, Upstream};
use crate::proxy::{self, Listeners, RunError};

/// Runs the demo app on `app` and the proxy on `tls`/`admin` until `shutdown`.
pub async fn run(
    args: &DemoArgs,
    tls: TcpListener,
    admin: Option<TcpListener>,
    app: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let app_addr = app.local_addr().unwrap_or(args.app_listen);
    let stop_app = CancellationToken::new();
    let app_task = tokio::spawn(crate::demo::serve(app, stop_app.clone().cancelled_owned()));
    let config = demo_config(args, tls.local_addr().unwrap_or(args.listen), app_addr);
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
    result
}

fn demo_config(args: &DemoArgs, listen: SocketAddr, app: SocketAddr) -> ProxyConfig {
    ProxyConfig {
        listen,
        upstream: Upstream::Tcp {
            authority: app.to_string(),
            addrs: vec![app],
        },
        cert_dirs: Vec::new(),
        cert_secrets: Vec::new(),
        cert_poll_interval: Duration::from_secs(10),
        admin_listen: args.admin_listen.0,
        handshake_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        idle_timeout: None,
        half_close_timeout: Duration::from_secs(60),
        max_connections: 10_000,
        drain_timeout: Duration::from_secs(5),
        acme: None,
        http_listen: None,
        client: Default::default(),
    }
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
    use super::url_authority;

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
}
