//! Work that outlives its request: a whole partition's payment run, commune by commune
//! (`payment_run`), and the audit reports that read the whole verified log: anomalies
//! and the recompute of eligibility decisions (`audit_scan`). Starting one answers 202
//! with the job's `Location`; `GET /v1/jobs/{id}` answers its progress and result, and so
//! does the console's job page.
//!
//! A job's record lives in the shared key-value bucket `<stream>_JOBS`, so any ledger
//! process answers `GET /v1/jobs/{id}`; the work runs in the process that accepted it
//! (docs/adr/0012). If that process stops, the record stays `waiting` or `running` with
//! an old `updated_at_unix_ms`; once it has not changed for `JOB_ABANDONED_AFTER`, the same
//! request again (same key, same body, to any process) takes the job over and runs it
//! again from the start: a payment run appends only what is missing (each commune's run
//! under its own key answers with its first receipt), and an audit scan records nothing.
//! A `failed` job is taken over by the same request again at once, the same way: its
//! runner saved the failure last and stopped. Starting it under a new key works too.
//!
//! The record has one writer at a time: whoever made it or took it over. Every save
//! after the first is a compare-and-set on the revision its runner last wrote (`Held`),
//! so a runner that is still alive after another process took its job over (its saves
//! failed for two minutes, or the hosts' clocks disagree) has its next save refused, and
//! stops there: it never writes over the taker's record. Whatever it ran meanwhile was
//! under the job's own keys, so nothing is paid twice.
//!
//! A page or a poll reads one record: O(the job's result), whatever the log's length.

pub mod audit_scan;
pub mod payment_run;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::access::{self, Operation};

use super::extract::{Path, Staff};
use super::{Api, ApiError};
pub use audit_scan::{AuditScanJob, Report};
pub use payment_run::PaymentRunJob;

/// Payment runs running at once in one process (one `Api`); another is refused with 503
/// (retry later). A run keeps a partition's writer busy: two keep the writers busy
/// without starving desk requests. Scans have slots of their own (`SCANS_RUNNING_MAX`),
/// so a run never waits behind a scan, which needs only read access and reads the whole
/// log.
pub const PAYMENT_RUNS_RUNNING_MAX: usize = 2;
/// Audit scans running (or waiting for one of the log's readers) at once in one process;
/// another is refused with 503 (retry later). As many as the log's readers
/// (`LOG_SCANS_IN_FLIGHT_MAX`): more would only wait for one, each holding a task.
pub const SCANS_RUNNING_MAX: usize = crate::http::audit::LOG_SCANS_IN_FLIGHT_MAX;
/// Jobs of every kind running at once in one process.
pub const JOBS_RUNNING_MAX: usize = PAYMENT_RUNS_RUNNING_MAX + SCANS_RUNNING_MAX;
/// How long the bucket keeps a job's record after its last change: a month's run is
/// looked at within the month.
pub const JOB_RECORD_AGE_MAX: std::time::Duration = std::time::Duration::from_secs(31 * 86_400);
/// A `waiting` or `running` record whose process has saved nothing for this long is
/// taken as abandoned (that process stopped): the same request again takes the job over.
/// A running job saves at least every commune (a commune of 10,000 takes under a second)
/// or every `audit_scan::SCAN_PROGRESS_EVERY`, and a waiting one every
/// `JOB_WAITING_SAVE_EVERY`, so this is many missed saves, not a slow step. Compared by wall clocks, the record's against the reader's: hosts whose clocks
/// disagree by more could take over a job still running, which the fenced saves make
/// safe (module doc).
pub const JOB_ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(120);
/// How often a job waiting for its turn (a scan, for one of the log's readers) saves its
/// record: a quarter of `JOB_ABANDONED_AFTER`, so a wait, however long, is not taken for
/// a stopped process.
pub const JOB_WAITING_SAVE_EVERY: std::time::Duration =
    std::time::Duration::from_secs(JOB_ABANDONED_AFTER.as_secs() / 4);
/// Attempts to save a job's record before its progress is left unsaved (logged); the
/// next save tries again.
pub const JOB_SAVE_ATTEMPTS_MAX: u32 = 3;
/// The wait before another attempt, times the attempt: a server restarting or a cluster
/// electing a leader answers again within a few hundred milliseconds.
const JOB_SAVE_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
/// Attempts to save a job's final state (`done` or `failed`, `save_final`): no later save
/// would bring it, and a record left `running` reads as a job under way until it is taken
/// for abandoned. With `JOB_FINAL_SAVE_BACKOFF` the attempts span about 48 s, through a
/// server's restart or a cluster's election, and within half of `JOB_ABANDONED_AFTER`.
pub const JOB_FINAL_SAVE_ATTEMPTS_MAX: u32 = 20;
/// The wait before another attempt at the final save, times the attempt.
const JOB_FINAL_SAVE_BACKOFF: std::time::Duration = std::time::Duration::from_millis(250);
/// Saves whose answer never came that a runner remembers, to recognise one of them as
/// the record it finds when a later save is refused (its own write, stored after all);
/// past this many, a refused save is taken as the job taken over, which only stops this
/// runner (the job is taken over again after `JOB_ABANDONED_AFTER`).
const JOB_UNANSWERED_SAVES_MAX: usize = 8;
/// Domain separation of job ids.
const JOB_ID_CONTEXT: &str = "ansinh v1 http job id";

/// The jobs bucket's name for an event stream.
pub fn jobs_bucket_name(stream_name: &str) -> String {
    format!("{stream_name}_JOBS")
}

/// schemas/http/job.response.json: a job's record, as stored and answered; `kind` says
/// which.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    PaymentRun(PaymentRunJob),
    Anomalies(AuditScanJob),
    Recompute(AuditScanJob),
}

impl Job {
    pub fn id(&self) -> &str {
        match self {
            Job::PaymentRun(j) => &j.job,
            Job::Anomalies(j) | Job::Recompute(j) => &j.job,
        }
    }

    pub fn partition(&self) -> &str {
        match self {
            Job::PaymentRun(j) => &j.partition,
            Job::Anomalies(j) | Job::Recompute(j) => &j.partition,
        }
    }

    /// "waiting" (for one of the log's readers; scans only), "running", "done" or
    /// "failed".
    pub fn state(&self) -> &str {
        match self {
            Job::PaymentRun(j) => &j.state,
            Job::Anomalies(j) | Job::Recompute(j) => &j.state,
        }
    }

    pub fn finished(&self) -> bool {
        matches!(self.state(), "done" | "failed")
    }

    fn updated_at_unix_ms(&self) -> i64 {
        match self {
            Job::PaymentRun(j) => j.updated_at_unix_ms,
            Job::Anomalies(j) | Job::Recompute(j) => j.updated_at_unix_ms,
        }
    }

    /// Waiting or running, with nothing saved for `JOB_ABANDONED_AFTER`: its process
    /// stopped.
    fn abandoned(&self, now_unix_ms: i64) -> bool {
        !self.finished()
            && now_unix_ms.saturating_sub(self.updated_at_unix_ms())
                > JOB_ABANDONED_AFTER.as_millis() as i64
    }

    /// Whether the same request again takes the job over and runs it again: its process
    /// stopped (`abandoned`), or it failed, which its runner saved last, so nobody runs it.
    /// A failed run is what a client is told to post again under the same key (a 5xx,
    /// ADR 0013; `state` in job.response.json), and running it again is safe: each
    /// commune's run has its own key, so one paid before answers with its first receipt.
    fn to_take_over(&self, now_unix_ms: i64) -> bool {
        self.state() == "failed" || self.abandoned(now_unix_ms)
    }

    /// The record with a new runner id: the bytes this launch writes are its own, so
    /// they say whose a record read back is when a write's answer was lost (`own_write`).
    fn with_runner(mut self) -> Self {
        let runner = uuid::Uuid::new_v4().simple().to_string();
        match &mut self {
            Job::PaymentRun(j) => j.runner = runner,
            Job::Anomalies(j) | Job::Recompute(j) => j.runner = runner,
        }
        self
    }

    fn touch(&mut self) {
        let now = crate::checkpoint::now_unix_ms();
        match self {
            Job::PaymentRun(j) => j.updated_at_unix_ms = now,
            Job::Anomalies(j) | Job::Recompute(j) => j.updated_at_unix_ms = now,
        }
    }

    /// Where the record is read.
    pub fn location(&self) -> String {
        format!("/v1/jobs/{}", self.id())
    }

    /// The answer: `status`, the record, and where to follow it.
    fn answer(&self, status: StatusCode) -> Response {
        let mut response = (status, Json(self)).into_response();
        if let Ok(location) = axum::http::HeaderValue::from_str(&self.location()) {
            response
                .headers_mut()
                .insert(axum::http::header::LOCATION, location);
        }
        response
    }
}

/// A job just asked for: its record, and whether this request made it (202) or found it
/// made under the same key (200).
pub struct Started {
    pub job: Job,
    pub status: StatusCode,
}

impl Started {
    pub fn answer(&self) -> Response {
        self.job.answer(self.status)
    }
}

/// The job id of a caller's scoped idempotency key: the same request again names the
/// same job.
fn job_id(scoped_key: &str) -> String {
    let hash = blake3::Hasher::new_derive_key(JOB_ID_CONTEXT)
        .update(scoped_key.as_bytes())
        .finalize();
    hash.to_hex()[..crate::input::JOB_ID_CHARS].to_owned()
}

pub async fn read_job(api: &Api, id: &str) -> Result<Option<Job>, ApiError> {
    let entry = api
        .jobs()
        .get(id)
        .await
        .map_err(|e| ApiError::Unavailable(format!("jobs: {e}")))?;
    entry
        .map(|bytes| {
            serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::Internal(format!("a job record: {e}")))
        })
        .transpose()
}

/// A slot among the process's slots for `job`'s kind (`PAYMENT_RUNS_RUNNING_MAX` or
/// `SCANS_RUNNING_MAX`), or 503. Nothing is started without one; the request's key stays
/// bound to it (as after any 5xx), so the same request again starts it.
fn running_slot(api: &Api, job: &Job) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    let (slots, max, what) = match job {
        Job::PaymentRun(_) => (
            api.payment_runs_running(),
            PAYMENT_RUNS_RUNNING_MAX,
            "payment runs",
        ),
        Job::Anomalies(_) | Job::Recompute(_) => (api.scans_running(), SCANS_RUNNING_MAX, "scans"),
    };
    slots.try_acquire_owned().map_err(|_| {
        ApiError::Unavailable(format!("{max} {what} are running in this process; retry"))
    })
}

/// The job this key started before, if any (200 with its record); none when it was
/// abandoned or failed, to be taken over (`Job::to_take_over`).
async fn started_before(api: &Api, id: &str) -> Result<Option<Started>, ApiError> {
    let now = crate::checkpoint::now_unix_ms();
    Ok(read_job(api, id)
        .await?
        .filter(|job| !job.to_take_over(now))
        .map(|job| Started {
            job,
            status: StatusCode::OK,
        }))
}

/// Replaces an abandoned or failed record of the job with `bytes`, if it is still the one
/// read: of several processes taking it over at once, one does. The revision written, or
/// None.
async fn take_over(api: &Api, id: &str, bytes: &[u8]) -> Result<Option<u64>, ApiError> {
    let unavailable = |e: &dyn std::fmt::Display| ApiError::Unavailable(format!("jobs: {e}"));
    let Some(entry) = api.jobs().entry(id).await.map_err(|e| unavailable(&e))? else {
        return Ok(None);
    };
    let to_take_over = entry.operation == async_nats::jetstream::kv::Operation::Put
        && serde_json::from_slice::<Job>(&entry.value)
            .is_ok_and(|old| old.to_take_over(crate::checkpoint::now_unix_ms()));
    if !to_take_over {
        return Ok(None);
    }
    match api
        .jobs()
        .update(id, bytes.to_vec().into(), entry.revision)
        .await
    {
        Ok(revision) => Ok(Some(revision)),
        // Refused (another process took it over first), or stored with its answer lost.
        Err(_) => read_back(api, id, bytes).await,
    }
}

/// After a write of `bytes` answered with an error: the revision of the record if it is
/// that write, stored after all (its answer lost), so this launch holds the job and must
/// run it; None if the record is another's. A read that fails is 503: the request is
/// retried, and a record of ours nobody runs is taken over once `JOB_ABANDONED_AFTER` old.
async fn read_back(api: &Api, id: &str, bytes: &[u8]) -> Result<Option<u64>, ApiError> {
    let entry = api
        .jobs()
        .entry(id)
        .await
        .map_err(|e| ApiError::Unavailable(format!("jobs: {e}")))?;
    Ok(own_write(
        bytes,
        entry
            .as_ref()
            .map(|e| (e.operation, e.value.as_ref(), e.revision)),
    ))
}

/// The revision of `found` (operation, value, revision: the record read back) if it holds
/// exactly `sent`. Those bytes name this launch's runner (`Job::with_runner`), so no other
/// process's write equals them.
fn own_write(
    sent: &[u8],
    found: Option<(async_nats::jetstream::kv::Operation, &[u8], u64)>,
) -> Option<u64> {
    let (operation, value, revision) = found?;
    (operation == async_nats::jetstream::kv::Operation::Put && value == sent).then_some(revision)
}

/// Takes one of the slots of the job's kind (or 503), makes the job's first record (or
/// takes over an abandoned or failed one) and runs `work` on it in the background (202);
/// another request under the same key that made the record first is answered with that
/// job (200). A write whose answer is lost is recognised by its bytes when read back
/// (`read_back`), so a record this launch made is never left to nobody.
async fn launch<W, F>(api: &Api, job: Job, work: W) -> Result<Started, ApiError>
where
    W: FnOnce(Api, Held) -> F + Send + 'static,
    F: std::future::Future<Output = Result<(), TakenOver>> + Send,
{
    let permit = running_slot(api, &job)?;
    let job = job.with_runner();
    let bytes = serde_json::to_vec(&job).expect("a job record serializes");
    let revision = match api.jobs().create(job.id(), bytes.clone().into()).await {
        Ok(revision) => Some(revision),
        // The record exists (another request made it, or it waits to be taken over), or
        // this create was stored and its answer lost.
        Err(_) => match read_back(api, job.id(), &bytes).await? {
            Some(revision) => Some(revision),
            None => take_over(api, job.id(), &bytes).await?,
        },
    };
    let Some(revision) = revision else {
        return read_job(api, job.id())
            .await?
            .map(|job| Started {
                job,
                status: StatusCode::OK,
            })
            .ok_or_else(|| ApiError::Unavailable("jobs: the record could not be made".into()));
    };
    let started = Started {
        job: job.clone(),
        status: StatusCode::ACCEPTED,
    };
    let api = api.clone();
    let hold = api.jobs_hold();
    tokio::spawn(async move {
        let _permit = permit;
        let id = job.id().to_owned();
        if let Some(hold) = &hold {
            hold.before_work().await;
        }
        // A run that lost its job has said so where its save was refused.
        let _ = work(api, Held::new(job, revision)).await;
        if let Some(hold) = &hold {
            hold.ended(id).await;
        }
    });
    Ok(started)
}

/// A job's record as its runner last wrote it, with the bucket's revision of that write:
/// what the runner's next save is fenced on.
pub struct Held {
    pub job: Job,
    revision: u64,
    /// The bytes of saves whose answer never came since the last one answered (the
    /// newest last, at most `JOB_UNANSWERED_SAVES_MAX`): any of them may be stored.
    unanswered: std::collections::VecDeque<bytes::Bytes>,
}

/// A save refused because another process wrote the record since this runner's last
/// write: it took the job over. The runner writes nothing more and stops working on it.
#[derive(Debug)]
pub struct TakenOver;

impl Held {
    fn new(job: Job, revision: u64) -> Self {
        Self {
            job,
            revision,
            unanswered: std::collections::VecDeque::new(),
        }
    }

    fn remember_unanswered(&mut self, bytes: bytes::Bytes) {
        if self.unanswered.len() == JOB_UNANSWERED_SAVES_MAX {
            self.unanswered.pop_front();
        }
        self.unanswered.push_back(bytes);
    }

    /// After a refused save: the revision of the stored record if it is one this runner
    /// sent and never heard back about, so the refusal was of its own late write.
    async fn own_late_write(&self, api: &Api) -> Option<u64> {
        if self.unanswered.is_empty() {
            return None;
        }
        let entry = api.jobs().entry(self.job.id()).await.ok()??;
        (entry.operation == async_nats::jetstream::kv::Operation::Put
            && self.unanswered.iter().any(|sent| *sent == entry.value))
        .then_some(entry.revision)
    }
}

/// Saves the record's progress, fenced on the revision the runner last wrote. Refused
/// because someone else wrote the record since: `TakenOver` (logged), and the caller stops.
/// A save whose answer does not come is tried again briefly, then left for the next
/// progress (the work itself does not wait on the bucket).
async fn save(api: &Api, held: &mut Held) -> Result<(), TakenOver> {
    save_within(api, held, JOB_SAVE_ATTEMPTS_MAX, JOB_SAVE_BACKOFF)
        .await
        .map(drop)
}

/// Saves the record's final state (`done` or `failed`), as `save` does but for longer
/// (`JOB_FINAL_SAVE_ATTEMPTS_MAX`): nothing saves after it. Still unsaved, it is
/// reported (an error in the log, `ansinh_job_final_saves_lost_total`): the record then
/// says `running` until it reads as abandoned, and the same request again runs the job
/// again (a payment run appends nothing twice).
async fn save_final(api: &Api, held: &mut Held) -> Result<(), TakenOver> {
    let saved = save_within(
        api,
        held,
        JOB_FINAL_SAVE_ATTEMPTS_MAX,
        JOB_FINAL_SAVE_BACKOFF,
    )
    .await?;
    if !saved {
        tracing::error!(
            job = %held.job.id(),
            state = held.job.state(),
            attempts = JOB_FINAL_SAVE_ATTEMPTS_MAX,
            "a job's final state could not be saved: its record says it is still running"
        );
        crate::telemetry::job_final_save_lost();
    }
    Ok(())
}

/// `save` within `attempts_max` attempts, waiting `backoff` times the attempt between
/// two: whether the record was saved.
async fn save_within(
    api: &Api,
    held: &mut Held,
    attempts_max: u32,
    backoff: std::time::Duration,
) -> Result<bool, TakenOver> {
    held.job.touch();
    let bytes: bytes::Bytes = serde_json::to_vec(&held.job)
        .expect("a job record serializes")
        .into();
    for attempt in 1..=attempts_max {
        match api
            .jobs()
            .update(held.job.id(), bytes.clone(), held.revision)
            .await
        {
            Ok(revision) => {
                held.revision = revision;
                held.unanswered.clear();
                return Ok(true);
            }
            Err(e) if crate::kv_writes::update_fence_failed(&e) => {
                match held.own_late_write(api).await {
                    Some(revision) => {
                        held.revision = revision;
                        held.unanswered.clear();
                    }
                    None => {
                        tracing::warn!(
                            job = %held.job.id(),
                            "another process took the job over (its record changed since this process wrote it): this process stops running it"
                        );
                        return Err(TakenOver);
                    }
                }
            }
            Err(e) => {
                held.remember_unanswered(bytes.clone());
                tracing::warn!(job = %held.job.id(), attempt, "saving a job's progress: {e}");
                if attempt < attempts_max {
                    tokio::time::sleep(backoff * attempt).await;
                }
            }
        }
    }
    Ok(false)
}

/// Test hook (`Api::hold_jobs`): the runs an API starts wait for a permit of `start`
/// before any work, and send their job's id on `ended` when they end.
#[derive(Clone)]
pub(crate) struct Hold {
    start: std::sync::Arc<tokio::sync::Semaphore>,
    ended: tokio::sync::mpsc::Sender<String>,
}

impl Hold {
    async fn before_work(&self) {
        if let Ok(permit) = self.start.acquire().await {
            permit.forget();
        }
    }

    async fn ended(&self, id: String) {
        let _ = self.ended.send(id).await;
    }
}

/// A test's side of `Api::hold_jobs`: lets the held runs go one at a time and hears them
/// end.
pub struct HeldJobs {
    start: std::sync::Arc<tokio::sync::Semaphore>,
    ended: tokio::sync::mpsc::Receiver<String>,
}

impl HeldJobs {
    pub(crate) fn new() -> (Hold, HeldJobs) {
        let start = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        let (sender, ended) = tokio::sync::mpsc::channel(JOBS_RUNNING_MAX);
        (
            Hold {
                start: start.clone(),
                ended: sender,
            },
            HeldJobs { start, ended },
        )
    }

    /// Lets one held run (the first to wait) do its work.
    pub fn release_one(&self) {
        self.start.add_permits(1);
    }

    /// The id of the next job whose run in this process ended.
    pub async fn next_ended(&mut self) -> String {
        self.ended
            .recv()
            .await
            .expect("the API holding the jobs is alive")
    }
}

/// A job the caller may read: its partition is readable by them, and, for an anomalies
/// scan, they see at least what its starter sees (`access::covers`): its findings were
/// listed as the starter may see them, which can name households of other provinces
/// (a head office's scan). A recompute's findings lie within the partition, and a payment
/// run's are its communes.
pub async fn readable_job(api: &Api, caller: &access::Caller, id: &str) -> Result<Job, ApiError> {
    let id = crate::input::job_id(id)?;
    let job = read_job(api, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "job",
            value: id.clone(),
        })?;
    access::authorize(caller, Operation::Read, job.partition())?;
    if let Job::Anomalies(scan) = &job {
        if !access::covers(&caller.unit, &scan.started_by_unit) {
            return Err(access::AccessError::OutsideUnit {
                caller: caller.id.clone(),
                unit: caller.unit.clone(),
                commune: scan.started_by_unit.clone(),
            }
            .into());
        }
    }
    Ok(job)
}

/// `GET /v1/jobs/{id}`: a job's record: its progress while it runs, its result after.
/// From the shared bucket, so any ledger process answers it. Readable by whoever may read
/// the job's partition and, for an anomalies scan, covers its starter's unit
/// (`readable_job`).
pub async fn show(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(readable_job(&api, &caller, &id)
        .await?
        .answer(StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::kv::Operation;

    fn a_run() -> Job {
        Job::PaymentRun(PaymentRunJob {
            job: "0123456789abcdef0123456789abcdef".into(),
            partition: "01".into(),
            period: "2026-10".into(),
            on: "2026-10-05".parse().unwrap(),
            started_by: "staff:manager".into(),
            state: "running".into(),
            communes_total: 1,
            communes_done: 0,
            instructions: 0,
            amount: rust_decimal::Decimal::ZERO,
            unfunded_communes: 0,
            communes: Vec::new(),
            error: None,
            runner: String::new(),
            updated_at_unix_ms: 1_800_000_000_000,
        })
    }

    /// The final save outlasts a cluster's election (seconds) by far, and gives up
    /// before the record would be taken for abandoned by a retry of the request.
    #[test]
    fn the_final_save_is_tried_for_tens_of_seconds_within_half_the_abandon_time() {
        let waits = |attempts: u32, backoff: std::time::Duration| -> std::time::Duration {
            (1..attempts).map(|attempt| backoff * attempt).sum()
        };
        let progress = waits(JOB_SAVE_ATTEMPTS_MAX, JOB_SAVE_BACKOFF);
        let last = waits(JOB_FINAL_SAVE_ATTEMPTS_MAX, JOB_FINAL_SAVE_BACKOFF);
        assert!(last >= std::time::Duration::from_secs(30), "{last:?}");
        assert!(last > 10 * progress, "{last:?} vs {progress:?}");
        assert!(last <= JOB_ABANDONED_AFTER / 2, "{last:?}");
    }

    /// A scan's record saved before the starter's unit was kept reads as the head
    /// office's, the widest: only the head office reads it.
    #[test]
    fn a_scan_record_without_the_starters_unit_reads_as_the_head_offices() {
        let old = serde_json::json!({
            "kind": "anomalies", "job": "0123456789abcdef0123456789abcdef",
            "partition": "01", "started_by": "staff:auditor", "state": "done",
            "stream_last_sequence": 2, "stream_sequence_reached": 2, "events_scanned": 2,
            "decisions": 0, "findings_total": 0, "findings": [],
            "updated_at_unix_ms": 1_800_000_000_000_i64
        });
        let Job::Anomalies(scan) = serde_json::from_value(old).unwrap() else {
            panic!("an anomalies record");
        };
        assert_eq!(scan.started_by_unit, "");
        assert!(access::covers("", &scan.started_by_unit));
        assert!(!access::covers("01", &scan.started_by_unit));
    }

    /// A create or take-over whose answer was lost: the record read back is ours only if
    /// it holds the bytes this launch sent, and those differ from another launch's of the
    /// same request made in the same millisecond (their runner ids).
    #[test]
    fn a_write_whose_answer_was_lost_is_recognised_by_its_bytes() {
        let ours = serde_json::to_vec(&a_run().with_runner()).unwrap();
        let theirs = serde_json::to_vec(&a_run().with_runner()).unwrap();
        assert_ne!(ours, theirs, "two launches write different bytes");
        assert_eq!(own_write(&ours, Some((Operation::Put, &ours, 7))), Some(7));
        assert_eq!(own_write(&ours, Some((Operation::Put, &theirs, 7))), None);
        assert_eq!(own_write(&ours, Some((Operation::Delete, &ours, 7))), None);
        assert_eq!(own_write(&ours, None), None);
    }
}
