//! The ledger's clock, and the calendar its business dates are read in: days in Vietnam
//! (UTC+7 all year, no daylight saving). The UTC day lags Vietnam's from 00:00 to 06:59
//! every morning there, so a date taken from the UTC calendar would date a result, a
//! recording or a report's default day one day early in those hours.
//!
//! **Boundary:** the domain never reads the clock. The edges (HTTP, CLI, the gateway
//! sink) read it here and pass dates in their commands; `date_in_vietnam` is pure, so a
//! test gives it the instant it wants.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDate};

/// The ledger's clock, Unix milliseconds (injected: the demo plays past months, tests pin
/// the day).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp_millis())
}

/// Vietnam's offset from UTC, in seconds (Indochina Time, UTC+7).
pub const VIETNAM_UTC_OFFSET_SECS: i32 = 7 * 3600;

/// Vietnam's time zone.
pub fn vietnam() -> FixedOffset {
    FixedOffset::east_opt(VIETNAM_UTC_OFFSET_SECS).expect("seven hours is a valid offset")
}

/// The day in Vietnam at a Unix time in milliseconds. A time outside chrono's range is a
/// broken clock: the day of the epoch, which no business date precedes, so whatever it
/// dates is refused as back-dated rather than accepted in the future.
pub fn date_in_vietnam(unix_ms: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(unix_ms)
        .map(|t| t.with_timezone(&vietnam()).date_naive())
        .unwrap_or_default()
}

/// Today in Vietnam by `clock`.
pub fn today_by(clock: &Clock) -> NaiveDate {
    date_in_vietnam(clock())
}

/// Today in Vietnam by the system clock: what the CLI and the console's forms read.
pub fn today() -> NaiveDate {
    date_in_vietnam(chrono::Utc::now().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn the_day_turns_at_midnight_in_vietnam_not_in_utc() {
        // 00:30 in Hà Nội is still 17:30 of the day before in UTC.
        assert_eq!(
            date_in_vietnam(ms("2026-12-05T00:30:00+07:00")),
            day("2026-12-05")
        );
        assert_eq!(
            date_in_vietnam(ms("2026-12-04T17:30:00Z")),
            day("2026-12-05")
        );
        assert_eq!(
            date_in_vietnam(ms("2026-12-04T23:59:59.999+07:00")),
            day("2026-12-04")
        );
        assert_eq!(
            date_in_vietnam(ms("2026-12-05T16:59:59.999Z")),
            day("2026-12-05")
        );
        assert_eq!(
            date_in_vietnam(ms("2026-12-05T17:00:00Z")),
            day("2026-12-06")
        );
        let pinned: Clock = Arc::new(|| ms("2026-12-31T23:00:00Z"));
        assert_eq!(today_by(&pinned), day("2027-01-01"));
    }

    #[test]
    fn a_broken_clock_dates_the_epoch() {
        assert_eq!(date_in_vietnam(i64::MAX), NaiveDate::default());
        assert_eq!(NaiveDate::default(), day("1970-01-01"));
    }
}
