//! A gateway request never waits for a whole catch-up of the projections. On a process
//! whose projections are behind the log (new, or lagging), a fetch or a post is answered
//! with the protocol's typed "ledger unavailable, retry" within
//! `gateway_ledger::PROJECTIONS_WAIT_MAX`, over the real transport (the shipped accounts
//! on a real nats-server); once the projections have caught up the same requests pass.
//!
//! A test binary of its own: its test holds the process's catch-up lock
//! (`Projector::hold_catch_ups`), which every projector of a process shares, as a long
//! replay does; beside other tests' projections it would stall them too.

mod common_gateway;
use common_gateway::{Net, Serving, key, start_net};

mod common;

use std::sync::Arc;

use ansinh::access::{Caller, Role};
use ansinh::chain::Partition;
use ansinh::domain::payments::CommandKind;
use ansinh::domain::payments::budget::BudgetKey;
use ansinh::domain::payments::entitlements::{Channel, Terms};
use ansinh::domain::payments::ids::{
    BeneficiaryRef, CategoryId, CommuneId, GatewayId, HouseholdRef, MemberRef, ProgrammeId,
};
use ansinh::domain::payments::month::Month;
use ansinh::gateway::client::{GatewayClient, GatewayClientError};
use ansinh::gateway::server::{STATUS_ACCEPTED, STATUS_ERROR};
use ansinh::gateway::sign;
use ansinh::gateway_ledger::{LedgerSink, system_clock};
use ansinh::log::{LedgerStore, LogConfig};
use ansinh::projection::Projector;
use ansinh::proto::{GatewayPost, InstructionList, PaymentInstruction};
use ansinh::service::{Request, Service};
use rust_decimal::Decimal;

/// Fetches a gateway sends while the ledger answers "unavailable" (its projections still
/// catching up) before the test gives up.
const FETCH_ATTEMPTS_MAX: u32 = 5;

async fn service_on(net: &Net, config: &LogConfig, dir: &std::path::Path) -> Service {
    let store = LedgerStore::open(&dir.join("ledger.sled")).unwrap();
    let (ledger, lost) =
        ansinh::log::Ledger::open(net.ledger_client().await, config.clone(), store)
            .await
            .unwrap();
    assert!(lost.is_empty());
    let vault = Arc::new(common::vault_for(&ledger, &common::secrets_of(config)).await);
    let projector = Arc::new(Projector::of_store(ledger.store()).unwrap());
    Service::new(ledger, vault, projector)
}

fn request<'a>(caller: &'a Caller, key: &'a str) -> Request<'a> {
    Request {
        caller,
        idempotency_key: key,
        correlation_id: "test",
        fingerprint: None,
    }
}

/// A budget and two beneficiaries paid by bank "vcb" in partition 01, and the October
/// 2026 run: instructions `01/pay:1:2026-10:1` and `01/pay:2:2026-10:1`.
async fn issue_instructions(service: &Service) {
    let m = Caller {
        id: "staff:m".into(),
        role: Role::BranchManager,
        unit: "01".into(),
    };
    let p = Partition::new("01").unwrap();
    let commune = CommuneId::parse("0100007").unwrap();
    let programme = ProgrammeId::parse("SOCIAL_ASSISTANCE_MONTHLY").unwrap();
    let d = |s: &str| s.parse::<chrono::NaiveDate>().unwrap();
    let allocate = CommandKind::Allocate {
        budget: BudgetKey {
            programme: programme.clone(),
            commune: commune.clone(),
            period: Month::parse("2026-10").unwrap(),
        },
        amount: Decimal::from(1_000_000),
    };
    service
        .payment(&request(&m, "alloc"), &p, allocate, d("2026-10-01"))
        .await
        .unwrap();
    for n in 1..=2u32 {
        let household = format!("0100007-{n:06}");
        common::register_household(service, &household, n).await;
        let grant = CommandKind::Grant {
            programme: programme.clone(),
            beneficiary: BeneficiaryRef {
                household: HouseholdRef::parse(&household).unwrap(),
                member: MemberRef::parse("m1").unwrap(),
            },
            commune: commune.clone(),
            from: Month::parse("2026-10").unwrap(),
            terms: Terms {
                category: CategoryId::parse("ELDERLY_80_PLUS_NO_PENSION").unwrap(),
                channel: Channel::BankAccount {
                    gateway: GatewayId::parse("vcb").unwrap(),
                },
                provincial_base: None,
            },
            citizen: None,
        };
        let key = format!("grant-{n}");
        service
            .payment(&request(&m, &key), &p, grant, d("2026-10-01"))
            .await
            .unwrap();
    }
    let run = CommandKind::Run {
        period: Month::parse("2026-10").unwrap(),
        commune: None,
    };
    service
        .payment(&request(&m, "run"), &p, run, d("2026-10-05"))
        .await
        .unwrap();
}

fn post_for(i: &PaymentInstruction, txn: &str) -> GatewayPost {
    GatewayPost {
        gateway_id: "vcb".into(),
        instruction_id: i.instruction_id.clone(),
        outcome: "settled".into(),
        gateway_txn_id: txn.into(),
        amount: i.amount.clone(),
        beneficiary_ref: i.beneficiary_ref.clone(),
        posted_at_unix_ms: chrono::Utc::now().timestamp_millis(),
        reason: String::new(),
    }
}

/// Asserts that a fetch was answered "ledger unavailable" (status `error`), typed.
fn assert_unavailable(fetched: Result<InstructionList, GatewayClientError>) {
    match fetched {
        Err(GatewayClientError::Refused(reply)) => assert_eq!(
            (reply.status.as_str(), reply.error_kind.as_str()),
            (STATUS_ERROR, "ledger_unavailable"),
            "{reply:?}"
        ),
        other => panic!("not answered \"ledger unavailable\": {other:?}"),
    }
}

/// A gateway's fetch, sent again while the ledger answers "unavailable".
async fn fetch_when_ready(vcb: &GatewayClient) -> InstructionList {
    for _ in 1..FETCH_ATTEMPTS_MAX {
        match vcb.fetch(10).await {
            Err(GatewayClientError::Refused(reply)) if reply.error_kind == "ledger_unavailable" => {
                continue;
            }
            other => return other.unwrap(),
        }
    }
    vcb.fetch(10).await.unwrap()
}

#[tokio::test]
async fn a_process_whose_projections_are_behind_answers_gateways_ledger_unavailable() {
    let net = start_net();
    let config = common::fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let (first_dir, second_dir) = (dir.path().join("first"), dir.path().join("second"));
    std::fs::create_dir_all(&first_dir).unwrap();
    std::fs::create_dir_all(&second_dir).unwrap();
    // The process that issued the instructions, and a new one serving the gateways:
    // its projections hold nothing of the log yet.
    let first = service_on(&net, &config, &first_dir).await;
    issue_instructions(&first).await;
    let second = service_on(&net, &config, &second_dir).await;
    let sink = Arc::new(LedgerSink::new(second, system_clock()));
    let serving = Serving::start(&net, sink).await;
    let vcb = net.gateway("vcb").await;
    let instruction = |n: u32| PaymentInstruction {
        instruction_id: format!("01/pay:{n}:2026-10:1"),
        beneficiary_ref: format!("0100007-{n:06}/m1"),
        amount: "500000".into(),
        ..Default::default()
    };

    // Another catch-up holds the process's projections, as a replay from the start does:
    // the gateway is told to come back, typed, and nothing is recorded.
    let held = Projector::hold_catch_ups().await;
    assert_unavailable(vcb.fetch(10).await);
    let first_post = sign::sign_post(&key(1), &post_for(&instruction(1), "VCB-1"));
    let reply = vcb.post(&first_post).await.unwrap();
    assert_eq!(
        (
            reply.status.as_str(),
            reply.error_kind.as_str(),
            reply.sequence
        ),
        (STATUS_ERROR, "ledger_unavailable", 0),
        "{reply:?}"
    );
    drop(held);

    // Caught up: both instructions are listed, and the same post is recorded.
    let listed = fetch_when_ready(&vcb).await;
    let ids: Vec<&str> = listed
        .instructions
        .iter()
        .map(|i| i.instruction_id.as_str())
        .collect();
    assert_eq!(ids, ["01/pay:1:2026-10:1", "01/pay:2:2026-10:1"]);
    let reply = vcb.post(&first_post).await.unwrap();
    assert_eq!(reply.status, STATUS_ACCEPTED, "{reply:?}");

    // Lagging: the other process records more. A fetch is told to come back; a post to
    // a partition this process knows is decided by its book (the check across partitions
    // made on the projections as they stand).
    let m = Caller {
        id: "staff:m".into(),
        role: Role::BranchManager,
        unit: "01".into(),
    };
    let allocate = CommandKind::Allocate {
        budget: BudgetKey {
            programme: ProgrammeId::parse("SOCIAL_ASSISTANCE_MONTHLY").unwrap(),
            commune: CommuneId::parse("0100007").unwrap(),
            period: Month::parse("2026-11").unwrap(),
        },
        amount: Decimal::from(1_000_000),
    };
    first
        .payment(
            &request(&m, "alloc-11"),
            &Partition::new("01").unwrap(),
            allocate,
            "2026-10-20".parse().unwrap(),
        )
        .await
        .unwrap();
    let held = Projector::hold_catch_ups().await;
    assert_unavailable(vcb.fetch(10).await);
    let second_post = sign::sign_post(&key(1), &post_for(&instruction(2), "VCB-2"));
    let reply = vcb.post(&second_post).await.unwrap();
    assert_eq!(reply.status, STATUS_ACCEPTED, "{reply:?}");
    drop(held);
    assert!(fetch_when_ready(&vcb).await.instructions.is_empty());

    serving.stop().await;
}
