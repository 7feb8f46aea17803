//! The accept loop, one per data-path thread ([`Workers`]): bounded by `--max-connections`,
//! one task per connection on the thread that accepted it, stoppable.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::connection::{self, ConnectionContext};
#[cfg(doc)]
use super::workers::Workers;
use crate::metrics::{Metrics, REFUSED_AT_LIMIT};

/// Pause after an accept error such as EMFILE, so a full file table does not spin the loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// `count` handles on `listener`'s one socket (the same file, `dup`ed), out of this runtime's
/// I/O driver, for the data threads to watch.
pub fn share(listener: TcpListener, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let listener = listener.into_std()?;
    let mut copies = (1..count)
        .map(|_| listener.try_clone())
        .collect::<io::Result<Vec<_>>>()?;
    copies.push(listener);
    Ok(copies)
}

/// Accepts connections from `listener` until `stop` fires, then drops it (the socket closes,
/// and the kernel refuses new connections, once every thread's copy is dropped). Runs on one
/// data-path thread ([`Workers::run_on_each`]): each connection task runs on this thread, holds
/// a permit of `limit` (shared by all threads), is tracked by `tracker`, and ends when `cancel`
/// (this thread's token) fires.
pub async fn accept_loop(
    listener: std::net::TcpListener,
    ctx: Arc<ConnectionContext>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
    cancel: CancellationToken,
) {
    // Registered with this thread's I/O driver.
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            warn!(error = %err, "cannot watch the listener on this data thread");
            return;
        }
    };
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
        let ctx = Arc::clone(&ctx);
        let cancel = cancel.clone();
        tracker.spawn(async move {
            connection::serve(tcp, peer, ctx, cancel).await;
            drop(permit);
        });
    }
}
