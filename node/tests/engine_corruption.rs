//! A torn WAL tail is repaired on open (the unacknowledged tail is dropped); corruption in the middle of
//! the log is a clear error, never skipped.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use unisondb::engine::{EngineOptions, FsyncPolicy, Namespace};
use unisondb::storage::batch::WriteBatch;
use unisondb::wal::{RetentionPolicy, WalOptions};

fn opts() -> EngineOptions {
    EngineOptions {
        fsync: FsyncPolicy::Always,
        // Huge memtable: everything stays in the WAL so recovery must replay it.
        memtable_bytes: 1 << 30,
        wal: WalOptions {
            segment_size: 4 << 10,
        },
        retention: RetentionPolicy {
            max_bytes: None,
            max_age: None,
        },
        ..EngineOptions::default()
    }
}

fn fill(dir: &Path, n: u32) {
    let ns = Namespace::open(dir, "c", opts()).unwrap();
    for i in 0..n {
        let mut b = WriteBatch::new();
        b.put(format!("k{i:05}").into_bytes(), vec![b'v'; 200]);
        ns.write(b).unwrap();
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        // Segment files only (the directory also holds the `durable` LSN record).
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

fn keys_present(ns: &Namespace, n: u32) -> u32 {
    (0..n)
        .filter(|i| ns.get(format!("k{i:05}").as_bytes()).unwrap().is_some())
        .count() as u32
}

#[test]
fn truncated_tail_drops_only_the_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 100);
    let segs = segments(dir.path());
    assert!(
        segs.len() > 2,
        "test needs several segments, got {}",
        segs.len()
    );
    let last = segs.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let ns = Namespace::open(dir.path(), "c", opts()).unwrap();
    assert_eq!(ns.latest_lsn(), 99);
    assert_eq!(keys_present(&ns, 100), 99);
    // The log continues at the right LSN after repair.
    let mut b = WriteBatch::new();
    b.put(b"after".to_vec(), b"x".to_vec());
    assert_eq!(ns.write(b).unwrap().lsn, 100);
    drop(ns);
    let ns = Namespace::open(dir.path(), "c", opts()).unwrap();
    assert_eq!(ns.latest_lsn(), 100);
}

#[test]
fn flipped_byte_in_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 50);
    let last = segments(dir.path()).pop().unwrap();
    flip(&last, std::fs::metadata(&last).unwrap().len() - 3);
    let ns = Namespace::open(dir.path(), "c", opts()).unwrap();
    assert_eq!(ns.latest_lsn(), 49);
}

#[test]
fn corruption_in_the_middle_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 100);
    let segs = segments(dir.path());
    let middle = &segs[segs.len() / 2];
    let len = std::fs::metadata(middle).unwrap().len();
    flip(middle, len / 2);
    let err = Namespace::open(dir.path(), "c", opts())
        .err()
        .expect("open must fail");
    let msg = err.to_string();
    assert!(msg.contains("corrupt"), "unclear error: {msg}");
}

#[test]
fn missing_middle_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 100);
    let segs = segments(dir.path());
    std::fs::remove_file(&segs[1]).unwrap();
    assert!(Namespace::open(dir.path(), "c", opts()).is_err());
}

fn flip(path: &Path, at: u64) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x5A;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}
