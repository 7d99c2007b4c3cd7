//! A partition's book as bytes, so that a writer starts from where it left off instead
//! of folding its chain from genesis (docs/adr/0008-writer-book-snapshots.md).
//!
//! **Boundary:** pure: a book in, bytes out, and back. Where the bytes live, and how a
//! snapshot is checked against the chain before it is trusted, is `log::snapshot`'s.
//! **Invariant:** `decode(encode(book)) == book` for every book `apply` can build; the
//! writer relies on it (a decided command must not depend on how the book was made),
//! and `audit rebuild-check` compares each stored snapshot with a fold from genesis.

use super::PartitionBook;

#[derive(Debug, thiserror::Error)]
#[error("the book snapshot does not decode: {0}")]
pub struct DecodeError(String);

/// The book in MessagePack: serde's own shape of every type, so a field added to a
/// book type changes the bytes, and an older snapshot then fails to decode (it is
/// discarded and the chain refolded) rather than decoding into a wrong book.
pub fn encode(book: &PartitionBook) -> Vec<u8> {
    encode_sized(book, 0)
}

/// `encode` into a buffer of `capacity` bytes to start with (the last snapshot's size):
/// growing a buffer of tens of MB step by step costs more than the encoding.
pub fn encode_sized(book: &PartitionBook, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    rmp_serde::encode::write(&mut out, book).expect("a book is plain data: it always encodes");
    out
}

pub fn decode(bytes: &[u8]) -> Result<PartitionBook, DecodeError> {
    rmp_serde::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))
}
