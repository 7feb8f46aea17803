//! Request routing for the demo app: the page, a health check, and the `/ws` upgrade.

use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, HeaderMap, HeaderName, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Method, Request, Response, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::debug;

use super::echo;
use crate::http::Conn;
use crate::http::reply::{Body, text, typed};

/// The demo page, compiled in so the app is one self-contained binary.
const PAGE: &str = include_str!("page.html");

/// The only WebSocket protocol version (RFC 6455) the demo speaks.
const WEBSOCKET_VERSION: &str = "13";

/// Why a `/ws` request was not upgraded; each is answered with an error status, never fatal.
#[derive(Debug, thiserror::Error)]
enum Rejection {
    /// `Upgrade: websocket` or `Connection: upgrade` is missing.
    #[error("not a websocket upgrade: send `Upgrade: websocket` and `Connection: upgrade`")]
    NotUpgrade,
    /// `Sec-WebSocket-Version` is missing or not 13.
    #[error("unsupported websocket version: send `Sec-WebSocket-Version: 13`")]
    WrongVersion,
    /// `Sec-WebSocket-Key` is missing or empty.
    #[error("missing `Sec-WebSocket-Key`")]
    MissingKey,
}

impl Rejection {
    fn into_response(self) -> Response<Body> {
        match self {
            Self::WrongVersion => {
                // RFC 6455 §4.4: tell the client which version to retry with.
                let mut res = text(
                    StatusCode::UPGRADE_REQUIRED,
                    "unsupported websocket version\n",
                );
                res.headers_mut().insert(
                    SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static(WEBSOCKET_VERSION),
                );
                res
            }
            Self::NotUpgrade | Self::MissingKey => {
                text(StatusCode::BAD_REQUEST, "expected a websocket upgrade\n")
            }
        }
    }
}

/// Answers one request on `conn`; an upgraded session takes a share of the connection's slot.
pub(super) fn respond(req: Request<Incoming>, conn: &Conn) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => typed(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/ws") => upgrade(req, conn),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Accepts a WebSocket upgrade and hands the connection to an echo session.
fn upgrade(mut req: Request<Incoming>, conn: &Conn) -> Response<Body> {
    let addr = conn.peer;
    let accept = match check_upgrade(req.headers()) {
        Ok(key) => derive_accept_key(key),
        Err(rejection) => {
            debug!(client.addr = %addr, reason = %rejection, "websocket upgrade refused");
            return rejection.into_response();
        }
    };
    // The accept key is base64, so this cannot fail; answer 500 rather than panic regardless.
    let Ok(accept) = HeaderValue::try_from(accept) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
    };

    echo::spawn_session(hyper::upgrade::on(&mut req), addr, conn.slot.clone());

    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = res.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    res
}

/// Checks the RFC 6455 §4.2.1 upgrade headers and returns the client's key.
fn check_upgrade(headers: &HeaderMap) -> Result<&[u8], Rejection> {
    if !has_token(headers, &UPGRADE, "websocket") || !has_token(headers, &CONNECTION, "upgrade") {
        return Err(Rejection::NotUpgrade);
    }
    let version = headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes);
    if version != Some(WEBSOCKET_VERSION.as_bytes()) {
        return Err(Rejection::WrongVersion);
    }
    match headers.get(SEC_WEBSOCKET_KEY).map(HeaderValue::as_bytes) {
        Some(key) if !key.is_empty() => Ok(key),
        _ => Err(Rejection::MissingKey),
    }
}

/// Whether a comma-separated header (any of its lines) lists `token`, ignoring ASCII case:
/// browsers send e.g. `Connection: keep-alive, Upgrade`.
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn accepts_browser_style_headers() {
        let map = headers(&[
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", KEY),
        ]);
        assert_eq!(check_upgrade(&map).ok(), Some(KEY.as_bytes()));
    }

    #[test]
    fn rejects_missing_or_wrong_headers() {
        let no_upgrade = headers(&[("sec-websocket-version", "13"), ("sec-websocket-key", KEY)]);
        assert!(matches!(
            check_upgrade(&no_upgrade),
            Err(Rejection::NotUpgrade)
        ));

        let old_version = headers(&[
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-version", "8"),
            ("sec-websocket-key", KEY),
        ]);
        assert!(matches!(
            check_upgrade(&old_version),
            Err(Rejection::WrongVersion)
        ));

        let no_key = headers(&[
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-version", "13"),
        ]);
        assert!(matches!(check_upgrade(&no_key), Err(Rejection::MissingKey)));
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 §1.3 worked example.
        assert_eq!(
            derive_accept_key(KEY.as_bytes()),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
