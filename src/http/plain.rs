//! The plain HTTP port (`--http-listen`): answers HTTP-01 challenges (RFC 8555 §8.3) when ACME
//! uses them, and redirects every other request to https:// on the wss port. It runs with or
//! without ACME.

use std::sync::Arc;

use hyper::{Request, Response, StatusCode, header};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::reply::{Body, text};
use super::server::{self, Limits};

/// Validators and browsers being redirected: more concurrent connections than this is abuse
/// and must not eat the proxy's file descriptors; one request each.
const LIMITS: Limits = Limits {
    max_connections: 256,
    ..Limits::ONE_REQUEST
};
/// Where the CA asks for HTTP-01 answers (RFC 8555 §8.3).
const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Where HTTP-01 answers come from (the ACME store, so that any replica answers).
#[async_trait::async_trait]
pub trait Http01Answers: Send + Sync {
    /// The body to answer `GET /.well-known/acme-challenge/{token}` with, if one is pending.
    async fn http_answer(&self, token: &str) -> Option<String>;
}

/// What the plain HTTP port needs.
pub struct PlainState {
    /// Pending challenge answers; `None` without ACME (then every request is redirected).
    pub answers: Option<Arc<dyn Http01Answers>>,
    /// The wss port redirects point at.
    pub https_port: u16,
}

/// Serves `listener` until `stop`.
pub async fn serve(listener: TcpListener, state: Arc<PlainState>, stop: CancellationToken) {
    let handler = move |req: Request<_>, _: &server::Conn| {
        let state = Arc::clone(&state);
        async move { route(&req, &state).await }
    };
    server::serve(listener, None, LIMITS, handler, stop.cancelled_owned()).await;
}

async fn route<B>(req: &Request<B>, state: &PlainState) -> Response<Body> {
    let path = req.uri().path();
    if let (Some(token), Some(answers)) = (path.strip_prefix(CHALLENGE_PREFIX), &state.answers) {
        return match answers.http_answer(token).await {
            Some(answer) => text(StatusCode::OK, answer),
            None => text(StatusCode::NOT_FOUND, "no such challenge\n"),
        };
    }
    let Some(host) = request_host(req) else {
        return text(StatusCode::BAD_REQUEST, "a Host header is required\n");
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if state.https_port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{}{target}", state.https_port)
    };
    let mut response = text(StatusCode::PERMANENT_REDIRECT, format!("see {location}\n"));
    if let Ok(value) = header::HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The Host header without its port, if it is a plausible host name or address.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    let authority: hyper::http::uri::Authority = host.parse().ok()?;
    Some(authority.host().to_string())
}
