//! Ordered in-memory map of recent writes, multi-versioned by LSN so a batch becomes visible atomically.
//!
//! Writers insert at their LSN before it is durable; readers pass the namespace's visible LSN and never see
//! later versions. Tombstones are kept (a delete must hide older data in the B+Tree until flushed).

use std::cmp::Ordering as CmpOrdering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_skiplist::map::Entry;
use crossbeam_skiplist::SkipMap;

use crate::storage::batch::OpRef;

/// Key then LSN descending: the newest version of a key comes first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VersionedKey {
    key: Vec<u8>,
    lsn: u64,
}

impl Ord for VersionedKey {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.key
            .cmp(&other.key)
            .then_with(|| other.lsn.cmp(&self.lsn))
    }
}

impl PartialOrd for VersionedKey {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

/// A key's value as the memtable knows it: `None` is a tombstone.
/// Batches at least this large are applied in key order.
const SORTED_APPLY_MIN: usize = 64;

pub type MemValue = Option<Vec<u8>>;

/// One memtable: concurrent lock-free reads, inserts from the namespace's single commit leader.
#[derive(Default)]
pub struct Memtable {
    map: SkipMap<VersionedKey, MemValue>,
    bytes: AtomicUsize,
    min_lsn: AtomicU64,
    max_lsn: AtomicU64,
}

impl Memtable {
    pub fn new() -> Self {
        Self {
            min_lsn: AtomicU64::new(u64::MAX),
            ..Self::default()
        }
    }

    /// Inserts every op of one batch at `lsn`.
    pub fn apply(&self, lsn: u64, ops: &[OpRef<'_>]) {
        // Inserting a large batch in key order keeps the skiplist's search path in cache. The sort is
        // stable, so of two ops on one key the later still wins; readers never see a half-applied LSN.
        let sorted: Vec<OpRef<'_>>;
        let ops = if ops.len() >= SORTED_APPLY_MIN && !ops.is_sorted_by_key(|o| o.key()) {
            let mut v = ops.to_vec();
            v.sort_by(|a, b| a.key().cmp(b.key()));
            sorted = v;
            &sorted[..]
        } else {
            ops
        };
        let mut added = 0;
        for op in ops {
            let (key, value) = match *op {
                OpRef::Put { key, value } => (key, Some(value.to_vec())),
                OpRef::Delete { key } => (key, None),
            };
            added += key.len() + value.as_ref().map_or(0, Vec::len) + 48;
            self.map.insert(
                VersionedKey {
                    key: key.to_vec(),
                    lsn,
                },
                value,
            );
        }
        self.bytes.fetch_add(added, Ordering::Relaxed);
        self.min_lsn.fetch_min(lsn, Ordering::Relaxed);
        self.max_lsn.fetch_max(lsn, Ordering::Release);
    }

    /// Approximate memory held, for sealing and metrics.
    pub fn size_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Highest LSN inserted (0 when empty).
    pub fn max_lsn(&self) -> u64 {
        self.max_lsn.load(Ordering::Acquire)
    }

    /// Lowest LSN inserted (None when empty).
    #[cfg(test)]
    pub fn min_lsn(&self) -> Option<u64> {
        match self.min_lsn.load(Ordering::Relaxed) {
            u64::MAX => None,
            v => Some(v),
        }
    }

    /// Newest version of `key` at or below `snapshot_lsn`: `None` = unknown here, `Some(None)` = deleted.
    pub fn get(&self, key: &[u8], snapshot_lsn: u64) -> Option<MemValue> {
        // Reads after a flush meet an empty active memtable: skip the probe's allocation and search.
        if self.map.is_empty() {
            return None;
        }
        let probe = VersionedKey {
            key: key.to_vec(),
            lsn: snapshot_lsn,
        };
        let entry = self.map.lower_bound(Bound::Included(&probe))?;
        (entry.key().key == key).then(|| entry.value().clone())
    }

    /// Up to `limit` visible (key, value-or-tombstone) pairs strictly after/before `from` within `end`.
    ///
    /// Forward: keys > `from` (or >= when inclusive) and < `end`; reverse walks down from `from`.
    pub fn scan_chunk(
        &self,
        from: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
        snapshot_lsn: u64,
        limit: usize,
    ) -> Vec<(Vec<u8>, MemValue)> {
        let mut out: Vec<(Vec<u8>, MemValue)> = Vec::new();
        if self.map.is_empty() {
            return out;
        }
        if reverse {
            self.scan_reverse(from, end, snapshot_lsn, limit, &mut out);
        } else {
            self.scan_forward(from, end, snapshot_lsn, limit, &mut out);
        }
        out
    }

    fn scan_forward(
        &self,
        from: Bound<&[u8]>,
        end: Bound<&[u8]>,
        snapshot_lsn: u64,
        limit: usize,
        out: &mut Vec<(Vec<u8>, MemValue)>,
    ) {
        // Versions sort newest-first, so the first version <= snapshot we meet per key is the visible one.
        let start = match from {
            Bound::Included(k) => Bound::Included(VersionedKey {
                key: k.to_vec(),
                lsn: u64::MAX,
            }),
            Bound::Excluded(k) => Bound::Excluded(VersionedKey {
                key: k.to_vec(),
                lsn: 0,
            }),
            Bound::Unbounded => Bound::Unbounded,
        };
        for entry in self.map.range((start, Bound::Unbounded)) {
            let vk = entry.key();
            if past_end(&vk.key, end, false) {
                break;
            }
            let seen = out.last().is_some_and(|(k, _)| k == &vk.key);
            if vk.lsn > snapshot_lsn || seen {
                continue;
            }
            if out.len() >= limit {
                break;
            }
            out.push((vk.key.clone(), entry.value().clone()));
        }
    }

    fn scan_reverse(
        &self,
        from: Bound<&[u8]>,
        end: Bound<&[u8]>,
        snapshot_lsn: u64,
        limit: usize,
        out: &mut Vec<(Vec<u8>, MemValue)>,
    ) {
        // Walking backwards meets a key's versions oldest-first: the visible one is the last <= snapshot.
        let upper = match from {
            Bound::Included(k) => Bound::Included(VersionedKey {
                key: k.to_vec(),
                lsn: 0,
            }),
            Bound::Excluded(k) => Bound::Excluded(VersionedKey {
                key: k.to_vec(),
                lsn: u64::MAX,
            }),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut current: Option<(Vec<u8>, MemValue)> = None;
        for entry in self.map.range((Bound::Unbounded, upper)).rev() {
            let vk = entry.key();
            if past_end(&vk.key, end, true) {
                break;
            }
            if let Some((ck, _)) = &current {
                if ck.as_slice() != vk.key.as_slice() {
                    if let Some(done) = current.take() {
                        out.push(done);
                    }
                    if out.len() >= limit {
                        return;
                    }
                }
            }
            if vk.lsn <= snapshot_lsn {
                current = Some((vk.key.clone(), entry.value().clone()));
            }
        }
        if let Some(done) = current {
            if out.len() < limit {
                out.push(done);
            }
        }
    }

    /// The newest version of every key, in key order (tests compare it with a model).
    #[cfg(test)]
    pub fn latest(&self) -> impl Iterator<Item = (Vec<u8>, MemValue)> + '_ {
        let mut last: Option<Vec<u8>> = None;
        self.map.iter().filter_map(move |e| {
            let vk = e.key();
            if last.as_deref() == Some(vk.key.as_slice()) {
                return None;
            }
            last = Some(vk.key.clone());
            Some((vk.key.clone(), e.value().clone()))
        })
    }

    /// Calls `f` with the newest version of every key, in key order, borrowing instead of copying.
    pub fn for_each_latest<E>(
        &self,
        mut f: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut prev: Option<Entry<'_, VersionedKey, MemValue>> = None;
        for e in self.map.iter() {
            // Versions of a key are adjacent, newest first: only the first of each run counts.
            let newer_seen = prev.as_ref().is_some_and(
                |p: &crossbeam_skiplist::map::Entry<'_, VersionedKey, MemValue>| {
                    p.key().key == e.key().key
                },
            );
            if !newer_seen {
                f(&e.key().key, e.value().as_deref())?;
            }
            prev = Some(e);
        }
        Ok(())
    }
}

/// True when `key` lies beyond the scan's far end (`end` is the upper bound forward, the lower in reverse).
pub(crate) fn past_end(key: &[u8], end: Bound<&[u8]>, reverse: bool) -> bool {
    match (end, reverse) {
        (Bound::Unbounded, _) => false,
        (Bound::Included(e), false) => key > e,
        (Bound::Excluded(e), false) => key >= e,
        (Bound::Included(e), true) => key < e,
        (Bound::Excluded(e), true) => key <= e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put<'a>(k: &'a [u8], v: &'a [u8]) -> OpRef<'a> {
        OpRef::Put { key: k, value: v }
    }

    #[test]
    fn large_batch_applies_in_key_order_and_the_last_op_on_a_key_wins() {
        let keys: Vec<[u8; 2]> = (0..200u16).rev().map(|i| i.to_be_bytes()).collect();
        let mut ops: Vec<OpRef<'_>> = keys.iter().map(|k| put(k, b"first")).collect();
        ops.push(put(&keys[7], b"second"));
        ops.push(OpRef::Delete { key: &keys[9] });
        let m = Memtable::new();
        m.apply(1, &ops);
        assert_eq!(m.get(&keys[7], 1), Some(Some(b"second".to_vec())));
        assert_eq!(m.get(&keys[9], 1), Some(None));
        assert_eq!(m.get(&keys[8], 1), Some(Some(b"first".to_vec())));
        assert_eq!(m.latest().count(), 200);
    }

    #[test]
    fn versions_respect_snapshot() {
        let m = Memtable::new();
        m.apply(1, &[put(b"a", b"1")]);
        m.apply(2, &[put(b"a", b"2"), put(b"b", b"x")]);
        m.apply(3, &[OpRef::Delete { key: b"a" }]);
        assert_eq!(m.get(b"a", 0), None);
        assert_eq!(m.get(b"a", 1), Some(Some(b"1".to_vec())));
        assert_eq!(m.get(b"a", 2), Some(Some(b"2".to_vec())));
        assert_eq!(m.get(b"a", 3), Some(None));
        assert_eq!(m.get(b"b", 1), None);
        assert_eq!(m.get(b"c", 9), None);
        assert_eq!((m.min_lsn(), m.max_lsn()), (Some(1), 3));
    }

    #[test]
    fn scans_forward_and_reverse_at_a_snapshot() {
        let m = Memtable::new();
        m.apply(1, &[put(b"a", b"1"), put(b"b", b"1"), put(b"c", b"1")]);
        m.apply(2, &[put(b"b", b"2"), OpRef::Delete { key: b"c" }]);
        let fwd = m.scan_chunk(Bound::Unbounded, Bound::Unbounded, false, 2, 10);
        assert_eq!(
            fwd,
            vec![
                (b"a".to_vec(), Some(b"1".to_vec())),
                (b"b".to_vec(), Some(b"2".to_vec())),
                (b"c".to_vec(), None)
            ]
        );
        let rev = m.scan_chunk(Bound::Unbounded, Bound::Unbounded, true, 1, 10);
        assert_eq!(
            rev,
            vec![
                (b"c".to_vec(), Some(b"1".to_vec())),
                (b"b".to_vec(), Some(b"1".to_vec())),
                (b"a".to_vec(), Some(b"1".to_vec()))
            ]
        );
        let after_a = m.scan_chunk(Bound::Excluded(b"a"), Bound::Excluded(b"c"), false, 2, 10);
        assert_eq!(after_a, vec![(b"b".to_vec(), Some(b"2".to_vec()))]);
        let before_c = m.scan_chunk(Bound::Excluded(b"c"), Bound::Included(b"a"), true, 2, 1);
        assert_eq!(before_c, vec![(b"b".to_vec(), Some(b"2".to_vec()))]);
        let latest: Vec<_> = m.latest().collect();
        assert_eq!(latest.len(), 3);
        assert_eq!(latest[2], (b"c".to_vec(), None));
        let mut borrowed = Vec::new();
        m.for_each_latest(|k, v| {
            borrowed.push((k.to_vec(), v.map(<[u8]>::to_vec)));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(borrowed, latest);
    }
}
