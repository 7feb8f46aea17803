//! Reading the client's first request head under a size cap and a deadline, then rewriting
//! it ([`super::request_head`]); a bad head is answered 400 or 431 and closed, never forwarded.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::request_head::{ClientFacts, HeadError, rewrite};

const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 23\r\nConnection: close\r\n\r\nMalformed request head\n";
const TOO_LARGE: &[u8] =
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n\
Content-Length: 23\r\nConnection: close\r\n\r\nRequest head too large\n";
/// How long a refusal may take to go out (and the client's leftover bytes to be drained)
/// before the connection is dropped anyway.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most leftover bytes drained after a refusal (see [`read_head`]).
const LINGER_MAX: usize = 64 * 1024;

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
    /// A short word for the `connections_rejected_total{reason}` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            HeadFailure::Malformed(_) => "malformed_head",
            HeadFailure::TooLarge => "head_too_large",
            HeadFailure::Timeout => "head_timeout",
            HeadFailure::Eof => "head_eof",
            HeadFailure::Io(_) => "head_io",
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
    let result = read(client, facts, max, deadline).await;
    let answer = match &result {
        Err(HeadFailure::Malformed(_)) => BAD_REQUEST,
        Err(HeadFailure::TooLarge) => TOO_LARGE,
        _ => return result,
    };
    refuse(client, answer).await;
    result
}

/// Sends `answer`, closes our side, and drains what the client still sends, all within
/// [`GOODBYE_TIMEOUT`].
pub(super) async fn refuse<S>(client: &mut S, answer: &[u8])
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, async {
        client.write_all(answer).await?;
        client.shutdown().await?;
        // A lingering close: closing a socket with unread bytes resets the connection, and
        // the reset can overtake the answer, so drain what the client is still sending.
        let mut sink = [0u8; 1024];
        let mut drained = 0;
        while drained < LINGER_MAX {
            match client.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

async fn read<S>(
    client: &mut S,
    facts: &ClientFacts<'_>,
    max: usize,
    deadline: Instant,
) -> Result<Vec<u8>, HeadFailure>
where
    S: AsyncRead + Unpin,
{
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

#[cfg(test)]
mod tests {
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
