//! The write transaction: copy-on-write edits on decoded nodes, page allocation, commit.
//!
//! Pages reachable from the last committed meta are never modified: touching one copies it
//! into a freshly allocated page id (free list first, else the file end). Commit writes the
//! dirty pages, fdatasyncs, then writes the alternate meta page and fdatasyncs again.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::unix::fs::FileExt;

use parking_lot::MutexGuard;

use super::node::{leaf_entry_size, Branch, Leaf, Node, Val};
use super::page::{self, corrupt, PageView, ValRef, MAX_DEPTH, OVERFLOW_HDR};
use super::{freelist, map_file, max_entry_size, max_key_size, resolve};
use super::{BTree, BTreeError, Snapshot, WriterState};

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

/// Largest single write issued at commit.
const WRITE_CHUNK: usize = 8 << 20;

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
    dirty: IdMap<Node>,
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
        let mut ws = inner.writer.lock();
        if ws.poisoned {
            return Err(BTreeError::Io(std::io::Error::other(
                "an earlier commit failed half-way; reopen the tree",
            )));
        }
        let snap = inner.current();
        // Pages freed by txn t are invisible to every reader with txid >= t.
        let keep = match inner.oldest_reader() {
            Some(o) => ws.pending.split_off(&(o + 1)),
            None => Default::default(),
        };
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
            for &p in self.ws.free.iter() {
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

    fn release_val(&mut self, v: &Val) {
        if let Val::Overflow { pgno, len } = *v {
            let fresh = self.overflow.remove(&pgno).is_some();
            let n = page::overflow_pages(len as usize, self.ps);
            self.release(pgno, n, fresh);
        }
    }

    fn committed_view(&self, pg: u64) -> Result<PageView<'_>, BTreeError> {
        if pg < 2 || pg >= self.old_hwm() {
            return Err(corrupt(format!("child pointer to page {pg} out of range")));
        }
        PageView::new(page::page_slice(&self.snap.map, pg, self.ps)?, pg)
    }

    /// Makes page `pg` writable, copying it to a new page id if it is committed.
    fn touch(&mut self, pg: u64) -> Result<u64, BTreeError> {
        if self.dirty.contains_key(&pg) {
            return Ok(pg);
        }
        let node = Node::decode(&self.committed_view(pg)?)?;
        let id = self.alloc(1);
        self.freed.push(pg);
        self.dirty.insert(id, node);
        Ok(id)
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut Node, BTreeError> {
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
            if let Some(node) = self.dirty.get(&pg) {
                match node {
                    Node::Leaf(l) => {
                        return match l.keys.binary_search_by(|k| k.as_slice().cmp(key)) {
                            Ok(i) => Ok(Some(match &l.vals[i] {
                                Val::Inline(b) => f(b),
                                Val::Overflow { pgno, len } => f(self.overflow_bytes(*pgno, *len)?),
                            })),
                            Err(_) => Ok(None),
                        };
                    }
                    Node::Branch(b) => pg = b.children[b.child_index(key)],
                }
            } else {
                let view = self.committed_view(pg)?;
                if view.is_leaf() {
                    return match view.search(key)? {
                        Ok(i) => match view.leaf_entry(i)?.1 {
                            ValRef::Overflow { pgno, len } => {
                                Ok(Some(f(self.overflow_bytes(pgno, len)?)))
                            }
                            v => Ok(Some(f(resolve(&self.snap.map, v, self.ps)?))),
                        },
                        Err(_) => Ok(None),
                    };
                }
                pg = view.child(view.child_index(key)?)?;
            }
        }
        Err(corrupt("tree deeper than any valid tree (cycle?)"))
    }

    fn overflow_bytes(&self, pgno: u64, len: u64) -> Result<&[u8], BTreeError> {
        match self.overflow.get(&pgno) {
            Some(run) => run
                .get(OVERFLOW_HDR..OVERFLOW_HDR + len as usize)
                .ok_or_else(|| corrupt("internal: overflow run shorter than its value")),
            None => page::overflow_value(&self.snap.map, pgno, len, self.ps),
        }
    }

    /// Reads through this txn, so it sees its own uncommitted writes.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BTreeError> {
        self.get_with(key, |v| v.to_vec())
    }

    /// Number of entries including this txn's changes.
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// True if the tree (as this txn sees it) is empty.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    // ---------- writes ----------

    /// Inserts or overwrites `key`; values larger than a quarter page go to overflow pages.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BTreeError> {
        if key.len() > self.max_key {
            return Err(BTreeError::KeyTooLarge(key.len()));
        }
        let val = if leaf_entry_size(key.len(), value.len()) > self.max_entry {
            let n = page::overflow_pages(value.len(), self.ps);
            let pgno = self.alloc(n);
            self.overflow
                .insert(pgno, page::encode_overflow(pgno, value, self.ps));
            Val::Overflow {
                pgno,
                len: value.len() as u64,
            }
        } else {
            Val::Inline(value.to_vec())
        };
        if self.root == 0 {
            let mut leaf = Leaf::new();
            leaf.insert(0, key.to_vec(), val);
            let id = self.alloc(1);
            self.dirty.insert(id, Node::Leaf(leaf));
            self.root = id;
            self.depth = 1;
            self.entries = 1;
            return Ok(());
        }
        match self.insert_rec(self.root, key, val, 1)? {
            Ins::Done(id) => self.root = id,
            Ins::Split(left, sep, right) => {
                let id = self.alloc(1);
                let b = Branch::new(vec![sep], vec![left, right]);
                self.dirty.insert(id, Node::Branch(b));
                self.root = id;
                self.depth += 1;
            }
        }
        Ok(())
    }

    fn insert_rec(&mut self, pg: u64, key: &[u8], val: Val, level: u32) -> Result<Ins, BTreeError> {
        if level > self.depth {
            return Err(corrupt("tree deeper than its meta says"));
        }
        let id = self.touch(pg)?;
        let ps = self.ps;
        let (child_idx, child) = match self.node_mut(id)? {
            Node::Leaf(l) => {
                let appending;
                match l.keys.binary_search_by(|k| k.as_slice().cmp(key)) {
                    Ok(i) => {
                        let old = l.replace(i, val);
                        appending = false;
                        self.release_val(&old);
                    }
                    Err(i) => {
                        appending = i == l.keys.len();
                        l.insert(i, key.to_vec(), val);
                        self.entries += 1;
                    }
                }
                let Some(Node::Leaf(l)) = self.dirty.get_mut(&id) else {
                    return Err(corrupt("internal: leaf vanished"));
                };
                if l.size <= ps {
                    return Ok(Ins::Done(id));
                }
                let (sep, right) = l.split(appending);
                let rid = self.alloc(1);
                self.dirty.insert(rid, Node::Leaf(right));
                return Ok(Ins::Split(id, sep, rid));
            }
            Node::Branch(b) => {
                let ci = b.child_index(key);
                (ci, b.children[ci])
            }
        };
        let res = self.insert_rec(child, key, val, level + 1)?;
        let Node::Branch(b) = self.node_mut(id)? else {
            return Err(corrupt("internal: branch vanished"));
        };
        match res {
            Ins::Done(c) => {
                b.children[child_idx] = c;
                Ok(Ins::Done(id))
            }
            Ins::Split(l, sep, r) => {
                b.children[child_idx] = l;
                let appending = child_idx == b.keys.len();
                b.insert_split(child_idx, sep, r);
                if b.size <= ps {
                    return Ok(Ins::Done(id));
                }
                let (sep, right) = b.split(appending);
                let rid = self.alloc(1);
                self.dirty.insert(rid, Node::Branch(right));
                Ok(Ins::Split(id, sep, rid))
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
                while let Some(Node::Branch(b)) = self.dirty.get(&self.root) {
                    if b.children.len() != 1 {
                        break;
                    }
                    let child = b.children[0];
                    let old = self.root;
                    self.release_node(old);
                    self.root = child;
                    self.depth -= 1;
                }
            }
        }
        self.entries -= 1;
        Ok(true)
    }

    fn delete_rec(&mut self, pg: u64, key: &[u8], level: u32) -> Result<Option<u64>, BTreeError> {
        if level > self.depth {
            return Err(corrupt("tree deeper than its meta says"));
        }
        let id = self.touch(pg)?;
        let (ci, child) = match self.node_mut(id)? {
            Node::Leaf(l) => {
                let Ok(i) = l.keys.binary_search_by(|k| k.as_slice().cmp(key)) else {
                    return Err(corrupt("internal: deleted key vanished"));
                };
                let old = l.remove(i);
                let empty = l.keys.is_empty();
                self.release_val(&old);
                if empty {
                    self.release_node(id);
                    return Ok(None);
                }
                return Ok(Some(id));
            }
            Node::Branch(b) => {
                let ci = b.child_index(key);
                (ci, b.children[ci])
            }
        };
        let res = self.delete_rec(child, key, level + 1)?;
        let Node::Branch(b) = self.node_mut(id)? else {
            return Err(corrupt("internal: branch vanished"));
        };
        match res {
            Some(c) => b.children[ci] = c,
            None => {
                b.remove_child(ci);
                if b.children.is_empty() {
                    self.release_node(id);
                    return Ok(None);
                }
            }
        }
        Ok(Some(id))
    }

    /// Records the WAL LSN this tree will reflect once committed.
    pub fn set_checkpoint_lsn(&mut self, lsn: u64) {
        self.lsn = lsn;
    }

    // ---------- commit ----------

    /// Makes the txn durable and visible; returns the new txid.
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
        let txid = self.snap.meta.txid + 1;
        // Pages this commit stops referencing, including the old freelist pages.
        let mut pending_now = std::mem::take(&mut self.freed);
        pending_now.extend(self.ws.freelist_pages.iter().copied());
        let pending_old: usize = self.ws.pending.values().map(Vec::len).sum();
        let old = self.old_hwm();

        // Pick the pages for the new freelist; taking a free page shrinks the list itself.
        let mut fl_pages = Vec::new();
        let mut total = self.ws.free.len() + pending_old + pending_now.len();
        while fl_pages.len() < freelist::pages_needed(total, ps) {
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
        ids.extend_from_slice(&pending_now);
        ids.sort_unstable();
        let fl_bufs = freelist::encode(&ids, &fl_pages, ps);

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
        enum Src<'s> {
            Node(&'s Node),
            Raw(&'s [u8]),
        }
        let mut items: Vec<(u64, Src<'_>)> =
            Vec::with_capacity(self.dirty.len() + self.overflow.len() + fl_bufs.len());
        items.extend(self.dirty.iter().map(|(id, n)| (*id, Src::Node(n))));
        items.extend(
            self.overflow
                .iter()
                .map(|(id, b)| (*id, Src::Raw(b.as_slice()))),
        );
        items.extend(fl_bufs.iter().map(|(id, b)| (*id, Src::Raw(b.as_slice()))));
        items.sort_unstable_by_key(|(id, _)| *id);
        let file = &self.tree.inner().file;
        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK.min(items.len() * ps + ps));
        let mut start = 0u64;
        let mut written = 0usize;
        for (id, src) in &items {
            let next = start + (buf.len() / ps) as u64;
            if !buf.is_empty() && (*id != next || buf.len() >= WRITE_CHUNK) {
                file.write_all_at(&buf, start * ps as u64)?;
                written += buf.len();
                buf.clear();
            }
            if buf.is_empty() {
                start = *id;
            }
            match src {
                Src::Node(n) => {
                    let at = buf.len();
                    buf.resize(at + ps, 0);
                    n.encode(*id, &mut buf[at..]);
                }
                Src::Raw(b) => buf.extend_from_slice(b),
            }
        }
        if !buf.is_empty() {
            file.write_all_at(&buf, start * ps as u64)?;
            written += buf.len();
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
            free_count: ids.len() as u64,
            entries: self.entries,
            checkpoint_lsn: self.lsn,
        };
        // From here on a failure leaves the on-disk commit point unknown.
        self.ws.poisoned = true;
        file.write_all_at(&meta.encode(), meta.slot_offset())?;
        file.sync_data()?;
        let map = if grew {
            map_file(file)?
        } else {
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
