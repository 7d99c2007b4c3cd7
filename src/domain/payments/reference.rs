//! Versioned reference data, compiled in: national base levels
//! (`data/social_assistance/base_levels.json`) and beneficiary categories with
//! their coefficients (`data/social_assistance/categories.json`).
//!
//! Each file's content hash (hex BLAKE3 of the exact bytes, as for the
//! poverty standards of the main crate, so one verifier checks all reference
//! files) is computed at load and recorded on every payment run, so a run can
//! be re-derived later and a silent edit of the data is detected.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde::{Deserialize, Serialize};

use crate::domain::money::MAX_AMOUNT;
use crate::domain::payments::Rejection;
use crate::domain::payments::ids::CategoryId;

pub const BASE_LEVELS_PATH: &str = "data/social_assistance/base_levels.json";
pub const CATEGORIES_PATH: &str = "data/social_assistance/categories.json";
const BASE_LEVELS_JSON: &str = include_str!("../../../data/social_assistance/base_levels.json");
const CATEGORIES_JSON: &str = include_str!("../../../data/social_assistance/categories.json");

/// Coefficients above this are keying errors (the law's highest is 3.0).
pub const COEFFICIENT_MAX: Decimal = dec!(10);
/// Coefficients have at most this many decimals (the law uses one).
pub const COEFFICIENT_SCALE_MAX: u32 = 2;
/// At most this many entries per file; a bound for the linear look-ups below.
pub const ENTRIES_MAX: usize = 1_000;

/// One national base level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseLevel {
    pub id: String,
    pub version: u32,
    /// In force from this date until the next level's `valid_from`.
    pub valid_from: NaiveDate,
    /// Whole VND per person per month.
    pub amount: Decimal,
    pub legal_basis: String,
    #[serde(default)]
    pub assumption: Option<String>,
}

impl BaseLevel {
    pub fn reference(&self) -> BaseLevelRef {
        BaseLevelRef {
            id: self.id.clone(),
            version: self.version,
        }
    }
}

/// One version of a beneficiary category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub id: CategoryId,
    pub version: u32,
    /// In force from this date until the next version of the same id.
    pub valid_from: NaiveDate,
    pub coefficient: Decimal,
    pub name: String,
    pub legal_basis: String,
    #[serde(default)]
    pub assumption: Option<String>,
}

impl Category {
    pub fn reference(&self) -> CategoryRef {
        CategoryRef {
            id: self.id.clone(),
            version: self.version,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BaseLevelRef {
    pub id: String,
    pub version: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CategoryRef {
    pub id: CategoryId,
    pub version: u32,
}

/// Hashes of the reference files a decision used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceHashes {
    pub base_levels: String,
    pub categories: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaseLevelsFile {
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    title: String,
    #[allow(dead_code)]
    notes: Vec<String>,
    levels: Vec<BaseLevel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoriesFile {
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    title: String,
    #[allow(dead_code)]
    notes: Vec<String>,
    categories: Vec<Category>,
}

/// Why a reference file could not be loaded: a data defect caught at build or
/// test time, never at payment time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceDataError {
    #[error("{file} does not parse: {message}")]
    Json { file: &'static str, message: String },
    #[error("{file}: {entries} entries, expected 1..={ENTRIES_MAX}")]
    EntryCount { file: &'static str, entries: usize },
    #[error("base level {id}: amount must be positive whole đồng up to the money ceiling")]
    BaseAmount { id: String },
    #[error("base level {id}: valid_from must be strictly later than the previous level's")]
    BaseOrder { id: String },
    #[error(
        "category {id} v{version}: coefficient must be in (0, {COEFFICIENT_MAX}] with at most {COEFFICIENT_SCALE_MAX} decimals"
    )]
    Coefficient { id: String, version: u32 },
    #[error(
        "category {id} v{version}: versions must start at 1 and rise by one with a later valid_from"
    )]
    CategoryVersions { id: String, version: u32 },
    #[error("{file}: id {id} version {version} appears twice")]
    Duplicate {
        file: &'static str,
        id: String,
        version: u32,
    },
}

/// The loaded reference data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceData {
    /// Sorted by `valid_from`, strictly increasing.
    pub base_levels: Vec<BaseLevel>,
    /// Sorted by (id, version); per id, versions 1, 2, … with rising `valid_from`.
    pub categories: Vec<Category>,
    pub hashes: ReferenceHashes,
}

fn hash_hex(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

impl ReferenceData {
    /// Parse and check both files; hashes are of exactly these texts.
    pub fn load(base_levels_text: &str, categories_text: &str) -> Result<Self, ReferenceDataError> {
        let base: BaseLevelsFile = crate::strict_json::from_str(base_levels_text).map_err(|e| {
            ReferenceDataError::Json {
                file: BASE_LEVELS_PATH,
                message: e.to_string(),
            }
        })?;
        let cats: CategoriesFile = crate::strict_json::from_str(categories_text).map_err(|e| {
            ReferenceDataError::Json {
                file: CATEGORIES_PATH,
                message: e.to_string(),
            }
        })?;
        for (file, entries) in [
            (BASE_LEVELS_PATH, base.levels.len()),
            (CATEGORIES_PATH, cats.categories.len()),
        ] {
            if entries == 0 || entries > ENTRIES_MAX {
                return Err(ReferenceDataError::EntryCount { file, entries });
            }
        }

        let mut levels = base.levels;
        levels.sort_by_key(|l| l.valid_from);
        let mut seen = BTreeSet::new();
        for (i, l) in levels.iter().enumerate() {
            if !seen.insert((l.id.clone(), l.version)) {
                return Err(ReferenceDataError::Duplicate {
                    file: BASE_LEVELS_PATH,
                    id: l.id.clone(),
                    version: l.version,
                });
            }
            if l.amount <= Decimal::ZERO || !l.amount.fract().is_zero() || l.amount > MAX_AMOUNT {
                return Err(ReferenceDataError::BaseAmount { id: l.id.clone() });
            }
            if i > 0 && levels[i - 1].valid_from == l.valid_from {
                return Err(ReferenceDataError::BaseOrder { id: l.id.clone() });
            }
        }

        let mut categories = cats.categories;
        categories.sort_by(|a, b| (&a.id, a.version).cmp(&(&b.id, b.version)));
        for (i, c) in categories.iter().enumerate() {
            let bad_coefficient = || ReferenceDataError::Coefficient {
                id: c.id.to_string(),
                version: c.version,
            };
            if c.coefficient <= Decimal::ZERO
                || c.coefficient > COEFFICIENT_MAX
                || c.coefficient.normalize().scale() > COEFFICIENT_SCALE_MAX
            {
                return Err(bad_coefficient());
            }
            let previous = i
                .checked_sub(1)
                .map(|p| &categories[p])
                .filter(|p| p.id == c.id);
            match previous {
                Some(p) if p.version == c.version => {
                    return Err(ReferenceDataError::Duplicate {
                        file: CATEGORIES_PATH,
                        id: c.id.to_string(),
                        version: c.version,
                    });
                }
                Some(p) if p.version + 1 == c.version && p.valid_from < c.valid_from => {}
                None if c.version == 1 => {}
                _ => {
                    return Err(ReferenceDataError::CategoryVersions {
                        id: c.id.to_string(),
                        version: c.version,
                    });
                }
            }
        }

        Ok(Self {
            base_levels: levels,
            categories,
            hashes: ReferenceHashes {
                base_levels: hash_hex(base_levels_text),
                categories: hash_hex(categories_text),
            },
        })
    }

    /// The national base level in force on `date`.
    pub fn base_level_on(&self, date: NaiveDate) -> Result<&BaseLevel, Rejection> {
        self.base_levels
            .iter()
            .rev()
            .find(|l| l.valid_from <= date)
            .ok_or(Rejection::NoBaseLevelInForce { date })
    }

    /// The version of category `id` in force on `date`.
    pub fn category_on(&self, id: &CategoryId, date: NaiveDate) -> Result<&Category, Rejection> {
        let mut versions = self.categories.iter().filter(|c| &c.id == id).peekable();
        if versions.peek().is_none() {
            return Err(Rejection::UnknownCategory {
                category: id.clone(),
            });
        }
        versions
            .filter(|c| c.valid_from <= date)
            .max_by_key(|c| c.version)
            .ok_or(Rejection::CategoryNotInForce {
                category: id.clone(),
                date,
            })
    }
}

/// The shipped reference data. Parsed once; shipped data that does not load
/// is a build defect, so this panics (the test suite loads it on every run).
pub fn reference() -> &'static ReferenceData {
    static R: OnceLock<ReferenceData> = OnceLock::new();
    R.get_or_init(|| {
        ReferenceData::load(BASE_LEVELS_JSON, CATEGORIES_JSON)
            .expect("shipped social assistance reference data is invalid")
    })
}

/// The exact shipped texts, as (path, text), for callers that hash or
/// publish them themselves.
pub fn shipped_texts() -> [(&'static str, &'static str); 2] {
    [
        (BASE_LEVELS_PATH, BASE_LEVELS_JSON),
        (CATEGORIES_PATH, CATEGORIES_JSON),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn cat(s: &str) -> CategoryId {
        CategoryId::parse(s).unwrap()
    }

    #[test]
    fn shipped_data_loads_with_hashes_of_the_exact_text() {
        let r = reference();
        assert_eq!(r.hashes.base_levels, hash_hex(BASE_LEVELS_JSON));
        assert_eq!(r.hashes.categories.len(), 64);
        assert_eq!(shipped_texts()[1].1, CATEGORIES_JSON);
    }

    #[test]
    fn base_switches_on_2024_07_01() {
        let r = reference();
        assert!(matches!(
            r.base_level_on(day("2021-06-30")),
            Err(Rejection::NoBaseLevelInForce { .. })
        ));
        assert_eq!(
            r.base_level_on(day("2021-07-01")).unwrap().amount,
            dec!(360000)
        );
        assert_eq!(
            r.base_level_on(day("2024-06-30")).unwrap().amount,
            dec!(360000)
        );
        assert_eq!(
            r.base_level_on(day("2024-07-01")).unwrap().amount,
            dec!(500000)
        );
    }

    #[test]
    fn shipped_coefficients() {
        let r = reference();
        for (id, c) in [
            ("ORPHAN_CHILD_UNDER_4", dec!(2.5)),
            ("SINGLE_PARENT_POOR_PER_CHILD", dec!(1.0)),
            ("DISABLED_ESPECIALLY_SEVERE", dec!(2.0)),
            ("DISABLED_ESPECIALLY_SEVERE_CHILD_OR_ELDERLY", dec!(2.5)),
            ("ELDERLY_COMMUNITY_CARE", dec!(3.0)),
        ] {
            assert_eq!(
                r.category_on(&cat(id), day("2025-01-01"))
                    .unwrap()
                    .coefficient,
                c,
                "{id}"
            );
        }
        assert!(matches!(
            r.category_on(&cat("NOPE"), day("2025-01-01")),
            Err(Rejection::UnknownCategory { .. })
        ));
    }

    const BASE: &str = r#"{"id":"b","title":"t","notes":[],"levels":[
        {"id":"L1","version":1,"valid_from":"2021-07-01","amount":"360000","legal_basis":"x"}]}"#;

    fn cats(entries: &str) -> String {
        format!(r#"{{"id":"c","title":"t","notes":[],"categories":[{entries}]}}"#)
    }

    fn entry(version: u32, from: &str, coefficient: &str) -> String {
        format!(
            r#"{{"id":"C","version":{version},"valid_from":"{from}","coefficient":"{coefficient}","name":"n","legal_basis":"x"}}"#
        )
    }

    #[test]
    fn a_new_category_version_applies_from_its_date() {
        let text = cats(&[entry(1, "2021-07-01", "1.5"), entry(2, "2026-01-01", "2.0")].join(","));
        let r = ReferenceData::load(BASE, &text).unwrap();
        assert_eq!(
            r.category_on(&cat("C"), day("2025-12-31")).unwrap().version,
            1
        );
        assert_eq!(
            r.category_on(&cat("C"), day("2026-01-01"))
                .unwrap()
                .coefficient,
            dec!(2.0)
        );
        assert!(matches!(
            r.category_on(&cat("C"), day("2021-06-01")),
            Err(Rejection::CategoryNotInForce { .. })
        ));
    }

    #[test]
    fn defective_data_refused() {
        for (text, what) in [
            (cats(&entry(1, "2021-07-01", "0")), "zero coefficient"),
            (cats(&entry(1, "2021-07-01", "11")), "coefficient over max"),
            (cats(&entry(1, "2021-07-01", "1.505")), "too many decimals"),
            (cats(&entry(2, "2021-07-01", "1")), "starts at version 2"),
            (
                cats(&[entry(1, "2021-07-01", "1"), entry(2, "2021-07-01", "2")].join(",")),
                "same valid_from",
            ),
            (
                cats(&[entry(1, "2021-07-01", "1"), entry(1, "2022-07-01", "2")].join(",")),
                "duplicate",
            ),
            (cats(""), "empty"),
            (
                cats(&entry(1, "2021-07-01", "1")).replace("\"name\"", "\"nam\""),
                "unknown field",
            ),
        ] {
            assert!(ReferenceData::load(BASE, &text).is_err(), "{what}");
        }
        let fractional_base = BASE.replace("360000", "360000.5");
        assert!(matches!(
            ReferenceData::load(&fractional_base, &cats(&entry(1, "2021-07-01", "1"))),
            Err(ReferenceDataError::BaseAmount { .. })
        ));
    }
}
