//! How the audit trail is stored, in two trees (ADR 0014, "a trail by position"):
//!
//! - **lines** (`proj.lines`): the lines of consecutive events of one partition, in chain
//!   order, as one record (a block) keyed by its first line's chain sequence: appended in
//!   key order, a record per `TRAIL_BLOCK_LINES_MAX` events;
//! - **index** (`proj.trail`): each subject's lines as (chain sequence, the block that
//!   holds it), in chunks of up to `TRAIL_INDEX_CHUNK_MAX`, keyed by the chunk's first
//!   sequence; a batch rewrites the subject's last chunk instead of adding a record. A line
//!   is then one point read of its block, not a search for it.
//!
//! Why: a record a line per subject cost sled a new key at a random place for almost every
//! event (a household's), and new keys are what sled pays most for (~7 µs here, against
//! ~2-3 µs to rewrite a key it holds; ADR 0014). Blocks are new keys in ascending order, one
//! every `TRAIL_BLOCK_LINES_MAX` events; an index chunk is a key the store already holds.
//!
//! A line: `[partition, sequence, stream_sequence, hash (bin 32), recorded_at_unix_ms,
//! actor, role, event_type, detail]`, a MessagePack array without field names, its hash as
//! 32 raw bytes (~140 B, against ~250 B with names and a hex hash). A block: a MessagePack
//! array of lines (`encode_run`), whose lines `run_offsets` finds by sequence. An index chunk:
//! the count, then for each line its sequence's distance from the one before (the first's
//! from 0) and its distance from its block's first sequence, all as LEB128 varints (~4 B a
//! line).

use rmp::decode::{self, NumValueReadError, ValueReadError};
use rmp::encode;

use super::projection::TrailEntry;
use crate::chain::Digest;

const LINE_FIELDS: u32 = 9;

/// What an event's trail line holds, borrowed from the event while it is applied.
pub struct Line<'a> {
    pub partition: &'a str,
    pub sequence: u64,
    pub stream_sequence: u64,
    pub hash: &'a Digest,
    pub recorded_at_unix_ms: i64,
    pub actor: &'a str,
    pub role: &'a str,
    pub event_type: &'a str,
    pub detail: &'a str,
}

pub fn encode_line(line: &Line<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        64 + line.partition.len()
            + line.actor.len()
            + line.role.len()
            + line.event_type.len()
            + line.detail.len(),
    );
    // Writing into a Vec cannot fail.
    let _ = encode::write_array_len(&mut out, LINE_FIELDS);
    let _ = encode::write_str(&mut out, line.partition);
    let _ = encode::write_uint(&mut out, line.sequence);
    let _ = encode::write_uint(&mut out, line.stream_sequence);
    let _ = encode::write_bin(&mut out, &line.hash.0);
    let _ = encode::write_sint(&mut out, line.recorded_at_unix_ms);
    for text in [line.actor, line.role, line.event_type, line.detail] {
        let _ = encode::write_str(&mut out, text);
    }
    out
}

/// A run of encoded lines as one record: the array header, then the lines as they are.
pub fn encode_run<'a>(lines: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + lines.len() * 160);
    let _ = encode::write_array_len(&mut out, lines.len() as u32);
    for line in lines {
        out.extend_from_slice(line);
    }
    out
}

/// Every line of a block.
#[cfg(test)]
fn decode_run(run: &[u8]) -> Result<Vec<TrailEntry>, String> {
    let mut rd = run;
    let n = decode::read_array_len(&mut rd).map_err(|e| format!("trail run header: {e}"))?;
    (0..n).map(|_| decode_line(&mut rd)).collect()
}

/// Where each line of a block lies, by chain sequence (ascending, as the block holds them),
/// found without decoding the lines' texts.
pub fn run_offsets(run: &[u8]) -> Result<Vec<(u64, std::ops::Range<usize>)>, String> {
    let mut rd = run;
    let n = decode::read_array_len(&mut rd).map_err(|e| format!("trail block header: {e}"))?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let start = run.len() - rd.len();
        let sequence = skip_line(&mut rd)?;
        out.push((sequence, start..run.len() - rd.len()));
    }
    Ok(out)
}

/// Reads past one line, returning its chain sequence.
fn skip_line(rd: &mut &[u8]) -> Result<u64, String> {
    let fields = decode::read_array_len(rd).map_err(|e| format!("trail line: {e}"))?;
    if fields != LINE_FIELDS {
        return Err(format!("trail line of {fields} fields, not {LINE_FIELDS}"));
    }
    skip_text(rd)?;
    let sequence = decode::read_int(rd).map_err(number)?;
    let _: u64 = decode::read_int(rd).map_err(number)?;
    let len = decode::read_bin_len(rd).map_err(|e| format!("trail line hash: {e}"))?;
    take(rd, len as usize)?;
    let _: i64 = decode::read_int(rd).map_err(number)?;
    for _ in 0..4 {
        skip_text(rd)?;
    }
    Ok(sequence)
}

fn skip_text(rd: &mut &[u8]) -> Result<(), String> {
    let len = decode::read_str_len(rd).map_err(|e: ValueReadError| format!("trail line: {e}"))?;
    take(rd, len as usize).map(|_| ())
}

/// One line, as a block holds it (a range `run_offsets` gave).
pub fn decode_one(mut line: &[u8]) -> Result<TrailEntry, String> {
    let entry = decode_line(&mut line)?;
    if !line.is_empty() {
        return Err("trail line with bytes after it".into());
    }
    Ok(entry)
}

/// One line of a subject's trail, as its index holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The line's chain sequence.
    pub sequence: u64,
    /// The first chain sequence of the block that holds it (its key in `proj.lines`).
    pub block: u64,
}

/// An index chunk of lines in ascending chain order, each at or after its block's start.
pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 4 * entries.len());
    put_varint(&mut out, entries.len() as u64);
    let mut before = 0;
    for e in entries {
        put_varint(&mut out, e.sequence - before);
        put_varint(&mut out, e.sequence - e.block);
        before = e.sequence;
    }
    out
}

/// How many sequences an index chunk holds, from its first varint alone.
pub fn index_len(chunk: &[u8]) -> Option<usize> {
    get_varint(&mut &chunk[..]).map(|n| n as usize)
}

pub fn decode_index(chunk: &[u8]) -> Result<Vec<IndexEntry>, String> {
    let mut rd = chunk;
    let n = get_varint(&mut rd).ok_or("trail index chunk header")?;
    let mut out = Vec::with_capacity(n.min(1 << 16) as usize);
    let mut sequence: u64 = 0;
    for _ in 0..n {
        let step = get_varint(&mut rd).ok_or("trail index chunk cut short")?;
        let back = get_varint(&mut rd).ok_or("trail index chunk cut short")?;
        sequence = sequence
            .checked_add(step)
            .ok_or("trail index chunk past the largest sequence")?;
        let block = sequence
            .checked_sub(back)
            .ok_or("trail index line before its block")?;
        out.push(IndexEntry { sequence, block });
    }
    if !rd.is_empty() {
        return Err("trail index chunk with bytes after it".into());
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_varint(rd: &mut &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = rd.split_first()?;
        *rd = rest;
        n |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b < 0x80 {
            return Some(n);
        }
    }
    None
}

fn decode_line(rd: &mut &[u8]) -> Result<TrailEntry, String> {
    let fields = decode::read_array_len(rd).map_err(|e| format!("trail line: {e}"))?;
    if fields != LINE_FIELDS {
        return Err(format!("trail line of {fields} fields, not {LINE_FIELDS}"));
    }
    let partition = text(rd)?;
    let sequence = decode::read_int(rd).map_err(number)?;
    let stream_sequence = decode::read_int(rd).map_err(number)?;
    let len = decode::read_bin_len(rd).map_err(|e| format!("trail line hash: {e}"))?;
    let hash: [u8; 32] = take(rd, len as usize)?
        .try_into()
        .map_err(|_| format!("trail line hash of {len} bytes"))?;
    let recorded_at_unix_ms = decode::read_int(rd).map_err(number)?;
    Ok(TrailEntry {
        partition,
        sequence,
        stream_sequence,
        hash: Digest(hash).to_hex(),
        recorded_at_unix_ms,
        actor: text(rd)?,
        role: text(rd)?,
        event_type: text(rd)?,
        detail: text(rd)?,
    })
}

fn text(rd: &mut &[u8]) -> Result<String, String> {
    let len = decode::read_str_len(rd).map_err(|e: ValueReadError| format!("trail line: {e}"))?;
    let bytes = take(rd, len as usize)?;
    String::from_utf8(bytes.to_vec()).map_err(|e| format!("trail line text: {e}"))
}

fn take<'a>(rd: &mut &'a [u8], len: usize) -> Result<&'a [u8], String> {
    if rd.len() < len {
        return Err("trail line cut short".into());
    }
    let (head, rest) = rd.split_at(len);
    *rd = rest;
    Ok(head)
}

fn number(e: NumValueReadError) -> String {
    format!("trail line number: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reads_back_its_lines_and_counts_them_from_its_header() {
        let hash = Digest([7; 32]);
        let lines: Vec<Vec<u8>> = (1..=20u64)
            .map(|n| {
                encode_line(&Line {
                    partition: "01",
                    sequence: n,
                    stream_sequence: 1_000 + n,
                    hash: &hash,
                    recorded_at_unix_ms: -5,
                    actor: "staff:lan",
                    role: "officer",
                    event_type: "note",
                    detail: "thăm hộ gia đình",
                })
            })
            .collect();
        let run = encode_run(lines.iter().map(Vec::as_slice));
        let read = decode_run(&run).unwrap();
        assert_eq!(read.len(), 20);
        assert_eq!(read[19].sequence, 20);
        assert_eq!(read[19].stream_sequence, 1_020);
        assert_eq!(read[0].hash, hash.to_hex());
        assert_eq!(read[0].recorded_at_unix_ms, -5);
        assert_eq!(read[0].detail, "thăm hộ gia đình");
        // A run cut anywhere inside a line is refused, never read short.
        assert!(decode_run(&run[..run.len() - 3]).is_err());
        // Each line is found by its sequence without decoding the others, and reads the same.
        let offsets = run_offsets(&run).unwrap();
        assert_eq!(offsets.len(), 20);
        assert_eq!(offsets[6].0, 7);
        assert_eq!(decode_one(&run[offsets[6].1.clone()]).unwrap(), read[6]);
        assert!(run_offsets(&run[..run.len() - 3]).is_err());
    }

    #[test]
    fn an_index_chunk_reads_back_its_sequences_and_refuses_damage() {
        let at = |sequence, block| IndexEntry { sequence, block };
        let entries = [
            at(0, 0),
            at(1, 0),
            at(127, 120),
            at(128, 128),
            at(16_383, 16_380),
            at(16_384, 16_380),
            at(9_000_000, 8_999_990),
            at(u64::MAX, u64::MAX - 3),
        ];
        let chunk = encode_index(&entries);
        assert_eq!(index_len(&chunk), Some(entries.len()));
        assert_eq!(decode_index(&chunk).unwrap(), entries);
        assert_eq!(decode_index(&encode_index(&[])).unwrap(), Vec::new());
        // Small steps take a byte each: a household's line costs ~4 B of index, not 16.
        let near = [
            at(1_000_000, 999_990),
            at(1_000_001, 999_990),
            at(1_000_100, 1_000_100),
        ];
        assert_eq!(encode_index(&near).len(), 1 + (3 + 1) + (1 + 1) + (1 + 1));
        // A line before its block's start is refused.
        assert!(decode_index(&[1, 5, 6]).is_err());
        assert!(decode_index(&chunk[..chunk.len() - 1]).is_err());
        assert!(decode_index(&[chunk.as_slice(), &[0]].concat()).is_err());
    }
}
