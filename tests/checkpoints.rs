//! Checkpoints, cosignatures and proofs against a real nats-server.

mod common;

use std::time::Duration;

use ansinh::chain::Partition;
use ansinh::checkpoint::proofs::{self, CheckError};
use ansinh::checkpoint::sign::{self, CheckpointBody};
use ansinh::checkpoint::{
    Auditor, CheckpointConfig, CheckpointError, CheckpointTask, Checkpointer, CosignRefusal,
    CosignerState, Cosigning, Outcome, Policy, ensure_checkpoint_stream, keys, load_key,
    rotate_key,
};
use ansinh::log::{Ledger, LogConfig, StreamError};
use ansinh::merkle::{self, Hash32};
use ansinh::proto;
use async_nats::jetstream;
use futures::StreamExt;
use prost::Message;

use common::*;

fn p01() -> Partition {
    Partition::new("01").unwrap()
}

/// Appends `n` notes to partition 01 starting at key index `from`; returns their hashes.
async fn append(ledger: &Ledger, from: u64, n: u64) -> Vec<Hash32> {
    let mut out = Vec::new();
    for i in from..from + n {
        let r = ledger
            .append(note("01", &format!("k{i}"), "checkpointed"))
            .await
            .unwrap();
        out.push(r.hash.0);
    }
    out
}

async fn checkpointer(
    ledger: &Ledger,
    config: &CheckpointConfig,
    dir: &std::path::Path,
) -> Checkpointer {
    Checkpointer::open(client().await, ledger.clone(), config.clone(), dir)
        .await
        .expect("open checkpointer")
}

/// Publishes `body` signed by `key` on partition 01's checkpoint subject, as anyone with
/// the right to publish there could; its stream sequence.
async fn publish_checkpoint(
    config: &CheckpointConfig,
    key: &sign::KeyPair,
    body: &CheckpointBody,
) -> u64 {
    jetstream::new(client().await)
        .publish(
            config.checkpoint_subject(&p01()),
            sign::sign_checkpoint(key, body).encode_to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

/// Publishes `cosignature` on partition 01's cosignature subject.
async fn publish_cosignature(
    js: &jetstream::Context,
    config: &CheckpointConfig,
    cosignature: &proto::Cosignature,
) {
    js.publish(
        config.cosignature_subject(&p01()),
        cosignature.encode_to_vec().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// An audit office as the tests play one: its id, its key, the ledger keys it pins
/// (`--trust`) and its state file, in a directory of its own.
struct Office {
    id: &'static str,
    key: sign::KeyPair,
    trusted: Vec<String>,
    state: CosignerState,
    _dir: tempfile::TempDir,
}

impl Office {
    /// An office with a key from `seed`, pinning the ledger key `trusted`.
    fn new(id: &'static str, seed: u8, trusted: &str) -> Self {
        Self::with_key(id, sign::KeyPair::from_seed(&[seed; 32]), trusted)
    }

    fn with_key(id: &'static str, key: sign::KeyPair, trusted: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = CosignerState::open(&dir.path().join("office.cosigner-state.json")).unwrap();
        Self {
            id,
            key,
            trusted: vec![trusted.to_string()],
            state,
            _dir: dir,
        }
    }

    async fn cosign(
        &mut self,
        a: &Auditor,
        partition: &Partition,
        tree_size: u64,
        signed_at_unix_ms: i64,
    ) -> Result<proto::Cosignature, CheckpointError> {
        let cosigning = Cosigning {
            cosigner_id: self.id,
            key: &self.key,
            trusted: &self.trusted,
            signed_at_unix_ms,
        };
        a.cosign(partition, tree_size, &cosigning, &mut self.state)
            .await
    }
}

async fn auditor(log: &LogConfig, config: &CheckpointConfig) -> Auditor {
    Auditor::open(client().await, log.clone(), config.clone())
        .await
        .expect("open auditor")
}

/// `verify` (of one partition, or all), and the valid checkpoints of 01 that match the
/// log as it lists them (`audit verify --checkpoints`), in stream order.
async fn verify_listing(
    a: &Auditor,
    only: Option<&Partition>,
) -> (
    ansinh::checkpoint::audit::CheckpointAudit,
    Vec<ansinh::checkpoint::audit::CheckpointStatus>,
) {
    let mut listed = Vec::new();
    let audit = a
        .verify_listing(only, |partition, status| {
            if *partition == p01() {
                listed.push(status.clone());
            }
        })
        .await
        .unwrap();
    (audit, listed)
}

async fn publish_now(c: &mut Checkpointer) -> CheckpointBody {
    match c.checkpoint(&p01()).await.expect("checkpoint") {
        Outcome::Published(p) => p.body,
        other => panic!("nothing published: {other:?}"),
    }
}

/// Changes the hex digit at `at` to another lowercase hex digit.
fn flip(text: &mut String, at: usize) {
    let to = if &text[at..at + 1] == "0" { "1" } else { "0" };
    text.replace_range(at..at + 1, to);
}

fn check(doc: &impl serde::Serialize, trusted: &[String]) -> Result<proofs::Checked, CheckError> {
    proofs::check_document(&serde_json::to_vec(doc).unwrap(), trusted)
}

/// A checkpoint of partition 01 of `size` events signed by a key that was never the
/// ledger's: what anyone who may publish on the checkpoint stream can store there.
fn forged_body(key: &sign::KeyPair, size: u64) -> CheckpointBody {
    CheckpointBody {
        partition: p01(),
        tree_size: size,
        root: [7; 32],
        head_sequence: size,
        head_hash: [7; 32],
        issued_at_unix_ms: 0,
        key_id: key.key_id().into(),
    }
}

/// `publish_now`, once more if a message stored meanwhile on the subject (not the
/// ledger's) made the fenced publish lose: the checkpointer then starts again from the
/// log and the latest valid checkpoint.
async fn publish_past_strangers(c: &mut Checkpointer) -> CheckpointBody {
    match c.checkpoint(&p01()).await {
        Ok(Outcome::Published(p)) => p.body,
        Err(CheckpointError::Raced { .. }) => publish_now(c).await,
        other => panic!("nothing published: {other:?}"),
    }
}

/// A proof, a cosignature or a consistency proof needs one or two checkpoints of its
/// partition: they are found from the subject's last message and by a binary search by
/// size, in a few requests however many checkpoints the partition has had (one a
/// minute is half a million a year), not by reading and checking every one. Messages
/// that are not the ledger's checkpoints (kept for ever: the stream denies delete) cost
/// a step each, and a flood of them time, never a wrong answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_checkpoint_is_found_without_reading_every_checkpoint() {
    const CHECKPOINTS: u64 = 400;
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    let stranger = sign::KeyPair::from_seed(&[9; 32]);
    for i in 0..CHECKPOINTS {
        append(&ledger, i, 1).await;
        assert_eq!(publish_past_strangers(&mut c).await.tree_size, i + 1);
        // Now and then a stranger's message among the ledger's, of the same size.
        if i % 97 == 50 {
            publish_checkpoint(&config, &stranger, &forged_body(&stranger, i + 1)).await;
        }
    }
    // And the subject ends with three of them.
    for size in [CHECKPOINTS, CHECKPOINTS + 1, 1] {
        publish_checkpoint(&config, &stranger, &forged_body(&stranger, size)).await;
    }
    // A binary search over the checkpoint stream's sequences takes about log2 of its
    // length in requests.
    let mut stream = jetstream::new(client().await)
        .get_stream(&config.stream_name)
        .await
        .unwrap();
    let length = stream.info().await.unwrap().state.last_sequence;
    let steps = u64::from(64 - length.leading_zeros());
    let a = auditor(&log, &config).await;
    let ring = a.key_ring().await.unwrap();
    let cost = |a: &Auditor, before: u64| a.checkpoint_messages_read() - before;

    // The latest valid checkpoint, past the three at the end (each costs one search).
    let before = a.checkpoint_messages_read();
    let doc = a.prove(&p01(), 7, None).await.unwrap();
    assert_eq!(doc.checkpoint.decoded.tree_size, CHECKPOINTS);
    check(&doc, &[]).unwrap();
    assert!(
        cost(&a, before) <= 4 * steps + 2,
        "{} reads",
        cost(&a, before)
    );
    let before = a.checkpoint_messages_read();
    let latest = a.latest_checkpoint(&p01(), &ring).await.unwrap().unwrap();
    assert_eq!(latest.stored.body.tree_size, CHECKPOINTS);
    assert!(
        cost(&a, before) <= 4 * steps + 2,
        "{} reads",
        cost(&a, before)
    );

    // One of a given size, whichever: first, last, beside a stranger's, in between.
    for size in [
        1,
        2,
        51,
        52,
        148,
        149,
        246,
        300,
        CHECKPOINTS - 1,
        CHECKPOINTS,
    ] {
        let before = a.checkpoint_messages_read();
        let doc = a.prove(&p01(), 1, Some(size)).await.unwrap();
        assert_eq!(doc.checkpoint.decoded.tree_size, size);
        check(&doc, &[]).unwrap();
        assert!(
            cost(&a, before) <= 3 * steps + 3,
            "size {size}: {} reads",
            cost(&a, before)
        );
    }
    for size in [CHECKPOINTS + 1, CHECKPOINTS + 10] {
        assert!(matches!(
            a.prove(&p01(), 1, Some(size)).await,
            Err(CheckpointError::NoCheckpoint { .. })
        ));
    }
    let before = a.checkpoint_messages_read();
    let growth = a.consistency(&p01(), 52, 300).await.unwrap();
    check(&growth, &[]).unwrap();
    assert!(
        cost(&a, before) <= 6 * steps + 6,
        "{} reads",
        cost(&a, before)
    );
    let mut office = Office::new("audit-office:region-1", 12, c.key_id());
    let before = a.checkpoint_messages_read();
    office.cosign(&a, &p01(), 246, 1).await.unwrap();
    assert!(
        cost(&a, before) <= 3 * steps + 3,
        "{} reads",
        cost(&a, before)
    );
    let doc = a.prove(&p01(), 5, Some(246)).await.unwrap();
    assert_eq!(doc.checkpoint.cosignatures.len(), 1);

    // A flood of strangers' messages at the end: the lookups read the subject through,
    // and still find the ledger's.
    for size in 0..=ansinh::checkpoint::lookup::INVALID_PASSED_MAX {
        publish_checkpoint(&config, &stranger, &forged_body(&stranger, size + 1)).await;
    }
    let latest = a.latest_checkpoint(&p01(), &ring).await.unwrap().unwrap();
    assert_eq!(latest.stored.body.tree_size, CHECKPOINTS);
    let found = a
        .checkpoint_of_size(&p01(), &ring, 300)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.stored.body.tree_size, 300);
    // The checkpointer builds on the latest valid one past them.
    append(&ledger, CHECKPOINTS, 1).await;
    let mut fresh = checkpointer(&ledger, &config, dir.path()).await;
    assert_eq!(publish_now(&mut fresh).await.tree_size, CHECKPOINTS + 1);
}

/// A copy of an earlier valid checkpoint stored again later (only a holder of the
/// ledger's right to publish on the checkpoint stream can store one) breaks the order a
/// search by size relies on, and can send it past the checkpoint asked: the search then
/// finds nothing, never another checkpoint, and "nothing" is confirmed by reading the
/// subject through, which finds it. Verify reports every copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_an_earlier_checkpoint_hides_none_from_a_search_by_size() {
    const CHECKPOINTS: u64 = 60;
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    let mut third = None;
    for i in 0..CHECKPOINTS {
        append(&ledger, i, 1).await;
        let published = match c.checkpoint(&p01()).await {
            Ok(Outcome::Published(p)) => p,
            Err(CheckpointError::Raced { .. }) => match c.checkpoint(&p01()).await.unwrap() {
                Outcome::Published(p) => p,
                other => panic!("nothing published: {other:?}"),
            },
            other => panic!("nothing published: {other:?}"),
        };
        if i == 2 {
            third = Some(published.signed.encode_to_vec());
        }
        // The third checkpoint's message stored again after each from the 20th.
        if i >= 19 {
            jetstream::new(client().await)
                .publish(
                    config.checkpoint_subject(&p01()),
                    third.clone().unwrap().into(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    let a = auditor(&log, &config).await;
    let ring = a.key_ring().await.unwrap();
    for size in 1..=CHECKPOINTS {
        let found = a.checkpoint_of_size(&p01(), &ring, size).await.unwrap();
        assert_eq!(found.map(|c| c.stored.body.tree_size), Some(size));
    }
    assert!(
        a.checkpoint_of_size(&p01(), &ring, CHECKPOINTS + 1)
            .await
            .unwrap()
            .is_none()
    );
    let audit = a.verify(Some(&p01())).await.unwrap();
    let copies = audit
        .problems
        .iter()
        .filter(|p| {
            p.problem
                .contains("a checkpoint of size 3 stored after one of size")
        })
        .count();
    assert_eq!(copies as u64, CHECKPOINTS - 19, "{:?}", audit.problems);
    assert_eq!(audit.partitions["01"].checkpoints, CHECKPOINTS);
}

/// `audit verify` reads a partition's checkpoints, then its cosignatures, a chunk at a
/// time (`Auditor::with_messages_in_memory_max`), and keeps what it looks up by hash on
/// disk: with many more checkpoints than it holds at once, each is checked against the
/// log as the chain is read on across chunks, a cosignature finds its checkpoint
/// however long after it was stored, and nothing caps how many a partition may have.
/// A checkpoint stored out of size order, which the lookups by size could not find, is
/// a problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_more_checkpoints_than_it_holds_in_memory() {
    const CHECKPOINTS: u64 = 120;
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    let mut hashes = Vec::new();
    for i in 0..CHECKPOINTS {
        hashes.extend(append(&ledger, i, 1).await);
        publish_now(&mut c).await;
    }
    let a = auditor(&log, &config).await;
    let mut early = Office::new("office-early", 12, c.key_id());
    let mut late = Office::new("office-late", 13, c.key_id());
    // Cosigned after every checkpoint was stored: the first one by both offices, one in
    // the middle, the latest.
    early.cosign(&a, &p01(), 3, 1).await.unwrap();
    late.cosign(&a, &p01(), 3, 1).await.unwrap();
    late.cosign(&a, &p01(), 100, 1).await.unwrap();
    early.cosign(&a, &p01(), CHECKPOINTS, 1).await.unwrap();
    let a = a.with_messages_in_memory_max(7);
    let (audit, listed) = verify_listing(&a, Some(&p01())).await;
    assert!(audit.ok(), "{:?}", audit.problems);
    assert_eq!(audit.partitions["01"].checkpoints, CHECKPOINTS);
    let sizes: Vec<u64> = listed.iter().map(|c| c.tree_size).collect();
    assert_eq!(sizes, (1..=CHECKPOINTS).collect::<Vec<_>>());
    let cosigners = |size: u64| -> Vec<String> {
        listed[size as usize - 1]
            .cosigners
            .iter()
            .map(|c| c.cosigner_id.clone())
            .collect()
    };
    assert_eq!(cosigners(3), ["office-early", "office-late"]);
    assert_eq!(cosigners(100), ["office-late"]);
    assert_eq!(cosigners(CHECKPOINTS), ["office-early"]);
    assert!(cosigners(50).is_empty());
    let latest = audit.partitions["01"].latest.as_ref().unwrap();
    assert_eq!(latest, listed.last().unwrap());

    // A checkpoint the ledger's key signed, matching the log, but stored after a
    // larger one: refused, and so is a cosignature of it.
    let key = load_key(&dir.path().join(keys::LEDGER_KEY_FILE)).unwrap();
    let body = CheckpointBody {
        partition: p01(),
        tree_size: 50,
        root: merkle::root(&hashes[..50]),
        head_sequence: 50,
        head_hash: hashes[49],
        issued_at_unix_ms: ansinh::checkpoint::now_unix_ms(),
        key_id: key.key_id().into(),
    };
    let out_of_order = publish_checkpoint(&config, &key, &body).await;
    let signed = sign::sign_checkpoint(&key, &body);
    let cosignature = sign::cosign(&early.key, "office-early", &signed.checkpoint, 2).unwrap();
    publish_cosignature(&jetstream::new(client().await), &config, &cosignature).await;
    let (audit, listed) = verify_listing(&a, Some(&p01())).await;
    assert_eq!(audit.partitions["01"].checkpoints, CHECKPOINTS);
    assert_eq!(listed.len() as u64, CHECKPOINTS);
    let problems: Vec<(u64, &str)> = audit
        .problems
        .iter()
        .map(|p| (p.stream_sequence, p.problem.as_str()))
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].0, out_of_order);
    assert!(
        problems[0]
            .1
            .contains("a checkpoint of size 50 stored after one of size 120"),
        "{problems:?}"
    );
    assert!(
        problems[1]
            .1
            .contains("cosignature of a checkpoint refused"),
        "{problems:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_task_checkpoints_after_n_events() {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let c = checkpointer(&ledger, &config, dir.path()).await;
    // The key file is private to the ledger.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(keys::LEDGER_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let mut published = client()
        .await
        .subscribe(config.checkpoint_subject(&p01()))
        .await
        .unwrap();
    let policy = Policy {
        every_events: 5,
        every: Duration::from_secs(3600),
    };
    let task = CheckpointTask::spawn(c, policy).await.unwrap();
    let hashes = append(&ledger, 0, 5).await;
    // The timeout only bounds a failure; the checkpoint is triggered by event 5.
    let message = tokio::time::timeout(Duration::from_secs(30), published.next())
        .await
        .expect("a checkpoint after 5 events")
        .unwrap();
    let signed = proto::SignedCheckpoint::decode(message.payload.as_ref()).unwrap();
    let body = CheckpointBody::decode(&signed.checkpoint).unwrap();
    assert_eq!(body.tree_size, 5);
    assert_eq!(body.root, merkle::root(&hashes));
    assert_eq!(body.head_hash, hashes[4]);
    // Four more events do not reach the threshold; asking does.
    append(&ledger, 5, 4).await;
    task.checkpoint_now();
    let message = tokio::time::timeout(Duration::from_secs(30), published.next())
        .await
        .expect("a checkpoint when asked")
        .unwrap();
    let signed = proto::SignedCheckpoint::decode(message.payload.as_ref()).unwrap();
    assert_eq!(
        CheckpointBody::decode(&signed.checkpoint)
            .unwrap()
            .tree_size,
        9
    );
    let mut c = task.stop().await;
    assert_eq!(c.checkpointed_size(&p01()), 9);
    // Nothing new: nothing published.
    assert!(matches!(
        c.checkpoint(&p01()).await.unwrap(),
        Outcome::Unchanged { tree_size: 9 }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prove_and_check_proof_round_trip_and_tampering_is_rejected() {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    let hashes = append(&ledger, 0, 7).await;
    let body = publish_now(&mut c).await;
    assert_eq!(body.tree_size, 7);
    let trusted = vec![c.key_id().to_string()];
    let a = auditor(&log, &config).await;
    for sequence in 1..=7 {
        let doc = a.prove(&p01(), sequence, None).await.unwrap();
        assert_eq!(doc.event_hash, hex::encode(hashes[sequence as usize - 1]));
        check(&doc, &trusted).unwrap_or_else(|e| panic!("event {sequence}: {e}"));
    }
    let doc = a.prove(&p01(), 3, Some(7)).await.unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/inclusion-proof.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert!(
        jsonschema::draft202012::new(&schema)
            .unwrap()
            .is_valid(&serde_json::to_value(&doc).unwrap())
    );
    // Tampered event, proof, checkpoint bytes and signature are each rejected.
    let mut bad = doc.clone();
    flip(&mut bad.event, 40);
    assert!(check(&bad, &trusted).is_err());
    let mut bad = doc.clone();
    bad.proof.audit_path[0] = hex::encode([0u8; 32]);
    assert!(matches!(check(&bad, &trusted), Err(CheckError::Proof(_))));
    let mut bad = doc.clone();
    flip(&mut bad.checkpoint.checkpoint, 10);
    assert!(check(&bad, &trusted).is_err());
    let mut bad = doc.clone();
    flip(&mut bad.checkpoint.signature, 0);
    assert!(matches!(
        check(&bad, &trusted),
        Err(CheckError::Signature { .. })
    ));
    // Events not yet in a checkpoint, and sizes never checkpointed, are refused.
    append(&ledger, 7, 1).await;
    assert!(matches!(
        a.prove(&p01(), 8, None).await,
        Err(CheckpointError::NoCheckpoint { .. })
    ));
    assert!(matches!(
        a.prove(&p01(), 2, Some(5)).await,
        Err(CheckpointError::NoCheckpoint { .. })
    ));
    assert!(matches!(
        a.prove(&p01(), 0, None).await,
        Err(CheckpointError::BadRequest(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_between_two_checkpoints() {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 0, 4).await;
    assert_eq!(publish_now(&mut c).await.tree_size, 4);
    append(&ledger, 4, 9).await;
    assert_eq!(publish_now(&mut c).await.tree_size, 13);
    let a = auditor(&log, &config).await;
    let trusted = vec![c.key_id().to_string()];
    let doc = a.consistency(&p01(), 4, 13).await.unwrap();
    let checked = check(&doc, &trusted).unwrap();
    assert!(
        checked.summary.contains("from 4 to 13"),
        "{}",
        checked.summary
    );
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/consistency-proof.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert!(
        jsonschema::draft202012::new(&schema)
            .unwrap()
            .is_valid(&serde_json::to_value(&doc).unwrap())
    );
    // Swapped checkpoints and a cut path are rejected.
    let mut swapped = doc.clone();
    std::mem::swap(&mut swapped.old_checkpoint, &mut swapped.new_checkpoint);
    assert!(check(&swapped, &trusted).is_err());
    let mut cut = doc.clone();
    cut.proof.path.pop();
    assert!(check(&cut, &trusted).is_err());
    // Same size: the empty proof.
    assert!(check(&a.consistency(&p01(), 13, 13).await.unwrap(), &trusted).is_ok());
    assert!(matches!(
        a.consistency(&p01(), 5, 13).await,
        Err(CheckpointError::NoCheckpoint { .. })
    ));
    assert!(matches!(
        a.consistency(&p01(), 13, 4).await,
        Err(CheckpointError::BadRequest(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_stream_refuses_delete_and_purge_and_unsafe_streams_are_refused() {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 0, 2).await;
    publish_now(&mut c).await;
    let js = jetstream::new(client().await);
    let stream = js.get_stream(&config.stream_name).await.unwrap();
    let last = stream.clone().info().await.unwrap().state.last_sequence;
    assert!(last >= 1);
    assert!(stream.delete_message(last).await.is_err(), "delete refused");
    assert!(stream.purge().await.is_err(), "purge refused");
    assert_eq!(
        stream.clone().info().await.unwrap().state.last_sequence,
        last
    );
    // A pre-existing checkpoint stream that allows purging is refused.
    let (_, unsafe_config) = fresh_checkpointed();
    js.create_stream(jetstream::stream::Config {
        name: unsafe_config.stream_name.clone(),
        subjects: vec![unsafe_config.checkpoint_wildcard()],
        deny_delete: true,
        deny_purge: false,
        ..Default::default()
    })
    .await
    .unwrap();
    match ensure_checkpoint_stream(&js, &unsafe_config).await {
        Err(StreamError::Unsafe { reason, .. }) => assert!(reason.contains("purg"), "{reason}"),
        other => panic!("unsafe stream accepted: {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosignatures_are_checked_published_and_listed_by_verify() {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 0, 6).await;
    publish_now(&mut c).await;
    append(&ledger, 6, 2).await;
    publish_now(&mut c).await;
    let cosigner_dir = tempfile::tempdir().unwrap();
    let (key, created) = keys::load_or_create_key(&cosigner_dir.path().join("office.key")).unwrap();
    assert!(created);
    let mut office = Office::with_key("audit-office:region-1", key, c.key_id());
    let a = auditor(&log, &config).await;
    let cosignature = office
        .cosign(&a, &p01(), 6, 1_767_225_600_000)
        .await
        .unwrap();
    assert_eq!(cosignature.key_id, office.key.key_id());
    assert!(matches!(
        office.cosign(&a, &p01(), 7, 0).await,
        Err(CheckpointError::NoCheckpoint { .. })
    ));
    let (audit, listed) = verify_listing(&a, None).await;
    assert!(audit.ok(), "{:?}", audit.problems);
    assert_eq!(audit.partitions["01"].checkpoints, 2);
    assert_eq!(audit.partitions["01"].latest.as_ref(), listed.last());
    assert_eq!(
        listed.iter().map(|s| s.tree_size).collect::<Vec<_>>(),
        [6, 8]
    );
    assert_eq!(listed[0].cosigners.len(), 1);
    assert_eq!(listed[0].cosigners[0].cosigner_id, "audit-office:region-1");
    assert!(listed[1].cosigners.is_empty());
    // The key partition is checkpointed like any other once asked.
    for (partition, outcome) in c.checkpoint_all().await.unwrap() {
        outcome.unwrap_or_else(|e| panic!("{partition}: {e}"));
    }
    let audit = a.verify(None).await.unwrap();
    assert!(
        audit
            .partitions
            .contains_key(config.keys_partition.as_str())
    );
    // The proof of an event in the cosigned checkpoint carries the cosignature.
    let doc = a.prove(&p01(), 2, Some(6)).await.unwrap();
    assert_eq!(doc.checkpoint.cosignatures.len(), 1);
    let checked = check(&doc, &[c.key_id().to_string()]).unwrap();
    assert_eq!(
        checked.cosigners,
        [format!(
            "audit-office:region-1 (key {})",
            office.key.key_id()
        )]
    );
}

/// What an office cosigned before binds what it cosigns next (docs/PROOFS.md section
/// 7.6): the operator recreates the streams (fresh names, the same ledger key) with
/// event 2 changed and checkpoints the new log. An office that recomputed the root from
/// whatever the server shows would vouch for both heads; with its state file it
/// refuses the new log's checkpoint of the size it cosigned and of a larger one, both
/// as a fork, publishes nothing and keeps its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_refuses_a_log_rewritten_under_the_same_key() {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 0, 3).await;
    let cosigned = publish_now(&mut c).await;
    let mut office = Office::new("audit-office", 21, c.key_id());
    office
        .cosign(&auditor(&log, &config).await, &p01(), 3, 1)
        .await
        .unwrap();
    // The same events but the second, on fresh streams, signed by the same key,
    let (rewritten, rewritten_config) = fresh_checkpointed();
    let (other, _other_dir) = common::ledger(&rewritten).await;
    let texts = ["checkpointed", "rewritten", "checkpointed", "checkpointed"];
    for (i, text) in texts.iter().chain(&["checkpointed"]).enumerate() {
        other
            .append(note("01", &format!("k{i}"), text))
            .await
            .unwrap();
        if i == 2 {
            let mut c = checkpointer(&other, &rewritten_config, dir.path()).await;
            assert_eq!(publish_now(&mut c).await.tree_size, 3);
        }
    }
    let mut c = checkpointer(&other, &rewritten_config, dir.path()).await;
    let forked = publish_now(&mut c).await;
    assert_eq!(forked.tree_size, 5);
    let a = auditor(&rewritten, &rewritten_config).await;
    // refused at the size cosigned (another root) and at a larger one (no consistency),
    for size in [3, 5] {
        let refused = office.cosign(&a, &p01(), size, 2).await;
        match refused {
            Err(CheckpointError::CosignRefused(CosignRefusal::Forked {
                tree_size,
                ref cosigned_root,
                ref root_now,
                ..
            })) => {
                assert_eq!(tree_size, 3);
                assert_eq!(*cosigned_root, merkle::encode_hash(&cosigned.root));
                assert_ne!(root_now, cosigned_root);
            }
            other => panic!("size {size}: not refused as a fork: {other:?}"),
        }
    }
    // nothing is published, and the office's record is still the original checkpoint.
    let doc = a.prove(&p01(), 2, Some(5)).await.unwrap();
    assert!(doc.checkpoint.cosignatures.is_empty(), "{doc:?}");
    let last = office.state.last(&p01()).unwrap();
    assert_eq!((last.tree_size, last.root), (3, cosigned.root));
    // A fresh state (a new office) would trust the rewritten log on first use: the
    // state file is what holds the ledger to its history.
    let mut newcomer = Office::new("audit-office:new", 23, c.key_id());
    newcomer.cosign(&a, &p01(), 5, 3).await.unwrap();
    assert_ne!(forked.root, cosigned.root);
}

/// The normal path: an office cosigns 3, then 5 of the same log (the consistency proof
/// from 3 checks), and records each in its state file, in the documented form; the same
/// checkpoint again is cosigned again, and a checkpoint whose signer the office did not
/// pin is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_extends_what_it_cosigned_and_records_it() {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 0, 3).await;
    publish_now(&mut c).await;
    append(&ledger, 3, 2).await;
    let five = publish_now(&mut c).await;
    let a = auditor(&log, &config).await;
    let ledger_key = load_key(&dir.path().join(keys::LEDGER_KEY_FILE)).unwrap();
    let mut office = Office::new("audit-office", 24, &hex::encode(ledger_key.public_key()));
    office.cosign(&a, &p01(), 3, 1).await.unwrap();
    office.cosign(&a, &p01(), 5, 2).await.unwrap();
    office.cosign(&a, &p01(), 5, 3).await.unwrap();
    let last = office.state.last(&p01()).unwrap();
    assert_eq!((last.tree_size, last.root), (5, five.root));
    // The file says the same, in the form docs/PROOFS.md section 7.6 and its schema give,
    let path = office.state.path().to_path_buf();
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(file["format"], "ansinh/v1/cosigner-state");
    assert_eq!(file["partitions"]["01"]["tree_size"], 5);
    assert_eq!(
        file["partitions"]["01"]["root"],
        merkle::encode_hash(&five.root)
    );
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/cosigner-state.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&file)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{file:#}");
    // and its checkpoint, with the office's cosignature, checks offline.
    let document: proofs::CheckpointDocument =
        serde_json::from_value(file["partitions"]["01"]["checkpoint"].clone()).unwrap();
    let (body, cosigners) = document
        .check("state", &[c.key_id().to_string()], &Default::default())
        .unwrap();
    assert_eq!(body.tree_size, 5);
    assert_eq!(cosigners.unpinned.len(), 1);
    // A key the office pinned that is not the ledger's: refused, nothing recorded.
    let stranger = sign::KeyPair::from_seed(&[25; 32]);
    append(&ledger, 5, 1).await;
    publish_now(&mut c).await;
    office.trusted = vec![hex::encode(stranger.public_key())];
    assert!(matches!(
        office.cosign(&a, &p01(), 6, 4).await,
        Err(CheckpointError::CosignRefused(
            CosignRefusal::UntrustedSigner { .. }
        ))
    ));
    assert_eq!(office.state.last(&p01()).unwrap().tree_size, 5);
}

/// A log only grows: an office refuses a smaller checkpoint than one it cosigned, and
/// keeps its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_refuses_a_smaller_checkpoint_than_it_cosigned() {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 0, 3).await;
    publish_now(&mut c).await;
    append(&ledger, 3, 2).await;
    publish_now(&mut c).await;
    let a = auditor(&log, &config).await;
    let mut office = Office::new("audit-office", 22, c.key_id());
    office.cosign(&a, &p01(), 5, 1).await.unwrap();
    assert!(matches!(
        office.cosign(&a, &p01(), 3, 2).await,
        Err(CheckpointError::CosignRefused(CosignRefusal::Shrunk {
            cosigned_size: 5,
            tree_size: 3,
            ..
        }))
    ));
    assert_eq!(office.state.last(&p01()).unwrap().tree_size, 5);
}

/// A cosigner who cosigns a checkpoint again and again (or anyone who publishes more of
/// its cosignatures), and one key under two cosigner ids, are one cosigner: the proofs
/// carry the key's earliest cosignature and still check offline, and verify lists the
/// key once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_cosignatures_by_one_key_count_once_and_proofs_still_check() {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 0, 3).await;
    let signed = match c.checkpoint(&p01()).await.unwrap() {
        Outcome::Published(p) => p.signed,
        other => panic!("nothing published: {other:?}"),
    };
    // Given more cosignatures by one key than a document may carry, each signed at
    // another time (so no copy the server's dedupe window drops), and the same key
    // under a second cosigner id,
    let office = sign::KeyPair::from_seed(&[7; 32]);
    let js = jetstream::new(client().await);
    let first_at = 1_767_225_600_000;
    let mut cosignatures: Vec<proto::Cosignature> = (0..=proofs::COSIGNATURES_MAX as i64)
        .map(|i| sign::cosign(&office, "office-1", &signed.checkpoint, first_at + i).unwrap())
        .collect();
    cosignatures
        .push(sign::cosign(&office, "office-1-again", &signed.checkpoint, first_at).unwrap());
    for cosignature in cosignatures {
        publish_cosignature(&js, &config, &cosignature).await;
    }
    // when an auditor asks for proofs and verifies,
    let a = auditor(&log, &config).await;
    let trusted = [c.key_id().to_string()];
    let doc = a.prove(&p01(), 2, None).await.unwrap();
    let consistency = a.consistency(&p01(), 3, 3).await.unwrap();
    // then each document carries the key's earliest cosignature once, and checks;
    assert_eq!(doc.checkpoint.cosignatures.len(), 1);
    assert_eq!(
        (
            doc.checkpoint.cosignatures[0].cosigner_id.as_str(),
            doc.checkpoint.cosignatures[0].signed_at_unix_ms
        ),
        ("office-1", first_at)
    );
    let checked = check(&doc, &trusted).unwrap();
    assert_eq!(
        checked.cosigners,
        [format!("office-1 (key {})", office.key_id())]
    );
    check(&consistency, &trusted).unwrap();
    // and verify finds nothing wrong and lists the key once.
    let (audit, listed) = verify_listing(&a, Some(&p01())).await;
    assert!(audit.ok(), "{:?}", audit.problems);
    let cosigners = &listed[0].cosigners;
    assert_eq!(cosigners.len(), 1, "{cosigners:?}");
    assert_eq!(cosigners[0].key_id, office.key_id());
}

/// A cosignature names its own key and cosigner id, and a document carries at most 64:
/// whoever publishes 64 cosignatures by fresh keys before the real office's crowds it
/// out. An auditor who pins the office (`--cosigner`) gets it carried first, a check
/// that requires it refuses a document without it, and verify lists and requires it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_cosigner_is_carried_however_many_other_keys_cosigned_first() {
    use ansinh::checkpoint::proofs::CosignerPins;
    let (log, mut config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 0, 3).await;
    let signed = match c.checkpoint(&p01()).await.unwrap() {
        Outcome::Published(p) => p.signed,
        other => panic!("nothing published: {other:?}"),
    };
    // Given 64 cosignatures by keys nobody pinned, stored first,
    let js = jetstream::new(client().await);
    for i in 0..proofs::COSIGNATURES_MAX {
        let crowd = sign::KeyPair::from_seed(&[100 + i as u8; 32]);
        let cosignature =
            sign::cosign(&crowd, "audit-office:real", &signed.checkpoint, i as i64).unwrap();
        publish_cosignature(&js, &config, &cosignature).await;
    }
    // and then the real office's, which checked the checkpoint against the log,
    let mut real = Office::new("audit-office:real", 7, c.key_id());
    real.cosign(&auditor(&log, &config).await, &p01(), 3, 1_000)
        .await
        .unwrap();
    let office = &real.key;
    let office_pin = CosignerPins {
        keys: vec![hex::encode(office.public_key())],
        required: None,
    };
    let carries_office = |doc: &proofs::InclusionDocument| {
        doc.checkpoint
            .cosignatures
            .iter()
            .any(|c| c.key_id == office.key_id())
    };
    // unpinned, a proof carries the crowd only, and a check requiring the office fails;
    let crowded = auditor(&log, &config)
        .await
        .prove(&p01(), 2, None)
        .await
        .unwrap();
    assert_eq!(
        crowded.checkpoint.cosignatures.len(),
        proofs::COSIGNATURES_MAX
    );
    assert!(!carries_office(&crowded));
    let json = |doc: &proofs::InclusionDocument| serde_json::to_vec(doc).unwrap();
    assert!(matches!(
        proofs::check_document_pinned(&json(&crowded), &[], &office_pin),
        Err(CheckError::CosignersMissing {
            found: 0,
            required: 1,
            ..
        })
    ));
    // pinned, it is carried first and the check marks every other cosigner unpinned;
    config.cosigners = office_pin.clone();
    let pinned = auditor(&log, &config)
        .await
        .prove(&p01(), 2, None)
        .await
        .unwrap();
    assert_eq!(
        pinned.checkpoint.cosignatures.len(),
        proofs::COSIGNATURES_MAX
    );
    assert_eq!(pinned.checkpoint.cosignatures[0].key_id, office.key_id());
    let checked = proofs::check_document_pinned(&json(&pinned), &[], &office_pin).unwrap();
    assert_eq!(
        checked.unpinned_cosigners.len(),
        proofs::COSIGNATURES_MAX - 1
    );
    assert!(
        !checked
            .unpinned_cosigners
            .iter()
            .any(|c| c.contains(office.key_id()))
    );
    // and verify lists the office, pinned, and passes;
    let (audit, listed) = verify_listing(&auditor(&log, &config).await, Some(&p01())).await;
    assert!(audit.ok(), "{:?}", audit.problems);
    let listed = &listed[0].cosigners;
    assert!(
        listed[0].pinned && listed[0].key_id == office.key_id(),
        "{listed:?}"
    );
    // a pinned cosigner that never cosigned makes verify fail on the latest checkpoint.
    config.cosigners = CosignerPins {
        keys: vec![hex::encode(sign::KeyPair::from_seed(&[8; 32]).public_key())],
        required: None,
    };
    let audit = auditor(&log, &config)
        .await
        .verify(Some(&p01()))
        .await
        .unwrap();
    assert!(
        audit.problems.iter().any(|p| p
            .problem
            .contains("cosigned by 0 of the pinned cosigners, 1 required")),
        "{:?}",
        audit.problems
    );
}

/// With pinned cosigners, every partition that has events must have a latest checkpoint
/// they cosigned (docs/PROOFS.md section 8): one with events and no checkpoint at all is
/// a problem too, whether named with `--partition` or found in the log, never an OK
/// because there was nothing to require cosignatures of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_cosigners_are_required_of_a_partition_with_events_and_no_checkpoint() {
    use ansinh::checkpoint::proofs::CosignerPins;
    let (log, mut config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    append(&ledger, 0, 2).await;
    // The key partition has its checkpoint (cosigned below); 01 has none.
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    let keys = match c.checkpoint(&config.keys_partition).await.unwrap() {
        Outcome::Published(p) => p.body,
        other => panic!("nothing published: {other:?}"),
    };
    let mut office = Office::new("audit-office:region-1", 12, c.key_id());
    office
        .cosign(
            &auditor(&log, &config).await,
            &config.keys_partition,
            keys.tree_size,
            1,
        )
        .await
        .unwrap();
    config.cosigners = CosignerPins {
        keys: vec![hex::encode(office.key.public_key())],
        required: None,
    };
    let a = auditor(&log, &config).await;
    for only in [Some(p01()), None] {
        let audit = a.verify(only.as_ref()).await.unwrap();
        assert!(!audit.ok(), "{only:?}: {audit:?}");
        let about_01: Vec<&str> = audit
            .problems
            .iter()
            .filter(|p| p.partition == "01")
            .map(|p| p.problem.as_str())
            .collect();
        assert_eq!(about_01.len(), 1, "{only:?}: {:?}", audit.problems);
        assert!(
            about_01[0].contains("no valid checkpoint")
                && about_01[0].contains("0 of the pinned cosigners, 1 required"),
            "{about_01:?}"
        );
        // The key partition's latest checkpoint is cosigned by the pinned office.
        assert!(
            !audit.problems.iter().any(|p| p.partition == "ledger-keys"),
            "{:?}",
            audit.problems
        );
    }
    // Without pins, a partition not yet checkpointed is no problem (its events are
    // UNCOVERED, which a periodic checkpointer makes normal).
    config.cosigners = CosignerPins::default();
    let audit = auditor(&log, &config).await.verify(None).await.unwrap();
    assert!(audit.ok(), "{:?}", audit.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_carry_the_cosignatures_stored_after_their_checkpoint_and_still_check() {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let hashes = append(&ledger, 0, 3).await;
    // Given a checkpoint the ledger's key signed, cosigned before it was stored (only
    // one who held the signed bytes before publication could), then published,
    let _c = checkpointer(&ledger, &config, dir.path()).await;
    let key = load_key(&dir.path().join(keys::LEDGER_KEY_FILE)).unwrap();
    let body = CheckpointBody {
        partition: p01(),
        tree_size: 3,
        root: merkle::root(&hashes),
        head_sequence: 3,
        head_hash: hashes[2],
        issued_at_unix_ms: ansinh::checkpoint::now_unix_ms(),
        key_id: key.key_id().into(),
    };
    let signed = sign::sign_checkpoint(&key, &body);
    let early = sign::KeyPair::from_seed(&[5; 32]);
    let js = jetstream::new(client().await);
    for (subject, payload) in [
        (
            config.cosignature_subject(&p01()),
            sign::cosign(&early, "office-early", &signed.checkpoint, 1)
                .unwrap()
                .encode_to_vec(),
        ),
        (config.checkpoint_subject(&p01()), signed.encode_to_vec()),
    ] {
        js.publish(subject, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // and cosigned after it was stored by an office that checked it against the log,
    let a = auditor(&log, &config).await;
    let mut after = Office::new("office-after", 6, &hex::encode(key.public_key()));
    after.cosign(&a, &p01(), 3, 2).await.unwrap();
    let office = &after.key;
    // when an auditor asks for proofs (which read the cosignatures after the checkpoint
    // only),
    let trusted = [hex::encode(key.public_key())];
    let inclusion = a.prove(&p01(), 2, None).await.unwrap();
    let consistency = a.consistency(&p01(), 3, 3).await.unwrap();
    // then they carry the one stored after it, and check offline;
    let carried: Vec<&str> = inclusion
        .checkpoint
        .cosignatures
        .iter()
        .map(|c| c.cosigner_id.as_str())
        .collect();
    assert_eq!(carried, ["office-after"]);
    assert_eq!(
        check(&inclusion, &trusted).unwrap().cosigners,
        [format!("office-after (key {})", office.key_id())]
    );
    assert_eq!(
        consistency.new_checkpoint.cosignatures.len(),
        1,
        "{consistency:?}"
    );
    check(&consistency, &trusted).unwrap();
    // and verify lists the same cosigners as the documents carry.
    let (audit, listed) = verify_listing(&a, Some(&p01())).await;
    let listed: Vec<&str> = listed[0]
        .cosigners
        .iter()
        .map(|c| c.cosigner_id.as_str())
        .collect();
    assert_eq!(listed, ["office-after"], "{:?}", audit.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_checkpoints_are_found_and_nothing_is_signed_over_them() {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    let hashes = append(&ledger, 0, 3).await;
    publish_now(&mut c).await;
    append(&ledger, 3, 2).await;
    // Someone with the ledger key signs a checkpoint whose root is not the log's.
    let key = load_key(&dir.path().join(keys::LEDGER_KEY_FILE)).unwrap();
    let forged = CheckpointBody {
        partition: p01(),
        tree_size: 5,
        root: [9u8; 32],
        head_sequence: 5,
        head_hash: [9u8; 32],
        issued_at_unix_ms: ansinh::checkpoint::now_unix_ms(),
        key_id: key.key_id().into(),
    };
    publish_checkpoint(&config, &key, &forged).await;
    // And someone without it signs one with the right root.
    let stranger = sign::KeyPair::from_seed(&[3u8; 32]);
    let mut right = forged.clone();
    right.tree_size = 3;
    right.head_sequence = 3;
    right.root = merkle::root(&hashes);
    right.head_hash = hashes[2];
    right.key_id = stranger.key_id().into();
    publish_checkpoint(&config, &stranger, &right).await;
    let a = auditor(&log, &config).await;
    let audit = a.verify(Some(&p01())).await.unwrap();
    assert!(!audit.ok());
    let problems: Vec<&str> = audit.problems.iter().map(|p| p.problem.as_str()).collect();
    assert!(
        problems.iter().any(|p| p.contains("root differs")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("never a ledger key")),
        "{problems:?}"
    );
    // Each problem names the message it is about (a key error included).
    assert!(
        audit.problems.iter().all(|p| p.stream_sequence > 0),
        "{:?}",
        audit.problems
    );
    assert_eq!(
        verify_listing(&a, None)
            .await
            .1
            .iter()
            .map(|s| s.tree_size)
            .collect::<Vec<_>>(),
        [3],
        "only the genuine checkpoint is listed"
    );
    assert_eq!(audit.partitions["01"].checkpoints, 1);
    // A cosigner refuses the forged checkpoint.
    let mut office = Office::new("audit-office", 4, c.key_id());
    assert!(matches!(
        office.cosign(&a, &p01(), 5, 0).await,
        Err(CheckpointError::Fork { .. })
    ));
    // A fresh checkpointer passes over the stranger's message (not the ledger's), finds
    // the forgery the ledger's key signed, and signs nothing more for the partition.
    let mut fresh_checkpointer = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 5, 1).await;
    assert!(matches!(
        fresh_checkpointer.checkpoint(&p01()).await,
        Err(CheckpointError::Fork { tree_size: 5, .. })
    ));
    // Other partitions are still checkpointed.
    ledger.append(note("02", "other", "fine")).await.unwrap();
    let outcomes = fresh_checkpointer.checkpoint_all().await.unwrap();
    let of = |name: &str| &outcomes.iter().find(|(p, _)| p.as_str() == name).unwrap().1;
    assert!(of("01").is_err());
    assert!(matches!(of("02"), Ok(Outcome::Published(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_is_an_event_and_both_keys_keep_verifying() {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    let old_id = c.key_id().to_string();
    let old_key = load_key(&dir.path().join(keys::LEDGER_KEY_FILE)).unwrap();
    append(&ledger, 0, 3).await;
    assert_eq!(publish_now(&mut c).await.key_id, old_id);
    let (rotated_from, new_id) = rotate_key(&ledger, &config, dir.path()).await.unwrap();
    assert_eq!(rotated_from, old_id);
    assert_ne!(new_id, old_id);
    assert!(!dir.path().join(keys::NEXT_LEDGER_KEY_FILE).exists());
    let a = auditor(&log, &config).await;
    let ring = a.key_ring().await.unwrap();
    assert_eq!(
        ring.keys()
            .iter()
            .map(|k| k.key_id.as_str())
            .collect::<Vec<_>>(),
        [old_id.as_str(), new_id.as_str()]
    );
    // The running checkpointer notices the rotation and signs with the new key.
    append(&ledger, 3, 2).await;
    assert_eq!(publish_now(&mut c).await.key_id, new_id);
    let audit = a.verify(None).await.unwrap();
    assert!(audit.ok(), "{:?}", audit.problems);
    assert_eq!(audit.keys, [old_id.clone(), new_id.clone()]);
    let both = vec![old_id.clone(), new_id.clone()];
    let old_proof = a.prove(&p01(), 2, Some(3)).await.unwrap();
    assert_eq!(old_proof.checkpoint.key_id, old_id);
    check(&old_proof, &both).unwrap();
    assert!(matches!(
        check(&old_proof, std::slice::from_ref(&new_id)),
        Err(CheckError::Untrusted(_))
    ));
    let new_proof = a.prove(&p01(), 5, None).await.unwrap();
    assert_eq!(new_proof.checkpoint.key_id, new_id);
    check(&new_proof, &both).unwrap();
    let across = a.consistency(&p01(), 3, 5).await.unwrap();
    assert_eq!(check(&across, &both).unwrap().key_ids, both);
    // The retired key can no longer sign: a checkpoint it signs now is reported.
    append(&ledger, 5, 1).await;
    let late = CheckpointBody {
        partition: p01(),
        tree_size: 6,
        root: [1u8; 32],
        head_sequence: 6,
        head_hash: [1u8; 32],
        issued_at_unix_ms: ansinh::checkpoint::now_unix_ms() + 1,
        key_id: old_id.clone(),
    };
    publish_checkpoint(&config, &old_key, &late).await;
    let audit = a.verify(None).await.unwrap();
    assert!(
        audit
            .problems
            .iter()
            .any(|p| p.problem.contains("retired") && p.stream_sequence > 0),
        "{:?}",
        audit.problems
    );
    // A checkpointer with a stale key file is refused.
    let stale_dir = tempfile::tempdir().unwrap();
    keys::write_key_file(&stale_dir.path().join(keys::LEDGER_KEY_FILE), &old_key).unwrap();
    assert!(matches!(
        Checkpointer::open(
            client().await,
            ledger.clone(),
            config.clone(),
            stale_dir.path()
        )
        .await,
        Err(CheckpointError::KeyNotRegistered { .. })
    ));
}

/// The key that signs is the key ring's last, not whatever message ends the key
/// partition: a note there, or a foreign message every reader holds, stops no partition's
/// checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_go_on_whatever_follows_the_last_key_event_in_the_key_partition() {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    let key_id = c.key_id().to_string();
    // Given a note after the key event (the ledger appends one to any partition),
    ledger
        .append(note(
            config.keys_partition.as_str(),
            "ops-1",
            "key ceremony done",
        ))
        .await
        .unwrap();
    append(&ledger, 0, 2).await;
    // when partition 01 is checkpointed, then the ring's current key signs it.
    assert_eq!(publish_now(&mut c).await.key_id, key_id);
    // Given a foreign message at the key partition's tail, which readers hold,
    jetstream::new(client().await)
        .publish(
            log.subject(&config.keys_partition),
            b"not the ledger's".to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    append(&ledger, 2, 1).await;
    // then this checkpointer and a fresh one still checkpoint 01.
    assert_eq!(publish_now(&mut c).await.tree_size, 3);
    let mut fresh = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 3, 1).await;
    assert_eq!(publish_now(&mut fresh).await.tree_size, 4);
}

/// A rotation that continues the key partition's chain but that no ledger key signed
/// (anyone who may publish on the log and reads it can make one) is held like a foreign
/// message by every reader: checkpointers still open and sign, verify names it held, the
/// writer appends nothing after it but the operator's exclusion, and after that
/// exclusion the key history, rotations and checkpoints go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_key_rotation_is_held_until_excluded_and_the_key_history_goes_on() {
    use ansinh::verify::{VerifyError, verify};
    let (log, config) = fresh_checkpointed();
    let keys_partition = config.keys_partition.clone();
    let (ledger, dir) = ledger(&log).await;
    let c = checkpointer(&ledger, &config, dir.path()).await;
    let first_id = c.key_id().to_string();
    drop(c);
    append(&ledger, 0, 2).await;
    // Given a rotation to a key of nobody's, continuing the key partition's head,
    let head = verify(
        &mut stream_of(&log).await,
        &log,
        &keys_partition,
        Some(&keys_partition),
        |_| {},
    )
    .await
    .unwrap()
    .partitions[keys_partition.as_str()]
    .clone();
    let forged = proto::Envelope {
        format_version: 1,
        partition: keys_partition.to_string(),
        sequence: head.events + 1,
        prev_hash: head.head.0.to_vec().into(),
        payload: Some(proto::envelope::Payload::LedgerKeyRotated(
            proto::LedgerKeyRotated {
                key_id: "0000000000000000".into(),
                public_key: vec![0; 32].into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
    .encode_to_vec();
    let forged_at = jetstream::new(client().await)
        .publish(log.subject(&keys_partition), forged.clone().into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    // then a checkpointer opens (serve can start) and signs with the ledger's key,
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    assert_eq!(publish_now(&mut c).await.key_id, first_id);
    // verify names the rotation held where it is,
    let verdict = verify(
        &mut stream_of(&log).await,
        &log,
        &keys_partition,
        None,
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&verdict, VerifyError::Broken { partition, stream_sequence, cause: ansinh::chain::ChainBreak::NotTheLedgers(_), .. }
            if *partition == keys_partition.as_str() && *stream_sequence == forged_at),
        "{verdict}"
    );
    // and the writer appends nothing after it.
    assert!(
        ledger
            .append(note(
                keys_partition.as_str(),
                "after-forged",
                "key ceremony"
            ))
            .await
            .is_err()
    );
    // When the operator excludes it,
    let key = load_key(&dir.path().join(keys::LEDGER_KEY_FILE)).unwrap();
    exclude_run(&ledger, &keys_partition, &key, &[(forged_at, &forged)]).await;
    // then verify passes over it, the key can be rotated, and every partition is
    // checkpointed with the new key, the key partition too.
    let report = verify(
        &mut stream_of(&log).await,
        &log,
        &keys_partition,
        None,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.exclusions.len(), 1);
    drop(c);
    let (_, new_id) = rotate_key(&ledger, &config, dir.path()).await.unwrap();
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    assert_eq!(c.key_id(), new_id);
    append(&ledger, 2, 1).await;
    let body = publish_now(&mut c).await;
    assert_eq!((body.tree_size, body.key_id.as_str()), (3, new_id.as_str()));
    assert!(matches!(
        c.checkpoint(&keys_partition).await,
        Ok(Outcome::Published(_))
    ));
    let a = auditor(&log, &config).await;
    assert_eq!(a.key_ring().await.unwrap().keys().len(), 2);
    let audit = a.verify(None).await.unwrap();
    assert!(audit.ok(), "{:?}", audit.problems);
    // The projections stop and go on at the same places: their head of the key
    // partition is verify's.
    let report = verify(
        &mut stream_of(&log).await,
        &log,
        &keys_partition,
        None,
        |_| {},
    )
    .await
    .unwrap();
    let db = sled::Config::new().temporary(true).open().unwrap();
    let projector = ansinh::projection::Projector::scratch(&db).unwrap();
    projector
        .catch_up(&mut stream_of(&log).await, &log)
        .await
        .unwrap();
    let summary = projector.summary(keys_partition.as_str()).unwrap().unwrap();
    assert_eq!(
        summary.head_sequence,
        report.partitions[keys_partition.as_str()].events
    );
    assert_eq!(
        summary.head_hash,
        report.partitions[keys_partition.as_str()].head.to_hex()
    );
}

/// A checkpoint issued after its key was retired (signed while another process rotated
/// the key) is invalid for ever, since the stream keeps it: a checkpointer that starts
/// later reports it and builds past it, fenced on it, instead of refusing the partition
/// on every attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_signed_by_a_key_retired_meanwhile_does_not_stop_the_partition() {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let c = checkpointer(&ledger, &config, dir.path()).await;
    let old_key = load_key(&dir.path().join(keys::LEDGER_KEY_FILE)).unwrap();
    let hashes = append(&ledger, 0, 3).await;
    drop(c);
    rotate_key(&ledger, &config, dir.path()).await.unwrap();
    let a = auditor(&log, &config).await;
    let retired_at = a.key_ring().await.unwrap().keys()[0]
        .retired_at_unix_ms
        .unwrap();
    // Given a checkpoint of 01 that matches the log, signed by the old key 1 ms after
    // its retirement: what a checkpointer that read the key before the rotation was
    // stored publishes,
    let late = CheckpointBody {
        partition: p01(),
        tree_size: 3,
        root: merkle::root(&hashes),
        head_sequence: 3,
        head_hash: hashes[2],
        issued_at_unix_ms: retired_at + 1,
        key_id: old_key.key_id().into(),
    };
    let late_at = publish_checkpoint(&config, &old_key, &late).await;
    // when a checkpointer starts with the new key and the partition grows,
    let mut fresh = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 3, 1).await;
    let published = match fresh.checkpoint(&p01()).await.expect("checkpoint") {
        Outcome::Published(p) => p,
        other => panic!("nothing published: {other:?}"),
    };
    // then it publishes after the late checkpoint, and verify still reports that one.
    assert_eq!(published.body.tree_size, 4);
    assert!(published.stream_sequence > late_at);
    assert!(matches!(
        fresh.checkpoint(&p01()).await,
        Ok(Outcome::Unchanged { tree_size: 4 })
    ));
    let audit = a.verify(Some(&p01())).await.unwrap();
    assert_eq!(audit.problems.len(), 1, "{:?}", audit.problems);
    assert!(
        audit.problems[0].problem.contains("retired"),
        "{:?}",
        audit.problems
    );
}

/// The binary end to end on its embedded server, and check-proof with no server at all.
#[test]
fn cli_checkpoint_prove_cosign_verify_and_offline_check() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ansinh"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env_remove("ANSINH_NATS_URL")
            .output()
            .expect("run ansinh");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for i in 0..3 {
        let key = format!("n{i}");
        let (code, out, err) = run(&[
            "note",
            "--partition",
            "01",
            "--text",
            "x",
            "--idempotency-key",
            &key,
        ]);
        assert_eq!(code, Some(0), "{out}{err}");
    }
    let (code, out, err) = run(&["audit", "checkpoint", "--partition", "01"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("CHECKPOINT partition 01: 3 events"), "{out}");
    let (code, proof, err) = run(&["audit", "prove", "--partition", "01", "--seq", "2"]);
    assert_eq!(code, Some(0), "{err}");
    let key_file = dir.path().join("office.key");
    let state_file = dir.path().join("office.cosigner-state.json");
    // The ledger's key, pinned from a file holding it (as `audit checkpoint --json`
    // prints it).
    let proof_document: serde_json::Value = serde_json::from_str(&proof).unwrap();
    let trust_file = dir.path().join("ledger.pub");
    std::fs::write(
        &trust_file,
        format!(
            "{}\n",
            proof_document["checkpoint"]["public_key"].as_str().unwrap()
        ),
    )
    .unwrap();
    let cosign = |trust: &str, more: &[&str]| {
        let mut args = vec![
            "audit",
            "cosign",
            "--partition",
            "01",
            "--size",
            "3",
            "--cosigner-id",
            "office-1",
            "--key",
            key_file.to_str().unwrap(),
            "--state",
            state_file.to_str().unwrap(),
            "--trust",
            trust,
        ];
        args.extend(more);
        run(&args)
    };
    let (code, out, err) = cosign(trust_file.to_str().unwrap(), &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with("COSIGNED partition 01: the checkpoint of 3 events matches the log; the partition's first checkpoint in ")
            && out.contains("trusted on first use"),
        "{out}"
    );
    let ledger_public_key = proof_document["checkpoint"]["public_key"].as_str().unwrap();
    let (code, out, err) = cosign(ledger_public_key, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("it is the one you cosigned last"), "{out}");
    // A signer the office did not pin: refused, exit 1, in words or as JSON.
    let stranger = hex::encode(sign::KeyPair::from_seed(&[31; 32]).public_key());
    let (code, out, err) = cosign(&stranger, &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.starts_with("REFUSED partition 01: the checkpoint is signed by key "),
        "{out}"
    );
    let (code, out, err) = cosign(&stranger, &["--json"]);
    assert_eq!(code, Some(1), "{out}{err}");
    let refused: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&refused["kind"], &refused["partition"], &refused["pinned"]),
        (
            &serde_json::json!("UntrustedSigner"),
            &serde_json::json!("01"),
            &serde_json::json!(stranger)
        ),
        "{refused}"
    );
    // Neither pin nor state may be left out.
    let (code, out, err) = run(&[
        "audit",
        "cosign",
        "--partition",
        "01",
        "--size",
        "3",
        "--cosigner-id",
        "office-1",
        "--key",
        key_file.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("--state") && err.contains("--trust"), "{err}");
    // Events no checkpoint covers yet: two past partition 01's, and a partition never
    // checkpointed.
    for (partition, key) in [("01", "n3"), ("01", "n4"), ("02", "m0")] {
        let (code, out, err) = run(&[
            "note",
            "--partition",
            partition,
            "--text",
            "x",
            "--idempotency-key",
            key,
        ]);
        assert_eq!(code, Some(0), "{out}{err}");
    }
    let (code, out, err) = run(&["audit", "verify"]);
    // They pass (a checkpointer runs periodically), but each partition says so.
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(
            "UNCOVERED partition 01: events 4..5 not yet under a checkpoint (the latest valid one covers 3)"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "UNCOVERED partition 02: event 1 not yet under a checkpoint (the partition has no valid checkpoint)"
        ),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("OK 1 checkpoints match the log; ")
                && l.contains("not yet under one")),
        "{out}"
    );
    let (code, verdict, err) = run(&["audit", "verify", "--json"]);
    assert_eq!(code, Some(0), "{verdict}{err}");
    let verdict: serde_json::Value = serde_json::from_str(&verdict).unwrap();
    let uncovered = verdict["uncovered"].as_array().expect("uncovered listed");
    assert!(
        uncovered.contains(&serde_json::json!(
            {"partition": "01", "checkpointed": 3, "first": 4, "last": 5}
        )),
        "{verdict}"
    );
    assert!(
        uncovered.contains(&serde_json::json!(
            {"partition": "02", "checkpointed": 0, "first": 1, "last": 1}
        )),
        "{verdict}"
    );
    // One summary line per partition by default ...
    assert!(
        out.contains("CHECKPOINTS partition 01: 1 checkpoints, latest size 3"),
        "{out}"
    );
    assert!(
        out.contains("cosigned by 1 distinct key: office-1 (key "),
        "{out}"
    );
    assert!(!out.contains("CHECKPOINT partition 01 size 3"), "{out}");
    // ... and every checkpoint with --checkpoints.
    let (code, out, err) = run(&["audit", "verify", "--checkpoints"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("CHECKPOINT partition 01 size 3"), "{out}");
    assert!(
        out.contains("cosigned by 1 distinct key: office-1 (key "),
        "{out}"
    );
    // One JSON document cannot hold every checkpoint: the listing is for people.
    for args in [
        ["audit", "verify", "--checkpoints", "--json"],
        ["--json", "audit", "verify", "--checkpoints"],
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, Some(2), "{out}{err}");
        assert!(
            out.contains("--checkpoints") || err.contains("--checkpoints"),
            "{out}{err}"
        );
    }
    // A partition the log has never seen is not a clean audit of nothing.
    let (code, out, err) = run(&["audit", "verify", "--partition", "99"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("the log has no partition 99"), "{out}");
    // Offline: a named server binary that does not exist proves none is started.
    let file = dir.path().join("proof.json");
    std::fs::write(&file, &proof).unwrap();
    let offline = |file: &std::path::Path, more: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ansinh"))
            .args(["audit", "check-proof"])
            .arg(file)
            .args(more)
            .env("ANSINH_NATS_SERVER", "/nonexistent/nats-server")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // Without a pinned key it checks, but only against the key it carries: not OK.
    let (code, out) = offline(&file, &[]);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.starts_with("UNANCHORED event 2 of partition 01"),
        "{out}"
    );
    assert!(!out.lines().any(|l| l.starts_with("OK")), "{out}");
    let (code, out) = offline(&file, &["--json"]);
    assert_eq!(code, Some(3), "{out}");
    let verdict: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&verdict["ok"], &verdict["verdict"], &verdict["keys_pinned"]),
        (
            &serde_json::json!(false),
            &serde_json::json!("unanchored"),
            &serde_json::json!(false)
        ),
        "{verdict}"
    );
    let document: serde_json::Value = serde_json::from_str(&proof).unwrap();
    let ledger_key = document["checkpoint"]["public_key"].as_str().unwrap();
    let (code, out) = offline(&file, &["--trust", ledger_key]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("OK event 2 of partition 01"), "{out}");
    // The proof was made before office-1 cosigned: it carries no cosigner, so pinning
    // one is refused, and a proof made now carries office-1, shown as pinned or not.
    let office = keys::load_key(&key_file).unwrap();
    let office_pin = hex::encode(office.public_key());
    let (code, out) = offline(&file, &["--trust", ledger_key, "--cosigner", &office_pin]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("cosigned by 0 of the pinned cosigners, 1 required"),
        "{out}"
    );
    let (code, cosigned, err) = run(&["audit", "prove", "--partition", "01", "--seq", "2"]);
    assert_eq!(code, Some(0), "{err}");
    let cosigned_file = dir.path().join("cosigned.json");
    std::fs::write(&cosigned_file, &cosigned).unwrap();
    let (code, out) = offline(&cosigned_file, &["--trust", ledger_key]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("\nUNPINNED cosigned by office-1 (key "),
        "{out}"
    );
    let (code, out) = offline(
        &cosigned_file,
        &["--trust", ledger_key, "--cosigner", &office_pin],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("\nOK cosigned by office-1 (key "), "{out}");
    let mut doc: serde_json::Value = serde_json::from_str(&proof).unwrap();
    let mut flipped = doc["proof"]["root"].as_str().unwrap().to_string();
    flip(&mut flipped, 0);
    doc["proof"]["root"] = flipped.into();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&doc).unwrap()).unwrap();
    let (code, out) = offline(&bad, &["--trust", ledger_key]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("REJECTED"), "{out}");
    // `audit checkpoint --json` prints what docs/PROOFS.md section 8 and its schema say.
    let schema = |name: &str| -> serde_json::Value {
        let path = format!("{}/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let matches = |schema: &serde_json::Value, doc: &serde_json::Value| {
        let validator = jsonschema::draft202012::new(schema).unwrap();
        let errors: Vec<String> = validator.iter_errors(doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{doc:#}");
    };
    let (code, out, err) = run(&["--json", "audit", "checkpoint"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let published: serde_json::Value = serde_json::from_str(&out).unwrap();
    matches(&schema("checkpoint-list.schema.json"), &published);
    // One document a partition with events past its latest checkpoint (01, 02 and the
    // key partition), each a checkpoint document,
    let documents = published.as_array().unwrap();
    let partitions: Vec<&str> = documents
        .iter()
        .map(|d| d["decoded"]["partition"].as_str().unwrap())
        .collect();
    assert_eq!(partitions, ["01", "02", "ledger-keys"], "{published:#}");
    for document in documents {
        matches(&schema("checkpoint.schema.json"), document);
    }
    // and none when every partition's latest checkpoint is current.
    let (code, out, err) = run(&["--json", "audit", "checkpoint"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let published: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(published, serde_json::json!([]));
    matches(&schema("checkpoint-list.schema.json"), &published);
}

/// Two ledger processes, each with its own data directory, sign with the one key their
/// vault holds: both start (the second no longer exits on "not the ledger's key"), they
/// checkpoint one partition turn about and at once, and the checkpoint stream holds no
/// two checkpoints of one size, all verifying; a rotation through one is followed by
/// the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sign_with_the_vaults_key_and_never_two_checkpoints_of_one_size() {
    use ansinh::checkpoint::checkpointer::KeyHome;
    use std::sync::Arc;
    let (log, config) = fresh_checkpointed();
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let (a, b) = (ledger_at(&log, &a_dir).await, ledger_at(&log, &b_dir).await);
    // Process A's directory holds a key file of an earlier version: it becomes the
    // vault's key, so the checkpoints it signed before keep their signer.
    let legacy = ansinh::checkpoint::sign::KeyPair::from_seed(&[7u8; 32]);
    keys::write_key_file(&a_dir.join(keys::LEDGER_KEY_FILE), &legacy).unwrap();
    let home = |ledger: &Ledger, legacy_dir: &std::path::Path| {
        let (ledger, legacy_dir, secrets) =
            (ledger.clone(), legacy_dir.to_path_buf(), secrets.clone());
        async move {
            KeyHome::Vault {
                vault: Arc::new(vault_for(&ledger, &secrets).await),
                legacy_dir,
            }
        }
    };
    let mut ca = Checkpointer::open(
        client().await,
        a.clone(),
        config.clone(),
        home(&a, &a_dir).await,
    )
    .await
    .unwrap();
    let mut cb = Checkpointer::open(
        client().await,
        b.clone(),
        config.clone(),
        home(&b, &b_dir).await,
    )
    .await
    .unwrap();
    assert_eq!(ca.key_id(), legacy.key_id());
    assert_eq!(cb.key_id(), legacy.key_id());
    let mut appended = 0;
    for round in 0..10u64 {
        let ledger = if round % 2 == 0 { &a } else { &b };
        append(ledger, appended, 3).await;
        appended += 3;
        // Both at once: one publishes, the other finds it raced or nothing new.
        let p = p01();
        let (ra, rb) = tokio::join!(ca.checkpoint(&p), cb.checkpoint(&p));
        let published = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, Ok(Outcome::Published(_))))
            .count();
        assert!(published <= 1, "round {round}: {ra:?} {rb:?}");
        if round == 4 {
            let (_, new_id) = rotate_key(&a, &config, home(&a, &a_dir).await)
                .await
                .unwrap();
            assert_ne!(new_id, legacy.key_id());
        }
    }
    let (audit, listed) = verify_listing(&auditor(&log, &config).await, None).await;
    assert!(audit.ok(), "{:?}", audit.problems);
    let sizes: Vec<u64> = listed.iter().map(|c| c.tree_size).collect();
    let mut unique = sizes.clone();
    unique.dedup();
    assert_eq!(sizes, unique, "never two checkpoints of one size");
    assert!(sizes.len() >= 5, "{sizes:?}");
    assert_eq!(audit.keys.len(), 2, "the legacy key, then the rotated one");
    // B signed with the new key after A rotated it.
    assert!(listed.last().unwrap().key_id == audit.keys[1]);
}

/// Two checkpointers (two `serve` processes) that sign at the same trigger: the one
/// whose publish loses the fence keeps its frontier, takes the winner's checkpoint as
/// the latest, and its next checkpoint reads only the events added since, not the
/// partition from its start; nor does it sign again before the next trigger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpointer_that_loses_a_race_keeps_its_frontier() {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut a = checkpointer(&ledger, &config, dir.path()).await;
    let mut b = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 0, 5).await;
    assert_eq!(publish_now(&mut a).await.tree_size, 5);
    assert!(matches!(
        b.checkpoint(&p01()).await,
        Ok(Outcome::Unchanged { tree_size: 5 })
    ));
    // Given both at 5, when 5 more events come and A publishes first,
    append(&ledger, 5, 5).await;
    assert_eq!(publish_now(&mut a).await.tree_size, 10);
    // then B's publish of the same size loses, and B knows A's checkpoint as the latest.
    let lost = b.checkpoint(&p01()).await;
    assert!(
        matches!(lost, Err(CheckpointError::Raced { .. })),
        "{lost:?}"
    );
    assert_eq!(b.checkpointed_size(&p01()), 10);
    assert!(matches!(
        b.checkpoint(&p01()).await,
        Ok(Outcome::Unchanged { tree_size: 10 })
    ));
    // At the next event B reads that event only, and signs over A's checkpoint.
    let read_before = b.events_read();
    append(&ledger, 10, 1).await;
    assert_eq!(publish_now(&mut b).await.tree_size, 11);
    assert_eq!(b.events_read() - read_before, 1);
    let (audit, listed) = verify_listing(&auditor(&log, &config).await, Some(&p01())).await;
    assert!(audit.ok(), "{:?}", audit.problems);
    let sizes: Vec<u64> = listed.iter().map(|c| c.tree_size).collect();
    assert_eq!(sizes, [5, 10, 11], "no checkpoint more than the triggers'");
}

/// `GET /v1/audit/partitions/{p}/status`: the head the projections verified, the latest
/// checkpoint with the cosigner who signed it, and the read model's lag; a partition the
/// log has never seen is 404, and the route wants a token. The inclusion and consistency
/// proofs served beside it check offline, and malformed or impossible asks are refused.
#[tokio::test]
async fn the_audit_status_route_names_the_latest_checkpoint_and_its_cosigners() {
    use ansinh::http::{self, Api, StaffDirectory};
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 0, 6).await;
    let first = publish_now(&mut c).await;
    append(&ledger, 6, 2).await;
    let latest = publish_now(&mut c).await;
    let (key, _) = keys::load_or_create_key(&dir.path().join("office.key")).unwrap();
    let mut office = Office::with_key("audit-office:region-1", key, c.key_id());
    office
        .cosign(
            &auditor(&log, &config).await,
            &p01(),
            latest.tree_size,
            1_767_225_600_000,
        )
        .await
        .unwrap();
    // A cosignature of the earlier checkpoint, stored after the latest one: not the
    // latest's.
    let (key, _) = keys::load_or_create_key(&dir.path().join("late.key")).unwrap();
    let mut late = Office::with_key("audit-office:late", key, c.key_id());
    late.cosign(
        &auditor(&log, &config).await,
        &p01(),
        first.tree_size,
        1_767_225_600_000,
    )
    .await
    .unwrap();

    let vault = vault_for(&ledger, &dir.path().join("secrets")).await;
    let projector = ansinh::projection::Projector::of_store(ledger.store()).unwrap();
    let service = ansinh::service::Service::new(
        ledger.clone(),
        std::sync::Arc::new(vault),
        std::sync::Arc::new(projector),
    );
    let staff = dir.path().join(http::STAFF_FILE);
    let token =
        http::auth::add_staff(&staff, "staff:auditor", ansinh::access::Role::Auditor, "").unwrap();
    let api = Api::new(service, StaffDirectory::load(&staff).unwrap())
        .await
        .unwrap();
    api.set_checkpoints(config.clone());
    let (base, _stop) = common::serve(api).await;
    let client = reqwest::Client::new();
    let schemas = http::Schemas::compile();
    let get = |path: &str, token: Option<&str>| {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let schemas = &schemas;
        async move {
            schema_checked(
                schemas,
                request.send().await.unwrap(),
                "audit-status.response",
            )
            .await
        }
    };
    let (status, body) = get("/v1/audit/partitions/01/status", Some(&token)).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(
        (
            &body["events"],
            &body["head_sequence"],
            &body["checkpoints"]
        ),
        (
            &serde_json::json!(8),
            &serde_json::json!(8),
            &serde_json::json!(2)
        ),
        "{body}"
    );
    let checkpoint = &body["latest_checkpoint"];
    assert_eq!(checkpoint["tree_size"], serde_json::json!(latest.tree_size));
    assert_eq!(
        checkpoint["root"],
        serde_json::json!(hex::encode(latest.root))
    );
    let cosigners: Vec<&str> = checkpoint["cosigners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cosigner_id"].as_str().unwrap())
        .collect();
    assert_eq!(cosigners, ["audit-office:region-1"], "{body}");
    assert!(
        body["projected_stream_sequence"].as_u64() <= body["stream_last_sequence"].as_u64(),
        "{body}"
    );
    assert_eq!(
        body["latest_checkpoint_problem"],
        serde_json::Value::Null,
        "{body}"
    );
    // A message on the checkpoint subject that no ledger key signed: the status says so,
    // instead of showing it as the latest checkpoint or hiding it.
    async_nats::jetstream::new(common::client().await)
        .publish(
            config.checkpoint_subject(&p01()),
            b"not a checkpoint".to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let (status, forged) = get("/v1/audit/partitions/01/status", Some(&token)).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{forged}");
    assert!(forged["latest_checkpoint_problem"].is_string(), "{forged}");
    assert_eq!(
        forged["latest_checkpoint"]["root"],
        serde_json::json!(hex::encode(latest.root)),
        "the latest valid checkpoint is still shown: {forged}"
    );
    // A checkpoint that decodes and is well signed, but by a key that was never the
    // ledger's: it is not the latest checkpoint either, however plausible it looks.
    let stranger = sign::KeyPair::from_seed(&[3u8; 32]);
    let strangers = CheckpointBody {
        root: [7u8; 32],
        head_hash: [7u8; 32],
        key_id: stranger.key_id().into(),
        ..latest.clone()
    };
    publish_checkpoint(&config, &stranger, &strangers).await;
    let (status, forged) = get("/v1/audit/partitions/01/status", Some(&token)).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{forged}");
    assert!(
        forged["latest_checkpoint_problem"]
            .as_str()
            .is_some_and(|p| p.contains("never a ledger key")),
        "{forged}"
    );
    assert_eq!(
        (
            &forged["latest_checkpoint"]["root"],
            &forged["latest_checkpoint"]["key_id"],
            &forged["latest_checkpoint"]["cosigners"][0]["cosigner_id"],
        ),
        (
            &serde_json::json!(hex::encode(latest.root)),
            &serde_json::json!(latest.key_id),
            &serde_json::json!("audit-office:region-1"),
        ),
        "{forged}"
    );
    // The count is of messages on the subject, as documented: two checkpoints, two not.
    assert_eq!(forged["checkpoints"], serde_json::json!(4), "{forged}");
    let (status, body) = get("/v1/audit/partitions/99/status", Some(&token)).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (404, Some("NotFound"))
    );
    let (status, _) = get("/v1/audit/partitions/01/status", None).await;
    assert_eq!(status.as_u16(), 401);

    // The proofs an auditor checks offline, served: the same documents as the CLI's.
    let proof = |path: String, schema: &'static str| {
        let request = client.get(format!("{base}{path}")).bearer_auth(&token);
        let schemas = &schemas;
        async move { schema_checked(schemas, request.send().await.unwrap(), schema).await }
    };
    let (status, inclusion) = proof(
        "/v1/audit/partitions/01/proofs/inclusion?seq=3".into(),
        "inclusion-proof",
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{inclusion}");
    check(&inclusion, &[]).expect("the served inclusion proof checks offline");
    let (status, consistency) = proof(
        format!(
            "/v1/audit/partitions/01/proofs/consistency?from=6&to={}",
            latest.tree_size
        ),
        "consistency-proof",
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{consistency}");
    check(&consistency, &[]).expect("the served consistency proof checks offline");
    for (path, code) in [
        ("/v1/audit/partitions/01/proofs/inclusion?seq=0", 400),
        ("/v1/audit/partitions/01/proofs/inclusion?seq=x", 400),
        (
            "/v1/audit/partitions/01/proofs/inclusion?seq=3&checkpoint_size=5",
            404,
        ),
        ("/v1/audit/partitions/99/proofs/inclusion?seq=1", 404),
        (
            "/v1/audit/partitions/01/proofs/consistency?from=8&to=6",
            400,
        ),
    ] {
        let (status, body) = proof(path.into(), "inclusion-proof").await;
        assert_eq!(status.as_u16(), code, "{path}: {body}");
    }
}

/// An exclusion of exactly what is held that no ledger key signed (anyone who may publish
/// on the log and reads it can make one) is held with what it names: verify stops at the
/// message, the writer appends nothing after it but the operator's exclusion, and nothing
/// past it is checkpointed. The operator's exclusion of the run, both messages, lets
/// every reader on: checkpoints, proofs and verify go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_exclusion_is_held_and_the_operators_exclusion_of_the_run_passes_over_it() {
    use ansinh::verify::{VerifyError, verify};
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 0, 3).await;
    publish_now(&mut c).await;
    // Given a foreign message and an exclusion of exactly it with a made-up signature,
    let forged = forge_an_exclusion(&ledger, &log, "01").await;
    // then verify stops at the foreign message, held with the exclusion,
    let verdict = verify(
        &mut stream_of(&log).await,
        &log,
        &config.keys_partition,
        None,
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&verdict, VerifyError::Broken { partition, stream_sequence, .. }
            if partition == "01" && *stream_sequence == forged.foreign.0),
        "{verdict}"
    );
    // the writer appends nothing after them,
    assert!(
        ledger
            .append(note("01", "after-forged", "x"))
            .await
            .is_err()
    );
    // and no checkpoint covers the forged exclusion.
    assert!(matches!(
        c.checkpoint(&p01()).await,
        Ok(Outcome::Unchanged { tree_size: 3 })
    ));
    // When the operator excludes the run, both messages,
    let key = load_key(&dir.path().join(keys::LEDGER_KEY_FILE)).unwrap();
    exclude_run(
        &ledger,
        &p01(),
        &key,
        &[
            (forged.foreign.0, &forged.foreign.1),
            (forged.exclusion.0, &forged.exclusion.1),
        ],
    )
    .await;
    // then verify lists one exclusion of two messages,
    let report = verify(
        &mut stream_of(&log).await,
        &log,
        &config.keys_partition,
        None,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.exclusions_total, 1);
    assert_eq!(
        (
            report.exclusions[0].count,
            report.exclusions[0].through_stream_sequence
        ),
        (2, forged.exclusion.0)
    );
    // appends go on, and partition 01 is checkpointed, proved and verified again, by
    // this checkpointer and by one reading it from its start.
    append(&ledger, 3, 1).await;
    assert_eq!(publish_now(&mut c).await.tree_size, 5);
    let a = auditor(&log, &config).await;
    let proof = a.prove(&p01(), 5, None).await.unwrap();
    check(&proof, &[]).unwrap();
    let audit = a.verify(None).await.unwrap();
    assert!(audit.ok(), "{:?}", audit.problems);
    let mut fresh = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 4, 1).await;
    assert_eq!(publish_now(&mut fresh).await.tree_size, 6);
}

/// An exclusion the writer judged by the key history it read before publishing, while
/// another process's key rotation was stored in between, is judged again as every
/// reader judges it (by the history stored before it) once it is acknowledged: the
/// writer, which the rotation makes hold it with the foreign message, appends nothing
/// past them. Before, it reopened the partition at the acknowledgement and went on
/// appending events every reader held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusion_outdated_by_a_rotation_stored_first_is_held_by_its_writer_too() {
    use ansinh::verify::{VerifyError, verify};
    let (log, config) = fresh_checkpointed();
    let (a, dir) = ledger(&log).await;
    let (b, _b_dir) = ledger(&log).await;
    drop(checkpointer(&a, &config, dir.path()).await);
    append(&a, 0, 2).await;
    let key_file = dir.path().join(keys::LEDGER_KEY_FILE);
    // Given a foreign message the writer of process A holds,
    let foreign = b"not the ledger's".to_vec();
    let js = jetstream::new(client().await);
    let foreign_at = js
        .publish(log.subject(&p01()), foreign.clone().into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    assert!(a.append(note("01", "meets-it", "x")).await.is_err());
    // a rotation of the ledger's key by process B, decided and waiting to be published,
    let held_b = b.hold_publishes().await;
    let rotation = {
        let (b, config, home) = (b.clone(), config.clone(), dir.path().to_path_buf());
        tokio::spawn(async move { rotate_key(&b, &config, home.as_path()).await })
    };
    until("B's rotation waits", || b.commits_held() == 1).await;
    // then, a millisecond on, A's exclusion signed by the key it still reads as current,
    let decided_after = ansinh::checkpoint::now_unix_ms();
    while ansinh::checkpoint::now_unix_ms() <= decided_after {
        std::hint::spin_loop();
    }
    let held_a = a.hold_publishes().await;
    let exclusion = {
        // Signed by the key read before the rotation replaces the file.
        let (a, key, foreign) = (a.clone(), load_key(&key_file).unwrap(), foreign.clone());
        tokio::spawn(async move { exclude_run(&a, &p01(), &key, &[(foreign_at, &foreign)]).await })
    };
    until("A's exclusion waits", || a.commits_held() == 1).await;
    // when the rotation is stored first and the exclusion after it,
    drop(held_b);
    rotation.await.unwrap().unwrap();
    drop(held_a);
    exclusion.await.unwrap();
    // then every reader holds the exclusion, signed by a key retired before it,
    let verdict = verify(
        &mut stream_of(&log).await,
        &log,
        &config.keys_partition,
        None,
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&verdict, VerifyError::Broken { partition, stream_sequence, .. }
            if partition == "01" && *stream_sequence == foreign_at),
        "{verdict}"
    );
    // and so does the writer that appended it: nothing goes past them.
    assert!(
        a.append(note("01", "after-the-exclusion", "x"))
            .await
            .is_err(),
        "the writer appended past an exclusion every reader holds"
    );
}

/// Waits until `done` holds, looking again every millisecond, for at most 30 s (then the
/// test fails saying `what`): an order of events made certain, not a time guessed.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Proofs served from the subtrees the projections store (ADR 0026): over HTTP, the
/// inclusion and consistency documents are byte for byte the ones built from the whole
/// chain, and reading them cost at most two chunks of the partition, not its every event.
/// A stored root that is missing, or that differs from the log's, makes the route read
/// the whole chain instead, and still answer the right document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_are_served_from_stored_subtrees_and_two_chunks() {
    use ansinh::http::{self, Api, StaffDirectory};
    // Chunks of 4 events, so that 41 events span 11 of them.
    const LEVEL: u32 = 2;
    const CHUNK: u64 = 1 << LEVEL;
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 0, 23).await;
    let old = publish_now(&mut c).await;
    append(&ledger, 23, 18).await;
    let new = publish_now(&mut c).await;
    assert_eq!((old.tree_size, new.tree_size), (23, 41));

    let vault = vault_for(&ledger, &dir.path().join("secrets")).await;
    let projector =
        std::sync::Arc::new(ansinh::projection::Projector::of_store(ledger.store()).unwrap());
    projector.set_chunk_level(LEVEL);
    let service = ansinh::service::Service::new(
        ledger.clone(),
        std::sync::Arc::new(vault),
        projector.clone(),
    );
    let staff = dir.path().join(http::STAFF_FILE);
    let token =
        http::auth::add_staff(&staff, "staff:auditor", ansinh::access::Role::Auditor, "").unwrap();
    let api = Api::new(service, StaffDirectory::load(&staff).unwrap())
        .await
        .unwrap();
    api.set_checkpoints(config.clone());
    let (base, _stop) = common::serve(api.clone()).await;
    let client = reqwest::Client::new();
    let get = |path: String| {
        let request = client.get(format!("{base}{path}")).bearer_auth(&token);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::OK);
            response.bytes().await.unwrap().to_vec()
        }
    };
    let a = auditor(&log, &config).await;
    let inclusion = "/v1/audit/partitions/01/proofs/inclusion?seq=6".to_string();
    let consistency = "/v1/audit/partitions/01/proofs/consistency?from=23&to=41".to_string();
    let full_inclusion = serde_json::to_vec(&a.prove(&p01(), 6, None).await.unwrap()).unwrap();
    let full_consistency =
        serde_json::to_vec(&a.consistency(&p01(), 23, 41).await.unwrap()).unwrap();
    assert_eq!(
        a.proof_events_read(),
        41 + 41,
        "the full reads read every event"
    );

    let before = api.proof_events_read();
    assert_eq!(get(inclusion.clone()).await, full_inclusion);
    let read = api.proof_events_read() - before;
    // Event 6's chunk (events 5..=8) and the right edge's (event 41).
    assert!(read <= 2 * CHUNK, "the inclusion proof read {read} events");
    assert_eq!(read, CHUNK + 1);
    let before = api.proof_events_read();
    assert_eq!(get(consistency.clone()).await, full_consistency);
    let read = api.proof_events_read() - before;
    // Event 23's chunk (21..=24) and event 41's.
    assert!(
        read <= 2 * CHUNK,
        "the consistency proof read {read} events"
    );

    // Each stored root the proof needs, gone or wrong in turn: the whole chain is read,
    // and the document is the same.
    let inclusion_plan = ansinh::merkle_pieces::plan_inclusion(LEVEL, 41, 5).unwrap();
    let &first = inclusion_plan.nodes.iter().next().unwrap();
    let &above = inclusion_plan
        .nodes
        .iter()
        .find(|(l, _)| *l > LEVEL)
        .unwrap();
    for (path, full, (level, index), stored) in [
        // Missing.
        (&inclusion, &full_inclusion, first, None),
        // Above the chunks, wrong: only the signed root can tell.
        (&inclusion, &full_inclusion, above, Some([7u8; 32])),
        // Event 23's chunk's root, wrong: the chunk's check against the log tells.
        (&consistency, &full_consistency, (LEVEL, 5), Some([7u8; 32])),
    ] {
        let kept = projector.merkle_node("01", level, index).unwrap();
        assert!(kept.is_some(), "({level}, {index}) is stored");
        projector.put_merkle_node_for_tests("01", level, index, stored);
        let before = api.proof_events_read();
        assert_eq!(
            &get(path.clone()).await,
            full,
            "{path} without ({level}, {index})"
        );
        // The whole chain, after the chunks when they were read before the check failed.
        let read = api.proof_events_read() - before;
        assert!((41..=41 + 2 * CHUNK).contains(&read), "read {read} events");
        projector.put_merkle_node_for_tests("01", level, index, kept);
    }
    // Put back, they serve again.
    let before = api.proof_events_read();
    assert_eq!(get(consistency).await, full_consistency);
    assert!(api.proof_events_read() - before <= 2 * CHUNK);
}

/// The stored tree survives a restart of the projections in the middle of a chunk: a
/// store caught up to part of the log, closed, opened again and caught up with the rest
/// serves every proof from two chunks, the same documents as the whole chain's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_tree_survives_a_restart_inside_a_chunk() {
    const LEVEL: u32 = 2;
    const CHUNK: u64 = 1 << LEVEL;
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let mut c = checkpointer(&ledger, &config, dir.path()).await;
    append(&ledger, 0, 13).await;
    let mut stream = stream_of(&log).await;
    let middle = ansinh::log::reader::last_stream_sequence(&mut stream)
        .await
        .unwrap();
    append(&ledger, 13, 17).await;
    let checkpoint = publish_now(&mut c).await;
    assert_eq!(checkpoint.tree_size, 30);
    {
        let projector = ansinh::projection::Projector::of_store(ledger.store()).unwrap();
        projector.set_chunk_level(LEVEL);
        projector
            .catch_up_to(&mut stream, &log, middle)
            .await
            .unwrap();
        assert_eq!(projector.merkle_tree("01").unwrap(), Some((LEVEL, 13)));
    }
    // Opened again at the default level: the partition keeps the level it started with.
    let projector = ansinh::projection::Projector::of_store(ledger.store()).unwrap();
    projector.catch_up(&mut stream, &log).await.unwrap();
    assert_eq!(projector.merkle_tree("01").unwrap(), Some((LEVEL, 30)));
    let a = auditor(&log, &config).await;
    for sequence in [1, 13, 14, 29, 30] {
        let full = a.prove(&p01(), sequence, None).await.unwrap();
        let before = a.proof_events_read();
        let served = a
            .prove_using(Some(&projector), &p01(), sequence, None)
            .await
            .unwrap();
        let read = a.proof_events_read() - before;
        assert_eq!(
            serde_json::to_vec(&served).unwrap(),
            serde_json::to_vec(&full).unwrap()
        );
        assert!(read <= 2 * CHUNK, "event {sequence}: read {read} events");
    }
}
