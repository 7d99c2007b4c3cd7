//! `ansinh audit recompute-eligibility`: re-derives every recorded eligibility decision
//! from its recorded inputs, the standard it names and the household's previous
//! decision on the chain, and lists every mismatch.
//!
//! The chain proves a decision was not changed after it was recorded; this proves it
//! was computed right when it was recorded (or that the standard file has changed since).
//! Every field the book trusts when it approves a loan is re-derived: the class, the
//! status (escaped poverty follows from the previous class), the validity and the
//! escaped-poverty window (`HouseholdStanding::statuses_on` reads all of them). A
//! correction is checked against the corrected decision's own prior class and the window
//! before it, and must name the household's latest decision of the partition, as the book
//! requires.

use std::collections::HashMap;

use async_nats::jetstream::stream::Stream;
use chrono::NaiveDate;

use crate::book::codec::{self, class_name, status_name};
use crate::chain::Partition;
use crate::domain::eligibility::{self, Class, ClassificationDecided, Mismatch as Differs};
use crate::domain::ids::HouseholdId;
use crate::domain::loans::StandingBefore;
use crate::log::LogConfig;
use crate::proto::{EligibilityDecided, HouseholdMovedIn, envelope::Payload};
use crate::verify::{VerifyError, verify_with};

/// One decision that does not re-derive.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mismatch {
    pub partition: String,
    pub sequence: u64,
    pub stream_sequence: u64,
    pub household_id: String,
    pub problem: String,
}

/// Most mismatches a report lists; past it they are counted (`not_listed`), so a year's
/// decisions that all fail (a standard's data file changed) cost bounded memory, in
/// `serve`'s scan job as in the CLI.
pub const MISMATCHES_LISTED_MAX: usize = 10_000;

#[derive(Debug, Default, serde::Serialize)]
pub struct RecomputeReport {
    pub decisions: u64,
    /// The first `MISMATCHES_LISTED_MAX` decisions that did not re-derive, in log order.
    pub mismatches: Vec<Mismatch>,
    /// Decisions that did not re-derive past those listed.
    pub not_listed: u64,
}

impl RecomputeReport {
    /// Every decision that did not re-derive, listed or not.
    pub fn mismatch_count(&self) -> u64 {
        self.mismatches.len() as u64 + self.not_listed
    }

    /// Whether every decision re-derived.
    pub fn all_rederived(&self) -> bool {
        self.mismatch_count() == 0
    }

    fn found(&mut self, mismatch: Mismatch) {
        if self.mismatches.len() < MISMATCHES_LISTED_MAX {
            self.mismatches.push(mismatch);
        } else {
            self.not_listed += 1;
        }
    }
}

/// What a partition's book held for a household when a decision came, as the chain
/// recorded it: a new decision's prior class and escaped-poverty window follow from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Before {
    pub class: Class,
    pub escaped_until: Option<NaiveDate>,
    /// The date the standing holds from: a decision dated earlier is refused by the book.
    pub valid_from: NaiveDate,
    /// Its review year: a decision for an earlier one is refused by the book.
    pub review_year: i32,
    /// The latest decision of the partition that gave this standing, which a correction
    /// names and is checked against; None for a standing a move carried in (the book's
    /// `HouseholdStanding::before`).
    pub latest: Option<LatestDecision>,
}

/// A household's latest decision, as a correction of it is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatestDecision {
    /// Its partition sequence.
    pub sequence: u64,
    /// Its prior class and the window running before it: a correction decides with them.
    pub before: StandingBefore,
}

/// A recorded decision as the book reads it (under `household`: a move-in files the
/// standing it carries under the new id), or why it cannot be read.
fn read(
    d: &EligibilityDecided,
    household: &str,
) -> Result<(ClassificationDecided, Option<NaiveDate>), String> {
    let household = HouseholdId::parse(household).map_err(|e| e.to_string())?;
    codec::decided_from_proto(d, household, "").map_err(|e| e.to_string())
}

/// Pure: what is wrong with one recorded decision (`read` is its reading), if anything,
/// given what the book held for its household before it (`None`: no decision yet).
fn recheck(
    d: &EligibilityDecided,
    read: &Result<(ClassificationDecided, Option<NaiveDate>), String>,
    before: Option<Before>,
) -> Option<String> {
    let Some(standard) = eligibility::standard_by_id(&d.standard_id) else {
        return Some(format!("unknown standard {:?}", d.standard_id));
    };
    if standard.content_hash != d.standard_hash {
        return Some(format!(
            "standard {} has hash {} now, the decision recorded {}",
            d.standard_id, standard.content_hash, d.standard_hash
        ));
    }
    let (decision, escaped_until) = match read {
        Ok((decision, escaped_until)) => (decision, *escaped_until),
        Err(e) => return Some(format!("the decision cannot be read: {e}")),
    };
    let year = decision.inputs.review_year;
    match eligibility::standard_for_review_year(year) {
        Ok(of_year) if of_year.id == d.standard_id => {}
        Ok(of_year) => {
            return Some(format!(
                "standard {} is not the one of review year {year}; {} is",
                d.standard_id, of_year.id
            ));
        }
        Err(e) => return Some(e.to_string()),
    }
    if let Some(b) = before.filter(|b| decision.decision_date < b.valid_from) {
        return Some(format!(
            "dated {} before the household's previous decision, which holds from {}",
            decision.decision_date, b.valid_from
        ));
    }
    if let Some(b) = before.filter(|b| decision.inputs.review_year < b.review_year) {
        return Some(format!(
            "for review year {} after the household's decision for {}",
            decision.inputs.review_year, b.review_year
        ));
    }
    // What the decision is decided with: the standing before it, or for a correction the
    // corrected decision's own prior class and the window before that decision.
    let decided_with = match decision.corrects {
        None => StandingBefore {
            prior_class: before.map(|b| b.class),
            escaped_until: before.and_then(|b| b.escaped_until),
        },
        Some(_) => {
            let latest = before.and_then(|b| Some((b, b.latest?)));
            let Some((b, latest)) = latest.filter(|(_, l)| l.sequence == d.corrects) else {
                return Some(format!(
                    "corrects decision {}, which is not the household's latest decision in the partition ({})",
                    d.corrects,
                    latest.map_or("it has none".to_string(), |(_, l)| format!(
                        "that is {}",
                        l.sequence
                    ))
                ));
            };
            if decision.inputs.review_year != b.review_year {
                return Some(format!(
                    "a correction for review year {} of a decision for {}",
                    decision.inputs.review_year, b.review_year
                ));
            }
            latest.before
        }
    };
    let prior = decided_with.prior_class;
    if decision.prior_class != prior {
        let name = |c: Option<Class>| c.map_or("none", class_name);
        return Some(format!(
            "recorded prior class {}, the household's {} gives {}",
            name(decision.prior_class),
            if decision.corrects.is_some() {
                "corrected decision"
            } else {
                "previous decision"
            },
            name(prior)
        ));
    }
    // Class, then status from class and prior class, then validity: the first that differs.
    if let Err(differs) = eligibility::recompute_against(std::slice::from_ref(standard), decision) {
        return Some(match differs {
            Differs::ClassDiffers {
                recorded,
                recomputed,
            } => format!(
                "recorded class {}, inputs give {}",
                class_name(recorded),
                class_name(recomputed)
            ),
            Differs::StatusDiffers {
                recorded,
                recomputed,
            } => format!(
                "recorded status {}, class and prior class give {}",
                status_name(recorded),
                status_name(recomputed)
            ),
            Differs::ValidityDiffers {
                recorded,
                recomputed,
            } => format!(
                "recorded validity {} to {}, the rule gives {} to {}",
                recorded.0, recorded.1, recomputed.0, recomputed.1
            ),
            Differs::InputsRefused(e) => format!("recorded inputs are refused now: {e}"),
            other => other.to_string(),
        });
    }
    let window = eligibility::escaped_until_after(
        decision.status,
        decision.valid_to,
        decided_with.escaped_until,
    );
    if escaped_until != window {
        let name = |d: Option<NaiveDate>| d.map_or("none".to_string(), |d| d.to_string());
        return Some(format!(
            "recorded escaped-poverty window to {}, the rule gives {}",
            name(escaped_until),
            name(window)
        ));
    }
    None
}

/// What the book holds after a recorded decision it could read (one it cannot read
/// leaves it what it held), given what it held `before`: `loans::apply`'s rule. `at` is
/// the decision's partition sequence, None for a standing a move carried in.
fn held_after(
    read: &Result<(ClassificationDecided, Option<NaiveDate>), String>,
    before: Option<Before>,
    at: Option<u64>,
) -> Option<Before> {
    read.as_ref().ok().map(|(decision, escaped_until)| Before {
        class: decision.class,
        escaped_until: *escaped_until,
        valid_from: decision.valid_from,
        review_year: decision.inputs.review_year,
        latest: at.and_then(|sequence| {
            // A correction takes the corrected decision's place and keeps what the
            // household held before that one.
            let before = match decision.corrects {
                Some(_) => before.and_then(|b| b.latest)?.before,
                None => StandingBefore {
                    prior_class: decision.prior_class,
                    escaped_until: before.and_then(|b| b.escaped_until),
                },
            };
            Some(LatestDecision { sequence, before })
        }),
    })
}

/// The pure fold: feed it every verified event of a partition in chain order. It
/// follows each household's standing as the partition's book holds it, recorded
/// values and all, so each decision is checked against what its book knew.
#[derive(Debug, Default)]
pub struct Rechecker {
    /// (partition, household) → the standing its book holds.
    held: HashMap<(String, String), Before>,
    /// (partition, household) → the area it is registered in (its registration's or its
    /// move-in's, the book's rule for a review's area, ADR 0021).
    areas: HashMap<(String, String), eligibility::Area>,
}

impl Rechecker {
    /// Rechecks a recorded decision of `partition`, at its partition `sequence`; its
    /// problem, if any.
    pub fn decision(
        &mut self,
        partition: &str,
        sequence: u64,
        d: &EligibilityDecided,
    ) -> Option<String> {
        let key = (partition.to_string(), d.household_id.clone());
        let read = read(d, &d.household_id);
        let before = self.held.get(&key).copied();
        let problem = recheck(d, &read, before).or_else(|| {
            let (decision, _) = read.as_ref().ok()?;
            let registered = *self.areas.get(&key)?;
            (decision.inputs.area != registered).then(|| {
                format!(
                    "decided for the {} area; the household is registered in the {} one",
                    codec::area_name(decision.inputs.area),
                    codec::area_name(registered)
                )
            })
        });
        // The book applies what was recorded, right or wrong, and decides the next
        // decision from it.
        if let Some(after) = held_after(&read, before, Some(sequence)) {
            self.held.insert(key, after);
        }
        problem
    }

    /// A household registered in `partition`, in `area` (as recorded).
    pub fn registered(&mut self, partition: &str, household_id: &str, area: &str) {
        if let Ok(area) = codec::parse_area(area) {
            self.areas
                .insert((partition.to_string(), household_id.to_string()), area);
        }
    }

    /// A household moved into `partition`: its book holds the standing the move carries.
    pub fn moved_in(&mut self, partition: &str, m: &HouseholdMovedIn) {
        self.registered(partition, &m.household_id, &m.area);
        if let Some(after) = m
            .standing
            .as_ref()
            .and_then(|s| held_after(&read(s, &m.household_id), None, None))
        {
            self.held
                .insert((partition.to_string(), m.household_id.clone()), after);
        }
    }
}

/// Verifies the chain and rechecks every decision on it. `progress` is called with the
/// stream sequence of every event read (for a progress bar).
pub async fn recompute_eligibility(
    stream: &mut Stream,
    config: &LogConfig,
    keys_partition: &Partition,
    only: Option<&Partition>,
    mut progress: impl FnMut(u64),
) -> Result<RecomputeReport, VerifyError> {
    let mut report = RecomputeReport::default();
    let mut rechecker = Rechecker::default();
    verify_with(
        stream,
        config,
        keys_partition,
        only,
        |stream_sequence, envelope| {
            progress(stream_sequence);
            if let Some(Payload::HouseholdMovedIn(m)) = &envelope.payload {
                rechecker.moved_in(&envelope.partition, m);
            }
            if let Some(Payload::HouseholdRegistered(r)) = &envelope.payload {
                rechecker.registered(&envelope.partition, &r.household_id, &r.area);
            }
            if let Some(Payload::EligibilityDecided(d)) = &envelope.payload {
                report.decisions += 1;
                if let Some(problem) = rechecker.decision(&envelope.partition, envelope.sequence, d)
                {
                    report.found(Mismatch {
                        partition: envelope.partition.clone(),
                        sequence: envelope.sequence,
                        stream_sequence,
                        household_id: d.household_id.clone(),
                        problem,
                    });
                }
            }
        },
    )
    .await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of more mismatches than it lists holds `MISMATCHES_LISTED_MAX` of them
    /// and counts every one.
    #[test]
    fn mismatches_past_the_bound_are_counted_not_kept() {
        let mut report = RecomputeReport::default();
        let extra = 5;
        for sequence in 1..=(MISMATCHES_LISTED_MAX as u64 + extra) {
            report.found(Mismatch {
                partition: "01".into(),
                sequence,
                stream_sequence: sequence,
                household_id: "0100007-000001".into(),
                problem: "standard file changed".into(),
            });
        }
        assert_eq!(report.mismatches.len(), MISMATCHES_LISTED_MAX);
        assert_eq!(report.mismatches.last().unwrap().sequence, 10_000);
        assert_eq!(report.not_listed, extra);
        assert_eq!(
            report.mismatch_count(),
            MISMATCHES_LISTED_MAX as u64 + extra
        );
        assert!(!report.all_rederived());
        assert!(RecomputeReport::default().all_rederived());
    }
}
