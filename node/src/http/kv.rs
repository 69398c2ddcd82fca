//! `/api/v1/{ns}/kv` handlers: point reads and writes, atomic batches, ordered scans.

use axum::extract::Query;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};
use super::extract::{b64, blocking, to_b64, JsonBody};
use super::target::{BatchRoute, Target, TargetKey, Writable};
use super::write::{WriteOp, WriteResponse};
use crate::models::kv::{self, KvOp};
use crate::models::scan::{self, ScanRequest};

/// Body of `PUT /kv/{key}`.
#[derive(Deserialize, ToSchema)]
#[schema(as = KvPut)]
pub struct PutBody {
    /// The value, standard base64.
    #[schema(format = Byte)]
    value: String,
}

/// Body of `POST /kv/batch`: puts take `items` with values, deletes take `keys` (or `items`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = KvBatch)]
pub struct BatchBody {
    operation: WriteOp,
    #[serde(default)]
    items: Vec<BatchItem>,
    #[serde(default)]
    keys: Vec<String>,
}

/// One item of a KV batch.
#[derive(Deserialize, ToSchema)]
pub struct BatchItem {
    key: String,
    /// Standard base64; required for puts.
    #[serde(default)]
    #[schema(format = Byte)]
    value: Option<String>,
}

/// Read a value (404 with found=false when missing).
#[utoipa::path(get, path = "/api/v1/{namespace}/kv/{key}",
    responses((status = 200, body = Value), (status = 404)))]
pub async fn get_one(TargetKey { target, key }: TargetKey) -> ApiResult<Json<Value>> {
    // On this task, as RESP GET: a memtable probe and a walk of the mapped B+Tree cost less than
    // the hop to the blocking pool and back (see ARCHITECTURE.md, "Work on the runtime").
    match kv::get(&target.ns, &key)? {
        Some(v) => Ok(Json(json!({"value": to_b64(&v), "found": true}))),
        None => Err(ApiError::missing("key")),
    }
}

/// Write a value.
#[utoipa::path(put, path = "/api/v1/{namespace}/kv/{key}", request_body = PutBody,
    responses((status = 200, body = WriteResponse), (status = 400), (status = 403), (status = 404), (status = 413)))]
pub async fn put_one(
    Writable(TargetKey { target, key }): Writable<TargetKey>,
    JsonBody(b): JsonBody<PutBody>,
) -> ApiResult<WriteResponse> {
    let value = b64(&b.value, "value")?;
    let c = kv::put_async(&target.ns, &key, value).await?;
    Ok(WriteResponse::at(c.lsn))
}

/// Delete a key.
#[utoipa::path(delete, path = "/api/v1/{namespace}/kv/{key}",
    responses((status = 200, body = WriteResponse), (status = 403), (status = 404)))]
pub async fn delete_one(
    Writable(TargetKey { target, key }): Writable<TargetKey>,
) -> ApiResult<WriteResponse> {
    let c = kv::delete_async(&target.ns, &key).await?;
    Ok(WriteResponse::at(c.lsn))
}

/// Atomic batch of puts or deletes.
///
/// The only POST on the key route; any other key is 405.
#[utoipa::path(post, path = "/api/v1/{namespace}/kv/batch", request_body = BatchBody,
    responses((status = 200, body = WriteResponse), (status = 400), (status = 403), (status = 404), (status = 413)))]
pub async fn batch(
    _: BatchRoute,
    Writable(target): Writable<Target>,
    JsonBody(b): JsonBody<BatchBody>,
) -> ApiResult<WriteResponse> {
    let ops = parse_batch(b)?;
    let count = ops.len();
    let c = kv::batch_async(&target.ns, &ops).await?;
    Ok(WriteResponse::at(c.lsn).with_count(count))
}

fn parse_batch(b: BatchBody) -> ApiResult<Vec<KvOp>> {
    match b.operation {
        WriteOp::Put => b
            .items
            .into_iter()
            .enumerate()
            .map(|(i, it)| {
                let value = it
                    .value
                    .ok_or_else(|| ApiError::bad_request(format!("items[{i}]: value missing")))?;
                Ok(KvOp::Put {
                    key: it.key.into_bytes(),
                    value: b64(&value, &format!("items[{i}].value"))?,
                })
            })
            .collect(),
        WriteOp::Delete => {
            let mut keys: Vec<String> = b.keys;
            keys.extend(b.items.into_iter().map(|it| it.key));
            Ok(keys
                .into_iter()
                .map(|k| KvOp::Delete {
                    key: k.into_bytes(),
                })
                .collect())
        }
    }
}

/// Query of `GET /kv` and `GET /row`.
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScanQuery {
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// First key (inclusive).
    pub start: Option<String>,
    /// Last key (exclusive).
    pub end: Option<String>,
    /// Resume after this key (a previous page's `next`).
    pub after: Option<String>,
    /// Page size (default 100, at most 1000; rows for row scans).
    pub limit: Option<usize>,
    /// Descending order.
    pub reverse: Option<bool>,
    /// Comma-separated columns to return (row scans only).
    pub columns: Option<String>,
}

impl ScanQuery {
    pub fn request(&self) -> ScanRequest {
        let b = |s: &Option<String>| {
            s.as_ref()
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec())
        };
        ScanRequest {
            prefix: b(&self.prefix),
            start: b(&self.start),
            end: b(&self.end),
            after: b(&self.after),
            limit: self.limit.unwrap_or(0),
            reverse: self.reverse.unwrap_or(false),
        }
    }
}

/// Parses a scan query; bad values are 400 with our JSON shape.
pub fn scan_query(
    q: Result<Query<ScanQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ScanQuery> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Ordered KV range/prefix scan with pagination.
#[utoipa::path(get, path = "/api/v1/{namespace}/kv", params(ScanQuery),
    responses((status = 200, body = Value), (status = 400), (status = 404)))]
pub async fn scan(
    target: Target,
    q: Result<Query<ScanQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let ns = target.ns;
    let q = scan_query(q)?;
    if q.columns.is_some() {
        return Err(ApiError::bad_request("columns applies to row scans only"));
    }
    let req = q.request();
    let page = blocking(move || {
        let snap = ns.snapshot()?;
        scan::scan_kv(&snap, &req)
    })
    .await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|(k, v)| json!({"key": text(k), "value": to_b64(v)}))
        .collect();
    Ok(Json(json!({
        "items": items,
        "count": items.len(),
        "next": page.next.as_deref().map(text),
    })))
}
