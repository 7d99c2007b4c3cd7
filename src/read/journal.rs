//! The redo record that makes a batch's writes to the projection trees one atomic step
//! without a sled transaction (ADR 0016).
//!
//! Why not a transaction: sled 0.34's transactions (and `apply_batch`) take a lock
//! shared by every sled tree in the process, and hold every read while they run. The
//! next batch's view reads then wait for the previous batch's commit, so application and
//! commit, each about half a rebuild's time, could not overlap. Plain inserts take that
//! lock shared.
//!
//! **A batch's commit** (`Projector`'s commit thread):
//!
//! 1. its writes (views, summaries, chain heads, held messages, the trail's length, the
//!    position last) are encoded into one record, written to the journal file;
//! 2. a marker naming the record (file, offset, length, checksum) is inserted in sled;
//! 3. the record's writes are inserted one by one, the position last.
//!
//! **Recovery.** sled recovers a prefix of its log: it does not recover a segment whose
//! predecessor was lost (`sled::pagecache::segment`), and one thread makes these inserts
//! in order. So if any write of a batch survived a crash, the batch's marker did too, and
//! no later batch's marker did. Opening the projections applies the record the marker
//! names again, which brings in every write of its batch and its position; its writes are
//! whole records, so applying them twice changes nothing.
//!
//! **Which records are kept.** sled writes its log out every `flush_every_ms` (500 ms),
//! so a crash can take the projections back several batches, to a marker whose record
//! must still be readable. Records are appended to one of two files; when it holds
//! `JOURNAL_FILE_BYTES_MAX`, sled is flushed (the latest marker, into this file, is then
//! on disk) and the other file is written next, from its start. A record is overwritten
//! only after a flush made a later marker durable. The file is overwritten in place, not
//! emptied first: the records past the write position are older than any marker sled
//! can recover, and the pages stay in the page cache instead of being freed and
//! allocated again (on this project's virtual machines, writing a new page of a file
//! cost the commit thread about as much as the rest of its work on the page's bytes).
//!
//! The files are not synced: a process crash keeps what was written, a machine crash may
//! not. A marker whose record does not check (the machine lost the record but sled kept
//! the marker) drops the projections, to be replayed from the log, as a trail file that
//! lost writes does.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Mutex;

/// The journal's files in the store's directory, written in turn.
pub const JOURNAL_FILES: [&str; 2] = ["projections.journal.0", "projections.journal.1"];
/// Bytes of records a journal file takes before sled is flushed and the other file is
/// written. A batch's record is a few MB at most (`PROJECTION_BATCH_EVENTS_MAX` events'
/// views), so this is one flush for tens of batches, and the files stay below
/// `2 × (this + one record)`.
pub const JOURNAL_FILE_BYTES_MAX: u64 = 64 << 20;
/// `len u32 | check [8]`, then the body.
const HEADER: usize = 4 + 8;
/// `file u8 | offset u64 | len u32 | check [8]`, big-endian.
const MARKER: usize = 1 + 8 + 4 + 8;
/// A value length that means the key is removed.
const REMOVED: u32 = u32::MAX;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("projection journal: {0}")]
    Io(#[from] std::io::Error),
    /// The record a marker names is not what was written (a machine crash lost it).
    #[error("projection journal: {0}")]
    Corrupt(String),
    #[error("projection journal: {0}")]
    Sled(#[from] sled::Error),
}

fn corrupt(what: impl Into<String>) -> JournalError {
    JournalError::Corrupt(what.into())
}

/// One batch's writes, encoded as they are added: `tree u8 | key_len u32 | key |
/// value_len u32 | value` each (`REMOVED` and no value for a removal), after the header.
pub struct Record {
    buf: Vec<u8>,
}

impl Record {
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER + bytes);
        buf.resize(HEADER, 0);
        Self { buf }
    }

    /// Sets `key` of the `tree`-th tree (an index into the trees `apply` is given).
    pub fn put(&mut self, tree: u8, key: &[u8], value: &[u8]) {
        self.key(tree, key);
        self.buf.extend_from_slice(&len_u32(value).to_le_bytes());
        self.buf.extend_from_slice(value);
    }

    pub fn remove(&mut self, tree: u8, key: &[u8]) {
        self.key(tree, key);
        self.buf.extend_from_slice(&REMOVED.to_le_bytes());
    }

    fn key(&mut self, tree: u8, key: &[u8]) {
        self.buf.push(tree);
        self.buf.extend_from_slice(&len_u32(key).to_le_bytes());
        self.buf.extend_from_slice(key);
    }

    /// The record's bytes with its header filled in.
    fn seal(&mut self) -> &[u8] {
        let len = len_u32(&self.buf[4..]);
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        let check = checksum(&self.buf[HEADER..]);
        self.buf[4..HEADER].copy_from_slice(&check);
        &self.buf
    }

    /// The writes in the order they were added.
    pub fn writes(&self) -> Writes<'_> {
        Writes {
            body: &self.buf[HEADER..],
        }
    }
}

fn len_u32(b: &[u8]) -> u32 {
    // A view record or a batch's record is megabytes at most: far below 4 GiB.
    u32::try_from(b.len()).expect("a journal field under 4 GiB")
}

fn checksum(body: &[u8]) -> [u8; 8] {
    blake3::hash(body).as_bytes()[..8]
        .try_into()
        .expect("8 bytes")
}

/// One write: the tree's index, the key, the value (`None`: removed).
pub type Write<'r> = (u8, &'r [u8], Option<&'r [u8]>);

pub struct Writes<'r> {
    body: &'r [u8],
}

impl<'r> Iterator for Writes<'r> {
    type Item = Result<Write<'r>, JournalError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.body.is_empty() {
            return None;
        }
        let next = (|| {
            let tree = *self.body.first()?;
            let key = take(&mut self.body, 1)?;
            let len = u32::from_le_bytes(self.body.get(..4)?.try_into().ok()?);
            self.body = &self.body[4..];
            let value = if len == REMOVED {
                None
            } else {
                let value = self.body.get(..len as usize)?;
                self.body = &self.body[len as usize..];
                Some(value)
            };
            Some((tree, key, value))
        })();
        match next {
            Some(w) => Some(Ok(w)),
            None => {
                self.body = &[];
                Some(Err(corrupt("a record's writes end inside a write")))
            }
        }
    }
}

/// Skips `skip` bytes, then takes a field of `len u32 | bytes`.
fn take<'r>(body: &mut &'r [u8], skip: usize) -> Option<&'r [u8]> {
    let rest = body.get(skip..)?;
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let field = rest.get(4..4 + len)?;
    *body = &rest[4 + len..];
    Some(field)
}

/// Applies a record's writes, in order, to `trees` (a write's tree is its index here).
pub fn apply(record: &Record, trees: &[&sled::Tree]) -> Result<(), JournalError> {
    apply_some(record, trees, usize::MAX)
}

/// The first `writes` of a record's writes: a test's crash in the middle of a commit.
pub fn apply_some(
    record: &Record,
    trees: &[&sled::Tree],
    writes: usize,
) -> Result<(), JournalError> {
    for write in record.writes().take(writes) {
        let (tree, key, value) = write?;
        let tree = trees
            .get(usize::from(tree))
            .ok_or_else(|| corrupt(format!("a write to tree {tree}, of {}", trees.len())))?;
        match value {
            Some(v) => tree.insert(key, v)?,
            None => tree.remove(key)?,
        };
    }
    Ok(())
}

/// Where a record was written; stored in sled before the record's writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    file: u8,
    offset: u64,
    len: u32,
    check: [u8; 8],
}

impl Marker {
    pub fn encode(&self) -> [u8; MARKER] {
        let mut b = [0u8; MARKER];
        b[0] = self.file;
        b[1..9].copy_from_slice(&self.offset.to_be_bytes());
        b[9..13].copy_from_slice(&self.len.to_be_bytes());
        b[13..].copy_from_slice(&self.check);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, JournalError> {
        let b: &[u8; MARKER] = b
            .try_into()
            .map_err(|_| corrupt(format!("a marker of {} bytes", b.len())))?;
        let marker = Self {
            file: b[0],
            offset: u64::from_be_bytes(b[1..9].try_into().expect("8 bytes")),
            len: u32::from_be_bytes(b[9..13].try_into().expect("4 bytes")),
            check: b[13..].try_into().expect("8 bytes"),
        };
        if usize::from(marker.file) >= JOURNAL_FILES.len() || (marker.len as usize) < HEADER {
            return Err(corrupt(format!("a marker naming {marker:?}")));
        }
        Ok(marker)
    }
}

pub struct Journal {
    files: [File; 2],
    /// The file the next record goes to, and where in it.
    next: Mutex<(u8, u64)>,
    _scratch: Option<tempfile::TempDir>,
}

impl Journal {
    /// Opens the journal's files in `dir`; `marker` is the one sled holds, whose record is
    /// kept: the next record is written after it.
    pub fn open(dir: &Path, marker: Option<&Marker>) -> Result<Self, JournalError> {
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(name))
        };
        let files = [open(JOURNAL_FILES[0])?, open(JOURNAL_FILES[1])?];
        let next = marker.map_or((0, 0), |m| (m.file, m.offset + u64::from(m.len)));
        Ok(Self {
            files,
            next: Mutex::new(next),
            _scratch: None,
        })
    }

    /// A journal in a temporary directory that goes with it (scratch projections).
    pub fn scratch() -> Result<Self, JournalError> {
        let dir = tempfile::tempdir()?;
        let mut journal = Self::open(dir.path(), None)?;
        journal._scratch = Some(dir);
        Ok(journal)
    }

    /// Writes `record` and returns its marker. When the current file is full, `flush`
    /// (sled's) runs first, then the other file takes the record at its start: after the
    /// flush no marker sled can recover names a record in the other file.
    pub fn write(
        &self,
        record: &mut Record,
        flush: impl FnOnce() -> Result<(), sled::Error>,
    ) -> Result<Marker, JournalError> {
        let bytes = record.seal();
        let mut next = self.next.lock().expect("journal lock");
        if next.1 > 0 && next.1 + bytes.len() as u64 > JOURNAL_FILE_BYTES_MAX {
            flush()?;
            *next = (1 - next.0, 0);
        }
        let (file, offset) = *next;
        self.files[usize::from(file)].write_all_at(bytes, offset)?;
        next.1 += bytes.len() as u64;
        Ok(Marker {
            file,
            offset,
            len: len_u32(bytes),
            check: bytes[4..HEADER].try_into().expect("8 bytes"),
        })
    }

    /// The record `marker` names, checked against it.
    pub fn read(&self, marker: &Marker) -> Result<Record, JournalError> {
        let file = &self.files[usize::from(marker.file)];
        // The length comes from sled, unchecked until the record is read: a damaged
        // marker must not size an allocation of up to 4 GiB.
        let file_len = file.metadata()?.len();
        let ends = marker.offset.checked_add(u64::from(marker.len));
        if ends.is_none_or(|end| end > file_len) {
            return Err(corrupt(format!(
                "the record at {marker:?} would end past the file's {file_len} bytes"
            )));
        }
        let mut buf = vec![0u8; marker.len as usize];
        file.read_exact_at(&mut buf, marker.offset)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    corrupt(format!("the file ends before the record at {marker:?}"))
                }
                _ => e.into(),
            })?;
        let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
        if len as usize != buf.len() - 4
            || buf[4..HEADER] != marker.check
            || checksum(&buf[HEADER..]) != marker.check
        {
            return Err(corrupt(format!("the record at {marker:?} does not check")));
        }
        Ok(Record { buf })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize, size: usize) -> Record {
        let mut r = Record::with_capacity(0);
        for i in 0..n {
            r.put(
                (i % 3) as u8,
                format!("key {i}").as_bytes(),
                &vec![i as u8; size],
            );
        }
        r.remove(2, b"gone");
        r
    }

    #[test]
    fn a_record_reads_back_as_written_and_applies_in_order() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let trees: Vec<sled::Tree> = (0..3).map(|i| db.open_tree([i]).unwrap()).collect();
        let trees: Vec<&sled::Tree> = trees.iter().collect();
        trees[2].insert(b"gone", b"before").unwrap();
        let journal = Journal::scratch().unwrap();
        let mut r = record(10, 100);
        r.put(0, b"key 0", b"last write wins");
        let marker = journal.write(&mut r, || Ok(())).unwrap();
        assert_eq!(Marker::decode(&marker.encode()).unwrap(), marker);
        let back = journal.read(&marker).unwrap();
        assert_eq!(back.buf, r.buf);
        apply(&back, &trees).unwrap();
        assert_eq!(
            &*trees[0].get(b"key 0").unwrap().unwrap(),
            b"last write wins"
        );
        assert_eq!(&*trees[1].get(b"key 7").unwrap().unwrap(), &[7u8; 100]);
        assert_eq!(trees[2].get(b"gone").unwrap(), None);
        // Applying it again changes nothing.
        apply(&back, &trees).unwrap();
        assert_eq!(trees[0].len() + trees[1].len() + trees[2].len(), 10);
    }

    #[test]
    fn a_full_file_flushes_sled_then_the_other_file_takes_the_records() {
        let journal = Journal::scratch().unwrap();
        let mut flushes = 0;
        let mut markers = Vec::new();
        // ~1 MiB records: the first file holds 64 of them.
        for i in 0..150 {
            let mut r = record(4, 256 << 10);
            r.put(0, b"which", &[i as u8]);
            markers.push(journal.write(&mut r, || {
                flushes += 1;
                Ok(())
            }));
        }
        let markers: Vec<Marker> = markers.into_iter().map(Result::unwrap).collect();
        assert_eq!(flushes, 2);
        assert_eq!(
            markers.iter().map(|m| m.file).collect::<Vec<_>>(),
            [vec![0; 63], vec![1; 63], vec![0; 24]].concat()
        );
        // The records after the last switch read back; the one the last flush made
        // durable (the last of file 1) too.
        for m in markers[63..].iter().rev().take(25) {
            journal.read(m).unwrap();
        }
        // Those of file 0 before the switch were overwritten in place.
        for m in &markers[..24] {
            assert!(matches!(journal.read(m), Err(JournalError::Corrupt(_))));
        }
    }

    #[test]
    fn a_record_that_does_not_check_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let marker = {
            let journal = Journal::open(dir.path(), None).unwrap();
            journal.write(&mut record(3, 10), || Ok(())).unwrap()
        };
        // Reopened after the marker: the next record goes after the marked one.
        let journal = Journal::open(dir.path(), Some(&marker)).unwrap();
        let second = journal.write(&mut record(3, 10), || Ok(())).unwrap();
        assert_eq!(second.offset, u64::from(marker.len));
        journal.read(&marker).unwrap();
        // A byte changed in the body.
        let path = dir.path().join(JOURNAL_FILES[0]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            journal.read(&marker),
            Err(JournalError::Corrupt(_))
        ));
        // Cut short.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(5)
            .unwrap();
        assert!(matches!(
            journal.read(&second),
            Err(JournalError::Corrupt(_))
        ));
        assert!(Marker::decode(&[0; 3]).is_err());
    }

    /// A marker's length is read from sled before the record is checked: a damaged one
    /// is refused from the file's length, before it sizes a buffer.
    #[test]
    fn a_marker_longer_than_its_file_is_refused_before_anything_is_read() {
        let journal = Journal::scratch().unwrap();
        let marker = journal.write(&mut record(3, 10), || Ok(())).unwrap();
        for (offset, len) in [(marker.offset, u32::MAX), (u64::MAX - 8, marker.len)] {
            let damaged = Marker {
                offset,
                len,
                ..marker
            };
            match journal.read(&damaged) {
                Err(JournalError::Corrupt(what)) => {
                    assert!(what.contains("past the file"), "{what}")
                }
                Err(other) => panic!("{other:?}"),
                Ok(_) => panic!("a damaged marker read a record"),
            }
        }
    }
}
