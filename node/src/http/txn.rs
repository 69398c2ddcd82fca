//! `/api/v1/{ns}/tx/...`: begin, stage KV/row/LOB operations, commit (one batch) or abort.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};
use super::extract::{b64, blocking, content_length, JsonBody, JsonOrDefault};
use super::lob::{pump, Binary};
use super::row::row_op;
use super::target::{Target, TargetTxn, Writable};
use super::write::{LobSummary, Success, TxnCommitResponse, WriteOp};
use super::Shared;
use crate::models::kv::KvOp;
use crate::models::txn::Txn;

/// The model a transaction is for (accepted for UnisonDB compatibility; any transaction mixes all three).
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    Kv,
    Row,
    Lob,
}

/// Optional body of `POST /tx/begin`: `operation` is the default of the ops staged later.
#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TxnBegin)]
pub struct BeginBody {
    #[serde(default)]
    operation: Option<WriteOp>,
    #[serde(default)]
    #[allow(dead_code)]
    entry_type: Option<EntryType>,
}

/// Answer of `POST /tx/begin`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BeginResponse {
    txn_id: String,
    /// Always `true`.
    success: bool,
}

/// Body of `POST /tx/{txnId}/kv`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TxnKv)]
pub struct KvBody {
    key: String,
    /// Standard base64; required for puts.
    #[serde(default)]
    #[schema(format = Byte)]
    value: Option<String>,
    /// Defaults to the transaction's `operation`.
    #[serde(default)]
    operation: Option<WriteOp>,
}

/// Body of `POST /tx/{txnId}/row`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TxnRow)]
pub struct RowBody {
    row_key: String,
    #[serde(default)]
    columns: Option<Value>,
    /// Defaults to the transaction's `operation`.
    #[serde(default)]
    operation: Option<WriteOp>,
}

/// Query of `POST /tx/{txnId}/lob`.
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LobQuery {
    /// The LOB key (required).
    #[param(required = true)]
    key: Option<String>,
    /// `delete` stages the LOB's deletion; defaults to the transaction's `operation`.
    #[param(inline)]
    operation: Option<WriteOp>,
}

/// Locks the transaction for this request (checking its namespace and that it is still open).
async fn lock(st: &Shared, t: &TargetTxn) -> ApiResult<tokio::sync::OwnedMutexGuard<Txn>> {
    let ns = t.target.name.as_str();
    let tx = st.txns.get(ns, &t.id)?;
    let g = tx.lock_owned().await;
    if g.namespace != ns {
        return Err(ApiError::not_found("transaction not found"));
    }
    g.ensure_open()?;
    Ok(g)
}

/// The op to stage: the request's, else the transaction's default.
fn op_or(op: Option<WriteOp>, default_delete: bool) -> WriteOp {
    op.unwrap_or(if default_delete {
        WriteOp::Delete
    } else {
        WriteOp::Put
    })
}

/// Begin a transaction.
#[utoipa::path(post, path = "/api/v1/{namespace}/tx/begin", request_body(content = Option<BeginBody>),
    responses((status = 200, body = BeginResponse), (status = 400), (status = 403), (status = 404)))]
pub async fn begin(
    State(st): State<Shared>,
    Writable(target): Writable<Target>,
    JsonOrDefault(b): JsonOrDefault<BeginBody>,
) -> ApiResult<Json<BeginResponse>> {
    let default_delete = b.operation == Some(WriteOp::Delete);
    let id = st.txns.begin(target.ns, default_delete);
    Ok(Json(BeginResponse {
        txn_id: id,
        success: true,
    }))
}

/// Stage a KV put/delete.
#[utoipa::path(post, path = "/api/v1/{namespace}/tx/{txnId}/kv", request_body = KvBody,
    responses((status = 200, body = Success), (status = 400), (status = 403), (status = 404), (status = 409), (status = 413)))]
pub async fn add_kv(
    State(st): State<Shared>,
    Writable(t): Writable<TargetTxn>,
    JsonBody(b): JsonBody<KvBody>,
) -> ApiResult<Success> {
    let mut g = lock(&st, &t).await?;
    let op = match op_or(b.operation, g.default_delete) {
        WriteOp::Delete => KvOp::Delete {
            key: b.key.into_bytes(),
        },
        WriteOp::Put => {
            let v = b
                .value
                .ok_or_else(|| ApiError::bad_request("value missing"))?;
            KvOp::Put {
                key: b.key.into_bytes(),
                value: b64(&v, "value")?,
            }
        }
    };
    g.add_kv(&op, st.txns.limits())?;
    Ok(Success::new())
}

/// Stage a row upsert/delete.
#[utoipa::path(post, path = "/api/v1/{namespace}/tx/{txnId}/row", request_body = RowBody,
    responses((status = 200, body = Success), (status = 400), (status = 403), (status = 404), (status = 409), (status = 413)))]
pub async fn add_row(
    State(st): State<Shared>,
    Writable(t): Writable<TargetTxn>,
    JsonBody(b): JsonBody<RowBody>,
) -> ApiResult<Success> {
    let mut g = lock(&st, &t).await?;
    let op = row_op(op_or(b.operation, g.default_delete), b.row_key, b.columns)?;
    g.add_row(&op, st.txns.limits())?;
    Ok(Success::new())
}

/// Append raw body to a staged large object.
///
/// `POST /tx/{id}/lob?key=K` appends the raw body to LOB `K` staged in the transaction (several calls
/// append in order); `operation=delete` stages its deletion instead.
#[utoipa::path(post, path = "/api/v1/{namespace}/tx/{txnId}/lob", params(LobQuery),
    request_body(content = Binary, content_type = "application/octet-stream"),
    responses((status = 200, body = Success), (status = 400), (status = 403), (status = 404), (status = 409), (status = 413)))]
pub async fn add_lob(
    State(st): State<Shared>,
    Writable(t): Writable<TargetTxn>,
    q: Result<Query<LobQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Success> {
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
    let g = lock(&st, &t).await?;
    if op_or(q.operation, g.default_delete) == WriteOp::Delete {
        let mut g = g;
        blocking(move || g.lob_delete(&key)).await?;
        return Ok(Success::new());
    }
    let k = key.clone();
    let (_g, res) = pump(
        g,
        body,
        move |g: &mut tokio::sync::OwnedMutexGuard<Txn>, d| g.lob_writer(&k, limit)?.write(d),
    )
    .await;
    let written = res?;
    Ok(Success {
        bytes: Some(written),
        ..Success::new()
    })
}

/// Commit atomically (one LSN).
#[utoipa::path(post, path = "/api/v1/{namespace}/tx/{txnId}/commit",
    responses((status = 200, body = TxnCommitResponse), (status = 403), (status = 404), (status = 409)))]
pub async fn commit(
    State(st): State<Shared>,
    Writable(t): Writable<TargetTxn>,
) -> ApiResult<TxnCommitResponse> {
    let mut g = lock(&st, &t).await?;
    let st2 = st.clone();
    let info = blocking(move || st2.txns.commit(&mut g)).await?;
    let lobs = (!info.lobs.is_empty()).then(|| {
        info.lobs
            .iter()
            .map(|(k, m)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    LobSummary {
                        size: m.size,
                        checksum: m.checksum,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>()
    });
    Ok(TxnCommitResponse {
        success: true,
        lsn: info.commit.map(|c| c.lsn),
        ops: info.ops,
        checksum: info.lobs.first().map(|(_, m)| m.checksum),
        lobs,
    })
}

/// Abort and discard.
#[utoipa::path(post, path = "/api/v1/{namespace}/tx/{txnId}/abort",
    responses((status = 200, body = Success), (status = 404), (status = 409)))]
pub async fn abort(State(st): State<Shared>, t: TargetTxn) -> ApiResult<Success> {
    let mut g = lock(&st, &t).await?;
    let st2 = st.clone();
    blocking(move || st2.txns.abort(&mut g)).await?;
    Ok(Success::new())
}
