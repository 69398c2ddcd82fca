//! Installing a snapshot received from an upstream: the follower's way past the upstream's WAL retention.
//!
//! The namespace's contents become exactly the snapshot's entries, reflecting LSN `S`, and its WAL
//! continues at `S + 1` (replicated records keep their upstream LSNs). Crash safety: a marker file
//! holding `S` is made durable first; the B+Tree then switches atomically (one write transaction: the old
//! tree released, the snapshot built bottom-up from its key-ordered entries, checkpoint `S`); only then is the WAL reset and the marker
//! removed. Recovery finishes an interrupted reset when it finds the marker and a tree at checkpoint
//! `S`, and otherwise discards the marker (the old state was never touched).

use std::path::Path;
use std::sync::Arc;

use super::{EngineError, EpochEntry, Inner, MemState};
use crate::memtable::Memtable;

/// Marker file inside the namespace directory while an install is in progress.
pub(crate) const MARKER: &str = "snapshot-install";

fn write_marker(dir: &Path, lsn: u64) -> Result<(), EngineError> {
    let path = dir.join(MARKER);
    std::fs::write(&path, lsn.to_string())?;
    std::fs::File::open(&path)?.sync_all()?;
    crate::wal::segment::sync_dir(dir)?;
    Ok(())
}

/// Reads the marker's LSN, if an install was interrupted.
pub(crate) fn read_marker(dir: &Path) -> Result<Option<u64>, EngineError> {
    match std::fs::read_to_string(dir.join(MARKER)) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn remove_marker(dir: &Path) -> Result<(), EngineError> {
    match std::fs::remove_file(dir.join(MARKER)) {
        Ok(()) => Ok(crate::wal::segment::sync_dir(dir)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Inner {
    /// See [`super::Namespace::install_snapshot`].
    pub(crate) fn install_snapshot<I>(
        &self,
        entries: I,
        lsn: u64,
        hlc: u64,
    ) -> Result<(), EngineError>
    where
        I: Iterator<Item = Result<(Vec<u8>, Vec<u8>), EngineError>>,
    {
        self.install_snapshot_with(entries, lsn, hlc, None, false)
    }

    /// The install, with the upstream's epoch history up to `lsn` (`None`: unknown, epoch 0) and, with `replacing`, also at or below the local LSN (divergence).
    pub(crate) fn install_snapshot_with<I>(
        &self,
        entries: I,
        lsn: u64,
        hlc: u64,
        history: Option<Vec<EpochEntry>>,
        replacing: bool,
    ) -> Result<(), EngineError>
    where
        I: Iterator<Item = Result<(Vec<u8>, Vec<u8>), EngineError>>,
    {
        // Become the only writer: local and replicated writes queue behind us.
        let current = self.begin_exclusive()?;
        let result = self.install_locked(entries, lsn, hlc, current, history, replacing);
        self.end_exclusive(result.as_ref().map(|_| lsn).unwrap_or(current));
        result
    }

    fn install_locked<I>(
        &self,
        entries: I,
        lsn: u64,
        hlc: u64,
        current: u64,
        history: Option<Vec<EpochEntry>>,
        replacing: bool,
    ) -> Result<(), EngineError>
    where
        I: Iterator<Item = Result<(Vec<u8>, Vec<u8>), EngineError>>,
    {
        if lsn <= current && !replacing {
            return Err(EngineError::OutOfSequence {
                expected_after: current,
                got: lsn,
            });
        }
        // The flusher must not write old memtables over the new tree.
        let _tree_writer = self.flush.tree_writer.lock();
        let mut txn = self.tree.begin_write()?;
        // The old tree's pages are released as a whole; the snapshot arrives in key order, so
        // the new tree is built bottom-up (an out-of-order stream falls back to plain puts).
        let replaced = txn.clear()?;
        let mut n = 0u64;
        let mut w = txn.sorted_writer();
        for item in entries {
            let (k, v) = item?;
            w.put(&k, &v)?;
            n += 1;
        }
        w.finish()?;
        txn.set_checkpoint_lsn(lsn);
        // The history goes with the tree: staged before the marker, adopted once the tree switched.
        // Without the upstream's history, the epochs of the replaced records are unknown: 0.
        let history = history.unwrap_or_default();
        super::epoch::stage_install(&self.dir, &history)?;
        write_marker(&self.dir, lsn)?;
        self.recent.clear();
        if replacing {
            // Downstream tails may have streamed records that are about to be replaced.
            self.epochs.note_truncation();
        }
        txn.commit()?;
        // Memtables only hold data older than the snapshot now.
        *self.mems.write() = MemState {
            active: Arc::new(Memtable::new()),
            sealed: Vec::new(),
        };
        if replacing {
            self.wal.reset_replacing(lsn + 1)?;
        } else {
            self.wal.reset(lsn + 1)?;
        }
        self.epochs.adopt_install(&self.dir)?;
        remove_marker(&self.dir)?;
        self.hlc.observe(hlc);
        self.publish(lsn, hlc);
        self.metrics.checkpoint.set(lsn as i64);
        tracing::info!(namespace = %self.name, lsn, entries = n, replaced,
            "snapshot installed; WAL continues at the next LSN");
        Ok(())
    }
}
