//! Proofs from the subtrees the projections store (ADR 0026): O(log n) stored roots and
//! at most two chunks of the log, instead of the partition's whole chain. Whatever is
//! missing, behind or does not check makes the caller read the whole chain, as before.
//! Every answer is checked against the signed checkpoint first: the roots and heads made
//! of the pieces must be its own, and the proof itself must verify from the event read
//! from the log to its signed root (a stored root can sit in a path and in no root).

use std::collections::BTreeMap;

use super::CheckpointError;
use super::audit::{Auditor, check_matches_root};
use super::read::{self, ChainPosition, Next};
use super::sign::CheckpointBody;
use crate::chain::{ChainHead, Partition};
use crate::log::Position;
use crate::merkle::{self, ConsistencyProof, Hash32, InclusionProof};
use crate::merkle_pieces::{self, Missing, Pieces, Plan};

/// A partition's Merkle tree as something that follows the log stores it: the
/// projections (`projection::Projector`). Read errors are the store's own.
pub trait StoredTree {
    type Error: std::fmt::Display;
    /// The partition's chunk level and how many of its events the store holds; None
    /// before its first.
    fn chunk_level_and_size(
        &self,
        partition: &Partition,
    ) -> Result<Option<(u32, u64)>, Self::Error>;
    /// The root of the complete subtree at (`level`, `index`), if stored.
    fn node(
        &self,
        partition: &Partition,
        level: u32,
        index: u64,
    ) -> Result<Option<Hash32>, Self::Error>;
    /// The chain's head before chunk `chunk`'s first event and the log position after
    /// that head's event, if stored.
    fn chunk_start(
        &self,
        partition: &Partition,
        chunk: u64,
    ) -> Result<Option<(ChainHead, Position)>, Self::Error>;
}

impl StoredTree for crate::projection::Projector {
    type Error = crate::projection::ProjectionError;
    fn chunk_level_and_size(
        &self,
        partition: &Partition,
    ) -> Result<Option<(u32, u64)>, Self::Error> {
        self.merkle_tree(partition.as_str())
    }
    fn node(
        &self,
        partition: &Partition,
        level: u32,
        index: u64,
    ) -> Result<Option<Hash32>, Self::Error> {
        self.merkle_node(partition.as_str(), level, index)
    }
    fn chunk_start(
        &self,
        partition: &Partition,
        chunk: u64,
    ) -> Result<Option<(ChainHead, Position)>, Self::Error> {
        self.merkle_chunk_start(partition, chunk)
    }
}

/// Why the pieces could not serve a proof; the caller reads the whole chain. Never shown
/// to the asker: the full read answers, or fails with its own error.
#[derive(Debug, thiserror::Error)]
pub enum FallBack {
    #[error("the projections hold {held} events of the partition, the tree has {tree_size}")]
    Behind { held: u64, tree_size: u64 },
    #[error("the projections hold no tree of the partition")]
    NoTree,
    #[error("{0}")]
    Missing(#[from] Missing),
    #[error("chunk {0}'s start is not stored")]
    NoChunkStart(u64),
    #[error("reading the projections: {0}")]
    Store(String),
    #[error("reading chunk {chunk} from the log: {cause}")]
    Read { chunk: u64, cause: CheckpointError },
    #[error("chunk {chunk}: read {read} events of {expected}")]
    ShortChunk {
        chunk: u64,
        read: u64,
        expected: u64,
    },
    /// A stored root differs from the one recomputed from the log: the projections are
    /// wrong (rebuild them).
    #[error("chunk {0}'s stored root differs from its events' in the log")]
    ChunkMismatch(u64),
    /// The roots made of the pieces are not the signed ones: the projections are wrong,
    /// or the log is (the full read says which).
    #[error("the pieces do not make the signed checkpoint's root: {0}")]
    NotTheSignedRoot(CheckpointError),
    /// The path made of the pieces does not verify against the signed root(s): a stored
    /// root in the path is wrong.
    #[error("the proof made of the pieces does not verify: {0}")]
    DoesNotVerify(merkle::ProofError),
}

/// What `Auditor::gather` found: the pieces, and the stored bytes of the event asked for.
struct Gathered {
    pieces: Pieces,
    kept: Option<bytes::Bytes>,
}

impl Auditor {
    /// The pieces for a proof over trees of up to `tree_size` events that `plan` names at
    /// the partition's chunk level: stored roots, and each chunk's events read from the
    /// log from where the store says it starts, each whole chunk's root checked against
    /// the stored one. `keep`: an event whose stored bytes are wanted too.
    async fn gather<S: StoredTree + ?Sized>(
        &self,
        stored: &S,
        partition: &Partition,
        tree_size: u64,
        plan: impl FnOnce(u32) -> Result<Plan, Missing>,
        keep: Option<u64>,
    ) -> Result<Gathered, FallBack> {
        let store = |e: S::Error| FallBack::Store(e.to_string());
        let (level, held) = stored
            .chunk_level_and_size(partition)
            .map_err(store)?
            .ok_or(FallBack::NoTree)?;
        if held < tree_size {
            return Err(FallBack::Behind { held, tree_size });
        }
        let plan = plan(level)?;
        let mut nodes = BTreeMap::new();
        for &(l, index) in &plan.nodes {
            let root = stored
                .node(partition, l, index)
                .map_err(store)?
                .ok_or(Missing::Node { level: l, index })?;
            nodes.insert((l, index), root);
        }
        let mut chunks = BTreeMap::new();
        let mut kept = None;
        for (&chunk, &end) in &plan.chunks {
            let (head, position) = stored
                .chunk_start(partition, chunk)
                .map_err(store)?
                .ok_or(FallBack::NoChunkStart(chunk))?;
            let first = head.sequence;
            // The next chunk's start is where this one's last event is: the read stops
            // there rather than read ahead past it.
            let through = stored
                .chunk_start(partition, chunk + 1)
                .map_err(store)?
                .map(|(_, next)| next.last.stream_sequence);
            let (leaves, bytes) = self
                .read_chunk(head, position, through, end, keep)
                .await
                .map_err(|cause| FallBack::Read { chunk, cause })?;
            if (leaves.len() as u64) != end - first {
                return Err(FallBack::ShortChunk {
                    chunk,
                    read: leaves.len() as u64,
                    expected: end - first,
                });
            }
            kept = kept.or(bytes);
            chunks.insert(chunk, leaves);
        }
        let pieces = Pieces {
            chunk_level: level,
            nodes,
            chunks,
        };
        // The paired check of the store against the log, for every whole chunk read.
        for &chunk in plan.chunks.keys() {
            let Some(read) = pieces.chunk_root(chunk) else {
                continue;
            };
            let stored_root =
                stored
                    .node(partition, level, chunk)
                    .map_err(store)?
                    .ok_or(Missing::Node {
                        level,
                        index: chunk,
                    })?;
            if crate::chain::Digest(read) != crate::chain::Digest(stored_root) {
                return Err(FallBack::ChunkMismatch(chunk));
            }
        }
        Ok(Gathered { pieces, kept })
    }

    /// The event hashes of the chain from `head` (read from `position` on, and no
    /// further than the message at stream sequence `through` when known) up to and
    /// including sequence `end`, and the stored bytes of event `keep` if it is among them.
    async fn read_chunk(
        &self,
        head: ChainHead,
        position: Position,
        through: Option<u64>,
        end: u64,
        keep: Option<u64>,
    ) -> Result<(Vec<Hash32>, Option<bytes::Bytes>), CheckpointError> {
        let mut leaves = Vec::with_capacity(end.saturating_sub(head.sequence) as usize);
        let mut kept = None;
        if head.sequence >= end {
            return Ok((leaves, kept));
        }
        let start = ChainPosition {
            head,
            read: position,
            held: Default::default(),
            keys: None,
        };
        read::read_chain_through(
            self.events(),
            self.log(),
            start,
            through,
            read::Exclusions::SignedBy(&self.config().keys_partition),
            |head, event, _| {
                leaves.push(head.hash.0);
                if Some(head.sequence) == keep {
                    kept = Some(event.payload.clone());
                }
                Ok(if head.sequence >= end {
                    Next::Stop
                } else {
                    Next::Continue
                })
            },
        )
        .await?;
        self.count_proof_events(leaves.len() as u64);
        Ok((leaves, kept))
    }

    /// The inclusion proof of event `sequence` in the checkpoint `body`, and the event's
    /// stored bytes, from the pieces.
    pub(super) async fn inclusion_from_pieces<S: StoredTree + ?Sized>(
        &self,
        stored: &S,
        partition: &Partition,
        body: &CheckpointBody,
        sequence: u64,
    ) -> Result<(InclusionProof, bytes::Bytes), FallBack> {
        let (tree_size, index) = (body.tree_size, sequence - 1);
        let Gathered { pieces, kept } = self
            .gather(
                stored,
                partition,
                tree_size,
                |level| merkle_pieces::plan_inclusion(level, tree_size, index),
                Some(sequence),
            )
            .await?;
        let root = pieces.root(tree_size)?;
        let head = *pieces.leaf(tree_size - 1).ok_or(Missing::NoSuchProof)?;
        check_matches_root(body, &root, &head).map_err(FallBack::NotTheSignedRoot)?;
        let event_hash = *pieces.leaf(index).ok_or(Missing::NoSuchProof)?;
        let path = pieces.inclusion(tree_size, index)?;
        // The root alone does not vouch for the path: a root stored above the chunks may
        // be in the path and not in the root (the root takes the larger subtree holding
        // it). The path verified from the event read from the log to the signed root does.
        merkle::verify_inclusion(&event_hash, index, tree_size, &path, &body.root)
            .map_err(FallBack::DoesNotVerify)?;
        let event = kept.ok_or(Missing::NoSuchProof)?;
        Ok((
            InclusionProof {
                partition: partition.to_string(),
                tree_size,
                leaf_index: index,
                event_hash: merkle::encode_hash(&event_hash),
                audit_path: path.iter().map(merkle::encode_hash).collect(),
                root: merkle::encode_hash(&root),
            },
            event,
        ))
    }

    /// The consistency proof between the checkpoints `old` and `new`, from the pieces.
    pub(super) async fn consistency_from_pieces<S: StoredTree + ?Sized>(
        &self,
        stored: &S,
        partition: &Partition,
        old: &CheckpointBody,
        new: &CheckpointBody,
    ) -> Result<ConsistencyProof, FallBack> {
        let (from, to) = (old.tree_size, new.tree_size);
        let Gathered { pieces, .. } = self
            .gather(
                stored,
                partition,
                to,
                |level| merkle_pieces::plan_consistency(level, from, to),
                None,
            )
            .await?;
        let old_root = pieces.root(from)?;
        let new_root = pieces.root(to)?;
        let old_head = *pieces.leaf(from - 1).ok_or(Missing::NoSuchProof)?;
        let new_head = *pieces.leaf(to - 1).ok_or(Missing::NoSuchProof)?;
        check_matches_root(old, &old_root, &old_head).map_err(FallBack::NotTheSignedRoot)?;
        check_matches_root(new, &new_root, &new_head).map_err(FallBack::NotTheSignedRoot)?;
        let path = pieces.consistency(from, to)?;
        // As for inclusion: the path itself verified between the two signed roots.
        merkle::verify_consistency(from, to, &old.root, &new.root, &path)
            .map_err(FallBack::DoesNotVerify)?;
        Ok(ConsistencyProof {
            partition: partition.to_string(),
            old_size: from,
            new_size: to,
            old_root: merkle::encode_hash(&old_root),
            new_root: merkle::encode_hash(&new_root),
            path: path.iter().map(merkle::encode_hash).collect(),
        })
    }
}
