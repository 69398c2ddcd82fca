//! Hub group under network faults: three `unisondb` members, each in its own network namespace (a
//! veth into one bridge), plus relayers in namespaces of their own, under a write load whose every
//! acknowledgement is recorded (key, value, LSN, term, leader). Faults, in order:
//!
//! 1. SIGKILL the leader and restart it, `RAFT_NETNS_KILLS` times (3 by default; 20 by hand);
//! 2. partition the leader from the majority (iptables drops inside its namespace; clients still
//!    reach it, so writes sent to it must not be acknowledged) and heal;
//! 3. partition a follower and heal;
//! 4. SIGKILL every member at once and restart them all.
//!
//! Checked afterwards: every acknowledged write is present, with its value, on every member and every
//! relayer (whole keyspaces compared over the scan API); no two leaders acknowledged writes in the same
//! term (the `x-unisondb-raft-*` answer headers when the node sends them, and a monitor of
//! `/status/leader` either way); every member's WAL is identical record by record up to the commit
//! index, and the relayers' WALs match it; linearizable reads (`?consistency=linearizable`, a reader
//! task running through every fault) never miss a write acknowledged before they began.
//!
//! Needs root, `ip` (iproute2) and `iptables`; without root or `ip` it FAILS with the reason (never skips).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use parking_lot::Mutex;
use serde_json::Value;
use unisondb_testkit::{NodeProcess, Wait};

const BIN: &str = env!("CARGO_BIN_EXE_unisondb");
const NS: &str = "ha";
const MEMBERS: u8 = 3;

/// Why this machine cannot run the test (not root, no `ip`), if it cannot.
fn unsupported() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Some(format!(
            "needs root for network namespaces (effective uid {euid})"
        ));
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("`ip -V` failed: {}", o.status)),
        Err(e) => Some(format!("no `ip` command (install iproute2): {e}")),
    }
}

fn run(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{cmd}`"))?;
    if !out.status.success() {
        bail!(
            "`{cmd} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A bridge in the host namespace and one network namespace per slot, joined to it by a veth
/// pair. Slot `s` has the address `<prefix>.<s>`; the host is `<prefix>.1`. Removed on drop.
struct Net {
    tag: u32,
    prefix: String,
    bridge: String,
    slots: Vec<u8>,
}

impl Net {
    fn create() -> anyhow::Result<Net> {
        let tag = std::process::id();
        let net = Net {
            tag,
            prefix: format!("10.{}.{}", 200 + (tag >> 8) % 50, tag & 0xff),
            bridge: format!("urb{tag}"),
            slots: Vec::new(),
        };
        run("ip", &["link", "add", &net.bridge, "type", "bridge"])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}.1/24", net.prefix),
                "dev",
                &net.bridge,
            ],
        )?;
        run("ip", &["link", "set", &net.bridge, "up"])?;
        Ok(net)
    }

    fn ns(&self, slot: u8) -> String {
        format!("unisondb-r{}-{slot}", self.tag)
    }

    fn ip(&self, slot: u8) -> String {
        format!("{}.{slot}", self.prefix)
    }

    /// Creates the namespace of `slot` with its veth on the bridge.
    fn add(&mut self, slot: u8) -> anyhow::Result<()> {
        let (ns, host, peer) = (
            self.ns(slot),
            format!("urh{}s{slot}", self.tag),
            format!("urn{}s{slot}", self.tag),
        );
        run("ip", &["netns", "add", &ns])?;
        self.slots.push(slot);
        run(
            "ip",
            &["link", "add", &host, "type", "veth", "peer", "name", &peer],
        )?;
        run("ip", &["link", "set", &peer, "netns", &ns])?;
        run("ip", &["link", "set", &host, "master", &self.bridge, "up"])?;
        let cidr = format!("{}/24", self.ip(slot));
        for args in [
            vec!["addr", "add", cidr.as_str(), "dev", peer.as_str()],
            vec!["link", "set", peer.as_str(), "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut full = vec!["netns", "exec", ns.as_str(), "ip"];
            full.extend(args);
            run("ip", &full)?;
        }
        Ok(())
    }

    /// Drops every packet between `slot` and each of `others` (inside `slot`'s namespace).
    fn cut(&self, slot: u8, others: &[u8]) -> anyhow::Result<()> {
        let ns = self.ns(slot);
        for o in others {
            let ip = self.ip(*o);
            for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                run(
                    "ip",
                    &[
                        "netns", "exec", &ns, "iptables", "-A", chain, dir, &ip, "-j", "DROP",
                    ],
                )
                .context("iptables (install the iptables package)")?;
            }
        }
        Ok(())
    }

    fn heal(&self, slot: u8) -> anyhow::Result<()> {
        run("ip", &["netns", "exec", &self.ns(slot), "iptables", "-F"])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for s in &self.slots {
            let _ = run("ip", &["netns", "del", &self.ns(*s)]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

/// One `unisondb` process in its namespace, on fixed ports (4000 HTTP, 4001 gRPC).
struct Node {
    id: u64,
    slot: u8,
    http: String,
    dir: PathBuf,
    proc: NodeProcess,
}

impl Node {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

fn node_yaml(dir: &Path, ip: &str, mode: &str, extra: &str) -> String {
    format!(
        "server:\n  mode: {mode}\n  data_dir: {}\n  namespaces: [{NS}]\nhttp:\n  listen: {ip}:4000\n\
         grpc:\n  listen: {ip}:4001\nnotify:\n  enabled: false\nlog:\n  level: info\n{extra}",
        dir.join("data").display()
    )
}

fn start_members(net: &mut Net, root: &Path) -> anyhow::Result<Vec<Node>> {
    let slots: Vec<u8> = (1..=MEMBERS).map(|i| 10 + i).collect();
    let peers: Vec<String> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| format!("\"{}={}:4001\"", i + 1, net.ip(*s)))
        .collect();
    let mut out = Vec::new();
    for (i, slot) in slots.into_iter().enumerate() {
        net.add(slot)?;
        let id = i as u64 + 1;
        let ip = net.ip(slot);
        let dir = root.join(format!("member-{id}"));
        // Default election timeouts: the product as shipped.
        let yaml = node_yaml(
            &dir,
            &ip,
            "replicator",
            &format!(
                "cluster:\n  node_id: {id}\n  peers: [{}]\n  advertise_http: {ip}:4000\n",
                peers.join(", ")
            ),
        );
        let proc = NodeProcess::new(BIN, &format!("member-{id}"), &dir, yaml)
            .wrapped_in(&["ip", "netns", "exec", &net.ns(slot)])
            .dump_log_on_panic();
        out.push(Node {
            id,
            slot,
            http: format!("{ip}:4000"),
            dir,
            proc,
        });
    }
    Ok(out)
}

fn start_relayer(net: &mut Net, root: &Path, slot: u8, upstream: &str) -> anyhow::Result<Node> {
    net.add(slot)?;
    let ip = net.ip(slot);
    let dir = root.join(format!("relayer-{slot}"));
    let yaml = node_yaml(
        &dir,
        &ip,
        "relayer",
        &format!("replication:\n  upstream: {upstream}\n"),
    );
    let mut proc = NodeProcess::new(BIN, &format!("relayer-{slot}"), &dir, yaml)
        .wrapped_in(&["ip", "netns", "exec", &net.ns(slot)])
        .dump_log_on_panic();
    proc.start()?;
    Ok(Node {
        id: 0,
        slot,
        http: format!("{ip}:4000"),
        dir,
        proc,
    })
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

/// `(role, term, leader_id)` from a member's `/status/leader`.
async fn status(c: &reqwest::Client, m: &Node) -> Option<(String, u64, Option<u64>)> {
    let v = get_json(c, &m.url(&format!("/status/leader?namespace={NS}"))).await?;
    Some((
        v["role"].as_str().unwrap_or_default().to_string(),
        v["term"].as_u64().unwrap_or(0),
        v["leader_id"].as_u64(),
    ))
}

/// Index of the member that leads among `among`: it says so, and every other member of `among`
/// that answers names it as leader in the same term.
async fn leader_among(c: &reqwest::Client, ms: &[Node], among: &[usize]) -> Option<usize> {
    let mut claims = Vec::new();
    let mut named = Vec::new();
    for &i in among {
        if !ms[i].proc.is_started() {
            continue;
        }
        if let Some((role, term, leader)) = status(c, &ms[i]).await {
            if role == "leader" {
                claims.push((i, term));
            }
            named.push((leader, term));
        }
    }
    let [(l, term)] = claims[..] else {
        return None;
    };
    named
        .iter()
        .all(|(who, t)| *who == Some(ms[l].id) && *t == term)
        .then_some(l)
}

async fn wait_leader(
    c: &reqwest::Client,
    ms: &[Node],
    among: &[usize],
    what: &str,
) -> anyhow::Result<usize> {
    Ok(Wait::new(what.to_string(), Duration::from_secs(40))
        .every(Duration::from_millis(100))
        .until_async(async || match leader_among(c, ms, among).await {
            Some(i) => Ok(Some(i)),
            None => Err("no single agreed leader yet".to_string()),
        })
        .await?)
}

/// One acknowledged write.
#[derive(Debug, Clone)]
struct Ack {
    key: String,
    value: String,
    lsn: u64,
    /// `x-unisondb-raft-term` / `x-unisondb-raft-leader` of the answer, when the node sends them.
    term: Option<u64>,
    leader: Option<u64>,
    /// When the answer arrived.
    at: Instant,
}

#[derive(Default)]
struct Load {
    acks: Mutex<Vec<Ack>>,
    failures: AtomicU64,
    linear_reads: AtomicU64,
    linear_refused: AtomicU64,
    stale: Mutex<Vec<String>>,
    /// (term, node id) of every member seen claiming leadership.
    leaders_seen: Mutex<BTreeSet<(u64, u64)>>,
}

impl Load {
    fn acked(&self) -> usize {
        self.acks.lock().len()
    }
}

fn header_u64(h: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

/// Writers: each PUTs fresh keys to the members in turn (followers proxy to the leader).
fn spawn_writers(
    c: &reqwest::Client,
    urls: &[String],
    n: usize,
    stop: &Arc<AtomicBool>,
    load: &Arc<Load>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|t| {
            let (c, urls, stop, load) = (c.clone(), urls.to_vec(), stop.clone(), load.clone());
            tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("w{t}-{i:06}");
                    let value = format!("value-{t}-{i}");
                    let base = &urls[(i + t) % urls.len()];
                    let r = c
                        .put(format!("{base}/api/v1/{NS}/kv/{key}"))
                        .json(&serde_json::json!({"value": B64.encode(&value)}))
                        .timeout(Duration::from_secs(3))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let term = header_u64(r.headers(), "x-unisondb-raft-term");
                            let leader = header_u64(r.headers(), "x-unisondb-raft-leader");
                            let body: Value = r.json().await.unwrap_or_default();
                            let Some(lsn) = body["lsn"].as_u64() else {
                                load.stale
                                    .lock()
                                    .push(format!("ack of {key} without LSN: {body}"));
                                continue;
                            };
                            load.acks.lock().push(Ack {
                                key,
                                value,
                                lsn,
                                term,
                                leader,
                                at: Instant::now(),
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

/// Reader: linearizable reads of an already acknowledged key (the newest, or an older one) on any
/// member must return its value; refusals (503, timeouts) are counted, a miss is recorded.
fn spawn_reader(
    c: &reqwest::Client,
    urls: &[String],
    stop: &Arc<AtomicBool>,
    load: &Arc<Load>,
) -> tokio::task::JoinHandle<()> {
    let (c, urls, stop, load) = (c.clone(), urls.to_vec(), stop.clone(), load.clone());
    tokio::spawn(async move {
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let pick = {
                let acks = load.acks.lock();
                match acks.len() {
                    0 => None,
                    n if i.is_multiple_of(2) => Some(acks[n - 1].clone()),
                    n => Some(acks[rand::random::<usize>() % n].clone()),
                }
            };
            let Some(ack) = pick else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let base = &urls[i % urls.len()];
            let r = c
                .get(format!(
                    "{base}/api/v1/{NS}/kv/{}?consistency=linearizable",
                    ack.key
                ))
                .timeout(Duration::from_secs(3))
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() || r.status().as_u16() == 404 => {
                    load.linear_reads.fetch_add(1, Ordering::Relaxed);
                    let status = r.status();
                    let served = [
                        "x-unisondb-raft-leader",
                        "x-unisondb-raft-term",
                        "x-unisondb-read-at-lsn",
                    ]
                    .map(|h| {
                        r.headers()
                            .get(h)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string()
                    })
                    .join("/");
                    let v: Value = r.json().await.unwrap_or_default();
                    let got = B64
                        .decode(v["value"].as_str().unwrap_or_default())
                        .unwrap_or_default();
                    if got != ack.value.as_bytes() {
                        load.stale.lock().push(format!(
                            "linearizable read of {} (acknowledged at LSN {} in term {:?} by node \
                             {:?}) on {base}: {status} {v} (served by leader/term/read-at LSN \
                             {served}, {:?} after the ack)",
                            ack.key,
                            ack.lsn,
                            ack.term,
                            ack.leader,
                            ack.at.elapsed()
                        ));
                    }
                }
                _ => {
                    load.linear_refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// Records which member claims leadership in which term, every 100 ms.
fn spawn_monitor(
    c: &reqwest::Client,
    members: Vec<(u64, String)>,
    stop: &Arc<AtomicBool>,
    load: &Arc<Load>,
) -> tokio::task::JoinHandle<()> {
    let (c, stop, load) = (c.clone(), stop.clone(), load.clone());
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            for (id, base) in &members {
                let url = format!("{base}/status/leader?namespace={NS}");
                if let Some(v) = get_json(&c, &url).await {
                    if v["role"] == "leader" {
                        let term = v["term"].as_u64().unwrap_or(0);
                        load.leaders_seen.lock().insert((term, *id));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Waits until at least `more` writes were acknowledged after `from` acks.
async fn wait_progress(load: &Load, from: usize, more: usize, what: &str) -> anyhow::Result<()> {
    Wait::new(
        format!("writes to resume ({what})"),
        Duration::from_secs(40),
    )
    .every(Duration::from_millis(20))
    .until_async(async || {
        let n = load.acked();
        if n >= from + more {
            Ok(Some(()))
        } else {
            Err(format!("{} new acks", n - from))
        }
    })
    .await?;
    Ok(())
}

async fn wait_ready(c: &reqwest::Client, n: &Node) -> anyhow::Result<()> {
    n.proc
        .wait_http_ok(c, &n.url("/readyz"), Duration::from_secs(40))
        .await?;
    Ok(())
}

/// Every KV pair of `NS` on a node, through the paged scan API.
async fn all_kv(c: &reqwest::Client, n: &Node) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut req = c
            .get(n.url(&format!("/api/v1/{NS}/kv")))
            .query(&[("limit", "1000")]);
        if let Some(a) = &after {
            req = req.query(&[("after", a.as_str())]);
        }
        let v: Value = req.send().await?.error_for_status()?.json().await?;
        for it in v["items"].as_array().context("scan items")? {
            out.insert(
                it["key"].as_str().unwrap_or_default().to_string(),
                it["value"].as_str().unwrap_or_default().to_string(),
            );
        }
        match v["next"].as_str() {
            Some(nx) => after = Some(nx.to_string()),
            None => return Ok(out),
        }
    }
}

async fn offset(c: &reqwest::Client, n: &Node) -> Option<u64> {
    get_json(c, &n.url(&format!("/api/v1/{NS}/offset")))
        .await?
        .get("lsn")?
        .as_u64()
}

/// `unisondb wal inspect --json` of one data directory: the records of `NS`.
fn wal_records(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let out = Command::new(BIN)
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

type RecordId = (u64, u64, u64, u64);

fn record_id(r: &Value) -> RecordId {
    (
        r["lsn"].as_u64().unwrap_or(0),
        r["epoch"].as_u64().unwrap_or(0),
        r["hlc"].as_u64().unwrap_or(0),
        r["payload_crc32c"].as_u64().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hub_group_survives_kills_partitions_and_a_full_restart() -> anyhow::Result<()> {
    // Like replication_netns: where namespaces are not usable this fails with the reason, never skips
    // (scripts/install-deps.sh installs iproute2 and iptables; CI runs as root).
    if let Some(why) = unsupported() {
        bail!("network namespaces are not usable here: {why}");
    }
    let kills: usize = std::env::var("RAFT_NETNS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let started = Instant::now();
    let root = tempfile::tempdir()?;
    let mut net = Net::create()?;
    let c = reqwest::Client::builder().no_proxy().build()?;
    let mut ms = start_members(&mut net, root.path())?;
    for m in ms.iter_mut() {
        m.proc.start()?;
    }
    for m in &ms {
        wait_ready(&c, m).await?;
    }
    let all: Vec<usize> = (0..ms.len()).collect();
    wait_leader(&c, &ms, &all, "a first leader").await?;
    // Relayers: one follows member 2 only (a single upstream, as before groups existed), the
    // other lists every member and follows the group.
    let group: Vec<String> = ms
        .iter()
        .map(|m| format!("http://{}:4001", net.ip(m.slot)))
        .collect();
    let single = group[1].clone();
    let mut relayers = vec![
        start_relayer(&mut net, root.path(), 21, &single)?,
        start_relayer(&mut net, root.path(), 22, &group.join(","))?,
    ];
    for r in &relayers {
        wait_ready(&c, r).await?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let urls: Vec<String> = ms.iter().map(|m| m.url("")).collect();
    let mut tasks = spawn_writers(&c, &urls, 3, &stop, &load);
    tasks.push(spawn_reader(&c, &urls, &stop, &load));
    tasks.push(spawn_monitor(
        &c,
        ms.iter().map(|m| (m.id, m.url(""))).collect(),
        &stop,
        &load,
    ));
    wait_progress(&load, 0, 20, "start").await?;

    // 1. SIGKILL the leader, wait for the next one and for writes, restart the old one.
    let mut failover_ms = Vec::new();
    for k in 0..kills {
        let l = wait_leader(&c, &ms, &all, "a leader before the kill").await?;
        let before = load.acked();
        let t = Instant::now();
        ms[l].proc.kill();
        let rest: Vec<usize> = all.iter().copied().filter(|i| *i != l).collect();
        let new = wait_leader(&c, &ms, &rest, "a new leader after the kill").await?;
        wait_progress(&load, before, 5, "after a kill").await?;
        failover_ms.push(t.elapsed().as_millis() as u64);
        eprintln!(
            "kill {}: node {} killed, node {} leads, writes resumed after {} ms",
            k + 1,
            ms[l].id,
            ms[new].id,
            t.elapsed().as_millis()
        );
        ms[l].proc.start()?;
        wait_ready(&c, &ms[l]).await?;
    }

    // 2. Partition the leader from the majority; it stays reachable by clients and relayers.
    let l = wait_leader(&c, &ms, &all, "a leader before the partition").await?;
    let rest: Vec<usize> = all.iter().copied().filter(|i| *i != l).collect();
    let others: Vec<u8> = rest.iter().map(|i| ms[*i].slot).collect();
    let t = Instant::now();
    net.cut(ms[l].slot, &others)?;
    let before = load.acked();
    let new = wait_leader(&c, &ms, &rest, "a leader in the majority").await?;
    let elected = t.elapsed();
    wait_progress(&load, before, 20, "majority side of a leader partition").await?;
    eprintln!(
        "leader partition: node {} cut off, node {} leads the majority after {} ms, 20 more writes \
         acknowledged after {} ms",
        ms[l].id,
        ms[new].id,
        elected.as_millis(),
        t.elapsed().as_millis()
    );
    // The cut-off leader must not acknowledge anything now; a write sent to it directly fails,
    // at once: it has not heard from a majority for longer than a lease, so it refuses (503)
    // instead of leaving the client waiting for a commit that cannot come.
    let r = c
        .put(ms[l].url(&format!("/api/v1/{NS}/kv/isolated-leader")))
        .json(&serde_json::json!({"value": B64.encode("must not be acked")}))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .context("a write to the cut-off leader was not answered within 3 s")?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or_default();
    assert_eq!(
        status, 503,
        "a leader cut off from the majority answered {status} {body}"
    );
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("majority") || e.contains("leader")),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    net.heal(ms[l].slot)?;
    wait_leader(&c, &ms, &all, "one leader after healing").await?;

    // 3. Partition a follower; the majority keeps committing; heal.
    let l = wait_leader(&c, &ms, &all, "a leader before the follower partition").await?;
    let f = (l + 1) % ms.len();
    let others: Vec<u8> = all
        .iter()
        .filter(|i| **i != f)
        .map(|i| ms[*i].slot)
        .collect();
    net.cut(ms[f].slot, &others)?;
    let before = load.acked();
    wait_progress(&load, before, 30, "follower partitioned").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    net.heal(ms[f].slot)?;
    wait_leader(&c, &ms, &all, "one leader after the follower healed").await?;
    eprintln!("follower partition: node {} cut off and healed", ms[f].id);

    // 4. Every member SIGKILLed at once, all restarted.
    for m in ms.iter_mut() {
        m.proc.kill();
    }
    let t = Instant::now();
    for m in ms.iter_mut() {
        m.proc.start()?;
    }
    let before = load.acked();
    wait_leader(&c, &ms, &all, "a leader after a full restart").await?;
    wait_progress(&load, before, 20, "after a full restart").await?;
    eprintln!(
        "full restart: writes resumed after {} ms",
        t.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let acks = load.acks.lock().clone();
    eprintln!(
        "{} acknowledged writes, {} failed attempts, {} linearizable reads ({} refused), \
         {kills} kills, failover ms {failover_ms:?}, leaders seen {:?}, {:?} so far",
        acks.len(),
        load.failures.load(Ordering::Relaxed),
        load.linear_reads.load(Ordering::Relaxed),
        load.linear_refused.load(Ordering::Relaxed),
        load.leaders_seen.lock(),
        started.elapsed()
    );
    let stale = load.stale.lock().clone();
    assert!(
        stale.is_empty(),
        "{} bad reads/acks: {stale:#?}",
        stale.len()
    );
    assert!(
        load.linear_reads.load(Ordering::Relaxed) > 20,
        "too few linearizable reads to mean anything"
    );

    // Convergence: one agreed leader, every member at the same applied LSN, relayers caught up.
    let commit = Wait::new("members to converge", Duration::from_secs(40))
        .every(Duration::from_millis(100))
        .until_async(async || {
            let mut lsns = Vec::new();
            for m in &ms {
                lsns.push(offset(&c, m).await);
            }
            let same = lsns.iter().all(|x| x.is_some() && *x == lsns[0]);
            match (same, leader_among(&c, &ms, &all).await) {
                (true, Some(_)) => Ok(Some(lsns[0].unwrap_or(0))),
                _ => Err(format!("applied LSNs {lsns:?}")),
            }
        })
        .await?;
    let max_ack = acks.iter().map(|a| a.lsn).max().unwrap_or(0);
    assert!(
        commit >= max_ack,
        "commit {commit} below acked LSN {max_ack}"
    );
    for r in &relayers {
        Wait::new(
            format!("relayer {} to catch up", r.slot),
            Duration::from_secs(40),
        )
        .every(Duration::from_millis(100))
        .until_async(async || match offset(&c, r).await {
            Some(l) if l >= commit => Ok(Some(())),
            other => Err(format!("at {other:?}, commit {commit}")),
        })
        .await?;
    }

    // Every acknowledged write on every member and relayer; every keyspace identical (a difference
    // is reported after the WALs are compared, which locates it).
    let mut problems: Vec<String> = Vec::new();
    let reference = all_kv(&c, &ms[0]).await?;
    for n in ms.iter().chain(&relayers) {
        let kv = if n.slot == ms[0].slot {
            reference.clone()
        } else {
            all_kv(&c, n).await?
        };
        for a in &acks {
            // A panic (not an error) so the processes' logs are printed as they are dropped.
            let Some(got) = kv.get(&a.key) else {
                panic!(
                    "acknowledged {} (LSN {}, term {:?}, leader {:?}) missing on {}",
                    a.key, a.lsn, a.term, a.leader, n.http
                );
            };
            assert_eq!(
                B64.decode(got)?,
                a.value.as_bytes(),
                "{} on {}",
                a.key,
                n.http
            );
        }
        if kv != reference {
            let only_here: Vec<_> = kv.keys().filter(|k| !reference.contains_key(*k)).collect();
            let only_ref: Vec<_> = reference.keys().filter(|k| !kv.contains_key(*k)).collect();
            let changed: Vec<_> = kv
                .iter()
                .filter(|(k, v)| reference.get(*k).is_some_and(|r| r != *v))
                .map(|(k, _)| k)
                .collect();
            problems.push(format!(
                "{} holds {} keys, member 1 {}: the keyspaces differ; only on {}: {only_here:?}; \
                 only on member 1: {only_ref:?}; different values: {changed:?}",
                n.http,
                kv.len(),
                reference.len(),
                n.http
            ));
        }
    }

    // WALs, read offline once every process has stopped.
    for n in ms.iter_mut().chain(relayers.iter_mut()) {
        n.proc.terminate(Duration::from_secs(20))?;
    }
    let mut walls = Vec::new();
    for m in &ms {
        walls.push(wal_records(&m.dir)?);
    }
    let upto = |w: &[Value]| -> Vec<RecordId> {
        w.iter().map(record_id).filter(|r| r.0 <= commit).collect()
    };
    let first = upto(&walls[0]);
    assert_eq!(
        first.len() as u64,
        commit,
        "member 1 holds every committed record"
    );
    assert!(
        first.iter().enumerate().all(|(i, r)| r.0 == i as u64 + 1),
        "member 1's WAL has a gap"
    );
    let mut by_id: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
    for (i, w) in walls.iter().enumerate() {
        assert!(
            upto(w) == first,
            "member {}'s WAL differs from member 1's up to the commit index {commit}",
            i + 1
        );
        // (LSN, epoch) names one record across members, committed or not.
        for r in w.iter().map(record_id) {
            let prev = by_id.entry((r.0, r.1)).or_insert((r.2, r.3));
            assert_eq!(
                *prev,
                (r.2, r.3),
                "two different records at (LSN, epoch) {:?}",
                (r.0, r.1)
            );
        }
    }
    for r in &relayers {
        let w = wal_records(&r.dir)?;
        let mine = upto(&w);
        if mine != first {
            let at = mine
                .iter()
                .zip(&first)
                .position(|(a, b)| a != b)
                .unwrap_or(mine.len().min(first.len()));
            let around = |w: &[Value]| -> Vec<RecordId> {
                w.iter()
                    .map(record_id)
                    .filter(|r| (at as u64).saturating_sub(1) <= r.0 && r.0 <= at as u64 + 3)
                    .collect()
            };
            eprintln!(
                "relayer {} records near the difference: {:?}",
                r.slot,
                around(&w)
            );
            for (i, mw) in walls.iter().enumerate() {
                eprintln!("member {} records near it: {:?}", i + 1, around(mw));
            }
            problems.push(format!(
                "relayer {}'s WAL differs from the members' up to the commit index {commit}: \
                 first difference at record #{at}: relayer {:?}, members {:?} \
                 (lsn, epoch, hlc, crc); relayer holds {} records, members {}",
                r.slot,
                mine.get(at),
                first.get(at),
                mine.len(),
                first.len()
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // No two leaders in one term: what the members claimed, and what the answers said.
    let seen = load.leaders_seen.lock().clone();
    let mut leader_of: BTreeMap<u64, u64> = BTreeMap::new();
    for (term, id) in &seen {
        if let Some(other) = leader_of.insert(*term, *id) {
            assert_eq!(other, *id, "two members led term {term}: {seen:?}");
        }
    }
    let epoch_at: BTreeMap<u64, u64> = first.iter().map(|r| (r.0, r.1)).collect();
    let mut acked_by: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut with_headers = 0usize;
    for a in &acks {
        let epoch = *epoch_at.get(&a.lsn).context("acked LSN not in the WAL")?;
        if let Some(term) = a.term {
            with_headers += 1;
            assert_eq!(
                term, epoch,
                "{} acked in term {term}, its record has epoch {epoch}",
                a.key
            );
        }
        if let Some(l) = a.leader {
            acked_by.entry(epoch).or_default().insert(l);
            if let Some(seen_l) = leader_of.get(&epoch) {
                assert_eq!(
                    *seen_l, l,
                    "term {epoch}: acked by node {l}, led by node {seen_l}"
                );
            }
        }
    }
    for (term, ls) in &acked_by {
        assert_eq!(
            ls.len(),
            1,
            "term {term}: writes acknowledged by leaders {ls:?}"
        );
    }
    let terms: BTreeSet<u64> = acks
        .iter()
        .filter_map(|a| epoch_at.get(&a.lsn).copied())
        .collect();
    eprintln!(
        "checked {} acks in {} terms ({with_headers} with term/leader headers) on {} members and {} \
         relayer(s), commit index {commit}, in {:?}",
        acks.len(),
        terms.len(),
        ms.len(),
        relayers.len(),
        started.elapsed()
    );
    assert!(
        terms.len() > kills,
        "acks span {} terms after {kills} kills: the failovers did not happen",
        terms.len()
    );
    Ok(())
}
