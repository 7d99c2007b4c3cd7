//! Console forms for loans: approve (the answer names the new loan), disburse, repay
//! (the answer shows how the book split the payment). Each goes through
//! `Service::loan`, as `POST /v1/loans...` does; the book checks the loan's household
//! lies in the caller's unit.

use axum::Router;
use axum::extract::State;

use super::Query;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use crate::domain::loans::Channel;
use crate::proto::envelope::Payload;
use crate::service::LoanAction;

use super::Path;
use super::i18n::{self, T};
use super::session::Session;
use super::{
    Fields, FormBody, Problems, begin_write, error_in, fresh_key, general_problem,
    household_form_page, page, posted_household, protocol_fields, receipt_block, select_field,
    text_field,
};
use crate::http::{Api, ApiError};

pub fn routes() -> Router<Api> {
    Router::new()
        .route(
            "/console/households/{id}/loans/new",
            get(approve_page).post(approve),
        )
        .route(
            "/console/loans/{loan}/{action}",
            get(action_page).post(action),
        )
}

const PROGRAMMES: [&str; 4] = [
    "POOR_HOUSEHOLD",
    "NEAR_POOR_HOUSEHOLD",
    "ESCAPED_POVERTY_HOUSEHOLD",
    "RURAL_CLEAN_WATER_SANITATION",
];

const ENTRUSTED: [(&str, &str); 4] = [
    ("womens_union", "Hội Liên hiệp Phụ nữ / Women's Union"),
    ("farmers_union", "Hội Nông dân / Farmers' Union"),
    ("veterans_association", "Hội Cựu chiến binh / Veterans"),
    ("youth_union", "Đoàn Thanh niên / Youth Union"),
];

fn approve_form(session: &Session, h: &str, key: &str, f: &Fields, p: &Problems) -> Markup {
    let lang = session.lang;
    let programmes: Vec<(&str, &str)> = PROGRAMMES.iter().map(|p| (*p, *p)).collect();
    html! {
        (general_problem(p))
        form.card #approve method="post" action={ "/console/households/" (h) "/loans/new" } {
            (protocol_fields(session, key))
            (select_field(lang.t(T::Programme), "programme", &programmes, f.get("programme"), p))
            (text_field(lang.t(T::Amount), "amount", f.get("amount"), p))
            (text_field(lang.t(T::TermMonths), "term_months", f.get("term_months"), p))
            (text_field(lang.t(T::SavingsGroup), "savings_group", f.get("savings_group"), p))
            (select_field(lang.t(T::Entrusted), "entrusted", &ENTRUSTED, f.get("entrusted"), p))
            (text_field(lang.t(T::On), "on", &f.day_or_today("on", session.today), p))
            (text_field(lang.t(T::Reason), "reason", f.get("reason"), p))
            button #submit type="submit" { (lang.t(T::Submit)) }
        }
    }
}

/// `GET /console/households/{id}/loans/new`.
async fn approve_page(session: Session, Path(id): Path<String>) -> Response {
    let title = session.lang.t(T::ApproveLoan);
    household_form_page(
        &session,
        &id,
        crate::access::Operation::ApproveLoan,
        title,
        |h, key| {
            approve_form(
                &session,
                h.as_str(),
                key,
                &Fields::empty(),
                &Problems::default(),
            )
        },
    )
}

/// `POST /console/households/{id}/loans/new`: the answer names the new loan.
async fn approve(
    State(api): State<Api>,
    session: Session,
    Path(id): Path<String>,
    FormBody(f): FormBody,
) -> Response {
    let h = match posted_household(&session, &id, &f) {
        Ok(h) => h,
        Err(refused) => return *refused,
    };
    let lang = session.lang;
    let title = lang.t(T::ApproveLoan);
    let key = f.get(super::IDEMPOTENCY_FIELD).to_owned();
    let again = |p: &Problems, status| {
        let body = approve_form(&session, h.as_str(), &key, &f, p);
        (status, page(lang, title, Some(&session), body)).into_response()
    };
    let mut p = Problems::default();
    let amount = i18n::parse_money(f.get("amount"))
        .map_err(|e| p.field("amount", e))
        .ok();
    // The programme comes from a list, but a forged form may send anything: it is read
    // as the API reads it, and the book refuses one it does not know.
    let programme = crate::input::code(f.get("programme"))
        .map_err(|e| p.field("programme", e))
        .ok();
    let term = crate::input::term_months(f.get("term_months"))
        .map_err(|e| p.field("term_months", e))
        .ok();
    let group = crate::input::savings_group(f.get("savings_group"))
        .map_err(|e| p.field("savings_group", e))
        .ok();
    let on = i18n::parse_date(f.get("on"))
        .map_err(|e| p.field("on", e))
        .ok();
    let reason = crate::input::text(f.get("reason"))
        .map_err(|e| p.field("reason", e))
        .ok();
    let entrusted = crate::input::entrusted(f.get("entrusted"))
        .map_err(|e| p.field("entrusted", e))
        .ok();
    let (
        Some(programme),
        Some(amount),
        Some(term),
        Some(group),
        Some(on),
        Some(reason),
        Some(entrusted),
    ) = (programme, amount, term, group, on, reason, entrusted)
    else {
        return again(&p, axum::http::StatusCode::BAD_REQUEST);
    };
    let action = LoanAction::Approve {
        household: h.clone(),
        programme,
        amount,
        term_months: term,
        savings_group: group,
        entrusted,
    };
    let route = format!("POST /console/households/{h}/loans/new");
    let result = async {
        let write = begin_write(&session.caller, &f, &route)?;
        let receipt = {
            let (service, caller) = (api.service().clone(), session.caller.clone());
            super::write_in_time(&session, async move {
                service
                    .loan(&write.request(&caller), None, action, on, &reason)
                    .await
            })
            .await?
        };
        // Recorded: the reference is only shown (a failed read must not make the
        // approval look refused, or the clerk approves again from a new form).
        let loan =
            super::read_back_in_time(&session, crate::http::loans::approved_loan(&api, &receipt))
                .await
                .ok();
        Ok::<_, ApiError>((receipt, loan))
    }
    .await;
    match result {
        Ok((receipt, loan)) => {
            let body = html! {
                (receipt_block(lang, &receipt))
                @match &loan {
                    Some(loan) => {
                        table { tr { th { (lang.t(T::LoanReference)) } td #loan-ref { (loan) } } }
                        p {
                            a #disburse-link href={ "/console/loans/" (loan) "/disburse?household=" (h) } { (lang.t(T::Disburse)) } " "
                            a #household-link href={ "/console/households/" (h) "?after=" (receipt.stream_sequence) } { (lang.t(T::BackToHousehold)) }
                        }
                    }
                    None => {
                        p #details-not-yet { (lang.t(T::DetailsNotYetReadable)) }
                        p { a #household-link href={ "/console/households/" (h) "?after=" (receipt.stream_sequence) } { (lang.t(T::BackToHousehold)) } }
                    }
                }
            };
            page(lang, title, Some(&session), body).into_response()
        }
        // Not allowed at all: no form to correct, only the refusal.
        Err(e @ ApiError::Denied(_)) => error_in(&session, &e),
        Err(e) => again(&Problems::refusal(lang, &e), e.status()),
    }
}

/// A loan form's kind, from the path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Disburse,
    Repay,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "disburse" => Some(Kind::Disburse),
            "repay" => Some(Kind::Repay),
            _ => None,
        }
    }
    fn path(self) -> &'static str {
        match self {
            Kind::Disburse => "disburse",
            Kind::Repay => "repay",
        }
    }
    fn operation(self) -> crate::access::Operation {
        match self {
            Kind::Disburse => crate::access::Operation::Disburse,
            Kind::Repay => crate::access::Operation::Repay,
        }
    }
    fn title(self) -> T {
        match self {
            Kind::Disburse => T::Disburse,
            Kind::Repay => T::Repay,
        }
    }
}

#[derive(Deserialize)]
struct LoanQuery {
    /// The household page to go back to.
    household: Option<String>,
}

fn action_form(
    session: &Session,
    loan: &str,
    kind: Kind,
    household: &str,
    key: &str,
    f: &Fields,
    p: &Problems,
) -> Markup {
    let lang = session.lang;
    html! {
        (general_problem(p))
        form.card #loan-form method="post" action={ "/console/loans/" (loan) "/" (kind.path()) "?household=" (household) } {
            (protocol_fields(session, key))
            (text_field(lang.t(T::Amount), "amount", f.get("amount"), p))
            @if kind == Kind::Disburse {
                (select_field(lang.t(T::Channel), "channel", &[("commune_point", "Điểm giao dịch xã / commune point"), ("bank_transfer", "Chuyển khoản / bank transfer")], f.get("channel"), p))
            }
            (text_field(lang.t(T::On), "on", &f.day_or_today("on", session.today), p))
            button #submit type="submit" { (lang.t(kind.title())) }
        }
    }
}

/// `GET /console/loans/{loan}/{disburse|repay}`.
async fn action_page(
    session: Session,
    Path((loan, kind)): Path<(String, String)>,
    Query(query): Query<LoanQuery>,
) -> Response {
    let lang = session.lang;
    let (loan, kind) = match (crate::input::loan_ref(&loan), Kind::parse(&kind)) {
        (Ok(loan), Some(kind)) => (loan, kind),
        (Err(e), _) => return error_in(&session, &e.into()),
        (_, None) => return error_in(&session, &ApiError::NoSuchRoute),
    };
    if let Some(refused) = super::refuse_role(&session, kind.operation()) {
        return refused;
    }
    let household = query.household.unwrap_or_default();
    let body = action_form(
        &session,
        &loan.to_string(),
        kind,
        &household,
        &fresh_key(),
        &Fields::empty(),
        &Problems::default(),
    );
    let title = format!("{} {loan}", lang.t(kind.title()));
    page(lang, &title, Some(&session), body).into_response()
}

/// `POST /console/loans/{loan}/{disburse|repay}`: a repayment's answer shows how the
/// book split it between interest and principal.
async fn action(
    State(api): State<Api>,
    session: Session,
    Path((loan, kind)): Path<(String, String)>,
    Query(query): Query<LoanQuery>,
    FormBody(f): FormBody,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&f) {
        return refused;
    }
    let lang = session.lang;
    let (loan, kind) = match (crate::input::loan_ref(&loan), Kind::parse(&kind)) {
        (Ok(loan), Some(kind)) => (loan, kind),
        (Err(e), _) => return error_in(&session, &e.into()),
        (_, None) => return error_in(&session, &ApiError::NoSuchRoute),
    };
    let household = query
        .household
        .as_deref()
        .and_then(|h| crate::input::household(h).ok())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let title = format!("{} {loan}", lang.t(kind.title()));
    let key = f.get(super::IDEMPOTENCY_FIELD).to_owned();
    let loan_text = loan.to_string();
    let again = |p: &Problems, status| {
        let body = action_form(&session, &loan_text, kind, &household, &key, &f, p);
        (status, page(lang, &title, Some(&session), body)).into_response()
    };
    let mut p = Problems::default();
    let amount = i18n::parse_money(f.get("amount"))
        .map_err(|e| p.field("amount", e))
        .ok();
    let on = i18n::parse_date(f.get("on"))
        .map_err(|e| p.field("on", e))
        .ok();
    // A disbursement's channel as the API reads it: absent is the commune point (the
    // schema's default), a word it does not know is refused. A repayment has none.
    let channel = match (kind, f.get("channel")) {
        (Kind::Repay, _) | (Kind::Disburse, "") => Some(Channel::CommuneTransactionPoint),
        (Kind::Disburse, typed) => crate::input::disbursement_channel(typed)
            .map_err(|e| p.field("channel", e))
            .ok(),
    };
    let (Some(amount), Some(on), Some(channel)) = (amount, on, channel) else {
        return again(&p, axum::http::StatusCode::BAD_REQUEST);
    };
    let (action, reason) = match kind {
        Kind::Disburse => (
            LoanAction::Disburse { amount, channel },
            // The reasons the CLI and the API record for the same commands.
            "disbursement",
        ),
        Kind::Repay => (
            LoanAction::Repay { amount },
            "repayment at the commune transaction point",
        ),
    };
    let route = format!("POST /console/loans/{loan}/{}", kind.path());
    let result = async {
        let write = begin_write(&session.caller, &f, &route)?;
        let receipt = {
            let (service, caller, loan) =
                (api.service().clone(), session.caller.clone(), loan.clone());
            super::write_in_time(&session, async move {
                service
                    .loan(&write.request(&caller), Some(&loan), action, on, reason)
                    .await
            })
            .await?
        };
        // Recorded: the split is only shown (a failed fetch must not make the payment
        // look refused, or the clerk records it again from a new form).
        let fetched = super::read_back_in_time(&session, async {
            api.service()
                .ledger
                .event_of(&receipt)
                .await
                .map_err(ApiError::from)
        })
        .await;
        let payload = match fetched {
            Ok(event) => Some(event.payload),
            Err(_) => None,
        };
        Ok::<_, ApiError>((receipt, payload))
    }
    .await;
    match result {
        Ok((receipt, fetched)) => {
            let payload = fetched.clone().flatten();
            let body = html! {
                (receipt_block(lang, &receipt))
                @if fetched.is_none() {
                    p #details-not-yet { (lang.t(T::DetailsNotYetReadable)) }
                }
                @if let Some(Payload::LoanRepaymentReceived(r)) = &payload {
                    h2 { (lang.t(T::Split)) }
                    table #split {
                        tr { th { (lang.t(T::Amount)) } td.num #split-amount { (i18n::money_str(&r.amount)) } }
                        tr { th { (lang.t(T::ToInterest)) } td.num #split-interest { (i18n::money_str(&r.to_interest)) } }
                        tr { th { (lang.t(T::ToOverdueInterest)) } td.num { (i18n::money_str(&r.to_overdue_interest)) } }
                        tr { th { (lang.t(T::ToOverduePrincipal)) } td.num { (i18n::money_str(&r.to_overdue_principal)) } }
                        tr { th { (lang.t(T::ToPrincipal)) } td.num #split-principal { (i18n::money_str(&r.to_principal)) } }
                        tr { th { (lang.t(T::StatusAfter)) } td { (r.status_after) } }
                    }
                }
                @if !household.is_empty() {
                    p { a #household-link href={ "/console/households/" (household) "?after=" (receipt.stream_sequence) } { (lang.t(T::BackToHousehold)) } }
                }
            };
            page(lang, &title, Some(&session), body).into_response()
        }
        // Not allowed at all: no form to correct, only the refusal.
        Err(e @ ApiError::Denied(_)) => error_in(&session, &e),
        Err(e) => again(&Problems::refusal(lang, &e), e.status()),
    }
}
