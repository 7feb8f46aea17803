//! wss-sidecar: terminate TLS for WebSocket traffic and forward raw bytes to the app.
#![forbid(unsafe_code)]
