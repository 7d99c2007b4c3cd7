//! The payments part of a partition's book: the pure `domain::payments` decide/apply,
//! bridged to `PaymentRecorded` payloads (one per domain event).
//!
//! **Invariant:** payment domain event ids are consecutive over the partition's
//! payment events, assigned in chain order when an event is folded, so the writer's
//! book, an auditor's fold and reconciliation number them alike.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{PartitionBook, Proposal, codec, payments_codec};
use crate::domain::Rejection;
use crate::domain::ids::HouseholdId;
use crate::domain::payments::ids::{CitizenIndex, GatewayId, HouseholdRef, OfficerId};
use crate::domain::payments::month::Month;
use crate::domain::payments::{self, Actor, CommandKind, Decision, Event, EventBody};
use crate::domain::registry::{Registry, Residence};
use crate::proto::{self, PaymentRecorded, envelope::Payload};

/// A gateway's result as it signed it: the exact bytes and the signature, kept in
/// the event so anyone can prove later which gateway said what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedPost {
    pub bytes: Vec<u8>,
    pub signature: Vec<u8>,
    pub key_id: String,
    /// Which transport signed `bytes`, so an auditor knows what message to verify.
    #[serde(default)]
    pub format: PostFormat,
}

/// How a gateway signed the bytes kept in the event (docs/GATEWAYS.md §4 and §9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PostFormat {
    /// A `GatewayPost` protobuf, signed over `"ansinh/v1/gateway-post\0" || bytes` (NATS).
    #[default]
    GatewayPostProto,
    /// An HTTP request, signed over `"ansinh/v1/gateway-http\0" || bytes`, where bytes
    /// are `timestamp "\n" method " " path "\n" body`.
    HttpV1,
}

impl PostFormat {
    /// The `PaymentRecorded.post_format` value ("" for the protobuf form, so events
    /// recorded before this field existed read the same).
    pub fn wire_name(self) -> &'static str {
        match self {
            PostFormat::GatewayPostProto => "",
            PostFormat::HttpV1 => "http-v1",
        }
    }
}

/// The actor role a gateway acts under (set by the transport that authenticated it).
pub const GATEWAY_ROLE: &str = "gateway";

fn domain_actor(actor: &proto::Actor) -> Result<Actor, Rejection> {
    Ok(if actor.role == GATEWAY_ROLE {
        Actor::Gateway(GatewayId::parse(&actor.id)?)
    } else {
        Actor::Officer(OfficerId::parse(&actor.id)?)
    })
}

/// The variant name of an event body ("InstructionIssued", ...).
pub fn kind_of(body: &EventBody) -> String {
    match serde_json::to_value(body) {
        Ok(serde_json::Value::Object(map)) => map.keys().next().cloned().unwrap_or_default(),
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn budget_label(key: &payments::budget::BudgetKey) -> String {
    format!("{}/{}/{}", key.programme, key.commune, key.period)
}

/// The payload recording one decided payment event, decided against `book` (the
/// partition's payments before the decision).
pub fn payload_of(
    event: &Event,
    signed: Option<&SignedPost>,
    book: &payments::Book,
) -> (Payload, Vec<String>) {
    let (instruction, gateway, amount, household) = match &event.body {
        EventBody::InstructionIssued { instruction, .. } => (
            instruction.id.to_string(),
            instruction.channel.gateway().to_string(),
            instruction.amount,
            Some(instruction.beneficiary.household.to_string()),
        ),
        // The household a post concerns is its instruction's, which the book knows, not
        // the one the gateway wrote: a refused post naming another household (a bank's
        // mix-up) would otherwise sit in that household's history, in any province. A post
        // for an instruction the partition never issued concerns no household.
        EventBody::GatewayPostAccepted { post, .. }
        | EventBody::GatewayPostRefused { post, .. } => (
            post.instruction.to_string(),
            post.gateway.to_string(),
            post.amount,
            payments::instructions::InstructionId::parse(post.instruction.as_str())
                .and_then(|id| book.instructions.get(&id))
                .map(|i| i.issued.beneficiary.household.to_string()),
        ),
        EventBody::InstructionTimedOut {
            instruction,
            budget,
        }
        | EventBody::InstructionCancelled {
            instruction,
            budget,
        } => (instruction.to_string(), String::new(), budget.amount, None),
        EventBody::BudgetAllocated { budget } | EventBody::BudgetDeallocated { budget } => {
            (String::new(), String::new(), budget.amount, None)
        }
        EventBody::EntitlementGranted { beneficiary, .. } => (
            String::new(),
            String::new(),
            Decimal::ZERO,
            Some(beneficiary.household.to_string()),
        ),
        _ => (String::new(), String::new(), Decimal::ZERO, None),
    };
    let is_post = matches!(
        event.body,
        EventBody::GatewayPostAccepted { .. } | EventBody::GatewayPostRefused { .. }
    );
    let signed = signed.filter(|_| is_post);
    let budget = event.budget_move().map(|m| budget_label(&m.key));
    let mut subjects = Vec::new();
    if !instruction.is_empty() {
        subjects.push(format!("payment:{instruction}"));
    }
    if let Some(h) = &household {
        subjects.push(format!("household:{h}"));
    }
    if !gateway.is_empty() {
        subjects.push(format!("gateway:{gateway}"));
    }
    if let Some(b) = &budget {
        subjects.push(format!("budget:{b}"));
    }
    let payload = Payload::PaymentRecorded(PaymentRecorded {
        kind: kind_of(&event.body),
        effective_on: codec::date(&event.effective),
        instruction_id: instruction,
        gateway_id: gateway,
        amount: if amount.is_zero() {
            String::new()
        } else {
            amount.normalize().to_string()
        },
        budget: budget.unwrap_or_default(),
        postings: event
            .postings()
            .iter()
            .map(|p| proto::Posting {
                account: codec::name(&p.account),
                debit: p.debit.normalize().to_string(),
                credit: p.credit.normalize().to_string(),
            })
            .collect(),
        signed_post: signed.map(|s| s.bytes.clone().into()).unwrap_or_default(),
        post_signature: signed
            .map(|s| s.signature.clone().into())
            .unwrap_or_default(),
        post_key_id: signed.map(|s| s.key_id.clone()).unwrap_or_default(),
        post_format: signed
            .map(|s| s.format.wire_name().to_string())
            .unwrap_or_default(),
        body: Some(payments_codec::body_to_proto(&event.body)),
    });
    (payload, subjects)
}

/// Decides a payments command; one proposal per decided event.
pub fn decide(
    book: &PartitionBook,
    kind: &CommandKind,
    effective: NaiveDate,
    signed: Option<&SignedPost>,
    actor: &proto::Actor,
) -> Result<Vec<Proposal>, Rejection> {
    let command = payments::Command {
        actor: domain_actor(actor)?,
        effective,
        kind: kind.clone(),
    };
    match payments::decide_for(&book.payments, command, &Facts(&book.registry))? {
        Decision::Duplicate(first) => Err(Rejection::DuplicatePost { first: first.event }),
        Decision::Append(events) if events.is_empty() => Err(Rejection::NothingToRecord),
        Decision::Append(events) => Ok(events
            .iter()
            .map(|e| {
                let (payload, subjects) = payload_of(e, signed, &book.payments);
                Proposal { payload, subjects }
            })
            .collect()),
    }
}

/// The partition's registry, as the payments domain asks it.
struct Facts<'a>(&'a Registry);

impl payments::RegistryFacts for Facts<'_> {
    fn resident(&self, h: &HouseholdRef, month: Month) -> bool {
        let household = HouseholdId::parse(h.as_str())
            .ok()
            .and_then(|id| self.0.households.get(&id));
        household.is_some_and(|h| match h.residence {
            Residence::Active => true,
            Residence::MovedOut { on, .. } | Residence::Dissolved { on } => Month::of(on) >= month,
        })
    }

    fn died_on(&self, citizen: &CitizenIndex) -> Option<NaiveDate> {
        self.0.deaths.get(citizen).copied()
    }

    fn is_member(&self, h: &HouseholdRef, citizen: &CitizenIndex) -> bool {
        let household = HouseholdId::parse(h.as_str())
            .ok()
            .and_then(|id| self.0.households.get(&id));
        // A move-out keeps the household's citizens (it is `resident` that stops its
        // payments); a member change, a death and an erasure take them out.
        household.is_some_and(|h| h.citizens.contains(citizen) || h.died.contains(citizen))
    }

    fn erased(&self, h: &HouseholdRef) -> bool {
        HouseholdId::parse(h.as_str())
            .ok()
            .and_then(|id| self.0.households.get(&id))
            .is_some_and(|h| h.erased)
    }
}

/// The domain event a payload records, numbered `id`.
pub fn event_of(
    id: payments::book::EventId,
    actor: Option<&proto::Actor>,
    p: &PaymentRecorded,
) -> Result<Event, codec::CodecError> {
    let body = payments_codec::body_from_proto(&p.body)?;
    let (actor, effective) = event_header(actor, p)?;
    Ok(Event {
        id,
        actor,
        effective,
        body,
    })
}

/// The actor and date of a payment record, as the book reads them: a record without
/// them is left out by the book, and so by every view.
pub fn event_header(
    actor: Option<&proto::Actor>,
    p: &PaymentRecorded,
) -> Result<(payments::Actor, NaiveDate), codec::CodecError> {
    let actor = actor
        .ok_or_else(|| codec::CodecError {
            field: "actor",
            problem: "missing".into(),
        })
        .and_then(|a| {
            domain_actor(a).map_err(|e| codec::CodecError {
                field: "actor",
                problem: e.to_string(),
            })
        })?;
    Ok((actor, codec::parse_date("effective_on", &p.effective_on)?))
}

/// Folds a payment event into the book.
pub fn apply(
    book: &mut PartitionBook,
    actor: Option<&proto::Actor>,
    p: &PaymentRecorded,
) -> Result<(), codec::CodecError> {
    let event = event_of(book.payments.last_event_id + 1, actor, p)?;
    book.payments_trial.post(event.postings());
    payments::apply(&mut book.payments, &event);
    Ok(())
}
