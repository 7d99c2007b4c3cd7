//! What is signed, and how: checkpoints, cosignatures and key rotations.
//!
//! Pure functions only (no clock, no I/O, no randomness: keys and times arrive as
//! arguments). docs/PROOFS.md §7 is the normative text for auditors and must agree
//! with this file byte for byte; `tests/checkpoints_offline.rs` checks its vector.
//!
//! Every signature is Ed25519 (RFC 8032, checked with `verify_strict`) over an ASCII
//! domain prefix that ends in one zero byte, followed by fixed-length fields and at
//! most one variable-length field at the end, so no two messages of different kinds
//! or contents can be the same bytes.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;

use crate::chain::{Partition, PartitionError};
use crate::merkle::Hash32;
use crate::proto;

/// Ed25519 by the ledger key over `CHECKPOINT_SIGNATURE_DOMAIN || checkpoint bytes`.
pub const CHECKPOINT_SIGNATURE_DOMAIN: &[u8] = b"ansinh/v1/checkpoint\0";
/// `BLAKE3(CHECKPOINT_HASH_DOMAIN || checkpoint bytes)` names a checkpoint in cosignatures.
pub const CHECKPOINT_HASH_DOMAIN: &[u8] = b"ansinh/v1/checkpoint-hash\0";
/// Ed25519 by a cosigner over `COSIGNATURE_DOMAIN || checkpoint_hash || i64be(signed_at) || cosigner_id`.
pub const COSIGNATURE_DOMAIN: &[u8] = b"ansinh/v1/cosignature\0";
/// Ed25519 by the previous ledger key over `KEY_ROTATION_DOMAIN || new public key`.
pub const KEY_ROTATION_DOMAIN: &[u8] = b"ansinh/v1/key-rotation\0";
/// Domain of an operator's exclusion of a message (docs/CHAIN.md, section 4a).
pub const EXCLUSION_DOMAIN: &[u8] = b"ansinh/v1/exclusion\0";
/// Domain of an operator's exclusion of a run of messages (docs/CHAIN.md, section 4a).
pub const EXCLUSION_RUN_DOMAIN: &[u8] = b"ansinh/v1/exclusion-run\0";
/// The only checkpoint format this build writes and accepts.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;
/// A key id is this many lowercase hex digits of BLAKE3(public key).
pub const KEY_ID_CHARS: usize = 16;
/// Largest encoded checkpoint accepted. A real one is about 140 bytes; anything much
/// larger is hostile and is refused before decoding.
pub const CHECKPOINT_BYTES_MAX: usize = 1024;
/// Longest cosigner id, in bytes.
pub const COSIGNER_ID_BYTES_MAX: usize = 128;

/// Why a signed object was refused. Every variant means "do not trust it"; they differ
/// in what the caller reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// More than CHECKPOINT_BYTES_MAX bytes: refuse without decoding.
    #[error("checkpoint of {0} bytes exceeds {CHECKPOINT_BYTES_MAX}")]
    Oversized(usize),
    /// The signed bytes are not a protobuf Checkpoint.
    #[error("undecodable checkpoint: {0}")]
    Undecodable(String),
    /// Written by a format this build does not know.
    #[error("unknown checkpoint format version {0}")]
    UnknownFormat(u32),
    /// A field has the wrong length or an impossible value.
    #[error("malformed {field}: {reason}")]
    Malformed { field: &'static str, reason: String },
    /// The key id outside the signed bytes differs from the one inside them.
    #[error("key id {outer:?} differs from the signed key id {inner:?}")]
    KeyIdMismatch { outer: String, inner: String },
    /// The public key offered is not the key the object names.
    #[error("the public key has id {actual}, the signature names {expected}")]
    WrongKey { expected: String, actual: String },
    /// The signature does not verify: forged or altered.
    #[error("{what}: signature does not verify")]
    BadSignature { what: &'static str },
}

/// The id of a public key: the first 16 lowercase hex digits of BLAKE3(public key).
pub fn key_id(public_key: &[u8; 32]) -> String {
    let mut id = blake3::hash(public_key).to_hex().to_string();
    id.truncate(KEY_ID_CHARS);
    id
}

/// A secret Ed25519 key with its id: the ledger's, or a cosigner's.
pub struct KeyPair {
    signing: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "KeyPair({})", self.key_id)
    }
}

impl KeyPair {
    /// The key whose 32-byte secret seed is `seed` (RFC 8032 private key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let key_id = key_id(signing.verifying_key().as_bytes());
        Self { signing, key_id }
    }

    /// The secret seed, for writing the key file.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Ed25519 over `domain || message` (the gateway transport signs with it too).
    pub(crate) fn sign(&self, domain: &[u8], message: &[u8]) -> [u8; 64] {
        let mut bytes = Vec::with_capacity(domain.len() + message.len());
        bytes.extend_from_slice(domain);
        bytes.extend_from_slice(message);
        self.signing.sign(&bytes).to_bytes()
    }
}

fn verify(
    public_key: &[u8; 32],
    domain: &[u8],
    message: &[u8],
    signature: &[u8],
    what: &'static str,
) -> Result<(), SignatureError> {
    let bad = || SignatureError::BadSignature { what };
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| bad())?;
    let signature = Signature::from_slice(signature).map_err(|_| bad())?;
    let mut bytes = Vec::with_capacity(domain.len() + message.len());
    bytes.extend_from_slice(domain);
    bytes.extend_from_slice(message);
    // verify_strict refuses small-order keys and non-canonical signatures, so one
    // message has one valid signature encoding per key.
    key.verify_strict(&bytes, &signature).map_err(|_| bad())
}

fn hash32(bytes: &[u8], field: &'static str) -> Result<Hash32, SignatureError> {
    bytes.try_into().map_err(|_| SignatureError::Malformed {
        field,
        reason: format!("{} bytes, expected 32", bytes.len()),
    })
}

/// A checkpoint as plain Rust: what the ledger commits to for one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointBody {
    pub partition: Partition,
    pub tree_size: u64,
    pub root: Hash32,
    pub head_sequence: u64,
    pub head_hash: Hash32,
    pub issued_at_unix_ms: i64,
    pub key_id: String,
}

impl CheckpointBody {
    /// The protobuf bytes that get signed. Encoded once; from then on only these bytes
    /// are hashed, signed and stored, never a re-encoding.
    pub fn encode(&self) -> Vec<u8> {
        proto::Checkpoint {
            format_version: CHECKPOINT_FORMAT_VERSION,
            partition: self.partition.to_string(),
            tree_size: self.tree_size,
            root: self.root.to_vec().into(),
            head_sequence: self.head_sequence,
            head_hash: self.head_hash.to_vec().into(),
            issued_at_unix_ms: self.issued_at_unix_ms,
            key_id: self.key_id.clone(),
        }
        .encode_to_vec()
    }

    /// Decodes and checks the shape of signed checkpoint bytes, without any signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, SignatureError> {
        if bytes.len() > CHECKPOINT_BYTES_MAX {
            return Err(SignatureError::Oversized(bytes.len()));
        }
        let c = proto::Checkpoint::decode(bytes)
            .map_err(|e| SignatureError::Undecodable(e.to_string()))?;
        if c.format_version != CHECKPOINT_FORMAT_VERSION {
            return Err(SignatureError::UnknownFormat(c.format_version));
        }
        let partition = Partition::new(&c.partition).map_err(|e: PartitionError| {
            SignatureError::Malformed {
                field: "partition",
                reason: e.to_string(),
            }
        })?;
        if c.tree_size == 0 {
            return Err(SignatureError::Malformed {
                field: "tree_size",
                reason: "a checkpoint covers at least one event".into(),
            });
        }
        if c.head_sequence != c.tree_size {
            return Err(SignatureError::Malformed {
                field: "head_sequence",
                reason: format!("{} differs from tree_size {}", c.head_sequence, c.tree_size),
            });
        }
        if !is_key_id(&c.key_id) {
            return Err(SignatureError::Malformed {
                field: "key_id",
                reason: format!("{:?} is not {KEY_ID_CHARS} lowercase hex digits", c.key_id),
            });
        }
        Ok(Self {
            partition,
            tree_size: c.tree_size,
            root: hash32(&c.root, "root")?,
            head_sequence: c.head_sequence,
            head_hash: hash32(&c.head_hash, "head_hash")?,
            issued_at_unix_ms: c.issued_at_unix_ms,
            key_id: c.key_id,
        })
    }
}

/// True for exactly KEY_ID_CHARS lowercase hex digits.
pub fn is_key_id(text: &str) -> bool {
    text.len() == KEY_ID_CHARS && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Signs a checkpoint. Asserts the body names this key: the caller builds it so.
pub fn sign_checkpoint(key: &KeyPair, body: &CheckpointBody) -> proto::SignedCheckpoint {
    assert_eq!(body.key_id, key.key_id, "checkpoint names the signing key");
    let bytes = body.encode();
    let signature = key.sign(CHECKPOINT_SIGNATURE_DOMAIN, &bytes);
    proto::SignedCheckpoint {
        checkpoint: bytes.into(),
        signature: signature.to_vec().into(),
        key_id: key.key_id.clone(),
    }
}

/// Checks a signed checkpoint against the public key it should be signed with and
/// returns its body. The key's id must be the id the checkpoint names.
pub fn open_checkpoint(
    signed: &proto::SignedCheckpoint,
    public_key: &[u8; 32],
) -> Result<CheckpointBody, SignatureError> {
    let body = CheckpointBody::decode(&signed.checkpoint)?;
    if signed.key_id != body.key_id {
        return Err(SignatureError::KeyIdMismatch {
            outer: signed.key_id.clone(),
            inner: body.key_id,
        });
    }
    let actual = key_id(public_key);
    if actual != body.key_id {
        return Err(SignatureError::WrongKey {
            expected: body.key_id,
            actual,
        });
    }
    verify(
        public_key,
        CHECKPOINT_SIGNATURE_DOMAIN,
        &signed.checkpoint,
        &signed.signature,
        "checkpoint",
    )?;
    Ok(body)
}

/// `BLAKE3(CHECKPOINT_HASH_DOMAIN || checkpoint bytes)`: how a cosignature names the
/// checkpoint it vouches for.
pub fn checkpoint_hash(checkpoint_bytes: &[u8]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(CHECKPOINT_HASH_DOMAIN);
    h.update(checkpoint_bytes);
    *h.finalize().as_bytes()
}

fn cosignature_message(
    checkpoint_hash: &Hash32,
    signed_at_unix_ms: i64,
    cosigner_id: &str,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(32 + 8 + cosigner_id.len());
    m.extend_from_slice(checkpoint_hash);
    m.extend_from_slice(&signed_at_unix_ms.to_be_bytes());
    m.extend_from_slice(cosigner_id.as_bytes());
    m
}

/// Checks a cosigner id: 1 to COSIGNER_ID_BYTES_MAX printable ASCII characters, no
/// space (the CLI's rule for its own id, `input::key_id`). The id is signed as its bytes
/// and copied into every proof document and bundle, whose readers parse it as strict JSON
/// text: one that reader would refuse (a non-character) or rewrite (text not in NFC, such
/// as decomposed Vietnamese) would no longer verify there, and one such cosignature of a
/// checkpoint would make every document of it fail. ASCII has one form under any rule.
pub fn check_cosigner_id(cosigner_id: &str) -> Result<(), SignatureError> {
    if cosigner_id.is_empty()
        || cosigner_id.len() > COSIGNER_ID_BYTES_MAX
        || !cosigner_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(SignatureError::Malformed {
            field: "cosigner_id",
            reason: format!(
                "must be 1 to {COSIGNER_ID_BYTES_MAX} printable ASCII characters, no space"
            ),
        });
    }
    Ok(())
}

/// A cosigner vouches for the checkpoint whose signed bytes are `checkpoint_bytes`.
pub fn cosign(
    key: &KeyPair,
    cosigner_id: &str,
    checkpoint_bytes: &[u8],
    signed_at_unix_ms: i64,
) -> Result<proto::Cosignature, SignatureError> {
    check_cosigner_id(cosigner_id)?;
    let hash = checkpoint_hash(checkpoint_bytes);
    let signature = key.sign(
        COSIGNATURE_DOMAIN,
        &cosignature_message(&hash, signed_at_unix_ms, cosigner_id),
    );
    Ok(proto::Cosignature {
        checkpoint_hash: hash.to_vec().into(),
        cosigner_id: cosigner_id.to_string(),
        key_id: key.key_id.clone(),
        signature: signature.to_vec().into(),
        signed_at_unix_ms,
        public_key: key.public_key().to_vec().into(),
    })
}

/// Checks that `c` is a valid cosignature of the checkpoint whose signed bytes are
/// `checkpoint_bytes`, by the key it carries. Whether that key really belongs to
/// `cosigner_id` is for the reader to pin.
pub fn verify_cosignature(
    c: &proto::Cosignature,
    checkpoint_bytes: &[u8],
) -> Result<(), SignatureError> {
    check_cosigner_id(&c.cosigner_id)?;
    let claimed = hash32(&c.checkpoint_hash, "checkpoint_hash")?;
    if claimed != checkpoint_hash(checkpoint_bytes) {
        return Err(SignatureError::Malformed {
            field: "checkpoint_hash",
            reason: "names another checkpoint".into(),
        });
    }
    let public_key = hash32(&c.public_key, "public_key")?;
    let actual = key_id(&public_key);
    if actual != c.key_id {
        return Err(SignatureError::WrongKey {
            expected: c.key_id.clone(),
            actual,
        });
    }
    verify(
        &public_key,
        COSIGNATURE_DOMAIN,
        &cosignature_message(&claimed, c.signed_at_unix_ms, &c.cosigner_id),
        &c.signature,
        "cosignature",
    )
}

/// The payload registering `new` as the ledger key, signed by `previous` if any.
pub fn key_rotation(new: &KeyPair, previous: Option<&KeyPair>) -> proto::LedgerKeyRotated {
    proto::LedgerKeyRotated {
        key_id: new.key_id.clone(),
        public_key: new.public_key().to_vec().into(),
        previous_key_id: previous.map(|p| p.key_id.clone()).unwrap_or_default(),
        previous_key_signature: previous
            .map(|p| p.sign(KEY_ROTATION_DOMAIN, &new.public_key()).to_vec())
            .unwrap_or_default()
            .into(),
    }
}

/// What an exclusion's signature covers, and under which domain: utf8(partition) ||
/// 0x00 || be64(stream_sequence) || message_hash (32 bytes) for one message, followed by
/// be64(through_stream_sequence) || be64(message_count) || run_hash (32 bytes) for a run.
fn exclusion_bytes(
    partition: &str,
    x: &proto::MessageExcluded,
) -> Result<(&'static [u8], Vec<u8>), SignatureError> {
    let mut bytes = Vec::with_capacity(partition.len() + 1 + 8 + 32 + 8 + 8 + 32);
    bytes.extend_from_slice(partition.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&x.stream_sequence.to_be_bytes());
    bytes.extend_from_slice(&hash32(&x.message_hash, "message_hash")?);
    if x.message_count == 0 {
        return Ok((EXCLUSION_DOMAIN, bytes));
    }
    bytes.extend_from_slice(&x.through_stream_sequence.to_be_bytes());
    bytes.extend_from_slice(&x.message_count.to_be_bytes());
    bytes.extend_from_slice(&hash32(&x.run_hash, "run_hash")?);
    Ok((EXCLUSION_RUN_DOMAIN, bytes))
}

/// The ledger key's signature of the exclusion `x` (its signature field aside) recorded
/// in `partition`.
pub fn sign_exclusion(
    key: &KeyPair,
    partition: &str,
    x: &proto::MessageExcluded,
) -> Result<[u8; 64], SignatureError> {
    let (domain, bytes) = exclusion_bytes(partition, x)?;
    Ok(key.sign(domain, &bytes))
}

/// Checks an exclusion recorded in `partition` against the public key of the key it
/// names.
pub fn verify_exclusion(
    public_key: &[u8; 32],
    partition: &str,
    x: &proto::MessageExcluded,
) -> Result<(), SignatureError> {
    let actual = key_id(public_key);
    if actual != x.key_id {
        return Err(SignatureError::WrongKey {
            expected: x.key_id.clone(),
            actual,
        });
    }
    let (domain, bytes) = exclusion_bytes(partition, x)?;
    verify(public_key, domain, &bytes, &x.signature, "exclusion")
}

/// Checks a rotation's own fields and, when `previous_public_key` is given, that the
/// previous key signed the new one. Returns the new public key.
pub fn verify_key_rotation(
    r: &proto::LedgerKeyRotated,
    previous_public_key: Option<&[u8; 32]>,
) -> Result<[u8; 32], SignatureError> {
    let public_key = hash32(&r.public_key, "public_key")?;
    let actual = key_id(&public_key);
    if actual != r.key_id {
        return Err(SignatureError::WrongKey {
            expected: r.key_id.clone(),
            actual,
        });
    }
    match previous_public_key {
        None => {
            if !r.previous_key_id.is_empty() || !r.previous_key_signature.is_empty() {
                return Err(SignatureError::Malformed {
                    field: "previous_key_id",
                    reason: "the first key has no predecessor".into(),
                });
            }
        }
        Some(previous) => {
            let expected = key_id(previous);
            if r.previous_key_id != expected {
                return Err(SignatureError::WrongKey {
                    expected,
                    actual: r.previous_key_id.clone(),
                });
            }
            verify(
                previous,
                KEY_ROTATION_DOMAIN,
                &public_key,
                &r.previous_key_signature,
                "key rotation",
            )?;
        }
    }
    Ok(public_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cosigned by another tool under an id a strict JSON reader refuses (a
    /// non-character) or rewrites (decomposed Vietnamese, not NFC), with a signature that
    /// verifies over the id's bytes: such a cosignature must not be valid here, or it
    /// would be copied into documents that fail wherever they are read.
    #[test]
    fn a_cosignature_under_an_id_with_another_json_form_is_not_valid() {
        let key = KeyPair::from_seed(&[7; 32]);
        let checkpoint = b"a checkpoint's signed bytes";
        let under = |id: &str| {
            let hash = checkpoint_hash(checkpoint);
            proto::Cosignature {
                checkpoint_hash: hash.to_vec().into(),
                cosigner_id: id.to_string(),
                key_id: key.key_id.clone(),
                signature: key
                    .sign(COSIGNATURE_DOMAIN, &cosignature_message(&hash, 5, id))
                    .to_vec()
                    .into(),
                signed_at_unix_ms: 5,
                public_key: key.public_key().to_vec().into(),
            }
        };
        verify_cosignature(&under("audit-office:hn"), checkpoint).unwrap();
        for id in [
            "audit\u{FFFF}",
            "Kie\u{0302}\u{0309}m-toa\u{0301}n",
            "Kiểm toán",
            "audit office",
        ] {
            assert!(
                matches!(
                    verify_cosignature(&under(id), checkpoint),
                    Err(SignatureError::Malformed {
                        field: "cosigner_id",
                        ..
                    })
                ),
                "{id:?}"
            );
            assert!(cosign(&key, id, checkpoint, 5).is_err(), "{id:?}");
        }
    }
}
