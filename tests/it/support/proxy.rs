//! The proxy run in-process on 127.0.0.1:0, plus plain-HTTP access to its admin endpoint.

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wss_sidecar::config::{Cli, Command};
use wss_sidecar::proxy::{self, Listeners, RunError};

/// How long [`TestProxy::wait_for_metric`] waits: the metrics may trail the event they count
/// (a connection task records its close after the client has seen the socket end).
pub const METRIC_WAIT: Duration = Duration::from_secs(10);

/// The flags of a proxy forwarding to `upstream` with its certificate from `cert_dir`, then
/// `extra`: `--upstream UPSTREAM --cert-dir DIR EXTRA…`.
pub fn serving_args<'a>(upstream: &'a str, cert_dir: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let cert_dir = cert_dir.to_str().expect("utf-8 cert dir path");
    let mut args = vec!["--upstream", upstream, "--cert-dir", cert_dir];
    args.extend_from_slice(extra);
    args
}

/// A running proxy. Its flags are the real `wss-sidecar proxy` flags, parsed by the real
/// parser; only the listeners are bound here, on free ports.
pub struct TestProxy {
    /// The TLS (wss) address.
    pub addr: SocketAddr,
    /// The admin address.
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
}

impl TestProxy {
    /// Starts `wss-sidecar proxy ARGS…` and waits until `/readyz` answers 200.
    pub async fn start(args: &[&str]) -> TestProxy {
        let proxy = Self::start_unready(args).await;
        proxy.wait_ready().await;
        proxy
    }

    /// Starts the proxy without waiting for readiness.
    pub async fn start_unready(args: &[&str]) -> TestProxy {
        let tls = TcpListener::bind("127.0.0.1:0").await.expect("bind tls");
        Self::start_unready_on(tls, None, args).await
    }

    /// Like [`TestProxy::start`], with the TLS listener bound to `tls_bind` (e.g. `[::1]:0`).
    pub async fn start_on(tls_bind: &str, args: &[&str]) -> TestProxy {
        let tls = TcpListener::bind(tls_bind).await.expect("bind tls");
        let proxy = Self::start_unready_on(tls, None, args).await;
        proxy.wait_ready().await;
        proxy
    }

    /// Starts the proxy on listeners the test bound first (an ACME CA must know the ports
    /// before the proxy orders), without waiting for readiness.
    pub async fn start_unready_on(
        tls: TcpListener,
        http: Option<TcpListener>,
        args: &[&str],
    ) -> TestProxy {
        super::install_crypto_provider();
        let argv = ["wss-sidecar", "proxy"]
            .into_iter()
            .chain(args.iter().copied());
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("bad test flags: {e}"));
        let Command::Proxy(proxy_args) = cli.command else {
            panic!("not a proxy command");
        };
        let config = proxy_args
            .into_config()
            .unwrap_or_else(|e| panic!("bad test config: {e}"));
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let addr = tls.local_addr().expect("tls addr");
        let admin_addr = admin.local_addr().expect("admin addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(proxy::run(
            config,
            Listeners {
                tls,
                admin: Some(admin),
                http,
            },
            async move {
                let _ = stopped.await;
            },
        ));
        TestProxy {
            addr,
            admin: admin_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Waits until `/readyz` is 200.
    pub async fn wait_ready(&self) {
        let admin = self.admin;
        super::wait_until(
            "the proxy is ready",
            Duration::from_secs(10),
            || async move {
                http_get(admin, "/readyz")
                    .await
                    .map(|(status, _)| status == 200)
                    .unwrap_or(false)
            },
        )
        .await;
    }

    /// Starts the drain (as SIGTERM would) without waiting for it to finish.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Starts the drain and waits for `run` to return.
    pub async fn shutdown(mut self) -> Result<(), RunError> {
        self.begin_shutdown();
        let task = self.task.take().expect("proxy task");
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("proxy did not stop within 60 s")
            .expect("proxy task panicked")
    }

    /// True once `run` has returned.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// `GET path` on the admin endpoint: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Scrapes `/metrics`, checking that every sample line parses.
    pub async fn metrics(&self) -> Metrics {
        let (status, body) = self.admin_get("/metrics").await;
        assert_eq!(status, 200, "/metrics status");
        Metrics::parse(&body)
    }

    /// One sample's value, 0 when absent (Prometheus counters with no events yet are absent).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics().await.value(name, labels)
    }

    /// Waits up to [`METRIC_WAIT`] until `name{labels}` is exactly `value`.
    pub async fn wait_for_metric(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.wait_for_metric_where(name, labels, &format!("is {value}"), |v| v == value)
            .await;
    }

    /// Waits up to [`METRIC_WAIT`] until `name{labels}` is at least `value`.
    pub async fn wait_for_metric_at_least(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.wait_for_metric_where(name, labels, &format!("reaches {value}"), |v| v >= value)
            .await;
    }

    async fn wait_for_metric_where(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        wanted: &str,
        holds: impl Fn(f64) -> bool,
    ) {
        let last = Cell::new(None);
        let (last, holds) = (&last, &holds);
        let reached = super::poll_until(METRIC_WAIT, || async move {
            let value = self.metric(name, labels).await;
            last.set(Some(value));
            holds(value)
        })
        .await;
        if !reached {
            let last = last
                .get()
                .map_or("never scraped".to_string(), |v| format!("last {v}"));
            panic!(
                "timed out after {METRIC_WAIT:?} waiting until {name}{labels:?} {wanted} ({last})"
            );
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A parsed `/metrics` scrape.
pub struct Metrics {
    /// The samples, as Prometheus' text parser reads them.
    pub scrape: prometheus_parse::Scrape,
}

impl Metrics {
    /// Parses `body`, failing the test if any sample line was not understood.
    pub fn parse(body: &str) -> Metrics {
        let lines = body.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("metrics parse");
        assert_eq!(
            scrape.samples.len(),
            expected_samples(body),
            "every sample line of /metrics must parse as Prometheus text:\n{body}"
        );
        assert!(
            body.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
        Metrics { scrape }
    }

    /// The value of `name` with exactly these labels (others ignored), 0 when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => panic!("{name} is not a plain value"),
            })
            .unwrap_or(0.0)
    }
}

impl Metrics {
    /// The cumulative buckets `(le, count)` of the histogram `name` (without labels), checking
    /// that they are cumulative and that `+Inf` equals `name_count`.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let sample = self
            .scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("no histogram {name} in the scrape"));
        let prometheus_parse::Value::Histogram(counts) = &sample.value else {
            panic!("{name} is not a histogram: {:?}", sample.value);
        };
        let buckets: Vec<(f64, f64)> = counts.iter().map(|c| (c.less_than, c.count)).collect();
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{name}: buckets not cumulative: {buckets:?}"
        );
        let last = buckets.last().expect("at least the +Inf bucket");
        assert!(last.0.is_infinite(), "{name}: no +Inf bucket: {buckets:?}");
        assert_eq!(last.1, self.value(&format!("{name}_count"), &[]), "{name}");
        buckets
    }
}

/// How many samples the parser must return for `body`: one per sample line, except that the
/// `_bucket` lines of one histogram series (same name, same labels but `le`) make one sample.
fn expected_samples(body: &str) -> usize {
    let mut series = std::collections::BTreeSet::new();
    let mut plain = 0;
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match line.split_once("_bucket{") {
            Some((name, rest)) => {
                let labels = rest.split_once('}').map_or(rest, |(labels, _)| labels);
                let others: Vec<&str> = labels
                    .split(',')
                    .filter(|l| !l.starts_with("le="))
                    .collect();
                series.insert((name.to_string(), others.join(",")));
            }
            None => plain += 1,
        }
    }
    plain + series.len()
}

/// A minimal HTTP/1.1 GET over a fresh connection: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut tcp = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
