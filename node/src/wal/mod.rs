//! Segmented write-ahead log: length + CRC32C framed records with LSN and HLC.
//!
//! Public: the record, reader, options and error types. The log itself (`Wal`), segment files and
//! frame encoding are crate-private; the engine owns them.
//!
//! On-disk layout: a directory of segment files named by their first LSN
//! (`00000000000000000001.wal`), each a 20-byte header followed by back-to-back frames
//! (see [`record`] and [`segment`]). Recovery rules are in `recovery.rs`, retention in
//! `retention.rs`. `append` writes straight into the active file (no userspace buffer), so
//! readers can `pread` everything up to the published LSN; `sync` is one `fdatasync`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

mod durable;
mod reader;
pub(crate) mod record;
mod recovery;
mod retention;
pub(crate) mod segment;
mod shared;
mod writer;

#[cfg(test)]
mod epoch_tests;
#[cfg(test)]
mod tests;

pub use reader::WalReader;

/// `(first LSN, file name)` of every segment file in `dir`, oldest first (recovery of installs).
pub(crate) fn list_segment_files(dir: &Path) -> Result<Vec<(u64, String)>, WalError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    recovery::list_segments(dir)
}
use shared::{Shared, Writer};

/// Forgets the durable-LSN bound of the log in `dir` (its segments are being removed on purpose:
/// an interrupted snapshot install is being finished).
pub(crate) fn forget_durable(dir: &Path) -> Result<(), WalError> {
    Ok(durable::remove(dir)?)
}

/// Scans the log in `dir` without changing anything (`repair`: except truncating a torn tail),
/// for `inspect`. A missing directory is an empty log.
pub(crate) fn inspect(
    dir: &Path,
    repair: bool,
) -> Result<(RecoveryReport, Vec<SegmentInfo>), WalError> {
    let mode = if repair {
        recovery::Mode::RepairTail
    } else {
        recovery::Mode::ReadOnly
    };
    let rec = recovery::recover(dir, mode)?;
    let infos = rec
        .segments
        .iter()
        .map(|s| SegmentInfo {
            file_name: s.file_name.clone(),
            first_lsn: s.first_lsn,
            last_lsn: s.last_lsn,
            size_bytes: s.size,
            modified_unix_secs: modified_secs(&s.path),
        })
        .collect();
    Ok((rec.report, infos))
}

fn modified_secs(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Errors from the WAL. Mid-log corruption is an error, a torn tail is repaired on open.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("i/o error on WAL: {0}")]
    Io(#[from] std::io::Error),
    #[error("WAL corrupt in {segment} at offset {offset}: {reason}")]
    Corrupt {
        segment: String,
        offset: u64,
        reason: String,
    },
    #[error("LSN {got} out of sequence, expected {expected}")]
    OutOfSequence { expected: u64, got: u64 },
    #[error("LSN {requested} is no longer in the WAL (oldest available is {oldest})")]
    Trimmed { requested: u64, oldest: u64 },
    #[error("WAL writer is poisoned after a failed write: {0}")]
    Poisoned(String),
    #[error("WAL payload of {0} bytes exceeds the u32 frame limit")]
    PayloadTooLarge(usize),
}

/// One WAL record as stored and as shipped to replicas (verbatim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: u64,
    pub hlc: u64,
    /// The history this record belongs to (see `engine::epoch`); 0 for records from v1 segments.
    pub epoch: u64,
    pub payload: Bytes,
}

/// WAL sizing; fsync policy lives in the engine (it decides when to call `sync`).
#[derive(Debug, Clone)]
pub struct WalOptions {
    pub segment_size: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_size: 64 << 20,
        }
    }
}

/// What `open` found and repaired.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    pub first_lsn: Option<u64>,
    pub last_lsn: u64,
    pub truncated_bytes: u64,
    pub truncated_segment: Option<String>,
    /// A torn tail found past the durable bound (truncated unless opened read-only).
    pub torn_tail: Option<TornTail>,
}

/// Crash debris at the end of the last segment: bytes past the last valid record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TornTail {
    pub segment: String,
    /// Offset of the first byte that is not part of a valid record.
    pub offset: u64,
    pub bytes: u64,
    pub reason: String,
}

/// One segment file, for `inspect`, retention and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SegmentInfo {
    pub file_name: String,
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub size_bytes: u64,
    pub modified_unix_secs: u64,
}

/// When to drop segments already reflected in the B+Tree checkpoint.
///
/// `max_bytes: Some(0)` drops everything eligible; both `None` keeps everything.
#[derive(Debug, Clone, Default)]
pub struct RetentionPolicy {
    pub max_bytes: Option<u64>,
    pub max_age: Option<Duration>,
}

/// A namespace's log. `append` is called by one writer at a time; readers are many.
///
/// Cheap to clone (one `Arc`); all methods take `&self` and are safe to call concurrently.
#[derive(Clone)]
pub(crate) struct Wal {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("last_lsn", &self.last_lsn())
            .field("published_lsn", &self.published_lsn())
            .finish()
    }
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`, validating all segments and repairing a torn tail.
    ///
    /// Everything recovered is considered published: readers may stream it immediately.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, RecoveryReport), WalError> {
        let rec = recovery::recover(dir, recovery::Mode::Open)?;
        let active_size = rec.active.as_ref().map(|a| a.size).unwrap_or(0);
        let format = match &rec.active {
            Some(a) => segment::file_format(&a.file)?,
            None => record::FrameFormat::V2,
        };
        let writer = Writer {
            active: rec.active,
            buf: Vec::new(),
            poisoned: None,
            format,
        };
        let shared = Shared::new(
            dir.to_path_buf(),
            opts,
            writer,
            rec.segments,
            rec.last_lsn,
            active_size,
        );
        tracing::info!(
            dir = %dir.display(),
            segments = rec.report.segments,
            records = rec.report.records,
            last_lsn = rec.report.last_lsn,
            truncated_bytes = rec.report.truncated_bytes,
            "WAL opened"
        );
        Ok((
            Wal {
                shared: Arc::new(shared),
            },
            rec.report,
        ))
    }

    /// Appends a record of epoch 0 (tests of the log itself).
    #[cfg(test)]
    pub fn append(&self, lsn: u64, hlc: u64, payload: &[u8]) -> Result<(), WalError> {
        self.shared.append(lsn, hlc, 0, payload)
    }

    /// Appends a record; `lsn` must be `last_lsn() + 1`. No fsync: call `sync` for durability.
    pub fn append_record(
        &self,
        lsn: u64,
        hlc: u64,
        epoch: u64,
        payload: &[u8],
    ) -> Result<(), WalError> {
        self.shared.append(lsn, hlc, epoch, payload)
    }

    /// Appends consecutive records (the first must be `last_lsn() + 1`) with one write per segment.
    pub fn append_records(&self, records: &[Record]) -> Result<(), WalError> {
        self.shared.append_many(records)
    }

    /// Whether a record of `payload_len` bytes fits in the active segment (no roll due).
    pub fn has_room(&self, payload_len: usize) -> bool {
        self.shared.has_room(payload_len)
    }

    /// Makes every record appended so far durable (one `fdatasync` of the active segment).
    pub fn sync(&self) -> Result<(), WalError> {
        self.shared.sync().map(|_| ())
    }

    /// Syncs the log and records its last LSN as the durable bound (`durable.rs`): after a clean
    /// close, a restart that finds fewer records refuses to start instead of truncating.
    pub fn close(&self) -> Result<(), WalError> {
        self.shared.sync()?;
        let durable = self.shared.durable_lsn.load(Ordering::Acquire);
        durable::write(&self.shared.dir, durable)?;
        Ok(())
    }

    /// Highest LSN on stable storage (every fsync raises it; see `Shared::durable_lsn`).
    pub fn durable_lsn(&self) -> u64 {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }

    /// Notified whenever `durable_lsn` moves.
    pub fn subscribe_durable(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.durable_tx.subscribe()
    }

    /// Discards every record after `lsn`; returns how many were dropped (see `Shared::truncate_after`).
    pub fn truncate_after(&self, lsn: u64) -> Result<u64, WalError> {
        self.shared.truncate_after(lsn)
    }

    /// Like [`Wal::reset`], but also when `next_lsn` is not ahead of the current end.
    pub fn reset_replacing(&self, next_lsn: u64) -> Result<(), WalError> {
        self.shared.reset_replacing(next_lsn)
    }

    /// Makes records up to `lsn` visible to readers and wakes `wait_published` callers.
    pub fn publish(&self, lsn: u64) {
        self.shared.publish(lsn)
    }

    /// Hides records after `lsn` from readers again (cluster mode at open; see `Shared::unpublish`).
    pub(crate) fn unpublish(&self, lsn: u64) {
        self.shared.unpublish(lsn)
    }

    /// A reader of every appended record, published or not (the Raft log reader).
    pub(crate) fn appended_reader(&self, from_lsn: u64) -> Result<WalReader, WalError> {
        Ok(WalReader::new(Arc::clone(&self.shared), from_lsn)?.through_appended())
    }

    /// LSN of the last appended record (0 for an empty log).
    pub fn last_lsn(&self) -> u64 {
        self.shared.last_lsn.load(Ordering::Acquire)
    }

    /// Highest LSN readers may see.
    pub fn published_lsn(&self) -> u64 {
        self.shared.published.load(Ordering::Acquire)
    }

    /// Blocks until `published_lsn() > after_lsn` or `timeout` passes; returns the published LSN.
    #[cfg(test)]
    pub fn wait_published(&self, after_lsn: u64, timeout: Duration) -> u64 {
        self.shared.wait_published(after_lsn, timeout)
    }

    /// Oldest LSN still stored, or `None` if the log holds no records.
    pub fn first_lsn(&self) -> Option<u64> {
        let first = self.shared.segments.read().first().map(|s| s.first_lsn)?;
        (first <= self.last_lsn()).then_some(first)
    }

    /// Opens a reader whose first record is `from_lsn` (0 = from the beginning).
    ///
    /// Fails with `Trimmed` if retention already removed `from_lsn` (for 0, `requested` is 1).
    pub fn reader(&self, from_lsn: u64) -> Result<WalReader, WalError> {
        WalReader::new(Arc::clone(&self.shared), from_lsn)
    }

    /// Registers a pin keeping LSNs `>= lsn` from retention; returns its id (see [`Wal::advance_pin`]).
    pub fn pin(&self, lsn: u64) -> u64 {
        self.shared.pin(lsn)
    }

    /// Moves pin `id` forward to `lsn`.
    pub fn advance_pin(&self, id: u64, lsn: u64) {
        self.shared.advance_pin(id, lsn)
    }

    /// Drops every record and makes `next_lsn` the next LSN to append (after a snapshot install that
    /// supersedes the whole log). Readers positioned before `next_lsn` then get `Trimmed`.
    pub fn reset(&self, next_lsn: u64) -> Result<(), WalError> {
        self.shared.reset(next_lsn)
    }

    /// Deletes old segments covered by `checkpoint_lsn` as `policy` allows; returns how many.
    ///
    /// Drops oldest-first while total bytes exceed `max_bytes` or the segment is older than
    /// `max_age`; both `None` keeps everything. Never the active segment or one a reader pins.
    pub fn retain(&self, checkpoint_lsn: u64, policy: &RetentionPolicy) -> Result<usize, WalError> {
        self.shared.retain(checkpoint_lsn, policy)
    }

    /// Lists the segment files, oldest first, for inspection and metrics.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let segs = self.shared.segments.read();
        (0..segs.len())
            .map(|i| {
                let (last_lsn, size_bytes) = self.shared.segment_bounds(&segs, i);
                let s = &segs[i];
                let modified_unix_secs = modified_secs(&s.path);
                SegmentInfo {
                    file_name: s.file_name.clone(),
                    first_lsn: s.first_lsn,
                    last_lsn,
                    size_bytes,
                    modified_unix_secs,
                }
            })
            .collect()
    }
}
