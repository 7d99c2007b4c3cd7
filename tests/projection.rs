//! Projections applied in batches against a real nats-server: a commit that fails inside
//! a batch (what a crash before it leaves) writes nothing of the batch, and catching up
//! again gives exactly the projections of a clean rebuild: every event applied once.

mod common;

use ansinh::log::reader;
use ansinh::projection::{PROJECTION_BATCH_EVENTS_MAX, Projector};
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
