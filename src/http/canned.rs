//! Answers written straight onto a connection hyper does not serve (the data path's TLS port):
//! a complete `Connection: close` HTTP/1.1 answer, and the goodbye that sends it and closes.

use std::io;
use std::time::Duration;

use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long saying goodbye to a client may take (an answer, close_notify, the client's
/// leftover bytes drained) before the connection is dropped anyway.
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most leftover bytes drained after an answer (see [`goodbye`]).
const LINGER_MAX: usize = 64 * 1024;

/// A complete HTTP/1.1 answer with a plain-text `body`, closing the connection: the status
/// NGINX would send, so a browser or WebSocket client shows what went wrong.
pub fn answer(status: StatusCode, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// How a goodbye ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// As soon as the answer is out.
    Now,
    /// After draining what the client still sends (a lingering close), for a client that
    /// may be in the middle of sending a request we refused.
    Lingering,
}

/// Sends `answer` and closes our side (then drains the client, when `close` lingers), all
/// within [`GOODBYE_TIMEOUT`]; best effort, the connection ends either way.
pub async fn goodbye<S>(client: &mut S, answer: &[u8], close: Close)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, async {
        client.write_all(answer).await?;
        client.shutdown().await?;
        if close == Close::Now {
            return Ok(());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_is_counted_and_the_connection_closed() {
        let text = answer(StatusCode::BAD_GATEWAY, "The upstream is not reachable\n");
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 30\r\n\
             Connection: close\r\n\r\nThe upstream is not reachable\n"
        );
        let mut headers = [httparse::EMPTY_HEADER; 4];
        let mut response = httparse::Response::new(&mut headers);
        let raw = answer(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "é\n");
        let httparse::Status::Complete(head) = response.parse(&raw).unwrap() else {
            panic!("incomplete head");
        };
        assert_eq!(response.code, Some(431));
        let length = response.headers.iter().find(|h| h.name == "Content-Length");
        assert_eq!(
            length.unwrap().value,
            (raw.len() - head).to_string().as_bytes()
        );
    }

    #[tokio::test]
    async fn the_goodbye_answers_closes_and_drains() {
        let (mut ours, mut theirs) = tokio::io::duplex(256 * 1024);
        theirs.write_all(&[b'x'; 4096]).await.unwrap();
        let sent = tokio::spawn(async move {
            goodbye(&mut ours, b"bye", Close::Lingering).await;
            ours
        });
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye", "answered, then closed");
        drop(theirs);
        let mut ours = sent.await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(ours.read_to_end(&mut rest).await.unwrap(), 0, "drained");
    }
}
