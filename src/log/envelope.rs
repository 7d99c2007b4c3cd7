//! Encodes a draft as the stored bytes of its `Envelope`, by reference.
//!
//! Why not build an `Envelope` and let prost encode it: that needs the draft's fields by
//! value, and the generated `Payload` is 928 bytes inline plus its heap parts. Cloning it
//! (and the actor, key, subjects) for every event, once to check the size and once to
//! encode, was about a tenth of the writer's CPU in the profile (docs/BENCH.md). This
//! writes the same bytes straight from the draft; `tests` below holds it to prost's own
//! encoding of the equivalent `Envelope`, byte for byte.
//!
//! Field order and defaults follow prost (proto3): fields in tag order, zero values and
//! empty strings left out, the actor always present, the payload oneof last.

use bytes::BufMut;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::writer::Draft;
use crate::chain::{Digest, FORMAT_VERSION};

/// Length of the encoded envelope, without encoding it.
pub fn encoded_len(draft: &Draft, sequence: u64, recorded_at_unix_ms: i64) -> usize {
    let varint = |tag: u32, v: u64| {
        if v == 0 {
            0
        } else {
            key_len(tag) + encoded_len_varint(v)
        }
    };
    let text = |tag: u32, s: &str| {
        if s.is_empty() {
            0
        } else {
            delimited_len(tag, s.len())
        }
    };
    varint(1, u64::from(FORMAT_VERSION))
        + text(2, draft.partition.as_str())
        + varint(3, sequence)
        + delimited_len(4, 32)
        + varint(5, recorded_at_unix_ms as u64)
        + delimited_len(6, draft.actor.encoded_len())
        + text(7, &draft.idempotency_key)
        + text(8, &draft.correlation_id)
        + draft
            .subjects
            .iter()
            .map(|s| delimited_len(9, s.len()))
            .sum::<usize>()
        + text(10, crate::events::type_name(&draft.payload))
        + draft
            .request_fingerprint
            .map_or(0, |_| delimited_len(11, 32))
        + draft.payload.encoded_len()
}

/// The stored bytes of the draft's envelope at `sequence` after `prev`.
pub fn encode(draft: &Draft, sequence: u64, prev: &Digest, recorded_at_unix_ms: i64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(encoded_len(draft, sequence, recorded_at_unix_ms));
    let varint = |buf: &mut Vec<u8>, tag: u32, v: u64| {
        if v != 0 {
            encode_key(tag, WireType::Varint, buf);
            encode_varint(v, buf);
        }
    };
    varint(&mut buf, 1, u64::from(FORMAT_VERSION));
    text(&mut buf, 2, draft.partition.as_str());
    varint(&mut buf, 3, sequence);
    delimited(&mut buf, 4, &prev.0);
    varint(&mut buf, 5, recorded_at_unix_ms as u64);
    encode_key(6, WireType::LengthDelimited, &mut buf);
    encode_varint(draft.actor.encoded_len() as u64, &mut buf);
    draft.actor.encode_raw(&mut buf);
    text(&mut buf, 7, &draft.idempotency_key);
    text(&mut buf, 8, &draft.correlation_id);
    for subject in &draft.subjects {
        // Repeated: every element is written, an empty one too.
        delimited(&mut buf, 9, subject.as_bytes());
    }
    text(&mut buf, 10, crate::events::type_name(&draft.payload));
    if let Some(fingerprint) = &draft.request_fingerprint {
        delimited(&mut buf, 11, &fingerprint.0);
    }
    draft.payload.encode(&mut buf);
    buf
}

fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn delimited(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

fn text(buf: &mut Vec<u8>, tag: u32, s: &str) {
    if !s.is_empty() {
        delimited(buf, tag, s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Partition;
    use crate::proto::{self, Envelope, envelope::Payload};

    /// prost's own encoding of the same envelope: the reference.
    fn reference(draft: &Draft, sequence: u64, prev: &Digest, at: i64) -> Vec<u8> {
        Envelope {
            format_version: FORMAT_VERSION,
            partition: draft.partition.to_string(),
            sequence,
            prev_hash: bytes::Bytes::copy_from_slice(&prev.0),
            recorded_at_unix_ms: at,
            actor: Some(draft.actor.clone()),
            idempotency_key: draft.idempotency_key.clone(),
            correlation_id: draft.correlation_id.clone(),
            subjects: draft.subjects.clone(),
            event_type: crate::events::type_name(&draft.payload).to_string(),
            request_fingerprint: draft
                .request_fingerprint
                .map(|f| bytes::Bytes::copy_from_slice(&f.0))
                .unwrap_or_default(),
            payload: Some(draft.payload.clone()),
        }
        .encode_to_vec()
    }

    fn draft(payload: Payload, subjects: Vec<String>, correlation: &str) -> Draft {
        Draft {
            partition: Partition::new("01").unwrap(),
            actor: proto::Actor {
                id: "staff:0001".into(),
                role: "teller".into(),
                unit: String::new(),
            },
            idempotency_key: "k-1".into(),
            correlation_id: correlation.into(),
            request_fingerprint: (correlation == "c").then_some(Digest([0x5a; 32])),
            subjects,
            payload,
        }
    }

    #[test]
    fn the_bytes_are_prosts_own_for_every_shape() {
        let drafts = [
            draft(
                Payload::Note(proto::Note {
                    text: "Xin chào".into(),
                }),
                vec!["household:0100007-000001".into()],
                "",
            ),
            draft(
                Payload::Note(proto::Note::default()),
                vec![String::new(), "loan:01-L7".into()],
                "run-9",
            ),
            draft(
                Payload::HouseholdRegistered(proto::HouseholdRegistered {
                    household_id: "0100007-000001".into(),
                    sealed_personal: vec![1u8; 300].into(),
                    ..Default::default()
                }),
                Vec::new(),
                // With a request fingerprint (field 11, between the metadata and the
                // payload).
                "c",
            ),
            draft(
                Payload::PaymentRecorded(proto::PaymentRecorded::default()),
                vec!["x".repeat(200)],
                "",
            ),
        ];
        let prev = Digest([0xab; 32]);
        for d in &drafts {
            for (sequence, at) in [
                (1, 1_767_225_600_001),
                (u64::MAX, i64::MAX),
                (0, -5),
                (300, 0),
            ] {
                let ours = encode(d, sequence, &prev, at);
                assert_eq!(
                    ours,
                    reference(d, sequence, &prev, at),
                    "{d:?} {sequence} {at}"
                );
                assert_eq!(ours.len(), encoded_len(d, sequence, at));
            }
        }
    }
}
