//! Calendar month "YYYY-MM": the period of an entitlement payment and of a
//! budget allocation.

use std::fmt;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::domain::payments::Rejection;

/// Years outside this range are keying errors, not payment periods; the
/// bound also keeps `first_day` total.
pub const YEAR_MIN: i32 = 2000;
pub const YEAR_MAX: i32 = 2999;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Month {
    // Field order gives chronological `Ord`.
    year: i32,
    month: u32,
}

impl Month {
    /// Earliest and latest representable months (range bounds for look-ups).
    pub const MIN: Month = Month {
        year: YEAR_MIN,
        month: 1,
    };
    pub const MAX: Month = Month {
        year: YEAR_MAX,
        month: 12,
    };

    pub fn new(year: i32, month: u32) -> Result<Self, Rejection> {
        if !(YEAR_MIN..=YEAR_MAX).contains(&year) || !(1..=12).contains(&month) {
            return Err(Rejection::MonthMalformed {
                found: format!("{year:04}-{month:02}"),
            });
        }
        Ok(Self { year, month })
    }

    /// Parse exactly "YYYY-MM".
    pub fn parse(s: &str) -> Result<Self, Rejection> {
        let malformed = || Rejection::MonthMalformed {
            found: s.chars().take(16).collect(),
        };
        let b = s.as_bytes();
        if b.len() != 7 || b[4] != b'-' {
            return Err(malformed());
        }
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            b[r].iter().try_fold(0u32, |acc, c| {
                c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
            })
        };
        let (Some(year), Some(month)) = (digits(0..4), digits(5..7)) else {
            return Err(malformed());
        };
        let year = i32::try_from(year).map_err(|_| malformed())?;
        Self::new(year, month).map_err(|_| malformed())
    }

    /// The month containing `date`.
    pub fn of(date: NaiveDate) -> Self {
        Self {
            year: date.year(),
            month: date.month(),
        }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }

    /// First day of the month: the date on which the base level and the
    /// category coefficient in force are looked up.
    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("a validated month has a day 1")
    }

    /// The following month, or None past `YEAR_MAX`.
    pub fn next(self) -> Option<Self> {
        if self.month == 12 {
            Self::new(self.year + 1, 1).ok()
        } else {
            Self::new(self.year, self.month + 1).ok()
        }
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl TryFrom<String> for Month {
    type Error = Rejection;
    fn try_from(s: String) -> Result<Self, Rejection> {
        Self::parse(&s)
    }
}

impl From<Month> for String {
    fn from(m: Month) -> String {
        m.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        let m = Month::parse("2026-12").unwrap();
        assert_eq!(m.to_string(), "2026-12");
        assert_eq!(m.first_day(), NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
        assert_eq!(m.next().unwrap().to_string(), "2027-01");
        assert!(Month::parse("2026-06").unwrap() < Month::parse("2026-07").unwrap());
        assert!(Month::parse("2025-12").unwrap() < Month::parse("2026-01").unwrap());
    }

    #[test]
    fn malformed_months_refused() {
        for bad in [
            "2026-13", "2026-00", "2026-1", "26-12", "2026/12", "1999-12", "2026-1x", "+026-12",
        ] {
            assert!(
                matches!(Month::parse(bad), Err(Rejection::MonthMalformed { .. })),
                "{bad}"
            );
        }
        assert_eq!(Month::new(YEAR_MAX, 12).unwrap().next(), None);
    }
}
