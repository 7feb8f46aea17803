//! Memory per idle WebSocket: the proxy's resident memory (all its processes) with many open,
//! silent connections, minus its memory at rest, per connection.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;

use crate::client::{self, Target, Ws};

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

/// Resident memory of `pid` and all its descendants, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let mut family: HashSet<u32> = HashSet::from([pid]);
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(child) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        {
            parents.push((child, ppid));
        }
    }
    // Descendants at any depth.
    loop {
        let before = family.len();
        for &(child, ppid) in &parents {
            if family.contains(&ppid) {
                family.insert(child);
            }
        }
        if family.len() == before {
            break;
        }
    }
    let mut total = 0;
    for p in family {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) else {
            continue;
        };
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
        {
            total += kib;
        }
    }
    Ok(total)
}
