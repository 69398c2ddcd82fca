//! Backups over HTTP: UnisonDB's `/btree/backup` and `/wal/backup` (same request and response
//! shapes) and our `/backups` (a complete, consistent backup with a manifest; see `crate::backup`).
//! Paths are relative to the node's backup directory `<data_dir>/backups/<namespace>/`; absolute
//! paths and `..` are refused, so a request can never write elsewhere.

use std::path::PathBuf;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, JsonOrDefault};
use super::target::Target;
use super::Shared;
use crate::backup::{self, compat, under_root, Manifest};

/// Body of `POST /btree/backup` (UnisonDB's).
#[derive(Deserialize, ToSchema)]
pub struct BtreeBackupBody {
    /// File to write, relative to the backup directory.
    #[serde(default)]
    path: String,
}

/// Body of `POST /wal/backup` (UnisonDB's).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalBackupBody {
    /// Copy sealed segments whose id (first LSN) is above this.
    #[serde(default)]
    after_segment_id: u64,
    /// Directory to copy them into, relative to the backup directory.
    #[serde(default)]
    backup_dir: String,
}

/// Body of `POST /backups` (all optional).
#[derive(Deserialize, Default, ToSchema)]
pub struct BackupBody {
    /// Directory (relative to the backup directory) to create the backup in; default: the backup
    /// directory itself.
    #[serde(default)]
    dir: Option<String>,
}

fn root(st: &Shared, namespace: &str) -> PathBuf {
    st.cfg.server.data_dir.join("backups").join(namespace)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, backup::BackupError> + Send + 'static,
) -> ApiResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("backup task failed: {e}"))),
    }
}

/// Write a snapshot of the namespace's B+Tree state to a file (UnisonDB's route).
#[utoipa::path(post, path = "/api/v1/{namespace}/btree/backup", request_body = BtreeBackupBody,
    responses((status = 200, body = Value), (status = 400), (status = 404)))]
pub async fn btree(
    State(st): State<Shared>,
    target: Target,
    JsonBody(b): JsonBody<BtreeBackupBody>,
) -> ApiResult<Json<Value>> {
    if b.path.trim().is_empty() {
        return Err(ApiError::bad_request("path cannot be empty"));
    }
    let path = under_root(&root(&st, &target.name), &b.path)?;
    let ns = target.ns;
    let p = path.clone();
    let w = blocking(move || compat::btree_backup(&ns, &p)).await?;
    Ok(Json(
        json!({"path": path.display().to_string(), "bytes": w.bytes}),
    ))
}

/// Copy the sealed WAL segments after a segment id into a directory (UnisonDB's route).
#[utoipa::path(post, path = "/api/v1/{namespace}/wal/backup", request_body = WalBackupBody,
    responses((status = 200, body = Value), (status = 400), (status = 404)))]
pub async fn wal(
    State(st): State<Shared>,
    target: Target,
    JsonBody(b): JsonBody<WalBackupBody>,
) -> ApiResult<Json<Value>> {
    if b.backup_dir.trim().is_empty() {
        return Err(ApiError::bad_request("backupDir cannot be empty"));
    }
    let dir = under_root(&root(&st, &target.name), &b.backup_dir)?;
    let ns = target.ns;
    let after = b.after_segment_id;
    let copied = blocking(move || compat::wal_backup(&ns, after, &dir)).await?;
    let backups: Vec<Value> = copied
        .into_iter()
        .map(|(id, p)| json!({"segmentId": id, "path": p.display().to_string()}))
        .collect();
    Ok(Json(json!({ "backups": backups })))
}

/// Take a complete, consistent backup (snapshot + WAL after it + manifest written last) while
/// writes continue; answers with its id, path and manifest.
#[utoipa::path(post, path = "/api/v1/{namespace}/backups", request_body(content = Option<BackupBody>),
    responses((status = 200, body = Value), (status = 400), (status = 404)))]
pub async fn create(
    State(st): State<Shared>,
    target: Target,
    JsonOrDefault(b): JsonOrDefault<BackupBody>,
) -> ApiResult<Json<Value>> {
    let base = root(&st, &target.name);
    let dest = match b.dir.as_deref() {
        Some(d) if !d.trim().is_empty() => under_root(&base, d)?,
        _ => base,
    };
    let ns = target.ns;
    let (m, dir) = blocking(move || backup::take(&ns, &dest)).await?;
    Ok(Json(json!({
        "id": m.id,
        "path": dir.display().to_string(),
        "manifest": m,
    })))
}

/// List the complete backups in the backup directory (those with a valid manifest), oldest first.
#[utoipa::path(get, path = "/api/v1/{namespace}/backups",
    responses((status = 200, body = Value), (status = 404)))]
pub async fn list(State(st): State<Shared>, target: Target) -> ApiResult<Json<Value>> {
    let base = root(&st, &target.name);
    let found = blocking(move || {
        let mut out: Vec<(PathBuf, Manifest)> = Vec::new();
        let Ok(entries) = std::fs::read_dir(&base) else {
            return Ok(out);
        };
        for e in entries.filter_map(Result::ok) {
            let dir = e.path();
            if let Ok(text) = std::fs::read(dir.join(backup::manifest::FILE)) {
                if let Ok(m) = serde_json::from_slice::<Manifest>(&text) {
                    out.push((dir, m));
                }
            }
        }
        out.sort_by_key(|(_, m)| m.created_unix_ms);
        Ok(out)
    })
    .await?;
    let backups: Vec<Value> = found
        .into_iter()
        .map(|(dir, m)| json!({"id": m.id, "path": dir.display().to_string(), "manifest": m}))
        .collect();
    Ok(Json(json!({ "backups": backups })))
}
