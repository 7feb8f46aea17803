//! Headless Chromium from Debian's `chromium` package, with a throw-away profile.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::process::Command;

use super::devtools::DevTools;
use crate::support::child::{Process, spawn_collector};

/// Bound on every wait of a browser test: a process start, a DevTools answer, a page
/// condition. Each takes well under a second on a quiet machine; 20 s absorbs a loaded CI one.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Chromium's flags. Headless as root needs `--no-sandbox`; the `--disable-*` ones keep it
/// from reaching for the internet (update checks, sync, QUIC probes), which a test machine may
/// not have. `--ignore-certificate-errors` stands for the person who accepts the warning about
/// the demo's self-signed certificate. Port 0 makes it pick a free port and print it.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--ignore-certificate-errors",
    "--remote-debugging-port=0",
];

/// `chromium` on PATH, or a failure saying how to get it: a missing browser must not look like
/// a pass.
pub fn find_chromium() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("chromium"))
                .find(|path| path.is_file())
        })
        .unwrap_or_else(|| {
            panic!("`chromium` is not on PATH: run scripts/install-test-deps, then the tests again")
        })
}

/// Headless Chromium with a throw-away profile.
pub struct Chromium {
    process: Process,
    /// The browser-wide DevTools socket, for targets and closing.
    browser: DevTools,
    /// `HOST:PORT` of the DevTools server.
    authority: String,
    /// The profile directory, under the target directory so that one kept after a failure is
    /// found (and cleaned by `cargo clean`) there. Declared last: removed after the process.
    profile: Option<tempfile::TempDir>,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // kill_on_drop does not wait, so a failed test would remove the profile while the
        // browser's helpers still write to it; keep it instead, for whoever looks into it.
        if std::thread::panicking()
            && let Some(profile) = self.profile.take()
        {
            eprintln!("chromium profile kept at {}", profile.keep().display());
        }
    }
}

impl Chromium {
    /// Starts Chromium and connects to the DevTools endpoint it prints on stderr.
    pub async fn start(path: &Path) -> Chromium {
        let profile =
            tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("chromium profile dir");
        let mut child = Command::new(path)
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", path.display()));
        let output = Arc::new(Mutex::new(Vec::new()));
        spawn_collector(child.stdout.take(), &output, "");
        let listening = spawn_collector(child.stderr.take(), &output, "DevTools listening on ");
        let process = Process {
            name: "chromium",
            child,
            output,
        };
        let line = process.wait_for_line(listening, STEP_TIMEOUT).await;
        let endpoint = line
            .split_once("DevTools listening on ")
            .map(|(_, url)| url.trim().to_string())
            .unwrap_or_default();
        let authority = endpoint
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected DevTools endpoint in {line:?}"))
            .to_string();
        let browser = DevTools::connect(&endpoint).await;
        Chromium {
            process,
            browser,
            authority,
            profile: Some(profile),
        }
    }

    /// Opens a tab and connects to its own DevTools socket.
    pub async fn open_page(&mut self) -> DevTools {
        let target = self
            .browser
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let id = target["targetId"]
            .as_str()
            .unwrap_or_else(|| panic!("Target.createTarget answered {target}"));
        DevTools::connect(&format!("ws://{}/devtools/page/{id}", self.authority)).await
    }

    /// Closes the browser the way its menu would, so it removes its own files before the
    /// profile directory goes; kill_on_drop stays the backstop when a test panics earlier.
    pub async fn close(mut self, page: DevTools) {
        drop(page);
        self.browser.call("Browser.close", json!({})).await;
        let exited = tokio::time::timeout(STEP_TIMEOUT, self.process.child.wait()).await;
        assert!(
            matches!(exited, Ok(Ok(_))),
            "chromium still running {STEP_TIMEOUT:?} after Browser.close"
        );
    }
}
