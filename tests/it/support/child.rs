//! Child processes whose output is read as it comes, kept, and shown when the test fails.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio::sync::oneshot;

/// A child process whose stdout and stderr lines are kept, and shown if the test fails.
pub struct Process {
    pub name: &'static str,
    pub child: Child,
    pub output: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// The line a collector was watching for, or a failure if it is not printed within
    /// `timeout`.
    pub async fn wait_for_line(
        &self,
        line: oneshot::Receiver<String>,
        timeout: Duration,
    ) -> String {
        tokio::time::timeout(timeout, line)
            .await
            .unwrap_or_else(|_| panic!("{} printed nothing expected in {timeout:?}", self.name))
            .unwrap_or_else(|_| panic!("{} exited before printing what we wait for", self.name))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let output = self.output.lock().map(|lines| lines.join("\n"));
            eprintln!(
                "--- {} output ---\n{}",
                self.name,
                output.unwrap_or_default()
            );
        }
    }
}

/// Reads `stream` line by line into `output` until it closes, so the child never blocks on a
/// full pipe or fails writing to a closed one, and sends on the first line containing `marker`.
pub fn spawn_collector(
    stream: Option<impl AsyncRead + Unpin + Send + 'static>,
    output: &Arc<Mutex<Vec<String>>>,
    marker: &'static str,
) -> oneshot::Receiver<String> {
    let (found_tx, found_rx) = oneshot::channel();
    let mut lines = BufReader::new(stream.expect("piped output")).lines();
    let output = Arc::clone(output);
    tokio::spawn(async move {
        let mut found_tx = Some(found_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if !marker.is_empty()
                && line.contains(marker)
                && let Some(tx) = found_tx.take()
            {
                let _ = tx.send(line.clone());
            }
            output.lock().unwrap().push(line);
        }
    });
    found_rx
}
