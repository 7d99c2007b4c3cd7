//! The durable append rate of the ledger on one server (R1) beside a 3-node cluster of
//! real nats-servers with the stream on three replicas (R3), same load: notes appended
//! through the ledger's group commit, `IN_FLIGHT` at a time over four partitions, every
//! server `sync_interval: always`. docs/BENCH.md quotes it.
//!
//!     cargo run --release --example replicas_probe -- [APPENDS]
//!
//! Starts its own servers on loopback (found like the ledger finds them).

use std::time::{Duration, Instant};

use ansinh::app;
use ansinh::chain::Partition;
use ansinh::log::{Draft, Ledger, LedgerStore, LogConfig};
use ansinh::nats_server::{NatsServer, Sync};
use ansinh::proto::{self, envelope::Payload};
use tokio::task::JoinSet;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + std::marker::Sync>>;

/// Appends in flight at once (the ledger gathers them into commits).
const IN_FLIGHT: usize = 4_096;
/// Default number of appends per run.
const APPENDS_DEFAULT: u64 = 200_000;
/// How long a cluster may take to elect its JetStream leaders.
const ELECTION_WAIT_MAX: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> Result<()> {
    let appends: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => APPENDS_DEFAULT,
    };
    let dir = tempfile::tempdir()?;
    let single = NatsServer::start(&dir.path().join("single"), Sync::Always)?;
    let r1 = run(&single.url(), 1, appends, &dir.path().join("r1")).await?;
    drop(single);
    let nodes = NatsServer::start_cluster(&dir.path().join("cluster"), 3, Sync::Always)?;
    let urls: Vec<String> = nodes.iter().map(NatsServer::url).collect();
    let r3 = run(&urls.join(","), 3, appends, &dir.path().join("r3")).await?;
    println!("| replicas | appends | seconds | appends/s |");
    println!("|---|---|---|---|");
    for (replicas, (seconds, errors)) in [(1, r1), (3, r3)] {
        println!(
            "| R{replicas} | {appends} ({errors} failed) | {seconds:.2} | {:.0} |",
            appends as f64 / seconds
        );
    }
    println!("R3 / R1: {:.2}x", r1.0 / r3.0);
    Ok(())
}

async fn run(
    url: &str,
    replicas: usize,
    appends: u64,
    store: &std::path::Path,
) -> Result<(f64, u64)> {
    let config = LogConfig {
        stream_name: format!("PROBE_R{replicas}"),
        subject_prefix: format!("probe{replicas}.events"),
        replicas,
    };
    let deadline = Instant::now() + ELECTION_WAIT_MAX;
    let ledger = loop {
        let client = app::connect(url, &ansinh::app::NatsAuth::default()).await?;
        let store = LedgerStore::open(&store.join("ledger.sled"))?;
        match Ledger::open(client, config.clone(), store).await {
            Ok((ledger, _)) => break ledger,
            Err(e) if Instant::now() < deadline => {
                eprintln!("R{replicas}: not ready yet ({e})");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let partitions: Vec<Partition> = ["01", "79", "92", "48"]
        .iter()
        .map(|p| Partition::new(p).expect("valid"))
        .collect();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let mut errors = 0u64;
    for n in 0..appends {
        while tasks.len() >= IN_FLIGHT {
            if let Some(Ok(Err(_))) = tasks.join_next().await {
                errors += 1;
            }
        }
        let (ledger, partition) = (ledger.clone(), partitions[n as usize % 4].clone());
        tasks.spawn(async move {
            ledger
                .append(Draft {
                    partition,
                    actor: proto::Actor {
                        id: "probe".into(),
                        role: "operator".into(),
                        unit: String::new(),
                    },
                    idempotency_key: format!("probe-{n}"),
                    correlation_id: String::new(),
                    request_fingerprint: None,
                    subjects: vec![],
                    payload: Payload::Note(proto::Note {
                        text: "x".repeat(200),
                    }),
                })
                .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(_)) = r {
            errors += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("R{replicas}: {appends} appends in {seconds:.2} s, {errors} failed");
    Ok((seconds, errors))
}
