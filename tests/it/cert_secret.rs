//! `--cert-secret`: the real binary watching a kubernetes.io/tls Secret through the in-process
//! API server (reached through a kubeconfig, as outside a pod). Created, updated and corrupted
//! Secrets (acceptance 1), closed watches and `410 Gone` (acceptance 5), Events on the pod and
//! a Role without permission for them, and the start-up errors. The API server authorizes
//! every call with the example Role of `manifests/examples/sidecar-rbac.yaml`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::Message;

use crate::support::fake_api::{FakeApi, example_role};
use crate::support::proxy::Metrics;
use crate::support::*;

const NS: &str = "team";
const SECRET: &str = "/api/v1/namespaces/team/secrets/web-tls";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team/events";
const POD: &str = "chat-7d9f";
/// The source label in metrics.
const SOURCE: &str = "secret:team/web-tls";
const RELOADS: &str = "wss_sidecar_cert_reloads_total";
/// Acceptance 1: an updated Secret is served within this long.
const UPDATE_DEADLINE: Duration = Duration::from_secs(2);
/// Bound for waits whose duration is not itself under test.
const WAIT: Duration = Duration::from_secs(10);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A Secret as cert-manager writes it: type kubernetes.io/tls, no ca.crt.
fn tls_secret(pair: &TestPair) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "web-tls", "namespace": NS},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(pair.cert_pem.as_bytes()), "tls.key": b64(pair.key_pem.as_bytes())}
    })
}

/// The fake API, the sidecar watching `team/web-tls` through it, and an echo app behind it.
struct Fixture {
    api: FakeApi,
    ca: TestCa,
    client: Arc<ClientConfig>,
    sidecar: Sidecar,
    _app: EchoServer,
    _dir: TempDir,
}

impl Fixture {
    /// Starts the sidecar (the Secret need not exist yet), its API calls authorized by the
    /// example Role.
    async fn start(api: FakeApi, ca: TestCa) -> Fixture {
        let (namespace, rules) = example_role();
        assert_eq!(namespace, NS);
        api.enforce_role(&namespace, rules);
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path(), NS);
        let app = EchoServer::start_tcp().await;
        let upstream = app.addr().to_string();
        let sidecar = Sidecar::spawn_with_env(
            "127.0.0.1:0",
            &["--upstream", &upstream, "--cert-secret", "web-tls"],
            &[
                ("KUBECONFIG", kubeconfig.to_str().unwrap()),
                ("POD_NAME", POD),
                ("POD_NAMESPACE", NS),
            ],
        )
        .await;
        Fixture {
            api,
            client: client_config(&[ca.cert_der()], &[b"http/1.1"]),
            ca,
            sidecar,
            _app: app,
            _dir: dir,
        }
    }

    fn issue(&self) -> TestPair {
        self.ca.issue(LeafSpec::new(&[APP_NAME]))
    }

    async fn presented(&self) -> Option<CertificateDer<'static>> {
        presented(self.sidecar.addr, Arc::clone(&self.client)).await
    }

    async fn wait_for_leaf(&self, leaf: &CertificateDer<'static>, within: Duration) -> Duration {
        let start = Instant::now();
        wait_until("the sidecar presents the expected leaf", within, || async {
            self.presented().await.as_ref() == Some(leaf)
        })
        .await;
        start.elapsed()
    }

    async fn metrics(&self) -> Metrics {
        let (status, body) = http_get(self.sidecar.admin, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        Metrics::parse(&body)
    }

    async fn failures(&self) -> f64 {
        let labels = [("source", SOURCE), ("result", "failure")];
        self.metrics().await.value(RELOADS, &labels)
    }

    async fn wait_for_failures(&self, at_least: f64) {
        wait_until("the refused Secret is counted", WAIT, || async {
            self.failures().await >= at_least
        })
        .await;
    }

    async fn ws(
        &self,
    ) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>
    {
        ws_connect(self.sidecar.addr, APP_NAME, Arc::clone(&self.client))
            .await
            .unwrap_or_else(|e| panic!("websocket through the sidecar: {e}"))
    }

    /// The reasons of the Events posted about our pod.
    fn event_reasons(&self) -> Vec<String> {
        self.api
            .list(EVENTS)
            .iter()
            .filter(|e| e["regarding"]["name"] == POD && e["regarding"]["kind"] == "Pod")
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    }
}

/// The leaf a fresh handshake for [`APP_NAME`] is shown, or `None` if the handshake fails.
async fn presented(addr: SocketAddr, config: Arc<ClientConfig>) -> Option<CertificateDer<'static>> {
    tls_connect(addr, APP_NAME, config)
        .await
        .ok()
        .map(|tls| peer_leaf(&tls))
}

#[tokio::test]
async fn a_secret_created_updated_and_corrupted_serves_the_last_good_pair() {
    let fx = Fixture::start(FakeApi::start().await, TestCa::new("secret CA")).await;
    assert_eq!(
        fx.presented().await,
        None,
        "nothing to serve before the Secret exists"
    );

    // Created: the first pair is served.
    let first = fx.issue();
    fx.api.seed(SECRET, tls_secret(&first));
    fx.wait_for_leaf(&first.leaf_der, WAIT).await;
    let mut before_update = fx.ws().await;
    assert_echo(&mut before_update, Message::text("pair 1")).await;

    // Updated with a new key pair: served within 2 s; the open WebSocket is untouched.
    let second = fx.issue();
    assert_ne!(second.key_pem, first.key_pem);
    fx.api.seed(SECRET, tls_secret(&second));
    let took = fx.wait_for_leaf(&second.leaf_der, UPDATE_DEADLINE).await;
    eprintln!("update served after {took:?}");
    assert_echo(&mut before_update, Message::text("after the update")).await;
    let mut before_corruption = fx.ws().await;

    // Corrupted (the key of another certificate): refused, counted, the second pair stays.
    let failures = fx.failures().await;
    fx.api
        .seed(SECRET, tls_secret(&fx.issue().with_key_of(&first)));
    fx.wait_for_failures(failures + 1.0).await;
    assert_eq!(fx.presented().await.as_ref(), Some(&second.leaf_der));
    assert_echo(&mut before_update, Message::text("after the corruption")).await;
    assert_echo(&mut before_corruption, Message::text("still here")).await;

    // Truncated PEM, then deleted: the same.
    fx.api.seed(SECRET, tls_secret(&second.truncated()));
    fx.wait_for_failures(failures + 2.0).await;
    fx.api.delete(SECRET);
    fx.wait_for_failures(failures + 3.0).await;
    assert_eq!(fx.presented().await.as_ref(), Some(&second.leaf_der));
    assert_echo(&mut before_corruption, Message::text("after the delete")).await;

    // The refusals reached `kubectl describe pod` as Events.
    wait_until(
        "a CertificateReloadFailed event on the pod",
        WAIT,
        || async {
            fx.event_reasons()
                .iter()
                .any(|r| r == "CertificateReloadFailed")
        },
    )
    .await;
    // The example Role allowed all of it.
    assert_eq!(fx.api.denied(), Vec::new());
}

#[tokio::test]
async fn watch_interruptions_are_recovered_without_a_restart() {
    let api = FakeApi::start().await;
    let ca = TestCa::new("secret CA");
    let first = ca.issue(LeafSpec::new(&[APP_NAME]));
    api.seed(SECRET, tls_secret(&first));
    let mut fx = Fixture::start(api, ca).await;
    fx.wait_for_leaf(&first.leaf_der, WAIT).await;
    let pid = fx.sidecar.child.id();
    let mut ws = fx.ws().await;

    // The stream is closed (an API server restart): the watch resumes and sees the update.
    fx.api.close_watches();
    let second = fx.issue();
    fx.api.seed(SECRET, tls_secret(&second));
    fx.wait_for_leaf(&second.leaf_der, WAIT).await;

    // History compacted: resuming gets 410 Gone, the watch lists again and sees the update.
    let lists = fx
        .api
        .requests_matching("GET /api/v1/namespaces/team/secrets?&fieldSelector");
    fx.api.compact();
    let third = fx.issue();
    fx.api.seed(SECRET, tls_secret(&third));
    fx.wait_for_leaf(&third.leaf_der, WAIT).await;
    let relists = fx
        .api
        .requests_matching("GET /api/v1/namespaces/team/secrets?&fieldSelector")
        - lists;
    assert!(relists >= 1, "no list after 410 Gone");

    // The API server fails for a while (500s), then is back. kube's watcher backs off
    // exponentially (0.8 s, doubling, reset after two quiet minutes), so this phase, coming
    // after the 410 above, may take several seconds.
    let secrets = "/api/v1/namespaces/team/secrets";
    fx.api.fail(hyper::Method::GET, secrets, 500, Some(2));
    fx.api.close_watches();
    let fourth = fx.issue();
    fx.api.seed(SECRET, tls_secret(&fourth));
    fx.wait_for_leaf(&fourth.leaf_der, Duration::from_secs(30))
        .await;

    assert_echo(&mut ws, Message::text("same connection throughout")).await;
    assert_eq!(fx.sidecar.child.id(), pid, "the same process throughout");
    assert!(
        fx.sidecar.child.try_wait().unwrap().is_none(),
        "still running"
    );
    assert_eq!(
        fx.failures().await,
        0.0,
        "a broken watch is not a refused certificate"
    );
}

#[tokio::test]
async fn without_permission_for_events_it_warns_once_and_keeps_serving() {
    let api = FakeApi::start().await;
    api.fail(hyper::Method::POST, EVENTS, 403, None);
    let ca = TestCa::new("secret CA");
    let first = ca.issue(LeafSpec::new(&[APP_NAME]));
    api.seed(SECRET, tls_secret(&first));
    let fx = Fixture::start(api, ca).await;
    fx.wait_for_leaf(&first.leaf_der, WAIT).await;

    for (n, pair) in [first.truncated(), fx.issue().with_key_of(&first)]
        .iter()
        .enumerate()
    {
        fx.api.seed(SECRET, tls_secret(pair));
        fx.wait_for_failures(n as f64 + 1.0).await;
    }
    let warned = |logs: &[String]| {
        logs.iter()
            .filter(|l| l.contains("does not allow creating events"))
            .count()
    };
    wait_until("the missing permission is logged", WAIT, || async {
        warned(&fx.sidecar.logs()) == 1
    })
    .await;
    assert_eq!(fx.event_reasons(), Vec::<String>::new());
    assert_eq!(fx.presented().await.as_ref(), Some(&first.leaf_der));
    assert_eq!(warned(&fx.sidecar.logs()), 1, "warned once, not per event");
}

#[tokio::test]
async fn a_forbidden_secret_is_retried_until_the_role_allows_it() {
    let api = FakeApi::start().await;
    api.fail(
        hyper::Method::GET,
        "/api/v1/namespaces/team/secrets",
        403,
        None,
    );
    let ca = TestCa::new("secret CA");
    let first = ca.issue(LeafSpec::new(&[APP_NAME]));
    api.seed(SECRET, tls_secret(&first));
    let fx = Fixture::start(api, ca).await;
    wait_until("the refusal is logged", WAIT, || async {
        fx.sidecar.logs().iter().any(|l| l.contains("403"))
    })
    .await;
    assert_eq!(fx.presented().await, None);
    fx.api.clear_faults();
    fx.wait_for_leaf(&first.leaf_der, Duration::from_secs(30))
        .await;
}

#[tokio::test]
async fn start_up_errors_name_the_flag() {
    let (code, stderr) = run_to_exit(&["proxy", "--cert-secret", "Team/Web"], &[]).await;
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("--cert-secret"), "{stderr}");
    assert!(stderr.contains("namespace \"Team\""), "{stderr}");

    // No service account and no kubeconfig: nothing to reach the API with.
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("no-kubeconfig");
    let env = [
        ("HOME", home.path().to_str().unwrap()),
        ("KUBECONFIG", missing.to_str().unwrap()),
        ("KUBERNETES_SERVICE_HOST", ""),
    ];
    let (code, stderr) = run_to_exit(&["proxy", "--cert-secret", "web-tls"], &env).await;
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("--cert-secret"), "{stderr}");
}
