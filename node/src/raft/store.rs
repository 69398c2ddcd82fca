//! openraft's storage over a member namespace: [`LogStore`] (the WAL as the Raft log) and
//! [`StateMachine`] (memtables + B+Tree; applying publishes to readers and tails).
//!
//! Both share one [`RaftState`] file. Purge records the purged log id and releases the WAL's Raft
//! pin up to it, so retention may drop segments at or below both the purged index and the B+Tree
//! checkpoint. Snapshots are files beside the namespace (`snapshot.rs`): the engine's consistent
//! view at the applied LSN, streamed to disk, sent in chunks, installed with the engine's snapshot
//! install.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    Snapshot, SnapshotMeta, StorageIOError, StoredMembership, Vote,
};
use parking_lot::Mutex;

use super::durable::Durability;
use super::entry::{self, Entry};
use super::state::RaftState;
use super::{Applied, Member, StorageError, TypeConfig};
use crate::engine::{self, EngineError, EngineOptions, Namespace};

/// Runs blocking engine work from async code without stalling other tasks on this worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn io_read(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn io_write(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn sm_write(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

/// Who may turn a single hub's namespace into the group's log, and the group it joins.
pub struct Conversion {
    pub me: u64,
    pub members: std::collections::BTreeMap<u64, Member>,
    /// This member bootstraps groups (the lowest id): the only one that converts.
    pub converter: bool,
}

/// Opens the namespace in `dir` as a group member and returns its two storage halves. With
/// `conversion`, a namespace written by a single hub becomes the group's log first
/// ([`convert_single_hub`]).
pub fn open(
    dir: &Path,
    name: &str,
    opts: EngineOptions,
    conversion: Option<&Conversion>,
) -> Result<(Namespace, LogStore, StateMachine), EngineError> {
    crate::fsutil::create_dir_all_durable(dir)?;
    let mut state = RaftState::load(dir)?;
    if let Some(c) = conversion {
        convert_single_hub(dir, name, &opts, &mut state, c)?;
    }
    let committed = state
        .data
        .committed
        .map(|c| entry::lsn_of(c.index))
        .unwrap_or(0);
    let ns = Namespace::open_member(dir, name, opts, committed)?;
    let applied = ns.latest_lsn();
    let last_applied = (applied > 0).then(|| entry::log_id(ns.epoch_at(applied), applied));
    recover_membership(&ns, &mut state)?;
    if let Some(p) = state.data.purged {
        ns.raft_release_log(entry::lsn_of(p.index));
    }
    let current = super::snapshot::Reader::current_meta(dir).map_err(|e| {
        EngineError::Corrupt(format!("{e} (remove the file to rebuild the snapshot)"))
    })?;
    let membership = state.data.membership.clone();
    let state = Arc::new(Mutex::new(state));
    let recent: Arc<Mutex<RecentEntries>> = Default::default();
    let durable = Durability::new(ns.clone());
    let log = LogStore {
        ns: ns.clone(),
        state: state.clone(),
        syncer: Syncer::start(ns.clone())?,
        recent: recent.clone(),
        me: None,
        durable: durable.clone(),
    };
    let sm = StateMachine {
        recent,
        durable,
        ns: ns.clone(),
        state,
        last_applied: Arc::new(Mutex::new(last_applied)),
        current: Arc::new(Mutex::new(current)),
        previous_membership: Arc::new(Mutex::new(membership)),
    };
    Ok((ns, log, sm))
}

/// Turns a namespace a single hub wrote into this group's log, in place: its WAL already is a
/// valid Raft log (LSN = index + 1, epoch = term), so the member appends one membership entry
/// naming every configured member after the last record, in the hub's last epoch, and records
/// it committed, with its own uncommitted vote in that epoch (its first election is the next
/// term, above every epoch of the hub). Records the hub's WAL retention dropped count as purged, so
/// the others get a snapshot for them. Nothing is done when the member already has Raft state or
/// the namespace is empty or already a group's log (its history starts with the pre-epoch term 0).
/// Only the bootstrapping member converts: another member holding a hub's data refuses to start,
/// since two converted logs would be two groups.
fn convert_single_hub(
    dir: &Path,
    name: &str,
    opts: &EngineOptions,
    state: &mut RaftState,
    c: &Conversion,
) -> Result<(), EngineError> {
    if state.data != super::state::Persisted::default() {
        return Ok(());
    }
    let ns = Namespace::open_member(dir, name, opts.clone(), 0)?;
    let last = ns.last_appended_lsn().max(ns.checkpoint_lsn()?);
    if last == 0 || ns.epoch_at(1) == 0 {
        return Ok(());
    }
    if !c.converter {
        return Err(EngineError::Conversion(format!(
            "namespace {name} holds a single hub's data (up to LSN {last}) but member {} is not \
             the group's lowest id: only that member converts a hub into a group; start this \
             member with an empty data directory",
            c.me
        )));
    }
    let epoch = ns.epoch_at(last);
    if ns.wal_first_lsn().is_none() || ns.last_appended_lsn() < last {
        ns.raft_restart_log_at(last + 1)?;
    }
    let membership =
        openraft::Membership::new(vec![c.members.keys().copied().collect()], c.members.clone());
    let e = Entry {
        log_id: entry::log_id(epoch, last + 1),
        payload: EntryPayload::Membership(membership),
    };
    let record = entry::to_record(&e).map_err(|err| EngineError::Corrupt(err.to_string()))?;
    ns.raft_append(vec![record])?;
    let first = ns.wal_first_lsn().unwrap_or(last + 1);
    state.data.purged = (first > 1).then(|| entry::log_id(ns.epoch_at(first - 1), first - 1));
    state.data.vote = Some(Vote::new(epoch, c.me));
    state.data.committed = Some(e.log_id);
    state.save()?;
    tracing::warn!(namespace = name, last_lsn = last, epoch, members = ?c.members.keys().collect::<Vec<_>>(),
        "a single hub's namespace is now this group's Raft log (membership entry appended)");
    Ok(())
}

/// The engine replays records after the B+Tree checkpoint up to the committed index at open, and so
/// counts them applied: a membership entry among them that the state machine never saw (a crash
/// between commit and apply) is taken into the applied state here. Records up to the checkpoint were
/// applied by the state machine, which persists a membership before applying it.
fn recover_membership(ns: &Namespace, state: &mut RaftState) -> Result<(), EngineError> {
    let known = state
        .data
        .membership
        .log_id()
        .map(|l| entry::lsn_of(l.index))
        .unwrap_or(0);
    let from = known.max(ns.checkpoint_lsn()?) + 1;
    let applied = ns.latest_lsn();
    if from > applied || ns.wal_first_lsn().is_none_or(|f| f > from) {
        return Ok(());
    }
    let mut reader = ns.wal_reader(from)?;
    let mut found = None;
    while let Some(rec) = reader.next_record()? {
        if rec.lsn > applied {
            break;
        }
        if crate::storage::batch::control_body(&rec.payload).is_some() {
            let e = entry::from_record(rec).map_err(|e| EngineError::Corrupt(e.to_string()))?;
            if let EntryPayload::Membership(m) = e.payload {
                found = Some(StoredMembership::new(Some(e.log_id), m));
            }
        }
    }
    if let Some(m) = found {
        tracing::info!(namespace = ns.name(), membership = ?m, "membership recovered from the WAL");
        state.data.membership = m;
        state.save()?;
    }
    Ok(())
}

/// Fsyncs appended entries off openraft's core task, in order, one fsync for everything queued.
/// A follower's append is reported through its `LogFlushed` callback after the fsync; a leader's
/// own append was reported at once (`durable.rs`) and is queued without one.
struct Syncer {
    tx: parking_lot::Mutex<Option<std::sync::mpsc::Sender<SyncJob>>>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Syncer {
    /// Closes the queue and waits for the thread, so the namespace (and its directory lock) is
    /// released when the last `LogStore` goes.
    fn drop(&mut self) {
        self.tx.lock().take();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Syncer {
    fn start(ns: Namespace) -> Result<Arc<Syncer>, EngineError> {
        let (tx, rx) = std::sync::mpsc::channel::<SyncJob>();
        let stall = leader_fsync_stall();
        let thread = std::thread::Builder::new()
            .name(format!("raft-sync-{}", ns.name()))
            .spawn(move || {
                // Ends when every `LogStore` clone (and so the sender) is gone.
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    if let Some(d) = stall.filter(|_| batch.iter().any(|j| j.leader)) {
                        std::thread::sleep(d);
                    }
                    let result = ns.raft_sync().map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        // The namespace is poisoned: the next append fails and stops the group.
                        tracing::error!(namespace = ns.name(), error = %e, "Raft log fsync failed");
                    }
                    for cb in batch.into_iter().filter_map(|j| j.flushed) {
                        cb.log_io_completed(result.clone().map_err(std::io::Error::other));
                    }
                }
            })?;
        Ok(Arc::new(Syncer {
            tx: parking_lot::Mutex::new(Some(tx)),
            thread: parking_lot::Mutex::new(Some(thread)),
        }))
    }
}

/// Appended entries to fsync, and the callback to report it to when openraft awaits it.
struct SyncJob {
    flushed: Option<LogFlushed<TypeConfig>>,
    /// The leader's own entries (what `UNISONDB_FAULT_LEADER_FSYNC_DELAY_MS` delays).
    leader: bool,
}

/// Fault injection for tests (`UNISONDB_FAULT_LEADER_FSYNC_DELAY_MS`): a leader's fsync of its own
/// entries starts that much later, as on a slow disk, so a test can watch what waits for it.
fn leader_fsync_stall() -> Option<std::time::Duration> {
    let ms = std::env::var("UNISONDB_FAULT_LEADER_FSYNC_DELAY_MS").ok()?;
    let ms: u64 = ms.parse().ok()?;
    tracing::warn!(ms, "fault injection: the leader's log fsyncs are delayed");
    Some(std::time::Duration::from_millis(ms))
}

/// The Raft log: the member namespace's WAL.
#[derive(Clone)]
pub struct LogStore {
    ns: Namespace,
    state: Arc<Mutex<RaftState>>,
    syncer: Arc<Syncer>,
    /// The entries appended last, for the replication streams and the state machine that read
    /// them back at once (a WAL reader per read costs a 256 KiB window and a `pread` of it).
    recent: Arc<Mutex<RecentEntries>>,
    /// This member's node id, once its group starts: appends of its own leadership term are
    /// reported flushed before their fsync (`durable.rs`).
    me: Option<u64>,
    durable: Durability,
}

/// Entries kept in memory at most (`LogStore::recent`).
const RECENT_ENTRIES: usize = 1024;
/// Payload bytes kept in memory at most (`LogStore::recent`).
const RECENT_BYTES: usize = 8 << 20;

/// The last appended entries, contiguous, exactly as the WAL holds them.
#[derive(Default)]
struct RecentEntries {
    entries: std::collections::VecDeque<Entry>,
    bytes: usize,
}

fn entry_bytes(e: &Entry) -> usize {
    match &e.payload {
        EntryPayload::Normal(p) => p.payload.len(),
        _ => 64,
    }
}

impl RecentEntries {
    fn push(&mut self, new: &[Entry]) {
        for e in new {
            if self
                .entries
                .back()
                .is_some_and(|l| l.log_id.index + 1 != e.log_id.index)
            {
                self.clear();
            }
            self.bytes += entry_bytes(e);
            self.entries.push_back(e.clone());
        }
        while self.entries.len() > RECENT_ENTRIES
            || (self.bytes > RECENT_BYTES && self.entries.len() > 1)
        {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= entry_bytes(&old);
            }
        }
    }

    /// Drops the entries from index `from` on (a truncation).
    fn cut(&mut self, from: u64) {
        while self.entries.back().is_some_and(|l| l.log_id.index >= from) {
            if let Some(old) = self.entries.pop_back() {
                self.bytes -= entry_bytes(&old);
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Entries `[start, end)`, up to LSN `last` (the WAL's end), when `start` is held.
    fn get(&self, start: u64, end: u64, last: u64) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.log_id.index;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        if skip >= self.entries.len() {
            return None;
        }
        Some(
            self.entries
                .range(skip..)
                .take_while(|e| e.log_id.index < end && entry::lsn_of(e.log_id.index) <= last)
                .cloned()
                .collect(),
        )
    }
}

impl LogStore {
    /// The log of member `id`, which may then lead (see `durable.rs`).
    pub fn for_node(mut self, id: u64) -> LogStore {
        self.me = Some(id);
        self
    }

    /// Whether `entries` are this member's own, appended as the leader of their term: the saved
    /// vote is this member's, committed, in that term (one leader per term: `single-term-leader`).
    fn leads(&self, entries: &[Entry]) -> bool {
        let Some(me) = self.me else {
            return false;
        };
        let Some(vote) = self.state.lock().data.vote else {
            return false;
        };
        vote.committed
            && vote.leader_id.voted_for == Some(me)
            && entries
                .iter()
                .all(|e| e.log_id.leader_id.term == vote.leader_id.term)
    }

    /// Whether this member holds no Raft state at all: a new member, or one whose volume was lost.
    pub fn is_blank(&self) -> bool {
        let st = self.state.lock();
        st.data.vote.is_none() && st.data.purged.is_none() && self.ns.last_appended_lsn() == 0
    }

    fn purged(&self) -> Option<LogId<u64>> {
        self.state.lock().data.purged
    }

    /// Entries with index in `[start, end)` (appended, committed or not): from the recent entries
    /// kept in memory when they are there (replication and apply then take no thread hop), else
    /// read from the WAL on a blocking thread.
    async fn entries(&self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let start = match self.purged() {
            Some(p) => start.max(p.index + 1),
            None => start,
        };
        let last = self.ns.last_appended_lsn();
        if start >= end || entry::lsn_of(start) > last {
            return Ok(Vec::new());
        }
        if let Some(hit) = self.recent.lock().get(start, end, last) {
            return Ok(hit);
        }
        blocking(|| self.read_wal(start, end))
    }

    /// Entries with index in `[start, end)`, `start` past the purged index, read from the WAL.
    fn read_wal(&self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        // The WAL may start later (a snapshot install or an empty log started past a purge).
        let from = entry::lsn_of(start).max(self.ns.wal_first_lsn().unwrap_or(1));
        let mut reader = self.ns.appended_reader(from).map_err(io_read)?;
        let mut out = Vec::new();
        while let Some(rec) = reader.next_record().map_err(io_read)? {
            if rec.lsn > end {
                break;
            }
            out.push(entry::from_record(rec).map_err(io_read)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e + 1,
            Bound::Excluded(e) => *e,
            Bound::Unbounded => u64::MAX,
        };
        self.entries(start, end).await
    }

    /// At most [`APPEND_BYTES`] of entries (at least one): openraft gives an AppendEntries one
    /// heartbeat interval to be written and fsynced on the follower, whatever it carries.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut entries = self.entries(start, end).await?;
        let mut bytes = 0;
        let keep = entries
            .iter()
            .position(|e| {
                bytes += entry_bytes(e);
                bytes > APPEND_BYTES
            })
            .map_or(entries.len(), |i| i.max(1));
        entries.truncate(keep);
        Ok(entries)
    }
}

/// Payload bytes one AppendEntries carries at most (a larger single entry goes alone).
const APPEND_BYTES: usize = 1 << 20;

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged = self.purged();
        let last = self.ns.last_appended_lsn();
        let last_log_id = if last == 0 {
            None
        } else {
            Some(entry::log_id(self.ns.epoch_at(last), last))
        };
        let last_log_id = match (last_log_id, purged) {
            (Some(l), Some(p)) if p.index > l.index => Some(p),
            (None, p) => p,
            (l, _) => l,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        // Gate 4 of `durable.rs`: entries reported flushed early are on disk before any vote
        // change, so the member never claims a copy it does not hold (elections only).
        if self.durable.lsn() < self.ns.last_appended_lsn() {
            blocking(|| self.ns.raft_sync())
                .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        }
        let mut st = self.state.lock();
        st.data.vote = Some(*vote);
        blocking(|| st.save()).map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.state.lock().data.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        // Gate 3 of `durable.rs`.
        let committed = self.durable.clamp(committed);
        let mut st = self.state.lock();
        st.data.committed = committed;
        if st.save_due() {
            blocking(|| st.save_lazily()).map_err(io_write)
        } else {
            // Only marks the state dirty: no I/O, no thread hop.
            st.save_lazily().map_err(io_write)
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError> {
        Ok(self.state.lock().data.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let own = self.leads(&entries);
        let records = entries
            .iter()
            .map(entry::to_record)
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_write)?;
        let first = records.first().map(|r| r.lsn).unwrap_or(0);
        let last = self.ns.last_appended_lsn();
        if first > last + 1 {
            // Only after a purge past the log's end (a snapshot) or into an empty log.
            let purged_all = self
                .purged()
                .is_some_and(|p| entry::lsn_of(p.index) >= last);
            if purged_all || self.ns.wal_first_lsn().is_none() {
                self.recent.lock().clear();
                blocking(|| self.ns.raft_restart_log_at(first)).map_err(io_write)?;
            }
        }
        // Written (readable, so replication starts now) here; durable when the syncer says so.
        match self.ns.raft_write_async(records).await {
            Ok(_) => {
                self.recent.lock().push(&entries);
                // A leader's own append is reported now and fsynced meanwhile (`durable.rs`); a
                // follower's is reported by the sync thread after its fsync.
                let (flushed, now) = if own {
                    (None, Some(callback))
                } else {
                    (Some(callback), None)
                };
                let job = SyncJob {
                    flushed,
                    leader: own,
                };
                let unsent = match self.syncer.tx.lock().as_ref() {
                    Some(tx) => tx.send(job).err().map(|e| e.0),
                    None => Some(job),
                };
                match unsent {
                    None => {
                        if let Some(cb) = now {
                            cb.log_io_completed(Ok(()));
                        }
                    }
                    Some(job) => {
                        if let Some(cb) = job.flushed.or(now) {
                            let gone = std::io::Error::other("the WAL sync thread is gone");
                            cb.log_io_completed(Err(gone));
                        }
                    }
                }
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_write(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        // Entries from `log_id.index` on go: keep LSNs up to that index.
        self.recent.lock().cut(log_id.index);
        blocking(|| self.ns.raft_truncate_after(log_id.index)).map_err(io_write)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let mut st = self.state.lock();
        if st.data.purged.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        st.data.purged = Some(log_id);
        blocking(|| st.save()).map_err(io_write)?;
        // Segments at or below the purged entry (and the checkpoint) may go now.
        self.ns.raft_release_log(entry::lsn_of(log_id.index));
        Ok(())
    }
}

/// The state machine: the namespace's memtables and B+Tree.
#[derive(Clone)]
pub struct StateMachine {
    /// The log's cache of recent entries, emptied when a snapshot replaces the log.
    recent: Arc<Mutex<RecentEntries>>,
    durable: Durability,
    ns: Namespace,
    state: Arc<Mutex<RaftState>>,
    /// Log id of the last applied entry (the engine knows its LSN; this keeps its term exactly).
    last_applied: Arc<Mutex<Option<LogId<u64>>>>,
    /// Meta of the current snapshot file (`snapshot::CURRENT`), if any.
    current: Arc<Mutex<Option<SnapshotMeta<u64, Member>>>>,
    /// The membership before the last applied one: a snapshot taken while a membership entry is
    /// saved but not yet visible takes this one.
    previous_membership: Arc<Mutex<StoredMembership<u64, Member>>>,
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

fn open_async(path: &Path) -> Result<tokio::fs::File, StorageError> {
    std::fs::File::open(path)
        .map(tokio::fs::File::from_std)
        .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)).into())
}

impl StateMachine {
    /// Writes the snapshot file of the applied state (a consistent engine view, streamed to disk).
    fn build(&self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let read = |e: EngineError| -> StorageError {
            StorageIOError::read_state_machine(AnyError::new(&e)).into()
        };
        // The view and the membership as of its LSN, taken together.
        let waited = std::time::Instant::now();
        let (view, membership) = loop {
            {
                let st = self.state.lock();
                let view = self.ns.snapshot().map_err(read)?;
                let lsn = view.lsn();
                let at_or_below = |m: &StoredMembership<u64, Member>| {
                    m.log_id().is_none_or(|l| entry::lsn_of(l.index) <= lsn)
                };
                if at_or_below(&st.data.membership) {
                    break (view, st.data.membership.clone());
                }
                let prev = self.previous_membership.lock().clone();
                if at_or_below(&prev) {
                    break (view, prev);
                }
            }
            if waited.elapsed() > std::time::Duration::from_secs(30) {
                return Err(snap_err(EngineError::Corrupt(
                    "no membership at or below the applied LSN".into(),
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let lsn = view.lsn();
        // The applied entry's own log id when the view is at it, else the term from the WAL's
        // epoch history (the same value: a record's epoch is its entry's term).
        let applied = *self.last_applied.lock();
        let last_log_id = match applied {
            Some(a) if entry::lsn_of(a.index) == lsn => Some(a),
            _ => (lsn > 0).then(|| entry::log_id(self.ns.epoch_at(lsn), lsn)),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership: membership,
            snapshot_id: match last_log_id {
                Some(l) => format!("{}-{}", l.leader_id.term, l.index),
                None => "empty".into(),
            },
        };
        let t = std::time::Instant::now();
        let entries = super::snapshot::write(&self.ns, &view, &meta).map_err(snap_err)?;
        drop(view);
        tracing::info!(
            namespace = self.ns.name(),
            lsn,
            entries,
            ms = t.elapsed().as_millis() as u64,
            "Raft snapshot written"
        );
        *self.current.lock() = Some(meta.clone());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(open_async(&self.ns.dir().join(super::snapshot::CURRENT))?),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        blocking(|| self.build())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, Member>), StorageError> {
        let st = self.state.lock();
        Ok((*self.last_applied.lock(), st.data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Vec::new();
        let mut replies = Vec::new();
        let mut last = None;
        let mut membership = None;
        for e in entries {
            let rec = entry::to_record(&e).map_err(sm_write)?;
            if let EntryPayload::Membership(m) = &e.payload {
                membership = Some(StoredMembership::new(Some(e.log_id), m.clone()));
            }
            replies.push(Applied {
                lsn: rec.lsn,
                hlc: rec.hlc,
            });
            batch.push(engine::Applied {
                lsn: rec.lsn,
                hlc: rec.hlc,
                payload: rec.payload,
            });
            last = Some(e.log_id);
        }
        // Gate 1 of `durable.rs`: nothing becomes visible before this member's copy is on disk.
        if let Some(l) = last {
            self.durable
                .reach(entry::lsn_of(l.index))
                .await
                .map_err(sm_write)?;
        }
        if let Some(m) = membership {
            let mut st = self.state.lock();
            *self.previous_membership.lock() = st.data.membership.clone();
            st.data.membership = m;
            blocking(|| st.save()).map_err(sm_write)?;
        }
        self.ns.raft_apply_async(batch).await.map_err(sm_write)?;
        if last.is_some() {
            *self.last_applied.lock() = last;
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.ns.dir().join(super::snapshot::RECEIVING);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(snap_err)?;
        Ok(Box::new(tokio::fs::File::from_std(f)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let mut file = *snapshot;
        use tokio::io::AsyncWriteExt;
        file.flush().await.map_err(snap_err)?;
        let file = file.into_std().await;
        let dir = self.ns.dir().to_path_buf();
        let received = dir.join(super::snapshot::RECEIVING);
        blocking(|| -> Result<(), StorageError> {
            file.sync_all().map_err(snap_err)?;
            let copy = file.try_clone().map_err(snap_err)?;
            let reader = super::snapshot::Reader::open(file, &received).map_err(snap_err)?;
            let (lsn, hlc, history) = (reader.header.lsn, reader.header.hlc, reader.history());
            let expected = meta
                .last_log_id
                .map(|l| entry::lsn_of(l.index))
                .unwrap_or(0);
            if lsn != expected {
                return Err(snap_err(EngineError::Corrupt(format!(
                    "snapshot holds LSN {lsn}, its meta says {expected}"
                ))));
            }
            if lsn > 0 {
                self.recent.lock().clear();
                self.ns
                    .install_snapshot_from(reader, lsn, hlc, history, true)
                    .map_err(sm_write)?;
            }
            // Received from the leader: this member's current snapshot now (it may serve it).
            super::snapshot::adopt(&dir, copy, &received).map_err(snap_err)?;
            Ok(())
        })?;
        {
            let mut st = self.state.lock();
            *self.previous_membership.lock() = st.data.membership.clone();
            st.data.membership = meta.last_membership.clone();
            blocking(|| st.save()).map_err(sm_write)?;
        }
        *self.last_applied.lock() = meta.last_log_id;
        *self.current.lock() = Some(meta.clone());
        tracing::info!(namespace = self.ns.name(), snapshot = %meta.snapshot_id,
            "Raft snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(meta) = self.current.lock().clone() else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(open_async(&self.ns.dir().join(super::snapshot::CURRENT))?),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let d = tempfile::tempdir().map_err(io_write)?;
            let (_, log, sm) = open(&d.path().join("ns"), "ns", EngineOptions::default(), None)
                .map_err(io_write)?;
            Ok((d, log, sm))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_committed_membership_the_state_machine_never_saw_is_recovered_at_open() {
        use openraft::Membership;
        use std::collections::{BTreeMap, BTreeSet};
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ns");
        let nodes: BTreeMap<u64, Member> = [(1, Member::default()), (2, Member::default())].into();
        let m = Membership::new(vec![BTreeSet::from([1, 2])], nodes);
        {
            let (_, log, _) = open(&dir, "ns", EngineOptions::default(), None).unwrap();
            let entries = [
                Entry {
                    log_id: entry::log_id(0, 1),
                    payload: EntryPayload::Membership(m.clone()),
                },
                Entry {
                    log_id: entry::log_id(3, 2),
                    payload: EntryPayload::Blank,
                },
            ];
            let records: Vec<_> = entries
                .iter()
                .map(|e| entry::to_record(e).unwrap())
                .collect();
            log.ns.raft_append(records).unwrap();
            // Committed through LSN 2, then a crash before the state machine applied anything.
            let mut st = log.state.lock();
            st.data.committed = Some(entry::log_id(3, 2));
            st.save().unwrap();
        }
        let (ns, _, mut sm) = open(&dir, "ns", EngineOptions::default(), None).unwrap();
        assert_eq!(ns.latest_lsn(), 2, "replayed up to the committed index");
        let (applied, membership) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(entry::log_id(3, 2)));
        assert_eq!(membership.log_id(), &Some(entry::log_id(0, 1)));
        assert_eq!(membership.membership(), &m);
    }

    #[test]
    fn recent_entries_stay_contiguous_and_follow_truncations() {
        let blank = |term: u64, index: u64| Entry {
            log_id: entry::log_id(term, index + 1),
            payload: EntryPayload::Blank,
        };
        let mut r = RecentEntries::default();
        r.push(&[blank(1, 0), blank(1, 1), blank(1, 2)]);
        let idx =
            |v: Option<Vec<Entry>>| v.map(|v| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>());
        assert_eq!(idx(r.get(1, 10, 3)), Some(vec![1, 2]));
        assert_eq!(
            idx(r.get(1, 10, 2)),
            Some(vec![1]),
            "never past the WAL's end"
        );
        assert_eq!(idx(r.get(0, 2, 3)), Some(vec![0, 1]));
        r.cut(1);
        assert_eq!(idx(r.get(0, 10, 3)), Some(vec![0]));
        r.push(&[blank(2, 1)]);
        assert_eq!(r.get(1, 2, 2).unwrap()[0].log_id.leader_id.term, 2);
        r.push(&[blank(2, 5)]);
        assert_eq!(idx(r.get(0, 10, 6)), None, "a gap restarts the cache");
        assert_eq!(idx(r.get(5, 10, 6)), Some(vec![5]));
    }

    #[test]
    fn the_wal_backed_storage_passes_openraft_suite() {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("openraft=info,unisondb=info")
            .try_init();
        Suite::test_all(Builder).unwrap();
    }
}
