//! The crate's clock: wall-clock time as whole seconds since the Unix epoch, the unit of
//! certificate validity, Lease renewals and the ACME store's timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// `t` in whole seconds since the epoch; 0 before it, `i64::MAX` far beyond it.
pub fn epoch_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn whole_seconds_clamped_at_the_epoch() {
        assert_eq!(epoch_seconds(UNIX_EPOCH), 0);
        assert_eq!(epoch_seconds(UNIX_EPOCH + Duration::from_millis(1_999)), 1);
        assert_eq!(epoch_seconds(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}
