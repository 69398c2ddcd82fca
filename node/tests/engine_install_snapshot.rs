//! `Namespace::install_snapshot`: a follower takes over an upstream's contents at LSN S and continues
//! its WAL at S + 1; a failing source leaves it untouched; the result survives a reopen.

use std::ops::Bound;

use unisondb::engine::{EngineError, EngineOptions, Namespace};
use unisondb::storage::batch::WriteBatch;
use unisondb::wal::{Record, WalError};

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn contents(ns: &Namespace) -> Pairs {
    ns.snapshot()
        .unwrap()
        .range(Bound::Unbounded, Bound::Unbounded, false)
        .map(|r| r.unwrap())
        .collect()
}

fn put(ns: &Namespace, k: &str, v: &str) {
    let mut b = WriteBatch::new();
    b.put(k.as_bytes().to_vec(), v.as_bytes().to_vec());
    ns.write(b).unwrap();
}

fn records(ns: &Namespace, from: u64) -> Vec<Record> {
    let mut r = ns.wal_reader(from).unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        out.push(rec);
    }
    out
}

#[test]
fn install_replaces_contents_and_continues_the_wal() {
    let up_dir = tempfile::tempdir().unwrap();
    let down_dir = tempfile::tempdir().unwrap();
    let up = Namespace::open(up_dir.path(), "n", EngineOptions::default()).unwrap();
    for i in 0..50 {
        put(&up, &format!("k{i:03}"), &format!("v{i}"));
    }
    let mut b = WriteBatch::new();
    b.delete(b"k007".to_vec());
    up.write(b).unwrap();
    up.flush().unwrap();
    put(&up, "k100", "in-memtable");
    let snap = up.snapshot().unwrap();
    let s = snap.lsn();
    let hlc = up.latest_hlc();
    let expected = contents(&up);

    let down = Namespace::open(down_dir.path(), "n", EngineOptions::default()).unwrap();
    put(&down, "stale", "x");
    put(&down, "k001", "old");
    down.flush().unwrap();
    put(&down, "stale2", "memtable-only");

    // A source error aborts: nothing changes.
    let bad = vec![
        Ok((b"a".to_vec(), b"b".to_vec())),
        Err(EngineError::Corrupt("stream broke".into())),
    ];
    assert!(down.install_snapshot(bad, s, hlc).is_err());
    assert_eq!(down.latest_lsn(), 3);
    assert_eq!(
        down.get(b"stale2").unwrap(),
        Some(b"memtable-only".to_vec())
    );

    // A snapshot not ahead of the local LSN is refused.
    assert!(down.install_snapshot(Vec::new(), 2, hlc).is_err());

    let entries = snap.range(Bound::Unbounded, Bound::Unbounded, false);
    down.install_snapshot(entries, s, hlc).unwrap();
    assert_eq!(down.latest_lsn(), s);
    assert_eq!(down.latest_hlc(), hlc);
    assert_eq!(contents(&down), expected);
    assert!(matches!(
        down.wal_reader(1).err(),
        Some(EngineError::Wal(WalError::Trimmed { .. }))
    ));

    // The WAL continues verbatim at S + 1.
    for i in 0..5 {
        put(&up, &format!("after{i}"), "y");
    }
    let tail = records(&up, s + 1);
    assert_eq!(tail.len(), 5);
    down.apply_replicated(tail.clone()).unwrap();
    assert_eq!(down.latest_lsn(), up.latest_lsn());
    assert_eq!(records(&down, s + 1), tail);
    assert_eq!(contents(&down), contents(&up));

    // Everything survives a reopen (tree at S, WAL from S + 1).
    drop(down);
    let down = Namespace::open(down_dir.path(), "n", EngineOptions::default()).unwrap();
    assert_eq!(down.latest_lsn(), up.latest_lsn());
    assert_eq!(contents(&down), contents(&up));
    assert!(!down_dir.path().join("snapshot-install").exists());
    put(&down, "local", "z");
    assert_eq!(down.latest_lsn(), up.latest_lsn() + 1);
}

#[test]
fn interrupted_install_after_tree_switch_is_completed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Namespace::open(dir.path(), "n", EngineOptions::default()).unwrap();
    ns.install_snapshot(vec![Ok((b"k".to_vec(), b"v".to_vec()))], 40, 1 << 20)
        .unwrap();
    drop(ns);
    // Simulate a crash before the WAL reset: the marker is back and an old segment lingers.
    std::fs::write(dir.path().join("snapshot-install"), "40").unwrap();
    let wal = dir.path().join("wal");
    let seg = std::fs::read_dir(&wal)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&seg, wal.join("00000000000000000001.wal")).unwrap();
    let ns = Namespace::open(dir.path(), "n", EngineOptions::default()).unwrap();
    assert_eq!(ns.latest_lsn(), 40);
    assert_eq!(ns.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert!(!dir.path().join("snapshot-install").exists());
}
