//! `manifest.json`: what a backup holds, written last so its presence means the backup is whole.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BackupError;
use crate::engine::EpochEntry;

/// Name of the manifest inside a backup directory.
pub const FILE: &str = "manifest.json";
/// Names of the data files.
pub const SNAPSHOT: &str = "snapshot.bin";
pub const WAL: &str = "wal.bin";
const FORMAT: u32 = 1;

/// A complete backup of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub namespace: String,
    pub created_unix_ms: u64,
    /// The node version that took it.
    pub node_version: String,
    pub snapshot: SnapshotPart,
    pub wal: WalPart,
    /// Epoch history up to `wal.lastLsn` (or the snapshot's LSN when the WAL part is empty).
    pub epoch_history: Vec<HistoryEntry>,
    /// HLC of the snapshot's LSN and of the last record: the time range a point-in-time restore
    /// can reach (`hlc >> 16` is Unix milliseconds).
    pub hlc_range: [u64; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotPart {
    pub lsn: u64,
    pub hlc: u64,
    pub entries: u64,
    pub bytes: u64,
    /// CRC32C of the whole file.
    pub crc32c: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalPart {
    /// `snapshot.lsn + 1`; with no records, `lastLsn` is `snapshot.lsn`.
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub records: u64,
    pub bytes: u64,
    pub crc32c: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub epoch: u64,
    pub start_lsn: u64,
}

impl From<EpochEntry> for HistoryEntry {
    fn from(e: EpochEntry) -> Self {
        HistoryEntry {
            epoch: e.epoch,
            start_lsn: e.start_lsn,
        }
    }
}

impl Manifest {
    pub(crate) fn format() -> u32 {
        FORMAT
    }

    /// Writes the manifest atomically and durably (temp file, fsync, rename, directory fsync).
    pub fn write(&self, dir: &Path) -> Result<(), BackupError> {
        let path = dir.join(FILE);
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| BackupError::invalid(&path, e.to_string()))?;
        crate::fsutil::write_atomic(&path, &json).map_err(BackupError::io(&path))
    }

    /// Reads and checks a backup directory's manifest and the sizes and checksums of its files.
    pub fn read_verified(dir: &Path) -> Result<Manifest, BackupError> {
        Self::read_checked(dir, true)
    }

    /// As [`Manifest::read_verified`], but with `snapshot_crc` false the snapshot file's size is
    /// checked and its CRC left to the reader that streams it (a restore checks the snapshot's
    /// own trailer CRC, which covers every byte that matters, against this manifest: each byte
    /// is read and checksummed once).
    pub fn read_checked(dir: &Path, snapshot_crc: bool) -> Result<Manifest, BackupError> {
        let path = dir.join(FILE);
        let text = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                BackupError::invalid(
                    dir,
                    "no manifest.json: not a backup, or an interrupted one (never restored from)",
                )
            } else {
                BackupError::io(&path)(e)
            }
        })?;
        let m: Manifest = serde_json::from_slice(&text)
            .map_err(|e| BackupError::invalid(&path, e.to_string()))?;
        if m.format != FORMAT {
            return Err(BackupError::invalid(
                &path,
                format!("manifest format {} (this node reads {FORMAT})", m.format),
            ));
        }
        for (name, bytes, crc) in [
            (SNAPSHOT, m.snapshot.bytes, m.snapshot.crc32c),
            (WAL, m.wal.bytes, m.wal.crc32c),
        ] {
            let p = dir.join(name);
            if name == SNAPSHOT && !snapshot_crc {
                let len = std::fs::metadata(&p).map_err(BackupError::io(&p))?.len();
                if len != bytes {
                    return Err(BackupError::invalid(&p, "size differs from the manifest"));
                }
                continue;
            }
            if file_crc(&p).map_err(BackupError::io(&p))? != (bytes, crc) {
                return Err(BackupError::invalid(
                    &p,
                    "size or CRC32C differs from the manifest",
                ));
            }
        }
        Ok(m)
    }
}

/// Size and CRC32C of a file, read in chunks.
pub(crate) fn file_crc(path: &Path) -> std::io::Result<(u64, u32)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut n, mut crc) = (0u64, 0u32);
    loop {
        let got = f.read(&mut buf)?;
        if got == 0 {
            return Ok((n, crc));
        }
        n += got as u64;
        crc = crc32c::crc32c_append(crc, &buf[..got]);
    }
}
