//! Ordered range iteration over a snapshot, forward or reverse.
//!
//! `Walk` keeps a stack of (branch page, child index) plus a position in the current leaf; pages
//! are read from the shared mapping, so nothing is copied. `RangeIter` owns its snapshot and
//! copies results out; `scan` borrows one and hands out slices of the mapping.

use std::ops::Bound;
use std::sync::Arc;

use super::page::{corrupt, PageView, MAX_DEPTH};
use super::{resolve, BTreeError, ReaderReg, Snapshot};

/// Position of a cursor: the branches above the current leaf and an index in it.
struct Walk {
    /// Branches from the root down: (page, child index being visited).
    stack: Vec<(u64, usize)>,
    leaf: u64,
    /// Forward: next index to yield. Reverse: one past the next index to yield.
    pos: usize,
    reverse: bool,
}

impl Walk {
    fn new(
        snap: &Snapshot,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
    ) -> Result<Option<Self>, BTreeError> {
        if snap.meta.root == 0 || empty_range(start, end) {
            return Ok(None);
        }
        let mut w = Walk {
            stack: Vec::with_capacity(snap.meta.depth as usize),
            leaf: 0,
            pos: 0,
            reverse,
        };
        if reverse {
            w.seek_rev(snap, end)?;
        } else {
            w.seek(snap, start)?;
        }
        Ok(Some(w))
    }

    fn push(&mut self, pg: u64, ci: usize) -> Result<(), BTreeError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(corrupt("tree deeper than any valid tree (cycle?)"));
        }
        self.stack.push((pg, ci));
        Ok(())
    }

    /// Positions on the first entry >= / > `start`.
    fn seek(&mut self, snap: &Snapshot, start: Bound<&[u8]>) -> Result<(), BTreeError> {
        let mut pg = snap.meta.root;
        loop {
            let v = view(snap, pg)?;
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
    fn seek_rev(&mut self, snap: &Snapshot, end: Bound<&[u8]>) -> Result<(), BTreeError> {
        let mut pg = snap.meta.root;
        loop {
            let v = view(snap, pg)?;
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
    fn step_leaf(&mut self, snap: &Snapshot) -> Result<bool, BTreeError> {
        loop {
            let Some((pg, ci)) = self.stack.pop() else {
                return Ok(false);
            };
            let v = view(snap, pg)?;
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
                let v = view(snap, child)?;
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

    /// Hands entries to `f` until it returns false, the bound is passed or the tree ends.
    /// The current leaf's validated view is kept across its entries.
    fn run<'s>(
        &mut self,
        snap: &'s Snapshot,
        limit: Bound<&[u8]>,
        mut f: impl FnMut(&'s [u8], &'s [u8]) -> bool,
    ) -> Result<bool, BTreeError> {
        loop {
            let v = view(snap, self.leaf)?;
            loop {
                let have = if self.reverse {
                    self.pos > 0
                } else {
                    self.pos < v.nkeys()
                };
                if !have {
                    break;
                }
                let i = if self.reverse { self.pos - 1 } else { self.pos };
                let (k, val) = v.leaf_entry(i)?;
                if !within(limit, self.reverse, k) {
                    return Ok(false);
                }
                let val = resolve(&snap.map, val, snap.ps())?;
                if self.reverse {
                    self.pos -= 1;
                } else {
                    self.pos += 1;
                }
                if !f(k, val) {
                    return Ok(true);
                }
            }
            if !self.step_leaf(snap)? {
                return Ok(false);
            }
        }
    }
}

fn within(limit: Bound<&[u8]>, reverse: bool, key: &[u8]) -> bool {
    match (limit, reverse) {
        (Bound::Unbounded, _) => true,
        (Bound::Included(l), false) => key <= l,
        (Bound::Excluded(l), false) => key < l,
        (Bound::Included(l), true) => key >= l,
        (Bound::Excluded(l), true) => key > l,
    }
}

/// Visits the entries of `snap` between `start` and `end` in order (descending with `reverse`),
/// handing `f` slices of the mapping until it returns false: no copy, no allocation per entry.
pub(crate) fn scan<'s>(
    snap: &'s Snapshot,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    reverse: bool,
    f: impl FnMut(&'s [u8], &'s [u8]) -> bool,
) -> Result<(), BTreeError> {
    let Some(mut w) = Walk::new(snap, start, end, reverse)? else {
        return Ok(());
    };
    w.run(snap, if reverse { start } else { end }, f)?;
    Ok(())
}

/// Ordered iterator over a snapshot; owns its snapshot ('static, Send).
pub struct RangeIter {
    snap: Snapshot,
    _reg: Arc<ReaderReg>,
    walk: Option<Walk>,
    /// The bound still to check: `end` going forward, `start` going backward.
    limit: Bound<Vec<u8>>,
}

fn owned(b: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
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
        let walk = Walk::new(&snap, start, end, reverse)?;
        Ok(RangeIter {
            snap,
            _reg: reg,
            walk,
            limit: owned(if reverse { start } else { end }),
        })
    }

    /// Advances and hands the next entry to `f` in place, without copying.
    pub fn next_with<R>(
        &mut self,
        f: impl FnOnce(&[u8], &[u8]) -> R,
    ) -> Option<Result<R, BTreeError>> {
        let w = self.walk.as_mut()?;
        let mut f = Some(f);
        let mut out = None;
        let res = w.run(&self.snap, as_ref(&self.limit), |k, v| {
            out = f.take().map(|f| f(k, v));
            false
        });
        match res {
            Ok(true) => out.map(Ok),
            Ok(false) => {
                self.walk = None;
                None
            }
            Err(e) => {
                self.walk = None;
                Some(Err(e))
            }
        }
    }
}

#[inline]
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
