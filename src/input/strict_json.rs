//! One reading of JSON for everything the ledger reads: HTTP bodies, gateway posts over
//! HTTP, and the files it loads (staff, gateway registry).
//!
//! An append-only ledger cannot take anything back, so a document must have exactly one
//! meaning before any of it reaches a decision:
//! - **a member name appears once per object** (I-JSON, RFC 7493 §2.3). serde_json keeps
//!   the last of two `"amount"` members; a proxy, a log or a reviewer reading the first
//!   would see another amount than the one recorded;
//! - **no lone surrogate** (serde_json already refuses `"\ud800"`; tested here);
//! - **text is text**: no C0 or C1 control character and no Unicode non-character in any
//!   string or member name, raw or escaped (`"An\u0000"` is refused);
//! - **one form of each text**: every string is normalised to Unicode NFC, so a name
//!   typed with decomposed Vietnamese marks (`e` + U+0302 + U+0301) is the same name,
//!   the same sealed bytes and the same fingerprint as the composed `ế`.
//!
//! **Boundary:** pure; callers turn [`JsonError`] into their own refusal (a 400 naming the
//! member, a refused gateway post, a file error naming the file).

use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

use crate::input::bad_char;

/// Nesting deeper than this is refused: no document the ledger reads needs more, and
/// it bounds the recursion of the checks below (serde_json itself stops at 128).
pub const DEPTH_MAX: usize = 32;

/// Why a document was refused. Each variant names where, as a path like `members[2].name`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON (syntax, a lone surrogate, trailing data).
    #[error("malformed JSON: {0}")]
    Syntax(String),
    /// An object names the member twice.
    #[error("member {member:?} appears more than once in {at}")]
    DuplicateMember { at: String, member: String },
    /// A string holds a control character or a non-character.
    #[error("{at}: text may not contain {what} (U+{code:04X})")]
    BadText {
        at: String,
        what: &'static str,
        code: u32,
    },
    #[error("{at}: nested deeper than {DEPTH_MAX} levels")]
    TooDeep { at: String },
}

impl JsonError {
    /// The member or path the refusal is about (empty for syntax errors).
    pub fn at(&self) -> &str {
        match self {
            JsonError::Syntax(_) => "",
            JsonError::DuplicateMember { at, .. }
            | JsonError::BadText { at, .. }
            | JsonError::TooDeep { at } => at,
        }
    }
}

/// Parses `bytes` as one strict JSON document, with every string in NFC.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = match Unique.deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => return Err(duplicate_or_syntax(&e)),
    };
    de.end().map_err(|e| JsonError::Syntax(e.to_string()))?;
    let mut value = value;
    check_text(&mut value, &mut String::from("$"), 0)?;
    Ok(value)
}

/// Parses `text` strictly, then reads it as `T`.
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, JsonError> {
    let value = parse(text.as_bytes())?;
    serde_json::from_value(value).map_err(|e| JsonError::Syntax(e.to_string()))
}

/// Parses `bytes` strictly, then reads them as `T`.
pub fn from_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    let value = parse(bytes)?;
    serde_json::from_value(value).map_err(|e| JsonError::Syntax(e.to_string()))
}

/// The marker the map visitor puts in its error, so `parse` can tell a duplicate apart
/// from a syntax error without a second parse.
const DUPLICATE_MARK: &str = "\u{1}duplicate member\u{1}";

fn duplicate_or_syntax(e: &serde_json::Error) -> JsonError {
    let text = e.to_string();
    match text.strip_prefix(DUPLICATE_MARK) {
        Some(rest) => JsonError::DuplicateMember {
            at: format!("the object at line {} column {}", e.line(), e.column()),
            // serde_json appends " at line L column C" to the message.
            member: rest
                .rsplit_once(" at line ")
                .map_or(rest, |(member, _)| member)
                .to_string(),
        },
        None => JsonError::Syntax(text),
    }
}

/// A `serde_json::Value` whose objects refuse a repeated member name.
struct Unique;

impl<'de> DeserializeSeed<'de> for Unique {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Unique.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Unique)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // Compared as read: "é" composed and decomposed are two names here, and
            // `check_text` refuses the pair once both are normalised (below).
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("{DUPLICATE_MARK}{key}")));
            }
            let value = map.next_value_seed(Unique)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Refuses a bad character in `s` (named at `at`); returns the NFC form of `s` where it
/// differs from `s`.
fn check_str(s: &str, at: &str) -> Result<Option<String>, JsonError> {
    if let Some(c) = s.chars().find(|c| bad_char(*c).is_some()) {
        return Err(JsonError::BadText {
            at: at.to_string(),
            what: bad_char(c).expect("found above"),
            code: c as u32,
        });
    }
    // Most strings are NFC already (every ASCII one is): the quick check answers those
    // without a copy through the normaliser, which was half of parsing a registration.
    if s.is_ascii() || is_nfc_quick(s.chars()) == IsNormalized::Yes {
        return Ok(None);
    }
    let normal: String = s.nfc().collect();
    Ok((normal != s).then_some(normal))
}

/// Refuses bad characters and normalises every string and member name to NFC, in place.
fn check_text(value: &mut Value, at: &mut String, depth: usize) -> Result<(), JsonError> {
    if depth > DEPTH_MAX {
        return Err(JsonError::TooDeep { at: at.clone() });
    }
    match value {
        Value::String(s) => {
            if let Some(normal) = check_str(s, at)? {
                *s = normal;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = at.len();
                write!(at, "[{i}]").expect("writing to a String cannot fail");
                check_text(item, at, depth + 1)?;
                at.truncate(len);
            }
        }
        Value::Object(map) => {
            // Checked in place; only the names whose NFC form differs (rare: every
            // ASCII name is NFC) are moved, which rebuilding every object cost a tenth
            // of parsing a registration.
            let mut renamed = Vec::new();
            for (key, item) in map.iter_mut() {
                let len = at.len();
                at.push('.');
                at.push_str(key);
                if let Some(normal) = check_str(key, at)? {
                    renamed.push((key.clone(), normal));
                }
                check_text(item, at, depth + 1)?;
                at.truncate(len);
            }
            for (key, normal) in renamed {
                let item = map.remove(&key).expect("a member named just above");
                if map.contains_key(&normal) {
                    // Two spellings of one name, composed and decomposed.
                    return Err(JsonError::DuplicateMember {
                        at: at.clone(),
                        member: normal,
                    });
                }
                map.insert(normal, item);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_member_is_refused_naming_it() {
        let e =
            parse(br#"{"amount": "1000", "amount": "29000000", "on": "2026-05-01"}"#).unwrap_err();
        assert!(
            matches!(&e, JsonError::DuplicateMember { member, .. } if member == "amount"),
            "{e:?}"
        );
        let nested = parse(r#"{"head": {"name": "An", "name": "Bình"}}"#.as_bytes()).unwrap_err();
        assert!(
            matches!(nested, JsonError::DuplicateMember { .. }),
            "{nested:?}"
        );
        // Distinct members in distinct objects are fine.
        assert!(parse(br#"[{"a": 1}, {"a": 2}]"#).is_ok());
    }

    #[test]
    fn control_characters_lone_surrogates_and_non_characters_are_refused() {
        for bad in [
            r#"{"name": "An\u0000"}"#,
            r#"{"name": "An\u001b[31m"}"#,
            r#"{"name": "An\u0085"}"#,
            r#"{"name": "An\ufffe"}"#,
            r#"{"name": "An\ufdd0"}"#,
            r#"{"na\u0007me": "An"}"#,
        ] {
            let e = parse(bad.as_bytes()).unwrap_err();
            assert!(matches!(e, JsonError::BadText { .. }), "{bad}: {e:?}");
        }
        let e = parse(br#"{"name": "An\ud800"}"#).unwrap_err();
        assert!(matches!(e, JsonError::Syntax(_)), "{e:?}");
        assert!(matches!(
            parse(br#"{"a": 1} {"b": 2}"#).unwrap_err(),
            JsonError::Syntax(_)
        ));
    }

    #[test]
    fn text_is_normalised_to_nfc_so_one_name_has_one_form() {
        let composed = parse("{\"name\": \"Nguy\u{1EC5}n\"}".as_bytes()).unwrap();
        let decomposed = parse("{\"name\": \"Nguye\u{0302}\u{0303}n\"}".as_bytes()).unwrap();
        assert_eq!(composed, decomposed);
        assert_eq!(composed["name"], "Nguy\u{1EC5}n");
        // A member name is normalised too, its value kept.
        let renamed = parse("{\"te\u{0302}n\": \"An\", \"z\": 1}".as_bytes()).unwrap();
        assert_eq!(renamed, serde_json::json!({"t\u{00EA}n": "An", "z": 1}));
        // A member named twice, once composed and once decomposed, is one name twice.
        let e = parse("{\"t\u{00EA}n\": 1, \"te\u{0302}n\": 2}".as_bytes()).unwrap_err();
        assert!(matches!(e, JsonError::DuplicateMember { .. }), "{e:?}");
    }

    proptest::proptest! {
        /// Any bytes: an answer, never a panic; and what is accepted holds no bad text.
        #[test]
        fn any_bytes_are_answered_and_accepted_text_is_clean(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            if let Ok(value) = parse(&bytes) {
                let text = value.to_string();
                proptest::prop_assert!(!text.chars().any(|c| bad_char(c).is_some()));
            }
        }

        /// Any string as a member value: refused exactly when it holds a bad character,
        /// and when accepted it comes back as its NFC form, which parses to itself.
        #[test]
        fn a_string_value_round_trips_as_its_nfc_form(text in "\\PC{0,40}|[\\x00-\\x{10FFFF}]{0,8}") {
            let doc = serde_json::json!({ "name": text.clone() }).to_string();
            match parse(doc.as_bytes()) {
                Ok(value) => {
                    proptest::prop_assert!(!text.chars().any(|c| bad_char(c).is_some()));
                    let nfc: String = text.nfc().collect();
                    proptest::prop_assert_eq!(value["name"].as_str(), Some(nfc.as_str()));
                    proptest::prop_assert_eq!(parse(value.to_string().as_bytes()).unwrap(), value);
                }
                Err(e) => {
                    proptest::prop_assert!(matches!(e, JsonError::BadText { .. }), "{e:?}");
                    proptest::prop_assert!(text.chars().any(|c| bad_char(c).is_some()));
                }
            }
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        assert!(matches!(
            parse(deep.as_bytes()).unwrap_err(),
            JsonError::TooDeep { .. }
        ));
    }
}
