//! /v1/gateways/{gateway}: the HTTP transport for payment gateways, beside NATS
//! (docs/GATEWAYS.md §9). A gateway authenticates by signing each request with its
//! Ed25519 key from the same registry as NATS (the ledger's directory); there is no
//! bearer token.
//!
//! Steps, in this order, so that nothing unauthenticated is even parsed:
//! 1. the path's gateway id, as sent (no escapes) -> 400; gateway routes served at
//!    all -> 404;
//! 2. the signature headers and the signature over the exact request bytes -> 401/403;
//! 3. (posts) the `Idempotency-Key` header -> 400; `Content-Type` -> 415; JSON, schema
//!    and field shapes -> 400;
//! 4. the ledger (`gateway_ledger::LedgerSink`): 201 accepted, 200 duplicate (the first
//!    answer), or a typed refusal (recorded or not).
//!
//! **Invariant:** the signed bytes and signature of an accepted or refused post are kept
//! in its event (`PostFormat::HttpV1`), so an auditor can check them without the ledger.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::book::payments::{PostFormat, SignedPost};
use crate::chain::Digest;
use crate::domain::Rejection;
use crate::gateway::is_gateway_id;
use crate::gateway::sign::{
    GatewayAuthError, POST_BYTES_MAX, check_post_shape, http_request_bytes, verify_http_request,
};
use crate::proto::{self, PaymentInstruction};
use crate::service::POST_REPLAY_WINDOW_MS;

use super::extract::{IdempotencyKey, Path};
use super::households::{ReceiptBody, created};
use super::{Api, ApiError};

/// Header: the request's time, decimal Unix milliseconds (UTC), as signed.
pub const TIMESTAMP_HEADER: &str = "ansinh-gateway-timestamp";
/// Header: the signing key's id (16 lowercase hex digits), as in the registry.
pub const KEY_ID_HEADER: &str = "ansinh-gateway-key-id";
/// Header: the Ed25519 signature, 128 lowercase hex digits.
pub const SIGNATURE_HEADER: &str = "ansinh-gateway-signature";
/// Longest timestamp header: 15 digits reach the year 33658.
const TIMESTAMP_DIGITS_MAX: usize = 15;
/// The routes' path up to the gateway id.
const GATEWAYS_PATH: &str = "/v1/gateways/";
/// Instructions per fetch unless `max` says otherwise.
pub const FETCH_DEFAULT: u32 = 100;
/// Domain separation of post fingerprints (idempotency keys, see `Api::claim`).
const FINGERPRINT_CONTEXT: &str = "ansinh v1 http gateway post fingerprint";

/// The signature headers of a request, checked for shape.
struct SignatureHeaders {
    timestamp: String,
    timestamp_ms: i64,
    key_id: String,
    signature: Vec<u8>,
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, GatewayAuthError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(GatewayAuthError::MissingSignature { header: name })
}

fn signature_headers(headers: &HeaderMap) -> Result<SignatureHeaders, GatewayAuthError> {
    let timestamp = header(headers, TIMESTAMP_HEADER)?;
    let timestamp_ms = (!timestamp.is_empty()
        && timestamp.len() <= TIMESTAMP_DIGITS_MAX
        && !timestamp.starts_with('0')
        && timestamp.bytes().all(|b| b.is_ascii_digit()))
    .then(|| timestamp.parse::<i64>().ok())
    .flatten()
    .ok_or(GatewayAuthError::MissingSignature {
        header: TIMESTAMP_HEADER,
    })?;
    let key_id = header(headers, KEY_ID_HEADER)?;
    let signature = hex::decode(header(headers, SIGNATURE_HEADER)?)
        .ok()
        .filter(|s| s.len() == 64)
        .ok_or(GatewayAuthError::MissingSignature {
            header: SIGNATURE_HEADER,
        })?;
    Ok(SignatureHeaders {
        timestamp: timestamp.to_string(),
        timestamp_ms,
        key_id: key_id.to_string(),
        signature,
    })
}

/// Steps 1 and 2: the gateway, and the signature over the request's exact bytes.
/// Returns the signature headers and the signed bytes.
fn authenticate(
    api: &Api,
    gateway: &str,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(SignatureHeaders, Vec<u8>), ApiError> {
    if !is_gateway_id(gateway) {
        return Err(ApiError::InvalidParameter(format!(
            "{gateway:?} is not a gateway id"
        )));
    }
    // The router hands over the id percent-decoded, while the signed bytes (and the event
    // that keeps them) hold the path as sent: `vc%62` would authenticate `vcb` and be
    // recorded under another spelling. A gateway id needs no escape, so only its own
    // spelling is taken.
    let sent = uri
        .path()
        .strip_prefix(GATEWAYS_PATH)
        .and_then(|rest| rest.split('/').next());
    if sent != Some(gateway) {
        return Err(ApiError::InvalidParameter(format!(
            "the path's gateway id must be sent as {gateway:?}, without escapes"
        )));
    }
    let edge = api.gateways().ok_or(ApiError::GatewaysDisabled)?;
    if body.len() > POST_BYTES_MAX {
        return Err(ApiError::GatewayAuth(GatewayAuthError::Oversized(
            body.len(),
        )));
    }
    let signature = signature_headers(headers).map_err(ApiError::GatewayAuth)?;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let bytes = http_request_bytes(&signature.timestamp, method.as_str(), path, body);
    verify_http_request(
        &edge.registry.current(),
        gateway,
        &signature.key_id,
        &signature.signature,
        &bytes,
    )
    .map_err(ApiError::GatewayAuth)?;
    Ok((signature, bytes))
}

/// The body of a post, after its schema.
#[derive(Debug, Deserialize)]
struct PostBody {
    instruction_id: String,
    outcome: String,
    gateway_txn_id: String,
    amount: String,
    beneficiary_ref: String,
    #[serde(default)]
    reason: String,
}

/// POST /v1/gateways/{gateway}/posts
pub async fn post(
    State(api): State<Api>,
    Path(gateway): Path<String>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (signature, signed_bytes) = authenticate(&api, &gateway, &method, &uri, &headers, &body)?;
    let key = IdempotencyKey::from_headers(&headers)?;
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let value: Value =
        crate::strict_json::parse(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    api.schemas()
        .validate("gateway-post.request", &value)
        .map_err(ApiError::SchemaViolation)?;
    // The fingerprint is the post's content, not its signature or timestamp: the same
    // result signed again later under the same key is the same request.
    let mut hasher = blake3::Hasher::new_derive_key(FINGERPRINT_CONTEXT);
    hasher.update(&(gateway.len() as u64).to_be_bytes());
    hasher.update(gateway.as_bytes());
    hasher.update(&serde_json::to_vec(&value).expect("a Value serializes"));
    let fingerprint = Digest(*hasher.finalize().as_bytes());
    let body: PostBody =
        serde_json::from_value(value).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let post = proto::GatewayPost {
        gateway_id: gateway.clone(),
        instruction_id: body.instruction_id,
        outcome: body.outcome,
        gateway_txn_id: body.gateway_txn_id,
        amount: body.amount,
        beneficiary_ref: body.beneficiary_ref,
        posted_at_unix_ms: signature.timestamp_ms,
        reason: body.reason,
    };
    check_post_shape(&post).map_err(ApiError::GatewayAuth)?;
    let scoped = format!("gw:{gateway}:{}", key.0);
    let edge = api.gateways().ok_or(ApiError::GatewaysDisabled)?;
    // The signature does not cover the Idempotency-Key, and binding a key writes to the
    // shared requests bucket (and a refusal writes again to free it): a captured post
    // replayed under fresh keys would cost two writes each. So one dated outside the
    // replay window is refused before any write, as the ledger would refuse it as a new
    // post, unless its key is already bound to this very post (a retry, which `claim`
    // answers without writing, and the ledger with its first answer if it was recorded).
    let skew_ms = edge
        .sink
        .now_ms()
        .saturating_sub(signature.timestamp_ms)
        .abs();
    if skew_ms > POST_REPLAY_WINDOW_MS && !api.bound_to(&scoped, &fingerprint).await? {
        return Err(ApiError::Rejected(Rejection::PostOutsideReplayWindow {
            skew_ms,
        }));
    }
    api.claim(&scoped, &fingerprint).await?;
    let kept = SignedPost {
        bytes: signed_bytes,
        signature: signature.signature,
        key_id: signature.key_id,
        format: PostFormat::HttpV1,
    };
    match edge.sink.record(&gateway, &post, kept).await {
        Ok(recorded) => match recorded.refusal {
            Some(refusal) => Err(ApiError::PostRefused {
                refusal,
                partition: recorded.receipt.partition,
                sequence: recorded.receipt.sequence,
            }),
            None => Ok(created(
                recorded.receipt.duplicate,
                ReceiptBody::new(&recorded.receipt, None),
            )),
        },
        // A refusal frees the key for the corrected post; a failure keeps it bound.
        Err(e) => Err(api.failed(&scoped, &fingerprint, e.into()).await),
    }
}

#[derive(Debug, Deserialize)]
pub struct FetchQuery {
    max: Option<u32>,
    /// The last instruction id of the previous page.
    #[serde(default)]
    after: String,
}

#[derive(Serialize)]
struct InstructionBody {
    instruction_id: String,
    beneficiary_ref: String,
    amount: String,
    channel: String,
    period: String,
    commune: String,
    gateway_id: String,
}

impl From<PaymentInstruction> for InstructionBody {
    fn from(i: PaymentInstruction) -> Self {
        Self {
            instruction_id: i.instruction_id,
            beneficiary_ref: i.beneficiary_ref,
            amount: i.amount,
            channel: i.channel,
            period: i.period,
            commune: i.commune,
            gateway_id: i.gateway_id,
        }
    }
}

#[derive(Serialize)]
struct InstructionsBody {
    instructions: Vec<InstructionBody>,
}

/// GET /v1/gateways/{gateway}/instructions?max=N
pub async fn instructions(
    State(api): State<Api>,
    Path(gateway): Path<String>,
    query: Result<Query<FetchQuery>, axum::extract::rejection::QueryRejection>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (signature, _) = authenticate(&api, &gateway, &method, &uri, &headers, &[])?;
    // Read only once the signature (which covers the query) verifies, and refused as a
    // typed error like every other parameter.
    let Query(query) = query.map_err(|e| ApiError::InvalidParameter(e.body_text()))?;
    let edge = api.gateways().ok_or(ApiError::GatewaysDisabled)?;
    // A fetch records nothing, so nothing makes a replayed one a duplicate: refuse one
    // dated outside the window instead.
    let skew_ms = edge
        .sink
        .now_ms()
        .saturating_sub(signature.timestamp_ms)
        .abs();
    if skew_ms > POST_REPLAY_WINDOW_MS {
        return Err(ApiError::GatewayAuth(GatewayAuthError::StaleRequest {
            skew_ms,
        }));
    }
    let list = edge
        .sink
        .pending(&gateway, &query.after, query.max.unwrap_or(FETCH_DEFAULT))
        .await?;
    Ok(Json(InstructionsBody {
        instructions: list
            .into_iter()
            .filter(|i| i.gateway_id == gateway)
            .map(InstructionBody::from)
            .collect(),
    })
    .into_response())
}
