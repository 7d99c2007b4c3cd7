//! /v1/loans: approve, and the commands on one loan ("01-L7"). The role is checked by
//! `service`, and a unit outside the loan's partition refused there; the unit by the book
//! against the loan's household (only the book knows it for certain), which refuses with
//! `OutsideUnit` (403) before it says anything else of the loan.

use axum::extract::State;
use axum::response::Response;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::access::Caller;
use crate::book::loan_ref;
use crate::chain::Digest;
use crate::domain::Rejection;
use crate::domain::loans::{Channel, EntrustedOrganisation};
use crate::proto::envelope::Payload;
use crate::service::LoanAction;

use super::extract::{Body, IdempotencyKey, Path, RequestBody, Staff};
use super::households::{ReceiptBody, Write, audit_text, created, household};
use super::{Api, ApiError};

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntrustedBody {
    WomensUnion,
    FarmersUnion,
    VeteransAssociation,
    YouthUnion,
}

impl From<EntrustedBody> for EntrustedOrganisation {
    fn from(e: EntrustedBody) -> Self {
        match e {
            EntrustedBody::WomensUnion => EntrustedOrganisation::WomensUnion,
            EntrustedBody::FarmersUnion => EntrustedOrganisation::FarmersUnion,
            EntrustedBody::VeteransAssociation => EntrustedOrganisation::VeteransAssociation,
            EntrustedBody::YouthUnion => EntrustedOrganisation::YouthUnion,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelBody {
    #[default]
    CommunePoint,
    BankTransfer,
}

impl From<ChannelBody> for Channel {
    fn from(c: ChannelBody) -> Self {
        match c {
            ChannelBody::CommunePoint => Channel::CommuneTransactionPoint,
            ChannelBody::BankTransfer => Channel::BankTransfer,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ApproveBody {
    household_id: String,
    programme: String,
    amount: Decimal,
    term_months: u32,
    savings_group: String,
    entrusted: EntrustedBody,
    on: NaiveDate,
    reason: String,
}
impl RequestBody for ApproveBody {
    const SCHEMA: &'static str = "approve-loan.request";
}

#[derive(Debug, Deserialize)]
pub struct DisburseBody {
    amount: Decimal,
    #[serde(default)]
    channel: ChannelBody,
    on: NaiveDate,
}
impl RequestBody for DisburseBody {
    const SCHEMA: &'static str = "disburse.request";
}

#[derive(Debug, Deserialize)]
pub struct RepayBody {
    amount: Decimal,
    on: NaiveDate,
}
impl RequestBody for RepayBody {
    const SCHEMA: &'static str = "repay.request";
}

#[derive(Debug, Deserialize)]
pub struct ExtendBody {
    new_due: NaiveDate,
    on: NaiveDate,
    reason: String,
}
impl RequestBody for ExtendBody {
    const SCHEMA: &'static str = "extend.request";
}

#[derive(Debug, Deserialize)]
pub struct FreezeBody {
    decision: String,
    on: NaiveDate,
}
impl RequestBody for FreezeBody {
    const SCHEMA: &'static str = "freeze.request";
}

#[derive(Debug, Deserialize)]
pub struct WriteOffBody {
    decision: String,
    on: NaiveDate,
}
impl RequestBody for WriteOffBody {
    const SCHEMA: &'static str = "write-off.request";
}

#[derive(Debug, Deserialize)]
pub struct UnfreezeBody {
    on: NaiveDate,
    reason: String,
    #[serde(default)]
    new_due: Option<NaiveDate>,
}
impl RequestBody for UnfreezeBody {
    const SCHEMA: &'static str = "unfreeze.request";
}

#[derive(Debug, Deserialize)]
pub struct CancelApprovalBody {
    on: NaiveDate,
    reason: String,
}
impl RequestBody for CancelApprovalBody {
    const SCHEMA: &'static str = "cancel-approval.request";
}

#[derive(Debug, Deserialize)]
pub struct ReverseBody {
    sequence: u64,
    on: NaiveDate,
    reason: String,
}
impl RequestBody for ReverseBody {
    const SCHEMA: &'static str = "reverse.request";
}

#[derive(Debug, Deserialize)]
pub struct OverdueBody {
    as_of: NaiveDate,
}
impl RequestBody for OverdueBody {
    const SCHEMA: &'static str = "mark-overdue.request";
}

/// A loan reference from the path: "<partition>-L<number>", in its one spelling.
fn loan_path(reference: &str) -> Result<crate::input::LoanRef, ApiError> {
    Ok(crate::input::loan_ref(reference)?)
}

/// One loan command, with the reasons the CLI records for the same command.
#[allow(clippy::too_many_arguments)]
async fn command(
    api: &Api,
    caller: &Caller,
    key: &IdempotencyKey,
    fingerprint: Digest,
    loan: crate::input::LoanRef,
    action: LoanAction,
    effective: NaiveDate,
    reason: &str,
) -> Result<Response, ApiError> {
    let write = Write::new(caller, key, fingerprint);
    let receipt = api
        .service()
        .loan(
            &write.request(caller),
            Some(&loan),
            action,
            effective,
            reason,
        )
        .await?;
    Ok(created(receipt.duplicate, ReceiptBody::new(&receipt, None)))
}

pub async fn approve(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Body { value, fingerprint }: Body<ApproveBody>,
) -> Result<Response, ApiError> {
    let h = household(&value.household_id)?;
    let reason = audit_text("reason", &value.reason, Rejection::MissingReason)?;
    // Read by the typed parser every entrance uses (the console's and the CLI's): one
    // of only invisible characters, or a control character, never reaches the log.
    let savings_group = crate::input::savings_group(&value.savings_group)?;
    let write = Write::new(&caller, &key, fingerprint);
    let action = LoanAction::Approve {
        household: h,
        programme: value.programme,
        amount: value.amount,
        term_months: value.term_months,
        savings_group,
        entrusted: value.entrusted.into(),
    };
    let receipt = api
        .service()
        .loan(&write.request(&caller), None, action, value.on, &reason)
        .await?;
    let loan = approved_loan(&api, &receipt).await?;
    Ok(created(
        receipt.duplicate,
        ReceiptBody::new(&receipt, Some(loan)),
    ))
}

/// The reference of the loan an approval's receipt names. The loan number is decided by
/// the book: it is read from the recorded event (the original one, for a replay).
pub async fn approved_loan(api: &Api, receipt: &crate::log::Receipt) -> Result<String, ApiError> {
    let event = api.service().ledger.event_of(receipt).await?;
    let Some(Payload::LoanApproved(approved)) = event.payload else {
        return Err(ApiError::Internal(format!(
            "the receipt of an approval names a {} event",
            event.event_type
        )));
    };
    Ok(loan_ref(&receipt.partition, approved.loan_number))
}

pub async fn disburse(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(loan): Path<String>,
    Body { value, fingerprint }: Body<DisburseBody>,
) -> Result<Response, ApiError> {
    let loan = loan_path(&loan)?;
    let action = LoanAction::Disburse {
        amount: value.amount,
        channel: value.channel.into(),
    };
    command(
        &api,
        &caller,
        &key,
        fingerprint,
        loan,
        action,
        value.on,
        "disbursement",
    )
    .await
}

pub async fn repay(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(loan): Path<String>,
    Body { value, fingerprint }: Body<RepayBody>,
) -> Result<Response, ApiError> {
    let loan = loan_path(&loan)?;
    let action = LoanAction::Repay {
        amount: value.amount,
    };
    let reason = "repayment at the commune transaction point";
    command(
        &api,
        &caller,
        &key,
        fingerprint,
        loan,
        action,
        value.on,
        reason,
    )
    .await
}

pub async fn extend(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(loan): Path<String>,
    Body { value, fingerprint }: Body<ExtendBody>,
) -> Result<Response, ApiError> {
    let loan = loan_path(&loan)?;
    let action = LoanAction::Extend {
        new_due: value.new_due,
    };
    let reason = audit_text("reason", &value.reason, Rejection::MissingReason)?;
    command(
        &api,
        &caller,
        &key,
        fingerprint,
        loan,
        action,
        value.on,
        &reason,
    )
    .await
}

pub async fn freeze(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(loan): Path<String>,
    Body { value, fingerprint }: Body<FreezeBody>,
) -> Result<Response, ApiError> {
    let loan = loan_path(&loan)?;
    let action = LoanAction::Freeze {
        disaster_ref: audit_text(
            "decision",
            &value.decision,
            Rejection::MissingDisasterReference,
        )?,
    };
    let reason = "frozen by disaster decision";
    command(
        &api,
        &caller,
        &key,
        fingerprint,
        loan,
        action,
        value.on,
        reason,
    )
    .await
}

pub async fn write_off(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(loan): Path<String>,
    Body { value, fingerprint }: Body<WriteOffBody>,
) -> Result<Response, ApiError> {
    let loan = loan_path(&loan)?;
    let action = LoanAction::WriteOff {
        disaster_ref: audit_text(
            "decision",
            &value.decision,
            Rejection::MissingDisasterReference,
        )?,
    };
    let reason = "risk debt written off by decision";
    command(
        &api,
        &caller,
        &key,
        fingerprint,
        loan,
        action,
        value.on,
        reason,
    )
    .await
}

pub async fn unfreeze(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(loan): Path<String>,
    Body { value, fingerprint }: Body<UnfreezeBody>,
) -> Result<Response, ApiError> {
    let loan = loan_path(&loan)?;
    let reason = audit_text("reason", &value.reason, Rejection::MissingReason)?;
    command(
        &api,
        &caller,
        &key,
        fingerprint,
        loan,
        LoanAction::Unfreeze {
            new_due: value.new_due,
        },
        value.on,
        &reason,
    )
    .await
}

pub async fn cancel_approval(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(loan): Path<String>,
    Body { value, fingerprint }: Body<CancelApprovalBody>,
) -> Result<Response, ApiError> {
    let loan = loan_path(&loan)?;
    let reason = audit_text("reason", &value.reason, Rejection::MissingReason)?;
    command(
        &api,
        &caller,
        &key,
        fingerprint,
        loan,
        LoanAction::CancelApproval,
        value.on,
        &reason,
    )
    .await
}

pub async fn reverse(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(loan): Path<String>,
    Body { value, fingerprint }: Body<ReverseBody>,
) -> Result<Response, ApiError> {
    let loan = loan_path(&loan)?;
    let action = LoanAction::Reverse {
        sequence: value.sequence,
    };
    let reason = audit_text("reason", &value.reason, Rejection::MissingReason)?;
    command(
        &api,
        &caller,
        &key,
        fingerprint,
        loan,
        action,
        value.on,
        &reason,
    )
    .await
}

/// One step of one loan's overdue move as of a date (`ansinh loans mark-overdue` runs
/// them over every active loan of a unit): the arrears of the earliest instalment not
/// yet moved, overdue from the day after it fell due. After a job that ran late, a client
/// calls again with a new key until the answer is an accrual or `NothingToRecord` (409).
pub async fn mark_overdue(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(loan): Path<String>,
    Body { value, fingerprint }: Body<OverdueBody>,
) -> Result<Response, ApiError> {
    let loan = loan_path(&loan)?;
    let action = LoanAction::MarkOverdue;
    command(
        &api,
        &caller,
        &key,
        fingerprint,
        loan,
        action,
        value.as_of,
        "overdue run",
    )
    .await
}
