//! `ansinh payments ...`: budgets, entitlements, payment runs, timeouts, reissues,
//! reconciliation. Parsing and printing only; the work is in `ansinh::service` and
//! `ansinh::payments_report`.

use std::path::PathBuf;
use std::process::ExitCode;

use ansinh::app::Runtime;
use ansinh::chain::{Digest, Partition};
use ansinh::domain::ids::{CommuneCode, HouseholdId};
use ansinh::domain::money::format_vnd;
use ansinh::domain::payments::CommandKind;
use ansinh::domain::payments::budget::BudgetKey;
use ansinh::domain::payments::entitlements::{Channel, StopReason, Terms};
use ansinh::domain::payments::ids::{
    BeneficiaryRef, CategoryId, CommuneId, GatewayId, HouseholdRef, MemberRef, ProgrammeId,
};
use ansinh::domain::payments::instructions::InstructionId;
use ansinh::domain::payments::instructions::Shortfall;
use ansinh::domain::payments::month::Month;
use ansinh::domain::payments::reconcile::MismatchKind;
use ansinh::service::{CommuneRun, Request};
use chrono::NaiveDate;
use clap::{Args, Subcommand, ValueEnum};
use rust_decimal::Decimal;

use super::BoxError;
use super::staff::ActorArgs;

/// The budget programme of monthly social assistance.
pub const PROGRAMME: &str = "SOCIAL_ASSISTANCE_MONTHLY";

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ChannelArg {
    Bank,
    MobileMoney,
    PostOffice,
}

fn channel(kind: ChannelArg, gateway: GatewayId) -> Channel {
    match kind {
        ChannelArg::Bank => Channel::BankAccount { gateway },
        ChannelArg::MobileMoney => Channel::MobileMoney { gateway },
        ChannelArg::PostOffice => Channel::PostOffice { gateway },
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StopArg {
    Death,
    Move,
    Other,
}

/// An entitlement's terms, as a grant sets them and a change replaces them.
#[derive(Args)]
pub struct TermsArgs {
    /// The beneficiary category of the social assistance rules (data/social_assistance). Example: ELDERLY_80_PLUS_NO_PENSION
    #[arg(long, value_parser = ansinh::input::reference_of)]
    category: String,
    /// How it is paid: bank account, mobile money or post office.
    #[arg(long, value_enum)]
    channel: ChannelArg,
    /// The gateway that pays through that channel (as registered). Example: vcb
    #[arg(long, value_parser = ansinh::input::gateway)]
    gateway: GatewayId,
    /// The first month on these terms (YYYY-MM). Example: 2026-01
    #[arg(long, value_parser = ansinh::input::month)]
    from: Month,
    /// The province's base amount, whole VND, when it sets one above the national base. Example: 500000
    #[arg(long, value_parser = ansinh::input::money)]
    provincial_base: Option<Decimal>,
}

impl TermsArgs {
    /// The first month on these terms, and the terms.
    fn decided(self) -> Result<(Month, Terms), BoxError> {
        let terms = Terms {
            category: CategoryId::parse(&self.category)?,
            channel: channel(self.channel, self.gateway),
            provincial_base: self.provincial_base,
        };
        Ok((self.from, terms))
    }
}

#[derive(Subcommand)]
pub enum PaymentsCommand {
    /// Allocate budget to a commune for a month (branch manager).
    Allocate {
        /// The commune whose budget it is (7 digits). Example: 0100007
        #[arg(long, value_parser = ansinh::input::commune)]
        commune: CommuneCode,
        /// The month the budget is for (YYYY-MM). Example: 2027-01
        #[arg(long, value_parser = ansinh::input::month)]
        period: Month,
        /// The amount allocated, whole VND. Example: 750000000
        #[arg(long, value_parser = ansinh::input::money)]
        amount: Decimal,
        /// The date of the allocation (YYYY-MM-DD). Example: 2026-12-20
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
    },
    /// Take back the part of a commune's budget for a month that no instruction holds or
    /// spent (branch manager); more than that is refused.
    Release {
        /// The commune whose budget it is (7 digits). Example: 0100007
        #[arg(long, value_parser = ansinh::input::commune)]
        commune: CommuneCode,
        /// The month the budget is for (YYYY-MM). Example: 2027-01
        #[arg(long, value_parser = ansinh::input::month)]
        period: Month,
        /// The amount taken back, whole VND. Example: 50000000
        #[arg(long, value_parser = ansinh::input::money)]
        amount: Decimal,
        /// The date of the release (YYYY-MM-DD). Example: 2027-01-25
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
    },
    /// Grant a monthly entitlement to a household member.
    Grant {
        /// The household paid. Example: 0100007-000001
        #[arg(long, value_parser = ansinh::input::household)]
        household: HouseholdId,
        /// The member entitled, by their reference in the household record (m1 for the
        /// head), never a name or an id number: it is recorded in clear. Example: m1
        #[arg(long, value_parser = ansinh::input::reference_of)]
        member: String,
        #[command(flatten)]
        terms: TermsArgs,
        /// The date of the decision (YYYY-MM-DD). Example: 2025-12-20
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
    },
    /// New terms of an entitlement from a month on (category, channel and gateway,
    /// provincial base); months already issued keep theirs.
    Change {
        /// The province (2 digits). Example: 01
        #[arg(long, value_parser = ansinh::input::partition)]
        partition: Partition,
        /// The entitlement's number, as grant printed it. Example: 7
        #[arg(long)]
        entitlement: u64,
        #[command(flatten)]
        terms: TermsArgs,
        /// The date of the decision (YYYY-MM-DD). Example: 2026-10-25
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
    },
    /// Stop an entitlement (death, move) from the month after `--on`.
    Stop {
        /// The province (2 digits). Example: 01
        #[arg(long, value_parser = ansinh::input::partition)]
        partition: Partition,
        /// The entitlement's number, as grant printed it. Example: 7
        #[arg(long)]
        entitlement: u64,
        /// Why it stops.
        #[arg(long, value_enum)]
        reason: StopArg,
        /// The date it stops (YYYY-MM-DD), today or earlier; months after it are not paid.
        /// The stop is recorded today. Example: 2026-08-14
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
    },
    /// One instruction per active entitlement and month; running again adds nothing.
    Run {
        /// The province (2 digits). Example: 01
        #[arg(long, value_parser = ansinh::input::partition)]
        partition: Partition,
        /// The month paid (YYYY-MM). Example: 2026-12
        #[arg(long, value_parser = ansinh::input::month)]
        period: Month,
        /// Only this commune (7 digits) [default: every commune of the province]. Example: 0100007
        #[arg(long, value_parser = ansinh::input::commune)]
        commune: Option<CommuneCode>,
        /// The date of the run (YYYY-MM-DD): the instructions' issue day. Example: 2026-12-05
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
    },
    /// Void the holds of instructions without a result past their timeout.
    Timeouts {
        /// The province (2 digits). Example: 01
        #[arg(long, value_parser = ansinh::input::partition)]
        partition: Partition,
        /// Instructions past their timeout on this date (YYYY-MM-DD), today or earlier, are timed out. Example: 2026-12-20
        #[arg(long, value_parser = ansinh::input::date)]
        as_of: NaiveDate,
    },
    /// Issue a failed, returned or timed-out instruction again (e.g. as post-office cash).
    Reissue {
        /// The province (2 digits). Example: 01
        #[arg(long, value_parser = ansinh::input::partition)]
        partition: Partition,
        /// The instruction issued again, as listed by reconcile. Example: pay:7:2026-12:1
        #[arg(long, value_parser = ansinh::input::reference_of)]
        instruction: String,
        /// Another channel to pay through [default: the same].
        #[arg(long, value_enum)]
        channel: Option<ChannelArg>,
        /// Another gateway [default: the same]. Example: vnpost
        #[arg(long, value_parser = ansinh::input::gateway)]
        gateway: Option<GatewayId>,
        /// The date (YYYY-MM-DD). Example: 2026-12-22
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
    },
    /// Per gateway and day: instructed, settled, failed, returned, pending after N days,
    /// and every mismatch; prints a table and writes CSV.
    Reconcile {
        /// Only this gateway. Example: vcb
        #[arg(long, value_parser = ansinh::input::gateway)]
        gateway: Option<GatewayId>,
        /// Only this day (YYYY-MM-DD); read from the projections when --as-of is on or after the last payment event. Example: 2026-12-05
        #[arg(long, value_parser = ansinh::input::date)]
        date: Option<NaiveDate>,
        /// The report as of this date (YYYY-MM-DD): later events are left out. Example: 2026-12-31
        #[arg(long, value_parser = ansinh::input::date)]
        as_of: NaiveDate,
        /// Instructions without a result for this many days or more are listed as pending.
        #[arg(long, default_value_t = 10)]
        pending_days: u32,
        /// Also write the lines as CSV for people (amounts as 1.500.000 ₫). Example: vcb-2026-12.csv
        #[arg(long)]
        csv: Option<PathBuf>,
    },
}

/// `keys_partition` holds the ledger's keys: a reconciliation folded from the log checks
/// each exclusion's signature with them, as `audit verify` does.
pub async fn run(
    runtime: &Runtime,
    keys_partition: &Partition,
    who: &ActorArgs,
    command: PaymentsCommand,
    json: bool,
) -> Result<ExitCode, BoxError> {
    if let PaymentsCommand::Reconcile {
        gateway,
        date,
        as_of,
        pending_days,
        csv,
    } = command
    {
        return reconcile(
            runtime,
            keys_partition,
            gateway.map(|g| g.to_string()),
            date,
            as_of,
            pending_days,
            csv,
            json,
        )
        .await;
    }
    let caller = who.caller()?;
    let key = who.key();
    let service = runtime.service();
    let (partition, kind, on) = match command {
        PaymentsCommand::Allocate {
            commune,
            period,
            amount,
            on,
        } => {
            let (partition, budget) = budget_of(&commune, period)?;
            (partition, CommandKind::Allocate { budget, amount }, on)
        }
        PaymentsCommand::Release {
            commune,
            period,
            amount,
            on,
        } => {
            let (partition, budget) = budget_of(&commune, period)?;
            (partition, CommandKind::Deallocate { budget, amount }, on)
        }
        PaymentsCommand::Change {
            partition,
            entitlement,
            terms,
            on,
        } => {
            let (from, terms) = terms.decided()?;
            (
                partition,
                CommandKind::Change {
                    entitlement,
                    from,
                    terms,
                },
                on,
            )
        }
        PaymentsCommand::Grant {
            household,
            member,
            terms,
            on,
        } => {
            let h = household;
            let (from, terms) = terms.decided()?;
            (
                Partition::new(h.province().as_str())?,
                CommandKind::Grant {
                    programme: ProgrammeId::parse(PROGRAMME)?,
                    beneficiary: BeneficiaryRef {
                        household: HouseholdRef::parse(h.as_str())?,
                        member: MemberRef::parse(&member)?,
                    },
                    commune: CommuneId::parse(h.commune().as_str())?,
                    from,
                    terms,
                    citizen: None, // found by the service
                },
                on,
            )
        }
        PaymentsCommand::Stop {
            partition,
            entitlement,
            reason,
            on,
        } => (
            partition,
            CommandKind::Stop {
                entitlement,
                on,
                reason: match reason {
                    StopArg::Death => StopReason::Death,
                    StopArg::Move => StopReason::Move,
                    StopArg::Other => StopReason::Other,
                },
            },
            // Recorded today in Vietnam, whatever day it names: the book refuses a stop
            // dated later, and its cancellations are dated today, never on a day whose
            // reconciliation was already read.
            ansinh::clock::today(),
        ),
        PaymentsCommand::Run {
            partition,
            period,
            commune,
            on,
        } => {
            let commune = commune
                .map(|code| -> Result<CommuneId, BoxError> {
                    if code.province().as_str() != partition.as_str() {
                        return Err(super::ArgumentError::new(
                            "--commune <COMMUNE>",
                            code.as_str(),
                            format!("it is not a commune of --partition {partition}"),
                        )
                        .into());
                    }
                    Ok(CommuneId::parse(code.as_str())?)
                })
                .transpose()?;
            return payment_run(runtime, who, &partition, period, commune, on, json).await;
        }
        PaymentsCommand::Timeouts { partition, as_of } => {
            return timeouts(runtime, who, &partition, as_of, json).await;
        }
        PaymentsCommand::Reissue {
            partition,
            instruction,
            channel: kind,
            gateway,
            on,
        } => {
            let Some(instruction) = InstructionId::parse(&instruction) else {
                return Err(super::ArgumentError::new(
                    "--instruction <INSTRUCTION>",
                    instruction,
                    "an instruction id looks like pay:7:2026-12:1",
                )
                .into());
            };
            let channel = match (kind, gateway) {
                (Some(k), Some(g)) => Some(channel(k, g)),
                (None, None) => None,
                (k, _) => {
                    let (missing, given) = match k {
                        Some(_) => ("--gateway <GATEWAY>", "--channel"),
                        None => ("--channel <CHANNEL>", "--gateway"),
                    };
                    return Err(super::ArgumentError::new(
                        missing,
                        "",
                        format!("{given} is given: give both --channel and --gateway, or neither"),
                    )
                    .into());
                }
            };
            (
                partition,
                CommandKind::Reissue {
                    instruction,
                    channel,
                },
                on,
            )
        }
        PaymentsCommand::Reconcile { .. } => unreachable!("handled above"),
    };
    // A stop is recorded today, whatever day it names (which its command holds): a retry
    // on another day is the same request.
    let asked_on = (!matches!(kind, CommandKind::Stop { .. })).then_some(on);
    let asked = super::staff::fingerprint(
        &caller,
        "payments",
        serde_json::json!({"partition": partition.as_str(), "command": kind, "on": asked_on}),
    );
    let req = Request {
        caller: &caller,
        idempotency_key: &key,
        correlation_id: "cli:payments",
        fingerprint: Some(&asked),
    };
    let result = service.payment(&req, &partition, kind, on).await;
    super::staff::outcome_decided(runtime, result, &key, json).await
}

/// The commune's monthly social assistance budget for `period`, and its partition. The
/// registry's rule for a commune code (7 digits, its province first) is kept, so a
/// malformed unit never reaches a budget line of the log.
fn budget_of(code: &CommuneCode, period: Month) -> Result<(Partition, BudgetKey), BoxError> {
    let budget = BudgetKey {
        programme: ProgrammeId::parse(PROGRAMME)?,
        commune: CommuneId::parse(code.as_str())?,
        period,
    };
    Ok((Partition::new(code.province().as_str())?, budget))
}

/// A run stopped at a commune by `e`: a refusal (exit 1) whose `--json` object holds the
/// communes done before it under `by_commune`, or a failure that may be recorded, whose
/// error names the key to retry the run with and the communes done before it.
fn stopped(
    e: ansinh::service::ServiceError,
    key: &str,
    by_commune: Vec<serde_json::Value>,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let mut more = serde_json::Map::new();
    more.insert("idempotency_key".into(), key.into());
    let done: Vec<String> = by_commune
        .iter()
        .filter(|line| line["outcome"] == "paid")
        .filter_map(|line| line["commune"].as_str().map(str::to_owned))
        .collect();
    more.insert("by_commune".into(), by_commune.into());
    match super::staff::refusal_with(e, json, more) {
        Ok(code) => Ok(code),
        Err(e) if done.is_empty() => super::staff::outcome(Err(e), key, json),
        Err(e) => Err(Box::new(super::Unsettled {
            idempotency_key: key.to_owned(),
            source: format!("{e} (communes paid before it: {})", done.join(", ")).into(),
        })),
    }
}

/// Domain separation of a payment run's commune requests (`commune_fingerprint`).
const COMMUNE_RUN_FINGERPRINT_CONTEXT: &str = "ansinh v1 cli payment run commune fingerprint";

/// The fingerprint of a run's request for one commune, derived from the run's: the same
/// run again finds each commune's receipt, and a run that asks anything else (another
/// month, day or commune) under the key is refused at the first commune it shares.
fn commune_fingerprint(run: &Digest, commune: &CommuneId) -> Digest {
    let mut hasher = blake3::Hasher::new_derive_key(COMMUNE_RUN_FINGERPRINT_CONTEXT);
    hasher.update(&run.0);
    hasher.update(commune.as_str().as_bytes());
    Digest(*hasher.finalize().as_bytes())
}

/// `payments run`: one command per commune (budgets are per commune, so each commune's
/// run is all or none on its own), in commune order, each line printed as it lands. A
/// run stopped half way (a crash, Ctrl-C) is completed by running it again: communes
/// already paid answer "nothing left to do". A commune whose budget falls short is
/// reported with the missing amount and makes the exit code 1; the others are paid.
async fn payment_run(
    runtime: &Runtime,
    who: &ActorArgs,
    partition: &Partition,
    period: Month,
    commune: Option<CommuneId>,
    on: NaiveDate,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let caller = who.caller()?;
    let key = who.key();
    let service = runtime.service();
    let asked = super::staff::fingerprint(
        &caller,
        "payments run",
        serde_json::json!({"partition": partition.as_str(), "period": period.to_string(),
            "commune": commune.as_ref().map(ToString::to_string), "on": on}),
    );
    let communes: Vec<CommuneId> = match commune {
        Some(c) => vec![c],
        None => {
            // The whole province is the branch's, as over HTTP: checked before any
            // commune is paid, or a commune's officer would pay their own commune and be
            // refused at the next, a refusal that appended a run.
            if let Err(denied) = ansinh::service::Service::may_run_partition(&caller, partition) {
                return Ok(super::staff::refusal(denied.into(), json)?);
            }
            if let Some(code) = super::unknown_partition(runtime, partition, json).await? {
                return Ok(code);
            }
            let mut stream = runtime.ledger.stream().clone();
            runtime
                .projector
                .catch_up(&mut stream, runtime.ledger.config())
                .await?;
            runtime
                .projector
                .communes_in(partition.as_str())?
                .into_iter()
                .map(|c| CommuneId::parse(&c.commune))
                .collect::<Result<_, _>>()?
        }
    };
    let (mut issued, mut amount, mut refused) = (0u64, Decimal::ZERO, 0u32);
    // With --json, one document: each commune's line under "by_commune".
    let mut by_commune = Vec::new();
    // A run of several communes, past its first, dates the rest on the day of a later
    // payment operation landing in between (`Service::run_commune_of_partition_run`); a
    // single commune's run is refused as back-dated, as the API's is.
    let partition_run = communes.len() > 1;
    let mut dated = on;
    for (index, commune) in communes.iter().enumerate() {
        // One key per commune, derived from the run's: a retry of the same run under
        // the same key finds each commune's receipt. Joined by a space, which no key given
        // with --idempotency-key holds, as the HTTP job's are: "K/0100007" could be the
        // key of another command of the operator's, answered with this run's receipt.
        let commune_key = format!("{key} {commune}");
        let commune_asked = commune_fingerprint(&asked, commune);
        let req = Request {
            caller: &caller,
            idempotency_key: &commune_key,
            correlation_id: "cli:payments",
            fingerprint: Some(&commune_asked),
        };
        let run = service
            .run_commune_of_partition_run(
                &req,
                partition,
                period,
                commune.clone(),
                dated,
                partition_run && index > 0,
            )
            .await
            .map(|(run, decided_on)| {
                dated = decided_on;
                run
            });
        let line = match run {
            Ok(CommuneRun::Paid {
                issued: n,
                amount: total,
                shortfalls: short,
                left_unpaid,
                on: recorded_on,
                receipt,
            }) => {
                issued += n;
                amount += total;
                let shortfalls: Vec<String> = short.iter().map(Shortfall::sentence).collect();
                let mut line = serde_json::json!({
                    "commune": commune.to_string(), "outcome": "paid", "instructions": n,
                    "amount": total.to_string(), "shortfalls": shortfalls,
                    "on": recorded_on.to_string(),
                    "duplicate": receipt.duplicate, "sequence": receipt.sequence,
                });
                for (reason, ids) in left_unpaid.by_reason() {
                    line[reason] = serde_json::json!(ids);
                }
                line
            }
            Ok(CommuneRun::NothingLeft) => {
                serde_json::json!({"commune": commune.to_string(), "outcome": "nothing_left"})
            }
            Ok(CommuneRun::Unfunded { shortfalls }) => {
                refused += 1;
                let sentences: Vec<String> = shortfalls.iter().map(Shortfall::sentence).collect();
                serde_json::json!({
                    "commune": commune.to_string(), "outcome": "unfunded",
                    "shortfalls": sentences,
                })
            }
            // The run's key, not the commune's: a retry of the whole run under it
            // finds each commune already paid. The communes done before it are in the
            // one document (their lines were printed as they landed without --json).
            Err(e) => return stopped(e, &key, by_commune, json),
        };
        if json {
            by_commune.push(line);
        } else {
            match line["outcome"].as_str() {
                Some("paid") => {
                    println!(
                        "commune {commune}: {} instructions, {}",
                        line["instructions"],
                        format_vnd(line["amount"].as_str().unwrap_or("0").parse()?)
                    );
                    let recorded_on = line["on"].as_str().unwrap_or_default();
                    if recorded_on != on.to_string() {
                        // Dated later for a payment operation of the partition dated
                        // later (or recorded so before, under this key).
                        println!("  recorded on {recorded_on}, not {on}");
                    }
                    for s in line["shortfalls"].as_array().into_iter().flatten() {
                        println!("  not paid: {}", s.as_str().unwrap_or_default());
                    }
                    let died_before = format!("the beneficiary died before {period}");
                    for (reason, why) in [
                        ("not_resident", "the household no longer lives here"),
                        ("deceased", died_before.as_str()),
                        (
                            "not_a_member",
                            "the beneficiary is no longer a member of the household",
                        ),
                        ("erased", "the household's personal data were erased"),
                    ] {
                        let ids: Vec<String> = line[reason]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(ToString::to_string)
                            .collect();
                        if !ids.is_empty() {
                            println!(
                                "  not paid, {why} (stop them): entitlements {}",
                                ids.join(", ")
                            );
                        }
                    }
                }
                Some("nothing_left") => {
                    println!("commune {commune}: nothing left to do for {period}")
                }
                _ => {
                    for s in line["shortfalls"].as_array().into_iter().flatten() {
                        println!(
                            "commune {commune}: REFUSED: {}",
                            s.as_str().unwrap_or_default()
                        );
                    }
                }
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "partition": partition.as_str(), "period": period.to_string(),
                "communes": communes.len(), "instructions": issued,
                "amount": amount.to_string(), "unfunded_communes": refused,
                "idempotency_key": key, "by_commune": by_commune,
            })
        );
    } else {
        println!(
            "payment run {period} of partition {partition}: {issued} instructions, {} in {} communes{} (idempotency key {key})",
            format_vnd(amount),
            communes.len(),
            if refused > 0 {
                format!("; {refused} communes short of budget, not paid")
            } else {
                String::new()
            }
        );
    }
    Ok(if refused > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn timeouts(
    runtime: &Runtime,
    who: &ActorArgs,
    partition: &Partition,
    as_of: NaiveDate,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let caller = who.caller()?;
    // The command waits as long as the work takes: no limit per call.
    let done = runtime
        .service()
        .time_out_due(
            &caller,
            "cli:timeouts",
            partition,
            as_of,
            ansinh::clock::today(),
            usize::MAX,
        )
        .await;
    let timed_out = match done {
        Ok(done) => done.timed_out.len(),
        // Timeouts are keyed by instruction, whatever the run: no key to show.
        Err(e) => return Ok(super::staff::refusal(e, json)?),
    };
    if json {
        println!("{}", serde_json::json!({"timed_out": timed_out}));
    } else {
        println!(
            "{timed_out} instructions timed out as of {as_of}; their holds went back to the budget"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Every partition's reconciliation as of `as_of`, folded from the verified log with a
/// progress bar (hidden with `--json`).
async fn reconcile_from_log(
    runtime: &Runtime,
    keys_partition: &Partition,
    stream: &mut async_nats::jetstream::stream::Stream,
    as_of: NaiveDate,
    pending_days: u32,
    json: bool,
) -> Result<ansinh::payments_report::Reconciliations, BoxError> {
    let bar = super::audit::progress_bar(stream, "reconciling", json).await?;
    let all = ansinh::payments_report::reconcile_from_log(
        stream,
        runtime.ledger.config(),
        keys_partition,
        as_of,
        pending_days,
        super::audit::advance(&bar),
    )
    .await;
    bar.finish_and_clear();
    Ok(all?)
}

/// Every day's reconciliation as of `as_of`: from the projections when they can answer
/// (no payment event after `as_of`), else folded from the log.
async fn reconcile_every_day(
    runtime: &Runtime,
    keys_partition: &Partition,
    stream: &mut async_nats::jetstream::stream::Stream,
    as_of: NaiveDate,
    pending_days: u32,
    json: bool,
) -> Result<ansinh::payments_report::Reconciliations, BoxError> {
    match ansinh::payments_report::reconcile_every_day_projected(
        &runtime.projector,
        as_of,
        pending_days,
    )? {
        Some(projected) => Ok(projected),
        None => {
            reconcile_from_log(runtime, keys_partition, stream, as_of, pending_days, json).await
        }
    }
}

// The command's own options, one argument each, as clap parsed them.
#[allow(clippy::too_many_arguments)]
async fn reconcile(
    runtime: &Runtime,
    keys_partition: &Partition,
    gateway: Option<String>,
    date: Option<NaiveDate>,
    as_of: NaiveDate,
    pending_days: u32,
    csv: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let mut stream = runtime.ledger.stream().clone();
    // As of the partitions' latest payment events (or later), the projections hold the
    // reconciliation: one day, or every day, read in O(the lines). A report as of an
    // earlier day is folded from the verified log (O(log), memory per instruction and
    // day, with a progress bar).
    runtime
        .projector
        .catch_up(&mut stream, runtime.ledger.config())
        .await?;
    let all = match date {
        Some(date) => match ansinh::payments_report::reconcile_day_projected(
            &runtime.projector,
            date,
            as_of,
            pending_days,
        )? {
            Some(day) => day,
            None => {
                reconcile_from_log(
                    runtime,
                    keys_partition,
                    &mut stream,
                    as_of,
                    pending_days,
                    json,
                )
                .await?
            }
        },
        None => {
            reconcile_every_day(
                runtime,
                keys_partition,
                &mut stream,
                as_of,
                pending_days,
                json,
            )
            .await?
        }
    };
    let rows: Vec<_> = all
        .iter()
        .flat_map(|(p, r)| r.days.iter().map(move |((g, d), day)| (p, g, d, day)))
        .filter(|(_, g, d, _)| {
            gateway.as_ref().is_none_or(|want| g.to_string() == *want)
                && date.is_none_or(|want| **d == want)
        })
        .collect();
    // A gateway with no line is either quiet that day or one the log never saw: an empty
    // table would read as "nothing wrong with it", so the second is said (a report over
    // the log, only on this rare path).
    if let Some(want) = gateway.as_ref().filter(|_| rows.is_empty()) {
        let fresh;
        let everything = if date.is_none() {
            &all
        } else {
            fresh = reconcile_every_day(
                runtime,
                keys_partition,
                &mut stream,
                as_of,
                pending_days,
                json,
            )
            .await?;
            &fresh
        };
        let seen = everything
            .values()
            .any(|r| r.days.keys().any(|(g, _)| g.as_str() == want));
        if !seen {
            return Ok(super::not_found(json, "gateway", want));
        }
    }
    // The CSV first: a path that cannot be written fails the command before the report
    // is printed, so `--json` prints one document either way.
    if let Some(path) = &csv {
        let text = ansinh::payments_report::reconciliation_csv_rows(
            rows.iter().map(|(p, g, d, day)| (p, **d, g, *day)),
        );
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(p, g, d, day)| serde_json::json!({"partition": p, "gateway": g.to_string(), "date": d.to_string(), "day": day}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", reconciliation_header());
        for (p, g, d, day) in &rows {
            println!("{}", reconciliation_row(p, &g.to_string(), **d, day));
            for m in &day.mismatches {
                println!("     mismatch {}: {}", m.instruction, describe(&m.kind));
            }
        }
        if let Some(path) = &csv {
            println!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The text table's header: every tally of a day, the money back in the budget
/// (timed out, cancelled) as well as what gateways posted.
fn reconciliation_header() -> String {
    format!(
        "{:<4} {:<10} {:<10} {:>24} {:>24} {:>22} {:>22} {:>22} {:>22} {:>24} {:>5}",
        "PART",
        "GATEWAY",
        "DAY",
        "INSTRUCTED",
        "SETTLED",
        "FAILED",
        "RETURNED",
        "TIMED OUT",
        "CANCELLED",
        "PENDING>N DAYS",
        "MISM"
    )
}

/// One gateway's day in the text table, each tally as count / amount.
fn reconciliation_row(
    partition: &str,
    gateway: &str,
    day_of: chrono::NaiveDate,
    day: &ansinh::domain::payments::reconcile::GatewayDay,
) -> String {
    let t = |t: &ansinh::domain::payments::reconcile::Tally| {
        format!("{} / {}", t.count, format_vnd(t.amount))
    };
    format!(
        "{:<4} {:<10} {:<10} {:>24} {:>24} {:>22} {:>22} {:>22} {:>22} {:>24} {:>5}",
        partition,
        gateway,
        day_of.format("%d/%m/%Y").to_string(),
        t(&day.instructed),
        t(&day.settled),
        t(&day.failed),
        t(&day.returned),
        t(&day.timed_out),
        t(&day.cancelled),
        t(&day.pending_overdue),
        day.mismatches.len()
    )
}

pub fn describe(kind: &MismatchKind) -> String {
    match kind {
        MismatchKind::RefusedPost {
            outcome,
            gateway_txn,
            amount,
            refusal,
        } => format!("refused {outcome:?} {amount} (txn {gateway_txn}): {refusal:?}"),
        MismatchKind::ReturnedAfterSettlement { amount, settled_by } => format!(
            "returned {amount} after settlement{}",
            settled_by
                .as_ref()
                .map(|t| format!(" by {t}"))
                .unwrap_or_default()
        ),
        MismatchKind::PaidAfterStop { amount, stopped_on } => {
            format!("paid {amount} after the entitlement stopped on {stopped_on}")
        }
    }
}

/// What a recorded payments event decided, in a sentence for the clerk and as fields for
/// `--json`: the entitlement's number that every next command needs, a budget's amount
/// and what is left of it.
pub fn decided(body: &ansinh::domain::payments::EventBody) -> Option<(String, serde_json::Value)> {
    use ansinh::domain::payments::EventBody as E;
    let terms_words = |t: &Terms| {
        let how = match t.channel {
            Channel::BankAccount { .. } => "bank account",
            Channel::MobileMoney { .. } => "mobile money",
            Channel::PostOffice { .. } => "post office",
        };
        format!(
            "{}, paid by {how} through {}",
            t.category,
            t.channel.gateway()
        )
    };
    Some(match body {
        E::BudgetAllocated { budget } | E::BudgetDeallocated { budget } => {
            let (verb, field) = match body {
                E::BudgetAllocated { .. } => ("allocated to", "allocated"),
                _ => ("taken back from", "released"),
            };
            (
                format!(
                    "{} {verb} the budget of commune {} for {}: {} allocated, {} available.",
                    format_vnd(budget.amount),
                    budget.key.commune,
                    budget.key.period,
                    format_vnd(budget.after.allocated),
                    format_vnd(budget.after.available())
                ),
                serde_json::json!({
                    field: budget.amount.to_string(),
                    "commune": budget.key.commune.to_string(),
                    "period": budget.key.period.to_string(),
                    "allocated": budget.after.allocated.to_string(),
                    "available": budget.after.available().to_string(),
                }),
            )
        }
        E::EntitlementGranted {
            entitlement,
            beneficiary,
            from,
            terms,
            ..
        } => (
            format!(
                "Entitlement {entitlement} granted to {beneficiary} from {from}: {}. Use --entitlement {entitlement} for its next steps.",
                terms_words(terms)
            ),
            serde_json::json!({"entitlement": entitlement, "from": from.to_string()}),
        ),
        E::EntitlementChanged {
            entitlement,
            from,
            terms,
        } => (
            format!(
                "Entitlement {entitlement} from {from}: {}.",
                terms_words(terms)
            ),
            serde_json::json!({"entitlement": entitlement, "from": from.to_string()}),
        ),
        E::EntitlementStopped {
            entitlement,
            on,
            overpaid,
            ..
        } => (
            format!(
                "Entitlement {entitlement} stopped on {on}; {} month(s) paid after it to recover.",
                overpaid.len()
            ),
            serde_json::json!({"entitlement": entitlement, "on": on.to_string(), "overpaid": overpaid.len()}),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ansinh::domain::payments::reconcile::{GatewayDay, Tally};
    use rust_decimal_macros::dec;

    /// Money that went back to the budget on a day (a timeout, a cancellation) is on the
    /// table staff read, in its own column, not only in the JSON and the CSV.
    #[test]
    fn a_day_s_timeouts_and_cancellations_have_columns_of_their_own() {
        let day = GatewayDay {
            timed_out: Tally {
                count: 400,
                amount: dec!(200000000),
            },
            cancelled: Tally {
                count: 3,
                amount: dec!(1500000),
            },
            ..GatewayDay::default()
        };
        let on = chrono::NaiveDate::from_ymd_opt(2026, 12, 16).unwrap();
        let header = reconciliation_header();
        let row = reconciliation_row("01", "vcb", on, &day);
        // Columns are aligned in characters (the đồng sign is three bytes).
        let (header, row): (Vec<char>, Vec<char>) =
            (header.chars().collect(), row.chars().collect());
        let column = |title: &str| {
            let title: Vec<char> = title.chars().collect();
            let at = header
                .windows(title.len())
                .position(|w| w == title)
                .unwrap();
            let start = header[..at].iter().rposition(|c| *c != ' ').unwrap() + 1;
            row[start..at + title.len()]
                .iter()
                .collect::<String>()
                .trim()
                .to_owned()
        };
        assert_eq!(column("TIMED OUT"), "400 / 200.000.000 ₫");
        assert_eq!(column("CANCELLED"), "3 / 1.500.000 ₫");
        assert_eq!(column("SETTLED"), "0 / 0 ₫");
    }
}
