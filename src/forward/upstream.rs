//! Where the application listens (`--upstream`), and opening the connection to it: TCP (each
//! resolved address in turn) or a unix socket, under a connect timeout.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};
use tokio_util::either::Either;

/// Where the application listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// `HOST:PORT`, resolved once at start-up; connecting tries each address in order.
    Tcp {
        /// The text the user gave, for logs.
        authority: String,
        /// The resolved addresses.
        addrs: Vec<SocketAddr>,
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
        let addrs: Vec<SocketAddr> = value
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {value:?}: {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("{value:?} resolves to no address"));
        }
        Ok(Upstream::Tcp {
            authority: value.to_string(),
            addrs,
        })
    }
}

/// A connection to the upstream, whichever kind it is.
pub type UpstreamStream = Either<TcpStream, UnixStream>;

/// Why the upstream could not be reached. Ends only the client connection that asked.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing listens there (the app is down or still starting).
    #[error("upstream refused the connection")]
    Refused,
    /// The upstream did not answer within `--connect-timeout`.
    #[error("upstream connect timed out")]
    Timeout,
    /// Any other socket error.
    #[error("upstream connect failed: {0}")]
    Io(io::Error),
}

impl ConnectError {
    /// A short word for the `upstream_connect_failures_total{reason}` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectError::Refused => "refused",
            ConnectError::Timeout => "timeout",
            ConnectError::Io(_) => "io",
        }
    }

    fn from_io(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => ConnectError::Refused,
            _ => ConnectError::Io(err),
        }
    }
}

/// Connects to `upstream` within `timeout`.
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
            Upstream::Tcp { addrs, .. } => {
                let mut last = ConnectError::Refused;
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
        let Ok(Upstream::Tcp { addrs, .. }) = Upstream::parse("127.0.0.1:8080") else {
            panic!("tcp upstream not parsed");
        };
        assert_eq!(addrs, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert!(Upstream::parse("[::1]:80").is_ok());
        for bad in [
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
}
