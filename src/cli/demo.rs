//! `ansinh demo`: play a province's year through the ledger, then verify, recompute,
//! project and summarise it, as the README's first command shows.

use std::path::Path;
use std::process::ExitCode;

use ansinh::app::Runtime;
use ansinh::chain::Partition;
use ansinh::checkpoint;
use ansinh::demo_payments::GatewayBehaviour;
use ansinh::domain::money::format_vnd;
use ansinh::projection::Projector;

use super::BoxError;

/// `demo --year`: a year (`input::review_year`) that a shipped standard covers from its
/// first day to its last, since the demo classifies every household under it and plays
/// the whole year. Refused otherwise, before anything starts (exit 2).
pub fn year(s: &str) -> Result<i32, BoxError> {
    let year = ansinh::input::review_year(s)?;
    let covered = |month, day| {
        chrono::NaiveDate::from_ymd_opt(year, month, day)
            .is_some_and(|d| ansinh::domain::eligibility::standard_in_force(d).is_ok())
    };
    if !(covered(1, 1) && covered(12, 31)) {
        let standards = ansinh::domain::eligibility::standards();
        let from = standards.iter().map(|s| s.valid_from).min();
        let to = standards.iter().map(|s| s.valid_to).max();
        return Err(match from.zip(to) {
            Some((from, to)) => format!(
                "no shipped standard of poverty lines covers all of {year}; they cover {from} to {to}"
            ),
            None => "no standard of poverty lines is shipped".to_owned(),
        }
        .into());
    }
    Ok(year)
}

/// `ansinh demo`: plays the year with checkpoints published as it goes, then exports the
/// first province's bundle of one household and verifies it offline, as an auditor would.
#[allow(clippy::too_many_arguments)]
pub async fn demo(
    runtime: &Runtime,
    checkpoints: &checkpoint::CheckpointConfig,
    data_dir: &Path,
    policy: checkpoint::Policy,
    households: u64,
    partitions: &[String],
    year: i32,
    gateways: GatewayBehaviour,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let task = runtime
        .start_checkpoints(checkpoints, data_dir, policy)
        .await?;
    let played = play(
        runtime,
        checkpoints,
        households,
        partitions,
        year,
        gateways,
        json,
    )
    .await;
    let mut checkpointer = task.stop().await;
    let (code, report) = played?;
    let first = Partition::new(&partitions[0])?;
    let (household, dir, verified) =
        ansinh::demo::export_and_verify_bundle(runtime, &mut checkpointer, &first, data_dir)
            .await?;
    if let Some(mut report) = report {
        report["bundle"] = serde_json::json!({"household": household, "dir": dir.display().to_string(), "verified": verified});
        println!("{report}");
    } else {
        println!(
            "\nbundle {household} verified offline against the ledger's key: {} events, checkpoint size {} root {}, balances match ({})",
            verified.events,
            verified.checkpoint.tree_size,
            verified.checkpoint.root,
            dir.display()
        );
        println!(
            "check it yourself: ansinh audit verify-bundle {} --trust {}",
            dir.display(),
            verified.latest_public_key
        );
    }
    Ok(code)
}

/// Plays the year and reports on it; with `--json` the report is returned instead, for
/// the bundle step to add to.
async fn play(
    runtime: &Runtime,
    checkpoints: &checkpoint::CheckpointConfig,
    households: u64,
    partitions: &[String],
    year: i32,
    gateways: GatewayBehaviour,
    json: bool,
) -> Result<(ExitCode, Option<serde_json::Value>), BoxError> {
    let partitions: Vec<Partition> = partitions
        .iter()
        .map(|p| Partition::new(p))
        .collect::<Result<_, _>>()?;
    eprintln!(
        "playing {year}: {households} households in each of {} provinces ...",
        partitions.len()
    );
    let service = runtime.service();
    let summary = ansinh::demo::run(&service, &partitions, households, year).await?;
    // All twelve months: the ledger side and the simulated gateways share the demo's
    // clock, so December's results are dated in December even when played earlier.
    let months = ansinh::demo_payments::MONTHS_IN_YEAR;
    let payments = ansinh::demo_payments::run(
        &service,
        ansinh::demo_payments::Nats {
            url: &runtime.nats_url,
            users: runtime.embedded_users.as_ref(),
        },
        &partitions,
        households,
        year,
        months,
        gateways,
    )
    .await?;
    let projector = &runtime.projector;
    let mut stream = runtime.ledger.stream().clone();
    let mut code = super::audit::verify(
        &mut stream.clone(),
        runtime.ledger.config(),
        checkpoints,
        None,
        json,
        Some(runtime.ledger.store()),
    )
    .await?;
    for report in [summary.refusals_report(), payments.refusals_report()]
        .into_iter()
        .flatten()
    {
        eprintln!("{report}");
        code = ExitCode::FAILURE;
    }
    let mut stream2 = runtime.ledger.stream().clone();
    let recomputed = ansinh::recompute::recompute_eligibility(
        &mut stream2,
        runtime.ledger.config(),
        &checkpoints.keys_partition,
        None,
        |_| {},
    )
    .await?;
    let projected = projector
        .catch_up(&mut stream, runtime.ledger.config())
        .await?;
    let events: u64 = projector.summaries()?.values().map(|s| s.events).sum();
    let mut stream3 = runtime.ledger.stream().clone();
    let as_of = chrono::NaiveDate::from_ymd_opt(year, months.max(1), 28).expect("valid date");
    let reconciliation = ansinh::payments_report::reconcile_from_log(
        &mut stream3,
        runtime.ledger.config(),
        &checkpoints.keys_partition,
        as_of,
        10,
        |_| {},
    )
    .await?;
    let mut by_gateway: std::collections::BTreeMap<String, [(u64, rust_decimal::Decimal); 5]> =
        Default::default();
    let mut mismatches = 0usize;
    for r in reconciliation.values() {
        for ((g, _), day) in &r.days {
            let e = by_gateway.entry(g.to_string()).or_default();
            for (i, t) in [
                &day.instructed,
                &day.settled,
                &day.failed,
                &day.returned,
                &day.pending_overdue,
            ]
            .into_iter()
            .enumerate()
            {
                e[i].0 += t.count;
                e[i].1 += t.amount;
            }
            mismatches += day.mismatches.len();
        }
    }
    // A decision its recorded inputs do not re-derive fails the year, in both outputs.
    if !recomputed.all_rederived() {
        code = ExitCode::FAILURE;
    }
    if json {
        // The text report's trial balance, checked without printing it.
        let mut balanced = true;
        for p in &partitions {
            if let Some(tb) = projector.trial_balance(p.as_str())? {
                balanced &=
                    tb.first_unbalanced_sequence.is_none() && tb.total_debits == tb.total_credits;
            }
        }
        if !balanced {
            code = ExitCode::FAILURE;
        }
        // Printed by the caller once the bundle step has added to it.
        let report = serde_json::json!({"summary": summary, "payments": payments, "events": events, "recompute_mismatches": recomputed.mismatch_count(), "reconciliation_mismatches": mismatches, "trial_balance_balanced": balanced});
        return Ok((code, Some(report)));
    }
    eprintln!(
        "the year took {:.1} s of appends (durable: fsync before every acknowledgement); {} events in the log (projected {} new)",
        summary.seconds, events, projected
    );
    println!(
        "{} eligibility decisions re-derived from their recorded inputs: {} mismatches",
        recomputed.decisions,
        recomputed.mismatch_count()
    );
    print_summaries(projector, json)?;
    println!("\nThe year {year}:");
    println!("  households registered   {:>10}", summary.households);
    println!("  review decisions        {:>10}", summary.decisions);
    for (status, n) in &summary.by_status {
        println!("    {status:<21} {n:>10}");
    }
    println!("  loans approved          {:>10}", summary.loans);
    for (p, n) in &summary.loans_by_programme {
        println!("    {p:<21} {n:>10}");
    }
    println!(
        "  disbursed               {:>18}",
        format_vnd(summary.disbursed)
    );
    println!(
        "  repayments              {:>10}  ({})",
        summary.repayments,
        format_vnd(summary.repaid)
    );
    println!("  loans moved overdue     {:>10}", summary.marked_overdue);
    println!(
        "  frozen / written off    {:>10} / {}",
        summary.frozen, summary.written_off
    );
    println!(
        "  moves / deaths / erasures {:>8} / {} / {}",
        summary.moves, summary.deaths, summary.erasures
    );
    if !summary.refused.is_empty() {
        let r: Vec<String> = summary
            .refused_by_kind()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("  commands refused by the book: {}", r.join(" "));
    }
    println!(
        "\nSocial assistance, {months} months of {year}: {} entitlements, {} payment runs, {} instructions ({})",
        payments.entitlements,
        payments.runs,
        payments.instructions,
        format_vnd(payments.instructed)
    );
    println!(
        "  settled {} (net {}), failed {} (reissued as post-office cash {}), returned {}; over the gateway transport: {} posts, duplicate posts answered {}, posts refused {}, transport errors {}",
        payments.settled,
        format_vnd(payments.settled_amount),
        payments.failed,
        payments.reissued_to_post_office,
        payments.returned,
        payments.posts_sent,
        payments.duplicate_posts_answered,
        payments.refused_posts,
        payments.transport_errors
    );
    println!(
        "  left unpaid by the runs: {} commune budgets short, {} entitlements; instructions pending at the year's end: {}",
        payments.run_shortfalls, payments.left_unpaid, payments.pending_at_year_end
    );
    println!("\nReconciliation as of {as_of} (count / VND):");
    println!(
        "  {:<8} {:>22} {:>22} {:>18} {:>18} {:>16}",
        "GATEWAY", "INSTRUCTED", "SETTLED", "FAILED", "RETURNED", "PENDING >10 DAYS"
    );
    for (g, t) in &by_gateway {
        let f = |(c, a): &(u64, rust_decimal::Decimal)| format!("{c} / {a}");
        println!(
            "  {:<8} {:>22} {:>22} {:>18} {:>18} {:>16}",
            g,
            f(&t[0]),
            f(&t[1]),
            f(&t[2]),
            f(&t[3]),
            f(&t[4])
        );
    }
    println!(
        "  mismatches listed: {mismatches} (payments reconcile --as-of DATE --csv FILE for the detail)"
    );
    println!();
    crate::cli::staff::portfolio(runtime, None, false).await?;
    println!();
    let names: Vec<String> = partitions.iter().map(|p| p.to_string()).collect();
    let tb = crate::cli::staff::trial_balance(runtime, Some(&names), false).await?;
    Ok((if code == ExitCode::SUCCESS { tb } else { code }, None))
}

pub fn print_summaries(projector: &Projector, json: bool) -> Result<(), BoxError> {
    let summaries = projector.summaries()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summaries)?);
        return Ok(());
    }
    println!(
        "{:<10} {:>9} {:>9}  {:<64}  EVENTS BY TYPE",
        "PARTITION", "EVENTS", "HEAD SEQ", "HEAD HASH"
    );
    for (partition, s) in summaries {
        let types: Vec<String> = s
            .events_by_type
            .iter()
            .map(|(t, n)| format!("{}={n}", t.trim_start_matches("ansinh.v1.")))
            .collect();
        println!(
            "{partition:<10} {:>9} {:>9}  {:<64}  {}",
            s.events,
            s.head_sequence,
            s.head_hash,
            types.join(" ")
        );
    }
    Ok(())
}
