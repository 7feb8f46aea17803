//! Flags of `wss-sidecar lame-duck`, the preStop hook that starts a running sidecar's lame duck.

use std::net::SocketAddr;

use clap::Args;

use super::cli::LogArgs;

/// Flags of `wss-sidecar lame-duck`.
#[derive(Debug, Clone, Args)]
pub struct LameDuckArgs {
    /// The running sidecar's admin address (it accepts /lame-duck from loopback only).
    #[arg(long, env = "WSS_SIDECAR_ADMIN", default_value = "127.0.0.1:9090")]
    pub admin: SocketAddr,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}
