//! Where the audit trail's lines live: one append-only file of runs, and an index of each
//! subject's latest run in a hash table in a file of its own (`trail_heads`, ADR 0017;
//! the runs, ADR 0015).
//!
//! Why not sled: the trail gets about one line an event, and a sled record costs ~7 µs
//! whatever its size; as sled records the lines were three quarters of a rebuild's time
//! (ADR 0014). Appended to a file they cost their bytes.
//!
//! **A run** is a subject's lines from one batch, at most `TRAIL_RUN_LINES_MAX`, in chain
//! order. Each run names the subject's previous run (`prev`) and one further back
//! (`jump`, Myers' skew-binary jump pointers), so the run holding any line of a subject's
//! trail is found from its latest run in O(log runs) reads, and a page of a trail costs
//! O(log runs + page), never the trail before it.
//!
//! **Crash safety.** A batch's runs are written past the committed length before the
//! projections' journal record, which holds the new length with the position; the
//! index takes them only after that commit, in memory until a sled flush makes the
//! commit durable (`settle`), then in the table. The index file (`INDEX_FILE`) names the
//! length the table was last flushed at, and the partitions. On open the file is cut
//! back to the length sled holds, and the runs between the index file's length and it
//! are folded into the table again (checked by their checksums). A file shorter than
//! sled's length, or a run that does not check, means a machine crash lost writes: the
//! caller drops the projections and replays the log.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::{HashMap, HashMapExt as _};

use super::projection::TrailEntry;
use super::trail_codec;
use super::trail_heads::{KeyHash, Table, key_hash};

pub const LINES_FILE: &str = "trail.lines";
pub const INDEX_FILE: &str = "trail.index";
const INDEX_MAGIC: &[u8; 8] = b"ANSTRIX2";
/// Lines written since the table was last flushed, past which the end of a catch-up
/// flushes it and writes the index file again. It bounds what an open after a crash
/// folds again (at ~1 GB/s read and ~1 µs a run, about a second).
pub const INDEX_WRITE_AFTER_BYTES: u64 = 256 << 20;
/// No run: a subject's first run names this as its previous one.
const NONE: u64 = u64::MAX;
/// `len u32 | check [8] | prev u64 | jump u64 | depth u32 | jump_depth u32 | before u64 |
/// lines u32 | key_len u16`, then the key, then the lines (`trail_codec::write_run`).
const HEADER: usize = 4 + 8 + 8 + 8 + 4 + 4 + 8 + 4 + 2;
/// The longest subject key a run can name (its length is a u16).
pub const KEY_BYTES_MAX: usize = u16::MAX as usize;

#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("trail file: {0}")]
    Io(#[from] std::io::Error),
    /// sled could not make the batches durable before the table took their heads.
    #[error("flushing the projections before the trail's index: {0}")]
    Flush(#[from] sled::Error),
    /// The file does not hold what the index or sled say it holds.
    #[error("trail file: {0}")]
    Corrupt(String),
    /// Two stores on one directory would each append at their own idea of its end.
    #[error("the trail in {0} is already open in this process")]
    AlreadyOpen(PathBuf),
}

/// The directories whose trail is open in this process (another process is kept out by
/// sled's lock on the same directory).
static OPEN: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Holds a directory in `OPEN` while its store lives. The projections take it before
/// anything in the directory is read, so recovery runs once per open directory.
pub struct Claim(PathBuf);

impl Claim {
    /// Claims `dir` (created if missing) for this process's one projection store on it.
    pub fn take(dir: &Path) -> Result<Self, TrailError> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let mut open = OPEN.lock().expect("open trails lock");
        if open.contains(&dir) {
            return Err(TrailError::AlreadyOpen(dir));
        }
        open.push(dir.clone());
        Ok(Self(dir))
    }

    /// The directory claimed, canonical.
    pub fn dir(&self) -> &Path {
        &self.0
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        OPEN.lock()
            .expect("open trails lock")
            .retain(|d| *d != self.0);
    }
}

fn corrupt(what: impl Into<String>) -> TrailError {
    TrailError::Corrupt(what.into())
}

/// A subject's latest run, and what a new run needs to compute its jump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) offset: u64,
    pub(super) depth: u32,
    pub(super) jump: u64,
    pub(super) jump_depth: u32,
    /// The jump's own jump.
    pub(super) jj: u64,
    pub(super) jj_depth: u32,
    /// Lines in the subject's trail up to and including this run.
    pub(super) lines: u64,
}

/// Heads committed since the projector last made sled durable, past which it flushes
/// sled and moves them into the table (`TrailStore::settle`). They are what the heap
/// holds of the index, whatever the log's length: a map of 2^16 slots, ~4 MiB (with
/// 2^17 waiting, 2^18 slots: the projections' heap peaked ~12 MiB higher in the province
/// bench, at the same rates). A settle's sled flush writes little when the batches since
/// wrote few views, and is due every 32,768 subjects at most.
pub const UNSETTLED_HEADS_MAX: usize = 1 << 15;

/// Each subject key's latest run. A batch looks up and replaces one head for each
/// subject it names; a subject's keys in every partition are found through `suffixes`.
struct Index {
    /// The heads of batches a sled flush made durable, in a file (`trail_heads`).
    table: Table,
    /// The heads committed since, which the table may take only once sled cannot lose
    /// their batches: a head in the file naming a run past the length sled recovers
    /// would survive a crash that the run did not.
    recent: HashMap<KeyHash, Head>,
    /// What follows the first NUL of the keys (`partition NUL`), each once, in order: a
    /// province's store holds a handful.
    suffixes: Suffixes,
}

type Suffixes = BTreeSet<Box<[u8]>>;

impl Index {
    fn new(table: Table) -> Self {
        Self {
            table,
            recent: HashMap::new(),
            suffixes: BTreeSet::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Option<Head> {
        self.get_hash(key_hash(key))
    }

    fn get_hash(&self, hash: KeyHash) -> Option<Head> {
        match self.recent.get(&hash) {
            Some(h) => Some(*h),
            None => self.table.get(hash),
        }
    }

    fn add_suffix_of(&mut self, key: &[u8]) {
        if let Some(suffix) = suffix_of(key) {
            if !self.suffixes.contains(suffix) {
                self.suffixes.insert(suffix.into());
            }
        }
    }

    /// The keys starting with `prefix`, which runs through a NUL (`subject NUL`, or a
    /// whole key), and their heads, in key order: a lookup per partition it may name.
    fn with_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Head)> {
        let Some(nul) = prefix.iter().position(|&b| b == 0) else {
            return Vec::new();
        };
        let (group, rest) = prefix.split_at(nul + 1);
        let mut key = group.to_vec();
        let mut found = Vec::new();
        let suffixes = self
            .suffixes
            .range::<[u8], _>((std::ops::Bound::Included(rest), std::ops::Bound::Unbounded))
            .take_while(|s| s.starts_with(rest));
        for suffix in suffixes {
            key.truncate(group.len());
            key.extend_from_slice(suffix);
            if let Some(h) = self.get(&key) {
                found.push((key.clone(), h));
            }
        }
        found
    }
}

/// What follows a key's first NUL.
fn suffix_of(key: &[u8]) -> Option<&[u8]> {
    key.iter().position(|&b| b == 0).map(|nul| &key[nul + 1..])
}

/// A run's fixed header, read without its lines.
#[derive(Clone, Copy, Debug)]
struct RunHeader {
    offset: u64,
    /// The whole record's length in bytes.
    size: u64,
    prev: u64,
    jump: u64,
    depth: u32,
    jump_depth: u32,
    before: u64,
    lines: u32,
    key_len: u16,
}

impl RunHeader {
    fn parse(offset: u64, b: &[u8]) -> Result<Self, TrailError> {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let len = u32_at(0);
        let h = Self {
            offset,
            size: 4 + u64::from(len),
            prev: u64_at(12),
            jump: u64_at(20),
            depth: u32_at(28),
            jump_depth: u32_at(32),
            before: u64_at(36),
            lines: u32_at(44),
            key_len: u16::from_le_bytes([b[48], b[49]]),
        };
        if (h.size as usize) < HEADER + usize::from(h.key_len) || h.lines == 0 {
            return Err(corrupt(format!("run at {offset}: bad header")));
        }
        Ok(h)
    }

    fn head(&self, jj: u64, jj_depth: u32) -> Head {
        Head {
            offset: self.offset,
            depth: self.depth,
            jump: self.jump,
            jump_depth: self.jump_depth,
            jj,
            jj_depth,
            lines: self.before + u64::from(self.lines),
        }
    }
}

/// Checks a whole run record and returns its key and its lines' bytes.
fn open_record<'b>(h: &RunHeader, record: &'b [u8]) -> Result<(&'b [u8], &'b [u8]), TrailError> {
    let body = &record[12..];
    if blake3::hash(body).as_bytes()[..8] != record[4..12] {
        return Err(corrupt(format!("run at {}: checksum", h.offset)));
    }
    let key_end = HEADER + usize::from(h.key_len);
    Ok((&record[HEADER..key_end], &record[key_end..]))
}

pub struct TrailStore {
    file: File,
    /// Where the index file is written; `None` for a scratch store (never reopened).
    dir: Option<PathBuf>,
    _claim: Option<Claim>,
    _scratch: Option<tempfile::TempDir>,
    /// Each subject key's latest committed run.
    index: RwLock<Index>,
    /// The file's length that the projections' committed position covers.
    committed: AtomicU64,
    /// The length the index file on disk covers.
    indexed: AtomicU64,
}

/// Whether opening found the file as sled left it.
pub enum Opened {
    Ready(TrailStore),
    /// Writes were lost (a machine crash): the projections must be replayed; the store
    /// is empty.
    Lost(TrailStore, TrailError),
}

impl TrailStore {
    /// Opens the store in `dir`, whose runs up to `committed` bytes the projections'
    /// position covers (0 when sled holds no length).
    pub fn open(dir: &Path, committed: u64) -> Result<Opened, TrailError> {
        Self::open_claimed(Claim::take(dir)?, committed)
    }

    /// `open`, in the directory `claim` holds.
    pub fn open_claimed(claim: Claim, committed: u64) -> Result<Opened, TrailError> {
        let dir = claim.0.clone();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LINES_FILE))?;
        let mut store = Self::new(file, Some(dir), None)?;
        store._claim = Some(claim);
        match store.recover(committed) {
            Ok(()) => Ok(Opened::Ready(store)),
            Err(e @ (TrailError::Io(_) | TrailError::Flush(_) | TrailError::AlreadyOpen(_))) => {
                Err(e)
            }
            Err(lost) => {
                store.reset()?;
                Ok(Opened::Lost(store, lost))
            }
        }
    }

    /// A store in a temporary directory, gone with it: for projections in a temporary
    /// sled database (a rebuild check's scratch copy, tests).
    pub fn scratch() -> Result<Self, TrailError> {
        let dir = tempfile::tempdir()?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join(LINES_FILE))?;
        Self::new(file, None, Some(dir))
    }

    fn new(
        file: File,
        dir: Option<PathBuf>,
        scratch: Option<tempfile::TempDir>,
    ) -> Result<Self, TrailError> {
        let table_dir = match (&dir, &scratch) {
            (Some(dir), _) => dir.clone(),
            (None, Some(scratch)) => scratch.path().to_path_buf(),
            (None, None) => unreachable!("a store has a directory"),
        };
        Ok(Self {
            file,
            dir,
            _claim: None,
            _scratch: scratch,
            index: RwLock::new(Index::new(Table::open(&table_dir)?)),
            committed: AtomicU64::new(0),
            indexed: AtomicU64::new(0),
        })
    }

    /// Takes the table when the index file says it was flushed at no more than
    /// `committed`, folds the runs after that up to `committed` into it again, and cuts
    /// the file back to `committed`. The caller has made sled's state durable first, so
    /// the heads folded here may go straight into the table.
    fn recover(&self, committed: u64) -> Result<(), TrailError> {
        let len = self.file.metadata()?.len();
        if len < committed {
            return Err(corrupt(format!(
                "{len} bytes where the projections' position covers {committed}"
            )));
        }
        let mut guard = self.index.write().expect("trail index lock");
        let index = &mut *guard;
        let indexed = match self.read_index_file()? {
            Some((suffixes, indexed)) if indexed <= committed && !index.table.made() => {
                index.suffixes = suffixes;
                indexed
            }
            _ => {
                // A table of runs sled no longer covers (sled lost its last flush, or
                // the projections were cleared before the file was): emptied, or a
                // later open would take it once the file grew past its length again. No
                // table (lost, or not one): the index file speaks of another.
                self.remove_index_file()?;
                index.table.clear()?;
                index.suffixes.clear();
                0
            }
        };
        index.recent.clear();
        // Sequential reads of what follows the index file, one run at a time (through a
        // second handle: every other access reads and writes at explicit offsets).
        let mut tail = self.file.try_clone()?;
        std::io::Seek::seek(&mut tail, std::io::SeekFrom::Start(indexed))?;
        let mut reader = std::io::BufReader::with_capacity(1 << 20, tail.take(committed - indexed));
        let mut at = indexed;
        let mut record = Vec::new();
        while at < committed {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len)?;
            let size = 4 + u32::from_le_bytes(len) as usize;
            if size < HEADER || at + size as u64 > committed {
                return Err(corrupt(format!("run at {at}: bad length")));
            }
            record.clear();
            record.extend_from_slice(&len);
            record.resize(size, 0);
            reader.read_exact(&mut record[4..])?;
            let h = RunHeader::parse(at, &record)?;
            let (key, _) = open_record(&h, &record)?;
            let hash = key_hash(key);
            let previous = index.get_hash(hash).map(|p| p.offset);
            // The table may hold a later run of the subject: one settled after the table
            // was last flushed, whose page the kernel wrote back before the crash.
            let ahead = previous.is_some_and(|p| p != NONE && p >= at);
            if !ahead && h.prev != previous.unwrap_or(NONE) {
                return Err(corrupt(format!(
                    "run at {at}: not after its subject's last"
                )));
            }
            index.table.insert(hash, &self.head_of(&h)?)?;
            index.add_suffix_of(key);
            at += size as u64;
        }
        drop(reader);
        self.file.set_len(committed)?;
        drop(guard);
        self.committed.store(committed, Ordering::SeqCst);
        self.indexed.store(indexed, Ordering::SeqCst);
        Ok(())
    }

    /// The head a run makes of its subject's trail, as `Appender::append` made it.
    fn head_of(&self, h: &RunHeader) -> Result<Head, TrailError> {
        let (jj, jj_depth) = if h.jump == h.offset {
            (h.offset, h.depth)
        } else {
            let j = self.header(h.jump)?;
            (j.jump, j.jump_depth)
        };
        Ok(h.head(jj, jj_depth))
    }

    /// Once the projections applied again the journal record of a batch whose commit
    /// stopped before `publish` (the process went on): the runs that commit wrote past
    /// the committed length, up to `committed` (the record's length), enter the index as
    /// `publish` would have put them, each checked first, and readers see them. Their
    /// heads wait in memory for a sled flush, as a published batch's do (`settle`).
    pub fn adopt(&self, committed: u64) -> Result<(), TrailError> {
        let from = self.committed();
        if committed < from {
            return Err(corrupt(format!(
                "the projections cover {committed} bytes, fewer than the {from} published"
            )));
        }
        let mut guard = self.index.write().expect("trail index lock");
        let index = &mut *guard;
        // Checked whole before any head is taken: a run that does not check leaves the
        // index as it was (the caller then drops the projections).
        let mut heads: Vec<(KeyHash, Head, Box<[u8]>)> = Vec::new();
        let mut record = Vec::new();
        let read_at = |buf: &mut [u8], at: u64| {
            self.file
                .read_exact_at(buf, at)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        corrupt(format!("the file ends inside the run at {at}"))
                    }
                    _ => e.into(),
                })
        };
        let mut at = from;
        while at < committed {
            let mut len = [0u8; 4];
            read_at(&mut len, at)?;
            let size = 4 + u32::from_le_bytes(len) as usize;
            if size < HEADER || at + size as u64 > committed {
                return Err(corrupt(format!("run at {at}: bad length")));
            }
            record.resize(size, 0);
            read_at(&mut record, at)?;
            let h = RunHeader::parse(at, &record)?;
            let (key, _) = open_record(&h, &record)?;
            let hash = key_hash(key);
            let previous = heads
                .iter()
                .rev()
                .find(|(k, _, _)| *k == hash)
                .map(|(_, head, _)| head.offset)
                .or_else(|| index.get_hash(hash).map(|p| p.offset));
            if h.prev != previous.unwrap_or(NONE) {
                return Err(corrupt(format!(
                    "run at {at}: not after its subject's last"
                )));
            }
            heads.push((hash, self.head_of(&h)?, key.into()));
            at += size as u64;
        }
        for (hash, head, key) in heads {
            index.recent.insert(hash, head);
            index.add_suffix_of(&key);
        }
        drop(guard);
        self.committed.store(committed, Ordering::SeqCst);
        Ok(())
    }

    /// Empties the store: no index file, no runs.
    pub fn reset(&self) -> Result<(), TrailError> {
        self.remove_index_file()?;
        self.file.set_len(0)?;
        let mut index = self.index.write().expect("trail index lock");
        index.table.clear()?;
        index.recent.clear();
        index.suffixes.clear();
        drop(index);
        self.committed.store(0, Ordering::SeqCst);
        self.indexed.store(0, Ordering::SeqCst);
        Ok(())
    }

    fn remove_index_file(&self) -> Result<(), TrailError> {
        if let Some(dir) = &self.dir {
            match std::fs::remove_file(dir.join(INDEX_FILE)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// The file length the committed projections cover.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    fn header(&self, offset: u64) -> Result<RunHeader, TrailError> {
        let mut b = [0u8; HEADER];
        self.file.read_exact_at(&mut b, offset)?;
        RunHeader::parse(offset, &b)
    }

    /// A whole run, checked: its lines.
    fn read_run(&self, h: &RunHeader) -> Result<Vec<TrailEntry>, TrailError> {
        // A header is not checksummed (its run is) and may be any bytes a damaged `prev`
        // or `jump` points at: its size must not size an allocation past what the file
        // holds, as recovery already checks.
        if h.offset
            .checked_add(h.size)
            .is_none_or(|end| end > self.committed())
        {
            return Err(corrupt(format!(
                "a run at {} of {} bytes, past the trail's committed {}",
                h.offset,
                h.size,
                self.committed()
            )));
        }
        let mut record = vec![0u8; h.size as usize];
        self.file.read_exact_at(&mut record, h.offset)?;
        let (_, lines) = open_record(h, &record)?;
        trail_codec::decode_run(lines).map_err(|e| corrupt(format!("run at {}: {e}", h.offset)))
    }

    /// Starts the runs of a batch, written after the committed length: `bytes` of lines
    /// in `runs` runs, to size its buffer once.
    pub fn begin(&self, runs: usize, bytes: usize) -> Appender {
        Appender {
            base: self.committed(),
            buf: Vec::with_capacity(bytes + runs * (HEADER + 64)),
            heads: HashMap::with_capacity(runs),
            new_keys: Vec::new(),
        }
    }

    /// Writes a batch's runs after the committed length (over whatever a batch that
    /// failed to commit left there).
    pub fn write(&self, batch: &Appender) -> Result<(), TrailError> {
        if !batch.buf.is_empty() {
            self.file.write_all_at(&batch.buf, batch.base)?;
        }
        Ok(())
    }

    /// After the projections' commit recorded `batch.end()`: readers see its runs.
    pub fn publish(&self, batch: Appender) {
        let mut index = self.index.write().expect("trail index lock");
        let end = batch.end();
        index.recent.extend(batch.heads);
        for key in &batch.new_keys {
            index.add_suffix_of(key);
        }
        self.committed.store(end, Ordering::SeqCst);
    }

    /// Heads committed but not yet in the table.
    pub fn unsettled(&self) -> usize {
        self.index.read().expect("trail index lock").recent.len()
    }

    /// Moves the heads committed so far into the table. Only once a sled flush made
    /// their batches durable: the caller's.
    pub fn settle(&self) -> Result<(), TrailError> {
        let mut guard = self.index.write().expect("trail index lock");
        let index = &mut *guard;
        for (hash, head) in &index.recent {
            index.table.insert(*hash, head)?;
        }
        index.recent.clear();
        Ok(())
    }

    /// Bytes of the table's file.
    pub fn table_bytes(&self) -> u64 {
        self.index
            .read()
            .expect("trail index lock")
            .table
            .file_bytes()
    }

    /// The subject keys starting with `prefix` and their latest runs, in key order. A
    /// prefix through a NUL costs a lookup per partition; one without, a read of the
    /// whole file (`keys`).
    fn heads_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Head)>, TrailError> {
        if prefix.contains(&0) {
            return Ok(self
                .index
                .read()
                .expect("trail index lock")
                .with_prefix(prefix));
        }
        let index = self.index.read().expect("trail index lock");
        Ok(self
            .keys()?
            .into_iter()
            .filter(|k| k.starts_with(prefix))
            .filter_map(|k| index.get(&k).map(|h| (k, h)))
            .collect())
    }

    /// How many lines the trails of the keys starting with `prefix` hold, by key.
    pub fn lengths(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, u64)>, TrailError> {
        Ok(self
            .heads_with_prefix(prefix)?
            .into_iter()
            .map(|(k, h)| (k, h.lines))
            .collect())
    }

    /// The run of `head`'s trail holding line `line` (from 0): Myers' search, O(log runs).
    fn find(&self, head: &Head, line: u64) -> Result<RunHeader, TrailError> {
        let mut at = self.header(head.offset)?;
        while at.before > line {
            let jump = self.header(at.jump)?;
            at = if jump.before > line && jump.offset != at.offset {
                jump
            } else if at.prev == NONE {
                return Err(corrupt(format!(
                    "run at {}: line {line} not found",
                    at.offset
                )));
            } else {
                self.header(at.prev)?
            };
        }
        Ok(at)
    }

    /// The runs of a key's trail holding lines `from..to`, oldest first.
    fn runs_between(&self, key: &[u8], from: u64, to: u64) -> Result<Vec<RunHeader>, TrailError> {
        let Some(head) = self.index.read().expect("trail index lock").get(key) else {
            return Ok(Vec::new());
        };
        let to = to.min(head.lines);
        if from >= to {
            return Ok(Vec::new());
        }
        let mut at = self.find(&head, to - 1)?;
        let mut runs = vec![at];
        while at.before > from {
            if at.prev == NONE {
                return Err(corrupt(format!("run at {}: trail cut short", at.offset)));
            }
            at = self.header(at.prev)?;
            runs.push(at);
        }
        runs.reverse();
        Ok(runs)
    }

    /// Lines `from..from + take` of a key's trail.
    pub fn page(&self, key: &[u8], from: u64, take: usize) -> Result<Vec<TrailEntry>, TrailError> {
        let mut page = Vec::with_capacity(take);
        for h in self.runs_between(key, from, from + take as u64)? {
            let skip = from.saturating_sub(h.before) as usize;
            for line in self.read_run(&h)?.into_iter().skip(skip) {
                if page.len() == take {
                    return Ok(page);
                }
                page.push(line);
            }
        }
        Ok(page)
    }

    /// Every run of the trails of the keys starting with `prefix`, in key order, oldest
    /// first within a key: one run read at a time, after one walk back over the headers
    /// of each key (8 bytes held a run).
    pub fn runs<'s>(
        &'s self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<Vec<TrailEntry>, TrailError>> + use<'s> {
        let (heads, failed) = match self.heads_with_prefix(prefix) {
            Ok(heads) => (heads, None),
            Err(e) => (Vec::new(), Some(Err(e))),
        };
        failed.into_iter().chain(
            heads
                .into_iter()
                .flat_map(
                    move |(key, head)| match self.runs_between(&key, 0, head.lines) {
                        Ok(runs) => runs.into_iter().map(Ok).collect::<Vec<_>>(),
                        Err(e) => vec![Err(e)],
                    },
                )
                .map(move |h| h.and_then(|h| self.read_run(&h))),
        )
    }

    /// Every subject key, in order: for comparing two stores line by line, whatever
    /// their runs. Read from the runs' headers, the whole committed file: the table
    /// holds no keys.
    pub fn keys(&self) -> Result<Vec<Vec<u8>>, TrailError> {
        let committed = self.committed();
        let mut file = self.file.try_clone()?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file.take(committed));
        let mut keys = BTreeSet::new();
        let mut header = [0u8; HEADER];
        let mut at = 0;
        let mut key = Vec::new();
        while at < committed {
            reader.read_exact(&mut header)?;
            let h = RunHeader::parse(at, &header)?;
            key.resize(usize::from(h.key_len), 0);
            reader.read_exact(&mut key)?;
            let rest = h.size as usize - HEADER - key.len();
            reader.seek_relative(rest as i64)?;
            if !keys.contains(&key) {
                keys.insert(key.clone());
            }
            at += h.size;
        }
        Ok(keys.into_iter().collect())
    }

    /// Flushes the table and writes the index file when `INDEX_WRITE_AFTER_BYTES` of
    /// runs (any, with `always`) were committed since it was last written. First
    /// `flush_sled` makes every commit durable, so every head may go into the table;
    /// then the file's runs and the table are made durable, and the index file naming
    /// the length they cover is written to a new file renamed over the old. No batch may
    /// be published meanwhile (its heads would be settled unflushed): the projector calls
    /// this under its catch-up lock, or when it is dropped.
    pub fn write_index(
        &self,
        always: bool,
        flush_sled: impl FnOnce() -> Result<(), TrailError>,
    ) -> Result<(), TrailError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let indexed = self.indexed.load(Ordering::SeqCst);
        let due = self.committed() - indexed;
        if due == 0 || (!always && due < INDEX_WRITE_AFTER_BYTES) {
            return Ok(());
        }
        flush_sled()?;
        self.settle()?;
        self.file.sync_data()?;
        let (committed, bytes) = {
            let index = self.index.read().expect("trail index lock");
            index.table.flush()?;
            let committed = self.committed();
            let mut out = Vec::with_capacity(64);
            out.extend_from_slice(INDEX_MAGIC);
            out.extend_from_slice(&committed.to_le_bytes());
            out.extend_from_slice(&(index.suffixes.len() as u64).to_le_bytes());
            for suffix in &index.suffixes {
                out.extend_from_slice(&(suffix.len() as u16).to_le_bytes());
                out.extend_from_slice(suffix);
            }
            let check = *blake3::hash(&out).as_bytes();
            out.extend_from_slice(&check);
            (committed, out)
        };
        let tmp = dir.join(format!("{INDEX_FILE}.new"));
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(INDEX_FILE))?;
        File::open(dir)?.sync_all()?;
        self.indexed.store(committed, Ordering::SeqCst);
        Ok(())
    }

    /// The partitions of the index file and the length its table covers; `None` when
    /// there is none or it does not check (then the whole file is folded again).
    fn read_index_file(&self) -> Result<Option<(Suffixes, u64)>, TrailError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let bytes = match std::fs::read(dir.join(INDEX_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(parse_index(&bytes))
    }
}

fn parse_index(bytes: &[u8]) -> Option<(Suffixes, u64)> {
    let (body, check) = bytes.split_at(bytes.len().checked_sub(32)?);
    if blake3::hash(body).as_bytes() != check || !body.starts_with(INDEX_MAGIC) {
        return None;
    }
    let mut rd = &body[8..];
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, rest) = rd.split_at_checked(n)?;
        rd = rest;
        Some(head)
    };
    let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let covered = u64_of(take(8)?);
    let count = u64_of(take(8)?);
    let mut suffixes = BTreeSet::new();
    for _ in 0..count {
        let len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
        suffixes.insert(take(len)?.into());
    }
    Some((suffixes, covered))
}

/// A batch's runs, in memory until `TrailStore::write`, in the index only after
/// `TrailStore::publish`.
pub struct Appender {
    /// Where the batch's first run goes: the committed length.
    base: u64,
    buf: Vec<u8>,
    /// The subjects this batch gave a run, and their latest one.
    heads: HashMap<KeyHash, Head>,
    /// The keys this batch gave their first run (their partitions go into the index).
    new_keys: Vec<Box<[u8]>>,
}

impl Appender {
    /// The file's length once the batch is written.
    pub fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    fn header(&self, store: &TrailStore, offset: u64) -> Result<RunHeader, TrailError> {
        if offset >= self.base {
            let at = (offset - self.base) as usize;
            let b = self
                .buf
                .get(at..at + HEADER)
                .ok_or_else(|| corrupt(format!("run at {offset}: past the batch")))?;
            RunHeader::parse(offset, b)
        } else {
            store.header(offset)
        }
    }

    /// Appends a run of `lines` (encoded by `trail_codec::encode_line`) to `key`'s trail.
    pub fn append<'l>(
        &mut self,
        store: &TrailStore,
        key: &[u8],
        lines: impl ExactSizeIterator<Item = &'l [u8]>,
    ) -> Result<(), TrailError> {
        if key.len() > KEY_BYTES_MAX {
            return Err(corrupt(format!("subject key of {} bytes", key.len())));
        }
        let n = lines.len() as u32;
        let offset = self.end();
        let hash = key_hash(key);
        let previous = match self.heads.get(&hash) {
            Some(h) => Some(*h),
            None => store.index.read().expect("trail index lock").get_hash(hash),
        };
        let head = match previous {
            None => Head {
                offset,
                depth: 0,
                jump: offset,
                jump_depth: 0,
                jj: offset,
                jj_depth: 0,
                lines: u64::from(n),
            },
            Some(p) => {
                // Myers: jump two hops back when the two previous hops were equal, else
                // one: every run is O(log depth) jumps from any other.
                let (jump, jump_depth, jj, jj_depth) =
                    if p.depth - p.jump_depth == p.jump_depth - p.jj_depth {
                        // A subject's first run (depth 0) jumps to itself, so its header
                        // need not be read: nearly every two-hop jump of a shallow trail (a
                        // household's few runs) lands there (ADR 0015).
                        let (far_jump, far_jump_depth) = if p.jj_depth == 0 {
                            (p.jj, 0)
                        } else {
                            let far = self.header(store, p.jj)?;
                            (far.jump, far.jump_depth)
                        };
                        (p.jj, p.jj_depth, far_jump, far_jump_depth)
                    } else {
                        (p.offset, p.depth, p.jump, p.jump_depth)
                    };
                Head {
                    offset,
                    depth: p.depth + 1,
                    jump,
                    jump_depth,
                    jj,
                    jj_depth,
                    lines: p.lines + u64::from(n),
                }
            }
        };
        let before = head.lines - u64::from(n);
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0u8; 12]); // length and checksum, set below
        self.buf
            .extend_from_slice(&previous.map_or(NONE, |p| p.offset).to_le_bytes());
        self.buf.extend_from_slice(&head.jump.to_le_bytes());
        self.buf.extend_from_slice(&head.depth.to_le_bytes());
        self.buf.extend_from_slice(&head.jump_depth.to_le_bytes());
        self.buf.extend_from_slice(&before.to_le_bytes());
        self.buf.extend_from_slice(&n.to_le_bytes());
        self.buf
            .extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(key);
        trail_codec::write_run(&mut self.buf, lines);
        let len = (self.buf.len() - start - 4) as u32;
        let check = blake3::hash(&self.buf[start + 12..]);
        self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.buf[start + 4..start + 12].copy_from_slice(&check.as_bytes()[..8]);
        if previous.is_none() {
            self.new_keys.push(key.into());
        }
        self.heads.insert(hash, head);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Digest;

    fn line(sequence: u64) -> Vec<u8> {
        trail_codec::encode_line(&trail_codec::Line {
            partition: "01",
            sequence,
            stream_sequence: sequence,
            hash: &Digest([1; 32]),
            recorded_at_unix_ms: 0,
            actor: "a",
            role: "r",
            event_type: "note",
            detail: "",
        })
    }

    /// A subject's keys in every partition and a whole key come back in key order,
    /// whatever order they were inserted in (some settled in the table, some recent),
    /// and a replaced head is one key.
    #[test]
    fn the_index_finds_keys_by_prefix_in_key_order() {
        let head = |lines| Head {
            offset: 0,
            depth: 0,
            jump: 0,
            jump_depth: 0,
            jj: 0,
            jj_depth: 0,
            lines,
        };
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::new(Table::open(dir.path()).unwrap());
        for (i, (key, lines)) in [
            (&b"household:2\x0079\x00"[..], 1),
            (b"household:1\x0079\x00", 2),
            (b"household:1\x0001\x00", 3),
            (b"household:10\x0001\x00", 4),
            (b"household:1\x0092\x00", 5),
            (b"household:1\x0001\x00", 6),
            (b"k", 7),
        ]
        .into_iter()
        .enumerate()
        {
            if i % 2 == 0 {
                index.table.insert(key_hash(key), &head(lines)).unwrap();
            } else {
                index.recent.insert(key_hash(key), head(lines));
            }
            index.add_suffix_of(key);
        }
        let found = |prefix: &[u8]| -> Vec<(Vec<u8>, u64)> {
            index
                .with_prefix(prefix)
                .into_iter()
                .map(|(k, h)| (k, h.lines))
                .collect()
        };
        assert_eq!(
            found(b"household:1\x00"),
            vec![
                (b"household:1\x0001\x00".to_vec(), 6),
                (b"household:1\x0079\x00".to_vec(), 2),
                (b"household:1\x0092\x00".to_vec(), 5),
            ]
        );
        assert_eq!(
            found(b"household:1\x0079\x00"),
            vec![(b"household:1\x0079\x00".to_vec(), 2)]
        );
        assert_eq!(found(b"household:3\x00"), vec![]);
    }

    fn new_store(dir: &Path) -> TrailStore {
        let Opened::Ready(store) = TrailStore::open(dir, 0).unwrap() else {
            panic!("a new store is ready");
        };
        store
    }

    /// Each run's jump lands on the run at the depth Myers' rule gives, computed here from
    /// depths alone: whether its two-hop target was the subject's first run (not read)
    /// or a later one (read), within the batch or committed before it.
    #[test]
    fn every_jump_lands_where_the_rule_says() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path());
        let mut sequence = 0u64;
        for batch in 0..100 {
            let mut a = store.begin(4, 1_000);
            // One run a batch, and now and then a second one within the batch.
            for _ in 0..1 + batch % 2 {
                sequence += 1;
                a.append(&store, b"k", [line(sequence).as_slice()].into_iter())
                    .unwrap();
            }
            store.write(&a).unwrap();
            store.publish(a);
        }
        // J(0) = 0; after a run at depth p, J(p + 1) = J(J(p)) when the two hops before
        // are equal, else p.
        let mut rule = vec![0u32];
        for p in 0..sequence as usize {
            let (j, jj) = (rule[p] as usize, rule[rule[p] as usize] as usize);
            rule.push(if p - j == j - jj { jj as u32 } else { p as u32 });
        }
        let mut at = store.index.read().unwrap().get(b"k").unwrap().offset;
        let mut runs = 0;
        while at != NONE {
            let h = store.header(at).unwrap();
            let target = store.header(h.jump).unwrap();
            assert_eq!(
                target.depth, rule[h.depth as usize],
                "run at depth {}",
                h.depth
            );
            assert_eq!(h.jump_depth, target.depth);
            runs += 1;
            at = h.prev;
        }
        assert_eq!(runs, sequence);
    }

    /// A run header is not checksummed: one whose size reaches past the committed trail
    /// (a damaged `prev` or `jump` may point anywhere) is refused before it sizes a
    /// buffer.
    #[test]
    fn a_run_header_sized_past_the_trail_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path());
        let mut a = store.begin(1, 1_000);
        a.append(&store, b"k", [line(1).as_slice()].into_iter())
            .unwrap();
        store.write(&a).unwrap();
        store.publish(a);
        let at = store.index.read().unwrap().get(b"k").unwrap().offset;
        let header = store.header(at).unwrap();
        assert_eq!(store.read_run(&header).unwrap().len(), 1);
        for size in [4 + u64::from(u32::MAX), store.committed() - at + 1] {
            match store.read_run(&RunHeader { size, ..header }) {
                Err(TrailError::Corrupt(what)) => {
                    assert!(what.contains("past the trail"), "{what}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// Runs of 1 to 3 lines, appended in batches of several runs, then every page read
    /// back; the index written, the file reopened with it (and a table holding runs past
    /// it) and without it.
    #[test]
    fn every_page_of_a_long_trail_reads_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path());
        let mut sequence = 0u64;
        let mut early = (0, 0); // (committed length, lines of "k") after batch 10
        for batch in 0..60 {
            let mut a = store.begin(10, 2_000);
            for run in 0..5 {
                let n = 1 + (batch + run) % 3;
                let lines: Vec<Vec<u8>> = (0..n)
                    .map(|_| {
                        sequence += 1;
                        line(sequence)
                    })
                    .collect();
                a.append(&store, b"k", lines.iter().map(Vec::as_slice))
                    .unwrap();
                a.append(&store, b"other", [line(0).as_slice()].into_iter())
                    .unwrap();
            }
            store.write(&a).unwrap();
            store.publish(a);
            if batch == 30 {
                store.write_index(true, || Ok(())).unwrap();
            }
            if batch == 45 {
                // As a sled flush lets the projector do: the table now holds runs past
                // the length the index file names, which the open below folds again.
                store.settle().unwrap();
            }
            if batch == 10 {
                early = (store.committed(), sequence);
            }
        }
        let check = |store: &TrailStore| {
            assert_eq!(
                store.lengths(b"k").unwrap(),
                vec![(b"k".to_vec(), sequence)]
            );
            assert_eq!(
                store.keys().unwrap(),
                vec![b"k".to_vec(), b"other".to_vec()]
            );
            for from in [0, 1, 2, 5, 100, 333, sequence - 1, sequence] {
                for take in [1, 7, 64] {
                    let page = store.page(b"k", from, take).unwrap();
                    let want: Vec<u64> = (from + 1..=(from + take as u64).min(sequence)).collect();
                    let got: Vec<u64> = page.iter().map(|l| l.sequence).collect();
                    assert_eq!(got, want, "from {from} take {take}");
                }
            }
            let all: Vec<u64> = store
                .runs(b"k")
                .flat_map(|r| r.unwrap())
                .map(|l| l.sequence)
                .collect();
            assert_eq!(all, (1..=sequence).collect::<Vec<_>>());
        };
        check(&store);
        let committed = store.committed();
        // Garbage past the committed length (a batch that never committed) is cut off.
        store.file.write_all_at(&[7u8; 100], committed).unwrap();
        drop(store);
        // The index file covers half: the rest is folded again.
        let Opened::Ready(store) = TrailStore::open(dir.path(), committed).unwrap() else {
            panic!("the file holds what sled says");
        };
        assert_eq!(store.file.metadata().unwrap().len(), committed);
        check(&store);
        drop(store);
        std::fs::remove_file(dir.path().join(INDEX_FILE)).unwrap();
        let Opened::Ready(store) = TrailStore::open(dir.path(), committed).unwrap() else {
            panic!("without its index the file is folded whole");
        };
        check(&store);
        drop(store);
        // Sled lost its last flushes: its length is below the index file's, which is
        // removed, and the runs up to sled's length are folded again.
        let Opened::Ready(store) = TrailStore::open(dir.path(), committed).unwrap() else {
            panic!("the file holds what sled says");
        };
        store.write_index(true, || Ok(())).unwrap();
        drop(store);
        let Opened::Ready(store) = TrailStore::open(dir.path(), early.0).unwrap() else {
            panic!("a run's end");
        };
        assert!(!dir.path().join(INDEX_FILE).exists());
        assert_eq!(store.lengths(b"k").unwrap(), vec![(b"k".to_vec(), early.1)]);
        let last = store.page(b"k", early.1 - 1, 5).unwrap();
        assert_eq!(
            last.iter().map(|l| l.sequence).collect::<Vec<_>>(),
            vec![early.1]
        );
        drop(store);
        // Sled says more than the file holds: writes were lost.
        let Opened::Lost(store, _) = TrailStore::open(dir.path(), early.0 + 10).unwrap() else {
            panic!("a file shorter than sled's length lost writes");
        };
        assert_eq!(store.committed(), 0);
        // One store a directory in a process: a second would append at its own idea of
        // the end.
        assert!(matches!(
            TrailStore::open(dir.path(), 0),
            Err(TrailError::AlreadyOpen(_))
        ));
        drop(store);
        assert!(matches!(
            TrailStore::open(dir.path(), 0).unwrap(),
            Opened::Ready(_)
        ));
    }
}
