//! What the `ansinh` binary prints and how it exits, end to end with its embedded
//! nats-server: exactly one JSON document on stdout with `--json`, whether the command
//! succeeded, was refused or failed; exit 2 (never a panic) for a command line it cannot
//! run; exit 1 for a refusal or a report of something the log never saw.

use std::process::Command;

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
