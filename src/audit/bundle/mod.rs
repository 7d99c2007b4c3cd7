//! Auditor bundles: the events concerning one household or commune, each with an
//! inclusion proof against one signed checkpoint, the ledger's key history, a balance
//! statement and a CSV for people, in one directory that can be checked with no server
//! (`ansinh audit export` / `ansinh audit verify-bundle`). Format: docs/BUNDLES.md.
//!
//! - `statement`: event dates, scope, balances and the CSV (pure, shared by both sides).
//! - `export`: building a bundle from the streams (server side).
//! - this file: the files, their bounds, and `verify`, the offline check (pure over
//!   bytes, no clock, never panics; its own error enum, `BundleError`).
//!
//! **Invariant:** every byte of a bundle is either signed (checkpoints), bound to a
//! signed root by a Merkle proof (events, key events), or recomputed by the verifier
//! from those and compared byte for byte (proofs, statement, manifest, CSV; JSON files
//! must be in their one canonical form). So any changed byte fails verification.

pub mod archive;
pub mod cli;
pub mod export;
pub mod statement;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::chain::{self, ChainBreak, ChainHead, EVENT_BYTES_MAX, Partition};
use crate::checkpoint::keys::{KeyRing, KeyRingError};
use crate::checkpoint::proofs::{CheckError, CheckpointDocument, CosignerPins, Cosigners};
use crate::checkpoint::sign::CheckpointBody;
use crate::merkle::{self, Hash32, InclusionProof, ProofError};
use crate::proto::{Envelope, envelope::Payload};
pub use statement::{HouseholdBalances, LoanBalance, Scope};

/// `format` of a bundle manifest.
pub const BUNDLE_FORMAT: &str = "ansinh/v1/bundle";
/// `format` of a balance statement.
pub const STATEMENT_FORMAT: &str = "ansinh/v1/balance-statement";
/// Most events in one bundle: a household's lifetime is a few hundred; a commune's
/// year a few tens of thousands. Larger requests are refused, not truncated.
pub const BUNDLE_EVENTS_MAX: usize = 50_000;
/// Most key events (rotations) carried: the key ring's own bound.
pub const BUNDLE_KEY_EVENTS_MAX: usize = crate::checkpoint::keys::RING_KEYS_MAX;
/// Largest bundle file read, in bytes, whatever its kind: the bound of the files whose
/// own bound (below) would be larger (events.bin, keys.bin, events.csv).
pub const BUNDLE_FILE_BYTES_MAX: u64 = 256 << 20;

const KIB: u64 = 1 << 10;
/// Longest length prefix of an entry of a length-delimited file: a varint of at most
/// EVENT_BYTES_MAX (2^16) takes 3 bytes.
const LENGTH_PREFIX_BYTES_MAX: u64 = 3;

const fn at_most_file_max(bytes: u64) -> u64 {
    if bytes < BUNDLE_FILE_BYTES_MAX {
        bytes
    } else {
        BUNDLE_FILE_BYTES_MAX
    }
}

/// `checkpoint.json` and `keys-checkpoint.json`: a checkpoint document is under 3 KiB
/// (at most CHECKPOINT_BYTES_MAX = 1 KiB of signed checkpoint as 2 KiB of hex, a
/// signature, a key, the decoded view) and each of its at most COSIGNATURES_MAX (64)
/// cosignatures under 750 bytes (a cosigner id of at most 128 bytes, 256 escaped, a
/// key id, a key, a signature, a time, a hash), so 64 KiB holds the largest
/// (`the_largest_checkpoint_document_fits_its_bound` below).
pub const CHECKPOINT_FILE_BYTES_MAX: u64 = 64 * KIB;
/// One event's entry in the manifest's `events`: indentation, member names, a sequence
/// (at most 20 digits) and a 64-digit hash take 164 bytes, which leaves 92 for the
/// event type name (the ledger's are at most 40).
const MANIFEST_EVENT_BYTES_MAX: u64 = 256;
/// One key id in the manifest's `key_ids`: 16 hex digits, quotes, indentation.
const MANIFEST_KEY_BYTES_MAX: u64 = 32;
/// `manifest.json`: the fixed members (scope, dates, two checkpoint references, the
/// file names: under 2 KiB) within 64 KiB, a line per key event and per event.
pub const MANIFEST_FILE_BYTES_MAX: u64 = 64 * KIB
    + BUNDLE_KEY_EVENTS_MAX as u64 * MANIFEST_KEY_BYTES_MAX
    + BUNDLE_EVENTS_MAX as u64 * MANIFEST_EVENT_BYTES_MAX;
/// One inclusion proof in `proofs.json`: a partition name (at most 16 characters), a
/// tree size and leaf index (at most 20 digits each), two 64-digit hashes and members
/// (~400 bytes together), and an audit path of at most 24 hashes of 76 bytes with
/// their indentation: export refuses a partition of more than PROOF_LEAVES_MAX (2^24)
/// events, so no bundle has a deeper tree.
const PROOF_ENTRY_BYTES_MAX: u64 = 512 + 24 * 76;
/// `proofs.json`: one proof per event.
pub const PROOFS_FILE_BYTES_MAX: u64 = KIB + BUNDLE_EVENTS_MAX as u64 * PROOF_ENTRY_BYTES_MAX;
/// What one event can add to the statement: one household entry (~200 bytes with its
/// empty maps), one loan entry (~400: five amounts of at most 31 characters, a loan
/// reference of at most 38) and one month line (~60). 1 KiB leaves room for household
/// ids of a few hundred bytes (the ledger's are 14).
const STATEMENT_EVENT_BYTES_MAX: u64 = KIB;
/// `statement.json`: the fixed members within 64 KiB, and what each event adds.
pub const STATEMENT_FILE_BYTES_MAX: u64 =
    64 * KIB + BUNDLE_EVENTS_MAX as u64 * STATEMENT_EVENT_BYTES_MAX;
/// `keys.bin`: at most BUNDLE_KEY_EVENTS_MAX entries of at most EVENT_BYTES_MAX bytes,
/// within BUNDLE_FILE_BYTES_MAX.
pub const KEYS_FILE_BYTES_MAX: u64 = at_most_file_max(
    BUNDLE_KEY_EVENTS_MAX as u64 * (EVENT_BYTES_MAX as u64 + LENGTH_PREFIX_BYTES_MAX),
);
/// `events.bin`: at most BUNDLE_EVENTS_MAX entries of at most EVENT_BYTES_MAX bytes,
/// within BUNDLE_FILE_BYTES_MAX.
pub const EVENTS_FILE_BYTES_MAX: u64 =
    at_most_file_max(BUNDLE_EVENTS_MAX as u64 * (EVENT_BYTES_MAX as u64 + LENGTH_PREFIX_BYTES_MAX));
/// `events.csv`: never parsed, only compared with the verifier's own rendering of the
/// events, so only the general bound.
pub const CSV_FILE_BYTES_MAX: u64 = BUNDLE_FILE_BYTES_MAX;

/// The bound of each file, in FILES order, checked before it is read or parsed.
pub const FILE_BYTES_MAX: [u64; 8] = [
    MANIFEST_FILE_BYTES_MAX,
    CHECKPOINT_FILE_BYTES_MAX,
    CHECKPOINT_FILE_BYTES_MAX,
    KEYS_FILE_BYTES_MAX,
    EVENTS_FILE_BYTES_MAX,
    PROOFS_FILE_BYTES_MAX,
    STATEMENT_FILE_BYTES_MAX,
    CSV_FILE_BYTES_MAX,
];

/// The bound of the bundle file `name` (FILE_BYTES_MAX; the general bound for a name
/// not in FILES).
pub fn file_bytes_max(name: &str) -> u64 {
    FILES
        .iter()
        .position(|f| *f == name)
        .map_or(BUNDLE_FILE_BYTES_MAX, |i| FILE_BYTES_MAX[i])
}

pub const MANIFEST_FILE: &str = "manifest.json";
pub const EVENTS_FILE: &str = "events.bin";
pub const PROOFS_FILE: &str = "proofs.json";
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
pub const KEYS_FILE: &str = "keys.bin";
pub const KEYS_CHECKPOINT_FILE: &str = "keys-checkpoint.json";
pub const STATEMENT_FILE: &str = "statement.json";
pub const CSV_FILE: &str = "events.csv";
/// Every file of a bundle, in the order they are checked.
pub const FILES: [&str; 8] = [
    MANIFEST_FILE,
    CHECKPOINT_FILE,
    KEYS_CHECKPOINT_FILE,
    KEYS_FILE,
    EVENTS_FILE,
    PROOFS_FILE,
    STATEMENT_FILE,
    CSV_FILE,
];

/// Why a bundle was refused. Each variant names the file (and event) where the first
/// problem was found; every variant means "do not trust this bundle".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// A file could not be read (no such directory or file, no permission): nothing was
    /// checked, so `verify-bundle` exits 2 (an operating error), not 1.
    #[error("{file}: {reason}")]
    Read { file: String, reason: String },
    /// The archive was read but is not a bundle's archive (a header, a name, a file
    /// missing or twice).
    #[error("{file}: {reason}")]
    Archive { file: String, reason: String },
    /// A file is over its bound (`file_bytes_max`), or an archive over the sum of them.
    #[error("{file}: {bytes} bytes exceeds its bound of {max}")]
    TooLarge { file: String, bytes: u64, max: u64 },
    /// Not JSON of the expected shape (unknown, missing or mistyped fields).
    #[error("{file}: not valid JSON of its format: {reason}")]
    Json { file: String, reason: String },
    /// Valid JSON but not in its canonical form (bytes were changed).
    #[error("{file}: not in canonical form (re-encoding differs from the file)")]
    NotCanonical { file: String },
    #[error("{file}: unknown format {found:?}")]
    UnknownFormat { file: String, found: String },
    /// A length-delimited file does not split into messages.
    #[error("{file}: bad framing at byte {offset}: {reason}")]
    Framing {
        file: String,
        offset: usize,
        reason: String,
    },
    #[error("{file}: more than {max} messages")]
    TooManyEvents { file: String, max: usize },
    /// A signed checkpoint does not check (signature, view, cosignatures).
    #[error("{file}: {cause}")]
    Checkpoint { file: String, cause: CheckError },
    /// The key events do not form a valid chain of the key partition.
    #[error("keys.bin: key event {index}: {cause}")]
    KeyChain { index: usize, cause: ChainBreak },
    /// The key history is invalid, or a checkpoint's key was not valid when it signed.
    #[error("{file}: key history: {cause}")]
    KeyRing { file: String, cause: KeyRingError },
    /// The key events are not exactly the tree the key-partition checkpoint signs.
    #[error("keys.bin: {0}")]
    KeysNotSigned(String),
    /// An event is wrong in itself or for this bundle (partition, order, scope).
    #[error("events.bin: event {index} (sequence {sequence}): {reason}")]
    Event {
        index: usize,
        sequence: u64,
        reason: String,
    },
    /// An event's inclusion proof does not hold or does not match the checkpoint.
    #[error("proofs.json: proof {index} (sequence {sequence}): {reason}")]
    Proof {
        index: usize,
        sequence: u64,
        reason: String,
    },
    /// The statement does not name the checkpoint, or its balances differ from the
    /// ones recomputed from the events.
    #[error("statement.json: {0}")]
    Statement(String),
    /// The CSV is not the rendering of the events.
    #[error("events.csv: line {line} differs from the rendering of the events")]
    Csv { line: usize },
    /// The manifest does not describe the bundle's contents.
    #[error("manifest.json: {0}")]
    Manifest(String),
    /// A key the caller pins (`--trust`) is not in the bundle's key history at or before
    /// the key that signed: the history may be cut short (a retired key signing with
    /// the rotations after it left out), or the bundle was signed before that key was
    /// the ledger's. Ask for a bundle under a checkpoint signed by the pinned key or a
    /// later one.
    #[error(
        "pinned key {pinned} is not in the bundle's key history at or before the signing key {signer}"
    )]
    Untrusted { pinned: String, signer: String },
    /// The scope's household or commune belongs to another partition (province) than
    /// the checkpoint's: its events are not in this partition's log, whatever subjects
    /// the events carry.
    #[error(
        "manifest.json: the scope is in partition {scope_partition}, the checkpoint is of partition {checkpoint_partition}"
    )]
    OutsidePartition {
        scope_partition: String,
        checkpoint_partition: String,
    },
    /// `events.bin` holds no event: a bundle proves at least one (the exporter refuses
    /// an empty scope).
    #[error("events.bin: no event; a bundle holds at least one")]
    NoEvents,
}

/// The bytes of a bundle's files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleFiles {
    pub manifest: Vec<u8>,
    pub checkpoint: Vec<u8>,
    pub keys_checkpoint: Vec<u8>,
    pub keys: Vec<u8>,
    pub events: Vec<u8>,
    pub proofs: Vec<u8>,
    pub statement: Vec<u8>,
    pub csv: Vec<u8>,
}

impl BundleFiles {
    /// (file name, bytes) in FILES order.
    pub fn files(&self) -> [(&'static str, &Vec<u8>); 8] {
        [
            (MANIFEST_FILE, &self.manifest),
            (CHECKPOINT_FILE, &self.checkpoint),
            (KEYS_CHECKPOINT_FILE, &self.keys_checkpoint),
            (KEYS_FILE, &self.keys),
            (EVENTS_FILE, &self.events),
            (PROOFS_FILE, &self.proofs),
            (STATEMENT_FILE, &self.statement),
            (CSV_FILE, &self.csv),
        ]
    }

    pub fn files_mut(&mut self) -> [(&'static str, &mut Vec<u8>); 8] {
        [
            (MANIFEST_FILE, &mut self.manifest),
            (CHECKPOINT_FILE, &mut self.checkpoint),
            (KEYS_CHECKPOINT_FILE, &mut self.keys_checkpoint),
            (KEYS_FILE, &mut self.keys),
            (EVENTS_FILE, &mut self.events),
            (PROOFS_FILE, &mut self.proofs),
            (STATEMENT_FILE, &mut self.statement),
            (CSV_FILE, &mut self.csv),
        ]
    }

    /// Reads a bundle directory, refusing a file above its bound (`file_bytes_max`)
    /// before reading it.
    pub fn read(dir: &Path) -> Result<Self, BundleError> {
        let mut out = Self::default();
        for (name, bytes) in out.files_mut() {
            let path = dir.join(name);
            let read_error = |e: std::io::Error| BundleError::Read {
                file: name.to_string(),
                reason: e.to_string(),
            };
            let file = std::fs::File::open(&path).map_err(read_error)?;
            let length = file.metadata().map_err(read_error)?.len();
            check_size(name, length)?;
            // Bounded even if the file grows while it is read (or is a pipe, whose
            // length says nothing).
            file.take(file_bytes_max(name) + 1)
                .read_to_end(bytes)
                .map_err(read_error)?;
            check_size(name, bytes.len() as u64)?;
        }
        Ok(out)
    }

    /// Reads a bundle archive (`archive::to_tar`), refusing one larger than a bundle at
    /// its bounds could be, and each file over its bound from its header, before
    /// reading it.
    pub fn read_archive(path: &Path) -> Result<Self, BundleError> {
        let name = path.display().to_string();
        let read_error = |e: std::io::Error| BundleError::Read {
            file: name.clone(),
            reason: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let length = file.metadata().map_err(read_error)?.len();
        if length > archive::ARCHIVE_BYTES_MAX {
            return Err(BundleError::TooLarge {
                file: name,
                bytes: length,
                max: archive::ARCHIVE_BYTES_MAX,
            });
        }
        // Read as a stream: each file is bounded by its header before it is read, and
        // nothing but a record of padding is read after the end (so a pipe or a file
        // growing while it is read is bounded too).
        archive::read_tar(std::io::BufReader::new(file))
    }

    /// Writes every file into `dir` (created if missing; files replaced).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (name, bytes) in self.files() {
            std::fs::write(dir.join(name), bytes)?;
        }
        Ok(())
    }
}

/// Refuses `bytes` bytes of the file `name` if over its bound.
fn check_size(name: &str, bytes: u64) -> Result<(), BundleError> {
    let max = file_bytes_max(name);
    if bytes > max {
        return Err(BundleError::TooLarge {
            file: name.to_string(),
            bytes,
            max,
        });
    }
    Ok(())
}

/// The checkpoint a bundle or statement is anchored to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRef {
    pub partition: String,
    pub tree_size: u64,
    /// Merkle root, lowercase hex.
    pub root: String,
}

impl From<&CheckpointBody> for CheckpointRef {
    fn from(b: &CheckpointBody) -> Self {
        Self {
            partition: b.partition.to_string(),
            tree_size: b.tree_size,
            root: merkle::encode_hash(&b.root),
        }
    }
}

/// One event as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEvent {
    pub sequence: u64,
    pub event_type: String,
    pub event_hash: String,
}

/// `manifest.json`: what the bundle is about and what it holds. Everything but
/// `scope`, `from`, `to` and `keys_partition` is recomputed by the verifier; those
/// four are checked against every event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always BUNDLE_FORMAT.
    pub format: String,
    pub scope: Scope,
    /// Inclusive bounds on the events' business dates (docs/BUNDLES.md §5), if any.
    pub from: Option<String>,
    pub to: Option<String>,
    pub checkpoint: CheckpointRef,
    pub keys_partition: String,
    pub keys_checkpoint: CheckpointRef,
    /// Ledger key ids in the order the key partition registered them.
    pub key_ids: Vec<String>,
    /// The key that signed `checkpoint`.
    pub signed_by: String,
    pub events: Vec<ManifestEvent>,
    pub files: Vec<String>,
}

/// `statement.json`: balances recomputed from the bundle's events, naming the
/// checkpoint they were computed at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Always STATEMENT_FORMAT.
    pub format: String,
    pub checkpoint: CheckpointRef,
    pub scope: Scope,
    /// By household id.
    pub households: BTreeMap<String, HouseholdBalances>,
}

/// What a verified bundle established.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verified {
    pub scope: Scope,
    pub events: usize,
    pub checkpoint: CheckpointRef,
    pub signed_by: String,
    /// The first key of the bundle's key history.
    pub first_key: String,
    /// The last key of the bundle's key history: compare it with the ledger's latest
    /// published key, or pin that with --trust.
    pub latest_key: String,
    /// That key's public key (hex), the pin to pass: a key id alone is 64 bits.
    pub latest_public_key: String,
    /// Every cosigner of the events' checkpoint ("id (key k)").
    pub cosigners: Vec<String>,
    /// Those of `cosigners` by no key the caller pinned (`--cosigner`).
    pub unpinned_cosigners: Vec<String>,
    pub households: usize,
}

/// The canonical form of a JSON file: serde_json's pretty printing of the typed value
/// and one newline. Exporters write exactly this; the verifier demands it.
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("bundle documents serialize");
    bytes.push(b'\n');
    bytes
}

fn parse_canonical<T: Serialize + DeserializeOwned + PartialEq>(
    file: &str,
    bytes: &[u8],
) -> Result<T, BundleError> {
    let json_error = |reason: String| BundleError::Json {
        file: file.to_string(),
        reason,
    };
    let not_canonical = || BundleError::NotCanonical {
        file: file.to_string(),
    };
    // The shape first, straight into the typed value: a file that is not of its format
    // (megabytes of `[0,0,...]`) is refused at its first wrong element, before the
    // strict reading below builds a value tree of millions of elements, 16 times the
    // file's size.
    let typed: T = serde_json::from_slice(bytes).map_err(|e| json_error(e.to_string()))?;
    if canonical_json(&typed) != bytes {
        return Err(not_canonical());
    }
    // The file is now the canonical rendering of a value of its format, whose value
    // tree is a small multiple of its size. The strict reading refuses what the
    // ledger's text rules refuse (non-characters) and reads every string in NFC, so a
    // string not in NFC reads as another value than the typed one: not canonical.
    let strict: T = crate::strict_json::from_slice(bytes).map_err(|e| json_error(e.to_string()))?;
    if strict != typed {
        return Err(not_canonical());
    }
    Ok(strict)
}

/// Protobuf's length-delimited framing: a minimal varint length, then the bytes.
pub fn encode_delimited(messages: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        prost::encode_length_delimiter(m.len(), &mut out).expect("a Vec grows");
        out.extend_from_slice(m);
    }
    out
}

/// Splits length-delimited messages, each at most EVENT_BYTES_MAX, at most `max` of
/// them; the length must be the minimal varint (so a framing has one encoding).
pub fn decode_delimited<'a>(
    file: &str,
    bytes: &'a [u8],
    max: usize,
) -> Result<Vec<&'a [u8]>, BundleError> {
    let mut out = Vec::new();
    let mut offset = 0;
    let framing = |offset: usize, reason: String| BundleError::Framing {
        file: file.to_string(),
        offset,
        reason,
    };
    while offset < bytes.len() {
        if out.len() >= max {
            return Err(BundleError::TooManyEvents {
                file: file.to_string(),
                max,
            });
        }
        let mut rest = &bytes[offset..];
        let before = rest.len();
        let length = prost::decode_length_delimiter(&mut rest)
            .map_err(|e| framing(offset, e.to_string()))?;
        let prefix = before - rest.len();
        if prefix != prost::length_delimiter_len(length) {
            return Err(framing(offset, "length is not a minimal varint".into()));
        }
        if length > EVENT_BYTES_MAX || length > rest.len() {
            return Err(framing(
                offset,
                format!("message of {length} bytes does not fit"),
            ));
        }
        out.push(&rest[..length]);
        offset += prefix + length;
    }
    Ok(out)
}

fn same(a: &Hash32, b: &Hash32) -> bool {
    chain::Digest(*a) == chain::Digest(*b)
}

fn checkpoint_error(file: &str) -> impl Fn(CheckError) -> BundleError + '_ {
    move |cause| BundleError::Checkpoint {
        file: file.to_string(),
        cause,
    }
}

/// The signed checkpoint of a bundle file, checked with the key it carries, which must
/// also be the ring's key for that id and valid when the checkpoint was issued.
fn check_checkpoint(
    file: &str,
    bytes: &[u8],
    ring: Option<&KeyRing>,
    pins: &CosignerPins,
) -> Result<(CheckpointDocument, CheckpointBody, Cosigners), BundleError> {
    let document: CheckpointDocument = parse_canonical(file, bytes)?;
    let (body, cosigners) = document
        .check(file, &[], pins)
        .map_err(checkpoint_error(file))?;
    if let Some(ring) = ring {
        check_signer(file, ring, &body, &document.public_key)?;
    }
    Ok((document, body, cosigners))
}

fn check_signer(
    file: &str,
    ring: &KeyRing,
    body: &CheckpointBody,
    public_key_hex: &str,
) -> Result<(), BundleError> {
    let key = ring
        .signer(&body.key_id, body.issued_at_unix_ms)
        .map_err(|cause| BundleError::KeyRing {
            file: file.to_string(),
            cause,
        })?;
    if hex::encode(key.public_key) != public_key_hex {
        return Err(BundleError::KeyRing {
            file: file.to_string(),
            cause: KeyRingError::UnknownKey(body.key_id.clone()),
        });
    }
    Ok(())
}

/// The key history from `keys.bin`, which must be the whole key partition up to the
/// key checkpoint: a valid chain from genesis whose Merkle tree is the signed one.
fn check_keys(
    keys_partition: &Partition,
    keys: &[u8],
    keys_body: &CheckpointBody,
) -> Result<KeyRing, BundleError> {
    if keys_body.partition != *keys_partition {
        return Err(BundleError::KeysNotSigned(format!(
            "the key checkpoint is of partition {}, not {keys_partition}",
            keys_body.partition
        )));
    }
    let messages = decode_delimited(KEYS_FILE, keys, BUNDLE_KEY_EVENTS_MAX)?;
    let mut head = ChainHead::genesis(keys_partition.clone());
    let mut ring = KeyRing::default();
    let mut hashes = Vec::with_capacity(messages.len());
    for (index, bytes) in messages.iter().enumerate() {
        let (next, envelope) = chain::check_next(&head, bytes, None)
            .map_err(|cause| BundleError::KeyChain { index, cause })?;
        if let Some(Payload::LedgerKeyRotated(r)) = &envelope.payload {
            ring.apply(r, next.sequence, envelope.recorded_at_unix_ms)
                .map_err(|cause| BundleError::KeyRing {
                    file: KEYS_FILE.to_string(),
                    cause,
                })?;
        }
        hashes.push(next.hash.0);
        head = next;
    }
    if hashes.len() as u64 != keys_body.tree_size
        || !same(&merkle::root(&hashes), &keys_body.root)
        || !same(&head.hash.0, &keys_body.head_hash)
    {
        return Err(BundleError::KeysNotSigned(format!(
            "the {} key events are not the tree of {} events the key checkpoint signs",
            hashes.len(),
            keys_body.tree_size
        )));
    }
    Ok(ring)
}

fn parse_date(
    field: &str,
    text: &Option<String>,
) -> Result<Option<chrono::NaiveDate>, BundleError> {
    text.as_ref()
        .map(|t| {
            // Exactly YYYY-MM-DD (chrono's parser alone also takes "2026-1-5").
            crate::input::date(t)
                .map_err(|_| BundleError::Manifest(format!("{field} is not a YYYY-MM-DD date")))
        })
        .transpose()
}

/// Checks a bundle completely, with no server, clock or file system: the signed
/// checkpoints, the key history, every event's bytes → hash → inclusion proof →
/// signed root, the scope, the statement's balances recomputed from the events, the
/// CSV and the manifest. `trusted`: key ids the caller pins; each must be in the key
/// history at or before the signing key (empty: the caller compares `latest_key` with
/// the ledger's published latest key itself).
pub fn verify(files: &BundleFiles, trusted: &[String]) -> Result<Verified, BundleError> {
    verify_pinned(files, trusted, &CosignerPins::default())
}

/// `verify`, with the cosigners the caller pins (`--cosigner`) and how many of them must
/// cosign the events' checkpoint (`--cosigners-required`).
pub fn verify_pinned(
    files: &BundleFiles,
    trusted: &[String],
    pins: &CosignerPins,
) -> Result<Verified, BundleError> {
    // Every bound first: nothing is parsed of a bundle with a file over its bound.
    for (name, bytes) in files.files() {
        check_size(name, bytes.len() as u64)?;
    }
    let manifest: Manifest = parse_canonical(MANIFEST_FILE, &files.manifest)?;
    if manifest.format != BUNDLE_FORMAT {
        return Err(BundleError::UnknownFormat {
            file: MANIFEST_FILE.into(),
            found: manifest.format.clone(),
        });
    }
    let keys_partition = Partition::new(&manifest.keys_partition)
        .map_err(|e| BundleError::Manifest(format!("keys_partition: {e}")))?;
    let from = parse_date("from", &manifest.from)?;
    let to = parse_date("to", &manifest.to)?;
    let scope_partition = manifest
        .scope
        .partition()
        .map_err(|e| BundleError::Manifest(format!("scope: {e}")))?;

    // 1. The key history, anchored by the key partition's own signed checkpoint.
    let (keys_document, keys_body, _) = check_checkpoint(
        KEYS_CHECKPOINT_FILE,
        &files.keys_checkpoint,
        None,
        &CosignerPins::default(),
    )?;
    let ring = check_keys(&keys_partition, &files.keys, &keys_body)?;
    check_signer(
        KEYS_CHECKPOINT_FILE,
        &ring,
        &keys_body,
        &keys_document.public_key,
    )?;
    let key_id_at = |k: Option<&crate::checkpoint::keys::KeyRecord>| {
        k.map(|k| k.key_id.clone()).unwrap_or_default()
    };
    let (first_key, latest_key) = (key_id_at(ring.keys().first()), key_id_at(ring.current()));
    let latest_public_key = ring
        .current()
        .map(|k| hex::encode(k.public_key))
        .unwrap_or_default();

    // 2. The checkpoint of the events' partition, signed by a key of that history.
    let (_, body, cosigners) =
        check_checkpoint(CHECKPOINT_FILE, &files.checkpoint, Some(&ring), pins)?;
    // An event naming the scope in another province's log proves nothing about the
    // scope's own history, which lives in its province's partition.
    if body.partition != scope_partition {
        return Err(BundleError::OutsidePartition {
            scope_partition: scope_partition.to_string(),
            checkpoint_partition: body.partition.to_string(),
        });
    }
    // Every pinned key, not just one of them: the bundle alone cannot show that its key
    // history is whole, since a retired key that leaked can sign a history that stops
    // at itself (and backdate what it signs). Such a history lacks every later key, so
    // a pinned key that must sit at or before the signer admits only checkpoints signed
    // by that key or a later one; pinning the latest key the auditor knows shuts out
    // every retired key.
    for pinned in trusted {
        if !ring.admits(pinned, &body.key_id) {
            return Err(BundleError::Untrusted {
                pinned: pinned.clone(),
                signer: body.key_id.clone(),
            });
        }
    }

    // 3. Every event: bytes → hash → proof → the signed root; in order; in scope.
    let messages = decode_delimited(EVENTS_FILE, &files.events, BUNDLE_EVENTS_MAX)?;
    if messages.is_empty() {
        return Err(BundleError::NoEvents);
    }
    let proofs: Vec<InclusionProof> = parse_canonical(PROOFS_FILE, &files.proofs)?;
    if proofs.len() != messages.len() {
        return Err(BundleError::Manifest(format!(
            "{} events but {} proofs",
            messages.len(),
            proofs.len()
        )));
    }
    let mut events: Vec<(u64, Envelope)> = Vec::with_capacity(messages.len());
    let mut rows: Vec<(Envelope, String)> = Vec::with_capacity(messages.len());
    let mut listed = Vec::with_capacity(messages.len());
    let mut last_sequence = 0;
    for (index, (bytes, proof)) in messages.iter().zip(&proofs).enumerate() {
        let hash = chain::event_hash(bytes).0;
        let envelope =
            <Envelope as prost::Message>::decode(*bytes).map_err(|e| BundleError::Event {
                index,
                sequence: 0,
                reason: format!("not an Envelope: {e}"),
            })?;
        let sequence = envelope.sequence;
        let event_error = |reason: String| BundleError::Event {
            index,
            sequence,
            reason,
        };
        if envelope.format_version != chain::FORMAT_VERSION {
            return Err(event_error(format!(
                "unknown format version {}",
                envelope.format_version
            )));
        }
        if envelope.partition != body.partition.as_str() {
            return Err(event_error(format!(
                "partition {:?}, the checkpoint is of {}",
                envelope.partition, body.partition
            )));
        }
        if sequence <= last_sequence || sequence > body.tree_size {
            return Err(event_error(format!(
                "sequence not increasing or beyond the checkpoint's {} events",
                body.tree_size
            )));
        }
        last_sequence = sequence;
        if !statement::in_scope(&envelope, &manifest.scope) {
            return Err(event_error("does not concern the bundle's scope".into()));
        }
        let date = statement::event_date(&envelope);
        if from.is_some_and(|f| date < f) || to.is_some_and(|t| date > t) {
            return Err(event_error(format!(
                "dated {date}, outside the bundle's dates"
            )));
        }
        let proof_error = |reason: String| BundleError::Proof {
            index,
            sequence,
            reason,
        };
        let proof_hash = |text: &str, field: &str| {
            merkle::decode_hash(text, field).map_err(|e| proof_error(e.to_string()))
        };
        if proof.partition != body.partition.as_str()
            || proof.tree_size != body.tree_size
            || proof.leaf_index != sequence - 1
        {
            return Err(proof_error(
                "partition, tree size or leaf index is not the event's in the checkpoint".into(),
            ));
        }
        if !same(&proof_hash(&proof.root, "root")?, &body.root) {
            return Err(proof_error("root is not the signed root".into()));
        }
        if !same(&proof_hash(&proof.event_hash, "event_hash")?, &hash) {
            return Err(proof_error(
                "event_hash is not the hash of the event bytes".into(),
            ));
        }
        if sequence == body.head_sequence && !same(&hash, &body.head_hash) {
            return Err(proof_error(
                "the event is the signed head but its hash differs".into(),
            ));
        }
        proof
            .verify()
            .map_err(|e: ProofError| proof_error(e.to_string()))?;
        let hash_hex = merkle::encode_hash(&hash);
        listed.push(ManifestEvent {
            sequence,
            event_type: envelope.event_type.clone(),
            event_hash: hash_hex.clone(),
        });
        rows.push((envelope.clone(), hash_hex));
        events.push((sequence, envelope));
    }

    // 4. The statement: the checkpoint it names, and balances recomputed here.
    let checkpoint = CheckpointRef::from(&body);
    let claimed: Statement = parse_canonical(STATEMENT_FILE, &files.statement)?;
    if claimed.format != STATEMENT_FORMAT {
        return Err(BundleError::UnknownFormat {
            file: STATEMENT_FILE.into(),
            found: claimed.format.clone(),
        });
    }
    if claimed.checkpoint != checkpoint {
        return Err(BundleError::Statement(
            "it names another checkpoint than the bundle's".into(),
        ));
    }
    if claimed.scope != manifest.scope {
        return Err(BundleError::Statement(
            "its scope is not the manifest's".into(),
        ));
    }
    let recomputed = statement::balances(&events);
    if let Some(difference) = first_difference(&claimed.households, &recomputed) {
        return Err(BundleError::Statement(difference));
    }
    let households = recomputed.len();
    // Equal values are not enough: "5000000.0" and "-0" parse to the values of
    // "5000000" and "0" (a Decimal keeps its scale, and compares without it), so the
    // file must also be the statement's one rendering, byte for byte (§3, §5).
    let rendered = canonical_json(&Statement {
        households: recomputed,
        ..claimed
    });
    if rendered != files.statement {
        return Err(BundleError::Statement(format!(
            "line {} is not the canonical rendering of the recomputed balances (amounts are written as normalized decimals)",
            first_differing_line(&rendered, &files.statement)
        )));
    }

    // 5. The CSV is exactly the rendering of the events.
    let csv = statement::render_csv(&rows);
    if csv != files.csv {
        let line = first_differing_line(&csv, &files.csv);
        return Err(BundleError::Csv { line });
    }

    // 6. The manifest describes exactly this.
    let expected = Manifest {
        format: BUNDLE_FORMAT.into(),
        scope: manifest.scope.clone(),
        from: manifest.from.clone(),
        to: manifest.to.clone(),
        checkpoint: checkpoint.clone(),
        keys_partition: manifest.keys_partition.clone(),
        keys_checkpoint: CheckpointRef::from(&keys_body),
        key_ids: ring.keys().iter().map(|k| k.key_id.clone()).collect(),
        signed_by: body.key_id.clone(),
        events: listed,
        files: FILES.iter().map(|f| f.to_string()).collect(),
    };
    if expected != manifest {
        return Err(BundleError::Manifest(
            "it does not describe the bundle's checkpoints, keys or events".into(),
        ));
    }
    Ok(Verified {
        scope: manifest.scope,
        events: events.len(),
        checkpoint,
        signed_by: body.key_id,
        first_key,
        latest_key,
        latest_public_key,
        cosigners: [cosigners.pinned, cosigners.unpinned.clone()].concat(),
        unpinned_cosigners: cosigners.unpinned,
        households,
    })
}

fn first_difference(
    claimed: &BTreeMap<String, HouseholdBalances>,
    recomputed: &BTreeMap<String, HouseholdBalances>,
) -> Option<String> {
    for (household, balances) in recomputed {
        match claimed.get(household) {
            None => return Some(format!("household {household} is missing")),
            Some(c) if c != balances => {
                return Some(format!(
                    "household {household}: the stated balances differ from the events' ({})",
                    serde_json::to_string(balances).unwrap_or_default()
                ));
            }
            Some(_) => {}
        }
    }
    claimed
        .keys()
        .find(|h| !recomputed.contains_key(*h))
        .map(|h| format!("household {h} has no money events in the bundle"))
}

fn first_differing_line(a: &[u8], b: &[u8]) -> usize {
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    1 + a[..at.min(a.len())].iter().filter(|&&c| c == b'\n').count()
}

#[cfg(test)]
mod tests {
    //! The files' bounds hold the largest files the format allows.
    use super::*;
    use crate::checkpoint::proofs::{COSIGNATURES_MAX, CheckpointView, CosignatureDocument};
    use crate::checkpoint::sign::{CHECKPOINT_BYTES_MAX, COSIGNER_ID_BYTES_MAX};

    fn hex(bytes: usize) -> String {
        "f".repeat(2 * bytes)
    }

    /// The longest amount a Decimal renders: 29 digits, a sign and a point.
    const AMOUNT: &str = "-7.9228162514264337593543950335";

    #[test]
    fn the_largest_checkpoint_document_fits_its_bound() {
        let cosignature = CosignatureDocument {
            // Every byte escaped: twice as long in JSON.
            cosigner_id: "\"".repeat(COSIGNER_ID_BYTES_MAX),
            key_id: hex(8),
            public_key: hex(32),
            signature: hex(64),
            signed_at_unix_ms: i64::MIN,
            checkpoint_hash: hex(32),
        };
        let document = CheckpointDocument {
            checkpoint: hex(CHECKPOINT_BYTES_MAX),
            signature: hex(64),
            key_id: hex(8),
            public_key: hex(32),
            decoded: CheckpointView {
                format_version: u32::MAX,
                partition: "p".repeat(chain::PARTITION_CHARS_MAX),
                tree_size: u64::MAX,
                root: hex(32),
                head_sequence: u64::MAX,
                head_hash: hex(32),
                issued_at_unix_ms: i64::MIN,
                key_id: hex(8),
            },
            cosignatures: vec![cosignature; COSIGNATURES_MAX],
        };
        let bytes = canonical_json(&document).len() as u64;
        assert!(bytes <= CHECKPOINT_FILE_BYTES_MAX, "{bytes}");
    }

    #[test]
    fn manifest_proof_and_statement_lines_fit_their_per_event_bounds() {
        let n = 1000u64;
        let reference = CheckpointRef {
            partition: "p".repeat(chain::PARTITION_CHARS_MAX),
            tree_size: u64::MAX,
            root: hex(32),
        };
        let manifest_of = |keys: usize, events: usize| Manifest {
            format: BUNDLE_FORMAT.into(),
            scope: Scope::Household("0100007-000001".into()),
            from: Some("2026-01-01".into()),
            to: Some("2026-12-31".into()),
            checkpoint: reference.clone(),
            keys_partition: "p".repeat(chain::PARTITION_CHARS_MAX),
            keys_checkpoint: reference.clone(),
            key_ids: vec![hex(8); keys],
            signed_by: hex(8),
            events: vec![
                ManifestEvent {
                    sequence: u64::MAX,
                    event_type: "t".repeat(92),
                    event_hash: hex(32),
                };
                events
            ],
            files: FILES.iter().map(|f| f.to_string()).collect(),
        };
        let size = |m: &Manifest| canonical_json(m).len() as u64;
        let fixed = size(&manifest_of(1, 1));
        assert!(fixed <= 64 * KIB, "{fixed}");
        let keys = size(&manifest_of(1 + n as usize, 1)) - fixed;
        assert!(keys <= n * MANIFEST_KEY_BYTES_MAX, "{keys}");
        let events = size(&manifest_of(1, 1 + n as usize)) - fixed;
        assert!(events <= n * MANIFEST_EVENT_BYTES_MAX, "{events}");

        let proof = InclusionProof {
            partition: "p".repeat(chain::PARTITION_CHARS_MAX),
            tree_size: u64::MAX,
            leaf_index: u64::MAX,
            event_hash: hex(32),
            audit_path: vec![hex(32); 24],
            root: hex(32),
        };
        let bytes = canonical_json(&vec![proof; n as usize]).len() as u64;
        assert!(bytes <= KIB + n * PROOF_ENTRY_BYTES_MAX, "{bytes}");

        // Each event a household of its own, with a loan and a line in both months.
        let amount: rust_decimal::Decimal = AMOUNT.parse().unwrap();
        assert_eq!(amount.to_string(), AMOUNT);
        let balances = HouseholdBalances {
            loans: [(
                format!("{}-L{}", "p".repeat(chain::PARTITION_CHARS_MAX), u64::MAX),
                LoanBalance {
                    disbursed: amount,
                    principal_repaid: amount,
                    written_off: amount,
                    principal_outstanding: amount,
                    interest_paid: amount,
                },
            )]
            .into(),
            repayments_received_by_month: [("2026-01".to_string(), amount)].into(),
            assistance_paid_by_month: [("2026-01".to_string(), amount)].into(),
        };
        let statement = Statement {
            format: STATEMENT_FORMAT.into(),
            checkpoint: reference,
            scope: Scope::Commune("0100007".into()),
            households: (0..n)
                .map(|i| (format!("{i:0>200}"), balances.clone()))
                .collect(),
        };
        let bytes = canonical_json(&statement).len() as u64;
        assert!(bytes <= 64 * KIB + n * STATEMENT_EVENT_BYTES_MAX, "{bytes}");
    }

    #[test]
    fn every_file_has_a_bound_within_the_general_one() {
        for (name, max) in FILES.iter().zip(FILE_BYTES_MAX) {
            assert_eq!(file_bytes_max(name), max);
            assert!(max <= BUNDLE_FILE_BYTES_MAX, "{name}");
        }
        assert_eq!(EVENTS_FILE_BYTES_MAX, BUNDLE_FILE_BYTES_MAX);
    }
}
