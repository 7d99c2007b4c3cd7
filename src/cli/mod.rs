//! Command-line front ends beside `main.rs`, one module per desk.

pub mod gateway;
pub mod payments;
pub mod staff;

use std::process::ExitCode;

use ansinh::app::Runtime;
use ansinh::chain::Partition;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether the log holds any event of `partition`: one look-up of its subject's last
/// message, not a read.
pub async fn partition_exists(runtime: &Runtime, partition: &Partition) -> Result<bool, BoxError> {
    let subject = runtime.ledger.config().subject(partition);
    Ok(
        ansinh::log::reader::last_on_subject(runtime.ledger.stream(), &subject)
            .await
            .map_err(|e| format!("reading the log: {e}"))?
            .is_some(),
    )
}

/// Says that a report or audit named something the log has never seen, and returns the
/// exit code for it (1): an empty answer would read as "nothing wrong with it".
/// A decimal string of VND as people read it (`1.500.000 ₫`); text that is not an amount
/// is shown as it is.
pub fn vnd_text(amount: &str) -> String {
    match amount.parse::<rust_decimal::Decimal>() {
        Ok(d) => ansinh::domain::money::format_vnd(d),
        Err(_) => amount.to_owned(),
    }
}

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
