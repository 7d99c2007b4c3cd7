//! `ansinh audit ...` commands on the commitments: publishing a signed checkpoint,
//! cosigning one, proving an event's inclusion or the log's growth, and exporting an
//! auditor bundle. A partition the log has never seen is answered "not found" first, so
//! a typo does not read as an empty proof.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ansinh::app::Runtime;
use ansinh::bundle::Scope;
use ansinh::bundle::export::{ExportError, ExportRequest};
use ansinh::chain::Partition;
use ansinh::checkpoint::{self, CheckpointConfig};
use ansinh::domain::ids::{CommuneCode, HouseholdId};

use super::{ArgumentError, BoxError, exit_code, not_found, unknown_partition};

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

/// What `ansinh audit cosign` was given on its command line.
pub struct CosignRequest {
    pub partition: Partition,
    pub size: u64,
    pub cosigner_id: String,
    pub key: PathBuf,
    pub state: PathBuf,
    /// `--trust`: each a pinned key, or a file holding one.
    pub trust: Vec<String>,
}

/// Most bytes read of a file named by `--trust`: a key is 64 hex digits and a newline.
const TRUST_FILE_BYTES_MAX: u64 = 1_024;

/// `ansinh audit cosign`: checks the partition's checkpoint of `size` events against
/// the office's state file, its pinned ledger keys and the recomputed log, then
/// publishes the cosigner's signature of it and records it.
pub async fn cosign(
    runtime: &Runtime,
    checkpoints: &CheckpointConfig,
    request: &CosignRequest,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let trusted = request
        .trust
        .iter()
        .map(|t| pinned_key_or_file(t))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(code) = unknown_partition(runtime, &request.partition, json).await? {
        return Ok(code);
    }
    let args = checkpoint::cli::CosignArgs {
        partition: request.partition.as_str(),
        tree_size: request.size,
        cosigner_id: &request.cosigner_id,
        key_file: &request.key,
        state_file: &request.state,
        trusted: &trusted,
    };
    let ok = checkpoint::cli::cosign(runtime, checkpoints, &args, json);
    Ok(exit_code(ok.await?))
}

/// A `--trust` value: a pinned key (64 or 16 hex digits), else the path of a file
/// holding one (as `audit checkpoint --json` prints `public_key`), surrounding
/// whitespace ignored.
fn pinned_key_or_file(value: &str) -> Result<String, BoxError> {
    if let Ok(pin) = ansinh::input::pinned_key(value) {
        return Ok(pin);
    }
    let named = |e: &dyn std::fmt::Display| format!("--trust {value}: {e}");
    let file = std::fs::File::open(value).map_err(|e| {
        named(&format!(
            "neither a key (64 or 16 hex digits) nor a file holding one ({e})"
        ))
    })?;
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(file, TRUST_FILE_BYTES_MAX),
        &mut text,
    )
    .map_err(|e| named(&e))?;
    Ok(ansinh::input::pinned_key(text.trim()).map_err(|e| named(&e))?)
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
/// checkpoints first with `checkpoint_first`) and verifies it as an auditor would. A
/// household or commune with no event (within the dates) is NOT FOUND (exit 1), as in
/// every report; dates that run backwards are an argument error (exit 2).
pub async fn export(
    runtime: &Runtime,
    checkpoints: &CheckpointConfig,
    data_dir: &Path,
    request: &ExportRequest,
    checkpoint_first: bool,
    out: &Path,
    json: bool,
) -> Result<ExitCode, BoxError> {
    if let (Some(from), Some(to)) = (request.from, request.to) {
        if to < from {
            return Err(ArgumentError::new(
                "--to <TO>",
                to,
                format!("the last date is before --from {from}: the dates run forward"),
            )
            .into());
        }
    }
    let (what, value) = match &request.scope {
        Scope::Household(h) => ("household", h.as_str()),
        Scope::Commune(c) => ("commune", c.as_str()),
    };
    let what = match (request.from, request.to) {
        (None, None) => what.to_owned(),
        (Some(from), None) => format!("event from {from} of {what}"),
        (None, Some(to)) => format!("event up to {to} of {what}"),
        (Some(from), Some(to)) => format!("event from {from} to {to} of {what}"),
    };
    // A province the log never saw holds none of its events: said before a checkpoint
    // of it is asked for (`--checkpoint`).
    if !super::partition_exists(runtime, &request.partition()?).await? {
        return Ok(not_found(json, &what, value));
    }
    let ok = ansinh::bundle::cli::export_bundle(
        runtime,
        checkpoints,
        data_dir,
        request,
        checkpoint_first,
        out,
        json,
    );
    match ok.await {
        Ok(ok) => Ok(exit_code(ok)),
        Err(e) if matches!(e.downcast_ref(), Some(ExportError::Empty(_))) => {
            Ok(not_found(json, &what, value))
        }
        Err(e) => Err(e),
    }
}
