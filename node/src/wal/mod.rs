//! Segmented write-ahead log: length + CRC32C framed records with LSN and HLC.
//!
//! OWNER: wal helper. This file pins the public API the engine codes against; bodies are stubs.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

/// Errors from the WAL. Mid-log corruption is an error, a torn tail is repaired on open.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("i/o error on WAL: {0}")]
    Io(#[from] std::io::Error),
    #[error("WAL corrupt in {segment} at offset {offset}: {reason}")]
    Corrupt {
        segment: String,
        offset: u64,
        reason: String,
    },
    #[error("LSN {got} out of sequence, expected {expected}")]
    OutOfSequence { expected: u64, got: u64 },
    #[error("LSN {requested} is no longer in the WAL (oldest available is {oldest})")]
    Trimmed { requested: u64, oldest: u64 },
}

/// One WAL record as stored and as shipped to replicas (verbatim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: u64,
    pub hlc: u64,
    pub payload: Bytes,
}

/// WAL sizing; fsync policy lives in the engine (it decides when to call `sync`).
#[derive(Debug, Clone)]
pub struct WalOptions {
    pub segment_size: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_size: 64 << 20,
        }
    }
}

/// What `open` found and repaired.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    pub first_lsn: Option<u64>,
    pub last_lsn: u64,
    pub truncated_bytes: u64,
    pub truncated_segment: Option<String>,
}

/// One segment file, for `inspect`, retention and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SegmentInfo {
    pub file_name: String,
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub size_bytes: u64,
    pub modified_unix_secs: u64,
}

/// When to drop segments already reflected in the B+Tree checkpoint.
#[derive(Debug, Clone, Default)]
pub struct RetentionPolicy {
    pub max_bytes: Option<u64>,
    pub max_age: Option<Duration>,
}

/// A namespace's log. `append` is called by one writer at a time; readers are many.
pub struct Wal {}

impl Wal {
    pub fn open(_dir: &Path, _opts: WalOptions) -> Result<(Wal, RecoveryReport), WalError> {
        todo!()
    }
    pub fn append(&self, _lsn: u64, _hlc: u64, _payload: &[u8]) -> Result<(), WalError> {
        todo!()
    }
    pub fn sync(&self) -> Result<(), WalError> {
        todo!()
    }
    pub fn publish(&self, _lsn: u64) {
        todo!()
    }
    pub fn wait_published(&self, _after: u64, _timeout: Duration) -> u64 {
        todo!()
    }
    pub fn last_lsn(&self) -> u64 {
        todo!()
    }
    pub fn published_lsn(&self) -> u64 {
        todo!()
    }
    pub fn first_lsn(&self) -> Option<u64> {
        todo!()
    }
    pub fn reader(&self, _from_lsn: u64) -> Result<WalReader, WalError> {
        todo!()
    }
    pub fn retain(
        &self,
        _checkpoint_lsn: u64,
        _policy: &RetentionPolicy,
    ) -> Result<usize, WalError> {
        todo!()
    }
    pub fn segments(&self) -> Vec<SegmentInfo> {
        todo!()
    }
}

/// Iterates records from an LSN up to the published LSN; pins its segments against retention.
pub struct WalReader {}

impl WalReader {
    pub fn next_record(&mut self) -> Result<Option<Record>, WalError> {
        todo!()
    }
    pub fn next_lsn(&self) -> u64 {
        todo!()
    }
}
