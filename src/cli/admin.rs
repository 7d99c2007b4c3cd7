//! `ansinh admin ...`: the operator's decisions on a running ledger: who may call the
//! staff API, where household data keys are kept, and how a partition whose chain was
//! damaged or lost data resumes appending.

use std::path::Path;
use std::process::ExitCode;

use ansinh::app::Runtime;
use ansinh::chain::Partition;
use ansinh::log::Draft;
use ansinh::proto::{self, envelope::Payload};

use super::staff::RoleArg;
use super::{BoxError, exit_code, not_found, open_directory};

/// `ansinh admin add-staff`: prints a new API token for `id`; the directory keeps only
/// its hash, so the token is shown this once.
pub async fn add_staff(
    runtime: &Runtime,
    id: &str,
    role: RoleArg,
    unit: &str,
) -> Result<ExitCode, BoxError> {
    let directory = open_directory(runtime).await?;
    let (token, _) = directory.add_staff(id, role.role(), unit).await?;
    println!("{token}");
    eprintln!(
        "added {id} to the ledger's directory: every running `ansinh serve` accepts the token above now. It is shown only now (the directory keeps its hash)"
    );
    Ok(ExitCode::SUCCESS)
}

/// `ansinh admin remove-staff`: withdraws every token of `id`; exit 1 when the directory
/// has no such member.
pub async fn remove_staff(runtime: &Runtime, id: &str, json: bool) -> Result<ExitCode, BoxError> {
    let directory = open_directory(runtime).await?;
    match directory.remove_staff(id).await? {
        Some(_) => {
            println!("removed {id}: no running process accepts its tokens now");
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(not_found(json, "member of staff", id)),
    }
}

/// `ansinh admin remove-gateway-key`: withdraws one gateway key from the directory;
/// exit 1 when the directory has no such key.
pub async fn remove_gateway_key(
    runtime: &Runtime,
    key_id: &str,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let directory = open_directory(runtime).await?;
    match directory.remove_gateway_key(key_id).await? {
        Some(revision) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"removed_key_id": key_id, "directory_revision": revision})
                );
            } else {
                println!(
                    "removed gateway key {key_id}: no running process accepts its signatures now, and no import adds it again"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(not_found(json, "gateway key", key_id)),
    }
}

/// `ansinh admin import-directory`: copies the staff file and the gateway registry into
/// the directory bucket, leaving what it already holds.
pub async fn import_directory(
    runtime: &Runtime,
    staff: &Path,
    registry: &Path,
) -> Result<ExitCode, BoxError> {
    let directory = open_directory(runtime).await?;
    let (staff_added, gateways_added) = directory.import_files(staff, registry).await?;
    println!(
        "imported {staff_added} staff and {gateways_added} gateway keys into the directory; running processes use them now"
    );
    Ok(ExitCode::SUCCESS)
}

/// `ansinh admin migrate-vault`: moves the household data keys kept in this data
/// directory into the shared vault; exit 1 when the vault holds another key for one.
pub async fn migrate_vault(runtime: &Runtime, json: bool) -> Result<ExitCode, BoxError> {
    let report = runtime
        .vault
        .migrate_local(runtime.ledger.store().db())
        .await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "moved {} data keys and {} erasures into the shared vault; {} were there already",
            report.keys, report.tombstones, report.already
        );
        for household in &report.conflicts {
            println!(
                "CONFLICT household {household}: the shared vault holds another key; the local one is kept in the data directory"
            );
        }
    }
    Ok(exit_code(report.conflicts.is_empty()))
}

/// `ansinh admin accept-head`: takes the stream's head of `partition` as it is, after
/// lost acknowledged data was investigated, and lets appends resume. Exit 1, changing
/// nothing, when this data directory has not stopped the partition.
pub fn accept_head(
    runtime: &Runtime,
    partition: &Partition,
    json: bool,
) -> Result<ExitCode, BoxError> {
    match runtime
        .ledger
        .store()
        .accept_stream_head(partition.as_str())?
    {
        Some(reason) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"partition": partition.as_str(), "accepted": true, "was_stopped_for": reason})
                );
            } else {
                println!(
                    "partition {partition}: the stream's head is accepted; appending resumes (it was stopped for: {reason})"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let message = format!(
                "partition {partition} is not stopped in this data directory: nothing to accept, and its remembered head, index and snapshot are kept"
            );
            if json {
                println!(
                    "{}",
                    serde_json::json!({"error": "not_stopped", "partition": partition.as_str(), "message": message})
                );
            } else {
                println!("REFUSED: {message}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// `ansinh admin exclude-message`: appends the ledger-signed decision that readers pass
/// over the message at `stream_sequence`, which breaks `partition`'s chain.
pub async fn exclude_message(
    runtime: &Runtime,
    data_dir: &Path,
    partition: Partition,
    stream_sequence: u64,
    reason: String,
    actor: String,
) -> Result<ExitCode, BoxError> {
    let message = runtime
        .ledger
        .stream()
        .get_raw_message(stream_sequence)
        .await
        .map_err(|e| format!("no message at stream sequence {stream_sequence}: {e}"))?;
    let subject = runtime.ledger.config().subject(&partition);
    if message.subject.as_str() != subject {
        return Err(format!(
            "the message at stream sequence {stream_sequence} is on {}, not on partition {partition}'s subject {subject}",
            message.subject
        )
        .into());
    }
    let hash = ansinh::chain::message_hash(&message.payload);
    let key = runtime.key_home(data_dir).current_key().await?;
    let signature = ansinh::checkpoint::sign::sign_exclusion(
        &key,
        partition.as_str(),
        stream_sequence,
        &hash.0,
    );
    let draft = Draft {
        partition: partition.clone(),
        actor: proto::Actor {
            id: actor,
            role: "operator".into(),
            unit: String::new(),
        },
        // One exclusion per message, however often the command is run.
        idempotency_key: format!("exclude:{stream_sequence}"),
        correlation_id: String::new(),
        request_fingerprint: None,
        subjects: vec![format!("message:{stream_sequence}")],
        payload: Payload::MessageExcluded(proto::MessageExcluded {
            stream_sequence,
            message_hash: hash.0.to_vec().into(),
            reason,
            key_id: key.key_id().to_owned(),
            signature: signature.to_vec().into(),
        }),
    };
    let receipt = runtime.ledger.append(draft).await?;
    let said = if receipt.duplicate {
        "was already excluded"
    } else {
        "is excluded"
    };
    println!(
        "partition {partition}: the message at stream sequence {stream_sequence} {said} by the event at sequence {} (hash {}); readers pass over it",
        receipt.sequence, receipt.hash
    );
    Ok(ExitCode::SUCCESS)
}
