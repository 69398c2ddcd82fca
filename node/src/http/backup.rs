//! Backups over HTTP: UnisonDB's `/btree/backup` and `/wal/backup` (same request and response
//! shapes) and our `/backups` (a complete, consistent backup with a manifest; see `crate::backup`).
//! Paths are relative to the node's backup directory `<data_dir>/backups/<namespace>/`; absolute
//! paths and `..` are refused, so a request can never write elsewhere.

use std::path::PathBuf;

use axum::extract::{Query, State};
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
    /// `local` (default) or `objectStore`: into the `archive` store, under `<prefix>/<ns>/base/<id>/`.
    #[serde(default)]
    target: Option<String>,
}

/// Query of `GET /backups`: `target=objectStore` lists the archive store instead.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    target: Option<String>,
}

/// Whether a `target` names the object store (anything but absent/`local` must be exactly that).
fn wants_store(target: Option<&str>) -> ApiResult<bool> {
    match target.map(str::trim) {
        None | Some("") | Some("local") => Ok(false),
        Some("objectStore") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "target {other:?}: expected \"local\" or \"objectStore\""
        ))),
    }
}

/// The archive store, or 409 when this node has none configured.
fn archive_store(st: &Shared) -> ApiResult<crate::objstore::Store> {
    let a = &st.cfg.archive;
    if a.bucket.trim().is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "this node has no object store configured (archive.bucket is empty)",
        ));
    }
    Ok(crate::objstore::Store::from_config(&a.store())?)
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
    if wants_store(b.target.as_deref())? {
        return create_in_store(&st, target).await;
    }
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

/// A base backup into the archive store: taken locally into a staging directory, uploaded
/// (manifest last), the staging copy removed; then store retention (`archive.retain_base_backups`).
async fn create_in_store(st: &Shared, target: Target) -> ApiResult<Json<Value>> {
    let store = archive_store(st)?;
    let staging = root(st, &target.name).join(".objstore-staging");
    let ns = target.ns;
    let s2 = staging.clone();
    let (m, dir) = blocking(move || backup::take(&ns, &s2)).await?;
    let uploaded = crate::objstore::base::upload(&store, &m, &dir).await;
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
        tracing::warn!(dir = %dir.display(), error = %e, "staging copy of a backup not removed");
    }
    let location = uploaded?;
    let keep = st.cfg.archive.retain_base_backups as usize;
    if let Err(e) = crate::objstore::base::apply_retention(&store, &target.name, keep).await {
        tracing::warn!(namespace = %target.name, error = %e, "store retention failed; retried after the next backup");
    }
    tracing::info!(namespace = %target.name, backup = %m.id, %location, "base backup uploaded");
    Ok(Json(
        json!({ "id": m.id, "location": location, "manifest": m }),
    ))
}

/// List the complete backups (those with a valid manifest), oldest first: in the backup
/// directory, or with `target=objectStore` in the archive store.
#[utoipa::path(get, path = "/api/v1/{namespace}/backups", params(ListQuery),
    responses((status = 200, body = Value), (status = 404), (status = 409)))]
pub async fn list(
    State(st): State<Shared>,
    target: Target,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    if wants_store(q.target.as_deref())? {
        let store = archive_store(&st)?;
        let found = crate::objstore::base::list(&store, &target.name).await?;
        let backups: Vec<Value> = found
            .into_iter()
            .map(|m| {
                let location =
                    store.location(&crate::objstore::base::backup_dir(&m.namespace, &m.id));
                json!({"id": m.id, "location": location, "manifest": m})
            })
            .collect();
        return Ok(Json(json!({ "backups": backups })));
    }
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
