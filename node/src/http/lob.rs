//! `/api/v1/{ns}/lob/{key}`: streaming upload (`PUT`), streaming download (`GET`), delete.
//!
//! Neither direction holds the object in memory: uploads are written as chunks every ~256 KiB of body,
//! downloads are produced chunk by chunk by a blocking reader into a small bounded channel.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::extract::{blocking, content_length};
use super::target::{TargetKey, Writable};
use super::write::{LobWriteResponse, WriteResponse};
use super::Shared;
use crate::models::lob::{self, ChecksumKind, LobWriter};
use crate::models::ModelError;

/// Raw bytes (request or response body), not JSON.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(pub Vec<u8>);

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

/// Stream a large object in (raw body, no 1 MiB cap).
#[utoipa::path(put, path = "/api/v1/{namespace}/lob/{key}",
    request_body(content = Binary, content_type = "application/octet-stream"),
    responses((status = 200, body = LobWriteResponse), (status = 400), (status = 403), (status = 404), (status = 413)))]
pub async fn upload(
    State(st): State<Shared>,
    Writable(TargetKey { target, key }): Writable<TargetKey>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<LobWriteResponse> {
    let limit = st.cfg.http.lob_max_bytes;
    if content_length(&headers).is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(format!(
            "large object exceeds the limit of {limit} bytes"
        )));
    }
    let ns = target.ns;
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
    Ok(LobWriteResponse::new(c.lsn, &m))
}

/// Stream a large object out (raw bytes, CRC32C verified).
#[utoipa::path(get, path = "/api/v1/{namespace}/lob/{key}",
    responses((status = 200, description = "object bytes", body = Binary, content_type = "application/octet-stream"), (status = 404)))]
pub async fn download(TargetKey { target, key }: TargetKey) -> ApiResult<Response> {
    let (ns, ns_name) = (target.ns, target.name);
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
    let checksum_header = match m.checksum_kind {
        ChecksumKind::Crc32 => "x-unisondb-crc32",
        ChecksumKind::Crc32c => "x-unisondb-crc32c",
    };
    h.insert(checksum_header, HeaderValue::from(m.checksum));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{:x}\"", m.version)) {
        h.insert(header::ETAG, v);
    }
    Ok(resp)
}

/// Delete a large object.
#[utoipa::path(delete, path = "/api/v1/{namespace}/lob/{key}",
    responses((status = 200, body = WriteResponse), (status = 403), (status = 404)))]
pub async fn delete(
    Writable(TargetKey { target, key }): Writable<TargetKey>,
) -> ApiResult<WriteResponse> {
    target.commit(move |ns| lob::delete(ns, &key)).await
}
