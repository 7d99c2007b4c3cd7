//! A partition's book as bytes, so that a writer starts from where it left off instead
//! of folding its chain from genesis (docs/adr/0008-writer-book-snapshots.md).
//!
//! **Boundary:** pure: a book in, bytes out, and back. Where the bytes live, and how a
//! snapshot is checked against the chain before it is trusted, is `log::snapshot`'s.
//! **Invariant:** `decode(encode(book)) == book` for every book `apply` can build; the
//! writer relies on it (a decided command must not depend on how the book was made),
//! and `audit rebuild-check` compares each stored snapshot with a fold from genesis.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{PartitionBook, RecordedStanding};
use crate::domain::ids::HouseholdId;
use crate::domain::ledger::TrialBalance;
use crate::domain::loans::LoanBook;
use crate::domain::payments;
use crate::domain::registry::Registry;

#[derive(Debug, thiserror::Error)]
#[error("the book snapshot does not decode: {0}")]
pub struct DecodeError(String);

/// Everything but the registry and the standings, borrowed for encoding. Its fields are
/// in the order of `Rest`: MessagePack stores a struct by position.
#[derive(Serialize)]
struct RestRef<'a> {
    partition: &'a String,
    loans: &'a LoanBook,
    trial: &'a TrialBalance,
    sequence: u64,
    unreadable: u64,
    payments: &'a payments::Book,
    payments_trial: &'a payments::ledger::TrialBalance,
    paid_before_move: &'a super::PaidBeforeMove,
}

#[derive(Deserialize)]
struct Rest {
    partition: String,
    loans: LoanBook,
    trial: TrialBalance,
    sequence: u64,
    unreadable: u64,
    payments: payments::Book,
    payments_trial: payments::ledger::TrialBalance,
    paid_before_move: super::PaidBeforeMove,
}

fn pack<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec(value).expect("a book is plain data: it always encodes")
}

/// The book in three parts, each MessagePack (serde's own shape of its types, so a field
/// added to a book type changes the bytes, and an older snapshot then fails to decode
/// and the chain is refolded rather than read wrongly): the registry, the standings,
/// and the rest, each preceded by its length (u64, big-endian). Three parts, because
/// they are encoded and decoded side by side, one thread each: a province's registry
/// and standings are most of the book, and a start waits for the decoding.
pub fn encode(book: &PartitionBook) -> Vec<u8> {
    let rest = RestRef {
        partition: &book.partition,
        loans: &book.loans,
        trial: &book.trial,
        sequence: book.sequence,
        unreadable: book.unreadable,
        payments: &book.payments,
        payments_trial: &book.payments_trial,
        paid_before_move: &book.paid_before_move,
    };
    let (registry, standings, rest) = std::thread::scope(|scope| {
        let registry = scope.spawn(|| pack(&book.registry));
        let standings = scope.spawn(|| pack(&book.standings));
        let rest = pack(&rest);
        (
            registry.join().expect("encoding never panics"),
            standings.join().expect("encoding never panics"),
            rest,
        )
    });
    let mut out = Vec::with_capacity(24 + registry.len() + standings.len() + rest.len());
    for part in [&registry, &standings, &rest] {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

pub fn decode(bytes: &[u8]) -> Result<PartitionBook, DecodeError> {
    let mut parts = Vec::with_capacity(3);
    let mut at = 0usize;
    for _ in 0..3 {
        let len = bytes
            .get(at..at + 8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")) as usize)
            .ok_or_else(|| DecodeError("cut short".into()))?;
        let part = bytes
            .get(at + 8..at + 8 + len)
            .ok_or_else(|| DecodeError("cut short".into()))?;
        parts.push(part);
        at += 8 + len;
    }
    if at != bytes.len() {
        return Err(DecodeError("bytes after the last part".into()));
    }
    let err = |e: rmp_serde::decode::Error| DecodeError(e.to_string());
    let (registry, standings, rest) = std::thread::scope(|scope| {
        let registry = scope.spawn(|| rmp_serde::from_slice::<Registry>(parts[0]));
        let standings = scope
            .spawn(|| rmp_serde::from_slice::<BTreeMap<HouseholdId, RecordedStanding>>(parts[1]));
        let rest = rmp_serde::from_slice::<Rest>(parts[2]);
        (
            registry.join().expect("decoding never panics"),
            standings.join().expect("decoding never panics"),
            rest,
        )
    });
    let mut rest = rest.map_err(err)?;
    rest.payments.index_persons();
    Ok(PartitionBook {
        partition: rest.partition,
        registry: registry.map_err(err)?,
        loans: rest.loans,
        trial: rest.trial,
        standings: standings.map_err(err)?,
        sequence: rest.sequence,
        unreadable: rest.unreadable,
        payments: rest.payments,
        payments_trial: rest.payments_trial,
        paid_before_move: rest.paid_before_move,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_book_reads_back_as_itself_and_cut_bytes_are_refused() {
        let mut book = PartitionBook::new("01");
        book.sequence = 7;
        book.unreadable = 1;
        let bytes = encode(&book);
        assert_eq!(decode(&bytes).unwrap(), book);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }
}
