//! Replication you can trust: a hub whose history goes back (restored from an older copy of its data
//! directory, or killed under `wal.fsync: never`) must not leave relayers silently holding other
//! records under the same LSNs. Real `unisondb` processes on loopback: after each scenario every node
//! must hold the hub's WAL record by record (LSN, epoch, HLC, payload — read offline once the nodes are
//! stopped) and the same keys, the divergence must be visible (`/metrics`, `/stats`), and `acks=1`
//! must not be answered by a diverged relayer's stale position.

use std::ops::Bound;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use unisondb::engine::{EngineOptions, Namespace, Role};
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
    fn new(root: &Path, name: &str, upstream: Option<&str>, env: &[(&str, &str)]) -> Node {
        Node(
            LoopbackNode::start(BIN, root, name, &[NS], upstream, "", env).expect("spawn unisondb"),
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

    async fn text(&self, c: &reqwest::Client, path: &str) -> String {
        c.get(self.url(path))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body")
    }

    /// The value of one sample line of `/metrics` (0 when absent).
    async fn metric(&self, c: &reqwest::Client, name_and_labels: &str) -> f64 {
        let body = self.text(c, "/metrics").await;
        body.lines()
            .find(|l| l.starts_with(name_and_labels))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    async fn stats(&self, c: &reqwest::Client) -> serde_json::Value {
        serde_json::from_str(&self.text(c, &format!("/api/v1/{NS}/stats")).await).expect("stats")
    }
}

async fn put_kv(c: &reqwest::Client, n: &Node, key: &str, value: &str) -> u64 {
    let r = c
        .put(n.url(&format!("/api/v1/{NS}/kv/{key}")))
        .json(&serde_json::json!({ "value": B64.encode(value) }))
        .send()
        .await
        .expect("PUT kv");
    assert_eq!(r.status(), 200, "PUT {key}");
    n.lsn(c).await.expect("LSN after PUT")
}

async fn write_keys(c: &reqwest::Client, n: &Node, prefix: &str, count: usize) -> u64 {
    let mut lsn = 0;
    for i in 0..count {
        lsn = put_kv(
            c,
            n,
            &format!("{prefix}{i:02}"),
            &format!("{prefix}-value-{i}"),
        )
        .await;
    }
    lsn
}

/// Waits until `follower` serves `key` with `value` and is at `lsn` (the hub's end).
async fn wait_synced(c: &reqwest::Client, follower: &Node, lsn: u64, key: &str, value: &str) {
    let t = Instant::now();
    loop {
        let at = follower.lsn(c).await;
        if at == Some(lsn) && follower.kv(c, key).await.as_deref() == Some(value.as_bytes()) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "{} stuck at LSN {at:?} (want {lsn} with {key}={value})",
            follower.proc.name()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Copies a directory tree (a stopped node's data directory: the "backup").
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// Every key and value of a namespace, in order.
type Keys = Vec<(Vec<u8>, Vec<u8>)>;

/// Last LSN, every WAL record and every key of a stopped node, read offline.
fn contents(data: &Path) -> (u64, Vec<Record>, Keys) {
    let n = Namespace::open_as(&data.join(NS), NS, EngineOptions::default(), Role::Follower)
        .expect("open namespace");
    let mut wal = Vec::new();
    // No first LSN: the WAL holds no record (e.g. right after a snapshot install).
    if let Some(first) = n.stats().expect("stats").wal_first_lsn {
        let mut r = n.wal_reader(first).expect("WAL reader");
        while let Some(rec) = r.next_record().expect("WAL record") {
            wal.push(rec);
        }
    }
    let keys = n
        .snapshot()
        .expect("snapshot")
        .range(Bound::Unbounded, Bound::Unbounded, false)
        .map(|kv| kv.expect("key"))
        .collect();
    (n.latest_lsn(), wal, keys)
}

/// The follower's WAL equals the hub's record by record (where both have it) and its keys are the hub's.
fn assert_same_history(hub: &Node, follower: &Node) {
    let (hl, hw, hk) = contents(&hub.data());
    let (fl, fw, fk) = contents(&follower.data());
    assert_eq!(hl, fl, "{} ends elsewhere", follower.proc.name());
    let first = |w: &[Record]| w.first().map(|r| r.lsn).unwrap_or(u64::MAX);
    let start = first(&hw).max(first(&fw));
    let hs: Vec<_> = hw.iter().filter(|r| r.lsn >= start).collect();
    let fs: Vec<_> = fw.iter().filter(|r| r.lsn >= start).collect();
    assert_eq!(hs.len(), fs.len(), "WAL lengths differ");
    for (a, b) in hs.iter().zip(&fs) {
        assert_eq!(
            a,
            b,
            "{} WAL differs at LSN {}",
            follower.proc.name(),
            a.lsn
        );
    }
    assert_eq!(
        hk,
        fk,
        "{} keys differ from the hub's",
        follower.proc.name()
    );
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Hub → r1 (→ r2 when `chain`): writes, backup of the stopped hub, more writes (replicated), then the
/// hub is restored from the backup and writes *other* records under the same LSNs (more of them than
/// it lost, so an unchecked resume would even end at the same LSN). With `flushed`, r1 is restarted
/// before the restore (its shutdown flushes the lost records into its B+Tree), so it cannot truncate
/// and must re-bootstrap from a snapshot.
async fn restore_scenario(chain: bool, flushed: bool) {
    let root = tempfile::tempdir().expect("tempdir");
    let c = client();
    let mut hub = Node::new(root.path(), "hub", None, &[]);
    hub.wait_ready(&c).await;
    let mut r1 = Node::new(root.path(), "r1", Some(&hub.grpc_url()), &[]);
    r1.wait_ready(&c).await;
    let mut r2 = chain.then(|| Node::new(root.path(), "r2", Some(&r1.grpc_url()), &[]));
    if let Some(r2) = &r2 {
        r2.wait_ready(&c).await;
    }

    let base = write_keys(&c, &hub, "a", 5).await;
    wait_synced(&c, &r1, base, "a04", "a-value-4").await;
    hub.stop();
    let backup = root.path().join("hub-backup");
    copy_dir(&hub.data(), &backup);
    hub.proc.start().expect("restart hub");
    hub.wait_ready(&c).await;
    let lost = write_keys(&c, &hub, "b", 8).await;
    wait_synced(&c, &r1, lost, "b07", "b-value-7").await;
    if let Some(r2) = &r2 {
        wait_synced(&c, r2, lost, "b07", "b-value-7").await;
    }
    if flushed {
        r1.stop();
        r1.proc.start().expect("restart r1");
        r1.wait_ready(&c).await;
    }
    let action = if flushed { "bootstrap" } else { "truncate" };

    // Restore the old copy: it knows neither the b-records nor the epoch they were written in.
    hub.stop();
    std::fs::remove_dir_all(hub.data()).expect("rm hub data");
    copy_dir(&backup, &hub.data());
    hub.proc.start().expect("start restored hub");
    hub.wait_ready(&c).await;
    let end = write_keys(&c, &hub, "c", 12).await;
    assert_eq!(end, base + 12);
    wait_synced(&c, &r1, end, "c11", "c-value-11").await;
    assert_eq!(
        r1.kv(&c, "b00").await,
        None,
        "r1 kept a record of the lost history"
    );
    if let Some(r2) = &r2 {
        wait_synced(&c, r2, end, "c11", "c-value-11").await;
        assert_eq!(
            r2.kv(&c, "b00").await,
            None,
            "r2 kept a record of the lost history"
        );
    }

    // Loud: counted and explained.
    let counted = r1
        .metric(
            &c,
            &format!(
                "unisondb_replication_divergences_total{{action=\"{action}\",namespace=\"default\"}}"
            ),
        )
        .await;
    assert_eq!(counted, 1.0, "r1 divergence counter");
    let stats = r1.stats(&c).await;
    let d = &stats["replication"]["last_divergence"];
    assert_eq!(d["action"], action, "{stats}");
    assert_eq!(d["agreed_lsn"], base, "{stats}");
    assert_eq!(d["discarded_from"], base + 1, "{stats}");
    assert_eq!(d["discarded_to"], lost, "{stats}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not in the history"),
        "{stats}"
    );
    assert!(
        r1.proc.log().contains("replication history diverged"),
        "no warning in r1's log"
    );
    if let Some(r2) = &r2 {
        let n = r2
            .metric(&c, "unisondb_replication_divergences_total{action=")
            .await;
        assert_eq!(n, 1.0, "r2 divergence counter");
        // r1's truncation ended r2's stream, so r2 reconnected and ran the check against r1.
        assert!(
            r2.proc
                .log()
                .contains("truncated its WAL after a history divergence"),
            "r2 was not told that r1 truncated"
        );
    }

    // The follower adopted the hub's epoch history (also across a snapshot install).
    let hub_stats = hub.stats(&c).await;
    assert!(
        hub_stats["epochHistory"]
            .as_array()
            .is_some_and(|h| h.len() == 2),
        "{hub_stats}"
    );
    for f in std::iter::once(&r1).chain(r2.iter()) {
        let s = f.stats(&c).await;
        assert_eq!(
            s["epochHistory"],
            hub_stats["epochHistory"],
            "{}",
            f.proc.name()
        );
        assert_eq!(s["epoch"], hub_stats["epoch"]);
    }

    for r in r2.iter_mut() {
        r.stop();
    }
    r1.stop();
    hub.stop();
    assert_same_history(&hub, &r1);
    if let Some(r2) = &r2 {
        assert_same_history(&hub, r2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_restored_from_an_older_copy_relayer_truncates_and_converges() {
    restore_scenario(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_restored_relayer_with_flushed_divergent_records_rebootstraps() {
    restore_scenario(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_relayers_converge_through_a_hub_restore() {
    restore_scenario(true, false).await;
}

/// `wal.fsync: never` on the hub, SIGKILL after writes, restart, more writes. On a healthy kernel the
/// page cache survives the process, so usually nothing is lost; what this proves: the restarted hub
/// starts a new epoch, the relayer's resume runs the history check and finds no divergence (no false
/// alarm, no truncation), records reached the relayer although the hub never fsyncs on its own (the
/// streaming side asked for the fsync), and both end identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_with_fsync_never_killed_and_restarted_keeps_relayer_identical() {
    let root = tempfile::tempdir().expect("tempdir");
    let c = client();
    let never = [("UNISONDB_WAL_FSYNC", "never")];
    let mut hub = Node::new(root.path(), "hub", None, &never);
    hub.wait_ready(&c).await;
    let mut r1 = Node::new(root.path(), "r1", Some(&hub.grpc_url()), &never);
    r1.wait_ready(&c).await;

    let first = write_keys(&c, &hub, "a", 10).await;
    wait_synced(&c, &r1, first, "a09", "a-value-9").await;
    hub.proc.kill();
    hub.proc.start().expect("restart hub");
    hub.wait_ready(&c).await;
    let restored = hub.lsn(&c).await.expect("hub LSN after restart");
    let end = write_keys(&c, &hub, "b", 10).await;
    wait_synced(&c, &r1, end, "b09", "b-value-9").await;
    let divergences = r1
        .metric(&c, "unisondb_replication_divergences_total{action=")
        .await;

    r1.stop();
    hub.stop();
    assert_same_history(&hub, &r1);
    let (_, wal, _) = contents(&hub.data());
    let epoch_of = |lsn: u64| wal.iter().find(|r| r.lsn == lsn).map(|r| r.epoch);
    assert!(epoch_of(1) > Some(0), "records carry an epoch");
    assert!(
        epoch_of(end) > epoch_of(1),
        "the restarted hub writes in a newer epoch"
    );
    // Whatever the kill lost (normally nothing), the relayer agrees with the hub about it.
    if restored == first {
        assert_eq!(divergences, 0.0, "no divergence when the hub lost nothing");
    } else {
        eprintln!(
            "the kill lost LSNs {}..={first}; divergences: {divergences}",
            restored + 1
        );
    }
}

/// `PUT ?acks=1` on a restored hub: the relayer still holds records of the lost history under the
/// LSNs the hub now hands out again. Its old position must not acknowledge the new write; the 200
/// comes only once the relayer holds the new record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_from_a_diverged_relayer_do_not_count() {
    let root = tempfile::tempdir().expect("tempdir");
    let c = client();
    let mut hub = Node::new(root.path(), "hub", None, &[]);
    hub.wait_ready(&c).await;
    let mut r1 = Node::new(root.path(), "r1", Some(&hub.grpc_url()), &[]);
    r1.wait_ready(&c).await;
    let base = write_keys(&c, &hub, "a", 3).await;
    wait_synced(&c, &r1, base, "a02", "a-value-2").await;
    hub.stop();
    let backup = root.path().join("hub-backup");
    copy_dir(&hub.data(), &backup);
    hub.proc.start().expect("restart hub");
    hub.wait_ready(&c).await;
    let lost = write_keys(&c, &hub, "b", 6).await;
    wait_synced(&c, &r1, lost, "b05", "b-value-5").await;

    hub.stop();
    std::fs::remove_dir_all(hub.data()).expect("rm hub data");
    copy_dir(&backup, &hub.data());
    hub.proc.start().expect("start restored hub");
    hub.wait_ready(&c).await;
    for i in 0..3 {
        let key = format!("acked{i}");
        let r = c
            .put(hub.url(&format!(
                "/api/v1/{NS}/kv/{key}?acks=1&acks_timeout_ms=20000"
            )))
            .json(&serde_json::json!({ "value": B64.encode("new") }))
            .send()
            .await
            .expect("PUT acks=1");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{body}");
        // The relayer holds it (durably: it fsyncs before acking) when the hub says it does.
        assert_eq!(
            r1.kv(&c, &key).await.as_deref(),
            Some(&b"new"[..]),
            "acks=1 answered before the relayer had {key}"
        );
    }
    assert_eq!(r1.kv(&c, "b00").await, None);
    r1.stop();
    hub.stop();
    assert_same_history(&hub, &r1);
}

/// Total of `unisondb_replication_divergences_total` on a node (0 when it never diverged).
async fn divergences(c: &reqwest::Client, n: &Node) -> f64 {
    let body = n.text(c, "/metrics").await;
    body.lines()
        .filter(|l| l.starts_with("unisondb_replication_divergences_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// r2 holds LSNs 1..=20 (it followed the hub directly); it is then pointed at r1, a relayer that
/// lags at 10 in the same epoch while the hub is away. r2 must not throw its records away (they
/// are records r1 will get): it waits ahead, keeps serving them, and continues once r1 catches up.
/// When `restore`, the hub comes back from a copy taken at 10 instead (a new epoch from 11): r1
/// follows it, and r2's stream must be ended before anything is sent so that r2 runs the check
/// again and drops its 11..=20 of the lost history.
async fn follower_ahead_of_a_lagging_relayer(restore: bool) {
    let root = tempfile::tempdir().expect("tempdir");
    let c = client();
    let mut hub = Node::new(root.path(), "hub", None, &[]);
    hub.wait_ready(&c).await;
    let mut r1 = Node::new(root.path(), "r1", Some(&hub.grpc_url()), &[]);
    let mut r2 = Node::new(root.path(), "r2", Some(&hub.grpc_url()), &[]);
    r1.wait_ready(&c).await;
    r2.wait_ready(&c).await;
    let base = write_keys(&c, &hub, "a", 10).await;
    wait_synced(&c, &r1, base, "a09", "a-value-9").await;
    wait_synced(&c, &r2, base, "a09", "a-value-9").await;
    r1.stop();
    let backup = root.path().join("hub-backup");
    if restore {
        hub.stop();
        copy_dir(&hub.data(), &backup);
        hub.proc.start().expect("restart hub");
        hub.wait_ready(&c).await;
    }
    let ahead = write_keys(&c, &hub, "b", 10).await;
    wait_synced(&c, &r2, ahead, "b09", "b-value-9").await;

    // The hub goes away; r1 comes back (lagging at `base`), and r2 is pointed at r1.
    hub.stop();
    r1.proc.start().expect("restart r1");
    r1.wait_ready(&c).await;
    assert_eq!(r1.lsn(&c).await, Some(base));
    r2.stop();
    let mut r2 = Node::new(root.path(), "r2", Some(&r1.grpc_url()), &[]);
    r2.wait_ready(&c).await;
    // Give r2 time to connect to r1 and run the history check.
    let t = Instant::now();
    while !r2.proc.log().contains("history") && t.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r2.lsn(&c).await, Some(ahead), "r2 went back in time");
    assert_eq!(
        r2.kv(&c, "b09").await.as_deref(),
        Some(&b"b-value-9"[..]),
        "r2 dropped records its lagging upstream will get"
    );
    assert_eq!(
        divergences(&c, &r2).await,
        0.0,
        "a lagging upstream is no divergence"
    );

    if restore {
        std::fs::remove_dir_all(hub.data()).expect("rm hub data");
        copy_dir(&backup, &hub.data());
    }
    hub.proc.start().expect("restart hub");
    hub.wait_ready(&c).await;
    let end = write_keys(&c, &hub, "c", 12).await;
    wait_synced(&c, &r1, end, "c11", "c-value-11").await;
    wait_synced(&c, &r2, end, "c11", "c-value-11").await;
    let n = divergences(&c, &r2).await;
    if restore {
        assert_eq!(
            n, 1.0,
            "r2 must re-check when r1's history changes under it"
        );
        assert_eq!(
            r2.kv(&c, "b00").await,
            None,
            "r2 kept a record of the lost history"
        );
    } else {
        assert_eq!(n, 0.0, "no divergence in one history");
        assert_eq!(r2.kv(&c, "b00").await.as_deref(), Some(&b"b-value-0"[..]));
    }
    r2.stop();
    r1.stop();
    hub.stop();
    assert_same_history(&hub, &r1);
    assert_same_history(&hub, &r2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_ahead_of_a_lagging_relayer_waits_instead_of_truncating() {
    follower_ahead_of_a_lagging_relayer(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_waiting_ahead_rechecks_when_its_upstream_history_changes() {
    follower_ahead_of_a_lagging_relayer(true).await;
}
