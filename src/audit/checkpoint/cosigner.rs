//! What an audit office holds on to between its cosignatures (docs/PROOFS.md section
//! 7.6, ADR 0025): per partition, the last checkpoint it cosigned. Before it cosigns a
//! checkpoint of `n` events with root `r`, that record decides (`next_step`): an `n`
//! smaller than the size cosigned is refused, the same size with another root is a
//! fork, and a larger `n` needs the consistency proof from the size cosigned to `n`,
//! which must verify against the root cosigned and `r` (`check_growth`). The signer must
//! be a ledger key the office pinned, or a later one (`check_signer`).
//!
//! The state is one small JSON file (`CosignerState`), locked while a cosign runs and
//! replaced atomically (a temporary file fsynced, renamed over it, the directory
//! fsynced) only after the cosignature is published. A missing file is an empty state:
//! the first checkpoint of each partition is trusted on first use.
//!
//! **Boundary:** the decisions are pure; only `CosignerState` touches the file system,
//! and nothing here knows NATS.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::keys::{KeyRing, sync_parent};
use super::proofs::{CheckpointDocument, CosignerPins};
use super::sign::{CheckpointBody, KeyPair};
use crate::chain::{Digest, Partition};
use crate::merkle::{self, ConsistencyProof, Hash32};
use crate::proto;

/// The `format` of a state file.
pub const STATE_FORMAT: &str = "ansinh/v1/cosigner-state";
/// Largest state file read. An entry is about 2.5 KB (a checkpoint document with one
/// cosignature), so this holds some 1,600 partitions; a ledger has 64.
pub const STATE_FILE_BYTES_MAX: u64 = 4 << 20;

/// One act of cosigning: who signs, with which key, trusting which ledger keys, when.
pub struct Cosigning<'a> {
    /// The office's id, as signed (1 to 128 bytes, no control characters).
    pub cosigner_id: &'a str,
    pub key: &'a KeyPair,
    /// Ledger keys the office pinned out of band (`--trust`: public keys of 64 hex
    /// digits, or key ids of 16); each must be in the ledger's key history at or before
    /// the checkpoint's signer (`KeyRing::admits`). At least one.
    pub trusted: &'a [String],
    /// When it signs (the caller reads the clock).
    pub signed_at_unix_ms: i64,
}

/// The last checkpoint an office cosigned of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosigned {
    pub tree_size: u64,
    pub root: Hash32,
    /// The ledger's signed checkpoint (docs/PROOFS.md section 8) carrying the office's
    /// cosignature: what it shows others if the ledger later signs another history.
    pub document: CheckpointDocument,
}

impl Cosigned {
    pub fn new(
        signed: &proto::SignedCheckpoint,
        body: &CheckpointBody,
        public_key: &[u8; 32],
        cosignature: &proto::Cosignature,
    ) -> Self {
        Self {
            tree_size: body.tree_size,
            root: body.root,
            document: CheckpointDocument::new(
                signed,
                body,
                public_key,
                std::slice::from_ref(cosignature),
            ),
        }
    }
}

/// Why an office refuses to cosign a checkpoint. Nothing is published and the state
/// is left as it was. For people the message; with `--json` the kind and fields.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind")]
pub enum CosignRefusal {
    /// The ledger now gives the first `tree_size` events, which the office cosigned with
    /// `cosigned_root`, another root: its log was rewritten or forked (recreated streams,
    /// a restore of another history). Alert the other offices and the bank's auditors;
    /// keep the state file, whose checkpoint the ledger signed, as the evidence.
    #[error(
        "partition {partition}: fork: you cosigned its first {tree_size} events with root {cosigned_root}, and the ledger now gives them root {root_now}; the log was rewritten or forked"
    )]
    Forked {
        partition: String,
        tree_size: u64,
        cosigned_root: String,
        root_now: String,
    },
    /// A checkpoint smaller than one the office cosigned: a log only grows. Cosign the
    /// latest checkpoint instead; if the ledger has none as large as yours, its log lost
    /// events (a restore from an older copy): alert.
    #[error(
        "partition {partition}: you cosigned a checkpoint of {cosigned_size} events; one of {tree_size} would take the log back"
    )]
    Shrunk {
        partition: String,
        cosigned_size: u64,
        tree_size: u64,
    },
    /// The consistency proof from the size cosigned to the checkpoint's does not verify
    /// against the root cosigned and the checkpoint's root, although the log's first
    /// events still give the root cosigned: a defect in building it. Report it.
    #[error(
        "partition {partition}: the consistency proof from {from} to {to} events does not verify against the root you cosigned and the checkpoint's: {cause}"
    )]
    ConsistencyProofFailed {
        partition: String,
        from: u64,
        to: u64,
        cause: String,
    },
    /// The checkpoint is signed by a key the office did not pin, nor one registered
    /// after it: a key history the office cannot trust (made up, or cut short at a
    /// retired key). Check the ledger's published keys, then pin the latest.
    #[error(
        "partition {partition}: the checkpoint is signed by key {signer}, and your pinned key {pinned} is not in the ledger's key history at or before it"
    )]
    UntrustedSigner {
        partition: String,
        pinned: String,
        signer: String,
    },
}

impl CosignRefusal {
    /// Its kind, as `--json` names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Forked { .. } => "Forked",
            Self::Shrunk { .. } => "Shrunk",
            Self::ConsistencyProofFailed { .. } => "ConsistencyProofFailed",
            Self::UntrustedSigner { .. } => "UntrustedSigner",
        }
    }
}

/// What cosigning a checkpoint needs, given what the office cosigned before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing cosigned of this partition yet: the checkpoint is trusted on first use.
    First,
    /// The tree cosigned last (same size, same root): nothing more to prove.
    Again,
    /// A larger tree: the consistency proof from `from` events, cosigned with `root`.
    Grown { from: u64, root: Hash32 },
}

/// Every key the office pinned admits the checkpoint's signer (`KeyRing::admits`).
pub fn check_signer(
    partition: &Partition,
    ring: &KeyRing,
    trusted: &[String],
    signer_key_id: &str,
) -> Result<(), CosignRefusal> {
    match trusted.iter().find(|pin| !ring.admits(pin, signer_key_id)) {
        Some(pin) => Err(CosignRefusal::UntrustedSigner {
            partition: partition.to_string(),
            pinned: pin.clone(),
            signer: signer_key_id.to_string(),
        }),
        None => Ok(()),
    }
}

/// What cosigning `checkpoint` needs after `last` (the partition's last cosigned), or
/// why it is refused: a smaller size, or the same size with another root.
pub fn next_step(
    partition: &Partition,
    last: Option<&Cosigned>,
    checkpoint: &CheckpointBody,
) -> Result<Step, CosignRefusal> {
    let Some(last) = last else {
        return Ok(Step::First);
    };
    let tree_size = checkpoint.tree_size;
    if tree_size < last.tree_size {
        return Err(CosignRefusal::Shrunk {
            partition: partition.to_string(),
            cosigned_size: last.tree_size,
            tree_size,
        });
    }
    if tree_size > last.tree_size {
        return Ok(Step::Grown {
            from: last.tree_size,
            root: last.root,
        });
    }
    if Digest(checkpoint.root) != Digest(last.root) {
        return Err(CosignRefusal::Forked {
            partition: partition.to_string(),
            tree_size,
            cosigned_root: merkle::encode_hash(&last.root),
            root_now: merkle::encode_hash(&checkpoint.root),
        });
    }
    Ok(Step::Again)
}

/// A `Step::Grown`'s check: `proof`, from `from` events to the checkpoint's size, built
/// from the log, verifies against `cosigned_root` (the office's, not the log's) and the
/// checkpoint's root. When it does not, the log's own root of the first `from` events
/// (the proof's `old_root`) says why: another root than the one cosigned is a fork.
pub fn check_growth(
    partition: &Partition,
    from: u64,
    cosigned_root: &Hash32,
    checkpoint: &CheckpointBody,
    proof: &ConsistencyProof,
) -> Result<(), CosignRefusal> {
    let held = ConsistencyProof {
        partition: partition.to_string(),
        old_size: from,
        new_size: checkpoint.tree_size,
        old_root: merkle::encode_hash(cosigned_root),
        new_root: merkle::encode_hash(&checkpoint.root),
        path: proof.path.clone(),
    };
    let sizes_asked = proof.old_size == from && proof.new_size == checkpoint.tree_size;
    let cause = match held.verify() {
        Ok(()) if sizes_asked => return Ok(()),
        Ok(()) => format!(
            "it is a proof from {} to {} events",
            proof.old_size, proof.new_size
        ),
        Err(e) => e.to_string(),
    };
    let log_root = merkle::decode_hash(&proof.old_root, "old_root").map(Digest);
    if sizes_asked && log_root.is_ok_and(|root| root != Digest(*cosigned_root)) {
        return Err(CosignRefusal::Forked {
            partition: partition.to_string(),
            tree_size: from,
            cosigned_root: held.old_root,
            root_now: proof.old_root.clone(),
        });
    }
    Err(CosignRefusal::ConsistencyProofFailed {
        partition: partition.to_string(),
        from,
        to: checkpoint.tree_size,
        cause,
    })
}

/// Why the state file cannot be used. Nothing is cosigned (but see `NotRecorded`).
#[derive(Debug, thiserror::Error)]
pub enum CosignerStateError {
    /// Read, lock or write failed: fix the path or its permissions.
    #[error("cosigner state {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a state file as docs/PROOFS.md section 7.6 describes, or an
    /// entry does not check (its checkpoint's signature, its cosignature, its size or
    /// root). Restore it from a backup; never delete it to get past this: an empty
    /// state trusts whatever the ledger shows next.
    #[error("cosigner state {path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
    /// Another `audit cosign` holds the state file: wait for it, then run again.
    #[error("cosigner state {path} is in use by another cosign (lock {lock})")]
    Busy { path: PathBuf, lock: PathBuf },
    /// The cosignature was published but the state file could not be replaced: the
    /// state still holds the checkpoint cosigned before. Fix the cause, then cosign the
    /// same size again to record it.
    #[error(
        "partition {partition}: the cosignature of the checkpoint of {tree_size} events was published, but the cosigner state {path} could not be written: {source}"
    )]
    NotRecorded {
        partition: String,
        tree_size: u64,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The file's form (docs/PROOFS.md section 7.6, `schemas/cosigner-state.schema.json`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    partitions: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    tree_size: u64,
    root: String,
    checkpoint: CheckpointDocument,
}

/// An office's record of the last checkpoint it cosigned of each partition, read from
/// its state file and written back to it; the file is locked while this is held.
#[derive(Debug)]
pub struct CosignerState {
    path: PathBuf,
    partitions: BTreeMap<String, Cosigned>,
    _lock: StateLock,
}

impl CosignerState {
    /// Locks the state file at `path` (refusing one another cosign holds) and reads it,
    /// checking every entry; a missing file is an empty state.
    pub fn open(path: &Path) -> Result<Self, CosignerStateError> {
        let lock = StateLock::acquire(path)?;
        let io = |source| CosignerStateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let partitions = match std::fs::File::open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(e)),
            Ok(file) => {
                let mut bytes = Vec::new();
                file.take(STATE_FILE_BYTES_MAX + 1)
                    .read_to_end(&mut bytes)
                    .map_err(io)?;
                if bytes.len() as u64 > STATE_FILE_BYTES_MAX {
                    return Err(malformed(
                        path,
                        format!("larger than {STATE_FILE_BYTES_MAX} bytes"),
                    ));
                }
                parse(&bytes).map_err(|reason| malformed(path, reason))?
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            partitions,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last checkpoint cosigned of `partition`, if any.
    pub fn last(&self, partition: &Partition) -> Option<&Cosigned> {
        self.partitions.get(partition.as_str())
    }

    /// Records `cosigned` as the last checkpoint cosigned of `partition`: in the file
    /// first (replaced atomically), then here. Called once its cosignature is
    /// published.
    pub fn record(
        &mut self,
        partition: &Partition,
        cosigned: Cosigned,
    ) -> Result<(), CosignerStateError> {
        let tree_size = cosigned.tree_size;
        let mut partitions = self.partitions.clone();
        partitions.insert(partition.to_string(), cosigned);
        write_atomically(&self.path, &render(&partitions)).map_err(|source| {
            CosignerStateError::NotRecorded {
                partition: partition.to_string(),
                tree_size,
                path: self.path.clone(),
                source,
            }
        })?;
        self.partitions = partitions;
        Ok(())
    }
}

fn malformed(path: &Path, reason: String) -> CosignerStateError {
    CosignerStateError::Malformed {
        path: path.to_path_buf(),
        reason,
    }
}

/// The file's bytes: pretty JSON, partitions in name order, a final newline.
fn render(partitions: &BTreeMap<String, Cosigned>) -> Vec<u8> {
    let file = StateFile {
        format: STATE_FORMAT.to_string(),
        partitions: partitions
            .iter()
            .map(|(name, c)| {
                let entry = Entry {
                    tree_size: c.tree_size,
                    root: merkle::encode_hash(&c.root),
                    checkpoint: c.document.clone(),
                };
                (name.clone(), entry)
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).expect("a state serializes");
    bytes.push(b'\n');
    bytes
}

/// Reads a state file's bytes, checking each entry as when it was written: its
/// checkpoint's signature (by the key it carries) and view, its one cosignature, and
/// that partition, size and root are the checkpoint's.
fn parse(bytes: &[u8]) -> Result<BTreeMap<String, Cosigned>, String> {
    let file: StateFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.format != STATE_FORMAT {
        return Err(format!(
            "format {:?}, expected {STATE_FORMAT:?}",
            file.format
        ));
    }
    let mut partitions = BTreeMap::new();
    for (name, entry) in file.partitions {
        let what = format!("partitions.{name}");
        let partition = Partition::new(&name).map_err(|e| format!("{what}: {e}"))?;
        let root = merkle::decode_hash(&entry.root, "root").map_err(|e| format!("{what}: {e}"))?;
        let (body, _) = entry
            .checkpoint
            .check(&format!("{what}.checkpoint"), &[], &CosignerPins::default())
            .map_err(|e| e.to_string())?;
        if entry.checkpoint.cosignatures.len() != 1 {
            return Err(format!(
                "{what}.checkpoint: {} cosignatures, not the office's one",
                entry.checkpoint.cosignatures.len()
            ));
        }
        if body.partition != partition
            || body.tree_size != entry.tree_size
            || Digest(body.root) != Digest(root)
        {
            return Err(format!(
                "{what}: tree_size and root are not those of its checkpoint"
            ));
        }
        partitions.insert(
            name,
            Cosigned {
                tree_size: entry.tree_size,
                root,
                document: entry.checkpoint,
            },
        );
    }
    Ok(partitions)
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one: a
/// temporary file beside it, fsynced, renamed over it, the directory fsynced.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".tmp-{}", std::process::id()));
    let aside = PathBuf::from(aside);
    let written = (|| {
        let mut file = std::fs::File::create(&aside)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&aside, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
    written?;
    sync_parent(path);
    Ok(())
}

/// An exclusive `flock` on `<state>.lock`, taken without waiting and released when
/// dropped (or when the process dies, so a crash leaves no stale lock). The state file
/// itself is replaced by a rename, so the lock lives beside it.
#[derive(Debug)]
struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    fn acquire(state: &Path) -> Result<Self, CosignerStateError> {
        let mut lock = state.as_os_str().to_owned();
        lock.push(".lock");
        let lock = PathBuf::from(lock);
        let io = |source| CosignerStateError::Io {
            path: lock.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a descriptor we own; LOCK_NB makes it return at once.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    return Err(CosignerStateError::Busy {
                        path: state.to_path_buf(),
                        lock,
                    });
                }
                return Err(io(e));
            }
        }
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::sign;

    fn partition() -> Partition {
        Partition::new("01").unwrap()
    }

    fn body(tree_size: u64, root: u8) -> CheckpointBody {
        let key = KeyPair::from_seed(&[1; 32]);
        CheckpointBody {
            partition: partition(),
            tree_size,
            root: [root; 32],
            head_sequence: tree_size,
            head_hash: [9; 32],
            issued_at_unix_ms: 1,
            key_id: key.key_id().into(),
        }
    }

    fn cosigned(tree_size: u64, root: u8) -> Cosigned {
        let key = KeyPair::from_seed(&[1; 32]);
        let body = body(tree_size, root);
        let signed = sign::sign_checkpoint(&key, &body);
        let office = KeyPair::from_seed(&[2; 32]);
        let cosignature = sign::cosign(&office, "office", &signed.checkpoint, 5).unwrap();
        Cosigned::new(&signed, &body, &key.public_key(), &cosignature)
    }

    #[test]
    fn the_last_cosigned_decides_what_is_needed() {
        let p = partition();
        assert_eq!(next_step(&p, None, &body(3, 1)), Ok(Step::First));
        let last = cosigned(3, 1);
        assert_eq!(next_step(&p, Some(&last), &body(3, 1)), Ok(Step::Again));
        assert_eq!(
            next_step(&p, Some(&last), &body(5, 2)),
            Ok(Step::Grown {
                from: 3,
                root: [1; 32]
            })
        );
        assert!(matches!(
            next_step(&p, Some(&last), &body(2, 1)),
            Err(CosignRefusal::Shrunk {
                cosigned_size: 3,
                tree_size: 2,
                ..
            })
        ));
        assert!(matches!(
            next_step(&p, Some(&last), &body(3, 2)),
            Err(CosignRefusal::Forked { tree_size: 3, .. })
        ));
    }

    #[test]
    fn growth_is_checked_against_the_root_cosigned_not_the_logs() {
        let p = partition();
        let hashes: Vec<Hash32> = (0u8..5).map(|i| [i; 32]).collect();
        let mut forked = hashes.clone();
        forked[1] = [99; 32];
        let old_root = merkle::root(&hashes[..3]);
        let mut checkpoint = body(5, 0);
        // The log grew from what was cosigned: accepted.
        checkpoint.root = merkle::root(&hashes);
        let proof = ConsistencyProof::generate("01", &hashes, 3).unwrap();
        assert_eq!(check_growth(&p, 3, &old_root, &checkpoint, &proof), Ok(()));
        // Another log, whose proof holds against its own first root: a fork.
        checkpoint.root = merkle::root(&forked);
        let proof = ConsistencyProof::generate("01", &forked, 3).unwrap();
        proof.verify().unwrap();
        assert!(matches!(
            check_growth(&p, 3, &old_root, &checkpoint, &proof),
            Err(CosignRefusal::Forked { tree_size: 3, .. })
        ));
        // The right log, a broken proof: not passed off as a fork.
        checkpoint.root = merkle::root(&hashes);
        let mut broken = ConsistencyProof::generate("01", &hashes, 3).unwrap();
        broken.path[0] = merkle::encode_hash(&[7; 32]);
        assert!(matches!(
            check_growth(&p, 3, &old_root, &checkpoint, &broken),
            Err(CosignRefusal::ConsistencyProofFailed { from: 3, to: 5, .. })
        ));
    }

    #[test]
    fn the_state_file_round_trips_and_refuses_what_does_not_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("office-state.json");
        let mut state = CosignerState::open(&path).unwrap();
        assert!(state.last(&partition()).is_none());
        // Locked while held.
        assert!(matches!(
            CosignerState::open(&path),
            Err(CosignerStateError::Busy { .. })
        ));
        state.record(&partition(), cosigned(3, 1)).unwrap();
        drop(state);
        let state = CosignerState::open(&path).unwrap();
        assert_eq!(state.last(&partition()), Some(&cosigned(3, 1)));
        drop(state);
        // An entry whose size is not its checkpoint's is refused, not trusted.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"tree_size\": 3", "\"tree_size\": 2")).unwrap();
        assert!(matches!(
            CosignerState::open(&path),
            Err(CosignerStateError::Malformed { .. })
        ));
        std::fs::write(&path, "{}").unwrap();
        assert!(matches!(
            CosignerState::open(&path),
            Err(CosignerStateError::Malformed { .. })
        ));
    }
}
