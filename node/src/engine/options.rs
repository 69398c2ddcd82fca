//! Engine tuning: durability policy, memtable size, WAL segments and retention.

use std::time::Duration;

use crate::btree::BTreeOptions;
use crate::wal::{RetentionPolicy, WalOptions};

/// When the WAL is fsync'd relative to acknowledging a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before a write is acknowledged (concurrent writers share one fsync).
    Always,
    /// fsync in the background at this period; a crash loses at most one period.
    Interval(Duration),
    /// Leave it to the OS; flushes to the B+Tree still fsync.
    Never,
}

/// Everything a namespace needs to open.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub fsync: FsyncPolicy,
    /// The active memtable is sealed and flushed at this size.
    pub memtable_bytes: usize,
    /// Writers stall while this many sealed memtables wait for flush (bounds memory).
    pub max_sealed_memtables: usize,
    pub wal: WalOptions,
    pub retention: RetentionPolicy,
    pub btree: BTreeOptions,
    /// WAL archiving is on: retention keeps every record until [`super::Namespace::archived_through`]
    /// says it is in the store (a pin taken at open, before any flush can run retention).
    pub hold_wal_for_archive: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            memtable_bytes: 64 << 20,
            max_sealed_memtables: 2,
            wal: WalOptions::default(),
            retention: RetentionPolicy {
                max_bytes: Some(1 << 30),
                max_age: Some(Duration::from_secs(86_400)),
            },
            btree: BTreeOptions::default(),
            hold_wal_for_archive: false,
        }
    }
}
