//! A tiny HTTP server on the cluster's bridge that containers call (with curl) to say what
//! happened when: `GET /event/NAME` records NAME at its arrival, `GET /delay/MS/NAME` records
//! NAME and answers only after MS milliseconds (a preStop hook that lasts that long),
//! `GET /hold/NAME` answers 503 until the test [`Recorder::release`]s NAME (an init container
//! that waits for the test).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The longest `/delay/` the recorder honours.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// A running recorder; events are `(name, time since the recorder started)`.
pub struct Recorder {
    /// `http://10.244.0.1:PORT`, what containers call.
    pub url: String,
    start: Instant,
    events: Arc<Mutex<Vec<(String, Duration)>>>,
    released: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Binds on `ip` (the Node's bridge address) and serves until dropped.
    pub async fn start(ip: &str) -> Recorder {
        let listener = TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("bind the recorder on {ip}: {e}"));
        let addr = listener.local_addr().expect("recorder address");
        let start = Instant::now();
        let events = Arc::new(Mutex::new(Vec::new()));
        let released = Arc::new(Mutex::new(Vec::new()));
        let (shared, shared_released) = (events.clone(), released.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let events = shared.clone();
                let released = shared_released.clone();
                tokio::spawn(async move {
                    let mut head = vec![0u8; 2048];
                    let mut read = 0;
                    while !head[..read].windows(4).any(|w| w == b"\r\n\r\n") && read < head.len() {
                        match stream.read(&mut head[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                    }
                    let text = String::from_utf8_lossy(&head[..read]).into_owned();
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let mut parts = path.trim_start_matches('/').split('/');
                    let (delay, name) = match (parts.next(), parts.next(), parts.next()) {
                        (Some("hold"), Some(name), None) => {
                            let free = released.lock().is_ok_and(|r| r.iter().any(|n| n == name));
                            let answer: &[u8] = if free {
                                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
                            } else {
                                b"HTTP/1.1 503 Held\r\nContent-Length: 5\r\nConnection: close\r\n\r\nheld\n"
                            };
                            let _ = stream.write_all(answer).await;
                            return;
                        }
                        (Some("event"), Some(name), None) => (Duration::ZERO, name),
                        (Some("delay"), Some(ms), Some(name)) => (
                            Duration::from_millis(ms.parse().unwrap_or(0)).min(MAX_DELAY),
                            name,
                        ),
                        _ => (Duration::ZERO, ""),
                    };
                    if !name.is_empty()
                        && let Ok(mut events) = events.lock()
                    {
                        events.push((name.to_string(), start.elapsed()));
                    }
                    tokio::time::sleep(delay).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                        .await;
                });
            }
        });
        Recorder {
            url: format!("http://{addr}"),
            start,
            events,
            released,
            task,
        }
    }

    /// Lets `GET /hold/NAME` answer 200 from now on.
    pub fn release(&self, name: &str) {
        if let Ok(mut released) = self.released.lock() {
            released.push(name.to_string());
        }
    }

    /// The events so far, in arrival order.
    pub fn events(&self) -> Vec<(String, Duration)> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// When `name` first arrived, if it did.
    pub fn at(&self, name: &str) -> Option<Duration> {
        self.events()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
    }

    /// How long the recorder has been running.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
