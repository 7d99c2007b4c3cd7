//! Console pages for auditors (and staff whose unit covers a partition): each
//! partition's chain and checkpoint status, an event's inclusion proof, and a household's
//! audit bundle to download and verify offline (`ansinh audit verify-bundle`). They read
//! through the JSON auditor routes' helpers (`http::audit`). The reports that read the
//! whole log (anomalies, the recompute of eligibility decisions) are made in jobs
//! (`http::jobs::audit_scan`) and read on the job's page: a page never waits on an
//! O(log) read.

use axum::Router;
use axum::extract::State;

use super::Query;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use crate::access::{self, Operation};

use super::Path;
use super::i18n::{self, T};
use super::session::Session;
use super::{
    Fields, FormBody, Problems, error_in, form_key, fresh_key, general_problem, page,
    protocol_fields, text_field,
};
use crate::http::audit::{auditor_for, household_bundle, log_scan_slot, proof_error, status_of};
use crate::http::jobs::Report;
use crate::http::{Api, ApiError};

/// Most days an instruction may wait that the anomalies form takes (as the API's schema).
const PENDING_DAYS_MAX: u32 = 3_650;

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/console/audit", get(partitions))
        .route("/console/audit/partitions/{p}", get(status))
        .route("/console/audit/partitions/{p}/inclusion", get(inclusion))
        .route(
            "/console/audit/partitions/{p}/inclusion.json",
            get(inclusion_json),
        )
        .route("/console/audit/bundle", get(bundle))
        .route("/console/audit/partitions/{p}/scans", post(scan))
}

/// `GET /console/audit`: every partition the projections know (one line each), and the
/// bundle form.
async fn partitions(State(api): State<Api>, session: Session) -> Response {
    let lang = session.lang;
    let summaries = match async { Ok::<_, ApiError>(api.projector().await?.summaries()?) }.await {
        Ok(s) => s,
        Err(e) => return error_in(&session, &e),
    };
    let body = html! {
        table #partitions {
            tr { th { (lang.t(T::Partition)) } th.num { (lang.t(T::Events)) } th { (lang.t(T::Head)) } }
            @for (p, s) in &summaries {
                @if access::authorize(&session.caller, Operation::Read, p).is_ok() {
                    tr {
                        td { a.partition-link href={ "/console/audit/partitions/" (p) } { (p) } }
                        td.num { (s.events) }
                        td.hash { (s.head_sequence) " · " (s.head_hash) }
                    }
                }
            }
        }
        form.card #bundle-form method="get" action="/console/audit/bundle" {
            h2 { (lang.t(T::Bundle)) }
            (text_field(lang.t(T::HouseholdId), "household", "", &Problems::default()))
            button type="submit" { (lang.t(T::Download)) }
        }
        p { "ansinh audit verify-bundle" }
    };
    page(lang, lang.t(T::Audit), Some(&session), body).into_response()
}

/// `GET /console/audit/partitions/{p}`: the verified head, the latest checkpoint and its
/// cosigners, the read model's lag; and the inclusion proof form.
async fn status(State(api): State<Api>, session: Session, Path(p): Path<String>) -> Response {
    let lang = session.lang;
    let s = match status_of(&api, &session.caller, &p).await {
        Ok(s) => s,
        Err(e) => return error_in(&session, &e),
    };
    let body = html! {
        table #status {
            tr { th { (lang.t(T::Events)) } td.num #status-events { (s.events) } }
            tr { th { (lang.t(T::Head)) } td.hash { (s.head_sequence) " · " (s.head_hash) } }
            tr { th { (lang.t(T::StreamPosition)) } td.num { (s.projected_stream_sequence) " / " (s.stream_last_sequence) } }
            tr { th { (lang.t(T::Checkpoints)) } td.num #status-checkpoints { (s.checkpoints) } }
        }
        @if let Some(problem) = &s.latest_checkpoint_problem {
            p.err #checkpoint-problem { (problem) }
        }
        @if let Some(c) = &s.latest_checkpoint {
            h2 { (lang.t(T::LatestCheckpoint)) }
            table #checkpoint {
                tr { th { (lang.t(T::TreeSize)) } td.num #checkpoint-size { (c.tree_size) } }
                tr { th { (lang.t(T::Root)) } td.hash { (c.root) } }
                tr { th { (lang.t(T::SigningKey)) } td { (c.key_id) } }
                tr { th { (lang.t(T::On)) } td { (i18n::timestamp(c.issued_at_unix_ms)) } }
                tr { th { (lang.t(T::Cosigners)) } td {
                    @for co in &c.cosigners { (co.cosigner_id) " (" (co.key_id) ") " }
                } }
            }
        }
        form.card #inclusion-form method="get" action={ "/console/audit/partitions/" (s.partition) "/inclusion" } {
            h2 { (lang.t(T::InclusionProof)) }
            (text_field(lang.t(T::Sequence), "seq", "", &Problems::default()))
            button type="submit" { (lang.t(T::Show)) }
        }
        (scan_form(&session, &s.partition, "anomalies", &fresh_key(), &Fields::empty(), &Problems::default()))
        (scan_form(&session, &s.partition, "recompute", &fresh_key(), &Fields::empty(), &Problems::default()))
    };
    let title = format!("{} {}", lang.t(T::ChainStatus), s.partition);
    page(lang, &title, Some(&session), body).into_response()
}

#[derive(Deserialize)]
struct ProofQuery {
    #[serde(default)]
    seq: String,
}

/// The inclusion proof document of event `seq` in the partition's latest checkpoint, as
/// `ansinh audit prove` prints it.
async fn proof(
    api: &Api,
    session: &Session,
    partition: &str,
    seq: &str,
) -> Result<serde_json::Value, ApiError> {
    let seq: u64 = seq
        .trim()
        .parse()
        .map_err(|_| ApiError::InvalidParameter(format!("{seq:?} is not a sequence number")))?;
    let (partition, auditor, projector) = auditor_for(api, &session.caller, partition).await?;
    // As the JSON route: two chunks of the chain, or all of it when it falls back.
    let _slot = log_scan_slot().await?;
    let document = auditor
        .prove_using(Some(projector), &partition, seq, None)
        .await
        .map_err(proof_error)?;
    serde_json::to_value(document).map_err(|e| ApiError::Internal(e.to_string()))
}

/// `GET /console/audit/partitions/{p}/inclusion?seq=N`: the proof, and its download.
async fn inclusion(
    State(api): State<Api>,
    session: Session,
    Path(p): Path<String>,
    Query(q): Query<ProofQuery>,
) -> Response {
    let lang = session.lang;
    let document = match proof(&api, &session, &p, &q.seq).await {
        Ok(d) => d,
        Err(e) => return error_in(&session, &e),
    };
    let pretty = serde_json::to_string_pretty(&document).unwrap_or_default();
    let body = html! {
        p { a #proof-download href={ "/console/audit/partitions/" (p) "/inclusion.json?seq=" (q.seq.trim()) } { (lang.t(T::Download)) } " · ansinh audit check-proof" }
        pre #proof { (pretty) }
    };
    let title = format!("{} {p}/{}", lang.t(T::InclusionProof), q.seq.trim());
    page(lang, &title, Some(&session), body).into_response()
}

/// `GET /console/audit/partitions/{p}/inclusion.json?seq=N`: the proof document.
async fn inclusion_json(
    State(api): State<Api>,
    session: Session,
    Path(p): Path<String>,
    Query(q): Query<ProofQuery>,
) -> Response {
    match proof(&api, &session, &p, &q.seq).await {
        Ok(document) => (
            [
                (CONTENT_TYPE, "application/json".to_owned()),
                (
                    CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"inclusion-{p}-{}.json\"",
                        q.seq.trim()
                    ),
                ),
            ],
            serde_json::to_vec_pretty(&document).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => error_in(&session, &e),
    }
}

#[derive(Deserialize)]
struct BundleQuery {
    #[serde(default)]
    household: String,
}

/// `GET /console/audit/bundle?household=ID`: the household's audit bundle as the same
/// archive the JSON route answers (`http::audit::household_bundle`). Like `ansinh audit
/// export`, it reads the partition's chain: an audit tool, O(partition) by design, not a
/// page.
async fn bundle(
    State(api): State<Api>,
    session: Session,
    Query(q): Query<BundleQuery>,
) -> Response {
    let made = async {
        let h = crate::input::household(q.household.trim())?;
        access::authorize(&session.caller, Operation::Read, h.commune().as_str())?;
        household_bundle(&api, &session.caller, &h).await
    }
    .await;
    match made {
        Ok(response) => response,
        Err(e) => error_in(&session, &e),
    }
}

/// The form that starts a report of the whole log in a job: anomalies (as of a day, with
/// the days an instruction may wait) or the recompute of eligibility decisions.
fn scan_form(
    session: &Session,
    partition: &str,
    report: &str,
    key: &str,
    f: &Fields,
    p: &Problems,
) -> Markup {
    let lang = session.lang;
    let anomalies = report == "anomalies";
    html! {
        form.card id={ "scan-" (report) } method="post" action={ "/console/audit/partitions/" (partition) "/scans" } {
            h2 { (lang.t(if anomalies { T::FindAnomalies } else { T::RecomputeDecisions })) }
            (protocol_fields(session, key))
            input type="hidden" name="report" value=(report);
            @if anomalies {
                (text_field(lang.t(T::AsOf), "as_of", &f.day_or_today("as_of", session.today), p))
                (text_field(lang.t(T::PendingDays), "pending_days", match f.get("pending_days") { "" => "10", d => d }, p))
            }
            button id={ "scan-" (report) "-submit" } type="submit" { (lang.t(T::Start)) }
        }
    }
}

/// `POST /console/audit/partitions/{p}/scans`: the report the form names, made in a job
/// (`http::jobs::audit_scan`, as the API's `POST /v1/audit/partitions/{p}/scans`); the
/// browser is sent to the job's page. The same form sent again finds the same job.
async fn scan(
    State(api): State<Api>,
    session: Session,
    Path(partition): Path<String>,
    FormBody(f): FormBody,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&f) {
        return refused;
    }
    let lang = session.lang;
    let key = f.get(super::IDEMPOTENCY_FIELD).to_owned();
    let report_name = match f.get("report") {
        "recompute" => "recompute",
        _ => "anomalies",
    };
    let again = |p: &Problems, status| {
        let body = html! {
            (general_problem(p))
            (scan_form(&session, &partition, report_name, &key, &f, p))
        };
        (status, page(lang, lang.t(T::Audit), Some(&session), body)).into_response()
    };
    let mut p = Problems::default();
    let report = match f.get("report") {
        "recompute" => Some(Report::Recompute),
        "anomalies" => {
            let as_of = i18n::parse_date(f.get("as_of"))
                .map_err(|e| p.field("as_of", e))
                .ok();
            let pending_days = f
                .get("pending_days")
                .parse::<u32>()
                .ok()
                .filter(|d| *d <= PENDING_DAYS_MAX)
                .ok_or_else(|| {
                    p.field(
                        "pending_days",
                        format!("a whole number of days from 0 to {PENDING_DAYS_MAX}"),
                    )
                })
                .ok();
            as_of
                .zip(pending_days)
                .map(|(as_of, pending_days)| Report::Anomalies {
                    as_of,
                    pending_days,
                })
        }
        other => {
            p.general = Some(format!("{other:?} is not a report of this console"));
            None
        }
    };
    let partition_code = crate::input::partition(&partition)
        .map_err(|e| p.general = Some(e.to_string()))
        .ok();
    let (Some(report), Some(partition_code)) = (report, partition_code) else {
        return again(&p, axum::http::StatusCode::BAD_REQUEST);
    };
    let started = async {
        // The partition is in the path, not among the fields: the route with it is what
        // the form asks, as the API's fingerprint holds its path. Without it, one key sent
        // to another partition's route would find the first partition's job.
        let route = format!("POST /console/audit/partitions/{partition_code}/scans");
        let (key, fingerprint) = form_key(&f, &route)?;
        crate::http::jobs::audit_scan::begin(
            &api,
            session.caller.clone(),
            &key,
            fingerprint,
            partition_code,
            report,
        )
        .await
    }
    .await;
    match started {
        Ok(started) => super::jobs::follow(&started),
        Err(e @ (ApiError::Denied(_) | ApiError::NotFound { .. })) => error_in(&session, &e),
        Err(e) => again(&Problems::refusal(lang, &e), e.status()),
    }
}
