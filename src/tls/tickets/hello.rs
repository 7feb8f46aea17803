//! Whether a ClientHello offers TLS 1.3, read from its raw bytes: the `supported_versions`
//! extension holds 0x0304 (RFC 8446 §4.2.1: a client offering TLS 1.3 must send it). rustls'
//! `ClientHello` does not show that extension, and its cipher suites do not tell: a rustls
//! client limited to TLS 1.2 still lists TLS 1.3 suites (rustls client/hs.rs builds the
//! suite list from the provider, not from the enabled versions).

/// `supported_versions` (RFC 8446 §4.2).
const SUPPORTED_VERSIONS: u16 = 43;
const TLS13: u16 = 0x0304;
const HANDSHAKE_RECORD: u8 = 22;
const CLIENT_HELLO: u8 = 1;

/// `Some(true)` when the ClientHello at the start of `bytes` (TLS records, as read from the
/// socket) offers TLS 1.3, `Some(false)` when it does not, `None` when the bytes cannot be read
/// as one (rustls, which read them first, then decides).
pub fn offers_tls13(bytes: &[u8]) -> Option<bool> {
    let message = handshake_message(bytes)?;
    let mut r = Reader(&message);
    if r.u8()? != CLIENT_HELLO {
        return None;
    }
    let len = r.u24()?;
    let body = r.take(len)?;
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    let session_id = usize::from(r.u8()?);
    r.take(session_id)?;
    let suites = r.u16_len()?;
    r.take(suites)?;
    let compression = usize::from(r.u8()?);
    r.take(compression)?;
    if r.0.is_empty() {
        return Some(false); // no extensions: TLS 1.2 or older
    }
    let extensions = r.u16_len()?;
    let mut r = Reader(r.take(extensions)?);
    while !r.0.is_empty() {
        let kind = r.u16()?;
        let data = r.u16_len()?;
        let data = r.take(data)?;
        if kind == SUPPORTED_VERSIONS {
            let mut v = Reader(data);
            let len = usize::from(v.u8()?);
            let list = v.take(len)?;
            return Some(
                list.chunks_exact(2)
                    .any(|c| u16::from_be_bytes([c[0], c[1]]) == TLS13),
            );
        }
    }
    Some(false)
}

/// The first handshake message of `bytes`, reassembled from as many handshake records as
/// it spans (a hello over 16 KiB is split; RFC 8446 §5.1).
fn handshake_message(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut message = Vec::new();
    let mut r = Reader(bytes);
    loop {
        if r.u8()? != HANDSHAKE_RECORD {
            return None;
        }
        r.take(2)?; // legacy_record_version
        let len = r.u16_len()?;
        message.extend_from_slice(r.take(len)?);
        if let [_, a, b, c, ..] = message[..] {
            let want = 4 + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c));
            if message.len() >= want {
                message.truncate(want);
                return Some(message);
            }
        }
    }
}

/// Reads big-endian fields off the front of a slice; `None` past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u16_len(&mut self) -> Option<usize> {
        self.u16().map(usize::from)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The first flight of a rustls client limited to `versions`.
    fn hello(versions: &[&'static rustls::SupportedProtocolVersion]) -> Vec<u8> {
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = "localhost".try_into().unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        client.write_tls(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn tells_tls13_hellos_from_tls12_ones_that_list_tls13_suites() {
        use rustls::version::{TLS12, TLS13};
        assert_eq!(offers_tls13(&hello(&[&TLS13, &TLS12])), Some(true));
        assert_eq!(offers_tls13(&hello(&[&TLS13])), Some(true));
        assert_eq!(offers_tls13(&hello(&[&TLS12])), Some(false));
    }

    #[test]
    fn a_hello_split_over_records_is_reassembled_and_garbage_is_unknown() {
        let whole = hello(&[&rustls::version::TLS13]);
        let payload = &whole[5..];
        let (a, b) = payload.split_at(100);
        let mut split = Vec::new();
        for part in [a, b] {
            split.extend_from_slice(&[22, 3, 1]);
            split.extend_from_slice(&u16::try_from(part.len()).unwrap().to_be_bytes());
            split.extend_from_slice(part);
        }
        assert_eq!(offers_tls13(&split), Some(true));
        for len in [0, 1, 5, 9, 50, whole.len() - 1] {
            assert_eq!(offers_tls13(&whole[..len]), None, "{len} bytes");
        }
        assert_eq!(offers_tls13(b"GET / HTTP/1.1\r\n\r\n"), None);
        let mut huge = whole.clone();
        huge[3] = 0xff; // a record length past the end
        assert_eq!(offers_tls13(&huge), None);
    }
}
