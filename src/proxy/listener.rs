//! The accept loop: bounded by `--max-connections`, one task per connection, handed to the
//! least-loaded data-path thread ([`Workers`]), stoppable.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::connection::{self, ConnectionContext};
use super::workers::Workers;
use crate::metrics::{Metrics, REFUSED_AT_LIMIT};

/// Pause after an accept error such as EMFILE, so a full file table does not spin the loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until `stop` fires, then drops the listener so new connections are
/// refused by the kernel. Each connection task runs on one of `workers`, holds a permit of
/// `limit` and is tracked by `tracker`; the token the workers were started with ends them
/// all (the drain deadline).
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ConnectionContext>,
    workers: Arc<Workers>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(err) => {
                // Per-connection errors (ECONNABORTED) and resource exhaustion alike: log,
                // breathe, carry on; the listener itself is still good.
                warn!(error = %err, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            Metrics::count(&ctx.metrics.connections_refused, REFUSED_AT_LIMIT);
            debug!(client.addr = %peer, "connection refused: --max-connections reached");
            drop(tcp);
            continue;
        };
        // Out of this runtime's I/O driver, into the chosen worker's (registered there when
        // the task first runs).
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(err) => {
                debug!(client.addr = %peer, error = %err, "cannot hand the connection over");
                continue;
            }
        };
        let ctx = Arc::clone(&ctx);
        workers.spawn(&tracker, |cancel| async move {
            match TcpStream::from_std(tcp) {
                Ok(tcp) => connection::serve(tcp, peer, ctx, cancel).await,
                Err(err) => {
                    debug!(client.addr = %peer, error = %err, "cannot register the connection")
                }
            }
            drop(permit);
        });
    }
}
