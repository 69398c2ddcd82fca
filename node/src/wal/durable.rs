//! `wal/durable`: a small fsynced side record of a durable LSN lower bound.
//!
//! Every record up to the stored LSN was fsynced at some point, so a log that now ends below it
//! has lost acknowledged data (a zeroed or truncated segment, a deleted file) — damage that
//! recovery must refuse, not truncate as a torn tail. Written when a segment is created (the
//! previous one was just fsynced: `segment::create`) and on a clean close (`Wal::close`), never
//! per write. Replaced atomically (temp file, fsync, rename, fsync dir), so it is never torn.
//!
//! Format: `lsn u64 LE | crc32c(lsn bytes) u32 LE` (12 bytes).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::WalError;

/// File name inside the WAL directory.
pub(crate) const FILE: &str = "durable";
const TMP: &str = "durable.tmp";
const LEN: usize = 12;

fn encode(lsn: u64) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..8].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32c::crc32c(&b[..8]);
    b[8..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The stored bound, 0 when there is none (a new log, or one written before this record existed).
pub(crate) fn read(dir: &Path) -> Result<u64, WalError> {
    let bytes = match std::fs::read(dir.join(FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let bad = |reason: &str| WalError::Corrupt {
        segment: FILE.to_string(),
        offset: 0,
        reason: reason.to_string(),
    };
    if bytes.len() != LEN {
        return Err(bad("durable-LSN record has the wrong length"));
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&bytes[..8]);
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if crc32c::crc32c(&lsn) != crc {
        return Err(bad("durable-LSN record checksum mismatch"));
    }
    Ok(u64::from_le_bytes(lsn))
}

/// Durably replaces the record with `lsn`.
pub(crate) fn write(dir: &Path, lsn: u64) -> io::Result<()> {
    let tmp = dir.join(TMP);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(&encode(lsn))?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(FILE))?;
    File::open(dir)?.sync_all()
}

/// Removes the record (the log is being rebuilt from scratch, e.g. a finished snapshot install).
pub(crate) fn remove(dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(dir.join(FILE)) {
        Ok(()) => File::open(dir)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_missing_and_damaged() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), 0);
        write(dir.path(), 42).unwrap();
        assert_eq!(read(dir.path()).unwrap(), 42);
        write(dir.path(), 43).unwrap();
        assert_eq!(read(dir.path()).unwrap(), 43);
        assert!(!dir.path().join(TMP).exists());
        let mut b = std::fs::read(dir.path().join(FILE)).unwrap();
        b[0] ^= 1;
        std::fs::write(dir.path().join(FILE), &b).unwrap();
        assert!(matches!(read(dir.path()), Err(WalError::Corrupt { .. })));
        remove(dir.path()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), 0);
    }
}
