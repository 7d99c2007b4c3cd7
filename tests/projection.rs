//! Projections applied in batches against a real nats-server: a commit that fails inside
//! a batch (what a crash before it leaves) writes nothing of the batch, and catching up
//! again gives exactly the projections of a clean rebuild: every event applied once. A
//! trail reads the same however the log was batched into runs.

mod common;

use ansinh::log::reader;
use ansinh::projection::{PROJECTION_BATCH_EVENTS_MAX, Projector, TRAIL_RUN_LINES_MAX};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_fails_to_commit_is_applied_once_on_the_next_catch_up() {
    let config = fresh_log();
    let (ledger, _dir) = ledger(&config).await;
    // Three partitions, a little over two batches of events, several events a message.
    let total = 2 * PROJECTION_BATCH_EVENTS_MAX + 500;
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
    let mut stream = stream_of(&config).await;
    let end = reader::last_stream_sequence(&mut stream).await.unwrap();

    let store = tempfile::tempdir().unwrap();
    let db = sled::open(store.path()).unwrap();
    let projector = Projector::open(&db).unwrap();
    // The commit of the second batch fails: the first batch stays, none of the second.
    let fail_at = (PROJECTION_BATCH_EVENTS_MAX + 10) as u64;
    let failed = projector
        .catch_up_failing_at(&mut stream, &config, end, Some(fail_at))
        .await;
    assert!(failed.is_err(), "{failed:?}");
    let applied =
        |p: &Projector| -> u64 { p.summaries().unwrap().values().map(|s| s.events).sum() };
    assert_eq!(applied(&projector), PROJECTION_BATCH_EVENTS_MAX as u64);
    // The next catch-up applies the rest, each event once.
    let rest = projector
        .catch_up_to(&mut stream, &config, end)
        .await
        .unwrap();
    assert_eq!(rest, (total - PROJECTION_BATCH_EVENTS_MAX) as u64);
    assert_eq!(applied(&projector), total as u64);

    let clean_dir = tempfile::tempdir().unwrap();
    let clean_db = sled::open(clean_dir.path()).unwrap();
    let clean = Projector::open(&clean_db).unwrap();
    assert_eq!(
        clean.rebuild(&mut stream, &config).await.unwrap(),
        total as u64
    );
    assert_eq!(
        projector.fingerprint().unwrap(),
        clean.fingerprint().unwrap()
    );
    // Every subject's trail holds its event once.
    assert_eq!(projector.trail("note:n7").unwrap().len(), 1);
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
    let following = Projector::open(&db).unwrap();
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
    let rebuilt = Projector::open(&rebuilt_db).unwrap();
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
    assert_eq!(
        following.fingerprint().unwrap(),
        rebuilt.fingerprint().unwrap()
    );
    // The rebuild stored the shared subject's 150 lines in three records, the follower
    // in one a catch-up; each note's one line is a record of its own in both.
    let records = |db: &sled::Db| db.open_tree("proj.trail").unwrap().len();
    assert_eq!(
        records(&rebuilt_db),
        SHARED + SHARED.div_ceil(TRAIL_RUN_LINES_MAX)
    );
    assert!(
        records(&db) > records(&rebuilt_db),
        "{} {}",
        records(&db),
        records(&rebuilt_db)
    );
}
