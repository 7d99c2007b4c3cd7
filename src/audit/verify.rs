//! `ansinh audit verify`: streams the log, recomputes every hash, checks every link.
//! Memory is one head per partition, whatever the log's length.

use std::collections::BTreeMap;

use async_nats::jetstream::stream::Stream;

use crate::chain::{ChainBreak, ChainHead, Digest, Partition};
use crate::log::follow::{Follower, Step};
use crate::log::{LogConfig, RawEvent, reader};
use crate::proto::Envelope;
use crate::proto::envelope::Payload;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionReport {
    pub events: u64,
    pub head: Digest,
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub partitions: BTreeMap<String, PartitionReport>,
    pub events: u64,
    /// The operator's exclusions met, in stream order (CHAIN.md, section 4a): each held
    /// message and the event that excluded it, the first `EXCLUSIONS_LISTED_MAX`. A
    /// report holds them only once each signature checked out against the ledger's keys
    /// stored before it (`log::follow`).
    pub exclusions: Vec<ExclusionSeen>,
    /// Every exclusion met, listed or not.
    pub exclusions_total: u64,
    /// Stray messages passed over (on a subject that names no partition, so in no chain:
    /// `LogConfig::chain_of`): how many, and the first `STRAY_LISTED_MAX` of them.
    pub stray_messages: u64,
    pub stray: Vec<StrayMessage>,
}

/// Exclusions a verify report lists one by one; past these it counts them. Each is
/// checked as it is met, so a verify holds no more than these, however many there are.
pub const EXCLUSIONS_LISTED_MAX: usize = 1_000;

/// Stray messages a verify report lists one by one; past these it counts them. The stream
/// takes what anyone with a publish right sends, so a flood must not fill memory.
pub const STRAY_LISTED_MAX: usize = 100;

/// A message on the log's subjects that names no partition: in no chain, passed over by
/// every reader, reported by verify (docs/CHAIN.md, section 4b).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrayMessage {
    pub stream_sequence: u64,
    pub subject: String,
}

/// Characters of an exclusion's reason a verify keeps and reports (the operator's reasons
/// are a line); longer ones end in "…".
pub const EXCLUSION_REASON_KEPT_MAX: usize = 512;
/// Characters of an exclusion's key id a verify keeps: a ledger key's id is 16, so a
/// longer one names no key, kept or cut.
const EXCLUSION_KEY_ID_KEPT_MAX: usize = 64;

/// The first `max` characters of `words`, with "…" when cut.
fn kept(words: &str, max: usize) -> String {
    match words.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &words[..end]),
        None => words.to_string(),
    }
}

/// A message passed over by an operator's exclusion, which the chain's follower took only
/// once its signature checked out (`log::follow`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExclusionSeen {
    pub partition: String,
    /// The excluded message (of a run: its first) and why it broke the chain.
    pub stream_sequence: u64,
    pub message_hash: Digest,
    pub cause: ChainBreak,
    /// The run's last message and how many it holds (one message: itself and 1).
    pub through_stream_sequence: u64,
    pub count: u64,
    /// The exclusion event: its partition sequence and stream sequence, and what it says.
    pub decided_at_sequence: u64,
    pub decided_at_stream_sequence: u64,
    pub recorded_at_unix_ms: i64,
    pub decision: crate::proto::MessageExcluded,
}

impl ExclusionSeen {
    /// The exclusion `envelope` (of `event`, in `partition`) of the messages `held`;
    /// None when its payload is not an exclusion.
    pub fn new(
        partition: &str,
        held: crate::log::follow::Excluded,
        event: &RawEvent,
        envelope: &Envelope,
    ) -> Option<Self> {
        let Some(Payload::MessageExcluded(decision)) = &envelope.payload else {
            return None;
        };
        // Owned copies, and the words bounded: the decoded fields are slices of the whole
        // message (up to a frame's size), and the reason and key id, which the signature
        // does not bound, may be as long as an event. A report keeps up to
        // `EXCLUSIONS_LISTED_MAX` of these.
        let decision = crate::proto::MessageExcluded {
            message_hash: bytes::Bytes::copy_from_slice(&decision.message_hash),
            signature: bytes::Bytes::copy_from_slice(&decision.signature),
            run_hash: bytes::Bytes::copy_from_slice(&decision.run_hash),
            reason: kept(&decision.reason, EXCLUSION_REASON_KEPT_MAX),
            key_id: kept(&decision.key_id, EXCLUSION_KEY_ID_KEPT_MAX),
            ..decision.clone()
        };
        Some(ExclusionSeen {
            partition: partition.to_string(),
            stream_sequence: held.first.stream_sequence,
            message_hash: held.first.message_hash,
            cause: held.first.cause,
            through_stream_sequence: held.through_stream_sequence,
            count: held.count,
            decided_at_sequence: envelope.sequence,
            decided_at_stream_sequence: event.stream_sequence,
            recorded_at_unix_ms: envelope.recorded_at_unix_ms,
            decision,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The chain is broken here; nothing after it is trusted. Investigate this event.
    /// The first broken partition by name; `also` lists every other one, so one run
    /// finds (and stops) every partition a damaged disk broke.
    #[error(
        "partition {partition}: event at stream sequence {stream_sequence} (expected partition sequence {expected_sequence}) is bad: {cause}{}",
        also_broken(also)
    )]
    Broken {
        partition: String,
        stream_sequence: u64,
        expected_sequence: u64,
        cause: ChainBreak,
        also: Vec<BrokenPartition>,
    },
    /// The server could not be read; retry.
    #[error("reading the log: {0}")]
    Nats(String),
}

/// A partition whose chain is broken besides the one `VerifyError::Broken` names.
#[derive(Debug, Clone)]
pub struct BrokenPartition {
    pub partition: String,
    pub stream_sequence: u64,
    pub expected_sequence: u64,
    pub cause: ChainBreak,
}

impl std::fmt::Display for BrokenPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "partition {}: event at stream sequence {} (expected partition sequence {}) is bad: {}",
            self.partition, self.stream_sequence, self.expected_sequence, self.cause
        )
    }
}

fn also_broken(also: &[BrokenPartition]) -> String {
    also.iter().map(|b| format!("; and {b}")).collect()
}

/// Stops appends to every partition whose chain `error` found broken (a damaged or
/// missing message, a forgery), in the ledger's store, with the verdict as the reason;
/// returns the first. A read failure stops nothing: it says nothing about one
/// partition's chain. The operator resumes appends with `ansinh admin
/// accept-head` once the chain verifies again.
pub fn quarantine_broken(
    store: &crate::log::LedgerStore,
    error: &VerifyError,
) -> Result<Option<String>, crate::log::StoreError> {
    let VerifyError::Broken {
        partition,
        stream_sequence,
        expected_sequence,
        cause,
        also,
    } = error
    else {
        return Ok(None);
    };
    let first = BrokenPartition {
        partition: partition.clone(),
        stream_sequence: *stream_sequence,
        expected_sequence: *expected_sequence,
        cause: cause.clone(),
    };
    for broken in std::iter::once(&first).chain(also) {
        if store.quarantined(&broken.partition)?.is_none() {
            store.quarantine(
                &broken.partition,
                &format!(
                    "verify found the chain broken at stream sequence {}: {broken}",
                    broken.stream_sequence
                ),
            )?;
        }
    }
    Ok(Some(partition.clone()))
}

/// Verifies the whole log or one partition, and the signature of every exclusion met
/// against the ledger's keys in `keys_partition`. `progress` is called with the stream
/// sequence of every event checked (for a progress bar).
pub async fn verify(
    stream: &mut Stream,
    config: &LogConfig,
    keys_partition: &Partition,
    only: Option<&Partition>,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, VerifyError> {
    verify_with(stream, config, keys_partition, only, |seq, _| progress(seq)).await
}

/// Like `verify`, and hands every verified envelope (with its stream sequence) to
/// `on_event`: audits that read payloads see only events whose chain checked out. Every
/// caller (`audit verify`, serve's periodic verify, the scans) gets the same verdict: a
/// chain passes over a message only by an exclusion the ledger signed.
pub async fn verify_with(
    stream: &mut Stream,
    config: &LogConfig,
    keys_partition: &Partition,
    only: Option<&Partition>,
    mut on_event: impl FnMut(u64, &crate::proto::Envelope),
) -> Result<VerifyReport, VerifyError> {
    let end = reader::last_stream_sequence(stream)
        .await
        .map_err(VerifyError::Nats)?;
    let filter = match only {
        Some(p) => config.subject(p),
        None => config.wildcard(),
    };
    // Read once it is known where the log ends, so it holds every key event stored
    // before any exclusion read: each exclusion is judged by the keys stored before it
    // (docs/CHAIN.md, section 4a), as every reader judges it.
    let history = crate::checkpoint::read::extend_key_ring(
        stream,
        config,
        crate::checkpoint::read::KeyRingAt::genesis(keys_partition.clone()),
    )
    .await
    .map_err(|e| VerifyError::Nats(e.to_string()))?;
    let mut heads: BTreeMap<String, Follower> = BTreeMap::new();
    let mut report = VerifyReport::default();
    let visit = |event: reader::RawEvent| -> Result<(), VerifyError> {
        let Some(partition) = config.chain_of(&event.subject) else {
            report.stray_messages += 1;
            if report.stray.len() < STRAY_LISTED_MAX {
                report.stray.push(StrayMessage {
                    stream_sequence: event.stream_sequence,
                    subject: event.subject.clone(),
                });
            }
            return Ok(());
        };
        let name = partition.as_str();
        let follower = match heads.get_mut(name) {
            Some(f) => f,
            None => heads
                .entry(name.to_string())
                .or_insert(Follower::new(ChainHead::genesis(partition.clone()))),
        };
        let Step::Event { envelope, excluded } = follower.follow(&event, history.keys()) else {
            return Ok(()); // held: an exclusion may follow
        };
        // Taken only once its signature checked out (`log::follow`); counted, and the
        // first `EXCLUSIONS_LISTED_MAX` listed.
        if let Some(held) = excluded {
            report.exclusions_total += 1;
            if report.exclusions.len() < EXCLUSIONS_LISTED_MAX {
                report
                    .exclusions
                    .extend(ExclusionSeen::new(name, held, &event, &envelope));
            }
        }
        report.events += 1;
        on_event(event.stream_sequence, &envelope);
        Ok(())
    };
    reader::read_range(stream, &filter, 1, end, visit)
        .await
        .map_err(|e| match e {
            reader::ReadError::Nats(m) => VerifyError::Nats(m),
            reader::ReadError::Visit(v) => v,
        })?;
    // Every broken partition, in name order: the first is the verdict, the others go
    // with it, so one run stops them all.
    let mut broken = heads.iter().filter_map(|(name, follower)| {
        follower.finish().err().map(|b| BrokenPartition {
            partition: name.clone(),
            stream_sequence: b.stream_sequence,
            expected_sequence: b.expected_sequence,
            cause: b.cause,
        })
    });
    if let Some(first) = broken.next() {
        return Err(VerifyError::Broken {
            partition: first.partition,
            stream_sequence: first.stream_sequence,
            expected_sequence: first.expected_sequence,
            cause: first.cause,
            also: broken.collect(),
        });
    }
    report.partitions = heads
        .into_iter()
        .map(|(name, follower)| {
            (
                name,
                PartitionReport {
                    events: follower.head.sequence,
                    head: follower.head.hash,
                },
            )
        })
        .collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::follow::{Excluded, Held};
    use crate::proto::MessageExcluded;
    use bytes::Bytes;
    use prost::Message as _;

    #[test]
    fn an_exclusion_seen_keeps_nothing_of_its_message_and_a_bounded_reason() {
        let decision = MessageExcluded {
            stream_sequence: 2,
            message_hash: vec![1; 32].into(),
            reason: "lý do ".repeat(20_000),
            key_id: "k".repeat(70_000),
            signature: vec![2; 64].into(),
            ..Default::default()
        };
        let message: Bytes = Envelope {
            format_version: 1,
            partition: "01".into(),
            sequence: 2,
            payload: Some(Payload::MessageExcluded(decision.clone())),
            ..Default::default()
        }
        .encode_to_vec()
        .into();
        let envelope = Envelope::decode(message.clone()).unwrap();
        let event = RawEvent {
            stream_sequence: 3,
            index: 0,
            last_in_message: true,
            subject: "ansinh.v1.events.01".into(),
            hash: crate::chain::event_hash(&message),
            payload: message.clone(),
            header_hash: None,
            header_sequence: None,
            malformed: None,
            message: message.clone(),
        };
        let first = Held {
            stream_sequence: 2,
            message_hash: Digest([1; 32]),
            expected_sequence: 2,
            cause: ChainBreak::Message("foreign".into()),
        };
        let held = Excluded {
            first,
            through_stream_sequence: 2,
            count: 1,
        };
        let seen = ExclusionSeen::new("01", held, &event, &envelope).unwrap();
        drop((event, envelope));
        assert!(
            message.is_unique(),
            "the exclusion keeps no slice of its message"
        );
        assert_eq!(
            seen.decision.reason.chars().count(),
            EXCLUSION_REASON_KEPT_MAX + 1
        );
        assert!(seen.decision.reason.ends_with('…'));
        assert_eq!(
            seen.decision.key_id.chars().count(),
            EXCLUSION_KEY_ID_KEPT_MAX + 1
        );
        assert_eq!(
            (&seen.decision.message_hash, &seen.decision.signature),
            (&decision.message_hash, &decision.signature)
        );
    }
}
