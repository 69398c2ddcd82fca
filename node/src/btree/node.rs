//! Dirty pages of a write txn, edited in place in the on-disk slotted format.
//!
//! A touched page is copied once into a `Vec<u8>`; inserts write the cell into the free gap
//! and shift the `u16` slot array, deletes only drop the slot (space is reclaimed by
//! compaction when the gap runs out). Commit then only has to checksum and write the bytes.

use super::page::{
    self, corrupt, head_of, rd_u16, rd_u32, wr_u16, wr_u32, wr_u64, PageView, ValRef,
    BRANCH_CELL_FIXED, BRANCH_HDR, FLAG_OVERFLOW, HDR, LEAF_CELL_FIXED, SLOT, T_BRANCH, T_LEAF,
};
use super::BTreeError;

/// Share of a page that appending splits and the bulk builder fill before starting the next
/// page: later random inserts then find room instead of splitting every full page 50/50.
pub(crate) const FILL_PERCENT: usize = 90;

/// Bytes a leaf entry costs in a page (slot + cell).
#[inline]
pub(crate) fn leaf_entry_size(klen: usize, vcell: usize) -> usize {
    SLOT + LEAF_CELL_FIXED + klen + vcell
}

/// A cell to insert.
#[derive(Clone, Copy)]
pub(crate) enum Cell<'a> {
    Leaf { key: &'a [u8], val: ValRef<'a> },
    Branch { key: &'a [u8], child: u64 },
}

impl Cell<'_> {
    fn key(&self) -> &[u8] {
        match self {
            Cell::Leaf { key, .. } | Cell::Branch { key, .. } => key,
        }
    }

    fn len(&self) -> usize {
        match self {
            Cell::Leaf {
                key,
                val: ValRef::Inline(v),
            } => LEAF_CELL_FIXED + key.len() + v.len(),
            Cell::Leaf { key, .. } => LEAF_CELL_FIXED + key.len() + 8,
            Cell::Branch { key, .. } => BRANCH_CELL_FIXED + key.len(),
        }
    }

    fn write(&self, out: &mut [u8]) {
        match *self {
            Cell::Leaf { key, val } => {
                wr_u16(out, 0, key.len() as u16);
                let k = LEAF_CELL_FIXED;
                out[k..k + key.len()].copy_from_slice(key);
                let v = k + key.len();
                match val {
                    ValRef::Inline(b) => {
                        out[2] = 0;
                        wr_u32(out, 3, b.len() as u32);
                        out[v..v + b.len()].copy_from_slice(b);
                    }
                    ValRef::Overflow { pgno, len } => {
                        out[2] = FLAG_OVERFLOW;
                        wr_u32(out, 3, len as u32);
                        wr_u64(out, v, pgno);
                    }
                }
            }
            Cell::Branch { key, child } => {
                wr_u16(out, 0, key.len() as u16);
                wr_u64(out, 2, child);
                out[BRANCH_CELL_FIXED..BRANCH_CELL_FIXED + key.len()].copy_from_slice(key);
            }
        }
    }
}

/// Writes slot bytes at `s`: cell offset and key head.
#[inline]
fn write_slot(buf: &mut [u8], s: usize, off: usize, key: &[u8]) {
    wr_u16(buf, s, off as u16);
    buf[s + 2..s + 6].copy_from_slice(&head_of(key).to_be_bytes());
}

/// The key inside a raw (validated) cell.
fn raw_key(c: &[u8], leaf: bool) -> &[u8] {
    let klen = rd_u16(c, 0).unwrap_or(0) as usize;
    let k = if leaf {
        LEAF_CELL_FIXED
    } else {
        BRANCH_CELL_FIXED
    };
    c.get(k..k + klen).unwrap_or(&[])
}

/// Length of the cell at `off`, bounds-checked against the page.
fn cell_len_checked(buf: &[u8], off: usize, leaf: bool) -> Option<usize> {
    let klen = rd_u16(buf, off)? as usize;
    let len = if leaf {
        let flags = *buf.get(off + 2)?;
        let vcell = if flags & FLAG_OVERFLOW != 0 {
            8
        } else {
            rd_u32(buf, off + 3)? as usize
        };
        LEAF_CELL_FIXED + klen + vcell
    } else {
        BRANCH_CELL_FIXED + klen
    };
    (off + len <= buf.len()).then_some(len)
}

/// A writable page in the on-disk layout, plus the start of its cell area.
#[derive(Debug, Clone)]
pub(crate) struct Dirty {
    pub buf: Vec<u8>,
    /// Lowest cell offset; the gap `[slots end, upper)` is free.
    upper: usize,
}

impl Dirty {
    pub(crate) fn new_leaf(pgno: u64, ps: usize) -> Self {
        let mut buf = vec![0u8; ps];
        page::write_header(&mut buf, T_LEAF, 0, pgno);
        Dirty { buf, upper: ps }
    }

    pub(crate) fn new_branch(pgno: u64, ps: usize, child0: u64) -> Self {
        let mut buf = vec![0u8; ps];
        page::write_header(&mut buf, T_BRANCH, 0, pgno);
        wr_u64(&mut buf, HDR, child0);
        Dirty { buf, upper: ps }
    }

    /// Copies committed page `src` (validating every cell) and renames it to `pgno`.
    pub(crate) fn from_page(src: &[u8], old: u64, pgno: u64) -> Result<Self, BTreeError> {
        let view = PageView::new(src, old)?;
        let leaf = view.is_leaf();
        let base = if leaf { HDR } else { BRANCH_HDR };
        let n = view.nkeys();
        let mut upper = src.len();
        for i in 0..n {
            let off = rd_u16(src, base + SLOT * i).unwrap_or(0) as usize;
            if off < base + SLOT * n
                || off >= src.len()
                || cell_len_checked(src, off, leaf).is_none()
            {
                return Err(corrupt(format!(
                    "page {old}: cell {i} lies outside the page"
                )));
            }
            upper = upper.min(off);
        }
        let mut buf = src.to_vec();
        wr_u64(&mut buf, 8, pgno);
        Ok(Dirty { buf, upper })
    }

    #[inline]
    pub(crate) fn is_leaf(&self) -> bool {
        self.buf[4] == T_LEAF
    }

    #[inline]
    pub(crate) fn nkeys(&self) -> usize {
        rd_u16(&self.buf, 6).unwrap_or(0) as usize
    }

    #[inline]
    fn base(&self) -> usize {
        if self.is_leaf() {
            HDR
        } else {
            BRANCH_HDR
        }
    }

    #[inline]
    fn slot(&self, i: usize) -> usize {
        rd_u16(&self.buf, self.base() + SLOT * i).unwrap_or(0) as usize
    }

    #[inline]
    fn cell_len(&self, off: usize) -> usize {
        cell_len_checked(&self.buf, off, self.is_leaf()).unwrap_or(0)
    }

    /// Raw bytes of cell `i`.
    pub(crate) fn cell(&self, i: usize) -> &[u8] {
        let off = self.slot(i);
        &self.buf[off..off + self.cell_len(off)]
    }

    /// Bytes in use: header, slots and live cells.
    pub(crate) fn used(&self) -> usize {
        let n = self.nkeys();
        self.base()
            + (0..n)
                .map(|i| SLOT + self.cell_len(self.slot(i)))
                .sum::<usize>()
    }

    /// Read view (the id in the header is this page's id).
    #[inline]
    pub(crate) fn view(&self) -> PageView<'_> {
        PageView::trusted(&self.buf)
    }

    fn set_nkeys(&mut self, n: usize) {
        wr_u16(&mut self.buf, 6, n as u16);
    }

    /// Inserts `cell` at slot `i`; false if it does not fit even after compaction.
    pub(crate) fn try_insert(&mut self, i: usize, cell: &Cell<'_>) -> bool {
        let n = self.nkeys();
        let need = cell.len();
        let slots_end = self.base() + SLOT * n;
        if self.upper < slots_end + SLOT + need {
            if self.used() + SLOT + need > self.buf.len() {
                return false;
            }
            self.compact();
        }
        let off = self.upper - need;
        cell.write(&mut self.buf[off..off + need]);
        self.upper = off;
        let s = self.base() + SLOT * i;
        self.buf.copy_within(s..slots_end, s + SLOT);
        write_slot(&mut self.buf, s, off, cell.key());
        self.set_nkeys(n + 1);
        true
    }

    /// Appends a raw cell (taken from a page of the same kind); false if it does not fit.
    pub(crate) fn push_raw(&mut self, raw: &[u8]) -> bool {
        let n = self.nkeys();
        let slots_end = self.base() + SLOT * n;
        if self.upper < slots_end + SLOT + raw.len() {
            if self.used() + SLOT + raw.len() > self.buf.len() {
                return false;
            }
            self.compact();
        }
        let off = self.upper - raw.len();
        self.buf[off..off + raw.len()].copy_from_slice(raw);
        self.upper = off;
        let key = raw_key(raw, self.is_leaf());
        write_slot(&mut self.buf, slots_end, off, key);
        self.set_nkeys(n + 1);
        true
    }

    /// Appends `cell` after the last slot of a page built by appends only (no garbage between
    /// cells) if the page then uses at most `limit` bytes: the bulk builder's fill rule.
    pub(crate) fn append_within(&mut self, cell: &Cell<'_>, limit: usize) -> bool {
        let n = self.nkeys();
        let need = cell.len();
        let slots_end = self.base() + SLOT * n;
        let used = slots_end + (self.buf.len() - self.upper);
        if used + SLOT + need > limit.min(self.buf.len()) {
            return false;
        }
        let off = self.upper - need;
        cell.write(&mut self.buf[off..off + need]);
        self.upper = off;
        write_slot(&mut self.buf, slots_end, off, cell.key());
        self.set_nkeys(n + 1);
        true
    }

    /// Moves the page out, leaving an empty placeholder that must not be used again.
    pub(crate) fn take(&mut self) -> Dirty {
        std::mem::replace(
            self,
            Dirty {
                buf: Vec::new(),
                upper: 0,
            },
        )
    }

    /// Removes the last slot and returns its cell's bytes (the bulk builder's fix-up of a
    /// branch that would otherwise end with a lone child).
    pub(crate) fn pop_last(&mut self) -> Option<Vec<u8>> {
        let n = self.nkeys();
        if n == 0 {
            return None;
        }
        let raw = self.cell(n - 1).to_vec();
        self.remove(n - 1);
        Some(raw)
    }

    /// Drops slot `i` (its cell bytes become garbage until compaction).
    pub(crate) fn remove(&mut self, i: usize) {
        let n = self.nkeys();
        let s = self.base() + SLOT * i;
        let slots_end = self.base() + SLOT * n;
        let off = self.slot(i);
        if off == self.upper {
            self.upper += self.cell_len(off);
        }
        self.buf.copy_within(s + SLOT..slots_end, s);
        self.set_nkeys(n - 1);
        if n == 1 {
            self.upper = self.buf.len();
        }
    }

    /// Points branch child `ci` (0..=nkeys) at `child`.
    pub(crate) fn set_child(&mut self, ci: usize, child: u64) {
        if ci == 0 {
            wr_u64(&mut self.buf, HDR, child);
        } else {
            let off = self.slot(ci - 1);
            wr_u64(&mut self.buf, off + 2, child);
        }
    }

    /// Drops branch child `ci` (its subtree became empty) with one adjacent separator.
    pub(crate) fn remove_child(&mut self, ci: usize) {
        if self.nkeys() == 0 {
            return;
        }
        if ci == 0 {
            let off = self.slot(0);
            let c1 = page::rd_u64(&self.buf, off + 2).unwrap_or(0);
            wr_u64(&mut self.buf, HDR, c1);
            self.remove(0);
        } else {
            self.remove(ci - 1);
        }
    }

    /// Rewrites the cells contiguously at the end of the page.
    fn compact(&mut self) {
        let n = self.nkeys();
        let ps = self.buf.len();
        let old = self.buf.clone();
        let base = self.base();
        let mut end = ps;
        for i in 0..n {
            let off = rd_u16(&old, base + SLOT * i).unwrap_or(0) as usize;
            let len = cell_len_checked(&old, off, self.is_leaf()).unwrap_or(0);
            end -= len;
            self.buf[end..end + len].copy_from_slice(&old[off..off + len]);
            // the key head bytes of the slot stay as they are
            wr_u16(&mut self.buf, base + SLOT * i, end as u16);
        }
        self.buf[base + SLOT * n..end].fill(0);
        self.upper = end;
    }

    /// Splits this page while inserting `cell` at slot `i`: this page keeps the left half,
    /// `right_id` gets the rest. `appending` (insert at the end of the rightmost page) puts
    /// only the new cell on the right so sequential loads leave full pages behind.
    /// Returns (separator, right page).
    pub(crate) fn split_insert(
        &mut self,
        i: usize,
        cell: &Cell<'_>,
        appending: bool,
        right_id: u64,
    ) -> (Vec<u8>, Dirty) {
        let ps = self.buf.len();
        let leaf = self.is_leaf();
        let mut newc = vec![0u8; cell.len()];
        cell.write(&mut newc);
        let n = self.nkeys();
        let old = self.clone();
        let mut cells: Vec<&[u8]> = (0..n).map(|j| old.cell(j)).collect();
        cells.insert(i, &newc);
        let total: usize = cells.iter().map(|c| SLOT + c.len()).sum();
        let m = cells.len();
        // Appending: the left page keeps cells up to the fill target, so the first random
        // insert into it later finds room instead of splitting it 50/50.
        let base = if leaf { HDR } else { BRANCH_HDR };
        let fill_at = || {
            let limit = ps * FILL_PERCENT / 100;
            let mut acc = base;
            let mut at = 0;
            for (j, c) in cells.iter().enumerate() {
                acc += SLOT + c.len();
                if acc > limit {
                    break;
                }
                at = j + 1;
            }
            at
        };
        let at = if leaf && appending && i == n && m >= 2 {
            fill_at().clamp(1, m - 1)
        } else if !leaf && appending && i == n && m >= 3 {
            fill_at().clamp(1, m - 2)
        } else {
            let mut acc = 0;
            let mut at = m / 2;
            for (j, c) in cells.iter().enumerate() {
                acc += SLOT + c.len();
                if acc >= total / 2 {
                    at = if leaf { j + 1 } else { j };
                    break;
                }
            }
            if leaf {
                at.clamp(1, m - 1)
            } else {
                at.clamp(1, m.saturating_sub(2).max(1))
            }
        };
        let my_id = page::rd_u64(&self.buf, 8).unwrap_or(0);
        let key_of = |c: &[u8]| -> Vec<u8> { raw_key(c, leaf).to_vec() };
        if leaf {
            *self = Dirty::build(T_LEAF, my_id, 0, &cells[..at], ps);
            let right = Dirty::build(T_LEAF, right_id, 0, &cells[at..], ps);
            (key_of(cells[at]), right)
        } else {
            let child0 = page::rd_u64(&old.buf, HDR).unwrap_or(0);
            *self = Dirty::build(T_BRANCH, my_id, child0, &cells[..at], ps);
            let promoted = cells[at];
            let rchild0 = page::rd_u64(promoted, 2).unwrap_or(0);
            let right = Dirty::build(T_BRANCH, right_id, rchild0, &cells[at + 1..], ps);
            (key_of(promoted), right)
        }
    }

    fn build(typ: u8, pgno: u64, child0: u64, cells: &[&[u8]], ps: usize) -> Dirty {
        let mut buf = vec![0u8; ps];
        page::write_header(&mut buf, typ, cells.len() as u16, pgno);
        let base = if typ == T_LEAF {
            HDR
        } else {
            wr_u64(&mut buf, HDR, child0);
            BRANCH_HDR
        };
        let mut end = ps;
        for (i, c) in cells.iter().enumerate() {
            end -= c.len();
            buf[end..end + c.len()].copy_from_slice(c);
            write_slot(&mut buf, base + SLOT * i, end, raw_key(c, typ == T_LEAF));
        }
        Dirty { buf, upper: end }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Vec<u8> {
        format!("key{i:04}").into_bytes()
    }

    fn leaf_with(n: usize, ps: usize) -> Dirty {
        let mut d = Dirty::new_leaf(5, ps);
        for i in 0..n {
            let k = key(i);
            let v = vec![i as u8; 20];
            let c = Cell::Leaf {
                key: &k,
                val: ValRef::Inline(&v),
            };
            assert!(d.try_insert(i, &c));
        }
        d
    }

    #[test]
    fn insert_search_remove_compact() {
        let mut d = leaf_with(10, 1024);
        let v = d.view();
        assert_eq!(v.search(b"key0005").unwrap(), Ok(5));
        assert_eq!(v.search(b"key00055").unwrap(), Err(6));
        let (k, val) = v.leaf_entry(3).unwrap();
        assert_eq!((k, val), (&b"key0003"[..], ValRef::Inline(&[3u8; 20][..])));
        // fill, then delete and refill: compaction must reclaim the holes
        let mut n = 10;
        loop {
            let k = key(n);
            let c = Cell::Leaf {
                key: &k,
                val: ValRef::Inline(&[1u8; 20]),
            };
            if !d.try_insert(n, &c) {
                break;
            }
            n += 1;
        }
        assert!(d.used() <= 1024);
        for _ in 0..5 {
            d.remove(0);
        }
        for j in 0..5 {
            let k = format!("a{j}").into_bytes();
            let c = Cell::Leaf {
                key: &k,
                val: ValRef::Overflow { pgno: 9, len: 7000 },
            };
            assert!(d.try_insert(j, &c));
        }
        assert_eq!(d.nkeys(), n);
        let v = d.view();
        assert_eq!(
            v.leaf_entry(4).unwrap().1,
            ValRef::Overflow { pgno: 9, len: 7000 }
        );
        assert_eq!(v.key(5).unwrap(), b"key0005");
        page::seal(&mut d.buf);
        let copy = Dirty::from_page(&d.buf, 5, 8).unwrap();
        assert_eq!(copy.view().key(n - 1).unwrap(), key(n - 1).as_slice());
        assert!(PageView::new(&copy.buf, 8).is_ok());
    }

    #[test]
    fn branch_children_and_split() {
        let mut b = Dirty::new_branch(4, 512, 10);
        for (i, k) in [b"b", b"d"].iter().enumerate() {
            let c = Cell::Branch {
                key: &k[..],
                child: 11 + i as u64,
            };
            assert!(b.try_insert(i, &c));
        }
        let v = b.view();
        for (k, want, child) in [
            (&b"a"[..], 0, 10),
            (b"b", 1, 11),
            (b"c", 1, 11),
            (b"z", 2, 12),
        ] {
            assert_eq!(v.child_index(k).unwrap(), want);
            assert_eq!(v.child(want).unwrap(), child);
        }
        b.set_child(1, 99);
        assert_eq!(b.view().child(1).unwrap(), 99);
        b.remove_child(0);
        assert_eq!(b.view().child(0).unwrap(), 99);
        assert_eq!(b.nkeys(), 1);
        // split a full branch
        let mut b = Dirty::new_branch(4, 512, 100);
        let mut i = 0;
        loop {
            let k = key(i);
            let c = Cell::Branch {
                key: &k,
                child: 101 + i as u64,
            };
            if !b.try_insert(i, &c) {
                let (sep, r) = b.split_insert(i, &c, false, 7);
                let (l, rv) = (b.view(), r.view());
                assert_eq!(l.nkeys() + rv.nkeys() + 1, i + 1);
                assert!(l.key(l.nkeys() - 1).unwrap() < &sep[..]);
                assert!(&sep[..] < rv.key(0).unwrap());
                assert_eq!(rv.child(0).unwrap(), 101 + l.nkeys() as u64);
                break;
            }
            i += 1;
        }
    }

    #[test]
    fn leaf_split_modes() {
        let mut d = leaf_with(0, 1024);
        let mut n = 0;
        loop {
            let k = key(n);
            let c = Cell::Leaf {
                key: &k,
                val: ValRef::Inline(&[1u8; 20]),
            };
            if !d.try_insert(n, &c) {
                let mut even = d.clone();
                let (sep, r) = even.split_insert(n, &c, false, 6);
                assert_eq!(sep, r.view().key(0).unwrap());
                let diff = even.nkeys() as isize - r.nkeys() as isize;
                assert!(diff.abs() <= 1, "{} vs {}", even.nkeys(), r.nkeys());
                let (_, r) = d.split_insert(n, &c, true, 6);
                // Appending: the left page keeps what fits in the fill target.
                assert!(d.used() <= 1024 * FILL_PERCENT / 100, "{}", d.used());
                assert!(d.used() + 40 > 1024 * FILL_PERCENT / 100, "{}", d.used());
                assert_eq!(d.nkeys() + r.nkeys(), n + 1);
                break;
            }
            n += 1;
        }
    }
}
