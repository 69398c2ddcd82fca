//! Epochs: which history each WAL record belongs to, and the per-namespace epoch history.
//!
//! Every record carries an epoch (u64, in its WAL frame and on the wire). An owner starts a new epoch
//! every time it opens a namespace for writing, because every start may be a state that does not extend
//! what others saw (a data directory restored from a backup, an unsynced tail lost in a crash, later a
//! promotion). Followers never start epochs: they take them from the records they apply. The same
//! (epoch, LSN) on two nodes therefore means the same record, which lets a follower and its upstream
//! find the last LSN where their histories agree (`replication::history`). Later, a Raft term will be
//! an epoch.
//!
//! **Choosing a new epoch**: `max(last_epoch + 1, unix milliseconds now)`. `last_epoch + 1` keeps
//! epochs monotonic on one node even if the clock steps back; the wall clock makes the epoch unique
//! after a restore from an old copy that does not know the epochs started since the copy was taken
//! (those were started at earlier instants, so "now" is larger than each of them as long as the clock
//! does not run backwards across the restore and two starts are at least a millisecond apart).
//! Milliseconds rather than seconds so that two restarts within one second still get distinct epochs.
//!
//! **The history** is a short list of `(epoch, start_lsn)` (Kafka's leader-epoch checkpoint): epoch `E`
//! covers LSNs from its start up to the next entry's start - 1 (or the last LSN). Records before the
//! first entry (or with no entry at all) are of epoch 0: WAL segments written before epochs existed.
//! It is stored in `<namespace>/epochs`, rewritten crash-safely (temp file, fsync, rename, fsync of the
//! directory) whenever it changes, which is rare (once per owner start, per snapshot install, per
//! truncation). An entry is made durable *before* the first record of its epoch is appended, so a
//! record never exists without its entry; an entry whose records were lost (a torn or unsynced tail)
//! starts after the WAL's last LSN and is dropped when the namespace opens (`reconcile`). The history
//! outlives WAL retention (it is never trimmed with segments) and crosses snapshot installs (the
//! snapshot header carries the upstream's history up to the snapshot LSN).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use thiserror::Error;

/// File name of the history inside the namespace directory.
pub(crate) const FILE: &str = "epochs";
const TMP: &str = "epochs.tmp";
/// The history a snapshot install brings, staged until the install commits (see `install.rs`).
const STAGED: &str = "epochs.install";
const MAGIC: &str = "unisondb-epochs 1";

/// One history entry: epoch `epoch` starts at LSN `start_lsn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct EpochEntry {
    pub epoch: u64,
    pub start_lsn: u64,
}

/// Why the history could not be read, written or extended.
#[derive(Debug, Error)]
pub enum EpochError {
    #[error("epoch history i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("epoch history file {path} is damaged: {reason}")]
    Corrupt { path: String, reason: String },
    /// A record whose epoch is older than the history's last: not a continuation of this history.
    #[error("record LSN {lsn} has epoch {epoch}, older than the current epoch {current}")]
    Regression { lsn: u64, epoch: u64, current: u64 },
    #[error("epoch entry ({epoch}, {start_lsn}) does not follow the history's last entry")]
    OutOfOrder { epoch: u64, start_lsn: u64 },
}

/// The epoch an owner starts: see the module docs for why.
pub fn next_epoch(last_epoch: u64, now_ms: u64) -> u64 {
    last_epoch.saturating_add(1).max(now_ms)
}

/// The in-memory history (pure) plus where it is stored.
#[derive(Debug, Clone)]
pub struct EpochHistory {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl EpochHistory {
    /// Loads `<dir>/epochs` (an absent file is an empty history), ignoring a leftover temp file.
    pub fn load(dir: &Path) -> Result<EpochHistory, EpochError> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        let entries = if text.is_empty() {
            Vec::new()
        } else {
            parse(&text).map_err(|reason| EpochError::Corrupt {
                path: path.display().to_string(),
                reason,
            })?
        };
        Ok(EpochHistory { path, entries })
    }

    /// Drops entries starting after `last_lsn` (their records never became durable); persists if changed.
    pub fn reconcile(&mut self, last_lsn: u64) -> Result<bool, EpochError> {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_lsn <= last_lsn);
        if self.entries.len() == before {
            return Ok(false);
        }
        self.persist()?;
        Ok(true)
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// Epoch of the newest entry (0 when there is none: pre-epoch records).
    pub fn last_epoch(&self) -> u64 {
        self.entries.last().map(|e| e.epoch).unwrap_or(0)
    }

    /// The epoch the record at `lsn` belongs to (0 before the first entry).
    pub fn epoch_at(&self, lsn: u64) -> u64 {
        let i = self.entries.partition_point(|e| e.start_lsn <= lsn);
        i.checked_sub(1).map(|i| self.entries[i].epoch).unwrap_or(0)
    }

    /// Entries covering LSNs up to `lsn` (for a snapshot at `lsn`).
    pub fn up_to(&self, lsn: u64) -> Vec<EpochEntry> {
        self.entries
            .iter()
            .copied()
            .filter(|e| e.start_lsn <= lsn)
            .collect()
    }

    /// The history as exchanged with other nodes for a log ending at `last_lsn`: the implicit epoch 0
    /// from LSN 1 is spelled out when records precede the first entry.
    pub fn for_wire(&self, last_lsn: u64) -> Vec<EpochEntry> {
        let mut v = Vec::with_capacity(self.entries.len() + 1);
        let first_start = self.entries.first().map(|e| e.start_lsn);
        if last_lsn > 0 && first_start.is_none_or(|s| s > 1) {
            v.push(EpochEntry {
                epoch: 0,
                start_lsn: 1,
            });
        }
        v.extend(
            self.entries
                .iter()
                .copied()
                .filter(|e| e.start_lsn <= last_lsn),
        );
        v
    }

    /// Adds `(epoch, start_lsn)` durably; it must be newer in both epoch and start than the last entry.
    pub fn push(&mut self, epoch: u64, start_lsn: u64) -> Result<(), EpochError> {
        if let Some(last) = self.entries.last() {
            if epoch <= last.epoch || start_lsn <= last.start_lsn {
                return Err(EpochError::OutOfOrder { epoch, start_lsn });
            }
        }
        self.entries.push(EpochEntry { epoch, start_lsn });
        if let Err(e) = self.persist() {
            self.entries.pop();
            return Err(e);
        }
        Ok(())
    }

    /// Drops entries starting after `lsn` (after the WAL was truncated there); persists if changed.
    pub fn truncate_after(&mut self, lsn: u64) -> Result<(), EpochError> {
        self.reconcile(lsn).map(|_| ())
    }

    /// Replaces the whole history (a snapshot install brings the upstream's), durably.
    pub fn replace(&mut self, mut entries: Vec<EpochEntry>) -> Result<(), EpochError> {
        entries.sort();
        entries.dedup();
        // The explicit epoch-0 entry of the wire form is implicit on disk.
        entries.retain(|e| e.epoch != 0);
        self.entries = entries;
        self.persist()
    }

    /// Writes the history crash-safely: temp file, fsync, rename over the old one, fsync the directory.
    fn persist(&self) -> Result<(), EpochError> {
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        let tmp = dir.join(TMP);
        let text = render(&self.entries);
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        crate::wal::segment::sync_dir(dir)?;
        Ok(())
    }
}

/// Writes `entries` durably as the staged history of a snapshot install (before its marker).
pub(crate) fn stage_install(dir: &Path, entries: &[EpochEntry]) -> Result<(), EpochError> {
    let mut entries = entries.to_vec();
    entries.sort();
    entries.dedup();
    entries.retain(|e| e.epoch != 0);
    let staged = EpochHistory {
        path: dir.join(STAGED),
        entries,
    };
    staged.persist()
}

/// Ends a staged install: `adopt` renames the staged history over the current one (the tree switched),
/// otherwise it is discarded. Nothing staged is a no-op.
pub(crate) fn finish_install(dir: &Path, adopt: bool) -> Result<(), EpochError> {
    let staged = dir.join(STAGED);
    if !staged.exists() {
        return Ok(());
    }
    if adopt {
        std::fs::rename(&staged, dir.join(FILE))?;
    } else {
        std::fs::remove_file(&staged)?;
    }
    crate::wal::segment::sync_dir(dir)?;
    Ok(())
}

/// Text form: a magic line, one `epoch start_lsn` line per entry, then `crc32c <hex>` of the lines above.
fn render(entries: &[EpochEntry]) -> String {
    let mut body = format!("{MAGIC}\n");
    for e in entries {
        let _ = writeln!(body, "{} {}", e.epoch, e.start_lsn);
    }
    let crc = crc32c::crc32c(body.as_bytes());
    let _ = writeln!(body, "crc32c {crc:08x}");
    body
}

fn parse(text: &str) -> Result<Vec<EpochEntry>, String> {
    let body_end = text
        .trim_end_matches('\n')
        .rfind('\n')
        .map(|i| i + 1)
        .ok_or("no checksum line")?;
    let (body, tail) = text.split_at(body_end);
    let want = tail
        .trim()
        .strip_prefix("crc32c ")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or("bad checksum line")?;
    if crc32c::crc32c(body.as_bytes()) != want {
        return Err("checksum mismatch".into());
    }
    let mut lines = body.lines();
    if lines.next() != Some(MAGIC) {
        return Err("bad header line".into());
    }
    let mut out: Vec<EpochEntry> = Vec::new();
    for line in lines {
        let mut it = line.split(' ');
        let (Some(e), Some(s), None) = (it.next(), it.next(), it.next()) else {
            return Err(format!("bad line {line:?}"));
        };
        let entry = EpochEntry {
            epoch: e.parse().map_err(|_| format!("bad epoch in {line:?}"))?,
            start_lsn: s.parse().map_err(|_| format!("bad LSN in {line:?}"))?,
        };
        if out
            .last()
            .is_some_and(|l| l.epoch >= entry.epoch || l.start_lsn >= entry.start_lsn)
        {
            return Err(format!("entries out of order at {line:?}"));
        }
        out.push(entry);
    }
    Ok(out)
}

/// A namespace's epoch state: the history, the epoch local writes get (owners only), and a counter of
/// truncations (WAL tails compare it to notice that records they may have streamed were discarded).
pub(crate) struct Epochs {
    state: Mutex<State>,
    truncations: AtomicU64,
    /// Coalesces fsyncs requested by WAL streams (one fsync for everything pending).
    pub(crate) sync_lock: Mutex<()>,
}

struct State {
    history: EpochHistory,
    /// `Some` on an owner: the epoch of this process's local writes (its entry is added lazily,
    /// just before the first record of the epoch is appended).
    write_epoch: Option<u64>,
}

impl Epochs {
    /// Loads the history in `dir` and reconciles it with a WAL ending at `last_lsn`.
    pub(crate) fn open(dir: &Path, last_lsn: u64) -> Result<Epochs, EpochError> {
        let mut history = EpochHistory::load(dir)?;
        if history.reconcile(last_lsn)? {
            tracing::warn!(dir = %dir.display(), last_lsn,
                "dropped epoch history entries whose records are not in the WAL");
        }
        Ok(Epochs {
            state: Mutex::new(State {
                history,
                write_epoch: None,
            }),
            truncations: AtomicU64::new(0),
            sync_lock: Mutex::new(()),
        })
    }

    /// Starts a new epoch for local writes (the namespace is opened by its owner); returns it.
    pub(crate) fn begin_owner_epoch(&self, now_ms: u64) -> u64 {
        let mut s = self.state.lock();
        let epoch = next_epoch(s.history.last_epoch(), now_ms);
        s.write_epoch = Some(epoch);
        epoch
    }

    /// The epoch for a local record at `lsn`, adding (durably) its history entry if it is the first.
    pub(crate) fn for_local(&self, lsn: u64) -> Result<u64, EpochError> {
        let mut s = self.state.lock();
        let Some(epoch) = s.write_epoch else {
            return Ok(s.history.last_epoch());
        };
        if s.history.last_epoch() != epoch {
            s.history.push(epoch, lsn)?;
        }
        Ok(epoch)
    }

    /// Takes a replicated record's epoch into the history (durably, before the record is appended).
    pub(crate) fn observe_replicated(&self, epoch: u64, lsn: u64) -> Result<(), EpochError> {
        let mut s = self.state.lock();
        let current = s.history.last_epoch();
        if epoch == current {
            return Ok(());
        }
        if epoch < current {
            return Err(EpochError::Regression {
                lsn,
                epoch,
                current,
            });
        }
        s.history.push(epoch, lsn)
    }

    pub(crate) fn epoch_at(&self, lsn: u64) -> u64 {
        self.state.lock().history.epoch_at(lsn)
    }

    pub(crate) fn last_epoch(&self) -> u64 {
        self.state.lock().history.last_epoch()
    }

    pub(crate) fn write_epoch(&self) -> Option<u64> {
        self.state.lock().write_epoch
    }

    pub(crate) fn for_wire(&self, last_lsn: u64) -> Vec<EpochEntry> {
        self.state.lock().history.for_wire(last_lsn)
    }

    pub(crate) fn truncate_after(&self, lsn: u64) -> Result<(), EpochError> {
        self.state.lock().history.truncate_after(lsn)
    }

    #[cfg(test)]
    pub(crate) fn replace(&self, entries: Vec<EpochEntry>) -> Result<(), EpochError> {
        self.state.lock().history.replace(entries)
    }

    /// Adopts the staged history of a committed install and reloads it (see [`finish_install`]).
    pub(crate) fn adopt_install(&self, dir: &Path) -> Result<(), EpochError> {
        let mut s = self.state.lock();
        finish_install(dir, true)?;
        s.history = EpochHistory::load(dir)?;
        Ok(())
    }

    /// Bumped before a truncation discards records.
    pub(crate) fn note_truncation(&self) {
        self.truncations.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn truncations(&self) -> u64 {
        self.truncations.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(epoch: u64, start_lsn: u64) -> EpochEntry {
        EpochEntry { epoch, start_lsn }
    }

    #[test]
    fn next_epoch_is_monotonic_and_follows_the_clock() {
        assert_eq!(next_epoch(0, 1_000), 1_000);
        assert_eq!(
            next_epoch(5_000, 1_000),
            5_001,
            "clock behind: still increases"
        );
        assert_eq!(next_epoch(u64::MAX, 0), u64::MAX);
    }

    #[test]
    fn epoch_at_and_wire_form() {
        let d = tempfile::tempdir().unwrap();
        let mut h = EpochHistory::load(d.path()).unwrap();
        assert_eq!(h.epoch_at(5), 0);
        assert_eq!(h.for_wire(0), vec![]);
        assert_eq!(h.for_wire(3), vec![e(0, 1)]);
        h.push(10, 4).unwrap();
        h.push(20, 8).unwrap();
        assert_eq!(
            (h.epoch_at(3), h.epoch_at(4), h.epoch_at(7), h.epoch_at(99)),
            (0, 10, 10, 20)
        );
        assert_eq!(h.for_wire(9), vec![e(0, 1), e(10, 4), e(20, 8)]);
        assert!(matches!(h.push(15, 20), Err(EpochError::OutOfOrder { .. })));
        assert!(matches!(h.push(30, 8), Err(EpochError::OutOfOrder { .. })));
        assert_eq!(h.up_to(7), vec![e(10, 4)]);
    }

    #[test]
    fn persisted_crash_safely_and_reconciled_on_open() {
        let d = tempfile::tempdir().unwrap();
        let mut h = EpochHistory::load(d.path()).unwrap();
        h.push(7, 1).unwrap();
        h.push(9, 11).unwrap();
        h.push(12, 21).unwrap();
        // A crash while rewriting leaves a temp file behind: ignored, the old file stays whole.
        std::fs::write(d.path().join(TMP), "unisondb-epochs 1\n99 1\ngarbage").unwrap();
        let again = EpochHistory::load(d.path()).unwrap();
        assert_eq!(again.entries(), &[e(7, 1), e(9, 11), e(12, 21)]);
        // The WAL lost its tail at LSN 15: the entry starting at 21 has no record left.
        let epochs = Epochs::open(d.path(), 15).unwrap();
        assert_eq!(epochs.last_epoch(), 9);
        let reopened = EpochHistory::load(d.path()).unwrap();
        assert_eq!(
            reopened.entries(),
            &[e(7, 1), e(9, 11)],
            "reconcile persisted"
        );
        // A restart as owner starts a new, larger epoch; its entry appears with its first record.
        assert_eq!(epochs.begin_owner_epoch(8), 10);
        assert_eq!(EpochHistory::load(d.path()).unwrap().entries().len(), 2);
        assert_eq!(epochs.for_local(16).unwrap(), 10);
        assert_eq!(epochs.for_local(17).unwrap(), 10);
        assert_eq!(
            EpochHistory::load(d.path()).unwrap().entries(),
            &[e(7, 1), e(9, 11), e(10, 16)]
        );
    }

    #[test]
    fn a_staged_install_history_is_adopted_or_dropped() {
        let d = tempfile::tempdir().unwrap();
        let mut h = EpochHistory::load(d.path()).unwrap();
        h.push(7, 1).unwrap();
        stage_install(d.path(), &[e(0, 1), e(9, 4)]).unwrap();
        // Crash before the tree switched: the staged history is dropped, ours stays.
        finish_install(d.path(), false).unwrap();
        assert_eq!(EpochHistory::load(d.path()).unwrap().entries(), &[e(7, 1)]);
        stage_install(d.path(), &[e(0, 1), e(9, 4)]).unwrap();
        finish_install(d.path(), true).unwrap();
        assert_eq!(EpochHistory::load(d.path()).unwrap().entries(), &[e(9, 4)]);
        assert!(!d.path().join(STAGED).exists());
        finish_install(d.path(), true).unwrap(); // nothing staged: no-op
    }

    #[test]
    fn the_history_outlives_wal_retention_and_each_owner_start_is_a_new_epoch() {
        use crate::engine::{EngineOptions, Namespace};
        use crate::storage::batch::WriteBatch;
        use crate::wal::{RetentionPolicy, WalOptions};
        let d = tempfile::tempdir().unwrap();
        let opts = EngineOptions {
            wal: WalOptions { segment_size: 2048 },
            retention: RetentionPolicy {
                max_bytes: Some(0),
                max_age: None,
            },
            ..EngineOptions::default()
        };
        let put = |ns: &Namespace, i: u32| {
            let mut b = WriteBatch::new();
            b.put(format!("k{i}").into_bytes(), vec![b'v'; 64]);
            ns.write(b).unwrap();
        };
        let ns = Namespace::open(d.path(), "n", opts.clone()).unwrap();
        (0..100).for_each(|i| put(&ns, i));
        let first = ns.write_epoch().unwrap();
        ns.flush().unwrap();
        assert!(
            ns.wal_first_lsn().is_none_or(|f| f > 1),
            "retention dropped segments"
        );
        drop(ns);
        let ns = Namespace::open(d.path(), "n", opts).unwrap();
        let second = ns.write_epoch().unwrap();
        assert!(second > first);
        assert_eq!(
            ns.epoch_history(100),
            vec![e(first, 1)],
            "no entry before a record"
        );
        put(&ns, 100);
        assert_eq!(ns.epoch_history(101), vec![e(first, 1), e(second, 101)]);
        assert_eq!((ns.epoch_at(1), ns.epoch_at(101)), (first, second));
    }

    #[test]
    fn damage_is_reported_not_ignored() {
        let d = tempfile::tempdir().unwrap();
        let mut h = EpochHistory::load(d.path()).unwrap();
        h.push(7, 1).unwrap();
        let path = d.path().join(FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("7 1", "8 1")).unwrap();
        assert!(matches!(
            EpochHistory::load(d.path()),
            Err(EpochError::Corrupt { .. })
        ));
    }

    #[test]
    fn followers_take_epochs_from_records() {
        let d = tempfile::tempdir().unwrap();
        let epochs = Epochs::open(d.path(), 0).unwrap();
        epochs.observe_replicated(0, 1).unwrap();
        assert_eq!(epochs.for_wire(1), vec![e(0, 1)]);
        epochs.observe_replicated(5, 2).unwrap();
        epochs.observe_replicated(5, 3).unwrap();
        assert!(matches!(
            epochs.observe_replicated(4, 4),
            Err(EpochError::Regression { .. })
        ));
        epochs.truncate_after(1).unwrap();
        assert_eq!(epochs.last_epoch(), 0);
        epochs.replace(vec![e(0, 1), e(3, 2)]).unwrap();
        assert_eq!(epochs.for_wire(5), vec![e(0, 1), e(3, 2)]);
    }
}
