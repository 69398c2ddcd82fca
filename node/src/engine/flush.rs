//! Background work of a namespace: flush sealed memtables into the B+Tree, apply WAL retention, and the
//! periodic fsync of the `interval` policy. Threads hold only a `Weak` and stop when the namespace drops.

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{EngineError, FsyncPolicy, Inner};
use crate::memtable::Memtable;

/// How long the flusher sleeps without a notification (sealing and shutdown always notify).
const IDLE_SAFETY_WAKE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct FlushState {
    shutdown: bool,
    /// Bumped after each completed flush, so waiters can tell progress from spurious wakeups.
    flushed: u64,
    last_error: Option<String>,
    /// Records were published since the periodic syncer last looked (`interval` policy only): the
    /// syncer sleeps on this instead of a timer, so an idle namespace costs no wake-ups.
    dirty: bool,
}

/// Signals between writers, the flusher and `flush()` callers.
#[derive(Default)]
pub(crate) struct FlushControl {
    state: Mutex<FlushState>,
    cv: Condvar,
    /// The periodic syncer's own wake-up: a record marked dirty must not wake the flusher too.
    sync_cv: Condvar,
    /// Serializes B+Tree write transactions (flusher vs. shutdown flush).
    pub(crate) tree_writer: Mutex<()>,
}

impl FlushControl {
    pub fn notify(&self) {
        let _s = self.state.lock();
        self.cv.notify_all();
    }

    /// Wakes the periodic syncer: something was appended that is not yet fsynced.
    pub fn mark_dirty(&self) {
        let mut s = self.state.lock();
        if !s.dirty {
            s.dirty = true;
            self.sync_cv.notify_one();
        }
    }

    /// Blocks while more than `max` memtables are sealed (writer backpressure).
    pub fn wait_below(&self, inner: &Inner, max: usize) {
        let mut s = self.state.lock();
        while inner.mems.read().sealed.len() > max && !s.shutdown {
            self.cv.wait_for(&mut s, Duration::from_millis(100));
        }
    }

    /// Blocks until no sealed memtable remains, or reports the flusher's last error.
    pub fn wait_drained(&self, inner: &Inner) -> Result<(), EngineError> {
        let mut s = self.state.lock();
        loop {
            if inner.mems.read().sealed.is_empty() {
                return Ok(());
            }
            if let Some(e) = s.last_error.clone() {
                return Err(EngineError::FlushFailed(e.to_string()));
            }
            if s.shutdown {
                return Err(EngineError::Closed);
            }
            self.cv.wait_for(&mut s, Duration::from_millis(100));
        }
    }
}

impl Inner {
    /// Writes the oldest sealed memtable into the B+Tree, then drops it and applies retention.
    pub(crate) fn flush_oldest(&self) -> Result<bool, EngineError> {
        let _writer = self.flush.tree_writer.lock();
        let Some(mem) = self.mems.read().sealed.first().cloned() else {
            return Ok(false);
        };
        // The checkpoint must never get ahead of the durable WAL, whatever the fsync policy.
        self.wal.sync()?;
        write_tree(self, &mem)?;
        // Retention runs before the memtable leaves `sealed`, so `flush()` returning means the
        // covered segments are gone too (callers and tests rely on it).
        let retained = self.wal.retain(mem.max_lsn(), &self.opts.retention);
        {
            let mut m = self.mems.write();
            if m.sealed.first().is_some_and(|f| Arc::ptr_eq(f, &mem)) {
                m.sealed.remove(0);
            }
        }
        self.metrics.flushes.inc();
        self.metrics.checkpoint.set(mem.max_lsn() as i64);
        {
            let mut s = self.flush.state.lock();
            s.flushed += 1;
            s.last_error = None;
            self.flush.cv.notify_all();
        }
        self.metrics.segments_deleted.inc_by(retained? as u64);
        Ok(true)
    }
}

fn write_tree(inner: &Inner, mem: &Memtable) -> Result<(), EngineError> {
    let started = Instant::now();
    let mut txn = inner.tree.begin_write()?;
    let mut n = 0u64;
    // The memtable comes out in key order: into an empty tree it is built bottom-up.
    let mut w = txn.sorted_writer();
    let bulk = w.is_bulk();
    mem.for_each_latest(|key, value| -> Result<(), EngineError> {
        match value {
            Some(v) => w.put(key, v)?,
            None => {
                w.delete(key)?;
            }
        }
        n += 1;
        Ok(())
    })?;
    w.finish()?;
    txn.set_checkpoint_lsn(mem.max_lsn());
    txn.commit()?;
    tracing::debug!(namespace = %inner.name, keys = n, checkpoint = mem.max_lsn(), bulk,
        ms = started.elapsed().as_millis() as u64, "memtable flushed");
    Ok(())
}

/// The namespace's background threads; dropping this stops and joins them.
pub(crate) struct Threads {
    inner: Weak<Inner>,
    handles: Vec<JoinHandle<()>>,
}

impl Threads {
    pub fn start(inner: &Arc<Inner>) -> Threads {
        let mut handles = Vec::new();
        let weak = Arc::downgrade(inner);
        let w = weak.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("flush-{}", inner.name))
            .spawn(move || flusher(w));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => tracing::error!(error = %e, "cannot start flush thread; flushes run inline"),
        }
        if let FsyncPolicy::Interval(period) = inner.opts.fsync {
            let w = weak.clone();
            if let Ok(h) = std::thread::Builder::new()
                .name(format!("fsync-{}", inner.name))
                .spawn(move || syncer(w, period))
            {
                handles.push(h);
            }
        }
        Threads {
            inner: weak,
            handles,
        }
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            let mut s = inner.flush.state.lock();
            s.shutdown = true;
            inner.flush.cv.notify_all();
            inner.flush.sync_cv.notify_all();
            drop(s);
            // Last chance to make acknowledged-but-unsynced writes durable (interval/never).
            if let Err(e) = inner.wal.sync() {
                tracing::warn!(namespace = %inner.name, error = %e, "final WAL sync failed");
            }
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn flusher(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        {
            let mut s = inner.flush.state.lock();
            if s.shutdown {
                return;
            }
            if inner.mems.read().sealed.is_empty() {
                // Sealing and shutdown notify; the timeout is only a safety net, long enough
                // that an idle namespace does not wake.
                inner.flush.cv.wait_for(&mut s, IDLE_SAFETY_WAKE);
                continue;
            }
        }
        if let Err(e) = inner.flush_oldest() {
            tracing::error!(namespace = %inner.name, error = %e, "flush failed; will retry");
            let mut s = inner.flush.state.lock();
            s.last_error = Some(e.to_string());
            inner.flush.cv.notify_all();
            inner.flush.cv.wait_for(&mut s, Duration::from_secs(1));
        }
    }
}

/// The `interval` policy's fsync: sleeps until something is appended, then syncs it with one
/// `fdatasync` — at once when the last sync is more than `period` old (a lone record waits for
/// nothing to gather), else once `period` has passed since it (writes arriving meanwhile share the
/// sync). So at most one sync per `period`, and no record waits longer than `period` for one. Never
/// wakes while the namespace is idle.
fn syncer(weak: Weak<Inner>, period: Duration) {
    let mut last_sync: Option<Instant> = None;
    loop {
        {
            let Some(inner) = weak.upgrade() else { return };
            let mut s = inner.flush.state.lock();
            while !s.dirty && !s.shutdown {
                inner.flush.sync_cv.wait(&mut s);
            }
            if s.shutdown {
                return;
            }
            s.dirty = false;
        }
        if let Some(wait) =
            last_sync.and_then(|t| (t + period).checked_duration_since(Instant::now()))
        {
            std::thread::sleep(wait);
        }
        let Some(inner) = weak.upgrade() else { return };
        if inner.flush.state.lock().shutdown {
            return;
        }
        if inner.wal.durable_lsn() >= inner.wal.last_lsn() {
            continue; // a group commit, a flush or a stream already made it durable
        }
        let t = Instant::now();
        last_sync = Some(t);
        if let Err(e) = inner.wal.sync() {
            tracing::error!(namespace = %inner.name, error = %e, "periodic WAL fsync failed");
        } else {
            inner.metrics.fsyncs.inc();
            inner
                .metrics
                .fsync_seconds
                .observe(t.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::engine::{EngineOptions, FsyncPolicy, Namespace};
    use crate::storage::batch::WriteBatch;

    fn fsyncs(ns: &Namespace) -> u64 {
        ns.inner.metrics.fsyncs.get()
    }

    #[test]
    fn the_interval_syncer_syncs_after_writes_and_sleeps_while_idle() {
        let d = tempfile::tempdir().unwrap();
        let opts = EngineOptions {
            fsync: FsyncPolicy::Interval(Duration::from_millis(5)),
            ..EngineOptions::default()
        };
        // A name of its own: the fsync counter is a process-wide metric labelled by namespace.
        let ns = Namespace::open(d.path(), "interval-syncer-idle", opts).unwrap();
        // Idle: no fsync at all, however many periods pass.
        let idle = fsyncs(&ns);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(fsyncs(&ns), idle, "an idle namespace fsynced");
        for round in 0..3 {
            let mut b = WriteBatch::new();
            b.put(format!("k{round}").into_bytes(), b"v".to_vec());
            let lsn = ns.write(b).unwrap().lsn;
            let t = Instant::now();
            while ns.durable_lsn() < lsn {
                assert!(t.elapsed() < Duration::from_secs(5), "write never fsynced");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // One fsync per write burst, none while idle again.
        std::thread::sleep(Duration::from_millis(30));
        let after = fsyncs(&ns);
        assert!((idle + 1..=idle + 3).contains(&after), "{idle} -> {after}");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(fsyncs(&ns), after, "fsynced while idle");
    }

    /// Voluntary context switches of this process's thread named `comm`.
    fn switches_of(comm: &str) -> u64 {
        let mut found = None;
        for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if name.trim() == comm {
                let status = std::fs::read_to_string(t.path().join("status")).unwrap();
                let n = status
                    .lines()
                    .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                    .and_then(|v| v.trim().parse().ok());
                assert!(found.is_none(), "two threads named {comm}");
                found = n;
            }
        }
        found.unwrap_or_else(|| panic!("no thread named {comm}"))
    }

    /// Writes spaced wider than the fsync period wake the syncer each time, never the flusher
    /// (a relayer at a low rate paid one flusher wake-up per record).
    #[test]
    fn marking_records_dirty_does_not_wake_the_flusher() {
        let d = tempfile::tempdir().unwrap();
        let opts = EngineOptions {
            fsync: FsyncPolicy::Interval(Duration::from_millis(1)),
            ..EngineOptions::default()
        };
        let ns = Namespace::open(d.path(), "nowake", opts).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let (flusher, syncer) = (switches_of("flush-nowake"), switches_of("fsync-nowake"));
        for i in 0..40 {
            let mut b = WriteBatch::new();
            b.put(format!("k{i}").into_bytes(), b"v".to_vec());
            ns.write(b).unwrap();
            std::thread::sleep(Duration::from_millis(4));
        }
        let syncer = switches_of("fsync-nowake") - syncer;
        let flusher = switches_of("flush-nowake") - flusher;
        assert!(
            syncer >= 40,
            "the syncer woke {syncer} times for 40 spaced writes"
        );
        assert!(
            flusher < 5,
            "the flusher woke {flusher} times for 40 writes"
        );
    }

    /// A write after a quiet spell is synced at once, not one period later; writes that follow
    /// within the period share one later sync.
    #[test]
    fn the_interval_syncer_syncs_a_lone_write_at_once() {
        let d = tempfile::tempdir().unwrap();
        let period = Duration::from_secs(2);
        let opts = EngineOptions {
            fsync: FsyncPolicy::Interval(period),
            ..EngineOptions::default()
        };
        let ns = Namespace::open(d.path(), "interval-syncer-lone", opts).unwrap();
        let write = |k: &str| {
            let mut b = WriteBatch::new();
            b.put(k.as_bytes().to_vec(), b"v".to_vec());
            ns.write(b).unwrap().lsn
        };
        let durable_after = |lsn: u64| {
            let t = Instant::now();
            while ns.durable_lsn() < lsn {
                assert!(t.elapsed() < Duration::from_secs(10), "never fsynced");
                std::thread::sleep(Duration::from_millis(1));
            }
            t.elapsed()
        };
        let before = fsyncs(&ns);
        let first = durable_after(write("lone"));
        assert!(
            first < period / 2,
            "a lone write waited {first:?} (period {period:?})"
        );
        // Within the period of that sync: these wait for the next one, and share it.
        let mut last = 0;
        for i in 0..20 {
            last = write(&format!("k{i}"));
        }
        let rest = durable_after(last);
        assert!(
            rest > period / 4,
            "synced again after {rest:?}, within the period"
        );
        assert_eq!(
            fsyncs(&ns) - before,
            2,
            "one sync for the lone write, one for the burst"
        );
    }
}
