//! `ansinh demo`: a province's review season appended through the real ledger.
//!
//! Households are registered and classified under the poverty standard in force,
//! many appends in flight at once so group commit shows; then the chain is verified
//! and the projections caught up. Inputs come from a seeded generator, so two runs
//! produce the same events (only recorded-at times differ).

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use tokio::task::JoinSet;

use crate::chain::Partition;
use crate::domain::eligibility::{self, Area, Class, ClassificationInputs};
use crate::domain::ids::CitizenId;
use crate::log::{AppendError, Draft, Ledger};
use crate::proto::{self, envelope::Payload};

/// Appends in flight at once during the demo (bounded so memory stays flat).
pub const IN_FLIGHT_APPENDS_MAX: usize = 4_096;

/// Communes the demo uses per partition (7-digit codes of the 2025 map; illustrative).
fn communes(partition: &str) -> Vec<String> {
    (1..=5)
        .map(|n| format!("{partition}{:05}", n * 7))
        .collect()
}

/// A small deterministic generator (SplitMix64): the demo must not depend on a clock
/// or an OS random source.
pub struct Seeded(u64);

impl Seeded {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[derive(Debug, Default)]
pub struct DemoSummary {
    pub households: u64,
    pub decisions: u64,
    pub by_class: std::collections::BTreeMap<String, u64>,
    pub seconds: f64,
}

pub fn class_name(class: Class) -> &'static str {
    match class {
        Class::Poor => "poor",
        Class::NearPoor => "near_poor",
        Class::AverageLivingStandard => "average",
        Class::NotPoor => "not_poor",
    }
}

/// Registers and classifies `households` households in each partition.
pub async fn run(
    ledger: &Ledger,
    partitions: &[Partition],
    households: u64,
    review_date: NaiveDate,
) -> Result<DemoSummary, AppendError> {
    let started = Instant::now();
    let mut summary = DemoSummary::default();
    let mut rng = Seeded::new(2026);
    let indicators: Vec<String> = eligibility::standard_in_force(review_date)
        .expect("a standard covers the demo date")
        .dimensions
        .iter()
        .flat_map(|d| d.indicators.clone())
        .collect();
    let officer = proto::Actor {
        id: "staff:demo-officer".into(),
        role: "credit_officer".into(),
        unit: String::new(),
    };
    let mut tasks = JoinSet::new();
    for partition in partitions {
        let communes = communes(partition.as_str());
        for n in 1..=households {
            let commune = &communes[rng.below(communes.len() as u64) as usize];
            let household_id = format!("{commune}-{n:06}");
            let area = if rng.below(3) == 0 {
                Area::Urban
            } else {
                Area::Rural
            };
            let members = 1 + rng.below(7) as u32;
            let actor = proto::Actor {
                unit: commune.clone(),
                ..officer.clone()
            };
            let subjects = vec![
                format!("household:{household_id}"),
                format!("commune:{commune}"),
            ];
            let registered = Draft {
                partition: partition.clone(),
                actor: actor.clone(),
                idempotency_key: format!("register:{household_id}"),
                correlation_id: "demo:registry".into(),
                subjects: subjects.clone(),
                payload: Payload::HouseholdRegistered(proto::HouseholdRegistered {
                    household_id: household_id.clone(),
                    commune_code: commune.clone(),
                    area: area_name(area).into(),
                    members,
                }),
            };
            // Income per person per month, whole đồng, spread around the poverty lines.
            let income = Decimal::from(600_000 + rng.below(3_000_000) / 1_000 * 1_000);
            let deprived: BTreeSet<String> = indicators
                .iter()
                .filter(|_| rng.below(6) == 0)
                .cloned()
                .collect();
            let inputs = ClassificationInputs {
                income_per_person_month: income,
                area,
                deprived,
                review_year: review_date.year_ce().1 as i32,
            };
            // The synthetic citizen id never leaves this function: personal data stay out of the log.
            let citizen = CitizenId::parse(&format!(
                "0{}2{:02}{n:06}",
                partition.as_str(),
                60 + rng.below(40)
            ))
            .expect("synthetic citizen id has the right shape");
            let decision =
                eligibility::decide_classification(citizen, None, inputs, &actor.id, review_date)
                    .expect("demo inputs are valid");
            *summary
                .by_class
                .entry(class_name(decision.class).to_string())
                .or_default() += 1;
            let decided = Draft {
                partition: partition.clone(),
                actor,
                idempotency_key: format!("review:{}:{household_id}", decision.inputs.review_year),
                correlation_id: "demo:review".into(),
                subjects,
                payload: Payload::EligibilityDecided(proto::EligibilityDecided {
                    household_id,
                    review_year: decision.inputs.review_year as u32,
                    income_per_person_vnd: decision.inputs.income_per_person_month.to_string(),
                    area: area_name(area).into(),
                    deprived_indicators: decision.inputs.deprived.iter().cloned().collect(),
                    standard_id: decision.standard_id.clone(),
                    standard_hash: decision.standard_hash.clone(),
                    class: class_name(decision.class).into(),
                    decided_on: decision.decision_date.to_string(),
                    valid_from: decision.valid_from.to_string(),
                    valid_to: decision.valid_to.to_string(),
                }),
            };
            // Registration must precede the decision in the chain: append it first.
            let ledger = ledger.clone();
            while tasks.len() >= IN_FLIGHT_APPENDS_MAX {
                tasks
                    .join_next()
                    .await
                    .expect("non-empty")
                    .expect("task ran")?;
            }
            tasks.spawn(async move {
                ledger.append(registered).await?;
                ledger.append(decided).await
            });
            summary.households += 1;
            summary.decisions += 1;
        }
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task ran")?;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

pub fn area_name(area: Area) -> &'static str {
    match area {
        Area::Rural => "rural",
        Area::Urban => "urban",
    }
}

use chrono::Datelike as _;
