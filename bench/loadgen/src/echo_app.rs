//! The WebSocket echo app every proxy forwards to (plain ws://, tokio-tungstenite).

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Echoes every text and binary message on every connection, forever.
pub async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(tcp, Some(crate::client::ws_config()))
                    .await
            else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                let reply = match msg {
                    Message::Binary(_) | Message::Text(_) => msg,
                    // tungstenite answers pings and close frames by itself.
                    _ => continue,
                };
                if ws.send(reply).await.is_err() {
                    return;
                }
            }
        });
    }
}
