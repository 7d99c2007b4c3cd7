//! The staff HTTP JSON API (axum): the same operations as `ansinh household|review|loans`,
//! for the bank's front-office software.
//!
//! Every request goes through the same four steps, in this order:
//! 1. authenticate the bearer token (`auth`) -> 401;
//! 2. for writes, take the `Idempotency-Key` header -> 400;
//! 3. parse the body as JSON -> 400, validate it against its schema in `schemas/http/`
//!    (`schema`) -> 400 with the violations, and only then deserialize it;
//! 4. call `service` (which authorizes the role and unit -> 403, and submits to the book
//!    -> 404/409/422) and encode the answer.
//!
//! **Boundary:** HTTP, JSON and serde request types stop here; handlers turn them into
//! `service` calls and domain types. No handler decides a rule: refusals come from
//! `access` and from the book, so the CLI and the API cannot disagree.
//! **Invariant:** a request that fails at steps 1-3 appends nothing (nothing is
//! submitted before step 4), and one idempotency key of one caller appends at most
//! once in a partition; the same key with another body is refused
//! (`IdempotencyKeyReused`): the ledger records each write's fingerprint in its events
//! and compares (`service::Service::same_request`); the writes that append under keys
//! of their own (jobs, timeouts, gateway posts) bind theirs in the shared requests bucket first
//! (`Api::claim`).

mod audit;
pub mod auth;
pub mod console;
pub mod error;
mod extract;
pub mod gateways;
mod health;
mod households;
mod jobs;
pub use jobs::{
    HeldJobs, JOB_ABANDONED_AFTER, PAYMENT_RUNS_RUNNING_MAX, SCANS_RUNNING_MAX, jobs_bucket_name,
};
mod loans;
pub mod openapi;
mod payments;
mod reports;
pub mod schema;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use tower::ServiceBuilder;

use crate::app::Runtime;
use crate::chain::Digest;
use crate::directory::{Directory, Shared, SharedStaff};
use crate::gateway_ledger::LedgerSink;
use crate::kv_writes::{FencedWrites, WriteError};
use crate::projection::Projector;
use crate::service::Service;
use async_nats::jetstream::kv;
pub use auth::{StaffDirectory, StaffFileError};
use bytes::Bytes;
pub use error::ApiError;
pub use schema::Schemas;

/// Largest request body read; a bigger one is refused with 413 before it is parsed.
/// A household with 60 members is under 10 KiB of JSON.
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
/// Requests handled at once by the whole server, whatever their routes; more wait
/// (inside the timeout) for a slot. Each in-flight
/// write holds a slot in a partition writer's bounded queue, so this also bounds how
/// much of that queue HTTP can take.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 64;
/// A request, including its wait for a slot, is answered within this time or gets 503
/// `Timeout`. A write that timed out may still be recorded: retry it with the same
/// `Idempotency-Key` to learn its receipt.
pub const REQUEST_TIMEOUT_MS: u64 = 15_000;
/// Longest a client may take to send a request's headers (on a new connection, or on
/// one kept alive between requests) before the connection is closed, so a client that
/// trickles them (slowloris) holds a task and a file descriptor only this long.
pub const HEADER_READ_TIMEOUT_MS: u64 = 30_000;
/// Connections served at once; a client past it waits in the listen backlog until one
/// closes. With `HEADER_READ_TIMEOUT_MS` it bounds what clients can hold before a request
/// is even read (tasks, file descriptors below the process's limit).
pub const CONNECTIONS_MAX: usize = 1_024;
/// How long the accept loop rests after an accept that failed for a reason other than
/// the connection itself (out of file descriptors): trying again at once would spin.
const ACCEPT_FAILED_REST: Duration = Duration::from_secs(1);
/// The staff file inside the data directory, unless `--staff` names another.
pub const STAFF_FILE: &str = "staff.json";
/// sled tree of this API's idempotency fingerprints: scoped key -> request hash.
/// Longest one step of shutting down `serve` may take (the gateway server, the
/// checkpointer) once a stop signal came; a step past it is left behind, so the
/// process exits in bounded time whatever the state of NATS.
pub const SHUTDOWN_STEP_WAIT_MAX: Duration = Duration::from_secs(5);
/// Longest a read waits for the projections to reach what it must show.
pub const READ_WAIT_MAX: Duration = Duration::from_secs(5);
/// How long the background projector rests when it found no new event.
const PROJECTOR_IDLE_POLL: Duration = Duration::from_millis(20);
/// How long it rests after a catch-up that applied events. Each catch-up costs a
/// stream-info request, a consumer on the server and a sled transaction whatever it
/// applies: under 64 HTTP clients writing, the projector ran ~100 catch-ups a second of
/// ~60 events, and this rest makes them ~30 of ~180, which saved a tenth of a
/// registration's CPU (docs/BENCH.md). A read waiting for its own write waits at most
/// this much longer.
const PROJECTOR_BUSY_REST: Duration = Duration::from_millis(10);

/// How long the background projector rests after a catch-up that failed (a broken chain,
/// the projection store): such a failure does not pass by itself within milliseconds, and
/// each attempt reads from the position again.
const PROJECTOR_FAILED_REST: Duration = Duration::from_secs(1);

/// What the background projector tells the rest of the process, besides the sequence it
/// publishes: for the metrics and readiness (`health`).
struct ProjectorState {
    /// When the projections last held every message of the log (Unix ms): how long the
    /// read model has been behind, for the metrics.
    caught_up_at: AtomicI64,
    /// The projections have held the whole log at least once since the process started.
    /// Until then every read waits for them (and answers 503 after `READ_WAIT_MAX`), so
    /// the process says it is not ready: a new process on a province's log catches up
    /// for seconds to minutes (docs/BENCH.md), and a load balancer should not send staff
    /// to it meanwhile.
    held_whole_log: AtomicBool,
    /// Why the latest catch-up failed; `None` once one succeeds. While it is set the read
    /// model does not move, so the process is not ready.
    failure: std::sync::Mutex<Option<String>>,
}

impl ProjectorState {
    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records the outcome of a catch-up; true when the failure is new (worth a log line:
    /// the same one every second would bury everything else).
    fn record(&self, failure: Option<String>) -> bool {
        let mut slot = self
            .failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let new = failure.is_some() && *slot != failure;
        *slot = failure;
        new
    }
}

/// Keeps the projections caught up with the log for as long as an `Api` holds the
/// receiver, publishing the stream sequence through which they are complete. Reads wait
/// on it instead of each catching up under a lock. A failure (the server away, a broken
/// chain) is logged when it is new, shown by readiness, and tried again after
/// `PROJECTOR_FAILED_REST`; reads meanwhile time out with 503.
async fn keep_projecting(
    service: Service,
    publish: tokio::sync::watch::Sender<u64>,
    state: Arc<ProjectorState>,
) {
    loop {
        let mut stream = service.ledger.stream().clone();
        let caught_up = service
            .projector
            .catch_up(&mut stream, service.ledger.config())
            .await;
        let (applied, failure) = match caught_up {
            Ok(applied) => (applied, None),
            Err(e) => (0, Some(e.to_string())),
        };
        if let Ok(position) = service.projector.position() {
            // A position inside a frame has completed only the messages before it.
            let through = if position.whole_message {
                position.last.stream_sequence
            } else {
                position.last.stream_sequence.saturating_sub(1)
            };
            publish.send_replace(through);
            if failure.is_none() {
                // After the position is published: a probe that sees this true also
                // sees the projections' sequence at the end the catch-up reached.
                state.held_whole_log.store(true, Ordering::Release);
            }
        }
        if let Some(e) = &failure {
            if state.record(failure.clone()) {
                tracing::warn!("projections: {e}");
            }
            tokio::select! {
                _ = publish.closed() => return,
                _ = tokio::time::sleep(PROJECTOR_FAILED_REST) => {}
            }
            continue;
        }
        state.record(None);
        if applied > 0 {
            crate::telemetry::projected(applied);
            tokio::select! {
                _ = publish.closed() => return,
                _ = tokio::time::sleep(PROJECTOR_BUSY_REST) => {}
            }
            continue;
        }
        // Nothing new: the projections held the whole log as it was a moment ago.
        state
            .caught_up_at
            .store(crate::checkpoint::now_unix_ms(), Ordering::Relaxed);
        tokio::select! {
            _ = publish.closed() => return,
            _ = tokio::time::sleep(PROJECTOR_IDLE_POLL) => {}
        }
    }
}

/// How often `serve` verifies the whole log again, for the metrics' last verify result
/// (`ansinh_verify_last_ok`); the first runs at start. Verify reads ~1M events a second
/// on a 2-core machine, so a province's year costs seconds a day.
pub const VERIFY_INTERVAL: Duration = Duration::from_secs(24 * 3_600);

/// Verifies the whole log at start and every `VERIFY_INTERVAL`, recording the outcome in
/// the metrics; a failure is also logged with what `audit verify` would say. The verdict
/// is `audit verify`'s: exclusions count only with the ledger's signature
/// (`keys_partition` holds its keys).
async fn keep_verifying(service: Service, keys_partition: crate::chain::Partition) {
    loop {
        let mut stream = service.ledger.stream().clone();
        let config = service.ledger.config();
        match crate::verify::verify(&mut stream, config, &keys_partition, None, |_| {}).await {
            Ok(report) => {
                crate::telemetry::verified(true, report.events, report.stray_messages);
                tracing::info!(events = report.events, "the log verifies");
                if let Some(first) = report.stray.first() {
                    tracing::warn!(
                        stray_messages = report.stray_messages,
                        first_stream_sequence = first.stream_sequence,
                        first_subject = %first.subject,
                        "the log holds messages on subjects that name no partition; every reader passes over them"
                    );
                }
            }
            Err(crate::verify::VerifyError::Nats(e)) => {
                // Not a verdict on the log: keep the last one and try again later.
                tracing::warn!("verify could not read the log: {e}");
            }
            Err(e) => {
                tracing::error!("the log does not verify: {e}");
                crate::telemetry::verified(false, 0, 0);
                match crate::verify::quarantine_broken(service.ledger.store(), &e) {
                    Ok(Some(p)) => {
                        tracing::error!(partition = %p, "appends to the partition are stopped until the damage is repaired")
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!("could not stop appends: {e}"),
                }
            }
        }
        tokio::time::sleep(VERIFY_INTERVAL).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The staff file is missing, unreadable, too open or malformed: fix it, or create it
    /// with `ansinh admin add-staff`.
    #[error(transparent)]
    Staff(#[from] StaffFileError),
    /// The local store could not open the API's tree.
    #[error("http store: {0}")]
    Store(#[from] sled::Error),
    /// The listen address could not be bound (in use, or not ours).
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("serving: {0}")]
    Serve(std::io::Error),
    /// The gateway registry is unreadable or invalid: fix `gateways.json`.
    #[error(transparent)]
    Registry(#[from] crate::gateway::keys::RegistryError),
    /// The gateway NATS subjects could not be subscribed.
    #[error(transparent)]
    GatewayServe(#[from] crate::gateway::server::ServeError),
    /// The requests bucket (idempotency keys bound to requests) or the jobs bucket could
    /// not be opened: NATS unreachable (retry), or the bucket exists on fewer replicas
    /// than `--replicas` asks (an operator raises them; retrying changes nothing).
    #[error(transparent)]
    Bucket(#[from] crate::log::stream::StreamError),
    /// The citizen claims stream could not be opened.
    #[error("citizen claims: {0}")]
    Claims(String),
    /// The directory bucket (staff, gateways) could not be opened or an old file imported.
    #[error(transparent)]
    Directory(#[from] crate::directory::DirectoryError),
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct Api(Arc<Inner>);

struct Inner {
    service: Service,
    /// Followed live from the directory bucket by `serve` (`directory::Directory`).
    staff: SharedStaff,
    schemas: Schemas,
    /// The stream sequence through which the projections are complete, published by
    /// the background projector (`keep_projecting`); reads wait on it.
    projected: tokio::sync::watch::Receiver<u64>,
    /// What the background projector reports: how far behind, whether it ever held the
    /// log, why it fails.
    projector: Arc<ProjectorState>,
    /// Idempotency fingerprints (see `Api::claim`), shared by every process.
    requests: kv::Store,
    requests_writes: FencedWrites,
    /// Jobs' records (`jobs`), shared by every process.
    jobs: kv::Store,
    /// The slots of this process's jobs, one set per kind (`jobs::PAYMENT_RUNS_RUNNING_MAX`,
    /// `jobs::SCANS_RUNNING_MAX`), so scans never take a payment run's: one `Api` a process
    /// (`serve`), and each of the processes a test runs side by side has its own.
    payment_runs_running: Arc<tokio::sync::Semaphore>,
    scans_running: Arc<tokio::sync::Semaphore>,
    /// Test hook: holds the jobs' runs (`hold_jobs`).
    jobs_hold: std::sync::OnceLock<jobs::Hold>,
    /// The gateway routes' registry and ledger side; None: those routes answer 404.
    gateways: Option<GatewayEdge>,
    /// Where the signed checkpoints are (`serve` sets the command line's; default
    /// otherwise), for the auditor routes.
    checkpoints: std::sync::OnceLock<crate::checkpoint::CheckpointConfig>,
    /// The console's session keys, derived from the shared ledger secret and read again
    /// at a bounded interval.
    console_keys: console::session::KeyCache,
    /// The embedded nats-server `serve` started, if any: `/healthz` fails once it exited.
    embedded_server: std::sync::OnceLock<crate::nats_server::Exited>,
    /// How long a request may take (`REQUEST_TIMEOUT_MS` unless a test set a shorter one,
    /// `set_request_timeout`): the router's timeout, and what the console's forms plan
    /// their write and its read-back within.
    request_timeout: std::sync::OnceLock<Duration>,
    /// Events of the log the proof routes read, all requests together
    /// (`Api::proof_events_read`).
    proof_events: Arc<crate::checkpoint::read::ReadCount>,
    /// The `REQUESTS_IN_FLIGHT_MAX` slots of the whole server: one semaphore every route
    /// shares (`router`), not one each.
    request_slots: Arc<tokio::sync::Semaphore>,
    /// How long a client may take to send a request's headers (`HEADER_READ_TIMEOUT_MS`
    /// unless a test set a shorter one, `set_header_read_timeout`).
    header_read_timeout: std::sync::OnceLock<Duration>,
    /// Whether the console's cookies are `Secure` whatever the request says: `serve` sets
    /// it from the address it listens on (`set_secure_cookies`); true until then.
    secure_cookies: std::sync::OnceLock<bool>,
}

/// What the gateway routes need: the keys that authenticate gateways, and the ledger side
/// shared with the NATS transport.
#[derive(Clone)]
pub struct GatewayEdge {
    pub registry: crate::directory::SharedRegistry,
    pub sink: Arc<LedgerSink>,
}

impl Api {
    /// Compiles every schema once and opens the API's tree in the ledger's store.
    pub async fn new(service: Service, staff: StaffDirectory) -> Result<Self, HttpError> {
        Self::with_gateways(service, Shared::new(staff), None).await
    }

    /// Like `new`, with a staff directory that may change while it serves, and also
    /// serving the gateway routes when `gateways` is given.
    pub async fn with_gateways(
        service: Service,
        staff: SharedStaff,
        gateways: Option<GatewayEdge>,
    ) -> Result<Self, HttpError> {
        let config = service.ledger.config();
        let requests = crate::kv_writes::open_bucket(
            service.ledger.jetstream(),
            kv::Config {
                bucket: requests_bucket_name(&config.stream_name),
                description: "ansinh: each caller's idempotency key, bound to its request".into(),
                history: 1,
                max_age: REQUEST_BINDING_AGE_MAX,
                storage: async_nats::jetstream::stream::StorageType::File,
                num_replicas: config.replicas,
                ..Default::default()
            },
        )
        .await?;
        let requests_writes = FencedWrites::spawn(service.ledger.jetstream(), &requests);
        let jobs = crate::kv_writes::open_bucket(
            service.ledger.jetstream(),
            kv::Config {
                bucket: jobs::jobs_bucket_name(&config.stream_name),
                description: "ansinh: jobs' progress and results (payment runs)".into(),
                history: 1,
                max_age: jobs::JOB_RECORD_AGE_MAX,
                storage: async_nats::jetstream::stream::StorageType::File,
                num_replicas: config.replicas,
                ..Default::default()
            },
        )
        .await?;
        let (publish, projected) = tokio::sync::watch::channel(0);
        let projector = Arc::new(ProjectorState {
            caught_up_at: AtomicI64::new(crate::checkpoint::now_unix_ms()),
            held_whole_log: AtomicBool::new(false),
            failure: std::sync::Mutex::new(None),
        });
        tokio::spawn(keep_projecting(service.clone(), publish, projector.clone()));
        crate::telemetry::install();
        Ok(Self(Arc::new(Inner {
            service,
            staff,
            schemas: Schemas::compile(),
            projected,
            projector,
            requests,
            requests_writes,
            jobs,
            payment_runs_running: Arc::new(tokio::sync::Semaphore::new(
                jobs::PAYMENT_RUNS_RUNNING_MAX,
            )),
            scans_running: Arc::new(tokio::sync::Semaphore::new(jobs::SCANS_RUNNING_MAX)),
            jobs_hold: std::sync::OnceLock::new(),
            gateways,
            checkpoints: std::sync::OnceLock::new(),
            console_keys: console::session::KeyCache::default(),
            embedded_server: std::sync::OnceLock::new(),
            request_timeout: std::sync::OnceLock::new(),
            proof_events: Arc::default(),
            request_slots: Arc::new(tokio::sync::Semaphore::new(REQUESTS_IN_FLIGHT_MAX)),
            header_read_timeout: std::sync::OnceLock::new(),
            secure_cookies: std::sync::OnceLock::new(),
        })))
    }

    /// Names the checkpoint stream the auditor routes read (once; later calls change
    /// nothing).
    pub fn set_checkpoints(&self, config: crate::checkpoint::CheckpointConfig) {
        let _ = self.0.checkpoints.set(config);
    }

    /// Ties liveness to the embedded server `serve` started (once; later calls change
    /// nothing): a process whose server died can reach no log, and only a restart helps.
    pub fn set_embedded_server(&self, exited: crate::nats_server::Exited) {
        let _ = self.0.embedded_server.set(exited);
    }

    /// How the embedded server exited, if this process has one and it did.
    pub fn embedded_server_exit(&self) -> Option<&str> {
        self.0.embedded_server.get().and_then(|e| e.status())
    }

    /// Sets the clock the API and its service read today from (once; later calls change
    /// nothing), so a test can pin the day.
    pub fn set_clock(&self, clock: crate::clock::Clock) {
        self.0.service.set_clock(clock);
    }

    /// Sets how long the console checks sessions with the keys of the secret it read last
    /// (once; later calls change nothing; default `SECRET_RECHECK_S`), so a test sees a
    /// replaced secret at once.
    pub fn set_console_secret_recheck(&self, recheck: std::time::Duration) {
        self.0.console_keys.set_recheck(recheck);
    }

    /// Sets how long a request may take (once, before `router`; later calls change
    /// nothing; default `REQUEST_TIMEOUT_MS`), so a test of what a request that outlasts
    /// it gets waits a second rather than fifteen.
    #[doc(hidden)]
    pub fn set_request_timeout(&self, timeout: Duration) {
        let _ = self.0.request_timeout.set(timeout);
    }

    /// Sets how long a client may take to send a request's headers (once, before `serve`;
    /// later calls change nothing; default `HEADER_READ_TIMEOUT_MS`), so a test of a client
    /// that never finishes them waits a second.
    #[doc(hidden)]
    pub fn set_header_read_timeout(&self, timeout: Duration) {
        let _ = self.0.header_read_timeout.set(timeout);
    }

    /// How long a client may take to send a request's headers.
    pub fn header_read_timeout(&self) -> Duration {
        self.0
            .header_read_timeout
            .get()
            .copied()
            .unwrap_or(Duration::from_millis(HEADER_READ_TIMEOUT_MS))
    }

    /// Sets whether the console's cookies are `Secure` (and named `__Host-`) whatever the
    /// request says (once; later calls change nothing). `serve` sets it from the address
    /// it listens on: false on loopback only, where plain HTTP reaches no one else.
    pub fn set_secure_cookies(&self, secure: bool) {
        let _ = self.0.secure_cookies.set(secure);
    }

    /// Whether the console's cookies are `Secure` whatever the request says: true unless
    /// `set_secure_cookies` said otherwise.
    pub fn secure_cookies(&self) -> bool {
        self.0.secure_cookies.get().copied().unwrap_or(true)
    }

    /// Requests holding one of the `REQUESTS_IN_FLIGHT_MAX` slots now (the metric
    /// `ansinh_http_requests_in_flight`, and a test's view of the bound).
    pub fn requests_in_flight(&self) -> usize {
        REQUESTS_IN_FLIGHT_MAX - self.0.request_slots.available_permits()
    }

    /// How long a request may take, its wait for a slot included.
    pub fn request_timeout(&self) -> Duration {
        self.0
            .request_timeout
            .get()
            .copied()
            .unwrap_or(Duration::from_millis(REQUEST_TIMEOUT_MS))
    }

    /// Today in Vietnam, by the service's clock: the default day of a read.
    pub fn today(&self) -> chrono::NaiveDate {
        self.0.service.today()
    }

    /// Events of the log the proof routes have read since the API started: a proof from
    /// the projections' stored subtrees reads at most two chunks of its partition, one
    /// from the whole chain every event of the tree (ADR 0026).
    pub fn proof_events_read(&self) -> u64 {
        self.0.proof_events.get()
    }

    fn proof_events(&self) -> Arc<crate::checkpoint::read::ReadCount> {
        self.0.proof_events.clone()
    }

    fn checkpoints(&self) -> crate::checkpoint::CheckpointConfig {
        self.0.checkpoints.get().cloned().unwrap_or_default()
    }

    fn jobs(&self) -> &kv::Store {
        &self.0.jobs
    }

    fn payment_runs_running(&self) -> Arc<tokio::sync::Semaphore> {
        self.0.payment_runs_running.clone()
    }

    fn scans_running(&self) -> Arc<tokio::sync::Semaphore> {
        self.0.scans_running.clone()
    }

    fn jobs_hold(&self) -> Option<jobs::Hold> {
        self.0.jobs_hold.get().cloned()
    }

    /// Test hook: every job this API starts from now on waits, before any work, until the
    /// test lets it go (`HeldJobs::release_one`), and tells the test when its run ended,
    /// so a test can stop a run at a known point while another process acts. None if the
    /// jobs are held already.
    pub fn hold_jobs(&self) -> Option<HeldJobs> {
        let (hold, held) = HeldJobs::new();
        self.0.jobs_hold.set(hold).ok().map(|_| held)
    }

    fn gateways(&self) -> Option<&GatewayEdge> {
        self.0.gateways.as_ref()
    }

    fn service(&self) -> &Service {
        &self.0.service
    }

    fn staff(&self) -> Arc<StaffDirectory> {
        self.0.staff.current()
    }

    fn schemas(&self) -> &Schemas {
        &self.0.schemas
    }

    /// When the projections last held every message of the log (Unix ms).
    fn caught_up_at(&self) -> i64 {
        self.0.projector.caught_up_at.load(Ordering::Relaxed)
    }

    /// Whether the projections have held the whole log since the process started.
    fn read_model_started(&self) -> bool {
        self.0.projector.held_whole_log.load(Ordering::Acquire)
    }

    /// Why the projections' latest catch-up failed, if it did.
    fn projection_failure(&self) -> Option<String> {
        self.0.projector.failure()
    }

    /// The stream sequence through which the read model is complete.
    fn projected_through(&self) -> u64 {
        *self.0.projected.borrow()
    }

    /// The projections once they hold every event the log held when the request came,
    /// so a read sees every write answered before it.
    async fn projector(&self) -> Result<&Projector, ApiError> {
        self.projector_after(None).await
    }

    /// The projections once they hold the message at stream sequence `after` (a
    /// receipt's `stream_sequence`: read your own write), or with None every event the log
    /// held when the request came. Waits at most `READ_WAIT_MAX` for the background
    /// projector, then answers 503 with Retry-After: the write is in the log, the read
    /// model is behind.
    async fn projector_after(&self, after: Option<u64>) -> Result<&Projector, ApiError> {
        let last = || async {
            let mut stream = self.0.service.ledger.stream().clone();
            crate::log::reader::last_stream_sequence(&mut stream)
                .await
                .map_err(ApiError::Unavailable)
        };
        let target = match after {
            // Already held: no need to ask the stream anything.
            Some(sequence) if sequence <= self.projected_through() => sequence,
            Some(sequence) => {
                // A receipt names a message the stream holds (it was acknowledged), so a
                // position past the stream's end is no receipt: say so now rather than
                // wait `READ_WAIT_MAX` for a message that may never come.
                let end = last().await?;
                if sequence > end {
                    return Err(ApiError::InvalidParameter(format!(
                        "after={sequence} is past the log's end (stream sequence {end}): pass a receipt's stream_sequence"
                    )));
                }
                sequence
            }
            None => last().await?,
        };
        let mut projected = self.0.projected.clone();
        match tokio::time::timeout(READ_WAIT_MAX, projected.wait_for(|p| *p >= target)).await {
            Ok(Ok(_)) => Ok(&self.0.service.projector),
            Ok(Err(_)) => Err(ApiError::Unavailable("the projector has stopped".into())),
            Err(_) => Err(ApiError::Unavailable(format!(
                "the read model has not reached stream sequence {target} within {} s; retry",
                READ_WAIT_MAX.as_secs()
            ))),
        }
    }

    /// Runs `read` on the projections on a blocking thread, off the runtime's workers:
    /// for reads of many records once `projector()` has answered (a range's
    /// reconciliation reads up to a year of a province's lines), which on a worker would
    /// hold it, and every request queued behind it, for the read's whole length.
    async fn read_off_workers<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Projector) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let api = self.clone();
        tokio::task::spawn_blocking(move || read(&api.0.service.projector))
            .await
            .map_err(|e| ApiError::Unavailable(format!("the read stopped: {e}")))
    }

    /// Before a job or a gateway post, whose events do not carry the request's key:
    /// binds this caller's key to this request's fingerprint, or refuses the key if it
    /// is bound to another request, so a client that changed the request and kept the
    /// key does not believe the change was recorded. A compare-and-set in the shared
    /// requests bucket: two different requests racing on one key, through any number of
    /// processes, and the second is refused at once. A write the ledger records under the
    /// request's own key needs none of this: its events carry the fingerprint
    /// (`service::Service::same_request`), which saves a bucket write (an atomic batch of
    /// 5-17 ms under load) before each commit. Returns the answer kept for this very
    /// request when it was sent before and its work is done (`remember_answer`), or
    /// nothing (empty).
    async fn claim(&self, scoped_key: &str, fingerprint: &Digest) -> Result<Bytes, ApiError> {
        let key = request_key(scoped_key);
        for _ in 0..REQUEST_BIND_ATTEMPTS_MAX {
            let revision = match self.binding_and_answer(&key).await? {
                (_, Some(bound), kept) if bound == fingerprint.0 => return Ok(kept),
                (_, Some(_), _) => return Err(ApiError::IdempotencyKeyReused),
                (revision, None, _) => revision,
            };
            match self
                .0
                .requests_writes
                .write(&key, Bytes::copy_from_slice(&fingerprint.0), revision)
                .await
            {
                Ok(()) => return Ok(Bytes::new()),
                Err(WriteError::WrongRevision) => continue,
                Err(WriteError::Nats(e)) => {
                    return Err(ApiError::Unavailable(format!("idempotency keys: {e}")));
                }
            }
        }
        Err(ApiError::Unavailable(
            "an idempotency key was contended too often; retry".into(),
        ))
    }

    /// Whether `scoped_key` is bound to the request `fingerprint` already: one read, no
    /// write.
    async fn bound_to(&self, scoped_key: &str, fingerprint: &Digest) -> Result<bool, ApiError> {
        let (_, bound, _) = self.binding_and_answer(&request_key(scoped_key)).await?;
        Ok(bound == Some(fingerprint.0))
    }

    /// The answer to a request bound under `scoped_key` that failed with `e`. A refusal
    /// (4xx) recorded nothing, so the key is freed for the corrected request; a failure
    /// (5xx) may have come after the event was stored (its acknowledgement lost, its read
    /// back failed), so the key stays bound to this request (ADR 0013): the same request
    /// again gets its answer, another one under the key is refused.
    async fn failed(&self, scoped_key: &str, fingerprint: &Digest, e: ApiError) -> ApiError {
        if e.status().is_client_error() {
            if let Err(released) = self.release(scoped_key, fingerprint).await {
                return released;
            }
        }
        e
    }

    /// After a refusal (nothing recorded): frees the key, so the caller may correct the
    /// request and send it again under the same key. Only a binding to this very request
    /// is removed (an empty value: free).
    async fn release(&self, scoped_key: &str, fingerprint: &Digest) -> Result<(), ApiError> {
        let key = request_key(scoped_key);
        for _ in 0..REQUEST_BIND_ATTEMPTS_MAX {
            let revision = match self.binding(&key).await? {
                (revision, Some(bound)) if bound == fingerprint.0 => revision,
                // Free, or another request holds the key now: leave it alone.
                _ => return Ok(()),
            };
            match self
                .0
                .requests_writes
                .write(&key, Bytes::new(), revision)
                .await
            {
                Ok(()) => return Ok(()),
                Err(WriteError::WrongRevision) => continue,
                Err(WriteError::Nats(e)) => {
                    return Err(ApiError::Unavailable(format!("idempotency keys: {e}")));
                }
            }
        }
        Ok(())
    }

    /// The key's revision (0: never written) and the fingerprint bound to it, if any.
    async fn binding(&self, key: &str) -> Result<(u64, Option<[u8; 32]>), ApiError> {
        self.binding_and_answer(key)
            .await
            .map(|(revision, bound, _)| (revision, bound))
    }

    /// The key's revision, the fingerprint bound to it, and the answer kept after it
    /// (`remember_answer`; empty when none): a value is the 32 bytes of the fingerprint,
    /// then the answer's bytes.
    async fn binding_and_answer(
        &self,
        key: &str,
    ) -> Result<(u64, Option<[u8; 32]>, Bytes), ApiError> {
        let entry = self
            .0
            .requests
            .entry(key)
            .await
            .map_err(|e| ApiError::Unavailable(format!("idempotency keys: {e}")))?;
        Ok(match entry {
            None => (0, None, Bytes::new()),
            Some(e) if e.operation == kv::Operation::Put && e.value.len() >= 32 => {
                let bound = <[u8; 32]>::try_from(&e.value[..32]).ok();
                (e.revision, bound, e.value.slice(32..))
            }
            Some(e) => (e.revision, None, Bytes::new()),
        })
    }

    /// Keeps `answer` beside the binding of the request under `scoped_key`, for its
    /// retries (`claim` returns it). Once, at the revision read: should another write come
    /// between, the answer is not kept and a retry is answered as a new request would be.
    async fn remember_answer(&self, scoped_key: &str, fingerprint: &Digest, answer: &[u8]) {
        let key = request_key(scoped_key);
        let Ok((revision, Some(bound), _)) = self.binding_and_answer(&key).await else {
            return;
        };
        if bound != fingerprint.0 {
            return;
        }
        let mut value = Vec::with_capacity(32 + answer.len());
        value.extend_from_slice(&fingerprint.0);
        value.extend_from_slice(answer);
        if let Err(e) = self
            .0
            .requests_writes
            .write(&key, Bytes::from(value), revision)
            .await
        {
            tracing::warn!(key, error = ?e, "the answer to a request was not kept for its retries");
        }
    }
}

/// Compare-and-set attempts on one idempotency key before the request fails.
pub const REQUEST_BIND_ATTEMPTS_MAX: usize = 8;

/// How long the requests bucket keeps a key's binding after its last change. Every
/// gateway post over HTTP binds one, ~40 million a year for the country, and the server
/// holds each key's state in memory: kept for ever, they would grow without end. Past
/// this age the same key with another request is taken as new: a gateway post's own
/// idempotency is its content in the ledger, for ever, and a job's record is gone after
/// `JOB_RECORD_AGE_MAX` (the same age) anyway.
pub const REQUEST_BINDING_AGE_MAX: std::time::Duration = jobs::JOB_RECORD_AGE_MAX;

/// The bucket key of a caller's idempotency key: its BLAKE3 (caller ids and keys may hold
/// characters a bucket key may not).
fn request_key(scoped_key: &str) -> String {
    blake3::hash(scoped_key.as_bytes()).to_hex().to_string()
}

/// The requests bucket's name for an event stream.
pub fn requests_bucket_name(stream_name: &str) -> String {
    format!("{stream_name}_REQUESTS")
}

/// Every route, each once with its documentation (`openapi`): what `router` serves and
/// what `GET /v1/openapi.json` describes.
pub fn routes() -> openapi::Routes {
    use openapi::Caller::{Anyone, Gateway, Staff};
    openapi::Routes::new()
        .post(
            "/v1/households",
            "Register a household; personal data are sealed before they reach the log",
            "register-household.request",
            "receipt.response",
            Staff,
            households::register,
        )
        .search(
            "/v1/households/search",
            "The household of a citizen id (through the blind index) or of a household id: exactly one (officers and managers of the unit)",
            "household-search.request",
            "household-search.response",
            Staff,
            households::search,
        )
        .get(
            "/v1/households/{id}",
            "A household: standing, loans priced on as_of, assistance received, one page of its history (history_page, history_lines)",
            Some("household-view.response"),
            Staff,
            households::show,
        )
        .post(
            "/v1/households/{id}/members",
            "Change the members",
            "change-members.request",
            "receipt.response",
            Staff,
            households::change_members,
        )
        .post(
            "/v1/households/{id}/deaths",
            "Record a member's death",
            "record-death.request",
            "receipt.response",
            Staff,
            households::record_death,
        )
        .post(
            "/v1/households/{id}/moves",
            "Move to a new id in another commune",
            "move-household.request",
            "move.response",
            Staff,
            households::move_household,
        )
        .post(
            "/v1/households/{id}/erasure",
            "Erase the personal data (the data key is destroyed)",
            "erase-personal-data.request",
            "receipt.response",
            Staff,
            households::erase,
        )
        .post(
            "/v1/households/{id}/classifications",
            "The yearly review's decision under the standard in force",
            "classify.request",
            "receipt.response",
            Staff,
            households::classify,
        )
        .post(
            "/v1/communes/{commune}/budgets",
            "A month's social assistance budget of a commune",
            "allocate-budget.request",
            "receipt.response",
            Staff,
            payments::allocate,
        )
        .post(
            "/v1/communes/{commune}/budget-releases",
            "Take back the unused part of a commune's monthly budget",
            "release-budget.request",
            "receipt.response",
            Staff,
            payments::release,
        )
        .described(
            "Allocation that no instruction holds or spent goes back (a `BudgetDeallocated` event); asking more than that is refused by the book (422) and appends nothing. The branch manager, as for allocating.",
        )
        .post(
            "/v1/communes/{commune}/payment-runs",
            "Pay a commune's active entitlements for a month, all or none",
            "payment-run.request",
            "payment-run.response",
            Staff,
            payments::run,
        )
        .post(
            "/v1/partitions/{p}/payment-runs",
            "Pay every commune of a province for a month, as a job",
            "payment-run.request",
            "job.response",
            Staff,
            jobs::payment_run::start_payment_run,
        )
        .accepted()
        .described(
            "Each commune is paid all or none, one after another, as `ansinh payments run` without `--commune` does; communes come from the projections. Answers 202 with the job's record and its `Location` (`/v1/jobs/{id}`); the same key again answers that job (200), unless it `failed`: then it takes the job over and resumes it (202). The record lives in the shared bucket `<stream>_JOBS` (kept `JOB_RECORD_AGE_MAX`, 31 days), so any process answers `GET /v1/jobs/{id}`, but the work runs in the process that accepted it (docs/adr/0012): if that process stops, the record stays `running` with an old `updated_at_unix_ms`, and once it is `JOB_ABANDONED_AFTER` (2 minutes) old the same request again takes the job over; post the run again, under the same key or a new one, and communes already paid answer `nothing_left`, since the domain issues one instruction per entitlement and month. At most `PAYMENT_RUNS_RUNNING_MAX` (2) payment runs run at once in a process (503 beyond); scans have slots of their own, so they never hold a run back. A branch's payments staff.",
        )
        .get(
            "/v1/jobs/{id}",
            "A job's progress and result: a payment run (communes done of total, instructions, amount) or an audit scan (how far it has read, its findings)",
            Some("job.response"),
            Staff,
            jobs::show,
        )
        .described(
            "From the shared jobs bucket: any ledger process answers it; `kind` says which record it is. `state` is waiting (a scan, for a reader of the log), running, done or failed (`error` says why). Readable by whoever may read the job's partition; an anomalies scan's record, whose findings are listed as its starter may see them (`started_by_unit`), only by a reader whose unit covers the starter's (the head office covers every unit, a province its communes): another is refused 403 `OutsideUnit`.",
        )
        .post(
            "/v1/entitlements",
            "Grant a monthly entitlement to a household member",
            "grant-entitlement.request",
            "entitlement.response",
            Staff,
            payments::grant,
        )
        .post(
            "/v1/partitions/{p}/entitlements/{n}/stop",
            "Stop an entitlement from the month after `on`",
            "stop-entitlement.request",
            "receipt.response",
            Staff,
            payments::stop,
        )
        .post(
            "/v1/partitions/{p}/entitlements/{n}/changes",
            "Change an entitlement's terms from a month on",
            "change-entitlement.request",
            "receipt.response",
            Staff,
            payments::change,
        )
        .described(
            "New category, channel and gateway, and provincial base from `from` on (an `EntitlementChanged` event); instructions already issued keep their terms. The province's payments staff (a change, stop or reissue is decided for the whole partition).",
        )
        .post(
            "/v1/partitions/{p}/instructions/{id}/reissue",
            "Issue a failed, returned or timed-out instruction again",
            "reissue.request",
            "receipt.response",
            Staff,
            payments::reissue,
        )
        .post(
            "/v1/partitions/{p}/timeouts",
            "Time out the instructions without a result past their timeout; their holds go back to the budget",
            "timeouts.request",
            "timeouts.response",
            Staff,
            payments::timeouts,
        )
        .described(
            "`ansinh payments timeouts`: which instructions are due is read from the projections (the instructions still pending, by issue day, each with its channel's delay: O(the pending ones past the shortest timeout), never the log); each is timed out by one command under its own key, at most `TIMEOUTS_PER_REQUEST_MAX` (1,000) a request (`more_left`: send it again). 201 when some were timed out; 200 `nothing_left` when none is due. The same request again under its key, once its work is done (after a lost answer), gets the answer that finished it, with the instructions it timed out (200), kept beside the key's binding in the requests bucket; after `more_left` it goes on with the rest. `as_of` later than today (in Vietnam, by the ledger's clock) is refused (422 `TimeoutsAsOfInFuture`), and so is one before the partition's latest run, reissue or timeout (409 `PaymentOperationBackDated`): each timeout is dated `as_of`. Payments staff whose unit covers the partition (a branch).",
        )
        .post(
            "/v1/loans",
            "Approve a policy-credit loan; answers its reference",
            "approve-loan.request",
            "receipt.response",
            Staff,
            loans::approve,
        )
        .post(
            "/v1/loans/{loan}/disbursements",
            "Pay out a tranche",
            "disburse.request",
            "receipt.response",
            Staff,
            loans::disburse,
        )
        .post(
            "/v1/loans/{loan}/repayments",
            "A repayment collected at the commune transaction point",
            "repay.request",
            "receipt.response",
            Staff,
            loans::repay,
        )
        .post(
            "/v1/loans/{loan}/extensions",
            "Extend the final due date",
            "extend.request",
            "receipt.response",
            Staff,
            loans::extend,
        )
        .post(
            "/v1/loans/{loan}/freeze",
            "Freeze after a disaster: no interest accrues",
            "freeze.request",
            "receipt.response",
            Staff,
            loans::freeze,
        )
        .post(
            "/v1/loans/{loan}/write-off",
            "Write off after a disaster, by decision",
            "write-off.request",
            "receipt.response",
            Staff,
            loans::write_off,
        )
        .post(
            "/v1/loans/{loan}/unfreeze",
            "End a freeze: interest accrues again from its date; the due date may move on by at most the days frozen",
            "unfreeze.request",
            "receipt.response",
            Staff,
            loans::unfreeze,
        )
        .post(
            "/v1/loans/{loan}/cancellation",
            "Cancel the approval of a loan with nothing disbursed (a branch manager); 409 WrongLoanStatus once money went out",
            "cancel-approval.request",
            "receipt.response",
            Staff,
            loans::cancel_approval,
        )
        .post(
            "/v1/loans/{loan}/reversals",
            "Reverse a mistaken disbursement or repayment",
            "reverse.request",
            "receipt.response",
            Staff,
            loans::reverse,
        )
        .post(
            "/v1/loans/{loan}/overdue",
            "Move the earliest unpaid instalment due before as_of overdue, from the day after it fell due; repeat with a new key until it moves nothing",
            "mark-overdue.request",
            "receipt.response",
            Staff,
            loans::mark_overdue,
        )
        .post(
            "/v1/gateways/{gateway}/posts",
            "A gateway's signed result for one instruction",
            "gateway-post.request",
            "receipt.response",
            Gateway,
            gateways::post,
        )
        .get(
            "/v1/gateways/{gateway}/instructions",
            "The gateway's instructions waiting for a result, at most max (default 100, at most 500), after the instruction id after (the last of the previous page) when given",
            Some("gateway-instructions.response"),
            Gateway,
            gateways::instructions,
        )
        .get(
            "/v1/communes/{code}/portfolio",
            "A commune's portfolio: outstanding, overdue ratio, per programme",
            Some("portfolio.response"),
            Staff,
            reports::portfolio,
        )
        .get(
            "/v1/partitions/{partition}/trial-balance",
            "Debits and credits per account of a province",
            Some("trial-balance.response"),
            Staff,
            reports::trial_balance,
        )
        .get(
            "/v1/partitions/{partition}/reconciliation/{day}",
            "One day's reconciliation per gateway",
            Some("reconciliation-day.response"),
            Staff,
            reports::reconciliation,
        )
        .get(
            "/v1/partitions/{partition}/reconciliation",
            "A range of days' reconciliation per gateway, with totals, as JSON or CSV",
            Some("reconciliation-range.response"),
            Staff,
            reports::reconciliation_range,
        )
        .queries(&[
            ("from", "The first day, YYYY-MM-DD (required)."),
            ("to", "The last day, YYYY-MM-DD, included (required); at most 366 days after from."),
            ("as_of", "The report as of this day (default: today in Vietnam); refused (400) if the partition has payment events after it."),
            ("pending_days", "Instructions without a result for this many days are pending (default 10)."),
            ("format", "json (default) or csv; `Accept: text/csv` also asks for CSV."),
        ])
        .also_as(&["text/csv"])
        .described(
            "Read from the projections, O(the range's lines): each day is two prefix scans, at most `RECONCILIATION_RANGE_DAYS_MAX` (366) days; a reversed or longer range is refused (400). The CSV (RFC 4180, UTF-8 with a byte-order mark, CRLF line ends) has a header row and one row per day and gateway; amounts are whole đồng as plain digits (columns ending `_vnd`).",
        )
        .get(
            "/v1/audit/partitions/{p}/status",
            "A partition's verified head, latest checkpoint and its cosigners, and the read model's lag",
            Some("audit-status.response"),
            Staff,
            audit::status,
        )
        .get(
            "/v1/audit/partitions/{p}/proofs/inclusion",
            "An event's inclusion proof in a signed checkpoint (query: seq, checkpoint_size)",
            Some("inclusion-proof"),
            Staff,
            audit::inclusion,
        )
        .get(
            "/v1/audit/partitions/{p}/proofs/consistency",
            "The proof that the log only grew between two checkpoints (query: from, to)",
            Some("consistency-proof"),
            Staff,
            audit::consistency,
        )
        .get(
            "/v1/audit/partitions/{p}/households/{id}/bundle",
            "A household's auditor bundle as one tar archive, to verify offline",
            None,
            Staff,
            audit::bundle,
        )
        .also_as(&["application/x-tar"])
        .described(
            "The bundle of `ansinh audit export --household` (docs/BUNDLES.md) as a ustar archive of its directory, `Content-Disposition: attachment`; `ansinh audit verify-bundle bundle-<id>.tar` checks it with no server. Proved against the partition's latest signed checkpoint: events not yet covered answer 409 `NotCovered` until the next checkpoint. Reads the partition's chain (O(partition), as the CLI); at most `BUNDLE_EVENTS_MAX` events. Auditors and the province's branch, as the proofs.",
        )
        .get(
            "/v1/audit/partitions/{p}/anomalies",
            "Anomalies concerning a partition, as `ansinh audit anomalies` finds them, a page at a time",
            Some("anomalies.response"),
            Staff,
            audit::anomalies,
        )
        .queries(&[
            ("as_of", "Instructions pending are counted to this day (default: today in Vietnam)."),
            ("pending_days", "Instructions without a result for more than this many days are listed (default 10)."),
            ("page", "The page, from 1 (default 1); `FINDINGS_PAGE_MAX` (500) anomalies a page."),
        ])
        .described(
            "Reads and verifies the whole log on every call (O(log), every partition in stream order: a citizen may be in households of two provinces), as the CLI; at most `LOG_SCANS_IN_FLIGHT_MAX` (2) such reads run at once in a process, and a call must end within the request timeout (15 s): for a log too large for that, run `ansinh audit anomalies`. The scan lists at most `ANOMALIES_LISTED_MAX` (10,000) of the anomalies concerning the partition and counts the rest (`not_listed`); the answer holds at most `FINDINGS_PAGE_MAX` (500) of them. Records nothing. Auditors and the province's branch.",
        )
        .get(
            "/v1/audit/partitions/{p}/recompute",
            "Eligibility decisions of a partition that do not re-derive from their recorded inputs, a page at a time",
            Some("recompute.response"),
            Staff,
            audit::recompute,
        )
        .queries(&[(
            "page",
            "The page, from 1 (default 1); `FINDINGS_PAGE_MAX` (500) mismatches a page.",
        )])
        .described(
            "`ansinh audit recompute-eligibility` for one partition: reads and verifies the partition's log on every call (O(partition)); at most `LOG_SCANS_IN_FLIGHT_MAX` (2) such reads run at once in a process, within the request timeout (15 s). The answer holds at most `FINDINGS_PAGE_MAX` (500) mismatches. Records nothing. Auditors and the province's branch.",
        )
        .post(
            "/v1/audit/partitions/{p}/scans",
            "Make the anomalies or recompute report of a partition in a job, with progress",
            "audit-scan.request",
            "job.response",
            Staff,
            jobs::audit_scan::start_scan,
        )
        .accepted()
        .described(
            "The reports of `GET .../anomalies` and `GET .../recompute`, made in a job for logs too large to read within a request: 202 with the job's record and its `Location` (`/v1/jobs/{id}`), which says how far the scan has read (`stream_sequence_reached` of `stream_last_sequence`, saved every second) and, when done, the findings (at most `JOB_FINDINGS_MAX`, 1,000, listed; `findings_total` counts all). The same key again answers that job (200), unless it `failed`: then it takes the job over and runs it again (202). Waits for one of the `LOG_SCANS_IN_FLIGHT_MAX` (2) readers of the log (`state` waiting, the record saved every `JOB_WAITING_SAVE_EVERY`, 30 s); a waiting or running scan whose process stopped is taken over by the same request again once its record is `JOB_ABANDONED_AFTER` (2 minutes) old. At most `SCANS_RUNNING_MAX` (2) scans run or wait at once in a process (503 beyond), in slots of their own: they never hold a payment run back. Records nothing. Auditors and the province's branch.",
        )
        .get(
            "/v1/openapi.json",
            "This document",
            None,
            Anyone,
            openapi_document,
        )
        .get(
            "/healthz",
            "Alive: 200 while the process can serve; 503 once the embedded nats-server it started has exited, so that an orchestrator restarts it",
            None,
            Anyone,
            health::healthz,
        )
        .get(
            "/readyz",
            "Ready: the event stream answers, the projections have held the whole log since the process started, and their latest catch-up did not fail (503 with the reasons otherwise). The body also lists the partitions this process has stopped appending to, and why; a stopped partition leaves the process ready",
            None,
            Anyone,
            health::readyz,
        )
        .get(
            "/metrics",
            "Prometheus metrics",
            None,
            Anyone,
            health::metrics,
        )
}

/// `GET /v1/openapi.json`: the OpenAPI 3.1 document of `routes()`.
async fn openapi_document() -> axum::Json<serde_json::Value> {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    axum::Json(
        DOCUMENT
            .get_or_init(|| openapi::document(&routes().docs))
            .clone(),
    )
}

/// The routes, with the body limit, the concurrency limit and the timeout.
pub fn router(api: Api) -> Router {
    let timeout = api.request_timeout();
    let v1 = routes()
        .router
        .merge(console::routes())
        .fallback(|| async { ApiError::NoSuchRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    // `Router::layer` wraps each route and method apart, so a limit that made its own
    // semaphore would bound each of them alone (70 routes and methods: ~4,500 requests);
    // this one's semaphore is the server's, shared by every copy.
    let slots =
        tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(api.0.request_slots.clone());
    v1.layer(axum::middleware::from_fn(writes_run_to_their_end))
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .layer(
            ServiceBuilder::new()
                // Outside the timeout: turns its error into a JSON answer.
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    ApiError::Timeout
                }))
                // The timeout covers the wait for a slot, so a queue of waiting requests
                // is bounded in time as well as in number.
                .timeout(timeout)
                .layer(slots),
        )
        .layer(axum::middleware::map_response_with_state(
            api.clone(),
            no_store,
        ))
        // Outermost, so a request that timed out is counted with its 503 too.
        .layer(axum::middleware::from_fn(count_request))
        .with_state(api)
}

/// A write, once its request is in, runs to its end whatever becomes of the request. The
/// timeout's 503 or a client that hangs up drops the handler's future, and a write dropped
/// part-way could stop between claiming citizens and submitting its event: the citizens
/// held by a household that was never recorded, until the same request came again. The
/// answer is lost with the request; the same request again under its key gets it. Reads
/// stay in the request's task: dropping them loses nothing.
async fn writes_run_to_their_end(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    match tokio::spawn(next.run(request)).await {
        Ok(response) => response,
        Err(failed) => axum::response::IntoResponse::into_response(ApiError::Internal(format!(
            "the request's handler failed: {failed}"
        ))),
    }
}

/// Every answer is about people and money as of now: no browser or proxy may keep a
/// copy (a household page's names and citizen ids on a shared counter computer, shown
/// again by Back after sign-out).
///
/// Nor may another site show it inside a frame of its own, where a click meant for that
/// site would press a console button: the session cookie's `SameSite=Strict` keeps a
/// cross-site frame signed out today, and these headers keep it so behind a site of the
/// same registrable domain too.
///
/// A page loads nothing but its own style (`console::content_security_policy`), and no
/// answer is read as another type than it says (`nosniff`): markup that ever slipped into
/// a page unescaped could run no script and send no form elsewhere. Where cookies are
/// `Secure` (the console is reached over TLS) the browser is told to use HTTPS only.
async fn no_store(
    cookies: console::session::Cookies,
    mut response: axum::response::Response,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        console::content_security_policy(),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if cookies.secure() {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_str(&format!("max-age={}", console::session::HSTS_MAX_AGE_S))
                .expect("digits"),
        );
    }
    response
}

/// When a request arrived, before it waited for a slot: a handler that must answer before
/// the request's timeout (`Api::request_timeout`) counts from here.
#[derive(Clone, Copy, Debug)]
pub struct Arrived(pub std::time::Instant);

/// Counts each answer by route template (never the path itself: ids would make a series
/// per household) and status, and times it.
async fn count_request(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    // Before the wait for a slot, which the timeout covers: what a handler plans within
    // the timeout starts here.
    request.extensions_mut().insert(Arrived(started));
    let response = next.run(request).await;
    crate::telemetry::http_answered(route, response.status().as_u16(), started.elapsed());
    response
}

/// Serves `api` on `listener` until `shutdown` completes, then lets requests in flight
/// finish. The console's cookies are `Secure` unless `listener` is on loopback
/// (`Api::set_secure_cookies`).
///
/// Not `axum::serve`: it sets hyper no timer, so a connection could take for ever to send
/// its headers (slowloris), and it takes every connection offered. Here each connection
/// has `Api::header_read_timeout` to send a request's headers, and at most
/// `CONNECTIONS_MAX` are served at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let listening = listener.local_addr()?;
    api.set_secure_cookies(!listening.ip().to_canonical().is_loopback());
    let header_read_timeout = api.header_read_timeout();
    let service = hyper_util::service::TowerToHyperService::new(router(api));
    let connections = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    // Tells every connection to finish the request it is on and close.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = connections.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!("http: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_FAILED_REST).await;
                    continue;
                }
            },
        };
        // Answers are small and written whole: no reason to hold one back.
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut http1 = hyper::server::conn::http1::Builder::new();
            http1
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let connection = http1.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                // Errors are a client's (gone, too slow, not HTTP): nothing to do.
                _ = connection.as_mut() => return,
                _ = stopping.wait_for(|stop| *stop) => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection's slot back: the requests in flight are answered.
    let _ = connections.acquire_many(CONNECTIONS_MAX as u32).await;
    Ok(())
}

/// An accept error that concerns the one connection (it was reset before it was
/// accepted): the next accept may well succeed.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// `ansinh serve`: loads the staff file and the gateway registry, binds `listen` and the
/// gateway NATS subjects (docs/GATEWAYS.md, on a connection of their own), and serves
/// both until SIGINT or SIGTERM.
/// One command for both, so an operator cannot run the HTTP gateway routes without
/// the NATS ones or forget either: they share the registry and the ledger side.
pub async fn run(
    runtime: &Runtime,
    listen: SocketAddr,
    staff_file: &Path,
    gateway_registry: &Path,
    checkpoints: &crate::checkpoint::CheckpointConfig,
) -> Result<(), HttpError> {
    // Staff and gateways come from the ledger's directory bucket, followed live; the
    // files of earlier versions are imported into it first.
    let config = runtime.ledger.config();
    let directory = Directory::open(
        runtime.ledger.jetstream(),
        &config.stream_name,
        config.replicas,
    )
    .await?;
    let (staff_imported, gateways_imported) =
        directory.import_files(staff_file, gateway_registry).await?;
    if staff_imported + gateways_imported > 0 {
        eprintln!(
            "ansinh: imported {staff_imported} staff and {gateways_imported} gateway keys from {} and {} into the directory bucket",
            staff_file.display(),
            gateway_registry.display()
        );
    }
    // The claims stream is opened before the first request, not by it: made on a
    // cluster by requests of several processes at once, it stalled their first
    // registrations ~10 s (two JetStream timeouts).
    runtime
        .service()
        .open_claims()
        .await
        .map_err(|e| HttpError::Claims(e.to_string()))?;
    let staff = directory.staff();
    let registry = directory.gateways();
    // One clock for the gateway sink and the staff routes: a result and a recording of
    // the same moment get the same day.
    let clock = crate::clock::system_clock();
    let sink = Arc::new(LedgerSink::new(runtime.service(), clock.clone()));
    let edge = GatewayEdge {
        registry: registry.clone(),
        sink: sink.clone(),
    };
    let api = Api::with_gateways(runtime.service(), staff, Some(edge)).await?;
    api.set_checkpoints(checkpoints.clone());
    api.set_clock(clock);
    if let Some(exited) = runtime.embedded_server() {
        api.set_embedded_server(exited);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| HttpError::Bind {
            addr: listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(HttpError::Serve)?;
    // Bound now, not once the projections have caught up: a process that falls behind
    // later would hold requests all the same, and a lone process would leave the
    // gateways with no responder instead of a typed answer. The sink bounds each
    // request's wait instead (`gateway_ledger::PROJECTIONS_WAIT_MAX`).
    let gateway_server = crate::gateway::server::bind(
        runtime.gateway_connection().await?,
        crate::gateway::DEFAULT_SUBJECT_PREFIX,
        registry.clone(),
        sink,
    )
    .await?;
    eprintln!(
        "ansinh: serving gateways on NATS {}.<id>.post|fetch and on http://{bound}/v1/gateways ({} gateways in the directory bucket)",
        crate::gateway::DEFAULT_SUBJECT_PREFIX,
        registry.current().gateways().len(),
    );
    if bound.ip().to_canonical().is_loopback() {
        eprintln!("ansinh: the web console is at http://{bound}/");
    } else {
        // Its cookies are Secure from here on (`serve`): over plain HTTP from another
        // machine nobody could sign in, and the operator should know why.
        eprintln!(
            "ansinh: the web console is at http://{bound}/, to be reached through a TLS proxy: its cookies are Secure (docs/OPERATIONS.md, section 1a)"
        );
    }
    // Caught before anyone can know we listen (the line below).
    let stopping = stop_signal();
    // Last, and in this form: tests and scripts wait for this line to know it listens.
    eprintln!(
        "ansinh: serving the staff API on http://{bound} ({} staff in the directory bucket)",
        api.staff().len()
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let gateways = tokio::spawn(gateway_server.run(async move {
        let mut stopped = stopped;
        // An error means the sender is gone: stop too.
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let verifier = tokio::spawn(keep_verifying(
        runtime.service(),
        checkpoints.keys_partition.clone(),
    ));
    let served = serve(listener, api, stopping).await;
    verifier.abort();
    // Stop the gateway server whatever ended the HTTP one; it answers what it started.
    // Bounded: with NATS away it could wait for ever to drain its subscriptions.
    let _ = stop.send(true);
    match tokio::time::timeout(SHUTDOWN_STEP_WAIT_MAX, gateways).await {
        Ok(Err(e)) => tracing::error!("the gateway server failed: {e}"),
        Ok(Ok(())) => {}
        // Not eprintln!: whoever read our stderr may have gone (a closed pipe), and a
        // failed write must not turn a clean stop into a panic.
        Err(_) => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "ansinh: the gateway server did not stop within {} s; leaving it",
                SHUTDOWN_STEP_WAIT_MAX.as_secs()
            );
        }
    }
    served.map_err(HttpError::Serve)
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (systemd, containers). Both are caught from
/// this call on, not from the first poll: a signal that comes between "serving" and the
/// first poll would otherwise end the process with the signal's default action.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).ok();
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        async fn wait(s: Option<&mut tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = wait(terminate.as_mut()) => {}
            _ = wait(interrupt.as_mut()) => {}
        }
    }
}
