//! The `wss-sidecar` binary: parse the command line, set up logging, bind, run, and map
//! errors to exit codes (64 for bad configuration).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use wss_sidecar::config::{Cli, Command, ConfigError};
use wss_sidecar::shutdown::Signals;
use wss_sidecar::{EXIT_CONFIG, injector, proxy, quickstart, telemetry};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(EXIT_CONFIG as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let log = match &cli.command {
        Command::Proxy(args) => &args.log,
        Command::Demo(args) => &args.log,
        Command::Echo(args) => &args.log,
        Command::Injector(args) => &args.log,
    };
    if let Err(err) = telemetry::init(log) {
        eprintln!("error: {err}");
        return ExitCode::from(EXIT_CONFIG as u8);
    }
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            let config_error = err.downcast_ref::<ConfigError>().is_some();
            ExitCode::from(if config_error { EXIT_CONFIG as u8 } else { 1 })
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let signals = Signals::install().context("cannot install signal handlers")?;
    match command {
        Command::Proxy(args) => {
            let config = args.into_config()?;
            let tls = bind("--listen", config.listen).await?;
            let admin = match config.admin_listen {
                Some(addr) => Some(bind("--admin-listen", addr).await?),
                None => None,
            };
            let http = match config.http_listen {
                Some(addr) => Some(bind("--http-listen", addr).await?),
                None => None,
            };
            let listeners = proxy::Listeners { tls, admin, http };
            proxy::run(config, listeners, shutdown_signal(signals)).await?;
        }
        Command::Demo(args) => {
            let tls = bind("--listen", args.listen).await?;
            let admin = match args.admin_listen.0 {
                Some(addr) => Some(bind("--admin-listen", addr).await?),
                None => None,
            };
            let app = bind("--app-listen", args.app_listen).await?;
            quickstart::run(&args, tls, admin, app, shutdown_signal(signals)).await?;
        }
        Command::Echo(args) => {
            let app = bind("--listen", args.listen).await?;
            println!(
                "demo echo app on http://{}/ (WebSocket at /ws)",
                args.listen
            );
            wss_sidecar::demo::serve(app, shutdown_signal(signals))
                .await
                .context("demo app failed")?;
        }
        Command::Injector(args) => {
            injector::template(&args)?;
            let https = bind("--listen", args.listen).await?;
            let admin = Some(bind("--admin-listen", args.admin_listen).await?);
            let listeners = injector::Listeners { https, admin };
            injector::run(args, listeners, shutdown_signal(signals))
                .await
                .map_err(|err| match err {
                    injector::RunError::Config(config) => anyhow::Error::new(config),
                    other => anyhow::Error::new(other),
                })?;
        }
    }
    Ok(())
}

/// Binding is configuration: an address in use or not ours is the user's to fix, so it maps
/// to exit code 64 with the flag's name.
async fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, ConfigError> {
    TcpListener::bind(addr).await.map_err(|e| ConfigError {
        flag,
        message: format!("cannot listen on {addr}: {e}"),
    })
}

/// The first SIGTERM/SIGINT starts the drain; a second one exits at once.
async fn shutdown_signal(mut signals: Signals) {
    let name = signals.recv().await;
    tracing::info!(
        signal = name,
        "shutdown requested; send it again to exit at once"
    );
    tokio::spawn(async move {
        let name = signals.recv().await;
        tracing::warn!(signal = name, "second signal; exiting without draining");
        std::process::exit(1);
    });
}
