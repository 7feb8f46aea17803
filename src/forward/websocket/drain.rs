//! The pace of the drain's closes: each followed connection takes a ticket, and ticket `k` of
//! `n` closes in the `k`-th of `n` equal slots of the spread, at a random point inside it. So
//! the closes come at a steady rate (stratified, not merely random: no second gets more than
//! its share), and clients reconnect at that rate instead of all in the same second.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The drain's plan, fixed when it begins.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// When the drain began.
    pub start: Instant,
    /// The followed connections open then.
    pub count: u64,
    /// The window.
    pub spread: Duration,
}

impl Plan {
    /// Closes per second.
    pub fn rate(&self) -> f64 {
        if self.spread.is_zero() {
            return self.count as f64;
        }
        self.count as f64 / self.spread.as_secs_f64()
    }
}

/// Shared by every followed connection.
#[derive(Debug, Default)]
pub struct DrainSpread {
    began: CancellationToken,
    plan: OnceLock<Plan>,
    tickets: AtomicU64,
    open: AtomicU64,
}

impl DrainSpread {
    /// Counts a followed connection in (until the guard drops).
    pub fn enter(&self) -> OpenGuard<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(self)
    }

    /// Resolves when the drain begins.
    pub fn began(&self) -> WaitForCancellationFutureOwned {
        self.began.clone().cancelled_owned()
    }

    /// Fixes the plan for the followed connections open now, and tells them.
    pub fn begin(&self, spread: Duration) -> Plan {
        let plan = *self.plan.get_or_init(|| Plan {
            start: Instant::now(),
            count: self.open.load(Ordering::Relaxed),
            spread,
        });
        self.began.cancel();
        plan
    }

    /// When the caller closes: the next ticket's slot, at a random point inside it. A
    /// connection beyond the count (one still in its handshake when the drain began) gets a
    /// random time in the window.
    pub fn ticket(&self) -> Instant {
        let Some(plan) = self.plan.get() else {
            return Instant::now();
        };
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let spread = u64::try_from(plan.spread.as_nanos()).unwrap_or(u64::MAX);
        let offset = slot_offset(ticket, plan.count, spread, rand::random_range(0.0..1.0));
        plan.start + Duration::from_nanos(offset)
    }
}

/// Nanoseconds into a `spread` of ticket `k` of `n`, at `fraction` (0..1) into its slot.
fn slot_offset(k: u64, n: u64, spread: u64, fraction: f64) -> u64 {
    if k >= n || n == 0 {
        return (spread as f64 * fraction) as u64;
    }
    let slot = spread as f64 / n as f64;
    ((k as f64 + fraction) * slot).min(spread as f64) as u64
}

/// Counts a followed connection while it lives.
pub struct OpenGuard<'a>(&'a DrainSpread);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_spread_the_closes_evenly() {
        let spread = 20_000_000_000u64;
        let n = 1000;
        let mut per_second = [0u32; 20];
        for k in 0..n {
            let at = slot_offset(k, n, spread, rand::random_range(0.0..1.0));
            assert!(at < spread);
            per_second[usize::try_from(at / 1_000_000_000).unwrap()] += 1;
        }
        assert!(per_second.iter().all(|&c| c == 50), "{per_second:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn tickets_follow_the_plan() {
        let drain = DrainSpread::default();
        let guards: Vec<_> = (0..4).map(|_| drain.enter()).collect();
        let plan = drain.begin(Duration::from_secs(8));
        assert_eq!(plan.count, 4);
        assert!((plan.rate() - 0.5).abs() < 1e-9);
        drain.began().await;
        for k in 0..4u64 {
            let at = drain.ticket() - plan.start;
            assert!(at >= Duration::from_secs(2 * k) && at < Duration::from_secs(2 * k + 2));
        }
        assert!(
            drain.ticket() - plan.start < Duration::from_secs(8),
            "beyond the count"
        );
        drop(guards);
        assert_eq!(drain.open.load(Ordering::Relaxed), 0);
    }
}
