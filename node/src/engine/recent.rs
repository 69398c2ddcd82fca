//! The last records committed, kept in memory for the tails that keep up (every replication stream
//! and the change feed behind notifications): they take the commit path's own `Bytes` instead of each
//! reading the WAL back, so a write fanned out to N streams is read and copied zero times, not N.
//!
//! A cache only: a tail whose next LSN is not here reads the WAL as before. The commit leader pushes
//! each group's records before it publishes them; records of a group that does not push (Raft) break
//! the sequence and empty the cache, and a truncation or snapshot install empties it first.

use std::collections::VecDeque;

use parking_lot::Mutex;

use super::tail::TailLimits;
use crate::wal::Record;

/// Records kept at most.
const MAX_RECORDS: usize = 512;
/// Payload bytes kept at most (a busy relayer's whole lag window at 1 KiB records).
const MAX_BYTES: usize = 1 << 20;

#[derive(Default)]
pub(crate) struct Recent {
    ring: Mutex<Ring>,
}

#[derive(Default)]
struct Ring {
    records: VecDeque<Record>,
    bytes: usize,
}

impl Ring {
    fn clear(&mut self) {
        self.records.clear();
        self.bytes = 0;
    }
}

impl Recent {
    /// Adds records just logged (in LSN order); a record that does not follow the last one held
    /// restarts the cache at it.
    pub(crate) fn push(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let mut r = self.ring.lock();
        for rec in records {
            if r.records.back().is_some_and(|l| l.lsn + 1 != rec.lsn) {
                r.clear();
            }
            r.bytes += rec.payload.len();
            r.records.push_back(rec);
        }
        while r.records.len() > MAX_RECORDS || (r.bytes > MAX_BYTES && r.records.len() > 1) {
            if let Some(old) = r.records.pop_front() {
                r.bytes -= old.payload.len();
            }
        }
    }

    /// Forgets everything (before records are discarded or replaced).
    pub(crate) fn clear(&self) {
        self.ring.lock().clear();
    }

    /// Records `from..=upto` within `limits` when the cache holds `from`; `None` otherwise.
    pub(crate) fn get(&self, from: u64, upto: u64, limits: TailLimits) -> Option<Vec<Record>> {
        let r = self.ring.lock();
        let first = r.records.front()?.lsn;
        if from < first || from > upto {
            return None;
        }
        let start = usize::try_from(from - first).ok()?;
        if start >= r.records.len() {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for rec in r.records.range(start..) {
            if rec.lsn > upto || out.len() >= limits.max_records || bytes >= limits.max_bytes {
                break;
            }
            bytes += rec.payload.len() + 32;
            out.push(rec.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(lsn: u64) -> Record {
        Record {
            lsn,
            hlc: lsn * 10,
            epoch: 1,
            payload: bytes::Bytes::from(vec![lsn as u8; 100]),
        }
    }

    fn lsns(v: Option<Vec<Record>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|r| r.lsn).collect())
    }

    #[test]
    fn serves_held_ranges_only() {
        let c = Recent::default();
        let all = TailLimits::default();
        assert_eq!(lsns(c.get(1, 10, all)), None, "empty");
        c.push((5..=9).map(rec).collect());
        assert_eq!(lsns(c.get(4, 9, all)), None, "before the first held");
        assert_eq!(
            lsns(c.get(6, 8, all)),
            Some(vec![6, 7, 8]),
            "capped by upto"
        );
        assert_eq!(lsns(c.get(10, 12, all)), None, "past the last held");
        let two = TailLimits {
            max_records: 2,
            max_bytes: usize::MAX,
        };
        assert_eq!(lsns(c.get(5, 9, two)), Some(vec![5, 6]));
        // A gap (records logged without the cache) restarts it.
        c.push(vec![rec(12)]);
        assert_eq!(lsns(c.get(6, 12, all)), None);
        assert_eq!(lsns(c.get(12, 12, all)), Some(vec![12]));
        c.clear();
        assert_eq!(lsns(c.get(12, 12, all)), None);
    }

    #[test]
    fn bounded_by_count() {
        let c = Recent::default();
        c.push((1..=(MAX_RECORDS as u64 + 10)).map(rec).collect());
        assert_eq!(lsns(c.get(5, 5, TailLimits::default())), None);
        assert_eq!(
            lsns(c.get(11, 11, TailLimits::default())),
            Some(vec![11]),
            "the newest MAX_RECORDS are kept"
        );
    }
}
