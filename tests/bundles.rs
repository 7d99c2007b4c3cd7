//! Auditor bundles against a real nats-server: export, offline verification, the
//! balance statement, the CSV, and refusal of any changed byte.

mod common;

use ansinh::bundle::export::{self, ExportError, ExportRequest};
use ansinh::bundle::{self, BundleError, BundleFiles, Scope};
use ansinh::chain::Partition;
use ansinh::checkpoint::{Auditor, CheckpointConfig, Checkpointer, rotate_key};
use ansinh::log::{Draft, Ledger, LogConfig};
use ansinh::proto::{self, envelope::Payload};
use rust_decimal::Decimal;

use common::*;

const H1: &str = "0100007-000001";
const H2: &str = "0100007-000002";
const OTHER_COMMUNE: &str = "0100009-000001";

fn draft(household: &str, key: &str, actor: &str, payload: Payload) -> Draft {
    let commune = &household[..7];
    let mut subjects = vec![
        format!("household:{household}"),
        format!("commune:{commune}"),
    ];
    if let Some(loan) = loan_number(&payload) {
        subjects.push(format!("loan:01-L{loan}"));
    }
    Draft {
        partition: Partition::new("01").unwrap(),
        actor: proto::Actor {
            id: actor.into(),
            role: "credit_officer".into(),
            unit: commune.into(),
        },
        idempotency_key: key.into(),
        correlation_id: String::new(),
        request_fingerprint: None,
        subjects,
        payload,
    }
}

fn loan_number(payload: &Payload) -> Option<u64> {
    match payload {
        Payload::LoanApproved(e) => Some(e.loan_number),
        Payload::LoanTrancheDisbursed(e) => Some(e.loan_number),
        Payload::LoanRepaymentReceived(e) => Some(e.loan_number),
        Payload::LoanPostingReversed(e) => Some(e.loan_number),
        _ => None,
    }
}

fn disbursed(loan: u64, amount: &str, on: &str) -> Payload {
    Payload::LoanTrancheDisbursed(proto::LoanTrancheDisbursed {
        loan_number: loan,
        amount: amount.into(),
        channel: "CommuneTransactionPoint".into(),
        effective_on: on.into(),
        ..Default::default()
    })
}

fn repaid(loan: u64, principal: &str, interest: &str, on: &str) -> Payload {
    let total: Decimal =
        principal.parse::<Decimal>().unwrap() + interest.parse::<Decimal>().unwrap();
    Payload::LoanRepaymentReceived(proto::LoanRepaymentReceived {
        loan_number: loan,
        amount: total.to_string(),
        to_interest: interest.into(),
        to_principal: principal.into(),
        effective_on: on.into(),
        ..Default::default()
    })
}

fn assistance(instruction: &str, amount: &str, on: &str) -> Payload {
    Payload::PaymentRecorded(proto::PaymentRecorded {
        kind: "GatewayPostAccepted".into(),
        effective_on: on.into(),
        instruction_id: instruction.into(),
        gateway_id: "vnpost".into(),
        amount: amount.into(),
        postings: vec![
            proto::Posting {
                account: "PaidToBeneficiaries".into(),
                debit: amount.into(),
                credit: "0".into(),
            },
            proto::Posting {
                account: "BudgetReserved".into(),
                debit: "0".into(),
                credit: amount.into(),
            },
        ],
        ..Default::default()
    })
}

fn note(text: &str) -> Payload {
    Payload::Note(proto::Note { text: text.into() })
}

struct World {
    log: LogConfig,
    config: CheckpointConfig,
    ledger: Ledger,
    dir: tempfile::TempDir,
}

impl World {
    async fn checkpoint(&self) {
        let mut c = Checkpointer::open(
            client().await,
            self.ledger.clone(),
            self.config.clone(),
            self.dir.path(),
        )
        .await
        .unwrap();
        for (partition, outcome) in c.checkpoint_all().await.unwrap() {
            outcome.unwrap_or_else(|e| panic!("checkpoint of {partition}: {e}"));
        }
    }

    async fn export(&self, scope: Scope) -> Result<BundleFiles, ExportError> {
        let auditor = Auditor::open(client().await, self.log.clone(), self.config.clone())
            .await
            .unwrap();
        export::export(
            &auditor,
            &ExportRequest {
                scope,
                from: None,
                to: None,
            },
        )
        .await
    }

    async fn append(&self, d: Draft) {
        self.ledger.append_unchecked(d).await.unwrap();
    }
}

/// A household with a loan (disbursed, repaid twice, one repayment reversed), social
/// assistance, a note with diacritics; a neighbour; a household of another commune.
async fn world() -> World {
    let (log, config) = fresh_checkpointed();
    let (ledger, dir) = ledger(&log).await;
    let w = World {
        log,
        config,
        ledger,
        dir,
    };
    let officer = "staff:0100007-can-bo";
    for (i, (h, p)) in [
        (H1, approved(1, H1, "10000000")),
        (OTHER_COMMUNE, approved(2, OTHER_COMMUNE, "5000000")),
        (H1, disbursed(1, "10000000", "2026-02-05")),
        (H2, assistance("pay:e2:2026-03:1", "500000", "2026-03-10")),
        (H1, repaid(1, "1000000", "55000", "2026-03-05")),
        (H1, repaid(1, "500000", "49500", "2026-04-05")),
        (H1, repaid(1, "700000", "45000", "2026-04-20")),
        (H1, assistance("pay:e1:2026-03:1", "500000", "2026-03-10")),
        (H1, assistance("pay:e1:2026-04:1", "500000", "2026-04-10")),
    ]
    .into_iter()
    .enumerate()
    {
        w.append(draft(h, &format!("k{i}"), officer, p)).await;
    }
    // The third repayment (sequence 7) was keyed in error and is reversed.
    w.append(draft(
        H1,
        "reverse",
        officer,
        Payload::LoanPostingReversed(proto::LoanPostingReversed {
            loan_number: 1,
            original_sequence: 7,
            effective_on: "2026-04-21".into(),
            ..Default::default()
        }),
    ))
    .await;
    w.append(draft(
        H1,
        "note",
        "Hội Liên hiệp Phụ nữ Xã Tân Phú",
        note("Xã Tân Phú, \"họp\" tổ tiết kiệm"),
    ))
    .await;
    w.checkpoint().await;
    w
}

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_household_bundle_verifies_offline_and_its_balances_are_recomputed() {
    let w = world().await;
    let files = w.export(Scope::Household(H1.into())).await.unwrap();
    // Through the file system, as an auditor receives it.
    let out = tempfile::tempdir().unwrap();
    files.write(out.path()).unwrap();
    let read = BundleFiles::read(out.path()).unwrap();
    assert_eq!(read, files);
    let verified = bundle::verify(&read, &[]).unwrap();
    // H1's events only: approval, disbursement, 3 repayments, 2 payments, reversal, note.
    assert_eq!(verified.events, 9);
    assert_eq!(verified.checkpoint.tree_size, 11);

    let statement: bundle::Statement = serde_json::from_slice(&files.statement).unwrap();
    assert_eq!(statement.checkpoint, verified.checkpoint);
    assert_eq!(
        statement.households.len(),
        1,
        "only H1 has money in its bundle"
    );
    let h = &statement.households[H1];
    let loan = &h.loans["01-L1"];
    assert_eq!(loan.disbursed, d("10000000"));
    // The reversed repayment counts for nothing.
    assert_eq!(loan.principal_repaid, d("1500000"));
    assert_eq!(loan.principal_outstanding, d("8500000"));
    assert_eq!(loan.interest_paid, d("104500"));
    assert_eq!(h.repayments_received_by_month["2026-03"], d("1055000"));
    assert_eq!(h.repayments_received_by_month["2026-04"], d("549500"));
    assert_eq!(h.assistance_paid_by_month["2026-03"], d("500000"));
    assert_eq!(h.assistance_paid_by_month["2026-04"], d("500000"));

    // Pinning the ledger's first key is accepted; pinning another key is refused.
    let manifest: bundle::Manifest = serde_json::from_slice(&files.manifest).unwrap();
    assert!(bundle::verify(&read, &manifest.key_ids[..1]).is_ok());
    assert!(matches!(
        bundle::verify(&read, &["0123456789abcdef".to_string()]),
        Err(BundleError::Untrusted { .. })
    ));
    // A cosigner pinned that did not cosign the checkpoint: refused.
    let pins = ansinh::checkpoint::proofs::CosignerPins {
        keys: vec!["ab".repeat(32)],
        required: None,
    };
    assert!(matches!(
        bundle::verify_pinned(&read, &[], &pins),
        Err(BundleError::Checkpoint {
            cause: ansinh::checkpoint::proofs::CheckError::CosignersMissing { .. },
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commune_bundle_holds_its_households_and_no_other() {
    let w = world().await;
    let files = w.export(Scope::Commune("0100007".into())).await.unwrap();
    let verified = bundle::verify(&files, &[]).unwrap();
    assert_eq!(verified.events, 10, "H1's nine and H2's payment");
    let statement: bundle::Statement = serde_json::from_slice(&files.statement).unwrap();
    let households: Vec<&String> = statement.households.keys().collect();
    assert_eq!(households, [H1, H2]);
    assert!(!String::from_utf8_lossy(&files.csv).contains(OTHER_COMMUNE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_changed_byte_of_a_bundle_is_refused() {
    let w = world().await;
    let files = w.export(Scope::Household(H1.into())).await.unwrap();
    assert!(bundle::verify(&files, &[]).is_ok());
    let mut checked = 0usize;
    for index in 0..files.files().len() {
        let (name, bytes) = files.files()[index];
        for at in 0..bytes.len() {
            for mask in [0x01u8, 0x80] {
                let mut changed = files.clone();
                changed.files_mut()[index].1[at] ^= mask;
                let result = bundle::verify(&changed, &[]);
                assert!(
                    result.is_err(),
                    "{name}: byte {at} ^ {mask:#x} changed and the bundle still verified"
                );
                checked += 1;
            }
        }
        // Dropping the last byte or appending one is refused as well.
        let mut shorter = files.clone();
        shorter.files_mut()[index].1.pop();
        assert!(bundle::verify(&shorter, &[]).is_err(), "{name} truncated");
        let mut longer = files.clone();
        longer.files_mut()[index].1.push(b'\n');
        assert!(bundle::verify(&longer, &[]).is_err(), "{name} extended");
    }
    assert!(
        checked > 10_000,
        "every file was covered ({checked} changes)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_failure_is_named() {
    let w = world().await;
    let files = w.export(Scope::Household(H1.into())).await.unwrap();
    let mut changed = files.clone();
    // The last byte of the last event is the note's text: its hash no longer matches.
    let last = changed.events.len() - 1;
    changed.events[last] ^= 0x01;
    let e = bundle::verify(&changed, &[]).unwrap_err();
    assert!(
        matches!(
            e,
            BundleError::Proof {
                index: 8,
                sequence: 11,
                ..
            }
        ),
        "{e}"
    );
    let mut changed = files.clone();
    let text = String::from_utf8(changed.statement.clone()).unwrap();
    changed.statement = text.replacen("8500000", "8400000", 1).into_bytes();
    let e = bundle::verify(&changed, &[]).unwrap_err();
    assert!(matches!(e, BundleError::Statement(_)), "{e}");
    assert!(e.to_string().contains(H1), "{e}");
}

/// BUNDLES.md §3: one byte form per file. An amount is a decimal string, and
/// "10000000.0", "10000000.000" or "-0" have the value of "10000000" or "0": the
/// statement must still be refused, or two verifiers of one bundle disagree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_amount_written_in_another_form_is_refused() {
    let w = world().await;
    let files = w.export(Scope::Household(H1.into())).await.unwrap();
    let text = String::from_utf8(files.statement.clone()).unwrap();
    assert!(text.contains("\"disbursed\": \"10000000\""), "{text}");
    assert!(text.contains("\"written_off\": \"0\""), "{text}");
    for (from, to) in [
        (
            "\"disbursed\": \"10000000\"",
            "\"disbursed\": \"10000000.0\"",
        ),
        (
            "\"disbursed\": \"10000000\"",
            "\"disbursed\": \"10000000.000\"",
        ),
        ("\"written_off\": \"0\"", "\"written_off\": \"-0\""),
        ("\"written_off\": \"0\"", "\"written_off\": \"0.0\""),
        ("\"2026-03\": \"1055000\"", "\"2026-03\": \"1055000.00\""),
    ] {
        let mut changed = files.clone();
        changed.statement = text.replacen(from, to, 1).into_bytes();
        assert_ne!(changed.statement, files.statement, "{to}");
        let e = bundle::verify(&changed, &[]).unwrap_err();
        assert!(
            matches!(
                e,
                BundleError::Statement(_) | BundleError::NotCanonical { .. }
            ),
            "{to}: {e}"
        );
    }
}

/// BUNDLES.md: the archive the staff API serves verifies, and so does the bundle
/// directory packed again with `tar --format=ustar`; GNU tar's own format, or anything
/// after the end of the archive, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_verifies_as_written_or_repacked_as_ustar_and_nothing_else() {
    use ansinh::bundle::archive;
    let w = world().await;
    let files = w.export(Scope::Household(H1.into())).await.unwrap();
    let name = archive::directory_name(H1);
    let out = tempfile::tempdir().unwrap();
    let served = out.path().join("served.tar");
    std::fs::write(&served, archive::to_tar(&files, &name)).unwrap();
    let read = BundleFiles::read_archive(&served).unwrap();
    assert_eq!(read, files);
    bundle::verify(&read, &[]).unwrap();

    files.write(&out.path().join(&name)).unwrap();
    let tar = |format: &str, to: &str| {
        let to = out.path().join(to);
        let status = std::process::Command::new("tar")
            .arg(format!("--format={format}"))
            .arg("-cf")
            .arg(&to)
            .arg("-C")
            .arg(out.path())
            .arg(&name)
            .status()
            .unwrap();
        assert!(status.success());
        to
    };
    let repacked = BundleFiles::read_archive(&tar("ustar", "ustar.tar")).unwrap();
    assert_eq!(repacked, files);
    bundle::verify(&repacked, &[]).unwrap();
    assert!(matches!(
        BundleFiles::read_archive(&tar("gnu", "gnu.tar")),
        Err(BundleError::Archive { .. })
    ));

    let mut appended = std::fs::read(&served).unwrap();
    appended.extend_from_slice(&archive::to_tar(&files, "other"));
    std::fs::write(&served, appended).unwrap();
    assert!(matches!(
        BundleFiles::read_archive(&served),
        Err(BundleError::Archive { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_not_yet_checkpointed_are_refused_until_a_checkpoint_covers_them() {
    let w = world().await;
    w.append(draft(
        H1,
        "late",
        "staff:x",
        repaid(1, "100000", "0", "2026-05-05"),
    ))
    .await;
    match w.export(Scope::Household(H1.into())).await {
        Err(ExportError::NotCovered {
            partition,
            uncovered,
            first,
            covered,
        }) => {
            assert_eq!(
                (partition.as_str(), uncovered, first, covered),
                ("01", 1, 12, 11)
            );
        }
        other => panic!("expected NotCovered, got {other:?}"),
    }
    w.checkpoint().await;
    let files = w.export(Scope::Household(H1.into())).await.unwrap();
    assert_eq!(bundle::verify(&files, &[]).unwrap().events, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_signed_after_a_key_rotation_carries_the_history() {
    let w = world().await;
    rotate_key(&w.ledger, &w.config, w.dir.path())
        .await
        .unwrap();
    w.append(draft(H1, "after", "staff:x", note("after the rotation")))
        .await;
    w.checkpoint().await;
    let files = w.export(Scope::Household(H1.into())).await.unwrap();
    let manifest: bundle::Manifest = serde_json::from_slice(&files.manifest).unwrap();
    assert_eq!(manifest.key_ids.len(), 2);
    assert_eq!(manifest.signed_by, manifest.key_ids[1]);
    let verified = bundle::verify(&files, &manifest.key_ids[..1]).unwrap();
    assert_eq!(verified.first_key, manifest.key_ids[0]);
}

/// A bundle made whole by someone with a ledger of their own (their key, their key
/// history, their checkpoints) checks against the keys it carries. Without `--trust`
/// verify-bundle must not call that OK: it says UNANCHORED, `keys_pinned: false`, and
/// exits 3. Pinned to the real ledger's key it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_made_bundle_is_unanchored_without_trust_and_refused_when_pinned() {
    let real = world().await;
    let forger = world().await;
    let public_key = |w: &World| {
        let key = ansinh::checkpoint::load_key(
            &w.dir.path().join(ansinh::checkpoint::keys::LEDGER_KEY_FILE),
        )
        .unwrap();
        hex::encode(key.public_key())
    };
    let (real_key, forger_key) = (public_key(&real), public_key(&forger));
    assert_ne!(real_key, forger_key);
    let made = forger.export(Scope::Household(H1.into())).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    made.write(out.path()).unwrap();
    let verify_bundle = |more: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ansinh"))
            .args(["audit", "verify-bundle"])
            .arg(out.path())
            .args(more)
            .env_remove("ANSINH_NATS_URL")
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };

    let (code, text) = verify_bundle(&[]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.starts_with("UNANCHORED bundle"), "{text}");
    assert!(text.contains("no ledger key was pinned"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("OK")), "{text}");
    let (code, text) = verify_bundle(&["--json"]);
    assert_eq!(code, Some(3), "{text}");
    let verdict: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (&verdict["ok"], &verdict["verdict"], &verdict["keys_pinned"]),
        (
            &serde_json::json!(false),
            &serde_json::json!("unanchored"),
            &serde_json::json!(false)
        ),
        "{verdict}"
    );

    let (code, text) = verify_bundle(&["--trust", &real_key]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.starts_with("REJECTED: "), "{text}");
    let (code, text) = verify_bundle(&["--json", "--trust", &real_key]);
    assert_eq!(code, Some(1), "{text}");
    let verdict: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (&verdict["ok"], &verdict["verdict"], &verdict["keys_pinned"]),
        (
            &serde_json::json!(false),
            &serde_json::json!("rejected"),
            &serde_json::json!(true)
        ),
        "{verdict}"
    );
    // What pinning decides is whose key signed, not whether the files agree: the
    // forger's own key accepts the forger's bundle.
    let (code, text) = verify_bundle(&["--trust", &forger_key]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("OK bundle"), "{text}");
}

/// The scope ties a bundle to a partition: events of province 01's log that name a
/// household of province 79 prove nothing about that household, whose history is in
/// partition 79. A bundle re-scoped to it, every other file consistent, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_scoped_to_another_provinces_household_is_refused() {
    const HERE: &str = "0100007-000077";
    const ELSEWHERE: &str = "7900001-000001";
    let w = world().await;
    let mut both = draft(HERE, "both", "staff:x", note("names two households"));
    both.subjects.push(format!("household:{ELSEWHERE}"));
    w.append(both).await;
    w.checkpoint().await;
    let files = w.export(Scope::Household(HERE.into())).await.unwrap();
    bundle::verify(&files, &[]).expect("the bundle as exported verifies");
    let mut moved = files.clone();
    let mut manifest: bundle::Manifest = serde_json::from_slice(&files.manifest).unwrap();
    manifest.scope = Scope::Household(ELSEWHERE.into());
    moved.manifest = bundle::canonical_json(&manifest);
    let mut statement: bundle::Statement = serde_json::from_slice(&files.statement).unwrap();
    statement.scope = Scope::Household(ELSEWHERE.into());
    moved.statement = bundle::canonical_json(&statement);
    let e = bundle::verify(&moved, &[]).unwrap_err();
    assert!(
        matches!(
            &e,
            BundleError::OutsidePartition { scope_partition, checkpoint_partition }
                if scope_partition == "79" && checkpoint_partition == "01"
        ),
        "{e}"
    );
}

/// A bundle proves at least one event: one emptied of its events, every other file
/// consistent with that, is refused (the exporter never writes one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_with_no_event_is_refused() {
    let w = world().await;
    let files = w.export(Scope::Household(H1.into())).await.unwrap();
    let mut empty = files.clone();
    empty.events = Vec::new();
    empty.proofs = bundle::canonical_json(&Vec::<ansinh::merkle::InclusionProof>::new());
    let mut manifest: bundle::Manifest = serde_json::from_slice(&files.manifest).unwrap();
    manifest.events.clear();
    empty.manifest = bundle::canonical_json(&manifest);
    let mut statement: bundle::Statement = serde_json::from_slice(&files.statement).unwrap();
    statement.households.clear();
    empty.statement = bundle::canonical_json(&statement);
    empty.csv = bundle::statement::render_csv(&[]);
    let e = bundle::verify(&empty, &[]).unwrap_err();
    assert!(matches!(e, BundleError::NoEvents), "{e}");
}

/// Splits one CSV line (RFC 4180 quoting) into fields.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_keeps_vietnamese_diacritics_for_spreadsheets() {
    let w = world().await;
    let files = w.export(Scope::Household(H1.into())).await.unwrap();
    assert!(
        files.csv.starts_with(b"\xEF\xBB\xBF"),
        "UTF-8 byte order mark"
    );
    let text = std::str::from_utf8(&files.csv[3..]).unwrap();
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 1 + 9, "header and one row per event");
    let header = csv_fields(lines[0]);
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let note = csv_fields(lines[9]);
    assert_eq!(note[column("actor")], "Hội Liên hiệp Phụ nữ Xã Tân Phú");
    assert_eq!(note[column("detail")], "Xã Tân Phú, \"họp\" tổ tiết kiệm");
    assert_eq!(note[column("household")], H1);
    let repayment = csv_fields(lines[3]);
    assert_eq!(
        repayment[column("event_type")],
        "ansinh.v1.LoanRepaymentReceived"
    );
    assert_eq!(repayment[column("amount_vnd")], "1055000");
    assert_eq!(repayment[column("principal_vnd")], "1000000");
    assert_eq!(repayment[column("interest_vnd")], "55000");
    assert_eq!(repayment[column("event_date")], "2026-03-05");
    assert_eq!(repayment[column("loan")], "01-L1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_and_statement_match_their_json_schemas() {
    let w = world().await;
    let files = w.export(Scope::Household(H1.into())).await.unwrap();
    let schema = |name: &str| -> serde_json::Value {
        let path = format!("{}/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    for (name, bytes) in [
        ("bundle-manifest.schema.json", &files.manifest),
        ("balance-statement.schema.json", &files.statement),
    ] {
        let validator = jsonschema::draft202012::new(&schema(name)).unwrap();
        let document: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&document)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        // Strict: an extra field is refused, as the verifier refuses it.
        let mut extra = document.clone();
        extra["extra"] = serde_json::json!(1);
        assert!(!validator.is_valid(&extra), "{name} accepts an extra field");
    }
}
