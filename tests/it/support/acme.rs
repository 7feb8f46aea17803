//! ACME helpers shared by the Pebble tests: the names and addresses, the sidecar's `--acme-*`
//! flags, waiting for issuance and renewal, the replicas' Pebble, and the fixture of replicas
//! sharing an ACME Secret through the in-process API server ([`SecretStoreCluster`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hyper::Method;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use super::fake_api::{FakeApi, example_role};
use super::pebble::{Pebble, PebbleOptions, free_addr};
use super::proxy::Metrics;
use super::*;

/// The names of the certificate every ACME test asks for, one per replica: replica i listens
/// on [`IPS`]\[i\] and, where a test has several replicas, the CA's DNS sends name i there, so
/// whichever replica orders, the others must answer a validation each. (Unmapped, every name
/// resolves to 127.0.0.1, where a lone sidecar listens.)
pub const NAMES: [&str; 3] = ["r1.acme.test", "r2.acme.test", "r3.acme.test"];

pub const IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];

/// How long issuance may take on a loaded machine (Pebble alone takes well under a second).
pub const ISSUE_TIMEOUT: Duration = Duration::from_secs(60);

/// The sidecar's orders counter.
pub const ORDERS: &str = "wss_sidecar_acme_orders_total";

/// `--acme-*` flags for `names` from `pebble`, the state in `store`, the self-check pointed at
/// what Pebble dials ([`self_check_args`], unless `extra` has self-check flags), then `extra`.
pub fn acme_args(pebble: &Pebble, store: &TempDir, names: &[&str], extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--acme-directory".to_string(),
        pebble.directory.clone(),
        "--acme-ca-root".into(),
        pebble.ca_root.display().to_string(),
        "--acme-store".into(),
        store.path().display().to_string(),
        "--acme-email".into(),
        "ops@acme.test".into(),
        "--acme-poll-interval".into(),
        "200ms".into(),
    ];
    // A test that sets any self-check flag sets all it needs itself.
    if !extra
        .iter()
        .any(|f| f.starts_with("--acme-self-check") || f.starts_with("--acme-resolver"))
    {
        args.extend(self_check_args(pebble));
    }
    for name in names {
        args.extend(["--acme-domain".to_string(), name.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The self-check dials what Pebble dials: its DNS, its validation ports.
pub fn self_check_args(pebble: &Pebble) -> Vec<String> {
    vec![
        "--acme-resolver".into(),
        pebble.dns().to_string(),
        "--acme-self-check-tls-port".into(),
        pebble.tls_port.to_string(),
        "--acme-self-check-http-port".into(),
        pebble.http_port.to_string(),
    ]
}

/// `/readyz` without a certificate while an ACME challenge is being answered.
pub const READY_SOLVING: &str = "ready: answering an ACME challenge, no certificate yet\n";

/// `/readyz` with a certificate loaded (not merely answering a challenge).
pub const READY_WITH_CERT: &str = "ready\n";

/// Waits until the proxy is ready with a certificate, with a generous timeout for issuance.
pub async fn wait_issued(proxy: &TestProxy) {
    wait_ready_with_cert(proxy.admin).await;
}

/// Waits until the admin endpoint at `admin` says ready with a certificate loaded.
pub async fn wait_ready_with_cert(admin: SocketAddr) {
    wait_until(
        "the ACME certificate is issued and /readyz is 200",
        ISSUE_TIMEOUT,
        || async move {
            http_get(admin, "/readyz")
                .await
                .is_ok_and(|(status, body)| status == 200 && body == READY_WITH_CERT)
        },
    )
    .await;
}

/// A WebSocket echo through `proxy` as `name`, trusting only Pebble's current roots; returns
/// the leaf the proxy presented.
pub async fn echo_as(
    pebble: &Pebble,
    addr: std::net::SocketAddr,
    name: &str,
) -> rustls_pki_types::CertificateDer<'static> {
    let config = client_config(&pebble.issuer_roots().await, &[b"http/1.1"]);
    let tls = tls_connect(addr, name, config.clone())
        .await
        .unwrap_or_else(|e| panic!("tls as {name}: {e}"));
    let leaf = peer_leaf(&tls);
    let mut ws = ws_connect(addr, name, config).await.expect("websocket");
    assert_echo(&mut ws, Message::text("hello over acme")).await;
    leaf
}

/// `--acme-renew-before` that renews right after every issuance: longer than any certificate
/// Pebble issues.
pub const ALWAYS_RENEW: &str = "100000d";

/// Waits until a fresh handshake as `name` at `addr` shows a leaf other than `old`.
pub async fn wait_for_new_leaf(
    addr: std::net::SocketAddr,
    name: &str,
    config: &std::sync::Arc<rustls::ClientConfig>,
    old: &rustls_pki_types::CertificateDer<'static>,
) {
    wait_until("a renewed certificate is served", ISSUE_TIMEOUT, || async {
        match tls_connect(addr, name, config.clone()).await {
            Ok(tls) => peer_leaf(&tls) != *old,
            Err(_) => false,
        }
    })
    .await;
}

/// A port free on all three loopback addresses.
pub async fn port_free_on_all() -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind((IPS[0], 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut others = Vec::new();
        for ip in &IPS[1..] {
            match TcpListener::bind((*ip, port)).await {
                Ok(listener) => others.push(listener),
                Err(_) => break,
            }
        }
        if others.len() == IPS.len() - 1 {
            return port;
        }
    }
    panic!("no port free on all of {IPS:?}");
}

pub async fn scrape(admin: SocketAddr) -> Metrics {
    let (status, body) = http_get(admin, "/metrics").await.expect("scrape");
    assert_eq!(status, 200);
    Metrics::parse(&body)
}

/// Pebble validating on a port free on all of [`IPS`], with name i resolving to address i;
/// returns it and the port.
pub async fn pebble_for_replicas() -> (Pebble, u16) {
    let port = port_free_on_all().await;
    let pebble = Pebble::start(PebbleOptions {
        tls_port: port,
        http_port: free_addr().await.port(),
        eab: None,
    })
    .await;
    for (name, ip) in NAMES.iter().zip(IPS) {
        pebble.add_a(name, ip).await;
    }
    (pebble, port)
}

/// Replica i logged answering the TLS-ALPN-01 validation of name i.
pub fn assert_each_answered_its_name(replicas: &[Sidecar]) {
    for (i, replica) in replicas.iter().enumerate() {
        let answered = replica
            .logs()
            .iter()
            .any(|l| l.contains("answering a tls-alpn-01 challenge") && l.contains(NAMES[i]));
        assert!(
            answered,
            "replica {i} answered the validation of {}",
            NAMES[i]
        );
    }
}

// The fixture of replicas sharing one ACME Secret (`--acme-store secret:…`).

pub const NS: &str = "team";

/// The store's name: the example Role grants exactly this one.
pub const STORE: &str = "chat-acme";

pub const SECRET: &str = "/api/v1/namespaces/team/secrets/chat-acme";

/// The store's account Secret (`NAME-account`).
pub const ACCOUNT_SECRET: &str = "/api/v1/namespaces/team/secrets/chat-acme-account";

/// Makes the ACME store `name`'s three objects in `namespace` as the chart (or the documented
/// `kubectl create`) does before any sidecar runs: the sidecar creates none of them.
pub fn seed_acme_store(api: &FakeApi, namespace: &str, name: &str) {
    let meta = |name: &str| serde_json::json!({"name": name, "namespace": namespace});
    let secrets = format!("/api/v1/namespaces/{namespace}/secrets");
    api.seed(
        &format!("{secrets}/{name}"),
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta(name),
                           "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}),
    );
    let account = format!("{name}-account");
    api.seed(
        &format!("{secrets}/{account}"),
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta(&account),
                           "type": "Opaque"}),
    );
    api.seed(
        &format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"),
        serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                           "metadata": meta(name), "spec": {}}),
    );
}

pub const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/team/leases/chat-acme";

pub const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/team/leases";

pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team/events";

/// What Pebble logs for each order placed.
pub const NEW_ORDER: &str = "POST /order-plz";

/// Pebble, the API server with the example Role in force, and the echo app.
pub struct SecretStoreCluster {
    pub api: FakeApi,
    pub pebble: Pebble,
    app: EchoServer,
    port: u16,
    kubeconfig: PathBuf,
    _dir: TempDir,
}

impl SecretStoreCluster {
    pub async fn start() -> SecretStoreCluster {
        let (pebble, port) = pebble_for_replicas().await;
        let api = FakeApi::start().await;
        let (namespace, rules) = example_role();
        assert_eq!(namespace, NS);
        api.enforce_role(&namespace, rules);
        seed_acme_store(&api, NS, STORE);
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path(), NS);
        SecretStoreCluster {
            api,
            pebble,
            app: EchoServer::start_tcp().await,
            port,
            kubeconfig,
            _dir: dir,
        }
    }

    /// Replica `i` (0-based) on 127.0.0.(i+1), as pod `chat-i`, ordering every name, with
    /// `extra` flags.
    pub async fn replica(&self, i: usize, extra: &[&str]) -> Sidecar {
        let mut args = vec![
            "--upstream".to_string(),
            self.app.addr().to_string(),
            "--acme-directory".into(),
            self.pebble.directory.clone(),
            "--acme-ca-root".into(),
            self.pebble.ca_root.display().to_string(),
            "--acme-store".into(),
            format!("secret:{STORE}"),
            "--acme-email".into(),
            "ops@acme.test".into(),
        ];
        args.extend(self_check_args(&self.pebble));
        args.extend(extra.iter().map(|s| s.to_string()));
        for name in NAMES {
            args.extend(["--acme-domain".to_string(), name.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let pod = format!("chat-{i}");
        let env = [
            ("KUBECONFIG", self.kubeconfig.to_str().unwrap()),
            ("POD_NAME", pod.as_str()),
            ("POD_NAMESPACE", NS),
            ("HOSTNAME", pod.as_str()),
        ];
        Sidecar::spawn_with_env(&format!("{}:{}", IPS[i], self.port), &args, &env).await
    }

    /// Starts three replicas that cannot take the Lease (403) until all three listen, so no
    /// validation reaches a replica that is not up yet; then lets them race for it.
    pub async fn replicas(&self, poll_interval: &str, lease_duration: &str) -> Vec<Sidecar> {
        let extra = [
            "--acme-poll-interval",
            poll_interval,
            "--acme-lease-duration",
            lease_duration,
        ];
        self.api.fail(Method::GET, LEASES, 403, None);
        let mut replicas = Vec::new();
        for i in 0..IPS.len() {
            replicas.push(self.replica(i, &extra).await);
        }
        self.api.clear_faults();
        replicas
    }

    /// The distinct holders the Lease has had.
    pub fn lease_holders(&self) -> BTreeSet<String> {
        self.api
            .history(LEASE)
            .iter()
            .filter_map(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
            .filter(|h| !h.is_empty())
            .collect()
    }

    pub fn orders_placed(&self) -> usize {
        self.pebble.requests_logged(NEW_ORDER)
    }

    /// Every name, through the replica the DNS sends it to, shows the same issued leaf.
    pub async fn assert_all_serve(&self, replicas: &[(usize, &Sidecar)]) {
        let mut leaves = Vec::new();
        for (i, replica) in replicas {
            leaves.push(echo_as(&self.pebble, replica.addr, NAMES[*i]).await);
        }
        assert!(
            leaves.iter().all(|l| *l == leaves[0]),
            "all replicas serve the one issued certificate"
        );
    }
}

/// Waits until `replica` is ready with the certificate (issuance may take a while on a loaded
/// machine).
pub async fn wait_ready(replica: &Sidecar) {
    wait_ready_with_cert(replica.admin).await;
}
