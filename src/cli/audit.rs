//! `ansinh audit verify`: the chain, its exclusions and the signed checkpoints checked
//! against the log, with the ledger's store (stopping a broken partition) or read-only.

use std::process::ExitCode;

use ansinh::app::Connection;
use ansinh::chain::Partition;
use ansinh::checkpoint;
use ansinh::log::LogConfig;
use indicatif::{ProgressBar, ProgressStyle};

use super::BoxError;

/// `ansinh audit verify --read-only`: the chain and the checkpoints, read from the
/// ledger's streams through a connection that may read them and nothing else. Nothing
/// is created: a stream that does not exist is an error, not a new empty log.
pub async fn verify_read_only(
    connection: &Connection,
    checkpoints: &checkpoint::CheckpointConfig,
    partition: Option<Partition>,
    list_checkpoints: bool,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let Some(url) = &connection.nats_url else {
        return Err("--read-only reads the ledger's NATS server: give --nats".into());
    };
    let client = ansinh::app::connect(url, &connection.auth).await?;
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = ansinh::log::stream::open_existing(&js, &connection.log).await?;
    let code = verify(
        &mut stream,
        &connection.log,
        checkpoints,
        partition.clone(),
        json,
        None,
    )
    .await?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let ok = checkpoint::cli::verify(
        client,
        &connection.log,
        checkpoints,
        partition.as_ref().map(|p| p.as_str()),
        list_checkpoints,
        json,
    )
    .await?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Verifies the log (or one partition) and prints the verdict. With the ledger's own
/// store (`quarantine`), a partition whose chain is found broken is stopped for appends
/// (`ansinh::verify::quarantine_broken`): nothing is built past the damage.
pub async fn verify(
    stream: &mut async_nats::jetstream::stream::Stream,
    config: &LogConfig,
    checkpoints: &checkpoint::CheckpointConfig,
    partition: Option<Partition>,
    json: bool,
    quarantine: Option<&ansinh::log::LedgerStore>,
) -> Result<ExitCode, BoxError> {
    let only = partition;
    let total = stream.info().await?.state.last_sequence;
    let bar = if json || total == 0 {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template("verifying {bar:40} {pos}/{len} {per_sec}")
            .expect("valid template"),
    );
    let result = ansinh::verify::verify(stream, config, only.as_ref(), |seq| {
        if seq % 1024 == 0 {
            bar.set_position(seq)
        }
    })
    .await;
    bar.finish_and_clear();
    match result {
        Ok(report)
            if only
                .as_ref()
                .is_some_and(|p| !report.partitions.contains_key(p.as_str())) =>
        {
            // An auditor's typo must not read as a clean audit of nothing.
            let p = only.as_ref().expect("checked above");
            Ok(crate::cli::not_found(json, "partition", p.as_str()))
        }
        Ok(report) => {
            // Each exclusion must be the ledger's own decision: signed by a ledger key in
            // force when it was recorded.
            let mut exclusions = Vec::new();
            if !report.exclusions.is_empty() {
                let ring = checkpoint::read::read_key_ring(stream, config, checkpoints).await?;
                for x in &report.exclusions {
                    let signature = x.check_signature(&ring);
                    exclusions.push(serde_json::json!({
                        "partition": x.partition,
                        "stream_sequence": x.stream_sequence,
                        "message_hash": x.message_hash.to_hex(),
                        "cause": x.cause.to_string(),
                        "decided_at_sequence": x.decided_at_sequence,
                        "decided_at_stream_sequence": x.decided_at_stream_sequence,
                        "reason": x.decision.reason,
                        "key_id": x.decision.key_id,
                        "signature_ok": signature.is_ok(),
                    }));
                    if let Err(e) = signature {
                        if json {
                            println!(
                                "{}",
                                serde_json::json!({"ok": false, "error": format!("the exclusion at sequence {} of partition {}: {e}", x.decided_at_sequence, x.partition), "exclusions": exclusions})
                            );
                        } else {
                            println!(
                                "FAILED partition {}: the exclusion at sequence {} (stream sequence {}) is not the ledger's: {e}",
                                x.partition, x.decided_at_sequence, x.decided_at_stream_sequence
                            );
                        }
                        return Ok(ExitCode::from(1));
                    }
                }
            }
            if json {
                let parts: serde_json::Map<String, serde_json::Value> = report
                    .partitions
                    .iter()
                    .map(|(p, r)| {
                        (
                            p.clone(),
                            serde_json::json!({"events": r.events, "head": r.head.to_hex()}),
                        )
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "events": report.events, "partitions": parts, "exclusions": exclusions})
                );
            } else {
                for (p, r) in &report.partitions {
                    println!("OK partition {p}: {} events, head {}", r.events, r.head);
                }
                for x in &report.exclusions {
                    println!(
                        "EXCLUDED partition {}: the message at stream sequence {} ({}), by the ledger-signed decision at sequence {} (stream sequence {}): {}",
                        x.partition,
                        x.stream_sequence,
                        x.cause,
                        x.decided_at_sequence,
                        x.decided_at_stream_sequence,
                        x.decision.reason
                    );
                }
                println!("OK {} events verified", report.events);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let stopped = match quarantine {
                Some(store) => ansinh::verify::quarantine_broken(store, &e)?,
                None => None,
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": e.to_string(), "appends_stopped": stopped})
                );
            } else {
                println!("FAILED: {e}");
                if let Some(p) = stopped {
                    println!(
                        "appends to partition {p} are stopped: repair the message and run `ansinh admin accept-head --partition {p}`, or for a foreign message accept the head and exclude it with `ansinh admin exclude-message` (docs/OPERATIONS.md, sections 4.2 and 4.3)"
                    );
                }
            }
            Ok(ExitCode::from(1))
        }
    }
}
