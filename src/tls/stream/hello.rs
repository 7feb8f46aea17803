//! The ClientHello, read into a buffer of our own and inspected with a throw-away rustls
//! `Acceptor` before any configuration is chosen: its name (SNI), whether it is a
//! TLS-ALPN-01 validation, and the configuration [`ServerConfigs::choose_for`] picks for it. The
//! connection is then started from the same bytes.

use std::io;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::Acceptor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tls::{ACME_TLS_ALPN, ServerConfigs};

/// The most bytes a ClientHello may take: rustls refuses a handshake message over 64 KiB
/// (`MAX_HANDSHAKE_SIZE` in `msgs/deframer/handshake.rs`), plus record headers.
const MAX_HELLO: usize = 64 * 1024 + 1024;
/// How much more is read at a time; a typical hello is 250 B to 2 KB (more with ML-KEM).
const READ_STEP: usize = 2048;

/// What the ClientHello said, and every byte read so far.
pub(crate) struct Hello {
    /// The bytes read from the socket (the hello, and anything the client sent behind it).
    pub bytes: Vec<u8>,
    /// The server name asked for (SNI).
    pub sni: Option<Box<str>>,
    /// ALPN offered `acme-tls/1` and nothing else: a TLS-ALPN-01 validation (RFC 8737 §3).
    pub acme_validation: bool,
    /// The configuration chosen for this client.
    pub config: Arc<ServerConfig>,
}

/// Reads the ClientHello from `tcp`. A malformed one gets rustls' alert and an
/// `InvalidData` error (the rustls error inside); the socket ending early `UnexpectedEof`.
pub(crate) async fn read_hello(tcp: &mut TcpStream, configs: &ServerConfigs) -> io::Result<Hello> {
    let mut acceptor = Acceptor::default();
    let mut bytes = Vec::new();
    let mut fed = 0;
    loop {
        if fed == bytes.len() {
            if bytes.len() >= MAX_HELLO {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("client hello larger than {MAX_HELLO} bytes"),
                ));
            }
            bytes.reserve(READ_STEP);
            if tcp.read_buf(&mut bytes).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        fed += acceptor.read_tls(&mut &bytes[fed..])?;
        match acceptor.accept() {
            Ok(None) => {}
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                let acme_validation = hello.alpn().is_some_and(|mut protocols| {
                    protocols.next() == Some(ACME_TLS_ALPN) && protocols.next().is_none()
                });
                return Ok(Hello {
                    sni: hello.server_name().map(Box::from),
                    acme_validation,
                    config: configs.choose_for(&hello, &bytes),
                    bytes,
                });
            }
            Err((err, mut alert)) => {
                let mut out = Vec::new();
                if alert.write_all(&mut out).is_ok() {
                    let _ = tcp.write_all(&out).await;
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, err));
            }
        }
    }
}
