//! Shutdown signals: SIGTERM (Kubernetes) and SIGINT (Ctrl-C).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Installed signal handlers. Install them before start-up work, so that a SIGTERM arriving
/// early starts a drain instead of killing the process.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs handlers for SIGTERM and SIGINT (needs a running tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT and returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
