//! Shared test harness: one real nats-server per test binary (fsync always, fresh
//! store in a temp dir, free loopback port); each test gets its own stream.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use ansinh::chain::Partition;
use ansinh::log::{Draft, Ledger, LedgerStore, LogConfig};
use ansinh::nats_server::{NatsServer, Sync};
use ansinh::proto::{self, envelope::Payload};

struct Shared {
    server: NatsServer,
    _dir: tempfile::TempDir,
}

static SERVER: OnceLock<Shared> = OnceLock::new();
static NEXT: AtomicU64 = AtomicU64::new(1);

pub fn server_url() -> String {
    SERVER
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let server = NatsServer::start(dir.path(), Sync::Always)
                .expect("start nats-server (run scripts/install-nats-server.sh)");
            Shared { server, _dir: dir }
        })
        .server
        .url()
}

/// A stream and subject prefix no other test uses.
pub fn fresh_log() -> LogConfig {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let tag = format!("{}_{n}", std::process::id());
    LogConfig {
        stream_name: format!("T_{tag}"),
        subject_prefix: format!("t{tag}.events"),
        replicas: 1,
    }
}

pub async fn client() -> async_nats::Client {
    async_nats::connect(server_url())
        .await
        .expect("connect to test nats-server")
}

/// A ledger with its own store directory (returned so it outlives the ledger).
pub async fn ledger(config: &LogConfig) -> (Ledger, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = ledger_at(config, dir.path()).await;
    (ledger, dir)
}

pub async fn ledger_at(config: &LogConfig, dir: &std::path::Path) -> Ledger {
    let store = LedgerStore::open(&dir.join("ledger.sled")).expect("open store");
    let (ledger, lost) = Ledger::open(client().await, config.clone(), store)
        .await
        .expect("open ledger");
    assert!(lost.is_empty(), "unexpected lost data: {lost:?}");
    ledger
}

/// Where the secrets file of the ledger `config` lives: one file per ledger, shared by
/// every process of it (as an operator distributes it), outside any data directory.
pub fn secrets_of(config: &LogConfig) -> std::path::PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
        .join(format!("{}.secrets", config.stream_name))
}

/// The vault of `ledger` (its bucket on the shared server), with the secrets file at
/// `secrets` (created when missing).
pub async fn vault_for(ledger: &Ledger, secrets: &std::path::Path) -> ansinh::personal::Vault {
    ansinh::personal::Vault::open(
        ledger.jetstream(),
        &ledger.config().stream_name,
        ledger.config().replicas,
        secrets,
    )
    .await
    .expect("open the vault")
}

/// The bytes of an event that continues a new partition's chain from its genesis but
/// excludes a message that broke nothing: no exclusion can pass over it (it is in the
/// chain), so every reader stops there (docs/CHAIN.md, section 4a).
pub fn exclusion_of_nothing(partition: &str) -> Vec<u8> {
    use prost::Message as _;
    let genesis = ansinh::chain::ChainHead::genesis(Partition::new(partition).unwrap());
    proto::Envelope {
        format_version: 1,
        partition: partition.into(),
        sequence: 1,
        prev_hash: genesis.hash.0.to_vec().into(),
        payload: Some(Payload::MessageExcluded(proto::MessageExcluded {
            stream_sequence: 1,
            message_hash: vec![0; 32].into(),
            ..Default::default()
        })),
        ..Default::default()
    }
    .encode_to_vec()
}

pub fn note(partition: &str, key: &str, text: &str) -> Draft {
    Draft {
        partition: Partition::new(partition).expect("valid partition"),
        actor: proto::Actor {
            id: "staff:test".into(),
            role: "teller".into(),
            unit: "0100007".into(),
        },
        idempotency_key: key.into(),
        correlation_id: "test".into(),
        request_fingerprint: None,
        subjects: vec![format!("note:{key}")],
        payload: Payload::Note(proto::Note { text: text.into() }),
    }
}

pub async fn stream_of(config: &LogConfig) -> async_nats::jetstream::stream::Stream {
    async_nats::jetstream::new(client().await)
        .get_stream(&config.stream_name)
        .await
        .expect("stream exists")
}

/// Events stored in the log: a message holding a frame counts each of its events.
pub async fn event_count(config: &LogConfig) -> u64 {
    events_in(stream_of(config).await, config).await
}

/// Events stored in `stream` (of any server): a frame counts each of its events.
pub async fn events_in(
    mut stream: async_nats::jetstream::stream::Stream,
    config: &LogConfig,
) -> u64 {
    let end = ansinh::log::reader::last_stream_sequence(&mut stream)
        .await
        .expect("stream info");
    ansinh::log::read_range(&stream, &config.wildcard(), 1, end, |_| Ok::<_, ()>(()))
        .await
        .expect("log read")
}

/// Messages stored in the stream (a frame of several events is one).
pub async fn message_count(config: &LogConfig) -> u64 {
    stream_of(config)
        .await
        .info()
        .await
        .expect("stream info")
        .state
        .messages
}

/// The partition of the ledger's keys, where verify reads the keys that sign exclusions:
/// the checkpoints' default, which every test uses.
pub fn keys_partition() -> Partition {
    ansinh::checkpoint::CheckpointConfig::default().keys_partition
}

/// Verifies the whole log and returns the report; panics if it does not verify.
pub async fn verified(config: &LogConfig) -> ansinh::verify::VerifyReport {
    let mut stream = stream_of(config).await;
    ansinh::verify::verify(&mut stream, config, &keys_partition(), None, |_| {})
        .await
        .expect("the log verifies")
}

/// Event-log and checkpoint stream names no other test uses.
pub fn fresh_checkpointed() -> (LogConfig, ansinh::checkpoint::CheckpointConfig) {
    let log = fresh_log();
    let checkpoints = ansinh::checkpoint::CheckpointConfig {
        stream_name: format!("C{}", log.stream_name),
        subject_prefix: log.subject_prefix.replace(".events", ".cp"),
        ..Default::default()
    };
    (log, checkpoints)
}

/// A poor-household loan approval of `amount` (whole VND), effective 2026-02-02.
pub fn approved(loan: u64, household: &str, amount: &str) -> Payload {
    Payload::LoanApproved(proto::LoanApproved {
        loan_number: loan,
        household_id: household.into(),
        programme_id: "POOR_HOUSEHOLD".into(),
        programme_version: 1,
        amount: amount.into(),
        term_months: 36,
        effective_on: "2026-02-02".into(),
        ..Default::default()
    })
}

/// Registers `household` (rural, 2026-01-05) with a head whose citizen id is derived from
/// `n`, by a credit officer of its province: what a payments test needs before it
/// grants assistance (the book refuses grants to households it does not know).
pub async fn register_household(service: &ansinh::service::Service, household: &str, n: u32) {
    let officer = ansinh::access::Caller {
        id: "staff:registrar".into(),
        role: ansinh::access::Role::CreditOfficer,
        unit: household[..2].into(),
    };
    let key = format!("register:{household}");
    service
        .register(
            &ansinh::service::Request {
                caller: &officer,
                idempotency_key: &key,
                correlation_id: "test",
                fingerprint: None,
            },
            &ansinh::domain::ids::HouseholdId::parse(household).unwrap(),
            ansinh::domain::eligibility::Area::Rural,
            "2026-01-05".parse().unwrap(),
            &ansinh::personal::PersonalData {
                head_name: "Đinh Thị Lụa".into(),
                head_citizen_id: format!("001045{n:06}"),
                phone: None,
                account_number: None,
                members: vec![],
            },
        )
        .await
        .unwrap();
}

/// Reads an HTTP answer and checks its body against `schema` (or, for an error status,
/// against `error.response`): every answer the API gives must match its schema.
pub async fn schema_checked(
    schemas: &ansinh::http::Schemas,
    response: reqwest::Response,
    schema: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text}"));
    let schema = if status.is_success() {
        schema
    } else {
        "error.response"
    };
    if let Err(violations) = schemas.validate(schema, &body) {
        panic!("{status} answer breaks {schema}: {violations:?}\n{body:#}");
    }
    (status, body)
}

/// Serves `api` on a free loopback port; returns its base URL and the sender that stops
/// it (dropping the sender stops it too, so keep it for as long as the test uses it).
pub async fn serve(api: ansinh::http::Api) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ansinh::http::serve(listener, api, async {
        let _ = stopped.await;
    }));
    (base, stop)
}

/// What `forge_an_exclusion` published: a foreign message and an exclusion of exactly it,
/// by stream sequence and stored bytes.
pub struct Forged {
    pub foreign: (u64, Vec<u8>),
    pub exclusion: (u64, Vec<u8>),
}

/// A foreign message on `partition`'s subject, then an exclusion of exactly it that
/// continues the chain but whose signature is no ledger key's: what someone who may
/// publish on the log and reads it could forge (docs/CHAIN.md, section 4a).
pub async fn forge_an_exclusion(ledger: &Ledger, config: &LogConfig, partition: &str) -> Forged {
    use prost::Message as _;
    let p = Partition::new(partition).unwrap();
    let js = async_nats::jetstream::new(client().await);
    let stream = js.get_stream(&config.stream_name).await.unwrap();
    let head = ansinh::log::reader::last_on_subject(&stream, &config.subject(&p))
        .await
        .unwrap()
        .expect("the partition has events");
    let head_sequence = proto::Envelope::decode(head.payload.clone())
        .unwrap()
        .sequence;
    let publish = |bytes: Vec<u8>| {
        let (js, subject) = (js.clone(), config.subject(&p));
        async move {
            js.publish(subject, bytes.into())
                .await
                .unwrap()
                .await
                .unwrap()
                .sequence
        }
    };
    let foreign = b"not the ledger's".to_vec();
    let foreign_at = publish(foreign.clone()).await;
    // The writer meets the message (and refuses the note): the chain breaks there.
    assert!(
        ledger
            .append(note(partition, "after the foreign message", ""))
            .await
            .is_err()
    );
    let exclusion = proto::Envelope {
        format_version: 1,
        partition: partition.into(),
        sequence: head_sequence + 1,
        prev_hash: head.hash.0.to_vec().into(),
        payload: Some(Payload::MessageExcluded(proto::MessageExcluded {
            stream_sequence: foreign_at,
            message_hash: ansinh::chain::message_hash(&foreign).0.to_vec().into(),
            reason: "forged".into(),
            key_id: "0123456789abcdef".into(),
            signature: vec![7; 64].into(),
            ..Default::default()
        })),
        ..Default::default()
    }
    .encode_to_vec();
    let exclusion_at = publish(exclusion.clone()).await;
    Forged {
        foreign: (foreign_at, foreign),
        exclusion: (exclusion_at, exclusion),
    }
}

/// Appends the operator's exclusion of the run `held` (stream sequence and stored bytes
/// of each message, oldest first) on `partition`, signed by `key`, as `ansinh admin
/// exclude-message --stream-sequence FIRST --through LAST` does; its receipt.
pub async fn exclude_run(
    ledger: &Ledger,
    partition: &Partition,
    key: &ansinh::checkpoint::KeyPair,
    held: &[(u64, &[u8])],
) -> ansinh::log::Receipt {
    let mut run = ansinh::log::follow::Run::default();
    for (stream_sequence, message) in held {
        run.take(*stream_sequence, &ansinh::chain::message_hash(message));
    }
    let (first, first_message) = held[0];
    let mut decision = proto::MessageExcluded {
        stream_sequence: first,
        message_hash: ansinh::chain::message_hash(first_message).0.to_vec().into(),
        reason: "not the ledger's".into(),
        key_id: key.key_id().to_owned(),
        signature: Default::default(),
        through_stream_sequence: run.last_stream_sequence,
        message_count: run.count,
        run_hash: run.run_hash.0.to_vec().into(),
    };
    decision.signature =
        ansinh::checkpoint::sign::sign_exclusion(key, partition.as_str(), &decision)
            .unwrap()
            .to_vec()
            .into();
    ledger
        .append(Draft {
            partition: partition.clone(),
            actor: proto::Actor {
                id: "operator:test".into(),
                role: "operator".into(),
                unit: String::new(),
            },
            idempotency_key: format!("exclude:{first}-{}", run.last_stream_sequence),
            correlation_id: String::new(),
            request_fingerprint: None,
            subjects: vec![format!("message:{first}")],
            payload: Payload::MessageExcluded(decision),
        })
        .await
        .expect("the operator's exclusion is appended")
}
