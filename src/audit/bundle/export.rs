//! Building a bundle from the event and checkpoint streams (`ansinh audit export`).
//!
//! The events are taken from the chain as stored (every link re-checked) and written
//! byte for byte; the checkpoint is the partition's latest valid one, whose root is
//! recomputed from the log before anything is proved against it (paired check). The
//! finished bundle is run through the offline `verify` before it is handed back, so
//! the exporter never writes a bundle its own verifier would refuse.

use chrono::NaiveDate;

use super::statement::{self, Scope};
use super::{
    BUNDLE_EVENTS_MAX, BUNDLE_FORMAT, BUNDLE_KEY_EVENTS_MAX, BundleError, BundleFiles,
    CheckpointRef, FILES, Manifest, ManifestEvent, STATEMENT_FORMAT, Statement, canonical_json,
    encode_delimited,
};
use crate::chain::Partition;
use crate::checkpoint::audit::{Auditor, check_root};
use crate::checkpoint::proofs::CheckpointDocument;
use crate::checkpoint::read::{self, ChainPosition, Next};
use crate::checkpoint::{CheckpointError, PROOF_LEAVES_MAX};
use crate::merkle::{self, Hash32, Prover};
use crate::proto::Envelope;

/// Why a bundle could not be exported. One enum for this boundary.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the streams or the checkpoints failed (or they disagree with the log).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Events of the scope (or key events) are not yet under a signed checkpoint:
    /// publish one (`ansinh audit checkpoint --partition P`, or `export --checkpoint`).
    #[error(
        "partition {partition}: {uncovered} event(s) to export, the first at sequence {first}, are not covered by a signed checkpoint yet (latest covers {covered}); run `ansinh audit checkpoint --partition {partition}` or pass --checkpoint"
    )]
    NotCovered {
        partition: String,
        uncovered: u64,
        first: u64,
        covered: u64,
    },
    /// Nothing in the log concerns the scope (within the dates).
    #[error("no event concerns {0}")]
    Empty(String),
    /// More than BUNDLE_EVENTS_MAX events: narrow the dates.
    #[error("more than {BUNDLE_EVENTS_MAX} events; narrow --from/--to")]
    TooMany,
    /// The household id or commune code is malformed.
    #[error("{0}")]
    BadScope(String),
    /// The bundle built does not verify: a bug; nothing is written.
    #[error("the exported bundle does not verify: {0}")]
    SelfCheck(#[from] BundleError),
}

/// What to export.
#[derive(Clone, Debug)]
pub struct ExportRequest {
    pub scope: Scope,
    /// Inclusive bounds on the events' business dates.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl ExportRequest {
    /// The partition (province) holding the scope's events.
    pub fn partition(&self) -> Result<Partition, ExportError> {
        self.scope.partition().map_err(ExportError::BadScope)
    }

    fn wants(&self, envelope: &Envelope) -> bool {
        let date = statement::event_date(envelope);
        statement::in_scope(envelope, &self.scope)
            && self.from.is_none_or(|f| date >= f)
            && self.to.is_none_or(|t| date <= t)
    }
}

/// Builds the bundle of `request` against the latest checkpoint of its partition.
pub async fn export(
    auditor: &Auditor,
    request: &ExportRequest,
) -> Result<BundleFiles, ExportError> {
    let partition = request.partition()?;
    let keys_partition = auditor.config().keys_partition.clone();
    let ring = auditor.key_ring().await?;

    // The key history, whole, under the key partition's latest checkpoint.
    let keys_checkpoint = auditor.latest_checkpoint(&keys_partition, &ring).await?;
    let mut key_events: Vec<bytes::Bytes> = Vec::new();
    let mut key_hashes: Vec<Hash32> = Vec::new();
    read::read_chain(
        auditor.events(),
        auditor.log(),
        ChainPosition::genesis(keys_partition.clone()),
        read::Exclusions::SignedBy(&keys_partition),
        |head, event, _| {
            if key_events.len() >= BUNDLE_KEY_EVENTS_MAX {
                return Err(CheckpointError::BadRequest(format!(
                    "more than {BUNDLE_KEY_EVENTS_MAX} key events"
                )));
            }
            key_events.push(event.payload.clone());
            key_hashes.push(head.hash.0);
            Ok(Next::Continue)
        },
    )
    .await?;
    let covered = keys_checkpoint
        .as_ref()
        .map_or(0, |c| c.stored.body.tree_size);
    let Some(keys_checkpoint) = keys_checkpoint.filter(|_| covered == key_hashes.len() as u64)
    else {
        return Err(ExportError::NotCovered {
            partition: keys_partition.to_string(),
            uncovered: key_hashes.len() as u64 - covered.min(key_hashes.len() as u64),
            first: covered + 1,
            covered,
        });
    };
    check_root(&keys_checkpoint.stored.body, &key_hashes)?;

    // The partition's events: every hash up to the checkpoint, the scope's bytes.
    let checkpoint = auditor.latest_checkpoint(&partition, &ring).await?;
    let covered = checkpoint.as_ref().map_or(0, |c| c.stored.body.tree_size);
    if covered > PROOF_LEAVES_MAX {
        return Err(CheckpointError::TooLarge {
            partition: partition.to_string(),
            events: covered,
        }
        .into());
    }
    // Allocated once at its final size: the prover keeps it (2 x 32 bytes an event in
    // all, with the levels above it), and a vector grown by doubling would hold up to
    // twice as much.
    let mut hashes: Vec<Hash32> = Vec::with_capacity(covered as usize);
    let mut chosen: Vec<(u64, bytes::Bytes, Envelope)> = Vec::new();
    let (mut uncovered, mut first_uncovered) = (0u64, 0u64);
    read::read_chain(
        auditor.events(),
        auditor.log(),
        ChainPosition::genesis(partition.clone()),
        read::Exclusions::SignedBy(&keys_partition),
        |head, event, envelope| {
            if head.sequence <= covered {
                hashes.push(head.hash.0);
            }
            if request.wants(envelope) {
                if head.sequence > covered {
                    uncovered += 1;
                    if first_uncovered == 0 {
                        first_uncovered = head.sequence;
                    }
                } else if chosen.len() >= BUNDLE_EVENTS_MAX {
                    return Err(CheckpointError::BadRequest("too many events".into()));
                } else {
                    chosen.push((head.sequence, event.payload.clone(), envelope.clone()));
                }
            }
            Ok(Next::Continue)
        },
    )
    .await
    .map_err(|e| match e {
        CheckpointError::BadRequest(_) => ExportError::TooMany,
        e => e.into(),
    })?;
    if uncovered > 0 {
        return Err(ExportError::NotCovered {
            partition: partition.to_string(),
            uncovered,
            first: first_uncovered,
            covered,
        });
    }
    let Some(checkpoint) = checkpoint else {
        return Err(ExportError::Empty(describe(&request.scope)));
    };
    if chosen.is_empty() {
        return Err(ExportError::Empty(describe(&request.scope)));
    }
    let body = &checkpoint.stored.body;
    check_root(body, &hashes)?;

    // Many proofs over one tree: subtree roots once, then O(log² n) per proof. The
    // prover takes the hashes over: no second copy is held while it builds.
    let prover = Prover::new(partition.to_string(), hashes);
    let proofs = chosen
        .iter()
        .map(|(sequence, _, _)| prover.inclusion(sequence - 1))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CheckpointError::from)?;
    let cosignatures = auditor
        .cosignatures_of(&partition, &checkpoint.stored)
        .await?;
    let keys_cosignatures = auditor
        .cosignatures_of(&keys_partition, &keys_checkpoint.stored)
        .await?;
    let document = CheckpointDocument::new(
        &checkpoint.stored.signed,
        body,
        &checkpoint.public_key,
        &cosignatures,
    );
    let keys_document = CheckpointDocument::new(
        &keys_checkpoint.stored.signed,
        &keys_checkpoint.stored.body,
        &keys_checkpoint.public_key,
        &keys_cosignatures,
    );
    let checkpoint_ref = CheckpointRef::from(body);
    let rows: Vec<(Envelope, String)> = chosen
        .iter()
        .map(|(sequence, _, e)| {
            let hash = prover
                .event_hash(*sequence - 1)
                .expect("a chosen event is under the checkpoint: it was proved");
            (e.clone(), merkle::encode_hash(hash))
        })
        .collect();
    let folded: Vec<(u64, Envelope)> = chosen.iter().map(|(s, _, e)| (*s, e.clone())).collect();
    let statement = Statement {
        format: STATEMENT_FORMAT.into(),
        checkpoint: checkpoint_ref.clone(),
        scope: request.scope.clone(),
        households: statement::balances(&folded),
    };
    let manifest = Manifest {
        format: BUNDLE_FORMAT.into(),
        scope: request.scope.clone(),
        from: request.from.map(|d| d.to_string()),
        to: request.to.map(|d| d.to_string()),
        checkpoint: checkpoint_ref,
        keys_partition: keys_partition.to_string(),
        keys_checkpoint: CheckpointRef::from(&keys_checkpoint.stored.body),
        key_ids: ring.keys().iter().map(|k| k.key_id.clone()).collect(),
        signed_by: body.key_id.clone(),
        events: rows
            .iter()
            .map(|(e, hash)| ManifestEvent {
                sequence: e.sequence,
                event_type: e.event_type.clone(),
                event_hash: hash.clone(),
            })
            .collect(),
        files: FILES.iter().map(|f| f.to_string()).collect(),
    };
    let event_bytes: Vec<&[u8]> = chosen.iter().map(|(_, b, _)| b.as_ref()).collect();
    let key_bytes: Vec<&[u8]> = key_events.iter().map(|b| b.as_ref()).collect();
    let files = BundleFiles {
        manifest: canonical_json(&manifest),
        checkpoint: canonical_json(&document),
        keys_checkpoint: canonical_json(&keys_document),
        keys: encode_delimited(&key_bytes),
        events: encode_delimited(&event_bytes),
        proofs: canonical_json(&proofs),
        statement: canonical_json(&statement),
        csv: statement::render_csv(&rows),
    };
    super::verify(&files, &[])?;
    Ok(files)
}

fn describe(scope: &Scope) -> String {
    match scope {
        Scope::Household(h) => format!("household {h}"),
        Scope::Commune(c) => format!("commune {c}"),
    }
}
