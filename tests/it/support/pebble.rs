//! The real Pebble ACME server and pebble-challtestsrv (its DNS), from Debian's `pebble`
//! package, started on free ports as child processes that die with the test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use super::certs::{LeafSpec, TestCa};
use super::child::{Process, spawn_collector};
use super::client::client_config;

/// How long Pebble and the DNS server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What the CA validates against.
pub struct PebbleOptions {
    /// The port Pebble's TLS-ALPN-01 validation connects to (the sidecar's wss port).
    pub tls_port: u16,
    /// The port Pebble's HTTP-01 validation connects to (the sidecar's --http-listen).
    pub http_port: u16,
    /// Require external account binding with this key id and base64url HMAC key.
    pub eab: Option<(&'static str, &'static str)>,
}

/// A running Pebble with its DNS server; test names resolve to 127.0.0.1 unless
/// [`Pebble::add_a`] says otherwise.
pub struct Pebble {
    /// `--acme-directory` for the sidecar.
    pub directory: String,
    /// `--acme-ca-root` for the sidecar: the root of Pebble's own HTTPS certificate.
    pub ca_root: PathBuf,
    /// The port Pebble's TLS-ALPN-01 validation dials (`--acme-self-check-tls-port`).
    pub tls_port: u16,
    /// The port Pebble's HTTP-01 validation dials (`--acme-self-check-http-port`).
    pub http_port: u16,
    ca: TestCa,
    listen: SocketAddr,
    management: SocketAddr,
    dns: SocketAddr,
    dns_management: SocketAddr,
    config: PathBuf,
    pebble: Option<Process>,
    _challtestsrv: Process,
    _dir: tempfile::TempDir,
}

impl Pebble {
    /// Starts pebble-challtestsrv, then Pebble, and waits until both listen.
    pub async fn start(options: PebbleOptions) -> Pebble {
        Pebble::start_on("127.0.0.1", options).await
    }

    /// Like [`Pebble::start`] with Pebble's ACME directory and its DNS server listening on `ip`
    /// (and its HTTPS certificate naming it): the cluster's pods reach them at the Node's
    /// bridge address.
    pub async fn start_on(ip: &str, options: PebbleOptions) -> Pebble {
        for program in ["pebble", "pebble-challtestsrv"] {
            assert!(
                std::process::Command::new("sh")
                    .args(["-c", &format!("command -v {program}")])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
                "{program} not found: run scripts/install-test-deps (Debian package pebble)"
            );
        }
        let dir = tempfile::tempdir().expect("pebble temp dir");
        let ca = TestCa::new("Pebble test HTTPS root");
        let pair = ca.issue(LeafSpec::new(&["127.0.0.1", "localhost", ip]));
        let ca_root = dir.path().join("pebble-https-root.pem");
        std::fs::write(&ca_root, ca.cert_pem()).expect("write root");
        std::fs::write(dir.path().join("cert.pem"), &pair.cert_pem).expect("write cert");
        std::fs::write(dir.path().join("key.pem"), &pair.key_pem).expect("write key");
        // The DNS server listens on `ip` too: a sidecar in a pod resolves through it
        // (`--acme-resolver`) for its self-check, as the CA does.
        let (listen, management, dns, dns_management) = (
            free_addr_on(ip).await,
            free_addr().await,
            free_addr_on(ip).await,
            free_addr().await,
        );
        let config = dir.path().join("pebble.json");
        let eab_keys: serde_json::Map<String, serde_json::Value> = options
            .eab
            .iter()
            .map(|(kid, key)| (kid.to_string(), serde_json::Value::from(*key)))
            .collect();
        let json = serde_json::json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": options.http_port,
                "tlsPort": options.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": options.eab.is_some(),
                "externalAccountMACKeys": eab_keys,
            }
        });
        std::fs::write(&config, json.to_string()).expect("write pebble config");

        let challtestsrv = spawn(
            "pebble-challtestsrv",
            Command::new("pebble-challtestsrv").args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &dns.to_string(),
                "-management",
                &dns_management.to_string(),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ]),
        );
        wait_listening("pebble-challtestsrv", dns_management).await;
        let mut pebble = Pebble {
            directory: format!("https://{listen}/dir"),
            ca_root,
            tls_port: options.tls_port,
            http_port: options.http_port,
            ca,
            listen,
            management,
            dns,
            dns_management,
            config,
            pebble: None,
            _challtestsrv: challtestsrv,
            _dir: dir,
        };
        pebble.start_pebble().await;
        pebble
    }

    async fn start_pebble(&mut self) {
        let mut command = Command::new("pebble");
        command
            .args(["-config", self.config.to_str().expect("utf-8 path")])
            .args(["-dnsserver", &self.dns.to_string()])
            // Validate at once, never refuse a nonce, never reuse an authorization: every
            // order really exercises the sidecar's challenge answers.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0");
        self.pebble = Some(spawn("pebble", &mut command));
        wait_listening("pebble", self.listen).await;
        wait_listening("pebble management", self.management).await;
    }

    /// The DNS server Pebble validates with (`--acme-resolver`, for the self-check).
    pub fn dns(&self) -> SocketAddr {
        self.dns
    }

    /// How many challenges the sidecar submitted (`POST /chalZ/…`) since Pebble's last start.
    pub fn challenges_submitted(&self) -> usize {
        self.requests_logged("POST /chalZ/")
    }

    /// Stops Pebble (the DNS server keeps running); the sidecar sees connections refused.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.pebble.take() {
            let _ = process.child.kill().await;
        }
    }

    /// Starts Pebble again on the same ports (with fresh state and a fresh issuing root).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_pebble().await;
    }

    /// How many requests Pebble logged (it logs each as `METHOD /path -> calling handler()`)
    /// whose line contains `needle`, since its last start: `POST /order-plz` counts the orders
    /// placed, whoever placed them.
    pub fn requests_logged(&self, needle: &str) -> usize {
        self.pebble.as_ref().map_or(0, |p| {
            p.output
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle) && l.contains("-> calling handler()"))
                .count()
        })
    }

    /// Makes `host` resolve to `ip` for Pebble's validation (besides any address it had).
    pub async fn add_a(&self, host: &str, ip: &str) {
        let body = serde_json::json!({ "host": host, "addresses": [ip] });
        self.dns_management_post("/add-a", &body).await;
    }

    /// Makes `host` resolve to `ip` only, as a Service does once a pod behind it is gone.
    pub async fn set_a(&self, host: &str, ip: &str) {
        let body = serde_json::json!({ "host": host });
        self.dns_management_post("/clear-a", &body).await;
        self.add_a(host, ip).await;
    }

    async fn dns_management_post(&self, path: &str, body: &serde_json::Value) {
        let body = body.to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {0}\r\nContent-Type: application/json\r\n\
             Content-Length: {1}\r\nConnection: close\r\n\r\n{body}",
            self.dns_management,
            body.len()
        );
        let mut tcp = TcpStream::connect(self.dns_management)
            .await
            .expect("connect challtestsrv");
        tcp.write_all(request.as_bytes()).await.expect("send add-a");
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.expect("read add-a");
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
    }

    /// The roots Pebble issues under now (it makes a new one at every start): what a client
    /// of the sidecar trusts.
    pub async fn issuer_roots(&self) -> Vec<CertificateDer<'static>> {
        let config = client_config(&[self.ca.cert_der()], &[]);
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let tcp = TcpStream::connect(self.management)
            .await
            .expect("connect management");
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("tls to pebble management");
        let request = "GET /roots/0 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        tls.write_all(request.as_bytes()).await.expect("send");
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let roots: Vec<_> = CertificateDer::pem_slice_iter(body.as_bytes())
            .map(|c| c.expect("root PEM"))
            .collect();
        assert!(!roots.is_empty(), "no root from pebble management: {text}");
        roots
    }
}

/// A free local port's address (bound and released; the race with other tests is small as
/// the kernel does not hand the same ephemeral port out again at once).
pub async fn free_addr() -> SocketAddr {
    free_addr_on("127.0.0.1").await
}

/// Like [`free_addr`] on `ip`.
pub async fn free_addr_on(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0))
        .await
        .unwrap_or_else(|e| panic!("bind a free port on {ip}: {e}"));
    listener.local_addr().expect("addr")
}

fn spawn(name: &'static str, command: &mut Command) -> Process {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let output = Arc::new(Mutex::new(Vec::new()));
    spawn_collector(child.stdout.take(), &output, "");
    spawn_collector(child.stderr.take(), &output, "");
    Process {
        name,
        child,
        output,
    }
}

async fn wait_listening(what: &str, addr: SocketAddr) {
    super::wait_until(
        &format!("{what} listens on {addr}"),
        START_TIMEOUT,
        || async move { TcpStream::connect(addr).await.is_ok() },
    )
    .await;
}
