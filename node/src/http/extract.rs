//! Request plumbing shared by handlers: namespace and key from the raw path, bounded JSON bodies,
//! base64, and running blocking engine calls off the async threads.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use base64::Engine as _;
use futures::StreamExt;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ApiResult};
use super::Shared;
use crate::models::ModelError;

/// The parts of `/api/v1/{namespace}/{model}/{rest...}`, taken from the *raw* path so that `%2F` in a
/// key is a literal `/` of the key while an unescaped `/` still separates segments (`/row/k/columns`).
pub struct ApiPath {
    pub namespace: String,
    /// The raw model segment (`kv`, `row`, `lob`, `tx`, ...), empty when absent.
    pub model: String,
    /// Raw (still percent-encoded) remainder after the model segment, without the leading `/`.
    pub rest: Option<String>,
}

/// Splits a raw request path.
pub fn api_path(path: &str) -> ApiResult<ApiPath> {
    let rest = path
        .strip_prefix("/api/v1/")
        .ok_or_else(|| ApiError::not_found("no such route"))?;
    let (ns_raw, after) = rest.split_once('/').unwrap_or((rest, ""));
    let namespace = decode_text(ns_raw, "namespace")?;
    let (model, rest) = after.split_once('/').unwrap_or((after, ""));
    let rest = Some(rest.to_string()).filter(|r| !r.is_empty());
    Ok(ApiPath {
        namespace,
        model: model.to_string(),
        rest,
    })
}

/// Percent-decodes one path component that must be UTF-8.
pub fn decode_text(raw: &str, what: &str) -> ApiResult<String> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            ApiError::bad_request(format!("{what} is not valid UTF-8 after percent-decoding"))
        })
}

/// The key bytes of a raw path remainder (percent-decoded, UTF-8 checked).
pub fn decode_key(raw: Option<&str>) -> ApiResult<Vec<u8>> {
    let raw = raw.ok_or_else(|| ApiError::bad_request("key must not be empty"))?;
    Ok(decode_text(raw, "key")?.into_bytes())
}

/// Reads a body of at most `limit` bytes (413 beyond) and parses it as JSON (400 when malformed).
pub async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> ApiResult<T> {
    let bytes = read_body(headers, body, limit).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "request body must be JSON, got nothing",
        ));
    }
    parse_go_style(&bytes)
}

/// Parses a body the way Go's `encoding/json` reads UnisonDB's request structs: unknown fields are
/// ignored (the body structs do not deny them) and a `null` field is treated as absent, so `null`
/// for a list or map is empty. Nulls are dropped at the top level and in objects inside top-level
/// lists (batch items); deeper values (column maps) are left as sent.
fn parse_go_style<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let invalid = |e: serde_json::Error| ApiError::bad_request(format!("invalid JSON body: {e}"));
    let mut v: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
    if let Some(obj) = v.as_object_mut() {
        obj.retain(|_, field| !field.is_null());
        for field in obj.values_mut() {
            for item in field.as_array_mut().into_iter().flatten() {
                if let Some(o) = item.as_object_mut() {
                    o.retain(|_, f| !f.is_null());
                }
            }
        }
    }
    serde_json::from_value(v).map_err(invalid)
}

/// Like `json_body`, but an empty body gives `T::default()`.
pub async fn json_body_or_default<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> ApiResult<T> {
    let bytes = read_body(headers, body, limit).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_go_style(&bytes)
}

/// A JSON body of at most `http.max_body_bytes` (413 beyond, 400 when empty or malformed).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Shared> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &Shared) -> ApiResult<JsonBody<T>> {
        let (parts, body) = req.into_parts();
        json_body(&parts.headers, body, st.cfg.http.max_body_bytes)
            .await
            .map(JsonBody)
    }
}

/// Like `JsonBody`, but an empty body gives `T::default()`.
pub struct JsonOrDefault<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<Shared> for JsonOrDefault<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &Shared) -> ApiResult<JsonOrDefault<T>> {
        let (parts, body) = req.into_parts();
        json_body_or_default(&parts.headers, body, st.cfg.http.max_body_bytes)
            .await
            .map(JsonOrDefault)
    }
}

/// Declared Content-Length, if any and valid.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
}

async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> ApiResult<Vec<u8>> {
    let too_large = || ApiError::too_large(format!("request body exceeds {limit} bytes"));
    if content_length(headers).is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Decodes standard base64 (400 naming the field on failure).
pub fn b64(s: &str, field: &str) -> ApiResult<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.as_bytes())
        .map_err(|e| ApiError::bad_request(format!("{field}: invalid base64: {e}")))
}

pub fn to_b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Runs a blocking model call on the blocking pool.
pub async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    F: FnOnce() -> Result<T, ModelError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("storage task failed: {e}"))),
    }
}

/// Splits a comma-separated list (empty items dropped).
pub fn comma_list(s: &str) -> Vec<Vec<u8>> {
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| c.as_bytes().to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_path_keeps_encoded_slashes_in_keys() {
        let p = api_path("/api/v1/default/kv/a%2Fb").unwrap();
        assert_eq!(p.namespace, "default");
        assert_eq!(decode_key(p.rest.as_deref()).unwrap(), b"a/b");
        let p = api_path("/api/v1/ns/row/r%2Fcolumns/columns").unwrap();
        assert_eq!(p.rest.as_deref(), Some("r%2Fcolumns/columns"));
        assert!(decode_key(Some("%FF")).is_err());
        assert!(api_path("/api/v1/%FF/kv/x").is_err());
        assert!(decode_key(api_path("/api/v1/ns/kv").unwrap().rest.as_deref()).is_err());
    }

    #[test]
    fn bodies_read_like_go_encoding_json() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct B {
            #[serde(default)]
            keys: Vec<String>,
            #[serde(default)]
            items: Vec<std::collections::BTreeMap<String, String>>,
            value: String,
        }
        let b: B = parse_go_style(
            br#"{"keys": null, "items": [{"k": "v", "n": null}], "value": "x", "extra": 1}"#,
        )
        .unwrap();
        assert!(b.keys.is_empty());
        assert_eq!(b.items[0].len(), 1);
        // A required field sent as null is still missing; malformed JSON and wrong types are 400.
        for bad in [
            &br#"{"value": null}"#[..],
            br#"{"value": "x""#,
            br#"{"value": 3}"#,
            br#"[1]"#,
        ] {
            let e = parse_go_style::<B>(bad).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }
}
