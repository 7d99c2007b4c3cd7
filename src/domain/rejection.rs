//! The one error enum for every refused command or invalid input.
//!
//! Each variant's doc comment says what a caller is expected to do with it.
//! Variants carry the numbers that made the decision so that a caller can
//! show them to an operator without recomputing anything.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::domain::eligibility::{Area, Status};
use crate::domain::money::MoneyError;

/// Why a command (or an input to one) was refused. Refusals never change state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    // ---- identifiers ----------------------------------------------------
    /// The CCCD is not exactly 12 characters long. Ask the operator to re-key
    /// it from the card; do not pad or trim on their behalf.
    #[error("citizen id must be 12 digits, got {found} characters")]
    CitizenIdLength { found: usize },
    /// The CCCD contains a non-ASCII-digit at `position` (0-based). Re-key it.
    #[error("citizen id has a non-digit at position {position}")]
    CitizenIdNonDigit { position: usize },
    /// A commune code is not exactly 7 characters (2 province + 5 commune).
    /// Pick the commune from the 2025 administrative map list instead of typing.
    #[error("commune code must be 7 digits, got {found} characters")]
    CommuneCodeLength { found: usize },
    /// A commune code contains a non-digit at `position`. Pick it from the list.
    #[error("commune code has a non-digit at position {position}")]
    CommuneCodeNonDigit { position: usize },
    /// A partition (province code) is not exactly 2 ASCII digits. This is a
    /// configuration error in the caller; fix the partition setting.
    #[error("province code must be 2 digits")]
    ProvinceCodeMalformed,

    // ---- amounts --------------------------------------------------------
    /// A money amount is negative. Amounts are always entered as positive
    /// magnitudes; to undo a posting use `Reverse`, never a negative amount.
    #[error("amount {amount} is negative")]
    NegativeAmount { amount: Decimal },
    /// A money amount is zero where a movement of money is required. Drop
    /// the command: there is nothing to post.
    #[error("amount must be greater than zero")]
    ZeroAmount,
    /// A money amount has a fraction of a đồng. VND has no minor unit; ask
    /// the operator for the whole-đồng amount actually counted.
    #[error("amount {amount} is not a whole number of đồng")]
    FractionalDong { amount: Decimal },
    /// A money amount exceeds the sanity ceiling `money::MAX_AMOUNT`. Almost
    /// certainly a keying error (extra zeros); ask the operator to re-key.
    #[error("amount {amount} exceeds the ceiling {max}")]
    AmountTooLarge { amount: Decimal, max: Decimal },
    /// Checked arithmetic overflowed while computing a result. Should be
    /// unreachable below the ceilings; report it as a defect with the command.
    #[error("arithmetic overflow")]
    ArithmeticOverflow,

    // ---- command envelope ----------------------------------------------
    /// The command names no actor. Every change must be attributable; the
    /// caller must supply the signed-in officer's id.
    #[error("actor is missing")]
    MissingActor,
    /// The command gives no reason. Ask the operator for one (audit rule).
    #[error("reason is missing")]
    MissingReason,

    // ---- eligibility ----------------------------------------------------
    /// No poverty standard is in force on that date (before 2022 or after
    /// 2030 with the data shipped). Ship the new standard's data file first.
    #[error("no poverty standard in force on {date}")]
    NoStandardInForce { date: NaiveDate },
    /// A deprivation indicator name is not one of the standard's 12. Show the
    /// standard's list to the operator; never guess a mapping.
    #[error("unknown deprivation indicator {name:?} in standard {standard}")]
    UnknownIndicator { name: String, standard: String },
    /// The review year does not fit the decision: it is already over on the
    /// decision date, is more than one year ahead, or leaves no validity under
    /// the standard in force. Correct the review year or the decision date.
    #[error("review year {review_year} does not fit decision date {decision_date}")]
    ReviewYearOutOfRange {
        review_year: i32,
        decision_date: NaiveDate,
    },
    /// The household's latest decision is for a later review year (next year's list,
    /// drawn up at the year's end): a decision for an earlier year would replace it and
    /// leave the household with no standing in that later year. Review for `latest`.
    #[error(
        "the household's latest decision is for review year {latest}; a review for {review_year} would replace it"
    )]
    ReviewYearBehindLatest { latest: i32, review_year: i32 },
    /// A correction names a decision other than the household's latest one recorded in
    /// this partition (`latest`, by partition sequence; none when the household has no
    /// decision here, or only the standing a move carried in). Only the latest decision
    /// can be corrected; name it, or record a new decision without `corrects`.
    #[error(
        "decision {corrects} is not the household's latest decision in this partition{}; only the latest can be corrected",
        latest.map_or_else(|| " (it has none)".to_string(), |l| format!(" (that is {l})"))
    )]
    CorrectsNotLatest { corrects: u64, latest: Option<u64> },
    /// A correction is for another review year than the decision it corrects (made for
    /// `corrected`'s list). A review for another year is a new decision: record it
    /// without `corrects`, or give the corrected decision's review year.
    #[error(
        "the corrected decision is for review year {corrected}; a correction of it is for the same year, not {review_year}"
    )]
    CorrectionForAnotherReviewYear { corrected: i32, review_year: i32 },

    // ---- programmes -----------------------------------------------------
    /// No credit programme has this id. Pick one from the programme list.
    #[error("unknown programme {id}")]
    UnknownProgramme { id: String },
    /// The programme exists but no version of it is in force on that date.
    /// Use a date inside a version's validity or publish a new version.
    #[error("programme {id} has no version in force on {date}")]
    ProgrammeNotInForce { id: String, date: NaiveDate },

    // ---- registry -------------------------------------------------------
    /// Not a household id of the shape "CCCCCCC-NNNNNN" (7-digit commune code,
    /// dash, 6-digit serial). Pick the household from the registry.
    #[error("household id {found:?} is not of the shape CCCCCCC-NNNNNN")]
    HouseholdIdMalformed { found: String },
    /// A household with this id is already registered. Use another serial, or
    /// change the existing household instead.
    #[error("household {household} is already registered")]
    HouseholdExists { household: String },
    /// No household with this id in this partition. Register it first, or check
    /// the id (a moved household has a new id in its new commune).
    #[error("household {household} is not registered")]
    HouseholdNotRegistered { household: String },
    /// The household moved away or dissolved; nothing more can be done under this id.
    #[error("household {household} no longer lives here")]
    HouseholdInactive { household: String },
    /// One of the citizens already belongs to `household` (an active household),
    /// or is listed twice. A person is in one household at a time: change or
    /// move that household first.
    #[error("a citizen is already registered in household {household}")]
    CitizenAlreadyRegistered { household: String },
    /// One of the citizens already belongs to a household outside the caller's unit,
    /// which is not named to them. A person is in one household at a time: staff of
    /// that household's commune or province change or move it first.
    #[error("a citizen is already registered in a household outside your unit")]
    CitizenRegisteredOutsideUnit,
    /// Members must be between 1 and `max`.
    #[error("{members} members is outside 1..={max}")]
    MembersOutOfRange { members: u32, max: u32 },
    /// Citizen ids are listed for at least the head and at most every member.
    #[error("{citizens} citizen ids do not fit {members} members")]
    CitizensDoNotFitMembers { citizens: usize, members: u32 },
    /// No member of the household holds a citizen id (the only one who did died, leaving
    /// young children), so it cannot move: its arrival would list no citizen. Record its
    /// members again first, with a guardian who holds one.
    #[error(
        "household {household} has no member with a citizen id; record its members again with one (a guardian) first"
    )]
    NoMemberWithCitizenId { household: String },
    /// The named citizen is not a member of the household (or still listed after a death).
    #[error("citizen is not a member of household {household}")]
    NotAMember { household: String },
    /// A member to remove was named by a name that more than one member without a
    /// citizen id bears: which of them left is not for the ledger to guess. Record the
    /// household's members as they now are (the whole list) instead.
    #[error(
        "more than one member of household {household} without a citizen id has this name; record the household's whole member list as it now is instead"
    )]
    AmbiguousMember { household: String },
    /// Sealed personal data are missing or larger than the limit: a defect in the caller.
    #[error("sealed personal data of {bytes} bytes is missing or too large")]
    SealedDataMalformed { bytes: usize },
    /// The household's personal data were already erased.
    #[error("personal data of household {household} are already erased")]
    AlreadyErased { household: String },
    /// The household moved away, and its data went with it under the same data key:
    /// they are erased where it lives now, which erases both.
    #[error(
        "household {household} moved to {to}; its personal data went with it under the same key: erase them at {to}"
    )]
    HouseholdMovedAway { household: String, to: String },
    /// The change is dated before the household's registration here.
    #[error("effective date {effective} is before the household's registration on {since}")]
    RegistryBackDated {
        since: NaiveDate,
        effective: NaiveDate,
    },
    /// The household still has open loans; settle, write off or transfer them first.
    #[error("household {household} has open loan {loan}")]
    OpenLoans { household: String, loan: u64 },
    /// The household's members have payments instructed for months after the month it
    /// leaves that no gateway has answered yet. Once it has left, nothing would cancel
    /// them, and a grant where it arrives would pay those months again. Wait for the
    /// gateways' results (or the timeouts), or stop the entitlement dated the move, which
    /// cancels them; then move.
    #[error(
        "household {household} has payments for months after its move still pending ({}): wait for the gateway's result or the timeout, or stop the entitlement dated the move, then move",
        instructions.join(", ")
    )]
    PaymentsPendingAfterMove {
        household: String,
        instructions: Vec<String>,
    },
    /// The household belongs to another partition (province) than the one asked.
    #[error("household {household} does not belong to partition {partition}")]
    WrongPartition {
        household: String,
        partition: String,
    },
    /// The command decided nothing to record (e.g. marking a loan overdue when
    /// nothing is due): there is nothing to append; not an error for batch jobs.
    #[error("nothing to record")]
    NothingToRecord,
    /// This command does not go through this door (e.g. a move through the
    /// registry-change command): use the dedicated command.
    #[error("unsupported command: {what}")]
    UnsupportedCommand { what: String },
    /// The loan's household lies outside the caller's unit: the unit serving it acts.
    #[error("commune {commune} is outside unit {unit:?}")]
    OutsideUnit { unit: String, commune: String },
    /// A payments rule refused the command (budget, entitlement, instruction, post).
    #[error(transparent)]
    Payment(#[from] crate::domain::payments::Rejection),
    /// This gateway result was already answered (event `first` of the payments book):
    /// append nothing, send the first answer again.
    #[error("gateway post already answered by payment event {first}")]
    DuplicatePost { first: u64 },
    /// A new gateway post whose own timestamp is too far from the ledger's clock: a
    /// replay of a captured post, or a gateway clock to fix. (A repeat of a post
    /// already answered is never refused: it gets its first answer.)
    #[error("gateway post dated {skew_ms} ms away from the ledger's clock")]
    PostOutsideReplayWindow { skew_ms: i64 },
    /// A new gateway post whose transaction id and outcome the same gateway already had
    /// accepted for an instruction of another partition (`instruction`, as gateways name
    /// it): one bank transfer cannot settle (or return) two instructions. Within one
    /// partition the book records such a post as refused (`TransactionIdReused`); across
    /// partitions the projections find it, so it appends nothing (ADR 0018).
    #[error("this gateway's transaction id was already accepted for instruction {instruction}")]
    TransactionIdUsedElsewhere { instruction: String },
    /// Timeouts asked as of a day after today (in Vietnam, by the ledger's clock): they
    /// would give up on payments a gateway may still be making, and a reissue would pay
    /// them twice. Ask as of today or an earlier day.
    #[error("timeouts as of {as_of} cannot be asked before that day (today is {today})")]
    TimeoutsAsOfInFuture { as_of: NaiveDate, today: NaiveDate },
    /// A payment run or reissue dated after today (in Vietnam, by the ledger's clock):
    /// gateways fetch an instruction as soon as it is issued, and every result they post
    /// before its date would be refused as back-dated, leaving money paid and unrecorded.
    /// Issue it on today or an earlier day.
    #[error("instructions cannot be issued on {on}, a day still to come (today is {today})")]
    IssuedInFuture { on: NaiveDate, today: NaiveDate },
    /// A loan, review or registry command dated after today (in Vietnam, by the ledger's
    /// clock): a mistyped year would accrue years of interest, or date the household so
    /// far ahead that every later command is refused as back-dated. Date it today or
    /// earlier.
    #[error("dated {on}, a day still to come (today is {today})")]
    DatedInFuture { on: NaiveDate, today: NaiveDate },
    /// Area must be "rural" or "urban".
    #[error("area {found:?} is neither rural nor urban")]
    AreaMalformed { found: String },

    // ---- households and loans -------------------------------------------
    /// The book holds no classification decision for this household. Record
    /// the commune's classification decision first (`Classify`).
    #[error("household {household} has no classification in the book")]
    UnknownHousehold { household: String },
    /// The household's classification has lapsed on that date. Record the
    /// new review's decision first, then retry.
    #[error("household classification expired on {valid_to}")]
    ClassificationExpired { valid_to: NaiveDate },
    /// A review's area is not the one the household is registered in: the income line
    /// depends on it, so a review must use the registered one. If the household lives
    /// elsewhere now, record its move first.
    #[error(
        "the review gives area {given:?}; the household is registered in a {registered:?} area"
    )]
    AreaDiffersFromRegistry { registered: Area, given: Area },
    /// The household's status on that date is not among the programme's
    /// eligible statuses. Offer a programme that fits, or refuse the loan.
    #[error("status {status:?} is not eligible for programme {programme}")]
    NotEligible { status: Status, programme: String },
    /// The approved amount exceeds the programme cap. Lower the amount.
    #[error("amount {amount} over programme cap {cap}")]
    AmountOverCap { amount: Decimal, cap: Decimal },
    /// The term is zero months or exceeds the programme's maximum. Choose a
    /// term between 1 and `max` months.
    #[error("term {term} months outside 1..={max}")]
    TermOutOfRange { term: u32, max: u32 },
    /// The household already has an active (not closed, not written-off)
    /// loan of the same programme. Top-ups are not modelled: refuse.
    #[error("household already has active loan {loan} in this programme")]
    ActiveLoanExists { loan: u64 },
    /// A savings-and-loan group id is required and was empty. Enrol the
    /// borrower in a group first (programme rule: no collateral, group-based).
    #[error("savings-and-loan group id is missing")]
    MissingSavingsGroup,
    /// No loan with that id in the book. Check the id.
    #[error("unknown loan {loan}")]
    UnknownLoan { loan: u64 },
    /// The command does not apply to a loan in this status (e.g. repaying a
    /// closed loan, disbursing a frozen one). Reload the loan and re-decide.
    #[error("loan {loan} is {status:?}, which does not allow this command")]
    WrongLoanStatus {
        loan: u64,
        status: crate::domain::loans::LoanStatus,
    },
    /// The tranche would take cumulative disbursement above the approved
    /// amount. Disburse at most `approved - already`.
    #[error("disbursing {requested} over approved {approved} (already {already})")]
    DisbursementOverApproved {
        approved: Decimal,
        already: Decimal,
        requested: Decimal,
    },
    /// The loan has been paid out in as many tranches as a loan may have
    /// (`loans::TRANCHES_MAX`). Pay what is left of the approval in one tranche.
    #[error("the loan already has {most} tranches, the most one loan may be paid out in")]
    TooManyTranches { most: u32 },
    /// The payment exceeds everything owed (posted interest, overdue interest
    /// and principal as of the effective date). Take at most `owed`.
    #[error("payment {offered} exceeds amount owed {owed}")]
    Overpayment { owed: Decimal, offered: Decimal },
    /// A classification dated before the household's latest decision: it would replace
    /// the newer standing and take the newer class as its prior one. Record reviews in
    /// date order (a correction on the latest decision's day or later).
    #[error(
        "decision dated {effective} is before the household's latest decision on {latest}; record reviews in date order"
    )]
    ClassificationBackDated {
        latest: NaiveDate,
        effective: NaiveDate,
    },
    /// The effective date is before the loan's last recorded event; back-dated
    /// postings would rewrite accrued interest. Use a date on/after `last`,
    /// or reverse and re-post.
    #[error("effective date {effective} is before the loan's last event on {last}")]
    BackDated {
        last: NaiveDate,
        effective: NaiveDate,
    },
    /// The loan was already extended once (the limit). Refuse or restructure
    /// outside this system.
    #[error("loan already extended")]
    AlreadyExtended,
    /// The loan fell due before the extension's date: an extension is decided by the due
    /// date, and what is unpaid after it is overdue. Mark it overdue, or restructure.
    #[error("the loan fell due on {due}; an extension is decided on or before that day")]
    ExtensionAfterDue { due: NaiveDate },
    /// A tranche dated on or after the loan's due date: it would be overdue as it is paid
    /// out. Extend the loan first (before it falls due), or approve a new loan.
    #[error("the loan falls due on {due}; a tranche is paid out before that day")]
    TrancheNotBeforeDue { due: NaiveDate },
    /// The new due date is not after the current one. Give a later date.
    #[error("new due date {new_due} is not after current due date {current_due}")]
    ExtensionNotLater {
        current_due: NaiveDate,
        new_due: NaiveDate,
    },
    /// The new due date is beyond the extension limit (12 months past the original
    /// due date for a loan of at most 12 months, half the term for a longer one), or
    /// an unfreeze moves it further than the loan stood frozen. Give a date on or
    /// before `max_due`.
    #[error("new due date {new_due} beyond the limit {max_due}")]
    ExtensionTooLong {
        max_due: NaiveDate,
        new_due: NaiveDate,
    },
    /// A freeze or write-off names no disaster/risk decision. Attach the
    /// competent authority's decision reference.
    #[error("disaster decision reference is missing")]
    MissingDisasterReference,
    /// No event with that number: through the book, the partition has not reached that
    /// sequence. Check the sequence on the event's receipt.
    #[error("unknown event {event}")]
    UnknownEvent { event: u64 },
    /// That event cannot be reversed: only disbursements and repayments can, once.
    /// It may already be reversed; else post a correcting command instead.
    #[error("event {event} cannot be reversed")]
    NotReversible { event: u64 },
    /// The event is not one of the loan named: a reversal names both, and they must
    /// agree. Check the loan's reference and the event's sequence (on its receipt).
    #[error("event {event} is not an event of loan {loan}")]
    EventOfAnotherLoan { event: u64, loan: u64 },
    /// Only a loan's latest event can be reversed; later events were computed
    /// on top of it. Reverse the later events first (newest first).
    #[error(
        "event {event} is not the loan's latest event{}",
        latest.map_or_else(String::new, |l| format!(": reverse event {l} first"))
    )]
    NotLatestEvent { event: u64, latest: Option<u64> },
}

impl From<MoneyError> for Rejection {
    fn from(e: MoneyError) -> Self {
        match e {
            MoneyError::Negative { amount } => Rejection::NegativeAmount { amount },
            MoneyError::Zero => Rejection::ZeroAmount,
            MoneyError::Fractional { amount } => Rejection::FractionalDong { amount },
            MoneyError::TooLarge { amount, max } => Rejection::AmountTooLarge { amount, max },
            MoneyError::Overflow => Rejection::ArithmeticOverflow,
        }
    }
}

impl Rejection {
    /// The refusal's variant name ("Overpayment"): the `error` member of an HTTP answer
    /// and the label of the refusal metric. Read from the derived `Debug`, which always
    /// starts with the variant name (tested in `http::error`, so a hand-written `Debug`
    /// would be caught).
    pub fn kind(&self) -> String {
        // A payments refusal is named for itself ("RunUnfunded"), not its wrapper.
        let text = match self {
            Rejection::Payment(r) => format!("{r:?}"),
            other => format!("{other:?}"),
        };
        text.split(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}
