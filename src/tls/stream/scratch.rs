//! One receive buffer per thread, shared by every connection the thread serves: a socket is
//! read into it, its records are decrypted there, and only a partial record is kept by the
//! connection. So an idle connection holds no receive buffer (rustls' own buffered
//! connection keeps 4 KiB for its whole life: `msgs/deframer/buffers.rs`, READ_SIZE).

use std::cell::RefCell;

/// The most read from a socket at once: four full TLS records (16 KiB of plaintext plus
/// header and tag each), so a large message is taken in one system call.
pub(super) const RECEIVE_SIZE: usize = 4 * (16 * 1024 + 5 + 256);

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's buffer of [`RECEIVE_SIZE`] bytes.
pub(super) fn with<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.len() < RECEIVE_SIZE {
                buffer.resize(RECEIVE_SIZE, 0);
            }
            f(&mut buffer)
        }
        // Never nested today; should it ever be, a buffer of its own rather than a panic.
        Err(_) => f(&mut vec![0; RECEIVE_SIZE]),
    })
}
