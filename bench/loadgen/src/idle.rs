//! Memory per idle WebSocket: the proxy's resident memory (all its processes) with many open,
//! silent connections, minus its memory at rest, per connection.

use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;

use crate::client::{self, Target, Ws};
use crate::procfs::rss_kib;

/// How many connections are opened at once while building up the idle set.
const OPEN_CONCURRENCY: usize = 32;

/// Opens `conns` WebSockets (each echoes one message, so the proxy has connected upstream and
/// is in its steady state), waits for the proxy to settle, and prints the extra resident
/// memory of `pid` and its descendants per connection.
pub async fn idle(target: Target, conns: usize, pid: u32) -> anyhow::Result<String> {
    let rest = rss_kib(pid)?;
    let gate = std::sync::Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (target, gate) = (target.clone(), gate.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire().await;
                let (mut ws, _) = target.connect().await?;
                client::round_trip(&mut ws, b"hello").await?;
                Ok::<Ws, anyhow::Error>(ws)
            })
        })
        .collect();
    let mut open = Vec::with_capacity(conns);
    for task in tasks {
        open.push(task.await?.context("opening an idle connection")?);
    }
    // Let the proxy finish whatever it does after the last echo (freeing handshake state).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = rss_kib(pid)?;
    let per_conn = (loaded.saturating_sub(rest)) as f64 / conns as f64;
    drop(open);
    Ok(format!(
        "kib_per_conn={per_conn:.2} rest_kib={rest} loaded_kib={loaded} conns={conns}"
    ))
}
