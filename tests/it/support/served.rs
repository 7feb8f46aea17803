//! A proxy serving `app.test` from a certificate directory, and a client config trusting its CA.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;

use super::certs::{LeafSpec, TestCa, TestPair};
use super::client::{client_config, tls_connect, ws_connect};
use super::kubelet::write_plain_pair;
use super::proxy::{TestProxy, serving_args};

/// The name the proxy's certificate carries and every [`Served`] client asks for.
pub const APP_NAME: &str = "app.test";

/// A ready proxy forwarding to an upstream the test chose, with its certificate from
/// `cert_dir`, and a client configuration that trusts the CA that issued it.
pub struct Served {
    /// The CA behind the served certificate, to issue more leaves or build other clients.
    pub ca: TestCa,
    /// Trusts only `ca`, offers `http/1.1`, never resumes.
    pub client: Arc<ClientConfig>,
    pub proxy: TestProxy,
    /// The proxy's one `--cert-dir`, removed when this is dropped.
    pub cert_dir: TempDir,
}

impl Served {
    /// A fresh CA, a leaf for [`APP_NAME`] from it as plain files, and
    /// `proxy --upstream UPSTREAM --cert-dir DIR EXTRA…`.
    pub async fn start(upstream: &str, extra: &[&str]) -> Served {
        let ca = TestCa::new("served CA");
        let pair = ca.issue(LeafSpec::new(&[APP_NAME]));
        Self::start_with(&ca, &pair, upstream, extra).await
    }

    /// Like [`Served::start`], serving `pair` (issued by `ca`) as plain files.
    pub async fn start_with(
        ca: &TestCa,
        pair: &TestPair,
        upstream: &str,
        extra: &[&str],
    ) -> Served {
        let cert_dir = tempfile::tempdir().expect("tempdir");
        write_plain_pair(cert_dir.path(), pair);
        Self::start_in(ca, cert_dir, upstream, extra).await
    }

    /// Like [`Served::start`], with the TLS listener bound to `tls_bind` (e.g. `[::1]:0`).
    pub async fn start_on(tls_bind: &str, upstream: &str, extra: &[&str]) -> Served {
        let ca = TestCa::new("served CA");
        let cert_dir = tempfile::tempdir().expect("tempdir");
        write_plain_pair(cert_dir.path(), &ca.issue(LeafSpec::new(&[APP_NAME])));
        Self::start_bound(tls_bind, &ca, cert_dir, upstream, extra).await
    }

    /// Like [`Served::start`], on a directory the caller laid out (kubelet-style, symlinks).
    pub async fn start_in(
        ca: &TestCa,
        cert_dir: TempDir,
        upstream: &str,
        extra: &[&str],
    ) -> Served {
        Self::start_bound("127.0.0.1:0", ca, cert_dir, upstream, extra).await
    }

    async fn start_bound(
        tls_bind: &str,
        ca: &TestCa,
        cert_dir: TempDir,
        upstream: &str,
        extra: &[&str],
    ) -> Served {
        let args = serving_args(upstream, cert_dir.path(), extra);
        let proxy = TestProxy::start_on(tls_bind, &args).await;
        Served {
            ca: ca.clone(),
            client: client_config(&[ca.cert_der()], &[b"http/1.1"]),
            proxy,
            cert_dir,
        }
    }

    /// The certificate directory's path.
    pub fn cert_dir(&self) -> &Path {
        self.cert_dir.path()
    }

    /// `dir:<path>`, the `source` label of this directory's certificate metrics.
    pub fn source(&self) -> String {
        format!("dir:{}", self.cert_dir().display())
    }

    /// A client trusting the CA that offers `alpn` instead of `http/1.1`.
    pub fn client_offering(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        client_config(&[self.ca.cert_der()], alpn)
    }

    /// A TLS connection through the proxy as [`APP_NAME`].
    pub async fn tls(&self) -> std::io::Result<TlsStream<TcpStream>> {
        tls_connect(self.proxy.addr, APP_NAME, Arc::clone(&self.client)).await
    }

    /// A WebSocket through the proxy to `wss://app.test:PORT/ws`.
    pub async fn ws(&self) -> Result<WebSocketStream<TlsStream<TcpStream>>, String> {
        ws_connect(self.proxy.addr, APP_NAME, Arc::clone(&self.client)).await
    }
}
