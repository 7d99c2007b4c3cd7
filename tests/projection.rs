//! Projections applied in batches against a real nats-server: a commit that fails inside
//! a batch (what a crash before it leaves) writes nothing of the batch, and one stopped
//! inside its writes is completed from its journal record when the store opens, or by the
//! same projector's next catch-up; catching up again gives exactly the projections of a
//! clean rebuild: every event applied once. A trail reads the same however the log was
//! batched into runs. Reads of several records (a reconciliation, a commune's months, a
//! household with its loans) never show part of a batch: while one is half written they
//! answer busy.

mod common;
#[path = "common_domain/mod.rs"]
mod loan_fixtures;
#[path = "common_payments/mod.rs"]
mod payments_fixtures;

use ansinh::log::reader;
use ansinh::log::{Ledger, LogConfig};
use ansinh::projection::{
    Crash, PROJECTION_BATCH_EVENTS_MAX, ProjectionError, Projector, TRAIL_RUN_LINES_MAX,
};
use common::*;
use std::io::Write as _;

/// Appends `total` notes over three partitions, several events a message.
async fn notes(ledger: &Ledger, total: usize) {
    let mut set = tokio::task::JoinSet::new();
    for n in 0..total {
        let ledger = ledger.clone();
        let partition = ["01", "79", "92"][n % 3];
        set.spawn(async move {
            let key = format!("n{n}");
            ledger
                .append(note(partition, &key, "projected"))
                .await
                .unwrap();
        });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
}

fn applied(p: &Projector) -> u64 {
    p.summaries().unwrap().values().map(|s| s.events).sum()
}

/// Projections rebuilt from the whole log in one go, in a directory of their own, and
/// how many events the rebuild applied.
async fn clean(config: &LogConfig) -> (tempfile::TempDir, Projector, u64) {
    let mut stream = stream_of(config).await;
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let clean = Projector::open(&db, dir.path()).unwrap();
    let applied = clean.rebuild(&mut stream, config).await.unwrap();
    (dir, clean, applied)
}

/// The fingerprint of a clean rebuild, which must have applied `total` events.
async fn clean_fingerprint(config: &LogConfig, total: usize) -> ansinh::chain::Digest {
    let (_dir, clean, applied) = clean(config).await;
    assert_eq!(applied, total as u64);
    clean.fingerprint().unwrap()
}

/// A clean rebuild's fingerprint and the trail of `subject` in it, with the number of
/// lines that trail must hold.
async fn clean_trail(
    config: &LogConfig,
    subject: &str,
    lines: usize,
) -> (ansinh::chain::Digest, Vec<ansinh::projection::TrailEntry>) {
    let (_dir, clean, _) = clean(config).await;
    let trail = clean.trail(subject).unwrap();
    assert_eq!(trail.len(), lines);
    (clean.fingerprint().unwrap(), trail)
}

/// Catches up to message `from`, then every `step` messages, then to the end of the log.
async fn follow_in_steps(
    projector: &Projector,
    stream: &mut async_nats::jetstream::stream::Stream,
    config: &LogConfig,
    from: u64,
    step: usize,
) {
    let end = reader::last_stream_sequence(stream).await.unwrap();
    for upto in (from..=end).step_by(step) {
        projector.catch_up_to(stream, config, upto).await.unwrap();
    }
    projector.catch_up(stream, config).await.unwrap();
}

/// A log of a little over three batches of notes, and an empty store on it: when the
/// second batch's commit fails, the third's is queued behind it (two commits in flight)
/// and must not run over what the failure left.
struct ThreeBatches {
    config: LogConfig,
    _ledger: (Ledger, tempfile::TempDir),
    stream: async_nats::jetstream::stream::Stream,
    end: u64,
    total: usize,
    store: tempfile::TempDir,
    db: sled::Db,
}

async fn three_batches() -> ThreeBatches {
    let config = fresh_log();
    let ledger = ledger(&config).await;
    let total = 3 * PROJECTION_BATCH_EVENTS_MAX + 500;
    notes(&ledger.0, total).await;
    let mut stream = stream_of(&config).await;
    let end = reader::last_stream_sequence(&mut stream).await.unwrap();
    let store = tempfile::tempdir().unwrap();
    let db = sled::open(store.path()).unwrap();
    ThreeBatches {
        config,
        _ledger: ledger,
        stream,
        end,
        total,
        store,
        db,
    }
}

/// A rebuild's clear is durable in sled before the trail's files are cut. A crash after
/// the replay's first runs reached the cut file, with the clear still in sled's buffer,
/// reopened the old trees (their position, their trail length) over the new runs, which
/// check: when the old length fell on a run's end (runs of one size), the trail then
/// lacked some subjects' lines and the catch-up from the old position repeated others.
/// sled here writes only when told (`flush_every_ms(None)`), and the crash is a copy of
/// the store's files as they are on disk at that point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_that_crashes_after_its_first_runs_reopens_with_a_whole_trail() {
    const EVENTS: usize = 100;
    const FIRST: usize = 50;
    let config = fresh_log();
    let (ledger, _ledger_dir) = ledger(&config).await;
    // One partition, subjects and texts of one length: runs of one size.
    for n in 0..EVENTS {
        ledger
            .append(note("01", &format!("n{}", 100 + n), "projected"))
            .await
            .unwrap();
    }
    let mut stream = stream_of(&config).await;
    let end = reader::last_stream_sequence(&mut stream).await.unwrap();
    let store = tempfile::tempdir().unwrap();
    let open = |dir: &std::path::Path| {
        sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .unwrap()
    };
    let db = open(store.path());
    let projector = Projector::open(&db, store.path()).unwrap();
    // The projections hold the first half, durably.
    let first_end = end - (EVENTS - FIRST) as u64;
    projector
        .catch_up_to(&mut stream, &config, first_end)
        .await
        .unwrap();
    db.flush().unwrap();
    let crashed = projector
        .rebuild_crashing(
            &mut stream,
            &config,
            end,
            (EVENTS as u64, Crash::BeforeCommit),
        )
        .await;
    assert!(crashed.is_err(), "{crashed:?}");
    let after_crash = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(store.path()).unwrap() {
        copy_tree(&entry.unwrap().path(), after_crash.path());
    }
    let db = open(after_crash.path());
    let projector = Projector::open(&db, after_crash.path()).unwrap();
    projector
        .catch_up_to(&mut stream, &config, end)
        .await
        .unwrap();
    for n in 0..EVENTS {
        let subject = format!("note:n{}", 100 + n);
        assert_eq!(projector.trail(&subject).unwrap().len(), 1, "{subject}");
    }
    assert_eq!(
        projector.fingerprint().unwrap(),
        clean_fingerprint(&config, EVENTS).await
    );
}

/// Copies `from` (a file or a directory) into the directory `into`.
fn copy_tree(from: &std::path::Path, into: &std::path::Path) {
    let to = into.join(from.file_name().unwrap());
    if from.is_dir() {
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            copy_tree(&entry.unwrap().path(), &to);
        }
    } else {
        std::fs::copy(from, &to).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_fails_to_commit_is_applied_once_on_the_next_catch_up() {
    let mut t = three_batches().await;
    let projector = Projector::open(&t.db, t.store.path()).unwrap();
    // The commit of the second batch fails: the first batch stays, none of the second.
    let fail_at = (PROJECTION_BATCH_EVENTS_MAX + 10) as u64;
    let failed = projector
        .catch_up_failing_at(&mut t.stream, &t.config, t.end, Some(fail_at))
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(applied(&projector), PROJECTION_BATCH_EVENTS_MAX as u64);
    // The failed batch's trail runs are in the file past what sled recorded; opened
    // again (as after a crash), the store cuts them off.
    let lines_file = t.store.path().join("trail.lines");
    let written = std::fs::metadata(&lines_file).unwrap().len();
    drop(projector);
    let projector = Projector::open(&t.db, t.store.path()).unwrap();
    assert!(std::fs::metadata(&lines_file).unwrap().len() < written);
    assert_eq!(applied(&projector), PROJECTION_BATCH_EVENTS_MAX as u64);
    // The next catch-up applies the rest, each event once.
    let rest = projector
        .catch_up_to(&mut t.stream, &t.config, t.end)
        .await
        .unwrap();
    assert_eq!(rest, (t.total - PROJECTION_BATCH_EVENTS_MAX) as u64);
    assert_eq!(applied(&projector), t.total as u64);
    assert_eq!(
        projector.fingerprint().unwrap(),
        clean_fingerprint(&t.config, t.total).await
    );
    // Every subject's trail holds its event once.
    assert_eq!(projector.trail("note:n7").unwrap().len(), 1);
}

/// Catches `projector` up to `end`, stopping the commit of the event at `at` as `crash`
/// says: an error the process goes on after.
async fn stop_a_commit(
    projector: &Projector,
    stream: &mut async_nats::jetstream::stream::Stream,
    config: &LogConfig,
    end: u64,
    at: u64,
    crash: Crash,
) {
    let stopped = projector
        .catch_up_crashing(stream, config, end, Some((at, crash)))
        .await;
    assert!(stopped.is_err(), "{stopped:?}");
}

/// A batch's writes are plain sled inserts after its journal record and marker: a crash
/// among them leaves the trees ahead of the position, and opening the store applies the
/// record again, which brings the batch in whole. A marker whose record is gone (a
/// machine crash lost the unsynced file) drops the projections, which replay the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stopped_inside_its_writes_is_completed_from_its_journal_on_open() {
    let mut t = three_batches().await;
    let projector = Projector::open(&t.db, t.store.path()).unwrap();
    let first_batch = PROJECTION_BATCH_EVENTS_MAX as u64;
    stop_a_commit(
        &projector,
        &mut t.stream,
        &t.config,
        t.end,
        first_batch + 10,
        Crash::InsideCommit,
    )
    .await;
    // Torn: the summaries (written first) count the second batch, the position (written
    // last) is still the first batch's end.
    let torn_position = projector.position().unwrap();
    assert_eq!(applied(&projector), 2 * first_batch);
    drop(projector);
    let projector = Projector::open(&t.db, t.store.path()).unwrap();
    assert_ne!(projector.position().unwrap(), torn_position);
    assert_eq!(applied(&projector), 2 * first_batch);
    let rest = projector
        .catch_up_to(&mut t.stream, &t.config, t.end)
        .await
        .unwrap();
    assert_eq!(rest, t.total as u64 - 2 * first_batch);
    let clean = clean_fingerprint(&t.config, t.total).await;
    assert_eq!(projector.fingerprint().unwrap(), clean);
    assert_eq!(projector.trail("note:n4100").unwrap().len(), 1);

    // The journal's files lost what was written to them.
    drop(projector);
    for file in ansinh::read::journal::JOURNAL_FILES {
        std::fs::write(t.store.path().join(file), b"").unwrap();
    }
    let projector = Projector::open(&t.db, t.store.path()).unwrap();
    assert_eq!(applied(&projector), 0);
    let replayed = projector
        .catch_up_to(&mut t.stream, &t.config, t.end)
        .await
        .unwrap();
    assert_eq!(replayed, t.total as u64);
    assert_eq!(projector.fingerprint().unwrap(), clean);
}

/// A commit that stops among its writes (an error the process goes on after, not a
/// crash) leaves the trees holding part of its batch and the position before it. The
/// same projector's next catch-up first completes that batch from its journal record, as
/// opening the store would, then goes on from its end: every event applied once, the
/// trail's runs of the completed batch readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stopped_inside_its_writes_is_completed_by_the_next_catch_up_in_place() {
    let mut t = three_batches().await;
    let projector = Projector::open(&t.db, t.store.path()).unwrap();
    let first_batch = PROJECTION_BATCH_EVENTS_MAX as u64;
    stop_a_commit(
        &projector,
        &mut t.stream,
        &t.config,
        t.end,
        first_batch + 10,
        Crash::InsideCommit,
    )
    .await;
    let rest = projector
        .catch_up_to(&mut t.stream, &t.config, t.end)
        .await
        .unwrap();
    assert_eq!(rest, t.total as u64 - 2 * first_batch);
    assert_eq!(applied(&projector), t.total as u64);
    assert_eq!(
        projector.fingerprint().unwrap(),
        clean_fingerprint(&t.config, t.total).await
    );
    // Every subject's trail holds its event once.
    for n in [7, 4100, 12300] {
        assert_eq!(projector.trail(&format!("note:n{n}")).unwrap().len(), 1);
    }
}

/// A subject's trail lines from one batch are stored together (runs of at most
/// `TRAIL_RUN_LINES_MAX`), so how the log was batched changes the records but never the
/// trail: a store that followed the log a few events at a time and a store rebuilt in one
/// go show the same lines, the same pages and the same fingerprint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trail_reads_the_same_whether_applied_in_runs_or_line_by_line() {
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    // 150 events name "commune:0100007" (more than two runs); each also names its own note.
    const SHARED: usize = 150;
    let store = tempfile::tempdir().unwrap();
    let db = sled::open(store.path()).unwrap();
    let following = Projector::open(&db, store.path()).unwrap();
    let mut stream = stream_of(&config).await;
    for n in 0..SHARED {
        let mut draft = note("01", &format!("r{n}"), "in a run");
        // Named twice: still one line.
        draft.subjects.push("commune:0100007".into());
        draft.subjects.push("commune:0100007".into());
        ledger.append(draft).await.unwrap();
        // A few events a catch-up: most runs hold one line.
        if n % 7 == 0 {
            following.catch_up(&mut stream, &config).await.unwrap();
        }
    }
    following.catch_up(&mut stream, &config).await.unwrap();

    let rebuilt_dir = tempfile::tempdir().unwrap();
    let rebuilt_db = sled::open(rebuilt_dir.path()).unwrap();
    let rebuilt = Projector::open(&rebuilt_db, rebuilt_dir.path()).unwrap();
    assert_eq!(
        rebuilt.rebuild(&mut stream, &config).await.unwrap(),
        SHARED as u64
    );

    let trail = rebuilt.trail("commune:0100007").unwrap();
    let sequences: Vec<u64> = trail.iter().map(|l| l.sequence).collect();
    assert_eq!(sequences, (1..=SHARED as u64).collect::<Vec<_>>());
    assert_eq!(following.trail("commune:0100007").unwrap(), trail);
    assert_eq!(rebuilt.trail("note:r149").unwrap().len(), 1);
    // Run by run (as `audit trail` prints it): the same lines, none longer than a run.
    let runs: Vec<_> = rebuilt
        .trail_runs("commune:0100007")
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(runs.len() >= SHARED.div_ceil(TRAIL_RUN_LINES_MAX));
    assert!(runs.iter().all(|r| r.len() <= TRAIL_RUN_LINES_MAX));
    assert_eq!(runs.concat(), trail);
    // Pages that start and end inside runs, and past the end.
    for (skip, take) in [(0, 10), (60, 10), (63, 2), (64, 64), (140, 20), (150, 5)] {
        let end = (skip + take).min(SHARED);
        for p in [&following, &rebuilt] {
            let (page, more) = p.trail_page("commune:0100007", skip, take).unwrap();
            assert_eq!(
                page,
                trail[skip.min(SHARED)..end],
                "skip {skip} take {take}"
            );
            assert_eq!(more, end < SHARED, "skip {skip} take {take}");
        }
    }
    // Newest first, a run's worth at a time from the end: the same lines reversed; in
    // another partition, none.
    for p in [&following, &rebuilt] {
        let newest_first: Vec<_> = p
            .trail_newest_first("commune:0100007", "01")
            .collect::<Result<_, _>>()
            .unwrap();
        let mut reversed = trail.clone();
        reversed.reverse();
        assert_eq!(newest_first, reversed);
        assert_eq!(p.trail_newest_first("commune:0100007", "79").count(), 0);
    }
    assert_eq!(
        following.fingerprint().unwrap(),
        rebuilt.fingerprint().unwrap()
    );
    // The rebuild stored the shared subject's 150 lines in three runs, the follower in
    // one a catch-up (more runs, more bytes); neither in sled.
    assert_eq!(runs.len(), SHARED.div_ceil(TRAIL_RUN_LINES_MAX));
    let follower_runs = following.trail_runs("commune:0100007").count();
    assert!(follower_runs > runs.len(), "{follower_runs}");
    let lines_file =
        |dir: &std::path::Path| std::fs::metadata(dir.join("trail.lines")).unwrap().len();
    assert!(lines_file(store.path()) > lines_file(rebuilt_dir.path()));
    for db in [&db, &rebuilt_db] {
        assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"proj.trail"));
    }
}

/// The trail file and sled's record of its length agree after any crash: runs past that
/// length (a batch that never committed) are cut off, a lost index file is rebuilt from
/// the runs, and a file shorter than sled's record (writes lost by a machine crash) makes
/// the store replay the log. Each time the store ends as a clean rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_file_comes_back_to_what_the_projections_committed() {
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    for n in 0..300 {
        let mut draft = note(["01", "79"][n % 2], &format!("c{n}"), "kept");
        draft.subjects.push("commune:0100007".into());
        ledger.append(draft).await.unwrap();
    }
    let mut stream = stream_of(&config).await;
    let (want, want_trail) = clean_trail(&config, "commune:0100007", 300).await;

    let store = tempfile::tempdir().unwrap();
    let db = sled::open(store.path()).unwrap();
    let lines_file = store.path().join("trail.lines");
    let index_file = store.path().join("trail.index");
    {
        // Followed a few events at a time; closing writes the index file.
        let projector = Projector::open(&db, store.path()).unwrap();
        follow_in_steps(&projector, &mut stream, &config, 10, 10).await;
        assert_eq!(projector.fingerprint().unwrap(), want);
        assert!(!index_file.exists());
    }
    assert!(index_file.exists());
    // Garbage after the committed runs: cut off, the rest folded in after the index.
    let len = std::fs::metadata(&lines_file).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&lines_file)
        .unwrap()
        .write_all(&[0xA5; 4_000])
        .unwrap();
    let reopened = Projector::open(&db, store.path()).unwrap();
    assert_eq!(std::fs::metadata(&lines_file).unwrap().len(), len);
    assert_eq!(reopened.fingerprint().unwrap(), want);
    assert_eq!(reopened.trail("commune:0100007").unwrap(), want_trail);
    drop(reopened);
    // No index file: every run folded again.
    std::fs::remove_file(&index_file).unwrap();
    let reopened = Projector::open(&db, store.path()).unwrap();
    assert_eq!(reopened.fingerprint().unwrap(), want);
    drop(reopened);
    // The file lost its last bytes: the projections are dropped and replayed.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&lines_file)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let reopened = Projector::open(&db, store.path()).unwrap();
    assert_eq!(reopened.position().unwrap(), ansinh::log::Position::START);
    assert!(reopened.trail("commune:0100007").unwrap().is_empty());
    reopened.catch_up(&mut stream, &config).await.unwrap();
    assert_eq!(reopened.fingerprint().unwrap(), want);
}

/// The trail's index lives in a table on disk, which takes a batch's heads only once a
/// sled flush made the batch durable. Here every few heads are settled so: a store closed
/// halfway (its index file written), then followed to the end and dropped as a crash
/// leaves it (the table holding heads past what the index file names, no index file
/// written) opens to the clean rebuild's trails, folding again the runs after the index
/// file over a table already ahead of them. A table file that is not one is rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_index_on_disk_comes_back_after_a_crash_with_heads_settled_past_it() {
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    for n in 0..400 {
        let mut draft = note(["01", "79"][n % 2], &format!("s{n}"), "kept");
        draft.subjects.push(format!("instruction:{n}"));
        draft.subjects.push("commune:0100007".into());
        ledger.append(draft).await.unwrap();
    }
    let mut stream = stream_of(&config).await;
    let end = reader::last_stream_sequence(&mut stream).await.unwrap();
    let (want, want_trail) = clean_trail(&config, "commune:0100007", 400).await;

    let store = tempfile::tempdir().unwrap();
    let db = sled::open(store.path()).unwrap();
    let index_file = store.path().join("trail.index");
    {
        let projector = Projector::open(&db, store.path()).unwrap();
        projector.trail_test_hooks(7, true);
        projector
            .catch_up_to(&mut stream, &config, end / 2)
            .await
            .unwrap();
    }
    let written = std::fs::read(&index_file).unwrap();
    {
        let projector = Projector::open(&db, store.path()).unwrap();
        projector.trail_test_hooks(7, false);
        follow_in_steps(&projector, &mut stream, &config, end / 2 + 5, 5).await;
        assert_eq!(projector.fingerprint().unwrap(), want);
    }
    assert_eq!(
        std::fs::read(&index_file).unwrap(),
        written,
        "no index file written at the crash"
    );
    let reopened = Projector::open(&db, store.path()).unwrap();
    assert_eq!(reopened.fingerprint().unwrap(), want);
    assert_eq!(reopened.trail("commune:0100007").unwrap(), want_trail);
    assert_eq!(reopened.trail("instruction:399").unwrap().len(), 1);
    drop(reopened);
    // A table file that is not one: every run folded again into a new table.
    std::fs::write(store.path().join("trail.heads"), b"not a table").unwrap();
    let reopened = Projector::open(&db, store.path()).unwrap();
    assert_eq!(reopened.fingerprint().unwrap(), want);
    assert_eq!(reopened.trail("commune:0100007").unwrap(), want_trail);
}

/// A batch's transaction runs while the next batch is applied, which reads the records
/// the first one changed from memory until it is done. Households, the partition's trial
/// balance and the commune's portfolio changed in every batch of a rebuild (several
/// batches, their commits overlapping) end as in a store that applied the same events a
/// few hundred at a time, each catch-up committing once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_changed_in_every_batch_end_as_when_applied_without_overlapping_commits() {
    use ansinh::proto::{self, envelope::Payload};
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    let draft = |key: String, subjects: Vec<String>, payload: Payload| ansinh::log::Draft {
        partition: ansinh::chain::Partition::new("01").unwrap(),
        actor: proto::Actor {
            id: "staff:t".into(),
            role: "credit_officer".into(),
            unit: "0100007".into(),
        },
        idempotency_key: key,
        correlation_id: String::new(),
        request_fingerprint: None,
        subjects,
        payload,
    };
    const HOUSEHOLDS: u64 = 600;
    let loans = 2 * PROJECTION_BATCH_EVENTS_MAX as u64;
    let household = |n: u64| format!("0100007-{:06}", n % HOUSEHOLDS + 1);
    let mut set = tokio::task::JoinSet::new();
    for n in 0..HOUSEHOLDS {
        let ledger = ledger.clone();
        let h = household(n);
        let d = draft(
            format!("reg:{h}"),
            vec![format!("household:{h}"), "commune:0100007".into()],
            Payload::HouseholdRegistered(proto::HouseholdRegistered {
                household_id: h.clone(),
                commune_code: "0100007".into(),
                area: "rural".into(),
                members: 3,
                registered_on: "2026-01-05".into(),
                ..Default::default()
            }),
        );
        set.spawn(async move { ledger.append_unchecked(d).await.unwrap() });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
    for loan in 1..=loans {
        let ledger = ledger.clone();
        let h = household(loan);
        let d = draft(
            format!("loan:{loan}"),
            vec![format!("household:{h}"), "commune:0100007".into()],
            match approved(loan, &h, &format!("{}", 1_000_000 + loan)) {
                Payload::LoanApproved(p) => Payload::LoanApproved(proto::LoanApproved {
                    monthly_rate: "0.0075".into(),
                    overdue_monthly_rate: "0.00975".into(),
                    day_count: "Actual30".into(),
                    entrusted: "WomensUnion".into(),
                    ..p
                }),
                _ => unreachable!("an approval"),
            },
        );
        set.spawn(async move { ledger.append_unchecked(d).await.unwrap() });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
    let mut stream = stream_of(&config).await;
    let end = reader::last_stream_sequence(&mut stream).await.unwrap();

    let rebuilt = Projector::scratch(&sled::Config::new().temporary(true).open().unwrap()).unwrap();
    assert_eq!(
        rebuilt.rebuild(&mut stream, &config).await.unwrap(),
        HOUSEHOLDS + loans
    );
    let stepped = Projector::scratch(&sled::Config::new().temporary(true).open().unwrap()).unwrap();
    let mut upto = 0;
    while upto < end {
        upto = (upto + 300).min(end);
        stepped
            .catch_up_to(&mut stream, &config, upto)
            .await
            .unwrap();
    }
    assert_eq!(
        rebuilt.fingerprint().unwrap(),
        stepped.fingerprint().unwrap()
    );
    // What the views add up to: every loan of the partition, each household's share.
    assert_eq!(rebuilt.loans("01").unwrap().len() as u64, loans);
    let portfolio = rebuilt.commune("0100007").unwrap().unwrap();
    let json = serde_json::to_value(&portfolio).unwrap();
    assert!(json.to_string().contains(&format!("{loans}")), "{json}");
    let view = rebuilt.household(&household(0)).unwrap().unwrap();
    let held = serde_json::to_value(&view).unwrap()["loans"]
        .as_array()
        .unwrap()
        .len() as u64;
    assert_eq!(
        held,
        (1..=loans).filter(|l| l % HOUSEHOLDS == 0).count() as u64
    );
}

/// A registry event, appended as it is, in partition 01 for household `id`.
fn registry_draft(
    key: &str,
    id: &str,
    payload: ansinh::proto::envelope::Payload,
) -> ansinh::log::Draft {
    ansinh::log::Draft {
        subjects: vec![format!("household:{id}")],
        payload,
        ..note("01", key, "")
    }
}

/// An event whose views cannot be applied (a stored record that no longer decodes)
/// leaves nothing of itself behind: neither the partition's count nor the household's
/// trail takes it, however often the catch-up is tried again (before, the events of its
/// batch were committed with part of it, and each retry added that part again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_views_fail_is_not_half_applied_by_any_retry() {
    use ansinh::proto::{self, envelope::Payload};
    let config = fresh_log();
    let (ledger, _ledger_dir) = ledger(&config).await;
    let id = "0100007-000001";
    ledger
        .append_unchecked(registry_draft(
            "reg",
            id,
            Payload::HouseholdRegistered(proto::HouseholdRegistered {
                household_id: id.into(),
                commune_code: "0100007".into(),
                area: "rural".into(),
                members: 1,
                citizen_indexes: vec![vec![1; 32].into()],
                sealed_personal: vec![1].into(),
                registered_on: "2026-01-05".into(),
            }),
        ))
        .await
        .unwrap();
    let mut stream = stream_of(&config).await;
    let store = tempfile::tempdir().unwrap();
    let db = sled::open(store.path()).unwrap();
    let projector = Projector::open(&db, store.path()).unwrap();
    projector.catch_up(&mut stream, &config).await.unwrap();
    // A good event first, in the same batch: it is not committed without the failed one
    // (their batch is written whole or not at all), and is applied again with it.
    ledger.append(note("01", "before", "fine")).await.unwrap();
    ledger
        .append_unchecked(registry_draft(
            "members",
            id,
            Payload::HouseholdMembersChanged(proto::HouseholdMembersChanged {
                household_id: id.into(),
                members: 2,
                citizen_indexes: vec![vec![1; 32].into(), vec![2; 32].into()],
                sealed_personal: vec![2].into(),
                changed_on: "2026-02-01".into(),
                reason: "marriage".into(),
            }),
        ))
        .await
        .unwrap();
    // The household's record no longer decodes.
    db.open_tree("proj.views")
        .unwrap()
        .insert(ansinh::views::household_key(id), &[0xc1][..])
        .unwrap();
    for _ in 0..2 {
        assert!(projector.catch_up(&mut stream, &config).await.is_err());
        assert_eq!(applied(&projector), 1);
        assert_eq!(
            projector.trail(&format!("household:{id}")).unwrap().len(),
            1
        );
    }
}

/// Projections past the log's end (a stream restored from an older copy) refuse to
/// catch up, rather than skip the events written again at those sequences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_past_the_logs_end_refuse_to_catch_up() {
    let ahead = fresh_log();
    let (ahead_ledger, _ahead_dir) = ledger(&ahead).await;
    notes(&ahead_ledger, 20).await;
    let store = tempfile::tempdir().unwrap();
    let db = sled::open(store.path()).unwrap();
    let projector = Projector::open(&db, store.path()).unwrap();
    projector
        .catch_up(&mut stream_of(&ahead).await, &ahead)
        .await
        .unwrap();
    // The same store over a log that holds fewer messages.
    let behind = fresh_log();
    let (behind_ledger, _behind_dir) = ledger(&behind).await;
    notes(&behind_ledger, 3).await;
    let refused = projector
        .catch_up(&mut stream_of(&behind).await, &behind)
        .await;
    assert!(
        matches!(
            refused,
            Err(ansinh::projection::ProjectionError::AheadOfLog { .. })
        ),
        "{refused:?}"
    );
    assert_eq!(applied(&projector), 20);
}

/// Appends `payload` to partition 01 as it is, in order (the caller awaits each).
async fn append_01(
    ledger: &Ledger,
    key: &str,
    actor: ansinh::proto::Actor,
    subjects: Vec<String>,
    payload: ansinh::proto::envelope::Payload,
) {
    ledger
        .append_unchecked(ansinh::log::Draft {
            actor,
            subjects,
            payload,
            ..note("01", key, "")
        })
        .await
        .unwrap();
}

/// Appends decided payment events to partition 01 as the book records them, under the
/// actor each names; `earlier` are the events appended before them, which the book
/// decided them against.
async fn append_payments(
    ledger: &Ledger,
    earlier: &[ansinh::domain::payments::Event],
    events: &[ansinh::domain::payments::Event],
) {
    use ansinh::domain::payments::Actor;
    let mut book = ansinh::domain::payments::replay(earlier);
    for (n, event) in events.iter().enumerate() {
        let (payload, subjects) = ansinh::book::payments::payload_of(event, None, &book);
        ansinh::domain::payments::apply(&mut book, event);
        let actor = match &event.actor {
            Actor::Officer(id) => ansinh::proto::Actor {
                id: id.to_string(),
                role: "branch_manager".into(),
                unit: "01".into(),
            },
            Actor::Gateway(id) => ansinh::proto::Actor {
                id: id.to_string(),
                role: ansinh::book::payments::GATEWAY_ROLE.into(),
                unit: String::new(),
            },
        };
        append_01(
            ledger,
            &format!("pay-{}-{n}", event.id),
            actor,
            subjects,
            payload,
        )
        .await;
    }
}

/// Whether `read`, a read the projections answered while a batch's writes were half
/// in, is one they must give: a busy answer (read again later), never the half batch.
fn assert_busy<T: std::fmt::Debug>(read: Result<T, ProjectionError>, what: &str) {
    assert!(
        matches!(read, Err(ProjectionError::Busy { .. })),
        "{what} read while a batch was half written: {read:?}"
    );
}

/// A reconciliation read while a batch of settlements is half written either answers
/// busy or shows whole batches: never an instruction both pending and settled. Here the
/// batch's commit stops after its day lines (the settlements counted on their day) and
/// before the pending lines it removes, which is what a reader sees while those inserts
/// go in. Once the next catch-up has completed the batch, the range reads whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconciliation_never_counts_an_instruction_in_two_states() {
    use ansinh::domain::payments::instructions::Outcome;
    use ansinh::domain::payments::{Actor, Command, CommandKind};
    use ansinh::payments_report::reconciliation_range;
    use payments_fixtures as pay;
    const PEOPLE: u32 = 20;
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    let mut issuing = vec![pay::allocate(
        "2026-11-20",
        pay::COMMUNE,
        "2026-12",
        100_000_000,
    )];
    for n in 1..=PEOPLE {
        issuing.push(pay::grant(
            "2026-11-20",
            n,
            "2026-12",
            pay::terms(pay::ELDERLY_POOR, pay::bank(), None),
        ));
    }
    issuing.push(pay::run("2026-12-01", "2026-12", None));
    let issued = pay::history(&issuing);
    let settling: Vec<Command> = (1..=PEOPLE)
        .map(|n| {
            let mut post = pay::Post::new(
                pay::BANK,
                "pay:1:2026-12:1",
                Outcome::Settled,
                "T",
                pay::AMOUNT,
            )
            .of(n)
            .body();
            post.instruction =
                ansinh::domain::payments::ids::InstructionRef::parse(&format!("pay:{n}:2026-12:1"))
                    .unwrap();
            post.gateway_txn =
                ansinh::domain::payments::ids::GatewayTxnId::parse(&format!("T{n}")).unwrap();
            Command {
                actor: Actor::Gateway(pay::gw(pay::BANK)),
                effective: pay::d("2026-12-20"),
                kind: CommandKind::Post(post),
            }
        })
        .collect();
    let settled = pay::history_from(&issued, &settling);
    append_payments(&ledger, &[], &issued).await;
    let mut stream = stream_of(&config).await;
    let issued_end = reader::last_stream_sequence(&mut stream).await.unwrap();
    append_payments(&ledger, &settled[..issued.len()], &settled[issued.len()..]).await;
    let end = reader::last_stream_sequence(&mut stream).await.unwrap();

    let store = tempfile::tempdir().unwrap();
    let db = sled::open(store.path()).unwrap();
    let projector = Projector::open(&db, store.path()).unwrap();
    let (from, to, as_of) = (
        pay::d("2026-12-01"),
        pay::d("2026-12-31"),
        pay::d("2026-12-31"),
    );
    let range = |p: &Projector| reconciliation_range(p, "01", from, to, as_of, 10);
    // Whole: no instruction counted in two states, nor in more than its day lists.
    let assert_whole = |r: &ansinh::payments_report::ReconciliationRange| {
        let t = &r.totals;
        let answered = t.settled.count + t.failed.count + t.timed_out.count + t.cancelled.count;
        assert!(
            answered + t.pending_overdue.count <= t.instructed.count,
            "an instruction counted in two states: {t:?}"
        );
    };
    projector
        .catch_up_to(&mut stream, &config, issued_end)
        .await
        .unwrap();
    let before = range(&projector).unwrap();
    assert_whole(&before);
    assert_eq!(before.totals.pending_overdue.count, u64::from(PEOPLE));

    stop_a_commit(
        &projector,
        &mut stream,
        &config,
        end,
        1,
        Crash::InsideCommitBefore("rpend/"),
    )
    .await;
    let torn = range(&projector);
    if let Ok(r) = &torn {
        assert_whole(r);
    }
    let torn = torn.map_err(|e| match e {
        ansinh::payments_report::RangeError::Projection(e) => e,
        refused => panic!("{refused}"),
    });
    assert_busy(torn, "a reconciliation range");
    assert_busy(
        projector.reconciliation_day("01", from, as_of, 10),
        "a reconciliation day",
    );

    projector
        .catch_up_to(&mut stream, &config, end)
        .await
        .unwrap();
    let after = range(&projector).unwrap();
    assert_whole(&after);
    assert_eq!(
        (
            after.totals.settled.count,
            after.totals.pending_overdue.count
        ),
        (u64::from(PEOPLE), 0)
    );
}

/// A range's line lists at most `RANGE_PENDING_IDS_LISTED_MAX` of its pending
/// instructions, the first in instruction order, and counts the rest: a day whose
/// instructions all stay pending (an outage) does not grow the answer with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_lists_a_bounded_number_of_pending_instructions_and_counts_the_rest() {
    use ansinh::payments_report::{RANGE_PENDING_IDS_LISTED_MAX, reconciliation_range};
    use payments_fixtures as pay;
    const MORE: usize = 3;
    let people = (RANGE_PENDING_IDS_LISTED_MAX + MORE) as u32;
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    let mut issuing = vec![pay::allocate(
        "2026-11-20",
        pay::COMMUNE,
        "2026-12",
        i64::from(people) * 10 * pay::AMOUNT,
    )];
    for n in 1..=people {
        issuing.push(pay::grant(
            "2026-11-20",
            n,
            "2026-12",
            pay::terms(pay::ELDERLY_POOR, pay::bank(), None),
        ));
    }
    issuing.push(pay::run("2026-12-01", "2026-12", None));
    append_payments(&ledger, &[], &pay::history(&issuing)).await;
    let mut stream = stream_of(&config).await;
    let store = tempfile::tempdir().unwrap();
    let db = sled::open(store.path()).unwrap();
    let projector = Projector::open(&db, store.path()).unwrap();
    projector.catch_up(&mut stream, &config).await.unwrap();

    let day = pay::d("2026-12-01");
    let range = reconciliation_range(&projector, "01", day, day, pay::d("2026-12-31"), 10).unwrap();
    assert_eq!(range.lines.len(), 1, "{range:?}");
    let line = &range.lines[0];
    assert_eq!(line.lines.pending_overdue.count, u64::from(people));
    assert_eq!(
        (
            line.lines.pending_overdue_ids.len(),
            line.pending_overdue_ids_not_listed
        ),
        (RANGE_PENDING_IDS_LISTED_MAX, MORE as u64)
    );
    // The first in instruction order, as the one-day read lists them all.
    let whole = projector
        .reconciliation_day("01", day, pay::d("2026-12-31"), 10)
        .unwrap()
        .unwrap();
    let all = &whole.values().next().unwrap().pending_overdue_ids;
    assert_eq!(all.len(), people as usize);
    assert_eq!(
        line.lines.pending_overdue_ids,
        all[..RANGE_PENDING_IDS_LISTED_MAX]
    );
}

/// A range's line lists at most `RANGE_MISMATCHES_LISTED_MAX` of its mismatches, the
/// first in event order, and counts the rest; the totals and the CSV count them all. A
/// gateway's batch of results that do not match (here: every amount wrong) must not grow
/// the answer with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_lists_a_bounded_number_of_mismatches_and_counts_the_rest() {
    use ansinh::domain::payments::ids::{GatewayTxnId, InstructionRef};
    use ansinh::domain::payments::instructions::Outcome;
    use ansinh::domain::payments::{Actor, Command, CommandKind};
    use ansinh::payments_report::{
        RANGE_MISMATCHES_LISTED_MAX, reconciliation_csv, reconciliation_range,
    };
    use payments_fixtures as pay;
    const MORE: usize = 3;
    let people = (RANGE_MISMATCHES_LISTED_MAX + MORE) as u32;
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    let mut issuing = vec![pay::allocate(
        "2026-11-20",
        pay::COMMUNE,
        "2026-12",
        i64::from(people) * 10 * pay::AMOUNT,
    )];
    for n in 1..=people {
        issuing.push(pay::grant(
            "2026-11-20",
            n,
            "2026-12",
            pay::terms(pay::ELDERLY_POOR, pay::bank(), None),
        ));
    }
    issuing.push(pay::run("2026-12-01", "2026-12", None));
    let issued = pay::history(&issuing);
    let mismatching: Vec<Command> = (1..=people)
        .map(|n| {
            let mut post = pay::Post::new(
                pay::BANK,
                "pay:1:2026-12:1",
                Outcome::Settled,
                "T",
                pay::AMOUNT + 1,
            )
            .of(n)
            .body();
            post.instruction = InstructionRef::parse(&format!("pay:{n}:2026-12:1")).unwrap();
            post.gateway_txn = GatewayTxnId::parse(&format!("T{n}")).unwrap();
            Command {
                actor: Actor::Gateway(pay::gw(pay::BANK)),
                effective: pay::d("2026-12-02"),
                kind: CommandKind::Post(post),
            }
        })
        .collect();
    let all = pay::history_from(&issued, &mismatching);
    append_payments(&ledger, &[], &all).await;
    let mut stream = stream_of(&config).await;
    let store = tempfile::tempdir().unwrap();
    let db = sled::open(store.path()).unwrap();
    let projector = Projector::open(&db, store.path()).unwrap();
    projector.catch_up(&mut stream, &config).await.unwrap();

    let (from, day, as_of) = (
        pay::d("2026-12-01"),
        pay::d("2026-12-02"),
        pay::d("2026-12-31"),
    );
    let range = reconciliation_range(&projector, "01", from, day, as_of, 10).unwrap();
    let line = range
        .lines
        .iter()
        .find(|l| l.day == day)
        .unwrap_or_else(|| panic!("no line on {day}: {range:?}"));
    assert_eq!(
        (line.lines.mismatches.len(), line.mismatches_not_listed),
        (RANGE_MISMATCHES_LISTED_MAX, MORE as u64)
    );
    assert_eq!(range.totals.mismatches, u64::from(people));
    // The first in event order, as the one-day read lists them all.
    let whole = projector
        .reconciliation_day("01", day, as_of, 10)
        .unwrap()
        .unwrap();
    let listed_whole = &whole.values().next().unwrap().mismatches;
    assert_eq!(listed_whole.len(), people as usize);
    assert_eq!(
        line.lines.mismatches,
        listed_whole[..RANGE_MISMATCHES_LISTED_MAX]
    );
    // The CSV counts every mismatch of the day.
    let csv = reconciliation_csv(&range);
    let row = csv
        .split("\r\n")
        .find(|r| r.contains(",2026-12-02,"))
        .unwrap_or_else(|| panic!("no row on {day}: {csv}"));
    assert!(row.ends_with(&format!(",{people}")), "{row}");
}

/// Household `loan_fixtures::hh()` (commune 0100101) registered, then the payloads of
/// its loan commands decided in order by the loan domain, one payload a command: what
/// the book appends for them.
fn registered_then(
    commands: &[ansinh::domain::loans::Command],
) -> Vec<ansinh::proto::envelope::Payload> {
    use ansinh::domain::loans::{LoanBook, apply, decide};
    use ansinh::proto::{self, envelope::Payload};
    let mut payloads = vec![Payload::HouseholdRegistered(proto::HouseholdRegistered {
        household_id: loan_fixtures::hh().to_string(),
        commune_code: "0100101".into(),
        area: "rural".into(),
        members: 3,
        registered_on: "2025-01-01".into(),
        ..Default::default()
    })];
    let mut book = LoanBook::default();
    for command in commands {
        let events = decide(&book, command.clone()).unwrap();
        for e in &events {
            apply(&mut book, e);
        }
        match events.as_slice() {
            [
                ansinh::domain::loans::Event {
                    body:
                        ansinh::domain::loans::EventBody::HouseholdClassified {
                            decision,
                            escaped_until,
                            ..
                        },
                    ..
                },
            ] => payloads.push(Payload::EligibilityDecided(
                ansinh::book::codec::decided_to_proto(decision, *escaped_until),
            )),
            _ => payloads.extend(ansinh::book::codec::loan_payloads(&events)),
        }
    }
    payloads
}

/// Appends `payloads` to partition 01 in order, each naming the household and its
/// commune, as a credit officer's.
async fn append_loan_payloads(
    ledger: &Ledger,
    key: &str,
    payloads: impl IntoIterator<Item = ansinh::proto::envelope::Payload>,
) {
    for (n, payload) in payloads.into_iter().enumerate() {
        let actor = ansinh::proto::Actor {
            id: "officer-1".into(),
            role: "credit_officer".into(),
            unit: "0100101".into(),
        };
        let subjects = vec![
            format!("household:{}", loan_fixtures::hh()),
            "commune:0100101".into(),
        ];
        append_01(ledger, &format!("{key}-{n}"), actor, subjects, payload).await;
    }
}

/// A commune's months are read with its portfolio as one state: a batch of repayments
/// half written (the months' changes in, the portfolio not yet) reads as busy, never as
/// months closing on a portfolio that does not hold their changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_communes_months_are_read_with_the_portfolio_they_close_on() {
    use loan_fixtures::{POOR3, approve, classify, disburse, repay};
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    // Lent in January; a repayment a month, February to December: eleven months'
    // records in one batch.
    let mut commands = vec![
        classify("2025-01-02", 1_200_000, POOR3, 2025),
        approve("2025-01-05", "POOR_HOUSEHOLD", 12_000_000, 12),
        disburse("2025-01-10", 1, 12_000_000),
    ];
    for month in 2..=12 {
        commands.push(repay(
            &format!("2025-{month:02}-10"),
            1,
            rust_decimal::Decimal::from(1_000_000),
        ));
    }
    let mut payloads = registered_then(&commands);
    let repayments = payloads.split_off(4);
    append_loan_payloads(&ledger, "lend", payloads).await;
    let mut stream = stream_of(&config).await;
    let lent_end = reader::last_stream_sequence(&mut stream).await.unwrap();
    append_loan_payloads(&ledger, "repay", repayments).await;
    let end = reader::last_stream_sequence(&mut stream).await.unwrap();

    let store = tempfile::tempdir().unwrap();
    let db = sled::open(store.path()).unwrap();
    let projector = Projector::open(&db, store.path()).unwrap();
    projector
        .catch_up_to(&mut stream, &config, lent_end)
        .await
        .unwrap();
    let before = projector.commune_months("0100101", 24).unwrap();
    assert_eq!(before.len(), 1);

    stop_a_commit(
        &projector,
        &mut stream,
        &config,
        end,
        1,
        Crash::InsideCommitBefore("commune/"),
    )
    .await;
    let torn = projector.commune_months("0100101", 24);
    if let Ok(months) = &torn {
        assert_eq!(months, &before, "months of a half-written batch");
    }
    assert_busy(torn, "a commune's months");

    projector
        .catch_up_to(&mut stream, &config, end)
        .await
        .unwrap();
    let after = projector.commune_months("0100101", 24).unwrap();
    assert_eq!(after.len(), 12);
    // The month the loan was lent closes on what was lent, as before the repayments.
    assert_eq!(after[0], before[0]);
}

/// A household is read with the records of the loans it lists as one state: a batch
/// that approved a loan, half written (the household's record listing it in, the loan's
/// record not yet), reads as busy, never as a household whose loan is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_household_is_read_with_every_loan_it_lists() {
    use loan_fixtures::{POOR3, approve, classify};
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    let mut payloads = registered_then(&[
        classify("2025-01-02", 1_200_000, POOR3, 2025),
        approve("2025-01-05", "POOR_HOUSEHOLD", 12_000_000, 12),
    ]);
    let approval = payloads.split_off(2);
    append_loan_payloads(&ledger, "registered", payloads).await;
    let mut stream = stream_of(&config).await;
    let registered_end = reader::last_stream_sequence(&mut stream).await.unwrap();
    append_loan_payloads(&ledger, "approved", approval).await;
    let end = reader::last_stream_sequence(&mut stream).await.unwrap();
    let household = loan_fixtures::hh().to_string();
    let household = household.as_str();

    let store = tempfile::tempdir().unwrap();
    let db = sled::open(store.path()).unwrap();
    let projector = Projector::open(&db, store.path()).unwrap();
    projector
        .catch_up_to(&mut stream, &config, registered_end)
        .await
        .unwrap();
    let before = projector
        .household_records(household, Some((0, 10)))
        .unwrap()
        .unwrap();
    assert!(before.view.loans.is_empty());

    stop_a_commit(
        &projector,
        &mut stream,
        &config,
        end,
        1,
        Crash::InsideCommitBefore("loan/"),
    )
    .await;
    let torn = projector.household_records(household, Some((0, 10)));
    if let Ok(Some(records)) = &torn {
        assert_eq!(
            records.loans.len(),
            records.view.loans.len(),
            "a listed loan left out: {records:?}"
        );
    }
    assert_busy(torn, "a household");

    projector
        .catch_up_to(&mut stream, &config, end)
        .await
        .unwrap();
    let after = projector
        .household_records(household, Some((0, 10)))
        .unwrap()
        .unwrap();
    assert_eq!(after.view.loans.len(), 1);
    assert_eq!(after.loans.len(), 1);
    // The history page is read in the same state: it shows the approval the loans
    // list, and had none before it.
    let approvals = |r: &ansinh::projection::HouseholdRecords| {
        r.history
            .as_ref()
            .expect("asked for")
            .lines
            .iter()
            .filter(|l| l.event_type.ends_with("LoanApproved"))
            .count()
    };
    assert_eq!((approvals(&before), approvals(&after)), (0, 1));
}
