//! Reading: plaintext left over first, then received records, then the socket. A peer's
//! close_notify is the end (`Ok` with nothing read); the socket ending without one is
//! `UnexpectedEof`, as with tokio-rustls, which the forwarder treats as an end too.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::records::{Goal, Outcome};
use super::{Received, TlsStream};

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.plain.take_into(buf) > 0 {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let mut from_leftover = !this.incoming.is_empty();
        loop {
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            // Records rustls queued while reading (a KeyUpdate's answer, an alert) go out
            // when the socket takes them; a full socket does not stop the reading.
            if let Poll::Ready(Err(err)) = this.poll_send(cx) {
                return Poll::Ready(Err(err));
            }
            let outcome = if from_leftover {
                from_leftover = false;
                this.process_incoming(Some(buf), &Goal::Process)
                    .map(Received::Processed)
            } else {
                ready!(this.poll_receive(cx, Some(buf), &Goal::Process))
            };
            let got_data = buf.filled().len() > before;
            match outcome {
                Err(err) => return this.fail(cx, err),
                Ok(Received::End) => {
                    this.read_closed = true;
                    if !got_data {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Ok(Received::Processed(Outcome::PeerClosed | Outcome::Closed)) => {
                    this.read_closed = true;
                }
                Ok(Received::Processed(Outcome::ReaderFull)) => {}
                Ok(Received::Processed(Outcome::NeedMore | Outcome::Open)) => {
                    if !got_data {
                        continue;
                    }
                }
            }
            // Send what reading queued, then hand over what was read.
            if let Poll::Ready(Err(err)) = this.poll_send(cx) {
                return Poll::Ready(Err(err));
            }
            return Poll::Ready(Ok(()));
        }
    }
}
