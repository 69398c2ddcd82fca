//! `/api/v1/{ns}/lob/{key}`: streaming upload (`PUT`), streaming download (`GET`), delete.
//!
//! Neither direction holds the object in memory: uploads are written as chunks every ~256 KiB of body,
//! downloads are produced chunk by chunk by a blocking reader into a small bounded channel.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{api_path, blocking, content_length, decode_key};
use super::Shared;
use crate::models::lob::{self, LobWriter};
use crate::models::ModelError;

/// Body bytes gathered before one blocking write call.
const PUMP_BYTES: usize = 256 << 10;

/// Feeds a request body into `write` on the blocking pool, `PUMP_BYTES` at a time.
/// Returns the holder (so the caller can commit or abort) and the outcome.
pub async fn pump<T, F>(mut holder: T, body: Body, write: F) -> (Option<T>, ApiResult<u64>)
where
    T: Send + 'static,
    F: Fn(&mut T, &[u8]) -> Result<(), ModelError> + Send + Sync + 'static,
{
    let write = Arc::new(write);
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::with_capacity(PUMP_BYTES);
    let mut total = 0u64;
    loop {
        let next = stream.next().await;
        let end = match next {
            Some(Ok(bytes)) => {
                buf.extend_from_slice(&bytes);
                false
            }
            Some(Err(e)) => {
                return (
                    Some(holder),
                    Err(ApiError::bad_request(format!("upload interrupted: {e}"))),
                )
            }
            None => true,
        };
        if buf.len() >= PUMP_BYTES || (end && !buf.is_empty()) {
            let data = std::mem::replace(&mut buf, Vec::with_capacity(PUMP_BYTES));
            total += data.len() as u64;
            let w = write.clone();
            match tokio::task::spawn_blocking(move || {
                let r = w(&mut holder, &data);
                (holder, r)
            })
            .await
            {
                Ok((h, Ok(()))) => holder = h,
                Ok((h, Err(e))) => return (Some(h), Err(e.into())),
                Err(e) => {
                    return (
                        None,
                        Err(ApiError::internal(format!("upload task failed: {e}"))),
                    )
                }
            }
        }
        if end {
            return (Some(holder), Ok(total));
        }
    }
}

pub async fn upload(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let p = api_path(uri.path())?;
    let key = decode_key(p.rest.as_deref())?;
    let ns = st.namespace(&p.namespace)?;
    st.writable(&p.namespace)?;
    let limit = st.cfg.http.lob_max_bytes;
    if content_length(&headers).is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(format!(
            "large object exceeds the limit of {limit} bytes"
        )));
    }
    let writer = LobWriter::new(ns.clone(), &key, limit)?;
    let (writer, res) = pump(writer, body, |w: &mut LobWriter, d| w.write(d)).await;
    if let Err(e) = res {
        if let Some(w) = writer {
            let _ = blocking(move || w.abort()).await;
        }
        return Err(e);
    }
    let writer = writer.ok_or_else(|| ApiError::internal("upload lost its writer"))?;
    let (c, m) = blocking(move || {
        let staged = writer.seal()?;
        lob::commit(&ns, staged)
    })
    .await?;
    st.await_acks(&p.namespace, c.lsn, &uri, &headers).await?;
    Ok(Json(json!({
        "success": true,
        "lsn": c.lsn,
        "size": m.size,
        "chunks": m.chunks,
        "checksum": m.crc32c,
    })))
}

pub async fn download(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<Response> {
    let p = api_path(uri.path())?;
    let key = decode_key(p.rest.as_deref())?;
    let ns = st.namespace(&p.namespace)?;
    let ns_name = p.namespace.clone();
    let Some(reader) = blocking(move || lob::open(&ns, &key)).await? else {
        return Err(ApiError::missing("large object"));
    };
    let m = reader.manifest();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        for chunk in reader {
            match chunk {
                Ok(c) => {
                    if tx.blocking_send(Ok(Bytes::from(c))).is_err() {
                        return; // client went away
                    }
                }
                Err(e) => {
                    tracing::error!(namespace = %ns_name, error = %e, "large object read failed; cutting the response");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(m.size));
    h.insert("x-unisondb-crc32c", HeaderValue::from(m.crc32c));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{:x}\"", m.version)) {
        h.insert(header::ETAG, v);
    }
    Ok(resp)
}

pub async fn delete(
    State(st): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let p = api_path(uri.path())?;
    let key = decode_key(p.rest.as_deref())?;
    let ns = st.namespace(&p.namespace)?;
    st.writable(&p.namespace)?;
    let c = blocking(move || lob::delete(&ns, &key)).await?;
    st.await_acks(&p.namespace, c.lsn, &uri, &headers).await?;
    Ok(Json(json!({"success": true, "lsn": c.lsn})))
}
