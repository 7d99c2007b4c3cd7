//! Work that outlives its request: a whole partition's payment run, commune by commune.
//! `POST /v1/partitions/{p}/payment-runs` answers 202 with the job's `Location`, and
//! `GET /v1/jobs/{id}` its progress and result.
//!
//! The job's record lives in the shared key-value bucket `<stream>_JOBS`, so any ledger
//! process answers `GET /v1/jobs/{id}`; the work runs in the process that accepted it
//! (docs/adr/0012). If that process stops, the record stays `running` with an old
//! `updated_at_unix_ms`: post the run again under a new key; communes already paid
//! answer `nothing_left`, since the domain issues one instruction per entitlement and
//! month whatever the key.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::access::{self, Caller, Operation};
use crate::chain::Partition;
use crate::domain::payments::ids::CommuneId;
use crate::domain::payments::instructions::Shortfall;
use crate::domain::payments::month::Month;
use crate::service::{CommuneRun, Request};

use super::extract::{Body, IdempotencyKey, RequestBody, Staff};
use super::households::Write;
use super::{Api, ApiError};

/// Jobs running at once in one process; another is refused with 503 (retry later).
/// Each runs its communes one after another, and a province's run is minutes of the
/// writer's time at most, so two keep the writers busy without starving desk requests.
pub const JOBS_RUNNING_MAX: usize = 2;
static JOBS_RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(JOBS_RUNNING_MAX);
/// How long the bucket keeps a job's record after its last change: a month's run is
/// looked at within the month.
pub const JOB_RECORD_AGE_MAX: std::time::Duration = std::time::Duration::from_secs(31 * 86_400);
/// Most communes a job's record lists one by one, the first in commune order; its counts
/// cover every commune. A province has a few hundred communes; the bound keeps the record
/// (~150 bytes a line) well under the server's 1 MiB message.
pub const JOB_COMMUNE_LINES_MAX: usize = 1_000;
/// Attempts to save a job's record before its progress is left unsaved (logged); the
/// next commune's save tries again.
pub const JOB_SAVE_ATTEMPTS_MAX: u32 = 3;
/// The wait before another attempt, times the attempt: a server restarting or a cluster
/// electing a leader answers again within a few hundred milliseconds.
const JOB_SAVE_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
/// Domain separation of job ids.
const JOB_ID_CONTEXT: &str = "ansinh v1 http job id";

// A commune's key is the run's scoped key, a slash and the commune (7 digits).
const _: () = assert!(
    "http:".len()
        + super::auth::STAFF_ID_BYTES_MAX
        + 1
        + super::extract::IDEMPOTENCY_KEY_BYTES_MAX
        + "/0100007".len()
        <= crate::log::writer::IDEMPOTENCY_KEY_BYTES_MAX
);

/// The jobs bucket's name for an event stream.
pub fn jobs_bucket_name(stream_name: &str) -> String {
    format!("{stream_name}_JOBS")
}

/// One commune's line in a job's record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommuneLine {
    commune: String,
    /// "paid", "nothing_left" (paid before) or "unfunded" (no budget covered it).
    outcome: String,
    instructions: u64,
    amount: Decimal,
    shortfalls: Vec<String>,
}

/// schemas/http/job.response.json: a payment run job's record, as stored and answered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PaymentRunJob {
    job: String,
    kind: String,
    partition: String,
    period: String,
    on: NaiveDate,
    started_by: String,
    /// "running", "done" (every commune answered), or "failed" (`error` says why; post
    /// the run again: what was paid is not paid twice).
    state: String,
    communes_total: u64,
    communes_done: u64,
    instructions: u64,
    amount: Decimal,
    unfunded_communes: u64,
    communes: Vec<CommuneLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    updated_at_unix_ms: i64,
}

impl PaymentRunJob {
    fn location(&self) -> String {
        format!("/v1/jobs/{}", self.job)
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

    fn add(&mut self, line: CommuneLine) {
        self.communes_done += 1;
        self.instructions += line.instructions;
        self.amount += line.amount;
        if line.outcome == "unfunded" {
            self.unfunded_communes += 1;
        }
        if self.communes.len() < JOB_COMMUNE_LINES_MAX {
            self.communes.push(line);
        }
    }
}

/// The job id of a caller's idempotency key: the same request again names the same job.
fn job_id(scoped_key: &str) -> String {
    let hash = blake3::Hasher::new_derive_key(JOB_ID_CONTEXT)
        .update(scoped_key.as_bytes())
        .finalize();
    hash.to_hex()[..crate::input::JOB_ID_CHARS].to_owned()
}

async fn read_job(api: &Api, id: &str) -> Result<Option<PaymentRunJob>, ApiError> {
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

async fn save(api: &Api, job: &mut PaymentRunJob) {
    job.updated_at_unix_ms = crate::checkpoint::now_unix_ms();
    let bytes = serde_json::to_vec(&*job).expect("a job record serializes");
    for attempt in 1..=JOB_SAVE_ATTEMPTS_MAX {
        match api.jobs().put(&job.job, bytes.clone().into()).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(job = %job.job, attempt, "saving a job's progress: {e}");
                tokio::time::sleep(JOB_SAVE_BACKOFF * attempt).await;
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct PartitionRunBody {
    period: String,
    on: NaiveDate,
}
impl RequestBody for PartitionRunBody {
    const SCHEMA: &'static str = "payment-run.request";
}

/// `POST /v1/partitions/{p}/payment-runs`: every commune of the partition paid for the
/// month, each all or none (`Service::run_commune`, as `ansinh payments run` without
/// `--commune`), in a job: 202 with its `Location`. The same key again answers the same
/// job (200). A branch's payments staff (unit = the partition).
pub async fn start_payment_run(
    State(api): State<Api>,
    Staff(caller): Staff,
    key: IdempotencyKey,
    Path(partition): Path<String>,
    Body { value, fingerprint }: Body<PartitionRunBody>,
) -> Result<Response, ApiError> {
    let partition = crate::input::partition(&partition)?;
    let period = crate::input::month(&value.period)?;
    // The whole partition: a province's branch (or its manager), not a commune's desk.
    access::authorize(&caller, Operation::ManagePayments, partition.as_str())?;
    let projector = api.projector().await?;
    super::reports::known_partition(projector, &partition)?;
    Write::begin(&api, &caller, &key, fingerprint).await?;
    let scoped = key.scoped(&caller);
    let id = job_id(&scoped);
    if let Some(job) = read_job(&api, &id).await? {
        return Ok(job.answer(StatusCode::OK));
    }
    let Ok(permit) = JOBS_RUNNING.try_acquire() else {
        // Nothing started; the key stays bound to this request (as after any 5xx), so
        // the same request again starts it.
        return Err(ApiError::Unavailable(format!(
            "{JOBS_RUNNING_MAX} jobs are running in this process; retry"
        )));
    };
    let communes: Vec<CommuneId> = projector
        .communes()?
        .into_iter()
        .filter(|c| c.commune.starts_with(partition.as_str()))
        .map(|c| CommuneId::parse(&c.commune))
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::Internal(format!("a commune of the projections: {e}")))?;
    let mut job = PaymentRunJob {
        job: id.clone(),
        kind: "payment_run".into(),
        partition: partition.to_string(),
        period: period.to_string(),
        on: value.on,
        started_by: caller.id.clone(),
        state: "running".into(),
        communes_total: communes.len() as u64,
        communes_done: 0,
        instructions: 0,
        amount: Decimal::ZERO,
        unfunded_communes: 0,
        communes: Vec::new(),
        error: None,
        updated_at_unix_ms: crate::checkpoint::now_unix_ms(),
    };
    let bytes = serde_json::to_vec(&job).expect("a job record serializes");
    if api.jobs().create(&id, bytes.into()).await.is_err() {
        // Another request under this key made it first (or the bucket is away).
        return match read_job(&api, &id).await? {
            Some(job) => Ok(job.answer(StatusCode::OK)),
            None => Err(ApiError::Unavailable(
                "jobs: the record could not be made".into(),
            )),
        };
    }
    let answer = job.answer(StatusCode::ACCEPTED);
    let correlation = format!("http:{}", key.0);
    tokio::spawn(async move {
        let _permit = permit;
        run_communes(
            &api,
            &caller,
            &scoped,
            &correlation,
            &partition,
            period,
            communes,
            &mut job,
        )
        .await;
    });
    Ok(answer)
}

#[allow(clippy::too_many_arguments)]
async fn run_communes(
    api: &Api,
    caller: &Caller,
    scoped_key: &str,
    correlation: &str,
    partition: &Partition,
    period: Month,
    communes: Vec<CommuneId>,
    job: &mut PaymentRunJob,
) {
    for commune in communes {
        // One key per commune, derived from the run's, as the CLI: a retry of the run
        // under its key finds each commune's receipt.
        let key = format!("{scoped_key}/{commune}");
        let req = Request {
            caller,
            idempotency_key: &key,
            correlation_id: correlation,
        };
        let ran = api
            .service()
            .run_commune(&req, partition, period, commune.clone(), job.on)
            .await;
        let sentences = |s: &[Shortfall]| s.iter().map(Shortfall::sentence).collect();
        let line = match ran {
            Ok(CommuneRun::Paid {
                issued,
                amount,
                shortfalls,
                ..
            }) => CommuneLine {
                commune: commune.to_string(),
                outcome: "paid".into(),
                instructions: issued,
                amount,
                shortfalls: sentences(&shortfalls),
            },
            Ok(CommuneRun::NothingLeft) => CommuneLine {
                commune: commune.to_string(),
                outcome: "nothing_left".into(),
                instructions: 0,
                amount: Decimal::ZERO,
                shortfalls: Vec::new(),
            },
            Ok(CommuneRun::Unfunded { shortfalls }) => CommuneLine {
                commune: commune.to_string(),
                outcome: "unfunded".into(),
                instructions: 0,
                amount: Decimal::ZERO,
                shortfalls: sentences(&shortfalls),
            },
            Err(e) => {
                job.state = "failed".into();
                job.error = Some(format!("commune {commune}: {}", ApiError::from(e)));
                save(api, job).await;
                return;
            }
        };
        job.add(line);
        save(api, job).await;
    }
    job.state = "done".into();
    save(api, job).await;
}

/// `GET /v1/jobs/{id}`: a job's record: its progress while it runs, its result after.
/// From the shared bucket, so any ledger process answers it. Readable by whoever may read
/// the job's partition.
pub async fn show(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = crate::input::job_id(&id)?;
    let job = read_job(&api, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "job",
            value: id.clone(),
        })?;
    access::authorize(&caller, Operation::Read, &job.partition)?;
    Ok(job.answer(StatusCode::OK))
}
