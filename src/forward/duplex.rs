//! Copying bytes both ways until both directions are done, passing half-closes on.
//!
//! Each direction ([`OneWay`]) reads and writes; when its reader reaches the end it shuts the
//! writer down (a TLS close_notify or a TCP FIN) and the other direction carries on. A TLS peer that leaves without close_notify is treated as a normal end: most
//! browsers do exactly that.

use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::one_way::{Fault, OneWay};
use super::watch::{Dir, Raw, Watch};
use crate::http::canned::{self, Close};

/// Byte counters for the two directions.
#[derive(Clone)]
pub struct Counters {
    /// Bytes read from the client and sent upstream.
    pub client_to_upstream: Counter,
    /// Bytes read from the upstream and sent to the client.
    pub upstream_to_client: Counter,
}

/// How a forwarded connection ended.
#[derive(Debug)]
pub enum CloseReason {
    /// Both sides finished normally.
    Closed,
    /// No byte moved either way for `--idle-timeout`.
    IdleTimeout,
    /// One side ended and the other stayed silent for `--half-close-timeout`.
    HalfCloseTimeout,
    /// The drain deadline passed during shutdown.
    Drain,
    /// Reading from or writing to the client failed.
    ClientError(io::Error),
    /// Reading from or writing to the upstream failed.
    UpstreamError(io::Error),
    /// The drain closed this WebSocket with a Close frame (`--drain-close-spread`), or a
    /// connection that never upgraded between two requests.
    DrainCloseFrame,
    /// `--max-connection-age` passed: closed the same way.
    MaxAge,
    /// The client answered none of our Pings for `--ws-ping-timeout`.
    PingTimeout,
    /// The kernel gave up on the client: keepalive probes or data unacknowledged for
    /// `--tcp-user-timeout` (a vanished client: sleeping laptop, lost NAT state).
    Keepalive,
}

impl CloseReason {
    /// Every word [`reason`](Self::reason) gives: the metric's series are created at zero
    /// from these.
    pub const REASONS: [&'static str; 10] = [
        "closed",
        "idle_timeout",
        "half_close_timeout",
        "drain",
        "client_error",
        "upstream_error",
        "drain_close_frame",
        "max_age",
        "ping_timeout",
        "keepalive",
    ];

    /// A short word for the `connections_closed_total{reason}` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            CloseReason::Closed => Self::REASONS[0],
            CloseReason::IdleTimeout => Self::REASONS[1],
            CloseReason::HalfCloseTimeout => Self::REASONS[2],
            CloseReason::Drain => Self::REASONS[3],
            CloseReason::ClientError(_) => Self::REASONS[4],
            CloseReason::UpstreamError(_) => Self::REASONS[5],
            CloseReason::DrainCloseFrame => Self::REASONS[6],
            CloseReason::MaxAge => Self::REASONS[7],
            CloseReason::PingTimeout => Self::REASONS[8],
            CloseReason::Keepalive => Self::REASONS[9],
        }
    }
}

/// The time limits of a forwarded connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Close when no byte moved either way for this long; `None` = never.
    pub idle: Option<Duration>,
    /// Once one direction has ended, close when no byte moved for this long: a peer that
    /// half-closed and then holds the other half open forever must not hold a slot forever.
    pub half_close: Duration,
}

/// What one step of the copy produced.
enum Step {
    /// Both directions ended, or one failed.
    Done(CloseReason),
    /// One direction ended normally; the other carries on under the half-close timeout.
    HalfClosed,
}

/// Forwards between `client` and `upstream` until both directions end, an error occurs, a
/// timeout passes, or `cancel` fires. Returns the bytes moved each way.
pub fn forward<'a, C, U>(
    client: &'a mut C,
    upstream: &'a mut U,
    counters: &'a Counters,
    timeouts: Timeouts,
    cancel: &'a CancellationToken,
) -> impl Future<Output = (CloseReason, u64, u64)> + 'a
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    forward_watched(client, upstream, counters, timeouts, cancel, Raw)
}

/// [`forward`], with `watch` seeing the bytes as they pass.
///
/// Not an `async fn`, for the reason `proxy::connection::serve` gives: its arguments would be
/// held twice by every connection's task.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn forward_watched<'a, C, U, H>(
    client: &'a mut C,
    upstream: &'a mut U,
    counters: &'a Counters,
    timeouts: Timeouts,
    cancel: &'a CancellationToken,
    mut watch: H,
) -> impl Future<Output = (CloseReason, u64, u64)> + 'a
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    H: Watch + 'a,
{
    async move {
        let activity = Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        };
        let mut up = OneWay::new(counters.client_to_upstream.clone());
        let mut down = OneWay::new(counters.upstream_to_client.clone());
        let mut half_closed = false;

        let outcome = loop {
            // Which limit runs: a bool, not the close reason, is what waits with the copy.
            let (limit, half_close_limit) = match (half_closed, timeouts.idle) {
                (true, Some(idle)) if idle <= timeouts.half_close => (Some(idle), false),
                (true, _) => (Some(timeouts.half_close), true),
                (false, idle) => (idle, false),
            };
            let step = poll_fn(|cx| {
                if let Poll::Ready(reason) = watch.poll_timers(cx) {
                    return Poll::Ready(Step::Done(reason));
                }
                let touch = || activity.touch();
                let up_done = match up.poll(
                    cx,
                    &mut *client,
                    &mut *upstream,
                    &mut watch,
                    Dir::ClientToApp,
                    touch,
                ) {
                    Poll::Ready(Ok(())) => true,
                    Poll::Ready(Err(fault)) => {
                        return Poll::Ready(Step::Done(fault.blame(Side::Client)));
                    }
                    Poll::Pending => false,
                };
                let down_done = match down.poll(
                    cx,
                    &mut *upstream,
                    &mut *client,
                    &mut watch,
                    Dir::AppToClient,
                    touch,
                ) {
                    Poll::Ready(Ok(())) => true,
                    Poll::Ready(Err(fault)) => {
                        return Poll::Ready(Step::Done(fault.blame(Side::Upstream)));
                    }
                    Poll::Pending => false,
                };
                if let Some(reason) = watch.finished()
                    && !up.has_pending()
                    && !down.has_pending()
                {
                    return Poll::Ready(Step::Done(reason));
                }
                if watch.wants_repoll() {
                    cx.waker().wake_by_ref();
                }
                match (up_done, down_done) {
                    (true, true) => Poll::Ready(Step::Done(CloseReason::Closed)),
                    (true, false) | (false, true) if !half_closed => Poll::Ready(Step::HalfClosed),
                    _ => Poll::Pending,
                }
            });
            tokio::select! {
                step = step => match step {
                    Step::Done(reason) => break reason,
                    Step::HalfClosed => {
                        half_closed = true;
                        activity.touch();
                    }
                },
                () = idle_expired(limit, &activity) => break if half_close_limit {
                    CloseReason::HalfCloseTimeout
                } else {
                    CloseReason::IdleTimeout
                },
                () = cancel.cancelled() => break CloseReason::Drain,
            }
        };

        let outcome = watch.outcome(outcome);
        if !matches!(
            outcome,
            CloseReason::Closed
                | CloseReason::ClientError(_)
                | CloseReason::Keepalive
                | CloseReason::PingTimeout
        ) {
            // (A client that stopped answering Pings or keepalive probes would not read our
            // goodbye: lingering on it only holds the socket.)
            // Tell the client we are done (close_notify and a FIN) rather than vanish, then read
            // what it still sends until its end: Linux answers a close with unread bytes in the
            // receive buffer (or bytes arriving after it) with a TCP reset, which the client sees
            // as a failure instead of a clean end (the drain deadline, an app that exited).
            // Bounded, best effort; boxed like the idle timer: only a closing connection needs it.
            Box::pin(canned::goodbye(client, &[], Close::Lingering)).await;
        }
        (outcome, up.total, down.total)
    }
}

/// The side a direction reads from.
enum Side {
    Client,
    Upstream,
}

impl Fault {
    /// The close reason for a fault in the direction that reads from `reader`: a read fault is
    /// that side's, a write fault the other side's.
    fn blame(self, reader: Side) -> CloseReason {
        match (self, reader) {
            // ETIMEDOUT on the client's socket: only the kernel's keepalive or user timeout
            // gives that (net/ipv4/tcp_timer.c, tcp_write_err with sk_err_soft or ETIMEDOUT).
            // When an ICMP error arrived first, the soft error it left is what is reported:
            // EHOSTUNREACH or ENETUNREACH (net/ipv4/tcp_ipv4.c, tcp_v4_err).
            (Fault::Read(e), Side::Client) | (Fault::Write(e), Side::Upstream) if given_up(&e) => {
                CloseReason::Keepalive
            }
            (Fault::Read(e), Side::Client) | (Fault::Write(e), Side::Upstream) => {
                CloseReason::ClientError(e)
            }
            (Fault::Read(e), Side::Upstream) | (Fault::Write(e), Side::Client) => {
                CloseReason::UpstreamError(e)
            }
        }
    }
}

/// The kernel gave up on the client: its keepalive probes or user timeout ran out.
fn given_up(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

/// Resolves once no byte has moved for `idle`; never when `idle` is `None`. The timer is on
/// the heap, and only when there is one: a connection without a limit keeps no room for it.
async fn idle_expired(idle: Option<Duration>, activity: &Activity) {
    match idle {
        None => std::future::pending().await,
        Some(idle) => Box::pin(idle_timer(idle, activity)).await,
    }
}

async fn idle_timer(idle: Duration, activity: &Activity) {
    loop {
        let last = Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
        let deadline = activity.started + last + idle;
        if deadline <= Instant::now() {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// When the connection last moved a byte, in milliseconds since it started.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    fn counters() -> Counters {
        Counters {
            client_to_upstream: Counter::default(),
            upstream_to_client: Counter::default(),
        }
    }

    #[tokio::test]
    async fn half_close_is_passed_on_and_the_other_way_continues() {
        let (mut client_far, mut client_near) = duplex(64);
        let (mut upstream_near, mut upstream_far) = duplex(64);
        let c = counters();
        let task = tokio::spawn(async move {
            let cancel = CancellationToken::new();
            let timeouts = Timeouts {
                idle: None,
                half_close: Duration::from_secs(60),
            };
            forward(&mut client_near, &mut upstream_near, &c, timeouts, &cancel).await
        });
        client_far.write_all(b"hello").await.unwrap();
        client_far.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream_far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello", "the upstream sees the data, then the end");
        upstream_far.write_all(b"still here").await.unwrap();
        upstream_far.shutdown().await.unwrap();
        let mut back = Vec::new();
        client_far.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"still here");
        let (reason, up, down) = task.await.unwrap();
        assert!(matches!(reason, CloseReason::Closed), "{reason:?}");
        assert_eq!((up, down), (5, 10));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed_after_the_timeout() {
        let (mut client_far, mut client_near) = duplex(64);
        let (mut upstream_near, _upstream_far) = duplex(64);
        let c = counters();
        let start = Instant::now();
        let task = tokio::spawn(async move {
            let cancel = CancellationToken::new();
            let timeouts = Timeouts {
                idle: Some(Duration::from_secs(60)),
                half_close: Duration::from_secs(60),
            };
            forward(&mut client_near, &mut upstream_near, &c, timeouts, &cancel).await
        });
        tokio::time::sleep(Duration::from_secs(50)).await;
        client_far.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_secs(50)).await;
        assert!(
            !task.is_finished(),
            "activity at 50 s moved the deadline to 110 s"
        );
        let (reason, ..) = task.await.unwrap();
        assert!(matches!(reason, CloseReason::IdleTimeout), "{reason:?}");
        // Closed at 110 s; then the goodbye waits for the client's end, which this one never
        // sends, for GOODBYE_TIMEOUT.
        assert_eq!(
            start.elapsed().as_secs(),
            110 + canned::GOODBYE_TIMEOUT.as_secs()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_closed_connection_left_hanging_is_closed() {
        let (mut client_far, mut client_near) = duplex(64);
        let (mut upstream_near, mut upstream_far) = duplex(64);
        let c = counters();
        let start = Instant::now();
        let task = tokio::spawn(async move {
            let cancel = CancellationToken::new();
            let timeouts = Timeouts {
                idle: None,
                half_close: Duration::from_secs(30),
            };
            forward(&mut client_near, &mut upstream_near, &c, timeouts, &cancel).await
        });
        // The upstream finishes; the client never closes its half.
        upstream_far.shutdown().await.unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            client_far.read(&mut buf).await.unwrap(),
            0,
            "the client sees the end"
        );
        tokio::time::sleep(Duration::from_secs(20)).await;
        client_far.write_all(b"late").await.unwrap();
        let (reason, up, _) = task.await.unwrap();
        assert!(
            matches!(reason, CloseReason::HalfCloseTimeout),
            "{reason:?}"
        );
        assert_eq!(up, 4, "bytes after the half-close still flowed");
        assert_eq!(
            start.elapsed().as_secs(),
            50 + canned::GOODBYE_TIMEOUT.as_secs(),
            "activity at 20 s moved the deadline (then the goodbye waited for the client)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_connection_reads_what_the_client_still_sends_until_its_end() {
        let (mut client_far, mut client_near) = duplex(64 * 1024);
        let (mut upstream_near, _upstream_far) = duplex(16);
        let c = counters();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let start = Instant::now();
        let task = tokio::spawn(async move {
            let timeouts = Timeouts {
                idle: None,
                half_close: Duration::from_secs(60),
            };
            let outcome = forward(&mut client_near, &mut upstream_near, &c, timeouts, &stop).await;
            (outcome, client_near)
        });
        // More than the upstream takes: the rest waits unread, as in a socket's receive buffer.
        client_far.write_all(&[b'x'; 4096]).await.unwrap();
        tokio::task::yield_now().await;
        cancel.cancel();
        let mut end = Vec::new();
        client_far.read_to_end(&mut end).await.unwrap();
        assert!(end.is_empty(), "the client sees the end");
        client_far.write_all(b"late").await.unwrap();
        client_far.shutdown().await.unwrap();
        let ((reason, ..), mut client_near) = task.await.unwrap();
        assert!(matches!(reason, CloseReason::Drain), "{reason:?}");
        assert!(
            start.elapsed() < canned::GOODBYE_TIMEOUT,
            "it returned at the client's end, not at the timeout"
        );
        let mut rest = Vec::new();
        client_near.read_to_end(&mut rest).await.unwrap();
        assert!(
            rest.is_empty(),
            "every byte the client sent was read: {} left",
            rest.len()
        );
    }
}
