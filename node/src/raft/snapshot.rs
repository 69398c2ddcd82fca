//! Raft snapshot files: a consistent copy of a member namespace at one LSN, on disk beside it.
//!
//! openraft sends a snapshot to a member whose next entry the leader purged; its bytes are this
//! file, read and written in chunks (so neither end holds the key space in memory). The content is
//! the engine's consistent view (`Namespace::snapshot`, the same view the replication snapshot
//! stream serves), written in key order with the entry count and CRC32C of the replication format.
//!
//! Layout: magic, `u32` length + JSON of openraft's `SnapshotMeta`, `u32` length + bincode of the
//! [`Header`] (LSN, HLC, epoch history up to the LSN), then entries `[1][u32 klen][key][u32
//! vlen][value]`, then `[0][u64 count][u32 crc32c]`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use openraft::SnapshotMeta;

use super::Member;
use crate::engine::{EngineError, EpochEntry, Namespace};
use crate::replication::snapshot::EntryCrc;

const MAGIC: &[u8; 8] = b"UDBRSNP1";
/// The current snapshot of a namespace (complete and fsynced).
pub const CURRENT: &str = "raft-snapshot";
const BUILDING: &str = "raft-snapshot.building";
/// A snapshot being received from the leader.
pub const RECEIVING: &str = "raft-snapshot.receiving";
/// Largest key or value accepted when reading (a damaged length fails instead of allocating).
const MAX_ITEM: u32 = 1 << 30;

/// What a snapshot reflects.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Header {
    pub lsn: u64,
    pub hlc: u64,
    pub history: Vec<(u64, u64)>,
}

/// Why a snapshot file cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot file {path}: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("snapshot of the namespace: {0}")]
    Engine(#[from] EngineError),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn damaged(path: &Path, reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Damaged {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes the snapshot of `ns` at `view`'s LSN with `meta` as the current snapshot file (temp file,
/// fsync, rename, fsync dir). Returns the entry count.
pub fn write(
    ns: &Namespace,
    view: &crate::engine::Snapshot,
    meta: &SnapshotMeta<u64, Member>,
) -> Result<u64, SnapshotError> {
    let dir = ns.dir();
    let tmp = dir.join(BUILDING);
    let e = io(&tmp);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(&e)?);
    let lsn = view.lsn();
    let header = Header {
        lsn,
        hlc: ns.hlc_at(lsn),
        history: ns
            .epoch_history(lsn)
            .into_iter()
            .map(|h| (h.epoch, h.start_lsn))
            .collect(),
    };
    let meta_json = serde_json::to_vec(meta).map_err(|x| damaged(&tmp, x.to_string()))?;
    let header_bin = bincode::serialize(&header).map_err(|x| damaged(&tmp, x.to_string()))?;
    w.write_all(MAGIC).map_err(&e)?;
    for part in [&meta_json, &header_bin] {
        w.write_all(&(part.len() as u32).to_le_bytes())
            .map_err(&e)?;
        w.write_all(part).map_err(&e)?;
    }
    let mut crc = EntryCrc::default();
    for item in view.range(Bound::Unbounded, Bound::Unbounded, false) {
        let (k, v) = item?;
        crc.add(&k, &v);
        w.write_all(&[1]).map_err(&e)?;
        w.write_all(&(k.len() as u32).to_le_bytes()).map_err(&e)?;
        w.write_all(&k).map_err(&e)?;
        w.write_all(&(v.len() as u32).to_le_bytes()).map_err(&e)?;
        w.write_all(&v).map_err(&e)?;
    }
    w.write_all(&[0]).map_err(&e)?;
    w.write_all(&crc.count.to_le_bytes()).map_err(&e)?;
    w.write_all(&crc.crc.to_le_bytes()).map_err(&e)?;
    let f = w.into_inner().map_err(|x| e(x.into_error()))?;
    f.sync_all().map_err(&e)?;
    drop(f);
    promote(dir, &tmp)?;
    Ok(crc.count)
}

/// Makes `file` (complete) the current snapshot of the namespace in `dir`.
pub fn promote(dir: &Path, file: &Path) -> Result<(), SnapshotError> {
    let cur = dir.join(CURRENT);
    std::fs::rename(file, &cur).map_err(io(&cur))?;
    crate::wal::segment::sync_dir(dir).map_err(io(dir))?;
    Ok(())
}

/// Makes the received snapshot `file` the current one: renamed when it is the file at
/// `received` (openraft wrote the chunks there), else copied (a handle to another file).
pub fn adopt(dir: &Path, mut file: File, received: &Path) -> Result<(), SnapshotError> {
    use std::os::unix::fs::MetadataExt;
    let same = match (file.metadata(), std::fs::metadata(received)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if !same {
        let e = io(received);
        let mut out = File::create(received).map_err(&e)?;
        file.seek(SeekFrom::Start(0)).map_err(&e)?;
        std::io::copy(&mut file, &mut out).map_err(&e)?;
        out.sync_all().map_err(&e)?;
    }
    promote(dir, received)
}

fn read_u32(r: &mut impl Read, path: &Path) -> Result<u32, SnapshotError> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(io(path))?;
    Ok(u32::from_le_bytes(b))
}

fn read_part(r: &mut impl Read, path: &Path, what: &str) -> Result<Vec<u8>, SnapshotError> {
    let n = read_u32(r, path)?;
    if n > MAX_ITEM {
        return Err(damaged(path, format!("{what} length {n} is implausible")));
    }
    let mut b = vec![0u8; n as usize];
    r.read_exact(&mut b).map_err(io(path))?;
    Ok(b)
}

/// One entry of the key space.
type KeyValue = (Vec<u8>, Vec<u8>);

/// An open snapshot file, positioned at its first entry.
pub struct Reader {
    path: PathBuf,
    r: BufReader<File>,
    pub meta: SnapshotMeta<u64, Member>,
    pub header: Header,
    crc: EntryCrc,
    done: bool,
}

impl Reader {
    /// Opens `file` (read from its start) and reads its meta and header.
    pub fn open(mut file: File, path: &Path) -> Result<Reader, SnapshotError> {
        file.seek(SeekFrom::Start(0)).map_err(io(path))?;
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).map_err(io(path))?;
        if &magic != MAGIC {
            return Err(damaged(path, "not a UnisonDB Raft snapshot"));
        }
        let meta = serde_json::from_slice(&read_part(&mut r, path, "meta")?)
            .map_err(|x| damaged(path, format!("meta: {x}")))?;
        let header = bincode::deserialize(&read_part(&mut r, path, "header")?)
            .map_err(|x| damaged(path, format!("header: {x}")))?;
        Ok(Reader {
            path: path.to_path_buf(),
            r,
            meta,
            header,
            crc: EntryCrc::default(),
            done: false,
        })
    }

    /// The meta of the current snapshot of the namespace in `dir`, if it has one.
    pub fn current_meta(dir: &Path) -> Result<Option<SnapshotMeta<u64, Member>>, SnapshotError> {
        let path = dir.join(CURRENT);
        match File::open(&path) {
            Ok(f) => Ok(Some(Reader::open(f, &path)?.meta)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The epoch history of the header, as the engine takes it.
    pub fn history(&self) -> Vec<EpochEntry> {
        self.header
            .history
            .iter()
            .filter(|(epoch, _)| *epoch > 0)
            .map(|&(epoch, start_lsn)| EpochEntry { epoch, start_lsn })
            .collect()
    }

    fn next_entry(&mut self) -> Result<Option<KeyValue>, SnapshotError> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.r.read_exact(&mut tag).map_err(io(&self.path))?;
        match tag[0] {
            1 => {
                let k = read_part(&mut self.r, &self.path, "key")?;
                let v = read_part(&mut self.r, &self.path, "value")?;
                self.crc.add(&k, &v);
                Ok(Some((k, v)))
            }
            0 => {
                self.done = true;
                let mut count = [0u8; 8];
                self.r.read_exact(&mut count).map_err(io(&self.path))?;
                let crc = read_u32(&mut self.r, &self.path)?;
                let count = u64::from_le_bytes(count);
                if count != self.crc.count || crc != self.crc.crc {
                    return Err(damaged(
                        &self.path,
                        format!(
                            "trailer says {count} entries / crc {crc:08x}, read {} / {:08x}",
                            self.crc.count, self.crc.crc
                        ),
                    ));
                }
                Ok(None)
            }
            t => Err(damaged(&self.path, format!("unknown tag {t}"))),
        }
    }
}

impl Iterator for Reader {
    type Item = Result<(Vec<u8>, Vec<u8>), EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_entry() {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(EngineError::Corrupt(e.to_string())))
            }
        }
    }
}
