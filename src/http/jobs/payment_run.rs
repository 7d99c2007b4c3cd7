//! A whole partition's payment run as a job: every commune paid for the month, one after
//! another, each all or none (`Service::run_commune`, as `ansinh payments run` without
//! `--commune`). Its record counts communes done of total, instructions and amount.

use axum::extract::State;
use axum::response::Response;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::access::{self, Caller, Operation};
use crate::chain::{Digest, Partition};
use crate::domain::payments::ids::CommuneId;
use crate::domain::payments::instructions::{LeftUnpaid, Shortfall};
use crate::domain::payments::month::Month;
use crate::service::{CommuneRun, Request};

use super::{Held, Job, Started, TakenOver, job_id, launch, save, save_final, started_before};
use crate::http::extract::{Body, IdempotencyKey, Path, RequestBody, Staff};
use crate::http::{Api, ApiError};

/// Most communes a job's record lists one by one, the first in commune order; its counts
/// cover every commune. A province has a few hundred communes; the bound keeps the record
/// (~150 bytes a line) well under the server's 1 MiB message.
pub const JOB_COMMUNE_LINES_MAX: usize = 1_000;

// A commune's key is the run's scoped key, a slash and the commune (7 digits).
const _: () = assert!(
    "http:".len()
        + crate::http::auth::STAFF_ID_BYTES_MAX
        + 1
        + crate::http::extract::IDEMPOTENCY_KEY_BYTES_MAX
        + "/0100007".len()
        <= crate::log::writer::IDEMPOTENCY_KEY_BYTES_MAX
);

/// One commune's line in a job's record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommuneLine {
    pub commune: String,
    /// "paid", "nothing_left" (paid before) or "unfunded" (no budget covered it).
    pub outcome: String,
    pub instructions: u64,
    pub amount: Decimal,
    pub shortfalls: Vec<String>,
    /// Entitlements left unpaid, by why (`not_resident`, `deceased`, `not_a_member`,
    /// `erased`; each missing from records made before it was kept).
    #[serde(flatten)]
    pub left_unpaid: LeftUnpaid,
    /// The day the commune's run was recorded on, for a "paid" line: the job's `on`, or a
    /// later day when a payment operation of the partition dated later landed before the
    /// commune's turn (`Service::run_commune_of_partition_run`). Missing from records made
    /// before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<NaiveDate>,
}

/// A payment run job's record (`kind` "payment_run").
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PaymentRunJob {
    pub job: String,
    pub partition: String,
    pub period: String,
    pub on: NaiveDate,
    pub started_by: String,
    /// "running", "done" (every commune answered), or "failed" (`error` says why; post
    /// the run again, under the same key or a new one: the same key takes this job over
    /// and resumes it, and what was paid is not paid twice).
    pub state: String,
    pub communes_total: u64,
    pub communes_done: u64,
    pub instructions: u64,
    pub amount: Decimal,
    pub unfunded_communes: u64,
    pub communes: Vec<CommuneLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The run holding the job (`Job::with_runner`); empty before it is launched.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runner: String,
    pub updated_at_unix_ms: i64,
}

impl PaymentRunJob {
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
    Ok(
        begin(&api, caller, &key, fingerprint, partition, period, value.on)
            .await?
            .answer(),
    )
}

/// Starts the partition's run for `period` under the caller's key (bound to the request's
/// `fingerprint`), or finds the job this key started. Shared by the API and the console.
pub async fn begin(
    api: &Api,
    caller: Caller,
    key: &IdempotencyKey,
    fingerprint: Digest,
    partition: Partition,
    period: Month,
    on: NaiveDate,
) -> Result<Started, ApiError> {
    // The whole partition: a province's branch (or its manager), not a commune's desk.
    access::authorize(&caller, Operation::ManagePayments, partition.as_str())?;
    // Refused before the job starts, as each commune's run would be.
    api.service().may_issue_on(on)?;
    let projector = api.projector().await?;
    crate::http::reports::known_partition(projector, &partition)?;
    // A job appends under keys of its own, so its request's key is bound here, in the
    // shared requests bucket: the same key with another body is refused.
    let scoped = key.scoped(&caller);
    api.claim(&scoped, &fingerprint).await?;
    let id = job_id(&scoped);
    if let Some(started) = started_before(api, &id).await? {
        return Ok(started);
    }
    let communes: Vec<CommuneId> = projector
        .communes_in(partition.as_str())?
        .into_iter()
        .map(|c| CommuneId::parse(&c.commune))
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::Internal(format!("a commune of the projections: {e}")))?;
    let job = Job::PaymentRun(PaymentRunJob {
        job: id,
        partition: partition.to_string(),
        period: period.to_string(),
        on,
        started_by: caller.id.clone(),
        state: "running".into(),
        communes_total: communes.len() as u64,
        communes_done: 0,
        instructions: 0,
        amount: Decimal::ZERO,
        unfunded_communes: 0,
        communes: Vec::new(),
        error: None,
        runner: String::new(),
        updated_at_unix_ms: crate::checkpoint::now_unix_ms(),
    });
    let correlation = format!("http:{}", key.0);
    launch(api, job, move |api, mut held| async move {
        run_communes(
            &api,
            &caller,
            &scoped,
            &correlation,
            &partition,
            period,
            communes,
            &mut held,
        )
        .await
    })
    .await
}

/// Runs each commune in turn, saving the record after each; stops at the first save
/// refused because another process took the job over (`TakenOver`). Each commune is dated
/// the job's `on`, or, once the job is past a commune, the later day of a payment
/// operation of the partition that landed in between (`Service::run_commune_of_partition_run`).
#[allow(clippy::too_many_arguments)]
async fn run_communes(
    api: &Api,
    caller: &Caller,
    scoped_key: &str,
    correlation: &str,
    partition: &Partition,
    period: Month,
    communes: Vec<CommuneId>,
    held: &mut Held,
) -> Result<(), TakenOver> {
    let mut dated = run_of(held).on;
    for commune in communes {
        // One key per commune, derived from the run's: a retry of the run under its key
        // finds each commune's receipt. Joined by a space, which no client's key holds
        // (`input::idempotency_key`), so no request of the caller's can name it: "K/0100007"
        // would, and its run of another month would be answered with this one's receipt.
        let key = format!("{scoped_key} {commune}");
        let req = Request {
            caller,
            idempotency_key: &key,
            correlation_id: correlation,
            fingerprint: None,
        };
        // Once past a commune, a later-dated payment operation landing between two of them
        // dates the rest on its day rather than failing the run; `dated` keeps that day,
        // so each commune after is not refused first.
        let went_past_a_commune = run_of(held).communes_done > 0;
        let ran = api
            .service()
            .run_commune_of_partition_run(
                &req,
                partition,
                period,
                commune.clone(),
                dated,
                went_past_a_commune,
            )
            .await;
        let sentences = |s: &[Shortfall]| s.iter().map(Shortfall::sentence).collect();
        let line = match ran {
            Ok((
                CommuneRun::Paid {
                    issued,
                    amount,
                    shortfalls,
                    left_unpaid,
                    on,
                    ..
                },
                decided_on,
            )) => {
                dated = decided_on;
                CommuneLine {
                    commune: commune.to_string(),
                    outcome: "paid".into(),
                    instructions: issued,
                    amount,
                    shortfalls: sentences(&shortfalls),
                    left_unpaid,
                    on: Some(on),
                }
            }
            Ok((CommuneRun::NothingLeft, decided_on)) => {
                dated = decided_on;
                CommuneLine {
                    commune: commune.to_string(),
                    outcome: "nothing_left".into(),
                    instructions: 0,
                    amount: Decimal::ZERO,
                    shortfalls: Vec::new(),
                    left_unpaid: LeftUnpaid::default(),
                    on: None,
                }
            }
            Ok((CommuneRun::Unfunded { shortfalls }, decided_on)) => {
                dated = decided_on;
                CommuneLine {
                    commune: commune.to_string(),
                    outcome: "unfunded".into(),
                    instructions: 0,
                    amount: Decimal::ZERO,
                    shortfalls: sentences(&shortfalls),
                    left_unpaid: LeftUnpaid::default(),
                    on: None,
                }
            }
            Err(e) => {
                run_of(held).state = "failed".into();
                run_of(held).error = Some(format!("commune {commune}: {}", ApiError::from(e)));
                return save_final(api, held).await;
            }
        };
        run_of(held).add(line);
        save(api, held).await?;
    }
    run_of(held).state = "done".into();
    save_final(api, held).await
}

fn run_of(held: &mut Held) -> &mut PaymentRunJob {
    match &mut held.job {
        Job::PaymentRun(run) => run,
        _ => unreachable!("run_communes is given a payment run's record"),
    }
}
