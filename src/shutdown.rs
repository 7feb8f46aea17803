//! Shutdown triggers: SIGTERM (Kubernetes) and SIGINT (Ctrl-C), `POST /lame-duck` on the
//! admin port, and the client that asks a running sidecar for its lame duck.
//!
//! The order a pod is shut down in (kubelet, pkg/kubelet/kuberuntime/kuberuntime_container.go
//! `killContainer`: the preStop hook runs first, then the container is stopped with SIGTERM
//! and the rest of the grace period; kuberuntime_termination_order.go: a native sidecar's
//! SIGTERM waits until every regular container has exited) is why the lame duck can start
//! either way, and why the first of them wins.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The admin endpoint that starts the lame duck (loopback peers only).
pub const LAME_DUCK_PATH: &str = "/lame-duck";

/// Longest [`request_lame_duck`] waits for the sidecar's answer: it answers at once, so a
/// hang means a wrong address, and the preStop hook must not use up the grace period.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes of the answer read: a status line and a short text.
const ANSWER_MAX: usize = 4096;

/// Installed signal handlers. Install them before start-up work, so that a SIGTERM arriving
/// early starts a drain instead of killing the process.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs handlers for SIGTERM and SIGINT (needs a running tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT and returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// Watches the signals in a task of its own for the life of the process: the first
    /// cancels the returned token (the shutdown request), the second exits at once. The task
    /// outlives whatever awaits the token, so a second signal exits even when the lame duck
    /// was started another way (`POST /lame-duck`) and the first signal changed nothing.
    pub fn spawn_watch(mut self) -> CancellationToken {
        let requested = CancellationToken::new();
        let token = requested.clone();
        tokio::spawn(async move {
            let name = self.recv().await;
            tracing::info!(
                signal = name,
                "shutdown requested; send it again to exit at once"
            );
            token.cancel();
            let name = self.recv().await;
            tracing::warn!(signal = name, "second signal; exiting without draining");
            std::process::exit(1);
        });
        requested
    }
}

/// Why the running sidecar did not start its lame duck.
#[derive(Debug, thiserror::Error)]
pub enum LameDuckError {
    /// Nothing answered at the address, or the connection failed.
    #[error("cannot reach the admin endpoint at {addr}: {source}")]
    Connect {
        /// The admin address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No answer within the time limit.
    #[error("no answer from the admin endpoint at {0} within 5 s")]
    Timeout(SocketAddr),
    /// The sidecar answered with something other than success.
    #[error("the admin endpoint at {addr} refused: {answer}")]
    Refused {
        /// The admin address.
        addr: SocketAddr,
        /// Its status line.
        answer: String,
    },
}

/// Posts `/lame-duck` to the admin endpoint at `addr`; `Ok` with the status line once accepted.
///
/// It returns as soon as the sidecar has started its lame duck, rather than blocking for the
/// whole of it: the sidecar itself keeps the time (a later SIGTERM does not shorten it), so in
/// plain mode the kubelet's SIGTERM that follows the hook (kuberuntime_container.go
/// `killContainer`) changes nothing, and in native mode the sidecar's SIGTERM waits for the app
/// containers anyway (kuberuntime_termination_order.go). A blocking hook would add nothing and
/// would only fail the hook (and log a FailedPreStopHook event) if the grace period ran out.
pub async fn request_lame_duck(addr: SocketAddr) -> Result<String, LameDuckError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, post(addr)).await {
        Ok(result) => result,
        Err(_) => Err(LameDuckError::Timeout(addr)),
    }
}

async fn post(addr: SocketAddr) -> Result<String, LameDuckError> {
    let connect = |source| LameDuckError::Connect { addr, source };
    let mut tcp = TcpStream::connect(addr).await.map_err(connect)?;
    let request = format!(
        "POST {LAME_DUCK_PATH} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.map_err(connect)?;
    let mut answer = Vec::new();
    (&mut tcp)
        .take(ANSWER_MAX as u64)
        .read_to_end(&mut answer)
        .await
        .map_err(connect)?;
    let answer = String::from_utf8_lossy(&answer);
    let status_line = answer.lines().next().unwrap_or("").trim().to_string();
    let accepted = status_line
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.starts_with('2'));
    if accepted {
        Ok(status_line)
    } else {
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").trim();
        Err(LameDuckError::Refused {
            addr,
            answer: format!("{status_line} {body}").trim().to_string(),
        })
    }
}
