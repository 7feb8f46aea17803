//! A small bounded HTTP/1.1 server loop shared by the admin endpoint and `--http-listen`: a
//! connection cap, a header-read timeout, one request per connection, a lifetime bound.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// A client that cannot send its request line and headers in this long is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on one connection's life (one request: keep-alive is off).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `listener` with `handler` until `stop`, at most `max_connections` at once (more are
/// dropped at accept: they must not eat the proxy's file descriptors).
pub async fn serve<H, Fut>(
    listener: TcpListener,
    max_connections: usize,
    handler: H,
    stop: CancellationToken,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max_connections));
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    debug!(error = %err, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            continue;
        };
        let handler = handler.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = handler(req);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::select! {
                result = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => {
                    if let Ok(Err(err)) = result {
                        debug!(client.addr = %peer, error = %err, "http connection failed");
                    }
                }
                () = stop.cancelled() => {}
            }
            drop(permit);
        });
    }
}
