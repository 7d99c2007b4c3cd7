//! The demo ends with one household's bundle, which `ansinh audit verify-bundle`
//! accepts offline and refuses once a byte is changed.

use std::process::Command;

fn ansinh(data_dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ansinh"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("ANSINH_NATS_URL")
        .output()
        .expect("run ansinh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_demo_exports_a_bundle_that_verifies_offline_and_fails_when_changed() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--json", "demo", "--households", "20", "--partitions", "01"];
    let (code, out) = ansinh(dir.path(), &args);
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let bundle = &report["bundle"];
    let household = bundle["household"].as_str().unwrap();
    assert!(
        bundle["verified"]["events"].as_u64().unwrap() > 2,
        "{bundle}"
    );
    let bundle_dir = dir.path().join("bundles").join(household);
    assert_eq!(
        bundle["dir"].as_str().unwrap(),
        bundle_dir.to_str().unwrap()
    );

    // The demo's projections equal a rebuild from its log.
    let (code, out) = ansinh(dir.path(), &["audit", "rebuild-check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("OK the projections rebuilt"), "{out}");
    // And the writer's book snapshot, saved when the demo closed, equals a fold.
    assert!(
        out.contains("OK the book snapshot of partition 01 at sequence"),
        "{out}"
    );

    // Offline: no data directory, no server.
    let nowhere = dir.path().join("no-ledger-here");
    let bundle_arg = bundle_dir.to_str().unwrap();
    // With no key pinned, the files only agree with the keys they carry: not OK.
    let (code, out) = ansinh(&nowhere, &["audit", "verify-bundle", bundle_arg]);
    assert_eq!(code, 3, "{out}");
    assert!(out.starts_with("UNANCHORED bundle"), "{out}");
    // Pinned to the demo ledger's key (the demo printed it), it is OK.
    let key = bundle["verified"]["latest_public_key"].as_str().unwrap();
    let (code, out) = ansinh(
        &nowhere,
        &["audit", "verify-bundle", bundle_arg, "--trust", key],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("OK bundle"), "{out}");
    assert!(
        !nowhere.exists(),
        "verify-bundle must not create a data directory"
    );

    let events = bundle_dir.join("events.bin");
    let mut bytes = std::fs::read(&events).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&events, bytes).unwrap();
    let (code, out) = ansinh(
        &nowhere,
        &["audit", "verify-bundle", bundle_arg, "--trust", key],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("REJECTED: "), "{out}");
    assert!(
        out.contains("events.bin") || out.contains("proofs.json"),
        "{out}"
    );
}

/// A bundle that cannot be read is no verdict on the bundle: exit 2 (an operating error,
/// as `check-proof` gives for a file it cannot read), never 1, which says the bundle was
/// read and refused. A script telling "tampered" from "wrong path" relies on it.
#[test]
fn a_bundle_that_cannot_be_read_exits_2_not_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("no-ledger-here");
    let missing = dir.path().join("no-such-bundle");
    let missing = missing.to_str().unwrap();
    let (code, out) = ansinh(&nowhere, &["audit", "verify-bundle", missing]);
    assert_eq!(code, 2, "{out}");
    assert!(!out.contains("REJECTED"), "{out}");
    let (code, out) = ansinh(&nowhere, &["--json", "audit", "verify-bundle", missing]);
    assert_eq!(code, 2, "{out}");
    let failed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(failed["error"], "Failed", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("manifest.json"),
        "{failed}"
    );
    // A directory holding some of the files only: the others cannot be read either.
    let partial = dir.path().join("partial");
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("manifest.json"), b"{}\n").unwrap();
    let (code, out) = ansinh(
        &nowhere,
        &["audit", "verify-bundle", partial.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{out}");
    // A readable file that is no bundle archive is read, and refused.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, [7u8; 1024]).unwrap();
    let (code, out) = ansinh(
        &nowhere,
        &["audit", "verify-bundle", junk.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("REJECTED: "), "{out}");
    assert!(
        !nowhere.exists(),
        "verify-bundle must not create a data directory"
    );
}
