//! The README's contract: two set-up commands; the first runs the demo behind the proxy and
//! prints a URL that serves the page and the wss:// echo with a self-signed certificate.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// Accepts any certificate, exactly like a person clicking through the browser's warning for
/// the demo's self-signed certificate. Records what it was shown.
#[derive(Debug)]
struct AcceptAnything(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn accept_anything_config() -> Arc<rustls::ClientConfig> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let verifier = AcceptAnything(provider.signature_verification_algorithms);
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn demo_prints_a_url_that_serves_the_page_and_the_wss_echo() {
    install_crypto_provider();
    let mut child = tokio::process::Command::new(process::binary())
        .args(["demo", "--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args(["--app-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(at) = line.find("https://") {
                return line[at..].split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("demo exited without printing an https:// URL");
    })
    .await
    .expect("demo printed no URL within 20 s");
    let port: u16 = url
        .trim_start_matches("https://localhost:")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("unexpected URL {url}"));
    let addr = format!("127.0.0.1:{port}").parse().unwrap();

    // The page, over TLS, from the self-signed certificate for localhost.
    let config = accept_anything_config();
    let mut tls = tls_connect(addr, "localhost", Arc::clone(&config))
        .await
        .unwrap();
    assert!(leaf_names(&peer_leaf(&tls)).contains(&"localhost".to_string()));
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_string(&mut page)).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("wss-sidecar demo") && page.contains("wss://"),
        "{page}"
    );
    drop(tls);

    // The page's script opens wss://<same origin>/ws: do the same.
    let mut ws = ws_connect(addr, "localhost", config).await.unwrap();
    assert_echo(&mut ws, Message::text("hello from the quick start")).await;

    // The demo stops cleanly on Ctrl-C.
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    drop(ws);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The README's quick start is exactly two commands: the demo, and the test script that
/// `.ci/run` also calls.
#[test]
fn readme_quick_start_has_the_two_commands_ci_runs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let start = readme
        .find("## Quick start")
        .expect("a Quick start section");
    let section = &readme[start..];
    let block = section
        .split("```")
        .nth(1)
        .expect("a code block in the quick start");
    let commands: Vec<&str> = block
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        commands.len(),
        2,
        "exactly two set-up commands: {commands:?}"
    );
    assert!(
        commands[0].ends_with("-- demo"),
        "the first runs the demo: {}",
        commands[0]
    );
    let ci = std::fs::read_to_string(format!("{root}/.ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == commands[1]),
        ".ci/run must call the README's test command {:?}",
        commands[1]
    );
}
