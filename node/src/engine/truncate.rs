//! Rolling a follower back: discard the records after an LSN where its history stopped agreeing with
//! its upstream's (see `replication::history`), then continue from there.
//!
//! Possible only while the discarded records are in the WAL and memtables alone: the B+Tree checkpoint
//! must not be past the truncation point (a flushed record cannot be taken out of the tree; the caller
//! then installs a snapshot instead). Order: become the only writer and hold the tree writer (no flush
//! can move the checkpoint), bump the truncation count (local WAL tails end, so chained followers
//! reconnect and run the history check against us), hide the discarded LSNs from readers, cut the WAL
//! (crash-safe on its own: a prefix always remains), cut the epoch history (an entry past the WAL's end
//! is also dropped on open), then rebuild the memtables from the WAL after the checkpoint.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{EngineError, Inner, MemState};
use crate::memtable::Memtable;
use crate::storage::batch;

impl Inner {
    /// See [`super::Namespace::truncate_after`].
    pub(crate) fn truncate_after(&self, lsn: u64) -> Result<u64, EngineError> {
        let current = self.begin_exclusive()?;
        let result = self.truncate_locked(lsn, current);
        let last = match &result {
            Ok(_) => lsn.min(current),
            Err(EngineError::TruncateBelowCheckpoint { .. }) => current,
            Err(e) => {
                // The WAL may already be cut while the memtables are not rebuilt: stop here.
                let err = format!("truncation after LSN {lsn} failed: {e}");
                tracing::error!(namespace = %self.name, %err, "namespace refuses further writes");
                self.poisoned.lock().get_or_insert(err);
                self.wal.last_lsn()
            }
        };
        self.end_exclusive(last);
        result
    }

    fn truncate_locked(&self, lsn: u64, current: u64) -> Result<u64, EngineError> {
        if lsn >= current {
            return Ok(0);
        }
        let _tree_writer = self.flush.tree_writer.lock();
        let checkpoint = self.tree.begin_read()?.checkpoint_lsn();
        if lsn < checkpoint {
            return Err(EngineError::TruncateBelowCheckpoint { lsn, checkpoint });
        }
        self.epochs.note_truncation();
        self.visible.store(lsn, Ordering::Release);
        let dropped = self.wal.truncate_after(lsn)?;
        self.epochs.truncate_after(lsn)?;

        let active = Memtable::new();
        let mut last_hlc = 0;
        if lsn > checkpoint {
            let mut reader = self.wal.reader(checkpoint + 1)?;
            while let Some(rec) = reader.next_record()? {
                let ops = batch::decode(&rec.payload)?;
                active.apply(rec.lsn, &ops);
                last_hlc = rec.hlc;
            }
        } else if lsn > 0 {
            if let Ok(mut r) = self.wal.reader(lsn) {
                if let Some(rec) = r.next_record()? {
                    last_hlc = rec.hlc;
                }
            }
        }
        *self.mems.write() = MemState {
            active: Arc::new(active),
            sealed: Vec::new(),
        };
        self.last_hlc.store(last_hlc, Ordering::Release);
        self.lsn_tx.send_replace(lsn);
        self.metrics.lsn.set(lsn as i64);
        tracing::warn!(namespace = %self.name, after_lsn = lsn, dropped, checkpoint,
            "WAL truncated: records after the agreed LSN discarded");
        Ok(dropped)
    }
}
