//! Acceptance 3: `kubectl rollout restart` of the 2-replica injected echo Deployment (the chart
//! installed, the Service's endpoint removal lagging 5 s as a cloud load balancer's does) while
//! 200 WebSockets are open and new ones arrive at 20 per second through the LoadBalancer
//! address: no new connection fails (TCP, TLS or upgrade), and no open WebSocket ends in a TCP
//! reset, in native and in plain sidecar mode. An old pod's drain may close a WebSocket cleanly
//! (close_notify and a FIN); its client then reconnects, and that reconnection must not fail.
//!
//! The numbers are printed (`--no-capture` shows them) for the report.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::support::cluster::{ChartRelease, Cluster, POD_START, items, str_at};
use crate::support::{LeafSpec, TestCa, client_config, install_crypto_provider, ws_upgrade};

/// WebSockets held open through the rollout (acceptance 3).
const HELD: usize = 200;
/// New WebSockets per second through the rollout (acceptance 3).
const ARRIVALS_PER_SECOND: u64 = 20;
/// The Service's endpoint-removal lag (acceptance 3: a load balancer 5 s behind).
const LAG: &str = "5s";
/// How often a held WebSocket proves it is alive with an echo.
const HELD_ECHO_EVERY: Duration = Duration::from_secs(2);
/// One step of a connection (TCP connect, TLS, upgrade, an echo) slower than this failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Load before the restart and after the old pods are gone.
const STEADY: Duration = Duration::from_secs(5);
/// The SNI and certificate name of the echo Service.
const NAME: &str = "echo.test";

#[tokio::test(flavor = "multi_thread")]
async fn webhook_rollout_restart_fails_no_connection_in_native_mode() {
    rollout_restart_fails_no_connection("native").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_rollout_restart_fails_no_connection_in_plain_mode() {
    rollout_restart_fails_no_connection("plain").await;
}

async fn rollout_restart_fails_no_connection(mode: &str) {
    install_crypto_provider();
    let cluster = Cluster::shared().await;
    let mode_value = format!("sidecar.mode={mode}");
    let _release = ChartRelease::install(&cluster, "wss-system", &["--set", &mode_value]).await;

    let echo = cluster.namespace("rollout").await;
    let ns = echo.name.as_str();
    let ca = TestCa::new("rollout test CA");
    cluster
        .put_tls_secret(ns, "echo-tls", &ca.issue(LeafSpec::new(&[NAME])))
        .await;
    cluster
        .apply_file_in(ns, "manifests/examples/echo.yaml")
        .await;
    let lag = format!("wss-cluster.test/endpoint-removal-lag={LAG}");
    cluster
        .kubectl_ok(&["annotate", "-n", ns, "service", "echo", &lag])
        .await;
    let pods = cluster.wait_ready_pods(ns, "app=echo", 2).await;
    let old: Vec<String> = pods
        .iter()
        .map(|p| str_at(p, "/metadata/name").to_string())
        .collect();
    let injected = if mode == "native" {
        &pods[0]["spec"]["initContainers"][0]
    } else {
        &pods[0]["spec"]["containers"][1]
    };
    eprintln!(
        "[{mode}] injected sidecar: args {} lifecycle {}; app lifecycle {}; grace {}",
        injected["args"],
        injected["lifecycle"],
        pods[0]["spec"]["containers"][0]["lifecycle"],
        pods[0]["spec"]["terminationGracePeriodSeconds"]
    );
    let ip = cluster.load_balancer_ip(ns, "echo").await;
    let target = Target {
        addr: SocketAddr::new(ip, 443),
        tls: TlsConnector::from(client_config(&[ca.cert_der()], &[b"http/1.1"])),
    };
    // The LoadBalancer address can take a moment to serve.
    let ready = Instant::now();
    while target.open().await.is_err() {
        assert!(
            ready.elapsed() < POD_START,
            "the echo Service never answered"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..HELD {
        let (target, tally, stop) = (target.clone(), Arc::clone(&tally), Arc::clone(&stop));
        tasks.push(tokio::spawn(hold(target, tally, stop, started)));
    }
    let open = Instant::now();
    while tally.held_open.load(Ordering::SeqCst) < HELD as u64 {
        assert!(
            open.elapsed() < Duration::from_secs(120),
            "only {} of {HELD} WebSockets opened: {:?}",
            tally.held_open.load(Ordering::SeqCst),
            tally.failures()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (target2, tally2, stop2) = (target.clone(), Arc::clone(&tally), Arc::clone(&stop));
    let arrivals = tokio::spawn(arrive(target2, tally2, stop2, started));
    tokio::time::sleep(STEADY).await;

    let restart_at = started.elapsed();
    cluster
        .kubectl_ok(&["rollout", "restart", "-n", ns, "deployment/echo"])
        .await;
    cluster
        .kubectl_ok(&[
            "rollout",
            "status",
            "-n",
            ns,
            "deployment/echo",
            "--timeout=5m",
        ])
        .await;
    let rolled_at = started.elapsed();
    let gone = Instant::now();
    loop {
        let list = cluster
            .get_json(Some(ns), &["pods", "-l", "app=echo"])
            .await;
        let left = list.as_ref().map_or(0, |l| {
            items(l)
                .iter()
                .filter(|p| old.iter().any(|o| o == str_at(p, "/metadata/name")))
                .count()
        });
        if left == 0 {
            break;
        }
        assert!(gone.elapsed() < POD_START, "old pods still there");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let old_gone_at = started.elapsed();
    tokio::time::sleep(STEADY).await;
    stop.store(true, Ordering::SeqCst);
    let _ = arrivals.await;
    for task in tasks {
        let _ = tokio::time::timeout(STEP_TIMEOUT * 2, task).await;
    }

    let report = tally.report();
    eprintln!(
        "[{mode}] rollout restart at {restart_at:?}, rollout status done at {rolled_at:?}, \
         old pods gone at {old_gone_at:?}, load stopped at {:?}; endpoint-removal lag {LAG}\n\
         [{mode}] {report}",
        started.elapsed()
    );
    let failures = tally.failures();
    assert_eq!(
        tally.new_failed.load(Ordering::SeqCst),
        0,
        "[{mode}] new connections failed: {failures:?}\n{report}"
    );
    assert_eq!(
        tally.held_reset.load(Ordering::SeqCst),
        0,
        "[{mode}] open WebSockets ended in a reset: {failures:?}\n{report}"
    );
    assert!(
        tally.new_ok.load(Ordering::SeqCst) > 0,
        "no connection went through: {report}"
    );
}

/// Where clients connect.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    tls: TlsConnector,
}

type Ws = WebSocketStream<TlsStream<TcpStream>>;

impl Target {
    /// A new WebSocket, each step bounded; the error names the step that failed.
    async fn open(&self) -> Result<Ws, String> {
        let tcp = step(TcpStream::connect(self.addr))
            .await
            .map_err(|e| format!("tcp: {e}"))?;
        let name = ServerName::try_from(NAME).expect("a DNS name");
        let tls = step(self.tls.connect(name, tcp))
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let url = format!("wss://{NAME}/ws");
        let mut ws = ws_upgrade(tls, url.as_str())
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        echo(&mut ws, "hello")
            .await
            .map_err(|e| format!("first echo: {}", e.describe()))?;
        Ok(ws)
    }
}

async fn step<T>(f: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    match tokio::time::timeout(STEP_TIMEOUT, f).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        )),
    }
}

/// How a WebSocket ended.
enum End {
    /// A close frame, or TLS close_notify then the end of the stream (a drain deadline).
    Clean(String),
    /// The TCP connection ended without close_notify (a FIN only).
    FinOnly(String),
    /// A TCP reset.
    Reset(String),
    /// No answer in time, or another error.
    Other(String),
}

impl End {
    fn describe(&self) -> String {
        match self {
            End::Clean(why) => format!("clean: {why}"),
            End::FinOnly(why) => format!("FIN without close_notify: {why}"),
            End::Reset(why) => format!("reset: {why}"),
            End::Other(why) => format!("other: {why}"),
        }
    }
}

fn classify(error: WsError) -> End {
    match error {
        WsError::ConnectionClosed | WsError::AlreadyClosed => End::Clean(error.to_string()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            End::Clean("close_notify and end of stream".into())
        }
        WsError::Io(e) => match e.kind() {
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                End::Reset(e.to_string())
            }
            std::io::ErrorKind::UnexpectedEof => End::FinOnly(e.to_string()),
            _ => End::Other(e.to_string()),
        },
        other => End::Other(other.to_string()),
    }
}

/// One echo: sends `text`, awaits the same text back.
async fn echo(ws: &mut Ws, text: &str) -> Result<(), End> {
    let exchange = async {
        ws.send(Message::text(text)).await.map_err(classify)?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() == text => return Ok(()),
                Some(Ok(Message::Close(frame))) => {
                    return Err(End::Clean(format!("close frame {frame:?}")));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(classify(e)),
                None => return Err(End::Clean("end of stream".into())),
            }
        }
    };
    match tokio::time::timeout(STEP_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(End::Other(format!("no echo within {STEP_TIMEOUT:?}"))),
    }
}

/// Counts of what the clients saw.
#[derive(Default)]
struct Tally {
    new_ok: AtomicU64,
    new_failed: AtomicU64,
    held_open: AtomicU64,
    reconnects: AtomicU64,
    held_clean: AtomicU64,
    held_fin_only: AtomicU64,
    held_reset: AtomicU64,
    held_other: AtomicU64,
    samples: Mutex<Vec<String>>,
}

/// Most failure descriptions kept for the message.
const SAMPLES: usize = 20;

impl Tally {
    fn sample(&self, at: Duration, what: String) {
        let mut samples = self.samples.lock().unwrap();
        if samples.len() < SAMPLES {
            samples.push(format!("{:.1}s {what}", at.as_secs_f64()));
        }
    }

    /// A new connection's outcome.
    async fn open(&self, target: &Target, started: Instant) -> Option<Ws> {
        match target.open().await {
            Ok(ws) => {
                self.new_ok.fetch_add(1, Ordering::SeqCst);
                Some(ws)
            }
            Err(e) => {
                self.new_failed.fetch_add(1, Ordering::SeqCst);
                self.sample(started.elapsed(), format!("new connection: {e}"));
                None
            }
        }
    }

    fn ended(&self, end: End, started: Instant) {
        let counter = match &end {
            End::Clean(_) => &self.held_clean,
            End::FinOnly(_) => &self.held_fin_only,
            End::Reset(_) => &self.held_reset,
            End::Other(_) => &self.held_other,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        if !matches!(end, End::Clean(_)) {
            self.sample(
                started.elapsed(),
                format!("open WebSocket ended: {}", end.describe()),
            );
        }
    }

    fn failures(&self) -> Vec<String> {
        self.samples.lock().unwrap().clone()
    }

    fn report(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::SeqCst);
        format!(
            "new connections: {} ok, {} failed; held WebSockets: {HELD} opened, {} ended cleanly \
             (close frame or close_notify+FIN), {} FIN without close_notify, {} reset, {} other; \
             {} reconnections",
            n(&self.new_ok),
            n(&self.new_failed),
            n(&self.held_clean),
            n(&self.held_fin_only),
            n(&self.held_reset),
            n(&self.held_other),
            n(&self.reconnects),
        )
    }
}

/// One of the held WebSockets: open, echo now and then, and when it ends, note how and
/// reconnect (a new connection, which must not fail).
async fn hold(target: Target, tally: Arc<Tally>, stop: Arc<AtomicBool>, started: Instant) {
    let mut first = true;
    while !stop.load(Ordering::SeqCst) {
        let Some(mut ws) = tally.open(&target, started).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if first {
            tally.held_open.fetch_add(1, Ordering::SeqCst);
            first = false;
        } else {
            tally.reconnects.fetch_add(1, Ordering::SeqCst);
        }
        loop {
            if stop.load(Ordering::SeqCst) {
                let _ = tokio::time::timeout(STEP_TIMEOUT, ws.close(None)).await;
                return;
            }
            tokio::time::sleep(HELD_ECHO_EVERY).await;
            if let Err(end) = echo(&mut ws, "still here").await {
                tally.ended(end, started);
                break;
            }
        }
    }
}

/// New WebSockets at [`ARRIVALS_PER_SECOND`], each echoed once and closed.
async fn arrive(target: Target, tally: Arc<Tally>, stop: Arc<AtomicBool>, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / ARRIVALS_PER_SECOND));
    let mut tasks = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let (target, tally) = (target.clone(), Arc::clone(&tally));
        tasks.push(tokio::spawn(async move {
            if let Some(mut ws) = tally.open(&target, started).await {
                let _ = tokio::time::timeout(STEP_TIMEOUT, ws.close(None)).await;
                while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP_TIMEOUT, ws.next()).await {}
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}
