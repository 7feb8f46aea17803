//! The webhook: `POST /mutate` (and `/healthz`, `/readyz`) as a handler on the crate's one
//! small-HTTP server, over rustls with the serving certificate from the certificate store.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::container::SidecarTemplate;
use super::review::review;
use crate::http::reply::{Body, text, typed};
use crate::http::{self, Limits, Readiness, health};
use crate::metrics::{Decision, Metrics};

/// The API server sends one review per pod creation over a few kept-alive connections: more
/// concurrent connections than this is not the API server. A TLS handshake or a request head
/// slower than 10 s is not the API server either. Kept-alive connections are closed gracefully
/// after 120 s, so that none lives for ever and a rotated certificate reaches every client. On
/// shutdown a review in flight gets 10 s to finish: the API server's default webhook timeout
/// (`timeoutSeconds`, k8s.io/api admissionregistration/v1/types.go: "Default to 10 seconds").
const LIMITS: Limits = Limits {
    max_connections: 256,
    handshake_timeout: Duration::from_secs(10),
    header_read_timeout: Duration::from_secs(10),
    keep_alive: true,
    lifetime: Some(Duration::from_secs(120)),
    grace: Duration::from_secs(10),
};
/// The API server's own request limit is 3 MiB (`MaxRequestBodyBytes`, k8s.io/apiserver
/// pkg/server/config.go); a review is the pod plus a little.
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What the handler reads.
pub struct WebhookState {
    /// The sidecar to inject.
    pub template: Arc<SidecarTemplate>,
    /// Readiness, for `/readyz`.
    pub readiness: Arc<Readiness>,
    /// Where admission decisions and review latency are counted.
    pub metrics: Arc<Metrics>,
}

/// Serves HTTPS on `listener` until `stop`, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    state: Arc<WebhookState>,
    stop: CancellationToken,
) {
    let handler = move |req: Request<Incoming>, _: &http::Conn| {
        let state = Arc::clone(&state);
        async move { route(req, &state).await }
    };
    http::serve(listener, Some(tls), LIMITS, handler, stop.cancelled_owned()).await;
}

async fn route(req: Request<Incoming>, state: &WebhookState) -> Response<Body> {
    let mut response = answer(req, state).await;
    // In the lame duck every answer closes its connection, so the API server's next review
    // opens a new one, which the Service sends to a replica that is not stopping. Kept alive,
    // the connection would stay on this pod until it exits, and a review written just as it
    // closes fails: Go's transport does not retry a POST (net/http transport.go, `rewindBody`
    // and `isReplayable`).
    if state.readiness.draining() {
        response
            .headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn answer(req: Request<Incoming>, state: &WebhookState) -> Response<Body> {
    if let Some(answer) = health::answer(&req, &state.readiness) {
        return answer;
    }
    if (req.method(), req.uri().path()) != (&Method::POST, "/mutate") {
        return text(
            StatusCode::NOT_FOUND,
            "not found: POST /mutate, GET /healthz or /readyz\n",
        );
    }
    let started = Instant::now();
    let (response, decision) = mutate(req, state).await;
    let injector = &state.metrics.injector;
    injector.count(decision);
    injector
        .review_duration
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Reads and answers one `POST /mutate`.
async fn mutate(req: Request<Incoming>, state: &WebhookState) -> (Response<Body>, Decision) {
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(err) => {
            let answer = text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {err}\n"),
            );
            return (answer, Decision::DENIED_INVALID_REVIEW);
        }
    };
    // A review parses up to 3 MiB of JSON and every annotation with clap (no DNS: `upstream`
    // is checked for syntax only): keep that CPU work off the async workers.
    let template = Arc::clone(&state.template);
    match tokio::task::spawn_blocking(move || review(&body, &template)).await {
        Ok((answer, decision)) => (typed(StatusCode::OK, "application/json", answer), decision),
        Err(err) => (
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the review failed: {err}\n"),
            ),
            Decision::DENIED_INTERNAL,
        ),
    }
}
