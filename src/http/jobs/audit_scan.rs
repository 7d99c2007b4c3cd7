//! The audit reports that read the whole verified log, as jobs, for the console and for
//! auditors' tools that would rather poll than hold a request open for minutes:
//! - `anomalies`: what `ansinh audit anomalies` finds, the ones concerning the partition;
//! - `recompute`: every eligibility decision of the partition re-derived from its
//!   recorded inputs, the mismatches listed.
//!
//! The record says how far the scan has read (stream sequence reached of the stream's
//! last when it began), saved every `SCAN_PROGRESS_EVERY`, then the findings, at most
//! `JOB_FINDINGS_MAX` listed. A scan records nothing in the ledger.

use axum::extract::State;
use axum::response::Response;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::access::{self, Caller, Operation};
use crate::chain::{Digest, Partition};

use super::{
    Held, JOB_WAITING_SAVE_EVERY, Job, Started, TakenOver, job_id, launch, save, save_final,
    started_before,
};
use crate::http::audit::{
    ANOMALY_PENDING_DAYS_DEFAULT, anomalies_concerning, log_scan_slot, recompute_partition,
};
use crate::http::extract::{Body, IdempotencyKey, Path, RequestBody, Staff};
use crate::http::{Api, ApiError};

/// Most findings a scan's record lists; `findings_total` counts them all. An anomaly or a
/// mismatch is ~300 bytes of JSON, so the record stays well under the server's 1 MiB
/// message; the rest are read with `ansinh audit anomalies --json` or the paged
/// `GET /v1/audit/partitions/{p}/anomalies`.
pub const JOB_FINDINGS_MAX: usize = 1_000;
/// How often a running scan saves how far it has read: often enough for a progress bar,
/// rare enough to cost the bucket nothing (a scan reads ~1M events a second).
pub const SCAN_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Which report a scan makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    Anomalies { as_of: NaiveDate, pending_days: u32 },
    Recompute,
}

/// An audit scan's record (`kind` "anomalies" or "recompute").
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditScanJob {
    pub job: String,
    pub partition: String,
    pub started_by: String,
    /// The unit the starter acts for: anomalies are listed as that unit may see them
    /// (`anomalies_concerning`), so only a reader who covers it reads the record
    /// (`readable_job`). A record made before the field existed reads as "" (the head
    /// office, the widest): only the head office reads it.
    #[serde(default)]
    pub started_by_unit: String,
    /// "waiting" (for one of the `LOG_SCANS_IN_FLIGHT_MAX` readers of the log, saved
    /// every `JOB_WAITING_SAVE_EVERY`), "running", "done", or "failed" (`error` says why;
    /// start it again: the same request takes this job over and runs it again).
    pub state: String,
    /// Anomalies: the day they are judged on, and the days an instruction may wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_days: Option<u32>,
    /// The stream's last sequence when the scan began (0 while waiting).
    pub stream_last_sequence: u64,
    /// How far the scan has read, in stream sequence.
    pub stream_sequence_reached: u64,
    /// Events verified and scanned (when done).
    pub events_scanned: u64,
    /// Recompute: decisions re-derived (when done).
    pub decisions: u64,
    /// Findings, over all; the first `JOB_FINDINGS_MAX` are in `findings`.
    pub findings_total: u64,
    /// Anomalies: each an `anomalies.response.json` item; recompute: each a mismatch.
    pub findings: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The run holding the job (`Job::with_runner`); empty before it is launched.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runner: String,
    pub updated_at_unix_ms: i64,
}

#[derive(Debug, Deserialize)]
pub struct ScanBody {
    report: String,
    as_of: Option<NaiveDate>,
    pending_days: Option<u32>,
}
impl RequestBody for ScanBody {
    const SCHEMA: &'static str = "audit-scan.request";
}

/// `POST /v1/audit/partitions/{p}/scans`: an anomalies or recompute report of the
/// partition, made in a job: 202 with its `Location`; the same key again answers that
/// job (200). Whoever may read the partition.
pub async fn start_scan(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(partition): Path<String>,
    Body { value, fingerprint }: Body<ScanBody>,
) -> Result<Response, ApiError> {
    let partition = crate::input::partition(&partition)?;
    let report = match value.report.as_str() {
        "anomalies" => Report::Anomalies {
            // The clock is read here, at the edge, as the CLI does: today in Vietnam.
            as_of: value.as_of.unwrap_or_else(|| api.today()),
            pending_days: value.pending_days.unwrap_or(ANOMALY_PENDING_DAYS_DEFAULT),
        },
        "recompute" => Report::Recompute,
        other => {
            return Err(ApiError::InvalidParameter(format!(
                "report {other:?} is neither anomalies nor recompute"
            )));
        }
    };
    Ok(begin(&api, caller, &key, fingerprint, partition, report)
        .await?
        .answer())
}

/// Starts the scan under the caller's key (bound to the request's `fingerprint`), or
/// finds the job this key started. Shared by the API and the console.
pub async fn begin(
    api: &Api,
    caller: Caller,
    key: &IdempotencyKey,
    fingerprint: Digest,
    partition: Partition,
    report: Report,
) -> Result<Started, ApiError> {
    access::authorize(&caller, Operation::Read, partition.as_str())?;
    crate::http::reports::known_partition(api.projector().await?, &partition)?;
    // A job appends under keys of its own, so its request's key is bound here, in the
    // shared requests bucket: the same key with another body is refused.
    let scoped = key.scoped(&caller);
    api.claim(&scoped, &fingerprint).await?;
    let id = job_id(&scoped);
    if let Some(started) = started_before(api, &id).await? {
        return Ok(started);
    }
    let (as_of, pending_days) = match report {
        Report::Anomalies {
            as_of,
            pending_days,
        } => (Some(as_of), Some(pending_days)),
        Report::Recompute => (None, None),
    };
    let record = AuditScanJob {
        job: id,
        partition: partition.to_string(),
        started_by: caller.id.clone(),
        started_by_unit: caller.unit.clone(),
        state: "waiting".into(),
        as_of,
        pending_days,
        stream_last_sequence: 0,
        stream_sequence_reached: 0,
        events_scanned: 0,
        decisions: 0,
        findings_total: 0,
        findings: Vec::new(),
        error: None,
        runner: String::new(),
        updated_at_unix_ms: crate::checkpoint::now_unix_ms(),
    };
    let job = match report {
        Report::Anomalies { .. } => Job::Anomalies(record),
        Report::Recompute => Job::Recompute(record),
    };
    launch(api, job, move |api, mut held| async move {
        run(&api, &caller, &partition, report, &mut held).await
    })
    .await
}

fn scan_of(held: &mut Held) -> &mut AuditScanJob {
    match &mut held.job {
        Job::Anomalies(scan) | Job::Recompute(scan) => scan,
        Job::PaymentRun(_) => unreachable!("run is given a scan's record"),
    }
}

/// Findings as the record keeps them: the first `JOB_FINDINGS_MAX`, as JSON.
fn listed<T: Serialize>(findings: &[T]) -> Vec<serde_json::Value> {
    findings
        .iter()
        .take(JOB_FINDINGS_MAX)
        .map(|f| serde_json::to_value(f).expect("a finding serializes"))
        .collect()
}

/// Why a scan ended without its report: it failed (its record says why), or another
/// process took the job over (this run writes nothing more).
enum Stopped {
    Failed(ApiError),
    TakenOver(TakenOver),
}

impl From<ApiError> for Stopped {
    fn from(e: ApiError) -> Self {
        Stopped::Failed(e)
    }
}

impl From<TakenOver> for Stopped {
    fn from(t: TakenOver) -> Self {
        Stopped::TakenOver(t)
    }
}

/// What a scan made: events scanned, decisions re-derived, findings over all, the
/// findings listed.
type Made = (u64, u64, u64, Vec<serde_json::Value>);

/// Runs the scan and saves its result; stops at the first save refused because another
/// process took the job over (`TakenOver`), the scan dropped where it was.
async fn run(
    api: &Api,
    caller: &Caller,
    partition: &Partition,
    report: Report,
    held: &mut Held,
) -> Result<(), TakenOver> {
    let result = scan_log(api, caller, partition, report, held).await;
    let record = scan_of(held);
    match result {
        Ok((events, decisions, total, findings)) => {
            record.state = "done".into();
            record.stream_sequence_reached = record.stream_last_sequence;
            record.events_scanned = events;
            record.decisions = decisions;
            record.findings_total = total;
            record.findings = findings;
        }
        Err(Stopped::Failed(e)) => {
            record.state = "failed".into();
            record.error = Some(e.to_string());
        }
        Err(Stopped::TakenOver(taken)) => return Err(taken),
    }
    save_final(api, held).await
}

/// One of the log's readers, once one is free; meanwhile the waiting record is saved
/// every `JOB_WAITING_SAVE_EVERY`, so a long wait is not taken for a stopped process.
async fn turn(
    api: &Api,
    held: &mut Held,
) -> Result<tokio::sync::SemaphorePermit<'static>, Stopped> {
    let mut slot = std::pin::pin!(log_scan_slot());
    let mut beat = tokio::time::interval_at(
        tokio::time::Instant::now() + JOB_WAITING_SAVE_EVERY,
        JOB_WAITING_SAVE_EVERY,
    );
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            slot = &mut slot => return Ok(slot?),
            _ = beat.tick() => save(api, held).await?,
        }
    }
}

/// The scan, its findings as `caller` may see them (`anomalies_concerning`).
async fn scan_log(
    api: &Api,
    caller: &Caller,
    partition: &Partition,
    report: Report,
    held: &mut Held,
) -> Result<Made, Stopped> {
    let _slot = turn(api, held).await?;
    let last = crate::log::reader::last_stream_sequence(&mut api.service().ledger.stream().clone())
        .await
        .map_err(|e| ApiError::Unavailable(format!("the log: {e}")))?;
    scan_of(held).state = "running".into();
    scan_of(held).stream_last_sequence = last;
    save(api, held).await?;
    let reached = AtomicU64::new(0);
    let events = AtomicU64::new(0);
    let progress = |seq: u64| {
        reached.store(seq, Ordering::Relaxed);
        events.fetch_add(1, Ordering::Relaxed);
    };
    // (decisions re-derived, findings over all, findings listed)
    let scan = async {
        match report {
            Report::Anomalies {
                as_of,
                pending_days,
            } => anomalies_concerning(api, caller, partition, as_of, pending_days, progress)
                .await
                .map(|r| {
                    (
                        0,
                        r.anomalies.len() as u64 + r.not_listed,
                        listed(&r.anomalies),
                    )
                }),
            Report::Recompute => recompute_partition(api, partition, progress)
                .await
                .map(|r| (r.decisions, r.mismatch_count(), listed(&r.mismatches))),
        }
    };
    let mut scan = std::pin::pin!(scan);
    let mut tick = tokio::time::interval(SCAN_PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (decisions, total, findings) = loop {
        tokio::select! {
            done = &mut scan => break done?,
            _ = tick.tick() => {
                scan_of(held).stream_sequence_reached = reached.load(Ordering::Relaxed);
                save(api, held).await?;
            }
        }
    };
    Ok((events.load(Ordering::Relaxed), decisions, total, findings))
}
