#[path = "common_payments/mod.rs"]
mod common;
use common::*;

use ansinh::domain::payments::budget::{Budget, MoveKind};
use ansinh::domain::payments::entitlements::{ChannelKind, StopReason, amount_for};
use ansinh::domain::payments::ids::{CitizenIndex, HouseholdRef};
use ansinh::domain::payments::instructions::{
    InstructionStatus, Outcome, PostAnswer, PostRefusal, REFUSED_POSTS_PER_GATEWAY_DAY_MAX,
    Verdict, due_for_timeout,
};
use ansinh::domain::payments::ledger::{Account, Posting};
use ansinh::domain::payments::month::Month;
use ansinh::domain::payments::reconcile::{MismatchKind, Tally, household_view, reconcile};
use ansinh::domain::payments::{
    CommandKind, Decision, Event, EventBody, RegistryFacts, Rejection, decide, replay,
};
use chrono::NaiveDate;
use rust_decimal_macros::dec;

// ---------------------------------------------------------------- entitlements

#[test]
fn base_switches_on_2024_07_01() {
    let h = history(&[grant(
        "2024-05-20",
        1,
        "2024-06",
        terms(ORPHAN_UNDER_4, bank(), None),
    )]);
    let book = replay(&h);
    let e = &book.entitlements[&1];
    let june = amount_for(e, m("2024-06")).unwrap().unwrap();
    let july = amount_for(e, m("2024-07")).unwrap().unwrap();
    assert_eq!(
        (june.amount, june.base, june.coefficient),
        (dec!(900000), dec!(360000), dec!(2.5))
    );
    assert_eq!(june.national_base.id, "ND20-2021");
    assert_eq!((july.amount, july.base), (dec!(1250000), dec!(500000)));
    assert_eq!(july.national_base.id, "ND76-2024");
    assert_eq!(
        amount_for(e, m("2024-05")).unwrap(),
        None,
        "before the grant"
    );

    // The same through payment runs: each month at the base in force on its first day.
    let h = history_from(
        &h,
        &[
            allocate("2024-05-20", COMMUNE, "2024-06", 10_000_000),
            allocate("2024-05-20", COMMUNE, "2024-07", 10_000_000),
            run("2024-06-01", "2024-06", None),
            run("2024-07-01", "2024-07", None),
        ],
    );
    let book = replay(&h);
    assert_eq!(
        book.instructions[&iid("pay:1:2024-06:1")].issued.amount,
        dec!(900000)
    );
    assert_eq!(
        book.instructions[&iid("pay:1:2024-07:1")].issued.amount,
        dec!(1250000)
    );
}

#[test]
fn higher_provincial_base_is_paid_rounded_half_up() {
    // 555 555 × 1.5 = 833 332.5 → 833 333 (half-up), in both periods.
    let h = history(&[
        grant(
            "2024-05-20",
            1,
            "2024-06",
            terms(ELDERLY_POOR, bank(), Some(555_555)),
        ),
        grant(
            "2024-05-20",
            2,
            "2024-06",
            terms(ELDERLY_POOR, bank(), Some(400_000)),
        ),
    ]);
    let book = replay(&h);
    let amount = |id: u64, month: &str| {
        amount_for(&book.entitlements[&id], m(month))
            .unwrap()
            .unwrap()
    };
    let a = amount(1, "2024-06");
    assert!(a.provincial_base_applied);
    assert_eq!(
        (a.amount, a.base, a.national_amount),
        (dec!(833333), dec!(555555), dec!(360000))
    );
    assert_eq!(amount(1, "2024-07").amount, dec!(833333));
    // A provincial base the national one has overtaken no longer applies.
    assert_eq!(amount(2, "2024-06").amount, dec!(600000));
    let b = amount(2, "2024-07");
    assert!(!b.provincial_base_applied);
    assert_eq!(b.amount, dec!(750000));
}

#[test]
fn grant_is_checked() {
    given(&[])
        .when(grant(
            "2021-06-01",
            1,
            "2021-06",
            terms(ELDERLY_POOR, bank(), None),
        ))
        .then_rejects(Rejection::NoBaseLevelInForce {
            date: d("2021-06-01"),
        });
    given(&[])
        .when(grant(
            "2026-01-01",
            1,
            "2026-01",
            terms("NO_SUCH_CATEGORY", bank(), None),
        ))
        .then_rejects(Rejection::UnknownCategory {
            category: ansinh::domain::payments::ids::CategoryId::parse("NO_SUCH_CATEGORY").unwrap(),
        });
    given(&[])
        .when(grant(
            "2026-01-01",
            1,
            "2026-01",
            terms(ELDERLY_POOR, bank(), Some(0)),
        ))
        .then_rejects(Rejection::AmountNotPositive { amount: dec!(0) });
    let h = history(&[grant(
        "2026-01-01",
        1,
        "2026-01",
        terms(ELDERLY_POOR, bank(), None),
    )]);
    given(&h)
        .when(grant(
            "2026-02-01",
            1,
            "2026-03",
            terms(ORPHAN_UNDER_4, bank(), None),
        ))
        .then_rejects(Rejection::ActiveEntitlementExists { entitlement: 1 });
    // After a stop the person may be granted again (e.g. moved back).
    let h = history_from(&h, &[stop("2026-03-05", 1, "2026-03-01", StopReason::Move)]);
    given(&h)
        .when(grant(
            "2026-05-01",
            1,
            "2026-05",
            terms(ELDERLY_POOR, bank(), None),
        ))
        .then(|b, _| assert_eq!(running(b), 1));
}

/// The member's reference is recorded in clear in every payments event and sent to the
/// gateway: a citizen id (12 digits) or an old card's number (9) is refused; a
/// reference of the household record is granted.
#[test]
fn a_grant_naming_its_member_by_an_id_number_is_refused() {
    use ansinh::domain::payments::CommandKind;
    use ansinh::domain::payments::ids::MemberRef;
    let grant_to = |member: &str| {
        let mut c = grant(
            "2026-01-01",
            1,
            "2026-01",
            terms(ELDERLY_POOR, bank(), None),
        );
        if let CommandKind::Grant { beneficiary, .. } = &mut c.kind {
            beneficiary.member = MemberRef::parse(member).unwrap();
        }
        c
    };
    for id in ["001190000001", "012345678"] {
        given(&[])
            .when(grant_to(id))
            .then_rejects(Rejection::MemberIsAnIdNumber);
    }
    given(&[])
        .when(grant_to("m2"))
        .then(|b, _| assert_eq!(running(b), 1));
}

/// "One allowance per person" is keyed by the member's reference, so a reference has one
/// spelling: "M1" or "m01" beside "m1" would be the same person under a second key, with
/// a second allowance.
#[test]
fn a_member_is_named_in_one_spelling_only() {
    use ansinh::domain::payments::CommandKind;
    use ansinh::domain::payments::ids::MemberRef;
    let grant_to = |member: &str| {
        let mut c = grant(
            "2026-01-01",
            1,
            "2026-01",
            terms(ELDERLY_POOR, bank(), None),
        );
        if let CommandKind::Grant { beneficiary, .. } = &mut c.kind {
            beneficiary.member = MemberRef::parse(member).unwrap();
        }
        c
    };
    let h = history(&[grant_to("m1")]);
    for other in ["M1", "m01", "m0", "1", "head"] {
        given(&h)
            .when(grant_to(other))
            .then_rejects(Rejection::MemberRefNotCanonical {
                member: MemberRef::parse(other).unwrap(),
            });
    }
    given(&h)
        .when(grant_to("m1"))
        .then_rejects(Rejection::ActiveEntitlementExists { entitlement: 1 });
}

#[test]
fn a_new_grant_never_pays_a_month_a_stopped_entitlement_still_pays() {
    // Stopped on 2026-03-01 (a move): March is still paid by entitlement 1.
    let h = history(&[
        allocate("2025-12-20", COMMUNE, "2026-01", 10_000_000),
        allocate("2025-12-20", COMMUNE, "2026-02", 10_000_000),
        allocate("2025-12-20", COMMUNE, "2026-03", 10_000_000),
        grant(
            "2025-12-20",
            1,
            "2026-01",
            terms(ELDERLY_POOR, bank(), None),
        ),
        stop("2026-03-01", 1, "2026-03-01", StopReason::Move),
    ]);
    for from in ["2026-03", "2026-02"] {
        given(&h)
            .when(grant(
                "2026-03-02",
                1,
                from,
                terms(ELDERLY_POOR, bank(), None),
            ))
            .then_rejects(Rejection::GrantOverlapsStopped {
                entitlement: 1,
                last_payable: m("2026-03"),
            });
    }
    // From the month after, the new entitlement takes over: one instruction a month.
    let h = history_from(
        &h,
        &[
            allocate("2026-03-02", COMMUNE, "2026-04", 10_000_000),
            grant(
                "2026-03-02",
                1,
                "2026-04",
                terms(ELDERLY_POOR, bank(), None),
            ),
        ],
    );
    for (date, month, id) in [
        ("2026-03-02", "2026-03", "pay:1:2026-03:1"),
        ("2026-04-01", "2026-04", "pay:2:2026-04:1"),
    ] {
        given(&h).when(run(date, month, None)).then(|b, _| {
            let issued: Vec<String> = b.instructions.keys().map(|i| i.to_string()).collect();
            assert_eq!(issued, [id]);
        });
    }
    // An entitlement stopped before its first month paid nothing: no overlap.
    let h = history(&[
        grant(
            "2026-01-05",
            1,
            "2026-05",
            terms(ELDERLY_POOR, bank(), None),
        ),
        stop("2026-03-02", 1, "2026-03-01", StopReason::Other),
    ]);
    given(&h)
        .when(grant(
            "2026-03-02",
            1,
            "2026-03",
            terms(ELDERLY_POOR, bank(), None),
        ))
        .then(|b, _| assert_eq!(running(b), 1));
}

/// A month paid ahead and settled before a stop was paid: the stop lists it as overpaid,
/// and a new grant for the person starts after it, or the run would pay it again. A month
/// paid ahead whose instruction the stop cancels was not paid, and the new grant pays it.
#[test]
fn a_new_grant_never_pays_again_a_month_paid_ahead_before_a_stop() {
    // January paid ahead in December and settled; the person moved on 2026-12-10.
    let h = history_from(
        &one_instruction(),
        &[
            allocate("2026-12-01", COMMUNE, "2027-01", 10_000_000),
            allocate("2026-12-01", COMMUNE, "2027-02", 10_000_000),
            run("2026-12-01", "2027-01", None),
            Post::new(BANK, "pay:1:2027-01:1", Outcome::Settled, "T1", AMOUNT).on("2026-12-02"),
            stop("2026-12-11", 1, "2026-12-10", StopReason::Move),
        ],
    );
    for from in ["2027-01", "2026-12"] {
        given(&h)
            .when(grant(
                "2026-12-12",
                1,
                from,
                terms(ELDERLY_POOR, bank(), None),
            ))
            .then_rejects(Rejection::GrantOverlapsStopped {
                entitlement: 1,
                last_payable: m("2027-01"),
            });
    }
    // From February the new entitlement pays, and January is not paid again.
    let h = history_from(
        &h,
        &[grant(
            "2026-12-12",
            1,
            "2027-02",
            terms(ELDERLY_POOR, bank(), None),
        )],
    );
    given(&h)
        .when(run("2026-12-12", "2027-01", None))
        .then_nothing();
    given(&h)
        .when(run("2026-12-12", "2027-02", None))
        .then(|b, _| {
            assert!(b.instructions.contains_key(&iid("pay:2:2027-02:1")));
        });

    // January run ahead but still pending at the stop: cancelled, so not paid, and a new
    // grant from January pays it.
    let h = history_from(
        &one_instruction(),
        &[
            allocate("2026-12-01", COMMUNE, "2027-01", 10_000_000),
            run("2026-12-01", "2027-01", None),
            stop("2026-12-11", 1, "2026-12-10", StopReason::Move),
            grant(
                "2026-12-12",
                1,
                "2027-01",
                terms(ELDERLY_POOR, bank(), None),
            ),
        ],
    );
    given(&h)
        .when(run("2026-12-12", "2027-01", None))
        .then(|b, _| {
            assert_eq!(
                b.instructions[&iid("pay:1:2027-01:1")].status,
                InstructionStatus::Cancelled
            );
            assert_eq!(
                b.instructions[&iid("pay:2:2027-01:1")].status,
                InstructionStatus::Instructed
            );
        });
}

/// A month its gateway says it settled after the ledger had given up on it (cancelled by
/// the stop, or timed out before it) may have been paid: a new grant for the person starts
/// after it, or the run would pay it again.
#[test]
fn a_new_grant_never_pays_again_a_month_settled_late() {
    let from_november = |reason| {
        vec![
            allocate("2026-10-20", COMMUNE, "2026-12", 10_000_000),
            grant(
                "2026-10-20",
                1,
                "2026-11",
                terms(ELDERLY_POOR, bank(), None),
            ),
            run("2026-12-01", "2026-12", None),
            stop("2026-12-02", 1, "2026-11-20", reason),
        ]
    };
    let overlaps = Rejection::GrantOverlapsStopped {
        entitlement: 1,
        last_payable: m("2026-12"),
    };
    // December cancelled by the stop, then settled by the bank all the same.
    let cancelled = history(&from_november(StopReason::Move));
    let late = Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT);
    let settled_late = history_from(&cancelled, &[late.on("2026-12-03")]);
    given(&cancelled)
        .when(grant(
            "2026-12-04",
            1,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ))
        .then(|b, _| assert_eq!(running(b), 1));
    given(&settled_late)
        .when(grant(
            "2026-12-04",
            1,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ))
        .then_rejects(overlaps.clone());
    given(&settled_late)
        .when(grant(
            "2026-12-04",
            1,
            "2027-01",
            terms(ELDERLY_POOR, bank(), None),
        ))
        .then(|b, _| assert_eq!(running(b), 1));

    // December timed out and settled late, then the stop dated November.
    let h = history(&[
        allocate("2026-10-20", COMMUNE, "2026-12", 10_000_000),
        grant(
            "2026-10-20",
            1,
            "2026-11",
            terms(ELDERLY_POOR, bank(), None),
        ),
        run("2026-12-01", "2026-12", None),
        time_out("2026-12-11", FIRST),
        late.on("2026-12-12"),
        stop("2026-12-13", 1, "2026-11-20", StopReason::Death),
    ]);
    given(&h)
        .when(grant(
            "2026-12-14",
            1,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ))
        .then_rejects(overlaps);
}

#[test]
fn change_applies_from_its_month_and_never_to_instructed_months() {
    let h = one_instruction();
    let change = |from: &str| {
        cmd(
            "2026-12-05",
            CommandKind::Change {
                entitlement: 1,
                from: m(from),
                terms: terms(ORPHAN_UNDER_4, wallet(), None),
            },
        )
    };
    given(&h)
        .when(change("2026-12"))
        .then_rejects(Rejection::ChangeNotAfterPrevious {
            from: m("2026-12"),
            previous: m("2026-12"),
        });
    given(&h).when(change("2027-01")).then(|b, _| {
        let e = &b.entitlements[&1];
        assert_eq!(
            amount_for(e, m("2026-12")).unwrap().unwrap().amount,
            dec!(750000)
        );
        assert_eq!(
            amount_for(e, m("2027-01")).unwrap().unwrap().amount,
            dec!(1250000)
        );
        assert_eq!(e.terms_for(m("2027-01")).unwrap().channel, wallet());
    });
    // A run already made for January (ahead of time) pins January's terms.
    let h = history_from(
        &h,
        &[
            allocate("2026-12-02", COMMUNE, "2027-01", 10_000_000),
            run("2026-12-20", "2027-01", None),
        ],
    );
    given(&h)
        .when(change("2027-01"))
        .then_rejects(Rejection::ChangeBeforeInstructedMonth {
            from: m("2027-01"),
            instructed_through: m("2027-01"),
        });
}

#[test]
fn stop_date_cannot_be_in_the_future() {
    given(&one_instruction())
        .when(stop("2026-12-05", 1, "2026-12-06", StopReason::Death))
        .then_rejects(Rejection::StopDateInFuture {
            on: d("2026-12-06"),
            effective: d("2026-12-05"),
        });
}

#[test]
fn a_stop_may_not_cancel_an_instruction_changed_after_its_recording_date() {
    // January instructed by a run dated 2026-12-20; a stop recorded on 2026-12-10 would
    // date its cancellation before the instruction's issue.
    let h = history_from(
        &one_instruction(),
        &[
            allocate("2026-12-01", COMMUNE, "2027-01", 10_000_000),
            run("2026-12-20", "2027-01", None),
        ],
    );
    given(&h)
        .when(stop("2026-12-10", 1, "2026-11-28", StopReason::Death))
        .then_rejects(Rejection::BackDated {
            last: d("2026-12-20"),
            effective: d("2026-12-10"),
        });
    // Recorded on or after that day, the cancellation carries the recording date.
    given(&h)
        .when(stop("2026-12-20", 1, "2026-11-28", StopReason::Death))
        .then(|b, evs| {
            assert!(evs.iter().all(|e| e.effective == d("2026-12-20")));
            assert_eq!(
                b.instructions[&iid("pay:1:2027-01:1")].last_change_on,
                d("2026-12-20")
            );
        });
}

#[test]
fn stop_on_death_leaves_no_instruction_for_later_months() {
    let h = history(&[
        allocate("2026-09-20", COMMUNE, "2026-11", 10_000_000),
        allocate("2026-09-20", COMMUNE, "2026-12", 10_000_000),
        grant(
            "2026-09-20",
            1,
            "2026-10",
            terms(ELDERLY_POOR, bank(), None),
        ),
        stop("2026-11-20", 1, "2026-11-15", StopReason::Death),
    ]);
    // The month of death is still paid; the next is not.
    given(&h)
        .when(run("2026-11-25", "2026-11", None))
        .then(|b, evs| {
            assert_eq!(evs.len(), 2);
            assert!(b.instructions.contains_key(&iid("pay:1:2026-11:1")));
        });
    given(&h)
        .when(run("2026-12-01", "2026-12", None))
        .then_nothing();
    given(&h)
        .when(stop("2026-11-21", 1, "2026-11-15", StopReason::Death))
        .then_rejects(Rejection::EntitlementStopped {
            entitlement: 1,
            on: d("2026-11-15"),
        });
}

#[test]
fn stop_cancels_instructions_made_ahead_and_lists_overpayments() {
    // December and January instructed ahead; December settled; death on 2026-11-28.
    let h = history_from(
        &one_instruction(),
        &[
            allocate("2026-12-01", COMMUNE, "2027-01", 10_000_000),
            run("2026-12-01", "2027-01", None),
            Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-02"),
        ],
    );
    given(&h)
        .when(stop("2026-12-03", 1, "2026-11-28", StopReason::Death))
        .then_events(&[
            EventBody::EntitlementStopped {
                entitlement: 1,
                on: d("2026-11-28"),
                reason: StopReason::Death,
                overpaid: vec![iid(FIRST)],
            },
            EventBody::InstructionCancelled {
                instruction: iid("pay:1:2027-01:1"),
                budget: ansinh::domain::payments::budget::BudgetMove {
                    key: key(COMMUNE, "2027-01"),
                    kind: MoveKind::Void,
                    amount: dec!(750000),
                    after: Budget {
                        allocated: dec!(10000000),
                        reserved: dec!(0),
                        posted: dec!(0),
                    },
                    postings: vec![
                        Posting::debit(Account::BudgetAvailable, dec!(750000)),
                        Posting::credit(Account::BudgetReserved, dec!(750000)),
                    ],
                },
            },
        ])
        .then(|b, evs| {
            assert_eq!(
                b.instructions[&iid("pay:1:2027-01:1")].status,
                InstructionStatus::Cancelled
            );
            let all: Vec<_> = given_history(&h, evs);
            let r = reconcile(&all, d("2026-12-03"), 30);
            let day = &r.days[&(gw(BANK), d("2026-12-03"))];
            assert_eq!(
                day.cancelled,
                Tally {
                    count: 1,
                    amount: dec!(750000)
                }
            );
            assert!(matches!(
                day.mismatches[0].kind,
                MismatchKind::PaidAfterStop { stopped_on, .. } if stopped_on == d("2026-11-28")
            ));
        });
}

fn given_history(
    h: &[ansinh::domain::payments::Event],
    new: &[ansinh::domain::payments::Event],
) -> Vec<ansinh::domain::payments::Event> {
    h.iter().chain(new).cloned().collect()
}

// ---------------------------------------------------------------- budgets and runs

#[test]
fn run_routes_to_the_channel_and_holds_the_budget() {
    given(&history(&[
        allocate("2026-11-20", COMMUNE, "2026-12", 10_000_000),
        grant(
            "2026-11-20",
            1,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ),
        grant(
            "2026-11-20",
            2,
            "2026-12",
            terms(ORPHAN_UNDER_4, post_office(), None),
        ),
    ]))
    .when(run("2026-12-01", "2026-12", None))
    .then(|b, evs| {
        assert_eq!(evs.len(), 3);
        let first = &b.instructions[&iid("pay:1:2026-12:1")];
        let second = &b.instructions[&iid("pay:2:2026-12:1")];
        assert_eq!(first.issued.channel, bank());
        assert_eq!(second.issued.channel.gateway(), &gw(POST_OFFICE));
        assert_eq!(
            b.budget(&key(COMMUNE, "2026-12")),
            Budget {
                allocated: dec!(10000000),
                reserved: dec!(2000000),
                posted: dec!(0)
            }
        );
        assert!(matches!(
            &evs[2].body,
            EventBody::PaymentRunCompleted { issued: 2, amount, shortfalls, .. }
                if *amount == dec!(2000000) && shortfalls.is_empty()
        ));
    });
}

#[test]
fn running_twice_adds_nothing() {
    let h = history(&[
        allocate("2026-11-20", COMMUNE, "2026-12", 10_000_000),
        allocate("2026-11-20", OTHER_COMMUNE, "2026-12", 10_000_000),
        grant(
            "2026-11-20",
            1,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ),
        grant_in(
            "2026-11-20",
            2,
            OTHER_COMMUNE,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ),
        run("2026-12-01", "2026-12", Some(COMMUNE)),
    ]);
    // The commune run covered commune 1 only; the full run adds commune 2 only.
    let h2 = history_from(&h, &[run("2026-12-01", "2026-12", None)]);
    assert_eq!(h2.len() - h.len(), 2);
    let b = replay(&h2);
    assert_eq!(b.instructions.len(), 2);
    given(&h2)
        .when(run("2026-12-02", "2026-12", None))
        .then_nothing();
    given(&h2)
        .when(run("2026-12-02", "2026-12", Some(OTHER_COMMUNE)))
        .then_nothing();
}

#[test]
fn budget_is_never_exceeded_by_two_runs() {
    // 1 000 000 allocated; each person is owed 750 000.
    let h = history(&[
        allocate("2026-11-20", COMMUNE, "2026-12", 1_000_000),
        grant(
            "2026-11-20",
            1,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ),
        run("2026-12-01", "2026-12", None),
        grant(
            "2026-12-01",
            2,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ),
    ]);
    // The second run sees the first run's hold.
    given(&h)
        .when(run("2026-12-01", "2026-12", None))
        .then_rejects(Rejection::RunUnfunded {
            shortfalls: vec![ansinh::domain::payments::instructions::Shortfall {
                budget: key(COMMUNE, "2026-12"),
                instructions: 1,
                needed: dec!(750000),
                available: dec!(250000),
            }],
        });
    // Topped up, the same run goes through and nothing is paid twice.
    let h = history_from(&h, &[allocate("2026-12-02", COMMUNE, "2026-12", 500_000)]);
    given(&h)
        .when(run("2026-12-02", "2026-12", None))
        .then(|b, evs| {
            assert_eq!(evs.len(), 2);
            assert_eq!(b.budget(&key(COMMUNE, "2026-12")).available(), dec!(0));
        });
}

#[test]
fn short_commune_gets_nothing_while_funded_commune_is_paid() {
    let h = history(&[
        allocate("2026-11-20", COMMUNE, "2026-12", 1_000_000),
        allocate("2026-11-20", OTHER_COMMUNE, "2026-12", 1_000_000),
        grant(
            "2026-11-20",
            1,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ),
        grant_in(
            "2026-11-20",
            2,
            OTHER_COMMUNE,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ),
        grant_in(
            "2026-11-20",
            3,
            OTHER_COMMUNE,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ),
    ]);
    given(&h)
        .when(run("2026-12-01", "2026-12", None))
        .then(|b, evs| {
            assert_eq!(b.instructions.len(), 1, "only commune 1 is covered");
            let EventBody::PaymentRunCompleted { shortfalls, .. } = &evs[1].body else {
                panic!("{:?}", evs[1]);
            };
            assert_eq!(shortfalls[0].budget, key(OTHER_COMMUNE, "2026-12"));
            assert_eq!(shortfalls[0].needed, dec!(1500000));
        });
}

#[test]
fn allocations_are_checked() {
    given(&[])
        .when(allocate("2026-11-20", COMMUNE, "2026-12", 0))
        .then_rejects(Rejection::AmountNotPositive { amount: dec!(0) });
    let h = history_from(&one_instruction(), &[]);
    given(&h)
        .when(cmd(
            "2026-12-02",
            CommandKind::Deallocate {
                budget: key(COMMUNE, "2026-12"),
                amount: dec!(9250001),
            },
        ))
        .then_rejects(Rejection::DeallocationOverAvailable {
            budget: key(COMMUNE, "2026-12"),
            available: dec!(9250000),
            requested: dec!(9250001),
        });
}

// ---------------------------------------------------------------- gateway posts

#[test]
fn settlement_posts_the_hold() {
    given(&one_instruction())
        .when(Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-02"))
        .then(|b, evs| {
            assert_eq!(evs.len(), 1);
            assert_eq!(
                evs[0].postings(),
                [
                    Posting::debit(Account::PaidToBeneficiaries, dec!(750000)),
                    Posting::credit(Account::BudgetReserved, dec!(750000)),
                ]
            );
            assert_eq!(
                b.instructions[&iid(FIRST)].status,
                InstructionStatus::Settled
            );
            assert_eq!(b.budget(&key(COMMUNE, "2026-12")).posted, dec!(750000));
        });
}

#[test]
fn same_post_again_gets_the_first_answer_and_appends_nothing() {
    let settle = Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT);
    let h = history_from(&one_instruction(), &[settle.on("2026-12-02")]);
    let first = PostAnswer {
        event: h.last().unwrap().id,
        verdict: Verdict::Accepted {
            status: InstructionStatus::Settled,
        },
    };
    given(&h)
        .when(settle.on("2026-12-02"))
        .then_duplicate(&first);
    // A year later: still the first answer.
    given(&h)
        .when(settle.on("2027-12-02"))
        .then_duplicate(&first);
    // The duplicate is checked before the instruction's state: after a
    // return, the old settlement post is still a duplicate, not a refusal.
    let h = history_from(
        &h,
        &[Post::new(BANK, FIRST, Outcome::Returned, "R1", AMOUNT).on("2026-12-10")],
    );
    given(&h)
        .when(settle.on("2027-12-02"))
        .then_duplicate(&first);
}

#[test]
fn refused_posts_are_answered_once_too() {
    let wrong = Post::new(BANK, FIRST, Outcome::Settled, "T1", 700_000);
    let h = history_from(&one_instruction(), &[wrong.on("2026-12-02")]);
    given(&h)
        .when(wrong.on("2026-12-03"))
        .then_duplicate(&PostAnswer {
            event: h.last().unwrap().id,
            verdict: Verdict::Refused {
                refusal: PostRefusal::AmountMismatch {
                    expected: dec!(750000),
                    posted: dec!(700000),
                },
            },
        });
    // The gateway corrects the amount under the same transaction id: accepted.
    given(&h)
        .when(Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-03"))
        .then(|b, _| {
            assert_eq!(
                b.instructions[&iid(FIRST)].status,
                InstructionStatus::Settled
            )
        });
}

#[test]
fn mismatching_amount_or_beneficiary_refused() {
    let h = one_instruction();
    given(&h)
        .when(Post::new(BANK, FIRST, Outcome::Settled, "T1", 750_001).on("2026-12-02"))
        .then_events(&[EventBody::GatewayPostRefused {
            post: Post::new(BANK, FIRST, Outcome::Settled, "T1", 750_001).body(),
            refusal: PostRefusal::AmountMismatch {
                expected: dec!(750000),
                posted: dec!(750001),
            },
        }])
        .then(|b, _| {
            assert_eq!(
                b.instructions[&iid(FIRST)].status,
                InstructionStatus::Instructed
            );
            assert_eq!(b.budget(&key(COMMUNE, "2026-12")).reserved, dec!(750000));
        });
    let then = given(&h).when(
        Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT)
            .of(2)
            .on("2026-12-02"),
    );
    assert_eq!(
        then.answer().verdict,
        Verdict::Refused {
            refusal: PostRefusal::BeneficiaryMismatch
        }
    );
    // Not money at all: refused without being recorded.
    given(&h)
        .when(Post::new(BANK, FIRST, Outcome::Settled, "T1", -1).on("2026-12-02"))
        .then_rejects(Rejection::AmountNotPositive { amount: dec!(-1) });
}

#[test]
fn a_gateway_touches_only_its_own_instructions() {
    let h = one_instruction();
    // The wallet provider posts for the bank's instruction.
    given(&h)
        .when(Post::new(WALLET, FIRST, Outcome::Failed, "W1", AMOUNT).on("2026-12-02"))
        .then(|b, evs| {
            assert_eq!(
                evs[0].post_answer().unwrap().verdict,
                Verdict::Refused {
                    refusal: PostRefusal::NotYourInstruction
                }
            );
            assert_eq!(
                b.instructions[&iid(FIRST)].status,
                InstructionStatus::Instructed
            );
        });
    // Posting in another gateway's name with its own credentials.
    let mut spoof = Post::new(BANK, FIRST, Outcome::Failed, "W1", AMOUNT).on("2026-12-02");
    spoof.actor = ansinh::domain::payments::Actor::Gateway(gw(WALLET));
    given(&h)
        .when(spoof)
        .then_rejects(Rejection::GatewayIdentityMismatch {
            authenticated: gw(WALLET),
            claimed: gw(BANK),
        });
    // Unknown instruction: recorded, so reconciliation shows it.
    given(&h)
        .when(Post::new(BANK, "pay:9:2026-12:1", Outcome::Settled, "T9", AMOUNT).on("2026-12-02"))
        .then(|_, evs| {
            assert!(matches!(
                &evs[0].body,
                EventBody::GatewayPostRefused {
                    refusal: PostRefusal::UnknownInstruction,
                    ..
                }
            ))
        });
    // Gateways post results only; officers never post results.
    let mut gateway_run = run("2026-12-02", "2026-12", None);
    gateway_run.actor = ansinh::domain::payments::Actor::Gateway(gw(BANK));
    given(&h)
        .when(gateway_run)
        .then_rejects(Rejection::OfficerOnly);
    let mut officer_post = Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-02");
    officer_post.actor = cmd(
        "2026-12-02",
        CommandKind::Run {
            period: m("2026-12"),
            commune: None,
        },
    )
    .actor;
    given(&h)
        .when(officer_post)
        .then_rejects(Rejection::GatewayOnly);
}

#[test]
fn returned_after_settled_is_accepted_and_reverses() {
    let h = history_from(
        &one_instruction(),
        &[Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-02")],
    );
    given(&h)
        .when(Post::new(BANK, FIRST, Outcome::Returned, "R1", AMOUNT).on("2026-12-09"))
        .then(|b, evs| {
            assert_eq!(
                evs[0].postings(),
                [
                    Posting::debit(Account::BudgetAvailable, dec!(750000)),
                    Posting::credit(Account::PaidToBeneficiaries, dec!(750000)),
                ]
            );
            let i = &b.instructions[&iid(FIRST)];
            assert_eq!(i.status, InstructionStatus::Returned);
            assert_eq!(i.settled_by.as_ref().unwrap().as_str(), "T1");
            assert_eq!(
                b.budget(&key(COMMUNE, "2026-12")),
                Budget {
                    allocated: dec!(10000000),
                    reserved: dec!(0),
                    posted: dec!(0)
                }
            );
        });
}

/// A `settled` after a return is refused, and is a late settlement like one after a
/// failure: the gateway says the person was paid, so the month is not reissued until it is
/// reconciled, and a reissue of it still pending is withdrawn.
#[test]
fn settled_after_returned_is_refused_and_holds_the_month() {
    use ansinh::domain::payments::ids::GatewayTxnId;
    let h = history_from(
        &one_instruction(),
        &[Post::new(BANK, FIRST, Outcome::Returned, "R1", AMOUNT).on("2026-12-02")],
    );
    let settled = Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT);
    given(&h).when(settled.on("2026-12-03")).then(|b, evs| {
        assert_eq!(
            evs[0].post_answer().unwrap().verdict,
            Verdict::Refused {
                refusal: PostRefusal::SettledAfterReturned
            }
        );
        assert_eq!(
            b.instructions[&iid(FIRST)].status,
            InstructionStatus::Returned
        );
        assert_eq!(b.budget(&key(COMMUNE, "2026-12")).posted, dec!(0));
        assert_eq!(b.late_settlements.keys().collect::<Vec<_>>(), [&iid(FIRST)]);
    });
    given(&history_from(&h, &[settled.on("2026-12-03")]))
        .when(reissue("2026-12-04", FIRST, Some(post_office())))
        .then_rejects(Rejection::LateSettlementToReconcile {
            instruction: iid(FIRST),
            gateway: gw(BANK),
            gateway_txn: GatewayTxnId::parse("T1").unwrap(),
        });

    // Returned after its settlement, then settled again by another transfer: the same.
    let h2 = history_from(
        &one_instruction(),
        &[
            Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-02"),
            Post::new(BANK, FIRST, Outcome::Returned, "R1", AMOUNT).on("2026-12-03"),
        ],
    );
    given(&h2)
        .when(Post::new(BANK, FIRST, Outcome::Settled, "T2", AMOUNT).on("2026-12-04"))
        .then(|b, _| {
            assert_eq!(
                b.late_settlements.get(&iid(FIRST)),
                Some(&GatewayTxnId::parse("T2").unwrap())
            );
        });

    // Reissued as cash after the return, and then the bank says it paid.
    let h3 = history_from(&h, &[reissue("2026-12-03", FIRST, Some(post_office()))]);
    given(&h3).when(settled.on("2026-12-04")).then(|b, evs| {
        assert_eq!(evs.len(), 2);
        assert_eq!(
            b.instructions[&iid("pay:1:2026-12:2")].status,
            InstructionStatus::Cancelled
        );
        assert_eq!(b.budget(&key(COMMUNE, "2026-12")).reserved, dec!(0));
    });
}

#[test]
fn other_out_of_order_posts_are_refused() {
    let settled = history_from(
        &one_instruction(),
        &[Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-02")],
    );
    let verdict = |h: &[ansinh::domain::payments::Event], p: Post| {
        given(h).when(p.on("2026-12-04")).answer().verdict
    };
    assert_eq!(
        verdict(
            &settled,
            Post::new(BANK, FIRST, Outcome::Settled, "T2", AMOUNT)
        ),
        Verdict::Refused {
            refusal: PostRefusal::AlreadySettled {
                by: ansinh::domain::payments::ids::GatewayTxnId::parse("T1").unwrap()
            }
        }
    );
    assert_eq!(
        verdict(
            &settled,
            Post::new(BANK, FIRST, Outcome::Failed, "F1", AMOUNT)
        ),
        Verdict::Refused {
            refusal: PostRefusal::NotPending {
                status: InstructionStatus::Settled
            }
        }
    );
    // Same transaction id and outcome, other content: not a duplicate.
    let mut reused = Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT);
    reused.instruction = "pay:1:2027-01:1";
    assert_eq!(
        verdict(&settled, reused),
        Verdict::Refused {
            refusal: PostRefusal::TransactionIdReused {
                first: settled.last().unwrap().id
            }
        }
    );
}

#[test]
fn a_reused_transaction_id_never_displaces_the_accepted_post() {
    let settle = Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT);
    let mut reused = Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT);
    reused.instruction = "pay:9:2026-12:1";
    let h = history_from(
        &one_instruction(),
        &[settle.on("2026-12-02"), reused.on("2026-12-03")],
    );
    let accepted = PostAnswer {
        event: h[h.len() - 2].id,
        verdict: Verdict::Accepted {
            status: InstructionStatus::Settled,
        },
    };
    let refused = h.last().unwrap().post_answer().unwrap();
    assert_eq!(
        refused.verdict,
        Verdict::Refused {
            refusal: PostRefusal::TransactionIdReused {
                first: accepted.event
            }
        }
    );
    given(&h)
        .when(settle.on("2027-06-01"))
        .then_duplicate(&accepted);
    given(&h)
        .when(reused.on("2027-06-01"))
        .then_duplicate(&refused);
}

#[test]
fn back_dated_post_refused() {
    given(&one_instruction())
        .when(Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-11-30"))
        .then_rejects(Rejection::BackDated {
            last: d("2026-12-01"),
            effective: d("2026-11-30"),
        });
}

#[test]
fn refused_posts_are_bounded_per_gateway_and_day() {
    let mut book = replay(&one_instruction());
    let txns: Vec<String> = (0..=REFUSED_POSTS_PER_GATEWAY_DAY_MAX)
        .map(|i| format!("X{i}"))
        .collect();
    for (n, txn) in txns.iter().enumerate() {
        let mut p = Post::new(BANK, FIRST, Outcome::Settled, "X", 1).body();
        p.gateway_txn = ansinh::domain::payments::ids::GatewayTxnId::parse(txn).unwrap();
        let c = ansinh::domain::payments::Command {
            actor: ansinh::domain::payments::Actor::Gateway(gw(BANK)),
            effective: d("2026-12-02"),
            kind: CommandKind::Post(p),
        };
        match decide(&book, c) {
            Ok(Decision::Append(evs)) => {
                assert!((n as u32) < REFUSED_POSTS_PER_GATEWAY_DAY_MAX);
                ansinh::domain::payments::apply(&mut book, &evs[0]);
            }
            Err(r) => {
                assert_eq!(n as u32, REFUSED_POSTS_PER_GATEWAY_DAY_MAX);
                assert_eq!(
                    r,
                    Rejection::RefusalLimitReached {
                        gateway: gw(BANK),
                        day: d("2026-12-02"),
                        max: REFUSED_POSTS_PER_GATEWAY_DAY_MAX
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Past the day's bound of refused posts, the first late settlement of an instruction is
/// still recorded: it is what holds the month back from a reissue that would pay twice.
/// A second one for the same instruction counts against the bound as any refusal.
#[test]
fn a_late_settlement_is_recorded_past_the_days_bound_once() {
    // Timed out, or returned before any settlement.
    let returned = Post::new(BANK, FIRST, Outcome::Returned, "R1", AMOUNT).on("2026-12-02");
    for given_up in [time_out("2026-12-11", FIRST), returned] {
        late_settlement_past_the_days_bound(given_up);
    }
}

fn late_settlement_past_the_days_bound(given_up: ansinh::domain::payments::Command) {
    let mut book = replay(&history_from(&one_instruction(), &[given_up]));
    let post = |outcome, txn: &str, amount| {
        let mut p = Post::new(BANK, FIRST, outcome, "X", amount).body();
        p.gateway_txn = ansinh::domain::payments::ids::GatewayTxnId::parse(txn).unwrap();
        ansinh::domain::payments::Command {
            actor: ansinh::domain::payments::Actor::Gateway(gw(BANK)),
            effective: d("2026-12-12"),
            kind: CommandKind::Post(p),
        }
    };
    let applied = |book: &mut ansinh::domain::payments::Book, c| match decide(book, c) {
        Ok(Decision::Append(evs)) => {
            for e in &evs {
                ansinh::domain::payments::apply(book, e);
            }
            Ok(())
        }
        Err(r) => Err(r),
        other => panic!("{other:?}"),
    };
    // The day's refusals used up by failures posted for the instruction given up on.
    for n in 0..REFUSED_POSTS_PER_GATEWAY_DAY_MAX {
        applied(&mut book, post(Outcome::Failed, &format!("F{n}"), AMOUNT)).unwrap();
    }
    assert!(matches!(
        applied(&mut book, post(Outcome::Failed, "F-more", AMOUNT)),
        Err(Rejection::RefusalLimitReached { .. })
    ));
    applied(&mut book, post(Outcome::Settled, "T1", AMOUNT)).unwrap();
    assert_eq!(
        book.late_settlements.keys().collect::<Vec<_>>(),
        [&iid(FIRST)]
    );
    assert!(matches!(
        applied(&mut book, post(Outcome::Settled, "T2", AMOUNT)),
        Err(Rejection::RefusalLimitReached { .. })
    ));
}

// ---------------------------------------------------------------- reissue and timeout

#[test]
fn failed_payment_is_reissued_as_post_office_cash() {
    let h = history_from(
        &one_instruction(),
        &[Post::new(BANK, FIRST, Outcome::Failed, "F1", AMOUNT).on("2026-12-02")],
    );
    assert_eq!(
        replay(&h).budget(&key(COMMUNE, "2026-12")).reserved,
        dec!(0),
        "failure voids"
    );
    given(&h)
        .when(reissue("2026-12-03", FIRST, Some(post_office())))
        .then(|b, evs| {
            let EventBody::InstructionIssued {
                instruction,
                budget,
            } = &evs[0].body
            else {
                panic!("{:?}", evs[0]);
            };
            assert_eq!(instruction.id.to_string(), "pay:1:2026-12:2");
            assert_eq!(instruction.replaces, Some(iid(FIRST)));
            assert_eq!(instruction.channel.kind(), ChannelKind::PostOffice);
            assert_eq!(instruction.amount, dec!(750000));
            assert_eq!(budget.kind, MoveKind::Reserve);
            assert_eq!(b.budget(&key(COMMUNE, "2026-12")).reserved, dec!(750000));
            // The post office may now settle attempt 2; the bank may not revive attempt 1.
            let settle = Post::new(
                POST_OFFICE,
                "pay:1:2026-12:2",
                Outcome::Settled,
                "P1",
                AMOUNT,
            );
            let d2 = decide(b, settle.on("2026-12-10")).unwrap();
            assert!(matches!(
                d2.post_answer().unwrap().verdict,
                Verdict::Accepted { .. }
            ));
            let late = decide(
                b,
                Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-10"),
            )
            .unwrap();
            assert_eq!(
                late.post_answer().unwrap().verdict,
                Verdict::Refused {
                    refusal: PostRefusal::NotPending {
                        status: InstructionStatus::Failed
                    }
                }
            );
        });
    let h2 = history_from(&h, &[reissue("2026-12-03", FIRST, None)]);
    given(&h2)
        .when(reissue("2026-12-04", FIRST, None))
        .then_rejects(Rejection::AlreadyReissued {
            instruction: iid(FIRST),
            latest: iid("pay:1:2026-12:2"),
        });
    given(&h2)
        .when(reissue("2026-12-04", "pay:1:2026-12:2", None))
        .then_rejects(Rejection::NotReissuable {
            instruction: iid("pay:1:2026-12:2"),
            status: InstructionStatus::Instructed,
        });
}

#[test]
fn reissue_needs_budget_and_is_bounded() {
    // Budget exactly one payment: after a failure and a top-down, no room.
    let h = history(&[
        allocate("2026-11-20", COMMUNE, "2026-12", 750_000),
        grant(
            "2026-11-20",
            1,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ),
        run("2026-12-01", "2026-12", None),
        Post::new(BANK, FIRST, Outcome::Failed, "F1", AMOUNT).on("2026-12-02"),
        cmd(
            "2026-12-02",
            CommandKind::Deallocate {
                budget: key(COMMUNE, "2026-12"),
                amount: dec!(1),
            },
        ),
    ]);
    given(&h)
        .when(reissue("2026-12-03", FIRST, None))
        .then_rejects(Rejection::BudgetExceeded {
            budget: key(COMMUNE, "2026-12"),
            available: dec!(749999),
            requested: dec!(750000),
        });
    // Five attempts at most.
    let mut cmds = vec![allocate("2026-12-02", COMMUNE, "2026-12", 1)];
    let ids = [
        "pay:1:2026-12:1",
        "pay:1:2026-12:2",
        "pay:1:2026-12:3",
        "pay:1:2026-12:4",
        "pay:1:2026-12:5",
    ];
    const TXNS: [&str; 4] = ["F2", "F3", "F4", "F5"];
    for (n, id) in ids.iter().enumerate().skip(1) {
        cmds.push(reissue("2026-12-03", ids[n - 1], None));
        cmds.push(Post::new(BANK, id, Outcome::Failed, TXNS[n - 1], AMOUNT).on("2026-12-03"));
    }
    let h = history_from(&h, &cmds);
    given(&h)
        .when(reissue("2026-12-04", "pay:1:2026-12:5", None))
        .then_rejects(Rejection::TooManyAttempts {
            instruction: iid("pay:1:2026-12:5"),
            max: 5,
        });
}

#[test]
fn timeout_voids_the_hold() {
    let h = one_instruction();
    // Bank transfers time out after 10 days.
    given(&h)
        .when(time_out("2026-12-10", FIRST))
        .then_rejects(Rejection::NotDueForTimeout {
            instruction: iid(FIRST),
            due_on: d("2026-12-11"),
        });
    let book = replay(&h);
    assert_eq!(due_for_timeout(&book, d("2026-12-10")).count(), 0);
    assert_eq!(
        due_for_timeout(&book, d("2026-12-11")).collect::<Vec<_>>(),
        [&iid(FIRST)]
    );
    given(&h)
        .when(time_out("2026-12-11", FIRST))
        .then(|b, evs| {
            assert_eq!(evs[0].budget_move().unwrap().kind, MoveKind::Void);
            assert_eq!(
                b.instructions[&iid(FIRST)].status,
                InstructionStatus::TimedOut
            );
            assert_eq!(b.budget(&key(COMMUNE, "2026-12")).reserved, dec!(0));
            // A settlement arriving after the timeout is refused (and listed).
            let late = decide(
                b,
                Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-12"),
            )
            .unwrap();
            assert_eq!(
                late.post_answer().unwrap().verdict,
                Verdict::Refused {
                    refusal: PostRefusal::NotPending {
                        status: InstructionStatus::TimedOut
                    }
                }
            );
        });
    let h = history_from(&h, &[time_out("2026-12-11", FIRST)]);
    given(&h)
        .when(time_out("2026-12-12", FIRST))
        .then_rejects(Rejection::InstructionNotPending {
            instruction: iid(FIRST),
            status: InstructionStatus::TimedOut,
        });
    // A timed-out payment may be reissued.
    given(&h)
        .when(reissue("2026-12-12", FIRST, Some(post_office())))
        .then(|b, _| {
            assert_eq!(b.budget(&key(COMMUNE, "2026-12")).reserved, dec!(750000));
        });
}

/// A `settled` post that arrives after the ledger gave up on the instruction is refused
/// and recorded, and the person may hold the money: no attempt of that month is reissued
/// until the gateway's word is reconciled. Without such a post, a timed-out instruction
/// is reissued as before.
#[test]
fn a_month_its_gateway_says_it_settled_late_is_not_reissued() {
    use ansinh::domain::payments::ids::GatewayTxnId;
    let h = history_from(&one_instruction(), &[time_out("2026-12-11", FIRST)]);
    given(&h)
        .when(reissue("2026-12-12", FIRST, Some(post_office())))
        .then(|b, _| {
            assert_eq!(
                b.instructions[&iid("pay:1:2026-12:2")].status,
                InstructionStatus::Instructed
            );
        });
    let late = history_from(
        &h,
        &[Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-12")],
    );
    assert!(matches!(
        &late.last().unwrap().body,
        EventBody::GatewayPostRefused {
            refusal: PostRefusal::NotPending {
                status: InstructionStatus::TimedOut
            },
            ..
        }
    ));
    let to_reconcile = Rejection::LateSettlementToReconcile {
        instruction: iid(FIRST),
        gateway: gw(BANK),
        gateway_txn: GatewayTxnId::parse("T1").unwrap(),
    };
    given(&late)
        .when(reissue("2026-12-13", FIRST, Some(post_office())))
        .then_rejects(to_reconcile.clone());
    // Remembered from the log alone.
    assert_eq!(
        replay(&late).late_settlements.keys().collect::<Vec<_>>(),
        [&iid(FIRST)]
    );

    // A later attempt of the month is held back too: the first one's late settlement may
    // have paid the month.
    let h = history_from(
        &h,
        &[
            reissue("2026-12-12", FIRST, None),
            Post::new(BANK, "pay:1:2026-12:2", Outcome::Failed, "T2", AMOUNT).on("2026-12-13"),
            Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-14"),
        ],
    );
    given(&h)
        .when(reissue(
            "2026-12-15",
            "pay:1:2026-12:2",
            Some(post_office()),
        ))
        .then_rejects(to_reconcile);
}

/// A late settlement of an attempt the ledger gave up on, while the month's reissue is
/// still pending: the reissue is cancelled in the same command (its hold voided), so no
/// gateway pays the month a second time. Its own settlement, if its gateway paid all the
/// same, is a late settlement too, and reconciliation lists both.
#[test]
fn a_late_settlement_cancels_the_months_reissue_still_pending() {
    const SECOND: &str = "pay:1:2026-12:2";
    let h = history_from(
        &one_instruction(),
        &[
            time_out("2026-12-11", FIRST),
            reissue("2026-12-12", FIRST, None),
        ],
    );
    let late = Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT);
    given(&h).when(late.on("2026-12-13")).then(|b, evs| {
        // The cancellation first: the command's last event is the post's, which its
        // receipt and idempotency key name.
        assert!(matches!(
            &evs[0].body,
            EventBody::InstructionCancelled { instruction, budget }
                if *instruction == iid(SECOND) && budget.kind == MoveKind::Void
        ));
        assert_eq!(evs[0].effective, d("2026-12-13"));
        assert_eq!(
            evs[1].post_answer().unwrap().verdict,
            Verdict::Refused {
                refusal: PostRefusal::NotPending {
                    status: InstructionStatus::TimedOut
                }
            }
        );
        assert_eq!(evs.len(), 2);
        assert_eq!(
            b.instructions[&iid(SECOND)].status,
            InstructionStatus::Cancelled
        );
        assert_eq!(b.budget(&key(COMMUNE, "2026-12")).reserved, dec!(0));
    });
    let h = history_from(&h, &[late.on("2026-12-13")]);
    // The second attempt's gateway paid it all the same: refused, and held as well.
    given(&h)
        .when(Post::new(BANK, SECOND, Outcome::Settled, "T2", AMOUNT).on("2026-12-14"))
        .then(|b, evs| {
            assert_eq!(
                evs[0].post_answer().unwrap().verdict,
                Verdict::Refused {
                    refusal: PostRefusal::NotPending {
                        status: InstructionStatus::Cancelled
                    }
                }
            );
            assert_eq!(b.budget(&key(COMMUNE, "2026-12")).posted, dec!(0));
            assert_eq!(
                b.late_settlements.keys().collect::<Vec<_>>(),
                [&iid(FIRST), &iid(SECOND)]
            );
            let all = given_history(&h, evs);
            let r = reconcile(&all, d("2026-12-14"), 30);
            let day13 = &r.days[&(gw(BANK), d("2026-12-13"))];
            assert_eq!(day13.cancelled.count, 1);
            let refused = |day: &ansinh::domain::payments::reconcile::GatewayDay| {
                day.mismatches
                    .iter()
                    .map(|m| m.instruction.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(refused(day13), [FIRST]);
            assert_eq!(refused(&r.days[&(gw(BANK), d("2026-12-14"))]), [SECOND]);
        });

    // The reissue already settled: nothing left to cancel, and the refused late settlement
    // is what reconciliation shows of the month paid twice.
    let h = history_from(
        &one_instruction(),
        &[
            time_out("2026-12-11", FIRST),
            reissue("2026-12-12", FIRST, Some(post_office())),
            Post::new(POST_OFFICE, SECOND, Outcome::Settled, "P2", AMOUNT).on("2026-12-13"),
        ],
    );
    given(&h).when(late.on("2026-12-14")).then(|b, evs| {
        assert_eq!(evs.len(), 1);
        assert_eq!(
            b.instructions[&iid(SECOND)].status,
            InstructionStatus::Settled
        );
        let all = given_history(&h, evs);
        let r = reconcile(&all, d("2026-12-14"), 30);
        let day = &r.days[&(gw(BANK), d("2026-12-14"))];
        assert!(matches!(
            &day.mismatches[..],
            [m] if m.instruction == FIRST && matches!(
                &m.kind,
                MismatchKind::RefusedPost {
                    outcome: Outcome::Settled,
                    refusal: PostRefusal::NotPending { status: InstructionStatus::TimedOut },
                    ..
                }
            )
        ));
    });
}

/// December timed out under entitlement 1, which was then stopped (dated November); a new
/// grant for the same person from December has issued `pay:2:2026-12:1`.
fn december_issued_again_by_a_new_grant() -> Vec<Event> {
    history(&[
        allocate("2026-10-20", COMMUNE, "2026-12", 10_000_000),
        grant(
            "2026-10-20",
            1,
            "2026-11",
            terms(ELDERLY_POOR, bank(), None),
        ),
        run("2026-12-01", "2026-12", None),
        time_out("2026-12-11", FIRST),
        stop("2026-12-12", 1, "2026-11-20", StopReason::Move),
        grant(
            "2026-12-12",
            1,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ),
        run("2026-12-12", "2026-12", None),
    ])
}

/// A late settlement of the old entitlement's December says the person may hold that
/// month's money: the new grant's December, still pending, is cancelled in the same
/// command (its hold voided), as a reissue of the month would be, so no gateway pays the
/// month a second time.
#[test]
fn a_late_settlement_cancels_a_new_grants_instruction_for_the_month_still_pending() {
    const NEW: &str = "pay:2:2026-12:1";
    let h = december_issued_again_by_a_new_grant();
    assert_eq!(
        replay(&h).instructions[&iid(NEW)].status,
        InstructionStatus::Instructed
    );
    let late = Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT);
    given(&h).when(late.on("2026-12-13")).then(|b, evs| {
        assert_eq!(evs.len(), 2, "{evs:?}");
        assert!(matches!(
            &evs[0].body,
            EventBody::InstructionCancelled { instruction, budget }
                if *instruction == iid(NEW) && budget.kind == MoveKind::Void
        ));
        assert_eq!(
            evs[1].post_answer().unwrap().verdict,
            Verdict::Refused {
                refusal: PostRefusal::NotPending {
                    status: InstructionStatus::TimedOut
                }
            }
        );
        assert_eq!(
            b.instructions[&iid(NEW)].status,
            InstructionStatus::Cancelled
        );
        assert_eq!(b.budget(&key(COMMUNE, "2026-12")).reserved, dec!(0));
        // Cancelled, not failed: the new grant's December is not reissued either.
        assert!(matches!(
            decide(b, reissue("2026-12-14", NEW, None)),
            Err(Rejection::NotReissuable { .. })
        ));
    });

    // The new grant's December already settled: nothing to cancel, and reconciliation
    // lists the refused late settlement, which shows the month paid twice.
    let h = history_from(
        &h,
        &[Post::new(BANK, NEW, Outcome::Settled, "T2", AMOUNT).on("2026-12-13")],
    );
    given(&h).when(late.on("2026-12-14")).then(|b, evs| {
        assert_eq!(evs.len(), 1);
        assert_eq!(b.instructions[&iid(NEW)].status, InstructionStatus::Settled);
        let all = given_history(&h, evs);
        let r = reconcile(&all, d("2026-12-14"), 30);
        let day = &r.days[&(gw(BANK), d("2026-12-14"))];
        assert!(matches!(
            &day.mismatches[..],
            [m] if m.instruction == FIRST && matches!(
                &m.kind,
                MismatchKind::RefusedPost {
                    outcome: Outcome::Settled,
                    refusal: PostRefusal::NotPending { status: InstructionStatus::TimedOut },
                    ..
                }
            )
        ));
        assert_eq!(r.days[&(gw(BANK), d("2026-12-13"))].settled.count, 1);
    });
}

/// The new grant's December failed: its gateway did not pay it, but the old entitlement's
/// gateway says it paid December late, so December is not reissued under the new grant
/// either until that is reconciled.
#[test]
fn a_month_settled_late_under_an_earlier_grant_is_not_reissued_under_a_new_one() {
    use ansinh::domain::payments::ids::GatewayTxnId;
    const NEW: &str = "pay:2:2026-12:1";
    let h = history_from(
        &december_issued_again_by_a_new_grant(),
        &[Post::new(BANK, NEW, Outcome::Failed, "F2", AMOUNT).on("2026-12-13")],
    );
    given(&h)
        .when(reissue("2026-12-14", NEW, Some(post_office())))
        .then(|b, _| assert!(b.instructions.contains_key(&iid("pay:2:2026-12:2"))));
    let h = history_from(
        &h,
        &[Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-14")],
    );
    given(&h)
        .when(reissue("2026-12-14", NEW, Some(post_office())))
        .then_rejects(Rejection::LateSettlementToReconcile {
            instruction: iid(FIRST),
            gateway: gw(BANK),
            gateway_txn: GatewayTxnId::parse("T1").unwrap(),
        });
}

// ---------------------------------------------------------------- dates in order

/// The partition's last payment run on 2026-12-01 and January paid ahead by a run of
/// 2026-12-20.
fn run_ahead_on_the_20th() -> Vec<Event> {
    history_from(
        &one_instruction(),
        &[
            allocate("2026-12-01", COMMUNE, "2027-01", 10_000_000),
            allocate("2026-12-01", COMMUNE, "2027-02", 10_000_000),
            run("2026-12-20", "2027-01", None),
        ],
    )
}

fn back_dated(latest: &str, effective: &str) -> Rejection {
    Rejection::PaymentOperationBackDated {
        latest: d(latest),
        effective: d(effective),
    }
}

/// A run dated before one the partition already recorded would make its instructions
/// older than they are: the next timeouts job would give up on them at once, while their
/// gateway still has days to pay, and a reissue would pay them twice.
#[test]
fn a_run_dated_before_the_partitions_last_run_is_refused() {
    let h = run_ahead_on_the_20th();
    given(&h)
        .when(run("2026-12-19", "2027-02", None))
        .then_rejects(back_dated("2026-12-20", "2026-12-19"));
    // Dated last month, for a month not yet run: the same.
    given(&one_instruction())
        .when(run("2026-11-15", "2027-01", None))
        .then_rejects(back_dated("2026-12-01", "2026-11-15"));
    // A run again of a month already paid adds nothing, whatever its date: nothing is
    // issued, so nothing is dated.
    given(&h)
        .when(run("2026-12-19", "2027-01", None))
        .then_nothing();
}

#[test]
fn a_timeout_dated_before_the_last_run_is_refused() {
    // The December instruction is due for its timeout from 2026-12-11; the partition ran
    // January on the 20th, so a timeout dated before it is back-dated.
    given(&run_ahead_on_the_20th())
        .when(time_out("2026-12-11", FIRST))
        .then_rejects(back_dated("2026-12-20", "2026-12-11"));
    // And a run dated before the latest timeout.
    let h = history_from(
        &one_instruction(),
        &[
            allocate("2026-12-01", COMMUNE, "2027-01", 10_000_000),
            time_out("2026-12-15", FIRST),
        ],
    );
    given(&h)
        .when(run("2026-12-14", "2027-01", None))
        .then_rejects(back_dated("2026-12-15", "2026-12-14"));
}

#[test]
fn a_reissue_dated_before_the_last_run_is_refused() {
    let h = history_from(
        &run_ahead_on_the_20th(),
        &[Post::new(BANK, FIRST, Outcome::Failed, "F1", AMOUNT).on("2026-12-02")],
    );
    given(&h)
        .when(reissue("2026-12-03", FIRST, Some(post_office())))
        .then_rejects(back_dated("2026-12-20", "2026-12-03"));
    // And a run dated before the latest reissue.
    let h = history_from(
        &one_instruction(),
        &[
            Post::new(BANK, FIRST, Outcome::Failed, "F1", AMOUNT).on("2026-12-02"),
            reissue("2026-12-05", FIRST, Some(post_office())),
            allocate("2026-12-05", COMMUNE, "2027-01", 10_000_000),
        ],
    );
    given(&h)
        .when(run("2026-12-04", "2027-01", None))
        .then_rejects(back_dated("2026-12-05", "2026-12-04"));
}

/// Dated the same day as the partition's latest run, reissue or timeout, or later, each
/// passes; grants, changes, stops and gateway posts keep their own dates (a stop recorded
/// before the latest run, a post the gateway received before it).
#[test]
fn payment_operations_dated_the_same_day_or_later_pass() {
    let h = run_ahead_on_the_20th();
    given(&h)
        .when(run("2026-12-20", "2027-02", None))
        .then(|b, _| assert!(b.instructions.contains_key(&iid("pay:1:2027-02:1"))));
    given(&h).when(time_out("2026-12-20", FIRST)).then(|b, _| {
        assert_eq!(
            b.instructions[&iid(FIRST)].status,
            InstructionStatus::TimedOut
        )
    });
    let h = history_from(&h, &[time_out("2026-12-21", FIRST)]);
    given(&h)
        .when(reissue("2026-12-21", FIRST, Some(post_office())))
        .then(|b, _| assert!(b.instructions.contains_key(&iid("pay:1:2026-12:2"))));
    given(&h)
        .when(run("2026-12-22", "2027-02", None))
        .then(|b, _| assert!(b.instructions.contains_key(&iid("pay:1:2027-02:1"))));

    // Free of the partition's dates: the bank's settlement of January, received before
    // the timeout of the 21st, and a stop recorded before it (it cancels nothing).
    let h = run_ahead_on_the_20th();
    given(&history_from(&h, &[time_out("2026-12-21", FIRST)]))
        .when(Post::new(BANK, "pay:1:2027-01:1", Outcome::Settled, "T2", AMOUNT).on("2026-12-20"))
        .then(|b, _| {
            assert_eq!(
                b.instructions[&iid("pay:1:2027-01:1")].status,
                InstructionStatus::Settled
            )
        });
    let h = history_from(
        &one_instruction(),
        &[
            allocate("2026-12-01", COMMUNE, "2027-01", 10_000_000),
            run("2026-12-05", "2027-01", None),
            Post::new(BANK, "pay:1:2027-01:1", Outcome::Settled, "T2", AMOUNT).on("2026-12-06"),
        ],
    );
    given(&h)
        .when(stop("2026-12-04", 1, "2026-12-04", StopReason::Death))
        .then(|b, _| assert!(b.entitlements[&1].stopped.is_some()));
}

// ---------------------------------------------------------------- reconciliation

#[test]
fn reconciliation_per_gateway_and_day() {
    let h = history(&[
        allocate("2026-11-20", COMMUNE, "2026-12", 10_000_000),
        grant(
            "2026-11-20",
            1,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ),
        grant(
            "2026-11-20",
            2,
            "2026-12",
            terms(ORPHAN_UNDER_4, bank(), None),
        ),
        grant(
            "2026-11-20",
            3,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ),
        grant(
            "2026-11-20",
            4,
            "2026-12",
            terms(ELDERLY_POOR, wallet(), None),
        ),
        run("2026-12-01", "2026-12", None),
        Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-02"),
        Post::new(BANK, "pay:2:2026-12:1", Outcome::Failed, "F2", 1_250_000)
            .of(2)
            .on("2026-12-02"),
        Post::new(BANK, FIRST, Outcome::Returned, "R1", AMOUNT).on("2026-12-03"),
        Post::new(BANK, "pay:3:2026-12:1", Outcome::Settled, "T3", 700_000)
            .of(3)
            .on("2026-12-03"),
        reissue("2026-12-03", "pay:2:2026-12:1", Some(post_office())),
    ]);
    let r = reconcile(&h, d("2026-12-20"), 15);
    let bank1 = &r.days[&(gw(BANK), d("2026-12-01"))];
    assert_eq!(
        bank1.instructed,
        Tally {
            count: 3,
            amount: dec!(2750000)
        }
    );
    // Person 3 is still pending 19 days later.
    assert_eq!(
        bank1.pending_overdue,
        Tally {
            count: 1,
            amount: dec!(750000)
        }
    );
    assert_eq!(bank1.pending_overdue_ids, [iid("pay:3:2026-12:1")]);
    let bank2 = &r.days[&(gw(BANK), d("2026-12-02"))];
    assert_eq!(
        bank2.settled,
        Tally {
            count: 1,
            amount: dec!(750000)
        }
    );
    assert_eq!(
        bank2.failed,
        Tally {
            count: 1,
            amount: dec!(1250000)
        }
    );
    let bank3 = &r.days[&(gw(BANK), d("2026-12-03"))];
    assert_eq!(
        bank3.returned,
        Tally {
            count: 1,
            amount: dec!(750000)
        }
    );
    assert_eq!(bank3.mismatches.len(), 2);
    assert!(matches!(
        bank3.mismatches[0].kind,
        MismatchKind::ReturnedAfterSettlement { .. }
    ));
    assert!(matches!(
        &bank3.mismatches[1].kind,
        MismatchKind::RefusedPost {
            refusal: PostRefusal::AmountMismatch { .. },
            ..
        }
    ));
    let wallet1 = &r.days[&(gw(WALLET), d("2026-12-01"))];
    assert_eq!(wallet1.instructed.count, 1);
    assert_eq!(wallet1.pending_overdue.count, 1);
    let post3 = &r.days[&(gw(POST_OFFICE), d("2026-12-03"))];
    assert_eq!(
        post3.instructed,
        Tally {
            count: 1,
            amount: dec!(1250000)
        }
    );
    assert_eq!(
        post3.pending_overdue.count, 1,
        "17 days old, the limit is 15"
    );
    // On 12-17 the post-office reissue of 12-03 is only 14 days old.
    let r = reconcile(&h, d("2026-12-17"), 15);
    assert_eq!(
        r.days[&(gw(POST_OFFICE), d("2026-12-03"))]
            .pending_overdue
            .count,
        0
    );
    // Events after the report date are left out.
    let r = reconcile(&h, d("2026-12-01"), 15);
    assert!(!r.days.contains_key(&(gw(BANK), d("2026-12-02"))));

    // Pending per reconciliation agrees with the book.
    let book = replay(&h);
    let pending_in_book = book
        .instructions
        .values()
        .filter(|i| i.status == InstructionStatus::Instructed)
        .count() as u64;
    let r = reconcile(&h, d("2026-12-20"), 0);
    assert_eq!(
        r.days
            .values()
            .map(|g| g.pending_overdue.count)
            .sum::<u64>(),
        pending_in_book
    );
}

#[test]
fn household_sees_what_it_received_per_month_and_channel() {
    let h = history(&[
        allocate("2026-11-20", COMMUNE, "2026-12", 10_000_000),
        allocate("2026-11-20", COMMUNE, "2027-01", 10_000_000),
        grant(
            "2026-11-20",
            1,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ),
        grant(
            "2026-11-20",
            2,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ),
        run("2026-12-01", "2026-12", None),
        Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-02"),
        Post::new(BANK, FIRST, Outcome::Returned, "R1", AMOUNT).on("2026-12-05"),
        reissue("2026-12-05", FIRST, Some(post_office())),
        Post::new(
            POST_OFFICE,
            "pay:1:2026-12:2",
            Outcome::Settled,
            "P1",
            AMOUNT,
        )
        .on("2026-12-15"),
        run("2027-01-02", "2027-01", None),
        Post::new(BANK, "pay:1:2027-01:1", Outcome::Settled, "T2", AMOUNT).on("2027-01-03"),
    ]);
    let view = household_view(&h, &person(1).household);
    let get = |month: &str, kind| view[&(m(month), kind)].clone();
    let dec_bank = get("2026-12", ChannelKind::BankAccount);
    assert_eq!(
        dec_bank.settled,
        Tally {
            count: 1,
            amount: dec!(750000)
        }
    );
    assert_eq!(
        dec_bank.returned,
        Tally {
            count: 1,
            amount: dec!(750000)
        }
    );
    assert_eq!(dec_bank.net, dec!(0));
    assert_eq!(get("2026-12", ChannelKind::PostOffice).net, dec!(750000));
    assert_eq!(get("2027-01", ChannelKind::BankAccount).net, dec!(750000));
    assert_eq!(view.len(), 3, "person 2's household is not shown");
}

#[test]
fn events_and_commands_round_trip_through_json() {
    let h = history_from(
        &one_instruction(),
        &[
            Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-02"),
            Post::new(BANK, FIRST, Outcome::Returned, "R1", AMOUNT).on("2026-12-05"),
            reissue("2026-12-06", FIRST, Some(post_office())),
            // A late settlement, which cancels the reissue.
            Post::new(BANK, FIRST, Outcome::Settled, "T2", AMOUNT).on("2026-12-06"),
        ],
    );
    let json = serde_json::to_string(&h).unwrap();
    assert!(
        json.contains("\"pay:1:2026-12:2\""),
        "ids travel in their text form"
    );
    assert!(json.contains("\"750000\""), "money travels as a string");
    let back: Vec<ansinh::domain::payments::Event> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, h);
    let c = Post::new(BANK, FIRST, Outcome::Settled, "T1", AMOUNT).on("2026-12-02");
    let back: ansinh::domain::payments::Command =
        serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    // Shapes are checked when reading, too.
    let bad = serde_json::to_string(&c)
        .unwrap()
        .replace("pay:1:2026-12:1", "pay 1");
    assert!(serde_json::from_str::<ansinh::domain::payments::Command>(&bad).is_err());
}

// ---------------------------------------------------------------- deaths

/// A registry where every household lives here, with every citizen it had, and these
/// citizens died.
struct Deaths(Vec<(CitizenIndex, &'static str)>);

impl RegistryFacts for Deaths {
    fn resident(&self, _: &HouseholdRef, _: Month) -> bool {
        true
    }
    fn died_on(&self, citizen: &CitizenIndex) -> Option<NaiveDate> {
        self.0
            .iter()
            .find(|(c, _)| c == citizen)
            .map(|(_, on)| d(on))
    }
    fn is_member(&self, _: &HouseholdRef, _: &CitizenIndex) -> bool {
        true
    }
    fn erased(&self, _: &HouseholdRef) -> bool {
        false
    }
}

const SECOND: CitizenIndex = [2; 32];
const THIRD: CitizenIndex = [3; 32];

/// Person 1's allowance from March 2027, granted to the citizen `THIRD`, and budgets for
/// March to May.
fn granted_to_third() -> Vec<Event> {
    let mut grant = grant(
        "2027-02-20",
        1,
        "2027-03",
        terms(ELDERLY_POOR, bank(), None),
    );
    if let CommandKind::Grant { citizen, .. } = &mut grant.kind {
        *citizen = Some(THIRD);
    }
    let mut commands: Vec<_> = ["2027-03", "2027-04", "2027-05"]
        .into_iter()
        .map(|month| allocate("2027-02-20", COMMUNE, month, 10_000_000))
        .collect();
    commands.push(grant);
    history(&commands)
}

fn issued_and_deceased(events: &[Event]) -> (u64, Vec<u64>) {
    match events.last().map(|e| &e.body) {
        Some(EventBody::PaymentRunCompleted {
            issued,
            left_unpaid,
            ..
        }) => (*issued, left_unpaid.deceased.clone()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_grant_records_its_beneficiary_and_old_grants_read_as_none() {
    assert_eq!(
        replay(&granted_to_third()).entitlements[&1].citizen,
        Some(THIRD)
    );
    let mut old = serde_json::to_value(&granted_to_third()[3].body).unwrap();
    old["EntitlementGranted"]
        .as_object_mut()
        .unwrap()
        .remove("citizen");
    let old: EventBody = serde_json::from_value(old).unwrap();
    assert!(matches!(
        old,
        EventBody::EntitlementGranted { citizen: None, .. }
    ));
}

/// Another member's death changes nothing: the entitlement is linked to its citizen, not
/// to a position in the household that a death shifts.
#[test]
fn another_members_death_does_not_stop_the_allowance() {
    given(&granted_to_third())
        .when_registry(
            run("2027-04-01", "2027-04", None),
            &Deaths(vec![(SECOND, "2027-03-10")]),
        )
        .then(|_, events| assert_eq!(issued_and_deceased(events), (1, vec![])));
}

/// Decree 20/2021: paid through the month of death, and from the next month on not
/// paid; the run names the entitlement for an officer to stop, and is recorded even
/// with nothing to pay.
#[test]
fn a_run_pays_through_the_month_of_death_and_names_the_deceased_after() {
    let died = Deaths(vec![(SECOND, "2027-03-10"), (THIRD, "2027-04-15")]);
    given(&granted_to_third())
        .when_registry(run("2027-04-20", "2027-04", None), &died)
        .then(|_, events| assert_eq!(issued_and_deceased(events), (1, vec![])));
    let april = history_from(&granted_to_third(), &[run("2027-04-01", "2027-04", None)]);
    given(&april)
        .when_registry(run("2027-05-01", "2027-05", None), &died)
        .then(|b, events| {
            assert_eq!(events.len(), 1, "no instruction: {events:?}");
            assert_eq!(issued_and_deceased(events), (0, vec![1]));
            assert!(!b.attempts.contains_key(&(1, m("2027-05"))));
        });
}

/// A month after the death is not paid again by a reissue (it was instructed before the
/// death was recorded, and failed); the month of death is.
#[test]
fn a_month_after_the_death_is_not_reissued() {
    let h = history_from(
        &granted_to_third(),
        &[
            run("2027-04-01", "2027-04", None),
            run("2027-05-01", "2027-05", None),
            Post::new(BANK, "pay:1:2027-04:1", Outcome::Failed, "F4", AMOUNT).on("2027-05-02"),
            Post::new(BANK, "pay:1:2027-05:1", Outcome::Failed, "F5", AMOUNT).on("2027-05-02"),
        ],
    );
    let died = Deaths(vec![(THIRD, "2027-04-15")]);
    given(&h)
        .when_registry(reissue("2027-05-20", "pay:1:2027-05:1", None), &died)
        .then_rejects(Rejection::BeneficiaryDied {
            died_on: d("2027-04-15"),
        });
    given(&h)
        .when_registry(reissue("2027-05-20", "pay:1:2027-04:1", None), &died)
        .then(|_, events| assert_eq!(events.len(), 1));
}

// ---------------------------------------------------------------- one allowance per person

/// A grant to `member` of household 1, naming its citizen: the same person under another
/// reference after a member before them died or left, or another person at a position
/// that shifted.
fn grant_named(
    date: &str,
    member: &str,
    from: &str,
    citizen: CitizenIndex,
) -> ansinh::domain::payments::Command {
    use ansinh::domain::payments::ids::MemberRef;
    let mut c = grant(date, 1, from, terms(ELDERLY_POOR, bank(), None));
    if let CommandKind::Grant {
        beneficiary,
        citizen: named,
        ..
    } = &mut c.kind
    {
        beneficiary.member = MemberRef::parse(member).unwrap();
        *named = Some(citizen);
    }
    c
}

/// `THIRD` was granted as "m1"; a member before them died and they are now "m2". Granting
/// "m2" names the same citizen: the allowance they already have, not a second one.
#[test]
fn the_same_citizen_under_a_shifted_reference_is_not_granted_twice() {
    given(&granted_to_third())
        .when(grant_named("2027-03-20", "m2", "2027-04", THIRD))
        .then_rejects(Rejection::ActiveEntitlementExists { entitlement: 1 });
}

/// Another citizen now holds the position `THIRD` was granted under: a different person,
/// granted their own allowance, while `THIRD`'s goes on.
#[test]
fn another_citizen_at_the_position_of_a_shifted_member_is_granted() {
    given(&granted_to_third())
        .when(grant_named("2027-03-20", "m1", "2027-04", [4; 32]))
        .then(|b, events| {
            assert!(matches!(
                events,
                [Event {
                    body: EventBody::EntitlementGranted { entitlement: 2, .. },
                    ..
                }]
            ));
            assert!(b.entitlements.values().all(|e| e.stopped.is_none()));
        });
}

/// A grant without a citizen (a member without an id, or one recorded before the ledger
/// kept it) could be anyone at its position: a grant there is refused as before, whoever it
/// names, and one without a citizen at a position a named grant holds too.
#[test]
fn a_grant_without_a_citizen_is_one_person_with_its_reference() {
    let unnamed = history(&[grant(
        "2027-02-20",
        1,
        "2027-03",
        terms(ELDERLY_POOR, bank(), None),
    )]);
    given(&unnamed)
        .when(grant_named("2027-03-20", "m1", "2027-04", THIRD))
        .then_rejects(Rejection::ActiveEntitlementExists { entitlement: 1 });
    given(&granted_to_third())
        .when(grant(
            "2027-03-20",
            1,
            "2027-04",
            terms(ELDERLY_POOR, bank(), None),
        ))
        .then_rejects(Rejection::ActiveEntitlementExists { entitlement: 1 });
}

/// `THIRD`'s allowance was stopped (a move) and paid March; granted again under the
/// reference they hold now, from March, it would pay March twice.
#[test]
fn a_stopped_allowance_of_the_citizen_bounds_a_grant_under_another_reference() {
    let h = history_from(
        &granted_to_third(),
        &[stop("2027-03-20", 1, "2027-03-10", StopReason::Move)],
    );
    given(&h)
        .when(grant_named("2027-03-21", "m2", "2027-03", THIRD))
        .then_rejects(Rejection::GrantOverlapsStopped {
            entitlement: 1,
            last_payable: m("2027-03"),
        });
    given(&h)
        .when(grant_named("2027-03-21", "m2", "2027-04", THIRD))
        .then(|_, events| assert_eq!(events.len(), 1));
    // Another citizen at the old position is not bounded by it.
    given(&h)
        .when(grant_named("2027-03-21", "m1", "2027-03", [4; 32]))
        .then(|_, events| assert_eq!(events.len(), 1));
}

/// April timed out under `THIRD`'s first allowance, which was then stopped; their new
/// grant, under the reference they hold now, issued April again. The bank's late
/// settlement of the first April withdraws the second, as it would under one reference.
#[test]
fn a_late_settlement_withdraws_the_citizens_month_under_another_reference() {
    const OLD: &str = "pay:1:2027-04:1";
    const NEW: &str = "pay:2:2027-04:1";
    let h = history_from(
        &granted_to_third(),
        &[
            run("2027-04-01", "2027-04", None),
            time_out("2027-04-11", OLD),
            stop("2027-04-12", 1, "2027-03-20", StopReason::Move),
            grant_named("2027-04-12", "m2", "2027-04", THIRD),
            run("2027-04-12", "2027-04", None),
        ],
    );
    let late = Post::new(BANK, OLD, Outcome::Settled, "T1", AMOUNT);
    given(&h).when(late.on("2027-04-13")).then(|b, _| {
        assert_eq!(
            b.instructions[&iid(NEW)].status,
            InstructionStatus::Cancelled
        );
    });
    // Another citizen's April under the old reference is theirs to be paid.
    let other = history_from(
        &granted_to_third(),
        &[
            run("2027-04-01", "2027-04", None),
            time_out("2027-04-11", OLD),
            grant_named("2027-04-12", "m1", "2027-04", [4; 32]),
            run("2027-04-12", "2027-04", None),
        ],
    );
    given(&other).when(late.on("2027-04-13")).then(|b, _| {
        assert_eq!(
            b.instructions[&iid(NEW)].status,
            InstructionStatus::Instructed
        );
    });
}

// ---------------------------------------------------------------- residence

/// A registry where every household left the partition in `left` (lived here through
/// that month) and nobody died.
struct LeftIn(&'static str);

impl RegistryFacts for LeftIn {
    fn resident(&self, _: &HouseholdRef, month: Month) -> bool {
        month <= m(self.0)
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

/// A month after the household moved out is paid where it lives now: the old partition
/// does not reissue it (instructed before the move, and failed), or a grant there would
/// pay it twice. The month it left is still reissued, as a run pays it.
#[test]
fn a_month_after_the_household_left_is_not_reissued() {
    let h = history_from(
        &granted_to_third(),
        &[
            run("2027-04-01", "2027-04", None),
            run("2027-05-01", "2027-05", None),
            Post::new(BANK, "pay:1:2027-04:1", Outcome::Failed, "F4", AMOUNT).on("2027-05-02"),
            Post::new(BANK, "pay:1:2027-05:1", Outcome::Failed, "F5", AMOUNT).on("2027-05-02"),
        ],
    );
    given(&h)
        .when_registry(
            reissue("2027-05-20", "pay:1:2027-05:1", None),
            &LeftIn("2027-04"),
        )
        .then_rejects(Rejection::HouseholdNoLongerResident {
            household: person(1).household,
            month: m("2027-05"),
        });
    given(&h)
        .when_registry(
            reissue("2027-05-20", "pay:1:2027-04:1", None),
            &LeftIn("2027-04"),
        )
        .then(|_, events| assert_eq!(events.len(), 1));
}

// ---------------------------------------------------------------- membership

/// A registry where every household lives here, nobody died, and the household's
/// citizens are these: a citizen not listed left it (or it was erased).
struct Citizens(Vec<CitizenIndex>);

impl RegistryFacts for Citizens {
    fn resident(&self, _: &HouseholdRef, _: Month) -> bool {
        true
    }
    fn died_on(&self, _: &CitizenIndex) -> Option<NaiveDate> {
        None
    }
    fn is_member(&self, _: &HouseholdRef, citizen: &CitizenIndex) -> bool {
        self.0.contains(citizen)
    }
    fn erased(&self, _: &HouseholdRef) -> bool {
        false
    }
}

fn not_a_member(events: &[Event]) -> (u64, Vec<u64>) {
    match events.last().map(|e| &e.body) {
        Some(EventBody::PaymentRunCompleted {
            issued,
            left_unpaid,
            ..
        }) => (*issued, left_unpaid.not_a_member.clone()),
        other => panic!("{other:?}"),
    }
}

/// A beneficiary who left the household (a member change freed them, and they may be
/// granted in the household they joined) is not paid by it any more: the run names the
/// entitlement for an officer to stop, and is recorded even with nothing to pay. A grant
/// without a recorded citizen (older grants, members without an id) is paid as before.
#[test]
fn a_run_pays_no_beneficiary_who_left_the_household_and_names_the_entitlement() {
    given(&granted_to_third())
        .when_registry(
            run("2027-04-01", "2027-04", None),
            &Citizens(vec![SECOND, THIRD]),
        )
        .then(|_, events| assert_eq!(not_a_member(events), (1, vec![])));
    given(&granted_to_third())
        .when_registry(run("2027-04-01", "2027-04", None), &Citizens(vec![SECOND]))
        .then(|b, events| {
            assert_eq!(events.len(), 1, "no instruction: {events:?}");
            assert_eq!(not_a_member(events), (0, vec![1]));
            assert!(!b.attempts.contains_key(&(1, m("2027-04"))));
        });
    let older = history_from(
        &granted_to_third(),
        &[grant(
            "2027-02-20",
            2,
            "2027-03",
            terms(ELDERLY_POOR, bank(), None),
        )],
    );
    given(&older)
        .when_registry(run("2027-04-01", "2027-04", None), &Citizens(vec![]))
        .then(|_, events| assert_eq!(not_a_member(events), (1, vec![1])));
}

/// A month instructed before the beneficiary left, and failed, is not paid again by a
/// reissue: the household they joined may pay it.
#[test]
fn a_month_of_a_beneficiary_who_left_the_household_is_not_reissued() {
    let h = history_from(
        &granted_to_third(),
        &[
            run("2027-04-01", "2027-04", None),
            Post::new(BANK, "pay:1:2027-04:1", Outcome::Failed, "F4", AMOUNT).on("2027-04-02"),
        ],
    );
    given(&h)
        .when_registry(
            reissue("2027-04-20", "pay:1:2027-04:1", None),
            &Citizens(vec![SECOND]),
        )
        .then_rejects(Rejection::BeneficiaryNotAMember {
            entitlement: 1,
            household: person(1).household,
        });
    given(&h)
        .when_registry(
            reissue("2027-04-20", "pay:1:2027-04:1", None),
            &Citizens(vec![THIRD]),
        )
        .then(|_, events| assert_eq!(events.len(), 1));
}

// ---------------------------------------------------------------- erasure

/// A registry where every household lives here and nobody died, and these households'
/// personal data were erased (which frees all their citizens).
struct ErasedHouseholds(Vec<HouseholdRef>);

impl RegistryFacts for ErasedHouseholds {
    fn resident(&self, _: &HouseholdRef, _: Month) -> bool {
        true
    }
    fn died_on(&self, _: &CitizenIndex) -> Option<NaiveDate> {
        None
    }
    fn is_member(&self, household: &HouseholdRef, _: &CitizenIndex) -> bool {
        !self.0.contains(household)
    }
    fn erased(&self, household: &HouseholdRef) -> bool {
        self.0.contains(household)
    }
}

/// Person 1's allowance granted to the citizen `THIRD` and person 2's to a member without
/// a citizen id (a child), both from March 2027, with April instructed and failed.
fn april_failed_for_two() -> Vec<Event> {
    history_from(
        &granted_to_third(),
        &[
            grant(
                "2027-02-20",
                2,
                "2027-03",
                terms(ELDERLY_POOR, bank(), None),
            ),
            run("2027-04-01", "2027-04", None),
            Post::new(BANK, "pay:1:2027-04:1", Outcome::Failed, "F1", AMOUNT).on("2027-04-02"),
            Post::new(BANK, "pay:2:2027-04:1", Outcome::Failed, "F2", AMOUNT)
                .of(2)
                .on("2027-04-02"),
        ],
    )
}

fn erased(events: &[Event]) -> (u64, Vec<u64>, Vec<u64>) {
    match events.last().map(|e| &e.body) {
        Some(EventBody::PaymentRunCompleted {
            issued,
            left_unpaid,
            ..
        }) => (
            *issued,
            left_unpaid.not_a_member.clone(),
            left_unpaid.erased.clone(),
        ),
        other => panic!("{other:?}"),
    }
}

/// Once a household's data are erased nobody of it can be identified as the payee: a run
/// pays none of its entitlements, a child's (no citizen id) as much as an adult's, and
/// names them `erased` for an officer to stop; other households are paid as before.
#[test]
fn a_run_pays_nobody_of_an_erased_household_and_names_its_entitlements() {
    let both = ErasedHouseholds(vec![person(1).household, person(2).household]);
    given(&april_failed_for_two())
        .when_registry(run("2027-05-01", "2027-05", None), &both)
        .then(|b, events| {
            assert_eq!(events.len(), 1, "no instruction: {events:?}");
            assert_eq!(erased(events), (0, vec![], vec![1, 2]));
            assert!(!b.attempts.contains_key(&(2, m("2027-05"))));
        });
    given(&april_failed_for_two())
        .when_registry(
            run("2027-05-01", "2027-05", None),
            &ErasedHouseholds(vec![person(2).household]),
        )
        .then(|_, events| assert_eq!(erased(events), (1, vec![], vec![2])));
}

/// A month instructed before the erasure, and failed, is not paid again by a reissue,
/// whether its beneficiary had a citizen id or not; nor is anyone of the household
/// granted anew.
#[test]
fn nobody_of_an_erased_household_is_reissued_or_granted() {
    let both = ErasedHouseholds(vec![person(1).household, person(2).household]);
    for instruction in ["pay:1:2027-04:1", "pay:2:2027-04:1"] {
        given(&april_failed_for_two())
            .when_registry(reissue("2027-04-20", instruction, None), &both)
            .then_rejects(Rejection::HouseholdErased {
                household: iid(instruction)
                    .entitlement
                    .try_into()
                    .map(person)
                    .unwrap()
                    .household,
            });
    }
    given(&april_failed_for_two())
        .when_registry(
            grant(
                "2027-04-20",
                3,
                "2027-05",
                terms(ELDERLY_POOR, bank(), None),
            ),
            &ErasedHouseholds(vec![person(3).household]),
        )
        .then_rejects(Rejection::HouseholdErased {
            household: person(3).household,
        });
}
