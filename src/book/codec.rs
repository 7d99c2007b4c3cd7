//! Domain events ⇄ protobuf payloads. The only place that knows both shapes.
//!
//! **Invariant:** `payload → domain → payload` is the identity for every payload the
//! ledger writes, and domain event ids are derived from the chain position alone
//! (`accrual_id`, `main_id`), so the writer's book and every projection agree.

use std::str::FromStr;

use bytes::Bytes;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::eligibility::{
    Area, Class, ClassificationDecided, ClassificationInputs, Status,
};
use crate::domain::ids::HouseholdId;
use crate::domain::ledger::Posting;
use crate::domain::loans::{self, EventBody, EventId, LoanPosition};
use crate::domain::programmes::ProgrammeRef;
use crate::domain::registry::{BlindIndex, Change};
use crate::proto::{self, envelope::Payload};

/// A payload that does not decode into the domain: only possible for events not
/// written by this ledger's `decide` (a forgery that chains, or a newer version).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct CodecError {
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl ToString) -> CodecError {
    CodecError {
        field,
        problem: problem.to_string(),
    }
}

/// Id of the accrual a command triggered, inside the event at `sequence` (a position in
/// the chain, as for `main_id`).
pub fn accrual_id(sequence: u64) -> EventId {
    sequence
        .checked_mul(2)
        .expect("a chain position below 2^63")
}
/// Id of the main domain event carried by the event at `sequence`, a position in the
/// chain: no chain comes near 2^63 events. A sequence from outside (a person, a payload's
/// `original_sequence`) goes through `checked_main_id`.
pub fn main_id(sequence: u64) -> EventId {
    checked_main_id(sequence).expect("a chain position below 2^63")
}
/// `main_id` of a sequence given from outside: None past 2^63 - 1, where the id would not
/// fit (wrapped, 2^63 + s would name the event at s).
pub fn checked_main_id(sequence: u64) -> Option<EventId> {
    sequence.checked_mul(2)?.checked_add(1)
}
/// The partition sequence that carries domain event `id`.
pub fn sequence_of(id: EventId) -> u64 {
    id / 2
}

// ------------------------------------------------------------------ scalars

pub fn date(s: &NaiveDate) -> String {
    s.to_string()
}
fn opt_date(d: &Option<NaiveDate>) -> String {
    d.map(|d| d.to_string()).unwrap_or_default()
}
pub fn parse_date(field: &'static str, s: &str) -> Result<NaiveDate, CodecError> {
    NaiveDate::from_str(s).map_err(|e| bad(field, format!("{s:?}: {e}")))
}
fn parse_opt_date(field: &'static str, s: &str) -> Result<Option<NaiveDate>, CodecError> {
    if s.is_empty() {
        Ok(None)
    } else {
        parse_date(field, s).map(Some)
    }
}
fn money(d: &Decimal) -> String {
    d.normalize().to_string()
}
/// An amount as recorded: within the domain's bound (`money::MAX_AMOUNT`), which every
/// decision keeps, so that no sum a reader folds can overflow a Decimal (and panic) on a
/// forged record that chains.
pub fn parse_money(field: &'static str, s: &str) -> Result<Decimal, CodecError> {
    let d = Decimal::from_str(s).map_err(|e| bad(field, format!("{s:?}: {e}")))?;
    if d.abs() > crate::domain::money::MAX_AMOUNT {
        return Err(bad(
            field,
            format!("{s} is beyond the largest amount recorded"),
        ));
    }
    Ok(d)
}
/// An amount a field added after events were recorded carries: "" for zero, so an event
/// without it encodes to the same bytes as one recorded before the field.
fn money_or_empty(d: &Decimal) -> String {
    if d.is_zero() { String::new() } else { money(d) }
}
/// See `money_or_empty`: "" reads as zero.
fn parse_money_or_zero(field: &'static str, s: &str) -> Result<Decimal, CodecError> {
    if s.is_empty() {
        Ok(Decimal::ZERO)
    } else {
        parse_money(field, s)
    }
}
/// Unit enum variants travel as their Rust names ("WomensUnion", "Actual30").
pub fn name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => unreachable!("only unit variants are named"),
    }
}
pub fn parse_name<T: DeserializeOwned>(field: &'static str, s: &str) -> Result<T, CodecError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| bad(field, format!("unknown value {s:?}")))
}
fn household(field: &'static str, s: &str) -> Result<HouseholdId, CodecError> {
    HouseholdId::parse(s).map_err(|e| bad(field, e))
}
fn index(b: &[u8]) -> Result<BlindIndex, CodecError> {
    b.try_into()
        .map_err(|_| bad("citizen_index", "not 32 bytes"))
}
fn indexes(list: &[Bytes]) -> Result<Vec<BlindIndex>, CodecError> {
    list.iter().map(|b| index(b)).collect()
}
fn index_bytes(list: &[BlindIndex]) -> Vec<Bytes> {
    list.iter().map(|i| Bytes::copy_from_slice(i)).collect()
}

pub fn area_name(area: Area) -> &'static str {
    match area {
        Area::Rural => "rural",
        Area::Urban => "urban",
    }
}
pub fn parse_area(s: &str) -> Result<Area, CodecError> {
    match s {
        "rural" => Ok(Area::Rural),
        "urban" => Ok(Area::Urban),
        other => Err(bad("area", format!("{other:?}"))),
    }
}
pub fn class_name(class: Class) -> &'static str {
    match class {
        Class::Poor => "poor",
        Class::NearPoor => "near_poor",
        Class::AverageLivingStandard => "average",
        Class::NotPoor => "not_poor",
    }
}
fn parse_class(s: &str) -> Result<Class, CodecError> {
    Ok(match s {
        "poor" => Class::Poor,
        "near_poor" => Class::NearPoor,
        "average" => Class::AverageLivingStandard,
        "not_poor" => Class::NotPoor,
        other => return Err(bad("class", format!("{other:?}"))),
    })
}
pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Poor => "poor",
        Status::NearPoor => "near_poor",
        Status::EscapedPoverty => "escaped_poverty",
        Status::AverageLivingStandard => "average",
        Status::NotPoor => "not_poor",
    }
}
fn parse_status(s: &str) -> Result<Status, CodecError> {
    Ok(match s {
        "escaped_poverty" => Status::EscapedPoverty,
        other => parse_class(other)?.into(),
    })
}

// ------------------------------------------------------------------ registry

pub fn registry_payload(change: &Change, extra: MoveLink) -> Payload {
    match change {
        Change::Registered {
            household,
            area,
            members,
            citizens,
            sealed,
            on,
        } => Payload::HouseholdRegistered(proto::HouseholdRegistered {
            household_id: household.to_string(),
            commune_code: household.commune().to_string(),
            area: area_name(*area).into(),
            members: *members,
            citizen_indexes: index_bytes(citizens),
            sealed_personal: Bytes::copy_from_slice(sealed),
            registered_on: date(on),
        }),
        Change::MembersChanged {
            household,
            members,
            citizens,
            sealed,
            on,
            reason,
        } => Payload::HouseholdMembersChanged(proto::HouseholdMembersChanged {
            household_id: household.to_string(),
            members: *members,
            citizen_indexes: index_bytes(citizens),
            sealed_personal: Bytes::copy_from_slice(sealed),
            changed_on: date(on),
            reason: reason.clone(),
        }),
        Change::MemberDied {
            household,
            citizen,
            members,
            citizens,
            sealed,
            on,
        } => Payload::MemberDied(proto::MemberDied {
            household_id: household.to_string(),
            citizen_index: Bytes::copy_from_slice(citizen),
            died_on: date(on),
            members: *members,
            citizen_indexes: index_bytes(citizens),
            sealed_personal: Bytes::copy_from_slice(sealed),
        }),
        Change::MovedOut { household, to, on } => {
            let MoveLink::Out {
                members,
                citizens,
                standing,
                paid_before_move,
            } = extra
            else {
                unreachable!("a move-out is encoded with its MoveLink::Out")
            };
            Payload::HouseholdMovedOut(proto::HouseholdMovedOut {
                household_id: household.to_string(),
                to_household_id: to.to_string(),
                moved_on: date(on),
                members,
                citizen_indexes: index_bytes(&citizens),
                standing,
                paid_before_move,
            })
        }
        Change::MovedIn {
            household,
            from,
            area,
            members,
            citizens,
            sealed,
            on,
        } => {
            let MoveLink::In {
                from_partition,
                from_sequence,
                from_hash,
                standing,
                paid_before_move,
            } = extra
            else {
                unreachable!("a move-in is encoded with its MoveLink::In")
            };
            Payload::HouseholdMovedIn(proto::HouseholdMovedIn {
                household_id: household.to_string(),
                commune_code: household.commune().to_string(),
                area: area_name(*area).into(),
                members: *members,
                citizen_indexes: index_bytes(citizens),
                sealed_personal: Bytes::copy_from_slice(sealed),
                moved_on: date(on),
                from_household_id: from.to_string(),
                from_partition,
                from_sequence,
                from_hash: Bytes::copy_from_slice(&from_hash),
                standing,
                paid_before_move,
            })
        }
        Change::Erased {
            household,
            on,
            reference,
        } => Payload::PersonalDataErased(proto::PersonalDataErased {
            household_id: household.to_string(),
            erased_on: date(on),
            reference: reference.clone(),
        }),
    }
}

/// What a move's event carries beyond the registry change.
#[derive(Clone, Debug, Default)]
pub enum MoveLink {
    #[default]
    None,
    Out {
        members: u32,
        citizens: Vec<BlindIndex>,
        standing: Option<proto::EligibilityDecided>,
        paid_before_move: Vec<proto::PaidBeforeMove>,
    },
    In {
        from_partition: String,
        from_sequence: u64,
        from_hash: [u8; 32],
        standing: Option<proto::EligibilityDecided>,
        paid_before_move: Vec<proto::PaidBeforeMove>,
    },
}

/// The registry change a payload records, if it is a registry payload.
pub fn registry_change(payload: &Payload) -> Result<Option<Change>, CodecError> {
    Ok(Some(match payload {
        Payload::HouseholdRegistered(p) => Change::Registered {
            household: household("household_id", &p.household_id)?,
            area: parse_area(&p.area)?,
            members: p.members,
            citizens: indexes(&p.citizen_indexes)?,
            sealed: p.sealed_personal.to_vec(),
            on: parse_date("registered_on", &p.registered_on)?,
        },
        Payload::HouseholdMembersChanged(p) => Change::MembersChanged {
            household: household("household_id", &p.household_id)?,
            members: p.members,
            citizens: indexes(&p.citizen_indexes)?,
            sealed: p.sealed_personal.to_vec(),
            on: parse_date("changed_on", &p.changed_on)?,
            reason: p.reason.clone(),
        },
        Payload::MemberDied(p) => Change::MemberDied {
            household: household("household_id", &p.household_id)?,
            citizen: index(&p.citizen_index)?,
            members: p.members,
            citizens: indexes(&p.citizen_indexes)?,
            sealed: p.sealed_personal.to_vec(),
            on: parse_date("died_on", &p.died_on)?,
        },
        Payload::HouseholdMovedOut(p) => Change::MovedOut {
            household: household("household_id", &p.household_id)?,
            to: household("to_household_id", &p.to_household_id)?,
            on: parse_date("moved_on", &p.moved_on)?,
        },
        Payload::HouseholdMovedIn(p) => Change::MovedIn {
            household: household("household_id", &p.household_id)?,
            from: household("from_household_id", &p.from_household_id)?,
            area: parse_area(&p.area)?,
            members: p.members,
            citizens: indexes(&p.citizen_indexes)?,
            sealed: p.sealed_personal.to_vec(),
            on: parse_date("moved_on", &p.moved_on)?,
        },
        Payload::PersonalDataErased(p) => Change::Erased {
            household: household("household_id", &p.household_id)?,
            on: parse_date("erased_on", &p.erased_on)?,
            reference: p.reference.clone(),
        },
        _ => return Ok(None),
    }))
}

// ------------------------------------------------------------------ eligibility

pub fn decided_to_proto(
    d: &ClassificationDecided,
    escaped_until: Option<NaiveDate>,
) -> proto::EligibilityDecided {
    proto::EligibilityDecided {
        household_id: d.household.to_string(),
        review_year: d.inputs.review_year as u32,
        income_per_person_vnd: money(&d.inputs.income_per_person_month),
        area: area_name(d.inputs.area).into(),
        deprived_indicators: d.inputs.deprived.iter().cloned().collect(),
        standard_id: d.standard_id.clone(),
        standard_hash: d.standard_hash.clone(),
        class: class_name(d.class).into(),
        decided_on: date(&d.decision_date),
        valid_from: date(&d.valid_from),
        valid_to: date(&d.valid_to),
        prior_class: d
            .prior_class
            .map(|c| class_name(c).to_string())
            .unwrap_or_default(),
        status: status_name(d.status).into(),
        escaped_until: opt_date(&escaped_until),
        corrects: d.corrects.map_or(0, sequence_of),
        validity_rule: d.validity_rule,
    }
}

/// The decision an `EligibilityDecided` records, under `household` (a move-in
/// re-files the decision under the household's new id).
pub fn decided_from_proto(
    p: &proto::EligibilityDecided,
    household: HouseholdId,
    decided_by: &str,
) -> Result<(ClassificationDecided, Option<NaiveDate>), CodecError> {
    let review_year =
        i32::try_from(p.review_year).map_err(|_| bad("review_year", p.review_year))?;
    // The ledger writes the indicators as a set, in order and once each. A repeated name
    // would be dropped by the set here while a reader of the event counts it: refused,
    // so that every reader counts the same indicators.
    if let Some(pair) = p
        .deprived_indicators
        .windows(2)
        .find(|pair| pair[0] >= pair[1])
    {
        return Err(bad(
            "deprived_indicators",
            format!(
                "{:?} then {:?}: not in order, or named twice",
                pair[0], pair[1]
            ),
        ));
    }
    let decision = ClassificationDecided {
        household,
        inputs: ClassificationInputs {
            income_per_person_month: parse_money(
                "income_per_person_vnd",
                &p.income_per_person_vnd,
            )?,
            area: parse_area(&p.area)?,
            deprived: p.deprived_indicators.iter().cloned().collect(),
            review_year,
        },
        standard_id: p.standard_id.clone(),
        standard_hash: p.standard_hash.clone(),
        class: parse_class(&p.class)?,
        prior_class: if p.prior_class.is_empty() {
            None
        } else {
            Some(parse_class(&p.prior_class)?)
        },
        status: parse_status(&p.status)?,
        // 0 is none, as an event written before corrections were recorded reads.
        corrects: match p.corrects {
            0 => None,
            s => Some(
                checked_main_id(s)
                    .ok_or_else(|| bad("corrects", "past any sequence of a chain"))?,
            ),
        },
        decided_by: decided_by.to_owned(),
        decision_date: parse_date("decided_on", &p.decided_on)?,
        valid_from: parse_date("valid_from", &p.valid_from)?,
        valid_to: parse_date("valid_to", &p.valid_to)?,
        // Kept as recorded, known or not: the book holds the recorded period, and only a
        // recomputation needs the rule (`eligibility::recompute` refuses one it does not
        // know).
        validity_rule: p.validity_rule,
    };
    Ok((decision, parse_opt_date("escaped_until", &p.escaped_until)?))
}

/// The standing a recorded decision gives its household in the book (what `loans::apply`
/// keeps of it), read from the fields the book's rule (`HouseholdStanding::statuses_on`)
/// reads: an audit judges money against it without deciding anything. What the household
/// held before it is not in the decision alone, so `before` is None: a standing read this
/// way is never corrected.
pub fn standing_from_proto(
    p: &proto::EligibilityDecided,
    decision_event: EventId,
) -> Result<loans::HouseholdStanding, CodecError> {
    Ok(loans::HouseholdStanding {
        class: parse_class(&p.class)?,
        status: parse_status(&p.status)?,
        valid_from: parse_date("valid_from", &p.valid_from)?,
        valid_to: parse_date("valid_to", &p.valid_to)?,
        escaped_until: parse_opt_date("escaped_until", &p.escaped_until)?,
        decision_event,
        review_year: i32::try_from(p.review_year).map_err(|_| bad("review_year", p.review_year))?,
        before: None,
    })
}

// ------------------------------------------------------------------ credit

fn postings_to_proto(list: &[Posting]) -> Vec<proto::Posting> {
    list.iter()
        .map(|p| proto::Posting {
            account: name(&p.account),
            debit: money(&p.debit),
            credit: money(&p.credit),
        })
        .collect()
}
fn postings_from_proto(list: &[proto::Posting]) -> Result<Vec<Posting>, CodecError> {
    list.iter()
        .map(|p| {
            Ok(Posting {
                account: parse_name("posting.account", &p.account)?,
                debit: parse_money("posting.debit", &p.debit)?,
                credit: parse_money("posting.credit", &p.credit)?,
            })
        })
        .collect()
}

pub fn position_to_proto(p: &LoanPosition) -> proto::LoanPosition {
    proto::LoanPosition {
        status: name(&p.status),
        disbursed: money(&p.disbursed),
        principal: money(&p.principal),
        overdue_principal: money(&p.overdue_principal),
        interest_receivable: money(&p.interest_receivable),
        overdue_interest_receivable: money(&p.overdue_interest_receivable),
        carry_interest: p.carry_interest.to_string(),
        carry_overdue_interest: p.carry_overdue_interest.to_string(),
        principal_repaid: money(&p.principal_repaid),
        accrued_to: opt_date(&p.accrued_to),
        schedule_start: opt_date(&p.schedule_start),
        due: opt_date(&p.due),
        original_due: opt_date(&p.original_due),
        extensions: p.extensions,
        last_event_on: date(&p.last_event_on),
    }
}
fn position_from_proto(p: &proto::LoanPosition) -> Result<LoanPosition, CodecError> {
    Ok(LoanPosition {
        status: parse_name("restored.status", &p.status)?,
        disbursed: parse_money("restored.disbursed", &p.disbursed)?,
        principal: parse_money("restored.principal", &p.principal)?,
        overdue_principal: parse_money("restored.overdue_principal", &p.overdue_principal)?,
        interest_receivable: parse_money("restored.interest_receivable", &p.interest_receivable)?,
        overdue_interest_receivable: parse_money(
            "restored.overdue_interest_receivable",
            &p.overdue_interest_receivable,
        )?,
        carry_interest: parse_money("restored.carry_interest", &p.carry_interest)?,
        carry_overdue_interest: parse_money(
            "restored.carry_overdue_interest",
            &p.carry_overdue_interest,
        )?,
        principal_repaid: parse_money("restored.principal_repaid", &p.principal_repaid)?,
        accrued_to: parse_opt_date("restored.accrued_to", &p.accrued_to)?,
        schedule_start: parse_opt_date("restored.schedule_start", &p.schedule_start)?,
        due: parse_opt_date("restored.due", &p.due)?,
        original_due: parse_opt_date("restored.original_due", &p.original_due)?,
        extensions: p.extensions,
        last_event_on: parse_date("restored.last_event_on", &p.last_event_on)?,
    })
}

fn accrual_to_proto(e: &loans::Event) -> proto::LoanInterestAccrued {
    let EventBody::InterestAccrued {
        loan,
        from,
        to,
        days,
        interest_exact,
        overdue_interest_exact,
        interest_posted,
        overdue_interest_posted,
        carry_interest_after,
        carry_overdue_interest_after,
        postings,
    } = &e.body
    else {
        unreachable!("called with an accrual")
    };
    proto::LoanInterestAccrued {
        loan_number: *loan,
        from: date(from),
        to: date(to),
        days: *days,
        interest_exact: interest_exact.to_string(),
        overdue_interest_exact: overdue_interest_exact.to_string(),
        interest_posted: money(interest_posted),
        overdue_interest_posted: money(overdue_interest_posted),
        carry_interest_after: carry_interest_after.to_string(),
        carry_overdue_interest_after: carry_overdue_interest_after.to_string(),
        postings: postings_to_proto(postings),
        effective_on: date(&e.effective),
        reason: e.reason.clone(),
    }
}

fn accrual_from_proto(
    p: &proto::LoanInterestAccrued,
    id: EventId,
    actor: &str,
) -> Result<loans::Event, CodecError> {
    Ok(loans::Event {
        id,
        actor: actor.to_owned(),
        reason: p.reason.clone(),
        effective: parse_date("effective_on", &p.effective_on)?,
        body: EventBody::InterestAccrued {
            loan: p.loan_number,
            from: parse_date("from", &p.from)?,
            to: parse_date("to", &p.to)?,
            days: p.days,
            interest_exact: parse_money("interest_exact", &p.interest_exact)?,
            overdue_interest_exact: parse_money(
                "overdue_interest_exact",
                &p.overdue_interest_exact,
            )?,
            interest_posted: parse_money("interest_posted", &p.interest_posted)?,
            overdue_interest_posted: parse_money(
                "overdue_interest_posted",
                &p.overdue_interest_posted,
            )?,
            carry_interest_after: parse_money("carry_interest_after", &p.carry_interest_after)?,
            carry_overdue_interest_after: parse_money(
                "carry_overdue_interest_after",
                &p.carry_overdue_interest_after,
            )?,
            postings: postings_from_proto(&p.postings)?,
        },
    })
}

/// The payloads for the loan events one command decided, one event of the log each: an
/// optional accrual and the event it leads to, or an accrual alone (a command's steps:
/// each instalment that fell due moved to overdue, then the command's own event). Empty
/// when the command decided nothing.
pub fn loan_payloads(events: &[loans::Event]) -> Vec<Payload> {
    let mut payloads = Vec::new();
    let mut rest = events;
    while !rest.is_empty() {
        // An accrual followed by an event that is not one travels with it; any other
        // event, or an accrual followed by another accrual, travels alone.
        let step = match rest {
            [a, m, ..]
                if matches!(a.body, EventBody::InterestAccrued { .. })
                    && !matches!(m.body, EventBody::InterestAccrued { .. }) =>
            {
                2
            }
            _ => 1,
        };
        let (head, tail) = rest.split_at(step);
        payloads.push(loan_payload(head));
        rest = tail;
    }
    payloads
}

/// The payload of one step of a loan decision: an optional accrual and one main event,
/// or an accrual alone.
fn loan_payload(events: &[loans::Event]) -> Payload {
    let (accrual, main) = match events {
        [only] => (None, only),
        [a, m] => (Some(a), m),
        _ => unreachable!("loan_payloads cuts steps of one or two events"),
    };
    let acc = accrual.map(accrual_to_proto);
    let eff = date(&main.effective);
    let reason = main.reason.clone();
    match &main.body {
        EventBody::InterestAccrued { .. } => Payload::LoanInterestAccrued(accrual_to_proto(main)),
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
        } => Payload::LoanApproved(proto::LoanApproved {
            loan_number: *loan,
            household_id: household.to_string(),
            programme_id: programme.id.clone(),
            programme_version: programme.version,
            monthly_rate: monthly_rate.to_string(),
            overdue_monthly_rate: overdue_monthly_rate.to_string(),
            day_count: name(day_count),
            amount: money(amount),
            term_months: *term_months,
            savings_group: savings_group.clone(),
            entrusted: name(entrusted),
            effective_on: eff,
            reason,
        }),
        EventBody::TrancheDisbursed {
            loan,
            amount,
            channel,
            schedule_start,
            due,
            postings,
        } => Payload::LoanTrancheDisbursed(proto::LoanTrancheDisbursed {
            loan_number: *loan,
            amount: money(amount),
            channel: name(channel),
            schedule_start: date(schedule_start),
            due: date(due),
            postings: postings_to_proto(postings),
            effective_on: eff,
            reason,
            accrual: acc,
        }),
        EventBody::RepaymentReceived {
            loan,
            amount,
            to_interest,
            to_overdue_interest,
            to_overdue_principal,
            to_principal,
            status_after,
            postings,
        } => Payload::LoanRepaymentReceived(proto::LoanRepaymentReceived {
            loan_number: *loan,
            amount: money(amount),
            to_interest: money(to_interest),
            to_overdue_interest: money(to_overdue_interest),
            to_overdue_principal: money(to_overdue_principal),
            to_principal: money(to_principal),
            status_after: name(status_after),
            postings: postings_to_proto(postings),
            effective_on: eff,
            reason,
            accrual: acc,
        }),
        EventBody::MovedToOverdue {
            loan,
            scheduled_due,
            amount,
            surcharge_exact,
            surcharge_posted,
            postings,
        } => Payload::LoanMovedToOverdue(proto::LoanMovedToOverdue {
            loan_number: *loan,
            scheduled_due: money(scheduled_due),
            amount: money(amount),
            postings: postings_to_proto(postings),
            effective_on: eff,
            reason,
            accrual: acc,
            overdue_surcharge_exact: money_or_empty(surcharge_exact),
            overdue_surcharge_posted: money_or_empty(surcharge_posted),
        }),
        EventBody::Extended {
            loan,
            previous_due,
            new_due,
        } => Payload::LoanExtended(proto::LoanExtended {
            loan_number: *loan,
            previous_due: date(previous_due),
            new_due: date(new_due),
            effective_on: eff,
            reason,
            accrual: acc,
        }),
        EventBody::Frozen { loan, disaster_ref } => Payload::LoanFrozen(proto::LoanFrozen {
            loan_number: *loan,
            disaster_ref: disaster_ref.clone(),
            effective_on: eff,
            reason,
            accrual: acc,
        }),
        EventBody::WrittenOff {
            loan,
            disaster_ref,
            principal,
            overdue_principal,
            interest,
            overdue_interest,
            postings,
        } => Payload::LoanWrittenOff(proto::LoanWrittenOff {
            loan_number: *loan,
            disaster_ref: disaster_ref.clone(),
            principal: money(principal),
            overdue_principal: money(overdue_principal),
            interest: money(interest),
            overdue_interest: money(overdue_interest),
            postings: postings_to_proto(postings),
            effective_on: eff,
            reason,
            accrual: acc,
        }),
        EventBody::ApprovalCancelled { loan } => {
            Payload::LoanApprovalCancelled(proto::LoanApprovalCancelled {
                loan_number: *loan,
                effective_on: eff,
                reason,
            })
        }
        EventBody::Unfrozen {
            loan,
            previous_due,
            new_due,
        } => Payload::LoanUnfrozen(proto::LoanUnfrozen {
            loan_number: *loan,
            previous_due: date(previous_due),
            new_due: date(new_due),
            effective_on: eff,
            reason,
        }),
        EventBody::Reversed {
            original,
            loan,
            restored,
            postings,
        } => Payload::LoanPostingReversed(proto::LoanPostingReversed {
            loan_number: *loan,
            original_sequence: sequence_of(*original),
            restored: Some(position_to_proto(restored)),
            postings: postings_to_proto(postings),
            effective_on: eff,
            reason,
        }),
        EventBody::HouseholdClassified { .. } => {
            unreachable!("classifications are encoded as EligibilityDecided")
        }
    }
}

/// The domain loan events a payload at partition `sequence` carries (empty for
/// payloads of other domains). Eligibility decisions count: the loan book reads them.
pub fn loan_events(
    sequence: u64,
    actor: &str,
    payload: &Payload,
) -> Result<Vec<loans::Event>, CodecError> {
    let none = None;
    // (accrual first, effective date, reason, main body)
    let (accrual, effective_on, reason, body) = match payload {
        Payload::EligibilityDecided(p) => {
            let household = household("household_id", &p.household_id)?;
            let (decision, escaped_until) = decided_from_proto(p, household, actor)?;
            (
                &none,
                p.decided_on.as_str(),
                "eligibility review",
                EventBody::HouseholdClassified {
                    decision,
                    escaped_until,
                    carried_by_move: false,
                },
            )
        }
        Payload::HouseholdMovedIn(p) => {
            // The standing travels with the household, re-filed under its new id.
            let Some(s) = &p.standing else {
                return Ok(Vec::new());
            };
            let household = household("household_id", &p.household_id)?;
            let (mut decision, escaped_until) = decided_from_proto(s, household, CARRIED_BY_MOVE)?;
            // A decision it corrected is one of the partition the household left.
            decision.corrects = None;
            (
                &none,
                p.moved_on.as_str(),
                "standing carried by a move",
                EventBody::HouseholdClassified {
                    decision,
                    escaped_until,
                    carried_by_move: true,
                },
            )
        }
        Payload::LoanApproved(p) => (
            &none,
            p.effective_on.as_str(),
            p.reason.as_str(),
            EventBody::LoanApproved {
                loan: p.loan_number,
                household: household("household_id", &p.household_id)?,
                programme: ProgrammeRef {
                    id: p.programme_id.clone(),
                    version: p.programme_version,
                },
                monthly_rate: parse_money("monthly_rate", &p.monthly_rate)?,
                overdue_monthly_rate: parse_money("overdue_monthly_rate", &p.overdue_monthly_rate)?,
                day_count: parse_name("day_count", &p.day_count)?,
                amount: parse_money("amount", &p.amount)?,
                term_months: p.term_months,
                savings_group: p.savings_group.clone(),
                entrusted: parse_name("entrusted", &p.entrusted)?,
            },
        ),
        Payload::LoanInterestAccrued(p) => {
            return Ok(vec![accrual_from_proto(p, main_id(sequence), actor)?]);
        }
        Payload::LoanTrancheDisbursed(p) => (
            &p.accrual,
            p.effective_on.as_str(),
            p.reason.as_str(),
            EventBody::TrancheDisbursed {
                loan: p.loan_number,
                amount: parse_money("amount", &p.amount)?,
                channel: parse_name("channel", &p.channel)?,
                schedule_start: parse_date("schedule_start", &p.schedule_start)?,
                due: parse_date("due", &p.due)?,
                postings: postings_from_proto(&p.postings)?,
            },
        ),
        Payload::LoanRepaymentReceived(p) => (
            &p.accrual,
            p.effective_on.as_str(),
            p.reason.as_str(),
            EventBody::RepaymentReceived {
                loan: p.loan_number,
                amount: parse_money("amount", &p.amount)?,
                to_interest: parse_money("to_interest", &p.to_interest)?,
                to_overdue_interest: parse_money("to_overdue_interest", &p.to_overdue_interest)?,
                to_overdue_principal: parse_money("to_overdue_principal", &p.to_overdue_principal)?,
                to_principal: parse_money("to_principal", &p.to_principal)?,
                status_after: parse_name("status_after", &p.status_after)?,
                postings: postings_from_proto(&p.postings)?,
            },
        ),
        Payload::LoanMovedToOverdue(p) => (
            &p.accrual,
            p.effective_on.as_str(),
            p.reason.as_str(),
            EventBody::MovedToOverdue {
                loan: p.loan_number,
                scheduled_due: parse_money("scheduled_due", &p.scheduled_due)?,
                amount: parse_money("amount", &p.amount)?,
                surcharge_exact: parse_money_or_zero(
                    "overdue_surcharge_exact",
                    &p.overdue_surcharge_exact,
                )?,
                surcharge_posted: parse_money_or_zero(
                    "overdue_surcharge_posted",
                    &p.overdue_surcharge_posted,
                )?,
                postings: postings_from_proto(&p.postings)?,
            },
        ),
        Payload::LoanExtended(p) => (
            &p.accrual,
            p.effective_on.as_str(),
            p.reason.as_str(),
            EventBody::Extended {
                loan: p.loan_number,
                previous_due: parse_date("previous_due", &p.previous_due)?,
                new_due: parse_date("new_due", &p.new_due)?,
            },
        ),
        Payload::LoanFrozen(p) => (
            &p.accrual,
            p.effective_on.as_str(),
            p.reason.as_str(),
            EventBody::Frozen {
                loan: p.loan_number,
                disaster_ref: p.disaster_ref.clone(),
            },
        ),
        Payload::LoanWrittenOff(p) => (
            &p.accrual,
            p.effective_on.as_str(),
            p.reason.as_str(),
            EventBody::WrittenOff {
                loan: p.loan_number,
                disaster_ref: p.disaster_ref.clone(),
                principal: parse_money("principal", &p.principal)?,
                overdue_principal: parse_money("overdue_principal", &p.overdue_principal)?,
                interest: parse_money("interest", &p.interest)?,
                overdue_interest: parse_money("overdue_interest", &p.overdue_interest)?,
                postings: postings_from_proto(&p.postings)?,
            },
        ),
        Payload::LoanApprovalCancelled(p) => (
            &none,
            p.effective_on.as_str(),
            p.reason.as_str(),
            EventBody::ApprovalCancelled {
                loan: p.loan_number,
            },
        ),
        Payload::LoanUnfrozen(p) => (
            &none,
            p.effective_on.as_str(),
            p.reason.as_str(),
            EventBody::Unfrozen {
                loan: p.loan_number,
                previous_due: parse_date("previous_due", &p.previous_due)?,
                new_due: parse_date("new_due", &p.new_due)?,
            },
        ),
        Payload::LoanPostingReversed(p) => (
            &none,
            p.effective_on.as_str(),
            p.reason.as_str(),
            EventBody::Reversed {
                original: checked_main_id(p.original_sequence)
                    .ok_or_else(|| bad("original_sequence", "past any sequence of a chain"))?,
                loan: p.loan_number,
                restored: position_from_proto(
                    p.restored
                        .as_ref()
                        .ok_or_else(|| bad("restored", "missing"))?,
                )?,
                postings: postings_from_proto(&p.postings)?,
            },
        ),
        _ => return Ok(Vec::new()),
    };
    let mut out = Vec::with_capacity(2);
    if let Some(a) = accrual {
        out.push(accrual_from_proto(a, accrual_id(sequence), actor)?);
    }
    out.push(loans::Event {
        id: main_id(sequence),
        actor: actor.to_owned(),
        reason: reason.to_owned(),
        effective: parse_date("effective_on", effective_on)?,
        body,
    });
    Ok(out)
}

/// Decider recorded for a standing copied by a move (the original decision names
/// its decider in its own envelope, in the partition the household left).
pub const CARRIED_BY_MOVE: &str = "system:carried-by-move";
