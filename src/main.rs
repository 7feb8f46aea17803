//! The `wss-sidecar` binary: parse the command line, set up logging, bind, run, and exit with
//! the code the outcome carries (64 for bad configuration).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use wss_sidecar::config::{Cli, Command, ConfigError};
use wss_sidecar::listen::{bind, bind_optional, bind_with_backlog};
use wss_sidecar::shutdown::{self, Signals};
use wss_sidecar::{EXIT_CONFIG, demo, injector, proxy, telemetry};

/// Why `run` failed, and the exit code that says so.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    /// A failure that is not the configuration's (exit code 1).
    fn runtime(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 1,
            error: error.into(),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(err: ConfigError) -> Self {
        Self {
            code: EXIT_CONFIG,
            error: err.into(),
        }
    }
}

impl From<proxy::RunError> for Failure {
    fn from(err: proxy::RunError) -> Self {
        Self {
            code: err.exit_code(),
            error: err.into(),
        }
    }
}

impl From<injector::RunError> for Failure {
    fn from(err: injector::RunError) -> Self {
        Self {
            code: err.exit_code(),
            error: err.into(),
        }
    }
}

impl From<demo::quickstart::DemoError> for Failure {
    fn from(err: demo::quickstart::DemoError) -> Self {
        Self {
            code: err.exit_code(),
            error: err.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
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
        Command::LameDuck(args) => &args.log,
    };
    if let Err(err) = telemetry::init(log.log_format, &log.log_level) {
        eprintln!("error: {err}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Proxy(_)) {
        // The proxy's connections run on threads of their own (`proxy::workers`, one per
        // CPU); this runtime runs only the accept loop and the control plane (admin,
        // certificate sources, ACME), for which one worker is plenty.
        runtime.worker_threads(1);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

async fn run(command: Command) -> Result<(), Failure> {
    let signals = Signals::install().map_err(|e| {
        Failure::runtime(anyhow::Error::new(e).context("cannot install signal handlers"))
    })?;
    match command {
        Command::Proxy(args) => {
            let config = args.into_config()?;
            let tls = bind_with_backlog("--listen", config.listen, config.listen_backlog)?;
            let admin = bind_optional("--admin-listen", config.admin_listen)?;
            let http = bind_optional("--http-listen", config.http_listen)?;
            let listeners = proxy::Listeners { tls, admin, http };
            proxy::run(config, listeners, shutdown_signal(signals)).await?;
        }
        Command::Demo(args) => {
            let tls = bind("--listen", args.listen)?;
            let admin = bind_optional("--admin-listen", args.admin_listen.0)?;
            let app = bind("--app-listen", args.app_listen)?;
            demo::quickstart::run(&args, tls, admin, app, shutdown_signal(signals)).await?;
        }
        Command::Echo(args) => {
            let app = bind("--listen", args.listen)?;
            println!(
                "demo echo app on http://{}/ (WebSocket at /ws)",
                args.listen
            );
            demo::serve(app, shutdown_signal(signals))
                .await
                .map_err(|e| Failure::runtime(anyhow::Error::new(e).context("demo app failed")))?;
        }
        Command::Injector(args) => {
            let admin_listen = args.admin_listen;
            let config = args.into_config()?;
            let https = bind("--listen", config.listen)?;
            let admin = Some(bind("--admin-listen", admin_listen)?);
            let listeners = injector::Listeners { https, admin };
            injector::run(config, listeners, shutdown_signal(signals)).await?;
        }
        Command::LameDuck(args) => {
            let answer = shutdown::request_lame_duck(args.admin)
                .await
                .map_err(Failure::runtime)?;
            println!("{answer}");
        }
    }
    Ok(())
}

/// The first SIGTERM/SIGINT starts the shutdown (the lame duck, then the drain); a second one
/// exits at once, also when `POST /lame-duck` started the lame duck before any signal.
fn shutdown_signal(signals: Signals) -> impl std::future::Future<Output = ()> {
    signals.spawn_watch().cancelled_owned()
}
