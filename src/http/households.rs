//! /v1/households: register, show, change members, record a death, move, erase, classify.
//! Each handler: decode (wire -> domain types), call `service`, encode the answer.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::access::{self, Caller, Operation};
use crate::domain::Rejection;
use crate::domain::eligibility::{Area, ClassificationInputs};
use crate::domain::ids::HouseholdId;
use crate::log::Receipt;
use crate::personal::{Member, PersonalData};
use crate::projection::{HISTORY_PAGE_LINES_DEFAULT, HISTORY_PAGE_LINES_MAX, HistoryPage};
use crate::service::Request as ServiceRequest;
use crate::views;

use super::extract::{Body, IdempotencyKey, Path, RequestBody, Staff};
use super::schema::Violation;
use super::{Api, ApiError};

// ---- wire types ---------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AreaBody {
    Rural,
    Urban,
}

impl From<AreaBody> for Area {
    fn from(a: AreaBody) -> Area {
        match a {
            AreaBody::Rural => Area::Rural,
            AreaBody::Urban => Area::Urban,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct MemberBody {
    name: String,
    citizen_id: Option<String>,
    relation: String,
}

#[derive(Debug, Deserialize)]
pub struct PersonalBody {
    head_name: String,
    head_citizen_id: String,
    phone: Option<String>,
    account_number: Option<String>,
    members: Vec<MemberBody>,
}

impl TryFrom<PersonalBody> for PersonalData {
    type Error = ApiError;

    /// Names and relations are read by the parsers the console and the CLI use
    /// (`input::name`, `input::relation`): the schema's `\S` refuses text of spaces, and
    /// these refuse also text of only invisible characters, which no schema pattern can
    /// say as plainly. A refusal names the field, as the schema's would.
    fn try_from(p: PersonalBody) -> Result<Self, ApiError> {
        let field = |path: String, read: Result<String, crate::input::InputError>| {
            read.map_err(|e| {
                ApiError::SchemaViolation(vec![Violation {
                    path,
                    message: e.to_string(),
                }])
            })
        };
        let members = p
            .members
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                Ok(Member {
                    name: field(
                        format!("/personal/members/{i}/name"),
                        crate::input::name(&m.name),
                    )?,
                    citizen_id: m.citizen_id,
                    relation: field(
                        format!("/personal/members/{i}/relation"),
                        crate::input::relation(&m.relation),
                    )?,
                })
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(PersonalData {
            head_name: field(
                "/personal/head_name".to_owned(),
                crate::input::name(&p.head_name),
            )?,
            head_citizen_id: p.head_citizen_id,
            phone: p.phone,
            account_number: p.account_number,
            members,
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct RegisterBody {
    household_id: String,
    area: AreaBody,
    registered_on: NaiveDate,
    personal: PersonalBody,
}
impl RequestBody for RegisterBody {
    const SCHEMA: &'static str = "register-household.request";
}

#[derive(Debug, Deserialize)]
pub struct ChangeMembersBody {
    on: NaiveDate,
    reason: String,
    personal: PersonalBody,
}
impl RequestBody for ChangeMembersBody {
    const SCHEMA: &'static str = "change-members.request";
}

#[derive(Debug, Deserialize)]
pub struct DeathBody {
    citizen_id: String,
    died_on: NaiveDate,
}
impl RequestBody for DeathBody {
    const SCHEMA: &'static str = "record-death.request";
}

#[derive(Debug, Deserialize)]
pub struct MoveBody {
    to_household_id: String,
    area: AreaBody,
    on: NaiveDate,
}
impl RequestBody for MoveBody {
    const SCHEMA: &'static str = "move-household.request";
}

#[derive(Debug, Deserialize)]
pub struct EraseBody {
    reference: String,
    on: NaiveDate,
}
impl RequestBody for EraseBody {
    const SCHEMA: &'static str = "erase-personal-data.request";
}

#[derive(Debug, Deserialize)]
pub struct ClassifyBody {
    income_per_person: Decimal,
    area: AreaBody,
    deprived: BTreeSet<String>,
    review_year: i32,
    decided_on: NaiveDate,
    /// The partition sequence of the decision this one corrects.
    corrects: Option<u64>,
}
impl RequestBody for ClassifyBody {
    const SCHEMA: &'static str = "classify.request";
}

/// schemas/http/receipt.response.json
#[derive(Debug, Serialize)]
pub struct ReceiptBody {
    partition: String,
    sequence: u64,
    hash: String,
    stream_sequence: u64,
    index: u32,
    duplicate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    loan: Option<String>,
}

impl ReceiptBody {
    pub fn new(receipt: &Receipt, loan: Option<String>) -> Self {
        Self {
            partition: receipt.partition.clone(),
            sequence: receipt.sequence,
            hash: receipt.hash.to_hex(),
            stream_sequence: receipt.stream_sequence,
            index: receipt.index,
            duplicate: receipt.duplicate,
            loan,
        }
    }
}

/// 201 for a new event, 200 for the replay of a recorded one (the body says
/// `duplicate: true`).
pub fn created<T: Serialize>(duplicate: bool, body: T) -> Response {
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, Json(body)).into_response()
}

// ---- shared steps -------------------------------------------------------------------

/// A household id from the path or a body.
pub fn household(id: &str) -> Result<HouseholdId, ApiError> {
    Ok(crate::input::household(id)?)
}

/// A body's text the audit trail records (its member `field`: a reason, a decision's or
/// an erasure's reference), read by `input::text` as the CLI and the console read it,
/// before anything is submitted. The schema's `\S` refuses text of spaces; text of only
/// invisible characters reads as nothing too, and is refused as the book refuses an
/// empty one (`missing`, 422).
pub fn audit_text(field: &'static str, text: &str, missing: Rejection) -> Result<String, ApiError> {
    if crate::input::blank(text) {
        return Err(ApiError::BlankText { field, missing });
    }
    Ok(crate::input::text(text)?)
}

/// A write in flight: the caller's scoped idempotency key and the request's fingerprint.
/// The ledger records the fingerprint in the write's events and refuses the key for a
/// request with another (`Service::same_request`), so a write needs no binding of its
/// own before it is submitted, and a refusal leaves the key free.
pub struct Write {
    key: String,
    correlation: String,
    fingerprint: crate::chain::Digest,
}

impl Write {
    pub fn new(caller: &Caller, key: &IdempotencyKey, fingerprint: crate::chain::Digest) -> Self {
        Write {
            key: key.scoped(caller),
            correlation: format!("http:{}", key.0),
            fingerprint,
        }
    }

    pub fn request<'a>(&'a self, caller: &'a Caller) -> ServiceRequest<'a> {
        ServiceRequest {
            caller,
            idempotency_key: &self.key,
            correlation_id: &self.correlation,
            fingerprint: Some(&self.fingerprint),
        }
    }
}

// ---- handlers -----------------------------------------------------------------------

pub async fn register(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Body { value, fingerprint }: Body<RegisterBody>,
) -> Result<Response, ApiError> {
    let h = household(&value.household_id)?;
    let data = PersonalData::try_from(value.personal)?;
    let write = Write::new(&caller, &key, fingerprint);
    let receipt = api
        .service()
        .register(
            &write.request(&caller),
            &h,
            value.area.into(),
            value.registered_on,
            &data,
        )
        .await?;
    Ok(created(receipt.duplicate, ReceiptBody::new(&receipt, None)))
}

#[derive(Debug, Deserialize)]
pub struct ShowQuery {
    #[serde(default, deserialize_with = "crate::input::optional_date")]
    as_of: Option<NaiveDate>,
    /// A receipt's `stream_sequence`: answer once the view includes that write.
    after: Option<u64>,
    /// Which page of the history, from 0.
    #[serde(default)]
    history_page: usize,
    /// Lines a page of history holds, 1 to `HISTORY_PAGE_LINES_MAX`.
    history_lines: Option<usize>,
}

/// Page `page` of household `h`'s history, `lines` a page (`None`: the default), the
/// number of lines checked here at the edge.
/// The (page, lines) of a history page asked for, its size checked.
fn history_page(page: usize, lines: Option<usize>) -> Result<(usize, usize), ApiError> {
    let lines = lines.unwrap_or(HISTORY_PAGE_LINES_DEFAULT);
    if !(1..=HISTORY_PAGE_LINES_MAX).contains(&lines) {
        return Err(ApiError::InvalidParameter(format!(
            "history_lines must be from 1 to {HISTORY_PAGE_LINES_MAX}, not {lines}"
        )));
    }
    Ok((page, lines))
}

/// What a household page shows, read from the projections in O(result): the view, its
/// loans priced on `as_of` (each with the loan record, for its schedule) and the
/// assistance it received per month. The JSON route and the console both read it here.
pub struct HouseholdRead {
    pub view: views::HouseholdView,
    pub loans: Vec<(views::LoanLine, crate::domain::loans::Loan)>,
    pub assistance: Vec<crate::payments_report::ReceivedLine>,
    /// The page of its history asked for (`history`), read in the same state.
    pub history: Option<HistoryPage>,
}

/// Reads household `h` for `caller` (who must be allowed to read its commune), once the
/// projections hold the write at stream sequence `after` (or every event the log held),
/// with the page of its history `history` names (page, lines), if any.
pub async fn read_household(
    api: &Api,
    caller: &Caller,
    h: &HouseholdId,
    as_of: NaiveDate,
    after: Option<u64>,
    history: Option<(usize, usize)>,
) -> Result<HouseholdRead, ApiError> {
    access::authorize(caller, Operation::Read, h.commune().as_str())?;
    let projector = api.projector_after(after).await?;
    let records = projector
        .household_records(h.as_str(), history)?
        .ok_or_else(|| Rejection::HouseholdNotRegistered {
            household: h.to_string(),
        })?;
    let loans = records
        .loans
        .into_iter()
        .map(|(p, loan)| (views::loan_line(&p, &loan, as_of), loan))
        .collect();
    Ok(HouseholdRead {
        view: records.view,
        loans,
        assistance: crate::payments_report::received_lines(records.received),
        history: records.history,
    })
}

/// Same content as `ansinh household show --json`.
pub async fn show(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(id): Path<String>,
    query: Result<Query<ShowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidParameter(e.body_text()))?;
    let h = household(&id)?;
    // The clock is read here, at the edge, as the CLI does: today in Vietnam.
    let as_of = query.as_of.unwrap_or_else(|| api.today());
    let history = history_page(query.history_page, query.history_lines)?;
    let read = read_household(&api, &caller, &h, as_of, query.after, Some(history)).await?;
    let page = read.history.expect("asked for");
    let lines: Vec<_> = read.loans.into_iter().map(|(line, _)| line).collect();
    Ok(Json(serde_json::json!({
        "household": read.view,
        "as_of": as_of.to_string(),
        "loans": lines,
        "assistance": read.assistance,
        "history": page.lines,
        "history_page": query.history_page,
        "history_more": page.more,
    }))
    .into_response())
}

pub async fn change_members(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(id): Path<String>,
    Body { value, fingerprint }: Body<ChangeMembersBody>,
) -> Result<Response, ApiError> {
    let h = household(&id)?;
    let reason = audit_text("reason", &value.reason, Rejection::MissingReason)?;
    let write = Write::new(&caller, &key, fingerprint);
    let data = PersonalData::try_from(value.personal)?;
    let receipt = api
        .service()
        .change_members(&write.request(&caller), &h, value.on, &reason, &data)
        .await?;
    Ok(created(receipt.duplicate, ReceiptBody::new(&receipt, None)))
}

/// As `ansinh household record-death`: the deceased leaves the sealed data; if the head
/// died, the first member with a citizen id becomes head. If none has one (young
/// children), the record stays as it was until the members are recorded again.
pub async fn record_death(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(id): Path<String>,
    Body { value, fingerprint }: Body<DeathBody>,
) -> Result<Response, ApiError> {
    let h = household(&id)?;
    let write = Write::new(&caller, &key, fingerprint);
    let receipt = api
        .service()
        .record_death(
            &write.request(&caller),
            &h,
            &value.citizen_id,
            value.died_on,
        )
        .await?;
    Ok(created(receipt.duplicate, ReceiptBody::new(&receipt, None)))
}

/// schemas/http/move.response.json
#[derive(Serialize)]
struct MoveAnswer {
    moved_out: ReceiptBody,
    moved_in: ReceiptBody,
}

pub async fn move_household(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(id): Path<String>,
    Body { value, fingerprint }: Body<MoveBody>,
) -> Result<Response, ApiError> {
    let from = household(&id)?;
    let to = household(&value.to_household_id)?;
    let write = Write::new(&caller, &key, fingerprint);
    let (out, arrived) = api
        .service()
        .move_household(
            &write.request(&caller),
            &from,
            &to,
            value.area.into(),
            value.on,
        )
        .await?;
    Ok(created(
        out.duplicate && arrived.duplicate,
        MoveAnswer {
            moved_out: ReceiptBody::new(&out, None),
            moved_in: ReceiptBody::new(&arrived, None),
        },
    ))
}

pub async fn erase(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(id): Path<String>,
    Body { value, fingerprint }: Body<EraseBody>,
) -> Result<Response, ApiError> {
    let h = household(&id)?;
    let reference = audit_text("reference", &value.reference, Rejection::MissingReason)?;
    let write = Write::new(&caller, &key, fingerprint);
    // The vault records when the key was destroyed; the clock is read here, at the edge.
    let now_unix_ms = chrono::Utc::now().timestamp_millis();
    let receipt = api
        .service()
        .erase_personal_data(
            &write.request(&caller),
            &h,
            value.on,
            &reference,
            now_unix_ms,
        )
        .await?;
    Ok(created(receipt.duplicate, ReceiptBody::new(&receipt, None)))
}

pub async fn classify(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(id): Path<String>,
    Body { value, fingerprint }: Body<ClassifyBody>,
) -> Result<Response, ApiError> {
    let h = household(&id)?;
    let write = Write::new(&caller, &key, fingerprint);
    let inputs = ClassificationInputs {
        income_per_person_month: value.income_per_person,
        area: value.area.into(),
        deprived: value.deprived,
        review_year: value.review_year,
    };
    let receipt = api
        .service()
        .classify(
            &write.request(&caller),
            &h,
            inputs,
            value.decided_on,
            value.corrects,
        )
        .await?;
    Ok(created(receipt.duplicate, ReceiptBody::new(&receipt, None)))
}

#[derive(Debug, Deserialize)]
pub struct SearchBody {
    citizen_id: Option<String>,
    household_id: Option<String>,
}
impl RequestBody for SearchBody {
    const SCHEMA: &'static str = "household-search.request";
}

/// `POST /v1/households/search`: the household of a citizen id, through the blind index
/// (the id travels in the body, never in a URL or a log), or a household by its id, from
/// the projections. Exactly one of the two (the schema's `oneOf`). Credit officers and
/// branch managers; a household outside the caller's unit, or none, is 404 either way.
pub async fn search(
    State(api): State<Api>,
    Staff(caller): Staff,
    Body { value, .. }: Body<SearchBody>,
) -> Result<Response, ApiError> {
    let found = match (value.citizen_id, value.household_id) {
        (Some(citizen), None) => {
            let citizen = crate::input::citizen_id(&citizen)?;
            api.service()
                .household_of_citizen(&caller, &citizen)
                .await?
        }
        (None, Some(id)) => {
            let h = household(&id)?;
            // The same rule as by citizen: staff who may change households, of its unit.
            access::authorize_role(&caller, Operation::ChangeHousehold)?;
            if access::within(&caller.unit, h.commune().as_str()) {
                api.projector().await?.household(h.as_str())?.map(|_| h)
            } else {
                None
            }
        }
        // The schema admits exactly one.
        _ => {
            return Err(ApiError::InvalidParameter(
                "give exactly one of citizen_id and household_id".into(),
            ));
        }
    };
    let found = found.ok_or(ApiError::NotFound {
        what: "household matching the search in unit",
        value: caller.unit.clone(),
    })?;
    Ok(Json(serde_json::json!({
        "household_id": found.as_str(),
        "commune": found.commune().as_str(),
    }))
    .into_response())
}
