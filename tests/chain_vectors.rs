//! Known-answer vectors for the chain format. The same values are printed in
//! docs/CHAIN.md; this test fails if the code or the document drifts.

use ansinh::chain::{self, ChainHead, Partition};
use ansinh::log::frame;
use ansinh::proto::{self, Envelope, envelope::Payload};
use bytes::Bytes;
use prost::Message;

const DOC: &str = include_str!("../docs/CHAIN.md");

fn vector_envelope(sequence: u64, prev: &chain::Digest, text: &str) -> Vec<u8> {
    Envelope {
        format_version: 1,
        partition: "01".into(),
        sequence,
        prev_hash: Bytes::copy_from_slice(&prev.0),
        recorded_at_unix_ms: 1_767_225_600_000 + sequence as i64,
        actor: Some(proto::Actor {
            id: "staff:0001".into(),
            role: "teller".into(),
            unit: "0100007".into(),
        }),
        idempotency_key: format!("vector-{sequence}"),
        correlation_id: String::new(),
        request_fingerprint: Default::default(),
        subjects: vec!["household:0100007-000001".into()],
        event_type: "ansinh.v1.Note".into(),
        payload: Some(Payload::Note(proto::Note { text: text.into() })),
    }
    .encode_to_vec()
}

pub struct Vectors {
    pub genesis: String,
    pub event1_bytes: String,
    pub event1_hash: String,
    pub event2_bytes: String,
    pub event2_hash: String,
    pub frame_bytes: String,
}

fn vectors() -> Vectors {
    let p = Partition::new("01").unwrap();
    let g = chain::genesis(&p);
    let e1 = vector_envelope(1, &g, "Xin chào");
    let h1 = chain::event_hash(&e1);
    let e2 = vector_envelope(2, &h1, "Tạm ứng 5.000.000 đồng");
    let h2 = chain::event_hash(&e2);
    // The vectors form a valid chain.
    let (head, _) = chain::check_next(&ChainHead::genesis(p.clone()), &e1, None).unwrap();
    let (head, _) = chain::check_next(&head, &e2, Some(&h2.to_hex())).unwrap();
    assert_eq!(head.hash, h2);
    // The frame vector: both events in one message, each element their exact bytes.
    let (e1, e2) = (Bytes::from(e1), Bytes::from(e2));
    let (frame_payload, framed) = frame::encode(&[e1.clone(), e2.clone()]);
    assert!(framed);
    let events = frame::decode(&frame_payload, Some(frame::FORMAT_FRAME)).unwrap();
    assert_eq!(events, vec![e1.clone(), e2.clone()]);
    // The header names the last event: its hash checks against event 2 only.
    let (head, _) = chain::check_next(&ChainHead::genesis(p), &events[0], None).unwrap();
    let (head, _) = chain::check_next(&head, &events[1], Some(&h2.to_hex())).unwrap();
    assert_eq!(head.hash, h2);
    assert_eq!(chain::event_hash(&events[1]), h2);
    Vectors {
        genesis: g.to_hex(),
        event1_bytes: hex::encode(&e1),
        event1_hash: h1.to_hex(),
        event2_bytes: hex::encode(&e2),
        event2_hash: h2.to_hex(),
        frame_bytes: hex::encode(&frame_payload),
    }
}

#[test]
fn chain_md_carries_the_vectors_this_code_computes() {
    let v = vectors();
    for (name, value) in [
        ("genesis", &v.genesis),
        ("event 1 bytes", &v.event1_bytes),
        ("event 1 hash", &v.event1_hash),
        ("event 2 bytes", &v.event2_bytes),
        ("event 2 hash", &v.event2_hash),
        ("frame bytes", &v.frame_bytes),
    ] {
        assert!(
            DOC.contains(value.as_str()),
            "docs/CHAIN.md lacks the {name} vector {value}"
        );
    }
}

/// Negative vectors (CHAIN.md, sections 1 and 5): the frame vector with its first
/// length written in three bytes, and with an unknown field between its elements. A
/// conforming protobuf decoder reads the same two events from each; the chain format
/// does not, since only the canonical encoding is a valid frame. Built here by editing
/// the frame vector's bytes as the document describes, not by any encoder.
#[test]
fn non_canonical_frame_vectors_are_unreadable() {
    let v = vectors();
    let good = hex::decode(&v.frame_bytes).unwrap();
    assert_eq!(&good[..3], b"\x0a\x92\x01", "tag, then 146 as a varint");
    let first_end = 3 + 146;
    assert_eq!(&good[first_end..first_end + 3], b"\x0a\xa6\x01");
    let mut overlong = b"\x0a\x92\x81\x00".to_vec();
    overlong.extend_from_slice(&good[3..]);
    let mut unknown = good[..first_end].to_vec();
    unknown.extend_from_slice(b"\x10\x00");
    unknown.extend_from_slice(&good[first_end..]);
    for (name, forged, in_doc) in [
        ("overlong length", overlong, "0a928100080112"),
        ("unknown field", unknown, "c3a06f10000aa601"),
    ] {
        assert!(
            hex::encode(&forged).contains(in_doc),
            "{name}: the document's excerpt is of this vector"
        );
        assert!(
            DOC.contains(in_doc),
            "docs/CHAIN.md lacks the {name} vector"
        );
        let decoded = proto::Frame::decode(forged.as_slice()).expect("valid protobuf");
        assert_eq!(decoded.events.len(), 2, "{name}");
        assert_eq!(
            hex::encode(&decoded.events[1]),
            v.event2_bytes,
            "{name}: the same events"
        );
        let refused = frame::decode(&Bytes::from(forged), Some(frame::FORMAT_FRAME));
        assert!(
            matches!(
                refused,
                Err(frame::FrameError::NotCanonical { canonical: 318, .. })
            ),
            "{name}: {refused:?}"
        );
    }
}

#[test]
fn raw_blake3_vectors() {
    // Independent of prost: the domain-separated hash of fixed bytes.
    assert_eq!(
        chain::event_hash(b"").to_hex(),
        blake3::hash(b"ansinh/v1/event\0").to_hex().to_string()
    );
    let mut input = b"ansinh/v1/genesis\0".to_vec();
    input.extend_from_slice(b"79");
    assert_eq!(
        chain::genesis(&Partition::new("79").unwrap()).to_hex(),
        blake3::hash(&input).to_hex().to_string()
    );
}

/// The run hash of held messages an exclusion names (CHAIN.md, sections 4a and 5),
/// computed here from its definition with plain BLAKE3, and printed in the document.
#[test]
fn the_run_hash_vector_in_chain_md_is_what_the_code_computes() {
    let message = |payload: &[u8]| {
        let mut h = blake3::Hasher::new();
        h.update(b"ansinh/v1/message\0");
        h.update(payload);
        *h.finalize().as_bytes()
    };
    let next = |prev: [u8; 32], sequence: u64, message_hash: [u8; 32]| {
        let mut h = blake3::Hasher::new();
        h.update(b"ansinh/v1/excluded-run\0");
        h.update(&prev);
        h.update(&sequence.to_be_bytes());
        h.update(&message_hash);
        *h.finalize().as_bytes()
    };
    let (m5, m6) = (message(b"foreign 1"), message(b"foreign 2"));
    let r2 = next(next([0; 32], 5, m5), 6, m6);
    let code = chain::run_hash_next(
        &chain::run_hash_next(
            &chain::Digest([0; 32]),
            5,
            &chain::message_hash(b"foreign 1"),
        ),
        6,
        &chain::message_hash(b"foreign 2"),
    );
    assert_eq!(code.0, r2);
    for value in [hex::encode(m5), hex::encode(r2)] {
        assert!(DOC.contains(&value), "CHAIN.md lacks {value}");
    }
}

/// The exclusion signature vectors of CHAIN.md section 5, one message and a run: the
/// signed bytes are built here from section 4a with plain BLAKE3 and signed with
/// ed25519-dalek, then the ledger's own signing and checking must agree with them and
/// with the document (scripts/proofs-vector.py reproduces them in Python).
#[test]
fn the_exclusion_signature_vectors_in_chain_md_are_what_the_code_computes() {
    use ansinh::checkpoint::sign::{self, KeyPair};
    use ed25519_dalek::Signer;
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let message =
        |payload: &[u8]| *blake3::hash(&[b"ansinh/v1/message\0", payload].concat()).as_bytes();
    let (m5, m6) = (message(b"foreign 1"), message(b"foreign 2"));
    let next = |prev: [u8; 32], sequence: u64, m: [u8; 32]| {
        *blake3::hash(
            &[
                &b"ansinh/v1/excluded-run\0"[..],
                &prev,
                &sequence.to_be_bytes(),
                &m,
            ]
            .concat(),
        )
        .as_bytes()
    };
    let run = next(next([0; 32], 5, m5), 6, m6);
    let one_bytes = [
        &b"ansinh/v1/exclusion\0"[..],
        b"01\0",
        &5u64.to_be_bytes(),
        &m5,
    ]
    .concat();
    let run_bytes = [
        &b"ansinh/v1/exclusion-run\0"[..],
        b"01\0",
        &5u64.to_be_bytes(),
        &m5,
        &6u64.to_be_bytes(),
        &2u64.to_be_bytes(),
        &run,
    ]
    .concat();
    let key = KeyPair::from_seed(&seed);
    assert_eq!(key.key_id(), "98ba85304ac639f0");
    let one = proto::MessageExcluded {
        stream_sequence: 5,
        message_hash: m5.to_vec().into(),
        reason: "not the ledger's".into(),
        key_id: key.key_id().into(),
        ..Default::default()
    };
    let of_run = proto::MessageExcluded {
        through_stream_sequence: 6,
        message_count: 2,
        run_hash: run.to_vec().into(),
        ..one.clone()
    };
    for (form, x, signed) in [("one message", one, one_bytes), ("run", of_run, run_bytes)] {
        let independent = signing.sign(&signed).to_bytes();
        let computed = sign::sign_exclusion(&key, "01", &x).unwrap();
        assert_eq!(hex::encode(computed), hex::encode(independent), "{form}");
        assert!(
            DOC.contains(&hex::encode(independent)),
            "docs/CHAIN.md lacks the {form} exclusion signature {}",
            hex::encode(independent)
        );
        let x = proto::MessageExcluded {
            signature: computed.to_vec().into(),
            ..x
        };
        sign::verify_exclusion(&key.public_key(), "01", &x).unwrap();
        // The signature covers the partition it is recorded in.
        assert!(
            sign::verify_exclusion(&key.public_key(), "02", &x).is_err(),
            "{form}"
        );
    }
}

#[test]
fn a_flipped_bit_anywhere_breaks_the_link() {
    let p = Partition::new("01").unwrap();
    let e1 = vector_envelope(1, &chain::genesis(&p), "Xin chào");
    let good = chain::event_hash(&e1);
    for i in 0..e1.len() {
        let mut bad = e1.clone();
        bad[i] ^= 1;
        assert_ne!(chain::event_hash(&bad), good, "byte {i}");
    }
}

#[test]
#[ignore = "prints the vectors for docs/CHAIN.md"]
fn print_vectors() {
    let v = vectors();
    println!(
        "genesis {}\ne1 {}\nh1 {}\ne2 {}\nh2 {}\nframe {}",
        v.genesis, v.event1_bytes, v.event1_hash, v.event2_bytes, v.event2_hash, v.frame_bytes
    );
}
