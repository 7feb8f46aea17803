//! Parsers for flag values that clap cannot check by type alone: upstreams and durations.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

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

/// Parses `HOST:PORT` or `unix:/path`.
pub fn parse_upstream(value: &str) -> Result<Upstream, String> {
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

/// Parses a duration such as `10s`, `1m30s` or `250ms`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("{e} (expected a duration such as 10s, 1m30s or 250ms)"))
}

/// Parses a duration, where `off` or `0` means "never".
pub fn parse_optional_duration(value: &str) -> Result<Option<Duration>, String> {
    match value {
        "off" | "none" | "0" => Ok(None),
        _ => parse_duration(value).map(|d| (!d.is_zero()).then_some(d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        assert_eq!(
            parse_upstream("unix:/run/app.sock"),
            Ok(Upstream::Unix("/run/app.sock".into()))
        );
        let Ok(Upstream::Tcp { addrs, .. }) = parse_upstream("127.0.0.1:8080") else {
            panic!("tcp upstream not parsed");
        };
        assert_eq!(addrs, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert!(parse_upstream("[::1]:80").is_ok());
        for bad in [
            "unix:",
            "8080",
            ":8080",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "ws://a:1",
        ] {
            assert!(parse_upstream(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("ten").is_err());
        assert_eq!(parse_optional_duration("off"), Ok(None));
        assert_eq!(parse_optional_duration("0s"), Ok(None));
        assert_eq!(
            parse_optional_duration("5m"),
            Ok(Some(Duration::from_secs(300)))
        );
    }
}
