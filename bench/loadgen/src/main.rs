//! `wss-bench`: the pieces of the benchmark harness that `bench/run` drives. Each figure
//! prints one line of `key=value` pairs; `report` turns the collected lines into the table.

mod certs;
mod client;
mod echo_app;
mod idle;
mod load;
mod paced;
mod procfs;
mod report;
mod startup;
mod storm;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

use client::{Kx, Target};

#[derive(Parser)]
#[command(about = "Benchmark pieces for bench/run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where to connect.
#[derive(Args)]
struct Conn {
    /// The proxy's TLS address.
    #[arg(long)]
    addr: SocketAddr,
    /// PEM file of the CA that issued the proxy's certificate.
    #[arg(long)]
    ca: PathBuf,
    /// Key-exchange groups the client offers.
    #[arg(long, value_enum, default_value = "x25519")]
    kx: Kx,
}

#[derive(Subcommand)]
enum Command {
    /// Write the CA and the two leaf certificates into DIR.
    Certs { dir: PathBuf },
    /// Run the WebSocket echo app.
    EchoApp {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Wait until a wss:// echo succeeds; print the time since --since-ns (Unix ns). For
    /// waiting only: the start-up figure is `startup`.
    Ready {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        since_ns: u128,
        #[arg(long, default_value = "20")]
        timeout_secs: u64,
    },
    /// Closed-loop echo: rate and latency percentiles.
    Echo {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        conns: usize,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        secs: f64,
    },
    /// Paced echo: CPU time of the process tree --pid per 1,000 messages at a fixed --rate.
    Paced {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        conns: usize,
        #[arg(long)]
        size: usize,
        /// Messages per second, all connections together.
        #[arg(long)]
        rate: f64,
        #[arg(long)]
        secs: f64,
        #[arg(long)]
        pid: u32,
    },
    /// Handshakes per second (TLS + upgrade, one echo, close): full, or with --resume resumed.
    Handshakes {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        workers: usize,
        #[arg(long)]
        secs: f64,
        /// Each worker keeps its own session store and resumes its previous session.
        #[arg(long)]
        resume: bool,
    },
    /// Start the proxy given after `--`, and time exec → --health 200 and exec → first echo.
    Startup {
        #[command(flatten)]
        conn: Conn,
        /// The proxy's health endpoint, http://IP:PORT/PATH.
        #[arg(long)]
        health: startup::HealthUrl,
        #[arg(long, default_value = "20")]
        timeout_secs: u64,
        /// The proxy's command line.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Reconnect storm: --clients on --addr move to --to within --spread-ms (full
    /// handshakes), then back (resuming with --to's tickets).
    Storm {
        #[command(flatten)]
        conn: Conn,
        /// The second instance's TLS address.
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        spread_ms: u64,
        /// A client still failing this long after the storm began gives up.
        #[arg(long, default_value = "30")]
        give_up_secs: u64,
    },
    /// Memory per idle WebSocket of the process tree under --pid.
    Idle {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        conns: usize,
        #[arg(long)]
        pid: u32,
    },
    /// Failed connections while --swap runs every --every-ms under echo load and churn.
    Reload {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        conns: usize,
        #[arg(long)]
        churn: usize,
        #[arg(long)]
        secs: f64,
        #[arg(long)]
        every_ms: u64,
        #[arg(long)]
        swap: String,
    },
    /// Print the Markdown table of medians and ratios from a results file.
    Report { file: PathBuf },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    let target = |c: &Conn| Target::new(c.addr, &c.ca, c.kx);
    let line = match command {
        Command::Certs { dir } => return certs::write(&dir),
        Command::EchoApp { listen } => {
            return echo_app::serve(tokio::net::TcpListener::bind(listen).await?).await;
        }
        Command::Report { file } => {
            print!("{}", report::render(&std::fs::read_to_string(file)?)?);
            return Ok(());
        }
        Command::Ready {
            conn,
            since_ns,
            timeout_secs,
        } => {
            let target = target(&conn)?;
            let deadline = Instant::now() + Duration::from_secs(timeout_secs);
            loop {
                if let Ok((mut ws, _)) = target.connect().await {
                    if client::round_trip(&mut ws, b"ready?").await.is_ok() {
                        break;
                    }
                }
                anyhow::ensure!(Instant::now() < deadline, "not ready after {timeout_secs}s");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
            format!("ms={:.1}", now.saturating_sub(since_ns) as f64 / 1e6)
        }
        Command::Echo {
            conn,
            conns,
            size,
            secs,
        } => load::echo(target(&conn)?, conns, size, secs).await?,
        Command::Paced {
            conn,
            conns,
            size,
            rate,
            secs,
            pid,
        } => paced::paced(target(&conn)?, conns, size, rate, secs, pid).await?,
        Command::Handshakes {
            conn,
            workers,
            secs,
            resume,
        } => load::handshakes(target(&conn)?, workers, secs, resume).await?,
        Command::Startup {
            conn,
            health,
            timeout_secs,
            command,
        } => {
            let timeout = Duration::from_secs(timeout_secs);
            startup::startup(target(&conn)?, health, timeout, command).await?
        }
        Command::Storm {
            conn,
            to,
            clients,
            spread_ms,
            give_up_secs,
        } => {
            let (spread, give_up) = (
                Duration::from_millis(spread_ms),
                Duration::from_secs(give_up_secs),
            );
            storm::storm(target(&conn)?, to, clients, spread, give_up).await?
        }
        Command::Idle { conn, conns, pid } => idle::idle(target(&conn)?, conns, pid).await?,
        Command::Reload {
            conn,
            conns,
            churn,
            secs,
            every_ms,
            swap,
        } => {
            let every = Duration::from_millis(every_ms);
            load::reload(target(&conn)?, conns, churn, secs, every, swap).await?
        }
    };
    println!("{line}");
    Ok(())
}
