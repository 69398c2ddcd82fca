//! Writing a key-ordered stream into a write txn. Into an empty tree the stream is built bottom-up
//! (leaves filled to `FILL_PERCENT`, then each branch level) instead of inserted key by key.
//!
//! If the stream breaks order, or the tree was not empty, the writer finishes what it built (a
//! valid tree) and continues with ordinary puts and deletes, so any input stays correct.

use super::WriteTxn;
use crate::btree::node::{Cell, Dirty};

use crate::btree::page::{corrupt, rd_u16, rd_u64, BRANCH_CELL_FIXED};
use crate::btree::BTreeError;

use crate::btree::node::FILL_PERCENT;

/// The node being filled at one level, with the smallest key of its subtree.
struct Open {
    id: u64,
    node: Dirty,
    min_key: Vec<u8>,
}

/// Bottom-up build state: `levels[0]` is the leaf being filled, `levels[h]` the branch at height h.
struct Build {
    levels: Vec<Open>,
    /// The last node closed at each level (0: none yet).
    prev: Vec<u64>,
    last: Vec<u8>,
    limit: usize,
    n: u64,
}

/// Writes entries in ascending key order into a [`WriteTxn`] (see the module doc).
///
/// Dropping it finishes the build too; call [`SortedWriter::finish`] to see errors.
pub struct SortedWriter<'t, 'a> {
    txn: &'t mut WriteTxn<'a>,
    build: Option<Build>,
}

impl<'a> WriteTxn<'a> {
    /// A writer for a key-ordered stream: bottom-up into an empty tree, else put by put.
    pub fn sorted_writer(&mut self) -> SortedWriter<'_, 'a> {
        let build = (self.root == 0).then(|| Build {
            levels: Vec::new(),
            prev: Vec::new(),
            last: Vec::new(),
            limit: self.ps * FILL_PERCENT / 100,
            n: 0,
        });
        SortedWriter { txn: self, build }
    }
}

impl SortedWriter<'_, '_> {
    /// Inserts or overwrites `key`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BTreeError> {
        if let Some(b) = self.build.as_mut() {
            if b.n == 0 || key > b.last.as_slice() {
                return b.push(self.txn, key, value);
            }
            self.end_build()?;
        }
        self.txn.put(key, value)
    }

    /// Removes `key`; a key past everything built so far cannot be in the tree.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, BTreeError> {
        if let Some(b) = &self.build {
            if b.n == 0 || key > b.last.as_slice() {
                return Ok(false);
            }
            self.end_build()?;
        }
        self.txn.delete(key)
    }

    /// True while the tree is still being built bottom-up.
    pub fn is_bulk(&self) -> bool {
        self.build.is_some()
    }

    /// Completes the tree; the txn then holds every entry written.
    pub fn finish(mut self) -> Result<(), BTreeError> {
        self.end_build()
    }

    fn end_build(&mut self) -> Result<(), BTreeError> {
        match self.build.take() {
            Some(b) => b.finish(self.txn),
            None => Ok(()),
        }
    }
}

impl Drop for SortedWriter<'_, '_> {
    fn drop(&mut self) {
        if let Err(e) = self.end_build() {
            tracing::error!(error = %e, "finishing a bulk-built B+Tree failed");
        }
    }
}

impl Build {
    fn push(&mut self, txn: &mut WriteTxn<'_>, key: &[u8], value: &[u8]) -> Result<(), BTreeError> {
        let val = txn.stage_value(key, value)?;
        let cell = Cell::Leaf { key, val };
        if self.levels.is_empty() {
            let id = txn.alloc(1);
            self.levels.push(Open {
                id,
                node: Dirty::new_leaf(id, txn.ps),
                min_key: key.to_vec(),
            });
            self.prev.push(0);
        }
        if !self.levels[0].node.append_within(&cell, self.limit) {
            let id = txn.alloc(1);
            let fresh = Open {
                id,
                node: Dirty::new_leaf(id, txn.ps),
                min_key: key.to_vec(),
            };
            let old = std::mem::replace(&mut self.levels[0], fresh);
            self.close(txn, 0, old)?;
            if !self.levels[0].node.append_within(&cell, txn.ps) {
                return Err(corrupt("internal: leaf entry larger than a page"));
            }
        }
        self.last.clear();
        self.last.extend_from_slice(key);
        self.n += 1;
        Ok(())
    }

    /// Stores a finished node and hands it to the level above.
    fn close(&mut self, txn: &mut WriteTxn<'_>, level: usize, o: Open) -> Result<(), BTreeError> {
        self.prev[level] = o.id;
        txn.dirty.insert(o.id, o.node);
        self.add_child(txn, level + 1, o.min_key, o.id)
    }

    /// Appends `child` (whose subtree starts at `min_key`) to the branch being filled at `level`.
    fn add_child(
        &mut self,
        txn: &mut WriteTxn<'_>,
        level: usize,
        min_key: Vec<u8>,
        child: u64,
    ) -> Result<(), BTreeError> {
        if self.levels.len() == level {
            let id = txn.alloc(1);
            self.levels.push(Open {
                id,
                node: Dirty::new_branch(id, txn.ps, child),
                min_key,
            });
            self.prev.push(0);
            return Ok(());
        }
        let cell = Cell::Branch {
            key: &min_key,
            child,
        };
        if self.levels[level].node.append_within(&cell, self.limit) {
            return Ok(());
        }
        let id = txn.alloc(1);
        let fresh = Open {
            id,
            node: Dirty::new_branch(id, txn.ps, child),
            min_key,
        };
        let old = std::mem::replace(&mut self.levels[level], fresh);
        self.close(txn, level, old)
    }

    /// Closes the open node of every level, bottom-up, and makes the top one the root.
    fn finish(mut self, txn: &mut WriteTxn<'_>) -> Result<(), BTreeError> {
        let mut level = 0;
        while level < self.levels.len() {
            let top = level + 1 == self.levels.len();
            if level > 0 && self.levels[level].node.nkeys() == 0 {
                if top {
                    return Err(corrupt("internal: bulk-built root with a single child"));
                }
                self.take_from_prev(txn, level)?;
            }
            let o = &mut self.levels[level];
            let (id, node, min_key) = (o.id, o.node.take(), std::mem::take(&mut o.min_key));
            if top {
                txn.dirty.insert(id, node);
                txn.root = id;
                txn.depth = self.levels.len() as u32;
            } else {
                self.close(txn, level, Open { id, node, min_key })?;
            }
            level += 1;
        }
        txn.entries += self.n;
        tracing::debug!(
            entries = self.n,
            depth = txn.depth,
            "B+Tree built bottom-up"
        );
        Ok(())
    }

    /// A branch left with only its leftmost child takes the last child of its left sibling, so
    /// every branch has at least one separator.
    fn take_from_prev(&mut self, txn: &mut WriteTxn<'_>, level: usize) -> Result<(), BTreeError> {
        let prev = self.prev[level];
        let raw = txn
            .dirty
            .get_mut(&prev)
            .and_then(Dirty::pop_last)
            .ok_or_else(|| corrupt("internal: bulk build lost a branch sibling"))?;
        let klen = rd_u16(&raw, 0).unwrap_or(0) as usize;
        let moved = rd_u64(&raw, 2).unwrap_or(0);
        let key = raw
            .get(BRANCH_CELL_FIXED..BRANCH_CELL_FIXED + klen)
            .ok_or_else(|| corrupt("internal: bad branch cell"))?
            .to_vec();
        let o = &mut self.levels[level];
        let only = o.node.view().child(0)?;
        let mut node = Dirty::new_branch(o.id, txn.ps, moved);
        let cell = Cell::Branch {
            key: &o.min_key,
            child: only,
        };
        if !node.append_within(&cell, txn.ps) {
            return Err(corrupt("internal: branch cell larger than a page"));
        }
        o.node = node;
        o.min_key = key;
        Ok(())
    }
}
