//! Our copy-on-write B+Tree on one memory-mapped file (LMDB/bbolt technique).
//!
//! OWNER: btree helper. This file pins the public API the engine codes against; bodies are stubs.

use std::ops::Bound;
use std::path::Path;

/// Errors from the B+Tree; corruption is always reported, never skipped.
#[derive(Debug, thiserror::Error)]
pub enum BTreeError {
    #[error("i/o error on B+Tree file: {0}")]
    Io(#[from] std::io::Error),
    #[error("B+Tree file is corrupt: {0}")]
    Corrupt(String),
    #[error("key of {0} bytes exceeds the maximum key size")]
    KeyTooLarge(usize),
}

/// Tuning for a tree file; the page size is fixed when the file is created.
#[derive(Debug, Clone)]
pub struct BTreeOptions {
    pub page_size: usize,
}

impl Default for BTreeOptions {
    fn default() -> Self {
        Self { page_size: 4096 }
    }
}

/// Shape of the tree, for `inspect` and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TreeStats {
    pub txid: u64,
    pub checkpoint_lsn: u64,
    pub depth: u32,
    pub page_size: usize,
    pub total_pages: u64,
    pub free_pages: u64,
    pub entries: u64,
    pub file_size: u64,
}

/// Result of a full verification.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    pub pages_checked: u64,
    pub entries: u64,
    pub problems: Vec<String>,
}

/// A tree file. Cheap to clone; one writer at a time, readers never block.
#[derive(Clone)]
pub struct BTree {}

impl BTree {
    pub fn open(_path: &Path, _opts: BTreeOptions) -> Result<Self, BTreeError> {
        todo!()
    }
    pub fn begin_read(&self) -> Result<ReadTxn, BTreeError> {
        todo!()
    }
    pub fn begin_write(&self) -> Result<WriteTxn<'_>, BTreeError> {
        todo!()
    }
    pub fn check(&self) -> Result<CheckReport, BTreeError> {
        todo!()
    }
    pub fn stats(&self) -> Result<TreeStats, BTreeError> {
        todo!()
    }
}

/// A consistent snapshot of the last committed tree; owns what it needs ('static, Send).
pub struct ReadTxn {}

impl ReadTxn {
    pub fn txid(&self) -> u64 {
        todo!()
    }
    pub fn checkpoint_lsn(&self) -> u64 {
        todo!()
    }
    pub fn get(&self, _key: &[u8]) -> Result<Option<Vec<u8>>, BTreeError> {
        todo!()
    }
    pub fn range(
        &self,
        _start: Bound<&[u8]>,
        _end: Bound<&[u8]>,
        _reverse: bool,
    ) -> Result<RangeIter, BTreeError> {
        todo!()
    }
}

/// Ordered iterator over a snapshot; owns its snapshot ('static, Send).
pub struct RangeIter {}

impl Iterator for RangeIter {
    type Item = Result<(Vec<u8>, Vec<u8>), BTreeError>;
    fn next(&mut self) -> Option<Self::Item> {
        todo!()
    }
}

/// The single write transaction; invisible to readers until `commit` returns.
pub struct WriteTxn<'a> {
    _tree: &'a BTree,
}

impl WriteTxn<'_> {
    pub fn get(&self, _key: &[u8]) -> Result<Option<Vec<u8>>, BTreeError> {
        todo!()
    }
    pub fn put(&mut self, _key: &[u8], _value: &[u8]) -> Result<(), BTreeError> {
        todo!()
    }
    pub fn delete(&mut self, _key: &[u8]) -> Result<bool, BTreeError> {
        todo!()
    }
    pub fn set_checkpoint_lsn(&mut self, _lsn: u64) {
        todo!()
    }
    pub fn commit(self) -> Result<u64, BTreeError> {
        todo!()
    }
}
