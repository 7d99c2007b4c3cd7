//! `ansinh audit anomalies`: patterns an auditor should look at, found by one pass
//! over the verified log of every partition, in stream order (so a move between
//! partitions is seen in the order it happened).
//!
//! The fold (`Scanner`) is pure: events in, anomalies out, the "as of" date passed in.
//! It reads the recorded payloads only; it decides nothing and changes nothing.
//!
//! What is found (docs/BUNDLES.md §9 says the same for auditors):
//! - one citizen (blind index) in two active households at once, across partitions;
//! - a loan disbursement to a household whose recorded standing, on the disbursement
//!   date, is not one the loan's programme lends to (or no standing covers the date),
//!   by the book's rule (`HouseholdStanding::statuses_on`): the status within its
//!   validity, and escaped poverty within a window a later review carried on;
//! - social assistance paid to a household that, on the payment date, was not
//!   registered in the paying partition (never, not yet, or moved out before). Who is
//!   entitled to assistance is a matter of category, not poverty class; residence is
//!   what the log records for every household;
//! - a loan approved above its programme version's cap (or of an unknown programme);
//! - a repayment or disbursement on a loan after it was written off, and a loan or
//!   social-assistance payment to a household after its last member died;
//! - a payment instruction older than N days with no result (settled, failed,
//!   returned, timed out or cancelled);
//! - one gateway transaction id (with one outcome) accepted for instructions of two
//!   partitions: one transfer cannot settle two payments. The ledger refuses it when
//!   its projections already hold the first (ADR 0018); two posts racing in two
//!   partitions are found here.
//!
//! Memory: a few records per household and loan, each instruction still without a
//! result, and about 40 bytes per accepted gateway post (a digest of its transaction
//! key and where it was first accepted).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_nats::jetstream::stream::Stream;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::book::codec;
use crate::bundle::statement::{PAID_TO_BENEFICIARIES, event_date, subject_of, vnd};
use crate::chain::Partition;
use crate::domain::loans::HouseholdStanding;
use crate::domain::programmes::{self, ProgrammeRef};
use crate::log::LogConfig;
use crate::proto::payment_recorded::Body;
use crate::proto::{EligibilityDecided, Envelope, GatewayPostAccepted, envelope::Payload};
use crate::verify::{VerifyError, verify_with};

/// Most anomalies kept; more are counted, not listed (a broken feed could flag every
/// event, and the report must stay readable and bounded).
pub const ANOMALIES_LISTED_MAX: usize = 10_000;

/// What a listing names instead of a household its reader may not read
/// (`Anomaly::seen_by`).
pub const HOUSEHOLD_ELSEWHERE: &str = "a household in another province";

/// Where an event is: partition and partition sequence. The sequence is left out where
/// the event lies outside what the reader may read (`Anomaly::seen_by`); a scan always
/// has it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct At {
    pub partition: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

impl At {
    fn of(envelope: &Envelope) -> At {
        At {
            partition: envelope.partition.clone(),
            sequence: Some(envelope.sequence),
        }
    }

    /// The sequence of an event the scan read itself.
    fn scanned_sequence(&self) -> u64 {
        self.sequence
            .expect("a scan's own positions carry their sequence")
    }

    fn seen_by(&mut self, may_read: &impl Fn(&str) -> bool) {
        if !may_read(&self.partition) {
            self.sequence = None;
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Anomaly {
    /// The same citizen (blind index, hex) is a member of several active households.
    CitizenInTwoHouseholds {
        citizen_index: String,
        households: Vec<String>,
        at: At,
    },
    /// Money lent to a household whose standing did not qualify on that date.
    PaidWhileIneligible {
        household: String,
        loan: String,
        programme: String,
        date: String,
        /// The first status the recorded standing gave on that date ("" when none).
        standing: String,
        at: At,
    },
    /// Social assistance paid for a household not registered in the paying
    /// partition on the payment date.
    AssistanceToNonResident {
        household: String,
        date: String,
        /// "never registered here", "registered on D", or "moved out on D".
        residence: String,
        at: At,
    },
    /// A loan approved above its programme's cap.
    LoanAboveCap {
        household: String,
        loan: String,
        programme: String,
        amount: Decimal,
        cap: Option<Decimal>,
        at: At,
    },
    /// Money moved on a loan after it was written off.
    AfterWriteOff {
        loan: String,
        event_type: String,
        written_off_at: At,
        at: At,
    },
    /// Money moved for a household after its last member died.
    AfterDeath {
        household: String,
        event_type: String,
        died_on: String,
        date: String,
        at: At,
    },
    /// A payment instruction with no result after more than the allowed days.
    InstructionPending {
        instruction: String,
        household: String,
        issued_on: String,
        days: i64,
        at: At,
    },
    /// A gateway's transaction id, with one outcome, accepted for an instruction of
    /// another partition before (`first`).
    TransactionInTwoPartitions {
        gateway: String,
        transaction: String,
        outcome: String,
        first: At,
        at: At,
    },
}

impl Anomaly {
    /// Whether the anomaly concerns `partition`: it was found at an event of it, or (a
    /// citizen in two households) one of the households is registered in it.
    pub fn concerns(&self, partition: &str) -> bool {
        let at = match self {
            Anomaly::CitizenInTwoHouseholds { households, at, .. } => {
                if households.iter().any(|h| h.starts_with(partition)) {
                    return true;
                }
                at
            }
            Anomaly::PaidWhileIneligible { at, .. }
            | Anomaly::AssistanceToNonResident { at, .. }
            | Anomaly::LoanAboveCap { at, .. }
            | Anomaly::AfterWriteOff { at, .. }
            | Anomaly::AfterDeath { at, .. }
            | Anomaly::InstructionPending { at, .. } => at,
            Anomaly::TransactionInTwoPartitions { first, at, .. } => {
                if first.partition == partition {
                    return true;
                }
                at
            }
        };
        at.partition == partition
    }

    /// The anomaly as a reader sees it who may read only the communes and partitions
    /// `may_read` allows (`access::authorize` for reading, over the HTTP API and its
    /// jobs): a household outside is named `HOUSEHOLD_ELSEWHERE`, an event outside keeps
    /// its partition and not its sequence. A province's reader learns that a citizen of
    /// theirs is registered elsewhere too, or that a transaction was accepted elsewhere
    /// first, not where: as a refused registration does not name the household holding
    /// the citizen (`service::outside_unit_unnamed`), or anyone could learn where anyone
    /// is registered in the country. The operator's CLI, over every partition, lists all.
    pub fn seen_by(mut self, may_read: impl Fn(&str) -> bool) -> Anomaly {
        match &mut self {
            Anomaly::CitizenInTwoHouseholds { households, at, .. } => {
                for household in households.iter_mut() {
                    let readable = crate::domain::ids::HouseholdId::parse(household)
                        .is_ok_and(|h| may_read(h.commune().as_str()));
                    if !readable {
                        *household = HOUSEHOLD_ELSEWHERE.to_owned();
                    }
                }
                at.seen_by(&may_read);
            }
            Anomaly::TransactionInTwoPartitions { first, at, .. } => {
                first.seen_by(&may_read);
                at.seen_by(&may_read);
            }
            Anomaly::PaidWhileIneligible { at, .. }
            | Anomaly::AssistanceToNonResident { at, .. }
            | Anomaly::LoanAboveCap { at, .. }
            | Anomaly::AfterWriteOff { at, .. }
            | Anomaly::AfterDeath { at, .. }
            | Anomaly::InstructionPending { at, .. } => at.seen_by(&may_read),
        }
        self
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Anomaly::CitizenInTwoHouseholds { .. } => "citizen_in_two_households",
            Anomaly::PaidWhileIneligible { .. } => "paid_while_ineligible",
            Anomaly::AssistanceToNonResident { .. } => "assistance_to_non_resident",
            Anomaly::LoanAboveCap { .. } => "loan_above_cap",
            Anomaly::AfterWriteOff { .. } => "after_write_off",
            Anomaly::AfterDeath { .. } => "after_death",
            Anomaly::InstructionPending { .. } => "instruction_pending",
            Anomaly::TransactionInTwoPartitions { .. } => "transaction_in_two_partitions",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AnomalyReport {
    pub events: u64,
    pub anomalies: Vec<Anomaly>,
    /// Anomalies found beyond ANOMALIES_LISTED_MAX (of those concerning the partition
    /// the scan was asked about, if any).
    pub not_listed: u64,
}

struct Loan {
    household: String,
    programme: ProgrammeRef,
    written_off: Option<At>,
}

struct Instruction {
    household: String,
    issued_on: NaiveDate,
    at: At,
}

/// The pure fold. Feed it every event in stream order, then `finish`.
#[derive(Default)]
pub struct Scanner {
    events: u64,
    /// Citizen index → active households holding it.
    holders: BTreeMap<Vec<u8>, BTreeSet<String>>,
    /// Household → its current citizen indexes.
    members: BTreeMap<String, Vec<Vec<u8>>>,
    reported_pairs: BTreeSet<(Vec<u8>, Vec<String>)>,
    /// Household → the standing its latest readable decision gives it, as the book holds it.
    standings: BTreeMap<String, HouseholdStanding>,
    /// (partition, loan number) → loan.
    loans: BTreeMap<(String, u64), Loan>,
    /// Household → date its last member died.
    died: BTreeMap<String, String>,
    /// (partition, instruction id) → instruction still without a result: ids are
    /// numbered per partition.
    pending: BTreeMap<(String, String), Instruction>,
    /// Digest of (gateway, outcome, transaction id) → where it was first accepted
    /// (an index into `partitions`, and the sequence).
    transactions: HashMap<[u8; 16], (u16, u64)>,
    partitions: Vec<String>,
    /// (partition, household) → (arrived on, left on): residence as the log records it.
    residence: BTreeMap<(String, String), (NaiveDate, Option<NaiveDate>)>,
    /// Only anomalies that concern this partition are listed and counted. Applied as
    /// they are found, so another province's findings never fill the listing.
    concerning: Option<String>,
    report: AnomalyReport,
}

fn loan_label(partition: &str, number: u64) -> String {
    crate::book::loan_ref(partition, number)
}

impl Scanner {
    /// A scanner that lists only the anomalies concerning `partition`
    /// (`Anomaly::concerns`); it still reads every partition, since a citizen may be in
    /// households of two provinces.
    pub fn concerning(partition: &str) -> Self {
        Scanner {
            concerning: Some(partition.to_owned()),
            ..Scanner::default()
        }
    }

    fn flag(&mut self, anomaly: Anomaly) {
        if self
            .concerning
            .as_deref()
            .is_some_and(|p| !anomaly.concerns(p))
        {
            return;
        }
        if self.report.anomalies.len() < ANOMALIES_LISTED_MAX {
            self.report.anomalies.push(anomaly);
        } else {
            self.report.not_listed += 1;
        }
    }

    /// Replaces a household's members; flags each newly held index another active
    /// household also holds.
    fn set_members(&mut self, household: &str, indexes: &[Vec<u8>], at: &At) {
        for old in self.members.remove(household).unwrap_or_default() {
            if let Some(set) = self.holders.get_mut(&old) {
                set.remove(household);
            }
        }
        let indexes: Vec<Vec<u8>> = indexes.iter().filter(|i| !i.is_empty()).cloned().collect();
        for index in &indexes {
            let set = self.holders.entry(index.clone()).or_default();
            set.insert(household.to_string());
            if set.len() > 1 {
                let households: Vec<String> = set.iter().cloned().collect();
                if self
                    .reported_pairs
                    .insert((index.clone(), households.clone()))
                {
                    self.flag(Anomaly::CitizenInTwoHouseholds {
                        citizen_index: hex::encode(index),
                        households,
                        at: at.clone(),
                    });
                }
            }
        }
        if !indexes.is_empty() {
            self.members.insert(household.to_string(), indexes);
        }
    }

    fn arrived(&mut self, partition: &str, household: &str, envelope: &Envelope) {
        self.residence
            .entry((partition.to_string(), household.to_string()))
            .or_insert((event_date(envelope), None));
    }

    /// Flags assistance paid for a household not resident in `partition` that day.
    fn assistance_residence(
        &mut self,
        partition: &str,
        household: &str,
        envelope: &Envelope,
        at: &At,
    ) {
        let date = event_date(envelope);
        let residence = match self
            .residence
            .get(&(partition.to_string(), household.to_string()))
        {
            None => Some("never registered here".to_string()),
            Some((from, _)) if date < *from => Some(format!("registered on {from}")),
            Some((_, Some(left))) if date > *left => Some(format!("moved out on {left}")),
            Some(_) => None,
        };
        if let Some(residence) = residence {
            self.flag(Anomaly::AssistanceToNonResident {
                household: household.to_string(),
                date: date.to_string(),
                residence,
                at: at.clone(),
            });
        }
    }

    fn money_after_death(&mut self, household: &str, envelope: &Envelope, at: &At) {
        let date = event_date(envelope);
        if let Some(died_on) = self.died.get(household) {
            if date.to_string().as_str() > died_on.as_str() {
                let died_on = died_on.clone();
                self.flag(Anomaly::AfterDeath {
                    household: household.to_string(),
                    event_type: envelope.event_type.clone(),
                    died_on,
                    date: date.to_string(),
                    at: at.clone(),
                });
            }
        }
    }

    /// Folds one event (chain already verified).
    pub fn apply(&mut self, envelope: &Envelope) {
        self.events += 1;
        let Some(payload) = &envelope.payload else {
            return;
        };
        let partition = envelope.partition.as_str();
        let at = At::of(envelope);
        match payload {
            Payload::HouseholdRegistered(e) => {
                self.arrived(partition, &e.household_id, envelope);
                self.set_members(&e.household_id, &to_vecs(&e.citizen_indexes), &at)
            }
            Payload::HouseholdMembersChanged(e) => {
                self.set_members(&e.household_id, &to_vecs(&e.citizen_indexes), &at)
            }
            Payload::HouseholdMovedIn(e) => {
                self.arrived(partition, &e.household_id, envelope);
                if let Some(standing) = &e.standing {
                    self.standing(&e.household_id, standing, &at);
                }
                self.set_members(&e.household_id, &to_vecs(&e.citizen_indexes), &at)
            }
            Payload::HouseholdMovedOut(e) => {
                if let Some(r) = self
                    .residence
                    .get_mut(&(partition.to_string(), e.household_id.clone()))
                {
                    r.1.get_or_insert(event_date(envelope));
                }
                self.set_members(&e.household_id, &[], &at)
            }
            Payload::MemberDied(e) => {
                self.set_members(&e.household_id, &to_vecs(&e.citizen_indexes), &at);
                if e.members == 0 {
                    self.died.insert(e.household_id.clone(), e.died_on.clone());
                }
            }
            Payload::EligibilityDecided(e) => self.standing(&e.household_id, e, &at),
            Payload::LoanApproved(e) => {
                let programme = ProgrammeRef {
                    id: e.programme_id.clone(),
                    version: e.programme_version,
                };
                let amount = vnd(&e.amount);
                let cap = programmes::programme_version(&programme).map(|p| p.cap);
                if cap.is_none_or(|cap| amount > cap) {
                    self.flag(Anomaly::LoanAboveCap {
                        household: e.household_id.clone(),
                        loan: loan_label(partition, e.loan_number),
                        programme: format!("{} v{}", programme.id, programme.version),
                        amount,
                        cap,
                        at: at.clone(),
                    });
                }
                self.loans.insert(
                    (partition.to_string(), e.loan_number),
                    Loan {
                        household: e.household_id.clone(),
                        programme,
                        written_off: None,
                    },
                );
            }
            Payload::LoanTrancheDisbursed(e) => {
                self.loan_money(partition, e.loan_number, envelope, &at, true)
            }
            Payload::LoanRepaymentReceived(e) => {
                self.loan_money(partition, e.loan_number, envelope, &at, false)
            }
            Payload::LoanWrittenOff(e) => {
                if let Some(loan) = self.loans.get_mut(&(partition.to_string(), e.loan_number)) {
                    loan.written_off.get_or_insert(at.clone());
                }
            }
            Payload::PaymentRecorded(p) => {
                let household = subject_of(envelope, "household")
                    .unwrap_or_default()
                    .to_string();
                match p.kind.as_str() {
                    "InstructionIssued" => {
                        self.pending.insert(
                            (partition.to_string(), p.instruction_id.clone()),
                            Instruction {
                                household: household.clone(),
                                issued_on: event_date(envelope),
                                at: at.clone(),
                            },
                        );
                    }
                    "GatewayPostAccepted" | "InstructionTimedOut" | "InstructionCancelled" => {
                        self.pending
                            .remove(&(partition.to_string(), p.instruction_id.clone()));
                        if let Some(Body::GatewayPostAccepted(accepted)) = &p.body {
                            self.transaction_accepted(accepted, &at);
                        }
                    }
                    _ => {}
                }
                let paid: Decimal = p
                    .postings
                    .iter()
                    .filter(|l| l.account == PAID_TO_BENEFICIARIES)
                    .map(|l| vnd(&l.debit))
                    .sum();
                if paid > Decimal::ZERO && !household.is_empty() {
                    self.money_after_death(&household, envelope, &at);
                    self.assistance_residence(partition, &household, envelope, &at);
                }
            }
            _ => {}
        }
    }

    /// Notes where a gateway's transaction id was accepted; flags it when another
    /// partition accepted it first.
    fn transaction_accepted(&mut self, accepted: &GatewayPostAccepted, at: &At) {
        let Some(post) = &accepted.post else {
            return;
        };
        let mut key = blake3::Hasher::new();
        for part in [&post.gateway, &post.outcome, &post.gateway_txn] {
            key.update(part.as_bytes());
            key.update(&[0]);
        }
        let digest: [u8; 16] = key.finalize().as_bytes()[..16]
            .try_into()
            .expect("16 of 32 bytes");
        let partition = match self.partitions.iter().position(|p| *p == at.partition) {
            Some(i) => i,
            None => {
                self.partitions.push(at.partition.clone());
                self.partitions.len() - 1
            }
        };
        let partition = u16::try_from(partition).expect("fewer than 65,536 partitions");
        match self.transactions.entry(digest) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((partition, at.scanned_sequence()));
            }
            std::collections::hash_map::Entry::Occupied(o) => {
                let (first_partition, first_sequence) = *o.get();
                if first_partition != partition {
                    self.flag(Anomaly::TransactionInTwoPartitions {
                        gateway: post.gateway.clone(),
                        transaction: post.gateway_txn.clone(),
                        outcome: post.outcome.clone(),
                        first: At {
                            partition: self.partitions[usize::from(first_partition)].clone(),
                            sequence: Some(first_sequence),
                        },
                        at: at.clone(),
                    });
                }
            }
        }
    }

    /// Files a recorded decision's standing under `household`. One the book cannot read
    /// leaves it the standing it held, as here (recompute-eligibility reports it).
    fn standing(&mut self, household: &str, decided: &EligibilityDecided, at: &At) {
        if let Ok(standing) =
            codec::standing_from_proto(decided, codec::main_id(at.scanned_sequence()))
        {
            self.standings.insert(household.to_string(), standing);
        }
    }

    fn loan_money(
        &mut self,
        partition: &str,
        number: u64,
        envelope: &Envelope,
        at: &At,
        disbursement: bool,
    ) {
        let Some(loan) = self.loans.get(&(partition.to_string(), number)) else {
            return;
        };
        let household = loan.household.clone();
        let programme = loan.programme.clone();
        let written_off = loan.written_off.clone();
        let label = loan_label(partition, number);
        if let Some(written_off_at) = written_off {
            self.flag(Anomaly::AfterWriteOff {
                loan: label.clone(),
                event_type: envelope.event_type.clone(),
                written_off_at,
                at: at.clone(),
            });
        }
        if disbursement {
            let date = event_date(envelope);
            // The book's own rule: the decision's status within its validity, and escaped
            // poverty within a window a later review above the line carried on.
            let statuses = self
                .standings
                .get(&household)
                .and_then(|s| s.statuses_on(date).ok())
                .unwrap_or_default();
            let eligible = programmes::programme_version(&programme)
                .is_some_and(|p| statuses.iter().any(|s| p.eligible.contains(s)));
            if !eligible {
                self.flag(Anomaly::PaidWhileIneligible {
                    household: household.clone(),
                    loan: label,
                    programme: format!("{} v{}", programme.id, programme.version),
                    date: date.to_string(),
                    standing: statuses
                        .first()
                        .map(|s| codec::status_name(*s).to_string())
                        .unwrap_or_default(),
                    at: at.clone(),
                });
            }
        }
        self.money_after_death(&household, envelope, at);
    }

    /// The anomalies found, with instructions pending more than `pending_days` days
    /// on `as_of`, in the order found (pending instructions last).
    pub fn finish(mut self, as_of: NaiveDate, pending_days: i64) -> AnomalyReport {
        let pending = std::mem::take(&mut self.pending);
        for ((_, instruction), i) in pending {
            let days = (as_of - i.issued_on).num_days();
            if days > pending_days {
                self.flag(Anomaly::InstructionPending {
                    instruction,
                    household: i.household,
                    issued_on: i.issued_on.to_string(),
                    days,
                    at: i.at,
                });
            }
        }
        self.report.events = self.events;
        self.report
    }
}

fn to_vecs(indexes: &[bytes::Bytes]) -> Vec<Vec<u8>> {
    indexes.iter().map(|b| b.to_vec()).collect()
}

/// Reads and verifies every partition's chain, in stream order, and scans it, listing
/// the anomalies that concern `concerning` (all when None). `progress` is called with
/// the stream sequence of every event scanned (for a progress bar).
pub async fn scan(
    stream: &mut Stream,
    config: &LogConfig,
    keys_partition: &Partition,
    concerning: Option<&Partition>,
    as_of: NaiveDate,
    pending_days: i64,
    mut progress: impl FnMut(u64),
) -> Result<AnomalyReport, VerifyError> {
    let mut scanner = match concerning {
        Some(p) => Scanner::concerning(p.as_str()),
        None => Scanner::default(),
    };
    verify_with(stream, config, keys_partition, None, |seq, envelope| {
        scanner.apply(envelope);
        progress(seq);
    })
    .await?;
    Ok(scanner.finish(as_of, pending_days))
}
