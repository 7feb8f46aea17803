//! Helpers for the client-identity tests: clients that present a certificate, and reading
//! what the upstream received before the client's bytes.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::IO_TIMEOUT;
use super::certs::TestPair;

/// A client trusting `roots` that presents `cert` (or no certificate), offering `http/1.1`,
/// without resumption (every connection shows its certificate in a full handshake).
pub fn mtls_client(
    roots: &[CertificateDer<'static>],
    cert: Option<&TestPair>,
) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("test root is acceptable");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .with_root_certificates(store);
    let mut config = match cert {
        Some(pair) => builder
            .with_client_auth_cert(pair.cert_chain_der(), pair.key_der())
            .expect("usable client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Reads from `upstream` until `done` says the bytes so far are enough (or panics after
/// [`IO_TIMEOUT`] or at the end of the stream), and returns them.
pub async fn read_until(upstream: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !done(&got) {
        let n = tokio::time::timeout(IO_TIMEOUT, upstream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("upstream got only {:?}", String::from_utf8_lossy(&got)))
            .expect("upstream read");
        assert!(
            n > 0,
            "upstream stream ended after {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
    }
    got
}
