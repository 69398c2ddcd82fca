//! Hub high availability on loopback: three real `unisondb` processes in one Raft group (cluster
//! mode), a relayer following one member, writes from several clients to any member (followers
//! proxy to the leader), and the leader SIGKILLed and restarted `RAFT_KILLS` times (5 by default).
//!
//! Afterwards: every acknowledged write is readable with its value on every member and on the
//! relayer; `/status/leader` agrees everywhere; every member's WAL is identical record by record
//! (LSN, epoch, HLC, payload checksum) up to the commit index; a record's (LSN, epoch) never names two
//! different records across members. A follower's write answer has the leader's shape. During the
//! load, linearizable reads (`?consistency=linearizable`) on another member never miss a write that
//! was acknowledged before they began.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use parking_lot::Mutex;
use serde_json::Value;
use unisondb_testkit::{loopback_config, NodeProcess, Ports, Wait};

const BIN: &str = env!("CARGO_BIN_EXE_unisondb");
const NS: &str = "ha";

struct Member {
    id: u64,
    dir: PathBuf,
    ports: Ports,
    proc: NodeProcess,
}

impl Member {
    fn url(&self, path: &str) -> String {
        self.ports.url(path)
    }
}

fn members(root: &Path, n: u64) -> Vec<Member> {
    let ports: Vec<Ports> = (0..n).map(|_| Ports::free()).collect();
    let peers: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("\"{}=127.0.0.1:{}\"", i + 1, p.grpc))
        .collect();
    (0..n)
        .map(|i| {
            let id = i + 1;
            let dir = root.join(format!("hub-{i}"));
            let p = ports[i as usize];
            let mut yaml = loopback_config(&dir, p, &[NS], None, "");
            yaml.push_str(&format!(
                "cluster:\n  node_id: {id}\n  peers: [{}]\n  advertise_http: 127.0.0.1:{}\n  \
                 election_timeout_ms: 800\n  heartbeat_ms: 200\n",
                peers.join(", "),
                p.http
            ));
            let proc = NodeProcess::new(BIN, &format!("hub-{i}"), &dir, yaml).dump_log_on_panic();
            Member {
                id,
                dir,
                ports: p,
                proc,
            }
        })
        .collect()
}

async fn get_json(c: &reqwest::Client, url: &str) -> Option<Value> {
    let r = c
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// The member that says it leads (its own `/status/leader` role), if exactly one does.
async fn leader(c: &reqwest::Client, ms: &[Member]) -> Option<usize> {
    let mut found = Vec::new();
    for (i, m) in ms.iter().enumerate() {
        if !m.proc.is_started() {
            continue;
        }
        if let Some(v) = get_json(c, &m.url(&format!("/status/leader?namespace={NS}"))).await {
            if v["role"] == "leader" {
                found.push(i);
            }
        }
    }
    (found.len() == 1).then(|| found[0])
}

async fn wait_leader(
    c: &reqwest::Client,
    ms: &[Member],
    not: Option<usize>,
) -> anyhow::Result<usize> {
    Ok(Wait::new("a single Raft leader", Duration::from_secs(30))
        .every(Duration::from_millis(100))
        .until_async(async || match leader(c, ms).await {
            Some(i) if Some(i) != not => Ok(Some(i)),
            other => Err(format!("leader now: {other:?}")),
        })
        .await?)
}

/// An acknowledged write: key, value, the LSN the answer named.
type Acks = Arc<Mutex<Vec<(String, String, u64)>>>;

/// Counters of the load: failed write attempts, linearizable reads done, and stale ones.
#[derive(Default)]
struct Load {
    failures: AtomicU64,
    linear_reads: AtomicU64,
    stale_reads: AtomicU64,
}

fn spawn_writers(
    urls: Vec<String>,
    threads: usize,
    stop: Arc<AtomicBool>,
    acks: Acks,
    load: Arc<Load>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..threads)
        .map(|t| {
            let (urls, stop, acks, load) = (urls.clone(), stop.clone(), acks.clone(), load.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("w{t}-{i}");
                    let value = format!("value-{t}-{i}");
                    // Any member: followers proxy to the leader.
                    let base = &urls[(i as usize + t) % urls.len()];
                    let r = c
                        .put(format!("{base}/api/v1/{NS}/kv/{key}"))
                        .json(&serde_json::json!({"value": B64.encode(&value)}))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let body: Value = r.json().await.unwrap_or_default();
                            let lsn = body["lsn"].as_u64().unwrap_or(0);
                            if i.is_multiple_of(5) {
                                // A linearizable read on another member sees the acknowledged write
                                // (or fails during an election: never an older value).
                                let other = &urls[(i as usize + t + 1) % urls.len()];
                                let r = c
                                    .get(format!(
                                        "{other}/api/v1/{NS}/kv/{key}?consistency=linearizable"
                                    ))
                                    .timeout(Duration::from_secs(5))
                                    .send()
                                    .await;
                                if let Ok(r) = r {
                                    if r.status().is_success() || r.status().as_u16() == 404 {
                                        load.linear_reads.fetch_add(1, Ordering::Relaxed);
                                        let v: Value = r.json().await.unwrap_or_default();
                                        let got = B64
                                            .decode(v["value"].as_str().unwrap_or_default())
                                            .unwrap_or_default();
                                        if got != value.as_bytes() {
                                            eprintln!("stale linearizable read of {key}: {v}");
                                            load.stale_reads.fetch_add(1, Ordering::Relaxed);
                                        }
                                    }
                                }
                            }
                            acks.lock().push((key, value, lsn));
                        }
                        _ => {
                            load.failures.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            })
        })
        .collect()
}

/// `unisondb wal inspect --json` of one data directory: the records of `NS`.
fn wal_records(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let out = std::process::Command::new(BIN)
        .args(["wal", "inspect", "--json"])
        .arg(dir.join("data"))
        .output()
        .context("running unisondb wal inspect")?;
    if !out.status.success() {
        bail!(
            "wal inspect failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v[NS].as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hubs_commit_on_a_quorum_and_fail_over() -> anyhow::Result<()> {
    let kills: usize = std::env::var("RAFT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let root = tempfile::tempdir()?;
    let c = reqwest::Client::new();
    let mut ms = members(root.path(), 3);
    for m in ms.iter_mut() {
        m.proc.start()?;
    }
    for m in &ms {
        m.proc
            .wait_http_ok(&c, &m.url("/readyz"), Duration::from_secs(30))
            .await?;
    }
    let first = wait_leader(&c, &ms, None).await?;

    // A follower's write is proxied and answered like the leader's.
    let follower = (first + 1) % ms.len();
    let put = |url: String, v: &str| {
        c.put(url)
            .json(&serde_json::json!({"value": B64.encode(v)}))
            .send()
    };
    let a = put(ms[first].url(&format!("/api/v1/{NS}/kv/probe-a")), "a").await?;
    let b = put(ms[follower].url(&format!("/api/v1/{NS}/kv/probe-b")), "b").await?;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let (a, b): (Value, Value) = (a.json().await?, b.json().await?);
    assert_eq!(a["success"], b["success"]);
    assert!(b["lsn"].as_u64() > a["lsn"].as_u64(), "{a} then {b}");
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(
        keys(&a),
        keys(&b),
        "same answer shape from leader and follower"
    );

    // A relayer following member 2 streams committed records only.
    let relayer_dir = root.path().join("relayer");
    let rports = Ports::free();
    let ryaml = loopback_config(
        &relayer_dir,
        rports,
        &[NS],
        Some(&ms[1].ports.grpc_url()),
        "",
    );
    let mut relayer = NodeProcess::new(BIN, "relayer", &relayer_dir, ryaml).dump_log_on_panic();
    relayer.start()?;
    relayer
        .wait_http_ok(&c, &rports.url("/healthz"), Duration::from_secs(30))
        .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::default();
    let load = Arc::new(Load::default());
    let urls: Vec<String> = ms.iter().map(|m| m.url("")).collect();
    let writers = spawn_writers(urls, 4, stop.clone(), acks.clone(), load.clone());

    let started = Instant::now();
    let mut failover_ms = Vec::new();
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let l = wait_leader(&c, &ms, None).await?;
        let before = acks.lock().len();
        let t = Instant::now();
        ms[l].proc.kill();
        let new = wait_leader(&c, &ms, Some(l)).await?;
        // Writes resume on the new leader.
        Wait::new("writes after failover", Duration::from_secs(30))
            .every(Duration::from_millis(20))
            .until_async(async || {
                let n = acks.lock().len();
                if n > before + 5 {
                    Ok(Some(()))
                } else {
                    Err(format!("{n} acks"))
                }
            })
            .await?;
        failover_ms.push(t.elapsed().as_millis());
        eprintln!(
            "kill {}: leader {} (node {}) killed, node {} leads, writes resumed after {} ms",
            k + 1,
            l,
            ms[l].id,
            ms[new].id,
            t.elapsed().as_millis()
        );
        ms[l].proc.start()?;
        ms[l]
            .proc
            .wait_http_ok(&c, &ms[l].url("/readyz"), Duration::from_secs(30))
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    let acks = acks.lock().clone();
    eprintln!(
        "{} acknowledged writes, {} failed attempts, {} linearizable reads, {kills} kills in {:?}; \
         failover ms {failover_ms:?}",
        acks.len(),
        load.failures.load(Ordering::Relaxed),
        load.linear_reads.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert!(acks.len() > 50, "the load made progress");
    assert!(load.linear_reads.load(Ordering::Relaxed) > 5);
    assert_eq!(
        load.stale_reads.load(Ordering::Relaxed),
        0,
        "a linearizable read returned less than an acknowledged write"
    );

    // Convergence: one leader everyone agrees on, every member at the same applied LSN.
    let commit = Wait::new("members to converge", Duration::from_secs(30))
        .every(Duration::from_millis(100))
        .until_async(async || {
            let mut lsns = Vec::new();
            let mut leaders = Vec::new();
            for m in &ms {
                let o = get_json(&c, &m.url(&format!("/api/v1/{NS}/offset"))).await;
                let s = get_json(&c, &m.url(&format!("/status/leader?namespace={NS}"))).await;
                lsns.push(o.and_then(|o| o["lsn"].as_u64()));
                leaders.push(s.and_then(|s| s["leader_id"].as_u64()));
            }
            let same = |v: &[Option<u64>]| v.iter().all(|x| x.is_some() && *x == v[0]);
            if same(&lsns) && same(&leaders) {
                Ok(Some(lsns[0].unwrap_or(0)))
            } else {
                Err(format!("lsns {lsns:?} leaders {leaders:?}"))
            }
        })
        .await?;
    // Every member knows every other's HTTP address (learned from the Raft RPCs both ways).
    for m in &ms {
        let p = get_json(&c, &m.url(&format!("/status/peers?namespace={NS}")))
            .await
            .context("/status/peers")?;
        let peers = p["peers"].as_array().cloned().unwrap_or_default();
        assert_eq!(peers.len(), ms.len(), "{p}");
        for (peer, other) in peers.iter().zip(&ms) {
            assert_eq!(peer["id"].as_u64(), Some(other.id), "{p}");
            assert_eq!(
                peer["http_addr"].as_str(),
                Some(format!("127.0.0.1:{}", other.ports.http).as_str()),
                "{p}"
            );
        }
    }
    let max_ack = acks.iter().map(|a| a.2).max().unwrap_or(0);
    assert!(
        commit >= max_ack,
        "commit {commit} below an acked LSN {max_ack}"
    );
    Wait::new("the relayer to catch up", Duration::from_secs(30))
        .every(Duration::from_millis(100))
        .until_async(async || {
            let o = get_json(&c, &rports.url(&format!("/api/v1/{NS}/offset"))).await;
            match o.and_then(|o| o["lsn"].as_u64()) {
                Some(l) if l >= commit => Ok(Some(())),
                other => Err(format!("relayer at {other:?}, commit {commit}")),
            }
        })
        .await?;

    // Every acknowledged write, with its value, on every member and on the relayer.
    let mut bases: Vec<String> = ms.iter().map(|m| m.url("")).collect();
    bases.push(rports.url(""));
    for base in &bases {
        for (key, value, _) in &acks {
            let v = get_json(&c, &format!("{base}/api/v1/{NS}/kv/{key}"))
                .await
                .with_context(|| format!("{key} missing on {base}"))?;
            let got = B64.decode(v["value"].as_str().unwrap_or_default())?;
            assert_eq!(got, value.as_bytes(), "{key} on {base}");
        }
    }

    // Identical WALs up to the commit index.
    for m in ms.iter_mut() {
        m.proc.terminate(Duration::from_secs(20))?;
    }
    relayer.terminate(Duration::from_secs(20))?;
    let walls: Vec<Vec<Value>> = ms
        .iter()
        .map(|m| wal_records(&m.dir))
        .collect::<anyhow::Result<_>>()?;
    let fields = |r: &Value| {
        (
            r["lsn"].as_u64(),
            r["epoch"].as_u64(),
            r["hlc"].as_u64(),
            r["payload_crc32c"].as_u64(),
        )
    };
    let mut by_id: BTreeMap<(u64, u64), (Option<u64>, Option<u64>)> = BTreeMap::new();
    for (i, w) in walls.iter().enumerate() {
        let upto: Vec<_> = w
            .iter()
            .filter(|r| r["lsn"].as_u64().unwrap_or(0) <= commit)
            .map(fields)
            .collect();
        assert_eq!(
            upto.len() as u64,
            commit,
            "member {i} holds every committed record"
        );
        assert_eq!(
            upto,
            walls[0]
                .iter()
                .filter(|r| r["lsn"].as_u64().unwrap_or(0) <= commit)
                .map(fields)
                .collect::<Vec<_>>(),
            "member {i}'s WAL differs from member 0's"
        );
        // (LSN, epoch) names one record across members, committed or not.
        for r in w {
            let (lsn, epoch, hlc, crc) = fields(r);
            let id = (lsn.unwrap_or(0), epoch.unwrap_or(0));
            let prev = by_id.entry(id).or_insert((hlc, crc));
            assert_eq!(*prev, (hlc, crc), "two different records at {id:?}");
        }
    }
    // Every epoch in the log is a Raft term; the history climbs.
    let epochs: Vec<u64> = walls[0]
        .iter()
        .filter_map(|r| r["epoch"].as_u64())
        .collect();
    assert!(
        epochs.windows(2).all(|w| w[0] <= w[1]),
        "epochs never go back"
    );
    Ok(())
}

/// Without a quorum there is no leader: writes (and linearizable reads) answer 503 with
/// `Retry-After`, local reads still answer, and `/status/leader` names no leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_writes_are_refused_with_retry_after() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let c = reqwest::Client::new();
    // Only member 2 runs (1 of 3): it never hears of a leader and cannot become one.
    let mut ms = members(root.path(), 3);
    let m = &mut ms[1];
    m.proc.start()?;
    m.proc
        .wait_http_ok(&c, &m.url("/readyz"), Duration::from_secs(30))
        .await?;
    // Past an election timeout, so the member has tried and failed to get elected.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = c
        .put(m.url(&format!("/api/v1/{NS}/kv/k")))
        .json(&serde_json::json!({"value": B64.encode("v")}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = r.json().await?;
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("leader"),
        "{body}"
    );
    let r = c
        .get(m.url(&format!("/api/v1/{NS}/kv/k?consistency=linearizable")))
        .send()
        .await?;
    assert_eq!(
        r.status().as_u16(),
        503,
        "no linearizable read without a leader"
    );
    let r = c.get(m.url(&format!("/api/v1/{NS}/kv/k"))).send().await?;
    assert_eq!(r.status().as_u16(), 404, "local reads still answer");
    let s = get_json(&c, &m.url(&format!("/status/leader?namespace={NS}")))
        .await
        .context("/status/leader")?;
    assert!(s["leader_id"].is_null(), "{s}");
    assert_ne!(s["role"], "leader", "{s}");
    m.proc.terminate(Duration::from_secs(20))?;
    Ok(())
}
