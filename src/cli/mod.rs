//! Command-line front ends beside `main.rs`, one module per desk.

pub mod admin;
pub mod audit;
pub mod demo;
pub mod gateway;
pub mod load;
pub mod payments;
pub mod projections;
pub mod proofs;
pub mod serve;
pub mod staff;

use std::path::Path;
use std::process::ExitCode;

use ansinh::app::Runtime;
use ansinh::chain::Partition;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A command that records failed in a way that is not a refusal (NATS, a commit that
/// ran out of attempts): its event may be in the log. The key it used, perhaps one it
/// made up, is the only safe retry (the same key never appends twice), so the error
/// carries it: in its message, and as `idempotency_key` in the `--json` error object.
#[derive(Debug, thiserror::Error)]
#[error(
    "{source}; the command may be recorded: retry it with --idempotency-key {idempotency_key}, which never records it twice"
)]
pub struct Unsettled {
    pub idempotency_key: String,
    pub source: BoxError,
}

/// The `--json` object of a command that failed (exit 2): its message, and the
/// idempotency key to retry with when the command may be recorded.
pub fn failed_json(e: &(dyn std::error::Error + Send + Sync + 'static)) -> serde_json::Value {
    let mut error = serde_json::json!({"error": "Failed", "message": e.to_string()});
    if let Some(unsettled) = e.downcast_ref::<Unsettled>() {
        error["idempotency_key"] = unsettled.idempotency_key.clone().into();
    }
    error
}

/// An argument clap accepted that the command refuses once it reads it with the others
/// (a range that runs backwards, an option given without its pair) or reads it from
/// stdin: answered like clap's own refusals (`usage_error`), before anything ran. Exit 2.
#[derive(Debug)]
pub struct ArgumentError {
    /// As clap names it in its refusals: `--through <THROUGH>`.
    pub argument: String,
    /// The value refused; empty for an argument that is missing.
    pub value: String,
    /// The kind of value expected, when one of `ansinh::input`'s parsers refused it.
    pub input: Option<ansinh::input::Kind>,
    pub message: String,
}

/// As clap says it: the value refused and the argument, or the argument missing.
impl std::fmt::Display for ArgumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.value.is_empty() {
            write!(f, "'{}' is missing: {}", self.argument, self.message)
        } else {
            write!(
                f,
                "invalid value '{}' for '{}': {}",
                self.value, self.argument, self.message
            )
        }
    }
}

impl std::error::Error for ArgumentError {}

impl ArgumentError {
    pub fn new(argument: &str, value: impl ToString, message: impl ToString) -> Self {
        Self {
            argument: argument.to_owned(),
            value: value.to_string(),
            input: None,
            message: message.to_string(),
        }
    }
}

/// How `main` answers a command that returned an error: an `ArgumentError` as a usage
/// error, anything else as a failure (`failed_json` with `--json`, else a line on
/// stderr). Exit 2 either way.
pub fn failed(e: &(dyn std::error::Error + Send + Sync + 'static), json: bool) -> ExitCode {
    match e.downcast_ref::<ArgumentError>() {
        Some(a) if json => println!(
            "{}",
            serde_json::json!({
                "error": "InvalidArgument",
                "argument": a.argument,
                "value": (!a.value.is_empty()).then_some(&a.value),
                "kind": a.input.map(|k| k.name()),
                "expected": a.input.map(|k| k.expected()),
                "message": a.message,
            })
        ),
        Some(a) => eprintln!("error: {a}"),
        None if json => println!("{}", failed_json(e)),
        None => eprintln!("error: {e}"),
    }
    ExitCode::from(2)
}

/// Answers a command line clap refused (a malformed value, a missing or unknown
/// argument) before anything ran: clap's message for people, or with `--json` one JSON
/// object on stdout naming the argument, the value and the form expected. Help and
/// version requests are printed as asked. Exit 2, as clap's own; also for a command
/// named without its subcommand (`ansinh payments`), whose help clap prints: a script's
/// `ansinh loans $CMD` with an empty `$CMD` ran nothing, and must not go on as if it had.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    // `args_os`: `args` panics on an argument that is not UTF-8, the very error clap
    // may be answering here.
    if !std::env::args_os().any(|a| a == "--json") {
        let _ = e.print();
        return ExitCode::from(2);
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // The help's usage line names the command and what it needs.
        let help = e.render().to_string();
        let usage = help
            .lines()
            .find_map(|l| l.trim().strip_prefix("Usage:"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        println!(
            "{}",
            serde_json::json!({
                "error": "MissingSubcommand",
                "message": format!("a subcommand is needed: {usage} (--help lists them)"),
            })
        );
        return ExitCode::from(2);
    }
    let text = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => Some(v.join(", ")),
        _ => None,
    };
    // The refusal of `ansinh::input`, when it was one of its parsers that refused.
    let input =
        std::error::Error::source(&e).and_then(|s| s.downcast_ref::<ansinh::input::InputError>());
    let kind = match e.kind() {
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => "InvalidArgument",
        ErrorKind::MissingRequiredArgument => "MissingArgument",
        ErrorKind::UnknownArgument => "UnknownArgument",
        _ => "Usage",
    };
    let message = match input {
        Some(i) => i.to_string(),
        None => e
            .render()
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned(),
    };
    println!(
        "{}",
        serde_json::json!({
            "error": kind,
            "argument": text(ContextKind::InvalidArg),
            "value": text(ContextKind::InvalidValue),
            "kind": input.map(|i| i.kind.name()),
            "expected": input.map(|i| i.kind.expected()),
            "message": message,
        })
    );
    ExitCode::from(2)
}

/// What is said before any command on an opened ledger. While the data directory holds
/// household data keys of an earlier version, every command but `admin migrate-vault` is
/// refused (exit 2): sealing or reading personal data would miss them. Each partition
/// that lost acknowledged data is named, with how it resumes.
pub fn preflight(
    runtime: &Runtime,
    data_dir: &Path,
    migrating: bool,
) -> Result<Option<ExitCode>, BoxError> {
    if !migrating && ansinh::personal::has_local_keys(runtime.ledger.store().db())? {
        eprintln!(
            "error: the data directory {} holds household data keys of an earlier version; run `ansinh admin migrate-vault` first",
            data_dir.display()
        );
        return Ok(Some(ExitCode::from(2)));
    }
    for lost in &runtime.lost {
        eprintln!(
            "LOST ACKNOWLEDGED DATA in partition {}: {}\nappending to it is stopped; after investigating, run: ansinh admin accept-head --partition {}",
            lost.partition, lost.reason, lost.partition
        );
    }
    Ok(None)
}

/// For a report or audit naming a partition: the `not_found` answer when the log holds
/// no event of it (one look-up of its subject's last message, not a read), else None.
pub async fn unknown_partition(
    runtime: &Runtime,
    partition: &Partition,
    json: bool,
) -> Result<Option<ExitCode>, BoxError> {
    Ok((!partition_exists(runtime, partition).await?)
        .then(|| not_found(json, "partition", partition.as_str())))
}

/// Whether the log holds any event of `partition`: one look-up of its subject's last
/// message, not a read.
async fn partition_exists(runtime: &Runtime, partition: &Partition) -> Result<bool, BoxError> {
    let subject = runtime.ledger.config().subject(partition);
    Ok(
        ansinh::log::reader::last_on_subject(runtime.ledger.stream(), &subject)
            .await
            .map_err(|e| format!("reading the log: {e}"))?
            .is_some(),
    )
}

/// A decimal string of VND as people read it (`1.500.000 ₫`); text that is not an amount
/// is shown as it is.
pub fn vnd_text(amount: &str) -> String {
    match amount.parse::<rust_decimal::Decimal>() {
        Ok(d) => ansinh::domain::money::format_vnd(d),
        Err(_) => amount.to_owned(),
    }
}

/// The exit code of a check: 0 when it passed, 1 when it found something (2 is kept for
/// a command that could not run).
pub fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Says that a report or audit named something the log has never seen, and returns the
/// exit code for it (1): an empty answer would read as "nothing wrong with it".
pub fn not_found(json: bool, what: &str, value: &str) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::json!({"error": "not_found", "what": what, "value": value})
        );
    } else {
        println!("NOT FOUND: the log has no {what} {value}");
    }
    ExitCode::from(1)
}

/// The ledger's directory of staff and gateways (its bucket on the ledger's NATS).
pub async fn open_directory(
    runtime: &Runtime,
) -> Result<ansinh::directory::Directory, ansinh::directory::DirectoryError> {
    let config = runtime.ledger.config();
    ansinh::directory::Directory::open(
        runtime.ledger.jetstream(),
        &config.stream_name,
        config.replicas,
    )
    .await
}
