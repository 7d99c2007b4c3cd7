//! Snapshots of the partition writers' books, kept in the store directory, so that
//! the first command after a restart does not wait for a fold of the whole chain
//! (docs/adr/0008-writer-book-snapshots.md).
//!
//! A snapshot names the chain position it was taken at (partition sequence, event
//! hash, stream sequence, index in the message). It is trusted only after that event
//! is read back from the stream with that hash, as its message's last event (a head
//! inside a message is one whose tail broke the chain, which a start from there would
//! never hold); the writer then replays forward from
//! there, checking each link as usual. Anything else (a position the stream does not
//! hold, a checksum or format that does not match, a book that does not decode) and
//! the snapshot is discarded and the chain folded from genesis: a snapshot can make a
//! start faster, never change a decision.
//!
//! One file per partition, `book-snapshots/<partition>.snapshot`, written whole to a
//! temporary file, fsynced and renamed over the old one, so a crash leaves the old
//! snapshot or the new one, never a part. A file and not a record in the log index:
//! a snapshot of a province is tens of MB, and one large commit in the index would
//! hold back every partition's key records behind it.
//!
//! File layout (all integers big-endian):
//! `ANSINHBK` | format u32 | sequence u64 | hash [32] | stream sequence u64 |
//! index u32 | BLAKE3 of the body [32] | body (`book::snapshot::encode`).

use std::io::Write;
use std::path::{Path, PathBuf};

use async_nats::jetstream::stream::Stream;

use super::reader::{self, RawEvent};
use super::store::HeadRecord;
use crate::book::{self, PartitionBook};
use crate::chain::{ChainHead, Digest, Partition};

const MAGIC: &[u8; 8] = b"ANSINHBK";
/// Bumped when the body's shape changes in a way serde would still read. 2: blind
/// indexes as bytes; 3: standings verified at decoding; 4: three parts; 5: an erased
/// household's citizens are free in the registry, and it takes no change after; 6: a loan
/// keeps its tranches, each repaid from its own date; 7: a frozen loan keeps the date it
/// was frozen; 8: the month a stopped entitlement paid through counts the months it had
/// paid ahead (`stopped_paying_through`), so the same events fold to another book, and the
/// payments book remembers the settlements a gateway posted too late (`late_settlements`);
/// 9: the registry keeps the day each citizen died (`deaths`), and an entitlement the
/// citizen it pays (`citizen`), which a run reads to stop paying after a death; 10: the
/// month a stopped entitlement paid through counts the months its gateway settled late
/// (`late_settlements`), so the same events fold to another book; 11: a `settled` refused
/// after a return is a late settlement too (`late_settlements`), so again; 12: a
/// household's standing keeps its review year and what it held before its latest decision
/// (`HouseholdStanding::before`), which a correction of that decision decides with; 13: a
/// loan keeps what moved its instalments (`Loan::schedule_changes`), so an unfreeze moves
/// those not yet due when it was frozen; 14: and its extensions (`ScheduleChange::Extended`),
/// which keep what fell due before them, so the same events fold to another schedule; 15:
/// a freeze's schedule change keeps the day it ended (`unfrozen_on`), which the overdue
/// job's surcharge counts the days priced by; 16: the payments book keeps the latest date
/// of its runs, reissues and timeouts (`latest_operation_on`), which none may precede; 17:
/// a household keeps the citizens who died as its members (`Household::died`), so a run
/// tells them from a citizen who left it alive; 18: "one allowance per person" is keyed by
/// the citizen a grant recorded, not the position it was granted under: the payments book
/// keeps no running entitlement per reference (`active`), and the month each stopped
/// entitlement paid through by the entitlement (`stopped_paying_through`); 19: what a
/// household was paid before a move is kept by the citizen its grant recorded, and by
/// reference only without one (`PaidBeforeMove`), so the same events fold to another book.
pub const SNAPSHOT_FORMAT: u32 = 19;
const HEADER_BYTES: usize = 8 + 4 + 8 + 32 + 8 + 4 + 32;
/// A writer takes a snapshot after this many events since its last one, and no sooner
/// than `SNAPSHOT_TIME_INTERVAL_MIN` after it. Encoding holds the writer: ~0.2-0.9 s for
/// a 200,000-household book on this machine (docs/BENCH.md). A province's ordinary
/// day appends far fewer events than this, so after a crash the next start replays at
/// most ~100,000 events (~0.6 s at the writer's refold rate); under a sustained
/// saturating load, at most one time interval's appends.
pub const SNAPSHOT_EVENTS_INTERVAL: u64 = 100_000;
/// See `SNAPSHOT_EVENTS_INTERVAL`: bounds the writer's time spent encoding to about 1%
/// under any load.
pub const SNAPSHOT_TIME_INTERVAL_MIN: std::time::Duration = std::time::Duration::from_secs(60);
/// Folder inside the store directory.
pub const SNAPSHOT_DIR: &str = "book-snapshots";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("book snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a snapshot this version can use; it is discarded.
    #[error("book snapshot {path} is unusable: {reason}")]
    Unusable { path: PathBuf, reason: String },
}

pub fn path(store_dir: &Path, partition: &str) -> PathBuf {
    store_dir
        .join(SNAPSHOT_DIR)
        .join(format!("{partition}.snapshot"))
}

/// Writes `body` (an encoded book) as the partition's snapshot at `at`, durably.
pub fn save(
    store_dir: &Path,
    partition: &str,
    at: &HeadRecord,
    body: &[u8],
) -> Result<(), SnapshotError> {
    let path = path(store_dir, partition);
    let io = |source| SnapshotError::Io {
        path: path.clone(),
        source,
    };
    let dir = path.parent().expect("a snapshot path has a folder");
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("snapshot.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&SNAPSHOT_FORMAT.to_be_bytes());
    header.extend_from_slice(&at.sequence.to_be_bytes());
    header.extend_from_slice(&at.hash.0);
    header.extend_from_slice(&at.stream_sequence.to_be_bytes());
    header.extend_from_slice(&at.index.to_be_bytes());
    header.extend_from_slice(blake3::hash(body).as_bytes());
    file.write_all(&header).map_err(io)?;
    file.write_all(body).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io)?;
    // The rename itself is durable only once the folder is synced.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

/// Reads and decodes the partition's snapshot; None when there is none. Does not
/// check it against the chain (`Checked::against`).
pub fn load(
    store_dir: &Path,
    partition: &str,
) -> Result<Option<(HeadRecord, PartitionBook)>, SnapshotError> {
    let path = path(store_dir, partition);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotError::Io { path, source }),
    };
    let unusable = |reason: String| SnapshotError::Unusable {
        path: path.clone(),
        reason,
    };
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err(unusable("not a book snapshot".into()));
    }
    let u32_at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let format = u32_at(8);
    if format != SNAPSHOT_FORMAT {
        return Err(unusable(format!(
            "format {format}, this version reads {SNAPSHOT_FORMAT}"
        )));
    }
    let at = HeadRecord {
        sequence: u64_at(12),
        hash: Digest(bytes[20..52].try_into().expect("32 bytes")),
        stream_sequence: u64_at(52),
        index: u32_at(60),
    };
    let body = &bytes[HEADER_BYTES..];
    if blake3::hash(body).as_bytes() != &bytes[64..96] {
        return Err(unusable("its checksum does not match its contents".into()));
    }
    let book = book::snapshot::decode(body).map_err(|e| unusable(e.to_string()))?;
    if book.partition != partition || book.sequence != at.sequence {
        return Err(unusable(format!(
            "it holds partition {} at sequence {}, not partition {partition} at {}",
            book.partition, book.sequence, at.sequence
        )));
    }
    Ok(Some((at, book)))
}

/// Removes the partition's snapshot (absent is fine).
pub fn discard(store_dir: &Path, partition: &str) -> Result<(), SnapshotError> {
    let path = path(store_dir, partition);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SnapshotError::Io { path, source }),
    }
}

/// Partitions that have a snapshot file, in name order.
pub fn partitions(store_dir: &Path) -> Result<Vec<String>, SnapshotError> {
    let dir = store_dir.join(SNAPSHOT_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(SnapshotError::Io { path: dir, source }),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SnapshotError::Io {
            path: dir.clone(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(partition) = name.strip_suffix(".snapshot") {
            out.push(partition.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// Why a snapshot's position is not on the chain the stream holds, or does not close its
/// message: `Ok(None)` when it is and does, `Err` when the stream could not be read to
/// tell (a leader election, a timeout), which says nothing against the snapshot.
pub async fn mismatch(
    stream: &Stream,
    subject: &str,
    at: &HeadRecord,
) -> Result<Option<String>, String> {
    let event = reader::event_at(stream, at.at())
        .await
        .map_err(|e| format!("its position could not be read: {e}"))?;
    Ok(match event {
        None => Some(format!(
            "the stream holds no message at stream sequence {}",
            at.stream_sequence
        )),
        Some(event) if event.subject != subject => Some(format!(
            "stream sequence {} is on {}, not {subject}",
            at.stream_sequence, event.subject
        )),
        Some(event) if event.hash != at.hash || event.malformed.is_some() => Some(format!(
            "the event at stream sequence {} does not have the snapshot's hash",
            at.stream_sequence
        )),
        // A writer starting from it reads on from the next message: the rest of this one,
        // which broke the chain (a writer's own frames are never cut), would never be held.
        Some(event) if !event.last_in_message => Some(format!(
            "the event at stream sequence {} (index {}) is not the last of its message",
            at.stream_sequence, at.index
        )),
        Some(_) => None,
    })
}

/// One snapshot compared with a fold of its partition from genesis to its position.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotCheck {
    pub partition: String,
    pub sequence: u64,
    pub stream_sequence: u64,
    /// None when the snapshot equals the fold; else what differs, in words.
    pub difference: Option<String>,
}

/// Compares every stored snapshot with a fold of its chain from genesis up to the
/// snapshot's position (`audit rebuild-check`).
pub async fn check_all(
    store_dir: &Path,
    stream: &Stream,
    subject_prefix: &str,
) -> Result<Vec<SnapshotCheck>, SnapshotError> {
    let mut out = Vec::new();
    for partition in partitions(store_dir)? {
        let subject = format!("{subject_prefix}.{partition}");
        let (at, snapshot) = match load(store_dir, &partition) {
            Ok(Some(loaded)) => loaded,
            Ok(None) => continue,
            Err(e) => {
                out.push(SnapshotCheck {
                    partition,
                    sequence: 0,
                    stream_sequence: 0,
                    difference: Some(e.to_string()),
                });
                continue;
            }
        };
        let difference = match mismatch(stream, &subject, &at).await {
            Err(reason) | Ok(Some(reason)) => Some(reason),
            Ok(None) => match fold(stream, subject_prefix, &partition, at.stream_sequence).await {
                Err(e) => Some(e),
                Ok(folded) => describe_difference(&snapshot, &folded),
            },
        };
        out.push(SnapshotCheck {
            partition,
            sequence: at.sequence,
            stream_sequence: at.stream_sequence,
            difference,
        });
    }
    Ok(out)
}

/// Which part of two books differs, for a person.
fn describe_difference(snapshot: &PartitionBook, folded: &PartitionBook) -> Option<String> {
    if snapshot == folded {
        return None;
    }
    let parts = [
        ("sequence", snapshot.sequence == folded.sequence),
        ("registry", snapshot.registry == folded.registry),
        ("loans", snapshot.loans == folded.loans),
        ("trial balance", snapshot.trial == folded.trial),
        ("standings", snapshot.standings == folded.standings),
        ("payments", snapshot.payments == folded.payments),
        (
            "payments trial balance",
            snapshot.payments_trial == folded.payments_trial,
        ),
        ("unreadable count", snapshot.unreadable == folded.unreadable),
    ];
    let differ: Vec<&str> = parts
        .iter()
        .filter(|(_, same)| !same)
        .map(|(name, _)| *name)
        .collect();
    Some(format!(
        "the snapshot's book differs from the fold from genesis in: {}",
        differ.join(", ")
    ))
}

/// Folds one partition's chain from genesis through stream sequence `end`, checking
/// every link. The writer's own fold, without the writing.
pub async fn fold(
    stream: &Stream,
    subject_prefix: &str,
    partition: &str,
    end: u64,
) -> Result<PartitionBook, String> {
    let subject = &format!("{subject_prefix}.{partition}");
    let mut book = PartitionBook::new(partition);
    let mut follower = Follower::new(ChainHead::genesis(
        Partition::new(partition).map_err(|e| format!("partition {partition}: {e}"))?,
    ));
    // The key history judges exclusions; read now, it holds every key event stored
    // before `end`'s messages.
    let keys =
        Partition::new(crate::checkpoint::stream::KEYS_PARTITION).expect("valid partition name");
    let log = super::LogConfig {
        subject_prefix: subject_prefix.to_string(),
        ..Default::default()
    };
    let history = crate::checkpoint::read::extend_key_ring(
        stream,
        &log,
        crate::checkpoint::read::KeyRingAt::genesis(keys),
    )
    .await
    .map_err(|e| format!("reading the key history: {e}"))?;
    let visit = |event: RawEvent| -> Result<(), String> {
        let step = follower.follow(&event, history.keys());
        if let Step::Event { envelope, .. } = step {
            book.apply(
                envelope.sequence,
                envelope.actor.as_ref(),
                envelope.payload.as_ref(),
            );
        }
        Ok(())
    };
    reader::read_range(stream, subject, 1, end, visit)
        .await
        .map_err(|e| match e {
            reader::ReadError::Nats(m) => format!("reading the log: {m}"),
            reader::ReadError::Visit(e) => e,
        })?;
    Ok(book)
}

use crate::log::follow::{Follower, Step};

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> HeadRecord {
        HeadRecord {
            sequence: 3,
            hash: Digest([7; 32]),
            stream_sequence: 40,
            index: 2,
        }
    }

    fn book() -> PartitionBook {
        let mut book = PartitionBook::new("01");
        book.sequence = 3;
        book
    }

    #[test]
    fn a_saved_snapshot_loads_back_as_the_same_book_and_position() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "01", &at(), &book::snapshot::encode(&book())).unwrap();
        let (position, loaded) = load(dir.path(), "01").unwrap().unwrap();
        assert_eq!((position, loaded), (at(), book()));
        assert_eq!(partitions(dir.path()).unwrap(), vec!["01".to_string()]);
        assert!(load(dir.path(), "02").unwrap().is_none());
    }

    #[test]
    fn a_changed_byte_or_another_partitions_book_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "01", &at(), &book::snapshot::encode(&book())).unwrap();
        let file = path(dir.path(), "01");
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        let e = load(dir.path(), "01").unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        // A partition's snapshot copied under another partition's name.
        save(dir.path(), "02", &at(), &book::snapshot::encode(&book())).unwrap();
        let e = load(dir.path(), "02").unwrap_err().to_string();
        assert!(e.contains("not partition 02"), "{e}");
        discard(dir.path(), "02").unwrap();
        discard(dir.path(), "02").unwrap();
        assert!(load(dir.path(), "02").unwrap().is_none());
    }
}
