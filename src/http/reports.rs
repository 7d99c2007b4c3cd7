//! Read models: a commune's portfolio and a partition's trial balance.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::access::{self, Operation};
use crate::chain::Partition;
use crate::views::{self, CommunePortfolio, TrialBalanceView};

use super::extract::{Path, Staff};
use super::{Api, ApiError};

/// schemas/http/portfolio.response.json: the view plus its overdue ratio.
#[derive(Serialize)]
struct PortfolioAnswer {
    #[serde(flatten)]
    portfolio: CommunePortfolio,
    overdue_ratio: Decimal,
}

/// A commune's portfolio; one the log has never seen is 404 (an all-zero portfolio
/// would read as a commune with nothing wrong).
pub async fn portfolio(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let commune = crate::input::commune(&code)?;
    access::authorize(&caller, Operation::Read, commune.as_str())?;
    let portfolio = api
        .projector()
        .await?
        .commune(commune.as_str())?
        .ok_or_else(|| ApiError::NotFound {
            what: "commune",
            value: commune.to_string(),
        })?;
    let overdue_ratio = portfolio.overdue_ratio();
    Ok(Json(PortfolioAnswer {
        portfolio,
        overdue_ratio,
    })
    .into_response())
}

/// schemas/http/trial-balance.response.json
#[derive(Serialize)]
struct TrialBalanceAnswer {
    partition: String,
    accounts: Vec<AccountLine>,
    total_debits: Decimal,
    total_credits: Decimal,
    events_checked: u64,
    first_unbalanced_sequence: Option<u64>,
    balanced: bool,
}

#[derive(Serialize)]
struct AccountLine {
    account: String,
    debit: Decimal,
    credit: Decimal,
}

/// Every account of the chart, zero lines included, as `ansinh trial-balance` prints it.
/// Readable by the province's branch (unit = the partition) and the head office.
pub async fn trial_balance(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(partition): Path<String>,
) -> Result<Response, ApiError> {
    let partition = crate::input::partition(&partition)?;
    // A province code is a prefix of all its communes: `authorize` with the code itself
    // admits exactly that province's units and the head office.
    access::authorize(&caller, Operation::Read, partition.as_str())?;
    let projector = api.projector().await?;
    known_partition(projector, &partition)?;
    let tb = projector
        .trial_balance(partition.as_str())?
        .unwrap_or_else(|| TrialBalanceView {
            partition: partition.to_string(),
            ..TrialBalanceView::default()
        });
    let accounts = views::chart()
        .into_iter()
        .map(|name| {
            let (debit, credit) = tb.accounts.get(&name).copied().unwrap_or_default();
            AccountLine {
                account: name,
                debit,
                credit,
            }
        })
        .collect();
    let balanced = tb.first_unbalanced_sequence.is_none() && tb.total_debits == tb.total_credits;
    Ok(Json(TrialBalanceAnswer {
        partition: tb.partition,
        accounts,
        total_debits: tb.total_debits,
        total_credits: tb.total_credits,
        events_checked: tb.events_checked,
        first_unbalanced_sequence: tb.first_unbalanced_sequence,
        balanced,
    })
    .into_response())
}

#[derive(Debug, serde::Deserialize)]
pub struct ReconciliationQuery {
    #[serde(default, deserialize_with = "crate::input::optional_date")]
    as_of: Option<chrono::NaiveDate>,
    pending_days: Option<u32>,
}

/// Instructions without a result for this many days are listed as pending, unless the
/// query says otherwise (as `ansinh payments reconcile`).
pub const PENDING_DAYS_DEFAULT: u32 = 10;

/// schemas/http/reconciliation-day.response.json
#[derive(Serialize)]
struct ReconciliationAnswer {
    partition: String,
    day: chrono::NaiveDate,
    as_of: chrono::NaiveDate,
    pending_days: u32,
    gateways: Vec<GatewayLine>,
}

#[derive(Serialize)]
struct GatewayLine {
    gateway: String,
    #[serde(flatten)]
    day: crate::domain::payments::reconcile::GatewayDay,
}

/// One day's reconciliation of a partition, per gateway, as `ansinh payments reconcile
/// --date` prints it, from the projections in O(the day's lines). As of a day before the
/// partition's last payment event it is refused (400): that report leaves later events
/// out, so it is folded from the log by the CLI. Readable by the province's branch and
/// the head office (auditors included).
pub async fn reconciliation(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path((partition, day)): Path<(String, String)>,
    query: Result<
        axum::extract::Query<ReconciliationQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Response, ApiError> {
    let axum::extract::Query(query) =
        query.map_err(|e| ApiError::InvalidParameter(e.body_text()))?;
    let partition = crate::input::partition(&partition)?;
    let day = crate::input::date(&day)?;
    // The clock is read here, at the edge, as the CLI does: today in Vietnam.
    let as_of = query.as_of.unwrap_or_else(|| api.today());
    let pending_days = query.pending_days.unwrap_or(PENDING_DAYS_DEFAULT);
    let lines = reconciliation_lines(&api, &caller, &partition, day, as_of, pending_days).await?;
    Ok(Json(ReconciliationAnswer {
        partition: partition.to_string(),
        day,
        as_of,
        pending_days,
        gateways: lines
            .into_iter()
            .map(|(gateway, day)| GatewayLine {
                gateway: gateway.to_string(),
                day,
            })
            .collect(),
    })
    .into_response())
}

#[derive(Debug, serde::Deserialize)]
pub struct RangeQuery {
    #[serde(default, deserialize_with = "crate::input::optional_date")]
    from: Option<chrono::NaiveDate>,
    #[serde(default, deserialize_with = "crate::input::optional_date")]
    to: Option<chrono::NaiveDate>,
    #[serde(default, deserialize_with = "crate::input::optional_date")]
    as_of: Option<chrono::NaiveDate>,
    pending_days: Option<u32>,
    format: Option<String>,
}

/// The CSV media type, and the other one a range is answered in.
const CSV: &str = "text/csv";

/// `GET /v1/partitions/{p}/reconciliation?from=D&to=D[&as_of=D][&pending_days=N][&format=csv]`:
/// the reconciliation of every day of the range, per gateway, with totals, from the
/// projections in O(the range's lines); at most `RECONCILIATION_RANGE_DAYS_MAX` days. As
/// CSV for people (`Accept: text/csv` or `format=csv`: `payments_report::reconciliation_csv`)
/// or JSON. Readable by the province's branch and the head office, as one day.
pub async fn reconciliation_range(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(partition): Path<String>,
    headers: axum::http::HeaderMap,
    query: Result<axum::extract::Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    use crate::payments_report::{RangeError, reconciliation_csv, reconciliation_range};
    let axum::extract::Query(query) =
        query.map_err(|e| ApiError::InvalidParameter(e.body_text()))?;
    let partition = crate::input::partition(&partition)?;
    let (Some(from), Some(to)) = (query.from, query.to) else {
        return Err(ApiError::InvalidParameter(
            "give the range as from=YYYY-MM-DD and to=YYYY-MM-DD (both days included)".into(),
        ));
    };
    let csv = match query.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "format {other:?} is neither json nor csv"
            )));
        }
        None => headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| {
                accept
                    .split(',')
                    .any(|media| media.split(';').next().unwrap_or("").trim() == CSV)
            }),
    };
    access::authorize(&caller, Operation::Read, partition.as_str())?;
    // The clock is read here, at the edge, as the CLI does: today in Vietnam.
    let as_of = query.as_of.unwrap_or_else(|| api.today());
    let pending_days = query.pending_days.unwrap_or(PENDING_DAYS_DEFAULT);
    let projector = api.projector().await?;
    known_partition(projector, &partition)?;
    let range = api
        .read_off_workers({
            let partition = partition.to_string();
            move |projector| {
                reconciliation_range(projector, &partition, from, to, as_of, pending_days)
            }
        })
        .await?
        .map_err(|e| match e {
            RangeError::Projection(e) => ApiError::from(e),
            refused => ApiError::InvalidParameter(refused.to_string()),
        })?;
    if !csv {
        return Ok(Json(range).into_response());
    }
    let disposition =
        format!("attachment; filename=\"reconciliation-{partition}-{from}-{to}.csv\"");
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/csv; charset=utf-8; header=present".to_owned(),
            ),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        reconciliation_csv(&range),
    )
        .into_response())
}

/// One day's reconciliation lines of a partition per gateway, from the projections, for
/// a caller who may read the partition: what the JSON route and the console show.
pub async fn reconciliation_lines(
    api: &Api,
    caller: &crate::access::Caller,
    partition: &Partition,
    day: chrono::NaiveDate,
    as_of: chrono::NaiveDate,
    pending_days: u32,
) -> Result<
    Vec<(
        crate::domain::payments::ids::GatewayId,
        crate::domain::payments::reconcile::GatewayDay,
    )>,
    ApiError,
> {
    access::authorize(caller, Operation::Read, partition.as_str())?;
    let lines = reconciliation_day_of(api, partition, day, as_of, pending_days).await?;
    Ok(lines.into_iter().collect())
}

async fn reconciliation_day_of(
    api: &Api,
    partition: &Partition,
    day: chrono::NaiveDate,
    as_of: chrono::NaiveDate,
    pending_days: u32,
) -> Result<
    std::collections::BTreeMap<
        crate::domain::payments::ids::GatewayId,
        crate::domain::payments::reconcile::GatewayDay,
    >,
    ApiError,
> {
    let projector = api.projector().await?;
    known_partition(projector, partition)?;
    // A day of an outage holds tens of thousands of pending instructions: read off the
    // runtime's workers, as a range is.
    api.read_off_workers({
        let partition = partition.to_string();
        move |projector| projector.reconciliation_day(&partition, day, as_of, pending_days)
    })
    .await??
    .ok_or_else(|| {
            ApiError::InvalidParameter(format!(
                "partition {partition} has payment events recorded after {as_of}: ask as of a later day, or run `ansinh payments reconcile --as-of {as_of}` for the report over the log"
            ))
        })
}

/// The summary of a partition, or 404 when the log has never seen it (the summaries are
/// the projector's record of every partition it applied an event of).
pub(super) fn known_partition(
    projector: &crate::projection::Projector,
    partition: &Partition,
) -> Result<crate::projection::PartitionSummary, ApiError> {
    projector
        .summary(partition.as_str())?
        .ok_or_else(|| ApiError::NotFound {
            what: "partition",
            value: partition.to_string(),
        })
}
