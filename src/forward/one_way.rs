//! One direction of a forwarded connection: read, write, and pass the end on.
//!
//! Reads go into a buffer on the stack of the poll call, and are written straight out. Only
//! when the writer cannot take everything (backpressure) do the leftover bytes move to the
//! heap, and that buffer is freed as soon as it has drained. So an idle connection, which is
//! most WebSockets most of the time, holds no copy buffer at all.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::watch::{Dir, Filtered, Watch};

/// The most read at once. 64 KiB (not one 16 KiB TLS record): a large message is read from the
/// app in one call and handed to rustls in one write, which cuts it into full records that
/// go out in one writev; the benchmark's 64 KiB echo: +20% throughput, -25% CPU per byte.
/// The buffer is on the stack; under backpressure up to this much moves to the heap.
const READ_CHUNK: usize = 64 * 1024;

/// Which half of a direction failed: its reader or its writer.
pub(super) enum Fault {
    Read(io::Error),
    Write(io::Error),
}

/// One direction of the copy.
pub(super) struct OneWay {
    /// Bytes read but not yet written; no allocation while nothing is pending.
    pending: Vec<u8>,
    /// How much of `pending` has been written.
    written: usize,
    read_done: bool,
    needs_flush: bool,
    done: bool,
    /// Bytes written so far.
    pub(super) total: u64,
    counter: Counter,
}

impl OneWay {
    pub(super) fn new(counter: Counter) -> Self {
        Self {
            pending: Vec::new(),
            written: 0,
            read_done: false,
            needs_flush: false,
            done: false,
            total: 0,
            counter,
        }
    }

    /// Moves bytes from `reader` to `writer` until the reader has nothing more for now
    /// (`Pending`), or it ended and the end was passed on (`Ready(Ok)`), or a side failed.
    /// `on_data` runs whenever bytes arrive. `watch` sees every chunk before it is written
    /// (as direction `dir`); once it has [finished](Watch::finished), nothing more is read.
    pub(super) fn poll<R, W, H>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        watch: &mut H,
        dir: Dir,
        on_data: impl Fn(),
    ) -> Poll<Result<(), Fault>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
        H: Watch,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            while self.written < self.pending.len() {
                let n = ready!(self.write(cx, writer, Pending))?;
                self.written += n;
            }
            if !self.pending.is_empty() {
                // Drained: give the memory back while the connection idles.
                self.pending = Vec::new();
                self.written = 0;
            }
            if let Some(bytes) = watch.inject(dir) {
                self.pending = bytes;
                continue;
            }
            if watch.finished().is_some() {
                // Push out what was written; the caller ends the connection.
                if self.needs_flush {
                    ready!(Pin::new(&mut *writer).poll_flush(cx)).map_err(Fault::Write)?;
                    self.needs_flush = false;
                }
                return Poll::Pending;
            }
            if self.read_done {
                // Pass the end on; shutdown flushes first.
                ready!(Pin::new(&mut *writer).poll_shutdown(cx)).map_err(Fault::Write)?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }

            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut read_buf = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut *reader).poll_read(cx, &mut read_buf) {
                Poll::Ready(Ok(())) if read_buf.filled().is_empty() => self.read_done = true,
                Poll::Ready(Ok(())) => {
                    let data = read_buf.filled();
                    self.counter.inc_by(data.len() as u64);
                    on_data();
                    if let Filtered::Replaced(bytes) = watch.filter(dir, data) {
                        // Written from the heap at the top of the loop.
                        self.pending = bytes;
                        self.written = 0;
                        continue;
                    }
                    let mut offset = 0;
                    while offset < data.len() {
                        match self.write(cx, writer, Chunk(&data[offset..])) {
                            Poll::Ready(Ok(n)) => offset += n,
                            Poll::Ready(Err(fault)) => return Poll::Ready(Err(fault)),
                            Poll::Pending => {
                                // Backpressure: keep the rest until the writer wakes us.
                                self.pending = data[offset..].to_vec();
                                return Poll::Pending;
                            }
                        }
                    }
                }
                // A TLS peer closing without close_notify: an end, not a failure.
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.read_done = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Fault::Read(e))),
                Poll::Pending => {
                    // Nothing more to read now: push out what was written so far.
                    if self.needs_flush {
                        ready!(Pin::new(&mut *writer).poll_flush(cx)).map_err(Fault::Write)?;
                        self.needs_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Bytes read but not yet written.
    pub(super) fn has_pending(&self) -> bool {
        self.written < self.pending.len()
    }

    /// Writes from `source` once; counts what was taken.
    fn write<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut W,
        source: Source<'_>,
    ) -> Poll<Result<usize, Fault>> {
        let bytes = match source {
            Pending => &self.pending[self.written..],
            Chunk(bytes) => bytes,
        };
        let n = ready!(Pin::new(&mut *writer).poll_write(cx, bytes)).map_err(Fault::Write)?;
        if n == 0 {
            return Poll::Ready(Err(Fault::Write(io::ErrorKind::WriteZero.into())));
        }
        self.total += n as u64;
        self.needs_flush = true;
        Poll::Ready(Ok(n))
    }
}

/// What [`OneWay::write`] writes from.
enum Source<'a> {
    /// The heap buffer of bytes left over from an earlier read.
    Pending,
    /// Bytes just read, still on the stack.
    Chunk(&'a [u8]),
}

use Source::{Chunk, Pending};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::watch::Raw;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn backpressure_keeps_the_rest_and_frees_it_once_written() {
        let (mut source, mut reader) = duplex(64 * 1024);
        // A writer that takes at most 1 KiB before its buffer is full.
        let (mut writer, mut sink) = duplex(1024);
        let mut one = OneWay::new(Counter::default());
        let payload: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        source.write_all(&payload).await.unwrap();
        drop(source);

        let polled = poll_fn(|cx| {
            Poll::Ready(one.poll(
                cx,
                &mut reader,
                &mut writer,
                &mut Raw,
                Dir::ClientToApp,
                || {},
            ))
        })
        .await;
        assert!(polled.is_pending(), "the 1 KiB writer must push back");
        assert!(!one.pending.is_empty(), "the unwritten rest is kept");

        let copy = async {
            poll_fn(|cx| {
                one.poll(
                    cx,
                    &mut reader,
                    &mut writer,
                    &mut Raw,
                    Dir::ClientToApp,
                    || {},
                )
            })
            .await
            .ok();
            one
        };
        let mut received = Vec::new();
        let (one, _) = tokio::join!(copy, sink.read_to_end(&mut received));
        assert_eq!(received, payload);
        assert_eq!(one.total, payload.len() as u64);
        assert_eq!(one.pending.capacity(), 0, "no buffer is held once drained");
    }
}
