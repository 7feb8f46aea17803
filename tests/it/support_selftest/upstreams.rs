//! The upstream apps: the WebSocket echo server over TCP and a unix socket, and the raw TCP
//! listener.

use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn echo_server_echoes_records_the_request_and_stops_hard() {
    let server = EchoServer::start_tcp().await;
    let addr = server.addr();
    let mut request = format!("ws://{addr}/ws?x=1")
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("x-test", "yes".parse().expect("header value"));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(ws_config()))
        .await
        .expect("ws upgrade");

    assert_echo(&mut ws, Message::text("héllo")).await;
    assert_echo(&mut ws, Message::binary(vec![0xabu8; 16 << 20])).await;
    // A message in three fragments comes back as one message.
    ws.feed(fragment(b"ab", Data::Text, false))
        .await
        .expect("fragment");
    ws.feed(fragment(b"cd", Data::Continue, false))
        .await
        .expect("fragment");
    let reply = echo_once(&mut ws, fragment(b"ef", Data::Continue, true)).await;
    assert_eq!(reply, Message::text("abcdef"));

    assert_eq!(server.connections_accepted(), 1);
    assert_eq!(server.live_connections(), 1);
    assert_eq!(server.last_request_target().as_deref(), Some("/ws?x=1"));
    let headers = server.last_request_headers();
    assert!(
        headers.contains(&("x-test".to_string(), "yes".to_string())),
        "{headers:?}"
    );
    assert!(
        headers.iter().any(|(name, _)| name == "sec-websocket-key"),
        "{headers:?}"
    );

    server.stop().await;
    let refused = TcpStream::connect(addr)
        .await
        .expect_err("stopped server refuses");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    try_echo_once(&mut ws, Message::text("anyone?"))
        .await
        .expect_err("live socket died");

    // The upstream comes back on the same address.
    let server = EchoServer::start_tcp_on(addr).await;
    assert_eq!(server.addr(), addr);
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/"),
        TcpStream::connect(addr).await.expect("reconnect"),
    )
    .await
    .expect("ws upgrade");
    assert_echo(&mut ws, Message::text("back")).await;
    ws.close(None).await.expect("close");
    wait_until("the echo server sees the close", WAIT, || async {
        server.live_connections() == 0
    })
    .await;
}

/// One frame of a fragmented message, sent as is.
fn fragment(data: &'static [u8], data_kind: Data, is_final: bool) -> Message {
    Message::Frame(Frame::message(
        Bytes::from_static(data),
        OpCode::Data(data_kind),
        is_final,
    ))
}

#[tokio::test]
async fn echo_server_on_a_unix_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.sock");
    let server = EchoServer::start_unix(&path).await;
    assert_eq!(server.path(), path);
    let unix = UnixStream::connect(&path).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async("ws://localhost/ws", unix)
        .await
        .expect("ws upgrade");
    assert_echo(&mut ws, Message::text("over unix")).await;

    server.stop().await;
    let refused = UnixStream::connect(&path)
        .await
        .expect_err("stopped server refuses");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    try_echo_once(&mut ws, Message::text("anyone?"))
        .await
        .expect_err("live socket died");

    let server = EchoServer::start_unix(&path).await;
    let unix = UnixStream::connect(server.path()).await.expect("reconnect");
    let (mut ws, _) = tokio_tungstenite::client_async("ws://localhost/ws", unix)
        .await
        .expect("ws upgrade");
    assert_echo(&mut ws, Message::text("back")).await;
}

#[tokio::test]
async fn raw_upstream_hands_over_sockets_and_sees_half_close() {
    let (addr, mut accepted) = raw_upstream_tcp().await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    let mut upstream = accepted.recv().await.expect("socket handed over");

    client.write_all(b"ping").await.expect("write");
    client.shutdown().await.expect("half-close");
    let mut received = Vec::new();
    upstream
        .read_to_end(&mut received)
        .await
        .expect("read to EOF");
    assert_eq!(received, b"ping");

    // The other direction still works after the client's half-close.
    upstream.write_all(b"pong").await.expect("write back");
    drop(upstream);
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.expect("read reply");
    assert_eq!(reply, b"pong");
}
