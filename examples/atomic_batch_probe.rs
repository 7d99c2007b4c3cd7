//! What the server alone gives group commit on this machine: atomic-batch commit latency
//! and throughput by batch size, with W writers on W subjects of one stream, or (with
//! `--streams`) on W streams. No ledger code is involved; docs/BENCH.md quotes it.
//! With `--lone`, one more task times single fsynced publishes, one after another, while
//! the writers run: on a subject of the writers' first stream, or (with `--streams`) on a
//! stream of its own. That is the server's floor for "one command under load". With
//! `--msg-id`, every message carries a `Nats-Msg-Id`; with `--ledger-headers`, the
//! ledger's `Ansinh-Hash` and `Ansinh-Seq` headers; with `--fence`, its
//! `Nats-Expected-Last-Subject-Sequence` on each batch. With `--gate-batch`, the writers
//! take turns: one batch (send and commit) at a time, as the ledger's commit gate does;
//! with `--gate-commit` they send their batches' messages freely and take turns only to
//! commit, so the next batch is staged while one commits. With `--bytes=N` the writers'
//! messages are N bytes instead of one envelope's 300: what the server would give if one
//! message carried several events.
//!
//!     cargo run --release --example atomic_batch_probe -- WRITERS SIZE... [--streams] [--lone] [--msg-id] [--ledger-headers] [--fence] [--gate-batch|--gate-commit] [--bytes=N]
//!     cargo run --release --example atomic_batch_probe -- 1 1 10 100 1000
//!     cargo run --release --example atomic_batch_probe -- 3 1000 --lone
//!
//! Starts its own `sync_interval: always` nats-server (found like the ledger finds it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ansinh::nats_server::{NatsServer, Sync};
use async_nats::header;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + std::marker::Sync>>;

/// Message size of the ledger bench's envelopes.
const MESSAGE_BYTES: usize = 300;
/// Messages per size and writer (at least MIN_BATCHES, at most MAX_BATCHES batches).
const MESSAGES_PER_SIZE: usize = 20_000;
const MIN_BATCHES: usize = 20;
const MAX_BATCHES: usize = 200;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let separate_streams = args.iter().any(|a| a == "--streams");
    let lone = args.iter().any(|a| a == "--lone");
    let extra = ExtraHeaders {
        msg_ids: args.iter().any(|a| a == "--msg-id"),
        ledger: args.iter().any(|a| a == "--ledger-headers"),
        fence: args.iter().any(|a| a == "--fence"),
        plain: args.iter().any(|a| a == "--plain"),
    };
    let gate = match (
        args.iter().any(|a| a == "--gate-batch"),
        args.iter().any(|a| a == "--gate-commit"),
    ) {
        (false, false) => Gate::None,
        (true, false) => Gate::Batch(Default::default()),
        (false, true) => Gate::Commit(Default::default()),
        (true, true) => return Err("--gate-batch and --gate-commit exclude each other".into()),
    };
    // The writers' message size; the lone publisher keeps one event's size.
    let message_bytes = match args.iter().find_map(|a| a.strip_prefix("--bytes=")) {
        Some(n) => n.parse()?,
        None => MESSAGE_BYTES,
    };
    let numbers: Vec<usize> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse())
        .collect::<std::result::Result<_, _>>()?;
    let (writers, sizes) = match numbers.split_first() {
        Some((w, sizes)) if !sizes.is_empty() && sizes.iter().all(|s| (1..=1000).contains(s)) => {
            (*w, sizes.to_vec())
        }
        _ => {
            return Err(
                "usage: atomic_batch_probe WRITERS SIZE(1..=1000)... [--streams] [--lone] [--msg-id] [--ledger-headers] [--fence] [--gate-batch|--gate-commit] [--bytes=N] [--plain]"
                    .into(),
            );
        }
    };
    let dir = tempfile::tempdir()?;
    let server = NatsServer::start(dir.path(), Sync::Always)?;
    let client = ansinh::app::connect(&server.url(), &ansinh::app::NatsAuth::default()).await?;
    let js = jetstream::new(client.clone());
    let stream_count = if separate_streams { writers } else { 1 };
    let mut names: Vec<String> = (0..stream_count).map(|s| s.to_string()).collect();
    if lone && separate_streams {
        names.push("L".into());
    }
    for s in &names {
        js.create_stream(stream::Config {
            name: format!("PROBE{s}"),
            subjects: vec![format!("probe{s}.>")],
            storage: stream::StorageType::File,
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let timed = lone.then(|| {
        let subject = if separate_streams {
            "probeL.lone"
        } else {
            "probe0.lone"
        };
        tokio::spawn(lone_publisher(subject, js.clone(), stop.clone()))
    });
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let stream = if separate_streams { w } else { 0 };
        let subject = format!("probe{stream}.w{w}");
        let (client, js, sizes) = (client.clone(), js.clone(), sizes.clone());
        let gate = gate.clone();
        tasks.spawn(async move {
            let shape = Shape {
                sizes,
                message_bytes,
            };
            writer(w, subject, client, js, shape, extra, gate).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(timed) = timed {
        let mut ms = timed.await??;
        if ms.is_empty() {
            return Err("no lone publish finished while the writers ran".into());
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "lone publish under load: p50 {:6.2} ms, p99 {:6.2} ms, max {:6.2} ms ({} samples)",
            ms[ms.len() / 2],
            ms[ms.len() * 99 / 100],
            ms[ms.len() - 1],
            ms.len()
        );
    }
    Ok(())
}

/// Times one fsynced publish after another until `stop`; returns milliseconds.
async fn lone_publisher(
    subject: &'static str,
    js: jetstream::Context,
    stop: Arc<AtomicBool>,
) -> Result<Vec<f64>> {
    let payload = Bytes::from(vec![b'x'; MESSAGE_BYTES]);
    let mut ms = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        js.publish(subject, payload.clone()).await?.await?;
        // The last one may have overlapped the writers' end; it is dropped.
        if !stop.load(Ordering::Relaxed) {
            ms.push(started.elapsed().as_secs_f64() * 1_000.0);
        }
    }
    Ok(ms)
}

/// Headers the writers add beyond the batch's own (see the module doc).
#[derive(Clone, Copy)]
struct ExtraHeaders {
    msg_ids: bool,
    ledger: bool,
    /// The ledger's fence on each batch's first message: the subject's last sequence.
    fence: bool,
    /// Batches of one are plain publishes, without the batch headers: a commit of one
    /// large message (a frame holding the whole group commit).
    plain: bool,
}

/// What each writer sends: batches of these sizes, of messages of this many bytes.
struct Shape {
    sizes: Vec<usize>,
    message_bytes: usize,
}

/// How writers share the stream (see the module doc).
#[derive(Clone)]
enum Gate {
    None,
    Batch(Arc<tokio::sync::Mutex<()>>),
    Commit(Arc<tokio::sync::Mutex<()>>),
}

async fn writer(
    w: usize,
    subject: String,
    client: async_nats::Client,
    js: jetstream::Context,
    shape: Shape,
    extra: ExtraHeaders,
    gate: Gate,
) -> Result<()> {
    let Shape {
        sizes,
        message_bytes,
    } = shape;
    let payload = Bytes::from(vec![b'x'; message_bytes]);
    let mut batch_number = 0u64;
    let mut last_on_subject = 0u64;
    for size in sizes {
        let batches = (MESSAGES_PER_SIZE / size).clamp(MIN_BATCHES, MAX_BATCHES);
        let mut latencies_ms = Vec::with_capacity(batches);
        let started = Instant::now();
        for _ in 0..batches {
            batch_number += 1;
            let id = format!("w{w}b{batch_number}");
            let batch_started = Instant::now();
            let mut turn = match &gate {
                Gate::Batch(m) => Some(m.lock().await),
                _ => None,
            };
            for i in 1..=size {
                let mut headers = async_nats::HeaderMap::new();
                let plain = extra.plain && size == 1;
                if !plain {
                    headers.insert(header::NATS_BATCH_ID, id.as_str());
                    headers.insert(header::NATS_BATCH_SEQUENCE, i.to_string().as_str());
                }
                if extra.msg_ids {
                    headers.insert(header::NATS_MESSAGE_ID, format!("{id}-{i}").as_str());
                }
                if extra.ledger {
                    let sequence = (batch_number - 1) * size as u64 + i as u64;
                    headers.insert(
                        "Ansinh-Hash",
                        blake3::hash(&sequence.to_be_bytes()).to_hex().as_str(),
                    );
                    headers.insert("Ansinh-Seq", sequence.to_string().as_str());
                }
                if extra.fence && i == 1 {
                    headers.insert(
                        header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                        last_on_subject.to_string().as_str(),
                    );
                }
                if i < size {
                    client
                        .publish_with_headers(subject.clone(), headers, payload.clone())
                        .await?;
                } else {
                    if !plain {
                        headers.insert(header::NATS_BATCH_COMMIT, header::NATS_BATCH_COMMIT_FINAL);
                    }
                    if let Gate::Commit(m) = &gate {
                        turn = Some(m.lock().await);
                    }
                    last_on_subject = js
                        .send_publish(
                            subject.clone(),
                            PublishMessage::build()
                                .headers(headers)
                                .payload(payload.clone()),
                        )
                        .await?
                        .await?
                        .sequence;
                }
            }
            drop(turn);
            latencies_ms.push(batch_started.elapsed().as_secs_f64() * 1_000.0);
        }
        let seconds = started.elapsed().as_secs_f64();
        latencies_ms.sort_by(f64::total_cmp);
        println!(
            "writer {w} batch size {size:4}: commit p50 {:6.2} ms, p99 {:6.2} ms, {:7.0} msgs/s, {:5.1} MB/s",
            latencies_ms[latencies_ms.len() / 2],
            latencies_ms[latencies_ms.len() * 99 / 100],
            (batches * size) as f64 / seconds,
            (batches * size * message_bytes) as f64 / seconds / 1e6
        );
    }
    Ok(())
}
