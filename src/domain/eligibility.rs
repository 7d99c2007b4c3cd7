//! Poverty standards, household classification and classification decisions.
//!
//! Standards are compiled-in JSON files; each one's content hash (hex BLAKE3
//! of the exact file bytes) is computed at load and recorded in every
//! decision, so a decision can later be re-derived and any silent edit of the
//! reference data is detected (`recompute`).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use chrono::{Datelike, Months, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::Rejection;
use crate::domain::ids::HouseholdId;
use crate::domain::loans::EventId;
use crate::domain::money::non_negative_vnd;

/// Every standard has 12 deprivation indicators in 6 dimensions (Decree 07
/// shape); a data file with a different count is a data error caught at load.
pub const INDICATOR_COUNT: usize = 12;
/// Number of dimensions the indicators are grouped in.
pub const DIMENSION_COUNT: usize = 6;
/// A household that moves from Poor/NearPoor to above the income line keeps
/// "escaped poverty" standing (and its preferential credit) for this long.
pub const ESCAPED_POVERTY_MONTHS: u32 = 36;
/// How a decision's validity is computed, recorded on it (`EligibilityDecided.validity_rule`)
/// so that a decision recomputes by the rule it was made under:
/// - 0: an escaped-poverty window ends the day before the date `ESCAPED_POVERTY_MONTHS`
///   on, that date cut to its month's last day when the month has no day of the
///   decision's number. A decision on 29 February then ended on the 27th three years on,
///   a day short of its 36 months.
/// - 1: the same, except that when the month `ESCAPED_POVERTY_MONTHS` on has no day of
///   the decision's number the window ends on that month's last day, as a period counted
///   in months does (Civil Code 2015, art. 148): 29 February 2028 runs to 28 February
///   2031.
///
/// Every other status is valid to its review year's end under either rule.
pub const VALIDITY_RULE: u32 = 1;
/// The rules `validity` knows; `recompute` reports a recorded rule past it
/// (`Mismatch::UnknownValidityRule`) rather than guess. The book holds a decision's
/// recorded period whatever its rule.
pub const VALIDITY_RULE_MAX: u32 = 1;
/// A decision may be made at most this many years ahead of its review year
/// (the Q4 review for next year's list).
pub const MAX_REVIEW_LEAD_YEARS: i32 = 1;

/// The shipped standards, as (file name, exact text). Order does not matter;
/// validity periods must not overlap (checked by a test).
const STANDARD_SOURCES: &[(&str, &str)] = &[
    (
        "data/standards/2022-2025.json",
        include_str!("../../data/standards/2022-2025.json"),
    ),
    (
        "data/standards/2027-2030.json",
        include_str!("../../data/standards/2027-2030.json"),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Area {
    Rural,
    Urban,
}

/// A pair of amounts, one per area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AreaAmounts {
    pub rural: Decimal,
    pub urban: Decimal,
}

impl AreaAmounts {
    pub fn get(&self, area: Area) -> Decimal {
        match area {
            Area::Rural => self.rural,
            Area::Urban => self.urban,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dimension {
    pub name: String,
    pub indicators: Vec<String>,
}

/// One poverty standard, as shipped in `data/standards/*.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Standard {
    pub id: String,
    pub title: String,
    pub legal_basis: Vec<String>,
    pub valid_from: NaiveDate,
    /// Inclusive.
    pub valid_to: NaiveDate,
    /// Income per person per month at or under which a household is Poor or NearPoor.
    pub income_line: AreaAmounts,
    /// Upper bound (inclusive) of AverageLivingStandard; also the near-poor
    /// "upper line" referred to by credit programmes.
    pub average_living_upper_line: AreaAmounts,
    pub dimensions: Vec<Dimension>,
    /// At or above this many deprived indicators a household under the line is Poor.
    pub deprivation_threshold: usize,
    #[serde(default)]
    pub notes: Vec<String>,
    /// Hex BLAKE3 of the exact file bytes; computed at load, never read from the file.
    #[serde(skip)]
    pub content_hash: String,
}

impl Standard {
    /// The 12 indicator names, in file order.
    pub fn indicators(&self) -> impl Iterator<Item = &str> {
        self.dimensions
            .iter()
            .flat_map(|d| d.indicators.iter().map(String::as_str))
    }
    pub fn in_force_on(&self, date: NaiveDate) -> bool {
        self.valid_from <= date && date <= self.valid_to
    }
}

/// Why a standard data file could not be loaded (a build-time data defect).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StandardDataError {
    #[error("standard JSON does not parse: {0}")]
    Json(String),
    #[error(
        "standard {0}: expected {INDICATOR_COUNT} unique indicators in {DIMENSION_COUNT} dimensions"
    )]
    Indicators(String),
    #[error("standard {0}: lines must be positive whole đồng, upper line above income line")]
    Lines(String),
    #[error("standard {0}: valid_to before valid_from or threshold zero")]
    Shape(String),
}

/// Parse and check one standard file; the hash is of exactly `text`'s bytes.
pub fn load_standard(text: &str) -> Result<Standard, StandardDataError> {
    let mut s: Standard =
        crate::strict_json::from_str(text).map_err(|e| StandardDataError::Json(e.to_string()))?;
    let unique: BTreeSet<&str> = s.indicators().collect();
    if s.dimensions.len() != DIMENSION_COUNT
        || unique.len() != INDICATOR_COUNT
        || s.indicators().count() != INDICATOR_COUNT
    {
        return Err(StandardDataError::Indicators(s.id));
    }
    for area in [Area::Rural, Area::Urban] {
        let line = s.income_line.get(area);
        let upper = s.average_living_upper_line.get(area);
        let whole = |x: Decimal| x > Decimal::ZERO && x.fract().is_zero();
        if !whole(line) || !whole(upper) || upper <= line {
            return Err(StandardDataError::Lines(s.id));
        }
    }
    if s.valid_to < s.valid_from || s.deprivation_threshold == 0 {
        return Err(StandardDataError::Shape(s.id));
    }
    s.content_hash = blake3::hash(text.as_bytes()).to_hex().to_string();
    Ok(s)
}

/// All shipped standards. Parsed once; a defect in shipped data is a build
/// defect, so it panics (and the test suite loads them on every run).
pub fn standards() -> &'static [Standard] {
    static STANDARDS: OnceLock<Vec<Standard>> = OnceLock::new();
    STANDARDS.get_or_init(|| {
        STANDARD_SOURCES
            .iter()
            .map(|(name, text)| {
                load_standard(text).unwrap_or_else(|e| panic!("shipped {name} is invalid: {e}"))
            })
            .collect()
    })
}

pub fn standard_by_id(id: &str) -> Option<&'static Standard> {
    standards().iter().find(|s| s.id == id)
}

/// The standard in force on `date`.
pub fn standard_in_force(date: NaiveDate) -> Result<&'static Standard, Rejection> {
    standard_in_force_in(standards(), date)
}

/// The standard a review for `review_year`'s list is decided under: the one in force on
/// 1 January of that year. A review in the last months of a year draws up the next
/// year's list, so it takes the lines that list will be held against, not those of the
/// year it is made in (ADR 0021).
pub fn standard_for_review_year(review_year: i32) -> Result<&'static Standard, Rejection> {
    // Only a year past chrono's range (±262,143) has no first day; `review_year_in_range`
    // keeps commands far inside it.
    let first_day =
        NaiveDate::from_ymd_opt(review_year, 1, 1).ok_or(Rejection::ArithmeticOverflow)?;
    standard_in_force(first_day)
}

fn standard_in_force_in(list: &[Standard], date: NaiveDate) -> Result<&Standard, Rejection> {
    list.iter()
        .find(|s| s.in_force_on(date))
        .ok_or(Rejection::NoStandardInForce { date })
}

/// Computed income/deprivation class under one standard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Class {
    Poor,
    NearPoor,
    AverageLivingStandard,
    NotPoor,
}

impl Class {
    pub fn is_poor_or_near_poor(self) -> bool {
        matches!(self, Class::Poor | Class::NearPoor)
    }
}

/// Standing that credit programmes look at: the class, or EscapedPoverty for
/// a household that was Poor/NearPoor and is now above the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Status {
    Poor,
    NearPoor,
    EscapedPoverty,
    AverageLivingStandard,
    NotPoor,
}

impl From<Class> for Status {
    fn from(c: Class) -> Status {
        match c {
            Class::Poor => Status::Poor,
            Class::NearPoor => Status::NearPoor,
            Class::AverageLivingStandard => Status::AverageLivingStandard,
            Class::NotPoor => Status::NotPoor,
        }
    }
}

/// What the commune review measured for one household.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassificationInputs {
    /// VND per person per month, whole đồng, >= 0.
    pub income_per_person_month: Decimal,
    pub area: Area,
    /// Names of deprived indicators; must be among the standard's 12.
    pub deprived: BTreeSet<String>,
    /// The year whose household list this review produces.
    pub review_year: i32,
}

/// Classify a household under `standard`.
///
/// Returns `Result` (not a bare `Class`) because the inputs are validated
/// here: a negative or fractional income, or an indicator name the standard
/// does not know, is refused rather than silently ignored.
pub fn classify(standard: &Standard, inputs: &ClassificationInputs) -> Result<Class, Rejection> {
    let income = non_negative_vnd(inputs.income_per_person_month)?;
    if let Some(unknown) = inputs
        .deprived
        .iter()
        .find(|name| !standard.indicators().any(|i| i == name.as_str()))
    {
        return Err(Rejection::UnknownIndicator {
            name: unknown.clone(),
            standard: standard.id.clone(),
        });
    }
    let line = standard.income_line.get(inputs.area);
    let upper = standard.average_living_upper_line.get(inputs.area);
    // "At or under the line" is inclusive: a household exactly on the line is poor/near-poor.
    Ok(if income <= line {
        if inputs.deprived.len() >= standard.deprivation_threshold {
            Class::Poor
        } else {
            Class::NearPoor
        }
    } else if income <= upper {
        Class::AverageLivingStandard
    } else {
        Class::NotPoor
    })
}

/// Status from the new class and the class of the household's previous decision.
pub fn derive_status(class: Class, prior_class: Option<Class>) -> Status {
    match (class, prior_class) {
        (Class::AverageLivingStandard | Class::NotPoor, Some(p)) if p.is_poor_or_near_poor() => {
            Status::EscapedPoverty
        }
        (c, _) => c.into(),
    }
}

/// The escaped-poverty window a household holds after a decision: a new window for
/// EscapedPoverty (to the end of its validity), none after a Poor or NearPoor decision,
/// and otherwise the window `before` it, kept running across later reviews above the
/// line. The book decides with this and the audit re-derives recorded windows with it.
pub fn escaped_until_after(
    status: Status,
    valid_to: NaiveDate,
    before: Option<NaiveDate>,
) -> Option<NaiveDate> {
    match status {
        Status::EscapedPoverty => Some(valid_to),
        Status::Poor | Status::NearPoor => None,
        Status::AverageLivingStandard | Status::NotPoor => before,
    }
}

/// Validity of a decision (both ends inclusive).
///
/// Decision: a Poor/NearPoor/other class is valid from the decision date to
/// the end of the review year, cut at the end of the standard's validity
/// (a list never outlives its standard; the next annual review replaces it).
/// EscapedPoverty is valid for `ESCAPED_POVERTY_MONTHS` from the decision
/// date regardless of the standard, because the credit rule is tied to the
/// date of escape, not to the list.
pub fn validity(
    standard: &Standard,
    status: Status,
    review_year: i32,
    decision_date: NaiveDate,
    rule: u32,
) -> Result<(NaiveDate, NaiveDate), Rejection> {
    review_year_in_range(review_year, decision_date)?;
    let out_of_range = Rejection::ReviewYearOutOfRange {
        review_year,
        decision_date,
    };
    let year_end = NaiveDate::from_ymd_opt(review_year, 12, 31).ok_or(out_of_range.clone())?;
    let to = match status {
        Status::EscapedPoverty => {
            let on = decision_date
                .checked_add_months(Months::new(ESCAPED_POVERTY_MONTHS))
                .ok_or(Rejection::ArithmeticOverflow)?;
            // chrono cuts a day the month lacks to its last day: that last day is then
            // the window's last (rule 1), not the day before it (rule 0).
            if rule >= 1 && on.day() != decision_date.day() {
                on
            } else {
                on.pred_opt().ok_or(Rejection::ArithmeticOverflow)?
            }
        }
        _ => year_end.min(standard.valid_to),
    };
    if to < decision_date {
        return Err(out_of_range);
    }
    Ok((decision_date, to))
}

/// A review is for the year it is made in, or (the review at a year's end) the next.
fn review_year_in_range(review_year: i32, decision_date: NaiveDate) -> Result<(), Rejection> {
    if review_year < decision_date.year()
        || review_year > decision_date.year() + MAX_REVIEW_LEAD_YEARS
    {
        return Err(Rejection::ReviewYearOutOfRange {
            review_year,
            decision_date,
        });
    }
    Ok(())
}

/// A recorded classification decision (the event body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassificationDecided {
    pub household: HouseholdId,
    pub inputs: ClassificationInputs,
    pub standard_id: String,
    pub standard_hash: String,
    pub class: Class,
    /// Class of the household's previous decision, as known when deciding;
    /// recorded so the status can be re-derived from the event alone. For a correction,
    /// the prior class of the decision it corrects.
    pub prior_class: Option<Class>,
    pub status: Status,
    /// The decision this one corrects (a decision recorded by mistake), which it takes
    /// the place of: it was decided with what the household held before that one.
    pub corrects: Option<EventId>,
    pub decided_by: String,
    pub decision_date: NaiveDate,
    pub valid_from: NaiveDate,
    pub valid_to: NaiveDate,
    /// The rule its validity was computed by (`VALIDITY_RULE`).
    pub validity_rule: u32,
}

/// Decide a classification under the standard of its review year
/// (`standard_for_review_year`). `corrects` is only recorded: the caller has checked it
/// and chosen `prior_class` by it.
pub fn decide_classification(
    household: HouseholdId,
    prior_class: Option<Class>,
    corrects: Option<EventId>,
    inputs: ClassificationInputs,
    decided_by: &str,
    decision_date: NaiveDate,
) -> Result<ClassificationDecided, Rejection> {
    review_year_in_range(inputs.review_year, decision_date)?;
    let standard = standard_for_review_year(inputs.review_year)?;
    let class = classify(standard, &inputs)?;
    let status = derive_status(class, prior_class);
    let (valid_from, valid_to) = validity(
        standard,
        status,
        inputs.review_year,
        decision_date,
        VALIDITY_RULE,
    )?;
    Ok(ClassificationDecided {
        household,
        inputs: ClassificationInputs {
            income_per_person_month: non_negative_vnd(inputs.income_per_person_month)?,
            ..inputs
        },
        standard_id: standard.id.clone(),
        standard_hash: standard.content_hash.clone(),
        class,
        prior_class,
        status,
        corrects,
        decided_by: decided_by.to_owned(),
        decision_date,
        valid_from,
        valid_to,
        validity_rule: VALIDITY_RULE,
    })
}

/// Why a recorded decision no longer re-derives (an audit finding, not a
/// command refusal, hence not a `Rejection`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// The recorded standard id is not shipped any more. Audit: restore the
    /// data file from the release that made the decision.
    #[error("standard {id} is no longer shipped")]
    UnknownStandard { id: String },
    /// The shipped file for that id differs from the one decided under.
    /// Audit: treat the data release as suspect; never "fix" the decision.
    #[error("standard file changed: recorded hash {recorded}, current {current}")]
    StandardChanged { recorded: String, current: String },
    /// The recorded inputs no longer validate. Audit: the event or the code
    /// changed; investigate before relying on the decision.
    #[error("recorded inputs are now refused: {0}")]
    InputsRefused(Rejection),
    /// Same inputs, same standard, different class: the event was edited or
    /// the rule changed. Escalate; a new decision must be recorded.
    #[error("recorded class {recorded:?}, recomputed {recomputed:?}")]
    ClassDiffers { recorded: Class, recomputed: Class },
    /// The status (escaped poverty) does not follow from class + prior class.
    /// Escalate as for `ClassDiffers`.
    #[error("recorded status {recorded:?}, recomputed {recomputed:?}")]
    StatusDiffers {
        recorded: Status,
        recomputed: Status,
    },
    /// The decision names a validity rule this release does not know (one of a later
    /// release). Audit: recompute with that release.
    #[error("validity rule {rule} is not known to this release (at most {VALIDITY_RULE_MAX})")]
    UnknownValidityRule { rule: u32 },
    /// The validity period does not follow from the rule. Escalate; credit
    /// decisions taken on the wrong period need review.
    #[error("recorded validity {recorded:?}, recomputed {recomputed:?}")]
    ValidityDiffers {
        recorded: (NaiveDate, NaiveDate),
        recomputed: (NaiveDate, NaiveDate),
    },
}

/// Re-derive a decision from its recorded inputs and standard (by id, checked
/// by hash) against the shipped standards.
pub fn recompute(decision: &ClassificationDecided) -> Result<(), Mismatch> {
    recompute_against(standards(), decision)
}

/// As `recompute`, against an explicit list of standards (lets tests and
/// audits check against a candidate data release).
pub fn recompute_against(list: &[Standard], d: &ClassificationDecided) -> Result<(), Mismatch> {
    let standard =
        list.iter()
            .find(|s| s.id == d.standard_id)
            .ok_or_else(|| Mismatch::UnknownStandard {
                id: d.standard_id.clone(),
            })?;
    if standard.content_hash != d.standard_hash {
        return Err(Mismatch::StandardChanged {
            recorded: d.standard_hash.clone(),
            current: standard.content_hash.clone(),
        });
    }
    let class = classify(standard, &d.inputs).map_err(Mismatch::InputsRefused)?;
    if class != d.class {
        return Err(Mismatch::ClassDiffers {
            recorded: d.class,
            recomputed: class,
        });
    }
    let status = derive_status(class, d.prior_class);
    if status != d.status {
        return Err(Mismatch::StatusDiffers {
            recorded: d.status,
            recomputed: status,
        });
    }
    if d.validity_rule > VALIDITY_RULE_MAX {
        return Err(Mismatch::UnknownValidityRule {
            rule: d.validity_rule,
        });
    }
    let v = validity(
        standard,
        status,
        d.inputs.review_year,
        d.decision_date,
        d.validity_rule,
    )
    .map_err(Mismatch::InputsRefused)?;
    if v != (d.valid_from, d.valid_to) {
        return Err(Mismatch::ValidityDiffers {
            recorded: (d.valid_from, d.valid_to),
            recomputed: v,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_standards_load_and_do_not_overlap() {
        let list = standards();
        assert_eq!(list.len(), STANDARD_SOURCES.len());
        for (i, a) in list.iter().enumerate() {
            assert_eq!(a.content_hash.len(), 64);
            for b in &list[i + 1..] {
                assert!(a.valid_to < b.valid_from || b.valid_to < a.valid_from);
            }
        }
    }

    #[test]
    fn hash_is_of_exact_bytes() {
        let (_, text) = STANDARD_SOURCES[0];
        let a = load_standard(text).unwrap();
        let b = load_standard(&format!("{text}\n")).unwrap();
        assert_eq!(
            a.content_hash,
            blake3::hash(text.as_bytes()).to_hex().to_string()
        );
        assert_ne!(a.content_hash, b.content_hash);
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// A window of 36 months from 29 February covers the whole of February three years
    /// on (rule 1); rule 0, which decisions recorded before it name, ended it on the
    /// 27th. Elsewhere the two agree.
    #[test]
    fn an_escaped_poverty_window_decided_on_29_february_runs_to_the_end_of_february() {
        let standard = standard_for_review_year(2028).unwrap();
        let window = |on: &str, rule| {
            validity(standard, Status::EscapedPoverty, 2028, day(on), rule)
                .unwrap()
                .1
        };
        assert_eq!(window("2028-02-29", VALIDITY_RULE), day("2031-02-28"));
        assert_eq!(window("2028-02-29", 0), day("2031-02-27"));
        for rule in [0, VALIDITY_RULE] {
            assert_eq!(window("2028-01-15", rule), day("2031-01-14"));
            assert_eq!(window("2028-03-01", rule), day("2031-02-28"));
            assert_eq!(window("2028-01-31", rule), day("2031-01-30"));
        }
    }

    /// A decision recomputes by the rule it names: one recorded under rule 0 still
    /// recomputes clean, and a rule this release does not know is reported, not guessed.
    #[test]
    fn a_decision_recomputes_by_the_validity_rule_it_names() {
        let inputs = ClassificationInputs {
            income_per_person_month: Decimal::from(5_000_000),
            area: Area::Rural,
            deprived: BTreeSet::new(),
            review_year: 2028,
        };
        let decided = decide_classification(
            HouseholdId::parse("0100007-000001").unwrap(),
            Some(Class::Poor),
            None,
            inputs,
            "staff:officer",
            day("2028-02-29"),
        )
        .unwrap();
        assert_eq!(decided.status, Status::EscapedPoverty);
        assert_eq!(
            (decided.validity_rule, decided.valid_to),
            (VALIDITY_RULE, day("2031-02-28"))
        );
        assert_eq!(recompute(&decided), Ok(()));
        let earlier = ClassificationDecided {
            validity_rule: 0,
            valid_to: day("2031-02-27"),
            ..decided.clone()
        };
        assert_eq!(recompute(&earlier), Ok(()));
        let unknown = ClassificationDecided {
            validity_rule: VALIDITY_RULE_MAX + 1,
            ..decided
        };
        assert_eq!(
            recompute(&unknown),
            Err(Mismatch::UnknownValidityRule {
                rule: VALIDITY_RULE_MAX + 1
            })
        );
    }

    #[test]
    fn bad_data_is_caught() {
        let (_, text) = STANDARD_SOURCES[0];
        let fewer = text.replace("\"telecom_use\", ", "");
        assert!(matches!(
            load_standard(&fewer),
            Err(StandardDataError::Indicators(_))
        ));
        let bad_line = text.replace("\"1500000\"", "\"1500000.5\"");
        assert!(matches!(
            load_standard(&bad_line),
            Err(StandardDataError::Lines(_))
        ));
    }
}
