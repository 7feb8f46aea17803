//! Start-up: spawn the proxy, then time exec → health endpoint 200 and exec → first wss echo
//! on one clock. The client's TLS configuration is built before the exec, so neither figure
//! includes the load generator's own start.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::client::{self, Target};

/// Between two attempts of a poll: the figures' resolution.
const POLL_EVERY: Duration = Duration::from_millis(1);
/// After the figures, how long the proxy may take to exit on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A plain `http://IP:PORT/PATH` URL, split.
#[derive(Clone, Debug)]
pub struct HealthUrl {
    addr: SocketAddr,
    path: String,
}

impl std::str::FromStr for HealthUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("--health {url:?}: expected http://IP:PORT/PATH"))?;
        let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
        let addr = addr
            .parse()
            .map_err(|_| format!("--health {url:?}: {addr:?} is not IP:PORT"))?;
        Ok(Self {
            addr,
            path: format!("/{path}"),
        })
    }
}

/// Runs `command`, polls `health` and a wss:// echo through `target` until both answer (or
/// `timeout`), then stops the process (SIGTERM, SIGKILL after [`STOP_GRACE`]).
pub async fn startup(
    target: Target,
    health: HealthUrl,
    timeout: Duration,
    command: Vec<String>,
) -> anyhow::Result<String> {
    let (program, args) = command
        .split_first()
        .context("give the proxy's command line after --")?;
    let mut process = tokio::process::Command::new(program);
    process
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    let exec = Instant::now();
    // `spawn` returns once the exec has succeeded (std reports exec errors through a pipe).
    let mut child = process
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let pid = child.id().context("the proxy exited at once")?;
    let polls = async {
        tokio::join!(
            poll(exec, || healthy(&health)),
            poll(exec, || echoes(&target)),
        )
    };
    let figures = tokio::time::timeout(timeout, polls).await;
    stop(&mut child, pid).await;
    let (health_ms, echo_ms) = figures
        .with_context(|| format!("no answer within {timeout:?} (see the proxy's stderr)"))?;
    Ok(format!("health_ms={health_ms:.1} echo_ms={echo_ms:.1}"))
}

/// Milliseconds from `since` until `attempt` first succeeds.
async fn poll<F, Fut>(since: Instant, attempt: F) -> f64
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    loop {
        if attempt().await.is_ok() {
            return since.elapsed().as_secs_f64() * 1e3;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// One `GET` of the health URL answered `200`.
async fn healthy(url: &HealthUrl) -> anyhow::Result<()> {
    let mut tcp = TcpStream::connect(url.addr).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        url.path, url.addr
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 12];
    tokio::time::timeout(client::STEP_TIMEOUT, tcp.read_exact(&mut head)).await??;
    match &head {
        b"HTTP/1.1 200" | b"HTTP/1.0 200" => Ok(()),
        other => bail!("answered {:?}", String::from_utf8_lossy(other)),
    }
}

/// One wss:// connection echoed a message (dropped, not closed: the figure ends at the echo).
async fn echoes(target: &Target) -> anyhow::Result<()> {
    let (mut ws, _) = target.connect().await?;
    client::round_trip(&mut ws, b"started?").await
}

/// SIGTERM (NGINX's and HAProxy's masters stop their workers on it), then SIGKILL.
async fn stop(child: &mut tokio::process::Child, pid: u32) {
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
