//! The two meta pages (pages 0 and 1): the commit point of the tree.
//!
//! Commit `txid` writes slot `txid % 2`; open picks the valid (checksummed) meta with the
//! highest txid, so a torn or missing meta write falls back to the previous commit.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::page::{corrupt, rd_u32, rd_u64, wr_u32, wr_u64};
use super::BTreeError;

const MAGIC: &[u8; 8] = b"UNIBTRE1";
const VERSION: u32 = 2;
/// Encoded size of a meta record (start of its page).
pub(crate) const META_LEN: usize = 84;
pub(crate) const MIN_PAGE: usize = 512;
pub(crate) const MAX_PAGE: usize = 65536;

/// Everything a snapshot needs to find its tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Meta {
    pub page_size: u32,
    pub txid: u64,
    /// Root page id; 0 means the tree is empty.
    pub root: u64,
    /// Number of levels (0 for an empty tree).
    pub depth: u32,
    /// High-water mark: every page id below this is in use or free.
    pub page_count: u64,
    /// First freelist page (0 = none).
    pub freelist: u64,
    pub free_count: u64,
    pub entries: u64,
    pub checkpoint_lsn: u64,
}

impl Meta {
    pub(crate) fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[0..8].copy_from_slice(MAGIC);
        wr_u32(&mut b, 8, VERSION);
        wr_u32(&mut b, 12, self.page_size);
        wr_u64(&mut b, 16, self.txid);
        wr_u64(&mut b, 24, self.root);
        wr_u32(&mut b, 32, self.depth);
        wr_u64(&mut b, 40, self.page_count);
        wr_u64(&mut b, 48, self.freelist);
        wr_u64(&mut b, 56, self.free_count);
        wr_u64(&mut b, 64, self.entries);
        wr_u64(&mut b, 72, self.checkpoint_lsn);
        let c = crc32c::crc32c(&b[..80]);
        wr_u32(&mut b, 80, c);
        b
    }

    /// Parses a meta record; `None` if magic, version or checksum do not match.
    pub(crate) fn decode(b: &[u8]) -> Option<Meta> {
        let b = b.get(..META_LEN)?;
        if &b[0..8] != MAGIC || rd_u32(b, 8)? != VERSION {
            return None;
        }
        if rd_u32(b, 80)? != crc32c::crc32c(&b[..80]) {
            return None;
        }
        Some(Meta {
            page_size: rd_u32(b, 12)?,
            txid: rd_u64(b, 16)?,
            root: rd_u64(b, 24)?,
            depth: rd_u32(b, 32)?,
            page_count: rd_u64(b, 40)?,
            freelist: rd_u64(b, 48)?,
            free_count: rd_u64(b, 56)?,
            entries: rd_u64(b, 64)?,
            checkpoint_lsn: rd_u64(b, 72)?,
        })
    }

    /// Structural sanity against the file length; a checksummed meta failing this is corruption.
    pub(crate) fn validate(&self, file_len: u64) -> Result<(), BTreeError> {
        let ps = self.page_size as usize;
        if !ps.is_power_of_two() || !(MIN_PAGE..=MAX_PAGE).contains(&ps) {
            return Err(corrupt(format!("meta has invalid page size {ps}")));
        }
        let need = self
            .page_count
            .checked_mul(ps as u64)
            .ok_or_else(|| corrupt("meta page count overflows"))?;
        if self.page_count < 2 || need > file_len {
            return Err(corrupt(format!(
                "meta txid {} needs {} pages ({need} bytes) but the file has {file_len} bytes",
                self.txid, self.page_count
            )));
        }
        let in_range = |p: u64| p == 0 || (2..self.page_count).contains(&p);
        if !in_range(self.root) || !in_range(self.freelist) {
            return Err(corrupt("meta root or freelist page out of range"));
        }
        if (self.root == 0) != (self.depth == 0) || self.depth as usize > super::page::MAX_DEPTH {
            return Err(corrupt("meta depth inconsistent with root"));
        }
        Ok(())
    }

    /// Byte offset of the slot this meta is written to.
    pub(crate) fn slot_offset(&self) -> u64 {
        (self.txid % 2) * self.page_size as u64
    }
}

fn read_at(file: &File, off: u64, len: usize) -> Result<Option<Vec<u8>>, BTreeError> {
    let mut buf = vec![0u8; len];
    match file.read_exact_at(&mut buf, off) {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads both meta slots and returns the newest valid one.
///
/// A slot with a bad checksum is ignored; both bad gives `Corrupt`. Meta 1's position depends
/// on the page size, which is taken from meta 0 if valid, else `hint`, else every legal size.
pub(crate) fn load(file: &File, file_len: u64, hint: usize) -> Result<Meta, BTreeError> {
    let m0 = read_at(file, 0, META_LEN)?.and_then(|b| Meta::decode(&b));
    let mut sizes = Vec::new();
    if let Some(m) = m0 {
        sizes.push(m.page_size as usize);
    }
    sizes.push(hint);
    let mut ps = MIN_PAGE;
    while ps <= MAX_PAGE {
        sizes.push(ps);
        ps *= 2;
    }
    let mut m1 = None;
    for ps in sizes {
        if !(MIN_PAGE..=MAX_PAGE).contains(&ps) {
            continue;
        }
        if let Some(m) = read_at(file, ps as u64, META_LEN)?.and_then(|b| Meta::decode(&b)) {
            if m.page_size as usize == ps {
                m1 = Some(m);
                break;
            }
        }
    }
    let best = match (m0, m1) {
        (Some(a), Some(b)) => {
            if b.txid > a.txid {
                b
            } else {
                a
            }
        }
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => return Err(corrupt("no valid meta page (both checksums fail)")),
    };
    best.validate(file_len)?;
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_and_checksum() {
        let m = Meta {
            page_size: 4096,
            txid: 7,
            root: 3,
            depth: 2,
            page_count: 10,
            freelist: 5,
            free_count: 1,
            entries: 42,
            checkpoint_lsn: 99,
        };
        let mut b = m.encode();
        assert_eq!(Meta::decode(&b), Some(m));
        assert!(m.validate(40960).is_ok());
        assert!(m.validate(40959).is_err());
        b[20] ^= 1;
        assert_eq!(Meta::decode(&b), None);
        assert_eq!(Meta::decode(&b[..10]), None);
    }

    #[test]
    fn load_picks_newest_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(4 * 512).unwrap();
        let base = Meta {
            page_size: 512,
            page_count: 4,
            ..Meta::default()
        };
        let m2 = Meta { txid: 2, ..base };
        let m3 = Meta { txid: 3, ..base };
        file.write_all_at(&m2.encode(), 0).unwrap();
        file.write_all_at(&m3.encode(), 512).unwrap();
        assert_eq!(load(&file, 2048, 4096).unwrap().txid, 3);
        file.write_all_at(&[0xAB; 16], 512 + 20).unwrap();
        assert_eq!(load(&file, 2048, 4096).unwrap().txid, 2);
        file.write_all_at(&[0xAB; 16], 20).unwrap();
        assert!(matches!(
            load(&file, 2048, 4096),
            Err(BTreeError::Corrupt(_))
        ));
    }
}
