//! Certificates from a directory (`tls.crt` + `tls.key`), reloaded when the directory changes.
//!
//! The directory itself is watched, not the files: kubelet updates a Secret volume by
//! swapping the `..data` symlink, which never touches `tls.crt` itself. A slow poll backs the
//! watch up on volumes whose events are lost, and a content fingerprint keeps unchanged files
//! from being reloaded (or re-reported) on every poll.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::pair::{CertError, fingerprint, load_pair};
use super::store::{CertStore, Publisher};
use crate::file_watch::{self, Refresh};

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

    /// Registers `dir` with `store`, loads it once (a directory without a valid pair yet is
    /// logged and waited for), then watches it until `stop`.
    pub async fn start(
        store: &Arc<CertStore>,
        dir: &Path,
        provider: Arc<CryptoProvider>,
        poll_interval: Duration,
        stop: CancellationToken,
    ) {
        let publisher = store.register(format!("dir:{}", dir.display()));
        let mut source = DirSource::new(dir.to_path_buf(), publisher, provider);
        if !source.reload().await {
            warn!(
                cert.source = source.label(),
                "no valid certificate yet; waiting for one"
            );
        }
        source.spawn_watch(poll_interval, stop);
    }

    /// Watches the directory until `stop`, reloading on change and every `poll_interval`.
    pub fn spawn_watch(
        self,
        poll_interval: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        file_watch::spawn_watch(self.dir.clone(), self, poll_interval, stop)
    }

    /// The source's label.
    pub fn label(&self) -> &str {
        self.publisher.label()
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

impl Refresh for DirSource {
    async fn refresh(&mut self) {
        self.reload().await;
    }
}
