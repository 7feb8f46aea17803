//! The flags of TCP keepalive and `TCP_USER_TIMEOUT` on client sockets, translated into
//! [`Keepalive`].

use std::time::Duration;

use clap::Args;

use super::ConfigError;
use super::parse::parse_duration;
use super::proxy::{OptionalDuration, parse_off_or_duration};
use crate::proxy::keepalive::Keepalive;

/// Flags of `wss-sidecar proxy` about finding clients that vanished.
#[derive(Debug, Clone, Args)]
pub struct KeepaliveArgs {
    /// TCP keepalive on client connections: silence before the first probe (`off`: none).
    /// With the defaults a client that vanished without a FIN (sleeping laptop, lost NAT
    /// state) is found within about 2 minutes; the probes also keep idle flows alive through
    /// NAT and L4 load balancers with longer idle timeouts (AWS NLB 350 s, Azure 4 min).
    #[arg(long, env = "WSS_SIDECAR_TCP_KEEPALIVE", default_value = "60s", value_parser = parse_off_or_duration)]
    pub tcp_keepalive: OptionalDuration,

    /// Between keepalive probes.
    #[arg(long, env = "WSS_SIDECAR_TCP_KEEPALIVE_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub tcp_keepalive_interval: Duration,

    /// Unanswered probes before the connection is dropped (without --tcp-user-timeout, which
    /// takes precedence on Linux).
    #[arg(long, env = "WSS_SIDECAR_TCP_KEEPALIVE_COUNT", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=127))]
    pub tcp_keepalive_count: u32,

    /// TCP_USER_TIMEOUT on client connections (`off`: the kernel's ~15 minutes of
    /// retransmissions): the longest sent data, or keepalive probes, may go unacknowledged
    /// before the connection is dropped. It also bounds a client that stops reading while the
    /// app writes to it, and a mobile client out of coverage for that long.
    #[arg(long, env = "WSS_SIDECAR_TCP_USER_TIMEOUT", default_value = "2m", value_parser = parse_off_or_duration)]
    pub tcp_user_timeout: OptionalDuration,
}

impl KeepaliveArgs {
    /// Checks what clap cannot and builds the typed config.
    pub fn into_config(self) -> Result<Keepalive, ConfigError> {
        if self.tcp_keepalive_interval.is_zero() {
            return Err(ConfigError::new(
                "--tcp-keepalive-interval",
                "must be longer than zero",
            ));
        }
        // The kernel's limits (include/net/tcp.h: MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL).
        const MAX_KEEPALIVE: Duration = Duration::from_secs(32_767);
        for (flag, value) in [
            ("--tcp-keepalive", self.tcp_keepalive.0),
            (
                "--tcp-keepalive-interval",
                Some(self.tcp_keepalive_interval),
            ),
        ] {
            if let Some(value) = value
                && (value > MAX_KEEPALIVE || value < Duration::from_secs(1))
            {
                return Err(ConfigError::new(
                    flag,
                    "must be from 1s to 32767s (the kernel's limits, in whole seconds)",
                ));
            }
        }
        Ok(Keepalive {
            idle: self.tcp_keepalive.0,
            interval: self.tcp_keepalive_interval,
            count: self.tcp_keepalive_count,
            user_timeout: self.tcp_user_timeout.0,
        })
    }
}
