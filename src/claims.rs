//! Country-wide uniqueness of citizens: which household holds each citizen (by blind
//! index), across every partition.
//!
//! Each partition's writer refuses a citizen already in another household *of that
//! partition* (the book sees only its own chain). Provinces are separate chains, so a
//! citizen registered in Hà Nội and again in An Giang would pass both books. The claim
//! closes that gap: before a command that adds citizens is submitted, the service
//! claims each of them in a JetStream key-value bucket with compare-and-set
//! (create-if-absent, or update at the revision read), so of two racing claims across
//! any number of ledger processes exactly one wins.
//!
//! **The log stays the record.** A claim is an index for enforcement, like the
//! idempotency index: the events carry every household's blind indexes, and
//! `audit anomalies` re-derives "one citizen in two households" from the chains alone.
//!
//! Order and failure, per command (see `Service`):
//! - claim, then submit; a definite refusal of the submit releases what this call
//!   newly claimed. A crash between claim and submit leaves a claim held by the
//!   household that was being registered: retrying that command (same household)
//!   finds its own claim and completes; another household is refused, naming it.
//! - a released claim keeps its key with an empty value (the bucket is never purged),
//!   so the next claim is an update at a known revision.
//! - a move transfers the claims from the old household id to the new one; an erasure
//!   releases them; a death keeps the deceased's claim (an id of a dead citizen must
//!   not be registered again elsewhere).
//!
//! **Writes are batched.** Each claim write is one message on the bucket's stream,
//! fenced with `Nats-Expected-Last-Subject-Sequence` on the revision read (0: never
//! written). A task of its own gathers the writes waiting (up to `CLAIM_BATCH_MAX`, no
//! key twice) into one atomic batch, so the server fsyncs once for all of them instead
//! of once each. The batch is stored all or none; if the server refuses it (one fence
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

use crate::domain::registry::BlindIndex;

/// Compare-and-set attempts per citizen before giving up: each lost race means another
/// process changed the same claim in between, which is rare; an endless loop is not an
/// answer.
pub const CLAIM_ATTEMPTS_MAX: usize = 8;
/// Revisions of a claim kept in the bucket (who held it before): for operators.
pub const CLAIM_HISTORY: i64 = 8;
/// Citizens this process claims or releases at once (reads of the bucket and writes
/// waiting for the batcher). Past this bound a claim waits here, where no request
/// timeout runs.
pub const CLAIMS_IN_FLIGHT_MAX: usize = 1_024;
/// Most claim writes in one atomic batch: under the server's 1,000 messages a batch.
/// A claim is one fsynced message either way; gathered, the server fsyncs once for the
/// whole batch (a plain fenced publish is one fsync each: ~4k/s, NATS-NOTES.md).
pub const CLAIM_BATCH_MAX: usize = 500;
/// Claim writes queued for the batcher before their callers wait (backpressure).
/// One batcher, one batch in flight: measured on 2.15.1, an atomic batch on the bucket
/// takes 5-17 ms from first message to ack whatever its size (2 to 36 messages), and
/// batches of several batchers in flight are stored one after another, each waiting
/// longer (four lanes gave 1,074 HTTP registrations/s against ~1,500-1,800 with one).
pub const CLAIM_QUEUE_MAX: usize = 4_096;
const _: () = assert!(CLAIMS_IN_FLIGHT_MAX <= CLAIM_QUEUE_MAX);

/// Why a claim could not be made or released.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The citizen belongs to another household. Nothing was appended.
    #[error("citizen already in household {holder}")]
    Held { holder: String },
    /// The bucket could not be read or written: retry the command.
    #[error("citizen claims: {0}")]
    Nats(String),
    /// Lost the compare-and-set race too often: retry the command.
    #[error("citizen claim contended {CLAIM_ATTEMPTS_MAX} times; retry")]
    Contended,
}

/// The claims bucket of one ledger (named after its event stream, so test ledgers
/// sharing a server do not share claims).
#[derive(Clone)]
pub struct Claims {
    kv: kv::Store,
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
    writes: mpsc::Sender<Write>,
}

fn nats(e: impl std::fmt::Display) -> ClaimError {
    ClaimError::Nats(e.to_string())
}

/// The bucket's name for an event stream.
pub fn bucket_name(stream_name: &str) -> String {
    format!("{stream_name}_CITIZENS")
}

fn key(citizen: &BlindIndex) -> String {
    blake3::Hash::from_bytes(*citizen).to_hex().to_string()
}

/// One compare-and-set write of a claim: `value` at `key` if the key's last revision is
/// still `revision` (0: the key was never written).
struct Write {
    key: String,
    value: Bytes,
    revision: u64,
    reply: oneshot::Sender<Result<(), WriteError>>,
}

enum WriteError {
    /// Someone wrote the key since `revision` was read: read it again.
    WrongRevision,
    Nats(String),
}

/// Where the batcher writes: the bucket's subjects and the context that publishes.
struct Bucket {
    js: jetstream::Context,
    /// `$KV.<bucket>.` (or the mirror's put prefix), as async-nats's own `put` uses it.
    put_prefix: String,
}

impl Bucket {
    fn subject(&self, key: &str) -> String {
        format!("{}{key}", self.put_prefix)
    }
}

impl Claims {
    /// Opens the bucket, creating it (file storage, so acknowledged = fsynced like the
    /// log) when missing, and lets its stream take atomic batches.
    pub async fn open(
        js: &jetstream::Context,
        stream_name: &str,
        replicas: usize,
    ) -> Result<Self, ClaimError> {
        let bucket = bucket_name(stream_name);
        let kv = match js.get_key_value(&bucket).await {
            Ok(kv) => kv,
            Err(_) => match js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    description: "ansinh: household holding each citizen (blind index)".into(),
                    history: CLAIM_HISTORY,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
            {
                Ok(kv) => kv,
                // Another ledger (or task) created it first and may already have set the
                // atomic flag below, so its configuration differs from ours: use it.
                Err(created) => js.get_key_value(&bucket).await.map_err(|_| nats(created))?,
            },
        };
        if kv.use_jetstream_prefix {
            // Only a bucket reached through another JetStream domain has one; the ledger
            // never configures domains.
            return Err(ClaimError::Nats(
                "a claims bucket behind a JetStream domain prefix is not supported".into(),
            ));
        }
        // Buckets made before claims were batched lack the flag; setting it changes
        // nothing else of the stream.
        let mut stream = js.get_stream(&kv.stream_name).await.map_err(nats)?;
        let mut config = stream.info().await.map_err(nats)?.config.clone();
        if !config.allow_atomic_publish {
            config.allow_atomic_publish = true;
            js.update_stream(config).await.map_err(nats)?;
        }
        let (writes, queue) = mpsc::channel(CLAIM_QUEUE_MAX);
        let bucket = Bucket {
            js: js.clone(),
            put_prefix: kv.put_prefix.clone().unwrap_or_else(|| kv.prefix.clone()),
        };
        tokio::spawn(batcher(bucket, queue));
        Ok(Self {
            kv,
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(CLAIMS_IN_FLIGHT_MAX)),
            writes,
        })
    }

    /// Waits for one of the CLAIMS_IN_FLIGHT_MAX places.
    async fn turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }

    /// Writes `value` at `key` if its revision is still `revision`, through the batcher.
    async fn write(&self, key: &str, value: Bytes, revision: u64) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        let write = Write {
            key: key.to_owned(),
            value,
            revision,
            reply,
        };
        let gone = || WriteError::Nats("the claim batcher has stopped".into());
        self.writes.send(write).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Makes `household` the holder of `citizen` if it is free or already held by
    /// `household` or by `from` (a move). Returns true when this call changed it.
    async fn take(
        &self,
        citizen: &BlindIndex,
        household: &str,
        from: Option<&str>,
    ) -> Result<bool, ClaimError> {
        let key = key(citizen);
        let value = Bytes::copy_from_slice(household.as_bytes());
        let _turn = self.turn().await;
        for _ in 0..CLAIM_ATTEMPTS_MAX {
            let entry = self.kv.entry(key.as_str()).await.map_err(nats)?;
            let revision = match entry {
                None => 0,
                Some(e) => {
                    let held = e.operation == kv::Operation::Put && !e.value.is_empty();
                    if held && e.value == household.as_bytes() {
                        return Ok(false);
                    }
                    if held && from.is_none_or(|f| e.value != f.as_bytes()) {
                        return Err(ClaimError::Held {
                            holder: String::from_utf8_lossy(&e.value).into_owned(),
                        });
                    }
                    e.revision
                }
            };
            match self.write(&key, value.clone(), revision).await {
                Ok(()) => return Ok(true),
                Err(WriteError::WrongRevision) => continue,
                Err(WriteError::Nats(e)) => return Err(ClaimError::Nats(e)),
            }
        }
        Err(ClaimError::Contended)
    }

    /// Claims every citizen for `household`, all or nothing: on a refusal, the claims
    /// this call made are released again. Returns the citizens newly claimed (to release
    /// if the command is then refused).
    pub async fn claim(
        &self,
        household: &str,
        citizens: &[BlindIndex],
    ) -> Result<Vec<BlindIndex>, ClaimError> {
        self.claim_from(household, None, citizens).await
    }

    /// Moves the claims of `citizens` from `from` to `to` (a household moving to a new
    /// id); free citizens are claimed for `to`.
    pub async fn transfer(
        &self,
        from: &str,
        to: &str,
        citizens: &[BlindIndex],
    ) -> Result<Vec<BlindIndex>, ClaimError> {
        self.claim_from(to, Some(from), citizens).await
    }

    async fn claim_from(
        &self,
        household: &str,
        from: Option<&str>,
        citizens: &[BlindIndex],
    ) -> Result<Vec<BlindIndex>, ClaimError> {
        // A household's citizens are claimed together, so their writes share a batch.
        let outcomes = futures::future::join_all(
            citizens
                .iter()
                .map(|citizen| self.take(citizen, household, from)),
        )
        .await;
        let mut taken = Vec::new();
        let mut first_error = None;
        for (citizen, outcome) in citizens.iter().zip(outcomes) {
            match outcome {
                Ok(true) => taken.push(*citizen),
                Ok(false) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            // Best effort: a release that fails leaves a claim of `household`, which a
            // retry of the same command reuses.
            let _ = self.release(household, &taken).await;
            return Err(e);
        }
        Ok(taken)
    }

    /// Releases the citizens `household` holds (others' claims are left alone).
    pub async fn release(
        &self,
        household: &str,
        citizens: &[BlindIndex],
    ) -> Result<(), ClaimError> {
        'citizens: for citizen in citizens {
            let key = key(citizen);
            let _turn = self.turn().await;
            for _ in 0..CLAIM_ATTEMPTS_MAX {
                let Some(e) = self.kv.entry(key.as_str()).await.map_err(nats)? else {
                    continue 'citizens;
                };
                if e.value != household.as_bytes() {
                    continue 'citizens;
                }
                match self.write(&key, Bytes::new(), e.revision).await {
                    Ok(()) => continue 'citizens,
                    Err(WriteError::WrongRevision) => {}
                    Err(WriteError::Nats(e)) => return Err(ClaimError::Nats(e)),
                }
            }
            return Err(ClaimError::Contended);
        }
        Ok(())
    }
}

/// Gathers the claim writes waiting in `queue` into atomic batches, one batch in flight.
/// Runs until every `Claims` handle is dropped.
async fn batcher(bucket: Bucket, mut queue: mpsc::Receiver<Write>) {
    // A write whose key is already in the batch being gathered waits for the next one:
    // the server refuses a second fence on a subject the batch already wrote.
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
        while batch.len() < CLAIM_BATCH_MAX {
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

/// Stores a batch all or none, each write fenced on its own key's revision. If the
/// server refuses the batch (one fence failed, or anything else), each write is sent
/// again on its own, so exactly the writes whose fence fails are refused.
async fn commit(bucket: &Bucket, batch: Vec<Write>) {
    if batch.len() > 1 && commit_atomic(bucket, &batch).await.is_ok() {
        for write in batch {
            let _ = write.reply.send(Ok(()));
        }
        return;
    }
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
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                Err(WriteError::WrongRevision)
            }
            Err(e) => Err(WriteError::Nats(e.to_string())),
        };
        let _ = write.reply.send(answer);
    });
    futures::future::join_all(sends).await;
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
