//! A server TLS stream on rustls' unbuffered API, so that an idle connection holds no buffer.
//!
//! The socket is read into a per-thread buffer ([`scratch`]), records are decrypted there and
//! the plaintext is copied straight into the reader's buffer; only what cannot be passed on
//! at once (a partial record, plaintext the reader had no room for, records the socket did
//! not take) waits in a per-connection [`buffer::Leftover`], freed as soon as it drains.
//! rustls' buffered connection keeps a 4 KiB receive buffer for the connection's life
//! (upstream's answer to idle memory is this API: rustls issue #794, PR #1180).
//!
//! - `hello`: the ClientHello read and inspected before a configuration is chosen.
//! - `records`: the unbuffered state machine over received ciphertext.
//! - `read`, `write`: `AsyncRead` and `AsyncWrite`, with close_notify both ways.

mod buffer;
mod hello;
mod read;
mod records;
mod scratch;
#[cfg(test)]
mod tests;
mod write;

pub(super) use hello::read_hello;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use buffer::Leftover;
use records::{Goal, Outcome, Sink};

/// A TLS server connection over `IO` (a `TcpStream` in the proxy).
pub struct TlsStream<IO> {
    io: IO,
    /// Boxed (1.1 KB): the connection's task, which holds this stream, may be nested in
    /// futures that keep more than one copy of their inner future's space; a pointer is all
    /// they copy then.
    conn: Box<UnbufferedServerConnection>,
    /// Received ciphertext not yet processed: a partial record, between reads.
    incoming: Leftover,
    /// Decrypted plaintext the reader has not taken yet.
    plain: Leftover,
    /// Records encoded but not yet written to `io`.
    outgoing: Leftover,
    /// The name the client asked for (SNI), from its ClientHello.
    sni: Option<Box<str>>,
    /// No more data will come from the peer (its close_notify, or the end of the socket).
    read_closed: bool,
    /// Our close_notify is queued.
    write_closed: bool,
}

impl<IO> TlsStream<IO> {
    /// The socket.
    pub fn io(&self) -> &IO {
        &self.io
    }

    /// What was negotiated: version, cipher suite, ALPN, the client's certificates.
    pub fn tls(&self) -> &rustls::CommonState {
        &self.conn
    }

    /// The server name the client asked for (SNI), if it sent one.
    pub fn server_name(&self) -> Option<&str> {
        self.sni.as_deref()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// A server connection using `config`, whose first bytes (`received`, at least the
    /// ClientHello) were already read from `io`.
    pub(super) fn new(
        io: IO,
        config: Arc<ServerConfig>,
        received: Vec<u8>,
        sni: Option<Box<str>>,
    ) -> Result<Self, rustls::Error> {
        Ok(Self {
            io,
            conn: Box::new(UnbufferedServerConnection::new(config)?),
            incoming: Leftover::from(received),
            plain: Leftover::default(),
            outgoing: Leftover::default(),
            sni,
            read_closed: false,
            write_closed: false,
        })
    }

    /// Completes the handshake (data the client sent with its last flight waits for the
    /// first read).
    pub(super) async fn handshake(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_handshake(cx)).await
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            // Our flight must be out before the client can answer it.
            ready!(self.poll_send(cx))?;
            let outcome = match self.process_incoming(None, &Goal::Process) {
                Ok(outcome) => outcome,
                Err(err) => return self.fail(cx, err),
            };
            match outcome {
                Outcome::Open => return self.poll_send(cx),
                Outcome::PeerClosed | Outcome::Closed => {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                Outcome::NeedMore | Outcome::ReaderFull => {}
            }
            ready!(self.poll_send(cx))?;
            match ready!(self.poll_receive(cx, None, &Goal::Process)) {
                Ok(Received::End) => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Ok(Received::Processed(_)) => {}
                Err(err) => return self.fail(cx, err),
            }
        }
    }

    /// Sends what is queued (the alert of a failure, best effort) and returns `err`.
    fn fail<T>(&mut self, cx: &mut Context<'_>, err: io::Error) -> Poll<io::Result<T>> {
        let _ = self.poll_send(cx);
        Poll::Ready(Err(err))
    }

    /// Writes out every queued record; `Ready(Ok)` once none is left.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.outgoing.bytes()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.consume(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Processes the ciphertext already received towards `goal`.
    fn process_incoming(
        &mut self,
        reader: Option<&mut ReadBuf<'_>>,
        goal: &Goal<'_>,
    ) -> io::Result<Outcome> {
        let mut sink = Sink {
            plain: &mut self.plain,
            outgoing: &mut self.outgoing,
            reader,
        };
        let (used, outcome) =
            records::drive(&mut self.conn, self.incoming.bytes_mut(), goal, &mut sink);
        self.incoming.consume(used);
        outcome.map_err(tls_error)
    }

    /// Reads from the socket once, into this thread's buffer, and processes what came with
    /// what was left over; only a partial record stays with the connection.
    fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
        reader: Option<&mut ReadBuf<'_>>,
        goal: &Goal<'_>,
    ) -> Poll<io::Result<Received>> {
        scratch::with(|scratch| {
            let mut read = ReadBuf::new(scratch);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(Received::End));
            }
            if !self.incoming.is_empty() {
                self.incoming.extend(&scratch[..n]);
                return Poll::Ready(self.process_incoming(reader, goal).map(Received::Processed));
            }
            let mut sink = Sink {
                plain: &mut self.plain,
                outgoing: &mut self.outgoing,
                reader,
            };
            let (used, outcome) =
                records::drive(&mut self.conn, &mut scratch[..n], goal, &mut sink);
            self.incoming.extend(&scratch[used.min(n)..n]);
            Poll::Ready(outcome.map(Received::Processed).map_err(tls_error))
        })
    }
}

/// What one read from the socket gave.
enum Received {
    /// The socket's end (no close_notify came first).
    End,
    /// Bytes, processed this far.
    Processed(Outcome),
}

/// A TLS failure as the I/O error tokio-rustls gives (the rustls error inside, so that
/// [`super::is_client_cert_error`] can tell client-certificate failures apart).
fn tls_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}
