//! What a forwarded connection may do with the bytes as they pass: the hooks [`forward`]
//! calls ([`Watch`]), and [`Raw`], which does nothing (the plain byte copy).
//!
//! The hooks run inside the copy's own poll, one after the other, so a watch needs no locks:
//! it sees each chunk read in either direction before it is written, may replace it, may ask
//! for bytes to be written at a point of its choosing, and keeps its own timers.
//!
//! [`forward`]: super::forward

use std::task::{Context, Poll};

use super::CloseReason;

/// A direction of the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Bytes from the client, written to the app.
    ClientToApp,
    /// Bytes from the app, written to the client.
    AppToClient,
}

/// What to write for a chunk that was read.
#[derive(Debug)]
pub enum Filtered {
    /// The chunk as it is (the common case: nothing copied).
    Unchanged,
    /// These bytes instead (possibly none).
    Replaced(Vec<u8>),
}

/// Hooks into the copy. Every method is called from the copy's poll.
pub trait Watch {
    /// Sees `data`, just read in `dir`, and says what to write.
    fn filter(&mut self, dir: Dir, data: &[u8]) -> Filtered;
    /// Bytes to write in `dir` now, before reading more (called whenever that direction has
    /// written everything it had).
    fn inject(&mut self, dir: Dir) -> Option<Vec<u8>>;
    /// Polls the watch's timers; `Ready` ends the connection for that reason.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason>;
    /// The watch has decided the connection is over: once both directions have written what
    /// they hold, it ends for this reason. Directions read nothing more meanwhile.
    fn finished(&self) -> Option<CloseReason>;
    /// Something changed that the other direction, or the timers, must see: poll again.
    fn wants_repoll(&mut self) -> bool;
    /// The reason to report for an end the copy saw itself (both sides closed, an error):
    /// a close the watch started is reported as that close.
    fn outcome(&self, seen: CloseReason) -> CloseReason;
}

/// No watch: bytes pass as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Watch for Raw {
    #[inline(always)]
    fn filter(&mut self, _: Dir, _: &[u8]) -> Filtered {
        Filtered::Unchanged
    }

    #[inline(always)]
    fn inject(&mut self, _: Dir) -> Option<Vec<u8>> {
        None
    }

    #[inline(always)]
    fn poll_timers(&mut self, _: &mut Context<'_>) -> Poll<CloseReason> {
        Poll::Pending
    }

    #[inline(always)]
    fn finished(&self) -> Option<CloseReason> {
        None
    }

    #[inline(always)]
    fn wants_repoll(&mut self) -> bool {
        false
    }

    #[inline(always)]
    fn outcome(&self, seen: CloseReason) -> CloseReason {
        seen
    }
}
