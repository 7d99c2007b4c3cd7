//! What the `ansinh` binary prints and how it exits, end to end with its embedded
//! nats-server: exactly one JSON document on stdout with `--json`, whether the command
//! succeeded, was refused or failed; exit 2 (never a panic) for a command line it cannot
//! run; exit 1 for a refusal or a report of something the log never saw.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// What one run of the binary said: its exit code, stdout, stderr.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The whole of stdout as one JSON document: a second document, a line of text or
    /// an unterminated array fails here.
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn command(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ansinh"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("ANSINH_NATS_URL");
    command
}

fn ran(out: std::process::Output) -> Run {
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ansinh(data_dir: &std::path::Path, args: &[&str]) -> Run {
    ran(command(data_dir).args(args).output().expect("run ansinh"))
}

/// `ansinh` with `input` on its stdin.
fn ansinh_stdin(data_dir: &std::path::Path, args: &[&str], input: &str) -> Run {
    let mut child = command(data_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ansinh");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())
        .expect("write stdin");
    ran(child.wait_with_output().expect("wait for ansinh"))
}

/// The usage error of an argument: exit 2, one JSON object naming it.
fn assert_invalid_argument(run: &Run, argument: &str) {
    assert_eq!(run.code, Some(2), "{run}");
    let error = run.json();
    assert_eq!(error["error"], "InvalidArgument", "{run}");
    assert!(
        error["argument"]
            .as_str()
            .is_some_and(|a| a.contains(argument)),
        "{argument}: {run}"
    );
    assert!(!run.stderr.contains("panicked"), "{run}");
}

#[test]
fn a_non_utf8_argument_is_a_usage_error_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let bad = std::ffi::OsStr::from_bytes(b"\xff");
    // For people: clap's message on stderr.
    let out = ran(command(dir.path())
        .args(["note", "--partition", "01", "--text"])
        .arg(bad)
        .output()
        .unwrap());
    assert_eq!(out.code, Some(2), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
    assert!(out.stderr.contains("UTF-8"), "{out}");
    // With --json after the bad argument: one object on stdout.
    let out = ran(command(dir.path())
        .args(["note", "--partition", "01", "--text"])
        .arg(bad)
        .arg("--json")
        .output()
        .unwrap());
    assert_eq!(out.code, Some(2), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
    assert!(out.json()["error"].is_string(), "{out}");
}

/// A script's `ansinh payments $CMD` with an empty `$CMD` ran nothing: exit 2, as clap's
/// own, not the 0 of a help the script did not ask for.
#[test]
fn a_missing_subcommand_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = ansinh(dir.path(), &["payments"]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("Usage:"), "{out}");
    let out = ansinh(dir.path(), &["--json", "admin"]);
    assert_eq!(out.code, Some(2), "{out}");
    let error = out.json();
    assert_eq!(error["error"], "MissingSubcommand", "{out}");
    assert!(
        error["message"].as_str().unwrap().contains("ansinh admin"),
        "{out}"
    );
    // Asked for, help is still help.
    let out = ansinh(dir.path(), &["payments", "--help"]);
    assert_eq!(out.code, Some(0), "{out}");
}

/// No shipped standard is in force before 2022: the demo cannot classify anyone then.
#[test]
fn a_demo_year_no_standard_covers_is_a_usage_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for year in ["2021", "300000", "+2026"] {
        let out = ansinh(dir.path(), &["demo", "--year", year, "--households", "1"]);
        assert_eq!(out.code, Some(2), "{year}: {out}");
        assert!(!out.stderr.contains("panicked"), "{year}: {out}");
        assert!(out.stderr.contains("--year"), "{year}: {out}");
        let out = ansinh(
            dir.path(),
            &["--json", "demo", "--year", year, "--households", "1"],
        );
        assert_invalid_argument(&out, "--year");
    }
}

/// A report or audit naming what the log has never seen says NOT FOUND (exit 1), as the
/// other reports do; exit 2 would say the export could not run.
#[test]
fn an_export_of_what_the_log_never_saw_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let out = ansinh(dir.path(), &["note", "--partition", "01", "--text", "x"]);
    assert_eq!(out.code, Some(0), "{out}");
    let out = ansinh(dir.path(), &["audit", "checkpoint"]);
    assert_eq!(out.code, Some(0), "{out}");
    let bundle = dir.path().join("bundle");
    let bundle = bundle.to_str().unwrap();
    // A household of a province the log holds, one of a province it never saw, a commune.
    for (option, value, what) in [
        ("--household", "0100007-999999", "household"),
        ("--household", "7900007-000001", "household"),
        ("--commune", "0100007", "commune"),
    ] {
        let out = ansinh(
            dir.path(),
            &["--json", "audit", "export", option, value, "--out", bundle],
        );
        assert_eq!(out.code, Some(1), "{value}: {out}");
        let answer = out.json();
        assert_eq!(answer["error"], "not_found", "{out}");
        assert_eq!(answer["what"], what, "{out}");
        assert_eq!(answer["value"], value, "{out}");
        let out = ansinh(
            dir.path(),
            &["audit", "export", option, value, "--out", bundle],
        );
        assert_eq!(out.code, Some(1), "{value}: {out}");
        assert!(out.stdout.starts_with("NOT FOUND"), "{out}");
    }
    // Dates that run backwards select nothing by construction: the arguments are wrong.
    let out = ansinh(
        dir.path(),
        &[
            "--json",
            "audit",
            "export",
            "--household",
            "0100007-000001",
            "--from",
            "2026-05-01",
            "--to",
            "2026-04-01",
            "--out",
            bundle,
        ],
    );
    assert_invalid_argument(&out, "--to");
    assert!(!std::path::Path::new(bundle).exists(), "{out}");
}

/// The operator's commands, each with `--json`: one document on stdout whether it did
/// its work, was refused or found nothing, and a refusal is exit 1 (exit 2 says the
/// command could not run and may be retried).
#[test]
fn admin_commands_print_one_json_document() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--json", "admin"];
        all.extend_from_slice(args);
        ansinh(dir.path(), &all)
    };
    let add = [
        "add-staff",
        "--id",
        "staff:t",
        "--role",
        "teller",
        "--unit",
        "0100007",
    ];
    let out = run(&add);
    assert_eq!(out.code, Some(0), "{out}");
    let added = out.json();
    assert_eq!(added["id"], "staff:t", "{out}");
    assert!(
        added["token"].as_str().is_some_and(|t| !t.is_empty()),
        "{out}"
    );
    // An id the directory holds is refused, not failed.
    let out = run(&add);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.json()["refused"].as_str().unwrap().contains("staff:t"),
        "{out}"
    );
    let out = ansinh(
        dir.path(),
        &["admin"].iter().chain(&add).copied().collect::<Vec<_>>(),
    );
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stdout.starts_with("REFUSED"), "{out}");

    let out = run(&["remove-staff", "--id", "staff:t"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json()["removed"], "staff:t", "{out}");
    let out = run(&["remove-staff", "--id", "staff:t"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(out.json()["error"], "not_found", "{out}");

    let out = run(&["end-console-sessions"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json()["replaced"], true, "{out}");

    let out = run(&["import-directory"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json()["staff_added"], 0, "{out}");

    // A ledger key to rotate: the first checkpoint makes it.
    let out = ansinh(dir.path(), &["note", "--partition", "01", "--text", "x"]);
    assert_eq!(out.code, Some(0), "{out}");
    let out = ansinh(dir.path(), &["audit", "checkpoint"]);
    assert_eq!(out.code, Some(0), "{out}");
    let out = run(&["rotate-key"]);
    assert_eq!(out.code, Some(0), "{out}");
    let rotated = out.json();
    assert!(rotated["old_key_id"].is_string(), "{out}");
    assert_ne!(rotated["old_key_id"], rotated["new_key_id"], "{out}");

    // The note at stream sequence 1 breaks nothing: excluding it is refused.
    let exclude = [
        "exclude-message",
        "--partition",
        "01",
        "--stream-sequence",
        "1",
        "--reason",
        "wrong one",
    ];
    let out = run(&exclude);
    assert_eq!(out.code, Some(1), "{out}");
    let refusal = out.json();
    assert!(
        refusal["refused"]
            .as_str()
            .unwrap()
            .contains("no message breaks"),
        "{out}"
    );
    let out = ansinh(
        dir.path(),
        &["admin"]
            .iter()
            .chain(&exclude)
            .copied()
            .collect::<Vec<_>>(),
    );
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stdout.starts_with("REFUSED"), "{out}");
}

/// `note`, the projections' commands and the reports, each with `--json`: one document
/// on stdout, on success and on failure.
#[test]
fn notes_projections_and_reports_print_one_json_document() {
    let dir = tempfile::tempdir().unwrap();
    let note = |key: &str| {
        ansinh(
            dir.path(),
            &[
                "--json",
                "note",
                "--partition",
                "01",
                "--text",
                "x",
                "--idempotency-key",
                key,
            ],
        )
    };
    let out = note("note-1");
    assert_eq!(out.code, Some(0), "{out}");
    let receipt = out.json();
    assert_eq!(receipt["idempotency_key"], "note-1", "{out}");
    assert_eq!(receipt["duplicate"], false, "{out}");
    let out = note("note-1");
    assert_eq!(out.json()["duplicate"], true, "{out}");
    // Without a key, the one made up is printed: the only key a retry can use.
    let out = ansinh(dir.path(), &["note", "--partition", "01", "--text", "y"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("(idempotency key "), "{out}");
    let out = ansinh(
        dir.path(),
        &["--json", "note", "--partition", "01", "--text", "y"],
    );
    assert!(out.json()["idempotency_key"].is_string(), "{out}");

    let out = ansinh(dir.path(), &["--json", "projections", "catch-up"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.json()["stream_sequence"].is_u64(), "{out}");
    let out = ansinh(dir.path(), &["--json", "projections", "rebuild"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json()["events"], 3, "{out}");

    let out = ansinh(
        dir.path(),
        &["--json", "audit", "trail", "--subject", "partition:01"],
    );
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json().as_array().map(Vec::len), Some(3), "{out}");

    // The CSV is written before anything is printed: a path that cannot be written is
    // one failure document, not the report followed by it.
    let reconcile = |csv: &str| {
        ansinh(
            dir.path(),
            &[
                "--json",
                "payments",
                "reconcile",
                "--as-of",
                "2026-12-31",
                "--csv",
                csv,
            ],
        )
    };
    let out = reconcile("/nonexistent/x.csv");
    assert_eq!(out.code, Some(2), "{out}");
    assert_eq!(out.json()["error"], "Failed", "{out}");
    let csv = dir.path().join("r.csv");
    let out = reconcile(csv.to_str().unwrap());
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.json().is_array(), "{out}");
    assert!(csv.exists(), "{out}");
}

/// Arguments refused once read with the others answer as clap's own refusals do: exit
/// 2, `InvalidArgument` naming the argument, nothing run.
#[test]
fn arguments_refused_after_parsing_are_invalid_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let out = ansinh(
        dir.path(),
        &["--json", "audit", "anomalies", "--pending-days=-1"],
    );
    assert_invalid_argument(&out, "--pending-days");
    let manager = [
        "--json",
        "--as",
        "m:1",
        "--role",
        "branch-manager",
        "--unit",
        "01",
        "payments",
    ];
    let payments = |args: &[&str]| {
        ansinh(
            dir.path(),
            &manager.iter().chain(args).copied().collect::<Vec<_>>(),
        )
    };
    let out = payments(&[
        "run",
        "--partition",
        "01",
        "--commune",
        "7900001",
        "--period",
        "2026-10",
        "--on",
        "2026-10-05",
    ]);
    assert_invalid_argument(&out, "--commune");
    let reissue = ["reissue", "--partition", "01", "--on", "2026-10-05"];
    let out = payments(
        &reissue
            .iter()
            .chain(&["--instruction", "pay:7:2026-10:1", "--channel", "bank"])
            .copied()
            .collect::<Vec<_>>(),
    );
    assert_invalid_argument(&out, "--gateway");
    assert!(out.json()["value"].is_null(), "{out}");
    // For people, as clap says it, on stderr.
    let out = ansinh(
        dir.path(),
        &manager[1..]
            .iter()
            .chain(&reissue)
            .chain(&["--instruction", "pay:7:2026-10:1", "--channel", "bank"])
            .copied()
            .collect::<Vec<_>>(),
    );
    assert_eq!(out.code, Some(2), "{out}");
    assert!(
        out.stderr
            .contains("error: '--gateway <GATEWAY>' is missing: --channel is given"),
        "{out}"
    );
    let out = payments(
        &reissue
            .iter()
            .chain(&["--instruction", "pay:7:2026-10:1", "--gateway", "vcb"])
            .copied()
            .collect::<Vec<_>>(),
    );
    assert_invalid_argument(&out, "--channel");
    let out = payments(
        &reissue
            .iter()
            .chain(&["--instruction", "pay:seven"])
            .copied()
            .collect::<Vec<_>>(),
    );
    assert_invalid_argument(&out, "--instruction");
    let out = ansinh(
        dir.path(),
        &[
            "--json",
            "admin",
            "exclude-message",
            "--partition",
            "01",
            "--stream-sequence",
            "5",
            "--through",
            "4",
            "--reason",
            "x",
        ],
    );
    assert_invalid_argument(&out, "--through");
}

/// `admin release-claim --citizen-id -` reads the id from one line of stdin, so it never
/// stands in the process's arguments, which every user of the host can read.
#[test]
fn release_claim_reads_the_citizen_id_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let release = [
        "--json",
        "admin",
        "release-claim",
        "--citizen-id",
        "-",
        "--household",
        "0100007-000123",
    ];
    // Read and looked up: no household holds the citizen, so nothing is freed.
    let out = ansinh_stdin(dir.path(), &release, "001190000001\n");
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(out.json()["error"], "not_held", "{out}");
    // A line that is no citizen id is refused as the argument, without echoing it.
    let out = ansinh_stdin(dir.path(), &release, "42424242\n");
    assert_invalid_argument(&out, "--citizen-id");
    assert!(
        !out.stdout.contains("42424242") && !out.stderr.contains("42424242"),
        "{out}"
    );
    // Nothing on stdin is no citizen id either.
    let out = ansinh_stdin(dir.path(), &release, "");
    assert_invalid_argument(&out, "--citizen-id");
}

/// A death's citizen id read from stdin (`--citizen-id -`), never an argument other users
/// of the host can read: the death is recorded, the same line again is its retry, and a
/// line that is no citizen id is refused as the argument without being echoed.
#[test]
fn a_death_is_recorded_with_the_citizen_id_read_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let officer = ["--as", "co:1", "--role", "credit-officer", "--unit", "01"];
    let with = |args: &[&str]| -> Vec<String> {
        officer.iter().chain(args).map(|a| a.to_string()).collect()
    };
    let register = with(&[
        "household",
        "register",
        "--id",
        "0100007-000001",
        "--area",
        "rural",
        "--on",
        "2026-01-05",
        "--head-name",
        "Lê Văn Tám",
        "--head-citizen-id",
        "001085012345",
        "--member",
        "Lê Minh:001190000003:con",
    ]);
    let out = ansinh(
        dir.path(),
        &register.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(out.code, Some(0), "{out}");
    let death = with(&[
        "--json",
        "--idempotency-key",
        "death-1",
        "household",
        "record-death",
        "--id",
        "0100007-000001",
        "--citizen-id",
        "-",
        "--on",
        "2026-08-14",
    ]);
    let death: Vec<&str> = death.iter().map(String::as_str).collect();
    let out = ansinh_stdin(dir.path(), &death, "001190000003\n");
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json()["duplicate"], false, "{out}");
    let again = ansinh_stdin(dir.path(), &death, "001190000003\n");
    assert_eq!(again.code, Some(0), "{again}");
    assert_eq!(again.json()["duplicate"], true, "{again}");
    let out = ansinh_stdin(dir.path(), &death, "42424242\n");
    assert_invalid_argument(&out, "--citizen-id");
    assert!(
        !out.stdout.contains("42424242") && !out.stderr.contains("42424242"),
        "{out}"
    );
}
