//! `ansinh audit rebuild-check`: rebuilds every projection from the log into a scratch
//! sled store and compares it, tree by tree and key by key, with the live store.
//!
//! Projections are a pure function of the log (invariant 6), so any difference is a
//! bug in incremental projection or a store changed behind the projector's back. The
//! live store is first caught up, then the scratch store is built to exactly the same
//! stream position, so events appended meanwhile cannot show up as differences.

use async_nats::jetstream::stream::Stream;
use serde::Serialize;

use crate::log::LogConfig;
use crate::projection::{ProjectionError, Projector, Records};

/// Longest value shown in a report, in bytes (values are JSON of a few hundred bytes;
/// a corrupt one could be anything).
pub const VALUE_SHOWN_BYTES_MAX: usize = 1024;

/// Keys of one tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TreeCount {
    pub tree: String,
    pub keys: u64,
}

/// The first key, in tree and key order, whose value differs (None = key absent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub tree: String,
    /// The key, printable (non-ASCII and control bytes escaped).
    pub key: String,
    pub live: Option<String>,
    pub rebuilt: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    /// Stream sequence both stores were compared at.
    pub position: u64,
    /// Keys per tree of the rebuilt store.
    pub trees: Vec<TreeCount>,
    pub difference: Option<Difference>,
}

impl RebuildReport {
    pub fn ok(&self) -> bool {
        self.difference.is_none()
    }
}

/// Any MessagePack value as JSON text, when the bytes are exactly one array or map: a
/// record the projections do not know (a corrupt or foreign one), its fields unnamed.
fn msgpack_as_json(bytes: &[u8]) -> Option<String> {
    let mut cursor = std::io::Cursor::new(bytes);
    let value: serde_json::Value =
        serde::Deserialize::deserialize(&mut rmp_serde::Deserializer::new(&mut cursor)).ok()?;
    // Only a whole record: raw keys and positions (binary) would decode as a number.
    (cursor.position() as usize == bytes.len() && (value.is_object() || value.is_array()))
        .then(|| value.to_string())
}

/// A tree's value as text: a record as JSON with its field names
/// (`projection::record_as_json`), other MessagePack as unnamed JSON, other bytes
/// escaped; cut at VALUE_SHOWN_BYTES_MAX.
pub fn printable(tree: &str, key: &[u8], bytes: &[u8]) -> String {
    let json = crate::projection::record_as_json(tree, key, bytes)
        .map(|v| v.to_string())
        .or_else(|| msgpack_as_json(bytes));
    if let Some(json) = json {
        if json.len() <= VALUE_SHOWN_BYTES_MAX {
            return json;
        }
        let cut: String = json.chars().take(VALUE_SHOWN_BYTES_MAX).collect();
        return format!("{cut}... ({} bytes)", bytes.len());
    }
    printable_bytes(bytes)
}

/// Bytes as text, escaped where not printable; cut at VALUE_SHOWN_BYTES_MAX.
pub fn printable_bytes(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(VALUE_SHOWN_BYTES_MAX)];
    let mut text = match std::str::from_utf8(cut) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        _ => cut.escape_ascii().to_string(),
    };
    if bytes.len() > cut.len() {
        text.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    text
}

/// Catches the live projections up, rebuilds them from the log into a temporary
/// store at the same position, and reports the first difference or the key counts.
pub async fn rebuild_check(
    live: &Projector,
    stream: &mut Stream,
    config: &LogConfig,
) -> Result<RebuildReport, ProjectionError> {
    live.catch_up(stream, config).await?;
    let position = live.position()?;
    // A temporary sled store is removed when dropped; nothing of it outlives the check.
    let scratch_db = sled::Config::new().temporary(true).open()?;
    let scratch = Projector::scratch(&scratch_db)?;
    scratch
        .catch_up_to(stream, config, position.last.stream_sequence)
        .await?;
    let mut trees = Vec::new();
    let mut difference = None;
    for ((name, live_records), (_, rebuilt_records)) in
        live.records().into_iter().zip(scratch.records())
    {
        let (keys, first) = compare(live_records, rebuilt_records)?;
        trees.push(TreeCount {
            tree: name.to_string(),
            keys,
        });
        if difference.is_none() {
            difference = first.map(|(key, live, rebuilt)| Difference {
                tree: name.to_string(),
                key: printable_bytes(&key),
                live: live.as_deref().map(|v| printable(name, &key, v)),
                rebuilt: rebuilt.as_deref().map(|v| printable(name, &key, v)),
            });
        }
    }
    Ok(RebuildReport {
        position: position.last.stream_sequence,
        trees,
        difference,
    })
}

type FirstDifference = Option<(Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>)>;

/// Walks both trees' records in key order; returns the rebuilt tree's record count and
/// the first key where they differ.
fn compare(
    mut a: Records<'_>,
    mut b: Records<'_>,
) -> Result<(u64, FirstDifference), ProjectionError> {
    let (mut x, mut y) = (a.next().transpose()?, b.next().transpose()?);
    let mut keys = 0u64;
    let mut first: FirstDifference = None;
    loop {
        match (&x, &y) {
            (None, None) => break,
            (Some((k, v)), Some((k2, v2))) if k == k2 => {
                keys += 1;
                if v != v2 && first.is_none() {
                    first = Some((k.to_vec(), Some(v.to_vec()), Some(v2.to_vec())));
                }
                x = a.next().transpose()?;
                y = b.next().transpose()?;
            }
            // Only live has this key (it sorts first, or rebuilt is done).
            (Some((k, v)), other) if other.as_ref().is_none_or(|(k2, _)| k < k2) => {
                if first.is_none() {
                    first = Some((k.to_vec(), Some(v.to_vec()), None));
                }
                x = a.next().transpose()?;
            }
            // Only rebuilt has this key.
            (_, Some((k2, v2))) => {
                keys += 1;
                if first.is_none() {
                    first = Some((k2.to_vec(), None, Some(v2.to_vec())));
                }
                y = b.next().transpose()?;
            }
            (Some(_), None) => unreachable!("handled above"),
        }
    }
    Ok((keys, first))
}
