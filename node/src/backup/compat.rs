//! UnisonDB's backup shapes: a lone B+Tree snapshot file (`POST /btree/backup`) and copies of
//! sealed WAL segment files after a segment id (`POST /wal/backup`); and reading such segment
//! copies back for `unisondb restore --wal DIR`.
//!
//! Our segment id is the segment's first LSN (files are named by it). Only sealed segments are
//! copied: they never change again, so a plain copy is consistent; the active one is still written.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use super::files::{frames, write_snapshot, Written};
use super::BackupError;
use crate::engine::Namespace;
use crate::wal::{segment, Record};

/// Writes a snapshot file of `ns` (at its current LSN, made durable) to `path`.
pub fn btree_backup(ns: &Namespace, path: &Path) -> Result<Written, BackupError> {
    if let Some(parent) = path.parent() {
        crate::fsutil::create_dir_all_durable(parent).map_err(BackupError::io(parent))?;
    }
    let snap = ns.snapshot()?;
    if ns.durable_lsn() < snap.lsn() {
        ns.make_durable()?;
    }
    let lsn = snap.lsn();
    let hlc = if lsn == ns.latest_lsn() {
        ns.latest_hlc()
    } else {
        0
    };
    let tmp = path.with_extension("partial");
    let w = write_snapshot(
        &tmp,
        lsn,
        hlc,
        &ns.epoch_history(lsn),
        snap.range(Bound::Unbounded, Bound::Unbounded, false),
    )?;
    std::fs::rename(&tmp, path).map_err(BackupError::io(path))?;
    if let Some(parent) = path.parent() {
        crate::fsutil::sync_dir(parent).map_err(BackupError::io(parent))?;
    }
    Ok(w)
}

/// Copies every sealed segment whose id (first LSN) is above `after` into `dir`; returns
/// `(segment id, copied path)` in order.
pub fn wal_backup(
    ns: &Namespace,
    after: u64,
    dir: &Path,
) -> Result<Vec<(u64, PathBuf)>, BackupError> {
    crate::fsutil::create_dir_all_durable(dir).map_err(BackupError::io(dir))?;
    // A reader pins the segments it may read: none of them can be removed while we copy.
    let first = ns.wal_first_lsn().unwrap_or(1).max(after + 1);
    let _pin = ns.wal_reader(first)?;
    let segments = ns.stats()?.wal_segments;
    let sealed = segments.len().saturating_sub(1);
    let mut out = Vec::new();
    for seg in segments.iter().take(sealed).filter(|s| s.first_lsn > after) {
        let src = ns.dir().join("wal").join(&seg.file_name);
        let dst = dir.join(&seg.file_name);
        let tmp = dst.with_extension("partial");
        std::fs::copy(&src, &tmp).map_err(BackupError::io(&src))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(BackupError::io(&tmp))?;
        std::fs::rename(&tmp, &dst).map_err(BackupError::io(&dst))?;
        out.push((seg.first_lsn, dst));
    }
    crate::fsutil::sync_dir(dir).map_err(BackupError::io(dir))?;
    Ok(out)
}

/// Reads the records of the segment files in `dir` (our `*.wal` names), in LSN order, checking
/// CRCs and contiguity across files. Zeros after a segment's last record end that segment.
pub fn read_segments(dir: &Path) -> Result<Vec<Record>, BackupError> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(BackupError::io(dir))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            segment::parse_file_name(&name).map(|lsn| (lsn, e.path()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(BackupError::invalid(
            dir,
            "holds no WAL segment files (*.wal)",
        ));
    }
    let mut out: Vec<Record> = Vec::new();
    for (first, path) in files {
        let image = std::fs::read(&path).map_err(BackupError::io(&path))?;
        match segment::decode_header(&image) {
            Ok(lsn) if lsn == first => {}
            _ => return Err(BackupError::invalid(&path, "bad segment header")),
        }
        // The written part is the valid prefix the WAL's own scan finds; only zeros may follow it.
        let scan = segment::scan(&image, first);
        let end = usize::try_from(scan.valid_end).unwrap_or(image.len());
        if image[end..].iter().any(|&b| b != 0) {
            let why = scan
                .defect
                .map_or_else(|| "damaged record".into(), |d| d.reason);
            return Err(BackupError::invalid(&path, format!("{why} (byte {end})")));
        }
        let body = &image[segment::SEGMENT_HEADER_LEN.min(end)..end];
        let format = segment::image_format(&image);
        let recs = frames(&path, body, format)?;
        if let (Some(prev), Some(next)) = (out.last(), recs.first()) {
            if next.lsn != prev.lsn + 1 {
                return Err(BackupError::invalid(
                    &path,
                    format!("starts at LSN {} after {}", next.lsn, prev.lsn),
                ));
            }
        }
        out.extend(recs);
    }
    Ok(out)
}
