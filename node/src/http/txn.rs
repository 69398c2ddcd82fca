//! `/api/v1/{ns}/tx/...`: begin, stage KV/row/LOB operations, commit (one batch) or abort.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{OriginalUri, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{
    api_path, b64, blocking, content_length, decode_text, json_body, json_body_or_default,
};
use super::lob::pump;
use super::row::row_op;
use super::Shared;
use crate::models::kv::KvOp;
use crate::models::txn::Txn;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct BeginBody {
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    entry_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KvBody {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    operation: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RowBody {
    row_key: String,
    #[serde(default)]
    columns: Option<Value>,
    #[serde(default)]
    operation: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LobQuery {
    key: Option<String>,
    operation: Option<String>,
}

/// The namespace and transaction id of `/api/v1/{ns}/tx/{id}/...`.
fn txn_path(uri: &axum::http::Uri) -> ApiResult<(String, String)> {
    let p = api_path(uri.path())?;
    let rest = p.rest.unwrap_or_default();
    let id_raw = rest.split('/').next().unwrap_or_default();
    Ok((p.namespace, decode_text(id_raw, "transaction id")?))
}

/// Locks the transaction for this request (checking its namespace and that it is still open).
async fn lock(st: &Shared, ns: &str, id: &str) -> ApiResult<tokio::sync::OwnedMutexGuard<Txn>> {
    st.namespace(ns)?;
    let t = st.txns.get(ns, id)?;
    let g = t.lock_owned().await;
    if g.namespace != ns {
        return Err(ApiError::not_found("transaction not found"));
    }
    g.ensure_open()?;
    Ok(g)
}

fn is_delete(op: Option<&str>, default_delete: bool) -> ApiResult<bool> {
    match op {
        None => Ok(default_delete),
        Some("put") => Ok(false),
        Some("delete") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "operation must be put or delete, not {other:?}"
        ))),
    }
}

pub async fn begin(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let p = api_path(uri.path())?;
    let ns = st.namespace(&p.namespace)?;
    st.writable(&p.namespace)?;
    let b: BeginBody = json_body_or_default(&headers, body, st.cfg.http.max_body_bytes).await?;
    let default_delete = is_delete(b.operation.as_deref(), false)?;
    if let Some(t) = b.entry_type.as_deref() {
        if !matches!(t, "kv" | "row" | "lob") {
            return Err(ApiError::bad_request("entryType must be kv, row or lob"));
        }
    }
    let id = st.txns.begin(ns, default_delete);
    Ok(Json(json!({"txnId": id, "success": true})))
}

pub async fn add_kv(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let (ns, id) = txn_path(&uri)?;
    st.writable(&ns)?;
    let b: KvBody = json_body(&headers, body, st.cfg.http.max_body_bytes).await?;
    let mut g = lock(&st, &ns, &id).await?;
    let op = if is_delete(b.operation.as_deref(), g.default_delete)? {
        KvOp::Delete {
            key: b.key.into_bytes(),
        }
    } else {
        let v = b
            .value
            .ok_or_else(|| ApiError::bad_request("value missing"))?;
        KvOp::Put {
            key: b.key.into_bytes(),
            value: b64(&v, "value")?,
        }
    };
    g.add_kv(&op, st.txns.limits())?;
    Ok(Json(json!({"success": true})))
}

pub async fn add_row(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let (ns, id) = txn_path(&uri)?;
    st.writable(&ns)?;
    let b: RowBody = json_body(&headers, body, st.cfg.http.max_body_bytes).await?;
    let mut g = lock(&st, &ns, &id).await?;
    let op_name = if is_delete(b.operation.as_deref(), g.default_delete)? {
        "delete"
    } else {
        "put"
    };
    let op = row_op(op_name, b.row_key, b.columns)?;
    g.add_row(&op, st.txns.limits())?;
    Ok(Json(json!({"success": true})))
}

/// `POST /tx/{id}/lob?key=K`: appends the raw body to LOB `K` staged in the transaction
/// (several calls append in order); `operation=delete` stages its deletion instead.
pub async fn add_lob(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
    q: Result<Query<LobQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let (ns, id) = txn_path(&uri)?;
    st.writable(&ns)?;
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let key = q
        .key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::bad_request("query parameter key is required"))?
        .into_bytes();
    let limit = st.cfg.http.lob_max_bytes;
    if content_length(&headers).is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(format!(
            "large object exceeds the limit of {limit} bytes"
        )));
    }
    let g = lock(&st, &ns, &id).await?;
    if is_delete(q.operation.as_deref(), g.default_delete)? {
        let mut g = g;
        blocking(move || g.lob_delete(&key)).await?;
        return Ok(Json(json!({"success": true})));
    }
    let k = key.clone();
    let (_g, res) = pump(
        g,
        body,
        move |g: &mut tokio::sync::OwnedMutexGuard<Txn>, d| g.lob_writer(&k, limit)?.write(d),
    )
    .await;
    let written = res?;
    Ok(Json(json!({"success": true, "bytes": written})))
}

pub async fn commit(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let (ns, id) = txn_path(&uri)?;
    st.writable(&ns)?;
    let mut g = lock(&st, &ns, &id).await?;
    let st2 = st.clone();
    let info = blocking(move || st2.txns.commit(&mut g)).await?;
    if let Some(c) = info.commit {
        st.await_acks(&ns, c.lsn, &uri, &headers).await?;
    }
    let lobs: BTreeMap<String, Value> = info
        .lobs
        .iter()
        .map(|(k, m)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                json!({"size": m.size, "checksum": m.crc32c}),
            )
        })
        .collect();
    let mut out = json!({
        "success": true,
        "lsn": info.commit.map(|c| c.lsn),
        "ops": info.ops,
    });
    if let Some((_, m)) = info.lobs.first() {
        out["checksum"] = json!(m.crc32c);
        out["lobs"] = json!(lobs);
    }
    Ok(Json(out))
}

pub async fn abort(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<Json<Value>> {
    let (ns, id) = txn_path(&uri)?;
    let mut g = lock(&st, &ns, &id).await?;
    let st2 = st.clone();
    blocking(move || st2.txns.abort(&mut g)).await?;
    Ok(Json(json!({"success": true})))
}
