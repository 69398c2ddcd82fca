//! Backups and restores with real `unisondb` processes (issue 13's first part, and the `restore`
//! of issue 14): a hub under a steady stream of writes takes a complete backup (`POST /backups`,
//! and the `unisondb backup` client) and UnisonDB-style ones (`/btree/backup`, `/wal/backup`);
//! `unisondb restore` then rebuilds the namespace in fresh data directories — whole, and to a point
//! in time — and each restored node is compared key by key with what the hub had acknowledged at
//! that LSN. Bad paths, an interrupted backup and a restore under a running server are refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::Client;
use serde_json::{json, Value};
use unisondb_testkit::{call, small_node, state_at, KvLoad, NodeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_unisondb");
const KEYS: u64 = 40;

/// The KV load of these tests (1000-byte values over `KEYS` keys) on the node at `http`.
fn load(http: u16) -> KvLoad {
    KvLoad::new(http, KEYS, 1000)
}

fn node(dir: &Path, name: &str) -> (NodeProcess, u16) {
    small_node(BIN, dir, name, "")
}

async fn start(p: &mut NodeProcess, http: u16) {
    p.start_ready(&format!("http://127.0.0.1:{http}/readyz"))
        .await
        .unwrap();
}

fn restore(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("restore")
        .args(args)
        .output()
        .unwrap()
}

/// Restores into a fresh node directory with `args`, starts it, and returns its contents and LSN.
async fn restored(root: &Path, name: &str, args: &[&str]) -> (BTreeMap<String, String>, u64) {
    let dir = root.join(name);
    let data = dir.join("data");
    let mut full = vec![
        "-d",
        data.to_str().unwrap(),
        "-n",
        "default",
        "--force",
        "--json",
    ];
    full.extend_from_slice(args);
    let out = restore(&full);
    assert!(
        out.status.success(),
        "restore {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (mut p, http) = node(&dir, name);
    start(&mut p, http).await;
    assert_eq!(
        Some(load(http).lsn().await.expect("offset")),
        report["lsn"].as_u64(),
        "{report}"
    );
    let m = load(http).dump().await.expect("dump");
    p.terminate(Duration::from_secs(10)).unwrap();
    (m, report["lsn"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_restore_whole_and_to_a_point_in_time() {
    let root = tempfile::tempdir().unwrap();
    let hub_dir = root.path().join("hub");
    let (mut hub, http) = node(&hub_dir, "hub");
    start(&mut hub, http).await;
    let c = Client::new();
    let url = |p: &str| format!("http://127.0.0.1:{http}/api/v1/default/{p}");
    let backups = hub_dir.join("data/backups/default");

    let mut writes = load(http).write_all(0, 150).await.expect("writes");
    // UnisonDB's shapes: an early snapshot file, later the sealed WAL segments.
    let (st, snap) = call(
        c.post(url("btree/backup"))
            .json(&json!({"path": "early/snap.bin"})),
    )
    .await
    .expect("answer");
    assert_eq!(st, 200, "{snap}");
    assert_eq!(
        snap["path"],
        backups.join("early/snap.bin").display().to_string()
    );
    assert!(snap["bytes"].as_u64().unwrap() > KEYS * 1000);
    let early_lsn = writes.last().unwrap().0;
    for bad in [
        json!({"path": ""}),
        json!({"path": "../escape"}),
        json!({"path": "/etc/x"}),
    ] {
        let (st, v) = call(c.post(url("btree/backup")).json(&bad))
            .await
            .expect("answer");
        assert_eq!(st, 400, "{bad} -> {v}");
    }
    let (st, v) = call(
        c.post(url("wal/backup"))
            .json(&json!({"afterSegmentId": 0})),
    )
    .await
    .expect("answer");
    assert_eq!(st, 400, "backupDir is required: {v}");

    // A complete backup while a writer keeps going.
    let writer = tokio::spawn(async move { load(http).write_all(150, 150).await.expect("writes") });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (st, full) = call(c.post(url("backups")).json(&json!({})))
        .await
        .expect("answer");
    assert_eq!(st, 200, "{full}");
    writes.extend(writer.await.unwrap());
    let m = &full["manifest"];
    let (s, last) = (
        m["snapshot"]["lsn"].as_u64().unwrap(),
        m["wal"]["lastLsn"].as_u64().unwrap(),
    );
    assert!(s > early_lsn && last >= s, "{m}");
    assert_eq!(m["wal"]["records"].as_u64().unwrap(), last - s);
    assert!(Path::new(full["path"].as_str().unwrap())
        .join("manifest.json")
        .is_file());
    // The client command takes one too.
    let out = Command::new(BIN)
        .args([
            "backup",
            "--url",
            &format!("http://127.0.0.1:{http}"),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let by_cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (_, listed) = call(c.get(url("backups"))).await.expect("answer");
    let ids: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [full["id"].as_str().unwrap(), by_cli["id"].as_str().unwrap()]
    );

    writes.extend(load(http).write_all(300, 100).await.expect("writes"));
    let (st, segs) = call(
        c.post(url("wal/backup"))
            .json(&json!({"afterSegmentId": 0, "backupDir": "segs"})),
    )
    .await
    .expect("answer");
    assert_eq!(st, 200, "{segs}");
    let copied = segs["backups"].as_array().unwrap();
    assert!(copied.len() >= 3, "{segs}");
    let ids: Vec<u64> = copied
        .iter()
        .map(|b| b["segmentId"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // A restore under the running server is refused (the namespace is locked).
    let out = restore(&[
        "-d",
        hub_dir.join("data").to_str().unwrap(),
        "-n",
        "default",
        "--force",
        "--from",
        full["path"].as_str().unwrap(),
    ]);
    assert!(!out.status.success());
    hub.terminate(Duration::from_secs(10)).unwrap();

    // Whole: the complete backup gives exactly the acknowledged state at its last LSN.
    let (got, lsn) = restored(
        root.path(),
        "r-full",
        &["--from", full["path"].as_str().unwrap()],
    )
    .await;
    assert_eq!(lsn, last);
    assert_eq!(
        got,
        state_at(&writes, last),
        "restored from the complete backup"
    );

    // Point in time, UnisonDB's shapes: the early snapshot plus WAL segments, stopped at an LSN
    // between them.
    let target = early_lsn + 120;
    let segs_dir = backups.join("segs");
    let (got, lsn) = restored(
        root.path(),
        "r-pitr",
        &[
            "--btree",
            backups.join("early/snap.bin").to_str().unwrap(),
            "--wal",
            segs_dir.to_str().unwrap(),
            "--to-lsn",
            &target.to_string(),
        ],
    )
    .await;
    assert_eq!(lsn, target);
    assert_eq!(got, state_at(&writes, target), "restored to LSN {target}");

    // An interrupted backup (no manifest) is never restored from; a damaged one neither.
    let copy = root.path().join("partial");
    std::fs::create_dir_all(&copy).unwrap();
    let src = PathBuf::from(full["path"].as_str().unwrap());
    for f in ["snapshot.bin", "wal.bin"] {
        std::fs::copy(src.join(f), copy.join(f)).unwrap();
    }
    let data = root.path().join("r-bad/data");
    let out = restore(&[
        "-d",
        data.to_str().unwrap(),
        "-n",
        "default",
        "--force",
        "--from",
        copy.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no manifest.json"));
    std::fs::copy(src.join("manifest.json"), copy.join("manifest.json")).unwrap();
    let mut snap_bytes = std::fs::read(copy.join("snapshot.bin")).unwrap();
    let mid = snap_bytes.len() / 2;
    snap_bytes[mid] ^= 1;
    std::fs::write(copy.join("snapshot.bin"), snap_bytes).unwrap();
    let out = restore(&[
        "-d",
        data.to_str().unwrap(),
        "-n",
        "default",
        "--dry-run",
        "--from",
        copy.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("differs from the manifest"));
    assert!(
        !data.join("default").exists(),
        "a refused restore created nothing"
    );
}
