//! The reconnect storm: many clients echoing through one instance of a proxy all move to a
//! second instance within a short spread (a replica went away), each echoing once there. How
//! long until every client echoes again, and how many attempts failed on the way: first with
//! full handshakes, then, moving back, resuming with the tickets the second instance gave.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::client::{self, Target, Ws};

/// Connections opened at once while the clients gather on the first instance.
const OPEN_CONCURRENCY: usize = 64;
/// Attempts per client to reach the first instance before the figure fails.
const GATHER_ATTEMPTS: usize = 3;
/// A client whose reconnect failed tries again this much later (a browser's first backoff is
/// of this order); each failed attempt counts.
const RETRY_AFTER: Duration = Duration::from_millis(200);
/// Before each move: the last connections' closes and handshakes are done.
const SETTLE: Duration = Duration::from_millis(500);

/// One client: its TLS client (and session store) and its connection, if it has one.
struct Client {
    target: Target,
    ws: Option<Ws>,
}

/// What one move of every client did.
struct Move {
    /// From the first slot until the last client's echo came back.
    last: Duration,
    failures: u64,
    unfinished: usize,
    resumed: usize,
    /// Per client, from its own slot to its echo, sorted.
    took_ms: Vec<u32>,
}

impl Move {
    fn fields(&self, prefix: &str) -> String {
        format!(
            "{prefix}secs={:.2} {prefix}failures={} {prefix}unfinished={} {prefix}resumed={} \
             {prefix}p50_ms={} {prefix}p99_ms={}",
            self.last.as_secs_f64(),
            self.failures,
            self.unfinished,
            self.resumed,
            crate::load::percentile(&self.took_ms, 0.50),
            crate::load::percentile(&self.took_ms, 0.99),
        )
    }
}

/// `clients` clients, each with its own session store, connect to `a` and echo once. Then
/// they move to `b` with empty stores (full handshakes, as after a restart nobody shares keys
/// with), client `i` at `i × spread / clients`; then back to `a` the same way, offering the
/// tickets `b` gave them (resumed where `a` and `b` share a ticket key). Each move drops the
/// old connection, then connects and echoes once, retrying failures until `give_up`.
pub async fn storm(
    a: Target,
    b: SocketAddr,
    clients: usize,
    spread: Duration,
    give_up: Duration,
) -> anyhow::Result<String> {
    anyhow::ensure!(clients > 0, "--clients must be above zero");
    let gathering = Instant::now();
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let target = a.with_own_sessions();
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire().await;
                let mut last = None;
                for _ in 0..GATHER_ATTEMPTS {
                    match arrive(&target).await {
                        Ok((ws, _)) => {
                            return Ok(Client {
                                target,
                                ws: Some(ws),
                            });
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
            })
        })
        .collect();
    let mut gathered = Vec::with_capacity(clients);
    for task in tasks {
        gathered.push(task.await?.context("connecting to the first instance")?);
    }
    let gather_secs = gathering.elapsed().as_secs_f64();
    let (full, gathered) = move_all(gathered, b, true, spread, give_up).await?;
    let (resumed, gathered) = move_all(gathered, a.addr, false, spread, give_up).await?;
    // Every connection stayed open until here, as the clients would keep them.
    drop(gathered);
    Ok(format!(
        "{} {} clients={clients} spread_s={:.1} gather_s={gather_secs:.1}",
        full.fields(""),
        resumed.fields("resume_"),
        spread.as_secs_f64(),
    ))
}

/// Moves every client to `to`: client `i` at its slot drops its connection, then connects
/// (with an empty session store when `forget`) and echoes once, until it succeeds or
/// `give_up` after the first slot.
async fn move_all(
    clients: Vec<Client>,
    to: SocketAddr,
    forget: bool,
    spread: Duration,
    give_up: Duration,
) -> anyhow::Result<(Move, Vec<Client>)> {
    let count = clients.len();
    let began = Instant::now() + SETTLE;
    let stop = began + give_up;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let slot = began + spread.mul_f64(i as f64 / count as f64);
            let target = if forget {
                client.target.with_own_sessions().at(to)
            } else {
                client.target.at(to)
            };
            let old = client.ws;
            tokio::spawn(async move {
                tokio::time::sleep_until(slot).await;
                drop(old);
                let mut failures = 0u64;
                while Instant::now() < stop {
                    match arrive(&target).await {
                        Ok((ws, resumed)) => {
                            let done = Instant::now();
                            let client = Client {
                                target,
                                ws: Some(ws),
                            };
                            return (client, Some((done - began, done - slot, resumed)), failures);
                        }
                        Err(_) => {
                            failures += 1;
                            tokio::time::sleep(RETRY_AFTER).await;
                        }
                    }
                }
                (Client { target, ws: None }, None, failures)
            })
        })
        .collect();
    let mut moved = Move {
        last: Duration::ZERO,
        failures: 0,
        unfinished: 0,
        resumed: 0,
        took_ms: Vec::with_capacity(count),
    };
    let mut clients = Vec::with_capacity(count);
    for task in tasks {
        let (client, arrived, failures) = task.await?;
        moved.failures += failures;
        match arrived {
            Some((since_began, took, resumed)) => {
                moved.last = moved.last.max(since_began);
                moved
                    .took_ms
                    .push(u32::try_from(took.as_millis()).unwrap_or(u32::MAX));
                moved.resumed += usize::from(resumed);
            }
            None => moved.unfinished += 1,
        }
        clients.push(client);
    }
    moved.took_ms.sort_unstable();
    Ok((moved, clients))
}

/// Connects and echoes once; says whether TLS was resumed.
async fn arrive(client: &Target) -> anyhow::Result<(Ws, bool)> {
    let (mut ws, handshake) = client.connect_detailed().await?;
    client::round_trip(&mut ws, b"moved").await?;
    Ok((ws, handshake.resumed))
}
