//! What `ansinh audit export` and `ansinh audit verify-bundle` print. Export returns
//! whether it succeeded (exit 0); verify-bundle its `OfflineVerdict` (exit 0, 1, or
//! `EXIT_UNANCHORED` when no key was pinned); `Err` is an operating error.

use std::path::Path;

use super::export::{self, ExportRequest};
use super::{BundleError, BundleFiles, Verified};
use crate::app::Runtime;
use crate::checkpoint::cli::OfflineVerdict;
use crate::checkpoint::{Auditor, CheckpointConfig, Checkpointer};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `ansinh audit export`: write the bundle of `request` into `out`. With
/// `checkpoint_first`, publish checkpoints of the partition and the key partition
/// first, so every event of the scope is covered.
pub async fn export_bundle(
    runtime: &Runtime,
    config: &CheckpointConfig,
    data_dir: &Path,
    request: &ExportRequest,
    checkpoint_first: bool,
    out: &Path,
    json: bool,
) -> Result<bool, BoxError> {
    if checkpoint_first {
        let mut checkpointer = Checkpointer::open(
            runtime.client.clone(),
            runtime.ledger.clone(),
            config.clone(),
            runtime.key_home(data_dir),
        )
        .await?;
        checkpointer.checkpoint(&request.partition()?).await?;
        checkpointer.checkpoint(&config.keys_partition).await?;
    }
    let auditor = Auditor::open(
        runtime.client.clone(),
        runtime.ledger.config().clone(),
        config.clone(),
    )
    .await?;
    let files = export::export(&auditor, request).await?;
    files.write(out)?;
    let verified = super::verify(&files, &[])?;
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": true, "out": out.display().to_string(), "verified": verified})
        );
    } else {
        println!(
            "EXPORTED {} events to {}: checkpoint of partition {} size {} root {}",
            verified.events,
            out.display(),
            verified.checkpoint.partition,
            verified.checkpoint.tree_size,
            verified.checkpoint.root
        );
    }
    Ok(true)
}

/// One line for people about a verified bundle.
pub fn summary(verified: &Verified) -> String {
    format!(
        "{} events, checkpoint of partition {} size {} root {} signed by key {}, balances of {} household(s) match",
        verified.events,
        verified.checkpoint.partition,
        verified.checkpoint.tree_size,
        verified.checkpoint.root,
        verified.signed_by,
        verified.households
    )
}

/// `ansinh audit verify-bundle DIR [--trust KEY]...`: offline, no server. Without a
/// pinned key the verdict is UNANCHORED (`checkpoint::cli::EXIT_UNANCHORED`), never OK:
/// a bundle made whole with keys of one's own checks just as well. `Err` when the
/// bundle cannot be read (exit 2).
pub fn verify_bundle(
    dir: &Path,
    trusted: &[String],
    pins: &crate::checkpoint::proofs::CosignerPins,
    json: bool,
) -> Result<OfflineVerdict, BoxError> {
    // A file is the archive the staff API serves; a directory what `export` writes.
    let files = if dir.is_file() {
        BundleFiles::read_archive(dir)
    } else {
        BundleFiles::read(dir)
    };
    // A bundle that cannot be read was not checked: an operating error (exit 2, as
    // `check-proof` for a file it cannot read), never REJECTED, which says it was read
    // and refused. A file over its bound is refused, as `check-proof` refuses one.
    if let Err(e @ BundleError::Read { .. }) = files {
        return Err(e.into());
    }
    let result = files.and_then(|files| super::verify_pinned(&files, trusted, pins));
    let pinned = !trusted.is_empty();
    let verdict = OfflineVerdict::of(result.is_ok(), pinned);
    let word = verdict.word();
    match &result {
        Ok(v) if json => {
            let mut fields = verdict.json_fields(pinned);
            fields.insert("verified".into(), serde_json::to_value(v)?);
            println!("{}", serde_json::Value::Object(fields));
        }
        Ok(v) => {
            println!("{word} bundle {}: {}", dir.display(), summary(v));
            crate::checkpoint::cli::print_cosigners(word, &v.cosigners, &v.unpinned_cosigners);
            if !pinned {
                println!(
                    "UNANCHORED: every file checks against the keys the bundle carries, but no ledger key was pinned, so anyone could have made it. Signed by key {}; the bundle's key history ends at key {} (public key {}): compare that with the latest ledger key you know, then pass its public key as --trust (the first key {} alone only shows the signer descends from it, and a retired key can sign a history cut short at itself)",
                    v.signed_by, v.latest_key, v.latest_public_key, v.first_key
                );
            }
        }
        Err(e) if json => {
            let mut fields = verdict.json_fields(pinned);
            fields.insert("error".into(), e.to_string().into());
            println!("{}", serde_json::Value::Object(fields));
        }
        Err(e) => println!("{word}: {e}"),
    }
    Ok(verdict)
}
