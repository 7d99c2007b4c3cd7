//! What an operator watches: Prometheus metrics and the log's format.
//!
//! The metrics are recorded with the `metrics` facade wherever the work happens (the
//! writer's commits and refusals, the projector, the HTTP layer, verify); `ansinh serve`
//! installs the Prometheus recorder and answers `GET /metrics` with its text. A command
//! that installs no recorder pays nothing for them. Labels take values from small fixed
//! sets only (partitions, event and refusal type names, route templates, status codes),
//! never ids or amounts, so the number of series stays bounded.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Events appended, by partition and event type (`PaymentRecorded`, `LoanApproved`, ...).
pub const APPENDS: &str = "ansinh_appends_total";
/// Commands refused by the domain, by refusal type (`Overpayment`, `UnknownLoan`, ...).
pub const REFUSALS: &str = "ansinh_refusals_total";
/// Seconds from a commit's publish to its acknowledgement (fsynced, replicated).
pub const COMMIT_SECONDS: &str = "ansinh_commit_seconds";
/// Events per commit (group commit: one message, or one atomic batch of frames).
pub const COMMIT_EVENTS: &str = "ansinh_commit_events";
/// Commits that lost the fence or failed and were tried again, by partition.
pub const COMMIT_RETRIES: &str = "ansinh_commit_retries_total";
/// Messages the log holds that the projections have not applied yet.
pub const PROJECTION_LAG_EVENTS: &str = "ansinh_projection_lag_events";
/// Seconds since the projections last held every message of the log (0 when they do).
pub const PROJECTION_LAG_SECONDS: &str = "ansinh_projection_lag_seconds";
/// The process's resident memory (bytes), read at each scrape. sled keeps ~55 B for each
/// record the projections have written (ADR 0014, "sled's memory, measured again"), so a
/// `serve` that follows a busy log grows with it: this shows by how much.
pub const RESIDENT_BYTES: &str = "ansinh_process_resident_bytes";
/// Events applied to the projections.
pub const PROJECTED: &str = "ansinh_projected_events_total";
/// Seconds since the latest signed checkpoint of a partition, by partition.
pub const CHECKPOINT_AGE_SECONDS: &str = "ansinh_checkpoint_age_seconds";
/// The last verify of the whole log by this process: 1 passed, 0 failed.
pub const VERIFY_LAST_OK: &str = "ansinh_verify_last_ok";
/// When that verify ended (Unix seconds), and how many events it checked.
pub const VERIFY_LAST_UNIX_SECONDS: &str = "ansinh_verify_last_unix_seconds";
pub const VERIFY_LAST_EVENTS: &str = "ansinh_verify_last_events";
/// Stray messages (on a subject that names no partition, in no chain) the last verify
/// passed over: anything above 0 means someone with a publish right on the log's
/// subjects sent what the ledger never writes (docs/OPERATIONS.md).
pub const VERIFY_LAST_STRAY_MESSAGES: &str = "ansinh_verify_last_stray_messages";
/// 1 for each partition this process has stopped appending to (lost acknowledged data, a
/// chain that does not verify, a message held that breaks the chain), by partition; 0
/// once an operator let it go on.
pub const PARTITION_STOPPED: &str = "ansinh_partition_stopped";
/// Jobs whose final state (`done` or `failed`) could not be saved: their record says
/// `running` until it reads as abandoned.
pub const JOB_FINAL_SAVES_LOST: &str = "ansinh_job_final_saves_lost_total";
/// HTTP requests answered, by route template and status code.
pub const HTTP_REQUESTS: &str = "ansinh_http_requests_total";
/// Seconds to answer an HTTP request, by route template.
pub const HTTP_SECONDS: &str = "ansinh_http_request_seconds";
/// Requests holding one of the server's `REQUESTS_IN_FLIGHT_MAX` slots, at the scrape
/// (the scrape's own included): at the bound, more wait for a slot.
pub const HTTP_IN_FLIGHT: &str = "ansinh_http_requests_in_flight";

/// Latency buckets (seconds): a commit is ~1-20 ms, a request up to the 15 s timeout.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
];
/// Commit size buckets (events), up to `MAX_BATCH_EVENTS`-sized commits.
const EVENTS_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder for this process, once; later calls return the same
/// handle. `None` if another recorder was installed first (then nothing is exported).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(COMMIT_EVENTS.into()), EVENTS_BUCKETS)
                });
            let handle = builder.ok()?.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// The exposition text (Prometheus text format 0.0.4), after the recorder's upkeep.
pub fn render() -> String {
    match install() {
        Some(handle) => {
            checkpoint_ages();
            if let Some(bytes) = resident_bytes() {
                gauge!(RESIDENT_BYTES).set(bytes as f64);
            }
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(APPENDS, "Events appended, by partition and event type");
    describe_counter!(REFUSALS, "Commands refused by the domain, by refusal type");
    describe_histogram!(
        COMMIT_SECONDS,
        "Seconds from a commit's publish to its acknowledgement"
    );
    describe_histogram!(COMMIT_EVENTS, "Events per commit");
    describe_counter!(
        COMMIT_RETRIES,
        "Commits tried again (fence lost, NATS error), by partition"
    );
    describe_gauge!(
        PROJECTION_LAG_EVENTS,
        "Messages of the log the projections have not applied"
    );
    describe_gauge!(
        PROJECTION_LAG_SECONDS,
        "Seconds since the projections last held the whole log"
    );
    describe_counter!(PROJECTED, "Events applied to the projections");
    describe_gauge!(
        HTTP_IN_FLIGHT,
        "HTTP requests holding one of the server's in-flight slots (the scrape included)"
    );
    describe_gauge!(RESIDENT_BYTES, "Resident memory of this process, in bytes");
    describe_gauge!(
        CHECKPOINT_AGE_SECONDS,
        "Seconds since the latest signed checkpoint, by partition"
    );
    describe_gauge!(
        VERIFY_LAST_OK,
        "The last verify of the log by this process: 1 passed, 0 failed"
    );
    describe_gauge!(
        VERIFY_LAST_UNIX_SECONDS,
        "When the last verify ended (Unix seconds)"
    );
    describe_gauge!(VERIFY_LAST_EVENTS, "Events the last verify checked");
    describe_gauge!(
        VERIFY_LAST_STRAY_MESSAGES,
        "Messages on no partition's subject the last verify passed over"
    );
    describe_gauge!(
        PARTITION_STOPPED,
        "1 for a partition this process stopped appending to (lost data, a broken chain)"
    );
    describe_counter!(
        JOB_FINAL_SAVES_LOST,
        "Jobs whose final state could not be saved (their record says running)"
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route and status");
    describe_histogram!(HTTP_SECONDS, "Seconds to answer an HTTP request, by route");
}

/// A commit acknowledged: its size, its latency and its events by type.
pub fn committed<'a>(
    partition: &str,
    elapsed: Duration,
    event_types: impl IntoIterator<Item = &'a str>,
) {
    let mut events = 0u64;
    let mut by_type: Vec<(&str, u64)> = Vec::new();
    for t in event_types {
        events += 1;
        match by_type.iter_mut().find(|(name, _)| *name == t) {
            Some((_, n)) => *n += 1,
            None => by_type.push((t, 1)),
        }
    }
    histogram!(COMMIT_SECONDS).record(elapsed.as_secs_f64());
    histogram!(COMMIT_EVENTS).record(events as f64);
    for (t, n) in by_type {
        counter!(APPENDS, "partition" => partition.to_owned(), "type" => t.to_owned()).increment(n);
    }
}

pub fn refused(kind: String) {
    counter!(REFUSALS, "type" => kind).increment(1);
}

pub fn commit_retried(partition: &str) {
    counter!(COMMIT_RETRIES, "partition" => partition.to_owned()).increment(1);
}

pub fn projected(events: u64) {
    counter!(PROJECTED).increment(events);
}

/// A field of this process's /proc/self/status in KiB (e.g. "VmRSS:", "VmHWM:"; Linux,
/// None elsewhere). The benches and probes read their memory through it too.
pub fn status_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn resident_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|kib| kib * 1024)
}

pub fn projection_lag(events: u64, behind_for: Duration) {
    gauge!(PROJECTION_LAG_EVENTS).set(events as f64);
    gauge!(PROJECTION_LAG_SECONDS).set(behind_for.as_secs_f64());
}

/// When each partition's latest checkpoint known to this process was issued (Unix ms).
static CHECKPOINTS: Mutex<BTreeMap<String, i64>> = Mutex::new(BTreeMap::new());

/// The checkpointer published or found a partition's latest checkpoint. Its age (which
/// also grows while a partition is idle, with nothing new to checkpoint) is set at each
/// scrape.
pub fn checkpoint_seen(partition: &str, issued_at_unix_ms: i64) {
    let mut seen = CHECKPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    let at = seen
        .entry(partition.to_owned())
        .or_insert(issued_at_unix_ms);
    *at = (*at).max(issued_at_unix_ms);
}

fn checkpoint_ages() {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let seen = CHECKPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    for (partition, at) in seen.iter() {
        let age = (now_ms - at).max(0) as f64 / 1_000.0;
        gauge!(CHECKPOINT_AGE_SECONDS, "partition" => partition.clone()).set(age);
    }
}

/// How many requests hold one of the server's in-flight slots now.
pub fn http_in_flight(requests: usize) {
    gauge!(HTTP_IN_FLIGHT).set(requests as f64);
}

pub fn verified(ok: bool, events: u64, stray_messages: u64) {
    gauge!(VERIFY_LAST_OK).set(if ok { 1.0 } else { 0.0 });
    gauge!(VERIFY_LAST_EVENTS).set(events as f64);
    gauge!(VERIFY_LAST_STRAY_MESSAGES).set(stray_messages as f64);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    gauge!(VERIFY_LAST_UNIX_SECONDS).set(now.as_secs_f64());
}

/// Partitions reported stopped at an earlier scrape: set back to 0 once let go on.
static STOPPED: Mutex<std::collections::BTreeSet<String>> =
    Mutex::new(std::collections::BTreeSet::new());

/// The partitions this process has stopped now (`Ledger::stopped_partitions`, set at
/// each scrape).
pub fn partitions_stopped<'a>(stopped: impl IntoIterator<Item = &'a str>) {
    let now: std::collections::BTreeSet<String> = stopped.into_iter().map(str::to_owned).collect();
    let mut before = STOPPED.lock().unwrap_or_else(|e| e.into_inner());
    for gone in before.difference(&now) {
        gauge!(PARTITION_STOPPED, "partition" => gone.clone()).set(0.0);
    }
    for p in &now {
        gauge!(PARTITION_STOPPED, "partition" => p.clone()).set(1.0);
    }
    *before = now;
}

/// A job's final state was not saved (`http::jobs`).
pub fn job_final_save_lost() {
    counter!(JOB_FINAL_SAVES_LOST).increment(1);
}

pub fn http_answered(route: String, status: u16, elapsed: Duration) {
    histogram!(HTTP_SECONDS, "route" => route.clone()).record(elapsed.as_secs_f64());
    counter!(HTTP_REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
}

/// How the process writes its log (stderr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, message, fields), for a log
    /// collector.
    Json,
}

/// Sets up the log: level from `RUST_LOG` (default: warnings and errors), on stderr.
pub fn init_logs(format: LogFormat) {
    let rust_log = std::env::var(tracing_subscriber::EnvFilter::DEFAULT_ENV).ok();
    let filter = log_filter(rust_log.as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}

/// What the log lets through, from the value of `RUST_LOG` (None: unset). Without
/// directives, warnings and errors: the embedded server's errors, NATS disconnects and a
/// job taken over by another process are logged as warnings, and an operator who set
/// nothing must still see them (`EnvFilter::from_default_env` would let only errors
/// through). Invalid directives are skipped, each said on stderr.
pub fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing_subscriber::filter::LevelFilter::WARN.into())
        .parse_lossy(rust_log.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::filter::LevelFilter;

    use super::log_filter;

    #[test]
    fn the_log_shows_warnings_unless_rust_log_says_otherwise() {
        assert_eq!(log_filter(None).max_level_hint(), Some(LevelFilter::WARN));
        assert_eq!(
            log_filter(Some("")).max_level_hint(),
            Some(LevelFilter::WARN)
        );
        assert_eq!(
            log_filter(Some("info")).max_level_hint(),
            Some(LevelFilter::INFO)
        );
        assert_eq!(
            log_filter(Some("error")).max_level_hint(),
            Some(LevelFilter::ERROR)
        );
    }
}
