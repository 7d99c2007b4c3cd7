//! Random command sequences against the book: the money invariants hold
//! after every decision, and replaying the events gives the same book.

#[path = "common_payments/mod.rs"]
mod common;
use common::*;

use std::collections::BTreeMap;

use ansinh::book::payments;
use ansinh::domain::payments::budget::BudgetKey;
use ansinh::domain::payments::entitlements::{Channel, StopReason};
use ansinh::domain::payments::ids::{GatewayTxnId, InstructionRef};
use ansinh::domain::payments::instructions::{InstructionStatus, Outcome, post_key};
use ansinh::domain::payments::reconcile::reconcile;
use ansinh::domain::payments::{
    Actor, Book, Command, CommandKind, Decision, Event, apply, decide, replay,
};
use ansinh::proto::{self, envelope::Payload};
use chrono::{Days, NaiveDate};
use proptest::prelude::*;
use prost::Message;
use rust_decimal::Decimal;

const PERIODS: [&str; 3] = ["2026-12", "2027-01", "2027-02"];
const COMMUNES: [&str; 2] = [COMMUNE, OTHER_COMMUNE];
const CATEGORIES: [&str; 3] = [ELDERLY_POOR, ORPHAN_UNDER_4, "SINGLE_PARENT_POOR_PER_CHILD"];
const OUTCOMES: [Outcome; 3] = [Outcome::Settled, Outcome::Failed, Outcome::Returned];

fn channel(i: usize) -> Channel {
    [bank(), wallet(), post_office()][i % 3].clone()
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Allocate(usize, usize, u32),
    Deallocate(usize, usize, u32),
    Grant {
        person: u32,
        commune: usize,
        category: usize,
        channel: usize,
        from: usize,
        provincial: Option<u32>,
    },
    Change {
        pick: usize,
        category: usize,
        channel: usize,
        from: usize,
    },
    Stop {
        pick: usize,
        days_back: u64,
        death: bool,
    },
    Run(usize, Option<usize>),
    Post {
        pick: usize,
        outcome: usize,
        other_gateway: bool,
        amount_off: bool,
        other_person: bool,
        txn: u8,
    },
    Repost(usize),
    TimeOut(usize),
    Reissue(usize, Option<usize>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u64..20).prop_map(Op::Advance),
        3 => (0..2usize, 0..3usize, 1u32..6).prop_map(|(c, p, a)| Op::Allocate(c, p, a)),
        1 => (0..2usize, 0..3usize, 1u32..2_000_000).prop_map(|(c, p, a)| Op::Deallocate(c, p, a)),
        2 => (0u32..6, 0..2usize, 0..3usize, 0..3usize, 0..3usize, prop::option::of(300_000u32..700_000)).prop_map(
            |(person, commune, category, channel, from, provincial)| Op::Grant {
                person,
                commune,
                category,
                channel,
                from,
                provincial
            }
        ),
        1 => (any::<usize>(), 0..3usize, 0..3usize, 0..3usize).prop_map(|(pick, category, channel, from)| Op::Change {
            pick,
            category,
            channel,
            from
        }),
        1 => (any::<usize>(), 0u64..60, any::<bool>()).prop_map(|(pick, days_back, death)| Op::Stop {
            pick,
            days_back,
            death
        }),
        3 => (0..3usize, prop::option::of(0..2usize)).prop_map(|(p, c)| Op::Run(p, c)),
        10 => (any::<usize>(), 0..3usize, prop::bool::weighted(0.1), prop::bool::weighted(0.1), prop::bool::weighted(0.1), 0u8..4)
            .prop_map(|(pick, outcome, other_gateway, amount_off, other_person, txn)| Op::Post {
                pick,
                outcome,
                other_gateway,
                amount_off,
                other_person,
                txn
            }),
        2 => any::<usize>().prop_map(Op::Repost),
        1 => any::<usize>().prop_map(Op::TimeOut),
        2 => (any::<usize>(), prop::option::of(0..3usize)).prop_map(|(p, c)| Op::Reissue(p, c)),
    ]
}

fn nth<K: Clone, V>(map: &BTreeMap<K, V>, pick: usize) -> Option<K> {
    (!map.is_empty()).then(|| map.keys().nth(pick % map.len()).expect("in range").clone())
}

/// Turn an op into a command against the current book (None: nothing to pick).
fn command(book: &Book, today: NaiveDate, op: &Op) -> Option<Command> {
    let date = today.to_string();
    let date = date.as_str();
    Some(match op {
        Op::Advance(_) => return None,
        Op::Allocate(c, p, a) => {
            allocate(date, COMMUNES[*c], PERIODS[*p], i64::from(*a) * 1_000_000)
        }
        Op::Deallocate(c, p, a) => cmd(
            date,
            CommandKind::Deallocate {
                budget: key(COMMUNES[*c], PERIODS[*p]),
                amount: Decimal::from(*a),
            },
        ),
        Op::Grant {
            person,
            commune,
            category,
            channel: ch,
            from,
            provincial,
        } => grant_in(
            date,
            *person,
            COMMUNES[*commune],
            PERIODS[*from],
            terms(
                CATEGORIES[*category],
                channel(*ch),
                provincial.map(i64::from),
            ),
        ),
        Op::Change {
            pick,
            category,
            channel: ch,
            from,
        } => cmd(
            date,
            CommandKind::Change {
                entitlement: nth(&book.entitlements, *pick)?,
                from: m(PERIODS[*from]),
                terms: terms(CATEGORIES[*category], channel(*ch), None),
            },
        ),
        Op::Stop {
            pick,
            days_back,
            death,
        } => cmd(
            date,
            CommandKind::Stop {
                entitlement: nth(&book.entitlements, *pick)?,
                on: today
                    .checked_sub_days(Days::new(*days_back))
                    .expect("in range"),
                reason: if *death {
                    StopReason::Death
                } else {
                    StopReason::Move
                },
            },
        ),
        Op::Run(p, c) => run(date, PERIODS[*p], c.map(|c| COMMUNES[c])),
        Op::Post {
            pick,
            outcome,
            other_gateway,
            amount_off,
            other_person,
            txn,
        } => {
            let id = nth(&book.instructions, *pick)?;
            let i = &book.instructions[&id];
            let gateway = if *other_gateway {
                gw(if i.issued.channel.gateway() == &gw(BANK) {
                    WALLET
                } else {
                    BANK
                })
            } else {
                i.issued.channel.gateway().clone()
            };
            let mut beneficiary = i.issued.beneficiary.clone();
            if *other_person {
                beneficiary.member = ansinh::domain::payments::ids::MemberRef::parse("m2").unwrap();
            }
            let amount = i.issued.amount
                + if *amount_off {
                    Decimal::ONE
                } else {
                    Decimal::ZERO
                };
            Command {
                actor: Actor::Gateway(gateway.clone()),
                effective: today,
                kind: CommandKind::Post(ansinh::domain::payments::instructions::GatewayPost {
                    gateway,
                    instruction: InstructionRef::parse(&id.to_string()).unwrap(),
                    outcome: OUTCOMES[*outcome],
                    // Few distinct ids, so reuse and duplicates happen.
                    gateway_txn: GatewayTxnId::parse(&format!("{}-{txn}", id.entitlement)).unwrap(),
                    amount,
                    beneficiary,
                }),
            }
        }
        Op::Repost(pick) => {
            let posts = if pick % 2 == 0 {
                &book.accepted_posts
            } else {
                &book.refused_posts
            };
            let k = nth(posts, *pick / 2)?;
            let post = posts[&k].post.clone();
            Command {
                actor: Actor::Gateway(post.gateway.clone()),
                effective: today,
                kind: CommandKind::Post(post),
            }
        }
        Op::TimeOut(pick) => cmd(
            date,
            CommandKind::TimeOut {
                instruction: nth(&book.instructions, *pick)?,
            },
        ),
        Op::Reissue(pick, ch) => cmd(
            date,
            CommandKind::Reissue {
                instruction: nth(&book.instructions, *pick)?,
                channel: ch.map(channel),
            },
        ),
    })
}

/// Invariants of one book, checked after every decision.
/// `e` recorded as a `PaymentRecorded` payload, encoded to protobuf bytes, decoded
/// and read back into the domain: the path every payment event takes through the log.
fn through_the_log(e: &Event) -> Event {
    let (payload, _) = payments::payload_of(e, None, &Default::default());
    let Payload::PaymentRecorded(recorded) = payload else {
        panic!("a payment event is recorded as PaymentRecorded")
    };
    let bytes = recorded.encode_to_vec();
    let decoded = proto::PaymentRecorded::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(decoded, recorded);
    let actor = match &e.actor {
        Actor::Officer(id) => proto::Actor {
            id: id.to_string(),
            role: "officer".into(),
            ..Default::default()
        },
        Actor::Gateway(id) => proto::Actor {
            id: id.to_string(),
            role: payments::GATEWAY_ROLE.into(),
            ..Default::default()
        },
    };
    payments::event_of(e.id, Some(&actor), &decoded).expect("a decided event decodes")
}

fn check_book(book: &Book, events: &[Event]) -> Result<(), TestCaseError> {
    check_money(events, book);
    // Each budget's holds are exactly its pending and settled instructions.
    let mut held: BTreeMap<BudgetKey, (Decimal, Decimal)> = BTreeMap::new();
    let mut live: BTreeMap<(u64, ansinh::domain::payments::month::Month), u32> = BTreeMap::new();
    for i in book.instructions.values() {
        let h = held.entry(i.issued.budget.clone()).or_default();
        match i.status {
            InstructionStatus::Instructed => h.0 += i.issued.amount,
            InstructionStatus::Settled => h.1 += i.issued.amount,
            _ => continue,
        }
        *live
            .entry((i.issued.id.entitlement, i.issued.id.month))
            .or_default() += 1;
    }
    for (k, b) in &book.budgets {
        let (reserved, posted) = held.get(k).cloned().unwrap_or_default();
        prop_assert_eq!((b.reserved, b.posted), (reserved, posted), "{:?}", k);
    }
    // Never two live payments for one entitlement and month.
    prop_assert!(live.values().all(|n| *n == 1), "{:?}", live);
    // Nor for one person and month across entitlements, a month paid ahead before a stop
    // included: it was paid, so no later entitlement of the person pays it again.
    let mut paid: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for i in book.instructions.values() {
        let id = i.issued.id;
        if matches!(
            i.status,
            InstructionStatus::Instructed | InstructionStatus::Settled
        ) {
            paid.entry((i.issued.beneficiary.clone(), id.month))
                .or_insert_with(Vec::new)
                .push(id);
        }
    }
    prop_assert!(paid.values().all(|ids| ids.len() == 1), "{:?}", paid);
    Ok(())
}

proptest! {
    // 2,000 cases (about two seconds): a month paid ahead, a stop and a new grant for
    // the same person in one sequence is rare, and 200 cases did not reach it.
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_the_money_right(ops in prop::collection::vec(op(), 1..100)) {
        let mut book = Book::default();
        let mut events: Vec<Event> = Vec::new();
        let mut today: NaiveDate = d("2026-11-15");
        for op in &ops {
            if let Op::Advance(days) = op {
                today = today.checked_add_days(Days::new(*days)).unwrap();
                continue;
            }
            let Some(c) = command(&book, today, op) else { continue };
            let decision = decide(&book, c.clone());
            prop_assert_eq!(&decision, &decide(&book, c.clone()), "decide is deterministic");
            match decision {
                Ok(Decision::Append(new)) => {
                    for e in &new {
                        prop_assert_eq!(e.id, book.last_event_id + 1);
                        prop_assert!(ansinh::domain::payments::ledger::balanced(e.postings()));
                        prop_assert_eq!(&through_the_log(e), e, "codec round trip");
                        apply(&mut book, e);
                        events.push(e.clone());
                    }
                    if let CommandKind::Post(p) = &c.kind {
                        // Every post is answered by one event, the command's last: a late
                        // settlement may first cancel its month's reissue still pending.
                        let (answer, before) = new.split_last().expect("a post records an event");
                        prop_assert!(before.len() <= 1, "{:?}", new);
                        prop_assert!(before.iter().all(|e| matches!(
                            e.body,
                            ansinh::domain::payments::EventBody::InstructionCancelled { .. }
                        )), "{:?}", new);
                        let k = post_key(p);
                        let recorded = match &answer.body {
                            ansinh::domain::payments::EventBody::GatewayPostAccepted { .. } => &book.accepted_posts[&k],
                            _ => &book.refused_posts[&k],
                        };
                        prop_assert_eq!(&recorded.post, p);
                        prop_assert_eq!(Some(recorded.answer.clone()), answer.post_answer());
                    }
                }
                Ok(Decision::Duplicate(first)) => {
                    let CommandKind::Post(p) = &c.kind else {
                        return Err(TestCaseError::fail("only posts are duplicates"));
                    };
                    let k = post_key(p);
                    let recorded = [book.accepted_posts.get(&k), book.refused_posts.get(&k)]
                        .into_iter()
                        .flatten()
                        .find(|r| r.answer == first)
                        .expect("a duplicate answers with a recorded answer");
                    prop_assert_eq!(&recorded.post, p);
                }
                Err(_) => {}
            }
            check_book(&book, &events)?;
        }
        prop_assert_eq!(replay(&events), book.clone(), "replay == incremental");

        // The reconciliation projection agrees with the book.
        let r = reconcile(&events, today, 0);
        let instructed: u64 = r.days.values().map(|g| g.instructed.count).sum();
        let pending: u64 = r.days.values().map(|g| g.pending_overdue.count).sum();
        prop_assert_eq!(instructed, book.instructions.len() as u64);
        let pending_in_book = book
            .instructions
            .values()
            .filter(|i| i.status == InstructionStatus::Instructed)
            .count() as u64;
        prop_assert_eq!(pending, pending_in_book);
    }
}
