//! The admin endpoint: `/healthz`, `/readyz` and `/metrics` (Prometheus text) over plain HTTP.

use std::sync::Arc;

use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::health::{self, Readiness};
use super::reply::{Body, text, typed};
use super::server::{self, Limits};
use crate::metrics::Metrics;

/// Probes and scrapes are few and quick: more concurrent admin connections than this is a
/// misbehaving client, and must not eat the proxy's file descriptors; one request each.
const LIMITS: Limits = Limits {
    max_connections: 64,
    ..Limits::ONE_REQUEST
};

/// What the endpoints report on.
pub struct AdminState {
    /// Readiness.
    pub readiness: Arc<Readiness>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Serves the admin endpoint on `listener` (when there is one) in a task of its own, until
/// `stop`.
pub fn spawn(
    listener: Option<TcpListener>,
    readiness: &Arc<Readiness>,
    metrics: &Arc<Metrics>,
    stop: CancellationToken,
) {
    if let Some(listener) = listener {
        let state = Arc::new(AdminState {
            readiness: Arc::clone(readiness),
            metrics: Arc::clone(metrics),
        });
        tokio::spawn(serve(listener, state, stop));
    }
}

/// Serves the admin endpoint on `listener` until `stop`.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    let handler = move |req: Request<_>, _: &server::Conn| {
        let response = route(&req, &state);
        async move { response }
    };
    server::serve(listener, None, LIMITS, handler, stop.cancelled_owned()).await;
}

fn route<B>(req: &Request<B>, state: &AdminState) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    if let Some(answer) = health::answer(req, &state.readiness) {
        return answer;
    }
    match req.uri().path() {
        "/metrics" => typed(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz or /metrics\n",
        ),
    }
}
