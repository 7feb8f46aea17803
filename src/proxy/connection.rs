//! One client connection: the PROXY header and per-client limit when on, TLS handshake,
//! upstream connect, forwarding, accounting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::keepalive::Keepalive;
use super::per_ip::{PerIp, PerIpGuard};
use super::proxy_header::{Announced, InboundProxy};
use crate::forward::websocket::{Follow, WebSockets};
use crate::forward::{self, CloseReason, Counters, Preamble, Timeouts, Upstream};
use crate::http::canned::{self, Close};
use crate::metrics::{Metrics, REFUSED_PER_IP};
use crate::tls;

/// What a client is told when the app cannot be reached (answered 502, as NGINX would, so a
/// browser or WebSocket client reports a gateway problem rather than a protocol error).
const BAD_GATEWAY: &str = "The upstream is not reachable\n";

/// What every connection task shares.
pub struct ConnectionContext {
    /// The TLS configurations, chosen from per ClientHello (their resolver reads the
    /// certificate store).
    pub tls: tls::ServerConfigs,
    /// Where the app listens.
    pub upstream: Upstream,
    /// `--handshake-timeout`.
    pub handshake_timeout: Duration,
    /// `--connect-timeout`.
    pub connect_timeout: Duration,
    /// `--idle-timeout` and `--half-close-timeout`.
    pub timeouts: Timeouts,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Byte counters, resolved once rather than per connection.
    pub counters: Counters,
    /// TLS-ALPN-01 answers when ACME uses that challenge; `None` keeps the plain handshake.
    pub alpn_challenges: Option<Arc<dyn tls::AlpnChallenges>>,
    /// The allow-list, PROXY header and forwarded headers (`Preamble::is_off` when unused).
    pub preamble: Preamble,
    /// TCP keepalive and user timeout on client sockets.
    pub keepalive: Keepalive,
    /// The closes and Pings the sidecar sends on its own; `None` when all are off (the data
    /// path then copies bytes without looking at them).
    pub websockets: Option<WebSockets>,
    /// `--accept-proxy-protocol`: the header read before the handshake; `None` when off.
    pub inbound_proxy: Option<InboundProxy>,
    /// `--max-connections-per-ip`: live connections per client; `None` when off.
    pub per_ip: Option<PerIp>,
}

/// Decrements the open-connections gauge however the task ends.
struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves one accepted client until it is done or `cancel` fires (drain deadline).
///
/// Not an `async fn`: that copies its arguments into locals and keeps both slots in the task
/// for the connection's whole life (80 bytes); an `async move` block uses the captured values
/// in place.
///
/// `peer` is the TCP peer until a PROXY header names the client; from then on it is that
/// client, for every log line, metric and header.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn serve(
    tcp: TcpStream,
    mut peer: SocketAddr,
    ctx: Arc<ConnectionContext>,
    cancel: CancellationToken,
) -> impl Future<Output = ()> + Send {
    async move {
        ctx.metrics.connections.inc();
        ctx.metrics.connections_open.inc();
        let _open = OpenGuard(ctx.metrics.connections_open.clone());
        // Small WebSocket frames must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        ctx.keepalive.apply(&tcp);
        let started = Instant::now();

        // Every byte of this task's state is held by every idle connection, so: the handshake
        // (a rustls connection mid-handshake, its timers, the upstream connect) is boxed, on the
        // heap only while it runs; and its result is matched in place, not bound to a name first,
        // which would keep a second slot for the TLS stream for the connection's whole life
        // (rustc does not reuse a moved-from local's space). The task: 4.5 KB -> 2.1 KB.
        // The per-client place is held (`_per_ip`) until the connection ends.
        let (mut client, mut upstream, follow, _per_ip) = match tokio::select! {
            opened = Box::pin(open(tcp, &mut peer, &ctx, started)) => opened,
            () = cancel.cancelled() => None,
        } {
            Some(opened) => opened,
            None => return,
        };
        let handshake_ms = millis(started.elapsed());

        let (client_ref, upstream_ref) = (&mut client, &mut upstream);
        let (reason, up, down) = match follow {
            None => {
                forward::forward(
                    client_ref,
                    upstream_ref,
                    &ctx.counters,
                    ctx.timeouts,
                    &cancel,
                )
                .await
            }
            // Boxed: only followed connections carry the watch's state.
            Some(follow) => {
                Box::pin(forward::forward_watched(
                    client_ref,
                    upstream_ref,
                    &ctx.counters,
                    ctx.timeouts,
                    &cancel,
                    follow,
                ))
                .await
            }
        };
        Metrics::count(&ctx.metrics.connections_closed, reason.reason());
        ctx.metrics
            .connection
            .connection_duration
            .observe(started.elapsed().as_secs_f64());
        if let CloseReason::UpstreamError(err) = &reason {
            warn!(client.addr = %peer, upstream = %ctx.upstream, error = %err, "upstream connection failed");
        }
        // The one line per connection.
        debug!(
            client.addr = %peer,
            tls.sni = client.server_name().unwrap_or(""),
            handshake_ms,
            duration_ms = millis(started.elapsed()),
            bytes.client_to_upstream = up,
            bytes.upstream_to_client = down,
            close.reason = reason.reason(),
            error = match &reason {
                CloseReason::ClientError(e) | CloseReason::UpstreamError(e) => e.to_string(),
                _ => String::new(),
            },
            "connection closed"
        );
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The PROXY header and the per-client limit when on, handshake, then connect upstream; with
/// the frames followed, the watch that follows them; with the per-client limit, the
/// connection's place in it. `None` when the connection ended on the way (already counted and
/// logged). Sets `peer` to the client a PROXY header names.
async fn open<'a>(
    mut tcp: TcpStream,
    peer: &mut SocketAddr,
    ctx: &'a ConnectionContext,
    started: Instant,
) -> Option<(
    tls::TlsStream<TcpStream>,
    forward::UpstreamStream,
    Option<Follow<'a>>,
    Option<Box<PerIpGuard<'a>>>,
)> {
    let metrics = &ctx.metrics;
    // The PROXY header shares the handshake's deadline: a peer that sends neither in time
    // holds its slot no longer than one that stalls in TLS.
    let deadline = started + ctx.handshake_timeout;
    if let Some(inbound) = &ctx.inbound_proxy {
        match inbound.read(&mut tcp, *peer, deadline).await {
            Ok(Announced::Client(client)) => *peer = client,
            Ok(Announced::Local) => {}
            Err(err) => {
                Metrics::count(&metrics.connections_refused, err.reason());
                debug!(client.addr = %peer, error = %err, "connection refused: PROXY header");
                return None;
            }
        }
    }
    let peer = *peer;
    let per_ip = match &ctx.per_ip {
        None => None,
        // Boxed: every task holds 8 bytes for it (the Option's pointer) rather than 24; the
        // place itself is on the heap only while the limit is on.
        Some(table) => match table.acquire(peer.ip()) {
            Some(place) => Some(Box::new(place)),
            None => {
                Metrics::count(&metrics.connections_refused, REFUSED_PER_IP);
                debug!(client.addr = %peer, "connection refused: --max-connections-per-ip reached");
                return None;
            }
        },
    };
    let challenges = ctx.alpn_challenges.as_deref();
    let mut client = match tls::accept(tcp, &ctx.tls, challenges, deadline).await {
        Ok(stream) => {
            let handshake = &metrics.connection;
            handshake
                .handshake_duration
                .observe(started.elapsed().as_secs_f64());
            handshake.count_handshake(stream.tls());
            stream
        }
        Err(err @ tls::HandshakeError::AcmeChallenge(_)) => {
            debug!(client.addr = %peer, "{err}");
            return None;
        }
        Err(err) => {
            Metrics::count(&metrics.handshake_failures, err.reason());
            debug!(client.addr = %peer, error = %err, "tls handshake failed");
            return None;
        }
    };
    let mut preamble = None;
    if !ctx.preamble.is_off() {
        // Boxed so its buffers do not enlarge every connection's task when the feature is off.
        match Box::pin(ctx.preamble.prepare(&mut client, peer)).await {
            Ok(bytes) => preamble = bytes,
            Err(refusal) => {
                Metrics::count(&metrics.connections_rejected, refusal.reason());
                debug!(client.addr = %peer, error = %refusal, "client refused");
                return None;
            }
        }
    }
    let connecting = Instant::now();
    match forward::connect(&ctx.upstream, ctx.connect_timeout).await {
        Ok(mut upstream) => {
            metrics
                .connection
                .upstream_connect_duration
                .observe(connecting.elapsed().as_secs_f64());
            if let Some(prepared) = &preamble {
                let bytes = &prepared.bytes;
                let sent = tokio::time::timeout(ctx.connect_timeout, upstream.write_all(bytes));
                if !matches!(sent.await, Ok(Ok(()))) {
                    Metrics::count(&metrics.upstream_connect_failures, "io");
                    warn!(client.addr = %peer, upstream = %ctx.upstream, "cannot send the preamble to the upstream");
                    return None;
                }
                ctx.counters.client_to_upstream.inc_by(bytes.len() as u64);
            }
            let follow = ctx.websockets.as_ref().map(|ws| {
                let head = preamble.as_ref().map(forward::Prepared::head);
                Follow::new(ws, started, head.unwrap_or_default())
            });
            Some((client, upstream, follow, per_ip))
        }
        Err(err) => {
            Metrics::count(&metrics.upstream_connect_failures, err.reason());
            warn!(client.addr = %peer, upstream = %ctx.upstream, error = %err, "cannot reach upstream");
            let answer = canned::answer(StatusCode::BAD_GATEWAY, BAD_GATEWAY);
            canned::goodbye(&mut client, &answer, Close::Now).await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::CertStore;

    /// Every idle WebSocket holds its task for as long as it is open, so the task's size is
    /// memory per connection (the benchmark's idle-memory figure): the handshake must not stay
    /// inline, and the TLS stream (about 1.2 KB) must be held once.
    #[tokio::test]
    async fn a_connection_task_holds_the_tls_stream_once_and_no_handshake_state() {
        let metrics = Arc::new(Metrics::new());
        let store = CertStore::new(Arc::clone(&metrics));
        let config = tls::server_config(Arc::new(tls::Resolver::new(store)), None).unwrap();
        let ctx = Arc::new(ConnectionContext {
            tls: tls::ServerConfigs::new(config),
            upstream: Upstream::Unix("/nonexistent".into()),
            handshake_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            timeouts: forward::Timeouts {
                idle: None,
                half_close: Duration::from_secs(1),
            },
            counters: Counters {
                client_to_upstream: metrics.bytes_client_to_upstream.clone(),
                upstream_to_client: metrics.bytes_upstream_to_client.clone(),
            },
            metrics,
            alpn_challenges: None,
            preamble: Preamble::default(),
            keepalive: Keepalive {
                idle: None,
                interval: Duration::from_secs(1),
                count: 1,
                user_timeout: None,
            },
            websockets: None,
            inbound_proxy: None,
            per_ip: None,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let peer = tcp.local_addr().unwrap();
        let tls_stream = std::mem::size_of::<tls::TlsStream<TcpStream>>();

        let task = serve(tcp, peer, ctx, CancellationToken::new());
        let size = std::mem::size_of_val(&task);
        eprintln!(
            "SIZES task {size} stream {tls_stream} conn {} upstream {} cancel_fut {} ",
            std::mem::size_of::<rustls::server::UnbufferedServerConnection>(),
            std::mem::size_of::<forward::UpstreamStream>(),
            std::mem::size_of::<tokio_util::sync::WaitForCancellationFuture<'static>>(),
        );
        // Was 4.5 KB with the handshake inline and the stream held twice.
        assert!(
            size < tls_stream + 1024,
            "the connection task is {size} bytes; the TLS stream alone is {tls_stream}"
        );
    }
}
