//! The writer's own durable memory (sled): the last acknowledged head of every
//! partition, the permanent idempotency index, and partitions quarantined after
//! lost acknowledged data was detected.
//!
//! Everything here can be re-derived from the log except one fact: which head the
//! server *acknowledged*. That is what lets the ledger detect a server that lost
//! acknowledged writes (see `writer::Ledger::open`).

use crate::chain::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The local store is unreadable or the disk failed; the operator must look.
    #[error("ledger store: {0}")]
    Sled(#[from] sled::Error),
    /// A record in the store has the wrong shape: the store is corrupt.
    #[error("ledger store record {0} is corrupt")]
    Corrupt(&'static str),
}

/// Where an event sits: its partition sequence, its hash and its stream sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadRecord {
    pub sequence: u64,
    pub hash: Digest,
    pub stream_sequence: u64,
}

const HEAD_RECORD_BYTES: usize = 8 + 32 + 8;
/// sled's page cache (its default is 1 GiB, which lets memory grow with the log).
/// The hot data are heads and recent idempotency keys; older keys are read from disk.
pub const STORE_CACHE_BYTES_MAX: u64 = 64 * 1024 * 1024;

impl HeadRecord {
    fn encode(&self) -> [u8; HEAD_RECORD_BYTES] {
        let mut out = [0u8; HEAD_RECORD_BYTES];
        out[..8].copy_from_slice(&self.sequence.to_be_bytes());
        out[8..40].copy_from_slice(&self.hash.0);
        out[40..].copy_from_slice(&self.stream_sequence.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        if bytes.len() != HEAD_RECORD_BYTES {
            return Err(StoreError::Corrupt("head"));
        }
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        Ok(Self {
            sequence: u64_at(0),
            hash: Digest(bytes[8..40].try_into().expect("32 bytes")),
            stream_sequence: u64_at(40),
        })
    }
}

#[derive(Clone)]
pub struct LedgerStore {
    db: sled::Db,
    heads: sled::Tree,
    idempotency: sled::Tree,
    quarantine: sled::Tree,
}

fn idem_key(partition: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(partition.len() + 1 + key.len());
    k.extend_from_slice(partition.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

impl LedgerStore {
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(STORE_CACHE_BYTES_MAX)
            .open()?;
        Ok(Self {
            heads: db.open_tree("log.heads")?,
            idempotency: db.open_tree("log.idempotency")?,
            quarantine: db.open_tree("log.quarantine")?,
            db,
        })
    }

    /// The sled database, for projections that live beside the log's own trees.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn head(&self, partition: &str) -> Result<Option<HeadRecord>, StoreError> {
        self.heads
            .get(partition)?
            .map(|v| HeadRecord::decode(&v))
            .transpose()
    }

    pub fn heads(&self) -> Result<Vec<(String, HeadRecord)>, StoreError> {
        self.heads
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let name =
                    String::from_utf8(k.to_vec()).map_err(|_| StoreError::Corrupt("head key"))?;
                Ok((name, HeadRecord::decode(&v)?))
            })
            .collect()
    }

    pub fn idempotent(&self, partition: &str, key: &str) -> Result<Option<HeadRecord>, StoreError> {
        self.idempotency
            .get(idem_key(partition, key))?
            .map(|v| HeadRecord::decode(&v))
            .transpose()
    }

    /// Records acknowledged (or caught-up) events: first every idempotency key (one
    /// atomic sled batch), then the new head. A crash in between leaves keys ahead of
    /// the head, which is harmless: catch-up from the older head re-records the same
    /// values. (A multi-tree sled transaction did the same but cost more than the
    /// publish itself at 1,000 events per batch.)
    pub fn record(
        &self,
        partition: &str,
        head: &HeadRecord,
        keys: &[(String, HeadRecord)],
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (key, at) in keys {
            batch.insert(idem_key(partition, key), &at.encode()[..]);
        }
        self.idempotency.apply_batch(batch)?;
        self.heads
            .insert(partition.as_bytes(), &head.encode()[..])?;
        Ok(())
    }

    /// Makes sure everything recorded so far is on disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn quarantine(&self, partition: &str, reason: &str) -> Result<(), StoreError> {
        self.quarantine.insert(partition, reason.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    pub fn quarantined(&self, partition: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .quarantine
            .get(partition)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The operator's decision after lost data: forget the remembered head and adopt
    /// what the stream holds. The idempotency index is dropped for that partition too,
    /// since it may name events that no longer exist; catch-up rebuilds it from the log.
    pub fn accept_stream_head(&self, partition: &str) -> Result<(), StoreError> {
        self.heads.remove(partition)?;
        let mut prefix = partition.as_bytes().to_vec();
        prefix.push(0);
        for key in self.idempotency.scan_prefix(&prefix).keys() {
            self.idempotency.remove(key?)?;
        }
        self.quarantine.remove(partition)?;
        self.db.flush()?;
        Ok(())
    }
}
