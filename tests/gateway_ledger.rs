//! The ledger side of both gateway transports, end to end on real nats-servers:
//! instructions issued by a payment run are fetched by their gateway only, signed
//! results become events that keep the signed bytes, a copy gets the first answer and
//! appends nothing, and forged, stale, foreign or malformed posts are refused.
//!
//! NATS: a server with the shipped accounts file (per-gateway users and permissions).
//! HTTP: the axum API with its gateway routes, on the shared test server.

mod common_gateway;
use common_gateway::{Serving, Signed, key, registry, shared_registry, sign_request, start_net};

mod common;

use std::sync::Arc;

use ansinh::access::{Caller, Role};
use ansinh::chain::Partition;
use ansinh::checkpoint::sign::KeyPair;
use ansinh::domain::payments::CommandKind;
use ansinh::domain::payments::budget::BudgetKey;
use ansinh::domain::payments::entitlements::{Channel, Terms};
use ansinh::domain::payments::ids::{
    BeneficiaryRef, CategoryId, CommuneId, GatewayId, HouseholdRef, MemberRef, ProgrammeId,
};
use ansinh::domain::payments::month::Month;
use ansinh::gateway::server::{self, STATUS_ACCEPTED, STATUS_DUPLICATE, STATUS_REFUSED};
use ansinh::gateway::sign;
use ansinh::gateway_ledger::{LedgerSink, system_clock};
use ansinh::http::{self, Api, GatewayEdge, Schemas, StaffDirectory};
use ansinh::log::{LedgerStore, LogConfig};
use ansinh::projection::Projector;
use ansinh::proto::{self, GatewayPost, PaymentInstruction, envelope::Payload};
use ansinh::service::{POST_REPLAY_WINDOW_MS, Request, Service};
use common::vault_for;
use common::{fresh_log, register_household, schema_checked};
use prost::Message;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};

const COMMUNE: &str = "0100007";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn service_on(
    client: async_nats::Client,
    config: &LogConfig,
    dir: &std::path::Path,
) -> Service {
    let store = LedgerStore::open(&dir.join("ledger.sled")).unwrap();
    let (ledger, lost) = ansinh::log::Ledger::open(client, config.clone(), store)
        .await
        .unwrap();
    assert!(lost.is_empty());
    let vault = Arc::new(vault_for(&ledger, &dir.join("secrets")).await);
    let projector = Arc::new(Projector::of_store(ledger.store()).unwrap());
    Service::new(ledger, vault, projector)
}

/// The branch manager of partition 01, who runs these tests' payments.
fn manager() -> Caller {
    manager_of("01")
}

fn manager_of(partition: &str) -> Caller {
    Caller {
        id: "staff:m".into(),
        role: Role::BranchManager,
        unit: partition.into(),
    }
}

/// A request of `caller` under the idempotency key `key`.
fn request<'a>(caller: &'a Caller, key: &'a str) -> Request<'a> {
    Request {
        caller,
        idempotency_key: key,
        correlation_id: "test",
        fingerprint: None,
    }
}

/// Three beneficiaries paid by bank "vcb" and one by mobile money "momo" (elderly,
/// 500,000 VND each), a budget for all four, and the October 2026 run: four
/// instructions, `01/pay:1..4:2026-10:1`.
async fn issue_instructions(service: &Service) {
    issue_instructions_in(service, "01").await
}

/// `issue_instructions` in `partition`, in its commune 00007, to citizens of its own.
async fn issue_instructions_in(service: &Service, partition: &str) {
    let m = manager_of(partition);
    let commune = format!("{partition}00007");
    // Partition 01 keeps the keys other tests' commands must not meet.
    let key = |k: &str| match partition {
        "01" => k.to_string(),
        _ => format!("{partition}-{k}"),
    };
    let p = Partition::new(partition).unwrap();
    let citizens_from: u32 = (partition.parse::<u32>().unwrap() - 1) * 100;
    let d = |s: &str| s.parse::<chrono::NaiveDate>().unwrap();
    let programme = ProgrammeId::parse("SOCIAL_ASSISTANCE_MONTHLY").unwrap();
    service
        .payment(
            &request(&m, &key("alloc")),
            &p,
            CommandKind::Allocate {
                budget: BudgetKey {
                    programme: programme.clone(),
                    commune: CommuneId::parse(&commune).unwrap(),
                    period: Month::parse("2026-10").unwrap(),
                },
                amount: Decimal::from(2_000_000),
            },
            d("2026-10-01"),
        )
        .await
        .unwrap();
    for (n, grant, gateway) in [
        (1, "grant-1", "vcb"),
        (2, "grant-2", "vcb"),
        (3, "grant-3", "vcb"),
        (4, "grant-4", "momo"),
    ] {
        register_household(service, &format!("{commune}-{n:06}"), citizens_from + n).await;
        let channel = if gateway == "momo" {
            Channel::MobileMoney {
                gateway: GatewayId::parse(gateway).unwrap(),
            }
        } else {
            Channel::BankAccount {
                gateway: GatewayId::parse(gateway).unwrap(),
            }
        };
        service
            .payment(
                &request(&m, &key(grant)),
                &p,
                CommandKind::Grant {
                    programme: programme.clone(),
                    beneficiary: BeneficiaryRef {
                        household: HouseholdRef::parse(&format!("{commune}-{n:06}")).unwrap(),
                        member: MemberRef::parse("m1").unwrap(),
                    },
                    commune: CommuneId::parse(&commune).unwrap(),
                    from: Month::parse("2026-10").unwrap(),
                    terms: Terms {
                        category: CategoryId::parse("ELDERLY_80_PLUS_NO_PENSION").unwrap(),
                        channel,
                        provincial_base: None,
                    },
                    citizen: None,
                },
                d("2026-10-01"),
            )
            .await
            .unwrap();
    }
    service
        .payment(
            &request(&m, &key("run")),
            &p,
            CommandKind::Run {
                period: Month::parse("2026-10").unwrap(),
                commune: None,
            },
            d("2026-10-05"),
        )
        .await
        .unwrap();
}

/// Events stored in the log: a message holding a frame counts each of its events.
async fn event_count(client: &async_nats::Client, config: &LogConfig) -> u64 {
    let stream = async_nats::jetstream::new(client.clone())
        .get_stream(&config.stream_name)
        .await
        .unwrap();
    common::events_in(stream, config).await
}

/// The recorded payment event at a partition sequence (partition 01).
async fn payment_event(service: &Service, sequence: u64) -> proto::PaymentRecorded {
    let stream = service.ledger.stream();
    let mut found = None;
    let subject = format!("{}.01", service.ledger.config().subject_prefix);
    let end = ansinh::log::reader::last_stream_sequence(&mut stream.clone())
        .await
        .unwrap();
    ansinh::log::reader::read_range(stream, &subject, 1, end, |raw| {
        let envelope = proto::Envelope::decode(raw.payload.as_ref()).unwrap();
        if envelope.sequence == sequence {
            found = envelope.payload;
        }
        Ok::<(), ()>(())
    })
    .await
    .ok();
    match found {
        Some(Payload::PaymentRecorded(p)) => p,
        other => panic!("no payment event at sequence {sequence}: {other:?}"),
    }
}

fn post_for(gateway: &str, i: &PaymentInstruction, outcome: &str, txn: &str) -> GatewayPost {
    GatewayPost {
        gateway_id: gateway.into(),
        instruction_id: i.instruction_id.clone(),
        outcome: outcome.into(),
        gateway_txn_id: txn.into(),
        amount: i.amount.clone(),
        beneficiary_ref: i.beneficiary_ref.clone(),
        posted_at_unix_ms: now_ms(),
        reason: if outcome == "settled" {
            String::new()
        } else {
            "beneficiary account closed".into()
        },
    }
}

// ---- NATS ----------------------------------------------------------------------------

#[tokio::test]
async fn over_nats_gateways_fetch_their_own_instructions_and_their_signed_results_are_recorded_once()
 {
    let net = start_net();
    let ledger_client = net.ledger_client().await;
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let service = service_on(ledger_client.clone(), &config, dir.path()).await;
    issue_instructions(&service).await;
    let sink = Arc::new(LedgerSink::new(service.clone(), system_clock()));
    let serving = Serving::start(&net, sink).await;

    let vcb = net.gateway("vcb").await;
    let momo = net.gateway("momo").await;
    // Each gateway gets its own instructions only, bounded by max.
    let list = vcb.fetch(10).await.unwrap().instructions;
    let ids: Vec<&str> = list.iter().map(|i| i.instruction_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "01/pay:1:2026-10:1",
            "01/pay:2:2026-10:1",
            "01/pay:3:2026-10:1"
        ]
    );
    assert!(list.iter().all(|i| i.gateway_id == "vcb"
        && i.amount == "500000"
        && i.channel == "bank"
        && i.period == "2026-10"));
    assert_eq!(list[0].beneficiary_ref, "0100007-000001/m1");
    assert_eq!(vcb.fetch(2).await.unwrap().instructions.len(), 2);
    // Pages: after the last of one page come the next, so instructions a gateway is still
    // working on never hide the later ones.
    let mut paged = Vec::new();
    let mut after = String::new();
    loop {
        let page = vcb.fetch_after(2, &after).await.unwrap().instructions;
        let Some(last) = page.last() else { break };
        after = last.instruction_id.clone();
        paged.extend(page.into_iter().map(|i| i.instruction_id));
    }
    assert_eq!(paged, ids);
    let refused = vcb.fetch_after(2, "not an instruction").await.unwrap_err();
    match refused {
        ansinh::gateway::client::GatewayClientError::Refused(reply) => {
            assert_eq!(reply.error_kind, "unknown_instruction")
        }
        other => panic!("{other:?}"),
    }
    let momo_list = momo.fetch(10).await.unwrap().instructions;
    assert_eq!(momo_list.len(), 1);
    assert_eq!(momo_list[0].instruction_id, "01/pay:4:2026-10:1");
    assert_eq!(momo_list[0].channel, "mobile_money");

    // A settled and a failed result: accepted, each one event that keeps what was signed.
    let before = event_count(&ledger_client, &config).await;
    let settled = sign::sign_post(&key(1), &post_for("vcb", &list[0], "settled", "VCB-1"));
    let first = vcb.post(&settled).await.unwrap();
    assert_eq!(first.status, STATUS_ACCEPTED, "{first:?}");
    assert_eq!(first.partition, "01");
    let failed = sign::sign_post(&key(1), &post_for("vcb", &list[1], "failed", "VCB-2"));
    assert_eq!(vcb.post(&failed).await.unwrap().status, STATUS_ACCEPTED);
    assert_eq!(event_count(&ledger_client, &config).await, before + 2);
    let event = payment_event(&service, first.sequence).await;
    assert_eq!(event.kind, "GatewayPostAccepted");
    assert_eq!(event.instruction_id, "pay:1:2026-10:1");
    assert_eq!(event.signed_post, settled.post);
    assert_eq!(event.post_signature, settled.signature);
    assert_eq!(event.post_key_id, key(1).key_id());
    assert_eq!(event.post_format, "");

    // The same signed post again: the first answer, nothing appended.
    let again = vcb.post(&settled).await.unwrap();
    assert_eq!(again.status, STATUS_DUPLICATE);
    assert_eq!((again.sequence, &again.hash), (first.sequence, &first.hash));
    assert_eq!(event_count(&ledger_client, &config).await, before + 2);

    // The household's view shows what it received, per month and channel: the settled
    // payment once (its duplicate post counts nothing), the failed one not at all.
    let received = |n: u32| {
        let service = service.clone();
        async move {
            let mut stream = service.ledger.stream().clone();
            let h = ansinh::domain::ids::HouseholdId::parse(&format!("{COMMUNE}-{n:06}")).unwrap();
            let folded = ansinh::payments_report::household_received(
                &mut stream,
                service.ledger.config(),
                &common::keys_partition(),
                &h,
            )
            .await
            .unwrap();
            // The staff API's answer, from the projections, is the log's own.
            service
                .projector
                .catch_up(&mut stream, service.ledger.config())
                .await
                .unwrap();
            let projected =
                ansinh::payments_report::household_received_projected(&service.projector, &h)
                    .unwrap();
            assert_eq!(projected, folded);
            folded
        }
    };
    let paid = received(1).await;
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(
        (paid[0].month.as_str(), paid[0].channel.as_str()),
        ("2026-10", "bank_account")
    );
    assert_eq!((paid[0].settled_count, paid[0].returned_count), (1, 0));
    assert_eq!(paid[0].net, paid[0].settled);
    assert!(paid[0].settled.parse::<Decimal>().unwrap() > Decimal::ZERO);
    assert!(received(2).await.is_empty());

    // vcb posting a result for momo's instruction (signed by vcb, on vcb's subject):
    // refused, and the refusal recorded; the instruction still waits for momo.
    let foreign = sign::sign_post(&key(1), &post_for("vcb", &momo_list[0], "settled", "VCB-X"));
    let refused = vcb.post(&foreign).await.unwrap();
    assert_eq!(refused.status, STATUS_REFUSED);
    assert_eq!(refused.error_kind, "not_your_instruction");
    assert_eq!(event_count(&ledger_client, &config).await, before + 3);
    assert_eq!(
        payment_event(&service, refused.sequence).await.kind,
        "GatewayPostRefused"
    );
    // Its copy gets the same refusal and appends nothing.
    let refused_again = vcb.post(&foreign).await.unwrap();
    assert_eq!(
        (refused_again.status.as_str(), refused_again.sequence),
        (STATUS_REFUSED, refused.sequence)
    );
    assert_eq!(event_count(&ledger_client, &config).await, before + 3);
    assert_eq!(momo.fetch(10).await.unwrap().instructions.len(), 1);

    // An instruction id of no partition with payments: refused, nothing recorded.
    let mut nowhere = post_for("vcb", &list[2], "settled", "VCB-9");
    nowhere.instruction_id = "79/pay:3:2026-10:1".into();
    let reply = vcb.post(&sign::sign_post(&key(1), &nowhere)).await.unwrap();
    assert_eq!(
        (reply.status.as_str(), reply.error_kind.as_str()),
        (STATUS_REFUSED, "unknown_instruction")
    );
    assert_eq!(event_count(&ledger_client, &config).await, before + 3);

    // Only the third vcb instruction is still waiting.
    let left = vcb.fetch(10).await.unwrap().instructions;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].instruction_id, "01/pay:3:2026-10:1");

    serving.stop().await;
}

/// A gateway's pending list is read from the projections (O(the list), and a restarted
/// process applies only what its projections lack): the same on a process with projections
/// rebuilt from nothing, paged by `max`, and an instruction timed out leaves it.
#[tokio::test]
async fn a_gateways_pending_list_comes_from_the_projections_and_follows_timeouts() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let nats = common::client().await;
    let service = service_on(nats.clone(), &config, dir.path()).await;
    issue_instructions(&service).await;
    let ids = |list: Vec<PaymentInstruction>| -> Vec<String> {
        list.into_iter().map(|i| i.instruction_id).collect()
    };
    let sink = LedgerSink::new(service.clone(), system_clock());
    let vcb = ids(sink.pending("vcb", "", 10).await.unwrap());
    assert_eq!(
        vcb,
        [
            "01/pay:1:2026-10:1",
            "01/pay:2:2026-10:1",
            "01/pay:3:2026-10:1"
        ]
    );
    assert_eq!(ids(sink.pending("vcb", "", 2).await.unwrap()), vcb[..2]);
    assert_eq!(
        ids(sink.pending("momo", "", 10).await.unwrap()),
        ["01/pay:4:2026-10:1"]
    );
    assert!(sink.pending("vnpost", "", 10).await.unwrap().is_empty());

    // Another process, its data directory empty but for the ledger's secrets: its
    // projections are built from the log.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    std::fs::copy(dir.path().join("secrets"), other_dir.join("secrets")).unwrap();
    let other = service_on(nats.clone(), &config, &other_dir).await;
    let other_sink = LedgerSink::new(other, system_clock());
    assert_eq!(ids(other_sink.pending("vcb", "", 10).await.unwrap()), vcb);

    // Pay:2 times out (its bank's 10 days are over): no gateway is asked for it again.
    let m = manager();
    service
        .payment(
            &Request {
                caller: &m,
                idempotency_key: "timeout-2",
                correlation_id: "test",
                fingerprint: None,
            },
            &Partition::new("01").unwrap(),
            CommandKind::TimeOut {
                instruction: ansinh::domain::payments::instructions::InstructionId::parse(
                    "pay:2:2026-10:1",
                )
                .unwrap(),
            },
            "2026-10-20".parse().unwrap(),
        )
        .await
        .unwrap();
    for s in [&sink, &other_sink] {
        assert_eq!(
            ids(s.pending("vcb", "", 10).await.unwrap()),
            ["01/pay:1:2026-10:1", "01/pay:3:2026-10:1"]
        );
    }
}

/// Business dates are days in Vietnam (UTC+7): a settlement received at 06:30 on
/// 5 December there (23:30 UTC on the 4th) for an instruction issued on the 5th is
/// accepted, dated the 5th, and counted in that day's reconciliation.
#[tokio::test]
async fn a_result_received_early_in_the_morning_in_vietnam_is_that_days() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let service = service_on(common::client().await, &config, dir.path()).await;
    issue_instructions(&service).await;
    let m = manager();
    let p = Partition::new("01").unwrap();
    let d = |s: &str| s.parse::<chrono::NaiveDate>().unwrap();
    let december = Month::parse("2026-12").unwrap();
    service
        .payment(
            &request(&m, "alloc-12"),
            &p,
            CommandKind::Allocate {
                budget: BudgetKey {
                    programme: ProgrammeId::parse("SOCIAL_ASSISTANCE_MONTHLY").unwrap(),
                    commune: CommuneId::parse(COMMUNE).unwrap(),
                    period: december,
                },
                amount: Decimal::from(2_000_000),
            },
            d("2026-12-01"),
        )
        .await
        .unwrap();
    service
        .payment(
            &request(&m, "run-12"),
            &p,
            CommandKind::Run {
                period: december,
                commune: None,
            },
            d("2026-12-05"),
        )
        .await
        .unwrap();

    let at = chrono::DateTime::parse_from_rfc3339("2026-12-05T06:30:00+07:00")
        .unwrap()
        .timestamp_millis();
    let sink = LedgerSink::new(service.clone(), Arc::new(move || at));
    let list = sink.pending("vcb", "", 10).await.unwrap();
    let first = list
        .iter()
        .find(|i| i.instruction_id == "01/pay:1:2026-12:1")
        .unwrap();
    let mut post = post_for("vcb", first, "settled", "VCB-DEC-1");
    post.posted_at_unix_ms = at;
    let reply =
        server::PostSink::post(&sink, "vcb", post.clone(), sign::sign_post(&key(1), &post)).await;
    assert_eq!(reply.status, STATUS_ACCEPTED, "{reply:?}");
    let event = payment_event(&service, reply.sequence).await;
    assert_eq!(event.kind, "GatewayPostAccepted");
    assert_eq!(event.effective_on, "2026-12-05");

    let mut stream = service.ledger.stream().clone();
    service
        .projector
        .catch_up(&mut stream, service.ledger.config())
        .await
        .unwrap();
    let day = service
        .projector
        .reconciliation_day("01", d("2026-12-05"), d("2026-12-05"), 10)
        .unwrap()
        .expect("as of the day's last events");
    let vcb = &day[&GatewayId::parse("vcb").unwrap()];
    assert_eq!((vcb.instructed.count, vcb.settled.count), (3, 1));
}

/// A bank's settlement of an instruction the ledger had timed out, while its month's
/// reissue as post-office cash waits at the post office: the bank is answered that its
/// post was refused and recorded (the reply names the refusal's event, not the
/// cancellation recorded with it), and the post office no longer fetches the reissue.
#[tokio::test]
async fn a_late_settlement_withdraws_the_reissue_its_gateway_has_not_paid() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let service = service_on(common::client().await, &config, dir.path()).await;
    issue_instructions(&service).await;
    let sink = LedgerSink::new(service.clone(), system_clock());
    let first = sink.pending("vcb", "", 1).await.unwrap().remove(0);
    assert_eq!(first.instruction_id, "01/pay:1:2026-10:1");
    let m = manager();
    let p = Partition::new("01").unwrap();
    let id = |s: &str| ansinh::domain::payments::instructions::InstructionId::parse(s).unwrap();
    service
        .payment(
            &request(&m, "timeout-1"),
            &p,
            CommandKind::TimeOut {
                instruction: id("pay:1:2026-10:1"),
            },
            "2026-10-15".parse().unwrap(),
        )
        .await
        .unwrap();
    service
        .payment(
            &request(&m, "reissue-1"),
            &p,
            CommandKind::Reissue {
                instruction: id("pay:1:2026-10:1"),
                channel: Some(Channel::PostOffice {
                    gateway: GatewayId::parse("vnpost").unwrap(),
                }),
            },
            "2026-10-16".parse().unwrap(),
        )
        .await
        .unwrap();
    let vnpost = |list: Vec<PaymentInstruction>| -> Vec<String> {
        list.into_iter().map(|i| i.instruction_id).collect()
    };
    assert_eq!(
        vnpost(sink.pending("vnpost", "", 10).await.unwrap()),
        ["01/pay:1:2026-10:2"]
    );

    let post = post_for("vcb", &first, "settled", "VCB-LATE-1");
    let signed = sign::sign_post(&key(1), &post);
    let reply = server::PostSink::post(&sink, "vcb", post.clone(), signed.clone()).await;
    assert_eq!(
        (reply.status.as_str(), reply.error_kind.as_str()),
        (STATUS_REFUSED, "not_pending"),
        "{reply:?}"
    );
    assert_eq!(
        payment_event(&service, reply.sequence).await.kind,
        "GatewayPostRefused"
    );
    assert_eq!(
        payment_event(&service, reply.sequence - 1).await.kind,
        "InstructionCancelled"
    );
    assert!(sink.pending("vnpost", "", 10).await.unwrap().is_empty());
    // A copy gets the same answer.
    let again = server::PostSink::post(&sink, "vcb", post, signed).await;
    assert_eq!(
        (again.status.as_str(), again.sequence),
        (STATUS_REFUSED, reply.sequence),
        "{again:?}"
    );
}

/// A copy of a recorded post gets its first answer from any process, however late: past
/// the replay window only a post the log does not hold is refused, and a process whose
/// index has not seen another's commit of it learns that from the log.
#[tokio::test]
async fn a_late_copy_of_a_post_another_process_recorded_gets_its_first_answer() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let nats = common::client().await;
    let service = service_on(nats.clone(), &config, dir.path()).await;
    issue_instructions(&service).await;
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    std::fs::copy(dir.path().join("secrets"), other_dir.join("secrets")).unwrap();
    let other = service_on(nats.clone(), &config, &other_dir).await;
    // The other process's writer of partition 01 is ready (it folded the log for a
    // command of its own) before the post is recorded elsewhere.
    let m = manager();
    other
        .payment(
            &request(&m, "alloc-11"),
            &Partition::new("01").unwrap(),
            CommandKind::Allocate {
                budget: BudgetKey {
                    programme: ProgrammeId::parse("SOCIAL_ASSISTANCE_MONTHLY").unwrap(),
                    commune: CommuneId::parse(COMMUNE).unwrap(),
                    period: Month::parse("2026-11").unwrap(),
                },
                amount: Decimal::from(2_000_000),
            },
            "2026-10-20".parse().unwrap(),
        )
        .await
        .unwrap();

    let here = LedgerSink::new(service.clone(), system_clock());
    let list = here.pending("vcb", "", 10).await.unwrap();
    let post = post_for("vcb", &list[0], "settled", "VCB-LATE-1");
    let signed = sign::sign_post(&key(1), &post);
    let first = server::PostSink::post(&here, "vcb", post.clone(), signed.clone()).await;
    assert_eq!(first.status, STATUS_ACCEPTED, "{first:?}");

    // Six minutes later, the same signed post reaches the other process.
    let there = LedgerSink::new(other, Arc::new(|| now_ms() + 6 * 60_000));
    let again = server::PostSink::post(&there, "vcb", post.clone(), signed).await;
    assert_eq!(
        (again.status.as_str(), again.sequence),
        (STATUS_DUPLICATE, first.sequence),
        "{again:?}"
    );
    // A post the log does not hold, as late, is still refused.
    let mut unseen = post_for("vcb", &list[1], "settled", "VCB-LATE-2");
    unseen.posted_at_unix_ms = now_ms() - 6 * 60_000;
    let refused = server::PostSink::post(
        &here,
        "vcb",
        unseen.clone(),
        sign::sign_post(&key(1), &unseen),
    )
    .await;
    assert_eq!(refused.error_kind, "outside_replay_window", "{refused:?}");
}

/// A gateway that re-signs a result after its client gave up on the first sending (GATEWAYS.md
/// section 5) may have both copies waiting in the ledger, to be decided in one batch of the
/// partition's writer. The copy past the replay window is refused on its own facts and the
/// fresh one accepted on its own, whichever of them comes first; one settlement is recorded.
#[tokio::test]
async fn a_fresh_copy_is_accepted_beside_a_stale_one_in_one_batch_in_either_order() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let nats = common::client().await;
    let service = service_on(nats.clone(), &config, dir.path()).await;
    issue_instructions(&service).await;
    let sink = Arc::new(LedgerSink::new(service.clone(), system_clock()));
    let list = sink.pending("vcb", "", 10).await.unwrap();
    let partition = Partition::new("01").unwrap();
    for (n, stale_first) in [(0, true), (1, false)] {
        let fresh = post_for("vcb", &list[n], "settled", &format!("VCB-COPY-{n}"));
        let mut stale = fresh.clone();
        stale.posted_at_unix_ms = now_ms() - 10 * 60_000;
        let copies = if stale_first {
            [stale, fresh]
        } else {
            [fresh, stale]
        };
        let before = event_count(&nats, &config).await;
        let held = service.ledger.hold_publishes().await;
        // A command of the partition waits at its publish, so the copies queue behind it
        // and its writer decides them in one batch, in the order they came.
        let blocker = {
            let service = service.clone();
            tokio::spawn(async move {
                let m = manager();
                service
                    .payment(
                        &request(&m, &format!("alloc-held-{n}")),
                        &Partition::new("01").unwrap(),
                        CommandKind::Allocate {
                            budget: BudgetKey {
                                programme: ProgrammeId::parse("SOCIAL_ASSISTANCE_MONTHLY").unwrap(),
                                commune: CommuneId::parse(COMMUNE).unwrap(),
                                period: Month::parse("2026-11").unwrap(),
                            },
                            amount: Decimal::from(1_000_000),
                        },
                        "2026-10-20".parse().unwrap(),
                    )
                    .await
            })
        };
        until("the allocation waits at its publish", || {
            service.ledger.commits_held() == 1
        })
        .await;
        let mut replies = Vec::new();
        for (queued, copy) in copies.into_iter().enumerate() {
            let sink = sink.clone();
            replies.push(tokio::spawn(async move {
                let signed = sign::sign_post(&key(1), &copy);
                server::PostSink::post(&*sink, "vcb", copy, signed).await
            }));
            until("the copy waits in the writer's queue", || {
                service.ledger.queued(&partition) == queued + 1
            })
            .await;
        }
        drop(held);
        blocker.await.unwrap().unwrap();
        let mut answers = Vec::new();
        for reply in replies {
            answers.push(reply.await.unwrap());
        }
        let (stale, fresh) = if stale_first {
            (&answers[0], &answers[1])
        } else {
            (&answers[1], &answers[0])
        };
        assert_eq!(
            fresh.status, STATUS_ACCEPTED,
            "stale first: {stale_first}: {fresh:?}"
        );
        assert_eq!(
            payment_event(&service, fresh.sequence).await.kind,
            "GatewayPostAccepted"
        );
        if stale_first {
            assert_eq!(stale.error_kind, "outside_replay_window", "{stale:?}");
        } else {
            assert_eq!(
                (stale.status.as_str(), stale.sequence),
                (STATUS_DUPLICATE, fresh.sequence),
                "{stale:?}"
            );
        }
        // The allocation and one settlement.
        assert_eq!(event_count(&nats, &config).await, before + 2);
    }
}

/// Waits until `done` holds, looking again every millisecond, for at most 30 s (then the
/// test fails saying `what`): an order of events made certain, not a time guessed.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// One bank transfer settles one instruction. A gateway that posts the transaction id
/// of a settlement accepted in one partition for an instruction of another is refused,
/// typed, and nothing is appended; the first post's copy still gets its first answer.
#[tokio::test]
async fn a_transaction_id_accepted_in_one_partition_is_refused_for_another() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let nats = common::client().await;
    let service = service_on(nats.clone(), &config, dir.path()).await;
    issue_instructions_in(&service, "01").await;
    issue_instructions_in(&service, "02").await;
    let sink = LedgerSink::new(service.clone(), system_clock());
    let list = sink.pending("vcb", "", 10).await.unwrap();
    let in_01 = list
        .iter()
        .find(|i| i.instruction_id.starts_with("01/"))
        .unwrap();
    let in_02 = list
        .iter()
        .find(|i| i.instruction_id.starts_with("02/"))
        .unwrap();
    let sink = &sink;
    let post = |i: &PaymentInstruction, outcome: &str, txn: &str| {
        let post = post_for("vcb", i, outcome, txn);
        let signed = sign::sign_post(&key(1), &post);
        async move { server::PostSink::post(sink, "vcb", post, signed).await }
    };

    let first = post(in_01, "settled", "VCB-ONCE").await;
    assert_eq!(first.status, STATUS_ACCEPTED, "{first:?}");
    let before = event_count(&nats, &config).await;
    let elsewhere = post(in_02, "settled", "VCB-ONCE").await;
    assert_eq!(
        (elsewhere.status.as_str(), elsewhere.error_kind.as_str()),
        (STATUS_REFUSED, "transaction_id_used_elsewhere"),
        "{elsewhere:?}"
    );
    assert!(
        elsewhere.message.contains(&in_01.instruction_id),
        "names the instruction it settled: {elsewhere:?}"
    );
    assert_eq!(
        event_count(&nats, &config).await,
        before,
        "nothing appended"
    );

    // The first post again: its first answer. The same instruction of partition 02 with a
    // transaction id of its own: accepted.
    let again = post(in_01, "settled", "VCB-ONCE").await;
    assert_eq!(
        (again.status.as_str(), again.sequence),
        (STATUS_DUPLICATE, first.sequence),
        "{again:?}"
    );
    let own = post(in_02, "settled", "VCB-TWICE").await;
    assert_eq!(
        (own.status.as_str(), own.partition.as_str()),
        (STATUS_ACCEPTED, "02"),
        "{own:?}"
    );
    // A failure under the settled transaction's id is another key (the book's too).
    let in_02_next = list
        .iter()
        .filter(|i| i.instruction_id.starts_with("02/"))
        .nth(1)
        .unwrap();
    let failed = post(in_02_next, "failed", "VCB-ONCE").await;
    assert_eq!(failed.status, STATUS_ACCEPTED, "{failed:?}");
}

/// Publishes a message the ledger never wrote on partition 02's subject and makes every
/// catch-up of the projections fail there, as a log they cannot follow would (the log
/// itself no longer can: what breaks a chain is held, CHAIN.md §4a).
async fn break_partition_02(service: &Service, nats: &async_nats::Client, config: &LogConfig) {
    let js = async_nats::jetstream::new(nats.clone());
    let ack = js
        .publish(
            config.subject(&Partition::new("02").unwrap()),
            "not the ledger's".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    service.projector.stop_at_for_tests(ack.sequence);
}

/// A chain broken in another partition stops the read model's catch-up; posts to a
/// partition already known still go through, decided by its book.
#[tokio::test]
async fn a_broken_chain_elsewhere_does_not_stop_posts_to_a_known_partition() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let nats = common::client().await;
    let service = service_on(nats.clone(), &config, dir.path()).await;
    issue_instructions(&service).await;
    let sink = LedgerSink::new(service.clone(), system_clock());
    let list = sink.pending("vcb", "", 10).await.unwrap();
    break_partition_02(&service, &nats, &config).await;
    let mut stream = service.ledger.stream().clone();
    assert!(
        service
            .projector
            .catch_up(&mut stream, service.ledger.config())
            .await
            .is_err(),
        "the projections cannot catch up"
    );
    let post = post_for("vcb", &list[0], "settled", "VCB-STILL");
    let signed = sign::sign_post(&key(1), &post);
    let answer = server::PostSink::post(&sink, "vcb", post, signed).await;
    assert_eq!(
        (answer.status.as_str(), answer.partition.as_str()),
        (STATUS_ACCEPTED, "01"),
        "{answer:?}"
    );
}

/// A fetch the ledger cannot answer (its projections cannot catch up past a broken
/// chain) is answered with the protocol's typed error, never with an empty list that
/// reads as "nothing to pay".
#[tokio::test]
async fn a_fetch_the_projections_cannot_answer_gets_a_typed_error_not_an_empty_list() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let nats = common::client().await;
    let service = service_on(nats.clone(), &config, dir.path()).await;
    issue_instructions(&service).await;
    let sink = LedgerSink::new(service.clone(), system_clock());
    let listed = server::PostSink::fetch(&sink, "vcb", 10, "").await.unwrap();
    assert_eq!(listed.instructions.len(), 3);

    break_partition_02(&service, &nats, &config).await;
    let reply = server::PostSink::fetch(&sink, "vcb", 10, "")
        .await
        .expect_err("a fetch over a broken chain is not an instruction list");
    assert_eq!(
        (reply.status.as_str(), reply.error_kind.as_str()),
        (server::STATUS_ERROR, "ledger_broken"),
        "{reply:?}"
    );
    assert!(!reply.message.is_empty());
    assert_eq!(reply.sequence, 0, "nothing recorded");
}

// ---- HTTP ----------------------------------------------------------------------------

struct Http {
    base: String,
    client: reqwest::Client,
    service: Service,
    nats: async_nats::Client,
    config: LogConfig,
    schemas: Schemas,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn kind(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

async fn http_server() -> Http {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let nats = common::client().await;
    let service = service_on(nats.clone(), &config, dir.path()).await;
    issue_instructions(&service).await;
    let staff = dir.path().join(http::STAFF_FILE);
    http::auth::add_staff(&staff, "staff:m", Role::BranchManager, "01").unwrap();
    let edge = GatewayEdge {
        registry: shared_registry(),
        sink: Arc::new(LedgerSink::new(service.clone(), system_clock())),
    };
    let api = Api::with_gateways(
        service.clone(),
        ansinh::directory::Shared::new(StaffDirectory::load(&staff).unwrap()),
        Some(edge),
    )
    .await
    .unwrap();
    let (base, stop) = common::serve(api).await;
    Http {
        base,
        client: reqwest::Client::new(),
        service,
        nats,
        config,
        schemas: Schemas::compile(),
        _stop: stop,
        _dir: dir,
    }
}

impl Http {
    async fn answer(&self, response: reqwest::Response, schema: &str) -> Answer {
        let (status, body) = schema_checked(&self.schemas, response, schema).await;
        Answer { status, body }
    }

    async fn send_post(&self, s: &Signed, key: &str) -> Answer {
        let response = self
            .client
            .post(format!("{}{}", self.base, s.path))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .header("ansinh-gateway-timestamp", &s.timestamp)
            .header("ansinh-gateway-key-id", &s.key_id)
            .header("ansinh-gateway-signature", &s.signature)
            .body(s.body.clone())
            .send()
            .await
            .unwrap();
        self.answer(response, "receipt.response").await
    }

    async fn fetch(&self, signer: &KeyPair, gateway: &str) -> Answer {
        let path = format!("/v1/gateways/{gateway}/instructions?max=10");
        self.fetch_at(Some(signer), &path, now_ms()).await
    }

    /// A GET of `path` signed by `signer` as of `at_ms` (unsigned without one).
    async fn fetch_at(&self, signer: Option<&KeyPair>, path: &str, at_ms: i64) -> Answer {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(signer) = signer {
            let s = sign_request(signer, "GET", path, b"", at_ms);
            request = request
                .header("ansinh-gateway-timestamp", &s.timestamp)
                .header("ansinh-gateway-key-id", &s.key_id)
                .header("ansinh-gateway-signature", &s.signature);
        }
        let response = request.send().await.unwrap();
        self.answer(response, "gateway-instructions.response").await
    }

    async fn count(&self) -> u64 {
        event_count(&self.nats, &self.config).await
    }
}

fn body_for(i: &Value, outcome: &str, txn: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "instruction_id": i["instruction_id"],
        "outcome": outcome,
        "gateway_txn_id": txn,
        "amount": i["amount"],
        "beneficiary_ref": i["beneficiary_ref"],
    }))
    .unwrap()
}

const VCB_POSTS: &str = "/v1/gateways/vcb/posts";

/// A post that failed with a 5xx keeps its Idempotency-Key bound to it: the failure may
/// have come after the event was stored, so another post under that key is refused, and
/// the same post sent again is recorded (once).
#[tokio::test]
async fn a_post_failed_with_a_5xx_keeps_its_key_for_that_post() {
    let s = http_server().await;
    let vcb = s.fetch(&key(1), "vcb").await.body["instructions"]
        .as_array()
        .unwrap()
        .clone();
    let post = sign_request(
        &key(1),
        "POST",
        VCB_POSTS,
        &body_for(&vcb[0], "settled", "VCB-5XX-1"),
        now_ms(),
    );
    let before = s.count().await;
    // The partition cannot take an append (quarantined): the post fails on the ledger's
    // side, not on its own content.
    let store = s.service.ledger.store();
    store
        .quarantine("01", "a test holds the partition")
        .unwrap();
    let failed = s.send_post(&post, "k-5xx").await;
    assert!(failed.status.is_server_error(), "{:?}", failed.body);
    assert_eq!(s.count().await, before);
    store.accept_stream_head("01").unwrap();

    let other = sign_request(
        &key(1),
        "POST",
        VCB_POSTS,
        &body_for(&vcb[1], "settled", "VCB-5XX-2"),
        now_ms(),
    );
    let reused = s.send_post(&other, "k-5xx").await;
    assert_eq!(
        (reused.status, reused.kind()),
        (StatusCode::UNPROCESSABLE_ENTITY, "IdempotencyKeyReused"),
        "{:?}",
        reused.body
    );
    assert_eq!(s.count().await, before);
    let recorded = s.send_post(&post, "k-5xx").await;
    assert_eq!(recorded.status, StatusCode::CREATED, "{:?}", recorded.body);
    assert_eq!(s.count().await, before + 1);
}

#[tokio::test]
async fn over_http_a_signed_post_settles_once_and_forged_or_stale_posts_append_nothing() {
    let s = http_server().await;
    let listed = s.fetch(&key(1), "vcb").await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let vcb = listed.body["instructions"].as_array().unwrap().clone();
    assert_eq!(vcb.len(), 3);
    assert!(vcb.iter().all(|i| i["gateway_id"] == "vcb"));
    let momo = s.fetch(&key(2), "momo").await.body["instructions"][0].clone();
    assert_eq!(momo["instruction_id"], "01/pay:4:2026-10:1");

    // A valid post settles, and the event keeps the exact signed request.
    let before = s.count().await;
    let signed = sign_request(
        &key(1),
        "POST",
        VCB_POSTS,
        &body_for(&vcb[0], "settled", "VCB-1"),
        now_ms(),
    );
    let first = s.send_post(&signed, "k-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(s.count().await, before + 1);
    let sequence = first.body["sequence"].as_u64().unwrap();
    let event = payment_event(&s.service, sequence).await;
    assert_eq!(event.kind, "GatewayPostAccepted");
    assert_eq!(event.post_format, "http-v1");
    assert_eq!(
        event.signed_post.as_ref(),
        sign::http_request_bytes(&signed.timestamp, "POST", VCB_POSTS, &signed.body).as_slice()
    );
    assert_eq!(hex::encode(&event.post_signature), signed.signature);
    // An auditor's check, from the event alone.
    let registry = registry();
    assert_eq!(
        sign::verify_http_request(
            &registry,
            "vcb",
            &event.post_key_id,
            &event.post_signature,
            &event.signed_post
        ),
        Ok(())
    );

    // Replayed: the same signed request again gets the first answer, nothing appended.
    let replay = s.send_post(&signed, "k-1").await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.body["duplicate"], true);
    assert_eq!(replay.body["sequence"], first.body["sequence"]);
    assert_eq!(s.count().await, before + 1);

    // Forged: a bad signature, the wrong key, a body changed after signing.
    let body = body_for(&vcb[1], "settled", "VCB-2");
    let mut bad = sign_request(&key(1), "POST", VCB_POSTS, &body, now_ms());
    bad.signature = format!(
        "{}{}",
        if bad.signature.starts_with('0') {
            "1"
        } else {
            "0"
        },
        &bad.signature[1..]
    );
    let a = s.send_post(&bad, "k-2").await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::UNAUTHORIZED, "BadSignature")
    );
    let mut wrong_key = sign_request(&key(9), "POST", VCB_POSTS, &body, now_ms());
    wrong_key.key_id = key(1).key_id().into();
    let a = s.send_post(&wrong_key, "k-2").await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::UNAUTHORIZED, "BadSignature")
    );
    let momo_key = sign_request(&key(2), "POST", VCB_POSTS, &body, now_ms());
    let a = s.send_post(&momo_key, "k-2").await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::FORBIDDEN, "KeyOfAnotherGateway")
    );
    let unknown_key = sign_request(&key(9), "POST", VCB_POSTS, &body, now_ms());
    let a = s.send_post(&unknown_key, "k-2").await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::UNAUTHORIZED, "UnknownKey")
    );
    let mut altered = sign_request(&key(1), "POST", VCB_POSTS, &body, now_ms());
    altered.body = body_for(&vcb[1], "settled", "VCB-3");
    let a = s.send_post(&altered, "k-2").await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::UNAUTHORIZED, "BadSignature")
    );
    // Signed for another route: a post signed as a fetch path.
    let mut moved = sign_request(
        &key(1),
        "POST",
        "/v1/gateways/vcb/instructions",
        &body,
        now_ms(),
    );
    moved.path = VCB_POSTS.into();
    let a = s.send_post(&moved, "k-2").await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::UNAUTHORIZED, "BadSignature")
    );
    assert_eq!(s.count().await, before + 1);

    // Stale: new content dated outside the replay window.
    let stale = sign_request(
        &key(1),
        "POST",
        VCB_POSTS,
        &body,
        now_ms() - POST_REPLAY_WINDOW_MS - 60_000,
    );
    let a = s.send_post(&stale, "k-3").await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::UNPROCESSABLE_ENTITY, "PostOutsideReplayWindow")
    );
    assert_eq!(s.count().await, before + 1);
    // A captured post replayed late under a fresh Idempotency-Key (which the signature
    // does not cover) is refused before its key is bound: it costs the requests bucket
    // no write, however many keys it is sent under.
    let requests = async_nats::jetstream::new(s.nats.clone())
        .get_key_value(http::requests_bucket_name(&s.config.stream_name))
        .await
        .unwrap();
    let binding = |key: &str| blake3::hash(format!("gw:vcb:{key}").as_bytes()).to_hex();
    let captured = sign_request(
        &key(1),
        "POST",
        VCB_POSTS,
        &body_for(&vcb[0], "settled", "VCB-1"),
        now_ms() - POST_REPLAY_WINDOW_MS - 60_000,
    );
    let a = s.send_post(&captured, "k-captured").await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::UNPROCESSABLE_ENTITY, "PostOutsideReplayWindow")
    );
    for key in ["k-3", "k-captured"] {
        assert!(
            requests
                .entry(binding(key).as_str())
                .await
                .unwrap()
                .is_none(),
            "{key}: a stale post writes no binding"
        );
    }
    assert_eq!(s.count().await, before + 1);
    // The same content, fresh, under the same key (freed by the refusal): accepted.
    let fresh = sign_request(&key(1), "POST", VCB_POSTS, &body, now_ms());
    assert_eq!(s.send_post(&fresh, "k-3").await.status, StatusCode::CREATED);
    assert_eq!(s.count().await, before + 2);
}

/// The gateway id is read from the path as sent, the bytes the signature covers and the
/// event keeps: a percent-encoded id (`vc%62`, which decodes to `vcb`) is refused, so no
/// recorded request names in its signed path another spelling of the gateway that was
/// authenticated.
#[tokio::test]
async fn over_http_a_percent_encoded_gateway_id_in_the_path_is_refused() {
    let s = http_server().await;
    let vcb = s.fetch(&key(1), "vcb").await.body["instructions"]
        .as_array()
        .unwrap()
        .clone();
    let before = s.count().await;
    let body = body_for(&vcb[0], "settled", "VCB-ENCODED");
    let encoded = sign_request(&key(1), "POST", "/v1/gateways/vc%62/posts", &body, now_ms());
    let a = s.send_post(&encoded, "k-encoded").await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::BAD_REQUEST, "InvalidParameter"),
        "{:?}",
        a.body
    );
    let a = s
        .fetch_at(
            Some(&key(1)),
            "/v1/gateways/vc%62/instructions?max=10",
            now_ms(),
        )
        .await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::BAD_REQUEST, "InvalidParameter"),
        "{:?}",
        a.body
    );
    assert_eq!(s.count().await, before, "nothing recorded");
    // The same post on the path as the gateway id spells it: recorded.
    let plain = sign_request(&key(1), "POST", VCB_POSTS, &body, now_ms());
    assert_eq!(
        s.send_post(&plain, "k-plain").await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn over_http_foreign_malformed_and_out_of_range_posts_are_refused_with_typed_errors() {
    let s = http_server().await;
    let vcb = s.fetch(&key(1), "vcb").await.body["instructions"][0].clone();
    let momo = s.fetch(&key(2), "momo").await.body["instructions"][0].clone();
    let before = s.count().await;

    // vcb posting for momo's instruction: refused and the refusal recorded (one event),
    // its replay refused alike with nothing appended.
    let foreign = sign_request(
        &key(1),
        "POST",
        VCB_POSTS,
        &body_for(&momo, "settled", "VCB-X"),
        now_ms(),
    );
    let a = s.send_post(&foreign, "f-1").await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::FORBIDDEN, "NotYourInstruction")
    );
    assert_eq!(s.count().await, before + 1);
    let a = s.send_post(&foreign, "f-1").await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::FORBIDDEN, "NotYourInstruction")
    );
    assert_eq!(s.count().await, before + 1);
    let after_foreign = before + 1;

    // Malformed JSON, properly signed.
    let broken = sign_request(
        &key(1),
        "POST",
        VCB_POSTS,
        b"{\"instruction_id\": ",
        now_ms(),
    );
    let a = s.send_post(&broken, "m-1").await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::BAD_REQUEST, "MalformedJson")
    );

    // Negative, fractional and 20-digit amounts break the schema; 16 digits pass the
    // schema but exceed the ceiling of 10^15.
    for (n, amount, kind) in [
        (1, "-500000", "SchemaViolation"),
        (2, "500000.5", "SchemaViolation"),
        (3, "99999999999999999999", "SchemaViolation"),
        (4, "9999999999999999", "MalformedPost"),
        (5, "0", "SchemaViolation"),
    ] {
        let mut body: Value = serde_json::from_slice(&body_for(&vcb, "settled", "VCB-A")).unwrap();
        body["amount"] = json!(amount);
        let signed = sign_request(
            &key(1),
            "POST",
            VCB_POSTS,
            &serde_json::to_vec(&body).unwrap(),
            now_ms(),
        );
        let a = s.send_post(&signed, &format!("a-{n}")).await;
        assert_eq!(
            (a.status, a.kind()),
            (StatusCode::BAD_REQUEST, kind),
            "{amount}: {:?}",
            a.body
        );
    }
    // A whole amount other than the instruction's: refused by the book, and recorded.
    let mut body: Value = serde_json::from_slice(&body_for(&vcb, "settled", "VCB-B")).unwrap();
    body["amount"] = json!("500001");
    let signed = sign_request(
        &key(1),
        "POST",
        VCB_POSTS,
        &serde_json::to_vec(&body).unwrap(),
        now_ms(),
    );
    let a = s.send_post(&signed, "a-6").await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::UNPROCESSABLE_ENTITY, "AmountMismatch")
    );
    assert_eq!(s.count().await, after_foreign + 1);

    // Without signature headers, or with a stale fetch: 401, nothing read or written.
    let response = s
        .client
        .post(format!("{}{VCB_POSTS}", s.base))
        .header("content-type", "application/json")
        .header("idempotency-key", "n-1")
        .body(body_for(&vcb, "settled", "VCB-C"))
        .send()
        .await
        .unwrap();
    let a = s.answer(response, "receipt.response").await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::UNAUTHORIZED, "MissingSignature")
    );
    let path = "/v1/gateways/vcb/instructions?max=10";
    let stale = now_ms() - POST_REPLAY_WINDOW_MS - 60_000;
    let a = s.fetch_at(Some(&key(1)), path, stale).await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::UNAUTHORIZED, "StaleRequest")
    );
    // A query nothing can read: unsigned, the signature is asked for first; signed, a
    // typed refusal naming the parameter, never the framework's plain text.
    let unreadable = "/v1/gateways/vcb/instructions?max=abc";
    let a = s.fetch_at(None, unreadable, now_ms()).await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::UNAUTHORIZED, "MissingSignature")
    );
    let a = s.fetch_at(Some(&key(1)), unreadable, now_ms()).await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::BAD_REQUEST, "InvalidParameter"),
        "{}",
        a.body
    );
    assert_eq!(s.count().await, after_foreign + 1);

    // A well-formed post without an Idempotency-Key: 400, nothing appended.
    let signed = sign_request(
        &key(1),
        "POST",
        VCB_POSTS,
        &body_for(&vcb, "settled", "VCB-D"),
        now_ms(),
    );
    let response = s
        .client
        .post(format!("{}{VCB_POSTS}", s.base))
        .header("content-type", "application/json")
        .header("ansinh-gateway-timestamp", &signed.timestamp)
        .header("ansinh-gateway-key-id", &signed.key_id)
        .header("ansinh-gateway-signature", &signed.signature)
        .body(signed.body.clone())
        .send()
        .await
        .unwrap();
    let a = s.answer(response, "receipt.response").await;
    assert_eq!(
        (a.status, a.kind()),
        (StatusCode::BAD_REQUEST, "MissingIdempotencyKey")
    );
    assert_eq!(s.count().await, after_foreign + 1);
}

/// Which instructions are due for a timeout comes from the projections (the instructions
/// still pending, by issue day), each channel with its own delay (bank and mobile money
/// 10 days, post office 45): due ones are timed out oldest first, within the call's
/// limit, which says whether more are left, and a second pass finds nothing.
#[tokio::test]
async fn timeouts_take_the_due_instructions_from_the_projections_by_channel() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let service = service_on(common::client().await, &config, dir.path()).await;
    issue_instructions(&service).await;
    let m = manager();
    let p = Partition::new("01").unwrap();
    let d = |s: &str| s.parse::<chrono::NaiveDate>().unwrap();
    let time_out = |as_of: &'static str, limit: usize| {
        let (service, m, p) = (service.clone(), m.clone(), p.clone());
        async move {
            let done = service
                .time_out_due(
                    &m,
                    "test",
                    &p,
                    as_of.parse().unwrap(),
                    d("2026-12-31"),
                    limit,
                )
                .await
                .unwrap();
            let ids: Vec<String> = done.timed_out.iter().map(|i| i.to_string()).collect();
            (ids, done.more_left)
        }
    };
    // Issued on 2026-10-05 by bank and mobile money: due from 2026-10-15.
    assert_eq!(time_out("2026-10-14", usize::MAX).await, (vec![], false));
    // A page of one answers its bound and says more are left (three more are due).
    assert_eq!(
        time_out("2026-10-15", 1).await,
        (vec!["pay:1:2026-10:1".to_string()], true)
    );

    // November: the same four, and a fifth paid at the post office.
    let rq = |key: &'static str| request(&m, key);
    let programme = ProgrammeId::parse("SOCIAL_ASSISTANCE_MONTHLY").unwrap();
    let november = Month::parse("2026-11").unwrap();
    service
        .payment(
            &rq("alloc-11"),
            &p,
            CommandKind::Allocate {
                budget: BudgetKey {
                    programme: programme.clone(),
                    commune: CommuneId::parse(COMMUNE).unwrap(),
                    period: november,
                },
                amount: Decimal::from(2_500_000),
            },
            d("2026-11-01"),
        )
        .await
        .unwrap();
    register_household(&service, &format!("{COMMUNE}-000005"), 5).await;
    service
        .payment(
            &rq("grant-5"),
            &p,
            CommandKind::Grant {
                programme,
                beneficiary: BeneficiaryRef {
                    household: HouseholdRef::parse(&format!("{COMMUNE}-000005")).unwrap(),
                    member: MemberRef::parse("m1").unwrap(),
                },
                commune: CommuneId::parse(COMMUNE).unwrap(),
                from: november,
                terms: Terms {
                    category: CategoryId::parse("ELDERLY_80_PLUS_NO_PENSION").unwrap(),
                    channel: Channel::PostOffice {
                        gateway: GatewayId::parse("vnpost").unwrap(),
                    },
                    provincial_base: None,
                },
                citizen: None,
            },
            d("2026-11-01"),
        )
        .await
        .unwrap();
    service
        .payment(
            &rq("run-11"),
            &p,
            CommandKind::Run {
                period: november,
                commune: None,
            },
            d("2026-11-05"),
        )
        .await
        .unwrap();

    // On 2026-11-30 every bank and mobile-money instruction is due, October's first; the
    // post office's (due 2026-12-20) is not. A page exactly as long as what is due says
    // nothing is left.
    let (ids, more_left) = time_out("2026-11-30", 7).await;
    assert!(!more_left);
    assert_eq!(
        ids,
        [
            "pay:2:2026-10:1",
            "pay:3:2026-10:1",
            "pay:4:2026-10:1",
            "pay:1:2026-11:1",
            "pay:2:2026-11:1",
            "pay:3:2026-11:1",
            "pay:4:2026-11:1",
        ]
    );
    assert_eq!(time_out("2026-12-19", usize::MAX).await, (vec![], false));
    assert_eq!(
        time_out("2026-12-20", usize::MAX).await,
        (vec!["pay:5:2026-11:1".to_string()], false)
    );
    assert_eq!(time_out("2026-12-31", usize::MAX).await, (vec![], false));
    // Nothing is left pending for any gateway.
    let sink = LedgerSink::new(service.clone(), system_clock());
    for gateway in ["vcb", "momo", "vnpost"] {
        assert!(
            sink.pending(gateway, "", 10).await.unwrap().is_empty(),
            "{gateway}"
        );
    }
}
