//! `/api/v1/{ns}/row` handlers: wide-column rows (merge upserts, column filters and deletes), batches, scans.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};
use super::extract::{b64, blocking, comma_list, decode_key, json_body, to_b64, JsonBody};
use super::kv::{scan_query, text, ScanQuery};
use super::target::{BatchRoute, Target, TargetKey, Writable};
use super::write::{WriteOp, WriteResponse};
use super::Shared;
use crate::models::row::{self, Columns, RowOp};
use crate::models::scan;

/// Body of `PUT /row/{rowKey}`: columns to merge into the row.
#[derive(Deserialize, ToSchema)]
#[schema(as = RowPut)]
pub struct PutBody {
    /// Column name → standard base64 value.
    columns: BTreeMap<String, String>,
}

/// Column names to delete: `{"columns": {"a": any}}` (UnisonDB) or `{"columns": ["a"]}`.
#[derive(Deserialize, ToSchema)]
pub struct ColumnNames {
    /// An object whose keys are the names, or an array of names.
    columns: Value,
}

/// Body of `POST /row/batch`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RowBatch)]
pub struct BatchBody {
    operation: WriteOp,
    #[serde(default)]
    rows: Vec<BatchRow>,
}

/// One row of a batch: puts merge `columns` ({name: base64}); deletes with `columns` delete those, without delete the row.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchRow {
    row_key: String,
    #[serde(default)]
    columns: Option<Value>,
}

/// Query of `GET /row/{rowKey}`.
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Comma-separated columns to return (default: all).
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

/// Read a row, optionally only some columns.
#[utoipa::path(get, path = "/api/v1/{namespace}/row/{rowKey}", params(GetQuery),
    responses((status = 200, body = Value), (status = 400), (status = 404)))]
pub async fn get_one(
    TargetKey { target, key }: TargetKey,
    q: Result<Query<GetQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let ns = target.ns;
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

/// Merge columns into a row.
#[utoipa::path(put, path = "/api/v1/{namespace}/row/{rowKey}", request_body = PutBody,
    responses((status = 200, body = WriteResponse), (status = 400), (status = 403), (status = 404), (status = 413)))]
pub async fn put_one(
    Writable(TargetKey { target, key }): Writable<TargetKey>,
    JsonBody(b): JsonBody<PutBody>,
) -> ApiResult<WriteResponse> {
    let cols = decode_columns(b.columns)?;
    target.commit(move |ns| row::upsert(ns, &key, cols)).await
}

/// Delete a whole row.
///
/// `DELETE /row/{rowKey}` deletes the row; with an unescaped `/columns` suffix it is `delete_columns`.
/// A row key ending in `/columns` is reachable as `%2Fcolumns`.
#[utoipa::path(delete, path = "/api/v1/{namespace}/row/{rowKey}",
    responses((status = 200, body = WriteResponse), (status = 400), (status = 403), (status = 404)))]
pub async fn delete_one(
    st: State<Shared>,
    Writable(target): Writable<Target>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<WriteResponse> {
    let raw = target.rest.clone().unwrap_or_default();
    if raw.ends_with("/columns") {
        return delete_columns(st, Writable(target), headers, body).await;
    }
    let key = decode_key(Some(raw.as_str()).filter(|r| !r.is_empty()))?;
    target.commit(move |ns| row::delete(ns, &key)).await
}

/// Delete named columns.
///
/// Reached through `delete_one` (the row route with a `/columns` suffix); documented on its own path.
#[utoipa::path(delete, path = "/api/v1/{namespace}/row/{rowKey}/columns", request_body = ColumnNames,
    responses((status = 200, body = WriteResponse), (status = 400), (status = 403), (status = 404), (status = 413)))]
pub async fn delete_columns(
    State(st): State<Shared>,
    Writable(target): Writable<Target>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<WriteResponse> {
    let raw = target.rest.as_deref().unwrap_or_default();
    let row_raw = raw.strip_suffix("/columns").unwrap_or(raw);
    let key = decode_key(Some(row_raw).filter(|r| !r.is_empty()))?;
    let b: ColumnNames = json_body(&headers, body, st.cfg.http.max_body_bytes).await?;
    let names = column_names(&b.columns)?;
    target
        .commit(move |ns| row::delete_columns(ns, &key, names))
        .await
}

/// Atomic batch of row upserts or deletes.
#[utoipa::path(post, path = "/api/v1/{namespace}/row/batch", request_body = BatchBody,
    responses((status = 200, body = WriteResponse), (status = 400), (status = 403), (status = 404), (status = 413)))]
pub async fn batch(
    _: BatchRoute,
    Writable(target): Writable<Target>,
    JsonBody(b): JsonBody<BatchBody>,
) -> ApiResult<WriteResponse> {
    let ops = parse_batch(b)?;
    let count = ops.len();
    let w = target.commit(move |ns| row::batch(ns, &ops)).await?;
    Ok(w.with_count(count))
}

/// Builds the row op for one `{rowKey, columns}` item under `operation` (put or delete).
pub fn row_op(operation: WriteOp, row_key: String, columns: Option<Value>) -> ApiResult<RowOp> {
    let row = row_key.into_bytes();
    match operation {
        WriteOp::Put => {
            let cols: BTreeMap<String, String> =
                serde_json::from_value(columns.unwrap_or(Value::Null))
                    .map_err(|_| ApiError::bad_request("put needs columns: {name: base64}"))?;
            Ok(RowOp::Upsert {
                row,
                columns: decode_columns(cols)?,
            })
        }
        WriteOp::Delete => match columns {
            Some(c) if !c.is_null() && c.as_object().is_none_or(|m| !m.is_empty()) => {
                Ok(RowOp::DeleteColumns {
                    row,
                    columns: column_names(&c)?,
                })
            }
            _ => Ok(RowOp::Delete { row }),
        },
    }
}

fn parse_batch(b: BatchBody) -> ApiResult<Vec<RowOp>> {
    b.rows
        .into_iter()
        .map(|r| row_op(b.operation, r.row_key, r.columns))
        .collect()
}

/// Ordered row scan (limit counts rows).
#[utoipa::path(get, path = "/api/v1/{namespace}/row", params(ScanQuery),
    responses((status = 200, body = Value), (status = 400), (status = 404)))]
pub async fn scan(
    target: Target,
    q: Result<Query<ScanQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let ns = target.ns;
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
