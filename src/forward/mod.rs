//! Forwarding after the handshake: tell the upstream who the client is (PROXY header,
//! forwarded headers), open the upstream, then copy bytes both ways.

mod duplex;
mod head_reader;
mod one_way;
mod preamble;
mod proxy_protocol;
mod request_head;
mod upstream;

pub use duplex::{CloseReason, Counters, Timeouts, forward};
pub use head_reader::HeadFailure;
pub use preamble::{ClientConfig, ForwardedHeaders, Preamble, Refusal};
pub use proxy_protocol::ProxyProtocol;
pub use upstream::{ConnectError, Upstream, UpstreamStream, connect};
