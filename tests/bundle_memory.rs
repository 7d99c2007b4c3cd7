//! What refusing a hostile bundle costs the auditor in memory, measured by a counting
//! global allocator (`counting_alloc`). One test, in a binary of its own, so nothing
//! else is counted in the peak.

mod counting_alloc;

use ansinh::bundle::archive::{from_tar, to_tar};
use ansinh::bundle::{self, BundleError, BundleFiles};
use counting_alloc::peak_of;

/// `[0,0,...,0]` of about `bytes` bytes: valid JSON, 2 bytes per element, where a
/// parser building a value tree holds 32 bytes or more per element.
fn zeros(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 2);
    out.push(b'[');
    out.extend(b"0,".repeat(bytes / 2));
    out.push(b'0');
    out.push(b']');
    out
}

fn too_large(result: Result<impl std::fmt::Debug, BundleError>, name: &str) {
    match result {
        Err(BundleError::TooLarge { file, .. }) if file == name => {}
        other => panic!("expected {name} refused as too large, got {other:?}"),
    }
}

/// Less than the file refused: nothing of it was parsed or copied.
const PEAK_MAX: usize = 1 << 20;

#[test]
fn an_oversized_or_misshapen_file_is_refused_without_parsing_or_copying_it() {
    // A 64 MiB manifest, whose real size at the bundle's bounds is about 13 MiB.
    let files = BundleFiles {
        manifest: zeros(64 << 20),
        ..Default::default()
    };
    let (result, peak) = peak_of(|| bundle::verify(&files, &[]));
    too_large(result, "manifest.json");
    assert!(peak < PEAK_MAX, "verify held {peak} bytes");

    // The same through the file system: refused from its length, before reading.
    let dir = tempfile::tempdir().unwrap();
    files.write(dir.path()).unwrap();
    let (result, peak) = peak_of(|| BundleFiles::read(dir.path()));
    too_large(result, "manifest.json");
    assert!(peak < PEAK_MAX, "read held {peak} bytes");

    // And in an archive: refused from the header's size, before copying.
    let tar = to_tar(&files, "bundle-0100007-000001");
    let (result, peak) = peak_of(|| from_tar(&tar));
    too_large(result, "manifest.json");
    assert!(peak < PEAK_MAX, "from_tar held {peak} bytes");

    // A signed checkpoint with 64 cosignatures is under 64 KiB.
    let files = BundleFiles {
        keys_checkpoint: zeros(1 << 20),
        ..Default::default()
    };
    let (result, peak) = peak_of(|| bundle::verify(&files, &[]));
    too_large(result, "keys-checkpoint.json");
    assert!(peak < PEAK_MAX, "verify held {peak} bytes");

    // Within its bound but not a manifest: refused by its shape, with no value tree
    // of millions of elements built first.
    let files = BundleFiles {
        manifest: zeros(8 << 20),
        ..Default::default()
    };
    let (result, peak) = peak_of(|| bundle::verify(&files, &[]));
    assert!(
        matches!(result, Err(BundleError::Json { ref file, .. }) if file == "manifest.json"),
        "{result:?}"
    );
    assert!(peak < PEAK_MAX, "verify held {peak} bytes");
}
