//! `ansinh audit recompute-eligibility`: re-derives every recorded eligibility decision
//! from its recorded inputs and the standard it names, and lists every mismatch.
//!
//! The chain proves a decision was not changed after it was recorded; this proves it
//! was computed right when it was recorded (or that the standard file has changed since).

use std::collections::BTreeSet;
use std::str::FromStr;

use async_nats::jetstream::stream::Stream;
use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::book::codec::class_name;
use crate::chain::Partition;
use crate::domain::eligibility::{self, Area, ClassificationInputs};
use crate::log::LogConfig;
use crate::proto::{EligibilityDecided, envelope::Payload};
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

#[derive(Debug, Default, serde::Serialize)]
pub struct RecomputeReport {
    pub decisions: u64,
    pub mismatches: Vec<Mismatch>,
}

/// Pure: what is wrong with one recorded decision, if anything.
pub fn recheck(d: &EligibilityDecided) -> Option<String> {
    let Some(standard) = eligibility::standard_by_id(&d.standard_id) else {
        return Some(format!("unknown standard {:?}", d.standard_id));
    };
    if standard.content_hash != d.standard_hash {
        return Some(format!(
            "standard {} has hash {} now, the decision recorded {}",
            d.standard_id, standard.content_hash, d.standard_hash
        ));
    }
    let Ok(decided_on) = NaiveDate::from_str(&d.decided_on) else {
        return Some(format!("decision date {:?} is not a date", d.decided_on));
    };
    match eligibility::standard_in_force(decided_on) {
        Ok(in_force) if in_force.id == d.standard_id => {}
        Ok(in_force) => {
            return Some(format!(
                "standard {} was not in force on {decided_on}; {} was",
                d.standard_id, in_force.id
            ));
        }
        Err(e) => return Some(e.to_string()),
    }
    let area = match d.area.as_str() {
        "rural" => Area::Rural,
        "urban" => Area::Urban,
        other => return Some(format!("area {other:?} is neither rural nor urban")),
    };
    let Ok(income) = Decimal::from_str(&d.income_per_person_vnd) else {
        return Some(format!(
            "income {:?} is not a decimal amount",
            d.income_per_person_vnd
        ));
    };
    let inputs = ClassificationInputs {
        income_per_person_month: income,
        area,
        deprived: d
            .deprived_indicators
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        review_year: d.review_year as i32,
    };
    match eligibility::classify(standard, &inputs) {
        Ok(class) if class_name(class) == d.class => None,
        Ok(class) => Some(format!(
            "recorded class {}, inputs give {}",
            d.class,
            class_name(class)
        )),
        Err(e) => Some(format!("recorded inputs are refused now: {e}")),
    }
}

/// Verifies the chain and rechecks every decision on it. `progress` is called with the
/// stream sequence of every event read (for a progress bar).
pub async fn recompute_eligibility(
    stream: &mut Stream,
    config: &LogConfig,
    only: Option<&Partition>,
    mut progress: impl FnMut(u64),
) -> Result<RecomputeReport, VerifyError> {
    let mut report = RecomputeReport::default();
    verify_with(stream, config, only, |stream_sequence, envelope| {
        progress(stream_sequence);
        if let Some(Payload::EligibilityDecided(d)) = &envelope.payload {
            report.decisions += 1;
            if let Some(problem) = recheck(d) {
                report.mismatches.push(Mismatch {
                    partition: envelope.partition.clone(),
                    sequence: envelope.sequence,
                    stream_sequence,
                    household_id: d.household_id.clone(),
                    problem,
                });
            }
        }
    })
    .await?;
    Ok(report)
}
