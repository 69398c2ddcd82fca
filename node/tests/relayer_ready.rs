//! Relayers stay in service while their upstream is away (issue 11, "Relayers stay ready while
//! disconnected"): real `unisondb` processes, a hub and a relayer on 127.0.0.1.
//!
//! - The hub is killed for a while (8 s by default; `UNISONDB_E2E_HUB_DOWN_SECS=30` for the long
//!   run) while a client reads every key from the relayer without pause: no read fails, every value
//!   is right, `/readyz` answers 200 throughout and the reads carry a growing `x-unisondb-lag-seconds`.
//!   After the hub is back, new writes reach the relayer and the header returns to 0.
//! - With `replication.max_staleness_seconds: 2`, `/readyz` turns 503 once the relayer has been cut off
//!   longer than that, and 200 again after it reconnects.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use unisondb_testkit::{LoopbackNode, Wait};

const BIN: &str = env!("CARGO_BIN_EXE_unisondb");
const LAG_HEADER: &str = "x-unisondb-lag-seconds";

/// A loopback node (SIGKILLed on drop if still running); its ports stay fixed, so a restart listens
/// where it did before.
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
    fn new(root: &Path, name: &str, upstream: Option<&str>, extra_replication: &str) -> Node {
        Node(
            LoopbackNode::start(
                BIN,
                root,
                name,
                &["default"],
                upstream,
                extra_replication,
                &[],
            )
            .expect("spawn unisondb"),
        )
    }

    async fn wait_ready(&self, c: &reqwest::Client) {
        if let Err(e) = self.0.wait_ready(c, Duration::from_secs(30)).await {
            panic!("{e}");
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn value(i: usize) -> String {
    format!("value-{i}")
}

async fn write_keys(c: &reqwest::Client, hub: &Node, range: std::ops::Range<usize>) {
    for i in range {
        let r = c
            .put(hub.url(&format!("/api/v1/default/kv/k{i:04}")))
            .json(&serde_json::json!({ "value": B64.encode(value(i)) }))
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), 200, "PUT k{i:04}");
    }
}

async fn lsn(c: &reqwest::Client, n: &Node) -> Result<u64, String> {
    let r = c
        .get(n.url("/api/v1/default/stats"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    v["lsn"].as_u64().ok_or_else(|| format!("no lsn in {v}"))
}

async fn wait_lsn(c: &reqwest::Client, n: &Node, want: u64) {
    Wait::new(format!("relayer at LSN {want}"), Duration::from_secs(40))
        .until_async(async || match lsn(c, n).await {
            Ok(l) if l == want => Ok(Some(())),
            Ok(l) => Err(format!("at {l}")),
            Err(e) => Err(e),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn readyz(c: &reqwest::Client, n: &Node) -> u16 {
    match c.get(n.url("/readyz")).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// `replication` of the relayer's `/stats`.
async fn replication_stats(c: &reqwest::Client, n: &Node) -> serde_json::Value {
    let v: serde_json::Value = c
        .get(n.url("/api/v1/default/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    v["replication"].clone()
}

/// What the continuous reader saw.
#[derive(Default)]
struct Tally {
    reads: AtomicU64,
    failures: AtomicU64,
    not_ready: AtomicU64,
    max_lag_header: AtomicU64,
    missing_header: AtomicU64,
    first_failure: parking_lot::Mutex<Option<String>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.first_failure.lock().get_or_insert(why);
    }
}

/// Reads keys `0..keys` from `n` round-robin, and `/readyz` between reads, until `stop`.
fn spawn_reader(
    n: &Node,
    keys: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> tokio::task::JoinHandle<()> {
    let (c, base) = (client(), n.url(""));
    tokio::spawn(async move {
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let key = i % keys;
            i += 1;
            tally.reads.fetch_add(1, Ordering::Relaxed);
            match c
                .get(format!("{base}/api/v1/default/kv/k{key:04}"))
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => {
                    match r
                        .headers()
                        .get(LAG_HEADER)
                        .and_then(|h| h.to_str().ok())
                        .and_then(|s| s.parse::<f64>().ok())
                    {
                        Some(lag) => {
                            tally
                                .max_lag_header
                                .fetch_max(lag as u64, Ordering::Relaxed);
                        }
                        None => {
                            tally.missing_header.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    let got = body["value"]
                        .as_str()
                        .and_then(|s| B64.decode(s).ok())
                        .unwrap_or_default();
                    if got != value(key).as_bytes() {
                        tally.fail(format!("k{key:04}: wrong value {body}"));
                    }
                }
                Ok(r) => tally.fail(format!("k{key:04}: HTTP {}", r.status())),
                Err(e) => tally.fail(format!("k{key:04}: {e}")),
            }
            match c.get(format!("{base}/readyz")).send().await {
                Ok(r) if r.status() == 200 => {}
                Ok(r) => {
                    tally.not_ready.fetch_add(1, Ordering::Relaxed);
                    let s = r.status();
                    let body = r.text().await.unwrap_or_default();
                    tally.fail(format!("/readyz {s}: {body}"));
                }
                Err(e) => tally.fail(format!("/readyz: {e}")),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

fn hub_down_secs() -> u64 {
    std::env::var("UNISONDB_E2E_HUB_DOWN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayer_serves_reads_and_stays_ready_while_the_hub_is_down() {
    let root = tempfile::tempdir().unwrap();
    let c = client();
    let mut hub = Node::new(root.path(), "hub", None, "");
    hub.wait_ready(&c).await;
    let relayer = Node::new(root.path(), "relayer", Some(&hub.grpc_url()), "");
    relayer.wait_ready(&c).await;
    write_keys(&c, &hub, 0..50).await;
    wait_lsn(&c, &relayer, 50).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let reader = spawn_reader(&relayer, 50, stop.clone(), tally.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let down = Duration::from_secs(hub_down_secs());
    hub.proc.kill();
    let killed = Instant::now();
    // The relayer notices and says so in /stats, without leaving service.
    Wait::new(
        "relayer to report the hub disconnected",
        Duration::from_secs(15),
    )
    .until_async(async || {
        let r = replication_stats(&c, &relayer).await;
        if r["connected"] == serde_json::json!(false) {
            Ok(Some(r))
        } else {
            Err(format!("{r}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(down.saturating_sub(killed.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();

    let reads = tally.reads.load(Ordering::Relaxed);
    let failures = tally.failures.load(Ordering::Relaxed);
    eprintln!(
        "hub down {:?}: {reads} reads, {failures} failed, /readyz not 200 {} times, max {LAG_HEADER} {}",
        killed.elapsed(),
        tally.not_ready.load(Ordering::Relaxed),
        tally.max_lag_header.load(Ordering::Relaxed),
    );
    assert!(reads > 100, "the reader must have kept reading ({reads})");
    assert_eq!(
        failures,
        0,
        "first failure: {:?}",
        tally.first_failure.lock().clone()
    );
    assert_eq!(tally.missing_header.load(Ordering::Relaxed), 0);
    assert!(
        tally.max_lag_header.load(Ordering::Relaxed) + 2 >= down.as_secs().min(8),
        "{LAG_HEADER} must show how long the relayer has been cut off"
    );

    let r = replication_stats(&c, &relayer).await;
    assert_eq!(r["connected"], serde_json::json!(false), "{r}");
    assert!(r["last_error"].is_string(), "{r}");
    assert!(
        r["staleness_seconds"].as_f64().unwrap_or(0.0) >= 1.0,
        "staleness must grow while cut off: {r}"
    );
    // The gauge too, though nothing arrives to update it: `/metrics` refreshes it when scraped.
    let metrics = c
        .get(relayer.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let gauge = metrics
        .lines()
        .find(|l| l.starts_with("unisondb_replication_staleness_seconds{namespace=\"default\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no staleness gauge for default in:\n{metrics}"));
    assert!(
        gauge >= 1.0,
        "the staleness gauge must grow while cut off and idle: {gauge}"
    );

    // Back: the relayer reconnects, catches up, and reports no staleness once in sync.
    hub.proc.start().expect("restart hub");
    hub.wait_ready(&c).await;
    write_keys(&c, &hub, 50..80).await;
    wait_lsn(&c, &relayer, 80).await;
    Wait::new("relayer to report itself in sync", Duration::from_secs(15))
        .until_async(async || {
            let r = c
                .get(relayer.url("/api/v1/default/kv/k0079"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let lag = r
                .headers()
                .get(LAG_HEADER)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string);
            match lag.as_deref() {
                Some("0") => Ok(Some(())),
                other => Err(format!("{LAG_HEADER}: {other:?}")),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = replication_stats(&c, &relayer).await;
    assert_eq!(r["connected"], serde_json::json!(true), "{r}");
    assert_eq!(readyz(&c, &relayer).await, 200);
    // Writes on the hub and the node's own admin reads carry no header: only followed reads do.
    let r = c
        .get(hub.url("/api/v1/default/kv/k0001"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get(LAG_HEADER).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_once_staleness_exceeds_the_configured_bound() {
    let root = tempfile::tempdir().unwrap();
    let c = client();
    let mut hub = Node::new(root.path(), "hub", None, "");
    hub.wait_ready(&c).await;
    let relayer = Node::new(
        root.path(),
        "relayer",
        Some(&hub.grpc_url()),
        "  max_staleness_seconds: 2\n",
    );
    relayer.wait_ready(&c).await;
    write_keys(&c, &hub, 0..10).await;
    wait_lsn(&c, &relayer, 10).await;

    hub.proc.kill();
    let killed = Instant::now();
    Wait::new("relayer /readyz to turn 503", Duration::from_secs(20))
        .every(Duration::from_millis(50))
        .until_async(async || match readyz(&c, &relayer).await {
            503 => Ok(Some(())),
            s => Err(format!("HTTP {s}")),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let after = killed.elapsed();
    // Heartbeats come every second, so the last contact is at most ~1 s before the kill.
    assert!(
        after >= Duration::from_millis(900),
        "turned 503 after {after:?}, before the 2 s bound could be exceeded"
    );
    // Reads are still served, with the staleness in the header.
    let r = c
        .get(relayer.url("/api/v1/default/kv/k0003"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let lag: f64 = r.headers()[LAG_HEADER].to_str().unwrap().parse().unwrap();
    assert!(lag >= 2.0, "{lag}");

    hub.proc.start().expect("restart hub");
    hub.wait_ready(&c).await;
    relayer.wait_ready(&c).await;
    write_keys(&c, &hub, 10..12).await;
    wait_lsn(&c, &relayer, 12).await;
    assert_eq!(readyz(&c, &relayer).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayer_restarted_while_the_hub_is_down_serves_its_local_data() {
    let root = tempfile::tempdir().unwrap();
    let c = client();
    let mut hub = Node::new(root.path(), "hub", None, "");
    hub.wait_ready(&c).await;
    let mut relayer = Node::new(root.path(), "relayer", Some(&hub.grpc_url()), "");
    relayer.wait_ready(&c).await;
    write_keys(&c, &hub, 0..20).await;
    wait_lsn(&c, &relayer, 20).await;

    hub.proc.kill();
    relayer.proc.kill();
    relayer.proc.start().expect("restart relayer");
    // Ready with what it holds, though it cannot reach its upstream.
    relayer.wait_ready(&c).await;
    let r = replication_stats(&c, &relayer).await;
    assert_eq!(r["connected"], serde_json::json!(false), "{r}");
    assert_eq!(r["holds_data"], serde_json::json!(true), "{r}");
    for i in 0..20 {
        let r = c
            .get(relayer.url(&format!("/api/v1/default/kv/k{i:04}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "k{i:04}");
        let lag: u64 = r.headers()[LAG_HEADER].to_str().unwrap().parse().unwrap();
        assert!(lag >= 1, "not in sync, so never 0: {lag}");
        let body: serde_json::Value = r.json().await.unwrap();
        let got = B64.decode(body["value"].as_str().unwrap()).unwrap();
        assert_eq!(got, value(i).as_bytes());
    }

    hub.proc.start().expect("restart hub");
    hub.wait_ready(&c).await;
    write_keys(&c, &hub, 20..25).await;
    wait_lsn(&c, &relayer, 25).await;
    assert_eq!(readyz(&c, &relayer).await, 200);
}
