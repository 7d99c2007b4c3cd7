//! A province at its real size, built durably through the ledger on a `sync_interval:
//! always` nats-server of its own, then the read side measured on it:
//!
//! 1. households registered with personal data (citizen claims, sealing) and classified,
//!    monthly assistance granted to one in eight and paid for a year, padded with notes
//!    to `ANSINH_PROVINCE_EVENTS` events: the append rate of each part;
//! 2. the API, started after half the registrations: its first read, once its projections
//!    (empty at start) hold them; then `GET /v1/households/{id}` with 8 clients when the
//!    log holds ~10% of the events and again at the end, once its projections hold the
//!    notes: p50 / p99 (target: p99 <= 10 ms, and within 2x of the first figure);
//! 3. verify beside a projection rebuild and a catch-up of the log's second half (target: at
//!    least 25% of verify, each), on sled configured as the ledger's store configures it; the
//!    projections' heap peak over part of the log and over all of it (target: flat), with
//!    the store's sled cache and with a small one, full at both;
//! 4. HTTP registrations from 64 clients (target >= 10,000/s, p99 <= 20 ms), HTTP
//!    classifications of the same households, each with the CPU time a write costs the
//!    clients (a thread of their own), the rest of this process and nats-server, and the
//!    rate the server side's CPU alone would allow; a payment run of 10,000 instructions
//!    (and, at the end, which of them are due for a timeout: from the projections and
//!    folded from the log);
//! 5. the first command after a restart: from the book snapshot the writer saved when it
//!    closed (target <= 1 s), and on an empty store (a fold from genesis), for comparison.
//!
//! Run it:
//!
//!     cargo bench --bench province                        # 200,000 households, 1,000,000 events
//!     ANSINH_PROVINCE_HOUSEHOLDS=20000 ANSINH_PROVINCE_EVENTS=100000 cargo bench --bench province
//!
//! `ANSINH_PROVINCE_HTTP_WRITES` (20,000) sets how many registrations and reviews each
//! HTTP load posts: more give a steadier CPU figure when comparing two builds.
//!
//! Prints a table of figures beside their targets; docs/BENCH.md quotes it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ansinh::access::{Caller, Role};
use ansinh::chain::Partition;
use ansinh::domain::eligibility::{Area, ClassificationInputs};
use ansinh::domain::ids::HouseholdId;
use ansinh::http::{self, Api, auth::StaffDirectory};
use ansinh::log::{Draft, Ledger, LedgerStore, LogConfig};
use ansinh::nats_server::{NatsServer, Sync};
use ansinh::personal::{PersonalData, Vault};
use ansinh::projection::Projector;
use ansinh::proto::{self, envelope::Payload};
use ansinh::service::{Request, Service};
use rust_decimal::Decimal;
use tokio::task::JoinSet;

/// As in the binary: the writer and the snapshot's decoding allocate a lot.
#[global_allocator]
static GLOBAL: Measured = Measured;

/// mimalloc, counting the bytes allocated less those freed while `COUNTING` is on: the
/// heap a step grows by, which RSS does not tell in a process that has freed a lot
/// before (mimalloc reuses it; the RSS growth of the cold start read 812-1,716 B a
/// household in runs of one build). Off, it costs one relaxed load per call.
struct Measured;
static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static GROWTH: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
/// The most `GROWTH` reached while counting.
static PEAK: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn counted(bytes: i64) {
    use std::sync::atomic::Ordering::Relaxed;
    if COUNTING.load(Relaxed) {
        let now = GROWTH.fetch_add(bytes, Relaxed) + bytes;
        if bytes > 0 {
            PEAK.fetch_max(now, Relaxed);
        }
    }
}

// SAFETY: every call is mimalloc's own, with the caller's arguments; the counting
// touches only two atomics.
unsafe impl std::alloc::GlobalAlloc for Measured {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            counted(layout.size() as i64);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            counted(layout.size() as i64);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: std::alloc::Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(p, layout) };
        counted(-(layout.size() as i64));
    }
    unsafe fn realloc(&self, p: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        let q = unsafe { mimalloc::MiMalloc.realloc(p, layout, new) };
        if !q.is_null() {
            counted(new as i64 - layout.size() as i64);
        }
        q
    }
}

/// The heap `step` grows by (bytes allocated less bytes freed while it runs, by every
/// thread), and its answer.
async fn heap_growth<T>(step: impl std::future::Future<Output = T>) -> (T, i64) {
    let (answer, growth, _) = heap_counted(step).await;
    (answer, growth)
}

/// The heap `step` grows by, the most it grew by at any moment, and its answer.
async fn heap_counted<T>(step: impl std::future::Future<Output = T>) -> (T, i64, i64) {
    use std::sync::atomic::Ordering::SeqCst;
    GROWTH.store(0, SeqCst);
    PEAK.store(0, SeqCst);
    COUNTING.store(true, SeqCst);
    let answer = step.await;
    COUNTING.store(false, SeqCst);
    (answer, GROWTH.load(SeqCst), PEAK.load(SeqCst))
}

/// Bytes this process has passed to `write` calls (`wchar` in /proc/self/io): while a
/// rebuild runs, what sled writes for it.
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar: "))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A projection store as the ledger's store opens one (`STORE_CACHE_BYTES_MAX` of
/// sled's page cache, not sled's default of 1 GiB: with the default, the projections'
/// heap peaked at 704 MiB over this bench's 1,000,000 events, against 241 MiB).
fn projection_db(path: &std::path::Path) -> BenchResult<sled::Db> {
    Ok(sled::Config::new()
        .path(path)
        .cache_capacity(ansinh::log::store::STORE_CACHE_BYTES_MAX)
        .open()?)
}

type BenchError = Box<dyn std::error::Error + Send + std::marker::Sync>;
type BenchResult<T> = Result<T, BenchError>;

/// A sled cache that is full well before half of the bench's log is applied.
const HEAP_SLED_CACHE_SMALL: u64 = 8 << 20;

/// Commands in flight at once while the province is built.
const IN_FLIGHT: usize = 512;
/// Communes of the province (households are spread over them in turn).
const COMMUNES: u32 = 40;
/// Requests each of the 8 readers sends per measurement: 20,000 GETs, about two
/// seconds, so that the p99 (the 200 slowest) is not decided by one background flush of
/// the store lasting a tenth of a second, as it could be with a 0.35 s sample.
const READS_PER_CLIENT: usize = 2_500;
const READERS: usize = 8;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn household(n: u64) -> HouseholdId {
    let commune = 7 + (n % u64::from(COMMUNES)) as u32;
    HouseholdId::parse(&format!("01{commune:05}-{n:06}")).expect("valid id")
}

fn officer() -> Caller {
    Caller {
        id: "staff:bench".into(),
        role: Role::BranchManager,
        unit: "01".into(),
    }
}

fn main() -> BenchResult<()> {
    // RUST_LOG=ansinh=info shows where a restart spends its time.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> BenchResult<()> {
    let households = env_u64("ANSINH_PROVINCE_HOUSEHOLDS", 200_000);
    let events_target = env_u64("ANSINH_PROVINCE_EVENTS", 1_000_000);
    let dir = tempfile::tempdir()?;
    let server = NatsServer::start(&dir.path().join("nats"), Sync::Always)?;
    let config = LogConfig {
        stream_name: "PROVINCE".into(),
        subject_prefix: "province.events".into(),
        replicas: 1,
    };
    let secrets = dir.path().join("secrets.key");
    let service = open_service(&server.url(), &config, dir.path(), &secrets).await?;
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // 1. Registrations with personal data, in two halves: the API starts between them, so
    //    its first GET measurement finds ~10% of the events, then the yearly review.
    let half = households / 2;
    let (registered, seconds) = register(&service, 0, half).await;
    rows.push(row(
        &format!("registrations with personal data, the first half ({registered} of {half})"),
        format!("{:.0}/s", half as f64 / seconds),
        "",
    ));
    let events_after_registrations = count(&service, &config).await?;

    // The first GET measurement.
    let (directory, token, officer_token) = staff(dir.path())?;
    let api_started = Instant::now();
    let api = Api::new(service.clone(), directory).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(http::serve(listener, api, async {
        let _ = stopped.await;
    }));
    // The API's projections start empty here: its first read waits (503 after
    // READ_WAIT_MAX, then again) until they hold every event, which says how fast they
    // catch up with a burst of writes. The reads measured next find them current.
    first_read(&base, &token).await?;
    rows.push(row(
        &format!("the API's first GET, once its projections (empty at start) caught up with {events_after_registrations} events"),
        format!("{:.1} s", api_started.elapsed().as_secs_f64()),
        "",
    ));
    let (p50, p99, unanswered) = gets(&base, &token, half).await?;
    rows.push(row(
        &format!("GET /v1/households/{{id}}, 8 clients, at {events_after_registrations} events: p50 / p99 (not answered)"),
        format!("{p50:.2} / {p99:.2} ms ({unanswered})"),
        "p99 <= 10 ms",
    ));
    let early_p99 = p99;

    let (registered, seconds) = register(&service, half, households).await;
    rows.push(row(
        &format!(
            "registrations with personal data, the second half ({registered} of {}), the API's projector following",
            households - half
        ),
        format!("{:.0}/s", (households - half) as f64 / seconds),
        "",
    ));
    // The HTTP loads below measure the write path with the projector following their own
    // writes only, as before the split: the backlog of the second half is applied first.
    let caught_up = Instant::now();
    first_read(&base, &token).await?;
    rows.push(row(
        "the API's projections catching up with the second half",
        format!("{:.1} s", caught_up.elapsed().as_secs_f64()),
        "",
    ));

    // HTTP registrations: 64 clients, each household with personal data and two citizens.
    let server_pid = server.pid().to_string();
    let requests = http_registrations(households)?;
    let (registrations, cpu) = cpu_per_write(
        &server_pid,
        &service,
        http_writes(&base, &officer_token, requests),
    )
    .await;
    let registrations = registrations?;
    rows.push(row(
        &format!(
            "HTTP registrations, {HTTP_CLIENTS} clients, two citizens each ({}): rate / p99",
            http_writes_count()
        ),
        format!(
            "{:.0}/s / {:.1} ms",
            registrations.rate, registrations.p99_ms
        ),
        ">= 10,000/s, p99 <= 20 ms",
    ));
    rows.push(row(
        "CPU per HTTP registration: the clients' thread / the rest of this process (API, projector, ledger) / nats-server; the machine idle; registrations per message on the event / claims stream",
        cpu.row(),
        "",
    ));
    rows.push(row(
        "HTTP registrations the server side's CPU would allow on this machine's cores, the clients elsewhere (a bound, not measured)",
        cpu.server_bound(),
        "",
    ));
    let requests = http_classifications(households)?;
    let (classifications, cpu) = cpu_per_write(
        &server_pid,
        &service,
        http_writes(&base, &officer_token, requests),
    )
    .await;
    let classifications = classifications?;
    rows.push(row(
        &format!(
            "HTTP classifications, {HTTP_CLIENTS} clients ({}): rate / p99",
            http_writes_count()
        ),
        format!(
            "{:.0}/s / {:.1} ms",
            classifications.rate, classifications.p99_ms
        ),
        "",
    ));
    rows.push(row(
        "CPU per HTTP classification: the clients' thread / the rest of this process / nats-server; the machine idle; classifications per message on the event / claims stream",
        cpu.row(),
        "",
    ));

    let started = Instant::now();
    let classified = in_flight(households, |n| {
        let service = service.clone();
        async move {
            let key = format!("review-{n}");
            let caller = officer();
            let req = request(&caller, &key);
            let inputs = ClassificationInputs {
                income_per_person_month: Decimal::from(1_200_000 + (n % 7) * 300_000),
                area: Area::Rural,
                deprived: ["employment", "nutrition", "drinking_water"]
                    .into_iter()
                    .take((n % 4) as usize)
                    .map(String::from)
                    .collect(),
                review_year: 2026,
            };
            service
                .classify(
                    &req,
                    &household(n),
                    inputs,
                    "2026-01-10".parse().unwrap(),
                    None,
                )
                .await
                .is_ok()
        }
    })
    .await;
    rows.push(row(
        &format!("classifications ({classified})"),
        format!(
            "{:.0}/s",
            households as f64 / started.elapsed().as_secs_f64()
        ),
        "",
    ));

    // A payment run of 10,000 instructions: entitlements for every household of two
    // communes (5,000 each), both budgets allocated, then one run of the partition.
    let (instructions, seconds) = payment_run(&service, households).await?;
    rows.push(row(
        &format!("a payment run of {instructions} instructions (one command, all or none)"),
        format!("{seconds:.2} s"),
        "",
    ));

    // Padding to the event target with notes (the ledger's own append path).
    let so_far = count(&service, &config).await?;
    let notes = events_target.saturating_sub(so_far);
    let started = Instant::now();
    let partition = Partition::new("01")?;
    in_flight(notes, |n| {
        let (ledger, partition) = (service.ledger.clone(), partition.clone());
        async move {
            ledger
                .append(Draft {
                    partition,
                    actor: proto::Actor {
                        id: "staff:bench".into(),
                        role: "operator".into(),
                        unit: String::new(),
                    },
                    idempotency_key: format!("note-{n}"),
                    correlation_id: String::new(),
                    request_fingerprint: None,
                    subjects: vec![format!("household:{}", household(n % households))],
                    payload: Payload::Note(proto::Note {
                        text: "field visit: house repaired after the storm".into(),
                    }),
                })
                .await
                .is_ok()
        }
    })
    .await;
    rows.push(row(
        &format!("notes, durable appends ({notes})"),
        format!(
            "{:.0}/s",
            notes as f64 / started.elapsed().as_secs_f64().max(1e-9)
        ),
        "",
    ));
    let events = count(&service, &config).await?;

    // 2. GET at the end, once the API's projections hold the notes (appended through the
    // ledger, not the API, so they caught up while the notes were written and after).
    let caught_up = Instant::now();
    first_read(&base, &token).await?;
    rows.push(row(
        &format!(
            "the API's first GET after the notes, once its projections caught up ({events} events)"
        ),
        format!("{:.1} s", caught_up.elapsed().as_secs_f64()),
        "",
    ));
    let (p50, p99, unanswered) = gets(&base, &token, households).await?;
    rows.push(row(
        &format!(
            "GET /v1/households/{{id}}, 8 clients, at {events} events: p50 / p99 (not answered)"
        ),
        format!("{p50:.2} / {p99:.2} ms ({unanswered})"),
        "p99 <= 10 ms",
    ));
    rows.push(row(
        "GET p99 at the end / at the first measurement",
        format!("{:.2}x", p99 / early_p99),
        "<= 2x",
    ));
    // 2b. An inclusion proof of an early event at a checkpoint of the whole partition:
    // served from the projections' stored subtrees and two chunks (ADR 0026), against
    // the same document from the partition's whole chain.
    let proof = inclusion_proofs(&service, &server.url(), dir.path(), &base, &token).await?;
    rows.push(row(
        &format!(
            "inclusion proof of event 1 at a checkpoint of {} events: over HTTP from the stored subtrees / from the whole chain",
            proof.tree_size
        ),
        format!("{:.1} ms / {:.2} s", proof.served_s * 1e3, proof.full_s),
        "O(log n)",
    ));
    let _ = stop.send(());
    let _ = serving.await;

    // 2a. Which of the run's instructions are due for a timeout, on their first due day:
    // read from the projections (`payments timeouts`), against the fold of the partition's
    // payments from the log that found them before.
    let (projected, due, folded) = due_for_timeout(&service, &config, instructions).await?;
    rows.push(row(
        &format!(
            "instructions due for a timeout ({due}), at {events} events: from the projections / folded from the log"
        ),
        format!("{:.1} ms / {:.2} s", projected * 1e3, folded),
        "O(result)",
    ));

    // 3. Verify beside a rebuild and a catch-up of the same log.
    let mut stream = service.ledger.stream().clone();
    let started = Instant::now();
    let report = ansinh::verify::verify(
        &mut stream,
        &config,
        &ansinh::checkpoint::CheckpointConfig::default().keys_partition,
        None,
        |_| {},
    )
    .await?;
    let verify_rate = report.events as f64 / started.elapsed().as_secs_f64();
    let path = dir.path().join("rebuild");
    let db = projection_db(&path)?;
    let fresh = Projector::open(&db, &path)?;
    let started = Instant::now();
    let written = written_bytes();
    let threads = common::thread_cpu_seconds();
    let idle = common::machine_idle_seconds();
    let rebuilt = fresh.rebuild(&mut stream, &config).await?;
    let rebuild_seconds = started.elapsed().as_secs_f64();
    // What the rebuild's threads, waiting on each other, left of the cores (ADR 0016).
    let idle = percent(idle_share(idle, rebuild_seconds));
    let rebuild_rate = rebuilt as f64 / rebuild_seconds;
    let written = written_bytes().saturating_sub(written);
    // Where the rebuild's CPU went, by thread: this one applies the events, the
    // projector's commit thread writes the batches, the runtime's workers read the log
    // ahead and hash it. Their sum against the wall time times the cores says how much
    // of the machine the rebuild used.
    let now = common::thread_cpu_seconds();
    let spent = |name: &str| common::thread_cpu_spent(&threads, &now, name);
    // `block_on`'s thread, named after the binary by the kernel.
    let this_thread = std::fs::read_to_string("/proc/thread-self/comm")
        .map(|n| n.trim().to_string())
        .unwrap_or_default();
    let rebuild_cpu = format!(
        "{:.2} / {:.2} / {:.2} s in {rebuild_seconds:.2} s; {idle}",
        spent(&this_thread),
        spent("projection-comm"),
        spent("tokio-rt-worker"),
    );
    rows.push(row(
        &format!("verify ({} events)", report.events),
        format!("{verify_rate:.0} events/s"),
        "",
    ));
    rows.push(row(
        "projection rebuild, same log",
        format!(
            "{rebuild_rate:.0} events/s ({:.1}%)",
            100.0 * rebuild_rate / verify_rate
        ),
        ">= 25% of verify",
    ));
    rows.push(row(
        "the rebuild's CPU: applying / committing / reading the log, and its wall time; the machine idle",
        rebuild_cpu,
        "",
    ));
    rows.push(row(
        "bytes the rebuild wrote, per event applied",
        format!("{:.0} B", written as f64 / rebuilt.max(1) as f64),
        "",
    ));
    // A catch-up: a store that holds the first half of the log applies the second half,
    // as a process does after a pause.
    let end = ansinh::log::reader::last_stream_sequence(&mut stream).await?;
    let path = dir.path().join("catch-up");
    let db = projection_db(&path)?;
    let behind = Projector::open(&db, &path)?;
    behind.catch_up_to(&mut stream, &config, end / 2).await?;
    let started = Instant::now();
    let caught_up = behind.catch_up(&mut stream, &config).await?;
    let catch_up_rate = caught_up as f64 / started.elapsed().as_secs_f64();
    rows.push(row(
        &format!("projection catch-up of the second half ({caught_up} events), same log"),
        format!(
            "{catch_up_rate:.0} events/s ({:.1}%)",
            100.0 * catch_up_rate / verify_rate
        ),
        ">= 25% of verify",
    ));
    // The projector's memory, against the log's length: the heap's peak while a store
    // applies the first half of the log's messages from empty, and while another applies
    // all of them (not timed: counting costs each allocation two atomics). Twice: with
    // the store's sled cache, which fills between the two, and with one small enough to
    // be full at both, which leaves what grows with the log, if anything.
    let mib = |bytes: i64| format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0));
    let mut table_bytes = 0;
    for cache in [None, Some(HEAP_SLED_CACHE_SMALL)] {
        let mut peaks = Vec::new();
        for upto in [Some(end / 2), None] {
            let path = dir.path().join(format!("heap-{cache:?}-{upto:?}"));
            let db = match cache {
                None => projection_db(&path)?,
                Some(bytes) => sled::Config::new()
                    .path(&path)
                    .cache_capacity(bytes)
                    .open()?,
            };
            let projector = Projector::open(&db, &path)?;
            let (applied, _, peak) = match upto {
                Some(upto) => heap_counted(projector.catch_up_to(&mut stream, &config, upto)).await,
                None => heap_counted(projector.rebuild(&mut stream, &config)).await,
            };
            peaks.push((applied?, peak));
            table_bytes = projector.trail_table_bytes();
        }
        let cache = match cache {
            None => "the store's sled cache".to_string(),
            Some(bytes) => format!("a sled cache of {}", mib(bytes as i64)),
        };
        rows.push(row(
            &format!(
                "projections' heap peak while applying {} / {} events from empty, {cache}",
                peaks[0].0, peaks[1].0
            ),
            format!("{} / {}", mib(peaks[0].1), mib(peaks[1].1)),
            "flat in log length",
        ));
    }
    rows.push(row(
        "the trail's index on disk (a file in the page cache, not heap), all events",
        mib(table_bytes as i64),
        "",
    ));

    // 4. The first command after a restart. The ledger closes as a command or `serve`
    // does at its end: each writer saves its book. A process on the same store then
    // starts from that snapshot; a process on an empty store folds the whole chain.
    let ledger = service.ledger.clone();
    drop(service);
    ledger.close().await?;
    let same_store = open_service(&server.url(), &config, dir.path(), &secrets).await?;
    // `serve` opens the citizen claims before it takes a request: folded here too, and
    // timed on its own (a row below).
    same_store.open_claims().await?;
    let first = first_command(&same_store, households, "after-restart").await?;
    rows.push(row(
        &format!("first command after a restart, {events} events (book from its snapshot)"),
        format!("{first:.2} s"),
        "<= 1 s",
    ));
    // A gateway's first fetch after the restart: from the projections, against the
    // payments books folded from the whole log (the reports' way).
    let sink = ansinh::gateway_ledger::LedgerSink::new(
        same_store.clone(),
        ansinh::gateway_ledger::system_clock(),
    );
    let started = Instant::now();
    let fetched = sink.pending("VCB", "", 100).await?;
    let fetch = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let folded = sink
        .with_books(|books| books.values().map(|b| b.instructions.len()).sum::<usize>())
        .await?;
    let fold = started.elapsed().as_secs_f64();
    rows.push(row(
        &format!(
            "a gateway's first fetch after a restart ({} instructions; the books of {folded} folded from the log instead)",
            fetched.len()
        ),
        format!("{:.1} ms ({:.2} s)", fetch * 1000.0, fold),
        "O(result)",
    ));
    let restarted = open_service(
        &server.url(),
        &config,
        &dir.path().join("restart"),
        &secrets,
    )
    .await?;
    // Every citizen claimed (one a household, two each HTTP registration), folded from
    // the claims stream as `serve` does at start: its time and its heap on their own.
    let started = Instant::now();
    let (opened, claims_heap) = heap_growth(restarted.open_claims()).await;
    opened?;
    let claims_open = started.elapsed().as_secs_f64();
    let citizens = households + 2 * http_writes_count();
    let (first, book_heap) = heap_growth(first_command(
        &restarted,
        households + 1,
        "after-restart-cold",
    ))
    .await;
    let first = first?;
    rows.push(row(
        &format!("first command on an empty store, {events} events (fold from genesis)"),
        format!("{first:.2} s"),
        "",
    ));
    rows.push(row(
        "writer's book per household (heap growth of that first command / households)",
        format!("{:.0} B", book_heap as f64 / households as f64),
        "",
    ));
    rows.push(row(
        &format!(
            "citizen claims opened at start: {citizens} folded from their stream; heap per citizen"
        ),
        format!(
            "{claims_open:.2} s; {:.0} B",
            claims_heap as f64 / citizens as f64
        ),
        "",
    ));
    let snapshot = std::fs::metadata(ansinh::log::snapshot::path(
        &dir.path().join("ledger.sled"),
        "01",
    ))?
    .len();
    rows.push(row(
        "the book's snapshot on disk, per household",
        format!("{:.0} B", snapshot as f64 / households as f64),
        "",
    ));

    println!("| figure | value | target |");
    println!("|---|---|---|");
    for (figure, value, target) in rows {
        println!("| {figure} | {value} | {target} |");
    }
    Ok(())
}

/// What `inclusion_proofs` measured.
struct ProofTimes {
    tree_size: u64,
    served_s: f64,
    full_s: f64,
}

/// Publishes a checkpoint of partition 01, then times the inclusion proof of its first
/// event over HTTP (from the projections' stored subtrees) and from the whole chain
/// (`Auditor::prove`, as `audit prove` builds it), and checks they are the same
/// document.
async fn inclusion_proofs(
    service: &Service,
    url: &str,
    dir: &std::path::Path,
    base: &str,
    token: &str,
) -> BenchResult<ProofTimes> {
    use ansinh::checkpoint::{Auditor, CheckpointConfig, Checkpointer, Outcome};
    let client = ansinh::app::connect(url, &ansinh::app::NatsAuth::default()).await?;
    let config = CheckpointConfig::default();
    let partition = Partition::new("01")?;
    let keys = dir.join("checkpoint-keys");
    std::fs::create_dir_all(&keys)?;
    let mut checkpointer = Checkpointer::open(
        client.clone(),
        service.ledger.clone(),
        config.clone(),
        keys.as_path(),
    )
    .await?;
    let tree_size = match checkpointer.checkpoint(&partition).await? {
        Outcome::Published(p) => p.body.tree_size,
        other => return Err(format!("no checkpoint published: {other:?}").into()),
    };
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(format!(
            "{base}/v1/audit/partitions/01/proofs/inclusion?seq=1"
        ))
        .bearer_auth(token)
        .timeout(Duration::from_secs(600))
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(format!("the inclusion proof: {}", response.status()).into());
    }
    let served = response.bytes().await?;
    let served_s = started.elapsed().as_secs_f64();
    let auditor = Auditor::open(client, service.ledger.config().clone(), config).await?;
    let started = Instant::now();
    let full = auditor.prove(&partition, 1, None).await?;
    let full_s = started.elapsed().as_secs_f64();
    if serde_json::to_vec(&full)? != served.as_ref() {
        return Err("the served proof is not the one built from the whole chain".into());
    }
    Ok(ProofTimes {
        tree_size,
        served_s,
        full_s,
    })
}

/// Registers household `n` through `service`; the seconds it took.
async fn first_command(service: &Service, n: u64, key: &str) -> BenchResult<f64> {
    let started = Instant::now();
    let caller = officer();
    let req = request(&caller, key);
    service
        .register(
            &req,
            &household(n),
            Area::Rural,
            "2026-06-01".parse().unwrap(),
            &PersonalData {
                head_name: "Lê Văn An".into(),
                head_citizen_id: format!("0012{n:08}"),
                phone: None,
                account_number: None,
                members: vec![],
            },
        )
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

fn row(figure: &str, value: String, target: &str) -> (String, String, String) {
    eprintln!("{figure}: {value}");
    (figure.to_string(), value, target.to_string())
}

/// A ledger process with its own store in `dir`; every process of the ledger is given
/// the same `secrets` file.
async fn open_service(
    url: &str,
    config: &LogConfig,
    dir: &std::path::Path,
    secrets: &std::path::Path,
) -> BenchResult<Service> {
    std::fs::create_dir_all(dir)?;
    let client = ansinh::app::connect(url, &ansinh::app::NatsAuth::default()).await?;
    let store = LedgerStore::open(&dir.join("ledger.sled"))?;
    let (ledger, _) = Ledger::open(client, config.clone(), store).await?;
    let vault = Arc::new(Vault::open(ledger.jetstream(), &config.stream_name, 1, secrets).await?);
    let projector = Arc::new(Projector::of_store(ledger.store())?);
    Ok(Service::new(ledger, vault, projector))
}

/// The staff file of the bench: one auditor of the province, and its token.
fn staff(dir: &std::path::Path) -> BenchResult<(StaffDirectory, String, String)> {
    let path = dir.join(http::STAFF_FILE);
    let token = http::auth::add_staff(&path, "staff:reader", Role::Auditor, "01")?;
    let officer = http::auth::add_staff(&path, "staff:registrar", Role::BranchManager, "01")?;
    Ok((StaffDirectory::load(&path)?, token, officer))
}

/// Clients posting registrations at once, and how many they post in all.
const HTTP_CLIENTS: usize = 64;
/// 20,000 unless `ANSINH_PROVINCE_HTTP_WRITES` says otherwise (more, to compare two
/// builds' CPU a write over a longer load).
fn http_writes_count() -> u64 {
    env_u64("ANSINH_PROVINCE_HTTP_WRITES", 20_000)
}

/// One HTTP write of the load: path, idempotency key and body of the `i`-th request.
type HttpWrite = (String, String, serde_json::Value);

/// What one HTTP load step measured: writes a second, p99 in ms, and the CPU seconds the
/// clients' thread spent.
struct HttpLoad {
    rate: f64,
    p99_ms: f64,
    clients_cpu: Option<f64>,
}

/// A write encoded ahead: path, idempotency key, body.
type EncodedWrite = (String, hyper::http::HeaderValue, bytes::Bytes);

/// The `http_writes_count()` writes of a load, encoded before it starts (and before its CPU
/// is counted).
fn encode_writes(write: impl Fn(u64) -> HttpWrite) -> BenchResult<Vec<EncodedWrite>> {
    let count = http_writes_count();
    let mut requests = Vec::with_capacity(count as usize);
    for i in 0..count {
        let (path, key, body) = write(i);
        requests.push((
            path,
            hyper::http::HeaderValue::from_str(&key)?,
            bytes::Bytes::from(serde_json::to_vec(&body)?),
        ));
    }
    Ok(requests)
}

/// `requests` as HTTP writes from `HTTP_CLIENTS` clients, each on its own keep-alive
/// connection and sending its next write when the last is answered; every one must
/// succeed.
///
/// The clients share this 2-core machine with the server, so they are kept as lean as
/// `wrk` is: each request is encoded before the load starts, and sent on a bare HTTP/1.1
/// connection (hyper), not through reqwest, whose pool, URL parsing and JSON encoding
/// per request cost more CPU than the API's own HTTP layer did in a profile of this step.
/// They run on a thread of their own (one core's runtime, as `wrk` runs a thread a core),
/// whose CPU time is counted apart from the API's: what a registration costs the server
/// side, whose clients would be on other machines in a deployment.
async fn http_writes(
    base: &str,
    token: &str,
    requests: Vec<EncodedWrite>,
) -> BenchResult<HttpLoad> {
    let address = base.trim_start_matches("http://").to_string();
    let authorization = hyper::http::HeaderValue::from_str(&format!("Bearer {token}"))?;
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("http-clients".into())
        .spawn(move || {
            let load = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(BenchError::from)
                .and_then(|runtime| {
                    let before = common::cpu_seconds("thread-self");
                    let out = runtime.block_on(http_clients(address, authorization, requests));
                    let clients_cpu = before
                        .zip(common::cpu_seconds("thread-self"))
                        .map(|(b, a)| a - b);
                    out.map(|(rate, p99_ms)| HttpLoad {
                        rate,
                        p99_ms,
                        clients_cpu,
                    })
                });
            let _ = done.send(load);
        })?;
    result
        .await
        .map_err(|_| "the HTTP clients' thread ended early")?
}

/// The clients of `http_writes`, on the runtime of their thread: (writes/s, p99 ms).
async fn http_clients(
    address: String,
    authorization: hyper::http::HeaderValue,
    requests: Vec<EncodedWrite>,
) -> BenchResult<(f64, f64)> {
    use http_body_util::{BodyExt, Full};
    use hyper::http::{Request as HttpRequest, header};
    let requests = Arc::new(requests);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut connections = Vec::with_capacity(HTTP_CLIENTS);
    for _ in 0..HTTP_CLIENTS {
        let stream = tokio::net::TcpStream::connect(&address).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        connections.push(sender);
    }
    let started = Instant::now();
    let mut set = JoinSet::new();
    for mut sender in connections {
        let (requests, next, authorization, host) = (
            requests.clone(),
            next.clone(),
            authorization.clone(),
            address.clone(),
        );
        set.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((path, key, body)) = requests.get(i as usize) else {
                    break;
                };
                let request = HttpRequest::post(path.as_str())
                    .header(header::HOST, host.as_str())
                    .header(header::AUTHORIZATION, authorization.clone())
                    .header("idempotency-key", key.clone())
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(body.clone()))
                    .expect("a request of valid parts");
                let sent = Instant::now();
                let Ok(Ok(response)) =
                    tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
                        .await
                else {
                    break;
                };
                let ok = response.status().is_success();
                // The body is read to its end, so the connection can carry the next request.
                if response.into_body().collect().await.is_err() {
                    break;
                }
                if ok {
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
            }
            latencies
        });
    }
    let mut all = Vec::new();
    while let Some(l) = set.join_next().await {
        all.extend(l?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let wanted = http_writes_count();
    if all.len() as u64 != wanted {
        return Err(format!("{} of {wanted} writes succeeded", all.len()).into());
    }
    all.sort_by(f64::total_cmp);
    let p99 = all[((all.len() - 1) as f64 * 0.99).round() as usize];
    Ok((all.len() as f64 / seconds, p99))
}

/// The machine's cores.
fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// The share of the machine's cores left idle (or waiting on the disk) over the last
/// `seconds`, from `machine_idle_seconds` taken at their start.
fn idle_share(before: Option<f64>, seconds: f64) -> Option<f64> {
    before
        .zip(common::machine_idle_seconds())
        .map(|(b, a)| (a - b) / (cores() * seconds))
}

/// `share` as a whole percentage, "?" when unknown.
fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "?".to_string(), |v| format!("{:.0}%", 100.0 * v))
}

/// What one HTTP load step cost in CPU, per write.
struct WriteCpu {
    /// The clients' thread, the rest of this process (the API, its projector and the
    /// ledger), nats-server: µs a write.
    clients: Option<f64>,
    api: Option<f64>,
    nats: Option<f64>,
    /// The share of the machine's cores left idle (or waiting on the disk) meanwhile.
    idle: Option<f64>,
    /// Writes per message stored on the event stream (a commit's frame) and on the claims
    /// stream: each message is one fsync of nats-server's, and a cost of every stage per
    /// commit, so these say how much the group commits gathered.
    per_frame: Option<(Option<f64>, Option<f64>)>,
}

impl WriteCpu {
    fn row(&self) -> String {
        let us = |v: Option<f64>| v.map_or_else(|| "?".to_string(), |v| format!("{v:.0}"));
        let idle = percent(self.idle);
        let frames = self.per_frame.map_or_else(
            || "?".to_string(),
            |(events, claims)| {
                let per =
                    |v: Option<f64>| v.map_or_else(|| "none".to_string(), |v| format!("{v:.1}"));
                format!("{} / {}", per(events), per(claims))
            },
        );
        format!(
            "{} / {} / {} µs; {idle}; {frames}",
            us(self.clients),
            us(self.api),
            us(self.nats)
        )
    }

    /// Writes a second that this machine's cores would serve if the server side (the API
    /// and nats-server) had them all and every one were busy: the bound its CPU sets, with
    /// the clients elsewhere, as in a deployment.
    fn server_bound(&self) -> String {
        match (self.api, self.nats) {
            (Some(api), Some(nats)) if api + nats > 0.0 => {
                format!("{:.0}/s", cores() * 1e6 / (api + nats))
            }
            _ => "?".to_string(),
        }
    }
}

/// Runs one HTTP load step and says the CPU time it cost per write: in the clients'
/// thread, in the rest of this process (the API, the projector and the ledger) and in
/// nats-server. Steadier than the rate on a host whose speed moves between runs, so it
/// shows what a change saved. Also the share of the machine's cores left idle (or
/// waiting on the disk) meanwhile: a step bound by CPU alone leaves none.
async fn cpu_per_write(
    server_pid: &str,
    service: &Service,
    step: impl std::future::Future<Output = BenchResult<HttpLoad>>,
) -> (BenchResult<HttpLoad>, WriteCpu) {
    let stored_before = stored_messages(service).await;
    let started = Instant::now();
    let idle = common::machine_idle_seconds();
    let before = (common::cpu_seconds("self"), common::cpu_seconds(server_pid));
    let out = step.await;
    let after = (common::cpu_seconds("self"), common::cpu_seconds(server_pid));
    let stored_after = stored_messages(service).await;
    let writes = http_writes_count() as f64;
    let per_frame = stored_before.zip(stored_after).map(|((e0, c0), (e1, c1))| {
        let per = |n: u64| (n > 0).then(|| writes / n as f64);
        (per(e1 - e0), per(c1 - c0))
    });
    let idle = idle_share(idle, started.elapsed().as_secs_f64());
    let per_write = |seconds: f64| seconds * 1e6 / http_writes_count() as f64;
    let clients = out.as_ref().ok().and_then(|l| l.clients_cpu);
    let process = before.0.zip(after.0).map(|(b, a)| a - b);
    let cpu = WriteCpu {
        clients: clients.map(per_write),
        api: process
            .zip(clients)
            .map(|(process, clients)| per_write(process - clients)),
        nats: before.1.zip(after.1).map(|(b, a)| per_write(a - b)),
        idle,
        per_frame,
    };
    (out, cpu)
}

/// Messages stored so far on the event stream and on the citizen claims stream.
async fn stored_messages(service: &Service) -> Option<(u64, u64)> {
    let mut events = service.ledger.stream().clone();
    let events = events.info().await.ok()?.state.messages;
    let name = format!(
        "{}_CLAIMS",
        service.ledger.stream().cached_info().config.name
    );
    let claims = service.ledger.jetstream().get_stream(name).await.ok()?;
    Some((events, claims.cached_info().state.messages))
}

/// The household of the `i`-th HTTP registration.
fn http_household(first: u64, i: u64) -> u64 {
    first + 1_000 + i
}

/// Registrations over HTTP, each household with personal data and two citizens.
fn http_registrations(first: u64) -> BenchResult<Vec<EncodedWrite>> {
    encode_writes(move |i| {
        let n = http_household(first, i);
        let body = serde_json::json!({
            "household_id": household(n).to_string(),
            "area": "rural",
            "registered_on": "2026-02-01",
            "personal": {
                "head_name": "Nguyễn Thị Hạnh",
                "head_citizen_id": format!("0013{n:08}"),
                "members": [
                    {"name": "Trần Văn Nam", "citizen_id": format!("0014{n:08}"), "relation": "spouse"}
                ]
            }
        });
        ("/v1/households".to_string(), format!("http-reg-{n}"), body)
    })
}

/// The yearly review over HTTP of the households `http_registrations` registered: a
/// write with no personal data, so no citizen claim and no data key.
fn http_classifications(first: u64) -> BenchResult<Vec<EncodedWrite>> {
    encode_writes(move |i| {
        let n = http_household(first, i);
        let body = serde_json::json!({
            "income_per_person": "1500000",
            "area": "rural",
            "deprived": ["employment", "nutrition"],
            "review_year": 2026,
            "decided_on": "2026-02-10"
        });
        (
            format!("/v1/households/{}/classifications", household(n)),
            format!("http-review-{n}"),
            body,
        )
    })
}

/// Entitlements granted for the payment run (two communes of the province).
const RUN_ENTITLEMENTS: u64 = 10_000;

/// Grants RUN_ENTITLEMENTS entitlements (households of the first two communes; fewer in
/// a smaller province), allocates both communes' budgets, then times one run of the
/// partition. Returns (instructions, seconds).
async fn payment_run(service: &Service, households: u64) -> BenchResult<(u64, f64)> {
    use ansinh::domain::payments::CommandKind;
    use ansinh::domain::payments::budget::BudgetKey;
    use ansinh::domain::payments::entitlements::{Channel, Terms};
    use ansinh::domain::payments::ids::{
        BeneficiaryRef, CategoryId, CommuneId, GatewayId, HouseholdRef, MemberRef, ProgrammeId,
    };
    use ansinh::domain::payments::month::Month;
    let partition = Partition::new("01")?;
    let period = Month::parse("2026-10")?;
    let programme = ProgrammeId::parse("SOCIAL_ASSISTANCE_MONTHLY")?;
    let on: chrono::NaiveDate = "2026-10-01".parse()?;
    // Households n with n % COMMUNES in {0, 1} live in communes 0100007 and 0100008.
    let chosen: Vec<u64> = (0..households)
        .filter(|n| n % u64::from(COMMUNES) < 2)
        .take(RUN_ENTITLEMENTS as usize)
        .collect();
    let entitlements = chosen.len() as u64;
    let chosen = Arc::new(chosen);
    let granted = in_flight(entitlements, |i| {
        let (service, chosen, partition) = (service.clone(), chosen.clone(), partition.clone());
        let programme = programme.clone();
        async move {
            let h = household(chosen[i as usize]);
            let commune = h.commune().as_str().to_string();
            let grant = CommandKind::Grant {
                programme,
                beneficiary: BeneficiaryRef {
                    household: HouseholdRef::parse(h.as_str()).expect("household"),
                    member: MemberRef::parse("m1").expect("member"),
                },
                commune: CommuneId::parse(&commune).expect("commune"),
                from: period,
                terms: Terms {
                    category: CategoryId::parse("ELDERLY_80_PLUS_NO_PENSION").expect("category"),
                    channel: Channel::BankAccount {
                        gateway: GatewayId::parse("VCB").expect("gateway"),
                    },
                    provincial_base: None,
                },
                citizen: None,
            };
            let caller = officer();
            let key = format!("grant-{i}");
            let req = request(&caller, &key);
            service.payment(&req, &partition, grant, on).await.is_ok()
        }
    })
    .await;
    if granted != entitlements {
        return Err(format!("{granted} of {entitlements} entitlements granted").into());
    }
    let caller = officer();
    for commune in ["0100007", "0100008"] {
        let key = format!("allocate-{commune}");
        let req = request(&caller, &key);
        let allocate = CommandKind::Allocate {
            budget: BudgetKey {
                programme: programme.clone(),
                commune: CommuneId::parse(commune)?,
                period,
            },
            amount: Decimal::from(1_000_000_000_000i64),
        };
        service.payment(&req, &partition, allocate, on).await?;
    }
    let req = request(&caller, "run-2026-10");
    let started = Instant::now();
    service
        .payment(
            &req,
            &partition,
            CommandKind::Run {
                period,
                commune: None,
            },
            "2026-10-05".parse()?,
        )
        .await?;
    Ok((entitlements, started.elapsed().as_secs_f64()))
}

/// The payment run's instructions due for a timeout on their first due day (issued
/// 2026-10-05 by bank: due 2026-10-15), found from the projections and by folding the
/// partition's payments from the log; the seconds each took. Both must find all
/// `instructions` of the run.
async fn due_for_timeout(
    service: &Service,
    config: &LogConfig,
    instructions: u64,
) -> BenchResult<(f64, usize, f64)> {
    let as_of: chrono::NaiveDate = "2026-10-15".parse()?;
    let partition = Partition::new("01")?;
    let mut stream = service.ledger.stream().clone();
    service.projector.catch_up(&mut stream, config).await?;
    let started = Instant::now();
    let due = service.projector.due_for_timeout("01", as_of, usize::MAX)?;
    let projected = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let keys_partition = ansinh::checkpoint::CheckpointConfig::default().keys_partition;
    let events = ansinh::payments_report::payment_events(
        &mut stream,
        config,
        &keys_partition,
        Some(&partition),
    )
    .await?;
    let book = ansinh::domain::payments::replay(events.get("01").into_iter().flatten());
    let mut folded: Vec<_> = ansinh::domain::payments::instructions::due_for_timeout(&book, as_of)
        .copied()
        .collect();
    let folded_seconds = started.elapsed().as_secs_f64();
    let mut from_projections = due.clone();
    from_projections.sort_unstable();
    folded.sort_unstable();
    if from_projections != folded || due.len() as u64 != instructions {
        return Err(format!(
            "due for a timeout: {} from the projections, {} folded from the log",
            due.len(),
            folded.len()
        )
        .into());
    }
    Ok((projected, due.len(), folded_seconds))
}

/// A request of the bench's, under `key`.
fn request<'a>(caller: &'a Caller, key: &'a str) -> Request<'a> {
    Request {
        caller,
        idempotency_key: key,
        correlation_id: "bench",
        fingerprint: None,
    }
}

/// Registers households `from..to` with personal data through the service, `IN_FLIGHT`
/// at a time: how many succeeded, and the seconds it took.
async fn register(service: &Service, from: u64, to: u64) -> (u64, f64) {
    let started = Instant::now();
    let registered = in_flight(to - from, |i| {
        let service = service.clone();
        let n = from + i;
        async move {
            let h = household(n);
            let key = format!("reg-{n}");
            let caller = officer();
            let req = request(&caller, &key);
            let personal = PersonalData {
                head_name: "Nguyễn Thị Hạnh".into(),
                head_citizen_id: format!("0011{n:08}"),
                phone: None,
                account_number: None,
                members: vec![],
            };
            service
                .register(
                    &req,
                    &h,
                    Area::Rural,
                    "2026-01-05".parse().unwrap(),
                    &personal,
                )
                .await
                .is_ok()
        }
    })
    .await;
    (registered, started.elapsed().as_secs_f64())
}

/// Runs `make(n)` for n in 0..count, IN_FLIGHT at a time; returns how many succeeded.
async fn in_flight<F, Fut>(count: u64, make: F) -> u64
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let mut set = JoinSet::new();
    let mut ok = 0;
    for n in 0..count {
        while set.len() >= IN_FLIGHT {
            ok += u64::from(set.join_next().await.and_then(|r| r.ok()).unwrap_or(false));
        }
        set.spawn(make(n));
    }
    while let Some(r) = set.join_next().await {
        ok += u64::from(r.unwrap_or(false));
    }
    ok
}

async fn count(service: &Service, config: &LogConfig) -> BenchResult<u64> {
    let mut stream = service.ledger.stream().clone();
    let end = ansinh::log::reader::last_stream_sequence(&mut stream).await?;
    Ok(
        ansinh::log::read_range(&stream, &config.wildcard(), 1, end, |_| Ok::<_, ()>(()))
            .await
            .map_err(|e| format!("{e:?}"))?,
    )
}

/// GETs one household until it is answered: each GET waits up to `READ_WAIT_MAX` for the
/// projections, then answers 503 and is sent again, at most `FIRST_READ_ATTEMPTS_MAX`
/// times.
async fn first_read(base: &str, token: &str) -> BenchResult<()> {
    const FIRST_READ_ATTEMPTS_MAX: usize = 60;
    let client = reqwest::Client::new();
    for _ in 0..FIRST_READ_ATTEMPTS_MAX {
        let response = client
            .get(format!("{base}/v1/households/{}", household(0)))
            .bearer_auth(token)
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        if response.status().is_success() {
            return Ok(());
        }
    }
    Err(format!("no answer after {FIRST_READ_ATTEMPTS_MAX} GETs").into())
}

/// READERS clients each GET READS_PER_CLIENT household views at random; p50 and p99 ms
/// of the answered ones, and how many were not answered (a 503 while the projections
/// catch up, a timeout).
async fn gets(base: &str, token: &str, households: u64) -> BenchResult<(f64, f64, usize)> {
    let mut set = JoinSet::new();
    for r in 0..READERS {
        let (base, token) = (base.to_string(), token.to_string());
        set.spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::with_capacity(READS_PER_CLIENT);
            let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ r as u64;
            for _ in 0..READS_PER_CLIENT {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let h = household(seed % households);
                let started = Instant::now();
                let response = client
                    .get(format!("{base}/v1/households/{h}?as_of=2026-12-31"))
                    .bearer_auth(&token)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                if let Ok(response) = response {
                    if response.status().is_success() {
                        let _ = response.bytes().await;
                        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                }
            }
            latencies
        });
    }
    let mut all = Vec::new();
    while let Some(l) = set.join_next().await {
        all.extend(l?);
    }
    if all.is_empty() {
        return Err("no GET succeeded".into());
    }
    let unanswered = READERS * READS_PER_CLIENT - all.len();
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all[((all.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.99), unanswered))
}
