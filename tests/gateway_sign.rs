//! Gateway signatures and the key registry, without a server: the vector of
//! docs/GATEWAYS.md §4 (reproduced independently by scripts/gateway-vector.py), one
//! refusal per cause, `admin add-gateway`'s files, and fuzzing of `verify_post`
//! (no altered post verifies, none panics).

use ansinh::checkpoint::sign::KeyPair;
use ansinh::domain::payments::ids;
use ansinh::gateway::keys::{self, AddGatewayError, GatewayKey, Registry, RegistryError};
use ansinh::gateway::sign::{self, GatewayAuthError};
use ansinh::proto::{GatewayPost, SignedGatewayPost};
use proptest::prelude::*;
use prost::Message;

/// The vector key: secret seed bytes 0x20, 0x21, ..., 0x3f.
fn vector_key() -> KeyPair {
    let seed: [u8; 32] = std::array::from_fn(|i| (i + 32) as u8);
    KeyPair::from_seed(&seed)
}

fn other_key(n: u8) -> KeyPair {
    KeyPair::from_seed(&[n; 32])
}

fn vector_post() -> GatewayPost {
    GatewayPost {
        gateway_id: "vcb".into(),
        instruction_id: "01/pay:17:2026-03:1".into(),
        outcome: "settled".into(),
        gateway_txn_id: "VCB-20260305-000042".into(),
        amount: "1500000".into(),
        beneficiary_ref: "0100007-000001/m1".into(),
        posted_at_unix_ms: 1_772_699_400_000,
        reason: String::new(),
    }
}

const VECTOR_PUBLIC_KEY: &str = "29acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7";
const VECTOR_KEY_ID: &str = "39833a149ece5611";
const VECTOR_POST: &str = "0a03766362121330312f7061793a31373a323032362d30333a311a07736574746c656422135643422d32303236303330352d3030303034322a07313530303030303211303130303030372d3030303030312f6d3138c0eef8e8cb33";
const VECTOR_SIGNATURE: &str = "3f89c2c467c478ca2c83bf688d529fdecf03fc1251033a3ad14e6f74ab7a9027e526c2051d4e3e95c31758e79bfe1be3cc7ebad04c5405d1b447d653eb19cf07";

/// vcb has the vector key and key 3; momo has key 4.
fn registry() -> Registry {
    let entry = |gateway: &str, key: &KeyPair| GatewayKey {
        gateway_id: gateway.into(),
        key_id: key.key_id().into(),
        public_key: key.public_key(),
    };
    Registry::new(vec![
        entry("vcb", &vector_key()),
        entry("vcb", &other_key(3)),
        entry("momo", &other_key(4)),
    ])
    .unwrap()
}

#[test]
fn the_vector_in_gateways_md_is_what_the_code_computes() {
    let key = vector_key();
    let signed = sign::sign_post(&key, &vector_post());
    assert_eq!(hex::encode(key.public_key()), VECTOR_PUBLIC_KEY);
    assert_eq!(key.key_id(), VECTOR_KEY_ID);
    assert_eq!(signed.key_id, VECTOR_KEY_ID);
    assert_eq!(hex::encode(&signed.post), VECTOR_POST);
    assert_eq!(hex::encode(&signed.signature), VECTOR_SIGNATURE);
    // The signature is over the domain prefix and the bytes, nothing else.
    let mut message = b"ansinh/v1/gateway-post\0".to_vec();
    message.extend_from_slice(&signed.post);
    let public = ed25519_dalek::VerifyingKey::from_bytes(&key.public_key()).unwrap();
    let signature = ed25519_dalek::Signature::from_slice(&signed.signature).unwrap();
    public.verify_strict(&message, &signature).unwrap();
    assert_eq!(
        sign::verify_post(&registry(), "vcb", &signed).unwrap(),
        vector_post()
    );
    // Its ids are ones the ledger gives out (§10), so a gateway copying the vector's
    // shapes posts something the ledger reads.
    let post = vector_post();
    let (partition, instruction) = post.instruction_id.split_once('/').unwrap();
    ansinh::chain::Partition::new(partition).unwrap();
    ansinh::domain::payments::instructions::InstructionId::parse(instruction).unwrap();
    let (household, member) = post.beneficiary_ref.split_once('/').unwrap();
    ansinh::domain::ids::HouseholdId::parse(household).unwrap();
    let member = ids::MemberRef::parse(member).unwrap();
    assert!(ids::member_number(&member).is_some());
    // The document states the same values.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/GATEWAYS.md"))
        .expect("docs/GATEWAYS.md");
    for value in [
        VECTOR_PUBLIC_KEY,
        VECTOR_KEY_ID,
        VECTOR_POST,
        VECTOR_SIGNATURE,
        &post.instruction_id,
        &post.beneficiary_ref,
        &post.gateway_txn_id,
    ] {
        assert!(doc.contains(value), "docs/GATEWAYS.md lacks {value}");
    }
    assert!(doc.contains("ansinh/v1/gateway-post"));
}

/// Signs arbitrary bytes as a post, the way a gateway would.
fn sign_raw(key: &KeyPair, bytes: &[u8]) -> bytes::Bytes {
    use ed25519_dalek::Signer;
    let signing = ed25519_dalek::SigningKey::from_bytes(&key.seed());
    signing
        .sign(&sign::signed_message(bytes))
        .to_bytes()
        .to_vec()
        .into()
}

fn refused(gateway: &str, signed: &SignedGatewayPost) -> GatewayAuthError {
    sign::verify_post(&registry(), gateway, signed).expect_err("must be refused")
}

fn signed_by(key: &KeyPair, edit: impl FnOnce(&mut GatewayPost)) -> SignedGatewayPost {
    let mut post = vector_post();
    edit(&mut post);
    sign::sign_post(key, &post)
}

#[test]
fn each_cause_of_refusal_has_its_own_error() {
    let good = sign::sign_post(&vector_key(), &vector_post());
    // A second key of the same gateway is fine.
    sign::verify_post(&registry(), "vcb", &signed_by(&other_key(3), |_| {})).unwrap();

    let mut bad_signature = good.clone();
    let mut s = bad_signature.signature.to_vec();
    s[0] ^= 1;
    bad_signature.signature = s.into();
    assert_eq!(
        refused("vcb", &bad_signature),
        GatewayAuthError::BadSignature
    );

    let mut short_signature = good.clone();
    short_signature.signature = good.signature.slice(..63);
    assert_eq!(
        refused("vcb", &short_signature),
        GatewayAuthError::BadSignature
    );

    let mut altered = good.clone();
    let mut p = altered.post.to_vec();
    *p.last_mut().unwrap() ^= 1;
    altered.post = p.into();
    assert_eq!(refused("vcb", &altered), GatewayAuthError::BadSignature);

    let mut unknown_key = good.clone();
    unknown_key.key_id = other_key(5).key_id().into();
    assert!(matches!(
        refused("vcb", &unknown_key),
        GatewayAuthError::UnknownKey(_)
    ));

    // momo's key, on vcb's subject, whatever the post says.
    let momo_signed = signed_by(&other_key(4), |_| {});
    assert!(matches!(
        refused("vcb", &momo_signed),
        GatewayAuthError::KeyOfAnotherGateway { .. }
    ));
    // vcb's signature over a post relabelled with momo's key id.
    let mut relabelled = good.clone();
    relabelled.key_id = other_key(4).key_id().into();
    assert!(matches!(
        refused("vcb", &relabelled),
        GatewayAuthError::KeyOfAnotherGateway { .. }
    ));
    // vcb's key and post, sent on momo's subject.
    assert!(matches!(
        refused("momo", &good),
        GatewayAuthError::KeyOfAnotherGateway { .. }
    ));

    // vcb signs a post that claims to be momo's, on vcb's subject.
    let claims_momo = signed_by(&vector_key(), |p| p.gateway_id = "momo".into());
    assert_eq!(
        refused("vcb", &claims_momo),
        GatewayAuthError::GatewayMismatch {
            inside: "momo".into(),
            transport: "vcb".into()
        }
    );

    assert!(matches!(
        refused("bidv", &good),
        GatewayAuthError::UnknownGateway(_)
    ));

    let mut oversized = good.clone();
    oversized.post = vec![0u8; sign::POST_BYTES_MAX + 1].into();
    assert!(matches!(
        refused("vcb", &oversized),
        GatewayAuthError::Oversized(_)
    ));

    // Signed garbage: the signature is right, the bytes are not a post.
    let garbage = vec![0xff, 0xff, 0xff];
    let key = vector_key();
    let signed_garbage = SignedGatewayPost {
        signature: sign_raw(&key, &garbage),
        post: garbage.into(),
        key_id: key.key_id().into(),
    };
    assert!(matches!(
        refused("vcb", &signed_garbage),
        GatewayAuthError::Undecodable(_)
    ));

    // Signed, decodable, but with an unknown field appended: not canonical.
    let mut extended = vector_post().encode_to_vec();
    extended.extend_from_slice(&[0x50, 0x01]); // field 10, varint 1
    let signed_extended = SignedGatewayPost {
        signature: sign_raw(&key, &extended),
        post: extended.into(),
        key_id: key.key_id().into(),
    };
    assert_eq!(
        refused("vcb", &signed_extended),
        GatewayAuthError::NonCanonical
    );
}

/// A change to a post, named by the field it breaks.
type Edit = Box<dyn Fn(&mut GatewayPost)>;

#[test]
fn malformed_fields_are_refused_even_when_signed() {
    let key = vector_key();
    let cases: Vec<(&str, Edit)> = vec![
        ("outcome", Box::new(|p| p.outcome = "paid".into())),
        ("amount", Box::new(|p| p.amount = "1500000.5".into())),
        ("amount", Box::new(|p| p.amount = "0".into())),
        ("amount", Box::new(|p| p.amount = "-5".into())),
        ("amount", Box::new(|p| p.amount = "01500000".into())),
        ("amount", Box::new(|p| p.amount = "1,500,000".into())),
        ("amount", Box::new(|p| p.amount = "1000000000000001".into())),
        ("instruction_id", Box::new(|p| p.instruction_id.clear())),
        (
            "gateway_txn_id",
            Box::new(|p| p.gateway_txn_id = "x".repeat(129)),
        ),
        (
            "beneficiary_ref",
            Box::new(|p| p.beneficiary_ref = "a\nb".into()),
        ),
        ("reason", Box::new(|p| p.reason = "r".repeat(513))),
        ("posted_at_unix_ms", Box::new(|p| p.posted_at_unix_ms = 0)),
    ];
    for (field, edit) in cases {
        let signed = signed_by(&key, |p| edit(p));
        match refused("vcb", &signed) {
            GatewayAuthError::Malformed { field: f, .. } => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    // The largest amount is fine.
    sign::verify_post(
        &registry(),
        "vcb",
        &signed_by(&key, |p| p.amount = "1000000000000000".into()),
    )
    .unwrap();
}

/// A transaction id follows the book's rule for references
/// (`domain::payments::ids::check_ref`: 1 to 64 printable ASCII characters, no space), so
/// an id the book would refuse is refused at the transport, typed, before the sink: no
/// gateway is told its result verified and then finds it can never be recorded.
#[test]
fn a_transaction_id_the_book_refuses_is_refused_at_the_transport() {
    let key = vector_key();
    for txn in [
        "x".repeat(ids::REF_CHARS_MAX + 1),
        "VCB 20260305 000042".to_string(),
        "VCB-Ö-000042".to_string(),
        "VCB\u{a0}000042".to_string(),
    ] {
        assert!(ids::GatewayTxnId::parse(&txn).is_err(), "{txn:?}");
        let error = refused("vcb", &signed_by(&key, |p| p.gateway_txn_id = txn.clone()));
        match &error {
            GatewayAuthError::Malformed { field, reason } => {
                assert_eq!(*field, "gateway_txn_id", "{txn:?}");
                assert!(reason.contains("64"), "says the bound: {reason}");
            }
            other => panic!("{txn:?}: {other:?}"),
        }
        assert_eq!(error.kind(), "malformed_post");
    }
    // The longest id the book takes passes the transport too.
    let longest = "V".repeat(ids::REF_CHARS_MAX);
    assert!(ids::GatewayTxnId::parse(&longest).is_ok());
    let post = sign::verify_post(
        &registry(),
        "vcb",
        &signed_by(&key, |p| p.gateway_txn_id = longest.clone()),
    )
    .unwrap();
    assert_eq!(post.gateway_txn_id, longest);
}

#[test]
fn error_kinds_are_distinct() {
    let errors = [
        GatewayAuthError::Oversized(0),
        GatewayAuthError::UnknownGateway(String::new()),
        GatewayAuthError::UnknownKey(String::new()),
        GatewayAuthError::KeyOfAnotherGateway {
            key_id: String::new(),
            owner: String::new(),
            gateway: String::new(),
        },
        GatewayAuthError::BadSignature,
        GatewayAuthError::Undecodable(String::new()),
        GatewayAuthError::NonCanonical,
        GatewayAuthError::GatewayMismatch {
            inside: String::new(),
            transport: String::new(),
        },
        GatewayAuthError::Malformed {
            field: "x",
            reason: String::new(),
        },
    ];
    let kinds: std::collections::BTreeSet<_> = errors.iter().map(|e| e.kind()).collect();
    assert_eq!(kinds.len(), errors.len());
}

// ---- The registry and a new gateway key -----------------------------------------------------

#[test]
fn the_registry_round_trips_and_refuses_bad_entries() {
    let r = registry();
    assert_eq!(Registry::from_json(&r.to_json()).unwrap(), r);
    assert_eq!(r.gateways(), vec!["momo", "vcb"]);

    let k = vector_key();
    let entry = |id: &str, public_key: &str, key_id: &str| {
        format!(r#"[{{"id":"{id}","public_key":"{public_key}","key_id":"{key_id}"}}]"#)
    };
    let pk = hex::encode(k.public_key());
    let good = entry("vcb", &pk, k.key_id());
    assert_eq!(Registry::from_json(&good).unwrap().keys().len(), 1);
    assert!(matches!(
        Registry::from_json(&entry("VCB", &pk, k.key_id())),
        Err(RegistryError::InvalidGatewayId(_))
    ));
    assert!(matches!(
        Registry::from_json(&entry("v.cb", &pk, k.key_id())),
        Err(RegistryError::InvalidGatewayId(_))
    ));
    assert!(matches!(
        Registry::from_json(&entry("vcb", &pk[..62], k.key_id())),
        Err(RegistryError::InvalidPublicKey { .. })
    ));
    assert!(matches!(
        Registry::from_json(&entry("vcb", &pk, other_key(3).key_id())),
        Err(RegistryError::KeyIdMismatch { .. })
    ));
    let twice = format!(
        "[{},{}]",
        good.trim_matches(['[', ']']),
        entry("momo", &pk, k.key_id()).trim_matches(['[', ']'])
    );
    assert!(matches!(
        Registry::from_json(&twice),
        Err(RegistryError::DuplicateKey(_))
    ));
    assert!(matches!(
        Registry::from_json(r#"[{"id":"vcb"}]"#),
        Err(RegistryError::Json(_))
    ));
    assert!(matches!(
        Registry::from_json(&good.replace("}]", r#","extra":1}]"#)),
        Err(RegistryError::Json(_))
    ));
}

#[test]
fn a_new_gateway_key_is_a_private_key_file_that_signs_for_its_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let vcb_key = dir.path().join("vcb.key");
    let added = keys::new_gateway_key("vcb", &vcb_key).unwrap();
    assert_eq!(added.gateway_id, "vcb");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&vcb_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key = keys::load_key(&vcb_key).unwrap();
    assert_eq!(key.key_id(), added.key_id);
    assert_eq!(key.public_key(), added.public_key);
    let second = keys::new_gateway_key("vcb", &dir.path().join("vcb-2.key")).unwrap();
    assert_ne!(second.key_id, added.key_id);
    // The key file signs posts a registry holding its public key accepts.
    let registry = Registry::new(vec![added.clone(), second]).unwrap();
    let signed = sign::sign_post(&key, &vector_post());
    sign::verify_post(&registry, "vcb", &signed).unwrap();

    // An existing key file is never overwritten; a bad id writes nothing.
    assert!(matches!(
        keys::new_gateway_key("bidv", &vcb_key),
        Err(AddGatewayError::KeyFile(_))
    ));
    let bad = dir.path().join("x.key");
    assert!(matches!(
        keys::new_gateway_key("Bad Id", &bad),
        Err(AddGatewayError::InvalidGatewayId(_))
    ));
    assert!(!bad.exists());
    assert_eq!(keys::load_key(&vcb_key).unwrap().key_id(), key.key_id());
}

/// A gateway's NATS user may read only its inbox, `_INBOX_<id>`: an id whose inbox is
/// another user's (the auditor's, which receives the streams' replies, or the ledger's)
/// would let the gateway read that user's replies. Such an id is refused, in plain words,
/// wherever a gateway id enters: its key, the registry, the transports' rule.
#[test]
fn a_gateway_may_not_take_the_inbox_of_another_nats_user() {
    use ansinh::gateway::{AUDITOR_INBOX_PREFIX, AUDITOR_USER, LEDGER_USER, inbox_prefix};
    assert_eq!(inbox_prefix(AUDITOR_USER), AUDITOR_INBOX_PREFIX);
    let dir = tempfile::tempdir().unwrap();
    for id in [AUDITOR_USER, LEDGER_USER] {
        assert!(!ansinh::gateway::is_gateway_id(id), "{id}");
        let file = dir.path().join(format!("{id}.key"));
        let refused = keys::new_gateway_key(id, &file);
        assert!(
            matches!(&refused, Err(AddGatewayError::ReservedGatewayId(i)) if i == id),
            "{refused:?}"
        );
        assert!(!file.exists());
        let pair = other_key(7);
        let key = GatewayKey {
            gateway_id: id.into(),
            key_id: pair.key_id().into(),
            public_key: pair.public_key(),
        };
        let refused = Registry::new(vec![key]);
        assert!(
            matches!(&refused, Err(RegistryError::ReservedGatewayId(i)) if i == id),
            "{refused:?}"
        );
        assert!(
            refused.unwrap_err().to_string().contains("inbox"),
            "says why"
        );
    }
    // A longer id that merely starts with one is its own inbox.
    assert!(ansinh::gateway::is_gateway_id("auditor-bank"));
}

// ---- Fuzzing: altered posts never verify and never panic --------------------------------

#[derive(Debug, Clone)]
enum Mutation {
    FlipPostBit(usize),
    FlipSignatureBit(usize),
    TruncatePost(usize),
    AppendToPost(Vec<u8>),
    ReplaceSignature(Vec<u8>),
    ReplaceKeyId(String),
    ReplacePost(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::FlipPostBit),
        any::<usize>().prop_map(Mutation::FlipSignatureBit),
        any::<usize>().prop_map(Mutation::TruncatePost),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::AppendToPost),
        prop::collection::vec(any::<u8>(), 0..130).prop_map(Mutation::ReplaceSignature),
        "[0-9a-f]{0,20}|.{0,20}".prop_map(Mutation::ReplaceKeyId),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Mutation::ReplacePost),
    ]
}

fn apply(signed: &SignedGatewayPost, m: &Mutation) -> Option<SignedGatewayPost> {
    let mut out = signed.clone();
    let mut post = signed.post.to_vec();
    let mut signature = signed.signature.to_vec();
    match m {
        Mutation::FlipPostBit(_) | Mutation::TruncatePost(_) if post.is_empty() => return None,
        Mutation::FlipSignatureBit(_) if signature.is_empty() => return None,
        Mutation::FlipPostBit(i) => {
            let i = i % (post.len() * 8);
            post[i / 8] ^= 1 << (i % 8);
        }
        Mutation::FlipSignatureBit(i) => {
            let i = i % (signature.len() * 8);
            signature[i / 8] ^= 1 << (i % 8);
        }
        Mutation::TruncatePost(n) => post.truncate(n % post.len()),
        Mutation::AppendToPost(extra) => post.extend_from_slice(extra),
        Mutation::ReplaceSignature(s) => signature = s.clone(),
        Mutation::ReplaceKeyId(k) => {
            // The other key of the same gateway cannot verify vcb's vector signature
            // either, so every replacement but the key id itself must fail.
            if *k == signed.key_id {
                return None;
            }
            out.key_id = k.clone();
        }
        Mutation::ReplacePost(p) => post = p.clone(),
    }
    if post == signed.post.as_ref()
        && signature == signed.signature.as_ref()
        && out.key_id == signed.key_id
    {
        return None;
    }
    out.post = post.into();
    out.signature = signature.into();
    Some(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn mutated_signed_posts_never_verify(
        mutations in prop::collection::vec(mutation(), 1..4),
        gateway in prop::sample::select(vec!["vcb", "momo", "bidv", ""]),
    ) {
        let good = sign::sign_post(&vector_key(), &vector_post());
        let registry = registry();
        let mut signed = good.clone();
        for m in &mutations {
            if let Some(next) = apply(&signed, m) {
                signed = next;
            }
        }
        let changed = signed != good;
        let result = sign::verify_post(&registry, gateway, &signed);
        if changed || gateway != "vcb" {
            prop_assert!(result.is_err(), "accepted: {signed:?} on {gateway}");
        } else {
            prop_assert_eq!(result.unwrap(), vector_post());
        }
    }

    #[test]
    fn arbitrary_signed_posts_never_panic(
        post in prop::collection::vec(any::<u8>(), 0..400),
        signature in prop::collection::vec(any::<u8>(), 0..100),
        key_id in ".{0,24}",
        gateway in ".{0,12}",
    ) {
        let signed = SignedGatewayPost { post: post.into(), signature: signature.into(), key_id };
        prop_assert!(sign::verify_post(&registry(), &gateway, &signed).is_err());
    }

    #[test]
    fn arbitrary_request_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(signed) = SignedGatewayPost::decode(bytes.as_slice()) {
            prop_assert!(sign::verify_post(&registry(), "vcb", &signed).is_err());
        }
    }
}
