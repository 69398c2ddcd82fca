//! The write transaction: copy-on-write edits on decoded nodes, page allocation, commit.
//!
//! Pages reachable from the last committed meta are never modified: touching one copies it
//! into a freshly allocated page id (free list first, else the file end). Commit writes the
//! dirty pages, fdatasyncs, then writes the alternate meta page and fdatasyncs again.
//!
//! Pages freed by commit `T` are reused from commit `T + 2` on (and once no reader needs them):
//! the pages commit `T + 1` writes then belong to neither meta on disk, so a torn or damaged
//! newest meta always falls back to an intact tree.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::unix::fs::FileExt;

use parking_lot::MutexGuard;

use super::node::{leaf_entry_size, Cell, Dirty};
use super::page::{self, corrupt, PageView, ValRef, MAX_DEPTH, OVERFLOW_HDR};
use super::{freelist, map_file, max_entry_size, max_key_size};
use super::{BTree, BTreeError, Snapshot, WriterState};

mod bulk;

/// Cheap multiplicative hash for page ids (hashbrown uses the high bits as tags).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// How many free pages an overflow allocation inspects before extending the file instead.
const MAX_RUN_SCAN: usize = 4096;

/// A leaf under this share of its page is merged into a sibling on delete (LMDB: 25%, which
/// leaves the leaves a third full after deleting half the keys)...
const MERGE_BELOW_PERCENT: usize = 50;
/// ...if both then fit in this share of one page: the two halves of a split (one entry over a
/// page) only merge again after deletes free a tenth of a page, so no split/merge ping-pong.
const MERGE_INTO_PERCENT: usize = 90;

/// Most buffers handed to one `pwritev` (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Writes `parts` back to back at byte `off` with `pwritev`, resuming after short writes.
fn write_parts_at(file: &std::fs::File, mut off: u64, parts: &[&[u8]]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let total = parts.iter().map(|p| p.len()).sum();
    let (mut idx, mut skip) = (0usize, 0usize);
    while idx < parts.len() {
        if parts[idx].len() == skip {
            (idx, skip) = (idx + 1, 0);
            continue;
        }
        let iov: Vec<libc::iovec> = parts[idx..]
            .iter()
            .take(IOV_MAX)
            .enumerate()
            .map(|(j, p)| {
                let p = if j == 0 { &p[skip..] } else { p };
                libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                }
            })
            .collect();
        // SAFETY: every iovec points into a live slice of `parts` for the duration of the call,
        // and the kernel only reads from them.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                off as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut n = n as usize;
        off += n as u64;
        while n > 0 && idx < parts.len() {
            let rest = parts[idx].len() - skip;
            if n >= rest {
                n -= rest;
                (idx, skip) = (idx + 1, 0);
            } else {
                skip += n;
                n = 0;
            }
        }
    }
    Ok(total)
}

/// The single write transaction; invisible to readers until `commit` returns.
///
/// Dropping it without `commit` aborts: nothing reachable changes on disk.
pub struct WriteTxn<'a> {
    tree: &'a BTree,
    ws: MutexGuard<'a, WriterState>,
    /// The last committed tree this txn builds on.
    snap: Snapshot,
    ps: usize,
    max_key: usize,
    max_entry: usize,
    root: u64,
    depth: u32,
    entries: u64,
    lsn: u64,
    /// Next never-used page id (high-water mark).
    hwm: u64,
    dirty: IdMap<Dirty>,
    /// Overflow runs written by this txn: first page id -> sealed run bytes.
    overflow: IdMap<Vec<u8>>,
    /// Pages taken from `ws.free` that existed before this txn (restored on abort).
    taken: Vec<u64>,
    /// Committed pages this txn no longer references (pending-free at commit).
    freed: Vec<u64>,
    done: bool,
}

enum Ins {
    Done(u64),
    Split(u64, Vec<u8>, u64),
}

impl<'a> WriteTxn<'a> {
    pub(crate) fn begin(tree: &'a BTree) -> Result<Self, BTreeError> {
        let inner = tree.inner();
        if inner.read_only {
            return Err(BTreeError::ReadOnly(inner.path.display().to_string()));
        }
        let mut ws = inner.writer.lock();
        if ws.poisoned {
            return Err(BTreeError::Poisoned);
        }
        let snap = inner.current();
        // Pages freed by txn t are invisible to every reader with txid >= t, and belong to no
        // meta on disk once txn t + 1 is durable: this txn (t + 2 or later) may reuse them.
        let newest_reusable = snap.meta.txid.saturating_sub(1);
        let bound = match inner.oldest_reader() {
            Some(o) => o.min(newest_reusable),
            None => newest_reusable,
        };
        let keep = ws.pending.split_off(&(bound + 1));
        let release = std::mem::replace(&mut ws.pending, keep);
        for (_, pages) in release {
            ws.free.extend(pages);
        }
        let ps = snap.ps();
        let m = snap.meta;
        Ok(WriteTxn {
            tree,
            ws,
            ps,
            max_key: max_key_size(ps),
            max_entry: max_entry_size(ps),
            root: m.root,
            depth: m.depth,
            entries: m.entries,
            lsn: m.checkpoint_lsn,
            hwm: m.page_count,
            snap,
            dirty: IdMap::default(),
            overflow: IdMap::default(),
            taken: Vec::new(),
            freed: Vec::new(),
            done: false,
        })
    }

    // ---------- allocation ----------

    fn old_hwm(&self) -> u64 {
        self.snap.meta.page_count
    }

    /// Allocates `n` contiguous pages: from the free set when possible, else at the end.
    fn alloc(&mut self, n: u64) -> u64 {
        let old = self.old_hwm();
        if n == 1 {
            if let Some(p) = self.ws.free.pop_first() {
                if p < old {
                    self.taken.push(p);
                }
                return p;
            }
        } else {
            let mut run_start = 0;
            let mut run_len = 0;
            let mut found = None;
            // Bounded scan: a huge fragmented free list must not make every blob put O(free).
            for &p in self.ws.free.iter().take(MAX_RUN_SCAN) {
                if run_len > 0 && p == run_start + run_len {
                    run_len += 1;
                } else {
                    run_start = p;
                    run_len = 1;
                }
                if run_len == n {
                    found = Some(run_start);
                    break;
                }
            }
            if let Some(s) = found {
                for p in s..s + n {
                    self.ws.free.remove(&p);
                    if p < old {
                        self.taken.push(p);
                    }
                }
                return s;
            }
        }
        let p = self.hwm;
        self.hwm += n;
        p
    }

    /// Releases pages this txn stops referencing: fresh ones are reusable at once,
    /// committed ones only after commit and once no reader can see them.
    fn release(&mut self, p: u64, n: u64, fresh: bool) {
        for q in p..p + n {
            if fresh {
                self.ws.free.insert(q);
            } else {
                self.freed.push(q);
            }
        }
    }

    fn release_node(&mut self, p: u64) {
        let fresh = self.dirty.remove(&p).is_some();
        self.release(p, 1, fresh);
    }

    fn release_overflow(&mut self, ov: Option<(u64, u64)>) {
        if let Some((pgno, len)) = ov {
            let fresh = self.overflow.remove(&pgno).is_some();
            let n = page::overflow_pages(len as usize, self.ps);
            self.release(pgno, n, fresh);
        }
    }

    fn committed_view(&self, pg: u64) -> Result<PageView<'_>, BTreeError> {
        if pg < 2 || pg >= self.old_hwm() {
            return Err(corrupt(format!("child pointer to page {pg} out of range")));
        }
        PageView::new(self.snap.map.page(pg, self.ps)?, pg)
    }

    /// Makes page `pg` writable, copying it to a new page id if it is committed.
    fn touch(&mut self, pg: u64) -> Result<u64, BTreeError> {
        if self.dirty.contains_key(&pg) {
            return Ok(pg);
        }
        if pg < 2 || pg >= self.old_hwm() {
            return Err(corrupt(format!("child pointer to page {pg} out of range")));
        }
        // Verified: copying a damaged page would re-seal bad bytes with a fresh checksum.
        let src = self.snap.map.page(pg, self.ps)?;
        let mut d = Dirty::from_page(src, pg, 0)?;
        let id = self.alloc(1);
        page::wr_u64(&mut d.buf, 8, id);
        self.freed.push(pg);
        self.dirty.insert(id, d);
        Ok(id)
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut Dirty, BTreeError> {
        self.dirty
            .get_mut(&id)
            .ok_or_else(|| corrupt(format!("internal: page {id} is not dirty")))
    }

    // ---------- reads ----------

    /// Looks `key` up in this txn's view and hands the value to `f` in place.
    pub fn get_with<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, BTreeError> {
        let mut pg = self.root;
        if pg == 0 {
            return Ok(None);
        }
        for _ in 0..MAX_DEPTH {
            let view = self.view(pg)?;
            if view.is_leaf() {
                return match view.search(key)? {
                    Ok(i) => match view.leaf_entry(i)?.1 {
                        ValRef::Overflow { pgno, len } => {
                            Ok(Some(f(self.overflow_bytes(pgno, len)?)))
                        }
                        ValRef::Inline(b) => Ok(Some(f(b))),
                    },
                    Err(_) => Ok(None),
                };
            }
            pg = view.child(view.child_index(key)?)?;
        }
        Err(corrupt("tree deeper than any valid tree (cycle?)"))
    }

    /// A page as this txn sees it: its own dirty copy, else the committed one.
    #[inline]
    fn view(&self, pg: u64) -> Result<PageView<'_>, BTreeError> {
        match self.dirty.get(&pg) {
            Some(d) => Ok(d.view()),
            None => self.committed_view(pg),
        }
    }

    fn overflow_bytes(&self, pgno: u64, len: u64) -> Result<&[u8], BTreeError> {
        match self.overflow.get(&pgno) {
            Some(run) => run
                .get(OVERFLOW_HDR..OVERFLOW_HDR + len as usize)
                .ok_or_else(|| corrupt("internal: overflow run shorter than its value")),
            None => self.snap.map.overflow(pgno, len, self.ps),
        }
    }

    /// Reads through this txn, so it sees its own uncommitted writes.
    #[cfg(test)]
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BTreeError> {
        self.get_with(key, |v| v.to_vec())
    }

    /// Number of entries including this txn's changes.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.entries
    }

    // ---------- writes ----------

    /// Checks sizes and stores a value too large for a leaf (over a quarter page) in an
    /// overflow run; returns how the leaf cell refers to it.
    fn stage_value<'v>(&mut self, key: &[u8], value: &'v [u8]) -> Result<ValRef<'v>, BTreeError> {
        if key.len() > self.max_key {
            return Err(BTreeError::KeyTooLarge(key.len()));
        }
        if value.len() > u32::MAX as usize {
            return Err(BTreeError::ValueTooLarge(value.len()));
        }
        Ok(
            if leaf_entry_size(key.len(), value.len()) > self.max_entry {
                let n = page::overflow_pages(value.len(), self.ps);
                let pgno = self.alloc(n);
                self.overflow
                    .insert(pgno, page::encode_overflow(pgno, value, self.ps));
                ValRef::Overflow {
                    pgno,
                    len: value.len() as u64,
                }
            } else {
                ValRef::Inline(value)
            },
        )
    }

    /// Drops every entry: the tree's pages and overflow runs are released (committed ones are
    /// reused from the commit after next, as always) and the tree is empty. Returns the count.
    pub fn clear(&mut self) -> Result<u64, BTreeError> {
        if self.root == 0 {
            return Ok(0);
        }
        let mut stack = vec![(self.root, 1u32)];
        let mut pages = Vec::new();
        let mut runs = Vec::new();
        while let Some((pg, level)) = stack.pop() {
            if level > self.depth {
                return Err(corrupt("tree deeper than its meta says"));
            }
            let v = self.view(pg)?;
            if v.is_leaf() {
                for i in 0..v.nkeys() {
                    if let ValRef::Overflow { pgno, len } = v.leaf_entry(i)?.1 {
                        runs.push((pgno, len));
                    }
                }
            } else {
                for ci in 0..=v.nkeys() {
                    stack.push((v.child(ci)?, level + 1));
                }
            }
            pages.push(pg);
        }
        for p in pages {
            self.release_node(p);
        }
        for r in runs {
            self.release_overflow(Some(r));
        }
        let n = self.entries;
        (self.root, self.depth, self.entries) = (0, 0, 0);
        Ok(n)
    }

    /// Inserts or overwrites `key`; values larger than a quarter page go to overflow pages.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BTreeError> {
        let val = self.stage_value(key, value)?;
        let cell = Cell::Leaf { key, val };
        if self.root == 0 {
            let id = self.alloc(1);
            let mut leaf = Dirty::new_leaf(id, self.ps);
            leaf.try_insert(0, &cell);
            self.dirty.insert(id, leaf);
            self.root = id;
            self.depth = 1;
            self.entries = 1;
            return Ok(());
        }
        match self.insert_rec(self.root, key, &cell, 1, true)? {
            Ins::Done(id) => self.root = id,
            Ins::Split(left, sep, right) => {
                let id = self.alloc(1);
                let mut b = Dirty::new_branch(id, self.ps, left);
                b.try_insert(
                    0,
                    &Cell::Branch {
                        key: &sep,
                        child: right,
                    },
                );
                self.dirty.insert(id, b);
                self.root = id;
                self.depth += 1;
            }
        }
        Ok(())
    }

    /// Inserts `cell` at slot `i` of dirty page `id`, splitting it if it is full.
    fn insert_at(
        &mut self,
        id: u64,
        i: usize,
        cell: &Cell<'_>,
        appending: bool,
    ) -> Result<Ins, BTreeError> {
        if self.node_mut(id)?.try_insert(i, cell) {
            return Ok(Ins::Done(id));
        }
        let rid = self.alloc(1);
        let (sep, right) = self.node_mut(id)?.split_insert(i, cell, appending, rid);
        self.dirty.insert(rid, right);
        Ok(Ins::Split(id, sep, rid))
    }

    fn insert_rec(
        &mut self,
        pg: u64,
        key: &[u8],
        cell: &Cell<'_>,
        level: u32,
        rightmost: bool,
    ) -> Result<Ins, BTreeError> {
        if level > self.depth {
            return Err(corrupt("tree deeper than its meta says"));
        }
        let id = self.touch(pg)?;
        let d = self.node_mut(id)?;
        let view = d.view();
        if view.is_leaf() {
            let n = view.nkeys();
            return match view.search(key)? {
                Ok(i) => {
                    let old = match view.leaf_entry(i)?.1 {
                        ValRef::Overflow { pgno, len } => Some((pgno, len)),
                        ValRef::Inline(_) => None,
                    };
                    d.remove(i);
                    self.release_overflow(old);
                    self.insert_at(id, i, cell, false)
                }
                Err(i) => {
                    self.entries += 1;
                    self.insert_at(id, i, cell, rightmost && i == n)
                }
            };
        }
        let ci = view.child_index(key)?;
        let child = view.child(ci)?;
        let n = view.nkeys();
        match self.insert_rec(child, key, cell, level + 1, rightmost && ci == n)? {
            Ins::Done(c) => {
                if c != child {
                    self.node_mut(id)?.set_child(ci, c);
                }
                Ok(Ins::Done(id))
            }
            Ins::Split(l, sep, r) => {
                self.node_mut(id)?.set_child(ci, l);
                let bcell = Cell::Branch {
                    key: &sep,
                    child: r,
                };
                self.insert_at(id, ci, &bcell, rightmost && ci == n)
            }
        }
    }

    /// Removes `key`; returns whether it existed. Empty pages are freed, underfull ones kept.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, BTreeError> {
        if key.len() > self.max_key || self.get_with(key, |_| ())?.is_none() {
            return Ok(false);
        }
        match self.delete_rec(self.root, key, 1)? {
            None => {
                self.root = 0;
                self.depth = 0;
            }
            Some(id) => {
                self.root = id;
                // Collapse single-child roots.
                while let Some(d) = self.dirty.get(&self.root) {
                    if d.is_leaf() || d.nkeys() != 0 {
                        break;
                    }
                    let child = d.view().child(0)?;
                    let old = self.root;
                    self.release_node(old);
                    self.root = child;
                    self.depth = self.depth.saturating_sub(1);
                }
            }
        }
        self.entries = self.entries.saturating_sub(1);
        Ok(true)
    }

    fn delete_rec(&mut self, pg: u64, key: &[u8], level: u32) -> Result<Option<u64>, BTreeError> {
        if level > self.depth {
            return Err(corrupt("tree deeper than its meta says"));
        }
        let id = self.touch(pg)?;
        let d = self.node_mut(id)?;
        let view = d.view();
        if view.is_leaf() {
            let Ok(i) = view.search(key)? else {
                return Err(corrupt("internal: deleted key vanished"));
            };
            let old = match view.leaf_entry(i)?.1 {
                ValRef::Overflow { pgno, len } => Some((pgno, len)),
                ValRef::Inline(_) => None,
            };
            d.remove(i);
            let empty = d.nkeys() == 0;
            self.release_overflow(old);
            if empty {
                self.release_node(id);
                return Ok(None);
            }
            return Ok(Some(id));
        }
        let ci = view.child_index(key)?;
        let child = view.child(ci)?;
        let res = self.delete_rec(child, key, level + 1)?;
        let d = self.node_mut(id)?;
        match res {
            Some(c) => {
                d.set_child(ci, c);
                self.maybe_merge_leaf(id, ci)?;
            }
            None => {
                if d.nkeys() == 0 {
                    self.release_node(id);
                    return Ok(None);
                }
                d.remove_child(ci);
            }
        }
        Ok(Some(id))
    }

    /// Merges leaf child `ci` of dirty branch `id` into a sibling when it has become sparse
    /// (under `MERGE_BELOW_PERCENT` full) and both fit in `MERGE_INTO_PERCENT` of one page: after
    /// deleting half of the keys, leaves are about a third full, and would stay so without it.
    fn maybe_merge_leaf(&mut self, id: u64, ci: usize) -> Result<(), BTreeError> {
        let ps = self.ps;
        let (child, nk) = {
            let v = self.view(id)?;
            (v.child(ci)?, v.nkeys())
        };
        let cv = self.view(child)?;
        if nk == 0 || !cv.is_leaf() {
            return Ok(());
        }
        let cused = cv.leaf_used()?;
        if cused >= ps * MERGE_BELOW_PERCENT / 100 {
            return Ok(());
        }
        // Prefer the left sibling, else the right one, whichever has room.
        let mut pick = None;
        for sib_idx in [ci.checked_sub(1), (ci < nk).then_some(ci + 1)]
            .into_iter()
            .flatten()
        {
            let sib = self.view(id)?.child(sib_idx)?;
            let sv = self.view(sib)?;
            if sv.is_leaf() && cused + sv.leaf_used()? - page::HDR <= ps * MERGE_INTO_PERCENT / 100
            {
                pick = Some((sib_idx, sib));
                break;
            }
        }
        let Some((sib_idx, sib)) = pick else {
            return Ok(());
        };
        let (li, ri) = if sib_idx < ci {
            (sib_idx, ci)
        } else {
            (ci, sib_idx)
        };
        let sid = self.touch(sib)?;
        self.node_mut(id)?.set_child(sib_idx, sid);
        let (lid, rid) = if li == ci { (child, sid) } else { (sid, child) };
        let right = self
            .dirty
            .remove(&rid)
            .ok_or_else(|| corrupt("internal: merge source is not dirty"))?;
        let left = self.node_mut(lid)?;
        for j in 0..right.nkeys() {
            if !left.push_raw(right.cell(j)) {
                return Err(corrupt("internal: merged leaf overflowed"));
            }
        }
        self.release(rid, 1, true);
        self.node_mut(id)?.remove_child(ri);
        Ok(())
    }

    /// Records the WAL LSN this tree will reflect once committed.
    pub fn set_checkpoint_lsn(&mut self, lsn: u64) {
        self.lsn = lsn;
    }

    // ---------- commit ----------

    /// Makes the txn durable and visible; returns the new txid (the old one if nothing changed).
    pub fn commit(self) -> Result<u64, BTreeError> {
        self.commit_inner(true)
    }

    /// Test hook: writes and syncs every page but "crashes" before the meta write.
    #[cfg(test)]
    pub(crate) fn commit_without_meta(self) -> Result<u64, BTreeError> {
        self.commit_inner(false)
    }

    fn commit_inner(mut self, write_meta: bool) -> Result<u64, BTreeError> {
        let ps = self.ps;
        if write_meta
            && self.dirty.is_empty()
            && self.overflow.is_empty()
            && self.freed.is_empty()
            && self.lsn == self.snap.meta.checkpoint_lsn
        {
            // Nothing changed: no new commit point (Drop returns any scratch pages).
            return Ok(self.snap.meta.txid);
        }
        let txid = self.snap.meta.txid + 1;
        // Pages this commit stops referencing, including the old freelist pages.
        let mut pending_now = std::mem::take(&mut self.freed);
        pending_now.extend(self.ws.freelist_pages.iter().copied());
        let pending_old: usize = self.ws.pending.values().map(Vec::len).sum();
        let old = self.old_hwm();

        // Pick the pages for the new freelist; taking a free page shrinks the list itself.
        // What this commit frees is persisted as held: after a restart it still waits a commit.
        let mut fl_pages = Vec::new();
        let mut total = self.ws.free.len() + pending_old;
        while fl_pages.len() < freelist::pages_for(total, pending_now.len(), ps) {
            if let Some(p) = self.ws.free.pop_first() {
                if p < old {
                    self.taken.push(p);
                }
                total -= 1;
                fl_pages.push(p);
            } else {
                fl_pages.push(self.hwm);
                self.hwm += 1;
            }
        }
        let mut ids: Vec<u64> = Vec::with_capacity(total);
        ids.extend(self.ws.free.iter().copied());
        for v in self.ws.pending.values() {
            ids.extend_from_slice(v);
        }
        ids.sort_unstable();
        pending_now.sort_unstable();
        let fl_bufs = freelist::encode(&ids, &pending_now, &fl_pages, ps);
        let free_count = (ids.len() + pending_now.len()) as u64;

        // Grow the file if the new pages reach past its end.
        let need = self.hwm * ps as u64;
        let mut grew = false;
        if need > self.ws.file_len {
            let cur = self.ws.file_len;
            let step = cur.clamp(1 << 20, 1 << 30);
            let new_len = need.max(cur + step).div_ceil(ps as u64) * ps as u64;
            self.tree.inner().file.set_len(new_len)?;
            tracing::debug!(from = cur, to = new_len, "grew B+Tree file");
            self.ws.file_len = new_len;
            grew = true;
        }

        // Write every new page, in id order, coalescing neighbours.
        for d in self.dirty.values_mut() {
            page::seal(&mut d.buf);
        }
        let mut items: Vec<(u64, &[u8])> =
            Vec::with_capacity(self.dirty.len() + self.overflow.len() + fl_bufs.len());
        items.extend(self.dirty.iter().map(|(id, d)| (*id, d.buf.as_slice())));
        items.extend(self.overflow.iter().map(|(id, b)| (*id, b.as_slice())));
        items.extend(fl_bufs.iter().map(|(id, b)| (*id, b.as_slice())));
        items.sort_unstable_by_key(|(id, _)| *id);
        let file = &self.tree.inner().file;
        // Neighbouring pages go out in one pwritev, straight from their buffers (no copy).
        let mut written = 0usize;
        let mut run: Vec<&[u8]> = Vec::new();
        let mut start = 0u64;
        let mut next = 0u64;
        for (id, src) in &items {
            if !run.is_empty() && *id != next {
                written += write_parts_at(file, start * ps as u64, &run)?;
                run.clear();
            }
            if run.is_empty() {
                start = *id;
                next = *id;
            }
            run.push(src);
            next += (src.len() / ps).max(1) as u64;
        }
        if !run.is_empty() {
            written += write_parts_at(file, start * ps as u64, &run)?;
        }
        file.sync_data()?;
        if !write_meta {
            return Ok(txid);
        }

        let meta = super::Meta {
            page_size: ps as u32,
            txid,
            root: self.root,
            depth: self.depth,
            page_count: self.hwm,
            freelist: fl_pages.first().copied().unwrap_or(0),
            free_count,
            entries: self.entries,
            checkpoint_lsn: self.lsn,
        };
        // From here on a failure leaves the on-disk commit point unknown.
        self.ws.poisoned = true;
        file.write_all_at(&meta.encode(), meta.slot_offset())?;
        file.sync_data()?;
        let map = if grew {
            map_file(file, ps, &self.tree.inner().integrity)?
        } else {
            // Reused page ids carry new bytes: drop their cached verdicts before anyone sees them.
            for (id, src) in &items {
                self.snap.map.forget(*id, (src.len() / ps).max(1) as u64);
            }
            self.snap.map.clone()
        };
        self.ws.poisoned = false;
        self.tree.inner().publish(Snapshot { meta, map });
        self.ws.pending.insert(txid, pending_now);
        self.ws.freelist_pages = fl_pages;
        self.done = true;
        tracing::trace!(
            txid,
            pages = items.len(),
            bytes = written,
            "committed B+Tree txn"
        );
        Ok(txid)
    }
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Abort: give back pages taken from the free set, forget pages past the old end.
        let old = self.old_hwm();
        let _ = self.ws.free.split_off(&old);
        let taken = std::mem::take(&mut self.taken);
        self.ws.free.extend(taken);
    }
}
