#[path = "common_domain/mod.rs"]
mod common;
use common::*;

use ansinh::domain::Rejection;
use ansinh::domain::eligibility::Status;
use ansinh::domain::ledger::{Account, Posting};
use ansinh::domain::loans::{Channel, CommandKind, EventBody, LoanBook, LoanStatus, apply, decide};
use ansinh::domain::money::{MAX_AMOUNT, round_dong};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

fn loan_cmd(date: &str, kind: CommandKind) -> ansinh::domain::loans::Command {
    cmd(date, kind)
}

/// Loan 1 frozen on `date` after the disaster of decision QD-123/UBND.
fn freeze(date: &str) -> ansinh::domain::loans::Command {
    loan_cmd(
        date,
        CommandKind::Freeze {
            loan: 1,
            disaster_ref: "QD-123/UBND".into(),
        },
    )
}

/// Loan 1 unfrozen on `date`, its due date moved to `new_due` if given.
fn unfreeze(date: &str, new_due: Option<&str>) -> ansinh::domain::loans::Command {
    loan_cmd(
        date,
        CommandKind::Unfreeze {
            loan: 1,
            new_due: new_due.map(d),
        },
    )
}

#[test]
fn approval_with_expired_class_refused() {
    given(&history(&[classify("2025-03-01", 1_200_000, POOR3, 2025)]))
        .when(approve("2026-01-05", "POOR_HOUSEHOLD", 10_000_000, 12))
        .then_rejects(Rejection::ClassificationExpired {
            valid_to: d("2025-12-31"),
        });
}

#[test]
fn approval_of_unknown_household_or_wrong_programme_refused() {
    given(&[])
        .when(approve("2025-01-05", "POOR_HOUSEHOLD", 10_000_000, 12))
        .then_rejects(Rejection::UnknownHousehold {
            household: hh().to_string(),
        });
    given(&history(&[classify(
        "2025-01-02",
        1_200_000,
        &POOR3[..2],
        2025,
    )]))
    .when(approve("2025-01-05", "POOR_HOUSEHOLD", 10_000_000, 12))
    .then_rejects(Rejection::NotEligible {
        status: Status::NearPoor,
        programme: "POOR_HOUSEHOLD".into(),
    });
}

#[test]
fn approval_within_terms_and_limits() {
    let h = history(&[classify("2025-01-02", 1_200_000, POOR3, 2025)]);
    given(&h)
        .when(approve("2025-01-05", "POOR_HOUSEHOLD", 100_000_001, 12))
        .then_rejects(Rejection::AmountOverCap {
            amount: dec!(100000001),
            cap: dec!(100000000),
        });
    given(&h)
        .when(approve("2025-01-05", "POOR_HOUSEHOLD", 10_000_000, 121))
        .then_rejects(Rejection::TermOutOfRange {
            term: 121,
            max: 120,
        });
    given(&h)
        .when(approve("2025-01-05", "POOR_HOUSEHOLD", 10_000_000, 0))
        .then_rejects(Rejection::TermOutOfRange { term: 0, max: 120 });
    given(&h)
        .when(approve("2025-01-05", "POOR_HOUSEHOLD", 100_000_000, 120))
        .then(|b, _| {
            let l = &b.loans[&1];
            assert_eq!(l.monthly_rate, dec!(0.0055));
            assert_eq!(l.overdue_monthly_rate, dec!(0.00715));
            assert_eq!(l.position.status, LoanStatus::Approved);
        });
}

#[test]
fn two_active_loans_of_one_programme_refused() {
    let h = history(&[
        classify("2025-01-02", 1_200_000, POOR3, 2025),
        approve("2025-01-05", "POOR_HOUSEHOLD", 10_000_000, 12),
    ]);
    given(&h)
        .when(approve("2025-01-06", "POOR_HOUSEHOLD", 5_000_000, 12))
        .then_rejects(Rejection::ActiveLoanExists { loan: 1 });
    // Another programme is fine.
    given(&h)
        .when(approve(
            "2025-01-06",
            "RURAL_CLEAN_WATER_SANITATION",
            20_000_000,
            60,
        ))
        .then(|b, _| assert_eq!(b.loans.len(), 2));
}

#[test]
fn escaped_household_gets_escaped_programme_only() {
    let h = history(&[
        classify("2025-01-02", 1_200_000, POOR3, 2025),
        classify("2025-11-15", 2_000_000, &[], 2026),
    ]);
    given(&h)
        .when(approve("2025-12-01", "POOR_HOUSEHOLD", 10_000_000, 12))
        .then_rejects(Rejection::NotEligible {
            status: Status::EscapedPoverty,
            programme: "POOR_HOUSEHOLD".into(),
        });
    given(&h)
        .when(approve(
            "2025-12-01",
            "ESCAPED_POVERTY_HOUSEHOLD",
            10_000_000,
            12,
        ))
        .then(|b, _| assert_eq!(b.loans[&1].monthly_rate, dec!(0.006875)));
    // A later above-the-line review keeps the 3-year window.
    let mut book = LoanBook::default();
    for e in &h {
        apply(&mut book, e);
    }
    let evs = decide(&book, classify("2026-11-20", 2_500_000, &[], 2027)).unwrap();
    apply(&mut book, &evs[0]);
    let s = &book.households[&hh()];
    assert_eq!(s.status, Status::AverageLivingStandard);
    assert_eq!(s.escaped_until, Some(d("2028-11-14")));
    assert_eq!(
        s.statuses_on(d("2026-12-01")).unwrap(),
        vec![Status::AverageLivingStandard, Status::EscapedPoverty]
    );
}

#[test]
fn amounts_validated() {
    let h = history(&[
        classify("2025-01-02", 1_200_000, POOR3, 2025),
        approve("2025-01-05", "POOR_HOUSEHOLD", 12_000_000, 12),
    ]);
    for (amount, r) in [
        (dec!(0), Rejection::ZeroAmount),
        (dec!(-5), Rejection::NegativeAmount { amount: dec!(-5) }),
        (dec!(10.5), Rejection::FractionalDong { amount: dec!(10.5) }),
        (
            Decimal::MAX,
            Rejection::AmountTooLarge {
                amount: Decimal::MAX,
                max: MAX_AMOUNT,
            },
        ),
    ] {
        given(&h)
            .when(loan_cmd(
                "2025-01-10",
                CommandKind::Disburse {
                    loan: 1,
                    amount,
                    channel: Channel::BankTransfer,
                },
            ))
            .then_rejects(r);
    }
}

#[test]
fn disbursement_in_tranches_up_to_approved() {
    let h = history(&[
        classify("2025-01-02", 1_200_000, POOR3, 2025),
        approve("2025-01-05", "POOR_HOUSEHOLD", 12_000_000, 12),
        disburse("2025-01-10", 1, 8_000_000),
    ]);
    given(&h)
        .when(disburse("2025-01-20", 1, 4_000_001))
        .then_rejects(Rejection::DisbursementOverApproved {
            approved: dec!(12000000),
            already: dec!(8000000),
            requested: dec!(4000001),
        });
    // 8 000 000 × 0.0055 × 10 / 30 = 14 666.67 → 14 667 posted, −0.33 carried.
    given(&h).when(disburse("2025-01-20", 1, 4_000_000)).then(|b, evs| {
        assert!(matches!(
            evs[0].body,
            EventBody::InterestAccrued { interest_posted, days: 10, .. } if interest_posted == dec!(14667)
        ));
        let p = &b.loans[&1].position;
        assert_eq!(p.principal, dec!(12000000));
        assert_eq!(p.due, Some(d("2026-01-10")), "schedule runs from the first tranche");
        assert_eq!(round_dong(p.carry_interest * dec!(3)), dec!(-1));
    });
}

/// A tranche is lent on the standing of its own date, as an approval is (and as `audit
/// anomalies` checks every disbursement): approved in December, it is refused in January
/// once the year's list has lapsed, and after a review lifted the household above the
/// programme's statuses; a new review that keeps it poor lets it through.
#[test]
fn a_tranche_is_refused_once_the_standing_no_longer_qualifies() {
    let approved = [
        classify("2025-01-10", 1_200_000, POOR3, 2025),
        approve("2025-12-20", "POOR_HOUSEHOLD", 50_000_000, 36),
    ];
    given(&history(&approved))
        .when(disburse("2026-01-05", 1, 50_000_000))
        .then_rejects(Rejection::ClassificationExpired {
            valid_to: d("2025-12-31"),
        });
    let mut lifted = approved.to_vec();
    lifted.push(classify("2025-12-28", 3_000_000, &[], 2026));
    given(&history(&lifted))
        .when(disburse("2026-01-05", 1, 50_000_000))
        .then_rejects(Rejection::NotEligible {
            status: Status::EscapedPoverty,
            programme: "POOR_HOUSEHOLD".into(),
        });
    let mut still_poor = approved.to_vec();
    still_poor.push(classify("2025-12-28", 1_200_000, POOR3, 2026));
    given(&history(&still_poor))
        .when(disburse("2026-01-05", 1, 50_000_000))
        .then(|b, _| assert_eq!(b.loans[&1].position.disbursed, dec!(50000000)));
}

/// A review dated before the household's latest decision would replace the newer
/// standing and take the newer class as its prior one: refused. One on the same day
/// (a correction) is recorded.
#[test]
fn a_review_dated_before_the_latest_decision_is_refused() {
    let h = history(&[classify("2026-03-01", 1_200_000, POOR3, 2026)]);
    given(&h)
        .when(classify("2026-02-01", 2_000_000, &[], 2026))
        .then_rejects(Rejection::ClassificationBackDated {
            latest: d("2026-03-01"),
            effective: d("2026-02-01"),
        });
    given(&h)
        .when(classify("2026-03-01", 1_200_000, &POOR3[..2], 2026))
        .then(|b, _| assert_eq!(b.households[&hh()].status, Status::NearPoor));
}

/// A carry of exactly -0.5 đồng (an accrual that posted x.5 up) meets an accrual with no
/// normal interest once the principal is overdue: it posts nothing, never -1 đồng.
#[test]
fn a_carry_of_minus_half_a_dong_never_posts_a_negative_amount() {
    // Disbursed on 6 February, due on 6 March (term: one month), overdue from the 7th:
    // 30 000 × 0.0055 × 29 / 30 = 159.5 → 160 posted, -0.5 carried, and the whole
    // principal moves to overdue.
    let h = history(&[
        classify("2025-01-02", 1_200_000, POOR3, 2025),
        approve("2025-02-05", "POOR_HOUSEHOLD", 10_000_000, 1),
        disburse("2025-02-06", 1, 30_000),
        cmd("2025-03-07", CommandKind::MarkOverdue { loan: 1 }),
    ]);
    let before = given(&h).book.loans[&1].position.clone();
    assert_eq!(before.carry_interest, dec!(-0.5));
    assert_eq!(
        (before.principal, before.overdue_principal),
        (dec!(0), dec!(30000))
    );
    given(&h)
        .when(cmd("2025-03-08", CommandKind::AccrueInterest { loan: 1 }))
        .then(|b, evs| {
            let EventBody::InterestAccrued {
                interest_posted,
                overdue_interest_posted,
                carry_interest_after,
                ref postings,
                ..
            } = evs[0].body
            else {
                panic!("an accrual: {evs:?}")
            };
            assert_eq!(interest_posted, dec!(0));
            assert_eq!(carry_interest_after, dec!(-0.5));
            // 30 000 × 0.00715 / 30 = 7.15 → 7.
            assert_eq!(overdue_interest_posted, dec!(7));
            assert!(ansinh::domain::ledger::balanced(postings), "{postings:?}");
            assert_eq!(b.loans[&1].position.carry_interest, dec!(-0.5));
        });
}

#[test]
fn repayment_pays_interest_first_then_principal() {
    given(&poor_loan_history())
        .when(repay("2025-02-10", 1, dec!(1068200)))
        .then_events(&[
            EventBody::InterestAccrued {
                loan: 1,
                from: d("2025-01-10"),
                to: d("2025-02-10"),
                days: 31,
                interest_exact: dec!(68200),
                overdue_interest_exact: dec!(0),
                interest_posted: dec!(68200),
                overdue_interest_posted: dec!(0),
                carry_interest_after: dec!(0),
                carry_overdue_interest_after: dec!(0),
                postings: vec![
                    Posting::debit(Account::InterestReceivable, dec!(68200)),
                    Posting::credit(Account::InterestIncome, dec!(68200)),
                ],
            },
            EventBody::RepaymentReceived {
                loan: 1,
                amount: dec!(1068200),
                to_interest: dec!(68200),
                to_overdue_interest: dec!(0),
                to_overdue_principal: dec!(0),
                to_principal: dec!(1000000),
                status_after: LoanStatus::Active,
                postings: vec![
                    Posting::debit(Account::CashAtCommunePoint, dec!(1068200)),
                    Posting::credit(Account::InterestReceivable, dec!(68200)),
                    Posting::credit(Account::LoanReceivable, dec!(1000000)),
                ],
            },
        ]);
}

#[test]
fn overpayment_refused_and_exact_payoff_closes() {
    let h = poor_loan_history();
    given(&h)
        .when(repay("2025-02-10", 1, dec!(12068201)))
        .then_rejects(Rejection::Overpayment {
            owed: dec!(12068200),
            offered: dec!(12068201),
        });
    given(&h)
        .when(repay("2025-02-10", 1, dec!(12068200)))
        .then(|b, _| {
            assert_eq!(b.loans[&1].position.status, LoanStatus::Closed);
            assert_eq!(b.loans[&1].position.owed(), dec!(0));
        });
}

#[test]
fn overdue_moves_only_the_overdue_part() {
    let h = [
        poor_loan_history(),
        // Instalment 1 (due 2025-02-10) paid on time with its interest.
        history_from(
            &poor_loan_history(),
            &[repay("2025-02-10", 1, dec!(1068200))],
        ),
    ]
    .concat();
    // On 2025-03-15 instalments of 02-10 and 03-10 are due (2 000 000); 1 000 000 paid.
    given(&h)
        .when(loan_cmd("2025-03-15", CommandKind::MarkOverdue { loan: 1 }))
        .then(|b, evs| {
            assert_eq!(evs.len(), 2);
            assert!(matches!(
                &evs[1].body,
                EventBody::MovedToOverdue { scheduled_due, amount, .. }
                    if *scheduled_due == dec!(2000000) && *amount == dec!(1000000)
            ));
            let p = &b.loans[&1].position;
            assert_eq!(
                (p.principal, p.overdue_principal),
                (dec!(10000000), dec!(1000000))
            );
            // The instalment of 03-10 is overdue from 03-11: interest at the normal rate
            // only to then, whatever day the job ran.
            assert!(matches!(
                &evs[0].body,
                EventBody::InterestAccrued { to, .. } if *to == d("2025-03-11")
            ));
            // Marking again moves nothing more; overdue principal now accrues at 130 %.
            let evs2 = decide(
                b,
                loan_cmd("2025-03-25", CommandKind::MarkOverdue { loan: 1 }),
            )
            .unwrap();
            assert_eq!(evs2.len(), 1);
            let EventBody::InterestAccrued {
                overdue_interest_exact,
                ..
            } = &evs2[0].body
            else {
                panic!()
            };
            // 1 000 000 × 0.00715 × 14 / 30: from 03-11, not from the job's 03-15.
            assert_eq!(overdue_interest_exact.round_dp(6), dec!(3336.666667));
        });
    // An instalment due on the as-of date itself is not yet overdue.
    given(&poor_loan_history())
        .when(loan_cmd("2025-02-10", CommandKind::MarkOverdue { loan: 1 }))
        .then(|_, evs| assert_eq!(evs.len(), 1, "only the accrual"));
}

/// An overdue job that did not run for months charges what a job run the day after each
/// due date charges: each instalment is overdue from the day after it fell due, not from
/// the day the job ran. Repeated on one date, the late job moves one instalment a command
/// until nothing more moves.
#[test]
fn a_late_overdue_job_charges_the_overdue_rate_from_each_due_date() {
    let mark = |date: &str| loan_cmd(date, CommandKind::MarkOverdue { loan: 1 });
    // Nothing repaid on 02-10, 03-10 or 04-10.
    let on_time = history_from(
        &poor_loan_history(),
        &[
            mark("2025-02-11"),
            mark("2025-03-11"),
            mark("2025-04-11"),
            mark("2025-04-25"),
        ],
    );
    let mut late = Vec::new();
    let mut book = given(&poor_loan_history()).book;
    loop {
        // The book refuses an empty decision as NothingToRecord.
        let evs = decide(&book, mark("2025-04-25")).unwrap();
        if evs.is_empty() {
            break;
        }
        for e in &evs {
            apply(&mut book, e);
        }
        late.extend(evs);
        assert!(
            late.len() <= 7,
            "the late job moves one instalment a command"
        );
    }
    let totals = |evs: &[ansinh::domain::loans::Event]| {
        let (mut interest, mut overdue_interest, mut moved) = (dec!(0), dec!(0), dec!(0));
        for e in evs {
            match &e.body {
                EventBody::InterestAccrued {
                    interest_posted,
                    overdue_interest_posted,
                    ..
                } => {
                    interest += interest_posted;
                    overdue_interest += overdue_interest_posted;
                }
                EventBody::MovedToOverdue { amount, .. } => moved += amount,
                _ => {}
            }
        }
        (interest, overdue_interest, moved)
    };
    let expected = totals(&on_time);
    assert_eq!(totals(&late), expected);
    assert_eq!(expected.2, dec!(3000000));
    // 1 000 000 overdue from 02-11 (28 days to 03-11), 2 000 000 from 03-11 (31 days to
    // 04-11), 3 000 000 from 04-11 (14 days to 04-25), at 0.715 % a month of 30 days.
    assert_eq!(expected.1, dec!(6673) + dec!(14777) + dec!(10010));
    let p = &book.loans[&1].position;
    assert_eq!(p.overdue_principal, dec!(3000000));
    assert_eq!(p.accrued_to, Some(d("2025-04-25")));
}

/// Events of `more` decided on top of `base` (returns only the new ones).
fn history_from(
    base: &[ansinh::domain::loans::Event],
    more: &[ansinh::domain::loans::Command],
) -> Vec<ansinh::domain::loans::Event> {
    let mut book = LoanBook::default();
    for e in base {
        apply(&mut book, e);
    }
    let mut out = Vec::new();
    for c in more {
        let evs = decide(&book, c.clone()).unwrap();
        for e in &evs {
            apply(&mut book, e);
        }
        out.extend(evs);
    }
    out
}

#[test]
fn repayment_reversal_restores_and_is_not_an_edit() {
    let base = poor_loan_history();
    let paid = history_from(&base, &[repay("2025-02-10", 1, dec!(1068200))]);
    let h = [base.clone(), paid.clone()].concat();
    let repayment_id = paid[1].id;
    given(&h)
        .when(loan_cmd(
            "2025-02-12",
            CommandKind::Reverse {
                loan: 1,
                event: repayment_id,
            },
        ))
        .then(|b, evs| {
            let EventBody::Reversed {
                original, postings, ..
            } = &evs[0].body
            else {
                panic!()
            };
            assert_eq!(*original, repayment_id);
            assert_eq!(
                postings[0],
                Posting::credit(Account::CashAtCommunePoint, dec!(1068200))
            );
            let p = &b.loans[&1].position;
            assert_eq!(p.principal, dec!(12000000));
            assert_eq!(p.interest_receivable, dec!(68200));
            assert_eq!(p.last_event_on, d("2025-02-12"));
            // Cannot reverse twice.
            assert_eq!(
                decide(
                    b,
                    loan_cmd(
                        "2025-02-12",
                        CommandKind::Reverse {
                            loan: 1,
                            event: repayment_id
                        }
                    )
                ),
                Err(Rejection::NotReversible {
                    event: repayment_id
                })
            );
        });
    // The original stays in history untouched; only the latest event can be reversed.
    let disb_id = base.last().unwrap().id;
    given(&h)
        .when(loan_cmd(
            "2025-02-12",
            CommandKind::Reverse {
                loan: 1,
                event: disb_id,
            },
        ))
        .then_rejects(Rejection::NotLatestEvent {
            event: disb_id,
            latest: Some(repayment_id),
        });
    given(&h)
        .when(loan_cmd(
            "2025-02-12",
            CommandKind::Reverse {
                loan: 1,
                event: 999,
            },
        ))
        .then_rejects(Rejection::UnknownEvent { event: 999 });
}

#[test]
fn disbursement_reversal_returns_loan_to_approved() {
    given(&poor_loan_history())
        .when(loan_cmd(
            "2025-01-10",
            CommandKind::Reverse { loan: 1, event: 3 },
        ))
        .then(|b, _| {
            let p = &b.loans[&1].position;
            assert_eq!(p.status, LoanStatus::Approved);
            assert_eq!((p.disbursed, p.accrued_to, p.due), (dec!(0), None, None));
        });
}

#[test]
fn extension_once_and_bounded() {
    let h = poor_loan_history();
    let ext = |date: &str| {
        loan_cmd(
            "2025-06-01",
            CommandKind::Extend {
                loan: 1,
                new_due: d(date),
            },
        )
    };
    given(&h)
        .when(ext("2027-01-11"))
        .then_rejects(Rejection::ExtensionTooLong {
            max_due: d("2027-01-10"),
            new_due: d("2027-01-11"),
        });
    given(&h)
        .when(ext("2026-01-10"))
        .then_rejects(Rejection::ExtensionNotLater {
            current_due: d("2026-01-10"),
            new_due: d("2026-01-10"),
        });
    let t = given(&h).when(ext("2027-01-10"));
    t.then(|b, _| {
        assert_eq!(b.loans[&1].position.due, Some(d("2027-01-10")));
        assert_eq!(
            decide(
                b,
                loan_cmd(
                    "2025-07-01",
                    CommandKind::Extend {
                        loan: 1,
                        new_due: d("2027-01-09")
                    }
                )
            ),
            Err(Rejection::AlreadyExtended)
        );
    });
}

/// The bank's rule: a loan of up to 12 months may be extended by up to 12 months past its
/// original due date, whatever its term; a longer loan by up to half its term.
#[test]
fn an_extension_is_bounded_by_twelve_months_or_half_a_longer_term() {
    let loan_of = |term: u32| {
        history(&[
            classify("2025-01-02", 1_200_000, POOR3, 2025),
            approve("2025-01-05", "POOR_HOUSEHOLD", 12_000_000, term),
            disburse("2025-01-10", 1, 12_000_000),
        ])
    };
    let ext = |new_due: &str| {
        loan_cmd(
            "2025-06-01",
            CommandKind::Extend {
                loan: 1,
                new_due: d(new_due),
            },
        )
    };
    // Six months, due 2025-07-10: twelve months more, not six.
    given(&loan_of(6))
        .when(ext("2026-07-10"))
        .then(|b, _| assert_eq!(b.loans[&1].position.due, Some(d("2026-07-10"))));
    given(&loan_of(6))
        .when(ext("2026-07-11"))
        .then_rejects(Rejection::ExtensionTooLong {
            max_due: d("2026-07-10"),
            new_due: d("2026-07-11"),
        });
    // Thirty-six months, due 2028-01-10: eighteen months more, not thirty-six.
    given(&loan_of(36))
        .when(ext("2029-07-10"))
        .then(|b, _| assert_eq!(b.loans[&1].position.due, Some(d("2029-07-10"))));
    given(&loan_of(36))
        .when(ext("2029-07-11"))
        .then_rejects(Rejection::ExtensionTooLong {
            max_due: d("2029-07-10"),
            new_due: d("2029-07-11"),
        });
    // Twenty-five months: half is twelve whole months.
    given(&loan_of(25))
        .when(ext("2028-02-11"))
        .then_rejects(Rejection::ExtensionTooLong {
            max_due: d("2028-02-10"),
            new_due: d("2028-02-11"),
        });
}

#[test]
fn freeze_stops_interest_and_write_off_clears_risk_debt() {
    let h = poor_loan_history();
    given(&h)
        .when(loan_cmd(
            "2025-02-10",
            CommandKind::Freeze {
                loan: 1,
                disaster_ref: " ".into(),
            },
        ))
        .then_rejects(Rejection::MissingDisasterReference);
    let frozen = history_from(&h, &[freeze("2025-02-10")]);
    let h2 = [h, frozen].concat();
    given(&h2)
        .when(loan_cmd(
            "2025-06-10",
            CommandKind::AccrueInterest { loan: 1 },
        ))
        .then_rejects(Rejection::WrongLoanStatus {
            loan: 1,
            status: LoanStatus::Frozen,
        });
    given(&h2)
        .when(loan_cmd(
            "2025-06-10",
            CommandKind::WriteOff {
                loan: 1,
                disaster_ref: "QD-456/TTg".into(),
            },
        ))
        .then(|b, evs| {
            assert_eq!(evs.len(), 1, "no accrual while frozen");
            assert_eq!(
                evs[0].postings()[0],
                Posting::debit(Account::WriteOffReserve, dec!(12068200))
            );
            let p = &b.loans[&1].position;
            assert_eq!((p.status, p.owed()), (LoanStatus::WrittenOff, dec!(0)));
        });
}

#[test]
fn back_dated_and_anonymous_commands_refused() {
    given(&poor_loan_history())
        .when(repay("2025-01-09", 1, dec!(1)))
        .then_rejects(Rejection::BackDated {
            last: d("2025-01-10"),
            effective: d("2025-01-09"),
        });
    let mut c = repay("2025-02-01", 1, dec!(1));
    c.actor = "".into();
    given(&poor_loan_history())
        .when(c)
        .then_rejects(Rejection::MissingActor);
}

#[test]
fn carried_remainder_leaks_nothing_over_many_postings() {
    // Odd principal so every daily accrual has a fraction of a đồng.
    let h = history(&[
        classify("2025-01-02", 1_200_000, POOR3, 2025),
        approve("2025-01-05", "POOR_HOUSEHOLD", 1_234_567, 24),
        disburse("2025-01-05", 1, 1_234_567),
    ]);
    let mut book = LoanBook::default();
    for e in &h {
        apply(&mut book, e);
    }
    // The instalments fall due unpaid and move to overdue on the day after (each
    // accrual moves them first), so both interests carry remainders; each carry keeps
    // its own sum within half a đồng.
    let (mut posted, mut exact, mut rounded_away) = (dec!(0), dec!(0), dec!(0));
    let mut date = d("2025-01-05");
    for _ in 0..700 {
        date = date.succ_opt().unwrap();
        let evs = decide(
            &book,
            cmd(&date.to_string(), CommandKind::AccrueInterest { loan: 1 }),
        )
        .unwrap();
        for e in &evs {
            match &e.body {
                EventBody::InterestAccrued {
                    interest_exact,
                    interest_posted,
                    overdue_interest_exact,
                    overdue_interest_posted,
                    ..
                } => {
                    posted += interest_posted + overdue_interest_posted;
                    exact += interest_exact + overdue_interest_exact;
                    rounded_away += (interest_exact - round_dong(*interest_exact)).abs()
                        + (overdue_interest_exact - round_dong(*overdue_interest_exact)).abs();
                }
                EventBody::MovedToOverdue {
                    surcharge_exact,
                    surcharge_posted,
                    ..
                } => {
                    posted += surcharge_posted;
                    exact += surcharge_exact;
                }
                _ => {}
            }
            apply(&mut book, e);
        }
    }
    assert!(
        (posted - round_dong(exact)).abs() <= dec!(1),
        "{posted} vs {exact}"
    );
    assert!(
        book.loans[&1].position.overdue_principal > dec!(1000000),
        "the instalments moved"
    );
    // Rounding each period on its own would have moved the total by this much.
    assert!(rounded_away > dec!(100), "{rounded_away}");
}

#[test]
fn reversal_cannot_reopen_a_second_loan_of_one_programme() {
    let base = poor_loan_history();
    let more = history_from(
        &base,
        &[
            repay("2025-02-10", 1, dec!(12068200)),
            approve("2025-02-11", "POOR_HOUSEHOLD", 5_000_000, 12),
        ],
    );
    let payoff = more[1].id;
    given(&[base, more].concat())
        .when(cmd(
            "2025-02-12",
            CommandKind::Reverse {
                loan: 1,
                event: payoff,
            },
        ))
        .then_rejects(Rejection::ActiveLoanExists { loan: 2 });
}

#[test]
fn a_reversal_of_another_loans_event_refused() {
    let base = poor_loan_history();
    let water = history_from(
        &base,
        &[
            approve("2025-01-11", "RURAL_CLEAN_WATER_SANITATION", 20_000_000, 60),
            disburse("2025-01-12", 2, 20_000_000),
        ],
    );
    let water_tranche = water.last().unwrap().id;
    let h = [base, water].concat();
    given(&h)
        .when(cmd(
            "2025-01-13",
            CommandKind::Reverse {
                loan: 1,
                event: water_tranche,
            },
        ))
        .then_rejects(Rejection::EventOfAnotherLoan {
            event: water_tranche,
            loan: 1,
        });
    given(&h)
        .when(cmd(
            "2025-01-13",
            CommandKind::Reverse {
                loan: 2,
                event: water_tranche,
            },
        ))
        .then(|b, _| assert_eq!(b.loans[&2].position.status, LoanStatus::Approved));
}

#[test]
fn repayment_pays_interest_then_overdue_interest_then_principal() {
    let base = poor_loan_history();
    // On 2025-03-15 the job moves two instalments (2 000 000), each from the day after it
    // fell due (one command each); on 04-09, before the third falls due, interest has
    // accrued on both parts.
    let behind = history_from(
        &base,
        &[
            loan_cmd("2025-03-15", CommandKind::MarkOverdue { loan: 1 }),
            loan_cmd("2025-03-15", CommandKind::MarkOverdue { loan: 1 }),
            loan_cmd("2025-04-09", CommandKind::AccrueInterest { loan: 1 }),
        ],
    );
    let h = [base, behind].concat();
    let p = &given(&h).book.loans[&1].position;
    // Interest: 12 000 000 × 0.55 % × 32/30 (to 02-11), 11 000 000 × 0.55 % × 28/30 (to
    // 03-11), 10 000 000 × 0.55 % × 29/30 (to 04-09): 70 400 + 56 467 + 53 166 (the
    // third of a đồng carried from the second).
    // Overdue: 1 000 000 × 0.715 % × 28/30, then 2 000 000 × 0.715 % × 29/30: 6 673 +
    // 13 824 (the third of a đồng carried from the first).
    assert_eq!(
        (p.interest_receivable, p.overdue_interest_receivable),
        (dec!(180033), dec!(20497))
    );
    // Less than both interests: the interest is paid whole, the overdue interest in part.
    given(&h)
        .when(repay("2025-04-09", 1, dec!(200000)))
        .then_events(&[EventBody::RepaymentReceived {
            loan: 1,
            amount: dec!(200000),
            to_interest: dec!(180033),
            to_overdue_interest: dec!(19967),
            to_overdue_principal: dec!(0),
            to_principal: dec!(0),
            status_after: LoanStatus::Active,
            postings: vec![
                Posting::debit(Account::CashAtCommunePoint, dec!(200000)),
                Posting::credit(Account::InterestReceivable, dec!(180033)),
                Posting::credit(Account::OverdueInterestReceivable, dec!(19967)),
            ],
        }]);
    // Then the overdue principal before the principal.
    given(&h)
        .when(repay("2025-04-09", 1, dec!(2300530)))
        .then(|_, evs| {
            assert!(matches!(
                &evs[0].body,
                EventBody::RepaymentReceived {
                    to_overdue_interest,
                    to_overdue_principal,
                    to_principal,
                    ..
                } if (*to_overdue_interest, *to_overdue_principal, *to_principal)
                    == (dec!(20497), dec!(2000000), dec!(100000))
            ));
        });
}

#[test]
fn an_approval_with_nothing_disbursed_is_cancelled_and_frees_its_programme() {
    let h = history(&[
        classify("2025-01-02", 1_200_000, POOR3, 2025),
        approve("2025-01-05", "POOR_HOUSEHOLD", 10_000_000, 12),
    ]);
    let cancel = |date: &str| loan_cmd(date, CommandKind::CancelApproval { loan: 1 });
    let cancelled = given(&h).when(cancel("2025-01-06"));
    cancelled
        .then_events(&[EventBody::ApprovalCancelled { loan: 1 }])
        .then(|b, _| {
            let l = &b.loans[&1];
            assert_eq!(l.position.status, LoanStatus::Cancelled);
            assert_eq!(l.position.owed(), dec!(0));
            // Nothing more happens to a cancelled loan: no money, no second cancellation.
            assert_eq!(
                decide(b, disburse("2025-01-07", 1, 1_000_000)),
                Err(Rejection::WrongLoanStatus {
                    loan: 1,
                    status: LoanStatus::Cancelled
                })
            );
            assert_eq!(
                decide(b, cancel("2025-01-07")),
                Err(Rejection::WrongLoanStatus {
                    loan: 1,
                    status: LoanStatus::Cancelled
                })
            );
        });
    // The household may be approved again in the programme the cancelled loan held.
    let after = [h.clone(), cancelled.events().to_vec()].concat();
    given(&after)
        .when(approve("2025-01-07", "POOR_HOUSEHOLD", 8_000_000, 12))
        .then(|b, _| assert_eq!(b.loans[&2].position.status, LoanStatus::Approved));
    // Not before the approval's own date.
    given(&h)
        .when(cancel("2025-01-04"))
        .then_rejects(Rejection::BackDated {
            last: d("2025-01-05"),
            effective: d("2025-01-04"),
        });
}

#[test]
fn an_approval_with_money_out_is_not_cancelled_until_the_tranche_is_reversed() {
    let base = poor_loan_history();
    let cancel = loan_cmd("2025-01-10", CommandKind::CancelApproval { loan: 1 });
    given(&base)
        .when(cancel.clone())
        .then_rejects(Rejection::WrongLoanStatus {
            loan: 1,
            status: LoanStatus::Active,
        });
    let disbursement = base.last().unwrap().id;
    let reversed = history_from(
        &base,
        &[loan_cmd(
            "2025-01-10",
            CommandKind::Reverse {
                loan: 1,
                event: disbursement,
            },
        )],
    );
    given(&[base, reversed].concat())
        .when(cancel)
        .then_events(&[EventBody::ApprovalCancelled { loan: 1 }]);
}

/// A later tranche is repaid over the months from its own date, not as if it had been
/// lent on the first tranche's date: a borrower who paid every instalment of the first
/// 6,000,000 owes nothing overdue the day after a second 6,000,000 is paid out.
#[test]
fn a_later_tranche_is_scheduled_from_its_own_date() {
    let start = history(&[
        classify("2025-01-02", 1_200_000, POOR3, 2025),
        approve("2025-01-05", "POOR_HOUSEHOLD", 12_000_000, 12),
        disburse("2025-01-10", 1, 6_000_000),
    ]);
    // Nothing repaid: of the first tranche 6 of 12 instalments (02-10 .. 07-10) are due,
    // 3,000,000; of the second none (its first falls on 08-15).
    given(&start)
        .when(disburse("2025-07-15", 1, 6_000_000))
        .then(|b, evs| {
            // The tranche first moves the six, each from the day after it fell due.
            let moved: Vec<_> = evs
                .iter()
                .filter_map(|e| match &e.body {
                    EventBody::MovedToOverdue { amount, .. } => Some(*amount),
                    _ => None,
                })
                .collect();
            assert_eq!(moved, vec![dec!(500000); 6]);
            assert!(matches!(
                &evs.last().unwrap().body,
                EventBody::TrancheDisbursed { amount, .. } if *amount == dec!(6000000)
            ));
            // The day after, nothing more is due.
            let next = decide(
                b,
                loan_cmd("2025-07-16", CommandKind::MarkOverdue { loan: 1 }),
            )
            .unwrap();
            assert!(
                !next
                    .iter()
                    .any(|e| matches!(e.body, EventBody::MovedToOverdue { .. })),
                "{next:?}"
            );
            // The schedule the console shows: the first tranche's 12 dates and the
            // second's 6 (08-15 .. 12-15, then the due date), summing to all that was lent.
            let schedule = b.loans[&1].schedule().unwrap();
            assert_eq!(schedule.len(), 12 + 5);
            assert_eq!(schedule.last().unwrap().2, dec!(12000000));
            assert_eq!(
                schedule.iter().map(|(_, due, _)| *due).sum::<Decimal>(),
                dec!(12000000)
            );
            let on = |date: &str| {
                schedule
                    .iter()
                    .find(|(d0, ..)| *d0 == d(date))
                    .map(|(_, due, _)| *due)
            };
            assert_eq!(on("2025-07-10"), Some(dec!(500000)));
            assert_eq!(on("2025-08-10"), Some(dec!(500000)));
            assert_eq!(on("2025-08-15"), Some(dec!(1000000)));
            assert_eq!(on("2026-01-10"), Some(dec!(1500000)));
        });
    // Each instalment of the first tranche paid on its date, with its interest: nothing
    // moves to overdue the day after the second tranche.
    let mut book = LoanBook::default();
    for e in &history(&[
        classify("2025-01-02", 1_200_000, POOR3, 2025),
        approve("2025-01-05", "POOR_HOUSEHOLD", 12_000_000, 12),
        disburse("2025-01-10", 1, 6_000_000),
    ]) {
        apply(&mut book, e);
    }
    let decided = |book: &mut LoanBook, c| {
        let evs = decide(book, c).unwrap();
        for e in &evs {
            apply(book, e);
        }
        evs
    };
    for month in ["02", "03", "04", "05", "06", "07"] {
        let date = format!("2025-{month}-10");
        let (interest, overdue) =
            ansinh::domain::loans::interest_owed_on(&book.loans[&1], d(&date)).unwrap();
        decided(
            &mut book,
            repay(&date, 1, interest + overdue + dec!(500000)),
        );
    }
    decided(&mut book, disburse("2025-07-15", 1, 6_000_000));
    let evs = decided(
        &mut book,
        loan_cmd("2025-07-16", CommandKind::MarkOverdue { loan: 1 }),
    );
    assert!(
        evs.iter()
            .all(|e| !matches!(e.body, EventBody::MovedToOverdue { .. })),
        "an up-to-date borrower is not overdue: {evs:?}"
    );
    assert_eq!(book.loans[&1].position.overdue_principal, dec!(0));
}

/// Money paid out on or after the loan's due date would be due, and overdue, the moment
/// it leaves: such a tranche is refused.
#[test]
fn a_tranche_on_or_after_the_due_date_is_refused() {
    let h = history(&[
        classify("2025-01-02", 1_200_000, POOR3, 2025),
        approve("2025-01-05", "POOR_HOUSEHOLD", 12_000_000, 3),
        disburse("2025-01-10", 1, 6_000_000),
    ]);
    given(&h)
        .when(disburse("2025-04-10", 1, 1_000_000))
        .then_rejects(Rejection::TrancheNotBeforeDue {
            due: d("2025-04-10"),
        });
    given(&h)
        .when(disburse("2025-04-09", 1, 1_000_000))
        .then(|b, _| assert_eq!(b.loans[&1].position.disbursed, dec!(7000000)));
}

/// A routine accrual (the overdue job finding nothing to move) does not take away the
/// chance to correct a mistaken repayment: the reversal also undoes the interest posted
/// since, and the next accrual prices those days again on the corrected balance.
#[test]
fn a_repayment_stays_reversible_across_accruals_that_followed_it() {
    let base = poor_loan_history();
    let paid = history_from(&base, &[repay("2025-02-10", 1, dec!(1068200))]);
    let accrued = history_from(
        &[base.clone(), paid.clone()].concat(),
        &[loan_cmd("2025-02-20", CommandKind::MarkOverdue { loan: 1 })],
    );
    assert_eq!(accrued.len(), 1, "only an accrual: nothing was due unpaid");
    let h = [base, paid.clone(), accrued.clone()].concat();
    let repayment = paid[1].id;
    given(&h)
        .when(loan_cmd(
            "2025-02-21",
            CommandKind::Reverse {
                loan: 1,
                event: repayment,
            },
        ))
        .then(|b, evs| {
            let EventBody::Reversed { postings, .. } = &evs[0].body else {
                panic!("{evs:?}")
            };
            // The repayment's postings and the accrual's, each reversed.
            let mut undone = paid[1].postings().to_vec();
            undone.extend_from_slice(accrued[0].postings());
            let undone: Vec<Posting> = undone.iter().map(Posting::reversed).collect();
            assert_eq!(postings, &undone);
            let p = &b.loans[&1].position;
            assert_eq!(p.principal, dec!(12000000));
            assert_eq!(p.interest_receivable, dec!(68200));
            assert_eq!(p.accrued_to, Some(d("2025-02-10")));
            // The next accrual prices from 02-10 on the restored 12,000,000, and moves the
            // instalment of 02-10, unpaid again, from 02-11.
            let next = decide(
                b,
                loan_cmd("2025-02-25", CommandKind::AccrueInterest { loan: 1 }),
            )
            .unwrap();
            assert!(matches!(
                next[0].body,
                EventBody::InterestAccrued { from, days: 1, interest_posted, .. }
                    if from == d("2025-02-10") && interest_posted == dec!(2200)
            ));
            assert!(matches!(
                next[1].body,
                EventBody::MovedToOverdue { amount, .. } if amount == dec!(1000000)
            ));
        });
    // A later event that is not an accrual still ends the chance, as before.
    let moved = history_from(
        &h,
        &[loan_cmd("2025-03-15", CommandKind::MarkOverdue { loan: 1 })],
    );
    assert!(matches!(moved[1].body, EventBody::MovedToOverdue { .. }));
    given(&[h, moved.clone()].concat())
        .when(loan_cmd(
            "2025-03-16",
            CommandKind::Reverse {
                loan: 1,
                event: repayment,
            },
        ))
        .then_rejects(Rejection::NotLatestEvent {
            event: repayment,
            latest: Some(moved[1].id),
        });
}

/// An extension is decided before the loan falls due; after that day the unpaid
/// principal is overdue, and a new due date already past would make no sense.
#[test]
fn an_extension_after_the_due_date_is_refused() {
    given(&poor_loan_history())
        .when(loan_cmd(
            "2026-01-11",
            CommandKind::Extend {
                loan: 1,
                new_due: d("2026-06-10"),
            },
        ))
        .then_rejects(Rejection::ExtensionAfterDue {
            due: d("2026-01-10"),
        });
    given(&poor_loan_history())
        .when(loan_cmd(
            "2026-01-10",
            CommandKind::Extend {
                loan: 1,
                new_due: d("2026-06-10"),
            },
        ))
        .then(|b, _| assert_eq!(b.loans[&1].position.due, Some(d("2026-06-10"))));
}

/// A freeze ends by a new event: interest accrues again from that day and never for the
/// days frozen; the due date may move on by at most the days frozen, and the instalments
/// not yet due when the loan was frozen with it (`a_freeze_suspends_the_schedule`).
#[test]
fn a_freeze_ends_and_interest_runs_again_from_that_day_only() {
    let h = poor_loan_history();
    let frozen = history_from(&h, &[freeze("2025-02-10")]);
    let h = [h, frozen].concat();
    // Frozen 2025-02-10 .. 2025-08-10: 181 days, so the due date 2026-01-10 may move on
    // to 2026-07-10 at most.
    given(&h)
        .when(unfreeze("2025-08-10", Some("2026-07-11")))
        .then_rejects(Rejection::ExtensionTooLong {
            max_due: d("2026-07-10"),
            new_due: d("2026-07-11"),
        });
    given(&h)
        .when(unfreeze("2025-08-10", Some("2026-07-10")))
        .then(|b, evs| {
            assert_eq!(evs.len(), 1, "no accrual for the days frozen");
            assert_eq!(evs[0].postings(), &[]);
            let p = &b.loans[&1].position;
            assert_eq!(p.status, LoanStatus::Active);
            assert_eq!(p.due, Some(d("2026-07-10")));
            assert_eq!(p.accrued_to, Some(d("2025-08-10")));
            // 27 days later: nothing for the 181 frozen days. The instalment of 02-10,
            // not yet due on the day of the freeze, moved on by them to 08-10, so it is
            // overdue from 08-11: one day on 12,000,000 at 0.55 % (2,200), the move, then
            // 26 days on 11,000,000 at 0.55 % (52,433) and 1,000,000 at 0.715 % (6,197).
            let next = decide(
                b,
                loan_cmd("2025-09-06", CommandKind::AccrueInterest { loan: 1 }),
            )
            .unwrap();
            assert!(matches!(
                next[0].body,
                EventBody::InterestAccrued { from, days: 1, interest_posted, .. }
                    if from == d("2025-08-10") && interest_posted == dec!(2200)
            ), "{next:?}");
            assert!(matches!(
                next[1].body,
                EventBody::MovedToOverdue { amount, surcharge_posted, .. }
                    if amount == dec!(1000000) && surcharge_posted.is_zero()
            ), "{next:?}");
            assert!(matches!(
                next[2].body,
                EventBody::InterestAccrued { days: 26, interest_posted, overdue_interest_posted, .. }
                    if interest_posted == dec!(52433) && overdue_interest_posted == dec!(6197)
            ), "{next:?}");
            // A second unfreeze is refused: the loan is no longer frozen.
            assert_eq!(
                decide(b, unfreeze("2025-09-09", None)),
                Err(Rejection::WrongLoanStatus {
                    loan: 1,
                    status: LoanStatus::Active,
                })
            );
        });
    given(&h)
        .when(unfreeze("2025-08-10", None))
        .then(|b, _| assert_eq!(b.loans[&1].position.due, Some(d("2026-01-10"))));
    // Only a frozen loan is unfrozen.
    given(&poor_loan_history())
        .when(unfreeze("2025-03-01", None))
        .then_rejects(Rejection::WrongLoanStatus {
            loan: 1,
            status: LoanStatus::Active,
        });
}

/// A freeze suspends the schedule: unfrozen with the due date moved on by the full days
/// frozen, every instalment not yet due on the day of the freeze moves on by as many days,
/// so the one that fell due during the freeze is not overdue the day the freeze ends. The
/// loan keeps its twelve instalments; a loan never frozen keeps its own dates.
#[test]
fn a_freeze_suspends_the_schedule() {
    let mark = |date: &str| loan_cmd(date, CommandKind::MarkOverdue { loan: 1 });
    let h = poor_loan_history();
    let more = history_from(
        &h,
        &[
            freeze("2025-02-10"),
            // 181 days frozen; the due date 2026-01-10 moves on as far.
            unfreeze("2025-08-10", Some("2026-07-10")),
        ],
    );
    let h = [h, more].concat();
    // The instalment of 2025-02-10, 181 days on, falls due on 2025-08-10 itself.
    given(&h).when(mark("2025-08-10")).then(|b, evs| {
        assert!(
            !evs.iter()
                .any(|e| matches!(e.body, EventBody::MovedToOverdue { .. })),
            "{evs:?}"
        );
        let schedule = b.loans[&1].schedule().unwrap();
        assert_eq!(schedule.len(), 12);
        assert_eq!(schedule[0], (d("2025-08-10"), dec!(1000000), dec!(1000000)));
        // 2025-03-10 + 181 days.
        assert_eq!(schedule[1].0, d("2025-09-07"));
        assert_eq!(
            schedule[11],
            (d("2026-07-10"), dec!(1000000), dec!(12000000))
        );
    });
    // From the day after its new date it is overdue, as from then.
    given(&h).when(mark("2025-08-11")).then(|b, evs| {
        assert!(
            matches!(
                evs,
                [
                    ansinh::domain::loans::Event {
                        body: EventBody::InterestAccrued { to, .. },
                        ..
                    },
                    ansinh::domain::loans::Event {
                        body: EventBody::MovedToOverdue { scheduled_due, amount, .. },
                        ..
                    },
                ] if *to == d("2025-08-11")
                    && *scheduled_due == dec!(1000000)
                    && *amount == dec!(1000000)
            ),
            "{evs:?}"
        );
        assert_eq!(b.loans[&1].position.overdue_principal, dec!(1000000));
    });
    // Unfrozen without a new due date, nothing moves: what fell due while frozen is
    // overdue at once.
    let frozen = &h[..h.len() - 1];
    let unfrozen = history_from(frozen, &[unfreeze("2025-08-10", None)]);
    given(&[frozen, &unfrozen[..]].concat())
        .when(mark("2025-08-10"))
        .then(|b, _| {
            let schedule = b.loans[&1].schedule().unwrap();
            assert_eq!(schedule[0].0, d("2025-02-10"));
            assert_eq!(schedule[11].0, d("2026-01-10"));
            // The instalments of 02-10 .. 07-10, as from the day the freeze ended.
            assert_eq!(b.loans[&1].position.overdue_principal, dec!(6000000));
        });
    // Never frozen: instalments on the 10th, 1,000,000 each.
    let book = given(&poor_loan_history()).book;
    let schedule = book.loans[&1].schedule().unwrap();
    assert_eq!(schedule.len(), 12);
    for (month, (on, principal, _)) in schedule.iter().enumerate() {
        let on_10th = d("2025-01-10")
            .checked_add_months(chrono::Months::new(month as u32 + 1))
            .unwrap();
        assert_eq!((*on, *principal), (on_10th, dec!(1000000)));
    }
}

/// An extension spreads anew only what falls due from its own date: the instalment of
/// 2025-02-10 was owed, unpaid, when the extension of 2025-02-20 was decided, so it is
/// overdue from 02-11 for its whole 1,000,000 whether or not the overdue job ran before
/// the extension.
#[test]
fn an_extension_keeps_what_fell_due_before_it() {
    let mark = |date: &str| loan_cmd(date, CommandKind::MarkOverdue { loan: 1 });
    let extend = loan_cmd(
        "2025-02-20",
        CommandKind::Extend {
            loan: 1,
            new_due: d("2027-01-10"),
        },
    );
    let h = poor_loan_history();
    let path_a = history_from(
        &h,
        &[mark("2025-02-11"), extend.clone(), mark("2025-02-21")],
    );
    let path_b = history_from(&h, &[extend, mark("2025-02-21")]);
    let overdue = |more: &[ansinh::domain::loans::Event]| {
        given(&[h.clone(), more.to_vec()].concat()).book.loans[&1]
            .position
            .overdue_principal
    };
    assert_eq!(overdue(&path_a), dec!(1000000));
    assert_eq!(overdue(&path_b), dec!(1000000));
    // The rest, 11,000,000, over the 23 instalments from 2025-03-10 to 2027-01-10.
    let book = given(&[h.clone(), path_b].concat()).book;
    let schedule = book.loans[&1].schedule().unwrap();
    assert_eq!(schedule.len(), 24);
    assert_eq!(schedule[0], (d("2025-02-10"), dec!(1000000), dec!(1000000)));
    assert_eq!(schedule[1], (d("2025-03-10"), dec!(478261), dec!(1478261)));
    assert_eq!(schedule[23].0, d("2027-01-10"));
    assert_eq!(schedule[23].2, dec!(12000000));
    // Extended before anything fell due, it spreads the whole tranche as before.
    let early = history_from(
        &h,
        &[loan_cmd(
            "2025-02-05",
            CommandKind::Extend {
                loan: 1,
                new_due: d("2027-01-10"),
            },
        )],
    );
    let book = given(&[h, early].concat()).book;
    let schedule = book.loans[&1].schedule().unwrap();
    assert_eq!(schedule.len(), 24);
    assert_eq!(schedule[0], (d("2025-02-10"), dec!(500000), dec!(500000)));
}

/// An overdue job that runs after interest was already priced past an instalment's due
/// date (here the month's accrual of 02-28) charges, on what it moves, the overdue rate's
/// excess over the normal rate for the days priced at the normal rate since it fell due.
/// Interest in all is then what a job run the day after the due date charges; the normal
/// rate's part for those days stays normal interest (it may have been paid already).
#[test]
fn a_move_after_interest_priced_past_the_due_date_charges_the_overdue_excess() {
    let mark = |date: &str| loan_cmd(date, CommandKind::MarkOverdue { loan: 1 });
    let accrue = |date: &str| loan_cmd(date, CommandKind::AccrueInterest { loan: 1 });
    let h = poor_loan_history();
    let on_time = history_from(&h, &[mark("2025-02-11"), accrue("2025-03-05")]);
    // Interest priced to 02-28 at the normal rate with the 02-10 instalment unpaid and
    // not moved: how a loan stands in a log recorded before every accrual moved what
    // fell due first (an accrual of 02-28 now moves it first, see
    // `arrears_cured_before_any_overdue_job_still_pay_the_overdue_rate`). A move
    // recorded now still charges the excess.
    let priced_past = ansinh::domain::loans::Event {
        id: h.last().unwrap().id + 1,
        actor: "officer-1".into(),
        reason: "month-end accrual".into(),
        effective: d("2025-02-28"),
        body: EventBody::InterestAccrued {
            loan: 1,
            from: d("2025-01-10"),
            to: d("2025-02-28"),
            days: 49,
            interest_exact: dec!(107800),
            overdue_interest_exact: dec!(0),
            interest_posted: dec!(107800),
            overdue_interest_posted: dec!(0),
            carry_interest_after: dec!(0),
            carry_overdue_interest_after: dec!(0),
            postings: vec![
                Posting::debit(Account::InterestReceivable, dec!(107800)),
                Posting::credit(Account::InterestIncome, dec!(107800)),
            ],
        },
    };
    let late = [
        vec![priced_past.clone()],
        history_from(
            &[h.clone(), vec![priced_past]].concat(),
            &[mark("2025-02-28"), accrue("2025-03-05")],
        ),
    ]
    .concat();
    let totals = |evs: &[ansinh::domain::loans::Event]| {
        let (mut interest, mut overdue_interest) = (dec!(0), dec!(0));
        for e in evs {
            match &e.body {
                EventBody::InterestAccrued {
                    interest_posted,
                    overdue_interest_posted,
                    ..
                } => {
                    interest += interest_posted;
                    overdue_interest += overdue_interest_posted;
                }
                EventBody::MovedToOverdue {
                    surcharge_posted, ..
                } => overdue_interest += surcharge_posted,
                _ => {}
            }
        }
        (interest, overdue_interest)
    };
    // On time: 12,000,000 for 32 days and 11,000,000 for 22 at 0.55 %; 1,000,000 overdue
    // from 02-11, 22 days at 0.715 % (5,243.33).
    assert_eq!(totals(&on_time), (dec!(70400) + dec!(44367), dec!(5243)));
    let moved = late
        .iter()
        .find_map(|e| match &e.body {
            EventBody::MovedToOverdue {
                amount,
                surcharge_exact,
                surcharge_posted,
                postings,
                ..
            } => Some((
                *amount,
                *surcharge_exact,
                *surcharge_posted,
                postings.clone(),
            )),
            _ => None,
        })
        .expect("the late job moves the instalment");
    // 1,000,000 × (0.715 % − 0.55 %) × 17 days (02-11 .. 02-27) / 30.
    assert_eq!(
        (moved.0, moved.1, moved.2),
        (dec!(1000000), dec!(935), dec!(935))
    );
    assert!(moved.3.contains(&Posting::debit(
        Account::OverdueInterestReceivable,
        dec!(935)
    )));
    assert!(
        moved
            .3
            .contains(&Posting::credit(Account::OverdueInterestIncome, dec!(935)))
    );
    // Late: 12,000,000 for 49 days and 11,000,000 for 5 at 0.55 %; the excess, then
    // 1,000,000 for 5 days at 0.715 % (1,191.67).
    assert_eq!(
        totals(&late),
        (dec!(107800) + dec!(10083), dec!(935) + dec!(1192))
    );
    let (i, o) = (totals(&on_time), totals(&late));
    assert_eq!(i.0 + i.1, o.0 + o.1, "the same interest in all");
    // The overdue part is less by the normal rate's 17 days on 1,000,000 (3,116.67),
    // posted as normal interest on 02-28: 3,116 after rounding.
    assert_eq!(i.1 - o.1, dec!(3116));
    let book = given(&[h.clone(), late].concat()).book;
    assert_eq!(
        book.loans[&1].position.overdue_interest_receivable,
        dec!(2127)
    );
    // The days a loan was frozen were never priced: an instalment that fell due while
    // frozen, moved the day the freeze ended without a new due date, is charged nothing
    // for them.
    let frozen = history_from(&h, &[freeze("2025-02-10"), unfreeze("2025-08-10", None)]);
    given(&[h, frozen].concat())
        .when(mark("2025-08-10"))
        .then(|_, evs| {
            assert!(
                matches!(
                    evs,
                    [ansinh::domain::loans::Event {
                        body: EventBody::MovedToOverdue {
                            amount,
                            surcharge_exact,
                            ..
                        },
                        ..
                    }] if *amount == dec!(6000000) && surcharge_exact.is_zero()
                ),
                "{evs:?}"
            );
        });
}

/// Overdue is the schedule's: a repayment that cures arrears before any overdue job ran
/// first moves what fell due, from the day after each due date, so the borrower pays the
/// overdue rate for the days they were late, as if the job had run on time. Both paths
/// charge the same interest and leave the same position.
#[test]
fn arrears_cured_before_any_overdue_job_still_pay_the_overdue_rate() {
    let mark = |date: &str| loan_cmd(date, CommandKind::MarkOverdue { loan: 1 });
    let accrue = |date: &str| loan_cmd(date, CommandKind::AccrueInterest { loan: 1 });
    let h = poor_loan_history();
    // Nothing repaid on 02-10 or 03-10; 2,500,000 repaid on 03-20.
    let payment = repay("2025-03-20", 1, dec!(2500000));
    let on_time = history_from(
        &h,
        &[
            mark("2025-02-11"),
            mark("2025-03-11"),
            payment.clone(),
            accrue("2025-04-05"),
        ],
    );
    let no_job = history_from(&h, &[payment, accrue("2025-04-05")]);
    let interest = |evs: &[ansinh::domain::loans::Event]| {
        let mut total = (dec!(0), dec!(0));
        for e in evs {
            match &e.body {
                EventBody::InterestAccrued {
                    interest_posted,
                    overdue_interest_posted,
                    ..
                } => {
                    total.0 += interest_posted;
                    total.1 += overdue_interest_posted;
                }
                EventBody::MovedToOverdue {
                    surcharge_posted, ..
                } => total.1 += surcharge_posted,
                _ => {}
            }
        }
        total
    };
    // 1,000,000 overdue from 02-11 (37 days to 03-20) and 1,000,000 from 03-11 (9 days),
    // at 0.715 % a month of 30 days: 8,818.33 + 2,145.
    assert_eq!(interest(&on_time).1, dec!(8818) + dec!(2145));
    assert_eq!(interest(&no_job), interest(&on_time));
    let position = |more: &[ansinh::domain::loans::Event]| {
        given(&[h.clone(), more.to_vec()].concat()).book.loans[&1]
            .position
            .clone()
    };
    assert_eq!(position(&no_job), position(&on_time));
    // The repayment took the overdue interest and both instalments first.
    let repaid = no_job
        .iter()
        .find_map(|e| match &e.body {
            EventBody::RepaymentReceived {
                to_overdue_interest,
                to_overdue_principal,
                ..
            } => Some((*to_overdue_interest, *to_overdue_principal)),
            _ => None,
        })
        .expect("the repayment is recorded");
    assert_eq!(repaid, (dec!(10963), dec!(2000000)));
    assert_eq!(position(&no_job).overdue_principal, dec!(0));
}

/// A repayment on an instalment's due date is on time: nothing moves.
#[test]
fn a_repayment_on_the_due_date_moves_nothing() {
    let h = poor_loan_history();
    let evs = history_from(&h, &[repay("2025-02-10", 1, dec!(1100000))]);
    assert!(
        !evs.iter()
            .any(|e| matches!(e.body, EventBody::MovedToOverdue { .. })),
        "{evs:?}"
    );
    let evs = history_from(&h, &[repay("2025-02-11", 1, dec!(1100000))]);
    let moved: Vec<_> = evs
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::MovedToOverdue { amount, .. } => Some(*amount),
            _ => None,
        })
        .collect();
    assert_eq!(
        moved,
        vec![dec!(1000000)],
        "a day late, the instalment is overdue"
    );
}

/// Cash paid out at a commune transaction point is brought from the branch for it: a cash
/// tranche funds the point's cash as a transfer is funded, then pays it out. So the
/// point's cash never goes below what it holds, the collections not yet handed in (it
/// read -12,000,000 after one cash tranche).
#[test]
fn a_cash_tranche_is_funded_so_the_points_cash_never_goes_negative() {
    let h = poor_loan_history();
    let tranche = h
        .iter()
        .find(|e| matches!(e.body, EventBody::TrancheDisbursed { .. }))
        .expect("the history pays a tranche out");
    assert_eq!(
        tranche.postings(),
        &[
            Posting::debit(Account::CashAtCommunePoint, dec!(12000000)),
            Posting::credit(Account::FundingSource, dec!(12000000)),
            Posting::debit(Account::LoanReceivable, dec!(12000000)),
            Posting::credit(Account::CashAtCommunePoint, dec!(12000000)),
        ]
    );
    let more = history_from(&h, &[repay("2025-02-10", 1, dec!(1068200))]);
    let cash: Decimal = h
        .iter()
        .chain(&more)
        .flat_map(|e| e.postings())
        .filter(|p| p.account == Account::CashAtCommunePoint)
        .map(|p| p.debit - p.credit)
        .sum();
    assert_eq!(cash, dec!(1068200), "the collection, held at the point");
    // A transfer is paid from the funding source straight away, as before.
    let by_transfer = history_from(
        &history(&[
            classify("2025-01-02", 1_200_000, POOR3, 2025),
            approve("2025-01-05", "POOR_HOUSEHOLD", 12_000_000, 12),
        ]),
        &[cmd(
            "2025-01-10",
            CommandKind::Disburse {
                loan: 1,
                amount: dec!(12000000),
                channel: Channel::BankTransfer,
            },
        )],
    );
    assert_eq!(
        by_transfer.last().unwrap().postings(),
        &[
            Posting::debit(Account::LoanReceivable, dec!(12000000)),
            Posting::credit(Account::FundingSource, dec!(12000000)),
        ]
    );
}

/// A loan is paid out in at most `TRANCHES_MAX` tranches: every command on a loan prices
/// the schedule of each of its tranches, so one loan of hundreds of tranches would hold up
/// its province's writer on each command.
#[test]
fn a_tranche_past_the_most_a_loan_may_have_is_refused() {
    use ansinh::domain::loans::TRANCHES_MAX;
    let first = d("2025-01-10");
    let mut commands = vec![
        classify("2025-01-02", 1_200_000, POOR3, 2025),
        approve("2025-01-05", "POOR_HOUSEHOLD", 48_000_000, 24),
    ];
    for day in 0..TRANCHES_MAX as u64 {
        let date = (first + chrono::Days::new(day)).to_string();
        commands.push(disburse(&date, 1, 1_000_000));
    }
    let h = history(&commands);
    let next = (first + chrono::Days::new(TRANCHES_MAX as u64)).to_string();
    given(&h)
        .when(disburse(&next, 1, 1_000_000))
        .then_rejects(Rejection::TooManyTranches {
            most: TRANCHES_MAX as u32,
        });
}

/// A loan frozen after its due date had every instalment fallen due: nothing was
/// suspended, so its unfreeze moves no due date (it used to move it by the days frozen,
/// leaving the old due date as an instalment of its own and spreading the tranche over
/// one more).
#[test]
fn an_unfreeze_of_a_loan_frozen_after_its_due_date_moves_no_due_date() {
    let h = [
        poor_loan_history(),
        history_from(&poor_loan_history(), &[freeze("2026-02-01")]),
    ]
    .concat();
    given(&h)
        .when(unfreeze("2026-03-01", Some("2026-02-07")))
        .then_rejects(Rejection::ExtensionTooLong {
            max_due: d("2026-01-10"),
            new_due: d("2026-02-07"),
        });
    given(&h)
        .when(unfreeze("2026-03-01", None))
        .then(|b, _| assert_eq!(b.loans[&1].position.due, Some(d("2026-01-10"))));
}

/// A published programme version is never edited, only followed by a new one: a loan
/// records the id and version it was approved under, and its later tranches and `audit
/// anomalies` read that version's terms again. So each version's terms are pinned here
/// (BLAKE3 of their JSON), and the file is kept byte for byte (`.gitattributes`). A new
/// version adds a line; a changed line is an edit of terms loans were approved under.
#[test]
fn published_programme_versions_never_change() {
    let attributes = include_str!("../.gitattributes");
    assert!(
        attributes.lines().any(
            |l| l.split_whitespace().collect::<Vec<_>>() == ["data/programmes/*.json", "-text"]
        ),
        "data/programmes/*.json is not marked -text in .gitattributes"
    );
    let pinned: Vec<(String, u32, String)> = ansinh::domain::programmes::programmes()
        .iter()
        .map(|p| {
            let terms = serde_json::to_vec(p).unwrap();
            (
                p.id.clone(),
                p.version,
                blake3::hash(&terms).to_hex().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, u32, String)> = [
        (
            "POOR_HOUSEHOLD",
            1,
            "365a18c2bb3c006c616b8e1a047996099826feaac0262a50338de30066add9da",
        ),
        (
            "NEAR_POOR_HOUSEHOLD",
            1,
            "713eb24be3e5d86f5dd9dc9e5b3735a3d3a09ef1bab2f29f18af95a5f01b939e",
        ),
        (
            "ESCAPED_POVERTY_HOUSEHOLD",
            1,
            "bb8c00d79b5765003a57bc96c1a08b6f78cae47915aab8e91b141113fb477958",
        ),
        (
            "RURAL_CLEAN_WATER_SANITATION",
            1,
            "5e644046c9defe4fad7ed6303ad8e5878e2cb86dda06b2b2bd190d83f10d06a2",
        ),
    ]
    .iter()
    .map(|(id, v, h)| (id.to_string(), *v, h.to_string()))
    .collect();
    assert_eq!(pinned, expected);
}
