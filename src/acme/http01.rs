//! The plain HTTP listener (`--http-listen`): answers HTTP-01 challenges from the store and
//! redirects every other request to https:// on the wss port.

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode, header};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::ChallengeResponder;

/// Concurrent plain-HTTP connections: validators and browsers being redirected; more than this
/// is abuse and must not eat the proxy's file descriptors.
const MAX_CONNECTIONS: usize = 256;
/// Where the CA asks for HTTP-01 answers (RFC 8555 §8.3).
const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// What the HTTP listener needs.
pub struct HttpState {
    /// Pending challenge answers; `None` without ACME (then every request is redirected).
    pub responder: Option<Arc<ChallengeResponder>>,
    /// The wss port redirects point at.
    pub https_port: u16,
}

/// Serves `listener` until `stop`.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, stop: CancellationToken) {
    let handler = move |req: Request<Incoming>| {
        let state = Arc::clone(&state);
        async move { route(&req, &state).await }
    };
    crate::http_serve::serve(listener, MAX_CONNECTIONS, handler, stop).await;
}

async fn route(req: &Request<Incoming>, state: &HttpState) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if let (Some(token), Some(responder)) = (path.strip_prefix(CHALLENGE_PREFIX), &state.responder)
    {
        return match responder.http_answer(token).await {
            Some(answer) => respond(StatusCode::OK, answer),
            None => respond(StatusCode::NOT_FOUND, "no such challenge\n".into()),
        };
    }
    let Some(host) = request_host(req) else {
        return respond(
            StatusCode::BAD_REQUEST,
            "a Host header is required\n".into(),
        );
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if state.https_port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{}{target}", state.https_port)
    };
    let mut response = respond(StatusCode::PERMANENT_REDIRECT, format!("see {location}\n"));
    if let Ok(value) = header::HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The Host header without its port, if it is a plausible host name or address.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    let authority: hyper::http::uri::Authority = host.parse().ok()?;
    Some(authority.host().to_string())
}

fn respond(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
