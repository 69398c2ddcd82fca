//! Data models over a `Namespace`: key-value, wide-column rows, large objects, transactions, scans.
//!
//! Pure logic on top of the engine's ordered key space (`storage::keys`); every function here blocks
//! (engine I/O, fsync), so async callers run them under `spawn_blocking`.

pub mod kv;
pub mod lob;
pub mod row;
pub mod scan;
pub mod txn;

use thiserror::Error;

use crate::engine::EngineError;

/// Longest user key (KV key, row key, LOB key) accepted; keeps encoded keys well inside a tree page.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest column name accepted.
pub const MAX_COLUMN_BYTES: usize = 256;

/// Why a model operation failed; the HTTP layer maps each to a status.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("transaction {0} was already committed")]
    TxnCommitted(String),
    #[error("transaction {0} was aborted{1}")]
    TxnAborted(String, String),
}

/// Checks a user key is non-empty and not longer than `MAX_KEY_BYTES`.
pub fn check_key(key: &[u8]) -> Result<(), ModelError> {
    if key.is_empty() {
        return Err(ModelError::Invalid("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ModelError::Invalid(format!(
            "key of {} bytes exceeds the limit of {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a column name is not longer than `MAX_COLUMN_BYTES` (empty names are allowed).
pub fn check_column(col: &[u8]) -> Result<(), ModelError> {
    if col.len() > MAX_COLUMN_BYTES {
        return Err(ModelError::Invalid(format!(
            "column name of {} bytes exceeds the limit of {MAX_COLUMN_BYTES}",
            col.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::engine::{EngineOptions, Namespace};

    /// A namespace in a fresh temp dir (kept alive by the returned guard).
    pub fn namespace() -> (tempfile::TempDir, Namespace) {
        let dir = tempfile::tempdir().unwrap();
        let ns = Namespace::open(&dir.path().join("t"), "t", EngineOptions::default()).unwrap();
        (dir, ns)
    }
}
