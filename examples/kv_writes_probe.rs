//! What a bucket's batcher (`kv_writes::FencedWrites`) gives its callers: W concurrent
//! writers on one bucket, each writing new keys (fence 0) one after another, as
//! idempotency keys, citizen claims and data keys are written. Prints writes/s and the
//! p50 / p99 of one write (queue, batch or single publishes, ack) for each W; ADR 0007
//! quotes it.
//!
//!     cargo run --profile bench --example kv_writes_probe                # W = 1 4 16 64, 3 s each
//!     cargo run --profile bench --example kv_writes_probe -- 2 8 --seconds=5
//!     cargo run --profile bench --example kv_writes_probe -- --singles-max=1,8,16,32
//!
//! `--singles-max` measures each W with a batcher sending rounds of up to each of those
//! writes as single publishes (1: every round of two or more writes as an atomic batch),
//! the sweep `KV_SINGLES_MAX` was chosen from; without it, the batcher as the ledger
//! runs it.
//!
//! Starts its own `sync_interval: always` nats-server (found like the ledger finds it).

use std::time::{Duration, Instant};

use ansinh::kv_writes::{FencedWrites, KV_SINGLES_MAX, open_bucket};
use ansinh::nats_server::{NatsServer, Sync};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + std::marker::Sync>>;

/// A claim's value: a household id.
const VALUE: &[u8] = b"0100007-000001";
/// Writers measured when none are named.
const DEFAULT_WRITERS: [usize; 4] = [1, 4, 16, 64];
/// Untimed writes before each measurement (the stream's files, the connection).
const WARM_UP: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = match args.iter().find_map(|a| a.strip_prefix("--seconds=")) {
        Some(s) => s.parse()?,
        None => 3,
    };
    let mut levels: Vec<usize> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse())
        .collect::<std::result::Result<_, _>>()?;
    if levels.is_empty() {
        levels = DEFAULT_WRITERS.to_vec();
    }
    let thresholds: Vec<usize> = match args.iter().find_map(|a| a.strip_prefix("--singles-max=")) {
        Some(list) => list
            .split(',')
            .map(|n| n.parse())
            .collect::<std::result::Result<_, _>>()?,
        None => vec![KV_SINGLES_MAX],
    };

    let dir = tempfile::tempdir()?;
    let server = NatsServer::start(&dir.path().join("nats"), Sync::Always)?;
    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::new(client);
    let store = open_bucket(
        &js,
        kv::Config {
            bucket: "PROBE_CITIZENS".into(),
            history: 8,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        },
    )
    .await?;
    println!("| singles max | writers | writes/s | p50 ms | p99 ms | refused |");
    println!("|---|---|---|---|---|---|");
    for (round, &writers) in levels.iter().enumerate() {
        for (lane, &singles_max) in thresholds.iter().enumerate() {
            let writes = FencedWrites::spawn_with_singles_max(&js, &store, singles_max);
            let tag = round * 100 + lane;
            run(&writes, tag, writers, WARM_UP).await?;
            let measured = run(
                &writes,
                tag + 1_000_000,
                writers,
                Duration::from_secs(seconds),
            )
            .await?;
            let mut latencies = measured.latencies;
            latencies.sort_unstable();
            let quantile = |q: f64| {
                latencies
                    .get(
                        ((latencies.len() as f64 * q) as usize)
                            .min(latencies.len().saturating_sub(1)),
                    )
                    .map_or(0.0, |d| d.as_secs_f64() * 1e3)
            };
            println!(
                "| {singles_max} | {writers} | {:.0} | {:.2} | {:.2} | {} |",
                latencies.len() as f64 / measured.elapsed.as_secs_f64(),
                quantile(0.50),
                quantile(0.99),
                measured.refused,
            );
        }
    }
    Ok(())
}

struct Measured {
    latencies: Vec<Duration>,
    elapsed: Duration,
    refused: usize,
}

/// `writers` tasks writing fresh keys for `span`.
async fn run(
    writes: &FencedWrites,
    round: usize,
    writers: usize,
    span: Duration,
) -> Result<Measured> {
    let started = Instant::now();
    let deadline = started + span;
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let writes = writes.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut refused = 0;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = format!("r{round}-w{writer}-{n}");
                n += 1;
                let sent = Instant::now();
                match writes.write(&key, Bytes::from_static(VALUE), 0).await {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(_) => refused += 1,
                }
            }
            (latencies, refused)
        });
    }
    let mut measured = Measured {
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
        refused: 0,
    };
    while let Some(done) = tasks.join_next().await {
        let (latencies, refused) = done?;
        measured.latencies.extend(latencies);
        measured.refused += refused;
    }
    measured.elapsed = started.elapsed();
    Ok(measured)
}
