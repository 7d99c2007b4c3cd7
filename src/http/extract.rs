//! Extractors: the caller (bearer token), the idempotency key, the path's parameters,
//! and a body checked against its schema. Handlers list them in this order, so a request is refused for
//! authentication before its headers, and for its headers before its body.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::access::Caller;
use crate::chain::Digest;

use super::{Api, ApiError};

/// The longest accepted `Idempotency-Key`. The ledger key adds the caller id (at most
/// `auth::STAFF_ID_BYTES_MAX`) and a suffix for moves, and must stay within
/// `log::writer::IDEMPOTENCY_KEY_BYTES_MAX` (128).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = crate::input::IDEMPOTENCY_KEY_CHARS_MAX;
const _: () = assert!(
    "http:".len() + super::auth::STAFF_ID_BYTES_MAX + 1 + IDEMPOTENCY_KEY_BYTES_MAX + "/out".len()
        <= crate::log::writer::IDEMPOTENCY_KEY_BYTES_MAX
);
/// Domain separation of request fingerprints (see `Api::claim`).
const FINGERPRINT_CONTEXT: &str = "ansinh v1 http request fingerprint";

/// The authenticated caller.
pub struct Staff(pub Caller);

impl FromRequestParts<Api> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthenticated)?;
        api.staff()
            .authenticate(token)
            .cloned()
            .map(Staff)
            .ok_or(ApiError::Unauthenticated)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The route's path parameters, as `axum::extract::Path` reads them, refused in the
/// API's JSON error body: axum's own rejection is plain text, which a client matching
/// on `error` cannot read (a segment that percent-decodes to bytes that are not UTF-8,
/// a number that does not parse).
pub struct Path<T>(pub T);

impl<T> FromRequestParts<Api> for Path<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, api).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            // The router's parameters missing or of the wrong count: a route and its
            // handler disagree, which no request can fix.
            Err(e) if e.status().is_server_error() => Err(ApiError::Internal(e.body_text())),
            Err(e) => Err(ApiError::InvalidParameter(e.body_text())),
        }
    }
}

/// The `Idempotency-Key` header of a write.
pub struct IdempotencyKey(pub String);

impl IdempotencyKey {
    /// The key handed to the ledger: scoped by the caller, so two callers' keys never
    /// meet, and nobody can read another caller's receipt by guessing its key.
    ///
    /// `http:<caller id>:<key>`. Staff ids may hold `:` but a key may not
    /// (`from_headers`), so the text after the last `:` is the key and the rest names the
    /// caller: `staff:an` with key `2:K` and `staff:an:2` with `K` can never meet.
    pub fn scoped(&self, caller: &Caller) -> String {
        format!("http:{}:{}", caller.id, self.0)
    }
}

impl FromRequestParts<Api> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Api) -> Result<Self, ApiError> {
        Self::from_headers(&parts.headers)
    }
}

impl IdempotencyKey {
    /// The key from request headers (for handlers that must check something else first).
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let value = headers
            .get("idempotency-key")
            .ok_or(ApiError::MissingIdempotencyKey)?;
        let key = value
            .to_str()
            .map_err(|_| ApiError::InvalidIdempotencyKey)?;
        Self::parse(key)
    }

    /// A key a client chose (a header, a console form's field): 1 to 64 visible ASCII
    /// characters, and no `:`, so that the scoped key reads back one way only (`scoped`).
    pub fn parse(key: &str) -> Result<Self, ApiError> {
        if key.contains(':') {
            return Err(ApiError::InvalidIdempotencyKey);
        }
        crate::input::idempotency_key(key)
            .map(IdempotencyKey)
            .map_err(|_| ApiError::InvalidIdempotencyKey)
    }
}

/// A request body type and the schema it is checked against first.
pub trait RequestBody: DeserializeOwned {
    /// Name in `schema::SOURCES`.
    const SCHEMA: &'static str;
}

/// A body read by `strict_json` (no repeated member, no control character, text in NFC)
/// that passed its schema, with the request's fingerprint: method, path and the
/// body in canonical form (serde_json's map keeps keys sorted), so the same request
/// sent again with other spacing or key order has the same fingerprint.
pub struct Body<T> {
    pub value: T,
    pub fingerprint: Digest,
}

impl<T: RequestBody> FromRequest<Api> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, api: &Api) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let route = format!("{} {}", req.method(), req.uri().path());
        let bytes = Bytes::from_request(req, api)
            .await
            .map_err(body_rejection)?;
        let value: Value = crate::strict_json::parse(&bytes)
            .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        api.schemas()
            .validate(T::SCHEMA, &value)
            .map_err(ApiError::SchemaViolation)?;
        let mut hasher = blake3::Hasher::new_derive_key(FINGERPRINT_CONTEXT);
        hasher.update(&(route.len() as u64).to_be_bytes());
        hasher.update(route.as_bytes());
        hasher.update(&serde_json::to_vec(&value).expect("a Value serializes"));
        let fingerprint = Digest(*hasher.finalize().as_bytes());
        // The schema admits only what the type reads, so this fails only if the two
        // drifted apart; answer as for bad JSON, which names the field.
        let value = serde_json::from_value::<T>(value)
            .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        Ok(Body { value, fingerprint })
    }
}

fn body_rejection(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::MalformedJson(e.body_text())
    }
}
