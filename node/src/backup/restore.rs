//! Restoring a namespace from a backup, offline (the server stopped; see the module doc).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::compat::read_segments;
use super::files::{read_snapshot, read_wal};
use super::manifest::{self, Manifest};
use super::BackupError;
use crate::engine::{EngineOptions, FsyncPolicy, Namespace, Role};
use crate::wal::Record;

/// What to restore from.
#[derive(Debug, Clone)]
pub enum RestoreSource {
    /// A backup directory with its manifest (`POST /backups`, `unisondb backup`).
    Backup(PathBuf),
    /// A backup directory plus WAL files archived after it (object-store restore: each file in
    /// the `wal.bin` format, in LSN order; records must continue the backup's without a gap).
    Archive { dir: PathBuf, wal: Vec<PathBuf> },
    /// UnisonDB's shapes: a snapshot file (`/btree/backup`) and/or a directory of WAL segment
    /// copies (`/wal/backup`); at least one.
    Files {
        btree: Option<PathBuf>,
        wal: Option<PathBuf>,
    },
}

/// Where to stop replaying the WAL (point-in-time restore); neither: everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreTarget {
    /// Last LSN to apply.
    pub lsn: Option<u64>,
    /// Last commit time to apply, Unix milliseconds (a record's HLC `>> 16`).
    pub time_ms: Option<u64>,
}

impl RestoreTarget {
    fn admits(&self, r: &Record) -> bool {
        self.lsn.is_none_or(|l| r.lsn <= l)
            && self
                .time_ms
                .is_none_or(|t| crate::storage::hlc::physical_ms(r.hlc) <= t)
    }
}

/// The outcome (or, with `dry_run`, the plan) of a restore.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub namespace: String,
    pub dir: String,
    pub dry_run: bool,
    /// LSN of the installed snapshot (`None`: WAL only, on top of the existing data).
    pub snapshot_lsn: Option<u64>,
    pub snapshot_entries: u64,
    /// Records replayed after the snapshot.
    pub records_applied: u64,
    /// Records in the source past the target, not applied.
    pub records_skipped: u64,
    /// The namespace's LSN afterwards.
    pub lsn: u64,
}

const BATCH: usize = 512;

/// Reads and verifies a backup directory: its snapshot file and its WAL records.
fn read_backup(dir: &Path, namespace: &str) -> Result<(PathBuf, Vec<Record>), BackupError> {
    let m = Manifest::read_verified(dir)?;
    if m.namespace != namespace {
        tracing::warn!(backup = %m.namespace, into = namespace, "restoring a backup of another namespace");
    }
    let recs = read_wal(&dir.join(manifest::WAL))?;
    if recs.len() as u64 != m.wal.records || recs.first().is_some_and(|r| r.lsn != m.wal.first_lsn)
    {
        return Err(BackupError::invalid(
            dir,
            "WAL file disagrees with the manifest",
        ));
    }
    Ok((dir.join(manifest::SNAPSHOT), recs))
}

/// Restores `namespace` under `data_dir` from `source` up to `target`. Holds the namespace's lock
/// (fails while a server has it open). With `dry_run`, only reads and verifies the source.
pub fn restore(
    data_dir: &Path,
    namespace: &str,
    source: &RestoreSource,
    target: RestoreTarget,
    dry_run: bool,
) -> Result<RestoreReport, BackupError> {
    crate::engine::validate_name(namespace)?;
    let (snapshot, wal): (Option<PathBuf>, Vec<Record>) = match source {
        RestoreSource::Archive { dir, wal } => {
            let (snap, mut recs) = read_backup(dir, namespace)?;
            for f in wal {
                for r in read_wal(f)? {
                    let next = recs.last().map_or(r.lsn, |l: &Record| l.lsn + 1);
                    if r.lsn < next {
                        continue; // also in the backup's own WAL
                    }
                    if r.lsn > next {
                        return Err(BackupError::invalid(
                            f,
                            format!(
                                "starts at LSN {} but {next} is next: archived WAL is missing",
                                r.lsn
                            ),
                        ));
                    }
                    recs.push(r);
                }
            }
            (Some(snap), recs)
        }
        RestoreSource::Backup(dir) => {
            let (snap, recs) = read_backup(dir, namespace)?;
            (Some(snap), recs)
        }
        RestoreSource::Files { btree, wal } => {
            if btree.is_none() && wal.is_none() {
                return Err(BackupError::Refused(
                    "give a snapshot file (--btree), a WAL directory (--wal), or both".into(),
                ));
            }
            let recs = match wal {
                Some(w) if w.is_dir() => read_segments(w)?,
                Some(w) => read_wal(w)?,
                None => Vec::new(),
            };
            (btree.clone(), recs)
        }
    };
    // Verify the snapshot completely before touching anything.
    let header = match &snapshot {
        Some(p) => {
            let (h, entries) = read_snapshot(p)?;
            let mut n = 0u64;
            for e in entries {
                e.map_err(|e| BackupError::invalid(p, e.to_string()))?;
                n += 1;
            }
            Some((h, n))
        }
        None => None,
    };
    let dir = data_dir.join(namespace);
    let s = header.as_ref().map(|(h, _)| h.lsn);
    let mut apply: Vec<Record> = wal
        .into_iter()
        .filter(|r| s.is_none_or(|s| r.lsn > s))
        .collect();
    // Point in time: everything from the first record past the target on is left out.
    let cut = apply
        .iter()
        .position(|r| !target.admits(r))
        .unwrap_or(apply.len());
    let skipped = apply.split_off(cut).len() as u64;
    let mut report = RestoreReport {
        namespace: namespace.to_string(),
        dir: dir.display().to_string(),
        dry_run,
        snapshot_lsn: s,
        snapshot_entries: header.as_ref().map_or(0, |(_, n)| *n),
        records_applied: apply.len() as u64,
        records_skipped: skipped,
        lsn: apply.last().map(|r| r.lsn).or(s).unwrap_or(0),
    };
    if dry_run {
        return Ok(report);
    }
    crate::fsutil::create_dir_all_durable(data_dir).map_err(BackupError::io(data_dir))?;
    let opts = EngineOptions {
        fsync: FsyncPolicy::Always,
        ..EngineOptions::default()
    };
    // As a follower: no new epoch is started here; the next owner start begins one.
    let ns = Namespace::open_as(&dir, namespace, opts, Role::Follower)?;
    if let (Some(p), Some((h, _))) = (&snapshot, &header) {
        let (_, entries) = read_snapshot(p)?;
        ns.install_snapshot_from(entries, h.lsn, h.hlc, h.history.clone(), true)?;
    }
    let start = ns.latest_lsn();
    let mut pending: Vec<Record> = apply.into_iter().filter(|r| r.lsn > start).collect();
    if let Some(first) = pending.first() {
        if first.lsn != start + 1 {
            return Err(BackupError::Refused(format!(
                "the WAL starts at LSN {} but the namespace is at {start}: records are missing",
                first.lsn
            )));
        }
    }
    report.records_applied = pending.len() as u64;
    while !pending.is_empty() {
        let rest = pending.split_off(pending.len().min(BATCH));
        ns.apply_replicated(std::mem::replace(&mut pending, rest))?;
    }
    ns.flush()?;
    report.lsn = ns.latest_lsn();
    ns.close()?;
    tracing::info!(
        namespace,
        lsn = report.lsn,
        applied = report.records_applied,
        "restore complete"
    );
    Ok(report)
}
