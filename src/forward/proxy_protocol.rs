//! The PROXY protocol header (v1 text, v2 binary) sent to the upstream before any client
//! byte, so the app learns the client's real address, and with v2 the TLS facts.

use std::net::{IpAddr, SocketAddr};

use ppp::v2::{self, Builder, Command, Protocol, Type, Version};

/// Which PROXY protocol header to send the upstream (`--proxy-protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyProtocol {
    /// None.
    Off,
    /// The text header (`PROXY TCP4 …`).
    V1,
    /// The binary header, with ALPN, authority (SNI) and TLS/client-certificate TLVs.
    V2,
}

/// PP2_CLIENT_SSL: the client connected over TLS.
const PP2_CLIENT_SSL: u8 = 0x01;
/// PP2_CLIENT_CERT_CONN: it presented a certificate on this connection.
const PP2_CLIENT_CERT_CONN: u8 = 0x02;
/// PP2_CLIENT_CERT_SESS: it presented one at least once in this TLS session.
const PP2_CLIENT_CERT_SESS: u8 = 0x04;
/// Longest common name passed on. X.509 allows 64 characters; the cap keeps every TLV
/// together far below the header's 64 KiB limit (SNI and ALPN are at most 255 bytes each),
/// so building the header cannot fail.
const MAX_CN: usize = 1024;

/// What the TLS handshake established, for the v2 TLVs.
#[derive(Debug, Default, Clone, Copy)]
pub struct TlsFacts<'a> {
    /// The negotiated ALPN protocol.
    pub alpn: Option<&'a [u8]>,
    /// The SNI the client asked for (PP2_TYPE_AUTHORITY).
    pub sni: Option<&'a str>,
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: Option<&'a str>,
    /// The cipher suite's name.
    pub cipher: Option<&'a str>,
    /// Whether a client certificate was verified.
    pub client_cert: bool,
    /// Its subject common name, if it has one.
    pub client_cn: Option<&'a str>,
}

/// The header announcing a connection from `client` to `local` (the sidecar's listener).
pub fn header(
    version: ProxyProtocol,
    client: SocketAddr,
    local: SocketAddr,
    tls: &TlsFacts<'_>,
) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    match version {
        ProxyProtocol::Off => Vec::new(),
        ProxyProtocol::V1 => ppp::v1::Addresses::from((client, local))
            .to_string()
            .into_bytes(),
        ProxyProtocol::V2 => v2_header(client, local, tls),
    }
}

fn v2_header(client: SocketAddr, local: SocketAddr, tls: &TlsFacts<'_>) -> Vec<u8> {
    let mut ssl = vec![PP2_CLIENT_SSL, 0, 0, 0, 0];
    if tls.client_cert {
        ssl[0] |= PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS;
    }
    // verify = 0 (the four zero bytes): the certificate, if any, was verified.
    let mut sub = |kind: Type, value: &[u8]| {
        if let Ok(len) = u16::try_from(value.len()) {
            ssl.push(kind as u8);
            ssl.extend_from_slice(&len.to_be_bytes());
            ssl.extend_from_slice(value);
        }
    };
    if let Some(version) = tls.version {
        sub(Type::SSLVersion, version.as_bytes());
    }
    if let Some(cipher) = tls.cipher {
        sub(Type::SSLCipher, cipher.as_bytes());
    }
    if let Some(cn) = tls
        .client_cn
        .filter(|cn| tls.client_cert && cn.len() <= MAX_CN)
    {
        sub(Type::SSLCommonName, cn.as_bytes());
    }
    let mut tlvs: Vec<(Type, &[u8])> = Vec::with_capacity(3);
    if let Some(alpn) = tls.alpn {
        tlvs.push((Type::ALPN, alpn));
    }
    if let Some(sni) = tls.sni {
        tlvs.push((Type::Authority, sni.as_bytes()));
    }
    tlvs.push((Type::SSL, &ssl));
    let builder = || {
        Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            v2::Addresses::from((client, local)),
        )
    };
    let with_tlvs = tlvs
        .into_iter()
        .try_fold(builder(), |b, (kind, value)| b.write_tlv(kind, value))
        .and_then(Builder::build);
    // Only a header over 64 KiB fails, which MAX_CN rules out; should it happen anyway, the
    // addresses (what the header is for) still go out, without the TLVs.
    with_tlvs.unwrap_or_else(|_| builder().build().unwrap_or_default())
}

/// Both addresses in one family, as the header needs: IPv4-mapped IPv6 addresses (a
/// dual-stack listener) become IPv4, and a remaining mix is lifted to IPv6.
fn same_family(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (client, local) = (canonical(client), canonical(local));
    let lift = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    if client.is_ipv4() == local.is_ipv4() {
        (client, local)
    } else {
        (lift(client), lift(local))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_names_both_ends() {
        let h = header(
            ProxyProtocol::V1,
            "192.0.2.1:5000".parse().unwrap(),
            "[::ffff:10.0.0.1]:8443".parse().unwrap(),
            &TlsFacts::default(),
        );
        assert_eq!(h, b"PROXY TCP4 192.0.2.1 10.0.0.1 5000 8443\r\n");
    }

    #[test]
    fn v2_carries_tlvs_that_ppp_reads_back() {
        let tls = TlsFacts {
            alpn: Some(b"http/1.1"),
            sni: Some("app.test"),
            version: Some("TLSv1.3"),
            cipher: None,
            client_cert: true,
            client_cn: Some("caller"),
        };
        let bytes = header(
            ProxyProtocol::V2,
            "[::1]:5000".parse().unwrap(),
            "[::1]:8443".parse().unwrap(),
            &tls,
        );
        let parsed = v2::Header::try_from(bytes.as_slice()).unwrap();
        let tlvs: Vec<_> = parsed.tlvs().map(|t| t.unwrap()).collect();
        assert_eq!(tlvs[0].kind, Type::ALPN as u8);
        assert_eq!(&*tlvs[1].value, b"app.test");
        let ssl = &tlvs[2].value;
        assert_eq!(ssl[0], 0x07);
        assert!(ssl.windows(6).any(|w| w == b"caller"));
    }
}
