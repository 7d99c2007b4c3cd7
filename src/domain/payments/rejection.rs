//! Why `decide` refused a command. Each variant says how a caller handles it.
//! A rejection appends nothing.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::domain::money::MoneyError;
use crate::domain::payments::budget::BudgetKey;
use crate::domain::payments::entitlements::EntitlementId;
use crate::domain::payments::ids::{CategoryId, GatewayId, GatewayTxnId, HouseholdRef, MemberRef};
use crate::domain::payments::instructions::{InstructionId, InstructionStatus, Shortfall};
use crate::domain::payments::month::Month;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    // ---- actors and shapes ----------------------------------------------
    /// A gateway sent an officer's command. Its credentials allow posting
    /// results only: refuse at the edge and alert (misconfigured client or
    /// misuse of credentials).
    #[error("only an officer may issue this command")]
    OfficerOnly,
    /// An officer tried to post a gateway result. Results come from the
    /// gateway's own credentials; fix the caller.
    #[error("only a gateway may post a payment result")]
    GatewayOnly,
    /// The post names another gateway than the one authenticated. Refuse and
    /// alert: a gateway may speak only for itself.
    #[error("gateway {authenticated} posted as {claimed}")]
    GatewayIdentityMismatch {
        authenticated: GatewayId,
        claimed: GatewayId,
    },
    /// A required reference is empty. The caller must supply it.
    #[error("{field} is missing")]
    RefMissing { field: &'static str },
    /// A reference is too long or not printable ASCII without spaces. Fix the
    /// caller's input; never normalise it silently.
    #[error("{field} is malformed (printable ASCII, at most {max_chars} characters)")]
    RefMalformed {
        field: &'static str,
        max_chars: usize,
    },
    /// The member of a grant was given as an id number (9 or more digits): every
    /// payments event, and the instruction a gateway fetches, would hold it in clear,
    /// beyond the reach of an erasure. Name the member by their reference in the
    /// household record ("m1" for the head).
    #[error(
        "the member must be named by their reference in the household record (e.g. m1), not an id number"
    )]
    MemberIsAnIdNumber,
    /// The member is not named in the one spelling of the household record's references:
    /// "m" and the member's number, "m1" for the head, lower case, no leading zeros.
    /// Another spelling would be a second key for the same person, paid twice.
    #[error(
        "member {member} is not written as a reference of the household record (m1 for the head, then m2, m3, ...: lower case, no leading zeros)"
    )]
    MemberRefNotCanonical { member: MemberRef },
    /// The household record lists `members` members, and `member` names none of them.
    /// Name a member of the record (m1 to m`members`).
    #[error(
        "household {household} lists {members} members (m1 to m{members}); {member} is none of them"
    )]
    NoSuchMember {
        household: HouseholdRef,
        member: MemberRef,
        members: u32,
    },
    /// Not a month of the shape "YYYY-MM" within the supported years.
    #[error("month {found:?} is not YYYY-MM")]
    MonthMalformed { found: String },

    // ---- money ----------------------------------------------------------
    /// Amounts that move money are > 0. Ask for a positive amount.
    #[error("amount {amount} is not positive")]
    AmountNotPositive { amount: Decimal },
    /// VND has no minor unit. Ask for whole đồng.
    #[error("amount {amount} is not whole đồng")]
    FractionalDong { amount: Decimal },
    /// Over the sanity ceiling: almost surely a keying error. Re-enter it.
    #[error("amount {amount} exceeds the ceiling {max}")]
    AmountTooLarge { amount: Decimal, max: Decimal },
    /// Checked arithmetic overflowed: amounts far outside any real budget.
    /// Treat as a defect in the input and investigate; do not retry.
    #[error("arithmetic overflow")]
    ArithmeticOverflow,

    // ---- reference data -------------------------------------------------
    /// No national base level is in force on that date (before 2021-07-01
    /// with the data shipped). Use a later month or ship the level's data.
    #[error("no base level in force on {date}")]
    NoBaseLevelInForce { date: NaiveDate },
    /// No category has this id. Pick one from the categories list.
    #[error("unknown category {category}")]
    UnknownCategory { category: CategoryId },
    /// The category exists but no version is in force on that date. Use a
    /// month inside a version's validity, or ship the new version.
    #[error("category {category} has no version in force on {date}")]
    CategoryNotInForce {
        category: CategoryId,
        date: NaiveDate,
    },

    // ---- entitlements ---------------------------------------------------
    /// The person already has a running entitlement in this programme (one
    /// allowance per person: the highest coefficient). Change that one instead.
    #[error("an entitlement is already running for this person: {entitlement}")]
    ActiveEntitlementExists { entitlement: EntitlementId },
    /// An earlier entitlement of this person in this programme was stopped but
    /// pays every month through `last_payable` (the month of the stop, or a later month
    /// it had already paid ahead), so a grant from that month or earlier would pay a
    /// month twice. Grant from the month after `last_payable`.
    #[error(
        "entitlement {entitlement} of this person pays through {last_payable}, months paid ahead included; grant from a later month"
    )]
    GrantOverlapsStopped {
        entitlement: EntitlementId,
        last_payable: Month,
    },
    /// The person's household moved here, and where it lived before it was paid this
    /// allowance through `last_payable` (a run pays the month a household leaves, and a
    /// month may have been paid ahead before the move), so a
    /// grant from that month or earlier would pay a month twice. Grant from the month
    /// after `last_payable`.
    #[error(
        "this person was paid this allowance in household {household} before its move, through {last_payable}; grant from a later month"
    )]
    GrantOverlapsPaidBeforeMove {
        household: HouseholdRef,
        last_payable: Month,
    },
    /// No entitlement with this id. Check the id.
    #[error("unknown entitlement {entitlement}")]
    UnknownEntitlement { entitlement: EntitlementId },
    /// The entitlement was stopped; nothing more changes on it. Grant a new
    /// one if the person qualifies again.
    #[error("entitlement {entitlement} was stopped on {on}")]
    EntitlementStopped {
        entitlement: EntitlementId,
        on: NaiveDate,
    },
    /// Terms change from a month not after the latest change. Give a later
    /// month (corrections of past terms are not modelled).
    #[error("change from {from} is not after the previous terms from {previous}")]
    ChangeNotAfterPrevious { from: Month, previous: Month },
    /// Months up to `instructed_through` are already instructed at the old
    /// terms. Change from the month after; settle arrears outside this module.
    #[error("change from {from} touches months already instructed (through {instructed_through})")]
    ChangeBeforeInstructedMonth {
        from: Month,
        instructed_through: Month,
    },
    /// The entitlement reached its bound of terms periods. Stop it and grant
    /// a new one.
    #[error("entitlement already has the maximum of {max} terms periods")]
    TooManyChanges { max: usize },
    /// A stop dated after the day it is recorded (the edges record a stop today, in
    /// Vietnam). Record it on or after the day it happened.
    #[error("stop date {on} is after the day it is recorded, {effective}")]
    StopDateInFuture { on: NaiveDate, effective: NaiveDate },

    // ---- budgets --------------------------------------------------------
    /// The allocation would pass the money ceiling. Check the amount.
    #[error("allocating {requested} on {budget:?} (already {allocated}) passes {max}")]
    AllocationTooLarge {
        budget: BudgetKey,
        allocated: Decimal,
        requested: Decimal,
        max: Decimal,
    },
    /// Only unused allocation can be taken back. Take at most `available`.
    #[error("cannot take back {requested} from {budget:?}: {available} available")]
    DeallocationOverAvailable {
        budget: BudgetKey,
        available: Decimal,
        requested: Decimal,
    },
    /// The hold would pay beyond the allocation. Top up the budget, then
    /// retry.
    #[error("budget {budget:?} has {available} available, {requested} requested")]
    BudgetExceeded {
        budget: BudgetKey,
        available: Decimal,
        requested: Decimal,
    },

    // ---- payment runs and instructions ----------------------------------
    /// The run would issue more than `max` instructions. Run per commune.
    #[error("run would issue more than {max} instructions")]
    RunTooLarge { max: usize },
    /// Every budget the run needed is short; nothing was issued. Top up the
    /// listed budgets and run again.
    #[error("no budget covers the run: {}", sentences(shortfalls))]
    RunUnfunded { shortfalls: Vec<Shortfall> },
    /// No instruction with this id. Check the id.
    #[error("unknown instruction {instruction}")]
    UnknownInstruction { instruction: InstructionId },
    /// Only a pending (instructed) instruction can time out. Reload it: a
    /// result arrived meanwhile.
    #[error("instruction {instruction} is {status:?}, not pending")]
    InstructionNotPending {
        instruction: InstructionId,
        status: InstructionStatus,
    },
    /// Too early to give up on the gateway. Retry on or after `due_on`.
    #[error("instruction {instruction} may time out from {due_on}")]
    NotDueForTimeout {
        instruction: InstructionId,
        due_on: NaiveDate,
    },
    /// Only failed, returned or timed-out instructions are reissued. Wait for
    /// a result (or the timeout) first.
    #[error("instruction {instruction} is {status:?} and cannot be reissued")]
    NotReissuable {
        instruction: InstructionId,
        status: InstructionStatus,
    },
    /// The gateway posted that `instruction` (an attempt of this month) was settled, in
    /// its transaction `gateway_txn`, after the ledger had stopped waiting for it; the post
    /// was refused and recorded, but the person may hold the money. Reconcile with the
    /// gateway before paying the month by any other means.
    #[error(
        "gateway {gateway} posted that instruction {instruction} was settled (transaction {gateway_txn}) after the ledger had stopped waiting for it; reconcile with the gateway before paying this month again"
    )]
    LateSettlementToReconcile {
        instruction: InstructionId,
        gateway: GatewayId,
        gateway_txn: GatewayTxnId,
    },
    /// A later attempt exists; act on `latest` instead.
    #[error("instruction {instruction} was already reissued as {latest}")]
    AlreadyReissued {
        instruction: InstructionId,
        latest: InstructionId,
    },
    /// The month has had `max` attempts. A person must look into the case
    /// (beneficiary unreachable?) before paying by other means.
    #[error("instruction {instruction} reached the maximum of {max} attempts")]
    TooManyAttempts {
        instruction: InstructionId,
        max: u32,
    },
    /// The entitlement stopped before this month; it is no longer owed.
    #[error("entitlement {entitlement} does not cover {month}")]
    MonthNotPayable {
        entitlement: EntitlementId,
        month: Month,
    },
    /// The entitlement's beneficiary died before this month: it is paid through the month
    /// of death (Decree 20/2021), so a later month is not paid again. Stop the
    /// entitlement; nothing is owed past `died_on`'s month.
    #[error("the beneficiary died on {died_on}: no month after it is paid")]
    BeneficiaryDied { died_on: NaiveDate },
    /// The entitlement's beneficiary is no longer one of its household's citizens (a
    /// member change took them out, or the household's data were erased): the household
    /// they joined may pay them, so this one pays no month again. Stop the entitlement.
    #[error(
        "the beneficiary of entitlement {entitlement} is no longer a member of household {household}: stop the entitlement"
    )]
    BeneficiaryNotAMember {
        entitlement: EntitlementId,
        household: HouseholdRef,
    },
    /// The household's personal data were erased (its data key destroyed): no member of it
    /// can be identified as the payee or verified as the beneficiary any more, with a
    /// citizen id or without, so it is granted nothing and no month of it is paid again.
    /// Stop its entitlements.
    #[error(
        "household {household}'s personal data were erased: nobody of it can be paid; stop its entitlements"
    )]
    HouseholdErased { household: HouseholdRef },
    /// The household left the partition before this month (moved out, or its last member
    /// died): the month is owed where it lives now, and the run here pays no month after
    /// the one it left, so a reissue here could pay it twice. Stop the entitlement; pay the
    /// month, if it is owed, where the household lives.
    #[error(
        "household {household} no longer lives in this partition in {month}: the month is not paid here"
    )]
    HouseholdNoLongerResident {
        household: HouseholdRef,
        month: Month,
    },
    /// The command is dated before the instruction's last change. Use the
    /// real date (on or after `last`).
    #[error("effective date {effective} is before the last change on {last}")]
    BackDated {
        last: NaiveDate,
        effective: NaiveDate,
    },
    /// A payment run, reissue or timeout dated before the latest one the partition has
    /// recorded (`Book::latest_operation_on`). An instruction's age counts from its
    /// run's date, so a back-dated run would make its instructions time out early while
    /// their gateway may still pay them. Date it on or after `latest` (the edges date
    /// these today).
    #[error(
        "a payment run, reissue or timeout dated {effective} is before the partition's latest one, dated {latest}; date it on or after {latest}"
    )]
    PaymentOperationBackDated {
        latest: NaiveDate,
        effective: NaiveDate,
    },
    /// The gateway has had `max` refused posts recorded today. Stop taking its
    /// posts at the edge and call the gateway operator.
    #[error("gateway {gateway} reached {max} refused posts on {day}")]
    RefusalLimitReached {
        gateway: GatewayId,
        day: NaiveDate,
        max: u32,
    },
}

/// Shortfalls in words, joined: what a person reads of a refused run.
fn sentences(shortfalls: &[Shortfall]) -> String {
    shortfalls
        .iter()
        .map(Shortfall::sentence)
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<MoneyError> for Rejection {
    /// Payments name a negative and a zero amount alike: neither moves money.
    fn from(e: MoneyError) -> Self {
        match e {
            MoneyError::Negative { amount } => Rejection::AmountNotPositive { amount },
            MoneyError::Zero => Rejection::AmountNotPositive {
                amount: Decimal::ZERO,
            },
            MoneyError::Fractional { amount } => Rejection::FractionalDong { amount },
            MoneyError::TooLarge { amount, max } => Rejection::AmountTooLarge { amount, max },
            MoneyError::Overflow => Rejection::ArithmeticOverflow,
        }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;
    use crate::domain::money::{MAX_AMOUNT, positive_vnd};

    /// The shared money rule, named as the payments book names it.
    #[test]
    fn amounts_are_refused_in_the_payments_books_words() {
        let refused = |amount| Rejection::from(positive_vnd(amount).unwrap_err());
        assert_eq!(
            refused(dec!(0)),
            Rejection::AmountNotPositive { amount: dec!(0) }
        );
        assert_eq!(
            refused(dec!(-1)),
            Rejection::AmountNotPositive { amount: dec!(-1) }
        );
        assert_eq!(
            refused(dec!(1.5)),
            Rejection::FractionalDong { amount: dec!(1.5) }
        );
        assert!(matches!(
            refused(MAX_AMOUNT + dec!(1)),
            Rejection::AmountTooLarge { .. }
        ));
        assert_eq!(positive_vnd(dec!(100.00)).unwrap().to_string(), "100");
    }
}
