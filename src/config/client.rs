//! Flags that decide who the client is and what the upstream is told about it: PROXY protocol,
//! forwarded headers, and client certificates (mTLS), translated into [`ClientConfig`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ipnet::IpNet;

use super::ConfigError;
use super::parse::parse_duration;
use crate::forward::{ClientConfig, ForwardedHeaders, ProxyProtocol};
use crate::tls::ClientCa;

/// Smallest `--max-request-head`: a browser's WebSocket upgrade alone is ~500 bytes.
const MIN_REQUEST_HEAD: usize = 1024;
/// Largest `--max-request-head`: the buffer is held per connection while the head arrives.
const MAX_REQUEST_HEAD: usize = 1 << 20;

/// Whether a client must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientAuth {
    /// The handshake fails without a certificate from `--client-ca`.
    Required,
    /// A certificate is asked for and verified if sent; clients without one are let through.
    Optional,
}

/// Flags of `wss-sidecar proxy` about the client's identity.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Send a PROXY protocol header to the upstream before any client byte: off, v1 or v2.
    /// The upstream must expect it. A PROXY header sent by a client is never trusted: it is
    /// forwarded as client data.
    #[arg(
        long,
        env = "WSS_SIDECAR_PROXY_PROTOCOL",
        value_enum,
        default_value = "off"
    )]
    pub proxy_protocol: ProxyProtocol,

    /// Read the client's first request head and add X-Forwarded-For, -Proto, -Host, -Port and
    /// an RFC 7239 Forwarded header (and X-Client-Cert-* with --client-ca). Later requests on
    /// a keep-alive connection are forwarded unchanged.
    #[arg(long, env = "WSS_SIDECAR_FORWARDED_HEADERS")]
    pub forwarded_headers: bool,

    /// Client addresses (IP or CIDR, repeatable or comma-separated) trusted to send
    /// X-Forwarded-For and Forwarded: for them ours is appended to theirs; from every other
    /// client those headers are replaced.
    #[arg(long, env = "WSS_SIDECAR_TRUST_FORWARDED", value_delimiter = ',', value_parser = parse_net)]
    pub trust_forwarded: Vec<IpNet>,

    /// Largest request head, in bytes, read for --forwarded-headers; a larger one gets 431.
    #[arg(long, env = "WSS_SIDECAR_MAX_REQUEST_HEAD", default_value_t = 16 * 1024)]
    pub max_request_head: usize,

    /// Longest a client may take, after the handshake, to send its request head with
    /// --forwarded-headers; then the connection is closed.
    #[arg(long, env = "WSS_SIDECAR_REQUEST_HEAD_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_head_timeout: Duration,

    /// PEM CA certificate(s) client certificates must chain to: a file, or a directory of
    /// files. Turns on client certificates (mTLS). Reloaded when it changes.
    #[arg(long, env = "WSS_SIDECAR_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,

    /// With --client-ca: whether a client certificate is required or optional.
    #[arg(
        long,
        env = "WSS_SIDECAR_CLIENT_AUTH",
        value_enum,
        default_value = "required"
    )]
    pub client_auth: ClientAuth,

    /// With --client-ca: accept only client certificates with one of these subject alternative
    /// names (DNS, URI, email or IP; repeatable). With --allow-cn, either may match.
    #[arg(long, env = "WSS_SIDECAR_ALLOW_SAN", value_delimiter = ',')]
    pub allow_san: Vec<String>,

    /// With --client-ca: accept only client certificates whose subject common name is one of
    /// these (repeatable).
    #[arg(long, env = "WSS_SIDECAR_ALLOW_CN", value_delimiter = ',')]
    pub allow_cn: Vec<String>,
}

pub(super) fn parse_net(value: &str) -> Result<IpNet, String> {
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("expected an IP address or CIDR (10.0.0.0/8, ::1), got {value:?}"))
}

impl ClientArgs {
    /// Checks what clap cannot and builds the typed config.
    pub fn into_config(self) -> Result<ClientConfig, ConfigError> {
        if !self.forwarded_headers && !self.trust_forwarded.is_empty() {
            return Err(ConfigError::new(
                "--trust-forwarded",
                "has no effect without --forwarded-headers",
            ));
        }
        if !(MIN_REQUEST_HEAD..=MAX_REQUEST_HEAD).contains(&self.max_request_head) {
            return Err(ConfigError::new(
                "--max-request-head",
                format!("must be from {MIN_REQUEST_HEAD} to {MAX_REQUEST_HEAD} bytes"),
            ));
        }
        if self.request_head_timeout.is_zero() {
            return Err(ConfigError::new(
                "--request-head-timeout",
                "must be longer than zero",
            ));
        }
        let client_ca = match self.client_ca {
            Some(path) => {
                crate::tls::load_client_roots(&path)
                    .map_err(|e| ConfigError::new("--client-ca", e.to_string()))?;
                Some(ClientCa {
                    path,
                    required: self.client_auth == ClientAuth::Required,
                    allow_san: self.allow_san,
                    allow_cn: self.allow_cn,
                })
            }
            None if !self.allow_san.is_empty() => {
                return Err(ConfigError::new("--allow-san", "needs --client-ca"));
            }
            None if !self.allow_cn.is_empty() => {
                return Err(ConfigError::new("--allow-cn", "needs --client-ca"));
            }
            None => None,
        };
        Ok(ClientConfig {
            proxy_protocol: (self.proxy_protocol != ProxyProtocol::Off)
                .then_some(self.proxy_protocol),
            forwarded_headers: self.forwarded_headers.then_some(ForwardedHeaders {
                trusted: self.trust_forwarded,
                max_head: self.max_request_head,
                timeout: self.request_head_timeout,
            }),
            client_ca,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        client: ClientArgs,
    }

    fn config(args: &[&str]) -> Result<ClientConfig, ConfigError> {
        let argv = std::iter::once("test").chain(args.iter().copied());
        Flags::try_parse_from(argv).unwrap().client.into_config()
    }

    #[test]
    fn everything_is_off_by_default() {
        let cfg = config(&[]).unwrap();
        assert!(cfg.proxy_protocol.is_none());
        assert!(cfg.forwarded_headers.is_none());
        assert!(cfg.client_ca.is_none());
    }

    #[test]
    fn forwarded_headers_take_ips_and_cidrs() {
        let cfg = config(&["--forwarded-headers", "--trust-forwarded", "10.0.0.0/8,::1"]).unwrap();
        let forwarded = cfg.forwarded_headers.unwrap();
        assert_eq!(forwarded.max_head, 16 * 1024);
        assert_eq!(forwarded.timeout, Duration::from_secs(10));
        let trusted: Vec<String> = forwarded.trusted.iter().map(|n| n.to_string()).collect();
        assert_eq!(trusted, ["10.0.0.0/8", "::1/128"]);
        assert_eq!(
            config(&["--proxy-protocol", "v2"]).unwrap().proxy_protocol,
            Some(ProxyProtocol::V2)
        );
    }
}
