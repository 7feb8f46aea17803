//! The demo WebSocket app (plain HTTP/ws://) that the quick start puts behind the sidecar.
//!
//! It serves one page whose script opens a WebSocket back to its own origin (`wss://` when the
//! page came over HTTPS) and an echo endpoint at `/ws`: the situation the sidecar exists for.
//!
//! # Layout
//!
//! - `mod.rs`: the accept loop, the connection limit and the HTTP/1.1 settings.
//! - `routes.rs`: `/`, `/healthz` and the `/ws` upgrade checks.
//! - `echo.rs`: the WebSocket echo session and its size limits.
//! - `page.html`: the page, self-contained (no external scripts, fonts or CDNs).
//! - [`quickstart`]: `wss-sidecar demo`, this app behind the proxy.

mod echo;
pub mod quickstart;
mod routes;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

/// Most connections (HTTP or upgraded WebSocket) served at once. A demo has a handful of users;
/// the cap keeps a misbehaving client from exhausting file descriptors (the common default
/// soft limit is 1,024 per process).
const MAX_CONNECTIONS: usize = 1024;

/// Time a client gets to send complete request headers. Generous for any real client, yet a
/// connection that opens and says nothing gives up its slot in seconds rather than holding it.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after an accept error that is not about one connection (e.g. out of file descriptors),
/// so the loop does not spin while the condition lasts and resumes soon after it clears.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the demo app on an already-bound listener until `shutdown` resolves.
///
/// On shutdown it stops accepting and returns; connections already open keep running on their
/// own tasks until they end or the runtime stops. Errors on one connection end that connection
/// only and are logged at debug.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    run(listener, shutdown, Limits::default()).await
}

/// The bounds [`serve`] applies, separate so tests can reach them without 1,024 sockets or
/// 10-second waits (tokio's paused clock needs the `test-util` feature, which is not enabled).
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_connections: usize,
    header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// [`serve`] with explicit [`Limits`].
async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    limits: Limits,
) -> io::Result<()> {
    info!(listen.addr = %listener.local_addr()?, "demo app listening");
    let limit = Arc::new(Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            // Checked first so a steady stream of connections cannot delay shutdown.
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) if is_connection_error(&error) => {
                    debug!(%error, "accept failed for one connection");
                    continue;
                }
                Err(error) => {
                    warn!(%error, "accept failed; backing off");
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                    }
                }
            },
        };
        // Dropping the stream closes it: over the limit, refusing is cheaper than queueing.
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            debug!(
                client.addr = %addr,
                limit = limits.max_connections,
                "connection limit reached; dropped"
            );
            continue;
        };
        spawn_connection(stream, addr, permit, limits.header_read_timeout);
    }
    info!("demo app stopped accepting");
    Ok(())
}

/// Serves HTTP/1.1 on one connection in its own task, holding `permit` until the connection and
/// any WebSocket session upgraded from it have ended.
fn spawn_connection(
    stream: TcpStream,
    addr: SocketAddr,
    permit: OwnedSemaphorePermit,
    header_read_timeout: Duration,
) {
    let permit = Arc::new(permit);
    tokio::spawn(async move {
        let service = service_fn(move |req| {
            let res = routes::respond(req, addr, &permit);
            async move { Ok::<_, Infallible>(res) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        if let Err(error) = conn.await {
            debug!(client.addr = %addr, %error, "http connection ended with an error");
        }
    });
}

/// Accept errors that concern only the connection being accepted; the listener is fine.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests;
