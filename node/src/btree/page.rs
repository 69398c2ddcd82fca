//! On-disk page layout: common header, slotted leaf/branch pages, overflow runs, crc32c.
//!
//! Every page starts with a 16-byte header:
//! `[crc32c u32][type u8][reserved u8][nkeys u16][page id u64]`; the checksum covers
//! bytes `4..page_size` (for overflow runs: `4..24+len` across the run).
//! Leaf/branch pages keep a slot array right after the header (after the leftmost child
//! pointer on branches) and pack cells from the end of the page. A slot is
//! `[cell offset u16][key head: first 4 key bytes, zero padded]`; binary search compares
//! heads first and only dereferences a cell on a tie, saving most cache misses.
//! * leaf cell:   `[klen u16][flags u8][vlen u32][key][value | overflow page id u64]`
//! * branch cell: `[klen u16][child u64][key]` (child `i+1`; child 0 sits at offset 16)

use super::BTreeError;

/// Size of the common page header.
pub(crate) const HDR: usize = 16;
/// Branch header: common header plus the leftmost child pointer.
pub(crate) const BRANCH_HDR: usize = HDR + 8;
/// Overflow header: common header plus the value length.
pub(crate) const OVERFLOW_HDR: usize = HDR + 8;

pub(crate) const T_BRANCH: u8 = 1;
pub(crate) const T_LEAF: u8 = 2;
pub(crate) const T_OVERFLOW: u8 = 3;
pub(crate) const T_FREELIST: u8 = 4;

/// Leaf cell flag: the value lives in an overflow run.
pub(crate) const FLAG_OVERFLOW: u8 = 1;
/// Fixed part of a leaf cell (klen + flags + vlen).
pub(crate) const LEAF_CELL_FIXED: usize = 7;
/// Fixed part of a branch cell (klen + child).
pub(crate) const BRANCH_CELL_FIXED: usize = 10;
/// Bytes per slot: cell offset + 4-byte key head.
pub(crate) const SLOT: usize = 6;

/// The 4-byte big-endian head of a key (zero padded). Different heads order like the keys.
#[inline]
pub(crate) fn head_of(key: &[u8]) -> u32 {
    let mut h = [0u8; 4];
    let n = key.len().min(4);
    h[..n].copy_from_slice(&key[..n]);
    u32::from_be_bytes(h)
}

/// Guard against cycles in a corrupt file: no real tree gets this deep.
pub(crate) const MAX_DEPTH: usize = 64;

pub(crate) fn corrupt(msg: impl Into<String>) -> BTreeError {
    BTreeError::Corrupt(msg.into())
}

#[inline]
pub(crate) fn rd_u16(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
}

#[inline]
pub(crate) fn rd_u32(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

#[inline]
pub(crate) fn rd_u64(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8).map(|s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

#[inline]
pub(crate) fn wr_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn wr_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn wr_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// The bytes of page `pgno` inside a mapping, or `Corrupt` if it lies past the end.
#[inline]
pub(crate) fn page_slice(map: &[u8], pgno: u64, ps: usize) -> Result<&[u8], BTreeError> {
    let start = (pgno as usize)
        .checked_mul(ps)
        .ok_or_else(|| corrupt(format!("page id {pgno} out of range")))?;
    map.get(start..start + ps)
        .ok_or_else(|| corrupt(format!("page {pgno} lies beyond the end of the file")))
}

/// Writes the common header fields (not the checksum).
pub(crate) fn write_header(page: &mut [u8], typ: u8, nkeys: u16, pgno: u64) {
    page[4] = typ;
    page[5] = 0;
    wr_u16(page, 6, nkeys);
    wr_u64(page, 8, pgno);
}

/// Stores the crc32c of `bytes[4..]` in the first four bytes.
pub(crate) fn seal(bytes: &mut [u8]) {
    let c = crc32c::crc32c(&bytes[4..]);
    wr_u32(bytes, 0, c);
}

/// True if the stored crc32c matches `bytes[4..]`.
pub(crate) fn crc_ok(bytes: &[u8]) -> bool {
    bytes.len() >= HDR && rd_u32(bytes, 0) == Some(crc32c::crc32c(&bytes[4..]))
}

/// Number of pages an overflow run for a value of `len` bytes occupies.
pub(crate) fn overflow_pages(len: usize, ps: usize) -> u64 {
    (OVERFLOW_HDR + len).div_ceil(ps) as u64
}

/// Builds a sealed overflow run (whole pages) holding `value`.
pub(crate) fn encode_overflow(pgno: u64, value: &[u8], ps: usize) -> Vec<u8> {
    let n = overflow_pages(value.len(), ps) as usize;
    // Only the header and the tail past the value are zero-filled: values can be large.
    let mut buf = Vec::with_capacity(n * ps);
    buf.resize(OVERFLOW_HDR, 0);
    write_header(&mut buf, T_OVERFLOW, 0, pgno);
    wr_u64(&mut buf, HDR, value.len() as u64);
    buf.extend_from_slice(value);
    buf.resize(n * ps, 0);
    let end = OVERFLOW_HDR + value.len();
    seal(&mut buf[..end]);
    buf
}

/// The value bytes of an overflow run in a mapping, after header sanity checks.
pub(crate) fn overflow_value(
    map: &[u8],
    pgno: u64,
    len: u64,
    ps: usize,
) -> Result<&[u8], BTreeError> {
    let start = (pgno as usize)
        .checked_mul(ps)
        .ok_or_else(|| corrupt(format!("overflow page id {pgno} out of range")))?;
    let end = start
        .checked_add(OVERFLOW_HDR)
        .and_then(|s| s.checked_add(len as usize))
        .ok_or_else(|| corrupt("overflow length out of range"))?;
    let run = map
        .get(start..end)
        .ok_or_else(|| corrupt(format!("overflow run at page {pgno} lies beyond the file")))?;
    if run[4] != T_OVERFLOW || rd_u64(run, 8) != Some(pgno) || rd_u64(run, HDR) != Some(len) {
        return Err(corrupt(format!(
            "page {pgno} is not the expected overflow run"
        )));
    }
    Ok(&run[OVERFLOW_HDR..])
}

/// A value as stored in a leaf cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValRef<'a> {
    Inline(&'a [u8]),
    Overflow { pgno: u64, len: u64 },
}

/// Bounds-checked read-only view of a leaf or branch page; corrupt bytes give errors, not panics.
#[derive(Clone, Copy)]
pub(crate) struct PageView<'a> {
    buf: &'a [u8],
    typ: u8,
    n: usize,
}

impl<'a> PageView<'a> {
    /// Validates the header of page `pgno` (type, id, slot array bounds).
    #[inline]
    pub(crate) fn new(buf: &'a [u8], pgno: u64) -> Result<Self, BTreeError> {
        let typ = buf[4];
        let n = rd_u16(buf, 6).unwrap_or(0) as usize;
        if rd_u64(buf, 8) != Some(pgno) {
            return Err(corrupt(format!(
                "page {pgno}: header names another page id"
            )));
        }
        let base = match typ {
            T_LEAF => HDR,
            T_BRANCH => BRANCH_HDR,
            t => return Err(corrupt(format!("page {pgno}: unexpected page type {t}"))),
        };
        if base + SLOT * n > buf.len() {
            return Err(corrupt(format!(
                "page {pgno}: slot array overflows the page"
            )));
        }
        Ok(Self { buf, typ, n })
    }

    /// View of a page built by this process (a dirty page); accessors stay bounds-checked.
    #[inline]
    pub(crate) fn trusted(buf: &'a [u8]) -> Self {
        let n = rd_u16(buf, 6).unwrap_or(0) as usize;
        Self {
            buf,
            typ: buf[4],
            n,
        }
    }

    #[inline]
    pub(crate) fn is_leaf(&self) -> bool {
        self.typ == T_LEAF
    }

    /// Number of keys (leaf entries, or branch separators).
    #[inline]
    pub(crate) fn nkeys(&self) -> usize {
        self.n
    }

    #[inline]
    fn slot_base(&self) -> usize {
        if self.typ == T_LEAF {
            HDR
        } else {
            BRANCH_HDR
        }
    }

    #[inline]
    fn cell(&self, i: usize) -> Result<usize, BTreeError> {
        let off = rd_u16(self.buf, self.slot_base() + SLOT * i).unwrap_or(0) as usize;
        if off < self.slot_base() + SLOT * self.n || off >= self.buf.len() {
            return Err(corrupt("cell offset outside the page"));
        }
        Ok(off)
    }

    /// Key `i` (leaf key or branch separator).
    #[inline]
    pub(crate) fn key(&self, i: usize) -> Result<&'a [u8], BTreeError> {
        let off = self.cell(i)?;
        let klen = rd_u16(self.buf, off).ok_or_else(|| corrupt("truncated cell"))? as usize;
        let kstart = off
            + if self.typ == T_LEAF {
                LEAF_CELL_FIXED
            } else {
                BRANCH_CELL_FIXED
            };
        self.buf
            .get(kstart..kstart + klen)
            .ok_or_else(|| corrupt("key runs past the end of the page"))
    }

    /// Key and value of leaf entry `i`.
    #[inline]
    pub(crate) fn leaf_entry(&self, i: usize) -> Result<(&'a [u8], ValRef<'a>), BTreeError> {
        let off = self.cell(i)?;
        let bad = || corrupt("leaf cell runs past the end of the page");
        let klen = rd_u16(self.buf, off).ok_or_else(bad)? as usize;
        let flags = *self.buf.get(off + 2).ok_or_else(bad)?;
        let vlen = rd_u32(self.buf, off + 3).ok_or_else(bad)? as usize;
        let kstart = off + LEAF_CELL_FIXED;
        let key = self.buf.get(kstart..kstart + klen).ok_or_else(bad)?;
        let vstart = kstart + klen;
        let val = if flags & FLAG_OVERFLOW != 0 {
            ValRef::Overflow {
                pgno: rd_u64(self.buf, vstart).ok_or_else(bad)?,
                len: vlen as u64,
            }
        } else {
            ValRef::Inline(self.buf.get(vstart..vstart + vlen).ok_or_else(bad)?)
        };
        Ok((key, val))
    }

    /// Child pointer `i` of a branch, `0..=nkeys`.
    #[inline]
    pub(crate) fn child(&self, i: usize) -> Result<u64, BTreeError> {
        if i == 0 {
            return rd_u64(self.buf, HDR).ok_or_else(|| corrupt("truncated branch"));
        }
        let off = self.cell(i - 1)?;
        rd_u64(self.buf, off + 2).ok_or_else(|| corrupt("branch cell past the end of the page"))
    }

    /// Bytes in use in a leaf (header, slots, cells); used to decide merges.
    pub(crate) fn leaf_used(&self) -> Result<usize, BTreeError> {
        let mut used = HDR;
        for i in 0..self.n {
            let (k, v) = self.leaf_entry(i)?;
            let vcell = match v {
                ValRef::Inline(b) => b.len(),
                ValRef::Overflow { .. } => 8,
            };
            used += SLOT + LEAF_CELL_FIXED + k.len() + vcell;
        }
        Ok(used)
    }

    /// Binary search among the keys: `Ok(i)` if found, `Err(i)` = insertion point.
    #[inline]
    pub(crate) fn search(&self, key: &[u8]) -> Result<Result<usize, usize>, BTreeError> {
        let kh = head_of(key);
        let base = self.slot_base();
        let (mut lo, mut hi) = (0usize, self.n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let s = base + SLOT * mid + 2;
            // slots lie inside the page (checked in `new`)
            let h = u32::from_be_bytes([
                self.buf[s],
                self.buf[s + 1],
                self.buf[s + 2],
                self.buf[s + 3],
            ]);
            let ord = match h.cmp(&kh) {
                std::cmp::Ordering::Equal => self.key(mid)?.cmp(key),
                o => o,
            };
            match ord {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Ok(mid)),
            }
        }
        Ok(Err(lo))
    }

    /// Stored key head of slot `i` (for verification).
    pub(crate) fn head(&self, i: usize) -> Option<u32> {
        rd_u32(self.buf, self.slot_base() + SLOT * i + 2).map(u32::swap_bytes)
    }

    /// Index of the child of a branch whose subtree may contain `key`.
    #[inline]
    pub(crate) fn child_index(&self, key: &[u8]) -> Result<usize, BTreeError> {
        Ok(match self.search(key)? {
            Ok(i) => i + 1,
            Err(i) => i,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_verify() {
        let mut p = vec![0u8; 512];
        write_header(&mut p, T_LEAF, 0, 7);
        seal(&mut p);
        assert!(crc_ok(&p));
        p[100] ^= 1;
        assert!(!crc_ok(&p));
    }

    #[test]
    fn overflow_roundtrip_and_mismatch() {
        let v: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
        let run = encode_overflow(3, &v, 512);
        assert_eq!(run.len(), 3 * 512);
        let mut map = vec![0u8; 3 * 512];
        map.extend_from_slice(&run);
        assert_eq!(overflow_value(&map, 3, 1500, 512).unwrap(), &v[..]);
        assert!(overflow_value(&map, 3, 1501, 512).is_err());
        assert!(overflow_value(&map, 2, 1500, 512).is_err());
        assert!(overflow_value(&map, 3, 1 << 40, 512).is_err());
        assert!(crc_ok(&map[3 * 512..3 * 512 + OVERFLOW_HDR + 1500]));
    }

    #[test]
    fn garbage_page_is_an_error_not_a_panic() {
        let mut p = vec![0xffu8; 512];
        wr_u64(&mut p, 8, 9);
        p[4] = T_LEAF;
        wr_u16(&mut p, 6, 3);
        let v = PageView::new(&p, 9).unwrap();
        assert!(v.key(0).is_err());
        assert!(v.leaf_entry(2).is_err());
        assert!(PageView::new(&p, 8).is_err());
        p[4] = 77;
        assert!(PageView::new(&p, 9).is_err());
        assert!(page_slice(&p, 1, 512).is_err());
        assert!(page_slice(&p, u64::MAX, 512).is_err());
    }
}
