//! The data path's threads: one single-threaded tokio runtime per CPU, each running the
//! connections the accept loop hands it, as NGINX's workers are single-threaded event loops.
//!
//! Why not tokio's multi-thread runtime: with it, every readiness event that queues a task
//! also wakes a parked worker to steal it (a futex and a context switch for a task that is
//! then run by the thread that polled the driver anyway). Under a light echo load that was
//! 1.1 futex calls and 2.1 context switches per message, against NGINX's 1.0 context switch
//! and no futex (README, "CPU per message"). A connection never moves between threads here:
//! its sockets, timers and task live on one runtime, with one I/O driver of its own.

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    /// Where the next search for the least-loaded worker starts, so ties rotate.
    next: AtomicUsize,
}

/// One thread and its runtime.
struct Worker {
    handle: Handle,
    /// A child of the connections' token, shared by this worker's connections: each waits on
    /// a token of its own thread (no lock shared between threads, no allocation per
    /// connection), and cancelling the parent (the drain deadline) still ends them all.
    cancel: CancellationToken,
    /// Connections this worker serves now.
    live: Arc<AtomicUsize>,
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
        Ok(Self {
            workers,
            next: AtomicUsize::new(0),
        })
    }

    /// How many threads run.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Runs `task(cancel)` on the worker with the fewest connections, tracked by `tracker`;
    /// `cancel` fires with the token given to [`Workers::start`]. The future is only polled
    /// there: a socket it opens (`TcpStream::from_std`) registers with that worker's driver.
    pub fn spawn<T, F>(&self, tracker: &TaskTracker, task: T)
    where
        T: FnOnce(CancellationToken) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let worker = self.least_loaded();
        let load = Load::add(&worker.live);
        let task = task(worker.cancel.clone());
        tracker.spawn_on(
            async move {
                let _load = load;
                task.await;
            },
            &worker.handle,
        );
    }

    /// The worker with the fewest live connections; among equals, the next in turn.
    fn least_loaded(&self) -> &Worker {
        let n = self.workers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|i| &self.workers[(start + i) % n])
            .min_by_key(|w| w.live.load(Ordering::Relaxed))
            .unwrap_or(&self.workers[start])
    }

    /// Live connections per worker, in thread order.
    #[cfg(test)]
    fn loads(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.live.load(Ordering::Relaxed))
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
            live: Arc::new(AtomicUsize::new(0)),
            _stop: stop,
        })
    }
}

/// One connection counted against its worker, however its task ends.
struct Load(Arc<AtomicUsize>);

impl Load {
    fn add(live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(live))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    /// Spawns a task that runs until the returned sender fires; the receiver tells the name
    /// of the thread it runs on.
    fn spawn_held(
        workers: &Workers,
        tracker: &TaskTracker,
    ) -> (oneshot::Sender<()>, oneshot::Receiver<String>) {
        let (end, ended) = oneshot::channel::<()>();
        let (report, thread) = oneshot::channel();
        workers.spawn(tracker, |_| async move {
            let _ = report.send(std::thread::current().name().unwrap_or("").to_owned());
            let _ = ended.await;
        });
        (end, thread)
    }

    #[tokio::test]
    async fn connections_go_to_the_thread_with_the_fewest_and_run_there() {
        let workers =
            Workers::start(NonZeroUsize::new(2).unwrap(), &CancellationToken::new()).unwrap();
        let tracker = TaskTracker::new();
        let mut held = Vec::new();
        for _ in 0..4 {
            let (end, thread) = spawn_held(&workers, &tracker);
            held.push((end, thread.await.unwrap()));
        }
        assert_eq!(workers.loads(), [2, 2], "two connections per thread");
        let mut names: Vec<_> = held.iter().map(|(_, name)| name.clone()).collect();
        names.sort();
        assert_eq!(
            names,
            ["wss-data-0", "wss-data-0", "wss-data-1", "wss-data-1"]
        );

        // Both connections of wss-data-0 end: it gets the next two (round robin would give
        // it one of them).
        let (freed, kept): (Vec<_>, Vec<_>) =
            held.into_iter().partition(|(_, name)| name == "wss-data-0");
        for (end, _) in freed {
            let _ = end.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), async {
            while workers.loads() != [0, 2] {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("ended tasks no longer count");
        let mut again = Vec::new();
        for _ in 0..2 {
            let (end, thread) = spawn_held(&workers, &tracker);
            assert_eq!(thread.await.unwrap(), "wss-data-0");
            again.push(end);
        }
        assert_eq!(workers.loads(), [2, 2]);
        drop((kept, again));
        tracker.close();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("every task ends");
        assert_eq!(workers.len(), 2);
    }

    #[tokio::test]
    async fn cancelling_the_token_ends_the_connections_of_every_thread() {
        let cancel = CancellationToken::new();
        let workers = Workers::start(NonZeroUsize::new(2).unwrap(), &cancel).unwrap();
        let tracker = TaskTracker::new();
        for _ in 0..4 {
            workers.spawn(&tracker, |cancel| async move { cancel.cancelled().await });
        }
        assert_eq!(workers.loads(), [2, 2]);
        tracker.close();
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("every connection ends when the token fires");
        assert_eq!(workers.loads(), [0, 0]);
    }
}
