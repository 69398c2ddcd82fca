//! Health, readiness, metrics and per-namespace stats.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::target::Target;
use super::Shared;
use crate::engine::NamespaceStats;

/// Process is alive; lists namespaces (answers even while namespaces recover).
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Value)))]
pub async fn healthz(State(st): State<Shared>) -> Json<Value> {
    Json(json!({"status": "ok", "namespaces": st.cfg.server.namespaces}))
}

/// 200 once every namespace recovered (and not shutting down); 503 before. A namespace whose
/// reads hit a damaged page is listed under `degraded` (file and page).
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Value), (status = 503)))]
pub async fn readyz(State(st): State<Shared>) -> Response {
    if st.is_ready() {
        // A relayer (or a hub mirroring namespaces) is ready once connected and within the lag bound.
        if let Some(Err(why)) = st.replication().map(|r| r.ready()) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "not ready", "error": why})),
            )
                .into_response();
        }
        // Damaged pages fail only the reads that touch them: stay ready, but say which
        // namespaces are degraded so an operator (or alert) sees it.
        let degraded: serde_json::Map<String, Value> = st
            .db()
            .map(|db| {
                db.namespaces()
                    .filter_map(|ns| ns.degraded().map(|why| (ns.name().to_string(), why.into())))
                    .collect()
            })
            .unwrap_or_default();
        if degraded.is_empty() {
            (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
        } else {
            (
                StatusCode::OK,
                Json(json!({"status": "ready", "degraded": degraded})),
            )
                .into_response()
        }
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "error": "recovering or shutting down"})),
        )
            .into_response()
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "metrics", body = String, content_type = "text/plain")))]
pub async fn metrics(State(st): State<Shared>) -> Response {
    let st2 = st.clone();
    let _ = tokio::task::spawn_blocking(move || super::metrics::refresh(&st2)).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// UnisonDB's answer on a node outside a Raft group (every node, until hubs form groups).
fn raft_disabled() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "raft service disabled"})),
    )
        .into_response()
}

/// Raft leader of a namespace's group (UnisonDB's route; `?namespace=`, default the first served):
/// 503 "raft service disabled" on a node without a `cluster` section.
#[utoipa::path(get, path = "/status/leader", responses((status = 200, body = Value), (status = 503, body = Value)))]
pub async fn raft_leader(State(st): State<Shared>, uri: axum::http::Uri) -> Response {
    super::cluster::leader(&st, uri.query()).unwrap_or_else(raft_disabled)
}

/// Members of a namespace's group (UnisonDB's route); 503 like `/status/leader`.
#[utoipa::path(get, path = "/status/peers", responses((status = 200, body = Value), (status = 503, body = Value)))]
pub async fn raft_peers(State(st): State<Shared>, uri: axum::http::Uri) -> Response {
    super::cluster::peers(&st, uri.query()).unwrap_or_else(raft_disabled)
}

async fn ns_stats(target: Target) -> ApiResult<NamespaceStats> {
    let ns = target.ns;
    match tokio::task::spawn_blocking(move || ns.stats()).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// UnisonDB's WAL position `(segmentId, offset)` of the append point: our segments are named by
/// their first LSN, which serves as the segment id; the offset is the end of the last record.
fn append_position(s: &NamespaceStats) -> (u64, u64) {
    s.wal_segments
        .last()
        .map_or((0, 0), |seg| (seg.first_lsn, seg.size_bytes))
}

/// Namespace statistics (UnisonDB's `opsReceived`, `opsFlushed`, `currentSegment`, `currentOffset`
/// beside ours; ops are counted in WAL records, over the namespace's life).
#[utoipa::path(get, path = "/api/v1/{namespace}/stats", responses((status = 200, body = Value), (status = 404)))]
pub async fn stats(State(st): State<Shared>, target: Target) -> ApiResult<Json<Value>> {
    let s = ns_stats(target).await?;
    let wal_bytes: u64 = s.wal_segments.iter().map(|x| x.size_bytes).sum();
    let (segment, offset) = append_position(&s);
    let raft = st.cluster().and_then(|c| c.status(&s.name));
    let mut body = json!({
        "opsReceived": s.lsn,
        "opsFlushed": s.checkpoint_lsn,
        "currentSegment": segment,
        "currentOffset": offset,
        "namespace": s.name,
        "lsn": s.lsn,
        "lastHlc": s.last_hlc,
        "checkpointLsn": s.checkpoint_lsn,
        "memtableBytes": s.memtable_bytes,
        "sealedMemtables": s.sealed_memtables,
        "walFirstLsn": s.wal_first_lsn,
        "walSegments": s.wal_segments.len(),
        "walBytes": wal_bytes,
        "tree": s.tree,
        "openTransactions": st.txns.open_count(),
        "poisoned": s.poisoned,
        "degraded": s.degraded,
        "checksumFailures": s.checksum_failures,
        "epoch": s.epoch,
        "epochHistory": s.epoch_history,
        "mode": st.cfg.server.mode,
        "replication": st.replication().and_then(|r| r.position(&s.name)),
    });
    // Cluster mode only: a single hub's answer is unchanged.
    if let (Some(r), Some(obj)) = (raft, body.as_object_mut()) {
        obj.insert("raft".into(), json!(r));
    }
    Ok(Json(body))
}

/// Latest LSN, and UnisonDB's WAL position (`segmentId`, `offset`).
#[utoipa::path(get, path = "/api/v1/{namespace}/offset", responses((status = 200, body = Value), (status = 404)))]
pub async fn offset(target: Target) -> ApiResult<Json<Value>> {
    let s = ns_stats(target).await?;
    let (segment, offset) = append_position(&s);
    Ok(Json(json!({
        "segmentId": segment,
        "offset": offset,
        "namespace": s.name,
        "lsn": s.lsn,
        "hlc": s.last_hlc,
    })))
}

/// LSN reflected in the B+Tree, and UnisonDB's `recordProcessed` with the WAL position of that
/// record (`segmentId`/`offset` are 0 once retention removed it, as UnisonDB answers without one).
#[utoipa::path(get, path = "/api/v1/{namespace}/checkpoint", responses((status = 200, body = Value), (status = 404)))]
pub async fn checkpoint(target: Target) -> ApiResult<Json<Value>> {
    let ns = target.ns.clone();
    let s = ns_stats(target).await?;
    let lsn = s.checkpoint_lsn;
    let (segment, offset) = tokio::task::spawn_blocking(move || ns.wal_position_of(lsn))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .unwrap_or((0, 0));
    Ok(Json(json!({
        "recordProcessed": lsn,
        "segmentId": segment,
        "offset": offset,
        "namespace": s.name,
        "checkpointLsn": lsn,
    })))
}
