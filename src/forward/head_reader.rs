//! Reading the client's first request head under a size cap and a deadline, then rewriting
//! it ([`super::request_head`]); a bad head is answered 400 or 431 and closed, never forwarded.

use std::io;

use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;

use super::request_head::{ClientFacts, HeadError, rewrite};
use crate::http::canned::{self, Close};

/// What a malformed head is answered with (400).
const BAD_REQUEST: &str = "Malformed request head\n";
/// What an oversized head is answered with (431).
const TOO_LARGE: &str = "Request head too large\n";

/// Why no head was forwarded. Each ends only its own connection.
#[derive(Debug, thiserror::Error)]
pub enum HeadFailure {
    /// Not an HTTP request (answered 400).
    #[error("{0}")]
    Malformed(HeadError),
    /// Over `--max-request-head` or too many header lines (answered 431).
    #[error("request head over the size cap")]
    TooLarge,
    /// Not complete within `--request-head-timeout` (closed without an answer).
    #[error("request head not complete in time")]
    Timeout,
    /// The client left before finishing its head.
    #[error("client closed before finishing its request head")]
    Eof,
    /// Reading from the client failed.
    #[error("reading the request head failed: {0}")]
    Io(io::Error),
}

impl HeadFailure {
    /// Every word [`reason`](Self::reason) gives: the metric's series are created at zero
    /// from these.
    pub const REASONS: [&'static str; 5] = [
        "malformed_head",
        "head_too_large",
        "head_timeout",
        "head_eof",
        "head_io",
    ];

    /// A short word for the `connections_rejected_total{reason}` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            HeadFailure::Malformed(_) => Self::REASONS[0],
            HeadFailure::TooLarge => Self::REASONS[1],
            HeadFailure::Timeout => Self::REASONS[2],
            HeadFailure::Eof => Self::REASONS[3],
            HeadFailure::Io(_) => Self::REASONS[4],
        }
    }
}

/// Reads from `client` until a complete head arrived (at most `max` bytes, before
/// `deadline`) and returns the bytes to send upstream: the rewritten head and whatever
/// followed it. A malformed or oversized head is answered here.
pub async fn read_head<S>(
    client: &mut S,
    facts: &ClientFacts<'_>,
    max: usize,
    deadline: Instant,
) -> Result<Vec<u8>, HeadFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let result = async {
        let mut buf = vec![0u8; max];
        let mut filled = 0;
        loop {
            if filled == max {
                return Err(HeadFailure::TooLarge);
            }
            let n = match tokio::time::timeout_at(deadline, client.read(&mut buf[filled..])).await {
                Err(_) => return Err(HeadFailure::Timeout),
                Ok(Err(err)) => return Err(HeadFailure::Io(err)),
                Ok(Ok(0)) => return Err(HeadFailure::Eof),
                Ok(Ok(n)) => n,
            };
            let line_ended = buf[filled..filled + n].contains(&b'\n');
            filled += n;
            // A head can only be complete (or shown malformed) once a line has ended; skipping
            // the parse otherwise keeps a byte-at-a-time client from costing a parse per byte.
            if !line_ended {
                continue;
            }
            match rewrite(&buf[..filled], facts) {
                Ok(Some(out)) => return Ok(out),
                Ok(None) => {}
                Err(HeadError::TooLarge) => return Err(HeadFailure::TooLarge),
                Err(err) => return Err(HeadFailure::Malformed(err)),
            }
        }
    }
    .await;
    let answer = match &result {
        Err(HeadFailure::Malformed(_)) => canned::answer(StatusCode::BAD_REQUEST, BAD_REQUEST),
        Err(HeadFailure::TooLarge) => {
            canned::answer(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, TOO_LARGE)
        }
        _ => return result,
    };
    canned::goodbye(client, &answer, Close::Lingering).await;
    result
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;

    fn facts() -> ClientFacts<'static> {
        ClientFacts {
            addr: "127.0.0.1:1".parse().unwrap(),
            local_port: 443,
            sni: None,
            trusted: false,
            cert_headers: &[],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_never_finishes_times_out() {
        let (mut ours, mut theirs) = tokio::io::duplex(1024);
        theirs
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let result = read_head(&mut ours, &facts(), 1024, deadline).await;
        assert!(matches!(result, Err(HeadFailure::Timeout)), "{result:?}");
    }

    #[tokio::test]
    async fn an_oversized_head_gets_431() {
        let (mut ours, mut theirs) = tokio::io::duplex(4096);
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.extend(std::iter::repeat_n(b"X-Pad: 0123456789\r\n".as_slice(), 80).flatten());
        theirs.write_all(&head).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let result = read_head(&mut ours, &facts(), 1024, deadline).await;
        assert!(matches!(result, Err(HeadFailure::TooLarge)), "{result:?}");
        let mut answer = String::new();
        theirs.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    }
}
