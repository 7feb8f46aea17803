//! Writing: data is encrypted into the connection's outgoing queue and written to the socket
//! at once; a queue the socket has not taken holds further writes back (backpressure).
//! Shutdown sends close_notify, then ends the socket's sending half (half-close).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite};

use super::TlsStream;
use super::records::{Goal, Outcome};

/// The most plaintext taken per write: what the forwarder reads at once; rustls cuts it into
/// full records.
const MAX_WRITE: usize = 64 * 1024;

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Gets the connection to where it can carry `goal` and does it.
    fn encrypt(&mut self, goal: &Goal<'_>) -> io::Result<()> {
        loop {
            match self.process_incoming(None, goal)? {
                Outcome::Open => return Ok(()),
                // Our side may still send after the peer's close_notify (half-close).
                Outcome::PeerClosed => self.read_closed = true,
                // More records wait behind a full reader: processed into `plain`.
                Outcome::ReaderFull => {}
                Outcome::Closed => return Err(io::ErrorKind::BrokenPipe.into()),
                Outcome::NeedMore => return Err(io::ErrorKind::NotConnected.into()),
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if this.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        if let Err(err) = this.encrypt(&Goal::Encrypt(data)) {
            return this.fail(cx, err);
        }
        // Taken: what the socket does not take now waits, and holds the next write back.
        if let Poll::Ready(Err(err)) = this.poll_send(cx) {
            return Poll::Ready(Err(err));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed {
            this.write_closed = true;
            if let Err(err) = this.encrypt(&Goal::CloseNotify) {
                return this.fail(cx, err);
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
