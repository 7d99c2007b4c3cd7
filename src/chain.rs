//! The chain format: how one partition's events are hashed and linked.
//!
//! Pure functions only. docs/CHAIN.md is the normative text for auditors; this file
//! must agree with it byte for byte (tests/chain_vectors.rs checks the vectors there).
//!
//! **Invariant:** a hash is always computed over the exact bytes stored in the log,
//! never over a re-encoding, so payloads unknown to this build still verify.

use prost::Message;

use crate::proto::Envelope;

/// Domain-separation prefix of an event hash (ASCII, then one zero byte).
pub const EVENT_HASH_DOMAIN: &[u8] = b"ansinh/v1/event\0";
/// Domain of `message_hash`: a whole stored message, as an operator's exclusion names it.
pub const MESSAGE_HASH_DOMAIN: &[u8] = b"ansinh/v1/message\0";
/// Domain of `run_hash_next`: the messages one exclusion passes over at once.
pub const EXCLUDED_RUN_DOMAIN: &[u8] = b"ansinh/v1/excluded-run\0";
/// Domain-separation prefix of a partition's genesis value.
pub const GENESIS_DOMAIN: &[u8] = b"ansinh/v1/genesis\0";
/// The only envelope format this build writes and verifies.
pub const FORMAT_VERSION: u32 = 1;
/// Largest stored envelope accepted, in bytes. Events are small records; anything
/// larger is a bug or an attack, and must not reach the log.
pub const EVENT_BYTES_MAX: usize = 64 * 1024;
/// Longest partition name: partitions are province codes, but keep headroom.
pub const PARTITION_CHARS_MAX: usize = 16;

/// A 32-byte BLAKE3 hash. Equality is constant-time (it goes through `blake3::Hash`).
#[derive(Clone, Copy, Debug, Eq)]
pub struct Digest(pub [u8; 32]);

impl std::hash::Hash for Digest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for Digest {
    fn eq(&self, other: &Self) -> bool {
        blake3::Hash::from_bytes(self.0) == blake3::Hash::from_bytes(other.0)
    }
}

impl Digest {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Strict parse: exactly 64 lowercase hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Self(out))
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A validated partition name: 1 to 16 of `[A-Za-z0-9_-]`, so it is safe as a NATS
/// subject token.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PartitionError {
    /// The caller sent no partition; ask for one.
    #[error("partition name is empty")]
    Empty,
    /// Longer than PARTITION_CHARS_MAX; a typo or abuse, refuse it.
    #[error("partition name has {0} characters, more than {PARTITION_CHARS_MAX}")]
    TooLong(usize),
    /// Contains a character that cannot stand in a NATS subject token.
    #[error("partition name {0:?} may hold only A-Z, a-z, 0-9, '_' and '-'")]
    BadCharacter(String),
}

impl Partition {
    pub fn new(name: &str) -> Result<Self, PartitionError> {
        if name.is_empty() {
            return Err(PartitionError::Empty);
        }
        if name.len() > PARTITION_CHARS_MAX {
            return Err(PartitionError::TooLong(name.len()));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(PartitionError::BadCharacter(name.to_string()));
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `BLAKE3(MESSAGE_HASH_DOMAIN || payload)`: the payload of one stream message as
/// stored, whatever it holds (docs/CHAIN.md, section 4a).
pub fn message_hash(payload: &[u8]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(MESSAGE_HASH_DOMAIN);
    hasher.update(payload);
    Digest(*hasher.finalize().as_bytes())
}

/// A run of held messages' hash, extended by one message: `BLAKE3(EXCLUDED_RUN_DOMAIN ||
/// previous || be64(stream_sequence) || message_hash)`; the empty run's is 32 zero bytes
/// (docs/CHAIN.md, section 4a). Chained rather than one hasher so that a reader can store
/// it between reads: holding any number of messages costs the same 32 bytes.
pub fn run_hash_next(previous: &Digest, stream_sequence: u64, message_hash: &Digest) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(EXCLUDED_RUN_DOMAIN);
    hasher.update(&previous.0);
    hasher.update(&stream_sequence.to_be_bytes());
    hasher.update(&message_hash.0);
    Digest(*hasher.finalize().as_bytes())
}

/// `BLAKE3(EVENT_HASH_DOMAIN || stored_envelope_bytes)`.
pub fn event_hash(stored: &[u8]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(EVENT_HASH_DOMAIN);
    hasher.update(stored);
    Digest(*hasher.finalize().as_bytes())
}

/// `BLAKE3(GENESIS_DOMAIN || utf8(partition))`: the `prev_hash` of sequence 1.
pub fn genesis(partition: &Partition) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(GENESIS_DOMAIN);
    hasher.update(partition.as_str().as_bytes());
    Digest(*hasher.finalize().as_bytes())
}

/// Where a partition's chain stands: the last event's sequence and hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub partition: Partition,
    /// Sequence of the last event in the partition; 0 when empty.
    pub sequence: u64,
    /// Hash of the last event; the genesis value when empty.
    pub hash: Digest,
}

impl ChainHead {
    pub fn genesis(partition: Partition) -> Self {
        let hash = genesis(&partition);
        Self {
            partition,
            sequence: 0,
            hash,
        }
    }
}

/// What is wrong with one stored event. Found by the verifier and by every reader
/// (paired checks: the writer checks before publishing, readers again after reading).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainBreak {
    /// The bytes are not an Envelope: corruption or a forged message.
    #[error("undecodable envelope: {0}")]
    Undecodable(String),
    /// Larger than EVENT_BYTES_MAX.
    #[error("envelope of {0} bytes exceeds {EVENT_BYTES_MAX}")]
    Oversized(usize),
    /// Written by a format this verifier does not know.
    #[error("unknown format version {0}")]
    UnknownFormat(u32),
    /// The envelope names another partition than the chain it sits in.
    #[error("envelope names partition {found:?}, expected {expected:?}")]
    WrongPartition { expected: String, found: String },
    /// A sequence is missing or repeated.
    #[error("sequence gap: expected {expected}, found {found}")]
    Gap { expected: u64, found: u64 },
    /// The event does not link to its predecessor.
    #[error("wrong previous hash: expected {expected}, found {found}")]
    WrongPrevHash { expected: String, found: String },
    /// The message cannot be split into events (a damaged or forged frame).
    #[error("unreadable message: {0}")]
    Message(String),
    /// The hash carried in the message header differs from the recomputed one.
    #[error("header hash {header} differs from recomputed {computed}")]
    HashMismatch { header: String, computed: String },
    /// The `Ansinh-Seq` header differs from the sequence of the message's last event.
    #[error("header sequence {header:?} differs from the event's sequence {found}")]
    SequenceMismatch { header: String, found: u64 },
    /// An operator's exclusion names a message that did not break the chain (stream
    /// sequence): an exclusion can never pass over a good event.
    #[error("an exclusion names the message at stream sequence {0}, which did not break the chain")]
    ExclusionOfNothing(u64),
    /// An event that continues the chain while the message at this stream sequence is
    /// held, and is not the exclusion that names it: the ledger appends nothing else while
    /// a message is held, so it is not the ledger's.
    #[error(
        "continues the chain while the message at stream sequence {0} is held, and is not its exclusion"
    )]
    PastHeld(u64),
    /// An event that continues the chain but that the ledger never writes: an exclusion no
    /// ledger key signed, or a key rotation in the key partition that the key before it
    /// did not sign (docs/CHAIN.md, section 4a). Held like a foreign message, so the
    /// operator's exclusion can pass over it.
    #[error("not the ledger's: {0}")]
    NotTheLedgers(String),
    /// A break recorded earlier, as its words (a reader's stored state).
    #[error("{0}")]
    Recorded(String),
}

/// Checks that `stored` is the next event after `head`, and returns the new head with
/// the decoded envelope. `header_hash` is the `Ansinh-Hash` header, if present.
pub fn check_next(
    head: &ChainHead,
    stored: &[u8],
    header_hash: Option<&str>,
) -> Result<(ChainHead, Envelope), ChainBreak> {
    check_next_hashed(head, stored, event_hash(stored), header_hash)
}

/// `check_next` for bytes whose `event_hash` was already computed from them (readers
/// hash in their read-ahead task, so checking and hashing use both cores).
/// `stored` may be `bytes::Bytes`: the envelope's bytes fields are then slices of it, not
/// copies (a reader's events are).
pub fn check_next_hashed(
    head: &ChainHead,
    stored: impl bytes::Buf,
    computed: Digest,
    header_hash: Option<&str>,
) -> Result<(ChainHead, Envelope), ChainBreak> {
    if stored.remaining() > EVENT_BYTES_MAX {
        return Err(ChainBreak::Oversized(stored.remaining()));
    }
    let envelope = Envelope::decode(stored).map_err(|e| ChainBreak::Undecodable(e.to_string()))?;
    if envelope.format_version != FORMAT_VERSION {
        return Err(ChainBreak::UnknownFormat(envelope.format_version));
    }
    if envelope.partition != head.partition.as_str() {
        return Err(ChainBreak::WrongPartition {
            expected: head.partition.to_string(),
            found: envelope.partition.clone(),
        });
    }
    let expected = head.sequence + 1;
    if envelope.sequence != expected {
        return Err(ChainBreak::Gap {
            expected,
            found: envelope.sequence,
        });
    }
    match Digest::from_slice(&envelope.prev_hash) {
        Some(prev) if prev == head.hash => {}
        _ => {
            return Err(ChainBreak::WrongPrevHash {
                expected: head.hash.to_hex(),
                found: hex::encode(&envelope.prev_hash),
            });
        }
    }
    if let Some(header) = header_hash {
        if Digest::from_hex(header) != Some(computed) {
            return Err(ChainBreak::HashMismatch {
                header: header.to_string(),
                computed: computed.to_hex(),
            });
        }
    }
    let next = ChainHead {
        partition: head.partition.clone(),
        sequence: expected,
        hash: computed,
    };
    Ok((next, envelope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_are_checked() {
        assert_eq!(Partition::new(""), Err(PartitionError::Empty));
        assert!(matches!(
            Partition::new("a.b"),
            Err(PartitionError::BadCharacter(_))
        ));
        assert!(matches!(
            Partition::new(&"9".repeat(17)),
            Err(PartitionError::TooLong(17))
        ));
        assert!(Partition::new("01").is_ok());
    }

    #[test]
    fn digest_hex_is_strict() {
        let d = event_hash(b"x");
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Digest::from_hex(&d.to_hex().to_uppercase()), None);
        assert_eq!(Digest::from_hex("00"), None);
    }
}
