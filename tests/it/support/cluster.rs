//! The one-node cluster of `scripts/cluster` (the real apiserver, kubectl and helm, our process
//! kubelet and Service proxy), driven from tests through `kubectl` and `helm` as a user would.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;

use super::certs::TestPair;
use super::client::ws_connect;

/// How long one kubectl or helm call may take (helm's `--wait` calls pass their own timeout).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a pod may take from creation to Ready (the image is a local binary; the real
/// probes' periods dominate).
pub const POD_START: Duration = Duration::from_secs(120);
/// How long `scripts/cluster up` may take when the program is already built.
const UP_TIMEOUT: Duration = Duration::from_secs(900);
/// The image the tests and examples run for the sidecar (the image table maps any repository
/// ending in `wss-sidecar` to the locally built binary).
pub const SIDECAR_IMAGE: &str = "wss-sidecar:0.1.0";
/// The image the chart's `helm test` pod uses, mapped to the host's curl and shell.
pub const CURL_IMAGE: &str = "curlimages/curl:8.11.1";
/// The address of the Node on the cluster's bridge: pods reach the test process here.
pub const NODE_IP: &str = "10.244.0.1";

/// The running cluster (started by the first test that needs it; `scripts/test` starts it
/// before the suite and stops it after).
pub struct Cluster {
    root: PathBuf,
    dir: PathBuf,
}

impl Cluster {
    /// Runs `scripts/cluster up` (a no-op when the cluster is healthy; it builds and starts it
    /// otherwise, serialised by its lock) and returns a handle. Pods of the sidecar image run
    /// this test build's binary when the cluster is started here.
    pub async fn shared() -> Cluster {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
        let dir = root.join("target/cluster");
        let mut up = Command::new(root.join("scripts/cluster"));
        up.args(["up", dir.to_str().expect("utf-8 path")])
            .env("WSS_SIDECAR_BIN", env!("CARGO_BIN_EXE_wss-sidecar"))
            .current_dir(&root);
        let output = run(&mut up, UP_TIMEOUT, "scripts/cluster up").await;
        assert!(
            output.status.success(),
            "scripts/cluster up failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Cluster { root, dir }
    }

    /// The repository's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cluster-admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The apiserver's audit log (JSON lines, one per request at ResponseComplete).
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// The log file of one run of a container, as the process kubelet writes it.
    pub fn container_log(&self, ns: &str, pod: &str, uid: &str, container: &str) -> PathBuf {
        self.dir
            .join("kubelet/logs")
            .join(format!("{ns}_{pod}_{uid}"))
            .join(container)
            .join("0.log")
    }

    fn tool(&self, name: &str) -> Command {
        let mut command = Command::new(self.dir.join("bin").join(name));
        command
            .env("KUBECONFIG", self.kubeconfig())
            .current_dir(&self.root);
        command
    }

    /// `kubectl ARGS`, whatever its outcome.
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        run(self.tool("kubectl").args(args), CALL_TIMEOUT, "kubectl").await
    }

    /// `kubectl ARGS` that must succeed; its standard output.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        succeeded(
            &format!("kubectl {}", args.join(" ")),
            self.kubectl(args).await,
        )
    }

    /// `kubectl ARGS` with `stdin` as its input, whatever its outcome.
    pub async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut command = self.tool("kubectl");
        command.args(args);
        run_with_input(&mut command, stdin, "kubectl").await
    }

    /// `kubectl create --dry-run=server -o json` of `yaml` in `ns`, whatever its outcome: what
    /// admission (the webhook included) makes of an object without storing it. The admitted
    /// object is on standard output as JSON; refusals and warnings on standard error.
    pub async fn create_dry_run(&self, ns: &str, yaml: &str) -> Output {
        let args = [
            "create",
            "--dry-run=server",
            "-o",
            "json",
            "-n",
            ns,
            "-f",
            "-",
        ];
        self.kubectl_stdin(&args, yaml).await
    }

    /// `kubectl apply -f -` of `yaml` in `ns`; panics with kubectl's message on failure.
    pub async fn apply(&self, ns: &str, yaml: &str) {
        let output = self
            .kubectl_stdin(&["apply", "-n", ns, "-f", "-"], yaml)
            .await;
        succeeded("kubectl apply", output);
    }

    /// Applies an example file from the repository in `ns` (its `namespace: default` lines
    /// become `ns`).
    pub async fn apply_file_in(&self, ns: &str, path: &str) {
        let text = std::fs::read_to_string(self.root.join(path))
            .unwrap_or_else(|e| panic!("read {path}: {e}"));
        self.apply(
            ns,
            &text.replace("namespace: default", &format!("namespace: {ns}")),
        )
        .await;
    }

    /// `helm ARGS`, whatever its outcome.
    pub async fn helm(&self, args: &[&str]) -> Output {
        run(self.tool("helm").args(args), CALL_TIMEOUT * 3, "helm").await
    }

    /// `helm ARGS` that must succeed; its standard output.
    pub async fn helm_ok(&self, args: &[&str]) -> String {
        succeeded(&format!("helm {}", args.join(" ")), self.helm(args).await)
    }

    /// A fresh namespace named `prefix-<pid>`, deleted (without waiting) when dropped.
    pub async fn namespace(&self, prefix: &str) -> Namespace {
        let name = format!("{prefix}-{}", std::process::id());
        self.kubectl_ok(&["create", "namespace", &name]).await;
        // The serviceaccount controller creates `default` a moment later; until then the
        // ServiceAccount admission plugin refuses pods, as in any cluster.
        self.wait_json(
            Some(&name),
            &["serviceaccount", "default"],
            Duration::from_secs(30),
            |_| true,
        )
        .await;
        Namespace {
            name,
            kubectl: self.dir.join("bin/kubectl"),
            kubeconfig: self.kubeconfig(),
        }
    }

    /// `kubectl get WHAT -o json` in `ns` (`None`: cluster-scoped), or `None` if it fails.
    pub async fn get_json(&self, ns: Option<&str>, what: &[&str]) -> Option<Value> {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", "json"]);
        if let Some(ns) = ns {
            args.extend_from_slice(&["-n", ns]);
        }
        let output = self.kubectl(&args).await;
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// Polls `kubectl get WHAT -o json` until `condition` holds of it; returns the object.
    /// Panics naming `what` and showing the last object seen after `timeout`.
    pub async fn wait_json<F>(
        &self,
        ns: Option<&str>,
        what: &[&str],
        timeout: Duration,
        mut condition: F,
    ) -> Value
    where
        F: FnMut(&Value) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(value) = self.get_json(ns, what).await {
                if condition(&value) {
                    return value;
                }
                last = Some(value);
            }
            if tokio::time::Instant::now() >= deadline {
                let shown = last.map(|v| serde_json::to_string_pretty(&v).unwrap_or_default());
                panic!(
                    "timed out after {timeout:?} waiting for {what:?} in {ns:?}; last seen:\n{}",
                    shown.unwrap_or_else(|| "nothing".into())
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until `count` pods matching `selector` in `ns` are Ready; returns them.
    pub async fn wait_ready_pods(&self, ns: &str, selector: &str, count: usize) -> Vec<Value> {
        let list = self
            .wait_json(Some(ns), &["pods", "-l", selector], POD_START, |list| {
                let items = items(list);
                items.len() == count && items.iter().all(pod_ready)
            })
            .await;
        items(&list).to_vec()
    }

    /// The LoadBalancer address the cluster gave Service `ns/name`.
    pub async fn load_balancer_ip(&self, ns: &str, name: &str) -> IpAddr {
        let service = self
            .wait_json(Some(ns), &["service", name], POD_START, |s| {
                s.pointer("/status/loadBalancer/ingress/0/ip").is_some()
            })
            .await;
        let ip = service
            .pointer("/status/loadBalancer/ingress/0/ip")
            .and_then(Value::as_str)
            .unwrap_or_default();
        ip.parse()
            .unwrap_or_else(|e| panic!("load balancer ip {ip:?} of {ns}/{name}: {e}"))
    }

    /// Creates or replaces the kubernetes.io/tls Secret `ns/name` holding `pair`.
    pub async fn put_tls_secret(&self, ns: &str, name: &str, pair: &TestPair) {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &pair.cert_pem).expect("write cert");
        std::fs::write(&key, &pair.key_pem).expect("write key");
        let cert_arg = format!("--cert={}", cert.display());
        let key_arg = format!("--key={}", key.display());
        let secret = self
            .kubectl_ok(&[
                "create",
                "secret",
                "tls",
                name,
                "-n",
                ns,
                &cert_arg,
                &key_arg,
                "--dry-run=client",
                "-o",
                "json",
            ])
            .await;
        self.apply(ns, &secret).await;
    }

    /// The kubelet's period for refreshing Secret and ConfigMap volumes, which it publishes
    /// on its Node (`wss-cluster run --volume-refresh-period`).
    pub async fn volume_refresh_period(&self) -> Duration {
        let node = self
            .get_json(None, &["node", "wss-node"])
            .await
            .expect("node wss-node exists");
        let seconds = node
            .pointer("/metadata/annotations/wss-cluster.test~1volume-refresh-seconds")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok())
            .expect("node annotation wss-cluster.test/volume-refresh-seconds");
        Duration::from_secs(seconds)
    }
}

/// A namespace of one test, deleted when the test ends.
pub struct Namespace {
    pub name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.kubectl)
            .env("KUBECONFIG", &self.kubeconfig)
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// How long `helm install --wait` of the chart may take.
pub const CHART_INSTALL: Duration = Duration::from_secs(300);

/// The chart installed as release `wss-sidecar` in a namespace of its own, uninstalled on drop
/// (the webhook is cluster-wide: the `cluster-webhook` test group runs one such test at a time).
pub struct ChartRelease {
    helm: PathBuf,
    kubeconfig: PathBuf,
    /// The release's namespace.
    pub ns: Namespace,
}

impl ChartRelease {
    /// `helm install --wait` with `args` added (e.g. `--set`), then waits for every injector
    /// replica (the Deployment's `replicas`: 2 by default) to be Ready.
    pub async fn install(cluster: &Cluster, prefix: &str, args: &[&str]) -> ChartRelease {
        let release = ChartRelease {
            helm: cluster.dir.join("bin/helm"),
            kubeconfig: cluster.kubeconfig(),
            ns: cluster.namespace(prefix).await,
        };
        let chart = cluster.root().join("helm/wss-sidecar");
        let timeout = format!("{}s", CHART_INSTALL.as_secs());
        let mut install = vec![
            "install",
            "wss-sidecar",
            chart.to_str().expect("utf-8 path"),
            "-n",
            &release.ns.name,
            "--wait",
            "--timeout",
            &timeout,
        ];
        install.extend_from_slice(args);
        cluster.helm_ok(&install).await;
        let deployments = cluster
            .get_json(Some(&release.ns.name), &["deployments"])
            .await
            .expect("the release's Deployment");
        let replicas = items(&deployments)
            .iter()
            .filter_map(|d| d.pointer("/spec/replicas").and_then(Value::as_u64))
            .sum::<u64>();
        cluster
            .wait_ready_pods(
                &release.ns.name,
                "wss-sidecar.io/injector=true",
                replicas as usize,
            )
            .await;
        release
    }
}

impl Drop for ChartRelease {
    fn drop(&mut self) {
        let status = std::process::Command::new(&self.helm)
            .args(["uninstall", "wss-sidecar", "-n", &self.ns.name, "--wait"])
            .env("KUBECONFIG", &self.kubeconfig)
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            eprintln!(
                "helm uninstall wss-sidecar -n {} failed: {status:?}",
                self.ns.name
            );
        }
    }
}

/// The `items` of a list object.
pub fn items(list: &Value) -> &[Value] {
    list.get("items")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Whether a pod's `Ready` condition is `True`.
pub fn pod_ready(pod: &Value) -> bool {
    condition_true(pod, "Ready")
}

/// Whether an object's status condition `kind` is `True`.
pub fn condition_true(object: &Value, kind: &str) -> bool {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(kind)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// A string field of a JSON object by pointer, or "".
pub fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A pod's IPv4 address.
pub fn pod_ip(pod: &Value) -> IpAddr {
    let ip = str_at(pod, "/status/podIP");
    ip.parse()
        .unwrap_or_else(|e| panic!("pod IP {ip:?} of {}: {e}", str_at(pod, "/metadata/name")))
}

/// A WebSocket through `addr` as `server_name`, retried until `timeout`: a Service's address
/// answers once the proxy has seen the ready endpoints, a moment after the pods are Ready.
pub async fn ws_connect_retrying(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> WebSocketStream<TlsStream<TcpStream>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match ws_connect(addr, server_name, config.clone()).await {
            Ok(ws) => return ws,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("no WebSocket through {addr} within {timeout:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// A YAML (and JSON) string literal.
pub fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

async fn run(command: &mut Command, timeout: Duration, what: &str) -> Output {
    command.stdin(Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(timeout, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            panic!("{what} could not run: {e} (is the cluster built? scripts/cluster up)")
        }
        Err(_) => panic!("{what} did not finish within {timeout:?}"),
    }
}

async fn run_with_input(command: &mut Command, stdin: &str, what: &str) -> Output {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{what} could not run: {e}"));
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.as_bytes())
            .await
            .expect("write stdin");
    }
    match tokio::time::timeout(CALL_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what} did not finish within {CALL_TIMEOUT:?}"),
    }
}

fn succeeded(what: &str, output: Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
