//! Session tickets shared by replicas (issue 16, acceptance 3): two real sidecar processes
//! sharing the key Secret through the in-process API server resume each other's TLS 1.3
//! sessions; once the keys have rotated past a ticket it falls back to a full handshake; a key
//! Secret that fails to parse keeps the last good keys; TLS 1.2 gets no ticket. Two proxies
//! sharing a `file:` key resume each other's sessions too (the benchmark's set-up).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::{ClientConfig, HandshakeKind};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::Message;
use wss_sidecar::tls::tickets::KeyText;

use crate::support::fake_api::FakeApi;
use crate::support::kubelet::write_plain_pair;
use crate::support::proxy::{Metrics, TestProxy, serving_args};
use crate::support::rbac::Rule;
use crate::support::*;

const NS: &str = "team";
const KEYS_NAME: &str = "ws-tickets";
const SECRET: &str = "/api/v1/namespaces/team/secrets/ws-tickets";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/team/leases/ws-tickets";
const LOADS: &str = "wss_sidecar_tls_ticket_key_loads_total";
/// Bound for waits whose duration is not itself under test.
const WAIT: Duration = Duration::from_secs(15);

/// A client limited to `version` that keeps the tickets it gets (rustls' in-memory cache).
fn resuming_client(
    ca: &TestCa,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    let mut config = ClientConfig::builder_with_provider(wss_sidecar::tls::provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One WebSocket echo through `addr`; how the TLS handshake went. The echo also reads the
/// tickets the server sends after its handshake.
async fn echo(addr: SocketAddr, client: &Arc<ClientConfig>) -> HandshakeKind {
    let tls = tls_connect(addr, APP_NAME, Arc::clone(client))
        .await
        .unwrap();
    let kind = tls.get_ref().1.handshake_kind().unwrap();
    let url = format!("wss://{APP_NAME}:{}/ws", addr.port());
    let mut ws = ws_upgrade(tls, url).await.unwrap();
    assert_echo(&mut ws, Message::text("resumed?")).await;
    let _ = ws.close(None).await;
    kind
}

async fn metrics(admin: SocketAddr) -> Metrics {
    let (status, body) = http_get(admin, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    Metrics::parse(&body)
}

async fn loads(admin: SocketAddr, result: &str) -> f64 {
    metrics(admin).await.value(LOADS, &[("result", result)])
}

fn key_secret(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": KEYS_NAME, "namespace": NS}, "data": data})
}

/// The key text the Secret holds now.
fn stored_keys(api: &FakeApi) -> Option<Vec<u8>> {
    let secret = api.get(SECRET)?;
    let text = secret["data"]["ticket-keys"].as_str()?;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// The fake API with the key Secret and its Lease as the chart makes them (empty), two
/// sidecars using them, and the app behind both.
struct Replicas {
    api: FakeApi,
    ca: TestCa,
    a: Sidecar,
    b: Sidecar,
    _app: EchoServer,
    _dirs: (TempDir, TempDir),
}

impl Replicas {
    async fn start() -> Replicas {
        let api = FakeApi::start().await;
        // What the chart's sidecarAccess.ticketKeySecrets grants, and nothing else (no Events).
        let role = json!({"rules": [
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [KEYS_NAME],
             "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": [KEYS_NAME], "verbs": ["get", "update"]},
        ]});
        api.enforce_role(NS, Rule::from_role(&role));
        api.seed(SECRET, key_secret(json!({})));
        api.seed(
            LEASE,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": KEYS_NAME, "namespace": NS}}),
        );
        let ca = TestCa::new("tickets CA");
        let (certs, kube) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_plain_pair(certs.path(), &ca.issue(LeafSpec::new(&[APP_NAME])));
        let kubeconfig = api.write_kubeconfig(kube.path(), NS);
        let app = EchoServer::start_tcp().await;
        let upstream = app.addr().to_string();
        let secret = format!("secret:{KEYS_NAME}");
        let args = serving_args(&upstream, certs.path(), &["--ticket-keys", &secret]);
        let env = [
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("POD_NAMESPACE", NS),
        ];
        let a = Sidecar::spawn_with_env("127.0.0.1:0", &args, &env).await;
        let b = Sidecar::spawn_with_env("127.0.0.1:0", &args, &env).await;
        let replicas = Replicas {
            api,
            ca,
            a,
            b,
            _app: app,
            _dirs: (certs, kube),
        };
        // The Lease holder fills the empty Secret; both load what it wrote.
        replicas.wait_loaded(1.0).await;
        replicas
    }

    /// Waits until both sidecars have loaded keys `count` times.
    async fn wait_loaded(&self, count: f64) {
        for admin in [self.a.admin, self.b.admin] {
            wait_until("both sidecars load the keys", WAIT, || async {
                loads(admin, "success").await >= count
            })
            .await;
        }
    }

    /// Rotates the keys as the Lease holder does, and waits until both sidecars serve them.
    async fn rotate(&self, loaded_before: f64) {
        let keys = KeyText::parse(&stored_keys(&self.api).unwrap())
            .unwrap()
            .rotated()
            .unwrap();
        self.write_keys(keys.to_text().as_bytes());
        self.wait_loaded(loaded_before + 1.0).await;
    }

    fn write_keys(&self, text: &[u8]) {
        let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        // A rotated-at far in the future: the Lease holder leaves the test's keys alone.
        let data = json!({"ticket-keys": b64(text), "rotated-at": b64(b"2100-01-01T00:00:00Z")});
        self.api.seed(SECRET, key_secret(data));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_sharing_the_key_secret_resume_each_others_sessions_until_rotated_out() {
    let replicas = Replicas::start().await;
    let stored = KeyText::parse(&stored_keys(&replicas.api).expect("the holder wrote keys"));
    assert_eq!(stored.unwrap().len(), 3, "previous, current, next");

    let client = resuming_client(&replicas.ca, &rustls::version::TLS13);
    assert_eq!(echo(replicas.a.addr, &client).await, HandshakeKind::Full);
    assert_eq!(
        echo(replicas.b.addr, &client).await,
        HandshakeKind::Resumed,
        "A's ticket on B"
    );
    let old = resuming_client(&replicas.ca, &rustls::version::TLS13);
    assert_eq!(echo(replicas.b.addr, &old).await, HandshakeKind::Full);

    // One rotation: the ticket's key is now "previous" and still opens it.
    let loaded = loads(replicas.a.admin, "success").await;
    replicas.rotate(loaded).await;
    let once = resuming_client(&replicas.ca, &rustls::version::TLS13);
    assert_eq!(echo(replicas.a.addr, &once).await, HandshakeKind::Full);
    assert_eq!(echo(replicas.b.addr, &once).await, HandshakeKind::Resumed);
    // Two: `old`'s key is gone; a full handshake, and the connection works.
    replicas.rotate(loaded + 1.0).await;
    assert_eq!(echo(replicas.a.addr, &old).await, HandshakeKind::Full);
    let opens = metrics(replicas.a.admin).await;
    assert!(
        opens.value(
            "wss_sidecar_tls_ticket_opens_total",
            &[("result", "unknown_key")]
        ) >= 1.0
    );

    let denied = replicas.api.denied();
    assert!(denied.is_empty(), "the chart's Role is enough: {denied:?}");
    for sidecar in [&replicas.a, &replicas.b] {
        let logs = sidecar.logs().join("\n");
        for line in String::from_utf8(stored_keys(&replicas.api).unwrap())
            .unwrap()
            .lines()
        {
            assert!(!logs.contains(line), "a key in the logs");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_secret_that_fails_to_parse_keeps_the_last_good_keys() {
    let replicas = Replicas::start().await;
    let client = resuming_client(&replicas.ca, &rustls::version::TLS13);
    assert_eq!(echo(replicas.a.addr, &client).await, HandshakeKind::Full);
    replicas.write_keys(b"this is not base64\n");
    for admin in [replicas.a.admin, replicas.b.admin] {
        wait_until("the bad Secret is counted", WAIT, || async {
            loads(admin, "failure").await >= 1.0
        })
        .await;
    }
    assert_eq!(
        echo(replicas.b.addr, &client).await,
        HandshakeKind::Resumed,
        "the last good keys"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls12_clients_get_no_ticket_to_take_to_another_replica() {
    let replicas = Replicas::start().await;
    let client = resuming_client(&replicas.ca, &rustls::version::TLS12);
    assert_eq!(echo(replicas.a.addr, &client).await, HandshakeKind::Full);
    assert_eq!(echo(replicas.b.addr, &client).await, HandshakeKind::Full);
    let issued = metrics(replicas.a.admin)
        .await
        .value("wss_sidecar_tls_tickets_issued_total", &[]);
    assert_eq!(issued, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_proxies_sharing_a_key_file_resume_each_others_sessions() {
    let ca = TestCa::new("tickets CA");
    let dir = tempfile::tempdir().unwrap();
    write_plain_pair(dir.path(), &ca.issue(LeafSpec::new(&[APP_NAME])));
    let keys = dir.path().join("ticket-keys");
    std::fs::write(&keys, KeyText::random().unwrap().to_text()).unwrap();
    let app = EchoServer::start_tcp().await;
    let upstream = app.addr().to_string();
    let flag = format!("file:{}", keys.display());
    let args = serving_args(&upstream, dir.path(), &["--ticket-keys", &flag]);
    let (a, b) = (TestProxy::start(&args).await, TestProxy::start(&args).await);
    let client = resuming_client(&ca, &rustls::version::TLS13);
    assert_eq!(echo(a.addr, &client).await, HandshakeKind::Full);
    assert_eq!(echo(b.addr, &client).await, HandshakeKind::Resumed);
    // Each proxy alone (memory keys) does not resume the other's sessions.
    let args = serving_args(&upstream, dir.path(), &[]);
    let (c, d) = (TestProxy::start(&args).await, TestProxy::start(&args).await);
    let client = resuming_client(&ca, &rustls::version::TLS13);
    assert_eq!(echo(c.addr, &client).await, HandshakeKind::Full);
    assert_eq!(echo(d.addr, &client).await, HandshakeKind::Full);
}
