//! Console pages for a commune's portfolio (with server-side SVG bar charts) and for
//! payments: a month's budget, a commune's payment run, and one day's reconciliation per
//! gateway with its CSV. Reads come from the projections through the JSON handlers'
//! helpers; writes go through `Service::payment` under the form's idempotency key.

use axum::Router;
use axum::extract::State;

use super::Query;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Deserialize;

use crate::access::{self, Operation};
use crate::domain::Rejection;
use crate::domain::payments::budget::BudgetKey;
use crate::domain::payments::ids::ProgrammeId;
use crate::domain::payments::instructions::Shortfall;
use crate::domain::payments::{CommandKind, EventBody};
use crate::service::ServiceError;

use super::Path;
use super::i18n::{self, T};
use super::session::Session;
use super::{
    Fields, FormBody, Problems, begin_write, error_in, form_key, fresh_key, general_problem, may,
    page, protocol_fields, receipt_block, text_field,
};
use crate::http::payments::{PROGRAMME, bad, commune_path, recorded};
use crate::http::reports::{PENDING_DAYS_DEFAULT, reconciliation_lines};
use crate::http::{Api, ApiError};

/// Months charted on the portfolio page: two years, enough to see a season come back;
/// read with one reverse scan of this many keys.
pub const MONTHS_CHARTED: usize = 24;

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/console/communes/{code}/portfolio", get(portfolio))
        .route("/console/payments", get(payments_page))
        .route("/console/payments/budgets", post(allocate))
        .route("/console/payments/runs", post(run))
        .route("/console/payments/partition-runs", post(partition_run))
        .route("/console/payments/reconciliation", get(reconciliation))
        .route(
            "/console/payments/reconciliation.csv",
            get(reconciliation_csv),
        )
}

// ---- charts ---------------------------------------------------------------------------

/// One series of a bar chart: its name, colour and one value per label.
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub values: Vec<Decimal>,
}

const CHART_WIDTH: f64 = 720.0;
const CHART_HEIGHT: f64 = 260.0;
const CHART_LEFT: f64 = 12.0;
const CHART_TOP: f64 = 28.0;
const CHART_BOTTOM: f64 = 44.0;
/// A bar no wider than this, so one month does not fill the chart.
const CHART_BAR_WIDTH_MAX: f64 = 48.0;

/// A grouped bar chart as SVG, drawn on the server (no script). The values are money or
/// percentages; floats are used only for the drawing's geometry. Each bar has a title
/// with its value as people read it (`show`).
pub fn bar_chart(
    id: &str,
    labels: &[String],
    series: &[Series<'_>],
    show: impl Fn(Decimal) -> String,
) -> Markup {
    let max = series
        .iter()
        .flat_map(|s| s.values.iter())
        .copied()
        .max()
        .filter(|m| *m > Decimal::ZERO)
        .unwrap_or(Decimal::ONE);
    let plot_height = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM;
    let group = (CHART_WIDTH - CHART_LEFT * 2.0) / labels.len().max(1) as f64;
    let bar = ((group * 0.8) / series.len().max(1) as f64).min(CHART_BAR_WIDTH_MAX);
    let height = |v: Decimal| (v.max(Decimal::ZERO) / max).to_f64().unwrap_or(0.0) * plot_height;
    html! {
        svg.chart id=(id) xmlns="http://www.w3.org/2000/svg" width=(CHART_WIDTH) height=(CHART_HEIGHT)
            viewBox={ "0 0 " (CHART_WIDTH) " " (CHART_HEIGHT) } role="img" {
            rect x="0" y="0" width=(CHART_WIDTH) height=(CHART_HEIGHT) fill="#fff" stroke="#d5d9de" {}
            @for (j, s) in series.iter().enumerate() {
                rect x=(CHART_LEFT + j as f64 * 150.0) y="8" width="10" height="10" fill=(s.colour) {}
                text x=(CHART_LEFT + 14.0 + j as f64 * 150.0) y="17" { (s.name) }
            }
            line x1=(CHART_LEFT) y1=(CHART_HEIGHT - CHART_BOTTOM) x2=(CHART_WIDTH - CHART_LEFT)
                y2=(CHART_HEIGHT - CHART_BOTTOM) stroke="#1d2733" {}
            @for (i, label) in labels.iter().enumerate() {
                @let x0 = CHART_LEFT + i as f64 * group + group * 0.1;
                @for (j, s) in series.iter().enumerate() {
                    @let v = s.values.get(i).copied().unwrap_or_default();
                    @let h = height(v);
                    rect.bar x=(x0 + j as f64 * bar) y=(CHART_HEIGHT - CHART_BOTTOM - h)
                        width=(bar * 0.92) height=(h) fill=(s.colour) data-value=(v) {
                        title { (label) " — " (s.name) ": " (show(v)) }
                    }
                }
                text x=(x0) y=(CHART_HEIGHT - CHART_BOTTOM + 14.0) { (label) }
            }
            text x=(CHART_WIDTH - CHART_LEFT) y=(CHART_TOP - 4.0) text-anchor="end" { "max " (show(max)) }
        }
    }
}

/// A ratio as a percentage with one decimal, Vietnamese style (`12,5 %`).
fn percent(ratio_percent: Decimal) -> String {
    format!("{} %", ratio_percent.round_dp(1)).replace('.', ",")
}

/// `GET /console/communes/{code}/portfolio`: the portfolio, outstanding by programme,
/// overdue ratio by month, disbursements and collections by month.
async fn portfolio(State(api): State<Api>, session: Session, Path(code): Path<String>) -> Response {
    match portfolio_page(&api, &session, &code).await {
        Ok(r) => r,
        Err(e) => error_in(&session, &e),
    }
}

async fn portfolio_page(api: &Api, session: &Session, code: &str) -> Result<Response, ApiError> {
    let lang = session.lang;
    let commune = crate::input::commune(code)?;
    access::authorize(&session.caller, Operation::Read, commune.as_str())?;
    let projector = api.projector().await?;
    // The months are charted from the portfolio shown beside them: one state of both.
    let (folio, months) = projector.commune_and_months(commune.as_str(), MONTHS_CHARTED)?;
    let folio = folio.ok_or_else(|| ApiError::NotFound {
        what: "commune",
        value: commune.to_string(),
    })?;
    let programmes: Vec<String> = folio.by_programme.keys().cloned().collect();
    let month_labels: Vec<String> = months.iter().map(|m| m.month.clone()).collect();
    let hundred = Decimal::ONE_HUNDRED;
    let ratio = |outstanding: Decimal, overdue: Decimal| {
        if outstanding.is_zero() {
            Decimal::ZERO
        } else {
            overdue * hundred / outstanding
        }
    };
    let body = html! {
        table #portfolio {
            tr { th { (lang.t(T::HouseholdsActive)) } td.num { (folio.households_active) } }
            tr { th { (lang.t(T::OpenLoans)) } td.num { (folio.open_loans) } }
            tr { th { (lang.t(T::Outstanding)) } td.num #portfolio-outstanding { (i18n::money(folio.outstanding)) } }
            tr { th { (lang.t(T::Overdue)) } td.num { (i18n::money(folio.overdue)) } }
            tr { th { (lang.t(T::OverdueRatio)) } td.num { (percent(folio.overdue_ratio() * hundred)) } }
            tr { th { (lang.t(T::WrittenOff)) } td.num { (i18n::money(folio.written_off)) } }
        }
        h2 { (lang.t(T::OutstandingByProgramme)) }
        (bar_chart("chart-programmes", &programmes, &[
            Series { name: lang.t(T::Outstanding), colour: "#8a1c1c", values: folio.by_programme.values().map(|l| l.outstanding).collect() },
            Series { name: lang.t(T::Overdue), colour: "#e0a100", values: folio.by_programme.values().map(|l| l.overdue).collect() },
        ], i18n::money))
        h2 { (lang.t(T::OverdueRatio)) }
        (bar_chart("chart-overdue-ratio", &month_labels, &[
            Series { name: lang.t(T::OverdueRatio), colour: "#e0a100", values: months.iter().map(|m| ratio(m.outstanding, m.overdue)).collect() },
        ], percent))
        h2 { (lang.t(T::Disbursed)) " / " (lang.t(T::Collected)) }
        (bar_chart("chart-flows", &month_labels, &[
            Series { name: lang.t(T::Disbursed), colour: "#1f5fa8", values: months.iter().map(|m| m.disbursed).collect() },
            Series { name: lang.t(T::Collected), colour: "#0b6b2b", values: months.iter().map(|m| m.collected).collect() },
        ], i18n::money))
    };
    let title = format!("{} {commune}", lang.t(T::Portfolio));
    Ok(page(lang, &title, Some(session), body).into_response())
}

// ---- payments -------------------------------------------------------------------------

/// The commune typed in the form, or the caller's own when its unit is one commune.
fn commune_or_unit<'a>(session: &'a Session, f: &'a Fields) -> &'a str {
    match f.get("commune") {
        "" if session.caller.unit.len() == 7 => &session.caller.unit,
        typed => typed,
    }
}

fn budget_form(session: &Session, key: &str, f: &Fields, p: &Problems) -> Markup {
    let lang = session.lang;
    let commune = commune_or_unit(session, f);
    html! {
        form.card #budget method="post" action="/console/payments/budgets" {
            h2 { (lang.t(T::Budget)) }
            (protocol_fields(session, key))
            (text_field(lang.t(T::Commune), "commune", commune, p))
            (text_field(lang.t(T::Period), "period", f.get("period"), p))
            (text_field(lang.t(T::Amount), "amount", f.get("amount"), p))
            (text_field(lang.t(T::On), "on", &f.day_or_today("on", session.today), p))
            button #budget-submit type="submit" { (lang.t(T::Submit)) }
        }
    }
}

fn run_form(session: &Session, key: &str, f: &Fields, p: &Problems) -> Markup {
    let lang = session.lang;
    let commune = commune_or_unit(session, f);
    html! {
        form.card #run method="post" action="/console/payments/runs" {
            h2 { (lang.t(T::PaymentRun)) }
            (protocol_fields(session, key))
            (text_field(lang.t(T::Commune), "commune", commune, p))
            (text_field(lang.t(T::Period), "period", f.get("period"), p))
            (text_field(lang.t(T::On), "on", &f.day_or_today("on", session.today), p))
            button #run-submit type="submit" { (lang.t(T::PaymentRun)) }
        }
    }
}

/// A whole province's run: a job, followed on its page commune by commune.
fn partition_run_form(session: &Session, key: &str, f: &Fields, p: &Problems) -> Markup {
    let lang = session.lang;
    let partition = match f.get("partition") {
        "" => session.caller.unit.get(..2).unwrap_or_default(),
        p => p,
    };
    html! {
        form.card #partition-run method="post" action="/console/payments/partition-runs" {
            h2 { (lang.t(T::PartitionRun)) }
            (protocol_fields(session, key))
            (text_field(lang.t(T::Partition), "partition", partition, p))
            (text_field(lang.t(T::Period), "period", f.get("period"), p))
            (text_field(lang.t(T::On), "on", &f.day_or_today("on", session.today), p))
            button #partition-run-submit type="submit" { (lang.t(T::StartPartitionRun)) }
        }
    }
}

fn reconciliation_form(session: &Session, partition: &str, day: &str, p: &Problems) -> Markup {
    let lang = session.lang;
    let partition = match partition {
        "" => session.caller.unit.get(..2).unwrap_or_default(),
        p => p,
    };
    html! {
        form.card #reconcile method="get" action="/console/payments/reconciliation" {
            h2 { (lang.t(T::Reconciliation)) }
            (text_field(lang.t(T::Partition), "partition", partition, p))
            (text_field(lang.t(T::Day), "day", day, p))
            button #reconcile-submit type="submit" { (lang.t(T::Show)) }
        }
    }
}

/// `GET /console/payments`: the forms the reader's role allows, and the reconciliation.
async fn payments_page(session: Session) -> Response {
    let lang = session.lang;
    let none = Problems::default();
    let body = html! {
        @if may(&session.caller, Operation::AllocateBudget) {
            (budget_form(&session, &fresh_key(), &Fields::empty(), &none))
        }
        @if may(&session.caller, Operation::ManagePayments) {
            (run_form(&session, &fresh_key(), &Fields::empty(), &none))
            (partition_run_form(&session, &fresh_key(), &Fields::empty(), &none))
        }
        (reconciliation_form(&session, "", "", &none))
    };
    page(lang, lang.t(T::Payments), Some(&session), body).into_response()
}

/// `POST /console/payments/budgets`: a month's social assistance budget of a commune.
async fn allocate(State(api): State<Api>, session: Session, FormBody(f): FormBody) -> Response {
    if let Some(refused) = session.csrf_refusal(&f) {
        return refused;
    }
    let lang = session.lang;
    let key = f.get(super::IDEMPOTENCY_FIELD).to_owned();
    let again = |p: &Problems, status| {
        let body = html! { (general_problem(p)) (budget_form(&session, &key, &f, p)) };
        (status, page(lang, lang.t(T::Budget), Some(&session), body)).into_response()
    };
    let mut p = Problems::default();
    let commune = commune_path(f.get("commune"))
        .map_err(|e| p.field("commune", super::plain_words(lang, &e)))
        .ok();
    let period = crate::input::month(f.get("period"))
        .map_err(|e| p.field("period", e))
        .ok();
    let amount = i18n::parse_money(f.get("amount"))
        .map_err(|e| p.field("amount", e))
        .ok();
    let on = i18n::parse_date(f.get("on"))
        .map_err(|e| p.field("on", e))
        .ok();
    let (Some((_, commune, partition)), Some(period), Some(amount), Some(on)) =
        (commune, period, amount, on)
    else {
        return again(&p, axum::http::StatusCode::BAD_REQUEST);
    };
    let result = async {
        let kind = CommandKind::Allocate {
            budget: BudgetKey {
                programme: ProgrammeId::parse(PROGRAMME).map_err(bad)?,
                commune,
                period,
            },
            amount,
        };
        let write = begin_write(&session.caller, &f, "POST /console/payments/budgets")?;
        let (service, caller) = (api.service().clone(), session.caller.clone());
        super::write_in_time(&session, async move {
            service
                .payment(&write.request(&caller), &partition, kind, on)
                .await
        })
        .await
    }
    .await;
    match result {
        Ok(receipt) => {
            let body = html! { (receipt_block(lang, &receipt)) p { a href="/console/payments" { (lang.t(T::Payments)) } } };
            page(lang, lang.t(T::Budget), Some(&session), body).into_response()
        }
        // Not allowed at all: no form to correct, only the refusal.
        Err(e @ ApiError::Denied(_)) => error_in(&session, &e),
        Err(e) => again(&Problems::refusal(lang, &e), e.status()),
    }
}

/// `POST /console/payments/runs`: one instruction per active entitlement of the commune
/// for the month, all or none, in one command (so there is no partial progress to show:
/// the answer is the run's result). A run already done answers that nothing was left.
async fn run(State(api): State<Api>, session: Session, FormBody(f): FormBody) -> Response {
    if let Some(refused) = session.csrf_refusal(&f) {
        return refused;
    }
    let lang = session.lang;
    let key = f.get(super::IDEMPOTENCY_FIELD).to_owned();
    let again = |p: &Problems, status| {
        let body = html! { (general_problem(p)) (run_form(&session, &key, &f, p)) };
        (
            status,
            page(lang, lang.t(T::PaymentRun), Some(&session), body),
        )
            .into_response()
    };
    let mut p = Problems::default();
    let commune = commune_path(f.get("commune"))
        .map_err(|e| p.field("commune", super::plain_words(lang, &e)))
        .ok();
    let period = crate::input::month(f.get("period"))
        .map_err(|e| p.field("period", e))
        .ok();
    let on = i18n::parse_date(f.get("on"))
        .map_err(|e| p.field("on", e))
        .ok();
    let (Some((_, commune, partition)), Some(period), Some(on)) = (commune, period, on) else {
        return again(&p, axum::http::StatusCode::BAD_REQUEST);
    };
    let kind = CommandKind::Run {
        period,
        commune: Some(commune),
    };
    let result = async {
        let write = begin_write(&session.caller, &f, "POST /console/payments/runs")?;
        let (service, caller) = (api.service().clone(), session.caller.clone());
        let done = super::write_in_time(&session, async move {
            match service
                .payment(&write.request(&caller), &partition, kind, on)
                .await
            {
                Err(ServiceError::Rejected(Rejection::NothingToRecord)) => Ok(None),
                done => done.map(Some),
            }
        })
        .await?;
        let Some(receipt) = done else {
            return Ok(None);
        };
        // Recorded: what follows is only shown (a failed read must not make the run look
        // refused, or the clerk runs it again from a new form).
        let details = match super::read_back_in_time(&session, recorded(&api, &receipt)).await {
            Ok(EventBody::PaymentRunCompleted {
                issued,
                amount,
                shortfalls,
                left_unpaid,
                ..
            }) => Some((
                issued,
                amount,
                shortfalls
                    .iter()
                    .map(Shortfall::sentence)
                    .collect::<Vec<_>>(),
                left_unpaid,
            )),
            Ok(_) => {
                return Err(ApiError::Internal(
                    "the receipt of a run names another event".into(),
                ));
            }
            Err(_) => None,
        };
        Ok(Some((receipt, details)))
    }
    .await;
    match result {
        Ok(outcome) => {
            let body = html! {
                @match &outcome {
                    None => p.ok #nothing-left { (lang.t(T::Nothing)) },
                    Some((receipt, None)) => {
                        (receipt_block(lang, receipt))
                        p #details-not-yet { (lang.t(T::DetailsNotYetReadable)) }
                    },
                    Some((receipt, Some((issued, amount, shortfalls, left_unpaid)))) => {
                        (receipt_block(lang, receipt))
                        table #run-result {
                            tr { th { (lang.t(T::Instructions)) } td.num #run-issued { (issued) } }
                            tr { th { (lang.t(T::Amount)) } td.num #run-amount { (i18n::money(*amount)) } }
                        }
                        @for s in shortfalls { p.err { (s) } }
                        @for (reason, why, ids) in i18n::left_unpaid(lang, left_unpaid) {
                            p.err id=(format!("run-{reason}")) { (why) ": " (ids) }
                        }
                    },
                }
                p { a href="/console/payments" { (lang.t(T::Payments)) } }
            };
            page(lang, lang.t(T::PaymentRun), Some(&session), body).into_response()
        }
        // Not allowed at all: no form to correct, only the refusal.
        Err(e @ ApiError::Denied(_)) => error_in(&session, &e),
        Err(e) => again(&Problems::refusal(lang, &e), e.status()),
    }
}

/// `POST /console/payments/partition-runs`: every commune of the province paid for the
/// month, each all or none, in a job (`http::jobs::payment_run`, as the API's
/// `POST /v1/partitions/{p}/payment-runs`); the browser is sent to the job's page. The
/// same form sent again finds the same job.
async fn partition_run(
    State(api): State<Api>,
    session: Session,
    FormBody(f): FormBody,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&f) {
        return refused;
    }
    let lang = session.lang;
    let key = f.get(super::IDEMPOTENCY_FIELD).to_owned();
    let again = |p: &Problems, status| {
        let body = html! { (general_problem(p)) (partition_run_form(&session, &key, &f, p)) };
        (
            status,
            page(lang, lang.t(T::PartitionRun), Some(&session), body),
        )
            .into_response()
    };
    let mut p = Problems::default();
    let partition = crate::input::partition(f.get("partition"))
        .map_err(|e| p.field("partition", e))
        .ok();
    let period = crate::input::month(f.get("period"))
        .map_err(|e| p.field("period", e))
        .ok();
    let on = i18n::parse_date(f.get("on"))
        .map_err(|e| p.field("on", e))
        .ok();
    let (Some(partition), Some(period), Some(on)) = (partition, period, on) else {
        return again(&p, axum::http::StatusCode::BAD_REQUEST);
    };
    let started = async {
        let (key, fingerprint) = form_key(&f, "POST /console/payments/partition-runs")?;
        crate::http::jobs::payment_run::begin(
            &api,
            session.caller.clone(),
            &key,
            fingerprint,
            partition,
            period,
            on,
        )
        .await
    }
    .await;
    match started {
        Ok(started) => super::jobs::follow(&started),
        // Not allowed at all: no form to correct, only the refusal.
        Err(e @ ApiError::Denied(_)) => error_in(&session, &e),
        Err(e) => again(&Problems::refusal(lang, &e), e.status()),
    }
}

#[derive(Deserialize)]
struct DayQuery {
    #[serde(default)]
    partition: String,
    #[serde(default)]
    day: String,
}

type Lines = Vec<(
    crate::domain::payments::ids::GatewayId,
    crate::domain::payments::reconcile::GatewayDay,
)>;

/// The day's lines from the projections, as of today (the clock is read at the edge).
async fn day_lines(
    api: &Api,
    session: &Session,
    q: &DayQuery,
) -> Result<(crate::chain::Partition, chrono::NaiveDate, Lines), ApiError> {
    let partition = crate::input::partition(q.partition.trim())?;
    let day = i18n::parse_date(&q.day)?;
    let lines = reconciliation_lines(
        api,
        &session.caller,
        &partition,
        day,
        session.today,
        PENDING_DAYS_DEFAULT,
    )
    .await?;
    Ok((partition, day, lines))
}

fn tally(t: &crate::domain::payments::reconcile::Tally) -> String {
    format!("{} / {}", t.count, i18n::money(t.amount))
}

/// `GET /console/payments/reconciliation?partition=&day=`: one day per gateway.
async fn reconciliation(
    State(api): State<Api>,
    session: Session,
    Query(q): Query<DayQuery>,
) -> Response {
    let lang = session.lang;
    let (partition, day, lines) = match day_lines(&api, &session, &q).await {
        Ok(found) => found,
        Err(e) => {
            let p = Problems::refusal(lang, &e);
            let body = html! { (general_problem(&p)) (reconciliation_form(&session, &q.partition, &q.day, &p)) };
            return (
                e.status(),
                page(lang, lang.t(T::Reconciliation), Some(&session), body),
            )
                .into_response();
        }
    };
    let body = html! {
        (reconciliation_form(&session, partition.as_str(), &i18n::date(day), &Problems::default()))
        table #reconciliation {
            tr { th { (lang.t(T::Gateway)) } th { (lang.t(T::Instructed)) } th { (lang.t(T::Settled)) } th { (lang.t(T::FailedPayments)) } th { (lang.t(T::Returned)) } th { (lang.t(T::TimedOut)) } th { (lang.t(T::CancelledPayments)) } th { (lang.t(T::PendingPayments)) } th { (lang.t(T::Mismatches)) } }
            @for (gateway, d) in &lines {
                tr.gateway {
                    td { (gateway) }
                    td.num { (tally(&d.instructed)) }
                    td.num { (tally(&d.settled)) }
                    td.num { (tally(&d.failed)) }
                    td.num { (tally(&d.returned)) }
                    td.num.timed-out { (tally(&d.timed_out)) }
                    td.num.cancelled { (tally(&d.cancelled)) }
                    td.num { (tally(&d.pending_overdue)) }
                    td.num { (d.mismatches.len()) }
                }
            }
        }
        @if lines.is_empty() { p { (lang.t(T::Nothing)) } }
        p { a #csv-link href={ "/console/payments/reconciliation.csv?partition=" (partition) "&day=" (day) } { (lang.t(T::DownloadCsv)) } }
    };
    let title = format!(
        "{} {partition} {}",
        lang.t(T::Reconciliation),
        i18n::date(day)
    );
    page(lang, &title, Some(&session), body).into_response()
}

/// `GET /console/payments/reconciliation.csv?partition=&day=`: the same lines as the CSV
/// for people that `payments reconcile --csv` writes.
async fn reconciliation_csv(
    State(api): State<Api>,
    session: Session,
    Query(q): Query<DayQuery>,
) -> Response {
    match day_lines(&api, &session, &q).await {
        Ok((partition, day, lines)) => {
            let csv = crate::payments_report::reconciliation_csv_rows(
                lines.iter().map(|(g, d)| (partition.as_str(), day, g, d)),
            );
            (
                [
                    (CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (
                        CONTENT_DISPOSITION,
                        format!("attachment; filename=\"reconciliation-{partition}-{day}.csv\""),
                    ),
                ],
                csv,
            )
                .into_response()
        }
        Err(e) => error_in(&session, &e),
    }
}
