//! The event log against a real nats-server: append, verify, races, crashes, idempotency,
//! bad input, lost-write detection, projections.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use ansinh::chain::{self, ChainBreak, Digest, Partition};
use ansinh::checkpoint::ensure_checkpoint_stream;
use ansinh::log::{
    AppendError, Draft, EventAt, Ledger, LedgerStore, Position, StreamError, ensure_stream, frame,
    reader,
};
use ansinh::projection::Projector;
use ansinh::proto::{self, Envelope, envelope::Payload};
use ansinh::verify::{VerifyError, verify};
use async_nats::jetstream;
use bytes::Bytes;
use common::*;
use prost::Message;

/// Verifies the whole log of `config`, failing the test on any break.
/// Every event of one partition, in order: (partition sequence, hash).
async fn chain_of(config: &ansinh::log::LogConfig, partition: &str) -> Vec<(u64, Digest)> {
    let stream = stream_of(config).await;
    let subject = config.subject(&Partition::new(partition).unwrap());
    let end = stream.clone().info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    reader::read_range(&stream, &subject, 1, end, |e| -> Result<(), ()> {
        let env = Envelope::decode(e.payload.as_ref()).unwrap();
        out.push((env.sequence, chain::event_hash(&e.payload)));
        Ok(())
    })
    .await
    .unwrap();
    out
}

/// The envelopes of `partition`'s chain, in order.
async fn envelopes_of(config: &ansinh::log::LogConfig, partition: &str) -> Vec<Envelope> {
    let stream = stream_of(config).await;
    let subject = config.subject(&Partition::new(partition).unwrap());
    let end = stream.clone().info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    reader::read_range(&stream, &subject, 1, end, |e| -> Result<(), ()> {
        out.push(Envelope::decode(e.payload.as_ref()).unwrap());
        Ok(())
    })
    .await
    .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_form_a_verified_chain_per_partition() {
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    let mut receipts = Vec::new();
    for i in 0..20 {
        let partition = if i % 2 == 0 { "01" } else { "79" };
        receipts.push(
            ledger
                .append(note(partition, &format!("k{i}"), "hello"))
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        receipts
            .iter()
            .filter(|r| r.partition == "01")
            .map(|r| r.sequence)
            .collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    let stream = stream_of(&config).await;
    let report = verified(&config).await;
    assert_eq!(report.events, 20);
    assert_eq!(report.partitions["01"].events, 10);
    assert_eq!(report.partitions["79"].head, receipts.last().unwrap().hash);
    // The first event links to the partition's genesis value.
    let first = reader::event_at(
        &stream,
        EventAt {
            stream_sequence: receipts[0].stream_sequence,
            index: receipts[0].index,
        },
    )
    .await
    .unwrap()
    .unwrap();
    let env = Envelope::decode(first.payload.as_ref()).unwrap();
    assert_eq!(
        Digest::from_slice(&env.prev_hash).unwrap(),
        chain::genesis(&Partition::new("01").unwrap())
    );
    assert_eq!(env.event_type, "ansinh.v1.Note");
    // One partition alone, though the stream's last event is another's, and a partition
    // with no events: both end (the timeout only bounds a failure: a reader that waited for
    // a message that never comes would hit it).
    for (only, events) in [("01", 10), ("92", 0)] {
        let mut stream = stream_of(&config).await;
        let partition = Partition::new(only).unwrap();
        let report = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            verify(
                &mut stream,
                &config,
                &keys_partition(),
                Some(&partition),
                |_| {},
            ),
        )
        .await
        .expect("verifying one partition ends")
        .unwrap();
        assert_eq!(report.events, events, "partition {only}");
    }
}

/// A damaged disk can break several partitions at once: one verify names every one, and
/// stops appends to each of them, not only to the first by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_verify_finds_and_stops_every_broken_partition() {
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    let js = jetstream::new(client().await);
    let mut foreign_at = Vec::new();
    for p in ["01", "02", "03"] {
        ledger.append(note(p, "k", "real")).await.unwrap();
        if p != "02" {
            let ack = js
                .publish(
                    config.subject(&Partition::new(p).unwrap()),
                    Bytes::from_static(b"not the ledger's"),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            foreign_at.push((p.to_owned(), ack.sequence));
        }
    }
    let mut stream = stream_of(&config).await;
    let verdict = verify(&mut stream, &config, &keys_partition(), None, |_| {})
        .await
        .unwrap_err();
    let VerifyError::Broken {
        partition,
        stream_sequence,
        also,
        ..
    } = &verdict
    else {
        panic!("{verdict}");
    };
    let found: Vec<(String, u64)> = std::iter::once((partition.clone(), *stream_sequence))
        .chain(
            also.iter()
                .map(|b| (b.partition.clone(), b.stream_sequence)),
        )
        .collect();
    assert_eq!(found, foreign_at, "{verdict}");
    assert!(verdict.to_string().contains("partition 03"), "{verdict}");
    let store = ledger.store();
    ansinh::verify::quarantine_broken(store, &verdict).unwrap();
    for (p, stopped) in [("01", true), ("02", false), ("03", true)] {
        assert_eq!(
            store.quarantined(p).unwrap().is_some(),
            stopped,
            "partition {p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_message_is_found_and_located_and_blocks_appends() {
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    for i in 0..5 {
        ledger
            .append(note("01", &format!("k{i}"), "real"))
            .await
            .unwrap();
    }
    // A forger publishes straight onto the partition's subject: right sequence, made-up link.
    let forged = Envelope {
        format_version: 1,
        partition: "01".into(),
        sequence: 6,
        prev_hash: Bytes::from(vec![7u8; 32]),
        idempotency_key: "forged".into(),
        event_type: "ansinh.v1.Note".into(),
        payload: Some(Payload::Note(proto::Note {
            text: "pay me".into(),
        })),
        ..Default::default()
    };
    let js = jetstream::new(client().await);
    let ack = js
        .publish(
            config.subject(&Partition::new("01").unwrap()),
            forged.encode_to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let mut stream = stream_of(&config).await;
    match verify(&mut stream, &config, &keys_partition(), None, |_| {}).await {
        Err(VerifyError::Broken {
            partition,
            stream_sequence,
            expected_sequence,
            cause: ChainBreak::WrongPrevHash { .. },
            ..
        }) => {
            assert_eq!(partition, "01");
            assert_eq!(stream_sequence, ack.sequence);
            assert_eq!(expected_sequence, 6);
        }
        other => panic!("forgery not located: {other:?}"),
    }
    // Garbage bytes are located too.
    let config2 = fresh_log();
    let (ledger2, _dir2) = common::ledger(&config2).await;
    ledger2.append(note("02", "a", "real")).await.unwrap();
    let ack = js
        .publish(
            config2.subject(&Partition::new("02").unwrap()),
            Bytes::from_static(b"\xff\xff\xff"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let mut stream2 = stream_of(&config2).await;
    match verify(&mut stream2, &config2, &keys_partition(), None, |_| {}).await {
        Err(VerifyError::Broken {
            stream_sequence,
            cause: ChainBreak::Undecodable(_),
            ..
        }) => assert_eq!(stream_sequence, ack.sequence),
        other => panic!("garbage not located: {other:?}"),
    }
    // A fresh writer must not build on the forgery.
    let (fresh, _d) = common::ledger(&config).await;
    match fresh.append(note("01", "after", "x")).await {
        Err(AppendError::ChainBroken {
            stream_sequence, ..
        }) => assert_eq!(stream_sequence, 6),
        other => panic!("append on a forged chain: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_fewer_replicas_than_asked_is_refused() {
    let config = fresh_log();
    let js = jetstream::new(client().await);
    ensure_stream(&js, &config)
        .await
        .expect("one replica, as asked");
    let three = ansinh::log::LogConfig {
        replicas: 3,
        ..config
    };
    match ensure_stream(&js, &three).await {
        Err(StreamError::Unsafe { reason, .. }) => {
            assert!(
                reason.contains("keeps 1 replica(s), --replicas asks for 3"),
                "{reason}"
            )
        }
        other => panic!("a weaker stream accepted: {:?}", other.map(|_| ())),
    }
}

/// Asserts `result` is the refusal of stream `stream` for keeping 1 replica of 3.
fn refused_for_replicas(result: Result<(), StreamError>, stream: &str) {
    match result {
        Err(StreamError::Unsafe {
            stream: named,
            reason,
        }) => {
            assert_eq!(named, stream);
            assert!(
                reason.contains("keeps 1 replica(s), --replicas asks for 3"),
                "{reason}"
            );
        }
        other => panic!("{stream} on fewer replicas than asked: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shared_bucket_and_stream_on_fewer_replicas_than_asked_is_refused() {
    use ansinh::claims::{ClaimError, Claims};
    use ansinh::directory::{Directory, DirectoryError};
    use ansinh::personal::{Vault, VaultError};
    let (config, checkpoints) = fresh_checkpointed();
    let name = config.stream_name.as_str();
    let js = jetstream::new(client().await);
    let secrets = secrets_of(&config);
    let bucket = |bucket: String, replicas: usize| async_nats::jetstream::kv::Config {
        bucket,
        history: 1,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    let requests = ansinh::http::requests_bucket_name(name);
    // Made on one replica, as a command run without --replicas makes them.
    Vault::open(&js, name, 1, &secrets).await.expect("vault");
    Directory::open(&js, name, 1).await.expect("directory");
    Claims::open(&js, name, 1).await.expect("claims");
    ensure_checkpoint_stream(&js, &checkpoints)
        .await
        .expect("checkpoints");
    // The requests bucket; the jobs bucket opens through the same function.
    ansinh::kv_writes::open_bucket(&js, bucket(requests.clone(), 1))
        .await
        .expect("requests bucket");
    // Then a process asks for three: each is refused, naming what it refuses.
    refused_for_replicas(
        match Vault::open(&js, name, 3, &secrets).await {
            Err(VaultError::Bucket(e)) => Err(e),
            other => panic!("vault: {:?}", other.map(|_| ())),
        },
        &format!("KV_{}", ansinh::personal::bucket_name(name)),
    );
    refused_for_replicas(
        match Directory::open(&js, name, 3).await {
            Err(DirectoryError::Bucket(e)) => Err(e),
            other => panic!("directory: {:?}", other.map(|_| ())),
        },
        &format!("KV_{}", ansinh::directory::bucket_name(name)),
    );
    refused_for_replicas(
        match Claims::open(&js, name, 3).await {
            Err(ClaimError::Unsafe(e)) => Err(e),
            other => panic!("claims: {:?}", other.map(|_| ())),
        },
        &ansinh::claims::stream_name(name),
    );
    let three = ansinh::checkpoint::CheckpointConfig {
        replicas: 3,
        ..checkpoints.clone()
    };
    refused_for_replicas(
        ensure_checkpoint_stream(&js, &three).await.map(|_| ()),
        &checkpoints.stream_name,
    );
    refused_for_replicas(
        ansinh::kv_writes::open_bucket(&js, bucket(requests.clone(), 3))
            .await
            .map(|_| ()),
        &format!("KV_{requests}"),
    );
}

/// A vault bucket that keeps earlier values of a key (made or edited by hand) would keep
/// an erased household's data key readable: the ledger refuses to open it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_that_keeps_earlier_values_of_a_key_is_refused() {
    use ansinh::personal::{Vault, VaultError};
    let config = fresh_log();
    let name = config.stream_name.as_str();
    let js = jetstream::new(client().await);
    js.create_key_value(async_nats::jetstream::kv::Config {
        bucket: ansinh::personal::bucket_name(name),
        history: 5,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    match Vault::open(&js, name, 1, &secrets_of(&config)).await {
        Err(VaultError::Bucket(StreamError::Unsafe { stream, reason })) => {
            assert_eq!(
                stream,
                format!("KV_{}", ansinh::personal::bucket_name(name))
            );
            assert!(reason.contains("keeps 5 values per key"), "{reason}");
        }
        other => panic!("vault: {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_allows_delete_or_purge_is_refused() {
    let config = fresh_log();
    let js = jetstream::new(client().await);
    js.create_stream(jetstream::stream::Config {
        name: config.stream_name.clone(),
        subjects: vec![config.wildcard()],
        allow_atomic_publish: true,
        deny_delete: false,
        deny_purge: true,
        ..Default::default()
    })
    .await
    .unwrap();
    match ensure_stream(&js, &config).await {
        Err(StreamError::Unsafe { reason, .. }) => assert!(reason.contains("deleting"), "{reason}"),
        other => panic!("unsafe stream accepted: {:?}", other.map(|_| ())),
    }
    let store_dir = tempfile::tempdir().unwrap();
    let store = LedgerStore::open(store_dir.path()).unwrap();
    assert!(matches!(
        Ledger::open(client().await, config, store).await,
        Err(AppendError::Stream(StreamError::Unsafe { .. }))
    ));
}

/// A stream that lets a message carry its own time to live lets history expire: a
/// foreign message sent with `Nats-TTL` would vanish after the operator excluded it,
/// and every reader that starts afresh would then hold the exclusion (of nothing) and
/// every event after it. `deny_delete` does not stop an expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_messages_may_expire_is_refused() {
    let config = fresh_log();
    let js = jetstream::new(client().await);
    js.create_stream(jetstream::stream::Config {
        name: config.stream_name.clone(),
        subjects: vec![config.wildcard()],
        allow_atomic_publish: true,
        deny_delete: true,
        deny_purge: true,
        allow_message_ttl: true,
        ..Default::default()
    })
    .await
    .unwrap();
    match ensure_stream(&js, &config).await {
        Err(StreamError::Unsafe { reason, .. }) => assert!(reason.contains("expire"), "{reason}"),
        other => panic!(
            "a stream whose messages expire was accepted: {:?}",
            other.map(|_| ())
        ),
    }
    let store_dir = tempfile::tempdir().unwrap();
    let store = LedgerStore::open(store_dir.path()).unwrap();
    assert!(matches!(
        Ledger::open(client().await, config, store).await,
        Err(AppendError::Stream(StreamError::Unsafe { .. }))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_racing_on_one_partition_leave_one_linear_chain() {
    let config = fresh_log();
    let (a, _da) = ledger(&config).await;
    let (b, _db) = ledger(&config).await;
    const PER_WRITER: usize = 600;
    let run = |ledger: Ledger, name: &'static str| {
        tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..PER_WRITER {
                let l = ledger.clone();
                set.spawn(async move { l.append(note("01", &format!("{name}{i}"), name)).await });
            }
            let mut out = Vec::new();
            while let Some(r) = set.join_next().await {
                out.push(r.unwrap().unwrap());
            }
            out
        })
    };
    let (ra, rb) = tokio::join!(run(a, "a"), run(b, "b"));
    let mut sequences: Vec<u64> = ra
        .unwrap()
        .into_iter()
        .chain(rb.unwrap())
        .map(|r| r.sequence)
        .collect();
    sequences.sort_unstable();
    assert_eq!(
        sequences,
        (1..=2 * PER_WRITER as u64).collect::<Vec<_>>(),
        "every append got its own place"
    );
    let report = verified(&config).await;
    assert_eq!(report.events, 2 * PER_WRITER as u64);
    assert_eq!(
        event_count(&config).await,
        2 * PER_WRITER as u64,
        "no stray or duplicate events"
    );
    // Concurrent appends share messages (frames), so there are fewer messages than events.
    let messages = message_count(&config).await;
    assert!(
        messages < 2 * PER_WRITER as u64,
        "{messages} messages for {} events",
        2 * PER_WRITER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_yields_one_event_forever() {
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    let first = ledger
        .append(note("01", "pay:2026-12:hh1", "first"))
        .await
        .unwrap();
    let again = ledger
        .append(note("01", "pay:2026-12:hh1", "second try"))
        .await
        .unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!((again.sequence, again.hash), (first.sequence, first.hash));
    // Repeats inside one batch: only one is written.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let l = ledger.clone();
        set.spawn(async move { l.append(note("01", "same-batch", "x")).await.unwrap() });
    }
    let mut hashes = std::collections::HashSet::new();
    while let Some(r) = set.join_next().await {
        hashes.insert(r.unwrap().hash);
    }
    assert_eq!(hashes.len(), 1);
    // A writer with an empty store (as after the JetStream duplicate window, or on a new
    // machine) rebuilds the index from the log and still refuses to append twice.
    let (fresh, _d) = common::ledger(&config).await;
    let late = fresh
        .append(note("01", "pay:2026-12:hh1", "a year later"))
        .await
        .unwrap();
    assert!(late.duplicate);
    assert_eq!(late.hash, first.hash);
    assert_eq!(event_count(&config).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_typed_error_and_appends_nothing() {
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    ledger.append(note("01", "ok", "fine")).await.unwrap();
    // Undecodable request bytes.
    assert!(matches!(
        Ledger::draft_from_wire(b"\x0a\xff\xff\xff\xff"),
        Err(AppendError::Undecodable(_))
    ));
    // A request with no payload this ledger knows.
    let unknown = Envelope {
        partition: "01".into(),
        idempotency_key: "u".into(),
        ..Default::default()
    };
    assert!(matches!(
        Ledger::draft_from_wire(&unknown.encode_to_vec()),
        Err(AppendError::UnknownPayload)
    ));
    // Empty partition name.
    let empty = Envelope {
        partition: String::new(),
        idempotency_key: "e".into(),
        payload: Some(Payload::Note(proto::Note::default())),
        ..Default::default()
    };
    assert!(matches!(
        Ledger::draft_from_wire(&empty.encode_to_vec()),
        Err(AppendError::Partition(chain::PartitionError::Empty))
    ));
    // Oversized event.
    let big = note("01", "big", &"x".repeat(chain::EVENT_BYTES_MAX));
    assert!(matches!(
        ledger.append(big).await,
        Err(AppendError::Oversized { .. })
    ));
    // Missing idempotency key.
    assert!(matches!(
        ledger.append(note("01", "", "x")).await,
        Err(AppendError::MissingIdempotencyKey)
    ));
    assert_eq!(
        event_count(&config).await,
        1,
        "nothing was appended by bad input"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_payloads_still_verify() {
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    let r = ledger.append(note("01", "a", "known")).await.unwrap();
    // A future payload (field 999) from a newer writer, chained correctly.
    let mut bytes = Envelope {
        format_version: 1,
        partition: "01".into(),
        sequence: 2,
        prev_hash: Bytes::copy_from_slice(&r.hash.0),
        idempotency_key: "future".into(),
        event_type: "ansinh.v9.FutureThing".into(),
        ..Default::default()
    }
    .encode_to_vec();
    bytes.extend_from_slice(&[0xba, 0x3e, 3, b'n', b'e', b'w']); // field 999, length-delimited "new"
    let js = jetstream::new(client().await);
    js.publish(config.subject(&Partition::new("01").unwrap()), bytes.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let report = verified(&config).await;
    assert_eq!(report.partitions["01"].events, 2);
}

/// A ledger on `store` that has acknowledged three events of partition 01.
async fn three_acknowledged(config: &ansinh::log::LogConfig, store: &LedgerStore) -> Ledger {
    let (ledger, lost) = Ledger::open(client().await, config.clone(), store.clone())
        .await
        .unwrap();
    assert!(lost.is_empty());
    for i in 0..3 {
        ledger
            .append(note("01", &format!("k{i}"), "acknowledged"))
            .await
            .unwrap();
    }
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acknowledged_data_is_detected_and_stops_appends_until_an_operator_decides() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    // One store handle for both "runs": sled releases its file lock asynchronously, so a
    // test that reopened the files at once could race it; a restart reuses the same data.
    let store = LedgerStore::open(&dir.path().join("ledger.sled")).unwrap();
    let ledger = three_acknowledged(&config, &store).await;
    ledger.close().await.unwrap();
    // The server loses the stream (a disk replaced, a bad restore): simulate by deleting it.
    let js = jetstream::new(client().await);
    js.delete_stream(&config.stream_name).await.unwrap();
    let (ledger, lost) = Ledger::open(client().await, config.clone(), store.clone())
        .await
        .unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].partition, "01");
    assert!(
        lost[0].reason.contains("acknowledged sequence 3"),
        "{}",
        lost[0].reason
    );
    assert!(matches!(
        ledger.append(note("01", "k9", "x")).await,
        Err(AppendError::LostAcknowledgedData { .. })
    ));
    assert_eq!(event_count(&config).await, 0);
    // Other partitions are unaffected.
    ledger.append(note("02", "other", "x")).await.unwrap();
    // The operator accepts the stream's head; appending resumes from it.
    ledger.store().accept_stream_head("01").unwrap();
    assert_eq!(
        ledger.append(note("01", "k9", "x")).await.unwrap().sequence,
        1
    );
    assert_eq!(verified(&config).await.events, 2);
}

/// Acknowledged events lost while a writer runs (the stream replaced under it) stop that
/// partition at its next command, as they would at the next start: deciding on, or
/// fencing on a stream sequence the new stream reaches again, would fork the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_data_lost_under_a_running_writer_quarantines_the_partition() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let store = LedgerStore::open(&dir.path().join("ledger.sled")).unwrap();
    let ledger = three_acknowledged(&config, &store).await;
    // The stream is lost and made again empty, while the ledger runs.
    let js = jetstream::new(client().await);
    js.delete_stream(&config.stream_name).await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let other_store = LedgerStore::open(&other.path().join("ledger.sled")).unwrap();
    let (remade, _) = Ledger::open(client().await, config.clone(), other_store)
        .await
        .unwrap();
    remade.close().await.unwrap();

    let refused = ledger.append(note("01", "k9", "x")).await;
    assert!(
        matches!(refused, Err(AppendError::LostAcknowledgedData { .. })),
        "{refused:?}"
    );
    assert!(store.quarantined("01").unwrap().is_some());
    assert_eq!(event_count(&config).await, 0);
    ledger.append(note("02", "other", "x")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_apply_each_event_once_and_rebuild_to_the_same_state() {
    let config = fresh_log();
    let (ledger, dir) = ledger(&config).await;
    for i in 0..40 {
        ledger
            .append(note(
                if i % 3 == 0 { "01" } else { "79" },
                &format!("k{i}"),
                "x",
            ))
            .await
            .unwrap();
    }
    let mut stream = stream_of(&config).await;
    let projector = Projector::of_store(ledger.store()).unwrap();
    assert_eq!(projector.catch_up(&mut stream, &config).await.unwrap(), 40);
    assert_eq!(
        projector.catch_up(&mut stream, &config).await.unwrap(),
        0,
        "nothing applied twice"
    );
    for i in 40..50 {
        ledger
            .append(note("01", &format!("k{i}"), "x"))
            .await
            .unwrap();
    }
    assert_eq!(projector.catch_up(&mut stream, &config).await.unwrap(), 10);
    let summaries = projector.summaries().unwrap();
    assert_eq!(summaries["01"].events, 24);
    assert_eq!(summaries["79"].events, 26);
    let trail = projector.trail("note:k3").unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(
        (
            trail[0].partition.as_str(),
            trail[0].sequence,
            trail[0].role.as_str()
        ),
        ("01", 2, "teller")
    );
    let incremental = projector.fingerprint().unwrap();
    assert_eq!(projector.rebuild(&mut stream, &config).await.unwrap(), 50);
    assert_eq!(projector.fingerprint().unwrap(), incremental);
    // A separate scratch store rebuilt from the log holds the same projections.
    let scratch = sled::Config::new().temporary(true).open().unwrap();
    let other = Projector::scratch(&scratch).unwrap();
    other.catch_up(&mut stream, &config).await.unwrap();
    assert_eq!(other.fingerprint().unwrap(), incremental);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_mid_batch_loses_no_acknowledged_event() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ansinh"))
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--nats",
            &server_url(),
        ])
        .args([
            "load",
            "--partition",
            "01",
            "--count",
            "1000000",
            "--concurrency",
            "4096",
        ])
        .env("ANSINH_STREAM", &config.stream_name)
        .env("ANSINH_SUBJECT_PREFIX", &config.subject_prefix)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked: Vec<(u64, String)> = Vec::new();
    // Kill once a few batches are acknowledged: more are in flight at that moment.
    while acked.len() < 5_000 {
        let line = lines.next().expect("writer still running").unwrap();
        let mut parts = line.split(' ').skip(1);
        acked.push((
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().to_string(),
        ));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    for line in lines {
        let line = line.unwrap();
        let mut parts = line.split(' ').skip(1);
        acked.push((
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().to_string(),
        ));
    }
    let mut stream = stream_of(&config).await;
    let report = verify(&mut stream, &config, &keys_partition(), None, |_| {})
        .await
        .expect("the chain is valid after the kill");
    let chain = chain_of(&config, "01").await;
    for (sequence, hash) in &acked {
        assert_eq!(
            &chain[*sequence as usize - 1].1.to_hex(),
            hash,
            "acknowledged event {sequence} is in the log"
        );
    }
    // A restarted writer on the same store answers every event the killed one got into
    // the log, acknowledged or still in flight, as a duplicate at its own sequence: the
    // index commits the kill cut short are made good from the log before any append.
    let before = report.partitions["01"].events;
    let ledger = ledger_at(&config, dir.path()).await;
    let logged = envelopes_of(&config, "01").await;
    assert_eq!(logged.len() as u64, before);
    let mut retries = tokio::task::JoinSet::new();
    for env in logged {
        while retries.len() >= 256 {
            retries.join_next().await.unwrap().unwrap();
        }
        let ledger = ledger.clone();
        retries.spawn(async move {
            let draft = Draft {
                partition: Partition::new("01").unwrap(),
                actor: env.actor.clone().unwrap(),
                idempotency_key: env.idempotency_key.clone(),
                correlation_id: String::new(),
                request_fingerprint: None,
                subjects: vec![],
                payload: env.payload.clone().unwrap(),
            };
            let r = ledger.append(draft).await.unwrap();
            assert!(r.duplicate, "{} appended again", env.idempotency_key);
            assert_eq!(r.sequence, env.sequence, "{}", env.idempotency_key);
        });
    }
    while let Some(r) = retries.join_next().await {
        r.unwrap();
    }
    // And continues the chain.
    let r = ledger
        .append(note("01", "after-restart", "x"))
        .await
        .unwrap();
    assert_eq!(r.sequence, before + 1);
    let report = verified(&config).await;
    assert_eq!(report.partitions["01"].events, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recompute_eligibility_finds_exactly_the_wrong_decision() {
    use ansinh::domain::eligibility;
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    let standard =
        eligibility::standard_in_force(chrono::NaiveDate::from_ymd_opt(2026, 11, 15).unwrap())
            .unwrap();
    let decision = |household: &str, income: &str, class: &str| proto::EligibilityDecided {
        household_id: household.into(),
        review_year: 2026,
        income_per_person_vnd: income.into(),
        area: "rural".into(),
        deprived_indicators: vec![],
        standard_id: standard.id.clone(),
        standard_hash: standard.content_hash.clone(),
        class: class.into(),
        decided_on: "2026-11-15".into(),
        valid_from: "2026-11-15".into(),
        valid_to: "2026-12-31".into(),
        prior_class: String::new(),
        status: class.into(),
        escaped_until: String::new(),
        corrects: 0,
        validity_rule: eligibility::VALIDITY_RULE,
    };
    let mut draft = note("01", "d1", "");
    // Exactly at the rural line with no deprivation: near-poor.
    draft.payload = Payload::EligibilityDecided(decision("0100007-000001", "1500000", "near_poor"));
    // A decision must come as a command; the plain append refuses it.
    assert!(matches!(
        ledger.append(draft.clone()).await,
        Err(AppendError::RequiresCommand { .. })
    ));
    // Written unchecked, as only a forger or a buggy writer could, to prove recompute finds it.
    ledger.append_unchecked(draft.clone()).await.unwrap();
    draft.idempotency_key = "d2".into();
    // Recorded as poor although the income is far above the line.
    draft.payload = Payload::EligibilityDecided(decision("0100007-000002", "9000000", "poor"));
    let wrong = ledger.append_unchecked(draft.clone()).await.unwrap();
    draft.idempotency_key = "d3".into();
    // The right class, but recorded as escaped poverty with a window of its own: the
    // status and the window a loan approval trusts.
    let mut escaped = decision("0100007-000003", "2000000", "average");
    escaped.status = "escaped_poverty".into();
    escaped.valid_to = "2029-11-14".into();
    escaped.escaped_until = "2029-11-14".into();
    draft.payload = Payload::EligibilityDecided(escaped);
    let wrong_status = ledger.append_unchecked(draft).await.unwrap();
    let mut stream = stream_of(&config).await;
    let report = ansinh::recompute::recompute_eligibility(
        &mut stream,
        &config,
        &keys_partition(),
        None,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.decisions, 3);
    assert_eq!(report.mismatches.len(), 2, "{:?}", report.mismatches);
    assert_eq!(report.mismatches[0].sequence, wrong.sequence);
    assert!(
        report.mismatches[0]
            .problem
            .contains("recorded class poor, inputs give not_poor"),
        "{}",
        report.mismatches[0].problem
    );
    assert_eq!(report.mismatches[1].sequence, wrong_status.sequence);
    assert!(
        report.mismatches[1]
            .problem
            .contains("recorded status escaped_poverty, class and prior class give average"),
        "{}",
        report.mismatches[1].problem
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_stored_by_another_writer_meanwhile_is_answered_as_a_duplicate() {
    let config = fresh_log();
    let (a, _da) = ledger(&config).await;
    let (b, _db) = ledger(&config).await;
    // B is caught up and idle; then A stores key K. B's index does not know K yet.
    // B's fence is stale, so its commit fails; it catches up, meets K in the log, and
    // must answer K as a duplicate that names A's event.
    b.append(note("01", "x", "b first")).await.unwrap();
    let stored = a.append(note("01", "K", "from a")).await.unwrap();
    let answered = b.append(note("01", "K", "from b")).await.unwrap();
    assert!(answered.duplicate);
    assert_eq!(
        (answered.sequence, answered.hash),
        (stored.sequence, stored.hash)
    );
    // B's head is still right: it keeps appending to one valid chain.
    assert_eq!(
        b.append(note("01", "y", "b again")).await.unwrap().sequence,
        3
    );
    assert_eq!(verified(&config).await.events, 3);
}

/// A catch-up whose index commit fails forgets what it folded past the keys it could not
/// record: otherwise the next catch-up starts after them, and a retry of one, found in no
/// index, is decided again and appended twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_a_failed_catch_up_could_not_index_is_still_answered_as_a_duplicate() {
    let config = fresh_log();
    let (a, _da) = ledger(&config).await;
    let (b, _db) = ledger(&config).await;
    b.append(note("01", "x", "b first")).await.unwrap();
    let stored = a.append(note("01", "K", "from a")).await.unwrap();
    // B's next command catches up past K, and the index commit holding K fails once.
    b.store().fail_records_of("K", 1);
    let mut next = b.append(note("01", "y", "b again")).await;
    if next.is_err() {
        next = b.append(note("01", "y", "b again")).await;
    }
    assert_eq!(next.unwrap().sequence, 3);
    let retried = b.append(note("01", "K", "from a")).await.unwrap();
    assert!(retried.duplicate, "{retried:?}");
    assert_eq!(
        (retried.sequence, retried.hash),
        (stored.sequence, stored.hash)
    );
    assert_eq!(verified(&config).await.events, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_during_the_index_commit_is_answered_and_close_leaves_every_key_indexed() {
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    let store = ledger.store().clone();
    // Each retry follows its first append at once, so it meets the writer while the
    // first's index commit may still run: answered from the batch's keys or the index.
    let mut firsts = Vec::new();
    for i in 0..20 {
        let key = format!("retry-at-once-{i}");
        let first = ledger.append(note("01", &key, "first")).await.unwrap();
        let again = ledger.append(note("01", &key, "again")).await.unwrap();
        assert!(!first.duplicate && again.duplicate, "key {key}");
        assert_eq!(
            (again.sequence, again.stream_sequence, again.hash),
            (first.sequence, first.stream_sequence, first.hash)
        );
        firsts.push((key, first));
    }
    assert_eq!(event_count(&config).await, 20);
    // close() waits for the writers' last index commits, so the index is complete.
    ledger.close().await.unwrap();
    for (key, first) in &firsts {
        let at = store
            .idempotent("01", key)
            .unwrap()
            .unwrap_or_else(|| panic!("{key} is not in the index after close"));
        assert_eq!((at.sequence, at.hash), (first.sequence, first.hash));
    }
}

/// Envelopes `first..first + count` of `partition`, chained after `prev` as a writer
/// would chain them (to write messages by hand: forged frames, the format before frames).
/// Publishes `payload` with `headers` on partition 01's subject, as anyone holding the
/// right to publish there could; the server's ack.
async fn publish_on_01(
    js: &jetstream::Context,
    config: &ansinh::log::LogConfig,
    headers: async_nats::HeaderMap,
    payload: Bytes,
) -> async_nats::jetstream::publish::PublishAck {
    js.publish_with_headers(
        config.subject(&Partition::new("01").unwrap()),
        headers,
        payload,
    )
    .await
    .unwrap()
    .await
    .unwrap()
}

fn chained(partition: &str, first: u64, prev: Digest, count: u64) -> Vec<Bytes> {
    let mut prev = prev;
    (first..first + count)
        .map(|sequence| {
            let bytes = Bytes::from(
                Envelope {
                    format_version: 1,
                    partition: partition.into(),
                    sequence,
                    prev_hash: Bytes::copy_from_slice(&prev.0),
                    idempotency_key: format!("by-hand-{sequence}"),
                    event_type: "ansinh.v1.Note".into(),
                    payload: Some(Payload::Note(proto::Note {
                        text: "pay me".into(),
                    })),
                    ..Default::default()
                }
                .encode_to_vec(),
            );
            prev = chain::event_hash(&bytes);
            bytes
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_frames_and_every_reader_takes_each_event_once() {
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    // A lone append is a bare envelope, exactly as before frames.
    let lone = ledger.append(note("01", "lone", "alone")).await.unwrap();
    let mut stream = stream_of(&config).await;
    let raw = stream.get_raw_message(lone.stream_sequence).await.unwrap();
    assert!(raw.headers.get(frame::HEADER_FORMAT).is_none());
    assert_eq!(lone.index, 0);
    assert_eq!(chain::event_hash(&raw.payload), lone.hash);

    const CONCURRENT: u64 = 300;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..CONCURRENT {
        let l = ledger.clone();
        set.spawn(async move {
            let key = format!("k{i}");
            (l.append(note("01", &key, "together")).await.unwrap(), key)
        });
    }
    let mut receipts = Vec::new();
    while let Some(r) = set.join_next().await {
        receipts.push(r.unwrap());
    }
    let framed = receipts.iter().filter(|(r, _)| r.index > 0).count();
    assert!(framed > 0, "concurrent appends were packed into frames");
    // Every receipt names its own event, inside a frame too.
    for (receipt, key) in &receipts {
        let envelope = ledger.event_of(receipt).await.unwrap();
        assert_eq!(
            (envelope.sequence, envelope.idempotency_key.as_str()),
            (receipt.sequence, key.as_str())
        );
    }
    // A frame is marked, and its headers name its last event.
    let (in_frame, _) = receipts.iter().find(|(r, _)| r.index > 0).unwrap();
    let raw = stream
        .get_raw_message(in_frame.stream_sequence)
        .await
        .unwrap();
    assert_eq!(
        raw.headers.get(frame::HEADER_FORMAT).map(|v| v.as_str()),
        Some(frame::FORMAT_FRAME)
    );
    let events = reader::at_sequence(&stream, in_frame.stream_sequence)
        .await
        .unwrap()
        .unwrap();
    let last = events.last().unwrap();
    assert!(last.last_in_message && events.len() > 1);
    assert_eq!(
        last.header_hash.as_deref(),
        Some(chain::event_hash(&last.payload).to_hex().as_str())
    );
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| e.header_hash.is_none())
    );

    let report = verified(&config).await;
    assert_eq!(report.events, CONCURRENT + 1);

    // A reader that stopped inside a frame resumes inside it, at the next event.
    let end = reader::last_stream_sequence(&mut stream).await.unwrap();
    let mut all: Vec<EventAt> = Vec::new();
    reader::read_range(&stream, &config.wildcard(), 1, end, |e| {
        all.push(e.at());
        Ok::<_, ()>(())
    })
    .await
    .unwrap();
    assert_eq!(all.len() as u64, CONCURRENT + 1);
    let stop = EventAt {
        stream_sequence: in_frame.stream_sequence,
        index: 0,
    };
    let inside = Position {
        last: stop,
        whole_message: false,
    };
    let mut rest: Vec<EventAt> = Vec::new();
    reader::read_after(&stream, &config.wildcard(), inside, end, |e| {
        rest.push(e.at());
        Ok::<_, ()>(())
    })
    .await
    .unwrap();
    let expected: Vec<EventAt> = all.iter().copied().filter(|at| *at > stop).collect();
    assert_eq!(rest, expected);
    assert_eq!(
        rest[0],
        EventAt {
            stream_sequence: stop.stream_sequence,
            index: 1
        }
    );

    // Projections take in every event of every frame once.
    let db = sled::Config::new().temporary(true).open().unwrap();
    let projector = Projector::scratch(&db).unwrap();
    let applied = projector.catch_up(&mut stream, &config).await.unwrap();
    assert_eq!(applied, CONCURRENT + 1);
    assert_eq!(projector.summaries().unwrap()["01"].events, CONCURRENT + 1);
    assert_eq!(projector.catch_up(&mut stream, &config).await.unwrap(), 0);

    // The remembered head is the last event of the last frame; reopening finds it there.
    let last = receipts
        .iter()
        .map(|(r, _)| r)
        .max_by_key(|r| r.sequence)
        .unwrap();
    let store = ledger.store().clone();
    let head = store.head("01").unwrap().unwrap();
    assert_eq!(
        (head.sequence, head.at()),
        (
            last.sequence,
            EventAt {
                stream_sequence: last.stream_sequence,
                index: last.index,
            }
        )
    );
    ledger.close().await.unwrap();
    let (_reopened, lost) = Ledger::open(client().await, config.clone(), store.clone())
        .await
        .unwrap();
    assert!(lost.is_empty(), "{lost:?}");
    // The stream is lost and rewritten by another writer: found although the messages at
    // the remembered place are frames again.
    jetstream::new(client().await)
        .delete_stream(&config.stream_name)
        .await
        .unwrap();
    let (other, _other_dir) = common::ledger(&config).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..=CONCURRENT {
        let l = other.clone();
        set.spawn(async move {
            l.append(note("01", &format!("other{i}"), "rewritten"))
                .await
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    let (_reopened, lost) = Ledger::open(client().await, config.clone(), store)
        .await
        .unwrap();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].partition, "01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_damaged_frame_is_found_and_located_and_blocks_appends() {
    let js = jetstream::new(client().await);
    // (case, Ansinh-Format header, what the forger publishes from three chained events)
    type Forge = fn(Vec<Bytes>) -> Bytes;
    let cases: [(&str, &str, Forge); 5] = [
        // Three chained events, the middle one relinked: found at the second event.
        ("relinked", frame::FORMAT_FRAME, |events| {
            let mut e = events;
            let mut middle = Envelope::decode(e[1].clone()).unwrap();
            middle.prev_hash = Bytes::from(vec![7u8; 32]);
            e[1] = middle.encode_to_vec().into();
            frame::encode(&e).0
        }),
        ("garbage", frame::FORMAT_FRAME, |_| {
            Bytes::from_static(b"\x0a\x05ab")
        }),
        ("unknown format", "zip", |events| events[0].clone()),
        // Three good events, in a frame a protobuf decoder reads but the ledger never
        // writes: an unknown field after the first element, or its length overlong.
        ("unknown field", frame::FORMAT_FRAME, |events| {
            let first = frame::encode(&events[..1]).0;
            let mut p = frame::encode(&events).0.to_vec();
            let at = 1 + prost::length_delimiter_len(first.len()) + first.len();
            p.splice(at..at, [0x10, 0x00]);
            p.into()
        }),
        ("overlong length", frame::FORMAT_FRAME, |events| {
            let mut p = vec![0x0a];
            let mut length = Vec::new();
            prost::encoding::encode_varint(events[0].len() as u64, &mut length);
            *length.last_mut().unwrap() |= 0x80;
            length.push(0x00);
            p.extend_from_slice(&length);
            p.extend_from_slice(&events[0]);
            p.extend_from_slice(&frame::encode(&events[1..]).0);
            p.into()
        }),
    ];
    for (case, format, forge) in cases {
        let config = fresh_log();
        let (ledger, _dir) = ledger(&config).await;
        let mut head = None;
        for i in 0..3 {
            head = Some(
                ledger
                    .append(note("01", &format!("k{i}"), "real"))
                    .await
                    .unwrap(),
            );
        }
        let head = head.unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(frame::HEADER_FORMAT, format);
        let payload = forge(chained("01", 4, head.hash, 3));
        let ack = publish_on_01(&js, &config, headers, payload).await;
        let mut stream = stream_of(&config).await;
        match (
            case,
            verify(&mut stream, &config, &keys_partition(), None, |_| {}).await,
        ) {
            (
                "relinked",
                Err(VerifyError::Broken {
                    stream_sequence,
                    expected_sequence,
                    cause: ChainBreak::WrongPrevHash { .. },
                    ..
                }),
            ) => assert_eq!((stream_sequence, expected_sequence), (ack.sequence, 5)),
            (
                "garbage",
                Err(VerifyError::Broken {
                    stream_sequence,
                    expected_sequence,
                    cause: ChainBreak::Message(m),
                    ..
                }),
            ) => {
                assert_eq!((stream_sequence, expected_sequence), (ack.sequence, 4));
                assert!(m.contains("undecodable frame"), "{m}");
            }
            (
                "unknown field" | "overlong length",
                Err(VerifyError::Broken {
                    stream_sequence,
                    expected_sequence,
                    cause: ChainBreak::Message(m),
                    ..
                }),
            ) => {
                assert_eq!((stream_sequence, expected_sequence), (ack.sequence, 4));
                assert!(m.contains("not in canonical form"), "{case}: {m}");
            }
            (
                "unknown format",
                Err(VerifyError::Broken {
                    stream_sequence,
                    cause: ChainBreak::Message(m),
                    ..
                }),
            ) => {
                assert_eq!(stream_sequence, ack.sequence);
                assert!(m.contains("unknown message format"), "{m}");
            }
            (case, other) => panic!("{case}: forgery not located: {other:?}"),
        }
        // A fresh writer must not build on it.
        let (fresh, _d) = common::ledger(&config).await;
        match fresh.append(note("01", "after", "x")).await {
            Err(AppendError::ChainBroken {
                stream_sequence, ..
            }) => assert_eq!(stream_sequence, ack.sequence, "{case}"),
            other => panic!("{case}: append on a forged chain: {other:?}"),
        }
    }
}

/// A frame whose first event continues the chain and whose next one does not: the chain
/// takes the first, the rest of the message is held, and the head stops inside it. A
/// restart must hold it again: a writer that started after it would append an event the
/// readers, which hold the message too, can only take as its exclusion, and stop there
/// for good. So no book snapshot is kept at that head, at close or by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_whose_tail_breaks_the_chain_stays_held_across_a_restart() {
    use ansinh::log::{HeadRecord, snapshot};
    let js = jetstream::new(client().await);
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let sled_dir = dir.path().join("ledger.sled");
    let ledger = ledger_at(&config, dir.path()).await;
    let mut head = None;
    for i in 0..3 {
        head = Some(
            ledger
                .append(note("01", &format!("k{i}"), "real"))
                .await
                .unwrap(),
        );
    }
    let mut events = chained("01", 4, head.unwrap().hash, 3);
    let mut second = Envelope::decode(events[1].clone()).unwrap();
    second.prev_hash = Bytes::from(vec![7u8; 32]);
    events[1] = second.encode_to_vec().into();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(frame::HEADER_FORMAT, frame::FORMAT_FRAME);
    let held = publish_on_01(&js, &config, headers, frame::encode(&events).0)
        .await
        .sequence;
    let stream = stream_of(&config).await;
    let last_sequence = || async { stream.clone().info().await.unwrap().state.last_sequence };
    let refused_at = |result: Result<ansinh::log::Receipt, AppendError>| match result {
        Err(AppendError::ChainBroken {
            stream_sequence, ..
        }) => stream_sequence,
        other => panic!("an append past a held message: {other:?}"),
    };
    // The writer catches up: event 4 joins the chain, the rest of its message is held.
    assert_eq!(
        refused_at(ledger.append(note("01", "after-1", "x")).await),
        held
    );
    let at = ledger.store().head("01").unwrap().unwrap();
    assert_eq!((at.sequence, at.stream_sequence, at.index), (4, held, 0));
    ledger.close().await.unwrap();

    // Restarted, with whatever closing kept: the message is held again.
    let ledger = ledger_at(&config, dir.path()).await;
    assert_eq!(
        refused_at(ledger.append(note("01", "after-2", "x")).await),
        held
    );
    let stopped = ledger.stopped_partitions().unwrap();
    assert!(
        stopped
            .iter()
            .any(|(p, why)| p == "01" && why.contains("held")),
        "{stopped:?}"
    );
    assert_eq!(last_sequence().await, held);
    ledger.close().await.unwrap();
    assert!(
        snapshot::load(&sled_dir, "01").unwrap().is_none(),
        "a book snapshot at a head inside a held message"
    );

    // A snapshot at that head (as an earlier version kept one) is not trusted: the
    // audit names it, and the writer discards it and holds the message again.
    let book = snapshot::fold(&stream, &config.subject_prefix, "01", held)
        .await
        .unwrap();
    assert_eq!(book.sequence, 4);
    let inside = HeadRecord {
        sequence: 4,
        hash: chain::event_hash(&events[0]),
        stream_sequence: held,
        index: 0,
    };
    let body = ansinh::book::snapshot::encode(&book);
    snapshot::save(&sled_dir, "01", &inside, &body).unwrap();
    let checks = snapshot::check_all(&sled_dir, &stream, &config.subject_prefix)
        .await
        .unwrap();
    let difference = checks[0]
        .difference
        .clone()
        .expect("a snapshot inside a message");
    assert!(difference.contains("not the last"), "{difference}");
    let ledger = ledger_at(&config, dir.path()).await;
    assert_eq!(
        refused_at(ledger.append(note("01", "after-3", "x")).await),
        held
    );
    assert_eq!(last_sequence().await, held);
    assert!(snapshot::load(&sled_dir, "01").unwrap().is_none());
    ledger.close().await.unwrap();
}

/// The index's last commit, left unsynced by a burst, becomes durable without another
/// append or a close (ADR 0005): it holds the remembered head, which only the index knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_index_commit_becomes_durable_without_another_append() {
    use ansinh::log::store::INDEX_SYNC_INTERVAL;
    use std::time::{Duration, Instant};
    async fn until(what: &str, bound: Duration, done: impl Fn() -> bool) {
        let deadline = Instant::now() + bound;
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    let store = ledger.store().clone();
    // An append right after a fsync: its index commit is not synced with it (unless the
    // machine took the whole interval in between: then again).
    for attempt in 1.. {
        store.sync().unwrap();
        let key = format!("k{attempt}");
        ledger.append(note("01", &key, "x")).await.unwrap();
        until("the key recorded", Duration::from_secs(5), || {
            store.idempotent("01", &key).unwrap().is_some()
        })
        .await;
        if store.sync_pending() {
            break;
        }
        assert!(attempt < 20, "every index commit was synced at once");
    }
    // Then nothing more: within a bound, the commit is durable.
    until(
        "the last index commit synced",
        INDEX_SYNC_INTERVAL * 25,
        || !store.sync_pending(),
    )
    .await;
    ledger.close().await.unwrap();
}

/// `Ansinh-Seq` names the message's last event (docs/CHAIN.md section 1): a message of
/// good events whose header says another sequence is reported where it stands, as a
/// wrong `Ansinh-Hash` is, in a frame and in a single-event message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_header_that_disagrees_with_the_payload_is_reported() {
    let js = jetstream::new(client().await);
    // (case, events in the message, its Ansinh-Seq, the last event's sequence)
    for (case, count, header, last) in [
        ("frame naming its first event", 3, "4", 6),
        ("single event, not a number", 1, "four", 4),
    ] {
        let config = fresh_log();
        let (ledger, _dir) = ledger(&config).await;
        let mut head = None;
        for i in 0..3 {
            head = Some(
                ledger
                    .append(note("01", &format!("k{i}"), "real"))
                    .await
                    .unwrap(),
            );
        }
        let events = chained("01", 4, head.unwrap().hash, count);
        let (payload, framed) = frame::encode(&events);
        let mut headers = async_nats::HeaderMap::new();
        if framed {
            headers.insert(frame::HEADER_FORMAT, frame::FORMAT_FRAME);
        }
        headers.insert(ansinh::log::HEADER_SEQUENCE, header);
        let ack = publish_on_01(&js, &config, headers, payload).await;
        let mut stream = stream_of(&config).await;
        match verify(&mut stream, &config, &keys_partition(), None, |_| {}).await {
            Err(VerifyError::Broken {
                stream_sequence,
                cause: ChainBreak::SequenceMismatch { header: h, found },
                ..
            }) => assert_eq!(
                (stream_sequence, h.as_str(), found),
                (ack.sequence, header, last),
                "{case}"
            ),
            other => panic!("{case}: the header's disagreement not reported: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_before_frames_verifies_and_is_continued_with_frames() {
    let config = fresh_log();
    // Create the stream as the ledger does, then write three events the way the ledger
    // did before frames: one bare envelope per message, each with its own headers.
    let (first, _first_dir) = ledger(&config).await;
    first.close().await.unwrap();
    let js = jetstream::new(client().await);
    let subject = config.subject(&Partition::new("01").unwrap());
    let genesis = chain::genesis(&Partition::new("01").unwrap());
    for (i, bytes) in chained("01", 1, genesis, 3).into_iter().enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Ansinh-Hash", chain::event_hash(&bytes).to_hex().as_str());
        headers.insert("Ansinh-Seq", (i + 1).to_string().as_str());
        headers.insert("Nats-Msg-Id", format!("01:by-hand-{}", i + 1).as_str());
        js.publish_with_headers(subject.clone(), headers, bytes)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(verified(&config).await.events, 3);
    // A writer catches up with it, knows its keys, and continues the chain in frames.
    let (ledger, _dir) = ledger(&config).await;
    let again = ledger
        .append(note("01", "by-hand-2", "retry"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.sequence, again.stream_sequence, again.index),
        (2, 2, 0)
    );
    let mut set = tokio::task::JoinSet::new();
    for i in 0..100 {
        let l = ledger.clone();
        set.spawn(async move { l.append(note("01", &format!("new{i}"), "framed")).await });
    }
    let mut framed = 0;
    while let Some(r) = set.join_next().await {
        framed += usize::from(r.unwrap().unwrap().index > 0);
    }
    assert!(framed > 0);
    let report = verified(&config).await;
    assert_eq!(report.events, 103);
    let db = sled::Config::new().temporary(true).open().unwrap();
    let projector = Projector::scratch(&db).unwrap();
    let mut stream = stream_of(&config).await;
    assert_eq!(projector.catch_up(&mut stream, &config).await.unwrap(), 103);
    assert_eq!(
        projector.summaries().unwrap()["01"].head_hash,
        report.partitions["01"].head.to_hex()
    );
}

/// Appends `count` notes of ~60 KiB at once to partition 01 and checks that every one
/// is acknowledged and the log verifies; returns the largest stored message's size.
async fn large_notes_commit(ledger: &Ledger, config: &ansinh::log::LogConfig, count: usize) -> u64 {
    let text = "x".repeat(chain::EVENT_BYTES_MAX - 4 * 1024);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..count {
        let (l, text) = (ledger.clone(), text.clone());
        set.spawn(async move { l.append(note("01", &format!("large{i}"), &text)).await });
    }
    while let Some(r) = set.join_next().await {
        let receipt = r
            .unwrap()
            .expect("a large event within the limit is acknowledged");
        assert!(!receipt.duplicate);
    }
    assert_eq!(verified(config).await.events, count as u64);
    let stream = stream_of(config).await;
    let mut largest = 0;
    for sequence in 1..=message_count(config).await {
        let raw = stream.get_raw_message(sequence).await.unwrap();
        largest = largest.max(raw.payload.len() as u64);
    }
    largest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_events_share_frames_within_the_streams_message_limit() {
    // A new stream takes a frame of up to 1 MiB: sixteen 60 KiB events fit one.
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    let largest = large_notes_commit(&ledger, &config, 40).await;
    let limit = stream_of(&config)
        .await
        .info()
        .await
        .unwrap()
        .config
        .max_message_size;
    assert_eq!(limit as usize, ansinh::log::stream::MESSAGE_BYTES_MAX);
    assert!(largest as usize <= frame::FRAME_BYTES_MAX);
    assert!(
        message_count(&config).await < 40,
        "concurrent large events were packed into frames"
    );

    // A stream created before frames grew allows one event and its headers (68 KiB):
    // frames there stay that small, and every event still commits.
    let config = fresh_log();
    let js = jetstream::new(client().await);
    js.create_stream(jetstream::stream::Config {
        name: config.stream_name.clone(),
        subjects: vec![config.wildcard()],
        storage: jetstream::stream::StorageType::File,
        deny_delete: true,
        deny_purge: true,
        allow_atomic_publish: true,
        max_message_size: (chain::EVENT_BYTES_MAX + 4 * 1024) as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let (old_ledger, _old_dir) = common::ledger(&config).await;
    let largest = large_notes_commit(&old_ledger, &config, 12).await;
    assert!(largest as usize <= chain::EVENT_BYTES_MAX);
    assert_eq!(
        message_count(&config).await,
        12,
        "one large event per message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_larger_than_a_clients_pending_limit_reads_in_bounded_pulls() {
    // 1,200 events of ~60 KiB in frames of up to 1 MiB: ~72 MB of log, more than
    // nats-server lets a client fall behind (64 MiB) before it drops it as a slow consumer.
    // A reader that asked for 500 of these messages at once could hang; verify must not.
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    large_notes_commit(&ledger, &config, 1_200).await;
    for _ in 0..3 {
        assert_eq!(verified(&config).await.events, 1_200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_lookups_and_reads_of_large_frames_at_once_all_get_their_answers() {
    // ~75 frames of ~1 MiB. 256 lookups (looking up one event fetches the frame holding
    // it) and 8 reads at once on one connection would have the server queue far
    // more than the 64 MiB it lets a client fall behind by; it then drops what it
    // queued (acks, replies, read messages) and they time out or read as lost. The
    // process's read budget keeps them within it, so every one gets its answer.
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    large_notes_commit(&ledger, &config, 1_200).await;
    let messages = message_count(&config).await;
    let stream = stream_of(&config).await;
    let mut expected = Vec::new();
    for sequence in 1..=messages {
        let events = reader::at_sequence(&stream, sequence)
            .await
            .unwrap()
            .unwrap();
        expected.push(events.len());
    }
    assert_eq!(expected.iter().sum::<usize>(), 1_200);

    let mut lookups = tokio::task::JoinSet::new();
    for n in 0..256u64 {
        let stream = stream.clone();
        let sequence = 1 + n % messages;
        lookups.spawn(async move {
            let events = reader::at_sequence(&stream, sequence).await;
            (sequence, events.map(|e| e.map(|e| e.len())))
        });
    }
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (config, mut stream) = (config.clone(), stream.clone());
        reads.spawn(async move {
            ansinh::verify::verify(&mut stream, &config, &keys_partition(), None, |_| {})
                .await
                .map(|report| report.events)
        });
    }
    while let Some(lookup) = lookups.join_next().await {
        let (sequence, events) = lookup.unwrap();
        assert_eq!(
            events.expect("the lookup is answered"),
            Some(expected[sequence as usize - 1]),
            "message {sequence}"
        );
    }
    while let Some(read) = reads.join_next().await {
        assert_eq!(read.unwrap().expect("the log reads whole"), 1_200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_of_a_receipt_is_the_stored_event_fresh_or_old() {
    // A fresh receipt is answered from the writer's memory of what the server
    // acknowledged, an old one (here: another ledger's) from the log; both are the
    // stored bytes.
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let l = ledger.clone();
        set.spawn(async move {
            l.append(note("01", &format!("k{i}"), &format!("note {i}")))
                .await
        });
    }
    let mut receipts = Vec::new();
    while let Some(r) = set.join_next().await {
        receipts.push(r.unwrap().unwrap());
    }
    let (other, _other_dir) = common::ledger(&config).await;
    let stream = stream_of(&config).await;
    for receipt in &receipts {
        let at = EventAt {
            stream_sequence: receipt.stream_sequence,
            index: receipt.index,
        };
        let stored = reader::event_at(&stream, at).await.unwrap().unwrap();
        let stored = Envelope::decode(stored.payload.as_ref()).unwrap();
        assert_eq!(stored.sequence, receipt.sequence);
        assert_eq!(ledger.event_of(receipt).await.unwrap(), stored);
        assert_eq!(other.event_of(receipt).await.unwrap(), stored);
    }
}

/// A TCP proxy in front of the test's nats-server that can lose one acknowledgement:
/// armed with a header name, it forwards the next client message carrying that header
/// whole, but cuts the connection before anything the server says after it reaches the
/// client. The message lands; its ack never arrives; the client reconnects through the
/// proxy. Only the connection is cut: the broker is the real one.
struct AckCutter {
    address: String,
    armed: std::sync::Arc<std::sync::Mutex<Option<&'static str>>>,
    cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl AckCutter {
    async fn start() -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("nats://{}", listener.local_addr().unwrap());
        let server = server_url().trim_start_matches("nats://").to_owned();
        let armed: Arc<Mutex<Option<&'static str>>> = Arc::default();
        let cuts = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (a, c, n) = (armed.clone(), cuts.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                n.fetch_add(1, Ordering::SeqCst);
                let upstream = tokio::net::TcpStream::connect(&server).await.unwrap();
                tokio::spawn(Self::relay(client, upstream, a.clone(), c.clone()));
            }
        });
        AckCutter {
            address,
            armed,
            cuts,
            connections,
        }
    }

    /// Cut the connection at the next message whose headers name `header`.
    fn arm(&self, header: &'static str) {
        *self.armed.lock().unwrap() = Some(header);
    }

    fn cuts(&self) -> usize {
        self.cuts.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn relay(
        client: tokio::net::TcpStream,
        upstream: tokio::net::TcpStream,
        armed: std::sync::Arc<std::sync::Mutex<Option<&'static str>>>,
        cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client_in, mut client_out) = client.into_split();
        let (mut server_in, mut server_out) = upstream.into_split();
        let cut = std::sync::Arc::new(AtomicBool::new(false));
        let cut_down = cut.clone();
        // Server to client: stops, and closes the client's side, once cut.
        let down = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match server_in.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if cut_down.load(Ordering::SeqCst) || client_out.write_all(&buf[..n]).await.is_err()
                {
                    break;
                }
            }
            let _ = client_out.shutdown().await;
        });
        // Client to server, one protocol operation at a time, so a message is forwarded
        // whole: a line, and for PUB / HPUB the bytes its size names and a CRLF.
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        'read: loop {
            let n = match client_in.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            loop {
                let Some(eol) = pending.windows(2).position(|w| w == b"\r\n") else {
                    continue 'read;
                };
                let line = String::from_utf8_lossy(&pending[..eol]).to_string();
                let words: Vec<&str> = line.split_whitespace().collect();
                let op = words
                    .first()
                    .map(|w| w.to_ascii_uppercase())
                    .unwrap_or_default();
                let (length, headers) = match op.as_str() {
                    "PUB" => (
                        eol + 2 + words.last().unwrap().parse::<usize>().unwrap() + 2,
                        0,
                    ),
                    "HPUB" => {
                        let total: usize = words[words.len() - 1].parse().unwrap();
                        let header: usize = words[words.len() - 2].parse().unwrap();
                        (eol + 2 + total + 2, header)
                    }
                    _ => (eol + 2, 0),
                };
                if pending.len() < length {
                    continue 'read;
                }
                let operation: Vec<u8> = pending.drain(..length).collect();
                let marker = *armed.lock().unwrap();
                let hit = marker.is_some_and(|m| {
                    let block = &operation[eol + 2..eol + 2 + headers];
                    block
                        .windows(m.len())
                        .any(|w| w.eq_ignore_ascii_case(m.as_bytes()))
                });
                if hit {
                    // Nothing the server answers from here on reaches the client.
                    cut.store(true, Ordering::SeqCst);
                    *armed.lock().unwrap() = None;
                }
                if server_out.write_all(&operation).await.is_err() {
                    break 'read;
                }
                if hit {
                    cuts.fetch_add(1, Ordering::SeqCst);
                    break 'read;
                }
            }
        }
        // The server reads what it was sent before it sees the connection close.
        let _ = server_out.shutdown().await;
        cut.store(true, Ordering::SeqCst);
        let _ = down.await;
    }
}

/// An append whose message landed but whose ack was lost (the connection dropped in
/// between) is answered with the event the log holds, once: the writer catches up, finds
/// the keys it sent, and answers them. Nothing is written twice, the chain goes on from
/// the right head, and a retry of the key is answered with the same event. The same for
/// an atomic batch of several messages cut at its commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_ack_was_lost_is_answered_once_from_the_log() {
    let config = fresh_log();
    let cutter = AckCutter::start().await;
    let client = async_nats::connect(&cutter.address).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = LedgerStore::open(&dir.path().join("ledger.sled")).unwrap();
    let (ledger, lost) = Ledger::open(client, config.clone(), store).await.unwrap();
    assert!(lost.is_empty());
    ledger.append(note("01", "before", "first")).await.unwrap();

    // One event: a plain publish fenced on the subject's last sequence.
    cutter.arm("Ansinh-Hash");
    let answered = ledger
        .append(note("01", "lost-ack", "landed, not acknowledged"))
        .await
        .expect("the landed event is answered");
    assert_eq!(
        cutter.cuts(),
        1,
        "the proxy cut the connection at the publish"
    );
    assert!(
        !answered.duplicate,
        "the caller's own first write, though its answer was found in the log"
    );
    assert!(cutter.connections.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    assert_eq!(answered.sequence, 2);
    assert_eq!(event_count(&config).await, 2, "written once");
    let again = ledger
        .append(note("01", "lost-ack", "a retry by the caller"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.sequence, again.hash),
        (answered.sequence, answered.hash)
    );

    // Several large events: an atomic batch of several messages, cut at its commit.
    cutter.arm("Nats-Batch-Commit");
    let text = "x".repeat(chain::EVENT_BYTES_MAX - 4 * 1024);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (l, text) = (ledger.clone(), text.clone());
        set.spawn(async move { l.append(note("01", &format!("large{i}"), &text)).await });
    }
    let mut sequences = std::collections::BTreeSet::new();
    while let Some(r) = set.join_next().await {
        let receipt = r.unwrap().expect("each event of the cut batch is answered");
        assert!(
            !receipt.duplicate,
            "{receipt:?} is its caller's first write"
        );
        sequences.insert(receipt.sequence);
    }
    assert_eq!(cutter.cuts(), 2, "the proxy cut a batch at its commit");
    assert_eq!(
        sequences,
        (3..=42).collect(),
        "each event once, in one chain"
    );
    assert_eq!(verified(&config).await.events, 42);
    assert_eq!(
        ledger
            .append(note("01", "after", "next"))
            .await
            .unwrap()
            .sequence,
        43
    );
}
