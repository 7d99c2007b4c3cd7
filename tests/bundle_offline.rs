//! The pure parts of bundles, without a server: the many-proof builder agrees with the
//! reference proof, balances and CSV rules, and the framing's one encoding.

use ansinh::bundle::statement::{balances, render_csv};
use ansinh::bundle::{BundleError, decode_delimited, encode_delimited};
use ansinh::merkle::{Hash32, InclusionProof, Prover};
use ansinh::proto::{self, Envelope, envelope::Payload};
use rust_decimal::Decimal;

fn hashes(n: usize) -> Vec<Hash32> {
    (0..n as u64)
        .map(|i| *blake3::hash(&i.to_be_bytes()).as_bytes())
        .collect()
}

#[test]
fn the_prover_builds_the_reference_proof_for_every_leaf_of_every_small_tree() {
    for n in 1..=70 {
        let h = hashes(n);
        let prover = Prover::new("01", &h);
        assert_eq!(prover.root(), ansinh::merkle::root(&h), "size {n}");
        for i in 0..n as u64 {
            let fast = prover.inclusion(i).unwrap();
            assert_eq!(
                fast,
                InclusionProof::generate("01", &h, i).unwrap(),
                "size {n} leaf {i}"
            );
            fast.verify().unwrap();
        }
        assert!(prover.inclusion(n as u64).is_err());
    }
}

fn event(sequence: u64, household: &str, payload: Payload) -> (u64, Envelope) {
    (
        sequence,
        Envelope {
            format_version: 1,
            partition: "01".into(),
            sequence,
            subjects: vec![format!("household:{household}")],
            event_type: ansinh::events::type_name(&payload).into(),
            payload: Some(payload),
            ..Default::default()
        },
    )
}

#[test]
fn balances_follow_reversals_and_write_offs() {
    let h = "0100007-000001";
    let events = vec![
        event(
            1,
            h,
            Payload::LoanApproved(proto::LoanApproved {
                loan_number: 3,
                household_id: h.into(),
                amount: "20000000".into(),
                ..Default::default()
            }),
        ),
        event(
            2,
            h,
            Payload::LoanTrancheDisbursed(proto::LoanTrancheDisbursed {
                loan_number: 3,
                amount: "20000000".into(),
                effective_on: "2026-02-05".into(),
                ..Default::default()
            }),
        ),
        event(
            3,
            h,
            Payload::LoanRepaymentReceived(proto::LoanRepaymentReceived {
                loan_number: 3,
                amount: "1100000".into(),
                to_principal: "900000".into(),
                to_overdue_principal: "100000".into(),
                to_interest: "60000".into(),
                to_overdue_interest: "40000".into(),
                effective_on: "2026-03-05".into(),
                ..Default::default()
            }),
        ),
        event(
            4,
            h,
            Payload::LoanRepaymentReceived(proto::LoanRepaymentReceived {
                loan_number: 3,
                amount: "500000".into(),
                to_principal: "500000".into(),
                effective_on: "2026-04-05".into(),
                ..Default::default()
            }),
        ),
        event(
            5,
            h,
            Payload::LoanPostingReversed(proto::LoanPostingReversed {
                loan_number: 3,
                original_sequence: 4,
                effective_on: "2026-04-06".into(),
                ..Default::default()
            }),
        ),
        event(
            6,
            h,
            Payload::LoanWrittenOff(proto::LoanWrittenOff {
                loan_number: 3,
                principal: "18000000".into(),
                overdue_principal: "1000000".into(),
                effective_on: "2026-10-01".into(),
                ..Default::default()
            }),
        ),
    ];
    let b = &balances(&events)[h];
    let loan = &b.loans["01-L3"];
    let d = |s: &str| s.parse::<Decimal>().unwrap();
    assert_eq!(loan.disbursed, d("20000000"));
    assert_eq!(loan.principal_repaid, d("1000000"));
    assert_eq!(loan.interest_paid, d("100000"));
    assert_eq!(loan.written_off, d("19000000"));
    assert_eq!(loan.principal_outstanding, d("0"));
    // April's only repayment was reversed: no April line at all.
    assert_eq!(
        b.repayments_received_by_month.keys().collect::<Vec<_>>(),
        ["2026-03"]
    );
}

#[test]
fn csv_fields_are_quoted_and_formulas_defused() {
    let (_, mut e) = event(
        1,
        "0100007-000001",
        Payload::Note(proto::Note {
            text: "=HYPERLINK(\"x\"), Phường Bến Nghé".into(),
        }),
    );
    e.actor = Some(proto::Actor {
        id: "Hội Liên hiệp Phụ nữ".into(),
        role: "+role".into(),
        unit: "0100007".into(),
    });
    let csv = render_csv(&[(e, "ab".repeat(32))]);
    assert!(csv.starts_with(b"\xEF\xBB\xBF"));
    let text = std::str::from_utf8(&csv[3..]).unwrap();
    let row = text.split("\r\n").nth(1).unwrap();
    assert!(
        row.contains(",Hội Liên hiệp Phụ nữ,'+role,0100007,"),
        "{row}"
    );
    assert!(
        row.contains(",\"'=HYPERLINK(\"\"x\"\"), Phường Bến Nghé\","),
        "{row}"
    );
}

#[test]
fn framing_has_one_encoding() {
    let framed = encode_delimited(&[b"abc".as_slice(), b"".as_slice(), &[7u8; 200]]);
    let parts = decode_delimited("events.bin", &framed, 10).unwrap();
    assert_eq!(parts, [b"abc".as_slice(), b"".as_slice(), &[7u8; 200]]);
    // The same length written with a redundant continuation byte is refused.
    let padded = [&[0x83u8, 0x00][..], b"abc"].concat();
    assert!(matches!(
        decode_delimited("events.bin", &padded, 10),
        Err(BundleError::Framing { .. })
    ));
    // A length past the end, and too many messages, are refused.
    assert!(decode_delimited("events.bin", &[5, 1, 2], 10).is_err());
    assert!(matches!(
        decode_delimited("events.bin", &framed, 2),
        Err(BundleError::TooManyEvents { .. })
    ));
}

/// What a statement lists (docs/BUNDLES.md §5): a household named by a payment that moved
/// money stays, with empty maps, after its month nets to zero; a payment that moves none
/// names no household. Bundles already exported keep verifying only if this holds.
#[test]
fn a_household_whose_assistance_was_settled_and_returned_in_one_month_is_listed_empty() {
    let (paid, unpaid) = ("0100007-000002", "0100007-000003");
    let payment = |debit: &str, credit: &str, on: &str| {
        Payload::PaymentRecorded(proto::PaymentRecorded {
            kind: "GatewayPostAccepted".into(),
            effective_on: on.into(),
            postings: vec![proto::Posting {
                account: "PaidToBeneficiaries".into(),
                debit: debit.into(),
                credit: credit.into(),
            }],
            ..Default::default()
        })
    };
    // Given assistance settled on 2 March and returned on 20 March, and a payment event
    // whose posting nets to zero,
    let events = vec![
        event(1, paid, payment("500000", "0", "2026-03-02")),
        event(2, paid, payment("0", "500000", "2026-03-20")),
        event(3, unpaid, payment("500000", "500000", "2026-03-02")),
    ];
    // when the balances are folded,
    let b = balances(&events);
    // then the first household is listed with no loan and no month line, and the second
    // is not listed.
    assert_eq!(b.keys().collect::<Vec<_>>(), [paid]);
    assert_eq!(b[paid], Default::default());
    let json = serde_json::to_value(&b[paid]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "loans": {},
            "repayments_received_by_month": {},
            "assistance_paid_by_month": {}
        })
    );
}
