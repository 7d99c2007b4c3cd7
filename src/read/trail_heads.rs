//! The trail's index on disk: each subject key's latest run, in an open-addressing hash
//! table in a file mapped into memory (ADR 0017).
//!
//! Why a file: the index has one entry a subject, and every payment instruction is a
//! subject, so a province adds over a million a year. On the heap (~130 B an entry with
//! its key) it was most of the projector's growth with the log. Here an entry is a
//! 64-byte slot in the page cache, which the kernel writes back and evicts as it needs.
//!
//! **A slot** is `hash [16] | offset | jump | jj | lines (u64) | depth | jump_depth |
//! jj_depth | 0 (u32)`, little-endian. The key is not stored: the hash is the first 16
//! bytes of its BLAKE3 hash, which no two of the log's subject keys share (a collision
//! is as likely as guessing a 128-bit key). `lines` is never 0 in a head, so a slot of
//! zeros is empty. Linear probing; the table doubles past `LOAD_MAX`.
//!
//! **Crash safety** is the caller's (`trail_store`): it inserts only heads whose batch a
//! sled flush made durable, so after any crash no slot names a run past the length the
//! projections recover, and it folds again every run after the length the table was
//! last flushed at. A grown table is written whole to a new file and renamed over the
//! old one.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use super::trail_store::{Head, TrailError};

/// The table's file in the projections' directory.
pub const HEADS_FILE: &str = "trail.heads";
const MAGIC: &[u8; 8] = b"ANSTRHT1";
/// The file's first page: the magic and the number of slots.
const PAGE: usize = 4096;
const SLOT: usize = 64;
/// Slots of a new table (4 MiB of file, allocated as it is written).
const SLOTS_MIN: usize = 1 << 16;
/// Entries per 100 slots past which the table doubles: probes stay short (~2 on a hit).
const LOAD_MAX: usize = 70;

/// A subject key's name in the table.
pub type KeyHash = u128;

pub fn key_hash(key: &[u8]) -> KeyHash {
    let h = blake3::hash(key);
    u128::from_le_bytes(h.as_bytes()[..16].try_into().expect("16 bytes"))
}

pub struct Table {
    path: PathBuf,
    file: File,
    map: MmapMut,
    /// A power of two.
    slots: usize,
    entries: usize,
    /// Made empty by `open`, as no valid table was there: an index file naming a
    /// length it covers speaks of another table.
    made: bool,
}

impl Table {
    /// Opens the table in `dir`, or makes an empty one when there is none or it is not
    /// one (a table half grown is a `.new` file, removed).
    pub fn open(dir: &Path) -> Result<Self, TrailError> {
        let path = dir.join(HEADS_FILE);
        match std::fs::remove_file(new_path(&path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        if let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            let len = file.metadata()?.len() as usize;
            if len >= PAGE + SLOT * SLOTS_MIN {
                // SAFETY: the file is this process's alone (the projections' directory is
                // claimed, and sled locks it against other processes) and is never cut
                // while mapped.
                let map = unsafe { MmapMut::map_mut(&file)? };
                let slots = u64::from_le_bytes(map[8..16].try_into().expect("8 bytes")) as usize;
                let bytes = slots.checked_mul(SLOT).and_then(|b| b.checked_add(PAGE));
                if &map[..8] == MAGIC && slots.is_power_of_two() && bytes == Some(len) {
                    let mut table = Self {
                        path: path.clone(),
                        file,
                        map,
                        slots,
                        entries: 0,
                        made: false,
                    };
                    table.entries = (0..slots).filter(|&i| !table.is_empty(i)).count();
                    // Fuller than `insert` ever leaves it is no table of ours (a disk that
                    // returned junk): a probe there could meet no empty slot and never end.
                    if table.entries * 100 <= slots * LOAD_MAX {
                        return Ok(table);
                    }
                    drop(table);
                }
            }
        }
        Self::create(&path, SLOTS_MIN)
    }

    /// An empty table of `slots` slots at `path`, replacing any file there.
    fn create(path: &Path, slots: usize) -> Result<Self, TrailError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len((PAGE + slots * SLOT) as u64)?;
        // SAFETY: as in `open`.
        let mut map = unsafe { MmapMut::map_mut(&file)? };
        map[..8].copy_from_slice(MAGIC);
        map[8..16].copy_from_slice(&(slots as u64).to_le_bytes());
        Ok(Self {
            path: path.to_path_buf(),
            file,
            map,
            slots,
            entries: 0,
            made: true,
        })
    }

    /// Empties the table (the projections are replayed).
    pub fn clear(&mut self) -> Result<(), TrailError> {
        *self = Self::create(&self.path, SLOTS_MIN)?;
        Ok(())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether `open` found no table and made this one.
    pub fn made(&self) -> bool {
        self.made
    }

    /// Bytes of the table's file.
    pub fn file_bytes(&self) -> u64 {
        (PAGE + self.slots * SLOT) as u64
    }

    fn slot(&self, i: usize) -> &[u8] {
        &self.map[PAGE + i * SLOT..PAGE + (i + 1) * SLOT]
    }

    fn is_empty(&self, i: usize) -> bool {
        self.slot(i)[40..48] == [0; 8]
    }

    /// The slot holding `hash`, or the empty one where it would go.
    fn find(&self, hash: KeyHash) -> (usize, bool) {
        let mask = self.slots - 1;
        let mut i = (hash as usize) & mask;
        loop {
            if self.is_empty(i) {
                return (i, false);
            }
            if self.slot(i)[..16] == hash.to_le_bytes() {
                return (i, true);
            }
            i = (i + 1) & mask;
        }
    }

    pub fn get(&self, hash: KeyHash) -> Option<Head> {
        match self.find(hash) {
            (i, true) => Some(decode(self.slot(i))),
            (_, false) => None,
        }
    }

    pub fn insert(&mut self, hash: KeyHash, head: &Head) -> Result<(), TrailError> {
        debug_assert!(head.lines > 0, "a head has lines");
        let (i, found) = self.find(hash);
        if !found && (self.entries + 1) * 100 > self.slots * LOAD_MAX {
            self.grow()?;
            return self.insert(hash, head);
        }
        encode(
            &mut self.map[PAGE + i * SLOT..PAGE + (i + 1) * SLOT],
            hash,
            head,
        );
        if !found {
            self.entries += 1;
        }
        Ok(())
    }

    /// Moves every entry into a table of twice the slots, written whole and flushed
    /// under a new name, then renamed over this one.
    fn grow(&mut self) -> Result<(), TrailError> {
        let new = new_path(&self.path);
        let mut bigger = Self::create(&new, self.slots * 2)?;
        for i in 0..self.slots {
            if !self.is_empty(i) {
                let slot = self.slot(i);
                let hash = u128::from_le_bytes(slot[..16].try_into().expect("16 bytes"));
                bigger.insert(hash, &decode(slot))?;
            }
        }
        bigger.map.flush()?;
        std::fs::rename(&new, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        bigger.path = self.path.clone();
        *self = bigger;
        Ok(())
    }

    /// Makes every insert so far durable.
    pub fn flush(&self) -> Result<(), TrailError> {
        self.map.flush()?;
        self.file.sync_all()?;
        Ok(())
    }
}

fn new_path(path: &Path) -> PathBuf {
    path.with_extension("heads.new")
}

fn encode(slot: &mut [u8], hash: KeyHash, h: &Head) {
    slot[..16].copy_from_slice(&hash.to_le_bytes());
    for (i, v) in [h.offset, h.jump, h.jj, h.lines].into_iter().enumerate() {
        slot[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    for (i, v) in [h.depth, h.jump_depth, h.jj_depth, 0]
        .into_iter()
        .enumerate()
    {
        slot[48 + 4 * i..52 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
}

fn decode(slot: &[u8]) -> Head {
    let u64_at = |i: usize| u64::from_le_bytes(slot[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(slot[i..i + 4].try_into().expect("4 bytes"));
    Head {
        offset: u64_at(16),
        jump: u64_at(24),
        jj: u64_at(32),
        lines: u64_at(40),
        depth: u32_at(48),
        jump_depth: u32_at(52),
        jj_depth: u32_at(56),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(n: u64) -> Head {
        Head {
            offset: n * 100,
            depth: n as u32,
            jump: n * 10,
            jump_depth: 1,
            jj: n,
            jj_depth: 2,
            lines: n + 1,
        }
    }

    /// Entries survive growth and a reopen; a replaced entry is one entry; keys that
    /// share their first slot are told apart by their hash.
    #[test]
    fn entries_are_found_after_growth_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let n = (SLOTS_MIN * LOAD_MAX / 100 + 1_000) as u64;
        let mut table = Table::open(dir.path()).unwrap();
        for i in 0..n {
            table.insert(key_hash(&i.to_le_bytes()), &head(i)).unwrap();
        }
        assert!(
            table.file_bytes() > (PAGE + SLOTS_MIN * SLOT) as u64,
            "it grew"
        );
        table
            .insert(key_hash(&5u64.to_le_bytes()), &head(7))
            .unwrap();
        // Same low bits, other hash: the second goes to the next slot.
        table.insert(1 << 100, &head(1)).unwrap();
        table.insert(2 << 100, &head(2)).unwrap();
        assert_eq!(table.len() as u64, n + 2);
        table.flush().unwrap();
        drop(table);
        let table = Table::open(dir.path()).unwrap();
        assert_eq!(table.len() as u64, n + 2);
        assert_eq!(table.get(key_hash(&5u64.to_le_bytes())), Some(head(7)));
        assert_eq!(table.get(key_hash(&6u64.to_le_bytes())), Some(head(6)));
        assert_eq!(table.get(1 << 100), Some(head(1)));
        assert_eq!(table.get(2 << 100), Some(head(2)));
        assert_eq!(table.get(key_hash(b"never")), None);
    }

    /// A table with every slot taken (junk a disk returned under the right header) opens
    /// as an empty table: probing it for a key it lacks would never meet an empty slot.
    #[test]
    fn a_table_fuller_than_any_insert_leaves_it_opens_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![1u8; PAGE + SLOTS_MIN * SLOT];
        bytes[..8].copy_from_slice(MAGIC);
        bytes[8..16].copy_from_slice(&(SLOTS_MIN as u64).to_le_bytes());
        std::fs::write(dir.path().join(HEADS_FILE), bytes).unwrap();
        let table = Table::open(dir.path()).unwrap();
        assert!(table.made());
        assert_eq!(table.get(key_hash(b"x")), None);
    }

    /// A file that is not a table (or a half-grown one) opens as an empty table.
    #[test]
    fn a_file_that_is_not_a_table_opens_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(HEADS_FILE),
            vec![7u8; PAGE + SLOTS_MIN * SLOT],
        )
        .unwrap();
        std::fs::write(dir.path().join("trail.heads.new"), b"half").unwrap();
        let table = Table::open(dir.path()).unwrap();
        assert_eq!(table.len(), 0);
        assert!(!dir.path().join("trail.heads.new").exists());
    }
}
