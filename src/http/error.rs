//! The one error type of the HTTP boundary, and the status code of each refusal.
//!
//! Every error answer is `{"error": kind, "message": ...}` (schemas/http/error.response.json),
//! plus `violations` for a schema violation. `kind` is stable: clients match on it.
//!
//! Status codes:
//! - 400: the request itself is malformed (JSON, schema, headers, path parameters).
//! - 401: no or unknown bearer token. 403: the role may not, or the unit is not the
//!   caller's (`access`, or the book's own unit check on a loan).
//! - 404: the household, loan or event does not exist.
//! - 409 (Conflict): the book's *state* forbids the operation whatever its values: it
//!   already exists, is already done, has the wrong status, or would be back-dated.
//!   Re-read the state before retrying. `NothingToRecord` is here too.
//! - 422 (Unprocessable): the values break a rule. Some rules compare with the book
//!   (`Overpayment`: more than is owed; `DisbursementOverApproved`; `AmountOverCap`),
//!   but a corrected value would pass. Also `IdempotencyKeyReused`, and a reason that
//!   reads as nothing (`BlankText`, under the book's own kind for an empty one).
//! - 413 body too large, 415 not JSON, 503 ledger unavailable, request timed out or
//!   the projections busy being written (retry with the same `Idempotency-Key`), 500 a
//!   defect.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::access::AccessError;
use crate::domain::Rejection;
use crate::domain::payments::instructions::PostRefusal;
use crate::gateway::sign::GatewayAuthError;
use crate::log::AppendError;
use crate::personal::VaultError;
use crate::projection::ProjectionError;
use crate::service::ServiceError;

use super::schema::Violation;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (or not the JSON its schema describes): fix the client.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body breaks its schema: the violations say where.
    #[error("the body does not match its schema ({} violations)", .0.len())]
    SchemaViolation(Vec<Violation>),
    /// The body is over `REQUEST_BODY_BYTES_MAX`.
    #[error("the body is over {} bytes", super::REQUEST_BODY_BYTES_MAX)]
    PayloadTooLarge,
    /// A body without `Content-Type: application/json`.
    #[error("the body must be sent as application/json")]
    UnsupportedMediaType,
    /// A write without an `Idempotency-Key` header: send one (a fresh UUID per
    /// operation, the same one on every retry of it).
    #[error("the Idempotency-Key header is missing")]
    MissingIdempotencyKey,
    #[error(
        "the Idempotency-Key header must be 1 to {} visible ASCII characters other than ':' and '#'",
        super::extract::IDEMPOTENCY_KEY_BYTES_MAX
    )]
    InvalidIdempotencyKey,
    /// The key was already used by this caller for a different request: use a new key.
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    /// A path or query parameter cannot name anything (e.g. "abc" as a household id).
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// A text the audit trail records (a reason, a decision's or an erasure's reference)
    /// that reads as nothing: only spaces and invisible characters (U+200B, U+2060...).
    /// 422 under the kind the book refuses an empty one with (`missing`:
    /// `MissingReason`, `MissingDisasterReference`), so a client matches one kind
    /// whichever refused it: write what the trail should say.
    #[error("{field} has no visible character, only spaces and invisible ones: {missing}")]
    BlankText {
        field: &'static str,
        missing: Rejection,
    },
    #[error("a valid bearer token is required")]
    Unauthenticated,
    #[error("{0}")]
    Denied(AccessError),
    #[error("{0}")]
    Rejected(Rejection),
    /// The household's personal data were erased; the operation needs them.
    #[error("the household's personal data were erased")]
    PersonalDataErased,
    /// NATS, the stream or a partition writer cannot take the request now: retry later
    /// with the same idempotency key.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    #[error("the request took longer than {} ms", super::REQUEST_TIMEOUT_MS)]
    Timeout,
    #[error("no such route")]
    NoSuchRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A defect or a broken store; logged in full, answered briefly.
    #[error("internal error: {0}")]
    Internal(String),
    /// Gateway routes: the request's signature or its gateway is wrong (401; 403 for a
    /// key of another gateway), or the post's fields have the wrong shape (400). Nothing
    /// was recorded.
    #[error("{0}")]
    GatewayAuth(GatewayAuthError),
    /// Gateway routes: the instruction id names no instruction of this ledger. Nothing
    /// was recorded.
    #[error("instruction {0:?} is not an instruction of this ledger")]
    UnknownInstruction(String),
    /// A report named something the log has never seen (a partition, a commune): an
    /// empty answer would read as "nothing wrong with it".
    #[error("the log has no {what} {value}")]
    NotFound { what: &'static str, value: String },
    /// Gateway routes: the ledger refused the result **and recorded the refusal**
    /// (reconciliation lists it). The same post again gets this same answer.
    #[error("refused ({refusal:?}); recorded as partition {partition} sequence {sequence}")]
    PostRefused {
        refusal: PostRefusal,
        partition: String,
        sequence: u64,
    },
    /// Gateway routes are not served by this process (no gateway registry).
    #[error("this server does not serve gateways")]
    GatewaysDisabled,
    /// An auditor bundle could not be made: not yet covered by a signed checkpoint (409,
    /// `NotCovered`: wait for the next checkpoint), nothing to put in it (404), too many
    /// events (422), or the streams could not be read (503).
    #[error("{0}")]
    Export(crate::bundle::export::ExportError),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    violations: Option<&'a [Violation]>,
}

/// A malformed value, refused for what it is (400), before anyone's rights are asked.
impl From<crate::input::InputError> for ApiError {
    fn from(e: crate::input::InputError) -> Self {
        ApiError::InvalidParameter(e.to_string())
    }
}

impl ApiError {
    /// The stable name clients match on.
    pub fn kind(&self) -> String {
        match self {
            ApiError::MalformedJson(_) => "MalformedJson".into(),
            ApiError::SchemaViolation(_) => "SchemaViolation".into(),
            ApiError::PayloadTooLarge => "PayloadTooLarge".into(),
            ApiError::UnsupportedMediaType => "UnsupportedMediaType".into(),
            ApiError::MissingIdempotencyKey => "MissingIdempotencyKey".into(),
            ApiError::InvalidIdempotencyKey => "InvalidIdempotencyKey".into(),
            ApiError::IdempotencyKeyReused => "IdempotencyKeyReused".into(),
            ApiError::InvalidParameter(_) => "InvalidParameter".into(),
            ApiError::BlankText { missing, .. } => rejection_kind(missing),
            ApiError::Unauthenticated => "Unauthenticated".into(),
            ApiError::Denied(AccessError::RoleDenied { .. }) => "RoleDenied".into(),
            ApiError::Denied(AccessError::OutsideUnit { .. }) => "OutsideUnit".into(),
            ApiError::Rejected(r) => rejection_kind(r),
            ApiError::PersonalDataErased => "PersonalDataErased".into(),
            ApiError::Unavailable(_) => "LedgerUnavailable".into(),
            ApiError::Timeout => "Timeout".into(),
            ApiError::NoSuchRoute => "NoSuchRoute".into(),
            ApiError::MethodNotAllowed => "MethodNotAllowed".into(),
            ApiError::Internal(_) => "Internal".into(),
            ApiError::GatewayAuth(e) => gateway_auth_kind(e).into(),
            ApiError::UnknownInstruction(_) => "UnknownInstruction".into(),
            ApiError::NotFound { .. } => "NotFound".into(),
            ApiError::PostRefused { refusal, .. } => format!("{refusal:?}")
                .split(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap_or_default()
                .to_owned(),
            ApiError::GatewaysDisabled => "GatewaysDisabled".into(),
            ApiError::Export(e) => export_kind(e).into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_)
            | ApiError::SchemaViolation(_)
            | ApiError::MissingIdempotencyKey
            | ApiError::InvalidIdempotencyKey
            | ApiError::InvalidParameter(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BlankText { missing, .. } => rejection_status(missing),
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Denied(_) => StatusCode::FORBIDDEN,
            ApiError::Rejected(r) => rejection_status(r),
            ApiError::PersonalDataErased => StatusCode::CONFLICT,
            ApiError::Unavailable(_) | ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NoSuchRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::GatewayAuth(e) => gateway_auth_status(e),
            ApiError::UnknownInstruction(_)
            | ApiError::GatewaysDisabled
            | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::PostRefused { refusal, .. } => post_refusal_status(refusal),
            ApiError::Export(e) => export_status(e),
        }
    }
}

/// The kind of a bundle that could not be exported.
fn export_kind(e: &crate::bundle::export::ExportError) -> &'static str {
    use crate::bundle::export::ExportError as E;
    use crate::checkpoint::CheckpointError as C;
    match e {
        E::NotCovered { .. } | E::Checkpoint(C::NoCheckpoint { .. }) => "NotCovered",
        E::Empty(_) => "NothingToExport",
        E::TooMany => "TooManyEvents",
        E::BadScope(_) | E::Checkpoint(C::BadRequest(_)) => "InvalidParameter",
        E::SelfCheck(_) => "Internal",
        E::Checkpoint(_) => "LedgerUnavailable",
    }
}

/// 409 until a checkpoint covers the scope (nothing is wrong; it comes with the next
/// one), 404 for a scope the log says nothing of, 422 for one too large for a bundle.
fn export_status(e: &crate::bundle::export::ExportError) -> StatusCode {
    match export_kind(e) {
        "NotCovered" => StatusCode::CONFLICT,
        "NothingToExport" => StatusCode::NOT_FOUND,
        "TooManyEvents" => StatusCode::UNPROCESSABLE_ENTITY,
        "InvalidParameter" => StatusCode::BAD_REQUEST,
        "Internal" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The kind of a gateway authentication failure, in this API's spelling.
fn gateway_auth_kind(e: &GatewayAuthError) -> &'static str {
    match e {
        GatewayAuthError::Oversized(_) => "PayloadTooLarge",
        GatewayAuthError::UnknownGateway(_) => "UnknownGateway",
        GatewayAuthError::UnknownKey(_) => "UnknownKey",
        GatewayAuthError::KeyOfAnotherGateway { .. } => "KeyOfAnotherGateway",
        GatewayAuthError::BadSignature => "BadSignature",
        GatewayAuthError::MissingSignature { .. } => "MissingSignature",
        GatewayAuthError::StaleRequest { .. } => "StaleRequest",
        GatewayAuthError::Undecodable(_)
        | GatewayAuthError::NonCanonical
        | GatewayAuthError::GatewayMismatch { .. }
        | GatewayAuthError::Malformed { .. } => "MalformedPost",
    }
}

/// 401: we do not know who sent it (or when). 403: we know, and it may not. 400/413:
/// the signed request is the gateway's, but malformed.
fn gateway_auth_status(e: &GatewayAuthError) -> StatusCode {
    match e {
        GatewayAuthError::UnknownGateway(_)
        | GatewayAuthError::UnknownKey(_)
        | GatewayAuthError::BadSignature
        | GatewayAuthError::MissingSignature { .. }
        | GatewayAuthError::StaleRequest { .. } => StatusCode::UNAUTHORIZED,
        GatewayAuthError::KeyOfAnotherGateway { .. } => StatusCode::FORBIDDEN,
        GatewayAuthError::Oversized(_) => StatusCode::PAYLOAD_TOO_LARGE,
        GatewayAuthError::Undecodable(_)
        | GatewayAuthError::NonCanonical
        | GatewayAuthError::GatewayMismatch { .. }
        | GatewayAuthError::Malformed { .. } => StatusCode::BAD_REQUEST,
    }
}

/// A recorded refusal's status, by the same rules as the book's refusals (module doc).
/// No wildcard arm: a new refusal must be placed here on purpose.
fn post_refusal_status(r: &PostRefusal) -> StatusCode {
    match r {
        PostRefusal::NotYourInstruction => StatusCode::FORBIDDEN,
        PostRefusal::UnknownInstruction => StatusCode::NOT_FOUND,
        PostRefusal::SettledAfterReturned
        | PostRefusal::AlreadySettled { .. }
        | PostRefusal::NotPending { .. }
        | PostRefusal::TransactionIdReused { .. } => StatusCode::CONFLICT,
        PostRefusal::BeneficiaryMismatch | PostRefusal::AmountMismatch { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
    }
}

impl From<crate::gateway_ledger::SinkError> for ApiError {
    fn from(e: crate::gateway_ledger::SinkError) -> Self {
        use crate::gateway_ledger::SinkError;
        match e {
            SinkError::UnknownInstruction(i) => ApiError::UnknownInstruction(i),
            SinkError::Rejected(r) => ApiError::Rejected(r),
            SinkError::Unavailable(m) => ApiError::Unavailable(m),
            SinkError::Broken(m) => ApiError::Internal(m),
        }
    }
}

/// A refusal's variant name ("Overpayment").
pub fn rejection_kind(r: &Rejection) -> String {
    r.kind()
}

/// The status of each refusal (see the module doc). No wildcard arm: a new refusal
/// must be placed here on purpose.
pub fn rejection_status(r: &Rejection) -> StatusCode {
    use Rejection::*;
    match r {
        HouseholdNotRegistered { .. } | UnknownLoan { .. } | UnknownEvent { .. } => {
            StatusCode::NOT_FOUND
        }
        // The book's own unit check on a loan (only the book knows its household).
        OutsideUnit { .. } => StatusCode::FORBIDDEN,
        HouseholdExists { .. }
        | CitizenAlreadyRegistered { .. }
        | CitizenRegisteredOutsideUnit
        | HouseholdInactive { .. }
        | AlreadyErased { .. }
        | HouseholdMovedAway { .. }
        | RegistryBackDated { .. }
        | OpenLoans { .. }
        | PaymentsPendingAfterMove { .. }
        | NoMemberWithCitizenId { .. }
        | NothingToRecord
        | UnknownHousehold { .. }
        | ClassificationExpired { .. }
        | ActiveLoanExists { .. }
        | WrongLoanStatus { .. }
        | BackDated { .. }
        | ClassificationBackDated { .. }
        | ReviewYearBehindLatest { .. }
        | CorrectsNotLatest { .. }
        | AlreadyExtended
        | ExtensionAfterDue { .. }
        | TrancheNotBeforeDue { .. }
        | NotReversible { .. }
        | NotLatestEvent { .. }
        | DuplicatePost { .. }
        | TransactionIdUsedElsewhere { .. } => StatusCode::CONFLICT,
        CitizenIdLength { .. }
        | CitizenIdNonDigit { .. }
        | CommuneCodeLength { .. }
        | CommuneCodeNonDigit { .. }
        | ProvinceCodeMalformed
        | NegativeAmount { .. }
        | ZeroAmount
        | FractionalDong { .. }
        | AmountTooLarge { .. }
        | MissingActor
        | MissingReason
        | NoStandardInForce { .. }
        | UnknownIndicator { .. }
        | ReviewYearOutOfRange { .. }
        | CorrectionForAnotherReviewYear { .. }
        | UnknownProgramme { .. }
        | ProgrammeNotInForce { .. }
        | HouseholdIdMalformed { .. }
        | MembersOutOfRange { .. }
        | CitizensDoNotFitMembers { .. }
        | NotAMember { .. }
        | AmbiguousMember { .. }
        | SealedDataMalformed { .. }
        | WrongPartition { .. }
        | EventOfAnotherLoan { .. }
        | UnsupportedCommand { .. }
        | AreaMalformed { .. }
        | NotEligible { .. }
        | AreaDiffersFromRegistry { .. }
        | AmountOverCap { .. }
        | TermOutOfRange { .. }
        | MissingSavingsGroup
        | DisbursementOverApproved { .. }
        | TooManyTranches { .. }
        | Overpayment { .. }
        | ExtensionNotLater { .. }
        | ExtensionTooLong { .. }
        | MissingDisasterReference
        | PostOutsideReplayWindow { .. }
        | TimeoutsAsOfInFuture { .. }
        | IssuedInFuture { .. }
        | DatedInFuture { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ArithmeticOverflow => StatusCode::INTERNAL_SERVER_ERROR,
        Payment(r) => payment_rejection_status(r),
    }
}

/// The status of each payments refusal, by the same rule as the others (ADR 0013): 404
/// for an entitlement or instruction that does not exist, 409 when the entitlement's,
/// instruction's or budget's state forbids it whatever the values, 422 when a corrected
/// value would pass. No wildcard arm either.
fn payment_rejection_status(r: &crate::domain::payments::Rejection) -> StatusCode {
    use crate::domain::payments::Rejection::*;
    match r {
        UnknownEntitlement { .. } | UnknownInstruction { .. } => StatusCode::NOT_FOUND,
        // The credentials do not allow the command: the same as an access refusal.
        OfficerOnly | GatewayOnly | GatewayIdentityMismatch { .. } => StatusCode::FORBIDDEN,
        ActiveEntitlementExists { .. }
        | EntitlementStopped { .. }
        | TooManyChanges { .. }
        | BudgetExceeded { .. }
        | InstructionNotPending { .. }
        | NotDueForTimeout { .. }
        | NotReissuable { .. }
        | AlreadyReissued { .. }
        | LateSettlementToReconcile { .. }
        | TooManyAttempts { .. }
        | MonthNotPayable { .. }
        | BeneficiaryDied { .. }
        | HouseholdNoLongerResident { .. }
        | BeneficiaryNotAMember { .. }
        | HouseholdErased { .. }
        | BackDated { .. }
        | PaymentOperationBackDated { .. }
        | RefusalLimitReached { .. } => StatusCode::CONFLICT,
        RefMissing { .. }
        | RefMalformed { .. }
        | MemberIsAnIdNumber
        | MemberRefNotCanonical { .. }
        | NoSuchMember { .. }
        | MonthMalformed { .. }
        | AmountNotPositive { .. }
        | FractionalDong { .. }
        | AmountTooLarge { .. }
        | NoBaseLevelInForce { .. }
        | UnknownCategory { .. }
        | CategoryNotInForce { .. }
        | GrantOverlapsStopped { .. }
        | GrantOverlapsPaidBeforeMove { .. }
        | ChangeNotAfterPrevious { .. }
        | ChangeBeforeInstructedMonth { .. }
        | StopDateInFuture { .. }
        | AllocationTooLarge { .. }
        | DeallocationOverAvailable { .. }
        | RunTooLarge { .. }
        // Documented as 422 since the route answered it: top up, then run again.
        | RunUnfunded { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ArithmeticOverflow => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// The error as a client is told it: the detail of a failure inside the server or of
    /// an unavailable ledger (stream sequences, store and key-file paths, NATS addresses,
    /// the server's messages) stays in the server's log (`into_response` logs every 5xx).
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "internal error; the server's log has the detail".into(),
            ApiError::Unavailable(_) => {
                "ledger unavailable; retry later (the server's log has the detail)".into()
            }
            ApiError::Export(e) => match export_kind(e) {
                "Internal" => "internal error; the server's log has the detail".into(),
                "LedgerUnavailable" => {
                    "ledger unavailable; retry later (the server's log has the detail)".into()
                }
                _ => self.to_string(),
            },
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Transient and answered with Retry-After: a read model behind a burst, a
            // cluster electing a leader. A warning, so that errors stay what needs a person.
            tracing::warn!(kind = %self.kind(), "http: {self}");
        } else if status.is_server_error() {
            tracing::error!(kind = %self.kind(), "http: {self}");
        }
        let kind = self.kind();
        let body = ErrorBody {
            error: &kind,
            message: self.public_message(),
            violations: match &self {
                ApiError::SchemaViolation(v) => Some(v),
                _ => None,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Nothing to wait for in particular: a partition writer retrying, a server
            // restarting. One second spreads the retries of many desks.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Denied(a) => ApiError::Denied(a),
            ServiceError::Rejected(r) => ApiError::Rejected(r),
            ServiceError::Vault(v) => v.into(),
            ServiceError::Append(a) => a.into(),
            ServiceError::KeyReused { .. } => ApiError::IdempotencyKeyReused,
            // Not 503: a retry changes nothing until an operator acts (the claims stream
            // could lose claims) or the code is fixed.
            ServiceError::Claims(c) => ApiError::Internal(c.to_string()),
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        ApiError::Denied(e)
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError::Rejected(r)
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Erased { .. } => ApiError::PersonalDataErased,
            VaultError::PlaintextTooLarge { .. } => ApiError::PayloadTooLarge,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Rejected(r) => ApiError::Rejected(r),
            AppendError::MissingIdempotencyKey => ApiError::MissingIdempotencyKey,
            AppendError::InvalidIdempotencyKey => ApiError::InvalidIdempotencyKey,
            AppendError::Partition(p) => ApiError::InvalidParameter(p.to_string()),
            AppendError::Oversized { .. } => ApiError::PayloadTooLarge,
            // The partition is stopped until someone acts, or the server is away. A
            // lost acknowledgement (CommitFailed, Nats, Closed) may hide a write that
            // landed: the same request with the same key passes later, recorded once.
            e @ (AppendError::LostAcknowledgedData { .. }
            | AppendError::ChainBroken { .. }
            | AppendError::CommitFailed { .. }
            | AppendError::Stream(_)
            | AppendError::Nats(_)
            | AppendError::Closed) => ApiError::Unavailable(e.to_string()),
            e @ (AppendError::Store(_)
            | AppendError::Undecodable(_)
            | AppendError::UnknownPayload
            | AppendError::RequiresCommand { .. }) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<ProjectionError> for ApiError {
    fn from(e: ProjectionError) -> Self {
        match e {
            ProjectionError::Nats(m) => ApiError::Unavailable(m),
            // Nothing wrong with the request: a moment later the read sees whole batches.
            e @ ProjectionError::Busy { .. } => ApiError::Unavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<sled::Error> for ApiError {
    fn from(e: sled::Error) -> Self {
        ApiError::Internal(format!("http store: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn a_refusal_is_named_by_its_variant() {
        let r = Rejection::Overpayment {
            owed: Decimal::from(5),
            offered: Decimal::from(9),
        };
        assert_eq!(rejection_kind(&r), "Overpayment");
        assert_eq!(rejection_kind(&Rejection::ZeroAmount), "ZeroAmount");
        assert_eq!(
            rejection_kind(&Rejection::CitizenIdLength { found: 3 }),
            "CitizenIdLength"
        );
        assert_eq!(
            ApiError::Rejected(r).status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            rejection_status(&Rejection::ActiveLoanExists { loan: 1 }),
            StatusCode::CONFLICT
        );
        assert_eq!(
            rejection_status(&Rejection::UnknownLoan { loan: 1 }),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn projections_busy_being_written_say_when_to_retry() {
        let busy = ApiError::from(ProjectionError::Busy { attempts: 4 });
        assert_eq!(busy.kind(), "LedgerUnavailable");
        let response = busy.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
    }

    /// A claims stream that could lose claims, or a claim for something that is no
    /// household, is no outage: a retry changes nothing, so no 503 and no Retry-After.
    /// A claim that could not be checked now is one.
    #[test]
    fn claim_errors_a_retry_cannot_fix_are_not_answered_retry() {
        use crate::claims::ClaimError;
        let status = |e: ClaimError| {
            let response = ApiError::from(ServiceError::from(e)).into_response();
            (
                response.status(),
                response.headers().contains_key("retry-after"),
            )
        };
        let unsafe_stream = ClaimError::Unsafe(crate::log::stream::StreamError::Unsafe {
            stream: "ANSINH_CLAIMS".into(),
            reason: "deny_delete is off".into(),
        });
        assert_eq!(
            status(unsafe_stream),
            (StatusCode::INTERNAL_SERVER_ERROR, false)
        );
        let not_a_household = ClaimError::NotAHousehold { id: "x".into() };
        assert_eq!(
            status(not_a_household),
            (StatusCode::INTERNAL_SERVER_ERROR, false)
        );
        for transient in [ClaimError::Nats("timed out".into()), ClaimError::Contended] {
            assert_eq!(status(transient), (StatusCode::SERVICE_UNAVAILABLE, true));
        }
    }

    #[test]
    fn an_unavailable_ledger_says_when_to_retry() {
        let response = ApiError::Unavailable("nats: no responders".into()).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        let response = ApiError::Rejected(Rejection::ZeroAmount).into_response();
        assert!(!response.headers().contains_key("retry-after"));
    }

    /// An export that failed inside the server, and an unavailable ledger, are told
    /// without their detail (addresses, file paths, the server's messages): the detail is
    /// in the server's log. What the caller can act on is told whole.
    #[test]
    fn an_export_failure_is_told_without_its_detail() {
        use crate::bundle::BundleError;
        use crate::bundle::export::ExportError;
        use crate::checkpoint::CheckpointError;
        let secret = "nats://10.1.2.3:4222 gone";
        for e in [
            ApiError::Export(ExportError::Checkpoint(CheckpointError::Nats(
                secret.into(),
            ))),
            ApiError::Export(ExportError::SelfCheck(BundleError::Read {
                file: secret.into(),
                reason: "no such file".into(),
            })),
            ApiError::Unavailable(secret.into()),
        ] {
            let message = e.public_message();
            assert!(!message.contains("10.1.2.3"), "{}: {message}", e.kind());
            assert!(!message.is_empty());
        }
        let too_many = ApiError::Export(ExportError::TooMany);
        assert_eq!(too_many.public_message(), too_many.to_string());
    }
}
