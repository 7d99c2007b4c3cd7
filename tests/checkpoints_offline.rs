//! Checkpoints and proof documents without a server: the signature vector of
//! docs/PROOFS.md, the key ring, the JSON Schemas, and fuzzing of the offline check
//! (no malformed or altered document is accepted, and none panics).

use ansinh::chain::{self, ChainHead, Partition};
use ansinh::checkpoint::proofs::{
    self, CONSISTENCY_FORMAT, CheckError, CheckpointDocument, ConsistencyDocument,
    INCLUSION_FORMAT, InclusionDocument,
};
use ansinh::checkpoint::sign::{self, CheckpointBody, KeyPair, SignatureError};
use ansinh::checkpoint::{KeyRing, KeyRingError};
use ansinh::merkle::{self, ConsistencyProof, Hash32, InclusionProof};
use ansinh::proto::{self, Envelope, envelope::Payload};
use proptest::prelude::*;
use prost::Message;

/// The secret seed of the vector key: bytes 0, 1, ..., 31.
fn vector_key() -> KeyPair {
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    KeyPair::from_seed(&seed)
}

fn other_key(n: u8) -> KeyPair {
    KeyPair::from_seed(&[n; 32])
}

fn h(text: &str) -> Hash32 {
    merkle::decode_hash(text, "test").unwrap()
}

// ---- The vector in docs/PROOFS.md §7 (reproduced independently by scripts/proofs-vector.py) ----

/// Over the two events of docs/CHAIN.md §5.
const E1: &str = "7fe66266ca7e44f8aaddc9f187e2dec68b19f049f58ea804beb45107f9fb243a";
const E2: &str = "3b62afdee754dc184880451b4d54ae01a6d1f67e5c0d8146fb706ac7d2fdff33";
const VECTOR_PUBLIC_KEY: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
const VECTOR_KEY_ID: &str = "98ba85304ac639f0";
const VECTOR_ROOT: &str = "504dad7be1ba28f4f3ea048405d07bc57862d676e6c2dde0324ff443a22e8683";
const VECTOR_CHECKPOINT: &str = "08011202303118022220504dad7be1ba28f4f3ea048405d07bc57862d676e6c2dde0324ff443a22e8683280232203b62afdee754dc184880451b4d54ae01a6d1f67e5c0d8146fb706ac7d2fdff333883d0eab6b733421039386261383533303461633633396630";
const VECTOR_SIGNATURE: &str = "f4fb389221d92777310e4cab705654e2614bbcfe371541299530e77cbdd02f71c11ab09f285e3582288367520f4dbf81012247a083e47fd00faea0f70f827f0b";
const VECTOR_CHECKPOINT_HASH: &str =
    "c20b00b606614fa11dc84b9b92388a697cf5d4c014c4b0b0fda399f2587a1db1";
const VECTOR_COSIGNATURE: &str = "cc313749f2e25d715ec8967ab10c96a27a4df5c0206cadffdbb683799c322da7efb2447b2cbfd1a1a77e0a1aa72ff652787efa495bc40895668373e59fa32c0b";
const VECTOR_ROTATION_SIGNATURE: &str = "76ceb5c6c23e819b4f9b41b0b9be06ea5e2e0adb7a78ee08c415ab568c2045054110e1461c52150a97cec0b88bbd35cf18777447a7bb340f892af21c578edc03";

fn vector_body() -> CheckpointBody {
    let leaves = [h(E1), h(E2)];
    CheckpointBody {
        partition: Partition::new("01").unwrap(),
        tree_size: 2,
        root: merkle::root(&leaves),
        head_sequence: 2,
        head_hash: h(E2),
        issued_at_unix_ms: 1_767_225_600_003,
        key_id: vector_key().key_id().to_string(),
    }
}

#[test]
fn the_signature_vector_in_proofs_md_is_what_the_code_computes() {
    let key = vector_key();
    let body = vector_body();
    let signed = sign::sign_checkpoint(&key, &body);
    let cosigner = other_key(7);
    let cosignature = sign::cosign(
        &cosigner,
        "audit-office:test",
        &signed.checkpoint,
        1_767_225_600_004,
    )
    .unwrap();
    let rotation = sign::key_rotation(&other_key(9), Some(&key));
    let actual = [
        ("public key", hex::encode(key.public_key())),
        ("key id", key.key_id().to_string()),
        ("root", hex::encode(body.root)),
        ("checkpoint", hex::encode(&signed.checkpoint)),
        ("signature", hex::encode(&signed.signature)),
        ("checkpoint hash", hex::encode(&cosignature.checkpoint_hash)),
        ("cosignature", hex::encode(&cosignature.signature)),
        (
            "rotation signature",
            hex::encode(&rotation.previous_key_signature),
        ),
    ];
    let expected = [
        VECTOR_PUBLIC_KEY,
        VECTOR_KEY_ID,
        VECTOR_ROOT,
        VECTOR_CHECKPOINT,
        VECTOR_SIGNATURE,
        VECTOR_CHECKPOINT_HASH,
        VECTOR_COSIGNATURE,
        VECTOR_ROTATION_SIGNATURE,
    ];
    for ((name, a), e) in actual.iter().zip(expected) {
        assert_eq!(a, e, "{name}");
    }
    // The signature is over the domain prefix and the bytes, nothing else.
    let mut message = b"ansinh/v1/checkpoint\0".to_vec();
    message.extend_from_slice(&signed.checkpoint);
    let public = ed25519_dalek::VerifyingKey::from_bytes(&key.public_key()).unwrap();
    let signature = ed25519_dalek::Signature::from_slice(&signed.signature).unwrap();
    public.verify_strict(&message, &signature).unwrap();
    assert_eq!(
        sign::open_checkpoint(&signed, &key.public_key()).unwrap(),
        body
    );
    sign::verify_cosignature(&cosignature, &signed.checkpoint).unwrap();
}

// ---- Signed objects refuse every alteration ------------------------------------------

#[test]
fn signed_checkpoints_refuse_other_keys_altered_bytes_and_bad_shapes() {
    let key = vector_key();
    let body = vector_body();
    let signed = sign::sign_checkpoint(&key, &body);
    let pk = key.public_key();
    // Another key.
    assert!(matches!(
        sign::open_checkpoint(&signed, &other_key(1).public_key()),
        Err(SignatureError::WrongKey { .. })
    ));
    // Every single-bit flip of the signed bytes or the signature.
    for i in 0..signed.checkpoint.len() * 8 {
        let mut s = signed.clone();
        let mut bytes = s.checkpoint.to_vec();
        bytes[i / 8] ^= 1 << (i % 8);
        s.checkpoint = bytes.into();
        assert!(
            sign::open_checkpoint(&s, &pk).is_err(),
            "bit {i} of the checkpoint"
        );
    }
    for i in 0..512 {
        let mut s = signed.clone();
        let mut bytes = s.signature.to_vec();
        bytes[i / 8] ^= 1 << (i % 8);
        s.signature = bytes.into();
        assert!(
            sign::open_checkpoint(&s, &pk).is_err(),
            "bit {i} of the signature"
        );
    }
    // The outer key id must be the signed one.
    let mut s = signed.clone();
    s.key_id = "0000000000000000".into();
    assert!(matches!(
        sign::open_checkpoint(&s, &pk),
        Err(SignatureError::KeyIdMismatch { .. })
    ));
    // Shapes are checked even before the signature: size 0, head != size, bad hashes.
    for bad in [
        CheckpointBody {
            tree_size: 0,
            head_sequence: 0,
            ..body.clone()
        },
        CheckpointBody {
            head_sequence: 3,
            ..body.clone()
        },
    ] {
        let s = sign::sign_checkpoint(&key, &bad);
        assert!(matches!(
            sign::open_checkpoint(&s, &pk),
            Err(SignatureError::Malformed { .. })
        ));
    }
    let short_root = proto::Checkpoint {
        format_version: 1,
        partition: "01".into(),
        tree_size: 2,
        root: vec![0u8; 31].into(),
        head_sequence: 2,
        head_hash: vec![0u8; 32].into(),
        issued_at_unix_ms: 0,
        key_id: key.key_id().into(),
    };
    assert!(matches!(
        CheckpointBody::decode(&short_root.encode_to_vec()),
        Err(SignatureError::Malformed { field: "root", .. })
    ));
    assert!(matches!(
        CheckpointBody::decode(&[0u8; 2000]),
        Err(SignatureError::Oversized(2000))
    ));
    let v2 = proto::Checkpoint {
        format_version: 2,
        ..short_root
    };
    assert!(matches!(
        CheckpointBody::decode(&v2.encode_to_vec()),
        Err(SignatureError::UnknownFormat(2))
    ));
}

#[test]
fn cosignatures_bind_the_checkpoint_the_cosigner_and_the_time() {
    let signed = sign::sign_checkpoint(&vector_key(), &vector_body());
    let other = sign::sign_checkpoint(
        &vector_key(),
        &CheckpointBody {
            issued_at_unix_ms: 1,
            ..vector_body()
        },
    );
    let c = sign::cosign(&other_key(7), "audit-office", &signed.checkpoint, 5).unwrap();
    sign::verify_cosignature(&c, &signed.checkpoint).unwrap();
    assert!(sign::verify_cosignature(&c, &other.checkpoint).is_err());
    let renamed = proto::Cosignature {
        cosigner_id: "someone-else".into(),
        ..c.clone()
    };
    assert!(sign::verify_cosignature(&renamed, &signed.checkpoint).is_err());
    let later = proto::Cosignature {
        signed_at_unix_ms: 6,
        ..c.clone()
    };
    assert!(sign::verify_cosignature(&later, &signed.checkpoint).is_err());
    let swapped_key = proto::Cosignature {
        public_key: other_key(8).public_key().to_vec().into(),
        ..c.clone()
    };
    assert!(sign::verify_cosignature(&swapped_key, &signed.checkpoint).is_err());
    assert!(sign::cosign(&other_key(7), "", &signed.checkpoint, 5).is_err());
    assert!(sign::cosign(&other_key(7), "a\nb", &signed.checkpoint, 5).is_err());
}

#[test]
fn a_checkpoint_document_carries_at_most_one_cosignature_per_key() {
    let signed = sign::sign_checkpoint(&vector_key(), &vector_body());
    let document = |cosignatures: &[proto::Cosignature]| {
        CheckpointDocument::new(
            &signed,
            &vector_body(),
            &vector_key().public_key(),
            cosignatures,
        )
    };
    let office = sign::cosign(&other_key(7), "audit-office", &signed.checkpoint, 5).unwrap();
    let other_office =
        sign::cosign(&other_key(8), "audit-office-2", &signed.checkpoint, 6).unwrap();
    let (_, cosigners) = document(&[office.clone(), other_office.clone()])
        .check("checkpoint", &[], &Default::default())
        .unwrap();
    assert_eq!(cosigners.unpinned.len(), 2);
    // The same key again, later or under another cosigner id: one cosigner counted
    // twice, refused.
    let again = sign::cosign(&other_key(7), "audit-office", &signed.checkpoint, 9).unwrap();
    let renamed = sign::cosign(&other_key(7), "another-name", &signed.checkpoint, 5).unwrap();
    for twice in [again, renamed] {
        let refused = document(&[office.clone(), other_office.clone(), twice])
            .check("checkpoint", &[], &Default::default())
            .unwrap_err();
        assert!(
            refused.to_string().contains(&format!(
                "checkpoint.cosignatures[2]: key {} cosigns twice",
                other_key(7).key_id()
            )),
            "{refused}"
        );
    }
    // The distinct cosignatures of a checkpoint a document may carry: one per key, the
    // earliest stored, at most COSIGNATURES_MAX.
    let stored: Vec<proto::Cosignature> = (0..=proofs::COSIGNATURES_MAX as u8 + 1)
        .flat_map(|n| {
            let key = other_key(n + 10);
            [
                sign::cosign(&key, "first", &signed.checkpoint, 1).unwrap(),
                sign::cosign(&key, "again", &signed.checkpoint, 2).unwrap(),
            ]
        })
        .chain([sign::cosign(
            &other_key(7),
            "other-checkpoint",
            &vector_key().public_key(),
            1,
        )
        .unwrap()])
        .collect();
    let kept = proofs::distinct_cosignatures(&signed.checkpoint, stored, &Default::default());
    assert_eq!(kept.len(), proofs::COSIGNATURES_MAX);
    assert!(kept.iter().all(|c| c.cosigner_id == "first"));
    let (_, cosigners) = document(&kept)
        .check("checkpoint", &[], &Default::default())
        .unwrap();
    assert_eq!(cosigners.unpinned.len(), proofs::COSIGNATURES_MAX);
}

#[test]
fn the_key_ring_accepts_only_rotations_signed_by_the_previous_key() {
    let (a, b, c) = (other_key(1), other_key(2), other_key(3));
    let mut ring = KeyRing::default();
    // A first key that claims a predecessor is refused.
    assert!(matches!(
        ring.apply(&sign::key_rotation(&b, Some(&a)), 1, 100),
        Err(KeyRingError::BadRotation { .. })
    ));
    ring.apply(&sign::key_rotation(&a, None), 1, 100).unwrap();
    // A second "first key" (no predecessor) cannot reset trust.
    assert!(matches!(
        ring.apply(&sign::key_rotation(&b, None), 2, 200),
        Err(KeyRingError::BadRotation { .. })
    ));
    // Signed by the wrong previous key.
    assert!(matches!(
        ring.apply(&sign::key_rotation(&c, Some(&b)), 2, 200),
        Err(KeyRingError::BadRotation { .. })
    ));
    // A valid rotation with a forged key id.
    let mut forged = sign::key_rotation(&b, Some(&a));
    forged.key_id = c.key_id().into();
    assert!(ring.apply(&forged, 2, 200).is_err());
    ring.apply(&sign::key_rotation(&b, Some(&a)), 2, 200)
        .unwrap();
    // Back to an old key: refused.
    assert!(matches!(
        ring.apply(&sign::key_rotation(&a, Some(&b)), 3, 300),
        Err(KeyRingError::Reused { .. })
    ));
    assert_eq!(ring.current().unwrap().key_id, b.key_id());
    // Old checkpoints verify with the old key; the old key cannot sign after it retired.
    assert_eq!(
        ring.signer(a.key_id(), 150).unwrap().public_key,
        a.public_key()
    );
    assert!(matches!(
        ring.signer(a.key_id(), 250),
        Err(KeyRingError::Retired { .. })
    ));
    assert!(ring.signer(b.key_id(), 250).is_ok());
    assert!(matches!(
        ring.signer(c.key_id(), 250),
        Err(KeyRingError::UnknownKey(_))
    ));
}

// ---- Proof documents from an in-memory log --------------------------------------------

/// A partition of `n` chained Note events: (stored bytes, event hash) each.
fn log(partition: &str, n: u64) -> Vec<(Vec<u8>, Hash32)> {
    let mut head = ChainHead::genesis(Partition::new(partition).unwrap());
    (1..=n)
        .map(|sequence| {
            let envelope = Envelope {
                format_version: 1,
                partition: partition.into(),
                sequence,
                prev_hash: head.hash.0.to_vec().into(),
                recorded_at_unix_ms: 1_767_225_600_000 + sequence as i64,
                idempotency_key: format!("k{sequence}"),
                event_type: "ansinh.v1.Note".into(),
                payload: Some(Payload::Note(proto::Note {
                    text: format!("note {sequence}"),
                })),
                ..Default::default()
            };
            let bytes = envelope.encode_to_vec();
            let (next, _) = chain::check_next(&head, &bytes, None).unwrap();
            head = next;
            (bytes, head.hash.0)
        })
        .collect()
}

fn checkpoint_doc(key: &KeyPair, partition: &str, hashes: &[Hash32]) -> CheckpointDocument {
    let body = CheckpointBody {
        partition: Partition::new(partition).unwrap(),
        tree_size: hashes.len() as u64,
        root: merkle::root(hashes),
        head_sequence: hashes.len() as u64,
        head_hash: *hashes.last().unwrap(),
        issued_at_unix_ms: 1_767_225_700_000,
        key_id: key.key_id().into(),
    };
    let signed = sign::sign_checkpoint(key, &body);
    let cosignature = sign::cosign(&other_key(42), "audit-office", &signed.checkpoint, 9).unwrap();
    CheckpointDocument::new(&signed, &body, &key.public_key(), &[cosignature])
}

fn inclusion(key: &KeyPair, size: u64, sequence: u64) -> InclusionDocument {
    let events = log("01", size);
    let hashes: Vec<Hash32> = events.iter().map(|e| e.1).collect();
    InclusionDocument {
        format: INCLUSION_FORMAT.into(),
        partition: "01".into(),
        sequence,
        event: hex::encode(&events[(sequence - 1) as usize].0),
        event_hash: hex::encode(hashes[(sequence - 1) as usize]),
        proof: InclusionProof::generate("01", &hashes, sequence - 1).unwrap(),
        checkpoint: checkpoint_doc(key, "01", &hashes),
    }
}

fn consistency(key: &KeyPair, old: u64, new: u64) -> ConsistencyDocument {
    let hashes: Vec<Hash32> = log("01", new).iter().map(|e| e.1).collect();
    ConsistencyDocument {
        format: CONSISTENCY_FORMAT.into(),
        partition: "01".into(),
        old_checkpoint: checkpoint_doc(key, "01", &hashes[..old as usize]),
        new_checkpoint: checkpoint_doc(key, "01", &hashes),
        proof: ConsistencyProof::generate("01", &hashes, old).unwrap(),
    }
}

fn trusted() -> Vec<String> {
    vec![vector_key().key_id().to_string()]
}

fn check_json<T: serde::Serialize>(doc: &T) -> Result<proofs::Checked, CheckError> {
    proofs::check_document(&serde_json::to_vec(doc).unwrap(), &trusted())
}

#[test]
fn genuine_documents_check_for_every_size_and_position() {
    let key = vector_key();
    for size in 1..=40u64 {
        for sequence in 1..=size {
            let checked = check_json(&inclusion(&key, size, sequence))
                .unwrap_or_else(|e| panic!("size {size} seq {sequence}: {e}"));
            assert_eq!(
                checked.cosigners,
                [format!("audit-office (key {})", other_key(42).key_id())]
            );
        }
        for old in 1..=size {
            check_json(&consistency(&key, old, size))
                .unwrap_or_else(|e| panic!("{old} -> {size}: {e}"));
        }
    }
}

#[test]
fn produced_documents_match_the_json_schemas() {
    let key = vector_key();
    let schema = |name: &str| -> serde_json::Value {
        let path = format!("{}/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let check = |schema: &serde_json::Value, doc: &serde_json::Value| {
        let validator = jsonschema::draft202012::new(schema).unwrap();
        let errors: Vec<String> = validator.iter_errors(doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        validator.is_valid(doc)
    };
    let inclusion_doc = serde_json::to_value(inclusion(&key, 7, 3)).unwrap();
    let consistency_doc = serde_json::to_value(consistency(&key, 3, 7)).unwrap();
    assert!(check(
        &schema("inclusion-proof.schema.json"),
        &inclusion_doc
    ));
    assert!(check(
        &schema("consistency-proof.schema.json"),
        &consistency_doc
    ));
    assert!(check(
        &schema("checkpoint.schema.json"),
        &inclusion_doc["checkpoint"]
    ));
    // The schemas are strict: an extra field or uppercase hex is refused, as the code does.
    let mut extra = inclusion_doc.clone();
    extra["surprise"] = 1.into();
    let validator = jsonschema::draft202012::new(&schema("inclusion-proof.schema.json")).unwrap();
    assert!(!validator.is_valid(&extra));
    let mut upper = inclusion_doc.clone();
    upper["event_hash"] = inclusion_doc["event_hash"]
        .as_str()
        .unwrap()
        .to_uppercase()
        .into();
    assert!(!validator.is_valid(&upper));
    // `audit checkpoint --json` prints a list of checkpoint documents (tests/checkpoints.rs
    // checks the command's own output).
    let list = serde_json::json!([
        inclusion_doc["checkpoint"],
        consistency_doc["new_checkpoint"]
    ]);
    assert!(check(&schema("checkpoint-list.schema.json"), &list));
    assert!(check(
        &schema("checkpoint-list.schema.json"),
        &serde_json::json!([])
    ));
    let validator = jsonschema::draft202012::new(&schema("checkpoint-list.schema.json")).unwrap();
    assert!(!validator.is_valid(&inclusion_doc["checkpoint"]));
    // A cosigner id is printable ASCII, so the schema's pattern and maxLength say
    // exactly what the checker accepts.
    let id = &schema("checkpoint.schema.json")["$defs"]["cosignature"]["properties"]["cosigner_id"];
    let ids = jsonschema::draft202012::new(id).unwrap();
    for (cosigner_id, valid) in [
        ("a".repeat(128), true),
        ("audit-office:hn".to_string(), true),
        ("a".repeat(129), false),
        ("ệ".repeat(42), false),
        ("audit office".to_string(), false),
        (String::new(), false),
    ] {
        assert_eq!(
            ids.is_valid(&serde_json::json!(cosigner_id)),
            valid,
            "{cosigner_id:?}"
        );
        assert_eq!(
            sign::check_cosigner_id(&cosigner_id).is_ok(),
            valid,
            "{cosigner_id:?}"
        );
    }
    // Each file carries the shared definitions identically.
    let defs = schema("checkpoint.schema.json")["$defs"].clone();
    assert_eq!(schema("inclusion-proof.schema.json")["$defs"], defs);
    assert_eq!(schema("consistency-proof.schema.json")["$defs"], defs);
    assert_eq!(schema("checkpoint-list.schema.json")["$defs"], defs);
}

#[test]
fn pinned_keys_decide_trust() {
    let doc = inclusion(&other_key(5), 5, 2);
    let json = serde_json::to_vec(&doc).unwrap();
    // Valid under its own key, but not the trusted one.
    assert!(proofs::check_document(&json, &[]).is_ok());
    assert!(matches!(
        proofs::check_document(&json, &trusted()),
        Err(CheckError::Untrusted(_))
    ));
    // A pin may be the public key itself: it must be the key that signed, whatever id
    // the document names (an id is 64 bits: a second key can share it).
    let public = |k: &KeyPair| hex::encode(k.public_key());
    assert!(proofs::check_document(&json, &[public(&other_key(5))]).is_ok());
    assert!(matches!(
        proofs::check_document(&json, &[public(&vector_key())]),
        Err(CheckError::Untrusted(_))
    ));
}

/// `--trust` takes a public key (64 hex digits) or a key id (16), in either case; anything
/// else is refused by the parser, naming what it expects.
#[test]
fn a_pin_is_a_public_key_or_a_key_id() {
    let key = "03A107BFF3CE10BE1D70DD18E74BC09967E4D6309BA50D5F1DDC8664125531B8";
    assert_eq!(ansinh::input::pinned_key(key).unwrap(), key.to_lowercase());
    assert_eq!(
        ansinh::input::pinned_key("3f9a0c1d2e4b5a69").unwrap(),
        "3f9a0c1d2e4b5a69"
    );
    for bad in [
        "3f9a0c1d2e4b5a6",
        "auditor-1",
        "",
        &key[..63],
        "zz9a0c1d2e4b5a69",
    ] {
        let e = ansinh::input::pinned_key(bad).unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{bad}: {e}");
    }
}

// ---- Fuzzing: mutations of genuine documents ------------------------------------------

/// Flips one hex digit (to another lowercase digit) at position `at` of `text`.
fn flip_hex(text: &mut String, at: usize) {
    if text.is_empty() {
        return;
    }
    let i = at % text.len();
    let c = text.as_bytes()[i];
    let to = if c == b'0' { '1' } else { '0' };
    text.replace_range(i..i + 1, &to.to_string());
}

#[derive(Clone, Debug)]
enum Mutation {
    Event(usize),
    EventHash(usize),
    ProofEventHash(usize),
    PathElement(usize, usize),
    Root(usize),
    CheckpointBytes(usize),
    Signature(usize),
    PublicKey(usize),
    KeyId(usize),
    ViewRoot(usize),
    ViewSize(u64),
    TreeSize(i64),
    LeafIndex(i64),
    Sequence(i64),
    TruncatePath,
    ExtendPath(usize),
    SwapCheckpoint(u64),
    WrongKeyResigned,
    Partition,
    Cosignature(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let i = any::<usize>();
    let d = prop_oneof![Just(-1i64), Just(1i64), -3i64..4, any::<i64>()];
    prop_oneof![
        i.prop_map(Mutation::Event),
        i.prop_map(Mutation::EventHash),
        i.prop_map(Mutation::ProofEventHash),
        (i, i).prop_map(|(a, b)| Mutation::PathElement(a, b)),
        i.prop_map(Mutation::Root),
        i.prop_map(Mutation::CheckpointBytes),
        i.prop_map(Mutation::Signature),
        i.prop_map(Mutation::PublicKey),
        i.prop_map(Mutation::KeyId),
        i.prop_map(Mutation::ViewRoot),
        any::<u64>().prop_map(Mutation::ViewSize),
        d.clone().prop_map(Mutation::TreeSize),
        d.clone().prop_map(Mutation::LeafIndex),
        d.prop_map(Mutation::Sequence),
        Just(Mutation::TruncatePath),
        i.prop_map(Mutation::ExtendPath),
        (1u64..40).prop_map(Mutation::SwapCheckpoint),
        Just(Mutation::WrongKeyResigned),
        Just(Mutation::Partition),
        i.prop_map(Mutation::Cosignature),
    ]
}

fn shift(x: u64, by: i64) -> u64 {
    x.wrapping_add(by as u64)
}

fn mutate_checkpoint(c: &mut CheckpointDocument, m: &Mutation) {
    match m {
        Mutation::CheckpointBytes(at) => flip_hex(&mut c.checkpoint, *at),
        Mutation::Signature(at) => flip_hex(&mut c.signature, *at),
        Mutation::PublicKey(at) => flip_hex(&mut c.public_key, *at),
        Mutation::KeyId(at) => flip_hex(&mut c.key_id, *at),
        Mutation::ViewRoot(at) => flip_hex(&mut c.decoded.root, *at),
        Mutation::ViewSize(size) => c.decoded.tree_size = *size,
        Mutation::Cosignature(at) => flip_hex(&mut c.cosignatures[0].signature, *at),
        Mutation::WrongKeyResigned => {
            // A well-formed checkpoint signed by someone else, with their key.
            let bytes = hex::decode(&c.checkpoint).unwrap();
            let mut body = CheckpointBody::decode(&bytes).unwrap();
            let wrong = other_key(66);
            body.key_id = wrong.key_id().into();
            let signed = sign::sign_checkpoint(&wrong, &body);
            *c = CheckpointDocument::new(&signed, &body, &wrong.public_key(), &[]);
        }
        _ => {}
    }
}

fn mutate_inclusion(doc: &mut InclusionDocument, m: &Mutation, key: &KeyPair) {
    match m {
        Mutation::Event(at) => flip_hex(&mut doc.event, *at),
        Mutation::EventHash(at) => flip_hex(&mut doc.event_hash, *at),
        Mutation::ProofEventHash(at) => flip_hex(&mut doc.proof.event_hash, *at),
        Mutation::PathElement(which, at) => {
            if !doc.proof.audit_path.is_empty() {
                let n = doc.proof.audit_path.len();
                flip_hex(&mut doc.proof.audit_path[which % n], *at);
            }
        }
        Mutation::Root(at) => flip_hex(&mut doc.proof.root, *at),
        Mutation::TreeSize(by) => doc.proof.tree_size = shift(doc.proof.tree_size, *by),
        Mutation::LeafIndex(by) => doc.proof.leaf_index = shift(doc.proof.leaf_index, *by),
        Mutation::Sequence(by) => doc.sequence = shift(doc.sequence, *by),
        Mutation::TruncatePath => {
            doc.proof.audit_path.pop();
        }
        Mutation::ExtendPath(at) => {
            let n = doc.proof.audit_path.len();
            doc.proof
                .audit_path
                .insert(at % (n + 1), hex::encode([7u8; 32]));
        }
        Mutation::SwapCheckpoint(size) => {
            let hashes: Vec<Hash32> = log("01", *size).iter().map(|e| e.1).collect();
            doc.checkpoint = checkpoint_doc(key, "01", &hashes);
        }
        Mutation::Partition => doc.partition = "02".into(),
        other => mutate_checkpoint(&mut doc.checkpoint, other),
    }
}

fn mutate_consistency(doc: &mut ConsistencyDocument, m: &Mutation, key: &KeyPair, flag: bool) {
    match m {
        Mutation::PathElement(which, at) => {
            if !doc.proof.path.is_empty() {
                let n = doc.proof.path.len();
                flip_hex(&mut doc.proof.path[which % n], *at);
            }
        }
        Mutation::Root(at) => {
            if flag {
                flip_hex(&mut doc.proof.old_root, *at)
            } else {
                flip_hex(&mut doc.proof.new_root, *at)
            }
        }
        Mutation::TreeSize(by) => doc.proof.new_size = shift(doc.proof.new_size, *by),
        Mutation::LeafIndex(by) | Mutation::Sequence(by) => {
            doc.proof.old_size = shift(doc.proof.old_size, *by)
        }
        Mutation::TruncatePath => {
            doc.proof.path.pop();
        }
        Mutation::ExtendPath(at) => {
            let n = doc.proof.path.len();
            doc.proof.path.insert(at % (n + 1), hex::encode([7u8; 32]));
        }
        Mutation::SwapCheckpoint(size) => {
            let hashes: Vec<Hash32> = log("01", *size).iter().map(|e| e.1).collect();
            if flag {
                doc.old_checkpoint = checkpoint_doc(key, "01", &hashes);
            } else {
                doc.new_checkpoint = checkpoint_doc(key, "01", &hashes);
            }
        }
        Mutation::Partition => doc.partition = "02".into(),
        Mutation::Event(_) => std::mem::swap(&mut doc.old_checkpoint, &mut doc.new_checkpoint),
        other => {
            if flag {
                mutate_checkpoint(&mut doc.old_checkpoint, other)
            } else {
                mutate_checkpoint(&mut doc.new_checkpoint, other)
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A mutated inclusion document is accepted only if the mutation changed nothing.
    #[test]
    fn mutated_inclusion_documents_are_rejected(
        size in 1u64..40,
        pick in any::<u64>(),
        m in mutation(),
    ) {
        let key = vector_key();
        let sequence = pick % size + 1;
        let genuine = inclusion(&key, size, sequence);
        let mut doc = genuine.clone();
        mutate_inclusion(&mut doc, &m, &key);
        let result = check_json(&doc);
        prop_assert!(result.is_err() == (doc != genuine), "{m:?}: {result:?}");
    }

    #[test]
    fn mutated_consistency_documents_are_rejected(
        new in 1u64..40,
        pick in any::<u64>(),
        m in mutation(),
        flag in any::<bool>(),
    ) {
        let key = vector_key();
        let old = pick % new + 1;
        let genuine = consistency(&key, old, new);
        let mut doc = genuine.clone();
        mutate_consistency(&mut doc, &m, &key, flag);
        let result = check_json(&doc);
        prop_assert!(result.is_err() == (doc != genuine), "{m:?}: {result:?}");
    }

    /// Byte-level damage to the JSON text: accepted only if it still means the same.
    #[test]
    fn damaged_json_is_rejected_or_means_the_same(
        size in 1u64..20,
        at in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let genuine = inclusion(&vector_key(), size, size);
        let text = serde_json::to_vec(&genuine).unwrap();
        let mut damaged = text.clone();
        let i = at % damaged.len();
        if cut { damaged.truncate(i) } else { damaged[i] = byte }
        if proofs::check_document(&damaged, &trusted()).is_ok() {
            let parsed: InclusionDocument = serde_json::from_slice(&damaged).unwrap();
            prop_assert_eq!(parsed, genuine);
        }
    }

    /// Arbitrary input never panics and is never accepted.
    #[test]
    fn arbitrary_input_is_rejected(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(proofs::check_document(&bytes, &[]).is_err());
    }
}

#[test]
fn structurally_hostile_documents_are_rejected_without_panic() {
    let key = vector_key();
    let genuine = serde_json::to_value(inclusion(&key, 9, 4)).unwrap();
    let mut cases: Vec<serde_json::Value> = Vec::new();
    for (pointer, value) in [
        ("/sequence", serde_json::json!(0)),
        ("/sequence", serde_json::json!(-1)),
        ("/sequence", serde_json::json!(1e30)),
        ("/proof/tree_size", serde_json::json!(u64::MAX)),
        ("/proof/leaf_index", serde_json::json!(u64::MAX)),
        ("/proof/audit_path", serde_json::json!([])),
        (
            "/proof/audit_path",
            serde_json::json!(vec!["00".repeat(32); 10_000]),
        ),
        ("/event", serde_json::json!("")),
        ("/event", serde_json::json!("zz")),
        ("/event", serde_json::json!("0")),
        ("/checkpoint/checkpoint", serde_json::json!("")),
        (
            "/checkpoint/checkpoint",
            serde_json::json!("00".repeat(5000)),
        ),
        ("/checkpoint/signature", serde_json::json!("00")),
        ("/checkpoint/public_key", serde_json::json!("00".repeat(32))),
        ("/checkpoint/cosignatures", serde_json::json!(null)),
        ("/format", serde_json::json!(CONSISTENCY_FORMAT)),
        ("/format", serde_json::json!("ansinh/v2/inclusion-proof")),
    ] {
        let mut doc = genuine.clone();
        *doc.pointer_mut(pointer).unwrap() = value;
        cases.push(doc);
    }
    let mut missing = genuine.clone();
    missing.as_object_mut().unwrap().remove("checkpoint");
    cases.push(missing);
    for (i, doc) in cases.iter().enumerate() {
        assert!(
            proofs::check_document(&serde_json::to_vec(doc).unwrap(), &[]).is_err(),
            "case {i} accepted"
        );
    }
    assert!(matches!(
        proofs::check_document(&vec![b' '; proofs::PROOF_DOCUMENT_BYTES_MAX + 1], &[]),
        Err(CheckError::TooLarge(_))
    ));
}

/// A document given as a pipe (`check-proof <(curl …)`) has no length to check first:
/// the bound is kept by the read, which stops one byte past it, whatever the other end
/// keeps sending.
#[test]
fn check_proof_reads_a_pipe_no_further_than_its_bound() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("proof.json");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let sending = fifo.clone();
    let sender = std::thread::spawn(move || {
        let mut pipe = std::fs::OpenOptions::new()
            .write(true)
            .open(sending)
            .unwrap();
        let chunk = vec![b' '; 1 << 20];
        let mut sent = 0usize;
        // 64 MiB, or until the reader closes its end (EPIPE).
        while sent < 64 << 20 && pipe.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ansinh"))
        .args(["audit", "check-proof"])
        .arg(&fifo)
        .env("ANSINH_NATS_SERVER", "/nonexistent/nats-server")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let max = proofs::PROOF_DOCUMENT_BYTES_MAX;
    assert!(
        stdout.contains(&format!("document of {} bytes exceeds {max}", max + 1)),
        "{stdout}"
    );
    assert!(
        sender.join().unwrap() < 64 << 20,
        "the reader took the whole stream"
    );
}
