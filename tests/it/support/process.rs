//! The real `wss-sidecar` binary as a child process, with its JSON log lines captured.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::child::{Process, spawn_collector};

/// How long `wss-sidecar demo` may take to print its URL: well under a second on a quiet
/// machine; 20 s absorbs a loaded CI one.
const DEMO_START_TIMEOUT: Duration = Duration::from_secs(20);

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_wss-sidecar")
}

/// A running `wss-sidecar proxy`, started on free ports.
pub struct Sidecar {
    /// The child process.
    pub child: Child,
    /// The TLS (wss) address it reported.
    pub addr: SocketAddr,
    /// The admin address it reported.
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// The task copying stderr into `logs`; it ends at EOF, after the process exits.
    log_reader: Option<tokio::task::JoinHandle<()>>,
}

impl Sidecar {
    /// Starts `wss-sidecar proxy ARGS… --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0` with
    /// JSON logs, and waits for its "accepting connections" line.
    pub async fn spawn(args: &[&str]) -> Sidecar {
        Self::spawn_listening("127.0.0.1:0", args).await
    }

    /// Like [`Sidecar::spawn`], with the TLS listener on `listen`.
    pub async fn spawn_listening(listen: &str, args: &[&str]) -> Sidecar {
        Self::spawn_with_env(listen, args, &[]).await
    }

    /// Like [`Sidecar::spawn_listening`], with extra environment variables (`KUBECONFIG`).
    pub async fn spawn_with_env(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Sidecar {
        let mut child = Command::new(binary())
            .envs(env.iter().copied())
            .arg("proxy")
            .args(["--listen", listen, "--admin-listen", "127.0.0.1:0"])
            .args(["--log-format", "json", "--log-level", "debug"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn wss-sidecar");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sink = Arc::clone(&logs);
        let log_reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut ready_tx = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("\"message\":\"accepting connections\"")
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let line = tokio::time::timeout(Duration::from_secs(20), ready_rx)
            .await
            .expect("wss-sidecar did not start within 20 s")
            .expect("wss-sidecar exited before accepting connections");
        Sidecar {
            child,
            addr: json_addr(&line, "listen"),
            admin: json_addr(&line, "admin"),
            logs,
            log_reader: Some(log_reader),
        }
    }

    /// Sends a signal by name (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("child pid").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status();
        assert!(status.expect("run kill").success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, at most `timeout`, and for its last log line to be read,
    /// so that [`Sidecar::logs`] afterwards holds everything it wrote.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("wss-sidecar still running after {timeout:?}"))
            .expect("wait for wss-sidecar");
        if let Some(reader) = self.log_reader.take() {
            tokio::time::timeout(timeout, reader)
                .await
                .unwrap_or_else(|_| panic!("stderr still open {timeout:?} after exit"))
                .expect("log reader task");
        }
        status
    }

    /// The log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Sidecar {
    /// A failing test shows what the sidecar logged last.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail = &logs[logs.len().saturating_sub(SHOWN_ON_FAILURE)..];
            eprintln!(
                "--- wss-sidecar (listen {}) log, last {} lines ---\n{}",
                self.addr,
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// How many of a sidecar's last log lines a failing test shows.
const SHOWN_ON_FAILURE: usize = 150;

/// Starts `wss-sidecar demo` on free ports, as the README's quick start runs it; returns it
/// (its output is shown if the test fails) and the https:// URL it printed.
pub async fn start_demo() -> (Process, String) {
    let mut child = Command::new(binary())
        .args(["demo", "--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args(["--app-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wss-sidecar demo");
    let output = Arc::new(Mutex::new(Vec::new()));
    let url_line = spawn_collector(child.stdout.take(), &output, "https://");
    spawn_collector(child.stderr.take(), &output, "");
    let demo = Process {
        name: "wss-sidecar demo",
        child,
        output,
    };
    let line = demo.wait_for_line(url_line, DEMO_START_TIMEOUT).await;
    let start = line.find("https://").unwrap_or_default();
    let url = line[start..].split_whitespace().next().unwrap_or_default();
    (demo, url.to_string())
}

/// Runs the binary to completion with `args`: (exit code, stderr).
pub async fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let output = Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect("wss-sidecar did not exit within 20 s")
        .expect("run wss-sidecar");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Pulls `"key":"ADDR"` out of a JSON log line.
fn json_addr(line: &str, key: &str) -> SocketAddr {
    let marker = format!("\"{key}\":\"");
    let start = line
        .find(&marker)
        .map(|i| i + marker.len())
        .expect("address field");
    let end = line[start..].find('"').expect("end of address") + start;
    line[start..end]
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {line}: {e}"))
}
