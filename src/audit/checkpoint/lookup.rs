//! Finding one checkpoint of a partition without reading the others: the latest valid
//! one, or the one of a given size. What a person waits on (a proof, a cosignature, a
//! bundle, a status page) costs a few requests to the server, however many checkpoints
//! the partition has had (one a checkpoint interval, for years).
//!
//! Anyone with the right to publish on the checkpoint stream can store messages that
//! are not the ledger's checkpoints there; the stream denies delete, so they stay. A
//! lookup passes over them: up to `INVALID_PASSED_MAX` in a row one request each, and
//! past that by reading the subject through once (constant memory), so a flood costs
//! time, never a wrong answer.
//!
//! **Invariant relied on:** the ledger's valid checkpoints of a partition are stored in
//! increasing `tree_size` (each is published fenced on the subject's last message and
//! covers more events than the latest valid one). `Auditor::verify` reports any that is
//! not. A search by size that such a checkpoint misleads finds nothing, never another
//! checkpoint, and its "nothing" is confirmed by reading the subject through. The latest
//! is the subject's last valid message, as the checkpointer builds on: a copy of an
//! earlier valid checkpoint stored again at the end (only a holder of the ledger's
//! publish right can) makes it that earlier one until the next is published.

use async_nats::jetstream::stream::Stream;

use super::CheckpointError;
use super::audit::{VerifiedCheckpoint, valid_checkpoint};
use super::keys::KeyRing;
use super::read::{self, Next, ReadCount};
use super::stream::CheckpointConfig;
use crate::chain::Partition;
use crate::log::RawEvent;
use crate::log::reader;

/// Invalid messages in a row a lookup passes over one request each; past this, it reads
/// the subject through once instead.
pub const INVALID_PASSED_MAX: u64 = 64;

/// A partition's checkpoint subject, read for one checkpoint at a time.
pub struct Lookup<'a> {
    checkpoints: &'a Stream,
    subject: String,
    partition: &'a Partition,
    ring: &'a KeyRing,
    read: &'a ReadCount,
}

/// The latest valid checkpoint, and why the subject's last message is not it.
#[derive(Debug, Default)]
pub struct Latest {
    pub valid: Option<VerifiedCheckpoint>,
    /// Why the subject's last message is not a valid checkpoint, when it is not.
    pub last_problem: Option<CheckpointError>,
}

/// Why a walk stopped without an answer.
enum Walk {
    /// More than INVALID_PASSED_MAX invalid messages in a row.
    Flooded,
    Failed(CheckpointError),
}

impl From<CheckpointError> for Walk {
    fn from(e: CheckpointError) -> Self {
        Walk::Failed(e)
    }
}

impl<'a> Lookup<'a> {
    pub fn new(
        checkpoints: &'a Stream,
        config: &CheckpointConfig,
        partition: &'a Partition,
        ring: &'a KeyRing,
        read: &'a ReadCount,
    ) -> Self {
        Self {
            checkpoints,
            subject: config.checkpoint_subject(partition),
            partition,
            ring,
            read,
        }
    }

    fn valid(&self, message: &RawEvent) -> Result<VerifiedCheckpoint, CheckpointError> {
        valid_checkpoint(self.ring, self.partition, read::decode_checkpoint(message))
    }

    /// The partition's latest valid checkpoint: the subject's last message, or the
    /// valid one before the invalid messages stored after it.
    pub async fn latest(&self) -> Result<Latest, CheckpointError> {
        let last = reader::last_on_subject(self.checkpoints, &self.subject)
            .await
            .map_err(|e| CheckpointError::Nats(e.to_string()))?;
        let Some(last) = last else {
            return Ok(Latest::default());
        };
        self.read.add(1);
        let last_problem = match self.valid(&last) {
            Ok(valid) => {
                return Ok(Latest {
                    valid: Some(valid),
                    last_problem: None,
                });
            }
            Err(e) => e,
        };
        let valid = match self.walk_back(last.stream_sequence).await {
            Ok(found) => found,
            Err(Walk::Failed(e)) => return Err(e),
            Err(Walk::Flooded) => {
                tracing::warn!(
                    partition = %self.partition,
                    "more than {INVALID_PASSED_MAX} invalid checkpoint messages in a row: reading the subject through"
                );
                let mut found = None;
                read::scan_subject(self.checkpoints, &self.subject, 1, self.read, |m| {
                    if let Ok(v) = self.valid(m) {
                        found = Some(v);
                    }
                    Ok(Next::Continue)
                })
                .await?;
                found
            }
        };
        Ok(Latest {
            valid,
            last_problem: Some(last_problem),
        })
    }

    /// The latest valid checkpoint stored before stream sequence `before`.
    async fn walk_back(&self, mut before: u64) -> Result<Option<VerifiedCheckpoint>, Walk> {
        for _ in 0..INVALID_PASSED_MAX {
            let Some(m) =
                read::last_before(self.checkpoints, &self.subject, before, self.read).await?
            else {
                return Ok(None);
            };
            if let Ok(v) = self.valid(&m) {
                return Ok(Some(v));
            }
            before = m.stream_sequence;
        }
        Err(Walk::Flooded)
    }

    /// The first valid checkpoint stored in `from..=through`.
    async fn first_valid(
        &self,
        mut from: u64,
        through: u64,
    ) -> Result<Option<VerifiedCheckpoint>, Walk> {
        for _ in 0..INVALID_PASSED_MAX {
            let found = read::first_from(self.checkpoints, &self.subject, from, self.read).await?;
            let Some(m) = found.filter(|m| m.stream_sequence <= through) else {
                return Ok(None);
            };
            if let Ok(v) = self.valid(&m) {
                return Ok(Some(v));
            }
            from = m.stream_sequence + 1;
        }
        Err(Walk::Flooded)
    }

    /// The valid checkpoint of `tree_size` events, found by a binary search over stream
    /// sequences (valid checkpoints are stored in increasing size): O(log(stream))
    /// requests. "None" is only said after reading the subject through (decoding each
    /// message, checking the signature of one of that size only): a valid checkpoint
    /// stored out of order (a copy of an earlier one stored again, which only a holder of
    /// the ledger's right to publish there can store, and verify reports) could have sent
    /// the search past the one asked. So a size no checkpoint has costs O(checkpoints),
    /// as does a flood of invalid messages; a lookup never answers wrongly.
    pub async fn of_size(
        &self,
        tree_size: u64,
    ) -> Result<Option<VerifiedCheckpoint>, CheckpointError> {
        match self.search(tree_size).await {
            Ok(Some(found)) => return Ok(Some(found)),
            Ok(None) => {}
            Err(Walk::Failed(e)) => return Err(e),
            Err(Walk::Flooded) => tracing::warn!(
                partition = %self.partition,
                tree_size,
                "more than {INVALID_PASSED_MAX} invalid checkpoint messages in a row: reading the subject through"
            ),
        }
        let mut found = None;
        read::scan_subject(self.checkpoints, &self.subject, 1, self.read, |m| {
            let size = read::decode_checkpoint(m).map(|c| c.body.tree_size);
            if size.is_ok_and(|size| size == tree_size) {
                if let Ok(v) = self.valid(m) {
                    found = Some(v);
                    return Ok(Next::Stop);
                }
            }
            Ok(Next::Continue)
        })
        .await?;
        Ok(found)
    }

    async fn search(&self, tree_size: u64) -> Result<Option<VerifiedCheckpoint>, Walk> {
        let last = reader::last_on_subject(self.checkpoints, &self.subject)
            .await
            .map_err(|e| CheckpointError::Nats(e.to_string()))?;
        let Some(last) = last else {
            return Ok(None);
        };
        self.read.add(1);
        // The checkpoint sought, if stored, is in lo..=hi.
        let (mut lo, mut hi) = (1u64, last.stream_sequence);
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            let Some(found) = self.first_valid(mid, hi).await? else {
                // No valid checkpoint in mid..=hi.
                hi = mid - 1;
                continue;
            };
            let size = found.stored.body.tree_size;
            match size.cmp(&tree_size) {
                std::cmp::Ordering::Equal => return Ok(Some(found)),
                std::cmp::Ordering::Less => lo = found.stored.stream_sequence + 1,
                // None valid in mid..found: the one sought is before mid.
                std::cmp::Ordering::Greater => hi = mid - 1,
            }
        }
        Ok(None)
    }
}
