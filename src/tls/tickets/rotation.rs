//! What the Lease holder writes to the key Secret: the first three keys when it is empty, and
//! one rotation (previous ← current, current ← next, next ← random) once the period has passed
//! since the time stored beside the keys.

use std::time::{Duration, SystemTime};

use super::keys::{KeyError, KeyText};
use crate::k8s::{SecretData, SecretWrite};

/// The Secret's data key holding the key text (the format of `--ticket-keys file:`).
pub const KEYS: &str = "ticket-keys";
/// The data key holding when the keys last rotated, RFC 3339 (UTC, whole seconds).
pub const ROTATED_AT: &str = "rotated-at";

/// The write that brings `data` up to date at `now`, or `None` when the keys are fresh. Keys
/// that do not parse are an error: they are left for the operator to fix, never replaced
/// (replacing them would end every session they still protect). Without a readable
/// `rotated-at` the keys' age is unknown, so they rotate (which keeps their tickets valid).
pub fn change(
    data: &SecretData,
    now: SystemTime,
    period: Duration,
) -> Result<Option<SecretWrite>, KeyError> {
    let text = data
        .get(KEYS)
        .filter(|t| !t.iter().all(u8::is_ascii_whitespace));
    let next = match text {
        None => KeyText::random()?,
        Some(text) => {
            let keys = KeyText::parse(text)?;
            if !due(data, now, period) {
                return Ok(None);
            }
            keys.rotated()?
        }
    };
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    let set = [
        (KEYS.to_string(), next.to_text().into_bytes()),
        (ROTATED_AT.to_string(), stamp.into_bytes()),
    ];
    Ok(Some(SecretWrite::from(SecretData::from(set))))
}

/// Whether `period` has passed since the stored `rotated-at` (or it cannot be read).
fn due(data: &SecretData, now: SystemTime, period: Duration) -> bool {
    let at = data
        .get(ROTATED_AT)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| humantime::parse_rfc3339(v.trim()).ok());
    match at {
        Some(at) => at.checked_add(period).is_none_or(|due| now >= due),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn apply(data: &mut SecretData, write: Option<SecretWrite>) {
        data.extend(write.expect("a write").set);
    }

    #[test]
    fn an_empty_secret_gets_three_keys_and_rotates_once_per_period() {
        let mut data = SecretData::new();
        let write = change(&data, at(0), HOUR).unwrap();
        apply(&mut data, write);
        let first = KeyText::parse(&data[KEYS]).unwrap();
        assert_eq!(first.len(), 3);
        assert_eq!(data[ROTATED_AT], b"2027-01-15T08:00:00Z");
        assert_eq!(change(&data, at(3599), HOUR).unwrap(), None, "not yet");
        let write = change(&data, at(3600), HOUR).unwrap();
        apply(&mut data, write);
        let second = KeyText::parse(&data[KEYS]).unwrap();
        assert_eq!(second.len(), 3);
        let lines = |k: &KeyText| k.to_text().lines().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            lines(&second)[..2],
            lines(&first)[1..],
            "current and next moved down"
        );
        assert!(!lines(&first).contains(&lines(&second)[2]), "a fresh next");
        assert_eq!(data[ROTATED_AT], b"2027-01-15T09:00:00Z");
    }

    #[test]
    fn unreadable_keys_are_left_alone_and_unknown_age_rotates() {
        let mut data = SecretData::from([(KEYS.to_string(), b"garbage".to_vec())]);
        assert_eq!(change(&data, at(0), HOUR), Err(KeyError::NotBase64(1)));
        data.insert(
            KEYS.into(),
            KeyText::random().unwrap().to_text().into_bytes(),
        );
        data.insert(ROTATED_AT.into(), b"yesterday".to_vec());
        assert!(
            change(&data, at(0), HOUR).unwrap().is_some(),
            "no readable time: rotate"
        );
        data.insert(KEYS.into(), b" \n".to_vec());
        assert!(
            change(&data, at(0), HOUR).unwrap().is_some(),
            "blank: filled"
        );
    }
}
