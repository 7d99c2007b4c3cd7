//! How the audit trail's lines are encoded: a subject's lines from one batch as one run
//! (stored by `trail_store`), each line a MessagePack array without field names, its
//! hash as 32 raw bytes.
//!
//! Why not the views' encoding (MessagePack with field names, the hash in hex): the trail
//! gets about one line an event, so its bytes are most of what a rebuild writes. A line
//! with names and a hex hash took ~250 B, this one ~140 B (ADR 0014).
//!
//! A line: `[partition, sequence, stream_sequence, hash (bin 32), recorded_at_unix_ms,
//! actor, role, event_type, detail]`. A run: a MessagePack array of lines.

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
    let mut out = Vec::new();
    encode_line_into(&mut out, line);
    out
}

/// `encode_line`, appended to `out` (the projector encodes a batch's lines into one
/// buffer).
pub fn encode_line_into(out: &mut Vec<u8>, line: &Line<'_>) {
    out.reserve(
        64 + line.partition.len()
            + line.actor.len()
            + line.role.len()
            + line.event_type.len()
            + line.detail.len(),
    );
    // Writing into a Vec cannot fail.
    let _ = encode::write_array_len(out, LINE_FIELDS);
    let _ = encode::write_str(out, line.partition);
    let _ = encode::write_uint(out, line.sequence);
    let _ = encode::write_uint(out, line.stream_sequence);
    let _ = encode::write_bin(out, &line.hash.0);
    let _ = encode::write_sint(out, line.recorded_at_unix_ms);
    for text in [line.actor, line.role, line.event_type, line.detail] {
        let _ = encode::write_str(out, text);
    }
}

/// Appends a run of encoded lines to `out`: the array header, then the lines as they are.
pub fn write_run<'a>(out: &mut Vec<u8>, lines: impl ExactSizeIterator<Item = &'a [u8]>) {
    let _ = encode::write_array_len(out, lines.len() as u32);
    for line in lines {
        out.extend_from_slice(line);
    }
}

/// Every line of a run.
pub fn decode_run(run: &[u8]) -> Result<Vec<TrailEntry>, String> {
    let mut rd = run;
    let n = decode::read_array_len(&mut rd).map_err(|e| format!("trail run header: {e}"))?;
    (0..n).map(|_| decode_line(&mut rd)).collect()
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
        let mut run = Vec::new();
        write_run(&mut run, lines.iter().map(Vec::as_slice));
        let read = decode_run(&run).unwrap();
        assert_eq!(read.len(), 20);
        assert_eq!(read[19].sequence, 20);
        assert_eq!(read[19].stream_sequence, 1_020);
        assert_eq!(read[0].hash, hash.to_hex());
        assert_eq!(read[0].recorded_at_unix_ms, -5);
        assert_eq!(read[0].detail, "thăm hộ gia đình");
        // A run cut anywhere inside a line is refused, never read short.
        assert!(decode_run(&run[..run.len() - 3]).is_err());
    }
}
