//! Reading back what checkpoints are built from and stored as: a partition's chain
//! (every link checked again), the key ring, checkpoints and cosignatures.

use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::stream::Stream;
use prost::Message;

use super::CheckpointError;
use super::keys::KeyRing;
use super::sign::CheckpointBody;
use super::stream::CheckpointConfig;
use crate::chain::{ChainHead, Partition};
use crate::log::follow::{Follower, Holding, Keys, Step};
use crate::log::{LogConfig, Position, RawEvent, reader};
use crate::proto::{self, Envelope, envelope::Payload};

/// Where a chain read stands: the head and where its last event sits (a read that
/// stopped inside a frame resumes inside it).
#[derive(Clone, Debug)]
pub struct ChainPosition {
    pub head: ChainHead,
    pub read: Position,
    /// Messages read that broke the chain, waiting for the operator's exclusion
    /// (`log::follow`).
    pub held: Holding,
    /// Of the key partition: the key history its chain registered up to `head`, which
    /// judges the rotations read next (`Follower::resume_with_keys`). None elsewhere, and
    /// for a position made from a stored head (a chunk of `pieces`), which then holds any
    /// rotation it meets: a proof from such a chunk does not check, and is made from the
    /// whole chain instead.
    pub keys: Option<KeyRing>,
}

impl ChainPosition {
    pub fn genesis(partition: Partition) -> Self {
        let head = ChainHead::genesis(partition);
        let keys = crate::log::follow::is_key_history(&head).then(KeyRing::default);
        Self {
            head,
            read: Position::START,
            held: Holding::default(),
            keys,
        }
    }
}

/// What a chain visitor wants next.
pub enum Next {
    Continue,
    /// Enough read: stop without error.
    Stop,
}

enum Halt {
    Stop,
    Failed(CheckpointError),
    /// An exclusion that names what is held: the key history is read to judge it.
    KeysNeeded,
}

fn nats(e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Nats(e.to_string())
}

/// Where a chain read finds the key history that judges exclusions.
#[derive(Clone, Copy, Debug)]
pub enum Exclusions<'a> {
    /// Read from this partition, the key partition, at the first exclusion that names
    /// what is held (exclusions are rare). Only one signed by a ledger key of the
    /// history stored before it is taken; a forged one is held with what it names
    /// (`log::follow`), so the readers stop where `audit verify` does, and the
    /// operator's exclusion of the run lets them all go on.
    SignedBy(&'a Partition),
    /// Reading the key partition itself: its exclusions are judged by the history its
    /// own chain registered before them (`ChainPosition::keys`).
    OfTheKeyHistory,
}

/// Reads the events of `position.head.partition` after `position`, checking each with
/// `chain::check_next` and each exclusion as `exclusions` says, and hands each to
/// `visit` with its new head. Returns the position after the last event visited.
/// Memory is constant.
pub async fn read_chain(
    events: &Stream,
    log: &LogConfig,
    position: ChainPosition,
    exclusions: Exclusions<'_>,
    visit: impl FnMut(&ChainHead, &RawEvent, &Envelope) -> Result<Next, CheckpointError>,
) -> Result<ChainPosition, CheckpointError> {
    read_chain_through(events, log, position, None, exclusions, visit).await
}

/// `read_chain`, reading no message past stream sequence `through` when given: a reader
/// that knows where what it wants ends (a proof's chunk, `pieces`) does not have the
/// read-ahead pull thousands of events past it.
pub async fn read_chain_through(
    events: &Stream,
    log: &LogConfig,
    mut position: ChainPosition,
    through: Option<u64>,
    exclusions: Exclusions<'_>,
    mut visit: impl FnMut(&ChainHead, &RawEvent, &Envelope) -> Result<Next, CheckpointError>,
) -> Result<ChainPosition, CheckpointError> {
    let subject = log.subject(&position.head.partition);
    let Some(last) = reader::last_on_subject(events, &subject)
        .await
        .map_err(nats)?
    else {
        return Ok(position);
    };
    let end = through.map_or(last.stream_sequence, |t| t.min(last.stream_sequence));
    let mut follower = Follower::resume_with_keys(
        position.head.clone(),
        std::mem::take(&mut position.held),
        position.keys.take(),
    );
    let mut read = position.read;
    // Read once, at the first exclusion that needs it.
    let mut history: Option<KeyRingAt> = None;
    loop {
        if read.covers(&last) || read.resume_at() > end {
            break;
        }
        let after = read;
        let keys = match &history {
            Some(at) => Keys::Stored {
                ring: &at.ring,
                stored_at: &at.stored_at,
            },
            None => Keys::NotRead,
        };
        let step = |event: RawEvent| -> Result<(), Halt> {
            let followed = follower.follow(&event, keys);
            if let Step::KeysNeeded = followed {
                // The event is read again once the history is.
                return Err(Halt::KeysNeeded);
            }
            read = Position::after(&event);
            let Step::Event { envelope, .. } = followed else {
                return Ok(()); // held: an exclusion may follow
            };
            match visit(&follower.head, &event, &envelope).map_err(Halt::Failed)? {
                Next::Continue => Ok(()),
                Next::Stop => Err(Halt::Stop),
            }
        };
        let result = reader::read_after(events, &subject, after, end, step).await;
        match result {
            Ok(_) | Err(reader::ReadError::Visit(Halt::Stop)) => break,
            Err(reader::ReadError::Visit(Halt::Failed(e))) => return Err(e),
            Err(reader::ReadError::Nats(m)) => return Err(CheckpointError::Nats(m)),
            Err(reader::ReadError::Visit(Halt::KeysNeeded)) => {}
        }
        let Exclusions::SignedBy(keys_partition) = exclusions else {
            unreachable!("the key partition's follower judges with its own history")
        };
        if history.is_some() {
            unreachable!("a follower given the key history never needs it");
        }
        // Boxed: the key history is read with `read_chain` too (`OfTheKeyHistory`, which
        // never comes here).
        let genesis = KeyRingAt::genesis(keys_partition.clone());
        history = Some(Box::pin(extend_key_ring(events, log, genesis)).await?);
    }
    position.head = follower.head.clone();
    position.held = follower.held().clone();
    position.keys = follower.key_ring().cloned();
    position.read = read;
    Ok(position)
}

/// The ledger's key history from the key partition (its chain checked too).
pub async fn read_key_ring(
    events: &Stream,
    log: &LogConfig,
    config: &CheckpointConfig,
) -> Result<KeyRing, CheckpointError> {
    read_key_ring_in(events, log, &config.keys_partition).await
}

/// The ledger's key history from `keys_partition` (its chain checked too).
pub async fn read_key_ring_in(
    events: &Stream,
    log: &LogConfig,
    keys_partition: &Partition,
) -> Result<KeyRing, CheckpointError> {
    Ok(
        extend_key_ring(events, log, KeyRingAt::genesis(keys_partition.clone()))
            .await?
            .ring,
    )
}

/// A key ring and the position in the key partition it was read to: a reader that asks
/// for the current key often keeps one and reads only the key events added since.
#[derive(Clone, Debug)]
pub struct KeyRingAt {
    pub ring: KeyRing,
    /// The stream sequence of each key's event, in the ring's order: which keys an
    /// exclusion stored at a given stream sequence may be signed by
    /// (`KeyRing::signer_before`).
    pub stored_at: Vec<u64>,
    pub position: ChainPosition,
}

impl KeyRingAt {
    pub fn genesis(keys_partition: Partition) -> Self {
        Self {
            ring: KeyRing::default(),
            stored_at: Vec::new(),
            position: ChainPosition::genesis(keys_partition),
        }
    }

    /// As a follower judges exclusions by it.
    pub fn keys(&self) -> Keys<'_> {
        Keys::Stored {
            ring: &self.ring,
            stored_at: &self.stored_at,
        }
    }
}

/// `at` with the key events stored after it folded in (their chain checked too). The
/// current key is the ring's last, that is the last *key event* of the chain: a note at
/// the partition's tail, or a foreign message held there, does not hide it. A rotation
/// the key before it did not sign is held by the chain's follower like a foreign
/// message (`log::follow`), never taken into the ring: so the ring stops where every
/// reader of the partition stops, and the operator's exclusion lets it go on.
pub async fn extend_key_ring(
    events: &Stream,
    log: &LogConfig,
    at: KeyRingAt,
) -> Result<KeyRingAt, CheckpointError> {
    let KeyRingAt {
        ring,
        mut stored_at,
        mut position,
    } = at;
    if position.keys.is_none() {
        // The follower judges rotations against the ring the position was read to.
        position.keys = Some(ring);
    }
    let position = read_chain(
        events,
        log,
        position,
        Exclusions::OfTheKeyHistory,
        |_, event, envelope| {
            // Visited, a rotation is in the chain: the follower's ring took it.
            if let Some(Payload::LedgerKeyRotated(_)) = &envelope.payload {
                stored_at.push(event.stream_sequence);
            }
            Ok(Next::Continue)
        },
    )
    .await?;
    let ring = position.keys.clone().unwrap_or_default();
    debug_assert_eq!(ring.keys().len(), stored_at.len());
    Ok(KeyRingAt {
        ring,
        stored_at,
        position,
    })
}

/// The key history `keys_partition`'s chain registered up to the event of sequence
/// `head.sequence`, which must be `head` (a writer's or projector's stored head): what a
/// reader resuming there needs to judge the rotations it reads next. None when the
/// chain does not reach `head` with its hash (a head stored past a rotation readers now
/// hold): the reader then holds every rotation after it.
pub async fn key_ring_at(
    events: &Stream,
    log: &LogConfig,
    head: &ChainHead,
) -> Result<Option<KeyRing>, CheckpointError> {
    if head.sequence == 0 {
        return Ok(Some(KeyRing::default()));
    }
    let position = read_chain(
        events,
        log,
        ChainPosition::genesis(head.partition.clone()),
        Exclusions::OfTheKeyHistory,
        |at, _, _| {
            Ok(if at.sequence >= head.sequence {
                Next::Stop
            } else {
                Next::Continue
            })
        },
    )
    .await?;
    Ok((position.head == *head).then_some(position.keys).flatten())
}

/// A checkpoint as stored. `body` is decoded but its signature is not yet checked.
#[derive(Clone, Debug)]
pub struct StoredCheckpoint {
    pub stream_sequence: u64,
    pub signed: proto::SignedCheckpoint,
    pub body: CheckpointBody,
}

/// Decodes one stored checkpoint message (no signature check). The checkpoint stream
/// holds no frames: the message is its whole payload, whatever headers it carries.
pub fn decode_checkpoint(event: &RawEvent) -> Result<StoredCheckpoint, CheckpointError> {
    let signed = proto::SignedCheckpoint::decode(event.message.as_ref()).map_err(|e| {
        CheckpointError::Undecodable {
            stream_sequence: event.stream_sequence,
            reason: format!("not a SignedCheckpoint: {e}"),
        }
    })?;
    let body =
        CheckpointBody::decode(&signed.checkpoint).map_err(|cause| CheckpointError::Signature {
            stream_sequence: event.stream_sequence,
            cause,
        })?;
    Ok(StoredCheckpoint {
        stream_sequence: event.stream_sequence,
        signed,
        body,
    })
}

/// How many messages of the checkpoint stream a reader has read: what a request cost,
/// whatever the stream holds (a proof must not read every checkpoint of its partition).
#[derive(Debug, Default)]
pub struct ReadCount(AtomicU64);

impl ReadCount {
    pub fn add(&self, messages: u64) {
        self.0.fetch_add(messages, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Visits the messages of one subject of the checkpoint stream from stream sequence
/// `from`, in order, until `visit` says `Next::Stop` or the subject's last message;
/// returns how many it visited. Memory is the reader's read-ahead, however many the
/// subject holds. The stream holds no frames: a message is visited once, whatever
/// headers it carries (`decode_checkpoint` reads the whole of it).
pub async fn scan_subject(
    stream: &Stream,
    subject: &str,
    from: u64,
    read: &ReadCount,
    mut visit: impl FnMut(&RawEvent) -> Result<Next, CheckpointError>,
) -> Result<u64, CheckpointError> {
    let Some(last) = reader::last_on_subject(stream, subject)
        .await
        .map_err(nats)?
    else {
        return Ok(0);
    };
    read.add(1);
    let mut visited = 0;
    let scan = reader::read_range(stream, subject, from, last.stream_sequence, |e| {
        if e.index > 0 {
            return Ok(());
        }
        visited += 1;
        read.add(1);
        match visit(&e) {
            Ok(Next::Continue) => Ok(()),
            Ok(Next::Stop) => Err(None),
            Err(e) => Err(Some(e)),
        }
    })
    .await;
    match scan {
        Ok(_) | Err(reader::ReadError::Visit(None)) => Ok(visited),
        Err(reader::ReadError::Visit(Some(e))) => Err(e),
        Err(reader::ReadError::Nats(m)) => Err(CheckpointError::Nats(m)),
    }
}

/// The first message of `subject` at or after stream sequence `from`: one request.
pub async fn first_from(
    stream: &Stream,
    subject: &str,
    from: u64,
    read: &ReadCount,
) -> Result<Option<RawEvent>, CheckpointError> {
    let found = reader::first_on_subject_from(stream, subject, from)
        .await
        .map_err(nats)?
        .and_then(|events| events.into_iter().next());
    read.add(found.is_some().into());
    Ok(found)
}

/// The last message of `subject` stored before stream sequence `before`, found by a
/// binary search over stream sequences with `first_from` (the server has no "previous
/// on subject"): at most 1 + log2(`before`) requests, however many messages lie before.
pub async fn last_before(
    stream: &Stream,
    subject: &str,
    before: u64,
    read: &ReadCount,
) -> Result<Option<RawEvent>, CheckpointError> {
    // The answer, if any, is in lo..=hi, or is `found`, the latest seen below lo.
    let (mut lo, mut hi) = (1u64, before.saturating_sub(1));
    let mut found = None;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        match first_from(stream, subject, mid, read).await? {
            Some(m) if m.stream_sequence <= hi => {
                lo = m.stream_sequence + 1;
                found = Some(m);
            }
            // Nothing in mid..=hi.
            _ => hi = mid - 1,
        }
    }
    Ok(found)
}

/// How many messages the subject holds, from the stream's info (valid checkpoints or
/// not): one request.
pub async fn subject_messages(stream: &Stream, subject: &str) -> Result<u64, CheckpointError> {
    use futures::TryStreamExt;
    let mut count = 0;
    let mut subjects = stream.info_with_subjects(subject).await.map_err(nats)?;
    while let Some((_, n)) = subjects.try_next().await.map_err(nats)? {
        count += u64::try_from(n).unwrap_or(0);
    }
    Ok(count)
}

/// A cosignature as stored (signature not yet checked).
#[derive(Clone, Debug)]
pub struct StoredCosignature {
    pub stream_sequence: u64,
    pub cosignature: proto::Cosignature,
}

/// Decodes one stored cosignature message (no signature check).
pub fn decode_cosignature(e: &RawEvent) -> Result<StoredCosignature, CheckpointError> {
    proto::Cosignature::decode(e.message.as_ref())
        .map(|cosignature| StoredCosignature {
            stream_sequence: e.stream_sequence,
            cosignature,
        })
        .map_err(|err| CheckpointError::Undecodable {
            stream_sequence: e.stream_sequence,
            reason: format!("not a Cosignature: {err}"),
        })
}

/// The partitions that have at least one message under `filter` on `stream`, found by
/// asking the server for its subjects; `strip` maps a subject to a partition name.
pub async fn partitions_on(
    stream: &Stream,
    filter: &str,
    strip: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Partition>, CheckpointError> {
    use futures::TryStreamExt;
    let mut subjects = stream.info_with_subjects(filter).await.map_err(nats)?;
    let mut out = std::collections::BTreeSet::new();
    while let Some((subject, _count)) = subjects.try_next().await.map_err(nats)? {
        if let Some(name) = strip(&subject) {
            if let Ok(p) = Partition::new(&name) {
                out.insert(p);
            }
        }
    }
    Ok(out.into_iter().collect())
}
