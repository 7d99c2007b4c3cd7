//! Where the audit trail's lines live: one append-only file of runs, and an index of each
//! subject's latest run held in memory, written whole to a file of its own now and then
//! (ADR 0015).
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
//! index in memory takes them only after that commit. On open the file is cut back to the
//! length sled holds, and the runs between the index file's length and it are folded into
//! the index again (checked by their checksums). A file shorter than sled's length, or a
//! run that does not check, means a machine crash lost writes: the caller drops the
//! projections and replays the log.

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

pub const LINES_FILE: &str = "trail.lines";
pub const INDEX_FILE: &str = "trail.index";
const INDEX_MAGIC: &[u8; 8] = b"ANSTRIX1";
/// Lines written since the index file was last written, past which the end of a
/// catch-up writes it again. It bounds what an open after a crash folds again (at
/// ~1 GB/s read and ~1 µs a run, about a second), while writing the index (~50 B a
/// subject) at most once per this much of trail.
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
struct Head {
    offset: u64,
    depth: u32,
    jump: u64,
    jump_depth: u32,
    /// The jump's own jump.
    jj: u64,
    jj_depth: u32,
    /// Lines in the subject's trail up to and including this run.
    lines: u64,
}

/// Each subject key's latest run, in a hash map: a batch looks up and replaces one head
/// for each subject it names (an ordered map's comparisons were a twelfth of the commit
/// thread). A subject's keys in every partition are found through `suffixes`.
#[derive(Default)]
struct Index {
    heads: HashMap<Box<[u8]>, Head>,
    /// What follows the first NUL of the keys (`partition NUL`), each once, in order: a
    /// province's store holds a handful.
    suffixes: BTreeSet<Box<[u8]>>,
}

impl Index {
    fn get(&self, key: &[u8]) -> Option<&Head> {
        self.heads.get(key)
    }

    fn insert(&mut self, key: Vec<u8>, head: Head) {
        match self.heads.entry(key.into_boxed_slice()) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                *e.get_mut() = head;
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                let key = e.key();
                if let Some(nul) = key.iter().position(|&b| b == 0) {
                    let suffix = &key[nul + 1..];
                    if !self.suffixes.contains(suffix) {
                        self.suffixes.insert(suffix.into());
                    }
                }
                e.insert(head);
            }
        }
    }

    fn len(&self) -> usize {
        self.heads.len()
    }

    /// The keys starting with `prefix` and their heads, in key order. A prefix through
    /// a NUL (`subject NUL`, or a whole key) costs a lookup per partition it may name; one
    /// without (every key), a scan.
    fn with_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Head)> {
        if let Some(nul) = prefix.iter().position(|&b| b == 0) {
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
                if let Some(h) = self.heads.get(key.as_slice()) {
                    found.push((key.clone(), *h));
                }
            }
            return found;
        }
        let mut found: Vec<(Vec<u8>, Head)> = self
            .heads
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, h)| (k.to_vec(), *h))
            .collect();
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        found
    }
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
        let mut store = Self::new(file, Some(dir), None);
        store._claim = Some(claim);
        match store.recover(committed) {
            Ok(()) => Ok(Opened::Ready(store)),
            Err(e @ (TrailError::Io(_) | TrailError::AlreadyOpen(_))) => Err(e),
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
        Ok(Self::new(file, None, Some(dir)))
    }

    fn new(file: File, dir: Option<PathBuf>, scratch: Option<tempfile::TempDir>) -> Self {
        Self {
            file,
            dir,
            _claim: None,
            _scratch: scratch,
            index: RwLock::new(Index::default()),
            committed: AtomicU64::new(0),
            indexed: AtomicU64::new(0),
        }
    }

    /// Loads the index file when it covers no more than `committed`, folds the runs
    /// after it up to `committed` in again, and cuts the file back to `committed`.
    fn recover(&self, committed: u64) -> Result<(), TrailError> {
        let len = self.file.metadata()?.len();
        if len < committed {
            return Err(corrupt(format!(
                "{len} bytes where the projections' position covers {committed}"
            )));
        }
        let (mut index, indexed) = match self.read_index_file()? {
            Some((index, indexed)) if indexed <= committed => (index, indexed),
            _ => {
                // An index of runs sled no longer covers (sled lost its last flush, or
                // the projections were cleared before the file was): removed, or a
                // later open would take it once the file grew past its length again.
                self.remove_index_file()?;
                (Index::default(), 0)
            }
        };
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
            let previous = index.get(key).map(|p: &Head| p.offset);
            if h.prev != previous.unwrap_or(NONE) {
                return Err(corrupt(format!(
                    "run at {at}: not after its subject's last"
                )));
            }
            let (jj, jj_depth) = if h.jump == h.offset {
                (h.offset, h.depth)
            } else {
                let j = self.header(h.jump)?;
                (j.jump, j.jump_depth)
            };
            index.insert(key.to_vec(), h.head(jj, jj_depth));
            at += size as u64;
        }
        drop(reader);
        self.file.set_len(committed)?;
        *self.index.write().expect("trail index lock") = index;
        self.committed.store(committed, Ordering::SeqCst);
        self.indexed.store(indexed, Ordering::SeqCst);
        Ok(())
    }

    /// Empties the store: no index file, no runs.
    pub fn reset(&self) -> Result<(), TrailError> {
        self.remove_index_file()?;
        self.file.set_len(0)?;
        *self.index.write().expect("trail index lock") = Index::default();
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
        for (key, head) in batch.heads {
            index.insert(key, head);
        }
        self.committed.store(end, Ordering::SeqCst);
    }

    /// The subject keys starting with `prefix` and their latest runs, in key order.
    fn heads_with_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Head)> {
        self.index
            .read()
            .expect("trail index lock")
            .with_prefix(prefix)
    }

    /// How many lines the trails of the keys starting with `prefix` hold, by key.
    pub fn lengths(&self, prefix: &[u8]) -> Vec<(Vec<u8>, u64)> {
        self.heads_with_prefix(prefix)
            .into_iter()
            .map(|(k, h)| (k, h.lines))
            .collect()
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
        let Some(head) = self
            .index
            .read()
            .expect("trail index lock")
            .get(key)
            .copied()
        else {
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
        self.heads_with_prefix(prefix)
            .into_iter()
            .flat_map(
                move |(key, head)| match self.runs_between(&key, 0, head.lines) {
                    Ok(runs) => runs.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                },
            )
            .map(move |h| h.and_then(|h| self.read_run(&h)))
    }

    /// Every subject key, in order, with its lines: for comparing two stores line by
    /// line, whatever their runs.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.heads_with_prefix(b"")
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    /// Writes the index file when `INDEX_WRITE_AFTER_BYTES` of runs (any, with
    /// `always`) were committed since it was last written: the file's runs it covers are
    /// made durable first, then the index is written to a new file renamed over the old.
    pub fn write_index(&self, always: bool) -> Result<(), TrailError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let indexed = self.indexed.load(Ordering::SeqCst);
        let (committed, bytes) = {
            let index = self.index.read().expect("trail index lock");
            let committed = self.committed();
            let due = committed - indexed;
            if due == 0 || (!always && due < INDEX_WRITE_AFTER_BYTES) {
                return Ok(());
            }
            let mut out = Vec::with_capacity(24 + index.len() * 64);
            out.extend_from_slice(INDEX_MAGIC);
            out.extend_from_slice(&committed.to_le_bytes());
            out.extend_from_slice(&(index.len() as u64).to_le_bytes());
            for (k, h) in index.heads.iter() {
                out.extend_from_slice(&(k.len() as u16).to_le_bytes());
                out.extend_from_slice(k);
                for v in [h.offset, h.jump, h.jj, h.lines] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                for v in [h.depth, h.jump_depth, h.jj_depth] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            let check = *blake3::hash(&out).as_bytes();
            out.extend_from_slice(&check);
            (committed, out)
        };
        self.file.sync_data()?;
        let tmp = dir.join(format!("{INDEX_FILE}.new"));
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(INDEX_FILE))?;
        File::open(dir)?.sync_all()?;
        self.indexed.store(committed, Ordering::SeqCst);
        Ok(())
    }

    /// The index file and the length it covers; `None` when there is none or it does not
    /// check (then the whole file is folded again).
    fn read_index_file(&self) -> Result<Option<(Index, u64)>, TrailError> {
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

fn parse_index(bytes: &[u8]) -> Option<(Index, u64)> {
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
    let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    let covered = u64_of(take(8)?);
    let count = u64_of(take(8)?);
    let mut index = Index::default();
    for _ in 0..count {
        let key_len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
        let key = take(key_len)?.to_vec();
        let head = Head {
            offset: u64_of(take(8)?),
            jump: u64_of(take(8)?),
            jj: u64_of(take(8)?),
            lines: u64_of(take(8)?),
            depth: u32_of(take(4)?),
            jump_depth: u32_of(take(4)?),
            jj_depth: u32_of(take(4)?),
        };
        index.insert(key, head);
    }
    Some((index, covered))
}

/// A batch's runs, in memory until `TrailStore::write`, in the index only after
/// `TrailStore::publish`.
pub struct Appender {
    /// Where the batch's first run goes: the committed length.
    base: u64,
    buf: Vec<u8>,
    /// The subjects this batch gave a run, and their latest one.
    heads: HashMap<Vec<u8>, Head>,
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
        let previous = match self.heads.get(key) {
            Some(h) => Some(*h),
            None => store
                .index
                .read()
                .expect("trail index lock")
                .get(key)
                .copied(),
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
                        let far = self.header(store, p.jj)?;
                        (p.jj, p.jj_depth, far.jump, far.jump_depth)
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
        self.heads.insert(key.to_vec(), head);
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

    /// A subject's keys in every partition, a whole key, and every key come back in key
    /// order, whatever order they were inserted in, and a replaced head is one key.
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
        let mut index = Index::default();
        for (key, lines) in [
            (&b"household:2\x0079\x00"[..], 1),
            (b"household:1\x0079\x00", 2),
            (b"household:1\x0001\x00", 3),
            (b"household:10\x0001\x00", 4),
            (b"household:1\x0092\x00", 5),
            (b"household:1\x0001\x00", 6),
            (b"k", 7),
        ] {
            index.insert(key.to_vec(), head(lines));
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
        let all: Vec<Vec<u8>> = found(b"").into_iter().map(|(k, _)| k).collect();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        assert_eq!(all.len(), 6);
        assert_eq!(found(b"k"), vec![(b"k".to_vec(), 7)]);
    }

    /// Runs of 1 to 3 lines, appended in batches of several runs, then every page read
    /// back; the index written, the file reopened with and without it.
    #[test]
    fn every_page_of_a_long_trail_reads_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let Opened::Ready(store) = TrailStore::open(dir.path(), 0).unwrap() else {
            panic!("a new store is ready");
        };
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
                store.write_index(true).unwrap();
            }
            if batch == 10 {
                early = (store.committed(), sequence);
            }
        }
        let check = |store: &TrailStore| {
            assert_eq!(store.lengths(b"k"), vec![(b"k".to_vec(), sequence)]);
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
        store.write_index(true).unwrap();
        drop(store);
        let Opened::Ready(store) = TrailStore::open(dir.path(), early.0).unwrap() else {
            panic!("a run's end");
        };
        assert!(!dir.path().join(INDEX_FILE).exists());
        assert_eq!(store.lengths(b"k"), vec![(b"k".to_vec(), early.1)]);
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
