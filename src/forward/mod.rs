//! Forwarding after the handshake: tell the upstream who the client is (PROXY header,
//! forwarded headers), open the upstream, then copy bytes both ways, following the HTTP
//! exchange and the WebSocket frames when the sidecar closes or pings connections itself.

mod duplex;
mod head_reader;
mod http_exchange;
mod one_way;
mod preamble;
mod proxy_protocol;
mod request_head;
mod upstream;
mod watch;
pub mod websocket;
mod ws_frames;

pub use duplex::{CloseReason, Counters, Timeouts, forward, forward_watched};
pub use head_reader::HeadFailure;
pub use preamble::{ClientConfig, ForwardedHeaders, Preamble, Prepared, Refusal};
pub use proxy_protocol::ProxyProtocol;
pub use upstream::{ConnectError, Upstream, UpstreamStream, connect};
