//! `/api/v1/{ns}/row` handlers: wide-column rows (merge upserts, column filters and deletes), batches, scans.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{OriginalUri, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{api_path, b64, blocking, comma_list, decode_key, json_body, to_b64};
use super::kv::{scan_query, text, ScanQuery};
use super::Shared;
use crate::models::row::{self, Columns, RowOp};
use crate::models::scan;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    columns: BTreeMap<String, String>,
}

/// Column names to delete: `{"columns": {"a": any}}` (UnisonDB) or `{"columns": ["a"]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnNames {
    columns: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchBody {
    operation: String,
    rows: Vec<BatchRow>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchRow {
    row_key: String,
    #[serde(default)]
    columns: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    columns: Option<String>,
}

/// Decodes `{name: base64}` into columns.
pub fn decode_columns(cols: BTreeMap<String, String>) -> ApiResult<Columns> {
    cols.into_iter()
        .map(|(k, v)| {
            let value = b64(&v, &format!("columns.{k}"))?;
            Ok((k.into_bytes(), value))
        })
        .collect()
}

/// Column names from an object's keys or an array of strings.
pub fn column_names(v: &Value) -> ApiResult<Vec<Vec<u8>>> {
    match v {
        Value::Object(m) => Ok(m.keys().map(|k| k.as_bytes().to_vec()).collect()),
        Value::Array(a) => a
            .iter()
            .map(|c| {
                c.as_str()
                    .map(|s| s.as_bytes().to_vec())
                    .ok_or_else(|| ApiError::bad_request("columns must be strings"))
            })
            .collect(),
        _ => Err(ApiError::bad_request(
            "columns must be an object or an array of names",
        )),
    }
}

pub fn columns_json(cols: &Columns) -> Value {
    let m: Map<String, Value> = cols
        .iter()
        .map(|(k, v)| (text(k), Value::String(to_b64(v))))
        .collect();
    Value::Object(m)
}

pub async fn get_one(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
    q: Result<Query<GetQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let p = api_path(uri.path())?;
    let key = decode_key(p.rest.as_deref())?;
    let ns = st.namespace(&p.namespace)?;
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let filter = q.columns.as_deref().map(comma_list);
    match blocking(move || row::get(&ns, &key, filter.as_deref())).await? {
        Some(cols) => Ok(Json(json!({"columns": columns_json(&cols), "found": true}))),
        None => {
            let mut e = ApiError::missing("row");
            if let Some(x) = e.extra.as_mut() {
                x.insert("columns".into(), json!({}));
            }
            Err(e)
        }
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
    let cols = decode_columns(b.columns)?;
    let c = blocking(move || row::upsert(&ns, &key, cols)).await?;
    st.await_acks(&p.namespace, c.lsn, &uri, &headers).await?;
    Ok(Json(json!({"success": true, "lsn": c.lsn})))
}

/// `DELETE /row/{rowKey}` deletes the row; `DELETE /row/{rowKey}/columns` (unescaped `/columns`
/// suffix) deletes the columns named in the body. A row key ending in `/columns` is reachable as `%2Fcolumns`.
pub async fn delete_one(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let p = api_path(uri.path())?;
    let raw = p.rest.unwrap_or_default();
    let ns = st.namespace(&p.namespace)?;
    st.writable(&p.namespace)?;
    if let Some(row_raw) = raw.strip_suffix("/columns") {
        let key = decode_key(Some(row_raw).filter(|r| !r.is_empty()))?;
        let b: ColumnNames = json_body(&headers, body, st.cfg.http.max_body_bytes).await?;
        let names = column_names(&b.columns)?;
        let c = blocking(move || row::delete_columns(&ns, &key, names)).await?;
        st.await_acks(&p.namespace, c.lsn, &uri, &headers).await?;
        return Ok(Json(json!({"success": true, "lsn": c.lsn})));
    }
    let key = decode_key(Some(raw.as_str()).filter(|r| !r.is_empty()))?;
    let c = blocking(move || row::delete(&ns, &key)).await?;
    st.await_acks(&p.namespace, c.lsn, &uri, &headers).await?;
    Ok(Json(json!({"success": true, "lsn": c.lsn})))
}

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
            "POST is only allowed on /row/batch",
        ));
    }
    let ns = st.namespace(&p.namespace)?;
    st.writable(&p.namespace)?;
    let b: BatchBody = json_body(&headers, body, st.cfg.http.max_body_bytes).await?;
    let ops = parse_batch(b)?;
    let count = ops.len();
    let c = blocking(move || row::batch(&ns, &ops)).await?;
    st.await_acks(&p.namespace, c.lsn, &uri, &headers).await?;
    Ok(Json(json!({"success": true, "count": count, "lsn": c.lsn})))
}

/// Builds the row op for one `{rowKey, columns}` item under `operation` (put or delete).
pub fn row_op(operation: &str, row_key: String, columns: Option<Value>) -> ApiResult<RowOp> {
    let row = row_key.into_bytes();
    match operation {
        "put" => {
            let cols: BTreeMap<String, String> =
                serde_json::from_value(columns.unwrap_or(Value::Null))
                    .map_err(|_| ApiError::bad_request("put needs columns: {name: base64}"))?;
            Ok(RowOp::Upsert {
                row,
                columns: decode_columns(cols)?,
            })
        }
        "delete" => match columns {
            Some(c) if !c.is_null() && c.as_object().is_none_or(|m| !m.is_empty()) => {
                Ok(RowOp::DeleteColumns {
                    row,
                    columns: column_names(&c)?,
                })
            }
            _ => Ok(RowOp::Delete { row }),
        },
        other => Err(ApiError::bad_request(format!(
            "operation must be put or delete, not {other:?}"
        ))),
    }
}

fn parse_batch(b: BatchBody) -> ApiResult<Vec<RowOp>> {
    b.rows
        .into_iter()
        .map(|r| row_op(&b.operation, r.row_key, r.columns))
        .collect()
}

pub async fn scan(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
    q: Result<Query<ScanQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let p = api_path(uri.path())?;
    let ns = st.namespace(&p.namespace)?;
    let q = scan_query(q)?;
    let req = q.request();
    let filter = q.columns.as_deref().map(comma_list);
    let page = blocking(move || {
        let snap = ns.snapshot()?;
        scan::scan_rows(&snap, &req, filter.as_deref())
    })
    .await?;
    let rows: Vec<Value> = page
        .items
        .iter()
        .map(|(k, cols)| json!({"rowKey": text(k), "columns": columns_json(cols)}))
        .collect();
    Ok(Json(json!({
        "rows": rows,
        "count": rows.len(),
        "next": page.next.as_deref().map(text),
    })))
}
