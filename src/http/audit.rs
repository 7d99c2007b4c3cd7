//! Auditor routes: a partition's chain and checkpoint status. Readable by auditors and
//! the staff whose unit covers the partition (`Operation::Read`).

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::access::{self, Operation};

use super::extract::{Path, Staff};
use super::{Api, ApiError};

/// schemas/http/audit-status.response.json
#[derive(Serialize)]
pub struct StatusAnswer {
    pub partition: String,
    /// Events applied by the projections, each chain-checked as it was (paired check).
    pub events: u64,
    pub head_sequence: u64,
    pub head_hash: String,
    /// The stream's last message, and the last the projections applied: their
    /// difference is how far the read model is behind.
    pub stream_last_sequence: u64,
    pub projected_stream_sequence: u64,
    /// Messages on the partition's checkpoint subject, valid checkpoints or not:
    /// counting only the valid ones would mean checking every one on each request.
    pub checkpoints: u64,
    /// The latest checkpoint whose signature verifies against the ledger's key history.
    pub latest_checkpoint: Option<CheckpointLine>,
    /// Why the latest message on the partition's checkpoint subject is not a valid
    /// checkpoint of the ledger (undecodable, an unknown or retired key, a bad
    /// signature): someone published there who should not, or a key was rotated while
    /// it was signed. `latest_checkpoint` is then the latest valid one before it. None
    /// when it verifies, or when there is none.
    pub latest_checkpoint_problem: Option<String>,
}

#[derive(Serialize)]
pub struct CheckpointLine {
    pub tree_size: u64,
    pub root: String,
    pub head_sequence: u64,
    pub key_id: String,
    pub issued_at_unix_ms: i64,
    /// Its valid cosignatures, one per key (the earliest), at most
    /// `proofs::COSIGNATURES_MAX`: what its documents carry.
    pub cosigners: Vec<Cosigner>,
}

#[derive(Serialize)]
pub struct Cosigner {
    pub cosigner_id: String,
    pub key_id: String,
    pub signed_at_unix_ms: i64,
}

/// `GET /v1/audit/partitions/{p}/status`: how far the partition's verified chain goes,
/// its latest signed checkpoint and who cosigned it, and the read model's lag. Reads the
/// partition's checkpoints and cosignatures (one a day or so), not its events.
pub async fn status(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(partition): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(status_of(&api, &caller, &partition).await?).into_response())
}

/// A partition's status for a caller who may read it: what the JSON route and the
/// console show.
pub async fn status_of(
    api: &Api,
    caller: &crate::access::Caller,
    partition: &str,
) -> Result<StatusAnswer, ApiError> {
    let partition = crate::input::partition(partition)?;
    access::authorize(caller, Operation::Read, partition.as_str())?;
    let projector = api.projector().await?;
    // The summary's counts and the position they stand at, of one state of the
    // projections: read apart, a batch committed in between made them disagree.
    let (summary, projected_stream_sequence) = projector.read_consistent(|| {
        let summary = super::reports::known_partition(projector, &partition)?;
        Ok::<_, ApiError>((summary, projector.position()?.last.stream_sequence))
    })?;
    let ledger = &api.service().ledger;
    let unavailable = |e: &dyn std::fmt::Display| ApiError::Unavailable(e.to_string());
    let mut stream = ledger.stream().clone();
    let stream_last_sequence = crate::log::reader::last_stream_sequence(&mut stream)
        .await
        .map_err(|e| unavailable(&e))?;
    let config = api.checkpoints();
    let checkpoints_stream = ledger
        .jetstream()
        .get_stream(&config.stream_name)
        .await
        .map_err(|e| unavailable(&e))?;
    // The latest valid checkpoint, the count and the latest's cosignatures: O(the
    // cosignatures since it), never every checkpoint of the partition (one per ~1,000
    // events), unless the subject's last message is not a valid checkpoint. Signatures
    // are checked against the ledger's key history (a few events): the checkpointers
    // build past an invalid latest message, so this is where it shows.
    let ring = crate::checkpoint::read::read_key_ring(&stream, ledger.config(), &config)
        .await
        .map_err(|e| unavailable(&e))?;
    let found = crate::checkpoint::audit::latest_valid_checkpoint(
        &checkpoints_stream,
        &config,
        &partition,
        &ring,
    )
    .await
    .map_err(|e| unavailable(&e))?;
    let count = found.messages;
    let latest_checkpoint_problem = found.latest_problem.map(|e| e.to_string());
    let latest = match found.valid.map(|v| v.stored) {
        None => None,
        Some(c) => {
            // The latest's valid cosignatures, one per key, as its documents carry them.
            let cosigners = crate::checkpoint::audit::cosignatures_after(
                &checkpoints_stream,
                &config,
                &partition,
                &c,
                &Default::default(),
            )
            .await
            .map_err(|e| unavailable(&e))?
            .into_iter()
            .map(|c| Cosigner {
                cosigner_id: c.cosigner_id,
                key_id: c.key_id,
                signed_at_unix_ms: c.signed_at_unix_ms,
            })
            .collect();
            Some(CheckpointLine {
                tree_size: c.body.tree_size,
                root: hex::encode(c.body.root),
                head_sequence: c.body.head_sequence,
                key_id: c.body.key_id.clone(),
                issued_at_unix_ms: c.body.issued_at_unix_ms,
                cosigners,
            })
        }
    };
    Ok(StatusAnswer {
        partition: partition.to_string(),
        events: summary.events,
        head_sequence: summary.head_sequence,
        head_hash: summary.head_hash,
        stream_last_sequence,
        projected_stream_sequence,
        checkpoints: count,
        latest_checkpoint: latest,
        latest_checkpoint_problem,
    })
}

#[derive(Debug, serde::Deserialize)]
pub struct InclusionQuery {
    seq: u64,
    checkpoint_size: Option<u64>,
}

#[derive(Debug, serde::Deserialize)]
pub struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// An auditor's proof request: the partition known, the auditor side opened, and the
/// projections once they hold every event the log held when the request came (proofs
/// are built from their stored subtrees, `checkpoint::pieces`).
pub(super) async fn auditor_for<'a>(
    api: &'a Api,
    caller: &crate::access::Caller,
    partition: &str,
) -> Result<
    (
        crate::chain::Partition,
        crate::checkpoint::Auditor,
        &'a crate::projection::Projector,
    ),
    ApiError,
> {
    let partition = crate::input::partition(partition)?;
    access::authorize(caller, Operation::Read, partition.as_str())?;
    let projector = api.projector().await?;
    super::reports::known_partition(projector, &partition)?;
    let ledger = &api.service().ledger;
    let auditor = crate::checkpoint::Auditor::open(
        ledger.jetstream().client(),
        ledger.config().clone(),
        api.checkpoints(),
    )
    .await
    .map_err(proof_error)?
    .counting_proof_events_in(api.proof_events());
    Ok((partition, auditor, projector))
}

/// A proof that cannot be made: asked wrongly (400), of no checkpoint (404), or the
/// servers or the log could not answer (503).
pub(super) fn proof_error(e: crate::checkpoint::CheckpointError) -> ApiError {
    use crate::checkpoint::CheckpointError as E;
    match e {
        E::BadRequest(m) => ApiError::InvalidParameter(m),
        E::NoCheckpoint { partition, what } => ApiError::NotFound {
            what: "checkpoint",
            value: format!("of partition {partition} {what}"),
        },
        other => ApiError::Unavailable(other.to_string()),
    }
}

/// `GET /v1/audit/partitions/{p}/proofs/inclusion?seq=N[&checkpoint_size=M]`: the
/// inclusion proof document of event N in a signed checkpoint (the latest by default),
/// as `ansinh audit prove` prints it; `ansinh audit check-proof` checks it offline.
/// O(log n) stored subtrees and at most two chunks of the log (`checkpoint::pieces`), or
/// O(partition) when the projections cannot serve it (the tree is rebuilt from the log):
/// either way one of the `LOG_SCANS_IN_FLIGHT_MAX` reads of the log at once.
pub async fn inclusion(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(partition): Path<String>,
    query: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidParameter(e.body_text()))?;
    let (partition, auditor, projector) = auditor_for(&api, &caller, &partition).await?;
    // A proof reads two chunks of the partition's chain, or all of it when it falls back.
    let _slot = log_scan_slot().await?;
    let document = auditor
        .prove_using(
            Some(projector),
            &partition,
            query.seq,
            query.checkpoint_size,
        )
        .await
        .map_err(proof_error)?;
    Ok(Json(document).into_response())
}

/// `GET /v1/audit/partitions/{p}/proofs/consistency?from=A&to=B`: the proof that the
/// partition's log only grew between its checkpoints of sizes A and B. As the inclusion
/// proof: from the stored subtrees and two chunks, else O(partition), in a
/// `log_scan_slot`.
pub async fn consistency(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(partition): Path<String>,
    query: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidParameter(e.body_text()))?;
    let (partition, auditor, projector) = auditor_for(&api, &caller, &partition).await?;
    // A proof reads two chunks of the partition's chain, or all of it when it falls back.
    let _slot = log_scan_slot().await?;
    let document = auditor
        .consistency_using(Some(projector), &partition, query.from, query.to)
        .await
        .map_err(proof_error)?;
    Ok(Json(document).into_response())
}

/// `GET /v1/audit/partitions/{p}/households/{id}/bundle`: the household's auditor bundle
/// (`ansinh audit export --household`) as one ustar archive (`bundle::archive`), to be
/// checked offline with `ansinh audit verify-bundle bundle-<id>.tar` (or after `tar -xf`).
/// Against the partition's latest signed checkpoint: events it does not cover yet are
/// 409 `NotCovered` (the checkpointer of `serve` covers them within its policy). Reads the
/// partition's chain, O(partition), like the CLI; at most `BUNDLE_EVENTS_MAX` events.
pub async fn bundle(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path((partition, household)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let partition = crate::input::partition(&partition)?;
    let household = crate::input::household(&household)?;
    if household.province().as_str() != partition.as_str() {
        return Err(ApiError::InvalidParameter(format!(
            "household {household} is recorded in partition {}, not {partition}",
            household.province().as_str()
        )));
    }
    household_bundle(&api, &caller, &household).await
}

/// A household's bundle as the archive download the JSON route and the console answer:
/// for partition-wide readers only (auditors, the province's branch), as the proofs;
/// one of at most `LOG_SCANS_IN_FLIGHT_MAX` reads of a whole chain at once.
pub(super) async fn household_bundle(
    api: &Api,
    caller: &crate::access::Caller,
    household: &crate::domain::ids::HouseholdId,
) -> Result<Response, ApiError> {
    use crate::bundle::archive;
    use crate::bundle::export::{ExportRequest, export};
    let (_, auditor, _) = auditor_for(api, caller, household.province().as_str()).await?;
    let _slot = log_scan_slot().await?;
    let request = ExportRequest {
        scope: crate::bundle::Scope::Household(household.to_string()),
        from: None,
        to: None,
    };
    let files = export(&auditor, &request).await.map_err(ApiError::Export)?;
    let name = archive::directory_name(household.as_str());
    let tar = archive::to_tar(&files, &name);
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/x-tar".to_owned(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.tar\""),
            ),
        ],
        tar,
    )
        .into_response())
}

/// Most findings (anomalies, recompute mismatches) in one page of an answer: a page of
/// JSON stays within a few hundred KiB; ask for the next with `page=`.
pub const FINDINGS_PAGE_MAX: usize = 500;
/// Requests reading the whole verified log (anomalies, recompute, bundles) at once in
/// this process. Each reads ~1M events a second and takes a core, so more would only
/// slow every one of them and the writers; the others wait, within the request timeout.
pub const LOG_SCANS_IN_FLIGHT_MAX: usize = 2;
static LOG_SCANS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(LOG_SCANS_IN_FLIGHT_MAX);

/// A slot among the `LOG_SCANS_IN_FLIGHT_MAX` reads of the whole log.
pub(super) async fn log_scan_slot() -> Result<tokio::sync::SemaphorePermit<'static>, ApiError> {
    LOG_SCANS
        .acquire()
        .await
        .map_err(|_| ApiError::Internal("the log scan slots are closed".into()))
}

impl From<crate::verify::VerifyError> for ApiError {
    fn from(e: crate::verify::VerifyError) -> Self {
        // A read that failed may pass later; a chain that does not verify stops the
        // partition until an operator repairs it (docs/OPERATIONS.md): both are the
        // ledger being unavailable, not the request being wrong.
        ApiError::Unavailable(e.to_string())
    }
}

/// What `ansinh audit anomalies` finds (`anomalies::scan`, over every partition's
/// verified log in stream order, since a citizen may be in households of two provinces),
/// keeping the anomalies that concern `partition`, as `caller` may see them: what lies
/// outside what they may read is not named (`Anomaly::seen_by`). `progress` gets the
/// stream sequence of every event scanned. O(log): the caller holds a `log_scan_slot`.
pub(super) async fn anomalies_concerning(
    api: &Api,
    caller: &crate::access::Caller,
    partition: &crate::chain::Partition,
    as_of: chrono::NaiveDate,
    pending_days: u32,
    progress: impl FnMut(u64),
) -> Result<crate::anomalies::AnomalyReport, ApiError> {
    let ledger = &api.service().ledger;
    let mut stream = ledger.stream().clone();
    let mut report = crate::anomalies::scan(
        &mut stream,
        ledger.config(),
        &api.checkpoints().keys_partition,
        Some(partition),
        as_of,
        i64::from(pending_days),
        progress,
    )
    .await?;
    let may_read = |code: &str| access::authorize(caller, Operation::Read, code).is_ok();
    report.anomalies = std::mem::take(&mut report.anomalies)
        .into_iter()
        .map(|a| a.seen_by(may_read))
        .collect();
    Ok(report)
}

/// Every eligibility decision of `partition` re-derived from its recorded inputs and the
/// standard it names (`recompute::recompute_eligibility` over the partition's verified
/// log). O(partition): the caller holds a `log_scan_slot`.
pub(super) async fn recompute_partition(
    api: &Api,
    partition: &crate::chain::Partition,
    progress: impl FnMut(u64),
) -> Result<crate::recompute::RecomputeReport, ApiError> {
    let ledger = &api.service().ledger;
    let mut stream = ledger.stream().clone();
    Ok(crate::recompute::recompute_eligibility(
        &mut stream,
        ledger.config(),
        &api.checkpoints().keys_partition,
        Some(partition),
        progress,
    )
    .await?)
}

#[derive(Debug, serde::Deserialize)]
pub struct FindingsQuery {
    #[serde(default, deserialize_with = "crate::input::optional_date")]
    as_of: Option<chrono::NaiveDate>,
    pending_days: Option<u32>,
    page: Option<u64>,
}

/// Days an instruction may stay without a result before the anomalies list it, unless
/// the query says otherwise (as `ansinh audit anomalies`).
pub const ANOMALY_PENDING_DAYS_DEFAULT: u32 = 10;

/// The findings of page `page` (1 first), and how many pages there are.
fn page_of<T>(all: Vec<T>, page: Option<u64>) -> Result<(u64, u64, Vec<T>), ApiError> {
    let page = page.unwrap_or(1);
    if page == 0 {
        return Err(ApiError::InvalidParameter(
            "pages are numbered from 1".into(),
        ));
    }
    let pages = all.len().div_ceil(FINDINGS_PAGE_MAX).max(1) as u64;
    let skip = usize::try_from(page - 1)
        .ok()
        .and_then(|p| p.checked_mul(FINDINGS_PAGE_MAX))
        .unwrap_or(usize::MAX);
    let items = all.into_iter().skip(skip).take(FINDINGS_PAGE_MAX).collect();
    Ok((page, pages, items))
}

/// schemas/http/anomalies.response.json
#[derive(Serialize)]
struct AnomaliesAnswer {
    partition: String,
    as_of: chrono::NaiveDate,
    pending_days: u32,
    events_scanned: u64,
    /// Anomalies concerning the partition, over every page.
    total: u64,
    /// Anomalies concerning the partition found past `ANOMALIES_LISTED_MAX`, counted
    /// and not listed (so not in `total`).
    not_listed: u64,
    page: u64,
    pages: u64,
    page_size: usize,
    anomalies: Vec<crate::anomalies::Anomaly>,
}

/// `GET /v1/audit/partitions/{p}/anomalies[?as_of=D][&pending_days=N][&page=K]`: what
/// `ansinh audit anomalies` finds (`anomalies::scan`, over every partition's verified log
/// in stream order, since a citizen may be in households of two provinces), the ones
/// concerning this partition, `FINDINGS_PAGE_MAX` a page. O(log) on every call.
pub async fn anomalies(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(partition): Path<String>,
    query: Result<Query<FindingsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidParameter(e.body_text()))?;
    let partition = crate::input::partition(&partition)?;
    access::authorize(&caller, Operation::Read, partition.as_str())?;
    super::reports::known_partition(api.projector().await?, &partition)?;
    // The clock is read here, at the edge, as the CLI does: today in Vietnam.
    let as_of = query.as_of.unwrap_or_else(|| api.today());
    let pending_days = query.pending_days.unwrap_or(ANOMALY_PENDING_DAYS_DEFAULT);
    let _slot = log_scan_slot().await?;
    let report =
        anomalies_concerning(&api, &caller, &partition, as_of, pending_days, |_| {}).await?;
    let total = report.anomalies.len() as u64;
    let (page, pages, anomalies) = page_of(report.anomalies, query.page)?;
    Ok(Json(AnomaliesAnswer {
        partition: partition.to_string(),
        as_of,
        pending_days,
        events_scanned: report.events,
        total,
        not_listed: report.not_listed,
        page,
        pages,
        page_size: FINDINGS_PAGE_MAX,
        anomalies,
    })
    .into_response())
}

#[derive(Debug, serde::Deserialize)]
pub struct PageQuery {
    page: Option<u64>,
}

/// schemas/http/recompute.response.json
#[derive(Serialize)]
struct RecomputeAnswer {
    partition: String,
    /// Eligibility decisions re-derived.
    decisions: u64,
    /// Decisions that did not re-derive, listed over every page.
    total: u64,
    /// Decisions that did not re-derive past `MISMATCHES_LISTED_MAX`, counted and not
    /// listed (so not in `total`).
    not_listed: u64,
    page: u64,
    pages: u64,
    page_size: usize,
    mismatches: Vec<crate::recompute::Mismatch>,
}

/// `GET /v1/audit/partitions/{p}/recompute[?page=K]`: every eligibility decision of the
/// partition re-derived from its recorded inputs and the standard it names, as `ansinh
/// audit recompute-eligibility` does (`recompute::recompute_eligibility` over the
/// partition's verified log), the mismatches `FINDINGS_PAGE_MAX` a page. O(partition)
/// on every call; it records nothing.
pub async fn recompute(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(partition): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidParameter(e.body_text()))?;
    let partition = crate::input::partition(&partition)?;
    access::authorize(&caller, Operation::Read, partition.as_str())?;
    super::reports::known_partition(api.projector().await?, &partition)?;
    let _slot = log_scan_slot().await?;
    let report = recompute_partition(&api, &partition, |_| {}).await?;
    let total = report.mismatches.len() as u64;
    let not_listed = report.not_listed;
    let (page, pages, mismatches) = page_of(report.mismatches, query.page)?;
    Ok(Json(RecomputeAnswer {
        partition: partition.to_string(),
        decisions: report.decisions,
        total,
        not_listed,
        page,
        pages,
        page_size: FINDINGS_PAGE_MAX,
        mismatches,
    })
    .into_response())
}
