//! Merkle tree commitments over the ansinh event log.
//!
//! The tree shape is exactly RFC 6962 §2.1 / RFC 9162 §2.1 so that the
//! well-studied proof algorithms (and third-party verifiers written against
//! those RFCs) carry over unchanged; only the hash function differs: BLAKE3
//! replaces SHA-256, with the same one-byte domain separation prefixes
//! (`0x00` for leaves, `0x01` for interior nodes) so a leaf can never be
//! reinterpreted as a node (second-preimage defence).
//!
//! Every public function is total: malformed or hostile input produces a
//! typed [`ProofError`], never a panic, because proofs arrive from untrusted
//! parties and a panic would be a denial-of-service vector.
//!
//! See `PROOFS.md` for a language-neutral description of every format.

use serde::{Deserialize, Serialize};

/// A 32-byte digest: an event hash, a leaf hash, a node hash or a root.
pub type Hash32 = [u8; 32];

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Why a proof (or persisted state) was rejected.
///
/// Every variant means "do not trust the claim"; the variants only differ in
/// what the caller should suspect and report.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum ProofError {
    /// The leaf index is not inside the tree (`index >= tree_size`, which
    /// includes every index of an empty tree). The caller asked about a
    /// position that does not exist yet: re-fetch a newer checkpoint, or
    /// treat the request as malformed.
    #[error("leaf index {index} is out of range for a tree of size {tree_size}")]
    IndexOutOfRange {
        /// Requested 0-based leaf index.
        index: u64,
        /// Number of leaves in the tree.
        tree_size: u64,
    },

    /// A consistency proof was requested or supplied with `old_size == 0`.
    /// The empty tree is trivially a prefix of every tree, so there is
    /// nothing to prove; the caller should skip the check rather than ask
    /// for a proof (RFC 6962 only defines proofs for `0 < m`).
    #[error("old tree size must be greater than zero")]
    OldSizeZero,

    /// The "old" tree is larger than the "new" tree. Logs only grow, so this
    /// is either swapped arguments or evidence of a rollback/fork: the
    /// caller must not accept the newer checkpoint and should alert.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    OldSizeAfterNew {
        /// Claimed size of the older tree.
        old_size: u64,
        /// Claimed size of the newer tree.
        new_size: u64,
    },

    /// The proof does not have the length the tree geometry dictates (the
    /// length is a pure function of the sizes/index). The proof is
    /// malformed or was produced for different parameters: reject it and
    /// re-request; do not try to trim or pad it.
    #[error("wrong proof length: expected {expected} hashes, got {actual}")]
    WrongProofLength {
        /// Length required by the tree geometry.
        expected: usize,
        /// Length actually supplied.
        actual: usize,
    },

    /// The proof is well-formed but the recomputed root(s) do not match the
    /// claimed root(s). Either the data, the proof or the root is wrong —
    /// for an authenticated root this is evidence of tampering or a forked
    /// log: reject and alert.
    #[error("recomputed root does not match the expected root")]
    RootMismatch,

    /// The tree cannot grow further (it already holds `u64::MAX` leaves) or
    /// the input slice does not fit in a `u64` size. Unreachable in
    /// practice; the caller should stop appending and report a bug.
    #[error("tree is too large")]
    TreeTooLarge,

    /// A streamed consistency proof (`ConsistencyBuilder`) was finished before all the
    /// event hashes of the new tree were pushed: the caller read fewer than it asked
    /// for (a log shorter than the checkpoint); nothing was proved.
    #[error("consistency proof finished after {pushed} of {new_size} event hashes")]
    Unfinished {
        /// Size of the newer tree.
        new_size: u64,
        /// Event hashes pushed.
        pushed: u64,
    },

    /// A hex-encoded field is not exactly 64 lowercase hexadecimal digits.
    /// The serialized proof is corrupt or non-canonical: reject it.
    #[error("field `{field}` is not exactly 64 lowercase hex digits")]
    InvalidHex {
        /// Name of the offending field, e.g. `audit_path[3]`.
        field: String,
    },

    /// Persisted [`Frontier`] state is inconsistent: the number of stored
    /// subtree hashes must equal the number of one bits in the size. The
    /// persisted checkpoint is corrupt: rebuild the frontier from the log.
    #[error("frontier state is malformed: expected {expected} subtree hashes, got {actual}")]
    MalformedFrontier {
        /// `size.count_ones()`.
        expected: usize,
        /// Number of subtree hashes supplied.
        actual: usize,
    },
}

/// `BLAKE3(0x00 || event_hash)`.
pub fn leaf_hash(event_hash: &Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[LEAF_PREFIX]);
    h.update(event_hash);
    *h.finalize().as_bytes()
}

/// `BLAKE3(0x01 || left || right)`.
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[NODE_PREFIX]);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// Root of the empty tree, `BLAKE3("")`, as RFC 6962 defines MTH({}) as the
/// hash of the empty string.
fn empty_root() -> Hash32 {
    *blake3::hash(b"").as_bytes()
}

/// Constant-time equality, so that a verifier answering many queries does not
/// leak through timing how many leading bytes of a forged root were right.
fn ct_eq(a: &Hash32, b: &Hash32) -> bool {
    blake3::Hash::from(*a) == blake3::Hash::from(*b)
}

/// Largest power of two strictly smaller than `n`; requires `n >= 2`.
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    // (n - 1) has its highest bit exactly at the largest power of two < n.
    1usize << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// MTH over a slice of event hashes. Recursion depth is at most 64 because
/// each level at least halves the slice.
pub(crate) fn subtree_root(leaves: &[Hash32]) -> Hash32 {
    match leaves.len() {
        0 => empty_root(),
        1 => leaf_hash(&leaves[0]),
        n => {
            let k = split_point(n);
            node_hash(&subtree_root(&leaves[..k]), &subtree_root(&leaves[k..]))
        }
    }
}

fn len_u64(leaves: &[Hash32]) -> Result<u64, ProofError> {
    u64::try_from(leaves.len()).map_err(|_| ProofError::TreeTooLarge)
}

/// Tree hash MTH(D[n]) of RFC 6962 §2.1 over the given event hashes.
pub fn root(event_hashes: &[Hash32]) -> Hash32 {
    subtree_root(event_hashes)
}

/// Number of bits needed to represent `x` (Go's `bits.Len64`).
fn bit_len(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// Audit path length for `index` in a tree of `size` (`index < size`).
///
/// `inner` counts levels where the path to the leaf and the path to the last
/// leaf diverge (full siblings); `border` counts the levels above that where
/// the leaf's ancestor is a left child on the right border, each of which
/// contributes one more sibling. This mirrors the geometry RFC 9162's
/// verification loop walks, so checking it up front lets us reject a proof
/// of the wrong length before hashing anything.
fn inclusion_len(index: u64, size: u64) -> usize {
    let inner = bit_len(index ^ (size - 1));
    // `checked_shr` because `inner` can be 64 for trees larger than 2^63.
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Consistency proof length for `0 < old < new`.
fn consistency_len(old: u64, new: u64) -> usize {
    let idx = old - 1;
    let inner_full = bit_len(idx ^ (new - 1));
    let border = idx.checked_shr(inner_full).unwrap_or(0).count_ones();
    // The lowest `trailing_zeros(old)` levels of the old tree's last leaf
    // path are one complete subtree whose root is sent (or, when `old` is a
    // power of two, is the old root itself), not its internal siblings.
    let shift = old.trailing_zeros();
    let inner = inner_full.saturating_sub(shift);
    let seed = usize::from(!old.is_power_of_two());
    seed + inner as usize + border as usize
}

/// RFC 6962 §2.1.1 audit path PATH(m, D[n]) for leaf `index` (0-based),
/// ordered from the leaf's sibling up to the child of the root.
pub fn inclusion_proof(event_hashes: &[Hash32], index: u64) -> Result<Vec<Hash32>, ProofError> {
    let tree_size = len_u64(event_hashes)?;
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange { index, tree_size });
    }
    // index < len, so it fits in usize.
    let mut m = index as usize;
    let mut d = event_hashes;
    // Siblings are discovered top-down, but the proof lists them bottom-up.
    let mut top_down = Vec::new();
    while d.len() > 1 {
        let k = split_point(d.len());
        if m < k {
            top_down.push(subtree_root(&d[k..]));
            d = &d[..k];
        } else {
            top_down.push(subtree_root(&d[..k]));
            d = &d[k..];
            m -= k;
        }
    }
    top_down.reverse();
    Ok(top_down)
}

/// Builds many inclusion proofs over one tree: every complete, aligned power-of-two
/// subtree root is computed once, then each proof costs O(log² n) instead of
/// `inclusion_proof`'s O(n). Used by bundle export, which proves up to tens of
/// thousands of events of one partition.
///
/// Memory: the n event hashes it is handed and the levels above them, fewer than n
/// more hashes, so under 2 × n × 32 bytes, plus 24 bytes a level for the list of
/// levels. That is also its peak while it is built: each level is allocated once at its
/// exact size and never copied, and leaf hashes are not kept (they are recomputed from
/// the event hashes). `tests/merkle_memory.rs` measures it.
pub struct Prover {
    /// `levels[0]` = the event hashes; for j ≥ 1, `levels[j][i]` = MTH of leaves
    /// `[i·2^j, (i+1)·2^j)`.
    levels: Vec<Vec<Hash32>>,
    partition: String,
}

impl Prover {
    /// A prover over `event_hashes`, which it keeps (the caller hands them over rather
    /// than keep a second copy; `event_hash` reads them back).
    pub fn new(partition: impl Into<String>, event_hashes: Vec<Hash32>) -> Self {
        // The event hashes and one level per halving down to one root: allocated at
        // that length, the list of levels never grows.
        let depth = usize::BITS - event_hashes.len().leading_zeros();
        let mut levels = Vec::with_capacity(depth.max(1) as usize);
        // Level 1 from the event hashes' leaf hashes, computed pair by pair.
        let mut next: Vec<Hash32> = event_hashes
            .chunks_exact(2)
            .map(|pair| node_hash(&leaf_hash(&pair[0]), &leaf_hash(&pair[1])))
            .collect();
        levels.push(event_hashes);
        // Each level is moved into the list once the one above it is built from it.
        while !next.is_empty() {
            let above: Vec<Hash32> = next
                .chunks_exact(2)
                .map(|pair| node_hash(&pair[0], &pair[1]))
                .collect();
            levels.push(next);
            next = above;
        }
        Self {
            levels,
            partition: partition.into(),
        }
    }

    /// Event hash `index` (0-based), if the tree has it.
    pub fn event_hash(&self, index: u64) -> Option<&Hash32> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.levels[0].get(i))
    }

    pub fn size(&self) -> usize {
        self.levels[0].len()
    }

    /// MTH of leaves `[start, start + n)`. In the RFC 6962 split every block starts
    /// at a multiple of its largest power-of-two part, so complete blocks are looked up.
    fn subtree(&self, start: usize, n: usize) -> Hash32 {
        match n {
            0 => empty_root(),
            1 => leaf_hash(&self.levels[0][start]),
            n if n.is_power_of_two() => {
                let level = n.trailing_zeros() as usize;
                self.levels[level][start >> level]
            }
            n => {
                let k = split_point(n);
                node_hash(&self.subtree(start, k), &self.subtree(start + k, n - k))
            }
        }
    }

    pub fn root(&self) -> Hash32 {
        self.subtree(0, self.size())
    }

    /// The same document as `InclusionProof::generate(partition, hashes, index)`.
    pub fn inclusion(&self, index: u64) -> Result<InclusionProof, ProofError> {
        let tree_size = len_u64(&self.levels[0])?;
        if index >= tree_size {
            return Err(ProofError::IndexOutOfRange { index, tree_size });
        }
        let (mut start, mut n, mut m) = (0usize, self.size(), index as usize);
        let mut top_down = Vec::new();
        while n > 1 {
            let k = split_point(n);
            if m < k {
                top_down.push(self.subtree(start + k, n - k));
                n = k;
            } else {
                top_down.push(self.subtree(start, k));
                start += k;
                n -= k;
                m -= k;
            }
        }
        top_down.reverse();
        Ok(InclusionProof {
            partition: self.partition.clone(),
            tree_size,
            leaf_index: index,
            event_hash: encode_hash(&self.levels[0][index as usize]),
            audit_path: top_down.iter().map(encode_hash).collect(),
            root: encode_hash(&self.root()),
        })
    }
}

/// RFC 9162 §2.1.3.2: verify that `event_hash` is leaf `index` of the tree of
/// `tree_size` leaves whose root is `root`.
pub fn verify_inclusion(
    event_hash: &Hash32,
    index: u64,
    tree_size: u64,
    proof: &[Hash32],
    root: &Hash32,
) -> Result<(), ProofError> {
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange { index, tree_size });
    }
    let expected = inclusion_len(index, tree_size);
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    let mut fn_ = index;
    let mut sn = tree_size - 1;
    let mut r = leaf_hash(event_hash);
    for p in proof {
        if sn == 0 {
            // Unreachable after the length check; kept so the loop is the
            // RFC algorithm verbatim and stays safe if the check changes.
            return Err(ProofError::WrongProofLength {
                expected,
                actual: proof.len(),
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    if ct_eq(&r, root) {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

fn check_sizes(old_size: u64, new_size: u64) -> Result<(), ProofError> {
    if old_size == 0 {
        return Err(ProofError::OldSizeZero);
    }
    if old_size > new_size {
        return Err(ProofError::OldSizeAfterNew { old_size, new_size });
    }
    Ok(())
}

/// RFC 6962 §2.1.2 consistency proof PROOF(m, D[n]) between the tree of the
/// first `old_size` event hashes and the tree of all of `event_hashes`.
/// `old_size == event_hashes.len()` yields an empty proof.
pub fn consistency_proof(
    event_hashes: &[Hash32],
    old_size: u64,
) -> Result<Vec<Hash32>, ProofError> {
    let new_size = len_u64(event_hashes)?;
    check_sizes(old_size, new_size)?;
    // old_size <= len, so it fits in usize.
    let mut m = old_size as usize;
    let mut d = event_hashes;
    // SUBPROOF's flag b: true while the old tree's root is one of the new
    // tree's complete subtrees on the left spine, which the verifier already
    // knows and therefore is not sent.
    let mut b = true;
    let mut top_down = Vec::new();
    while m < d.len() {
        let k = split_point(d.len());
        if m <= k {
            top_down.push(subtree_root(&d[k..]));
            d = &d[..k];
        } else {
            top_down.push(subtree_root(&d[..k]));
            d = &d[k..];
            m -= k;
            b = false;
        }
    }
    if !b {
        top_down.push(subtree_root(d));
    }
    top_down.reverse();
    Ok(top_down)
}

/// Builds the consistency proof `PROOF(old_size, D[new_size])` while the event hashes
/// stream by, in O(log² n) memory instead of holding all of them: each hash of the proof
/// is the root of one range of leaves, the ranges are disjoint, so one `Frontier` per
/// range is enough (what `audit cosign` uses, reading the log once). Its `finish` gives
/// the document `ConsistencyProof::generate` gives over the same hashes.
pub struct ConsistencyBuilder {
    partition: String,
    old_size: u64,
    new_size: u64,
    /// `[start, end)` of each proof hash's subtree, in proof order, with its frontier.
    parts: Vec<(u64, u64, Frontier)>,
    tree: Frontier,
    old_root: Option<Hash32>,
}

impl ConsistencyBuilder {
    /// A builder of the proof from `old_size` to `new_size` (`0 < old_size <= new_size`).
    pub fn new(
        partition: impl Into<String>,
        old_size: u64,
        new_size: u64,
    ) -> Result<Self, ProofError> {
        check_sizes(old_size, new_size)?;
        // consistency_proof's walk, on ranges instead of slices.
        let (mut start, mut end, mut m, mut b) = (0u64, new_size, old_size, true);
        let mut top_down = Vec::new();
        while m < end - start {
            let n = end - start;
            let k = 1u64 << (u64::BITS - 1 - (n - 1).leading_zeros());
            if m <= k {
                top_down.push((start + k, end));
                end = start + k;
            } else {
                top_down.push((start, start + k));
                start += k;
                m -= k;
                b = false;
            }
        }
        if !b {
            top_down.push((start, end));
        }
        let parts = top_down
            .into_iter()
            .rev()
            .map(|(start, end)| (start, end, Frontier::new()))
            .collect();
        Ok(Self {
            partition: partition.into(),
            old_size,
            new_size,
            parts,
            tree: Frontier::new(),
            old_root: None,
        })
    }

    /// Appends the next event hash: leaf `size()` of the tree.
    pub fn push(&mut self, event_hash: &Hash32) -> Result<(), ProofError> {
        let index = self.tree.size();
        if index >= self.new_size {
            return Err(ProofError::TreeTooLarge);
        }
        self.tree.try_push(event_hash)?;
        if let Some((_, _, part)) = self
            .parts
            .iter_mut()
            .find(|(start, end, _)| (*start..*end).contains(&index))
        {
            part.try_push(event_hash)?;
        }
        if self.tree.size() == self.old_size {
            self.old_root = Some(self.tree.root());
        }
        Ok(())
    }

    /// Event hashes pushed so far.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The proof, once all `new_size` hashes were pushed.
    pub fn finish(self) -> Result<ConsistencyProof, ProofError> {
        let (Some(old_root), true) = (self.old_root, self.tree.size() == self.new_size) else {
            return Err(ProofError::Unfinished {
                new_size: self.new_size,
                pushed: self.tree.size(),
            });
        };
        Ok(ConsistencyProof {
            partition: self.partition,
            old_size: self.old_size,
            new_size: self.new_size,
            old_root: encode_hash(&old_root),
            new_root: encode_hash(&self.tree.root()),
            path: self
                .parts
                .iter()
                .map(|(_, _, part)| encode_hash(&part.root()))
                .collect(),
        })
    }
}

/// RFC 9162 §2.1.4.2: verify that the tree of `old_size` leaves with root
/// `old_root` is a prefix of the tree of `new_size` leaves with root
/// `new_root`. Equal sizes require an empty proof and equal roots.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash32,
    new_root: &Hash32,
    proof: &[Hash32],
) -> Result<(), ProofError> {
    check_sizes(old_size, new_size)?;
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongProofLength {
                expected: 0,
                actual: proof.len(),
            });
        }
        return if ct_eq(old_root, new_root) {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    let expected = consistency_len(old_size, new_size);
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    // Step 2: when the old tree is a complete subtree its root is not sent,
    // because the verifier already holds it; logically prepend it.
    let (seed, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (first, rest),
            // expected >= 1 here, so an empty proof was rejected above.
            None => {
                return Err(ProofError::WrongProofLength {
                    expected,
                    actual: 0,
                });
            }
        }
    };
    let mut fn_ = old_size - 1;
    let mut sn = new_size - 1;
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = *seed;
    let mut sr = *seed;
    for c in rest {
        if sn == 0 {
            return Err(ProofError::WrongProofLength {
                expected,
                actual: proof.len(),
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    // Evaluate both comparisons before branching so timing does not reveal
    // which root was wrong.
    let old_ok = ct_eq(&fr, old_root);
    let new_ok = ct_eq(&sr, new_root);
    if old_ok & new_ok {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Incremental Merkle tree builder holding only the roots of the maximal
/// complete subtrees of the current tree (a "compact range" of `[0, size)`),
/// so a checkpoint root can be computed while streaming the log in
/// O(log n) memory: at most 64 hashes, one per one-bit of `size`.
///
/// Persisted form (serde) is `{ "size": u64, "subtrees": [hex, ...] }`, with
/// subtrees ordered from the largest (leftmost) to the smallest (rightmost).
/// Deserialization checks the shape (hash count == popcount(size)) but cannot
/// check the hashes themselves: persisted frontiers must come from trusted
/// storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FrontierRepr", into = "FrontierRepr")]
pub struct Frontier {
    size: u64,
    /// Invariant: `subtrees.len() == size.count_ones()`, and `subtrees[i]` is
    /// the root of the complete subtree for the i-th highest one-bit of size.
    subtrees: Vec<Hash32>,
}

impl Default for Frontier {
    fn default() -> Self {
        Self::new()
    }
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Self {
        Frontier {
            size: 0,
            subtrees: Vec::new(),
        }
    }

    /// Rebuild a frontier from its parts (e.g. a checkpoint stored in another
    /// format). Only the shape can be validated, not the hashes.
    pub fn from_parts(size: u64, subtrees: Vec<Hash32>) -> Result<Self, ProofError> {
        let expected = size.count_ones() as usize;
        if subtrees.len() != expected {
            return Err(ProofError::MalformedFrontier {
                expected,
                actual: subtrees.len(),
            });
        }
        Ok(Frontier { size, subtrees })
    }

    /// Complete-subtree roots, largest (leftmost) first.
    pub fn subtrees(&self) -> &[Hash32] {
        &self.subtrees
    }

    /// Append one event hash. At the (unreachable in practice) capacity of
    /// `u64::MAX` leaves the frontier is left unchanged; use [`try_push`]
    /// to observe that case.
    ///
    /// [`try_push`]: Frontier::try_push
    pub fn push(&mut self, event_hash: &Hash32) {
        let _ = self.try_push(event_hash);
    }

    /// Append one event hash, reporting [`ProofError::TreeTooLarge`] instead
    /// of overflowing the size.
    pub fn try_push(&mut self, event_hash: &Hash32) -> Result<(), ProofError> {
        self.try_push_completing(event_hash, |_, _, _| {})
    }

    /// [`try_push`], handing `completed` every complete aligned subtree the new leaf
    /// completes, smallest first, as `(level, index, root)`: the subtree of leaves
    /// `[index·2^level, (index+1)·2^level)`. Level 0 is the leaf itself; a push completes
    /// one subtree a level up to `trailing_zeros(new size)`. What the projections store
    /// as they follow a chain (`merkle_pieces`).
    ///
    /// [`try_push`]: Frontier::try_push
    pub fn try_push_completing(
        &mut self,
        event_hash: &Hash32,
        mut completed: impl FnMut(u32, u64, &Hash32),
    ) -> Result<(), ProofError> {
        let new_size = self.size.checked_add(1).ok_or(ProofError::TreeTooLarge)?;
        let mut acc = leaf_hash(event_hash);
        completed(0, self.size, &acc);
        // Like binary increment: each trailing one-bit of the old size is a
        // complete subtree of equal size to `acc`, so they merge (carry).
        let mut s = self.size;
        let mut level = 0u32;
        while s & 1 == 1 {
            match self.subtrees.pop() {
                Some(left) => acc = node_hash(&left, &acc),
                // Impossible while the invariant holds; refuse rather than
                // silently produce a wrong root.
                None => return Err(ProofError::TreeTooLarge),
            }
            s >>= 1;
            level += 1;
            completed(level, self.size >> level, &acc);
        }
        self.subtrees.push(acc);
        self.size = new_size;
        Ok(())
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// MTH of the leaves appended so far; equals [`root`] over the same
    /// event hashes. Folding right-to-left reproduces RFC 6962's split at
    /// the largest power of two: the leftmost subtree is exactly that power.
    pub fn root(&self) -> Hash32 {
        let mut it = self.subtrees.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

#[derive(Serialize, Deserialize)]
struct FrontierRepr {
    size: u64,
    subtrees: Vec<String>,
}

impl From<Frontier> for FrontierRepr {
    fn from(f: Frontier) -> Self {
        FrontierRepr {
            size: f.size,
            subtrees: f.subtrees.iter().map(hex::encode).collect(),
        }
    }
}

impl TryFrom<FrontierRepr> for Frontier {
    type Error = ProofError;
    fn try_from(r: FrontierRepr) -> Result<Self, ProofError> {
        // Check the count before decoding so a huge hostile array is
        // rejected without decoding it.
        let expected = r.size.count_ones() as usize;
        if r.subtrees.len() != expected {
            return Err(ProofError::MalformedFrontier {
                expected,
                actual: r.subtrees.len(),
            });
        }
        let subtrees = decode_list(&r.subtrees, "subtrees")?;
        Frontier::from_parts(r.size, subtrees)
    }
}

/// Strict decoding of one hash: exactly 64 lowercase hex digits. Uppercase is
/// refused so each hash has exactly one textual form (proof documents can
/// then be compared or hashed as text).
pub fn decode_hash(s: &str, field: &str) -> Result<Hash32, ProofError> {
    let bad = || ProofError::InvalidHex {
        field: field.to_string(),
    };
    if s.len() != 64 || !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| bad())?;
    Ok(out)
}

/// Canonical text form of a hash: 64 lowercase hex digits.
pub fn encode_hash(h: &Hash32) -> String {
    hex::encode(h)
}

fn decode_list(items: &[String], field: &str) -> Result<Vec<Hash32>, ProofError> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| decode_hash(s, &format!("{field}[{i}]")))
        .collect()
}

/// Self-contained inclusion proof document (JSON via serde).
///
/// `verify` only proves that `event_hash` is at `leaf_index` in the tree
/// whose root is `root`; the caller must separately establish that `root`
/// is the authentic (e.g. signed) checkpoint of `partition` at `tree_size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// Log partition the tree belongs to; informational, not hashed.
    pub partition: String,
    /// Number of leaves in the tree.
    pub tree_size: u64,
    /// 0-based index of the leaf.
    pub leaf_index: u64,
    /// The event hash (not the leaf hash), lowercase hex.
    pub event_hash: String,
    /// Audit path, leaf's sibling first, lowercase hex.
    pub audit_path: Vec<String>,
    /// Tree root, lowercase hex.
    pub root: String,
}

impl InclusionProof {
    /// Build a proof document for leaf `leaf_index` of `event_hashes`.
    pub fn generate(
        partition: impl Into<String>,
        event_hashes: &[Hash32],
        leaf_index: u64,
    ) -> Result<Self, ProofError> {
        let path = inclusion_proof(event_hashes, leaf_index)?;
        // inclusion_proof succeeded, so leaf_index < len.
        let event_hash =
            event_hashes
                .get(leaf_index as usize)
                .ok_or(ProofError::IndexOutOfRange {
                    index: leaf_index,
                    tree_size: event_hashes.len() as u64,
                })?;
        Ok(InclusionProof {
            partition: partition.into(),
            tree_size: event_hashes.len() as u64,
            leaf_index,
            event_hash: encode_hash(event_hash),
            audit_path: path.iter().map(encode_hash).collect(),
            root: encode_hash(&root(event_hashes)),
        })
    }

    /// Decode strictly and run [`verify_inclusion`].
    pub fn verify(&self) -> Result<(), ProofError> {
        if self.leaf_index >= self.tree_size {
            return Err(ProofError::IndexOutOfRange {
                index: self.leaf_index,
                tree_size: self.tree_size,
            });
        }
        // Length first: cheap, and avoids decoding an oversized hostile path.
        let expected = inclusion_len(self.leaf_index, self.tree_size);
        if self.audit_path.len() != expected {
            return Err(ProofError::WrongProofLength {
                expected,
                actual: self.audit_path.len(),
            });
        }
        let event_hash = decode_hash(&self.event_hash, "event_hash")?;
        let root = decode_hash(&self.root, "root")?;
        let path = decode_list(&self.audit_path, "audit_path")?;
        verify_inclusion(&event_hash, self.leaf_index, self.tree_size, &path, &root)
    }
}

/// Self-contained consistency proof document (JSON via serde).
///
/// `verify` proves that the tree `(old_size, old_root)` is a prefix of
/// `(new_size, new_root)`; authenticating both roots is the caller's job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// Log partition the trees belong to; informational, not hashed.
    pub partition: String,
    /// Size of the older tree (> 0).
    pub old_size: u64,
    /// Size of the newer tree (>= old_size).
    pub new_size: u64,
    /// Root of the older tree, lowercase hex.
    pub old_root: String,
    /// Root of the newer tree, lowercase hex.
    pub new_root: String,
    /// Consistency path in RFC 6962 order, lowercase hex.
    pub path: Vec<String>,
}

impl ConsistencyProof {
    /// Build a proof document that the first `old_size` of `event_hashes`
    /// form a prefix of all of them.
    pub fn generate(
        partition: impl Into<String>,
        event_hashes: &[Hash32],
        old_size: u64,
    ) -> Result<Self, ProofError> {
        let path = consistency_proof(event_hashes, old_size)?;
        // consistency_proof succeeded, so old_size <= len.
        let old = event_hashes
            .get(..old_size as usize)
            .ok_or(ProofError::OldSizeAfterNew {
                old_size,
                new_size: event_hashes.len() as u64,
            })?;
        Ok(ConsistencyProof {
            partition: partition.into(),
            old_size,
            new_size: event_hashes.len() as u64,
            old_root: encode_hash(&root(old)),
            new_root: encode_hash(&root(event_hashes)),
            path: path.iter().map(encode_hash).collect(),
        })
    }

    /// Decode strictly and run [`verify_consistency`].
    pub fn verify(&self) -> Result<(), ProofError> {
        check_sizes(self.old_size, self.new_size)?;
        let expected = if self.old_size == self.new_size {
            0
        } else {
            consistency_len(self.old_size, self.new_size)
        };
        if self.path.len() != expected {
            return Err(ProofError::WrongProofLength {
                expected,
                actual: self.path.len(),
            });
        }
        let old_root = decode_hash(&self.old_root, "old_root")?;
        let new_root = decode_hash(&self.new_root, "new_root")?;
        let path = decode_list(&self.path, "path")?;
        verify_consistency(self.old_size, self.new_size, &old_root, &new_root, &path)
    }
}
