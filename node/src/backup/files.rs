//! The two data files of a backup, their encoders and verifying decoders.
//!
//! `snapshot.bin`: `"UNIBSNP1"`, LSN u64, HLC u64, history length u32 and `(epoch u64, start_lsn
//! u64)` pairs, then entries `key_len u32 | key | value_len u32 | value`, then the end mark
//! `0xFFFF_FFFF`, the entry count u64 and a CRC32C u32 over the header and all entries (the
//! replication snapshot's [`EntryCrc`], seeded with the header's CRC). `wal.bin`: `"UNIBWAL1"` then WAL frames (format v2, each with its CRC) in LSN
//! order. All integers little-endian. Readers check everything and never panic on bad input.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::BackupError;
use crate::engine::EpochEntry;
use crate::replication::snapshot::EntryCrc;
use crate::wal::record::{self, Decoded, FrameFormat};
use crate::wal::Record;

const SNAPSHOT_MAGIC: &[u8; 8] = b"UNIBSNP1";
pub(crate) const WAL_MAGIC: &[u8; 8] = b"UNIBWAL1";
const END: u32 = u32::MAX;
/// Largest key or value a snapshot file may hold (bad lengths are corruption, not allocations).
const MAX_ITEM: u32 = 1 << 30;

/// Counts bytes and folds them into a CRC32C as they are written (the manifest's file checksum).
pub struct Checked<W> {
    inner: W,
    pub bytes: u64,
    pub crc: u32,
}

impl<W: Write> Checked<W> {
    pub fn new(inner: W) -> Self {
        Checked {
            inner,
            bytes: 0,
            crc: 0,
        }
    }
}

impl<W: Write> Write for Checked<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What a written file holds, for the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    pub crc32c: u32,
    /// Entries (snapshot) or records (WAL).
    pub items: u64,
}

/// Creates `path`, lets `fill` write into it, then flushes and fsyncs it.
fn write_file(
    path: &Path,
    fill: impl FnOnce(&mut Checked<BufWriter<&File>>) -> Result<u64, BackupError>,
) -> Result<Written, BackupError> {
    let file = File::create(path).map_err(BackupError::io(path))?;
    let mut w = Checked::new(BufWriter::with_capacity(1 << 20, &file));
    let items = fill(&mut w)?;
    w.flush().map_err(BackupError::io(path))?;
    let (bytes, crc32c) = (w.bytes, w.crc);
    drop(w);
    file.sync_all().map_err(BackupError::io(path))?;
    Ok(Written {
        bytes,
        crc32c,
        items,
    })
}

/// The header bytes; the trailer's CRC starts from their CRC, so header damage is caught too.
fn encode_header(lsn: u64, hlc: u64, history: &[EpochEntry]) -> Vec<u8> {
    let mut head = Vec::with_capacity(28 + history.len() * 16);
    head.extend_from_slice(SNAPSHOT_MAGIC);
    head.extend_from_slice(&lsn.to_le_bytes());
    head.extend_from_slice(&hlc.to_le_bytes());
    head.extend_from_slice(&(history.len() as u32).to_le_bytes());
    for e in history {
        head.extend_from_slice(&e.epoch.to_le_bytes());
        head.extend_from_slice(&e.start_lsn.to_le_bytes());
    }
    head
}

/// Writes a snapshot file from `entries` (in key order) taken at `lsn`.
pub fn write_snapshot<I>(
    path: &Path,
    lsn: u64,
    hlc: u64,
    history: &[EpochEntry],
    entries: I,
) -> Result<Written, BackupError>
where
    I: IntoIterator<Item = Result<(Vec<u8>, Vec<u8>), crate::engine::EngineError>>,
{
    write_file(path, |w| {
        let io = BackupError::io(path);
        let head = encode_header(lsn, hlc, history);
        w.write_all(&head).map_err(io)?;
        let mut crc = EntryCrc {
            crc: crc32c::crc32c(&head),
            count: 0,
        };
        for item in entries {
            let (k, v) = item?;
            crc.add(&k, &v);
            let io = BackupError::io(path);
            (|| {
                w.write_all(&(k.len() as u32).to_le_bytes())?;
                w.write_all(&k)?;
                w.write_all(&(v.len() as u32).to_le_bytes())?;
                w.write_all(&v)
            })()
            .map_err(io)?;
        }
        let io = BackupError::io(path);
        (|| {
            w.write_all(&END.to_le_bytes())?;
            w.write_all(&crc.count.to_le_bytes())?;
            w.write_all(&crc.crc.to_le_bytes())
        })()
        .map_err(io)?;
        Ok(crc.count)
    })
}

/// Writes a WAL file holding `records` (consecutive LSNs).
pub fn write_wal<I>(path: &Path, records: I) -> Result<Written, BackupError>
where
    I: IntoIterator<Item = Result<Record, BackupError>>,
{
    write_file(path, |w| {
        w.write_all(WAL_MAGIC).map_err(BackupError::io(path))?;
        let mut n = 0u64;
        let mut frame = Vec::new();
        for rec in records {
            let rec = rec?;
            frame.clear();
            record::encode_into(&mut frame, rec.lsn, rec.hlc, rec.epoch, &rec.payload);
            w.write_all(&frame).map_err(BackupError::io(path))?;
            n += 1;
        }
        Ok(n)
    })
}

/// The header of a snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub lsn: u64,
    pub hlc: u64,
    pub history: Vec<EpochEntry>,
}

/// Reads a snapshot file: its header, and an iterator over its entries that checks the trailer
/// (count and CRC) at the end — an install fed by it aborts on any damage.
pub fn read_snapshot(path: &Path) -> Result<(SnapshotHeader, SnapshotEntries), BackupError> {
    let file = File::open(path).map_err(BackupError::io(path))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let bad = |why: &str| BackupError::invalid(path, why.to_string());
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|_| bad("too short for a snapshot file"))?;
    if &magic != SNAPSHOT_MAGIC {
        return Err(bad("not a UnisonDB snapshot file (bad magic)"));
    }
    let lsn = read_u64(&mut r).ok_or_else(|| bad("truncated header"))?;
    let hlc = read_u64(&mut r).ok_or_else(|| bad("truncated header"))?;
    let n = read_u32(&mut r).ok_or_else(|| bad("truncated header"))?;
    if n > 1 << 20 {
        return Err(bad("implausible epoch history length"));
    }
    let mut history = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let epoch = read_u64(&mut r).ok_or_else(|| bad("truncated history"))?;
        let start_lsn = read_u64(&mut r).ok_or_else(|| bad("truncated history"))?;
        history.push(EpochEntry { epoch, start_lsn });
    }
    let crc = EntryCrc {
        crc: crc32c::crc32c(&encode_header(lsn, hlc, &history)),
        count: 0,
    };
    Ok((
        SnapshotHeader { lsn, hlc, history },
        SnapshotEntries {
            r,
            path: path.display().to_string(),
            crc,
            done: false,
        },
    ))
}

fn read_u32(r: &mut impl Read) -> Option<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).ok()?;
    Some(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> Option<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// One entry read back, or why the file is damaged.
pub type EntryResult = Result<(Vec<u8>, Vec<u8>), crate::engine::EngineError>;

/// The entries of a snapshot file, verified against its trailer.
pub struct SnapshotEntries {
    r: BufReader<File>,
    path: String,
    crc: EntryCrc,
    done: bool,
}

impl SnapshotEntries {
    fn fail(&mut self, why: &str) -> Option<EntryResult> {
        self.done = true;
        Some(Err(crate::engine::EngineError::Corrupt(format!(
            "snapshot file {}: {why}",
            self.path
        ))))
    }

    fn item(&mut self, len: u32) -> Option<Vec<u8>> {
        if len > MAX_ITEM {
            return None;
        }
        // Read straight into fresh capacity: no zero-fill of what is overwritten anyway.
        let mut b = Vec::with_capacity(len as usize);
        let got = (&mut self.r).take(len as u64).read_to_end(&mut b).ok()?;
        (got == len as usize).then_some(b)
    }
}

impl Iterator for SnapshotEntries {
    type Item = EntryResult;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let Some(klen) = read_u32(&mut self.r) else {
            return self.fail("ends before its trailer");
        };
        if klen == END {
            self.done = true;
            let count = read_u64(&mut self.r);
            let crc = read_u32(&mut self.r);
            if count != Some(self.crc.count) || crc != Some(self.crc.crc) {
                return self.fail("trailer does not match the entries (count or CRC)");
            }
            return None;
        }
        let Some(key) = self.item(klen) else {
            return self.fail("truncated or oversized key");
        };
        let Some(vlen) = read_u32(&mut self.r) else {
            return self.fail("truncated entry");
        };
        let Some(value) = self.item(vlen) else {
            return self.fail("truncated or oversized value");
        };
        self.crc.add(&key, &value);
        Some(Ok((key, value)))
    }
}

/// Reads every record of a WAL file, checking frame CRCs and that LSNs are consecutive.
pub fn read_wal(path: &Path) -> Result<Vec<Record>, BackupError> {
    let image = std::fs::read(path).map_err(BackupError::io(path))?;
    if image.get(..8) != Some(&WAL_MAGIC[..]) {
        return Err(BackupError::invalid(path, "not a UnisonDB backup WAL file"));
    }
    frames(path, &image[8..], FrameFormat::V2)
}

/// Decodes consecutive frames filling `buf` exactly.
pub(crate) fn frames(
    path: &Path,
    buf: &[u8],
    format: FrameFormat,
) -> Result<Vec<Record>, BackupError> {
    let mut out: Vec<Record> = Vec::new();
    let mut off = 0usize;
    while off < buf.len() {
        match record::decode(&buf[off..], format) {
            Decoded::Frame(f) => {
                if let Some(prev) = out.last() {
                    if f.lsn != prev.lsn + 1 {
                        return Err(BackupError::invalid(
                            path,
                            format!("LSN {} follows {}", f.lsn, prev.lsn),
                        ));
                    }
                }
                out.push(Record {
                    lsn: f.lsn,
                    hlc: f.hlc,
                    epoch: f.epoch,
                    payload: bytes::Bytes::copy_from_slice(f.payload),
                });
                off += f.len;
            }
            Decoded::CrcMismatch { lsn } => {
                return Err(BackupError::invalid(
                    path,
                    format!("record {lsn} fails its CRC"),
                ))
            }
            Decoded::Incomplete { .. } => {
                return Err(BackupError::invalid(
                    path,
                    format!("truncated record at byte {off}"),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(lsn: u64) -> Record {
        Record {
            lsn,
            hlc: lsn << 16,
            epoch: 7,
            payload: bytes::Bytes::from(vec![lsn as u8; 10]),
        }
    }

    #[test]
    fn snapshot_and_wal_files_round_trip_and_detect_damage() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("snapshot.bin");
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..100u32)
            .map(|i| (i.to_be_bytes().to_vec(), vec![1; i as usize]))
            .collect();
        let hist = [EpochEntry {
            epoch: 7,
            start_lsn: 1,
        }];
        let w = write_snapshot(&p, 42, 9, &hist, entries.iter().cloned().map(Ok)).unwrap();
        assert_eq!(w.items, 100);
        assert_eq!(w.bytes, std::fs::metadata(&p).unwrap().len());
        assert_eq!(w.crc32c, crc32c::crc32c(&std::fs::read(&p).unwrap()));
        let (h, it) = read_snapshot(&p).unwrap();
        assert_eq!((h.lsn, h.hlc, h.history.as_slice()), (42, 9, &hist[..]));
        let back: Vec<_> = it.map(Result::unwrap).collect();
        assert_eq!(back, entries);
        // Every single flipped byte past the header is caught (by the trailer or the framing).
        let image = std::fs::read(&p).unwrap();
        for at in (8..image.len()).step_by(7) {
            let mut bad = image.clone();
            bad[at] ^= 0x40;
            std::fs::write(&p, &bad).unwrap();
            let ok = read_snapshot(&p).map(|(_, it)| it.collect::<Result<Vec<_>, _>>().is_ok());
            assert!(!matches!(ok, Ok(true)), "flip at {at} not detected");
        }
        let wp = d.path().join("wal.bin");
        let w = write_wal(&wp, (43..53).map(|l| Ok(rec(l)))).unwrap();
        assert_eq!(w.items, 10);
        let recs = read_wal(&wp).unwrap();
        assert_eq!(
            recs.iter().map(|r| r.lsn).collect::<Vec<_>>(),
            (43..53).collect::<Vec<_>>()
        );
        let mut image = std::fs::read(&wp).unwrap();
        let last = image.len() - 3;
        image[last] ^= 1;
        std::fs::write(&wp, &image).unwrap();
        assert!(read_wal(&wp).is_err());
        std::fs::write(&wp, &image[..image.len() - 5]).unwrap();
        assert!(read_wal(&wp).is_err());
    }
}
