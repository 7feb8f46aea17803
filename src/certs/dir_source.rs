//! Certificates from a directory (`tls.crt` + `tls.key`), reloaded when the directory changes.
//!
//! The directory itself is watched, not the files: kubelet updates a Secret volume by
//! swapping the `..data` symlink, which never touches `tls.crt` itself. A slow poll backs the
//! watch up on volumes whose events are lost, and a content fingerprint keeps unchanged files
//! from being reloaded (or re-reported) on every poll.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::pair::{CertError, load_pair};
use super::store::Publisher;

/// How long to let a burst of file events settle before reading, so that a writer that
/// replaces `tls.crt` and `tls.key` one after the other is read once, complete.
const SETTLE: Duration = Duration::from_millis(100);

/// How many times to re-read when the files changed under us during a read.
const READ_ATTEMPTS: usize = 3;

/// One watched certificate directory.
pub struct DirSource {
    dir: PathBuf,
    publisher: Publisher,
    provider: Arc<CryptoProvider>,
    last_fingerprint: Option<u64>,
}

impl DirSource {
    /// A source for `dir`, publishing through `publisher`.
    pub fn new(dir: PathBuf, publisher: Publisher, provider: Arc<CryptoProvider>) -> Self {
        Self {
            dir,
            publisher,
            provider,
            last_fingerprint: None,
        }
    }

    /// Reads the directory and publishes its pair if the content changed and is valid.
    /// Returns true when a new pair was published.
    pub async fn reload(&mut self) -> bool {
        let (cert_pem, key_pem) = match read_pair(&self.dir).await {
            Ok(files) => files,
            Err(err) => {
                // A vanished file is reported once, not on every poll.
                if self.last_fingerprint != Some(0) {
                    self.last_fingerprint = Some(0);
                    self.publisher.reject(&err);
                }
                return false;
            }
        };
        let fingerprint = fingerprint(&cert_pem, &key_pem);
        if self.last_fingerprint == Some(fingerprint) {
            return false;
        }
        self.last_fingerprint = Some(fingerprint);
        match load_pair(&cert_pem, &key_pem, &self.provider, SystemTime::now()) {
            Ok(cert) => {
                self.publisher.publish(cert);
                true
            }
            Err(err) => {
                self.publisher.reject(&err);
                false
            }
        }
    }

    /// Watches the directory until `stop`, reloading on change and every `poll_interval`.
    pub fn spawn_watch(
        mut self,
        poll_interval: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let changed = Arc::new(Notify::new());
            let mut watcher = watch_dir(&self.dir, &changed);
            // Catch a change made between the caller's first load and the watch starting.
            self.reload().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = changed.notified() => tokio::time::sleep(SETTLE).await,
                    () = tokio::time::sleep(poll_interval) => {
                        if watcher.is_none() {
                            watcher = watch_dir(&self.dir, &changed);
                        }
                    }
                }
                self.reload().await;
            }
        })
    }

    /// The source's label.
    pub fn label(&self) -> &str {
        self.publisher.label()
    }
}

/// Starts an inotify (or platform) watch on `dir` that pokes `changed` on any event. Without
/// a watch the poll still finds changes, just later.
fn watch_dir(dir: &Path, changed: &Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    let poke = Arc::clone(changed);
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) if is_change(&event.kind) => poke.notify_one(),
        Ok(_) => {}
        Err(err) => debug!(error = %err, "certificate directory watch error"),
    };
    let watcher = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match watcher {
        Ok(w) => Some(w),
        Err(err) => {
            warn!(cert.dir = %dir.display(), error = %err, "cannot watch certificate directory; relying on polling");
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

/// Reads `tls.crt` and `tls.key` as one consistent pair. Through kubelet's symlinks both
/// resolve into the same timestamped directory; if that target moved while we read, the pair
/// may be mixed, so read again.
async fn read_pair(dir: &Path) -> Result<(Vec<u8>, Vec<u8>), CertError> {
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = resolve(&cert_path, &key_path).await;
        let result = async {
            let cert = read(&cert_path).await?;
            let key = read(&key_path).await?;
            Ok((cert, key))
        }
        .await;
        let after = resolve(&cert_path, &key_path).await;
        if before == after || attempt >= READ_ATTEMPTS {
            return result;
        }
    }
}

async fn resolve(cert: &Path, key: &Path) -> (Option<PathBuf>, Option<PathBuf>) {
    (
        tokio::fs::canonicalize(cert).await.ok(),
        tokio::fs::canonicalize(key).await.ok(),
    )
}

async fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| CertError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn fingerprint(cert: &[u8], key: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    cert.hash(&mut h);
    key.hash(&mut h);
    // 0 is reserved for "files could not be read".
    h.finish().max(1)
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
