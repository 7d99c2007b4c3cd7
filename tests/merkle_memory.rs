//! What building a `Prover` costs in memory, measured by a counting global allocator.
//! It has a test binary of its own: in `tests/merkle.rs` the other tests (proptests
//! among them) run on other threads at the same time, and their allocations would be
//! counted in the peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ansinh::merkle::{self, Hash32, InclusionProof, Prover};

/// Bytes allocated and not yet freed, and the most there were since `PEAK` was reset.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

impl Counting {
    fn grew(by: usize) {
        let live = LIVE.fetch_add(by, Ordering::SeqCst) + by;
        PEAK.fetch_max(live, Ordering::SeqCst);
    }
}

// SAFETY: every call is passed to `System` unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(p, layout, new_size) };
        if !moved.is_null() {
            // Counted as the new block allocated before the old one is freed: a
            // realloc that moves holds both for a moment.
            Self::grew(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

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
