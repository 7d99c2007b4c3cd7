//! `ansinh serve`: the staff HTTP API, the gateways' endpoints and the console, with
//! checkpoints published in the background while it runs.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use ansinh::app::Runtime;
use ansinh::checkpoint;

use super::BoxError;

/// Serves on `listen` until asked to stop, then stops the checkpointer within a bound:
/// past it the process exits at once rather than hang on an unreachable NATS.
pub async fn serve(
    runtime: &Runtime,
    checkpoints: &checkpoint::CheckpointConfig,
    data_dir: &Path,
    policy: checkpoint::Policy,
    listen: SocketAddr,
    staff: &Path,
) -> Result<ExitCode, BoxError> {
    let task = match runtime
        .start_checkpoints(checkpoints, data_dir, policy)
        .await
    {
        Ok(task) => Some(task),
        // An unsafe stream, or no server: nothing could be served either.
        Err(
            e @ (checkpoint::CheckpointError::Stream(_) | checkpoint::CheckpointError::Nats(_)),
        ) => {
            return Err(e.into());
        }
        // The ledger serves without checkpoints rather than not at all: writes, reads
        // and the projections do not need them, and the operator sees why in the log
        // (and in `ansinh audit verify`).
        Err(e) => {
            tracing::error!(error = %e, "serving without checkpoints: the checkpointer cannot start");
            let _ = writeln!(
                std::io::stderr(),
                "ansinh: serving without checkpoints: the checkpointer cannot start: {e}"
            );
            None
        }
    };
    let registry = data_dir.join(ansinh::gateway::keys::REGISTRY_FILE);
    let served = ansinh::http::run(runtime, listen, staff, &registry, checkpoints).await;
    let Some(task) = task else {
        served?;
        return Ok(ExitCode::SUCCESS);
    };
    // Stopped on every path, so a checkpoint under way completes before exit; but
    // with NATS away its last publish would wait for ever: bounded, and past the
    // bound the process exits at once (dropping the runtime would wait for it).
    let bound = ansinh::http::SHUTDOWN_STEP_WAIT_MAX;
    if tokio::time::timeout(bound, task.stop()).await.is_err() {
        // Not eprintln!: whoever read our stderr may have gone, and a failed write
        // must not turn a clean stop into a panic.
        let _ = writeln!(
            std::io::stderr(),
            "ansinh: the checkpointer did not stop within {} s (is NATS reachable?); exiting",
            bound.as_secs()
        );
        std::process::exit(if served.is_ok() { 0 } else { 2 });
    }
    served?;
    Ok(ExitCode::SUCCESS)
}
