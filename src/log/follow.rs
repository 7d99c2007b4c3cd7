//! One partition's chain, followed as every reader of the stream follows it
//! (docs/CHAIN.md, sections 4 and 4a): each event must continue the head. A message that
//! does not (a foreign message, a damaged one) is held; the chain may go on past it only
//! through the operator's exclusion (`MessageExcluded`), recorded as the next event of the
//! chain: of exactly the oldest held message, or of the whole run held, named by its
//! first and last stream sequences, its count and a hash over every message in it. The
//! verifier, the writer, the projector and the checkpointer all follow with this one
//! type, so none of them passes over a message another would stop at, and nothing is
//! ever deleted. An exclusion is taken only if it is the ledger's: signed by a ledger key
//! of the key history stored before it (`Keys`), so a forged one is held like a foreign
//! message and the operator's exclusion of the run passes over it too. Every reader can
//! know that history (it is in the same stream, before the exclusion), so every reader
//! judges, and all stop at the same place.
//!
//! In the key partition (`KEYS_PARTITION`) the chain itself shows what is the ledger's:
//! a key rotation must be signed by the key before it (`KeyRing::apply`). A follower of
//! that partition keeps the key history its chain registered and holds a rotation that
//! history refuses (`ChainBreak::NotTheLedgers`), before it is taken: so a forged
//! rotation that continues the chain is held like a foreign message, and the operator's
//! exclusion passes over it, instead of every reader of the key history failing on it
//! for good.

use crate::audit::checkpoint::keys::KeyRing;
use crate::audit::checkpoint::stream::KEYS_PARTITION;
use crate::chain::{ChainBreak, ChainHead, Digest, run_hash_next};
use crate::log::RawEvent;
use crate::proto::{Envelope, LedgerKeyRotated, MessageExcluded, envelope::Payload};

/// Held messages listed one by one, oldest first; past these a reader only counts and
/// hashes them. Whoever can publish on the subject can send any number, and the stream
/// denies delete: a reader that stopped at some count would stop the partition for
/// ever, so the run is kept in constant memory and one exclusion names it all. An
/// exclusion of one message at a time (the first form) needs the list complete.
pub const HELD_LISTED_MAX: usize = 16;

/// A message that broke the chain, waiting for the operator's exclusion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub stream_sequence: u64,
    pub message_hash: Digest,
    /// The partition sequence the chain expected there.
    pub expected_sequence: u64,
    pub cause: ChainBreak,
}

/// A run of messages as an exclusion names it: how many, the last one's stream
/// sequence and `run_hash_next` over all of them. Readers keep one for what they hold;
/// the operator's command makes one of the messages it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub count: u64,
    pub last_stream_sequence: u64,
    pub run_hash: Digest,
}

impl Default for Run {
    fn default() -> Self {
        Self {
            count: 0,
            last_stream_sequence: 0,
            run_hash: Digest([0; 32]),
        }
    }
}

impl Run {
    /// The run with the message at `stream_sequence`, of hash `message_hash`, after it.
    pub fn take(&mut self, stream_sequence: u64, message_hash: &Digest) {
        self.run_hash = run_hash_next(&self.run_hash, stream_sequence, message_hash);
        self.last_stream_sequence = stream_sequence;
        self.count += 1;
    }
}

/// Every message held since the partition's last good event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    /// The oldest ones, at most `HELD_LISTED_MAX`.
    listed: Vec<Held>,
    /// All of them.
    run: Run,
}

/// What an exclusion passed over: the run's first message (why it broke the chain), its
/// last one and how many.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excluded {
    pub first: Held,
    pub through_stream_sequence: u64,
    pub count: u64,
}

impl Holding {
    /// As stored: the listed messages and the run's count, last stream sequence and hash.
    /// None when they do not agree (a list longer than the limit or than the count, or a
    /// complete list whose hash is another).
    pub fn from_parts(
        listed: Vec<Held>,
        count: u64,
        last_stream_sequence: u64,
        run_hash: Digest,
    ) -> Option<Self> {
        let complete = listed.len() as u64 == count;
        let holding = Self {
            listed,
            run: Run {
                count,
                last_stream_sequence,
                run_hash,
            },
        };
        let sound = holding.listed.len() <= HELD_LISTED_MAX
            && holding.listed.len() as u64 <= count
            && (count == 0) == holding.listed.is_empty()
            && (!complete || Self::of_list(holding.listed.clone()) == holding);
        sound.then_some(holding)
    }

    /// A complete list (at most `HELD_LISTED_MAX`), as readers stored it before runs were
    /// counted.
    pub fn of_list(listed: Vec<Held>) -> Self {
        let mut holding = Self::default();
        for held in listed {
            holding.hold(held);
        }
        holding
    }

    pub fn is_empty(&self) -> bool {
        self.run.count == 0
    }

    /// The oldest held message: where a reader stops while nothing excludes it.
    pub fn first(&self) -> Option<&Held> {
        self.listed.first()
    }

    /// The oldest held messages, at most `HELD_LISTED_MAX`.
    pub fn listed(&self) -> &[Held] {
        &self.listed
    }

    pub fn count(&self) -> u64 {
        self.run.count
    }

    pub fn last_stream_sequence(&self) -> u64 {
        self.run.last_stream_sequence
    }

    pub fn run_hash(&self) -> Digest {
        self.run.run_hash
    }

    fn hold(&mut self, held: Held) {
        self.run.take(held.stream_sequence, &held.message_hash);
        if self.listed.len() < HELD_LISTED_MAX {
            self.listed.push(held);
        }
    }

    /// Whether `x` excludes what is held: the oldest message alone (while every held
    /// message is listed), or the whole run. It can never pass over a good event (that
    /// one is in the chain) nor a message held after the ones it names.
    pub fn admits(&self, x: &MessageExcluded) -> bool {
        let Some(first) = self.listed.first() else {
            return false;
        };
        let names_first = x.stream_sequence == first.stream_sequence
            && x.message_hash[..] == first.message_hash.0[..];
        if x.message_count == 0 {
            return names_first && self.run.count as usize <= HELD_LISTED_MAX;
        }
        names_first
            && x.message_count == self.run.count
            && x.through_stream_sequence == self.run.last_stream_sequence
            && x.run_hash[..] == self.run.run_hash.0[..]
    }

    /// Takes out what `x`, which `admits` let in, excludes.
    pub fn exclude(&mut self, x: &MessageExcluded) -> Excluded {
        if x.message_count == 0 {
            let first = self.listed.remove(0);
            let through_stream_sequence = first.stream_sequence;
            *self = Self::of_list(std::mem::take(&mut self.listed));
            return Excluded {
                first,
                through_stream_sequence,
                count: 1,
            };
        }
        let all = std::mem::take(self);
        Excluded {
            first: all
                .listed
                .into_iter()
                .next()
                .expect("admitted: something held"),
            through_stream_sequence: all.run.last_stream_sequence,
            count: all.run.count,
        }
    }
}

/// Where and why a partition's chain cannot be followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    pub stream_sequence: u64,
    pub expected_sequence: u64,
    pub cause: ChainBreak,
}

impl From<&Held> for Broken {
    fn from(h: &Held) -> Self {
        Broken {
            stream_sequence: h.stream_sequence,
            expected_sequence: h.expected_sequence,
            cause: h.cause.clone(),
        }
    }
}

/// What one event did to the chain.
// Returned by value and taken apart at once, once per event read: boxing the envelope
// would add an allocation per event to every reader (verify reads ~1M events a second).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step {
    /// The event continues the chain (`excluded`: it is the operator's exclusion of what
    /// it names).
    Event {
        envelope: Envelope,
        excluded: Option<Excluded>,
    },
    /// The event's message broke the chain: held until an exclusion names it.
    Held,
    /// The event is an exclusion that names what is held, and the follower was not given
    /// the key history to judge it (`Keys::NotRead`): nothing changed; read the history
    /// and follow the event again.
    KeysNeeded,
}

/// The ledger's key history as a follower judges an exclusion by (docs/CHAIN.md, section
/// 4a): the key ring and the stream sequence of each key's event, in order.
#[derive(Clone, Copy, Debug)]
pub enum Keys<'a> {
    Stored {
        ring: &'a KeyRing,
        stored_at: &'a [u64],
    },
    /// Not read: a reader that reads it only once an exclusion needs it.
    NotRead,
}

/// Whether an exclusion is the ledger's.
enum Judged {
    Ledgers,
    Not(String),
    KeysNeeded,
}

/// What one event would do, as `Follower::check` found it.
// Like `Step`: returned by value once per event read, so the envelope is not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Checked {
    Event {
        next: ChainHead,
        envelope: Envelope,
        /// It is the operator's exclusion of held messages (`Holding::admits`).
        excludes: bool,
    },
    /// The event's message breaks the chain and is held from now on.
    Held(Held),
    /// The rest of a message already held.
    HeldAlready,
    /// As `Step::KeysNeeded`.
    KeysNeeded,
}

/// A partition's head and the messages held since its last good event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Follower {
    pub head: ChainHead,
    held: Holding,
    /// Of the key partition only: the key history its chain registered up to `head`,
    /// when this follower knows it (from genesis, or handed over on resuming).
    keys: Option<KeyRing>,
}

/// Whether `partition`'s rotations are judged against its own key history.
pub fn is_key_history(head: &ChainHead) -> bool {
    head.partition.as_str() == KEYS_PARTITION
}

impl Follower {
    pub fn new(head: ChainHead) -> Self {
        Self::resume(head, Holding::default())
    }

    /// A follower resumed from a stored head and the messages it held then. Of the key
    /// partition past its genesis it does not know the key history, and holds every
    /// rotation: a reader that may meet one resumes with `resume_with_keys`.
    pub fn resume(head: ChainHead, held: Holding) -> Self {
        let keys = (is_key_history(&head) && head.sequence == 0).then(KeyRing::default);
        Self { head, held, keys }
    }

    /// `resume`, with the key history the chain registered up to `head` (of the key
    /// partition; ignored for another).
    pub fn resume_with_keys(head: ChainHead, held: Holding, keys: Option<KeyRing>) -> Self {
        let keys = if is_key_history(&head) {
            keys.or_else(|| (head.sequence == 0).then(KeyRing::default))
        } else {
            None
        };
        Self { head, held, keys }
    }

    /// The messages held.
    pub fn held(&self) -> &Holding {
        &self.held
    }

    /// Of the key partition: the key history the chain registered up to the head, when
    /// known.
    pub fn key_ring(&self) -> Option<&KeyRing> {
        self.keys.as_ref()
    }

    /// Why `rotation`, continuing the chain at `sequence`, is not the ledger's: in the
    /// key partition, a rotation the key history up to the head refuses. None elsewhere
    /// (the ledger writes no rotation there, and no reader takes one as a key).
    fn refuses_rotation(
        &self,
        rotation: &LedgerKeyRotated,
        sequence: u64,
        recorded_at_unix_ms: i64,
    ) -> Option<String> {
        if !is_key_history(&self.head) {
            return None;
        }
        let Some(ring) = &self.keys else {
            return Some("the key history before it is not known to this reader".into());
        };
        let mut trial = ring.clone();
        trial
            .apply(rotation, sequence, recorded_at_unix_ms)
            .err()
            .map(|e| format!("key rotation refused: {e}"))
    }

    /// Takes one event, in stream order, of this partition. Every event is taken: one
    /// that cannot continue the chain is held (`Step::Held`), and only `finish` says
    /// the chain stops at what is still held. `keys` judges exclusions (in the key
    /// partition its own history does).
    pub fn follow(&mut self, event: &RawEvent, keys: Keys<'_>) -> Step {
        let checked = self.check(event, keys);
        self.accept(checked)
    }

    /// Whether the exclusion `x`, recorded at `recorded_at_unix_ms` and stored at
    /// `stream_sequence`, is signed by a ledger key of the history stored before it.
    fn judge_exclusion(
        &self,
        x: &MessageExcluded,
        stream_sequence: u64,
        recorded_at_unix_ms: i64,
        keys: Keys<'_>,
    ) -> Judged {
        let signer = if is_key_history(&self.head) {
            // The key partition's own history is the one stored before the event.
            match &self.keys {
                Some(ring) => ring.signer(&x.key_id, recorded_at_unix_ms),
                None => {
                    return Judged::Not(
                        "the key history before it is not known to this reader".into(),
                    );
                }
            }
        } else {
            match keys {
                Keys::Stored { ring, stored_at } => {
                    ring.signer_before(stored_at, &x.key_id, recorded_at_unix_ms, stream_sequence)
                }
                Keys::NotRead => return Judged::KeysNeeded,
            }
        };
        let verified = signer.map_err(|e| e.to_string()).and_then(|key| {
            crate::audit::checkpoint::sign::verify_exclusion(
                &key.public_key,
                self.head.partition.as_str(),
                x,
            )
            .map_err(|e| e.to_string())
        });
        match verified {
            Ok(()) => Judged::Ledgers,
            Err(e) => Judged::Not(format!("an exclusion no ledger key signed: {e}")),
        }
    }

    /// What `event` would do to the chain, changing nothing: a reader that must finish
    /// its own work on the event before the head moves (the projector) checks first and
    /// `accept`s after.
    pub fn check(&self, event: &RawEvent, keys: Keys<'_>) -> Checked {
        // The rest of a message already held (a frame) is held with it, whatever it holds.
        if !self.held.is_empty() && self.held.last_stream_sequence() == event.stream_sequence {
            return Checked::HeldAlready;
        }
        let hold = |cause| {
            Checked::Held(Held {
                stream_sequence: event.stream_sequence,
                message_hash: crate::chain::message_hash(&event.message),
                expected_sequence: self.head.sequence + 1,
                cause,
            })
        };
        match event.check_next(&self.head) {
            Ok((next, envelope)) => {
                let exclusion = match &envelope.payload {
                    Some(Payload::MessageExcluded(x)) => Some(x),
                    _ => None,
                };
                let excludes = match (self.held.first(), exclusion) {
                    (None, None) => {
                        if let Some(Payload::LedgerKeyRotated(r)) = &envelope.payload {
                            let refused = self.refuses_rotation(
                                r,
                                next.sequence,
                                envelope.recorded_at_unix_ms,
                            );
                            if let Some(reason) = refused {
                                return hold(ChainBreak::NotTheLedgers(reason));
                            }
                        }
                        false
                    }
                    (Some(_), Some(x)) if self.held.admits(x) => {
                        // Its signature too: a forged exclusion of exactly what is held is
                        // held with it, so the operator's exclusion of the run, one
                        // more, passes over both. Taken, it could never be undone.
                        let judged = self.judge_exclusion(
                            x,
                            event.stream_sequence,
                            envelope.recorded_at_unix_ms,
                            keys,
                        );
                        match judged {
                            Judged::Ledgers => true,
                            Judged::Not(reason) => return hold(ChainBreak::NotTheLedgers(reason)),
                            Judged::KeysNeeded => return Checked::KeysNeeded,
                        }
                    }
                    // The ledger appends nothing while a message is held but the
                    // exclusion that names it, so an event continuing the chain past a
                    // held message is not the ledger's; and an exclusion with nothing
                    // held names no message that broke the chain. Either is held with the
                    // rest, so the operator's exclusion can pass over it: were it a
                    // break instead, no exclusion could ever name it and the partition
                    // would stop for good.
                    (Some(first), _) => return hold(ChainBreak::PastHeld(first.stream_sequence)),
                    (None, Some(x)) => {
                        return hold(ChainBreak::ExclusionOfNothing(x.stream_sequence));
                    }
                };
                Checked::Event {
                    next,
                    envelope,
                    excludes,
                }
            }
            Err(cause) => hold(cause),
        }
    }

    /// Applies what `check` found (on this follower, unchanged since).
    pub fn accept(&mut self, checked: Checked) -> Step {
        match checked {
            Checked::Event {
                next,
                envelope,
                excludes,
            } => {
                let excluded = match (&envelope.payload, excludes) {
                    (Some(Payload::MessageExcluded(x)), true) => Some(self.held.exclude(x)),
                    (Some(Payload::LedgerKeyRotated(r)), _) => {
                        if let Some(ring) = &mut self.keys {
                            // `check` found the ring takes it.
                            let taken = ring.apply(r, next.sequence, envelope.recorded_at_unix_ms);
                            debug_assert!(taken.is_ok(), "{taken:?}");
                        }
                        None
                    }
                    _ => None,
                };
                self.head = next;
                Step::Event { envelope, excluded }
            }
            Checked::Held(held) => {
                self.held.hold(held);
                Step::Held
            }
            Checked::HeldAlready => Step::Held,
            Checked::KeysNeeded => Step::KeysNeeded,
        }
    }

    /// At the end of what was read: Err with the oldest message still held, which no
    /// exclusion names (yet).
    pub fn finish(&self) -> Result<(), Broken> {
        match self.held.first() {
            Some(first) => Err(first.into()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::checkpoint::sign::{KeyPair, key_rotation, sign_exclusion};
    use crate::chain::{Partition, event_hash};
    use crate::proto::MessageExcluded;
    use bytes::Bytes;
    use prost::Message as _;

    /// The ledger key the tests' exclusions are signed by.
    fn ledger_key() -> KeyPair {
        KeyPair::from_seed(&[42; 32])
    }

    /// The key history of the tests: `ledger_key`, stored at stream sequence 0.
    fn ring() -> &'static KeyRing {
        static RING: std::sync::OnceLock<KeyRing> = std::sync::OnceLock::new();
        RING.get_or_init(|| {
            let mut ring = KeyRing::default();
            ring.apply(&key_rotation(&ledger_key(), None), 1, 0)
                .unwrap();
            ring
        })
    }

    fn keys() -> Keys<'static> {
        Keys::Stored {
            ring: ring(),
            stored_at: &[0],
        }
    }

    /// `follow` and `check` with the tests' key history.
    trait Signed {
        fn follow_signed(&mut self, event: &RawEvent) -> Step;
        fn check_signed(&self, event: &RawEvent) -> Checked;
    }

    impl Signed for Follower {
        fn follow_signed(&mut self, event: &RawEvent) -> Step {
            self.follow(event, keys())
        }

        fn check_signed(&self, event: &RawEvent) -> Checked {
            self.check(event, keys())
        }
    }

    /// `x` signed by `key` as recorded in `partition`.
    fn signed(partition: &str, mut x: MessageExcluded, key: &KeyPair) -> MessageExcluded {
        x.key_id = key.key_id().into();
        x.signature = sign_exclusion(key, partition, &x).unwrap().to_vec().into();
        x
    }

    fn envelope(sequence: u64, prev: &Digest, payload: Option<Payload>) -> Bytes {
        envelope_in("01", sequence, prev, payload)
    }

    fn raw(stream_sequence: u64, bytes: Bytes) -> RawEvent {
        RawEvent {
            stream_sequence,
            index: 0,
            last_in_message: true,
            subject: "ansinh.v1.events.01".into(),
            hash: event_hash(&bytes),
            payload: bytes.clone(),
            header_hash: None,
            header_sequence: None,
            malformed: None,
            message: bytes,
        }
    }

    fn exclusion(stream_sequence: u64, of: &Bytes) -> Option<Payload> {
        let x = MessageExcluded {
            stream_sequence,
            message_hash: crate::chain::message_hash(of).0.to_vec().into(),
            ..Default::default()
        };
        Some(Payload::MessageExcluded(signed("01", x, &ledger_key())))
    }

    /// A chain of one good event, then a foreign message at stream sequence 2.
    fn started() -> (Follower, Digest, Bytes) {
        let genesis = ChainHead::genesis(Partition::new("01").unwrap());
        let mut f = Follower::new(genesis.clone());
        let first = envelope(1, &genesis.hash, None);
        assert!(matches!(
            f.follow_signed(&raw(1, first.clone())),
            Step::Event { .. }
        ));
        let foreign = envelope(2, &Digest([7; 32]), None);
        assert!(matches!(
            f.follow_signed(&raw(2, foreign.clone())),
            Step::Held
        ));
        assert_eq!(f.held().count(), 1);
        (f, event_hash(&first), foreign)
    }

    #[test]
    fn the_exclusion_of_exactly_the_held_message_lets_the_chain_go_on() {
        let (mut f, head, foreign) = started();
        let decision = envelope(2, &head, exclusion(2, &foreign));
        match f.follow_signed(&raw(3, decision)) {
            Step::Event {
                excluded: Some(x), ..
            } => {
                assert_eq!(x.first.stream_sequence, 2);
                assert_eq!(x.count, 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.head.sequence, 2);
        assert!(f.finish().is_ok());
    }

    #[test]
    fn an_event_past_a_held_message_is_held_with_it_and_excluded_with_the_run() {
        let (f, head, foreign) = started();
        assert_eq!(f.finish().unwrap_err().stream_sequence, 2);
        let past = [
            // A good-looking event that is not the exclusion.
            envelope(2, &head, None),
            // An exclusion of another message, or of other bytes.
            envelope(2, &head, exclusion(9, &foreign)),
            envelope(2, &head, exclusion(2, &Bytes::from_static(b"other"))),
        ];
        for event in past {
            let mut g = f.clone();
            assert!(matches!(g.follow_signed(&raw(3, event)), Step::Held));
            assert_eq!(g.held().count(), 2);
            assert_eq!(
                g.held().listed()[1].cause,
                ChainBreak::PastHeld(2),
                "why the second is held"
            );
            assert_eq!(g.finish().unwrap_err().stream_sequence, 2);
            let decision = envelope(2, &head, run_exclusion(g.held()));
            assert!(matches!(
                g.follow_signed(&raw(4, decision)),
                Step::Event { excluded: Some(ref x), .. } if x.count == 2 && x.through_stream_sequence == 3
            ));
            assert!(g.finish().is_ok());
        }
    }

    #[test]
    fn an_exclusion_with_nothing_held_is_held_and_can_itself_be_excluded() {
        let genesis = ChainHead::genesis(Partition::new("01").unwrap());
        let mut f = Follower::new(genesis.clone());
        let first = envelope(1, &genesis.hash, None);
        f.follow_signed(&raw(1, first.clone()));
        let hiding = envelope(2, &event_hash(&first), exclusion(1, &first));
        assert!(matches!(
            f.follow_signed(&raw(2, hiding.clone())),
            Step::Held
        ));
        assert_eq!(
            f.held().first().unwrap().cause,
            ChainBreak::ExclusionOfNothing(1)
        );
        assert_eq!(f.head.sequence, 1, "the head stays at the good event");
        let decision = envelope(2, &event_hash(&first), exclusion(2, &hiding));
        assert!(matches!(
            f.follow_signed(&raw(3, decision)),
            Step::Event { excluded: Some(ref x), .. } if x.first.stream_sequence == 2
        ));
        assert!(f.finish().is_ok());
    }

    #[test]
    fn a_frame_held_for_its_first_event_holds_a_later_one_that_continues_the_chain() {
        let (f, head, _) = started();
        // The second event of the held message at stream sequence 2 would continue the
        // chain: it is the rest of a held message, not an event.
        let rest = RawEvent {
            index: 1,
            ..raw(2, envelope(2, &head, None))
        };
        assert!(matches!(f.check_signed(&rest), Checked::HeldAlready));
    }

    fn run_exclusion(held: &Holding) -> Option<Payload> {
        run_exclusion_in("01", held, &ledger_key())
    }

    fn run_exclusion_in(partition: &str, held: &Holding, key: &KeyPair) -> Option<Payload> {
        let first = held.first().unwrap();
        let x = MessageExcluded {
            stream_sequence: first.stream_sequence,
            message_hash: first.message_hash.0.to_vec().into(),
            through_stream_sequence: held.last_stream_sequence(),
            message_count: held.count(),
            run_hash: held.run_hash().0.to_vec().into(),
            ..Default::default()
        };
        Some(Payload::MessageExcluded(signed(partition, x, key)))
    }

    /// `started`, then `more` foreign messages after the first, at stream sequences 3...
    fn flooded(more: u64) -> (Follower, Digest) {
        let (mut f, head, _) = started();
        for i in 0..more {
            let foreign = envelope(2, &Digest([i as u8; 32]), None);
            assert!(matches!(f.follow_signed(&raw(3 + i, foreign)), Step::Held));
        }
        (f, head)
    }

    #[test]
    fn one_exclusion_passes_over_any_number_of_held_messages_in_constant_memory() {
        let (mut f, head) = flooded(999);
        assert_eq!(f.held().count(), 1000);
        assert_eq!(f.held().listed().len(), HELD_LISTED_MAX);
        assert_eq!(f.held().last_stream_sequence(), 1001);
        let decision = envelope(2, &head, run_exclusion(f.held()));
        match f.follow_signed(&raw(1002, decision)) {
            Step::Event {
                excluded: Some(x), ..
            } => {
                assert_eq!(x.first.stream_sequence, 2);
                assert_eq!(x.through_stream_sequence, 1001);
                assert_eq!(x.count, 1000);
            }
            other => panic!("{other:?}"),
        }
        assert!(f.held().is_empty());
        assert!(f.finish().is_ok());
        // And the chain goes on.
        let next = envelope(3, &f.head.hash, None);
        assert!(matches!(
            f.follow_signed(&raw(1003, next)),
            Step::Event { .. }
        ));
    }

    #[test]
    fn a_run_exclusion_must_name_every_held_message_and_their_hash() {
        let (f, head) = flooded(20);
        let Some(Payload::MessageExcluded(right)) = run_exclusion(f.held()) else {
            unreachable!()
        };
        let wrongs = [
            MessageExcluded {
                message_count: right.message_count - 1,
                ..right.clone()
            },
            MessageExcluded {
                through_stream_sequence: right.through_stream_sequence - 1,
                ..right.clone()
            },
            MessageExcluded {
                run_hash: vec![0; 32].into(),
                ..right.clone()
            },
            MessageExcluded {
                stream_sequence: 3,
                ..right.clone()
            },
            // The first form, one message, while more are held than are listed.
            MessageExcluded {
                message_count: 0,
                through_stream_sequence: 0,
                run_hash: Default::default(),
                ..right.clone()
            },
        ];
        for wrong in wrongs {
            // Not the ledger's exclusion: held with the run, which it does not end.
            let mut g = f.clone();
            let decision = envelope(2, &head, Some(Payload::MessageExcluded(wrong)));
            assert!(matches!(g.follow_signed(&raw(100, decision)), Step::Held));
            assert_eq!(g.held().count(), f.held().count() + 1);
            assert_eq!(g.finish().unwrap_err().stream_sequence, 2);
        }
        let mut g = f.clone();
        let decision = envelope(2, &head, Some(Payload::MessageExcluded(right)));
        assert!(matches!(
            g.follow_signed(&raw(100, decision)),
            Step::Event { .. }
        ));
    }

    #[test]
    fn the_first_form_excludes_the_oldest_and_a_run_the_rest() {
        let (mut f, head) = flooded(2);
        let first = f.held().first().unwrap().clone();
        let one = envelope(2, &head, exclusion(2, &envelope(2, &Digest([7; 32]), None)));
        assert!(matches!(
            f.follow_signed(&raw(5, one.clone())),
            Step::Event { excluded: Some(ref x), .. } if x.first == first && x.count == 1
        ));
        assert_eq!(f.held().count(), 2);
        assert_eq!(f.held().first().unwrap().stream_sequence, 3);
        // What is left is a run of its own, hashed from its first message.
        let rest = Holding::of_list(f.held().listed().to_vec());
        assert_eq!(&rest, f.held());
        let decision = envelope(3, &event_hash(&one), run_exclusion(f.held()));
        assert!(matches!(
            f.follow_signed(&raw(6, decision)),
            Step::Event { excluded: Some(ref x), .. } if x.count == 2 && x.through_stream_sequence == 4
        ));
        assert!(f.finish().is_ok());
    }

    fn key_event(sequence: u64, prev: &Digest, rotation: LedgerKeyRotated) -> Bytes {
        Envelope {
            format_version: 1,
            partition: KEYS_PARTITION.into(),
            sequence,
            prev_hash: prev.0.to_vec().into(),
            payload: Some(Payload::LedgerKeyRotated(rotation)),
            ..Default::default()
        }
        .encode_to_vec()
        .into()
    }

    #[test]
    fn a_rotation_the_previous_key_did_not_sign_is_held_and_excluded_with_the_run() {
        let genesis = ChainHead::genesis(Partition::new(KEYS_PARTITION).unwrap());
        let mut f = Follower::new(genesis.clone());
        let (first, second) = (KeyPair::from_seed(&[1; 32]), KeyPair::from_seed(&[2; 32]));
        let one = key_event(1, &genesis.hash, key_rotation(&first, None));
        assert!(matches!(
            f.follow_signed(&raw(1, one.clone())),
            Step::Event { .. }
        ));
        // Given a rotation that continues the chain but that no ledger key signed (a
        // first key again, as anyone who reads the log can make),
        let forged = key_event(2, &event_hash(&one), key_rotation(&second, None));
        // then it is held, and the key history is unchanged.
        assert!(matches!(
            f.follow_signed(&raw(2, forged.clone())),
            Step::Held
        ));
        assert!(matches!(
            &f.held().first().unwrap().cause,
            ChainBreak::NotTheLedgers(reason) if reason.contains("rotation")
        ));
        assert_eq!(f.key_ring().unwrap().keys().len(), 1);
        // A replay of the first key's event is held too.
        let mut replayed = f.clone();
        replayed.held = Holding::default();
        let again = key_event(2, &event_hash(&one), key_rotation(&first, None));
        assert!(matches!(replayed.follow_signed(&raw(2, again)), Step::Held));
        // The operator's exclusion of the run passes over it, and the real rotation
        // after it is taken.
        let decision = envelope_in(
            KEYS_PARTITION,
            2,
            &event_hash(&one),
            run_exclusion_in(KEYS_PARTITION, f.held(), &first),
        );
        assert!(matches!(
            f.follow_signed(&raw(3, decision.clone())),
            Step::Event {
                excluded: Some(_),
                ..
            }
        ));
        let real = key_event(
            3,
            &event_hash(&decision),
            key_rotation(&second, Some(&first)),
        );
        assert!(matches!(f.follow_signed(&raw(4, real)), Step::Event { .. }));
        assert_eq!(f.key_ring().unwrap().keys().len(), 2);
        assert!(f.finish().is_ok());
        // A follower resumed without the history holds every rotation; with it, takes
        // the next one.
        let third = KeyPair::from_seed(&[3; 32]);
        let next = key_event(4, &f.head.hash, key_rotation(&third, Some(&second)));
        let blind = Follower::resume(f.head.clone(), Holding::default());
        assert!(matches!(
            blind.check_signed(&raw(5, next.clone())),
            Checked::Held(_)
        ));
        let told =
            Follower::resume_with_keys(f.head.clone(), Holding::default(), f.key_ring().cloned());
        assert!(matches!(
            told.check_signed(&raw(5, next)),
            Checked::Event { .. }
        ));
    }

    #[test]
    fn rotations_outside_the_key_partition_are_not_judged() {
        let genesis = ChainHead::genesis(Partition::new("01").unwrap());
        let mut f = Follower::new(genesis.clone());
        let key = KeyPair::from_seed(&[1; 32]);
        let signed_by_nobody = key_rotation(&key, Some(&KeyPair::from_seed(&[9; 32])));
        let event = envelope(
            1,
            &genesis.hash,
            Some(Payload::LedgerKeyRotated(signed_by_nobody)),
        );
        assert!(matches!(
            f.follow_signed(&raw(1, event)),
            Step::Event { .. }
        ));
        assert!(f.key_ring().is_none());
    }

    fn envelope_in(
        partition: &str,
        sequence: u64,
        prev: &Digest,
        payload: Option<Payload>,
    ) -> Bytes {
        Envelope {
            format_version: 1,
            partition: partition.into(),
            sequence,
            prev_hash: prev.0.to_vec().into(),
            payload,
            ..Default::default()
        }
        .encode_to_vec()
        .into()
    }

    #[test]
    fn a_forged_exclusion_of_exactly_what_is_held_is_held_and_excluded_with_the_run() {
        let (f, head, foreign) = started();
        let exact = |x: MessageExcluded| envelope(2, &head, Some(Payload::MessageExcluded(x)));
        let right = MessageExcluded {
            stream_sequence: 2,
            message_hash: crate::chain::message_hash(&foreign).0.to_vec().into(),
            ..Default::default()
        };
        let stranger = KeyPair::from_seed(&[7; 32]);
        let forgeries = [
            // Signed by a key that was never the ledger's, or not signed at all.
            signed("01", right.clone(), &stranger),
            MessageExcluded {
                key_id: ledger_key().key_id().into(),
                signature: vec![7; 64].into(),
                ..right.clone()
            },
            // Signed by the ledger's key for another partition.
            signed("02", right.clone(), &ledger_key()),
        ];
        for forged in forgeries {
            let mut g = f.clone();
            assert!(matches!(
                g.follow_signed(&raw(3, exact(forged))),
                Step::Held
            ));
            assert!(matches!(
                &g.held().listed()[1].cause,
                ChainBreak::NotTheLedgers(reason) if reason.contains("no ledger key signed")
            ));
            assert_eq!(g.head.sequence, 1, "the head stays at the good event");
            // The operator's exclusion of the run, both messages, passes over it.
            let decision = envelope(2, &head, run_exclusion(g.held()));
            assert!(matches!(
                g.follow_signed(&raw(4, decision)),
                Step::Event { excluded: Some(ref x), .. } if x.count == 2 && x.through_stream_sequence == 3
            ));
            assert!(g.finish().is_ok());
        }
        // A key whose event was stored after the exclusion did not sign it, nor a key
        // retired before it was recorded.
        let decision = exact(signed("01", right.clone(), &ledger_key()));
        let later = Keys::Stored {
            ring: ring(),
            stored_at: &[3],
        };
        assert!(matches!(
            f.check(&raw(3, decision.clone()), later),
            Checked::Held(_)
        ));
        let mut rotated = ring().clone();
        rotated
            .apply(&key_rotation(&stranger, Some(&ledger_key())), 2, -1)
            .unwrap();
        let retired = Keys::Stored {
            ring: &rotated,
            stored_at: &[0, 1],
        };
        assert!(matches!(
            f.check(&raw(3, decision.clone()), retired),
            Checked::Held(_)
        ));
        // Without the key history the follower changes nothing and asks for it.
        let mut g = f.clone();
        assert!(matches!(
            g.follow(&raw(3, decision.clone()), Keys::NotRead),
            Step::KeysNeeded
        ));
        assert_eq!(g, f);
        assert!(matches!(
            g.follow_signed(&raw(3, decision)),
            Step::Event {
                excluded: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn stored_parts_that_do_not_agree_are_refused() {
        let (f, _) = flooded(20);
        let h = f.held();
        let parts = |listed: Vec<Held>, count| {
            Holding::from_parts(listed, count, h.last_stream_sequence(), h.run_hash())
        };
        assert_eq!(parts(h.listed().to_vec(), h.count()).as_ref(), Some(h));
        assert!(
            parts(h.listed()[..3].to_vec(), 3).is_none(),
            "a complete list of another hash"
        );
        assert!(parts(Vec::new(), h.count()).is_none());
        assert!(parts(h.listed().to_vec(), 2).is_none());
    }
}
