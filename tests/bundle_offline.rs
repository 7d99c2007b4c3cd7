//! The pure parts of bundles, without a server: the many-proof builder agrees with the
//! reference proof, balances and CSV rules, the framing's one encoding, and what pinned
//! keys a bundle's own key history must hold.

use ansinh::bundle::statement::{balances, render_csv};
use ansinh::bundle::{
    self, BundleError, BundleFiles, CheckpointRef, Manifest, ManifestEvent, Scope, Statement,
    canonical_json, decode_delimited, encode_delimited,
};
use ansinh::chain::{self, Digest, Partition};
use ansinh::checkpoint::proofs::CheckpointDocument;
use ansinh::checkpoint::sign::{self, CheckpointBody, KeyPair};
use ansinh::merkle::{self, Hash32, InclusionProof, Prover};
use ansinh::proto::{self, Envelope, envelope::Payload};
use prost::Message;
use rust_decimal::Decimal;

fn hashes(n: usize) -> Vec<Hash32> {
    (0..n as u64)
        .map(|i| *blake3::hash(&i.to_be_bytes()).as_bytes())
        .collect()
}

#[test]
fn the_prover_builds_the_reference_proof_for_every_leaf_of_every_small_tree() {
    for n in 0..=70 {
        let h = hashes(n);
        let prover = Prover::new("01", h.clone());
        assert_eq!(prover.root(), ansinh::merkle::root(&h), "size {n}");
        assert_eq!(prover.event_hash(n as u64), None);
        for i in 0..n as u64 {
            assert_eq!(prover.event_hash(i), Some(&h[i as usize]));
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

/// One event of `partition` after `prev`, as the ledger stores it.
fn stored(partition: &str, sequence: u64, prev: &Digest, at: i64, payload: Payload) -> Vec<u8> {
    Envelope {
        format_version: 1,
        partition: partition.into(),
        sequence,
        prev_hash: prev.0.to_vec().into(),
        recorded_at_unix_ms: at,
        subjects: match &payload {
            Payload::LedgerKeyRotated(r) => vec![format!("ledger-key:{}", r.key_id)],
            _ => vec![format!("household:{HOUSEHOLD}")],
        },
        event_type: ansinh::events::type_name(&payload).into(),
        payload: Some(payload),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Stored events chained from the partition's genesis, with their hashes.
fn chained(partition: &str, payloads: Vec<(i64, Payload)>) -> (Vec<Vec<u8>>, Vec<Hash32>) {
    let mut prev = chain::genesis(&Partition::new(partition).unwrap());
    let (mut bytes, mut hashes) = (Vec::new(), Vec::new());
    for (i, (at, payload)) in payloads.into_iter().enumerate() {
        let b = stored(partition, i as u64 + 1, &prev, at, payload);
        prev = chain::event_hash(&b);
        hashes.push(prev.0);
        bytes.push(b);
    }
    (bytes, hashes)
}

const HOUSEHOLD: &str = "0100007-000001";

fn as_slices(messages: &[Vec<u8>]) -> Vec<&[u8]> {
    messages.iter().map(Vec::as_slice).collect()
}

/// A signed checkpoint document over `hashes`, as the exporter writes it.
fn signed(
    key: &KeyPair,
    partition: &str,
    hashes: &[Hash32],
    at: i64,
) -> (CheckpointDocument, CheckpointBody) {
    let body = CheckpointBody {
        partition: Partition::new(partition).unwrap(),
        tree_size: hashes.len() as u64,
        root: merkle::root(hashes),
        head_sequence: hashes.len() as u64,
        head_hash: *hashes.last().unwrap(),
        issued_at_unix_ms: at,
        key_id: key.key_id().into(),
    };
    let document = CheckpointDocument::new(
        &sign::sign_checkpoint(key, &body),
        &body,
        &key.public_key(),
        &[],
    );
    (document, body)
}

/// A whole bundle of household HOUSEHOLD built with the library's own functions: the key
/// history `key_events`, and a loan paid out to the household that `signer` signs at
/// `issued_at` (nothing stops the holder of a key from doing that).
fn bundle_signed_by(
    key_events: &[Vec<u8>],
    key_hashes: &[Hash32],
    signer: &KeyPair,
    issued_at: i64,
) -> BundleFiles {
    let (keys_document, keys_body) = signed(signer, "ledger-keys", key_hashes, issued_at);
    let (events, hashes) = chained(
        "01",
        vec![
            (
                issued_at,
                Payload::LoanApproved(proto::LoanApproved {
                    loan_number: 1,
                    household_id: HOUSEHOLD.into(),
                    amount: "90000000".into(),
                    ..Default::default()
                }),
            ),
            (
                issued_at,
                Payload::LoanTrancheDisbursed(proto::LoanTrancheDisbursed {
                    loan_number: 1,
                    amount: "90000000".into(),
                    effective_on: "2026-02-05".into(),
                    ..Default::default()
                }),
            ),
        ],
    );
    let (document, body) = signed(signer, "01", &hashes, issued_at);
    let prover = Prover::new("01", hashes.clone());
    let proofs: Vec<InclusionProof> = (0..2).map(|i| prover.inclusion(i).unwrap()).collect();
    let envelopes: Vec<Envelope> = events
        .iter()
        .map(|b| Envelope::decode(b.as_slice()).unwrap())
        .collect();
    let rows: Vec<(Envelope, String)> = envelopes
        .iter()
        .zip(&hashes)
        .map(|(e, h)| (e.clone(), merkle::encode_hash(h)))
        .collect();
    let folded: Vec<(u64, Envelope)> = envelopes.iter().map(|e| (e.sequence, e.clone())).collect();
    let scope = Scope::Household(HOUSEHOLD.into());
    let key_ids = key_events
        .iter()
        .map(|b| match Envelope::decode(b.as_slice()).unwrap().payload {
            Some(Payload::LedgerKeyRotated(r)) => r.key_id,
            _ => unreachable!("only key events"),
        })
        .collect();
    let manifest = Manifest {
        format: bundle::BUNDLE_FORMAT.into(),
        scope: scope.clone(),
        from: None,
        to: None,
        checkpoint: CheckpointRef::from(&body),
        keys_partition: "ledger-keys".into(),
        keys_checkpoint: CheckpointRef::from(&keys_body),
        key_ids,
        signed_by: signer.key_id().into(),
        events: rows
            .iter()
            .map(|(e, h)| ManifestEvent {
                sequence: e.sequence,
                event_type: e.event_type.clone(),
                event_hash: h.clone(),
            })
            .collect(),
        files: bundle::FILES.iter().map(|f| f.to_string()).collect(),
    };
    let statement = Statement {
        format: bundle::STATEMENT_FORMAT.into(),
        checkpoint: CheckpointRef::from(&body),
        scope,
        households: balances(&folded),
    };
    BundleFiles {
        manifest: canonical_json(&manifest),
        checkpoint: canonical_json(&document),
        keys_checkpoint: canonical_json(&keys_document),
        keys: encode_delimited(&as_slices(key_events)),
        events: encode_delimited(&as_slices(&events)),
        proofs: canonical_json(&proofs),
        statement: canonical_json(&statement),
        csv: render_csv(&rows),
    }
}

/// docs/PROOFS.md §7.4: a bundle carries its own key history, so a retired key that
/// leaked can sign one cut short at itself. Every pinned key must be in the history at
/// or before the signer, so pinning the latest key refuses it; the first key alone does
/// not, and says so.
#[test]
fn a_key_history_cut_short_at_a_retired_key_fails_against_the_latest_pinned_key() {
    // Given the ledger's keys K0 -> K1 -> K2 (K1 retired at 300, when K2 was recorded),
    let k: Vec<KeyPair> = (1..=3u8).map(|s| KeyPair::from_seed(&[s; 32])).collect();
    let (key_events, key_hashes) = chained(
        "ledger-keys",
        vec![
            (
                100,
                Payload::LedgerKeyRotated(sign::key_rotation(&k[0], None)),
            ),
            (
                200,
                Payload::LedgerKeyRotated(sign::key_rotation(&k[1], Some(&k[0]))),
            ),
            (
                300,
                Payload::LedgerKeyRotated(sign::key_rotation(&k[2], Some(&k[1]))),
            ),
        ],
    );
    let id = |i: usize| k[i].key_id().to_string();
    // a bundle the current key signs passes against the first, the latest, or both,
    let honest = bundle_signed_by(&key_events, &key_hashes, &k[2], 400);
    for pinned in [vec![id(0)], vec![id(2)], vec![id(0), id(2)]] {
        bundle::verify(&honest, &pinned).unwrap();
    }
    // when the holder of the retired K1 signs fabricated money under the first two key
    // events only (public: every bundle holds them), with a time after K1's retirement,
    let forged = bundle_signed_by(&key_events[..2], &key_hashes[..2], &k[1], 1_000);
    // then the bundle on its own shows K1 as the last key, which is all it can show,
    let verified = bundle::verify(&forged, &[]).unwrap();
    assert_eq!((verified.first_key, verified.latest_key), (id(0), id(1)));
    // and pinning the latest key refuses it, alone or with the first key;
    for pinned in [vec![id(2)], vec![id(0), id(2)]] {
        assert!(
            matches!(
                bundle::verify(&forged, &pinned),
                Err(BundleError::Untrusted { pinned, signer }) if pinned == id(2) && signer == id(1)
            ),
            "pinned {pinned:?}"
        );
    }
    // pinning the first key alone proves only descent from it, so it passes.
    bundle::verify(&forged, &[id(0)]).unwrap();
    // A pin by public key holds as one by id, and the verdict names the last key's.
    let public = |i: usize| hex::encode(k[i].public_key());
    bundle::verify(&honest, &[public(2)]).unwrap();
    assert_eq!(
        bundle::verify(&honest, &[]).unwrap().latest_public_key,
        public(2)
    );
    assert!(matches!(
        bundle::verify(&forged, &[public(2)]),
        Err(BundleError::Untrusted { .. })
    ));
    // A backdated signature by K1 under the whole history names a key before K2: refused.
    let backdated = bundle_signed_by(&key_events, &key_hashes, &k[1], 250);
    bundle::verify(&backdated, &[]).unwrap();
    assert!(matches!(
        bundle::verify(&backdated, &[id(2)]),
        Err(BundleError::Untrusted { .. })
    ));
}
