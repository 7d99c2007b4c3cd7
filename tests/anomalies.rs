//! `audit anomalies` over a seeded log on a real nats-server: each kind is found in a
//! dataset that has it, and a clean dataset (including a move between partitions and
//! a settled payment) yields none.

mod common;

use ansinh::anomalies::{Anomaly, AnomalyReport, scan};
use ansinh::chain::Partition;
use ansinh::log::{Draft, Ledger, LogConfig};
use ansinh::proto::{self, envelope::Payload};
use ansinh::verify::VerifyError;
use chrono::NaiveDate;

use common::*;

struct Seed {
    ledger: Ledger,
    log: LogConfig,
    _dir: tempfile::TempDir,
    n: u64,
}

impl Seed {
    async fn new() -> Self {
        let log = fresh_log();
        let (ledger, dir) = ledger(&log).await;
        Self {
            ledger,
            log,
            _dir: dir,
            n: 0,
        }
    }

    /// Appends `payload` concerning `household` to the household's province.
    async fn add(&mut self, household: &str, payload: Payload) {
        self.n += 1;
        let draft = Draft {
            partition: Partition::new(&household[..2]).unwrap(),
            actor: proto::Actor {
                id: "staff:seed".into(),
                role: "credit_officer".into(),
                unit: household[..7].into(),
            },
            idempotency_key: format!("seed-{}", self.n),
            correlation_id: String::new(),
            request_fingerprint: None,
            subjects: vec![format!("household:{household}")],
            payload,
        };
        self.ledger.append_unchecked(draft).await.unwrap();
    }

    async fn scan(&self, as_of: &str, pending_days: i64) -> AnomalyReport {
        let mut stream = stream_of(&self.log).await;
        scan(
            &mut stream,
            &self.log,
            &keys_partition(),
            None,
            date(as_of),
            pending_days,
            |_| {},
        )
        .await
        .unwrap()
    }
}

fn date(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

fn index(n: u8) -> bytes::Bytes {
    vec![n; 32].into()
}

fn registered(household: &str, members: &[u8]) -> Payload {
    Payload::HouseholdRegistered(proto::HouseholdRegistered {
        household_id: household.into(),
        commune_code: household[..7].into(),
        area: "rural".into(),
        members: members.len() as u32,
        citizen_indexes: members.iter().map(|m| index(*m)).collect(),
        registered_on: "2026-01-05".into(),
        ..Default::default()
    })
}

fn standing(household: &str, status: &str) -> Payload {
    Payload::EligibilityDecided(proto::EligibilityDecided {
        household_id: household.into(),
        review_year: 2026,
        class: status.into(),
        status: status.into(),
        decided_on: "2026-01-10".into(),
        valid_from: "2026-01-01".into(),
        valid_to: "2026-12-31".into(),
        ..Default::default()
    })
}

fn disbursed(loan: u64, amount: &str, on: &str) -> Payload {
    Payload::LoanTrancheDisbursed(proto::LoanTrancheDisbursed {
        loan_number: loan,
        amount: amount.into(),
        effective_on: on.into(),
        ..Default::default()
    })
}

fn repaid(loan: u64, amount: &str, on: &str) -> Payload {
    Payload::LoanRepaymentReceived(proto::LoanRepaymentReceived {
        loan_number: loan,
        amount: amount.into(),
        to_principal: amount.into(),
        effective_on: on.into(),
        ..Default::default()
    })
}

fn written_off(loan: u64, on: &str) -> Payload {
    Payload::LoanWrittenOff(proto::LoanWrittenOff {
        loan_number: loan,
        disaster_ref: "typhoon-yagi".into(),
        principal: "1000000".into(),
        effective_on: on.into(),
        ..Default::default()
    })
}

fn issued(instruction: &str, on: &str) -> Payload {
    Payload::PaymentRecorded(proto::PaymentRecorded {
        kind: "InstructionIssued".into(),
        instruction_id: instruction.into(),
        amount: "500000".into(),
        effective_on: on.into(),
        ..Default::default()
    })
}

fn settled(instruction: &str, on: &str) -> Payload {
    Payload::PaymentRecorded(proto::PaymentRecorded {
        kind: "GatewayPostAccepted".into(),
        instruction_id: instruction.into(),
        amount: "500000".into(),
        effective_on: on.into(),
        postings: vec![proto::Posting {
            account: "PaidToBeneficiaries".into(),
            debit: "500000".into(),
            credit: "0".into(),
        }],
        ..Default::default()
    })
}

/// A poor household borrowing within the cap and repaying; a family moving from
/// province 79 to 01 (the same citizens leave one household and join another); a
/// payment issued and settled.
async fn clean(s: &mut Seed) {
    let (a, b_old, b_new) = ("0100007-000001", "7900003-000001", "0100007-000002");
    s.add(a, registered(a, &[1, 2])).await;
    s.add(a, standing(a, "poor")).await;
    s.add(a, approved(1, a, "50000000")).await;
    s.add(a, disbursed(1, "50000000", "2026-02-05")).await;
    s.add(a, repaid(1, "1000000", "2026-03-05")).await;
    s.add(b_old, registered(b_old, &[3, 4])).await;
    s.add(
        b_old,
        Payload::HouseholdMovedOut(proto::HouseholdMovedOut {
            household_id: b_old.into(),
            to_household_id: b_new.into(),
            moved_on: "2026-02-01".into(),
            members: 2,
            citizen_indexes: vec![index(3), index(4)],
            ..Default::default()
        }),
    )
    .await;
    s.add(
        b_new,
        Payload::HouseholdMovedIn(proto::HouseholdMovedIn {
            household_id: b_new.into(),
            commune_code: "0100007".into(),
            area: "rural".into(),
            members: 2,
            citizen_indexes: vec![index(3), index(4)],
            moved_on: "2026-02-01".into(),
            from_household_id: b_old.into(),
            from_partition: "79".into(),
            ..Default::default()
        }),
    )
    .await;
    s.add(a, issued("pay:e1:2026-03:1", "2026-03-01")).await;
    s.add(a, settled("pay:e1:2026-03:1", "2026-03-02")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_dataset_yields_no_anomaly() {
    let mut s = Seed::new().await;
    clean(&mut s).await;
    let report = s.scan("2026-03-20", 10).await;
    assert_eq!(report.events, 10);
    assert!(report.anomalies.is_empty(), "{:#?}", report.anomalies);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_anomaly_is_found() {
    let mut s = Seed::new().await;
    clean(&mut s).await;
    // 1. Citizen 9 in a household of province 01 and one of province 79.
    let (x1, x2) = ("0100007-000010", "7900003-000010");
    s.add(x1, registered(x1, &[9])).await;
    s.add(x2, registered(x2, &[8, 9])).await;
    // 2. A loan of the poor-household programme paid to an average household.
    let avg = "0100007-000020";
    s.add(avg, registered(avg, &[20])).await;
    s.add(avg, standing(avg, "average")).await;
    s.add(avg, approved(2, avg, "20000000")).await;
    s.add(avg, disbursed(2, "20000000", "2026-02-06")).await;
    // 3. A loan above the programme's cap of 100,000,000.
    let big = "0100007-000030";
    s.add(big, registered(big, &[30])).await;
    s.add(big, standing(big, "poor")).await;
    s.add(big, approved(3, big, "150000000")).await;
    // 4. A repayment after the loan was written off.
    let off = "0100007-000040";
    s.add(off, registered(off, &[40])).await;
    s.add(off, standing(off, "poor")).await;
    s.add(off, approved(4, off, "10000000")).await;
    s.add(off, disbursed(4, "10000000", "2026-02-07")).await;
    s.add(off, written_off(4, "2026-09-10")).await;
    s.add(off, repaid(4, "200000", "2026-10-05")).await;
    // 5. Social assistance paid after the household's only member died.
    let dead = "0100007-000050";
    s.add(dead, registered(dead, &[50])).await;
    s.add(
        dead,
        Payload::MemberDied(proto::MemberDied {
            household_id: dead.into(),
            citizen_index: index(50),
            died_on: "2026-04-01".into(),
            members: 0,
            ..Default::default()
        }),
    )
    .await;
    s.add(dead, issued("pay:e5:2026-05:1", "2026-05-01")).await;
    s.add(dead, settled("pay:e5:2026-05:1", "2026-05-10")).await;
    // 6. An instruction without a result for 19 days; another for only 5.
    s.add(avg, issued("pay:e2:2026-10:1", "2026-10-01")).await;
    s.add(avg, issued("pay:e2:2026-10:2", "2026-10-15")).await;
    // 7. Assistance paid in province 79 for the household that moved out of it on
    //    2026-02-01.
    let gone = "7900003-000001";
    s.add(gone, issued("pay:e7:2026-03:1", "2026-03-01")).await;
    s.add(gone, settled("pay:e7:2026-03:1", "2026-03-10")).await;

    let report = s.scan("2026-10-20", 10).await;
    let kinds: std::collections::BTreeSet<&str> =
        report.anomalies.iter().map(|a| a.kind()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "after_death",
            "after_write_off",
            "assistance_to_non_resident",
            "citizen_in_two_households",
            "instruction_pending",
            "loan_above_cap",
            "paid_while_ineligible"
        ],
        "{:#?}",
        report.anomalies
    );
    assert_eq!(report.anomalies.len(), 7, "{:#?}", report.anomalies);
    for a in &report.anomalies {
        match a {
            Anomaly::CitizenInTwoHouseholds {
                citizen_index,
                households,
                at,
            } => {
                assert_eq!(citizen_index, &hex::encode([9u8; 32]));
                assert_eq!(households, &[x1, x2]);
                assert_eq!(at.partition, "79");
            }
            Anomaly::PaidWhileIneligible {
                household,
                standing,
                ..
            } => assert_eq!((household.as_str(), standing.as_str()), (avg, "average")),
            Anomaly::LoanAboveCap { household, cap, .. } => {
                assert_eq!(household, big);
                assert_eq!(cap.unwrap().to_string(), "100000000");
            }
            Anomaly::AfterWriteOff {
                loan, event_type, ..
            } => {
                assert_eq!(loan, "01-L4");
                assert_eq!(event_type, "ansinh.v1.LoanRepaymentReceived");
            }
            Anomaly::AfterDeath {
                household, date, ..
            } => assert_eq!((household.as_str(), date.as_str()), (dead, "2026-05-10")),
            Anomaly::InstructionPending {
                instruction, days, ..
            } => assert_eq!((instruction.as_str(), *days), ("pay:e2:2026-10:1", 19)),
            Anomaly::AssistanceToNonResident {
                household,
                residence,
                at,
                ..
            } => {
                assert_eq!(household, gone);
                assert_eq!(residence, "moved out on 2026-02-01");
                assert_eq!(at.partition, "79");
            }
            Anomaly::TransactionInTwoPartitions { .. } => panic!("no transaction twice: {a:?}"),
        }
    }
}

/// A settlement accepted from gateway "vcb" under its transaction `txn`, as the book
/// records it.
fn settled_by(instruction: &str, on: &str, txn: &str) -> Payload {
    let Payload::PaymentRecorded(mut p) = settled(instruction, on) else {
        unreachable!()
    };
    p.gateway_id = "vcb".into();
    p.body = Some(proto::payment_recorded::Body::GatewayPostAccepted(
        proto::GatewayPostAccepted {
            post: Some(proto::PaymentGatewayPost {
                gateway: "vcb".into(),
                instruction: instruction.into(),
                outcome: "Settled".into(),
                gateway_txn: txn.into(),
                amount: "500000".into(),
                beneficiary: None,
            }),
            instruction: instruction.into(),
            status_after: "Settled".into(),
            budget: None,
        },
    ));
    Payload::PaymentRecorded(p)
}

/// Instruction ids are numbered per partition: the same id in two provinces is two
/// instructions, and a result for one leaves the other pending. One bank transaction
/// accepted for instructions of two provinces (posts that raced past the ledger's
/// check) is found, naming where it was accepted first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instructions_are_per_partition_and_a_transaction_settles_one_of_them() {
    let mut s = Seed::new().await;
    let (here, there) = ("0100007-000001", "7900003-000001");
    s.add(here, registered(here, &[1])).await;
    s.add(there, registered(there, &[2])).await;
    s.add(here, issued("pay:1:2026-10:1", "2026-10-01")).await;
    s.add(there, issued("pay:1:2026-10:1", "2026-10-01")).await;
    s.add(here, settled_by("pay:1:2026-10:1", "2026-10-02", "VCB-9"))
        .await;
    let report = s.scan("2026-10-20", 10).await;
    assert_eq!(report.anomalies.len(), 1, "{:#?}", report.anomalies);
    match &report.anomalies[0] {
        Anomaly::InstructionPending {
            instruction, at, ..
        } => assert_eq!(
            (instruction.as_str(), at.partition.as_str()),
            ("pay:1:2026-10:1", "79")
        ),
        other => panic!("{other:?}"),
    }

    // The same transaction settles 79's instruction too.
    s.add(there, settled_by("pay:1:2026-10:1", "2026-10-03", "VCB-9"))
        .await;
    let report = s.scan("2026-10-20", 10).await;
    assert_eq!(report.anomalies.len(), 1, "{:#?}", report.anomalies);
    match &report.anomalies[0] {
        Anomaly::TransactionInTwoPartitions {
            gateway,
            transaction,
            outcome,
            first,
            at,
        } => {
            assert_eq!(
                (gateway.as_str(), transaction.as_str(), outcome.as_str()),
                ("vcb", "VCB-9", "Settled")
            );
            assert_eq!(
                (first.partition.as_str(), at.partition.as_str()),
                ("01", "79")
            );
            assert!(report.anomalies[0].concerns("01") && report.anomalies[0].concerns("79"));
        }
        other => panic!("{other:?}"),
    }
}

/// A recorded decision of `household` in the shape the book writes (the fields the scan
/// reads).
fn decided(household: &str, status: &str, valid: (&str, &str), escaped_until: &str) -> Payload {
    Payload::EligibilityDecided(proto::EligibilityDecided {
        household_id: household.into(),
        review_year: valid.0[..4].parse().unwrap(),
        class: if status == "escaped_poverty" {
            "average".into()
        } else {
            status.into()
        },
        status: status.into(),
        decided_on: valid.0.into(),
        valid_from: valid.0.into(),
        valid_to: valid.1.into(),
        escaped_until: escaped_until.into(),
        ..Default::default()
    })
}

/// An escaped-poverty loan runs on the window a household's escape opened, which later
/// reviews above the line carry on (`HouseholdStanding::statuses_on`): the book lends on
/// it, so the scan does not flag it, and flags it once the window has closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loan_within_a_carried_escaped_poverty_window_is_not_flagged() {
    let mut s = Seed::new().await;
    let h = "0100007-000060";
    s.add(h, registered(h, &[60])).await;
    // Given: poor, then escaped poverty until 2027-02-28, then average again on
    // 2025-01-10 (status average, the window carried);
    s.add(h, decided(h, "poor", ("2024-01-05", "2024-12-31"), ""))
        .await;
    s.add(
        h,
        decided(
            h,
            "escaped_poverty",
            ("2024-03-01", "2027-02-28"),
            "2027-02-28",
        ),
    )
    .await;
    s.add(
        h,
        decided(h, "average", ("2025-01-10", "2025-12-31"), "2027-02-28"),
    )
    .await;
    // when an escaped-poverty loan is disbursed inside the window, and after it,
    s.add(
        h,
        Payload::LoanApproved(proto::LoanApproved {
            loan_number: 1,
            household_id: h.into(),
            programme_id: "ESCAPED_POVERTY_HOUSEHOLD".into(),
            programme_version: 1,
            amount: "30000000".into(),
            term_months: 36,
            effective_on: "2025-05-20".into(),
            ..Default::default()
        }),
    )
    .await;
    s.add(h, disbursed(1, "20000000", "2025-06-01")).await;
    s.add(h, disbursed(1, "10000000", "2027-03-15")).await;
    // then only the disbursement after the window is flagged.
    let report = s.scan("2027-03-20", 10).await;
    assert_eq!(report.anomalies.len(), 1, "{:#?}", report.anomalies);
    match &report.anomalies[0] {
        Anomaly::PaidWhileIneligible {
            household,
            date,
            standing,
            ..
        } => assert_eq!(
            (household.as_str(), date.as_str(), standing.as_str()),
            (h, "2027-03-15", "")
        ),
        other => panic!("{other:?}"),
    }
}

/// A household of partition 01, then a foreign message there and an exclusion of it no
/// ledger key signed (`common::forge_an_exclusion`): the foreign message's stream
/// sequence.
async fn forged_exclusion(s: &mut Seed) -> u64 {
    let h = "0100007-000070";
    s.add(h, registered(h, &[70])).await;
    forge_an_exclusion(&s.ledger, &s.log, "01").await.foreign.0
}

/// An exclusion no ledger key signed lets no reader past its message: it is held with
/// it, so verify fails at the message (as `audit verify` and serve's periodic verify
/// report it), and so do the scans that read through it, each with the same verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusion_the_ledger_did_not_sign_fails_verify_and_every_scan() {
    // Given a foreign message and an exclusion of it with a made-up signature,
    let mut s = Seed::new().await;
    let foreign = forged_exclusion(&mut s).await;
    let keys = keys_partition();
    let not_the_ledgers = |e: &VerifyError| {
        matches!(
            e,
            VerifyError::Broken {
                partition,
                stream_sequence,
                ..
            } if partition == "01" && *stream_sequence == foreign
        )
    };
    // when the log is verified, or scanned for anomalies or decisions,
    let mut stream = stream_of(&s.log).await;
    let verdict = ansinh::verify::verify(&mut stream, &s.log, &keys, None, |_| {}).await;
    let scanned = scan(
        &mut stream,
        &s.log,
        &keys,
        None,
        date("2026-03-20"),
        10,
        |_| {},
    )
    .await;
    let recomputed = ansinh::recompute::recompute_eligibility(
        &mut stream,
        &s.log,
        &keys,
        Some(&Partition::new("01").unwrap()),
        |_| {},
    )
    .await;
    // then each fails at the message the exclusion names.
    assert!(
        verdict.as_ref().is_err_and(not_the_ledgers),
        "{:?}",
        verdict.map(|r| r.exclusions)
    );
    assert!(
        scanned.as_ref().is_err_and(not_the_ledgers),
        "{:?}",
        scanned.map(|r| r.events)
    );
    assert!(
        recomputed.as_ref().is_err_and(not_the_ledgers),
        "{:?}",
        recomputed.map(|r| r.decisions)
    );
}

/// A scan for one partition lists that partition's anomalies however many another
/// partition has: the listing bound applies to what concerns the partition, so a flood
/// of findings in province 01 never hides province 79's.
#[test]
fn another_partitions_flood_of_findings_never_hides_a_partitions_own() {
    let approved = |partition: &str, loan: u64, household: &str| proto::Envelope {
        partition: partition.into(),
        sequence: loan,
        payload: Some(Payload::LoanApproved(proto::LoanApproved {
            loan_number: loan,
            household_id: household.into(),
            programme_id: "NO_SUCH_PROGRAMME".into(),
            programme_version: 1,
            amount: "1000000".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let flood = ansinh::anomalies::ANOMALIES_LISTED_MAX as u64 + 1;
    let mut everything = ansinh::anomalies::Scanner::default();
    let mut of_79 = ansinh::anomalies::Scanner::concerning("79");
    for loan in 1..=flood {
        let e = approved("01", loan, "0100007-000001");
        everything.apply(&e);
        of_79.apply(&e);
    }
    let e = approved("79", 1, "7900001-000001");
    everything.apply(&e);
    of_79.apply(&e);
    let as_of = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
    let everything = everything.finish(as_of, 10);
    assert_eq!(
        everything.anomalies.len(),
        ansinh::anomalies::ANOMALIES_LISTED_MAX
    );
    assert_eq!(everything.not_listed, 2);
    assert!(!everything.anomalies.iter().any(|a| a.concerns("79")));
    let of_79 = of_79.finish(as_of, 10);
    assert_eq!(of_79.not_listed, 0);
    assert_eq!(of_79.anomalies.len(), 1, "{:?}", of_79.anomalies);
    assert!(matches!(
        &of_79.anomalies[0],
        Anomaly::LoanAboveCap { household, .. } if household == "7900001-000001"
    ));
}

/// What a reader of one province sees of the anomalies concerning it (the HTTP API and
/// its jobs): a household of another province is not named, and an event of another
/// province keeps its partition but not its sequence, as a refused registration does
/// not name the household holding the citizen. The head office, which reads every
/// partition, sees all, and so does the operator's CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_province_reader_is_not_shown_where_in_another_province() {
    use ansinh::access::{self, Caller, Operation, Role};
    use ansinh::anomalies::{At, HOUSEHOLD_ELSEWHERE};
    let mut s = Seed::new().await;
    let (here, there) = ("0100007-000010", "7900003-000010");
    s.add(here, registered(here, &[9])).await;
    s.add(there, registered(there, &[8, 9])).await;
    s.add(here, issued("pay:1:2026-10:1", "2026-10-01")).await;
    s.add(there, issued("pay:1:2026-10:1", "2026-10-01")).await;
    s.add(here, settled_by("pay:1:2026-10:1", "2026-10-02", "VCB-9"))
        .await;
    s.add(there, settled_by("pay:1:2026-10:1", "2026-10-03", "VCB-9"))
        .await;
    let report = s.scan("2026-10-05", 10).await;
    let auditor = |unit: &str| Caller {
        id: "staff:auditor".into(),
        role: Role::Auditor,
        unit: unit.into(),
    };
    let seen = |caller: &Caller| -> Vec<Anomaly> {
        report
            .anomalies
            .iter()
            .filter(|a| a.concerns("01"))
            .cloned()
            .map(|a| a.seen_by(|code| access::authorize(caller, Operation::Read, code).is_ok()))
            .collect()
    };
    let at_79 = |sequence: Option<u64>| At {
        partition: "79".into(),
        sequence,
    };

    let of_01 = seen(&auditor("01"));
    assert_eq!(of_01.len(), 2, "{of_01:#?}");
    for a in &of_01 {
        match a {
            Anomaly::CitizenInTwoHouseholds { households, at, .. } => {
                assert_eq!(households, &[here, HOUSEHOLD_ELSEWHERE]);
                assert_eq!(at, &at_79(None));
            }
            Anomaly::TransactionInTwoPartitions { first, at, .. } => {
                assert_eq!(first.partition, "01");
                assert!(first.sequence.is_some(), "{first:?}");
                assert_eq!(at, &at_79(None));
            }
            other => panic!("{other:?}"),
        }
    }
    let text = serde_json::to_string(&of_01).unwrap();
    assert!(!text.contains("7900003"), "{text}");

    // The head office reads every partition: nothing is left out.
    let of_head_office: Vec<Anomaly> = seen(&auditor(""));
    let concerning: Vec<Anomaly> = report
        .anomalies
        .iter()
        .filter(|a| a.concerns("01"))
        .cloned()
        .collect();
    assert_eq!(of_head_office, concerning);
}
