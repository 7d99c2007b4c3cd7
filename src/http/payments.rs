//! Payments over HTTP, as `ansinh payments` does them: budgets, entitlements, a commune's
//! monthly run, stopping an entitlement, reissuing an instruction. The roles and units
//! are checked by `Service::payment` (a budget by the branch manager, the rest by the
//! payments staff of the commune or province); values are parsed by `input` before.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::chain::Partition;
use crate::domain::Rejection;
use crate::domain::ids::CommuneCode;
use crate::domain::payments::budget::BudgetKey;
use crate::domain::payments::entitlements::{Channel, StopReason, Terms};
use crate::domain::payments::ids::{
    BeneficiaryRef, CategoryId, CommuneId, GatewayId, HouseholdRef, MemberRef, ProgrammeId,
};
use crate::domain::payments::instructions::InstructionId;
use crate::domain::payments::instructions::{LeftUnpaid, Shortfall};
use crate::domain::payments::{CommandKind, EventBody};
use crate::proto::envelope::Payload;
use crate::service::CommuneRun;

use super::extract::{Body, IdempotencyKey, Path, RequestBody, Staff};
use super::households::{ReceiptBody, Write, created};
use super::{Api, ApiError};

/// The programme monthly social assistance is paid from (as the CLI).
pub(super) const PROGRAMME: &str = "SOCIAL_ASSISTANCE_MONTHLY";

pub(super) fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::InvalidParameter(e.to_string())
}

pub(super) fn commune_path(code: &str) -> Result<(CommuneCode, CommuneId, Partition), ApiError> {
    let code = crate::input::commune(code)?;
    let id = CommuneId::parse(code.as_str()).map_err(bad)?;
    let partition = crate::input::partition(code.province().as_str())?;
    Ok((code, id, partition))
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelBody {
    Bank,
    MobileMoney,
    PostOffice,
}

fn channel(kind: ChannelBody, gateway: &str) -> Result<Channel, ApiError> {
    let gateway: GatewayId = crate::input::gateway(gateway)?;
    Ok(match kind {
        ChannelBody::Bank => Channel::BankAccount { gateway },
        ChannelBody::MobileMoney => Channel::MobileMoney { gateway },
        ChannelBody::PostOffice => Channel::PostOffice { gateway },
    })
}

/// One payments command under the request's idempotency key, answered with its receipt
/// (and what the caller needs next, when `extra` reads it from the recorded event).
async fn submit(
    api: &Api,
    caller: &crate::access::Caller,
    key: &IdempotencyKey,
    fingerprint: crate::chain::Digest,
    partition: &Partition,
    kind: CommandKind,
    on: NaiveDate,
) -> Result<crate::log::Receipt, ApiError> {
    let write = Write::new(caller, key, fingerprint);
    api.service()
        .payment(&write.request(caller), partition, kind, on)
        .await
        .map_err(ApiError::from)
}

/// `submit`, answered with the receipt alone (201, or 200 for a replay).
async fn receipt_of(
    api: &Api,
    caller: &crate::access::Caller,
    key: &IdempotencyKey,
    fingerprint: crate::chain::Digest,
    partition: &Partition,
    kind: CommandKind,
    on: NaiveDate,
) -> Result<Response, ApiError> {
    let receipt = submit(api, caller, key, fingerprint, partition, kind, on).await?;
    Ok(created(receipt.duplicate, ReceiptBody::new(&receipt, None)))
}

/// The payments event a receipt names (the original one, for a replay).
pub(super) async fn recorded(
    api: &Api,
    receipt: &crate::log::Receipt,
) -> Result<EventBody, ApiError> {
    let event = api.service().ledger.event_of(receipt).await?;
    let Some(Payload::PaymentRecorded(p)) = &event.payload else {
        return Err(ApiError::Internal(format!(
            "the receipt of a payments command names a {} event",
            event.event_type
        )));
    };
    crate::book::payments::event_of(0, event.actor.as_ref(), p)
        .map(|e| e.body)
        .map_err(|e| ApiError::Internal(format!("a recorded payments event: {e}")))
}

// ---- budgets ------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct AllocateBody {
    period: String,
    amount: Decimal,
    on: NaiveDate,
}
impl RequestBody for AllocateBody {
    const SCHEMA: &'static str = "allocate-budget.request";
}

/// `POST /v1/communes/{commune}/budgets`: budget for a month (branch manager).
pub async fn allocate(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(commune): Path<String>,
    Body { value, fingerprint }: Body<AllocateBody>,
) -> Result<Response, ApiError> {
    let (budget, partition) = budget_key(&commune, &value.period)?;
    let kind = CommandKind::Allocate {
        budget,
        amount: value.amount,
    };
    receipt_of(&api, &caller, &key, fingerprint, &partition, kind, value.on).await
}

#[derive(Debug, Deserialize)]
pub struct ReleaseBody {
    period: String,
    amount: Decimal,
    on: NaiveDate,
}
impl RequestBody for ReleaseBody {
    const SCHEMA: &'static str = "release-budget.request";
}

/// `POST /v1/communes/{commune}/budget-releases`: takes back allocation no instruction
/// holds or spent (branch manager); the book refuses more than that.
pub async fn release(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(commune): Path<String>,
    Body { value, fingerprint }: Body<ReleaseBody>,
) -> Result<Response, ApiError> {
    let (budget, partition) = budget_key(&commune, &value.period)?;
    let kind = CommandKind::Deallocate {
        budget,
        amount: value.amount,
    };
    receipt_of(&api, &caller, &key, fingerprint, &partition, kind, value.on).await
}

/// The monthly social assistance budget of the commune (path) for `period`, and its
/// partition.
fn budget_key(commune: &str, period: &str) -> Result<(BudgetKey, Partition), ApiError> {
    let (_, commune, partition) = commune_path(commune)?;
    let budget = BudgetKey {
        programme: ProgrammeId::parse(PROGRAMME).map_err(bad)?,
        commune,
        period: crate::input::month(period)?,
    };
    Ok((budget, partition))
}

// ---- entitlements -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct GrantBody {
    household_id: String,
    member: String,
    category: String,
    channel: ChannelBody,
    gateway: String,
    from: String,
    provincial_base: Option<Decimal>,
    on: NaiveDate,
}
impl RequestBody for GrantBody {
    const SCHEMA: &'static str = "grant-entitlement.request";
}

/// schemas/http/entitlement.response.json
#[derive(Serialize)]
struct GrantAnswer {
    #[serde(flatten)]
    receipt: ReceiptBody,
    entitlement: u64,
}

/// `POST /v1/entitlements`: a monthly entitlement for a household member; answers its
/// number, which stopping it takes.
pub async fn grant(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Body { value, fingerprint }: Body<GrantBody>,
) -> Result<Response, ApiError> {
    let h = crate::input::household(&value.household_id)?;
    let partition = crate::input::partition(h.province().as_str())?;
    let kind = CommandKind::Grant {
        programme: ProgrammeId::parse(PROGRAMME).map_err(bad)?,
        beneficiary: BeneficiaryRef {
            household: HouseholdRef::parse(h.as_str()).map_err(bad)?,
            member: MemberRef::parse(&value.member).map_err(bad)?,
        },
        commune: CommuneId::parse(h.commune().as_str()).map_err(bad)?,
        from: crate::input::month(&value.from)?,
        terms: Terms {
            category: CategoryId::parse(&value.category).map_err(bad)?,
            channel: channel(value.channel, &value.gateway)?,
            provincial_base: value.provincial_base,
        },
        citizen: None, // found by the service
    };
    let receipt = submit(&api, &caller, &key, fingerprint, &partition, kind, value.on).await?;
    let EventBody::EntitlementGranted { entitlement, .. } = recorded(&api, &receipt).await? else {
        return Err(ApiError::Internal(
            "the receipt of a grant names another event".into(),
        ));
    };
    Ok(created(
        receipt.duplicate,
        GrantAnswer {
            receipt: ReceiptBody::new(&receipt, None),
            entitlement,
        },
    ))
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopBodyReason {
    Death,
    Move,
    Other,
}

#[derive(Debug, Deserialize)]
pub struct StopBody {
    reason: StopBodyReason,
    on: NaiveDate,
}
impl RequestBody for StopBody {
    const SCHEMA: &'static str = "stop-entitlement.request";
}

/// `POST /v1/partitions/{p}/entitlements/{n}/stop`: no month after `on` is paid.
pub async fn stop(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path((partition, number)): Path<(String, String)>,
    Body { value, fingerprint }: Body<StopBody>,
) -> Result<Response, ApiError> {
    let partition = crate::input::partition(&partition)?;
    let entitlement = entitlement_number(&number)?;
    let kind = CommandKind::Stop {
        entitlement,
        on: value.on,
        reason: match value.reason {
            StopBodyReason::Death => StopReason::Death,
            StopBodyReason::Move => StopReason::Move,
            StopBodyReason::Other => StopReason::Other,
        },
    };
    // Recorded today (in Vietnam, by the API's clock), whatever day it names: the book
    // refuses a stop dated later, and its cancellations are dated today, never on a day
    // whose reconciliation was already read.
    let today = api.today();
    receipt_of(&api, &caller, &key, fingerprint, &partition, kind, today).await
}

#[derive(Debug, Deserialize)]
pub struct ChangeBody {
    category: String,
    channel: ChannelBody,
    gateway: String,
    from: String,
    provincial_base: Option<Decimal>,
    on: NaiveDate,
}
impl RequestBody for ChangeBody {
    const SCHEMA: &'static str = "change-entitlement.request";
}

/// `POST /v1/partitions/{p}/entitlements/{n}/changes`: new terms (category, channel and
/// gateway, provincial base) from a month on; months already paid keep theirs.
pub async fn change(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path((partition, number)): Path<(String, String)>,
    Body { value, fingerprint }: Body<ChangeBody>,
) -> Result<Response, ApiError> {
    let partition = crate::input::partition(&partition)?;
    let kind = CommandKind::Change {
        entitlement: entitlement_number(&number)?,
        from: crate::input::month(&value.from)?,
        terms: Terms {
            category: CategoryId::parse(&value.category).map_err(bad)?,
            channel: channel(value.channel, &value.gateway)?,
            provincial_base: value.provincial_base,
        },
    };
    receipt_of(&api, &caller, &key, fingerprint, &partition, kind, value.on).await
}

/// An entitlement's number from the path: digits, no leading zero, not 0.
fn entitlement_number(text: &str) -> Result<u64, ApiError> {
    let one_spelling = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && !(text.len() > 1 && text.starts_with('0'));
    match text.parse::<u64>() {
        Ok(n) if one_spelling && n > 0 => Ok(n),
        _ => Err(ApiError::InvalidParameter(format!(
            "{text:?} is not an entitlement number (digits, as the grant answered)"
        ))),
    }
}

// ---- runs and instructions ----------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct RunBody {
    period: String,
    on: NaiveDate,
}
impl RequestBody for RunBody {
    const SCHEMA: &'static str = "payment-run.request";
}

/// schemas/http/payment-run.response.json
#[derive(Serialize)]
struct RunAnswer {
    commune: String,
    period: String,
    /// "paid", or "nothing_left" when every active entitlement already has its
    /// instruction for the month (a retry of a run that landed: success, nothing added).
    outcome: &'static str,
    instructions: u64,
    amount: Decimal,
    /// Each budget that could not cover its part, in words (amounts as `1.500.000 ₫`).
    shortfalls: Vec<String>,
    /// Entitlements left unpaid, by why (`not_resident`, `deceased`, `not_a_member`,
    /// `erased`): an officer stops them.
    #[serde(flatten)]
    left_unpaid: LeftUnpaid,
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt: Option<ReceiptBody>,
}

/// `POST /v1/communes/{commune}/payment-runs`: one instruction per active entitlement of
/// the commune for the month, all or none, in one command (a commune of 10,000
/// entitlements: well under a second). Running it again adds nothing and answers
/// `nothing_left` (200).
pub async fn run(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(commune): Path<String>,
    Body { value, fingerprint }: Body<RunBody>,
) -> Result<Response, ApiError> {
    let (code, commune, partition) = commune_path(&commune)?;
    let period = crate::input::month(&value.period)?;
    let write = Write::new(&caller, &key, fingerprint);
    let ran = api
        .service()
        .run_commune(
            &write.request(&caller),
            &partition,
            period,
            commune,
            value.on,
        )
        .await;
    let answer = |outcome, instructions, amount, shortfalls, left_unpaid, receipt| RunAnswer {
        commune: code.to_string(),
        period: period.to_string(),
        outcome,
        instructions,
        amount,
        shortfalls,
        left_unpaid,
        receipt,
    };
    match ran {
        Ok(CommuneRun::Paid {
            issued,
            amount,
            shortfalls,
            left_unpaid,
            receipt,
            ..
        }) => {
            let body = answer(
                "paid",
                issued,
                amount,
                shortfalls.iter().map(Shortfall::sentence).collect(),
                left_unpaid,
                Some(ReceiptBody::new(&receipt, None)),
            );
            Ok(created(receipt.duplicate, body))
        }
        Ok(CommuneRun::NothingLeft) => {
            // Done before (by this request's first try or another): a success.
            let body = answer(
                "nothing_left",
                0,
                Decimal::ZERO,
                Vec::new(),
                LeftUnpaid::default(),
                None,
            );
            Ok((axum::http::StatusCode::OK, axum::Json(body)).into_response())
        }
        // No budget covered it: refused (422), nothing recorded, the key freed.
        Ok(CommuneRun::Unfunded { shortfalls }) => Err(ApiError::Rejected(Rejection::Payment(
            crate::domain::payments::Rejection::RunUnfunded { shortfalls },
        ))),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct ReissueBody {
    channel: Option<ChannelBody>,
    gateway: Option<String>,
    on: NaiveDate,
}
impl RequestBody for ReissueBody {
    const SCHEMA: &'static str = "reissue.request";
}

/// `POST /v1/partitions/{p}/instructions/{id}/reissue`: a failed, returned or timed-out
/// instruction issued again, through another channel and gateway if the body names both.
pub async fn reissue(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path((partition, instruction)): Path<(String, String)>,
    Body { value, fingerprint }: Body<ReissueBody>,
) -> Result<Response, ApiError> {
    let partition = crate::input::partition(&partition)?;
    let instruction = InstructionId::parse(&instruction).ok_or_else(|| {
        ApiError::InvalidParameter(format!(
            "{instruction:?} is not an instruction id like pay:7:2026-12:1"
        ))
    })?;
    let channel = match (value.channel, value.gateway.as_deref()) {
        (Some(kind), Some(gateway)) => Some(channel(kind, gateway)?),
        (None, None) => None,
        _ => {
            return Err(ApiError::InvalidParameter(
                "give both channel and gateway, or neither".into(),
            ));
        }
    };
    let kind = CommandKind::Reissue {
        instruction,
        channel,
    };
    receipt_of(&api, &caller, &key, fingerprint, &partition, kind, value.on).await
}

// ---- timeouts -----------------------------------------------------------------------

/// Most instructions one `POST .../timeouts` times out: each is one command, appended
/// one after another, and a thousand stay well within the request timeout; the answer
/// says whether more are left (`more_left`), and the same request again goes on.
pub const TIMEOUTS_PER_REQUEST_MAX: usize = 1_000;

#[derive(Debug, Deserialize)]
pub struct TimeoutsBody {
    as_of: NaiveDate,
}
impl RequestBody for TimeoutsBody {
    const SCHEMA: &'static str = "timeouts.request";
}

/// schemas/http/timeouts.response.json
#[derive(Serialize)]
struct TimeoutsAnswer {
    partition: String,
    as_of: NaiveDate,
    /// "timed_out"; "more_left" when more were due than one request times out;
    /// "nothing_left" when none is due.
    outcome: &'static str,
    timed_out: Vec<String>,
    /// More were due than one request times out: send it again. A flag, not a count: a
    /// count would cost a read of every instruction due, however long the backlog.
    more_left: bool,
}

/// `POST /v1/partitions/{p}/timeouts`: `ansinh payments timeouts` (`Service::time_out_due`):
/// instructions without a result past their timeout on `as_of` are timed out and their
/// holds go back to the budget, at most `TIMEOUTS_PER_REQUEST_MAX` a request. 201 when it
/// timed some out; 200 `nothing_left` when none is due. The same request again, once its
/// work is done, gets the answer that finished it (200), kept beside its key
/// (`Api::remember_answer`); after `more_left` it goes on with the rest. Each instruction is
/// timed out under its own key, so nothing is done twice.
pub async fn timeouts(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(partition): Path<String>,
    Body { value, fingerprint }: Body<TimeoutsBody>,
) -> Result<Response, ApiError> {
    let partition = crate::input::partition(&partition)?;
    // Authorised before the key is bound: a caller without the right binds nothing, and
    // is never answered from what the key kept.
    crate::service::Service::may_time_out(&caller, &partition)?;
    // The timeouts append under keys of their own, so the request's key is bound here,
    // in the shared requests bucket, as a job's is: the same key with another body is
    // refused. A refusal records nothing and frees the key for the corrected request.
    let scoped = key.scoped(&caller);
    let kept = api.claim(&scoped, &fingerprint).await?;
    // A retry after its answer was lost gets that answer: the instructions it timed out,
    // which a run now would no longer find due.
    if !kept.is_empty() {
        let body: serde_json::Value = serde_json::from_slice(&kept)
            .map_err(|e| ApiError::Internal(format!("a kept answer does not read: {e}")))?;
        return Ok((axum::http::StatusCode::OK, axum::Json(body)).into_response());
    }
    let result = api
        .service()
        .time_out_due(
            &caller,
            &format!("http:{}", key.0),
            &partition,
            value.as_of,
            api.today(),
            TIMEOUTS_PER_REQUEST_MAX,
        )
        .await;
    let done = match result {
        Ok(done) => done,
        Err(e) => return Err(api.failed(&scoped, &fingerprint, e.into()).await),
    };
    let outcome = match (done.timed_out.is_empty(), done.more_left) {
        (_, true) => "more_left",
        (true, false) => "nothing_left",
        (false, false) => "timed_out",
    };
    let status = if done.timed_out.is_empty() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::CREATED
    };
    let body = TimeoutsAnswer {
        partition: partition.to_string(),
        as_of: value.as_of,
        outcome,
        timed_out: done.timed_out.iter().map(ToString::to_string).collect(),
        more_left: done.more_left,
    };
    // Kept only when the work is done: `more_left` asks for the same request again, which
    // must then go on with the rest, not be answered this batch again.
    if !done.timed_out.is_empty() && !done.more_left {
        let answer = serde_json::to_vec(&body).expect("an answer is plain data");
        api.remember_answer(&scoped, &fingerprint, &answer).await;
    }
    Ok((status, axum::Json(body)).into_response())
}
