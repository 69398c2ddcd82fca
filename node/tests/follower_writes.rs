//! Followers never write: a relayer restarted while a LOB upload is in flight on the hub must not
//! take an LSN for a local record (the start-up orphan-LOB collection did). Real `unisondb`
//! processes: a hub and a relayer; a transaction on the hub streams LOB chunks (replicated, but not
//! yet committed), the relayer is restarted, the hub commits and writes more. Afterwards the relayer
//! serves the hub's data and, once both stopped, its WAL equals the hub's record by record.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use unisondb::engine::{EngineOptions, Namespace};
use unisondb::wal::Record;
use unisondb_testkit::LoopbackNode;

const BIN: &str = env!("CARGO_BIN_EXE_unisondb");
const NS: &str = "default";

/// A loopback node (SIGKILLed on drop if still running) with the reads this test needs.
struct Node(LoopbackNode);

impl std::ops::Deref for Node {
    type Target = LoopbackNode;
    fn deref(&self) -> &LoopbackNode {
        &self.0
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut LoopbackNode {
        &mut self.0
    }
}

impl Node {
    fn new(root: &Path, name: &str, upstream: Option<&str>) -> Node {
        Node(
            LoopbackNode::start(BIN, root, name, &[NS], upstream, "", &[]).expect("spawn unisondb"),
        )
    }

    async fn wait_ready(&self, c: &reqwest::Client) {
        if let Err(e) = self.0.wait_ready(c, Duration::from_secs(30)).await {
            panic!("{e}");
        }
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(&mut self) {
        if let Err(e) = self.0.stop(Duration::from_secs(30)) {
            panic!("{e}");
        }
    }

    async fn lsn(&self, c: &reqwest::Client) -> Option<u64> {
        self.0.lsn(c, NS).await
    }

    async fn wait_lsn(&self, c: &reqwest::Client, target: u64) {
        let t = Instant::now();
        loop {
            if self.lsn(c).await == Some(target) {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "stuck at LSN {:?}, want {target}",
                self.lsn(c).await
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn kv(&self, c: &reqwest::Client, key: &str) -> Option<Vec<u8>> {
        let r = c
            .get(self.url(&format!("/api/v1/{NS}/kv/{key}")))
            .send()
            .await
            .expect("GET kv");
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        let v: serde_json::Value = r.json().await.expect("kv JSON");
        v["value"].as_str().map(|s| B64.decode(s).expect("base64"))
    }

    /// The LOB's bytes, or the status when it is not a 200.
    async fn lob(&self, c: &reqwest::Client, key: &str) -> Result<Vec<u8>, String> {
        let r = c
            .get(self.url(&format!("/api/v1/{NS}/lob/{key}")))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(r.status().to_string());
        }
        r.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| format!("body cut off: {e}"))
    }
}

async fn put_kv(c: &reqwest::Client, n: &Node, key: &str, value: &[u8]) {
    let r = c
        .put(n.url(&format!("/api/v1/{NS}/kv/{key}")))
        .json(&serde_json::json!({ "value": B64.encode(value) }))
        .send()
        .await
        .expect("PUT kv");
    assert_eq!(r.status(), 200, "PUT {key}");
}

fn wal_of(dir: &Path) -> Vec<Record> {
    let n = Namespace::open(&dir.join("data").join(NS), NS, EngineOptions::default())
        .expect("open namespace");
    let first = n.stats().expect("stats").wal_first_lsn.unwrap_or(1);
    let mut r = n.wal_reader(first).expect("WAL reader");
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().expect("WAL record") {
        out.push(rec);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayer_restart_with_lob_upload_in_flight_keeps_the_hubs_history() {
    let root = tempfile::tempdir().expect("tempdir");
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let mut hub = Node::new(root.path(), "hub", None);
    hub.wait_ready(&c).await;
    let mut relayer = Node::new(root.path(), "relayer", Some(&hub.grpc_url()));
    relayer.wait_ready(&c).await;

    put_kv(&c, &hub, "before", b"1").await;

    // A transaction streams 3 MiB of LOB data: its chunks are written (and replicated) in batches,
    // invisible until the commit writes the manifest.
    let begin: serde_json::Value = c
        .post(hub.url(&format!("/api/v1/{NS}/tx/begin")))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("begin")
        .json()
        .await
        .expect("begin JSON");
    let txn = begin["txnId"].as_str().expect("txnId").to_string();
    let data: Vec<u8> = (0..3 * (1 << 20) + 777).map(|i| (i % 251) as u8).collect();
    let r = c
        .post(hub.url(&format!("/api/v1/{NS}/tx/{txn}/lob?key=blob")))
        .body(data.clone())
        .send()
        .await
        .expect("tx lob");
    assert_eq!(r.status(), 200);
    let in_flight = hub.lsn(&c).await.expect("hub LSN");
    assert!(
        in_flight >= 3,
        "no chunk batch was written: LSN {in_flight}"
    );
    relayer.wait_lsn(&c, in_flight).await;

    // The relayer restarts while the upload is still open on the hub: its orphan collection must
    // not write (the chunks are the hub's to clean up or commit).
    relayer.stop();
    relayer.proc.start().expect("restart relayer");
    relayer.wait_ready(&c).await;

    let r = c
        .post(hub.url(&format!("/api/v1/{NS}/tx/{txn}/commit")))
        .send()
        .await
        .expect("commit");
    assert_eq!(r.status(), 200);
    for i in 0..20 {
        put_kv(
            &c,
            &hub,
            &format!("after{i:02}"),
            format!("v{i}").as_bytes(),
        )
        .await;
    }
    let last = hub.lsn(&c).await.expect("hub LSN");
    relayer.wait_lsn(&c, last).await;

    assert_eq!(hub.lob(&c, "blob").await.as_deref(), Ok(&data[..]));
    assert_eq!(
        relayer.lob(&c, "blob").await.map(|b| b.len()),
        Ok(data.len()),
        "the relayer lost the hub's LOB commit"
    );
    assert_eq!(relayer.kv(&c, "before").await.as_deref(), Some(&b"1"[..]));
    for i in 0..20 {
        assert_eq!(
            relayer.kv(&c, &format!("after{i:02}")).await,
            Some(format!("v{i}").into_bytes()),
            "after{i:02} on the relayer"
        );
    }

    relayer.stop();
    hub.stop();
    let h = wal_of(&hub.dir);
    let r = wal_of(&relayer.dir);
    assert_eq!(h.last().map(|x| x.lsn), Some(last));
    let start = r[0].lsn.max(h[0].lsn);
    let hs: Vec<_> = h.iter().filter(|x| x.lsn >= start).collect();
    let rs: Vec<_> = r.iter().filter(|x| x.lsn >= start).collect();
    assert_eq!(hs.len(), rs.len(), "WAL lengths differ");
    for (a, b) in hs.iter().zip(&rs) {
        assert_eq!(a, b, "relayer WAL differs from the hub's at LSN {}", a.lsn);
    }
}
