//! A partition's Merkle tree as the projections follow it (ADR 0026): its frontier, the
//! root of every complete aligned subtree at the partition's chunk level or above, and
//! where each chunk of `2^level` events starts in the log. Proofs are assembled from
//! these and at most two chunks read back (`merkle_pieces`), instead of the whole chain.
//!
//! Records, in the projections' meta tree, written in the batch that applied the events
//! they cover (exactly once across a crash, as every projection record):
//! - `mtree/{partition}`: level (1 byte), size (8, big-endian), then the frontier's
//!   subtree roots, largest first (32 each): written each batch that touches the
//!   partition.
//! - `mnode/{partition} NUL level index`: the root of one complete subtree (32 bytes),
//!   written once, never changed (level 1 byte, index 8 big-endian).
//! - `mchunk/{partition} NUL chunk`: where chunk `chunk` (> 0) starts: the hash of the
//!   event before its first (32 bytes) and the log position after that event
//!   (`encode_position`). Not written when messages were held there (the chunk's read
//!   would have to follow them: the proof reads the whole chain instead).

use crate::chain::Digest;
use crate::log::Position;
use crate::merkle::{Frontier, Hash32};

pub const TREE_PREFIX: &[u8] = b"mtree/";
pub const NODE_PREFIX: &[u8] = b"mnode/";
pub const CHUNK_PREFIX: &[u8] = b"mchunk/";

/// Largest chunk level a partition may use: a chunk index and a node index must fit the
/// tree's `u64` leaves.
pub const CHUNK_LEVEL_MAX: u32 = 32;

pub fn tree_key(partition: &str) -> Vec<u8> {
    [TREE_PREFIX, partition.as_bytes()].concat()
}

pub fn node_key(partition: &str, level: u32, index: u64) -> Vec<u8> {
    let mut key = [NODE_PREFIX, partition.as_bytes(), b"\0"].concat();
    key.push(level as u8);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

pub fn chunk_key(partition: &str, chunk: u64) -> Vec<u8> {
    [
        CHUNK_PREFIX,
        partition.as_bytes(),
        b"\0",
        &chunk.to_be_bytes(),
    ]
    .concat()
}

/// One partition's tree while a batch applies its events.
#[derive(Debug)]
pub struct Tree {
    pub chunk_level: u32,
    pub frontier: Frontier,
    /// The node and chunk records this batch adds, in the order they were made.
    pub writes: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Tree {
    /// A partition with no event applied yet: its level is the projector's now, and
    /// stays the partition's (stored with its frontier).
    pub fn new(chunk_level: u32) -> Self {
        Self {
            chunk_level: chunk_level.min(CHUNK_LEVEL_MAX),
            frontier: Frontier::new(),
            writes: Vec::new(),
        }
    }

    /// Takes the next event of the chain, of hash `hash` and sequence `sequence` (the
    /// frontier's size + 1), whose message ends at `after`; `quiet` when nothing is held
    /// after it. False when the event is not the next leaf (the stored tree does not
    /// follow the head): nothing changes, proofs read the chain instead.
    pub fn push(
        &mut self,
        partition: &str,
        sequence: u64,
        hash: &Digest,
        after: &Position,
        quiet: bool,
        encode_position: impl Fn(&Position) -> Vec<u8>,
    ) -> bool {
        if self.frontier.size().checked_add(1) != Some(sequence) {
            return false;
        }
        let level = self.chunk_level;
        let writes = &mut self.writes;
        let pushed = self
            .frontier
            .try_push_completing(&hash.0, |l, index, root| {
                if l >= level {
                    writes.push((node_key(partition, l, index), root.to_vec()));
                }
            });
        if pushed.is_err() {
            return false;
        }
        let size = self.frontier.size();
        if quiet && size.trailing_zeros() >= level {
            let start = [hash.0.as_slice(), &encode_position(after)].concat();
            self.writes
                .push((chunk_key(partition, size >> level), start));
        }
        true
    }

    /// The `mtree/` record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + 32 * self.frontier.subtrees().len());
        out.push(self.chunk_level as u8);
        out.extend_from_slice(&self.frontier.size().to_be_bytes());
        for h in self.frontier.subtrees() {
            out.extend_from_slice(h);
        }
        out
    }

    /// An `mtree/` record back; None if it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&level, rest) = bytes.split_first()?;
        let size = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let subtrees: Vec<Hash32> = rest[8..]
            .chunks(32)
            .map(|c| c.try_into().ok())
            .collect::<Option<_>>()?;
        let level = u32::from(level);
        if level > CHUNK_LEVEL_MAX {
            return None;
        }
        Some(Self {
            chunk_level: level,
            frontier: Frontier::from_parts(size, subtrees).ok()?,
            writes: Vec::new(),
        })
    }
}

/// An `mchunk/` record back: the hash of the event before the chunk and the position
/// after it (as `decode_position` reads it).
pub fn decode_chunk_start<P>(
    bytes: &[u8],
    decode_position: impl Fn(&[u8]) -> Option<P>,
) -> Option<(Digest, P)> {
    let hash = Digest::from_slice(bytes.get(..32)?)?;
    Some((hash, decode_position(&bytes[32..])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_record_reads_back() {
        let mut tree = Tree::new(2);
        let at = Position::START;
        for sequence in 1..=11u64 {
            let hash = Digest(*blake3::hash(&sequence.to_le_bytes()).as_bytes());
            assert!(tree.push("01", sequence, &hash, &at, true, |_| vec![0; 8]));
        }
        // Not the next leaf: refused, nothing changes.
        assert!(!tree.push("01", 13, &Digest([0; 32]), &at, true, |_| vec![]));
        let back = Tree::decode(&tree.encode()).unwrap();
        assert_eq!(
            (back.chunk_level, back.frontier),
            (2, tree.frontier.clone())
        );
        // Level 2 and 3 nodes of 11 leaves: (2,0), (2,1), (3,0); chunks 1 and 2 start.
        let nodes = tree
            .writes
            .iter()
            .filter(|(k, _)| k.starts_with(NODE_PREFIX))
            .count();
        let chunks = tree
            .writes
            .iter()
            .filter(|(k, _)| k.starts_with(CHUNK_PREFIX))
            .count();
        assert_eq!((nodes, chunks), (3, 2));
        assert!(Tree::decode(&[9, 0]).is_none());
    }
}
