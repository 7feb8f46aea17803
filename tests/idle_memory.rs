//! Rust heap bytes per idle, upgraded WebSocket held by the proxy (issue 16).
//!
//! The proxy runs in this process under a counting allocator (`dhat` in testing mode); the
//! clients and the echo app run in a child process (this same binary, re-run with
//! [`ROLE_VAR`] set), so that only the proxy's allocations are counted. The child opens
//! [`FIRST`] WebSockets, echoes one message on each and reports; the live heap is read; then
//! [`MORE`] more, and the heap is read again. The difference over `MORE` is what one more idle
//! connection costs, one-time allocations (the certificate, buffers of the runtime) cancelled.
//!
//! `harness = false` (the allocator is process-wide): `main` answers nextest's `--list` itself.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use wss_sidecar::config::{Cli, Command as SubCommand};
use wss_sidecar::proxy::{self, Listeners};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// The test's one name, as nextest lists it.
const NAME: &str = "idle_memory";
/// A path: write a full dhat profile there (for finding what holds the bytes).
const PROFILE_VAR: &str = "WSS_IDLE_MEMORY_PROFILE";
/// Set in the child: it plays the clients and the echo app.
const ROLE_VAR: &str = "WSS_IDLE_MEMORY_CLIENTS";
/// Connections open at the first reading.
const FIRST: usize = 100;
/// Connections added before the second reading.
const MORE: usize = 500;
/// The bound per idle connection, in Rust heap bytes (3,800 measured). dhat sees only Rust's
/// allocator: aws-lc's two AEAD key contexts (about 1.2 KB, from its C `malloc`) come on top,
/// so this guards against regressions below issue 16's 5 KiB resident target rather than
/// measuring it (the benchmark's idle figure does; see the README's memory paragraph). The
/// buffered path (tokio-rustls) held about 9 KB and fails this.
const BOUND: usize = 4 * 1024;
/// How long the child may take for any one step.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    if std::env::var_os(ROLE_VAR).is_some() {
        clients::run();
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        // nextest lists the tests, then the ignored ones (none).
        if !args.iter().any(|a| a == "--ignored") {
            println!("{NAME}: test");
        }
        return;
    }
    let filter = args.iter().find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !NAME.contains(f.as_str())) {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let per_connection = runtime.block_on(measure());
    println!("{NAME}: {per_connection} heap bytes per idle WebSocket (bound {BOUND})");
    assert!(
        per_connection <= BOUND,
        "each idle WebSocket holds {per_connection} heap bytes, over the {BOUND} bound"
    );
    println!("test {NAME} ... ok\n\n1 passed, 0 failed");
}

/// Runs the proxy and the child; returns the live heap bytes per added idle connection.
async fn measure() -> usize {
    // With PROFILE_VAR set, a full dhat profile is written while the connections are idle
    // (its "at the end" figures are what they hold), to see where the bytes are.
    let profile = std::env::var(PROFILE_VAR).ok();
    let mut profiler = Some(match &profile {
        Some(path) => dhat::Profiler::builder().file_name(path).build(),
        None => dhat::Profiler::builder().testing().build(),
    });
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .env(ROLE_VAR, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client process");
    let mut to_child = child.stdin.take().expect("child stdin");
    let mut from_child = lines_of(child.stdout.take().expect("child stdout"));

    let upstream = read_line(&mut from_child, "upstream ").await;
    let tls = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tls.local_addr().expect("address");
    // No certificate source: the proxy serves a self-signed one (the child accepts any).
    let argv = [
        "wss-sidecar",
        "proxy",
        "--upstream",
        upstream.as_str(),
        "--max-connections",
        "10000",
    ];
    let cli = Cli::try_parse_from(argv).expect("flags");
    let SubCommand::Proxy(args) = cli.command else {
        panic!("not the proxy command");
    };
    let config = args.into_config().expect("config");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(proxy::run(
        config,
        Listeners {
            tls,
            admin: None,
            http: None,
        },
        async move {
            let _ = stopped.await;
        },
    ));

    writeln!(to_child, "open {addr} {FIRST}").expect("to child");
    read_line(&mut from_child, "idle ").await;
    let before = dhat::HeapStats::get().curr_bytes;
    writeln!(to_child, "open {addr} {MORE}").expect("to child");
    read_line(&mut from_child, "idle ").await;
    let after = dhat::HeapStats::get().curr_bytes;
    if profile.is_some() {
        drop(profiler.take());
    }

    drop(to_child);
    let _ = child.wait();
    let _ = stop.send(());
    let _ = tokio::time::timeout(STEP_TIMEOUT, proxy).await;
    println!(
        "{NAME}: live heap {before} B with {FIRST}, {after} B with {} idle",
        FIRST + MORE
    );
    after.saturating_sub(before) / MORE
}

/// A pipe's lines, read on a thread of its own so the proxy keeps serving.
fn lines_of(
    out: impl std::io::Read + Send + 'static,
) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (send, receive) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if send.send(line).is_err() {
                return;
            }
        }
    });
    receive
}

/// The rest of the next line from the child that starts with `prefix`.
async fn read_line(
    from_child: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    prefix: &str,
) -> String {
    let next = async {
        loop {
            let line = from_child
                .recv()
                .await
                .expect("the client process ended early");
            if let Some(rest) = line.trim_end().strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, next)
        .await
        .expect("the client process answers in time")
}

/// The child: an echo app, and WebSocket clients through the proxy.
/// The integration tests' clients (an any-certificate rustls config with resumption off).
#[allow(dead_code)]
#[path = "it/support/client.rs"]
mod support_client;

mod clients {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use rustls::ClientConfig;
    use rustls::pki_types::ServerName;
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::Message;

    /// How many clients connect at once.
    const CONCURRENCY: usize = 32;

    pub fn run() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let app = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
            println!("upstream {}", app.local_addr().expect("app address"));
            tokio::spawn(echo(app));
            let config = support_client::any_certificate_config();
            let mut open = Vec::new();
            let mut commands = lines_of(std::io::stdin());
            while let Some(line) = commands.recv().await {
                let mut words = line.split_whitespace().skip(1);
                let addr: SocketAddr = words.next().and_then(|a| a.parse().ok()).expect("addr");
                let count: usize = words.next().and_then(|n| n.parse().ok()).expect("count");
                let mut opened = futures_util::stream::iter(0..count)
                    .map(|_| connect(addr, Arc::clone(&config)))
                    .buffer_unordered(CONCURRENCY);
                while let Some(ws) = opened.next().await {
                    open.push(ws);
                }
                println!("idle {}", open.len());
            }
        });
    }

    async fn connect(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
    ) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("app.test").expect("name");
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("tls handshake");
        let (mut ws, _) = tokio_tungstenite::client_async("wss://app.test/ws", tls)
            .await
            .expect("websocket upgrade");
        ws.send(Message::text("hello")).await.expect("send");
        let echoed = ws.next().await.expect("echo").expect("echo frame");
        assert_eq!(echoed, Message::text("hello"));
        ws
    }

    async fn echo(app: TcpListener) {
        while let Ok((tcp, _)) = app.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_close() || ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
}
