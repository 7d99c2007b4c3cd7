//! The payments book: `decide(&Book, Command) -> Result<Decision, Rejection>`
//! and `apply(&mut Book, &Event)`.
//!
//! `decide` holds every rule and does all (checked) arithmetic, dispatching to
//! the module that owns the command; `apply` only copies decided values into
//! state, so it cannot fail and replaying the events gives the same book.
//!
//! **Boundary**: no I/O, clock or randomness. Dates arrive in commands,
//! reference data is compiled in, and this module knows nothing of NATS.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::money::positive_vnd;
use crate::domain::payments::Rejection;
use crate::domain::payments::budget::{self, Budget, BudgetKey, BudgetMove, MoveKind};
use crate::domain::payments::entitlements::{
    self, Entitlement, EntitlementId, StopReason, Stopped, Terms, TermsPeriod,
};
use crate::domain::payments::ids::{
    BeneficiaryRef, CitizenIndex, CommuneId, GatewayId, GatewayTxnId, HouseholdRef, OfficerId,
    ProgrammeId,
};
use crate::domain::payments::instructions::{
    self, GatewayPost, Instruction, InstructionId, InstructionStatus, LeftUnpaid, NewInstruction,
    PostAnswer, PostKey, PostRefusal, RecordedPost, Shortfall, Verdict, post_key,
};
use crate::domain::payments::ledger::Posting;
use crate::domain::payments::month::Month;
use crate::domain::payments::reference::ReferenceHashes;

pub type EventId = u64;

/// The state `decide` reads and `apply` writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    pub entitlements: BTreeMap<EntitlementId, Entitlement>,
    /// Each person's entitlements per programme (`Book::same_person`). Derived from
    /// `entitlements`: not in a snapshot, rebuilt when one is read (`index_persons`).
    #[serde(skip)]
    pub persons: Persons,
    /// The latest month each stopped entitlement paid: the month of its stop, or a later
    /// month it had already paid ahead (settled before the stop, listed as overpaid) or its
    /// gateway settled late (`late_settlements`, before or after the stop). None for one
    /// that stopped before its first month and paid none. A new grant for the same person
    /// must start after it, or a run would pay that month again.
    pub stopped_paying_through: BTreeMap<EntitlementId, Month>,
    pub budgets: BTreeMap<BudgetKey, Budget>,
    pub instructions: BTreeMap<InstructionId, Instruction>,
    /// Latest attempt per (entitlement, month).
    pub attempts: BTreeMap<(EntitlementId, Month), u32>,
    /// Accepted gateway posts, never pruned: a post repeated a year later
    /// still gets its first answer.
    pub accepted_posts: BTreeMap<PostKey, RecordedPost>,
    /// The latest refused post per key, kept apart so that a refusal never
    /// displaces an accepted post of the same key (a reused transaction id).
    pub refused_posts: BTreeMap<PostKey, RecordedPost>,
    /// Instructions their gateway posted as settled after the ledger had stopped waiting
    /// for them (timed out, failed, returned or cancelled), with the gateway's
    /// transaction id: the post is refused and recorded, but the person may hold the
    /// money, so the month is not reissued under any of the person's entitlements
    /// (`decide_reissue`), its instructions still pending are cancelled by the post, and it
    /// counts as paid for a new grant or a move. Kept from the first such post; rebuilt from the recorded
    /// refusals (`instructions::late_settlement`).
    pub late_settlements: BTreeMap<InstructionId, GatewayTxnId>,
    /// Refused posts recorded per (gateway, day), for the daily bound.
    pub refused_per_gateway_day: BTreeMap<(GatewayId, NaiveDate), u32>,
    /// The latest date of the partition's payment runs, reissues and timeouts, before
    /// which none of them may be dated (`instructions::not_before_latest_operation`).
    /// They date the instructions' issues and give-ups, and a timeout counts from the
    /// issue: a run dated back would have its instructions timed out at once, while
    /// their gateway still has days to pay, and reissued to be paid twice. Grants,
    /// changes and stops keep their own dates: they age no instruction, a stop names the
    /// past day of a death or move, and its cancellations already may not precede each
    /// instruction's last change (`BackDated`). Gateway posts neither: they carry the day
    /// their result was received, at the gateway's pace.
    pub latest_operation_on: Option<NaiveDate>,
    /// Id of the last event applied (0 = none); ids are consecutive from 1.
    pub last_event_id: EventId,
    pub last_entitlement_id: EntitlementId,
}

impl Book {
    /// A budget's state; one never allocated is all zero.
    pub fn budget(&self, key: &BudgetKey) -> Budget {
        self.budgets.get(key).cloned().unwrap_or_default()
    }

    /// The entitlements of `programme`, ever granted, that may pay the person a grant to
    /// `beneficiary` naming `citizen` would pay: "one allowance per person and programme"
    /// holds across them. The person is the citizen the grant recorded, whatever
    /// reference (a position in the household, which shifts when a member before them
    /// dies or leaves) it was granted under. An entitlement without a citizen (a member
    /// without an id, or a grant recorded before the ledger kept it) could be anyone at
    /// its position, so it counts as the person of every grant under its reference, and a
    /// grant without a citizen as the person of every entitlement under its reference.
    /// In id order.
    pub fn same_person(
        &self,
        programme: &ProgrammeId,
        beneficiary: &BeneficiaryRef,
        citizen: Option<&CitizenIndex>,
    ) -> BTreeSet<EntitlementId> {
        let under_reference = self
            .persons
            .by_reference
            .get(&(programme.clone(), beneficiary.clone()))
            .into_iter()
            .flatten()
            .copied();
        let Some(citizen) = citizen else {
            return under_reference.collect();
        };
        let unnamed = under_reference.filter(|e| self.entitlements[e].citizen.is_none());
        self.persons
            .by_citizen
            .get(&(programme.clone(), *citizen))
            .into_iter()
            .flatten()
            .copied()
            .chain(unnamed)
            .collect()
    }

    /// The entitlements that pay the person `entitlement` pays the same allowance
    /// (`same_person`), itself included.
    pub fn same_allowance(&self, entitlement: EntitlementId) -> BTreeSet<EntitlementId> {
        self.entitlements
            .get(&entitlement)
            .map_or_else(BTreeSet::new, |e| {
                self.same_person(&e.programme, &e.beneficiary, e.citizen.as_ref())
            })
    }

    /// Rebuilds `persons` from the entitlements, after a snapshot is read.
    pub fn index_persons(&mut self) {
        let mut persons = Persons::default();
        for e in self.entitlements.values() {
            persons.insert(e.id, &e.programme, &e.beneficiary, e.citizen.as_ref());
        }
        self.persons = persons;
    }
}

/// Each programme's entitlements by the citizen their grant recorded and by the reference
/// they were granted under, stopped ones included: what `Book::same_person` reads, so a
/// grant, a late settlement and a reissue visit only the person's own entitlements, not
/// the partition's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Persons {
    by_citizen: BTreeMap<(ProgrammeId, CitizenIndex), BTreeSet<EntitlementId>>,
    by_reference: BTreeMap<(ProgrammeId, BeneficiaryRef), BTreeSet<EntitlementId>>,
}

impl Persons {
    fn insert(
        &mut self,
        id: EntitlementId,
        programme: &ProgrammeId,
        beneficiary: &BeneficiaryRef,
        citizen: Option<&CitizenIndex>,
    ) {
        if let Some(citizen) = citizen {
            self.by_citizen
                .entry((programme.clone(), *citizen))
                .or_default()
                .insert(id);
        }
        self.by_reference
            .entry((programme.clone(), beneficiary.clone()))
            .or_default()
            .insert(id);
    }
}

// ---------------------------------------------------------------- commands

/// Who issues a command, as authenticated at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// A signed-in officer (or commune committee).
    Officer(OfficerId),
    /// A payment gateway, with its own credentials: it may only post results.
    Gateway(GatewayId),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub actor: Actor,
    /// Business date of the command (decision date, run date, date a result
    /// was received). Never read from a clock here.
    pub effective: NaiveDate,
    pub kind: CommandKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandKind {
    /// Add to the allocation of a budget.
    Allocate { budget: BudgetKey, amount: Decimal },
    /// Take back unused allocation.
    Deallocate { budget: BudgetKey, amount: Decimal },
    Grant {
        programme: ProgrammeId,
        beneficiary: BeneficiaryRef,
        commune: CommuneId,
        from: Month,
        terms: Terms,
        /// Who the member is (`CitizenIndex`), so that their death stops the payments.
        /// `Service::payment` sets it from the household's sealed data, replacing what
        /// an edge sent; None for a member without a citizen id (a young child), whose
        /// entitlement an officer stops.
        #[serde(default)]
        citizen: Option<CitizenIndex>,
    },
    /// New terms (category, channel, provincial base) from `from` on.
    Change {
        entitlement: EntitlementId,
        from: Month,
        terms: Terms,
    },
    Stop {
        entitlement: EntitlementId,
        on: NaiveDate,
        reason: StopReason,
    },
    /// `payments run --period P [--commune C]`.
    Run {
        period: Month,
        commune: Option<CommuneId>,
    },
    /// Void the hold of an instruction without a result past its timeout.
    TimeOut { instruction: InstructionId },
    /// Issue a failed, returned or timed-out instruction again, on its
    /// channel or another one (e.g. post-office cash).
    Reissue {
        instruction: InstructionId,
        channel: Option<entitlements::Channel>,
    },
    /// A gateway's result (gateway actors only).
    Post(GatewayPost),
}

// ---------------------------------------------------------------- events

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub actor: Actor,
    pub effective: NaiveDate,
    pub body: EventBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventBody {
    BudgetAllocated {
        budget: BudgetMove,
    },
    BudgetDeallocated {
        budget: BudgetMove,
    },
    EntitlementGranted {
        entitlement: EntitlementId,
        programme: ProgrammeId,
        beneficiary: BeneficiaryRef,
        commune: CommuneId,
        from: Month,
        terms: Terms,
        /// Who the member was at the grant; None for one without a citizen id, and in
        /// grants recorded before the ledger kept it.
        #[serde(default, with = "crate::domain::registry::blind_bytes::option")]
        citizen: Option<CitizenIndex>,
    },
    EntitlementChanged {
        entitlement: EntitlementId,
        from: Month,
        terms: Terms,
    },
    /// Followed by an `InstructionCancelled` for each pending instruction of
    /// a later month.
    EntitlementStopped {
        entitlement: EntitlementId,
        on: NaiveDate,
        reason: StopReason,
        /// Settled instructions for months after the stop: overpaid, to recover.
        overpaid: Vec<InstructionId>,
    },
    InstructionIssued {
        instruction: NewInstruction,
        budget: BudgetMove,
    },
    /// Closes a run that issued instructions (after its `InstructionIssued`s).
    PaymentRunCompleted {
        period: Month,
        commune: Option<CommuneId>,
        issued: u64,
        amount: Decimal,
        shortfalls: Vec<Shortfall>,
        reference: ReferenceHashes,
        /// Entitlements of the run's period left unpaid, by why: to be stopped by an
        /// officer.
        left_unpaid: LeftUnpaid,
    },
    GatewayPostAccepted {
        post: GatewayPost,
        instruction: InstructionId,
        status_after: InstructionStatus,
        budget: BudgetMove,
    },
    GatewayPostRefused {
        post: GatewayPost,
        refusal: PostRefusal,
    },
    InstructionTimedOut {
        instruction: InstructionId,
        budget: BudgetMove,
    },
    /// A pending instruction withdrawn, its hold voided: by a stop (after its
    /// `EntitlementStopped`), or by a gateway's late settlement of an earlier instruction
    /// of the person's month, an earlier attempt or an earlier grant's (before that post's
    /// `GatewayPostRefused`).
    InstructionCancelled {
        instruction: InstructionId,
        budget: BudgetMove,
    },
}

impl Event {
    /// The budget move of a money event.
    pub fn budget_move(&self) -> Option<&BudgetMove> {
        self.body.budget_move()
    }

    /// Double-entry lines (empty for events that move no money).
    pub fn postings(&self) -> &[Posting] {
        self.body.postings()
    }
}

impl EventBody {
    /// The budget move of a money event.
    pub fn budget_move(&self) -> Option<&BudgetMove> {
        match self {
            EventBody::BudgetAllocated { budget }
            | EventBody::BudgetDeallocated { budget }
            | EventBody::InstructionIssued { budget, .. }
            | EventBody::GatewayPostAccepted { budget, .. }
            | EventBody::InstructionTimedOut { budget, .. }
            | EventBody::InstructionCancelled { budget, .. } => Some(budget),
            EventBody::EntitlementGranted { .. }
            | EventBody::EntitlementChanged { .. }
            | EventBody::EntitlementStopped { .. }
            | EventBody::PaymentRunCompleted { .. }
            | EventBody::GatewayPostRefused { .. } => None,
        }
    }

    /// Double-entry lines (empty for events that move no money).
    pub fn postings(&self) -> &[Posting] {
        self.budget_move().map_or(&[], |m| &m.postings)
    }
}

impl Event {
    /// The answer this event gives to the gateway post it records.
    pub fn post_answer(&self) -> Option<PostAnswer> {
        let verdict = match &self.body {
            EventBody::GatewayPostAccepted { status_after, .. } => Verdict::Accepted {
                status: *status_after,
            },
            EventBody::GatewayPostRefused { refusal, .. } => Verdict::Refused {
                refusal: refusal.clone(),
            },
            _ => return None,
        };
        Some(PostAnswer {
            event: self.id,
            verdict,
        })
    }
}

/// What a command decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Append these events in order (none when there was nothing to do, e.g.
    /// a run whose instructions all exist).
    Append(Vec<Event>),
    /// The same gateway post was already answered: append nothing and send
    /// this first answer again.
    Duplicate(PostAnswer),
}

impl Decision {
    pub fn events(&self) -> &[Event] {
        match self {
            Decision::Append(events) => events,
            Decision::Duplicate(_) => &[],
        }
    }

    pub fn into_events(self) -> Vec<Event> {
        match self {
            Decision::Append(events) => events,
            Decision::Duplicate(_) => Vec::new(),
        }
    }

    /// For a gateway post: the answer to send back.
    pub fn post_answer(&self) -> Option<PostAnswer> {
        match self {
            Decision::Append(events) => events.iter().find_map(Event::post_answer),
            Decision::Duplicate(first) => Some(first.clone()),
        }
    }
}

// ---------------------------------------------------------------- decide

/// Collects the events of one decision, stamps them with consecutive ids and
/// the command's envelope, and tracks the budgets it has moved so later moves
/// of the same decision see earlier ones.
pub(crate) struct Out<'a> {
    pub(crate) book: &'a Book,
    /// What the registry, which this book does not hold, knows (`decide_for`).
    pub(crate) registry: &'a dyn RegistryFacts,
    actor: Actor,
    effective: NaiveDate,
    next_id: EventId,
    events: Vec<Event>,
    budgets: BTreeMap<BudgetKey, Budget>,
}

impl<'a> Out<'a> {
    fn new(
        book: &'a Book,
        registry: &'a dyn RegistryFacts,
        actor: Actor,
        effective: NaiveDate,
    ) -> Self {
        Self {
            book,
            registry,
            actor,
            effective,
            next_id: book.last_event_id,
            events: Vec::new(),
            budgets: BTreeMap::new(),
        }
    }

    pub(crate) fn effective(&self) -> NaiveDate {
        self.effective
    }

    /// A budget as of the events decided so far.
    pub(crate) fn budget(&self, key: &BudgetKey) -> Budget {
        self.budgets
            .get(key)
            .cloned()
            .unwrap_or_else(|| self.book.budget(key))
    }

    pub(crate) fn decide_move(
        &self,
        key: &BudgetKey,
        kind: MoveKind,
        amount: Decimal,
    ) -> Result<BudgetMove, Rejection> {
        budget::decide_move(key, &self.budget(key), kind, amount)
    }

    pub(crate) fn push(&mut self, body: EventBody) {
        self.next_id += 1;
        let event = Event {
            id: self.next_id,
            actor: self.actor.clone(),
            effective: self.effective,
            body,
        };
        if let Some(m) = event.budget_move() {
            self.budgets.insert(m.key.clone(), m.after.clone());
        }
        self.events.push(event);
    }
}

/// Facts of the partition's registry that payments depend on, which this book does not
/// hold: the partition's book answers from its registry, tests from a fixture.
pub trait RegistryFacts {
    /// Whether the household lived in the partition in `month` (it left in that month
    /// or later, or not at all).
    fn resident(&self, household: &HouseholdRef, month: Month) -> bool;
    /// The day the citizen died, if the registry recorded their death.
    fn died_on(&self, citizen: &CitizenIndex) -> Option<NaiveDate>;
    /// Whether the citizen is one of the household's citizens now, or was when they died
    /// in it (the death rule then decides which months are paid).
    fn is_member(&self, household: &HouseholdRef, citizen: &CitizenIndex) -> bool;
    /// Whether the household's personal data were erased (its data key destroyed): no
    /// one of it can be identified as a payee or verified as the beneficiary any more,
    /// whether or not they had a citizen id.
    fn erased(&self, household: &HouseholdRef) -> bool;
}

/// A registry where every household lives here, with every citizen it ever had, none
/// erased, and nobody has died (`decide`).
pub struct EveryoneHere;

impl RegistryFacts for EveryoneHere {
    fn resident(&self, _: &HouseholdRef, _: Month) -> bool {
        true
    }
    fn died_on(&self, _: &CitizenIndex) -> Option<NaiveDate> {
        None
    }
    fn is_member(&self, _: &HouseholdRef, _: &CitizenIndex) -> bool {
        true
    }
    fn erased(&self, _: &HouseholdRef) -> bool {
        false
    }
}

/// Decide a command against the book. Pure: the same book and command give
/// the same decision.
pub fn decide(book: &Book, command: Command) -> Result<Decision, Rejection> {
    decide_for(book, command, &EveryoneHere)
}

/// `decide` against what the partition's registry knows: a run pays no one for a month
/// after their household left, nor after the month their beneficiary died, as a stop
/// pays through the month of its date, nor a beneficiary no longer in their household; a
/// later month of a deceased's, or of a household gone, and a month of a beneficiary who
/// left, is not reissued.
pub fn decide_for(
    book: &Book,
    command: Command,
    registry: &dyn RegistryFacts,
) -> Result<Decision, Rejection> {
    let mut out = Out::new(book, registry, command.actor.clone(), command.effective);
    match (command.actor, command.kind) {
        (Actor::Gateway(authenticated), CommandKind::Post(post)) => {
            if post.gateway != authenticated {
                return Err(Rejection::GatewayIdentityMismatch {
                    authenticated,
                    claimed: post.gateway,
                });
            }
            if let Some(first) = instructions::decide_post(&mut out, post)? {
                return Ok(Decision::Duplicate(first));
            }
        }
        (Actor::Officer(_), CommandKind::Post(_)) => return Err(Rejection::GatewayOnly),
        (Actor::Gateway(_), _) => return Err(Rejection::OfficerOnly),
        (Actor::Officer(_), kind) => decide_officer(&mut out, kind)?,
    }
    Ok(Decision::Append(out.events))
}

fn decide_officer(out: &mut Out<'_>, kind: CommandKind) -> Result<(), Rejection> {
    match kind {
        CommandKind::Allocate { budget, amount } => {
            let m = out.decide_move(&budget, MoveKind::Allocate, positive_vnd(amount)?)?;
            out.push(EventBody::BudgetAllocated { budget: m });
        }
        CommandKind::Deallocate { budget, amount } => {
            let m = out.decide_move(&budget, MoveKind::Deallocate, positive_vnd(amount)?)?;
            out.push(EventBody::BudgetDeallocated { budget: m });
        }
        CommandKind::Grant {
            programme,
            beneficiary,
            commune,
            from,
            terms,
            citizen,
        } => {
            entitlements::decide_grant(out, programme, beneficiary, commune, from, terms, citizen)?
        }
        CommandKind::Change {
            entitlement,
            from,
            terms,
        } => entitlements::decide_change(out, entitlement, from, terms)?,
        CommandKind::Stop {
            entitlement,
            on,
            reason,
        } => entitlements::decide_stop(out, entitlement, on, reason)?,
        CommandKind::Run { period, commune } => instructions::decide_run(out, period, commune)?,
        CommandKind::TimeOut { instruction } => instructions::decide_timeout(out, instruction)?,
        CommandKind::Reissue {
            instruction,
            channel,
        } => instructions::decide_reissue(out, instruction, channel)?,
        CommandKind::Post(_) => unreachable!("gateway posts are dispatched in decide"),
    }
    Ok(())
}

// ---------------------------------------------------------------- apply

/// Apply a decided event. Never fails; holds no rules.
pub fn apply(book: &mut Book, event: &Event) {
    debug_assert_eq!(event.id, book.last_event_id + 1, "events apply in order");
    book.last_event_id = event.id;
    if let Some(m) = event.budget_move() {
        book.budgets.insert(m.key.clone(), m.after.clone());
    }
    if matches!(
        event.body,
        EventBody::InstructionIssued { .. }
            | EventBody::PaymentRunCompleted { .. }
            | EventBody::InstructionTimedOut { .. }
    ) {
        // A run's or a reissue's issues and a timeout: `max`, since a log written before
        // the rule may hold them out of order.
        book.latest_operation_on = book.latest_operation_on.max(Some(event.effective));
    }
    match &event.body {
        EventBody::BudgetAllocated { .. }
        | EventBody::BudgetDeallocated { .. }
        | EventBody::PaymentRunCompleted { .. } => {}
        EventBody::EntitlementGranted {
            entitlement,
            programme,
            beneficiary,
            commune,
            from,
            terms,
            citizen,
        } => {
            book.last_entitlement_id = *entitlement;
            book.persons
                .insert(*entitlement, programme, beneficiary, citizen.as_ref());
            book.entitlements.insert(
                *entitlement,
                Entitlement {
                    id: *entitlement,
                    programme: programme.clone(),
                    beneficiary: beneficiary.clone(),
                    commune: commune.clone(),
                    periods: vec![TermsPeriod {
                        from: *from,
                        terms: terms.clone(),
                    }],
                    stopped: None,
                    citizen: *citizen,
                },
            );
        }
        EventBody::EntitlementChanged {
            entitlement,
            from,
            terms,
        } => entitlement_mut(book, *entitlement)
            .periods
            .push(TermsPeriod {
                from: *from,
                terms: terms.clone(),
            }),
        EventBody::EntitlementStopped {
            entitlement,
            on,
            reason,
            overpaid,
        } => {
            // A month its gateway settled late (after the ledger gave up on it) may have
            // been paid, whatever the stop does to it.
            let settled_late = instructions::latest_late_settlement(book, *entitlement);
            let e = entitlement_mut(book, *entitlement);
            e.stopped = Some(Stopped {
                on: *on,
                reason: *reason,
            });
            let last_payable = e.stopped.as_ref().expect("just stopped").last_payable();
            // A month paid ahead and settled before the stop was paid all the same: the
            // stop's own decision lists those months (its pending ones it cancels, and
            // they paid nothing), so the limit is read from the event, not the book.
            let paid_through = overpaid
                .iter()
                .map(|i| i.month)
                .chain(settled_late)
                .fold(last_payable, Month::max);
            paid_after_stop(book, *entitlement, paid_through);
        }
        EventBody::InstructionIssued { instruction, .. } => {
            let id = instruction.id;
            book.attempts.insert((id.entitlement, id.month), id.attempt);
            book.instructions.insert(
                id,
                Instruction {
                    issued: instruction.clone(),
                    issued_on: event.effective,
                    status: InstructionStatus::Instructed,
                    settled_by: None,
                    last_change_on: event.effective,
                },
            );
        }
        EventBody::GatewayPostAccepted {
            post,
            instruction,
            status_after,
            ..
        } => {
            let i = instruction_mut(book, instruction);
            i.status = *status_after;
            i.last_change_on = event.effective;
            if *status_after == InstructionStatus::Settled {
                i.settled_by = Some(post.gateway_txn.clone());
            }
            let recorded = recorded(event, post);
            book.accepted_posts.insert(post_key(post), recorded);
        }
        EventBody::GatewayPostRefused { post, refusal } => {
            if let Some(id) = instructions::late_settlement(post, refusal) {
                book.late_settlements
                    .entry(id)
                    .or_insert_with(|| post.gateway_txn.clone());
                // Settled late after its entitlement stopped (a month the stop cancelled):
                // the month may have been paid, so a new grant for the person starts after.
                let stopped = book.entitlements.get(&id.entitlement);
                if stopped.is_some_and(|e| e.stopped.is_some()) {
                    paid_after_stop(book, id.entitlement, id.month);
                }
            }
            let n = book
                .refused_per_gateway_day
                .entry((post.gateway.clone(), event.effective))
                .or_default();
            *n = n.saturating_add(1);
            let recorded = recorded(event, post);
            book.refused_posts.insert(post_key(post), recorded);
        }
        EventBody::InstructionTimedOut { instruction, .. } => {
            set_status(book, event, instruction, InstructionStatus::TimedOut)
        }
        EventBody::InstructionCancelled { instruction, .. } => {
            set_status(book, event, instruction, InstructionStatus::Cancelled)
        }
    }
}

/// Notes that stopped entitlement `id` paid through `month` (`stopped_paying_through`).
fn paid_after_stop(book: &mut Book, id: EntitlementId, month: Month) {
    // One that stopped before its first month, and paid none ahead, paid nothing and is
    // no bound.
    if book.entitlements[&id].from() > month {
        return;
    }
    let latest = book.stopped_paying_through.entry(id).or_insert(month);
    *latest = (*latest).max(month);
}

fn entitlement_mut(book: &mut Book, id: EntitlementId) -> &mut Entitlement {
    book.entitlements
        .get_mut(&id)
        .expect("decided against this entitlement")
}

fn instruction_mut<'b>(book: &'b mut Book, id: &InstructionId) -> &'b mut Instruction {
    book.instructions
        .get_mut(id)
        .expect("decided against this instruction")
}

fn set_status(book: &mut Book, event: &Event, id: &InstructionId, status: InstructionStatus) {
    let i = instruction_mut(book, id);
    i.status = status;
    i.last_change_on = event.effective;
}

fn recorded(event: &Event, post: &GatewayPost) -> RecordedPost {
    RecordedPost {
        post: post.clone(),
        answer: event.post_answer().expect("a post event has an answer"),
    }
}

/// Rebuild a book from its events (apply only).
pub fn replay<'a>(events: impl IntoIterator<Item = &'a Event>) -> Book {
    let mut book = Book::default();
    for e in events {
        apply(&mut book, e);
    }
    book
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::payments::entitlements::Channel;
    use crate::domain::payments::ids::{CategoryId, MemberRef};

    /// A grant: programme (of 2), household (of 3), member (of 3), citizen (none or of 4).
    type Granted = (u8, u8, u8, Option<u8>);

    fn book_of(grants: &[Granted]) -> Book {
        let mut book = Book::default();
        for (n, (programme, household, member, citizen)) in grants.iter().enumerate() {
            let id = n as u64 + 1;
            let body = EventBody::EntitlementGranted {
                entitlement: id,
                programme: ProgrammeId::parse(&format!("P{programme}")).unwrap(),
                beneficiary: BeneficiaryRef {
                    household: HouseholdRef::parse(&format!("0100007-{household:06}")).unwrap(),
                    member: MemberRef::parse(&format!("m{}", member + 1)).unwrap(),
                },
                commune: CommuneId::parse("0100007").unwrap(),
                from: Month::parse("2026-01").unwrap(),
                terms: Terms {
                    category: CategoryId::parse("ELDERLY_POOR").unwrap(),
                    channel: Channel::BankAccount {
                        gateway: GatewayId::parse("vcb").unwrap(),
                    },
                    provincial_base: None,
                },
                citizen: citizen.map(|c| [c; 32]),
            };
            apply(
                &mut book,
                &Event {
                    id,
                    actor: Actor::Officer(OfficerId::parse("officer-1").unwrap()),
                    effective: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
                    body,
                },
            );
        }
        book
    }

    /// The rule `Book::same_person` keeps, read off every entitlement of the partition.
    fn same_person_scanned(book: &Book, a: &Entitlement) -> BTreeSet<EntitlementId> {
        book.entitlements
            .values()
            .filter(|b| b.programme == a.programme)
            .filter(|b| match (a.citizen, b.citizen) {
                (Some(x), Some(y)) => x == y,
                _ => a.beneficiary == b.beneficiary,
            })
            .map(|b| b.id)
            .collect()
    }

    proptest! {
        /// The index gives each entitlement's person what a scan of the partition gives,
        /// and a snapshot's rebuild of it is the fold's.
        #[test]
        fn the_person_index_is_the_scan(
            grants in proptest::collection::vec(
                (0..2u8, 0..3u8, 0..3u8, proptest::option::of(0..4u8)),
                0..40,
            )
        ) {
            let book = book_of(&grants);
            for e in book.entitlements.values() {
                prop_assert_eq!(book.same_allowance(e.id), same_person_scanned(&book, e));
            }
            let mut rebuilt = book.clone();
            rebuilt.persons = Persons::default();
            rebuilt.index_persons();
            prop_assert_eq!(rebuilt, book);
        }
    }
}
