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

async fn ns_stats(target: Target) -> ApiResult<NamespaceStats> {
    let ns = target.ns;
    match tokio::task::spawn_blocking(move || ns.stats()).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// Namespace statistics.
#[utoipa::path(get, path = "/api/v1/{namespace}/stats", responses((status = 200, body = Value), (status = 404)))]
pub async fn stats(State(st): State<Shared>, target: Target) -> ApiResult<Json<Value>> {
    let s = ns_stats(target).await?;
    let wal_bytes: u64 = s.wal_segments.iter().map(|x| x.size_bytes).sum();
    Ok(Json(json!({
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
    })))
}

/// Latest LSN.
#[utoipa::path(get, path = "/api/v1/{namespace}/offset", responses((status = 200, body = Value), (status = 404)))]
pub async fn offset(target: Target) -> ApiResult<Json<Value>> {
    let s = ns_stats(target).await?;
    Ok(Json(
        json!({"namespace": s.name, "lsn": s.lsn, "hlc": s.last_hlc}),
    ))
}

/// LSN reflected in the B+Tree.
#[utoipa::path(get, path = "/api/v1/{namespace}/checkpoint", responses((status = 200, body = Value), (status = 404)))]
pub async fn checkpoint(target: Target) -> ApiResult<Json<Value>> {
    let s = ns_stats(target).await?;
    Ok(Json(
        json!({"namespace": s.name, "checkpointLsn": s.checkpoint_lsn}),
    ))
}
