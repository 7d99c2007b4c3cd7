//! The `ansinh` binary end to end with its embedded nats-server (no --nats).

use std::process::Command;

fn ansinh(data_dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    ansinh_with(data_dir, &[], args)
}

/// `ansinh` with these environment variables set.
fn ansinh_with(data_dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ansinh"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("ANSINH_NATS_URL");
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().expect("run ansinh");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        // What went wrong is on stderr; a failing assertion shows it.
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), text)
}

/// The last JSON document in `out` (stdout, then stderr for a command that failed): the
/// last line that opens one, so a line the process logged after it (a warning of the
/// embedded server's on a loaded machine) is passed over.
fn last_json(out: &str) -> serde_json::Value {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{') || l.starts_with('['))
        .unwrap_or_else(|| {
            panic!(
                "no JSON document in:
{out}"
            )
        });
    serde_json::from_str(line).expect("json")
}

/// NATS credentials without `--nats` would be ignored: the process would start an
/// embedded server of its own and run a ledger no other process sees. Refused before
/// anything starts (exit 2, naming the option), whether given as an option or in the
/// environment.
#[test]
fn nats_credentials_without_nats_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    // The command line, the environment, the option named in the refusal.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 3] = [
        (&["--nats-creds", "x.creds", "serve"], &[], "--nats-creds"),
        (
            &["note", "--partition", "01", "--text", "x"],
            &[("ANSINH_NATS_USER", "auditor")],
            "--nats-user",
        ),
        (
            &[
                "--nats-inbox-prefix",
                "_INBOX_auditor",
                "audit",
                "verify",
                "--read-only",
            ],
            &[],
            "--nats-inbox-prefix",
        ),
    ];
    for (args, env, option) in cases {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ansinh"));
        command
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env_remove("ANSINH_NATS_URL")
            .env_remove("ANSINH_NATS_CREDS")
            .env_remove("ANSINH_NATS_USER")
            .env_remove("ANSINH_NATS_INBOX_PREFIX");
        for (name, value) in env {
            command.env(name, value);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{option} (")) && stderr.contains("only apply with --nats"),
            "{args:?}: {stderr}"
        );
        assert!(
            !dir.path().join("nats").exists(),
            "{args:?} started an embedded server"
        );
    }
}

#[test]
fn demo_year_on_an_embedded_server_and_a_rerun_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--json",
        "demo",
        "--households",
        "45",
        "--partitions",
        "01,79",
    ];
    let (ok, out) = ansinh(dir.path(), &args);
    assert!(ok, "{out}");
    let first = last_json(&out);
    let events = first["events"].as_u64().unwrap();
    let s = &first["summary"];
    assert_eq!(s["households"], 90, "{s}");
    assert_eq!(s["decisions"], 90, "{s}");
    // Households 41 and up take part in the death and erasure step, which a rerun must
    // not repeat on another household.
    assert!(s["erasures"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["loans"].as_u64().unwrap() > 10, "{s}");
    assert!(s["repayments"].as_u64().unwrap() > 50, "{s}");
    assert_eq!(first["recompute_mismatches"], 0);
    // Monthly social assistance through the simulated bank and post office.
    let pay = &first["payments"];
    assert!(pay["instructions"].as_u64().unwrap() > 0, "{pay}");
    assert!(pay["settled"].as_u64().unwrap() > 0, "{pay}");
    // Same seed, same idempotency keys: the second year adds nothing.
    let (ok, out) = ansinh(dir.path(), &args);
    assert!(ok, "{out}");
    assert_eq!(last_json(&out)["events"].as_u64().unwrap(), events);
    // Books balanced at every event.
    let (ok, out) = ansinh(dir.path(), &["trial-balance", "--partitions", "01,79"]);
    assert!(ok, "{out}");
    assert_eq!(out.matches("balanced at every event").count(), 2, "{out}");
    // The audit trail of one household starts with its registration and its decision.
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
        types[..2],
        [
            "ansinh.v1.HouseholdRegistered",
            "ansinh.v1.EligibilityDecided"
        ]
    );
    // An auditor reads the household view; a teller of another commune may not.
    let show = |who: &[&str], extra: &[&str]| {
        let mut a = who.to_vec();
        a.extend([
            "--json",
            "household",
            "show",
            "0100014-000001",
            "--as-of",
            "2026-12-31",
        ]);
        a.extend(extra);
        ansinh(dir.path(), &a)
    };
    let auditor = ["--as", "audit:1", "--role", "auditor"];
    let (ok, out) = show(&auditor, &[]);
    assert!(ok, "{out}");
    let view = last_json(&out);
    assert_eq!(view["household"]["household_id"], "0100014-000001");
    assert!(view["household"]["standing"]["status"].is_string());
    // One line a page: the second page is the history's second line, and more follow it.
    let (ok, out) = show(&auditor, &["--history-lines", "1", "--history-page", "1"]);
    assert!(ok, "{out}");
    let second = last_json(&out);
    assert_eq!(second["history"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["history"][0], view["history"][1]);
    assert_eq!(
        (&second["history_page"], &second["history_more"]),
        (&serde_json::json!(1), &serde_json::json!(true))
    );
    let (ok, out) = show(&auditor, &["--history-lines", "0"]);
    assert!(!ok, "a page of no lines is refused: {out}");
    assert!(out.contains("--history-lines"), "{out}");
    let (ok, _) = show(
        &["--as", "t:9", "--role", "teller", "--unit", "7900007"],
        &[],
    );
    assert!(!ok, "a teller of another province must not read it");
    // Rebuilt projections equal the incremental ones.
    let (ok, summary_before) = ansinh(dir.path(), &["--json", "portfolio"]);
    assert!(ok);
    let (ok, _) = ansinh(dir.path(), &["projections", "rebuild"]);
    assert!(ok);
    let (ok, summary_after) = ansinh(dir.path(), &["--json", "portfolio"]);
    assert!(ok);
    assert_eq!(summary_before, summary_after);

    // The overdue run over a partition's loans (read one at a time), then again for the
    // same date: the same answer, and nothing appended the second time. As of today in
    // Vietnam (a later day is refused): the demo's instalments of December on are due
    // by then, and its own overdue run was as of 30 November.
    let today = ansinh::clock::today().to_string();
    let events_of_01 = || {
        let (ok, out) = ansinh(dir.path(), &["--json", "projections", "summary"]);
        assert!(ok, "{out}");
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        summary["01"]["events"].as_u64().unwrap()
    };
    let overdue = || {
        let (ok, out) = ansinh(
            dir.path(),
            &[
                "--json",
                "--as",
                "m:1",
                "--role",
                "branch-manager",
                "--unit",
                "01",
                "loans",
                "mark-overdue",
                "--partition",
                "01",
                "--as-of",
                &today,
            ],
        );
        assert!(ok, "{out}");
        last_json(&out)
    };
    let before = events_of_01();
    let first = overdue();
    let moved = first["loans_moved"].as_u64().unwrap();
    assert!(moved > 0, "{first}");
    assert_eq!(first["refused"], 0, "{first}");
    let after = events_of_01();
    // A loan behind by several instalments moves each from its own due date, one event
    // each, then accrues to the job's date.
    let appended = first["events_appended"].as_u64().unwrap();
    assert_eq!(after, before + appended, "{first}");
    assert!(appended >= moved, "{first}");
    let again = overdue();
    assert_eq!(again["loans_moved"], first["loans_moved"]);
    assert_eq!(again["amount_moved"], first["amount_moved"]);
    assert_eq!(again["events_appended"], 0, "{again}");
    assert_eq!(events_of_01(), after, "the rerun appended nothing");

    // Reconciliation of every day, from the log; then of one of its days, from the
    // projections (as of a later day): the same lines. People read đồng as `1.500.000 ₫`.
    let (ok, out) = ansinh(
        dir.path(),
        &["--json", "payments", "reconcile", "--as-of", "2027-01-31"],
    );
    assert!(ok, "{out}");
    let every_day: serde_json::Value = serde_json::from_str(&out).unwrap();
    let first_day = every_day[0]["date"].as_str().unwrap().to_owned();
    let of_day: Vec<&serde_json::Value> = every_day
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["date"] == first_day.as_str())
        .collect();
    let (ok, out) = ansinh(
        dir.path(),
        &[
            "--json",
            "payments",
            "reconcile",
            "--as-of",
            "2027-01-31",
            "--date",
            &first_day,
        ],
    );
    assert!(ok, "{out}");
    let projected: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        projected.as_array().unwrap().iter().collect::<Vec<_>>(),
        of_day
    );
    let csv = dir.path().join("day.csv");
    let (ok, out) = ansinh(
        dir.path(),
        &[
            "payments",
            "reconcile",
            "--as-of",
            "2027-01-31",
            "--date",
            &first_day,
            "--csv",
            csv.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains(" ₫"), "{out}");
    let written = std::fs::read_to_string(&csv).unwrap();
    assert!(
        written.lines().nth(1).unwrap().contains(" ₫\""),
        "{written}"
    );

    // The month the demo paid, run again for the whole province (`Service::run_commune`
    // for each commune): nothing is paid twice. Then timeouts as of today (the latest day
    // they may be asked as of), long after that month: each instruction still without a
    // result is timed out once, and a second pass finds none.
    let partition = every_day[0]["partition"].as_str().unwrap().to_owned();
    let manager = [
        "--as",
        "bm:1",
        "--role",
        "branch-manager",
        "--unit",
        &partition,
    ];
    let with = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = manager.iter().map(|a| a.to_string()).collect();
        all.extend(args.iter().map(|a| a.to_string()));
        all
    };
    let run_again = with(&[
        "--json",
        "payments",
        "run",
        "--partition",
        &partition,
        "--period",
        &first_day[..7],
        "--on",
        &first_day,
    ]);
    let run_again: Vec<&str> = run_again.iter().map(String::as_str).collect();
    let (_, out) = ansinh(dir.path(), &run_again);
    // One JSON document, each commune's outcome inside it.
    let run: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    let lines = run["by_commune"].as_array().expect("by_commune");
    assert_eq!(lines.len() as u64, run["communes"], "{out}");
    assert!(lines.len() > 1, "{out}");
    assert!(
        lines.iter().all(|l| l["outcome"] != "paid"),
        "nothing is paid twice: {out}"
    );
    assert_eq!(run["instructions"], 0, "{out}");
    let today = ansinh::clock::today().to_string();
    let timeouts = with(&[
        "--json",
        "payments",
        "timeouts",
        "--partition",
        &partition,
        "--as-of",
        &today,
    ]);
    let timeouts: Vec<&str> = timeouts.iter().map(String::as_str).collect();
    let (ok, out) = ansinh(dir.path(), &timeouts);
    assert!(ok, "{out}");
    let (ok, again) = ansinh(dir.path(), &timeouts);
    assert!(ok, "{again}");
    assert_eq!(last_json(&again)["timed_out"], 0, "{out} then {again}");
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

#[test]
fn household_members_change_from_the_cli_and_citizens_stay_unique_across_provinces() {
    let dir = tempfile::tempdir().unwrap();
    let officer = |unit: &'static str| ["--as", "co:1", "--role", "credit-officer", "--unit", unit];
    let run = |who: [&str; 6], args: &[&str]| {
        let mut a = who.to_vec();
        a.extend_from_slice(args);
        ansinh(dir.path(), &a)
    };
    let register = |id: &str, head: &str| {
        let unit = if id.starts_with("01") { "01" } else { "79" };
        run(
            officer(unit),
            &[
                "household",
                "register",
                "--id",
                id,
                "--area",
                "rural",
                "--on",
                "2026-01-05",
                "--head-name",
                "Lê Văn Tám",
                "--head-citizen-id",
                head,
            ],
        )
    };
    let (ok, out) = register("0100007-000001", "001085012345");
    assert!(ok, "{out}");
    let change = |args: &[&str]| {
        let mut a = vec![
            "household",
            "change-members",
            "--id",
            "0100007-000001",
            "--on",
            "2026-03-01",
        ];
        a.extend_from_slice(args);
        run(officer("01"), &a)
    };
    let (ok, out) = change(&[
        "--reason",
        "marriage",
        "--add-member",
        "Phạm Thị Mai:001190000001:vợ",
    ]);
    assert!(ok, "{out}");
    // The new spouse cannot head a household in Hồ Chí Minh City while she is in Hà Nội's.
    let (ok, out) = register("7900007-000001", "001190000001");
    assert!(!ok, "{out}");
    let removal = [
        "--reason",
        "moved away",
        "--remove-member",
        "001190000001",
        "--idempotency-key",
        "remove-mai",
    ];
    let (ok, out) = change(&removal);
    assert!(ok, "{out}");
    // The same command again, as after a lost answer: its first receipt, though the
    // member it removes is no longer there to remove.
    let (ok, again) = change(&removal);
    assert!(ok, "{again}");
    assert!(again.contains("remove-mai"), "{again}");
    let (ok, out) = register("7900007-000001", "001190000001");
    assert!(ok, "{out}");
    // Removing someone who is not a member is refused, not a silent no-op.
    let (ok, out) = change(&["--json", "--reason", "typo", "--remove-member", "Nobody"]);
    assert!(!ok);
    assert_eq!(last_json(&out)["kind"], "NotAMember", "{out}");
    // An officer of another province is refused before the household's data are opened,
    // as any refusal is: with --json, the refusal and its kind.
    let (ok, out) = run(
        officer("79"),
        &[
            "--json",
            "household",
            "change-members",
            "--id",
            "0100007-000001",
            "--on",
            "2026-03-02",
            "--reason",
            "typo",
            "--remove-member",
            "001085012345",
        ],
    );
    assert!(!ok);
    assert_eq!(last_json(&out)["kind"], "Denied", "{out}");
    let (ok, out) = run(
        officer("79"),
        &["--json", "household", "show", "0100007-000001"],
    );
    assert!(!ok);
    assert_eq!(last_json(&out)["kind"], "Denied", "{out}");
}

#[test]
fn a_clerk_is_told_what_the_ledger_decided() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut a = vec![
            "--as",
            "co:1",
            "--role",
            "credit-officer",
            "--unit",
            "0100007",
        ];
        a.extend_from_slice(args);
        ansinh(dir.path(), &a)
    };
    let (ok, out) = run(&[
        "household",
        "register",
        "--id",
        "0100007-000001",
        "--area",
        "rural",
        "--on",
        "2026-01-05",
        "--head-name",
        "Lê Văn An",
        "--head-citizen-id",
        "001085012345",
    ]);
    assert!(ok, "{out}");
    let classify = |deprived: &str| {
        run(&[
            "review",
            "classify",
            "--household",
            "0100007-000001",
            "--income",
            "1200000",
            "--area",
            "rural",
            "--deprived",
            deprived,
            "--year",
            "2026",
            "--on",
            "2026-01-10",
        ])
    };
    // A repeated indicator is a typo, not a set: refused, nothing recorded.
    let (ok, out) = classify("employment,employment,nutrition");
    assert!(!ok, "{out}");
    let (ok, out) = classify("employment,nutrition,drinking_water");
    assert!(ok, "{out}");
    assert!(
        out.contains("Household 0100007-000001 is poor") && out.contains("under standard "),
        "{out}"
    );
    let (ok, out) = run(&[
        "loans",
        "approve",
        "--household",
        "0100007-000001",
        "--programme",
        "POOR_HOUSEHOLD",
        "--amount",
        "50000000",
        "--term-months",
        "36",
        "--savings-group",
        "TK-01",
        "--entrusted",
        "womens-union",
        "--on",
        "2026-02-02",
        "--reason",
        "credit board 2/2026",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Loan 01-L1 approved: POOR_HOUSEHOLD 50.000.000 ₫ for 36 months"),
        "{out}"
    );
    let (ok, out) = run(&[
        "loans",
        "disburse",
        "--loan",
        "01-L1",
        "--amount",
        "50000000",
        "--on",
        "2026-02-05",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = run(&[
        "--json",
        "loans",
        "repay",
        "--loan",
        "01-L1",
        "--amount",
        "2000000",
        "--on",
        "2026-03-20",
    ]);
    assert!(ok, "{out}");
    let split = &last_json(&out)["decided"];
    let part = |k: &str| split[k].as_str().unwrap().parse::<u64>().unwrap();
    assert!(part("to_interest") > 0, "{split}");
    assert_eq!(
        part("to_interest")
            + part("to_overdue_interest")
            + part("to_overdue_principal")
            + part("to_principal"),
        2_000_000,
        "{split}"
    );
    // The instalment of 03-05 was unpaid: the repayment moved it to overdue first and
    // paid it before the principal not yet due.
    assert!(part("to_overdue_principal") > 0, "{split}");
    // Registration, decision, approval, disbursement, the move to overdue, repayment:
    // the refused classification added nothing.
    let (ok, out) = ansinh(dir.path(), &["audit", "verify", "--partition", "01"]);
    assert!(ok, "{out}");
    assert!(out.contains("OK partition 01: 6 events"), "{out}");
}

/// The payments commands say what the ledger decided: a grant the entitlement's number
/// that stopping or changing it takes, a budget move how much is allocated and left; a
/// release above the unused part is refused in a sentence and records nothing.
#[test]
fn payments_commands_say_the_entitlement_and_what_is_left_of_a_budget() {
    let dir = tempfile::tempdir().unwrap();
    let as_role = |role: &str, unit: &str, args: &[&str]| {
        let mut a = vec!["--as", "staff:p", "--role", role, "--unit", unit];
        a.extend_from_slice(args);
        ansinh(dir.path(), &a)
    };
    let officer = |args: &[&str]| as_role("credit-officer", "0100007", args);
    let manager = |args: &[&str]| as_role("branch-manager", "01", args);
    let (ok, out) = officer(&[
        "household",
        "register",
        "--id",
        "0100007-000002",
        "--area",
        "rural",
        "--on",
        "2026-01-05",
        "--head-name",
        "Trần Thị Bích",
        "--head-citizen-id",
        "001190000002",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = officer(&[
        "payments",
        "grant",
        "--household",
        "0100007-000002",
        "--member",
        "m1",
        "--category",
        "ELDERLY_80_PLUS_NO_PENSION",
        "--channel",
        "bank",
        "--gateway",
        "vcb",
        "--from",
        "2026-10",
        "--on",
        "2026-10-01",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Entitlement 1 granted to ") && out.contains("Use --entitlement 1 "),
        "{out}"
    );
    let (ok, out) = manager(&[
        "payments",
        "allocate",
        "--commune",
        "0100007",
        "--period",
        "2026-10",
        "--amount",
        "2000000",
        "--on",
        "2026-10-01",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("2.000.000 ₫ allocated to the budget of commune 0100007 for 2026-10: 2.000.000 ₫ allocated, 2.000.000 ₫ available."),
        "{out}"
    );
    let release = |amount: &str| {
        manager(&[
            "--json",
            "payments",
            "release",
            "--commune",
            "0100007",
            "--period",
            "2026-10",
            "--amount",
            amount,
            "--on",
            "2026-10-20",
        ])
    };
    let (ok, out) = release("2500000");
    assert!(!ok, "{out}");
    assert!(last_json(&out)["refused"].is_string(), "{out}");
    let (ok, out) = release("500000");
    assert!(ok, "{out}");
    let decided = &last_json(&out)["decided"];
    assert_eq!(
        (&decided["released"], &decided["available"]),
        (&serde_json::json!("500000"), &serde_json::json!("1500000")),
        "{out}"
    );
    // Changing or stopping names the entitlement by its province: the branch does it.
    let (ok, out) = manager(&[
        "payments",
        "change",
        "--partition",
        "01",
        "--entitlement",
        "1",
        "--category",
        "ELDERLY_80_PLUS_NO_PENSION",
        "--channel",
        "post-office",
        "--gateway",
        "vnpost",
        "--from",
        "2026-11",
        "--on",
        "2026-10-25",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Entitlement 1 from 2026-11: ELDERLY_80_PLUS_NO_PENSION, paid by post office through vnpost."),
        "{out}"
    );
    // A stop, and timeouts, dated after today: refused, in words, and nothing recorded.
    for (args, kind) in [
        (
            [
                "payments",
                "stop",
                "--partition",
                "01",
                "--entitlement",
                "1",
                "--reason",
                "death",
                "--on",
                "2099-12-31",
            ]
            .as_slice(),
            "StopDateInFuture",
        ),
        (
            [
                "payments",
                "timeouts",
                "--partition",
                "01",
                "--as-of",
                "2099-12-31",
            ]
            .as_slice(),
            "TimeoutsAsOfInFuture",
        ),
    ] {
        let mut json = vec!["--json"];
        json.extend_from_slice(args);
        let (ok, out) = manager(&json);
        assert!(!ok, "{out}");
        assert_eq!(last_json(&out)["kind"], kind, "{out}");
        let (ok, out) = manager(args);
        assert!(!ok, "{out}");
        assert!(
            out.contains("REFUSED: ") && out.contains("2099-12-31"),
            "{out}"
        );
    }
    // Registration, grant, allocation, release, change: the refused release, stops and
    // timeouts added nothing.
    let (ok, out) = ansinh(dir.path(), &["audit", "verify", "--partition", "01"]);
    assert!(ok, "{out}");
    assert!(out.contains("OK partition 01: 5 events"), "{out}");
}

#[test]
fn reports_and_audits_name_what_the_log_has_never_seen() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = ansinh(
        dir.path(),
        &["note", "--partition", "01", "--text", "start"],
    );
    assert!(ok, "{out}");
    let auditor = |args: &[&str]| {
        let mut a = vec!["--as", "a:1", "--role", "auditor", "--unit", "01"];
        a.extend_from_slice(args);
        ansinh(dir.path(), &a)
    };
    for (args, says) in [
        (
            &["audit", "verify", "--partition", "99"][..],
            "the log has no partition 99",
        ),
        (
            &["audit", "recompute-eligibility", "--partition", "99"][..],
            "the log has no partition 99",
        ),
        (
            &["audit", "trail", "--subject", "household:0100007-999999"][..],
            "the log has no event naming subject household:0100007-999999",
        ),
        (
            &["portfolio", "--commune", "0109999"][..],
            "the log has no commune 0109999",
        ),
        (
            &["trial-balance", "--partitions", "01,99"][..],
            "the log has no partition 99",
        ),
        (
            &["household", "show", "0100007-999999"][..],
            "the log has no household 0100007-999999",
        ),
    ] {
        let (ok, out) = auditor(args);
        assert!(!ok, "{args:?} must fail: {out}");
        assert!(out.contains(says), "{args:?}: {out}");
    }
    // Structured with --json.
    let (ok, out) = auditor(&["--json", "portfolio", "--commune", "0109999"]);
    assert!(!ok);
    assert_eq!(
        last_json(&out),
        serde_json::json!({"error": "not_found", "what": "commune", "value": "0109999"})
    );
    // What exists still answers.
    let (ok, out) = auditor(&["trial-balance", "--partitions", "01"]);
    assert!(ok, "{out}");
    assert!(out.contains("no money events yet"), "{out}");
}

/// A byte flipped in the event stream's block file while the server is down: nats-server
/// then silently drops the message it can no longer read back. `audit verify` finds the
/// hole and names it (partition, partition sequence, stream sequence), and stops appends
/// to that partition so nothing is built past it; the other partition goes on. After the
/// block is repaired (here: the saved copy put back) the chain verifies again and the
/// operator's `admin accept-head` resumes appends; the event appended to the other
/// partition meanwhile is still there.
#[test]
fn a_byte_flipped_in_a_block_file_is_located_by_verify_and_stops_appends_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    // Interleaved runs of the two partitions, one event a message.
    for round in 0..4 {
        for partition in ["01", "92"] {
            let key_prefix = format!("r{round}-{partition}");
            let (ok, out) = ansinh(
                &data,
                &[
                    "load",
                    "--partition",
                    partition,
                    "--count",
                    "50",
                    "--concurrency",
                    "1",
                    "--key-prefix",
                    &key_prefix,
                ],
            );
            assert!(ok, "{out}");
        }
    }
    let (ok, out) = ansinh(&data, &["audit", "verify"]);
    assert!(ok, "{out}");
    let block = data.join("nats/jetstream/jetstream/ANSINH/streams/ANSINH_EVENTS/msgs/1.blk");
    let good = std::fs::read(&block).unwrap();
    let mut damaged = good.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    std::fs::write(&block, &damaged).unwrap();

    let (ok, out) = ansinh(&data, &["--json", "audit", "verify"]);
    assert!(!ok, "{out}");
    let verdict = last_json(&out);
    assert_eq!(verdict["ok"], false, "{verdict}");
    let error = verdict["error"].as_str().unwrap();
    // "partition 92: event at stream sequence 196 (expected partition sequence 95) is bad: ..."
    let damaged_partition = verdict["appends_stopped"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with(&format!(
            "partition {damaged_partition}: event at stream sequence "
        )),
        "{error}"
    );
    assert!(error.contains("(expected partition sequence "), "{error}");
    let other = if damaged_partition == "01" {
        "92"
    } else {
        "01"
    };

    let (ok, out) = ansinh(
        &data,
        &[
            "note",
            "--partition",
            &damaged_partition,
            "--text",
            "past the hole",
        ],
    );
    assert!(!ok, "an append past the damage: {out}");
    assert!(
        out.contains("verify found the chain broken at stream sequence"),
        "{out}"
    );
    let (ok, out) = ansinh(&data, &["note", "--partition", other, "--text", "unharmed"]);
    assert!(ok, "{out}");

    // Repaired (the byte put back, as a copy of the block from a replica or a backup
    // would): verify passes, and the operator resumes appends.
    let mut repaired = std::fs::read(&block).unwrap();
    assert!(
        repaired.len() > good.len(),
        "the other partition's note is in the block"
    );
    repaired[middle] ^= 0x40;
    assert_eq!(repaired[..good.len()], good[..]);
    std::fs::write(&block, &repaired).unwrap();
    let (ok, out) = ansinh(&data, &["audit", "verify"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("OK partition {other}: 201 events")),
        "{out}"
    );
    let (ok, out) = ansinh(
        &data,
        &["admin", "accept-head", "--partition", &damaged_partition],
    );
    assert!(ok, "{out}");
    let (ok, out) = ansinh(
        &data,
        &[
            "note",
            "--partition",
            &damaged_partition,
            "--text",
            "repaired",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = ansinh(&data, &["audit", "verify"]);
    assert!(ok, "{out}");
}

/// The embedded server grants what a deployment's accounts file grants: a connection
/// without a user is refused, a gateway (its password given by the operator) may not
/// publish on a partition's subject, and only the ledger's own connection writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_server_lets_only_the_ledger_publish_events() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let gateway_password = "a-password-the-operator-gave-the-bank";
    let (mut child, url) =
        serve_embedded(&data, &[("ANSINH_NATS_GW_VCB_PASSWORD", gateway_password)]).await;

    let anonymous = async_nats::ConnectOptions::new()
        .max_reconnects(Some(0))
        .connect(&url)
        .await;
    assert!(anonymous.is_err(), "a connection without a user got in");

    let (errors_tx, mut errors) = tokio::sync::mpsc::unbounded_channel::<String>();
    let bank = async_nats::ConnectOptions::with_user_and_password(
        "gw-vcb".into(),
        gateway_password.into(),
    )
    .custom_inbox_prefix("_INBOX_vcb")
    .event_callback(move |event| {
        let errors_tx = errors_tx.clone();
        async move {
            if let async_nats::Event::ServerError(e) = event {
                let _ = errors_tx.send(e.to_string());
            }
        }
    })
    .connect(&url)
    .await
    .expect("the gateway's user connects with the operator's password");
    bank.publish("ansinh.v1.events.01", "forged".into())
        .await
        .unwrap();
    bank.flush().await.unwrap();
    let error = tokio::time::timeout(std::time::Duration::from_secs(10), errors.recv())
        .await
        .expect("the server reports the violation")
        .unwrap();
    assert!(
        error.contains("Permissions Violation for Publish to \"ansinh.v1.events.01\""),
        "{error}"
    );
    // SAFETY: plain kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(child.wait().unwrap().success());
    // Nothing reached partition 01 (the ledger's own key event is in its partition).
    let (ok, out) = ansinh(&data, &["audit", "verify"]);
    assert!(ok, "{out}");
    assert!(!out.contains("partition 01"), "{out}");
    assert!(out.contains("OK partition ledger-keys: 1 events"), "{out}");
}

/// A data directory of a version before the embedded server had users kept its streams
/// in the server's global account: they move to the accounts file's, and every event is
/// still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_store_of_the_earlier_layout_keeps_its_events() {
    use ansinh::log::{Draft, Ledger, LedgerStore, LogConfig};
    use ansinh::nats_server::{NatsServer, Sync};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    {
        // The earlier layout: a server without users, its store in data/nats.
        let server = NatsServer::start(&data.join("nats"), Sync::Always).unwrap();
        let client = async_nats::connect(server.url()).await.unwrap();
        let store = LedgerStore::open(&data.join("ledger.sled")).unwrap();
        let (ledger, _) = Ledger::open(client, LogConfig::default(), store)
            .await
            .unwrap();
        for n in 0..3 {
            ledger
                .append(Draft {
                    partition: ansinh::chain::Partition::new("01").unwrap(),
                    actor: ansinh::proto::Actor {
                        id: "op:1".into(),
                        role: "operator".into(),
                        unit: String::new(),
                    },
                    idempotency_key: format!("old-{n}"),
                    correlation_id: String::new(),
                    request_fingerprint: None,
                    subjects: vec![],
                    payload: ansinh::proto::envelope::Payload::Note(ansinh::proto::Note {
                        text: "before users".into(),
                    }),
                })
                .await
                .unwrap();
        }
        ledger.close().await.unwrap();
        server.stop();
    }
    assert!(data.join("nats/jetstream/jetstream/$G").is_dir());
    let (ok, out) = ansinh(&data, &["audit", "verify"]);
    assert!(ok, "{out}");
    assert!(out.contains("OK partition 01: 3 events"), "{out}");
    let (ok, out) = ansinh(&data, &["note", "--partition", "01", "--text", "after"]);
    assert!(ok, "{out}");
    assert!(out.contains("sequence 4"), "{out}");
}

/// The embedded server's ledger user gets a password the test knows, so a test can
/// publish what only the ledger's own credentials may (the worst case: anyone else is
/// refused by the server).
const LEDGER_PASSWORD: &str = "the-ledger-password-of-this-test";
const LEDGER_PASSWORD_ENV: [(&str, &str); 1] = [("ANSINH_NATS_LEDGER_PASSWORD", LEDGER_PASSWORD)];

/// `ansinh` on `data`, with the ledger's password set as `LEDGER_PASSWORD`.
fn as_ledger(data: &std::path::Path) -> impl Fn(&[&str]) -> (bool, String) + '_ {
    move |args| ansinh_with(data, &LEDGER_PASSWORD_ENV, args)
}

/// A connection to the embedded server at `url` with the ledger's own credentials: a
/// forger who stole them.
async fn forger(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password("ledger".into(), LEDGER_PASSWORD.into())
        .connect(url)
        .await
        .unwrap()
}

/// A message on the log's subjects that names no partition is in no chain: appends,
/// `audit verify`, the projections and their check all pass over it, and verify names it
/// (docs/CHAIN.md, section 4b), instead of every reader stopping there for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_on_no_partitions_subject_is_reported_and_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let run = as_ledger(&data);
    let (ok, out) = run(&["note", "--partition", "01", "--text", "before"]);
    assert!(ok, "{out}");
    let (mut serve, url) = serve_embedded(&data, &LEDGER_PASSWORD_ENV).await;
    let js = async_nats::jetstream::new(forger(&url).await);
    let mut stray = Vec::new();
    for subject in ["ansinh.v1.events.01.extra", "ansinh.v1.events.no+partition"] {
        let ack = js
            .publish(subject, "not the ledger's".into())
            .await
            .unwrap()
            .await
            .unwrap();
        stray.push(ack.sequence);
    }
    // SAFETY: plain kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) }, 0);
    assert!(serve.wait().unwrap().success());

    let (ok, out) = run(&["note", "--partition", "01", "--text", "after"]);
    assert!(ok, "{out}");
    assert!(out.contains("sequence 2"), "{out}");
    let (ok, text) = run(&["audit", "verify"]);
    assert!(ok, "{text}");
    for at in &stray {
        assert!(
            text.contains(&format!("STRAY stream sequence {at}:")),
            "{text}"
        );
    }
    assert!(text.contains("OK partition 01: 2 events"), "{text}");
    let (ok, out) = run(&["--json", "audit", "verify"]);
    assert!(ok, "{out}");
    let verdict: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("some output")).unwrap();
    assert_eq!(verdict["stray_messages"], 2, "{verdict}");
    assert_eq!(
        verdict["stray"][0]["stream_sequence"], stray[0],
        "{verdict}"
    );
    assert_eq!(
        verdict["stray"][1]["subject"], "ansinh.v1.events.no+partition",
        "{verdict}"
    );
    // The projections pass over them to the note after them, and a rebuild agrees.
    let (ok, out) = run(&["projections", "rebuild"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["--json", "audit", "trail", "--subject", "partition:01"]);
    assert!(ok, "{out}");
    let trail: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sequences: Vec<u64> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sequences,
        [1, 2],
        "the note after the stray messages: {out}"
    );
    let (ok, out) = run(&["audit", "rebuild-check"]);
    assert!(ok, "{out}");
}

/// A foreign message on a partition's subject stops that partition's appends; the
/// operator's recorded, ledger-signed exclusion of exactly that message lets them resume,
/// nothing is deleted, and `audit verify`, the projections and an auditor's bundle all
/// pass over exactly that message (docs/CHAIN.md, section 4a).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_exclusion_of_a_foreign_message_lets_appends_resume() {
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let run = as_ledger(&data);
    let officer = ["--as", "co:1", "--role", "credit-officer", "--unit", "01"];
    let mut register = officer.to_vec();
    register.extend_from_slice(&[
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
    ]);
    let (ok, out) = run(&register);
    assert!(ok, "{out}");
    let (ok, out) = run(&["note", "--partition", "01", "--text", "before"]);
    assert!(ok, "{out}");

    // The forgery, while `serve` runs the embedded server.
    let (mut serve, url) = serve_embedded(&data, &LEDGER_PASSWORD_ENV).await;
    let forger = forger(&url).await;
    let forged = ansinh::proto::Envelope {
        format_version: 1,
        partition: "01".into(),
        sequence: 3,
        prev_hash: vec![7; 32].into(),
        event_type: "ansinh.v1.Note".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let ack = async_nats::jetstream::new(forger)
        .publish("ansinh.v1.events.01", forged.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let foreign = ack.sequence;
    // SAFETY: plain kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) }, 0);
    let status = serve.wait().unwrap();
    assert!(status.success(), "serve after SIGTERM: {status:?}");

    // The partition is stopped at the foreign message; verify names it.
    let (ok, out) = run(&["note", "--partition", "01", "--text", "blocked"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("chain broken at stream sequence {foreign}")),
        "{out}"
    );
    let (ok, out) = run(&["--json", "audit", "verify"]);
    assert!(!ok, "{out}");
    assert!(
        last_json(&out)["error"]
            .as_str()
            .unwrap()
            .contains(&format!("stream sequence {foreign}")),
        "{out}"
    );
    // An exclusion of a message that did not break the chain is refused.
    let (ok, out) = run(&[
        "admin",
        "exclude-message",
        "--partition",
        "01",
        "--stream-sequence",
        &(foreign - 1).to_string(),
        "--reason",
        "wrong one",
    ]);
    assert!(!ok, "{out}");
    // Verify stopped the partition; accepting its head lets the decision in, and
    // nothing else while the message is held.
    let (ok, out) = run(&["admin", "accept-head", "--partition", "01"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["note", "--partition", "01", "--text", "still blocked"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("chain broken at stream sequence {foreign}")),
        "{out}"
    );

    let exclude = [
        "admin",
        "exclude-message",
        "--partition",
        "01",
        "--stream-sequence",
        &foreign.to_string(),
        "--reason",
        "INC-2026-17: published with stolen credentials",
    ];
    let (ok, out) = run(&exclude);
    assert!(ok, "{out}");
    assert!(
        out.contains("is excluded by the event at sequence 3"),
        "{out}"
    );
    // Run again: the decision is recorded once.
    let (ok, out) = run(&exclude);
    assert!(ok, "{out}");
    assert!(out.contains("was already excluded"), "{out}");

    let (ok, out) = run(&["note", "--partition", "01", "--text", "after"]);
    assert!(ok, "{out}");
    assert!(out.contains("sequence 4"), "{out}");
    let (ok, out) = run(&["--json", "audit", "verify"]);
    assert!(ok, "{out}");
    // One verdict: the chain's, with the checkpoints'.
    let verdict: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("some output")).unwrap();
    assert_eq!(
        verdict["exclusions"][0]["stream_sequence"], foreign,
        "{verdict}"
    );
    assert_eq!(verdict["exclusions"][0]["signature_ok"], true, "{verdict}");
    assert_eq!(
        verdict["exclusions"][0]["decided_at_sequence"], 3,
        "{verdict}"
    );
    let (ok, text) = run(&["audit", "verify"]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "EXCLUDED partition 01: the message at stream sequence {foreign}"
        )),
        "{text}"
    );
    assert!(text.contains("OK partition 01: 4 events"), "{text}");
    // The projections pass over it, a rebuild gives the same store.
    let (ok, out) = run(&["projections", "rebuild"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["audit", "rebuild-check"]);
    assert!(ok, "{out}");
    // An auditor's bundle of the household verifies offline.
    let bundle = dir.path().join("bundle");
    let (ok, out) = run(&[
        "audit",
        "export",
        "--household",
        "0100007-000001",
        "--checkpoint",
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let files = ansinh::bundle::BundleFiles::read(&bundle).unwrap();
    let key = ansinh::bundle::verify(&files, &[])
        .unwrap()
        .latest_public_key;
    let (ok, out) = run(&[
        "audit",
        "verify-bundle",
        bundle.to_str().unwrap(),
        "--trust",
        &key,
    ]);
    assert!(ok, "{out}");
}

/// A flood of foreign messages, more than a reader lists one by one, does not stop a
/// partition for good: one ledger-signed exclusion names the whole run (its first and
/// last stream sequences, count and hash), an exclusion that names too few is refused
/// with where the run ends, and verify, the projections and appends all go on past
/// exactly those messages (docs/CHAIN.md, section 4a). The flood's last message
/// continues the chain from the last good event, as the ledger's own next event would:
/// it is held with the run, where it used to stop every reader for good (no exclusion
/// could name it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_exclusion_passes_over_a_flood_of_foreign_messages() {
    use prost::Message as _;
    const FLOOD: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let run = as_ledger(&data);
    let (ok, out) = run(&["note", "--partition", "01", "--text", "before"]);
    assert!(ok, "{out}");

    let (mut serve, url) = serve_embedded(&data, &LEDGER_PASSWORD_ENV).await;
    let js = async_nats::jetstream::new(forger(&url).await);
    let subject = "ansinh.v1.events.01";
    let stream = js
        .get_stream(js.stream_by_subject(subject).await.unwrap())
        .await
        .unwrap();
    let head = ansinh::log::reader::last_on_subject(&stream, subject)
        .await
        .unwrap()
        .expect("the note before");
    let mut sequences = Vec::new();
    for i in 0..FLOOD {
        let prev_hash = if i == FLOOD - 1 {
            head.hash.0.to_vec()
        } else {
            vec![i as u8; 32]
        };
        let forged = ansinh::proto::Envelope {
            format_version: 1,
            partition: "01".into(),
            sequence: 2,
            prev_hash: prev_hash.into(),
            event_type: "ansinh.v1.Note".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let ack = js
            .publish("ansinh.v1.events.01", forged.into())
            .await
            .unwrap()
            .await
            .unwrap();
        sequences.push(ack.sequence);
    }
    // SAFETY: plain kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) }, 0);
    assert!(serve.wait().unwrap().success());
    let (first, last) = (sequences[0], sequences[FLOOD as usize - 1]);

    let (ok, out) = run(&["audit", "verify"]);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("stream sequence {first}")), "{out}");
    let (ok, out) = run(&["admin", "accept-head", "--partition", "01"]);
    assert!(ok, "{out}");
    // Naming part of the run is refused, and the refusal says where it ends.
    let (ok, out) = run(&[
        "admin",
        "exclude-message",
        "--partition",
        "01",
        "--stream-sequence",
        &first.to_string(),
        "--through",
        &(last - 1).to_string(),
        "--reason",
        "INC-2026-18",
    ]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("--stream-sequence {first} --through {last}")),
        "{out}"
    );
    let (ok, out) = run(&["note", "--partition", "01", "--text", "still blocked"]);
    assert!(!ok, "{out}");

    let exclude = [
        "admin",
        "exclude-message",
        "--partition",
        "01",
        "--stream-sequence",
        &first.to_string(),
        "--through",
        &last.to_string(),
        "--reason",
        "INC-2026-18: a flood with stolen credentials",
    ];
    let (ok, out) = run(&exclude);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "the {FLOOD} messages at stream sequences {first} through {last} are excluded by the event at sequence 2"
        )),
        "{out}"
    );
    let (ok, out) = run(&exclude);
    assert!(ok, "{out}");
    assert!(out.contains("were already excluded"), "{out}");
    let (ok, out) = run(&["note", "--partition", "01", "--text", "after"]);
    assert!(ok, "{out}");
    assert!(out.contains("sequence 3"), "{out}");

    let (ok, out) = run(&["--json", "audit", "verify"]);
    assert!(ok, "{out}");
    let verdict = last_json(&out);
    let x = &verdict["exclusions"][0];
    assert_eq!(
        (
            &x["stream_sequence"],
            &x["through_stream_sequence"],
            &x["message_count"],
            &x["signature_ok"]
        ),
        (&first.into(), &last.into(), &FLOOD.into(), &true.into()),
        "{verdict}"
    );
    let (ok, out) = run(&["projections", "rebuild"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["audit", "rebuild-check"]);
    assert!(ok, "{out}");
}

/// `--json audit verify` prints one document whose `ok` is the exit code's verdict: a
/// checkpoint no ledger key signed makes it false, though the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_verdict_of_verify_is_false_when_a_checkpoint_is_forged() {
    use ansinh::checkpoint::sign::{self, CheckpointBody, KeyPair};
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let run = as_ledger(&data);
    let (ok, out) = run(&["note", "--partition", "01", "--text", "checkpointed"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["audit", "checkpoint"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["--json", "audit", "verify"]);
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let verdict = last_json(&out);
    assert_eq!(
        (&verdict["ok"], &verdict["checkpoints_ok"]),
        (&true.into(), &true.into()),
        "{verdict}"
    );

    // Given a checkpoint of 01 signed by a key that was never the ledger's,
    let (mut serve, url) = serve_embedded(&data, &LEDGER_PASSWORD_ENV).await;
    let stranger = KeyPair::from_seed(&[9; 32]);
    let body = CheckpointBody {
        partition: ansinh::chain::Partition::new("01").unwrap(),
        tree_size: 1,
        root: [1; 32],
        head_sequence: 1,
        head_hash: [1; 32],
        issued_at_unix_ms: 0,
        key_id: stranger.key_id().into(),
    };
    async_nats::jetstream::new(forger(&url).await)
        .publish(
            "ansinh.v1.checkpoints.01",
            sign::sign_checkpoint(&stranger, &body)
                .encode_to_vec()
                .into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // SAFETY: plain kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) }, 0);
    assert!(serve.wait().unwrap().success());

    // when verify runs with --json, then its one document says what its exit code does.
    let (ok, out) = run(&["--json", "audit", "verify"]);
    assert!(!ok, "{out}");
    let first: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("some output")).unwrap();
    assert_eq!(first["ok"], false, "{first}");
    assert_eq!(first["checkpoints_ok"], false, "{first}");
    assert_eq!(first["partitions"]["01"]["events"], 1, "{first}");
    assert!(
        first["checkpoints"]["problems"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("never a ledger key"),
        "{first}"
    );
}

/// `audit verify --read-only` creates nothing: a checkpoint stream that does not exist
/// (a name mistyped) is an error, exit 2, not an empty stream made on the spot and
/// "OK 0 checkpoints match the log"; and a checkpoint audit that could not run exits 2
/// with --json as without (its document says `checkpoints_error`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_verify_refuses_a_missing_checkpoint_stream_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let run = as_ledger(&data);
    let (ok, out) = run(&["note", "--partition", "01", "--text", "checkpointed"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["audit", "checkpoint"]);
    assert!(ok, "{out}");
    let (serve, url) = serve_embedded(&data, &LEDGER_PASSWORD_ENV).await;
    // A failed assertion must not leave the server running (it holds the test's output).
    let mut serve = StopOnDrop(Some(serve));
    let nowhere = dir.path().join("no-data-dir");
    let read_only = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ansinh"))
            .arg("--data-dir")
            .arg(&nowhere)
            .args(["--nats", &url, "--nats-user", "ledger"])
            .args(args)
            .env_remove("ANSINH_NATS_URL")
            .env("ANSINH_NATS_PASSWORD", LEDGER_PASSWORD)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, out) = read_only(&["audit", "verify", "--read-only"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("OK 2 checkpoints match the log"), "{out}");

    // A stream name and subject prefix mistyped: nothing to read, and nothing made.
    let typo = [
        "--checkpoint-stream",
        "ANSINH_CHECKPOINTZ",
        "--checkpoint-prefix",
        "ansinh.v2",
    ];
    let (code, out) = read_only(&[&typo[..], &["audit", "verify", "--read-only"]].concat());
    assert_eq!(code, Some(2), "{out}");
    assert!(!out.contains("checkpoints match the log"), "{out}");
    assert!(out.contains("stream ANSINH_CHECKPOINTZ not found"), "{out}");
    // The same operating error exits 2 with --json as without; the document says why.
    let (code, out) =
        read_only(&[&typo[..], &["--json", "audit", "verify", "--read-only"]].concat());
    assert_eq!(code, Some(2), "{out}");
    let verdict: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(verdict["ok"], false, "{verdict}");
    assert_eq!(verdict["checkpoints_ok"], false, "{verdict}");
    assert!(
        verdict["checkpoints_error"]
            .as_str()
            .unwrap()
            .contains("ANSINH_CHECKPOINTZ"),
        "{verdict}"
    );
    let js = async_nats::jetstream::new(forger(&url).await);
    assert!(
        js.get_stream("ANSINH_CHECKPOINTZ").await.is_err(),
        "a read-only verify created a stream"
    );
    assert!(!nowhere.exists());
    let mut serve = serve.0.take().unwrap();
    // SAFETY: plain kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) }, 0);
    assert!(serve.wait().unwrap().success());
}

/// Stops a child process still running when dropped (a test that failed half way).
struct StopOnDrop(Option<std::process::Child>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            // SIGTERM, so that it stops its embedded nats-server too.
            // SAFETY: plain kill(2) on a child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

/// The key partition is a partition of the log like a province's: the commands that
/// repair, verify or checkpoint a chain take its name.
#[test]
fn the_repair_and_audit_commands_take_the_key_partition() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let (ok, out) = ansinh(&data, &["note", "--partition", "01", "--text", "first"]);
    assert!(ok, "{out}");
    let (ok, out) = ansinh(&data, &["audit", "checkpoint"]);
    assert!(ok, "{out}");
    let (ok, out) = ansinh(&data, &["audit", "verify", "--partition", "ledger-keys"]);
    assert!(ok, "{out}");
    assert!(out.contains("OK partition ledger-keys: 1 events"), "{out}");
    let (ok, out) = ansinh(
        &data,
        &["audit", "checkpoint", "--partition", "ledger-keys"],
    );
    assert!(ok, "{out}");
    // The ledger, not the argument parser, answers: the key partition is not stopped.
    let (ok, out) = ansinh(
        &data,
        &["admin", "accept-head", "--partition", "ledger-keys"],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("partition ledger-keys is not stopped in this data directory"),
        "{out}"
    );
    // The ledger, not the argument parser, answers an exclusion of another subject's
    // message (the note on 01, at stream sequence 1).
    let (ok, out) = ansinh(
        &data,
        &[
            "admin",
            "exclude-message",
            "--partition",
            "ledger-keys",
            "--stream-sequence",
            "1",
            "--reason",
            "wrong one",
        ],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("not on partition ledger-keys's subject"),
        "{out}"
    );
    // Other names are still refused by the parser, with the forms it takes.
    let (ok, out) = ansinh(&data, &["admin", "accept-head", "--partition", "ledger"]);
    assert!(!ok, "{out}");
    assert!(out.contains("or ledger-keys"), "{out}");
}

/// `ansinh serve` on the embedded server of a data directory, logging at info, leading a
/// process group of its own as a terminal's job does; killed when dropped if still running.
struct LoggedServe {
    child: std::process::Child,
    /// Where it serves HTTP (`http://127.0.0.1:PORT`).
    base: String,
    /// Its stderr lines read so far.
    lines: Vec<String>,
    more: std::sync::mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl LoggedServe {
    /// Starts it on `data` (the ledger's password set) and waits until it listens.
    fn start(data: &std::path::Path) -> Self {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(env!("CARGO_BIN_EXE_ansinh"))
            .arg("--data-dir")
            .arg(data)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("ANSINH_NATS_URL")
            .env("RUST_LOG", "info")
            .envs(LEDGER_PASSWORD_ENV)
            .process_group(0)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (lines_tx, more) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).split(b'\n') {
                let Ok(line) = line else { return };
                let _ = lines_tx.send(String::from_utf8_lossy(&line).into_owned());
            }
        });
        let mut serve = Self {
            child,
            base: String::new(),
            lines: Vec::new(),
            more,
            reader: Some(reader),
        };
        while serve.base.is_empty() {
            let Ok(line) = serve.more.recv() else {
                panic!("serve stopped before it listened: {:#?}", serve.lines);
            };
            if let Some(rest) = line.split("serving the staff API on ").nth(1) {
                serve.base = rest.split_whitespace().next().unwrap().to_owned();
            }
            serve.lines.push(line);
        }
        serve
    }

    /// Waits for it to exit; its status and every line it wrote.
    fn wait(&mut self) -> (std::process::ExitStatus, &[String]) {
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.lines.extend(self.more.try_iter());
        (status, &self.lines)
    }
}

impl Drop for LoggedServe {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Ctrl-C at a terminal signals the whole foreground process group: `serve`'s embedded
/// nats-server is in a group of its own, so it still answers while `serve` drains and
/// closes the ledger, and is stopped after. Here SIGINT goes to `serve`'s group.
#[test]
fn ctrl_c_closes_the_ledger_before_the_embedded_server_stops() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let (ok, out) = as_ledger(&data)(&["note", "--partition", "01", "--text", "before"]);
    assert!(ok, "{out}");
    let mut serve = LoggedServe::start(&data);
    // Out of the group a terminal's Ctrl-C signals.
    let pid = serve.child.id();
    assert_ne!(
        process_group_of(embedded_server_of(pid)),
        pid,
        "the embedded server is in serve's process group"
    );
    // SAFETY: kill(2) on the process group of the child we spawned (it leads it).
    assert_eq!(unsafe { libc::kill(-(pid as i32), libc::SIGINT) }, 0);
    let (status, lines) = serve.wait();
    assert!(status.success(), "{status:?}: {lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("the ledger closed")),
        "the ledger did not close cleanly: {lines:#?}"
    );
}

/// A `serve` whose embedded nats-server died can reach no log, and only a restart helps:
/// it says so at error level, and its liveness probe fails, so an orchestrator restarts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_is_no_longer_alive_once_its_embedded_server_died() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let mut serve = LoggedServe::start(&data);
    let client = reqwest::Client::new();
    let healthz = format!("{}/healthz", serve.base);
    let alive = client.get(&healthz).send().await.unwrap();
    assert_eq!(alive.status(), 200);
    let server = embedded_server_of(serve.child.id());
    // SAFETY: kill(2) on the embedded server of the child we spawned, running (it answered).
    assert_eq!(unsafe { libc::kill(server as i32, libc::SIGKILL) }, 0);
    // A bound, not a pace: the probe must fail well within it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let body = loop {
        let answer = client.get(&healthz).send().await.unwrap();
        if answer.status() != 200 {
            assert_eq!(answer.status(), 503);
            break answer.json::<serde_json::Value>().await.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/healthz still answers 200 after the embedded server was killed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(body["alive"], false, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("SIGKILL"),
        "{body}"
    );
    // Logged once the exit is known, which the probe reads first: wait for the line.
    let said = |l: &String| l.contains("ERROR") && l.contains("nats-server exited on its own");
    while !serve.lines.iter().any(said) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match serve.more.recv_timeout(left) {
            Ok(line) => serve.lines.push(line),
            Err(_) => panic!("no error logged: {:#?}", serve.lines),
        }
    }
}

/// The process id of the embedded nats-server `ansinh` process `pid` started.
fn embedded_server_of(pid: u32) -> u32 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .map(|c| c.parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        })
        .find(|child| {
            std::fs::read_to_string(format!("/proc/{child}/comm"))
                .is_ok_and(|comm| comm.trim() == "nats-server")
        })
        .unwrap_or_else(|| panic!("ansinh {pid} runs no nats-server"))
}

/// The process group of process `pid` (/proc/PID/stat: the third field after the name).
fn process_group_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 1..];
    after_name
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

/// `ansinh serve` on the embedded server of `data`, with `env` for it, once it listens:
/// the process (stop it with SIGTERM) and the embedded server's URL.
async fn serve_embedded(
    data: &std::path::Path,
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut command = Command::new(env!("CARGO_BIN_EXE_ansinh"));
    command
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("ANSINH_NATS_URL")
        .stderr(std::process::Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    // The reader keeps draining stderr after the server listens: a pipe closed under it
    // would fail the server's next line to stderr, and with it the server.
    let (listening, listened) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if line.contains("serving the staff API on ") {
                let _ = listening.send(());
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        listened
            .recv()
            .expect("ansinh serve stopped before it listened")
    })
    .await
    .unwrap();
    let config = std::fs::read_to_string(data.join("nats/nats-server.conf")).unwrap();
    let port = config
        .lines()
        .find_map(|l| l.strip_prefix("listen: 127.0.0.1:"))
        .unwrap()
        .trim()
        .to_owned();
    (child, format!("nats://127.0.0.1:{port}"))
}

/// Without `--partitions`, `trial-balance` checks every partition the log has, not a
/// fixed list: a deployment holding only province 48 is checked, and passes.
#[test]
fn trial_balance_without_partitions_checks_every_partition_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = ansinh(dir.path(), &["note", "--partition", "48", "--text", "x"]);
    assert!(ok, "{out}");
    let (ok, out) = ansinh(dir.path(), &["trial-balance"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Trial balance, partition 48: no money events yet"),
        "{out}"
    );
    assert!(!out.contains("partition 01"), "{out}");
}

/// `admin release-claim` frees nothing the household's record holds, nor a claim another
/// household or none holds: each refusal is exit 1 and says which, with `--json` as an
/// `error` kind, and never echoes the citizen id.
#[test]
fn release_claim_refuses_a_claim_in_use_or_not_the_households() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = ansinh(
        dir.path(),
        &[
            "--as",
            "co:1",
            "--role",
            "credit-officer",
            "--unit",
            "0100007",
            "household",
            "register",
            "--id",
            "0100007-000001",
            "--area",
            "rural",
            "--on",
            "2026-01-05",
            "--head-name",
            "Lê Văn An",
            "--head-citizen-id",
            "001085012345",
        ],
    );
    assert!(ok, "{out}");
    let release = |citizen: &str, household: &str| {
        ansinh(
            dir.path(),
            &[
                "--json",
                "admin",
                "release-claim",
                "--citizen-id",
                citizen,
                "--household",
                household,
            ],
        )
    };
    let (ok, out) = release("001085012345", "0100007-000001");
    assert!(!ok, "{out}");
    let refusal = last_json(&out);
    assert_eq!(refusal["error"], "recorded", "{out}");
    assert_eq!(refusal["household"], "0100007-000001", "{out}");
    let (ok, out) = release("001085012345", "0100007-000002");
    assert!(!ok, "{out}");
    assert_eq!(last_json(&out)["error"], "not_held", "{out}");
    assert!(out.contains("household 0100007-000001 does"), "{out}");
    let (ok, out) = release("001190000001", "0100007-000001");
    assert!(!ok, "{out}");
    assert_eq!(last_json(&out)["error"], "not_held", "{out}");
    assert!(!out.contains("001190000001"), "{out}");
}

/// `admin accept-head` on a partition that is not stopped (a typo, say) is refused and
/// changes nothing: the partition's remembered head, which detects a stream restored
/// from an older copy, is kept.
#[test]
fn accept_head_on_a_partition_not_stopped_is_refused_and_keeps_its_head() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = ansinh(dir.path(), &["note", "--partition", "01", "--text", "x"]);
    assert!(ok, "{out}");
    let (ok, out) = ansinh(
        dir.path(),
        &["--json", "admin", "accept-head", "--partition", "01"],
    );
    assert!(!ok, "{out}");
    let refusal = last_json(&out);
    assert_eq!(refusal["error"], "not_stopped", "{out}");
    assert_eq!(refusal["partition"], "01", "{out}");
    let (ok, out) = ansinh(dir.path(), &["admin", "accept-head", "--partition", "10"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("REFUSED: partition 10 is not stopped"),
        "{out}"
    );
    // The head is still remembered.
    let store = ansinh::log::LedgerStore::open(&dir.path().join("ledger.sled")).unwrap();
    assert_eq!(store.head("01").unwrap().map(|h| h.sequence), Some(1));
}

/// A staff command line run as `--as co:1 --role ROLE --unit UNIT` on `dir`'s ledger.
fn as_staff<'a>(
    dir: &'a std::path::Path,
    role: &'a str,
    unit: &'a str,
) -> impl Fn(&[&str]) -> (bool, String) + 'a {
    move |args: &[&str]| {
        let mut a = vec!["--as", "co:1", "--role", role, "--unit", unit];
        a.extend_from_slice(args);
        ansinh(dir, &a)
    }
}

/// Registers 0100007-000001 (head 001085012345), classifies it poor, approves 01-L1 for
/// 50.000.000 ₫ and disburses it all.
fn a_disbursed_loan(officer: &dyn Fn(&[&str]) -> (bool, String)) {
    for args in [
        &[
            "household",
            "register",
            "--id",
            "0100007-000001",
            "--area",
            "rural",
            "--on",
            "2026-01-05",
            "--head-name",
            "Lê Văn An",
            "--head-citizen-id",
            "001085012345",
        ][..],
        &[
            "review",
            "classify",
            "--household",
            "0100007-000001",
            "--income",
            "1200000",
            "--area",
            "rural",
            "--deprived",
            "employment,nutrition,drinking_water",
            "--year",
            "2026",
            "--on",
            "2026-01-10",
        ],
        &[
            "loans",
            "approve",
            "--household",
            "0100007-000001",
            "--programme",
            "POOR_HOUSEHOLD",
            "--amount",
            "50000000",
            "--term-months",
            "36",
            "--savings-group",
            "TK-01",
            "--entrusted",
            "womens-union",
            "--on",
            "2026-02-02",
            "--reason",
            "credit board 2/2026",
        ],
        &[
            "loans",
            "disburse",
            "--loan",
            "01-L1",
            "--amount",
            "50000000",
            "--on",
            "2026-02-05",
        ],
    ] {
        let (ok, out) = officer(args);
        assert!(ok, "{args:?}: {out}");
    }
}

/// Grants entitlement 1 to the head of `household` (registered by the caller) and
/// allocates its commune 2.000.000 ₫ for each of `months`, as the branch manager.
fn an_entitlement_funded_for(
    officer: &dyn Fn(&[&str]) -> (bool, String),
    manager: &dyn Fn(&[&str]) -> (bool, String),
    household: &str,
    months: &[&str],
) {
    let (ok, out) = officer(&[
        "payments",
        "grant",
        "--household",
        household,
        "--member",
        "m1",
        "--category",
        "ELDERLY_80_PLUS_NO_PENSION",
        "--channel",
        "bank",
        "--gateway",
        "vcb",
        "--from",
        "2026-10",
        "--on",
        "2026-10-01",
    ]);
    assert!(ok, "{out}");
    for month in months {
        let (ok, out) = manager(&[
            "payments",
            "allocate",
            "--commune",
            &household[..7],
            "--period",
            month,
            "--amount",
            "2000000",
            "--on",
            "2026-10-01",
        ]);
        assert!(ok, "{out}");
    }
}

/// A key names one request: the same command line again is a retry (its first receipt,
/// `duplicate`, exit 0), but the key given to another request (another amount, another
/// month) is refused, and nothing is recorded for it. Were it answered "already
/// recorded", the clerk would believe the second repayment, or November's payments, done.
#[test]
fn a_key_reused_for_another_request_is_refused_not_answered_as_done() {
    let dir = tempfile::tempdir().unwrap();
    let officer = as_staff(dir.path(), "credit-officer", "0100007");
    let manager = as_staff(dir.path(), "branch-manager", "01");
    a_disbursed_loan(&officer);
    let repay = |amount: &str| {
        officer(&[
            "--json",
            "--idempotency-key",
            "pay-1",
            "loans",
            "repay",
            "--loan",
            "01-L1",
            "--amount",
            amount,
            "--on",
            "2026-03-20",
        ])
    };
    let (ok, out) = repay("2000000");
    assert!(ok, "{out}");
    assert_eq!(last_json(&out)["duplicate"], false, "{out}");
    let (ok, out) = repay("3000000");
    assert!(!ok, "another request under the key must be refused: {out}");
    let refusal = last_json(&out);
    assert_eq!(refusal["kind"], "IdempotencyKeyReused", "{out}");
    assert!(
        refusal["refused"]
            .as_str()
            .unwrap()
            .contains("used for another request"),
        "{out}"
    );
    // The same request again is still a retry: its first receipt.
    let (ok, out) = repay("2000000");
    assert!(ok, "{out}");
    assert_eq!(last_json(&out)["duplicate"], true, "{out}");
    // The same key with the same arguments given in another order is the same request.
    let (ok, out) = officer(&[
        "--idempotency-key",
        "pay-1",
        "loans",
        "repay",
        "--on",
        "2026-03-20",
        "--amount=2000000",
        "--loan",
        "01-L1",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("already recorded:"), "{out}");

    // A payment run's key: October's run under it, then November's refused.
    an_entitlement_funded_for(
        &officer,
        &manager,
        "0100007-000001",
        &["2026-10", "2026-11"],
    );
    let run = |month: &str, on: &str| {
        manager(&[
            "--json",
            "--idempotency-key",
            "run-01",
            "payments",
            "run",
            "--partition",
            "01",
            "--period",
            month,
            "--on",
            on,
        ])
    };
    let (ok, out) = run("2026-10", "2026-10-05");
    assert!(ok, "{out}");
    assert_eq!(last_json(&out)["by_commune"][0]["outcome"], "paid", "{out}");
    let (ok, out) = run("2026-11", "2026-11-05");
    assert!(
        !ok,
        "November's run under October's key must be refused: {out}"
    );
    assert_eq!(last_json(&out)["kind"], "IdempotencyKeyReused", "{out}");
    let (ok, out) = run("2026-10", "2026-10-05");
    assert!(ok, "{out}");
    assert_eq!(last_json(&out)["by_commune"][0]["duplicate"], true, "{out}");
    // Nothing was recorded for November: its run under a key of its own pays it.
    let (ok, out) = manager(&[
        "--json",
        "payments",
        "run",
        "--partition",
        "01",
        "--period",
        "2026-11",
        "--on",
        "2026-11-05",
    ]);
    assert!(ok, "{out}");
    let november = &last_json(&out)["by_commune"][0];
    assert_eq!(
        (&november["outcome"], &november["duplicate"]),
        (&serde_json::json!("paid"), &serde_json::json!(false)),
        "{out}"
    );
}

/// The exit code and stdout of a command line on `dir`'s ledger.
fn exit_and_stdout(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ansinh"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("ANSINH_NATS_URL")
        .output()
        .expect("run ansinh");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The events of `partition` in the log, as `audit verify` counts them.
fn events_of(dir: &std::path::Path, partition: &str) -> String {
    let (ok, out) = ansinh(dir, &["audit", "verify", "--partition", partition]);
    assert!(ok, "{out}");
    out.lines()
        .find(|l| l.starts_with(&format!("OK partition {partition}:")))
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned()
}

/// A run of the whole province is the branch's: a commune's officer is refused before
/// any commune is paid, as over HTTP. Checking each commune in turn would pay the
/// officer's own commune, then refuse the next, a refusal that had appended a run.
#[test]
fn a_communes_officer_cannot_run_a_whole_province() {
    let dir = tempfile::tempdir().unwrap();
    let manager = as_staff(dir.path(), "branch-manager", "01");
    for (household, citizen) in [
        ("0100001-000001", "001085000001"),
        ("0100007-000001", "001085000007"),
    ] {
        let (ok, out) = manager(&[
            "household",
            "register",
            "--id",
            household,
            "--area",
            "rural",
            "--on",
            "2026-01-05",
            "--head-name",
            "Lê Văn An",
            "--head-citizen-id",
            citizen,
        ]);
        assert!(ok, "{out}");
        an_entitlement_funded_for(&manager, &manager, household, &["2026-10"]);
    }
    let before = events_of(dir.path(), "01");
    let (code, out) = exit_and_stdout(
        dir.path(),
        &[
            "--json",
            "--as",
            "co:1",
            "--role",
            "credit-officer",
            "--unit",
            "0100001",
            "payments",
            "run",
            "--partition",
            "01",
            "--period",
            "2026-10",
            "--on",
            "2026-10-05",
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out.lines().count(), 1, "one JSON document: {out}");
    assert_eq!(last_json(&out)["kind"], "Denied", "{out}");
    assert_eq!(
        events_of(dir.path(), "01"),
        before,
        "a refused run appended a commune's run"
    );
    // Their own commune's run is theirs.
    let (code, out) = exit_and_stdout(
        dir.path(),
        &[
            "--json",
            "--as",
            "co:1",
            "--role",
            "credit-officer",
            "--unit",
            "0100001",
            "payments",
            "run",
            "--partition",
            "01",
            "--commune",
            "0100001",
            "--period",
            "2026-10",
            "--on",
            "2026-10-05",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(last_json(&out)["by_commune"][0]["outcome"], "paid", "{out}");
}

/// The monthly overdue job run where it cannot move anything is refused (exit 1, the
/// refusal's kind), never a success that moved nothing: a province outside the caller's
/// unit, a date after today (a mistyped year), a role that may not run it. A loan the
/// run refuses makes the exit code 1 and is named by the kind of its refusal.
#[test]
fn an_overdue_run_outside_the_unit_or_in_the_future_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let officer = as_staff(dir.path(), "credit-officer", "0100007");
    a_disbursed_loan(&officer);
    let today = ansinh::clock::today().to_string();
    let overdue = |who: [&str; 6], as_of: &str| {
        let mut a = vec!["--json"];
        a.extend_from_slice(&who);
        a.extend_from_slice(&[
            "loans",
            "mark-overdue",
            "--partition",
            "01",
            "--as-of",
            as_of,
        ]);
        exit_and_stdout(dir.path(), &a)
    };
    let as_ = |id, role, unit| ["--as", id, "--role", role, "--unit", unit];
    for (who, as_of, kind) in [
        (as_("m:9", "branch-manager", "79"), today.as_str(), "Denied"),
        (as_("m:0", "branch-manager", ""), today.as_str(), "Denied"),
        (as_("t:1", "teller", "01"), today.as_str(), "Denied"),
        (
            as_("m:1", "branch-manager", "01"),
            "2099-12-31",
            "DatedInFuture",
        ),
    ] {
        let (code, out) = overdue(who, as_of);
        assert_eq!(code, Some(1), "{who:?} {as_of}: {out}");
        let refusal = last_json(&out);
        assert_eq!(refusal["kind"], kind, "{who:?} {as_of}: {out}");
        assert!(refusal["refused"].is_string(), "{out}");
    }
    // A repayment of 2026-03-20, then a run as of an earlier day: the loan's run is
    // refused (back-dated), and the job says so.
    let (ok, out) = officer(&[
        "loans",
        "repay",
        "--loan",
        "01-L1",
        "--amount",
        "2000000",
        "--on",
        "2026-03-20",
    ]);
    assert!(ok, "{out}");
    let (code, out) = overdue(as_("m:1", "branch-manager", "01"), "2026-03-10");
    assert_eq!(code, Some(1), "{out}");
    let report = last_json(&out);
    assert_eq!(report["refused"], 1, "{out}");
    assert!(
        report["refusals"]
            .as_object()
            .is_some_and(|r| !r.is_empty()),
        "{out}"
    );
}

/// `--remove-member` takes a citizen id or a name. A name is a member's only when they
/// have no citizen id (who has one is named by it), and only if one member bears it:
/// removing by name never frees a citizen's claim, nor removes two people at once. A
/// name in decomposed marks is the same name. A change that adds and removes no one is
/// refused and appends nothing.
#[test]
fn removing_a_member_by_name_never_removes_a_member_with_a_citizen_id_or_two_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let officer = as_staff(dir.path(), "credit-officer", "01");
    let register = |id: &str, head: &str, members: &[&str]| {
        let mut a = vec![
            "household",
            "register",
            "--id",
            id,
            "--area",
            "rural",
            "--on",
            "2026-01-05",
            "--head-name",
            "Lê Văn Tám",
            "--head-citizen-id",
            head,
        ];
        for m in members {
            a.extend_from_slice(&["--member", m]);
        }
        as_staff(dir.path(), "credit-officer", &id[..2])(&a)
    };
    let (ok, out) = register(
        "0100007-000001",
        "001085012345",
        &[
            "Lê Minh:001190000003:con",
            "Lê Minh::cháu",
            "Lê Hoa::cháu",
            "Lê Hoa::cháu",
        ],
    );
    assert!(ok, "{out}");
    let change = |args: &[&str]| {
        let mut a = vec![
            "--json",
            "--as",
            "co:1",
            "--role",
            "credit-officer",
            "--unit",
            "01",
            "household",
            "change-members",
            "--id",
            "0100007-000001",
            "--on",
            "2026-03-01",
            "--reason",
            "left",
        ];
        a.extend_from_slice(args);
        exit_and_stdout(dir.path(), &a)
    };
    let members = || {
        let (ok, out) = officer(&["--json", "household", "show", "0100007-000001"]);
        assert!(ok, "{out}");
        last_json(&out)["household"]["members"].as_u64().unwrap()
    };
    assert_eq!(members(), 5);
    let before = events_of(dir.path(), "01");
    // Two members bear the name: which one left is not for the ledger to guess.
    let (code, out) = change(&["--remove-member", "Lê Hoa"]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(last_json(&out)["kind"], "AmbiguousMember", "{out}");
    // Nothing added, nothing removed: refused before anything is read.
    let (code, out) = change(&[]);
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(events_of(dir.path(), "01"), before);
    // The child's name, typed in decomposed marks: the child alone leaves, and the
    // member of the same name with a citizen id stays, holding their claim.
    let nfd: String = unicode_normalization::UnicodeNormalization::nfd("Lê Minh").collect();
    assert_ne!(nfd, "Lê Minh");
    let (code, out) = change(&["--remove-member", &nfd]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(members(), 4);
    let (ok, out) = register("7900007-000001", "001190000003", &[]);
    assert!(!ok, "the citizen still lives in 0100007-000001: {out}");
    // By name, the member with a citizen id is nobody.
    let (code, out) = change(&["--remove-member", "Lê Minh"]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(last_json(&out)["kind"], "NotAMember", "{out}");
    // By their citizen id, they leave, and may be registered elsewhere.
    let (code, out) = change(&["--remove-member", "001190000003"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(members(), 3);
    let (ok, out) = register("7900007-000001", "001190000003", &[]);
    assert!(ok, "{out}");
}

/// Personal data given as the API's `personal` object on stdin (`--personal -`) never
/// appear in the process's arguments, which every user of the host can read
/// (`/proc/<pid>/cmdline`, `ps`). The process waits on stdin: its arguments are read
/// while it runs, before the document is written. A document the API's schema would
/// refuse (a member it does not name) is refused, and appends nothing.
#[test]
fn personal_data_on_stdin_never_appear_in_the_process_arguments() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let staff = [
        "--as",
        "co:1",
        "--role",
        "credit-officer",
        "--unit",
        "0100007",
    ];
    let document = serde_json::json!({
        "head_name": "Lê Văn An",
        "head_citizen_id": "001085012345",
        "phone": "0912345678",
        "account_number": null,
        "members": [{"name": "Lê Thị Hoa", "citizen_id": "001190000001", "relation": "vợ"}],
    });
    let register = |document: &[u8], args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ansinh"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(staff)
            .args(args)
            .args(["household", "register", "--id", "0100007-000001"])
            .args(["--area", "rural", "--on", "2026-01-05", "--personal", "-"])
            .env_remove("ANSINH_NATS_URL")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The kernel lets `spawn` return once the new program replaced this one, a
        // moment before it lays out its arguments, which read as empty until then.
        const CMDLINE_READS_MAX: usize = 100_000;
        let cmdline = (0..CMDLINE_READS_MAX)
            .map(|_| std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap())
            .find(|cmdline| !cmdline.is_empty())
            .expect("the process's arguments");
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(document).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        (
            cmdline,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // Not the API's object: refused as an argument (exit 2), naming the member.
    let mut unknown = document.clone();
    unknown["nickname"] = "An".into();
    let (_, code, out) = register(unknown.to_string().as_bytes(), &["--json"]);
    assert_eq!(code, Some(2), "{out}");
    let refusal = last_json(&out);
    assert_eq!(refusal["error"], "InvalidArgument", "{out}");
    assert!(
        refusal["message"].as_str().unwrap().contains("nickname"),
        "{out}"
    );
    let (cmdline, code, out) = register(document.to_string().as_bytes(), &[]);
    assert!(
        cmdline.contains("--personal -"),
        "{cmdline:?} {code:?} {out}"
    );
    for secret in ["001085012345", "001190000001", "0912345678", "Lê"] {
        assert!(!cmdline.contains(secret), "{cmdline}");
    }
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("recorded:"), "{out}");
    let mut show = staff.to_vec();
    show.extend_from_slice(&["--json", "household", "show", "0100007-000001"]);
    let (ok, out) = ansinh(dir.path(), &show);
    assert!(ok, "{out}");
    assert_eq!(last_json(&out)["household"]["members"], 2, "{out}");
    // The registration and nothing else: the refused document appended nothing.
    assert!(events_of(dir.path(), "01").contains(": 1 events"));
    // A member change gives the whole list as it now is, as over HTTP: a birth.
    let mut born = document.clone();
    born["members"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "Lê Minh", "relation": "con"}));
    let mut child = Command::new(env!("CARGO_BIN_EXE_ansinh"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(staff)
        .args(["household", "change-members", "--id", "0100007-000001"])
        .args(["--on", "2026-03-01", "--reason", "birth", "--personal", "-"])
        .env_remove("ANSINH_NATS_URL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(born.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let (ok, out) = ansinh(dir.path(), &show);
    assert!(ok, "{out}");
    assert_eq!(last_json(&out)["household"]["members"], 3, "{out}");
}

/// `household move --json` prints one document, both halves' receipts and the key the
/// caller gave or was given; retried with that key, the move is answered with its
/// receipts (exit 0, `duplicate`), not moved again or refused.
#[test]
fn a_move_prints_one_document_with_the_key_that_retries_it() {
    let dir = tempfile::tempdir().unwrap();
    let officer = as_staff(dir.path(), "credit-officer", "0100007");
    let (ok, out) = officer(&[
        "household",
        "register",
        "--id",
        "0100007-000001",
        "--area",
        "rural",
        "--on",
        "2026-01-05",
        "--head-name",
        "Lê Văn An",
        "--head-citizen-id",
        "001085012345",
    ]);
    assert!(ok, "{out}");
    let move_ = |key: Option<&str>| {
        let mut a = vec!["--json"];
        if let Some(key) = key {
            a.extend_from_slice(&["--idempotency-key", key]);
        }
        a.extend_from_slice(&[
            "household",
            "move",
            "--from",
            "0100007-000001",
            "--to",
            "7900007-000001",
            "--area",
            "urban",
            "--on",
            "2026-06-01",
        ]);
        let (ok, out) = officer(&a);
        assert!(ok, "{out}");
        serde_json::from_str::<serde_json::Value>(&out).expect("one JSON document")
    };
    let moved = move_(None);
    assert_eq!(moved["moved_out"]["partition"], "01", "{moved}");
    assert_eq!(moved["moved_in"]["partition"], "79", "{moved}");
    assert_eq!(moved["duplicate"], false, "{moved}");
    let key = moved["idempotency_key"].as_str().unwrap().to_owned();
    let again = move_(Some(&key));
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(
        again["moved_in"]["hash"], moved["moved_in"]["hash"],
        "{again}"
    );
}

/// The review's and the loan's arguments go through the parsers the API's fields go
/// through: a savings group's name as its members write it is accepted as over HTTP,
/// and a repeated indicator, a signed year or a padded term is refused as the argument
/// it is (exit 2, InvalidArgument naming it), before anything is read or recorded.
#[test]
fn review_and_loan_arguments_are_read_by_the_apis_parsers() {
    let dir = tempfile::tempdir().unwrap();
    let officer = as_staff(dir.path(), "credit-officer", "0100007");
    let (ok, out) = officer(&[
        "household",
        "register",
        "--id",
        "0100007-000001",
        "--area",
        "rural",
        "--on",
        "2026-01-05",
        "--head-name",
        "Lê Văn An",
        "--head-citizen-id",
        "001085012345",
    ]);
    assert!(ok, "{out}");
    let classify = |deprived: &str, year: &str| {
        let mut a = vec!["--json"];
        a.extend_from_slice(&[
            "--as",
            "co:1",
            "--role",
            "credit-officer",
            "--unit",
            "0100007",
        ]);
        a.extend_from_slice(&[
            "review",
            "classify",
            "--household",
            "0100007-000001",
            "--income",
            "1200000",
            "--area",
            "rural",
            "--deprived",
            deprived,
            "--year",
            year,
            "--on",
            "2026-01-10",
        ]);
        exit_and_stdout(dir.path(), &a)
    };
    for (deprived, year, argument) in [
        ("employment,employment,nutrition", "2026", "--deprived"),
        ("employment,nutrition,drinking_water", "+2026", "--year"),
    ] {
        let (code, out) = classify(deprived, year);
        assert_eq!(code, Some(2), "{out}");
        let refusal = last_json(&out);
        assert_eq!(refusal["error"], "InvalidArgument", "{out}");
        assert!(
            refusal["argument"].as_str().unwrap().contains(argument),
            "{out}"
        );
    }
    let (code, out) = classify("employment,nutrition,drinking_water", "2026");
    assert_eq!(code, Some(0), "{out}");
    let approve = |term: &str| {
        let mut a = vec!["--json"];
        a.extend_from_slice(&[
            "--as",
            "co:1",
            "--role",
            "credit-officer",
            "--unit",
            "0100007",
        ]);
        a.extend_from_slice(&[
            "loans",
            "approve",
            "--household",
            "0100007-000001",
            "--programme",
            "POOR_HOUSEHOLD",
            "--amount",
            "50000000",
            "--term-months",
            term,
            "--savings-group",
            "Tổ TK 01",
            "--entrusted",
            "womens-union",
            "--on",
            "2026-02-02",
            "--reason",
            "credit board 2/2026",
        ]);
        exit_and_stdout(dir.path(), &a)
    };
    let (code, out) = approve("036");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        last_json(&out)["argument"]
            .as_str()
            .unwrap()
            .contains("--term-months"),
        "{out}"
    );
    let (code, out) = approve("36");
    assert_eq!(code, Some(0), "{out}");
    // Registration, the decision, the approval: the refused commands added nothing.
    assert!(events_of(dir.path(), "01").contains(": 3 events"));
}
