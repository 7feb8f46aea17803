//! When to renew and when to retry: pure functions of the certificate, the CA's hints and an
//! explicit `now` (seconds since the epoch), so the timing is unit-tested without waiting.

use std::time::Duration;

/// A day in seconds.
const DAY: i64 = 86_400;
/// Certificates shorter-lived than this renew at half their lifetime, not a third (RFC 9773
/// and Let's Encrypt's advice for short-lived certificates).
const SHORT_LIVED: i64 = 10 * DAY;
/// Retry-After on a renewal-information response is clamped to this range (RFC 9773 §4.3.3).
const ARI_RETRY_MIN: Duration = Duration::from_secs(60);
const ARI_RETRY_MAX: Duration = Duration::from_secs(DAY as u64);

/// The validity window of a certificate, seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: i64,
    /// notAfter.
    pub not_after: i64,
}

/// When to renew without renewal information: when a third of the lifetime remains (half for
/// certificates shorter than 10 days), moved earlier by up to a tenth of that remainder by
/// `jitter` (0..1) so replicas of many deployments do not renew in lockstep. `renew_before`
/// (a test knob) replaces the rule.
pub fn renewal_time(validity: Validity, renew_before: Option<Duration>, jitter: f64) -> i64 {
    if let Some(before) = renew_before {
        let before = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
        return validity.not_after.saturating_sub(before);
    }
    let lifetime = (validity.not_after - validity.not_before).max(0);
    let remaining = if lifetime < SHORT_LIVED {
        lifetime / 2
    } else {
        lifetime / 3
    };
    let spread = (remaining as f64 / 10.0 * jitter.clamp(0.0, 1.0)) as i64;
    validity.not_after - remaining - spread
}

/// A time in the CA's suggested renewal window `[start, end]`, chosen by `random` (0..1);
/// when the window is already over, `now`.
pub fn ari_time(start: i64, end: i64, random: f64, now: i64) -> i64 {
    if end <= now {
        return now;
    }
    let start = start.max(now);
    start + ((end - start) as f64 * random.clamp(0.0, 1.0)) as i64
}

/// When to ask for renewal information again: the server's Retry-After, clamped to 1 min–1 day.
pub fn ari_recheck(retry_after: Duration) -> Duration {
    retry_after.clamp(ARI_RETRY_MIN, ARI_RETRY_MAX)
}

/// The wait after the `failures`-th failure in a row, as Let's Encrypt asks of clients: `base`
/// (1 min by default), then 10x, 100x, then a day (1440x `base`); never shorter than the CA's
/// Retry-After.
pub fn backoff(failures: u32, base: Duration, retry_after: Option<Duration>) -> Duration {
    let factor = match failures {
        0 | 1 => 1,
        2 => 10,
        3 => 100,
        _ => 1440,
    };
    let delay = base.saturating_mul(factor);
    retry_after.map_or(delay, |r| delay.max(r))
}

/// A number in 0..1 derived from `bytes` (a certificate): every replica computes the same
/// renewal time for the same certificate, and different certificates spread out.
pub fn unit_from(bytes: &[u8]) -> f64 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const NINETY_DAYS: Validity = Validity {
        not_before: 0,
        not_after: 90 * DAY,
    };

    #[test]
    fn renews_with_a_third_left_minus_jitter() {
        assert_eq!(renewal_time(NINETY_DAYS, None, 0.0), 60 * DAY);
        let jittered = renewal_time(NINETY_DAYS, None, 1.0);
        assert_eq!(jittered, 60 * DAY - 3 * DAY);
        let mid = renewal_time(NINETY_DAYS, None, 0.5);
        assert!(mid < 60 * DAY && mid > jittered);
    }

    #[test]
    fn short_lived_certificates_renew_at_half() {
        let six_days = Validity {
            not_before: 100,
            not_after: 100 + 6 * DAY,
        };
        assert_eq!(renewal_time(six_days, None, 0.0), 100 + 3 * DAY);
    }

    #[test]
    fn renew_before_overrides_the_rule() {
        let before = Some(Duration::from_secs(10 * DAY as u64));
        assert_eq!(renewal_time(NINETY_DAYS, before, 0.7), 80 * DAY);
        let forced = Some(Duration::from_secs(1000 * DAY as u64));
        assert!(renewal_time(NINETY_DAYS, forced, 0.0) < 0);
    }

    #[test]
    fn ari_picks_inside_the_window() {
        let now = 1_000;
        assert_eq!(ari_time(2_000, 3_000, 0.0, now), 2_000);
        assert_eq!(ari_time(2_000, 3_000, 1.0, now), 3_000);
        assert_eq!(ari_time(2_000, 3_000, 0.25, now), 2_250);
        // A window that has begun starts at now; one that has ended means now.
        assert_eq!(ari_time(0, 2_000, 0.5, now), 1_500);
        assert_eq!(ari_time(0, 500, 0.5, now), now);
    }

    #[test]
    fn ari_retry_after_is_clamped_to_a_minute_and_a_day() {
        assert_eq!(ari_recheck(Duration::from_secs(1)), Duration::from_secs(60));
        assert_eq!(
            ari_recheck(Duration::from_secs(3600)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            ari_recheck(Duration::from_secs(7 * 86_400)),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn backoff_follows_lets_encrypt() {
        let min = Duration::from_secs(60);
        let delays: Vec<u64> = (1..=5).map(|n| backoff(n, min, None).as_secs()).collect();
        assert_eq!(delays, [60, 600, 6_000, 86_400, 86_400]);
        // Retry-After lengthens a delay, never shortens it.
        assert_eq!(
            backoff(1, min, Some(Duration::from_secs(3600))).as_secs(),
            3600
        );
        assert_eq!(backoff(2, min, Some(Duration::from_secs(1))).as_secs(), 600);
    }

    #[test]
    fn unit_from_is_stable_and_in_range() {
        let a = unit_from(b"certificate one");
        assert_eq!(a, unit_from(b"certificate one"));
        assert_ne!(a, unit_from(b"certificate two"));
        assert!((0.0..1.0).contains(&a));
    }
}
