//! The gateway transport against a real nats-server running the shipped accounts file
//! (deploy/nats/ansinh-accounts.conf): fetch and post through `serve`, the permissions
//! that keep a gateway to its own subjects and off the event stream and the JetStream
//! API, refusal of forged posts before the sink, error replies to malformed requests,
//! and the simulator. Each test starts its own server, since every test serves the same
//! subjects.

mod common_gateway;
use common_gateway::{Net, Serving, key, registry, shared_registry, start_net};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use ansinh::chain::Partition;
use ansinh::gateway::client::{GatewayClient, GatewayClientError};
use ansinh::gateway::server::{self, PostSink};
use ansinh::gateway::sim::{self, SimConfig};
use ansinh::gateway::{self, sign};
use ansinh::log::{Draft, Ledger, LedgerStore, LogConfig};
use ansinh::nats_server::{NatsServer, Sync};
use ansinh::proto::{
    self, GatewayPost, GatewayReply, InstructionList, PaymentInstruction, SignedGatewayPost,
    envelope::Payload,
};
use futures::StreamExt;
use prost::Message;

// ---- Harness --------------------------------------------------------------------------

fn instruction(gateway: &str, n: u32) -> PaymentInstruction {
    PaymentInstruction {
        instruction_id: format!("01-PI-{gateway}-{n:06}"),
        beneficiary_ref: format!("0100007-{n:06}"),
        amount: format!("{}", 500_000 + n * 1_000),
        channel: "bank".into(),
        period: "2026-03".into(),
        commune: "0100007".into(),
        gateway_id: gateway.into(),
    }
}

fn post_for(gateway: &str, i: &PaymentInstruction, outcome: &str) -> GatewayPost {
    GatewayPost {
        gateway_id: gateway.into(),
        instruction_id: i.instruction_id.clone(),
        outcome: outcome.into(),
        gateway_txn_id: format!("{gateway}-txn-{}", i.instruction_id),
        amount: i.amount.clone(),
        beneficiary_ref: i.beneficiary_ref.clone(),
        posted_at_unix_ms: 1_772_699_400_000,
        reason: String::new(),
    }
}

/// A sink that records every call and is idempotent per (gateway, instruction id):
/// what the payment domain will be, without the log.
#[derive(Default)]
struct Recorder {
    state: Mutex<RecorderState>,
}

#[derive(Default)]
struct RecorderState {
    waiting: Vec<PaymentInstruction>,
    calls: Vec<(String, GatewayPost, SignedGatewayPost)>,
    accepted: BTreeMap<(String, String), u64>,
    fetches: Vec<(String, u32)>,
}

impl Recorder {
    fn with_instructions(instructions: Vec<PaymentInstruction>) -> Arc<Self> {
        let r = Self::default();
        r.state.lock().unwrap().waiting = instructions;
        Arc::new(r)
    }

    fn calls(&self) -> Vec<(String, GatewayPost, SignedGatewayPost)> {
        self.state.lock().unwrap().calls.clone()
    }
}

impl PostSink for Recorder {
    fn post(
        &self,
        gateway: &str,
        post: GatewayPost,
        signed: SignedGatewayPost,
    ) -> impl Future<Output = GatewayReply> + Send {
        // A std Mutex: the lock is never held across an await.
        let mut s = self.state.lock().unwrap();
        let key = (gateway.to_string(), post.instruction_id.clone());
        s.calls.push((gateway.to_string(), post, signed));
        let next = s.accepted.len() as u64 + 1;
        let (status, sequence) = match s.accepted.get(&key) {
            Some(&sequence) => (server::STATUS_DUPLICATE, sequence),
            None => {
                s.accepted.insert(key.clone(), next);
                s.waiting.retain(|i| i.instruction_id != key.1);
                (server::STATUS_ACCEPTED, next)
            }
        };
        std::future::ready(GatewayReply {
            status: status.into(),
            partition: "01".into(),
            sequence,
            hash: format!("{sequence:064x}"),
            ..Default::default()
        })
    }

    fn fetch(
        &self,
        gateway: &str,
        max: u32,
        _after: &str,
    ) -> impl Future<Output = Result<InstructionList, GatewayReply>> + Send {
        let mut s = self.state.lock().unwrap();
        s.fetches.push((gateway.to_string(), max));
        // Deliberately careless: hands out every gateway's instructions, so the
        // server's own filter is what keeps them apart.
        let instructions = s.waiting.iter().take(max as usize + 2).cloned().collect();
        std::future::ready(Ok(InstructionList { instructions }))
    }
}

/// Longest wait for the server's error after a forbidden act; only reached when the act
/// was wrongly allowed (then the test fails instead of hanging).
const SERVER_ERROR_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Requests a flood sends beyond what the server's connection may buffer.
const FLOOD_BEYOND_CAPACITY: usize = 64;

async fn next_server_error(errors: &mut tokio::sync::broadcast::Receiver<String>) -> String {
    tokio::time::timeout(SERVER_ERROR_WAIT, errors.recv())
        .await
        .expect("the server reports a permissions violation")
        .unwrap()
}

fn assert_denied(result: Result<async_nats::Message, GatewayClientError>, subject: &str) {
    match result {
        Err(GatewayClientError::PermissionDenied { subject: s, .. }) => assert_eq!(s, subject),
        other => panic!("publishing to {subject} was not denied: {other:?}"),
    }
}

// ---- Fetch and post ---------------------------------------------------------------------

#[tokio::test]
async fn a_gateway_fetches_its_instructions_and_a_signed_post_reaches_the_sink_once() {
    let net = start_net();
    let sink = Recorder::with_instructions(vec![
        instruction("vcb", 1),
        instruction("momo", 1),
        instruction("vcb", 2),
        instruction("vcb", 3),
    ]);
    let serving = Serving::start(&net, sink.clone()).await;
    let vcb = net.gateway("vcb").await;

    let list = vcb.fetch(2).await.unwrap();
    let ids: Vec<&str> = list
        .instructions
        .iter()
        .map(|i| i.instruction_id.as_str())
        .collect();
    // At most 2 as asked, and never momo's, though the sink offered 4 of both.
    assert_eq!(ids, vec!["01-PI-vcb-000001", "01-PI-vcb-000002"]);
    assert_eq!(sink.state.lock().unwrap().fetches, vec![("vcb".into(), 2)]);

    let signed = sign::sign_post(&key(1), &post_for("vcb", &list.instructions[0], "settled"));
    let reply = vcb.post(&signed).await.unwrap();
    assert_eq!(reply.status, server::STATUS_ACCEPTED, "{reply:?}");
    assert_eq!((reply.partition.as_str(), reply.sequence), ("01", 1));

    let calls = sink.calls();
    assert_eq!(calls.len(), 1);
    let (gateway, post, kept) = &calls[0];
    assert_eq!(gateway, "vcb");
    assert_eq!(post, &post_for("vcb", &list.instructions[0], "settled"));
    // The sink gets the exact bytes and signature, which still verify on their own.
    assert_eq!(kept, &signed);
    assert_eq!(
        sign::verify_post(&registry(), "vcb", kept).unwrap(),
        post.clone()
    );

    // The same signed post again: the sink's idempotency answers "duplicate".
    let again = vcb.post(&signed).await.unwrap();
    assert_eq!(again.status, server::STATUS_DUPLICATE);
    assert_eq!(again.sequence, 1);
    assert_eq!(sink.state.lock().unwrap().accepted.len(), 1);

    // The posted instruction is no longer handed out.
    let rest = vcb.fetch(10).await.unwrap();
    let ids: BTreeSet<String> = rest
        .instructions
        .into_iter()
        .map(|i| i.instruction_id)
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from(["01-PI-vcb-000002".into(), "01-PI-vcb-000003".into()])
    );
    serving.stop().await;
}

// ---- Permissions ------------------------------------------------------------------------

#[tokio::test]
async fn a_gateway_cannot_publish_on_or_read_another_gateways_subjects() {
    let net = start_net();
    let sink = Recorder::with_instructions(vec![instruction("vcb", 1), instruction("momo", 1)]);
    let serving = Serving::start(&net, sink.clone()).await;
    let momo = net.gateway("momo").await;

    // momo relays a post vcb really signed, on vcb's subject: the server drops it.
    let vcb_post = sign::sign_post(&key(1), &post_for("vcb", &instruction("vcb", 1), "settled"));
    let post_subject = gateway::post_subject(gateway::DEFAULT_SUBJECT_PREFIX, "vcb");
    assert_denied(
        momo.request(&post_subject, vcb_post.encode_to_vec().into())
            .await,
        &post_subject,
    );
    let fetch_subject = gateway::fetch_subject(gateway::DEFAULT_SUBJECT_PREFIX, "vcb");
    let fetch = proto::FetchInstructions {
        max: 10,
        after: String::new(),
    }
    .encode_to_vec();
    assert_denied(
        momo.request(&fetch_subject, fetch.into()).await,
        &fetch_subject,
    );

    // Nor may it listen to vcb's requests or replies.
    for subject in [
        "_INBOX_vcb.>",
        "ansinh.v1.gateway.vcb.post",
        "ansinh.v1.gateway.>",
    ] {
        let mut errors = momo.server_errors();
        let _subscription = momo.nats().subscribe(subject.to_string()).await.unwrap();
        momo.nats().flush().await.unwrap();
        let error = next_server_error(&mut errors).await;
        assert!(
            error.contains("Permissions Violation for Subscription to") && error.contains(subject),
            "{subject}: {error}"
        );
    }

    // momo's own post goes through (so the sink is reachable), and it is the only call.
    let own = sign::sign_post(
        &key(2),
        &post_for("momo", &instruction("momo", 1), "failed"),
    );
    assert_eq!(
        momo.post(&own).await.unwrap().status,
        server::STATUS_ACCEPTED
    );
    let calls = sink.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "momo");
    assert_eq!(sink.state.lock().unwrap().fetches.len(), 0);
    serving.stop().await;
}

/// (messages, last sequence) of a stream, as the ledger user sees it.
/// The ledger user creates the event stream (default names) and appends `count` notes
/// to partition 01; the store's directory lives as long as the returned guard.
async fn ledger_with_notes(net: &Net, count: u32) -> (tempfile::TempDir, LogConfig) {
    let store_dir = tempfile::tempdir().unwrap();
    let store = LedgerStore::open(&store_dir.path().join("ledger.sled")).unwrap();
    let config = LogConfig::default();
    let (ledger, lost) = Ledger::open(net.ledger_client().await, config.clone(), store)
        .await
        .unwrap();
    assert!(lost.is_empty());
    for n in 0..count {
        ledger
            .append(Draft {
                partition: Partition::new("01").unwrap(),
                actor: proto::Actor {
                    id: "staff:test".into(),
                    role: "teller".into(),
                    unit: "0100007".into(),
                },
                idempotency_key: format!("note-{n}"),
                correlation_id: String::new(),
                request_fingerprint: None,
                subjects: vec![],
                payload: Payload::Note(proto::Note {
                    text: format!("note {n}"),
                }),
            })
            .await
            .unwrap();
    }
    ledger.close().await.unwrap();
    (store_dir, config)
}

/// The stdout of a command that must have succeeded (its stderr in the failure).
fn succeeded(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn stream_state(js: &async_nats::jetstream::Context, name: &str) -> (u64, u64) {
    let mut stream = js.get_stream(name).await.unwrap();
    let info = stream.info().await.unwrap();
    (info.state.messages, info.state.last_sequence)
}

#[tokio::test]
async fn a_gateway_cannot_publish_to_the_event_stream_nor_call_the_jetstream_api() {
    let net = start_net();
    // The ledger user creates the event stream and appends one event.
    let (_store_dir, config) = ledger_with_notes(&net, 1).await;
    let js = async_nats::jetstream::new(net.ledger_client().await);
    assert_eq!(stream_state(&js, &config.stream_name).await, (1, 1));

    let vcb = net.gateway("vcb").await;
    let note = proto::Envelope::default().encode_to_vec();
    for subject in [
        "ansinh.v1.events.01".to_string(),
        "ansinh.v1.events.79".to_string(),
        "$JS.API.INFO".to_string(),
        format!("$JS.API.STREAM.INFO.{}", config.stream_name),
        format!("$JS.API.STREAM.PURGE.{}", config.stream_name),
        format!("$JS.API.STREAM.DELETE.{}", config.stream_name),
        format!("$JS.API.STREAM.MSG.DELETE.{}", config.stream_name),
        "$JS.API.STREAM.CREATE.GATEWAY_OWN".to_string(),
        "ansinh.v1.checkpoints.01".to_string(),
    ] {
        assert_denied(vcb.request(&subject, note.clone().into()).await, &subject);
    }
    // A plain publish (no reply wanted) is refused the same way.
    let mut errors = vcb.server_errors();
    vcb.nats()
        .publish("ansinh.v1.events.01", note.into())
        .await
        .unwrap();
    vcb.nats().flush().await.unwrap();
    let error = next_server_error(&mut errors).await;
    assert!(
        error.contains("Permissions Violation for Publish to"),
        "{error}"
    );

    // The ledger's view: nothing changed, the stream is still there with its one event.
    assert_eq!(stream_state(&js, &config.stream_name).await, (1, 1));
}

/// The shipped `auditor` user verifies the whole log with `ansinh audit verify
/// --read-only`, and may do nothing else: no publish on a ledger subject, no stream
/// change, no bucket read (household data keys live there), no one else's replies.
#[tokio::test]
async fn the_auditor_user_verifies_the_log_and_can_change_nothing() {
    let net = start_net();
    let (_store_dir, config) = ledger_with_notes(&net, 3).await;
    let js = async_nats::jetstream::new(net.ledger_client().await);
    ansinh::checkpoint::stream::ensure_checkpoint_stream(
        &js,
        &ansinh::checkpoint::CheckpointConfig::default(),
    )
    .await
    .unwrap();
    // A bucket of the ledger's, as the vault keeps household data keys.
    let bucket = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: format!("{}_VAULT", config.stream_name),
            ..Default::default()
        })
        .await
        .unwrap();
    bucket
        .put("hh.0100007-000001", "wrapped key".into())
        .await
        .unwrap();
    let before = stream_state(&js, &config.stream_name).await;

    // The auditor's verify: OK, and it made no data directory of its own.
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("never-made");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ansinh"))
        .arg("--data-dir")
        .arg(&data_dir)
        .args([
            "--nats",
            &net.server.url(),
            "--nats-user",
            gateway::AUDITOR_USER,
            "--nats-inbox-prefix",
            gateway::AUDITOR_INBOX_PREFIX,
            "audit",
            "verify",
            "--read-only",
        ])
        .env(
            "ANSINH_NATS_PASSWORD",
            &net.passwords[gateway::AUDITOR_USER],
        )
        .output()
        .await
        .unwrap();
    let stdout = succeeded(&out);
    assert!(stdout.contains("OK partition 01: 3 events"), "{stdout}");
    assert!(!data_dir.exists());
    // Without its password the auditor is not let in.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ansinh"))
        .args(["--nats", &net.server.url(), "--nats-user", "auditor"])
        .args(["audit", "verify", "--read-only"])
        .env_remove("ANSINH_NATS_PASSWORD")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ANSINH_NATS_PASSWORD"),
        "{out:?}"
    );

    // Everything else the auditor tries is refused by the server.
    let (errors_tx, mut errors) = tokio::sync::broadcast::channel::<String>(16);
    let auditor = async_nats::ConnectOptions::with_user_and_password(
        gateway::AUDITOR_USER.into(),
        net.passwords[gateway::AUDITOR_USER].clone(),
    )
    .custom_inbox_prefix(gateway::AUDITOR_INBOX_PREFIX)
    .event_callback(move |event| {
        let errors_tx = errors_tx.clone();
        async move {
            if let async_nats::Event::ServerError(e) = event {
                let _ = errors_tx.send(e.to_string());
            }
        }
    })
    .connect(net.server.url())
    .await
    .unwrap();
    let envelope = proto::Envelope::default().encode_to_vec();
    for subject in [
        "ansinh.v1.events.01".to_string(),
        "ansinh.v1.checkpoints.01".to_string(),
        format!("$JS.API.STREAM.PURGE.{}", config.stream_name),
        format!("$JS.API.STREAM.DELETE.{}", config.stream_name),
        format!("$JS.API.STREAM.MSG.DELETE.{}", config.stream_name),
        format!("$JS.API.STREAM.UPDATE.{}", config.stream_name),
        "$JS.API.STREAM.CREATE.AUDITOR_OWN".to_string(),
        format!("$JS.API.DIRECT.GET.KV_{}_VAULT", config.stream_name),
        format!("$JS.API.STREAM.INFO.KV_{}_VAULT", config.stream_name),
        format!("$KV.{}_VAULT.hh.0100007-000001", config.stream_name),
    ] {
        auditor
            .publish(subject.clone(), envelope.clone().into())
            .await
            .unwrap();
        auditor.flush().await.unwrap();
        let error = next_server_error(&mut errors).await;
        assert!(
            error.contains("Permissions Violation for Publish to") && error.contains(&subject),
            "{subject}: {error}"
        );
    }
    // Another connection's replies (the ledger's JetStream answers) stay unreadable.
    let _sub = auditor.subscribe("_INBOX.>").await.unwrap();
    auditor.flush().await.unwrap();
    let error = next_server_error(&mut errors).await;
    assert!(
        error.contains("Permissions Violation for Subscription to"),
        "{error}"
    );

    // The ledger's view: the stream unchanged, the bucket's key still there.
    assert_eq!(stream_state(&js, &config.stream_name).await, before);
    assert!(bucket.get("hh.0100007-000001").await.unwrap().is_some());
}

#[tokio::test]
async fn only_the_configured_users_with_their_passwords_may_connect() {
    let net = start_net();
    assert!(
        async_nats::connect(net.server.url()).await.is_err(),
        "no anonymous connections"
    );
    let wrong =
        GatewayClient::connect(&net.server.url(), "vcb", "gw-vcb", "not-the-password").await;
    assert!(matches!(wrong, Err(GatewayClientError::Connect(_))));
    // Another gateway's password does not open this gateway's user.
    let crossed = GatewayClient::connect(
        &net.server.url(),
        "vcb",
        "gw-vcb",
        &net.passwords["gw-momo"],
    )
    .await;
    assert!(matches!(crossed, Err(GatewayClientError::Connect(_))));
    net.gateway("vcb").await;
}

#[test]
fn the_server_refuses_an_empty_secret_and_fails_closed_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let empty = NatsServer::start_with(
        dir.path(),
        Sync::Always,
        "",
        &[(gateway::LEDGER_PASSWORD_ENV, "")],
    );
    assert!(empty.is_err());
    // The accounts file without its passwords: nats-server refuses to start.
    std::fs::write(
        dir.path().join(gateway::ACCOUNTS_CONF_FILE),
        gateway::ACCOUNTS_CONF,
    )
    .unwrap();
    let include = format!("include {:?}", gateway::ACCOUNTS_CONF_FILE);
    let missing = NatsServer::start_with(dir.path(), Sync::Always, &include, &[]);
    match missing {
        Err(ansinh::nats_server::ServerError::Start(output)) => {
            assert!(output.contains("ANSINH_NATS_"), "{output}")
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("started without passwords"),
    }
}

// ---- A flood of requests ----------------------------------------------------------------

/// A sink whose fetches wait until the test lets them go; it counts them.
struct HeldSink {
    released: tokio::sync::watch::Receiver<bool>,
    fetches: tokio::sync::watch::Sender<u64>,
}

impl PostSink for HeldSink {
    fn post(
        &self,
        _gateway: &str,
        _post: GatewayPost,
        _signed: SignedGatewayPost,
    ) -> impl Future<Output = GatewayReply> + Send {
        std::future::ready(GatewayReply {
            status: server::STATUS_ACCEPTED.into(),
            sequence: 1,
            ..Default::default()
        })
    }

    fn fetch(
        &self,
        _gateway: &str,
        _max: u32,
        _after: &str,
    ) -> impl Future<Output = Result<InstructionList, GatewayReply>> + Send {
        self.fetches.send_modify(|n| *n += 1);
        let mut released = self.released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            Ok(InstructionList::default())
        }
    }
}

/// A gateway that sends more than the server can hold is shed, not buffered without
/// bound: with every request slot taken by fetches the ledger is slow to answer, the
/// server's connection keeps at most `SUBSCRIPTION_CAPACITY` further requests of a
/// subject and drops the rest (a slow consumer), so a flood of large requests costs the
/// ledger bounded memory. Oversized requests it does read are refused, and the server
/// goes on answering well-formed ones.
#[tokio::test]
async fn a_flood_of_requests_is_shed_past_a_bounded_buffer_and_the_server_keeps_answering() {
    let net = start_net();
    let (release, released) = tokio::sync::watch::channel(false);
    let sink = Arc::new(HeldSink {
        released,
        fetches: tokio::sync::watch::Sender::new(0),
    });
    let connection = net.server_connection().await;
    let client = connection.client().clone();
    let post_subject = gateway::post_subject(gateway::DEFAULT_SUBJECT_PREFIX, "vcb");
    let fetch_subject = gateway::fetch_subject(gateway::DEFAULT_SUBJECT_PREFIX, "vcb");
    // A plain subscription beside the server's queue group, on its connection: a message
    // seen here was delivered to that connection after everything the gateway sent
    // before it (NATS keeps one publisher's order to one subscriber).
    let mut seen = client.subscribe(post_subject.clone()).await.unwrap();
    let bound = server::bind(
        connection,
        gateway::DEFAULT_SUBJECT_PREFIX,
        shared_registry(),
        sink.clone(),
    )
    .await
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(bound.run(async move {
        let _ = stopped.await;
    }));

    let vcb = net.gateway("vcb").await;
    let inbox = vcb.nats().new_inbox();
    let mut replies = vcb.nats().subscribe(format!("{inbox}.>")).await.unwrap();
    vcb.nats().flush().await.unwrap();
    let fetch = proto::FetchInstructions {
        max: 1,
        after: String::new(),
    }
    .encode_to_vec();
    let held = server::IN_FLIGHT_REQUESTS_MAX;
    for n in 0..held {
        vcb.nats()
            .publish_with_reply(
                fetch_subject.clone(),
                format!("{inbox}.held.{n}"),
                fetch.clone().into(),
            )
            .await
            .unwrap();
    }
    // Every slot is taken once the sink has all of them: then the flood.
    sink.fetches
        .subscribe()
        .wait_for(|n| *n == held as u64)
        .await
        .unwrap();
    let oversized = server::SUBSCRIPTION_CAPACITY + FLOOD_BEYOND_CAPACITY;
    let large = bytes::Bytes::from(vec![0u8; server::REQUEST_BYTES_MAX + 1]);
    for n in 0..oversized {
        vcb.nats()
            .publish_with_reply(
                fetch_subject.clone(),
                format!("{inbox}.large.{n}"),
                large.clone(),
            )
            .await
            .unwrap();
    }
    // A post without a reply subject (dropped unanswered by the server) marks the end.
    vcb.nats()
        .publish(post_subject.clone(), bytes::Bytes::new())
        .await
        .unwrap();
    vcb.nats().flush().await.unwrap();
    seen.next()
        .await
        .expect("the mark reaches the server's connection");

    // The held fetches are answered, and a well-formed post after the flood.
    release.send(true).unwrap();
    let signed = sign::sign_post(&key(1), &post_for("vcb", &instruction("vcb", 1), "settled"));
    assert_eq!(
        vcb.post(&signed).await.unwrap().status,
        server::STATUS_ACCEPTED
    );
    stop.send(()).unwrap();
    serving.await.unwrap();
    // After every reply the server sent, on its connection: the end of the replies.
    client
        .publish(format!("{inbox}.end"), bytes::Bytes::new())
        .await
        .unwrap();
    client.flush().await.unwrap();

    let (mut answered_held, mut answered_large) = (0, 0);
    while let Some(reply) = replies.next().await {
        let kind = reply.subject.as_str()[inbox.len() + 1..]
            .split('.')
            .next()
            .unwrap()
            .to_owned();
        match kind.as_str() {
            "held" => {
                InstructionList::decode(reply.payload).unwrap();
                answered_held += 1;
            }
            "large" => {
                let refused = GatewayReply::decode(reply.payload).unwrap();
                assert_eq!(refused.error_kind, "oversized_request");
                answered_large += 1;
            }
            _ => break,
        }
    }
    assert_eq!(answered_held, held);
    assert_eq!(*sink.fetches.borrow(), held as u64);
    assert!(
        answered_large <= server::SUBSCRIPTION_CAPACITY,
        "{answered_large} of {oversized} oversized requests were kept and answered"
    );
}

// ---- Forged and malformed requests ------------------------------------------------------

#[tokio::test]
async fn forged_posts_are_refused_and_never_reach_the_sink() {
    let net = start_net();
    let sink = Recorder::with_instructions(vec![instruction("vcb", 1)]);
    let serving = Serving::start(&net, sink.clone()).await;
    let vcb = net.gateway("vcb").await;
    let i = instruction("vcb", 1);

    let good = sign::sign_post(&key(1), &post_for("vcb", &i, "settled"));
    let mut wrong_signature = good.clone();
    let mut s = good.signature.to_vec();
    s[10] ^= 0x40;
    wrong_signature.signature = s.into();
    let mut unknown_key_id = good.clone();
    unknown_key_id.key_id = key(9).key_id().into();
    let mut momos_key_id = good.clone();
    momos_key_id.key_id = key(2).key_id().into();
    let signed_by_momo = sign::sign_post(&key(2), &post_for("vcb", &i, "settled"));
    let names_momo = sign::sign_post(&key(1), &post_for("momo", &i, "settled"));
    let mut altered_amount = good.clone();
    let mut p = post_for("vcb", &i, "settled");
    p.amount = "999999999".into();
    altered_amount.post = p.encode_to_vec().into();
    let bad_outcome = sign::sign_post(&key(1), &post_for("vcb", &i, "paid"));

    let cases = [
        ("wrong signature", wrong_signature, "bad_signature"),
        ("unknown key id", unknown_key_id, "unknown_key"),
        (
            "another gateway's key id",
            momos_key_id,
            "key_of_another_gateway",
        ),
        (
            "signed by another gateway",
            signed_by_momo,
            "key_of_another_gateway",
        ),
        (
            "another gateway's id inside",
            names_momo,
            "gateway_mismatch",
        ),
        (
            "amount altered after signing",
            altered_amount,
            "bad_signature",
        ),
        ("unknown outcome", bad_outcome, "malformed_post"),
    ];
    for (case, signed, kind) in cases {
        let reply = vcb.post(&signed).await.unwrap();
        assert_eq!(reply.status, server::STATUS_REFUSED, "{case}: {reply:?}");
        assert_eq!(reply.error_kind, kind, "{case}: {reply:?}");
        assert!(!reply.message.is_empty());
        assert_eq!(reply.sequence, 0);
    }
    assert!(sink.calls().is_empty(), "a refused post reached the sink");

    // The genuine post is accepted: the sink was reachable all along.
    assert_eq!(
        vcb.post(&good).await.unwrap().status,
        server::STATUS_ACCEPTED
    );
    assert_eq!(sink.calls().len(), 1);
    serving.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_an_error_reply() {
    let net = start_net();
    let sink = Recorder::with_instructions(vec![instruction("vcb", 1)]);
    let serving = Serving::start(&net, sink.clone()).await;
    let vcb = net.gateway("vcb").await;
    let post_subject = gateway::post_subject(gateway::DEFAULT_SUBJECT_PREFIX, "vcb");
    let fetch_subject = gateway::fetch_subject(gateway::DEFAULT_SUBJECT_PREFIX, "vcb");

    let garbage: &[u8] = &[0xff, 0xff, 0xff, 0x0f];
    let oversized = vec![0u8; server::REQUEST_BYTES_MAX + 1];
    for (payload, kind) in [
        (garbage.to_vec(), "malformed_request"),
        (oversized, "oversized_request"),
    ] {
        let reply = vcb
            .request(&post_subject, payload.clone().into())
            .await
            .unwrap();
        let reply = GatewayReply::decode(reply.payload).unwrap();
        assert_eq!(reply.status, server::STATUS_ERROR, "{reply:?}");
        assert_eq!(reply.error_kind, kind);

        // A fetch answers with a GatewayReply flagged in a header.
        let reply = vcb.request(&fetch_subject, payload.into()).await.unwrap();
        let flagged = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(server::REPLY_TYPE_HEADER))
            .map(|v| v.to_string());
        assert_eq!(flagged.as_deref(), Some(server::REPLY_TYPE_GATEWAY_REPLY));
        let reply = GatewayReply::decode(reply.payload).unwrap();
        assert_eq!(reply.status, server::STATUS_ERROR);
        assert_eq!(reply.error_kind, kind);
    }
    // A valid protobuf of the wrong shape: a post whose signed bytes are empty.
    let empty = SignedGatewayPost::default();
    let reply = vcb.post(&empty).await.unwrap();
    assert_eq!(reply.status, server::STATUS_REFUSED);
    assert_eq!(reply.error_kind, "unknown_key");

    assert!(sink.calls().is_empty());
    assert!(sink.state.lock().unwrap().fetches.is_empty());
    // The client turns a flagged fetch reply into an error; an ordinary one still works.
    assert_eq!(vcb.fetch(5).await.unwrap().instructions.len(), 1);
    serving.stop().await;
}

// ---- The simulator ------------------------------------------------------------------------

fn fixed_clock() -> i64 {
    1_772_699_400_000
}

async fn simulate(net: &Net, seed: u64) -> (sim::SimSummary, Vec<SignedGatewayPost>) {
    let instructions = (1..=40).map(|n| instruction("vcb", n)).collect();
    let sink = Recorder::with_instructions(instructions);
    let serving = Serving::start(net, sink.clone()).await;
    let vcb = net.gateway("vcb").await;
    let config = SimConfig {
        failure_rate: 0.2,
        return_rate: 0.1,
        duplicate_rate: 0.3,
        latency_ms: 0,
        rounds: 10,
        fetch_max: 15,
        clock: fixed_clock,
        ..SimConfig::new(key(1), seed)
    };
    let summary = sim::run(&vcb, &config).await.unwrap();
    serving.stop().await;
    let posts = sink.calls().into_iter().map(|(_, _, s)| s).collect();
    (summary, posts)
}

#[tokio::test]
async fn the_simulator_posts_a_result_per_instruction_and_its_duplicates_are_recognised() {
    let net = start_net();
    let (summary, posts) = simulate(&net, 42).await;
    assert_eq!(summary.instructions, 40);
    // 15 + 15 + 10, then a round that finds nothing.
    assert_eq!(summary.rounds, 4);
    assert_eq!(summary.by_outcome.values().sum::<u64>(), 40);
    assert!(summary.by_outcome["settled"] > 0 && summary.by_outcome["failed"] > 0);
    assert_eq!(summary.by_status["accepted"], 40);
    assert!(summary.duplicates_sent > 0);
    assert_eq!(
        summary.by_status.get("duplicate").copied().unwrap_or(0),
        summary.duplicates_sent
    );
    assert_eq!(summary.posts, 40 + summary.duplicates_sent);
    assert_eq!(posts.len() as u64, summary.posts);
    assert_eq!(summary.transport_errors, 0);
    assert!(summary.line().contains("accepted=40"));

    // Deterministic: the same seed gives the same signed bytes; another seed does not.
    let (again, posts_again) = simulate(&net, 42).await;
    assert_eq!(again, summary);
    assert_eq!(posts_again, posts);
    let (other, _) = simulate(&net, 43).await;
    assert_ne!(
        (other.by_outcome.clone(), other.duplicates_sent),
        (summary.by_outcome.clone(), summary.duplicates_sent)
    );
}

/// The clock of `WindowedSink` and of the simulator facing it: one test's, moved on by
/// the sink at each fetch.
static WINDOW_CLOCK_MS: std::sync::atomic::AtomicI64 =
    std::sync::atomic::AtomicI64::new(1_772_699_400_000);

fn window_clock() -> i64 {
    WINDOW_CLOCK_MS.load(std::sync::atomic::Ordering::SeqCst)
}

/// A sink that keeps the ledger's replay window (docs/GATEWAYS.md §10): a post whose
/// content (all but `posted_at_unix_ms`) it recorded gets the first answer whenever it
/// comes; a new one must be dated within `POST_REPLAY_WINDOW_MS` of its clock. It has
/// trouble with the first post of each instruction ("error", nothing recorded), and
/// every fetch comes six minutes after the one before, as a gateway that comes back
/// much later.
#[derive(Default)]
struct WindowedSink {
    state: Mutex<WindowedState>,
}

#[derive(Default)]
struct WindowedState {
    waiting: Vec<PaymentInstruction>,
    troubled: BTreeSet<String>,
    /// Recorded posts by their content's encoding (`posted_at_unix_ms` left out).
    recorded: BTreeMap<Vec<u8>, u64>,
    posts: Vec<GatewayPost>,
}

impl PostSink for WindowedSink {
    fn post(
        &self,
        _gateway: &str,
        post: GatewayPost,
        _signed: SignedGatewayPost,
    ) -> impl Future<Output = GatewayReply> + Send {
        let mut s = self.state.lock().unwrap();
        s.posts.push(post.clone());
        let content = GatewayPost {
            posted_at_unix_ms: 0,
            ..post.clone()
        }
        .encode_to_vec();
        let reply = |status: &str, sequence: u64, kind: &str| GatewayReply {
            status: status.into(),
            sequence,
            error_kind: kind.into(),
            ..Default::default()
        };
        let answer = if let Some(&sequence) = s.recorded.get(&content) {
            reply(server::STATUS_DUPLICATE, sequence, "")
        } else if (window_clock() - post.posted_at_unix_ms).abs()
            > ansinh::service::POST_REPLAY_WINDOW_MS
        {
            reply(server::STATUS_REFUSED, 0, "outside_replay_window")
        } else if s.troubled.insert(post.instruction_id.clone()) {
            reply(server::STATUS_ERROR, 0, "ledger_unavailable")
        } else {
            let sequence = s.recorded.len() as u64 + 1;
            s.recorded.insert(content, sequence);
            s.waiting
                .retain(|i| i.instruction_id != post.instruction_id);
            reply(server::STATUS_ACCEPTED, sequence, "")
        };
        std::future::ready(answer)
    }

    fn fetch(
        &self,
        _gateway: &str,
        max: u32,
        _after: &str,
    ) -> impl Future<Output = Result<InstructionList, GatewayReply>> + Send {
        WINDOW_CLOCK_MS.fetch_add(6 * 60_000, std::sync::atomic::Ordering::SeqCst);
        let s = self.state.lock().unwrap();
        let instructions = s.waiting.iter().take(max as usize).cloned().collect();
        std::future::ready(Ok(InstructionList { instructions }))
    }
}

/// A result the ledger did not record the first time is posted again when its
/// instruction is offered again, however much later: the same content signed again
/// with a fresh `posted_at_unix_ms`, not the old bytes, which would by then fall outside
/// the replay window and be refused for ever.
#[tokio::test]
async fn the_simulator_signs_a_result_offered_again_with_a_fresh_time() {
    let net = start_net();
    let sink = Arc::new(WindowedSink::default());
    sink.state.lock().unwrap().waiting = vec![instruction("vcb", 1)];
    let serving = Serving::start(&net, sink.clone()).await;
    let vcb = net.gateway("vcb").await;
    let config = SimConfig {
        failure_rate: 0.0,
        return_rate: 0.0,
        duplicate_rate: 0.0,
        latency_ms: 0,
        rounds: 10,
        fetch_max: 10,
        clock: window_clock,
        ..SimConfig::new(key(1), 5)
    };
    let summary = sim::run(&vcb, &config).await.unwrap();
    serving.stop().await;

    assert_eq!(summary.reoffered, 1, "{summary:?}");
    assert_eq!(
        summary.by_status,
        BTreeMap::from([("accepted".into(), 1), ("error".into(), 1)]),
        "{}",
        summary.line()
    );
    let posts = sink.state.lock().unwrap().posts.clone();
    assert_eq!(posts.len(), 2);
    // The same result, the same transaction id: only the time differs.
    assert!(posts[1].posted_at_unix_ms > posts[0].posted_at_unix_ms);
    assert_eq!(
        GatewayPost {
            posted_at_unix_ms: 0,
            ..posts[0].clone()
        },
        GatewayPost {
            posted_at_unix_ms: 0,
            ..posts[1].clone()
        }
    );
}

/// A ledger whose first fetch is answered "unavailable" (its read model catching up),
/// and which otherwise is the `Recorder`.
struct CatchingUp {
    first: std::sync::atomic::AtomicBool,
    recorder: Arc<Recorder>,
}

impl PostSink for CatchingUp {
    fn post(
        &self,
        gateway: &str,
        post: GatewayPost,
        signed: SignedGatewayPost,
    ) -> impl Future<Output = GatewayReply> + Send {
        self.recorder.post(gateway, post, signed)
    }

    fn fetch(
        &self,
        gateway: &str,
        max: u32,
        after: &str,
    ) -> impl Future<Output = Result<InstructionList, GatewayReply>> + Send {
        let first = self.first.swap(false, std::sync::atomic::Ordering::SeqCst);
        async move {
            if first {
                return Err(server::failure_reply(
                    server::STATUS_ERROR,
                    server::KIND_LEDGER_UNAVAILABLE,
                    "catching up",
                ));
            }
            self.recorder.fetch(gateway, max, after).await
        }
    }
}

/// A fetch answered "ledger unavailable" is sent again later, not taken for the end of
/// the run.
#[tokio::test]
async fn the_simulator_comes_back_when_the_ledger_is_unavailable() {
    let net = start_net();
    let recorder = Recorder::with_instructions(vec![instruction("vcb", 1)]);
    let sink = Arc::new(CatchingUp {
        first: true.into(),
        recorder: recorder.clone(),
    });
    let serving = Serving::start(&net, sink).await;
    let vcb = net.gateway("vcb").await;
    let config = SimConfig {
        latency_ms: 0,
        duplicate_rate: 0.0,
        clock: fixed_clock,
        ..SimConfig::new(key(1), 9)
    };
    let summary = sim::run(&vcb, &config).await.unwrap();
    serving.stop().await;
    assert_eq!(summary.instructions, 1, "{}", summary.line());
    assert_eq!(summary.by_status["accepted"], 1);
    assert_eq!(recorder.calls().len(), 1);
}

/// A ledger as the simulator meets it across runs: it lists waiting instructions in id
/// order after `after`, refuses a transaction id (and outcome) already accepted for
/// another instruction, as the book does (`transaction_id_reused`), and has trouble with
/// the `stuck` instructions' posts, which stay waiting.
#[derive(Default)]
struct PagedLedger {
    state: Mutex<PagedState>,
}

#[derive(Default)]
struct PagedState {
    waiting: BTreeMap<String, PaymentInstruction>,
    stuck: BTreeSet<String>,
    /// Accepted (transaction id, outcome) → instruction.
    transactions: BTreeMap<(String, String), String>,
    /// Instructions with a post, stuck or not.
    posted: BTreeSet<String>,
}

impl PagedLedger {
    fn add(&self, instructions: impl IntoIterator<Item = PaymentInstruction>) {
        let mut s = self.state.lock().unwrap();
        for i in instructions {
            s.waiting.insert(i.instruction_id.clone(), i);
        }
    }
}

impl PostSink for PagedLedger {
    fn post(
        &self,
        _gateway: &str,
        post: GatewayPost,
        _signed: SignedGatewayPost,
    ) -> impl Future<Output = GatewayReply> + Send {
        let mut s = self.state.lock().unwrap();
        let instruction = post.instruction_id.clone();
        s.posted.insert(instruction.clone());
        let reply = |status: &str, kind: &str| GatewayReply {
            status: status.into(),
            error_kind: kind.into(),
            ..Default::default()
        };
        let key = (post.gateway_txn_id.clone(), post.outcome.clone());
        let answer = match s.transactions.get(&key) {
            Some(first) if *first == instruction => reply(server::STATUS_DUPLICATE, ""),
            Some(_) => reply(server::STATUS_REFUSED, "transaction_id_reused"),
            None if s.stuck.contains(&instruction) => {
                reply(server::STATUS_ERROR, server::KIND_LEDGER_UNAVAILABLE)
            }
            None => {
                s.transactions.insert(key, instruction.clone());
                s.waiting.remove(&instruction);
                reply(server::STATUS_ACCEPTED, "")
            }
        };
        std::future::ready(answer)
    }

    fn fetch(
        &self,
        _gateway: &str,
        max: u32,
        after: &str,
    ) -> impl Future<Output = Result<InstructionList, GatewayReply>> + Send {
        let s = self.state.lock().unwrap();
        let instructions = s
            .waiting
            .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .take(max as usize)
            .map(|(_, i)| i.clone())
            .collect();
        std::future::ready(Ok(InstructionList { instructions }))
    }
}

fn sim_config(seed: u64) -> SimConfig {
    SimConfig {
        latency_ms: 0,
        duplicate_rate: 0.2,
        fetch_max: 10,
        clock: fixed_clock,
        ..SimConfig::new(key(1), seed)
    }
}

/// A gateway's transaction ids never repeat from one run of the simulator to the next
/// with the same seed (as `gateway-sim` run every month with its default seed): each
/// names its instruction, so the ledger never refuses one as reused.
#[tokio::test]
async fn the_simulator_never_reuses_a_transaction_id_in_a_later_run() {
    let net = start_net();
    let ledger = Arc::new(PagedLedger::default());
    let serving = Serving::start(&net, ledger.clone()).await;
    let vcb = net.gateway("vcb").await;
    ledger.add((1..=10).map(|n| instruction("vcb", n)));
    let first = sim::run(&vcb, &sim_config(1)).await.unwrap();
    ledger.add((11..=20).map(|n| instruction("vcb", n)));
    let second = sim::run(&vcb, &sim_config(1)).await.unwrap();
    serving.stop().await;
    for summary in [&first, &second] {
        assert_eq!(summary.instructions, 10, "{}", summary.line());
        assert_eq!(summary.by_status["accepted"], 10, "{:?}", summary.refusals);
        assert!(!summary.by_status.contains_key("refused"), "{:?}", summary);
    }
    assert_eq!(ledger.state.lock().unwrap().transactions.len(), 20);
}

/// A full page of instructions the ledger keeps offering (their posts not recorded) does
/// not hide the ones after it: each round asks for the page after the last one seen.
#[tokio::test]
async fn the_simulator_pages_past_instructions_still_waiting() {
    let net = start_net();
    let ledger = Arc::new(PagedLedger::default());
    ledger.add((1..=30).map(|n| instruction("vcb", n)));
    ledger.state.lock().unwrap().stuck = (1..=10)
        .map(|n| instruction("vcb", n).instruction_id)
        .collect();
    let serving = Serving::start(&net, ledger.clone()).await;
    let vcb = net.gateway("vcb").await;
    let config = SimConfig {
        rounds: 3,
        ..sim_config(2)
    };
    let summary = sim::run(&vcb, &config).await.unwrap();
    serving.stop().await;
    let s = ledger.state.lock().unwrap();
    assert_eq!(s.posted.len(), 30, "{}", summary.line());
    assert_eq!(s.transactions.len(), 20);
    assert_eq!(s.waiting.keys().cloned().collect::<BTreeSet<_>>(), s.stuck);
}

#[tokio::test]
async fn the_simulator_refuses_impossible_settings() {
    let net = start_net();
    let vcb = net.gateway("vcb").await;
    for config in [
        SimConfig {
            failure_rate: 0.8,
            return_rate: 0.3,
            ..SimConfig::new(key(1), 1)
        },
        SimConfig {
            duplicate_rate: -0.1,
            ..SimConfig::new(key(1), 1)
        },
        SimConfig {
            fetch_max: 0,
            ..SimConfig::new(key(1), 1)
        },
    ] {
        assert!(matches!(
            sim::run(&vcb, &config).await,
            Err(sim::SimError::InvalidConfig(_))
        ));
    }
}

// ---- The CLI, end to end ------------------------------------------------------------------

/// `admin add-gateway` as an operator runs it, against the ledger's NATS as the ledger
/// user: the key lands in the ledger's directory, and a gateway server following the
/// directory takes the simulated gateway's posts signed with it.
#[tokio::test]
async fn add_gateway_then_gateway_sim_over_the_real_transport() {
    let net = start_net();
    let data = tempfile::tempdir().unwrap();
    let key_file = data.path().join("vcb.key");
    let bin = env!("CARGO_BIN_EXE_ansinh");
    let out = tokio::process::Command::new(bin)
        .args(["--data-dir"])
        .arg(data.path())
        .args([
            "--nats",
            &net.server.url(),
            "--nats-user",
            gateway::LEDGER_USER,
        ])
        .env("ANSINH_NATS_PASSWORD", &net.passwords[gateway::LEDGER_USER])
        .args(["admin", "add-gateway", "--id", "vcb", "--key-out"])
        .arg(&key_file)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The ledger's NATS was used: no embedded server was started for it.
    assert!(!data.path().join("nats").exists());
    let directory = ansinh::directory::Directory::open(
        &async_nats::jetstream::new(net.ledger_client().await),
        "ANSINH_EVENTS",
        1,
    )
    .await
    .unwrap();
    let registry = directory.gateways();
    assert_eq!(registry.current().gateways(), vec!["vcb"]);

    let sink = Recorder::with_instructions((1..=12).map(|n| instruction("vcb", n)).collect());
    let bound = server::bind(
        net.server_connection().await,
        gateway::DEFAULT_SUBJECT_PREFIX,
        registry,
        sink.clone(),
    )
    .await
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(bound.run(async move {
        let _ = stopped.await;
    }));

    let out = tokio::process::Command::new(bin)
        .args([
            "--nats",
            &net.server.url(),
            "gateway-sim",
            "--gateway",
            "vcb",
            "--key",
        ])
        .arg(&key_file)
        .args([
            "--duplicate-rate",
            "0.5",
            "--latency-ms",
            "0",
            "--seed",
            "7",
        ])
        .env("ANSINH_GATEWAY_NATS_PASSWORD", &net.passwords["gw-vcb"])
        .output()
        .await
        .unwrap();
    let stdout = succeeded(&out);
    assert!(stdout.contains("12 instructions"), "{stdout}");
    assert!(stdout.contains("accepted=12"), "{stdout}");
    assert_eq!(sink.state.lock().unwrap().accepted.len(), 12);
    stop.send(()).unwrap();
    serving.await.unwrap();
}
