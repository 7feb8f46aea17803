//! The load figures: echo rate and latency, full or resumed handshakes per second, and the
//! reload run.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::{self, Target};

/// Echo results of one connection.
#[derive(Default)]
struct EchoTally {
    latencies_us: Vec<u32>,
    failures: u64,
}

/// `conns` connections each send `size`-byte messages one after another, each waiting for its
/// echo, for `secs`. Prints the rate, payload throughput and latency percentiles.
pub async fn echo(target: Target, conns: usize, size: usize, secs: f64) -> anyhow::Result<String> {
    let mut sockets = Vec::with_capacity(conns);
    let mut group = String::new();
    for _ in 0..conns {
        let (ws, g) = target.connect().await?;
        group = g;
        sockets.push(ws);
    }
    let payload: Arc<[u8]> = vec![0x5a; size].into();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            let payload = Arc::clone(&payload);
            tokio::spawn(async move {
                let mut tally = EchoTally::default();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match client::round_trip(&mut ws, &payload).await {
                        Ok(()) => tally
                            .latencies_us
                            .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX)),
                        Err(_) => {
                            tally.failures += 1;
                            break;
                        }
                    }
                }
                client::close(ws).await;
                tally
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let tally = task.await?;
        failures += tally.failures;
        all.extend(tally.latencies_us);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let msgs = all.len() as f64;
    Ok(format!(
        "msgs_per_s={:.0} mib_per_s={:.1} p50_us={} p99_us={} p999_us={} failures={failures} kx={group}",
        msgs / elapsed,
        msgs * size as f64 / elapsed / 1048576.0,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
    ))
}

pub fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// One whole short-lived connection: handshake, upgrade, one echo, close. Returns what the
/// handshake negotiated.
pub async fn one_shot(target: &Target, payload: &[u8]) -> anyhow::Result<client::Handshake> {
    let (mut ws, handshake) = target.connect_detailed().await?;
    client::round_trip(&mut ws, payload).await?;
    client::close(ws).await;
    Ok(handshake)
}

/// `workers` loops of [`one_shot`] for `secs`. Prints connections per second, and how many of
/// them the server resumed. With `resume`, each worker is a client with its own session store
/// that got its first ticket before the window opens, so every connection in the window
/// offers one (a proxy that issues no tickets shows as `resumed=0`).
pub async fn handshakes(
    target: Target,
    workers: usize,
    secs: f64,
    resume: bool,
) -> anyhow::Result<String> {
    let done = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::with_capacity(workers);
    let mut group = String::new();
    for _ in 0..workers {
        let client = if resume {
            target.with_own_sessions()
        } else {
            target.clone()
        };
        group = one_shot(&client, b"hello")
            .await
            .context("first connection")?
            .group;
        clients.push(client);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|target| {
            let (done, resumed, failed) = (done.clone(), resumed.clone(), failed.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    match one_shot(&target, &[0x5a; 64]).await {
                        Ok(handshake) => {
                            done.fetch_add(1, Ordering::Relaxed);
                            if handshake.resumed {
                                resumed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    let resumed = resumed.load(Ordering::Relaxed);
    Ok(format!(
        "conns_per_s={:.0} conns={done} resumed={resumed} resumed_pct={:.0} failures={} kx={group}",
        done as f64 / elapsed,
        resumed as f64 * 100.0 / done.max(1) as f64,
        failed.load(Ordering::Relaxed)
    ))
}

/// Echo load on `conns` long-lived connections plus `churn` loops of new connections, for
/// `secs`, while `swap` (a shell command) runs every `every`: a certificate swap and, for
/// NGINX and HAProxy, their reload. Prints how many connections or echoes failed.
pub async fn reload(
    target: Target,
    conns: usize,
    churn: usize,
    secs: f64,
    every: Duration,
    swap: String,
) -> anyhow::Result<String> {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // Distinct certificates the new connections saw: 2 once the swaps take effect.
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (mut ws, _) = target.connect().await?;
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if client::round_trip(&mut ws, &[0x5a; 64]).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            ok.fetch_add(1, Ordering::Relaxed);
            client::close(ws).await;
        }));
    }
    for _ in 0..churn {
        let (target, stop, ok, failed) = (target.clone(), stop.clone(), ok.clone(), failed.clone());
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let counter = match one_shot(&target, &[0x5a; 64]).await {
                    Ok(handshake) => {
                        seen.lock().map(|mut s| s.insert(handshake.cert_tail)).ok();
                        &ok
                    }
                    Err(_) => &failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    let mut swaps = 0u64;
    let mut swap_failures = 0u64;
    while started.elapsed().as_secs_f64() < secs {
        let tick = Instant::now();
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&swap)
            .status()
            .await?;
        swaps += 1;
        if !status.success() {
            swap_failures += 1;
        }
        tokio::time::sleep_until((tick + every).into()).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    Ok(format!(
        "failed={} ok_conns={} swaps={swaps} swap_failures={swap_failures} certs_seen={}",
        failed.load(Ordering::Relaxed),
        ok.load(Ordering::Relaxed),
        seen.lock().map(|s| s.len()).unwrap_or(0)
    ))
}
