//! The ACME store as a directory (a local disk, or a volume shared by replicas).
//!
//! `ROOT/<cache key>/` holds `account.json`, `cert.pem`, `key.pem`, `state.json`,
//! `challenges.json` and `lock.json`; the cache key hashes the directory URL and the names, so
//! a staging certificate is never served after switching to production. Files are written to a
//! temporary name and renamed (readers never see half a file), mode 0600 in a 0700 directory.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::store::{AcmeStore, ChallengeAnswer, RenewalState, StoreError, StoredCert};
use crate::clock::epoch_seconds;

/// Longest wait for another process's short lock-file update.
const GUARD_WAIT: Duration = Duration::from_secs(5);
/// A guard older than this was left by a process that died while holding it.
const GUARD_STALE: Duration = Duration::from_secs(10);

/// The state of one certificate in a directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Lock {
    holder: String,
    expires: i64,
}

impl DirStore {
    /// The store for `names` from `directory_url` under `root` (created if missing).
    pub fn open(root: &Path, directory_url: &str, names: &[String]) -> Result<Self, StoreError> {
        let dir = root.join(cache_key(directory_url, names));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_error(&dir, e))?;
        let store = Self { dir };
        // For the operator looking at the volume: which CA and names this directory is for.
        let about = format!("directory: {directory_url}\nnames: {}\n", names.join(" "));
        store.write("ABOUT", about.as_bytes())?;
        Ok(store)
    }

    /// The directory holding this certificate's files.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path, e)),
        }
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self.read(name)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                what: self.dir.join(name).display().to_string(),
                message: e.to_string(),
            })
    }

    /// Writes `name` atomically: a unique temporary file, fsync, rename over the old one.
    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(
            ".{name}.{}.{:?}.tmp",
            std::process::id(),
            std::thread::current().id()
        ));
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(bytes)?;
                f.sync_all()
            })
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(&path, e));
        }
        Ok(())
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Corrupt {
            what: name.to_string(),
            message: e.to_string(),
        })?;
        self.write(name, &bytes)
    }

    /// Runs `f` holding the `lock.guard` directory (creating a directory is atomic, also on
    /// network file systems), so the read-modify-write of `lock.json` is atomic between
    /// processes sharing the store. A guard left by a process that died inside this short
    /// section is removed once it is older than [`GUARD_STALE`].
    fn with_guard<T>(&self, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let guard = self.dir.join("lock.guard");
        let give_up = std::time::Instant::now() + GUARD_WAIT;
        loop {
            match fs::DirBuilder::new().mode(0o700).create(&guard) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(&guard)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > GUARD_STALE);
                    if stale {
                        let _ = fs::remove_dir(&guard);
                        continue;
                    }
                    if std::time::Instant::now() > give_up {
                        return Err(io_error(&guard, std::io::ErrorKind::WouldBlock.into()));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(io_error(&guard, e)),
            }
        }
        let result = f();
        let _ = fs::remove_dir(&guard);
        result
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(DirStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(store))
            .await
            .unwrap_or_else(|e| Err(io_error(&self.dir, std::io::Error::other(e))))
    }
}

#[async_trait::async_trait]
impl AcmeStore for DirStore {
    async fn load_account(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.blocking(|s| s.read("account.json")).await
    }

    async fn save_account(&self, credentials: &[u8]) -> Result<(), StoreError> {
        let credentials = credentials.to_vec();
        self.blocking(move |s| s.write("account.json", &credentials))
            .await
    }

    async fn load_cert(&self) -> Result<Option<StoredCert>, StoreError> {
        self.blocking(|s| {
            // The key is written before the certificate, so a certificate always has its key.
            let Some(cert) = s.read("cert.pem")? else {
                return Ok(None);
            };
            let key = s.read("key.pem")?.unwrap_or_default();
            Ok(Some(StoredCert {
                cert_pem: String::from_utf8_lossy(&cert).into_owned(),
                key_pem: String::from_utf8_lossy(&key).into_owned(),
            }))
        })
        .await
    }

    async fn save_cert(&self, cert: &StoredCert) -> Result<(), StoreError> {
        let cert = cert.clone();
        self.blocking(move |s| {
            s.write("key.pem", cert.key_pem.as_bytes())?;
            s.write("cert.pem", cert.cert_pem.as_bytes())
        })
        .await
    }

    async fn load_state(&self) -> Result<RenewalState, StoreError> {
        self.blocking(|s| Ok(s.read_json("state.json")?.unwrap_or_default()))
            .await
    }

    async fn save_state(&self, state: &RenewalState) -> Result<(), StoreError> {
        let state = state.clone();
        self.blocking(move |s| s.write_json("state.json", &state))
            .await
    }

    async fn load_challenges(&self) -> Result<Vec<ChallengeAnswer>, StoreError> {
        self.blocking(|s| Ok(s.read_json("challenges.json")?.unwrap_or_default()))
            .await
    }

    async fn save_challenges(&self, answers: &[ChallengeAnswer]) -> Result<(), StoreError> {
        let answers = answers.to_vec();
        self.blocking(move |s| s.write_json("challenges.json", &answers))
            .await
    }

    async fn try_lock(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let holder = holder.to_string();
        self.blocking(move |s| {
            s.with_guard(|| {
                let now = epoch_seconds(SystemTime::now());
                // A damaged lock file is treated as free: it protects nothing.
                let current: Option<Lock> = s.read_json("lock.json").unwrap_or(None);
                if current.is_some_and(|l| l.holder != holder && l.expires > now) {
                    return Ok(false);
                }
                let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
                s.write_json(
                    "lock.json",
                    &Lock {
                        holder,
                        expires: now.saturating_add(ttl),
                    },
                )?;
                Ok(true)
            })
        })
        .await
    }

    async fn unlock(&self, holder: &str) -> Result<(), StoreError> {
        let holder = holder.to_string();
        self.blocking(move |s| {
            s.with_guard(|| {
                let current: Option<Lock> = s.read_json("lock.json").unwrap_or(None);
                if current.is_some_and(|l| l.holder == holder) {
                    let path = s.dir.join("lock.json");
                    fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
                }
                Ok(())
            })
        })
        .await
    }
}

/// `<first name>-<16 hex digits of SHA-256(directory URL, names)>`: readable, and distinct per
/// CA and name set.
fn cache_key(directory_url: &str, names: &[String]) -> String {
    let mut sorted = names.to_vec();
    sorted.sort();
    let input = format!("{directory_url}\n{}", sorted.join("\n"));
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let first = sorted
        .first()
        .map(|n| n.replace('*', "_"))
        .unwrap_or_default();
    format!("{first}-{hex}")
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        what: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn names() -> Vec<String> {
        vec!["b.test".into(), "a.test".into()]
    }

    #[test]
    fn the_cache_key_depends_on_directory_and_names_not_order() {
        let key = cache_key("https://prod/dir", &names());
        assert_eq!(
            key,
            cache_key("https://prod/dir", &["a.test".into(), "b.test".into()])
        );
        assert_ne!(key, cache_key("https://staging/dir", &names()));
        assert_ne!(key, cache_key("https://prod/dir", &["a.test".into()]));
    }

    #[tokio::test]
    async fn round_trips_with_owner_only_files() {
        let root = tempfile::tempdir().unwrap();
        let store = DirStore::open(root.path(), "https://ca/dir", &names()).unwrap();
        assert_eq!(store.load_cert().await.unwrap(), None);
        assert_eq!(store.load_state().await.unwrap(), RenewalState::default());
        let cert = StoredCert {
            cert_pem: "C".into(),
            key_pem: "K".into(),
        };
        store.save_cert(&cert).await.unwrap();
        assert_eq!(store.load_cert().await.unwrap(), Some(cert));
        let state = RenewalState {
            failures: 2,
            next_attempt: Some(5),
            ..RenewalState::default()
        };
        store.save_state(&state).await.unwrap();
        assert_eq!(store.load_state().await.unwrap(), state);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.path()), 0o700);
        assert_eq!(mode(&store.path().join("key.pem")), 0o600);
        // Another CA's store is another directory: nothing is shared.
        let staging = DirStore::open(root.path(), "https://staging/dir", &names()).unwrap();
        assert_eq!(staging.load_cert().await.unwrap(), None);
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_expired_locks_are_taken_over() {
        let root = tempfile::tempdir().unwrap();
        let store = DirStore::open(root.path(), "https://ca/dir", &names()).unwrap();
        let ttl = Duration::from_secs(60);
        assert!(store.try_lock("a", ttl).await.unwrap());
        assert!(!store.try_lock("b", ttl).await.unwrap());
        assert!(store.try_lock("a", ttl).await.unwrap(), "the holder renews");
        store.unlock("b").await.unwrap();
        assert!(
            !store.try_lock("b", ttl).await.unwrap(),
            "only the holder unlocks"
        );
        store.unlock("a").await.unwrap();
        assert!(store.try_lock("b", ttl).await.unwrap());
        // "b" crashed holding a lock that has expired by now.
        assert!(store.try_lock("b", Duration::ZERO).await.unwrap());
        assert!(store.try_lock("c", ttl).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_holders_get_the_lock_exactly_once() {
        let root = tempfile::tempdir().unwrap();
        let store = DirStore::open(root.path(), "https://ca/dir", &names()).unwrap();
        let attempts = (0..8).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .try_lock(&format!("holder-{i}"), Duration::from_secs(60))
                    .await
                    .unwrap()
            })
        });
        let mut won = 0;
        for attempt in attempts.collect::<Vec<_>>() {
            won += usize::from(attempt.await.unwrap());
        }
        assert_eq!(won, 1);
    }
}
