//! Drop-in for UnisonDB clients (issue 14), against one real `unisondb` process: its ZeroMQ
//! subscribers (the docs' pyzmq example, written as UnisonDB's examples subscribe, on the shared
//! socket and on a per-namespace socket) and every HTTP difference UnisonDB's clients rely on
//! (Go-style JSON bodies, `/offset` `/stats` `/checkpoint` fields, 404 after abort, CRC32 LOB
//! checksums, `/status/leader|peers`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use reqwest::Client;
use serde_json::{json, Value};
use unisondb_testkit::{free_port, NodeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_unisondb");

struct Node {
    proc: NodeProcess,
    http: u16,
    shared_zmq: u16,
    default_zmq: u16,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (http, shared_zmq, default_zmq) = (free_port(), free_port(), free_port());
        let yaml = format!(
            "server:\n  data_dir: {}\n  namespaces: [default, other]\n\
             http:\n  listen: 127.0.0.1:{http}\ngrpc:\n  listen: 127.0.0.1:0\n\
             notify:\n  bind: tcp://127.0.0.1:{shared_zmq}\n  namespaces:\n    default:\n      \
             bind: tcp://127.0.0.1:{default_zmq}\n      high_water_mark: 1000\n      linger_ms: 0\n",
            dir.path().join("data").display()
        );
        let mut proc = NodeProcess::new(BIN, "compat", dir.path(), yaml).dump_log_on_panic();
        proc.start_ready(&format!("http://127.0.0.1:{http}/readyz"))
            .await
            .unwrap();
        Node {
            proc,
            http,
            shared_zmq,
            default_zmq,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }
}

async fn call(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.unwrap();
    let st = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        st,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The first python block of docs/NOTIFICATIONS.md, started against `endpoint`; its stdout lines
/// arrive on the returned channel.
fn doc_subscriber(endpoint: &str) -> (Child, mpsc::Receiver<String>) {
    let py = unisondb_testkit::venv_python().unwrap_or_else(|e| panic!("{e}"));
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/NOTIFICATIONS.md"
    ))
    .unwrap();
    let start = doc.find("```python\n").expect("python block") + "```python\n".len();
    let code = &doc[start..start + doc[start..].find("```").unwrap()];
    let mut child = Command::new(py)
        .args(["-c", code])
        .env("UNISONDB_ZMQ", endpoint)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Writes one kv put, one row put and one LOB until every subscriber printed a line for each
/// (ZeroMQ's slow joiner: the first writes may go out before a subscription arrives).
async fn write_until_seen(n: &Node, subs: &[&mpsc::Receiver<String>]) -> Vec<Vec<String>> {
    let c = Client::new();
    let mut seen: Vec<Vec<String>> = vec![Vec::new(); subs.len()];
    let want = [
        "default.kv put kv lww:a",
        "default.row put row user:1",
        "default.lob put lob blob/1",
    ];
    for round in 0..100 {
        let (st, v) = call(
            c.put(n.url("/api/v1/default/kv/lww:a"))
                .json(&json!({"value": B64.encode(b"1")})),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        let (st, v) = call(
            c.put(n.url("/api/v1/default/row/user:1"))
                .json(&json!({"columns": {"name": B64.encode(b"ann")}})),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        let (st, v) = call(c.put(n.url("/api/v1/default/lob/blob%2F1")).body("large")).await;
        assert_eq!(st, 200, "{v}");
        // Namespace "other" must not reach a "default." subscription nor the default-only socket.
        let (st, v) = call(
            c.put(n.url("/api/v1/other/kv/x"))
                .json(&json!({"value": ""})),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (i, rx) in subs.iter().enumerate() {
            seen[i].extend(rx.try_iter());
        }
        let done = seen
            .iter()
            .all(|lines| want.iter().all(|w| lines.iter().any(|l| l.starts_with(w))));
        if done {
            return seen;
        }
        assert!(round < 99, "subscribers saw {seen:?}");
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unisondb_clients_work_unchanged() {
    let n = Node::start().await;
    let c = Client::new();

    // --- ZeroMQ: the doc example (UnisonDB style) on the shared and on the per-namespace socket.
    let (mut shared, shared_rx) = doc_subscriber(&format!("tcp://127.0.0.1:{}", n.shared_zmq));
    let (mut own, own_rx) = doc_subscriber(&format!("tcp://127.0.0.1:{}", n.default_zmq));
    // A raw subscriber to everything on the default-only socket: nothing of "other" may come.
    let ctx = zmq::Context::new();
    let all = ctx.socket(zmq::SUB).unwrap();
    all.set_subscribe(b"").unwrap();
    all.set_rcvtimeo(0).unwrap();
    all.connect(&format!("tcp://127.0.0.1:{}", n.default_zmq))
        .unwrap();
    let seen = write_until_seen(&n, &[&shared_rx, &own_rx]).await;
    for lines in &seen {
        // `seq_num` is the LSN: the kv line's seq matches a real LSN of namespace default.
        let seq: u64 = lines
            .iter()
            .find(|l| l.starts_with("default.kv put kv lww:a"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|s| s.parse().ok())
            .expect("seq_num printed");
        assert!(seq >= 1);
        assert!(lines.iter().all(|l| !l.contains("other")), "{lines:?}");
    }
    let mut from_all = Vec::new();
    while let Ok(parts) = all.recv_multipart(0) {
        from_all.push(String::from_utf8_lossy(&parts[0]).into_owned());
    }
    assert!(
        from_all.iter().all(|t| t.starts_with("default.")),
        "{from_all:?}"
    );
    let _ = shared.kill();
    let _ = own.kill();
    let _ = (shared.wait(), own.wait());

    // --- HTTP: bodies read as Go's encoding/json reads them.
    let (st, v) = call(
        c.put(n.url("/api/v1/default/kv/g"))
            .json(&json!({"value": B64.encode(b"v"), "ttl": 5, "meta": {"a": 1}})),
    )
    .await;
    assert_eq!(st, 200, "unknown fields are ignored: {v}");
    let (st, v) = call(
        c.post(n.url("/api/v1/default/kv/batch"))
            .json(&json!({"operation": "delete", "keys": ["g"], "items": null})),
    )
    .await;
    assert_eq!(
        (st, &v["count"]),
        (200, &json!(1)),
        "null list is empty: {v}"
    );
    let (st, v) = call(c.post(n.url("/api/v1/default/row/batch")).json(&json!({"operation": "put", "rows": [{"rowKey": "r", "columns": {"c": B64.encode(b"x")}, "extra": null}]}))).await;
    assert_eq!(st, 200, "{v}");
    for bad in [
        r#"{"value": "x""#,
        r#"{"value": 3}"#,
        r#"{"value": "!!"}"#,
        r#"{"value": null}"#,
    ] {
        let (st, v) = call(
            c.put(n.url("/api/v1/default/kv/g"))
                .header("content-type", "application/json")
                .body(bad),
        )
        .await;
        assert_eq!(st, 400, "{bad} -> {v}");
        assert!(v["error"].is_string(), "{v}");
    }

    // --- /offset, /stats, /checkpoint: UnisonDB's fields beside ours.
    let (_, off) = call(c.get(n.url("/api/v1/default/offset"))).await;
    let lsn = off["lsn"].as_u64().unwrap();
    assert!(
        off["segmentId"].as_u64().unwrap() >= 1 && off["offset"].as_u64().unwrap() > 64,
        "{off}"
    );
    let (_, stats) = call(c.get(n.url("/api/v1/default/stats"))).await;
    assert_eq!(stats["namespace"], "default");
    assert_eq!(stats["opsReceived"].as_u64(), Some(lsn), "{stats}");
    assert_eq!(stats["currentSegment"], off["segmentId"]);
    assert_eq!(stats["currentOffset"], off["offset"]);
    assert!(stats["opsFlushed"].as_u64().unwrap() <= lsn);
    let (_, cp) = call(c.get(n.url("/api/v1/default/checkpoint"))).await;
    for f in ["recordProcessed", "segmentId", "offset"] {
        assert!(cp[f].is_u64(), "{f} in {cp}");
    }
    assert_eq!(cp["recordProcessed"], cp["checkpointLsn"]);

    // --- Transactions: commit after abort is 404; a LOB commit's checksum is CRC32 (IEEE).
    let begin = || async {
        let (st, v) = call(
            c.post(n.url("/api/v1/default/tx/begin"))
                .json(&json!({"operation": "put", "entryType": "lob"})),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        v["txnId"].as_str().unwrap().to_string()
    };
    let id = begin().await;
    assert_eq!(
        call(c.post(n.url(&format!("/api/v1/default/tx/{id}/abort"))))
            .await
            .0,
        200
    );
    let (st, v) = call(c.post(n.url(&format!("/api/v1/default/tx/{id}/commit")))).await;
    assert_eq!(st, 404, "{v}");
    let id = begin().await;
    let data = b"The quick brown fox jumps over the lazy dog";
    let (st, v) = call(
        c.post(n.url(&format!("/api/v1/default/tx/{id}/lob?key=fox")))
            .body(&data[..]),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = call(c.post(n.url(&format!("/api/v1/default/tx/{id}/commit")))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["checksum"].as_u64(),
        Some(0x414F_A339),
        "zlib.crc32 of the data: {v}"
    );

    // --- Raft status routes: UnisonDB's answer on a node outside a hub group.
    for route in ["/status/leader", "/status/peers"] {
        let (st, v) = call(c.get(n.url(route))).await;
        assert_eq!(
            (st, v),
            (503, json!({"error": "raft service disabled"})),
            "{route}"
        );
    }
    drop(n.proc);
}
