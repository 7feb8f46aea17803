//! Forwarding after the handshake: open the upstream, then copy bytes both ways.

mod duplex;
mod one_way;
mod upstream;

pub use duplex::{CloseReason, Counters, Timeouts, forward};
pub use upstream::{ConnectError, UpstreamStream, connect};
