//! One partition's chain, followed as every reader of the stream follows it
//! (docs/CHAIN.md, sections 4 and 4a): each event must continue the head. A message that
//! does not (a foreign message, a damaged one) is held; the chain may go on past it only
//! through the operator's exclusion (`MessageExcluded`), recorded as the next event of the
//! chain: of exactly the oldest held message, or of the whole run held, named by its
//! first and last stream sequences, its count and a hash over every message in it. The
//! verifier, the writer, the projector and the checkpointer all follow with this one
//! type, so none of them passes over a message another would stop at, and nothing is
//! ever deleted. Whether an exclusion is the ledger's (its signature) is checked by
//! those that hold the key history: the verifier and the checkpoint readers.
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
    /// the chain stops at what is still held.
    pub fn follow(&mut self, event: &RawEvent) -> Step {
        let checked = self.check(event);
        self.accept(checked)
    }

    /// What `event` would do to the chain, changing nothing: a reader that must finish
    /// its own work on the event before the head moves (the projector) checks first and
    /// `accept`s after.
    pub fn check(&self, event: &RawEvent) -> Checked {
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
                    (Some(_), Some(x)) if self.held.admits(x) => true,
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
    use crate::chain::{Partition, event_hash};
    use crate::proto::MessageExcluded;
    use bytes::Bytes;
    use prost::Message as _;

    fn envelope(sequence: u64, prev: &Digest, payload: Option<Payload>) -> Bytes {
        Envelope {
            format_version: 1,
            partition: "01".into(),
            sequence,
            prev_hash: prev.0.to_vec().into(),
            payload,
            ..Default::default()
        }
        .encode_to_vec()
        .into()
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
        Some(Payload::MessageExcluded(MessageExcluded {
            stream_sequence,
            message_hash: crate::chain::message_hash(of).0.to_vec().into(),
            ..Default::default()
        }))
    }

    /// A chain of one good event, then a foreign message at stream sequence 2.
    fn started() -> (Follower, Digest, Bytes) {
        let genesis = ChainHead::genesis(Partition::new("01").unwrap());
        let mut f = Follower::new(genesis.clone());
        let first = envelope(1, &genesis.hash, None);
        assert!(matches!(
            f.follow(&raw(1, first.clone())),
            Step::Event { .. }
        ));
        let foreign = envelope(2, &Digest([7; 32]), None);
        assert!(matches!(f.follow(&raw(2, foreign.clone())), Step::Held));
        assert_eq!(f.held().count(), 1);
        (f, event_hash(&first), foreign)
    }

    #[test]
    fn the_exclusion_of_exactly_the_held_message_lets_the_chain_go_on() {
        let (mut f, head, foreign) = started();
        let decision = envelope(2, &head, exclusion(2, &foreign));
        match f.follow(&raw(3, decision)) {
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
            assert!(matches!(g.follow(&raw(3, event)), Step::Held));
            assert_eq!(g.held().count(), 2);
            assert_eq!(
                g.held().listed()[1].cause,
                ChainBreak::PastHeld(2),
                "why the second is held"
            );
            assert_eq!(g.finish().unwrap_err().stream_sequence, 2);
            let decision = envelope(2, &head, run_exclusion(g.held()));
            assert!(matches!(
                g.follow(&raw(4, decision)),
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
        f.follow(&raw(1, first.clone()));
        let hiding = envelope(2, &event_hash(&first), exclusion(1, &first));
        assert!(matches!(f.follow(&raw(2, hiding.clone())), Step::Held));
        assert_eq!(
            f.held().first().unwrap().cause,
            ChainBreak::ExclusionOfNothing(1)
        );
        assert_eq!(f.head.sequence, 1, "the head stays at the good event");
        let decision = envelope(2, &event_hash(&first), exclusion(2, &hiding));
        assert!(matches!(
            f.follow(&raw(3, decision)),
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
        assert!(matches!(f.check(&rest), Checked::HeldAlready));
    }

    fn run_exclusion(held: &Holding) -> Option<Payload> {
        let first = held.first().unwrap();
        Some(Payload::MessageExcluded(MessageExcluded {
            stream_sequence: first.stream_sequence,
            message_hash: first.message_hash.0.to_vec().into(),
            through_stream_sequence: held.last_stream_sequence(),
            message_count: held.count(),
            run_hash: held.run_hash().0.to_vec().into(),
            ..Default::default()
        }))
    }

    /// `started`, then `more` foreign messages after the first, at stream sequences 3...
    fn flooded(more: u64) -> (Follower, Digest) {
        let (mut f, head, _) = started();
        for i in 0..more {
            let foreign = envelope(2, &Digest([i as u8; 32]), None);
            assert!(matches!(f.follow(&raw(3 + i, foreign)), Step::Held));
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
        match f.follow(&raw(1002, decision)) {
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
        assert!(matches!(f.follow(&raw(1003, next)), Step::Event { .. }));
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
            assert!(matches!(g.follow(&raw(100, decision)), Step::Held));
            assert_eq!(g.held().count(), f.held().count() + 1);
            assert_eq!(g.finish().unwrap_err().stream_sequence, 2);
        }
        let mut g = f.clone();
        let decision = envelope(2, &head, Some(Payload::MessageExcluded(right)));
        assert!(matches!(g.follow(&raw(100, decision)), Step::Event { .. }));
    }

    #[test]
    fn the_first_form_excludes_the_oldest_and_a_run_the_rest() {
        let (mut f, head) = flooded(2);
        let first = f.held().first().unwrap().clone();
        let one = envelope(2, &head, exclusion(2, &envelope(2, &Digest([7; 32]), None)));
        assert!(matches!(
            f.follow(&raw(5, one.clone())),
            Step::Event { excluded: Some(ref x), .. } if x.first == first && x.count == 1
        ));
        assert_eq!(f.held().count(), 2);
        assert_eq!(f.held().first().unwrap().stream_sequence, 3);
        // What is left is a run of its own, hashed from its first message.
        let rest = Holding::of_list(f.held().listed().to_vec());
        assert_eq!(&rest, f.held());
        let decision = envelope(3, &event_hash(&one), run_exclusion(f.held()));
        assert!(matches!(
            f.follow(&raw(6, decision)),
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
        use crate::audit::checkpoint::sign::{KeyPair, key_rotation};
        let genesis = ChainHead::genesis(Partition::new(KEYS_PARTITION).unwrap());
        let mut f = Follower::new(genesis.clone());
        let (first, second) = (KeyPair::from_seed(&[1; 32]), KeyPair::from_seed(&[2; 32]));
        let one = key_event(1, &genesis.hash, key_rotation(&first, None));
        assert!(matches!(f.follow(&raw(1, one.clone())), Step::Event { .. }));
        // Given a rotation that continues the chain but that no ledger key signed (a
        // first key again, as anyone who reads the log can make),
        let forged = key_event(2, &event_hash(&one), key_rotation(&second, None));
        // then it is held, and the key history is unchanged.
        assert!(matches!(f.follow(&raw(2, forged.clone())), Step::Held));
        assert!(matches!(
            &f.held().first().unwrap().cause,
            ChainBreak::NotTheLedgers(reason) if reason.contains("rotation")
        ));
        assert_eq!(f.key_ring().unwrap().keys().len(), 1);
        // A replay of the first key's event is held too.
        let mut replayed = f.clone();
        replayed.held = Holding::default();
        let again = key_event(2, &event_hash(&one), key_rotation(&first, None));
        assert!(matches!(replayed.follow(&raw(2, again)), Step::Held));
        // The operator's exclusion of the run passes over it, and the real rotation
        // after it is taken.
        let decision = envelope_in(
            KEYS_PARTITION,
            2,
            &event_hash(&one),
            run_exclusion(f.held()),
        );
        assert!(matches!(
            f.follow(&raw(3, decision.clone())),
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
        assert!(matches!(f.follow(&raw(4, real)), Step::Event { .. }));
        assert_eq!(f.key_ring().unwrap().keys().len(), 2);
        assert!(f.finish().is_ok());
        // A follower resumed without the history holds every rotation; with it, takes
        // the next one.
        let third = KeyPair::from_seed(&[3; 32]);
        let next = key_event(4, &f.head.hash, key_rotation(&third, Some(&second)));
        let blind = Follower::resume(f.head.clone(), Holding::default());
        assert!(matches!(
            blind.check(&raw(5, next.clone())),
            Checked::Held(_)
        ));
        let told =
            Follower::resume_with_keys(f.head.clone(), Holding::default(), f.key_ring().cloned());
        assert!(matches!(told.check(&raw(5, next)), Checked::Event { .. }));
    }

    #[test]
    fn rotations_outside_the_key_partition_are_not_judged() {
        use crate::audit::checkpoint::sign::{KeyPair, key_rotation};
        let genesis = ChainHead::genesis(Partition::new("01").unwrap());
        let mut f = Follower::new(genesis.clone());
        let key = KeyPair::from_seed(&[1; 32]);
        let signed_by_nobody = key_rotation(&key, Some(&KeyPair::from_seed(&[9; 32])));
        let event = envelope(
            1,
            &genesis.hash,
            Some(Payload::LedgerKeyRotated(signed_by_nobody)),
        );
        assert!(matches!(f.follow(&raw(1, event)), Step::Event { .. }));
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
