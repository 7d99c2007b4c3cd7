//! Country-wide uniqueness of citizens: which household holds each citizen (by blind
//! index), across every partition.
//!
//! Each partition's writer refuses a citizen already in another household *of that
//! partition* (the book sees only its own chain). Provinces are separate chains, so a
//! citizen registered in Hà Nội and again in An Giang would pass both books. The claim
//! closes that gap: before a command that adds citizens is submitted, the service
//! claims each of them, so that of two racing claims across any number of ledger
//! processes exactly one wins.
//!
//! **Claims are chains of frames, written like the log** (ADR 0007). The blind indexes
//! are spread over `CLAIM_SHARDS` shards by their first byte; each shard is one subject
//! of the stream `<stream>_CLAIMS` (file storage, replicated like the event stream,
//! nothing can be deleted or purged). One task per shard in each process holds the
//! shard's claims in memory, folded from its subject, and writes the claims and
//! releases waiting for it as **one message**, a frame, fenced on the subject's last
//! sequence it has folded (`Nats-Expected-Last-Subject-Sequence`): the server refuses
//! the frame if another process wrote the shard since, and the task then folds what it
//! missed and decides its requests again. So a claim costs a share of one fsync, not
//! one of its own, and many processes still agree (the fence is the compare-and-set).
//! A round whose decisions change nothing (a retried claim, a release of what the fold
//! says is free, a lookup) publishes nothing, so no fence checks it: it is answered
//! only after one request to the stream's leader finds nothing newer on the subject
//! (else the task folds what is there and decides again).
//!
//! A frame is `0x01`, then for each citizen whose holder it changes: the blind index
//! (32 bytes), the length of the household id that now holds it (one byte; 0: nobody)
//! and that id. Folding a shard is replaying its frames in order. A frame that does not
//! decode (no ledger process writes one) is skipped with an error in the log: it can
//! only lose claims, and `audit anomalies` finds one citizen in two households from the
//! chains alone.
//!
//! **The log stays the record.** A claim is an index for enforcement, like the
//! idempotency index: the events carry every household's blind indexes.
//!
//! Order and failure, per command (see `Service`):
//! - claim, then submit; a definite refusal of the submit releases what this call
//!   newly claimed, and so does an answer that an earlier attempt of the command was
//!   recorded (what this one newly claimed was free, so that record does not hold
//!   it). A crash between claim and submit leaves a claim held by the
//!   household that was being registered: retrying that command (same household)
//!   finds its own claim and completes; another household is refused, naming it.
//! - a move transfers the claims from the old household id to the new one (and back
//!   if the move-in then appends nothing: the move-out has landed); an erasure
//!   releases them, those its household's events name as it lands, read from the log
//!   after it; a death keeps the deceased's claim (an id of a dead citizen must
//!   not be registered again elsewhere).
//!
//! Versions before the chains kept the claims in the key-value bucket
//! `<stream>_CITIZENS`; a shard whose subject holds no frame yet starts with that
//! bucket's claims of the shard as its first frames (`migrate`), so the first frame of
//! every shard is the copy. Old-version processes must be stopped before the upgrade.
//!
//! Memory: each process holds every shard's claims, keyed by the first 16 bytes of the
//! blind index with the household id packed in 8 bytes (`Folded`, `Holder`); the
//! province bench measures the heap it takes per citizen.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::domain::registry::BlindIndex;
use crate::log::stream::{check_append_only, check_replicas};

/// Shards of the claims: subjects, each written by one task per process. The server
/// stores a stream's messages one after another (~0.25 ms each), so a registration waits
/// behind every shard's frame of the round: HTTP registrations from 64 clients ran at
/// 5,246-5,740/s with 16 shards, 6,264-6,640/s with 4 and 7,308-8,908/s with one
/// (province bench, 4,000 households). Processes meet on a shard's fence either way
/// (each writes every shard); one subject still takes ~2,000 frames a second, each a
/// whole round of a process's claims. More shards mean copying the claims into them.
pub const CLAIM_SHARDS: usize = 1;
/// Times a shard task decides and publishes one set of requests before it answers them
/// `Contended`: each lost fence means another process wrote the shard in between.
pub const CLAIM_ATTEMPTS_MAX: usize = 8;
/// Requests waiting for one shard's task; past this a claim waits to be queued, where
/// no request timeout runs.
pub const CLAIM_QUEUE_MAX: usize = 4_096;
/// Bytes of one frame, about: a round takes the requests waiting until their entries
/// (47 bytes each) reach half of it, so a frame passes it only by a household's
/// citizens. Well under the server's 1 MiB `max_payload`.
pub const CLAIM_FRAME_BYTES_MAX: usize = 256 * 1024;
/// Tries to make (or find) the stream before opening fails, as for a bucket.
const STREAM_OPEN_ATTEMPTS_MAX: u32 = crate::kv_writes::BUCKET_OPEN_ATTEMPTS_MAX;
const FRAME_VERSION: u8 = 1;
/// A frame's entry: the blind index, a length byte, and a household id
/// ("CCCCCCC-NNNNNN", the only holder there is) or nothing.
const ENTRY_BYTES_MAX: usize = 32 + 1 + 14;

/// Why a claim could not be made or released.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The citizen belongs to another household. Nothing was appended.
    #[error("citizen already in household {holder}")]
    Held { holder: String },
    /// The claims could not be read or written: retry the command.
    #[error("citizen claims: {0}")]
    Nats(String),
    /// Lost the fence to other processes too often: retry the command.
    #[error("citizen claim contended {CLAIM_ATTEMPTS_MAX} times; retry")]
    Contended,
    /// Only a household id ("CCCCCCC-NNNNNN") can hold a claim: the caller's mistake.
    #[error("{id:?} is not a household id and cannot hold a claim")]
    NotAHousehold { id: String },
    /// The claims stream exists but could lose claims (it allows deletes, or keeps fewer
    /// replicas than `--replicas` asks). Handle: an operator fixes the stream; retrying
    /// changes nothing.
    #[error("citizen claims: {0}")]
    Unsafe(crate::log::stream::StreamError),
}

/// A citizen as the fold keys it: the first 16 bytes of its blind index. Two citizens
/// share them with a chance of 2^-128 a pair (~10^-23 among a hundred million), and
/// then the second would be refused as held, never admitted twice; the frames keep
/// the whole index.
type Folded = [u8; 16];

fn folded(citizen: &BlindIndex) -> Folded {
    citizen[..16].try_into().expect("a blind index is 32 bytes")
}

/// A household id in 8 bytes: its 13 digits as one number (7 of the commune, 6 of
/// the serial).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Holder(u64);

impl Holder {
    fn parse(id: &str) -> Result<Self, ClaimError> {
        let not = || ClaimError::NotAHousehold { id: id.to_owned() };
        crate::domain::ids::HouseholdId::parse(id).map_err(|_| not())?;
        // 13 digits: no overflow.
        Ok(Holder(
            id.bytes()
                .filter(u8::is_ascii_digit)
                .fold(0, |n, d| n * 10 + u64::from(d - b'0')),
        ))
    }

    fn id(self) -> String {
        format!("{:07}-{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

fn nats(e: impl std::fmt::Display) -> ClaimError {
    ClaimError::Nats(e.to_string())
}

/// The claims stream's name for an event stream (test ledgers sharing a server do not
/// share claims).
pub fn stream_name(ledger_stream: &str) -> String {
    format!("{ledger_stream}_CLAIMS")
}

/// The bucket where versions before the chains kept the claims.
pub fn bucket_name(ledger_stream: &str) -> String {
    format!("{ledger_stream}_CITIZENS")
}

/// What every shard's subject starts with; the shard number in hex follows.
fn subject_prefix(ledger_stream: &str) -> String {
    format!("ansinh.claims.{ledger_stream}.")
}

fn subject(ledger_stream: &str, shard: usize) -> String {
    format!("{}{shard:02x}", subject_prefix(ledger_stream))
}

// With one shard the modulo is 0, and stays the rule for more.
#[allow(clippy::modulo_one)]
fn shard_of(citizen: &BlindIndex) -> usize {
    usize::from(citizen[0]) % CLAIM_SHARDS
}

/// The claims of one ledger: a handle on this process's shard tasks. Cheap to clone;
/// the tasks stop when every handle is dropped.
#[derive(Clone)]
pub struct Claims {
    shards: Arc<[mpsc::Sender<Request>]>,
    /// Test hook (`hold_publishes`): every shard takes it for reading before it publishes
    /// a frame, uncontended unless a test holds it.
    publishes: Arc<tokio::sync::RwLock<()>>,
    /// Test hook (`fail_releases`): releases through this handle left to fail.
    release_failures: Arc<std::sync::atomic::AtomicUsize>,
}

/// What a request asks of one shard.
enum Ask {
    /// Make `household` the holder of every citizen, all or none: each must be free, or
    /// held by `household` already, or by `from` (a move).
    Take {
        household: Holder,
        from: Option<Holder>,
    },
    /// Free the citizens `household` holds; others' are left alone.
    Release { household: Holder },
    /// Who holds the (one) citizen, as stored now.
    Holder,
}

struct Request {
    ask: Ask,
    citizens: Vec<BlindIndex>,
    reply: oneshot::Sender<Result<Answer, ClaimError>>,
}

enum Answer {
    /// The citizens whose holder this request changed.
    Changed(Vec<BlindIndex>),
    Holder(Option<String>),
}

impl Claims {
    /// Opens the claims of the ledger whose event stream is `ledger_stream`: makes the
    /// claims stream when missing (or checks that nothing can be deleted from it), folds
    /// every shard, copies the claims of an earlier version's bucket into the shards
    /// that have none, and starts one task per shard.
    pub async fn open(
        js: &jetstream::Context,
        ledger_stream: &str,
        replicas: usize,
    ) -> Result<Self, ClaimError> {
        let stream = open_stream(js, ledger_stream, replicas).await?;
        let publishes = Arc::new(tokio::sync::RwLock::new(()));
        let mut shards: Vec<Shard> = (0..CLAIM_SHARDS)
            .map(|i| Shard {
                js: js.clone(),
                stream: stream.clone(),
                subject: subject(ledger_stream, i),
                held: HashMap::new(),
                last: 0,
                publishes: publishes.clone(),
            })
            .collect();
        fold_all(&stream, ledger_stream, &mut shards).await?;
        migrate(js, ledger_stream, &mut shards).await?;
        let senders = shards
            .into_iter()
            .map(|shard| {
                let (send, receive) = mpsc::channel(CLAIM_QUEUE_MAX);
                tokio::spawn(shard.run(receive));
                send
            })
            .collect();
        Ok(Self {
            shards: senders,
            publishes,
            release_failures: Arc::default(),
        })
    }

    /// Test hook: no shard publishes a frame until the guard is dropped, as a stalled
    /// server would leave them; the claims wait in their shards.
    #[doc(hidden)]
    pub async fn hold_publishes(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.publishes.clone().write_owned().await
    }

    /// Test hook: the next `count` releases through this handle (and its clones) fail
    /// with `ClaimError::Nats` before they reach a shard, as a timed-out round would
    /// answer them.
    #[doc(hidden)]
    pub fn fail_releases(&self, count: usize) {
        self.release_failures
            .store(count, std::sync::atomic::Ordering::SeqCst);
    }

    async fn ask(
        &self,
        shard: usize,
        ask: Ask,
        citizens: Vec<BlindIndex>,
    ) -> Result<Answer, ClaimError> {
        let (reply, answer) = oneshot::channel();
        self.shards[shard]
            .send(Request {
                ask,
                citizens,
                reply,
            })
            .await
            .map_err(|_| ClaimError::Nats("the claims task has stopped".into()))?;
        answer
            .await
            .map_err(|_| ClaimError::Nats("the claims task has stopped".into()))?
    }

    /// One request to each shard the citizens fall in, all at once.
    async fn ask_each_shard(
        &self,
        citizens: &[BlindIndex],
        ask: impl Fn() -> Ask,
    ) -> Vec<Result<Answer, ClaimError>> {
        futures::future::join_all(
            by_shard(citizens)
                .into_iter()
                .map(|(shard, citizens)| self.ask(shard, ask(), citizens)),
        )
        .await
    }

    /// The household holding `citizen`, if any, as stored when asked (the shard folds
    /// what other processes wrote first).
    pub async fn holder(&self, citizen: &BlindIndex) -> Result<Option<String>, ClaimError> {
        match self
            .ask(shard_of(citizen), Ask::Holder, vec![*citizen])
            .await?
        {
            Answer::Holder(holder) => Ok(holder),
            Answer::Changed(_) => unreachable!("a lookup changes nothing"),
        }
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
        let (household, from) = (
            Holder::parse(household)?,
            from.map(Holder::parse).transpose()?,
        );
        let outcomes = self
            .ask_each_shard(citizens, || Ask::Take { household, from })
            .await;
        let mut taken = Vec::new();
        let mut first_error = None;
        for outcome in outcomes {
            match outcome {
                Ok(Answer::Changed(changed)) => taken.extend(changed),
                Ok(Answer::Holder(_)) => unreachable!("a claim answers what it changed"),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            // Best effort: a release that fails leaves a claim of `household`, which a
            // retry of the same command reuses.
            let _ = self.release(&household.id(), &taken).await;
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
        let household = Holder::parse(household)?;
        let failing = self.release_failures.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |left| left.checked_sub(1),
        );
        if failing.is_ok() {
            return Err(ClaimError::Nats("release failed by the test hook".into()));
        }
        let outcomes = self
            .ask_each_shard(citizens, || Ask::Release { household })
            .await;
        outcomes.into_iter().try_for_each(|o| o.map(|_| ()))
    }
}

fn by_shard(citizens: &[BlindIndex]) -> Vec<(usize, Vec<BlindIndex>)> {
    let mut shards: Vec<(usize, Vec<BlindIndex>)> = Vec::new();
    for citizen in citizens {
        let shard = shard_of(citizen);
        match shards.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, list)) => list.push(*citizen),
            None => shards.push((shard, vec![*citizen])),
        }
    }
    shards
}

/// Makes the claims stream when missing and checks it keeps everything. Several
/// processes starting together all create it, and JetStream answers each the same
/// stream (the configurations are equal); on a cluster a new stream's group may take
/// longer than one request to form, so it is tried again.
async fn open_stream(
    js: &jetstream::Context,
    ledger_stream: &str,
    replicas: usize,
) -> Result<stream::Stream, ClaimError> {
    let config = stream::Config {
        name: stream_name(ledger_stream),
        description: Some("ansinh: citizen claims, frames of blind index -> household".into()),
        subjects: vec![format!("{}*", subject_prefix(ledger_stream))],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        allow_direct: true,
        num_replicas: replicas.max(1),
        ..Default::default()
    };
    let mut attempt = 1;
    let stream = loop {
        let failed = match js.get_or_create_stream(config.clone()).await {
            Ok(stream) => break stream,
            Err(e) => format!("opening the claims stream {}: {e}", config.name),
        };
        if attempt >= STREAM_OPEN_ATTEMPTS_MAX {
            return Err(ClaimError::Nats(failed));
        }
        tracing::info!(attempt, error = %failed, "opening the claims stream: again");
        tokio::time::sleep(crate::kv_writes::BUCKET_OPEN_BACKOFF * attempt).await;
        attempt += 1;
    };
    let existing = &stream.cached_info().config;
    check_append_only(&config.name, existing, "claims").map_err(ClaimError::Unsafe)?;
    check_replicas(&config.name, existing, replicas).map_err(ClaimError::Unsafe)?;
    Ok(stream)
}

/// Folds every frame the stream holds now into its shard, in one pass.
async fn fold_all(
    stream: &stream::Stream,
    ledger_stream: &str,
    shards: &mut [Shard],
) -> Result<(), ClaimError> {
    let last = stream.cached_info().state.last_sequence;
    if last == 0 {
        return Ok(());
    }
    let prefix = subject_prefix(ledger_stream);
    let mut messages = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(nats)?
        .messages()
        .await
        .map_err(nats)?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(nats)?;
        let sequence = message.info().map_err(nats)?.stream_sequence;
        let shard = message
            .subject
            .strip_prefix(&prefix)
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .filter(|s| *s < CLAIM_SHARDS);
        if let Some(shard) = shard {
            shards[shard].fold(sequence, &message.payload);
        }
        if sequence >= last {
            break;
        }
    }
    Ok(())
}

/// The key, in the earlier version's bucket, that says its claims are all in the frames
/// (not a citizen's key: those are hex).
const COPIED_MARKER: &str = "copied-to-claims-stream";

/// Copies the claims an earlier version kept in the bucket into the shards, in frames of
/// at most `CLAIM_FRAME_BYTES_MAX`, each fenced on the shard's last frame; then marks the
/// bucket copied. A copy cut short (a publish failed, the process stopped) is taken up by
/// the next open, whichever process it is: each frame copies only claims its shard does
/// not hold yet, and of two processes copying at once the one that loses a fence folds
/// the other's frame and copies what is still left. A process serves no claim before its
/// copy is complete. (A claim copied, then released by a process that served before the
/// copy was marked done, would be copied again by a later open: that needs a crash in the
/// moment between the last frame and the mark.)
async fn migrate(
    js: &jetstream::Context,
    ledger_stream: &str,
    shards: &mut [Shard],
) -> Result<(), ClaimError> {
    let Ok(bucket) = js.get_key_value(bucket_name(ledger_stream)).await else {
        return Ok(());
    };
    if bucket.get(COPIED_MARKER).await.map_err(nats)?.is_some() {
        return Ok(());
    }
    let mut keys = bucket.keys().await.map_err(nats)?;
    let mut found: Vec<Vec<(BlindIndex, Holder)>> = vec![Vec::new(); CLAIM_SHARDS];
    while let Some(key) = keys.next().await {
        let key = key.map_err(nats)?;
        let Some(citizen) = hex::decode(&key)
            .ok()
            .and_then(|b| BlindIndex::try_from(b.as_slice()).ok())
        else {
            continue;
        };
        let Some(entry) = bucket.entry(&key).await.map_err(nats)? else {
            continue;
        };
        let held = entry.operation == kv::Operation::Put && !entry.value.is_empty();
        if let (true, Ok(household)) = (held, std::str::from_utf8(&entry.value)) {
            if let Ok(household) = Holder::parse(household) {
                found[shard_of(&citizen)].push((citizen, household));
            }
        }
    }
    for (shard, claims) in shards.iter_mut().zip(found) {
        let mut copied = 0usize;
        // Claims before `next` are in the shard's frames; one pass over the list.
        let mut next = 0usize;
        loop {
            // What the shard does not hold yet, as folded now: after a lost fence, the
            // other process's frames are folded in and not copied again.
            let mut frame = new_frame();
            let (mut in_frame, mut end) = (0usize, next);
            for (citizen, household) in &claims[next..] {
                if frame.len() + ENTRY_BYTES_MAX > CLAIM_FRAME_BYTES_MAX {
                    break;
                }
                end += 1;
                if !shard.held.contains_key(&folded(citizen)) {
                    put_entry(&mut frame, citizen, Some(*household));
                    in_frame += 1;
                }
            }
            if in_frame == 0 {
                if end == claims.len() {
                    break;
                }
                next = end;
                continue;
            }
            let frame = frame.freeze();
            match shard.publish(frame.clone()).await {
                Ok(sequence) => {
                    shard.fold(sequence, &frame);
                    copied += in_frame;
                    next = end;
                }
                // Another process wrote this shard first: fold its frames, copy the rest.
                Err(Published::Fenced) => shard.catch_up().await?,
                Err(Published::Failed(e)) => return Err(ClaimError::Nats(e)),
            }
        }
        if copied > 0 {
            tracing::info!(
                shard = %shard.subject,
                claims = copied,
                "citizen claims copied from the bucket of an earlier version"
            );
        }
    }
    bucket.put(COPIED_MARKER, "1".into()).await.map_err(nats)?;
    Ok(())
}

fn new_frame() -> BytesMut {
    let mut frame = BytesMut::with_capacity(4096);
    frame.put_u8(FRAME_VERSION);
    frame
}

fn put_entry(frame: &mut BytesMut, citizen: &BlindIndex, holder: Option<Holder>) {
    let holder = holder.map(Holder::id).unwrap_or_default();
    frame.put_slice(citizen);
    frame.put_u8(holder.len() as u8);
    frame.put_slice(holder.as_bytes());
}

/// The entries of a frame, or None if it is not one.
fn decode_frame(bytes: &[u8]) -> Option<Vec<(BlindIndex, Option<Holder>)>> {
    let (&version, mut rest) = bytes.split_first()?;
    if version != FRAME_VERSION {
        return None;
    }
    let mut entries = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 33 {
            return None;
        }
        let citizen = BlindIndex::try_from(&rest[..32]).ok()?;
        let len = usize::from(rest[32]);
        let holder = rest.get(33..33 + len)?;
        let holder = std::str::from_utf8(holder).ok()?;
        let holder = match holder {
            "" => None,
            id => Some(Holder::parse(id).ok()?),
        };
        entries.push((citizen, holder));
        rest = &rest[33 + len..];
    }
    Some(entries)
}

/// How a fenced publish of a frame ended.
enum Published {
    /// Another process wrote the shard since the last frame folded: nothing stored.
    Fenced,
    /// Unknown: the frame may or may not be stored.
    Failed(String),
}

/// One shard in this process: its claims as folded, and the task that writes them.
struct Shard {
    js: jetstream::Context,
    stream: stream::Stream,
    subject: String,
    held: HashMap<Folded, Holder>,
    /// Stream sequence of the last frame of this shard folded in (0: none).
    last: u64,
    /// `Claims::publishes`.
    publishes: Arc<tokio::sync::RwLock<()>>,
}

impl Shard {
    /// Replays one stored frame.
    fn fold(&mut self, sequence: u64, frame: &[u8]) {
        match decode_frame(frame) {
            Some(entries) => {
                for (citizen, holder) in entries {
                    match holder {
                        Some(household) => self.held.insert(folded(&citizen), household),
                        None => self.held.remove(&folded(&citizen)),
                    };
                }
            }
            None => tracing::error!(
                subject = %self.subject,
                sequence,
                "a claims frame that does not decode is skipped: its claims, if any, are lost"
            ),
        }
        self.last = sequence;
    }

    /// Folds the frames other processes wrote after `last`, one direct get each (a
    /// process writing one shard meets few of them).
    async fn catch_up(&mut self) -> Result<(), ClaimError> {
        loop {
            // "No responders" is tried again, as for a publish: a stream made a moment ago
            // may have no replica answering direct gets on this server yet. A timeout is
            // not: it already took the context's whole wait.
            let (stream, subject, after) = (&self.stream, self.subject.as_str(), self.last + 1);
            let next = crate::log::reader::retrying_transient(
                || stream.direct_get_next_for_subject(subject, Some(after)),
                |e: &stream::DirectGetError| {
                    matches!(
                        e.kind(),
                        stream::DirectGetErrorKind::ErrorResponse(
                            async_nats::StatusCode::NO_RESPONDERS,
                            _
                        )
                    )
                },
            )
            .await;
            match next {
                Ok(message) => self.fold(message.sequence, &message.payload),
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(nats(e)),
            }
        }
    }

    /// Makes the fold hold every frame the shard's subject stores now; returns whether
    /// it folded any. One request when there is none: the subject's first message after
    /// `last`, asked of the stream's leader (`STREAM.MSG.GET`) rather than by direct get,
    /// which any replica may answer before it has stored the latest frame: what a round
    /// that publishes nothing answers rests on this check alone.
    async fn fold_newer(&mut self) -> Result<bool, ClaimError> {
        let (stream, subject, after) = (&self.stream, self.subject.as_str(), self.last + 1);
        let newer = crate::log::reader::retrying_transient(
            || stream.get_first_raw_message_by_subject(subject, after),
            |e: &stream::RawMessageError| e.kind() == stream::RawMessageErrorKind::Other,
        )
        .await;
        match newer {
            Ok(message) => {
                self.fold(message.sequence, &message.payload);
                self.catch_up().await?;
                Ok(true)
            }
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(nats(e)),
        }
    }

    /// Publishes `frame` fenced on the last frame folded. "No responders" is tried again
    /// (`reader::retrying_transient`): on a cluster, a stream made a moment ago by another
    /// process (or electing its leader) has no subscriber on this server yet, and a
    /// message nobody received is not stored, so sending it again is safe.
    async fn publish(&self, frame: Bytes) -> Result<u64, Published> {
        let _not_held = self.publishes.read().await;
        let acked = crate::log::reader::retrying_transient(
            || self.publish_once(frame.clone()),
            |e: &PublishError| e.kind() == PublishErrorKind::StreamNotFound,
        )
        .await;
        match acked {
            Ok(sequence) => Ok(sequence),
            Err(e) if crate::kv_writes::fence_failed(&e) => Err(Published::Fenced),
            Err(e) => Err(Published::Failed(e.to_string())),
        }
    }

    async fn publish_once(&self, frame: Bytes) -> Result<u64, PublishError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            self.last.to_string().as_str(),
        );
        let ack = self
            .js
            .publish_with_headers(self.subject.clone(), headers, frame)
            .await?;
        Ok(ack.await?.sequence)
    }

    async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        while let Some(first) = requests.recv().await {
            let mut batch = vec![first];
            let mut bytes = batch[0].bytes();
            // Everything waiting that fits one frame.
            while let Ok(next) = requests.try_recv() {
                bytes += next.bytes();
                batch.push(next);
                if bytes >= CLAIM_FRAME_BYTES_MAX / 2 {
                    break;
                }
            }
            self.serve(batch).await;
        }
    }

    /// Decides the requests in order against the claims as folded, publishes their
    /// changes as one frame and answers them; after a lost fence, folds what it missed
    /// and decides them again. A round with no changes is answered once the subject is
    /// known to hold nothing newer than the fold (`fold_newer`).
    async fn serve(&mut self, batch: Vec<Request>) {
        let mut outcome = Err(ClaimError::Contended);
        for attempt in 0..CLAIM_ATTEMPTS_MAX {
            let (answers, changes) = self.decide(&batch);
            if changes.is_empty() {
                // Nothing to publish, so no fence checks the fold these answers come
                // from, and it may miss frames other processes wrote: a release of a
                // claim never folded here would free nothing, a claim the fold says is
                // the household's own would be admitted though another holds it now,
                // a lookup would answer what this process last saw. So the round is
                // answered only once the stored subject holds nothing newer, and
                // decided again on what it does hold.
                match self.fold_newer().await {
                    Ok(false) => {
                        outcome = Ok(self.answer_lookups(answers, &batch));
                        break;
                    }
                    Ok(true) => continue,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            let mut frame = new_frame();
            for (citizen, holder) in &changes {
                put_entry(&mut frame, citizen, *holder);
            }
            let frame = frame.freeze();
            match self.publish(frame.clone()).await {
                Ok(sequence) => {
                    self.fold(sequence, &frame);
                    outcome = Ok(self.answer_lookups(answers, &batch));
                    break;
                }
                Err(Published::Fenced) => {
                    // Caught up, the next try usually lands; if others keep writing, wait
                    // a random moment first, as the ledger's writer does, so processes
                    // do not keep meeting.
                    if attempt > 0 {
                        tokio::time::sleep(crate::log::writer::fence_backoff(attempt as u32)).await;
                    }
                    if let Err(e) = self.catch_up().await {
                        outcome = Err(e);
                        break;
                    }
                }
                Err(Published::Failed(e)) => {
                    // The frame may be stored: fold whatever is, so the next requests
                    // are decided on it (a retried claim finds its own).
                    let _ = self.catch_up().await;
                    outcome = Err(ClaimError::Nats(e));
                    break;
                }
            }
        }
        match outcome {
            Ok(answers) => {
                for (request, answer) in batch.into_iter().zip(answers) {
                    let _ = request.reply.send(answer);
                }
            }
            Err(e) => {
                let message = e.to_string();
                let contended = matches!(e, ClaimError::Contended);
                for request in batch {
                    let _ = request.reply.send(Err(if contended {
                        ClaimError::Contended
                    } else {
                        ClaimError::Nats(message.clone())
                    }));
                }
            }
        }
    }

    /// Each request's answer, and the frame's changes: the new holder of each citizen
    /// whose holder changes. Requests are decided in order, each seeing the ones before.
    #[allow(clippy::type_complexity)]
    fn decide(
        &self,
        batch: &[Request],
    ) -> (
        Vec<Result<Answer, ClaimError>>,
        Vec<(BlindIndex, Option<Holder>)>,
    ) {
        let mut changed: HashMap<BlindIndex, Option<Holder>> = HashMap::new();
        let mut answers = Vec::with_capacity(batch.len());
        for request in batch {
            let now = |changed: &HashMap<BlindIndex, Option<Holder>>, c: &BlindIndex| match changed
                .get(c)
            {
                Some(holder) => *holder,
                None => self.held.get(&folded(c)).copied(),
            };
            let answer = match request.ask {
                Ask::Take { household, from } => {
                    let refused = request
                        .citizens
                        .iter()
                        .find_map(|c| match now(&changed, c) {
                            Some(h) if h == household || from == Some(h) => None,
                            Some(h) => Some(h),
                            None => None,
                        });
                    match refused {
                        Some(holder) => Err(ClaimError::Held {
                            holder: holder.id(),
                        }),
                        None => {
                            let mut taken = Vec::new();
                            for c in &request.citizens {
                                if now(&changed, c) != Some(household) {
                                    changed.insert(*c, Some(household));
                                    taken.push(*c);
                                }
                            }
                            Ok(Answer::Changed(taken))
                        }
                    }
                }
                Ask::Release { household } => {
                    let mut freed = Vec::new();
                    for c in &request.citizens {
                        if now(&changed, c) == Some(household) {
                            changed.insert(*c, None);
                            freed.push(*c);
                        }
                    }
                    Ok(Answer::Changed(freed))
                }
                // Answered once the frame is stored (`answer_lookups`).
                Ask::Holder => Ok(Answer::Holder(None)),
            };
            answers.push(answer);
        }
        let changes = changed
            .into_iter()
            .filter(|(c, holder)| self.held.get(&folded(c)) != holder.as_ref())
            .collect();
        (answers, changes)
    }

    fn answer_lookups(
        &self,
        mut answers: Vec<Result<Answer, ClaimError>>,
        batch: &[Request],
    ) -> Vec<Result<Answer, ClaimError>> {
        for (answer, request) in answers.iter_mut().zip(batch) {
            if let Ask::Holder = request.ask {
                *answer = Ok(Answer::Holder(
                    request
                        .citizens
                        .first()
                        .and_then(|c| self.held.get(&folded(c)))
                        .map(|h| h.id()),
                ));
            }
        }
        answers
    }
}

impl Request {
    /// Bytes its changes may take in a frame, at most.
    fn bytes(&self) -> usize {
        self.citizens.len() * ENTRY_BYTES_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_to_what_was_put_and_refuse_anything_else() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let household = Holder::parse("0100007-000001").unwrap();
        let mut frame = new_frame();
        put_entry(&mut frame, &a, Some(household));
        put_entry(&mut frame, &b, None);
        assert_eq!(&frame[1 + 32..1 + 32 + 15], b"\x0e0100007-000001");
        let entries = decode_frame(&frame).unwrap();
        assert_eq!(entries, vec![(a, Some(household)), (b, None)]);
        assert_eq!(decode_frame(&[FRAME_VERSION]), Some(vec![]));
        let mut cut = frame.to_vec();
        cut.pop();
        assert_eq!(decode_frame(&cut), None);
        assert_eq!(decode_frame(&[2]), None);
        assert_eq!(decode_frame(&[]), None);
        // A holder that is not a household id does not decode either.
        let mut foreign = new_frame();
        foreign.put_slice(&a);
        foreign.put_u8(3);
        foreign.put_slice(b"abc");
        assert_eq!(decode_frame(&foreign), None);
    }

    #[test]
    fn a_household_id_packs_into_eight_bytes_and_back() {
        for id in [
            "0100007-000001",
            "9699999-999999",
            "0000000-000000",
            "7900001-120034",
        ] {
            if let Ok(holder) = Holder::parse(id) {
                assert_eq!(holder.id(), id);
            }
        }
        assert_eq!(
            Holder::parse("0100007-000001").unwrap().id(),
            "0100007-000001"
        );
        for bad in [
            "",
            "0100007000001",
            "0100007-00001",
            "abcdefg-000001",
            "0100007-0000012",
        ] {
            assert!(
                matches!(Holder::parse(bad), Err(ClaimError::NotAHousehold { .. })),
                "{bad}"
            );
        }
    }
}
