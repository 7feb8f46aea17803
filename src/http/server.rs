//! The one small HTTP/1.1 server, plain or over TLS, that the admin endpoint, the plain HTTP
//! port, the webhook and the demo app plug their handlers into. One behaviour for all:
//!
//! - at most [`Limits::max_connections`] at once: over it a new connection is closed at once,
//!   unanswered (it must not eat the process's file descriptors, and refusing is cheaper than
//!   queueing);
//! - a TLS handshake and the request headers each have a deadline; a connection is asked to
//!   close after [`Limits::lifetime`], once its request in flight is done;
//! - on shutdown it stops accepting at once (the listener is dropped, so the kernel refuses
//!   new connections), asks every connection to close after its request in flight (hyper's
//!   graceful shutdown: idle keep-alive connections close now), gives them
//!   [`Limits::grace`], then closes the rest, and returns.
//!
//! Errors on one connection end that connection only and are logged at debug.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::reply::Body;

/// Pause after an accept error that is not about one connection (out of file descriptors),
/// so the loop does not spin while it lasts and resumes soon after it clears.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// The bounds of one server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections served at once; an upgraded connection counts for as long as its
    /// session holds the connection's [`Slot`].
    pub max_connections: usize,
    /// A TLS handshake slower than this is dropped (TLS only).
    pub handshake_timeout: Duration,
    /// A client that has not sent complete request headers by then is dropped.
    pub header_read_timeout: Duration,
    /// Whether a connection may carry more than one request.
    pub keep_alive: bool,
    /// A connection is asked to close after this long (once its request in flight is done),
    /// so that none lives for ever; `None`: never.
    pub lifetime: Option<Duration>,
    /// After shutdown (or the lifetime), how long a request in flight may take to finish
    /// before its connection is closed.
    pub grace: Duration,
}

impl Limits {
    /// The defaults each server adjusts.
    pub const DEFAULT: Limits = Limits {
        max_connections: 256,
        handshake_timeout: Duration::from_secs(10),
        header_read_timeout: Duration::from_secs(10),
        keep_alive: true,
        lifetime: None,
        grace: Duration::from_secs(1),
    };

    /// For plain-HTTP endpoints answering quick single requests (probes, scrapes, validators,
    /// redirects): one request per connection, 5 s for its headers, 30 s at the most.
    pub const ONE_REQUEST: Limits = Limits {
        header_read_timeout: Duration::from_secs(5),
        keep_alive: false,
        lifetime: Some(Duration::from_secs(30)),
        ..Limits::DEFAULT
    };
}

/// A share of one connection's place under [`Limits::max_connections`]: the connection holds
/// it, and an upgraded session takes a clone, so that the connection keeps counting until the
/// session ends too.
#[derive(Debug, Clone)]
pub struct Slot {
    _permit: Arc<OwnedSemaphorePermit>,
}

/// What a handler learns about the connection a request came on.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The connection's place under the limit.
    pub slot: Slot,
}

/// Serves `listener` (over TLS with `tls`) with `handler` until `shutdown` resolves, then
/// drains as the module says and returns.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, &Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            // Checked first so that a steady stream of connections cannot delay shutdown.
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
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            debug!(
                client.addr = %peer,
                limit = limits.max_connections,
                "connection limit reached; closed"
            );
            continue;
        };
        let conn = Conn {
            peer,
            slot: Slot {
                _permit: Arc::new(permit),
            },
        };
        let (tls, handler, stop) = (tls.clone(), handler.clone(), stop.child_token());
        tracker.spawn(serve_connection(tcp, conn, tls, limits, handler, stop));
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    tracker.wait().await;
}

/// One connection, from the TLS handshake to its close.
async fn serve_connection<H, Fut>(
    tcp: TcpStream,
    conn: Conn,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    handler: H,
    stop: CancellationToken,
) where
    H: Fn(Request<Incoming>, &Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let peer = conn.peer;
    let io = match tls {
        None => Either::Left(tcp),
        Some(tls) => {
            let handshake = tokio::time::timeout(limits.handshake_timeout, tls.accept(tcp));
            tokio::select! {
                () = stop.cancelled() => return,
                accepted = handshake => match accepted {
                    Ok(Ok(stream)) => Either::Right(stream),
                    Ok(Err(error)) => {
                        debug!(client.addr = %peer, %error, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(client.addr = %peer, "tls handshake timed out");
                        return;
                    }
                },
            }
        }
    };
    let service = hyper::service::service_fn(move |req| {
        let response = handler(req, &conn);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(limits.keep_alive);
    let connection = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let lifetime = async {
        match limits.lifetime {
            Some(lifetime) => tokio::time::sleep(lifetime).await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => close(connection, limits.grace, peer).await,
        () = lifetime => close(connection, limits.grace, peer).await,
    };
    if let Err(error) = result {
        debug!(client.addr = %peer, %error, "http connection ended with an error");
    }
}

/// Asks `connection` to close once its request in flight is answered (hyper's graceful
/// shutdown), and closes it when that takes longer than `grace`.
async fn close<I, S>(
    mut connection: Pin<&mut http1::UpgradeableConnection<I, S>>,
    grace: Duration,
    peer: SocketAddr,
) -> hyper::Result<()>
where
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    connection.as_mut().graceful_shutdown();
    match tokio::time::timeout(grace, connection).await {
        Ok(result) => result,
        Err(_) => {
            debug!(client.addr = %peer, "request still in flight after the grace; closed");
            Ok(())
        }
    }
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
#[path = "server_tests.rs"]
mod tests;
