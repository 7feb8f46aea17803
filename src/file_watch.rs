//! Watching a directory for changes: notify events, debounced, backed up by a slow poll.
//! Shared by every source that reloads files (certificate directories, the client CA bundle).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
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
        Ok(event) if is_change(&event.kind) => poke.notify_one(),
        Ok(_) => {}
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

/// Whether an event can mean new content. Opening and reading a file are not changes: our
/// own reads produce them, and reacting to them re-read the directory ten times a second
/// for as long as the process ran. A writer closing its file is a change.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};

    #[test]
    fn reading_the_files_is_not_a_change_but_writing_and_renaming_are() {
        let reads = [
            AccessKind::Open(AccessMode::Any),
            AccessKind::Read,
            AccessKind::Close(AccessMode::Read),
        ];
        for kind in reads {
            assert!(!is_change(&EventKind::Access(kind)), "{kind:?}");
        }
        let changes = [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::Any),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::Any),
            EventKind::Any,
        ];
        for kind in changes {
            assert!(is_change(&kind), "{kind:?}");
        }
    }
}
