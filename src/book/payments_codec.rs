//! `payments::EventBody` ⇄ the typed `PaymentRecorded.body` oneof.
//!
//! **Invariant:** `body_from_proto(&body_to_proto(b)) == Ok(b)` for every body the
//! domain decides (tests/payments_properties.rs). Decoding never panics: a missing
//! message, an unknown name, a malformed id, month, date or amount is a `CodecError`
//! naming the field, so a forged or newer event is refused, never guessed at.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::codec::{self, CodecError};
use crate::domain::payments::EventBody;
use crate::domain::payments::Rejection;
use crate::domain::payments::budget::{Budget, BudgetKey, BudgetMove};
use crate::domain::payments::entitlements::{Channel, ChannelKind, MonthlyAmount, Terms};
use crate::domain::payments::ids::BeneficiaryRef;
use crate::domain::payments::instructions::{
    GatewayPost, InstructionId, LeftUnpaid, NewInstruction, PostRefusal, Shortfall,
};
use crate::domain::payments::ledger::Posting;
use crate::domain::payments::month::Month;
use crate::domain::payments::reference::{BaseLevelRef, CategoryRef, ReferenceHashes};
use crate::proto::{self, payment_recorded::Body};

fn bad(field: &'static str, problem: impl ToString) -> CodecError {
    CodecError {
        field,
        problem: problem.to_string(),
    }
}

// ------------------------------------------------------------------ scalars

fn money(d: &Decimal) -> String {
    d.normalize().to_string()
}
fn opt_money(d: &Option<Decimal>) -> String {
    d.as_ref().map(money).unwrap_or_default()
}
fn parse_opt_money(field: &'static str, s: &str) -> Result<Option<Decimal>, CodecError> {
    if s.is_empty() {
        Ok(None)
    } else {
        codec::parse_money(field, s).map(Some)
    }
}
/// A string reference (programme, commune, gateway, ...), shape-checked.
fn id<T: TryFrom<String, Error = Rejection>>(
    field: &'static str,
    s: &str,
) -> Result<T, CodecError> {
    T::try_from(s.to_owned()).map_err(|e| bad(field, e))
}
fn opt_id<T: TryFrom<String, Error = Rejection>>(
    field: &'static str,
    s: &str,
) -> Result<Option<T>, CodecError> {
    if s.is_empty() {
        Ok(None)
    } else {
        id(field, s).map(Some)
    }
}
fn month(field: &'static str, s: &str) -> Result<Month, CodecError> {
    Month::parse(s).map_err(|e| bad(field, e))
}
fn instruction(field: &'static str, s: &str) -> Result<InstructionId, CodecError> {
    InstructionId::parse(s).ok_or_else(|| bad(field, format!("{s:?} is not an instruction id")))
}
/// What an accepted post leaves its instruction as: settled, failed or returned, the only
/// statuses a post decides. Any other is a record no decision wrote, read as unreadable
/// by the book and every view alike.
fn post_status(
    s: &str,
) -> Result<crate::domain::payments::instructions::InstructionStatus, CodecError> {
    use crate::domain::payments::instructions::InstructionStatus as S;
    match codec::parse_name("status_after", s)? {
        status @ (S::Settled | S::Failed | S::Returned) => Ok(status),
        other => Err(bad(
            "status_after",
            format!("{other:?} is not what a gateway's post leaves"),
        )),
    }
}
fn date(field: &'static str, s: &str) -> Result<NaiveDate, CodecError> {
    codec::parse_date(field, s)
}
fn required<'a, T>(field: &'static str, m: &'a Option<T>) -> Result<&'a T, CodecError> {
    m.as_ref().ok_or_else(|| bad(field, "missing"))
}

// ------------------------------------------------------------------ nested types

fn key_to_proto(k: &BudgetKey) -> proto::BudgetKey {
    proto::BudgetKey {
        programme: k.programme.to_string(),
        commune: k.commune.to_string(),
        period: k.period.to_string(),
    }
}
fn key_from_proto(k: &proto::BudgetKey) -> Result<BudgetKey, CodecError> {
    Ok(BudgetKey {
        programme: id("budget.programme", &k.programme)?,
        commune: id("budget.commune", &k.commune)?,
        period: month("budget.period", &k.period)?,
    })
}

fn postings_to_proto(list: &[Posting]) -> Vec<proto::Posting> {
    list.iter()
        .map(|p| proto::Posting {
            account: codec::name(&p.account),
            debit: money(&p.debit),
            credit: money(&p.credit),
        })
        .collect()
}
fn postings_from_proto(list: &[proto::Posting]) -> Result<Vec<Posting>, CodecError> {
    list.iter()
        .map(|p| {
            Ok(Posting {
                account: codec::parse_name("posting.account", &p.account)?,
                debit: codec::parse_money("posting.debit", &p.debit)?,
                credit: codec::parse_money("posting.credit", &p.credit)?,
            })
        })
        .collect()
}

fn move_to_proto(m: &BudgetMove) -> proto::BudgetMove {
    proto::BudgetMove {
        key: Some(key_to_proto(&m.key)),
        kind: codec::name(&m.kind),
        amount: money(&m.amount),
        after: Some(proto::BudgetTotals {
            allocated: money(&m.after.allocated),
            reserved: money(&m.after.reserved),
            posted: money(&m.after.posted),
        }),
        postings: postings_to_proto(&m.postings),
    }
}
fn move_from_proto(m: &Option<proto::BudgetMove>) -> Result<BudgetMove, CodecError> {
    let m = required("budget", m)?;
    let after = required("budget.after", &m.after)?;
    Ok(BudgetMove {
        key: key_from_proto(required("budget.key", &m.key)?)?,
        kind: codec::parse_name("budget.kind", &m.kind)?,
        amount: codec::parse_money("budget.amount", &m.amount)?,
        after: Budget {
            allocated: codec::parse_money("budget.after.allocated", &after.allocated)?,
            reserved: codec::parse_money("budget.after.reserved", &after.reserved)?,
            posted: codec::parse_money("budget.after.posted", &after.posted)?,
        },
        postings: postings_from_proto(&m.postings)?,
    })
}

fn beneficiary_to_proto(b: &BeneficiaryRef) -> proto::BeneficiaryRef {
    proto::BeneficiaryRef {
        household: b.household.to_string(),
        member: b.member.to_string(),
    }
}
fn beneficiary_from_proto(b: &Option<proto::BeneficiaryRef>) -> Result<BeneficiaryRef, CodecError> {
    let b = required("beneficiary", b)?;
    Ok(BeneficiaryRef {
        household: id("beneficiary.household", &b.household)?,
        member: id("beneficiary.member", &b.member)?,
    })
}

fn channel_to_proto(c: &Channel) -> proto::PaymentChannel {
    proto::PaymentChannel {
        kind: codec::name(&c.kind()),
        gateway: c.gateway().to_string(),
    }
}
fn channel_from_proto(c: &Option<proto::PaymentChannel>) -> Result<Channel, CodecError> {
    let c = required("channel", c)?;
    let gateway = id("channel.gateway", &c.gateway)?;
    Ok(match codec::parse_name("channel.kind", &c.kind)? {
        ChannelKind::BankAccount => Channel::BankAccount { gateway },
        ChannelKind::MobileMoney => Channel::MobileMoney { gateway },
        ChannelKind::PostOffice => Channel::PostOffice { gateway },
    })
}

fn terms_to_proto(t: &Terms) -> proto::PaymentTerms {
    proto::PaymentTerms {
        category: t.category.to_string(),
        channel: Some(channel_to_proto(&t.channel)),
        provincial_base: opt_money(&t.provincial_base),
    }
}
fn terms_from_proto(t: &Option<proto::PaymentTerms>) -> Result<Terms, CodecError> {
    let t = required("terms", t)?;
    Ok(Terms {
        category: id("terms.category", &t.category)?,
        channel: channel_from_proto(&t.channel)?,
        provincial_base: parse_opt_money("terms.provincial_base", &t.provincial_base)?,
    })
}

fn basis_to_proto(a: &MonthlyAmount) -> proto::MonthlyAmount {
    proto::MonthlyAmount {
        month: a.month.to_string(),
        amount: money(&a.amount),
        base: money(&a.base),
        national_base: Some(proto::ReferenceVersion {
            id: a.national_base.id.clone(),
            version: a.national_base.version,
        }),
        national_amount: money(&a.national_amount),
        provincial_base_applied: a.provincial_base_applied,
        category: Some(proto::ReferenceVersion {
            id: a.category.id.to_string(),
            version: a.category.version,
        }),
        // Exact, never normalised: it is quoted from categories.json.
        coefficient: a.coefficient.to_string(),
    }
}
fn basis_from_proto(a: &Option<proto::MonthlyAmount>) -> Result<MonthlyAmount, CodecError> {
    let a = required("basis", a)?;
    let national = required("basis.national_base", &a.national_base)?;
    let category = required("basis.category", &a.category)?;
    Ok(MonthlyAmount {
        month: month("basis.month", &a.month)?,
        amount: codec::parse_money("basis.amount", &a.amount)?,
        base: codec::parse_money("basis.base", &a.base)?,
        national_base: BaseLevelRef {
            id: national.id.clone(),
            version: national.version,
        },
        national_amount: codec::parse_money("basis.national_amount", &a.national_amount)?,
        provincial_base_applied: a.provincial_base_applied,
        category: CategoryRef {
            id: id("basis.category.id", &category.id)?,
            version: category.version,
        },
        coefficient: codec::parse_money("basis.coefficient", &a.coefficient)?,
    })
}

fn new_instruction_to_proto(i: &NewInstruction) -> proto::NewInstruction {
    proto::NewInstruction {
        id: i.id.to_string(),
        beneficiary: Some(beneficiary_to_proto(&i.beneficiary)),
        budget: Some(key_to_proto(&i.budget)),
        channel: Some(channel_to_proto(&i.channel)),
        amount: money(&i.amount),
        basis: Some(basis_to_proto(&i.basis)),
        replaces: i.replaces.map(|r| r.to_string()).unwrap_or_default(),
    }
}
fn new_instruction_from_proto(
    i: &Option<proto::NewInstruction>,
) -> Result<NewInstruction, CodecError> {
    let i = required("instruction", i)?;
    Ok(NewInstruction {
        id: instruction("instruction.id", &i.id)?,
        beneficiary: beneficiary_from_proto(&i.beneficiary)?,
        budget: key_from_proto(required("instruction.budget", &i.budget)?)?,
        channel: channel_from_proto(&i.channel)?,
        amount: codec::parse_money("instruction.amount", &i.amount)?,
        basis: basis_from_proto(&i.basis)?,
        replaces: if i.replaces.is_empty() {
            None
        } else {
            Some(instruction("instruction.replaces", &i.replaces)?)
        },
    })
}

fn post_to_proto(p: &GatewayPost) -> proto::PaymentGatewayPost {
    proto::PaymentGatewayPost {
        gateway: p.gateway.to_string(),
        instruction: p.instruction.to_string(),
        outcome: codec::name(&p.outcome),
        gateway_txn: p.gateway_txn.to_string(),
        amount: money(&p.amount),
        beneficiary: Some(beneficiary_to_proto(&p.beneficiary)),
    }
}
fn post_from_proto(p: &Option<proto::PaymentGatewayPost>) -> Result<GatewayPost, CodecError> {
    let p = required("post", p)?;
    Ok(GatewayPost {
        gateway: id("post.gateway", &p.gateway)?,
        instruction: id("post.instruction", &p.instruction)?,
        outcome: codec::parse_name("post.outcome", &p.outcome)?,
        gateway_txn: id("post.gateway_txn", &p.gateway_txn)?,
        amount: codec::parse_money("post.amount", &p.amount)?,
        beneficiary: beneficiary_from_proto(&p.beneficiary)?,
    })
}

fn refusal_to_proto(r: &PostRefusal) -> proto::PostRefusal {
    let mut out = proto::PostRefusal::default();
    out.reason = match r {
        PostRefusal::UnknownInstruction => "UnknownInstruction",
        PostRefusal::NotYourInstruction => "NotYourInstruction",
        PostRefusal::BeneficiaryMismatch => "BeneficiaryMismatch",
        PostRefusal::AmountMismatch { expected, posted } => {
            out.expected = money(expected);
            out.posted = money(posted);
            "AmountMismatch"
        }
        PostRefusal::SettledAfterReturned => "SettledAfterReturned",
        PostRefusal::AlreadySettled { by } => {
            out.settled_by = by.to_string();
            "AlreadySettled"
        }
        PostRefusal::NotPending { status } => {
            out.status = codec::name(status);
            "NotPending"
        }
        PostRefusal::TransactionIdReused { first } => {
            out.first_event = *first;
            "TransactionIdReused"
        }
    }
    .to_owned();
    out
}
fn refusal_from_proto(r: &Option<proto::PostRefusal>) -> Result<PostRefusal, CodecError> {
    let r = required("refusal", r)?;
    Ok(match r.reason.as_str() {
        "UnknownInstruction" => PostRefusal::UnknownInstruction,
        "NotYourInstruction" => PostRefusal::NotYourInstruction,
        "BeneficiaryMismatch" => PostRefusal::BeneficiaryMismatch,
        "AmountMismatch" => PostRefusal::AmountMismatch {
            expected: codec::parse_money("refusal.expected", &r.expected)?,
            posted: codec::parse_money("refusal.posted", &r.posted)?,
        },
        "SettledAfterReturned" => PostRefusal::SettledAfterReturned,
        "AlreadySettled" => PostRefusal::AlreadySettled {
            by: id("refusal.settled_by", &r.settled_by)?,
        },
        "NotPending" => PostRefusal::NotPending {
            status: codec::parse_name("refusal.status", &r.status)?,
        },
        "TransactionIdReused" => PostRefusal::TransactionIdReused {
            first: r.first_event,
        },
        other => return Err(bad("refusal.reason", format!("unknown value {other:?}"))),
    })
}

fn shortfall_to_proto(s: &Shortfall) -> proto::Shortfall {
    proto::Shortfall {
        budget: Some(key_to_proto(&s.budget)),
        instructions: s.instructions,
        needed: money(&s.needed),
        available: money(&s.available),
    }
}
fn shortfall_from_proto(s: &proto::Shortfall) -> Result<Shortfall, CodecError> {
    Ok(Shortfall {
        budget: key_from_proto(required("shortfall.budget", &s.budget)?)?,
        instructions: s.instructions,
        needed: codec::parse_money("shortfall.needed", &s.needed)?,
        available: codec::parse_money("shortfall.available", &s.available)?,
    })
}

// ------------------------------------------------------------------ bodies

/// The typed oneof recording a decided payment event body.
pub fn body_to_proto(body: &EventBody) -> Body {
    match body {
        EventBody::BudgetAllocated { budget } => Body::BudgetAllocated(proto::BudgetAllocated {
            budget: Some(move_to_proto(budget)),
        }),
        EventBody::BudgetDeallocated { budget } => {
            Body::BudgetDeallocated(proto::BudgetDeallocated {
                budget: Some(move_to_proto(budget)),
            })
        }
        EventBody::EntitlementGranted {
            entitlement,
            programme,
            beneficiary,
            commune,
            from,
            terms,
            citizen,
        } => Body::EntitlementGranted(proto::EntitlementGranted {
            entitlement: *entitlement,
            programme: programme.to_string(),
            beneficiary: Some(beneficiary_to_proto(beneficiary)),
            commune: commune.to_string(),
            from: from.to_string(),
            terms: Some(terms_to_proto(terms)),
            beneficiary_citizen_index: citizen
                .map(|c| bytes::Bytes::copy_from_slice(&c))
                .unwrap_or_default(),
        }),
        EventBody::EntitlementChanged {
            entitlement,
            from,
            terms,
        } => Body::EntitlementChanged(proto::EntitlementChanged {
            entitlement: *entitlement,
            from: from.to_string(),
            terms: Some(terms_to_proto(terms)),
        }),
        EventBody::EntitlementStopped {
            entitlement,
            on,
            reason,
            overpaid,
        } => Body::EntitlementStopped(proto::EntitlementStopped {
            entitlement: *entitlement,
            on: codec::date(on),
            reason: codec::name(reason),
            overpaid: overpaid.iter().map(ToString::to_string).collect(),
        }),
        EventBody::InstructionIssued {
            instruction,
            budget,
        } => Body::InstructionIssued(proto::InstructionIssued {
            instruction: Some(new_instruction_to_proto(instruction)),
            budget: Some(move_to_proto(budget)),
        }),
        EventBody::PaymentRunCompleted {
            period,
            commune,
            issued,
            amount,
            shortfalls,
            reference,
            left_unpaid,
        } => Body::PaymentRunCompleted(proto::PaymentRunCompleted {
            period: period.to_string(),
            commune: commune
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            issued: *issued,
            amount: money(amount),
            shortfalls: shortfalls.iter().map(shortfall_to_proto).collect(),
            not_resident: left_unpaid.not_resident.clone(),
            deceased: left_unpaid.deceased.clone(),
            not_a_member: left_unpaid.not_a_member.clone(),
            erased: left_unpaid.erased.clone(),
            reference: Some(proto::ReferenceHashes {
                base_levels: reference.base_levels.clone(),
                categories: reference.categories.clone(),
            }),
        }),
        EventBody::GatewayPostAccepted {
            post,
            instruction,
            status_after,
            budget,
        } => Body::GatewayPostAccepted(proto::GatewayPostAccepted {
            post: Some(post_to_proto(post)),
            instruction: instruction.to_string(),
            status_after: codec::name(status_after),
            budget: Some(move_to_proto(budget)),
        }),
        EventBody::GatewayPostRefused { post, refusal } => {
            Body::GatewayPostRefused(proto::GatewayPostRefused {
                post: Some(post_to_proto(post)),
                refusal: Some(refusal_to_proto(refusal)),
            })
        }
        EventBody::InstructionTimedOut {
            instruction,
            budget,
        } => Body::InstructionTimedOut(proto::InstructionTimedOut {
            instruction: instruction.to_string(),
            budget: Some(move_to_proto(budget)),
        }),
        EventBody::InstructionCancelled {
            instruction,
            budget,
        } => Body::InstructionCancelled(proto::InstructionCancelled {
            instruction: instruction.to_string(),
            budget: Some(move_to_proto(budget)),
        }),
    }
}

/// The domain body a `PaymentRecorded.body` records; an empty oneof (or one this
/// version does not know, which prost leaves empty) is an error.
pub fn body_from_proto(body: &Option<Body>) -> Result<EventBody, CodecError> {
    let Some(body) = body else {
        return Err(bad("body", "missing"));
    };
    Ok(match body {
        Body::BudgetAllocated(b) => EventBody::BudgetAllocated {
            budget: move_from_proto(&b.budget)?,
        },
        Body::BudgetDeallocated(b) => EventBody::BudgetDeallocated {
            budget: move_from_proto(&b.budget)?,
        },
        Body::EntitlementGranted(b) => {
            EventBody::EntitlementGranted {
                entitlement: b.entitlement,
                programme: id("programme", &b.programme)?,
                beneficiary: beneficiary_from_proto(&b.beneficiary)?,
                commune: id("commune", &b.commune)?,
                from: month("from", &b.from)?,
                terms: terms_from_proto(&b.terms)?,
                // Empty: a member without a citizen id, or a grant recorded before the field.
                citizen: match b.beneficiary_citizen_index.len() {
                    0 => None,
                    _ => Some(b.beneficiary_citizen_index[..].try_into().map_err(|_| {
                        CodecError {
                            field: "beneficiary_citizen_index",
                            problem: "not 32 bytes".into(),
                        }
                    })?),
                },
            }
        }
        Body::EntitlementChanged(b) => EventBody::EntitlementChanged {
            entitlement: b.entitlement,
            from: month("from", &b.from)?,
            terms: terms_from_proto(&b.terms)?,
        },
        Body::EntitlementStopped(b) => EventBody::EntitlementStopped {
            entitlement: b.entitlement,
            on: date("on", &b.on)?,
            reason: codec::parse_name("reason", &b.reason)?,
            overpaid: b
                .overpaid
                .iter()
                .map(|s| instruction("overpaid", s))
                .collect::<Result<_, _>>()?,
        },
        Body::InstructionIssued(b) => EventBody::InstructionIssued {
            instruction: new_instruction_from_proto(&b.instruction)?,
            budget: move_from_proto(&b.budget)?,
        },
        Body::PaymentRunCompleted(b) => {
            let reference = required("reference", &b.reference)?;
            EventBody::PaymentRunCompleted {
                period: month("period", &b.period)?,
                commune: opt_id("commune", &b.commune)?,
                issued: b.issued,
                amount: codec::parse_money("amount", &b.amount)?,
                shortfalls: b
                    .shortfalls
                    .iter()
                    .map(shortfall_from_proto)
                    .collect::<Result<_, _>>()?,
                reference: ReferenceHashes {
                    base_levels: reference.base_levels.clone(),
                    categories: reference.categories.clone(),
                },
                left_unpaid: LeftUnpaid {
                    not_resident: b.not_resident.clone(),
                    deceased: b.deceased.clone(),
                    not_a_member: b.not_a_member.clone(),
                    erased: b.erased.clone(),
                },
            }
        }
        Body::GatewayPostAccepted(b) => EventBody::GatewayPostAccepted {
            post: post_from_proto(&b.post)?,
            instruction: instruction("instruction", &b.instruction)?,
            status_after: post_status(&b.status_after)?,
            budget: move_from_proto(&b.budget)?,
        },
        Body::GatewayPostRefused(b) => EventBody::GatewayPostRefused {
            post: post_from_proto(&b.post)?,
            refusal: refusal_from_proto(&b.refusal)?,
        },
        Body::InstructionTimedOut(b) => EventBody::InstructionTimedOut {
            instruction: instruction("instruction", &b.instruction)?,
            budget: move_from_proto(&b.budget)?,
        },
        Body::InstructionCancelled(b) => EventBody::InstructionCancelled {
            instruction: instruction("instruction", &b.instruction)?,
            budget: move_from_proto(&b.budget)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::domain::payments::budget::MoveKind;
    use crate::domain::payments::entitlements::StopReason;
    use crate::domain::payments::instructions::{InstructionStatus, Outcome};
    use crate::domain::payments::ledger::{Account, transfer};

    fn m(s: &str) -> Month {
        Month::parse(s).unwrap()
    }
    fn r<T: TryFrom<String, Error = Rejection>>(s: &str) -> T {
        T::try_from(s.to_owned()).unwrap()
    }
    fn vnd(n: i64) -> Decimal {
        Decimal::from(n)
    }
    fn iid(s: &str) -> InstructionId {
        InstructionId::parse(s).unwrap()
    }
    fn key() -> BudgetKey {
        BudgetKey {
            programme: r("SOCIAL_ASSISTANCE_MONTHLY"),
            commune: r("0100101"),
            period: m("2026-12"),
        }
    }
    fn mv(kind: MoveKind) -> BudgetMove {
        BudgetMove {
            key: key(),
            kind,
            amount: vnd(500_000),
            after: Budget {
                allocated: vnd(10_000_000),
                reserved: vnd(500_000),
                posted: vnd(1_000_000),
            },
            postings: transfer(
                Account::BudgetReserved,
                Account::BudgetAvailable,
                vnd(500_000),
            ),
        }
    }
    fn person() -> BeneficiaryRef {
        BeneficiaryRef {
            household: r("0100101-000042"),
            member: r("m2"),
        }
    }
    fn terms(channel: Channel, provincial_base: Option<Decimal>) -> Terms {
        Terms {
            category: r("ELDERLY_POOR_60_TO_UNDER_80_NO_SUPPORTER"),
            channel,
            provincial_base,
        }
    }
    fn post(outcome: Outcome) -> GatewayPost {
        GatewayPost {
            gateway: r("VNPOST"),
            instruction: r("pay:1:2026-12:1"),
            outcome,
            gateway_txn: r("T-0001"),
            amount: vnd(500_000),
            beneficiary: person(),
        }
    }
    fn issued(replaces: Option<InstructionId>, channel: Channel) -> EventBody {
        EventBody::InstructionIssued {
            instruction: NewInstruction {
                id: iid("pay:1:2026-12:2"),
                beneficiary: person(),
                budget: key(),
                channel,
                amount: vnd(750_000),
                basis: MonthlyAmount {
                    month: m("2026-12"),
                    amount: vnd(750_000),
                    base: vnd(500_000),
                    national_base: BaseLevelRef {
                        id: "BASE_2021".into(),
                        version: 1,
                    },
                    national_amount: vnd(750_000),
                    provincial_base_applied: false,
                    category: CategoryRef {
                        id: r("ELDERLY_POOR_60_TO_UNDER_80_NO_SUPPORTER"),
                        version: 2,
                    },
                    coefficient: Decimal::new(150, 2),
                },
                replaces,
            },
            budget: mv(MoveKind::Reserve),
        }
    }

    /// One body of every variant, and of every variant of the nested enums.
    fn every_body() -> Vec<EventBody> {
        let gateway = || r("VCB");
        let mut bodies = vec![
            EventBody::BudgetAllocated {
                budget: mv(MoveKind::Allocate),
            },
            EventBody::BudgetDeallocated {
                budget: mv(MoveKind::Deallocate),
            },
            EventBody::EntitlementGranted {
                entitlement: 7,
                programme: r("SOCIAL_ASSISTANCE_MONTHLY"),
                beneficiary: person(),
                commune: r("0100101"),
                from: m("2026-12"),
                terms: terms(Channel::BankAccount { gateway: gateway() }, None),
                citizen: Some([7; 32]),
            },
            EventBody::EntitlementChanged {
                entitlement: 7,
                from: m("2027-01"),
                terms: terms(
                    Channel::MobileMoney { gateway: gateway() },
                    Some(vnd(600_000)),
                ),
            },
            issued(
                None,
                Channel::PostOffice {
                    gateway: r("VNPOST"),
                },
            ),
            issued(
                Some(iid("pay:1:2026-12:1")),
                Channel::BankAccount { gateway: gateway() },
            ),
            EventBody::PaymentRunCompleted {
                period: m("2026-12"),
                commune: None,
                issued: 0,
                amount: Decimal::ZERO,
                shortfalls: vec![],
                reference: ReferenceHashes {
                    base_levels: "ab".repeat(32),
                    categories: "cd".repeat(32),
                },
                left_unpaid: LeftUnpaid::default(),
            },
            EventBody::PaymentRunCompleted {
                period: m("2026-12"),
                commune: Some(r("0100102")),
                issued: 3,
                amount: vnd(2_250_000),
                shortfalls: vec![Shortfall {
                    budget: key(),
                    instructions: 4,
                    needed: vnd(3_000_000),
                    available: vnd(1_000_000),
                }],
                reference: ReferenceHashes {
                    base_levels: "ab".repeat(32),
                    categories: "cd".repeat(32),
                },
                left_unpaid: LeftUnpaid {
                    not_resident: vec![4, 9],
                    deceased: vec![5],
                    not_a_member: vec![6],
                    erased: vec![7],
                },
            },
            EventBody::InstructionTimedOut {
                instruction: iid("pay:1:2026-12:1"),
                budget: mv(MoveKind::Void),
            },
            EventBody::InstructionCancelled {
                instruction: iid("pay:1:2027-01:1"),
                budget: mv(MoveKind::Void),
            },
        ];
        for reason in [StopReason::Death, StopReason::Move, StopReason::Other] {
            bodies.push(EventBody::EntitlementStopped {
                entitlement: 7,
                on: NaiveDate::from_ymd_opt(2026, 12, 20).unwrap(),
                reason,
                overpaid: vec![iid("pay:7:2027-01:1"), iid("pay:7:2027-02:3")],
            });
        }
        for (outcome, status_after, kind) in [
            (Outcome::Settled, InstructionStatus::Settled, MoveKind::Post),
            (Outcome::Failed, InstructionStatus::Failed, MoveKind::Void),
            (
                Outcome::Returned,
                InstructionStatus::Returned,
                MoveKind::Release,
            ),
        ] {
            bodies.push(EventBody::GatewayPostAccepted {
                post: post(outcome),
                instruction: iid("pay:1:2026-12:1"),
                status_after,
                budget: mv(kind),
            });
        }
        for refusal in [
            PostRefusal::UnknownInstruction,
            PostRefusal::NotYourInstruction,
            PostRefusal::BeneficiaryMismatch,
            PostRefusal::AmountMismatch {
                expected: vnd(500_000),
                posted: vnd(499_999),
            },
            PostRefusal::SettledAfterReturned,
            PostRefusal::AlreadySettled { by: r("T-0000") },
            PostRefusal::NotPending {
                status: InstructionStatus::TimedOut,
            },
            PostRefusal::NotPending {
                status: InstructionStatus::Cancelled,
            },
            PostRefusal::NotPending {
                status: InstructionStatus::Instructed,
            },
            PostRefusal::TransactionIdReused { first: 12 },
        ] {
            bodies.push(EventBody::GatewayPostRefused {
                post: post(Outcome::Settled),
                refusal,
            });
        }
        bodies
    }

    fn through_bytes(body: &EventBody) -> Result<EventBody, CodecError> {
        let recorded = proto::PaymentRecorded {
            body: Some(body_to_proto(body)),
            ..Default::default()
        };
        let decoded = proto::PaymentRecorded::decode(recorded.encode_to_vec().as_slice())
            .expect("protobuf decodes");
        body_from_proto(&decoded.body)
    }

    #[test]
    fn every_variant_survives_domain_proto_bytes_proto_domain() {
        let bodies = every_body();
        let mut kinds: Vec<String> = bodies.iter().map(super::super::payments::kind_of).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(
            kinds.len(),
            11,
            "one body of each EventBody variant: {kinds:?}"
        );
        for body in &bodies {
            assert_eq!(through_bytes(body).as_ref(), Ok(body));
        }
    }

    #[test]
    fn a_missing_or_malformed_body_is_a_codec_error_not_a_panic() {
        assert_eq!(body_from_proto(&None).unwrap_err().field, "body");
        let empty = Body::InstructionIssued(proto::InstructionIssued::default());
        assert_eq!(
            body_from_proto(&Some(empty)).unwrap_err().field,
            "instruction"
        );
        let Body::EntitlementGranted(mut granted) = body_to_proto(&every_body()[2]) else {
            unreachable!()
        };
        granted.from = "2026-13".into();
        let e = body_from_proto(&Some(Body::EntitlementGranted(granted.clone()))).unwrap_err();
        assert_eq!(e.field, "from");
        granted.from = "2026-12".into();
        granted
            .terms
            .as_mut()
            .unwrap()
            .channel
            .as_mut()
            .unwrap()
            .kind = "Pigeon".into();
        let e = body_from_proto(&Some(Body::EntitlementGranted(granted))).unwrap_err();
        assert_eq!(e.field, "channel.kind");
        let refused = Body::GatewayPostRefused(proto::GatewayPostRefused {
            post: Some(post_to_proto(&post(Outcome::Settled))),
            refusal: Some(proto::PostRefusal {
                reason: "Whim".into(),
                ..Default::default()
            }),
        });
        assert_eq!(
            body_from_proto(&Some(refused)).unwrap_err().field,
            "refusal.reason"
        );
        let timed_out = Body::InstructionTimedOut(proto::InstructionTimedOut {
            instruction: "pay:1:2026-12:01".into(),
            budget: Some(move_to_proto(&mv(MoveKind::Void))),
        });
        assert_eq!(
            body_from_proto(&Some(timed_out)).unwrap_err().field,
            "instruction"
        );
    }

    /// A record no decision could write, chained by a forger, is unreadable for the book
    /// and every view alike, never a panic in a fold: a post that leaves its instruction
    /// timed out, an amount past the ledger's bound (sums of two near Decimal's limit
    /// overflow).
    #[test]
    fn a_post_status_or_an_amount_no_decision_writes_is_unreadable() {
        let accepted = EventBody::GatewayPostAccepted {
            post: post(Outcome::Settled),
            instruction: iid("pay:1:2026-12:1"),
            status_after: InstructionStatus::Settled,
            budget: mv(MoveKind::Post),
        };
        let Body::GatewayPostAccepted(good) = body_to_proto(&accepted) else {
            unreachable!()
        };
        assert!(body_from_proto(&Some(Body::GatewayPostAccepted(good.clone()))).is_ok());
        for status in ["TimedOut", "Instructed", "Cancelled"] {
            let mut forged = good.clone();
            forged.status_after = status.into();
            let e = body_from_proto(&Some(Body::GatewayPostAccepted(forged))).unwrap_err();
            assert_eq!(e.field, "status_after", "{status}");
        }
        let mut huge = good;
        huge.budget.as_mut().unwrap().amount = "50000000000000000000000000000".into();
        let e = body_from_proto(&Some(Body::GatewayPostAccepted(huge))).unwrap_err();
        assert_eq!(e.field, "budget.amount");
    }
}
