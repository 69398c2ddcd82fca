//! Consistent reads: memtables newest-first, then the B+Tree, all at one visible LSN.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{EngineError, Inner};
use crate::btree::{RangeIter, ReadTxn};
use crate::memtable::{MemValue, Memtable};

/// A read view at one LSN. Owned and `Send`, so a server can page through it.
pub struct Snapshot {
    lsn: u64,
    /// Newest first.
    mems: Vec<Arc<Memtable>>,
    tree: ReadTxn,
}

impl Inner {
    pub(crate) fn snapshot(&self) -> Result<Snapshot, EngineError> {
        loop {
            let lsn = self.visible.load(Ordering::Acquire);
            let snap = self.snapshot_at(lsn)?;
            // A flush that finished after we read `lsn` may put newer data in the tree: take a fresh LSN.
            if snap.tree.checkpoint_lsn() <= lsn {
                return Ok(snap);
            }
        }
    }

    /// A point read without building a snapshot: same ordering rules, no allocation but the value.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        loop {
            let lsn = self.visible.load(Ordering::Acquire);
            {
                let m = self.mems.read();
                for mem in std::iter::once(&m.active).chain(m.sealed.iter().rev()) {
                    if let Some(v) = mem.get(key, lsn) {
                        return Ok(v);
                    }
                }
            }
            // Memtables before the tree (data only moves memtable → tree), as in `snapshot`.
            let tree = self.tree.begin_read()?;
            if tree.checkpoint_lsn() <= lsn {
                return Ok(tree.get(key)?);
            }
        }
    }

    /// A view at `lsn`; the commit leader uses it to see its own not-yet-visible writes.
    pub(crate) fn snapshot_at(&self, lsn: u64) -> Result<Snapshot, EngineError> {
        // Memtables before the tree: a concurrent flush then shows data twice, never zero times.
        let mems = {
            let m = self.mems.read();
            let mut v = Vec::with_capacity(1 + m.sealed.len());
            v.push(m.active.clone());
            v.extend(m.sealed.iter().rev().cloned());
            v
        };
        let tree = self.tree.begin_read()?;
        Ok(Snapshot { lsn, mems, tree })
    }
}

impl Snapshot {
    /// The LSN this view reflects.
    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        for m in &self.mems {
            if let Some(v) = m.get(key, self.lsn) {
                return Ok(v);
            }
        }
        Ok(self.tree.get(key)?)
    }

    /// Visits live keys between `lower` and `upper` in order (descending with `reverse`), handing
    /// `f` borrowed key and value until it returns false. When no memtable holds data (the usual
    /// state after a flush) the slices point into the B+Tree's mapping: nothing is copied.
    pub fn scan(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), EngineError> {
        if self.mems.iter().all(|m| m.is_empty()) {
            return Ok(self.tree.scan(lower, upper, reverse, f)?);
        }
        let owned = |b: Bound<&[u8]>| b.map(<[u8]>::to_vec);
        for item in self.range(owned(lower), owned(upper), reverse) {
            let (k, v) = item?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    /// Live keys in `[lower, upper]` (per the bounds), ascending or descending.
    pub fn range(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> SnapshotIter {
        let tree = self
            .tree
            .range(as_ref(&lower), as_ref(&upper), reverse)
            .map_err(EngineError::from);
        let (from, end) = if reverse {
            (upper, lower)
        } else {
            (lower, upper)
        };
        // An empty memtable holds nothing at or below this view's LSN and never will: skip it.
        let mems = self
            .mems
            .iter()
            .filter(|m| !m.is_empty())
            .map(|m| MemCursor {
                mem: m.clone(),
                from: from.clone(),
                end: end.clone(),
                buf: VecDeque::new(),
                exhausted: false,
            })
            .collect();
        let (tree, err) = match tree {
            Ok(it) => (Some(it), None),
            Err(e) => (None, Some(e)),
        };
        SnapshotIter {
            lsn: self.lsn,
            reverse,
            mems,
            tree,
            tree_peek: None,
            err,
        }
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

const CHUNK: usize = 128;

/// Pages through one memtable by re-seeking after the last key it returned.
struct MemCursor {
    mem: Arc<Memtable>,
    from: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    buf: VecDeque<(Vec<u8>, MemValue)>,
    exhausted: bool,
}

impl MemCursor {
    fn peek(&mut self, lsn: u64, reverse: bool) -> Option<&(Vec<u8>, MemValue)> {
        if self.buf.is_empty() && !self.exhausted {
            let chunk =
                self.mem
                    .scan_chunk(as_ref(&self.from), as_ref(&self.end), reverse, lsn, CHUNK);
            if chunk.len() < CHUNK {
                self.exhausted = true;
            }
            if let Some((k, _)) = chunk.last() {
                self.from = Bound::Excluded(k.clone());
            }
            self.buf.extend(chunk);
        }
        self.buf.front()
    }
}

/// Merges memtables and the tree; the newest source wins a key, tombstones hide it.
pub struct SnapshotIter {
    lsn: u64,
    reverse: bool,
    mems: Vec<MemCursor>,
    tree: Option<RangeIter>,
    tree_peek: Option<(Vec<u8>, Vec<u8>)>,
    err: Option<EngineError>,
}

impl SnapshotIter {
    fn better(&self, a: &[u8], b: &[u8]) -> bool {
        if self.reverse {
            a > b
        } else {
            a < b
        }
    }
}

impl Iterator for SnapshotIter {
    type Item = Result<(Vec<u8>, Vec<u8>), EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.err.take() {
                self.tree = None;
                self.mems.clear();
                return Some(Err(e));
            }
            if self.tree_peek.is_none() {
                if let Some(it) = self.tree.as_mut() {
                    match it.next() {
                        Some(Ok(kv)) => self.tree_peek = Some(kv),
                        Some(Err(e)) => {
                            self.err = Some(e.into());
                            continue;
                        }
                        None => self.tree = None,
                    }
                }
            }
            // Find the best key among memtables (newest first wins ties) and the tree.
            let (lsn, reverse) = (self.lsn, self.reverse);
            let mut best: Option<(usize, Vec<u8>)> = None;
            for i in 0..self.mems.len() {
                let Some((k, _)) = self.mems[i].peek(lsn, reverse) else {
                    continue;
                };
                let k = k.clone();
                let replace = match &best {
                    None => true,
                    Some((_, b)) => self.better(&k, b),
                };
                if replace {
                    best = Some((i, k));
                }
            }
            let tree_wins = match (&self.tree_peek, &best) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some((tk, _)), Some((_, bk))) => self.better(tk, bk),
            };
            if tree_wins {
                return self.tree_peek.take().map(Ok);
            }
            let (idx, key) = best?;
            // Consume this key from every source that has it; the first (newest) source decides.
            let mut value: Option<MemValue> = None;
            for (i, m) in self.mems.iter_mut().enumerate().skip(idx) {
                if m.peek(lsn, reverse).is_some_and(|(k, _)| *k == key) {
                    if let Some((_, v)) = m.buf.pop_front() {
                        if i == idx {
                            value = Some(v);
                        }
                    }
                }
            }
            if self.tree_peek.as_ref().is_some_and(|(k, _)| *k == key) {
                self.tree_peek = None;
            }
            if let Some(Some(v)) = value {
                return Some(Ok((key, v)));
            }
        }
    }
}
