//! Read models: a commune's portfolio and a partition's trial balance.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::access::{self, Operation};
use crate::book::codec;
use crate::chain::Partition;
use crate::domain::ids::CommuneCode;
use crate::views::{ACCOUNTS, CommunePortfolio, TrialBalanceView};

use super::extract::Staff;
use super::{Api, ApiError};

/// schemas/http/portfolio.response.json: the view plus its overdue ratio.
#[derive(Serialize)]
struct PortfolioAnswer {
    #[serde(flatten)]
    portfolio: CommunePortfolio,
    overdue_ratio: Decimal,
}

/// A commune with no household yet has an all-zero portfolio (not a 404): the commune
/// exists on the map, it just has nothing recorded.
pub async fn portfolio(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let commune =
        CommuneCode::parse(&code).map_err(|e| ApiError::InvalidParameter(e.to_string()))?;
    access::authorize(&caller, Operation::Read, commune.as_str())?;
    let portfolio = api
        .projector()
        .await?
        .commune(commune.as_str())?
        .unwrap_or_else(|| CommunePortfolio {
            commune: commune.to_string(),
            ..CommunePortfolio::default()
        });
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
    let partition =
        Partition::new(&partition).map_err(|e| ApiError::InvalidParameter(e.to_string()))?;
    // A province code is a prefix of all its communes: `authorize` with the code itself
    // admits exactly that province's units and the head office.
    access::authorize(&caller, Operation::Read, partition.as_str())?;
    let tb = api
        .projector()
        .await?
        .trial_balance(partition.as_str())?
        .unwrap_or_else(|| TrialBalanceView {
            partition: partition.to_string(),
            ..TrialBalanceView::default()
        });
    let accounts = ACCOUNTS
        .iter()
        .map(|account| {
            let name = codec::name(account);
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
