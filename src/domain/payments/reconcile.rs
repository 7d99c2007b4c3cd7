//! Reconciliation over events: per gateway and day, and per household.
//!
//! A projection of its own: it folds events without `apply`, so a defect in
//! one is caught by comparing it with the other (tests do).
//!
//! Days: an instruction counts as instructed on its issue day; results,
//! timeouts, cancellations and mismatches count on the day they were
//! recorded; pending instructions count on their issue day.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::payments::book::{Event, EventBody, EventId};
use crate::domain::payments::entitlements::ChannelKind;
use crate::domain::payments::ids::{GatewayId, GatewayTxnId, HouseholdRef};
use crate::domain::payments::instructions::{
    InstructionId, InstructionStatus, NewInstruction, Outcome, PostRefusal,
};
use crate::domain::payments::month::Month;

/// A count and an amount. Sums cannot overflow in practice: each amount is
/// at most 10^15 and Decimal holds ~7.9 × 10^28.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub count: u64,
    pub amount: Decimal,
}

impl Tally {
    pub fn add(&mut self, amount: Decimal) {
        self.count += 1;
        self.amount += amount;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MismatchKind {
    /// A post the book refused (wrong gateway, amount or beneficiary,
    /// unknown instruction, out-of-order result, reused transaction id). A
    /// refused `Settled` may mean money moved that the book does not count.
    RefusedPost {
        outcome: Outcome,
        gateway_txn: GatewayTxnId,
        amount: Decimal,
        refusal: PostRefusal,
    },
    /// Accepted, but money paid out came back: the beneficiary did not get it.
    ReturnedAfterSettlement {
        amount: Decimal,
        settled_by: Option<GatewayTxnId>,
    },
    /// Settled for a month after the entitlement stopped: to recover.
    PaidAfterStop {
        amount: Decimal,
        stopped_on: NaiveDate,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    pub event: EventId,
    /// The instruction as the event names it (verbatim for refused posts).
    pub instruction: String,
    pub kind: MismatchKind,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayDay {
    pub instructed: Tally,
    pub settled: Tally,
    pub failed: Tally,
    /// Every accepted return, before or after settlement.
    pub returned: Tally,
    pub timed_out: Tally,
    pub cancelled: Tally,
    /// Issued this day and still without a result `pending_days` or more
    /// days later, on `as_of`.
    pub pending_overdue: Tally,
    pub pending_overdue_ids: Vec<InstructionId>,
    pub mismatches: Vec<Mismatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    pub as_of: NaiveDate,
    pub pending_days: u32,
    pub days: BTreeMap<(GatewayId, NaiveDate), GatewayDay>,
}

/// What reconciliation remembers of an instruction.
struct Seen {
    gateway: GatewayId,
    amount: Decimal,
    issued_on: NaiveDate,
    status: InstructionStatus,
    settled_by: Option<GatewayTxnId>,
}

fn day<'d>(
    days: &'d mut BTreeMap<(GatewayId, NaiveDate), GatewayDay>,
    gateway: &GatewayId,
    date: NaiveDate,
) -> &'d mut GatewayDay {
    days.entry((gateway.clone(), date)).or_default()
}

/// Per (gateway, day) report as of `as_of`. Events dated after `as_of` are
/// left out, so a report for a past day can be made again and is the same.
///
/// `events` is the log from its first event, in order: results refer to
/// instructions issued earlier. Passing a window of the log is a programming
/// error and panics rather than reporting wrong totals.
pub fn reconcile<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    as_of: NaiveDate,
    pending_days: u32,
) -> Reconciliation {
    let mut seen: BTreeMap<InstructionId, Seen> = BTreeMap::new();
    let mut days: BTreeMap<(GatewayId, NaiveDate), GatewayDay> = BTreeMap::new();
    for e in events.into_iter().filter(|e| e.effective <= as_of) {
        match &e.body {
            EventBody::InstructionIssued { instruction, .. } => {
                let gateway = instruction.channel.gateway().clone();
                day(&mut days, &gateway, e.effective)
                    .instructed
                    .add(instruction.amount);
                seen.insert(
                    instruction.id,
                    Seen {
                        gateway,
                        amount: instruction.amount,
                        issued_on: e.effective,
                        status: InstructionStatus::Instructed,
                        settled_by: None,
                    },
                );
            }
            EventBody::GatewayPostAccepted {
                post,
                instruction,
                status_after,
                ..
            } => {
                let s = seen
                    .get_mut(instruction)
                    .expect("an accepted post follows its instruction");
                let d = day(&mut days, &s.gateway, e.effective);
                match status_after {
                    InstructionStatus::Settled => {
                        d.settled.add(s.amount);
                        s.settled_by = Some(post.gateway_txn.clone());
                    }
                    InstructionStatus::Failed => d.failed.add(s.amount),
                    InstructionStatus::Returned => {
                        d.returned.add(s.amount);
                        if s.status == InstructionStatus::Settled {
                            d.mismatches.push(Mismatch {
                                event: e.id,
                                instruction: instruction.to_string(),
                                kind: MismatchKind::ReturnedAfterSettlement {
                                    amount: s.amount,
                                    settled_by: s.settled_by.clone(),
                                },
                            });
                        }
                    }
                    other => unreachable!("a post never leads to {other:?}"),
                }
                s.status = *status_after;
            }
            EventBody::GatewayPostRefused { post, refusal } => {
                day(&mut days, &post.gateway, e.effective)
                    .mismatches
                    .push(Mismatch {
                        event: e.id,
                        instruction: post.instruction.to_string(),
                        kind: MismatchKind::RefusedPost {
                            outcome: post.outcome,
                            gateway_txn: post.gateway_txn.clone(),
                            amount: post.amount,
                            refusal: refusal.clone(),
                        },
                    });
            }
            EventBody::InstructionTimedOut { instruction, .. }
            | EventBody::InstructionCancelled { instruction, .. } => {
                let s = seen.get_mut(instruction).expect("follows its instruction");
                let d = day(&mut days, &s.gateway, e.effective);
                if matches!(e.body, EventBody::InstructionTimedOut { .. }) {
                    d.timed_out.add(s.amount);
                    s.status = InstructionStatus::TimedOut;
                } else {
                    d.cancelled.add(s.amount);
                    s.status = InstructionStatus::Cancelled;
                }
            }
            EventBody::EntitlementStopped { on, overpaid, .. } => {
                for id in overpaid {
                    let s = &seen[id];
                    day(&mut days, &s.gateway, e.effective)
                        .mismatches
                        .push(Mismatch {
                            event: e.id,
                            instruction: id.to_string(),
                            kind: MismatchKind::PaidAfterStop {
                                amount: s.amount,
                                stopped_on: *on,
                            },
                        });
                }
            }
            EventBody::BudgetAllocated { .. }
            | EventBody::BudgetDeallocated { .. }
            | EventBody::EntitlementGranted { .. }
            | EventBody::EntitlementChanged { .. }
            | EventBody::PaymentRunCompleted { .. } => {}
        }
    }
    for (id, s) in &seen {
        let age_days = (as_of - s.issued_on).num_days();
        if s.status == InstructionStatus::Instructed && age_days >= i64::from(pending_days) {
            let d = day(&mut days, &s.gateway, s.issued_on);
            d.pending_overdue.add(s.amount);
            d.pending_overdue_ids.push(*id);
        }
    }
    Reconciliation {
        as_of,
        pending_days,
        days,
    }
}

/// What a household received for a month through one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub settled: Tally,
    /// Settled payments that came back afterwards.
    pub returned: Tally,
    /// settled − returned: what actually reached the household.
    pub net: Decimal,
}

/// A household's payments per (month, channel), from the log from its first
/// event (posts for instructions not seen are skipped).
pub fn household_view<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    household: &HouseholdRef,
) -> BTreeMap<(Month, ChannelKind), Received> {
    let mut ours: BTreeMap<InstructionId, NewInstruction> = BTreeMap::new();
    let mut view: BTreeMap<(Month, ChannelKind), Received> = BTreeMap::new();
    for e in events {
        match &e.body {
            EventBody::InstructionIssued { instruction, .. }
                if instruction.beneficiary.household == *household =>
            {
                ours.insert(instruction.id, instruction.clone());
            }
            EventBody::GatewayPostAccepted {
                instruction,
                status_after,
                budget,
                ..
            } => {
                let Some(i) = ours.get(instruction) else {
                    continue;
                };
                let r = view
                    .entry((instruction.month, i.channel.kind()))
                    .or_default();
                // Only a settlement posts and only a return after settlement
                // releases a posted payment; a return before settlement voids
                // a hold and moved nothing to the household.
                match (status_after, budget.kind) {
                    (InstructionStatus::Settled, _) => {
                        r.settled.add(i.amount);
                        r.net += i.amount;
                    }
                    (
                        InstructionStatus::Returned,
                        crate::domain::payments::budget::MoveKind::Release,
                    ) => {
                        r.returned.add(i.amount);
                        r.net -= i.amount;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    view
}
