//! The plain HTTP listener (`--http-listen`): answers HTTP-01 challenges from the store and
//! redirects every other request to https:// on the wss port.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::ChallengeResponder;

/// Concurrent plain-HTTP connections: validators and browsers being redirected; more than this
/// is abuse and must not eat the proxy's file descriptors.
const MAX_CONNECTIONS: usize = 256;
/// A client that cannot send its request head in this long is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on one connection's life (one request: keep-alive is off).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
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
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        let state = Arc::clone(&state);
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(&req, &state).await) }
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
