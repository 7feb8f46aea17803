//! In-process tests of the demo app over real sockets with real clients.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

use super::*;

/// A running demo app; dropping `stop` without sending also shuts it down.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

async fn start(limits: Limits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        // An Err means the sender was dropped, which also means "stop".
        let _ = stopped.await;
    };
    let task = tokio::spawn(run(listener, shutdown, limits));
    Server { addr, stop, task }
}

/// Sends one raw HTTP/1.1 request and returns the whole response as text.
async fn request(addr: SocketAddr, head: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("write request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read response");
    String::from_utf8(response).expect("utf-8 response")
}

async fn get(addr: SocketAddr, path: &str) -> String {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"),
    )
    .await
}

async fn connect_ws(addr: SocketAddr) -> WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (ws, response) = client_async(format!("ws://{addr}/ws"), stream)
        .await
        .expect("websocket handshake");
    assert_eq!(response.status(), 101);
    ws
}

#[tokio::test]
async fn root_serves_the_page() {
    let server = start(LIMITS).await;
    let response = get(server.addr, "/").await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-type: text/html; charset=utf-8")
    );
    assert!(response.contains("<title>wss-sidecar demo</title>"));
    for id in ["status", "input", "send", "log"] {
        assert!(
            response.contains(&format!("id=\"{id}\"")),
            "page lacks #{id}"
        );
    }
}

#[tokio::test]
async fn healthz_is_ok() {
    let server = start(LIMITS).await;
    let response = get(server.addr, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nok"), "{response}");
}

#[tokio::test]
async fn unknown_path_is_404() {
    let server = start(LIMITS).await;
    let response = get(server.addr, "/nope").await;
    assert!(
        response.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{response}"
    );
}

#[tokio::test]
async fn ws_without_upgrade_is_400() {
    let server = start(LIMITS).await;
    let response = get(server.addr, "/ws").await;
    assert!(
        response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{response}"
    );
}

#[tokio::test]
async fn ws_with_wrong_version_is_426() {
    let server = start(LIMITS).await;
    let response = request(
        server.addr,
        "GET /ws HTTP/1.1\r\nHost: demo\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{response}"
    );
    assert!(
        response
            .to_ascii_lowercase()
            .contains("sec-websocket-version: 13")
    );
}

#[tokio::test]
async fn ws_echoes_text_and_binary_then_closes() {
    let server = start(LIMITS).await;
    let mut ws = connect_ws(server.addr).await;

    ws.send(Message::text("hello, wss"))
        .await
        .expect("send text");
    let echoed = ws.next().await.expect("a reply").expect("a message");
    assert_eq!(echoed, Message::text("hello, wss"));

    let bytes = vec![0u8, 1, 2, 254, 255];
    ws.send(Message::binary(bytes.clone()))
        .await
        .expect("send binary");
    let echoed = ws.next().await.expect("a reply").expect("a message");
    assert_eq!(echoed, Message::binary(bytes));

    ws.close(None).await.expect("send close");
    // The server answers our Close with its own; after that the stream ends.
    match ws.next().await {
        Some(Ok(Message::Close(_))) => {}
        other => panic!("expected the server's close reply, got {other:?}"),
    }
    assert!(
        ws.next().await.is_none(),
        "stream should end after the close handshake"
    );
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let server = start(LIMITS).await;
    server.stop.send(()).expect("server still running");
    let result = tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("serve returned after shutdown")
        .expect("serve task did not panic");
    assert!(result.is_ok(), "{result:?}");
    // The listener was dropped with `serve`, so nobody accepts any more.
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn connections_over_the_limit_are_dropped() {
    let server = start(Limits {
        max_connections: 1,
        ..LIMITS
    })
    .await;
    // An open WebSocket session holds the only slot, even though its HTTP exchange is over.
    let mut ws = connect_ws(server.addr).await;

    let mut refused = TcpStream::connect(server.addr).await.expect("connect");
    refused
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: demo\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    // Closed unanswered: a clean EOF, or a reset if the request was still unread when it closed.
    match refused.read_to_end(&mut response).await {
        Ok(_) => assert!(
            response.is_empty(),
            "over the limit yet answered: {response:?}"
        ),
        Err(error) => assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}"),
    }

    ws.send(Message::text("still here"))
        .await
        .expect("send text");
    let echoed = ws.next().await.expect("a reply").expect("a message");
    assert_eq!(echoed, Message::text("still here"));
}

#[tokio::test]
async fn silent_clients_are_cut_off_after_the_header_timeout() {
    let header_read_timeout = Duration::from_millis(200);
    let server = start(Limits {
        header_read_timeout,
        ..LIMITS
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let started = tokio::time::Instant::now();
    stream
        .write_all(b"GET / HTTP/1.1\r\n")
        .await
        .expect("write partial request");

    // The server gives up on the unfinished head and closes; the read ends when it does.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "connection still open long after the header timeout"
    );
    assert!(
        started.elapsed() >= header_read_timeout,
        "closed after {:?}",
        started.elapsed()
    );
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
}
