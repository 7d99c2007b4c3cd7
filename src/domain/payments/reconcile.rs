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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub gateway: GatewayId,
    pub amount: Decimal,
    pub issued_on: NaiveDate,
    pub status: InstructionStatus,
    pub settled_by: Option<GatewayTxnId>,
}

/// Where a reconciliation fold keeps what it remembers: in memory for a report over the
/// log (`reconcile`), in the projections for the day view kept as events arrive
/// (`views`). One fold for both, so the two cannot disagree.
pub trait Records {
    type Error;
    fn seen(&mut self, id: &InstructionId) -> Result<Option<Seen>, Self::Error>;
    fn set_seen(&mut self, id: InstructionId, seen: Seen) -> Result<(), Self::Error>;
    /// Changes the line of `gateway` on `date` (a new line starts empty).
    fn change_day(
        &mut self,
        gateway: &GatewayId,
        date: NaiveDate,
        change: &mut dyn FnMut(&mut GatewayDay),
    ) -> Result<(), Self::Error>;
}

/// Whether `fold` changes the records for this kind of event: a view of the records as
/// of a day is out of date only once such an event is dated after it.
pub fn changes_records(body: &EventBody) -> bool {
    match body {
        EventBody::InstructionIssued { .. }
        | EventBody::GatewayPostAccepted { .. }
        | EventBody::GatewayPostRefused { .. }
        | EventBody::InstructionTimedOut { .. }
        | EventBody::InstructionCancelled { .. }
        | EventBody::EntitlementStopped { .. } => true,
        EventBody::BudgetAllocated { .. }
        | EventBody::BudgetDeallocated { .. }
        | EventBody::EntitlementGranted { .. }
        | EventBody::EntitlementChanged { .. }
        | EventBody::PaymentRunCompleted { .. } => false,
    }
}

/// Folds one event, recorded on `effective`, into the records. A result for an instruction
/// the records have not seen changes nothing (the book refuses such a post, so only a
/// window of the log can show one).
pub fn fold<R: Records>(
    r: &mut R,
    id: EventId,
    effective: NaiveDate,
    body: &EventBody,
) -> Result<(), R::Error> {
    match body {
        EventBody::InstructionIssued { instruction, .. } => {
            let gateway = instruction.channel.gateway().clone();
            r.change_day(&gateway, effective, &mut |d| {
                d.instructed.add(instruction.amount)
            })?;
            r.set_seen(
                instruction.id,
                Seen {
                    gateway,
                    amount: instruction.amount,
                    issued_on: effective,
                    status: InstructionStatus::Instructed,
                    settled_by: None,
                },
            )?;
        }
        EventBody::GatewayPostAccepted {
            post,
            instruction,
            status_after,
            ..
        } => {
            let Some(mut s) = r.seen(instruction)? else {
                return Ok(());
            };
            let mut mismatch = None;
            match status_after {
                InstructionStatus::Settled => s.settled_by = Some(post.gateway_txn.clone()),
                InstructionStatus::Returned if s.status == InstructionStatus::Settled => {
                    mismatch = Some(Mismatch {
                        event: id,
                        instruction: instruction.to_string(),
                        kind: MismatchKind::ReturnedAfterSettlement {
                            amount: s.amount,
                            settled_by: s.settled_by.clone(),
                        },
                    });
                }
                InstructionStatus::Failed | InstructionStatus::Returned => {}
                other => unreachable!("a post never leads to {other:?}"),
            }
            r.change_day(&s.gateway, effective, &mut |d| {
                match status_after {
                    InstructionStatus::Settled => d.settled.add(s.amount),
                    InstructionStatus::Failed => d.failed.add(s.amount),
                    _ => d.returned.add(s.amount),
                }
                d.mismatches.extend(mismatch.take());
            })?;
            s.status = *status_after;
            r.set_seen(*instruction, s)?;
        }
        EventBody::GatewayPostRefused { post, refusal } => {
            let mut mismatch = Some(Mismatch {
                event: id,
                instruction: post.instruction.to_string(),
                kind: MismatchKind::RefusedPost {
                    outcome: post.outcome,
                    gateway_txn: post.gateway_txn.clone(),
                    amount: post.amount,
                    refusal: refusal.clone(),
                },
            });
            r.change_day(&post.gateway, effective, &mut |d| {
                d.mismatches.extend(mismatch.take())
            })?;
        }
        EventBody::InstructionTimedOut { instruction, .. }
        | EventBody::InstructionCancelled { instruction, .. } => {
            let Some(mut s) = r.seen(instruction)? else {
                return Ok(());
            };
            let timed_out = matches!(body, EventBody::InstructionTimedOut { .. });
            r.change_day(&s.gateway, effective, &mut |d| {
                if timed_out {
                    d.timed_out.add(s.amount)
                } else {
                    d.cancelled.add(s.amount)
                }
            })?;
            s.status = if timed_out {
                InstructionStatus::TimedOut
            } else {
                InstructionStatus::Cancelled
            };
            r.set_seen(*instruction, s)?;
        }
        EventBody::EntitlementStopped { on, overpaid, .. } => {
            for instruction in overpaid {
                let Some(s) = r.seen(instruction)? else {
                    continue;
                };
                let mut mismatch = Some(Mismatch {
                    event: id,
                    instruction: instruction.to_string(),
                    kind: MismatchKind::PaidAfterStop {
                        amount: s.amount,
                        stopped_on: *on,
                    },
                });
                r.change_day(&s.gateway, effective, &mut |d| {
                    d.mismatches.extend(mismatch.take())
                })?;
            }
        }
        EventBody::BudgetAllocated { .. }
        | EventBody::BudgetDeallocated { .. }
        | EventBody::EntitlementGranted { .. }
        | EventBody::EntitlementChanged { .. }
        | EventBody::PaymentRunCompleted { .. } => {}
    }
    Ok(())
}

/// Whether an instruction issued on `issued_on`, still without a result on `as_of`, is
/// overdue: `pending_days` or more days old.
pub fn pending_overdue(issued_on: NaiveDate, as_of: NaiveDate, pending_days: u32) -> bool {
    (as_of - issued_on).num_days() >= i64::from(pending_days)
}

/// The records of a report over the log, in memory.
#[derive(Default)]
struct InMemory {
    seen: BTreeMap<InstructionId, Seen>,
    days: BTreeMap<(GatewayId, NaiveDate), GatewayDay>,
}

impl Records for InMemory {
    type Error = std::convert::Infallible;
    fn seen(&mut self, id: &InstructionId) -> Result<Option<Seen>, Self::Error> {
        Ok(self.seen.get(id).cloned())
    }
    fn set_seen(&mut self, id: InstructionId, seen: Seen) -> Result<(), Self::Error> {
        self.seen.insert(id, seen);
        Ok(())
    }
    fn change_day(
        &mut self,
        gateway: &GatewayId,
        date: NaiveDate,
        change: &mut dyn FnMut(&mut GatewayDay),
    ) -> Result<(), Self::Error> {
        change(self.days.entry((gateway.clone(), date)).or_default());
        Ok(())
    }
}

/// Per (gateway, day) report as of `as_of`. Events dated after `as_of` are
/// left out, so a report for a past day can be made again and is the same.
///
/// `events` is the log from its first event, in order: results refer to
/// instructions issued earlier (a window of the log misses those results).
pub fn reconcile<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    as_of: NaiveDate,
    pending_days: u32,
) -> Reconciliation {
    let mut r = Reconciler::new(as_of, pending_days);
    for e in events {
        r.fold(e);
    }
    r.finish()
}

/// A reconciliation folded one event at a time, as a report reads the log: it keeps
/// what it knows of each instruction and each gateway's day, never the events, so a
/// year's report holds a fraction of the year's payment events.
pub struct Reconciler {
    as_of: NaiveDate,
    pending_days: u32,
    records: InMemory,
}

impl Reconciler {
    pub fn new(as_of: NaiveDate, pending_days: u32) -> Self {
        Self {
            as_of,
            pending_days,
            records: InMemory::default(),
        }
    }

    /// Folds the next event of the partition, in chain order; an event recorded after
    /// `as_of` is left out.
    pub fn fold(&mut self, e: &Event) {
        if e.effective <= self.as_of {
            let Ok(()) = fold(&mut self.records, e.id, e.effective, &e.body);
        }
    }

    pub fn finish(self) -> Reconciliation {
        let InMemory { seen, mut days } = self.records;
        for (id, s) in &seen {
            if s.status == InstructionStatus::Instructed
                && pending_overdue(s.issued_on, self.as_of, self.pending_days)
            {
                let d = days.entry((s.gateway.clone(), s.issued_on)).or_default();
                d.pending_overdue.add(s.amount);
                d.pending_overdue_ids.push(*id);
            }
        }
        Reconciliation {
            as_of: self.as_of,
            pending_days: self.pending_days,
            days,
        }
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
