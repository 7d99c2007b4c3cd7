//! Liveness and readiness for the orchestrator and the operator: no token, no body.
//!
//! - `GET /healthz`: the process answers (200), whatever the state of an outside NATS;
//!   503 once the embedded nats-server it started has exited: nothing brings it back but
//!   a restart of the process, which is what an orchestrator does on a failed liveness
//!   probe. An outside server or cluster that is away may come back, so it fails
//!   readiness only.
//! - `GET /readyz`: 200 only when the event stream answers within `READY_CHECK_WAIT_MAX`,
//!   the read model has held the whole log once since the process started and its latest
//!   catch-up did not fail; else 503 with the reasons. Either way the body says how far
//!   the read model is behind the log, and which partitions this process has stopped
//!   and why (`Ledger::stopped_partitions`): lost acknowledged data or a chain verify
//!   found broken, and, as soon as a writer meets one, a message that breaks a
//!   partition's chain (a foreign or damaged message). A stopped partition does not make
//!   the process unready: the load balancer would then take every province off it for
//!   one, while its other partitions, and every read, still work; the metric
//!   `ansinh_partition_stopped` is what to alert on. Later lag does not make a process
//!   unready either: writes still work, and every process of a busy province would lag
//!   alike.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::Api;

/// Longest a readiness check waits for the event stream to answer.
pub const READY_CHECK_WAIT_MAX: Duration = Duration::from_secs(2);

pub async fn healthz(State(api): State<Api>) -> Response {
    match api.embedded_server_exit() {
        None => (StatusCode::OK, Json(serde_json::json!({"alive": true}))).into_response(),
        Some(status) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "alive": false,
                "reason": format!("the embedded nats-server exited ({status})"),
            })),
        )
            .into_response(),
    }
}

pub async fn readyz(State(api): State<Api>) -> Response {
    let ledger = &api.service().ledger;
    let mut reasons: Vec<String> = Vec::new();
    let mut stream = ledger.stream().clone();
    let last = match tokio::time::timeout(
        READY_CHECK_WAIT_MAX,
        crate::log::reader::last_stream_sequence(&mut stream),
    )
    .await
    {
        Ok(Ok(last)) => Some(last),
        Ok(Err(e)) => {
            reasons.push(format!("the event stream does not answer: {e}"));
            None
        }
        Err(_) => {
            reasons.push(format!(
                "the event stream did not answer within {} s",
                READY_CHECK_WAIT_MAX.as_secs()
            ));
            None
        }
    };
    let stopped: Vec<serde_json::Value> = match ledger.stopped_partitions() {
        Ok(stopped) => stopped
            .into_iter()
            .map(|(partition, why)| serde_json::json!({"partition": partition, "reason": why}))
            .collect(),
        Err(e) => {
            reasons.push(format!("the ledger's store: {e}"));
            Vec::new()
        }
    };
    // Read before the sequence, which the projector publishes first.
    let started = api.read_model_started();
    let projected = api.projected_through();
    if !started {
        let behind = last
            .map(|l| format!("{} messages behind", l.saturating_sub(projected)))
            .unwrap_or_else(|| "the stream's end unknown".into());
        reasons.push(format!(
            "the read model is catching up with the log since the process started ({behind})"
        ));
    }
    if let Some(e) = api.projection_failure() {
        reasons.push(format!(
            "the read model stopped at stream sequence {projected}: {e}"
        ));
    }
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "ready": reasons.is_empty(),
        "reasons": reasons,
        "stream_last_sequence": last,
        "projected_through": projected,
        "projection_lag_messages": last.map(|l| l.saturating_sub(projected)),
        "stopped_partitions": stopped,
    });
    (status, Json(body)).into_response()
}

/// `GET /metrics`: the Prometheus text (see `telemetry` for each metric). No token, like
/// the probes: it names partitions, types and routes, never a household or an amount.
/// The projection lag is measured now: the stream's last sequence against the read
/// model's, bounded by `READY_CHECK_WAIT_MAX` (left as it was if the stream is away).
pub async fn metrics(State(api): State<Api>) -> Response {
    let mut stream = api.service().ledger.stream().clone();
    if let Ok(Ok(last)) = tokio::time::timeout(
        READY_CHECK_WAIT_MAX,
        crate::log::reader::last_stream_sequence(&mut stream),
    )
    .await
    {
        let behind = last.saturating_sub(api.projected_through());
        let behind_for = if behind == 0 {
            Duration::ZERO
        } else {
            let since = crate::checkpoint::now_unix_ms() - api.caught_up_at();
            Duration::from_millis(since.max(0) as u64)
        };
        crate::telemetry::projection_lag(behind, behind_for);
    }
    if let Ok(stopped) = api.service().ledger.stopped_partitions() {
        crate::telemetry::partitions_stopped(stopped.iter().map(|(p, _)| p.as_str()));
    }
    crate::telemetry::http_in_flight(api.requests_in_flight());
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::render(),
    )
        .into_response()
}
