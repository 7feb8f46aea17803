//! The demo WebSocket app (plain HTTP/ws://) that the quick start puts behind the sidecar.
//!
//! It serves one page whose script opens a WebSocket back to its own origin (`wss://` when the
//! page came over HTTPS) and an echo endpoint at `/ws`: the situation the sidecar exists for.
//!
//! # Layout
//!
//! - `mod.rs`: the app on the crate's one small-HTTP server, and its limits.
//! - `routes.rs`: `/`, `/healthz` and the `/ws` upgrade checks.
//! - `echo.rs`: the WebSocket echo session and its size limits.
//! - `page.html`: the page, self-contained (no external scripts, fonts or CDNs).
//! - [`quickstart`]: `wss-sidecar demo`, this app behind the proxy.

mod echo;
pub mod quickstart;
mod routes;

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::info;

use crate::http::{self, Limits};

/// Most connections (HTTP or upgraded WebSocket) served at once. A demo has a handful of users;
/// the cap keeps a misbehaving client from exhausting file descriptors (the common default
/// soft limit is 1,024 per process). A client gets 10 s to send complete request headers:
/// generous for any real client, yet a connection that opens and says nothing gives up its
/// slot in seconds rather than holding it.
const LIMITS: Limits = Limits {
    max_connections: 1024,
    header_read_timeout: Duration::from_secs(10),
    ..Limits::DEFAULT
};

/// Serves the demo app on an already-bound listener until `shutdown` resolves.
///
/// On shutdown it stops accepting, gives requests in flight a second, and returns; WebSocket
/// sessions already open keep running on their own tasks until they end or the runtime stops.
/// Errors on one connection end that connection only and are logged at debug.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    run(listener, shutdown, LIMITS).await
}

/// [`serve`] with explicit [`Limits`]: tests pass smaller ones rather than open 1,024 sockets
/// or wait 10 s (tokio's paused clock, on for tests, would jump ahead whenever the runtime
/// waits on a real socket, so the header timeout is shortened instead).
async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    limits: Limits,
) -> io::Result<()> {
    info!(listen.addr = %listener.local_addr()?, "demo app listening");
    let handler = |req, conn: &http::Conn| {
        let response = routes::respond(req, conn);
        async move { response }
    };
    http::serve(listener, None, limits, handler, shutdown).await;
    info!("demo app stopped");
    Ok(())
}

#[cfg(test)]
mod tests;
