//! TCP keepalive and `TCP_USER_TIMEOUT` on client sockets, so the kernel finds clients that
//! vanished without a FIN (a sleeping laptop, NAT state lost on a mobile network) and their
//! connections stop holding `--max-connections` slots.
//!
//! With `TCP_USER_TIMEOUT` set, Linux ends a connection whose keepalive probes go unanswered
//! once the time since the peer last acknowledged anything passes the user timeout, whatever
//! the probe count (net/ipv4/tcp_timer.c, `tcp_keepalive_timer`); and it ends one whose sent
//! data stays unacknowledged that long (`tcp_retransmit_timer` via `retransmits_timed_out`).
//! Either way the next read or write fails with `ETIMEDOUT` (`tcp_write_err`), which the copy
//! reports as the `keepalive` close reason.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// The keepalive flags, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// `--tcp-keepalive`: silence before the first probe; `None` = no keepalive.
    pub idle: Option<Duration>,
    /// `--tcp-keepalive-interval`: between probes.
    pub interval: Duration,
    /// `--tcp-keepalive-count`: unanswered probes before the kernel gives up (when there is no
    /// user timeout).
    pub count: u32,
    /// `--tcp-user-timeout`: the longest data (or probes) may go unacknowledged.
    pub user_timeout: Option<Duration>,
}

impl Keepalive {
    /// The longest a vanished client holds its slot: keepalive idle plus the probes, or, with
    /// a user timeout, the first probe tick past it (the kernel checks at each probe, and
    /// only once one probe is out: see the module).
    pub fn reap_bound(&self) -> Option<Duration> {
        let idle = self.idle?;
        Some(match self.user_timeout {
            Some(user) => user.max(idle) + self.interval,
            None => idle + self.interval * self.count,
        })
    }

    /// Sets the options on `tcp`. Best effort: a socket that refuses keeps the defaults.
    pub fn apply(&self, tcp: &TcpStream) {
        let socket = SockRef::from(tcp);
        if let Some(idle) = self.idle {
            let params = TcpKeepalive::new()
                .with_time(idle)
                .with_interval(self.interval)
                .with_retries(self.count);
            let _ = socket.set_tcp_keepalive(&params);
        }
        if self.user_timeout.is_some() {
            let _ = socket.set_tcp_user_timeout(self.user_timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_options_reach_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let keepalive = Keepalive {
            idle: Some(Duration::from_secs(7)),
            interval: Duration::from_secs(3),
            count: 4,
            user_timeout: Some(Duration::from_secs(20)),
        };
        keepalive.apply(&client);
        let socket = SockRef::from(&client);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(3)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 4);
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(20))
        );
        assert_eq!(keepalive.reap_bound(), Some(Duration::from_secs(23)));
    }
}
