//! `--ticket-keys file:PATH`: keys from a file the operator writes (and rotates), re-read when
//! it changes. A file that fails to parse keeps the last good keys.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::keys::{KeyError, KeyText, TicketKeys};
use super::ticketer::Ticketer;
use crate::file_watch::{self, Refresh};
use crate::metrics::TicketMetrics;

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileKeysError {
    /// It cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Its content is not 1 to 3 lines of base64 keys.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong (never the key bytes).
        source: KeyError,
    },
}

/// The key file, read on change.
pub struct FileKeys {
    path: PathBuf,
    ticketer: Arc<Ticketer>,
    metrics: Arc<crate::metrics::Metrics>,
    /// A hash of the content last read, so unchanged content is not reloaded.
    last: Option<u64>,
}

impl FileKeys {
    /// Loads `path` into `ticketer` (start-up fails when it is unusable), then watches its
    /// directory (kubelet replaces a mounted Secret's files by a symlink swap) and re-reads it
    /// on change and every `poll_interval`, until `stop`.
    pub async fn start(
        path: &Path,
        ticketer: Arc<Ticketer>,
        metrics: Arc<crate::metrics::Metrics>,
        poll_interval: Duration,
        stop: CancellationToken,
    ) -> Result<(), FileKeysError> {
        let mut source = Self {
            path: path.to_path_buf(),
            ticketer,
            metrics,
            last: None,
        };
        source.load().await?;
        source.tickets().count_load(true);
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        file_watch::spawn_watch(dir, source, poll_interval, stop);
        Ok(())
    }

    /// Reads the file; publishes its keys when they changed and parse.
    async fn load(&mut self) -> Result<bool, FileKeysError> {
        let path = self.path.display().to_string();
        let text = tokio::fs::read(&self.path)
            .await
            .map_err(|source| FileKeysError::Read {
                path: path.clone(),
                source,
            })?;
        let mut hasher = DefaultHasher::new();
        text.hash(&mut hasher);
        let hash = hasher.finish();
        if self.last == Some(hash) {
            return Ok(false);
        }
        self.last = Some(hash);
        let keys = KeyText::parse(&text).map_err(|source| FileKeysError::Parse { path, source })?;
        self.ticketer.publish(TicketKeys::new(&keys));
        info!(tickets.file = %self.path.display(), tickets.keys = keys.len(), "loaded the session-ticket keys");
        Ok(true)
    }

    fn tickets(&self) -> &TicketMetrics {
        &self.metrics.tickets
    }
}

impl Refresh for FileKeys {
    async fn refresh(&mut self) {
        match self.load().await {
            Ok(changed) => {
                if changed {
                    self.tickets().count_load(true);
                }
            }
            Err(err) => {
                self.tickets().count_load(false);
                warn!(error = %err, "the session-ticket key file is unusable; the last good keys keep serving");
            }
        }
    }
}
