//! The `ansinh` binary end to end with its embedded nats-server (no --nats).

use std::process::Command;

fn ansinh(data_dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ansinh"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("ANSINH_NATS_URL")
        .output()
        .expect("run ansinh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn demo_runs_on_an_embedded_server_and_a_rerun_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = ansinh(
        dir.path(),
        &["demo", "--households", "40", "--partitions", "01,79"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("OK 160 events verified"), "{out}");
    assert!(out.contains("80 eligibility decisions"), "{out}");
    assert!(out.contains("0 mismatches"), "{out}");
    // Same seed, same idempotency keys: the second season adds nothing.
    let (ok, out) = ansinh(
        dir.path(),
        &["demo", "--households", "40", "--partitions", "01,79"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("OK 160 events verified"), "{out}");
    // The audit trail of one household lists its registration and its decision.
    let (ok, out) = ansinh(
        dir.path(),
        &[
            "--json",
            "audit",
            "trail",
            "--subject",
            "household:0100014-000001",
        ],
    );
    assert!(ok);
    let trail: serde_json::Value = serde_json::from_str(&out).unwrap();
    let types: Vec<&str> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    // The seeded generator puts household 1 of partition 01 in commune 0100014.
    assert_eq!(
        types,
        [
            "ansinh.v1.HouseholdRegistered",
            "ansinh.v1.EligibilityDecided"
        ]
    );
    // Rebuilt projections equal the incremental ones.
    let (ok, summary_before) = ansinh(dir.path(), &["--json", "projections", "summary"]);
    assert!(ok);
    let (ok, _) = ansinh(dir.path(), &["projections", "rebuild"]);
    assert!(ok);
    let (ok, summary_after) = ansinh(dir.path(), &["--json", "projections", "summary"]);
    assert!(ok);
    assert_eq!(summary_before, summary_after);
}

#[test]
fn a_missing_nats_server_binary_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ansinh"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["audit", "verify"])
        .env("ANSINH_NATS_SERVER", dir.path().join("no-such-nats-server"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("install-nats-server.sh"), "{err}");
}
