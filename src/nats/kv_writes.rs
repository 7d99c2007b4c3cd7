//! Compare-and-set writes to a JetStream key-value bucket, gathered into atomic batches.
//! Shared by the citizen claims (`claims`) and the vault's data keys (`personal`).
//!
//! Each write is one message on the bucket's stream, fenced with
//! `Nats-Expected-Last-Subject-Sequence` on the revision read (0: never written). A task
//! of its own gathers the writes waiting (up to `KV_BATCH_MAX`, no key twice) into a
//! round. A small round (up to `KV_SINGLES_MAX`) goes out as single fenced publishes, all
//! in flight at once: a few fsyncs cost less than one atomic batch's fixed cost. A larger
//! round goes as one atomic batch, so the server fsyncs once for all of them instead of
//! once each. The batch is stored all or none; if the server refuses it (one fence
//! failed: a race), every write of it is sent again on its own, so exactly the writes
//! that lost their race are refused and read the key again.

use std::collections::HashSet;

use async_nats::jetstream::{
    self,
    context::PublishErrorKind,
    kv::{self},
    message::PublishMessage,
};
use async_nats::{HeaderMap, header};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::log::stream::{StreamError, check_replicas};

/// Most writes in one atomic batch: under the server's 1,000 messages a batch. A write
/// is one fsynced message either way; gathered, the server fsyncs once for the whole
/// batch (a plain fenced publish is one fsync each: ~4k/s, NATS-NOTES.md).
pub const KV_BATCH_MAX: usize = 500;
/// Most writes of a round sent as single fenced publishes (all in flight, acks awaited
/// together) instead of one atomic batch. On 2.15.1 with `sync_interval: always` an
/// atomic batch costs 2-17 ms whatever its size (more on a busy machine), a single
/// publish ~0.25 ms of the stream's one-at-a-time fsyncs (~4.1-4.5k/s), so a few
/// singles finish first and many do not. `examples/kv_writes_probe` swept it (this
/// 2-core machine, writers writing fresh keys): at 4 writers 8-24 gave ~4,000-4,400
/// writes/s, p50 0.9 ms, against ~1,450/s, p50 2.3 ms, with every round of two or more
/// as a batch; at 8-32 writers 8, 16 and 24 were even with batches (within ±10%); 32
/// fell to ~6,400/s against ~10,000 at 32 writers and 64 to ~7,000/s against ~17,000
/// at 64. 16 sits in the middle of the flat part (ADR 0007).
pub const KV_SINGLES_MAX: usize = 16;
/// Writes queued for a bucket's batcher before their callers wait (backpressure).
/// One batcher, one round (batch or singles) in flight: measured on 2.15.1, an atomic
/// batch on a bucket takes 5-17 ms from first message to ack whatever its size (2 to 36
/// messages), and batches of several batchers in flight are stored one after another,
/// each waiting longer (four lanes gave 1,074 HTTP registrations/s against ~1,500-1,800
/// with one).
pub const KV_QUEUE_MAX: usize = 4_096;

/// Tries to make (or find) a bucket before its opening fails: each a JetStream request
/// of up to 5 s, so a cluster has ~20 s to form a new bucket's group.
pub const BUCKET_OPEN_ATTEMPTS_MAX: u32 = 4;
/// The wait before the next try, times the attempt.
pub const BUCKET_OPEN_BACKOFF: std::time::Duration = std::time::Duration::from_millis(200);

/// Why a write was not stored.
#[derive(Debug)]
pub enum WriteError {
    /// Someone wrote the key since `revision` was read: read it again.
    WrongRevision,
    Nats(String),
}

/// Opens the bucket `config.bucket`, creating it when missing, and lets its stream take
/// atomic batches. An existing bucket kept on fewer replicas than
/// `config.num_replicas`, or in memory, is refused (`StreamError::Unsafe`, naming its
/// stream), as the event stream is: these buckets hold what the log cannot rebuild (the
/// vault's keys).
///
/// Its stream denies purges and rollups, so no one request (`nats stream purge`, one
/// message with `Nats-Rollup: all`) deletes every key: the ledger never purges or rolls
/// up a bucket (a key is deleted with a marker, which `deny_delete` lets through). A
/// bucket made before that is given both when opened; NATS lets `deny_purge` be turned
/// on, never off.
///
/// A missing bucket is made as its stream, with `allow_atomic_publish` from the start, in
/// the configuration async-nats gives a bucket. Several processes starting together all
/// create it, and JetStream answers each the same stream (the configurations are equal).
/// Made as a bucket and then updated to take atomic batches, two processes' updates at
/// once on a 3-node cluster timed out (5 s each) and failed their first requests.
pub async fn open_bucket(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, StreamError> {
    let bucket = config.bucket.clone();
    let mut attempt = 1;
    let kv = loop {
        let failed = match js.get_key_value(&bucket).await {
            Ok(kv) => break kv,
            // Missing: make it; the next look finds it. On a cluster, forming the new
            // stream's group while others create it too can take longer than one
            // request's timeout, and a server may not know a stream made a moment ago.
            Err(_) => match js.get_or_create_stream(bucket_stream(&config)).await {
                Ok(_) => match js.get_key_value(&bucket).await {
                    Ok(kv) => break kv,
                    Err(e) => format!("opening bucket {bucket}: {e}"),
                },
                Err(e) => format!("creating bucket {bucket}: {e}"),
            },
        };
        if attempt >= BUCKET_OPEN_ATTEMPTS_MAX {
            return Err(StreamError::Nats(failed));
        }
        tracing::info!(bucket, attempt, error = %failed, "opening a bucket: again");
        tokio::time::sleep(BUCKET_OPEN_BACKOFF * attempt).await;
        attempt += 1;
    };
    if kv.use_jetstream_prefix {
        // Only a bucket reached through another JetStream domain has one; the ledger
        // never configures domains.
        return Err(StreamError::Unsafe {
            stream: kv.stream_name.clone(),
            reason: "a bucket behind a JetStream domain prefix is not supported".into(),
        });
    }
    let nats = |e: &dyn std::fmt::Display| StreamError::Nats(format!("bucket {bucket}: {e}"));
    let mut stream = js.get_stream(&kv.stream_name).await.map_err(|e| nats(&e))?;
    let mut stream_config = stream.info().await.map_err(|e| nats(&e))?.config.clone();
    // Checked before anything is changed: an unsafe bucket is left as the operator has it.
    check_replicas(&kv.stream_name, &stream_config, config.num_replicas)?;
    check_history(&kv.stream_name, &stream_config, config.history)?;
    check_storage(&kv.stream_name, &stream_config)?;
    // Buckets made before writes were batched lack the flag; setting it changes
    // nothing else of the stream. A bucket made before the ledger gave it a lifetime
    // for its values (the requests bucket) takes it, so its keys stop growing for ever.
    // One made before it denied purges and rollups is given both (the server refuses
    // rollups on a stream that denies purges, so they change together).
    if !stream_config.allow_atomic_publish
        || stream_config.max_age != config.max_age
        || !stream_config.deny_purge
        || !stream_config.deny_delete
        || stream_config.allow_rollup
    {
        stream_config.allow_atomic_publish = true;
        stream_config.max_age = config.max_age;
        stream_config.deny_purge = true;
        stream_config.deny_delete = true;
        stream_config.allow_rollup = false;
        js.update_stream(stream_config)
            .await
            .map_err(|e| nats(&e))?;
    }
    Ok(kv)
}

/// Refuses a bucket that keeps more values per key than the ledger made it keep: in the
/// vault (history 1) an erased household's data key would stay readable as an earlier
/// value, so an erasure would not be final. 0 or less is "no limit".
fn check_history(
    name: &str,
    c: &jetstream::stream::Config,
    history: i64,
) -> Result<(), StreamError> {
    let kept = c.max_messages_per_subject;
    if kept <= 0 || kept > history.max(1) {
        return Err(StreamError::Unsafe {
            stream: name.to_string(),
            reason: format!(
                "it keeps {} values per key, the ledger keeps {}: a key deleted or overwritten would stay readable",
                if kept <= 0 {
                    "unlimited".to_string()
                } else {
                    kept.to_string()
                },
                history.max(1)
            ),
        });
    }
    Ok(())
}

/// Refuses a bucket kept in memory: a server's restart would lose every key (the vault's
/// data keys, and with them every household's personal data). The storage of a stream
/// cannot be changed, so the operator moves the keys to a bucket on file.
fn check_storage(name: &str, c: &jetstream::stream::Config) -> Result<(), StreamError> {
    if c.storage != jetstream::stream::StorageType::File {
        return Err(StreamError::Unsafe {
            stream: name.to_string(),
            reason: "it is kept in memory, not on file: a server's restart would lose its keys"
                .into(),
        });
    }
    Ok(())
}

/// The stream of a bucket, as `async_nats`'s `create_key_value` configures it for the
/// buckets the ledger makes (no mirror, sources, republish or compression), taking
/// atomic batches, and denying purges and rollups (`open_bucket`).
fn bucket_stream(config: &kv::Config) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: format!("KV_{}", config.bucket),
        description: Some(config.description.clone()),
        subjects: vec![format!("$KV.{}.>", config.bucket)],
        max_messages_per_subject: config.history.max(1),
        max_bytes: config.max_bytes,
        max_age: config.max_age,
        max_message_size: config.max_value_size,
        storage: config.storage,
        allow_rollup: false,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        num_replicas: config.num_replicas.max(1),
        discard: jetstream::stream::DiscardPolicy::New,
        allow_atomic_publish: true,
        ..Default::default()
    }
}

/// The write side of one bucket: a handle on its batcher. Cheap to clone; the batcher
/// stops when every handle is dropped.
#[derive(Clone)]
pub struct FencedWrites {
    writes: mpsc::Sender<Write>,
}

impl FencedWrites {
    pub fn spawn(js: &jetstream::Context, kv: &kv::Store) -> Self {
        Self::spawn_with_singles_max(js, kv, KV_SINGLES_MAX)
    }

    /// Like [`spawn`](Self::spawn), sending rounds of up to `singles_max` writes as single
    /// publishes instead of `KV_SINGLES_MAX`: the probe that chose that number sweeps it,
    /// and tests force either path (a round of one write is always a single publish).
    pub fn spawn_with_singles_max(
        js: &jetstream::Context,
        kv: &kv::Store,
        singles_max: usize,
    ) -> Self {
        let (writes, queue) = mpsc::channel(KV_QUEUE_MAX);
        let bucket = Bucket {
            js: js.clone(),
            put_prefix: kv.put_prefix.clone().unwrap_or_else(|| kv.prefix.clone()),
            singles_max: singles_max.clamp(1, KV_BATCH_MAX),
        };
        tokio::spawn(batcher(bucket, queue));
        Self { writes }
    }

    /// Writes `value` at `key` if its revision is still `revision` (0: never written).
    pub async fn write(&self, key: &str, value: Bytes, revision: u64) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        let write = Write {
            key: key.to_owned(),
            value,
            revision,
            reply,
        };
        let gone = || WriteError::Nats("the bucket's batcher has stopped".into());
        self.writes.send(write).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// One compare-and-set write: `value` at `key` if the key's last revision is still
/// `revision` (0: the key was never written).
struct Write {
    key: String,
    value: Bytes,
    revision: u64,
    reply: oneshot::Sender<Result<(), WriteError>>,
}

/// Where the batcher writes: the bucket's subjects and the context that publishes.
struct Bucket {
    js: jetstream::Context,
    /// `$KV.<bucket>.` (or the mirror's put prefix), as async-nats's own `put` uses it.
    put_prefix: String,
    /// Rounds of at most this many writes go as single publishes (`KV_SINGLES_MAX`).
    singles_max: usize,
}

impl Bucket {
    fn subject(&self, key: &str) -> String {
        format!("{}{key}", self.put_prefix)
    }
}

/// Gathers the writes waiting in `queue` into rounds, one round in flight: single
/// publishes for a small round, one atomic batch for a larger one. Runs until every
/// handle is dropped.
async fn batcher(bucket: Bucket, mut queue: mpsc::Receiver<Write>) {
    // A write whose key is already in the round being gathered waits for the next one:
    // the server refuses a second fence on a subject an atomic batch already wrote, and
    // a round of singles keeps the same rule so either path refuses exactly the same
    // writes.
    let mut held_over: Option<Write> = None;
    loop {
        let first = match held_over.take() {
            Some(write) => write,
            None => match queue.recv().await {
                Some(write) => write,
                None => return,
            },
        };
        let mut keys = HashSet::from([first.key.clone()]);
        let mut batch = vec![first];
        while batch.len() < KV_BATCH_MAX {
            let Ok(write) = queue.try_recv() else { break };
            if !keys.insert(write.key.clone()) {
                held_over = Some(write);
                break;
            }
            batch.push(write);
        }
        commit(&bucket, batch).await;
    }
}

fn fenced(revision: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        revision.to_string().as_str(),
    );
    headers
}

/// Stores a round, each write fenced on its own key's revision: up to the bucket's
/// `singles_max` writes as single publishes, all in flight at once; more as one atomic
/// batch, all or none. If the server refuses the batch (one fence failed, or anything
/// else), each write is sent again on its own, so exactly the writes whose fence fails
/// are refused.
async fn commit(bucket: &Bucket, batch: Vec<Write>) {
    if batch.len() > bucket.singles_max {
        let started = std::time::Instant::now();
        match commit_atomic(bucket, &batch).await {
            Ok(()) => {
                for write in batch {
                    let _ = write.reply.send(Ok(()));
                }
                return;
            }
            // A lost race is expected now and then; anything else, or a slow refusal,
            // is worth an operator's eye.
            Err(e) => tracing::info!(
                writes = batch.len(),
                ms = started.elapsed().as_millis() as u64,
                error = %e,
                "a batch of bucket writes was refused; sending them one by one"
            ),
        }
    }
    // Published in order on one connection and awaited together: the server fsyncs them
    // one after another, with no round trip between them.
    let context = &bucket.js;
    let sends = batch.into_iter().map(|write| async move {
        let outcome = async {
            context
                .publish_with_headers(
                    bucket.subject(&write.key),
                    fenced(write.revision),
                    write.value.clone(),
                )
                .await?
                .await
        }
        .await;
        let answer = match outcome {
            Ok(_) => Ok(()),
            Err(e) if fence_failed(&e) => Err(WriteError::WrongRevision),
            Err(e) => Err(WriteError::Nats(e.to_string())),
        };
        let _ = write.reply.send(answer);
    });
    futures::future::join_all(sends).await;
}

/// Whether the server refused a publish for its fence: 10071 with the sequence it found,
/// or 10164 without it, which a 3-node cluster answers when it checks the fence before it
/// proposes the message (async-nats names only the first).
pub(crate) fn fence_failed(e: &async_nats::jetstream::context::PublishError) -> bool {
    /// JSStreamWrongLastSequenceConstantErr of nats-server.
    const WRONG_LAST_SEQUENCE_CONSTANT: u64 = 10164;
    e.kind() == PublishErrorKind::WrongLastSequence
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
            .is_some_and(|j| j.error_code().0 == WRONG_LAST_SEQUENCE_CONSTANT)
}

/// Whether a key-value `update` was refused for its fence (`fence_failed` of the publish
/// under it): async-nats names only 10071 `WrongLastRevision`, and a cluster's 10164
/// comes as `Other`.
pub(crate) fn update_fence_failed(e: &async_nats::jetstream::kv::UpdateError) -> bool {
    e.kind() == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<async_nats::jetstream::context::PublishError>())
            .is_some_and(fence_failed)
}

/// One atomic batch of every write (NATS-NOTES.md: the first message may fence, later
/// ones may fence subjects not yet written in the batch).
async fn commit_atomic(bucket: &Bucket, batch: &[Write]) -> Result<(), String> {
    let context = &bucket.js;
    let client = context.client();
    let batch_id = uuid::Uuid::new_v4().simple().to_string();
    let last = batch.len() - 1;
    for (index, write) in batch.iter().enumerate() {
        let mut headers = fenced(write.revision);
        headers.insert(header::NATS_BATCH_ID, batch_id.as_str());
        headers.insert(
            header::NATS_BATCH_SEQUENCE,
            (index + 1).to_string().as_str(),
        );
        let subject = bucket.subject(&write.key);
        if index == last {
            headers.insert(header::NATS_BATCH_COMMIT, header::NATS_BATCH_COMMIT_FINAL);
            context
                .send_publish(
                    subject,
                    PublishMessage::build()
                        .headers(headers)
                        .payload(write.value.clone()),
                )
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
        } else {
            client
                .publish_with_headers(subject, headers, write.value.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
