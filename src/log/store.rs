//! The writer's own durable memory: the last acknowledged head of every partition,
//! the permanent idempotency index, and partitions quarantined after lost
//! acknowledged data was detected. It lives in a redb file inside the store
//! directory; the directory itself is the sled database the projections use.
//!
//! Everything here can be re-derived from the log except one fact: which head the
//! server *acknowledged*. That is what lets the ledger detect a server that lost
//! acknowledged writes (see `writer::Ledger::open`).
//!
//! Why redb and not sled for this part (docs/adr/0005-log-index-in-redb.md): the
//! index gets one random key per event, forever. Measured on the 2-core machine with
//! a million keys in batches of 1,000, sled took ~15 µs a key and its RSS grew to
//! 435 MiB despite a 64 MiB cache; redb took ~3 µs a key and stayed within its cache.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::reader::EventAt;
use crate::chain::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The projections' store is unreadable or the disk failed; the operator must look.
    #[error("ledger store: {0}")]
    Sled(#[from] sled::Error),
    /// The log index is unreadable or the disk failed; the operator must look.
    #[error("ledger index: {0}")]
    Index(String),
    /// A record in the store has the wrong shape: the store is corrupt.
    #[error("ledger store record {0} is corrupt")]
    Corrupt(&'static str),
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        Self::Index(e.to_string())
    }
}

macro_rules! index_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Index(e.to_string())
            }
        }
    )*};
}
index_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Where an event sits: its partition sequence, its hash, the stream sequence of its
/// message and its index in that message (0 unless the message holds a frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadRecord {
    pub sequence: u64,
    pub hash: Digest,
    pub stream_sequence: u64,
    pub index: u32,
}

impl HeadRecord {
    pub fn at(&self) -> EventAt {
        EventAt {
            stream_sequence: self.stream_sequence,
            index: self.index,
        }
    }
}

const HEAD_RECORD_BYTES: usize = 8 + 32 + 8 + 4;
/// Records written before frames had no index: it is 0 for them.
const HEAD_RECORD_BYTES_V1: usize = 8 + 32 + 8;
/// sled's page cache (its default is 1 GiB). sled holds only projections; the log index is in redb.
pub const STORE_CACHE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// redb's page cache for the log index: hot pages are heads and recent keys; older
/// keys are read from disk on the (rare) lookups that reach them.
pub const INDEX_CACHE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Index commits are made durable (fsync) at least this often: a commit is fsynced
/// when this long has passed since the last fsync, and one left unsynced is synced this
/// long after that fsync by the ledger's syncer (`writer::Ledger::open`), appends or
/// not. In between they are atomic but may be lost in a crash, which is safe: the index
/// is re-derived from the log on catch-up, and an older remembered head is still a
/// true one.
pub const INDEX_SYNC_INTERVAL: Duration = Duration::from_millis(200);
/// File name of the log index inside the store directory.
pub const INDEX_FILE: &str = "log-index.redb";

const HEADS: TableDefinition<&str, &[u8]> = TableDefinition::new("log.heads");
const IDEMPOTENCY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("log.idempotency");
const QUARANTINE: TableDefinition<&str, &str> = TableDefinition::new("log.quarantine");
/// sled trees where earlier versions kept the same records (migrated on open).
const SLED_TREES: [&str; 3] = ["log.heads", "log.idempotency", "log.quarantine"];

impl HeadRecord {
    fn encode(&self) -> [u8; HEAD_RECORD_BYTES] {
        let mut out = [0u8; HEAD_RECORD_BYTES];
        out[..8].copy_from_slice(&self.sequence.to_be_bytes());
        out[8..40].copy_from_slice(&self.hash.0);
        out[40..48].copy_from_slice(&self.stream_sequence.to_be_bytes());
        out[48..].copy_from_slice(&self.index.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let index = match bytes.len() {
            HEAD_RECORD_BYTES => u32::from_be_bytes(bytes[48..].try_into().expect("4 bytes")),
            HEAD_RECORD_BYTES_V1 => 0,
            _ => return Err(StoreError::Corrupt("head")),
        };
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        Ok(Self {
            sequence: u64_at(0),
            hash: Digest(bytes[8..40].try_into().expect("32 bytes")),
            stream_sequence: u64_at(40),
            index,
        })
    }
}

#[derive(Clone)]
pub struct LedgerStore {
    db: sled::Db,
    /// The store directory (projections, the log index, the writers' book snapshots).
    path: std::path::PathBuf,
    index: std::sync::Arc<Index>,
}

struct Index {
    db: redb::Database,
    sync: Mutex<SyncState>,
    /// Test hook: held for writing, it holds every commit of `record` back
    /// (`LedgerStore::hold_commits`); each commit takes it for reading, uncontended.
    commits: std::sync::RwLock<()>,
    /// Test hook (`LedgerStore::fail_records_of`): the next so many commits that hold this
    /// idempotency key fail, as a full or failing disk would make them.
    failing: Mutex<Option<(String, u32)>>,
    /// Whether `failing` was ever set: unset, a commit checks no key.
    failing_set: std::sync::atomic::AtomicBool,
}

impl Index {
    /// `LedgerStore::fail_records_of`: an error for a commit holding the key while the
    /// hook asks for one. Never set, one atomic load a key.
    fn fail_for_tests(&self, key: &str) -> Result<(), StoreError> {
        if !self.failing_set.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let mut failing = self.failing.lock().expect("failing lock");
        match failing.as_mut() {
            Some((failing_key, times)) if *times > 0 && failing_key == key => {
                *times -= 1;
                Err(StoreError::Index(format!(
                    "failing the index commit of key {key:?} (test hook)"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Which index commits are durable.
struct SyncState {
    /// When the last durable (fsynced) commit was made.
    last: Instant,
    /// Commits begun, each numbered while it holds redb's write transaction (one at a
    /// time), so in the order they commit.
    begun: u64,
    /// Every commit numbered up to this one is durable: a durable commit makes every
    /// earlier one durable too.
    durable_through: u64,
}

impl Index {
    /// Numbers a commit whose write transaction is open; whether it is due to be durable.
    fn begin_commit(&self) -> (u64, bool) {
        let mut sync = self.sync.lock().expect("sync lock poisoned");
        sync.begun += 1;
        (sync.begun, sync.last.elapsed() >= INDEX_SYNC_INTERVAL)
    }

    /// Commit `number` was made durable.
    fn synced(&self, number: u64) {
        let mut sync = self.sync.lock().expect("sync lock poisoned");
        sync.last = Instant::now();
        sync.durable_through = sync.durable_through.max(number);
    }
}

fn idem_key(partition: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(partition.len() + 1 + key.len());
    k.extend_from_slice(partition.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

impl LedgerStore {
    /// Opens (or creates) the store directory `path`: sled for the projections, and
    /// the log index file inside it. Records an earlier version kept in sled trees are
    /// moved into the index once.
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(STORE_CACHE_BYTES_MAX)
            .open()?;
        let mut index = redb::Builder::new();
        index.set_cache_size(INDEX_CACHE_BYTES_MAX);
        let index = index.create(path.join(INDEX_FILE))?;
        let store = Self {
            db,
            path: path.to_path_buf(),
            index: std::sync::Arc::new(Index {
                db: index,
                sync: Mutex::new(SyncState {
                    last: Instant::now(),
                    begun: 0,
                    durable_through: 0,
                }),
                commits: std::sync::RwLock::new(()),
                failing: Mutex::new(None),
                failing_set: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        store.create_tables()?;
        store.migrate_from_sled()?;
        Ok(store)
    }

    fn create_tables(&self) -> Result<(), StoreError> {
        let tx = self.index.db.begin_write()?;
        tx.open_table(HEADS)?;
        tx.open_table(IDEMPOTENCY)?;
        tx.open_table(QUARANTINE)?;
        tx.commit()?;
        Ok(())
    }

    /// Versions before the redb index kept heads, keys and quarantines in sled trees.
    /// Copy them over in one durable commit, then drop the trees (a crash in between
    /// copies the same records again).
    fn migrate_from_sled(&self) -> Result<(), StoreError> {
        let names = self.db.tree_names();
        if !SLED_TREES
            .iter()
            .any(|t| names.iter().any(|n| n.as_ref() == t.as_bytes()))
        {
            return Ok(());
        }
        let tx = self.index.db.begin_write()?;
        {
            let mut heads = tx.open_table(HEADS)?;
            for kv in self.db.open_tree(SLED_TREES[0])?.iter() {
                let (k, v) = kv?;
                let name = std::str::from_utf8(&k).map_err(|_| StoreError::Corrupt("head key"))?;
                heads.insert(name, &HeadRecord::decode(&v)?.encode()[..])?;
            }
            let mut keys = tx.open_table(IDEMPOTENCY)?;
            for kv in self.db.open_tree(SLED_TREES[1])?.iter() {
                let (k, v) = kv?;
                keys.insert(&k[..], &HeadRecord::decode(&v)?.encode()[..])?;
            }
            let mut quarantine = tx.open_table(QUARANTINE)?;
            for kv in self.db.open_tree(SLED_TREES[2])?.iter() {
                let (k, v) = kv?;
                quarantine.insert(
                    String::from_utf8_lossy(&k).as_ref(),
                    String::from_utf8_lossy(&v).as_ref(),
                )?;
            }
        }
        tx.commit()?;
        for tree in SLED_TREES {
            self.db.drop_tree(tree)?;
        }
        self.db.flush()?;
        Ok(())
    }

    /// The store directory.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The sled database, for projections that live beside the log's own index.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn head(&self, partition: &str) -> Result<Option<HeadRecord>, StoreError> {
        let tx = self.index.db.begin_read()?;
        let table = tx.open_table(HEADS)?;
        table
            .get(partition)?
            .map(|v| HeadRecord::decode(v.value()))
            .transpose()
    }

    pub fn heads(&self) -> Result<Vec<(String, HeadRecord)>, StoreError> {
        let tx = self.index.db.begin_read()?;
        let table = tx.open_table(HEADS)?;
        table
            .iter()?
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.value().to_owned(), HeadRecord::decode(v.value())?))
            })
            .collect()
    }

    pub fn idempotent(&self, partition: &str, key: &str) -> Result<Option<HeadRecord>, StoreError> {
        Ok(self.idempotent_many(partition, [key])?.pop().flatten())
    }

    /// Test hook: holds back every index commit of this store (`record`) until the guard
    /// is dropped, as a slow disk would: the writers' callers are answered meanwhile,
    /// their keys not yet in the index.
    #[doc(hidden)]
    pub fn hold_commits(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.index
            .commits
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Test hook: the next `times` index commits (`record`) that hold idempotency key
    /// `key` fail, writing nothing, as a full or failing disk would make them.
    #[doc(hidden)]
    pub fn fail_records_of(&self, key: &str, times: u32) {
        *self.index.failing.lock().expect("failing lock") = Some((key.to_owned(), times));
        self.index
            .failing_set
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Looks up many keys in one read transaction; answers in the order asked.
    pub fn idempotent_many<'k>(
        &self,
        partition: &str,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<Vec<Option<HeadRecord>>, StoreError> {
        let tx = self.index.db.begin_read()?;
        let table = tx.open_table(IDEMPOTENCY)?;
        keys.into_iter()
            .map(|key| {
                table
                    .get(&idem_key(partition, key)[..])?
                    .map(|v| HeadRecord::decode(v.value()))
                    .transpose()
            })
            .collect()
    }

    /// Records acknowledged (or caught-up) events: every idempotency key and the new
    /// head, in one atomic commit. The commit is fsynced when INDEX_SYNC_INTERVAL has
    /// passed since the last fsync, else by a later commit or `sync`; a crash may lose the
    /// newest unsynced commits, never part of one, and catch-up re-records them from the
    /// log.
    pub fn record<K: AsRef<str>, A: std::borrow::Borrow<HeadRecord>>(
        &self,
        partition: &str,
        head: &HeadRecord,
        keys: impl IntoIterator<Item = (K, A)>,
    ) -> Result<(), StoreError> {
        let _hold = self
            .index
            .commits
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut tx = self.index.db.begin_write()?;
        let (number, durable) = self.index.begin_commit();
        if !durable {
            tx.set_durability(redb::Durability::None)?;
        }
        {
            let mut table = tx.open_table(IDEMPOTENCY)?;
            for (key, at) in keys {
                self.index.fail_for_tests(key.as_ref())?;
                table.insert(
                    &idem_key(partition, key.as_ref())[..],
                    &at.borrow().encode()[..],
                )?;
            }
            tx.open_table(HEADS)?
                .insert(partition, &head.encode()[..])?;
        }
        tx.commit()?;
        if durable {
            self.index.synced(number);
        }
        Ok(())
    }

    /// Whether an index commit may not be durable yet (a commit that failed counts too,
    /// until the next fsync).
    pub fn sync_pending(&self) -> bool {
        let sync = self.index.sync.lock().expect("sync lock poisoned");
        sync.begun > sync.durable_through
    }

    /// When the commits not yet durable are due to be synced (`INDEX_SYNC_INTERVAL`
    /// after the last fsync; zero when overdue), or None when every commit is durable.
    pub fn sync_due_in(&self) -> Option<Duration> {
        let sync = self.index.sync.lock().expect("sync lock poisoned");
        (sync.begun > sync.durable_through)
            .then(|| INDEX_SYNC_INTERVAL.saturating_sub(sync.last.elapsed()))
    }

    /// Makes every index commit made so far durable (one fsync).
    pub fn sync(&self) -> Result<(), StoreError> {
        // An empty durable commit also makes every earlier non-durable one durable.
        let tx = self.index.db.begin_write()?;
        let (number, _) = self.index.begin_commit();
        tx.commit()?;
        self.index.synced(number);
        Ok(())
    }

    /// Makes sure everything recorded so far is on disk (index and projections).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.sync()?;
        self.db.flush()?;
        Ok(())
    }

    pub fn quarantine(&self, partition: &str, reason: &str) -> Result<(), StoreError> {
        let tx = self.index.db.begin_write()?;
        tx.open_table(QUARANTINE)?.insert(partition, reason)?;
        tx.commit()?;
        Ok(())
    }

    /// Every quarantined partition with the reason (for readiness and operators).
    pub fn quarantined_all(&self) -> Result<Vec<(String, String)>, StoreError> {
        let tx = self.index.db.begin_read()?;
        let table = tx.open_table(QUARANTINE)?;
        table
            .iter()?
            .map(|entry| {
                let (k, v) = entry?;
                Ok((k.value().to_owned(), v.value().to_owned()))
            })
            .collect()
    }

    pub fn quarantined(&self, partition: &str) -> Result<Option<String>, StoreError> {
        let tx = self.index.db.begin_read()?;
        let table = tx.open_table(QUARANTINE)?;
        Ok(table.get(partition)?.map(|v| v.value().to_owned()))
    }

    /// The operator's decision after lost data: forget the remembered head and adopt
    /// what the stream holds. The idempotency index is dropped for that partition too,
    /// since it may name events that no longer exist; catch-up rebuilds it from the log.
    /// Returns why the partition was stopped, or None, changing nothing, when it is not
    /// stopped: a healthy partition's remembered head is what detects a stream restored
    /// from an older copy, and a mistyped partition must not lose it.
    pub fn accept_stream_head(&self, partition: &str) -> Result<Option<String>, StoreError> {
        let tx = self.index.db.begin_write()?;
        // Checked in the same transaction as the removal: nothing stops or resumes the
        // partition in between.
        let stopped = {
            let mut quarantine = tx.open_table(QUARANTINE)?;
            quarantine
                .remove(partition)?
                .map(|reason| reason.value().to_owned())
        };
        let Some(reason) = stopped else {
            tx.abort()?;
            return Ok(None);
        };
        {
            tx.open_table(HEADS)?.remove(partition)?;
            let mut from = partition.as_bytes().to_vec();
            from.push(0);
            let mut to = partition.as_bytes().to_vec();
            to.push(1);
            tx.open_table(IDEMPOTENCY)?
                .retain_in(&from[..]..&to[..], |_, _| false)?;
        }
        tx.commit()?;
        // The book snapshot was taken on the chain as remembered, which may be gone.
        super::snapshot::discard(&self.path, partition)
            .map_err(|e| StoreError::Index(e.to_string()))?;
        Ok(Some(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: u8) -> HeadRecord {
        HeadRecord {
            sequence: u64::from(n),
            hash: Digest([n; 32]),
            stream_sequence: 100 + u64::from(n),
            index: u32::from(n % 3),
        }
    }

    #[test]
    fn a_commit_left_unsynced_is_pending_until_a_sync_or_a_durable_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = LedgerStore::open(dir.path()).unwrap();
        store.sync().unwrap();
        assert!(!store.sync_pending());
        assert_eq!(store.sync_due_in(), None);
        // Right after a fsync, a commit is not synced: due within the interval.
        store.record("01", &at(1), [("k1", at(1))]).unwrap();
        assert!(store.sync_pending());
        let due = store.sync_due_in().expect("due");
        assert!(due <= INDEX_SYNC_INTERVAL, "{due:?}");
        store.sync().unwrap();
        assert!(!store.sync_pending());
        // A commit made once the interval has passed is synced with it.
        store.record("01", &at(2), [("k2", at(2))]).unwrap();
        assert!(store.sync_pending());
        store.index.sync.lock().unwrap().last -= INDEX_SYNC_INTERVAL;
        assert_eq!(store.sync_due_in(), Some(Duration::ZERO));
        store.record("01", &at(3), [("k3", at(3))]).unwrap();
        assert!(!store.sync_pending());
        assert_eq!(store.head("01").unwrap(), Some(at(3)));
    }

    #[test]
    fn head_records_round_trip_and_records_before_frames_read_as_index_0() {
        let record = at(5);
        assert_eq!(HeadRecord::decode(&record.encode()).unwrap(), record);
        let v1 = &record.encode()[..HEAD_RECORD_BYTES_V1];
        let old = HeadRecord::decode(v1).unwrap();
        assert_eq!((old.stream_sequence, old.index), (105, 0));
        assert!(HeadRecord::decode(&record.encode()[..47]).is_err());
    }

    #[test]
    fn records_of_the_sled_era_move_into_the_index_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("log.heads")
                .unwrap()
                .insert("79", &at(7).encode()[..])
                .unwrap();
            db.open_tree("log.idempotency")
                .unwrap()
                .insert(idem_key("79", "k-1"), &at(6).encode()[..])
                .unwrap();
            db.open_tree("log.quarantine")
                .unwrap()
                .insert("92", &b"lost"[..])
                .unwrap();
            db.flush().unwrap();
        }
        let store = LedgerStore::open(dir.path()).unwrap();
        assert_eq!(store.heads().unwrap(), vec![("79".to_string(), at(7))]);
        assert_eq!(store.idempotent("79", "k-1").unwrap(), Some(at(6)));
        assert_eq!(store.idempotent("79", "k-2").unwrap(), None);
        assert_eq!(store.quarantined("92").unwrap().as_deref(), Some("lost"));
        let names = store.db().tree_names();
        assert!(
            !names.iter().any(|n| n.as_ref() == b"log.heads"),
            "sled trees dropped after the move"
        );
        drop(store);
        // Reopened: the records stay (read from the index, not copied again).
        let store = LedgerStore::open(dir.path()).unwrap();
        assert_eq!(store.head("79").unwrap(), Some(at(7)));
    }

    #[test]
    fn accepting_the_stream_head_forgets_only_that_partitions_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = LedgerStore::open(dir.path()).unwrap();
        store
            .record("01", &at(2), [("a", at(1)), ("b", at(2))])
            .unwrap();
        store.record("011", &at(3), [("a", at(3))]).unwrap();
        // A partition not stopped keeps everything: its head still guards it.
        assert_eq!(store.accept_stream_head("011").unwrap(), None);
        assert_eq!(store.head("011").unwrap(), Some(at(3)));
        store.quarantine("01", "lost").unwrap();
        assert_eq!(
            store.accept_stream_head("01").unwrap().as_deref(),
            Some("lost")
        );
        assert_eq!(store.head("01").unwrap(), None);
        assert_eq!(store.quarantined("01").unwrap(), None);
        assert_eq!(
            store.idempotent_many("01", ["a", "b"]).unwrap(),
            vec![None, None]
        );
        // A partition whose name starts with the other's keeps its keys.
        assert_eq!(store.idempotent("011", "a").unwrap(), Some(at(3)));
        assert_eq!(store.head("011").unwrap(), Some(at(3)));
    }
}
