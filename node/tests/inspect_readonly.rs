//! `unisondb inspect DIR` changes nothing it inspects (bytes, mtimes, directory entries), even
//! on a damaged directory with a torn WAL tail; `inspect --repair` truncates the torn tail and
//! touches nothing else. `UNISONDB_TEST_BIN` runs another binary (to show the old behaviour).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use unisondb::engine::{EngineOptions, FsyncPolicy, Namespace};
use unisondb::storage::batch::WriteBatch;
use unisondb::wal::{RetentionPolicy, WalOptions};

fn bin() -> PathBuf {
    std::env::var_os("UNISONDB_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_unisondb")))
}

fn opts() -> EngineOptions {
    EngineOptions {
        fsync: FsyncPolicy::Always,
        memtable_bytes: 1 << 30,
        wal: WalOptions {
            segment_size: 64 << 10,
        },
        retention: RetentionPolicy {
            max_bytes: None,
            max_age: None,
        },
        ..EngineOptions::default()
    }
}

/// path -> (bytes, mtime) of every file, and (entries, mtime) of every directory, under `root`.
fn snapshot(root: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, SystemTime)>) {
    let md = std::fs::metadata(root).expect("meta");
    let mut names: Vec<String> = std::fs::read_dir(root)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    out.insert(
        root.to_path_buf(),
        (names.join("\n").into_bytes(), md.modified().expect("mtime")),
    );
    for n in names {
        let p = root.join(n);
        if p.is_dir() {
            snapshot(&p, out);
        } else {
            let m = std::fs::metadata(&p).expect("meta");
            out.insert(
                p.clone(),
                (
                    std::fs::read(&p).expect("read"),
                    m.modified().expect("mtime"),
                ),
            );
        }
    }
}

fn changed(
    a: &BTreeMap<PathBuf, (Vec<u8>, SystemTime)>,
    b: &BTreeMap<PathBuf, (Vec<u8>, SystemTime)>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (p, v) in a {
        match b.get(p) {
            None => out.push(format!("{} deleted", p.display())),
            Some(w) if w.0 != v.0 => out.push(format!("{} content changed", p.display())),
            Some(w) if w.1 != v.1 => out.push(format!("{} mtime changed", p.display())),
            _ => {}
        }
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        out.push(format!("{} created", p.display()));
    }
    out
}

fn segments(wal: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(wal)
        .expect("wal")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

#[test]
fn inspect_changes_nothing_and_repair_only_truncates_the_torn_tail() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let ns_dir = data.join("ns");
    {
        let ns = Namespace::open(&ns_dir, "ns", opts()).expect("open");
        for i in 0..400u32 {
            let mut b = WriteBatch::new();
            b.put(format!("k{i:05}").into_bytes(), vec![b'v'; 300]);
            ns.write(b).expect("write");
            if i == 200 {
                ns.flush().expect("flush");
            }
        }
        // dropped without close: the tail after the flush lives only in the WAL
    }
    // A torn tail: the last record loses its last bytes. And a damaged tree page.
    let last = segments(&ns_dir.join("wal")).pop().expect("segment");
    let len = std::fs::metadata(&last).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open")
        .set_len(len - 5)
        .expect("truncate");
    let tree = ns_dir.join("tree.db");
    let mut t = std::fs::read(&tree).expect("tree");
    t[2 * 4096 + 4000] ^= 1;
    std::fs::write(&tree, &t).expect("write tree");
    // No lock file: a read-only inspect must not create one.
    let _ = std::fs::remove_file(ns_dir.join("LOCK"));
    // mtimes have a coarse granularity on some file systems: let the clock move on.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let mut before = BTreeMap::new();
    snapshot(&data, &mut before);
    for args in [&["inspect"][..], &["inspect", "--json"][..]] {
        let out = Command::new(bin())
            .args(args)
            .arg(&data)
            .output()
            .expect("run inspect");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut after = BTreeMap::new();
        snapshot(&data, &mut after);
        let diff = changed(&before, &after);
        assert!(
            diff.is_empty(),
            "inspect {args:?} changed the directory: {diff:#?}\n{text}\n{err}"
        );
        if args.len() == 1 {
            assert!(
                text.contains("torn tail"),
                "torn tail not reported:\n{text}\n{err}"
            );
            assert!(
                text.contains("checksum"),
                "damaged page not reported:\n{text}"
            );
            assert_eq!(
                out.status.code(),
                Some(3),
                "problems exit with 3:\n{text}\n{err}"
            );
        }
    }

    // --repair truncates the torn tail, and only that.
    let out = Command::new(bin())
        .args(["inspect", "--repair"])
        .arg(&data)
        .output()
        .expect("run inspect --repair");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("truncated"), "{text}");
    let mut after = BTreeMap::new();
    snapshot(&data, &mut after);
    let diff = changed(&before, &after);
    let seg = last.display().to_string();
    assert!(
        diff.iter().all(|d| d.starts_with(&seg)),
        "--repair changed more than the torn segment: {diff:#?}"
    );
    assert!(!diff.is_empty(), "--repair did not truncate the torn tail");
    assert!(std::fs::metadata(&last).expect("meta").len() < len - 5);
}
