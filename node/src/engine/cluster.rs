//! Cluster mode (a namespace replicated by a Raft group): the log append is split from the apply.
//!
//! The WAL *is* the Raft log: one entry is one record, its LSN is the entry's index + 1 (openraft
//! counts from 0, the WAL from 1) and its epoch is the entry's term. [`Namespace::raft_append`]
//! writes records and fsyncs them (the member's vote for the entry) without touching memtables or
//! readers; [`Namespace::raft_apply`] inserts committed records into the memtable and only then
//! publishes them, so `Tail`, relayers, the change feed and ZeroMQ see committed records only.
//! [`Namespace::raft_truncate_after`] cuts an uncommitted suffix; applied records are never cut, and
//! tails end with `Truncated` (their readers may hold the cut bytes) and reopen.
//! [`Namespace::raft_release_log`] lets retention drop what Raft purged after a snapshot.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{recovery, Commit, EngineError, EngineOptions, Inner, Namespace, Role};
use crate::memtable::Memtable;
use crate::storage::batch::{self, Op, WriteBatch};
use crate::wal::{Record, WalReader};

/// A committed record handed to the state machine.
#[derive(Debug, Clone)]
pub struct Applied {
    pub lsn: u64,
    pub hlc: u64,
    /// The WAL payload (a data batch, or a control payload with no ops).
    pub payload: bytes::Bytes,
}

/// A member's write made ready: the ops for the group, or nothing left to write.
enum Prepared<'a> {
    Propose(&'a Arc<dyn Proposer>, Vec<Op>),
    Done(Commit),
}

/// Where a member's `write` goes: the Raft group of its namespace (set by the cluster layer).
pub trait Proposer: Send + Sync {
    /// Commits `ops` (prefix deletes already expanded) through the group; blocks until applied here.
    fn propose(&self, ns: &Namespace, ops: Vec<Op>) -> Result<Commit, EngineError>;

    /// [`Proposer::propose`] for a task: waits for the commit without holding a thread.
    fn propose_async<'a>(
        &'a self,
        ns: &'a Namespace,
        ops: Vec<Op>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Commit, EngineError>> + Send + 'a>>;
}

impl Namespace {
    /// Opens a namespace as a Raft group member: memtables and readers stop at `committed` (at
    /// least the checkpoint); records after it wait for Raft to apply them again.
    pub fn open_member(
        dir: &Path,
        name: &str,
        opts: EngineOptions,
        committed: u64,
    ) -> Result<Namespace, EngineError> {
        super::validate_name(name)?;
        let inner = recovery::open(dir, name, opts, Some(committed))?;
        Namespace::start(inner, Role::Member)
    }

    /// Installs the group's proposer; later calls are ignored (one group per namespace).
    pub fn set_proposer(&self, p: Arc<dyn Proposer>) {
        let _ = self.proposer.set(p);
    }

    /// A member's write: expand prefix deletes against the applied state, then the proposer.
    pub(super) fn propose(&self, batch: WriteBatch) -> Result<Commit, EngineError> {
        match self.prepare(batch)? {
            Prepared::Propose(p, ops) => p.propose(self, ops),
            Prepared::Done(c) => Ok(c),
        }
    }

    /// [`Namespace::propose`] for a task, when expanding `batch` reads nothing (no prefix delete).
    pub(super) async fn propose_async(&self, batch: WriteBatch) -> Result<Commit, EngineError> {
        match self.prepare(batch)? {
            Prepared::Propose(p, ops) => p.propose_async(self, ops).await,
            Prepared::Done(c) => Ok(c),
        }
    }

    fn prepare(&self, batch: WriteBatch) -> Result<Prepared<'_>, EngineError> {
        let Some(p) = self.proposer.get() else {
            return Err(EngineError::NotLeader {
                name: self.inner.name.clone(),
                reason: "the Raft group is not running yet".into(),
            });
        };
        let ops = self.inner.expand(batch, self.latest_lsn())?;
        if ops.is_empty() {
            return Ok(Prepared::Done(Commit {
                lsn: self.latest_lsn(),
                hlc: self.latest_hlc(),
            }));
        }
        Ok(Prepared::Propose(p, ops))
    }

    /// A fresh HLC for a record proposed by this member (the leader assigns it once; every member
    /// stores the same value).
    pub fn next_hlc(&self) -> u64 {
        self.inner.hlc.now()
    }

    /// Appends Raft log records (contiguous after the last appended LSN) and fsyncs them. They are
    /// neither applied nor visible. Returns the last appended LSN.
    pub fn raft_append(&self, records: Vec<Record>) -> Result<u64, EngineError> {
        if records.is_empty() {
            return Ok(self.last_appended_lsn());
        }
        Ok(self
            .inner
            .submit(super::write::Request::RaftAppend(records, true))?
            .lsn)
    }

    /// Like [`Namespace::raft_append`] without the fsync, for a task: the records are readable
    /// (Raft replicates them at once) but durable only after a later [`Namespace::raft_sync`].
    /// On the task when it is a `pwrite` (no segment roll due, no other commit running), else on
    /// a blocking thread; never blocks a runtime worker.
    pub async fn raft_write_async(&self, records: Vec<Record>) -> Result<u64, EngineError> {
        if records.is_empty() {
            return Ok(self.last_appended_lsn());
        }
        Ok(self
            .inner
            .submit_async(super::write::Request::RaftAppend(records, false))
            .await?
            .lsn)
    }

    /// Makes every appended record durable (one fsync shared by concurrent callers). A failure
    /// poisons the namespace, as a failed group-commit fsync does.
    pub fn raft_sync(&self) -> Result<(), EngineError> {
        let _one = self.inner.epochs.sync_lock.lock();
        if let Some(reason) = self.inner.poisoned.lock().clone() {
            return Err(EngineError::Poisoned {
                name: self.inner.name.clone(),
                reason,
            });
        }
        let t = std::time::Instant::now();
        let synced = self.inner.wal.sync();
        self.inner.metrics.fsyncs.inc();
        self.inner
            .metrics
            .fsync_seconds
            .observe(t.elapsed().as_secs_f64());
        synced.map_err(|e| {
            let reason = format!("WAL fsync failed: {e}");
            tracing::error!(namespace = %self.inner.name, %reason, "namespace refuses further writes");
            self.inner.poisoned.lock().get_or_insert(reason.clone());
            EngineError::Poisoned {
                name: self.inner.name.clone(),
                reason,
            }
        })
    }

    /// Restarts an empty or wholly purged log so that `next_lsn` is the next LSN to append (the
    /// entries before it are covered by the state machine or a snapshot). Flushes memtables first
    /// so the B+Tree checkpoint, not the dropped WAL, holds every applied record.
    pub fn raft_restart_log_at(&self, next_lsn: u64) -> Result<(), EngineError> {
        self.flush()?;
        let current = self.inner.begin_exclusive()?;
        let result = if next_lsn > current + 1 || self.inner.wal.first_lsn().is_none() {
            self.inner
                .wal
                .reset_replacing(next_lsn)
                .map_err(EngineError::from)
        } else {
            Err(EngineError::OutOfSequence {
                expected_after: current,
                got: next_lsn,
            })
        };
        self.inner.end_exclusive(if result.is_ok() {
            next_lsn - 1
        } else {
            current
        });
        result
    }

    /// Applies committed records in LSN order and publishes the last one.
    pub fn raft_apply(&self, entries: Vec<Applied>) -> Result<Commit, EngineError> {
        if entries.is_empty() {
            return Ok(Commit {
                lsn: self.latest_lsn(),
                hlc: self.latest_hlc(),
            });
        }
        self.inner.submit(super::write::Request::RaftApply(entries))
    }

    /// [`Namespace::raft_apply`] for a task (as [`Namespace::raft_write_async`]).
    pub async fn raft_apply_async(&self, entries: Vec<Applied>) -> Result<Commit, EngineError> {
        if entries.is_empty() {
            return Ok(Commit {
                lsn: self.latest_lsn(),
                hlc: self.latest_hlc(),
            });
        }
        self.inner
            .submit_async(super::write::Request::RaftApply(entries))
            .await
    }

    /// Discards appended records after `lsn` (a conflicting uncommitted suffix). Refuses to cut an
    /// applied record. Returns how many records were dropped.
    pub fn raft_truncate_after(&self, lsn: u64) -> Result<u64, EngineError> {
        let current = self.inner.begin_exclusive()?;
        let applied = self.latest_lsn();
        let result = if lsn >= current {
            Ok(0)
        } else if lsn < applied {
            Err(EngineError::TruncateApplied { lsn, applied })
        } else {
            // WAL readers may hold the discarded bytes (a refill reads past the published LSN):
            // tails must reopen, or they would hand out the replaced records once the new ones
            // are published at the same LSNs.
            self.inner.recent.clear();
            self.inner.epochs.note_truncation();
            self.inner
                .wal
                .truncate_after(lsn)
                .map_err(EngineError::from)
                .and_then(|n| {
                    self.inner.epochs.truncate_after(lsn)?;
                    Ok(n)
                })
        };
        let last = match &result {
            Ok(_) => lsn.min(current),
            Err(EngineError::TruncateApplied { .. }) => current,
            Err(e) => {
                let err = format!("Raft log truncation after LSN {lsn} failed: {e}");
                tracing::error!(namespace = %self.inner.name, %err, "namespace refuses further writes");
                self.inner.poisoned.lock().get_or_insert(err);
                self.inner.wal.last_lsn()
            }
        };
        self.inner.end_exclusive(last);
        if let Ok(n) = &result {
            if *n > 0 {
                tracing::warn!(namespace = %self.inner.name, after_lsn = lsn, dropped = n,
                    "uncommitted Raft log suffix truncated");
            }
        }
        result
    }

    /// Lets WAL retention drop records up to `lsn` (Raft purged them: a snapshot covers them).
    /// Retention still keeps everything after the B+Tree checkpoint and what its policy keeps.
    pub fn raft_release_log(&self, lsn: u64) {
        if let Some(pin) = self.raft_pin {
            self.inner.wal.advance_pin(pin, lsn + 1);
        }
    }

    /// Last LSN in the WAL, committed or not.
    pub fn last_appended_lsn(&self) -> u64 {
        self.inner.wal.last_lsn()
    }

    /// A WAL reader that also returns appended records not yet applied (the Raft log reader).
    pub fn appended_reader(&self, from_lsn: u64) -> Result<WalReader, EngineError> {
        Ok(self.inner.wal.appended_reader(from_lsn)?)
    }
}

impl Inner {
    /// Group-commit step for [`Namespace::raft_append`]: WAL only; the caller fsyncs the group.
    pub(super) fn log_raft(
        &self,
        records: Vec<Record>,
        last: &mut u64,
    ) -> Result<Commit, EngineError> {
        let mut hlc = 0;
        for rec in &records {
            super::write::check_next(rec, *last)?;
            self.append_verbatim(rec)?;
            *last = rec.lsn;
            hlc = rec.hlc;
        }
        Ok(Commit { lsn: *last, hlc })
    }

    /// Group-commit step for [`Namespace::raft_apply`]: memtable inserts; the caller publishes.
    pub(super) fn apply_raft(
        &self,
        entries: Vec<Applied>,
        active: &Memtable,
        applied: &mut Option<(u64, u64)>,
    ) -> Result<Commit, EngineError> {
        let mut at = applied.unwrap_or((
            self.visible.load(Ordering::Acquire),
            self.last_hlc.load(Ordering::Acquire),
        ));
        for e in &entries {
            if e.lsn <= at.0 {
                continue; // Already applied (replayed at open): applying is idempotent by LSN.
            }
            let ops = batch::decode(&e.payload)?;
            active.apply(e.lsn, &ops);
            self.hlc.observe(e.hlc);
            // Control records keep the clock of the data before them (their HLC is 0).
            let hlc = if batch::control_body(&e.payload).is_some() {
                at.1
            } else {
                e.hlc
            };
            at = (e.lsn, hlc);
        }
        *applied = Some(at);
        Ok(Commit {
            lsn: at.0,
            hlc: at.1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TailLimits;

    fn data(lsn: u64, epoch: u64, key: &str) -> Record {
        let payload = batch::encode(&[Op::Put {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
        }])
        .unwrap();
        Record {
            lsn,
            hlc: 1000 + lsn,
            epoch,
            payload: payload.into(),
        }
    }

    fn control(lsn: u64, epoch: u64) -> Record {
        Record {
            lsn,
            hlc: 0,
            epoch,
            payload: batch::encode_control(b"blank").into(),
        }
    }

    fn applied(r: &Record) -> Applied {
        Applied {
            lsn: r.lsn,
            hlc: r.hlc,
            payload: r.payload.clone(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tail_never_hands_out_a_truncated_uncommitted_record() {
        let d = tempfile::tempdir().unwrap();
        let ns =
            Namespace::open_member(&d.path().join("n"), "n", EngineOptions::default(), 0).unwrap();
        // LSN 3 is appended (and so in the file) when the tail first reads, but not committed.
        let old = data(3, 3, "old");
        ns.raft_append(vec![control(1, 3), data(2, 3, "a"), old.clone()])
            .unwrap();
        ns.raft_apply(vec![applied(&control(1, 3)), applied(&data(2, 3, "a"))])
            .unwrap();
        let mut tail = ns.tail(1);
        let seen = tail.read().await.unwrap();
        assert_eq!(seen.iter().map(|r| r.lsn).collect::<Vec<_>>(), vec![1, 2]);
        // Another leader's entry replaces it; that one is committed.
        assert_eq!(ns.raft_truncate_after(2).unwrap(), 1);
        let new = data(3, 4, "new");
        ns.raft_append(vec![new.clone()]).unwrap();
        ns.raft_apply(vec![applied(&new)]).unwrap();
        match tail.read().await {
            Err(crate::engine::TailError::Truncated) => {}
            Ok(recs) => {
                assert!(
                    recs.iter().all(|r| r.epoch == 4),
                    "the replaced record was handed out: {recs:?}"
                );
            }
            Err(e) => panic!("{e}"),
        }
        // A tail opened afterwards reads the committed history.
        let recs = ns.tail(3).read().await.unwrap();
        assert_eq!((recs[0].lsn, recs[0].epoch), (3, 4));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appended_records_stay_invisible_until_applied() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("n");
        let ns = Namespace::open_member(&dir, "n", EngineOptions::default(), 0).unwrap();
        let recs = vec![control(1, 3), data(2, 3, "a"), data(3, 4, "b")];
        assert_eq!(ns.raft_append(recs.clone()).unwrap(), 3);
        assert_eq!(ns.latest_lsn(), 0, "appended is not visible");
        assert_eq!(ns.get(b"a").unwrap(), None);
        assert!(ns.wal_reader(1).unwrap().next_record().unwrap().is_none());
        assert_eq!(ns.durable_lsn(), 0);
        let mut all = ns.appended_reader(1).unwrap();
        for r in &recs {
            assert_eq!(all.next_record().unwrap().unwrap().lsn, r.lsn);
        }
        assert_eq!((ns.epoch_at(1), ns.epoch_at(3)), (3, 4));
        // A local write goes to the proposer, which is not there yet.
        let mut b = WriteBatch::new();
        b.put(b"x".to_vec(), b"y".to_vec());
        assert!(matches!(ns.write(b), Err(EngineError::NotLeader { .. })));

        let mut tail = ns.tail(1);
        let c = ns
            .raft_apply(recs[..2].iter().map(applied).collect())
            .unwrap();
        assert_eq!((c.lsn, c.hlc), (2, 1002));
        assert_eq!(ns.get(b"a").unwrap(), Some(b"v".to_vec()));
        assert_eq!(ns.get(b"b").unwrap(), None);
        let seen = tail.read().await.unwrap();
        assert_eq!(
            seen.iter().map(|r| r.lsn).collect::<Vec<_>>(),
            vec![1, 2],
            "tails see committed records only"
        );
        let _ = TailLimits::default();

        // The uncommitted suffix can be cut; an applied record cannot.
        assert!(matches!(
            ns.raft_truncate_after(1),
            Err(EngineError::TruncateApplied { .. })
        ));
        assert_eq!(ns.raft_truncate_after(2).unwrap(), 1);
        assert_eq!(ns.last_appended_lsn(), 2);
        assert_eq!(ns.last_epoch(), 3, "the history is cut back with the log");
        ns.raft_append(vec![data(3, 5, "c")]).unwrap();
        assert_eq!(ns.epoch_at(3), 5);
        drop(tail);
        drop(ns);

        // Reopened with committed = 2: record 3 stays in the WAL but is not replayed or visible.
        let ns = Namespace::open_member(&dir, "n", EngineOptions::default(), 2).unwrap();
        assert_eq!((ns.latest_lsn(), ns.last_appended_lsn()), (2, 3));
        assert_eq!(ns.get(b"c").unwrap(), None);
        ns.raft_apply(vec![applied(&data(3, 5, "c"))]).unwrap();
        assert_eq!(ns.get(b"c").unwrap(), Some(b"v".to_vec()));
        assert_eq!(ns.latest_lsn(), 3);
    }
}
