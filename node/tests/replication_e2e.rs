//! Loopback end-to-end: real `unisondb` processes on 127.0.0.1 — a hub with relayers (fan-out and a
//! three-hop chain), SIGKILL/restart of a relayer during writes, hub restart, snapshot bootstrap after
//! the hub trimmed its WAL, two hubs mirroring each other, mTLS with a wrong CA, and pyzmq subscribers
//! on a hub and a relayer. Contents are compared over HTTP; at the end every node's WAL is opened with
//! the library and compared record by record (identical LSN, HLC and bytes; contiguous LSNs). One
//! test keeps 16 writes in flight while relayers, a chain link and the hub are SIGKILLed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use unisondb::engine::{EngineOptions, Namespace};
use unisondb::wal::Record;
use unisondb_testkit::{free_port, NodeProcess, TestCa};

const BIN: &str = env!("CARGO_BIN_EXE_unisondb");

/// One `unisondb` process with its own ports and data dir; SIGKILLed on drop if still running.
struct Node {
    name: String,
    dir: PathBuf,
    http: u16,
    grpc: u16,
    zmq: u16,
    proc: NodeProcess,
}

impl Node {
    /// `relayer_of`: upstream gRPC address; `extra`: YAML appended (must not repeat a section).
    fn new(
        root: &Path,
        name: &str,
        namespaces: &[&str],
        relayer_of: Option<&str>,
        extra: &str,
    ) -> Node {
        let dir = root.join(name);
        let (http, grpc, zmq) = (free_port(), free_port(), free_port());
        let mode = if relayer_of.is_some() {
            "relayer"
        } else {
            "replicator"
        };
        let mut yaml = format!(
            "server:\n  mode: {mode}\n  data_dir: {}\n  namespaces: [{}]\nhttp:\n  listen: 127.0.0.1:{http}\n\
             notify:\n  bind: tcp://127.0.0.1:{zmq}\nlog:\n  level: info\n",
            dir.join("data").display(),
            namespaces.join(", "),
        );
        if !extra.contains("grpc:") {
            yaml.push_str(&format!("grpc:\n  listen: 127.0.0.1:{grpc}\n"));
        }
        if let Some(up) = relayer_of {
            if !extra.contains("replication:") {
                yaml.push_str(&format!("replication:\n  upstream: {up}\n"));
            }
        }
        yaml.push_str(&extra.replace("{GRPC}", &grpc.to_string()));
        let mut n = Node {
            name: name.to_string(),
            proc: NodeProcess::new(BIN, name, &dir, yaml),
            dir,
            http,
            grpc,
            zmq,
        };
        n.start();
        n
    }

    fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    fn start(&mut self) {
        self.proc.start().expect("spawn unisondb");
    }

    fn log(&self) -> String {
        self.proc.log()
    }

    fn kill9(&mut self) {
        self.proc.kill();
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(&mut self) {
        match self.proc.terminate(Duration::from_secs(30)) {
            Ok(Some(status)) => assert!(
                status.success(),
                "{} exited with {status}\n{}",
                self.name,
                self.log()
            ),
            Ok(None) => {}
            Err(e) => panic!("{e}"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }
}

struct Http {
    c: reqwest::Client,
}

impl Http {
    fn new() -> Http {
        Http {
            c: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// Waits for `/readyz`: recovered and, on a relayer, in sync once since start (or holding data),
    /// within the lag bound while connected.
    async fn wait_up(&self, n: &Node) {
        self.wait_for(n, "/readyz").await
    }

    /// Waits for `/healthz` only (a relayer that never reached its upstream and holds no data is alive
    /// but not ready).
    async fn wait_alive(&self, n: &Node) {
        self.wait_for(n, "/healthz").await
    }

    async fn wait_for(&self, n: &Node, path: &str) {
        if let Err(e) = n
            .proc
            .wait_http_ok(&self.c, &n.url(path), Duration::from_secs(30))
            .await
        {
            panic!("{e}");
        }
    }

    async fn put(&self, n: &Node, ns: &str, key: &str, value: &[u8]) -> reqwest::StatusCode {
        self.c
            .put(n.url(&format!("/api/v1/{ns}/kv/{key}")))
            .json(&serde_json::json!({ "value": B64.encode(value) }))
            .send()
            .await
            .expect("PUT")
            .status()
    }

    async fn get(&self, n: &Node, ns: &str, key: &str) -> Option<Vec<u8>> {
        let r = self
            .c
            .get(n.url(&format!("/api/v1/{ns}/kv/{key}")))
            .send()
            .await
            .expect("GET");
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        let v: serde_json::Value = r.json().await.unwrap();
        v["value"].as_str().map(|s| B64.decode(s).unwrap())
    }

    /// LSN from `/api/v1/{ns}/stats` (default namespace when `None`); `None` if not answering yet.
    async fn stats_lsn(&self, n: &Node, ns: Option<&str>) -> Option<u64> {
        let r = self
            .c
            .get(n.url(&format!("/api/v1/{}/stats", ns.unwrap_or("default"))))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json::<serde_json::Value>().await.ok()?["lsn"].as_u64()
    }

    async fn metric(&self, n: &Node, name: &str) -> Option<f64> {
        let text = self
            .c
            .get(n.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    async fn wait_lsn(&self, n: &Node, ns: &str, target: u64, timeout: Duration) {
        let t = Instant::now();
        loop {
            let got = self.stats_lsn(n, Some(ns)).await;
            if got == Some(target) {
                return;
            }
            assert!(
                got.is_none_or(|g| g <= target),
                "{} is ahead of its upstream: {got:?} > {target}",
                n.name
            );
            assert!(
                t.elapsed() < timeout,
                "{} stuck at LSN {got:?}, want {target}\n{}",
                n.name,
                n.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat(i % 700)).into_bytes()
}

async fn write_keys(h: &Http, hub: &Node, ns: &str, range: std::ops::Range<usize>) {
    for i in range {
        assert_eq!(h.put(hub, ns, &format!("k{i:05}"), &value(i)).await, 200);
    }
}

/// Every key of `range` reads back identically on `n`.
async fn assert_keys(h: &Http, n: &Node, ns: &str, range: std::ops::Range<usize>) {
    for i in range {
        assert_eq!(
            h.get(n, ns, &format!("k{i:05}")).await,
            Some(value(i)),
            "key k{i:05} on {}",
            n.name
        );
    }
}

fn wal_of(node: &Node, ns: &str) -> Vec<Record> {
    let n = Namespace::open(
        &node.dir.join("data").join(ns),
        ns,
        EngineOptions::default(),
    )
    .unwrap();
    let first = n.stats().unwrap().wal_first_lsn.unwrap_or(1);
    let mut r = n.wal_reader(first).unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        out.push(rec);
    }
    out
}

/// After the processes stopped: every follower's WAL equals the hub's over the LSNs both hold.
fn assert_same_wal(hub: &Node, followers: &[&Node], ns: &str) {
    let h = wal_of(hub, ns);
    assert!(!h.is_empty());
    for w in h.windows(2) {
        assert_eq!(w[1].lsn, w[0].lsn + 1, "hub WAL not contiguous");
    }
    for f in followers {
        let r = wal_of(f, ns);
        assert_eq!(
            r.last().map(|x| x.lsn),
            h.last().map(|x| x.lsn),
            "{}",
            f.name
        );
        for w in r.windows(2) {
            assert_eq!(
                w[1].lsn,
                w[0].lsn + 1,
                "{} WAL has a gap or duplicate",
                f.name
            );
        }
        let start = r[0].lsn.max(h[0].lsn);
        let hs: Vec<_> = h.iter().filter(|x| x.lsn >= start).collect();
        let rs: Vec<_> = r.iter().filter(|x| x.lsn >= start).collect();
        assert_eq!(hs, rs, "{} WAL differs from the hub's", f.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_chain_kill_restart_and_hub_restart() {
    let root = tempfile::tempdir().unwrap();
    let h = Http::new();
    let mut hub = Node::new(root.path(), "hub", &["default"], None, "");
    h.wait_up(&hub).await;
    let up = hub.grpc_url();
    let mut fan: Vec<Node> = (1..=3)
        .map(|i| {
            Node::new(
                root.path(),
                &format!("relayer{i}"),
                &["default"],
                Some(&up),
                "",
            )
        })
        .collect();
    let c1 = Node::new(root.path(), "chain1", &["default"], Some(&up), "");
    let c2 = Node::new(
        root.path(),
        "chain2",
        &["default"],
        Some(&c1.grpc_url()),
        "",
    );
    let c3 = Node::new(
        root.path(),
        "chain3",
        &["default"],
        Some(&c2.grpc_url()),
        "",
    );
    for n in fan.iter().chain([&c1, &c2, &c3]) {
        h.wait_up(n).await;
    }

    write_keys(&h, &hub, "default", 0..150).await;
    let lsn = h.stats_lsn(&hub, None).await.unwrap();
    assert_eq!(lsn, 150);
    for n in fan.iter().chain([&c1, &c2, &c3]) {
        h.wait_lsn(n, "default", lsn, Duration::from_secs(30)).await;
        assert_keys(&h, n, "default", 0..150).await;
        // Relayers are read-only.
        assert_eq!(h.put(n, "default", "nope", b"x").await, 403);
    }

    // SIGKILL relayer1 in the middle of a write burst, restart it while writes continue.
    let writer = {
        let hub_url = hub.url("");
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            for i in 150..450usize {
                let r = c
                    .put(format!("{hub_url}/api/v1/default/kv/k{i:05}"))
                    .json(&serde_json::json!({ "value": B64.encode(value(i)) }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    fan[0].kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    fan[0].start();
    writer.await.unwrap();
    h.wait_up(&fan[0]).await;
    let lsn = h.stats_lsn(&hub, None).await.unwrap();
    assert_eq!(lsn, 450);
    for n in fan.iter().chain([&c1, &c2, &c3]) {
        h.wait_lsn(n, "default", lsn, Duration::from_secs(30)).await;
    }
    assert_keys(&h, &fan[0], "default", 0..450).await;
    assert_keys(&h, &c3, "default", 0..450).await;

    // Hub restart: relayers reconnect by themselves and keep following.
    hub.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    hub.start();
    h.wait_up(&hub).await;
    write_keys(&h, &hub, "default", 450..500).await;
    for n in fan.iter().chain([&c1, &c2, &c3]) {
        h.wait_lsn(n, "default", 500, Duration::from_secs(40)).await;
    }
    assert_keys(&h, &fan[1], "default", 440..500).await;
    assert_keys(&h, &c3, "default", 440..500).await;
    let reconnects = h
        .metric(
            &c1,
            "unisondb_replication_reconnects_total{namespace=\"default\"}",
        )
        .await
        .unwrap_or(0.0);
    assert!(
        reconnects >= 1.0,
        "chain1 must have reconnected after the hub restart"
    );

    for n in fan.iter_mut() {
        n.stop();
    }
    let mut chain = [c1, c2, c3];
    for n in chain.iter_mut() {
        n.stop();
    }
    hub.stop();
    let all: Vec<&Node> = fan.iter().chain(chain.iter()).collect();
    assert_same_wal(&hub, &all, "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_relayer_bootstraps_from_snapshot_after_hub_trimmed_wal() {
    let root = tempfile::tempdir().unwrap();
    let h = Http::new();
    let small = "wal:\n  segment_size_bytes: 65536\n  retention_max_bytes: 1\n  fsync: never\n\
                 memtable:\n  size_bytes: 65536\n";
    let mut hub = Node::new(root.path(), "hub", &["default"], None, small);
    h.wait_up(&hub).await;
    write_keys(&h, &hub, "default", 0..400).await;
    // Wait for flushes and retention to trim the start of the hub's WAL.
    let t = Instant::now();
    loop {
        let r: serde_json::Value =
            h.c.get(hub.url("/api/v1/default/stats"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        if r["walFirstLsn"].as_u64().unwrap_or(1) > 1 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "hub WAL never trimmed: {r}"
        );
        write_keys(&h, &hub, "default", 400..420).await;
    }
    let mut late = Node::new(root.path(), "late", &["default"], Some(&hub.grpc_url()), "");
    h.wait_up(&late).await;
    let lsn = h.stats_lsn(&hub, None).await.unwrap();
    h.wait_lsn(&late, "default", lsn, Duration::from_secs(30))
        .await;
    assert_keys(&h, &late, "default", 0..420).await;
    let boots = h
        .metric(
            &late,
            "unisondb_replication_snapshot_bootstraps_total{namespace=\"default\"}",
        )
        .await;
    assert_eq!(boots, Some(1.0));
    // Then it tails the WAL.
    write_keys(&h, &hub, "default", 1000..1020).await;
    h.wait_lsn(&late, "default", lsn + 20, Duration::from_secs(20))
        .await;
    assert_keys(&h, &late, "default", 1000..1020).await;
    late.stop();
    hub.stop();
    assert_same_wal(&hub, &[&late], "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_mirror_each_other() {
    let root = tempfile::tempdir().unwrap();
    let h = Http::new();
    // Ports are known only after creation: hub B is configured with hub A's address and vice versa,
    // so start A with a placeholder mirror upstream first and restart it with the real one.
    let mut a = Node::new(root.path(), "hubA", &["east", "west"], None, "");
    let b = Node::new(
        root.path(),
        "hubB",
        &["east", "west"],
        None,
        &format!("replication:\n  mirrors:\n    east: {}\n", a.grpc_url()),
    );
    h.wait_up(&a).await;
    a.stop();
    let yaml = format!(
        "{}replication:\n  mirrors:\n    west: {}\n",
        a.proc.config(),
        b.grpc_url()
    );
    a.proc.set_config(yaml);
    a.start();
    h.wait_up(&a).await;
    h.wait_up(&b).await;
    for i in 0..60 {
        assert_eq!(h.put(&a, "east", &format!("k{i:05}"), &value(i)).await, 200);
        assert_eq!(
            h.put(&b, "west", &format!("k{i:05}"), &value(i + 1)).await,
            200
        );
    }
    h.wait_lsn(&b, "east", 60, Duration::from_secs(30)).await;
    h.wait_lsn(&a, "west", 60, Duration::from_secs(30)).await;
    assert_keys(&h, &b, "east", 0..60).await;
    for i in 0..60 {
        assert_eq!(
            h.get(&a, "west", &format!("k{i:05}")).await,
            Some(value(i + 1))
        );
    }
    // A mirrored namespace is read-only here: 403 naming the owning hub.
    let r =
        h.c.put(a.url("/api/v1/west/kv/nope"))
            .json(&serde_json::json!({ "value": B64.encode(b"x") }))
            .send()
            .await
            .expect("PUT");
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.expect("json error body");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&b.grpc_url()),
        "403 must name the owner: {msg}"
    );
    // Its stats carry the replication position.
    let st: serde_json::Value =
        h.c.get(a.url("/api/v1/west/stats"))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json");
    assert_eq!(
        st["replication"]["upstream"],
        serde_json::json!(b.grpc_url())
    );
    assert_eq!(st["replication"]["applied_lsn"], serde_json::json!(60));
    // No loops: each hub's own namespace still has exactly its own writes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.stats_lsn(&a, Some("east")).await, Some(60));
    assert_eq!(h.stats_lsn(&b, Some("west")).await, Some(60));
}

struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Writes `<name>-ca.pem` and signed leaves `<leaf>.pem`/`<leaf>.key` for each `(leaf, dns)`.
    fn new(dir: &Path, ca_name: &str, leaves: &[(&str, &str)]) -> Pki {
        let ca = TestCa::new(ca_name);
        std::fs::write(dir.join(format!("{ca_name}-ca.pem")), ca.pem()).unwrap();
        for (leaf, dns) in leaves {
            let (cert, key) = ca.leaf(&[dns]);
            std::fs::write(dir.join(format!("{leaf}.pem")), cert).unwrap();
            std::fs::write(dir.join(format!("{leaf}.key")), key).unwrap();
        }
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_rejects_a_relayer_from_another_ca() {
    let root = tempfile::tempdir().unwrap();
    let good = Pki::new(
        root.path(),
        "good",
        &[("hub", "localhost"), ("r-ok", "relayer-ok")],
    );
    let evil = Pki::new(root.path(), "evil", &[("r-bad", "relayer-bad")]);
    let h = Http::new();
    let hub_grpc = free_port();
    let hub = Node::new(
        root.path(),
        "hub",
        &["default"],
        None,
        &format!(
            "grpc:\n  listen: 127.0.0.1:{hub_grpc}\n  tls_cert_file: {}\n  tls_key_file: {}\n  tls_ca_file: {}\n",
            good.path("hub.pem"),
            good.path("hub.key"),
            good.path("good-ca.pem")
        ),
    );
    h.wait_up(&hub).await;
    let relayer = |name: &str, cert: String, key: String| {
        Node::new(
            root.path(),
            name,
            &["default"],
            Some("unused"),
            &format!(
                "replication:\n  upstream: https://localhost:{hub_grpc}\n  tls_ca_file: {}\n  tls_cert_file: {cert}\n  tls_key_file: {key}\n",
                good.path("good-ca.pem")
            ),
        )
    };
    let ok = relayer("ok", good.path("r-ok.pem"), good.path("r-ok.key"));
    let bad = relayer("bad", evil.path("r-bad.pem"), evil.path("r-bad.key"));
    h.wait_up(&ok).await;
    h.wait_alive(&bad).await;
    write_keys(&h, &hub, "default", 0..20).await;
    h.wait_lsn(&ok, "default", 20, Duration::from_secs(30))
        .await;
    assert_keys(&h, &ok, "default", 0..20).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.stats_lsn(&bad, None).await,
        Some(0),
        "the foreign-CA relayer must get nothing"
    );
    assert_eq!(
        h.metric(
            &bad,
            "unisondb_replication_connected{namespace=\"default\"}"
        )
        .await,
        Some(0.0)
    );
    // It is alive but not ready: it has never been in sync with its upstream and holds no data.
    let r = h.c.get(bad.url("/readyz")).send().await.expect("readyz");
    assert_eq!(r.status(), 503);
    let why: serde_json::Value = r.json().await.expect("readyz json");
    assert!(
        why["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not yet in sync"),
        "{why}"
    );
}

fn venv_python() -> PathBuf {
    unisondb_testkit::venv_python().unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyzmq_subscribers_on_hub_and_relayer() {
    let root = tempfile::tempdir().unwrap();
    let h = Http::new();
    let hub = Node::new(root.path(), "hub", &["default", "other"], None, "");
    let rel = Node::new(
        root.path(),
        "rel",
        &["default", "other"],
        Some(&hub.grpc_url()),
        "",
    );
    h.wait_up(&hub).await;
    h.wait_up(&rel).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/loopback/zmq_sub.py");
    let spawn = |port: u16| {
        let mut c = Command::new(venv_python())
            .args([script, &format!("tcp://127.0.0.1:{port}"), "3", "default."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "READY");
        (c, lines)
    };
    let (hub_sub, hub_lines) = spawn(hub.zmq);
    let (rel_sub, rel_lines) = spawn(rel.zmq);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(h.put(&hub, "other", "ignored", b"x").await, 200);
    let mut lsns = Vec::new();
    for key in ["a/b", "c", "d"] {
        let r: serde_json::Value =
            h.c.put(hub.url(&format!("/api/v1/default/kv/{key}")))
                .json(&serde_json::json!({ "value": B64.encode(b"v") }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        lsns.push(r["lsn"].as_u64().expect("PUT answers its LSN"));
    }
    for (mut child, lines) in [(hub_sub, hub_lines), (rel_sub, rel_lines)] {
        let got: Vec<serde_json::Value> = tokio::task::spawn_blocking(move || {
            lines
                .take(3)
                .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
                .collect()
        })
        .await
        .unwrap();
        assert!(child.wait().unwrap().success());
        let keys: Vec<Vec<u8>> = got
            .iter()
            .map(|m| {
                B64.decode(m["payload"]["keyB64"].as_str().unwrap())
                    .unwrap()
            })
            .collect();
        assert_eq!(keys, [b"a/b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
        for (m, lsn) in got.iter().zip(&lsns) {
            assert_eq!(m["topic"], "default.kv");
            assert_eq!(m["payload"]["lsn"].as_u64(), Some(*lsn));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_can_wait_for_replica_acks() {
    let root = tempfile::tempdir().unwrap();
    let h = Http::new();
    let hub = Node::new(root.path(), "hub", &["default"], None, "");
    h.wait_up(&hub).await;
    let put_acks = |key: &'static str, q: &'static str| {
        let c = h.c.clone();
        let url = hub.url(&format!("/api/v1/default/kv/{key}{q}"));
        async move {
            let r = c
                .put(url)
                .json(&serde_json::json!({ "value": B64.encode(b"v") }))
                .send()
                .await
                .expect("PUT");
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, body)
        }
    };
    // No replica at all: acks=1 times out with 504 and says 0 acknowledged; the write is durable.
    let (st, body) = put_acks("a", "?acks=1&acks_timeout_ms=300").await;
    assert_eq!(st, 504, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("0 of 1"),
        "{body}"
    );
    assert_eq!(h.get(&hub, "default", "a").await, Some(b"v".to_vec()));
    // Malformed acks is a 400, not a write.
    let (st, _) = put_acks("bad", "?acks=many").await;
    assert_eq!(st, 400);
    assert_eq!(h.get(&hub, "default", "bad").await, None);

    let r1 = Node::new(root.path(), "r1", &["default"], Some(&hub.grpc_url()), "");
    h.wait_up(&r1).await;
    let (st, body) = put_acks("b", "?acks=1&acks_timeout_ms=5000").await;
    assert_eq!(st, 200, "{body}");
    // The relayer has it already when the hub answers.
    assert_eq!(h.get(&r1, "default", "b").await, Some(b"v".to_vec()));
    let (st, body) = put_acks("c", "?acks=2&acks_timeout_ms=500").await;
    assert_eq!(st, 504, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("1 of 2"),
        "{body}"
    );

    let r2 = Node::new(root.path(), "r2", &["default"], Some(&hub.grpc_url()), "");
    h.wait_up(&r2).await;
    let (st, body) = put_acks("d", "?acks=2&acks_timeout_ms=5000").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(h.get(&r1, "default", "d").await, Some(b"v".to_vec()));
    assert_eq!(h.get(&r2, "default", "d").await, Some(b"v".to_vec()));
    // The header form works too.
    let r =
        h.c.put(hub.url("/api/v1/default/kv/e"))
            .header("x-unisondb-acks", "2")
            .json(&serde_json::json!({ "value": B64.encode(b"v") }))
            .send()
            .await
            .expect("PUT");
    assert_eq!(r.status(), 200);
    assert_eq!(h.get(&r2, "default", "e").await, Some(b"v".to_vec()));
    // A relayer's readiness reflects its replication state, and its stats show the position.
    let st: serde_json::Value =
        h.c.get(r1.url("/api/v1/default/stats"))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
    assert_eq!(
        st["replication"]["connected"],
        serde_json::json!(true),
        "{st}"
    );
    assert!(st["replication"]["last_in_sync_ms"].is_u64(), "{st}");
    let r = h.c.get(r1.url("/readyz")).send().await.expect("readyz");
    assert_eq!(r.status(), 200);
}

/// A relayer with `wal.fsync: interval` does not fsync each applied batch: the periodic fsync makes
/// records durable and its ack follows. So many writes cost it a few fsyncs, not one each (the CPU of
/// fan-out), and `acks=1` still answers — once the relayer's period passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_relayer_acknowledges_after_its_periodic_fsync() {
    let root = tempfile::tempdir().unwrap();
    let h = Http::new();
    let hub = Node::new(root.path(), "hub", &["default"], None, "");
    h.wait_up(&hub).await;
    let r1 = Node::new(
        root.path(),
        "r1",
        &["default"],
        Some(&hub.grpc_url()),
        "wal:\n  fsync: interval\n  fsync_interval_ms: 250\n",
    );
    h.wait_up(&r1).await;
    const FSYNCS: &str = "unisondb_wal_fsyncs_total{namespace=\"default\"}";
    let before = h.metric(&r1, FSYNCS).await.unwrap_or(0.0);
    // One at a time: each commit reaches the relayer as its own message.
    write_keys(&h, &hub, "default", 0..200).await;
    let lsn = h.stats_lsn(&hub, Some("default")).await.expect("hub LSN");
    h.wait_lsn(&r1, "default", lsn, Duration::from_secs(10))
        .await;
    let t = Instant::now();
    let r =
        h.c.put(hub.url("/api/v1/default/kv/acked?acks=1&acks_timeout_ms=10000"))
            .json(&serde_json::json!({ "value": B64.encode(b"v") }))
            .send()
            .await
            .expect("PUT");
    assert_eq!(r.status(), 200, "acks=1 through an interval relayer");
    let waited = t.elapsed();
    assert_eq!(h.get(&r1, "default", "acked").await, Some(b"v".to_vec()));
    let fsyncs = h.metric(&r1, FSYNCS).await.unwrap_or(0.0) - before;
    eprintln!("relayer: {fsyncs} fsyncs for 201 records; acks=1 answered after {waited:?}");
    assert!(
        fsyncs >= 1.0,
        "the ack must come from a periodic fsync ({fsyncs} fsyncs)"
    );
    assert!(
        fsyncs < 60.0,
        "{fsyncs} relayer fsyncs for 201 records: one per applied batch, not per period"
    );
    assert_keys(&h, &r1, "default", 0..200).await;
}

/// Many writes in flight, so relayers receive several messages while they fsync and apply them
/// together (one WAL pass, one fsync, one ack): SIGKILL a relayer, the middle of a chain and the hub
/// during the load, restart them, and end with every node holding every acknowledged write and the
/// hub's WAL record by record. The killed relayer and the chain's middle run `wal.fsync: interval`
/// (they apply on their own task without an fsync and acknowledge after the periodic one); the
/// others the default `always`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_fan_out_through_kills() {
    let root = tempfile::tempdir().unwrap();
    let h = Http::new();
    let mut hub = Node::new(root.path(), "hub", &["default"], None, "");
    h.wait_up(&hub).await;
    let up = hub.grpc_url();
    let interval = "wal:\n  fsync: interval\n";
    let mut r1 = Node::new(root.path(), "r1", &["default"], Some(&up), interval);
    let r2 = Node::new(root.path(), "r2", &["default"], Some(&up), "");
    let mut mid = Node::new(root.path(), "mid", &["default"], Some(&up), interval);
    let leaf = Node::new(root.path(), "leaf", &["default"], Some(&mid.grpc_url()), "");
    for n in [&r1, &r2, &mid, &leaf] {
        h.wait_up(n).await;
    }

    // 16 writers; each remembers the keys the hub acknowledged. Failed PUTs (hub down) are retried.
    let writers: Vec<_> = (0..16usize)
        .map(|w| {
            let hub_url = hub.url("");
            tokio::spawn(async move {
                let c = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                let mut acked = Vec::new();
                for j in 0..120usize {
                    let i = w * 1000 + j;
                    let body = serde_json::json!({ "value": B64.encode(value(i)) });
                    let t = Instant::now();
                    loop {
                        let r = c
                            .put(format!("{hub_url}/api/v1/default/kv/k{i:05}"))
                            .json(&body)
                            .send()
                            .await;
                        if r.is_ok_and(|r| r.status() == 200) {
                            acked.push(i);
                            break;
                        }
                        assert!(t.elapsed() < Duration::from_secs(60), "hub never came back");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    r1.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    mid.kill9();
    r1.start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    mid.start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.kill9();
    tokio::time::sleep(Duration::from_millis(200)).await;
    hub.start();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert_eq!(acked.len(), 16 * 120);
    h.wait_up(&hub).await;
    let lsn = h.stats_lsn(&hub, None).await.unwrap();
    // A write may be logged twice (its first answer lost to the kill), never lost.
    assert!(lsn >= acked.len() as u64, "hub LSN {lsn}");
    for n in [&r1, &r2, &mid, &leaf] {
        h.wait_lsn(n, "default", lsn, Duration::from_secs(60)).await;
    }
    for n in [&hub, &r1, &leaf] {
        for &i in &acked {
            assert_eq!(
                h.get(n, "default", &format!("k{i:05}")).await,
                Some(value(i)),
                "key k{i:05} on {}",
                n.name
            );
        }
    }
    let mut all = [r1, r2, mid, leaf];
    for n in all.iter_mut() {
        n.stop();
    }
    hub.stop();
    let followers: Vec<&Node> = all.iter().collect();
    assert_same_wal(&hub, &followers, "default");
}
