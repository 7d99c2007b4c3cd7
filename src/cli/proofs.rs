//! `ansinh audit ...` commands on the commitments: publishing a signed checkpoint,
//! cosigning one, proving an event's inclusion or the log's growth, and exporting an
//! auditor bundle. A partition the log has never seen is answered "not found" first, so
//! a typo does not read as an empty proof.

use std::path::Path;
use std::process::ExitCode;

use ansinh::app::Runtime;
use ansinh::bundle::Scope;
use ansinh::bundle::export::ExportRequest;
use ansinh::chain::Partition;
use ansinh::checkpoint::{self, CheckpointConfig};
use ansinh::domain::ids::{CommuneCode, HouseholdId};

use super::{BoxError, exit_code, unknown_partition};

/// `ansinh audit checkpoint`: signs and publishes a checkpoint of one partition, or of
/// every partition with events since its last one.
pub async fn checkpoint(
    runtime: &Runtime,
    checkpoints: &CheckpointConfig,
    data_dir: &Path,
    partition: Option<Partition>,
    json: bool,
) -> Result<ExitCode, BoxError> {
    if let Some(p) = &partition {
        if let Some(code) = unknown_partition(runtime, p, json).await? {
            return Ok(code);
        }
    }
    let ok = checkpoint::cli::checkpoint(
        runtime,
        checkpoints,
        data_dir,
        partition.as_ref().map(|p| p.as_str()),
        json,
    );
    Ok(exit_code(ok.await?))
}

/// `ansinh audit cosign`: checks the partition's checkpoint of `size` events against the
/// recomputed log, then publishes the cosigner's signature of it.
pub async fn cosign(
    runtime: &Runtime,
    checkpoints: &CheckpointConfig,
    partition: &Partition,
    size: u64,
    cosigner_id: &str,
    key: &Path,
    json: bool,
) -> Result<ExitCode, BoxError> {
    if let Some(code) = unknown_partition(runtime, partition, json).await? {
        return Ok(code);
    }
    let ok = checkpoint::cli::cosign(
        runtime,
        checkpoints,
        partition.as_str(),
        size,
        cosigner_id,
        key,
        json,
    );
    Ok(exit_code(ok.await?))
}

/// `ansinh audit prove`: prints the inclusion proof of the event at `seq` in a signed
/// checkpoint (the latest unless `checkpoint_size` names one).
pub async fn prove(
    runtime: &Runtime,
    checkpoints: &CheckpointConfig,
    partition: &Partition,
    seq: u64,
    checkpoint_size: Option<u64>,
    json: bool,
) -> Result<ExitCode, BoxError> {
    if let Some(code) = unknown_partition(runtime, partition, json).await? {
        return Ok(code);
    }
    let ok = checkpoint::cli::prove(
        runtime,
        checkpoints,
        partition.as_str(),
        seq,
        checkpoint_size,
    );
    Ok(exit_code(ok.await?))
}

/// `ansinh audit consistency`: prints the proof that the partition's checkpoint of `to`
/// events extends the one of `from` events.
pub async fn consistency(
    runtime: &Runtime,
    checkpoints: &CheckpointConfig,
    partition: &Partition,
    from: u64,
    to: u64,
    json: bool,
) -> Result<ExitCode, BoxError> {
    if let Some(code) = unknown_partition(runtime, partition, json).await? {
        return Ok(code);
    }
    let ok = checkpoint::cli::consistency(runtime, checkpoints, partition.as_str(), from, to);
    Ok(exit_code(ok.await?))
}

/// What `audit export` names: a household, else a commune (clap requires one).
pub fn scope(household: Option<HouseholdId>, commune: Option<CommuneCode>) -> Scope {
    match (household, commune) {
        (Some(h), _) => Scope::Household(h.as_str().to_owned()),
        (None, Some(c)) => Scope::Commune(c.as_str().to_owned()),
        (None, None) => unreachable!("clap requires one"),
    }
}

/// `ansinh audit export`: writes the auditor bundle of `request` to `out` (publishing
/// checkpoints first with `checkpoint_first`) and verifies it as an auditor would.
pub async fn export(
    runtime: &Runtime,
    checkpoints: &CheckpointConfig,
    data_dir: &Path,
    request: &ExportRequest,
    checkpoint_first: bool,
    out: &Path,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let ok = ansinh::bundle::cli::export_bundle(
        runtime,
        checkpoints,
        data_dir,
        request,
        checkpoint_first,
        out,
        json,
    );
    Ok(exit_code(ok.await?))
}
