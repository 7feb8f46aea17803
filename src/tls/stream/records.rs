//! Runs rustls' unbuffered state machine over received ciphertext: decrypted plaintext goes
//! to the reader (or waits), records to send are queued, and application data or a
//! close_notify is encrypted once the connection allows it.
//!
//! The states and what each asks of the caller: rustls 0.23 `conn/unbuffered.rs`.

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use tokio::io::ReadBuf;

use super::buffer::Leftover;

/// Where processing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The records so far are processed; the handshake needs more bytes from the peer.
    NeedMore,
    /// The handshake is complete and every whole record is processed (the goal's data, if
    /// any, is encrypted): read more from the peer, or write.
    Open,
    /// The reader's buffer is full; more records may wait unprocessed.
    ReaderFull,
    /// The peer's close_notify arrived: no more data from it (reported once).
    PeerClosed,
    /// Both sides sent close_notify.
    Closed,
}

/// What the caller wants once the connection can carry application data.
pub(super) enum Goal<'a> {
    /// Only to process what was received.
    Process,
    /// To encrypt these bytes.
    Encrypt(&'a [u8]),
    /// To send a close_notify.
    CloseNotify,
}

/// Where the results go.
pub(super) struct Sink<'a, 'b> {
    /// Plaintext the reader had no room for.
    pub plain: &'a mut Leftover,
    /// Records to send, in order.
    pub outgoing: &'a mut Leftover,
    /// The reader's buffer, when a read asked.
    pub reader: Option<&'a mut ReadBuf<'b>>,
}

impl Sink<'_, '_> {
    fn deliver(&mut self, mut payload: &[u8]) {
        if let Some(reader) = self.reader.as_deref_mut() {
            let n = reader.remaining().min(payload.len());
            reader.put_slice(&payload[..n]);
            payload = &payload[n..];
        }
        self.plain.extend(payload);
    }

    fn reader_full(&self) -> bool {
        self.reader.as_ref().is_some_and(|r| r.remaining() == 0)
    }
}

/// Processes `incoming` (received ciphertext) towards `goal`. Returns how many bytes of it are
/// used up (the caller discards them) and where it stopped. On a TLS error the alert rustls
/// queued is in `sink.outgoing`.
pub(super) fn drive(
    conn: &mut UnbufferedServerConnection,
    incoming: &mut [u8],
    goal: &Goal<'_>,
    sink: &mut Sink<'_, '_>,
) -> (usize, Result<Outcome, rustls::Error>) {
    let mut used = 0;
    loop {
        let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut incoming[used..]);
        let state = match state {
            Ok(state) => state,
            Err(err) => {
                used += discard;
                queue_alert(conn, &mut incoming[used..], sink.outgoing);
                return (used, Err(err));
            }
        };
        let stop = match state {
            ConnectionState::ReadTraffic(mut traffic) => {
                let mut failed = None;
                while let Some(record) = traffic.next_record() {
                    match record {
                        Ok(record) => {
                            used += record.discard;
                            sink.deliver(record.payload);
                        }
                        Err(err) => {
                            failed = Some(err);
                            break;
                        }
                    }
                }
                match failed {
                    Some(err) => Some(Err(err)),
                    None if sink.reader_full() => Some(Ok(Outcome::ReaderFull)),
                    None => None,
                }
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                let written = append(
                    sink.outgoing,
                    |out| encode.encode(out),
                    |e| match e {
                        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
                            Some(*required_size)
                        }
                        EncodeError::AlreadyEncoded => None,
                    },
                );
                written
                    .err()
                    .map(|e| Err(rustls::Error::General(e.to_string())))
            }
            // Queued records go out before the next read (the caller sends `outgoing` first),
            // so they count as sent here.
            ConnectionState::TransmitTlsData(transmit) => {
                transmit.done();
                None
            }
            ConnectionState::BlockedHandshake => Some(Ok(Outcome::NeedMore)),
            ConnectionState::WriteTraffic(mut traffic) => {
                let written = match goal {
                    Goal::Process => Ok(()),
                    Goal::Encrypt(data) => append(
                        sink.outgoing,
                        |out| traffic.encrypt(data, out),
                        required_for_encrypt,
                    ),
                    Goal::CloseNotify => append(
                        sink.outgoing,
                        |out| traffic.queue_close_notify(out),
                        required_for_encrypt,
                    ),
                };
                Some(
                    written
                        .map(|()| Outcome::Open)
                        .map_err(|e| rustls::Error::General(e.to_string())),
                )
            }
            ConnectionState::PeerClosed => Some(Ok(Outcome::PeerClosed)),
            ConnectionState::Closed => Some(Ok(Outcome::Closed)),
            // Early data is never accepted (`max_early_data_size` stays 0).
            _ => Some(Err(rustls::Error::General(
                "unexpected unbuffered tls state".into(),
            ))),
        };
        used += discard;
        if let Some(outcome) = stop {
            return (used, outcome);
        }
    }
}

fn required_for_encrypt(err: &EncryptError) -> Option<usize> {
    match err {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    }
}

/// Lets `write` encode into the end of `outgoing`, sized by what it says it needs.
fn append<E>(
    outgoing: &mut Leftover,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    required: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let needed = match write(&mut []) {
        Ok(_) => return Ok(()),
        Err(err) => match required(&err) {
            Some(size) => size,
            None => return Err(err),
        },
    };
    let written = write(outgoing.tail(needed));
    let filled = *written.as_ref().unwrap_or(&0);
    outgoing.unused(needed - filled.min(needed));
    written.map(|_| ())
}

/// After an error, queues the alert rustls prepared (it comes as records to encode).
fn queue_alert(conn: &mut UnbufferedServerConnection, rest: &mut [u8], outgoing: &mut Leftover) {
    let UnbufferedStatus { state, .. } = conn.process_tls_records(rest);
    if let Ok(ConnectionState::EncodeTlsData(mut encode)) = state {
        let _ = append(
            outgoing,
            |out| encode.encode(out),
            |e| match e {
                EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
                    Some(*required_size)
                }
                EncodeError::AlreadyEncoded => None,
            },
        );
    }
}
