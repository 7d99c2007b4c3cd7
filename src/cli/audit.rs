//! `ansinh audit ...` commands that read the log: verify (the chain, its exclusions and
//! the signed checkpoints, with the ledger's store or read-only), the recomputed
//! eligibility decisions, the anomalies, the rebuild check and a subject's trail.

use std::process::ExitCode;

use ansinh::app::{Connection, Runtime};
use ansinh::chain::Partition;
use ansinh::checkpoint;
use ansinh::log::LogConfig;
use chrono::NaiveDate;
use indicatif::{ProgressBar, ProgressStyle};

use super::{BoxError, exit_code};

/// `ansinh audit verify` on the ledger's own connection: the chain (a broken partition
/// is stopped for appends), then the signed checkpoints against it.
pub async fn verify_ledger(
    runtime: &Runtime,
    checkpoints: &checkpoint::CheckpointConfig,
    partition: Option<Partition>,
    list_checkpoints: bool,
    json: bool,
) -> Result<ExitCode, BoxError> {
    refuse_listing_in_json(list_checkpoints, json)?;
    let mut stream = runtime.ledger.stream().clone();
    let chain = verify_chain(
        &mut stream,
        runtime.ledger.config(),
        checkpoints,
        partition.clone(),
        json,
        Some(runtime.ledger.store()),
    )
    .await?;
    then_checkpoints(
        chain,
        runtime.client.clone(),
        runtime.ledger.config(),
        checkpoints,
        partition,
        list_checkpoints,
        json,
        false,
    )
    .await
}

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
    refuse_listing_in_json(list_checkpoints, json)?;
    let Some(url) = &connection.nats_url else {
        return Err("--read-only reads the ledger's NATS server: give --nats".into());
    };
    let client = ansinh::app::connect(url, &connection.auth).await?;
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = ansinh::log::stream::open_existing(&js, &connection.log).await?;
    let chain = verify_chain(
        &mut stream,
        &connection.log,
        checkpoints,
        partition.clone(),
        json,
        None,
    )
    .await?;
    then_checkpoints(
        chain,
        client,
        &connection.log,
        checkpoints,
        partition,
        list_checkpoints,
        json,
        true,
    )
    .await
}

/// `--checkpoints` prints a line per checkpoint as each is checked, which one JSON
/// document cannot hold however many there are: refused with `--json` before anything
/// is read, whichever order the options came in.
fn refuse_listing_in_json(list_checkpoints: bool, json: bool) -> Result<(), BoxError> {
    if list_checkpoints && json {
        return Err("--checkpoints lists checkpoints for people; with --json the document gives each partition's count and latest checkpoint".into());
    }
    Ok(())
}

/// The checkpoint part of `audit verify`, after the chain's verdict `chain`. With
/// `--json` the two are one document whose `ok` is the exit code's verdict: a reader of
/// `.ok` must not see the chain's success when a checkpoint is forged or the checkpoint
/// audit could not run. A checkpoint audit that could not run is an operating error,
/// exit 2, with or without `--json`; one that found a problem exits 1.
#[allow(clippy::too_many_arguments)]
async fn then_checkpoints(
    chain: ChainVerdict,
    client: async_nats::Client,
    log: &LogConfig,
    checkpoints: &checkpoint::CheckpointConfig,
    partition: Option<Partition>,
    list_checkpoints: bool,
    json: bool,
    read_only: bool,
) -> Result<ExitCode, BoxError> {
    let ChainVerdict {
        code,
        document,
        heads,
    } = chain;
    if code != ExitCode::SUCCESS {
        if let Some(d) = document {
            println!("{d}");
        }
        return Ok(code);
    }
    // With --json, each partition's count and latest checkpoint, not every checkpoint
    // (`--checkpoints`, refused with --json, lists them for people): one document.
    let audit = checkpoint::cli::audit(
        client,
        log,
        checkpoints,
        partition.as_ref(),
        read_only,
        list_checkpoints && !json,
    )
    .await;
    if !json {
        // For people: the chain's lines are printed, the checkpoints' follow.
        let audit = audit?;
        let uncovered = uncovered(&audit, &heads);
        checkpoint::cli::print_audit(&audit, list_checkpoints, &uncovered);
        return Ok(exit_code(audit.ok()));
    }
    let Some(serde_json::Value::Object(mut document)) = document else {
        unreachable!("a chain that verifies hands back its JSON verdict");
    };
    let code = match audit {
        Ok(audit) => {
            document.insert("checkpoints_ok".into(), audit.ok().into());
            document.insert(
                "uncovered".into(),
                serde_json::to_value(uncovered(&audit, &heads))?,
            );
            document.insert("checkpoints".into(), serde_json::to_value(&audit)?);
            exit_code(audit.ok())
        }
        Err(e) => {
            document.insert("checkpoints_ok".into(), false.into());
            document.insert("checkpoints_error".into(), e.to_string().into());
            // As without --json: the audit could not run (exit 2), which is not a
            // problem found in the checkpoints (exit 1).
            ExitCode::from(2)
        }
    };
    document.insert("ok".into(), (code == ExitCode::SUCCESS).into());
    println!("{}", serde_json::Value::Object(document));
    Ok(code)
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
    let ChainVerdict { code, document, .. } =
        verify_chain(stream, config, checkpoints, partition, json, quarantine).await?;
    if let Some(d) = document {
        println!("{d}");
    }
    Ok(code)
}

/// What the chain part of `audit verify` hands the checkpoint part.
struct ChainVerdict {
    code: ExitCode,
    /// With `--json`, the verdict's document, to complete.
    document: Option<serde_json::Value>,
    /// Each verified partition and its event count (its head sequence), for the events
    /// past the latest checkpoint.
    heads: Vec<(String, u64)>,
}

impl ChainVerdict {
    fn failed(code: ExitCode, document: Option<serde_json::Value>) -> Self {
        Self {
            code,
            document,
            heads: Vec::new(),
        }
    }
}

/// The events of each verified partition past its latest valid checkpoint.
fn uncovered(
    audit: &checkpoint::audit::CheckpointAudit,
    heads: &[(String, u64)],
) -> Vec<checkpoint::audit::Uncovered> {
    checkpoint::audit::uncovered(audit, heads.iter().map(|(p, n)| (p.as_str(), *n)))
}

/// `verify`, except that with `json` the verdict's document is handed back, not printed,
/// for `then_checkpoints` to complete (a partition not found is printed here).
async fn verify_chain(
    stream: &mut async_nats::jetstream::stream::Stream,
    config: &LogConfig,
    checkpoints: &checkpoint::CheckpointConfig,
    partition: Option<Partition>,
    json: bool,
    quarantine: Option<&ansinh::log::LedgerStore>,
) -> Result<ChainVerdict, BoxError> {
    let only = partition;
    let bar = progress_bar(stream, "verifying", json).await?;
    let result = ansinh::verify::verify(
        stream,
        config,
        &checkpoints.keys_partition,
        only.as_ref(),
        advance(&bar),
    )
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
            Ok(ChainVerdict::failed(
                crate::cli::not_found(json, "partition", p.as_str()),
                None,
            ))
        }
        Ok(report) => {
            let heads = report
                .partitions
                .iter()
                .map(|(p, r)| (p.clone(), r.events))
                .collect();
            // A report lists an exclusion only once verify checked that a ledger key in
            // force when it was recorded signed it (an exclusion that is not the
            // ledger's fails verify, below).
            let exclusions: Vec<serde_json::Value> = report
                .exclusions
                .iter()
                .map(|x| {
                    serde_json::json!({
                        "partition": x.partition,
                        "stream_sequence": x.stream_sequence,
                        "message_hash": x.message_hash.to_hex(),
                        "cause": x.cause.to_string(),
                        "through_stream_sequence": x.through_stream_sequence,
                        "message_count": x.count,
                        "decided_at_sequence": x.decided_at_sequence,
                        "decided_at_stream_sequence": x.decided_at_stream_sequence,
                        "reason": x.decision.reason,
                        "key_id": x.decision.key_id,
                        "signature_ok": true,
                    })
                })
                .collect();
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
                let stray: Vec<serde_json::Value> = report
                    .stray
                    .iter()
                    .map(|m| serde_json::json!({"stream_sequence": m.stream_sequence, "subject": m.subject}))
                    .collect();
                let document = serde_json::json!({"ok": true, "events": report.events, "partitions": parts, "exclusions": exclusions, "exclusions_total": report.exclusions_total, "stray_messages": report.stray_messages, "stray": stray});
                return Ok(ChainVerdict {
                    code: ExitCode::SUCCESS,
                    document: Some(document),
                    heads,
                });
            } else {
                for (p, r) in &report.partitions {
                    println!("OK partition {p}: {} events, head {}", r.events, r.head);
                }
                for x in &report.exclusions {
                    let what = if x.count == 1 {
                        format!("the message at stream sequence {}", x.stream_sequence)
                    } else {
                        format!(
                            "the {} messages at stream sequences {} through {}, the first",
                            x.count, x.stream_sequence, x.through_stream_sequence
                        )
                    };
                    println!(
                        "EXCLUDED partition {}: {what} ({}), by the ledger-signed decision at sequence {} (stream sequence {}): {}",
                        x.partition,
                        x.cause,
                        x.decided_at_sequence,
                        x.decided_at_stream_sequence,
                        x.decision.reason
                    );
                }
                let unlisted = report.exclusions_total - report.exclusions.len() as u64;
                if unlisted > 0 {
                    println!("EXCLUDED and {unlisted} more exclusions, each signed by the ledger");
                }
                for m in &report.stray {
                    println!(
                        "STRAY stream sequence {}: subject {:?} names no partition; the message is in no chain and every reader passes over it",
                        m.stream_sequence, m.subject
                    );
                }
                let unlisted = report.stray_messages - report.stray.len() as u64;
                if unlisted > 0 {
                    println!("STRAY and {unlisted} more such messages");
                }
                println!("OK {} events verified", report.events);
            }
            Ok(ChainVerdict {
                code: ExitCode::SUCCESS,
                document: None,
                heads,
            })
        }
        Err(e) => {
            let stopped = match quarantine {
                Some(store) => ansinh::verify::quarantine_broken(store, &e)?,
                None => None,
            };
            // Every other broken partition is stopped with the first.
            let also_stopped: Vec<String> = match (&stopped, &e) {
                (Some(_), ansinh::verify::VerifyError::Broken { also, .. }) => {
                    also.iter().map(|b| b.partition.clone()).collect()
                }
                _ => Vec::new(),
            };
            if json {
                let document = serde_json::json!({
                    "ok": false,
                    "error": e.to_string(),
                    "appends_stopped": stopped,
                    "appends_also_stopped": also_stopped,
                });
                return Ok(ChainVerdict::failed(ExitCode::from(1), Some(document)));
            } else {
                println!("FAILED: {e}");
                for p in stopped.iter().chain(&also_stopped) {
                    println!(
                        "appends to partition {p} are stopped: repair the message and run `ansinh admin accept-head --partition {p}`, or for a foreign message accept the head and exclude it with `ansinh admin exclude-message` (docs/OPERATIONS.md, sections 4.2 and 4.3)"
                    );
                }
            }
            Ok(ChainVerdict::failed(ExitCode::from(1), None))
        }
    }
}

/// `ansinh audit recompute-eligibility`: every eligibility decision on the chain (or one
/// partition's) re-derived from its recorded inputs; exit 1 when any differs.
pub async fn recompute_eligibility(
    runtime: &Runtime,
    checkpoints: &checkpoint::CheckpointConfig,
    partition: Option<Partition>,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let only = partition;
    if let Some(p) = &only {
        if let Some(code) = super::unknown_partition(runtime, p, json).await? {
            return Ok(code);
        }
    }
    let mut stream = runtime.ledger.stream().clone();
    let bar = progress_bar(&mut stream, "recomputing", json).await?;
    let result = ansinh::recompute::recompute_eligibility(
        &mut stream,
        runtime.ledger.config(),
        &checkpoints.keys_partition,
        only.as_ref(),
        advance(&bar),
    )
    .await;
    bar.finish_and_clear();
    let report = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for m in &report.mismatches {
            println!(
                "MISMATCH partition {} seq {} household {}: {}",
                m.partition, m.sequence, m.household_id, m.problem
            );
        }
        if report.not_listed > 0 {
            println!(
                "... and {} more mismatches, not listed (the first {} are)",
                report.not_listed,
                ansinh::recompute::MISMATCHES_LISTED_MAX
            );
        }
        println!(
            "{} decisions rechecked, {} mismatches",
            report.decisions,
            report.mismatch_count()
        );
    }
    Ok(exit_code(report.all_rederived()))
}

/// `ansinh audit anomalies`: the patterns worth an auditor's look, found in one scan of
/// the log, counting pending days to `as_of` (default today); exit 1 when any is found.
pub async fn anomalies(
    runtime: &Runtime,
    checkpoints: &checkpoint::CheckpointConfig,
    pending_days: i64,
    as_of: Option<NaiveDate>,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let as_of = as_of.unwrap_or_else(ansinh::clock::today);
    let mut stream = runtime.ledger.stream().clone();
    let bar = progress_bar(&mut stream, "scanning", json).await?;
    let result = ansinh::anomalies::scan(
        &mut stream,
        runtime.ledger.config(),
        &checkpoints.keys_partition,
        None,
        as_of,
        pending_days,
        advance(&bar),
    )
    .await;
    bar.finish_and_clear();
    let report = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for a in &report.anomalies {
            println!("{:<26} {}", a.kind(), serde_json::to_string(a)?);
        }
        println!(
            "{} events scanned as of {as_of}: {} anomalies{}",
            report.events,
            report.anomalies.len() as u64 + report.not_listed,
            if report.not_listed > 0 {
                format!(" ({} not listed)", report.not_listed)
            } else {
                String::new()
            }
        );
    }
    Ok(exit_code(report.anomalies.is_empty()))
}

/// `ansinh audit rebuild-check`: the projections rebuilt from the log into scratch and
/// compared with the live ones, and each writer's book snapshot with a fold of its chain
/// from genesis; exit 1 at the first difference.
pub async fn rebuild_check(runtime: &Runtime, json: bool) -> Result<ExitCode, BoxError> {
    let mut stream = runtime.ledger.stream().clone();
    let report = ansinh::rebuild_check::rebuild_check(
        &runtime.projector,
        &mut stream,
        runtime.ledger.config(),
    )
    .await?;
    // The writers' book snapshots, each against a fold of its chain from genesis.
    let snapshots = ansinh::log::snapshot::check_all(
        runtime.ledger.store().path(),
        &stream,
        &runtime.ledger.config().subject_prefix,
    )
    .await?;
    let snapshots_ok = snapshots.iter().all(|s| s.difference.is_none());
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": report.ok() && snapshots_ok, "report": report, "snapshots": snapshots})
        );
        return Ok(exit_code(report.ok() && snapshots_ok));
    }
    if let Some(d) = &report.difference {
        let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
        println!(
            "DIFFERENT at stream sequence {}: tree {} key {}\n  live:    {}\n  rebuilt: {}",
            report.position,
            d.tree,
            d.key,
            shown(&d.live),
            shown(&d.rebuilt)
        );
    } else {
        let counts: Vec<String> = report
            .trees
            .iter()
            .map(|t| format!("{} {}", t.tree, t.keys))
            .collect();
        println!(
            "OK the projections rebuilt from the log at stream sequence {} equal the live ones (keys: {})",
            report.position,
            counts.join(", ")
        );
    }
    for s in &snapshots {
        match &s.difference {
            None => println!(
                "OK the book snapshot of partition {} at sequence {} equals the fold from genesis",
                s.partition, s.sequence
            ),
            Some(d) => println!(
                "DIFFERENT book snapshot of partition {} at sequence {}: {d}",
                s.partition, s.sequence
            ),
        }
    }
    Ok(exit_code(report.ok() && snapshots_ok))
}

/// `ansinh audit trail`: every event naming `subject`, read from the projections once
/// they are caught up; exit 1 when none does. Printed as the runs are read, so memory
/// holds one run whatever the trail's length (a commune's year is hundreds of thousands
/// of lines); `--json` writes one array, an entry a line. A run that cannot be read
/// after the first was printed ends the output, exit 2: with `--json` the array is
/// closed with the failure's object (`failed_json`) as its last entry, so stdout stays
/// one document.
pub async fn trail(runtime: &Runtime, subject: &str, json: bool) -> Result<ExitCode, BoxError> {
    use std::io::Write as _;
    let projector = &runtime.projector;
    let mut stream = runtime.ledger.stream().clone();
    projector
        .catch_up(&mut stream, runtime.ledger.config())
        .await?;
    let mut runs = projector.trail_runs(subject);
    // The first run is read before anything is printed: its failure is the one answer.
    let Some(first_run) = runs.next() else {
        return Ok(super::not_found(json, "event naming subject", subject));
    };
    let runs = std::iter::once(Ok(first_run?)).chain(runs);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        write!(out, "[")?;
    } else {
        writeln!(
            out,
            "{:<4} {:>8} {:<20} {:<24} {:<34} HASH",
            "PART", "SEQ", "ACTOR", "ROLE", "EVENT"
        )?;
    }
    let mut first = true;
    for run in runs {
        let run = match run {
            Ok(run) => run,
            Err(e) if json => {
                let separator = if first { "\n" } else { ",\n" };
                writeln!(out, "{separator}{}\n]", super::failed_json(&e))?;
                out.flush()?;
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
            Err(e) => {
                out.flush()?;
                return Err(e.into());
            }
        };
        for e in run {
            if json {
                let separator = if first { "\n" } else { ",\n" };
                write!(out, "{separator}{}", serde_json::to_string(&e)?)?;
            } else {
                writeln!(
                    out,
                    "{:<4} {:>8} {:<20} {:<24} {:<34} {}",
                    e.partition,
                    e.sequence,
                    e.actor,
                    e.role,
                    e.event_type,
                    &e.hash[..16]
                )?;
            }
            first = false;
        }
    }
    if json {
        writeln!(out, "\n]")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A bar on stderr over the stream's sequences, for a command that reads the whole log:
/// hidden with `--json` (a program reads the output) and for an empty stream.
pub(super) async fn progress_bar(
    stream: &mut async_nats::jetstream::stream::Stream,
    doing: &str,
    json: bool,
) -> Result<ProgressBar, BoxError> {
    let total = stream.info().await?.state.last_sequence;
    let bar = if json || total == 0 {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template(&format!("{doing} {{bar:40}} {{pos}}/{{len}} {{per_sec}}"))
            .expect("valid template"),
    );
    Ok(bar)
}

/// The progress callback of a scan: moves `bar` every 1024 stream sequences, as drawing
/// at every event would cost more than reading it.
pub(super) fn advance(bar: &ProgressBar) -> impl FnMut(u64) + '_ {
    move |seq| {
        if seq % 1024 == 0 {
            bar.set_position(seq)
        }
    }
}
