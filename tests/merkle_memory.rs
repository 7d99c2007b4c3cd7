//! What building a `Prover` costs in memory, measured by a counting global allocator
//! (`counting_alloc`). It has a test binary of its own: in `tests/merkle.rs` the other tests (proptests
//! among them) run on other threads at the same time, and their allocations would be
//! counted in the peak.

mod counting_alloc;

use std::sync::atomic::Ordering;

use ansinh::merkle::{self, Hash32, InclusionProof, Prover};
use counting_alloc::{LIVE, PEAK};

fn ev(i: u64) -> Hash32 {
    *blake3::hash(&i.to_be_bytes()).as_bytes()
}

/// Bundle export builds a prover over every event hash of a partition (up to
/// `PROOF_LEAVES_MAX`, 2^24). Its layout guarantees, for n event hashes, the hashes
/// themselves and each level of complete subtree roots above them, n/2 + n/4 + ... + 1
/// = n - 1 hashes for n a power of two: (2n - 1) x 32 bytes, plus the list of levels
/// and the partition's name. Measured here from the moment the caller allocates the
/// hashes, as the exporter does, to the prover built: its peak stays within
/// 2 x n x 32 bytes and 1 KiB, and the proofs are those over the plain hashes.
#[test]
fn building_a_prover_holds_its_hashes_and_their_subtree_roots_only() {
    const LEAVES: usize = 1 << 16;
    const HASH_BYTES: usize = 32;
    let hashes_of = || -> Vec<Hash32> { (0..LEAVES as u64).map(ev).collect() };
    let expected = hashes_of();

    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let mut hashes = Vec::with_capacity(LEAVES);
    hashes.extend((0..LEAVES as u64).map(ev));
    let prover = Prover::new("01", hashes);
    let peak = PEAK.load(Ordering::SeqCst) - base;

    let held = (2 * LEAVES - 1) * HASH_BYTES;
    let bound = 2 * LEAVES * HASH_BYTES + 1024;
    assert!(
        (held..=bound).contains(&peak),
        "peak {peak} bytes while building a prover of {LEAVES} leaves; \
         expected at least {held} (what it holds) and at most {bound} \
         ({:.2} x n x 32 B)",
        peak as f64 / (LEAVES * HASH_BYTES) as f64
    );
    // The same tree and proofs as over the hashes themselves.
    assert_eq!(prover.root(), merkle::root(&expected));
    for index in [0, 1, 12_345, LEAVES as u64 - 1] {
        assert_eq!(
            prover.inclusion(index).unwrap(),
            InclusionProof::generate("01", &expected, index).unwrap()
        );
    }
}
