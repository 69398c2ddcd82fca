//! State shared by the writer, readers and retention, behind one `Arc`.
//!
//! Lock order (never acquire in reverse): `writer` → `segments` → `pins`.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::record::FrameFormat;
use super::WalOptions;

/// A segment as known in memory. For the last (active) segment `last_lsn`/`size` are stale;
/// use [`Shared::segment_bounds`] which substitutes the live values.
#[derive(Debug, Clone)]
pub(crate) struct SegMeta {
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub size: u64,
    pub path: PathBuf,
    pub file_name: String,
}

/// The segment currently being appended to.
pub(crate) struct Active {
    pub file: Arc<File>,
    pub size: u64,
}

/// Writer-only state, serialized by the `writer` mutex.
pub(crate) struct Writer {
    pub active: Option<Active>,
    /// Reused encode buffer so `append` does not allocate per record.
    pub buf: Vec<u8>,
    /// Set when a failed write could not be rolled back; further appends are refused.
    pub poisoned: Option<String>,
    /// Frame format of the active segment; a v1 segment is never appended to (the writer rolls).
    pub format: FrameFormat,
}

/// Registry of live readers and the lowest LSN each may still need.
#[derive(Default)]
pub(crate) struct Pins {
    next_id: u64,
    by_reader: HashMap<u64, u64>,
}

impl Pins {
    /// Lowest LSN any live reader may still read (`u64::MAX` if none).
    pub fn min(&self) -> u64 {
        self.by_reader.values().copied().min().unwrap_or(u64::MAX)
    }
}

/// Everything behind `Wal`'s `Arc`.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub opts: WalOptions,
    pub writer: Mutex<Writer>,
    /// All segments, oldest first; the last one is the active segment.
    pub segments: RwLock<Vec<SegMeta>>,
    pub last_lsn: AtomicU64,
    /// Highest LSN known to be on stable storage (raised by every fsync, lowered only by truncation).
    pub durable_lsn: AtomicU64,
    /// Async notification of `durable_lsn` (WAL streams send only durable records and wait on it).
    pub durable_tx: tokio::sync::watch::Sender<u64>,
    /// Size of the active segment file, maintained by the writer for metrics/retention.
    pub active_size: AtomicU64,
    pub published: AtomicU64,
    publish_lock: Mutex<()>,
    publish_cv: Condvar,
    pub pins: Mutex<Pins>,
}

impl Shared {
    pub fn new(
        dir: PathBuf,
        opts: WalOptions,
        writer: Writer,
        segments: Vec<SegMeta>,
        last_lsn: u64,
        active_size: u64,
    ) -> Self {
        Self {
            dir,
            opts,
            writer: Mutex::new(writer),
            segments: RwLock::new(segments),
            last_lsn: AtomicU64::new(last_lsn),
            durable_lsn: AtomicU64::new(last_lsn),
            durable_tx: tokio::sync::watch::channel(last_lsn).0,
            active_size: AtomicU64::new(active_size),
            published: AtomicU64::new(last_lsn),
            publish_lock: Mutex::new(()),
            publish_cv: Condvar::new(),
            pins: Mutex::new(Pins::default()),
        }
    }

    /// (last_lsn, size) of segment `idx`, using live values for the active (last) segment.
    pub fn segment_bounds(&self, segs: &[SegMeta], idx: usize) -> (u64, u64) {
        if idx + 1 == segs.len() {
            (
                self.last_lsn.load(Ordering::Acquire),
                self.active_size.load(Ordering::Acquire),
            )
        } else {
            (segs[idx].last_lsn, segs[idx].size)
        }
    }

    /// Records that everything up to `upto` is durable and wakes async waiters.
    pub fn mark_durable(&self, upto: u64) {
        let prev = self.durable_lsn.fetch_max(upto, Ordering::AcqRel);
        if upto > prev {
            self.durable_tx.send_if_modified(|v| {
                let changed = upto > *v;
                *v = (*v).max(upto);
                changed
            });
        }
    }

    /// Lowers the published and durable LSNs to `lsn` after a truncation (the only way down).
    pub fn rewind(&self, lsn: u64) {
        self.published.fetch_min(lsn, Ordering::AcqRel);
        self.durable_lsn.fetch_min(lsn, Ordering::AcqRel);
        self.durable_tx
            .send_replace(self.durable_lsn.load(Ordering::Acquire));
    }

    /// Lowers only the published LSN (cluster mode at open: records past the committed index stay
    /// hidden from readers until the state machine applies them).
    pub fn unpublish(&self, lsn: u64) {
        self.published.fetch_min(lsn, Ordering::AcqRel);
    }

    /// Raises the published LSN (never lowers it, never past `last_lsn`) and wakes waiters.
    pub fn publish(&self, lsn: u64) {
        let last = self.last_lsn.load(Ordering::Acquire);
        let lsn = if lsn > last {
            tracing::warn!(lsn, last, "publish beyond last appended LSN; clamping");
            last
        } else {
            lsn
        };
        let prev = self.published.fetch_max(lsn, Ordering::AcqRel);
        if lsn > prev {
            // Taking the lock orders this notify after any waiter's check-then-wait.
            let _g = self.publish_lock.lock();
            self.publish_cv.notify_all();
        }
    }

    /// Blocks until `published > after` or `timeout` elapses; returns the published LSN.
    pub fn wait_published(&self, after: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now().checked_add(timeout);
        let mut g = self.publish_lock.lock();
        loop {
            let p = self.published.load(Ordering::Acquire);
            if p > after {
                return p;
            }
            match deadline {
                Some(d) => {
                    if self.publish_cv.wait_until(&mut g, d).timed_out() {
                        return self.published.load(Ordering::Acquire);
                    }
                }
                None => self.publish_cv.wait(&mut g),
            }
        }
    }

    /// Registers a reader needing LSNs `>= lsn`; returns its pin id.
    pub fn pin(&self, lsn: u64) -> u64 {
        let mut p = self.pins.lock();
        let id = p.next_id;
        p.next_id += 1;
        p.by_reader.insert(id, lsn);
        id
    }

    /// Moves a reader's pin forward (it no longer needs LSNs below `lsn`).
    pub fn advance_pin(&self, id: u64, lsn: u64) {
        if let Some(v) = self.pins.lock().by_reader.get_mut(&id) {
            *v = (*v).max(lsn);
        }
    }

    /// Drops a reader's pin.
    pub fn unpin(&self, id: u64) {
        self.pins.lock().by_reader.remove(&id);
    }
}
