//! ZeroMQ notifications: a Rust SUB and a pyzmq SUB receive the right topics, user keys (base64) and
//! LSNs, from a hub and from a relayer that replicates it (the relayer publishes what it applies).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use unisondb::db::Database;
use unisondb::engine::{EngineOptions, FsyncPolicy, Namespace};
use unisondb::notify::{self, NotifyConfig};
use unisondb::replication::relayer::{follow, FollowConfig};
use unisondb::replication::run::serve_on;
use unisondb::replication::{AckRegistry, ReplicationState};
use unisondb::storage::batch::WriteBatch;
use unisondb::storage::keys;

fn opts() -> EngineOptions {
    EngineOptions {
        fsync: FsyncPolicy::Never,
        ..EngineOptions::default()
    }
}

fn db(dir: &std::path::Path) -> Database {
    Database::open(dir, &["default".into(), "other".into()], &opts()).unwrap()
}

fn local_cfg() -> NotifyConfig {
    NotifyConfig {
        bind: "tcp://127.0.0.1:0".into(),
        high_water_mark: 1000,
        namespaces: Vec::new(),
    }
}

/// Writes: KV put "a/b" (a key with a slash), a row with two columns, a KV delete, and a write in
/// namespace "other" that a `default.` subscriber must not see. Returns the LSNs in "default".
fn write_sample(d: &Database) -> Vec<u64> {
    let ns: &Namespace = d.get("default").unwrap();
    let mut out = Vec::new();
    let mut b = WriteBatch::new();
    b.put(keys::kv_key(b"a/b"), b"1".to_vec());
    out.push(ns.write(b).unwrap().lsn);
    let mut other = WriteBatch::new();
    other.put(keys::kv_key(b"x"), b"y".to_vec());
    d.get("other").unwrap().write(other).unwrap();
    let mut b = WriteBatch::new();
    b.put(keys::row_cell_key(b"user:1", b"name"), b"ann".to_vec())
        .put(keys::row_cell_key(b"user:1", b"age"), b"3".to_vec());
    out.push(ns.write(b).unwrap().lsn);
    let mut b = WriteBatch::new();
    b.delete(keys::kv_key(b"a/b"));
    out.push(ns.write(b).unwrap().lsn);
    out
}

/// (topic, payload) the Rust SUB receives.
fn recv(sub: &zmq::Socket) -> (String, serde_json::Value) {
    let parts = sub
        .recv_multipart(0)
        .expect("notification within the receive timeout");
    assert_eq!(parts.len(), 2, "multipart [topic, payload]");
    (
        String::from_utf8(parts[0].clone()).unwrap(),
        serde_json::from_slice(&parts[1]).unwrap(),
    )
}

fn check_sample(got: &[(String, serde_json::Value)], lsns: &[u64]) {
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, ["default.kv", "default.row", "default.kv"]);
    let p = |i: usize| &got[i].1;
    assert_eq!(p(0)["key"], "a/b");
    assert_eq!(p(0)["keyB64"], B64.encode(b"a/b"));
    assert_eq!(
        (&p(0)["op"], &p(0)["operation"]),
        (&"put".into(), &"put".into())
    );
    assert_eq!(
        (&p(0)["model"], &p(0)["entry_type"]),
        (&"kv".into(), &"kv".into())
    );
    assert_eq!(p(0)["namespace"], "default");
    assert_eq!(p(1)["key"], "user:1");
    let mut cols: Vec<String> = p(1)["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    cols.sort();
    assert_eq!(cols, [B64.encode(b"age"), B64.encode(b"name")]);
    assert_eq!(p(2)["operation"], "delete");
    for (i, lsn) in lsns.iter().enumerate() {
        assert_eq!(p(i)["lsn"].as_u64(), Some(*lsn));
        assert_eq!(p(i)["seq_num"].as_u64(), Some(*lsn));
        assert!(p(i)["hlc"].as_u64().unwrap() > 0);
    }
}

fn subscriber(endpoint: &str, prefix: &str) -> zmq::Socket {
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_rcvtimeo(10_000).unwrap();
    sub.set_subscribe(prefix.as_bytes()).unwrap();
    sub.connect(endpoint).unwrap();
    // Slow joiner: give the subscription time to reach the publisher.
    std::thread::sleep(Duration::from_millis(300));
    sub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_subscriber_on_hub_and_relayer() {
    let (hd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (hub, rel) = (db(hd.path()), db(rd.path()));
    let stop = CancellationToken::new();
    let stop_rx = stop.clone();
    let hub_pub = notify::start(&hub, &local_cfg(), stop_rx.clone()).unwrap();
    let rel_pub = notify::start(&rel, &local_cfg(), stop_rx.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_on(
        listener,
        hub.clone(),
        AckRegistry::new(),
        None,
        stop_rx.clone(),
    ));
    let rns = rel.get("default").unwrap().clone();
    let follower = tokio::spawn(follow(
        rns,
        FollowConfig::new(format!("http://{addr}"), "r1"),
        ReplicationState::new(),
        stop_rx.clone(),
    ));

    let (hub_ep, rel_ep) = (
        hub_pub.endpoint().to_string(),
        rel_pub.endpoint().to_string(),
    );
    let (hub_sub, rel_sub) = tokio::task::spawn_blocking(move || {
        (
            subscriber(&hub_ep, "default."),
            subscriber(&rel_ep, "default."),
        )
    })
    .await
    .unwrap();
    let hub2 = hub.clone();
    let lsns = tokio::task::spawn_blocking(move || write_sample(&hub2))
        .await
        .unwrap();
    let (from_hub, from_rel) = tokio::task::spawn_blocking(move || {
        let a: Vec<_> = (0..3).map(|_| recv(&hub_sub)).collect();
        let b: Vec<_> = (0..3).map(|_| recv(&rel_sub)).collect();
        // Nothing from namespace "other" arrives on a "default." subscription.
        hub_sub.set_rcvtimeo(300).unwrap();
        assert!(hub_sub.recv_multipart(0).is_err());
        (a, b)
    })
    .await
    .unwrap();
    check_sample(&from_hub, &lsns);
    check_sample(&from_rel, &lsns);

    stop.cancel();
    server.await.unwrap().unwrap();
    follower.await.unwrap();
    tokio::task::spawn_blocking(move || {
        hub_pub.join();
        rel_pub.join();
    })
    .await
    .unwrap();
}

fn venv_python() -> std::path::PathBuf {
    unisondb_testkit::venv_python().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn pyzmq_subscriber_gets_topics_keys_and_lsns() {
    let py = venv_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/loopback/zmq_sub.py");
    let dir = tempfile::tempdir().unwrap();
    let hub = db(dir.path());
    let stop = CancellationToken::new();
    let rx = stop.clone();
    let publisher = notify::start(&hub, &local_cfg(), rx).unwrap();
    let mut child = Command::new(py)
        .args([
            script,
            publisher.endpoint(),
            "3",
            "default.kv",
            "default.row",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "READY");
    std::thread::sleep(Duration::from_millis(500));
    let lsns = write_sample(&hub);
    let got: Vec<(String, serde_json::Value)> = lines
        .take(3)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l.unwrap()).unwrap();
            (
                v["topic"].as_str().unwrap().to_string(),
                v["payload"].clone(),
            )
        })
        .collect();
    assert!(child.wait().unwrap().success());
    check_sample(&got, &lsns);
    stop.cancel();
    publisher.join();
}

/// The Python example in docs/NOTIFICATIONS.md, run verbatim against a live publisher.
#[test]
fn pyzmq_doc_example_runs_as_written() {
    let py = venv_python();
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/NOTIFICATIONS.md"
    ))
    .unwrap();
    let start = doc.find("```python\n").expect("python block") + "```python\n".len();
    let code = &doc[start..start + doc[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("example.py");
    std::fs::write(&script, code).unwrap();
    let hub = db(&dir.path().join("data"));
    let stop = CancellationToken::new();
    let rx = stop.clone();
    let publisher = notify::start(&hub, &local_cfg(), rx).unwrap();
    let mut child = Command::new(py)
        .arg(&script)
        .env("UNISONDB_ZMQ", publisher.endpoint())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Keep writing until the subscriber's subscription has arrived and it printed three lines.
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .take(3)
            .map(|l| l.unwrap())
            .collect::<Vec<_>>()
    });
    let mut rounds = 0;
    while !reader.is_finished() && rounds < 100 {
        write_sample(&hub);
        std::thread::sleep(Duration::from_millis(100));
        rounds += 1;
    }
    let _ = child.kill();
    let _ = child.wait();
    let lines = reader.join().unwrap();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("default.kv put kv a/b seq ")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("default.row put row user:1 seq ")),
        "{lines:?}"
    );
    stop.cancel();
    publisher.join();
}
