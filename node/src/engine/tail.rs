//! The one WAL tailer: every consumer that follows a namespace's log (replication streaming, the
//! change feed behind SSE `/watch`, and through it ZeroMQ notifications) reads it through [`Tail`].
//!
//! One policy for all of them:
//! - **Batching**: [`Tail::read`] returns everything visible now, bounded by [`TailLimits`]
//!   (records and bytes); an empty batch means "caught up". A tail that keeps up (an open reader, at
//!   most `INLINE_RECORDS` pending) reads on the calling task: two thread hops to the blocking pool
//!   per batch cost more CPU than the `pread` of a few records from the page cache; a tail catching
//!   up (or opening its reader) reads on a blocking thread.
//! - **Recent records**: a tail that keeps up takes the records from the namespace's in-memory cache
//!   of the last commits (`recent.rs`): the same `Bytes` for every tail, no WAL read at all.
//! - **Wake-ups**: [`Tail::changed`] waits on the namespace's publish notification (no polling, no
//!   sleeps); the seen-mark is taken *before* each read, so a publish during a read is never missed.
//! - **Trimmed segments**: an LSN retention (or a snapshot install) removed comes back as
//!   [`TailError::Trimmed`]; each caller maps it (replication: snapshot bootstrap; feed: reported gap).
//! - **Reader and pins**: the `WalReader` (and its retention pin) is kept across wake-ups, so a caught-up
//!   tail pins only the segment being written; it is reopened at the next LSN after a failed read.
//! - **Durable only** ([`Tail::durable_only`], replication): records are returned only up to the
//!   namespace's durable LSN, so nothing leaves the node that a crash could take back. Under
//!   `fsync: never` the tail asks for one shared fsync when it has undurable records to send; under
//!   `interval` it waits for the periodic fsync; under `always` durable = visible.
//! - **Truncation**: when a follower rolls back its WAL (history divergence), every tail created before
//!   ends with [`TailError::Truncated`]; records it had returned may have been discarded.

use thiserror::Error;
use tokio::sync::watch;

use super::{EngineError, FsyncPolicy, Namespace};
use crate::wal::{Record, WalError, WalReader};

/// At most this many pending records are read on the caller's (async) thread; more go to the
/// blocking pool. A follower that keeps up reads a few just-written records, which `pread` copies from
/// the page cache in microseconds; catching up from older segments may touch the disk.
const INLINE_RECORDS: u64 = 64;

/// Bounds of one batch returned by [`Tail::read`].
#[derive(Debug, Clone, Copy)]
pub struct TailLimits {
    pub max_records: usize,
    pub max_bytes: usize,
}

impl Default for TailLimits {
    fn default() -> Self {
        Self {
            max_records: 512,
            max_bytes: 1 << 20,
        }
    }
}

/// Why a tail could not read.
#[derive(Debug, Error)]
pub enum TailError {
    /// The LSN the tail needs was removed (WAL retention, or replaced by an installed snapshot).
    #[error("LSN {requested} is no longer in the WAL (oldest available is {oldest})")]
    Trimmed { requested: u64, oldest: u64 },
    #[error("WAL read failed: {0}")]
    Read(EngineError),
    #[error("WAL read task failed: {0}")]
    Task(String),
    /// The namespace discarded records after an LSN (history divergence) while this tail followed it.
    #[error("the WAL was truncated (history rolled back) while being followed")]
    Truncated,
}

impl From<EngineError> for TailError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Wal(WalError::Trimmed { requested, oldest }) => {
                TailError::Trimmed { requested, oldest }
            }
            other => TailError::Read(other),
        }
    }
}

/// Follows one namespace's WAL from an LSN on; see the module docs for the policy.
pub struct Tail {
    ns: Namespace,
    next_lsn: u64,
    reader: Option<WalReader>,
    visible: watch::Receiver<u64>,
    limits: TailLimits,
    /// `Some` for a durable-only tail: the WAL's durable-LSN notifications.
    durable: Option<watch::Receiver<u64>>,
    /// The namespace's truncation count when the tail was created.
    truncations: u64,
}

impl Namespace {
    /// A tailer of this namespace's WAL from `from_lsn` (inclusive; 0 means 1) with default limits.
    pub fn tail(&self, from_lsn: u64) -> Tail {
        self.tail_with(from_lsn, TailLimits::default())
    }

    /// A tailer with explicit batch bounds.
    pub fn tail_with(&self, from_lsn: u64, limits: TailLimits) -> Tail {
        Tail {
            visible: self.subscribe(),
            ns: self.clone(),
            next_lsn: from_lsn.max(1),
            reader: None,
            limits,
            durable: None,
            truncations: self.truncations(),
        }
    }
}

impl Tail {
    /// Returns only durable records from now on (replication: see the module docs).
    pub fn durable_only(mut self) -> Tail {
        self.durable = Some(self.ns.subscribe_durable());
        self
    }

    /// Highest LSN this tail may return now.
    fn limit(&self) -> u64 {
        if self.durable.is_some() {
            self.ns.durable_lsn()
        } else {
            self.ns.latest_lsn()
        }
    }

    fn truncated(&self) -> bool {
        self.ns.truncations() != self.truncations
    }

    /// The LSN the next record returned will have.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// The namespace being tailed.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// Opens the reader now, so a trimmed start LSN is reported before the first read.
    pub async fn open(&mut self) -> Result<(), TailError> {
        if self.reader.is_some() {
            return Ok(());
        }
        let (ns, from) = (self.ns.clone(), self.next_lsn);
        let reader = tokio::task::spawn_blocking(move || ns.wal_reader(from))
            .await
            .map_err(|e| TailError::Task(e.to_string()))??;
        self.reader = Some(reader);
        Ok(())
    }

    /// Every record visible now from `next_lsn` on, up to the limits; empty when caught up.
    pub async fn read(&mut self) -> Result<Vec<Record>, TailError> {
        // Seen-mark before reading: a publish during the read makes `changed` return at once.
        self.visible.borrow_and_update();
        if let Some(d) = self.durable.as_mut() {
            d.borrow_and_update();
        }
        if self.truncated() {
            return Err(TailError::Truncated);
        }
        let upto = self.limit();
        if self.reader.is_some() && upto < self.next_lsn {
            return Ok(Vec::new());
        }
        if let Some(reader) = self.reader.as_mut() {
            if let Some(records) = self.ns.inner.recent.get(self.next_lsn, upto, self.limits) {
                if let Some(last) = records.last() {
                    // Records a truncation may have discarded are never handed out.
                    if self.ns.truncations() != self.truncations {
                        return Err(TailError::Truncated);
                    }
                    self.next_lsn = last.lsn + 1;
                    reader.skip_to(self.next_lsn);
                    return Ok(records);
                }
            }
        }
        let (ns, reader, next, limits) = (
            self.ns.clone(),
            self.reader.take(),
            self.next_lsn,
            self.limits,
        );
        let inline = reader.is_some() && upto - next < INLINE_RECORDS;
        let (reader, records, failure) = if inline {
            // The few records just published are in the page cache (one `pread`): a hop to the
            // blocking pool and back would cost more than the read (see the module docs).
            read_batch(&ns, reader, next, upto, limits)
        } else {
            tokio::task::spawn_blocking(move || read_batch(&ns, reader, next, upto, limits))
                .await
                .map_err(|e| TailError::Task(e.to_string()))?
        };
        // Records read while a truncation ran may be gone: never hand them out.
        if self.truncated() {
            return Err(TailError::Truncated);
        }
        if let Some(last) = records.last() {
            self.next_lsn = last.lsn + 1;
        }
        self.reader = reader;
        match failure {
            // Hand over what was read; the failure comes back on the next call (reader reopened).
            Some(_) if !records.is_empty() => Ok(records),
            Some(e) => Err(e),
            None => Ok(records),
        }
    }

    /// Waits until a record at or past `next_lsn` is visible; `false` when the namespace is gone.
    /// Cancel-safe (use it in `select!` with a heartbeat or a cancellation token).
    pub async fn changed(&mut self) -> bool {
        loop {
            if self.truncated() || self.limit() >= self.next_lsn {
                return true;
            }
            let Some(durable) = self.durable.as_mut() else {
                if self.visible.changed().await.is_err() {
                    return false;
                }
                continue;
            };
            if self.ns.latest_lsn() >= self.next_lsn && self.ns.fsync_policy() == FsyncPolicy::Never
            {
                // Nothing else will fsync: ask for one (shared by every stream and record pending).
                let ns = self.ns.clone();
                match tokio::task::spawn_blocking(move || ns.make_durable()).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => {
                        tracing::warn!(namespace = self.ns.name(), error = %e,
                            "fsync for streaming failed");
                    }
                    Err(e) => tracing::warn!(error = %e, "fsync task failed"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            tokio::select! {
                r = self.visible.changed() => if r.is_err() { return false; },
                r = durable.changed() => if r.is_err() { return false; },
            }
        }
    }

    /// The next non-empty batch, waiting for one; `Ok(None)` when the namespace is gone.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Record>>, TailError> {
        loop {
            let records = self.read().await?;
            if !records.is_empty() {
                return Ok(Some(records));
            }
            if !self.changed().await {
                return Ok(None);
            }
        }
    }
}

/// Reads one bounded batch on a blocking thread. Returns the reader to keep (none after a failure),
/// the records read and the failure that stopped the batch, if any.
fn read_batch(
    ns: &Namespace,
    reader: Option<WalReader>,
    next_lsn: u64,
    upto: u64,
    limits: TailLimits,
) -> (Option<WalReader>, Vec<Record>, Option<TailError>) {
    let mut reader = match reader {
        Some(r) => r,
        None => match ns.wal_reader(next_lsn) {
            Ok(r) => r,
            Err(e) => return (None, Vec::new(), Some(e.into())),
        },
    };
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while out.len() < limits.max_records && bytes < limits.max_bytes && reader.next_lsn() <= upto {
        match reader.next_record() {
            Ok(Some(r)) if r.lsn < next_lsn => continue,
            Ok(Some(r)) => {
                bytes += r.payload.len() + 32;
                out.push(r);
            }
            Ok(None) => break,
            Err(e) => return (None, out, Some(EngineError::from(e).into())),
        }
    }
    (Some(reader), out, None)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::models::{kv, testutil::namespace};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_history_then_wakes_on_publish() {
        let (_d, ns) = namespace();
        for i in 0..5u8 {
            kv::put(&ns, &[b'k', i], b"v").unwrap();
        }
        let mut tail = ns.tail(2);
        let first = tail.read().await.unwrap();
        assert_eq!(
            first.iter().map(|r| r.lsn).collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
        assert!(tail.read().await.unwrap().is_empty());
        let ns2 = ns.clone();
        tokio::task::spawn_blocking(move || kv::put(&ns2, b"z", b"1").unwrap());
        let next = tokio::time::timeout(Duration::from_secs(5), tail.next_batch())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(next.iter().map(|r| r.lsn).collect::<Vec<_>>(), vec![6]);
        assert_eq!(tail.next_lsn(), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durable_tails_return_only_fsynced_records() {
        use crate::engine::{EngineOptions, FsyncPolicy, Namespace};
        let d = tempfile::tempdir().unwrap();
        // `interval` with a period that never comes during the test: the first write is synced at
        // once, nothing after it is durable on its own.
        let opts = EngineOptions {
            fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
            ..EngineOptions::default()
        };
        let ns = Namespace::open(&d.path().join("i"), "i", opts).unwrap();
        kv::put(&ns, b"first", b"0").unwrap();
        let t = std::time::Instant::now();
        while ns.durable_lsn() < 1 {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the first write never synced"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        kv::put(&ns, b"a", b"1").unwrap();
        assert_eq!((ns.latest_lsn(), ns.durable_lsn()), (2, 1));
        let mut durable = ns.tail(2).durable_only();
        let mut visible = ns.tail(2);
        assert_eq!(visible.read().await.unwrap().len(), 1);
        assert!(
            durable.read().await.unwrap().is_empty(),
            "streamed before fsync"
        );
        let ns2 = ns.clone();
        tokio::task::spawn_blocking(move || ns2.make_durable().unwrap());
        let got = tokio::time::timeout(Duration::from_secs(5), durable.next_batch())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 1);
        drop((durable, visible));
        // Dropping joins the fsync thread, which sleeps a whole period: leak it instead.
        std::mem::forget(ns);

        // `never`: the tail itself asks for the (one, shared) fsync.
        let opts = EngineOptions {
            fsync: FsyncPolicy::Never,
            ..EngineOptions::default()
        };
        let ns = Namespace::open(&d.path().join("n"), "n", opts).unwrap();
        for i in 0..5u8 {
            kv::put(&ns, &[b'k', i], b"v").unwrap();
        }
        assert_eq!(ns.durable_lsn(), 0);
        let mut durable = ns.tail(1).durable_only();
        let got = tokio::time::timeout(Duration::from_secs(5), durable.next_batch())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            got.len(),
            5,
            "one fsync made every pending record streamable"
        );
        assert_eq!(ns.durable_lsn(), 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn limits_bound_a_batch() {
        let (_d, ns) = namespace();
        for i in 0..10u8 {
            kv::put(&ns, &[b'k', i], b"v").unwrap();
        }
        let limits = super::TailLimits {
            max_records: 3,
            max_bytes: usize::MAX,
        };
        let mut tail = ns.tail_with(1, limits);
        let mut sizes = Vec::new();
        loop {
            let b = tail.read().await.unwrap();
            if b.is_empty() {
                break;
            }
            sizes.push(b.len());
        }
        assert_eq!(sizes, vec![3, 3, 3, 1]);
    }
}
