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
use unisondb_testkit::{loopback_config, NodeProcess, Ports, TestCa, Wait};

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
    (0..n as usize)
        .map(|i| member(root, &ports, i, n as usize, ""))
        .collect()
}

/// Member `i` (id `i + 1`) of a group whose config lists the first `listed` of `ports`; `extra`
/// goes into its `cluster` section. Election and heartbeat timeouts are the defaults.
fn member(root: &Path, ports: &[Ports], i: usize, listed: usize, extra: &str) -> Member {
    let peers: Vec<String> = ports[..listed]
        .iter()
        .enumerate()
        .map(|(i, p)| format!("\"{}=127.0.0.1:{}\"", i + 1, p.grpc))
        .collect();
    let id = i as u64 + 1;
    let dir = root.join(format!("hub-{i}"));
    let p = ports[i];
    let mut yaml = loopback_config(&dir, p, &[NS], None, "");
    yaml.push_str(&format!(
        "cluster:\n  node_id: {id}\n  peers: [{}]\n  advertise_http: 127.0.0.1:{}\n{extra}",
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

/// Starts every member and waits until each is ready.
async fn start_all(c: &reqwest::Client, ms: &mut [Member]) -> anyhow::Result<()> {
    for m in ms.iter_mut() {
        m.proc.start()?;
    }
    for m in ms.iter() {
        m.proc
            .wait_http_ok(c, &m.url("/readyz"), Duration::from_secs(30))
            .await?;
    }
    Ok(())
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

/// An acknowledged write: key, value, and from its answer the LSN, the Raft term and the leader
/// that committed it (`x-unisondb-raft-term`, `x-unisondb-raft-leader`).
#[derive(Clone, Debug)]
struct Ack {
    key: String,
    value: String,
    lsn: u64,
    term: Option<u64>,
    leader: Option<u64>,
}

type Acks = Arc<Mutex<Vec<Ack>>>;

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
                            let header = |name: &str| {
                                r.headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .and_then(|v| v.parse::<u64>().ok())
                            };
                            let (term, leader) = (
                                header("x-unisondb-raft-term"),
                                header("x-unisondb-raft-leader"),
                            );
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
                            acks.lock().push(Ack {
                                key,
                                value,
                                lsn,
                                term,
                                leader,
                            });
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

/// Every key and value of `NS` at `base`, in key order (scan pages).
async fn scan_all(c: &reqwest::Client, base: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut q = vec![("limit", "1000".to_string())];
        if let Some(a) = &after {
            q.push(("after", a.clone()));
        }
        let v: Value = c
            .get(format!("{base}/api/v1/{NS}/kv"))
            .query(&q)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for it in v["items"].as_array().cloned().unwrap_or_default() {
            out.push((
                it["key"].as_str().unwrap_or_default().to_string(),
                it["value"].as_str().unwrap_or_default().to_string(),
            ));
        }
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return Ok(out),
        }
    }
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
    start_all(&c, &mut ms).await?;
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
    let mut sorted = failover_ms.clone();
    sorted.sort_unstable();
    let pct = |p: f64| {
        let i = (sorted.len() as f64 * p).ceil() as usize;
        sorted
            .get(i.clamp(1, sorted.len().max(1)) - 1)
            .copied()
            .unwrap_or(0)
    };
    eprintln!(
        "failover (SIGKILL of the leader -> 5 more acknowledged writes), default timeouts: \
         p50 {} ms, p99 {} ms, max {} ms over {kills} kills",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
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

    verify(&c, &mut ms, &acks, Some((&mut relayer, rports)), Some(1)).await?;
    Ok(())
}

/// Checks after a run: every acknowledged write answer named its term and leader, and no term had
/// two leaders; the members converge (one leader, one applied LSN, each knows the others' HTTP
/// addresses) at a commit index at or past every acknowledged LSN; the relayer (if any) catches
/// up; every acknowledged write has its value on every member and the relayer. Then stops them
/// and compares their WALs record by record from LSN `wal_from` up to the commit index. Returns it.
async fn verify(
    c: &reqwest::Client,
    ms: &mut [Member],
    acks: &[Ack],
    mut relayer: Option<(&mut NodeProcess, Ports)>,
    wal_from: Option<u64>,
) -> anyhow::Result<u64> {
    let mut leaders_of_term: BTreeMap<u64, std::collections::BTreeSet<u64>> = BTreeMap::new();
    for a in acks {
        let (Some(term), Some(leader)) = (a.term, a.leader) else {
            bail!(
                "write {} (LSN {}) was acknowledged without its term and leader",
                a.key,
                a.lsn
            );
        };
        leaders_of_term.entry(term).or_default().insert(leader);
    }
    for (term, leaders) in &leaders_of_term {
        assert_eq!(leaders.len(), 1, "term {term} had leaders {leaders:?}");
    }
    eprintln!("acknowledged writes by term (leader): {leaders_of_term:?}");
    // Convergence: one leader everyone agrees on, every member at the same applied LSN.
    let commit = Wait::new("members to converge", Duration::from_secs(30))
        .every(Duration::from_millis(100))
        .until_async(async || {
            let mut lsns = Vec::new();
            let mut leaders = Vec::new();
            for m in ms.iter() {
                let o = get_json(c, &m.url(&format!("/api/v1/{NS}/offset"))).await;
                let s = get_json(c, &m.url(&format!("/status/leader?namespace={NS}"))).await;
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
        .await;
    let commit = match commit {
        Ok(c) => c,
        Err(e) => {
            for m in ms.iter() {
                let log = m.proc.log();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!(
                    "--- member {} log (last 60 of {} lines) ---\n{}",
                    m.id,
                    lines.len(),
                    lines[lines.len().saturating_sub(60)..].join("\n")
                );
            }
            return Err(e.into());
        }
    };
    // Every member lists the group and knows the leader's HTTP address (learned from the Raft
    // RPCs; followers proxy there). Other followers' addresses are known only once they talked.
    for m in ms.iter() {
        let p = get_json(c, &m.url(&format!("/status/peers?namespace={NS}")))
            .await
            .context("/status/peers")?;
        let peers = p["peers"].as_array().cloned().unwrap_or_default();
        assert_eq!(peers.len(), ms.len(), "{p}");
        for (peer, other) in peers.iter().zip(ms.iter()) {
            assert_eq!(peer["id"].as_u64(), Some(other.id), "{p}");
            if peer["leader"] == true || other.id == m.id {
                assert_eq!(
                    peer["http_addr"].as_str(),
                    Some(format!("127.0.0.1:{}", other.ports.http).as_str()),
                    "{p}"
                );
            }
        }
    }
    let max_ack = acks.iter().map(|a| a.lsn).max().unwrap_or(0);
    assert!(
        commit >= max_ack,
        "commit {commit} below an acked LSN {max_ack}"
    );
    if let Some((_, rports)) = &relayer {
        Wait::new("the relayer to catch up", Duration::from_secs(30))
            .every(Duration::from_millis(100))
            .until_async(async || {
                let o = get_json(c, &rports.url(&format!("/api/v1/{NS}/offset"))).await;
                match o.and_then(|o| o["lsn"].as_u64()) {
                    Some(l) if l >= commit => Ok(Some(())),
                    other => Err(format!("relayer at {other:?}, commit {commit}")),
                }
            })
            .await?;
    }

    // Every acknowledged write, with its value, on every member and on the relayer.
    let mut bases: Vec<String> = ms.iter().map(|m| m.url("")).collect();
    if let Some((_, rports)) = &relayer {
        bases.push(rports.url(""));
    }
    for base in &bases {
        for Ack { key, value, .. } in acks {
            let v = get_json(c, &format!("{base}/api/v1/{NS}/kv/{key}"))
                .await
                .with_context(|| format!("{key} missing on {base}"))?;
            let got = B64.decode(v["value"].as_str().unwrap_or_default())?;
            assert_eq!(got, value.as_bytes(), "{key} on {base}");
        }
    }

    // The whole key space, key by key, is the same on every member (and the relayer).
    let reference = scan_all(c, &bases[0]).await?;
    assert!(reference.len() >= acks.len(), "{} keys", reference.len());
    for base in &bases[1..] {
        let other = scan_all(c, base).await?;
        assert!(
            other == reference,
            "{base}'s key space differs from {}'s",
            bases[0]
        );
    }

    // Identical WALs up to the commit index.
    for m in ms.iter_mut() {
        m.proc.terminate(Duration::from_secs(20))?;
    }
    if let Some((r, _)) = relayer.as_mut() {
        r.terminate(Duration::from_secs(20))?;
    }
    let walls: Vec<Vec<Value>> = ms
        .iter()
        .map(|m| wal_records(&m.dir))
        .collect::<anyhow::Result<_>>()?;
    // From `wal_from`, or (None) from the first LSN every member still holds (after purges).
    let wal_from = match wal_from {
        Some(f) => f,
        None => walls
            .iter()
            .map(|w| {
                w.first()
                    .and_then(|r| r["lsn"].as_u64())
                    .unwrap_or(u64::MAX)
            })
            .max()
            .unwrap_or(1),
    };
    assert!(
        wal_from <= commit,
        "the WALs overlap (from {wal_from}, commit {commit})"
    );
    eprintln!("comparing WALs from LSN {wal_from} to {commit}");
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
            .filter(|r| (wal_from..=commit).contains(&r["lsn"].as_u64().unwrap_or(0)))
            .map(fields)
            .collect();
        assert_eq!(
            upto.len() as u64,
            commit + 1 - wal_from,
            "member {i} holds every committed record"
        );
        assert_eq!(
            upto,
            walls[0]
                .iter()
                .filter(|r| (wal_from..=commit).contains(&r["lsn"].as_u64().unwrap_or(0)))
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
    Ok(commit)
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("/proc/PID/stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ") state".
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// An idle group costs heartbeats and pre-vote ticks, not a core: each member of a quiet group of
/// three uses under a tenth of a core (debug build). Once a member's auto-join task spun in its
/// `select!` after joining, burning about a whole core per member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_group_stays_idle() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let c = reqwest::Client::new();
    let mut ms = members(root.path(), 3);
    start_all(&c, &mut ms).await?;
    wait_leader(&c, &ms, None).await?;
    // Past start-up work and the bootstrap's first writes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pids: Vec<u32> = ms
        .iter()
        .map(|m| m.proc.pid().context("member not running"))
        .collect::<anyhow::Result<_>>()?;
    let before: Vec<f64> = pids
        .iter()
        .map(|p| cpu_seconds(*p))
        .collect::<anyhow::Result<_>>()?;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let span = t.elapsed().as_secs_f64();
    for (i, pid) in pids.iter().enumerate() {
        let used = cpu_seconds(*pid)? - before[i];
        eprintln!(
            "member {}: {:.1}% of a core while idle",
            ms[i].id,
            100.0 * used / span
        );
        assert!(
            used < 0.1 * span,
            "member {} used {used:.2} s of CPU in {span:.1} s of idleness",
            ms[i].id
        );
    }
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

/// Runs `unisondb cluster ARGS --url URL --json --result-file F`; its exit code and the result file.
fn cluster_cli(url: &str, args: &[&str], dir: &Path) -> anyhow::Result<(i32, String)> {
    let f = dir.join(format!("result-{}", args.join("-")));
    let out = std::process::Command::new(BIN)
        .arg("cluster")
        .args(args)
        .args(["--url", url, "--json", "--result-file"])
        .arg(&f)
        .env_remove("UNISONDB_NAMESPACE")
        .output()
        .context("running unisondb cluster")?;
    eprintln!(
        "unisondb cluster {args:?}: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok((
        out.status.code().unwrap_or(-1),
        std::fs::read_to_string(&f).unwrap_or_default(),
    ))
}

/// `GET /api/v1/cluster/members` of `url`: (leader, voters, learners).
async fn membership(c: &reqwest::Client, url: &str) -> Option<(Option<u64>, Vec<u64>, Vec<u64>)> {
    let v = get_json(c, &format!("{url}/api/v1/cluster/members?namespace={NS}")).await?;
    let mut voters = Vec::new();
    let mut learners = Vec::new();
    for m in v["members"].as_array()? {
        let id = m["id"].as_u64()?;
        if m["voter"].as_bool()? {
            voters.push(id);
        } else {
            learners.push(id);
        }
    }
    Some((v["leader"].as_u64(), voters, learners))
}

async fn wait_voters(c: &reqwest::Client, url: &str, want: &[u64]) -> anyhow::Result<()> {
    Wait::new("the group's voters", Duration::from_secs(60))
        .every(Duration::from_millis(100))
        .until_async(async || match membership(c, url).await {
            Some((Some(_), voters, learners)) if voters == want && learners.is_empty() => {
                Ok(Some(()))
            }
            other => Err(format!("membership {other:?}, want voters {want:?}")),
        })
        .await?;
    Ok(())
}

/// Waits until `n` more writes than `before` were acknowledged; how long that took.
async fn writes_resume(acks: &Acks, before: usize, n: usize) -> anyhow::Result<Duration> {
    let t = Instant::now();
    Wait::new("writes to resume", Duration::from_secs(30))
        .every(Duration::from_millis(10))
        .until_async(async || {
            let k = acks.lock().len();
            if k >= before + n {
                Ok(Some(()))
            } else {
                Err(format!("{k} acks"))
            }
        })
        .await?;
    Ok(t.elapsed())
}

/// Scale 3 -> 5 -> 3 under a write load: members 4 and 5 start with configs listing five peers (the
/// old members' list three) and join by themselves (learner, caught up, voter); then they are
/// removed, one over HTTP through a follower (forwarded to the leader), one with `unisondb cluster
/// remove`, and stopped. Adds and removes are idempotent. Afterwards every acknowledged write is on
/// the remaining members and their WALs are identical up to the commit index.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_scales_three_to_five_to_three_under_load() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let c = reqwest::Client::new();
    let ports: Vec<Ports> = (0..5).map(|_| Ports::free()).collect();
    let mut ms: Vec<Member> = (0..3)
        .map(|i| member(root.path(), &ports, i, 3, ""))
        .collect();
    start_all(&c, &mut ms).await?;
    let l = wait_leader(&c, &ms, None).await?;
    wait_voters(&c, &ms[l].url(""), &[1, 2, 3]).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::default();
    let load = Arc::new(Load::default());
    let urls: Vec<String> = ms.iter().map(|m| m.url("")).collect();
    let writers = spawn_writers(urls, 3, stop.clone(), acks.clone(), load.clone());
    writes_resume(&acks, 0, 20).await?;

    // Scale up: nobody calls anything; the new members ask to join.
    let t = Instant::now();
    for i in 3..5 {
        let mut m = member(root.path(), &ports, i, 5, "");
        m.proc.start()?;
        ms.push(m);
    }
    wait_voters(&c, &ms[l].url(""), &[1, 2, 3, 4, 5]).await?;
    eprintln!("members 4 and 5 joined as voters after {:?}", t.elapsed());
    // Every member, old and new, sees five voters and the same leader.
    for m in &ms {
        let (leader, voters, _) = membership(&c, &m.url(""))
            .await
            .context("/api/v1/cluster/members")?;
        assert_eq!(voters, vec![1, 2, 3, 4, 5], "on member {}", m.id);
        assert_eq!(leader, Some(ms[l].id), "on member {}", m.id);
    }
    let peers = get_json(&c, &ms[3].url(&format!("/status/peers?namespace={NS}")))
        .await
        .context("/status/peers")?;
    assert!(
        peers["peers"]
            .as_array()
            .is_some_and(|p| p.len() == 5 && p.iter().all(|p| p["voter"] == true)),
        "{peers}"
    );
    // Adding a voter again changes nothing (through a follower and the CLI).
    let follower = (l + 1) % 3;
    let (code, out) = cluster_cli(
        &ms[follower].url(""),
        &[
            "add",
            "2",
            "--grpc-addr",
            &format!("127.0.0.1:{}", ports[1].grpc),
        ],
        root.path(),
    )?;
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out)?;
    assert_eq!(v["namespaces"][NS], "already_voter", "{v}");
    let before = acks.lock().len();
    writes_resume(&acks, before, 20).await?;

    // Scale down: member 5 over HTTP through a follower, member 4 with the CLI.
    let r = c
        .delete(ms[follower].url("/api/v1/cluster/members/5"))
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await?;
    assert_eq!(status.as_u16(), 200, "{v}");
    assert_eq!(v["namespaces"][NS], "removed", "{v}");
    let (code, out) = cluster_cli(&ms[l].url(""), &["remove", "4"], root.path())?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        serde_json::from_str::<Value>(&out)?["namespaces"][NS],
        "removed"
    );
    let again = c
        .delete(ms[l].url("/api/v1/cluster/members/5"))
        .send()
        .await?;
    let v: Value = again.json().await?;
    assert_eq!(v["namespaces"][NS], "not_member", "removing twice: {v}");
    wait_voters(&c, &ms[l].url(""), &[1, 2, 3]).await?;
    let (code, out) = cluster_cli(&ms[l].url(""), &["members"], root.path())?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        serde_json::from_str::<Value>(&out)?["members"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    // The StatefulSet shrinks: the removed members stop. A removed member does not add itself back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_voters(&c, &ms[l].url(""), &[1, 2, 3]).await?;
    for m in ms[3..].iter_mut() {
        m.proc.terminate(Duration::from_secs(20))?;
    }
    let before = acks.lock().len();
    writes_resume(&acks, before, 20).await?;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    let acks = acks.lock().clone();
    eprintln!(
        "{} acknowledged writes, {} failed attempts",
        acks.len(),
        load.failures.load(Ordering::Relaxed)
    );
    assert_eq!(
        load.stale_reads.load(Ordering::Relaxed),
        0,
        "a linearizable read returned less than an acknowledged write"
    );
    verify(&c, &mut ms[..3], &acks, None, Some(1)).await?;
    Ok(())
}

/// A planned leader restart hands the leadership off: `POST /api/v1/cluster/step-down` on the
/// leader names the new leader, then SIGTERM on that leader hands off again before it exits.
/// Prints the time from each request/signal to the next acknowledged writes; then the usual checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_is_handed_off_on_step_down_and_sigterm() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let c = reqwest::Client::new();
    let mut ms = members(root.path(), 3);
    start_all(&c, &mut ms).await?;
    let first = wait_leader(&c, &ms, None).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::default();
    let load = Arc::new(Load::default());
    let urls: Vec<String> = ms.iter().map(|m| m.url("")).collect();
    let writers = spawn_writers(urls, 3, stop.clone(), acks.clone(), load.clone());
    writes_resume(&acks, 0, 20).await?;

    // Step down on request.
    let before = acks.lock().len();
    let t = Instant::now();
    let r = c
        .post(ms[first].url("/api/v1/cluster/step-down"))
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await?;
    assert_eq!(status.as_u16(), 200, "{v}");
    let to = v["new_leaders"][NS].as_u64().context("a new leader")?;
    assert_ne!(to, ms[first].id, "{v}");
    let answered = t.elapsed();
    let resumed = writes_resume(&acks, before, 5).await? + answered;
    let second = wait_leader(&c, &ms, Some(first)).await?;
    assert_eq!(ms[second].id, to, "the named member leads");
    eprintln!("step-down: answered after {answered:?}, writes resumed after {resumed:?} ({v})");

    // SIGTERM on the new leader: it hands off, then exits 0.
    let before = acks.lock().len();
    let t = Instant::now();
    let pid = ms[second].proc.pid().context("pid")?;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(killed.success());
    let resumed = writes_resume(&acks, before, 5).await?;
    let third = wait_leader(&c, &ms, Some(second)).await?;
    eprintln!(
        "SIGTERM: writes resumed after {:?}; node {} leads",
        resumed.max(t.elapsed().min(resumed)),
        ms[third].id
    );
    let exit = ms[second].proc.terminate(Duration::from_secs(30))?;
    assert!(
        exit.is_none_or(|s| s.success()),
        "exit after SIGTERM: {exit:?}"
    );
    ms[second].proc.start()?;
    ms[second]
        .proc
        .wait_http_ok(&c, &ms[second].url("/readyz"), Duration::from_secs(30))
        .await?;
    let before = acks.lock().len();
    writes_resume(&acks, before, 20).await?;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    let acks = acks.lock().clone();
    eprintln!(
        "{} acknowledged writes, {} failed attempts",
        acks.len(),
        load.failures.load(Ordering::Relaxed)
    );
    verify(&c, &mut ms, &acks, None, Some(1)).await?;
    Ok(())
}

/// `GET /api/v1/{NS}/stats` of `url`: the first LSN still in the WAL.
async fn wal_first_lsn(c: &reqwest::Client, url: &str) -> Option<u64> {
    get_json(c, &format!("{url}/api/v1/{NS}/stats"))
        .await?
        .get("walFirstLsn")?
        .as_u64()
}

/// A member whose volume was lost rejoins by snapshot: a follower is SIGKILLed and its data
/// directory deleted; the group writes on until every member has purged its log (snapshots every
/// 100 entries, WAL retention dropping what the snapshot and checkpoint cover); the empty member
/// restarts, receives the leader's snapshot (its WAL then starts after LSN 1) and catches up.
/// Afterwards the usual checks: every acknowledged write and the whole key space on every member,
/// WALs identical from the first LSN all members hold up to the commit index.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_lost_its_volume_rejoins_by_snapshot() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let c = reqwest::Client::new();
    let ports: Vec<Ports> = (0..3).map(|_| Ports::free()).collect();
    let extra = "  snapshot_every_entries: 100\n  keep_log_entries: 10\n\
                 wal:\n  segment_size_bytes: 65536\n  retention_max_bytes: 1\n\
                 memtable:\n  size_bytes: 65536\n";
    let mut ms: Vec<Member> = (0..3)
        .map(|i| member(root.path(), &ports, i, 3, extra))
        .collect();
    start_all(&c, &mut ms).await?;
    let l = wait_leader(&c, &ms, None).await?;
    let lost = (l + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|i| *i != lost).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::default();
    let load = Arc::new(Load::default());
    let urls: Vec<String> = others.iter().map(|i| ms[*i].url("")).collect();
    let writers = spawn_writers(urls, 3, stop.clone(), acks.clone(), load.clone());
    writes_resume(&acks, 0, 50).await?;

    ms[lost].proc.kill();
    std::fs::remove_dir_all(ms[lost].dir.join("data"))?;
    eprintln!(
        "member {} killed and its data directory deleted",
        ms[lost].id
    );
    // Large values fill WAL segments fast; both remaining members purge their logs past what the
    // lost member could ask for.
    let big = "x".repeat(3000);
    let mut filled = 0u64;
    let fill_until = Instant::now() + Duration::from_secs(300);
    loop {
        let mut firsts = Vec::new();
        for i in &others {
            firsts.push(wal_first_lsn(&c, &ms[*i].url("")).await);
        }
        if firsts.iter().all(|f| f.is_some_and(|f| f > 200)) {
            break;
        }
        if Instant::now() > fill_until {
            bail!("the remaining members did not purge their logs: first WAL LSNs {firsts:?}");
        }
        for _ in 0..20 {
            filled += 1;
            let key = format!("fill-{filled}");
            let r = c
                .put(ms[others[0]].url(&format!("/api/v1/{NS}/kv/{key}")))
                .json(&serde_json::json!({"value": B64.encode(&big)}))
                .send()
                .await;
            let Ok(r) = r else { continue };
            if !r.status().is_success() {
                continue;
            }
            let header = |name: &str| {
                r.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
            };
            let (term, leader) = (
                header("x-unisondb-raft-term"),
                header("x-unisondb-raft-leader"),
            );
            let body: Value = r.json().await.unwrap_or_default();
            acks.lock().push(Ack {
                key,
                value: big.clone(),
                lsn: body["lsn"].as_u64().unwrap_or(0),
                term,
                leader,
            });
        }
    }
    ms[lost].proc.start()?;
    ms[lost]
        .proc
        .wait_http_ok(&c, &ms[lost].url("/readyz"), Duration::from_secs(30))
        .await?;
    let back = Wait::new(
        "the lost member to install a snapshot",
        Duration::from_secs(60),
    )
    .every(Duration::from_millis(100))
    .until_async(async || match wal_first_lsn(&c, &ms[lost].url("")).await {
        Some(f) if f > 1 => Ok(Some(f)),
        other => Err(format!("its first WAL LSN {other:?}")),
    })
    .await?;
    assert!(
        ms[lost].proc.log().contains("Raft snapshot installed"),
        "the member came back by snapshot"
    );
    eprintln!(
        "member {} rejoined by snapshot; its WAL starts at {back}",
        ms[lost].id
    );
    let before = acks.lock().len();
    writes_resume(&acks, before, 50).await?;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    let acks = acks.lock().clone();
    eprintln!(
        "{} acknowledged writes, {} failed attempts",
        acks.len(),
        load.failures.load(Ordering::Relaxed)
    );
    verify(&c, &mut ms, &acks, None, None).await?;
    Ok(())
}

/// `raft` of `GET /api/v1/{NS}/stats` at `url` (the member's view of its group).
async fn raft_stats(c: &reqwest::Client, url: &str) -> Option<Value> {
    get_json(c, &format!("{url}/api/v1/{NS}/stats"))
        .await?
        .get("raft")
        .cloned()
}

/// The leader's fsync runs beside its followers' (`raft/durable.rs`). The leader's fsyncs of its
/// own entries are held back `STALL` (fault injection, as a slow disk): its followers must hold a
/// write (the leader's match index for them) long before that, yet the write stays invisible
/// everywhere (no answer, no member applied it) until the leader's copy is on disk. With the
/// leader's fsync before replication (openraft 0.9's own order) the followers would get the entry
/// only after the stall; without the gates, the write would be answered and applied at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_fsync_runs_beside_its_followers() -> anyhow::Result<()> {
    const STALL: Duration = Duration::from_millis(800);
    let root = tempfile::tempdir()?;
    let c = reqwest::Client::new();
    let mut ms = members(root.path(), 3);
    for m in ms.iter_mut() {
        m.proc.set_env(
            "UNISONDB_FAULT_LEADER_FSYNC_DELAY_MS",
            STALL.as_millis().to_string(),
        );
    }
    start_all(&c, &mut ms).await?;
    let li = wait_leader(&c, &ms, None).await?;
    let put = |url: String, v: &str| {
        let c = c.clone();
        let body = serde_json::json!({"value": B64.encode(v)});
        async move { c.put(url).json(&body).send().await }
    };
    let r = put(ms[li].url(&format!("/api/v1/{NS}/kv/warm")), "w").await?;
    assert!(r.status().is_success(), "warm-up write: {}", r.status());
    let before = raft_stats(&c, &ms[li].url(""))
        .await
        .context("leader stats")?["last_log_index"]
        .as_u64()
        .context("last_log_index")?;

    let started = Instant::now();
    let write = tokio::spawn(put(ms[li].url(&format!("/api/v1/{NS}/kv/k")), "v"));
    // The followers receive and fsync the entry while the leader's own fsync is held back.
    let mut replicated = None;
    let mut checks = 0;
    while started.elapsed() < STALL * 7 / 10 {
        let s = raft_stats(&c, &ms[li].url(""))
            .await
            .context("leader stats")?;
        let last = s["last_log_index"].as_u64().unwrap_or(0);
        let matched = |id: u64| s["peer_match_index"][id.to_string()].as_u64().unwrap_or(0);
        let followers: Vec<u64> = ms
            .iter()
            .map(|m| m.id)
            .filter(|id| *id != ms[li].id)
            .collect();
        if replicated.is_none() && last > before && followers.iter().all(|f| matched(*f) >= last) {
            replicated = Some(started.elapsed());
        }
        // Nothing of it is visible yet: not answered, not applied on any member, not readable.
        assert!(
            !write.is_finished(),
            "the write was answered after {:?}, before the leader's fsync",
            started.elapsed()
        );
        for m in &ms {
            let applied = raft_stats(&c, &m.url("")).await.context("stats")?["applied"]
                .as_u64()
                .unwrap_or(0);
            assert!(
                applied <= before,
                "member {} applied LSN {applied} (> {before}) before the leader's copy was durable",
                m.id
            );
            let r = c.get(m.url(&format!("/api/v1/{NS}/kv/k"))).send().await?;
            assert_eq!(
                r.status().as_u16(),
                404,
                "member {} serves the write early",
                m.id
            );
        }
        checks += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replicated = replicated.with_context(|| {
        format!(
            "the followers did not hold the write within {:?} while the leader's fsync was held \
             back {STALL:?}: replication waits for the leader's fsync",
            STALL * 7 / 10
        )
    })?;
    let r = write.await??;
    let answered = started.elapsed();
    assert!(r.status().is_success(), "write: {}", r.status());
    assert!(answered >= STALL * 9 / 10, "answered after {answered:?}");
    eprintln!(
        "followers held the write after {replicated:?}; answered after {answered:?}; {checks} checks"
    );
    // Then every member serves it.
    for m in &ms {
        let url = m.url(&format!("/api/v1/{NS}/kv/k"));
        Wait::new(
            format!("member {} serves the write", m.id),
            Duration::from_secs(5),
        )
        .every(Duration::from_millis(50))
        .until_async(async || match get_json(&c, &url).await {
            Some(v) if v["value"] == B64.encode("v") => Ok(Some(())),
            other => Err(format!("{other:?}")),
        })
        .await?;
    }
    for m in ms.iter_mut() {
        m.proc.terminate(Duration::from_secs(20))?;
    }
    Ok(())
}

/// A single hub that already holds data becomes a group in place (`raft/store.rs`,
/// `convert_single_hub`): the hub writes, restarts (a second epoch) and writes again, with a relayer
/// following it; then its data directory starts as member 1 of three (2 and 3 empty). The group
/// elects a leader in a term above the hub's epochs, the empty members receive the hub's records,
/// writes go on through any member, and the relayer keeps following member 1 without a snapshot.
/// Afterwards the usual checks: every write (the hub's and the group's) on every member and the
/// relayer, one leader per term (the hub's epochs count as node 1's terms), WALs identical record by
/// record from LSN 1. Member 2 started alone on a hub's data refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_hub_with_data_converts_into_a_group() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let c = reqwest::Client::new();
    let mut ms = members(root.path(), 3);
    let hub_yaml = loopback_config(&ms[0].dir, ms[0].ports, &[NS], None, "");
    let mut hub = NodeProcess::new(BIN, "single-hub", &ms[0].dir, hub_yaml).dump_log_on_panic();
    let hub_url = |p: &str| ms[0].url(p);

    // A relayer following the single hub, before and after the conversion.
    let relayer_dir = root.path().join("relayer");
    let rports = Ports::free();
    let ryaml = loopback_config(
        &relayer_dir,
        rports,
        &[NS],
        Some(&ms[0].ports.grpc_url()),
        "",
    );
    let mut relayer = NodeProcess::new(BIN, "relayer", &relayer_dir, ryaml).dump_log_on_panic();

    let mut acks = Vec::new();
    for round in 0..2 {
        hub.start()?;
        hub.wait_http_ok(&c, &hub_url("/readyz"), Duration::from_secs(30))
            .await?;
        if round == 0 {
            relayer.start()?;
        }
        let epoch = get_json(&c, &hub_url(&format!("/api/v1/{NS}/stats")))
            .await
            .and_then(|v| v["epoch"].as_u64())
            .context("the hub's epoch")?;
        for i in 0..50 {
            let (key, value) = (format!("hub-{round}-{i}"), format!("v{round}-{i}"));
            let r = c
                .put(hub_url(&format!("/api/v1/{NS}/kv/{key}")))
                .json(&serde_json::json!({"value": B64.encode(&value)}))
                .send()
                .await?
                .error_for_status()?;
            let body: Value = r.json().await?;
            acks.push(Ack {
                key,
                value,
                lsn: body["lsn"].as_u64().context("lsn")?,
                // The hub's epochs are the history the group's terms continue.
                term: Some(epoch),
                leader: Some(1),
            });
        }
        hub.terminate(Duration::from_secs(20))?;
    }
    let hub_last = acks.last().map(|a| a.lsn).unwrap_or(0);

    // Member 2 alone on a copy of the hub's data refuses: only the lowest id converts.
    let copy = root.path().join("copy");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(ms[0].dir.join("data"))
        .arg(&copy)
        .status()?;
    assert!(status.success());
    let mut m2 = member(
        root.path(),
        &ms.iter().map(|m| m.ports).collect::<Vec<_>>(),
        1,
        3,
        "",
    );
    std::fs::create_dir_all(&m2.dir)?;
    std::fs::rename(&copy, m2.dir.join("data"))?;
    m2.proc.start()?;
    let refused = Wait::new("member 2 to refuse the hub's data", Duration::from_secs(20))
        .every(Duration::from_millis(100))
        .until(|| match m2.proc.check_running() {
            Err(unisondb_testkit::Error::Exited { status, .. }) => Ok(Some(status)),
            Err(e) => Err(e.to_string()),
            Ok(()) => Err("still running".to_string()),
        })?;
    assert!(!refused.success(), "member 2 started on a hub's data");
    assert!(
        m2.proc.log().contains("only that member converts"),
        "member 2's log names the reason"
    );
    std::fs::remove_dir_all(m2.dir.join("data"))?;

    start_all(&c, &mut ms).await?;
    let li = wait_leader(&c, &ms, None).await?;
    let status = get_json(&c, &ms[li].url(&format!("/status/leader?namespace={NS}")))
        .await
        .context("status")?;
    let term = status["term"].as_u64().context("term")?;
    let last_epoch = acks.last().and_then(|a| a.term).unwrap_or(0);
    assert!(
        term > last_epoch,
        "term {term} above the hub's epochs (last {last_epoch})"
    );
    for (i, m) in ms.iter().enumerate() {
        for j in 0..20 {
            let (key, value) = (format!("group-{i}-{j}"), format!("g{i}-{j}"));
            let ack = put_acked(&c, &m.url(""), &key, &value).await?;
            assert!(
                ack.lsn > hub_last + 1,
                "group write at LSN {} after the hub's {hub_last}",
                ack.lsn
            );
            acks.push(ack);
        }
    }
    verify(&c, &mut ms, &acks, Some((&mut relayer, rports)), Some(1)).await?;
    assert!(
        !relayer.log().contains("snapshot installed"),
        "the relayer continued from the group's history without a snapshot"
    );
    Ok(())
}

/// A group's new leader removes LOB chunks orphaned by the old leader's crash: a transaction on
/// the leader stages a 3 MiB large object (its chunks are committed through the group as they
/// arrive), then the leader is SIGKILLed before the commit. The member that takes over collects the
/// orphan version once it has applied its log (`server::collect_orphans_when_leading`); the old
/// leader restarts and catches up, and the usual checks follow (acknowledged writes everywhere,
/// WALs identical record by record, the collection's deletes included).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_collects_lob_chunks_orphaned_by_the_old_one() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let c = reqwest::Client::new();
    let mut ms = members(root.path(), 3);
    start_all(&c, &mut ms).await?;
    let li = wait_leader(&c, &ms, None).await?;
    let mut acks = Vec::new();

    acks.push(put_acked(&c, &ms[li].url(""), "before", "value of before").await?);

    let tx: Value = c
        .post(ms[li].url(&format!("/api/v1/{NS}/tx/begin")))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = tx["txnId"].as_str().context("txnId")?.to_string();
    let staged: Value = c
        .post(ms[li].url(&format!("/api/v1/{NS}/tx/{id}/lob?key=big")))
        .body(vec![5u8; 3 << 20])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(staged["bytes"].as_u64(), Some(3 << 20), "{staged}");
    ms[li].proc.kill();
    let next = wait_leader(&c, &ms, Some(li)).await?;
    Wait::new(
        "the new leader to collect the orphan chunks",
        Duration::from_secs(60),
    )
    .every(Duration::from_millis(200))
    .until(|| {
        let log = ms[next].proc.log();
        match log
            .lines()
            .find(|l| l.contains("removed orphan LOB chunks (new leader)"))
        {
            Some(line) if plain(line).contains("versions=1") => Ok(Some(())),
            Some(line) => Err(format!("unexpected: {line}")),
            None => Err("not yet".to_string()),
        }
    })?;
    acks.push(put_acked(&c, &ms[next].url(""), "after", "value of after").await?);
    ms[li].proc.start()?;
    ms[li]
        .proc
        .wait_http_ok(&c, &ms[li].url("/readyz"), Duration::from_secs(30))
        .await?;
    let r = c
        .get(ms[next].url(&format!("/api/v1/{NS}/lob/big")))
        .send()
        .await?;
    assert_eq!(
        r.status().as_u16(),
        404,
        "the uncommitted object never appears"
    );
    verify(&c, &mut ms, &acks, None, Some(1)).await?;
    Ok(())
}

/// `PUT` of `key` = `value` at `base` (any member), as an [`Ack`] with the answer's LSN, term and
/// leader.
async fn put_acked(c: &reqwest::Client, base: &str, key: &str, value: &str) -> anyhow::Result<Ack> {
    let r = c
        .put(format!("{base}/api/v1/{NS}/kv/{key}"))
        .json(&serde_json::json!({"value": B64.encode(value)}))
        .send()
        .await?
        .error_for_status()?;
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let (term, leader) = (
        header("x-unisondb-raft-term"),
        header("x-unisondb-raft-leader"),
    );
    let body: Value = r.json().await?;
    Ok(Ack {
        key: key.to_string(),
        value: value.to_string(),
        lsn: body["lsn"].as_u64().context("lsn")?,
        term,
        leader,
    })
}

/// `line` without its ANSI colour sequences (`ESC [ ... m`).
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `unisondb_raft_appends_sent_total{transport}` of `ns` on the member at `base`.
async fn appends_sent(c: &reqwest::Client, base: &str, transport: &str) -> anyhow::Result<u64> {
    let text = c
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let want = format!(
        "unisondb_raft_appends_sent_total{{namespace=\"{NS}\",transport=\"{transport}\"}} "
    );
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64))
}

/// AppendEntries take the plain TCP link (`raft/link.rs`) to members that speak it and gRPC to a
/// member that does not (an older version during a rolling upgrade, played by
/// `UNISONDB_FAULT_NO_RAFT_LINK`): member 3 starts after members 1 and 2 elected a leader, so the
/// leader sends to one member of each kind. Every write reaches every member either way, and the
/// WALs are identical record by record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_take_the_link_and_grpc_to_a_member_without_it() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut ms = members(root.path(), 3);
    appends_by_transport(&mut ms).await
}

/// Starts members 1 and 2, then member 3 without the link (`UNISONDB_FAULT_NO_RAFT_LINK`); 40
/// writes later the leader's counters show AppendEntries over the link (member 2) and over gRPC
/// (member 3), and every member holds every write.
async fn appends_by_transport(ms: &mut [Member]) -> anyhow::Result<()> {
    let c = reqwest::Client::new();
    ms[2].proc.set_env("UNISONDB_FAULT_NO_RAFT_LINK", "1");
    start_all(&c, &mut ms[..2]).await?;
    let l = wait_leader(&c, &ms[..2], None).await?;
    start_all(&c, &mut ms[2..]).await?;
    let base = ms[l].url("");
    let base = base.as_str();
    let mut acks = Vec::new();
    let holds = async |acks: &[Ack]| -> anyhow::Result<()> {
        let last = acks.last().context("no write")?;
        Wait::new("member 3 holds the last write", Duration::from_secs(20))
            .every(Duration::from_millis(50))
            .until_async(async || {
                let url = ms[2].url(&format!("/api/v1/{NS}/kv/{}", last.key));
                match get_json(&c, &url).await {
                    Some(v) if v["value"] == B64.encode(&last.value) => Ok(Some(())),
                    other => Err(format!("{other:?}")),
                }
            })
            .await?;
        Ok(())
    };
    // Member 3 is caught up (over gRPC) before the counters are read.
    acks.push(put_acked(&c, base, "first", "v").await?);
    holds(&acks).await?;
    let before = (
        appends_sent(&c, base, "link").await?,
        appends_sent(&c, base, "grpc").await?,
    );
    for i in 0..40 {
        acks.push(put_acked(&c, base, &format!("k{i:03}"), &format!("v{i}")).await?);
    }
    holds(&acks).await?;
    let (link, grpc) = (
        appends_sent(&c, base, "link").await? - before.0,
        appends_sent(&c, base, "grpc").await? - before.1,
    );
    eprintln!(
        "leader {}: {link} AppendEntries over the link, {grpc} over gRPC for 40 writes",
        ms[l].id
    );
    assert!(
        link >= 40,
        "the link carried {link} AppendEntries for 40 writes"
    );
    // Member 3 may receive several writes in one AppendEntries, but not all 40 in a few.
    assert!(
        grpc >= 10,
        "gRPC carried {grpc} AppendEntries for 40 writes to member 3"
    );
    verify(&c, ms, &acks, None, None).await?;
    for m in ms.iter_mut() {
        m.proc.terminate(Duration::from_secs(20))?;
    }
    Ok(())
}

/// A hub group whose gRPC port uses mutual TLS (`grpc.tls_*`, one CA; every member presents its
/// certificate as a client too): members elect, replicate and commit over TLS, AppendEntries take
/// the link over TLS (its own ALPN protocol, `raft/link.rs`) to a member that has it and gRPC over
/// TLS to one that refuses it, and every member holds every write, WALs identical record by record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_runs_over_mutual_tls() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let ca = TestCa::new("hub group test CA");
    let (cert, key) = ca.leaf(&["127.0.0.1", "localhost"]);
    let tls = root.path().join("tls");
    std::fs::create_dir_all(&tls)?;
    std::fs::write(tls.join("ca.pem"), ca.pem())?;
    std::fs::write(tls.join("cert.pem"), cert)?;
    std::fs::write(tls.join("key.pem"), key)?;
    let mut ms = members(root.path(), 3);
    for m in ms.iter_mut() {
        let yaml = m.proc.config().to_string().replace(
            "grpc:\n",
            &format!(
                "grpc:\n  tls_ca_file: {0}/ca.pem\n  tls_cert_file: {0}/cert.pem\n  tls_key_file: {0}/key.pem\n",
                tls.display()
            ),
        );
        m.proc.set_config(yaml);
    }
    appends_by_transport(&mut ms).await
}
