//! A bucket's batcher against a real nats-server: a small round goes out as single fenced
//! publishes and a larger one as one atomic batch, and either way exactly the writes that
//! lost their race are refused.
//!
//! The rounds are made on a current-thread runtime: every write of a `join_all` reaches
//! the batcher's queue before the batcher runs, so they form one round.

mod common;

use ansinh::kv_writes::{FencedWrites, KV_SINGLES_MAX, WriteError, open_bucket};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use common::{client, fresh_log};

/// Writes of one `join_all` polled together (futures' `join_all` polls up to 30 in one
/// pass; past that it may let the batcher run between them).
const ROUND_MAX: usize = 30;
const _: () = assert!(KV_SINGLES_MAX + 4 <= ROUND_MAX);

struct Bucket {
    js: jetstream::Context,
    kv: kv::Store,
}

async fn bucket() -> Bucket {
    let js = jetstream::new(client().await);
    let kv = open_bucket(
        &js,
        kv::Config {
            bucket: format!("{}_KVW", fresh_log().stream_name),
            history: 8,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        },
    )
    .await
    .expect("open bucket");
    Bucket { js, kv }
}

impl Bucket {
    async fn revision(&self, key: &str) -> u64 {
        self.kv
            .entry(key)
            .await
            .expect("read")
            .map_or(0, |e| e.revision)
    }

    async fn value(&self, key: &str) -> Option<Bytes> {
        self.kv.get(key).await.expect("read")
    }

    async fn messages(&self) -> u64 {
        let mut stream = self.js.get_stream(&self.kv.stream_name).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// The atomic batch a stored message came in, if any.
    async fn batch_of(&self, sequence: u64) -> Option<String> {
        let stream = self.js.get_stream(&self.kv.stream_name).await.unwrap();
        let message = stream.get_raw_message(sequence).await.unwrap();
        message
            .headers
            .get(async_nats::header::NATS_BATCH_ID)
            .map(|id| id.to_string())
    }
}

fn value(n: usize) -> Bytes {
    Bytes::from(format!("0100007-{n:06}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_processes_writing_one_key_through_single_publishes_exactly_one_wins() {
    let bucket = bucket().await;
    // Two batchers, as two ledger processes have: each sends its write as a single
    // publish, fenced on "never written".
    let (a, b) = (
        FencedWrites::spawn(&bucket.js, &bucket.kv),
        FencedWrites::spawn(&bucket.js, &bucket.kv),
    );
    const KEYS: usize = 100;
    for k in 0..KEYS {
        let key = format!("k{k}");
        let (first, second) = tokio::join!(a.write(&key, value(1), 0), b.write(&key, value(2), 0));
        let stored = bucket.value(&key).await.expect("one write stored");
        match (first, second) {
            (Ok(()), Err(WriteError::WrongRevision)) => assert_eq!(stored, value(1)),
            (Err(WriteError::WrongRevision), Ok(())) => assert_eq!(stored, value(2)),
            other => panic!("key {key}: not exactly one winner: {other:?}"),
        }
        assert_eq!(
            bucket.revision(&key).await,
            (k + 1) as u64,
            "one message a key"
        );
    }
    assert_eq!(bucket.messages().await, KEYS as u64);
}

#[tokio::test]
async fn a_round_of_single_publishes_refuses_only_the_writes_that_lost() {
    let bucket = bucket().await;
    let writes = &FencedWrites::spawn(&bucket.js, &bucket.kv);
    // All fences hold: single publishes all the same, none of them in an atomic batch.
    let outcomes = futures::future::join_all(
        (0..KV_SINGLES_MAX)
            .map(move |k| async move { writes.write(&format!("s{k}"), value(k), 0).await }),
    )
    .await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(bucket.messages().await, KV_SINGLES_MAX as u64);
    for sequence in 1..=KV_SINGLES_MAX as u64 {
        assert_eq!(bucket.batch_of(sequence).await, None, "message {sequence}");
    }

    // Every third key is written first, so a write fenced on "never written" loses.
    let taken: Vec<usize> = (0..KV_SINGLES_MAX).filter(|k| k % 3 == 0).collect();
    for &k in &taken {
        writes.write(&format!("k{k}"), value(0), 0).await.unwrap();
    }
    let before = bucket.messages().await;
    let outcomes = futures::future::join_all(
        (0..KV_SINGLES_MAX)
            .map(move |k| async move { writes.write(&format!("k{k}"), value(k + 1), 0).await }),
    )
    .await;
    for (k, outcome) in outcomes.iter().enumerate() {
        let key = format!("k{k}");
        if taken.contains(&k) {
            assert!(
                matches!(outcome, Err(WriteError::WrongRevision)),
                "{key}: {outcome:?}"
            );
            assert_eq!(bucket.value(&key).await, Some(value(0)), "{key} unchanged");
        } else {
            assert!(outcome.is_ok(), "{key}: {outcome:?}");
            assert_eq!(bucket.value(&key).await, Some(value(k + 1)), "{key} stored");
        }
    }
    let stored = (KV_SINGLES_MAX - taken.len()) as u64;
    assert_eq!(bucket.messages().await, before + stored);
}

#[tokio::test]
async fn a_round_above_the_threshold_lands_as_one_batch_all_or_none() {
    let bucket = bucket().await;
    let writes = &FencedWrites::spawn(&bucket.js, &bucket.kv);
    let round = KV_SINGLES_MAX + 4;

    // All fences hold: one atomic batch, every message of it.
    let outcomes = futures::future::join_all(
        (0..round).map(move |k| async move { writes.write(&format!("a{k}"), value(k), 0).await }),
    )
    .await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(bucket.messages().await, round as u64);
    let batch = bucket.batch_of(1).await.expect("stored as an atomic batch");
    for sequence in 2..=round as u64 {
        assert_eq!(bucket.batch_of(sequence).await.as_ref(), Some(&batch));
    }

    // One fence fails (the key was written): the server stores none of the batch, and
    // the writes sent again one by one store every other write once, the loser none.
    let lost = round / 2;
    writes
        .write(&format!("b{lost}"), value(0), 0)
        .await
        .unwrap();
    let before = bucket.messages().await;
    let outcomes = futures::future::join_all(
        (0..round)
            .map(move |k| async move { writes.write(&format!("b{k}"), value(k + 1), 0).await }),
    )
    .await;
    for (k, outcome) in outcomes.iter().enumerate() {
        let key = format!("b{k}");
        if k == lost {
            assert!(
                matches!(outcome, Err(WriteError::WrongRevision)),
                "{key}: {outcome:?}"
            );
            assert_eq!(bucket.value(&key).await, Some(value(0)));
        } else {
            // Had part of the batch been stored, this write's resend would have found
            // its key written and been refused.
            assert!(outcome.is_ok(), "{key}: {outcome:?}");
            assert_eq!(bucket.value(&key).await, Some(value(k + 1)));
        }
    }
    assert_eq!(bucket.messages().await, before + round as u64 - 1);
}

/// A bucket made before the ledger gave its values a lifetime takes it when opened, so
/// its keys (one per gateway post for the requests bucket) stop growing for ever.
#[tokio::test]
async fn a_bucket_made_without_a_lifetime_takes_the_one_asked_for() {
    let js = jetstream::new(client().await);
    let config = kv::Config {
        bucket: format!("{}_AGE", fresh_log().stream_name),
        history: 1,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let made = open_bucket(&js, config.clone()).await.unwrap();
    let age = |kv: kv::Store| {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream(&kv.stream_name).await.unwrap();
            stream.info().await.unwrap().config.max_age
        }
    };
    assert_eq!(age(made).await, std::time::Duration::ZERO);
    let lifetime = std::time::Duration::from_secs(7 * 86_400);
    let opened = open_bucket(
        &js,
        kv::Config {
            max_age: lifetime,
            ..config
        },
    )
    .await
    .unwrap();
    assert_eq!(age(opened).await, lifetime);
}

/// Tries to empty the bucket `bucket` (its stream `stream`) the two ways one request
/// could: a purge of its stream, and a message that rolls up every key. Both must be
/// refused, and the bucket keep every message.
async fn assert_cannot_be_emptied(js: &jetstream::Context, bucket: &str, stream: &str) {
    let mut handle = js.get_stream(stream).await.unwrap();
    let before = handle.info().await.unwrap().state.messages;
    assert!(before > 0, "{stream} holds nothing to lose");
    let purged = handle.purge().await;
    assert!(purged.is_err(), "{stream}: purge answered {purged:?}");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_ROLLUP, "all");
    let rolled = js
        .publish_with_headers(format!("$KV.{bucket}.rollup"), headers, "x".into())
        .await
        .unwrap()
        .await;
    assert!(rolled.is_err(), "{stream}: rollup answered {rolled:?}");
    assert_eq!(
        handle.info().await.unwrap().state.messages,
        before,
        "{stream}"
    );
}

/// The vault (every household's data key) and the directory cannot be emptied by one
/// request of someone holding the ledger's NATS rights, while what the ledger does to
/// them, an erasure and a removal, still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_and_the_directory_refuse_purges_and_rollups_but_erase_and_delete() {
    let config = fresh_log();
    let js = jetstream::new(client().await);
    let dir = tempfile::tempdir().unwrap();
    let vault =
        ansinh::personal::Vault::open(&js, &config.stream_name, 1, &dir.path().join("secrets.key"))
            .await
            .unwrap();
    let data = ansinh::personal::PersonalData {
        head_name: "Nguyễn Văn An".into(),
        head_citizen_id: "001085012345".into(),
        phone: None,
        account_number: None,
        members: vec![],
    };
    let sealed = vault.seal("hh-1", &data).await.unwrap();
    let directory = ansinh::directory::Directory::open(&js, &config.stream_name, 1)
        .await
        .unwrap();
    directory
        .add_staff("staff:lan", ansinh::access::Role::Teller, "0100007")
        .await
        .unwrap();
    for bucket in [
        ansinh::personal::bucket_name(&config.stream_name),
        ansinh::directory::bucket_name(&config.stream_name),
    ] {
        assert_cannot_be_emptied(&js, &bucket, &format!("KV_{bucket}")).await;
    }
    assert_eq!(vault.open_sealed("hh-1", &sealed).await.unwrap(), data);
    assert!(vault.erase("hh-1", 1_700_000_000_000).await.unwrap());
    assert!(matches!(
        vault.open_sealed("hh-1", &sealed).await,
        Err(ansinh::personal::VaultError::Erased { .. })
    ));
    assert!(directory.remove_staff("staff:lan").await.unwrap().is_some());
    assert!(directory.staff().current().is_empty());
}

/// A bucket made as `async_nats` makes one (purges and rollups allowed), as earlier
/// versions did, is given both denials when opened; one kept in memory is refused.
#[tokio::test]
async fn a_bucket_made_open_to_purges_is_closed_to_them_and_one_in_memory_is_refused() {
    let js = jetstream::new(client().await);
    let config = kv::Config {
        bucket: format!("{}_OLD", fresh_log().stream_name),
        history: 1,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let old = js.create_key_value(config.clone()).await.unwrap();
    old.put("hh-1", "key".into()).await.unwrap();
    let kv = open_bucket(&js, config.clone()).await.unwrap();
    let mut stream = js.get_stream(&kv.stream_name).await.unwrap();
    let c = stream.info().await.unwrap().config.clone();
    assert!(c.deny_purge && c.deny_delete && !c.allow_rollup, "{c:?}");
    assert_cannot_be_emptied(&js, &config.bucket, &kv.stream_name).await;
    assert_eq!(kv.get("hh-1").await.unwrap(), Some(Bytes::from("key")));

    let memory = kv::Config {
        bucket: format!("{}_MEM", fresh_log().stream_name),
        storage: jetstream::stream::StorageType::Memory,
        ..config
    };
    js.create_key_value(memory.clone()).await.unwrap();
    let refused = open_bucket(&js, memory).await;
    assert!(
        matches!(&refused, Err(ansinh::log::StreamError::Unsafe { reason, .. }) if reason.contains("memory")),
        "{:?}",
        refused.err()
    );
}
