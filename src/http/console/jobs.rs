//! The job page: a province's payment run or an audit scan (anomalies, recompute),
//! followed while it runs and read when it is done. The page reads the job's one record
//! in the shared jobs bucket (`http::jobs`), so its cost is the record's, whatever the
//! log's length; while the job runs it reloads itself (`framed`, no script).

use axum::Router;
use axum::extract::State;

use super::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::Path;
use super::i18n::{self, Lang, T};
use super::session::Session;
use super::{error_in, framed};
use crate::http::Api;
use crate::http::jobs::{AuditScanJob, Job, PaymentRunJob, Started, readable_job};

/// Lines of a job's list (communes, findings) on one page.
pub const JOB_LINES_PER_PAGE: usize = 100;
/// Seconds between reloads of a running job's page.
const REFRESH_SECONDS: u32 = 2;

pub fn routes() -> Router<Api> {
    Router::new().route("/console/jobs/{id}", get(show))
}

/// Where a form that started (or found) a job sends the browser: its page (303, so a
/// reload of the page does not post the form again).
pub fn follow(started: &Started) -> Response {
    Redirect::to(&format!("/console/jobs/{}", started.job.id())).into_response()
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    page: usize,
}

/// `GET /console/jobs/{id}[?page=N]`: the job's state, progress and result, its list a
/// page at a time (from 0). Readable as `GET /v1/jobs/{id}` is (`readable_job`).
async fn show(
    State(api): State<Api>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let lang = session.lang;
    let job = match readable_job(&api, &session.caller, &id).await {
        Ok(job) => job,
        Err(e) => return error_in(&session, &e),
    };
    let (title, body) = match &job {
        Job::PaymentRun(run) => (
            format!(
                "{} {} · {}",
                lang.t(T::PartitionRun),
                run.partition,
                run.period
            ),
            payment_run(lang, run, q.page),
        ),
        Job::Anomalies(scan) => (
            format!("{} {}", lang.t(T::Anomalies), scan.partition),
            audit_scan(lang, scan, q.page),
        ),
        Job::Recompute(scan) => (
            format!("{} {}", lang.t(T::Recompute), scan.partition),
            audit_scan(lang, scan, q.page),
        ),
    };
    let refresh = (!job.finished()).then_some(REFRESH_SECONDS);
    let body = html! {
        p {
            (lang.t(T::Job)) " " code #job-id { (job.id()) } " · "
            b #job-state data-state=(job.state()) { (state_words(lang, job.state())) }
        }
        @if refresh.is_some() { p { (lang.t(T::RefreshesItself)) } }
        (body)
    };
    (
        StatusCode::OK,
        framed(lang, &title, Some(&session), refresh, body),
    )
        .into_response()
}

fn state_words(lang: Lang, state: &str) -> &'static str {
    lang.t(match state {
        "waiting" => T::JobWaiting,
        "running" => T::JobRunning,
        "done" => T::JobDone,
        _ => T::JobFailed,
    })
}

/// A commune's outcome in a province's run, as the reader says it.
fn outcome_words(lang: Lang, outcome: &str) -> &str {
    match outcome {
        "paid" => lang.t(T::OutcomePaid),
        "nothing_left" => lang.t(T::OutcomeNothingLeft),
        "unfunded" => lang.t(T::OutcomeUnfunded),
        other => other,
    }
}

/// Previous / next links of a job's list of `len` lines. `page` is whatever the query
/// said, up to `usize::MAX`: the arithmetic saturates or is checked, so a page past the
/// last is an empty page with no next one, never an overflow.
fn pages(id: &str, page: usize, len: usize, lang: Lang) -> Markup {
    let next = page
        .checked_add(1)
        .filter(|next| next.saturating_mul(JOB_LINES_PER_PAGE) < len);
    html! {
        nav.pages {
            @if let Some(previous) = page.checked_sub(1) {
                a #job-previous href={ "/console/jobs/" (id) "?page=" (previous) } { (lang.t(T::Previous)) }
            }
            @if let Some(next) = next {
                a #job-next href={ "/console/jobs/" (id) "?page=" (next) } { (lang.t(T::Next)) }
            }
        }
    }
}

fn on_page<T>(lines: &[T], page: usize) -> &[T] {
    let start = page.saturating_mul(JOB_LINES_PER_PAGE).min(lines.len());
    let end = start.saturating_add(JOB_LINES_PER_PAGE).min(lines.len());
    &lines[start..end]
}

fn payment_run(lang: Lang, run: &PaymentRunJob, page: usize) -> Markup {
    html! {
        progress #job-progress value=(run.communes_done) max=(run.communes_total.max(1)) {}
        table #job-summary {
            tr { th { (lang.t(T::CommunesDone)) } td.num #job-communes { (run.communes_done) " / " (run.communes_total) } }
            tr { th { (lang.t(T::Instructions)) } td.num #job-instructions { (run.instructions) } }
            tr { th { (lang.t(T::Amount)) } td.num #job-amount { (i18n::money(run.amount)) } }
            tr { th { (lang.t(T::On)) } td { (i18n::date(run.on)) } }
        }
        @if let Some(e) = &run.error { p.err #job-error { (e) } }
        table #job-lines {
            tr {
                th { (lang.t(T::Commune)) } th { (lang.t(T::Outcome)) }
                th.num { (lang.t(T::Instructions)) } th.num { (lang.t(T::Amount)) } th { (lang.t(T::Shortfalls)) }
            }
            @for line in on_page(&run.communes, page) {
                tr {
                    td { (line.commune) }
                    td.outcome data-outcome=(line.outcome) { (outcome_words(lang, &line.outcome)) }
                    td.num { (line.instructions) } td.num { (i18n::money(line.amount)) }
                    td {
                        @for s in &line.shortfalls { (s) br; }
                        @for (_, why, ids) in i18n::left_unpaid(lang, &line.left_unpaid) {
                            (why) ": " (ids)
                        }
                    }
                }
            }
        }
        (pages(&run.job, page, run.communes.len(), lang))
    }
}

fn audit_scan(lang: Lang, scan: &AuditScanJob, page: usize) -> Markup {
    html! {
        progress #job-progress value=(scan.stream_sequence_reached) max=(scan.stream_last_sequence.max(1)) {}
        table #job-summary {
            tr { th { (lang.t(T::Progress)) } td.num #job-reached { (scan.stream_sequence_reached) " / " (scan.stream_last_sequence) } }
            tr { th { (lang.t(T::Events)) } td.num #job-events { (scan.events_scanned) } }
            @if let Some(as_of) = scan.as_of {
                tr { th { (lang.t(T::AsOf)) } td { (i18n::date(as_of)) } }
            }
            @if let Some(days) = scan.pending_days {
                tr { th { (lang.t(T::PendingDays)) } td.num { (days) } }
            }
            @if scan.as_of.is_none() {
                tr { th { (lang.t(T::Decisions)) } td.num #job-decisions { (scan.decisions) } }
            }
            tr { th { (lang.t(T::Findings)) } td.num #job-findings { (scan.findings_total) } }
        }
        @if let Some(e) = &scan.error { p.err #job-error { (e) } }
        @if scan.findings_total > scan.findings.len() as u64 {
            p { (lang.t(T::FindingsNotListed)) }
        }
        table #job-lines {
            tr {
                th { (lang.t(T::Kind)) } th { (lang.t(T::Household)) }
                th { (lang.t(T::Where)) } th { (lang.t(T::Details)) }
            }
            @for finding in on_page(&scan.findings, page) {
                (finding_row(finding))
            }
        }
        (pages(&scan.job, page, scan.findings.len(), lang))
    }
}

/// One finding of either report (an anomaly, or a decision that does not re-derive), as
/// a row: what it is, which household, where in the log (a link to its inclusion proof),
/// and its other fields as the report gives them.
fn finding_row(finding: &Value) -> Markup {
    let kind = finding["kind"].as_str().unwrap_or("mismatch");
    let at = if finding["at"].is_object() {
        &finding["at"]
    } else {
        finding
    };
    let partition = at["partition"].as_str().unwrap_or_default();
    let sequence = at["sequence"].as_u64();
    let household = finding["household"]
        .as_str()
        .or_else(|| finding["household_id"].as_str())
        .map(str::to_owned)
        .or_else(|| {
            finding["households"].as_array().map(|hs| {
                hs.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        })
        .unwrap_or_default();
    const SHOWN: [&str; 8] = [
        "kind",
        "at",
        "partition",
        "sequence",
        "household",
        "household_id",
        "households",
        "stream_sequence",
    ];
    let details: Vec<String> = finding
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !SHOWN.contains(&k.as_str()))
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}: {s}"),
            Value::Object(o) if o.contains_key("sequence") => format!(
                "{k}: {} · {}",
                o["partition"].as_str().unwrap_or_default(),
                o["sequence"]
            ),
            other => format!("{k}: {other}"),
        })
        .collect();
    html! {
        tr.finding {
            td.kind { (kind) }
            td { (household) }
            td {
                @if let Some(seq) = sequence {
                    a.proof-link href={ "/console/audit/partitions/" (partition) "/inclusion?seq=" (seq) } { (partition) " · " (seq) }
                }
            }
            td { @for d in &details { (d) br; } }
        }
    }
}
