//! Corruption matrix with real `unisondb` processes: write known data, stop the node, damage one
//! thing (a WAL segment, a B+Tree page, a meta page), start it again. Every case must end in
//! either
//! - **starts and serves only correct data**: every key reads back exactly as written, or its
//!   read fails with a 5xx naming the damaged file — never other bytes, never a 404; or
//! - **refuses to start** with an error in its log naming the damaged file.
//!
//! One fixture is written once and copied per case. `UNISONDB_TEST_BIN` runs another binary
//! (used to show the matrix failing against the behaviour before integrity checks).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{b64, unb64};
use futures::StreamExt;
use reqwest::Client;
use serde_json::{json, Value};
use unisondb_testkit::{loopback_config, NodeProcess, Ports};

const NS: &str = "m";
const PAGE: u64 = 4096;
const SMALL: usize = 3000;
const LARGE: usize = 12;
/// Written in one batch after the last graceful stop, then the node is SIGKILLed: these writes
/// are acknowledged (fsync=always) and live only in the last WAL segment.
const TAIL: usize = 37;

fn bin() -> PathBuf {
    std::env::var_os("UNISONDB_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_unisondb")))
}

fn small_value(i: usize) -> Vec<u8> {
    format!("value-{i:06}-")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(60 + i % 90)
        .collect()
}

fn large_value(i: usize) -> Vec<u8> {
    (0..10_000 + i * 700)
        .map(|j| (j * 31 + i * 7) as u8)
        .collect()
}

fn tail_value(i: usize) -> Vec<u8> {
    vec![b'a' + (i % 26) as u8; 2000]
}

/// Every acknowledged write: key -> value.
fn expected(with_tail: bool) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for i in 0..SMALL {
        m.insert(format!("k{i:06}"), small_value(i));
    }
    for i in 0..LARGE {
        m.insert(format!("large{i:03}"), large_value(i));
    }
    if with_tail {
        for i in 0..TAIL {
            m.insert(format!("tail{i:03}"), tail_value(i));
        }
    }
    m
}

fn config(dir: &Path, ports: Ports) -> String {
    let mut c = loopback_config(dir, ports, &[NS], None, "");
    c.push_str(
        "wal:\n  fsync: always\n  segment_size_bytes: 65536\nmemtable:\n  size_bytes: 131072\n",
    );
    c
}

fn node(dir: &Path) -> (NodeProcess, Ports) {
    let ports = Ports::free();
    (NodeProcess::new(bin(), "m", dir, config(dir, ports)), ports)
}

async fn put_batch(c: &Client, ports: Ports, items: &[(String, Vec<u8>)]) {
    let body = json!({
        "operation": "put",
        "items": items.iter().map(|(k, v)| json!({"key": k, "value": b64(v)})).collect::<Vec<_>>(),
    });
    let r = c
        .post(ports.url(&format!("/api/v1/{NS}/kv/batch")))
        .json(&body)
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

async fn start_ready(n: &mut NodeProcess, ports: Ports, c: &Client) {
    n.start().expect("start");
    n.wait_http_ok(c, &ports.url("/readyz"), Duration::from_secs(30))
        .await
        .expect("ready");
}

/// Writes the fixture: `graceful` (all data, stopped by SIGTERM: flushed to the tree, durable
/// bound = last LSN) and `crashed` (plus `TAIL` writes only in the WAL, SIGKILLed).
async fn write_fixtures(root: &Path) -> (PathBuf, PathBuf) {
    let c = Client::new();
    let dir = root.join("fixture");
    let (mut n, ports) = node(&dir);
    start_ready(&mut n, ports, &c).await;
    let all: Vec<(String, Vec<u8>)> = expected(false).into_iter().collect();
    for chunk in all.chunks(150) {
        put_batch(&c, ports, chunk).await;
    }
    n.terminate(Duration::from_secs(30))
        .expect("stop")
        .expect("ran");
    let graceful = root.join("graceful");
    copy_dir(&dir, &graceful);
    // The tail: one batch bigger than a segment, so it opens a segment of its own.
    let (mut n, ports) = node(&dir);
    start_ready(&mut n, ports, &c).await;
    let tail: Vec<(String, Vec<u8>)> = (0..TAIL)
        .map(|i| (format!("tail{i:03}"), tail_value(i)))
        .collect();
    put_batch(&c, ports, &tail).await;
    n.kill();
    let crashed = root.join("crashed");
    copy_dir(&dir, &crashed);
    (graceful, crashed)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

fn ns_dir(data: &Path) -> PathBuf {
    data.join("data").join(NS)
}

fn wal_segments(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(ns_dir(data).join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

// ---------- finding B+Tree pages by their own header ----------

fn u16_at(b: &[u8], o: usize) -> u64 {
    u16::from_le_bytes([b[o], b[o + 1]]) as u64
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

const T_BRANCH: u8 = 1;
const T_LEAF: u8 = 2;

/// Pages of the newest committed tree: (leaves, branches, overflow run starts).
struct TreePages {
    leaves: Vec<u64>,
    branches: Vec<u64>,
    overflow: Vec<u64>,
}

fn tree_pages(tree: &[u8]) -> TreePages {
    let meta = |slot: u64| {
        let m = &tree[(slot * PAGE) as usize..];
        (&m[0..8] == b"UNIBTRE1" && u32_at(m, 80) == crc32c::crc32c(&m[..80]))
            .then(|| (u64_at(m, 16), u64_at(m, 24)))
    };
    let (_, root) = [meta(0), meta(1)]
        .into_iter()
        .flatten()
        .max()
        .expect("a valid meta");
    let mut out = TreePages {
        leaves: vec![],
        branches: vec![],
        overflow: vec![],
    };
    let mut stack = vec![root];
    while let Some(pg) = stack.pop() {
        let p = &tree[(pg * PAGE) as usize..((pg + 1) * PAGE) as usize];
        let n = u16_at(p, 6) as usize;
        match p[4] {
            T_BRANCH => {
                out.branches.push(pg);
                stack.push(u64_at(p, 16));
                for i in 0..n {
                    let off = u16_at(p, 24 + 6 * i) as usize;
                    stack.push(u64_at(p, off + 2));
                }
            }
            T_LEAF => {
                out.leaves.push(pg);
                for i in 0..n {
                    let off = u16_at(p, 16 + 6 * i) as usize;
                    let klen = u16_at(p, off) as usize;
                    if p[off + 2] & 1 != 0 {
                        out.overflow.push(u64_at(p, off + 7 + klen));
                    }
                }
            }
            t => panic!("page {pg} has type {t}"),
        }
    }
    out
}

// ---------- damage ----------

#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Flip one bit at this offset.
    Flip(u64),
    /// Truncate to half the length.
    Truncate,
    /// Overwrite every byte with zero.
    Zero,
}

fn damage(path: &Path, d: Damage) {
    let mut b = std::fs::read(path).expect("read");
    match d {
        Damage::Flip(off) => b[off as usize] ^= 0x10,
        Damage::Truncate => b.truncate(b.len() / 2),
        Damage::Zero => b.iter_mut().for_each(|x| *x = 0),
    }
    std::fs::write(path, b).expect("write");
}

// ---------- outcomes ----------

#[derive(Debug)]
enum Outcome {
    /// Started; keys read back correctly, and `failed` keys answered 5xx naming the file.
    Served { failed: usize },
    /// Refused to start; the log names the file.
    Refused,
}

/// Starts the node on `data` and checks the contract; `file` is the damaged file's name.
/// Violations are collected in `bad` (so one run lists every failing case).
async fn run_case(
    name: &str,
    data: &Path,
    file: &str,
    want: &BTreeMap<String, Vec<u8>>,
    bad: &mut Vec<String>,
) -> Outcome {
    let c = Client::new();
    let (mut n, ports) = node(data);
    n.start().expect("spawn");
    let started = n
        .wait_http_ok(&c, &ports.url("/readyz"), Duration::from_secs(20))
        .await;
    if let Err(e) = started {
        let msg = e.to_string();
        if !msg.contains(file) {
            bad.push(format!(
                "{name}: refused to start without naming {file}:\n{msg}"
            ));
        }
        return Outcome::Refused;
    }
    let results: Vec<(String, u16, Value)> = futures::stream::iter(want.keys().cloned())
        .map(|k| {
            let c = c.clone();
            let url = ports.url(&format!("/api/v1/{NS}/kv/{k}"));
            async move {
                let r = c.get(url).send().await.expect("get");
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                (k, status, v)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut failed = 0;
    let (mut wrong, mut lost, mut unnamed) = (Vec::new(), Vec::new(), Vec::new());
    for (k, status, v) in results {
        match status {
            200 => {
                if unb64(v["value"].as_str().unwrap_or_default()) != want[&k] {
                    wrong.push(k);
                }
            }
            500..=599 => {
                if !v["error"].as_str().unwrap_or_default().contains(file) {
                    unnamed.push(format!("{k}: {v}"));
                }
                failed += 1;
            }
            s => lost.push(format!("{k} ({s})")),
        }
    }
    for (what, list) in [
        ("served wrong bytes", &wrong),
        ("lost acknowledged writes (not 200, not 5xx)", &lost),
        ("answered 5xx without naming the file", &unnamed),
    ] {
        if !list.is_empty() {
            bad.push(format!(
                "{name}: {} keys {what}, e.g. {:?}",
                list.len(),
                &list[..list.len().min(3)]
            ));
        }
    }
    if failed > 0 {
        let st: Value = c
            .get(ports.url(&format!("/api/v1/{NS}/stats")))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        if !st["degraded"].as_str().is_some_and(|d| d.contains(file)) {
            bad.push(format!(
                "{name}: /stats does not show the namespace degraded: {st}"
            ));
        }
        let m = c
            .get(ports.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let ready: Value = c
            .get(ports.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        if !ready["degraded"][NS]
            .as_str()
            .is_some_and(|d| d.contains(file))
        {
            bad.push(format!(
                "{name}: /readyz does not list the namespace as degraded: {ready}"
            ));
        }
        let metric = format!("unisondb_checksum_failures_total{{namespace=\"{NS}\"}}");
        if !m.contains(&metric) {
            bad.push(format!("{name}: metric {metric} missing"));
        }
    }
    n.kill();
    Outcome::Served { failed }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_damage_is_detected_or_harmless() {
    let started = std::time::Instant::now();
    let root = tempfile::tempdir().expect("tempdir");
    let (graceful, crashed) = write_fixtures(root.path()).await;
    let segs = wal_segments(&graceful);
    assert!(
        segs.len() >= 5,
        "need several WAL segments, got {}",
        segs.len()
    );
    let tree_path = ns_dir(&graceful).join("tree.db");
    let pages = tree_pages(&std::fs::read(&tree_path).expect("tree"));
    assert!(!pages.branches.is_empty() && !pages.overflow.is_empty());
    let want = expected(false);

    // (case, file relative to the namespace dir, damage, expected outcome: true = refuse)
    let mut cases: Vec<(String, PathBuf, Damage, Option<bool>)> = Vec::new();
    let picks = [
        ("first", 0),
        ("middle", segs.len() / 2),
        ("last", segs.len() - 1),
    ];
    for (which, i) in picks {
        let rel = Path::new("wal").join(segs[i].file_name().expect("name"));
        let len = std::fs::metadata(&segs[i]).expect("meta").len();
        // Every WAL case refuses: records below the durable bound (= last LSN after a clean
        // stop) are never truncated away, and damage before the end is never skipped.
        cases.push((
            format!("wal {which}: flip"),
            rel.clone(),
            Damage::Flip(len / 2),
            Some(true),
        ));
        cases.push((
            format!("wal {which}: truncate"),
            rel.clone(),
            Damage::Truncate,
            Some(true),
        ));
        cases.push((format!("wal {which}: zero"), rel, Damage::Zero, Some(true)));
    }
    let leaf = pages.leaves[pages.leaves.len() / 2];
    // a non-root branch if there is one (so part of the tree stays readable)
    let branch = *pages.branches.last().expect("branch");
    let ov = pages.overflow[0];
    let tree = PathBuf::from("tree.db");
    // Damaged tree pages: the node may start (reads of the damaged pages fail with 5xx) or
    // refuse (if start-up touches them); wrong bytes or 404s fail either way.
    cases.push((
        "leaf page".into(),
        tree.clone(),
        Damage::Flip(leaf * PAGE + PAGE - 3),
        None,
    ));
    cases.push((
        "branch page".into(),
        tree.clone(),
        Damage::Flip(branch * PAGE + PAGE - 3),
        None,
    ));
    cases.push((
        "overflow page".into(),
        tree.clone(),
        Damage::Flip(ov * PAGE + 2000),
        None,
    ));
    // A damaged meta page falls back to the other one; the WAL replays the difference.
    cases.push(("meta 0".into(), tree.clone(), Damage::Flip(20), Some(false)));
    cases.push(("meta 1".into(), tree, Damage::Flip(PAGE + 20), Some(false)));

    let mut report = Vec::new();
    let mut bad = Vec::new();
    for (i, (name, rel, d, refuse)) in cases.into_iter().enumerate() {
        let data = root.path().join(format!("case{i}"));
        copy_dir(&graceful, &data);
        let path = ns_dir(&data).join(&rel);
        damage(&path, d);
        let file = rel.file_name().and_then(|f| f.to_str()).expect("file");
        let out = run_case(&name, &data, file, &want, &mut bad).await;
        match (&out, refuse) {
            (Outcome::Refused, Some(false)) => {
                bad.push(format!("{name}: should start and serve everything"))
            }
            (Outcome::Served { failed }, Some(false)) if *failed > 0 => bad.push(format!(
                "{name}: every key should read back, {failed} failed"
            )),
            (Outcome::Served { .. }, Some(true)) => {
                bad.push(format!("{name}: should refuse to start"))
            }
            (Outcome::Served { failed: 0 }, None) => {
                bad.push(format!("{name}: damage went unnoticed by reads"))
            }
            _ => {}
        }
        report.push(format!("{name}: {out:?}"));
        let _ = std::fs::remove_dir_all(&data);
    }

    // The reported bug: after a crash, a whole last segment zeroed (longer than its header, so
    // not creation debris) used to be deleted and its acknowledged writes vanished.
    let segs = wal_segments(&crashed);
    let last = segs.last().expect("segment").clone();
    let want_tail = expected(true);
    let data = root.path().join("crash-zero-last");
    copy_dir(&crashed, &data);
    let rel = Path::new("wal").join(last.file_name().expect("name"));
    damage(&ns_dir(&data).join(&rel), Damage::Zero);
    let file = rel.file_name().and_then(|f| f.to_str()).expect("file");
    let out = run_case(
        "crash, last segment zeroed",
        &data,
        file,
        &want_tail,
        &mut bad,
    )
    .await;
    report.push(format!("crash, last segment zeroed: {out:?}"));
    // And the undamaged crash copy serves everything, tail included.
    let out = run_case("crash, undamaged", &crashed, "-", &want_tail, &mut bad).await;
    if !matches!(out, Outcome::Served { failed: 0 }) {
        bad.push(format!("crash, undamaged: {out:?}"));
    }

    eprintln!(
        "corruption matrix ({:.1}s):\n  {}",
        started.elapsed().as_secs_f64(),
        report.join("\n  ")
    );
    assert!(
        bad.is_empty(),
        "contract violations:\n  {}",
        bad.join("\n  ")
    );
}
