//! Ordered range iteration over a snapshot, forward or reverse.
//!
//! The iterator keeps a stack of (branch page, child index) plus a position in the current
//! leaf; pages are re-read from the shared mapping, so nothing is copied except the results.

use std::ops::Bound;
use std::sync::Arc;

use super::page::{corrupt, PageView, MAX_DEPTH};
use super::{resolve, BTreeError, ReaderReg, Snapshot};

/// Ordered iterator over a snapshot; owns its snapshot ('static, Send).
pub struct RangeIter {
    snap: Snapshot,
    _reg: Arc<ReaderReg>,
    /// Branches from the root down: (page, child index being visited).
    stack: Vec<(u64, usize)>,
    leaf: u64,
    /// Forward: next index to yield. Reverse: one past the next index to yield.
    pos: usize,
    /// The bound still to check: `end` going forward, `start` going backward.
    limit: Bound<Vec<u8>>,
    reverse: bool,
    done: bool,
}

fn owned(b: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RangeIter {
    pub(crate) fn new(
        snap: Snapshot,
        reg: Arc<ReaderReg>,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
    ) -> Result<Self, BTreeError> {
        let limit = owned(if reverse { start } else { end });
        let mut it = RangeIter {
            snap,
            _reg: reg,
            stack: Vec::new(),
            leaf: 0,
            pos: 0,
            limit,
            reverse,
            done: false,
        };
        if it.snap.meta.root == 0 || empty_range(start, end) {
            it.done = true;
            return Ok(it);
        }
        if reverse {
            it.seek_rev(end)?;
        } else {
            it.seek(start)?;
        }
        Ok(it)
    }

    fn view(&self, pg: u64) -> Result<PageView<'_>, BTreeError> {
        view(&self.snap, pg)
    }

    fn push(&mut self, pg: u64, ci: usize) -> Result<(), BTreeError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(corrupt("tree deeper than any valid tree (cycle?)"));
        }
        self.stack.push((pg, ci));
        Ok(())
    }

    /// Positions on the first entry >= / > `start`.
    fn seek(&mut self, start: Bound<&[u8]>) -> Result<(), BTreeError> {
        let mut pg = self.snap.meta.root;
        loop {
            let v = self.view(pg)?;
            if v.is_leaf() {
                self.pos = match start {
                    Bound::Unbounded => 0,
                    Bound::Included(k) => v.search(k)?.unwrap_or_else(|i| i),
                    Bound::Excluded(k) => v.search(k)?.map_or_else(|i| i, |i| i + 1),
                };
                self.leaf = pg;
                return Ok(());
            }
            let ci = match start {
                Bound::Unbounded => 0,
                Bound::Included(k) | Bound::Excluded(k) => v.child_index(k)?,
            };
            let child = v.child(ci)?;
            self.push(pg, ci)?;
            pg = child;
        }
    }

    /// Positions just after the last entry <= / < `end`.
    fn seek_rev(&mut self, end: Bound<&[u8]>) -> Result<(), BTreeError> {
        let mut pg = self.snap.meta.root;
        loop {
            let v = self.view(pg)?;
            if v.is_leaf() {
                self.pos = match end {
                    Bound::Unbounded => v.nkeys(),
                    Bound::Included(k) => v.search(k)?.map_or_else(|i| i, |i| i + 1),
                    Bound::Excluded(k) => v.search(k)?.unwrap_or_else(|i| i),
                };
                self.leaf = pg;
                return Ok(());
            }
            let ci = match end {
                Bound::Unbounded => v.nkeys(),
                Bound::Included(k) => v.child_index(k)?,
                Bound::Excluded(k) => v.search(k)?.unwrap_or_else(|i| i),
            };
            let child = v.child(ci)?;
            self.push(pg, ci)?;
            pg = child;
        }
    }

    /// Moves to the next (or previous) leaf; false at the end of the tree.
    fn step_leaf(&mut self) -> Result<bool, BTreeError> {
        loop {
            let Some((pg, ci)) = self.stack.pop() else {
                return Ok(false);
            };
            let v = self.view(pg)?;
            let next = if self.reverse {
                ci.checked_sub(1)
            } else if ci < v.nkeys() {
                Some(ci + 1)
            } else {
                None
            };
            let Some(ci) = next else { continue };
            let mut child = v.child(ci)?;
            self.push(pg, ci)?;
            loop {
                let v = view(&self.snap, child)?;
                if v.is_leaf() {
                    self.leaf = child;
                    self.pos = if self.reverse { v.nkeys() } else { 0 };
                    return Ok(true);
                }
                let ci = if self.reverse { v.nkeys() } else { 0 };
                let c = v.child(ci)?;
                self.push(child, ci)?;
                child = c;
            }
        }
    }

    fn within(&self, key: &[u8]) -> bool {
        match (&self.limit, self.reverse) {
            (Bound::Unbounded, _) => true,
            (Bound::Included(l), false) => key <= l.as_slice(),
            (Bound::Excluded(l), false) => key < l.as_slice(),
            (Bound::Included(l), true) => key >= l.as_slice(),
            (Bound::Excluded(l), true) => key > l.as_slice(),
        }
    }

    /// Advances and hands the next entry to `f` in place, without copying.
    pub fn next_with<R>(
        &mut self,
        f: impl FnOnce(&[u8], &[u8]) -> R,
    ) -> Option<Result<R, BTreeError>> {
        if self.done {
            return None;
        }
        match self.advance(f) {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    fn advance<R>(&mut self, f: impl FnOnce(&[u8], &[u8]) -> R) -> Result<Option<R>, BTreeError> {
        loop {
            let v = self.view(self.leaf)?;
            let have = if self.reverse {
                self.pos > 0
            } else {
                self.pos < v.nkeys()
            };
            if !have {
                if !self.step_leaf()? {
                    return Ok(None);
                }
                continue;
            }
            let i = if self.reverse { self.pos - 1 } else { self.pos };
            let (k, val) = v.leaf_entry(i)?;
            if !self.within(k) {
                return Ok(None);
            }
            let val = resolve(&self.snap.map, val, self.snap.ps())?;
            let r = f(k, val);
            if self.reverse {
                self.pos -= 1;
            } else {
                self.pos += 1;
            }
            return Ok(Some(r));
        }
    }
}

fn view(snap: &Snapshot, pg: u64) -> Result<PageView<'_>, BTreeError> {
    if pg < 2 || pg >= snap.meta.page_count {
        return Err(corrupt(format!("child pointer to page {pg} out of range")));
    }
    PageView::new(snap.map.page(pg, snap.ps())?, pg)
}

/// True if no key can satisfy both bounds (also avoids walking inverted ranges).
fn empty_range(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e))
        | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
        _ => false,
    }
}

impl Iterator for RangeIter {
    type Item = Result<(Vec<u8>, Vec<u8>), BTreeError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_with(|k, v| (k.to_vec(), v.to_vec()))
    }
}
