//! Property test: the namespace engine against a `BTreeMap` model, with flushes and reopen interleaved.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Duration;

use proptest::prelude::*;
use unisondb::engine::{EngineOptions, FsyncPolicy, Namespace};
use unisondb::storage::batch::WriteBatch;
use unisondb::wal::{RetentionPolicy, WalOptions};

#[derive(Debug, Clone)]
enum Step {
    Put(u8, u16),
    Delete(u8),
    DeletePrefix(u8),
    Batch(Vec<(u8, Option<u16>)>),
    Get(u8),
    Range(Option<u8>, Option<u8>, bool),
    Flush,
    Reopen,
}

fn key(k: u8) -> Vec<u8> {
    // Two-level keys so prefix deletes hit several keys.
    vec![b'k', k / 16, k % 16]
}

fn value(v: u16) -> Vec<u8> {
    // Some values are large enough for B+Tree overflow pages.
    let len = if v.is_multiple_of(7) {
        3000
    } else {
        (v % 40) as usize + 1
    };
    (0..len).map(|i| (v as usize + i) as u8).collect()
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (any::<u8>(), any::<u16>()).prop_map(|(k, v)| Step::Put(k, v)),
        2 => any::<u8>().prop_map(Step::Delete),
        1 => (0u8..16).prop_map(Step::DeletePrefix),
        2 => proptest::collection::vec((any::<u8>(), proptest::option::of(any::<u16>())), 1..8)
            .prop_map(Step::Batch),
        3 => any::<u8>().prop_map(Step::Get),
        2 => (proptest::option::of(any::<u8>()), proptest::option::of(any::<u8>()), any::<bool>())
            .prop_map(|(a, b, r)| Step::Range(a, b, r)),
        1 => Just(Step::Flush),
        1 => Just(Step::Reopen),
    ]
}

fn opts() -> EngineOptions {
    EngineOptions {
        fsync: FsyncPolicy::Never,
        memtable_bytes: 8 << 10,
        max_sealed_memtables: 2,
        wal: WalOptions {
            segment_size: 16 << 10,
        },
        retention: RetentionPolicy {
            max_bytes: Some(0),
            max_age: Some(Duration::ZERO),
        },
        ..EngineOptions::default()
    }
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut ns = Namespace::open(dir.path(), "prop", opts()).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut last_lsn = 0;
    for s in steps {
        match s {
            Step::Put(k, v) => {
                let mut b = WriteBatch::new();
                b.put(key(k), value(v));
                let c = ns.write(b).unwrap();
                prop_assert_eq!(c.lsn, last_lsn + 1);
                last_lsn = c.lsn;
                model.insert(key(k), value(v));
            }
            Step::Delete(k) => {
                let mut b = WriteBatch::new();
                b.delete(key(k));
                last_lsn = ns.write(b).unwrap().lsn;
                model.remove(&key(k));
            }
            Step::DeletePrefix(p) => {
                let prefix = vec![b'k', p];
                let mut b = WriteBatch::new();
                b.delete_prefix(prefix.clone());
                let had = model.keys().any(|k| k.starts_with(&prefix));
                let c = ns.write(b).unwrap();
                // An empty expansion logs nothing.
                prop_assert_eq!(c.lsn, if had { last_lsn + 1 } else { last_lsn });
                last_lsn = c.lsn;
                model.retain(|k, _| !k.starts_with(&prefix));
            }
            Step::Batch(ops) => {
                let mut b = WriteBatch::new();
                for (k, v) in &ops {
                    match v {
                        Some(v) => {
                            b.put(key(*k), value(*v));
                            model.insert(key(*k), value(*v));
                        }
                        None => {
                            b.delete(key(*k));
                            model.remove(&key(*k));
                        }
                    }
                }
                last_lsn = ns.write(b).unwrap().lsn;
            }
            Step::Get(k) => {
                prop_assert_eq!(ns.get(&key(k)).unwrap(), model.get(&key(k)).cloned());
            }
            Step::Range(a, b, reverse) => {
                let lo = a.map_or(Bound::Unbounded, |a| Bound::Included(key(a)));
                let hi = b.map_or(Bound::Unbounded, |b| Bound::Excluded(key(b)));
                if let (Some(a), Some(b)) = (a, b) {
                    if key(a) > key(b) {
                        continue;
                    }
                }
                let snap = ns.snapshot().unwrap();
                let got: Vec<_> = snap
                    .range(lo.clone(), hi.clone(), reverse)
                    .map(|r| r.unwrap())
                    .collect();
                let mut want: Vec<_> = model
                    .range((lo.clone(), hi.clone()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if reverse {
                    want.reverse();
                }
                // The borrowing scan sees the same entries (tree-only or merged with memtables).
                let mut scanned = Vec::new();
                snap.scan(as_ref(&lo), as_ref(&hi), reverse, |k, v| {
                    scanned.push((k.to_vec(), v.to_vec()));
                    true
                })
                .unwrap();
                prop_assert_eq!(&scanned, &want);
                prop_assert_eq!(got, want);
            }
            Step::Flush => {
                ns.flush().unwrap();
                let report = ns.check().unwrap();
                prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
            }
            Step::Reopen => {
                drop(ns);
                ns = Namespace::open(dir.path(), "prop", opts()).unwrap();
                prop_assert_eq!(ns.latest_lsn(), last_lsn);
            }
        }
    }
    // Everything, in order, at the end, and again after a final reopen.
    for _ in 0..2 {
        let all: Vec<_> = ns
            .snapshot()
            .unwrap()
            .range(Bound::Unbounded, Bound::Unbounded, false)
            .map(|r| r.unwrap())
            .collect();
        let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        prop_assert_eq!(all, want);
        drop(ns);
        ns = Namespace::open(dir.path(), "prop", opts()).unwrap();
    }
    prop_assert!(ns.check().unwrap().problems.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_model(steps in proptest::collection::vec(step(), 1..120)) {
        run(steps)?;
    }
}

#[test]
fn snapshot_is_isolated_from_later_writes_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Namespace::open(dir.path(), "iso", opts()).unwrap();
    let mut b = WriteBatch::new();
    b.put(b"a".to_vec(), b"1".to_vec())
        .put(b"b".to_vec(), b"1".to_vec());
    ns.write(b).unwrap();
    let snap = ns.snapshot().unwrap();
    let mut b = WriteBatch::new();
    b.put(b"a".to_vec(), b"2".to_vec()).delete(b"b".to_vec());
    ns.write(b).unwrap();
    ns.flush().unwrap();
    assert_eq!(snap.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(snap.get(b"b").unwrap(), Some(b"1".to_vec()));
    assert_eq!(ns.get(b"a").unwrap(), Some(b"2".to_vec()));
    assert_eq!(ns.get(b"b").unwrap(), None);
}

#[test]
fn second_open_of_a_namespace_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _ns = Namespace::open(dir.path(), "x", opts()).unwrap();
    let err = Namespace::open(dir.path(), "x", opts())
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("already open"), "{err}");
}

#[test]
fn concurrent_writers_share_commits_and_get_distinct_lsns() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Namespace::open(
        dir.path(),
        "gc",
        EngineOptions {
            fsync: FsyncPolicy::Always,
            ..opts()
        },
    )
    .unwrap();
    let mut handles = Vec::new();
    for t in 0..4u8 {
        let ns = ns.clone();
        handles.push(std::thread::spawn(move || {
            let mut lsns = Vec::new();
            for i in 0..50u8 {
                let mut b = WriteBatch::new();
                b.put(vec![t, i], vec![i]);
                lsns.push(ns.write(b).unwrap().lsn);
            }
            lsns
        }));
    }
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    assert_eq!(all, (1..=200).collect::<Vec<_>>());
    assert_eq!(ns.latest_lsn(), 200);
    // The WAL holds exactly LSNs 1..=200 in order.
    let mut r = ns.wal_reader(1).unwrap();
    let mut n = 0;
    while let Some(rec) = r.next_record().unwrap() {
        n += 1;
        assert_eq!(rec.lsn, n);
    }
    assert_eq!(n, 200);
}

#[test]
fn replicated_records_are_applied_verbatim_and_in_sequence() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let a = Namespace::open(a_dir.path(), "r", opts()).unwrap();
    let b = Namespace::open(b_dir.path(), "r", opts()).unwrap();
    for i in 0..10u8 {
        let mut wb = WriteBatch::new();
        wb.put(vec![i], vec![i; 10]);
        a.write(wb).unwrap();
    }
    let mut reader = a.wal_reader(1).unwrap();
    let mut recs = Vec::new();
    while let Some(r) = reader.next_record().unwrap() {
        recs.push(r);
    }
    // A gap is refused and changes nothing.
    let err = b.apply_replicated(recs[1..].to_vec()).unwrap_err();
    assert!(err.to_string().contains("does not follow"), "{err}");
    assert_eq!(b.latest_lsn(), 0);
    b.apply_replicated(recs.clone()).unwrap();
    assert_eq!(b.latest_lsn(), 10);
    assert_eq!(b.get(&[3]).unwrap(), Some(vec![3; 10]));
    assert_eq!(b.latest_hlc(), recs[9].hlc);
    // A duplicate is refused.
    assert!(b.apply_replicated(vec![recs[9].clone()]).is_err());
    let mut r2 = b.wal_reader(1).unwrap();
    for want in &recs {
        assert_eq!(&r2.next_record().unwrap().unwrap(), want);
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}
