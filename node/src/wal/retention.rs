//! Retention: drop the oldest whole segments already covered by a checkpoint.
//!
//! A segment is deleted only if all hold: it is not the active (last) segment; every record in
//! it is `<= checkpoint_lsn` and durable; no live reader still needs any of its LSNs; and the
//! policy asks to drop (total WAL bytes `> max_bytes`, or the segment's mtime older than
//! `max_age`). A policy with both limits `None` keeps everything. Deletion goes oldest-first
//! with a directory fsync after each unlink, so a crash can never leave an LSN gap.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::segment;
use super::shared::Shared;
use super::{RetentionPolicy, WalError};

impl Shared {
    /// Deletes eligible segments and returns how many were removed.
    pub(crate) fn retain(
        &self,
        checkpoint_lsn: u64,
        policy: &RetentionPolicy,
    ) -> Result<usize, WalError> {
        if policy.max_bytes.is_none() && policy.max_age.is_none() {
            return Ok(0);
        }
        let mut segs = self.segments.write();
        let min_pinned = self.pins.lock().min();
        let durable = self.durable_lsn.load(Ordering::Acquire);
        let mut total: u64 = (0..segs.len())
            .map(|i| self.segment_bounds(&segs, i).1)
            .sum();
        let now = SystemTime::now();
        let mut deleted = 0usize;
        while segs.len() > 1 {
            let s = &segs[0];
            if s.last_lsn > checkpoint_lsn || s.last_lsn >= min_pinned || s.last_lsn > durable {
                break;
            }
            let over_bytes = policy.max_bytes.is_some_and(|max| total > max);
            let too_old = match policy.max_age {
                Some(max_age) => {
                    let mtime = std::fs::metadata(&s.path)?.modified()?;
                    now.duration_since(mtime).unwrap_or(Duration::ZERO) >= max_age
                }
                None => false,
            };
            if !(over_bytes || too_old) {
                break;
            }
            std::fs::remove_file(&s.path)?;
            segment::sync_dir(&self.dir)?;
            tracing::debug!(segment = %s.file_name, last_lsn = s.last_lsn, "WAL segment retired");
            total = total.saturating_sub(s.size);
            segs.remove(0);
            deleted += 1;
        }
        Ok(deleted)
    }
}
