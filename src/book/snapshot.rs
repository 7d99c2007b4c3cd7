//! A partition's book as bytes, so that a writer starts from where it left off instead
//! of folding its chain from genesis (docs/adr/0008-writer-book-snapshots.md).
//!
//! **Boundary:** pure: a book in, bytes out, and back. Where the bytes live, and how a
//! snapshot is checked against the chain before it is trusted, is `log::snapshot`'s.
//! **Invariant:** `decode(encode(book)) == book` for every book `apply` can build; the
//! writer relies on it (a decided command must not depend on how the book was made),
//! and `audit rebuild-check` compares each stored snapshot with a fold from genesis.

use std::collections::BTreeMap;
use std::fmt;

use prost::Message;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};

use super::PartitionBook;
use crate::domain::ids::HouseholdId;
use crate::proto;

#[derive(Debug, thiserror::Error)]
#[error("the book snapshot does not decode: {0}")]
pub struct DecodeError(String);

/// The book in MessagePack: serde's own shape of every type, so a field added to a
/// book type changes the bytes, and an older snapshot then fails to decode (it is
/// discarded and the chain refolded) rather than decoding into a wrong book.
pub fn encode(book: &PartitionBook) -> Vec<u8> {
    rmp_serde::to_vec(book).expect("a book is plain data: it always encodes")
}

pub fn decode(bytes: &[u8]) -> Result<PartitionBook, DecodeError> {
    rmp_serde::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))
}

/// The standings are protobuf messages (as recorded): kept as their protobuf bytes.
pub(super) mod standings {
    use super::*;

    struct AsBytes<'a>(&'a [u8]);

    impl serde::Serialize for AsBytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<HouseholdId, proto::EligibilityDecided>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_map(Some(map.len()))?;
        for (household, decided) in map {
            out.serialize_entry(household, &AsBytes(&decided.encode_to_vec()))?;
        }
        out.end()
    }

    struct Bytes(Vec<u8>);

    impl<'de> serde::Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("protobuf bytes")
                }
                fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
            }
            d.deserialize_bytes(V)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<HouseholdId, proto::EligibilityDecided>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BTreeMap<HouseholdId, proto::EligibilityDecided>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of household ids to protobuf standings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((household, Bytes(bytes))) =
                    map.next_entry::<HouseholdId, Bytes>()?
                {
                    let decided = proto::EligibilityDecided::decode(&bytes[..])
                        .map_err(|e| de::Error::custom(format!("standing of {household}: {e}")))?;
                    out.insert(household, decided);
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}
