//! The stream against a real rustls client over an in-memory pipe: both TLS versions,
//! half-close, backpressure, KeyUpdate, and no buffer held once traffic stops.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::TlsStream;
use crate::tls::provider;

const VERSIONS: [&SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];

/// A server configuration for `app.test` and a client trusting its CA, both limited to
/// `version`.
fn configs(version: &'static SupportedProtocolVersion) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["app.test".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// A handshaken pair over a pipe of `pipe` bytes each way.
async fn pair(
    version: &'static SupportedProtocolVersion,
    pipe: usize,
) -> (
    TlsStream<DuplexStream>,
    tokio_rustls::client::TlsStream<DuplexStream>,
) {
    let (server_config, client_config) = configs(version);
    let (server_io, client_io) = duplex(pipe);
    let name = ServerName::try_from("app.test").unwrap();
    let client = tokio_rustls::TlsConnector::from(client_config).connect(name, client_io);
    let server = async {
        let mut stream = TlsStream::new(server_io, server_config, Vec::new(), None).unwrap();
        stream.handshake().await.map(|()| stream)
    };
    let (server, client) = tokio::join!(server, client);
    (server.unwrap(), client.unwrap())
}

fn holds_no_buffer(stream: &TlsStream<DuplexStream>) -> bool {
    [&stream.incoming, &stream.plain, &stream.outgoing]
        .iter()
        .all(|b| b.is_empty() && b.capacity() == 0)
}

#[tokio::test]
async fn a_megabyte_each_way_through_a_small_pipe_arrives_and_no_buffer_stays() {
    for version in VERSIONS {
        // 4 KiB of pipe: both sides are pushed back many times.
        let (mut server, mut client) = pair(version, 4096).await;
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let echo = async {
            let mut got = vec![0u8; payload.len()];
            server.read_exact(&mut got).await.unwrap();
            server.write_all(&got).await.unwrap();
            server.flush().await.unwrap();
            server
        };
        let talk = async {
            let (mut read, mut write) = tokio::io::split(&mut client);
            let send = async {
                write.write_all(&payload).await.unwrap();
                write.flush().await.unwrap();
            };
            let mut back = vec![0u8; payload.len()];
            let (_, got) = tokio::join!(send, read.read_exact(&mut back));
            got.unwrap();
            back
        };
        let (server, back) = tokio::join!(echo, talk);
        assert!(back == payload, "{version:?}: the echo is the payload");
        assert!(
            holds_no_buffer(&server),
            "{version:?}: an idle stream holds no buffer"
        );
    }
}

#[tokio::test]
async fn close_notify_ends_one_direction_and_the_other_carries_on() {
    for version in VERSIONS {
        let (mut server, mut client) = pair(version, 64 * 1024).await;
        client.write_all(b"last words").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words", "{version:?}: data, then the end");
        server.write_all(b"still here").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"still here", "{version:?}: the other way carried on");
    }
}

#[tokio::test]
async fn a_client_key_update_is_followed_both_ways() {
    let (mut server, mut client) = pair(&rustls::version::TLS13, 64 * 1024).await;
    for round in 0..3u8 {
        client.get_mut().1.refresh_traffic_keys().unwrap();
        client.write_all(&[round; 100]).await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0u8; 100];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [round; 100]);
        server.write_all(&[round + 1; 50]).await.unwrap();
        server.flush().await.unwrap();
        let mut back = [0u8; 50];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(
            back,
            [round + 1; 50],
            "round {round}: readable after the update"
        );
    }
}

#[tokio::test]
async fn a_peer_that_leaves_without_close_notify_is_an_unexpected_eof() {
    let (mut server, client) = pair(&rustls::version::TLS13, 64 * 1024).await;
    drop(client);
    let mut buf = [0u8; 16];
    let err = server.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    assert_eq!(server.read(&mut buf).await.unwrap(), 0, "then the end");
}

#[tokio::test]
async fn a_failed_handshake_tells_the_client_why() {
    let (server_config, _) = configs(&rustls::version::TLS13);
    let (_, client_config) = configs(&rustls::version::TLS13); // another CA
    let (server_io, client_io) = duplex(64 * 1024);
    let name = ServerName::try_from("app.test").unwrap();
    let client = tokio_rustls::TlsConnector::from(client_config).connect(name, client_io);
    let server = async {
        let mut stream = TlsStream::new(server_io, server_config, Vec::new(), None).unwrap();
        stream.handshake().await
    };
    let (server, client) = tokio::join!(server, client);
    let server = server.unwrap_err();
    assert!(
        server
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .is_some(),
        "the rustls error inside: {server}"
    );
    // The client refused our certificate and sent an alert: the server saw it as such.
    assert!(client.is_err());
}
