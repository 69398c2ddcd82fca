//! The namespace engine: an isolated database of one WAL, memtables and one B+Tree.
//!
//! Write path: batch → (group commit leader) WAL append → memtable → fsync per policy → publish LSN.
//! Read path: memtables newest-first, then the B+Tree, at one visible LSN. Background: flush sealed
//! memtables into the B+Tree (checkpoint = their last LSN), then let WAL retention drop covered segments.

mod cluster;
pub mod epoch;
mod flush;
mod install;
mod lock;
mod options;
mod read;
mod recent;
mod recovery;
mod role;
mod tail;
mod truncate;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};
use thiserror::Error;

use crate::btree::{BTree, BTreeError, TreeStats};
use crate::memtable::Memtable;
use crate::storage::batch::{DecodeError, WriteBatch};
use crate::storage::hlc::Hlc;
use crate::wal::{Record, SegmentInfo, Wal, WalError, WalReader};

pub use cluster::{Applied, Proposer};
pub use epoch::{EpochEntry, EpochError};
pub use lock::DirLock;
pub use options::{EngineOptions, FsyncPolicy};
pub use read::{Snapshot, SnapshotIter};
pub use role::Role;
pub use tail::{Tail, TailError, TailLimits};

/// Why an engine operation failed.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Tree(#[from] BTreeError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid WAL payload: {0}")]
    Decode(#[from] DecodeError),
    #[error("invalid namespace name {0:?}: use 1-64 characters of [A-Za-z0-9_.-], not starting with '.'")]
    InvalidName(String),
    #[error("namespace {0} is already open in another process (lock held on its directory)")]
    Locked(String),
    #[error("namespace {name} refuses writes after a storage failure: {reason}")]
    Poisoned { name: String, reason: String },
    #[error("namespace store is inconsistent: {0}")]
    Corrupt(String),
    /// The background flush of memtables into the B+Tree keeps failing (the cause is in the message).
    #[error("flush failed: {0}")]
    FlushFailed(String),
    /// The source of a snapshot being installed failed (network, upstream); nothing was installed.
    #[error("snapshot transfer failed: {0}")]
    Transfer(String),
    #[error("replicated record LSN {got} does not follow the local LSN {expected_after}")]
    OutOfSequence { expected_after: u64, got: u64 },
    /// Cluster mode: an applied record cannot be truncated (Raft only cuts uncommitted entries).
    #[error("cannot truncate after LSN {lsn}: records up to LSN {applied} are already applied")]
    TruncateApplied { lsn: u64, applied: u64 },
    /// Cluster mode: this member cannot commit the write (not the leader, or no leader now).
    #[error("namespace {name}: {reason}")]
    NotLeader { name: String, reason: String },
    /// A local write on a namespace this node follows: its records come only from the upstream.
    #[error(
        "namespace {name} follows an upstream here and refuses local writes; write to its owner"
    )]
    Follower { name: String },
    #[error("namespace is closed")]
    Closed,
    /// Cluster mode: a single hub's data cannot become this member's Raft log (see the message).
    #[error("{0}")]
    Conversion(String),
    #[error(transparent)]
    Epoch(#[from] EpochError),
    /// Rolling back to `lsn` is impossible: the B+Tree already holds records up to `checkpoint`.
    #[error(
        "cannot truncate after LSN {lsn}: the B+Tree checkpoint is already at LSN {checkpoint}"
    )]
    TruncateBelowCheckpoint { lsn: u64, checkpoint: u64 },
}

/// Where a committed write landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub lsn: u64,
    pub hlc: u64,
}

/// Point-in-time figures for `inspect`, `/stats` and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NamespaceStats {
    pub name: String,
    pub lsn: u64,
    pub last_hlc: u64,
    pub checkpoint_lsn: u64,
    pub memtable_bytes: u64,
    pub sealed_memtables: usize,
    pub wal_first_lsn: Option<u64>,
    pub wal_segments: Vec<SegmentInfo>,
    pub tree: TreeStats,
    pub poisoned: Option<String>,
    /// Set once a read found a damaged page: the first failure (file and page). Reads of
    /// damaged pages fail; everything else is still served.
    pub degraded: Option<String>,
    /// Checksum failures detected on reads since the namespace was opened.
    pub checksum_failures: u64,
    /// Epoch of the last record, and the epoch history (see `epoch.rs`).
    pub epoch: u64,
    pub epoch_history: Vec<EpochEntry>,
}

/// Per-namespace state of the models layer that must not be process-wide: a commit of one
/// namespace's LOB never waits for another namespace's.
#[derive(Default)]
pub(crate) struct ModelSync {
    /// Serialises read-manifest-then-replace commits (see `models::lob`).
    commit: Mutex<()>,
    /// Last version handed out by [`Namespace::next_version`].
    last_version: AtomicU64,
    /// Versions of LOB uploads in progress on this node ([`Namespace::begin_lob_version`]).
    lob_in_flight: Mutex<std::collections::BTreeSet<u64>>,
}

/// A LOB upload's version, registered as in flight until dropped: orphan collection never takes
/// the chunks of an upload still running on this node.
pub struct LobVersion {
    ns: Namespace,
    version: u64,
}

impl LobVersion {
    pub fn get(&self) -> u64 {
        self.version
    }
}

impl Drop for LobVersion {
    fn drop(&mut self) {
        self.ns
            .inner
            .models
            .lob_in_flight
            .lock()
            .remove(&self.version);
    }
}

struct MemState {
    active: Arc<Memtable>,
    /// Oldest first; flushed in this order.
    sealed: Vec<Arc<Memtable>>,
}

pub(crate) struct Inner {
    name: String,
    dir: PathBuf,
    opts: EngineOptions,
    wal: Wal,
    tree: BTree,
    hlc: Hlc,
    mems: RwLock<MemState>,
    /// Highest LSN readers may see: durable per policy and fully applied.
    visible: AtomicU64,
    last_hlc: AtomicU64,
    queue: Mutex<write::Queue>,
    queue_cv: Condvar,
    /// Wakes tasks waiting in `Inner::submit_async` when the leader role is given back.
    released: tokio::sync::Notify,
    flush: flush::FlushControl,
    poisoned: Mutex<Option<String>>,
    lsn_tx: tokio::sync::watch::Sender<u64>,
    models: ModelSync,
    /// Epoch history, the owner's write epoch, truncation count (see `epoch.rs`).
    epochs: epoch::Epochs,
    metrics: crate::engine::write::NsMetrics,
    /// The last committed records, for tails that keep up (`recent.rs`).
    recent: recent::Recent,
    _lock: DirLock,
}

/// An open namespace. Clones share it; background threads stop when the last clone drops.
#[derive(Clone)]
pub struct Namespace {
    // Declared first so it drops first: it stops the threads while `inner` is still alive.
    _threads: Arc<flush::Threads>,
    inner: Arc<Inner>,
    role: Role,
    /// Cluster mode: where `write` sends batches (set once the Raft group runs).
    proposer: Arc<std::sync::OnceLock<Arc<dyn Proposer>>>,
    /// Cluster mode: keeps the WAL segments of the Raft log not purged yet (moved by
    /// `raft_release_log` once a snapshot covers them).
    raft_pin: Option<u64>,
    /// The archive's retention pin (`hold_wal_for_archive`); lives as long as the WAL.
    archive_pin: Option<u64>,
}

/// Checks a namespace name is safe as a directory name and a metrics label: the one rule, written
/// once in the config contract (`unisondb_config::validate_namespace`).
pub fn validate_name(name: &str) -> Result<(), EngineError> {
    unisondb_config::validate_namespace(name)
        .map_err(|_| EngineError::InvalidName(name.to_string()))
}

impl Namespace {
    /// Opens (creating if needed) the namespace stored in `dir`, recovering from the WAL, as its owner.
    pub fn open(dir: &Path, name: &str, opts: EngineOptions) -> Result<Namespace, EngineError> {
        Namespace::open_as(dir, name, opts, Role::Owner)
    }

    /// Opens the namespace with the part this node plays for it: a [`Role::Follower`] refuses local
    /// writes so its WAL stays a copy of the upstream's.
    pub fn open_as(
        dir: &Path,
        name: &str,
        opts: EngineOptions,
        role: Role,
    ) -> Result<Namespace, EngineError> {
        validate_name(name)?;
        let inner = recovery::open(dir, name, opts, None)?;
        Namespace::start(inner, role)
    }

    /// Starts the background threads of a recovered namespace.
    fn start(inner: Inner, role: Role) -> Result<Namespace, EngineError> {
        let name = inner.name.clone();
        let name = name.as_str();
        if role.owns() {
            // Every start of an owner may continue a state others did not see: a new epoch.
            let epoch = inner
                .epochs
                .begin_owner_epoch(crate::storage::hlc::wall_ms());
            tracing::info!(
                namespace = name,
                epoch,
                "owner opened the namespace: new epoch"
            );
        }
        let inner = Arc::new(inner);
        // Pinned before the flush thread exists: no retention pass can run before the archiver
        // learns from the store how far it got.
        let archive_pin = inner.opts.hold_wal_for_archive.then(|| inner.wal.pin(0));
        let raft_pin = (role == Role::Member).then(|| inner.wal.pin(0));
        let threads = flush::Threads::start(&inner);
        Ok(Namespace {
            inner,
            _threads: Arc::new(threads),
            role,
            proposer: Default::default(),
            raft_pin,
            archive_pin,
        })
    }

    /// Whether this node owns the namespace or follows an upstream for it.
    pub fn role(&self) -> Role {
        self.role
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Commits a batch atomically; returns once durable per the fsync policy. A follower refuses
    /// with [`EngineError::Follower`] (see [`Role`]).
    pub fn write(&self, batch: WriteBatch) -> Result<Commit, EngineError> {
        if self.role == Role::Member {
            return self.propose(batch);
        }
        if !self.role.owns() {
            return Err(EngineError::Follower {
                name: self.inner.name.clone(),
            });
        }
        self.inner.submit(write::Request::Local(batch))
    }

    /// [`Namespace::write`] for async callers (HTTP, RESP): see `Inner::submit_async` (on a task
    /// when the commit is only `pwrite`s and memtable inserts, else on a blocking thread).
    pub async fn write_async(&self, batch: WriteBatch) -> Result<Commit, EngineError> {
        if self.role != Role::Member && self.role.owns() {
            return self.inner.submit_async(write::Request::Local(batch)).await;
        }
        // A member proposes to its group, on this task unless a prefix delete must first be
        // expanded against the applied state (a scan); a follower refuses: both as `write` does.
        let scans = batch
            .ops
            .iter()
            .any(|op| matches!(op, crate::storage::batch::Op::DeletePrefix { .. }));
        if self.role == Role::Member && !scans {
            return self.propose_async(batch).await;
        }
        let ns = self.clone();
        tokio::task::spawn_blocking(move || ns.write(batch))
            .await
            .map_err(|e| EngineError::Io(std::io::Error::other(e.to_string())))?
    }

    /// [`Namespace::apply_replicated`] for async callers (a follower under `interval`), committed
    /// as [`Namespace::write_async`] commits.
    pub async fn apply_replicated_async(
        &self,
        records: Vec<Record>,
    ) -> Result<Commit, EngineError> {
        if self.role == Role::Member {
            return Err(EngineError::Follower {
                name: self.inner.name.clone(),
            });
        }
        self.inner
            .submit_async(write::Request::Replicated(records, false))
            .await
    }

    /// Appends records received from an upstream verbatim (same LSNs, HLCs and payloads).
    pub fn apply_replicated(&self, records: Vec<Record>) -> Result<Commit, EngineError> {
        if self.role == Role::Member {
            return Err(EngineError::Follower {
                name: self.inner.name.clone(),
            });
        }
        self.inner
            .submit(write::Request::Replicated(records, false))
    }

    /// [`Namespace::apply_replicated`], then one fsync (a follower before its ack). The records are
    /// published before the fsync (readers and notifications do not wait for the disk), and the
    /// `interval` syncer is not woken for them.
    pub fn apply_replicated_durably(&self, records: Vec<Record>) -> Result<Commit, EngineError> {
        if self.role == Role::Member {
            return Err(EngineError::Follower {
                name: self.inner.name.clone(),
            });
        }
        let commit = self
            .inner
            .submit(write::Request::Replicated(records, true))?;
        self.make_durable()?;
        Ok(commit)
    }

    /// Replaces the whole contents with a snapshot taken upstream at `lsn` (HLC `hlc`), for a follower
    /// whose next LSN the upstream no longer has. `lsn` must be ahead of the local LSN. Afterwards the
    /// WAL continues at `lsn + 1` (so `apply_replicated` takes the upstream's next record) and local
    /// WAL readers asking for older LSNs get `Trimmed`. An `Err` from `entries` aborts the install and
    /// leaves the namespace unchanged. Blocks; crash-safe (see `install.rs`).
    pub fn install_snapshot<I>(&self, entries: I, lsn: u64, hlc: u64) -> Result<(), EngineError>
    where
        I: IntoIterator<Item = Result<(Vec<u8>, Vec<u8>), EngineError>>,
    {
        self.inner.install_snapshot(entries.into_iter(), lsn, hlc)
    }

    /// Like [`Namespace::install_snapshot`], carrying the upstream's epoch history up to `lsn`; with
    /// `replacing`, `lsn` may be at or below the local LSN (the local history diverged and is discarded;
    /// local WAL tails then end with [`TailError::Truncated`]).
    pub fn install_snapshot_from<I>(
        &self,
        entries: I,
        lsn: u64,
        hlc: u64,
        history: Vec<EpochEntry>,
        replacing: bool,
    ) -> Result<(), EngineError>
    where
        I: IntoIterator<Item = Result<(Vec<u8>, Vec<u8>), EngineError>>,
    {
        self.inner
            .install_snapshot_with(entries.into_iter(), lsn, hlc, Some(history), replacing)
    }

    /// Discards every record after `lsn` (a follower whose tail diverged from its upstream): the WAL
    /// is cut, the epoch history follows, memtables are rebuilt from the WAL, and local WAL tails end
    /// with [`TailError::Truncated`]. Returns how many records were dropped. Impossible once the
    /// B+Tree holds records after `lsn` ([`EngineError::TruncateBelowCheckpoint`]): install a snapshot.
    pub fn truncate_after(&self, lsn: u64) -> Result<u64, EngineError> {
        self.inner.truncate_after(lsn)
    }

    /// LSN the B+Tree reflects (records up to it may no longer be in the WAL).
    pub fn checkpoint_lsn(&self) -> Result<u64, EngineError> {
        Ok(self.inner.tree.begin_read()?.checkpoint_lsn())
    }

    /// Highest LSN that is both visible and on stable storage: what may leave this node.
    pub fn durable_lsn(&self) -> u64 {
        self.latest_lsn().min(self.inner.wal.durable_lsn())
    }

    /// Makes every visible record durable, sharing one fsync among concurrent callers (WAL streams
    /// under `fsync: never`, followers before acknowledging). Returns the durable LSN.
    pub fn make_durable(&self) -> Result<u64, EngineError> {
        let target = self.latest_lsn();
        if self.inner.wal.durable_lsn() >= target {
            return Ok(self.durable_lsn());
        }
        let _one = self.inner.epochs.sync_lock.lock();
        // Whoever held the lock may have synced everything we need.
        if self.inner.wal.durable_lsn() < target {
            let t = std::time::Instant::now();
            self.inner.wal.sync()?;
            self.inner.metrics.fsyncs.inc();
            self.inner
                .metrics
                .fsync_seconds
                .observe(t.elapsed().as_secs_f64());
        }
        Ok(self.durable_lsn())
    }

    /// Notified whenever the WAL's durable LSN moves.
    pub fn subscribe_durable(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.wal.subscribe_durable()
    }

    /// The fsync policy this namespace was opened with.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.inner.opts.fsync
    }

    /// The epoch of the record at `lsn` in this node's history (0 before the first entry).
    pub fn epoch_at(&self, lsn: u64) -> u64 {
        self.inner.epochs.epoch_at(lsn)
    }

    /// The epoch of the newest history entry.
    pub fn last_epoch(&self) -> u64 {
        self.inner.epochs.last_epoch()
    }

    /// The epoch this process gives local writes (`None` on a follower).
    pub fn write_epoch(&self) -> Option<u64> {
        self.inner.epochs.write_epoch()
    }

    /// The epoch history for records up to `last_lsn`, with the implicit epoch 0 spelled out.
    pub fn epoch_history(&self, last_lsn: u64) -> Vec<EpochEntry> {
        self.inner.epochs.for_wire(last_lsn)
    }

    /// How many truncations happened since open (tails notice discarded records by it).
    pub(crate) fn truncations(&self) -> u64 {
        self.inner.epochs.truncations()
    }

    /// Reads one stored key at the latest visible LSN.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.get(key)
    }

    /// A consistent read view at the current visible LSN; cheap, owned and `Send`.
    pub fn snapshot(&self) -> Result<Snapshot, EngineError> {
        self.inner.snapshot()
    }

    /// Last LSN visible to readers and streamed to replicas.
    pub fn latest_lsn(&self) -> u64 {
        self.inner.visible.load(Ordering::Acquire)
    }

    /// HLC of the last visible record (0 when the namespace is empty).
    pub fn latest_hlc(&self) -> u64 {
        self.inner.last_hlc.load(Ordering::Acquire)
    }

    /// Notifies async waiters of each new visible LSN (WAL followers use [`Namespace::tail`]).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.lsn_tx.subscribe()
    }

    /// Oldest LSN still in the WAL (`None` when it holds no record).
    pub fn wal_first_lsn(&self) -> Option<u64> {
        self.inner.wal.first_lsn()
    }

    /// HLC of record `lsn` (0 for LSN 0) from the WAL, else the namespace's latest: what a snapshot
    /// taken at `lsn` (replication bootstrap, backups) records as its time.
    pub fn hlc_at(&self, lsn: u64) -> u64 {
        if lsn == 0 {
            return 0;
        }
        match self.wal_reader(lsn).map(|mut r| r.next_record()) {
            Ok(Ok(Some(rec))) if rec.lsn == lsn => rec.hlc,
            _ => self.latest_hlc(),
        }
    }

    /// Where record `lsn` ends in the WAL: (first LSN of its segment, byte offset), or `None` when
    /// the record is not in the WAL (0, or removed by retention). Reads from the segment's start.
    pub fn wal_position_of(&self, lsn: u64) -> Option<(u64, u64)> {
        let mut r = self.inner.wal.reader(lsn).ok()?;
        match r.next_record() {
            Ok(Some(rec)) if rec.lsn == lsn => r.position(),
            _ => None,
        }
    }

    /// Tells WAL retention that every record `<= lsn` is in the archive store (no-op unless
    /// `hold_wal_for_archive`).
    pub fn archived_through(&self, lsn: u64) {
        if let Some(id) = self.archive_pin {
            self.inner.wal.advance_pin(id, lsn.saturating_add(1));
        }
    }

    /// Reads WAL records from `from_lsn` (inclusive) up to the visible LSN.
    pub fn wal_reader(&self, from_lsn: u64) -> Result<WalReader, EngineError> {
        Ok(self.inner.wal.reader(from_lsn)?)
    }

    /// Seals the active memtable and waits until every memtable is in the B+Tree.
    pub fn flush(&self) -> Result<(), EngineError> {
        self.inner.submit(write::Request::Seal)?;
        self.inner.flush.wait_drained(&self.inner)
    }

    /// Verifies the B+Tree; problems come back in the report.
    pub fn check(&self) -> Result<crate::btree::CheckReport, EngineError> {
        Ok(self.inner.tree.check()?)
    }

    pub fn stats(&self) -> Result<NamespaceStats, EngineError> {
        let inner = &self.inner;
        let (memtable_bytes, sealed_memtables) = {
            let m = inner.mems.read();
            let bytes =
                m.active.size_bytes() + m.sealed.iter().map(|s| s.size_bytes()).sum::<usize>();
            (bytes as u64, m.sealed.len())
        };
        let tree = inner.tree.stats()?;
        Ok(NamespaceStats {
            name: inner.name.clone(),
            lsn: self.latest_lsn(),
            last_hlc: self.latest_hlc(),
            checkpoint_lsn: tree.checkpoint_lsn,
            memtable_bytes,
            sealed_memtables,
            wal_first_lsn: inner.wal.first_lsn(),
            wal_segments: inner.wal.segments(),
            tree,
            poisoned: inner.poisoned.lock().clone(),
            degraded: inner.tree.first_checksum_failure(),
            checksum_failures: inner.tree.checksum_failures(),
            epoch: inner.epochs.epoch_at(self.latest_lsn()),
            epoch_history: inner.epochs.for_wire(self.latest_lsn()),
        })
    }

    /// The first checksum failure a read hit in this namespace, if any (see `NamespaceStats`).
    pub fn degraded(&self) -> Option<String> {
        self.inner.tree.first_checksum_failure()
    }

    /// Serialises read-then-replace model commits (LOB manifests) of this namespace only, so two
    /// concurrent uploads of one key cannot both delete the same old version.
    pub fn commit_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.inner.models.commit.lock()
    }

    /// A fresh version, unique in this namespace and increasing across restarts (wall-clock ms << 16,
    /// HLC-style); names the chunks of one LOB upload.
    pub fn next_version(&self) -> u64 {
        let last = &self.inner.models.last_version;
        let wall = crate::storage::hlc::wall_ms() << 16;
        let mut prev = last.load(Ordering::Relaxed);
        loop {
            let next = if wall > prev { wall } else { prev + 1 };
            match last.compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => prev = actual,
            }
        }
    }

    /// A fresh version ([`Namespace::next_version`]) for a LOB upload, in flight until dropped.
    pub fn begin_lob_version(&self) -> LobVersion {
        let mut in_flight = self.inner.models.lob_in_flight.lock();
        let version = self.next_version();
        in_flight.insert(version);
        LobVersion {
            ns: self.clone(),
            version,
        }
    }

    /// What orphan collection must leave alone: the versions of uploads in progress here, and a
    /// fresh version as the bound (uploads that start after this call get later ones). The bound
    /// follows the wall clock, so on a group's new leader, which never handed out a version, the
    /// old leader's uploads fall below it.
    pub fn lob_versions_in_flight(&self) -> (std::collections::BTreeSet<u64>, u64) {
        let in_flight = self.inner.models.lob_in_flight.lock();
        let bound = self.next_version();
        (in_flight.clone(), bound)
    }

    /// Makes everything durable and flushed; the namespace stays usable (used at shutdown).
    pub fn close(&self) -> Result<(), EngineError> {
        // Syncs and records the durable-LSN bound: a later start that finds less refuses.
        self.inner.wal.close()?;
        self.flush()
    }
}
