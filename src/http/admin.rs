//! The admin endpoint: `/healthz`, `/readyz` and `/metrics` (Prometheus text) over plain HTTP,
//! and `POST /lame-duck` from a loopback peer (the preStop hook's `wss-sidecar lame-duck`).

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::health::{self, Readiness};
use super::reply::{Body, text, typed};
use super::server::{self, Limits};
use crate::metrics::Metrics;
use crate::shutdown::LAME_DUCK_PATH;

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
    /// Cancelled by `POST /lame-duck` to start the lame duck; `None`: no such endpoint.
    pub lame_duck: Option<CancellationToken>,
}

/// Serves the admin endpoint on `listener` (when there is one) in a task of its own, until
/// `stop`; `POST /lame-duck` cancels `lame_duck`.
pub fn spawn(
    listener: Option<TcpListener>,
    readiness: &Arc<Readiness>,
    metrics: &Arc<Metrics>,
    lame_duck: Option<&CancellationToken>,
    stop: CancellationToken,
) {
    if let Some(listener) = listener {
        let state = Arc::new(AdminState {
            readiness: Arc::clone(readiness),
            metrics: Arc::clone(metrics),
            lame_duck: lame_duck.cloned(),
        });
        tokio::spawn(serve(listener, state, stop));
    }
}

/// Serves the admin endpoint on `listener` until `stop`.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    let handler = move |req: Request<_>, conn: &server::Conn| {
        let response = route(&req, conn.peer, &state);
        async move { response }
    };
    server::serve(listener, None, LIMITS, handler, stop.cancelled_owned()).await;
}

fn route<B>(req: &Request<B>, peer: SocketAddr, state: &AdminState) -> Response<Body> {
    if req.uri().path() == LAME_DUCK_PATH {
        return lame_duck(req, peer, state);
    }
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

/// `POST /lame-duck`: starts the lame duck. Only from loopback: the admin port is reachable
/// from the whole pod network (the kubelet's probes dial the pod IP), while the preStop exec
/// runs in the pod's own network namespace, where the sidecar is reached on 127.0.0.1.
fn lame_duck<B>(req: &Request<B>, peer: SocketAddr, state: &AdminState) -> Response<Body> {
    let Some(trigger) = &state.lame_duck else {
        return text(StatusCode::NOT_FOUND, "no lame duck here\n");
    };
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only POST\n");
    }
    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
    if !peer.ip().to_canonical().is_loopback() {
        tracing::warn!(client.addr = %peer, "POST /lame-duck refused: not from loopback");
        return text(
            StatusCode::FORBIDDEN,
            "POST /lame-duck is accepted from loopback only\n",
        );
    }
    if trigger.is_cancelled() {
        return text(StatusCode::OK, "lame duck already started\n");
    }
    tracing::info!("lame duck requested on the admin port");
    trigger.cancel();
    text(StatusCode::ACCEPTED, "lame duck started\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::CertStore;

    fn state() -> AdminState {
        let metrics = Arc::new(Metrics::new());
        AdminState {
            readiness: Arc::new(Readiness::new(CertStore::new(Arc::clone(&metrics)))),
            metrics,
            lame_duck: Some(CancellationToken::new()),
        }
    }

    fn post() -> Request<()> {
        Request::post(LAME_DUCK_PATH).body(()).unwrap()
    }

    #[test]
    fn lame_duck_is_refused_from_the_pod_network() {
        let state = state();
        for peer in [
            "10.1.2.3:40000",
            "[fd00::7]:40000",
            "[::ffff:10.1.2.3]:40000",
        ] {
            let answer = route(&post(), peer.parse().unwrap(), &state);
            assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{peer}");
        }
        assert!(!state.lame_duck.as_ref().unwrap().is_cancelled());
    }

    #[test]
    fn lame_duck_is_started_from_loopback_once() {
        let state = state();
        let get = Request::get(LAME_DUCK_PATH).body(()).unwrap();
        let peer = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(
            route(&get, peer, &state).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(route(&post(), peer, &state).status(), StatusCode::ACCEPTED);
        assert!(state.lame_duck.as_ref().unwrap().is_cancelled());
        let mapped = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        assert_eq!(route(&post(), mapped, &state).status(), StatusCode::OK);
        let v6 = "[::1]:40000".parse().unwrap();
        assert_eq!(route(&post(), v6, &state).status(), StatusCode::OK);
    }
}
