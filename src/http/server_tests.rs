//! The server's one behaviour over real sockets: the connection limit, the drain on shutdown
//! (in-flight requests finish within the grace, then the rest are closed), the lifetime of a
//! kept-alive connection, and TLS.

use std::sync::Arc;

use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::*;
use crate::http::reply::text;

/// A server whose `/slow` requests report that they started and then wait for a gate permit.
struct Fixture {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    started: mpsc::UnboundedReceiver<()>,
    gate: Arc<Semaphore>,
}

impl Fixture {
    async fn start(limits: Limits, tls: Option<TlsAcceptor>) -> Fixture {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (started_tx, started) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        let handler = {
            let gate = Arc::clone(&gate);
            move |req: Request<Incoming>, _: &Conn| {
                let (gate, started) = (Arc::clone(&gate), started_tx.clone());
                async move {
                    if req.uri().path() == "/slow" {
                        let _ = started.send(());
                        let _permit = gate.acquire().await;
                    }
                    text(StatusCode::OK, "done\n")
                }
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve(listener, tls, limits, handler, shutdown));
        Fixture {
            addr,
            stop: Some(stop),
            task,
            started,
            gate,
        }
    }

    fn shut_down(&mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
    }

    /// A connection that has sent `GET path`.
    async fn send(&self, path: &str) -> TcpStream {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(&get(path)).await.unwrap();
        stream
    }

    /// A connection whose `/slow` request the handler has started.
    async fn in_flight(&mut self) -> TcpStream {
        let stream = self.send("/slow").await;
        self.started.recv().await.unwrap();
        stream
    }

    /// Waits until `serve` has returned, `within` at the most.
    async fn stopped(self, within: Duration, what: &str) {
        tokio::time::timeout(within, self.task)
            .await
            .unwrap_or_else(|_| panic!("serve did not return: {what}"))
            .expect("serve did not panic");
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// A request that asks the server to close after answering.
fn get_once(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Everything the server sends until it closes (a reset counts as a close).
async fn read_all(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
        .await
        .expect("the server closes the connection");
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads until one whole response (its body ends with `done\n`) has arrived.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"done\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a response")
            .expect("read");
        assert!(n > 0, "closed before the response: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

const TEST_LIMITS: Limits = Limits {
    max_connections: 1,
    grace: Duration::from_secs(5),
    ..Limits::DEFAULT
};

#[tokio::test]
async fn over_the_limit_a_new_connection_is_closed_at_once_unanswered() {
    let mut server = Fixture::start(TEST_LIMITS, None).await;
    let mut held = server.in_flight().await;

    let mut refused = TcpStream::connect(server.addr).await.unwrap();
    let _ = refused.write_all(&get("/")).await;
    let started = tokio::time::Instant::now();
    assert_eq!(read_all(&mut refused).await, "", "answered over the limit");
    assert!(started.elapsed() < Duration::from_secs(2), "not at once");

    // The held connection is untouched, and once it is done its slot is free again.
    server.gate.add_permits(1);
    assert!(
        read_response(&mut held)
            .await
            .starts_with("HTTP/1.1 200 OK")
    );
    drop(held);
    let addr = server.addr;
    wait_for("a new connection to be served", || async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&get_once("/")).await.unwrap();
        read_all(&mut stream).await.starts_with("HTTP/1.1 200 OK")
    })
    .await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_the_request_in_flight_finish() {
    let mut server = Fixture::start(TEST_LIMITS, None).await;
    let mut in_flight = server.in_flight().await;

    server.shut_down();
    let addr = server.addr;
    wait_for("the listener to close", || async move {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(
        !server.task.is_finished(),
        "waits for the request in flight"
    );
    server.gate.add_permits(1);
    let answer = read_all(&mut in_flight).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("done\n"), "{answer}");
    let soon = Duration::from_secs(5);
    server.stopped(soon, "once the request is done").await;
}

#[tokio::test]
async fn after_the_grace_what_is_left_is_closed() {
    let grace = Duration::from_millis(300);
    let mut server = Fixture::start(
        Limits {
            grace,
            ..TEST_LIMITS
        },
        None,
    )
    .await;
    let mut stuck = server.in_flight().await;

    let started = tokio::time::Instant::now();
    server.shut_down();
    server
        .stopped(Duration::from_secs(5), "serve returns after the grace")
        .await;
    assert!(started.elapsed() >= grace, "gave up before the grace");
    assert_eq!(read_all(&mut stuck).await, "", "closed without an answer");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_closes_at_shutdown_and_at_its_lifetime() {
    let limits = Limits {
        lifetime: Some(Duration::from_millis(300)),
        max_connections: 2,
        ..TEST_LIMITS
    };
    let mut server = Fixture::start(limits, None).await;
    let mut aged = server.send("/").await;
    assert!(read_response(&mut aged).await.starts_with("HTTP/1.1 200"));
    let started = tokio::time::Instant::now();
    assert_eq!(read_all(&mut aged).await, "", "closed once old enough");
    assert!(started.elapsed() < Duration::from_secs(5));

    let mut idle = server.send("/").await;
    assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));
    server.shut_down();
    assert_eq!(read_all(&mut idle).await, "", "closed at shutdown");
    let at_once = Duration::from_secs(2);
    server.stopped(at_once, "nothing in flight").await;
}

#[tokio::test]
async fn over_tls_a_silent_client_is_dropped_after_the_handshake_timeout() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let store = crate::certs::CertStore::new(Arc::new(crate::metrics::Metrics::new()));
    let cert = crate::certs::self_signed::generate(&crate::tls::provider()).unwrap();
    store.register("self-signed").publish(cert);
    let config =
        crate::tls::server_config(Arc::new(crate::tls::Resolver::new(store)), None).unwrap();
    let handshake_timeout = Duration::from_millis(300);
    let limits = Limits {
        handshake_timeout,
        ..TEST_LIMITS
    };
    let server = Fixture::start(limits, Some(TlsAcceptor::from(config))).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(read_all(&mut silent).await, "");
    assert!(started.elapsed() >= handshake_timeout);
}

/// Polls `condition` every 10 ms for up to 5 s.
async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..500 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}
