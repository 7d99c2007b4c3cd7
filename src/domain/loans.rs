//! Loan lifecycle as `decide(&LoanBook, Command) -> Result<Vec<Event>, Rejection>`
//! and `apply(&mut LoanBook, &Event)`.
//!
//! `decide` holds every rule and does all (checked) arithmetic; `apply` only
//! copies decided values into state, so it cannot fail and rebuilding a book
//! from its events gives the same book.
//!
//! Interest: principal × monthly rate × actual days / 30, overdue principal at
//! the overdue rate (130 %). Each accrual posts whole đồng, half-up (never a
//! negative amount: `round_dong`), and keeps the unrounded remainder (`carry_*`)
//! in the loan so nothing leaks over many postings. Accrual runs implicitly
//! before every command that changes principal or status, so balances are always
//! priced up to the effective date.

use std::collections::BTreeMap;

use chrono::{Months, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::Rejection;
use crate::domain::eligibility::{
    self, Class, ClassificationDecided, ClassificationInputs, Status,
};
use crate::domain::ids::HouseholdId;
use crate::domain::ledger::{Account, Posting};
use crate::domain::money::{self, positive_vnd, round_dong};
use crate::domain::programmes::{self, DayCount, ProgrammeRef};

pub type LoanId = u64;
pub type EventId = u64;

/// At most this many extensions per loan.
pub const MAX_EXTENSIONS: u32 = 1;
/// A short-term loan (a term of at most this many months) may be extended by at
/// most `SHORT_TERM_EXTENSION_MONTHS`; a medium- or long-term loan by at most half its
/// term (whole months, rounded down). The social-policy bank's rule for extending a
/// debt ("gia hạn nợ"), counted from the original due date.
pub const SHORT_TERM_MONTHS_MAX: u32 = 12;
/// See [`SHORT_TERM_MONTHS_MAX`].
pub const SHORT_TERM_EXTENSION_MONTHS: u32 = 12;

/// The most months an extension may push a loan of `term_months` past its original
/// due date.
pub fn extension_months_max(term_months: u32) -> u32 {
    if term_months <= SHORT_TERM_MONTHS_MAX {
        SHORT_TERM_EXTENSION_MONTHS
    } else {
        term_months / 2
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntrustedOrganisation {
    WomensUnion,
    FarmersUnion,
    VeteransAssociation,
    YouthUnion,
}

/// How a tranche reaches the borrower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Channel {
    /// Cash paid out at the commune transaction point.
    CommuneTransactionPoint,
    /// Transfer straight from the funding account.
    BankTransfer,
}

impl Channel {
    fn account(self) -> Account {
        match self {
            Channel::CommuneTransactionPoint => Account::CashAtCommunePoint,
            Channel::BankTransfer => Account::FundingSource,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LoanStatus {
    /// Approved, nothing disbursed yet.
    Approved,
    /// Disbursed and running (accrues interest).
    Active,
    /// Frozen after a disaster decision: no interest accrues, nothing moves overdue.
    Frozen,
    /// Everything owed was repaid; any undisbursed approval lapses.
    Closed,
    /// Risk debt written off.
    WrittenOff,
    /// The approval was cancelled before any money went out (a mistaken approval): the
    /// loan holds nothing and no longer counts as the household's loan of its programme.
    Cancelled,
}

impl LoanStatus {
    /// Counts against "one active loan per programme".
    pub fn is_open(self) -> bool {
        matches!(
            self,
            LoanStatus::Approved | LoanStatus::Active | LoanStatus::Frozen
        )
    }
}

/// Household standing as known to the book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HouseholdStanding {
    pub class: Class,
    pub status: Status,
    pub valid_from: NaiveDate,
    pub valid_to: NaiveDate,
    /// Last day of an escaped-poverty window still running, kept across later
    /// above-the-line reviews and cleared by a Poor/NearPoor decision.
    pub escaped_until: Option<NaiveDate>,
    pub decision_event: EventId,
    /// The review year of the latest decision: a correction of it is for the same year.
    pub review_year: i32,
    /// What the household held before its latest decision, which a correction of that
    /// decision decides with. None when no decision of this partition gave the standing
    /// (a move carried it in: what came before it lies in the partition the household
    /// left) or when it is not known (`codec::standing_from_proto`).
    pub before: Option<StandingBefore>,
}

/// What a household held before a decision: a correction takes that decision's place, so
/// a decision recorded by mistake leaves no trace on the standing (no escaped-poverty
/// window opened from a mistaken Poor, and none wiped by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandingBefore {
    /// The decision's prior class (the class of the one before it).
    pub prior_class: Option<Class>,
    /// The escaped-poverty window running before it.
    pub escaped_until: Option<NaiveDate>,
}

impl HouseholdStanding {
    /// Statuses the household holds on `date`, or the expiry refusal.
    pub fn statuses_on(&self, date: NaiveDate) -> Result<Vec<Status>, Rejection> {
        let mut out = Vec::new();
        if self.valid_from <= date && date <= self.valid_to {
            out.push(self.status);
        }
        if let Some(until) = self.escaped_until {
            if self.valid_from <= date && date <= until && self.status != Status::EscapedPoverty {
                out.push(Status::EscapedPoverty);
            }
        }
        if out.is_empty() {
            return Err(Rejection::ClassificationExpired {
                valid_to: self
                    .escaped_until
                    .map_or(self.valid_to, |e| e.max(self.valid_to)),
            });
        }
        Ok(out)
    }
}

/// Everything about a loan that changes after approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoanPosition {
    pub status: LoanStatus,
    pub disbursed: Decimal,
    /// Current (not overdue) principal outstanding.
    pub principal: Decimal,
    pub overdue_principal: Decimal,
    pub interest_receivable: Decimal,
    pub overdue_interest_receivable: Decimal,
    /// Unposted fraction of a đồng of normal interest (|carry| <= 0.5).
    pub carry_interest: Decimal,
    /// Unposted fraction of a đồng of overdue interest (|carry| <= 0.5).
    pub carry_overdue_interest: Decimal,
    /// Principal repaid so far (current and overdue), for the schedule.
    pub principal_repaid: Decimal,
    /// Interest is accrued up to (not including) this date.
    pub accrued_to: Option<NaiveDate>,
    /// Schedule start = first disbursement date.
    pub schedule_start: Option<NaiveDate>,
    /// Current due date (moved by an extension).
    pub due: Option<NaiveDate>,
    pub original_due: Option<NaiveDate>,
    pub extensions: u32,
    pub last_event_on: NaiveDate,
}

impl LoanPosition {
    pub fn outstanding_principal(&self) -> Decimal {
        self.principal + self.overdue_principal
    }
    /// Everything a borrower must pay to settle, as posted (carries excluded).
    pub fn owed(&self) -> Decimal {
        self.principal
            + self.overdue_principal
            + self.interest_receivable
            + self.overdue_interest_receivable
    }
}

/// The last event of a loan, if it may be reversed, and what it replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reversible {
    pub event: EventId,
    pub before: LoanPosition,
    pub postings: Vec<Posting>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loan {
    pub id: LoanId,
    pub household: HouseholdId,
    pub programme: ProgrammeRef,
    pub monthly_rate: Decimal,
    pub overdue_monthly_rate: Decimal,
    pub day_count: DayCount,
    pub approved_amount: Decimal,
    pub term_months: u32,
    pub savings_group: String,
    pub entrusted: EntrustedOrganisation,
    pub approved_on: NaiveDate,
    pub position: LoanPosition,
    pub last_event: EventId,
    pub reversible: Option<Reversible>,
    /// The tranches paid out and not reversed, oldest first: each is repaid over the
    /// months from its own date to the loan's due date (`scheduled_due_before`).
    pub tranches: Vec<Tranche>,
    /// The date the loan was frozen, while it is (the bound of `Unfreeze`'s new due date).
    pub frozen_on: Option<NaiveDate>,
    /// What moved the instalments of tranches already paid out, oldest first, as the
    /// events recorded it: the schedule is derived from these and the tranches alone, so a
    /// replay counts the same instalments.
    pub schedule_changes: Vec<ScheduleChange>,
}

/// A recorded change of a loan's instalments, applying to the tranches paid out before
/// the event that made it (`event`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScheduleChange {
    /// A freeze ended (`Unfrozen`) with the due date moved on from `previous_due` to
    /// `new_due`. The schedule stood still while the loan was frozen: every instalment not
    /// yet due on `frozen_on` (the day the loan was frozen; one due that day included)
    /// moves on by the days the due date moved, so a freeze of the full length moves
    /// them by the days frozen, an unfreeze with no new due date by none.
    Suspended {
        event: EventId,
        frozen_on: NaiveDate,
        /// The day the freeze ended: no interest was priced from `frozen_on` to then.
        unfrozen_on: NaiveDate,
        previous_due: NaiveDate,
        new_due: NaiveDate,
    },
    /// An extension (`Extended`) decided on `on` moved the due date from `previous_due`
    /// to `new_due`. What fell due before `on` was owed when the extension was decided
    /// and stands, dates and amounts; the rest of the tranche is spread anew over its
    /// instalments from `on` to the new due date.
    Extended {
        event: EventId,
        on: NaiveDate,
        previous_due: NaiveDate,
        new_due: NaiveDate,
    },
}

impl ScheduleChange {
    fn event(&self) -> EventId {
        match self {
            ScheduleChange::Suspended { event, .. } | ScheduleChange::Extended { event, .. } => {
                *event
            }
        }
    }
}

/// One tranche of a loan: the event that paid it out, its date and amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tranche {
    pub event: EventId,
    pub on: NaiveDate,
    pub amount: Decimal,
}

/// The state `decide` reads and `apply` writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoanBook {
    pub households: BTreeMap<HouseholdId, HouseholdStanding>,
    pub loans: BTreeMap<LoanId, Loan>,
    /// Disbursement/repayment events not yet reversed, by loan.
    pub reversible_events: BTreeMap<EventId, LoanId>,
    /// Id of the last event applied (0 = none); ids are consecutive from 1.
    pub last_event_id: EventId,
    pub last_loan_id: LoanId,
}

// ---------------------------------------------------------------- commands

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Officer (or commune committee) responsible; recorded on every event.
    pub actor: String,
    pub reason: String,
    /// Business date of the command; for `MarkOverdue` it is the "as of" date.
    pub effective: NaiveDate,
    pub kind: CommandKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandKind {
    /// Record a commune classification decision (the actor is `decided_by`). With
    /// `corrects`, it corrects the household's latest decision (recorded by mistake) for
    /// the same review year, and is decided with what the household held before that one.
    Classify {
        household: HouseholdId,
        inputs: ClassificationInputs,
        corrects: Option<EventId>,
    },
    Approve {
        household: HouseholdId,
        programme: String,
        amount: Decimal,
        term_months: u32,
        savings_group: String,
        entrusted: EntrustedOrganisation,
    },
    Disburse {
        loan: LoanId,
        amount: Decimal,
        channel: Channel,
    },
    /// Allocation: interest, then overdue interest, then principal
    /// (overdue principal before current principal).
    Repay {
        loan: LoanId,
        amount: Decimal,
    },
    /// Post accrued interest up to `effective` (e.g. month end).
    AccrueInterest {
        loan: LoanId,
    },
    /// Move to overdue the arrears of the earliest instalment due before `effective` and
    /// not yet paid or moved, as from the day after it fell due (interest to then at the
    /// normal rate, from then on at the overdue rate). A job that runs late moves one
    /// instalment a command: it repeats the command until nothing more moves.
    MarkOverdue {
        loan: LoanId,
    },
    /// Move the due date of `loan` to `new_due`. What fell due before this date stands;
    /// the rest of each tranche is spread over its instalments to the new due date
    /// (`ScheduleChange::Extended`).
    Extend {
        loan: LoanId,
        new_due: NaiveDate,
    },
    Freeze {
        loan: LoanId,
        disaster_ref: String,
    },
    WriteOff {
        loan: LoanId,
        disaster_ref: String,
    },
    /// Cancel the approval of `loan`, which has nothing disbursed (an approval made by
    /// mistake, or one the household no longer takes up). An approval is never reversed:
    /// it carries no money, and the cancellation says why it no longer counts.
    CancelApproval {
        loan: LoanId,
    },
    /// Reverse a mistaken disbursement or repayment of `loan` (must be its latest
    /// event). The loan is named as well as the event, so a mistyped event can never
    /// reverse another loan's money.
    Reverse {
        loan: LoanId,
        event: EventId,
    },
    /// End the freeze of `loan` (the period the disaster decision granted is over, or it
    /// was frozen by mistake): interest accrues again from this date, never for the days
    /// frozen. `new_due` moves the due date on by at most the days the loan was frozen,
    /// and every instalment not yet due when the loan was frozen with it, by as many days
    /// (`ScheduleChange::Suspended`): moved by the full days frozen, an instalment that
    /// fell due during the freeze is due as many days after the freeze ended as it was
    /// due after the freeze began, so it is not overdue at once.
    Unfreeze {
        loan: LoanId,
        new_due: Option<NaiveDate>,
    },
}

// ---------------------------------------------------------------- events

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub actor: String,
    pub reason: String,
    pub effective: NaiveDate,
    pub body: EventBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventBody {
    HouseholdClassified {
        decision: ClassificationDecided,
        /// The escaped-poverty window after this decision.
        escaped_until: Option<NaiveDate>,
        /// The standing a move carried in, decided in the partition the household left:
        /// no decision of this book, so none a correction here can name.
        carried_by_move: bool,
    },
    LoanApproved {
        loan: LoanId,
        household: HouseholdId,
        programme: ProgrammeRef,
        monthly_rate: Decimal,
        overdue_monthly_rate: Decimal,
        day_count: DayCount,
        amount: Decimal,
        term_months: u32,
        savings_group: String,
        entrusted: EntrustedOrganisation,
    },
    InterestAccrued {
        loan: LoanId,
        from: NaiveDate,
        to: NaiveDate,
        days: i64,
        /// Unrounded interest of this period (for audit).
        interest_exact: Decimal,
        overdue_interest_exact: Decimal,
        interest_posted: Decimal,
        overdue_interest_posted: Decimal,
        carry_interest_after: Decimal,
        carry_overdue_interest_after: Decimal,
        postings: Vec<Posting>,
    },
    TrancheDisbursed {
        loan: LoanId,
        amount: Decimal,
        channel: Channel,
        schedule_start: NaiveDate,
        due: NaiveDate,
        postings: Vec<Posting>,
    },
    RepaymentReceived {
        loan: LoanId,
        amount: Decimal,
        to_interest: Decimal,
        to_overdue_interest: Decimal,
        to_overdue_principal: Decimal,
        to_principal: Decimal,
        status_after: LoanStatus,
        postings: Vec<Posting>,
    },
    MovedToOverdue {
        loan: LoanId,
        /// Scheduled principal due before `effective`, cumulative.
        scheduled_due: Decimal,
        amount: Decimal,
        /// Unrounded overdue interest for the days interest had already been priced at
        /// the normal rate on `amount` after it fell due: the overdue rate's excess over
        /// the normal rate (`overdue_surcharge`). Zero when none, as in every event
        /// recorded before the field.
        surcharge_exact: Decimal,
        /// What of it is posted, whole đồng with the overdue interest's carry.
        surcharge_posted: Decimal,
        postings: Vec<Posting>,
    },
    Extended {
        loan: LoanId,
        previous_due: NaiveDate,
        new_due: NaiveDate,
    },
    Frozen {
        loan: LoanId,
        disaster_ref: String,
    },
    WrittenOff {
        loan: LoanId,
        disaster_ref: String,
        principal: Decimal,
        overdue_principal: Decimal,
        interest: Decimal,
        overdue_interest: Decimal,
        postings: Vec<Posting>,
    },
    Reversed {
        original: EventId,
        loan: LoanId,
        /// Loan position restored (the one before the original event).
        restored: LoanPosition,
        postings: Vec<Posting>,
    },
    // Last, so variants stored by position keep their places.
    ApprovalCancelled {
        loan: LoanId,
    },
    /// The freeze ended: the loan is Active again, interest accrues from this event's
    /// date, and the due date is `new_due` (the same as `previous_due` if not moved).
    Unfrozen {
        loan: LoanId,
        previous_due: NaiveDate,
        new_due: NaiveDate,
    },
}

impl Event {
    /// Double-entry lines of this event (empty for non-money events).
    pub fn postings(&self) -> &[Posting] {
        match &self.body {
            EventBody::InterestAccrued { postings, .. }
            | EventBody::TrancheDisbursed { postings, .. }
            | EventBody::RepaymentReceived { postings, .. }
            | EventBody::MovedToOverdue { postings, .. }
            | EventBody::WrittenOff { postings, .. }
            | EventBody::Reversed { postings, .. } => postings,
            _ => &[],
        }
    }
    pub fn loan(&self) -> Option<LoanId> {
        match &self.body {
            EventBody::HouseholdClassified { .. } => None,
            EventBody::LoanApproved { loan, .. }
            | EventBody::InterestAccrued { loan, .. }
            | EventBody::TrancheDisbursed { loan, .. }
            | EventBody::RepaymentReceived { loan, .. }
            | EventBody::MovedToOverdue { loan, .. }
            | EventBody::Extended { loan, .. }
            | EventBody::Frozen { loan, .. }
            | EventBody::WrittenOff { loan, .. }
            | EventBody::ApprovalCancelled { loan }
            | EventBody::Unfrozen { loan, .. }
            | EventBody::Reversed { loan, .. } => Some(*loan),
        }
    }
}

// ---------------------------------------------------------------- decide

/// Collects event bodies and stamps them with consecutive ids and the
/// command's envelope.
struct Out<'a> {
    cmd: &'a Command,
    next_id: EventId,
    events: Vec<Event>,
}

impl Out<'_> {
    fn push(&mut self, body: EventBody) -> &Event {
        self.next_id += 1;
        self.events.push(Event {
            id: self.next_id,
            actor: self.cmd.actor.clone(),
            reason: self.cmd.reason.clone(),
            effective: self.cmd.effective,
            body,
        });
        self.events.last().expect("just pushed")
    }
}

fn pair(debit: Account, credit: Account, amount: Decimal, out: &mut Vec<Posting>) {
    if !amount.is_zero() {
        out.push(Posting::debit(debit, amount));
        out.push(Posting::credit(credit, amount));
    }
}

/// Accrual of `loan` up to `to`, or None if nothing accrues (not running,
/// or already accrued to that date).
fn accrual(loan: &Loan, to: NaiveDate) -> Result<Option<EventBody>, Rejection> {
    let p = &loan.position;
    let from = match (p.status, p.accrued_to) {
        (LoanStatus::Active, Some(from)) if to > from => from,
        _ => return Ok(None),
    };
    let days = (to - from).num_days();
    let days_dec = Decimal::from(days);
    let per_month = loan.day_count.days_per_month();
    // Multiply before dividing so the only inexact step is the final division.
    let exact = |principal: Decimal, rate: Decimal| -> Result<Decimal, Rejection> {
        Ok(money::div(
            money::mul(money::mul(principal, rate)?, days_dec)?,
            per_month,
        )?)
    };
    let interest_exact = exact(p.principal, loan.monthly_rate)?;
    let overdue_exact = exact(p.overdue_principal, loan.overdue_monthly_rate)?;
    let carry_i = money::add(p.carry_interest, interest_exact)?;
    let carry_o = money::add(p.carry_overdue_interest, overdue_exact)?;
    // Whole đồng at posting, half-up (round_dong); the remainder stays carried.
    let posted_i = round_dong(carry_i);
    let posted_o = round_dong(carry_o);
    let mut postings = Vec::new();
    pair(
        Account::InterestReceivable,
        Account::InterestIncome,
        posted_i,
        &mut postings,
    );
    pair(
        Account::OverdueInterestReceivable,
        Account::OverdueInterestIncome,
        posted_o,
        &mut postings,
    );
    Ok(Some(EventBody::InterestAccrued {
        loan: loan.id,
        from,
        to,
        days,
        interest_exact,
        overdue_interest_exact: overdue_exact,
        interest_posted: posted_i,
        overdue_interest_posted: posted_o,
        carry_interest_after: money::sub(carry_i, posted_i)?,
        carry_overdue_interest_after: money::sub(carry_o, posted_o)?,
        postings,
    }))
}

/// The earliest instalment date before `as_of` whose cumulative principal is neither
/// repaid nor already overdue; None when every instalment due before `as_of` is paid or
/// moved.
fn first_arrears(loan: &Loan, as_of: NaiveDate) -> Result<Option<NaiveDate>, Rejection> {
    let p = &loan.position;
    let covered = money::add(p.principal_repaid, p.overdue_principal)?;
    for (on, _, cumulative) in loan.schedule()? {
        if on >= as_of {
            break;
        }
        if cumulative > covered {
            return Ok(Some(on));
        }
    }
    Ok(None)
}

/// The overdue rate's excess over the normal rate, unrounded, on `amount` (the principal
/// about to move to overdue, `loan` standing before the move) for the days from the day
/// after each of its instalments fell due to `moves_on` on which interest was already
/// priced at the normal rate: every such day but those the loan was frozen. `amount` is
/// the unpaid part of the earliest instalments, as `first_arrears` counts.
fn overdue_surcharge(
    loan: &Loan,
    moves_on: NaiveDate,
    amount: Decimal,
) -> Result<Decimal, Rejection> {
    let p = &loan.position;
    let covered = money::add(p.principal_repaid, p.overdue_principal)?;
    let moved_to = money::add(covered, amount)?;
    let mut principal_days = Decimal::ZERO;
    let mut before = Decimal::ZERO;
    for (on, _, cumulative) in loan.schedule()? {
        if on >= moves_on {
            break;
        }
        let part = cumulative.min(moved_to) - before.max(covered);
        before = cumulative;
        if part <= Decimal::ZERO {
            continue;
        }
        let overdue_from = on.succ_opt().ok_or(Rejection::ArithmeticOverflow)?;
        let mut days = (moves_on - overdue_from).num_days().max(0);
        for change in &loan.schedule_changes {
            if let ScheduleChange::Suspended {
                frozen_on,
                unfrozen_on,
                ..
            } = change
            {
                let frozen = (moves_on.min(*unfrozen_on) - overdue_from.max(*frozen_on))
                    .num_days()
                    .max(0);
                days -= frozen;
            }
        }
        principal_days = money::add(principal_days, money::mul(part, Decimal::from(days))?)?;
    }
    let excess = money::sub(loan.overdue_monthly_rate, loan.monthly_rate)?;
    // Multiply before dividing so the only inexact step is the final division.
    Ok(money::div(
        money::mul(principal_days, excess)?,
        loan.day_count.days_per_month(),
    )?)
}

/// Emit what the schedule has made overdue (`move_first_arrears`, every instalment in
/// turn) and the accrual up to the command's date (if any), and return the loan as it
/// stands after them, for the rest of the decision.
///
/// Overdue is the schedule's, not the job's: principal unpaid the day after its
/// instalment fell due is overdue from that day, whether or not the overdue job has run
/// since. So every command that prices interest first moves what fell due, as the job run
/// the day after each due date would have: a repayment that cures arrears before the
/// job came still pays the overdue rate for the days they were late.
fn accrue_first(out: &mut Out<'_>, loan: &Loan) -> Result<Loan, Rejection> {
    let mut l = loan.clone();
    // Ends: each move takes at least its instalment, so there are no more of them than
    // instalments; a step that moved nothing (an accrual alone) leaves the next with
    // nothing to accrue or move, which answers None.
    while let Some(after) = move_first_arrears(out, &l)? {
        l = after;
    }
    if let Some(body) = accrual(&l, out.cmd.effective)? {
        let e = out.push(body).clone();
        apply_loan(&mut l, &e);
    }
    Ok(l)
}

/// Moves the earliest arrears of an Active `loan` (`first_arrears` as of the command's
/// date) to overdue as from the day after that instalment fell due, with every instalment
/// due before then: the accrual up to that day at the normal rate, then the move (and
/// its surcharge). Returns the loan as it stands after them, or None, emitting nothing,
/// when nothing due before the command's date is unpaid and not yet overdue.
fn move_first_arrears(out: &mut Out<'_>, loan: &Loan) -> Result<Option<Loan>, Rejection> {
    let date = out.cmd.effective;
    if loan.position.status != LoanStatus::Active {
        return Ok(None);
    }
    let Some(fell_due) = first_arrears(loan, date)? else {
        return Ok(None);
    };
    // Overdue from the day after the instalment fell due, whenever it is recorded:
    // accrued at the normal rate only to then, the rest of the days at the overdue rate
    // by the next accrual. Run daily, that day is the command's date itself. Where
    // interest already stands past it (a later repayment or tranche), from there, with
    // every instalment due before it.
    let moves_on = fell_due
        .succ_opt()
        .ok_or(Rejection::ArithmeticOverflow)?
        .max(loan.position.accrued_to.unwrap_or(date))
        .min(date);
    let scheduled_due = loan.scheduled_due_before(moves_on)?;
    let mut l = loan.clone();
    if let Some(body) = accrual(loan, moves_on)? {
        let e = out.push(body).clone();
        apply_loan(&mut l, &e);
    }
    let p = &l.position;
    // Only what fell due by then, unpaid and not already overdue, moves.
    let unpaid = (scheduled_due - p.principal_repaid).max(Decimal::ZERO);
    let amount = (unpaid - p.overdue_principal)
        .max(Decimal::ZERO)
        .min(p.principal);
    if amount.is_zero() {
        return Ok(Some(l).filter(|l| l.last_event != loan.last_event));
    }
    let mut postings = Vec::new();
    pair(
        Account::OverdueLoanReceivable,
        Account::LoanReceivable,
        amount,
        &mut postings,
    );
    // Where interest already stood past the day after an instalment fell due, those
    // days were priced at the normal rate on principal that was overdue: the move
    // charges the overdue rate's excess for them, so a move recorded late charges, all
    // interest told, what one recorded the day after each due date charges.
    let surcharge_exact = overdue_surcharge(&l, moves_on, amount)?;
    let surcharge_posted = if surcharge_exact.is_zero() {
        Decimal::ZERO
    } else {
        // Whole đồng at posting, half-up (round_dong), with the overdue interest's
        // carry, as an accrual posts it.
        round_dong(money::add(p.carry_overdue_interest, surcharge_exact)?)
    };
    pair(
        Account::OverdueInterestReceivable,
        Account::OverdueInterestIncome,
        surcharge_posted,
        &mut postings,
    );
    let e = out
        .push(EventBody::MovedToOverdue {
            loan: l.id,
            scheduled_due,
            amount,
            surcharge_exact,
            surcharge_posted,
            postings,
        })
        .clone();
    apply_loan(&mut l, &e);
    Ok(Some(l))
}

fn require_status(loan: &Loan, allowed: &[LoanStatus]) -> Result<(), Rejection> {
    if allowed.contains(&loan.position.status) {
        Ok(())
    } else {
        Err(Rejection::WrongLoanStatus {
            loan: loan.id,
            status: loan.position.status,
        })
    }
}

/// One tranche's instalments under an equal-principal monthly schedule: (date,
/// cumulative principal due by then), on the tranche's date + 1, 2, ... months, the last
/// on the loan's due date `due`. Cumulative amounts are rounded half-up, so the last
/// instalment absorbs rounding and the total is exactly the tranche's amount. The changes
/// recorded after the tranche was paid out apply in their order: a freeze that ended
/// (`ScheduleChange::Suspended`) moves each instalment not yet due when it began on by the
/// days the due date moved; an extension (`ScheduleChange::Extended`) keeps what fell due
/// before its date and spreads the rest to its new due date.
fn tranche_schedule(
    tranche: &Tranche,
    changes: &[ScheduleChange],
    due: NaiveDate,
) -> Result<Vec<(NaiveDate, Decimal)>, Rejection> {
    let mut schedule = TrancheSchedule {
        tranche,
        kept: Vec::new(),
        open_from: tranche.on,
        shifts: Vec::new(),
    };
    for change in changes.iter().filter(|c| c.event() > tranche.event) {
        match change {
            ScheduleChange::Suspended {
                frozen_on,
                previous_due,
                new_due,
                ..
            } => schedule.shifts.push((*frozen_on, *new_due - *previous_due)),
            ScheduleChange::Extended {
                on, previous_due, ..
            } => {
                let open = schedule.open(*previous_due)?;
                schedule
                    .kept
                    .extend(open.into_iter().take_while(|(d, _)| d < on));
                schedule.open_from = *on;
            }
        }
    }
    let mut out = schedule.open(due)?;
    out.splice(0..0, schedule.kept);
    Ok(out)
}

/// A tranche's schedule as the changes recorded after it left it (`tranche_schedule`).
struct TrancheSchedule<'a> {
    tranche: &'a Tranche,
    /// Instalments an extension found already due, with their cumulative principal.
    kept: Vec<(NaiveDate, Decimal)>,
    /// The date of the latest extension (the tranche's date before any): instalments from
    /// it on share what `kept` leaves.
    open_from: NaiveDate,
    /// (the date a loan was frozen, the days its instalments from then on moved), in order.
    shifts: Vec<(NaiveDate, chrono::TimeDelta)>,
}

impl TrancheSchedule<'_> {
    fn shifted(&self, mut d: NaiveDate) -> Result<NaiveDate, Rejection> {
        for (frozen_on, days) in &self.shifts {
            if d >= *frozen_on {
                d = d
                    .checked_add_signed(*days)
                    .ok_or(Rejection::ArithmeticOverflow)?;
            }
        }
        Ok(d)
    }

    /// The instalments after `kept` with the due date `due`: the monthly dates from
    /// `open_from` on and before `due`, then `due`, sharing equally what `kept` leaves.
    fn open(&self, due: NaiveDate) -> Result<Vec<(NaiveDate, Decimal)>, Rejection> {
        // Every shift moves the due date as far as the instalments it moves, so a freeze
        // leaves as many monthly dates before the due date as there were.
        let mut dates = Vec::new();
        for month in 1.. {
            let d = self.shifted(add_months(self.tranche.on, month)?)?;
            if d >= due {
                break;
            }
            if d >= self.open_from {
                dates.push(d);
            }
        }
        dates.push(due);
        let base = self.kept.last().map_or(Decimal::ZERO, |(_, c)| *c);
        let left = money::sub(self.tranche.amount, base)?;
        let n = Decimal::from(dates.len());
        let mut out = Vec::with_capacity(dates.len());
        for (k, d) in dates.into_iter().enumerate() {
            let k = Decimal::from(k + 1);
            let cumulative = if k == n {
                self.tranche.amount
            } else {
                money::add(base, round_dong(money::div(money::mul(left, k)?, n)?))?
            };
            out.push((d, cumulative));
        }
        Ok(out)
    }
}

fn add_months(d: NaiveDate, m: u32) -> Result<NaiveDate, Rejection> {
    d.checked_add_months(Months::new(m))
        .ok_or(Rejection::ArithmeticOverflow)
}

impl Loan {
    /// Each tranche's own schedule (`tranche_schedule`), oldest tranche first.
    fn tranche_schedules(&self) -> Result<Vec<Vec<(NaiveDate, Decimal)>>, Rejection> {
        let Some(due) = self.position.due else {
            return Ok(Vec::new());
        };
        self.tranches
            .iter()
            .map(|t| tranche_schedule(t, &self.schedule_changes, due))
            .collect()
    }

    /// Cumulative principal scheduled strictly before `as_of`: the sum of each tranche's
    /// own schedule, from its date to the loan's due date. A tranche paid out in July is
    /// not owed as if it had been lent with the first one in January.
    pub fn scheduled_due_before(&self, as_of: NaiveDate) -> Result<Decimal, Rejection> {
        let mut total = Decimal::ZERO;
        for schedule in self.tranche_schedules()? {
            let due = schedule
                .iter()
                .take_while(|(on, _)| *on < as_of)
                .last()
                .map_or(Decimal::ZERO, |(_, cumulative)| *cumulative);
            total = money::add(total, due)?;
        }
        Ok(total)
    }

    /// The schedule `scheduled_due_before` counts with: each instalment date of any
    /// tranche, the principal due on it and the cumulative principal due by then (it
    /// ends at all that was paid out).
    pub fn schedule(&self) -> Result<Vec<(NaiveDate, Decimal, Decimal)>, Rejection> {
        let schedules = self.tranche_schedules()?;
        let dates: std::collections::BTreeSet<NaiveDate> = schedules
            .iter()
            .flat_map(|s| s.iter().map(|(on, _)| *on))
            .collect();
        let mut out = Vec::with_capacity(dates.len());
        let mut before = Decimal::ZERO;
        for d in dates {
            let mut cumulative = Decimal::ZERO;
            for schedule in &schedules {
                let due = schedule
                    .iter()
                    .take_while(|(on, _)| *on <= d)
                    .last()
                    .map_or(Decimal::ZERO, |(_, c)| *c);
                cumulative = money::add(cumulative, due)?;
            }
            out.push((d, money::sub(cumulative, before)?, cumulative));
            before = cumulative;
        }
        Ok(out)
    }
}

/// Whether `prog` lends to the household on `date`, by the standing its latest decision
/// gives it then: the rule of an approval and of every tranche.
fn lends_to(
    book: &LoanBook,
    household: &HouseholdId,
    prog: &programmes::Programme,
    date: NaiveDate,
) -> Result<(), Rejection> {
    let standing = book
        .households
        .get(household)
        .ok_or_else(|| Rejection::UnknownHousehold {
            household: household.to_string(),
        })?;
    let statuses = standing.statuses_on(date)?;
    if !statuses.iter().any(|s| prog.eligible.contains(s)) {
        return Err(Rejection::NotEligible {
            status: statuses[0],
            programme: prog.id.clone(),
        });
    }
    Ok(())
}

/// Most tranches one loan is paid out in. Each tranche is repaid on a schedule of its
/// own, and every command on the loan prices the schedule of all of them (a cost that
/// grows with the square of tranches times instalments): a loan of hundreds of tranches
/// would hold up its province's writer on each command. The bank pays a loan in a few
/// tranches; what is left of the approval can go in one.
pub const TRANCHES_MAX: usize = 24;

/// Decide a command against the book. Refusals change nothing.
pub fn decide(book: &LoanBook, cmd: Command) -> Result<Vec<Event>, Rejection> {
    if cmd.actor.trim().is_empty() {
        return Err(Rejection::MissingActor);
    }
    if cmd.reason.trim().is_empty() {
        return Err(Rejection::MissingReason);
    }
    let mut out = Out {
        cmd: &cmd,
        next_id: book.last_event_id,
        events: Vec::new(),
    };
    let date = cmd.effective;
    match &cmd.kind {
        CommandKind::Classify {
            household,
            inputs,
            corrects,
        } => {
            let previous = book.households.get(household);
            // A correction is decided as if the decision it corrects had never been: with
            // its prior class and the window before it, and as of that review's date,
            // whatever day it is recorded on (the envelope says when): an escaped-poverty
            // window runs three years from the review that found the escape, and one
            // counted from a correction's later day would run up to a year longer. The
            // same review year, since another year's review is a new decision whatever it
            // finds.
            let (before, decided_on) = match corrects {
                None => (
                    StandingBefore {
                        prior_class: previous.map(|h| h.class),
                        escaped_until: previous.and_then(|h| h.escaped_until),
                    },
                    date,
                ),
                Some(corrects) => {
                    let latest = previous.and_then(|h| h.before.map(|b| (h, b)));
                    let Some((corrected, before)) =
                        latest.filter(|(h, _)| h.decision_event == *corrects)
                    else {
                        return Err(Rejection::CorrectsNotLatest {
                            corrects: *corrects,
                            latest: latest.map(|(h, _)| h.decision_event),
                        });
                    };
                    if inputs.review_year != corrected.review_year {
                        return Err(Rejection::CorrectionForAnotherReviewYear {
                            corrected: corrected.review_year,
                            review_year: inputs.review_year,
                        });
                    }
                    (before, corrected.valid_from)
                }
            };
            if let Some(latest) = previous.filter(|h| date < h.valid_from) {
                return Err(Rejection::ClassificationBackDated {
                    latest: latest.valid_from,
                    effective: date,
                });
            }
            let decision = eligibility::decide_classification(
                household.clone(),
                before.prior_class,
                *corrects,
                inputs.clone(),
                &cmd.actor,
                decided_on,
            )?;
            let escaped_until = eligibility::escaped_until_after(
                decision.status,
                decision.valid_to,
                before.escaped_until,
            );
            out.push(EventBody::HouseholdClassified {
                decision,
                escaped_until,
                carried_by_move: false,
            });
        }
        CommandKind::Approve {
            household,
            programme,
            amount,
            term_months,
            savings_group,
            entrusted,
        } => {
            let prog = programmes::programme_on(programme, date)?;
            let amount = positive_vnd(*amount)?;
            lends_to(book, household, prog, date)?;
            if amount > prog.cap {
                return Err(Rejection::AmountOverCap {
                    amount,
                    cap: prog.cap,
                });
            }
            if *term_months == 0 || *term_months > prog.max_term_months {
                return Err(Rejection::TermOutOfRange {
                    term: *term_months,
                    max: prog.max_term_months,
                });
            }
            if prog.savings_group_required && savings_group.trim().is_empty() {
                return Err(Rejection::MissingSavingsGroup);
            }
            if let Some(other) = book.loans.values().find(|l| {
                &l.household == household
                    && l.programme.id == prog.id
                    && l.position.status.is_open()
            }) {
                return Err(Rejection::ActiveLoanExists { loan: other.id });
            }
            out.push(EventBody::LoanApproved {
                loan: book.last_loan_id + 1,
                household: household.clone(),
                programme: prog.reference(),
                monthly_rate: prog.monthly_rate,
                overdue_monthly_rate: prog.overdue_monthly_rate(),
                day_count: prog.day_count,
                amount,
                term_months: *term_months,
                savings_group: savings_group.clone(),
                entrusted: *entrusted,
            });
        }
        CommandKind::Disburse {
            loan,
            amount,
            channel,
        } => {
            let loan = get_loan(book, *loan, date)?;
            require_status(loan, &[LoanStatus::Approved, LoanStatus::Active])?;
            let amount = positive_vnd(*amount)?;
            // Each tranche is lent on the household's standing on its own date, by the
            // rule an approval is decided by (and that `audit anomalies` checks every
            // disbursement against): a list that lapsed or a review that lifted the
            // household out of the programme's statuses stops further money.
            let prog = programmes::programme_version(&loan.programme).ok_or_else(|| {
                Rejection::UnknownProgramme {
                    id: loan.programme.id.clone(),
                }
            })?;
            lends_to(book, &loan.household, prog, date)?;
            if loan.tranches.len() >= TRANCHES_MAX {
                return Err(Rejection::TooManyTranches {
                    most: TRANCHES_MAX as u32,
                });
            }
            let already = loan.position.disbursed;
            if money::add(already, amount)? > loan.approved_amount {
                return Err(Rejection::DisbursementOverApproved {
                    approved: loan.approved_amount,
                    already,
                    requested: amount,
                });
            }
            let l = accrue_first(&mut out, loan)?;
            let (schedule_start, due) = match (l.position.schedule_start, l.position.due) {
                (Some(s), Some(d)) => (s, d),
                _ => (date, add_months(date, l.term_months)?),
            };
            // Money paid out on or after the due date would be overdue as it leaves.
            if date >= due {
                return Err(Rejection::TrancheNotBeforeDue { due });
            }
            let mut postings = Vec::new();
            // Cash paid out at a commune transaction point is brought from the branch for
            // it: funded first, as a transfer is, so the point's cash stays what it holds
            // (the collections not yet handed in), never below zero.
            if *channel == Channel::CommuneTransactionPoint {
                pair(
                    Account::CashAtCommunePoint,
                    Account::FundingSource,
                    amount,
                    &mut postings,
                );
            }
            pair(
                Account::LoanReceivable,
                channel.account(),
                amount,
                &mut postings,
            );
            out.push(EventBody::TrancheDisbursed {
                loan: l.id,
                amount,
                channel: *channel,
                schedule_start,
                due,
                postings,
            });
        }
        CommandKind::Repay { loan, amount } => {
            let loan = get_loan(book, *loan, date)?;
            require_status(loan, &[LoanStatus::Active, LoanStatus::Frozen])?;
            let amount = positive_vnd(*amount)?;
            let l = accrue_first(&mut out, loan)?;
            let p = &l.position;
            let owed = money::add(
                money::add(p.principal, p.overdue_principal)?,
                money::add(p.interest_receivable, p.overdue_interest_receivable)?,
            )?;
            if amount > owed {
                return Err(Rejection::Overpayment {
                    owed,
                    offered: amount,
                });
            }
            let mut left = amount;
            let mut take = |bucket: Decimal| {
                let t = left.min(bucket);
                left -= t;
                t
            };
            let to_interest = take(p.interest_receivable);
            let to_overdue_interest = take(p.overdue_interest_receivable);
            let to_overdue_principal = take(p.overdue_principal);
            let to_principal = take(p.principal);
            let cash = Account::CashAtCommunePoint;
            let mut postings = vec![Posting::debit(cash, amount)];
            for (acc, amt) in [
                (Account::InterestReceivable, to_interest),
                (Account::OverdueInterestReceivable, to_overdue_interest),
                (Account::OverdueLoanReceivable, to_overdue_principal),
                (Account::LoanReceivable, to_principal),
            ] {
                if !amt.is_zero() {
                    postings.push(Posting::credit(acc, amt));
                }
            }
            let status_after = if amount == owed {
                LoanStatus::Closed
            } else {
                p.status
            };
            out.push(EventBody::RepaymentReceived {
                loan: l.id,
                amount,
                to_interest,
                to_overdue_interest,
                to_overdue_principal,
                to_principal,
                status_after,
                postings,
            });
        }
        CommandKind::AccrueInterest { loan } => {
            let loan = get_loan(book, *loan, date)?;
            require_status(loan, &[LoanStatus::Active])?;
            accrue_first(&mut out, loan)?;
        }
        CommandKind::MarkOverdue { loan } => {
            let loan = get_loan(book, *loan, date)?;
            require_status(loan, &[LoanStatus::Active])?;
            // One instalment's move a command, so that each step of a late job is a
            // receipt of its own with the amount it moved (`Service::mark_overdue`).
            if move_first_arrears(&mut out, loan)?.is_none() {
                accrue_first(&mut out, loan)?;
            }
        }
        CommandKind::Extend { loan, new_due } => {
            let loan = get_loan(book, *loan, date)?;
            require_status(loan, &[LoanStatus::Active])?;
            if loan.position.extensions >= MAX_EXTENSIONS {
                return Err(Rejection::AlreadyExtended);
            }
            let (current, original) = loan
                .position
                .due
                .zip(loan.position.original_due)
                .expect("an Active loan has a due date");
            // An extension is decided by the due date; after it, what is unpaid is
            // overdue (and a new due date could already be past).
            if date > current {
                return Err(Rejection::ExtensionAfterDue { due: current });
            }
            if *new_due <= current {
                return Err(Rejection::ExtensionNotLater {
                    current_due: current,
                    new_due: *new_due,
                });
            }
            let max_due = add_months(original, extension_months_max(loan.term_months))?;
            if *new_due > max_due {
                return Err(Rejection::ExtensionTooLong {
                    max_due,
                    new_due: *new_due,
                });
            }
            let l = accrue_first(&mut out, loan)?;
            out.push(EventBody::Extended {
                loan: l.id,
                previous_due: current,
                new_due: *new_due,
            });
        }
        CommandKind::Freeze { loan, disaster_ref } => {
            let loan = get_loan(book, *loan, date)?;
            require_status(loan, &[LoanStatus::Active])?;
            if disaster_ref.trim().is_empty() {
                return Err(Rejection::MissingDisasterReference);
            }
            let l = accrue_first(&mut out, loan)?;
            out.push(EventBody::Frozen {
                loan: l.id,
                disaster_ref: disaster_ref.clone(),
            });
        }
        CommandKind::WriteOff { loan, disaster_ref } => {
            let loan = get_loan(book, *loan, date)?;
            require_status(loan, &[LoanStatus::Active, LoanStatus::Frozen])?;
            if disaster_ref.trim().is_empty() {
                return Err(Rejection::MissingDisasterReference);
            }
            let l = accrue_first(&mut out, loan)?;
            let p = &l.position;
            let total = p.owed();
            let mut postings = Vec::new();
            if !total.is_zero() {
                postings.push(Posting::debit(Account::WriteOffReserve, total));
            }
            for (acc, amt) in [
                (Account::LoanReceivable, p.principal),
                (Account::OverdueLoanReceivable, p.overdue_principal),
                (Account::InterestReceivable, p.interest_receivable),
                (
                    Account::OverdueInterestReceivable,
                    p.overdue_interest_receivable,
                ),
            ] {
                if !amt.is_zero() {
                    postings.push(Posting::credit(acc, amt));
                }
            }
            out.push(EventBody::WrittenOff {
                loan: l.id,
                disaster_ref: disaster_ref.clone(),
                principal: p.principal,
                overdue_principal: p.overdue_principal,
                interest: p.interest_receivable,
                overdue_interest: p.overdue_interest_receivable,
                postings,
            });
        }
        CommandKind::CancelApproval { loan } => {
            let l = get_loan(book, *loan, date)?;
            require_status(l, &[LoanStatus::Approved])?;
            // Approved means nothing disbursed (a first tranche makes it Active, and a
            // reversed one restores the position before it); checked all the same, since a
            // cancelled loan must hold no money.
            if !l.position.disbursed.is_zero() || !l.position.owed().is_zero() {
                return Err(Rejection::WrongLoanStatus {
                    loan: l.id,
                    status: l.position.status,
                });
            }
            out.push(EventBody::ApprovalCancelled { loan: l.id });
        }
        CommandKind::Unfreeze { loan, new_due } => {
            let loan = get_loan(book, *loan, date)?;
            require_status(loan, &[LoanStatus::Frozen])?;
            let (current, frozen_on) = loan
                .position
                .due
                .zip(loan.frozen_on)
                .expect("a Frozen loan has a due date and the date it was frozen");
            let new_due = match new_due {
                None => current,
                Some(new_due) => {
                    if *new_due <= current {
                        return Err(Rejection::ExtensionNotLater {
                            current_due: current,
                            new_due: *new_due,
                        });
                    }
                    // The schedule stood still while the loan was frozen; it moves on by
                    // no more than that (and the instalments with it, in `apply`). A
                    // longer delay is an extension's, by its rules. A loan frozen after
                    // its due date had nothing left to suspend (every instalment had
                    // fallen due): its due date stays, as an extension's would after it.
                    let max_due = if current < frozen_on {
                        current
                    } else {
                        current
                            .checked_add_signed(date - frozen_on)
                            .ok_or(Rejection::ArithmeticOverflow)?
                    };
                    if *new_due > max_due {
                        return Err(Rejection::ExtensionTooLong {
                            max_due,
                            new_due: *new_due,
                        });
                    }
                    *new_due
                }
            };
            out.push(EventBody::Unfrozen {
                loan: loan.id,
                previous_due: current,
                new_due,
            });
        }
        CommandKind::Reverse { loan, event } => {
            let loan = get_loan(book, *loan, date)?;
            match book.reversible_events.get(event) {
                Some(owner) if *owner == loan.id => {}
                Some(_) => {
                    return Err(Rejection::EventOfAnotherLoan {
                        event: *event,
                        loan: loan.id,
                    });
                }
                None => {
                    return Err(if *event >= 1 && *event <= book.last_event_id {
                        Rejection::NotReversible { event: *event }
                    } else {
                        Rejection::UnknownEvent { event: *event }
                    });
                }
            }
            let rev = loan
                .reversible
                .as_ref()
                .filter(|r| r.event == *event)
                .ok_or(Rejection::NotLatestEvent {
                    event: *event,
                    latest: Some(loan.last_event),
                })?;
            // Reopening a closed loan must not create a second open loan of
            // the same programme for the household.
            if rev.before.status.is_open() && !loan.position.status.is_open() {
                if let Some(other) = book.loans.values().find(|l| {
                    l.id != loan.id
                        && l.household == loan.household
                        && l.programme.id == loan.programme.id
                        && l.position.status.is_open()
                }) {
                    return Err(Rejection::ActiveLoanExists { loan: other.id });
                }
            }
            // No accrual here: restoring the position restores `accrued_to`
            // to before the original, so the next accrual re-prices the days
            // since then on the corrected balance.
            out.push(EventBody::Reversed {
                original: *event,
                loan: loan.id,
                restored: rev.before.clone(),
                postings: rev.postings.iter().map(Posting::reversed).collect(),
            });
        }
    }
    Ok(out.events)
}

/// Interest owed on `date` if the borrower settled that day: the posted receivables
/// plus what would accrue up to `date` (whole đồng, as an accrual would post it), with
/// instalments fallen due and unpaid priced at the overdue rate from the day after, as a
/// repayment that day moves them. Returns (interest, overdue interest).
pub fn interest_owed_on(loan: &Loan, date: NaiveDate) -> Result<(Decimal, Decimal), Rejection> {
    // What a repayment that day would find: what fell due moved to overdue first, then
    // the accrual, as `accrue_first` decides them.
    let quote = Command {
        actor: String::new(),
        reason: String::new(),
        effective: date,
        kind: CommandKind::AccrueInterest { loan: loan.id },
    };
    let mut out = Out {
        cmd: &quote,
        next_id: loan.last_event,
        events: Vec::new(),
    };
    let l = accrue_first(&mut out, loan)?;
    Ok((
        l.position.interest_receivable,
        l.position.overdue_interest_receivable,
    ))
}

fn get_loan(book: &LoanBook, id: LoanId, effective: NaiveDate) -> Result<&Loan, Rejection> {
    let loan = book
        .loans
        .get(&id)
        .ok_or(Rejection::UnknownLoan { loan: id })?;
    if effective < loan.position.last_event_on {
        return Err(Rejection::BackDated {
            last: loan.position.last_event_on,
            effective,
        });
    }
    Ok(loan)
}

// ---------------------------------------------------------------- apply

/// Apply a decided event. Never fails; holds no rules.
pub fn apply(book: &mut LoanBook, event: &Event) {
    book.last_event_id = event.id;
    match &event.body {
        EventBody::HouseholdClassified {
            decision,
            escaped_until,
            carried_by_move,
        } => {
            let previous = book.households.get(&decision.household);
            // A correction takes the corrected decision's place, so it keeps what the
            // household held before that one: a correction of it decides with the same.
            let before = if *carried_by_move {
                None
            } else if decision.corrects.is_some() {
                previous.and_then(|h| h.before)
            } else {
                Some(StandingBefore {
                    prior_class: decision.prior_class,
                    escaped_until: previous.and_then(|h| h.escaped_until),
                })
            };
            book.households.insert(
                decision.household.clone(),
                HouseholdStanding {
                    class: decision.class,
                    status: decision.status,
                    valid_from: decision.valid_from,
                    valid_to: decision.valid_to,
                    escaped_until: *escaped_until,
                    decision_event: event.id,
                    review_year: decision.inputs.review_year,
                    before,
                },
            );
        }
        EventBody::LoanApproved {
            loan,
            household,
            programme,
            monthly_rate,
            overdue_monthly_rate,
            day_count,
            amount,
            term_months,
            savings_group,
            entrusted,
        } => {
            book.last_loan_id = *loan;
            book.loans.insert(
                *loan,
                Loan {
                    id: *loan,
                    household: household.clone(),
                    programme: programme.clone(),
                    monthly_rate: *monthly_rate,
                    overdue_monthly_rate: *overdue_monthly_rate,
                    day_count: *day_count,
                    approved_amount: *amount,
                    term_months: *term_months,
                    savings_group: savings_group.clone(),
                    entrusted: *entrusted,
                    approved_on: event.effective,
                    position: LoanPosition {
                        status: LoanStatus::Approved,
                        disbursed: Decimal::ZERO,
                        principal: Decimal::ZERO,
                        overdue_principal: Decimal::ZERO,
                        interest_receivable: Decimal::ZERO,
                        overdue_interest_receivable: Decimal::ZERO,
                        carry_interest: Decimal::ZERO,
                        carry_overdue_interest: Decimal::ZERO,
                        principal_repaid: Decimal::ZERO,
                        accrued_to: None,
                        schedule_start: None,
                        due: None,
                        original_due: None,
                        extensions: 0,
                        last_event_on: event.effective,
                    },
                    last_event: event.id,
                    reversible: None,
                    tranches: Vec::new(),
                    frozen_on: None,
                    schedule_changes: Vec::new(),
                },
            );
        }
        body => {
            let id = event.loan().expect("every other event names a loan");
            let loan = book.loans.get_mut(&id).expect("decided against this loan");
            apply_loan(loan, event);
            match body {
                EventBody::TrancheDisbursed { .. } | EventBody::RepaymentReceived { .. } => {
                    book.reversible_events.insert(event.id, id);
                }
                EventBody::Reversed { original, .. } => {
                    book.reversible_events.remove(original);
                }
                _ => {}
            }
        }
    }
}

/// Loan-level part of `apply` (also used by `decide` on a scratch copy, and by
/// projections that keep one loan per record).
pub fn apply_loan(loan: &mut Loan, event: &Event) {
    let before = loan.position.clone();
    let p = &mut loan.position;
    let mut reversible = None;
    match &event.body {
        EventBody::InterestAccrued {
            to,
            interest_posted,
            overdue_interest_posted,
            carry_interest_after,
            carry_overdue_interest_after,
            ..
        } => {
            p.interest_receivable += interest_posted;
            p.overdue_interest_receivable += overdue_interest_posted;
            p.carry_interest = *carry_interest_after;
            p.carry_overdue_interest = *carry_overdue_interest_after;
            p.accrued_to = Some(*to);
        }
        EventBody::TrancheDisbursed {
            amount,
            schedule_start,
            due,
            postings,
            ..
        } => {
            p.status = LoanStatus::Active;
            p.disbursed += amount;
            p.principal += amount;
            p.accrued_to = Some(event.effective);
            p.schedule_start = Some(*schedule_start);
            p.original_due = p.original_due.or(Some(*due));
            p.due = Some(p.due.unwrap_or(*due));
            reversible = Some(postings.clone());
            loan.tranches.push(Tranche {
                event: event.id,
                on: event.effective,
                amount: *amount,
            });
        }
        EventBody::RepaymentReceived {
            to_interest,
            to_overdue_interest,
            to_overdue_principal,
            to_principal,
            status_after,
            postings,
            ..
        } => {
            p.interest_receivable -= to_interest;
            p.overdue_interest_receivable -= to_overdue_interest;
            p.overdue_principal -= to_overdue_principal;
            p.principal -= to_principal;
            p.principal_repaid += to_overdue_principal + to_principal;
            p.status = *status_after;
            reversible = Some(postings.clone());
        }
        EventBody::MovedToOverdue {
            amount,
            surcharge_exact,
            surcharge_posted,
            ..
        } => {
            p.principal -= amount;
            p.overdue_principal += amount;
            p.overdue_interest_receivable += surcharge_posted;
            p.carry_overdue_interest += surcharge_exact - surcharge_posted;
        }
        EventBody::Extended {
            previous_due,
            new_due,
            ..
        } => {
            p.due = Some(*new_due);
            p.extensions += 1;
            loan.schedule_changes.push(ScheduleChange::Extended {
                event: event.id,
                on: event.effective,
                previous_due: *previous_due,
                new_due: *new_due,
            });
        }
        EventBody::Frozen { .. } => {
            p.status = LoanStatus::Frozen;
            loan.frozen_on = Some(event.effective);
        }
        EventBody::Unfrozen {
            previous_due,
            new_due,
            ..
        } => {
            p.status = LoanStatus::Active;
            // The days frozen are never priced: interest runs again from today.
            p.accrued_to = Some(event.effective);
            p.due = Some(*new_due);
            if let Some(frozen_on) = loan.frozen_on.take() {
                loan.schedule_changes.push(ScheduleChange::Suspended {
                    event: event.id,
                    frozen_on,
                    unfrozen_on: event.effective,
                    previous_due: *previous_due,
                    new_due: *new_due,
                });
            }
        }
        EventBody::ApprovalCancelled { .. } => p.status = LoanStatus::Cancelled,
        EventBody::WrittenOff { .. } => {
            p.status = LoanStatus::WrittenOff;
            p.principal = Decimal::ZERO;
            p.overdue_principal = Decimal::ZERO;
            p.interest_receivable = Decimal::ZERO;
            p.overdue_interest_receivable = Decimal::ZERO;
        }
        EventBody::Reversed {
            original, restored, ..
        } => {
            *p = restored.clone();
            loan.tranches.retain(|t| t.event != *original);
        }
        EventBody::HouseholdClassified { .. } | EventBody::LoanApproved { .. } => {}
    }
    p.last_event_on = event.effective;
    loan.last_event = event.id;
    if let EventBody::InterestAccrued { postings, .. } = &event.body {
        // An accrual (the month's, or the overdue job's when nothing is due unpaid) keeps
        // the last repayment or tranche reversible: a reversal then also undoes the
        // interest posted since, and restores the date interest was accrued to, so the
        // next accrual prices those days again on the corrected balance.
        // Lines of one account and side are summed, so that a year of daily accruals
        // keeps a handful of lines, not hundreds.
        if let Some(r) = &mut loan.reversible {
            for line in postings {
                let credit = line.debit.is_zero();
                match r
                    .postings
                    .iter_mut()
                    .find(|l| l.account == line.account && l.debit.is_zero() == credit)
                {
                    Some(same) => {
                        same.debit += line.debit;
                        same.credit += line.credit;
                    }
                    None => r.postings.push(line.clone()),
                }
            }
        }
        return;
    }
    loan.reversible = reversible.map(|postings| Reversible {
        event: event.id,
        before,
        postings,
    });
}

/// Rebuild a book from its events (apply only).
pub fn replay<'a>(events: impl IntoIterator<Item = &'a Event>) -> LoanBook {
    let mut book = LoanBook::default();
    for e in events {
        apply(&mut book, e);
    }
    book
}
