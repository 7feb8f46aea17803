//! The flags of the closes and Pings the sidecar sends WebSockets on its own (drain spread,
//! maximum age, proxy Pings), translated into [`Settings`].

use std::time::Duration;

use clap::Args;

use super::ConfigError;
use super::parse::parse_duration;
use super::proxy::{OptionalDuration, parse_off_or_duration};
use crate::forward::websocket::{
    DEFAULT_CLOSE_CODE, DEFAULT_CLOSE_REASON, MaxAge, Pings, Settings,
};

/// Longest Close reason: a control frame's payload is at most 125 bytes, 2 of them the code
/// (RFC 6455 section 5.5).
const MAX_REASON: usize = 123;

/// Flags of `wss-sidecar proxy` about closing and pinging WebSockets.
#[derive(Debug, Clone, Args)]
pub struct WebSocketArgs {
    /// On drain (after the lame duck), send every WebSocket a Close frame, spread evenly over
    /// this window so clients reconnect at a steady rate rather than all at once (`off`: none;
    /// they are closed without a Close at --drain-timeout). Must fit in --drain-timeout with
    /// three --ws-close-timeouts to spare. Connections that never upgraded are closed
    /// between two requests.
    #[arg(long, env = "WSS_SIDECAR_DRAIN_CLOSE_SPREAD", default_value = "off", value_parser = parse_off_or_duration)]
    pub drain_close_spread: OptionalDuration,

    /// The status code of the sidecar's Close frames: 1012 "service restart" by default (some
    /// clients take 1001 "going away" as "do not reconnect"). 1000-1003, 1007-1014 or
    /// 3000-4999.
    #[arg(long, env = "WSS_SIDECAR_DRAIN_CLOSE_CODE", default_value_t = DEFAULT_CLOSE_CODE)]
    pub drain_close_code: u16,

    /// The reason text of the sidecar's Close frames (at most 123 bytes of UTF-8).
    #[arg(long, env = "WSS_SIDECAR_DRAIN_CLOSE_REASON", default_value = DEFAULT_CLOSE_REASON)]
    pub drain_close_reason: String,

    /// Close connections this old the same way (a WebSocket with a Close frame, others
    /// between requests), so long-lived WebSockets rebalance onto new pods after a scale-out
    /// (`off`: never).
    #[arg(long, env = "WSS_SIDECAR_MAX_CONNECTION_AGE", default_value = "off", value_parser = parse_off_or_duration)]
    pub max_connection_age: OptionalDuration,

    /// Up to this much more than --max-connection-age, uniformly per connection, so that
    /// connections opened together do not close together.
    #[arg(long, env = "WSS_SIDECAR_MAX_CONNECTION_AGE_JITTER", default_value = "0s", value_parser = parse_duration)]
    pub max_connection_age_jitter: Duration,

    /// Send each WebSocket client a Ping this often, and close a client that answers none
    /// within --ws-ping-timeout (`off`: no Pings). Pongs answering our Pings are not passed to
    /// the app; the app's own Pings and Pongs pass as before. Also keeps the flow busy for
    /// load balancers that time out idle WebSockets (ALB: 60 s).
    #[arg(long, env = "WSS_SIDECAR_WS_PING_INTERVAL", default_value = "off", value_parser = parse_off_or_duration)]
    pub ws_ping_interval: OptionalDuration,

    /// With --ws-ping-interval: how long a Pong may take.
    #[arg(long, env = "WSS_SIDECAR_WS_PING_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub ws_ping_timeout: Duration,

    /// The longest the sidecar waits for a message boundary before its Close, and for a peer
    /// to answer its Close.
    #[arg(long, env = "WSS_SIDECAR_WS_CLOSE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub ws_close_timeout: Duration,
}

/// Whether `code` may be sent in a Close frame (RFC 6455 section 7.4: 1004-1006 and 1015 are
/// reserved, and 1016-2999 are for future versions of the protocol).
fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

impl WebSocketArgs {
    /// Checks what clap cannot and builds the typed config; `drain_timeout` is
    /// `--drain-timeout`, which the spread must fit in.
    pub fn into_config(self, drain_timeout: Duration) -> Result<Settings, ConfigError> {
        if !sendable(self.drain_close_code) {
            return Err(ConfigError::new(
                "--drain-close-code",
                format!(
                    "{} cannot be sent in a Close frame (use 1000-1003, 1007-1014 or 3000-4999)",
                    self.drain_close_code
                ),
            ));
        }
        if self.drain_close_reason.len() > MAX_REASON {
            return Err(ConfigError::new(
                "--drain-close-reason",
                format!(
                    "is {} bytes; at most {MAX_REASON} fit in a Close frame",
                    self.drain_close_reason.len()
                ),
            ));
        }
        if self.ws_close_timeout.is_zero() {
            return Err(ConfigError::new(
                "--ws-close-timeout",
                "must be longer than zero",
            ));
        }
        if self.ws_ping_timeout.is_zero() {
            return Err(ConfigError::new(
                "--ws-ping-timeout",
                "must be longer than zero",
            ));
        }
        if let Some(spread) = self.drain_close_spread.0
            && spread + 3 * self.ws_close_timeout > drain_timeout
        {
            return Err(ConfigError::new(
                "--drain-close-spread",
                format!(
                    "{} plus three --ws-close-timeouts ({}) does not fit in --drain-timeout ({}): \
                     raise --drain-timeout (and the pod's terminationGracePeriodSeconds)",
                    humantime::format_duration(spread),
                    humantime::format_duration(3 * self.ws_close_timeout),
                    humantime::format_duration(drain_timeout),
                ),
            ));
        }
        if self.max_connection_age.0.is_none() && !self.max_connection_age_jitter.is_zero() {
            return Err(ConfigError::new(
                "--max-connection-age-jitter",
                "has no effect without --max-connection-age",
            ));
        }
        Ok(Settings {
            drain_spread: self.drain_close_spread.0,
            max_age: self.max_connection_age.0.map(|age| MaxAge {
                age,
                jitter: self.max_connection_age_jitter,
            }),
            pings: self.ws_ping_interval.0.map(|interval| Pings {
                interval,
                timeout: self.ws_ping_timeout,
            }),
            close_code: self.drain_close_code,
            close_reason: self.drain_close_reason,
            close_timeout: self.ws_close_timeout,
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
        ws: WebSocketArgs,
    }

    fn settings(args: &[&str]) -> Result<Settings, ConfigError> {
        let argv = std::iter::once("test").chain(args.iter().copied());
        Flags::try_parse_from(argv)
            .unwrap()
            .ws
            .into_config(Duration::from_secs(30))
    }

    #[test]
    fn everything_is_off_by_default() {
        let s = settings(&[]).unwrap();
        assert!(!s.follows(), "{s:?}");
        assert_eq!(
            (s.close_code, s.close_reason.as_str()),
            (1012, "service restart")
        );
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, flag) in [
            (&["--drain-close-code", "1005"][..], "--drain-close-code"),
            (&["--drain-close-code", "999"], "--drain-close-code"),
            (&["--drain-close-spread", "20s"], "--drain-close-spread"),
            (
                &["--max-connection-age-jitter", "2s"],
                "--max-connection-age-jitter",
            ),
            (&["--ws-close-timeout", "0s"], "--ws-close-timeout"),
        ] {
            assert_eq!(settings(args).unwrap_err().flag, flag, "{args:?}");
        }
        let long = "x".repeat(124);
        assert_eq!(
            settings(&["--drain-close-reason", &long]).unwrap_err().flag,
            "--drain-close-reason"
        );
    }

    #[test]
    fn a_spread_that_fits_follows_frames() {
        let s = settings(&["--drain-close-spread", "10s", "--ws-close-timeout", "2s"]).unwrap();
        assert_eq!(s.drain_spread, Some(Duration::from_secs(10)));
        assert!(s.follows());
        let s = settings(&[
            "--max-connection-age",
            "5s",
            "--max-connection-age-jitter",
            "2s",
        ])
        .unwrap();
        assert_eq!(
            s.max_age,
            Some(MaxAge {
                age: Duration::from_secs(5),
                jitter: Duration::from_secs(2)
            })
        );
    }
}
