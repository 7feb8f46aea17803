//! Opening the connection to the application: TCP (each resolved address in turn) or a unix
//! socket, under a connect timeout.

use std::io;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};
use tokio_util::either::Either;

use crate::config::Upstream;

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
