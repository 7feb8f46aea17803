//! Upstream apps for the sidecar to forward to: a WebSocket echo server and a raw TCP listener.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use super::client::ws_config;

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Raw sockets waiting for the test to take them; small, since tests take them one by one.
const RAW_BACKLOG: usize = 16;

/// Where an [`EchoServer`] listens.
#[derive(Debug, Clone)]
enum Bound {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// What the server tasks share with the handle.
#[derive(Debug, Default)]
struct State {
    accepted: AtomicUsize,
    live: AtomicUsize,
    last_request: Mutex<Option<RequestHead>>,
    /// Every connection task, so `stop` can kill live sockets, not just the listener.
    connections: Mutex<JoinSet<()>>,
}

#[derive(Debug, Clone)]
struct RequestHead {
    target: String,
    headers: Vec<(String, String)>,
}

/// A WebSocket app that echoes every text and binary message back unchanged (fragmented
/// messages come back whole). Dropping it kills its tasks; `stop` also waits for them.
#[derive(Debug)]
pub struct EchoServer {
    bound: Bound,
    state: Arc<State>,
    accept_task: JoinHandle<()>,
}

impl EchoServer {
    /// On a fresh port of 127.0.0.1.
    pub async fn start_tcp() -> EchoServer {
        Self::start_tcp_on("127.0.0.1:0".parse().expect("valid address")).await
    }

    /// On `addr`, e.g. the address of a server stopped earlier, to bring the upstream back.
    pub async fn start_tcp_on(addr: SocketAddr) -> EchoServer {
        let listener = bind_tcp(addr).unwrap_or_else(|e| panic!("bind echo server on {addr}: {e}"));
        let bound = Bound::Tcp(listener.local_addr().expect("bound address"));
        let state = Arc::new(State::default());
        let accept_task = tokio::spawn(accept_tcp(listener, state.clone()));
        EchoServer {
            bound,
            state,
            accept_task,
        }
    }

    /// On a unix socket at `path`; a stale socket file there (from a stopped server) is replaced.
    pub async fn start_unix(path: &Path) -> EchoServer {
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            std::fs::remove_file(path).expect("remove stale socket file");
        }
        let listener = UnixListener::bind(path)
            .unwrap_or_else(|e| panic!("bind echo server on {}: {e}", path.display()));
        let state = Arc::new(State::default());
        let accept_task = tokio::spawn(accept_unix(listener, state.clone()));
        EchoServer {
            bound: Bound::Unix(path.to_path_buf()),
            state,
            accept_task,
        }
    }

    /// The TCP address; panics for a unix-socket server.
    pub fn addr(&self) -> SocketAddr {
        match &self.bound {
            Bound::Tcp(addr) => *addr,
            Bound::Unix(path) => panic!("echo server listens on unix socket {}", path.display()),
        }
    }

    /// The unix socket path; panics for a TCP server.
    pub fn path(&self) -> &Path {
        match &self.bound {
            Bound::Unix(path) => path,
            Bound::Tcp(addr) => panic!("echo server listens on tcp {addr}"),
        }
    }

    /// Sockets accepted so far, counted before the WebSocket handshake.
    pub fn connections_accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections whose task is still running (socket still open on the upstream side).
    pub fn live_connections(&self) -> usize {
        self.state.live.load(Ordering::SeqCst)
    }

    /// Header names (lowercase) and values of the last upgrade request; a repeated header
    /// appears once per value.
    pub fn last_request_headers(&self) -> Vec<(String, String)> {
        let head = self.state.last_request.lock().expect("state lock");
        head.as_ref().map(|h| h.headers.clone()).unwrap_or_default()
    }

    /// The request target (path and query) of the last upgrade request.
    pub fn last_request_target(&self) -> Option<String> {
        let head = self.state.last_request.lock().expect("state lock");
        head.as_ref().map(|h| h.target.clone())
    }

    /// Closes the listener and every live connection, and waits until they are gone: after
    /// this, connects are refused and peers of old connections see them end.
    pub async fn stop(mut self) {
        self.accept_task.abort();
        let _ = (&mut self.accept_task).await;
        // The accept task is gone, so no connection can be added after this take.
        let mut connections = std::mem::take(&mut *self.state.connections.lock().expect("lock"));
        connections.shutdown().await;
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.accept_task.abort();
        if let Ok(mut connections) = self.state.connections.lock() {
            connections.abort_all();
        }
    }
}

/// SO_REUSEADDR so a restarted server can take back a port its predecessor's closed
/// connections still hold in TIME_WAIT.
fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_tcp(listener: TcpListener, state: Arc<State>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => spawn_connection(&state, stream),
            Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
        }
    }
}

async fn accept_unix(listener: UnixListener, state: Arc<State>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => spawn_connection(&state, stream),
            Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
        }
    }
}

fn spawn_connection<S>(state: &Arc<State>, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    state.accepted.fetch_add(1, Ordering::SeqCst);
    state.live.fetch_add(1, Ordering::SeqCst);
    let live = LiveGuard(state.clone());
    let mut connections = state.connections.lock().expect("state lock");
    while connections.try_join_next().is_some() {}
    connections.spawn(async move {
        echo(stream, &live.0).await;
        drop(live);
    });
}

/// Decrements the live count however the connection task ends, abort included.
struct LiveGuard(Arc<State>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn echo<S>(stream: S, state: &Arc<State>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The error type is fixed by tungstenite's `Callback` trait.
    #[allow(clippy::result_large_err)]
    let record_head = |request: &Request, response: Response| {
        let head = RequestHead {
            target: request.uri().to_string(),
            headers: request
                .headers()
                .iter()
                .map(|(name, value)| {
                    (
                        name.to_string(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        };
        *state.last_request.lock().expect("state lock") = Some(head);
        Ok(response)
    };
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, record_head, Some(ws_config()))
            .await
    else {
        return;
    };
    // Pings are answered and closes acknowledged inside tungstenite; only data is echoed.
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            break;
        }
    }
}

/// A TCP listener on 127.0.0.1 that hands each accepted socket to the test untouched, for
/// byte-level and half-close tests. It stops accepting once the receiver is dropped.
pub async fn raw_upstream_tcp() -> (SocketAddr, mpsc::Receiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind raw upstream");
    let addr = listener.local_addr().expect("bound address");
    let (tx, rx) = mpsc::channel(RAW_BACKLOG);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    if tx.send(stream).await.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        }
    });
    (addr, rx)
}
