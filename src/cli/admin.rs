//! `ansinh admin ...`: the operator's decisions on a running ledger: who may call the
//! staff API, where household data keys are kept, how a partition whose chain was
//! damaged or lost data resumes appending, and a citizen claim left over freed.

use std::path::Path;
use std::process::ExitCode;

use ansinh::app::Runtime;
use ansinh::chain::Partition;
use ansinh::directory::DirectoryError;
use ansinh::domain::ids::{CitizenId, HouseholdId};
use ansinh::log::{AppendError, Draft};
use ansinh::proto::{self, envelope::Payload};
use ansinh::service::ReleaseClaimError;

use super::staff::RoleArg;
use super::{ArgumentError, BoxError, exit_code, not_found, open_directory};

/// `ansinh admin add-staff`: prints a new API token for `id`; the directory keeps only
/// its hash, so the token is shown this once. Refused (exit 1) when the directory holds
/// `id` already or would not take the entry.
pub async fn add_staff(
    runtime: &Runtime,
    id: &str,
    role: RoleArg,
    unit: &str,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let directory = open_directory(runtime).await?;
    let (token, revision) = match directory.add_staff(id, role.role(), unit).await {
        Ok(added) => added,
        Err(e @ (DirectoryError::Invalid(_) | DirectoryError::Refused { .. })) => {
            return Ok(refused("DirectoryRefused", &e.to_string(), json));
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"id": id, "role": role.role(), "unit": unit, "token": token, "directory_revision": revision})
        );
    } else {
        // The token alone on stdout, for a script to take.
        println!("{token}");
    }
    eprintln!(
        "added {id} to the ledger's directory: every running `ansinh serve` accepts the token now. It is shown only now (the directory keeps its hash)"
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints an operator's command refused, with its kind, and returns its exit code (1):
/// `REFUSED: ...`, or with `--json` `{"refused", "kind"}` as the staff commands' refusals.
fn refused(kind: &str, sentence: &str, json: bool) -> ExitCode {
    if json {
        println!("{}", serde_json::json!({"refused": sentence, "kind": kind}));
    } else {
        println!("REFUSED: {sentence}");
    }
    ExitCode::from(1)
}

/// `ansinh admin remove-staff`: withdraws every token of `id`; exit 1 when the directory
/// has no such member.
pub async fn remove_staff(runtime: &Runtime, id: &str, json: bool) -> Result<ExitCode, BoxError> {
    let directory = open_directory(runtime).await?;
    match directory.remove_staff(id).await? {
        Some(revision) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"removed": id, "directory_revision": revision})
                );
            } else {
                println!("removed {id}: no running process accepts its tokens now");
            }
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(not_found(json, "member of staff", id)),
    }
}

/// `ansinh admin end-console-sessions`: a new console session secret, so every session
/// signed with the old one is refused by every running process once it reads the secret
/// again (ADR 0011).
pub async fn end_console_sessions(runtime: &Runtime, json: bool) -> Result<ExitCode, BoxError> {
    use ansinh::http::console::session::{SECRET_NAME, SECRET_RECHECK_S};
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::getrandom(&mut seed[..])?;
    runtime
        .vault
        .replace_secret(SECRET_NAME, Some(&seed))
        .await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"replaced": true, "signed_out_within_s": SECRET_RECHECK_S})
        );
    } else {
        println!(
            "replaced the console session secret: every running process signs everyone out of the console within {SECRET_RECHECK_S} s"
        );
    }
    Ok(ExitCode::SUCCESS)
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
    json: bool,
) -> Result<ExitCode, BoxError> {
    let directory = open_directory(runtime).await?;
    let (staff_added, gateways_added) = directory.import_files(staff, registry).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"staff_added": staff_added, "gateway_keys_added": gateways_added})
        );
    } else {
        println!(
            "imported {staff_added} staff and {gateways_added} gateway keys into the directory; running processes use them now"
        );
    }
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

/// `--citizen-id` of `admin release-claim`: the id itself, or `-` for one line of stdin,
/// which keeps it out of the process's arguments (any user of the host reads those).
#[derive(Clone, Debug)]
pub enum CitizenIdArg {
    Given(CitizenId),
    Stdin,
}

/// Most bytes read from stdin for `--citizen-id -`: 12 digits and a line end, with room
/// to spare; a longer line is refused, not read on.
const CITIZEN_ID_LINE_BYTES_MAX: u64 = 64;

/// Parses `--citizen-id`: `-`, or a citizen id (`input::citizen_id`).
pub fn citizen_id_arg(s: &str) -> Result<CitizenIdArg, ansinh::input::InputError> {
    if s == "-" {
        Ok(CitizenIdArg::Stdin)
    } else {
        ansinh::input::citizen_id(s).map(CitizenIdArg::Given)
    }
}

impl CitizenIdArg {
    /// The citizen id, read from stdin for `-`: one line, its line end dropped, refused
    /// as the argument (exit 2) when it is no citizen id. The line is not echoed back.
    pub fn resolve(self) -> Result<CitizenId, BoxError> {
        use std::io::{BufRead as _, Read as _};
        let CitizenIdArg::Given(id) = self else {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .take(CITIZEN_ID_LINE_BYTES_MAX)
                .read_line(&mut line)
                .map_err(|e| format!("reading --citizen-id from stdin: {e}"))?;
            let line = line.strip_suffix('\n').unwrap_or(&line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            return ansinh::input::citizen_id(line).map_err(|e| {
                let kind = e.kind;
                let mut refused = ArgumentError::new(
                    "--citizen-id <CITIZEN_ID>",
                    "-",
                    format!(
                        "the line read from stdin is not a citizen id; expected {}",
                        kind.expected()
                    ),
                );
                refused.input = Some(kind);
                refused.into()
            });
        };
        Ok(id)
    }
}

/// `ansinh admin release-claim`: frees a citizen's claim left over by a command that
/// appended nothing (`Service::release_left_over_claim`). Exit 1, freeing nothing, when
/// the household does not hold the claim or its recorded events hold the citizen. The
/// citizen id is not printed back.
pub async fn release_claim(
    runtime: &Runtime,
    citizen: &CitizenId,
    household: &HouseholdId,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let refused = |kind: &str, message: String| {
        if json {
            println!(
                "{}",
                serde_json::json!({"error": kind, "household": household.as_str(), "message": message})
            );
        } else {
            println!("REFUSED: {message}");
        }
        Ok(ExitCode::from(1))
    };
    match runtime
        .service()
        .release_left_over_claim(citizen, household)
        .await
    {
        Ok(()) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"released": true, "household": household.as_str()})
                );
            } else {
                println!(
                    "freed the citizen's claim household {household} held: the citizen may be registered now"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ ReleaseClaimError::NotHeld { .. }) => refused("not_held", e.to_string()),
        Err(e @ ReleaseClaimError::Recorded { .. }) => refused("recorded", e.to_string()),
        Err(ReleaseClaimError::Service(e)) => Err(e.into()),
    }
}

/// `ansinh admin exclude-message`: appends the ledger-signed decision that readers pass
/// over the messages of `partition`'s subject in `run` (stream sequences), which break its
/// chain: every one held since its last good event, named by its first and last, its
/// count and the hash of the run (docs/CHAIN.md, section 4a). Refused (exit 1,
/// nothing appended) for messages that are not the partition's, or that break nothing.
pub async fn exclude_message(
    runtime: &Runtime,
    data_dir: &Path,
    partition: Partition,
    run: std::ops::RangeInclusive<u64>,
    reason: String,
    actor: String,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let (first, through) = (*run.start(), *run.end());
    if through < first {
        return Err(ArgumentError::new(
            "--through <THROUGH>",
            through,
            format!("it is before --stream-sequence {first}: a run goes forward"),
        )
        .into());
    }
    let stream = runtime.ledger.stream();
    let message = stream
        .get_raw_message(first)
        .await
        .map_err(|e| format!("no message at stream sequence {first}: {e}"))?;
    let subject = runtime.ledger.config().subject(&partition);
    if message.subject.as_str() != subject {
        let sentence = format!(
            "the message at stream sequence {first} is on {}, not on partition {partition}'s subject {subject}",
            message.subject
        );
        return Ok(refused("NotThePartitions", &sentence, json));
    }
    // Each message of the subject in the run once (a frame's events share it), hashed as
    // every reader hashes what it holds: in constant memory, however many there are.
    let mut hashes = ansinh::log::follow::Run::default();
    let mut first_hash = None;
    ansinh::log::reader::read_range(stream, &subject, first, through, |event| {
        if hashes.count == 0 || event.stream_sequence != hashes.last_stream_sequence {
            let hash = ansinh::chain::message_hash(&event.message);
            first_hash.get_or_insert(hash);
            hashes.take(event.stream_sequence, &hash);
        }
        Ok::<(), std::convert::Infallible>(())
    })
    .await
    .map_err(|e| match e {
        ansinh::log::reader::ReadError::Nats(m) => m,
        ansinh::log::reader::ReadError::Visit(never) => match never {},
    })?;
    let Some(first_hash) = first_hash else {
        return Err(
            format!("no message of partition {partition} at stream sequence {first}").into(),
        );
    };
    if hashes.last_stream_sequence != through {
        let sentence = format!(
            "the message at stream sequence {through} is not on partition {partition}'s subject; its last message in the run is at {}",
            hashes.last_stream_sequence
        );
        return Ok(refused("NotThePartitions", &sentence, json));
    }
    let key = runtime.key_home(data_dir).current_key().await?;
    let mut decision = proto::MessageExcluded {
        stream_sequence: first,
        message_hash: first_hash.0.to_vec().into(),
        reason,
        key_id: key.key_id().to_owned(),
        signature: Default::default(),
        through_stream_sequence: through,
        message_count: hashes.count,
        run_hash: hashes.run_hash.0.to_vec().into(),
    };
    decision.signature =
        ansinh::checkpoint::sign::sign_exclusion(&key, partition.as_str(), &decision)?
            .to_vec()
            .into();
    let what = if hashes.count == 1 {
        format!("the message at stream sequence {first}")
    } else {
        format!(
            "the {} messages at stream sequences {first} through {through}",
            hashes.count
        )
    };
    let draft = Draft {
        partition: partition.clone(),
        actor: proto::Actor {
            id: actor,
            role: "operator".into(),
            unit: String::new(),
        },
        // One exclusion per run, however often the command is run (one message keeps the
        // key it always had, so a retry across an upgrade finds its decision).
        idempotency_key: if first == through {
            format!("exclude:{first}")
        } else {
            format!("exclude:{first}-{through}")
        },
        correlation_id: String::new(),
        request_fingerprint: None,
        subjects: vec![format!("message:{first}")],
        payload: Payload::MessageExcluded(decision),
    };
    let receipt = match runtime.ledger.append(draft).await {
        Ok(receipt) => receipt,
        // The writer's refusal: the messages break nothing, or are not all of those held.
        Err(AppendError::Rejected(r)) => return Ok(refused(&r.kind(), &r.to_string(), json)),
        Err(e) => return Err(e.into()),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "partition": receipt.partition,
                "sequence": receipt.sequence,
                "hash": receipt.hash.to_hex(),
                "stream_sequence": receipt.stream_sequence,
                "duplicate": receipt.duplicate,
                "excluded": {"from": first, "through": through, "messages": hashes.count},
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (said, them) = match (hashes.count, receipt.duplicate) {
        (1, true) => ("was already excluded", "it"),
        (1, false) => ("is excluded", "it"),
        (_, true) => ("were already excluded", "them"),
        (_, false) => ("are excluded", "them"),
    };
    println!(
        "partition {partition}: {what} {said} by the event at sequence {} (hash {}); readers pass over {them}",
        receipt.sequence, receipt.hash
    );
    Ok(ExitCode::SUCCESS)
}
