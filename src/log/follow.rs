//! One partition's chain, followed as every reader of the stream follows it
//! (docs/CHAIN.md, sections 4 and 4a): each event must continue the head. A message that
//! does not (a foreign message, a damaged one) is held; the chain may go on past it only
//! through the operator's exclusion of exactly that message (`MessageExcluded`, naming its
//! stream sequence and hash), recorded as the next event of the chain. The verifier, the
//! writer, the projector and the checkpointer all follow with this one type, so none of
//! them passes over a message another would stop at, and nothing is ever deleted.

use crate::chain::{ChainBreak, ChainHead, Digest};
use crate::log::RawEvent;
use crate::proto::{Envelope, envelope::Payload};

/// Messages held at once in one partition before a reader stops at the first: each needs
/// its own exclusion, and more than a few in a row is an attack to stop, not to skip.
pub const HELD_MESSAGES_MAX: usize = 16;

/// A message that broke the chain, waiting for the operator's exclusion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub stream_sequence: u64,
    pub message_hash: Digest,
    /// The partition sequence the chain expected there.
    pub expected_sequence: u64,
    pub cause: ChainBreak,
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
    /// The event continues the chain (`excluded`: it is the operator's exclusion of that
    /// held message).
    Event {
        envelope: Envelope,
        excluded: Option<Held>,
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
        /// It is the operator's exclusion of the oldest held message.
        excludes_oldest: bool,
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
    held: Vec<Held>,
}

impl Follower {
    pub fn new(head: ChainHead) -> Self {
        Self {
            head,
            held: Vec::new(),
        }
    }

    /// A follower resumed from a stored head and the messages it held then.
    pub fn resume(head: ChainHead, held: Vec<Held>) -> Self {
        Self { head, held }
    }

    /// The messages held, oldest first.
    pub fn held(&self) -> &[Held] {
        &self.held
    }

    /// Takes one event, in stream order, of this partition.
    pub fn follow(&mut self, event: &RawEvent) -> Result<Step, Broken> {
        let checked = self.check(event)?;
        Ok(self.accept(checked))
    }

    /// What `event` would do to the chain, changing nothing: a reader that must finish
    /// its own work on the event before the head moves (the projector) checks first and
    /// `accept`s after.
    pub fn check(&self, event: &RawEvent) -> Result<Checked, Broken> {
        match event.check_next(&self.head) {
            Ok((next, envelope)) => {
                let exclusion = match &envelope.payload {
                    Some(Payload::MessageExcluded(x)) => Some(x),
                    _ => None,
                };
                let excludes_oldest = match (self.held.first(), exclusion) {
                    (None, None) => false,
                    // An exclusion must name the oldest message held: it cannot pass
                    // over a good event (that one is in the chain) nor a later message.
                    (Some(first), Some(x))
                        if x.stream_sequence == first.stream_sequence
                            && x.message_hash[..] == first.message_hash.0[..] =>
                    {
                        true
                    }
                    (Some(first), _) => return Err(first.into()),
                    (None, Some(x)) => {
                        return Err(Broken {
                            stream_sequence: event.stream_sequence,
                            expected_sequence: self.head.sequence + 1,
                            cause: ChainBreak::ExclusionOfNothing(x.stream_sequence),
                        });
                    }
                };
                Ok(Checked::Event {
                    next,
                    envelope,
                    excludes_oldest,
                })
            }
            Err(cause) => {
                // The rest of a message already held (a frame) is held with it.
                if self
                    .held
                    .last()
                    .is_some_and(|h| h.stream_sequence == event.stream_sequence)
                {
                    return Ok(Checked::HeldAlready);
                }
                if self.held.len() >= HELD_MESSAGES_MAX {
                    return Err((&self.held[0]).into());
                }
                Ok(Checked::Held(Held {
                    stream_sequence: event.stream_sequence,
                    message_hash: crate::chain::message_hash(&event.message),
                    expected_sequence: self.head.sequence + 1,
                    cause,
                }))
            }
        }
    }

    /// Applies what `check` found (on this follower, unchanged since).
    pub fn accept(&mut self, checked: Checked) -> Step {
        match checked {
            Checked::Event {
                next,
                envelope,
                excludes_oldest,
            } => {
                let excluded = excludes_oldest.then(|| self.held.remove(0));
                self.head = next;
                Step::Event { envelope, excluded }
            }
            Checked::Held(held) => {
                self.held.push(held);
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
            Ok(Step::Event { .. })
        ));
        let foreign = envelope(2, &Digest([7; 32]), None);
        assert!(matches!(f.follow(&raw(2, foreign.clone())), Ok(Step::Held)));
        assert_eq!(f.held().len(), 1);
        (f, event_hash(&first), foreign)
    }

    #[test]
    fn the_exclusion_of_exactly_the_held_message_lets_the_chain_go_on() {
        let (mut f, head, foreign) = started();
        let decision = envelope(2, &head, exclusion(2, &foreign));
        match f.follow(&raw(3, decision)) {
            Ok(Step::Event {
                excluded: Some(h), ..
            }) => assert_eq!(h.stream_sequence, 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(f.head.sequence, 2);
        assert!(f.finish().is_ok());
    }

    #[test]
    fn a_held_message_stops_the_chain_at_any_other_event_or_at_the_end() {
        let (f, head, foreign) = started();
        assert_eq!(f.finish().unwrap_err().stream_sequence, 2);
        // A good-looking event that is not the exclusion.
        let mut g = f.clone();
        assert_eq!(
            g.follow(&raw(3, envelope(2, &head, None)))
                .unwrap_err()
                .stream_sequence,
            2
        );
        // An exclusion of another message, or of other bytes.
        let mut g = f.clone();
        let wrong = envelope(2, &head, exclusion(9, &foreign));
        assert_eq!(g.follow(&raw(3, wrong)).unwrap_err().stream_sequence, 2);
        let mut g = f.clone();
        let wrong = envelope(2, &head, exclusion(2, &Bytes::from_static(b"other")));
        assert_eq!(g.follow(&raw(3, wrong)).unwrap_err().stream_sequence, 2);
    }

    #[test]
    fn an_exclusion_with_nothing_held_breaks_the_chain() {
        let genesis = ChainHead::genesis(Partition::new("01").unwrap());
        let mut f = Follower::new(genesis.clone());
        let first = envelope(1, &genesis.hash, None);
        f.follow(&raw(1, first.clone())).unwrap();
        let hiding = envelope(2, &event_hash(&first), exclusion(1, &first));
        let broken = f.follow(&raw(2, hiding)).unwrap_err();
        assert_eq!(broken.cause, ChainBreak::ExclusionOfNothing(1));
    }
}
