//! What `audit verify` keeps of one partition's checkpoints while it reads their
//! cosignatures: a redb file in a temporary directory, removed when dropped, not the
//! heap. A cosignature names its checkpoint only by hash, and may come any time after
//! it, so every valid checkpoint must stay findable by hash until the cosignatures are
//! read; held in memory, that would grow with the partition's age (one checkpoint an
//! interval, for years), as ADR 0017 keeps the trail's subjects off the heap for the
//! same reason. Memory is redb's cache (`SCRATCH_CACHE_BYTES_MAX`) and one chunk.

use prost::Message;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::CheckpointError;
use super::audit::VerifiedCheckpoint;
use super::proofs::{CosignerPins, OnePerKey};
use crate::merkle::Hash32;
use crate::proto;

/// redb's page cache for the scratch index.
pub const SCRATCH_CACHE_BYTES_MAX: usize = 16 << 20;

/// Checkpoint hash (`sign::checkpoint_hash`) -> ordinal: the valid checkpoints of the
/// partition numbered from 0 in stream order.
const BY_HASH: TableDefinition<&[u8], u64> = TableDefinition::new("by-hash");
/// Ordinal -> `Record`.
const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");
/// Ordinal -> the cosignatures kept for it (`Kept`).
const COSIGNERS: TableDefinition<u64, &[u8]> = TableDefinition::new("cosigners");

/// A valid checkpoint as verify lists it, and whether verify refused it (it does not
/// match the log, or is out of order): a cosignature of it is then a problem.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub stream_sequence: u64,
    pub tree_size: u64,
    pub root: Hash32,
    pub key_id: String,
    pub issued_at_unix_ms: i64,
    /// The signed bytes, which a cosignature is checked over.
    pub checkpoint: Vec<u8>,
    pub refused: bool,
}

impl Record {
    pub fn of(v: &VerifiedCheckpoint) -> Self {
        let body = &v.stored.body;
        Self {
            stream_sequence: v.stored.stream_sequence,
            tree_size: body.tree_size,
            root: body.root,
            key_id: body.key_id.clone(),
            issued_at_unix_ms: body.issued_at_unix_ms,
            checkpoint: v.stored.signed.checkpoint.to_vec(),
            refused: false,
        }
    }
}

/// `OnePerKey` as stored: the encoded cosignatures of each group.
#[derive(Default, Serialize, Deserialize)]
struct Kept {
    pinned: Vec<Vec<u8>>,
    others: Vec<Vec<u8>>,
}

impl Kept {
    fn of(kept: &OnePerKey) -> Self {
        let encode =
            |group: &[proto::Cosignature]| group.iter().map(|c| c.encode_to_vec()).collect();
        Self {
            pinned: encode(&kept.pinned),
            others: encode(&kept.others),
        }
    }

    fn open(&self) -> Result<OnePerKey, CheckpointError> {
        let decode = |group: &[Vec<u8>]| {
            group
                .iter()
                .map(|c| proto::Cosignature::decode(c.as_slice()).map_err(scratch))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(OnePerKey {
            pinned: decode(&self.pinned)?,
            others: decode(&self.others)?,
        })
    }
}

fn scratch(e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Scratch(e.to_string())
}

/// One partition's valid checkpoints by hash and by ordinal, on disk.
pub struct ScratchIndex {
    db: redb::Database,
    checkpoints: u64,
    // Dropped after `db`: the directory goes once the file is closed.
    _dir: tempfile::TempDir,
}

impl ScratchIndex {
    /// An empty index in a new temporary directory (`TMPDIR`).
    pub fn create() -> Result<Self, CheckpointError> {
        let dir = tempfile::Builder::new()
            .prefix("ansinh-verify-")
            .tempdir()
            .map_err(scratch)?;
        let db = redb::Builder::new()
            .set_cache_size(SCRATCH_CACHE_BYTES_MAX)
            .create(dir.path().join("checkpoints.redb"))
            .map_err(scratch)?;
        Ok(Self {
            db,
            checkpoints: 0,
            _dir: dir,
        })
    }

    /// Valid checkpoints recorded so far; the next one's ordinal.
    pub fn len(&self) -> u64 {
        self.checkpoints
    }

    pub fn is_empty(&self) -> bool {
        self.checkpoints == 0
    }

    /// Adds the next valid checkpoints, in stream order, in one transaction. Nothing
    /// here must survive a crash, but commits are durable all the same: redb remembers
    /// in memory every page written since the last durable commit, which would grow
    /// with the checkpoints; one fsync a chunk (1,024 checkpoints) is cheap.
    pub fn push(&mut self, records: &[Record]) -> Result<(), CheckpointError> {
        let tx = self.db.begin_write().map_err(scratch)?;
        {
            let mut by_hash = tx.open_table(BY_HASH).map_err(scratch)?;
            let mut checkpoints = tx.open_table(CHECKPOINTS).map_err(scratch)?;
            for (i, record) in records.iter().enumerate() {
                let ordinal = self.checkpoints + i as u64;
                let hash = super::sign::checkpoint_hash(&record.checkpoint);
                // The first of two identical messages is the one verify lists.
                if by_hash.get(hash.as_slice()).map_err(scratch)?.is_none() {
                    by_hash.insert(hash.as_slice(), ordinal).map_err(scratch)?;
                }
                let bytes = rmp_serde::to_vec(record).map_err(scratch)?;
                checkpoints
                    .insert(ordinal, bytes.as_slice())
                    .map_err(scratch)?;
            }
        }
        tx.commit().map_err(scratch)?;
        self.checkpoints += records.len() as u64;
        Ok(())
    }

    /// The checkpoint of this hash: its ordinal and record.
    pub fn find(&self, hash: &[u8]) -> Result<Option<(u64, Record)>, CheckpointError> {
        let tx = self.db.begin_read().map_err(scratch)?;
        let by_hash = match tx.open_table(BY_HASH) {
            Ok(table) => table,
            // No checkpoint was pushed.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(scratch(e)),
        };
        let Some(ordinal) = by_hash.get(hash).map_err(scratch)?.map(|o| o.value()) else {
            return Ok(None);
        };
        Ok(self.record(ordinal)?.map(|r| (ordinal, r)))
    }

    fn record(&self, ordinal: u64) -> Result<Option<Record>, CheckpointError> {
        let tx = self.db.begin_read().map_err(scratch)?;
        let checkpoints = tx.open_table(CHECKPOINTS).map_err(scratch)?;
        checkpoints
            .get(ordinal)
            .map_err(scratch)?
            .map(|bytes| rmp_serde::from_slice(bytes.value()).map_err(scratch))
            .transpose()
    }

    /// Offers verified cosignatures (each with its checkpoint's ordinal, in stream
    /// order) to the cosigners kept for their checkpoints (`OnePerKey`), in one
    /// transaction.
    pub fn cosigned(
        &self,
        verified: Vec<(u64, proto::Cosignature)>,
        pins: &CosignerPins,
    ) -> Result<(), CheckpointError> {
        if verified.is_empty() {
            return Ok(());
        }
        // Durable, as `push` says why.
        let tx = self.db.begin_write().map_err(scratch)?;
        {
            let mut table = tx.open_table(COSIGNERS).map_err(scratch)?;
            for (ordinal, cosignature) in verified {
                let mut kept = match table.get(ordinal).map_err(scratch)? {
                    Some(bytes) => rmp_serde::from_slice::<Kept>(bytes.value())
                        .map_err(scratch)?
                        .open()?,
                    None => OnePerKey::default(),
                };
                if kept.offer(cosignature, pins) {
                    let bytes = rmp_serde::to_vec(&Kept::of(&kept)).map_err(scratch)?;
                    table.insert(ordinal, bytes.as_slice()).map_err(scratch)?;
                }
            }
        }
        tx.commit().map_err(scratch)
    }

    /// The checkpoint of this ordinal and the cosignatures kept for it, as a document
    /// carries them (`OnePerKey::finish`).
    pub fn get(
        &self,
        ordinal: u64,
    ) -> Result<Option<(Record, Vec<proto::Cosignature>)>, CheckpointError> {
        let Some(record) = self.record(ordinal)? else {
            return Ok(None);
        };
        let tx = self.db.begin_read().map_err(scratch)?;
        let cosigners = match tx.open_table(COSIGNERS) {
            Ok(table) => match table.get(ordinal).map_err(scratch)? {
                Some(bytes) => rmp_serde::from_slice::<Kept>(bytes.value())
                    .map_err(scratch)?
                    .open()?
                    .finish(),
                None => Vec::new(),
            },
            // No cosignature was kept for any checkpoint.
            Err(redb::TableError::TableDoesNotExist(_)) => Vec::new(),
            Err(e) => return Err(scratch(e)),
        };
        Ok(Some((record, cosigners)))
    }
}
