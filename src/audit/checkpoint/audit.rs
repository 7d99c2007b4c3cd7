//! The auditor's side against a server: build proofs, cosign, and verify every stored
//! checkpoint against the log recomputed from scratch.

use std::collections::BTreeMap;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, stream::Stream};
use prost::Message;
use serde::Serialize;

use super::cosigner::{self, Cosigned, CosignerState, Cosigning, Step};
use super::keys::KeyRing;
use super::lookup::Lookup;
use super::pieces::{FallBack, StoredTree};
use super::proofs::{
    CONSISTENCY_FORMAT, CheckpointDocument, ConsistencyDocument, CosignerPins, INCLUSION_FORMAT,
    InclusionDocument, OnePerKey,
};
use super::read::{self, ChainPosition, Next, ReadCount, StoredCheckpoint};
use super::scratch::{Record, ScratchIndex};
use super::sign;
use super::stream::{CheckpointConfig, ensure_checkpoint_stream, open_existing_checkpoint_stream};
use super::{CheckpointError, PROBLEMS_LISTED_MAX, PROOF_LEAVES_MAX, VERIFY_CHUNK_MESSAGES};
use crate::chain::Partition;
use crate::log::{LogConfig, RawEvent, ensure_stream};
use crate::merkle::{self, ConsistencyBuilder, ConsistencyProof, Frontier, Hash32, InclusionProof};
use crate::proto;

fn nats(e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Nats(e.to_string())
}

/// Read access to the event and checkpoint streams, plus publishing cosignatures.
pub struct Auditor {
    js: jetstream::Context,
    events: Stream,
    checkpoints: Stream,
    log: LogConfig,
    config: CheckpointConfig,
    /// Checkpoint-stream messages read so far (`checkpoint_messages_read`).
    read: ReadCount,
    /// Checkpoint-stream messages `verify` holds at once (VERIFY_CHUNK_MESSAGES).
    messages_in_memory_max: usize,
    /// Events of the log read to build proofs (`proof_events_read`), shared with whoever
    /// opened the auditor to count what its requests cost (`counting_proof_events_in`).
    proof_events: std::sync::Arc<ReadCount>,
}

/// The tree of a partition's first events as `Auditor::tree_at` read it.
struct LogTree {
    root: Hash32,
    head: Hash32,
    /// The consistency proof asked for, if one was.
    proof: Option<ConsistencyProof>,
}

/// A checkpoint whose signature checked out against the key ring.
#[derive(Clone, Debug)]
pub struct VerifiedCheckpoint {
    pub stored: StoredCheckpoint,
    pub public_key: [u8; 32],
}

/// One checkpoint as `audit verify` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointStatus {
    pub tree_size: u64,
    pub root: String,
    pub key_id: String,
    pub issued_at_unix_ms: i64,
    pub stream_sequence: u64,
    /// One per key (the earliest valid cosignature), at most `COSIGNATURES_MAX`.
    pub cosigners: Vec<CosignerStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CosignerStatus {
    pub cosigner_id: String,
    pub key_id: String,
    pub signed_at_unix_ms: i64,
    /// By a key the auditor pinned (`audit verify --cosigner`).
    pub pinned: bool,
}

/// Something wrong with a stored checkpoint or cosignature.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointProblem {
    pub partition: String,
    pub stream_sequence: u64,
    pub problem: String,
}

/// What `audit verify` found on the checkpoint stream. Its size does not grow with the
/// checkpoints: each partition's count and latest, and at most PROBLEMS_LISTED_MAX
/// problems (`Auditor::verify_listing` hands each checkpoint over as it is checked).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckpointAudit {
    /// Per partition, its valid checkpoints that match the log.
    pub partitions: BTreeMap<String, PartitionCheckpoints>,
    /// Ledger keys in the order the key partition registered them.
    pub keys: Vec<String>,
    /// The first PROBLEMS_LISTED_MAX problems found.
    pub problems: Vec<CheckpointProblem>,
    /// Problems found past those listed.
    pub problems_not_listed: u64,
}

/// A partition's valid checkpoints that match the log.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PartitionCheckpoints {
    /// How many.
    pub checkpoints: u64,
    /// The latest (the largest: they are stored in increasing size), with its
    /// cosigners.
    pub latest: Option<CheckpointStatus>,
}

impl CheckpointAudit {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.problems_not_listed == 0
    }

    /// Records a problem: listed while fewer than PROBLEMS_LISTED_MAX are, else counted.
    pub fn problem(&mut self, partition: &Partition, stream_sequence: u64, problem: String) {
        if self.problems.len() < PROBLEMS_LISTED_MAX {
            self.problems.push(CheckpointProblem {
                partition: partition.to_string(),
                stream_sequence,
                problem,
            });
        } else {
            self.problems_not_listed += 1;
        }
    }
}

/// The events of a partition past its latest valid checkpoint: `first..=last`, not yet
/// under any checkpoint an auditor can check them against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Uncovered {
    pub partition: String,
    /// The latest valid checkpoint's `tree_size`; 0 when the partition has none.
    pub checkpointed: u64,
    pub first: u64,
    pub last: u64,
}

impl Uncovered {
    pub fn events(&self) -> u64 {
        self.last - self.first + 1
    }
}

impl std::fmt::Display for Uncovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "partition {}: ", self.partition)?;
        if self.first == self.last {
            write!(f, "event {}", self.first)?;
        } else {
            write!(f, "events {}..{}", self.first, self.last)?;
        }
        write!(f, " not yet under a checkpoint")?;
        if self.checkpointed == 0 {
            write!(f, " (the partition has no valid checkpoint)")
        } else {
            write!(f, " (the latest valid one covers {})", self.checkpointed)
        }
    }
}

/// Each partition whose chain goes past its latest valid checkpoint (`audit.partitions`
/// lists only checkpoints that match the log), given each partition's verified event
/// count (= its head sequence: sequences are contiguous from 1).
pub fn uncovered<'a>(
    audit: &CheckpointAudit,
    heads: impl IntoIterator<Item = (&'a str, u64)>,
) -> Vec<Uncovered> {
    heads
        .into_iter()
        .filter_map(|(partition, events)| {
            let checkpointed = audit
                .partitions
                .get(partition)
                .and_then(|c| c.latest.as_ref())
                .map_or(0, |c| c.tree_size);
            (events > checkpointed).then(|| Uncovered {
                partition: partition.to_string(),
                checkpointed,
                first: checkpointed + 1,
                last: events,
            })
        })
        .collect()
}

impl Auditor {
    pub async fn open(
        client: async_nats::Client,
        log: LogConfig,
        config: CheckpointConfig,
    ) -> Result<Self, CheckpointError> {
        let js = jetstream::new(client);
        let events = ensure_stream(&js, &log).await?;
        let checkpoints = ensure_checkpoint_stream(&js, &config).await?;
        Ok(Self::over(js, events, checkpoints, log, config))
    }

    /// As `open`, but creating nothing: both streams must exist (`audit verify
    /// --read-only`, whose NATS user may only read them, and whose typo in a stream name
    /// must not pass for an empty, clean checkpoint stream).
    pub async fn open_existing(
        client: async_nats::Client,
        log: LogConfig,
        config: CheckpointConfig,
    ) -> Result<Self, CheckpointError> {
        let js = jetstream::new(client);
        let events = crate::log::stream::open_existing(&js, &log).await?;
        let checkpoints = open_existing_checkpoint_stream(&js, &config).await?;
        Ok(Self::over(js, events, checkpoints, log, config))
    }

    /// An auditor reading `events` and `checkpoints`, however they were opened.
    fn over(
        js: jetstream::Context,
        events: Stream,
        checkpoints: Stream,
        log: LogConfig,
        config: CheckpointConfig,
    ) -> Self {
        Self {
            js,
            events,
            checkpoints,
            log,
            config,
            read: ReadCount::default(),
            messages_in_memory_max: VERIFY_CHUNK_MESSAGES,
            proof_events: Default::default(),
        }
    }

    /// Counts the events this auditor reads for proofs into `count` (an API's, over all
    /// the auditors its requests open).
    pub fn counting_proof_events_in(mut self, count: std::sync::Arc<ReadCount>) -> Self {
        self.proof_events = count;
        self
    }

    /// Events of the log read to build proofs: a proof from the stored subtrees reads at
    /// most two chunks, one from the whole chain reads the tree's every event.
    pub fn proof_events_read(&self) -> u64 {
        self.proof_events.get()
    }

    pub(super) fn count_proof_events(&self, events: u64) {
        self.proof_events.add(events);
    }

    /// The event stream, its names and the checkpoint names (for bundle export).
    pub fn events(&self) -> &Stream {
        &self.events
    }

    pub fn log(&self) -> &LogConfig {
        &self.log
    }

    pub fn config(&self) -> &CheckpointConfig {
        &self.config
    }

    pub async fn key_ring(&self) -> Result<KeyRing, CheckpointError> {
        read::read_key_ring(&self.events, &self.log, &self.config).await
    }

    /// `verify` holds at most `messages` checkpoint-stream messages at once (at least
    /// one; VERIFY_CHUNK_MESSAGES by default). Tests make it small to cross chunks.
    pub fn with_messages_in_memory_max(mut self, messages: usize) -> Self {
        self.messages_in_memory_max = messages.max(1);
        self
    }

    /// Checkpoint-stream messages this auditor has read: what its requests cost.
    pub fn checkpoint_messages_read(&self) -> u64 {
        self.read.get()
    }

    fn lookup<'a>(&'a self, partition: &'a Partition, ring: &'a KeyRing) -> Lookup<'a> {
        Lookup::new(&self.checkpoints, &self.config, partition, ring, &self.read)
    }

    /// The partition's latest valid checkpoint (a proof or a bundle is only ever built
    /// on a valid one; `verify` reports the others), without reading the others.
    pub async fn latest_checkpoint(
        &self,
        partition: &Partition,
        ring: &KeyRing,
    ) -> Result<Option<VerifiedCheckpoint>, CheckpointError> {
        Ok(self.lookup(partition, ring).latest().await?.valid)
    }

    /// The partition's valid checkpoint of `tree_size` events, without reading the
    /// others.
    pub async fn checkpoint_of_size(
        &self,
        partition: &Partition,
        ring: &KeyRing,
        tree_size: u64,
    ) -> Result<Option<VerifiedCheckpoint>, CheckpointError> {
        self.lookup(partition, ring).of_size(tree_size).await
    }

    /// Valid cosignatures of one checkpoint, one per key, at most `COSIGNATURES_MAX`
    /// (`proofs::distinct_cosignatures`): what a document carries. Only those stored
    /// after the checkpoint are read (a checkpoint is cosigned once published, as the
    /// status route reads them): O(the cosignatures since it), not every cosignature the
    /// partition ever had, and memory for what is kept only.
    pub async fn cosignatures_of(
        &self,
        partition: &Partition,
        checkpoint: &StoredCheckpoint,
    ) -> Result<Vec<proto::Cosignature>, CheckpointError> {
        cosignatures_after(
            &self.checkpoints,
            &self.config,
            partition,
            checkpoint,
            &self.read,
        )
        .await
    }

    /// The checkpoint of `tree_size` events, or NoCheckpoint saying `what`.
    async fn chosen(
        &self,
        partition: &Partition,
        ring: &KeyRing,
        tree_size: u64,
    ) -> Result<VerifiedCheckpoint, CheckpointError> {
        self.checkpoint_of_size(partition, ring, tree_size)
            .await?
            .ok_or_else(|| CheckpointError::NoCheckpoint {
                partition: partition.to_string(),
                what: format!("no checkpoint of size {tree_size}"),
            })
    }

    /// The event hashes 1..=tree_size of a partition (chain checked), and the stored
    /// bytes of event `keep` if asked.
    async fn leaves(
        &self,
        partition: &Partition,
        tree_size: u64,
        keep: Option<u64>,
    ) -> Result<(Vec<Hash32>, Option<bytes::Bytes>), CheckpointError> {
        if tree_size > PROOF_LEAVES_MAX {
            return Err(CheckpointError::TooLarge {
                partition: partition.to_string(),
                events: tree_size,
            });
        }
        let mut hashes = Vec::with_capacity(tree_size as usize);
        let mut kept = None;
        read::read_chain(
            &self.events,
            &self.log,
            ChainPosition::genesis(partition.clone()),
            read::Exclusions::SignedBy(&self.config.keys_partition),
            |head, event, _| {
                hashes.push(head.hash.0);
                if Some(head.sequence) == keep {
                    kept = Some(event.payload.clone());
                }
                Ok(if head.sequence >= tree_size {
                    Next::Stop
                } else {
                    Next::Continue
                })
            },
        )
        .await?;
        self.count_proof_events(hashes.len() as u64);
        if (hashes.len() as u64) < tree_size {
            return Err(CheckpointError::LogBehind {
                partition: partition.to_string(),
                tree_size,
                events: hashes.len() as u64,
            });
        }
        Ok((hashes, kept))
    }

    /// An inclusion proof of event `sequence` in the checkpoint of `checkpoint_size`
    /// events, or by default in the latest checkpoint (which contains it if any does).
    pub async fn prove(
        &self,
        partition: &Partition,
        sequence: u64,
        checkpoint_size: Option<u64>,
    ) -> Result<InclusionDocument, CheckpointError> {
        self.prove_using(NO_STORED_TREE, partition, sequence, checkpoint_size)
            .await
    }

    /// `prove`, from the subtrees `stored` holds and at most two chunks of the log when it
    /// can (`pieces`), else from the whole chain as `prove`: the same document either way.
    pub async fn prove_using<S: StoredTree + Sync + ?Sized>(
        &self,
        stored: Option<&S>,
        partition: &Partition,
        sequence: u64,
        checkpoint_size: Option<u64>,
    ) -> Result<InclusionDocument, CheckpointError> {
        if sequence == 0 {
            return Err(CheckpointError::BadRequest("sequences start at 1".into()));
        }
        let ring = self.key_ring().await?;
        // The latest valid checkpoint is the largest: they are stored in increasing size.
        let chosen = match checkpoint_size {
            Some(size) => self.checkpoint_of_size(partition, &ring, size).await?,
            None => self.latest_checkpoint(partition, &ring).await?,
        }
        .filter(|c| c.stored.body.tree_size >= sequence)
        .ok_or_else(|| CheckpointError::NoCheckpoint {
            partition: partition.to_string(),
            what: match checkpoint_size {
                Some(size) => format!("no checkpoint of size {size} containing event {sequence}"),
                None => format!("no checkpoint contains event {sequence} yet"),
            },
        })?;
        let body = &chosen.stored.body;
        let from_pieces = match stored {
            Some(stored) => self
                .inclusion_from_pieces(stored, partition, body, sequence)
                .await
                .map_err(|why| fell_back(partition, &why))
                .ok(),
            None => None,
        };
        let (proof, event) = match from_pieces {
            Some(found) => found,
            None => {
                let (hashes, event) = self
                    .leaves(partition, body.tree_size, Some(sequence))
                    .await?;
                check_root(body, &hashes)?;
                let event = event.expect("sequence <= tree_size was read");
                let proof = InclusionProof::generate(partition.to_string(), &hashes, sequence - 1)?;
                (proof, event)
            }
        };
        let cosignatures = self.cosignatures_of(partition, &chosen.stored).await?;
        Ok(InclusionDocument {
            format: INCLUSION_FORMAT.into(),
            partition: partition.to_string(),
            sequence,
            event: hex::encode(&event),
            event_hash: proof.event_hash.clone(),
            proof,
            checkpoint: CheckpointDocument::new(
                &chosen.stored.signed,
                body,
                &chosen.public_key,
                &cosignatures,
            ),
        })
    }

    /// A consistency proof between the partition's checkpoints of `from` and `to` events.
    pub async fn consistency(
        &self,
        partition: &Partition,
        from: u64,
        to: u64,
    ) -> Result<ConsistencyDocument, CheckpointError> {
        self.consistency_using(NO_STORED_TREE, partition, from, to)
            .await
    }

    /// `consistency`, from the subtrees `stored` holds and at most two chunks of the log
    /// when it can (`pieces`), else from the whole chain: the same document either way.
    pub async fn consistency_using<S: StoredTree + Sync + ?Sized>(
        &self,
        stored: Option<&S>,
        partition: &Partition,
        from: u64,
        to: u64,
    ) -> Result<ConsistencyDocument, CheckpointError> {
        if from == 0 || from > to {
            return Err(CheckpointError::BadRequest(format!(
                "need 0 < from <= to, got {from} and {to}"
            )));
        }
        let ring = self.key_ring().await?;
        let old = self.chosen(partition, &ring, from).await?;
        let new = self.chosen(partition, &ring, to).await?;
        let from_pieces = match stored {
            Some(stored) => self
                .consistency_from_pieces(stored, partition, &old.stored.body, &new.stored.body)
                .await
                .map_err(|why| fell_back(partition, &why))
                .ok(),
            None => None,
        };
        let proof = match from_pieces {
            Some(proof) => proof,
            None => {
                let (hashes, _) = self.leaves(partition, to, None).await?;
                check_root(&old.stored.body, &hashes[..from as usize])?;
                check_root(&new.stored.body, &hashes)?;
                ConsistencyProof::generate(partition.to_string(), &hashes, from)?
            }
        };
        let old_cosignatures = self.cosignatures_of(partition, &old.stored).await?;
        let new_cosignatures = self.cosignatures_of(partition, &new.stored).await?;
        Ok(ConsistencyDocument {
            format: CONSISTENCY_FORMAT.into(),
            partition: partition.to_string(),
            old_checkpoint: CheckpointDocument::new(
                &old.stored.signed,
                &old.stored.body,
                &old.public_key,
                &old_cosignatures,
            ),
            new_checkpoint: CheckpointDocument::new(
                &new.stored.signed,
                &new.stored.body,
                &new.public_key,
                &new_cosignatures,
            ),
            proof,
        })
    }

    /// The cosigner's act (docs/PROOFS.md section 7.6): checks the checkpoint of
    /// `tree_size` events against what the office cosigned before (`state`: no smaller
    /// size, no other root for a size cosigned), its signer against the keys the office
    /// pinned, and its root and head against the log recomputed; from a smaller size
    /// cosigned, the consistency proof from that size, built from the same read of the
    /// log, must verify against the root cosigned and the checkpoint's. Then it signs,
    /// publishes, and only then records the checkpoint in `state`. Nothing is published
    /// if any check fails. Time O(the partition's first `tree_size` events), memory
    /// O(log² tree_size).
    pub async fn cosign(
        &self,
        partition: &Partition,
        tree_size: u64,
        cosigning: &Cosigning<'_>,
        state: &mut CosignerState,
    ) -> Result<proto::Cosignature, CheckpointError> {
        sign::check_cosigner_id(cosigning.cosigner_id)
            .map_err(|e| CheckpointError::BadRequest(e.to_string()))?;
        if cosigning.trusted.is_empty() {
            return Err(CheckpointError::BadRequest(
                "pin the ledger's key (--trust): a cosignature vouches for the ledger's history"
                    .into(),
            ));
        }
        let ring = self.key_ring().await?;
        let chosen = self.chosen(partition, &ring, tree_size).await?;
        let body = &chosen.stored.body;
        cosigner::check_signer(partition, &ring, cosigning.trusted, &body.key_id)?;
        let step = cosigner::next_step(partition, state.last(partition), body)?;
        let from = match step {
            Step::Grown { from, .. } => Some(from),
            Step::First | Step::Again => None,
        };
        let tree = self.tree_at(partition, tree_size, from).await?;
        check_matches_root(body, &tree.root, &tree.head)?;
        if let Step::Grown { from, root } = step {
            let proof = tree.proof.as_ref().expect("a proof was asked for");
            cosigner::check_growth(partition, from, &root, body, proof)?;
        }
        let cosignature = sign::cosign(
            cosigning.key,
            cosigning.cosigner_id,
            &chosen.stored.signed.checkpoint,
            cosigning.signed_at_unix_ms,
        )
        .map_err(|e| CheckpointError::BadRequest(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!(
                "{partition}:{}:{}",
                hex::encode(&cosignature.checkpoint_hash),
                cosignature.key_id
            )
            .as_str(),
        );
        self.js
            .send_publish(
                self.config.cosignature_subject(partition),
                PublishMessage::build()
                    .headers(headers)
                    .payload(cosignature.encode_to_vec().into()),
            )
            .await
            .map_err(nats)?
            .await
            .map_err(nats)?;
        state.record(
            partition,
            Cosigned::new(
                &chosen.stored.signed,
                body,
                &chosen.public_key,
                &cosignature,
            ),
        )?;
        Ok(cosignature)
    }

    /// Root and head hash of the first `tree_size` events and, with `proof_from`, the
    /// consistency proof from that many events to `tree_size`: one read of the log, in
    /// O(log² tree_size) memory (`merkle::ConsistencyBuilder`).
    async fn tree_at(
        &self,
        partition: &Partition,
        tree_size: u64,
        proof_from: Option<u64>,
    ) -> Result<LogTree, CheckpointError> {
        let mut frontier = Frontier::new();
        let mut proof = proof_from
            .map(|from| ConsistencyBuilder::new(partition.to_string(), from, tree_size))
            .transpose()?;
        let mut head = [0u8; 32];
        read::read_chain(
            &self.events,
            &self.log,
            ChainPosition::genesis(partition.clone()),
            read::Exclusions::SignedBy(&self.config.keys_partition),
            |h, _, _| {
                frontier.try_push(&h.hash.0)?;
                if let Some(proof) = proof.as_mut() {
                    proof.push(&h.hash.0)?;
                }
                head = h.hash.0;
                Ok(if h.sequence >= tree_size {
                    Next::Stop
                } else {
                    Next::Continue
                })
            },
        )
        .await?;
        if frontier.size() < tree_size {
            return Err(CheckpointError::LogBehind {
                partition: partition.to_string(),
                tree_size,
                events: frontier.size(),
            });
        }
        Ok(LogTree {
            root: frontier.root(),
            head,
            proof: proof.map(ConsistencyBuilder::finish).transpose()?,
        })
    }

    /// Checks every stored checkpoint (of one partition, or all): signature by a ledger
    /// key not retired before it was issued, stored in increasing size, root and head
    /// against the log recomputed in one pass, and every cosignature. Counts what is
    /// valid; collects what is not.
    pub async fn verify(
        &self,
        only: Option<&Partition>,
    ) -> Result<CheckpointAudit, CheckpointError> {
        self.verify_inner(only, false, &mut |_, _| {}).await
    }

    /// `verify`, handing each valid checkpoint that matches the log to `listed`, with its
    /// cosigners, in stream order, partition after partition as each is checked: `audit
    /// verify --checkpoints` prints them as they come, however many there are.
    pub async fn verify_listing(
        &self,
        only: Option<&Partition>,
        mut listed: impl FnMut(&Partition, &CheckpointStatus) + Send,
    ) -> Result<CheckpointAudit, CheckpointError> {
        self.verify_inner(only, true, &mut listed).await
    }

    /// `verify`, and with `list` each checkpoint handed to `listed`.
    async fn verify_inner(
        &self,
        only: Option<&Partition>,
        list: bool,
        listed: &mut (impl FnMut(&Partition, &CheckpointStatus) + Send),
    ) -> Result<CheckpointAudit, CheckpointError> {
        let mut audit = CheckpointAudit::default();
        let ring = match self.key_ring().await {
            Ok(ring) => ring,
            Err(e @ CheckpointError::KeyRing(_)) => {
                audit.problem(&self.config.keys_partition, 0, format!("key history: {e}"));
                KeyRing::default()
            }
            Err(e) => return Err(e),
        };
        audit.keys = ring.keys().iter().map(|k| k.key_id.clone()).collect();
        let partitions = match only {
            Some(p) => vec![p.clone()],
            None => {
                // Those with checkpoints, and those with events: a partition that has
                // events and no checkpoint must still meet the pinned cosigners.
                let config = self.config.clone();
                let mut partitions = read::partitions_on(
                    &self.checkpoints,
                    &format!("{}.>", config.subject_prefix),
                    |s| config.partition_of(s).map(str::to_string),
                )
                .await?;
                let log = self.log.clone();
                partitions.extend(
                    read::partitions_on(&self.events, &log.wildcard(), |s| {
                        log.partition_of(s).map(str::to_string)
                    })
                    .await?,
                );
                partitions.sort();
                partitions.dedup();
                partitions
            }
        };
        for partition in partitions {
            self.verify_partition(&partition, &ring, &mut audit, list, listed)
                .await?;
        }
        Ok(audit)
    }

    /// One partition, in three passes, each in bounded memory: its checkpoints, a chunk
    /// at a time, each chunk checked against the chain read on from where the last
    /// stopped, into a scratch index on disk; its cosignatures, a chunk at a time,
    /// matched by hash in the index; then the listing and the latest's cosigners.
    async fn verify_partition(
        &self,
        partition: &Partition,
        ring: &KeyRing,
        audit: &mut CheckpointAudit,
        list: bool,
        listed: &mut (impl FnMut(&Partition, &CheckpointStatus) + Send),
    ) -> Result<(), CheckpointError> {
        let mut index = ScratchIndex::create()?;
        let Some(checked) = self
            .check_checkpoints(partition, ring, audit, &mut index)
            .await?
        else {
            return Ok(()); // the log could not be read: reported
        };
        self.check_cosignatures(partition, audit, &index).await?;
        let pins = &self.config.cosigners;
        let status = |ordinal: u64| -> Result<Option<CheckpointStatus>, CheckpointError> {
            Ok(index
                .get(ordinal)?
                .filter(|(record, _)| !record.refused)
                .map(|(record, cosigners)| status_of(&record, cosigners, pins)))
        };
        if list {
            for ordinal in 0..index.len() {
                if let Some(status) = status(ordinal)? {
                    listed(partition, &status);
                }
            }
        }
        let latest = checked.latest.map(status).transpose()?.flatten();
        // With pinned cosigners, the partition's latest checkpoint that matches the log
        // must carry as many of them as required: what an auditor relying on cosigning
        // asks of the head it checks against.
        if !pins.is_empty() {
            match &latest {
                Some(latest) => {
                    let found = latest.cosigners.iter().filter(|c| c.pinned).count();
                    if found < pins.required() {
                        audit.problem(
                            partition,
                            latest.stream_sequence,
                            format!(
                                "the latest checkpoint (size {}) is cosigned by {found} of the pinned cosigners, {} required",
                                latest.tree_size,
                                pins.required()
                            ),
                        );
                    }
                }
                // Events no checkpoint covers are cosigned by nobody: an auditor who
                // requires cosigners must not read "no checkpoint" as "nothing to check".
                None if self.has_events(partition).await? => audit.problem(
                    partition,
                    0,
                    format!(
                        "the partition has events but no valid checkpoint that matches the log: cosigned by 0 of the pinned cosigners, {} required",
                        pins.required()
                    ),
                ),
                None => {}
            }
        }
        // Only checkpoints that match the log are counted; the others are problems.
        audit.partitions.insert(
            partition.to_string(),
            PartitionCheckpoints {
                checkpoints: checked.matching,
                latest,
            },
        );
        Ok(())
    }

    /// Up to `messages_in_memory_max` messages of `subject` from stream sequence `from`.
    async fn chunk_of(&self, subject: &str, from: u64) -> Result<Vec<RawEvent>, CheckpointError> {
        let max = self.messages_in_memory_max;
        let mut chunk = Vec::new();
        read::scan_subject(&self.checkpoints, subject, from, &self.read, |m| {
            chunk.push(m.clone());
            Ok(if chunk.len() >= max {
                Next::Stop
            } else {
                Next::Continue
            })
        })
        .await?;
        Ok(chunk)
    }

    /// The partition's checkpoint messages, a chunk at a time: each valid checkpoint's
    /// signature, its order (larger than the valid one before), and its root and head
    /// against the chain, read once in all, on from where the last chunk stopped. Every
    /// valid one goes into `index`, refused or not. None when the log cannot be read.
    async fn check_checkpoints(
        &self,
        partition: &Partition,
        ring: &KeyRing,
        audit: &mut CheckpointAudit,
        index: &mut ScratchIndex,
    ) -> Result<Option<Checked>, CheckpointError> {
        let subject = self.config.checkpoint_subject(partition);
        let mut chain = ChainPosition::genesis(partition.clone());
        let mut frontier = Frontier::new();
        // The size of the latest valid checkpoint in stream order: the next is larger.
        let mut largest = 0u64;
        let mut checked = Checked::default();
        let mut from = 1;
        loop {
            let chunk = self.chunk_of(&subject, from).await?;
            let Some(last) = chunk.last() else {
                return Ok(Some(checked));
            };
            from = last.stream_sequence + 1;
            let mut valid: Vec<(VerifiedCheckpoint, Record)> = Vec::with_capacity(chunk.len());
            for m in &chunk {
                let v = match valid_checkpoint(ring, partition, read::decode_checkpoint(m)) {
                    Ok(v) => v,
                    Err(e) => {
                        audit.problem(partition, m.stream_sequence, e.to_string());
                        continue;
                    }
                };
                let mut record = Record::of(&v);
                if record.tree_size <= largest {
                    // What `lookup` relies on to find a checkpoint by size.
                    record.refused = true;
                    audit.problem(
                        partition,
                        record.stream_sequence,
                        format!(
                            "a checkpoint of size {} stored after one of size {largest}: a partition's checkpoints are stored in increasing size",
                            record.tree_size
                        ),
                    );
                } else {
                    largest = record.tree_size;
                }
                valid.push((v, record));
            }
            // Against the log: the chain read on to the chunk's largest size, each
            // checkpoint checked when the tree reaches its size (they increase).
            let targets: Vec<usize> = (0..valid.len()).filter(|&i| !valid[i].1.refused).collect();
            let mut mismatched: Vec<(usize, String)> = Vec::new();
            if let Some(&i) = targets.last() {
                let chunk_largest = valid[i].1.tree_size;
                let mut next = 0;
                let read = read::read_chain(
                    &self.events,
                    &self.log,
                    chain.clone(),
                    read::Exclusions::SignedBy(&self.config.keys_partition),
                    |head, _, _| {
                        frontier.try_push(&head.hash.0)?;
                        while let Some(&i) = targets.get(next) {
                            if valid[i].1.tree_size > frontier.size() {
                                break;
                            }
                            if let Err(e) = check_matches_root(
                                &valid[i].0.stored.body,
                                &frontier.root(),
                                &head.hash.0,
                            ) {
                                mismatched.push((i, e.to_string()));
                            }
                            next += 1;
                        }
                        Ok(if frontier.size() >= chunk_largest {
                            Next::Stop
                        } else {
                            Next::Continue
                        })
                    },
                )
                .await;
                match read {
                    Ok(position) => chain = position,
                    Err(e) => {
                        audit.problem(
                            partition,
                            0,
                            format!("the log cannot be read to check checkpoints: {e}"),
                        );
                        return Ok(None);
                    }
                }
            }
            for (i, reason) in mismatched {
                valid[i].1.refused = true;
                audit.problem(partition, valid[i].1.stream_sequence, reason);
            }
            for (_, record) in valid.iter_mut().filter(|(_, r)| !r.refused) {
                if record.tree_size > frontier.size() {
                    record.refused = true;
                    audit.problem(
                        partition,
                        record.stream_sequence,
                        format!(
                            "the checkpoint covers {} events but the log holds {}",
                            record.tree_size,
                            frontier.size()
                        ),
                    );
                }
            }
            let records: Vec<Record> = valid.into_iter().map(|(_, r)| r).collect();
            for (i, record) in records.iter().enumerate() {
                if !record.refused {
                    checked.matching += 1;
                    checked.latest = Some(index.len() + i as u64);
                }
            }
            index.push(&records)?;
        }
    }

    /// The partition's cosignature messages, a chunk at a time: each must name a valid
    /// checkpoint that matches the log (found in `index`), and verify over its bytes;
    /// those that do are kept for their checkpoint as a document carries them.
    async fn check_cosignatures(
        &self,
        partition: &Partition,
        audit: &mut CheckpointAudit,
        index: &ScratchIndex,
    ) -> Result<(), CheckpointError> {
        let subject = self.config.cosignature_subject(partition);
        let mut from = 1;
        loop {
            let chunk = self.chunk_of(&subject, from).await?;
            let Some(last) = chunk.last() else {
                return Ok(());
            };
            from = last.stream_sequence + 1;
            let mut verified = Vec::new();
            for m in &chunk {
                let s = match read::decode_cosignature(m) {
                    Ok(s) => s,
                    Err(e) => {
                        audit.problem(partition, m.stream_sequence, e.to_string());
                        continue;
                    }
                };
                let target = match <[u8; 32]>::try_from(s.cosignature.checkpoint_hash.as_ref()) {
                    Ok(hash) => index.find(&hash)?,
                    Err(_) => None,
                };
                let Some((ordinal, record)) = target else {
                    audit.problem(
                        partition,
                        s.stream_sequence,
                        "cosignature of no valid checkpoint".into(),
                    );
                    continue;
                };
                if record.refused {
                    audit.problem(
                        partition,
                        s.stream_sequence,
                        "cosignature of a checkpoint refused above (it does not match the log, or is out of order)".into(),
                    );
                    continue;
                }
                // Listed as documents carry them (`cosignatures_of`): a checkpoint is
                // cosigned once stored, so one stored before it is not read for it. Not a
                // problem to report: the stream keeps it for ever, and the cosigner can
                // sign again.
                if s.stream_sequence < record.stream_sequence {
                    continue;
                }
                match sign::verify_cosignature(&s.cosignature, &record.checkpoint) {
                    Ok(()) => verified.push((ordinal, s.cosignature)),
                    Err(e) => {
                        audit.problem(partition, s.stream_sequence, format!("cosignature: {e}"))
                    }
                }
            }
            index.cosigned(verified, &self.config.cosigners)?;
        }
    }
}

/// What the checkpoint pass of a partition found: how many valid checkpoints match the
/// log, and the latest one's ordinal in the scratch index.
#[derive(Debug, Default)]
struct Checked {
    matching: u64,
    latest: Option<u64>,
}

/// A checkpoint as verify lists it, with its kept cosignatures (one per key, pinned
/// first, at most COSIGNATURES_MAX: `proofs::one_per_key`).
fn status_of(
    record: &Record,
    cosigners: Vec<proto::Cosignature>,
    pins: &CosignerPins,
) -> CheckpointStatus {
    CheckpointStatus {
        tree_size: record.tree_size,
        root: merkle::encode_hash(&record.root),
        key_id: record.key_id.clone(),
        issued_at_unix_ms: record.issued_at_unix_ms,
        stream_sequence: record.stream_sequence,
        cosigners: cosigners
            .into_iter()
            .map(|c| CosignerStatus {
                pinned: pins.pins(&c),
                cosigner_id: c.cosigner_id,
                key_id: c.key_id,
                signed_at_unix_ms: c.signed_at_unix_ms,
            })
            .collect(),
    }
}

/// The valid cosignatures of `checkpoint` stored after it, one per key, pinned first,
/// at most COSIGNATURES_MAX (`proofs::distinct_cosignatures`), read in one pass that
/// holds only what it keeps (`OnePerKey`).
pub async fn cosignatures_after(
    checkpoints: &Stream,
    config: &CheckpointConfig,
    partition: &Partition,
    checkpoint: &StoredCheckpoint,
    read: &ReadCount,
) -> Result<Vec<proto::Cosignature>, CheckpointError> {
    let mut kept = OnePerKey::default();
    read::scan_subject(
        checkpoints,
        &config.cosignature_subject(partition),
        checkpoint.stream_sequence + 1,
        read,
        |m| {
            if let Ok(s) = read::decode_cosignature(m) {
                if sign::verify_cosignature(&s.cosignature, &checkpoint.signed.checkpoint).is_ok() {
                    kept.offer(s.cosignature, &config.cosigners);
                }
            }
            Ok(Next::Continue)
        },
    )
    .await?;
    Ok(kept.finish())
}

impl Auditor {
    /// Whether the partition's subject of the event log holds anything.
    async fn has_events(&self, partition: &Partition) -> Result<bool, CheckpointError> {
        let subject = self.log.subject(partition);
        Ok(crate::log::reader::last_on_subject(&self.events, &subject)
            .await
            .map_err(nats)?
            .is_some())
    }
}

/// A stored checkpoint that is the ledger's checkpoint of `partition`: signed by a key
/// of the ring valid when it was issued, and naming that partition.
pub fn valid_checkpoint(
    ring: &KeyRing,
    partition: &Partition,
    stored: Result<StoredCheckpoint, CheckpointError>,
) -> Result<VerifiedCheckpoint, CheckpointError> {
    let verified = check_signature(ring, stored?)?;
    if verified.stored.body.partition != *partition {
        return Err(CheckpointError::Undecodable {
            stream_sequence: verified.stored.stream_sequence,
            reason: format!(
                "a checkpoint of partition {}",
                verified.stored.body.partition
            ),
        });
    }
    Ok(verified)
}

/// A partition's checkpoint subject as a status page shows it.
#[derive(Debug)]
pub struct LatestCheckpoint {
    /// Messages on the subject, valid checkpoints or not.
    pub messages: u64,
    /// The latest message that is a valid checkpoint of the partition.
    pub valid: Option<VerifiedCheckpoint>,
    /// Why the subject's last message is not one, when it is not.
    pub latest_problem: Option<CheckpointError>,
}

/// The partition's latest valid checkpoint (`lookup::Lookup::latest`: the subject's last
/// message, or the valid one before the invalid messages after it, since anyone holding
/// a publish right can put a decodable checkpoint signed by a stranger's key last, and
/// showing it would hide the real one), and the subject's count of messages.
pub async fn latest_valid_checkpoint(
    checkpoints: &Stream,
    config: &CheckpointConfig,
    partition: &Partition,
    ring: &KeyRing,
) -> Result<LatestCheckpoint, CheckpointError> {
    let subject = config.checkpoint_subject(partition);
    let messages = read::subject_messages(checkpoints, &subject).await?;
    let found = Lookup::new(checkpoints, config, partition, ring, &ReadCount::default())
        .latest()
        .await?;
    Ok(LatestCheckpoint {
        messages,
        valid: found.valid,
        latest_problem: found.last_problem,
    })
}

/// Checks a stored checkpoint's signature against the ring (key known, not retired
/// before the checkpoint was issued).
pub fn check_signature(
    ring: &KeyRing,
    stored: StoredCheckpoint,
) -> Result<VerifiedCheckpoint, CheckpointError> {
    let key = ring.signer(&stored.body.key_id, stored.body.issued_at_unix_ms)?;
    sign::open_checkpoint(&stored.signed, &key.public_key).map_err(|cause| {
        CheckpointError::Signature {
            stream_sequence: stored.stream_sequence,
            cause,
        }
    })?;
    Ok(VerifiedCheckpoint {
        public_key: key.public_key,
        stored,
    })
}

/// For `prove` and `consistency`, which read the whole chain.
const NO_STORED_TREE: Option<&crate::projection::Projector> = None;

/// A proof the stored subtrees could not serve, read from the whole chain instead: said
/// as a warning when the projections are wrong, at debug level when they are only behind
/// or hold no tree of the partition.
fn fell_back(partition: &Partition, why: &FallBack) {
    match why {
        FallBack::Behind { .. } | FallBack::NoTree => {
            tracing::debug!(%partition, reason = %why, "proof: from the whole chain");
        }
        _ => {
            tracing::warn!(%partition, reason = %why, "proof: the stored subtrees do not serve it; from the whole chain")
        }
    }
}

pub(crate) fn check_root(
    body: &super::CheckpointBody,
    hashes: &[Hash32],
) -> Result<(), CheckpointError> {
    let head = hashes.last().copied().unwrap_or([0; 32]);
    check_matches_root(body, &merkle::root(hashes), &head)
}

/// The paired check: a signed checkpoint must match the tree recomputed from the log.
pub(crate) fn check_matches_root(
    body: &super::CheckpointBody,
    root: &Hash32,
    head_hash: &Hash32,
) -> Result<(), CheckpointError> {
    let fork = |reason: &str| CheckpointError::Fork {
        partition: body.partition.to_string(),
        tree_size: body.tree_size,
        reason: reason.to_string(),
    };
    if crate::chain::Digest(*root) != crate::chain::Digest(body.root) {
        return Err(fork("the root differs from the log's"));
    }
    if crate::chain::Digest(*head_hash) != crate::chain::Digest(body.head_hash) {
        return Err(fork("the head hash differs from the log's"));
    }
    Ok(())
}
