//! The inbound PROXY protocol header (`--accept-proxy-protocol`): read from a trusted load
//! balancer before the TLS handshake, without taking a byte of the ClientHello after it, so
//! its client address can stand in for the TCP peer's.

mod parse;

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

pub use parse::{AcceptProxy, Announced, HeaderError, MAX_HEADER, Parsed, parse};

/// Room for the first look at the socket: a v1 header (at most 107 bytes) or a v2 one with
/// a load balancer's usual TLVs is taken whole by one peek. A larger v2 header grows the
/// buffer to the length it declares (at most [`MAX_HEADER`]).
const FIRST_PEEK: usize = 512;

/// `--accept-proxy-protocol` with its required `--trust-proxy-from`.
#[derive(Debug, Clone)]
pub struct InboundProxy {
    /// The header versions taken.
    pub accept: AcceptProxy,
    /// The peers allowed to send one (the load balancers); everyone else is refused.
    pub trusted: Vec<IpNet>,
}

impl InboundProxy {
    /// Whether `ip` may send a header. A dual-stack listener shows IPv4 peers as
    /// `::ffff:a.b.c.d`, so both that and the plain IPv4 form are looked up (the user may
    /// have written either).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.trusted
            .iter()
            .any(|net| net.contains(&canonical) || net.contains(&ip))
    }

    /// Reads the header that must open every connection from `peer`, by `deadline`, leaving
    /// every byte after it (the TLS ClientHello) in the socket for rustls. A peer outside
    /// `trusted` is refused at once, before anything is read.
    pub async fn read(
        &self,
        tcp: &mut TcpStream,
        peer: SocketAddr,
        deadline: Instant,
    ) -> Result<Announced, HeaderError> {
        if !self.trusts(peer.ip()) {
            return Err(HeaderError::Untrusted(peer.ip().to_canonical()));
        }
        tokio::time::timeout_at(deadline, read_header(tcp, self.accept))
            .await
            .unwrap_or(Err(HeaderError::Timeout))
    }
}

/// Peeks at what has arrived and, once it holds a whole header, reads exactly that.
///
/// While the header is incomplete, the peeked bytes are consumed. That is safe: bytes that
/// [`parse`] calls incomplete are all a prefix of the header (should the connection turn out
/// not to carry one, it is closed, and what was taken does not matter). And it is what keeps
/// the loop from spinning: a peek returns at once while any byte is buffered, so peeking again
/// at the same bytes would never wait, but with them taken the next peek waits in the kernel
/// for new ones. A header that arrives in one segment (as load balancers send it) costs one
/// peek and one read; one trickled byte by byte costs a peek and a read per segment.
async fn read_header(tcp: &mut TcpStream, accept: AcceptProxy) -> Result<Announced, HeaderError> {
    let mut buf = vec![0; FIRST_PEEK];
    // How many bytes at the front of `buf` are already taken from the socket.
    let mut taken = 0;
    loop {
        let peeked = tcp.peek(&mut buf[taken..]).await?;
        if peeked == 0 {
            return Err(HeaderError::Closed);
        }
        let seen = taken + peeked;
        let needed = match parse(&buf[..seen], accept) {
            Parsed::Header { len, announced } => {
                // `taken < len <= seen`, since what was taken was incomplete; `get_mut` rather
                // than an index, so that a broken promise refuses the connection, not panics.
                let rest = buf.get_mut(taken..len).ok_or_else(|| broken(len, taken))?;
                tcp.read_exact(rest).await?;
                return Ok(announced);
            }
            Parsed::Invalid(err) => return Err(err),
            Parsed::Incomplete(needed) => needed,
        };
        tcp.read_exact(&mut buf[taken..seen]).await?;
        taken = seen;
        // Room for at least the next byte, and for the whole of a header of known length.
        let room = needed.max(taken + 1);
        if room > MAX_HEADER {
            return Err(broken(room, taken));
        }
        if buf.len() < room {
            buf.resize(room, 0);
        }
    }
}

/// [`parse`] asked for more than it allows, or ended a header inside bytes it had called
/// incomplete. It never does (the fuzz target checks); should it, the connection is refused.
fn broken(len: usize, taken: usize) -> HeaderError {
    HeaderError::Malformed(format!(
        "inconsistent header length {len} after {taken} bytes"
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    const TCP4: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";

    fn v2_tcp6() -> Vec<u8> {
        use ppp::v2::{Builder, Command, Protocol, Type, Version};
        let addresses = (
            "[2001:db8::1]:40000".parse::<SocketAddr>().unwrap(),
            "[2001:db8::2]:443".parse::<SocketAddr>().unwrap(),
        );
        Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
            .write_tlv(Type::UniqueId, b"conn-1")
            .unwrap()
            .build()
            .unwrap()
    }

    fn inbound(accept: AcceptProxy, trusted: &str) -> InboundProxy {
        InboundProxy {
            accept,
            trusted: vec![trusted.parse().unwrap()],
        }
    }

    /// A connected pair: the client's end, and the server's with the peer's address.
    async fn pair() -> (TcpStream, TcpStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        (client, server, peer)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    async fn rest(server: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        server.read_exact(&mut buf).await.unwrap();
        buf
    }

    #[tokio::test]
    async fn the_bytes_after_the_header_stay_in_the_socket() {
        let proxy = inbound(AcceptProxy::Any, "127.0.0.0/8");
        for header in [TCP4.to_vec(), v2_tcp6()] {
            let (mut client, mut server, peer) = pair().await;
            client
                .write_all(&[header.as_slice(), b"HELLO"].concat())
                .await
                .unwrap();
            let announced = proxy.read(&mut server, peer, soon()).await.unwrap();
            assert!(matches!(announced, Announced::Client(_)));
            drop(client);
            let mut after = Vec::new();
            server.read_to_end(&mut after).await.unwrap();
            assert_eq!(after, b"HELLO");
        }
    }

    #[tokio::test]
    async fn a_header_trickled_a_byte_at_a_time_is_read() {
        let proxy = inbound(AcceptProxy::Any, "127.0.0.1/32");
        for header in [TCP4.to_vec(), v2_tcp6()] {
            let (mut client, mut server, peer) = pair().await;
            client.set_nodelay(true).unwrap();
            let expected = match parse(&header, AcceptProxy::Any) {
                Parsed::Header { announced, .. } => announced,
                other => panic!("{other:?}"),
            };
            let writer = tokio::spawn(async move {
                for byte in header.iter().chain(b"HELLO") {
                    client.write_all(&[*byte]).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                client
            });
            let announced = proxy.read(&mut server, peer, soon()).await.unwrap();
            assert_eq!(announced, expected);
            assert_eq!(rest(&mut server, 5).await, b"HELLO");
            drop(writer.await.unwrap());
        }
    }

    #[tokio::test]
    async fn an_untrusted_peer_is_refused_before_anything_is_read() {
        let proxy = inbound(AcceptProxy::Any, "10.0.0.0/8");
        let (mut client, mut server, peer) = pair().await;
        client.write_all(TCP4).await.unwrap();
        let err = proxy.read(&mut server, peer, soon()).await.unwrap_err();
        assert!(
            matches!(err, HeaderError::Untrusted(ip) if ip == peer.ip()),
            "{err}"
        );
        assert_eq!(rest(&mut server, TCP4.len()).await, TCP4);
    }

    #[tokio::test]
    async fn a_direct_tls_client_is_refused_without_waiting() {
        let proxy = inbound(AcceptProxy::Any, "127.0.0.1/32");
        let (mut client, mut server, peer) = pair().await;
        // Only the record's first bytes: the decision must not wait for the rest.
        client.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        let err = proxy.read(&mut server, peer, soon()).await.unwrap_err();
        assert!(matches!(err, HeaderError::Missing), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_half_header_hits_the_deadline() {
        let proxy = inbound(AcceptProxy::V1, "127.0.0.1/32");
        let (mut client, mut server, peer) = pair().await;
        client.write_all(&TCP4[..20]).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = proxy.read(&mut server, peer, deadline).await.unwrap_err();
        assert!(matches!(err, HeaderError::Timeout), "{err}");
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test]
    async fn a_peer_that_closes_mid_header_is_closed() {
        let proxy = inbound(AcceptProxy::V2, "127.0.0.1/32");
        let (mut client, mut server, peer) = pair().await;
        client.write_all(&v2_tcp6()[..20]).await.unwrap();
        drop(client);
        let err = proxy.read(&mut server, peer, soon()).await.unwrap_err();
        assert!(matches!(err, HeaderError::Closed), "{err}");
    }

    #[test]
    fn mapped_peers_match_ipv4_networks_and_the_reverse() {
        let v4 = inbound(AcceptProxy::Any, "10.0.0.0/8");
        assert!(v4.trusts("::ffff:10.1.2.3".parse().unwrap()));
        assert!(v4.trusts("10.1.2.3".parse().unwrap()));
        assert!(!v4.trusts("11.1.2.3".parse().unwrap()));
        let mapped = inbound(AcceptProxy::Any, "::ffff:10.0.0.0/104");
        assert!(mapped.trusts("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!mapped.trusts("::1".parse().unwrap()));
    }
}
