//! Watching a directory for changes: notify events, debounced, backed up by a slow poll.
//! Shared by every source that reloads files (certificate directories, the client CA bundle).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long to let a burst of file events settle before reading, so that a writer that
/// replaces several files one after the other is read once, complete.
const SETTLE: Duration = Duration::from_millis(100);

/// Something that re-reads its files when told to.
pub(crate) trait Refresh: Send + 'static {
    /// Re-reads the files and publishes what changed (and is valid).
    fn refresh(&mut self) -> impl Future<Output = ()> + Send;
}

/// Refreshes `source` whenever `dir` changes and every `poll_interval`, until `stop`.
pub(crate) fn spawn_watch(
    dir: PathBuf,
    mut source: impl Refresh,
    poll_interval: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let changed = Arc::new(Notify::new());
        let mut watcher = watch_dir(&dir, &changed);
        // Catch a change made between the caller's first load and the watch starting.
        source.refresh().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = changed.notified() => tokio::time::sleep(SETTLE).await,
                () = tokio::time::sleep(poll_interval) => {
                    if watcher.is_none() {
                        watcher = watch_dir(&dir, &changed);
                    }
                }
            }
            source.refresh().await;
        }
    })
}

/// Starts an inotify (or platform) watch on `dir` that pokes `changed` on any event. Without
/// a watch the poll still finds changes, just later.
fn watch_dir(dir: &Path, changed: &Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    let poke = Arc::clone(changed);
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(_) => poke.notify_one(),
        Err(err) => debug!(error = %err, "directory watch error"),
    };
    let watcher = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match watcher {
        Ok(w) => Some(w),
        Err(err) => {
            warn!(watch.dir = %dir.display(), error = %err, "cannot watch directory; relying on polling");
            None
        }
    }
}
