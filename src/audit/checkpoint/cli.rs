//! What the `ansinh audit checkpoint | cosign | prove | consistency | check-proof`,
//! the checkpoint part of `audit verify` and `admin rotate-key` print. Kept out of
//! main.rs so the binary only parses and dispatches. Each returns whether the command
//! succeeded (exit 0) or found a problem (exit 1); `Err` is an operating error.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::audit::{Auditor, CheckpointAudit, CheckpointStatus, Uncovered};
use super::checkpointer::{Checkpointer, Outcome};
use super::cosigner::{CosignerState, Cosigning};
use super::proofs::{self, CheckpointDocument};
use super::stream::CheckpointConfig;
use super::{CheckpointError, keys, now_unix_ms, rotate_key};
use crate::app::Runtime;
use crate::chain::Partition;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn time(unix_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(unix_ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| unix_ms.to_string())
}

async fn auditor(runtime: &Runtime, config: &CheckpointConfig) -> Result<Auditor, BoxError> {
    Ok(Auditor::open(
        runtime.client.clone(),
        runtime.ledger.config().clone(),
        config.clone(),
    )
    .await?)
}

/// `ansinh audit checkpoint [--partition P]`: publish a checkpoint now. With `--json`,
/// one array of the checkpoint documents published (`[]` when none was needed), as
/// `schemas/checkpoint-list.schema.json` says: several partitions may be checkpointed.
pub async fn checkpoint(
    runtime: &Runtime,
    config: &CheckpointConfig,
    data_dir: &Path,
    partition: Option<&str>,
    json: bool,
) -> Result<bool, BoxError> {
    let mut checkpointer = Checkpointer::open(
        runtime.client.clone(),
        runtime.ledger.clone(),
        config.clone(),
        runtime.key_home(data_dir),
    )
    .await?;
    let outcomes = match partition {
        Some(p) => {
            let p = Partition::new(p)?;
            let outcome = checkpointer.checkpoint(&p).await;
            vec![(p, outcome)]
        }
        None => checkpointer.checkpoint_all().await?,
    };
    let mut ok = true;
    let ring = auditor(runtime, config).await?.key_ring().await?;
    let mut documents = Vec::new();
    for (partition, outcome) in &outcomes {
        match outcome {
            Err(e) => {
                ok = false;
                eprintln!("CHECKPOINT FAILED partition {partition}: {e}");
            }
            Ok(Outcome::Published(p)) => {
                if json {
                    let key = ring
                        .get(&p.body.key_id)
                        .ok_or("the signing key is not registered")?;
                    documents.push(CheckpointDocument::new(
                        &p.signed,
                        &p.body,
                        &key.public_key,
                        &[],
                    ));
                } else {
                    println!(
                        "CHECKPOINT partition {partition}: {} events, root {}, signed by key {}",
                        p.body.tree_size,
                        hex::encode(p.body.root),
                        p.body.key_id
                    );
                }
            }
            Ok(Outcome::Unchanged { tree_size }) if !json => {
                println!(
                    "UNCHANGED partition {partition}: the checkpoint of {tree_size} events is current"
                )
            }
            _ => {}
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&documents)?);
    }
    Ok(ok)
}

/// What `ansinh audit cosign` was asked.
pub struct CosignArgs<'a> {
    pub partition: &'a str,
    pub tree_size: u64,
    pub cosigner_id: &'a str,
    /// The office's key file (created 0600 if missing).
    pub key_file: &'a Path,
    /// The office's state file (`cosigner::CosignerState`; a missing one is empty).
    pub state_file: &'a Path,
    /// The ledger keys the office pinned (`--trust`), at least one.
    pub trusted: &'a [String],
}

/// `ansinh audit cosign`: check a checkpoint against what the office cosigned before,
/// its pinned keys and the recomputed log, then cosign it and record it. A refusal
/// (`CosignRefusal`) is printed, `REFUSED ...` or with `--json` its kind and fields,
/// and returns false (exit 1); nothing is published.
pub async fn cosign(
    runtime: &Runtime,
    config: &CheckpointConfig,
    args: &CosignArgs<'_>,
    json: bool,
) -> Result<bool, BoxError> {
    let (key, created) = keys::load_or_create_key(args.key_file)?;
    if created {
        eprintln!(
            "created cosigner key {} in {} (public key {})",
            key.key_id(),
            args.key_file.display(),
            hex::encode(key.public_key())
        );
    }
    let partition = Partition::new(args.partition)?;
    let mut state = CosignerState::open(args.state_file)?;
    let before = state.last(&partition).map(|c| c.tree_size);
    let cosigning = Cosigning {
        cosigner_id: args.cosigner_id,
        key: &key,
        trusted: args.trusted,
        signed_at_unix_ms: now_unix_ms(),
    };
    let cosigned = auditor(runtime, config)
        .await?
        .cosign(&partition, args.tree_size, &cosigning, &mut state)
        .await;
    let cosignature = match cosigned {
        Ok(c) => c,
        Err(CheckpointError::CosignRefused(refusal)) => {
            if json {
                let mut fields = serde_json::to_value(&refusal)?;
                fields["refused"] = refusal.to_string().into();
                println!("{fields}");
            } else {
                println!("REFUSED {refusal}; nothing cosigned");
            }
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&proofs::CosignatureDocument::from(&cosignature))?
        );
        return Ok(true);
    }
    let tree_size = args.tree_size;
    let against = match before {
        None => format!(
            "; the partition's first checkpoint in {}, trusted on first use",
            args.state_file.display()
        ),
        Some(size) if size == tree_size => "; it is the one you cosigned last".to_string(),
        Some(size) => format!(
            " and extends the one of {size} events you cosigned (consistency proof checked)"
        ),
    };
    println!(
        "COSIGNED partition {partition}: the checkpoint of {tree_size} events matches the log{against}; cosigned by {} with key {}",
        args.cosigner_id, cosignature.key_id
    );
    Ok(true)
}

/// `ansinh audit prove`: print an inclusion proof document (always JSON).
pub async fn prove(
    runtime: &Runtime,
    config: &CheckpointConfig,
    partition: &str,
    sequence: u64,
    checkpoint_size: Option<u64>,
) -> Result<bool, BoxError> {
    let partition = Partition::new(partition)?;
    let document = auditor(runtime, config)
        .await?
        .prove(&partition, sequence, checkpoint_size)
        .await?;
    println!("{}", serde_json::to_string_pretty(&document)?);
    Ok(true)
}

/// `ansinh audit consistency`: print a consistency proof document (always JSON).
pub async fn consistency(
    runtime: &Runtime,
    config: &CheckpointConfig,
    partition: &str,
    from: u64,
    to: u64,
) -> Result<bool, BoxError> {
    let partition = Partition::new(partition)?;
    let document = auditor(runtime, config)
        .await?
        .consistency(&partition, from, to)
        .await?;
    println!("{}", serde_json::to_string_pretty(&document)?);
    Ok(true)
}

/// Exit code of an offline check (`check-proof`, `verify-bundle`) that found nothing
/// wrong while no ledger key was pinned (`--trust`): the files agree with each other and
/// with the keys they carry, which anyone can make with keys of their own. Distinct from
/// 0 so a script cannot take it for a check against the ledger, from 1 (refused) and
/// from 2 (an operating error: a file that cannot be read).
pub const EXIT_UNANCHORED: u8 = 3;

/// What an offline check concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfflineVerdict {
    /// Everything checks, and signed by a key pinned with `--trust`: exit 0.
    Ok,
    /// Everything checks, but no key was pinned: exit `EXIT_UNANCHORED`.
    Unanchored,
    /// Something does not check: exit 1.
    Rejected,
}

impl OfflineVerdict {
    pub fn of(passed: bool, keys_pinned: bool) -> Self {
        match (passed, keys_pinned) {
            (false, _) => Self::Rejected,
            (true, true) => Self::Ok,
            (true, false) => Self::Unanchored,
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Rejected => 1,
            Self::Unanchored => EXIT_UNANCHORED,
        }
    }

    /// The word that starts its line for people, and its `verdict` in `--json`.
    pub fn word(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Unanchored => "UNANCHORED",
            Self::Rejected => "REJECTED",
        }
    }

    /// `--json`: the verdict, whether it is the anchored success exit 0 means, and
    /// whether a key was pinned.
    pub fn json_fields(self, keys_pinned: bool) -> serde_json::Map<String, serde_json::Value> {
        let mut fields = serde_json::Map::new();
        fields.insert("ok".into(), (self == Self::Ok).into());
        fields.insert("verdict".into(), self.word().to_lowercase().into());
        fields.insert("keys_pinned".into(), keys_pinned.into());
        fields
    }
}

/// `ansinh audit check-proof FILE [--trust KEY]... [--cosigner KEY]...`: offline, no
/// server.
pub fn check_proof(
    file: &Path,
    trusted: &[String],
    pins: &proofs::CosignerPins,
    json: bool,
) -> Result<OfflineVerdict, BoxError> {
    let named = |e: std::io::Error| format!("{}: {e}", file.display());
    let bytes = read_bounded(
        std::fs::File::open(file).map_err(named)?,
        proofs::PROOF_DOCUMENT_BYTES_MAX,
    )
    .map_err(named)?;
    if bytes.len() > proofs::PROOF_DOCUMENT_BYTES_MAX {
        let e = proofs::CheckError::TooLarge(bytes.len());
        return report_check(Err(e), trusted, json);
    }
    report_check(
        proofs::check_document_pinned(&bytes, trusted, pins),
        trusted,
        json,
    )
}

/// At most `max + 1` bytes of `from`: enough to tell a document over the bound, whatever
/// the file is. A pipe (`check-proof <(curl …)`) or a device reports no length, so the
/// bound is kept by the read itself, not by the file's metadata.
fn read_bounded(from: impl std::io::Read, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    from.take(max as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn report_check(
    result: Result<proofs::Checked, proofs::CheckError>,
    trusted: &[String],
    json: bool,
) -> Result<OfflineVerdict, BoxError> {
    let pinned = !trusted.is_empty();
    let verdict = OfflineVerdict::of(result.is_ok(), pinned);
    let word = verdict.word();
    match result {
        Ok(checked) => {
            if json {
                let mut fields = verdict.json_fields(pinned);
                fields.insert("checked".into(), serde_json::to_value(&checked)?);
                println!("{}", serde_json::Value::Object(fields));
            } else {
                println!("{word} {}", checked.summary);
                print_cosigners(word, &checked.cosigners, &checked.unpinned_cosigners);
                if !pinned {
                    println!(
                        "UNANCHORED: every signature and hash checks, but against the keys the document carries; no ledger key was pinned, so anyone could have made it. The signing key(s) {}: compare them with the ledger's published keys, then pass --trust with the public key (64 hex digits)",
                        checked.key_ids.join(", ")
                    );
                }
            }
        }
        Err(e) => {
            if json {
                let mut fields = verdict.json_fields(pinned);
                fields.insert("error".into(), e.to_string().into());
                println!("{}", serde_json::Value::Object(fields));
            } else {
                println!("{word}: {e}");
            }
        }
    }
    Ok(verdict)
}

/// One line per cosigner of a checked document: under the verdict's word when its key
/// was pinned (`--cosigner`), UNPINNED when it is only a key the document carries.
pub fn print_cosigners(word: &str, cosigners: &[String], unpinned: &[String]) {
    for c in cosigners {
        if unpinned.contains(c) {
            println!("UNPINNED cosigned by {c}");
        } else {
            println!("{word} cosigned by {c}");
        }
    }
}

/// The checkpoint part of `ansinh audit verify`: every checkpoint and cosignature of
/// the log (or of `partition`) checked against it. With `every_checkpoint`, each valid
/// checkpoint is printed as it is checked (`print_checkpoint`): a partition's may be
/// hundreds of thousands, which are never held at once. The rest is printed by the
/// caller (`print_audit`): with `--json` it is one document with the chain's verdict.
/// With `read_only`, nothing is created: a checkpoint stream that does not exist is an
/// error.
pub async fn audit(
    client: async_nats::Client,
    log: &crate::log::LogConfig,
    config: &CheckpointConfig,
    partition: Option<&Partition>,
    read_only: bool,
    every_checkpoint: bool,
) -> Result<CheckpointAudit, BoxError> {
    let printed = std::sync::atomic::AtomicBool::new(false);
    // A cluster electing a stream's leader answers "no responders" for a moment; the
    // audit reads again rather than failing, unless it printed a line already (a second
    // run would print it again).
    let audit = crate::log::reader::retrying_transient(
        || async {
            let (client, log, config) = (client.clone(), log.clone(), config.clone());
            let auditor = if read_only {
                Auditor::open_existing(client, log, config).await?
            } else {
                Auditor::open(client, log, config).await?
            };
            if !every_checkpoint {
                return auditor.verify(partition).await;
            }
            auditor
                .verify_listing(partition, |partition, checkpoint| {
                    printed.store(true, std::sync::atomic::Ordering::Relaxed);
                    print_checkpoint(partition, checkpoint);
                })
                .await
        },
        |e: &super::CheckpointError| {
            crate::log::reader::no_responders(e)
                && !printed.load(std::sync::atomic::Ordering::Relaxed)
        },
    )
    .await?;
    Ok(audit)
}

/// One line for people about one valid checkpoint (`audit verify --checkpoints`).
pub fn print_checkpoint(partition: &Partition, c: &CheckpointStatus) {
    let cosigners: Vec<String> = c
        .cosigners
        .iter()
        .map(|s| {
            format!(
                "{} (key {}, {}{})",
                s.cosigner_id,
                s.key_id,
                time(s.signed_at_unix_ms),
                unpinned(s)
            )
        })
        .collect();
    println!(
        "CHECKPOINT partition {partition} size {} root {} key {} issued {}; {}",
        c.tree_size,
        c.root,
        c.key_id,
        time(c.issued_at_unix_ms),
        cosigned_by(&cosigners)
    );
}

/// For people, after the chain's lines: one line per partition (how many checkpoints,
/// the latest's size and cosigners) unless `every_checkpoint` printed each already
/// (`audit`). Then the problems, and the events no valid checkpoint covers yet
/// (`uncovered`), one line per partition: they pass, since a checkpointer runs
/// periodically and a short tail is normal, but "OK" must not read as "every event is
/// checkpointed".
pub fn print_audit(audit: &CheckpointAudit, every_checkpoint: bool, uncovered: &[Uncovered]) {
    for (partition, checkpoints) in &audit.partitions {
        if every_checkpoint {
            continue;
        }
        let Some(latest) = &checkpoints.latest else {
            continue;
        };
        let cosigners: Vec<String> = latest
            .cosigners
            .iter()
            .map(|s| format!("{} (key {}{})", s.cosigner_id, s.key_id, unpinned(s)))
            .collect();
        println!(
            "CHECKPOINTS partition {partition}: {} checkpoints, latest size {} root {} key {} issued {}; {}",
            checkpoints.checkpoints,
            latest.tree_size,
            latest.root,
            latest.key_id,
            time(latest.issued_at_unix_ms),
            cosigned_by(&cosigners)
        );
    }
    for p in &audit.problems {
        println!(
            "CHECKPOINT FAILED partition {} stream sequence {}: {}",
            p.partition, p.stream_sequence, p.problem
        );
    }
    if audit.problems_not_listed > 0 {
        println!(
            "CHECKPOINT FAILED {} more problems, not listed (the first {} are)",
            audit.problems_not_listed,
            audit.problems.len()
        );
    }
    for u in uncovered {
        println!("UNCOVERED {u}");
    }
    let count: u64 = audit.partitions.values().map(|p| p.checkpoints).sum();
    if audit.ok() {
        let tail = match uncovered.len() {
            0 => String::new(),
            n => format!(
                "; {} events of {n} partition(s) are not yet under one (UNCOVERED above)",
                uncovered.iter().map(Uncovered::events).sum::<u64>()
            ),
        };
        println!("OK {count} checkpoints match the log{tail}");
    }
}

/// Marks a cosigner whose key `audit verify --cosigner` did not pin.
fn unpinned(s: &super::audit::CosignerStatus) -> &'static str {
    if s.pinned { "" } else { ", UNPINNED" }
}

/// Who cosigned a checkpoint, for people. The count is of distinct keys: a checkpoint
/// lists one cosignature a key (`CheckpointStatus::cosigners`), so a cosigner who signs
/// again, or one key under two names, counts once.
fn cosigned_by(cosigners: &[String]) -> String {
    match cosigners.len() {
        0 => "cosigned by nobody yet".to_string(),
        1 => format!("cosigned by 1 distinct key: {}", cosigners[0]),
        n => format!("cosigned by {n} distinct keys: {}", cosigners.join(", ")),
    }
}

/// `ansinh admin rotate-key`: a new ledger key, recorded as an event signed by the old.
pub async fn rotate(
    runtime: &Runtime,
    config: &CheckpointConfig,
    data_dir: &Path,
    json: bool,
) -> Result<bool, BoxError> {
    let (old, new) = rotate_key(&runtime.ledger, config, runtime.key_home(data_dir)).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"rotated": true, "old_key_id": old, "new_key_id": new})
        );
    } else {
        println!("ROTATED the ledger key {old} -> {new}; checkpoints signed by {old} still verify");
    }
    Ok(true)
}
