//! Backups, WAL archiving and point-in-time restore through a real S3-compatible server (`moto` in
//! server mode, from the e2e venv; see docs/BACKUP.md) on loopback, with real `unisondb` processes:
//! a base backup into the store under a write load, restores into fresh directories (whole, to
//! random LSNs, to a time) compared key by key with what the hub acknowledged; SIGKILLs while the
//! WAL is being archived leave no gap; a flipped byte in a stored object is refused by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::Rng;
use reqwest::Client;
use serde_json::{json, Value};
use unisondb_testkit::{
    call, free_port, small_node, state_at, KvLoad, MotoS3, NodeProcess, Write,
    S3_ACCESS_KEY as ACCESS_KEY, S3_SECRET_KEY as SECRET_KEY,
};

const BIN: &str = env!("CARGO_BIN_EXE_unisondb");
const KEYS: u64 = 40;
const BUCKET: &str = "unisondb-test";
const PREFIX: &str = "hubs/h1";

/// The test kit's `moto_server`, with the bucket these tests use and a signed client of it.
struct S3(MotoS3);

impl S3 {
    fn start() -> S3 {
        S3(MotoS3::start().expect("moto_server"))
    }

    fn endpoint(&self) -> String {
        self.0.endpoint()
    }

    async fn ready_with_bucket(&self) {
        self.0.create_bucket(BUCKET).await.expect("bucket");
    }

    /// A signed client of the bucket (the `object_store` crate directly, not the node's wrapper).
    fn client(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap()
    }

    /// Keys under `prefix`.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let metas: Vec<object_store::ObjectMeta> = self
            .client()
            .list(Some(&object_store::path::Path::from(prefix)))
            .try_collect()
            .await
            .unwrap();
        metas.into_iter().map(|m| m.location.to_string()).collect()
    }

    /// Flips one byte of an object in place (the damage a restore must refuse).
    async fn flip_byte(&self, key: &str, at: usize) {
        use object_store::ObjectStore;
        let c = self.client();
        let path = object_store::path::Path::from(key);
        let mut body = c.get(&path).await.unwrap().bytes().await.unwrap().to_vec();
        let at = at.min(body.len() - 1);
        body[at] ^= 0x20;
        c.put(&path, body.into()).await.unwrap();
    }
}

fn credentials(dir: &Path) -> PathBuf {
    MotoS3::credentials_file(dir).expect("credentials file")
}

/// The KV load of these tests (500-byte values over `KEYS` keys) on the node at `http`.
fn load(http: u16) -> KvLoad {
    KvLoad::new(http, KEYS, 500)
}

fn node(dir: &Path, name: &str, s3: Option<&S3>) -> (NodeProcess, u16) {
    node_keeping(dir, name, s3, 0)
}

/// A node archiving into `s3` (if any) that keeps `retain` base backups in the store.
fn node_keeping(dir: &Path, name: &str, s3: Option<&S3>, retain: u32) -> (NodeProcess, u16) {
    let archive = s3.map(|s3| {
        format!(
            "archive:\n  enabled: true\n  endpoint: {}\n  bucket: {BUCKET}\n  prefix: {PREFIX}\n  \
             path_style: true\n  credentials_file: {}\n  max_delay_seconds: 1\n  retain_base_backups: {retain}\n",
            s3.endpoint(),
            credentials(dir).display()
        )
    });
    let (p, http) = small_node(BIN, dir, name, archive.as_deref().unwrap_or(""));
    // Local WAL retention as small as a segment: only archiving keeps segments around.
    (p.env("UNISONDB_WAL_RETENTION_MAX_BYTES", "65536"), http)
}

async fn start(p: &mut NodeProcess, http: u16) {
    p.start_ready(&format!("http://127.0.0.1:{http}/readyz"))
        .await
        .unwrap();
}

type Writes = Vec<Write>;

/// Waits until the archiver reports `lsn` archived (`unisondb_archive_archived_lsn`).
async fn archived(http: u16, lsn: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    while Instant::now() < deadline {
        let text = Client::new()
            .get(format!("http://127.0.0.1:{http}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        seen = text
            .lines()
            .find_map(|l| l.strip_prefix("unisondb_archive_archived_lsn{namespace=\"default\"} "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if seen >= lsn {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("archived LSN stayed at {seen}, expected {lsn}");
}

fn restore_cmd(s3: &S3, data: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("restore")
        .args([
            "-d",
            data.to_str().unwrap(),
            "-n",
            "default",
            "--force",
            "--json",
        ])
        .args(["--from-object-store", &format!("s3://{BUCKET}/{PREFIX}")])
        .args(["--endpoint", &s3.endpoint(), "--path-style"])
        .args(extra)
        // Credentials from the environment here (the node uses its credentials file).
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .unwrap()
}

/// Restores from the store into a fresh node directory, starts it, returns its contents and LSN.
async fn restored(
    s3: &S3,
    root: &Path,
    name: &str,
    extra: &[&str],
) -> (BTreeMap<String, String>, u64) {
    let dir = root.join(name);
    let out = restore_cmd(s3, &dir.join("data"), extra);
    assert!(
        out.status.success(),
        "restore {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (mut p, http) = node(&dir, name, None);
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_backup_in_the_store_and_point_in_time_restore() {
    let s3 = S3::start();
    s3.ready_with_bucket().await;
    let root = tempfile::tempdir().unwrap();
    let (mut hub, http) = node(&root.path().join("hub"), "hub", Some(&s3));
    start(&mut hub, http).await;
    let c = Client::new();
    let url = |p: &str| format!("http://127.0.0.1:{http}/api/v1/default/{p}");

    let mut writes = load(http).write_all(0, 100).await.expect("writes");
    // A base backup into the store while a writer keeps going.
    let writer = tokio::spawn(async move { load(http).write_all(100, 200).await.expect("writes") });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (st, b) = call(
        c.post(url("backups"))
            .json(&json!({"target": "objectStore"})),
    )
    .await
    .expect("answer");
    assert_eq!(st, 200, "{b}");
    writes.extend(writer.await.unwrap());
    let m = &b["manifest"];
    let (s, backup_last) = (
        m["snapshot"]["lsn"].as_u64().unwrap(),
        m["wal"]["lastLsn"].as_u64().unwrap(),
    );
    assert!(s >= 100 && backup_last >= s, "{m}");
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!(
        b["location"],
        format!("s3://{BUCKET}/{PREFIX}/default/base/{id}/"),
        "{b}"
    );
    let (st, listed) = call(c.get(url("backups?target=objectStore")))
        .await
        .expect("answer");
    assert_eq!(st, 200, "{listed}");
    assert_eq!(listed["backups"][0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed["backups"].as_array().unwrap().len(), 1, "{listed}");
    // The client command takes one too.
    let out = Command::new(BIN)
        .args([
            "backup",
            "--url",
            &format!("http://127.0.0.1:{http}"),
            "--object-store",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Two moments to restore to by time, each between two runs of writes.
    let mut times = Vec::new();
    for first in [300, 375] {
        tokio::time::sleep(Duration::from_millis(30)).await;
        times.push(now_ms());
        tokio::time::sleep(Duration::from_millis(30)).await;
        writes.extend(load(http).write_all(first, 75).await.expect("writes"));
    }
    let last = writes.last().unwrap().0;
    archived(http, last).await;
    // The last write acknowledged before each moment (write numbers below 300 / 375).
    let at = |before: u64| {
        writes
            .iter()
            .take_while(|(_, _, v)| v[..6].parse::<u64>().unwrap() < before)
            .last()
            .unwrap()
            .0
    };
    let at_t = [at(300), at(375)];

    // Whole: the hub's state at its last LSN.
    let (got, lsn) = restored(&s3, root.path(), "r-all", &[]).await;
    assert_eq!(lsn, last);
    assert_eq!(got, state_at(&writes, last));
    assert_eq!(got, load(http).dump().await.expect("dump"));
    // The base backup alone, by id, at its own last LSN.
    let (got, lsn) = restored(
        &s3,
        root.path(),
        "r-id",
        &["--backup-id", &id, "--to-lsn", &backup_last.to_string()],
    )
    .await;
    assert_eq!((lsn, got), (backup_last, state_at(&writes, backup_last)));
    // Random LSNs past the backup (base + archived WAL), and a time.
    let mut rng = rand::thread_rng();
    for i in 0..5 {
        let target = rng.gen_range(s..=last);
        let (got, lsn) = restored(
            &s3,
            root.path(),
            &format!("r-lsn{i}"),
            &["--to-lsn", &target.to_string()],
        )
        .await;
        assert_eq!(lsn, target);
        assert_eq!(got, state_at(&writes, target), "to LSN {target}");
    }
    for (i, (t, want)) in times.iter().zip(at_t).enumerate() {
        let (got, lsn) = restored(
            &s3,
            root.path(),
            &format!("r-time{i}"),
            &["--to-time", &t.to_string()],
        )
        .await;
        assert_eq!((lsn, got), (want, state_at(&writes, want)), "to time {t}");
    }
    // Before every base backup: nothing to start from.
    let out = restore_cmd(&s3, &root.path().join("r-early/data"), &["--to-lsn", "5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no complete base backup"));
    // --if-empty leaves a namespace with data alone.
    let out = restore_cmd(
        &s3,
        &root.path().join("r-all/data"),
        &["--if-empty", "--to-lsn", "5"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("already holds data"));

    // A flipped byte in an archived WAL object, then in a base snapshot: refused, naming it.
    let wal_keys = s3.keys(&format!("{PREFIX}/default/wal/")).await;
    let victim = wal_keys.last().unwrap().clone();
    s3.flip_byte(&victim, 200).await;
    let out = restore_cmd(&s3, &root.path().join("r-bad1/data"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("s3://{BUCKET}/{victim}")) && err.contains("corrupt"),
        "{err}"
    );
    assert!(
        !root.path().join("r-bad1/data/default").exists(),
        "nothing touched"
    );
    let snap = format!("{PREFIX}/default/base/{id}/snapshot.bin");
    s3.flip_byte(&snap, 1000).await;
    let out = restore_cmd(
        &s3,
        &root.path().join("r-bad2/data"),
        &["--backup-id", &id, "--to-lsn", &backup_last.to_string()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("s3://{BUCKET}/{snap}")) && err.contains("corrupt"),
        "{err}"
    );
    hub.terminate(Duration::from_secs(10)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_archiving_leaves_no_gap() {
    let s3 = S3::start();
    s3.ready_with_bucket().await;
    let root = tempfile::tempdir().unwrap();
    let (mut hub, http) = node_keeping(&root.path().join("hub"), "hub", Some(&s3), 2);
    start(&mut hub, http).await;
    let mut writes = load(http).write_all(0, 50).await.expect("writes");
    let (st, b) = call(
        Client::new()
            .post(format!("http://127.0.0.1:{http}/api/v1/default/backups"))
            .json(&json!({"target": "objectStore"})),
    )
    .await
    .expect("answer");
    assert_eq!(st, 200, "{b}");
    let mut rng = rand::thread_rng();
    // Objects go up every 64 KiB (~90 writes) and every second: a kill lands mid-archiving.
    for round in 0..10u64 {
        let writer = tokio::spawn(async move {
            load(http)
                .write_until_refused(50 + round * 800, 800)
                .await
                .expect("writes")
        });
        tokio::time::sleep(Duration::from_millis(rng.gen_range(250..900))).await;
        hub.kill();
        // The writer sees its connection fail and stops.
        writes.extend(writer.await.unwrap());
        start(&mut hub, http).await;
    }
    // Everything the hub holds now is acknowledged or not, it is the truth to compare with.
    writes.extend(load(http).write_all(9000, 20).await.expect("writes"));
    let (_, off) =
        call(Client::new().get(format!("http://127.0.0.1:{http}/api/v1/default/offset")))
            .await
            .expect("answer");
    let last = off["lsn"].as_u64().unwrap();
    archived(http, last).await;
    // No gap, no overlap: the objects' LSN ranges tile 1..=last.
    let keys = s3.keys(&format!("{PREFIX}/default/wal/")).await;
    let mut ranges: Vec<(u64, u64)> = keys
        .iter()
        .map(|k| {
            let name = k.rsplit('/').next().unwrap().trim_end_matches(".wal");
            let (a, b) = name.split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    ranges.sort();
    assert_eq!(ranges.first().unwrap().0, 1, "{keys:?}");
    for w in ranges.windows(2) {
        assert_eq!(w[1].0, w[0].1 + 1, "gap or overlap in {keys:?}");
    }
    assert_eq!(ranges.last().unwrap().1, last);
    // Two more base backups: the first one (older than the 2 kept) goes, with the WAL only it needed.
    let c = Client::new();
    let mut kept = Vec::new();
    for _ in 0..2 {
        writes.extend(load(http).write_all(9100, 10).await.expect("writes"));
        let (st, b) = call(
            c.post(format!("http://127.0.0.1:{http}/api/v1/default/backups"))
                .json(&json!({"target": "objectStore"})),
        )
        .await
        .expect("answer");
        assert_eq!(st, 200, "{b}");
        kept.push(b);
    }
    let (_, listed) = call(c.get(format!(
        "http://127.0.0.1:{http}/api/v1/default/backups?target=objectStore"
    )))
    .await
    .expect("answer");
    let ids: Vec<&Value> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["id"])
        .collect();
    assert_eq!(ids, [&kept[0]["id"], &kept[1]["id"]], "{listed}");
    let floor = kept[0]["manifest"]["snapshot"]["lsn"].as_u64().unwrap();
    let wal_left = s3.keys(&format!("{PREFIX}/default/wal/")).await;
    assert!(
        wal_left.iter().all(|k| !keys.contains(k) || {
            let name = k.rsplit('/').next().unwrap().trim_end_matches(".wal");
            name.split_once('-').unwrap().1.parse::<u64>().unwrap() > floor
        }),
        "WAL below {floor} kept: {wal_left:?}"
    );
    assert!(wal_left.len() < keys.len(), "{wal_left:?}");
    let (_, off) =
        call(Client::new().get(format!("http://127.0.0.1:{http}/api/v1/default/offset")))
            .await
            .expect("answer");
    let last = off["lsn"].as_u64().unwrap();
    archived(http, last).await;
    let hub_state = load(http).dump().await.expect("dump");
    hub.terminate(Duration::from_secs(10)).unwrap();
    let (got, lsn) = restored(&s3, root.path(), "r", &[]).await;
    assert_eq!(lsn, last);
    assert_eq!(got, hub_state);
    // Nothing acknowledged was lost across the kills.
    assert!(writes.iter().all(|(l, _, _)| *l <= last));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unarchived_wal_outlives_local_retention_and_a_crash() {
    // The store is up but the bucket is missing: nothing can be archived yet.
    let s3 = S3::start();
    let root = tempfile::tempdir().unwrap();
    let (mut hub, http) = node(&root.path().join("hub"), "hub", Some(&s3));
    start(&mut hub, http).await;
    // Far more than the local WAL retention (64 KiB) keeps once flushed.
    let writes = load(http).write_all(0, 600).await.expect("writes");
    let last = writes.last().unwrap().0;
    hub.kill();
    s3.ready_with_bucket().await;
    start(&mut hub, http).await;
    archived(http, last).await;
    let keys = s3.keys(&format!("{PREFIX}/default/wal/")).await;
    assert!(
        keys.first()
            .is_some_and(|k| k.contains(&format!("/{:020}-", 1))),
        "the archive must start at LSN 1: {keys:?}"
    );
    hub.terminate(Duration::from_secs(10)).unwrap();
}

/// A relayer following the bucket (and, with `upstream`, switching to that gRPC address).
fn store_relayer(dir: &Path, name: &str, s3: &S3, upstream: Option<u16>) -> (NodeProcess, u16) {
    let http = free_port();
    let up = upstream.map_or(String::new(), |p| {
        format!("  upstream: http://127.0.0.1:{p}\n")
    });
    let yaml = format!(
        "server:\n  mode: relayer\n  data_dir: {}\n  namespaces: [default]\n\
         http:\n  listen: 127.0.0.1:{http}\ngrpc:\n  listen: 127.0.0.1:0\n\
         notify:\n  bind: tcp://127.0.0.1:0\nreplication:\n{up}  object_store:\n    endpoint: {}\n    \
         bucket: {BUCKET}\n    prefix: {PREFIX}\n    path_style: true\n    credentials_file: {}\n    \
         poll_interval_ms: 200\n",
        dir.join("data").display(),
        s3.endpoint(),
        credentials(dir).display()
    );
    (
        NodeProcess::new(BIN, name, dir, yaml).dump_log_on_panic(),
        http,
    )
}

async fn lsn_of(http: u16) -> u64 {
    let (_, off) =
        call(Client::new().get(format!("http://127.0.0.1:{http}/api/v1/default/offset")))
            .await
            .expect("answer");
    off["lsn"].as_u64().unwrap_or(0)
}

async fn reaches(http: u16, lsn: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    while Instant::now() < deadline {
        seen = lsn_of(http).await;
        if seen >= lsn {
            assert_eq!(seen, lsn, "{what} went past the hub");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} stayed at LSN {seen}, expected {lsn}");
}

/// A value of `/metrics` for the `default` namespace.
async fn metric(http: u16, name: &str) -> Option<i64> {
    let text = Client::new()
        .get(format!("http://127.0.0.1:{http}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("{name}{{namespace=\"default\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
}

async fn mode_becomes(http: u16, mode: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = None;
    while Instant::now() < deadline {
        seen = metric(http, "unisondb_objstore_follow_mode").await;
        if seen == Some(mode) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: unisondb_objstore_follow_mode stayed {seen:?}, expected {mode}");
}

/// The node's change feed replayed from `from` through `to` (`/watch?from_lsn=`), as (LSN, key);
/// keeps reading a moment after `to` so a record logged twice would show.
async fn feed(http: u16, from: u64, to: u64) -> Vec<(u64, String)> {
    let mut r = Client::new()
        .get(format!(
            "http://127.0.0.1:{http}/api/v1/default/watch?from_lsn={from}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (mut buf, mut out) = (String::new(), Vec::new());
    let mut until = Instant::now() + Duration::from_secs(20);
    let mut reached = false;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let Ok(chunk) = tokio::time::timeout(left, r.chunk()).await else {
            break;
        };
        let Some(chunk) = chunk.unwrap() else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find("\n\n") {
            let event: String = buf.drain(..i + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let v: Value = serde_json::from_str(data.trim()).unwrap();
            let key = String::from_utf8(B64.decode(v["key"].as_str().unwrap()).unwrap()).unwrap();
            let lsn = v["lsn"].as_u64().unwrap();
            out.push((lsn, key));
            if lsn >= to && !reached {
                reached = true;
                until = Instant::now() + Duration::from_millis(500);
            }
        }
    }
    assert!(reached, "the feed ended before LSN {to}: {out:?}");
    out
}

/// Every LSN `from..=to` exactly once, in order, each with the key the hub acknowledged for it.
fn assert_once_each(got: &[(u64, String)], from: u64, to: u64, writes: &Writes) {
    let lsns: Vec<u64> = got.iter().map(|(l, _)| *l).collect();
    let want: Vec<u64> = (from..=to).collect();
    assert_eq!(lsns, want, "gap or duplicate in the relayer's change feed");
    let by_lsn: BTreeMap<u64, &str> = writes.iter().map(|(l, k, _)| (*l, k.as_str())).collect();
    for (l, k) in got {
        if let Some(want) = by_lsn.get(l) {
            assert_eq!(k, want, "LSN {l}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayers_follow_the_store_and_one_switches_to_grpc() {
    let s3 = S3::start();
    s3.ready_with_bucket().await;
    let root = tempfile::tempdir().unwrap();
    let (mut hub, http) = node(&root.path().join("hub"), "hub", Some(&s3));
    let grpc = free_port();
    let cfg = hub.config().replace(
        "grpc:\n  listen: 127.0.0.1:0",
        &format!("grpc:\n  listen: 127.0.0.1:{grpc}"),
    );
    hub.set_config(cfg);
    start(&mut hub, http).await;
    let mut writes = load(http).write_all(0, 150).await.expect("writes");
    // A base backup the relayers bootstrap from, then more WAL after it.
    let (st, b) = call(
        Client::new()
            .post(format!("http://127.0.0.1:{http}/api/v1/default/backups"))
            .json(&json!({"target": "objectStore"})),
    )
    .await
    .expect("answer");
    assert_eq!(st, 200, "{b}");
    let snap = b["manifest"]["snapshot"]["lsn"].as_u64().unwrap();
    writes.extend(load(http).write_all(150, 150).await.expect("writes"));
    // 20 relayers with only the store to follow, started together.
    let mut relayers = Vec::new();
    for i in 0..20 {
        let (mut r, rh) = store_relayer(
            &root.path().join(format!("r{i}")),
            &format!("r{i}"),
            &s3,
            None,
        );
        r.start().unwrap();
        relayers.push((r, rh));
    }
    // The hub's gRPC port is closed for now: this one follows the store until it can switch.
    hub.terminate(Duration::from_secs(10)).unwrap();
    let last = {
        // The graceful stop uploaded the tail: everything durable is in the store.
        let keys = s3.keys(&format!("{PREFIX}/default/wal/")).await;
        let k = keys.last().unwrap();
        k.rsplit('-')
            .next()
            .unwrap()
            .trim_end_matches(".wal")
            .parse::<u64>()
            .unwrap()
    };
    let (mut sw, swh) = store_relayer(&root.path().join("sw"), "sw", &s3, Some(grpc));
    // Not ready (its gRPC upstream has never been in sync) but serving reads.
    sw.start().unwrap();
    let c = Client::new();
    for (r, rh) in relayers.iter().map(|(r, h)| (r, *h)).chain([(&sw, swh)]) {
        r.wait_http_ok(
            &c,
            &format!("http://127.0.0.1:{rh}/healthz"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    }
    reaches(swh, last, "the switching relayer (store)").await;
    let at_last = state_at(&writes, last);
    for (_, rh) in &relayers {
        reaches(*rh, last, "a store relayer").await;
        assert_eq!(
            load(*rh).dump().await.expect("dump"),
            at_last,
            "a store relayer's data"
        );
    }
    assert!(!sw.log().contains("switching to the gRPC upstream"));
    assert_eq!(
        metric(swh, "unisondb_objstore_follow_applied_lsn").await,
        Some(last as i64)
    );
    assert!(metric(swh, "unisondb_objstore_follow_objects_fetched_total").await > Some(0));
    mode_becomes(swh, 0, "before the hub is back").await;
    // The hub comes back: the switching relayer moves to gRPC and gets new writes at stream speed.
    start(&mut hub, http).await;
    mode_becomes(swh, 1, "after the hub is back").await;
    assert!(sw.log().contains("switching to the gRPC upstream"));
    writes.extend(load(http).write_all(300, 100).await.expect("writes"));
    let hub_last = lsn_of(http).await;
    reaches(swh, hub_last, "the switched relayer (gRPC)").await;
    let want = load(http).dump().await.expect("dump");
    assert_eq!(want, state_at(&writes, hub_last));
    assert_eq!(load(swh).dump().await.expect("dump"), want);
    // No gap and no duplicate across store → gRPC: its log holds each LSN once, with the hub's key.
    let got = feed(swh, snap + 1, hub_last).await;
    assert_once_each(&got, snap + 1, hub_last, &writes);
    archived(http, hub_last).await;
    for (r, rh) in &mut relayers {
        reaches(*rh, hub_last, "a store relayer").await;
        assert_eq!(load(*rh).dump().await.expect("dump"), want);
        r.terminate(Duration::from_secs(10)).unwrap();
    }
    assert!(
        sw.log().contains("bootstrapped from a base backup"),
        "{}",
        sw.log()
    );
    sw.terminate(Duration::from_secs(10)).unwrap();
    hub.terminate(Duration::from_secs(10)).unwrap();
}

/// Sets `grpc.listen` of a node's config to a fixed port.
fn on_grpc_port(p: &mut NodeProcess, port: u16) {
    let cfg = p.config().replace(
        "grpc:\n  listen: 127.0.0.1:0",
        &format!("grpc:\n  listen: 127.0.0.1:{port}"),
    );
    p.set_config(cfg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switched_relayer_falls_back_to_the_store_while_its_upstream_is_gone() {
    let s3 = S3::start();
    s3.ready_with_bucket().await;
    let root = tempfile::tempdir().unwrap();
    let (mut hub, http) = node(&root.path().join("hub"), "hub", Some(&s3));
    let hub_grpc = free_port();
    on_grpc_port(&mut hub, hub_grpc);
    start(&mut hub, http).await;
    let mut writes = load(http).write_all(0, 100).await.expect("writes");
    // mid: a plain gRPC relayer of the hub; leaf: follows the store, then mid, with a 1 s bound.
    let mid_http = free_port();
    let mid_grpc = free_port();
    let mid_dir = root.path().join("mid");
    let mut mid = NodeProcess::new(
        BIN,
        "mid",
        &mid_dir,
        format!(
            "server:\n  mode: relayer\n  data_dir: {}\n  namespaces: [default]\n\
             http:\n  listen: 127.0.0.1:{mid_http}\ngrpc:\n  listen: 127.0.0.1:{mid_grpc}\n\
             notify:\n  bind: tcp://127.0.0.1:0\nreplication:\n  upstream: http://127.0.0.1:{hub_grpc}\n",
            mid_dir.join("data").display()
        ),
    )
    .dump_log_on_panic();
    start(&mut mid, mid_http).await;
    let (mut leaf, lh) = store_relayer(&root.path().join("leaf"), "leaf", &s3, Some(mid_grpc));
    let cfg = leaf.config().replace(
        "poll_interval_ms: 200\n",
        "poll_interval_ms: 200\n    fallback_after_seconds: 1\n",
    );
    leaf.set_config(cfg);
    leaf.start().unwrap();
    let c = Client::new();
    leaf.wait_http_ok(
        &c,
        &format!("http://127.0.0.1:{lh}/healthz"),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    // Store first (the WAL is archived within a second), then mid.
    archived(http, writes.last().unwrap().0).await;
    mode_becomes(lh, 1, "leaf with mid up").await;
    writes.extend(load(http).write_all(100, 50).await.expect("writes"));
    reaches(lh, lsn_of(http).await, "leaf through mid").await;
    // mid dies; the hub keeps writing and archiving; leaf follows the store again.
    mid.kill();
    writes.extend(load(http).write_all(150, 100).await.expect("writes"));
    mode_becomes(lh, 0, "leaf with mid gone").await;
    assert!(leaf.log().contains("falling back to the object store"));
    let hub_last = lsn_of(http).await;
    archived(http, hub_last).await;
    reaches(lh, hub_last, "leaf from the store").await;
    assert_eq!(
        metric(lh, "unisondb_objstore_follow_applied_lsn").await,
        Some(hub_last as i64)
    );
    // mid returns: leaf switches back to gRPC and streams again.
    start(&mut mid, mid_http).await;
    mode_becomes(lh, 1, "leaf with mid back").await;
    writes.extend(load(http).write_all(250, 50).await.expect("writes"));
    let hub_last = lsn_of(http).await;
    reaches(lh, hub_last, "leaf through mid again").await;
    let want = load(http).dump().await.expect("dump");
    assert_eq!(want, state_at(&writes, hub_last));
    assert_eq!(load(lh).dump().await.expect("dump"), want);
    // Store → gRPC → store → gRPC: every LSN once, none missing.
    let got = feed(lh, 1, hub_last).await;
    assert_once_each(&got, 1, hub_last, &writes);
    leaf.terminate(Duration::from_secs(10)).unwrap();
    mid.terminate(Duration::from_secs(10)).unwrap();
    hub.terminate(Duration::from_secs(10)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_go_up_as_multipart_uploads_and_come_back_whole() {
    let s3 = S3::start();
    s3.ready_with_bucket().await;
    let root = tempfile::tempdir().unwrap();
    let cfg = unisondb_config::ObjectStoreConfig {
        endpoint: s3.endpoint(),
        bucket: BUCKET.into(),
        prefix: PREFIX.into(),
        credentials_file: credentials(root.path()).display().to_string(),
        ..Default::default()
    };
    let store = unisondb::objstore::Store::from_config(&cfg).unwrap();
    // 20 MiB + a bit: three parts of 8 MiB at most.
    let data: Vec<u8> = (0..(20u32 << 20) + 12345)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = root.path().join("big.bin");
    std::fs::write(&file, &data).unwrap();
    let n = store.put_file("big/one.bin", &file).await.unwrap();
    assert_eq!(n, data.len() as u64);
    // A multipart upload's ETag is `"<md5 of the part md5s>-<parts>"`.
    let head = {
        use object_store::ObjectStore;
        s3.client()
            .head(&object_store::path::Path::from(format!(
                "{PREFIX}/big/one.bin"
            )))
            .await
            .unwrap()
    };
    let etag = head.e_tag.unwrap_or_default();
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "not a 3-part upload: {etag}"
    );
    let back = store.get("big/one.bin").await.unwrap();
    assert!(back[..] == data[..], "the object differs from the file");
    let listed = store.list("big/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].key.as_str(), listed[0].size),
        ("big/one.bin", data.len() as u64)
    );
    // An absent object is an error naming it.
    let err = store.get("big/none.bin").await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("s3://{BUCKET}/{PREFIX}/big/none.bin")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_base_backup_uploads_never_lists_an_incomplete_one() {
    let s3 = S3::start();
    s3.ready_with_bucket().await;
    let root = tempfile::tempdir().unwrap();
    let (mut hub, http) = node(&root.path().join("hub"), "hub", Some(&s3));
    start(&mut hub, http).await;
    let base = format!("{PREFIX}/default/base/");
    let mut interrupted = 0;
    let mut writes = Writes::new();
    for round in 0..10u64 {
        writes.extend(load(http).write_all(round * 60, 60).await.expect("writes"));
        let before = s3.keys(&base).await;
        let post = tokio::spawn(
            Client::new()
                .post(format!("http://127.0.0.1:{http}/api/v1/default/backups"))
                .json(&json!({"target": "objectStore"}))
                .send(),
        );
        // Kill as soon as the first object of the new backup is in the store.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = s3.keys(&base).await;
            if now.len() > before.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the backup never reached the store"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        hub.kill();
        let _ = post.await;
        let keys = s3.keys(&base).await;
        let dirs: std::collections::BTreeSet<&str> = keys
            .iter()
            .filter_map(|k| k.rsplit_once('/').map(|(d, _)| d))
            .collect();
        interrupted = dirs
            .iter()
            .filter(|d| !keys.contains(&format!("{d}/manifest.json")))
            .count();
        start(&mut hub, http).await;
        // Whatever the node lists is whole in the store: snapshot, WAL part and manifest.
        let (st, listed) = call(Client::new().get(format!(
            "http://127.0.0.1:{http}/api/v1/default/backups?target=objectStore"
        )))
        .await
        .expect("answer");
        assert_eq!(st, 200, "{listed}");
        for b in listed["backups"].as_array().unwrap() {
            let dir = format!("{base}{}", b["id"].as_str().unwrap());
            for f in ["snapshot.bin", "wal.bin", "manifest.json"] {
                assert!(
                    keys.contains(&format!("{dir}/{f}")),
                    "round {round}: listed backup without {f}: {keys:?}"
                );
            }
        }
        // The interrupted local staging copy is gone after the restart.
        let staging = root
            .path()
            .join("hub/data/backups/default/.objstore-staging");
        assert!(!staging.exists() || std::fs::read_dir(&staging).unwrap().next().is_none());
    }
    // Every listed backup is whole: it restores (its snapshot and WAL part, verified).
    let (st, listed) = call(Client::new().get(format!(
        "http://127.0.0.1:{http}/api/v1/default/backups?target=objectStore"
    )))
    .await
    .expect("answer");
    assert_eq!(st, 200, "{listed}");
    hub.terminate(Duration::from_secs(10)).unwrap();
    let backups = listed["backups"].as_array().unwrap();
    assert!(!backups.is_empty(), "{listed}");
    for (i, b) in backups.iter().enumerate() {
        let id = b["id"].as_str().unwrap();
        let to = b["manifest"]["wal"]["lastLsn"].to_string();
        let out = restore_cmd(
            &s3,
            &root.path().join(format!("r{i}/data")),
            &["--backup-id", id, "--to-lsn", &to],
        );
        assert!(
            out.status.success(),
            "listed backup {id} does not restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The newest complete one holds exactly what was acknowledged up to its last LSN.
    let newest = backups.last().unwrap();
    let to = newest["manifest"]["wal"]["lastLsn"].as_u64().unwrap();
    let (got, lsn) = restored(
        &s3,
        root.path(),
        "r-newest",
        &[
            "--backup-id",
            newest["id"].as_str().unwrap(),
            "--to-lsn",
            &to.to_string(),
        ],
    )
    .await;
    assert_eq!((lsn, got), (to, state_at(&writes, to)));
    eprintln!(
        "{} complete backups listed, {interrupted} interrupted uploads left unlisted",
        backups.len()
    );
}

/// The command a Kubernetes backup Job runs for a hub with `httpAuth` and `tls.http` (see the
/// operator's `backup/job.rs`), against a real node and store: `unisondb backup --object-store` over
/// https with `--ca-file`, the token from `UNISONDB_TOKEN` as a Secret gives it (trailing newline),
/// the answer in `--result-file` in the shape the operator parses; a wrong token leaves `error: ...`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_job_command_against_an_auth_guarded_https_hub() {
    const TOKEN: &str = "job-token";
    let s3 = S3::start();
    s3.ready_with_bucket().await;
    let root = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (crt, key) = (root.path().join("tls.crt"), root.path().join("tls.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.key_pair.serialize_pem()).unwrap();
    let (p, http) = node(&root.path().join("hub"), "hub", Some(&s3));
    let mut p = p
        .env("UNISONDB_HTTP_AUTH_TOKEN", TOKEN)
        .env("UNISONDB_HTTP_TLS_CERT_FILE", crt.to_str().unwrap())
        .env("UNISONDB_HTTP_TLS_KEY_FILE", key.to_str().unwrap());
    p.start().unwrap();
    let url = format!("https://localhost:{http}");
    let cli = |args: &[&str], token: &str| {
        Command::new(BIN)
            .args(args)
            .args(["--url", &url, "--ca-file", crt.to_str().unwrap()])
            .env("UNISONDB_TOKEN", token)
            .output()
            .unwrap()
    };
    // up once a put over https is acknowledged (connection refused or recovery: exit 2 or 5xx)
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli(&["kv", "put", "k0", "v0"], TOKEN).status.success() {
        assert!(
            Instant::now() < deadline,
            "the hub never answered over https"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 1..3 {
        let out = cli(&["kv", "put", &format!("k{i}"), "v"], TOKEN);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let result = root.path().join("termination-log");
    let r = result.to_str().unwrap();
    let job = [
        "backup",
        "--object-store",
        "--namespace",
        "default",
        "--result-file",
        r,
    ];
    let out = cli(&job, &format!("{TOKEN}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&result).unwrap();
    assert!(
        text.len() < 4096,
        "a termination message holds 4 KiB: {text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    let id = v["id"].as_str().unwrap();
    assert_eq!(
        v["location"],
        format!("s3://{BUCKET}/{PREFIX}/default/base/{id}/"),
        "{v}"
    );
    let m = &v["manifest"];
    assert_eq!(m["wal"]["lastLsn"], 3, "{v}");
    for n in [
        &m["snapshot"]["lsn"],
        &m["snapshot"]["bytes"],
        &m["wal"]["bytes"],
    ] {
        assert!(n.is_u64(), "{v}");
    }
    let stored = s3.keys(&format!("{PREFIX}/default/base/{id}")).await;
    assert!(
        stored.iter().any(|k| k.ends_with("manifest.json")),
        "{stored:?}"
    );

    let out = cli(&job, "wrong");
    assert_eq!(out.status.code(), Some(1));
    let text = std::fs::read_to_string(&result).unwrap();
    assert!(
        text.starts_with("error: ") && text.contains("401"),
        "{text}"
    );
    p.terminate(Duration::from_secs(10)).unwrap();
}
