//! The book of one partition: registry, eligibility standings, loans and the trial
//! balance, folded from the partition's chain. The partition writer decides every
//! command against it, in chain order, so two commands can never both pass a rule
//! that only one of them may pass (two loans of one programme, one citizen in two
//! households).
//!
//! **Boundary:** pure. No clock, no I/O: `decide` reads the book and a command,
//! `apply` folds an event (as stored: a protobuf payload) into the book.
//! **Invariant:** `apply` never fails and never refuses; an event it cannot read
//! (only possible if something other than `decide` wrote it) changes nothing, the
//! same way in the writer and in every projection.

pub mod codec;
pub mod payments;
pub mod payments_codec;
pub mod snapshot;

use std::collections::BTreeMap;

use chrono::NaiveDate;

use crate::domain::Rejection;
use crate::domain::eligibility::ClassificationInputs;
use crate::domain::ids::HouseholdId;
use crate::domain::ledger::TrialBalance;
use crate::domain::loans::{self, CommandKind, LoanBook, LoanId};
use crate::domain::payments::ids::{BeneficiaryRef, CitizenIndex, HouseholdRef, ProgrammeId};
use crate::domain::payments::month::Month;
use crate::domain::registry::{self, Change, Registry};
use crate::proto::{self, envelope::Payload};
use codec::MoveLink;

/// A command for one partition's book. The edge (CLI, HTTP, NATS) has already
/// authenticated the actor, checked its role and sealed personal data.
#[derive(Clone, Debug)]
pub enum Command {
    /// Register, change members, record a death, erase personal data.
    Registry(Change),
    /// First half of a move: the household leaves for `to`.
    MoveOut {
        household: HouseholdId,
        to: HouseholdId,
        on: NaiveDate,
    },
    /// Second half of a move, built from the move-out event (see
    /// `service::move_household`). Boxed: it is much larger than the other commands.
    MoveIn(Box<Arrival>),
    /// The yearly review's decision for a household; with `corrects` (the partition
    /// sequence of the household's latest decision, recorded by mistake), its correction.
    Classify {
        household: HouseholdId,
        inputs: ClassificationInputs,
        decided_on: NaiveDate,
        corrects: Option<u64>,
    },
    /// A payments command (budgets, entitlements, runs, timeouts, reissues, and a
    /// gateway's signed result in `signed`).
    Payment {
        kind: crate::domain::payments::CommandKind,
        effective: NaiveDate,
        signed: Option<payments::SignedPost>,
        /// A gateway's post dated this far (ms) from the ledger's clock, past the replay
        /// window: refused, unless its key is already in the log. Decided here, after
        /// the writer has answered repeated keys, so a process that has not seen
        /// another's commit of the post learns it from the log (a refusal makes the
        /// writer check that its book is current) instead of refusing a copy.
        outside_replay_window: Option<i64>,
        /// A gateway's post whose (gateway, transaction id, outcome) the projections hold
        /// as accepted for this instruction of another partition: refused, unless its key
        /// is already in the log (decided here for the same reason as the window).
        used_elsewhere: Option<String>,
    },
    /// A loan command. To reverse the event at partition sequence `s` of loan `l`, use
    /// `CommandKind::Reverse { loan: l, event: codec::main_id(s) }`.
    Loan {
        kind: CommandKind,
        effective: NaiveDate,
        reason: String,
        /// The caller's unit (commune or province code); the loan's household must lie
        /// inside it. Only the book knows a loan's household for certain.
        unit: String,
    },
}

/// A household arriving from another commune: the registry change plus the link to
/// the move-out event and the standing it carried.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub change: Change,
    pub from_partition: String,
    pub from_sequence: u64,
    pub from_hash: [u8; 32],
    pub standing: Option<proto::EligibilityDecided>,
    /// Copied from the move-out (`HouseholdMovedOut.paid_before_move`).
    pub paid_before_move: Vec<proto::PaidBeforeMove>,
}

/// Allowances a household's members were paid where it lived before a move: the
/// household it was paid in and the last month paid there. The payments book keys "one
/// allowance per person" by the citizen its grant recorded, or by household and
/// reference, and a move makes a new household id, so without this a grant from the
/// month of arrival would pay that month twice. Kept, like the payments book's persons,
/// by the citizen when the grant recorded one: a reference is a position, which shifts
/// when a member before it dies or leaves.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PaidBeforeMove {
    /// Per (programme, household it arrived as, citizen): the household paid in, the
    /// month, and the reference the allowance was granted under (carried on by a later
    /// move; it decides nothing).
    by_citizen: BTreeMap<
        (ProgrammeId, HouseholdRef, CitizenIndex),
        (HouseholdRef, Month, crate::domain::payments::ids::MemberRef),
    >,
    /// Per (programme, beneficiary under the household it arrived as), for an allowance
    /// whose grant recorded no citizen (a member without a citizen id, a grant recorded
    /// before grants kept it), and for every one of a move recorded before moves carried
    /// the citizen.
    by_reference: BTreeMap<(ProgrammeId, BeneficiaryRef), (HouseholdRef, Month)>,
}

impl PaidBeforeMove {
    /// The latest month a grant to `beneficiary` naming `citizen` finds paid before the
    /// household's move, and where; read as `payments::Book::same_person` reads
    /// entitlements. A citizen is found by their index under whichever reference they
    /// are granted now, and another citizen now at their old reference is not them. An
    /// allowance without a citizen could be anyone at its reference, so it counts for
    /// every grant under it, and a grant without a citizen for every allowance granted
    /// under its reference.
    fn paid_through(
        &self,
        programme: &ProgrammeId,
        beneficiary: &BeneficiaryRef,
        citizen: Option<&CitizenIndex>,
    ) -> Option<(&HouseholdRef, Month)> {
        let by_reference = self
            .by_reference
            .get(&(programme.clone(), beneficiary.clone()))
            .map(|(before, month)| (before, *month));
        let key = |c: CitizenIndex| (programme.clone(), beneficiary.household.clone(), c);
        let named = citizen.and_then(|c| self.by_citizen.get(&key(*c)));
        let under_reference = citizen
            .is_none()
            .then(|| {
                self.by_citizen
                    .range(key([0; 32])..=key([u8::MAX; 32]))
                    .map(|(_, paid)| paid)
                    .filter(|(_, _, member)| *member == beneficiary.member)
            })
            .into_iter()
            .flatten();
        let by_citizen = named.into_iter().chain(under_reference);
        by_citizen
            .map(|(before, month, _)| (before, *month))
            .chain(by_reference)
            .max_by_key(|(_, month)| *month)
    }
}

/// A household's latest eligibility decision as recorded, kept as its protobuf bytes:
/// the book only carries it along on a move, and a province holds one per household.
/// Decoded, its dozen strings cost a dozen allocations each, in the writer's memory and
/// in every snapshot load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedStanding(Vec<u8>);

impl RecordedStanding {
    pub fn of(decided: &proto::EligibilityDecided) -> Self {
        use prost::Message as _;
        Self(decided.encode_to_vec())
    }

    pub fn decoded(&self) -> proto::EligibilityDecided {
        use prost::Message as _;
        // The bytes are our own encoding of a decoded message: they always decode.
        proto::EligibilityDecided::decode(&self.0[..]).expect("a standing the book encoded")
    }
}

impl serde::Serialize for RecordedStanding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RecordedStanding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RecordedStanding;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("protobuf bytes of an EligibilityDecided")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                use prost::Message as _;
                // Checked here, so `decoded` never meets bytes it cannot read.
                proto::EligibilityDecided::decode(v).map_err(E::custom)?;
                Ok(RecordedStanding(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// What `decide` proposes to append.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    pub payload: Payload,
    /// Typed ids the event concerns ("household:…", "loan:…", "commune:…").
    pub subjects: Vec<String>,
}

/// Loan reference as shown to people and used in subjects: "<partition>-L<number>".
pub fn loan_ref(partition: &str, loan: LoanId) -> String {
    format!("{partition}-L{loan}")
}

/// Parses "<partition>-L<number>" in its one spelling (`input::loan_ref`).
pub fn parse_loan_ref(s: &str) -> Option<(String, LoanId)> {
    let r = crate::input::loan_ref(s).ok()?;
    Some((r.partition.to_string(), r.number))
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionBook {
    pub partition: String,
    pub registry: Registry,
    pub loans: LoanBook,
    pub trial: TrialBalance,
    /// Latest eligibility decision per household, as recorded (a move carries it).
    pub standings: BTreeMap<HouseholdId, RecordedStanding>,
    /// Events folded in so far (the partition sequence of the last one).
    pub sequence: u64,
    /// Events `apply` could not read (should stay 0; `audit verify` reports them).
    pub unreadable: u64,
    /// Cashless social-assistance payments: budgets, entitlements, instructions.
    pub payments: crate::domain::payments::Book,
    pub payments_trial: crate::domain::payments::ledger::TrialBalance,
    pub paid_before_move: PaidBeforeMove,
}

impl PartitionBook {
    pub fn new(partition: &str) -> Self {
        Self {
            partition: partition.to_owned(),
            ..Self::default()
        }
    }

    /// What the household's members are paid here through its move-out on `on`: a
    /// running entitlement through that month (a run pays the month a household leaves,
    /// not later), a stopped one through its last payable month, either of them through a
    /// later month it had already paid ahead (an instruction still instructed or settled,
    /// or one its gateway settled late), and what they were paid before an earlier move,
    /// carried on. Scans the partition's entitlements: a move is rare beside the runs and
    /// posts.
    fn paid_through_move(
        &self,
        household: &HouseholdId,
        on: NaiveDate,
    ) -> Vec<proto::PaidBeforeMove> {
        use crate::domain::payments::ids::MemberRef;
        use crate::domain::payments::instructions::latest_paid_month;
        /// Whom a month was paid to: the citizen the grant recorded, or, without one,
        /// whoever is at the reference (`payments::Book::same_person`).
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        enum Person {
            Citizen(CitizenIndex),
            At(MemberRef),
        }
        let left = Month::of(on);
        let ours = |h: &HouseholdRef| h.as_str() == household.as_str();
        // Per person, the latest month and the reference it was granted under: a
        // citizen granted again under a new reference is carried once, through the
        // later of the two.
        let mut through: BTreeMap<(ProgrammeId, Person), (MemberRef, Month)> = BTreeMap::new();
        let mut take = |programme: &ProgrammeId,
                        citizen: Option<&CitizenIndex>,
                        member: &MemberRef,
                        last: Month| {
            let person =
                citizen.map_or_else(|| Person::At(member.clone()), |c| Person::Citizen(*c));
            let paid = through
                .entry((programme.clone(), person))
                .or_insert_with(|| (member.clone(), last));
            if last > paid.1 {
                *paid = (member.clone(), last);
            }
        };
        let payments = &self.payments;
        for e in payments
            .entitlements
            .values()
            .filter(|e| ours(&e.beneficiary.household))
        {
            // Runs pay no month after the one it leaves (nor after a stop's month)...
            let covered = e
                .stopped
                .as_ref()
                .map_or(left, |s| s.last_payable().min(left));
            // ...and one that starts after that pays nothing by runs here...
            let covered = (e.from() <= covered).then_some(covered);
            // ...but a month paid ahead before the move was paid all the same.
            if let Some(last) = covered.max(latest_paid_month(payments, e.id)) {
                take(
                    &e.programme,
                    e.citizen.as_ref(),
                    &e.beneficiary.member,
                    last,
                );
            }
        }
        for ((programme, arrived, citizen), (_, last, member)) in &self.paid_before_move.by_citizen
        {
            if ours(arrived) {
                take(programme, Some(citizen), member, *last);
            }
        }
        for ((programme, b), (_, last)) in &self.paid_before_move.by_reference {
            if ours(&b.household) {
                take(programme, None, &b.member, *last);
            }
        }
        through
            .into_iter()
            .map(
                |((programme, person), (member, month))| proto::PaidBeforeMove {
                    programme: programme.to_string(),
                    member: member.to_string(),
                    through_month: month.to_string(),
                    citizen_index: match person {
                        Person::Citizen(c) => bytes::Bytes::copy_from_slice(&c),
                        Person::At(_) => bytes::Bytes::new(),
                    },
                },
            )
            .collect()
    }

    /// The household's instructions for months after the one it leaves on `on` that no
    /// gateway has answered yet. Nothing cancels them once it has left (its entitlement is
    /// stopped by an officer, later), so a gateway could still settle them after a grant
    /// where it arrives paid the same months: the move waits for them.
    fn pending_after_move(&self, household: &HouseholdId, on: NaiveDate) -> Vec<String> {
        use crate::domain::payments::instructions::after_month;
        use crate::domain::payments::month::Month;
        let left = Month::of(on);
        self.payments
            .entitlements
            .values()
            .filter(|e| e.beneficiary.household.as_str() == household.as_str())
            .flat_map(|e| after_month(&self.payments, e.id, left).0)
            .map(|id| id.to_string())
            .collect()
    }

    /// Records what a household that moved in was paid where it lived before. Never
    /// fails: an entry it cannot read (only a log not written by the ledger holds one)
    /// is passed over, the same way by every replica.
    fn record_paid_before_move(&mut self, p: &proto::HouseholdMovedIn) {
        use crate::domain::payments::ids::MemberRef;
        let (Ok(household), Ok(before)) = (
            HouseholdRef::parse(&p.household_id),
            HouseholdRef::parse(&p.from_household_id),
        ) else {
            return;
        };
        for paid in &p.paid_before_move {
            let (Ok(programme), Ok(member), Ok(month)) = (
                ProgrammeId::parse(&paid.programme),
                MemberRef::parse(&paid.member),
                Month::parse(&paid.through_month),
            ) else {
                continue;
            };
            // Empty: no citizen recorded, or a move recorded before moves carried it.
            if paid.citizen_index.is_empty() {
                let beneficiary = BeneficiaryRef {
                    household: household.clone(),
                    member,
                };
                self.paid_before_move
                    .by_reference
                    .insert((programme, beneficiary), (before.clone(), month));
                continue;
            }
            let Ok(citizen) = CitizenIndex::try_from(&paid.citizen_index[..]) else {
                continue;
            };
            self.paid_before_move.by_citizen.insert(
                (programme, household.clone(), citizen),
                (before.clone(), month, member),
            );
        }
    }

    fn own(&self, household: &HouseholdId) -> Result<(), Rejection> {
        if household.province().as_str() != self.partition {
            return Err(Rejection::WrongPartition {
                household: household.to_string(),
                partition: self.partition.clone(),
            });
        }
        Ok(())
    }

    fn subjects(&self, household: &HouseholdId, loan: Option<LoanId>) -> Vec<String> {
        let mut s = vec![
            format!("household:{household}"),
            format!("commune:{}", household.commune()),
        ];
        if let Some(loan) = loan {
            s.push(format!("loan:{}", loan_ref(&self.partition, loan)));
        }
        s
    }

    /// Decides a command by `actor` against the book; refusals change nothing. Most
    /// commands yield one event; a payment run yields one per instruction.
    pub fn decide(
        &self,
        command: &Command,
        actor: &proto::Actor,
    ) -> Result<Vec<Proposal>, Rejection> {
        if actor.id.trim().is_empty() {
            return Err(Rejection::MissingActor);
        }
        if let Command::Payment {
            kind,
            effective,
            signed,
            outside_replay_window,
            used_elsewhere,
        } = command
        {
            if let Some(skew_ms) = outside_replay_window {
                return Err(Rejection::PostOutsideReplayWindow { skew_ms: *skew_ms });
            }
            if let Some(instruction) = used_elsewhere {
                return Err(Rejection::TransactionIdUsedElsewhere {
                    instruction: instruction.clone(),
                });
            }
            // Assistance is granted to a household of the registry that lives here: a
            // grant to an id the registry never had (or that moved away) is refused
            // before the payments domain sees it.
            if let crate::domain::payments::CommandKind::Grant {
                beneficiary,
                programme,
                from,
                citizen,
                ..
            } = kind
            {
                let household = HouseholdId::parse(beneficiary.household.as_str())?;
                let registered = self.registry.active(&household)?;
                // The member is one the record lists ("m3" of a household of two is no
                // one, and a second key for nobody in particular). Its spelling is the
                // payments book's to check.
                let number = crate::domain::payments::ids::member_number(&beneficiary.member);
                if number.is_some_and(|n| n > registered.members) {
                    return Err(Rejection::Payment(
                        crate::domain::payments::Rejection::NoSuchMember {
                            household: beneficiary.household.clone(),
                            member: beneficiary.member.clone(),
                            members: registered.members,
                        },
                    ));
                }
                // The citizen named as the beneficiary is one of the household's: a death
                // recorded here then finds their entitlement. (Which position they hold
                // the registry cannot say: it keeps blind indexes, not their order.)
                if citizen.is_some_and(|c| !registered.citizens.contains(&c)) {
                    return Err(Rejection::NotAMember {
                        household: household.to_string(),
                    });
                }
                // Paid where the household lived before its move through that month: a
                // grant here from then or earlier would pay a month twice. The person is
                // the citizen the grant names, whatever their reference is now.
                if let Some((before, last_payable)) = self
                    .paid_before_move
                    .paid_through(programme, beneficiary, citizen.as_ref())
                    .filter(|(_, last)| from <= last)
                {
                    return Err(Rejection::Payment(
                        crate::domain::payments::Rejection::GrantOverlapsPaidBeforeMove {
                            household: before.clone(),
                            last_payable,
                        },
                    ));
                }
            }
            return payments::decide(self, kind, *effective, signed.as_ref(), actor);
        }
        self.decide_one(command, &actor.id)
    }

    fn decide_one(&self, command: &Command, actor: &str) -> Result<Vec<Proposal>, Rejection> {
        match command {
            Command::Payment { .. } => unreachable!("decided by payments::decide"),
            Command::Registry(change) => {
                if matches!(change, Change::MovedIn { .. } | Change::MovedOut { .. }) {
                    return Err(Rejection::UnsupportedCommand {
                        what: "a move goes through MoveOut and MoveIn".into(),
                    });
                }
                let household = change.household();
                self.own(household)?;
                let event = registry::decide(&self.registry, change.clone())?;
                Ok(vec![Proposal {
                    payload: codec::registry_payload(&event, MoveLink::None),
                    subjects: self.subjects(household, None),
                }])
            }
            Command::MoveOut { household, to, on } => {
                self.own(household)?;
                let event = registry::decide(
                    &self.registry,
                    Change::MovedOut {
                        household: household.clone(),
                        to: to.clone(),
                        on: *on,
                    },
                )?;
                if let Some(loan) = self
                    .loans
                    .loans
                    .values()
                    .find(|l| &l.household == household && l.position.status.is_open())
                {
                    return Err(Rejection::OpenLoans {
                        household: household.to_string(),
                        loan: loan.id,
                    });
                }
                let instructions = self.pending_after_move(household, *on);
                if !instructions.is_empty() {
                    return Err(Rejection::PaymentsPendingAfterMove {
                        household: household.to_string(),
                        instructions,
                    });
                }
                let h = &self.registry.households[household];
                let link = MoveLink::Out {
                    members: h.members,
                    citizens: h.citizens.iter().copied().collect(),
                    standing: self.standings.get(household).map(RecordedStanding::decoded),
                    paid_before_move: self.paid_through_move(household, *on),
                };
                let mut subjects = self.subjects(household, None);
                subjects.push(format!("household:{to}"));
                Ok(vec![Proposal {
                    payload: codec::registry_payload(&event, link),
                    subjects,
                }])
            }
            Command::MoveIn(arrival) => {
                let Arrival {
                    change,
                    from_partition,
                    from_sequence,
                    from_hash,
                    standing,
                    paid_before_move,
                } = arrival.as_ref();
                let Change::MovedIn {
                    household, from, ..
                } = change
                else {
                    return Err(Rejection::UnsupportedCommand {
                        what: "MoveIn carries a MovedIn change".into(),
                    });
                };
                self.own(household)?;
                let event = registry::decide(&self.registry, change.clone())?;
                let link = MoveLink::In {
                    from_partition: from_partition.clone(),
                    from_sequence: *from_sequence,
                    from_hash: *from_hash,
                    standing: standing.clone(),
                    paid_before_move: paid_before_move.clone(),
                };
                let mut subjects = self.subjects(household, None);
                subjects.push(format!("household:{from}"));
                Ok(vec![Proposal {
                    payload: codec::registry_payload(&event, link),
                    subjects,
                }])
            }
            Command::Classify {
                household,
                inputs,
                decided_on,
                corrects,
            } => {
                self.own(household)?;
                let registered = self.registry.active(household)?.area;
                if inputs.area != registered {
                    return Err(Rejection::AreaDiffersFromRegistry {
                        registered,
                        given: inputs.area,
                    });
                }
                if let Some(latest) = self
                    .standings
                    .get(household)
                    .and_then(|s| i32::try_from(s.decoded().review_year).ok())
                    .filter(|latest| inputs.review_year < *latest)
                {
                    return Err(Rejection::ReviewYearBehindLatest {
                        latest,
                        review_year: inputs.review_year,
                    });
                }
                // The entrances bound a sequence (`input::SEQUENCE_MAX`); one past any
                // chain's names no decision, for any caller.
                let corrects = match *corrects {
                    None => None,
                    Some(s) => Some(codec::checked_main_id(s).ok_or_else(|| {
                        Rejection::CorrectsNotLatest {
                            corrects: s,
                            latest: self.loans.households.get(household).and_then(|h| {
                                h.before.map(|_| codec::sequence_of(h.decision_event))
                            }),
                        }
                    })?),
                };
                let events = loans::decide(
                    &self.loans,
                    loans::Command {
                        actor: actor.to_owned(),
                        reason: "eligibility review".into(),
                        effective: *decided_on,
                        kind: CommandKind::Classify {
                            household: household.clone(),
                            inputs: inputs.clone(),
                            corrects,
                        },
                    },
                )
                .map_err(|r| self.in_sequences(r))?;
                let [
                    loans::Event {
                        body:
                            loans::EventBody::HouseholdClassified {
                                decision,
                                escaped_until,
                                ..
                            },
                        ..
                    },
                ] = events.as_slice()
                else {
                    unreachable!("a classification decides one HouseholdClassified")
                };
                Ok(vec![Proposal {
                    payload: Payload::EligibilityDecided(codec::decided_to_proto(
                        decision,
                        *escaped_until,
                    )),
                    subjects: self.subjects(household, None),
                }])
            }
            Command::Loan {
                kind,
                effective,
                reason,
                unit,
            } => {
                let (household, loan) = match kind {
                    CommandKind::Classify { .. } => {
                        return Err(Rejection::UnsupportedCommand {
                            what: "a classification goes through Classify".into(),
                        });
                    }
                    CommandKind::Approve { household, .. } => {
                        self.own(household)?;
                        self.registry.active(household)?;
                        (household.clone(), self.loans.last_loan_id + 1)
                    }
                    // A reversal names its loan like every other loan command: the unit
                    // is checked against that loan's household, and the domain refuses
                    // an event that is not that loan's.
                    CommandKind::Disburse { loan, .. }
                    | CommandKind::Repay { loan, .. }
                    | CommandKind::AccrueInterest { loan }
                    | CommandKind::MarkOverdue { loan }
                    | CommandKind::Extend { loan, .. }
                    | CommandKind::Freeze { loan, .. }
                    | CommandKind::WriteOff { loan, .. }
                    | CommandKind::CancelApproval { loan }
                    | CommandKind::Unfreeze { loan, .. }
                    | CommandKind::Reverse { loan, .. } => {
                        let l = self
                            .loans
                            .loans
                            .get(loan)
                            .ok_or(Rejection::UnknownLoan { loan: *loan })?;
                        (l.household.clone(), *loan)
                    }
                };
                // The unit first: whether the household still lives here is its unit's to
                // know.
                let commune = household.commune();
                if !crate::access::within(unit, commune.as_str()) {
                    return Err(Rejection::OutsideUnit {
                        unit: unit.clone(),
                        commune: commune.to_string(),
                    });
                }
                // Money goes only to a household living here: one whose last member died
                // (dissolved) keeps its loan to collect, and gets no tranche.
                if let CommandKind::Disburse { .. } = kind {
                    self.registry.active(&household)?;
                }
                let events = loans::decide(
                    &self.loans,
                    loans::Command {
                        actor: actor.to_owned(),
                        reason: reason.clone(),
                        effective: *effective,
                        kind: kind.clone(),
                    },
                )
                .map_err(|r| self.in_sequences(r))?;
                // A reversal that reopens a paid-off loan needs its household still living
                // here: a closed loan does not hold a household back from moving (MoveOut
                // refuses open loans only), and a reopened loan of a household gone would
                // be owed in a partition that no longer serves it.
                if let [
                    loans::Event {
                        body: loans::EventBody::Reversed { loan, restored, .. },
                        ..
                    },
                ] = events.as_slice()
                {
                    if restored.status.is_open()
                        && !self.loans.loans[loan].position.status.is_open()
                    {
                        self.registry.active(&household)?;
                    }
                }
                // One event of the log for each of the decision's steps: what fell due
                // moved to overdue first, then the command's own event.
                let payloads = codec::loan_payloads(&events);
                if payloads.is_empty() {
                    return Err(Rejection::NothingToRecord);
                }
                let subjects = self.subjects(&household, Some(loan));
                Ok(payloads
                    .into_iter()
                    .map(|payload| Proposal {
                        payload,
                        subjects: subjects.clone(),
                    })
                    .collect())
            }
        }
    }

    /// A loan refusal as a person reads it. The loan domain counts its events with ids
    /// of its own (`codec::main_id`); people know an event by its partition sequence (on
    /// its receipt, in `audit verify`). And the loan book counts only loan events, so an
    /// event it does not know may still be one the partition holds (a registration after
    /// the last loan event): that one is there, and not reversible, rather than unknown.
    fn in_sequences(&self, refusal: Rejection) -> Rejection {
        let sequence = codec::sequence_of;
        match refusal {
            Rejection::UnknownEvent { event } | Rejection::NotReversible { event } => {
                let event = sequence(event);
                if (1..=self.sequence).contains(&event) {
                    Rejection::NotReversible { event }
                } else {
                    Rejection::UnknownEvent { event }
                }
            }
            Rejection::NotLatestEvent { event, latest } => Rejection::NotLatestEvent {
                event: sequence(event),
                latest: latest.map(sequence),
            },
            Rejection::CorrectsNotLatest { corrects, latest } => Rejection::CorrectsNotLatest {
                corrects: sequence(corrects),
                latest: latest.map(sequence),
            },
            Rejection::EventOfAnotherLoan { event, loan } => Rejection::EventOfAnotherLoan {
                event: sequence(event),
                loan,
            },
            other => other,
        }
    }

    /// Folds the event at partition `sequence` into the book.
    pub fn apply(
        &mut self,
        sequence: u64,
        actor: Option<&proto::Actor>,
        payload: Option<&Payload>,
    ) {
        self.sequence = sequence;
        let Some(payload) = payload else { return };
        if let Payload::PaymentRecorded(p) = payload {
            if let Err(e) = payments::apply(self, actor, p) {
                self.unreadable += 1;
                tracing::warn!(partition = %self.partition, sequence, error = %e, "payment event not folded into the book");
            }
            return;
        }
        let actor = actor.map_or("", |a| a.id.as_str());
        match self.try_apply(sequence, actor, payload) {
            Ok(()) => {}
            Err(e) => {
                self.unreadable += 1;
                tracing::warn!(partition = %self.partition, sequence, error = %e, "event not folded into the book");
            }
        }
    }

    fn try_apply(
        &mut self,
        sequence: u64,
        actor: &str,
        payload: &Payload,
    ) -> Result<(), codec::CodecError> {
        // Everything is read and checked before anything is applied: an event the book
        // cannot fold leaves it as it was, never half changed.
        let change = codec::registry_change(payload)?;
        let events = codec::loan_events(sequence, actor, payload)?;
        let mut approved_here = Vec::new();
        for event in &events {
            // A loan event for a loan this book never approved cannot be folded.
            let known = match &event.body {
                loans::EventBody::HouseholdClassified { .. } => true,
                loans::EventBody::LoanApproved { loan, .. } => {
                    approved_here.push(*loan);
                    true
                }
                _ => event.loan().is_some_and(|l| {
                    self.loans.loans.contains_key(&l) || approved_here.contains(&l)
                }),
            };
            if !known {
                return Err(codec::CodecError {
                    field: "loan_number",
                    problem: "loan was never approved in this partition".into(),
                });
            }
        }
        if let Some(change) = change {
            registry::apply(&mut self.registry, &change);
        }
        match payload {
            Payload::EligibilityDecided(p) => {
                if let Ok(h) = HouseholdId::parse(&p.household_id) {
                    self.standings.insert(h, RecordedStanding::of(p));
                }
            }
            Payload::HouseholdMovedIn(p) => {
                if let (Some(s), Ok(h)) = (&p.standing, HouseholdId::parse(&p.household_id)) {
                    self.standings.insert(h, RecordedStanding::of(s));
                }
                self.record_paid_before_move(p);
            }
            _ => {}
        }
        for event in events {
            self.trial.post(event.postings());
            loans::apply(&mut self.loans, &event);
        }
        Ok(())
    }
}
