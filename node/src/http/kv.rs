//! `/api/v1/{ns}/kv` handlers: point reads and writes, atomic batches, ordered scans.

use axum::body::Body;
use axum::extract::{OriginalUri, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{api_path, b64, blocking, decode_key, json_body, to_b64};
use super::Shared;
use crate::models::kv::{self, KvOp};
use crate::models::scan::{self, ScanRequest};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchBody {
    operation: String,
    #[serde(default)]
    items: Vec<BatchItem>,
    #[serde(default)]
    keys: Vec<String>,
}

#[derive(Deserialize)]
struct BatchItem {
    key: String,
    #[serde(default)]
    value: Option<String>,
}

pub async fn get_one(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<Json<Value>> {
    let p = api_path(uri.path())?;
    let key = decode_key(p.rest.as_deref())?;
    let ns = st.namespace(&p.namespace)?;
    match blocking(move || kv::get(&ns, &key)).await? {
        Some(v) => Ok(Json(json!({"value": to_b64(&v), "found": true}))),
        None => Err(ApiError::missing("key")),
    }
}

pub async fn put_one(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let p = api_path(uri.path())?;
    let key = decode_key(p.rest.as_deref())?;
    let ns = st.namespace(&p.namespace)?;
    st.writable(&p.namespace)?;
    let b: PutBody = json_body(&headers, body, st.cfg.http.max_body_bytes).await?;
    let value = b64(&b.value, "value")?;
    let c = blocking(move || kv::put(&ns, &key, &value)).await?;
    st.await_acks(&p.namespace, c.lsn, &uri, &headers).await?;
    Ok(Json(json!({"success": true, "lsn": c.lsn})))
}

pub async fn delete_one(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let p = api_path(uri.path())?;
    let key = decode_key(p.rest.as_deref())?;
    let ns = st.namespace(&p.namespace)?;
    st.writable(&p.namespace)?;
    let c = blocking(move || kv::delete(&ns, &key)).await?;
    st.await_acks(&p.namespace, c.lsn, &uri, &headers).await?;
    Ok(Json(json!({"success": true, "lsn": c.lsn})))
}

/// `POST /kv/batch` (the only POST on the key route; any other key is 405).
pub async fn batch(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let p = api_path(uri.path())?;
    if p.rest.as_deref() != Some("batch") {
        return Err(ApiError::new(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "POST is only allowed on /kv/batch",
        ));
    }
    let ns = st.namespace(&p.namespace)?;
    st.writable(&p.namespace)?;
    let b: BatchBody = json_body(&headers, body, st.cfg.http.max_body_bytes).await?;
    let ops = parse_batch(b)?;
    let count = ops.len();
    let c = blocking(move || kv::batch(&ns, &ops)).await?;
    st.await_acks(&p.namespace, c.lsn, &uri, &headers).await?;
    Ok(Json(json!({"success": true, "count": count, "lsn": c.lsn})))
}

fn parse_batch(b: BatchBody) -> ApiResult<Vec<KvOp>> {
    match b.operation.as_str() {
        "put" => b
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
        "delete" => {
            let mut keys: Vec<String> = b.keys;
            keys.extend(b.items.into_iter().map(|it| it.key));
            Ok(keys
                .into_iter()
                .map(|k| KvOp::Delete {
                    key: k.into_bytes(),
                })
                .collect())
        }
        other => Err(ApiError::bad_request(format!(
            "operation must be put or delete, not {other:?}"
        ))),
    }
}

/// Query of `GET /kv` and `GET /row`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScanQuery {
    pub prefix: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub after: Option<String>,
    pub limit: Option<usize>,
    pub reverse: Option<bool>,
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

pub async fn scan(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
    q: Result<Query<ScanQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let p = api_path(uri.path())?;
    let ns = st.namespace(&p.namespace)?;
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
