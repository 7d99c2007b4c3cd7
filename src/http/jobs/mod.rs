//! Work that outlives its request: a whole partition's payment run, commune by commune
//! (`payment_run`), and the audit reports that read the whole verified log: anomalies
//! and the recompute of eligibility decisions (`audit_scan`). Starting one answers 202
//! with the job's `Location`; `GET /v1/jobs/{id}` answers its progress and result, and so
//! does the console's job page.
//!
//! A job's record lives in the shared key-value bucket `<stream>_JOBS`, so any ledger
//! process answers `GET /v1/jobs/{id}`; the work runs in the process that accepted it
//! (docs/adr/0012). If that process stops, the record stays `running` with an old
//! `updated_at_unix_ms`; once it has not changed for `JOB_ABANDONED_AFTER`, the same
//! request again (same key, same body, to any process) takes the job over and runs it
//! again from the start: a payment run appends only what is missing (each commune's run
//! under its own key answers with its first receipt), and an audit scan records nothing.
//! Starting it under a new key works too.
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

/// Jobs running at once in one process (one `Api`), of every kind; another is refused
/// with 503 (retry later). A payment run keeps a writer busy, a scan a core: two keep the
/// machine busy without starving desk requests.
pub const JOBS_RUNNING_MAX: usize = 2;
/// How long the bucket keeps a job's record after its last change: a month's run is
/// looked at within the month.
pub const JOB_RECORD_AGE_MAX: std::time::Duration = std::time::Duration::from_secs(31 * 86_400);
/// A `running` record whose process has saved nothing for this long is taken as
/// abandoned (that process stopped): the same request again takes the job over. A
/// running job saves at least every commune (a commune of 10,000 takes under a second)
/// or every `audit_scan::SCAN_PROGRESS_EVERY`, so this is many missed saves, not a slow
/// step.
pub const JOB_ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(120);
/// Attempts to save a job's record before its progress is left unsaved (logged); the
/// next save tries again.
pub const JOB_SAVE_ATTEMPTS_MAX: u32 = 3;
/// The wait before another attempt, times the attempt: a server restarting or a cluster
/// electing a leader answers again within a few hundred milliseconds.
const JOB_SAVE_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
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

    /// Running, with nothing saved for `JOB_ABANDONED_AFTER`: its process stopped.
    fn abandoned(&self, now_unix_ms: i64) -> bool {
        self.state() == "running"
            && now_unix_ms.saturating_sub(self.updated_at_unix_ms())
                > JOB_ABANDONED_AFTER.as_millis() as i64
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

/// A slot among the process's `JOBS_RUNNING_MAX`, or 503. Nothing is started without
/// one; the request's key stays bound to it (as after any 5xx), so the same request again
/// starts it.
fn running_slot(api: &Api) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    api.jobs_running().try_acquire_owned().map_err(|_| {
        ApiError::Unavailable(format!(
            "{JOBS_RUNNING_MAX} jobs are running in this process; retry"
        ))
    })
}

/// The job this key started before, if any (200 with its record); none when it was
/// abandoned, to be taken over.
async fn started_before(api: &Api, id: &str) -> Result<Option<Started>, ApiError> {
    let now = crate::checkpoint::now_unix_ms();
    Ok(read_job(api, id)
        .await?
        .filter(|job| !job.abandoned(now))
        .map(|job| Started {
            job,
            status: StatusCode::OK,
        }))
}

/// Replaces an abandoned record of the job with `bytes`, if it is still the one read:
/// of several processes taking it over at once, one does.
async fn take_over(api: &Api, id: &str, bytes: &[u8]) -> Result<bool, ApiError> {
    let unavailable = |e: &dyn std::fmt::Display| ApiError::Unavailable(format!("jobs: {e}"));
    let Some(entry) = api.jobs().entry(id).await.map_err(|e| unavailable(&e))? else {
        return Ok(false);
    };
    let abandoned = entry.operation == async_nats::jetstream::kv::Operation::Put
        && serde_json::from_slice::<Job>(&entry.value)
            .is_ok_and(|old| old.abandoned(crate::checkpoint::now_unix_ms()));
    if !abandoned {
        return Ok(false);
    }
    Ok(api
        .jobs()
        .update(id, bytes.to_vec().into(), entry.revision)
        .await
        .is_ok())
}

/// Takes one of the `JOBS_RUNNING_MAX` slots (or 503), makes the job's first record (or
/// takes over an abandoned one) and runs `work` on it in the background (202); another
/// request under the same key that made the record first is answered with that job (200).
async fn launch<W, F>(api: &Api, job: Job, work: W) -> Result<Started, ApiError>
where
    W: FnOnce(Api, Job) -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send,
{
    let permit = running_slot(api)?;
    let bytes = serde_json::to_vec(&job).expect("a job record serializes");
    if api
        .jobs()
        .create(job.id(), bytes.clone().into())
        .await
        .is_err()
        && !take_over(api, job.id(), &bytes).await?
    {
        return read_job(api, job.id())
            .await?
            .map(|job| Started {
                job,
                status: StatusCode::OK,
            })
            .ok_or_else(|| ApiError::Unavailable("jobs: the record could not be made".into()));
    }
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
        work(api, job).await;
        if let Some(hold) = &hold {
            hold.ended(id).await;
        }
    });
    Ok(started)
}

/// Saves the record's progress, retrying briefly; a record left unsaved is saved with
/// the next progress (the work itself does not wait on the bucket).
async fn save(api: &Api, job: &mut Job) {
    job.touch();
    let bytes = serde_json::to_vec(&*job).expect("a job record serializes");
    for attempt in 1..=JOB_SAVE_ATTEMPTS_MAX {
        match api.jobs().put(job.id(), bytes.clone().into()).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(job = %job.id(), attempt, "saving a job's progress: {e}");
                tokio::time::sleep(JOB_SAVE_BACKOFF * attempt).await;
            }
        }
    }
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

/// A job the caller may read: its partition is readable by them.
pub async fn readable_job(api: &Api, caller: &access::Caller, id: &str) -> Result<Job, ApiError> {
    let id = crate::input::job_id(id)?;
    let job = read_job(api, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "job",
            value: id.clone(),
        })?;
    access::authorize(caller, Operation::Read, job.partition())?;
    Ok(job)
}

/// `GET /v1/jobs/{id}`: a job's record: its progress while it runs, its result after.
/// From the shared bucket, so any ledger process answers it. Readable by whoever may read
/// the job's partition.
pub async fn show(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(readable_job(&api, &caller, &id)
        .await?
        .answer(StatusCode::OK))
}
