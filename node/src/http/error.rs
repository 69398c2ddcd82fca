//! API errors: a status and a message, rendered as `{"error": "..."}` (never a panic, never HTML).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::engine::EngineError;
use crate::models::ModelError;

/// An error answer; extra JSON fields (e.g. `found: false`) may ride along.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
    /// Answer with `Retry-After: 1` (cluster mode, no leader right now).
    pub retry: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            extra: None,
            retry: false,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub fn too_large(m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, m)
    }
    pub fn internal(m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
    pub fn unavailable(m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, m)
    }
    /// A 404 for a missing key that also says `found: false` (UnisonDB clients look at `found`).
    pub fn missing(what: &str) -> ApiError {
        let mut extra = serde_json::Map::new();
        extra.insert("found".into(), serde_json::Value::Bool(false));
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("{what} not found"),
            extra: Some(extra),
            retry: false,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %self.message, "request failed");
        }
        let unavailable = self.retry;
        let mut body = self.extra.unwrap_or_default();
        body.insert("error".into(), serde_json::Value::String(self.message));
        let mut r = (self.status, Json(serde_json::Value::Object(body))).into_response();
        if unavailable {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        r
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Tree(crate::btree::BTreeError::KeyTooLarge(_)) => {
                ApiError::bad_request(e.to_string())
            }
            EngineError::InvalidName(_) => ApiError::bad_request(e.to_string()),
            // Never the damaged bytes, never a 404: a 500 naming the file and page.
            EngineError::Tree(crate::btree::BTreeError::Checksum { .. }) => {
                ApiError::internal(format!("data integrity error: {e}"))
            }
            // The writable check answers first (naming the owner); this is the engine's backstop.
            EngineError::Follower { .. } => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            // Cluster mode: leadership moved during the write; the client retries (Retry-After).
            EngineError::NotLeader { .. } => ApiError {
                retry: true,
                ..ApiError::unavailable(e.to_string())
            },
            EngineError::Poisoned { .. } | EngineError::Closed => {
                ApiError::unavailable(e.to_string())
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> ApiError {
        match e {
            ModelError::Engine(e) => e.into(),
            ModelError::Invalid(m) => ApiError::bad_request(m),
            ModelError::NotFound(what) => ApiError::missing(&what),
            ModelError::TooLarge(m) => ApiError::too_large(m),
            e @ ModelError::Corrupt(_) => ApiError::internal(e.to_string()),
            e @ ModelError::TxnCommitted(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            // UnisonDB forgets an aborted transaction, so its clients expect 404 (not 410) after one.
            e @ ModelError::TxnAborted(..) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<crate::backup::BackupError> for ApiError {
    fn from(e: crate::backup::BackupError) -> ApiError {
        use crate::backup::BackupError;
        match e {
            BackupError::Engine(e) => e.into(),
            e @ BackupError::Refused(_) => ApiError::bad_request(e.to_string()),
            e @ BackupError::Invalid { .. } => ApiError::bad_request(e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<crate::objstore::ObjStoreError> for ApiError {
    fn from(e: crate::objstore::ObjStoreError) -> ApiError {
        use crate::objstore::ObjStoreError;
        match e {
            ObjStoreError::Backup(e) => e.into(),
            e @ ObjStoreError::Config(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            e @ (ObjStoreError::Store { .. }
            | ObjStoreError::NotFound { .. }
            | ObjStoreError::Upload { .. }
            | ObjStoreError::Corrupt { .. }) => {
                ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}
