//! Restoring a namespace from a backup, offline (the server stopped; see the module doc).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::compat::read_segments;
use super::files::{read_snapshot, read_wal, EntryResult, SnapshotEntries, SnapshotHeader};
use super::manifest::{self, Manifest, SnapshotPart};
use super::BackupError;
use crate::engine::{EngineError, EngineOptions, FsyncPolicy, Namespace, Role};
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

/// A snapshot file to install, with what its manifest says about it (none for bare files).
struct SnapshotSource {
    path: PathBuf,
    expect: Option<SnapshotPart>,
}

/// Reads and verifies a backup directory: its manifest, its WAL records and (with `full`) the
/// snapshot file's CRC; otherwise the snapshot is verified once, while it is installed.
fn read_backup(
    dir: &Path,
    namespace: &str,
    full: bool,
) -> Result<(SnapshotSource, Vec<Record>), BackupError> {
    let m = Manifest::read_checked(dir, full)?;
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
    let snap = SnapshotSource {
        path: dir.join(manifest::SNAPSHOT),
        expect: Some(m.snapshot),
    };
    Ok((snap, recs))
}

/// Opens a snapshot file and checks its header against the manifest.
fn open_snapshot(src: &SnapshotSource) -> Result<(SnapshotHeader, SnapshotEntries), BackupError> {
    let (h, entries) = read_snapshot(&src.path)?;
    if let Some(e) = &src.expect {
        if (h.lsn, h.hlc) != (e.lsn, e.hlc) {
            return Err(BackupError::invalid(
                &src.path,
                "snapshot header differs from the manifest",
            ));
        }
    }
    Ok((h, entries))
}

/// Counts the entries streamed through it and, at the end, fails the stream if the count differs
/// from the manifest's: together with the file's trailer CRC this is the whole-file check.
struct Counted<I> {
    inner: I,
    n: u64,
    expect: Option<u64>,
    path: PathBuf,
}

impl<I: Iterator<Item = EntryResult>> Iterator for Counted<I> {
    type Item = EntryResult;
    fn next(&mut self) -> Option<EntryResult> {
        match self.inner.next() {
            Some(item) => {
                self.n += 1;
                Some(item)
            }
            None => match self.expect.take() {
                Some(want) if want != self.n => Some(Err(EngineError::Corrupt(format!(
                    "snapshot file {}: {} entries, the manifest says {want}",
                    self.path.display(),
                    self.n
                )))),
                _ => None,
            },
        }
    }
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
    // A dry run reads everything once to verify it; a restore verifies the snapshot while
    // installing it (an install aborts on damage before anything changes).
    let (snapshot, wal): (Option<SnapshotSource>, Vec<Record>) = match source {
        RestoreSource::Archive { dir, wal } => {
            let (snap, mut recs) = read_backup(dir, namespace, dry_run)?;
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
            let (snap, recs) = read_backup(dir, namespace, dry_run)?;
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
            let snap = btree
                .clone()
                .map(|path| SnapshotSource { path, expect: None });
            (snap, recs)
        }
    };
    let header = match &snapshot {
        Some(src) => {
            let (h, entries) = open_snapshot(src)?;
            let mut n = src.expect.map_or(0, |e| e.entries);
            if dry_run {
                // Verify the snapshot completely: a dry run answers whether a restore would work.
                n = 0;
                for e in entries {
                    e.map_err(|e| BackupError::invalid(&src.path, e.to_string()))?;
                    n += 1;
                }
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
    let existed = dir.exists();
    // As a follower: no new epoch is started here; the next owner start begins one.
    let ns = Namespace::open_as(&dir, namespace, opts, Role::Follower)?;
    if let (Some(src), Some((h, _))) = (&snapshot, &header) {
        let (_, entries) = open_snapshot(src)?;
        let mut counted = Counted {
            inner: entries,
            n: 0,
            expect: src.expect.map(|e| e.entries),
            path: src.path.clone(),
        };
        let installed =
            ns.install_snapshot_from(&mut counted, h.lsn, h.hlc, h.history.clone(), true);
        if let Err(e) = installed {
            // Damage found while streaming: the install aborted before changing anything; a
            // namespace this restore created is removed again, so a refused restore leaves nothing.
            drop(ns);
            if !existed {
                if let Err(rm) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %rm, "cannot remove the half-created namespace");
                }
            }
            return Err(match e {
                EngineError::Corrupt(why) => BackupError::invalid(&src.path, why),
                e => e.into(),
            });
        }
        report.snapshot_entries = counted.n;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::WriteBatch;

    fn write_keys(ns: &Namespace, prefix: &str, n: usize) {
        let mut b = WriteBatch::new();
        for i in 0..n {
            b.put(format!("{prefix}{i:05}").into_bytes(), vec![i as u8; 300]);
        }
        ns.write(b).unwrap();
    }

    /// The snapshot is verified once, while it is installed: damage still refuses the restore,
    /// changes nothing in an existing namespace and leaves no new one behind.
    #[test]
    fn damaged_snapshot_is_refused_while_streaming() {
        let root = tempfile::tempdir().unwrap();
        let src =
            Namespace::open(&root.path().join("src"), "ns", EngineOptions::default()).unwrap();
        write_keys(&src, "k", 2000);
        src.flush().unwrap();
        let (_, bdir) = super::super::take(&src, &root.path().join("backups")).unwrap();
        drop(src);

        // Intact: restores every entry.
        let data = root.path().join("data");
        let rep = restore(
            &data,
            "ns",
            &RestoreSource::Backup(bdir.clone()),
            RestoreTarget::default(),
            false,
        )
        .unwrap();
        assert_eq!(rep.snapshot_entries, 2000);
        let ns = Namespace::open(&data.join("ns"), "ns", EngineOptions::default()).unwrap();
        assert_eq!(ns.get(b"k01999").unwrap(), Some(vec![1999usize as u8; 300]));
        assert!(ns.check().unwrap().problems.is_empty());
        drop(ns);

        // One flipped bit in the middle of the snapshot (same size, so only the CRC can tell).
        let snap = bdir.join(manifest::SNAPSHOT);
        let mut bytes = std::fs::read(&snap).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&snap, &bytes).unwrap();
        let fresh = root.path().join("fresh");
        let err = restore(
            &fresh,
            "ns",
            &RestoreSource::Backup(bdir.clone()),
            RestoreTarget::default(),
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("trailer"), "{err}");
        assert!(
            !fresh.join("ns").exists(),
            "a refused restore left a namespace"
        );

        // Into the existing namespace: refused, its data untouched.
        let ns_dir = data.join("ns");
        {
            let ns = Namespace::open(&ns_dir, "ns", EngineOptions::default()).unwrap();
            write_keys(&ns, "extra", 10);
            ns.flush().unwrap();
        }
        assert!(restore(
            &data,
            "ns",
            &RestoreSource::Backup(bdir.clone()),
            RestoreTarget::default(),
            false
        )
        .is_err());
        let ns = Namespace::open(&ns_dir, "ns", EngineOptions::default()).unwrap();
        assert_eq!(ns.get(b"extra00009").unwrap(), Some(vec![9u8; 300]));
        assert_eq!(ns.get(b"k00005").unwrap(), Some(vec![5u8; 300]));
        drop(ns);

        // A truncated snapshot fails on its size before anything is read.
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&snap, &bytes).unwrap();
        let err = restore(
            &fresh,
            "ns",
            &RestoreSource::Backup(bdir),
            RestoreTarget::default(),
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("size differs"), "{err}");
        assert!(!fresh.join("ns").exists());
    }
}
