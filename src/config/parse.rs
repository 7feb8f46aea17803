//! Parsers for duration flags (`10s`, `1m30s`, `off`).

use std::time::Duration;

/// Parses a duration such as `10s`, `1m30s` or `250ms`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("{e} (expected a duration such as 10s, 1m30s or 250ms)"))
}

/// Parses a duration, where `off` or `0` means "never".
pub fn parse_optional_duration(value: &str) -> Result<Option<Duration>, String> {
    match value {
        "off" | "none" | "0" => Ok(None),
        _ => parse_duration(value).map(|d| (!d.is_zero()).then_some(d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("ten").is_err());
        assert_eq!(parse_optional_duration("off"), Ok(None));
        assert_eq!(parse_optional_duration("0s"), Ok(None));
        assert_eq!(
            parse_optional_duration("5m"),
            Ok(Some(Duration::from_secs(300)))
        );
    }
}
