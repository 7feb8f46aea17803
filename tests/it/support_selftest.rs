//! Proves the shared test helpers do what they claim, over real sockets and files.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::ServerConfig;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::support::kubelet::utc_stamp;
use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

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

#[tokio::test]
async fn echo_server_echoes_records_the_request_and_stops_hard() {
    let server = EchoServer::start_tcp().await;
    let addr = server.addr();
    let mut request = format!("ws://{addr}/ws?x=1")
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("x-test", "yes".parse().expect("header value"));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(ws_config()))
        .await
        .expect("ws upgrade");

    assert_echo(&mut ws, Message::text("héllo")).await;
    assert_echo(&mut ws, Message::binary(vec![0xabu8; 16 << 20])).await;
    // A message in three fragments comes back as one message.
    ws.feed(fragment(b"ab", Data::Text, false))
        .await
        .expect("fragment");
    ws.feed(fragment(b"cd", Data::Continue, false))
        .await
        .expect("fragment");
    let reply = echo_once(&mut ws, fragment(b"ef", Data::Continue, true)).await;
    assert_eq!(reply, Message::text("abcdef"));

    assert_eq!(server.connections_accepted(), 1);
    assert_eq!(server.live_connections(), 1);
    assert_eq!(server.last_request_target().as_deref(), Some("/ws?x=1"));
    let headers = server.last_request_headers();
    assert!(
        headers.contains(&("x-test".to_string(), "yes".to_string())),
        "{headers:?}"
    );
    assert!(
        headers.iter().any(|(name, _)| name == "sec-websocket-key"),
        "{headers:?}"
    );

    server.stop().await;
    let refused = TcpStream::connect(addr)
        .await
        .expect_err("stopped server refuses");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    try_echo_once(&mut ws, Message::text("anyone?"))
        .await
        .expect_err("live socket died");

    // The upstream comes back on the same address.
    let server = EchoServer::start_tcp_on(addr).await;
    assert_eq!(server.addr(), addr);
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/"),
        TcpStream::connect(addr).await.expect("reconnect"),
    )
    .await
    .expect("ws upgrade");
    assert_echo(&mut ws, Message::text("back")).await;
    ws.close(None).await.expect("close");
    wait_until("the echo server sees the close", WAIT, || async {
        server.live_connections() == 0
    })
    .await;
}

/// One frame of a fragmented message, sent as is.
fn fragment(data: &'static [u8], data_kind: Data, is_final: bool) -> Message {
    Message::Frame(Frame::message(
        Bytes::from_static(data),
        OpCode::Data(data_kind),
        is_final,
    ))
}

#[tokio::test]
async fn echo_server_on_a_unix_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.sock");
    let server = EchoServer::start_unix(&path).await;
    assert_eq!(server.path(), path);
    let unix = UnixStream::connect(&path).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async("ws://localhost/ws", unix)
        .await
        .expect("ws upgrade");
    assert_echo(&mut ws, Message::text("over unix")).await;

    server.stop().await;
    let refused = UnixStream::connect(&path)
        .await
        .expect_err("stopped server refuses");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    try_echo_once(&mut ws, Message::text("anyone?"))
        .await
        .expect_err("live socket died");

    let server = EchoServer::start_unix(&path).await;
    let unix = UnixStream::connect(server.path()).await.expect("reconnect");
    let (mut ws, _) = tokio_tungstenite::client_async("ws://localhost/ws", unix)
        .await
        .expect("ws upgrade");
    assert_echo(&mut ws, Message::text("back")).await;
}

#[tokio::test]
async fn raw_upstream_hands_over_sockets_and_sees_half_close() {
    let (addr, mut accepted) = raw_upstream_tcp().await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    let mut upstream = accepted.recv().await.expect("socket handed over");

    client.write_all(b"ping").await.expect("write");
    client.shutdown().await.expect("half-close");
    let mut received = Vec::new();
    upstream
        .read_to_end(&mut received)
        .await
        .expect("read to EOF");
    assert_eq!(received, b"ping");

    // The other direction still works after the client's half-close.
    upstream.write_all(b"pong").await.expect("write back");
    drop(upstream);
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.expect("read reply");
    assert_eq!(reply, b"pong");
}

#[test]
fn kubelet_publish_swaps_data_and_removes_the_old_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kubelet = KubeletDir::new(dir.path());
    let ca = TestCa::new("selftest ca");
    let first = ca.issue(LeafSpec::new(&["first.test"]));
    let second = ca.issue(LeafSpec::new(&["second.test"]));

    kubelet.publish_pair(&first);
    let first_dir = kubelet.current_data_dir().expect("..data exists");
    kubelet.publish_pair(&second);
    let second_dir = kubelet.current_data_dir().expect("..data exists");

    assert_ne!(
        first_dir, second_dir,
        "each publish gets its own dir, even within a second"
    );
    assert!(!first_dir.exists(), "old timestamped dir removed");
    let target = std::fs::read_link(dir.path().join("..data")).expect("..data is a symlink");
    assert!(
        target.is_relative(),
        "..data points by relative name: {target:?}"
    );
    let name = target.to_str().expect("utf-8 name");
    assert!(is_timestamped_name(name), "{name}");
    assert!(!dir.path().join("..data_tmp").exists());
    for (file, contents) in [("tls.crt", &second.cert_pem), ("tls.key", &second.key_pem)] {
        let link = std::fs::read_link(dir.path().join(file)).expect("visible file is a symlink");
        assert_eq!(link, std::path::Path::new("..data").join(file));
        assert_eq!(
            &std::fs::read_to_string(dir.path().join(file)).expect("read"),
            contents
        );
    }

    // A key dropped from the Secret disappears; nested keys get one top-level symlink.
    kubelet.publish(&[("tls.crt", b"x"), ("extra/ca.crt", b"y")]);
    assert!(std::fs::symlink_metadata(dir.path().join("tls.key")).is_err());
    assert_eq!(
        std::fs::read(dir.path().join("extra/ca.crt")).expect("nested"),
        b"y"
    );
    let entries = std::fs::read_dir(dir.path()).expect("list").count();
    assert_eq!(entries, 4, "..data, one timestamped dir, tls.crt, extra");
}

/// `..YYYY_MM_DD_HH_MM_SS.NNNNNNNNN`
fn is_timestamped_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let shape = rest
        .bytes()
        .map(|b| if b.is_ascii_digit() { b'9' } else { b })
        .collect::<Vec<_>>();
    shape == b"9999_99_99_99_99_99.999999999"
}

#[test]
fn utc_stamps_match_go_layout() {
    assert_eq!(utc_stamp(0), "1970_01_01_00_00_00");
    assert_eq!(utc_stamp(951_782_400), "2000_02_29_00_00_00");
    assert_eq!(utc_stamp(1_700_000_000), "2023_11_14_22_13_20");
    assert_eq!(utc_stamp(4_107_542_399), "2100_02_28_23_59_59");
}

#[test]
fn plain_pair_is_regular_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = TestCa::new("selftest ca").issue(LeafSpec::new(&["plain.test"]));
    write_plain_pair(dir.path(), &pair);
    let meta = std::fs::symlink_metadata(dir.path().join("tls.crt")).expect("tls.crt");
    assert!(meta.file_type().is_file());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tls.key")).expect("key"),
        pair.key_pem
    );
}

#[tokio::test]
async fn wait_until_returns_once_the_condition_holds() {
    let start = tokio::time::Instant::now();
    wait_until("three polls pass", WAIT, || async {
        start.elapsed() >= Duration::from_millis(50)
    })
    .await;
}

#[tokio::test]
#[should_panic(expected = "waiting until the impossible happens")]
async fn wait_until_panics_naming_what() {
    wait_until(
        "the impossible happens",
        Duration::from_millis(60),
        || async { false },
    )
    .await;
}

#[test]
fn install_crypto_provider_is_idempotent() {
    install_crypto_provider();
    install_crypto_provider();
    assert!(rustls::crypto::CryptoProvider::get_default().is_some());
}
