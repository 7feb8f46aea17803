//! The command line: subcommands and flags, each flag with its `WSS_SIDECAR_*` variable.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

use super::injector::InjectorArgs;
pub use super::lame_duck::LameDuckArgs;
use super::proxy::{AdminListen, ProxyArgs, parse_admin_listen};
use crate::telemetry::LogFormat;

/// Terminate TLS for WebSocket traffic (wss://) and forward raw ws:// bytes to the app.
#[derive(Debug, Parser)]
#[command(name = "wss-sidecar", version, about, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once at start-up, so the size of the proxy's flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Terminate wss:// on --listen and forward to --upstream.
    Proxy(ProxyArgs),
    /// Run the demo echo app behind the proxy with a self-signed certificate and print the URL.
    Demo(DemoArgs),
    /// Run only the demo echo app (plain ws://), e.g. as the app container of an example pod.
    Echo(EchoArgs),
    /// Run the admission webhook that injects the sidecar into labelled pods.
    Injector(InjectorArgs),
    /// Start the lame duck of the sidecar running in this pod (its preStop hook): posts
    /// /lame-duck to its admin port and exits 0 once accepted.
    LameDuck(LameDuckArgs),
}

/// Logging flags shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(
        long,
        env = "WSS_SIDECAR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log filter, in `RUST_LOG` syntax (e.g. `info`, `debug`, `wss_sidecar=debug`).
    #[arg(long, env = "WSS_SIDECAR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Flags of `wss-sidecar demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// TLS (wss) listen address of the proxy in front of the demo app.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Where the demo app listens (plain ws://); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub app_listen: SocketAddr,
    /// Admin listen address of the proxy, or `off`.
    #[arg(long, default_value = "127.0.0.1:9090", value_parser = parse_admin_listen)]
    pub admin_listen: AdminListen,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Flags of `wss-sidecar echo`.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// Plain HTTP/WebSocket listen address of the demo app.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}
