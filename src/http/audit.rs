//! Auditor routes: a partition's chain and checkpoint status. Readable by auditors and
//! the staff whose unit covers the partition (`Operation::Read`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::access::{self, Operation};
use crate::checkpoint::read::{read_checkpoints, read_cosignatures};
use crate::checkpoint::sign::checkpoint_hash;

use super::extract::Staff;
use super::{Api, ApiError};

/// schemas/http/audit-status.response.json
#[derive(Serialize)]
pub struct StatusAnswer {
    pub partition: String,
    /// Events applied by the projections, each chain-checked as it was (paired check).
    pub events: u64,
    pub head_sequence: u64,
    pub head_hash: String,
    /// The stream's last message, and the last the projections applied: their
    /// difference is how far the read model is behind.
    pub stream_last_sequence: u64,
    pub projected_stream_sequence: u64,
    pub checkpoints: u64,
    pub latest_checkpoint: Option<CheckpointLine>,
}

#[derive(Serialize)]
pub struct CheckpointLine {
    pub tree_size: u64,
    pub root: String,
    pub head_sequence: u64,
    pub key_id: String,
    pub issued_at_unix_ms: i64,
    /// The cosignatures stored for it (their signatures are checked by `audit verify`
    /// and by anyone holding the document, not here).
    pub cosigners: Vec<Cosigner>,
}

#[derive(Serialize)]
pub struct Cosigner {
    pub cosigner_id: String,
    pub key_id: String,
    pub signed_at_unix_ms: i64,
}

/// `GET /v1/audit/partitions/{p}/status`: how far the partition's verified chain goes,
/// its latest signed checkpoint and who cosigned it, and the read model's lag. Reads the
/// partition's checkpoints and cosignatures (one a day or so), not its events.
pub async fn status(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(partition): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(status_of(&api, &caller, &partition).await?).into_response())
}

/// A partition's status for a caller who may read it: what the JSON route and the
/// console show.
pub async fn status_of(
    api: &Api,
    caller: &crate::access::Caller,
    partition: &str,
) -> Result<StatusAnswer, ApiError> {
    let partition = crate::input::partition(partition)?;
    access::authorize(caller, Operation::Read, partition.as_str())?;
    let projector = api.projector().await?;
    let summary = super::reports::known_partition(projector, &partition)?;
    let ledger = &api.service().ledger;
    let unavailable = |e: &dyn std::fmt::Display| ApiError::Unavailable(e.to_string());
    let mut stream = ledger.stream().clone();
    let stream_last_sequence = crate::log::reader::last_stream_sequence(&mut stream)
        .await
        .map_err(|e| unavailable(&e))?;
    let projected_stream_sequence = projector.position()?.last.stream_sequence;
    let config = api.checkpoints();
    let checkpoints_stream = ledger
        .jetstream()
        .get_stream(&config.stream_name)
        .await
        .map_err(|e| unavailable(&e))?;
    let stored: Vec<_> = read_checkpoints(&checkpoints_stream, &config, &partition)
        .await
        .map_err(|e| unavailable(&e))?
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    let latest = match stored.iter().max_by_key(|c| c.body.tree_size) {
        None => None,
        Some(c) => {
            let hash = checkpoint_hash(&c.signed.checkpoint);
            let cosigners = read_cosignatures(&checkpoints_stream, &config, &partition)
                .await
                .map_err(|e| unavailable(&e))?
                .into_iter()
                .filter_map(Result::ok)
                .filter(|s| s.cosignature.checkpoint_hash.as_ref() == hash.as_slice())
                .map(|s| Cosigner {
                    cosigner_id: s.cosignature.cosigner_id,
                    key_id: s.cosignature.key_id,
                    signed_at_unix_ms: s.cosignature.signed_at_unix_ms,
                })
                .collect();
            Some(CheckpointLine {
                tree_size: c.body.tree_size,
                root: hex::encode(c.body.root),
                head_sequence: c.body.head_sequence,
                key_id: c.body.key_id.clone(),
                issued_at_unix_ms: c.body.issued_at_unix_ms,
                cosigners,
            })
        }
    };
    Ok(StatusAnswer {
        partition: partition.to_string(),
        events: summary.events,
        head_sequence: summary.head_sequence,
        head_hash: summary.head_hash,
        stream_last_sequence,
        projected_stream_sequence,
        checkpoints: stored.len() as u64,
        latest_checkpoint: latest,
    })
}

#[derive(Debug, serde::Deserialize)]
pub struct InclusionQuery {
    seq: u64,
    checkpoint_size: Option<u64>,
}

#[derive(Debug, serde::Deserialize)]
pub struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// An auditor's proof request: the partition known, the auditor side opened.
pub(super) async fn auditor_for(
    api: &Api,
    caller: &crate::access::Caller,
    partition: &str,
) -> Result<(crate::chain::Partition, crate::checkpoint::Auditor), ApiError> {
    let partition = crate::input::partition(partition)?;
    access::authorize(caller, Operation::Read, partition.as_str())?;
    super::reports::known_partition(api.projector().await?, &partition)?;
    let ledger = &api.service().ledger;
    let auditor = crate::checkpoint::Auditor::open(
        ledger.jetstream().client(),
        ledger.config().clone(),
        api.checkpoints(),
    )
    .await
    .map_err(proof_error)?;
    Ok((partition, auditor))
}

/// A proof that cannot be made: asked wrongly (400), of no checkpoint (404), or the
/// servers or the log could not answer (503).
pub(super) fn proof_error(e: crate::checkpoint::CheckpointError) -> ApiError {
    use crate::checkpoint::CheckpointError as E;
    match e {
        E::BadRequest(m) => ApiError::InvalidParameter(m),
        E::NoCheckpoint { partition, what } => ApiError::NotFound {
            what: "checkpoint",
            value: format!("of partition {partition} {what}"),
        },
        other => ApiError::Unavailable(other.to_string()),
    }
}

/// `GET /v1/audit/partitions/{p}/proofs/inclusion?seq=N[&checkpoint_size=M]`: the
/// inclusion proof document of event N in a signed checkpoint (the latest by default),
/// as `ansinh audit prove` prints it; `ansinh audit check-proof` checks it offline.
pub async fn inclusion(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(partition): Path<String>,
    query: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidParameter(e.body_text()))?;
    let (partition, auditor) = auditor_for(&api, &caller, &partition).await?;
    let document = auditor
        .prove(&partition, query.seq, query.checkpoint_size)
        .await
        .map_err(proof_error)?;
    Ok(Json(document).into_response())
}

/// `GET /v1/audit/partitions/{p}/proofs/consistency?from=A&to=B`: the proof that the
/// partition's log only grew between its checkpoints of sizes A and B.
pub async fn consistency(
    State(api): State<Api>,
    Staff(caller): Staff,
    Path(partition): Path<String>,
    query: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidParameter(e.body_text()))?;
    let (partition, auditor) = auditor_for(&api, &caller, &partition).await?;
    let document = auditor
        .consistency(&partition, query.from, query.to)
        .await
        .map_err(proof_error)?;
    Ok(Json(document).into_response())
}
