//! The webhook's HTTPS server: `POST /mutate`, `/healthz`, `/readyz`, over rustls with the
//! serving certificate from the proxy's own certificate store.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::container::SidecarTemplate;
use super::review::review;
use crate::health::Readiness;

/// The API server sends one review per pod creation, over a few kept-alive connections; more
/// concurrent connections than this is not the API server.
const MAX_CONNECTIONS: usize = 256;
/// The API server's own request limit is 3 MiB; a review is the pod plus a little.
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// A TLS handshake or a request head slower than this is not the API server.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Kept-alive connections are closed gracefully after this long, so none lives for ever and
/// a rotated certificate reaches every client.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// What the handlers read.
pub struct WebhookState {
    /// The sidecar to inject.
    pub template: Arc<SidecarTemplate>,
    /// Readiness, for `/readyz`.
    pub readiness: Arc<Readiness>,
}

/// Serves HTTPS on `listener` until `stop`, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    state: Arc<WebhookState>,
    stop: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    debug!(error = %err, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            continue;
        };
        let (tls, state, stop) = (tls.clone(), Arc::clone(&state), stop.clone());
        tracker.spawn(async move {
            let tls_stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    debug!(client.addr = %peer, error = %err, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(req, &state).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tls_stream), service);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = stop.cancelled() => { conn.as_mut().graceful_shutdown(); conn.await }
                () = tokio::time::sleep(CONNECTION_LIFETIME) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                debug!(client.addr = %peer, error = %err, "webhook connection failed");
            }
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn route(req: Request<Incoming>, state: &WebhookState) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/mutate") => {
            let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(err) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        format!("cannot read the request body: {err}\n"),
                    );
                }
            };
            // Checking `--upstream` may resolve a host name: keep that off the async workers.
            let template = Arc::clone(&state.template);
            match tokio::task::spawn_blocking(move || review(&body, &template)).await {
                Ok(answer) => reply(StatusCode::OK, "application/json", answer),
                Err(err) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("the review failed: {err}\n"),
                ),
            }
        }
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/readyz") => match state.readiness.check() {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n"),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: POST /mutate, GET /healthz or /readyz\n",
        ),
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
