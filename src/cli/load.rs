//! `ansinh note` and `ansinh load`: notes (annotations with no money) appended to a
//! partition's chain, one by an operator, or many at once to load the ledger for
//! operations and crash tests.

use std::process::ExitCode;

use ansinh::app::Runtime;
use ansinh::chain::Partition;
use ansinh::log::Draft;
use ansinh::proto::{self, envelope::Payload};

use super::BoxError;

/// `ansinh note`: appends one note and prints where it landed and its idempotency key;
/// run again with the same key, it appends nothing and says so. A failure carries the
/// key (`Unsettled`): the note may be recorded, and only that key retries it safely.
pub async fn note(
    runtime: &Runtime,
    partition: Partition,
    text: String,
    idempotency_key: Option<String>,
    actor: String,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let key = idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let draft = Draft {
        partition: partition.clone(),
        actor: proto::Actor {
            id: actor,
            role: "operator".into(),
            unit: String::new(),
        },
        idempotency_key: key.clone(),
        correlation_id: String::new(),
        request_fingerprint: None,
        subjects: vec![format!("partition:{partition}")],
        payload: Payload::Note(proto::Note { text }),
    };
    let receipt = runtime
        .ledger
        .append(draft)
        .await
        .map_err(|e| super::Unsettled {
            idempotency_key: key.clone(),
            source: e.into(),
        })?;
    if json {
        let mut out = super::staff::receipt_json(&receipt);
        out["idempotency_key"] = key.as_str().into();
        println!("{out}");
    } else {
        println!(
            "{} partition {} sequence {} hash {} (idempotency key {key})",
            if receipt.duplicate {
                "duplicate"
            } else {
                "appended"
            },
            receipt.partition,
            receipt.sequence,
            receipt.hash
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `ansinh load`: appends `count` notes with up to `concurrency` in flight, printing
/// "ack SEQ HASH" for each acknowledged one.
pub async fn load(
    runtime: &Runtime,
    partition: &str,
    count: u64,
    concurrency: usize,
    prefix: &str,
) -> Result<ExitCode, BoxError> {
    use std::io::Write;
    let partition = Partition::new(partition)?;
    let mut tasks = tokio::task::JoinSet::new();
    let stdout = std::io::stdout();
    for n in 0..count {
        while tasks.len() >= concurrency {
            let receipt: ansinh::log::Receipt = tasks.join_next().await.expect("non-empty")??;
            writeln!(stdout.lock(), "ack {} {}", receipt.sequence, receipt.hash)?;
        }
        let ledger = runtime.ledger.clone();
        let draft = Draft {
            partition: partition.clone(),
            actor: proto::Actor {
                id: "system:load".into(),
                role: "system".into(),
                unit: String::new(),
            },
            idempotency_key: format!("{prefix}:{n}"),
            correlation_id: String::new(),
            request_fingerprint: None,
            subjects: vec![],
            payload: Payload::Note(proto::Note {
                text: format!("load {n}"),
            }),
        };
        tasks.spawn(async move { ledger.append(draft).await });
    }
    while let Some(r) = tasks.join_next().await {
        let receipt = r??;
        writeln!(stdout.lock(), "ack {} {}", receipt.sequence, receipt.hash)?;
    }
    Ok(ExitCode::SUCCESS)
}
