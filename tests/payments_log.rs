//! Cashless payments through the real ledger on a real nats-server: runs are
//! idempotent, racing runs never exceed the budget, gateway posts are idempotent
//! forever and out-of-order posts have defined outcomes, a restart loses nothing.

mod common;

use std::path::Path;
use std::sync::Arc;

use ansinh::access::{Caller, Role};
use ansinh::book::payments::SignedPost;
use ansinh::chain::Partition;
use ansinh::domain::Rejection;
use ansinh::domain::payments::CommandKind;
use ansinh::domain::payments::budget::BudgetKey;
use ansinh::domain::payments::entitlements::{Channel, Terms};
use ansinh::domain::payments::ids::{
    BeneficiaryRef, CategoryId, CommuneId, GatewayId, GatewayTxnId, HouseholdRef, InstructionRef,
    MemberRef, ProgrammeId,
};
use ansinh::domain::payments::instructions::{GatewayPost, Outcome};
use ansinh::domain::payments::month::Month;
use ansinh::log::{LogConfig, Receipt};
use ansinh::projection::Projector;
use ansinh::service::{POST_REPLAY_WINDOW_MS, Request, Service, ServiceError};
use chrono::NaiveDate;
use common::*;
use rust_decimal::Decimal;

const COMMUNE: &str = "0100007";
const NOW_MS: i64 = 1_790_000_000_000;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

async fn service_at(config: &LogConfig, dir: &Path) -> Service {
    let ledger = ledger_at(config, dir).await;
    let vault = Arc::new(vault_for(&ledger, &secrets_of(config)).await);
    let projector = Arc::new(Projector::of_store(ledger.store()).unwrap());
    Service::new(ledger, vault, projector)
}

fn manager() -> Caller {
    Caller {
        id: "staff:m".into(),
        role: Role::BranchManager,
        unit: "01".into(),
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

fn p01() -> Partition {
    Partition::new("01").unwrap()
}

fn budget() -> BudgetKey {
    BudgetKey {
        programme: ProgrammeId::parse("SOCIAL_ASSISTANCE_MONTHLY").unwrap(),
        commune: CommuneId::parse(COMMUNE).unwrap(),
        period: Month::parse("2026-10").unwrap(),
    }
}

fn beneficiary(n: u32) -> BeneficiaryRef {
    BeneficiaryRef {
        household: HouseholdRef::parse(&format!("{COMMUNE}-{n:06}")).unwrap(),
        member: MemberRef::parse("m1").unwrap(),
    }
}

/// An elderly member of household `n` of COMMUNE, paid by bank "VCB" from October 2026.
fn grant(n: u32) -> CommandKind {
    grant_in(COMMUNE, n)
}

/// An elderly member of household `n` of `commune`, paid by bank "VCB" from October 2026.
fn grant_in(commune: &str, n: u32) -> CommandKind {
    CommandKind::Grant {
        programme: ProgrammeId::parse("SOCIAL_ASSISTANCE_MONTHLY").unwrap(),
        beneficiary: BeneficiaryRef {
            household: HouseholdRef::parse(&format!("{commune}-{n:06}")).unwrap(),
            member: MemberRef::parse("m1").unwrap(),
        },
        commune: CommuneId::parse(commune).unwrap(),
        from: Month::parse("2026-10").unwrap(),
        terms: Terms {
            category: CategoryId::parse("ELDERLY_80_PLUS_NO_PENSION").unwrap(),
            channel: Channel::BankAccount {
                gateway: GatewayId::parse("VCB").unwrap(),
            },
            provincial_base: None,
        },
        citizen: None,
    }
}

/// Two elderly beneficiaries (coefficient 1.0, base 500,000) paid by bank "VCB",
/// and a budget of exactly two payments for October 2026.
async fn setup(service: &Service) {
    let m = manager();
    allocate(service, 1_000_000).await;
    for n in 1..=2 {
        register_household(service, &format!("{COMMUNE}-{n:06}"), n).await;
        service
            .payment(
                &rq(&m, &format!("grant-{n}")),
                &p01(),
                grant(n),
                d("2026-10-01"),
            )
            .await
            .unwrap();
    }
}

/// Allocates `amount` VND to the October 2026 budget.
async fn allocate(service: &Service, amount: i64) {
    service
        .payment(
            &rq(&manager(), "alloc"),
            &p01(),
            CommandKind::Allocate {
                budget: budget(),
                amount: Decimal::from(amount),
            },
            d("2026-10-01"),
        )
        .await
        .unwrap();
}

fn run(commune: Option<&str>) -> CommandKind {
    CommandKind::Run {
        period: Month::parse("2026-10").unwrap(),
        commune: commune.map(|c| CommuneId::parse(c).unwrap()),
    }
}

fn post(gateway: &str, n: u32, outcome: Outcome, txn: &str, amount: i64) -> GatewayPost {
    GatewayPost {
        gateway: GatewayId::parse(gateway).unwrap(),
        instruction: InstructionRef::parse(&format!("pay:{n}:2026-10:1")).unwrap(),
        outcome,
        gateway_txn: GatewayTxnId::parse(txn).unwrap(),
        amount: Decimal::from(amount),
        beneficiary: beneficiary(n),
    }
}

fn signed(p: &GatewayPost) -> SignedPost {
    // The transport verified the signature; the ledger keeps the exact bytes.
    SignedPost {
        bytes: serde_json::to_vec(p).unwrap(),
        signature: vec![7; 64],
        key_id: "test-key".into(),
        format: Default::default(),
    }
}

async fn send(
    service: &Service,
    p: GatewayPost,
    posted_at: i64,
    now: i64,
) -> Result<(Receipt, String), ServiceError> {
    let s = signed(&p);
    service
        .gateway_post(&p01(), p, s, posted_at, now, d("2026-10-10"), None)
        .await
        .map(|(r, event)| (r, event.kind))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_issues_one_instruction_per_entitlement_and_month_once() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let service = service_at(&config, dir.path()).await;
    setup(&service).await;
    let m = manager();
    let first = service
        .payment(&rq(&m, "run-1"), &p01(), run(None), d("2026-10-05"))
        .await
        .unwrap();
    let after_first = event_count(&config).await;
    // Allocation, two registrations and two grants, then two instructions and the
    // run's closing event.
    assert_eq!(after_first, 1 + 2 + 2 + 3);
    assert_eq!(first.sequence, 8);
    // Running again, under another key, adds nothing.
    let again = service
        .payment(
            &rq(&m, "run-2"),
            &p01(),
            run(Some(COMMUNE)),
            d("2026-10-06"),
        )
        .await;
    assert!(
        matches!(
            again,
            Err(ServiceError::Rejected(Rejection::NothingToRecord))
        ),
        "{again:?}"
    );
    assert_eq!(event_count(&config).await, after_first);
    verified(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_larger_than_one_commit_is_committed_whole_in_one_message() {
    // 999 instructions and the run's closing event: more events than the writer gathers
    // into one commit, but one command, so all or none of it is stored.
    const N: u32 = 999;
    let events = N as usize + 1;
    assert!(events > ansinh::log::writer::BATCH_EVENTS_MAX);
    assert!(events <= ansinh::log::writer::COMMAND_EVENTS_MAX);
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let service = service_at(&config, dir.path()).await;
    let m = manager();
    allocate(&service, 500_000 * i64::from(N)).await;
    let mut set = tokio::task::JoinSet::new();
    for n in 1..=N {
        let service = service.clone();
        set.spawn(async move {
            register_household(&service, &format!("{COMMUNE}-{n:06}"), n).await;
            let key = format!("grant-{n}");
            service
                .payment(&rq(&manager(), &key), &p01(), grant(n), d("2026-10-01"))
                .await
                .unwrap();
        });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
    let before = event_count(&config).await;
    let receipt = service
        .payment(&rq(&m, "run"), &p01(), run(None), d("2026-10-05"))
        .await
        .unwrap();
    assert_eq!(event_count(&config).await, before + events as u64);
    assert_eq!(receipt.sequence, before + events as u64);
    let stored =
        ansinh::log::reader::at_sequence(&stream_of(&config).await, receipt.stream_sequence)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(stored.len(), events, "the whole run is one frame");
    verified(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racing_runs_never_pay_beyond_the_allocation() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let a = service_at(&config, &dir.path().join("a")).await;
    let b = service_at(&config, &dir.path().join("b")).await;
    setup(&a).await;
    let m = manager();
    let (req_a, req_b) = (rq(&m, "race-a"), rq(&m, "race-b"));
    let partition = p01();
    let (ra, rb) = tokio::join!(
        a.payment(&req_a, &partition, run(None), d("2026-10-05")),
        b.payment(&req_b, &partition, run(Some(COMMUNE)), d("2026-10-05")),
    );
    assert_eq!(
        [&ra, &rb].iter().filter(|r| r.is_ok()).count(),
        1,
        "{ra:?} {rb:?}"
    );
    // Fold the log independently: exactly two instructions, holds within the allocation.
    let mut stream = stream_of(&config).await;
    let events =
        ansinh::payments_report::payment_events(&mut stream, &config, &keys_partition(), None)
            .await
            .unwrap();
    let book = ansinh::domain::payments::replay(&events["01"]);
    assert_eq!(book.instructions.len(), 2);
    let budget = book.budget(&budget());
    assert!(budget.is_within_allocation());
    assert_eq!(budget.reserved + budget.posted, Decimal::from(1_000_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_posts_are_idempotent_forever_and_out_of_order_posts_are_defined() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let service = service_at(&config, dir.path()).await;
    setup(&service).await;
    let m = manager();
    service
        .payment(&rq(&m, "run"), &p01(), run(None), d("2026-10-05"))
        .await
        .unwrap();

    // Settled, then the very same post again a second later, then a year later
    // (outside the replay window: still the first answer, nothing appended).
    let (first, kind) = send(
        &service,
        post("VCB", 1, Outcome::Settled, "T1", 500_000),
        NOW_MS,
        NOW_MS,
    )
    .await
    .unwrap();
    assert_eq!(kind, "GatewayPostAccepted");
    let count = event_count(&config).await;
    let year_ms = 365 * 24 * 3_600 * 1_000;
    for (at, now) in [(NOW_MS + 1_000, NOW_MS + 1_000), (NOW_MS, NOW_MS + year_ms)] {
        let (again, kind) = send(
            &service,
            post("VCB", 1, Outcome::Settled, "T1", 500_000),
            at,
            now,
        )
        .await
        .unwrap();
        assert!(again.duplicate);
        assert_eq!((again.sequence, again.hash), (first.sequence, first.hash));
        assert_eq!(kind, "GatewayPostAccepted");
    }
    assert_eq!(event_count(&config).await, count);

    // A new post dated outside the replay window is refused and appends nothing.
    let stale = send(
        &service,
        post("VCB", 2, Outcome::Settled, "T9", 500_000),
        NOW_MS - POST_REPLAY_WINDOW_MS - 1,
        NOW_MS,
    )
    .await;
    assert!(
        matches!(
            stale,
            Err(ServiceError::Rejected(
                Rejection::PostOutsideReplayWindow { .. }
            ))
        ),
        "{stale:?}"
    );
    assert_eq!(event_count(&config).await, count);

    // Another gateway posting for VCB's instruction, and a wrong amount: refused,
    // recorded (so reconciliation lists them), and never a payment.
    let (_, kind) = send(
        &service,
        post("MOMO", 2, Outcome::Settled, "X1", 500_000),
        NOW_MS,
        NOW_MS,
    )
    .await
    .unwrap();
    assert_eq!(kind, "GatewayPostRefused");
    let (_, kind) = send(
        &service,
        post("VCB", 2, Outcome::Settled, "T2", 499_000),
        NOW_MS,
        NOW_MS,
    )
    .await
    .unwrap();
    assert_eq!(kind, "GatewayPostRefused");

    // A post for household 1's instruction naming household 2 (a bank's mix-up): refused,
    // and recorded under household 1, whose instruction it is, not in household 2's
    // history.
    let mixed_up = GatewayPost {
        beneficiary: beneficiary(2),
        ..post("VCB", 1, Outcome::Settled, "X7", 500_000)
    };
    let (mixed_up, kind) = send(&service, mixed_up, NOW_MS, NOW_MS).await.unwrap();
    assert_eq!(kind, "GatewayPostRefused");
    let recorded = service.ledger.event_of(&mixed_up).await.unwrap();
    let household = |n| format!("household:{}", beneficiary(n).household);
    assert!(
        recorded.subjects.contains(&household(1)),
        "{:?}",
        recorded.subjects
    );
    assert!(
        !recorded.subjects.contains(&household(2)),
        "{:?}",
        recorded.subjects
    );

    // Returned after settled: accepted, reverses. Settled after returned: refused.
    let (_, kind) = send(
        &service,
        post("VCB", 1, Outcome::Returned, "T1", 500_000),
        NOW_MS,
        NOW_MS,
    )
    .await
    .unwrap();
    assert_eq!(kind, "GatewayPostAccepted");
    let (_, kind) = send(
        &service,
        post("VCB", 1, Outcome::Settled, "T3", 500_000),
        NOW_MS,
        NOW_MS,
    )
    .await
    .unwrap();
    assert_eq!(kind, "GatewayPostRefused");

    // The signed bytes and the signature are in the log.
    let mut stream = stream_of(&config).await;
    let mut signed_posts = 0;
    ansinh::verify::verify_with(&mut stream, &config, &keys_partition(), None, |_, env| {
        if let Some(ansinh::proto::envelope::Payload::PaymentRecorded(p)) = &env.payload {
            if p.kind.starts_with("GatewayPost") {
                assert!(!p.signed_post.is_empty() && !p.post_signature.is_empty());
                signed_posts += 1;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(signed_posts, 6);

    // Reconciliation: one settled (then returned), the refusals listed as mismatches.
    let read_again = stream.clone();
    let from_log = |as_of: NaiveDate| {
        let (mut stream, config) = (read_again.clone(), config.clone());
        async move {
            ansinh::payments_report::reconcile_from_log(
                &mut stream,
                &config,
                &keys_partition(),
                as_of,
                10,
                |_| {},
            )
            .await
            .unwrap()
        }
    };
    let rec = from_log(d("2026-12-31")).await;
    // Folded as the log is read, it is the fold of the partition's payment events.
    let events =
        ansinh::payments_report::payment_events(&mut stream, &config, &keys_partition(), None)
            .await
            .unwrap();
    assert_eq!(
        rec["01"],
        ansinh::domain::payments::reconcile::reconcile(&events["01"], d("2026-12-31"), 10)
    );
    let vcb: Vec<_> = rec["01"]
        .days
        .iter()
        .filter(|((g, _), _)| g.to_string() == "VCB")
        .map(|(_, day)| day)
        .collect();
    let instructed: u64 = vcb.iter().map(|d| d.instructed.count).sum();
    let returned: u64 = vcb.iter().map(|d| d.returned.count).sum();
    let mismatches: usize = rec["01"].days.values().map(|d| d.mismatches.len()).sum();
    assert_eq!((instructed, returned), (2, 1));
    assert!(mismatches >= 3, "{mismatches}");

    // The projections answer for one day as the log does (lines, mismatches with their
    // event ids, instructions still pending), for every day the log reports and one it
    // does not, as of days after the last event; as of an earlier day they decline.
    let db = sled::Config::new().temporary(true).open().unwrap();
    let projector = Projector::scratch(&db).unwrap();
    projector.catch_up(&mut stream, &config).await.unwrap();
    let latest = rec["01"].days.keys().map(|(_, day)| *day).max().unwrap();
    let mut days: Vec<NaiveDate> = rec["01"].days.keys().map(|(_, day)| *day).collect();
    days.push(d("2026-01-01"));
    let mut pending_seen = 0;
    for as_of in [latest, d("2026-12-31"), d("2027-06-30")] {
        let report = from_log(as_of).await;
        // Every day at once, from the projections: the same report.
        let every_day =
            ansinh::payments_report::reconcile_every_day_projected(&projector, as_of, 10)
                .unwrap()
                .expect("as of the last day or later the projections answer");
        assert_eq!(every_day, report, "every day as of {as_of}");
        for &day in &days {
            let projected =
                ansinh::payments_report::reconcile_day_projected(&projector, day, as_of, 10)
                    .unwrap()
                    .expect("as of the last day or later the projections answer");
            let from_log: std::collections::BTreeMap<_, _> = report["01"]
                .days
                .iter()
                .filter(|((_, d), _)| *d == day)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(projected["01"].days, from_log, "day {day} as of {as_of}");
            pending_seen += from_log
                .values()
                .map(|d| d.pending_overdue.count)
                .sum::<u64>();
        }
    }
    assert!(
        pending_seen > 0,
        "the scenario leaves an instruction pending"
    );
    let before_latest = latest.pred_opt().unwrap();
    assert_eq!(
        ansinh::payments_report::reconcile_day_projected(&projector, latest, before_latest, 10)
            .unwrap(),
        None
    );
    assert_eq!(
        ansinh::payments_report::reconcile_every_day_projected(&projector, before_latest, 10)
            .unwrap(),
        None
    );

    // The same day through the staff API: the report's lines, checked against their
    // schema; as of a day before the last events it is refused; another province's
    // teller may not read it.
    let staff_file = dir.path().join("staff.json");
    let add = |id: &str, role, unit: &str| {
        ansinh::http::auth::add_staff(&staff_file, id, role, unit).unwrap()
    };
    let auditor = add("staff:auditor", Role::Auditor, "");
    let stranger = add("staff:teller79", Role::Teller, "7900007");
    let api = ansinh::http::Api::new(
        service.clone(),
        ansinh::http::auth::StaffDirectory::load(&staff_file).unwrap(),
    )
    .await
    .unwrap();
    let (base, _stop) = common::serve(api).await;
    let client = reqwest::Client::new();
    let get = |token: String, path: String| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let schemas = ansinh::http::schema::Schemas::compile();
    let report = from_log(d("2026-12-31")).await;
    for day in &days {
        let (status, body) = get(
            auditor.clone(),
            format!("/v1/partitions/01/reconciliation/{day}?as_of=2026-12-31"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            schemas.validate("reconciliation-day.response", &body),
            Ok(())
        );
        let expected: Vec<serde_json::Value> = report["01"]
            .days
            .iter()
            .filter(|((_, d), _)| d == day)
            .map(|((g, _), line)| {
                let mut v = serde_json::to_value(line).unwrap();
                v["gateway"] = serde_json::json!(g.to_string());
                v
            })
            .collect();
        assert_eq!(body["gateways"], serde_json::json!(expected), "{day}");
    }
    let (status, body) = get(
        auditor.clone(),
        format!("/v1/partitions/01/reconciliation/{latest}?as_of={before_latest}"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = get(
        stranger,
        format!("/v1/partitions/01/reconciliation/{latest}?as_of=2026-12-31"),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = get(
        auditor,
        "/v1/partitions/01/reconciliation/2026-13-01".to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_restarted_between_instruction_and_settlement_loses_and_doubles_nothing() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let service = service_at(&config, dir.path()).await;
    setup(&service).await;
    let m = manager();
    service
        .payment(&rq(&m, "run"), &p01(), run(None), d("2026-10-05"))
        .await
        .unwrap();
    let before = event_count(&config).await;
    // Stop the ledger (its writer and its in-memory book go away) and start another
    // with an empty store: it knows nothing but the log, and must rebuild from it.
    let Service { ledger, .. } = service;
    ledger.close().await.unwrap();
    let restarted = service_at(&config, &dir.path().join("restarted")).await;
    let (_, kind) = send(
        &restarted,
        post("VCB", 1, Outcome::Settled, "T1", 500_000),
        NOW_MS,
        NOW_MS,
    )
    .await
    .unwrap();
    assert_eq!(kind, "GatewayPostAccepted");
    // The run again after the restart adds nothing.
    assert!(matches!(
        restarted
            .payment(&rq(&m, "run-again"), &p01(), run(None), d("2026-10-06"))
            .await,
        Err(ServiceError::Rejected(Rejection::NothingToRecord))
    ));
    assert_eq!(event_count(&config).await, before + 1);
    verified(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_to_a_household_the_registry_does_not_know_is_refused_and_appends_nothing() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let service = service_at(&config, dir.path()).await;
    setup(&service).await;
    let before = event_count(&config).await;
    let refused = service
        .payment(
            &rq(&manager(), "grant-unknown"),
            &p01(),
            grant(99),
            d("2026-10-01"),
        )
        .await;
    assert!(
        matches!(
            &refused,
            Err(ServiceError::Rejected(Rejection::HouseholdNotRegistered { household }))
                if household == &format!("{COMMUNE}-000099")
        ),
        "{refused:?}"
    );
    assert_eq!(event_count(&config).await, before);
}

/// Registers `count` households in `commune` (numbered from `first`), each with one
/// elderly member granted assistance from October 2026, and allocates exactly what
/// their October payments need.
async fn commune_of_beneficiaries(service: &Service, commune: &str, first: u32, count: u32) {
    let m = manager();
    let mut set = tokio::task::JoinSet::new();
    for n in first..first + count {
        let (service, commune) = (service.clone(), commune.to_string());
        set.spawn(async move {
            let household = format!("{commune}-{n:06}");
            register_household(&service, &household, n).await;
            let grant = grant_in(&commune, n);
            service
                .payment(
                    &rq(&manager(), &format!("grant-{n}")),
                    &p01(),
                    grant,
                    d("2026-10-01"),
                )
                .await
                .unwrap();
        });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
    let allocate = CommandKind::Allocate {
        budget: BudgetKey {
            commune: CommuneId::parse(commune).unwrap(),
            ..budget()
        },
        amount: Decimal::from(500_000 * i64::from(count)),
    };
    service
        .payment(
            &rq(&m, &format!("alloc-{commune}")),
            &p01(),
            allocate,
            d("2026-10-01"),
        )
        .await
        .unwrap();
}

/// The October 2026 instructions in the log, per entitlement.
async fn october_instructions(config: &LogConfig) -> std::collections::BTreeMap<u64, u32> {
    let mut stream = stream_of(config).await;
    let events =
        ansinh::payments_report::payment_events(&mut stream, config, &keys_partition(), None)
            .await
            .unwrap();
    let mut per_entitlement = std::collections::BTreeMap::new();
    for e in events.values().flatten() {
        if let ansinh::domain::payments::EventBody::InstructionIssued { instruction, .. } = &e.body
        {
            if instruction.id.month == Month::parse("2026-10").unwrap() {
                *per_entitlement
                    .entry(instruction.id.entitlement)
                    .or_default() += 1;
            }
        }
    }
    per_entitlement
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commune_of_10000_entitlements_is_paid_in_one_run() {
    // Since the 2025 merger a commune has ~1,000 monthly beneficiaries on average and
    // many far more; a run is one command, all or none, however large.
    const N: u32 = 10_000;
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let service = service_at(&config, dir.path()).await;
    commune_of_beneficiaries(&service, COMMUNE, 1, N).await;
    let before = event_count(&config).await;
    let started = std::time::Instant::now();
    let receipt = service
        .payment(
            &rq(&manager(), "run"),
            &p01(),
            run(Some(COMMUNE)),
            d("2026-10-05"),
        )
        .await
        .unwrap();
    eprintln!(
        "a run of {N} instructions took {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(event_count(&config).await, before + u64::from(N) + 1);
    assert_eq!(receipt.sequence, before + u64::from(N) + 1);
    let per = october_instructions(&config).await;
    assert_eq!(per.len(), N as usize);
    assert!(
        per.values().all(|n| *n == 1),
        "one instruction per entitlement"
    );
    verified(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_run_killed_half_way_is_completed_by_running_it_again() {
    const PER_COMMUNE: u32 = 1_500;
    let communes = ["0100007", "0100011", "0100015"];
    let config = fresh_log();
    let setup_dir = tempfile::tempdir().unwrap();
    {
        let service = service_at(&config, setup_dir.path()).await;
        for (i, commune) in communes.iter().enumerate() {
            commune_of_beneficiaries(&service, commune, 1 + i as u32 * 100_000, PER_COMMUNE).await;
        }
    }
    // The operator's CLI, in its own process with its own data directory (the log is the
    // record; it folds the partition from it).
    let cli_dir = tempfile::tempdir().unwrap();
    let ansinh = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ansinh"));
        c.arg("--data-dir")
            .arg(cli_dir.path())
            .args(["--nats", &server_url(), "--stream", &config.stream_name])
            .arg("--secrets")
            .arg(secrets_of(&config))
            .args(["--subject-prefix", &config.subject_prefix])
            .args(["--checkpoint-stream", &format!("C{}", config.stream_name)])
            .args([
                "--as",
                "staff:m",
                "--role",
                "branch-manager",
                "--unit",
                "01",
            ])
            .args(args);
        c
    };
    let run_args = [
        "payments",
        "run",
        "--partition",
        "01",
        "--period",
        "2026-10",
        "--on",
        "2026-10-05",
    ];
    // Killed as soon as it reports the first commune paid.
    let mut child = ansinh(&run_args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first = lines.next().expect("a line").unwrap();
    assert!(first.contains("1500 instructions"), "{first}");
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let paid_before = october_instructions(&config).await;
    eprintln!("paid when the run was killed: {}", paid_before.len());
    assert!(
        paid_before.len() >= PER_COMMUNE as usize,
        "{}",
        paid_before.len()
    );

    // Running it again pays what is missing, and only that.
    let again = ansinh(&run_args).output().unwrap();
    let out = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{out}");
    assert!(out.contains("nothing left to do"), "{out}");
    let paid = october_instructions(&config).await;
    assert_eq!(paid.len(), communes.len() * PER_COMMUNE as usize);
    assert!(paid.values().all(|n| *n == 1), "nobody paid twice");
    // A third run finds the month paid: a success that adds nothing.
    let events = event_count(&config).await;
    let third = ansinh(&run_args).output().unwrap();
    let out = String::from_utf8_lossy(&third.stdout);
    assert!(third.status.success(), "{out}");
    assert_eq!(
        out.matches("nothing left to do").count(),
        communes.len(),
        "{out}"
    );
    assert_eq!(event_count(&config).await, events);
    verified(&config).await;
}

/// Decree 20/2021 over the real ledger: an allowance is paid through the month its
/// beneficiary died and not after, and the beneficiary is the citizen the grant named,
/// whatever position a death before them in the household gives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowance_is_paid_through_the_month_of_its_beneficiarys_death_and_not_after() {
    use ansinh::domain::eligibility::Area;
    use ansinh::domain::ids::HouseholdId;
    use ansinh::personal::{Member, PersonalData};
    use ansinh::service::CommuneRun;
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let service = service_at(&config, dir.path()).await;
    let m = manager();
    let registrar = Caller {
        id: "staff:registrar".into(),
        role: Role::CreditOfficer,
        unit: "01".into(),
    };
    let household = HouseholdId::parse(&format!("{COMMUNE}-000001")).unwrap();
    let (head, second, third) = ("001045000001", "001045000002", "001045000003");
    let member = |name: &str, id: &str| Member {
        name: name.into(),
        citizen_id: Some(id.into()),
        relation: "con".into(),
    };
    service
        .register(
            &rq(&registrar, "register"),
            &household,
            Area::Rural,
            d("2026-01-05"),
            &PersonalData {
                head_name: "Đinh Thị Lụa".into(),
                head_citizen_id: head.into(),
                phone: None,
                account_number: None,
                members: vec![
                    member("Đinh Văn An", second),
                    member("Đinh Thị Bình", third),
                ],
            },
        )
        .await
        .unwrap();
    for month in ["2026-04", "2026-05"] {
        service
            .payment(
                &rq(&m, &format!("alloc-{month}")),
                &p01(),
                CommandKind::Allocate {
                    budget: BudgetKey {
                        period: Month::parse(month).unwrap(),
                        ..budget()
                    },
                    amount: Decimal::from(10_000_000),
                },
                d("2026-02-20"),
            )
            .await
            .unwrap();
    }
    let mut grant = grant(1);
    if let CommandKind::Grant {
        beneficiary, from, ..
    } = &mut grant
    {
        beneficiary.member = MemberRef::parse("m3").unwrap();
        *from = Month::parse("2026-03").unwrap();
    }
    service
        .payment(&rq(&m, "grant"), &p01(), grant, d("2026-02-20"))
        .await
        .unwrap();
    // The second member dies in March: the third is now second in the record. Then the
    // third dies in April.
    for (citizen, on) in [(second, "2026-03-10"), (third, "2026-04-15")] {
        service
            .record_death(
                &rq(&registrar, &format!("death-{citizen}")),
                &household,
                citizen,
                d(on),
            )
            .await
            .unwrap();
    }
    let run_of = |month: &'static str, on: &'static str| {
        let (service, m) = (&service, &m);
        async move {
            match service
                .run_commune(
                    &rq(m, &format!("run-{month}")),
                    &p01(),
                    Month::parse(month).unwrap(),
                    CommuneId::parse(COMMUNE).unwrap(),
                    d(on),
                )
                .await
                .unwrap()
            {
                CommuneRun::Paid {
                    issued,
                    left_unpaid,
                    ..
                } => (issued, left_unpaid.deceased),
                other => panic!("{other:?}"),
            }
        }
    };
    // April, the month of the death, is paid; the second member's death in March, a
    // month earlier, is not taken for the beneficiary's.
    assert_eq!(run_of("2026-04", "2026-04-20").await, (1, vec![]));
    // May is not, and the run names the entitlement for an officer to stop.
    assert_eq!(run_of("2026-05", "2026-05-01").await, (0, vec![1]));
    verified(&config).await;
}
