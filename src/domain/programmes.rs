//! Versioned credit programmes (compiled-in `data/programmes/programmes.json`).
//!
//! A loan records the programme id *and version* it was approved under, and
//! copies the rate terms, so a later rate change never re-prices an old loan.

use std::sync::OnceLock;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::Rejection;
use crate::domain::eligibility::Status;

const PROGRAMMES_JSON: &str = include_str!("../../data/programmes/programmes.json");

/// How interest days are counted. Only one rule is used by the bank's
/// monthly-rate loans: actual days, 30-day month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DayCount {
    /// interest = principal × monthly rate × actual days / 30.
    Actual30,
}

impl DayCount {
    /// Days in the conventional month that the monthly rate is quoted for.
    pub fn days_per_month(self) -> Decimal {
        match self {
            DayCount::Actual30 => Decimal::from(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Programme {
    pub id: String,
    pub version: u32,
    pub name: String,
    /// First date this version applies to new approvals; it applies until the
    /// next version's `valid_from`.
    pub valid_from: NaiveDate,
    pub eligible: Vec<Status>,
    /// Rate per month as a fraction (0.0055 = 0.55 %/month).
    pub monthly_rate: Decimal,
    /// Overdue principal accrues at monthly_rate × this factor (1.30).
    pub overdue_rate_factor: Decimal,
    /// Largest approvable amount, whole VND.
    pub cap: Decimal,
    pub max_term_months: u32,
    pub day_count: DayCount,
    pub collateral_required: bool,
    pub savings_group_required: bool,
}

impl Programme {
    pub fn reference(&self) -> ProgrammeRef {
        ProgrammeRef {
            id: self.id.clone(),
            version: self.version,
        }
    }
    pub fn overdue_monthly_rate(&self) -> Decimal {
        self.monthly_rate * self.overdue_rate_factor
    }
}

/// Programme id + version, as recorded on a loan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProgrammeRef {
    pub id: String,
    pub version: u32,
}

#[derive(Debug, Deserialize)]
struct ProgrammesFile {
    #[allow(dead_code)]
    notes: Vec<String>,
    programmes: Vec<Programme>,
}

/// All shipped programme versions. Shipped data that does not parse, or whose terms
/// could not price a loan (`check`), is a build defect, so this panics; the test suite
/// loads it on every run. A published version is never edited, only followed by a new
/// one: loans record the id and version they were approved under, and their tranches and
/// audits read that version's terms again (`programme_version`); the terms of each
/// version are pinned by a test (`tests/domain_loans_gwt.rs`).
pub fn programmes() -> &'static [Programme] {
    static P: OnceLock<Vec<Programme>> = OnceLock::new();
    P.get_or_init(|| {
        let programmes = crate::strict_json::from_str::<ProgrammesFile>(PROGRAMMES_JSON)
            .expect("shipped programmes.json is invalid")
            .programmes;
        for p in &programmes {
            if let Err(why) = check(p) {
                panic!(
                    "shipped programmes.json: {} version {}: {why}",
                    p.id, p.version
                );
            }
        }
        programmes
    })
}

/// Terms a loan can be priced on: a positive rate, an overdue factor of at least 1 (below
/// it the overdue surcharge would be negative, a negative posting), a cap of whole đồng
/// above zero and a term of at least a month.
fn check(p: &Programme) -> Result<(), &'static str> {
    if p.monthly_rate <= Decimal::ZERO {
        return Err("monthly_rate must be above zero");
    }
    if p.overdue_rate_factor < Decimal::ONE {
        return Err("overdue_rate_factor must be at least 1");
    }
    if p.cap <= Decimal::ZERO || !p.cap.fract().is_zero() {
        return Err("cap must be whole đồng above zero");
    }
    if p.max_term_months == 0 {
        return Err("max_term_months must be at least 1");
    }
    Ok(())
}

/// The version of programme `id` that applies to approvals on `date`: the
/// latest version whose `valid_from` is on or before `date`.
pub fn programme_on(id: &str, date: NaiveDate) -> Result<&'static Programme, Rejection> {
    let mut versions = programmes().iter().filter(|p| p.id == id).peekable();
    if versions.peek().is_none() {
        return Err(Rejection::UnknownProgramme { id: id.to_owned() });
    }
    versions
        .filter(|p| p.valid_from <= date)
        .max_by_key(|p| (p.valid_from, p.version))
        .ok_or(Rejection::ProgrammeNotInForce {
            id: id.to_owned(),
            date,
        })
}

/// A specific version (for audits of an existing loan).
pub fn programme_version(r: &ProgrammeRef) -> Option<&'static Programme> {
    programmes()
        .iter()
        .find(|p| p.id == r.id && p.version == r.version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn seeded_terms() {
        let poor = programme_on("POOR_HOUSEHOLD", d("2025-06-01")).unwrap();
        assert_eq!(poor.monthly_rate * dec!(12), dec!(0.066));
        assert_eq!(poor.cap, dec!(100000000));
        assert!(!poor.collateral_required && poor.savings_group_required);
        let near = programme_on("NEAR_POOR_HOUSEHOLD", d("2025-06-01")).unwrap();
        assert_eq!(near.monthly_rate, poor.monthly_rate * dec!(1.2));
        assert_eq!(near.monthly_rate * dec!(12), dec!(0.0792));
        let esc = programme_on("ESCAPED_POVERTY_HOUSEHOLD", d("2025-06-01")).unwrap();
        assert_eq!(esc.monthly_rate, poor.monthly_rate * dec!(1.25));
        assert_eq!(esc.monthly_rate * dec!(12), dec!(0.0825));
        let water = programme_on("RURAL_CLEAN_WATER_SANITATION", d("2025-06-01")).unwrap();
        assert_eq!(water.monthly_rate * dec!(12), dec!(0.09));
        assert_eq!((water.cap, water.max_term_months), (dec!(25000000), 60));
        for p in programmes() {
            assert_eq!(p.overdue_rate_factor, dec!(1.3));
            assert!(p.cap.fract().is_zero() && p.cap > Decimal::ZERO);
        }
    }

    #[test]
    fn terms_that_cannot_price_a_loan_are_refused() {
        let poor = programme_on("POOR_HOUSEHOLD", d("2025-06-01")).unwrap();
        assert!(check(poor).is_ok());
        let bad = [
            Programme {
                overdue_rate_factor: dec!(0.9),
                ..poor.clone()
            },
            Programme {
                monthly_rate: Decimal::ZERO,
                ..poor.clone()
            },
            Programme {
                cap: dec!(100000000.5),
                ..poor.clone()
            },
            Programme {
                max_term_months: 0,
                ..poor.clone()
            },
        ];
        for p in bad {
            assert!(check(&p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn unknown_or_not_yet() {
        assert_eq!(
            programme_on("NOPE", d("2025-01-01")),
            Err(Rejection::UnknownProgramme { id: "NOPE".into() })
        );
        assert!(matches!(
            programme_on("POOR_HOUSEHOLD", d("2021-12-31")),
            Err(Rejection::ProgrammeNotInForce { .. })
        ));
    }
}
