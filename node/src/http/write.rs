//! The write path's shared types: the `put`/`delete` operation, the answer of a committed write (which
//! carries its LSN to the acks layer), and running the blocking commit.
//!
//! Every committing handler is: extract the writable target (`target.rs`) → parse the body →
//! `Target::commit` → return a `WriteResponse`. Waiting for replica acks happens once, in `acks::layer`.

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::acks::CommittedAt;
use super::error::ApiResult;
use super::extract::blocking;
use super::target::Target;
use crate::engine::{Commit, Namespace};
use crate::models::lob::Manifest;
use crate::models::ModelError;

/// What a batch item, a transaction op or a transaction's default does (wire strings `put`/`delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WriteOp {
    Put,
    Delete,
}

/// The answer to a committed write: `{"success": true, "lsn": n}`, plus `count` for batches.
#[derive(Debug, Serialize, ToSchema)]
pub struct WriteResponse {
    /// Always `true` (UnisonDB clients look at it).
    pub success: bool,
    /// The LSN the write committed at (one per write, batches included).
    pub lsn: u64,
    /// Operations in the batch (batch routes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
}

impl WriteResponse {
    pub fn at(lsn: u64) -> WriteResponse {
        WriteResponse {
            success: true,
            lsn,
            count: None,
        }
    }

    /// The same answer for a batch of `count` operations.
    pub fn with_count(self, count: usize) -> WriteResponse {
        WriteResponse {
            count: Some(count),
            ..self
        }
    }
}

/// The answer to a streamed LOB upload: the write plus what was stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct LobWriteResponse {
    #[serde(flatten)]
    pub write: WriteResponse,
    /// Object size in bytes.
    pub size: u64,
    /// Chunks the object was stored as.
    pub chunks: u32,
    /// CRC32 (IEEE, as UnisonDB and zlib compute it) of the whole object.
    pub checksum: u32,
}

impl LobWriteResponse {
    pub fn new(lsn: u64, m: &Manifest) -> LobWriteResponse {
        LobWriteResponse {
            write: WriteResponse::at(lsn),
            size: m.size,
            chunks: m.chunks,
            checksum: m.checksum,
        }
    }
}

/// Size and CRC32 (IEEE) of one LOB a transaction wrote.
#[derive(Debug, Serialize, ToSchema)]
pub struct LobSummary {
    pub size: u64,
    pub checksum: u32,
}

/// The answer to `POST /tx/{id}/commit`: one LSN for every staged op (`null` when nothing was staged).
#[derive(Debug, Serialize, ToSchema)]
pub struct TxnCommitResponse {
    /// Always `true`.
    pub success: bool,
    /// The LSN of the transaction's batch; `null` for an empty transaction.
    #[schema(required = true)]
    pub lsn: Option<u64>,
    /// Operations committed.
    pub ops: usize,
    /// CRC32 (IEEE) of the first LOB written, as UnisonDB answers; only when LOBs were written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<u32>,
    /// Every LOB written, by key; only when LOBs were written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lobs: Option<BTreeMap<String, LobSummary>>,
}

/// `{"success": true}` (transaction staging and abort: nothing committed yet, no LSN).
#[derive(Debug, Serialize, ToSchema)]
pub struct Success {
    /// Always `true`.
    pub success: bool,
    /// Bytes appended (LOB staging only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

impl Success {
    pub fn new() -> Success {
        Success {
            success: true,
            bytes: None,
        }
    }
}

impl Default for Success {
    fn default() -> Success {
        Success::new()
    }
}

impl IntoResponse for Success {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}

/// JSON body plus, when the write committed, its LSN as a response extension for `acks::layer`.
fn committed<T: Serialize>(lsn: Option<u64>, body: T) -> Response {
    let mut resp = Json(body).into_response();
    if let Some(lsn) = lsn {
        resp.extensions_mut().insert(CommittedAt(lsn));
    }
    resp
}

impl IntoResponse for WriteResponse {
    fn into_response(self) -> Response {
        committed(Some(self.lsn), self)
    }
}

impl IntoResponse for LobWriteResponse {
    fn into_response(self) -> Response {
        committed(Some(self.write.lsn), self)
    }
}

impl IntoResponse for TxnCommitResponse {
    fn into_response(self) -> Response {
        committed(self.lsn, self)
    }
}

impl Target {
    /// Runs a committing model call on this namespace on the blocking pool and answers with its LSN.
    pub async fn commit<F>(&self, f: F) -> ApiResult<WriteResponse>
    where
        F: FnOnce(&Namespace) -> Result<Commit, ModelError> + Send + 'static,
    {
        let ns = self.ns.clone();
        let c = blocking(move || f(&ns)).await?;
        Ok(WriteResponse::at(c.lsn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn v<T: Serialize>(x: &T) -> Value {
        serde_json::to_value(x).unwrap()
    }

    #[test]
    fn wire_shapes_are_unchanged() {
        assert_eq!(v(&WriteResponse::at(7)), json!({"success": true, "lsn": 7}));
        assert_eq!(
            v(&WriteResponse::at(7).with_count(3)),
            json!({"success": true, "lsn": 7, "count": 3})
        );
        let m = Manifest {
            version: 1,
            size: 10,
            chunks: 1,
            chunk_size: 65536,
            checksum: 99,
            checksum_kind: crate::models::lob::ChecksumKind::Crc32,
        };
        assert_eq!(
            v(&LobWriteResponse::new(7, &m)),
            json!({"success": true, "lsn": 7, "size": 10, "chunks": 1, "checksum": 99})
        );
        let empty = TxnCommitResponse {
            success: true,
            lsn: None,
            ops: 0,
            checksum: None,
            lobs: None,
        };
        assert_eq!(v(&empty), json!({"success": true, "lsn": null, "ops": 0}));
        assert_eq!(v(&Success::new()), json!({"success": true}));
        assert_eq!(
            serde_json::from_value::<WriteOp>(json!("delete")).unwrap(),
            WriteOp::Delete
        );
        assert!(serde_json::from_value::<WriteOp>(json!("merge")).is_err());
    }

    #[test]
    fn only_committed_writes_carry_an_lsn_for_the_acks_layer() {
        let r = WriteResponse::at(5).into_response();
        assert_eq!(r.extensions().get::<CommittedAt>().map(|c| c.0), Some(5));
        assert!(Success::new()
            .into_response()
            .extensions()
            .get::<CommittedAt>()
            .is_none());
    }
}
