//! `ansinh projections ...`: the derived state in sled, brought up to the log or rebuilt
//! from it, and its per-partition summary.

use std::process::ExitCode;

use ansinh::app::Runtime;

use super::BoxError;

/// `ansinh projections catch-up`: applies the events not yet projected and prints the
/// position reached.
pub async fn catch_up(runtime: &Runtime, json: bool) -> Result<ExitCode, BoxError> {
    let projector = &runtime.projector;
    let mut stream = runtime.ledger.stream().clone();
    let n = projector
        .catch_up(&mut stream, runtime.ledger.config())
        .await?;
    let position = projector.position()?.last.stream_sequence;
    if json {
        println!(
            "{}",
            serde_json::json!({"applied": n, "stream_sequence": position})
        );
    } else {
        println!("applied {n} events; position: stream sequence {position}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `ansinh projections rebuild`: drops every projection, replays the log from the start
/// and prints the fingerprint of the result (equal runs give equal fingerprints).
pub async fn rebuild(runtime: &Runtime, json: bool) -> Result<ExitCode, BoxError> {
    let projector = &runtime.projector;
    let mut stream = runtime.ledger.stream().clone();
    let n = projector
        .rebuild(&mut stream, runtime.ledger.config())
        .await?;
    let fingerprint = projector.fingerprint()?;
    if json {
        println!(
            "{}",
            serde_json::json!({"events": n, "fingerprint": fingerprint.to_string()})
        );
    } else {
        println!("rebuilt from {n} events; fingerprint {fingerprint}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `ansinh projections summary`: catches up, then prints each partition's events, head
/// and events by type.
pub async fn summary(runtime: &Runtime, json: bool) -> Result<ExitCode, BoxError> {
    let projector = &runtime.projector;
    let mut stream = runtime.ledger.stream().clone();
    projector
        .catch_up(&mut stream, runtime.ledger.config())
        .await?;
    super::demo::print_summaries(projector, json)?;
    Ok(ExitCode::SUCCESS)
}
