//! A per-connection byte queue that holds no memory while empty: bytes that could not be
//! passed on at once (a partial record, plaintext the reader had no room for, records the
//! socket did not take) wait here, and the allocation is freed as soon as they are gone.

/// Bytes waiting, oldest first; `Vec::new()` (no allocation) whenever nothing waits.
#[derive(Debug, Default)]
pub(super) struct Leftover {
    bytes: Vec<u8>,
    /// How much of `bytes` has been used up already.
    start: usize,
}

impl From<Vec<u8>> for Leftover {
    fn from(bytes: Vec<u8>) -> Self {
        let mut left = Self { bytes, start: 0 };
        left.free_if_empty();
        left
    }
}

impl Leftover {
    pub(super) fn is_empty(&self) -> bool {
        self.start == self.bytes.len()
    }

    /// The memory held.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// The waiting bytes.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// The waiting bytes, to process in place.
    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..]
    }

    /// Queues `more` behind what waits.
    pub(super) fn extend(&mut self, more: &[u8]) {
        if more.is_empty() {
            return;
        }
        self.compact();
        self.bytes.extend_from_slice(more);
    }

    /// `len` zeroed bytes at the end, to be written by an encoder; [`Leftover::unused`] gives
    /// back what it did not fill.
    pub(super) fn tail(&mut self, len: usize) -> &mut [u8] {
        self.compact();
        let end = self.bytes.len();
        self.bytes.resize(end + len, 0);
        &mut self.bytes[end..]
    }

    /// Drops the last `len` bytes (the part of a [`Leftover::tail`] left unfilled).
    pub(super) fn unused(&mut self, len: usize) {
        let keep = self.bytes.len().saturating_sub(len).max(self.start);
        self.bytes.truncate(keep);
        self.free_if_empty();
    }

    /// Marks the first `n` waiting bytes as used; frees the memory once none wait.
    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.bytes.len());
        self.free_if_empty();
    }

    /// Moves up to `out.len()` waiting bytes into `out`; returns how many.
    pub(super) fn take_into(&mut self, out: &mut tokio::io::ReadBuf<'_>) -> usize {
        let n = out.remaining().min(self.bytes().len());
        out.put_slice(&self.bytes()[..n]);
        self.consume(n);
        n
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
    }

    fn free_if_empty(&mut self) {
        if self.is_empty() {
            *self = Self::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_is_freed_once_everything_is_used() {
        let mut left = Leftover::default();
        left.extend(b"hello world");
        left.consume(6);
        assert_eq!(left.bytes(), b"world");
        left.extend(b"!");
        assert_eq!(left.bytes(), b"world!");
        let tail = left.tail(4);
        tail[..2].copy_from_slice(b"??");
        left.unused(2);
        assert_eq!(left.bytes(), b"world!??");
        let mut out = [0u8; 3];
        let mut out = tokio::io::ReadBuf::new(&mut out);
        assert_eq!(left.take_into(&mut out), 3);
        assert_eq!(out.filled(), b"wor");
        left.consume(5);
        assert!(left.is_empty());
        assert_eq!(
            left.bytes.capacity(),
            0,
            "an empty queue holds no allocation"
        );
    }
}
