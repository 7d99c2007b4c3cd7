//! Read models folded from the log into sled by the projector: household view,
//! one record per loan, commune portfolio, trial balance per partition.
//!
//! **Boundary:** called by the projector with one event of its batch; reads
//! and writes only through the `Views` handle, so the view change and the projector
//! position commit together. Derived values come from the domain's own `apply`, so
//! a view can never disagree with the book the writer decides against.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::book::{codec, loan_ref};
use crate::domain::ids::HouseholdId;
use crate::domain::ledger::{Account, Posting};
use crate::domain::loans::{self, EventBody, Loan, LoanBook, LoanStatus};
use crate::domain::payments::EventBody as PaymentBody;
use crate::domain::payments::budget::MoveKind;
use crate::domain::payments::entitlements::ChannelKind;
use crate::domain::payments::ids::GatewayId;
use crate::domain::payments::instructions::{InstructionId, InstructionStatus, Outcome};
use crate::domain::payments::month::Month;
use crate::domain::payments::reconcile::{self, GatewayDay, Received, Records, Seen};
use crate::domain::registry::Change;
use crate::log::EventAt;
use crate::proto::envelope::Payload;

/// The standing of a household as its latest decision recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandingView {
    pub class: String,
    pub status: String,
    pub valid_from: String,
    pub valid_to: String,
    pub escaped_until: String,
    pub standard_id: String,
    pub review_year: u32,
    pub decided_on: String,
}

/// What the projections keep under a household's key: its view, and where the event
/// with its latest sealed personal data sits (beside the view, so that a registration
/// writes one record instead of two; sled's inserts bound the projector).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HouseholdRecord {
    pub view: HouseholdView,
    /// Stream sequence and index in its message of that event.
    pub sealed_at: Option<(u64, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HouseholdView {
    pub household_id: String,
    pub partition: String,
    pub commune: String,
    pub area: String,
    pub members: u32,
    /// "active", "moved_out", "dissolved".
    pub residence: String,
    /// Where it moved to / came from, when it did.
    pub moved_to: Option<String>,
    pub moved_from: Option<String>,
    pub since: String,
    pub personal_data_erased: bool,
    pub standing: Option<StandingView>,
    /// Loan references ("01-L7"), oldest first.
    pub loans: Vec<String>,
}

/// Totals of one programme in a commune.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgrammeLine {
    pub open_loans: u64,
    pub outstanding: Decimal,
    pub overdue: Decimal,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommunePortfolio {
    pub commune: String,
    pub households_active: u64,
    pub open_loans: u64,
    /// Principal outstanding (current + overdue), whole VND.
    pub outstanding: Decimal,
    pub overdue: Decimal,
    pub written_off: Decimal,
    pub by_programme: BTreeMap<String, ProgrammeLine>,
}

impl CommunePortfolio {
    /// Overdue principal / outstanding principal (0 when nothing is outstanding).
    pub fn overdue_ratio(&self) -> Decimal {
        if self.outstanding.is_zero() {
            Decimal::ZERO
        } else {
            (self.overdue / self.outstanding).round_dp(4)
        }
    }
}

/// Debits and credits per account of one partition, checked at every event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialBalanceView {
    pub partition: String,
    pub accounts: BTreeMap<String, (Decimal, Decimal)>,
    pub total_debits: Decimal,
    pub total_credits: Decimal,
    /// Money events whose postings were checked.
    pub events_checked: u64,
    /// The first partition sequence whose postings did not balance (None = always balanced).
    pub first_unbalanced_sequence: Option<u64>,
}

/// Key-value access for the views, inside one batch.
pub trait Views {
    type Error;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), Self::Error>;
    fn delete(&self, key: &str) -> Result<(), Self::Error>;
    fn corrupt(&self, what: String) -> Self::Error;
}

pub fn household_key(id: &str) -> String {
    format!("hh/{id}")
}
pub fn loan_key(partition: &str, loan: u64) -> String {
    format!("loan/{partition}/{loan:020}")
}
pub fn commune_key(commune: &str) -> String {
    format!("commune/{commune}")
}
/// A commune's loan flows in one month, and what the month's events changed of its
/// outstanding and overdue balances, as stored. The changes, not the balances after the
/// month's last event: events are recorded in the order they come, not of their dates,
/// so a repayment dated in March recorded after April's events would make March's
/// stored balance hold April's changes. The closing balances are summed back from the
/// portfolio when read (`CommuneMonthView`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommuneMonth {
    /// "YYYY-MM" of the events' effective dates.
    pub month: String,
    /// Tranches paid out, less reversed ones.
    pub disbursed: Decimal,
    /// Repayments collected, less reversed ones.
    pub collected: Decimal,
    pub outstanding_change: Decimal,
    pub overdue_change: Decimal,
}

/// A commune's month as the console charts it: the flows, and the outstanding and
/// overdue balances at the month's end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CommuneMonthView {
    pub month: String,
    pub disbursed: Decimal,
    pub collected: Decimal,
    pub outstanding: Decimal,
    pub overdue: Decimal,
}

pub fn commune_month_key(commune: &str, month: &str) -> String {
    format!("cmonth/{commune}/{month}")
}
pub fn commune_month_prefix(commune: &str) -> String {
    format!("cmonth/{commune}/")
}

pub fn trial_key(partition: &str) -> String {
    format!("tb/{partition}")
}
/// What one payment instruction pays, kept to credit its results to its household.
pub fn instruction_key(partition: &str, instruction: &InstructionId) -> String {
    format!("instr/{partition}/{instruction}")
}
/// What a household received in one month through one channel (`Received`); listed by
/// `received_prefix` in month order.
pub fn received_key(household: &str, month: Month, channel: ChannelKind) -> String {
    format!("recv/{household}/{month}/{}", channel_name(channel))
}
pub fn received_prefix(household: &str) -> String {
    format!("recv/{household}/")
}

/// What reconciliation remembers of one instruction (`reconcile::Seen`).
pub fn reconcile_seen_key(partition: &str, instruction: &InstructionId) -> String {
    format!("rseen/{partition}/{instruction}")
}
/// One gateway's reconciliation line of one day (`GatewayDay`, without the pending
/// instructions, which depend on the day the report is made for).
pub fn reconcile_day_key(partition: &str, date: NaiveDate, gateway: &GatewayId) -> String {
    format!("rday/{partition}/{date}/{gateway}")
}
pub fn reconcile_day_prefix(partition: &str, date: NaiveDate) -> String {
    format!("rday/{partition}/{date}/")
}
/// Every gateway's line of every day of a partition, oldest day first.
pub fn reconcile_days_prefix(partition: &str) -> String {
    format!("rday/{partition}/")
}
/// An instruction issued on `date` still without a result (`PendingLine`).
pub fn reconcile_pending_key(
    partition: &str,
    date: NaiveDate,
    instruction: &InstructionId,
) -> String {
    format!("rpend/{partition}/{date}/{instruction}")
}
pub fn reconcile_pending_prefix(partition: &str, date: NaiveDate) -> String {
    format!("rpend/{partition}/{date}/")
}
/// Every instruction of a partition still without a result, oldest issue day first (ISO
/// dates sort as they read).
pub fn reconcile_pending_partition_prefix(partition: &str) -> String {
    format!("rpend/{partition}/")
}
/// The `number`th mismatch of a partition (log order), recorded on `date`: its gateway and
/// the `Mismatch`.
pub fn reconcile_mismatch_key(partition: &str, date: NaiveDate, number: u64) -> String {
    format!("rmis/{partition}/{date}/{number:020}")
}
pub fn reconcile_mismatch_prefix(partition: &str, date: NaiveDate) -> String {
    format!("rmis/{partition}/{date}/")
}
/// An instruction routed to `gateway` still waiting for its result
/// (`GatewayPendingView`), listed by `gateway_pending_prefix` oldest entitlement first:
/// the numbers are zero-padded so the keys sort as `InstructionId`s do.
/// The gateway id ends at a NUL, which no gateway id holds (printable ASCII), so one
/// gateway's prefix never covers another's ("vcb" and "vcb/2").
pub fn gateway_pending_key(gateway: &str, partition: &str, id: &InstructionId) -> String {
    format!(
        "gpend/{gateway}\u{0}{partition}/{:020}/{}/{:010}",
        id.entitlement, id.month, id.attempt
    )
}
pub fn gateway_pending_prefix(gateway: &str) -> String {
    format!("gpend/{gateway}\u{0}")
}

/// The instruction whose post with this gateway's transaction id and outcome was
/// accepted first, in log order across partitions (`TransactionUse`). Ids end at a NUL,
/// which neither a gateway id nor a transaction id holds.
pub fn transaction_use_key(gateway: &str, outcome: Outcome, txn: &str) -> String {
    let outcome = match outcome {
        Outcome::Settled => "settled",
        Outcome::Failed => "failed",
        Outcome::Returned => "returned",
    };
    format!("gtxn/{gateway}\u{0}{outcome}\u{0}{txn}")
}

/// How far a partition's reconciliation records go (`ReconcileProgress`).
pub fn reconcile_progress_key(partition: &str) -> String {
    format!("rpos/{partition}")
}

/// An instruction still waiting for its result, listed under its issue day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLine {
    pub gateway: GatewayId,
    pub amount: Decimal,
}

/// How far a partition's reconciliation records go: the payment events folded (numbered
/// like the book numbers them, for the mismatches' event ids) and the latest day any of
/// them was recorded on. A report as of an earlier day must leave later events out, so
/// it is folded from the log instead.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileProgress {
    pub events: u64,
    pub latest: Option<NaiveDate>,
    /// Mismatches recorded (`reconcile_mismatch_key` numbers them).
    #[serde(default)]
    pub mismatches: u64,
}

/// The reconciliation records of one partition, in the views.
struct ReconcileRecords<'v, V> {
    v: &'v V,
    partition: &'v str,
    progress: &'v mut ReconcileProgress,
}

impl<V: Views> Records for ReconcileRecords<'_, V> {
    type Error = V::Error;
    fn seen(&mut self, id: &InstructionId) -> Result<Option<Seen>, V::Error> {
        load(self.v, &reconcile_seen_key(self.partition, id))
    }
    fn set_seen(&mut self, id: InstructionId, seen: Seen) -> Result<(), V::Error> {
        let pending = reconcile_pending_key(self.partition, seen.issued_on, &id);
        if seen.status == InstructionStatus::Instructed {
            store(
                self.v,
                &pending,
                &PendingLine {
                    gateway: seen.gateway.clone(),
                    amount: seen.amount,
                },
            )?;
        } else {
            self.v.delete(&pending)?;
        }
        store(self.v, &reconcile_seen_key(self.partition, &id), &seen)
    }
    fn change_day(
        &mut self,
        gateway: &GatewayId,
        date: NaiveDate,
        change: &mut dyn FnMut(&mut GatewayDay),
    ) -> Result<(), V::Error> {
        let key = reconcile_day_key(self.partition, date, gateway);
        let mut day: GatewayDay = load(self.v, &key)?.unwrap_or_default();
        change(&mut day);
        // Mismatches are records of their own, numbered in log order: a day's line that
        // held them all would be rewritten whole at each new one (a day of many refused
        // or returned posts made the fold quadratic).
        for mismatch in day.mismatches.drain(..) {
            self.progress.mismatches += 1;
            store(
                self.v,
                &reconcile_mismatch_key(self.partition, date, self.progress.mismatches),
                &(gateway, &mismatch),
            )?;
        }
        store(self.v, &key, &day)
    }
}

/// Folds a payment event into its partition's reconciliation records, numbered as
/// `payments_report::payment_events` numbers them (over the events it can read).
fn apply_reconcile<V: Views>(
    v: &V,
    partition: &str,
    effective: NaiveDate,
    body: &PaymentBody,
) -> Result<(), V::Error> {
    let key = reconcile_progress_key(partition);
    let mut progress: ReconcileProgress = load(v, &key)?.unwrap_or_default();
    progress.events += 1;
    // Only what changes the records dates them: a budget allocated, or an entitlement
    // granted, on a later day leaves every day's lines as a fold up to today gives them.
    if reconcile::changes_records(body) {
        progress.latest = progress.latest.max(Some(effective));
    }
    let id = progress.events;
    reconcile::fold(
        &mut ReconcileRecords {
            v,
            partition,
            progress: &mut progress,
        },
        id,
        effective,
        body,
    )?;
    store(v, &key, &progress)
}

/// The channel's name in views and reports: "bank_account", "mobile_money", "post_office".
pub fn channel_name(channel: ChannelKind) -> &'static str {
    match channel {
        ChannelKind::BankAccount => "bank_account",
        ChannelKind::MobileMoney => "mobile_money",
        ChannelKind::PostOffice => "post_office",
    }
}

/// The part of an instruction its results need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructionView {
    pub household: String,
    pub month: Month,
    pub channel: ChannelKind,
    pub amount: Decimal,
    /// The gateway it is routed to (to find its `gateway_pending_key`).
    pub gateway: String,
}

/// What a gateway fetches of an instruction still waiting for its result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayPendingView {
    pub instruction: InstructionId,
    pub beneficiary: String,
    pub amount: Decimal,
    pub channel: ChannelKind,
    pub commune: String,
    /// The gateway the instruction is routed to, as issued: what the transports compare
    /// with the gateway that fetches it, whatever key the line was found under.
    pub gateway: String,
}

/// The instruction a gateway's transaction id (with an outcome) was first accepted for:
/// a post of the same id for an instruction of another partition is refused (ADR 0018).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionUse {
    pub partition: String,
    pub instruction: InstructionId,
}

/// The projections' record encoding: MessagePack, a struct as an array of its fields
/// without their names. sled's cost grows with the bytes it writes (ADR 0014): with the
/// names, a rebuild of the province bench's log wrote ~1,570 B an event, without them
/// ~1,410, and ran ~16% faster. Decimals and the string ids are strings either way, so
/// they read back exactly as written. People see the records with their names
/// (`record_as_json`); a change to a stored type's fields changes the projections'
/// format (a unit test below pins the stored types' fields with it).
pub fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    // Room for most records at once: grown from empty (as `rmp_serde::to_vec` does), a
    // buffer is copied at each doubling on its way to the record's size.
    let mut out = Vec::with_capacity(RECORD_BYTES_USUAL);
    rmp_serde::encode::write(&mut out, value).expect("projection records serialize");
    out
}

/// Bytes a view record is given to encode into at first: most records fit.
const RECORD_BYTES_USUAL: usize = 256;

pub fn decode_record<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

/// A record of type `T` as JSON with its field names, if the bytes decode as one.
pub fn named<T: serde::de::DeserializeOwned + Serialize>(
    bytes: &[u8],
) -> Option<serde_json::Value> {
    serde_json::to_value(decode_record::<T>(bytes).ok()?).ok()
}

/// A view's record as JSON with its field names, the view told by the key's kind (`hh/`,
/// `loan/`, ...): what `audit rebuild-check` shows. `None` for a key of no view, or bytes
/// that do not decode as its view.
pub fn record_as_json(key: &[u8], bytes: &[u8]) -> Option<serde_json::Value> {
    let key = std::str::from_utf8(key).ok()?;
    match key.split('/').next()? {
        "hh" => named::<HouseholdRecord>(bytes),
        "loan" => named::<Loan>(bytes),
        "commune" => named::<CommunePortfolio>(bytes),
        "cmonth" => named::<CommuneMonth>(bytes),
        "tb" => named::<TrialBalanceView>(bytes),
        "instr" => named::<InstructionView>(bytes),
        "recv" => named::<Received>(bytes),
        "rseen" => named::<Seen>(bytes),
        "rday" => named::<GatewayDay>(bytes),
        "rpend" => named::<PendingLine>(bytes),
        "rmis" => named::<(GatewayId, reconcile::Mismatch)>(bytes),
        "gpend" => named::<GatewayPendingView>(bytes),
        "gtxn" => named::<TransactionUse>(bytes),
        "rpos" => named::<ReconcileProgress>(bytes),
        _ => None,
    }
}

fn load<V: Views, T: serde::de::DeserializeOwned>(v: &V, key: &str) -> Result<Option<T>, V::Error> {
    match v.get(key)? {
        Some(bytes) => decode_record(&bytes)
            .map(Some)
            .map_err(|e| v.corrupt(format!("{key}: {e}"))),
        None => Ok(None),
    }
}
fn store<V: Views, T: Serialize>(v: &V, key: &str, value: &T) -> Result<(), V::Error> {
    v.put(key, encode_record(value))
}

/// A short human line for the audit trail: what the event did, with amounts.
pub fn detail(payload: Option<&Payload>) -> String {
    let Some(p) = payload else {
        return String::new();
    };
    match p {
        Payload::Note(n) => {
            let end = n
                .text
                .char_indices()
                .nth(80)
                .map_or(n.text.len(), |(i, _)| i);
            n.text[..end].to_owned()
        }
        Payload::HouseholdRegistered(h) => format!("registered, {} members, {}", h.members, h.area),
        Payload::HouseholdMembersChanged(h) => format!("members now {}: {}", h.members, h.reason),
        Payload::HouseholdMovedOut(h) => format!("moved out to {}", h.to_household_id),
        Payload::HouseholdMovedIn(h) => format!("moved in from {}", h.from_household_id),
        Payload::MemberDied(h) => format!("member died on {}", h.died_on),
        Payload::PersonalDataErased(h) => format!("personal data erased ({})", h.reference),
        Payload::EligibilityDecided(d) => format!(
            "{} review: {} (income {}), valid to {}",
            d.review_year, d.status, d.income_per_person_vnd, d.valid_to
        ),
        Payload::LoanApproved(l) => format!(
            "loan L{} approved: {} {} for {} months",
            l.loan_number, l.programme_id, l.amount, l.term_months
        ),
        Payload::LoanTrancheDisbursed(l) => {
            format!(
                "loan L{} disbursed {} by {}",
                l.loan_number, l.amount, l.channel
            )
        }
        Payload::LoanRepaymentReceived(l) => format!(
            "loan L{} repaid {} (interest {}, principal {})",
            l.loan_number,
            l.amount,
            add_strs(&l.to_interest, &l.to_overdue_interest),
            add_strs(&l.to_principal, &l.to_overdue_principal)
        ),
        Payload::LoanInterestAccrued(l) => format!(
            "loan L{} interest {} to {}",
            l.loan_number,
            add_strs(&l.interest_posted, &l.overdue_interest_posted),
            l.to
        ),
        // A move that charges the overdue rate's excess for days already priced says so.
        Payload::LoanMovedToOverdue(l) if !l.overdue_surcharge_posted.is_empty() => format!(
            "loan L{} overdue {}, interest {}",
            l.loan_number, l.amount, l.overdue_surcharge_posted
        ),
        Payload::LoanMovedToOverdue(l) => {
            format!("loan L{} overdue {}", l.loan_number, l.amount)
        }
        Payload::LoanExtended(l) => format!("loan L{} extended to {}", l.loan_number, l.new_due),
        Payload::LoanFrozen(l) => format!("loan L{} frozen ({})", l.loan_number, l.disaster_ref),
        Payload::LoanApprovalCancelled(l) => format!("loan L{} approval cancelled", l.loan_number),
        Payload::LoanUnfrozen(l) if l.new_due != l.previous_due => {
            format!("loan L{} unfrozen, due {}", l.loan_number, l.new_due)
        }
        Payload::LoanUnfrozen(l) => format!("loan L{} unfrozen", l.loan_number),
        Payload::LoanWrittenOff(l) => format!(
            "loan L{} written off ({}): principal {}",
            l.loan_number,
            l.disaster_ref,
            add_strs(&l.principal, &l.overdue_principal)
        ),
        Payload::PaymentRecorded(p) => format!(
            "{} {} {} {}",
            p.kind, p.instruction_id, p.gateway_id, p.amount
        )
        .trim_end()
        .to_string(),
        Payload::LedgerKeyRotated(k) => format!("ledger signing key is now {}", k.key_id),
        Payload::MessageExcluded(x) if x.message_count > 1 => format!(
            "{} messages at stream sequences {} through {} excluded: {}",
            x.message_count,
            x.stream_sequence,
            x.through_stream_sequence,
            x.reason.chars().take(80).collect::<String>()
        ),
        Payload::MessageExcluded(x) => format!(
            "message at stream sequence {} excluded: {}",
            x.stream_sequence,
            x.reason.chars().take(80).collect::<String>()
        ),
        Payload::LoanPostingReversed(l) => format!(
            "loan L{} reversed event #{}",
            l.loan_number, l.original_sequence
        ),
    }
}

fn add_strs(a: &str, b: &str) -> String {
    let a = a.parse::<Decimal>().unwrap_or_default();
    let b = b.parse::<Decimal>().unwrap_or_default();
    // Checked: a line is made of whatever an event holds, and projecting never panics.
    a.checked_add(b)
        .map_or_else(|| format!("{a} + {b}"), |sum| sum.to_string())
}

/// A loan's contribution to its commune's portfolio.
fn contribution(loan: &Loan) -> (bool, Decimal, Decimal) {
    let p = &loan.position;
    (
        p.status.is_open(),
        p.principal + p.overdue_principal,
        p.overdue_principal,
    )
}

fn adjust_portfolio(folio: &mut CommunePortfolio, loan: &Loan, sign: Decimal) {
    let (open, outstanding, overdue) = contribution(loan);
    let line = folio
        .by_programme
        .entry(loan.programme.id.clone())
        .or_default();
    if open {
        if sign.is_sign_positive() {
            folio.open_loans += 1;
            line.open_loans += 1;
        } else {
            folio.open_loans = folio.open_loans.saturating_sub(1);
            line.open_loans = line.open_loans.saturating_sub(1);
        }
    }
    folio.outstanding += sign * outstanding;
    folio.overdue += sign * overdue;
    line.outstanding += sign * outstanding;
    line.overdue += sign * overdue;
}

fn portfolio<V: Views>(v: &V, commune: &str) -> Result<CommunePortfolio, V::Error> {
    Ok(
        load(v, &commune_key(commune))?.unwrap_or_else(|| CommunePortfolio {
            commune: commune.to_owned(),
            ..CommunePortfolio::default()
        }),
    )
}

/// Folds the event at partition `sequence` into the views.
pub fn apply<V: Views>(
    v: &V,
    partition: &str,
    sequence: u64,
    at: EventAt,
    actor: &str,
    actor_record: Option<&crate::proto::Actor>,
    payload: Option<&Payload>,
) -> Result<(), V::Error> {
    let Some(payload) = payload else {
        return Ok(());
    };
    // Events the book cannot read change no view (the book skips them too).
    if let Ok(Some(change)) = codec::registry_change(payload) {
        apply_registry(v, partition, at, &change, payload)?;
    }
    if let Payload::PaymentRecorded(p) = payload {
        // An unreadable body changes no view, as it changes no book.
        let Ok(body) = crate::book::payments_codec::body_from_proto(&p.body) else {
            return Ok(());
        };
        // Nor does a record whose actor or date the book cannot read.
        let Ok((_, effective)) = crate::book::payments::event_header(actor_record, p) else {
            return Ok(());
        };
        apply_payment(v, partition, &body)?;
        apply_reconcile(v, partition, effective, &body)?;
        // The budget side's postings go into the partition's one trial balance, beside
        // the loans': every money event of the partition is checked there.
        return post_trial(v, partition, sequence, body.postings());
    }
    let Ok(events) = codec::loan_events(sequence, actor, payload) else {
        return Ok(());
    };
    for event in &events {
        apply_loan_event(v, partition, sequence, event)?;
    }
    Ok(())
}

/// Folds a registry change, at `at` in the log, into its household's record.
fn apply_registry<V: Views>(
    v: &V,
    partition: &str,
    at: EventAt,
    change: &Change,
    payload: &Payload,
) -> Result<(), V::Error> {
    let id = change.household();
    let key = household_key(id.as_str());
    let commune = id.commune().to_string();
    let existing: Option<HouseholdRecord> = load(v, &key)?;
    // The household's latest sealed data, when this event carries some.
    let sealed_here = match change {
        Change::Registered { sealed, .. }
        | Change::MembersChanged { sealed, .. }
        | Change::MemberDied { sealed, .. }
        | Change::MovedIn { sealed, .. }
            if !sealed.is_empty() =>
        {
            Some((at.stream_sequence, at.index))
        }
        _ => None,
    };
    match change {
        Change::Registered {
            area, members, on, ..
        }
        | Change::MovedIn {
            area, members, on, ..
        } => {
            if let Some(mut record) = existing {
                // Known already: only where its sealed data lie moves.
                if sealed_here.is_some() {
                    record.sealed_at = sealed_here;
                    store(v, &key, &record)?;
                }
                return Ok(());
            }
            let moved_from = match change {
                Change::MovedIn { from, .. } => Some(from.to_string()),
                _ => None,
            };
            let standing = match payload {
                Payload::HouseholdMovedIn(p) => p.standing.as_ref().map(standing_view),
                _ => None,
            };
            store(
                v,
                &key,
                &HouseholdRecord {
                    view: HouseholdView {
                        household_id: id.to_string(),
                        partition: partition.to_owned(),
                        commune: commune.clone(),
                        area: codec::area_name(*area).into(),
                        members: *members,
                        residence: "active".into(),
                        moved_to: None,
                        moved_from,
                        since: on.to_string(),
                        personal_data_erased: false,
                        standing,
                        loans: Vec::new(),
                    },
                    sealed_at: sealed_here,
                },
            )?;
            let mut folio = portfolio(v, &commune)?;
            folio.households_active += 1;
            store(v, &commune_key(&commune), &folio)?;
        }
        Change::MembersChanged { members, .. } | Change::MemberDied { members, .. } => {
            let Some(mut record) = existing else {
                return Ok(());
            };
            record.view.members = *members;
            if sealed_here.is_some() {
                record.sealed_at = sealed_here;
            }
            if *members == 0 {
                record.view.residence = "dissolved".into();
                let mut folio = portfolio(v, &commune)?;
                folio.households_active = folio.households_active.saturating_sub(1);
                store(v, &commune_key(&commune), &folio)?;
            }
            store(v, &key, &record)?;
        }
        Change::MovedOut { to, .. } => {
            let Some(mut record) = existing else {
                return Ok(());
            };
            record.view.residence = "moved_out".into();
            record.view.moved_to = Some(to.to_string());
            store(v, &key, &record)?;
            let mut folio = portfolio(v, &commune)?;
            folio.households_active = folio.households_active.saturating_sub(1);
            store(v, &commune_key(&commune), &folio)?;
        }
        Change::Erased { .. } => {
            let Some(mut record) = existing else {
                return Ok(());
            };
            record.view.personal_data_erased = true;
            store(v, &key, &record)?;
        }
    }
    Ok(())
}

/// Keeps what each household received per month and channel, as
/// `reconcile::household_view` folds it from the whole log: a settlement adds, a return
/// after settlement (a release) takes back, a return before settlement moved nothing.
fn apply_payment<V: Views>(v: &V, partition: &str, body: &PaymentBody) -> Result<(), V::Error> {
    match body {
        PaymentBody::InstructionIssued { instruction, .. } => {
            let gateway = instruction.channel.gateway().to_string();
            store(
                v,
                &instruction_key(partition, &instruction.id),
                &InstructionView {
                    household: instruction.beneficiary.household.to_string(),
                    month: instruction.id.month,
                    channel: instruction.channel.kind(),
                    amount: instruction.amount,
                    gateway: gateway.clone(),
                },
            )?;
            store(
                v,
                &gateway_pending_key(&gateway, partition, &instruction.id),
                &GatewayPendingView {
                    instruction: instruction.id,
                    beneficiary: instruction.beneficiary.to_string(),
                    amount: instruction.amount,
                    channel: instruction.channel.kind(),
                    commune: instruction.budget.commune.to_string(),
                    gateway: instruction.channel.gateway().to_string(),
                },
            )
        }
        PaymentBody::GatewayPostAccepted {
            post,
            instruction,
            status_after,
            budget,
        } => {
            let used = transaction_use_key(
                post.gateway.as_str(),
                post.outcome,
                post.gateway_txn.as_str(),
            );
            // The first acceptance stays: a second one (posts raced in two partitions)
            // is what `audit anomalies` reports.
            if load::<V, TransactionUse>(v, &used)?.is_none() {
                store(
                    v,
                    &used,
                    &TransactionUse {
                        partition: partition.to_owned(),
                        instruction: *instruction,
                    },
                )?;
            }
            let Some(i) = load::<V, InstructionView>(v, &instruction_key(partition, instruction))?
            else {
                return Ok(());
            };
            if *status_after != InstructionStatus::Instructed {
                v.delete(&gateway_pending_key(&i.gateway, partition, instruction))?;
            }
            let key = received_key(&i.household, i.month, i.channel);
            let mut r: Received = load(v, &key)?.unwrap_or_default();
            match (status_after, budget.kind) {
                (InstructionStatus::Settled, _) => {
                    r.settled.add(i.amount);
                    r.net += i.amount;
                }
                (InstructionStatus::Returned, MoveKind::Release) => {
                    r.returned.add(i.amount);
                    r.net -= i.amount;
                }
                _ => return Ok(()),
            }
            store(v, &key, &r)
        }
        PaymentBody::InstructionTimedOut { instruction, .. }
        | PaymentBody::InstructionCancelled { instruction, .. } => {
            match load::<V, InstructionView>(v, &instruction_key(partition, instruction))? {
                Some(i) => v.delete(&gateway_pending_key(&i.gateway, partition, instruction)),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

fn standing_view(d: &crate::proto::EligibilityDecided) -> StandingView {
    StandingView {
        class: d.class.clone(),
        status: d.status.clone(),
        valid_from: d.valid_from.clone(),
        valid_to: d.valid_to.clone(),
        escaped_until: d.escaped_until.clone(),
        standard_id: d.standard_id.clone(),
        review_year: d.review_year,
        decided_on: d.decided_on.clone(),
    }
}

fn apply_loan_event<V: Views>(
    v: &V,
    partition: &str,
    sequence: u64,
    event: &loans::Event,
) -> Result<(), V::Error> {
    match &event.body {
        EventBody::HouseholdClassified { decision, .. } => {
            let key = household_key(decision.household.as_str());
            let Some(mut record) = load::<V, HouseholdRecord>(v, &key)? else {
                return Ok(());
            };
            let escaped = match &event.body {
                EventBody::HouseholdClassified { escaped_until, .. } => {
                    escaped_until.map(|d| d.to_string()).unwrap_or_default()
                }
                _ => String::new(),
            };
            record.view.standing = Some(StandingView {
                class: codec::class_name(decision.class).into(),
                status: codec::status_name(decision.status).into(),
                valid_from: decision.valid_from.to_string(),
                valid_to: decision.valid_to.to_string(),
                escaped_until: escaped,
                standard_id: decision.standard_id.clone(),
                review_year: decision.inputs.review_year as u32,
                decided_on: decision.decision_date.to_string(),
            });
            store(v, &key, &record)?;
        }
        EventBody::LoanApproved {
            loan, household, ..
        } => {
            let mut scratch = LoanBook::default();
            loans::apply(&mut scratch, event);
            let record = scratch
                .loans
                .remove(loan)
                .expect("approval creates the loan");
            store(v, &loan_key(partition, *loan), &record)?;
            let key = household_key(household.as_str());
            if let Some(mut record) = load::<V, HouseholdRecord>(v, &key)? {
                record.view.loans.push(loan_ref(partition, *loan));
                store(v, &key, &record)?;
            }
            let commune = household.commune().to_string();
            let mut folio = portfolio(v, &commune)?;
            adjust_portfolio(&mut folio, &record, Decimal::ONE);
            store(v, &commune_key(&commune), &folio)?;
        }
        _ => {
            let Some(id) = event.loan() else {
                return Ok(());
            };
            let key = loan_key(partition, id);
            let Some(mut record) = load::<V, Loan>(v, &key)? else {
                return Ok(());
            };
            // Posted once the loan is known, as the book posts: an event of a loan never
            // approved here changes no trial balance. (Classifications and approvals
            // carry no postings.)
            post_trial(v, partition, sequence, event.postings())?;
            let commune = record.household.commune().to_string();
            let mut folio = portfolio(v, &commune)?;
            let (outstanding_before, overdue_before) = (folio.outstanding, folio.overdue);
            adjust_portfolio(&mut folio, &record, Decimal::NEGATIVE_ONE);
            if let EventBody::WrittenOff {
                principal,
                overdue_principal,
                ..
            } = &event.body
            {
                folio.written_off += principal + overdue_principal;
            }
            let disbursed_before = record.position.disbursed;
            loans::apply_loan(&mut record, event);
            adjust_portfolio(&mut folio, &record, Decimal::ONE);
            store(v, &commune_key(&commune), &folio)?;
            store(v, &key, &record)?;
            let disbursed = record.position.disbursed - disbursed_before;
            let collected = match &event.body {
                EventBody::RepaymentReceived { amount, .. } => *amount,
                // A reversed repayment takes back the cash it brought in (a reversed
                // tranche changes `disbursed` instead).
                EventBody::Reversed { postings, .. } if disbursed.is_zero() => postings
                    .iter()
                    .filter(|p| p.account == Account::CashAtCommunePoint)
                    .map(|p| p.debit - p.credit)
                    .sum(),
                _ => Decimal::ZERO,
            };
            let month_key =
                commune_month_key(&commune, &event.effective.format("%Y-%m").to_string());
            let mut month =
                load::<V, CommuneMonth>(v, &month_key)?.unwrap_or_else(|| CommuneMonth {
                    month: event.effective.format("%Y-%m").to_string(),
                    ..CommuneMonth::default()
                });
            month.disbursed += disbursed;
            month.collected += collected;
            month.outstanding_change += folio.outstanding - outstanding_before;
            month.overdue_change += folio.overdue - overdue_before;
            store(v, &month_key, &month)?;
        }
    }
    Ok(())
}

fn post_trial<V: Views, A: Serialize>(
    v: &V,
    partition: &str,
    sequence: u64,
    postings: &[Posting<A>],
) -> Result<(), V::Error> {
    if postings.is_empty() {
        return Ok(());
    }
    let key = trial_key(partition);
    let mut tb: TrialBalanceView = load(v, &key)?.unwrap_or_else(|| TrialBalanceView {
        partition: partition.to_owned(),
        ..TrialBalanceView::default()
    });
    let (mut debits, mut credits) = (Decimal::ZERO, Decimal::ZERO);
    for p in postings {
        let line = tb.accounts.entry(codec::name(&p.account)).or_default();
        line.0 += p.debit;
        line.1 += p.credit;
        debits += p.debit;
        credits += p.credit;
    }
    tb.total_debits += debits;
    tb.total_credits += credits;
    tb.events_checked += 1;
    if debits != credits && tb.first_unbalanced_sequence.is_none() {
        tb.first_unbalanced_sequence = Some(sequence);
    }
    store(v, &key, &tb)
}

/// A household's loans as shown to staff, priced on `as_of`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoanLine {
    pub loan: String,
    pub programme: String,
    pub status: String,
    pub approved: Decimal,
    pub disbursed: Decimal,
    pub principal_outstanding: Decimal,
    pub overdue_principal: Decimal,
    /// Interest owed if settled on `as_of` (posted plus accrued since), whole VND.
    pub interest_to_date: Decimal,
    pub overdue_interest_to_date: Decimal,
    /// The date the interest above is counted to: `as_of`, or the date interest was last
    /// posted to if that is later (a position is current: interest already posted past
    /// `as_of` is owed, and is not taken back to price an earlier day). None before
    /// anything is disbursed.
    pub interest_counted_to: Option<NaiveDate>,
    pub due: Option<NaiveDate>,
}

pub fn loan_line(partition: &str, loan: &Loan, as_of: NaiveDate) -> LoanLine {
    let (interest, overdue_interest) = loans::interest_owed_on(loan, as_of).unwrap_or((
        loan.position.interest_receivable,
        loan.position.overdue_interest_receivable,
    ));
    LoanLine {
        loan: loan_ref(partition, loan.id),
        programme: loan.programme.id.clone(),
        status: codec::name(&loan.position.status),
        approved: loan.approved_amount,
        disbursed: loan.position.disbursed,
        principal_outstanding: loan.position.outstanding_principal(),
        overdue_principal: loan.position.overdue_principal,
        interest_to_date: interest,
        overdue_interest_to_date: overdue_interest,
        interest_counted_to: loan.position.accrued_to.map(|to| to.max(as_of)),
        due: loan.position.due,
    }
}

/// Open loans: used by `loans mark-overdue` to know which loans to visit.
pub fn is_active(loan: &Loan) -> bool {
    loan.position.status == LoanStatus::Active
}

/// Household id of a view key, for listing.
pub fn parse_household_key(key: &[u8]) -> Option<HouseholdId> {
    let s = std::str::from_utf8(key).ok()?;
    HouseholdId::parse(s.strip_prefix("hh/")?).ok()
}

/// Every account of the chart, so a trial balance lists zero lines too.
pub const ACCOUNTS: [Account; 9] = [
    Account::LoanReceivable,
    Account::OverdueLoanReceivable,
    Account::InterestReceivable,
    Account::OverdueInterestReceivable,
    Account::CashAtCommunePoint,
    Account::FundingSource,
    Account::InterestIncome,
    Account::OverdueInterestIncome,
    Account::WriteOffReserve,
];

/// The budget side's accounts (`domain::payments::ledger`), after the loans' in the
/// partition's trial balance.
pub const PAYMENTS_ACCOUNTS: [crate::domain::payments::ledger::Account; 4] = [
    crate::domain::payments::ledger::Account::Appropriation,
    crate::domain::payments::ledger::Account::BudgetAvailable,
    crate::domain::payments::ledger::Account::BudgetReserved,
    crate::domain::payments::ledger::Account::PaidToBeneficiaries,
];

/// Every account of a partition's trial balance by name, in chart order: the loans',
/// then the budget side's.
pub fn chart() -> Vec<String> {
    ACCOUNTS
        .iter()
        .map(codec::name)
        .chain(PAYMENTS_ACCOUNTS.iter().map(codec::name))
        .collect()
}

#[cfg(test)]
mod detail_tests {
    use super::*;
    use crate::proto;

    /// A line's interest is all the interest: a payment that went to overdue interest
    /// only must not read as paying nothing.
    #[test]
    fn a_trail_line_counts_overdue_interest_in_the_interest() {
        let repaid = Payload::LoanRepaymentReceived(proto::LoanRepaymentReceived {
            loan_number: 1,
            amount: "1000000".into(),
            to_interest: "0".into(),
            to_overdue_interest: "1000000".into(),
            to_overdue_principal: "0".into(),
            to_principal: "0".into(),
            ..Default::default()
        });
        assert_eq!(
            detail(Some(&repaid)),
            "loan L1 repaid 1000000 (interest 1000000, principal 0)"
        );
        let accrued = Payload::LoanInterestAccrued(proto::LoanInterestAccrued {
            loan_number: 1,
            interest_posted: "55000".into(),
            overdue_interest_posted: "14300".into(),
            to: "2025-04-14".into(),
            ..Default::default()
        });
        assert_eq!(
            detail(Some(&accrued)),
            "loan L1 interest 69300 to 2025-04-14"
        );
    }
}

#[cfg(test)]
mod trial_tests {
    use std::cell::RefCell;

    use super::*;
    use crate::book::PartitionBook;
    use crate::proto;

    /// The views of one batch, in memory.
    #[derive(Default)]
    struct Memory(RefCell<BTreeMap<String, Vec<u8>>>);

    impl Views for Memory {
        type Error = String;
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.borrow().get(key).cloned())
        }
        fn put(&self, key: &str, value: Vec<u8>) -> Result<(), String> {
            self.0.borrow_mut().insert(key.to_owned(), value);
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<(), String> {
            self.0.borrow_mut().remove(key);
            Ok(())
        }
        fn corrupt(&self, what: String) -> String {
            what
        }
    }

    /// Only a forgery that chains could record it; the book leaves it out, and the
    /// projected trial balance must agree with the book's.
    #[test]
    fn an_event_of_a_loan_never_approved_here_changes_neither_trial_balance() {
        let posting = |account: Account, debit: &str, credit: &str| proto::Posting {
            account: codec::name(&account),
            debit: debit.into(),
            credit: credit.into(),
        };
        let repaid = Payload::LoanRepaymentReceived(proto::LoanRepaymentReceived {
            loan_number: 99,
            amount: "1000000".into(),
            to_interest: "0".into(),
            to_overdue_interest: "0".into(),
            to_overdue_principal: "0".into(),
            to_principal: "1000000".into(),
            status_after: "Active".into(),
            postings: vec![
                posting(Account::CashAtCommunePoint, "1000000", "0"),
                posting(Account::LoanReceivable, "0", "1000000"),
            ],
            effective_on: "2026-03-20".into(),
            reason: "forged".into(),
            ..Default::default()
        });
        let mut book = PartitionBook::new("01");
        book.apply(1, None, Some(&repaid));
        assert_eq!(
            (book.unreadable, book.trial.accounts.len()),
            (1, 0),
            "the book leaves it out"
        );
        let views = Memory::default();
        let at = EventAt {
            stream_sequence: 1,
            index: 0,
        };
        apply(&views, "01", 1, at, "staff:x", None, Some(&repaid)).unwrap();
        assert_eq!(
            load::<_, TrialBalanceView>(&views, &trial_key("01")).unwrap(),
            None
        );
    }

    /// The budget side's money is in the partition's served trial balance, line for
    /// line as the book holds it, and every such event is counted as checked.
    #[test]
    fn a_budget_allocation_is_in_the_trial_balance_as_the_book_holds_it() {
        use crate::domain::payments::budget::BudgetKey;
        use crate::domain::payments::ids::{CommuneId, ProgrammeId};
        use crate::domain::payments::month::Month;
        let officer = proto::Actor {
            id: "staff:m".into(),
            role: "branch_manager".into(),
            unit: "01".into(),
        };
        let mut book = PartitionBook::new("01");
        let allocate = crate::book::Command::Payment {
            kind: crate::domain::payments::CommandKind::Allocate {
                budget: BudgetKey {
                    programme: ProgrammeId::parse("SOCIAL_ASSISTANCE_MONTHLY").unwrap(),
                    commune: CommuneId::parse("0100007").unwrap(),
                    period: Month::parse("2026-10").unwrap(),
                },
                amount: Decimal::from(2_000_000),
            },
            effective: "2026-10-01".parse().unwrap(),
            signed: None,
            outside_replay_window: None,
            used_elsewhere: None,
        };
        let proposals = book.decide(&allocate, &officer).unwrap();
        let views = Memory::default();
        for (n, p) in proposals.iter().enumerate() {
            let sequence = n as u64 + 1;
            book.apply(sequence, Some(&officer), Some(&p.payload));
            let at = EventAt {
                stream_sequence: sequence,
                index: 0,
            };
            apply(
                &views,
                "01",
                sequence,
                at,
                &officer.id,
                Some(&officer),
                Some(&p.payload),
            )
            .unwrap();
        }
        let tb: TrialBalanceView = load(&views, &trial_key("01"))
            .unwrap()
            .expect("a trial balance");
        let held: BTreeMap<String, (Decimal, Decimal)> = book
            .payments_trial
            .accounts
            .iter()
            .map(|(a, lines)| (codec::name(a), *lines))
            .collect();
        assert_eq!(tb.accounts, held);
        assert_eq!(
            tb.accounts["Appropriation"],
            (Decimal::ZERO, Decimal::from(2_000_000))
        );
        assert_eq!(
            (
                tb.events_checked,
                tb.total_debits,
                tb.first_unbalanced_sequence
            ),
            (1, Decimal::from(2_000_000), None)
        );
        assert!(chart().contains(&"PaidToBeneficiaries".to_string()));
    }
}

#[cfg(test)]
mod gateway_pending_tests {
    use super::*;

    #[test]
    fn one_gateways_prefix_never_covers_anothers_keys() {
        let id = InstructionId::parse("pay:7:2026-12:1").unwrap();
        let other = gateway_pending_key("vcb/2", "01", &id);
        assert!(!other.starts_with(&gateway_pending_prefix("vcb")));
        assert!(gateway_pending_key("vcb", "01", &id).starts_with(&gateway_pending_prefix("vcb")));
        // Entitlements sort by number, not by their digits as text.
        let nine = InstructionId::parse("pay:9:2026-12:1").unwrap();
        let ten = InstructionId::parse("pay:10:2026-12:1").unwrap();
        assert!(gateway_pending_key("vcb", "01", &nine) < gateway_pending_key("vcb", "01", &ten));
    }
}

#[cfg(test)]
mod layout_tests {
    use serde::de::{self, Deserializer, Visitor};

    use super::*;
    use crate::domain::ledger::Posting;
    use crate::domain::loans::{LoanPosition, Reversible};
    use crate::domain::payments::reconcile::{Mismatch, Tally};
    use crate::domain::programmes::ProgrammeRef;
    use crate::projection::PartitionSummary;

    /// A deserializer that only notes the struct it is asked for: its name and its
    /// fields in declared order, as serde's derive hands them over.
    struct Fields<'a>(&'a mut String);

    impl<'de> Deserializer<'de> for Fields<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = format!("{name}({})", fields.join(","));
            Err(de::Error::custom("noted"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    fn layout<T: serde::de::DeserializeOwned>() -> String {
        let mut noted = String::new();
        let _ = T::deserialize(Fields(&mut noted));
        noted
    }

    /// Records are stored without field names (`encode_record`): a field added, removed
    /// or moved in a stored type would read old records wrongly (two amounts swapped) or
    /// as corrupt. Every struct the projections store, and every struct inside one, is
    /// listed here with its fields in order, and their digest is pinned with the
    /// projections' format: when this fails, bump `PROJECTION_FORMAT` (the projections
    /// are then rebuilt on upgrade) and put the new digest here.
    #[test]
    fn the_stored_records_layout_goes_with_the_projection_format() {
        let layouts = [
            layout::<HouseholdRecord>(),
            layout::<HouseholdView>(),
            layout::<StandingView>(),
            layout::<Loan>(),
            layout::<LoanPosition>(),
            layout::<Reversible>(),
            layout::<Posting>(),
            layout::<ProgrammeRef>(),
            layout::<CommunePortfolio>(),
            layout::<ProgrammeLine>(),
            layout::<CommuneMonth>(),
            layout::<TrialBalanceView>(),
            layout::<InstructionView>(),
            layout::<Received>(),
            layout::<Tally>(),
            layout::<Seen>(),
            layout::<GatewayDay>(),
            layout::<Mismatch>(),
            layout::<PendingLine>(),
            layout::<GatewayPendingView>(),
            layout::<TransactionUse>(),
            layout::<ReconcileProgress>(),
            layout::<PartitionSummary>(),
        ];
        assert!(layouts.iter().all(|l| l.contains('(')), "{layouts:?}");
        let layouts = layouts.join("\n");
        let digest = blake3::hash(layouts.as_bytes()).to_hex();
        assert_eq!(
            (crate::projection::PROJECTION_FORMAT, &digest[..16]),
            (&[24u8][..], "f38907fe7bc0988c"),
            "{layouts}"
        );
    }
}
