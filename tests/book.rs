//! Households, reviews and loans through the real ledger on a real nats-server:
//! rules decided in the partition writer, personal data sealed, erasure, moves,
//! access, projections equal after rebuild.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use ansinh::access::{Caller, Role};
use ansinh::book::{Command, PartitionBook, Proposal, codec};
use ansinh::domain::Rejection;
use ansinh::domain::eligibility::{Area, ClassificationInputs};
use ansinh::domain::ids::{CitizenId, HouseholdId};
use ansinh::domain::loans::{Channel, CommandKind, EntrustedOrganisation, LoanStatus};
use ansinh::domain::payments::instructions::LeftUnpaid;
use ansinh::domain::registry::Change;
use ansinh::log::{Ledger, LogConfig, Receipt};
use ansinh::personal::{Member, PersonalData, VaultError};
use ansinh::projection::Projector;
use ansinh::proto::{self, envelope::Payload};
use ansinh::service::{LoanAction, ReleaseClaimError, Request, Service, ServiceError};
use chrono::NaiveDate;
use common::*;
use rust_decimal::Decimal;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn hh(s: &str) -> HouseholdId {
    HouseholdId::parse(s).unwrap()
}

fn staff(role: Role, unit: &str) -> Caller {
    Caller {
        id: format!("staff:{}", role.name()),
        role,
        unit: unit.into(),
    }
}

/// Two ledger processes of one deployment on a fresh log: each with its own store, both
/// with the secrets file the deployment shares (kept in the returned directory).
async fn two_processes() -> (LogConfig, tempfile::TempDir, Service, Service) {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let a = service_at(&config, &dir.path().join("a"), &secrets).await;
    let b = service_at(&config, &dir.path().join("b"), &secrets).await;
    (config, dir, a, b)
}

/// A service over a fresh store in `dir`, with the secrets file shared by `secrets`
/// (two ledger processes of one deployment share it).
async fn service_at(config: &LogConfig, dir: &Path, secrets: &Path) -> Service {
    let ledger: Ledger = ledger_at(config, dir).await;
    let vault = Arc::new(vault_for(&ledger, secrets).await);
    let projector = Arc::new(Projector::of_store(ledger.store()).unwrap());
    Service::new(ledger, vault, projector)
}

struct World {
    config: LogConfig,
    service: Service,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let service = service_at(&config, &dir.path().join("a"), &dir.path().join("secrets")).await;
    World {
        config,
        service,
        _dir: dir,
    }
}

fn person(head_id: &str, member_id: Option<&str>) -> PersonalData {
    PersonalData {
        head_name: "Nguyễn Thị Hạnh".into(),
        head_citizen_id: head_id.into(),
        phone: Some("0912345678".into()),
        account_number: None,
        members: member_id
            .map(|id| Member {
                name: "Trần Văn Nam".into(),
                citizen_id: Some(id.into()),
                relation: "spouse".into(),
            })
            .into_iter()
            .collect(),
    }
}

/// A 2026 review that finds a rural household poor.
fn poor_inputs() -> ClassificationInputs {
    ClassificationInputs {
        income_per_person_month: Decimal::from(1_200_000),
        area: Area::Rural,
        deprived: ["employment", "nutrition", "drinking_water"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        review_year: 2026,
    }
}

fn rq<'a>(caller: &'a Caller, key: &'a str) -> Request<'a> {
    Request {
        caller,
        idempotency_key: key,
        correlation_id: "test",
        fingerprint: None,
    }
}

impl World {
    async fn register(&self, id: &str, data: &PersonalData) -> Result<Receipt, ServiceError> {
        let officer = staff(Role::CreditOfficer, "01");
        let h = hh(id);
        self.service
            .register(
                &rq(&officer, &format!("reg:{id}")),
                &h,
                Area::Rural,
                d("2026-01-05"),
                data,
            )
            .await
    }

    async fn classify_poor(&self, id: &str) -> Receipt {
        let officer = staff(Role::CreditOfficer, "01");
        let h = hh(id);
        self.service
            .classify(
                &rq(&officer, &format!("review:{id}")),
                &h,
                poor_inputs(),
                d("2026-01-10"),
                None,
            )
            .await
            .unwrap()
    }

    async fn loan(
        &self,
        caller: &Caller,
        key: &str,
        loan: Option<&str>,
        action: LoanAction,
        on: &str,
    ) -> Result<Receipt, ServiceError> {
        self.service
            .loan(
                &rq(caller, key),
                loan.map(|l| ansinh::input::loan_ref(l).unwrap()).as_ref(),
                action,
                d(on),
                "test",
            )
            .await
    }

    fn approve(id: &str) -> LoanAction {
        LoanAction::Approve {
            household: hh(id),
            programme: "POOR_HOUSEHOLD".into(),
            amount: Decimal::from(30_000_000),
            term_months: 36,
            savings_group: "TK-01".into(),
            entrusted: EntrustedOrganisation::WomensUnion,
        }
    }

    async fn events(&self) -> u64 {
        event_count(&self.config).await
    }

    async fn projector(&self) -> Arc<Projector> {
        let mut stream = stream_of(&self.config).await;
        self.service
            .projector
            .catch_up(&mut stream, &self.config)
            .await
            .unwrap();
        self.service.projector.clone()
    }
}

/// Of two racing outcomes exactly one succeeded; returns the other.
fn one_wins(outcomes: [&Result<Receipt, ServiceError>; 2]) -> &Result<Receipt, ServiceError> {
    assert_eq!(
        outcomes.iter().filter(|r| r.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
    outcomes.into_iter().find(|r| r.is_err()).unwrap()
}

fn refused(r: Result<Receipt, ServiceError>) -> Rejection {
    match r {
        Err(ServiceError::Rejected(rejection)) => rejection,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_citizen_cannot_be_in_two_households_and_a_refusal_appends_nothing() {
    let w = world().await;
    w.register(
        "0100007-000001",
        &person("001085012345", Some("001190000001")),
    )
    .await
    .unwrap();
    let before = w.events().await;
    // The spouse of household 1 appears as head of household 2.
    let r = refused(
        w.register("0100007-000002", &person("001190000001", None))
            .await,
    );
    assert_eq!(
        r,
        Rejection::CitizenAlreadyRegistered {
            household: "0100007-000001".into()
        }
    );
    // A citizen id of the wrong shape is refused before anything is sealed.
    let r = refused(
        w.register("0100007-000003", &person("00108501234", None))
            .await,
    );
    assert_eq!(r, Rejection::CitizenIdLength { found: 11 });
    assert_eq!(w.events().await, before);
    // No clear personal data in the log: the name and the citizen id appear nowhere.
    let mut stream = stream_of(&w.config).await;
    let mut clear = 0;
    ansinh::verify::verify_with(&mut stream, &w.config, &keys_partition(), None, |_, env| {
        let bytes = prost::Message::encode_to_vec(env);
        let text = String::from_utf8_lossy(&bytes);
        if text.contains("001085012345") || text.contains("Hạnh") {
            clear += 1;
        }
    })
    .await
    .unwrap();
    assert_eq!(clear, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_household_key_leaves_the_chain_verifiable() {
    let w = world().await;
    let h = hh("0100007-000001");
    let registered = w
        .register(h.as_str(), &person("001085012345", None))
        .await
        .unwrap();
    assert_eq!(
        w.service.personal(&h).await.unwrap().head_citizen_id,
        "001085012345"
    );
    let sealed_before = w.service.ledger.event_of(&registered).await.unwrap();
    let manager = staff(Role::BranchManager, "01");
    // A credit officer may not erase; a branch manager may.
    let officer = staff(Role::CreditOfficer, "01");
    let denied = w
        .service
        .erase_personal_data(&rq(&officer, "erase"), &h, d("2026-06-01"), "QĐ 1/2026", 1)
        .await;
    assert!(matches!(denied, Err(ServiceError::Denied(_))), "{denied:?}");
    w.service
        .erase_personal_data(&rq(&manager, "erase"), &h, d("2026-06-01"), "QĐ 1/2026", 1)
        .await
        .unwrap();
    assert!(matches!(
        w.service.personal(&h).await,
        Err(ServiceError::Vault(VaultError::Erased { .. }))
    ));
    // The chain still verifies, and the stored event is byte for byte what it was.
    let report = verified(&w.config).await;
    assert_eq!(report.events, 2);
    assert_eq!(
        w.service.ledger.event_of(&registered).await.unwrap(),
        sealed_before
    );
    let view = w.projector().await.household(h.as_str()).unwrap().unwrap();
    assert!(view.personal_data_erased);
    // A retried registration (same key) is answered with the first receipt, although
    // its data could no longer be sealed; a new registration of the erased household is
    // refused by the book, which refuses any household id it has seen. Neither appends
    // anything.
    let retried = w
        .register(h.as_str(), &person("001085012345", None))
        .await
        .unwrap();
    assert!(retried.duplicate);
    assert_eq!(
        (retried.sequence, retried.hash),
        (registered.sequence, registered.hash)
    );
    let officer = staff(Role::CreditOfficer, "01");
    let fresh = w
        .service
        .register(
            &rq(&officer, "reg-again"),
            &h,
            Area::Rural,
            d("2026-07-01"),
            &person("001085012345", None),
        )
        .await;
    assert!(
        matches!(
            fresh,
            Err(ServiceError::Rejected(Rejection::HouseholdExists { .. }))
        ),
        "{fresh:?}"
    );
    // And the household's data stays erased.
    assert!(matches!(
        w.service.personal(&h).await,
        Err(ServiceError::Vault(VaultError::Erased { .. }))
    ));
    assert_eq!(verified(&w.config).await.events, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writer_processes_racing_approvals_give_one_loan() {
    let (config, _dir, a, b) = two_processes().await;
    let w = World {
        config: config.clone(),
        service: a.clone(),
        _dir: tempfile::tempdir().unwrap(),
    };
    let id = "0100007-000001";
    w.register(id, &person("001085012345", None)).await.unwrap();
    w.classify_poor(id).await;
    let officer = staff(Role::CreditOfficer, "0100007");
    // Each process approves under its own key: a race, not a retry.
    let (req_a, req_b) = (rq(&officer, "approve-a"), rq(&officer, "approve-b"));
    let (ra, rb) = tokio::join!(
        a.loan(&req_a, None, World::approve(id), d("2026-02-02"), "a"),
        b.loan(&req_b, None, World::approve(id), d("2026-02-02"), "b")
    );
    let loser = one_wins([&ra, &rb]);
    assert!(
        matches!(
            loser,
            Err(ServiceError::Rejected(Rejection::ActiveLoanExists { .. }))
        ),
        "{loser:?}"
    );
    assert_eq!(verified(&config).await.events, 3);
}

/// A commune's monthly chart closes each month on the balances its own events left,
/// whatever order they were recorded in: a tranche dated in March recorded after
/// April's is March's, and April closes on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_communes_months_close_on_their_own_events_in_any_recording_order() {
    let w = world().await;
    let officer = staff(Role::CreditOfficer, "0100007");
    let teller = staff(Role::Teller, "0100007");
    let mut loans = Vec::new();
    for (n, id) in ["0100007-000001", "0100007-000002"].into_iter().enumerate() {
        w.register(id, &person(&format!("00108501234{n}"), None))
            .await
            .unwrap();
        w.classify_poor(id).await;
        let approved = w
            .loan(
                &officer,
                &format!("approve-{n}"),
                None,
                World::approve(id),
                "2026-02-02",
            )
            .await
            .unwrap();
        let Some(Payload::LoanApproved(a)) =
            w.service.ledger.event_of(&approved).await.unwrap().payload
        else {
            panic!("approval event");
        };
        loans.push(format!("01-L{}", a.loan_number));
    }
    // April's tranche first, then March's.
    for (loan, amount, on) in [
        (&loans[0], 10_000_000, "2026-04-05"),
        (&loans[1], 5_000_000, "2026-03-20"),
    ] {
        w.loan(
            &teller,
            &format!("disburse-{loan}"),
            Some(loan),
            LoanAction::Disburse {
                amount: Decimal::from(amount),
                channel: Channel::CommuneTransactionPoint,
            },
            on,
        )
        .await
        .unwrap();
    }
    let months = w.projector().await.commune_months("0100007", 12).unwrap();
    let closing: Vec<(&str, Decimal, Decimal)> = months
        .iter()
        .map(|m| (m.month.as_str(), m.disbursed, m.outstanding))
        .collect();
    assert_eq!(
        closing,
        [
            (
                "2026-03",
                Decimal::from(5_000_000),
                Decimal::from(5_000_000)
            ),
            (
                "2026-04",
                Decimal::from(10_000_000),
                Decimal::from(15_000_000)
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loan_year_keeps_books_balanced_and_refuses_what_it_must() {
    let w = world().await;
    let id = "0100007-000001";
    w.register(id, &person("001085012345", None)).await.unwrap();
    w.classify_poor(id).await;
    let officer = staff(Role::CreditOfficer, "0100007");
    let teller = staff(Role::Teller, "0100007");
    let other_teller = staff(Role::Teller, "0100014");
    let manager = staff(Role::BranchManager, "01");
    // A teller may not approve.
    assert!(matches!(
        w.loan(&teller, "t-approve", None, World::approve(id), "2026-02-02")
            .await,
        Err(ServiceError::Denied(_))
    ));
    let approved = w
        .loan(&officer, "approve", None, World::approve(id), "2026-02-02")
        .await
        .unwrap();
    let Some(Payload::LoanApproved(a)) =
        w.service.ledger.event_of(&approved).await.unwrap().payload
    else {
        panic!("approval event");
    };
    let loan = format!("01-L{}", a.loan_number);
    let amount = Decimal::from(30_000_000);
    w.loan(
        &teller,
        "disburse",
        Some(&loan),
        LoanAction::Disburse {
            amount,
            channel: Channel::CommuneTransactionPoint,
        },
        "2026-02-05",
    )
    .await
    .unwrap();
    // A teller of another commune may not collect on this loan.
    assert_eq!(
        refused(
            w.loan(
                &other_teller,
                "other",
                Some(&loan),
                LoanAction::Repay {
                    amount: Decimal::from(100_000)
                },
                "2026-03-20"
            )
            .await
        ),
        Rejection::OutsideUnit {
            unit: "0100014".into(),
            commune: "0100007".into()
        }
    );
    let repaid = w
        .loan(
            &teller,
            "repay-03",
            Some(&loan),
            LoanAction::Repay {
                amount: Decimal::from(1_000_000),
            },
            "2026-03-20",
        )
        .await
        .unwrap();
    // More than is owed is refused.
    let before = w.events().await;
    assert!(matches!(
        refused(
            w.loan(
                &teller,
                "repay-too-much",
                Some(&loan),
                LoanAction::Repay {
                    amount: Decimal::from(90_000_000)
                },
                "2026-04-20"
            )
            .await
        ),
        Rejection::Overpayment { .. }
    ));
    // A negative amount is refused too.
    assert!(matches!(
        refused(
            w.loan(
                &teller,
                "repay-negative",
                Some(&loan),
                LoanAction::Repay {
                    amount: Decimal::from(-5)
                },
                "2026-04-20"
            )
            .await
        ),
        Rejection::NegativeAmount { .. }
    ));
    assert_eq!(w.events().await, before);
    // The mistaken repayment is reversed by a new event, by a branch manager.
    w.loan(
        &manager,
        "reverse",
        Some(&loan),
        LoanAction::Reverse {
            sequence: repaid.sequence,
        },
        "2026-03-21",
    )
    .await
    .unwrap();
    // A move with an open loan is refused.
    let h = hh(id);
    let to = hh("7900007-000001");
    let moved = w
        .service
        .move_household(&rq(&officer, "move"), &h, &to, Area::Urban, d("2026-05-01"))
        .await;
    assert!(
        matches!(
            moved,
            Err(ServiceError::Rejected(Rejection::OpenLoans { .. }))
        ),
        "{moved:?}"
    );
    // Overdue: by 2026-11-30 instalments were due and nothing stands repaid. The
    // repayment of 03-20 moved the instalment of 03-05 first (the reversal took back
    // only the repayment). The job runs late: each other instalment moves from the day
    // after it fell due, one command each, then an accrual to the job's date closes the
    // run.
    let loan_ref = ansinh::input::loan_ref(&loan).unwrap();
    let req = rq(&manager, "overdue");
    let overdue = || {
        w.service
            .mark_overdue(&req, &loan_ref, d("2026-11-30"), "test")
    };
    let steps = overdue().await.unwrap();
    // 9 monthly instalments of an equal-principal 36-month schedule fell due before 30 Nov.
    let moved: Vec<Decimal> = steps.iter().filter_map(|(_, m)| *m).collect();
    assert_eq!(moved.len(), 8, "{steps:?}");
    assert_eq!(
        moved.iter().sum::<Decimal>(),
        Decimal::from(7_500_000 - 833_333)
    );
    assert_eq!(steps.len(), 9, "and the closing accrual");
    assert!(steps.iter().all(|(r, _)| !r.duplicate));
    // Run again for the same date: every step is found done, nothing is appended.
    let again = overdue().await.unwrap();
    assert_eq!(again.len(), 9);
    assert!(again.iter().all(|(r, _)| r.duplicate));
    assert_eq!(
        again.iter().map(|(r, _)| r.sequence).collect::<Vec<_>>(),
        steps.iter().map(|(r, _)| r.sequence).collect::<Vec<_>>()
    );
    let projector = w.projector().await;
    let tb = projector.trial_balance("01").unwrap().unwrap();
    assert_eq!(tb.total_debits, tb.total_credits);
    assert_eq!(tb.first_unbalanced_sequence, None);
    let loan_record = projector.loan("01", a.loan_number).unwrap().unwrap();
    assert_eq!(
        loan_record.position.overdue_principal,
        Decimal::from(7_500_000)
    );
    assert_eq!(
        loan_record.position.outstanding_principal(),
        Decimal::from(30_000_000)
    );
    let folio = projector.commune("0100007").unwrap().unwrap();
    assert_eq!(folio.outstanding, Decimal::from(30_000_000));
    assert_eq!(folio.overdue, Decimal::from(7_500_000));
    // Rebuilt projections equal the incremental ones.
    let before = projector.fingerprint().unwrap();
    let mut stream = stream_of(&w.config).await;
    projector.rebuild(&mut stream, &w.config).await.unwrap();
    assert_eq!(projector.fingerprint().unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversal_named_on_one_loan_never_reverses_another_loans_event() {
    let w = world().await;
    let (mine, theirs) = ("0100007-000001", "0100014-000001");
    for (id, citizen) in [(mine, "001085012345"), (theirs, "001085012346")] {
        w.register(id, &person(citizen, None)).await.unwrap();
        w.classify_poor(id).await;
    }
    let manager = staff(Role::BranchManager, "01");
    // Approved in this order, they are 01-L1 and 01-L2.
    for (id, loan) in [(mine, "01-L1"), (theirs, "01-L2")] {
        w.loan(
            &manager,
            &format!("approve:{id}"),
            None,
            World::approve(id),
            "2026-02-02",
        )
        .await
        .unwrap();
        w.loan(
            &manager,
            &format!("disburse:{id}"),
            Some(loan),
            LoanAction::Disburse {
                amount: Decimal::from(30_000_000),
                channel: Channel::CommuneTransactionPoint,
            },
            "2026-02-05",
        )
        .await
        .unwrap();
    }
    let theirs_repaid = w
        .loan(
            &manager,
            "repay:theirs",
            Some("01-L2"),
            LoanAction::Repay {
                amount: Decimal::from(1_000_000),
            },
            "2026-03-20",
        )
        .await
        .unwrap();
    let before = w.events().await;
    let named_on_mine = w
        .loan(
            &manager,
            "reverse:on-mine",
            Some("01-L1"),
            LoanAction::Reverse {
                sequence: theirs_repaid.sequence,
            },
            "2026-03-21",
        )
        .await;
    assert_eq!(
        refused(named_on_mine),
        Rejection::EventOfAnotherLoan {
            event: theirs_repaid.sequence,
            loan: 1
        }
    );
    assert_eq!(w.events().await, before);
    // A sequence past any the chain can reach is unknown, not another event: doubled,
    // 2^63 + 42 would wrap around to the domain id of sequence 42.
    let past_the_chain = 9_223_372_036_854_775_850;
    assert_eq!(
        refused(
            w.loan(
                &manager,
                "reverse:past-the-chain",
                Some("01-L2"),
                LoanAction::Reverse {
                    sequence: past_the_chain
                },
                "2026-03-21",
            )
            .await
        ),
        Rejection::UnknownEvent {
            event: past_the_chain
        }
    );
    assert_eq!(w.events().await, before);
    // Named on its own loan, the same event is reversed.
    w.loan(
        &manager,
        "reverse:on-theirs",
        Some("01-L2"),
        LoanAction::Reverse {
            sequence: theirs_repaid.sequence,
        },
        "2026-03-21",
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_household_moves_to_another_province_with_its_standing() {
    let w = world().await;
    let from = hh("0100007-000001");
    let to = hh("7900007-000042");
    w.register(from.as_str(), &person("001085012345", None))
        .await
        .unwrap();
    w.classify_poor(from.as_str()).await;
    let officer = staff(Role::CreditOfficer, "01");
    let request = Request {
        caller: &officer,
        idempotency_key: "move",
        correlation_id: "test",
        fingerprint: None,
    };
    let (out, arrived) = w
        .service
        .move_household(&request, &from, &to, Area::Urban, d("2026-05-01"))
        .await
        .unwrap();
    assert_eq!(
        (out.partition.as_str(), arrived.partition.as_str()),
        ("01", "79")
    );
    // Retrying the whole move appends nothing.
    let before = w.events().await;
    let again = w
        .service
        .move_household(&request, &from, &to, Area::Urban, d("2026-05-01"))
        .await
        .unwrap();
    assert!(again.0.duplicate && again.1.duplicate);
    assert_eq!(w.events().await, before);
    let projector = w.projector().await;
    let old = projector.household(from.as_str()).unwrap().unwrap();
    assert_eq!(old.residence, "moved_out");
    let new = projector.household(to.as_str()).unwrap().unwrap();
    assert_eq!(new.partition, "79");
    assert_eq!(new.standing.unwrap().status, "poor");
    // Its personal data moved with it, readable under the new id.
    assert_eq!(
        w.service.personal(&to).await.unwrap().head_citizen_id,
        "001085012345"
    );
    // The poor standing carried over: the new province can lend to it.
    let officer79 = staff(Role::CreditOfficer, "79");
    w.loan(
        &officer79,
        "approve-79",
        None,
        World::approve(to.as_str()),
        "2026-05-10",
    )
    .await
    .unwrap();
    assert_eq!(verified(&w.config).await.events, 5);
}

/// A move whose second half would be refused is refused whole: the move-out cannot be
/// taken back, and appended alone it would leave the household active nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_onto_a_registered_id_or_with_erased_data_appends_nothing() {
    let w = world().await;
    let from = hh("0100007-000001");
    register_in(&w.service, from.as_str(), &person("001085012345", None))
        .await
        .unwrap();
    register_in(&w.service, "7900007-000001", &person("079085000001", None))
        .await
        .unwrap();
    let officer = staff(Role::CreditOfficer, "01");
    let before = w.events().await;
    for to in ["7900007-000001", "0100007-000001"] {
        let r = w
            .service
            .move_household(
                &rq(&officer, &format!("move-{to}")),
                &from,
                &hh(to),
                Area::Urban,
                d("2026-05-01"),
            )
            .await;
        assert_eq!(
            refused(r.map(|(out, _)| out)),
            Rejection::HouseholdExists {
                household: to.into()
            }
        );
    }
    assert_eq!(w.events().await, before);
    let projector = w.projector().await;
    assert_eq!(
        projector
            .household(from.as_str())
            .unwrap()
            .unwrap()
            .residence,
        "active"
    );

    // Data that can no longer be opened cannot move either.
    let erased = hh("0100007-000002");
    register_in(&w.service, erased.as_str(), &person("001085022222", None))
        .await
        .unwrap();
    let manager = staff(Role::BranchManager, "01");
    w.service
        .erase_personal_data(
            &rq(&manager, "erase"),
            &erased,
            d("2026-04-01"),
            "QĐ 1/2026",
            1,
        )
        .await
        .unwrap();
    let before = w.events().await;
    let moved = w
        .service
        .move_household(
            &rq(&officer, "move-erased"),
            &erased,
            &hh("7900007-000077"),
            Area::Urban,
            d("2026-05-01"),
        )
        .await;
    assert!(moved.is_err(), "{moved:?}");
    assert_eq!(w.events().await, before);

    // To an id nobody holds, the same household moves.
    w.service
        .move_household(
            &rq(&officer, "move"),
            &from,
            &hh("7900007-000042"),
            Area::Urban,
            d("2026-05-01"),
        )
        .await
        .unwrap();
}

/// A member change retried after its event landed frees the members who left, though
/// the household's data no longer name them: a failure after the append (here, the
/// spouse's claim held again as if freeing it had failed) must not keep them claimed for
/// ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_member_change_frees_the_members_who_left() {
    let w = world().await;
    let h1 = hh("0100007-000001");
    register_in(
        &w.service,
        h1.as_str(),
        &person("001085012345", Some("001190000001")),
    )
    .await
    .unwrap();
    let officer = staff(Role::CreditOfficer, "01");
    let change = |key: &'static str| {
        let (service, officer, h1) = (&w.service, &officer, &h1);
        async move {
            service
                .change_members(
                    &rq(officer, key),
                    h1,
                    d("2026-03-01"),
                    "moved away",
                    &person("001085012345", None),
                )
                .await
        }
    };
    change("members").await.unwrap();
    let spouse_alone = person("001190000001", None);
    let elsewhere = || register_in(&w.service, "7900007-000001", &spouse_alone);
    let js = async_nats::jetstream::new(client().await);
    let claims = ansinh::claims::Claims::open(&js, &w.config.stream_name, 1)
        .await
        .unwrap();
    let spouse = w.service.vault.blind_index("001190000001");
    claims.claim(h1.as_str(), &[spouse]).await.unwrap();
    // Held in another province: refused without naming the household.
    assert_eq!(
        refused(elsewhere().await),
        Rejection::CitizenRegisteredOutsideUnit
    );
    let again = change("members").await.unwrap();
    assert!(again.duplicate);
    elsewhere().await.unwrap();
}

/// Registers `id` by a credit officer of its own province.
/// The household the claims name as holding `citizen`, read from the claims themselves:
/// a refusal names it only to staff of its own unit.
async fn holder_of(w: &World, citizen: &str) -> Option<String> {
    let js = async_nats::jetstream::new(client().await);
    ansinh::claims::Claims::open(&js, &w.config.stream_name, 1)
        .await
        .unwrap()
        .holder(&w.service.vault.blind_index(citizen))
        .await
        .unwrap()
}

async fn register_in(
    service: &Service,
    id: &str,
    data: &PersonalData,
) -> Result<Receipt, ServiceError> {
    let officer = staff(Role::CreditOfficer, &id[..2]);
    service
        .register(
            &rq(&officer, &format!("reg:{id}")),
            &hh(id),
            Area::Rural,
            d("2026-01-05"),
            data,
        )
        .await
}

async fn events_of(config: &LogConfig, partition: &str) -> usize {
    verified(config)
        .await
        .partitions
        .get(partition)
        .map_or(0, |p| p.events as usize)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_citizen_cannot_be_in_households_of_two_provinces() {
    let w = world().await;
    register_in(
        &w.service,
        "0100007-000001",
        &person("001085012345", Some("001190000001")),
    )
    .await
    .unwrap();
    // Hà Nội's spouse is registered as head in Hồ Chí Minh City: refused, without
    // naming the household (it is outside the officer's province), which holds the
    // citizen; partition 79 stays empty.
    let r = refused(register_in(&w.service, "7900007-000001", &person("001190000001", None)).await);
    assert_eq!(r, Rejection::CitizenRegisteredOutsideUnit);
    assert_eq!(
        holder_of(&w, "001190000001").await.as_deref(),
        Some("0100007-000001")
    );
    assert_eq!(events_of(&w.config, "79").await, 0);
    // A refusal of the book (an id registered twice) releases the claims it took: the
    // new member of the refused registration is free afterwards.
    register_in(&w.service, "7900007-000002", &person("079085000002", None))
        .await
        .unwrap();
    let officer = staff(Role::CreditOfficer, "79");
    let again = w
        .service
        .register(
            &rq(&officer, "reg:second-time"),
            &hh("7900007-000002"),
            Area::Rural,
            d("2026-01-05"),
            &person("079085000002", Some("079190000003")),
        )
        .await;
    assert!(matches!(again, Err(ServiceError::Rejected(_))), "{again:?}");
    register_in(&w.service, "9200007-000001", &person("079190000003", None))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_racing_one_citizen_into_two_provinces_register_one() {
    let (config, _dir, a, b) = two_processes().await;
    let (pa, pb) = (person("001085012345", None), person("001085012345", None));
    let (ra, rb) = tokio::join!(
        register_in(&a, "0100007-000001", &pa),
        register_in(&b, "7900007-000001", &pb)
    );
    let loser = one_wins([&ra, &rb]);
    assert!(
        matches!(
            loser,
            Err(ServiceError::Rejected(
                Rejection::CitizenAlreadyRegistered { .. }
                    | Rejection::CitizenRegisteredOutsideUnit
            ))
        ),
        "{loser:?}"
    );
    assert_eq!(verified(&config).await.events, 1);
}

/// A registration retried through a process whose log index has not caught up with its
/// first attempt claims its citizens again, and the writer answers it as a duplicate.
/// What the retry newly took was free, so the recorded registration does not hold it
/// (here the household was erased since): it is given back, not kept by an erased
/// household for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_answered_as_a_duplicate_gives_back_what_it_newly_claimed() {
    let (config, dir, a, b) = two_processes().await;
    let h = hh("0100007-000001");
    let data = person("001085012345", Some("001190000001"));
    let registered = register_in(&a, h.as_str(), &data).await.unwrap();
    let manager = staff(Role::BranchManager, "01");
    a.erase_personal_data(&rq(&manager, "erase"), &h, d("2026-06-01"), "QĐ 1/2026", 1)
        .await
        .unwrap();
    let retried = register_in(&b, h.as_str(), &data).await.unwrap();
    assert!(retried.duplicate);
    assert_eq!(
        (retried.sequence, retried.hash),
        (registered.sequence, registered.hash)
    );
    let w = World {
        config,
        service: a,
        _dir: dir,
    };
    for citizen in ["001085012345", "001190000001"] {
        assert_eq!(holder_of(&w, citizen).await, None, "{citizen}");
    }
    register_in(&w.service, "7900007-000001", &person("001190000001", None))
        .await
        .unwrap();
}

/// As above, with the freed member registered elsewhere before the retry: the retry's
/// claim of them is refused, and B's index does not hold the key of A's registration.
/// Its writer folds A's events before the refusal stands, and the retry gets its receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_through_a_lagging_process_gets_its_receipt_though_its_citizen_moved_on() {
    let (config, _dir, a, b) = two_processes().await;
    let h = hh("0100007-000001");
    let data = person("001085012345", Some("001190000001"));
    let registered = register_in(&a, h.as_str(), &data).await.unwrap();
    let manager = staff(Role::BranchManager, "01");
    a.erase_personal_data(&rq(&manager, "erase"), &h, d("2026-06-01"), "QĐ 1/2026", 1)
        .await
        .unwrap();
    register_in(&a, "7900007-000001", &person("001190000001", None))
        .await
        .unwrap();
    let retried = register_in(&b, h.as_str(), &data).await.unwrap();
    assert!(retried.duplicate);
    assert_eq!(
        (retried.sequence, retried.hash),
        (registered.sequence, registered.hash)
    );
    let claims = ansinh::claims::Claims::open(a.ledger.jetstream(), &config.stream_name, 1)
        .await
        .unwrap();
    let head = a.vault.blind_index("001085012345");
    assert_eq!(claims.holder(&head).await.unwrap(), None);
}

/// A death recorded through A, the household then erased: its retry through B, whose
/// index lags, can no longer open the data, and gets its receipt all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_death_retried_through_a_lagging_process_after_an_erasure_gets_its_receipt() {
    let (_config, _dir, a, b) = two_processes().await;
    let h = hh("0100007-000001");
    register_in(
        &a,
        h.as_str(),
        &person("001085012345", Some("001190000001")),
    )
    .await
    .unwrap();
    let officer = staff(Role::CreditOfficer, "01");
    let death = |service: &Service| {
        let (service, officer, h) = (service.clone(), officer.clone(), h.clone());
        async move {
            service
                .record_death(&rq(&officer, "death"), &h, "001190000001", d("2026-03-01"))
                .await
        }
    };
    let recorded = death(&a).await.unwrap();
    let manager = staff(Role::BranchManager, "01");
    a.erase_personal_data(&rq(&manager, "erase"), &h, d("2026-06-01"), "QĐ 1/2026", 1)
        .await
        .unwrap();
    let retried = death(&b).await.unwrap();
    assert!(retried.duplicate);
    assert_eq!(
        (retried.sequence, retried.hash),
        (recorded.sequence, recorded.hash)
    );
}

/// As above, with the retry landing while an erasure is under way: its event durable
/// and its citizens freed, its data key not destroyed yet (the order of an earlier
/// version's erasure, taken here by hand). The household's data still
/// open then, and still name the citizen; what the household holds is read from the log,
/// where it is erased, so the retry's claim is given back all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_during_an_erasure_gives_back_what_it_newly_claimed() {
    let (config, _dir, a, b) = two_processes().await;
    let h = hh("0100007-000001");
    let data = person("001085012345", None);
    register_in(&a, h.as_str(), &data).await.unwrap();
    // The erasure's first two steps: its event, then its citizens freed.
    a.ledger
        .submit(ansinh::log::Submission {
            partition: ansinh::chain::Partition::new("01").unwrap(),
            actor: proto::Actor {
                id: "staff:branch_manager".into(),
                role: Role::BranchManager.name().into(),
                unit: "01".into(),
            },
            idempotency_key: "erase".into(),
            correlation_id: String::new(),
            request_fingerprint: None,
            command: Command::Registry(Change::Erased {
                household: h.clone(),
                on: d("2026-06-01"),
                reference: "QĐ 1/2026".into(),
            }),
        })
        .await
        .unwrap();
    let claims = ansinh::claims::Claims::open(a.ledger.jetstream(), &config.stream_name, 1)
        .await
        .unwrap();
    let citizen = a.vault.blind_index("001085012345");
    claims.release(h.as_str(), &[citizen]).await.unwrap();
    assert!(a.personal(&h).await.is_ok(), "the key is not destroyed yet");
    let retried = register_in(&b, h.as_str(), &data).await.unwrap();
    assert!(retried.duplicate);
    assert_eq!(claims.holder(&citizen).await.unwrap(), None);
}

/// Family 2's first attempt to register under an id family 1 took claimed its citizen,
/// then died before its submit. Its retry (same key) is refused, takes nothing and so
/// gives nothing back: the citizen stays held by family 1's household, refused
/// everywhere. The operator's release frees them, and only them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_left_by_an_earlier_attempt_is_freed_by_the_operator() {
    let (config, _dir, a, _b) = two_processes().await;
    let h = hh("0100007-000123");
    register_in(&a, h.as_str(), &person("001085012345", None))
        .await
        .unwrap();
    let claims = ansinh::claims::Claims::open(a.ledger.jetstream(), &config.stream_name, 1)
        .await
        .unwrap();
    let family_2 = person("001190000001", None);
    let c2 = a.vault.blind_index("001190000001");
    claims.claim(h.as_str(), &[c2]).await.unwrap();
    let officer = staff(Role::CreditOfficer, "01");
    let retried = a
        .register(
            &rq(&officer, "family-2"),
            &h,
            Area::Rural,
            d("2026-01-05"),
            &family_2,
        )
        .await;
    assert!(
        matches!(
            retried,
            Err(ServiceError::Rejected(Rejection::HouseholdExists { .. }))
        ),
        "{retried:?}"
    );
    assert_eq!(
        claims.holder(&c2).await.unwrap().as_deref(),
        Some(h.as_str())
    );
    let elsewhere = "0100007-000124";
    assert!(matches!(
        refused(register_in(&a, elsewhere, &family_2).await),
        Rejection::CitizenAlreadyRegistered { household } if household == h.as_str()
    ));
    let citizen = |id: &str| CitizenId::parse(id).unwrap();
    // Not the household's to free when another holds it.
    let other = a
        .release_left_over_claim(&citizen("001190000001"), &hh(elsewhere))
        .await;
    assert!(
        matches!(&other, Err(ReleaseClaimError::NotHeld { holder: Some(holder), .. }) if holder == h.as_str()),
        "{other:?}"
    );
    a.release_left_over_claim(&citizen("001190000001"), &h)
        .await
        .unwrap();
    assert_eq!(claims.holder(&c2).await.unwrap(), None);
    let c1 = a.vault.blind_index("001085012345");
    assert_eq!(
        claims.holder(&c1).await.unwrap().as_deref(),
        Some(h.as_str())
    );
    register_in(&a, elsewhere, &family_2).await.unwrap();
}

/// The operator's release refuses a citizen the household's recorded events hold
/// (through a process that did not record them), and frees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_cannot_free_a_citizen_the_households_events_hold() {
    let (config, _dir, a, b) = two_processes().await;
    let h = hh("0100007-000001");
    register_in(
        &a,
        h.as_str(),
        &person("001085012345", Some("001190000001")),
    )
    .await
    .unwrap();
    let answer = b
        .release_left_over_claim(&CitizenId::parse("001190000001").unwrap(), &h)
        .await;
    assert!(
        matches!(&answer, Err(ReleaseClaimError::Recorded { household }) if household == h.as_str()),
        "{answer:?}"
    );
    let claims = ansinh::claims::Claims::open(a.ledger.jetstream(), &config.stream_name, 1)
        .await
        .unwrap();
    assert_eq!(
        claims
            .holder(&a.vault.blind_index("001190000001"))
            .await
            .unwrap()
            .as_deref(),
        Some(h.as_str())
    );
    assert!(matches!(
        refused(register_in(&b, "7900007-000001", &person("001190000001", None)).await),
        Rejection::CitizenRegisteredOutsideUnit
    ));
}

/// A give-back that fails is tried again; one that fails every time leaves the book's
/// refusal as the answer, never an error that says "retry" (whose retry would take
/// nothing and give nothing back), and the claim for the operator to free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_give_back_keeps_the_refusal() {
    let w = world().await;
    let h = hh("0100007-000123");
    w.register(h.as_str(), &person("001085012345", None))
        .await
        .unwrap();
    let officer = staff(Role::CreditOfficer, "01");
    let family_2 = person("001190000001", None);
    let attempt = |key: &'static str| {
        let (service, officer, h, family_2) = (&w.service, &officer, &h, &family_2);
        async move {
            service
                .register(&rq(officer, key), h, Area::Rural, d("2026-01-05"), family_2)
                .await
        }
    };
    let household_exists = |r: &Result<Receipt, ServiceError>| {
        matches!(
            r,
            Err(ServiceError::Rejected(Rejection::HouseholdExists { .. }))
        )
    };
    // One failure: the next try gives the claim back.
    w.service.fail_claim_releases(1).await.unwrap();
    let r = attempt("family-2").await;
    assert!(household_exists(&r), "{r:?}");
    assert_eq!(holder_of(&w, "001190000001").await, None);
    // Every try fails: the refusal all the same, the claim left held.
    let tries = ansinh::service::GIVE_BACK_ATTEMPTS_MAX as usize;
    w.service.fail_claim_releases(tries).await.unwrap();
    let r = attempt("family-2-again").await;
    assert!(household_exists(&r), "{r:?}");
    assert_eq!(
        holder_of(&w, "001190000001").await.as_deref(),
        Some(h.as_str())
    );
    w.service
        .release_left_over_claim(&CitizenId::parse("001190000001").unwrap(), &h)
        .await
        .unwrap();
    register_in(&w.service, "7900007-000001", &family_2)
        .await
        .unwrap();
}

/// A claims stream that could lose claims (here, one that allows deletes) refuses every
/// registration with a typed error an operator acts on, never one that says "retry":
/// retrying changes nothing until the stream is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_claims_stream_is_an_error_no_retry_fixes() {
    let config = fresh_log();
    let js = async_nats::jetstream::new(client().await);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: ansinh::claims::stream_name(&config.stream_name),
        subjects: vec![format!("ansinh.claims.{}.*", config.stream_name)],
        deny_delete: false,
        deny_purge: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = service_at(&config, &dir.path().join("a"), &dir.path().join("secrets")).await;
    let r = register_in(&service, "0100007-000001", &person("001085012345", None)).await;
    assert!(
        matches!(
            r,
            Err(ServiceError::Claims(ansinh::claims::ClaimError::Unsafe(_)))
        ),
        "{r:?}"
    );
    assert_eq!(event_count(&config).await, 0);
}

/// The personal data an event of the household sealed.
async fn sealed_at(service: &Service, receipt: &Receipt) -> Vec<u8> {
    match service.ledger.event_of(receipt).await.unwrap().payload {
        Some(Payload::HouseholdRegistered(p)) => p.sealed_personal.to_vec(),
        Some(Payload::HouseholdMembersChanged(p)) => p.sealed_personal.to_vec(),
        other => panic!("no sealed data in {other:?}"),
    }
}

/// A member change of a household this process cannot see yet (its registration in
/// flight through another) is refused before anything is sealed or claimed: sealed under
/// a fresh key, it could land right after the registration, and the erasure would
/// destroy that key only, the registration's data staying readable under its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_change_of_a_household_not_registered_yet_is_refused() {
    let (config, _dir, a, b) = two_processes().await;
    let h = hh("0100007-000050");
    let officer = staff(Role::CreditOfficer, "01");
    let changed = person("001085012345", Some("001190000009"));
    // B's claims publish nothing until the guard goes: a change that reached them would
    // wait there while A's registration lands.
    let guard = b.hold_claims().await.unwrap();
    let early = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        b.change_members(&rq(&officer, "chg"), &h, d("2026-02-01"), "birth", &changed),
    )
    .await
    .expect("answered without waiting on its claims");
    assert_eq!(
        refused(early),
        Rejection::HouseholdNotRegistered {
            household: h.to_string()
        }
    );
    assert_eq!(event_count(&config).await, 0);
    let registered = register_in(&a, h.as_str(), &person("001085012345", None))
        .await
        .unwrap();
    drop(guard);
    // The same change once the household is seen: sealed under the registration's key,
    // so one erasure makes both unreadable.
    let change = b
        .change_members(&rq(&officer, "chg"), &h, d("2026-02-01"), "birth", &changed)
        .await
        .unwrap();
    a.erase_personal_data(
        &rq(&staff(Role::BranchManager, "01"), "erase"),
        &h,
        d("2026-03-01"),
        "QĐ 2/2026",
        1,
    )
    .await
    .unwrap();
    for receipt in [&registered, &change] {
        let blob = sealed_at(&a, receipt).await;
        let opened = a.vault.open_sealed(h.as_str(), &blob).await;
        assert!(
            matches!(opened, Err(VaultError::Erased { .. })),
            "sequence {}: {:?}",
            receipt.sequence,
            opened.map(|_| "opened")
        );
    }
}

/// An erasure destroys the household's data key before it frees the citizens: a caller
/// that gives up while the claims are stalled leaves the data unreadable already, and
/// the erasure run again completes the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_destroys_the_key_before_it_frees_the_citizens() {
    let w = world().await;
    let h = hh("0100007-000001");
    w.register(h.as_str(), &person("001085012345", None))
        .await
        .unwrap();
    let manager = staff(Role::BranchManager, "01");
    let erase = |key: &'static str| {
        let (service, manager, h) = (&w.service, &manager, &h);
        async move {
            service
                .erase_personal_data(&rq(manager, key), h, d("2026-06-01"), "QĐ 1/2026", 1)
                .await
        }
    };
    let guard = w.service.hold_claims().await.unwrap();
    let gave_up = tokio::time::timeout(std::time::Duration::from_secs(5), erase("erase")).await;
    assert!(
        gave_up.is_err(),
        "the release waits on the claims: {gave_up:?}"
    );
    let personal = w.service.personal(&h).await;
    assert!(
        matches!(
            personal,
            Err(ServiceError::Vault(VaultError::Erased { .. }))
        ),
        "{:?}",
        personal.map(|_| "opened")
    );
    drop(guard);
    assert_eq!(
        refused(erase("erase-again").await),
        Rejection::AlreadyErased {
            household: h.to_string()
        }
    );
    assert_eq!(holder_of(&w, "001085012345").await, None);
    register_in(&w.service, "7900007-000001", &person("001085012345", None))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_follow_members_moves_and_erasure() {
    let w = world().await;
    let officer = staff(Role::CreditOfficer, "01");
    let h1 = hh("0100007-000001");
    register_in(
        &w.service,
        h1.as_str(),
        &person("001085012345", Some("001190000001")),
    )
    .await
    .unwrap();
    register_in(&w.service, "9200007-000001", &person("092085000009", None))
        .await
        .unwrap();
    // Adding a citizen of An Giang's household to Hà Nội's is refused and appends nothing.
    let before = w.events().await;
    let r = w
        .service
        .change_members(
            &rq(&officer, "members-1"),
            &h1,
            d("2026-03-01"),
            "marriage",
            &person("001085012345", Some("092085000009")),
        )
        .await;
    assert_eq!(refused(r), Rejection::CitizenRegisteredOutsideUnit);
    assert_eq!(
        holder_of(&w, "092085000009").await.as_deref(),
        Some("9200007-000001")
    );
    assert_eq!(w.events().await, before);
    // The spouse leaves household 1: she may head a household in another province.
    w.service
        .change_members(
            &rq(&officer, "members-2"),
            &h1,
            d("2026-03-01"),
            "moved away",
            &person("001085012345", None),
        )
        .await
        .unwrap();
    register_in(&w.service, "7900007-000001", &person("001190000001", None))
        .await
        .unwrap();
    // Household 1 moves to Hồ Chí Minh City under a new id: its head's claim moves too.
    let to = hh("7900007-000042");
    w.service
        .move_household(
            &rq(&officer, "move"),
            &h1,
            &to,
            Area::Urban,
            d("2026-05-01"),
        )
        .await
        .unwrap();
    let r = refused(register_in(&w.service, "9200007-000002", &person("001085012345", None)).await);
    assert_eq!(r, Rejection::CitizenRegisteredOutsideUnit);
    assert_eq!(
        holder_of(&w, "001085012345").await.as_deref(),
        Some(to.as_str())
    );
    // The household it was is not erased there: its data went, under the same key, to
    // the household it became, which lives on.
    let manager_01 = staff(Role::BranchManager, "01");
    let before = w.events().await;
    let r = w
        .service
        .erase_personal_data(
            &rq(&manager_01, "erase-old"),
            &h1,
            d("2026-06-01"),
            "QĐ 1/2026",
            1,
        )
        .await;
    assert_eq!(
        refused(r),
        Rejection::HouseholdMovedAway {
            household: h1.to_string(),
            to: to.to_string()
        }
    );
    assert_eq!(w.events().await, before);
    assert!(w.service.personal(&to).await.is_ok());
    // Erasure frees the citizen to be registered again, anywhere: in the province that
    // erased it too, whose book no longer names the erased household.
    let manager = staff(Role::BranchManager, "79");
    assert!(w.service.personal(&h1).await.is_ok());
    w.service
        .erase_personal_data(&rq(&manager, "erase"), &to, d("2026-06-01"), "QĐ 2/2026", 1)
        .await
        .unwrap();
    // The same people's data under the id they moved from is gone with it.
    assert!(
        matches!(
            w.service.personal(&h1).await,
            Err(ServiceError::Vault(
                ansinh::personal::VaultError::Erased { .. }
            ))
        ),
        "the data under the old id still opens"
    );
    register_in(&w.service, "7900007-000050", &person("001085012345", None))
        .await
        .unwrap();
    // An erased household takes no change of members: its citizens are free.
    let r = w
        .service
        .change_members(
            &rq(&officer, "members-erased"),
            &to,
            d("2026-07-01"),
            "marriage",
            &person("001085099999", None),
        )
        .await;
    assert!(r.is_err(), "{r:?}");
}

/// A move whose move-in appends nothing after its move-out landed (here the
/// destination's partition is stopped) gives the claims back to the household that moved
/// out, whose family the citizens still are: released to nobody, anyone could register
/// them elsewhere and the family's retry would be refused. The retry then completes the
/// move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_in_that_appends_nothing_gives_the_claims_back_to_the_household_moving() {
    let w = world().await;
    let (from, to) = (hh("0100007-000001"), hh("7900001-000001"));
    let citizens = ["001085012345", "001190000001"];
    register_in(
        &w.service,
        from.as_str(),
        &person(citizens[0], Some(citizens[1])),
    )
    .await
    .unwrap();
    let store = w.service.ledger.store();
    store
        .quarantine("79", "a test holds the partition")
        .unwrap();
    let officer = staff(Role::CreditOfficer, "01");
    let request = rq(&officer, "move");
    let stopped = w
        .service
        .move_household(&request, &from, &to, Area::Urban, d("2026-05-01"))
        .await;
    assert!(
        matches!(
            stopped,
            Err(ServiceError::Append(
                ansinh::log::AppendError::LostAcknowledgedData { .. }
            ))
        ),
        "{stopped:?}"
    );
    assert_eq!(events_of(&w.config, "79").await, 0);
    for citizen in citizens {
        assert_eq!(
            holder_of(&w, citizen).await.as_deref(),
            Some(from.as_str()),
            "{citizen}"
        );
    }
    assert_eq!(
        refused(register_in(&w.service, "9200007-000001", &person(citizens[1], None)).await),
        Rejection::CitizenRegisteredOutsideUnit
    );
    store.accept_stream_head("79").unwrap();
    let (out, arrived) = w
        .service
        .move_household(&request, &from, &to, Area::Urban, d("2026-05-01"))
        .await
        .unwrap();
    assert!(out.duplicate && !arrived.duplicate, "{out:?} {arrived:?}");
    for citizen in citizens {
        assert_eq!(
            holder_of(&w, citizen).await.as_deref(),
            Some(to.as_str()),
            "{citizen}"
        );
    }
    let projector = w.projector().await;
    let residence = |id: &HouseholdId| projector.household(id.as_str()).unwrap().unwrap().residence;
    assert_eq!(
        (residence(&from), residence(&to)),
        ("moved_out".to_owned(), "active".to_owned())
    );
}

/// The citizens an erasure frees are read from the log once its event is durable: those
/// of the household's last event recording its members before it, not those of data
/// read before the event (a member change landing in between would leave the citizen it
/// added held by the erased household for ever). That interleaving cannot be forced from
/// outside one call without a hook, so the event is appended here as the erasure's first
/// step would, after a member change added a citizen, and the data key destroyed, so
/// that nothing but the log can name the citizens; the erasure, called then, frees them
/// all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_frees_the_citizens_the_log_names_at_its_event() {
    let w = world().await;
    let h = hh("0100007-000001");
    let (head, added) = ("001085012345", "001190000001");
    register_in(&w.service, h.as_str(), &person(head, None))
        .await
        .unwrap();
    let officer = staff(Role::CreditOfficer, "01");
    let changed = w
        .service
        .change_members(
            &rq(&officer, "members"),
            &h,
            d("2026-03-01"),
            "marriage",
            &person(head, Some(added)),
        )
        .await
        .unwrap();
    assert_eq!(holder_of(&w, added).await.as_deref(), Some(h.as_str()));
    let manager = staff(Role::BranchManager, "01");
    w.service
        .ledger
        .submit(ansinh::log::Submission {
            partition: ansinh::chain::Partition::new("01").unwrap(),
            actor: proto::Actor {
                id: manager.id.clone(),
                role: manager.role.name().into(),
                unit: manager.unit.clone(),
            },
            idempotency_key: "erase-event".into(),
            correlation_id: String::new(),
            request_fingerprint: None,
            command: Command::Registry(Change::Erased {
                household: h.clone(),
                on: d("2026-06-01"),
                reference: "QĐ 1/2026".into(),
            }),
        })
        .await
        .unwrap();
    let Some(Payload::HouseholdMembersChanged(sealed)) =
        w.service.ledger.event_of(&changed).await.unwrap().payload
    else {
        panic!("a member change");
    };
    w.service
        .vault
        .erase_sealed(h.as_str(), Some(&sealed.sealed_personal), 1)
        .await
        .unwrap();
    let r = w
        .service
        .erase_personal_data(&rq(&manager, "erase"), &h, d("2026-06-01"), "QĐ 1/2026", 1)
        .await;
    assert_eq!(
        refused(r),
        Rejection::AlreadyErased {
            household: h.to_string()
        }
    );
    for citizen in [head, added] {
        assert_eq!(holder_of(&w, citizen).await, None, "{citizen}");
    }
    register_in(&w.service, "7900007-000001", &person(added, None))
        .await
        .unwrap();
}

/// Data sealed before data keys were pooled has a key per household id: a move seals
/// the new household's data under a key of its own. Erasing where the household lives
/// now erases the data under every id it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_after_a_move_reaches_data_sealed_under_a_key_of_its_own() {
    let w = world().await;
    let old = hh("0100007-000077");
    let data = person("001085077777", None);
    // A registration as the ledger recorded them before pooled keys.
    let sealed = w.service.vault.seal(old.as_str(), &data).await.unwrap();
    w.service
        .ledger
        .submit(ansinh::log::Submission {
            partition: ansinh::chain::Partition::new("01").unwrap(),
            actor: proto::Actor {
                id: "staff:credit_officer".into(),
                role: "credit-officer".into(),
                unit: "01".into(),
            },
            idempotency_key: "reg:old-format".into(),
            correlation_id: String::new(),
            request_fingerprint: None,
            command: Command::Registry(Change::Registered {
                household: old.clone(),
                area: Area::Rural,
                members: 1,
                citizens: vec![w.service.vault.blind_index("001085077777")],
                sealed: sealed.clone(),
                on: d("2026-01-05"),
            }),
        })
        .await
        .unwrap();
    let to = hh("7900007-000077");
    let officer = staff(Role::CreditOfficer, "01");
    w.service
        .move_household(
            &rq(&officer, "move-77"),
            &old,
            &to,
            Area::Urban,
            d("2026-05-01"),
        )
        .await
        .unwrap();
    assert!(w.service.personal(&old).await.is_ok());
    w.service
        .erase_personal_data(
            &rq(&staff(Role::BranchManager, "79"), "erase-77"),
            &to,
            d("2026-06-01"),
            "QĐ 7/2026",
            1,
        )
        .await
        .unwrap();
    for id in [&old, &to] {
        assert!(
            matches!(
                w.service.personal(id).await,
                Err(ServiceError::Vault(VaultError::Erased { .. }))
            ),
            "{id}'s data still opens"
        );
    }
}

/// Closes a process's service: its writers finish and save their books, and the store
/// is released for the next process over the same directory.
async fn close(service: Service) {
    let ledger = service.ledger.clone();
    drop(service);
    ledger.close().await.unwrap();
}

/// The service of a reopened process over the same store directory.
async fn reopened(w: World, dir: &Path, secrets: &Path) -> World {
    close(w.service).await;
    World {
        service: service_at(&w.config, dir, secrets).await,
        config: w.config,
        _dir: w._dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_writer_starts_from_its_book_snapshot_and_never_trusts_a_wrong_one() {
    use ansinh::chain::Digest;
    use ansinh::log::{HeadRecord, snapshot};
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let (store_dir, secrets) = (dir.path().join("a"), dir.path().join("secrets"));
    let w = World {
        service: service_at(&config, &store_dir, &secrets).await,
        config,
        _dir: dir,
    };
    let id = "0100007-000001";
    w.register(id, &person("001085012345", None)).await.unwrap();
    w.classify_poor(id).await;
    let officer = staff(Role::CreditOfficer, "0100007");
    let teller = staff(Role::Teller, "0100007");
    w.loan(&officer, "approve", None, World::approve(id), "2026-02-02")
        .await
        .unwrap();
    // Closing keeps the book: the snapshot names the head it was taken at.
    let sled_dir = store_dir.join("ledger.sled");
    let w = reopened(w, &store_dir, &secrets).await;
    let (at, book) = snapshot::load(&sled_dir, "01")
        .unwrap()
        .expect("a snapshot");
    assert_eq!((at.sequence, book.loans.loans.len()), (3, 1));
    // The reopened writer decides on it: the loan is known, a second one refused.
    w.loan(
        &teller,
        "disburse",
        Some("01-L1"),
        LoanAction::Disburse {
            amount: Decimal::from(30_000_000),
            channel: Channel::CommuneTransactionPoint,
        },
        "2026-02-05",
    )
    .await
    .unwrap();
    assert!(matches!(
        refused(
            w.loan(
                &officer,
                "approve-2",
                None,
                World::approve(id),
                "2026-02-06"
            )
            .await
        ),
        Rejection::ActiveLoanExists { .. }
    ));
    // A snapshot equals the fold from genesis (what `audit rebuild-check` compares).
    let w = reopened(w, &store_dir, &secrets).await;
    let stream = stream_of(&w.config).await;
    let checks = snapshot::check_all(&sled_dir, &stream, &w.config.subject_prefix)
        .await
        .unwrap();
    assert_eq!(checks.len(), 1);
    assert_eq!((checks[0].sequence, &checks[0].difference), (4, &None));

    // A snapshot whose position is not on the chain (a wrong hash) and that holds a
    // book without the loan: trusted, it would refuse the repayment below.
    let (at, _) = snapshot::load(&sled_dir, "01").unwrap().unwrap();
    let mut empty = ansinh::book::PartitionBook::new("01");
    empty.sequence = at.sequence;
    let wrong = HeadRecord {
        hash: Digest([9; 32]),
        ..at
    };
    close(w.service).await;
    snapshot::save(
        &sled_dir,
        "01",
        &wrong,
        &ansinh::book::snapshot::encode(&empty),
    )
    .unwrap();
    let w = World {
        service: service_at(&w.config, &store_dir, &secrets).await,
        config: w.config,
        _dir: w._dir,
    };
    let repay = LoanAction::Repay {
        amount: Decimal::from(100_000),
    };
    w.loan(
        &teller,
        "repay-1",
        Some("01-L1"),
        repay.clone(),
        "2026-03-02",
    )
    .await
    .unwrap();
    // Damaged bytes: discarded, folded from genesis, and a good snapshot taken at close.
    close(w.service).await;
    let file = snapshot::path(&sled_dir, "01");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let w = World {
        service: service_at(&w.config, &store_dir, &secrets).await,
        config: w.config,
        _dir: w._dir,
    };
    w.loan(&teller, "repay-2", Some("01-L1"), repay, "2026-03-03")
        .await
        .unwrap();
    // Right position, wrong book: the writer cannot tell, the audit does.
    close(w.service).await;
    let (at, _) = snapshot::load(&sled_dir, "01")
        .unwrap()
        .expect("taken at close");
    assert_eq!(at.sequence, 6);
    let mut empty = ansinh::book::PartitionBook::new("01");
    empty.sequence = at.sequence;
    snapshot::save(
        &sled_dir,
        "01",
        &at,
        &ansinh::book::snapshot::encode(&empty),
    )
    .unwrap();
    let checks = snapshot::check_all(&sled_dir, &stream, &w.config.subject_prefix)
        .await
        .unwrap();
    let difference = checks[0].difference.clone().expect("a difference");
    assert!(
        difference.contains("registry") && difference.contains("loans"),
        "{difference}"
    );
    // And the writer does start from the snapshot, not from genesis: this one's book
    // has no loan. (A snapshot is as trusted as the store directory it lives in.)
    let w = World {
        service: service_at(&w.config, &store_dir, &secrets).await,
        config: w.config,
        _dir: w._dir,
    };
    let repay = LoanAction::Repay {
        amount: Decimal::from(100_000),
    };
    assert!(matches!(
        refused(
            w.loan(&teller, "repay-3", Some("01-L1"), repay, "2026-03-04")
                .await
        ),
        Rejection::UnknownLoan { .. }
    ));
    assert_eq!(verified(&w.config).await.events, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_to_another_process_right_after_is_decided_on_a_current_book() {
    let (config, _dir, a, b) = two_processes().await;
    let w = World {
        config: config.clone(),
        service: a.clone(),
        _dir: tempfile::tempdir().unwrap(),
    };
    let officer = staff(Role::CreditOfficer, "0100007");
    let teller = staff(Role::Teller, "0100007");
    let disburse = || LoanAction::Disburse {
        amount: Decimal::from(30_000_000),
        channel: Channel::CommuneTransactionPoint,
    };
    const ROUNDS: u64 = 25;
    for i in 1..=ROUNDS {
        let id = format!("0100007-{i:06}");
        w.register(&id, &person(&format!("0010850{i:05}"), None))
            .await
            .unwrap();
        w.classify_poor(&id).await;
        // Approved through A; B's book has not seen it when the disbursement arrives.
        let approve = format!("approve-{i}");
        a.loan(
            &rq(&officer, &approve),
            None,
            World::approve(&id),
            d("2026-02-02"),
            "a",
        )
        .await
        .unwrap();
        let key = format!("disburse-{i}");
        let loan = ansinh::input::loan_ref(&format!("01-L{i}")).unwrap();
        b.loan(
            &rq(&teller, &key),
            Some(&loan),
            disburse(),
            d("2026-02-03"),
            "b",
        )
        .await
        .unwrap_or_else(|e| panic!("round {i}: the disbursement through B was refused: {e}"));
    }
    // A refusal still stands once the book is current: a loan that does not exist, and
    // a second disbursement of a loan paid out in full.
    let after = w.events().await;
    assert!(matches!(
        refused(
            b.loan(
                &rq(&teller, "unknown"),
                Some(&ansinh::input::loan_ref("01-L999").unwrap()),
                disburse(),
                d("2026-02-04"),
                "b"
            )
            .await
        ),
        Rejection::UnknownLoan { .. }
    ));
    let twice = refused(
        a.loan(
            &rq(&teller, "twice"),
            Some(&ansinh::input::loan_ref("01-L1").unwrap()),
            disburse(),
            d("2026-02-04"),
            "a",
        )
        .await,
    );
    assert!(!matches!(twice, Rejection::UnknownLoan { .. }), "{twice:?}");
    assert_eq!(w.events().await, after, "refusals append nothing");
    assert_eq!(verified(&config).await.events, 4 * ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_data_directory_loses_nothing_and_another_process_reads_every_household() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    // The secrets file lives outside the data directories, as an operator keeps it.
    let secrets = dir.path().join("secrets");
    let data_dir = dir.path().join("a");
    let a = service_at(&config, &data_dir, &secrets).await;
    let officer = staff(Role::CreditOfficer, "01");
    const HOUSEHOLDS: u64 = 40;
    let ids: Vec<HouseholdId> = (1..=HOUSEHOLDS)
        .map(|i| hh(&format!("0100007-{i:06}")))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let key = format!("reg-{i}");
        a.register(
            &rq(&officer, &key),
            id,
            Area::Rural,
            d("2026-01-05"),
            &person(&format!("0010860{i:05}"), Some(&format!("0011900{i:05}"))),
        )
        .await
        .unwrap();
    }
    close(a).await;
    std::fs::remove_dir_all(&data_dir).unwrap();
    // The same process restarted on an empty directory, and a second process.
    let restarted = service_at(&config, &data_dir, &secrets).await;
    let other = service_at(&config, &dir.path().join("b"), &secrets).await;
    let mut stream = stream_of(&config).await;
    for service in [&restarted, &other] {
        service
            .projector
            .catch_up(&mut stream, &config)
            .await
            .unwrap();
        for (i, id) in ids.iter().enumerate() {
            let data = service.personal(id).await.unwrap();
            assert_eq!(
                data,
                person(&format!("0010860{i:05}"), Some(&format!("0011900{i:05}")))
            );
        }
    }
    // The citizens are still claimed: a new household with one of them is refused.
    let refused = restarted
        .register(
            &rq(&officer, "dup"),
            &hh("0100007-009999"),
            Area::Rural,
            d("2026-02-01"),
            &person("001086000003", None),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // And a process started with another secrets file refuses to start, naming it.
    let wrong = dir.path().join("other-secrets");
    let ledger = ledger_at(&config, &dir.path().join("c")).await;
    let e = ansinh::personal::Vault::open(ledger.jetstream(), &config.stream_name, 1, &wrong)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("other-secrets"), "{e}");
}

// ---- the book alone: each command decided and folded in memory, as its writer does

/// One partition's book folded in memory: each command decided against it, then its
/// events applied at the next sequences, as the partition writer does.
struct Folded(PartitionBook);

fn branch_manager() -> proto::Actor {
    proto::Actor {
        id: "staff:manager".into(),
        role: "branch_manager".into(),
        unit: "01".into(),
    }
}

/// A loan command of a branch manager of province 01.
fn loan_command(kind: CommandKind, on: &str) -> Command {
    Command::Loan {
        kind,
        effective: d(on),
        reason: "test".into(),
        unit: "01".into(),
    }
}

fn approval(id: &str) -> CommandKind {
    CommandKind::Approve {
        household: hh(id),
        programme: "POOR_HOUSEHOLD".into(),
        amount: Decimal::from(30_000_000),
        term_months: 36,
        savings_group: "TK-01".into(),
        entrusted: EntrustedOrganisation::WomensUnion,
    }
}

fn tranche(loan: u64, amount: i64) -> CommandKind {
    CommandKind::Disburse {
        loan,
        amount: Decimal::from(amount),
        channel: Channel::CommuneTransactionPoint,
    }
}

fn repayment(loan: u64, amount: i64) -> CommandKind {
    CommandKind::Repay {
        loan,
        amount: Decimal::from(amount),
    }
}

/// The reversal of the event at partition `sequence`, named on `loan`.
fn reversal(loan: u64, sequence: u64) -> CommandKind {
    CommandKind::Reverse {
        loan,
        event: codec::main_id(sequence),
    }
}

impl Folded {
    fn new() -> Self {
        Folded(PartitionBook::new("01"))
    }

    fn decide(&self, command: &Command) -> Result<Vec<Proposal>, Rejection> {
        self.0.decide(command, &branch_manager())
    }

    /// Records `command` (a fixture: a refusal panics); the sequence of its last event.
    fn record(&mut self, command: Command) -> u64 {
        let proposals = self
            .decide(&command)
            .unwrap_or_else(|r| panic!("{command:?}: {r}"));
        for p in proposals {
            let next = self.0.sequence + 1;
            self.0
                .apply(next, Some(&branch_manager()), Some(&p.payload));
        }
        assert_eq!(self.0.unreadable, 0);
        self.0.sequence
    }

    /// `id` registered, with one member, citizen `citizen`; the registration's sequence.
    fn register(&mut self, id: &str, citizen: u8) -> u64 {
        self.record(Command::Registry(Change::Registered {
            household: hh(id),
            area: Area::Rural,
            members: 1,
            citizens: vec![[citizen; 32]],
            sealed: vec![1],
            on: d("2026-01-05"),
        }))
    }

    /// `id` registered (one member, citizen `citizen`) and found poor.
    fn poor_household(&mut self, id: &str, citizen: u8) {
        self.register(id, citizen);
        self.record(Command::Classify {
            household: hh(id),
            inputs: poor_inputs(),
            decided_on: d("2026-01-10"),
            corrects: None,
        });
    }
}

#[test]
fn a_reversal_never_reopens_a_loan_of_a_household_that_moved_away() {
    let mut book = Folded::new();
    let id = "0100007-000001";
    book.poor_household(id, 1);
    book.record(loan_command(approval(id), "2026-02-02"));
    book.record(loan_command(tranche(1, 30_000_000), "2026-02-05"));
    // Paid off the day it was disbursed: nothing accrued, the loan closes.
    let payoff = book.record(loan_command(repayment(1, 30_000_000), "2026-02-05"));
    assert_eq!(book.0.loans.loans[&1].position.status, LoanStatus::Closed);
    // While the household lives here, the payoff can be reversed.
    let reverse_payoff = loan_command(reversal(1, payoff), "2026-03-02");
    assert!(book.decide(&reverse_payoff).is_ok());
    // A closed loan does not hold the household back.
    book.record(Command::MoveOut {
        household: hh(id),
        to: hh("7900007-000001"),
        on: d("2026-03-01"),
    });
    assert_eq!(
        book.decide(&reverse_payoff),
        Err(Rejection::HouseholdInactive {
            household: id.into()
        })
    );
}

#[test]
fn a_refused_reversal_says_why_and_names_events_by_their_partition_sequence() {
    let mut book = Folded::new();
    let id = "0100007-000001";
    book.poor_household(id, 1);
    let approved = book.record(loan_command(approval(id), "2026-02-02"));
    let disbursed = book.record(loan_command(tranche(1, 30_000_000), "2026-02-05"));
    let repaid = book.record(loan_command(repayment(1, 1_000_000), "2026-03-20"));
    let reverse = |sequence| loan_command(reversal(1, sequence), "2026-03-21");
    // Later events were computed on top of the tranche.
    assert_eq!(
        book.decide(&reverse(disbursed)),
        Err(Rejection::NotLatestEvent {
            event: disbursed,
            latest: Some(repaid)
        })
    );
    // In words a clerk can act on.
    assert_eq!(
        book.decide(&reverse(disbursed)).unwrap_err().to_string(),
        format!("event {disbursed} is not the loan's latest event: reverse event {repaid} first")
    );
    book.record(reverse(repaid));
    // Once reversed, an event is known and not reversible; so is an approval.
    for event in [repaid, approved] {
        assert_eq!(
            book.decide(&reverse(event)),
            Err(Rejection::NotReversible { event })
        );
    }
    // So is an event of the partition after the loan book's last (a registration).
    let registered = book.register("0100007-000002", 2);
    assert_eq!(
        book.decide(&reverse(registered)),
        Err(Rejection::NotReversible { event: registered })
    );
    // A sequence the partition has not reached is unknown.
    assert_eq!(
        book.decide(&reverse(registered + 1)),
        Err(Rejection::UnknownEvent {
            event: registered + 1
        })
    );
}

#[test]
fn a_recorded_reversal_naming_a_sequence_past_any_chain_is_unreadable_not_a_panic() {
    let mut book = Folded::new();
    let id = "0100007-000001";
    book.poor_household(id, 1);
    book.record(loan_command(approval(id), "2026-02-02"));
    book.record(loan_command(tranche(1, 30_000_000), "2026-02-05"));
    // Only a forgery that chains could hold it: the book leaves it out and counts it.
    let forged = proto::LoanPostingReversed {
        loan_number: 1,
        original_sequence: u64::MAX,
        restored: Some(codec::position_to_proto(&book.0.loans.loans[&1].position)),
        effective_on: "2026-02-06".into(),
        reason: "forged".into(),
        ..Default::default()
    };
    let before = book.0.loans.clone();
    let next = book.0.sequence + 1;
    book.0.apply(
        next,
        Some(&branch_manager()),
        Some(&Payload::LoanPostingReversed(forged)),
    );
    assert_eq!((book.0.unreadable, &book.0.loans), (1, &before));
}

/// A payments command of the branch manager, decided on `on`.
fn payment_command(kind: ansinh::domain::payments::CommandKind, on: &str) -> Command {
    Command::Payment {
        kind,
        effective: d(on),
        signed: None,
        outside_replay_window: None,
        used_elsewhere: None,
    }
}

/// The partition's payment run of `period`, every commune, dated `on`.
fn run(period: &str, on: &str) -> Command {
    payment_command(
        ansinh::domain::payments::CommandKind::Run {
            period: ansinh::domain::payments::month::Month::parse(period).unwrap(),
            commune: None,
        },
        on,
    )
}

/// A monthly allowance of the household's member "m1", paid by bank from 2026-10.
fn allowance(household: &str) -> ansinh::domain::payments::CommandKind {
    use ansinh::domain::payments::entitlements::{Channel, Terms};
    use ansinh::domain::payments::ids::*;
    use ansinh::domain::payments::month::Month;
    ansinh::domain::payments::CommandKind::Grant {
        programme: ProgrammeId::parse("SOCIAL_ASSISTANCE_MONTHLY").unwrap(),
        beneficiary: BeneficiaryRef {
            household: HouseholdRef::parse(household).unwrap(),
            member: MemberRef::parse("m1").unwrap(),
        },
        commune: CommuneId::parse(&household[..7]).unwrap(),
        from: Month::parse("2026-10").unwrap(),
        terms: Terms {
            category: CategoryId::parse("ELDERLY_80_PLUS_NO_PENSION").unwrap(),
            channel: Channel::BankAccount {
                gateway: GatewayId::parse("vcb").unwrap(),
            },
            provincial_base: None,
        },
        citizen: None,
    }
}

/// A run pays nobody for a month after their household left the partition or lost its
/// last member (as a stop dated that day pays through its month): it names their
/// entitlements for an officer to stop. The month they left is still paid.
#[test]
fn a_run_pays_no_household_that_moved_out_or_died_out_and_names_their_entitlements() {
    use ansinh::domain::payments::budget::BudgetKey;
    use ansinh::domain::payments::ids::{CommuneId, ProgrammeId};
    use ansinh::domain::payments::month::Month;
    use ansinh::domain::payments::{CommandKind as Pay, EventBody};
    let mut book = Folded::new();
    let (stays, moves, dies) = ("0100007-000001", "0100007-000002", "0100007-000003");
    for (n, id) in [stays, moves, dies].into_iter().enumerate() {
        book.register(id, n as u8 + 1);
        book.record(payment_command(allowance(id), "2026-10-01"));
    }
    for period in ["2026-10", "2026-11"] {
        book.record(payment_command(
            Pay::Allocate {
                budget: BudgetKey {
                    programme: ProgrammeId::parse("SOCIAL_ASSISTANCE_MONTHLY").unwrap(),
                    commune: CommuneId::parse("0100007").unwrap(),
                    period: Month::parse(period).unwrap(),
                },
                amount: Decimal::from(10_000_000),
            },
            "2026-10-01",
        ));
    }
    book.record(Command::MoveOut {
        household: hh(moves),
        to: hh("7900007-000002"),
        on: d("2026-10-20"),
    });
    book.record(Command::Registry(Change::MemberDied {
        household: hh(dies),
        citizen: [3; 32],
        members: 0,
        citizens: vec![],
        sealed: vec![],
        on: d("2026-10-21"),
    }));

    let october = book.decide(&run("2026-10", "2026-10-25")).unwrap();
    assert_eq!(
        october.len(),
        4,
        "three instructions and the run's completion"
    );
    let proposals = book.decide(&run("2026-11", "2026-11-01")).unwrap();
    let events: Vec<EventBody> = proposals
        .iter()
        .map(|p| match &p.payload {
            Payload::PaymentRecorded(r) => {
                ansinh::book::payments::event_of(0, Some(&branch_manager()), r)
                    .unwrap()
                    .body
            }
            other => panic!("{other:?}"),
        })
        .collect();
    let paid: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            EventBody::InstructionIssued { instruction, .. } => {
                Some(instruction.beneficiary.household.to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(paid, [stays]);
    match events.last() {
        Some(EventBody::PaymentRunCompleted {
            issued,
            left_unpaid,
            ..
        }) => assert_eq!(
            (*issued, left_unpaid.not_resident.as_slice()),
            (1, &[2, 3][..])
        ),
        other => panic!("{other:?}"),
    }
    // Run again once the household still here is paid: nothing to pay, and the run is
    // recorded all the same, naming whom to stop.
    book.record(run("2026-11", "2026-11-01"));
    let again = book.decide(&run("2026-11", "2026-11-02")).unwrap();
    let Payload::PaymentRecorded(r) = &again[..].first().unwrap().payload else {
        panic!("{again:?}")
    };
    match ansinh::book::payments::event_of(0, Some(&branch_manager()), r)
        .unwrap()
        .body
    {
        EventBody::PaymentRunCompleted {
            issued,
            left_unpaid,
            ..
        } => assert_eq!((issued, left_unpaid.not_resident), (0, vec![2, 3])),
        other => panic!("{other:?}"),
    }
    assert_eq!(again.len(), 1);
}

/// The allowance of `allowance(household)` granted to `member`, naming `citizen`, from
/// `month`, as a command dated `on`.
fn allowance_to(
    household: &str,
    member: &str,
    citizen: [u8; 32],
    month: &str,
    on: &str,
) -> Command {
    use ansinh::domain::payments::CommandKind as Pay;
    use ansinh::domain::payments::ids::MemberRef;
    use ansinh::domain::payments::month::Month;
    let mut kind = allowance(household);
    if let Pay::Grant {
        beneficiary,
        citizen: c,
        from,
        ..
    } = &mut kind
    {
        beneficiary.member = MemberRef::parse(member).unwrap();
        *c = Some(citizen);
        *from = Month::parse(month).unwrap();
    }
    payment_command(kind, on)
}

/// `from`, in partition 01 of `before`, moves to `to` in partition 79 on 2026-10-20 with
/// `citizens`: the move-out `before` decides, and 79's book once its move-in landed,
/// carrying what the move-out says was paid.
fn moved_to_79(
    before: &Folded,
    from: &str,
    to: &str,
    citizens: Vec<[u8; 32]>,
) -> (proto::HouseholdMovedOut, Folded) {
    let moved_out = before
        .decide(&Command::MoveOut {
            household: hh(from),
            to: hh(to),
            on: d("2026-10-20"),
        })
        .unwrap();
    let Payload::HouseholdMovedOut(out) = &moved_out[0].payload else {
        panic!("{moved_out:?}")
    };
    let mut after = Folded(PartitionBook::new("79"));
    after.record(Command::MoveIn(Box::new(ansinh::book::Arrival {
        change: Change::MovedIn {
            household: hh(to),
            from: hh(from),
            area: Area::Urban,
            members: citizens.len() as u32,
            citizens,
            sealed: vec![1],
            on: d("2026-10-20"),
        },
        from_partition: "01".into(),
        from_sequence: before.0.sequence + 1,
        from_hash: [9; 32],
        standing: None,
        paid_before_move: out.paid_before_move.clone(),
    })));
    (out.clone(), after)
}

/// "One allowance per person" survives a move: the household's members are paid where
/// it lived through the month it left, and a move makes a new household id, so a grant
/// where it arrives starts after that month, in another province too.
#[test]
fn a_grant_after_a_move_never_pays_the_month_already_paid_before_it() {
    use ansinh::domain::payments::ids::{BeneficiaryRef, HouseholdRef, MemberRef};
    use ansinh::domain::payments::month::Month;
    use ansinh::domain::payments::{CommandKind as Pay, Rejection as PayRejection};
    let (from, to) = ("0100007-000002", "7900007-000002");
    let mut before = Folded::new();
    before.register(from, 2);
    before.record(payment_command(allowance(from), "2026-10-01"));
    let (out, mut after) = moved_to_79(&before, from, to, vec![[2; 32]]);
    assert_eq!(out.paid_before_move.len(), 1, "{out:?}");
    assert_eq!(out.paid_before_move[0].through_month, "2026-10");
    let grant_from = |month: &str| {
        let Pay::Grant {
            programme,
            commune,
            terms,
            ..
        } = allowance(to)
        else {
            unreachable!()
        };
        payment_command(
            Pay::Grant {
                programme,
                beneficiary: BeneficiaryRef {
                    household: HouseholdRef::parse(to).unwrap(),
                    member: MemberRef::parse("m1").unwrap(),
                },
                commune,
                from: Month::parse(month).unwrap(),
                terms,
                citizen: None,
            },
            "2026-10-25",
        )
    };
    // The grant before the move recorded no citizen, as every grant of a move recorded
    // before moves carried it: whoever is at its reference was paid, a citizen too.
    let mut naming = grant_from("2026-10");
    if let Command::Payment {
        kind: Pay::Grant { citizen, .. },
        ..
    } = &mut naming
    {
        *citizen = Some([2; 32]);
    }
    for grant in [grant_from("2026-10"), naming] {
        assert_eq!(
            after.decide(&grant).unwrap_err(),
            Rejection::Payment(PayRejection::GrantOverlapsPaidBeforeMove {
                household: HouseholdRef::parse(from).unwrap(),
                last_payable: Month::parse("2026-10").unwrap(),
            })
        );
    }
    after.record(grant_from("2026-11"));
}

/// What a move carries is paid to a person, not to a position: a member's reference
/// shifts when a member before them dies, so a citizen paid before the move under "m3"
/// and now "m2" is refused the month paid there under "m2", and the citizen who comes to
/// sit at "m3" is not refused it. A second move carries both, each with its citizen.
#[test]
fn a_move_carries_what_was_paid_to_the_citizen_whatever_their_reference_becomes() {
    use ansinh::domain::payments::ids::HouseholdRef;
    use ansinh::domain::payments::month::Month;
    use ansinh::domain::payments::{CommandKind as Pay, Rejection as PayRejection};
    let (from, to) = ("0100007-000002", "7900007-000002");
    let grant = |household: &str, member: &str, citizen: [u8; 32], month: &str| {
        allowance_to(household, member, citizen, month, "2026-10-25")
    };
    let mut before = Folded::new();
    before.record(Command::Registry(Change::Registered {
        household: hh(from),
        area: Area::Rural,
        members: 3,
        citizens: vec![[1; 32], [2; 32], [3; 32]],
        sealed: vec![1],
        on: d("2026-01-05"),
    }));
    // The citizen [3; 32] is granted as m3, then the member at m2 dies: they are m2 now.
    before.record(grant(from, "m3", [3; 32], "2026-10"));
    before.record(Command::Registry(Change::MemberDied {
        household: hh(from),
        citizen: [2; 32],
        members: 2,
        citizens: vec![[1; 32], [3; 32]],
        sealed: vec![1],
        on: d("2026-10-05"),
    }));
    let (out, mut after) = moved_to_79(&before, from, to, vec![[1; 32], [3; 32]]);
    assert_eq!(out.paid_before_move.len(), 1, "{out:?}");
    assert_eq!(out.paid_before_move[0].through_month, "2026-10");
    assert_eq!(
        after
            .decide(&grant(to, "m2", [3; 32], "2026-10"))
            .unwrap_err(),
        Rejection::Payment(PayRejection::GrantOverlapsPaidBeforeMove {
            household: HouseholdRef::parse(from).unwrap(),
            last_payable: Month::parse("2026-10").unwrap(),
        })
    );
    after.record(grant(to, "m2", [3; 32], "2026-11"));

    // Another citizen joins and sits at m3: October was not paid to them before the move.
    after.record(Command::Registry(Change::MembersChanged {
        household: hh(to),
        members: 3,
        citizens: vec![[1; 32], [3; 32], [4; 32]],
        sealed: vec![1],
        on: d("2026-10-22"),
        reason: "came to live with their child".into(),
    }));
    // A grant naming no citizen could be anyone's at m3, the citizen paid there too.
    let mut unnamed = grant(to, "m3", [4; 32], "2026-10");
    if let Command::Payment {
        kind: Pay::Grant { citizen, .. },
        ..
    } = &mut unnamed
    {
        *citizen = None;
    }
    assert_eq!(
        after.decide(&unnamed).unwrap_err(),
        Rejection::Payment(PayRejection::GrantOverlapsPaidBeforeMove {
            household: HouseholdRef::parse(from).unwrap(),
            last_payable: Month::parse("2026-10").unwrap(),
        })
    );
    after.record(grant(to, "m3", [4; 32], "2026-10"));

    // Moving on, the household carries each person's month, both last granted as m3.
    let moved_on = after
        .decide(&Command::MoveOut {
            household: hh(to),
            to: hh("7900008-000001"),
            on: d("2026-10-26"),
        })
        .unwrap();
    let Payload::HouseholdMovedOut(out) = &moved_on[0].payload else {
        panic!("{moved_on:?}")
    };
    let mut carried: Vec<(&[u8], &str, &str)> = out
        .paid_before_move
        .iter()
        .map(|p| {
            (
                &p.citizen_index[..],
                p.member.as_str(),
                p.through_month.as_str(),
            )
        })
        .collect();
    carried.sort();
    assert_eq!(
        carried,
        [
            (&[3; 32][..], "m3", "2026-10"),
            (&[4; 32][..], "m3", "2026-10"),
        ]
    );
    let read_back =
        ansinh::book::snapshot::decode(&ansinh::book::snapshot::encode(&after.0)).unwrap();
    assert_eq!(read_back, after.0);
}

/// A grant names a member the household record lists: in a household of two, "m3" is
/// no one, and would be a second allowance under a made-up key.
#[test]
fn a_grant_names_a_member_of_the_household_record() {
    use ansinh::domain::payments::CommandKind as Pay;
    use ansinh::domain::payments::Rejection as PayRejection;
    use ansinh::domain::payments::ids::{HouseholdRef, MemberRef};
    let id = "0100007-000001";
    let mut book = Folded::new();
    book.record(Command::Registry(Change::Registered {
        household: hh(id),
        area: Area::Rural,
        members: 2,
        citizens: vec![[1; 32], [2; 32]],
        sealed: vec![1],
        on: d("2026-01-05"),
    }));
    let grant_to = |member: &str| {
        let mut kind = allowance(id);
        if let Pay::Grant { beneficiary, .. } = &mut kind {
            beneficiary.member = MemberRef::parse(member).unwrap();
        }
        payment_command(kind, "2026-10-01")
    };
    for member in ["m3", "m9"] {
        assert_eq!(
            book.decide(&grant_to(member)),
            Err(Rejection::Payment(PayRejection::NoSuchMember {
                household: HouseholdRef::parse(id).unwrap(),
                member: MemberRef::parse(member).unwrap(),
                members: 2,
            }))
        );
    }
    assert_eq!(
        book.decide(&grant_to("M1")),
        Err(Rejection::Payment(PayRejection::MemberRefNotCanonical {
            member: MemberRef::parse("M1").unwrap(),
        }))
    );
    book.record(grant_to("m1"));
    book.record(grant_to("m2"));
    let payments = &book.0.payments;
    let running = payments
        .entitlements
        .values()
        .filter(|e| e.stopped.is_none());
    assert_eq!(running.count(), 2);
}

/// The budget of commune 0100007 for `period`, allocated on `on`.
fn budget_for(period: &str, on: &str) -> Command {
    use ansinh::domain::payments::budget::BudgetKey;
    use ansinh::domain::payments::ids::{CommuneId, ProgrammeId};
    use ansinh::domain::payments::month::Month;
    payment_command(
        ansinh::domain::payments::CommandKind::Allocate {
            budget: BudgetKey {
                programme: ProgrammeId::parse("SOCIAL_ASSISTANCE_MONTHLY").unwrap(),
                commune: CommuneId::parse("0100007").unwrap(),
                period: Month::parse(period).unwrap(),
            },
            amount: Decimal::from(10_000_000),
        },
        on,
    )
}

/// The gateway "vcb" posts that `instruction` of the book was settled, on `on`.
fn settle(book: &mut Folded, instruction: &str, on: &str) {
    use ansinh::domain::payments::ids::{GatewayId, GatewayTxnId, InstructionRef};
    use ansinh::domain::payments::instructions::{GatewayPost, InstructionId, Outcome};
    let issued = &book.0.payments.instructions[&InstructionId::parse(instruction).unwrap()];
    let post = GatewayPost {
        gateway: GatewayId::parse("vcb").unwrap(),
        instruction: InstructionRef::parse(instruction).unwrap(),
        outcome: Outcome::Settled,
        gateway_txn: GatewayTxnId::parse(&format!("T-{instruction}")).unwrap(),
        amount: issued.issued.amount,
        beneficiary: issued.issued.beneficiary.clone(),
    };
    let gateway = proto::Actor {
        id: "vcb".into(),
        role: ansinh::book::payments::GATEWAY_ROLE.into(),
        unit: String::new(),
    };
    let command = payment_command(ansinh::domain::payments::CommandKind::Post(post), on);
    for p in book.0.decide(&command, &gateway).unwrap() {
        let next = book.0.sequence + 1;
        book.0.apply(next, Some(&gateway), Some(&p.payload));
    }
    assert_eq!(book.0.unreadable, 0);
}

/// A month paid ahead before a move was paid where the household lived: the move-out
/// records it, and a grant where the household arrives starts after it. One still pending
/// holds the move back (nothing would cancel it once the household has left): until its
/// gateway answers, or a stop dated the move cancels it.
#[test]
fn a_month_paid_ahead_before_a_move_is_not_paid_again_after_it() {
    use ansinh::domain::payments::CommandKind as Pay;
    use ansinh::domain::payments::entitlements::StopReason;
    use ansinh::domain::payments::month::Month;
    let (from, to) = ("0100007-000002", "7900007-000002");
    let move_out = Command::MoveOut {
        household: hh(from),
        to: hh(to),
        on: d("2026-10-20"),
    };
    let ahead = |book: &mut Folded| {
        book.register(from, 2);
        book.record(payment_command(allowance(from), "2026-10-01"));
        book.record(budget_for("2026-11", "2026-10-01"));
        book.record(payment_command(
            Pay::Run {
                period: Month::parse("2026-11").unwrap(),
                commune: None,
            },
            "2026-10-15",
        ));
    };
    let through = |proposals: &[Proposal]| {
        let Payload::HouseholdMovedOut(out) = &proposals[0].payload else {
            panic!("{proposals:?}")
        };
        assert_eq!(out.paid_before_move.len(), 1, "{out:?}");
        out.paid_before_move[0].through_month.clone()
    };

    // November instructed in October, no answer yet: the move waits.
    let mut pending = Folded::new();
    ahead(&mut pending);
    assert_eq!(
        pending.decide(&move_out),
        Err(Rejection::PaymentsPendingAfterMove {
            household: from.into(),
            instructions: vec!["pay:1:2026-11:1".into()],
        })
    );
    // A stop dated the move cancels it: November was not paid, and the move records
    // October.
    pending.record(payment_command(
        Pay::Stop {
            entitlement: 1,
            on: d("2026-10-20"),
            reason: StopReason::Move,
        },
        "2026-10-20",
    ));
    assert_eq!(through(&pending.decide(&move_out).unwrap()), "2026-10");

    // Settled before the move: November was paid here, and the move records it.
    let mut paid = Folded::new();
    ahead(&mut paid);
    settle(&mut paid, "pay:1:2026-11:1", "2026-10-16");
    assert_eq!(through(&paid.decide(&move_out).unwrap()), "2026-11");
    // So is a month paid ahead by an entitlement stopped before the move.
    paid.record(payment_command(
        Pay::Stop {
            entitlement: 1,
            on: d("2026-10-18"),
            reason: StopReason::Move,
        },
        "2026-10-18",
    ));
    assert_eq!(through(&paid.decide(&move_out).unwrap()), "2026-11");
}

/// A month paid ahead, cancelled by a stop dated the move and then settled by its gateway
/// all the same, may have been paid where the household lived: the move-out records it,
/// so a grant where the household arrives starts after it.
#[test]
fn a_month_settled_late_before_a_move_is_not_paid_again_after_it() {
    use ansinh::domain::payments::CommandKind as Pay;
    use ansinh::domain::payments::entitlements::StopReason;
    use ansinh::domain::payments::month::Month;
    let (from, to) = ("0100007-000002", "7900007-000002");
    let mut book = Folded::new();
    book.register(from, 2);
    book.record(payment_command(allowance(from), "2026-10-01"));
    book.record(budget_for("2026-11", "2026-10-01"));
    book.record(payment_command(
        Pay::Run {
            period: Month::parse("2026-11").unwrap(),
            commune: None,
        },
        "2026-10-15",
    ));
    book.record(payment_command(
        Pay::Stop {
            entitlement: 1,
            on: d("2026-10-20"),
            reason: StopReason::Move,
        },
        "2026-10-20",
    ));
    settle(&mut book, "pay:1:2026-11:1", "2026-10-21");
    assert_eq!(book.0.payments.late_settlements.len(), 1);
    let moved_out = book
        .decide(&Command::MoveOut {
            household: hh(from),
            to: hh(to),
            on: d("2026-10-20"),
        })
        .unwrap();
    let Payload::HouseholdMovedOut(out) = &moved_out[0].payload else {
        panic!("{moved_out:?}")
    };
    assert_eq!(out.paid_before_move.len(), 1, "{out:?}");
    assert_eq!(out.paid_before_move[0].through_month, "2026-11");
}

/// A gateway's result for the month a household moved out in, posted after the move-out,
/// is recorded where the instruction was issued: the household lived there that month, the
/// instruction holds that partition's budget, and that partition's reconciliation counts
/// it on the day received. A settlement posts the hold; a failure voids it, and that
/// partition reissues the month (it pays the month a household leaves), while the
/// move-out already told the new home not to grant that month.
#[test]
fn a_result_posted_after_a_move_out_is_recorded_where_its_instruction_was_issued() {
    use ansinh::domain::payments::budget::BudgetKey;
    use ansinh::domain::payments::ids::{
        CommuneId, GatewayId, GatewayTxnId, InstructionRef, ProgrammeId,
    };
    use ansinh::domain::payments::instructions::{
        GatewayPost, InstructionId, InstructionStatus, Outcome,
    };
    use ansinh::domain::payments::month::Month;
    use ansinh::domain::payments::{CommandKind as Pay, EventBody};
    let (from, to) = ("0100007-000002", "7900007-000002");
    let october = "pay:1:2026-10:1";
    let key = BudgetKey {
        programme: ProgrammeId::parse("SOCIAL_ASSISTANCE_MONTHLY").unwrap(),
        commune: CommuneId::parse("0100007").unwrap(),
        period: Month::parse("2026-10").unwrap(),
    };
    let moved_out = || {
        let mut book = Folded::new();
        book.register(from, 2);
        book.record(payment_command(allowance(from), "2026-10-01"));
        book.record(budget_for("2026-10", "2026-10-01"));
        book.record(run("2026-10", "2026-10-02"));
        let out = book.decide(&Command::MoveOut {
            household: hh(from),
            to: hh(to),
            on: d("2026-10-20"),
        });
        let Payload::HouseholdMovedOut(p) = &out.as_ref().unwrap()[0].payload else {
            panic!("{out:?}")
        };
        assert_eq!(p.paid_before_move[0].through_month, "2026-10");
        book.record(Command::MoveOut {
            household: hh(from),
            to: hh(to),
            on: d("2026-10-20"),
        });
        book
    };
    let post = |book: &Folded, outcome: Outcome| {
        let issued = &book.0.payments.instructions[&InstructionId::parse(october).unwrap()];
        let post = GatewayPost {
            gateway: GatewayId::parse("vcb").unwrap(),
            instruction: InstructionRef::parse(october).unwrap(),
            outcome,
            gateway_txn: GatewayTxnId::parse("T-after-move").unwrap(),
            amount: issued.issued.amount,
            beneficiary: issued.issued.beneficiary.clone(),
        };
        payment_command(Pay::Post(post), "2026-10-25")
    };
    let gateway = proto::Actor {
        id: "vcb".into(),
        role: ansinh::book::payments::GATEWAY_ROLE.into(),
        unit: String::new(),
    };
    let status = |book: &Folded| {
        book.0.payments.instructions[&InstructionId::parse(october).unwrap()].status
    };

    // Settled after the move: accepted here, the hold posted.
    let mut settled = moved_out();
    let held = settled.0.payments.budget(&key);
    for p in settled
        .0
        .decide(&post(&settled, Outcome::Settled), &gateway)
        .unwrap()
    {
        let next = settled.0.sequence + 1;
        settled.0.apply(next, Some(&gateway), Some(&p.payload));
    }
    assert_eq!(status(&settled), InstructionStatus::Settled);
    let after = settled.0.payments.budget(&key);
    assert_eq!(
        (after.reserved, after.posted),
        (Decimal::ZERO, held.posted + held.reserved),
        "the hold is posted where it was made"
    );

    // Failed after the move: the hold voided here, and October reissued here.
    let mut failed = moved_out();
    for p in failed
        .0
        .decide(&post(&failed, Outcome::Failed), &gateway)
        .unwrap()
    {
        let next = failed.0.sequence + 1;
        failed.0.apply(next, Some(&gateway), Some(&p.payload));
    }
    assert_eq!(status(&failed), InstructionStatus::Failed);
    let reissued = failed
        .decide(&payment_command(
            Pay::Reissue {
                instruction: InstructionId::parse(october).unwrap(),
                channel: None,
            },
            "2026-10-26",
        ))
        .unwrap();
    let Payload::PaymentRecorded(r) = &reissued[0].payload else {
        panic!("{reissued:?}")
    };
    assert!(matches!(
        ansinh::book::payments::event_of(0, Some(&branch_manager()), r)
            .unwrap()
            .body,
        EventBody::InstructionIssued { .. }
    ));
}

/// A household whose last member died keeps its loan to collect, and gets no tranche.
#[test]
fn no_tranche_goes_to_a_household_with_no_member_left() {
    let mut book = Folded::new();
    let id = "0100007-000001";
    book.poor_household(id, 1);
    book.record(loan_command(approval(id), "2026-02-02"));
    book.record(loan_command(tranche(1, 10_000_000), "2026-02-05"));
    book.record(Command::Registry(Change::MemberDied {
        household: hh(id),
        citizen: [1; 32],
        members: 0,
        citizens: vec![],
        sealed: vec![],
        on: d("2026-03-01"),
    }));
    assert_eq!(
        book.decide(&loan_command(tranche(1, 10_000_000), "2026-03-05")),
        Err(Rejection::HouseholdInactive {
            household: id.into()
        })
    );
    assert!(
        book.decide(&loan_command(repayment(1, 1_000_000), "2026-03-05"))
            .is_ok()
    );
}

/// The income line depends on the area, so a review is decided in the area the household
/// is registered in: a rural household reviewed as urban (whose line is higher) is
/// refused, and nothing is recorded.
#[test]
fn a_review_in_another_area_than_the_registered_one_is_refused() {
    let mut book = Folded::new();
    let id = "0100007-000001";
    book.register(id, 1);
    let mut urban = poor_inputs();
    urban.area = Area::Urban;
    assert_eq!(
        book.decide(&Command::Classify {
            household: hh(id),
            inputs: urban,
            decided_on: d("2026-01-10"),
            corrects: None,
        })
        .err(),
        Some(Rejection::AreaDiffersFromRegistry {
            registered: Area::Rural,
            given: Area::Urban,
        })
    );
    assert!(book.0.standings.is_empty());
}

/// A recorded decision that names an indicator twice would count it once in the book and
/// twice for a reader of the event: the book leaves it out and counts it unreadable.
#[test]
fn a_recorded_decision_naming_an_indicator_twice_is_unreadable() {
    let mut book = Folded::new();
    let id = "0100007-000001";
    book.register(id, 1);
    let mut proposals = book
        .decide(&Command::Classify {
            household: hh(id),
            inputs: poor_inputs(),
            decided_on: d("2026-01-10"),
            corrects: None,
        })
        .unwrap();
    let Payload::EligibilityDecided(mut decided) = proposals.remove(0).payload else {
        panic!("a review records EligibilityDecided")
    };
    let first = decided.deprived_indicators[0].clone();
    decided.deprived_indicators.insert(0, first);
    let next = book.0.sequence + 1;
    book.0.apply(
        next,
        Some(&branch_manager()),
        Some(&Payload::EligibilityDecided(decided)),
    );
    assert_eq!(book.0.unreadable, 1);
    assert!(book.0.standings.is_empty());
}

/// A registration the ledger could not append (here: its partition's chain stopped at a
/// foreign message) gives its citizens back: nothing holds them, so the same citizen
/// registers in another province once, and not never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_that_appends_nothing_for_any_reason_gives_its_citizens_back() {
    let w = world().await;
    w.register("0100007-000001", &person("001085012345", None))
        .await
        .unwrap();
    let js = w.service.ledger.jetstream().clone();
    let subject = w
        .config
        .subject(&ansinh::chain::Partition::new("01").unwrap());
    js.publish(subject, "not the ledger's".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let stopped = w
        .register("0100007-000002", &person("001190000002", None))
        .await;
    assert!(
        matches!(
            stopped,
            Err(ServiceError::Append(
                ansinh::log::AppendError::ChainBroken { .. }
            ))
        ),
        "{stopped:?}"
    );
    let elsewhere = register_in(&w.service, "7900007-000002", &person("001190000002", None)).await;
    assert!(elsewhere.is_ok(), "{elsewhere:?}");
}

/// A command of several events keys the earlier ones K#1, K#2, ...: an append whose own
/// key holds '#' could name one of them, so the ledger refuses it, appending nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_key_holding_a_hash_sign_is_refused() {
    let w = world().await;
    let before = w.events().await;
    let submitted = w
        .service
        .ledger
        .submit(ansinh::log::Submission {
            partition: ansinh::chain::Partition::new("01").unwrap(),
            actor: proto::Actor {
                id: "staff:credit_officer".into(),
                role: "credit-officer".into(),
                unit: "01".into(),
            },
            idempotency_key: "reg#1".into(),
            correlation_id: String::new(),
            request_fingerprint: None,
            command: Command::Registry(Change::Registered {
                household: hh("0100007-000088"),
                area: Area::Rural,
                members: 1,
                citizens: vec![w.service.vault.blind_index("001085088888")],
                sealed: vec![1],
                on: d("2026-01-05"),
            }),
        })
        .await;
    assert!(
        matches!(
            submitted,
            Err(ansinh::log::AppendError::InvalidIdempotencyKey)
        ),
        "{submitted:?}"
    );
    // Nor may a note's key hold one: a note keyed K#1 and a later command keyed K would
    // both write an event keyed K#1, and a retry of the note would get the command's.
    let noted = w
        .service
        .ledger
        .append(note("01", "reg#1", "an operator's note"))
        .await;
    assert!(
        matches!(noted, Err(ansinh::log::AppendError::InvalidIdempotencyKey)),
        "{noted:?}"
    );
    assert_eq!(w.events().await, before);
}

/// A review for an earlier year than the household's latest decision would replace next
/// year's standing with this year's, leaving the household none next year: refused.
#[test]
fn a_review_for_an_earlier_year_than_the_latest_decision_is_refused() {
    let mut book = Folded::new();
    let id = "0100007-000001";
    book.register(id, 1);
    let mut next_year = poor_inputs();
    next_year.review_year = 2027;
    book.record(Command::Classify {
        household: hh(id),
        inputs: next_year,
        decided_on: d("2026-11-20"),
        corrects: None,
    });
    let mut this_year = poor_inputs();
    this_year.review_year = 2026;
    assert_eq!(
        book.decide(&Command::Classify {
            household: hh(id),
            inputs: this_year,
            decided_on: d("2026-12-01"),
            corrects: None,
        })
        .err(),
        Some(Rejection::ReviewYearBehindLatest {
            latest: 2027,
            review_year: 2026,
        })
    );
}

/// A refused registration appends nothing, so it could be asked again and again: it
/// names the household holding a citizen only to staff of that household's unit, never
/// where else in the country a person is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_held_outside_the_callers_unit_is_not_named() {
    let w = world().await;
    register_in(&w.service, "0100007-000001", &person("001085012345", None))
        .await
        .unwrap();
    // Another commune of the same province, by an officer of that commune.
    let commune_officer = staff(Role::CreditOfficer, "0100008");
    let asked = w
        .service
        .register(
            &rq(&commune_officer, "reg:0100008-000001"),
            &hh("0100008-000001"),
            Area::Rural,
            d("2026-01-05"),
            &person("001085012345", None),
        )
        .await;
    assert_eq!(refused(asked), Rejection::CitizenRegisteredOutsideUnit);
    // The province's officer, whose unit holds it, is told which household.
    let asked = register_in(&w.service, "0100008-000002", &person("001085012345", None)).await;
    assert_eq!(
        refused(asked),
        Rejection::CitizenAlreadyRegistered {
            household: "0100007-000001".into()
        }
    );
}

/// The book keeps each recorded death by citizen, and a grant names a citizen of the
/// household (a death recorded here then finds the entitlement); both survive a snapshot.
#[test]
fn deaths_and_the_citizens_grants_pay_are_kept_and_survive_a_snapshot() {
    use ansinh::domain::payments::CommandKind as Pay;
    let id = "0100007-000001";
    let mut book = Folded::new();
    book.record(Command::Registry(Change::Registered {
        household: hh(id),
        area: Area::Rural,
        members: 3,
        citizens: vec![[1; 32], [2; 32], [3; 32]],
        sealed: vec![1],
        on: d("2026-01-05"),
    }));
    let grant_to = |member: &str, citizen: u8| {
        let mut kind = allowance(id);
        if let Pay::Grant {
            beneficiary,
            citizen: named,
            ..
        } = &mut kind
        {
            beneficiary.member = ansinh::domain::payments::ids::MemberRef::parse(member).unwrap();
            *named = Some([citizen; 32]);
        }
        payment_command(kind, "2026-10-01")
    };
    assert_eq!(
        book.decide(&grant_to("m3", 9)).unwrap_err(),
        Rejection::NotAMember {
            household: id.into()
        }
    );
    book.record(grant_to("m3", 3));
    for (citizen, on, left) in [
        (2, "2026-10-10", vec![[1; 32], [3; 32]]),
        (3, "2026-11-15", vec![[1; 32]]),
    ] {
        book.record(Command::Registry(Change::MemberDied {
            household: hh(id),
            citizen: [citizen; 32],
            members: 0,
            citizens: left,
            sealed: vec![1],
            on: d(on),
        }));
    }
    assert_eq!(
        book.0.registry.deaths,
        [([2; 32], d("2026-10-10")), ([3; 32], d("2026-11-15"))].into()
    );
    assert_eq!(book.0.payments.entitlements[&1].citizen, Some([3; 32]));
    let snapshot = ansinh::book::snapshot::encode(&book.0);
    assert_eq!(ansinh::book::snapshot::decode(&snapshot).unwrap(), book.0);
}

/// One allowance per person is kept for the citizen: after a death shifts the positions,
/// the same citizen under their new position is refused, another citizen now at the old
/// one is granted, and a book read back from its snapshot decides both alike.
#[test]
fn a_grant_after_the_positions_shift_is_decided_for_the_citizen() {
    use ansinh::domain::payments::CommandKind as Pay;
    use ansinh::domain::payments::Rejection as PaymentRejection;
    let id = "0100007-000001";
    let mut book = Folded::new();
    book.record(Command::Registry(Change::Registered {
        household: hh(id),
        area: Area::Rural,
        members: 3,
        citizens: vec![[1; 32], [2; 32], [3; 32]],
        sealed: vec![1],
        on: d("2026-01-05"),
    }));
    let grant_to = |member: &str, citizen: u8| {
        let mut kind = allowance(id);
        if let Pay::Grant {
            beneficiary,
            citizen: named,
            ..
        } = &mut kind
        {
            beneficiary.member = ansinh::domain::payments::ids::MemberRef::parse(member).unwrap();
            *named = Some([citizen; 32]);
        }
        payment_command(kind, "2026-10-01")
    };
    // Citizen 3 is m3; citizen 2 dies, and citizen 3 is m2 from then on.
    book.record(grant_to("m3", 3));
    book.record(Command::Registry(Change::MemberDied {
        household: hh(id),
        citizen: [2; 32],
        members: 2,
        citizens: vec![[1; 32], [3; 32]],
        sealed: vec![1],
        on: d("2026-09-10"),
    }));
    let same_citizen =
        Rejection::Payment(PaymentRejection::ActiveEntitlementExists { entitlement: 1 });
    assert_eq!(book.decide(&grant_to("m2", 3)).unwrap_err(), same_citizen);
    // A fourth citizen joins, as m3.
    book.record(Command::Registry(Change::MembersChanged {
        household: hh(id),
        members: 3,
        citizens: vec![[1; 32], [3; 32], [4; 32]],
        sealed: vec![1],
        on: d("2026-09-20"),
        reason: "born".into(),
    }));
    let read_back =
        ansinh::book::snapshot::decode(&ansinh::book::snapshot::encode(&book.0)).unwrap();
    assert_eq!(read_back, book.0);
    for decided in [&book.0, &read_back] {
        assert_eq!(
            decided
                .decide(&grant_to("m2", 3), &branch_manager())
                .unwrap_err(),
            same_citizen
        );
        assert!(
            decided
                .decide(&grant_to("m3", 4), &branch_manager())
                .is_ok()
        );
    }
}

/// A correction names the decision it corrects by its partition sequence, is recorded
/// with it, and is decided with what the household held before that decision; the book
/// keeps what a correction needs through a snapshot, and a standing a move carried in
/// (decided in the partition the household left) is corrected nowhere here.
#[test]
fn a_correction_names_the_latest_decision_by_its_sequence_and_survives_a_snapshot() {
    use ansinh::domain::eligibility::Status;
    use ansinh::domain::loans::StandingBefore;
    let id = "0100007-000001";
    let mut book = Folded::new();
    book.register(id, 1);
    // Poor by mistake: the household's first decision.
    let mistaken = book.record(Command::Classify {
        household: hh(id),
        inputs: poor_inputs(),
        decided_on: d("2026-01-10"),
        corrects: None,
    });
    let not_poor = ClassificationInputs {
        income_per_person_month: Decimal::from(4_000_000),
        deprived: BTreeSet::new(),
        ..poor_inputs()
    };
    let correction = |corrects| Command::Classify {
        household: hh(id),
        inputs: not_poor.clone(),
        decided_on: d("2026-01-12"),
        corrects: Some(corrects),
    };
    // The registration is no decision; nor is a sequence past any chain.
    for wrong in [mistaken - 1, u64::MAX] {
        let refused = book.decide(&correction(wrong)).unwrap_err();
        assert_eq!(
            refused,
            Rejection::CorrectsNotLatest {
                corrects: wrong,
                latest: Some(mistaken)
            }
        );
    }
    assert_eq!(
        book.decide(&correction(mistaken - 1))
            .unwrap_err()
            .to_string(),
        format!(
            "decision {} is not the household's latest decision in this partition (that is {mistaken}); only the latest can be corrected",
            mistaken - 1
        )
    );
    let proposed = book.decide(&correction(mistaken)).unwrap();
    let Payload::EligibilityDecided(recorded) = &proposed[0].payload else {
        panic!("{proposed:?}")
    };
    assert_eq!(
        (
            recorded.corrects,
            recorded.status.as_str(),
            recorded.escaped_until.as_str()
        ),
        (mistaken, "not_poor", "")
    );
    let corrected = book.record(correction(mistaken));
    let standing = &book.0.loans.households[&hh(id)];
    assert_eq!(standing.status, Status::NotPoor);
    assert_eq!(
        (standing.review_year, standing.before),
        (
            2026,
            Some(StandingBefore {
                prior_class: None,
                escaped_until: None
            })
        )
    );
    assert_eq!(standing.decision_event, codec::main_id(corrected));
    let snapshot = ansinh::book::snapshot::encode(&book.0);
    assert_eq!(ansinh::book::snapshot::decode(&snapshot).unwrap(), book.0);

    // The household moves to province 79 with its standing.
    let to = "7900007-000001";
    let moved_out = book
        .decide(&Command::MoveOut {
            household: hh(id),
            to: hh(to),
            on: d("2026-03-01"),
        })
        .unwrap();
    let Payload::HouseholdMovedOut(out) = &moved_out[0].payload else {
        panic!("{moved_out:?}")
    };
    let mut after = Folded(PartitionBook::new("79"));
    let arrived = after.record(Command::MoveIn(Box::new(ansinh::book::Arrival {
        change: Change::MovedIn {
            household: hh(to),
            from: hh(id),
            area: Area::Rural,
            members: 1,
            citizens: vec![[1; 32]],
            sealed: vec![1],
            on: d("2026-03-01"),
        },
        from_partition: "01".into(),
        from_sequence: corrected + 1,
        from_hash: [9; 32],
        standing: out.standing.clone(),
        paid_before_move: Vec::new(),
    })));
    assert_eq!(after.0.loans.households[&hh(to)].before, None);
    assert_eq!(
        after
            .decide(&Command::Classify {
                household: hh(to),
                inputs: not_poor.clone(),
                decided_on: d("2026-03-05"),
                corrects: Some(arrived),
            })
            .unwrap_err(),
        Rejection::CorrectsNotLatest {
            corrects: arrived,
            latest: None
        }
    );
}

/// A move retried through a process that never saw it land (its log index has not caught
/// up) is answered with the first receipts of both halves, as any retry of an idempotent
/// command that finds its work done: not refused because the destination id, made by
/// that very move, is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_retried_through_a_process_that_never_saw_it_gets_its_receipts() {
    let (config, _dir, a, b) = two_processes().await;
    let (from, to) = (hh("0100007-000001"), hh("7900001-000001"));
    register_in(&a, from.as_str(), &person("001085012345", None))
        .await
        .unwrap();
    let officer = staff(Role::CreditOfficer, "01");
    let request = rq(&officer, "move");
    let (out, arrived) = a
        .move_household(&request, &from, &to, Area::Urban, d("2026-05-01"))
        .await
        .unwrap();
    assert!(!out.duplicate && !arrived.duplicate);
    let (out_again, arrived_again) = b
        .move_household(&request, &from, &to, Area::Urban, d("2026-05-01"))
        .await
        .unwrap();
    assert!(out_again.duplicate && arrived_again.duplicate);
    assert_eq!(
        (out_again.sequence, arrived_again.sequence),
        (out.sequence, arrived.sequence)
    );
    assert_eq!(
        (
            events_of(&config, "01").await as u64,
            events_of(&config, "79").await as u64
        ),
        (out.sequence, arrived.sequence),
        "nothing appended by the retry"
    );
    // The same move under another key is another request: refused, nothing appended.
    let another = b
        .move_household(
            &rq(&officer, "move-again"),
            &from,
            &to,
            Area::Urban,
            d("2026-05-01"),
        )
        .await;
    assert!(
        matches!(another, Err(ServiceError::Rejected(_))),
        "{another:?}"
    );
    assert_eq!(
        (
            events_of(&config, "01").await as u64,
            events_of(&config, "79").await as u64
        ),
        (out.sequence, arrived.sequence)
    );
}

/// The run's completion among `proposals`, as the book would fold it.
fn run_completed(proposals: &[Proposal]) -> ansinh::domain::payments::EventBody {
    match &proposals
        .last()
        .expect("a run records its completion")
        .payload
    {
        Payload::PaymentRecorded(r) => {
            ansinh::book::payments::event_of(0, Some(&branch_manager()), r)
                .unwrap()
                .body
        }
        other => panic!("{other:?}"),
    }
}

/// A member change that takes a citizen out of a household frees them to join another,
/// which may grant them the same allowance: the household they left pays them no more,
/// and the run names its entitlement. An erasure, which frees every citizen of the
/// household, pays them no more either, named for the erasure. A beneficiary who died in
/// the household is not one who left: paid through the month of death, named `deceased`
/// after it.
#[test]
fn a_household_pays_no_allowance_to_a_citizen_who_left_it() {
    use ansinh::domain::payments::EventBody;
    let (left, joined, erased, died) = (
        "0100007-000001",
        "0100007-000002",
        "0100007-000003",
        "0100007-000004",
    );
    let register = |household: &str, citizens: Vec<[u8; 32]>| {
        Command::Registry(Change::Registered {
            household: hh(household),
            area: Area::Rural,
            members: citizens.len() as u32,
            citizens,
            sealed: vec![1],
            on: d("2026-01-05"),
        })
    };
    let grant = |household: &str, member: &str, citizen: [u8; 32], from: &str| {
        allowance_to(household, member, citizen, from, "2026-10-01")
    };
    let mut book = Folded::new();
    // The citizen [2; 32] is m2 of `left`, paid there from October.
    book.record(register(left, vec![[1; 32], [2; 32]]));
    book.record(grant(left, "m2", [2; 32], "2026-10"));
    book.record(register(erased, vec![[3; 32]]));
    book.record(grant(erased, "m1", [3; 32], "2026-10"));
    book.record(register(died, vec![[4; 32], [5; 32]]));
    book.record(grant(died, "m1", [4; 32], "2026-10"));
    for (period, on) in [
        ("2026-10", "2026-10-01"),
        ("2026-11", "2026-10-01"),
        ("2026-12", "2026-10-01"),
    ] {
        book.record(budget_for(period, on));
    }
    book.record(run("2026-10", "2026-10-02"));

    // They move to `joined` and are granted there from November.
    book.record(Command::Registry(Change::MembersChanged {
        household: hh(left),
        members: 1,
        citizens: vec![[1; 32]],
        sealed: vec![1],
        on: d("2026-10-15"),
        reason: "moved to household 000002".into(),
    }));
    book.record(register(joined, vec![[2; 32]]));
    book.record(grant(joined, "m1", [2; 32], "2026-11"));
    book.record(Command::Registry(Change::Erased {
        household: hh(erased),
        on: d("2026-10-16"),
        reference: "request 2026/3".into(),
    }));
    book.record(Command::Registry(Change::MemberDied {
        household: hh(died),
        citizen: [4; 32],
        members: 1,
        citizens: vec![[5; 32]],
        sealed: vec![1],
        on: d("2026-11-10"),
    }));

    let november = book.decide(&run("2026-11", "2026-11-11")).unwrap();
    let paid: Vec<String> = november
        .iter()
        .filter_map(|p| match &p.payload {
            Payload::PaymentRecorded(r) => {
                match ansinh::book::payments::event_of(0, Some(&branch_manager()), r)
                    .unwrap()
                    .body
                {
                    EventBody::InstructionIssued { instruction, .. } => {
                        Some(instruction.beneficiary.household.to_string())
                    }
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        paid,
        [died, joined],
        "the month of death is paid; once each"
    );
    match run_completed(&november) {
        EventBody::PaymentRunCompleted {
            issued,
            left_unpaid:
                LeftUnpaid {
                    not_a_member,
                    deceased,
                    erased,
                    ..
                },
            ..
        } => assert_eq!(
            (issued, not_a_member, deceased, erased),
            (2, vec![1], vec![], vec![2])
        ),
        other => panic!("{other:?}"),
    }
    book.record(run("2026-11", "2026-11-11"));
    match run_completed(&book.decide(&run("2026-12", "2026-12-01")).unwrap()) {
        EventBody::PaymentRunCompleted {
            issued,
            left_unpaid:
                LeftUnpaid {
                    not_a_member,
                    deceased,
                    erased,
                    ..
                },
            ..
        } => assert_eq!(
            (issued, not_a_member, deceased, erased),
            (1, vec![1], vec![3], vec![2])
        ),
        other => panic!("{other:?}"),
    }
}

/// An erased household is paid nothing more: its data key is destroyed, so no payee can
/// be told apart and nobody verified as the beneficiary. A member without a citizen id (a
/// child) has no citizen the erasure frees, and was still paid month after month.
#[test]
fn an_erased_household_pays_no_member_even_one_without_a_citizen_id() {
    use ansinh::domain::payments::CommandKind as Pay;
    use ansinh::domain::payments::EventBody;
    use ansinh::domain::payments::ids::MemberRef;
    use ansinh::domain::payments::month::Month;
    let household = "0100007-000001";
    let grant = |member: &str, citizen: Option<[u8; 32]>| {
        let mut kind = allowance(household);
        if let Pay::Grant {
            beneficiary,
            citizen: c,
            ..
        } = &mut kind
        {
            beneficiary.member = MemberRef::parse(member).unwrap();
            *c = citizen;
        }
        payment_command(kind, "2026-10-01")
    };
    let mut book = Folded::new();
    // The head has a citizen id, the child m2 none.
    book.record(Command::Registry(Change::Registered {
        household: hh(household),
        area: Area::Rural,
        members: 2,
        citizens: vec![[6; 32]],
        sealed: vec![1],
        on: d("2026-01-05"),
    }));
    book.record(grant("m1", Some([6; 32])));
    book.record(grant("m2", None));
    for period in ["2026-10", "2026-11"] {
        book.record(budget_for(period, "2026-10-01"));
    }
    book.record(run("2026-10", "2026-10-02"));
    book.record(Command::Registry(Change::Erased {
        household: hh(household),
        on: d("2026-10-16"),
        reference: "request 2026/4".into(),
    }));

    let november = book.decide(&run("2026-11", "2026-11-02")).unwrap();
    let issued: Vec<String> = november
        .iter()
        .filter_map(|p| match &p.payload {
            Payload::PaymentRecorded(r) => {
                match ansinh::book::payments::event_of(0, Some(&branch_manager()), r)
                    .unwrap()
                    .body
                {
                    EventBody::InstructionIssued { instruction, .. } => {
                        Some(instruction.id.to_string())
                    }
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        issued,
        Vec::<String>::new(),
        "nobody of the erased household"
    );
    match run_completed(&november) {
        EventBody::PaymentRunCompleted {
            issued,
            left_unpaid:
                LeftUnpaid {
                    not_a_member,
                    erased,
                    ..
                },
            ..
        } => assert_eq!((issued, not_a_member, erased), (0, vec![], vec![1, 2])),
        other => panic!("{other:?}"),
    }
    // Nor is anyone of it granted anew.
    let mut again = allowance(household);
    if let Pay::Grant {
        beneficiary, from, ..
    } = &mut again
    {
        beneficiary.member = MemberRef::parse("m2").unwrap();
        *from = Month::parse("2026-11").unwrap();
    }
    assert!(matches!(
        book.decide(&payment_command(again, "2026-11-02")),
        Err(Rejection::Payment(
            ansinh::domain::payments::Rejection::HouseholdErased { .. }
        ))
    ));
}

/// The death of a household's only member with a citizen id (young children remain) is
/// recorded with no sealed data and no citizens, since no one could head its record; the
/// household stays, and may not move until its members are recorded again with a guardian
/// (its arrival would list no citizen). A death leaving another citizen still comes sealed.
#[test]
fn the_death_of_the_only_member_with_a_citizen_id_is_recorded_without_sealing_again() {
    use ansinh::domain::registry::Residence;
    let (alone, two) = ("0100007-000001", "0100007-000002");
    let mut book = Folded::new();
    book.record(Command::Registry(Change::Registered {
        household: hh(alone),
        area: Area::Rural,
        members: 3,
        citizens: vec![[7; 32]],
        sealed: vec![1],
        on: d("2026-01-05"),
    }));
    book.record(Command::Registry(Change::Registered {
        household: hh(two),
        area: Area::Rural,
        members: 2,
        citizens: vec![[8; 32], [9; 32]],
        sealed: vec![1],
        on: d("2026-01-05"),
    }));
    let unsealed_death = |household: &str, citizen: [u8; 32]| {
        Command::Registry(Change::MemberDied {
            household: hh(household),
            citizen,
            members: 0,
            citizens: vec![],
            sealed: vec![],
            on: d("2026-03-01"),
        })
    };
    assert_eq!(
        book.decide(&unsealed_death(two, [8; 32])),
        Err(Rejection::SealedDataMalformed { bytes: 0 })
    );
    book.record(unsealed_death(alone, [7; 32]));
    let h = &book.0.registry.households[&hh(alone)];
    assert_eq!(
        (h.members, h.citizens.len(), &h.residence),
        (2, 0, &Residence::Active)
    );
    assert_eq!(book.0.registry.deaths.get(&[7; 32]), Some(&d("2026-03-01")));

    let move_out = Command::MoveOut {
        household: hh(alone),
        to: hh("0100008-000001"),
        on: d("2026-03-02"),
    };
    assert_eq!(
        book.decide(&move_out),
        Err(Rejection::NoMemberWithCitizenId {
            household: alone.into()
        })
    );
    book.record(Command::Registry(Change::MembersChanged {
        household: hh(alone),
        members: 3,
        citizens: vec![[10; 32]],
        sealed: vec![1],
        on: d("2026-03-02"),
        reason: "the children's aunt becomes their guardian".into(),
    }));
    assert!(book.decide(&move_out).is_ok());
}
