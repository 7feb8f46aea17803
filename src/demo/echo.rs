//! The `/ws` echo session: every text and binary message goes back to the sender unchanged.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message, protocol::Role, protocol::WebSocketConfig};
use tracing::debug;

use crate::http::Slot;

/// Largest message the demo will buffer. Big enough to push a sizeable paste or file through the
/// sidecar when testing it, small enough that one client cannot make the demo hold gigabytes.
pub(super) const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Largest single frame. Equal to the message limit, so a client that sends one unfragmented
/// message (what browsers do) is bounded by the same figure.
pub(super) const MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// Why one echo session ended early; each ends that session only and is logged once.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// The client's connection closed or failed before hyper handed over the upgraded stream.
    #[error("websocket upgrade did not complete: {0}")]
    Upgrade(hyper::Error),
    /// A protocol or I/O error on the WebSocket (includes messages over [`MAX_MESSAGE_SIZE`]).
    #[error("websocket session failed: {0}")]
    WebSocket(tungstenite::Error),
}

/// The WebSocket limits for every session.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_FRAME_SIZE))
}

/// Runs one echo session in its own task once hyper completes the upgrade.
///
/// The session holds a share of its connection's slot: after the 101 the HTTP connection task
/// ends, and without this an open WebSocket would not count against the connection limit.
pub(super) fn spawn_session(on_upgrade: OnUpgrade, addr: SocketAddr, slot: Slot) {
    tokio::spawn(async move {
        let _slot = slot;
        match run_session(on_upgrade).await {
            Ok(()) => debug!(client.addr = %addr, "websocket session closed"),
            Err(error) => debug!(client.addr = %addr, %error, "websocket session ended"),
        }
    });
}

async fn run_session(on_upgrade: OnUpgrade) -> Result<(), SessionError> {
    let upgraded = on_upgrade.await.map_err(SessionError::Upgrade)?;
    let mut ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config()))
            .await;
    // The stream ends (None) once a close handshake has finished: tungstenite queues the reply
    // to the client's Close itself and sends it on the next poll.
    while let Some(message) = ws.next().await {
        match message.map_err(SessionError::WebSocket)? {
            message @ (Message::Text(_) | Message::Binary(_)) => {
                ws.send(message).await.map_err(SessionError::WebSocket)?;
            }
            // tungstenite answers Ping with Pong and Close with Close on its own.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {}
        }
    }
    Ok(())
}
