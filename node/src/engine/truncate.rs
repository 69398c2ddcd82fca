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
        self.recent.clear();
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

#[cfg(test)]
mod tests {
    use crate::engine::{EngineError, EngineOptions, Namespace, Role, TailError};
    use crate::storage::batch::WriteBatch;
    use crate::wal::Record;

    fn put(ns: &Namespace, k: &str, v: &str) {
        let mut b = WriteBatch::new();
        b.put(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        ns.write(b).unwrap();
    }

    fn records(ns: &Namespace, from: u64) -> Vec<Record> {
        let mut r = ns.wal_reader(from).unwrap();
        let mut out = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            out.push(rec);
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_rolls_back_to_the_agreed_lsn_and_takes_another_history() {
        let d = tempfile::tempdir().unwrap();
        let opts = EngineOptions::default();
        // The owner writes 1..=6; the follower copies them, then must roll back to 3.
        let a = Namespace::open(&d.path().join("a"), "a", opts.clone()).unwrap();
        for i in 1..=6 {
            put(&a, &format!("k{i}"), "a");
        }
        let f = Namespace::open_as(&d.path().join("f"), "f", opts.clone(), Role::Follower).unwrap();
        f.apply_replicated(records(&a, 1)).unwrap();
        assert_eq!(f.last_epoch(), a.write_epoch().unwrap());
        let mut tail = f.tail(7).durable_only();
        assert_eq!(f.epoch_history(6), a.epoch_history(6));

        assert_eq!(f.truncate_after(3).unwrap(), 3);
        assert_eq!(f.latest_lsn(), 3);
        assert_eq!(f.get(b"k3").unwrap(), Some(b"a".to_vec()));
        assert_eq!(
            f.get(b"k4").unwrap(),
            None,
            "memtable rebuilt without the discarded records"
        );
        assert!(matches!(tail.read().await, Err(TailError::Truncated)));
        // Another history continues at 4 (its own epoch, newer).
        let newer = a.write_epoch().unwrap() + 10;
        let rec = Record {
            lsn: 4,
            hlc: 1,
            epoch: newer,
            payload: records(&a, 4)[0].payload.clone(),
        };
        f.apply_replicated(vec![rec]).unwrap();
        assert_eq!(
            (f.epoch_at(3), f.epoch_at(4)),
            (a.write_epoch().unwrap(), newer)
        );
        // Once flushed into the B+Tree, records cannot be taken back.
        f.flush().unwrap();
        assert!(matches!(
            f.truncate_after(2),
            Err(EngineError::TruncateBelowCheckpoint {
                lsn: 2,
                checkpoint: 4
            })
        ));
        drop(tail);
        drop(f);
        let f = Namespace::open_as(&d.path().join("f"), "f", opts, Role::Follower).unwrap();
        assert_eq!((f.latest_lsn(), f.epoch_at(4)), (4, newer));
    }
}
