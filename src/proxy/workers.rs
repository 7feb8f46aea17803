//! The data path's threads: one single-threaded tokio runtime per CPU, each accepting from
//! the one listening socket and running the connections it accepted, as NGINX's workers do
//! (single-threaded event loops sharing the listener).
//!
//! Why not tokio's multi-thread runtime: with it, every readiness event that queues a task
//! also wakes a parked worker to steal it (a futex and a context switch for a task that is
//! then run by the thread that polled the driver anyway). Under a light echo load that was
//! 1.1 futex calls and 2.1 context switches per message, against NGINX's 1.0 context switch
//! and no futex (README, "CPU per message"). A connection never moves between threads here:
//! its sockets, timers and task live on one runtime, with one I/O driver of its own.
//!
//! Why each thread accepts for itself: handing every accepted socket from an accept thread
//! to a data thread (deregister, cross-thread wake, register) cost 4.1 context switches and
//! 253 µs of CPU per full handshake against 2.5 and 228 µs without the hand-over (`perf stat`
//! during `bench/run`'s handshake figure). Every thread's driver now watches the listener;
//! a new connection wakes the idle ones, and the first to `accept` takes it (the others get
//! `EAGAIN`), so the least busy thread tends to win, with no balancing of our own.

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The environment variable that overrides the number of data-path threads: tokio's own name
/// for its worker count, which `bench/run` already sets.
pub const THREADS_VAR: &str = "TOKIO_WORKER_THREADS";

/// How many data-path threads to run: `TOKIO_WORKER_THREADS` when set, else the CPUs this
/// process may use. `std::thread::available_parallelism` follows the affinity mask and, on
/// Linux, the cgroup's CPU quota (`cpu.max`, what a container's CPU limit sets), rounded down
/// and at least 1 (rust-lang/rust library/std/src/sys/pal/unix/thread.rs, `cgroups::quota`).
pub fn thread_count(var: Option<&str>) -> Result<NonZeroUsize, String> {
    match var {
        Some(value) => value
            .trim()
            .parse::<NonZeroUsize>()
            .map_err(|_| format!("expected a whole number of threads, at least 1, got {value:?}")),
        None => Ok(std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)),
    }
}

/// The running data-path threads. Dropping this stops them: each runtime then drops the
/// tasks it still holds (after the drain, only connections past the cancel grace).
pub struct Workers {
    workers: Vec<Worker>,
}

/// One thread and its runtime.
struct Worker {
    handle: Handle,
    /// A child of the connections' token, shared by this worker's connections: each waits on
    /// a token of its own thread (no lock shared between threads, no allocation per
    /// connection), and cancelling the parent (the drain deadline) still ends them all.
    cancel: CancellationToken,
    /// Dropped to stop the thread.
    _stop: oneshot::Sender<()>,
}

impl Workers {
    /// Starts `count` threads named `wss-data-N`, each with a single-threaded runtime; their
    /// connections end when `cancel` fires.
    pub fn start(count: NonZeroUsize, cancel: &CancellationToken) -> io::Result<Self> {
        let workers = (0..count.get())
            .map(|index| Worker::start(index, cancel.child_token()))
            .collect::<io::Result<_>>()?;
        Ok(Self { workers })
    }

    /// How many threads run.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Runs `task(index, cancel)` on every worker (an accept loop each): `cancel` is that
    /// worker's token, which fires with the one given to [`Workers::start`]. What the future
    /// spawns (`tokio::spawn`, a `TaskTracker`) runs on the same thread, and the sockets it
    /// opens register with that thread's driver.
    pub fn run_on_each<T, F>(&self, mut task: T) -> Vec<JoinHandle<()>>
    where
        T: FnMut(usize, CancellationToken) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        self.workers
            .iter()
            .enumerate()
            .map(|(index, worker)| worker.handle.spawn(task(index, worker.cancel.clone())))
            .collect()
    }
}

impl Worker {
    fn start(index: usize, cancel: CancellationToken) -> io::Result<Self> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("wss-data-{index}"))
            .spawn(move || {
                // Runs the spawned connections until the sender is dropped.
                runtime.block_on(async move {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            handle,
            cancel,
            _stop: stop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio_util::task::TaskTracker;

    #[test]
    fn the_thread_count_is_the_variable_or_the_cpus_this_process_may_use() {
        assert_eq!(thread_count(Some("3")).unwrap().get(), 3);
        let cpus = std::thread::available_parallelism().unwrap();
        assert_eq!(thread_count(None).unwrap(), cpus);
        for bad in ["0", "-1", "two", ""] {
            let err = thread_count(Some(bad)).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[tokio::test]
    async fn every_thread_runs_one_copy_and_what_it_spawns_stays_there() {
        let workers =
            Workers::start(NonZeroUsize::new(2).unwrap(), &CancellationToken::new()).unwrap();
        let (report, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let loops = workers.run_on_each(|index, _| {
            let report = report.clone();
            async move {
                let outer = std::thread::current().name().unwrap_or("").to_owned();
                let inner =
                    tokio::spawn(async { std::thread::current().name().unwrap_or("").to_owned() })
                        .await
                        .unwrap();
                let _ = report.send((index, outer, inner));
            }
        });
        drop(report);
        for handle in loops {
            handle.await.unwrap();
        }
        let mut seen = Vec::new();
        while let Some(seen_one) = reports.recv().await {
            seen.push(seen_one);
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                (0, "wss-data-0".to_owned(), "wss-data-0".to_owned()),
                (1, "wss-data-1".to_owned(), "wss-data-1".to_owned()),
            ]
        );
        assert_eq!(workers.len(), 2);
    }

    #[tokio::test]
    async fn cancelling_the_token_ends_the_connections_of_every_thread() {
        let cancel = CancellationToken::new();
        let workers = Workers::start(NonZeroUsize::new(2).unwrap(), &cancel).unwrap();
        let tracker = TaskTracker::new();
        let spawner = tracker.clone();
        let loops = workers.run_on_each(move |_, cancel| {
            let tracker = spawner.clone();
            async move {
                for _ in 0..2 {
                    let cancel = cancel.clone();
                    tracker.spawn(async move { cancel.cancelled().await });
                }
            }
        });
        for handle in loops {
            handle.await.unwrap();
        }
        assert_eq!(tracker.len(), 4);
        tracker.close();
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("every connection ends when the token fires");
    }
}
