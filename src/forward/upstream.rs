//! Where the application listens (`--upstream`), and opening the connection to it: TCP (the
//! name resolved at each connect, each address in turn) or a unix socket, under a connect
//! timeout.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};
use tokio_util::either::Either;

/// Where the application listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// `HOST:PORT`. A name is resolved when a connection is made, never at parse time: the
    /// injector parses inside the webhook's timeout and in its own namespace, and at start-up a
    /// pod's DNS may not answer yet. Connecting tries each address in order.
    Tcp {
        /// The text the user gave: what is resolved, and what logs show.
        authority: String,
    },
    /// `unix:/path` to a stream socket.
    Unix(PathBuf),
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Tcp { authority, .. } => f.write_str(authority),
            Upstream::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Upstream {
    /// Parses `HOST:PORT` (resolving the host now) or `unix:/path`.
    pub fn parse(value: &str) -> Result<Upstream, String> {
        if let Some(path) = value.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("expected unix:/path/to/socket, the path is empty".into());
            }
            return Ok(Upstream::Unix(PathBuf::from(path)));
        }
        if value.contains("://") {
            return Err(format!(
                "expected HOST:PORT or unix:/path, not a URL ({value:?}); the upstream speaks plain ws:// on that port"
            ));
        }
        let (host, port) = value
            .rsplit_once(':')
            .ok_or_else(|| format!("expected HOST:PORT or unix:/path, got {value:?}"))?;
        if host.is_empty() {
            return Err(format!(
                "expected HOST:PORT, the host is empty in {value:?}"
            ));
        }
        port.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("the port in {value:?} is not a number from 1 to 65535"))?;
        check_host(host).map_err(|why| format!("{why} in {value:?}"))?;
        Ok(Upstream::Tcp {
            authority: value.to_string(),
        })
    }
}

/// The host of `HOST:PORT`, checked for syntax only: an IPv4 address, a bracketed IPv6 address,
/// or a DNS name (RFC 1123 labels: letters, digits, `-`, `_` as in SRV-style names, 63 bytes
/// each, 253 in all).
fn check_host(host: &str) -> Result<(), String> {
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<IpAddr>) {
            Some(Ok(IpAddr::V6(_))) => Ok(()),
            _ => Err(format!("{host:?} is not a bracketed IPv6 address")),
        };
    }
    if host.contains(':') {
        return Err(format!("an IPv6 host needs brackets ([{host}])"));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    Ok(())
}

/// A connection to the upstream, whichever kind it is.
pub type UpstreamStream = Either<TcpStream, UnixStream>;

/// Why the upstream could not be reached. Ends only the client connection that asked.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing listens there (the app is down or still starting).
    #[error("upstream refused the connection")]
    Refused,
    /// The upstream did not answer within `--connect-timeout` (resolving its name included).
    #[error("upstream connect timed out")]
    Timeout,
    /// The upstream's name did not resolve (DNS not ready, or no such name).
    #[error("cannot resolve the upstream: {0}")]
    Resolve(io::Error),
    /// Any other socket error.
    #[error("upstream connect failed: {0}")]
    Io(io::Error),
}

impl ConnectError {
    /// Every word [`reason`](Self::reason) gives: the metric's series are created at zero
    /// from these.
    pub const REASONS: [&'static str; 4] = ["refused", "timeout", "dns", "io"];

    /// A short word for the `upstream_connect_failures_total{reason}` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectError::Refused => Self::REASONS[0],
            ConnectError::Timeout => Self::REASONS[1],
            ConnectError::Resolve(_) => Self::REASONS[2],
            ConnectError::Io(_) => Self::REASONS[3],
        }
    }

    fn from_io(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => ConnectError::Refused,
            _ => ConnectError::Io(err),
        }
    }
}

/// Connects to `upstream` within `timeout`, which bounds the name's resolution too.
pub async fn connect(
    upstream: &Upstream,
    timeout: Duration,
) -> Result<UpstreamStream, ConnectError> {
    let attempt = async {
        match upstream {
            Upstream::Unix(path) => UnixStream::connect(path)
                .await
                .map(Either::Right)
                .map_err(ConnectError::from_io),
            Upstream::Tcp { authority } => {
                // getaddrinfo on tokio's blocking pool, once per connection: a changed or
                // late DNS record is seen by the next client.
                let addrs = tokio::net::lookup_host(authority.as_str())
                    .await
                    .map_err(ConnectError::Resolve)?;
                let mut last = ConnectError::Resolve(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{authority} resolves to no address"),
                ));
                for addr in addrs {
                    match TcpStream::connect(addr).await {
                        Ok(stream) => {
                            // WebSocket frames are small and latency-sensitive.
                            stream.set_nodelay(true).map_err(ConnectError::Io)?;
                            return Ok(Either::Left(stream));
                        }
                        Err(err) => last = ConnectError::from_io(err),
                    }
                }
                Err(last)
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(ConnectError::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        assert_eq!(
            Upstream::parse("unix:/run/app.sock"),
            Ok(Upstream::Unix("/run/app.sock".into()))
        );
        let Ok(Upstream::Tcp { authority }) = Upstream::parse("127.0.0.1:8080") else {
            panic!("tcp upstream not parsed");
        };
        assert_eq!(authority, "127.0.0.1:8080");
        for good in [
            "[::1]:80",
            "app:8080",
            "app.other-ns.svc.cluster.local:8080",
            "app.other-ns.svc.cluster.local.:8080",
            "localhost:80",
        ] {
            assert!(Upstream::parse(good).is_ok(), "{good} should be accepted");
        }
        for bad in [
            "::1:80",
            "[127.0.0.1]:80",
            "a..b:80",
            "-app:80",
            "app name:80",
            "app/x:80",
            "unix:",
            "8080",
            ":8080",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "ws://a:1",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    /// A name that does not resolve (yet) parses, so the sidecar starts; only a connect fails,
    /// with its own reason, and within the connect timeout.
    #[tokio::test]
    async fn a_name_is_resolved_at_connect_and_a_failure_ends_only_that_connect() {
        let upstream = Upstream::parse("no-such-host.invalid:8080").expect("syntax only");
        let err = connect(&upstream, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "dns", "{err}");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = Upstream::parse(&format!("localhost:{port}")).unwrap();
        let (connected, accepted) = tokio::join!(
            connect(&upstream, Duration::from_secs(10)),
            listener.accept()
        );
        connected.expect("localhost resolves at connect");
        accepted.unwrap();
    }
}
