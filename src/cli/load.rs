//! `ansinh load`: a load generator for operations and crash tests.

use std::process::ExitCode;

use ansinh::app::Runtime;
use ansinh::chain::Partition;
use ansinh::log::Draft;
use ansinh::proto::{self, envelope::Payload};

use super::BoxError;

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
