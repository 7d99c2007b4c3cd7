//! The JSON proof documents (`ansinh audit prove`, `consistency`, `checkpoint --json`)
//! and their offline check (`ansinh audit check-proof`).
//!
//! Pure: no server, no clock, no file system. Documents come from untrusted parties,
//! so every check returns a typed error and never panics (fuzzed in
//! `tests/checkpoints_offline.rs`). Formats: docs/PROOFS.md §8 and `schemas/`.

use prost::Message;
use serde::{Deserialize, Serialize};

use super::sign::{self, CHECKPOINT_BYTES_MAX, CheckpointBody, SignatureError};
use crate::chain::{self, EVENT_BYTES_MAX};
use crate::merkle::{self, ConsistencyProof, Hash32, InclusionProof, ProofError};
use crate::proto;

/// `format` of an inclusion proof document.
pub const INCLUSION_FORMAT: &str = "ansinh/v1/inclusion-proof";
/// `format` of a consistency proof document.
pub const CONSISTENCY_FORMAT: &str = "ansinh/v1/consistency-proof";
/// Largest document accepted, in bytes: an event is at most 64 KiB (128 KiB as hex) and
/// a path at most 128 hashes; anything larger is refused before parsing.
pub const PROOF_DOCUMENT_BYTES_MAX: usize = 1 << 20;
/// Most cosignatures carried with one checkpoint, each by another key.
pub const COSIGNATURES_MAX: usize = 64;

/// The cosigners an auditor pins (`--cosigner`: public keys, 64 hex digits, or key ids,
/// 16), and how many of them a checkpoint must carry (`--cosigners-required`, by default
/// all of them). A cosignature carries its own public key and names its own
/// `cosigner_id`, so without a pin a cosigner is only "some key": an operator could sign
/// 64 cosignatures with fresh keys of its own and call them anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CosignerPins {
    pub keys: Vec<String>,
    pub required: Option<usize>,
}

impl CosignerPins {
    /// Whether `c` is by a pinned key (its public key, or its key id for a short pin).
    pub fn pins(&self, c: &proto::Cosignature) -> bool {
        let Ok(public_key) = <[u8; 32]>::try_from(c.public_key.as_ref()) else {
            return false;
        };
        self.keys
            .iter()
            .any(|pin| crate::input::pins(pin, &c.key_id, &public_key))
    }

    /// Pinned cosigners a checkpoint must carry: `required`, or every pin.
    pub fn required(&self) -> usize {
        self.required.unwrap_or(self.keys.len())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.required.is_none()
    }
}

/// The cosignatures a checkpoint carries, from those stored (in stream order): the ones
/// that verify over its signed bytes, one per key, the earliest (a cosigner who signs
/// again adds nothing, and one key under two cosigner ids is one cosigner), pinned keys
/// first, and at most COSIGNATURES_MAX. Everything that gathers cosignatures for a
/// document or a listing goes through here, so no gathering makes a document the check
/// refuses.
pub fn distinct_cosignatures(
    checkpoint: &[u8],
    stored: impl IntoIterator<Item = proto::Cosignature>,
    pins: &CosignerPins,
) -> Vec<proto::Cosignature> {
    one_per_key(
        stored
            .into_iter()
            .filter(|c| sign::verify_cosignature(c, checkpoint).is_ok()),
        pins,
    )
}

/// Of cosignatures already verified, in stream order: the earliest of each key, the
/// pinned keys' before the others (each group in stream order), at most
/// COSIGNATURES_MAX (`distinct_cosignatures`'s rule, for a caller that verified them).
/// Pins are applied before the cap: 64 cosignatures stored first by keys nobody pinned
/// cannot keep a pinned cosigner out.
pub fn one_per_key(
    verified: impl IntoIterator<Item = proto::Cosignature>,
    pins: &CosignerPins,
) -> Vec<proto::Cosignature> {
    let mut kept = OnePerKey::default();
    for c in verified {
        kept.offer(c, pins);
    }
    kept.finish()
}

/// `one_per_key` one verified cosignature at a time, in stream order, holding only what
/// it may still return: at most COSIGNATURES_MAX of the pinned keys' and as many of the
/// others'. A reader of every cosignature stored after a checkpoint (any number of them)
/// keeps at most 2 x COSIGNATURES_MAX.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OnePerKey {
    pub pinned: Vec<proto::Cosignature>,
    pub others: Vec<proto::Cosignature>,
}

impl OnePerKey {
    /// Keeps `c` unless its key already has one kept or its group is full (a later one
    /// of a kept key, or past the cap, is never returned). True when kept.
    pub fn offer(&mut self, c: proto::Cosignature, pins: &CosignerPins) -> bool {
        let seen = |kept: &[proto::Cosignature]| kept.iter().any(|k| k.key_id == c.key_id);
        if seen(&self.pinned) || seen(&self.others) {
            return false;
        }
        let group = if pins.pins(&c) {
            &mut self.pinned
        } else {
            &mut self.others
        };
        if group.len() >= COSIGNATURES_MAX {
            return false;
        }
        group.push(c);
        true
    }

    /// The pinned keys' first, then the others', at most COSIGNATURES_MAX.
    pub fn finish(self) -> Vec<proto::Cosignature> {
        self.pinned
            .into_iter()
            .chain(self.others)
            .take(COSIGNATURES_MAX)
            .collect()
    }
}

/// Why a document was refused. Every variant means "do not trust it".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("document of {0} bytes exceeds {PROOF_DOCUMENT_BYTES_MAX}")]
    TooLarge(usize),
    /// Not JSON, or not the shape of its format (missing, extra or mistyped fields).
    #[error("not a valid proof document: {0}")]
    Json(String),
    #[error("unknown document format {0:?}")]
    UnknownFormat(String),
    /// A field is malformed (bad hex, wrong length, undecodable bytes).
    #[error("field {field}: {reason}")]
    Field { field: String, reason: String },
    /// A signature, key id or signed checkpoint is invalid.
    #[error("{what}: {cause}")]
    Signature { what: String, cause: SignatureError },
    /// The Merkle proof does not hold.
    #[error("merkle proof: {0}")]
    Proof(#[from] ProofError),
    /// Two parts of the document disagree (e.g. the proof's root is not the signed one).
    #[error("inconsistent document: {0}")]
    Mismatch(String),
    /// Signed by a key the caller does not trust (`--trust`).
    #[error("checkpoint signed by key {0}, which is not among the trusted keys")]
    Untrusted(String),
    /// Fewer pinned cosigners (`--cosigner`) than `--cosigners-required` cosign it.
    #[error("{what}: cosigned by {found} of the pinned cosigners, {required} required")]
    CosignersMissing {
        what: String,
        found: usize,
        required: usize,
    },
}

fn field(name: &str, reason: impl Into<String>) -> CheckError {
    CheckError::Field {
        field: name.to_string(),
        reason: reason.into(),
    }
}

/// Strict hex: lowercase, even length, at most `bytes_max` bytes once decoded.
fn decode_hex(text: &str, name: &str, bytes_max: usize) -> Result<Vec<u8>, CheckError> {
    if text.len() % 2 != 0 || text.len() / 2 > bytes_max {
        return Err(field(name, format!("not hex of at most {bytes_max} bytes")));
    }
    if !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(field(name, "not lowercase hex"));
    }
    hex::decode(text).map_err(|e| field(name, e.to_string()))
}

fn decode_fixed<const N: usize>(text: &str, name: &str) -> Result<[u8; N], CheckError> {
    let bytes = decode_hex(text, name, N)?;
    bytes
        .try_into()
        .map_err(|_| field(name, format!("not exactly {N} bytes")))
}

/// The decoded fields of a checkpoint, for people. The check refuses a document whose
/// view differs from the signed bytes, so nobody is misled by it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointView {
    pub format_version: u32,
    pub partition: String,
    pub tree_size: u64,
    pub root: String,
    pub head_sequence: u64,
    pub head_hash: String,
    pub issued_at_unix_ms: i64,
    pub key_id: String,
}

impl From<&CheckpointBody> for CheckpointView {
    fn from(b: &CheckpointBody) -> Self {
        Self {
            format_version: sign::CHECKPOINT_FORMAT_VERSION,
            partition: b.partition.to_string(),
            tree_size: b.tree_size,
            root: merkle::encode_hash(&b.root),
            head_sequence: b.head_sequence,
            head_hash: merkle::encode_hash(&b.head_hash),
            issued_at_unix_ms: b.issued_at_unix_ms,
            key_id: b.key_id.clone(),
        }
    }
}

/// A cosignature in JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignatureDocument {
    pub cosigner_id: String,
    pub key_id: String,
    pub public_key: String,
    pub signature: String,
    pub signed_at_unix_ms: i64,
    pub checkpoint_hash: String,
}

impl From<&proto::Cosignature> for CosignatureDocument {
    fn from(c: &proto::Cosignature) -> Self {
        Self {
            cosigner_id: c.cosigner_id.clone(),
            key_id: c.key_id.clone(),
            public_key: hex::encode(&c.public_key),
            signature: hex::encode(&c.signature),
            signed_at_unix_ms: c.signed_at_unix_ms,
            checkpoint_hash: hex::encode(&c.checkpoint_hash),
        }
    }
}

impl CosignatureDocument {
    fn to_proto(&self, name: &str) -> Result<proto::Cosignature, CheckError> {
        Ok(proto::Cosignature {
            checkpoint_hash: decode_fixed::<32>(
                &self.checkpoint_hash,
                &format!("{name}.checkpoint_hash"),
            )?
            .to_vec()
            .into(),
            cosigner_id: self.cosigner_id.clone(),
            key_id: self.key_id.clone(),
            signature: decode_fixed::<64>(&self.signature, &format!("{name}.signature"))?
                .to_vec()
                .into(),
            signed_at_unix_ms: self.signed_at_unix_ms,
            public_key: decode_fixed::<32>(&self.public_key, &format!("{name}.public_key"))?
                .to_vec()
                .into(),
        })
    }
}

/// A signed checkpoint in JSON: the exact signed bytes, the signature, the public key
/// that checks it, a readable view, and any cosignatures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointDocument {
    /// The encoded `Checkpoint`, as signed, in lowercase hex.
    pub checkpoint: String,
    /// Ed25519 signature (64 bytes) in lowercase hex.
    pub signature: String,
    pub key_id: String,
    /// The ledger's Ed25519 public key (32 bytes) in lowercase hex.
    pub public_key: String,
    pub decoded: CheckpointView,
    #[serde(default)]
    pub cosignatures: Vec<CosignatureDocument>,
}

impl CheckpointDocument {
    pub fn new(
        signed: &proto::SignedCheckpoint,
        body: &CheckpointBody,
        public_key: &[u8; 32],
        cosignatures: &[proto::Cosignature],
    ) -> Self {
        Self {
            checkpoint: hex::encode(&signed.checkpoint),
            signature: hex::encode(&signed.signature),
            key_id: signed.key_id.clone(),
            public_key: hex::encode(public_key),
            decoded: CheckpointView::from(body),
            cosignatures: cosignatures.iter().map(CosignatureDocument::from).collect(),
        }
    }

    /// Checks the signature with the carried key, the view against the signed bytes,
    /// every cosignature (at most COSIGNATURES_MAX, no two by one key), the key against
    /// `trusted` (when not empty), and that at least `pins.required()` pinned cosigners
    /// cosign it. Returns the body and the cosigners, pinned or not.
    pub fn check(
        &self,
        name: &str,
        trusted: &[String],
        pins: &CosignerPins,
    ) -> Result<(CheckpointBody, Cosigners), CheckError> {
        let bytes = decode_hex(
            &self.checkpoint,
            &format!("{name}.checkpoint"),
            CHECKPOINT_BYTES_MAX,
        )?;
        let signature = decode_fixed::<64>(&self.signature, &format!("{name}.signature"))?;
        let public_key = decode_fixed::<32>(&self.public_key, &format!("{name}.public_key"))?;
        let signed = proto::SignedCheckpoint {
            checkpoint: bytes.clone().into(),
            signature: signature.to_vec().into(),
            key_id: self.key_id.clone(),
        };
        let body =
            sign::open_checkpoint(&signed, &public_key).map_err(|cause| CheckError::Signature {
                what: name.to_string(),
                cause,
            })?;
        if CheckpointView::from(&body) != self.decoded {
            return Err(CheckError::Mismatch(format!(
                "{name}.decoded differs from the signed checkpoint bytes"
            )));
        }
        if !trusted.is_empty()
            && !trusted
                .iter()
                .any(|pin| crate::input::pins(pin, &body.key_id, &public_key))
        {
            return Err(CheckError::Untrusted(body.key_id));
        }
        if self.cosignatures.len() > COSIGNATURES_MAX {
            return Err(field(
                &format!("{name}.cosignatures"),
                format!("more than {COSIGNATURES_MAX}"),
            ));
        }
        let mut cosigners = Cosigners::default();
        let mut keys = std::collections::BTreeSet::new();
        for (i, c) in self.cosignatures.iter().enumerate() {
            let what = format!("{name}.cosignatures[{i}]");
            let c = c.to_proto(&what)?;
            sign::verify_cosignature(&c, &bytes).map_err(|cause| CheckError::Signature {
                what: what.clone(),
                cause,
            })?;
            // The key id is the verified key's: one key is one cosigner, however named.
            if !keys.insert(c.key_id.clone()) {
                return Err(field(&what, format!("key {} cosigns twice", c.key_id)));
            }
            let line = format!("{} (key {})", c.cosigner_id, c.key_id);
            if pins.pins(&c) {
                cosigners.pinned.push(line);
            } else {
                cosigners.unpinned.push(line);
            }
        }
        if cosigners.pinned.len() < pins.required() {
            return Err(CheckError::CosignersMissing {
                what: name.to_string(),
                found: cosigners.pinned.len(),
                required: pins.required(),
            });
        }
        Ok((body, cosigners))
    }
}

/// The cosigners of a checked checkpoint, for people ("id (key k)"): those by a key the
/// caller pinned, and the others, which are only keys the document carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cosigners {
    pub pinned: Vec<String>,
    pub unpinned: Vec<String>,
}

impl Cosigners {
    fn extend(&mut self, other: Cosigners) {
        self.pinned.extend(other.pinned);
        self.unpinned.extend(other.unpinned);
    }
}

/// Proof that one stored event is in a signed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionDocument {
    /// Always INCLUSION_FORMAT.
    pub format: String,
    pub partition: String,
    /// Partition sequence of the event (1-based); the leaf index is sequence - 1.
    pub sequence: u64,
    /// The event's stored bytes (an `Envelope`), in lowercase hex.
    pub event: String,
    /// `event_hash(event)` (docs/CHAIN.md), lowercase hex.
    pub event_hash: String,
    pub proof: InclusionProof,
    pub checkpoint: CheckpointDocument,
}

/// Proof that a partition only grew between two signed checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyDocument {
    /// Always CONSISTENCY_FORMAT.
    pub format: String,
    pub partition: String,
    pub old_checkpoint: CheckpointDocument,
    pub new_checkpoint: CheckpointDocument,
    pub proof: ConsistencyProof,
}

/// What a successful check established, for printing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Checked {
    pub format: &'static str,
    pub partition: String,
    /// One line for people.
    pub summary: String,
    /// The ledger keys whose signatures were checked.
    pub key_ids: Vec<String>,
    /// Cosigners whose signatures were checked ("id (key k)"), every one.
    pub cosigners: Vec<String>,
    /// Those of `cosigners` by no key the caller pinned (`--cosigner`).
    pub unpinned_cosigners: Vec<String>,
}

fn same_hash(a: &Hash32, b: &Hash32) -> bool {
    chain::Digest(*a) == chain::Digest(*b)
}

impl InclusionDocument {
    pub fn check(&self, trusted: &[String], pins: &CosignerPins) -> Result<Checked, CheckError> {
        if self.format != INCLUSION_FORMAT {
            return Err(CheckError::UnknownFormat(self.format.clone()));
        }
        let (body, cosigners) = self.checkpoint.check("checkpoint", trusted, pins)?;
        if body.partition.as_str() != self.partition || self.proof.partition != self.partition {
            return Err(CheckError::Mismatch(
                "the document, proof and checkpoint name different partitions".into(),
            ));
        }
        if self.sequence == 0 || self.proof.leaf_index != self.sequence - 1 {
            return Err(CheckError::Mismatch(format!(
                "leaf index {} is not sequence {} - 1",
                self.proof.leaf_index, self.sequence
            )));
        }
        if self.proof.tree_size != body.tree_size {
            return Err(CheckError::Mismatch(format!(
                "the proof is for a tree of {} events, the checkpoint signs {}",
                self.proof.tree_size, body.tree_size
            )));
        }
        let root =
            merkle::decode_hash(&self.proof.root, "proof.root").map_err(CheckError::Proof)?;
        if !same_hash(&root, &body.root) {
            return Err(CheckError::Mismatch(
                "the proof's root is not the signed root".into(),
            ));
        }
        let event = decode_hex(&self.event, "event", EVENT_BYTES_MAX)?;
        let hash = chain::event_hash(&event).0;
        let claimed =
            merkle::decode_hash(&self.event_hash, "event_hash").map_err(CheckError::Proof)?;
        let in_proof = merkle::decode_hash(&self.proof.event_hash, "proof.event_hash")
            .map_err(CheckError::Proof)?;
        if !same_hash(&hash, &claimed) || !same_hash(&hash, &in_proof) {
            return Err(CheckError::Mismatch(
                "event_hash is not the hash of the event bytes".into(),
            ));
        }
        let envelope = proto::Envelope::decode(event.as_slice())
            .map_err(|e| field("event", format!("not an Envelope: {e}")))?;
        if envelope.partition != self.partition || envelope.sequence != self.sequence {
            return Err(CheckError::Mismatch(format!(
                "the event is partition {:?} sequence {}, the document says {:?} sequence {}",
                envelope.partition, envelope.sequence, self.partition, self.sequence
            )));
        }
        if self.sequence == body.head_sequence && !same_hash(&hash, &body.head_hash) {
            return Err(CheckError::Mismatch(
                "the event is the signed head but its hash differs".into(),
            ));
        }
        self.proof.verify()?;
        Ok(Checked {
            format: INCLUSION_FORMAT,
            partition: self.partition.clone(),
            summary: format!(
                "event {} of partition {} (hash {}) is in the checkpoint of {} events signed by key {}",
                self.sequence, self.partition, self.event_hash, body.tree_size, body.key_id
            ),
            key_ids: vec![body.key_id],
            cosigners: [cosigners.pinned, cosigners.unpinned.clone()].concat(),
            unpinned_cosigners: cosigners.unpinned,
        })
    }
}

impl ConsistencyDocument {
    pub fn check(&self, trusted: &[String], pins: &CosignerPins) -> Result<Checked, CheckError> {
        if self.format != CONSISTENCY_FORMAT {
            return Err(CheckError::UnknownFormat(self.format.clone()));
        }
        let (old, mut cosigners) = self.old_checkpoint.check("old_checkpoint", trusted, pins)?;
        let (new, new_cosigners) = self.new_checkpoint.check("new_checkpoint", trusted, pins)?;
        cosigners.extend(new_cosigners);
        if old.partition.as_str() != self.partition
            || new.partition.as_str() != self.partition
            || self.proof.partition != self.partition
        {
            return Err(CheckError::Mismatch(
                "the document, proof and checkpoints name different partitions".into(),
            ));
        }
        if self.proof.old_size != old.tree_size || self.proof.new_size != new.tree_size {
            return Err(CheckError::Mismatch(format!(
                "the proof is for sizes {} -> {}, the checkpoints sign {} -> {}",
                self.proof.old_size, self.proof.new_size, old.tree_size, new.tree_size
            )));
        }
        let old_root = merkle::decode_hash(&self.proof.old_root, "proof.old_root")
            .map_err(CheckError::Proof)?;
        let new_root = merkle::decode_hash(&self.proof.new_root, "proof.new_root")
            .map_err(CheckError::Proof)?;
        if !same_hash(&old_root, &old.root) || !same_hash(&new_root, &new.root) {
            return Err(CheckError::Mismatch(
                "the proof's roots are not the signed roots".into(),
            ));
        }
        self.proof.verify()?;
        let mut key_ids = vec![old.key_id.clone()];
        if new.key_id != old.key_id {
            key_ids.push(new.key_id.clone());
        }
        Ok(Checked {
            format: CONSISTENCY_FORMAT,
            partition: self.partition.clone(),
            summary: format!(
                "partition {} only grew from {} to {} events between the two signed checkpoints",
                self.partition, old.tree_size, new.tree_size
            ),
            key_ids,
            cosigners: [cosigners.pinned, cosigners.unpinned.clone()].concat(),
            unpinned_cosigners: cosigners.unpinned,
        })
    }
}

/// Checks a proof document (either format) from its JSON text. `trusted`: key ids the
/// caller trusts; empty means "any key the document carries" (print and compare it).
/// No cosigner is pinned (`check_document_pinned`).
pub fn check_document(json: &[u8], trusted: &[String]) -> Result<Checked, CheckError> {
    check_document_pinned(json, trusted, &CosignerPins::default())
}

/// `check_document`, with the cosigners the caller pins and how many must cosign.
pub fn check_document_pinned(
    json: &[u8],
    trusted: &[String],
    pins: &CosignerPins,
) -> Result<Checked, CheckError> {
    if json.len() > PROOF_DOCUMENT_BYTES_MAX {
        return Err(CheckError::TooLarge(json.len()));
    }
    let value: serde_json::Value =
        crate::strict_json::from_slice(json).map_err(|e| CheckError::Json(e.to_string()))?;
    let format = value
        .get("format")
        .and_then(|f| f.as_str())
        .ok_or_else(|| CheckError::Json("no \"format\" string".into()))?
        .to_string();
    match format.as_str() {
        INCLUSION_FORMAT => serde_json::from_value::<InclusionDocument>(value)
            .map_err(|e| CheckError::Json(e.to_string()))?
            .check(trusted, pins),
        CONSISTENCY_FORMAT => serde_json::from_value::<ConsistencyDocument>(value)
            .map_err(|e| CheckError::Json(e.to_string()))?
            .check(trusted, pins),
        _ => Err(CheckError::UnknownFormat(format)),
    }
}
