//! Taking a backup of a live namespace (see the module doc for the layout).

use std::ops::Bound;
use std::path::{Path, PathBuf};

use super::files::{write_snapshot, write_wal};
use super::manifest::{self, HistoryEntry, Manifest, SnapshotPart, WalPart};
use super::BackupError;
use crate::engine::Namespace;

/// Takes a consistent backup of `ns` into a new directory `<dest_root>/<id>/` while writes
/// continue; returns its manifest. Blocking.
pub fn take(ns: &Namespace, dest_root: &Path) -> Result<(Manifest, PathBuf), BackupError> {
    // Pin the WAL from the current end first: records after the snapshot cannot be removed by
    // retention while the snapshot is written (a flush may move the checkpoint past them).
    let pinned_from = ns.latest_lsn() + 1;
    let mut reader = ns.wal_reader(pinned_from)?;
    let snap = ns.snapshot()?;
    let s = snap.lsn();
    // Only durable state goes into a backup.
    if ns.durable_lsn() < s {
        ns.make_durable()?;
    }
    let created = crate::storage::hlc::wall_ms();
    let id = format!("{}-{created}-{s}", ns.name());
    let dir = dest_root.join(&id);
    crate::fsutil::create_dir_all_durable(&dir).map_err(BackupError::io(&dir))?;

    let snap_hlc = ns.hlc_at(s);
    let history_s = ns.epoch_history(s);
    let snap_file = dir.join(manifest::SNAPSHOT);
    let sw = write_snapshot(
        &snap_file,
        s,
        snap_hlc,
        &history_s,
        snap.range(Bound::Unbounded, Bound::Unbounded, false),
    )?;
    drop(snap);

    // The WAL after the snapshot, up to what is durable now.
    let end = ns.durable_lsn().max(s);
    let mut last_hlc = snap_hlc;
    let mut next = pinned_from;
    let records = std::iter::from_fn(|| loop {
        if next > end {
            return None;
        }
        match reader.next_record() {
            Ok(Some(rec)) => {
                next = rec.lsn + 1;
                if rec.lsn <= s {
                    continue; // written between the pin and the snapshot: in the snapshot
                }
                last_hlc = rec.hlc;
                return Some(Ok(rec));
            }
            Ok(None) => {
                return Some(Err(BackupError::Refused(format!(
                    "WAL record {next} is durable but not readable"
                ))))
            }
            Err(e) => return Some(Err(e.into())),
        }
    });
    let wal_file = dir.join(manifest::WAL);
    let ww = write_wal(&wal_file, records)?;
    let last = s + ww.items;
    let m = Manifest {
        format: Manifest::format(),
        id,
        namespace: ns.name().to_string(),
        created_unix_ms: created,
        node_version: env!("CARGO_PKG_VERSION").to_string(),
        snapshot: SnapshotPart {
            lsn: s,
            hlc: snap_hlc,
            entries: sw.items,
            bytes: sw.bytes,
            crc32c: sw.crc32c,
        },
        wal: WalPart {
            first_lsn: s + 1,
            last_lsn: last,
            records: ww.items,
            bytes: ww.bytes,
            crc32c: ww.crc32c,
        },
        epoch_history: ns
            .epoch_history(last)
            .into_iter()
            .map(HistoryEntry::from)
            .collect(),
        hlc_range: [snap_hlc, last_hlc],
    };
    crate::fsutil::sync_dir(&dir).map_err(BackupError::io(&dir))?;
    m.write(&dir)?;
    tracing::info!(namespace = ns.name(), backup = %m.id, snapshot_lsn = s, last_lsn = last,
        entries = sw.items, records = ww.items, "backup taken");
    Ok((m, dir))
}
