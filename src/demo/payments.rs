//! The payments part of `ansinh demo`: monthly social assistance for a year, paid
//! through simulated gateways over the real gateway transport: a bank (`vcb`) and the
//! post office's cash pay-out (`vnpost`).
//!
//! Each month: per province, the branch allocates the communes' budgets and runs the
//! payments; then each gateway (`gateway::sim`) fetches its instructions over NATS
//! request/reply and posts signed results (most settle, some fail or are returned, some
//! are posted twice and answered with the first answer), which the ledger's
//! `gateway::server` verifies and hands to `gateway_ledger::LedgerSink`; failed and
//! returned payments are reissued as post-office cash, which `vnpost` then pays.
//!
//! The embedded nats-server has no accounts: each simulated gateway has its own
//! connection with its own inbox prefix, and its posts are signed and checked exactly as
//! in production, but no NATS user keeps it to its own subjects (docs/GATEWAYS.md §8).
//!
//! The demo plays the twelve months of its year whatever today is, so the ledger side and the gateways share a
//! demo clock set to each month's pay days (results are never dated before their
//! instructions, and stay inside the replay window).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::access::{Caller, Role};
use crate::chain::Partition;
use crate::checkpoint::sign::KeyPair;
use crate::demo::{Seeded, communes};
use crate::domain::payments::budget::BudgetKey;
use crate::domain::payments::entitlements::{Channel, Terms};
use crate::domain::payments::ids::{
    BeneficiaryRef, CategoryId, CommuneId, GatewayId, HouseholdRef, MemberRef, ProgrammeId,
};
use crate::domain::payments::instructions::{ATTEMPTS_MAX, InstructionId, InstructionStatus};
use crate::domain::payments::month::Month;
use crate::domain::payments::{self, CommandKind};
use crate::gateway::client::{GatewayClient, GatewayClientError};
use crate::gateway::keys::{GatewayKey, Registry};
use crate::gateway::server::{self, ServeError};
use crate::gateway::sim::{self, SimConfig, SimError, SimSummary};
use crate::gateway_ledger::{LedgerSink, SinkError};
use crate::service::{Request, Service, ServiceError};

pub const PROGRAMME: &str = "SOCIAL_ASSISTANCE_MONTHLY";
/// The bank and the post office of the shipped accounts file (`gateway::DEMO_GATEWAYS`).
const BANK: &str = "vcb";
const POST_OFFICE: &str = "vnpost";
/// One household in this many receives monthly social assistance in the demo.
const BENEFICIARY_EVERY: u64 = 8;
const CATEGORIES: [&str; 4] = [
    "ELDERLY_80_PLUS_NO_PENSION",
    "DISABLED_SEVERE",
    "DISABLED_ESPECIALLY_SEVERE",
    "SINGLE_PARENT_POOR_PER_CHILD",
];
/// Budget per beneficiary and month: above the largest monthly amount the demo's
/// categories give (2.5 x 500,000), so runs are funded.
const BUDGET_PER_BENEFICIARY: i64 = 1_300_000;
/// Fetch-and-post rounds per gateway and pass. A pass ends at the first round with
/// nothing to do; refused posts leave their instruction waiting, so this bounds them.
const SIM_ROUNDS_MAX: u32 = 50;
/// Instructions per fetch.
const SIM_FETCH_MAX: u32 = 200;

/// How the simulated gateways behave (`ansinh demo --gateway-*`).
#[derive(Clone, Copy, Debug)]
pub struct GatewayBehaviour {
    pub failure_rate: f64,
    pub return_rate: f64,
    pub duplicate_rate: f64,
    pub latency_ms: u64,
}

impl Default for GatewayBehaviour {
    /// 6 % fail, 2 % returned, 5 % posted twice, no latency (the demo posts thousands of
    /// results one after another per gateway; latency would only add waiting).
    fn default() -> Self {
        Self {
            failure_rate: 0.06,
            return_rate: 0.02,
            duplicate_rate: 0.05,
            latency_ms: 0,
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct PaymentsSummary {
    pub entitlements: u64,
    pub runs: u64,
    pub instructions: u64,
    pub instructed: Decimal,
    pub settled: u64,
    pub settled_amount: Decimal,
    pub failed: u64,
    pub returned: u64,
    pub reissued_to_post_office: u64,
    pub duplicate_posts_answered: u64,
    pub refused_posts: u64,
    /// Posts the gateways sent, over the transport, re-posts included.
    pub posts_sent: u64,
    /// Posts without an answer, or answered "error".
    pub transport_errors: u64,
    /// The first refused posts, by gateway, with the ledger's words (all are counted in
    /// `refused_posts`).
    pub refused_post_reasons: Vec<String>,
    /// Communes a run left unpaid for want of budget (its `shortfalls`).
    pub run_shortfalls: u64,
    /// Entitlements runs left unpaid because their household had left, their beneficiary
    /// had died or had left the household, or the household's data were erased
    /// (`not_resident`, `deceased`, `not_a_member`, `erased`): an officer must stop them.
    pub left_unpaid: u64,
    /// Instructions no gateway had answered when the year ended.
    pub pending_at_year_end: u64,
}

impl PaymentsSummary {
    /// What makes the year a failure, to print: None when the ledger refused no
    /// gateway post. The simulated gateways post only results of instructions they
    /// fetched, signed with their own keys, so a refused post is a fault of the demo or
    /// of the ledger (and leaves its payment waiting), never part of the show.
    ///
    /// The year's budgets are allocated for every entitlement, its households are granted
    /// after the moves and deaths of the year are recorded, and its gateways answer every
    /// instruction they fetch: so a run short of budget, an entitlement a run left unpaid
    /// and an instruction still unanswered at the year's end are faults too, each a month
    /// somebody was not paid, and fail the year as a refused post does.
    pub fn refusals_report(&self) -> Option<String> {
        let mut lines = Vec::new();
        if self.refused_posts > 0 {
            lines.push(format!(
                "REFUSED: the ledger refused {} gateway posts",
                self.refused_posts
            ));
            for r in &self.refused_post_reasons {
                lines.push(format!("  {r}"));
            }
            let unnamed = self
                .refused_posts
                .saturating_sub(self.refused_post_reasons.len() as u64);
            if unnamed > 0 {
                lines.push(format!("  ... and {unnamed} more"));
            }
        }
        if self.run_shortfalls > 0 {
            lines.push(format!(
                "UNPAID: payment runs left {} commune budgets short",
                self.run_shortfalls
            ));
        }
        if self.left_unpaid > 0 {
            lines.push(format!(
                "UNPAID: payment runs left {} entitlements unpaid (household gone or beneficiary dead, not stopped)",
                self.left_unpaid
            ));
        }
        if self.pending_at_year_end > 0 {
            lines.push(format!(
                "UNANSWERED: {} instructions still pending at the year's end",
                self.pending_at_year_end
            ));
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoPaymentsError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("payments: {0}")]
    Sink(#[from] SinkError),
    #[error("gateway server: {0}")]
    Serve(#[from] ServeError),
    #[error("gateway client: {0}")]
    Client(#[from] GatewayClientError),
    #[error("simulated gateway: {0}")]
    Sim(#[from] SimError),
    #[error("reading the registry: {0}")]
    Registry(String),
    #[error("the demo's gateway server failed: {0}")]
    ServerStopped(String),
    /// The ledger refused a step the demo expected to pass: the demo stops and says so,
    /// rather than print a year with a month missing.
    #[error("the ledger refused the demo step {step}: {reason}")]
    Refused {
        step: String,
        reason: crate::domain::Rejection,
    },
}

impl From<payments::Rejection> for DemoPaymentsError {
    fn from(r: payments::Rejection) -> Self {
        ServiceError::from(r).into()
    }
}

/// The demo clock, Unix milliseconds, shared by the ledger side and the simulated
/// gateways (`SimConfig::clock` is a plain `fn`, hence a static). One demo runs per
/// process.
static DEMO_NOW_MS: AtomicI64 = AtomicI64::new(0);

pub(crate) fn demo_clock() -> i64 {
    DEMO_NOW_MS.load(Ordering::SeqCst)
}

pub(crate) fn set_demo_clock(day: NaiveDate) {
    let noon = day
        .and_hms_opt(12, 0, 0)
        .expect("noon exists")
        .and_utc()
        .timestamp_millis();
    DEMO_NOW_MS.store(noon, Ordering::SeqCst);
}

/// A simulated gateway's signing key, derived from its id (demo only).
fn gateway_key(gateway: &str) -> KeyPair {
    KeyPair::from_seed(&blake3::derive_key(
        "ansinh demo gateway key",
        gateway.as_bytes(),
    ))
}

fn demo_registry() -> Registry {
    let keys = [BANK, POST_OFFICE]
        .into_iter()
        .map(|id| {
            let key = gateway_key(id);
            GatewayKey {
                gateway_id: id.to_string(),
                key_id: key.key_id().to_string(),
                public_key: key.public_key(),
            }
        })
        .collect();
    Registry::new(keys).expect("the demo keys are valid")
}

fn manager(partition: &str) -> Caller {
    Caller {
        id: format!("staff:branch-manager-{partition}"),
        role: Role::BranchManager,
        unit: partition.to_owned(),
    }
}

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).expect("valid demo date")
}

/// Submits one step. A payment run with nothing to pay (a province with no
/// beneficiary, as with fewer households than `BENEFICIARY_EVERY`) records nothing:
/// `None`. Any other refusal stops the demo, naming the step (its idempotency key); a
/// rerun's steps are answered with their first receipts, never refused.
async fn officer(
    service: &Service,
    partition: &Partition,
    key: String,
    kind: CommandKind,
    on: NaiveDate,
) -> Result<Option<crate::log::Receipt>, DemoPaymentsError> {
    let caller = manager(partition.as_str());
    let req = Request {
        caller: &caller,
        idempotency_key: &key,
        correlation_id: "demo:payments",
        fingerprint: None,
    };
    let run = matches!(kind, CommandKind::Run { .. });
    match service.payment(&req, partition, kind, on).await {
        Ok(r) => Ok(Some(r)),
        Err(ServiceError::Rejected(crate::domain::Rejection::NothingToRecord)) if run => Ok(None),
        Err(ServiceError::Rejected(reason)) => {
            Err(DemoPaymentsError::Refused { step: key, reason })
        }
        Err(e) => Err(e.into()),
    }
}

/// A year of monthly payments in every partition, for `months` months, the gateways
/// reached over NATS (`nats`).
/// Where the demo's gateways and the ledger's gateway side connect: the server, and its
/// users' passwords when it is the embedded one.
pub struct Nats<'a> {
    pub url: &'a str,
    pub users: Option<&'a crate::app::EmbeddedUsers>,
}

pub async fn run(
    service: &Service,
    nats: Nats<'_>,
    partitions: &[Partition],
    households: u64,
    year: i32,
    months: u32,
    behaviour: GatewayBehaviour,
) -> Result<PaymentsSummary, DemoPaymentsError> {
    let mut s = PaymentsSummary::default();
    let mut rng = Seeded::new(4242);
    let programme = ProgrammeId::parse(PROGRAMME)?;
    let sink = Arc::new(LedgerSink::new(service.clone(), Arc::new(demo_clock)));
    // The staff side's today too: a run is issued on a day already played, never later
    // (the same clock `demo::run` set; setting it again changes nothing).
    service.set_clock(Arc::new(demo_clock));
    // Each side connects as its own user of the server (the embedded server's passwords
    // are this process's; on a server without users they are sent and ignored).
    let (nats_url, users) = (nats.url, nats.users);
    let password = |user: &str| {
        users
            .and_then(|u| u.password(user))
            .unwrap_or_default()
            .to_owned()
    };
    let ledger_side = server::connect(
        nats_url,
        async_nats::ConnectOptions::with_user_and_password(
            crate::gateway::LEDGER_USER.into(),
            password(crate::gateway::LEDGER_USER),
        ),
    )
    .await?;
    let bound = server::bind(
        ledger_side,
        crate::gateway::DEFAULT_SUBJECT_PREFIX,
        crate::directory::Shared::new(demo_registry()),
        sink.clone(),
    )
    .await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(bound.run(async move {
        // A sender dropped without sending stops the server too: the demo is over.
        let _ = stopped.await;
    }));
    let bank = GatewayClient::connect(nats_url, BANK, "gw-vcb", &password("gw-vcb")).await?;
    let post_office =
        GatewayClient::connect(nats_url, POST_OFFICE, "gw-vnpost", &password("gw-vnpost")).await?;

    let mut per_partition: Vec<(Partition, BTreeMap<String, u64>)> = Vec::new();
    for partition in partitions {
        per_partition.push((
            partition.clone(),
            grant(
                service, partition, households, year, &programme, &mut rng, &mut s,
            )
            .await?,
        ));
    }
    for month in 1..=months {
        let period = Month::new(year, month)?;
        set_demo_clock(d(year, month, 5));
        for (partition, per_commune) in &per_partition {
            for (commune, count) in per_commune {
                let kind = CommandKind::Allocate {
                    budget: BudgetKey {
                        programme: programme.clone(),
                        commune: CommuneId::parse(commune)?,
                        period,
                    },
                    amount: Decimal::from(BUDGET_PER_BENEFICIARY * *count as i64),
                };
                let key = format!("demo:{year}:alloc:{commune}:{period}");
                officer(service, partition, key, kind, d(year, month, 1)).await?;
            }
            let key = format!("demo:{year}:run:{partition}:{period}");
            let run = CommandKind::Run {
                period,
                commune: None,
            };
            if let Some(receipt) = officer(service, partition, key, run, d(year, month, 5)).await? {
                s.runs += 1;
                count_run(service, &receipt, &mut s).await?;
            }
        }
        // Pay day: both gateways work at once, over the transport.
        set_demo_clock(d(year, month, 12));
        let seed = |pass: u64| (year as u64) * 10_000 + u64::from(month) * 10 + pass;
        let (bank_config, post_office_config) = (
            sim_config(BANK, behaviour, seed(1)),
            sim_config(POST_OFFICE, behaviour, seed(2)),
        );
        let (a, b) = tokio::join!(
            sim::run(&bank, &bank_config),
            sim::run(&post_office, &post_office_config),
        );
        count_sim(&mut s, &a?);
        count_sim(&mut s, &b?);
        // Failed and returned payments of the month go out again as post-office cash.
        set_demo_clock(d(year, month, 15));
        let again = sink
            .with_books(|books| {
                books
                    .iter()
                    .map(|(p, book)| (p.clone(), reissuable(book, period, d(year, month, 15))))
                    .collect::<Vec<_>>()
            })
            .await?;
        for (partition, ids) in again {
            // The books are the demo's own partitions: a name that is not one is a
            // fault, and skipping it would drop its reissues unseen.
            let partition = Partition::new(&partition)
                .map_err(|e| ServiceError::from(crate::log::AppendError::from(e)))?;
            for id in ids {
                let key = format!("demo:{year}:reissue:{partition}:{id}");
                let kind = CommandKind::Reissue {
                    instruction: id,
                    channel: Some(Channel::PostOffice {
                        gateway: GatewayId::parse(POST_OFFICE)?,
                    }),
                };
                if officer(service, &partition, key, kind, d(year, month, 15))
                    .await?
                    .is_some()
                {
                    s.reissued_to_post_office += 1;
                }
            }
        }
        set_demo_clock(d(year, month, 20));
        let cash = sim::run(&post_office, &sim_config(POST_OFFICE, behaviour, seed(3))).await?;
        count_sim(&mut s, &cash);
    }
    // Fails only when the server has already ended, which the join below reports.
    let _ = stop.send(());
    // A server that panicked may have left posts unanswered: the year's figures would
    // be short, so the demo fails rather than print them.
    serving
        .await
        .map_err(|e| DemoPaymentsError::ServerStopped(e.to_string()))?;
    // The totals, from the book (what the ledger recorded, not what the gateways sent).
    sink.with_books(|books| {
        for book in books.values() {
            for i in book.instructions.values() {
                s.instructions += 1;
                s.instructed += i.issued.amount;
                match i.status {
                    InstructionStatus::Settled => {
                        s.settled += 1;
                        s.settled_amount += i.issued.amount;
                    }
                    InstructionStatus::Failed => s.failed += 1,
                    InstructionStatus::Returned => s.returned += 1,
                    InstructionStatus::Instructed => s.pending_at_year_end += 1,
                    _ => {}
                }
            }
        }
    })
    .await?;
    Ok(s)
}

fn sim_config(gateway: &str, behaviour: GatewayBehaviour, seed: u64) -> SimConfig {
    SimConfig {
        failure_rate: behaviour.failure_rate,
        return_rate: behaviour.return_rate,
        duplicate_rate: behaviour.duplicate_rate,
        latency_ms: behaviour.latency_ms,
        rounds: SIM_ROUNDS_MAX,
        fetch_max: SIM_FETCH_MAX,
        clock: demo_clock,
        ..SimConfig::new(gateway_key(gateway), seed)
    }
}

/// Adds what the run of `receipt` left unpaid to `s`, from its recorded
/// `PaymentRunCompleted`.
async fn count_run(
    service: &Service,
    receipt: &crate::log::Receipt,
    s: &mut PaymentsSummary,
) -> Result<(), DemoPaymentsError> {
    let envelope = service
        .ledger
        .event_of(receipt)
        .await
        .map_err(ServiceError::from)?;
    let completed = match &envelope.payload {
        Some(crate::proto::envelope::Payload::PaymentRecorded(p)) => {
            crate::book::payments::event_of(0, envelope.actor.as_ref(), p).ok()
        }
        _ => None,
    };
    match completed.map(|e| e.body) {
        Some(payments::EventBody::PaymentRunCompleted {
            shortfalls,
            left_unpaid,
            ..
        }) => {
            s.run_shortfalls += shortfalls.len() as u64;
            s.left_unpaid += left_unpaid.count() as u64;
            Ok(())
        }
        // The run's receipt names its closing event; anything else is a fault.
        _ => Err(
            ServiceError::Rejected(crate::domain::Rejection::UnsupportedCommand {
                what: "a run's receipt names no PaymentRunCompleted".into(),
            })
            .into(),
        ),
    }
}

fn count_sim(s: &mut PaymentsSummary, sim: &SimSummary) {
    let status = |k: &str| sim.by_status.get(k).copied().unwrap_or(0);
    s.posts_sent += sim.posts;
    s.duplicate_posts_answered += status(server::STATUS_DUPLICATE);
    s.refused_posts += status(server::STATUS_REFUSED);
    s.transport_errors += sim.transport_errors + status(server::STATUS_ERROR);
    let room = sim::REFUSALS_KEPT_MAX.saturating_sub(s.refused_post_reasons.len());
    s.refused_post_reasons.extend(
        sim.refusals
            .iter()
            .take(room)
            .map(|r| format!("gateway {}, {r}", sim.gateway_id)),
    );
}

/// The month's failed or returned instructions that are their entitlement's latest
/// attempt and may be tried again.
/// The month's failed and returned instructions to send again on `on`. Only results
/// known by then: a rerun of the demo sees the whole first year in the book, and a
/// result dated later cannot be acted on earlier (the book refuses it as back-dated).
fn reissuable(book: &payments::book::Book, period: Month, on: NaiveDate) -> Vec<InstructionId> {
    book.instructions
        .iter()
        .filter(|(id, i)| {
            id.month == period
                && i.last_change_on <= on
                && i.status.is_reissuable()
                && i.status != InstructionStatus::TimedOut
                && id.attempt < ATTEMPTS_MAX
                && book.attempts.get(&(id.entitlement, id.month)) == Some(&id.attempt)
        })
        .map(|(id, _)| *id)
        .collect()
}

/// Grants: one member of every BENEFICIARY_EVERY-th registered household of the
/// partition that still lives there; returns the number of beneficiaries per commune.
async fn grant(
    service: &Service,
    partition: &Partition,
    households: u64,
    year: i32,
    programme: &ProgrammeId,
    rng: &mut Seeded,
    s: &mut PaymentsSummary,
) -> Result<BTreeMap<String, u64>, DemoPaymentsError> {
    let communes = communes(partition.as_str());
    let registry = |e: &dyn std::fmt::Display| DemoPaymentsError::Registry(e.to_string());
    let mut stream = service.ledger.stream().clone();
    service
        .projector
        .catch_up(&mut stream, service.ledger.config())
        .await
        .map_err(|e| registry(&e))?;
    let mut per_commune: BTreeMap<String, u64> = BTreeMap::new();
    for n in (BENEFICIARY_EVERY..=households).step_by(BENEFICIARY_EVERY as usize) {
        // Household n was registered in one of the communes (the registry demo picks
        // it); assistance goes only to a registered, resident household.
        let mut found = None;
        for c in &communes {
            let id = crate::domain::ids::HouseholdId::new(c, n as u32).map_err(|e| registry(&e))?;
            let view = service
                .projector
                .household(id.as_str())
                .map_err(|e| registry(&e))?;
            if view.is_some_and(|v| v.moved_to.is_none() && !v.personal_data_erased) {
                found = Some((c.clone(), id));
                break;
            }
        }
        let Some((commune, household)) = found else {
            continue;
        };
        let household = household.to_string();
        let channel = if rng.below(3) == 0 {
            Channel::PostOffice {
                gateway: GatewayId::parse(POST_OFFICE)?,
            }
        } else {
            Channel::BankAccount {
                gateway: GatewayId::parse(BANK)?,
            }
        };
        let kind = CommandKind::Grant {
            programme: programme.clone(),
            beneficiary: BeneficiaryRef {
                household: HouseholdRef::parse(&household)?,
                member: MemberRef::parse("m1")?,
            },
            commune: CommuneId::parse(commune.as_str())?,
            from: Month::new(year, 1)?,
            terms: Terms {
                category: CategoryId::parse(CATEGORIES[rng.below(4) as usize])?,
                channel,
                provincial_base: None,
            },
            citizen: None, // found by the service
        };
        let key = format!("demo:{year}:grant:{household}");
        if officer(service, partition, key, kind, d(year, 1, 2))
            .await?
            .is_some()
        {
            s.entitlements += 1;
        }
        *per_commune.entry(commune.to_string()).or_default() += 1;
    }
    Ok(per_commune)
}

/// Months of monthly payment runs the demo plays: a whole year.
pub const MONTHS_IN_YEAR: u32 = 12;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_gateway_post_fails_the_year_and_is_named() {
        let mut s = PaymentsSummary::default();
        let accepted = SimSummary {
            gateway_id: BANK.into(),
            posts: 3,
            by_status: [(server::STATUS_ACCEPTED.to_string(), 3)].into(),
            ..Default::default()
        };
        count_sim(&mut s, &accepted);
        assert_eq!(
            s.refusals_report(),
            None,
            "every post accepted: a good year"
        );

        let refused = SimSummary {
            gateway_id: POST_OFFICE.into(),
            posts: 2,
            by_status: [(server::STATUS_REFUSED.to_string(), 2)].into(),
            refusals: vec!["instruction 01-7: signed by an unknown key (bad_signature)".into()],
            ..Default::default()
        };
        count_sim(&mut s, &refused);
        let report = s.refusals_report().expect("a refused post fails the year");
        assert!(
            report.starts_with("REFUSED: the ledger refused 2 gateway posts"),
            "{report}"
        );
        assert!(
            report.contains("gateway vnpost, instruction 01-7: signed by an unknown key"),
            "{report}"
        );
        assert!(report.ends_with("... and 1 more"), "{report}");
    }

    #[test]
    fn a_month_left_unpaid_fails_the_year_and_is_named() {
        for (s, words) in [
            (
                PaymentsSummary {
                    run_shortfalls: 1,
                    ..Default::default()
                },
                "UNPAID: payment runs left 1 commune budgets short",
            ),
            (
                PaymentsSummary {
                    left_unpaid: 3,
                    ..Default::default()
                },
                "UNPAID: payment runs left 3 entitlements unpaid",
            ),
            (
                PaymentsSummary {
                    pending_at_year_end: 2,
                    ..Default::default()
                },
                "UNANSWERED: 2 instructions still pending at the year's end",
            ),
        ] {
            let report = s.refusals_report().expect("an unpaid month fails the year");
            assert!(report.starts_with(words), "{report}");
        }
    }
}
