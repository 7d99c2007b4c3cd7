//! Frames: several consecutive events of one partition in one JetStream message
//! (docs/adr/0006-frames-several-events-per-message.md, docs/CHAIN.md section 1).
//!
//! Why: nats-server's cost is per message, not per byte. Inside an atomic batch it
//! spends ~15-20 µs per message on the 2-core machine, plus several milliseconds per
//! commit, and one stream's commits run one after another, so one event per message
//! caps the log at the server's 44-77k messages/s. A frame as large as a whole group
//! commit makes most commits one plain fenced publish, with no atomic batch at all: on
//! the same disk the server then stores ~530 frames of 300 KiB a second (~540k events/s)
//! against ~180k events/s in atomic batches of 16-event frames (ADR 0006).
//!
//! What does not change: every event is still the exact bytes of one `Envelope`, and
//! its hash covers those bytes; a frame only carries them. A message of one event stays
//! a bare envelope without the format header, exactly as logs written before frames.
//!
//! Pure functions only: the writer cuts and encodes, every reader decodes.

use std::ops::Range;

use bytes::Bytes;
use prost::Message;

use super::stream::HEADER_BYTES_MAX;
use crate::chain::EVENT_BYTES_MAX;
use crate::proto::Frame;

/// Header naming how a message's payload holds its events. Absent: the payload is one
/// envelope. `frame`: the payload is a `Frame`.
pub const HEADER_FORMAT: &str = "Ansinh-Format";
/// The one value of `Ansinh-Format` this version writes and reads.
pub const FORMAT_FRAME: &str = "frame";
/// Most events the writer puts in one message: at least as many as one group commit
/// holds (writer::BATCH_EVENTS_MAX), so that a commit is one message unless its bytes
/// need more. It also bounds what a reader holds of one message (reader.rs). A damaged
/// message still fails only its own events, and verify names the first.
pub const FRAME_EVENTS_MAX: usize = 1_024;
/// Most payload bytes the writer puts in one message: NATS's default `max_payload`
/// (1 MiB) less room for headers. A server or stream configured lower lowers it
/// (`bytes_max_for`).
pub const FRAME_BYTES_MAX: usize = 1024 * 1024 - HEADER_BYTES_MAX;
/// Bytes a frame adds around one element: a tag byte and a length varint of at most 3
/// bytes (an element holds at most EVENT_BYTES_MAX = 64 KiB).
const ELEMENT_OVERHEAD_MAX: usize = 4;

/// Why a message marked as a frame cannot be read.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The payload is not a protobuf `Frame`.
    #[error("undecodable frame: {0}")]
    Undecodable(String),
    /// A frame must carry at least one event.
    #[error("frame holds no event")]
    Empty,
    /// `Ansinh-Format` names a format this version does not know.
    #[error("unknown message format {0:?}")]
    UnknownFormat(String),
    /// More events than a writer ever puts in one message: a message of empty elements
    /// would otherwise become half a million events in every reader's read-ahead.
    #[error("frame holds {0} events, more than {FRAME_EVENTS_MAX}")]
    TooManyEvents(usize),
    /// The payload decodes, but is not the one encoding of its events the ledger writes
    /// (unknown fields, overlong lengths or tags): docs/CHAIN.md section 1.
    #[error(
        "frame not in canonical form: {bytes} bytes, where its {events} events encode to {canonical}"
    )]
    NotCanonical {
        bytes: usize,
        canonical: usize,
        events: usize,
    },
}

/// The frame payload bound for a server whose `max_payload` is `server_max_payload`
/// (0 when unknown) and a stream whose `max_msg_size` is `stream_max_message_size`
/// (negative or 0: no limit): FRAME_BYTES_MAX, or less so that a frame and its headers
/// fit both. A stream created before 2026-11-24 allows 68 KiB, so frames there
/// stay that small. An event alone is still sent whole: if it does not fit, the server
/// refuses it, as it would without frames.
pub fn bytes_max_for(server_max_payload: usize, stream_max_message_size: i32) -> usize {
    let within = |limit: usize| limit.saturating_sub(HEADER_BYTES_MAX);
    let mut max = FRAME_BYTES_MAX;
    if server_max_payload > 0 {
        max = max.min(within(server_max_payload));
    }
    if let Ok(limit @ 1..) = usize::try_from(stream_max_message_size) {
        max = max.min(within(limit));
    }
    max
}

/// Cuts a batch of events, given their encoded sizes in chain order, into frames:
/// consecutive runs of at most FRAME_EVENTS_MAX events whose frame payload stays within
/// `bytes_max`. Every range is non-empty; together they cover `0..sizes.len()`.
pub fn cut(sizes: &[usize], bytes_max: usize) -> Vec<Range<usize>> {
    let mut frames = Vec::with_capacity(sizes.len().div_ceil(FRAME_EVENTS_MAX));
    let mut start = 0;
    let mut bytes = 0;
    for (i, size) in sizes.iter().enumerate() {
        debug_assert!(*size <= EVENT_BYTES_MAX, "validate() bounds every event");
        let grown = bytes + size + ELEMENT_OVERHEAD_MAX;
        if i > start && (i - start == FRAME_EVENTS_MAX || grown > bytes_max) {
            frames.push(start..i);
            start = i;
            bytes = size + ELEMENT_OVERHEAD_MAX;
        } else {
            bytes = grown;
        }
    }
    if start < sizes.len() {
        frames.push(start..sizes.len());
    }
    frames
}

/// The payload of a message holding `events` (each the exact bytes of one envelope),
/// and whether it must be marked as a frame. One event is stored bare, as before frames.
pub fn encode(events: &[Bytes]) -> (Bytes, bool) {
    match events {
        [one] => (one.clone(), false),
        _ => {
            let frame = Frame {
                events: events.to_vec(), // clones of Bytes share the buffers
            };
            (Bytes::from(frame.encode_to_vec()), true)
        }
    }
}

/// The events a message holds, given its `Ansinh-Format` header. The elements share
/// the payload's buffer: nothing is copied or re-encoded.
pub fn decode(payload: &Bytes, format: Option<&str>) -> Result<Vec<Bytes>, FrameError> {
    match format {
        None => Ok(vec![payload.clone()]),
        Some(FORMAT_FRAME) => {
            let frame = Frame::decode(payload.clone())
                .map_err(|e| FrameError::Undecodable(e.to_string()))?;
            if frame.events.is_empty() {
                return Err(FrameError::Empty);
            }
            if frame.events.len() > FRAME_EVENTS_MAX {
                return Err(FrameError::TooManyEvents(frame.events.len()));
            }
            // Canonical only: a conforming decoder also accepts unknown fields between
            // the elements and overlong length varints, so one list of events would
            // have many payloads, and the spec promises one. Comparing lengths is
            // enough: every other encoding of the same elements adds bytes (a tag of
            // one byte, minimal varints and nothing else is the shortest, and the only
            // one of that length), so equal lengths mean equal bytes. It costs a sum
            // over the elements, no copy: verify reads ~1M events a second.
            let canonical = frame.encoded_len();
            if canonical != payload.len() {
                return Err(FrameError::NotCanonical {
                    bytes: payload.len(),
                    canonical,
                    events: frame.events.len(),
                });
            }
            debug_assert_eq!(
                frame.encode_to_vec(),
                payload.as_ref(),
                "equal lengths, equal bytes"
            );
            Ok(frame.events)
        }
        Some(other) => Err(FrameError::UnknownFormat(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_bounds_events_and_bytes_and_covers_everything() {
        assert!(cut(&[], FRAME_BYTES_MAX).is_empty());
        assert_eq!(cut(&[300], FRAME_BYTES_MAX), vec![0..1]);
        assert_eq!(
            cut(&[300; 2 * FRAME_EVENTS_MAX + 1], FRAME_BYTES_MAX),
            vec![
                0..FRAME_EVENTS_MAX,
                FRAME_EVENTS_MAX..2 * FRAME_EVENTS_MAX,
                2 * FRAME_EVENTS_MAX..2 * FRAME_EVENTS_MAX + 1
            ]
        );
        // Sixteen events of 64 KiB cannot share 1 MiB with their overhead and the
        // headers' room: 15 + 1.
        let big = EVENT_BYTES_MAX;
        assert_eq!(cut(&[big; 16], FRAME_BYTES_MAX), vec![0..15, 15..16]);
        // A server with a small max_payload: 1,000-byte events, 3 to a 4 KiB frame.
        let small = bytes_max_for(8 * 1024, -1);
        assert_eq!(small, 4 * 1024);
        assert_eq!(bytes_max_for(2 * 1024 * 1024, 8 * 1024), small);
        assert_eq!(cut(&[1000; 7], small), vec![0..4, 4..7]);
        // An event larger than the bound still goes, alone.
        assert_eq!(cut(&[10, 9000, 10], small), vec![0..1, 1..2, 2..3]);
        assert_eq!(bytes_max_for(0, -1), FRAME_BYTES_MAX);
        assert_eq!(bytes_max_for(0, 0), FRAME_BYTES_MAX);
        assert_eq!(bytes_max_for(8 * 1024 * 1024, 1024 * 1024), FRAME_BYTES_MAX);
        // A stream created before frames held whole commits (68 KiB): one 64 KiB event fits alone.
        let old_stream = bytes_max_for(1024 * 1024, (64 + 4) * 1024);
        assert_eq!(old_stream, EVENT_BYTES_MAX);
        assert_eq!(cut(&[big; 2], old_stream), vec![0..1, 1..2]);
        let sizes: Vec<usize> = (0..200).map(|i| (i * 7919) % big).collect();
        let frames = cut(&sizes, FRAME_BYTES_MAX);
        let mut next = 0;
        for f in &frames {
            assert_eq!(f.start, next, "contiguous");
            assert!(!f.is_empty() && f.len() <= FRAME_EVENTS_MAX);
            let (payload, _) = encode(
                &sizes[f.clone()]
                    .iter()
                    .map(|n| Bytes::from(vec![7u8; *n]))
                    .collect::<Vec<_>>(),
            );
            assert!(payload.len() <= FRAME_BYTES_MAX, "{} bytes", payload.len());
            next = f.end;
        }
        assert_eq!(next, sizes.len());
    }

    #[test]
    fn one_event_stays_bare_and_frames_round_trip_without_copies() {
        let a = Bytes::from_static(b"\x08\x01first");
        let (bare, framed) = encode(std::slice::from_ref(&a));
        assert!(!framed);
        assert_eq!(bare, a);
        assert_eq!(decode(&bare, None).unwrap(), vec![a.clone()]);

        let b = Bytes::from_static(b"\x08\x01second");
        let (payload, framed) = encode(&[a.clone(), b.clone()]);
        assert!(framed);
        let events = decode(&payload, Some(FORMAT_FRAME)).unwrap();
        assert_eq!(events, vec![a, b]);
        // The elements point into the message's own buffer.
        let range = payload.as_ptr_range();
        assert!(range.contains(&events[1].as_ptr()));
    }

    #[test]
    fn only_the_canonical_encoding_of_a_frame_is_read() {
        let (payload, _) = encode(&[
            Bytes::from_static(b"\x08\x01first"),
            Bytes::from_static(b"\x08\x01second"),
        ]);
        let first = 2 + 7; // tag, length, "\x08\x01first"
        let edited = |at: usize, remove: usize, insert: &[u8]| {
            let mut p = payload.to_vec();
            p.splice(at..at + remove, insert.iter().copied());
            Bytes::from(p)
        };
        for (case, forged) in [
            (
                "unknown varint field between",
                edited(first, 0, b"\x10\x00"),
            ),
            (
                "unknown bytes field at the end",
                edited(payload.len(), 0, b"\x1a\x01z"),
            ),
            ("overlong length", edited(1, 1, b"\x87\x00")),
            ("overlong tag", edited(0, 1, b"\x8a\x00")),
        ] {
            // A conforming decoder takes each, with the same events ...
            assert_eq!(
                Frame::decode(forged.clone()).unwrap().events,
                Frame::decode(payload.clone()).unwrap().events,
                "{case}"
            );
            // ... and the ledger's reader refuses each.
            assert!(
                matches!(
                    decode(&forged, Some(FORMAT_FRAME)),
                    Err(FrameError::NotCanonical { canonical, .. }) if canonical == payload.len()
                ),
                "{case}"
            );
        }
        assert!(decode(&payload, Some(FORMAT_FRAME)).is_ok());
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        assert_eq!(
            decode(&Bytes::new(), Some(FORMAT_FRAME)),
            Err(FrameError::Empty)
        );
        assert!(matches!(
            decode(&Bytes::from_static(b"\x0a\x05ab"), Some(FORMAT_FRAME)),
            Err(FrameError::Undecodable(_))
        ));
        // A bare envelope (field 1 is a varint) is not a frame.
        assert!(matches!(
            decode(&Bytes::from_static(b"\x08\x01"), Some(FORMAT_FRAME)),
            Err(FrameError::Undecodable(_))
        ));
        assert_eq!(
            decode(&Bytes::from_static(b"x"), Some("zip")),
            Err(FrameError::UnknownFormat("zip".into()))
        );
        // Empty elements cost two bytes each: a message of them is refused whole past
        // the writer's bound, before any reader turns it into events.
        let empties = |n: usize| Bytes::from(b"\x0a\x00".repeat(n));
        assert_eq!(
            decode(&empties(FRAME_EVENTS_MAX), Some(FORMAT_FRAME))
                .unwrap()
                .len(),
            FRAME_EVENTS_MAX
        );
        assert_eq!(
            decode(&empties(FRAME_EVENTS_MAX + 1), Some(FORMAT_FRAME)),
            Err(FrameError::TooManyEvents(FRAME_EVENTS_MAX + 1))
        );
    }
}
