//! Building responses: the body type every handler answers with, plain text, and other types.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

/// The body of every response the server sends.
pub type Body = Full<Bytes>;

/// A `text/plain; charset=utf-8` response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    typed(status, "text/plain; charset=utf-8", body)
}

/// A response of `content_type`.
pub fn typed(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
