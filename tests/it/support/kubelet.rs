//! Certificate directories laid out and updated exactly as kubelet does for a mounted Secret.
//!
//! kubelet's AtomicWriter never rewrites a visible file: it writes a fresh timestamped
//! directory, swaps the `..data` symlink to it with one rename, then deletes the old
//! directory. A watcher that only handles in-place writes misses every update, which is why
//! the sidecar's reload tests must use this layout rather than plain files.

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::certs::TestPair;

/// The symlink kubelet points at the current timestamped directory.
const DATA_LINK: &str = "..data";
/// Where kubelet builds the next `..data` symlink before renaming it into place.
const DATA_TMP_LINK: &str = "..data_tmp";

/// A directory that kubelet "mounts" a Secret into; `publish` is one Secret update.
#[derive(Debug)]
pub struct KubeletDir {
    path: PathBuf,
    /// Top-level names published last time, so names dropped from the Secret disappear.
    visible: BTreeSet<String>,
}

impl KubeletDir {
    /// Takes over `path`, which must already exist.
    pub fn new(path: &Path) -> KubeletDir {
        assert!(path.is_dir(), "kubelet dir {} must exist", path.display());
        KubeletDir {
            path: path.to_path_buf(),
            visible: BTreeSet::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The timestamped directory `..data` points at now, if anything was published.
    pub fn current_data_dir(&self) -> Option<PathBuf> {
        fs::read_link(self.path.join(DATA_LINK))
            .ok()
            .map(|target| self.path.join(target))
    }

    /// Replaces the whole payload in kubelet's order: new dir, `..data` swap, visible
    /// symlinks, stale symlinks removed, old dir removed. Names may contain `/`.
    pub fn publish(&mut self, files: &[(&str, &[u8])]) {
        let old_dir = fs::read_link(self.path.join(DATA_LINK)).ok();

        let new_dir_name = self.create_timestamped_dir();
        let new_dir = self.path.join(&new_dir_name);
        for (name, contents) in files {
            let file = new_dir.join(name);
            if let Some(parent) = file.parent() {
                fs::create_dir_all(parent).expect("create payload subdirectory");
            }
            fs::write(&file, contents).expect("write payload file");
        }

        let tmp_link = self.path.join(DATA_TMP_LINK);
        symlink(&new_dir_name, &tmp_link).expect("create ..data_tmp symlink");
        fs::rename(&tmp_link, self.path.join(DATA_LINK)).expect("swap ..data symlink");

        let visible: BTreeSet<String> = files
            .iter()
            .map(|(name, _)| {
                name.split('/')
                    .next()
                    .expect("split yields one item")
                    .to_string()
            })
            .collect();
        for name in &visible {
            let link = self.path.join(name);
            if fs::symlink_metadata(&link).is_err() {
                symlink(Path::new(DATA_LINK).join(name), &link).expect("create visible symlink");
            }
        }
        for stale in self.visible.difference(&visible) {
            let _ = fs::remove_file(self.path.join(stale));
        }
        self.visible = visible;

        if let Some(old_dir) = old_dir {
            fs::remove_dir_all(self.path.join(old_dir)).expect("remove old timestamped dir");
        }
    }

    /// Publishes `tls.crt` and `tls.key`, the keys of a `kubernetes.io/tls` Secret.
    pub fn publish_pair(&mut self, pair: &TestPair) {
        self.publish(&[
            ("tls.crt", pair.cert_pem.as_bytes()),
            ("tls.key", pair.key_pem.as_bytes()),
        ]);
    }

    /// Creates `..YYYY_MM_DD_HH_MM_SS.NNNNNNNNN` (UTC) and returns its name. kubelet's suffix
    /// is random; ours is the nanoseconds, bumped until unused, so two publishes within one
    /// second still get distinct directories.
    fn create_timestamped_dir(&self) -> String {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970");
        let stamp = utc_stamp(since_epoch.as_secs());
        let mut suffix = since_epoch.subsec_nanos();
        loop {
            let name = format!("..{stamp}.{suffix:09}");
            match fs::create_dir(self.path.join(&name)) {
                Ok(()) => return name,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    suffix = (suffix + 1) % 1_000_000_000
                }
                Err(e) => panic!("create timestamped dir {name}: {e}"),
            }
        }
    }
}

/// Writes `tls.crt` and `tls.key` as plain files (a hostPath or hand-made layout), in place.
pub fn write_plain_pair(dir: &Path, pair: &TestPair) {
    fs::write(dir.join("tls.crt"), &pair.cert_pem).expect("write tls.crt");
    fs::write(dir.join("tls.key"), &pair.key_pem).expect("write tls.key");
}

/// `YYYY_MM_DD_HH_MM_SS` in UTC, the layout Go's "2006_01_02_15_04_05" produces.
pub fn utc_stamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm); done by
/// hand because no date crate is available to the tests.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
