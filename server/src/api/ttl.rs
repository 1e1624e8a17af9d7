//! Expiry in the API: the `ttl` a client gives and the deadline it is told.

use std::time::{Duration, UNIX_EPOCH};

use super::error::ApiError;
use cete_types::ErrorCode;

/// The shortest and longest time to live a key may be given.
pub const MIN_TTL: Duration = Duration::from_millis(1);
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a time to live such as `30s`, `1500ms`, `1.5s`, `2m` or `1h30m` into
/// milliseconds (humantime's syntax); anything else, zero, or beyond the
/// bounds is a 400 `InvalidTtl`.
pub fn parse(raw: &str) -> Result<u64, ApiError> {
    let invalid = |why: String| {
        ApiError::new(ErrorCode::InvalidTtl,
            format!("ttl '{raw}' {why}; give a duration such as 1500ms, 30s, 2m or 1h30m, from 1ms to 365d"),
        )
    };
    let ttl = humantime::parse_duration(raw.trim())
        .map_err(|e| invalid(format!("is not a duration ({e})")))?;
    if ttl < MIN_TTL {
        return Err(invalid("is shorter than 1ms".into()));
    }
    if ttl > MAX_TTL {
        return Err(invalid("is longer than 365 days".into()));
    }
    Ok(ttl.as_millis() as u64)
}

/// A deadline as RFC 3339 in UTC, to the millisecond: `2026-12-02T19:00:30.123Z`.
pub fn format_deadline(deadline_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(deadline_ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_within_bounds() {
        assert_eq!(parse("30s").unwrap(), 30_000);
        assert_eq!(parse("1500ms").unwrap(), 1_500);
        assert_eq!(parse("2m").unwrap(), 120_000);
        assert_eq!(parse("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse("365d").unwrap(), 365 * 24 * 3_600_000);
        assert_eq!(parse("1.5s").unwrap(), 1_500);
        for bad in ["", "0s", "0", "30", "-5s", "1us", "366d", "soon"] {
            assert_eq!(parse(bad).unwrap_err().code.as_str(), "InvalidTtl", "{bad}");
        }
    }

    #[test]
    fn deadlines_format_as_rfc3339_utc_millis() {
        assert_eq!(
            format_deadline(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
