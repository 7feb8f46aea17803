//! The injector as tests drive it: a sidecar template from real flags, and AdmissionReview
//! requests shaped as the API server sends them.

use clap::Parser;
use serde_json::{Value, json};
use wss_sidecar::config::{Cli, Command, InjectorArgs};
use wss_sidecar::injector::SidecarTemplate;

/// The image every test sidecar uses: this release's, so that the injector injects everything
/// it knows (an older tag would leave out what that release lacks: `injector::skew`).
pub const TEST_IMAGE: &str = concat!("registry.example/wss-sidecar:", env!("CARGO_PKG_VERSION"));

/// `wss-sidecar injector --sidecar-image TEST_IMAGE EXTRA…`, parsed as the binary would.
pub fn injector_args(extra: &[&str]) -> InjectorArgs {
    let argv = ["wss-sidecar", "injector", "--sidecar-image", TEST_IMAGE];
    let argv = argv.iter().chain(extra).copied();
    match Cli::try_parse_from(argv).map(|cli| cli.command) {
        Ok(Command::Injector(args)) => args,
        other => panic!("injector flags {extra:?} do not parse: {other:?}"),
    }
}

/// The template those flags describe.
pub fn template(extra: &[&str]) -> SidecarTemplate {
    let args = injector_args(&[&["--cert-dir", "/"], extra].concat());
    args.into_config()
        .unwrap_or_else(|e| panic!("injector flags {extra:?}: {e}"))
        .template
}

/// An `AdmissionReview` v1 for creating `pod` in `namespace`, with every field the API server
/// fills in (`uid`, `kind`, `resource`, `userInfo`, `options`, `dryRun`, …).
pub fn admission_review(uid: &str, namespace: &str, pod: &Value) -> Value {
    let mut review = json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "5e0c6c9b-2a3f-4d1e-9a7b-3f1c0e2d4b5a",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    });
    // `name` is omitted, not null, for a pod created from generateName.
    if let Some(name) = pod["metadata"]["name"].as_str() {
        review["request"]["name"] = json!(name);
    }
    review
}

/// The DNS name the API server uses for the webhook Service.
pub const SERVICE_NAME: &str = "wss-sidecar-injector.wss-sidecar.svc";

/// The injector run in-process over HTTPS on a free port, serving a certificate for
/// [`SERVICE_NAME`] from a fresh CA, with a client that trusts only that CA.
pub struct TestInjector {
    pub addr: std::net::SocketAddr,
    /// Its admin endpoint (`/metrics`, `/healthz`, `/readyz`), on another free port.
    pub admin: std::net::SocketAddr,
    pub client: std::sync::Arc<rustls::ClientConfig>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), wss_sidecar::injector::RunError>>,
    _cert_dir: tempfile::TempDir,
}

impl TestInjector {
    /// `injector --cert-dir DIR --listen 127.0.0.1:0 EXTRA…`.
    pub async fn start(extra: &[&str]) -> TestInjector {
        super::install_crypto_provider();
        let ca = super::TestCa::new("injector CA");
        let cert_dir = tempfile::tempdir().expect("tempdir");
        super::write_plain_pair(
            cert_dir.path(),
            &ca.issue(super::LeafSpec::new(&[SERVICE_NAME])),
        );
        let dir = cert_dir
            .path()
            .to_str()
            .expect("utf-8 temp path")
            .to_string();
        let mut flags = vec!["--cert-dir", dir.as_str(), "--listen", "127.0.0.1:0"];
        flags.extend(extra);
        let args = injector_args(&flags);
        let https = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = https.local_addr().expect("local addr");
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let admin = admin_listener.local_addr().expect("local addr");
        let listeners = wss_sidecar::injector::Listeners {
            https,
            admin: Some(admin_listener),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = args.into_config().expect("a valid injector configuration");
        let task = tokio::spawn(wss_sidecar::injector::run(config, listeners, async move {
            let _ = stopped.await;
        }));
        TestInjector {
            addr,
            admin,
            client: super::client_config(&[ca.cert_der()], &[b"http/1.1"]),
            stop: Some(stop),
            task,
            _cert_dir: cert_dir,
        }
    }

    /// One HTTP/1.1 request over a fresh TLS connection: see [`https_request`].
    pub async fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        https_request(self.addr, self.client.clone(), method, path, body).await
    }

    /// Stops it and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(super::IO_TIMEOUT, &mut self.task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "injector did not stop cleanly: {result:?}"
        );
    }
}

/// One HTTP/1.1 request over a fresh TLS connection, written and read as raw bytes so the
/// test sees exactly what the API server would. Returns the status and the body.
pub async fn https_request(
    addr: std::net::SocketAddr,
    client: std::sync::Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = super::tls_connect(addr, SERVICE_NAME, client)
        .await
        .expect("TLS connect to the injector");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {SERVICE_NAME}:443\r\n\
         Content-Type: application/json\r\nAccept: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("write head");
    // A server refusing the body answers and closes before reading it all: keep going and
    // read its answer.
    let _ = tls.write_all(body).await;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(super::IO_TIMEOUT, tls.read_to_end(&mut raw)).await;
    // A server may end without close_notify once it sent Content-Length bytes; keep them.
    if let Ok(Err(err)) = read {
        let kind = err.kind();
        let expected = [
            std::io::ErrorKind::UnexpectedEof,
            std::io::ErrorKind::ConnectionReset,
        ];
        assert!(expected.contains(&kind), "read: {err}");
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    (status, raw[split + 4..].to_vec())
}
