//! The certificate authority and the TLS and WebSocket clients, against a plain rustls server.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rustls::ServerConfig;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// A wss:// echo server built straight on tokio-rustls, standing in for the sidecar.
async fn spawn_wss_echo(pair: &TestPair, alpn: &[&[u8]]) -> SocketAddr {
    install_crypto_provider();
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(pair.cert_chain_der(), pair.key_der())
        .expect("server accepts the test pair");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.expect("accept");
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn every_key_kind_and_format_loads_and_matches_its_certificate() {
    let ca = TestCa::new("selftest ca");
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    for kind in KeyKind::ALL {
        for &format in kind.formats() {
            let what = format!("{kind:?}/{format:?}");
            let pair = ca.issue(LeafSpec::new(&["a.test"]).key(kind).key_format(format));
            let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes())
                .unwrap_or_else(|e| panic!("{what}: key PEM parses: {e}"));
            let variant_ok = match format {
                KeyFormat::Pkcs8 => matches!(key, PrivateKeyDer::Pkcs8(_)),
                KeyFormat::Pkcs1 => matches!(key, PrivateKeyDer::Pkcs1(_)),
                KeyFormat::Sec1 => matches!(key, PrivateKeyDer::Sec1(_)),
            };
            assert!(variant_ok, "{what}: parsed as the wrong variant");
            provider
                .key_provider
                .load_private_key(key.clone_key())
                .unwrap_or_else(|e| panic!("{what}: aws-lc-rs loads the key: {e}"));
            CertifiedKey::from_der(pair.cert_chain_der(), key, &provider)
                .unwrap_or_else(|e| panic!("{what}: key matches certificate: {e}"));

            let other = ca.issue(LeafSpec::new(&["b.test"]).key(kind).key_format(format));
            let mismatched = pair.with_key_of(&other);
            let err = CertifiedKey::from_der(
                mismatched.cert_chain_der(),
                mismatched.key_der(),
                &provider,
            );
            assert!(err.is_err(), "{what}: with_key_of must not match");
        }
    }
}

#[test]
fn sec1_keys_carry_named_curve_parameters() {
    // `[0]` wrapping the DER of the curve OIDs prime256v1 and secp384r1, as `openssl ec` writes.
    let p256 = [
        0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let p384 = [0xa0, 0x07, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    let ca = TestCa::new("selftest ca");
    for (kind, params) in [
        (KeyKind::EcdsaP256, &p256[..]),
        (KeyKind::EcdsaP384, &p384[..]),
    ] {
        let pair = ca.issue(
            LeafSpec::new(&["a.test"])
                .key(kind)
                .key_format(KeyFormat::Sec1),
        );
        assert!(pair.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
        let der = rustls::pki_types::PrivateSec1KeyDer::from_pem_slice(pair.key_pem.as_bytes())
            .expect("SEC1 PEM");
        let bytes = der.secret_sec1_der();
        assert!(
            bytes.windows(params.len()).any(|w| w == params),
            "{kind:?}: no [0] curve"
        );
    }
}

#[test]
fn chain_is_leaf_then_ca_and_truncation_breaks_it() {
    let ca = TestCa::new("selftest ca");
    let pair = ca.issue(LeafSpec::new(&["a.test", "b.test"]));
    let chain = pair.cert_chain_der();
    assert_eq!(chain, vec![pair.leaf_der.clone(), ca.cert_der()]);
    assert!(pair.cert_pem.ends_with(&ca.cert_pem()));
    assert_eq!(leaf_names(&pair.leaf_der), ["a.test", "b.test"]);

    let truncated = pair.truncated();
    assert!(truncated.cert_pem.len() < pair.cert_pem.len() / 2);
    assert!(!truncated.cert_pem.contains("-----END"));
    let parsed: Vec<_> =
        rustls::pki_types::CertificateDer::pem_slice_iter(truncated.cert_pem.as_bytes()).collect();
    assert!(
        parsed.iter().all(|c| c.is_err()),
        "a truncated PEM yields no certificate"
    );
    assert_eq!(truncated.key_pem, pair.key_pem);
}

#[tokio::test]
async fn tls_client_sees_the_served_leaf_and_rejects_bad_dates() {
    let ca = TestCa::new("selftest ca");
    let pair = ca.issue(LeafSpec::new(&["one.test", "two.test"]).key(KeyKind::Rsa2048));
    let addr = spawn_wss_echo(&pair, &[b"http/1.1"]).await;
    let config = client_config(&[ca.cert_der()], &[b"h2", b"http/1.1"]);

    let tls = tls_connect(addr, "two.test", config.clone())
        .await
        .expect("handshake");
    assert_eq!(peer_leaf(&tls), pair.leaf_der);
    assert_eq!(leaf_names(&peer_leaf(&tls)), ["one.test", "two.test"]);
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    let err = tls_connect(addr, "other.test", config.clone())
        .await
        .expect_err("wrong name");
    assert!(err.to_string().contains("not valid for name"), "{err}");
    let stranger = client_config(&[TestCa::new("stranger").cert_der()], &[]);
    let err = tls_connect(addr, "one.test", stranger)
        .await
        .expect_err("unknown issuer");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    for (spec, expected) in [
        (LeafSpec::new(&["one.test"]).expired(), "expired"),
        (
            LeafSpec::new(&["one.test"]).not_yet_valid(),
            "not valid before",
        ),
    ] {
        let addr = spawn_wss_echo(&ca.issue(spec), &[]).await;
        let err = tls_connect(addr, "one.test", config.clone())
            .await
            .expect_err(expected);
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[tokio::test]
async fn ws_connect_echoes_over_tls() {
    let ca = TestCa::new("selftest ca");
    let pair = ca.issue(LeafSpec::new(&["ws.test"]).key(KeyKind::Ed25519));
    let addr = spawn_wss_echo(&pair, &[]).await;
    let config = client_config(&[ca.cert_der()], &[]);

    let mut ws = ws_connect(addr, "ws.test", config.clone())
        .await
        .expect("wss connect");
    assert_eq!(
        echo_once(&mut ws, Message::text("hello")).await,
        Message::text("hello")
    );
    assert_echo(&mut ws, Message::binary(vec![7u8; 1 << 20])).await;
    assert_eq!(peer_leaf(ws.get_ref()), pair.leaf_der);

    let err = ws_connect(addr, "nope.test", config)
        .await
        .expect_err("bad name");
    assert!(err.contains("tls connect"), "{err}");
}
