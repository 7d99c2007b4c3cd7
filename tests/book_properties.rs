//! Property: random command sequences submitted through the real ledger (real
//! nats-server) keep every loan's outstanding >= 0, the books balanced at every
//! event, and projections rebuilt from the log equal to the incremental ones and to
//! a book folded independently from the log.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use ansinh::access::{Caller, Role};
use ansinh::book::{PartitionBook, loan_ref};
use ansinh::domain::eligibility::{Area, ClassificationInputs};
use ansinh::domain::ids::HouseholdId;
use ansinh::domain::loans::{Channel, EntrustedOrganisation};
use ansinh::personal::PersonalData;
use ansinh::projection::Projector;
use ansinh::proto::Envelope;
use ansinh::service::{LoanAction, Request, Service, ServiceError};
use chrono::{Days, NaiveDate};
use common::*;
use proptest::prelude::*;
use rust_decimal::Decimal;

/// Commands per case and cases per run: each case is a fresh stream on the shared
/// server, so keep both small enough for CI.
const COMMANDS_PER_CASE_MAX: usize = 40;
const CASES: u32 = 32;

#[derive(Clone, Debug)]
enum Op {
    Approve {
        household: u8,
        amount: i64,
    },
    Disburse {
        loan: u64,
        amount: i64,
    },
    Repay {
        loan: u64,
        amount: i64,
    },
    Overdue {
        loan: u64,
    },
    Freeze {
        loan: u64,
    },
    WriteOff {
        loan: u64,
    },
    CancelApproval {
        loan: u64,
    },
    Unfreeze {
        loan: u64,
    },
    Reverse {
        back: u64,
    },
    /// Days to move the business date forward.
    Wait {
        days: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let loan = 1u64..5;
    prop_oneof![
        (0u8..3, 1i64..=100).prop_map(|(household, amount)| Op::Approve { household, amount }),
        (loan.clone(), 1i64..=100).prop_map(|(loan, amount)| Op::Disburse { loan, amount }),
        (loan.clone(), 1i64..=100).prop_map(|(loan, amount)| Op::Repay { loan, amount }),
        loan.clone().prop_map(|loan| Op::Overdue { loan }),
        loan.clone().prop_map(|loan| Op::Freeze { loan }),
        loan.clone().prop_map(|loan| Op::WriteOff { loan }),
        loan.clone().prop_map(|loan| Op::CancelApproval { loan }),
        loan.clone().prop_map(|loan| Op::Unfreeze { loan }),
        (0u64..4).prop_map(|back| Op::Reverse { back }),
        (1u64..90).prop_map(|days| Op::Wait { days }),
    ]
}

fn household(n: u8) -> HouseholdId {
    HouseholdId::parse(&format!("0100007-{:06}", n + 1)).unwrap()
}

async fn run_case(ops: Vec<Op>) {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_at(&config, dir.path()).await;
    let vault = Arc::new(vault_for(&ledger, &dir.path().join("secrets")).await);
    let projector = Arc::new(Projector::of_store(ledger.store()).unwrap());
    let service = Service::new(ledger.clone(), vault, projector.clone());
    let manager = Caller {
        id: "staff:m".into(),
        role: Role::BranchManager,
        unit: "01".into(),
    };
    let mut key = 0u64;
    let mut next_key = || {
        key += 1;
        format!("k{key}")
    };
    fn rq<'a>(manager: &'a Caller, k: &'a str) -> Request<'a> {
        Request {
            caller: manager,
            idempotency_key: k,
            correlation_id: "prop",
            fingerprint: None,
        }
    }
    let mut date = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    for n in 0..3u8 {
        let data = PersonalData {
            head_name: format!("Hộ {n}"),
            head_citizen_id: format!("0010850000{n:02}"),
            phone: None,
            account_number: None,
            members: vec![],
        };
        let k = next_key();
        service
            .register(&rq(&manager, &k), &household(n), Area::Rural, date, &data)
            .await
            .unwrap();
        let k = next_key();
        let inputs = ClassificationInputs {
            income_per_person_month: Decimal::from(1_000_000),
            area: Area::Rural,
            deprived: ["employment", "nutrition", "drinking_water"]
                .iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<_>>(),
            review_year: 2026,
        };
        service
            .classify(&rq(&manager, &k), &household(n), inputs, date, None)
            .await
            .unwrap();
    }
    let mut money_events: Vec<(u64, u64)> = Vec::new();
    for op in ops {
        let (loan, action) = match op {
            Op::Wait { days } => {
                date = date.checked_add_days(Days::new(days)).unwrap();
                continue;
            }
            Op::Approve {
                household: h,
                amount,
            } => (
                None,
                LoanAction::Approve {
                    household: household(h),
                    programme: "POOR_HOUSEHOLD".into(),
                    amount: Decimal::from(amount * 1_000_000),
                    term_months: 24,
                    savings_group: "TK".into(),
                    entrusted: EntrustedOrganisation::FarmersUnion,
                },
            ),
            Op::Disburse { loan, amount } => (
                Some(loan),
                LoanAction::Disburse {
                    amount: Decimal::from(amount * 500_000),
                    channel: Channel::CommuneTransactionPoint,
                },
            ),
            Op::Repay { loan, amount } => (
                Some(loan),
                LoanAction::Repay {
                    amount: Decimal::from(amount * 137_000),
                },
            ),
            Op::Overdue { loan } => (Some(loan), LoanAction::MarkOverdue),
            Op::Freeze { loan } => (
                Some(loan),
                LoanAction::Freeze {
                    disaster_ref: "QĐ-1".into(),
                },
            ),
            Op::WriteOff { loan } => (
                Some(loan),
                LoanAction::WriteOff {
                    disaster_ref: "QĐ-1".into(),
                },
            ),
            Op::CancelApproval { loan } => (Some(loan), LoanAction::CancelApproval),
            Op::Unfreeze { loan } => (Some(loan), LoanAction::Unfreeze { new_due: None }),
            Op::Reverse { back } => {
                let Some(&(loan, sequence)) = money_events.iter().rev().nth(back as usize) else {
                    continue;
                };
                (Some(loan), LoanAction::Reverse { sequence })
            }
        };
        let reference = loan.map(|n| ansinh::input::loan_ref(&loan_ref("01", n)).unwrap());
        // The loan a money event is of, so a reversal names its own loan.
        let money_loan = match action {
            LoanAction::Disburse { .. } | LoanAction::Repay { .. } => loan,
            _ => None,
        };
        let k = next_key();
        match service
            .loan(&rq(&manager, &k), reference.as_ref(), action, date, "prop")
            .await
        {
            Ok(receipt) => {
                if let Some(loan) = money_loan {
                    money_events.push((loan, receipt.sequence));
                }
            }
            // Refusals are part of the property: they must append nothing and
            // leave the book consistent, which the checks below cover.
            Err(ServiceError::Rejected(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }

    // Fold the log independently of the writer and the projector.
    let mut stream = stream_of(&config).await;
    let mut book = PartitionBook::new("01");
    ansinh::verify::verify_with(
        &mut stream,
        &config,
        &keys_partition(),
        None,
        |_, env: &Envelope| {
            book.apply(env.sequence, env.actor.as_ref(), env.payload.as_ref());
        },
    )
    .await
    .unwrap();
    assert_eq!(book.unreadable, 0);
    assert_eq!(book.trial.total_debits(), book.trial.total_credits());
    for loan in book.loans.loans.values() {
        let p = &loan.position;
        for (name, v) in [
            ("principal", p.principal),
            ("overdue principal", p.overdue_principal),
            ("interest", p.interest_receivable),
            ("overdue interest", p.overdue_interest_receivable),
        ] {
            assert!(v >= Decimal::ZERO, "loan {} {name} {v}", loan.id);
        }
        assert!(p.disbursed <= loan.approved_amount);
    }

    let mut stream = stream_of(&config).await;
    projector.catch_up(&mut stream, &config).await.unwrap();
    let tb = projector.trial_balance("01").unwrap().unwrap_or_default();
    assert_eq!(tb.first_unbalanced_sequence, None);
    assert_eq!(tb.total_debits, tb.total_credits);
    // Every loan record of the projection equals the independently folded book's.
    let projected = projector.loans("01").unwrap();
    assert_eq!(projected.len(), book.loans.loans.len());
    for loan in &projected {
        assert_eq!(loan, &book.loans.loans[&loan.id]);
    }
    // Rebuilt projections equal the incremental ones.
    let incremental = projector.fingerprint().unwrap();
    projector.rebuild(&mut stream, &config).await.unwrap();
    assert_eq!(projector.fingerprint().unwrap(), incremental);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]
    #[test]
    fn random_commands_keep_the_books_sound(ops in prop::collection::vec(op(), 1..COMMANDS_PER_CASE_MAX)) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run_case(ops));
    }
}
