//! What a gateway signs, and how the ledger checks it.
//!
//! Pure functions only (no clock, no I/O). docs/GATEWAYS.md §4 is the normative text and
//! must agree with this file byte for byte; `tests/gateway_sign.rs` checks its vector.
//!
//! A gateway signs `GATEWAY_POST_DOMAIN || P` with Ed25519, where `P` is the exact
//! encoded `GatewayPost` it sends in `SignedGatewayPost.post`. The ledger keeps `P` and the
//! signature as they arrived, so an auditor can later check which gateway said what
//! without trusting the ledger.

use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message;
use rust_decimal::Decimal;

use super::keys::Registry;
use crate::checkpoint::sign::KeyPair;
use crate::domain::payments::ids::GatewayTxnId;
use crate::proto::{GatewayPost, SignedGatewayPost};

/// Ed25519 by the gateway key over `GATEWAY_POST_DOMAIN || post bytes`.
pub const GATEWAY_POST_DOMAIN: &[u8] = b"ansinh/v1/gateway-post\0";
/// Largest encoded `GatewayPost` accepted. A real one is about 150 bytes; anything
/// larger is refused before any signature check or decoding.
pub const POST_BYTES_MAX: usize = 2048;
/// Longest id a gateway quotes back from an instruction (instruction id, beneficiary),
/// in bytes. Its own transaction id follows the book's rule instead (`check_post_shape`).
pub const POST_ID_BYTES_MAX: usize = 128;
/// Longest `reason`, in bytes.
pub const POST_REASON_BYTES_MAX: usize = 512;
/// The outcomes a gateway may report.
pub const OUTCOMES: [&str; 3] = ["settled", "failed", "returned"];

/// Why a signed post was refused. None of them is retryable unchanged: the gateway (or
/// whoever forged the post) must fix what it sends. `kind()` is the `error_kind` of the
/// "refused" reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayAuthError {
    /// More than POST_BYTES_MAX bytes: refused without decoding.
    #[error("post of {0} bytes exceeds {POST_BYTES_MAX}")]
    Oversized(usize),
    /// The subject's gateway has no key in the registry.
    #[error("gateway {0:?} is not registered")]
    UnknownGateway(String),
    /// No registered key has this id.
    #[error("key {0:?} is not registered")]
    UnknownKey(String),
    /// The key is registered, to another gateway than the subject's.
    #[error("key {key_id} belongs to gateway {owner}, not to {gateway}")]
    KeyOfAnotherGateway {
        key_id: String,
        owner: String,
        gateway: String,
    },
    /// The signature does not verify over the post bytes: forged or altered.
    #[error("the signature does not verify")]
    BadSignature,
    /// The signed bytes are not a protobuf GatewayPost.
    #[error("the signed bytes are not a GatewayPost: {0}")]
    Undecodable(String),
    /// The signed bytes are a GatewayPost but not its canonical encoding (unknown fields,
    /// repeated or out-of-order fields). One post has exactly one signed form, and the
    /// ledger must understand every byte a gateway signs.
    #[error("the signed bytes are not the canonical encoding of a GatewayPost")]
    NonCanonical,
    /// The post names another gateway than the subject's.
    #[error("the post is from gateway {inside:?}, sent on gateway {transport:?}'s subject")]
    GatewayMismatch { inside: String, transport: String },
    /// A field is empty, too long or out of its set.
    #[error("malformed {field}: {reason}")]
    Malformed { field: &'static str, reason: String },
    /// HTTP: a signature header is missing or not of its shape.
    #[error("header {header} is missing or malformed")]
    MissingSignature { header: &'static str },
    /// HTTP: a request that records nothing (a fetch) dated outside the replay window,
    /// so a captured fetch cannot be replayed later.
    #[error("the request is dated {skew_ms} ms away from the ledger's clock")]
    StaleRequest { skew_ms: i64 },
}

impl GatewayAuthError {
    /// The `error_kind` of the reply: stable, for machines.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Oversized(_) => "oversized_post",
            Self::UnknownGateway(_) => "unknown_gateway",
            Self::UnknownKey(_) => "unknown_key",
            Self::KeyOfAnotherGateway { .. } => "key_of_another_gateway",
            Self::BadSignature => "bad_signature",
            Self::Undecodable(_) => "undecodable_post",
            Self::NonCanonical => "noncanonical_post",
            Self::GatewayMismatch { .. } => "gateway_mismatch",
            Self::Malformed { .. } => "malformed_post",
            Self::MissingSignature { .. } => "missing_signature",
            Self::StaleRequest { .. } => "stale_request",
        }
    }
}

/// The message a gateway key signs: the domain prefix, then the post bytes.
pub fn signed_message(post_bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(GATEWAY_POST_DOMAIN.len() + post_bytes.len());
    m.extend_from_slice(GATEWAY_POST_DOMAIN);
    m.extend_from_slice(post_bytes);
    m
}

/// Signs a post with a gateway key. The post is encoded once; those bytes are what is
/// signed, sent and kept.
pub fn sign_post(key: &KeyPair, post: &GatewayPost) -> SignedGatewayPost {
    let bytes = post.encode_to_vec();
    let signature = key.sign(GATEWAY_POST_DOMAIN, &bytes);
    SignedGatewayPost {
        post: bytes.into(),
        signature: signature.to_vec().into(),
        key_id: key.key_id().to_string(),
    }
}

/// Checks a signed post that arrived on `transport_gateway_id`'s subject and returns the
/// decoded post. In order: size; the key id is registered to that gateway; the
/// signature verifies strictly over the exact bytes; the bytes decode canonically; the
/// post names that gateway; its fields have their shapes. Never panics.
pub fn verify_post(
    registry: &Registry,
    transport_gateway_id: &str,
    signed: &SignedGatewayPost,
) -> Result<GatewayPost, GatewayAuthError> {
    if signed.post.len() > POST_BYTES_MAX {
        return Err(GatewayAuthError::Oversized(signed.post.len()));
    }
    if !registry.has_gateway(transport_gateway_id) {
        return Err(GatewayAuthError::UnknownGateway(
            transport_gateway_id.to_string(),
        ));
    }
    check_signature(
        registry,
        transport_gateway_id,
        &signed.key_id,
        &signed.signature,
        &signed_message(&signed.post),
    )?;
    let post = GatewayPost::decode(signed.post.as_ref())
        .map_err(|e| GatewayAuthError::Undecodable(e.to_string()))?;
    if post.encode_to_vec() != signed.post.as_ref() {
        return Err(GatewayAuthError::NonCanonical);
    }
    if post.gateway_id != transport_gateway_id {
        return Err(GatewayAuthError::GatewayMismatch {
            inside: post.gateway_id,
            transport: transport_gateway_id.to_string(),
        });
    }
    check_post_shape(&post)?;
    Ok(post)
}

/// Checks that `key_id` is a key of `gateway` and that `signature` verifies strictly
/// over `message` (domain prefix included). The gateway is known to the registry.
fn check_signature(
    registry: &Registry,
    gateway: &str,
    key_id: &str,
    signature: &[u8],
    message: &[u8],
) -> Result<(), GatewayAuthError> {
    let key = registry
        .key(key_id)
        .ok_or_else(|| GatewayAuthError::UnknownKey(key_id.to_string()))?;
    if key.gateway_id != gateway {
        return Err(GatewayAuthError::KeyOfAnotherGateway {
            key_id: key.key_id.clone(),
            owner: key.gateway_id.clone(),
            gateway: gateway.to_string(),
        });
    }
    let public =
        VerifyingKey::from_bytes(&key.public_key).map_err(|_| GatewayAuthError::BadSignature)?;
    let signature = Signature::from_slice(signature).map_err(|_| GatewayAuthError::BadSignature)?;
    // verify_strict refuses small-order keys and non-canonical signatures, so one post
    // has one valid signature encoding per key.
    public
        .verify_strict(message, &signature)
        .map_err(|_| GatewayAuthError::BadSignature)
}

// ---------------------------------------------------------------- HTTP

/// Ed25519 by the gateway key over `GATEWAY_HTTP_DOMAIN || request bytes`, for the HTTP
/// transport. Another prefix than NATS posts', so a signature made for one transport
/// never verifies on the other.
pub const GATEWAY_HTTP_DOMAIN: &[u8] = b"ansinh/v1/gateway-http\0";

/// The bytes an HTTP gateway request signs, and the ledger keeps with a result:
/// `timestamp "\n" method " " path-and-query "\n" body`, the timestamp in decimal Unix
/// milliseconds exactly as sent in the timestamp header. Binding the method and path
/// keeps a signed fetch from passing as a post and a post to one gateway's route from
/// passing on another's.
pub fn http_request_bytes(
    timestamp: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut m =
        Vec::with_capacity(timestamp.len() + method.len() + path_and_query.len() + body.len() + 3);
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(method.as_bytes());
    m.push(b' ');
    m.extend_from_slice(path_and_query.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m
}

/// Signs HTTP request bytes (see `http_request_bytes`) with a gateway key: the 64-byte
/// signature, sent as 128 lowercase hex digits.
pub fn sign_http_request(key: &KeyPair, request_bytes: &[u8]) -> [u8; 64] {
    key.sign(GATEWAY_HTTP_DOMAIN, request_bytes)
}

/// Checks an HTTP request's signature: the gateway is registered, `key_id` is one of its
/// keys, and the signature verifies strictly over `GATEWAY_HTTP_DOMAIN || request_bytes`.
/// Never panics.
pub fn verify_http_request(
    registry: &Registry,
    gateway: &str,
    key_id: &str,
    signature: &[u8],
    request_bytes: &[u8],
) -> Result<(), GatewayAuthError> {
    if !registry.has_gateway(gateway) {
        return Err(GatewayAuthError::UnknownGateway(gateway.to_string()));
    }
    let message = [GATEWAY_HTTP_DOMAIN, request_bytes].concat();
    check_signature(registry, gateway, key_id, signature, &message)
}

/// Shape checks of a post's fields (what they are, not whether the ledger agrees).
pub fn check_post_shape(post: &GatewayPost) -> Result<(), GatewayAuthError> {
    check_text("instruction_id", &post.instruction_id, 1, POST_ID_BYTES_MAX)?;
    // The book's own rule for a reference (at most `ids::REF_CHARS_MAX` printable ASCII
    // characters, no space): an id it would refuse is refused here, typed, rather than
    // verified and then refused unrecorded by the ledger.
    GatewayTxnId::parse(&post.gateway_txn_id).map_err(|rejection| GatewayAuthError::Malformed {
        field: "gateway_txn_id",
        reason: rejection.to_string(),
    })?;
    check_text(
        "beneficiary_ref",
        &post.beneficiary_ref,
        1,
        POST_ID_BYTES_MAX,
    )?;
    check_text("reason", &post.reason, 0, POST_REASON_BYTES_MAX)?;
    if !OUTCOMES.contains(&post.outcome.as_str()) {
        return Err(GatewayAuthError::Malformed {
            field: "outcome",
            reason: format!("{:?} is not one of {OUTCOMES:?}", post.outcome),
        });
    }
    parse_whole_vnd(&post.amount).map_err(|reason| GatewayAuthError::Malformed {
        field: "amount",
        reason,
    })?;
    if post.posted_at_unix_ms <= 0 {
        return Err(GatewayAuthError::Malformed {
            field: "posted_at_unix_ms",
            reason: format!("{} is not a time after 1970", post.posted_at_unix_ms),
        });
    }
    Ok(())
}

/// A whole, positive number of đồng in its one canonical spelling: ASCII digits, no
/// sign, separator, fraction or leading zero, at most `MAX_AMOUNT` (`input::money`, the
/// one reading of an amount at every entrance).
pub fn parse_whole_vnd(text: &str) -> Result<Decimal, String> {
    crate::input::money(text).map_err(|e| e.to_string())
}

fn check_text(
    field: &'static str,
    text: &str,
    bytes_min: usize,
    bytes_max: usize,
) -> Result<(), GatewayAuthError> {
    if text.len() < bytes_min || text.len() > bytes_max || text.chars().any(char::is_control) {
        return Err(GatewayAuthError::Malformed {
            field,
            reason: format!("must be {bytes_min} to {bytes_max} bytes without control characters"),
        });
    }
    Ok(())
}
