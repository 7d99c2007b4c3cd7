//! Payment instructions: payment runs, gateway results, timeouts, reissues.
//!
//! One instruction per (entitlement, month, attempt), id
//! `pay:<entitlement>:<YYYY-MM>:<attempt>`, so running a period again finds
//! the instructions it already made and adds nothing. Each instruction holds
//! its amount on the budget from issue until a result:
//!
//! ```text
//! Instructed (reserved) ──Settled──▶ Settled (posted) ──Returned──▶ Returned (released)
//!        │ Failed / Returned ──▶ Failed / Returned (voided)
//!        │ timeout ──▶ TimedOut (voided)      stop ──▶ Cancelled (voided)
//! Failed / Returned / TimedOut ──reissue──▶ attempt + 1, Instructed (new hold)
//! ```
//!
//! A `settled` post for an instruction the ledger stopped waiting for (timed out, failed,
//! returned, cancelled) is refused and recorded; the month is then not reissued until the
//! gateway's word is reconciled, since the person may already hold the money, and every
//! instruction of the person's month still pending (a reissue, or a new grant's after a
//! stop) is cancelled by the same post.
//!
//! Gateway results are idempotent on (gateway, gateway transaction id,
//! outcome): the same post again gets the first answer and appends nothing.
//! Refused posts are recorded (reconciliation lists them), bounded per
//! gateway and day.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::money::{self, positive_vnd};
use crate::domain::payments::Rejection;
use crate::domain::payments::book::{Book, EventBody, EventId, Out};
use crate::domain::payments::budget::{BudgetKey, MoveKind};
use crate::domain::payments::entitlements::{
    Channel, EntitlementId, MonthlyAmount, amount_for_terms,
};
use crate::domain::payments::ids::{
    BeneficiaryRef, CommuneId, GatewayId, GatewayTxnId, InstructionRef, check_ref,
};
use crate::domain::payments::month::Month;
use crate::domain::payments::reference::reference;

/// Attempts per (entitlement, month): the first issue and up to four
/// reissues. After that the case needs a person, not another retry.
pub const ATTEMPTS_MAX: u32 = 5;
/// A run that would issue more instructions than this is refused; narrow it
/// by commune. Bounds the size of one decision (and one log append).
pub const RUN_INSTRUCTIONS_MAX: usize = 50_000;
/// Refused posts recorded per gateway and day. Past it, posts are refused
/// without being recorded: a gateway sending that many bad posts is broken
/// or hostile and must be stopped at the edge, not logged forever.
pub const REFUSED_POSTS_PER_GATEWAY_DAY_MAX: u32 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstructionId {
    // Field order: all attempts of one entitlement sort together, by month.
    pub entitlement: EntitlementId,
    pub month: Month,
    pub attempt: u32,
}

const INSTRUCTION_PREFIX: &str = "pay";

impl InstructionId {
    /// Parse the canonical text form only (so one instruction has one id).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(':');
        let (Some(INSTRUCTION_PREFIX), Some(e), Some(m), Some(a), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let id = Self {
            entitlement: e.parse().ok()?,
            month: Month::parse(m).ok()?,
            attempt: a.parse().ok()?,
        };
        (id.to_string() == s).then_some(id)
    }
}

impl fmt::Display for InstructionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{INSTRUCTION_PREFIX}:{}:{}:{}",
            self.entitlement, self.month, self.attempt
        )
    }
}

impl TryFrom<String> for InstructionId {
    type Error = Rejection;
    fn try_from(s: String) -> Result<Self, Rejection> {
        check_ref("instruction", &s)?;
        Self::parse(&s).ok_or(Rejection::RefMalformed {
            field: "instruction",
            max_chars: crate::domain::payments::ids::REF_CHARS_MAX,
        })
    }
}

impl From<InstructionId> for String {
    fn from(id: InstructionId) -> String {
        id.to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstructionStatus {
    /// Sent to the gateway; its amount is reserved on the budget.
    Instructed,
    /// Paid; the amount is posted.
    Settled,
    Failed,
    /// Returned by the gateway, before or after settlement.
    Returned,
    /// No result within the channel's timeout.
    TimedOut,
    /// The entitlement stopped before this month, or a gateway said it paid an earlier
    /// instruction of the person's month (an earlier attempt, or an earlier grant's) after
    /// the ledger had given up on that one.
    Cancelled,
}

impl InstructionStatus {
    /// May be reissued (a new attempt with a new hold).
    pub fn is_reissuable(self) -> bool {
        matches!(self, Self::Failed | Self::Returned | Self::TimedOut)
    }
}

/// What a payment run or a reissue decides: the immutable part of an
/// instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInstruction {
    pub id: InstructionId,
    pub beneficiary: BeneficiaryRef,
    pub budget: BudgetKey,
    pub channel: Channel,
    pub amount: Decimal,
    pub basis: MonthlyAmount,
    /// The failed, returned or timed-out attempt this one re-issues.
    pub replaces: Option<InstructionId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruction {
    pub issued: NewInstruction,
    pub issued_on: NaiveDate,
    pub status: InstructionStatus,
    /// The gateway transaction that settled it (kept after a return).
    pub settled_by: Option<GatewayTxnId>,
    pub last_change_on: NaiveDate,
}

impl Instruction {
    /// First day on which it may be timed out.
    pub fn timeout_due_on(&self) -> NaiveDate {
        self.issued.channel.kind().timeout_due_on(self.issued_on)
    }
}

/// The entitlements a run left unpaid and named for an officer to stop, by why: the
/// lists of its `PaymentRunCompleted`, as a run's answers carry them (each list a field
/// of its own in JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftUnpaid {
    /// Their household left the partition before the month (moved out, or dissolved by
    /// its last member's death).
    #[serde(default)]
    pub not_resident: Vec<EntitlementId>,
    /// Their beneficiary died before the month (paid through the month of death).
    #[serde(default)]
    pub deceased: Vec<EntitlementId>,
    /// Their beneficiary is no longer one of the household's citizens (a member change
    /// took them out, or its data were erased): the household they joined may pay them.
    #[serde(default)]
    pub not_a_member: Vec<EntitlementId>,
    /// Their household's personal data were erased: nobody of it can be identified as
    /// the payee, with a citizen id or without (a child). Empty in runs recorded before
    /// the list existed, which named an erased household's beneficiaries with a citizen
    /// id `not_a_member` (and paid those without one).
    #[serde(default)]
    pub erased: Vec<EntitlementId>,
}

impl LeftUnpaid {
    /// Each list with its field's name, in the order the answers give them.
    pub fn by_reason(&self) -> [(&'static str, &[EntitlementId]); 4] {
        [
            ("not_resident", &self.not_resident),
            ("deceased", &self.deceased),
            ("not_a_member", &self.not_a_member),
            ("erased", &self.erased),
        ]
    }

    /// How many entitlements are named, whatever the reason.
    pub fn count(&self) -> usize {
        self.by_reason().iter().map(|(_, ids)| ids.len()).sum()
    }
}

/// A budget a run could not cover in full. Nothing is issued on it, so that
/// no beneficiary of a commune is paid ahead of another by id order; top it
/// up and run again (re-running only adds what is missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortfall {
    pub budget: BudgetKey,
    pub instructions: u64,
    pub needed: Decimal,
    pub available: Decimal,
}

impl Shortfall {
    /// The shortfall in words, amounts as staff read them (`1.500.000 ₫`): what the CLI
    /// prints and the HTTP API answers.
    pub fn sentence(&self) -> String {
        use crate::domain::money::format_vnd;
        format!(
            "the {} budget of commune {} for {} has {} available, {} short of the {} its {} instructions need",
            self.budget.programme,
            self.budget.commune,
            self.budget.period,
            format_vnd(self.available),
            format_vnd(self.needed - self.available),
            format_vnd(self.needed),
            self.instructions
        )
    }
}

// ---------------------------------------------------------------- gateway posts

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Outcome {
    Settled,
    Failed,
    Returned,
}

/// A result a gateway posts back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayPost {
    pub gateway: GatewayId,
    pub instruction: InstructionRef,
    pub outcome: Outcome,
    pub gateway_txn: GatewayTxnId,
    pub amount: Decimal,
    pub beneficiary: BeneficiaryRef,
}

/// Why a post was refused. Recorded in the log and sent back to the gateway;
/// reconciliation lists every one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PostRefusal {
    /// No such instruction.
    UnknownInstruction,
    /// The instruction was routed to another gateway. Says no more, so a
    /// gateway learns nothing about other gateways' instructions.
    NotYourInstruction,
    BeneficiaryMismatch,
    AmountMismatch {
        expected: Decimal,
        posted: Decimal,
    },
    /// Settled after the money was returned (before a settlement, or after one): the
    /// return stands, but the gateway says the person was paid, so, like a `NotPending`
    /// settlement, it is a late settlement that holds the month from a reissue.
    SettledAfterReturned,
    /// Already settled by another transaction of this gateway.
    AlreadySettled {
        by: GatewayTxnId,
    },
    /// No transition from this status for this outcome (e.g. anything after
    /// a failure, timeout or cancellation, or a failure after settlement).
    NotPending {
        status: InstructionStatus,
    },
    /// This transaction id and outcome were already accepted with other
    /// content (event `first`).
    TransactionIdReused {
        first: EventId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Accepted { status: InstructionStatus },
    Refused { refusal: PostRefusal },
}

/// The answer to a post: the event that recorded it and the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostAnswer {
    pub event: EventId,
    pub verdict: Verdict,
}

/// A post as first recorded, with its answer (the idempotency table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPost {
    pub post: GatewayPost,
    pub answer: PostAnswer,
}

/// Idempotency key of a post: the same gateway transaction id may carry a
/// settlement and, later, its return.
pub type PostKey = (GatewayId, GatewayTxnId, Outcome);

pub fn post_key(post: &GatewayPost) -> PostKey {
    (post.gateway.clone(), post.gateway_txn.clone(), post.outcome)
}

// ---------------------------------------------------------------- queries

/// Instructions still pending on `as_of` whose timeout is due, in id order.
/// The wiring turns each into a `TimeOut` command.
pub fn due_for_timeout(book: &Book, as_of: NaiveDate) -> impl Iterator<Item = &InstructionId> {
    book.instructions
        .iter()
        .filter(move |(_, i)| {
            i.status == InstructionStatus::Instructed && i.timeout_due_on() <= as_of
        })
        .map(|(id, _)| id)
}

/// Instructions of `entitlement` for months after `month`: (still
/// instructed, already settled).
pub(crate) fn after_month(
    book: &Book,
    entitlement: EntitlementId,
    month: Month,
) -> (Vec<InstructionId>, Vec<InstructionId>) {
    let mut pending = Vec::new();
    let mut settled = Vec::new();
    let from = InstructionId {
        entitlement,
        month,
        attempt: u32::MAX,
    };
    let to = InstructionId {
        entitlement,
        month: Month::MAX,
        attempt: u32::MAX,
    };
    for (id, i) in book
        .instructions
        .range((Bound::Excluded(from), Bound::Included(to)))
    {
        match i.status {
            InstructionStatus::Instructed => pending.push(*id),
            InstructionStatus::Settled => settled.push(*id),
            _ => {}
        }
    }
    (pending, settled)
}

/// All instruction ids of `entitlement`, in order.
fn of_entitlement(entitlement: EntitlementId) -> std::ops::RangeInclusive<InstructionId> {
    let from = InstructionId {
        entitlement,
        month: Month::MIN,
        attempt: 0,
    };
    let to = InstructionId {
        entitlement,
        month: Month::MAX,
        attempt: u32::MAX,
    };
    from..=to
}

/// The latest month `entitlement` may have paid: the latest with an attempt still
/// instructed or settled, or one its gateway settled late (`late_settlements`). A failed,
/// returned, timed-out or cancelled attempt paid nothing, so its month may be paid by a
/// later entitlement of the person; unless its gateway says it paid it after all.
pub fn latest_paid_month(book: &Book, entitlement: EntitlementId) -> Option<Month> {
    let paid = book
        .instructions
        .range(of_entitlement(entitlement))
        .rev()
        .find(|(_, i)| {
            matches!(
                i.status,
                InstructionStatus::Instructed | InstructionStatus::Settled
            )
        })
        .map(|(id, _)| id.month);
    paid.max(latest_late_settlement(book, entitlement))
}

/// The latest month of `entitlement` its gateway settled late (`Book::late_settlements`).
pub fn latest_late_settlement(book: &Book, entitlement: EntitlementId) -> Option<Month> {
    book.late_settlements
        .range(of_entitlement(entitlement))
        .next_back()
        .map(|(id, _)| id.month)
}

// ---------------------------------------------------------------- decide

pub(crate) fn decide_run(
    out: &mut Out<'_>,
    period: Month,
    commune: Option<CommuneId>,
) -> Result<(), Rejection> {
    let data = reference();
    let mut by_budget: BTreeMap<BudgetKey, Vec<NewInstruction>> = BTreeMap::new();
    let mut count = 0usize;
    let mut left_unpaid = LeftUnpaid::default();
    for e in out.book.entitlements.values() {
        if commune.as_ref().is_some_and(|c| *c != e.commune)
            || out.book.attempts.contains_key(&(e.id, period))
        {
            continue;
        }
        let Some(terms) = e.terms_for(period) else {
            continue;
        };
        // Decree 20/2021 pays through the month of death: a later month is owed to no
        // one, and the run names the entitlement for an officer to stop. Asked first: a
        // household its last member's death dissolved is named for the death.
        if e.died_on(out.registry)
            .is_some_and(|died_on| period > Month::of(died_on))
        {
            left_unpaid.deceased.push(e.id);
            continue;
        }
        // Nobody is paid for a month after their household left (or lost its last
        // member), as a stop dated that day would pay through its month: the run names
        // the entitlement for an officer to stop instead.
        if !out.registry.resident(&e.beneficiary.household, period) {
            left_unpaid.not_resident.push(e.id);
            continue;
        }
        // The household's data key is destroyed: no account or payee of it can be told
        // apart, and nobody verified as the beneficiary, with a citizen id or without (a
        // child, whom the membership rule below cannot see). Paid for no month once the
        // erasure is recorded, whatever the month (the registry keeps that it was erased,
        // not since when); the run names the entitlement for an officer to stop. Asked
        // before membership, which an erasure also empties, so the reason is the erasure.
        if out.registry.erased(&e.beneficiary.household) {
            left_unpaid.erased.push(e.id);
            continue;
        }
        // A beneficiary a member change took out of the household (or whose household's
        // data were erased) is free to join another, which may grant them the same
        // allowance: this household pays them no more, whatever the month, since the
        // registry keeps who its citizens are, not since when. A beneficiary who died in
        // the household is still one of its citizens: the death rule above decides.
        if e.beneficiary_left(out.registry) {
            left_unpaid.not_a_member.push(e.id);
            continue;
        }
        count += 1;
        if count > RUN_INSTRUCTIONS_MAX {
            return Err(Rejection::RunTooLarge {
                max: RUN_INSTRUCTIONS_MAX,
            });
        }
        let basis = amount_for_terms(data, terms, period)?;
        let budget = BudgetKey {
            programme: e.programme.clone(),
            commune: e.commune.clone(),
            period,
        };
        by_budget
            .entry(budget.clone())
            .or_default()
            .push(NewInstruction {
                id: InstructionId {
                    entitlement: e.id,
                    month: period,
                    attempt: 1,
                },
                beneficiary: e.beneficiary.clone(),
                budget,
                channel: terms.channel.clone(),
                amount: basis.amount,
                basis,
                replaces: None,
            });
    }

    // Nothing left to issue or name: a run again of a month already paid adds nothing,
    // whatever its date (a run stopped half way is completed by running it again).
    let named = left_unpaid.count() > 0;
    if by_budget.is_empty() && !named {
        return Ok(());
    }
    not_before_latest_operation(out.book, out.effective())?;
    let mut shortfalls = Vec::new();
    let mut issued = 0u64;
    let mut total = Decimal::ZERO;
    for (key, batch) in by_budget {
        let needed = batch
            .iter()
            .try_fold(Decimal::ZERO, |acc, i| money::add(acc, i.amount))?;
        let available = out.budget(&key).available();
        if needed > available {
            shortfalls.push(Shortfall {
                budget: key,
                instructions: batch.len() as u64,
                needed,
                available,
            });
            continue;
        }
        for instruction in batch {
            issue(out, instruction)?;
            issued += 1;
        }
        total = money::add(total, needed)?;
    }
    match (issued, shortfalls.is_empty()) {
        (0, true) if !named => Ok(()),
        // Nothing to pay but people skipped: the run is recorded all the same, so that
        // the officer is told whom to stop (and the log says the month was run).
        (0, true) => {
            out.push(EventBody::PaymentRunCompleted {
                period,
                commune,
                issued: 0,
                amount: Decimal::ZERO,
                shortfalls,
                reference: data.hashes.clone(),
                left_unpaid,
            });
            Ok(())
        }
        (0, false) => Err(Rejection::RunUnfunded { shortfalls }),
        _ => {
            out.push(EventBody::PaymentRunCompleted {
                period,
                commune,
                issued,
                amount: total,
                shortfalls,
                reference: data.hashes.clone(),
                left_unpaid,
            });
            Ok(())
        }
    }
}

fn issue(out: &mut Out<'_>, instruction: NewInstruction) -> Result<(), Rejection> {
    let budget = out.decide_move(&instruction.budget, MoveKind::Reserve, instruction.amount)?;
    out.push(EventBody::InstructionIssued {
        instruction,
        budget,
    });
    Ok(())
}

fn get<'b>(book: &'b Book, id: &InstructionId) -> Result<&'b Instruction, Rejection> {
    book.instructions
        .get(id)
        .ok_or(Rejection::UnknownInstruction { instruction: *id })
}

fn not_back_dated(i: &Instruction, effective: NaiveDate) -> Result<(), Rejection> {
    if effective < i.last_change_on {
        return Err(Rejection::BackDated {
            last: i.last_change_on,
            effective,
        });
    }
    Ok(())
}

/// A run, reissue or timeout keeps the partition's payment operations in date order
/// (`Book::latest_operation_on`). Asked first by a timeout or a reissue, whose date is
/// wrong whatever else it would find; by a run once it has found something to record.
fn not_before_latest_operation(book: &Book, effective: NaiveDate) -> Result<(), Rejection> {
    match book.latest_operation_on {
        Some(latest) if effective < latest => {
            Err(Rejection::PaymentOperationBackDated { latest, effective })
        }
        _ => Ok(()),
    }
}

pub(crate) fn decide_timeout(out: &mut Out<'_>, id: InstructionId) -> Result<(), Rejection> {
    not_before_latest_operation(out.book, out.effective())?;
    let i = get(out.book, &id)?;
    if i.status != InstructionStatus::Instructed {
        return Err(Rejection::InstructionNotPending {
            instruction: id,
            status: i.status,
        });
    }
    let effective = out.effective();
    not_back_dated(i, effective)?;
    let due_on = i.timeout_due_on();
    if effective < due_on {
        return Err(Rejection::NotDueForTimeout {
            instruction: id,
            due_on,
        });
    }
    let budget = out.decide_move(&i.issued.budget, MoveKind::Void, i.issued.amount)?;
    out.push(EventBody::InstructionTimedOut {
        instruction: id,
        budget,
    });
    Ok(())
}

/// Cancel a pending instruction because its entitlement stopped, or because a gateway said
/// it paid an earlier instruction of the person's month (an earlier attempt, or an earlier
/// grant's) after the ledger had given up on that one.
/// Dated the stop's recording date (or the post's), which may not precede the
/// instruction's last change, as for every other move of an instruction.
pub(crate) fn cancel(out: &mut Out<'_>, id: &InstructionId) -> Result<(), Rejection> {
    let i = get(out.book, id)?;
    assert_eq!(
        i.status,
        InstructionStatus::Instructed,
        "only pending instructions are cancelled"
    );
    not_back_dated(i, out.effective())?;
    let budget = out.decide_move(&i.issued.budget, MoveKind::Void, i.issued.amount)?;
    out.push(EventBody::InstructionCancelled {
        instruction: *id,
        budget,
    });
    Ok(())
}

pub(crate) fn decide_reissue(
    out: &mut Out<'_>,
    id: InstructionId,
    channel: Option<Channel>,
) -> Result<(), Rejection> {
    not_before_latest_operation(out.book, out.effective())?;
    let i = get(out.book, &id)?;
    if !i.status.is_reissuable() {
        return Err(Rejection::NotReissuable {
            instruction: id,
            status: i.status,
        });
    }
    let latest = out
        .book
        .attempts
        .get(&(id.entitlement, id.month))
        .copied()
        .expect("an issued instruction has an attempt count");
    if latest != id.attempt {
        return Err(Rejection::AlreadyReissued {
            instruction: id,
            latest: InstructionId {
                attempt: latest,
                ..id
            },
        });
    }
    // Its gateway said it paid an attempt of this month, or an earlier grant's instruction
    // for the person's same month, after the ledger had given up on it (the post was
    // refused and recorded): the person may hold the money, so another attempt would pay
    // twice. The gateway's word is reconciled first.
    if let Some((settled, gateway_txn)) = settled_late_for_month(out.book, id) {
        let gateway = get(out.book, settled)?.issued.channel.gateway().clone();
        return Err(Rejection::LateSettlementToReconcile {
            instruction: *settled,
            gateway,
            gateway_txn: gateway_txn.clone(),
        });
    }
    if id.attempt >= ATTEMPTS_MAX {
        return Err(Rejection::TooManyAttempts {
            instruction: id,
            max: ATTEMPTS_MAX,
        });
    }
    let entitlement = out
        .book
        .entitlements
        .get(&id.entitlement)
        .expect("an instruction's entitlement exists");
    if entitlement.terms_for(id.month).is_none() {
        return Err(Rejection::MonthNotPayable {
            entitlement: id.entitlement,
            month: id.month,
        });
    }
    // Instructed before the death was recorded, a month after it is owed to no one.
    if let Some(died_on) = entitlement
        .died_on(out.registry)
        .filter(|died_on| id.month > Month::of(*died_on))
    {
        return Err(Rejection::BeneficiaryDied { died_on });
    }
    // The household's data were erased: nobody of it can be identified as the payee any
    // more, with a citizen id or without. Asked before membership, which an erasure also
    // empties, so the refusal names the erasure.
    if out.registry.erased(&entitlement.beneficiary.household) {
        return Err(Rejection::HouseholdErased {
            household: entitlement.beneficiary.household.clone(),
        });
    }
    // The beneficiary left the household: the household they joined may pay them this
    // month.
    if entitlement.beneficiary_left(out.registry) {
        return Err(Rejection::BeneficiaryNotAMember {
            entitlement: id.entitlement,
            household: entitlement.beneficiary.household.clone(),
        });
    }
    // The household left before this month: the run here no longer pays it (it names the
    // entitlement `not_resident`), and where the household lives now a grant may pay it, so
    // a reissue here could pay the month twice.
    if !out
        .registry
        .resident(&entitlement.beneficiary.household, id.month)
    {
        return Err(Rejection::HouseholdNoLongerResident {
            household: entitlement.beneficiary.household.clone(),
            month: id.month,
        });
    }
    not_back_dated(i, out.effective())?;
    // Same amount and basis as the first attempt: the month's entitlement
    // was fixed when it was first instructed (changes apply to later months).
    let instruction = NewInstruction {
        id: InstructionId {
            attempt: id.attempt + 1,
            ..id
        },
        channel: channel.unwrap_or_else(|| i.issued.channel.clone()),
        replaces: Some(id),
        ..i.issued.clone()
    };
    issue(out, instruction)
}

/// Decide a gateway post. `Ok(Some(answer))` is a duplicate of a post
/// already answered: nothing is appended and the first answer is returned.
pub(crate) fn decide_post(
    out: &mut Out<'_>,
    post: GatewayPost,
) -> Result<Option<PostAnswer>, Rejection> {
    // Normalised, so the recorded post compares and serialises one way.
    let post = GatewayPost {
        amount: positive_vnd(post.amount)?,
        ..post
    };
    let key = post_key(&post);
    let accepted = out.book.accepted_posts.get(&key);
    let refused = out.book.refused_posts.get(&key);
    if let Some(first) = [accepted, refused]
        .into_iter()
        .flatten()
        .find(|f| f.post == post)
    {
        return Ok(Some(first.answer.clone()));
    }
    let verdict = match accepted {
        Some(first) => Err(PostRefusal::TransactionIdReused {
            first: first.answer.event,
        }),
        // A refused post may be corrected and sent again under the same key.
        None => judge(out.book, &post),
    };
    match verdict {
        Ok((id, status_after, kind)) => {
            let i = &out.book.instructions[&id];
            not_back_dated(i, out.effective())?;
            let budget = out.decide_move(&i.issued.budget, kind, i.issued.amount)?;
            out.push(EventBody::GatewayPostAccepted {
                post,
                instruction: id,
                status_after,
                budget,
            });
        }
        Err(refusal) => {
            let day = out.effective();
            let refused_today = out
                .book
                .refused_per_gateway_day
                .get(&(post.gateway.clone(), day))
                .copied()
                .unwrap_or(0);
            let late = late_settlement(&post, &refusal);
            // The first late settlement of an instruction is recorded past the bound: it
            // says money may have reached the person, and it is what holds the month back
            // from a reissue (`late_settlements`). One per instruction, so still bounded.
            let first_late_settlement =
                late.is_some_and(|id| !out.book.late_settlements.contains_key(&id));
            if refused_today >= REFUSED_POSTS_PER_GATEWAY_DAY_MAX && !first_late_settlement {
                return Err(Rejection::RefusalLimitReached {
                    gateway: post.gateway,
                    day,
                    max: REFUSED_POSTS_PER_GATEWAY_DAY_MAX,
                });
            }
            // The month may be paid: an instruction of it still waiting at its gateway (a
            // reissue, or a new grant's after a stop) would pay it again, so each is
            // withdrawn now (its hold voided), before that gateway pays. Cancelled before
            // the post's event is pushed: the post's event stays the command's last, the
            // one its receipt and idempotency key name.
            for pending in late.map_or_else(Vec::new, |id| pending_for_month(out.book, id)) {
                cancel(out, &pending)?;
            }
            out.push(EventBody::GatewayPostRefused { post, refusal });
        }
    }
    Ok(None)
}

/// The instruction a refused post says was paid after the ledger had stopped waiting for
/// it (failed, returned, timed out or cancelled), if it is such a post. Refused only for
/// the instruction's status, so it matched the instruction in every other field (gateway,
/// amount, beneficiary): the gateway says it paid. `decide_post` and `apply` both ask it,
/// so the book remembers exactly the posts decided as late settlements.
pub(crate) fn late_settlement(post: &GatewayPost, refusal: &PostRefusal) -> Option<InstructionId> {
    let given_up = matches!(
        refusal,
        PostRefusal::NotPending { .. } | PostRefusal::SettledAfterReturned
    );
    if post.outcome != Outcome::Settled || !given_up {
        return None;
    }
    InstructionId::parse(post.instruction.as_str())
}

/// The instructions of `id`'s person and month in its programme still waiting for their
/// gateway, whichever of the person's entitlements (`Book::same_allowance`) issued them: a
/// later attempt of `id`'s own (a reissue; only the latest attempt can be pending, since a
/// month is reissued only from its latest attempt once that one has a result), and a new
/// grant's after a stop. In id order. Visits only the person's entitlements: a gateway
/// may post any number of late settlements after an outage.
fn pending_for_month(book: &Book, id: InstructionId) -> Vec<InstructionId> {
    book.same_allowance(id.entitlement)
        .into_iter()
        .filter_map(|e| {
            let attempt = *book.attempts.get(&(e, id.month))?;
            let latest = InstructionId {
                entitlement: e,
                month: id.month,
                attempt,
            };
            let pending = book
                .instructions
                .get(&latest)
                .is_some_and(|i| i.status == InstructionStatus::Instructed);
            pending.then_some(latest)
        })
        .collect()
}

/// The first instruction (in id order) of `id`'s person and month in its programme, of
/// any of the person's entitlements (`Book::same_allowance`), that its gateway settled
/// late (`Book::late_settlements`), with the gateway's transaction. Reads only the
/// person's entitlements' month in the late settlements.
fn settled_late_for_month(
    book: &Book,
    id: InstructionId,
) -> Option<(&InstructionId, &GatewayTxnId)> {
    book.same_allowance(id.entitlement)
        .into_iter()
        .find_map(|e| {
            let month = |attempt| InstructionId {
                entitlement: e,
                month: id.month,
                attempt,
            };
            book.late_settlements
                .range(month(0)..=month(u32::MAX))
                .next()
        })
}

/// The rules for one post: which instruction, the new status and the budget
/// move, or why not.
fn judge(
    book: &Book,
    post: &GatewayPost,
) -> Result<(InstructionId, InstructionStatus, MoveKind), PostRefusal> {
    use InstructionStatus as S;
    use Outcome as O;
    let (id, i) = InstructionId::parse(post.instruction.as_str())
        .and_then(|id| book.instructions.get(&id).map(|i| (id, i)))
        .ok_or(PostRefusal::UnknownInstruction)?;
    if i.issued.channel.gateway() != &post.gateway {
        return Err(PostRefusal::NotYourInstruction);
    }
    if post.beneficiary != i.issued.beneficiary {
        return Err(PostRefusal::BeneficiaryMismatch);
    }
    if post.amount != i.issued.amount {
        return Err(PostRefusal::AmountMismatch {
            expected: i.issued.amount,
            posted: post.amount,
        });
    }
    let (status, kind) = match (i.status, post.outcome) {
        (S::Instructed, O::Settled) => (S::Settled, MoveKind::Post),
        (S::Instructed, O::Failed) => (S::Failed, MoveKind::Void),
        (S::Instructed, O::Returned) => (S::Returned, MoveKind::Void),
        // The money came back after it was paid: accepted, and reversed.
        (S::Settled, O::Returned) => (S::Returned, MoveKind::Release),
        (S::Settled, O::Settled) => {
            return Err(PostRefusal::AlreadySettled {
                by: i
                    .settled_by
                    .clone()
                    .expect("a settled instruction has its txn"),
            });
        }
        (S::Returned, O::Settled) => return Err(PostRefusal::SettledAfterReturned),
        (status, _) => return Err(PostRefusal::NotPending { status }),
    };
    Ok((id, status, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_ids_have_one_text_form() {
        let id = InstructionId {
            entitlement: 17,
            month: Month::parse("2026-12").unwrap(),
            attempt: 2,
        };
        assert_eq!(id.to_string(), "pay:17:2026-12:2");
        assert_eq!(InstructionId::parse("pay:17:2026-12:2"), Some(id));
        for bad in [
            "pay:017:2026-12:2",
            "pay:17:2026-12:02",
            "pay:+17:2026-12:2",
            "pay:17:2026-12",
            "pay:17:2026-12:2:x",
            "PAY:17:2026-12:2",
            "pay:17:2026-13:2",
        ] {
            assert_eq!(InstructionId::parse(bad), None, "{bad}");
        }
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"pay:17:2026-12:2\"");
        assert_eq!(serde_json::from_str::<InstructionId>(&json).unwrap(), id);
    }
}
