//! Group commit: the first waiting writer becomes leader, logs every queued batch, fsyncs once, applies
//! them to the memtable in LSN order and publishes the new visible LSN; the others just wait.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use prometheus::{Histogram, IntCounter, IntGauge};

use super::{Commit, EngineError, FsyncPolicy, Inner};
use crate::memtable::Memtable;
use crate::metrics;
use crate::storage::batch::{self, Op, OpRef, WriteBatch};
use crate::storage::keys::prefix_successor;
use crate::wal::Record;

/// What a writer hands the leader.
pub(crate) enum Request {
    Local(WriteBatch),
    /// Records from an upstream; with the flag set the caller fsyncs right after (no periodic sync).
    Replicated(Vec<Record>, bool),
    /// Cluster mode: append Raft log records, neither applied nor published; fsynced in the group
    /// when the flag is set (else the caller syncs later with `Namespace::raft_sync`).
    RaftAppend(Vec<Record>, bool),
    /// Cluster mode: apply committed records to the memtable and publish them.
    RaftApply(Vec<super::cluster::Applied>),
    /// Seal the active memtable (only the leader may swap it).
    Seal,
}

impl Request {
    /// Bytes this request adds to the WAL and memtable when a task may commit it without a thread
    /// hop (no fsync, seal, prefix scan or Raft step of its own); `None` when it needs a thread.
    fn inline_bytes(&self) -> Option<usize> {
        match self {
            Request::Local(b) => b.ops.iter().try_fold(64, |n, op| match op {
                Op::DeletePrefix { .. } => None,
                op => Some(n + op.weight()),
            }),
            // A Raft append without its own fsync is fsynced by the log's sync thread
            // (`raft/store.rs`), not here.
            Request::Replicated(records, _) | Request::RaftAppend(records, false) => {
                Some(records.iter().map(|r| r.payload.len() + 64).sum())
            }
            Request::RaftApply(entries) => Some(entries.iter().map(|e| e.payload.len() + 64).sum()),
            _ => None,
        }
    }

    /// Whether the namespace's fsync policy applies to it (Raft steps fsync on their own terms).
    fn follows_policy(&self) -> bool {
        matches!(self, Request::Local(_) | Request::Replicated(..))
    }
}

/// A queued request's id and its result.
type Outcome = (u64, Result<Commit, EngineError>);

#[derive(Default)]
pub(crate) struct Queue {
    /// Last LSN handed out; only the leader reads or moves it.
    last_lsn: u64,
    next_id: u64,
    pending: Vec<(u64, Request)>,
    /// What the pending requests weigh ([`Request::inline_bytes`]); `None` once one needs a thread.
    pending_bytes: Option<usize>,
    /// Whether a pending request follows the fsync policy ([`Request::follows_policy`]).
    pending_policy: bool,
    done: HashMap<u64, Result<Commit, EngineError>>,
    /// Requests whose async waiter went away: their results are dropped, not kept in `done`.
    abandoned: std::collections::HashSet<u64>,
    leader_active: bool,
}

impl Queue {
    pub fn starting_after(last_lsn: u64) -> Queue {
        Queue {
            last_lsn,
            pending_bytes: Some(0),
            ..Queue::default()
        }
    }

    fn enqueue(&mut self, request: Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.pending_bytes = self
            .pending_bytes
            .zip(request.inline_bytes())
            .map(|(a, b)| a + b);
        self.pending_policy |= request.follows_policy();
        self.pending.push((id, request));
        id
    }

    fn take_pending(&mut self) -> Vec<(u64, Request)> {
        self.pending_bytes = Some(0);
        self.pending_policy = false;
        std::mem::take(&mut self.pending)
    }

    fn deliver(&mut self, results: Vec<Outcome>) {
        for (id, r) in results {
            if !self.abandoned.remove(&id) {
                self.done.insert(id, r);
            }
        }
    }
}

/// What an async waiter does next ([`Inner::try_lead_async`]).
enum Step {
    Done(Result<Commit, EngineError>),
    /// Another commit runs: wait for it to give the role back.
    Wait,
    /// This task led a group: look again.
    Led,
    /// The group needs a thread (fsync, seal, segment roll, prefix scan, Raft step).
    Thread,
}

/// Forgets a queued async request whose caller stopped waiting, so its result is not kept forever.
struct Waiting<'a> {
    inner: &'a Inner,
    id: u64,
    finished: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let mut q = self.inner.queue.lock();
            if q.done.remove(&self.id).is_none() {
                q.abandoned.insert(self.id);
            }
        }
    }
}

/// The leader role taken by [`Inner::lead_inline`]: commits one request, then hands the role on.
pub(crate) struct InlineLeader<'a> {
    inner: &'a Inner,
    id: u64,
    last: u64,
}

impl InlineLeader<'_> {
    /// Commits `request` alone as a group on this thread.
    pub(crate) fn commit(mut self, request: Request) -> Result<Commit, EngineError> {
        let (results, new_last) = self.inner.commit_group(vec![(self.id, request)], self.last);
        self.last = new_last;
        results
            .into_iter()
            .next()
            .map_or(Err(EngineError::Closed), |(_, r)| r)
        // Dropping `self` hands the role on.
    }
}

impl Drop for InlineLeader<'_> {
    fn drop(&mut self) {
        let mut q = self.inner.queue.lock();
        self.inner.release(&mut q, self.last);
    }
}

/// Per-namespace metric handles, resolved once.
pub(crate) struct NsMetrics {
    pub appends: IntCounter,
    pub bytes: IntCounter,
    pub fsyncs: IntCounter,
    pub inline_commits: IntCounter,
    pub fsync_seconds: Histogram,
    pub group_size: Histogram,
    pub lsn: IntGauge,
    pub flushes: IntCounter,
    pub checkpoint: IntGauge,
    pub segments_deleted: IntCounter,
}

impl NsMetrics {
    pub fn new(ns: &str) -> Self {
        let l = &[ns];
        Self {
            appends: metrics::WAL_APPENDS.with_label_values(l),
            bytes: metrics::WAL_BYTES.with_label_values(l),
            fsyncs: metrics::WAL_FSYNCS.with_label_values(l),
            inline_commits: metrics::COMMITS_INLINE.with_label_values(l),
            fsync_seconds: metrics::WAL_FSYNC_SECONDS.with_label_values(l),
            group_size: metrics::COMMIT_GROUP_SIZE.with_label_values(l),
            lsn: metrics::LSN.with_label_values(l),
            flushes: metrics::FLUSHES.with_label_values(l),
            checkpoint: metrics::CHECKPOINT_LSN.with_label_values(l),
            segments_deleted: metrics::WAL_SEGMENTS_DELETED.with_label_values(l),
        }
    }
}

impl Inner {
    /// Queues a request and returns its result, leading a commit group if nobody else is.
    pub(crate) fn submit(&self, request: Request) -> Result<Commit, EngineError> {
        let id = self.queue.lock().enqueue(request);
        self.wait_for(id)
    }

    /// Blocks until queued request `id` has its result, leading commit groups while nobody else is.
    fn wait_for(&self, id: u64) -> Result<Commit, EngineError> {
        let mut q = self.queue.lock();
        loop {
            if let Some(result) = q.done.remove(&id) {
                return result;
            }
            if q.leader_active {
                self.queue_cv.wait(&mut q);
                continue;
            }
            q.leader_active = true;
            let group = q.take_pending();
            let last = q.last_lsn;
            drop(q);
            let (results, new_last) = self.commit_group(group, last);
            q = self.queue.lock();
            q.deliver(results);
            self.release(&mut q, new_last);
        }
    }

    /// Gives the leader role back and wakes every waiter, thread or task: one of them leads next.
    fn release(&self, q: &mut Queue, last_lsn: u64) {
        q.last_lsn = last_lsn;
        q.leader_active = false;
        self.queue_cv.notify_all();
        self.released.notify_waiters();
    }

    /// [`Inner::submit`] for a task. Alone and cheap ([`Inner::cheap`]), the request commits on
    /// the task; when another commit runs, it joins the next group and the task waits without a
    /// thread, and the waiter that finds the role free leads that group on its task if the group
    /// is cheap. Anything else (`fsync: always`, a seal or roll due, a prefix delete) goes to a
    /// blocking thread, which leads the group holding the request.
    pub(crate) async fn submit_async(
        self: &Arc<Self>,
        request: Request,
    ) -> Result<Commit, EngineError> {
        let policy = request.follows_policy();
        if let Some(leader) = request
            .inline_bytes()
            .and_then(|b| self.lead_inline(b, policy))
        {
            return leader.commit(request);
        }
        let id = self.queue.lock().enqueue(request);
        let mut waiting = Waiting {
            inner: self,
            id,
            finished: false,
        };
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before the queue is read: a release after this point wakes us.
            released.as_mut().enable();
            match self.try_lead_async(id) {
                Step::Done(result) => {
                    waiting.finished = true;
                    return result;
                }
                Step::Wait => released.await,
                Step::Led => {}
                Step::Thread => {
                    // A thread leads the group holding this request (or waits for it).
                    waiting.finished = true;
                    let inner = self.clone();
                    return tokio::task::spawn_blocking(move || inner.wait_for(id))
                        .await
                        .map_err(|e| EngineError::Io(std::io::Error::other(e.to_string())))?;
                }
            }
        }
    }

    /// One look at the queue for the async waiter of request `id`; leads the next group when the
    /// role is free and the group is cheap.
    fn try_lead_async(&self, id: u64) -> Step {
        let mut q = self.queue.lock();
        if let Some(result) = q.done.remove(&id) {
            return Step::Done(result);
        }
        if q.leader_active {
            return Step::Wait;
        }
        if !q
            .pending_bytes
            .is_some_and(|b| self.cheap(b, q.pending_policy))
        {
            return Step::Thread;
        }
        q.leader_active = true;
        let group = q.take_pending();
        let last = q.last_lsn;
        drop(q);
        self.metrics.inline_commits.inc_by(group.len() as u64);
        let (results, new_last) = self.commit_group(group, last);
        let mut q = self.queue.lock();
        q.deliver(results);
        self.release(&mut q, new_last);
        Step::Led
    }

    /// Whether `bytes` more fit without a WAL segment roll or a memtable seal (which may wait for
    /// the flusher), and no fsync is due (`policy`: the group follows the fsync policy): then a
    /// commit is a `pwrite` and a memtable insert.
    fn cheap(&self, bytes: usize, policy: bool) -> bool {
        (!policy || self.opts.fsync != FsyncPolicy::Always)
            // Twice the estimate plus slack: memtable accounting adds per-op overheads the caller's
            // byte count does not know.
            && self.mems.read().active.size_bytes()
                + bytes.saturating_mul(2).saturating_add(64 << 10)
                < self.opts.memtable_bytes
            && self.wal.has_room(bytes)
    }

    /// The leader role for one commit on the calling thread, when that costs no more than a WAL
    /// `pwrite` and a memtable insert ([`Inner::cheap`]) and no group runs or waits. `None` sends
    /// the caller to the queue, so an async caller never blocks a runtime worker on the disk, on
    /// the flusher or behind other writers.
    pub(crate) fn lead_inline(&self, bytes: usize, policy: bool) -> Option<InlineLeader<'_>> {
        let mut q = self.queue.lock();
        if q.leader_active || !q.pending.is_empty() || !self.cheap(bytes, policy) {
            return None;
        }
        q.leader_active = true;
        let id = q.next_id;
        q.next_id += 1;
        self.metrics.inline_commits.inc();
        Some(InlineLeader {
            inner: self,
            id,
            last: q.last_lsn,
        })
    }

    /// Waits until no commit group runs and holds the leader role; returns the last LSN.
    /// Writers submitted meanwhile queue up and run after `end_exclusive`.
    pub(crate) fn begin_exclusive(&self) -> Result<u64, EngineError> {
        let mut q = self.queue.lock();
        while q.leader_active {
            self.queue_cv.wait(&mut q);
        }
        if let Some(reason) = self.poison_reason() {
            return Err(EngineError::Poisoned {
                name: self.name.clone(),
                reason,
            });
        }
        q.leader_active = true;
        Ok(q.last_lsn)
    }

    /// Gives the leader role back, with the (possibly moved) last LSN.
    pub(crate) fn end_exclusive(&self, last_lsn: u64) {
        let mut q = self.queue.lock();
        self.release(&mut q, last_lsn);
    }

    fn poison_reason(&self) -> Option<String> {
        self.poisoned.lock().clone()
    }

    fn poison(&self, reason: String) -> EngineError {
        tracing::error!(namespace = %self.name, %reason, "namespace refuses further writes");
        let mut p = self.poisoned.lock();
        if p.is_none() {
            *p = Some(reason.clone());
        }
        EngineError::Poisoned {
            name: self.name.clone(),
            reason,
        }
    }

    /// The leader's work for one group. Returns per-request results and the last LSN handed out.
    fn commit_group(&self, group: Vec<(u64, Request)>, mut last: u64) -> (Vec<Outcome>, u64) {
        let mut results: Vec<Outcome> = Vec::with_capacity(group.len());
        if let Some(reason) = self.poison_reason() {
            for (id, _) in group {
                results.push((
                    id,
                    Err(EngineError::Poisoned {
                        name: self.name.clone(),
                        reason: reason.clone(),
                    }),
                ));
            }
            return (results, last);
        }
        let active = self.mems.read().active.clone();
        let start_lsn = last;
        let mut last_hlc = self.last_hlc.load(Ordering::Relaxed);
        let mut seal = false;
        let mut raft_appended = false;
        let mut raft_fsync = false;
        let mut raft_applied: Option<(u64, u64)> = None;
        let mut failed: Option<String> = None;
        // Records logged by this group, for the in-memory cache of recent records (`recent.rs`).
        let mut fresh: Vec<Record> = Vec::new();
        // Every request of the group is followed by its caller's own fsync.
        let mut caller_syncs = true;
        for (id, request) in group {
            if let Some(reason) = &failed {
                results.push((
                    id,
                    Err(EngineError::Poisoned {
                        name: self.name.clone(),
                        reason: reason.clone(),
                    }),
                ));
                continue;
            }
            let result = match request {
                Request::Seal => {
                    seal = true;
                    Ok(Commit {
                        lsn: last,
                        hlc: last_hlc,
                    })
                }
                Request::Local(b) => {
                    caller_syncs = false;
                    self.log_local(b, &active, &mut last, &mut last_hlc, &mut fresh)
                }
                Request::Replicated(records, syncs) => {
                    caller_syncs &= syncs;
                    self.log_replicated(records, &active, &mut last, &mut last_hlc, &mut fresh)
                }
                Request::RaftAppend(records, sync) => {
                    raft_appended = true;
                    raft_fsync |= sync;
                    self.log_raft(records, &mut last)
                }
                Request::RaftApply(entries) => self.apply_raft(entries, &active, &mut raft_applied),
            };
            if let Err(EngineError::Wal(e)) = &result {
                // The log may hold a partial record now: no further appends until restart repairs it.
                failed = Some(format!("WAL append failed: {e}"));
                results.push((id, Err(self.poison(format!("WAL append failed: {e}")))));
                continue;
            }
            results.push((id, result));
        }
        if let Some(reason) = failed {
            // Nothing of this group is acknowledged: a restart decides what of it survives.
            for (_, r) in results.iter_mut() {
                if r.is_ok() {
                    *r = Err(EngineError::Poisoned {
                        name: self.name.clone(),
                        reason: reason.clone(),
                    });
                }
            }
            return (results, last);
        }
        if last > start_lsn {
            self.metrics.group_size.observe(results.len() as f64);
            // A Raft append is acknowledged only once durable, whatever the policy: here, or by
            // the caller's `raft_sync`.
            if (self.opts.fsync == FsyncPolicy::Always && !raft_appended) || raft_fsync {
                let t = Instant::now();
                let synced = self.wal.sync();
                self.metrics.fsyncs.inc();
                self.metrics
                    .fsync_seconds
                    .observe(t.elapsed().as_secs_f64());
                if let Err(e) = synced {
                    // After a failed fsync the page cache may have dropped our data: nothing is durable.
                    let err = self.poison(format!("WAL fsync failed: {e}"));
                    for (_, r) in results.iter_mut() {
                        if r.is_ok() {
                            *r = Err(EngineError::Poisoned {
                                name: self.name.clone(),
                                reason: err.to_string(),
                            });
                        }
                    }
                    return (results, last);
                }
            }
            if !raft_appended {
                // Before publishing: tails woken by it find the records in memory.
                self.recent.push(fresh);
                self.publish_marking(last, last_hlc, !caller_syncs);
            }
        }
        if let Some((lsn, hlc)) = raft_applied {
            self.publish(lsn, hlc);
        }
        if seal || active.size_bytes() >= self.opts.memtable_bytes {
            self.seal_active(&active);
        }
        (results, last)
    }

    /// Makes records up to `lsn` visible to readers, WAL readers and async subscribers.
    pub(crate) fn publish(&self, lsn: u64, hlc: u64) {
        self.publish_marking(lsn, hlc, true);
    }

    /// [`Inner::publish`]; `mark_dirty` false skips waking the `interval` syncer (the caller fsyncs).
    fn publish_marking(&self, lsn: u64, hlc: u64, mark_dirty: bool) {
        self.last_hlc.store(hlc, Ordering::Release);
        self.visible.store(lsn, Ordering::Release);
        self.wal.publish(lsn);
        self.lsn_tx.send_replace(lsn);
        self.metrics.lsn.set(lsn as i64);
        if mark_dirty && matches!(self.opts.fsync, FsyncPolicy::Interval(_)) {
            self.flush.mark_dirty();
        }
    }

    fn log_local(
        &self,
        batch: WriteBatch,
        active: &Memtable,
        last: &mut u64,
        last_hlc: &mut u64,
        fresh: &mut Vec<Record>,
    ) -> Result<Commit, EngineError> {
        let ops = self.expand(batch, *last)?;
        if ops.is_empty() {
            return Ok(Commit {
                lsn: *last,
                hlc: *last_hlc,
            });
        }
        let payload = batch::encode(&ops)?;
        let lsn = *last + 1;
        let hlc = self.hlc.now();
        // The epoch's history entry is durable before its first record can be acknowledged.
        let epoch = self.epochs.for_local(lsn)?;
        self.wal.append_record(lsn, hlc, epoch, &payload)?;
        self.metrics.appends.inc();
        self.metrics.bytes.inc_by(payload.len() as u64);
        let refs: Vec<OpRef<'_>> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Put { key, value } => Some(OpRef::Put { key, value }),
                Op::Delete { key } => Some(OpRef::Delete { key }),
                Op::DeletePrefix { .. } => None,
            })
            .collect();
        active.apply(lsn, &refs);
        drop(refs);
        *last = lsn;
        *last_hlc = hlc;
        fresh.push(Record {
            lsn,
            hlc,
            epoch,
            payload: payload.into(),
        });
        Ok(Commit { lsn, hlc })
    }

    fn log_replicated(
        &self,
        records: Vec<Record>,
        active: &Memtable,
        last: &mut u64,
        last_hlc: &mut u64,
        fresh: &mut Vec<Record>,
    ) -> Result<Commit, EngineError> {
        // Checked and decoded before anything is logged: a record that cannot be applied is never
        // appended, nor is anything after it.
        let mut ops = Vec::with_capacity(records.len());
        let mut prev = *last;
        let mut bad = None;
        for rec in &records {
            let decoded = check_next(rec, prev).and_then(|_| Ok(batch::decode(&rec.payload)?));
            match decoded {
                Ok(o) => ops.push(o),
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
            prev = rec.lsn;
        }
        let good = &records[..ops.len()];
        if !good.is_empty() {
            for rec in good {
                self.epochs.observe_replicated(rec.epoch, rec.lsn)?;
            }
            // One write for the whole batch (per segment it spans).
            let appended = self.wal.append_records(good);
            // On a failed write the WAL keeps a prefix: apply exactly what it holds.
            let held = self.wal.last_lsn();
            for (rec, o) in good.iter().zip(&ops).take_while(|(r, _)| r.lsn <= held) {
                self.metrics.appends.inc();
                self.metrics.bytes.inc_by(rec.payload.len() as u64);
                self.hlc.observe(rec.hlc);
                active.apply(rec.lsn, o);
                *last = rec.lsn;
                *last_hlc = rec.hlc;
            }
            appended?;
        }
        drop(ops);
        let n = good.len();
        fresh.extend(records.into_iter().take(n));
        if let Some(e) = bad {
            return Err(e);
        }
        Ok(Commit {
            lsn: *last,
            hlc: *last_hlc,
        })
    }

    /// Appends a record received with its LSN, HLC and epoch (from an upstream or a Raft leader);
    /// the caller has checked it follows the last LSN ([`check_next`]).
    pub(super) fn append_verbatim(&self, rec: &Record) -> Result<(), EngineError> {
        self.epochs.observe_replicated(rec.epoch, rec.lsn)?;
        self.wal
            .append_record(rec.lsn, rec.hlc, rec.epoch, &rec.payload)?;
        self.metrics.appends.inc();
        self.metrics.bytes.inc_by(rec.payload.len() as u64);
        self.hlc.observe(rec.hlc);
        Ok(())
    }

    /// Resolves prefix deletes into point deletes against everything logged so far (this group included).
    pub(super) fn expand(&self, batch: WriteBatch, as_of: u64) -> Result<Vec<Op>, EngineError> {
        if !batch
            .ops
            .iter()
            .any(|o| matches!(o, Op::DeletePrefix { .. }))
        {
            return Ok(batch.ops);
        }
        let snap = self.snapshot_at(as_of)?;
        let mut out = Vec::with_capacity(batch.ops.len());
        for op in batch.ops {
            match op {
                Op::DeletePrefix { prefix } => {
                    let end = prefix_successor(&prefix);
                    let upper = match &end {
                        Some(e) => Bound::Excluded(e.clone()),
                        None => Bound::Unbounded,
                    };
                    for item in snap.range(Bound::Included(prefix.clone()), upper, false) {
                        let (key, _) = item?;
                        out.push(Op::Delete { key });
                    }
                }
                other => out.push(other),
            }
        }
        Ok(out)
    }

    /// Moves `active` to the sealed list (if it is still the active one) and wakes the flusher.
    fn seal_active(&self, active: &Arc<Memtable>) {
        if active.is_empty() {
            return;
        }
        {
            let mut m = self.mems.write();
            if !Arc::ptr_eq(&m.active, active) {
                return;
            }
            let sealed = std::mem::replace(&mut m.active, Arc::new(Memtable::new()));
            m.sealed.push(sealed);
        }
        self.flush.notify();
        // Backpressure: bound memory by waiting for the flusher (we are the only writer now).
        self.flush.wait_below(self, self.opts.max_sealed_memtables);
    }
}

/// A replicated record must continue the log exactly.
pub(super) fn check_next(rec: &Record, last: u64) -> Result<(), EngineError> {
    if rec.lsn == last + 1 {
        Ok(())
    } else {
        Err(EngineError::OutOfSequence {
            expected_after: last,
            got: rec.lsn,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::engine::{EngineOptions, FsyncPolicy, Namespace};
    use crate::storage::batch::WriteBatch;
    use crate::wal::WalOptions;

    fn open(d: &std::path::Path, fsync: FsyncPolicy, memtable_bytes: usize) -> Namespace {
        let opts = EngineOptions {
            fsync,
            memtable_bytes,
            wal: WalOptions {
                segment_size: 256 << 10,
            },
            ..EngineOptions::default()
        };
        Namespace::open(d, "inline", opts).unwrap()
    }

    fn put(k: String) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put(k.into_bytes(), vec![7u8; 1000]);
        b
    }

    #[test]
    fn only_cheap_commits_run_inline() {
        let d = tempfile::tempdir().unwrap();
        let always = open(&d.path().join("a"), FsyncPolicy::Always, 64 << 20);
        always.write(put("first".into())).unwrap();
        assert!(
            always.inner.lead_inline(100, true).is_none(),
            "fsync in the commit path"
        );
        // A Raft step fsyncs on the log's sync thread: the policy does not keep it off the task.
        assert!(
            always.inner.lead_inline(100, false).is_some(),
            "a Raft step runs inline under fsync: always"
        );

        let ns = open(&d.path().join("i"), FsyncPolicy::Never, 1 << 20);
        // The first record creates the WAL segment: that is the blocking path's work.
        assert!(ns.inner.lead_inline(100, true).is_none(), "no segment yet");
        ns.write(put("first".into())).unwrap();
        let counted = ns.inner.metrics.inline_commits.get();
        let leader = ns
            .inner
            .lead_inline(100, true)
            .expect("idle namespace, room left");
        assert!(ns.inner.metrics.inline_commits.get() > counted, "counted");
        // While it leads, neither another inline commit nor a blocking writer may run.
        assert!(ns.inner.lead_inline(100, true).is_none(), "two leaders");
        let c = leader
            .commit(super::Request::Local(put("a".into())))
            .unwrap();
        assert_eq!(c.lsn, 2);
        assert!(
            ns.inner.lead_inline(100, true).is_some(),
            "the role was handed back"
        );
        // An unused role is handed back too (a dropped leader must not stall every writer).
        ns.write(put("b".into())).unwrap();
        // A write that would seal the memtable (1 MiB here) goes to the blocking path.
        assert!(
            ns.inner.lead_inline(600 << 10, true).is_none(),
            "a seal is due"
        );
        // A write that would roll the WAL segment (256 KiB here) too.
        assert!(
            ns.inner.lead_inline(300 << 10, true).is_none(),
            "a roll is due"
        );
        let last = ns.inner.begin_exclusive().unwrap();
        assert!(
            ns.inner.lead_inline(100, true).is_none(),
            "an exclusive holder leads"
        );
        ns.inner.end_exclusive(last);
    }

    /// Inline and blocking writers interleave: every write gets its own LSN, none is lost, and the
    /// WAL rolls and memtables seal on the blocking path while inline commits continue.
    #[test]
    fn inline_and_blocking_writers_share_one_log() {
        let d = tempfile::tempdir().unwrap();
        let ns = open(
            d.path(),
            FsyncPolicy::Interval(Duration::from_millis(2)),
            256 << 10,
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let mut lsns: Vec<u64> = rt.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..4 {
                let ns = ns.clone();
                tasks.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    for i in 0..300 {
                        let b = put(format!("async-{t}-{i}"));
                        got.push(ns.write_async(b).await.unwrap().lsn);
                    }
                    got
                }));
            }
            for t in 0..2 {
                let ns = ns.clone();
                tasks.push(tokio::spawn(async move {
                    tokio::task::spawn_blocking(move || {
                        (0..300)
                            .map(|i| ns.write(put(format!("sync-{t}-{i}"))).unwrap().lsn)
                            .collect::<Vec<_>>()
                    })
                    .await
                    .unwrap()
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        });
        lsns.sort_unstable();
        assert_eq!(lsns, (1..=1800).collect::<Vec<u64>>(), "one LSN per write");
        for t in 0..4 {
            for i in 0..300 {
                assert!(ns
                    .get(format!("async-{t}-{i}").as_bytes())
                    .unwrap()
                    .is_some());
            }
        }
        for t in 0..2 {
            for i in 0..300 {
                assert!(ns
                    .get(format!("sync-{t}-{i}").as_bytes())
                    .unwrap()
                    .is_some());
            }
        }
        assert!(
            ns.inner.wal.segments().len() > 2,
            "the WAL rolled during the run"
        );
    }

    /// The leader role held by the test (given back on a failed assertion too).
    struct Held<'a>(&'a Namespace, u64);

    impl Drop for Held<'_> {
        fn drop(&mut self) {
            self.0.inner.end_exclusive(self.1);
        }
    }

    async fn queued(ns: &Namespace, n: usize) {
        for _ in 0..2000 {
            if ns.inner.queue.lock().pending.len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("{n} writers did not queue behind the running commit: a waiter hopped to the busy blocking pool");
    }

    /// Writers that find another commit running wait on their tasks and one of them leads the next
    /// group: they finish while the only blocking-pool thread is busy (a hop would stall them).
    #[test]
    fn writers_behind_a_commit_wait_without_a_thread() {
        let d = tempfile::tempdir().unwrap();
        let ns = open(d.path(), FsyncPolicy::Never, 64 << 20);
        ns.write(put("first".into())).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(1)
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            // The one blocking thread is taken until the end of the test.
            let (unblock, blocked) = std::sync::mpsc::channel::<()>();
            let pool = tokio::task::spawn_blocking(move || blocked.recv().ok());
            // Another commit "runs": the role is held while eight writers arrive.
            let held = Held(&ns, ns.inner.begin_exclusive().unwrap());
            let writers: Vec<_> = (0..8)
                .map(|i| {
                    let ns = ns.clone();
                    tokio::spawn(async move { ns.write_async(put(format!("w{i}"))).await })
                })
                .collect();
            // Queued behind the holder (none of them could lead); a writer that went to the
            // blocking pool never gets there.
            queued(&ns, 8).await;
            // A writer that gives up is forgotten, its write still lands (it was queued).
            let gone = {
                let ns = ns.clone();
                tokio::spawn(async move { ns.write_async(put("gone".into())).await })
            };
            queued(&ns, 9).await;
            gone.abort();
            let _ = gone.await;
            drop(held);
            let mut lsns = Vec::new();
            for w in writers {
                let done = tokio::time::timeout(Duration::from_secs(10), w).await;
                let commit = done.expect("a waiter hopped to the busy blocking pool");
                lsns.push(commit.unwrap().unwrap().lsn);
            }
            lsns.sort_unstable();
            lsns.dedup();
            assert_eq!(lsns.len(), 8, "one LSN per write");
            assert!(lsns.iter().all(|&l| (2..=10).contains(&l)), "{lsns:?}");
            unblock.send(()).unwrap();
            pool.await.unwrap();
        });
        assert!(
            ns.get(b"gone").unwrap().is_some(),
            "the queued write landed"
        );
        let q = ns.inner.queue.lock();
        assert!(q.done.is_empty() && q.abandoned.is_empty(), "nothing kept");
    }
}
