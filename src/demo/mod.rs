//! `ansinh demo`: a province's year, appended through the real ledger.
//!
//! January: households are registered (personal data sealed) and the yearly review
//! classifies them under the standard in force. February: poor and near-poor
//! households borrow under the social-policy bank's programmes. March to November:
//! monthly collections at the commune transaction points, some missed. End of
//! November: the overdue run, a typhoon freezes loans in one commune and writes one
//! off, a family moves to another province, a death, and one erasure of personal
//! data. Every household is a task that submits its year in order; thousands run at
//! once, so group commit gathers them into batches.
//!
//! Inputs come from a seeded generator: two runs decide the same events (only
//! recorded-at times differ) and a second run appends nothing (idempotency keys).

/// The demo's payments year: budgets, entitlements, runs and the gateways' results.
pub mod payments;

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use tokio::task::JoinSet;

use crate::access::{Caller, Role};
use crate::book::codec;
use crate::chain::Partition;
use crate::domain::Rejection;
use crate::domain::eligibility::{self, Area, ClassificationInputs};
use crate::domain::ids::{CommuneCode, HouseholdId};
use crate::domain::loans::{Channel, EntrustedOrganisation};
use crate::domain::money::round_dong;
use crate::personal::{Member, PersonalData};
use crate::proto::envelope::Payload;
use crate::service::{LoanAction, Request, Service, ServiceError};

/// Households whose year runs at once (bounded so memory stays flat).
pub const HOUSEHOLDS_IN_FLIGHT_MAX: usize = 2_048;
/// Communes the demo uses per partition.
const COMMUNES_PER_PARTITION: u64 = 5;

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
    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[self.below(list.len() as u64) as usize]
    }
}

/// Communes of a partition (7-digit codes of the 2025 map; illustrative).
pub fn communes(partition: &str) -> Vec<CommuneCode> {
    (1..=COMMUNES_PER_PARTITION)
        .map(|n| CommuneCode::parse(&format!("{partition}{:05}", n * 7)).expect("7 digits"))
        .collect()
}

const FAMILY: &[&str] = &[
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ",
    "Hồ", "Ngô", "Dương", "Lý",
];
const MIDDLE: &[&str] = &["Văn", "Thị", "Hữu", "Đức", "Minh", "Ngọc", "Thanh", "Quốc"];
const GIVEN: &[&str] = &[
    "An", "Bình", "Cường", "Dũng", "Giang", "Hà", "Hạnh", "Hùng", "Lan", "Linh", "Mai", "Nam",
    "Nga", "Phúc", "Quân", "Sơn", "Thảo", "Trang", "Tuấn", "Yến",
];

fn name(rng: &mut Seeded) -> String {
    format!(
        "{} {} {}",
        rng.pick(FAMILY),
        rng.pick(MIDDLE),
        rng.pick(GIVEN)
    )
}

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).expect("valid demo date")
}

/// Everything one household does in the year, decided up front from the seed.
struct Plan {
    household: HouseholdId,
    area: Area,
    personal: PersonalData,
    inputs: ClassificationInputs,
    /// (programme, amount, term) when the household borrows.
    loan: Option<(&'static str, Decimal, u32)>,
    /// Months (3..=11) whose collection the household misses.
    missed: Vec<u32>,
    stops_paying_after: Option<u32>,
}

fn plan(rng: &mut Seeded, partition: &str, n: u64, indicators: &[String], year: i32) -> Plan {
    let communes = communes(partition);
    let commune = &communes[rng.below(communes.len() as u64) as usize];
    let household = HouseholdId::new(commune, n as u32).expect("serial fits 6 digits");
    let area = if rng.below(3) == 0 {
        Area::Urban
    } else {
        Area::Rural
    };
    let extra = rng.below(6) as usize;
    // Citizen ids: province of registration, century/sex digit, birth year, serial
    // unique per (household, member) so that no two households share a citizen.
    let citizen = |rng: &mut Seeded, member: u64| {
        let born_1900s = rng.below(2) == 0;
        let sex = rng.below(2);
        let century_sex = if born_1900s { sex } else { 2 + sex };
        let yy = if born_1900s {
            40 + rng.below(60)
        } else {
            rng.below(20)
        };
        format!(
            "0{partition}{century_sex}{yy:02}{:06}",
            (n * 8 + member) % 1_000_000
        )
    };
    let head_citizen_id = citizen(rng, 0);
    let members = (1..=extra as u64)
        .map(|m| Member {
            name: name(rng),
            // Young children have no citizen card yet.
            citizen_id: (rng.below(3) != 0).then(|| citizen(rng, m)),
            relation: ["spouse", "child", "parent", "grandchild"][rng.below(4) as usize].into(),
        })
        .collect();
    let personal = PersonalData {
        head_name: name(rng),
        head_citizen_id,
        phone: Some(format!("09{:08}", rng.below(100_000_000))),
        account_number: (rng.below(2) == 0)
            .then(|| format!("{:012}", rng.below(1_000_000_000_000))),
        members,
    };
    // Income per person per month, whole đồng, spread around the poverty lines.
    let income = Decimal::from(500_000 + rng.below(3_000_000) / 1_000 * 1_000);
    let deprived = indicators
        .iter()
        .filter(|_| rng.below(5) == 0)
        .cloned()
        .collect();
    let inputs = ClassificationInputs {
        income_per_person_month: income,
        area,
        deprived,
        review_year: year,
    };
    // Only to plan a loan: a household whose review the rules refuse plans none, and
    // the review itself, submitted to the ledger, is refused there and recorded.
    let class = eligibility::standard_in_force(d(year, 1, 10))
        .and_then(|s| eligibility::classify(s, &inputs))
        .ok();
    let borrows = rng.below(10) < 7;
    let loan = match class {
        Some(eligibility::Class::Poor) if borrows => Some((
            "POOR_HOUSEHOLD",
            Decimal::from(20_000_000 + rng.below(7) * 10_000_000),
            [36u32, 48, 60][rng.below(3) as usize],
        )),
        Some(eligibility::Class::NearPoor) if borrows => Some((
            "NEAR_POOR_HOUSEHOLD",
            Decimal::from(30_000_000 + rng.below(5) * 10_000_000),
            [36u32, 60][rng.below(2) as usize],
        )),
        Some(_) if area == Area::Rural && rng.below(10) == 0 => Some((
            "RURAL_CLEAN_WATER_SANITATION",
            Decimal::from(10_000_000 + rng.below(4) * 5_000_000),
            [24u32, 36][rng.below(2) as usize],
        )),
        _ => None,
    };
    let missed = (3..=11).filter(|_| rng.below(12) == 0).collect();
    let stops_paying_after = (rng.below(15) == 0).then(|| 4 + rng.below(5) as u32);
    Plan {
        household,
        area,
        personal,
        inputs,
        loan,
        missed,
        stops_paying_after,
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct DemoSummary {
    pub households: u64,
    pub decisions: u64,
    pub by_status: BTreeMap<String, u64>,
    pub loans: u64,
    pub loans_by_programme: BTreeMap<String, u64>,
    pub disbursed: Decimal,
    pub repayments: u64,
    pub repaid: Decimal,
    pub marked_overdue: u64,
    pub frozen: u64,
    pub written_off: u64,
    pub moves: u64,
    pub deaths: u64,
    pub erasures: u64,
    /// Steps the ledger refused that the demo expected it to accept; any one makes
    /// `ansinh demo` exit non-zero.
    pub refused: Vec<Refusal>,
    pub seconds: f64,
}

/// A step the ledger refused, named so that an operator can find it in the log: the
/// step (its idempotency key reads `demo:<year>:<step>:<household>`), the household
/// and the ledger's own words.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    pub step: String,
    pub household: String,
    /// The rejection's kind (its variant's name), for counts by kind.
    pub kind: String,
    pub reason: String,
}

/// Refusals named one per line; past this many, only counted by kind (a fault that
/// refuses every household would otherwise print thousands of lines).
pub const REFUSALS_NAMED_MAX: usize = 20;

impl DemoSummary {
    fn refuse(&mut self, step: &str, household: &HouseholdId, rejection: &Rejection) {
        let kind = format!("{rejection:?}");
        let kind = kind
            .split([' ', '{', '('])
            .next()
            .unwrap_or(&kind)
            .to_owned();
        self.refused.push(Refusal {
            step: step.to_owned(),
            household: household.to_string(),
            kind,
            reason: rejection.to_string(),
        });
    }

    /// Refusals counted by kind.
    pub fn refused_by_kind(&self) -> BTreeMap<&str, u64> {
        let mut by_kind = BTreeMap::new();
        for r in &self.refused {
            *by_kind.entry(r.kind.as_str()).or_default() += 1;
        }
        by_kind
    }

    /// What makes the year a failure, to print: None when the ledger accepted every
    /// step. A year with a refused step must not pass as a good one: each step is one
    /// the book should accept, so a refusal is a fault of the demo or of the ledger.
    pub fn refusals_report(&self) -> Option<String> {
        if self.refused.is_empty() {
            return None;
        }
        let counts: Vec<String> = self
            .refused_by_kind()
            .iter()
            .map(|(k, n)| format!("{k} ({n})"))
            .collect();
        let mut report = format!(
            "REFUSED: the ledger refused {} demo steps: {}",
            self.refused.len(),
            counts.join(", ")
        );
        for r in self.refused.iter().take(REFUSALS_NAMED_MAX) {
            report.push_str(&format!(
                "\n  {} of household {}: {}",
                r.step, r.household, r.reason
            ));
        }
        if self.refused.len() > REFUSALS_NAMED_MAX {
            report.push_str(&format!(
                "\n  ... and {} more",
                self.refused.len() - REFUSALS_NAMED_MAX
            ));
        }
        Some(report)
    }
}

/// A step's outcome for the demo: the ledger's answer, or None when it refused the
/// step, which is then recorded in `s` by step, household and reason. Any other error
/// stops the demo.
fn accepted<T>(
    s: &mut DemoSummary,
    step: &str,
    household: &HouseholdId,
    outcome: Result<T, ServiceError>,
) -> Result<Option<T>, ServiceError> {
    match outcome {
        Ok(answer) => Ok(Some(answer)),
        Err(ServiceError::Rejected(r)) => {
            s.refuse(step, household, &r);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A refused move that only tells the search to try the next household: the serial
/// lives in another of the partition's communes, or the household still owes a loan.
/// Both name the household moving out and are answered before its move-out is
/// appended (the first when its data are read, the second by the move-out's own
/// decision), so neither can leave a household moved out and arrived nowhere.
fn move_refusal_expected(rejection: &Rejection, from: &HouseholdId) -> bool {
    match rejection {
        Rejection::HouseholdNotRegistered { household }
        | Rejection::OpenLoans { household, .. } => household == from.as_str(),
        _ => false,
    }
}

#[derive(Default)]
struct Tally {
    s: DemoSummary,
}

impl Tally {
    fn merge(&mut self, o: DemoSummary) {
        let s = &mut self.s;
        s.households += o.households;
        s.decisions += o.decisions;
        for (k, v) in o.by_status {
            *s.by_status.entry(k).or_default() += v;
        }
        s.loans += o.loans;
        for (k, v) in o.loans_by_programme {
            *s.loans_by_programme.entry(k).or_default() += v;
        }
        s.disbursed += o.disbursed;
        s.repayments += o.repayments;
        s.repaid += o.repaid;
        s.marked_overdue += o.marked_overdue;
        s.frozen += o.frozen;
        s.written_off += o.written_off;
        s.moves += o.moves;
        s.deaths += o.deaths;
        s.erasures += o.erasures;
        s.refused.extend(o.refused);
    }
}

fn staff(role: Role, unit: &str) -> Caller {
    Caller {
        id: format!("staff:{}-{unit}", role.name()),
        role,
        unit: unit.to_owned(),
    }
}

/// Runs one household's year. A refused step is recorded (it makes the demo fail) and
/// ends the steps that depend on it; an error of the ledger stops the demo.
async fn household_year(
    service: Service,
    partition: String,
    plan: Plan,
    year: i32,
    typhoon_commune: CommuneCode,
) -> Result<DemoSummary, ServiceError> {
    let mut s = DemoSummary::default();
    let officer = staff(Role::CreditOfficer, &partition);
    let teller = staff(Role::Teller, &partition);
    let manager = staff(Role::BranchManager, &partition);
    let h = &plan.household;

    let key = |step: &str| format!("demo:{year}:{step}:{h}");
    // A receipt naming another kind of event than its step records: the step's key was
    // used for another request, as the service calls it.
    let reused = |step: &str| ServiceError::KeyReused { key: key(step) };

    macro_rules! submit {
        ($caller:expr, $step:expr, |$r:ident| $call:expr) => {{
            let step: &str = &$step;
            let k = key(step);
            let request = Request {
                caller: &$caller,
                idempotency_key: &k,
                correlation_id: "demo",
                fingerprint: None,
            };
            let $r = &request;
            let outcome = $call.await;
            accepted(&mut s, step, h, outcome)?
        }};
    }

    let registered = submit!(officer, "register", |r| service.register(
        r,
        h,
        plan.area,
        d(year, 1, 5),
        &plan.personal
    ));
    if registered.is_none() {
        return Ok(s);
    }
    s.households += 1;
    let Some(receipt) = submit!(officer, "review", |r| service.classify(
        r,
        h,
        plan.inputs.clone(),
        d(year, 1, 10),
        None
    )) else {
        return Ok(s);
    };
    s.decisions += 1;
    let Some(Payload::EligibilityDecided(decided)) =
        service.ledger.event_of(&receipt).await?.payload
    else {
        return Err(reused("review"));
    };
    *s.by_status.entry(decided.status).or_default() += 1;
    let Some((programme, amount, term)) = plan.loan else {
        return Ok(s);
    };
    let entrusted = [
        EntrustedOrganisation::WomensUnion,
        EntrustedOrganisation::FarmersUnion,
        EntrustedOrganisation::VeteransAssociation,
        EntrustedOrganisation::YouthUnion,
    ][(h.as_str().len() + amount.to_string().len()) % 4];
    let Some(approved) = submit!(officer, "approve", |r| service.loan(
        r,
        None,
        LoanAction::Approve {
            household: h.clone(),
            programme: programme.to_owned(),
            amount,
            term_months: term,
            savings_group: format!("TK-{}-{:02}", h.commune(), h.as_str().len() % 7),
            entrusted,
        },
        d(year, 2, 2),
        "approved by the commune credit board"
    )) else {
        return Ok(s);
    };
    let Some(Payload::LoanApproved(a)) = service.ledger.event_of(&approved).await?.payload else {
        return Err(reused("approve"));
    };
    let loan = crate::input::loan_ref(&crate::book::loan_ref(&partition, a.loan_number))
        .expect("a province's loan has a reference of one spelling");
    s.loans += 1;
    *s.loans_by_programme
        .entry(programme.to_owned())
        .or_default() += 1;
    let channel = if plan.personal.account_number.is_some() {
        Channel::BankTransfer
    } else {
        Channel::CommuneTransactionPoint
    };
    if submit!(teller, "disburse", |r| service.loan(
        r,
        Some(&loan),
        LoanAction::Disburse { amount, channel },
        d(year, 2, 5),
        "first tranche"
    ))
    .is_none()
    {
        return Ok(s);
    }
    s.disbursed += amount;
    // Monthly collection: the scheduled principal plus about a month of interest. The
    // rate is the one the ledger recorded; one it cannot read is damage to report, not
    // a loan without interest.
    let monthly_rate = codec::parse_money("monthly_rate", &a.monthly_rate).map_err(|e| {
        ServiceError::Append(crate::log::AppendError::Undecodable(format!(
            "the approval of household {h}'s loan: {e}"
        )))
    })?;
    let instalment = round_dong(amount / Decimal::from(term) + amount * monthly_rate);
    // Whether the loan fell overdue this year: a repayment after a missed month first
    // moves what fell due (and pays overdue principal), or the month-end run moves it.
    let mut fell_overdue = false;
    for month in 3..=11u32 {
        if plan.missed.contains(&month) || plan.stops_paying_after.is_some_and(|m| month > m) {
            continue;
        }
        // Collected on the instalment's due date (the tranche was paid out on 02-05),
        // so a month paid is paid on time.
        if let Some(receipt) = submit!(teller, format!("repay-{month:02}"), |r| service.loan(
            r,
            Some(&loan),
            LoanAction::Repay { amount: instalment },
            d(year, month, 5),
            "monthly collection at the commune transaction point"
        )) {
            s.repayments += 1;
            s.repaid += instalment;
            if let Some(Payload::LoanRepaymentReceived(split)) =
                service.ledger.event_of(&receipt).await?.payload
            {
                fell_overdue |=
                    !codec::parse_money("to_overdue_principal", &split.to_overdue_principal)
                        .map_err(|e| {
                            ServiceError::Append(crate::log::AppendError::Undecodable(format!(
                                "household {h}'s repayment: {e}"
                            )))
                        })?
                        .is_zero();
            }
        }
    }
    let as_of = d(year, 11, 30);
    // A loan paid up to date: the run records only the interest accrued. One that
    // stopped paying months ago moves each missed instalment from its own due date.
    if let Some(steps) = submit!(manager, "overdue", |r| service.mark_overdue(
        r,
        &loan,
        as_of,
        "month-end overdue run"
    )) {
        fell_overdue |= steps.iter().any(|(_, moved)| moved.is_some());
    }
    if fell_overdue {
        s.marked_overdue += 1;
    }
    if h.commune() == typhoon_commune && (h.as_str().ends_with('3') || h.as_str().ends_with('7')) {
        let decision = format!("QĐ-{year}-BAO-{}", typhoon_commune.local());
        if submit!(manager, "freeze", |r| service.loan(
            r,
            Some(&loan),
            LoanAction::Freeze {
                disaster_ref: decision.clone()
            },
            d(year, 12, 1),
            "typhoon damage: debt frozen by decision"
        ))
        .is_some()
        {
            s.frozen += 1;
            if h.as_str().ends_with('3')
                && submit!(manager, "write-off", |r| service.loan(
                    r,
                    Some(&loan),
                    LoanAction::WriteOff {
                        disaster_ref: decision.clone()
                    },
                    d(year, 12, 2),
                    "typhoon: risk debt written off by decision"
                ))
                .is_some()
            {
                s.written_off += 1;
            }
        }
    }
    Ok(s)
}

/// Runs the demo year for `households` households in each partition.
pub async fn run(
    service: &Service,
    partitions: &[Partition],
    households: u64,
    year: i32,
) -> Result<DemoSummary, ServiceError> {
    let started = Instant::now();
    // The year is played as it stands at its end: the ledger refuses commands dated after
    // its today, and the households' steps run through December. The payments months then
    // move the same clock day by day.
    payments::set_demo_clock(d(year, 12, 31));
    service.set_clock(std::sync::Arc::new(payments::demo_clock));
    let mut tally = Tally::default();
    let mut rng = Seeded::new(2026);
    let review_date = d(year, 1, 10);
    let indicators: Vec<String> = eligibility::standard_in_force(review_date)
        .expect("a standard covers the demo year")
        .indicators()
        .map(str::to_owned)
        .collect();
    let mut tasks = JoinSet::new();
    for partition in partitions {
        let typhoon_commune = communes(partition.as_str())[1].clone();
        for n in 1..=households {
            let plan = plan(&mut rng, partition.as_str(), n, &indicators, year);
            while tasks.len() >= HOUSEHOLDS_IN_FLIGHT_MAX {
                let done = tasks
                    .join_next()
                    .await
                    .expect("non-empty")
                    .expect("task ran")?;
                tally.merge(done);
            }
            tasks.spawn(household_year(
                service.clone(),
                partition.to_string(),
                plan,
                year,
                typhoon_commune.clone(),
            ));
        }
    }
    while let Some(done) = tasks.join_next().await {
        tally.merge(done.expect("task ran")?);
    }
    // The registry's rarer events, on a few households of the first two partitions.
    if let [first, second, ..] = partitions {
        registry_events(service, first, second, year, &mut tally.s).await?;
    }
    tally.s.seconds = started.elapsed().as_secs_f64();
    Ok(tally.s)
}

async fn registry_events(
    service: &Service,
    first: &Partition,
    second: &Partition,
    year: i32,
    s: &mut DemoSummary,
) -> Result<(), ServiceError> {
    let officer = staff(Role::CreditOfficer, first.as_str());
    let manager = staff(Role::BranchManager, first.as_str());
    move_one(service, first, second, year, s, &officer).await?;
    death_and_erasure(service, first, year, s, &manager).await
}

/// Moves the first household that can move to the second partition. Households that
/// did not borrow can move; the rule refuses a move with open loans, and the search
/// passes over those refusals and over serials registered in another commune. Any
/// other refusal is recorded and ends the search: moving another household would hide
/// it, and after a move-out it would leave this one active nowhere.
async fn move_one(
    service: &Service,
    first: &Partition,
    second: &Partition,
    year: i32,
    s: &mut DemoSummary,
    officer: &Caller,
) -> Result<(), ServiceError> {
    for n in 1..=40u64 {
        for c in &communes(first.as_str()) {
            let from = HouseholdId::new(c, n as u32).expect("serial");
            let to = HouseholdId::new(&communes(second.as_str())[0], 900_000 + n as u32)
                .expect("serial");
            let key = format!("demo:{year}:move:{from}");
            let req = Request {
                caller: officer,
                idempotency_key: &key,
                correlation_id: "demo:moves",
                fingerprint: None,
            };
            match service
                .move_household(&req, &from, &to, Area::Urban, d(year, 12, 10))
                .await
            {
                Ok(_) => {
                    s.moves += 1;
                    return Ok(());
                }
                Err(ServiceError::Rejected(r)) if move_refusal_expected(&r, &from) => continue,
                Err(ServiceError::Rejected(r)) => {
                    s.refuse("move", &from, &r);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

async fn death_and_erasure(
    service: &Service,
    partition: &Partition,
    year: i32,
    s: &mut DemoSummary,
    manager: &Caller,
) -> Result<(), ServiceError> {
    for n in 41..=80u64 {
        for c in communes(partition.as_str()) {
            let h = HouseholdId::new(&c, n as u32).expect("serial");
            let data = match service.personal(&h).await {
                Ok(data) => data,
                // The household this step chose on an earlier run of the same year (the
                // first readable one, in a fixed order): done already, so a rerun
                // appends nothing rather than choosing the next household.
                Err(ServiceError::Vault(crate::personal::VaultError::Erased { .. })) => {
                    return Ok(());
                }
                // The serial lives in another of the partition's communes. Any other
                // failure to read stops the demo: skipping the household would choose
                // another one for the step, and a rerun could choose differently.
                Err(ServiceError::Rejected(Rejection::HouseholdNotRegistered { household }))
                    if household == h.as_str() =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(deceased) = data.members.iter().find(|m| m.citizen_id.is_some()) else {
                continue;
            };
            let key = format!("demo:{year}:death:{h}");
            let req = Request {
                caller: manager,
                idempotency_key: &key,
                correlation_id: "demo:registry",
                fingerprint: None,
            };
            let died = service
                .record_death(
                    &req,
                    &h,
                    deceased.citizen_id.as_deref().expect("chosen with an id"),
                    d(year, 12, 12),
                )
                .await;
            if accepted(s, "death", &h, died)?.is_none() {
                return Ok(());
            }
            s.deaths += 1;
            let key = format!("demo:{year}:erase:{h}");
            let req = Request {
                caller: manager,
                idempotency_key: &key,
                correlation_id: "demo:registry",
                fingerprint: None,
            };
            let now_ms = chrono::Utc::now().timestamp_millis();
            let erased = service
                .erase_personal_data(
                    &req,
                    &h,
                    d(year, 12, 15),
                    "request under Decree 13/2023",
                    now_ms,
                )
                .await;
            if accepted(s, "erase", &h, erased)?.is_some() {
                s.erasures += 1;
            }
            return Ok(());
        }
    }
    Ok(())
}

/// The year the demo plays.
pub fn demo_year(today: NaiveDate) -> i32 {
    today.year()
}

/// Why the demo's bundle step failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoBundleError {
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error(transparent)]
    Export(#[from] crate::bundle::export::ExportError),
    #[error("the bundle written does not verify: {0}")]
    Bundle(#[from] crate::bundle::BundleError),
    #[error(transparent)]
    Projection(#[from] crate::projection::ProjectionError),
    #[error("writing the bundle: {0}")]
    Io(#[from] std::io::Error),
    #[error("partition {0} has no loan to show a bundle of")]
    NoHousehold(String),
}

/// The demo's last act: checkpoint the partition (and the key partition), export the
/// bundle of the first household with a loan into `<data-dir>/bundles/<household>`,
/// and verify it from the files alone, with the code of `ansinh audit verify-bundle`,
/// pinned to the key the demo's ledger signs with (an auditor's `--trust`).
pub async fn export_and_verify_bundle(
    runtime: &crate::app::Runtime,
    checkpointer: &mut crate::checkpoint::Checkpointer,
    partition: &Partition,
    data_dir: &std::path::Path,
) -> Result<(String, std::path::PathBuf, crate::bundle::Verified), DemoBundleError> {
    use crate::bundle::{self, BundleFiles, Scope, export};
    // The first loan only: a province's loans are not read for it.
    let household = runtime
        .projector
        .loans_iter(partition.as_str())
        .next()
        .transpose()?
        .map(|loan| loan.household.to_string())
        .ok_or_else(|| DemoBundleError::NoHousehold(partition.to_string()))?;
    let keys_partition = checkpointer.config().keys_partition.clone();
    checkpointer.checkpoint(partition).await?;
    checkpointer.checkpoint(&keys_partition).await?;
    let auditor = crate::checkpoint::Auditor::open(
        runtime.client.clone(),
        runtime.ledger.config().clone(),
        checkpointer.config().clone(),
    )
    .await?;
    let request = export::ExportRequest {
        scope: Scope::Household(household.clone()),
        from: None,
        to: None,
    };
    let dir = data_dir.join("bundles").join(&household);
    export::export(&auditor, &request).await?.write(&dir)?;
    let pinned = [hex::encode(checkpointer.public_key())];
    let verified = bundle::verify(&BundleFiles::read(&dir)?, &pinned)?;
    Ok((household, dir, verified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::AppendError;

    fn household(id: &str) -> HouseholdId {
        HouseholdId::parse(id).expect("a household id")
    }

    #[test]
    fn a_refused_step_is_recorded_by_name_and_fails_the_year() {
        let h = household("0100014-000001");
        let mut s = DemoSummary::default();
        let accepted_step = accepted(&mut s, "register", &h, Ok::<_, ServiceError>(7));
        assert_eq!(accepted_step.unwrap(), Some(7));
        assert!(
            s.refusals_report().is_none(),
            "every step accepted: a good year"
        );

        let overpaid = Rejection::Overpayment {
            owed: Decimal::from(100),
            offered: Decimal::from(250),
        };
        let words = overpaid.to_string();
        let refused = accepted::<()>(
            &mut s,
            "repay-05",
            &h,
            Err(ServiceError::Rejected(overpaid)),
        );
        assert_eq!(
            refused.unwrap(),
            None,
            "a refusal ends the step, not the demo"
        );
        assert_eq!(
            s.refused,
            [Refusal {
                step: "repay-05".into(),
                household: "0100014-000001".into(),
                kind: "Overpayment".into(),
                reason: words.clone(),
            }]
        );

        // Households' years merge into the year's tally, refusals with them.
        let mut tally = Tally::default();
        tally.merge(s);
        let report = tally
            .s
            .refusals_report()
            .expect("a refused step fails the year");
        assert!(report.starts_with("REFUSED: "), "{report}");
        assert!(report.contains("Overpayment (1)"), "{report}");
        assert!(
            report.contains(&format!("repay-05 of household 0100014-000001: {words}")),
            "{report}"
        );
    }

    #[test]
    fn an_error_that_is_not_a_refusal_stops_the_demo() {
        let mut s = DemoSummary::default();
        let h = household("0100014-000001");
        let outcome = accepted::<()>(
            &mut s,
            "review",
            &h,
            Err(ServiceError::Append(AppendError::Nats("gone".into()))),
        );
        assert!(matches!(outcome, Err(ServiceError::Append(_))));
        assert!(s.refused.is_empty());
    }

    #[test]
    fn a_long_list_of_refusals_is_named_up_to_its_bound_and_counted_whole() {
        let mut s = DemoSummary::default();
        for n in 1..=REFUSALS_NAMED_MAX as u32 + 5 {
            let h = household(&format!("0100014-{n:06}"));
            s.refuse("disburse", &h, &Rejection::ZeroAmount);
        }
        let report = s.refusals_report().unwrap();
        assert!(report.contains("ZeroAmount (25)"), "{report}");
        assert_eq!(report.matches("disburse of household").count(), 20);
        assert!(report.ends_with("... and 5 more"), "{report}");
    }

    #[test]
    fn the_move_search_passes_over_only_the_moving_households_own_expected_refusals() {
        let from = household("0100014-000003");
        let to = "7900007-900003".to_string();
        let not_here = Rejection::HouseholdNotRegistered {
            household: from.to_string(),
        };
        let owes = Rejection::OpenLoans {
            household: from.to_string(),
            loan: 12,
        };
        assert!(move_refusal_expected(&not_here, &from));
        assert!(move_refusal_expected(&owes, &from));
        // Refusals of the arrival, or of another household, are not the search's.
        for unexpected in [
            Rejection::HouseholdExists {
                household: to.clone(),
            },
            Rejection::HouseholdNotRegistered {
                household: to.clone(),
            },
            Rejection::CitizenAlreadyRegistered { household: to },
            Rejection::UnsupportedCommand {
                what: "household already moved to 7900007-900009".into(),
            },
        ] {
            assert!(!move_refusal_expected(&unexpected, &from), "{unexpected:?}");
        }
    }
}
