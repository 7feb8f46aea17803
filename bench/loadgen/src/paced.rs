//! CPU per message: echo at a fixed rate below saturation, and the proxy's CPU time over that
//! window divided by the messages echoed. Unlike the saturated rate, this does not depend on
//! how much of the 2 cores the load generator and the echo app take.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::client::{self, Target};
use crate::procfs::cpu_time;

/// Between the connections being ready and the window opening: every task is waiting on its
/// first tick when the CPU is first read.
const SETTLE: Duration = Duration::from_millis(100);

/// `conns` connections together send `rate` `size`-byte messages per second for `secs`, each
/// connection one message every `conns / rate` seconds (phases spread evenly) and waiting for
/// its echo. A late message is sent as soon as the previous echo is back (a proxy that cannot
/// keep the pace shows in `msgs_per_s` below `rate`). Prints the CPU time of the process tree
/// `pid` per 1,000 messages over the window, the rate achieved and latency percentiles.
pub async fn paced(
    target: Target,
    conns: usize,
    size: usize,
    rate: f64,
    secs: f64,
    pid: u32,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        rate > 0.0 && conns > 0,
        "--rate and --conns must be above zero"
    );
    let mut sockets = Vec::with_capacity(conns);
    let payload: Arc<[u8]> = vec![0x5a; size].into();
    for _ in 0..conns {
        let (mut ws, _) = target.connect().await?;
        // Warm: the upstream connection is made and the first-message paths have run.
        client::round_trip(&mut ws, &payload).await?;
        sockets.push(ws);
    }
    let period = Duration::from_secs_f64(conns as f64 / rate);
    let start = Instant::now() + SETTLE;
    let deadline = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let payload = Arc::clone(&payload);
            let phase = period.mul_f64(i as f64 / conns as f64);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(start + phase, period);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
                let mut latencies_us = Vec::new();
                let mut failures = 0u64;
                let mut last_echo = start;
                loop {
                    let tick = ticks.tick().await;
                    if tick >= deadline {
                        break;
                    }
                    let sent = Instant::now();
                    if client::round_trip(&mut ws, &payload).await.is_err() {
                        failures += 1;
                        break;
                    }
                    last_echo = Instant::now();
                    latencies_us
                        .push(u32::try_from((last_echo - sent).as_micros()).unwrap_or(u32::MAX));
                }
                (ws, latencies_us, failures, last_echo)
            })
        })
        .collect();
    tokio::time::sleep_until(start).await;
    let cpu_before = cpu_time(pid)?;
    let mut all = Vec::new();
    let mut failures = 0;
    let mut open = Vec::with_capacity(conns);
    let mut last_echo = start;
    for task in tasks {
        let (ws, latencies, failed, last) = task.await?;
        all.extend(latencies);
        failures += failed;
        last_echo = last_echo.max(last);
        open.push(ws);
    }
    // The CPU window ends with the last echo; the closes below are not part of it.
    let cpu = cpu_time(pid)?.since(cpu_before);
    // Every message was due before the deadline (late ones are sent late, not dropped), so a
    // proxy that keeps the pace has echoed them all by then; one that cannot, later.
    let window = (last_echo - start).as_secs_f64().max(secs);
    for ws in open {
        client::close(ws).await;
    }
    all.sort_unstable();
    let msgs = all.len() as u64;
    let ticks_per_s = 100.0; // USER_HZ on Linux
    Ok(format!(
        "cpu_ms_per_1k={:.2} target_per_s={rate:.0} msgs_per_s={:.0} msgs={msgs} cpu_ms={:.1} \
         cpu_ticks_ms={:.0} p50_us={} p99_us={} failures={failures}",
        cpu.ns as f64 / 1e6 / msgs.max(1) as f64 * 1000.0,
        msgs as f64 / window,
        cpu.ns as f64 / 1e6,
        cpu.ticks as f64 * 1000.0 / ticks_per_s,
        crate::load::percentile(&all, 0.50),
        crate::load::percentile(&all, 0.99),
    ))
}
