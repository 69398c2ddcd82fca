//! Decoded in-memory nodes for dirty pages of a write txn; serialized once at commit.

use super::page::{
    self, PageView, ValRef, BRANCH_CELL_FIXED, BRANCH_HDR, FLAG_OVERFLOW, HDR, LEAF_CELL_FIXED,
    T_BRANCH, T_LEAF,
};
use super::BTreeError;

/// A value held by a dirty leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Val {
    Inline(Vec<u8>),
    Overflow { pgno: u64, len: u64 },
}

impl Val {
    /// Encoded bytes of the value part of a leaf cell.
    pub(crate) fn cell_len(&self) -> usize {
        match self {
            Val::Inline(v) => v.len(),
            Val::Overflow { .. } => 8,
        }
    }
}

/// Bytes a leaf entry costs in a page (slot + cell).
#[inline]
pub(crate) fn leaf_entry_size(klen: usize, vcell: usize) -> usize {
    2 + LEAF_CELL_FIXED + klen + vcell
}

/// Bytes a branch separator costs in a page (slot + cell).
#[inline]
pub(crate) fn branch_entry_size(klen: usize) -> usize {
    2 + BRANCH_CELL_FIXED + klen
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Leaf {
    pub keys: Vec<Vec<u8>>,
    pub vals: Vec<Val>,
    /// Encoded page size (header + slots + cells).
    pub size: usize,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Branch {
    /// `keys[i]` separates `children[i]` (keys < sep) from `children[i + 1]` (keys >= sep).
    pub keys: Vec<Vec<u8>>,
    pub children: Vec<u64>,
    pub size: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Leaf(Leaf),
    Branch(Branch),
}

impl Leaf {
    pub(crate) fn new() -> Self {
        Leaf {
            keys: Vec::new(),
            vals: Vec::new(),
            size: HDR,
        }
    }

    pub(crate) fn insert(&mut self, i: usize, key: Vec<u8>, val: Val) {
        self.size += leaf_entry_size(key.len(), val.cell_len());
        self.keys.insert(i, key);
        self.vals.insert(i, val);
    }

    pub(crate) fn replace(&mut self, i: usize, val: Val) -> Val {
        self.size = self.size + val.cell_len() - self.vals[i].cell_len();
        std::mem::replace(&mut self.vals[i], val)
    }

    pub(crate) fn remove(&mut self, i: usize) -> Val {
        let k = self.keys.remove(i);
        let v = self.vals.remove(i);
        self.size -= leaf_entry_size(k.len(), v.cell_len());
        v
    }

    /// Splits an oversized leaf; `appending` puts only the last entry on the right so
    /// sequential loads leave full pages behind. Returns (separator, right half).
    pub(crate) fn split(&mut self, appending: bool) -> (Vec<u8>, Leaf) {
        let n = self.keys.len();
        let at = if appending && n >= 2 {
            n - 1
        } else {
            let half = (self.size - HDR) / 2;
            let mut acc = 0;
            let mut at = n - 1;
            for i in 0..n {
                acc += leaf_entry_size(self.keys[i].len(), self.vals[i].cell_len());
                if acc >= half {
                    at = (i + 1).max(1).min(n.saturating_sub(1));
                    break;
                }
            }
            at
        };
        let keys = self.keys.split_off(at);
        let vals = self.vals.split_off(at);
        let moved: usize = keys
            .iter()
            .zip(&vals)
            .map(|(k, v)| leaf_entry_size(k.len(), v.cell_len()))
            .sum();
        self.size -= moved;
        let sep = keys[0].clone();
        (
            sep,
            Leaf {
                keys,
                vals,
                size: HDR + moved,
            },
        )
    }

    pub(crate) fn encode(&self, pgno: u64, out: &mut [u8]) {
        let ps = out.len();
        page::write_header(out, T_LEAF, self.keys.len() as u16, pgno);
        let mut end = ps;
        for (i, (k, v)) in self.keys.iter().zip(&self.vals).enumerate() {
            let clen = LEAF_CELL_FIXED + k.len() + v.cell_len();
            end -= clen;
            page::wr_u16(out, HDR + 2 * i, end as u16);
            page::wr_u16(out, end, k.len() as u16);
            let kstart = end + LEAF_CELL_FIXED;
            out[kstart..kstart + k.len()].copy_from_slice(k);
            let vstart = kstart + k.len();
            match v {
                Val::Inline(b) => {
                    out[end + 2] = 0;
                    page::wr_u32(out, end + 3, b.len() as u32);
                    out[vstart..vstart + b.len()].copy_from_slice(b);
                }
                Val::Overflow { pgno, len } => {
                    out[end + 2] = FLAG_OVERFLOW;
                    page::wr_u32(out, end + 3, *len as u32);
                    page::wr_u64(out, vstart, *pgno);
                }
            }
        }
        let slots_end = HDR + 2 * self.keys.len();
        out[slots_end..end].fill(0);
        page::seal(out);
    }
}

impl Branch {
    pub(crate) fn new(keys: Vec<Vec<u8>>, children: Vec<u64>) -> Self {
        let size = BRANCH_HDR
            + keys
                .iter()
                .map(|k| branch_entry_size(k.len()))
                .sum::<usize>();
        Branch {
            keys,
            children,
            size,
        }
    }

    /// Index of the child whose subtree may contain `key`.
    #[inline]
    pub(crate) fn child_index(&self, key: &[u8]) -> usize {
        match self.keys.binary_search_by(|k| k.as_slice().cmp(key)) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// Adds separator `sep` with `right` as the child just after child `ci`.
    pub(crate) fn insert_split(&mut self, ci: usize, sep: Vec<u8>, right: u64) {
        self.size += branch_entry_size(sep.len());
        self.keys.insert(ci, sep);
        self.children.insert(ci + 1, right);
    }

    /// Drops child `ci` (its subtree became empty) together with one adjacent separator.
    pub(crate) fn remove_child(&mut self, ci: usize) {
        self.children.remove(ci);
        if self.keys.is_empty() {
            return;
        }
        let k = self.keys.remove(ci.saturating_sub(1));
        self.size -= branch_entry_size(k.len());
    }

    /// Splits an oversized branch, promoting one separator. Returns (separator, right half).
    pub(crate) fn split(&mut self, appending: bool) -> (Vec<u8>, Branch) {
        let n = self.keys.len();
        let at = if appending && n >= 3 {
            n - 2
        } else {
            let half = (self.size - BRANCH_HDR) / 2;
            let mut acc = 0;
            let mut at = n / 2;
            for (i, k) in self.keys.iter().enumerate() {
                acc += branch_entry_size(k.len());
                if acc >= half {
                    at = i.max(1).min(n.saturating_sub(2));
                    break;
                }
            }
            at
        };
        let mut rkeys = self.keys.split_off(at);
        let rchildren = self.children.split_off(at + 1);
        let sep = rkeys.remove(0);
        self.size = BRANCH_HDR
            + self
                .keys
                .iter()
                .map(|k| branch_entry_size(k.len()))
                .sum::<usize>();
        (sep, Branch::new(rkeys, rchildren))
    }

    pub(crate) fn encode(&self, pgno: u64, out: &mut [u8]) {
        let ps = out.len();
        page::write_header(out, T_BRANCH, self.keys.len() as u16, pgno);
        page::wr_u64(out, HDR, self.children[0]);
        let mut end = ps;
        for (i, k) in self.keys.iter().enumerate() {
            end -= BRANCH_CELL_FIXED + k.len();
            page::wr_u16(out, BRANCH_HDR + 2 * i, end as u16);
            page::wr_u16(out, end, k.len() as u16);
            page::wr_u64(out, end + 2, self.children[i + 1]);
            out[end + BRANCH_CELL_FIXED..end + BRANCH_CELL_FIXED + k.len()].copy_from_slice(k);
        }
        let slots_end = BRANCH_HDR + 2 * self.keys.len();
        out[slots_end..end].fill(0);
        page::seal(out);
    }
}

impl Node {
    /// Decodes a committed page into an editable node.
    pub(crate) fn decode(view: &PageView<'_>) -> Result<Node, BTreeError> {
        let n = view.nkeys();
        if view.is_leaf() {
            let mut leaf = Leaf {
                keys: Vec::with_capacity(n + 1),
                vals: Vec::with_capacity(n + 1),
                size: HDR,
            };
            for i in 0..n {
                let (k, v) = view.leaf_entry(i)?;
                let v = match v {
                    ValRef::Inline(b) => Val::Inline(b.to_vec()),
                    ValRef::Overflow { pgno, len } => Val::Overflow { pgno, len },
                };
                leaf.size += leaf_entry_size(k.len(), v.cell_len());
                leaf.keys.push(k.to_vec());
                leaf.vals.push(v);
            }
            Ok(Node::Leaf(leaf))
        } else {
            let mut keys = Vec::with_capacity(n + 1);
            let mut children = Vec::with_capacity(n + 2);
            children.push(view.child(0)?);
            for i in 0..n {
                keys.push(view.key(i)?.to_vec());
                children.push(view.child(i + 1)?);
            }
            Ok(Node::Branch(Branch::new(keys, children)))
        }
    }

    pub(crate) fn encode(&self, pgno: u64, out: &mut [u8]) {
        match self {
            Node::Leaf(l) => l.encode(pgno, out),
            Node::Branch(b) => b.encode(pgno, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_with(n: usize) -> Leaf {
        let mut l = Leaf::new();
        for i in 0..n {
            let k = format!("key{i:04}").into_bytes();
            l.insert(i, k, Val::Inline(vec![i as u8; 20]));
        }
        l
    }

    #[test]
    fn leaf_encode_decode_roundtrip() {
        let mut l = leaf_with(10);
        l.replace(
            3,
            Val::Overflow {
                pgno: 99,
                len: 5000,
            },
        );
        let mut page = vec![0u8; 1024];
        l.encode(5, &mut page);
        assert!(page::crc_ok(&page));
        assert!(l.size <= 1024);
        let view = PageView::new(&page, 5).unwrap();
        let Node::Leaf(d) = Node::decode(&view).unwrap() else {
            panic!("expected leaf")
        };
        assert_eq!(d.keys, l.keys);
        assert_eq!(d.vals, l.vals);
        assert_eq!(d.size, l.size);
        assert_eq!(view.search(b"key0005").unwrap(), Ok(5));
        assert_eq!(view.search(b"key00055").unwrap(), Err(6));
    }

    #[test]
    fn branch_encode_decode_and_child_index() {
        let b = Branch::new(vec![b"b".to_vec(), b"d".to_vec()], vec![10, 11, 12]);
        let mut page = vec![0u8; 512];
        b.encode(4, &mut page);
        let view = PageView::new(&page, 4).unwrap();
        for (k, want) in [(&b"a"[..], 0), (b"b", 1), (b"c", 1), (b"d", 2), (b"z", 2)] {
            assert_eq!(view.child_index(k).unwrap(), want);
            assert_eq!(b.child_index(k), want);
            assert_eq!(view.child(want).unwrap(), b.children[want]);
        }
        let Node::Branch(d) = Node::decode(&view).unwrap() else {
            panic!("expected branch")
        };
        assert_eq!(d.keys, b.keys);
        assert_eq!(d.children, b.children);
    }

    #[test]
    fn leaf_split_sizes_add_up() {
        let mut l = leaf_with(40);
        let total = l.size;
        let (sep, r) = l.split(false);
        assert_eq!(sep, r.keys[0]);
        assert_eq!(l.size + r.size - HDR, total);
        assert!(l.keys.len() >= 19 && r.keys.len() >= 19);
        let mut l = leaf_with(40);
        let (_, r) = l.split(true);
        assert_eq!(r.keys.len(), 1);
        assert_eq!(l.keys.len(), 39);
    }

    #[test]
    fn branch_split_keeps_children_consistent() {
        let keys: Vec<Vec<u8>> = (0..9u8).map(|i| vec![b'a' + i]).collect();
        let mut b = Branch::new(keys, (0..10).collect());
        let (sep, r) = b.split(false);
        assert_eq!(b.children.len(), b.keys.len() + 1);
        assert_eq!(r.children.len(), r.keys.len() + 1);
        assert_eq!(b.keys.len() + r.keys.len() + 1, 9);
        assert!(b.keys.last().unwrap() < &sep && sep < r.keys[0]);
    }
}
