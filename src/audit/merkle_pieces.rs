//! Proofs assembled from pieces of the tree instead of every leaf (ADR 0026).
//!
//! Every hash an inclusion or consistency proof carries, and every root, is the root of a
//! range of leaves, and every such range is a run of complete aligned subtrees (RFC 6962
//! splits at the largest power of two). The projections store the root of each complete
//! aligned subtree at level `chunk_level` or above as they follow a chain
//! (`Frontier::try_push_completing`); the ones below it lie inside one *chunk* of
//! `2^chunk_level` leaves, which is read back from the log. A proof then needs O(log n)
//! stored roots and the leaves of at most two chunks (`Plan`).
//!
//! Pure: no store, no log. The caller fetches what the plan names and hands it over as
//! `Pieces`; what is missing is a typed `Missing`, never a panic, and the caller falls
//! back to the whole tree. The caller also checks the roots computed here against the
//! signed checkpoint: a wrong stored piece makes a wrong root, never a wrong proof that
//! passes.

use std::collections::{BTreeMap, BTreeSet};

use super::merkle::{Hash32, leaf_hash, node_hash, subtree_root};

/// Level of the smallest subtrees the projections store: chunks of 256 leaves. About two
/// stored roots per 256 events (1/256 + 1/512 + ... of a level each), and a proof reads
/// at most two chunks: 512 event hashes, 16 KiB, wherever the partition's size.
pub const CHUNK_LEVEL: u32 = 8;

/// Most levels a tree of `u64` leaves has above its leaves.
pub const LEVELS_MAX: u32 = 64;

/// A piece of the tree the caller did not hand over: a stored root (`level >= chunk
/// level`) or a chunk's leaves. The caller reads the whole tree instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    #[error("no stored root of the subtree at level {level}, index {index}")]
    Node { level: u32, index: u64 },
    #[error("leaves {first}..{end} of chunk {chunk} were not read")]
    Chunk { chunk: u64, first: u64, end: u64 },
    /// The request itself does not fit the tree (an index past its size, sizes out of
    /// order): the caller checks these before it plans.
    #[error("no such proof")]
    NoSuchProof,
}

/// What a proof needs: the stored roots (level, index), and the chunks whose leaves are
/// read, each up to the leaf it must reach (exclusive: the largest tree size involved,
/// or the chunk's end).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub nodes: BTreeSet<(u32, u64)>,
    /// Chunk index → leaves of the tree to read, `[chunk·2^level, end)`.
    pub chunks: BTreeMap<u64, u64>,
}

/// The pieces handed over: stored roots and the leaves (event hashes) read of each chunk,
/// from its first leaf on.
#[derive(Debug, Clone)]
pub struct Pieces {
    pub chunk_level: u32,
    pub nodes: BTreeMap<(u32, u64), Hash32>,
    pub chunks: BTreeMap<u64, Vec<Hash32>>,
}

/// The root of the complete aligned subtree at (`level`, `index`), from wherever it comes.
trait Source {
    fn complete(&mut self, level: u32, index: u64) -> Result<Hash32, Missing>;
}

/// MTH of leaves `[start, start + n)` (`n >= 1`), split as RFC 6962 splits it: each
/// power-of-two block is complete and aligned, since every range a proof names starts at
/// a multiple of the largest power of two below its length.
fn range_root(source: &mut impl Source, start: u64, n: u64) -> Result<Hash32, Missing> {
    if n.is_power_of_two() {
        let level = n.trailing_zeros();
        return source.complete(level, start >> level);
    }
    let k = split_point(n);
    let left = range_root(source, start, k)?;
    let right = range_root(source, start + k, n - k)?;
    Ok(node_hash(&left, &right))
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    1u64 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// `merkle::inclusion_proof`'s walk, on ranges: the audit path, leaf's sibling first.
fn inclusion_path(
    source: &mut impl Source,
    tree_size: u64,
    index: u64,
) -> Result<Vec<Hash32>, Missing> {
    if index >= tree_size {
        return Err(Missing::NoSuchProof);
    }
    let (mut start, mut n, mut m) = (0u64, tree_size, index);
    let mut top_down = Vec::with_capacity(LEVELS_MAX as usize);
    while n > 1 {
        let k = split_point(n);
        if m < k {
            top_down.push(range_root(source, start + k, n - k)?);
            n = k;
        } else {
            top_down.push(range_root(source, start, k)?);
            start += k;
            n -= k;
            m -= k;
        }
    }
    top_down.reverse();
    Ok(top_down)
}

/// `merkle::consistency_proof`'s walk (`ConsistencyBuilder::new`'s ranges): the path
/// from the tree of `old_size` leaves to the tree of `new_size`.
fn consistency_path(
    source: &mut impl Source,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash32>, Missing> {
    if old_size == 0 || old_size > new_size {
        return Err(Missing::NoSuchProof);
    }
    let (mut start, mut end, mut m, mut b) = (0u64, new_size, old_size, true);
    let mut top_down = Vec::with_capacity(LEVELS_MAX as usize + 1);
    while m < end - start {
        let k = split_point(end - start);
        if m <= k {
            top_down.push(range_root(source, start + k, end - start - k)?);
            end = start + k;
        } else {
            top_down.push(range_root(source, start, k)?);
            start += k;
            m -= k;
            b = false;
        }
    }
    if !b {
        top_down.push(range_root(source, start, end - start)?);
    }
    top_down.reverse();
    Ok(top_down)
}

/// The chunk of leaf `leaf` at `chunk_level`.
pub fn chunk_of(chunk_level: u32, leaf: u64) -> u64 {
    leaf >> chunk_level
}

/// A source that hands out nothing and writes down what it was asked for.
struct Planner {
    chunk_level: u32,
    plan: Plan,
    /// The largest tree size involved: no chunk is read past it.
    tree_size: u64,
}

impl Source for Planner {
    fn complete(&mut self, level: u32, index: u64) -> Result<Hash32, Missing> {
        if level >= self.chunk_level {
            self.plan.nodes.insert((level, index));
        } else {
            self.want_leaf(index << level);
        }
        Ok([0; 32])
    }
}

impl Planner {
    fn new(chunk_level: u32, tree_size: u64) -> Self {
        Self {
            chunk_level,
            plan: Plan::default(),
            tree_size,
        }
    }

    /// The chunk of `leaf`, read to its end or the tree's.
    fn want_leaf(&mut self, leaf: u64) {
        let chunk = chunk_of(self.chunk_level, leaf);
        let chunk_end = (chunk + 1)
            .checked_shl(self.chunk_level)
            .unwrap_or(u64::MAX);
        self.plan
            .chunks
            .insert(chunk, chunk_end.min(self.tree_size));
    }
}

/// What an inclusion proof of leaf `index` in the tree of `tree_size` leaves needs: its
/// path, the root, and the leaf itself and the tree's last leaf (the checkpoint's head).
/// At most two chunks: the leaf's and the one at the tree's right edge.
pub fn plan_inclusion(chunk_level: u32, tree_size: u64, index: u64) -> Result<Plan, Missing> {
    let mut planner = Planner::new(chunk_level, tree_size);
    inclusion_path(&mut planner, tree_size, index)?;
    range_root(&mut planner, 0, tree_size)?;
    planner.want_leaf(index);
    planner.want_leaf(tree_size - 1);
    Ok(planner.plan)
}

/// What a consistency proof from `old_size` to `new_size` leaves needs: its path, both
/// roots and both trees' last leaves. At most two chunks: those of the two right edges.
pub fn plan_consistency(chunk_level: u32, old_size: u64, new_size: u64) -> Result<Plan, Missing> {
    let mut planner = Planner::new(chunk_level, new_size);
    consistency_path(&mut planner, old_size, new_size)?;
    range_root(&mut planner, 0, old_size)?;
    range_root(&mut planner, 0, new_size)?;
    planner.want_leaf(old_size - 1);
    planner.want_leaf(new_size - 1);
    Ok(planner.plan)
}

impl Source for &Pieces {
    fn complete(&mut self, level: u32, index: u64) -> Result<Hash32, Missing> {
        if level >= self.chunk_level {
            return self
                .nodes
                .get(&(level, index))
                .copied()
                .ok_or(Missing::Node { level, index });
        }
        let first = index << level;
        let end = first + (1u64 << level);
        let chunk = chunk_of(self.chunk_level, first);
        let chunk_first = chunk << self.chunk_level;
        let missing = Missing::Chunk { chunk, first, end };
        let leaves = self.chunks.get(&chunk).ok_or(missing)?;
        let from = usize::try_from(first - chunk_first).map_err(|_| missing)?;
        let to = usize::try_from(end - chunk_first).map_err(|_| missing)?;
        match leaves.get(from..to) {
            Some([one]) => Ok(leaf_hash(one)),
            Some(block) => Ok(subtree_root(block)),
            None => Err(missing),
        }
    }
}

impl Pieces {
    /// The event hash of leaf `index`, from its chunk.
    pub fn leaf(&self, index: u64) -> Option<&Hash32> {
        let chunk = chunk_of(self.chunk_level, index);
        let offset = usize::try_from(index - (chunk << self.chunk_level)).ok()?;
        self.chunks.get(&chunk)?.get(offset)
    }

    /// MTH of the first `tree_size` leaves.
    pub fn root(&self, tree_size: u64) -> Result<Hash32, Missing> {
        if tree_size == 0 {
            return Err(Missing::NoSuchProof);
        }
        range_root(&mut &*self, 0, tree_size)
    }

    /// `merkle::inclusion_proof` of leaf `index` in the tree of `tree_size` leaves.
    pub fn inclusion(&self, tree_size: u64, index: u64) -> Result<Vec<Hash32>, Missing> {
        inclusion_path(&mut &*self, tree_size, index)
    }

    /// `merkle::consistency_proof` from the tree of `old_size` leaves to `new_size`.
    pub fn consistency(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash32>, Missing> {
        consistency_path(&mut &*self, old_size, new_size)
    }

    /// The root of chunk `chunk` from its leaves read, when all of them were: what the
    /// caller compares with the stored root of the chunk before it trusts either.
    pub fn chunk_root(&self, chunk: u64) -> Option<Hash32> {
        let leaves = self.chunks.get(&chunk)?;
        (leaves.len() as u64 == 1u64 << self.chunk_level).then(|| subtree_root(leaves))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{self, Frontier};

    fn hashes(n: u64) -> Vec<Hash32> {
        (0..n)
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .collect()
    }

    /// What the projections hold after `leaves`: every complete subtree's root at
    /// `chunk_level` or above, as `Frontier::try_push_completing` reports them.
    fn stored(chunk_level: u32, leaves: &[Hash32]) -> BTreeMap<(u32, u64), Hash32> {
        let mut frontier = Frontier::new();
        let mut nodes = BTreeMap::new();
        for h in leaves {
            frontier
                .try_push_completing(h, |level, index, root| {
                    if level >= chunk_level {
                        nodes.insert((level, index), *root);
                    }
                })
                .unwrap();
        }
        nodes
    }

    /// The pieces the plan names, from the whole list: only the planned chunks, each to
    /// its planned end, and only the planned nodes.
    fn pieces(
        chunk_level: u32,
        plan: &Plan,
        all: &BTreeMap<(u32, u64), Hash32>,
        leaves: &[Hash32],
    ) -> Pieces {
        Pieces {
            chunk_level,
            nodes: plan.nodes.iter().map(|k| (*k, all[k])).collect(),
            chunks: plan
                .chunks
                .iter()
                .map(|(&c, &end)| {
                    let first = (c << chunk_level) as usize;
                    (c, leaves[first..end as usize].to_vec())
                })
                .collect(),
        }
    }

    fn check_size(chunk_level: u32, log: &[Hash32], all: &BTreeMap<(u32, u64), Hash32>, m: u64) {
        let tree = &log[..m as usize];
        let indexes = [0, 1, m / 3, m / 2, m.saturating_sub(2), m - 1];
        for &i in indexes.iter().filter(|&&i| i < m) {
            let plan = plan_inclusion(chunk_level, m, i).unwrap();
            assert!(plan.chunks.len() <= 2, "m {m} i {i}: {plan:?}");
            assert!(plan.nodes.len() <= 2 * LEVELS_MAX as usize);
            let p = pieces(chunk_level, &plan, all, log);
            assert_eq!(
                p.inclusion(m, i).unwrap(),
                merkle::inclusion_proof(tree, i).unwrap(),
                "level {chunk_level} m {m} i {i}"
            );
            assert_eq!(p.root(m).unwrap(), merkle::root(tree));
            assert_eq!(p.leaf(i), Some(&tree[i as usize]));
            assert_eq!(p.leaf(m - 1), Some(&tree[m as usize - 1]));
        }
        for old in [1, 2, m / 2, m.saturating_sub(1), m] {
            if old == 0 || old > m {
                continue;
            }
            let plan = plan_consistency(chunk_level, old, m).unwrap();
            assert!(plan.chunks.len() <= 2, "old {old} m {m}: {plan:?}");
            let p = pieces(chunk_level, &plan, all, log);
            assert_eq!(
                p.consistency(old, m).unwrap(),
                merkle::consistency_proof(tree, old).unwrap(),
                "level {chunk_level} old {old} m {m}"
            );
            assert_eq!(p.root(old).unwrap(), merkle::root(&tree[..old as usize]));
            assert_eq!(p.root(m).unwrap(), merkle::root(tree));
            assert_eq!(p.leaf(old - 1), Some(&tree[old as usize - 1]));
        }
    }

    /// For every tree size 1..=600 of a log of 600 leaves (stored roots of the whole log,
    /// as the projections hold them past a checkpoint), the proofs assembled from the
    /// planned pieces are the ones built from every leaf.
    #[test]
    fn pieces_make_the_proofs_of_every_leaf() {
        let log = hashes(600);
        for chunk_level in [0, 1, 2, 3] {
            let all = stored(chunk_level, &log);
            for m in 1..=600 {
                check_size(chunk_level, &log, &all, m);
            }
        }
    }

    #[test]
    fn pieces_make_the_proofs_at_the_chunk_level() {
        let log = hashes(2_100);
        let all = stored(CHUNK_LEVEL, &log);
        for m in [
            1, 2, 255, 256, 257, 511, 512, 513, 767, 1_024, 1_500, 2_048, 2_100,
        ] {
            check_size(CHUNK_LEVEL, &log, &all, m);
        }
    }

    #[test]
    fn a_piece_not_handed_over_is_missing_not_a_panic() {
        let log = hashes(600);
        let all = stored(2, &log);
        let plan = plan_inclusion(2, 600, 17).unwrap();
        let mut p = pieces(2, &plan, &all, &log);
        let node = *plan.nodes.iter().next().unwrap();
        p.nodes.remove(&node);
        assert!(matches!(p.inclusion(600, 17), Err(Missing::Node { .. })));
        let mut p = pieces(2, &plan, &all, &log);
        p.chunks.clear();
        assert!(matches!(p.inclusion(600, 17), Err(Missing::Chunk { .. })));
        assert_eq!(plan_inclusion(2, 600, 600), Err(Missing::NoSuchProof));
        assert_eq!(plan_consistency(2, 0, 600), Err(Missing::NoSuchProof));
        assert_eq!(plan_consistency(2, 601, 600), Err(Missing::NoSuchProof));
    }

    #[test]
    fn frontier_reports_every_complete_subtree_once() {
        let log = hashes(64);
        let all = stored(0, &log);
        for level in 0..=6u32 {
            for index in 0..(64u64 >> level) {
                let first = (index << level) as usize;
                let block = &log[first..first + (1 << level)];
                assert_eq!(all[&(level, index)], merkle::root(block), "{level} {index}");
            }
        }
        assert_eq!(all.len(), 127);
    }
}
