//! The flags of what arrives before the TLS handshake: the client's address in a load
//! balancer's PROXY header, and the per-client connection limit, translated into
//! [`InboundConfig`].

use std::num::NonZeroU32;

use clap::{Args, ValueEnum};
use ipnet::IpNet;

use super::ConfigError;
use super::client::parse_net;
use crate::proxy::config::InboundConfig;
use crate::proxy::proxy_header::{AcceptProxy, InboundProxy};

/// `--accept-proxy-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcceptProxyFlag {
    /// No header: the TCP peer is the client.
    Off,
    /// The text header only.
    V1,
    /// The binary header only.
    V2,
    /// Either.
    Any,
}

/// Flags of `wss-sidecar proxy` about the connection before TLS.
#[derive(Debug, Clone, Args)]
pub struct InboundArgs {
    /// Expect a PROXY protocol header (v1, v2 or any) from the load balancer in front (an L4
    /// balancer such as AWS NLB or a TCP-mode HAProxy), before the TLS handshake and within
    /// --handshake-timeout: its client address then stands for the TCP peer everywhere (logs,
    /// metrics, --trust-forwarded, --forwarded-headers, the --proxy-protocol header sent
    /// upstream). v2 LOCAL headers (the balancer's health checks) keep the TCP peer. A
    /// connection from outside --trust-proxy-from, or with a malformed or missing header, is
    /// closed. Needs --trust-proxy-from. In-cluster clients that reach the balancer's address
    /// may be routed straight to the pod (kube-proxy short-circuits a Service's load-balancer
    /// IP), and so send no header: give them the Service's cluster address instead.
    #[arg(
        long,
        env = "WSS_SIDECAR_ACCEPT_PROXY_PROTOCOL",
        value_enum,
        default_value = "off"
    )]
    pub accept_proxy_protocol: AcceptProxyFlag,

    /// With --accept-proxy-protocol: the addresses (IP or CIDR, repeatable or
    /// comma-separated) of the load balancers that send PROXY headers; every other peer is
    /// refused.
    #[arg(long, env = "WSS_SIDECAR_TRUST_PROXY_FROM", value_name = "CIDR", value_delimiter = ',', value_parser = parse_net)]
    pub trust_proxy_from: Vec<IpNet>,

    /// Most connections open at once from one client (an IPv4 address or an IPv6 /64; the
    /// PROXY header's address with --accept-proxy-protocol); more are refused like those over
    /// --max-connections. Default: no limit but --max-connections.
    #[arg(long, env = "WSS_SIDECAR_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<NonZeroU32>,
}

impl InboundArgs {
    /// Checks what clap cannot and builds the typed config.
    pub fn into_config(self) -> Result<InboundConfig, ConfigError> {
        let accept = match self.accept_proxy_protocol {
            AcceptProxyFlag::Off => None,
            AcceptProxyFlag::V1 => Some(AcceptProxy::V1),
            AcceptProxyFlag::V2 => Some(AcceptProxy::V2),
            AcceptProxyFlag::Any => Some(AcceptProxy::Any),
        };
        let proxy = match (accept, self.trust_proxy_from.is_empty()) {
            (Some(_), true) => {
                return Err(ConfigError::new(
                    "--trust-proxy-from",
                    "is required with --accept-proxy-protocol: give the load balancers' \
                     addresses (IP or CIDR), so that no one else can claim a client address",
                ));
            }
            (None, false) => {
                return Err(ConfigError::new(
                    "--trust-proxy-from",
                    "has no effect without --accept-proxy-protocol",
                ));
            }
            (Some(accept), false) => Some(InboundProxy {
                accept,
                trusted: self.trust_proxy_from,
            }),
            (None, true) => None,
        };
        Ok(InboundConfig {
            proxy,
            max_per_ip: self.max_connections_per_ip,
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
        inbound: InboundArgs,
    }

    fn config(args: &[&str]) -> Result<InboundConfig, ConfigError> {
        let argv = std::iter::once("test").chain(args.iter().copied());
        Flags::try_parse_from(argv).unwrap().inbound.into_config()
    }

    fn parse_error(args: &[&str]) -> String {
        let argv = std::iter::once("test").chain(args.iter().copied());
        match Flags::try_parse_from(argv) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn both_are_off_by_default() {
        let cfg = config(&[]).unwrap();
        assert!(cfg.proxy.is_none());
        assert!(cfg.max_per_ip.is_none());
        assert!(
            config(&["--accept-proxy-protocol", "off"])
                .unwrap()
                .proxy
                .is_none()
        );
    }

    #[test]
    fn each_version_with_a_trust_list() {
        for (flag, accept) in [
            ("v1", AcceptProxy::V1),
            ("v2", AcceptProxy::V2),
            ("any", AcceptProxy::Any),
        ] {
            let args = [
                "--accept-proxy-protocol",
                flag,
                "--trust-proxy-from",
                "10.0.0.0/8,192.0.2.7,fd00::/8",
            ];
            let proxy = config(&args).unwrap().proxy.unwrap();
            assert_eq!(proxy.accept, accept);
            let trusted: Vec<String> = proxy.trusted.iter().map(|n| n.to_string()).collect();
            assert_eq!(trusted, ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"]);
        }
    }

    #[test]
    fn one_without_the_other_names_the_trust_flag() {
        let err = config(&["--accept-proxy-protocol", "v2"]).unwrap_err();
        assert_eq!(err.flag, "--trust-proxy-from");
        assert!(err.to_string().contains("--accept-proxy-protocol"), "{err}");
        let err = config(&["--trust-proxy-from", "10.0.0.0/8"]).unwrap_err();
        assert_eq!(err.flag, "--trust-proxy-from");
        assert!(err.to_string().contains("--accept-proxy-protocol"), "{err}");
    }

    #[test]
    fn bad_values_name_their_flag() {
        let err = parse_error(&["--accept-proxy-protocol", "v3"]);
        assert!(err.contains("--accept-proxy-protocol"), "{err}");
        let err = parse_error(&["--trust-proxy-from", "10.0.0.0/33"]);
        assert!(err.contains("--trust-proxy-from"), "{err}");
        let err = parse_error(&["--max-connections-per-ip", "0"]);
        assert!(err.contains("--max-connections-per-ip"), "{err}");
        let err = parse_error(&["--max-connections-per-ip", "many"]);
        assert!(err.contains("--max-connections-per-ip"), "{err}");
    }

    #[test]
    fn the_per_ip_limit_is_taken_as_given() {
        let cfg = config(&["--max-connections-per-ip", "2"]).unwrap();
        assert_eq!(cfg.max_per_ip.map(NonZeroU32::get), Some(2));
    }
}
